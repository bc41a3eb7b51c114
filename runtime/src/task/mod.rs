//! Tasks: the `async-task` cell, its metadata, spawning, and yielding.
//!
//! A task is an `async_task` allocation holding the future, its output slot
//! and a [`TaskMeta`]: the task's **home pool** (where every wake re-queues
//! it) and the time it was last queued (its scheduling delay is recorded in
//! the running worker's histogram). The future is wrapped so that
//! - a panic is caught and becomes the [`JoinError`] of its [`JoinHandle`]
//!   (the worker survives), and
//! - the task is in its home pool's [`Registry`] while it lives, so a
//!   shutdown can wake, cancel and drop tasks nobody else would wake.
//!
//! The queue time is one clock read per schedule from outside the home pool.
//! A task woken on a worker of its home pool is stamped with that worker's
//! cached time, read once per poll, at the start of the poll that woke it:
//! its delay then includes the rest of that poll (for a yield, its own poll).
//! Two clock reads per poll were 37% of worker time in `yield_many` (perf).

mod join;
mod registry;
mod yield_now;

pub use join::{JoinError, JoinHandle};
pub(crate) use registry::Registry;
pub use yield_now::yield_now;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;

use crate::pool::{Pool, schedule};

/// The schedulable half of a task, as queued in pools.
pub(crate) type Runnable = async_task::Runnable<TaskMeta>;

/// What every task carries in its header.
#[derive(Debug)]
pub(crate) struct TaskMeta {
    /// The pool the task was spawned on; its wakes re-queue there.
    pub(crate) home: Arc<Pool>,
    /// [`now_ns`](crate::clock::now_ns) when the task was last queued.
    /// Written by the scheduler, read by the worker that runs it; the queue
    /// hand-off orders the two, so `Relaxed` suffices.
    queued_at: AtomicU64,
}

impl TaskMeta {
    /// Records that the task is being queued at `now_ns`.
    #[inline]
    pub(crate) fn stamp(&self, now_ns: u64) {
        self.queued_at.store(now_ns, Ordering::Relaxed);
    }

    /// When the task was last queued.
    #[inline]
    pub(crate) fn queued_at(&self) -> u64 {
        self.queued_at.load(Ordering::Relaxed)
    }
}

/// Spawns `future` with `pool` as its home and queues it there.
pub(crate) fn spawn<F>(pool: Arc<Pool>, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let registered = pool.registry.insert_with(
        |guard| {
            let future = DropCatching::new(async move {
                // Dropped with the future: on completion, or on cancellation.
                let _registered = guard;
                AssertUnwindSafe(future).catch_unwind().await
            });
            let meta = TaskMeta {
                home: pool.clone(),
                queued_at: AtomicU64::new(0),
            };
            async_task::Builder::new()
                .metadata(meta)
                .spawn(move |_| future, async_task::WithInfo(schedule))
        },
        &pool,
    );
    match registered {
        Some((runnable, task)) => {
            runnable.schedule();
            JoinHandle::new(task.fallible())
        }
        // The pool is shut down: the future was dropped with the closure.
        None => JoinHandle::closed(),
    }
}

/// Wraps a future so that a panic in its `Drop` (when a cancelled task is
/// dropped, or a completed one's state is) is caught: async-task aborts the
/// process on a panic there, and a worker must survive user code.
struct DropCatching<F>(std::mem::ManuallyDrop<F>);

impl<F> DropCatching<F> {
    fn new(future: F) -> DropCatching<F> {
        DropCatching(std::mem::ManuallyDrop::new(future))
    }
}

impl<F: Future> Future for DropCatching<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        // SAFETY: (1) structural pinning: the inner future is never moved
        // out of `self.0` (it is only dropped in place, in `Drop`), so a
        // pinned `DropCatching` pins its future; (2) the projection only
        // goes through `ManuallyDrop`'s `DerefMut`, no move.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut *s.0) };
        inner.poll(cx)
    }
}

impl<F> Drop for DropCatching<F> {
    fn drop(&mut self) {
        let inner = &mut self.0;
        // SAFETY: the inner future is dropped exactly once, here, in place
        // (pinning allows dropping in place), and never used again.
        let drop_inner = move || unsafe { std::mem::ManuallyDrop::drop(inner) };
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(drop_inner)) {
            // The panic hook already reported it; the payload's own drop
            // must not unwind either.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(panic)));
        }
    }
}
