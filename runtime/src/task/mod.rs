//! Tasks: the `async-task` cell, its metadata, spawning, and yielding.
//!
//! A task is an `async_task` allocation holding the future, its output slot
//! and a `TaskMeta`: the task's **home pool** (where every wake re-queues
//! it) and the time it was last queued (its scheduling delay is recorded in
//! the running worker's histogram). The future is wrapped so that
//! - a panic is caught and becomes the [`JoinError`] of its [`JoinHandle`]
//!   (the worker survives), and
//! - the task is counted in its home pool's `Registry` while it lives and
//!   registered there once it first goes idle, so a shutdown can wake,
//!   cancel and drop tasks nobody else would wake.
//!
//! The future borrows the task's own `TaskMeta` (async-task keeps the
//! metadata until the task is freed, after the future is dropped): a task
//! holds one reference to its home pool, `TaskMeta::home`, and spawning
//! clones that `Arc` once.
//!
//! The queue time is one clock read per schedule from outside the home pool.
//! A task woken on a worker of its home pool is stamped with that worker's
//! cached time, read once per poll, at the start of the poll that woke it:
//! its delay then includes the rest of that poll (for a yield, its own poll).
//! Two clock reads per poll were 37% of worker time in `yield_many` (perf);
//! the one left reads the TSC (see `clock.rs`).

mod join;
mod registry;
mod yield_now;

pub use join::{JoinError, JoinHandle};
pub(crate) use registry::Registry;
pub use yield_now::yield_now;

use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use crate::pool::{Pool, schedule, schedule_spawned};

/// The schedulable half of a task, as queued in pools.
pub(crate) type Runnable = async_task::Runnable<TaskMeta>;

/// What every task carries in its header.
#[derive(Debug)]
pub(crate) struct TaskMeta {
    /// The pool the task was spawned on; its wakes re-queue there.
    pub(crate) home: Arc<Pool>,
    /// The raw [`clock::now`](crate::clock::now) when the task was last
    /// queued.
    /// Written by the scheduler, read by the worker that runs it; the queue
    /// hand-off orders the two, so `Relaxed` suffices.
    queued_at: AtomicU64,
}

impl TaskMeta {
    /// Records that the task is being queued at raw time `now`.
    #[inline]
    pub(crate) fn stamp(&self, now: u64) {
        self.queued_at.store(now, Ordering::Relaxed);
    }

    /// When the task was last queued.
    #[inline]
    pub(crate) fn queued_at(&self) -> u64 {
        self.queued_at.load(Ordering::Relaxed)
    }
}

/// Runs `f`, which blocks its thread (a synchronous call, a lock, a long
/// computation), without stalling the other work of the worker's pool.
///
/// On a worker thread, the worker stops counting against its pool's
/// maximum while `f` runs (the kernel's concurrency management): the task
/// it had just woken becomes stealable, and if work is queued another
/// worker is woken or started to run it (counted as `cm_wakeups` in the
/// metrics). Wakes on this thread meanwhile go through the pool's queue.
/// Elsewhere (outside a runtime, in `block_on`), it just runs `f`. For work
/// that blocks for long, prefer a thread of its own.
///
/// ```
/// #[wq::main(scope = "system", workers = 1)]
/// async fn main() {
///     // The pool has one worker; while it blocks, another runs `quick`.
///     let slow = wq::spawn(async {
///         wq::block_in_place(|| std::thread::sleep(std::time::Duration::from_millis(50)));
///     });
///     let quick = wq::spawn(async { 1 });
///     assert_eq!(quick.await.unwrap(), 1);
///     slow.await.unwrap();
/// }
/// ```
pub fn block_in_place<F, R>(f: F) -> R
where
    F: FnOnce() -> R,
{
    crate::pool::block_in_place(f)
}

/// Spawns `future` with `pool` as its home and queues it there.
pub(crate) fn spawn<F>(pool: &Arc<Pool>, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if pool.is_closed() {
        // Shut down: the future is dropped here, in the spawner's thread.
        return JoinHandle::closed();
    }
    let meta = TaskMeta {
        home: pool.clone(),
        queued_at: AtomicU64::new(0),
    };
    pool.registry.spawned();
    // SAFETY: async-task's conditions for `spawn_unchecked`: the future is
    // `Send` (`F: Send`, and `&TaskMeta` is `Send` as `TaskMeta` is `Sync`);
    // the schedule function is a `fn` item (`Send + Sync + 'static`); the
    // only borrow the future holds is of the task's own metadata, which
    // async-task keeps until the task is freed, after the future is dropped
    // (the borrow its documentation allows).
    let (runnable, task) = unsafe {
        async_task::Builder::new().metadata(meta).spawn_unchecked(
            |meta: &TaskMeta| TaskCell::new(meta, future),
            async_task::WithInfo(schedule),
        )
    };
    schedule_spawned(pool, runnable);
    JoinHandle::new(task.fallible())
}

/// The future inside every task: the user's future, with
/// - a panic in its `poll` caught and returned as the task's output,
/// - a panic in its `Drop` caught (async-task aborts the process on a panic
///   there, and a worker must survive user code), and
/// - the task's accounting in its home pool's [`Registry`]: counted while
///   alive, registered once it first goes idle (returns `Pending`), so a
///   shutdown can wake, cancel and drop it.
struct TaskCell<'m, F> {
    meta: &'m TaskMeta,
    future: ManuallyDrop<F>,
    entry: Option<registry::Entry>,
}

impl<'m, F> TaskCell<'m, F> {
    fn new(meta: &'m TaskMeta, future: F) -> TaskCell<'m, F> {
        TaskCell {
            meta,
            future: ManuallyDrop::new(future),
            entry: None,
        }
    }
}

impl<F: Future> Future for TaskCell<'_, F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of `future` only: it is never moved out
        // of `self` (it is dropped in place, in `Drop`), so a pinned
        // `TaskCell` pins it; `meta` and `entry` are not pinned and are only
        // used through plain references.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above: `future` stays where it is until dropped.
        let future = unsafe { Pin::new_unchecked(&mut *this.future) };
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => {
                if this.entry.is_none() {
                    let registry = &this.meta.home.registry;
                    this.entry = registry.register(cx.waker());
                    if this.entry.is_none() {
                        // The pool is shut down: this wake makes the
                        // scheduler drop the task once this poll returns.
                        cx.waker().wake_by_ref();
                    }
                }
                Poll::Pending
            }
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

impl<F> Drop for TaskCell<'_, F> {
    fn drop(&mut self) {
        let future = &mut self.future;
        // SAFETY: the future is dropped exactly once, here, in place
        // (pinning allows dropping in place), and never used again.
        let drop_future = move || unsafe { ManuallyDrop::drop(future) };
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(drop_future)) {
            // The panic hook already reported it; the payload's own drop
            // must not unwind either.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(panic)));
        }
        self.meta.home.registry.dropped(self.entry.take());
    }
}
