//! Task utilities: [`JoinSet`] (a set of tasks awaited as they finish),
//! [`yield_now`], [`unconstrained`] (out of the operation budget), and
//! the [`JoinHandle`] and [`JoinError`] every spawn returns (also at the
//! crate's root, with [`block_in_place`]).
//!
//! The rest of this page is how wq builds a task: the `async-task` cell,
//! its metadata, spawning, and yielding.
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
//! clones that `Arc` once. A task of a named workqueue also reaches its
//! queue until its end (`TaskEnd`), through its count in flight on the
//! queue's stripes rather than an `Arc` (`QueueRef`, `queue_ref`).
//!
//! The queue time is one clock read per schedule (the TSC: see `clock.rs`).
//! A task spawned or woken on a worker of its home pool was once stamped
//! with the worker's cached time, read at the start of the poll that woke
//! it: a child spawned late in a 20 ms poll was charged the 20 ms, a task
//! that yielded its own poll's length (`tests/metrics.rs`); the clock read
//! costs about 2% of `yield_many`, nothing seen in `spawn_many`
//! (`docs/benchmarks.md` as of `faa1f9f`, section 4). Two `clock_gettime` reads per poll
//! were 37% of worker time in `yield_many` (perf) before the TSC.

pub(crate) mod in_flight;
mod join;
mod join_set;
mod local;
mod queue_ref;
mod registry;
mod unconstrained;
mod yield_now;

use join::Guarded;
pub use join::{AbortHandle, JoinError, JoinHandle};
pub(crate) use join::{JobControl, RUNTIME_SHUT_DOWN, job_aborted, refuse_job};
pub use join_set::JoinSet;
pub use local::{AccessError, LocalKey, TaskLocalFuture};
pub(crate) use queue_ref::{QueueRef, StripeLines, TaskEnd, TasksShare, stripe_lines, wake_caught};
pub(crate) use registry::Registry;
pub use unconstrained::{Unconstrained, unconstrained};
pub use yield_now::yield_now;

use std::cell::UnsafeCell;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};

use crate::clock;
use crate::pool::{Pool, current, schedule, schedule_spawned};

/// The schedulable half of a task, as queued in pools.
pub(crate) type Runnable = async_task::Runnable<TaskMeta>;

/// What a task tells the workqueue it was spawned on (implemented by the
/// scheduler's named workqueues; tasks of the runtime's default queue have
/// none, and pay for none of this).
pub(crate) trait QueueLink: Send + Sync + 'static {
    /// A task of the queue is gone (its future finished or was dropped).
    /// `released`: it had left the queue's inactive list (it held one of
    /// the queue's `max_active` slots); `color`: its flush color; `stripe`:
    /// the stripe of the queue's counts it was spawned on. Does all but
    /// the finish's last change, which may let the queue go, and returns
    /// it (`QueueRef::finish` makes it after this borrow has ended).
    fn finishing(&self, released: bool, color: u8, stripe: u8) -> in_flight::LastStep;
    /// The finish's slow path (a flush waited on `color` when its count
    /// went), the task still counted: the flushers to wake if the color
    /// may be empty, to be woken after its last change.
    fn flagged(&self, color: u8) -> Vec<std::task::Waker>;
    /// One poll of one of its tasks took `ns`; `first` for its first poll.
    fn polled(&self, first: bool, ns: u64);
    /// Whether its items leave concurrency management while they run.
    fn is_cpu_intensive(&self) -> bool;
    /// One of its tasks hogged a CPU (counted, and reported once per task).
    fn hogged(&self);
    /// Blocking one of its tasks woke or started another worker.
    fn cm_wakeup(&self);
    /// One of its tasks, run on another pod's worker, was queued back home.
    fn repatriated(&self);
    /// The queue's name, for reports.
    fn name(&self) -> &str;
    /// Takes the task `id` (`waiting_id`), aborted while it waited and
    /// claimed by its aborter (`abort_claims_waiting`), out of the
    /// inactive list, with the pool to release it to (`None`: the queue
    /// is closed, the aborter drops it). The task has not ended, so the
    /// queue lives through the call; the caller releases or drops it after.
    fn take_aborted(&self, id: *const ()) -> Option<(Runnable, Option<Arc<Pool>>)>;
    /// The address of the queue, to tell queues apart (never dereferenced).
    fn id(&self) -> *const () {
        std::ptr::from_ref(self).cast()
    }
}

/// A task's home pool: set when the task is created (`wq::spawn`, and a
/// named queue's item that takes a slot at once) or, for an item that
/// waited on its queue's inactive list, once, when it is released.
///
/// Not a `OnceLock`: its `set` (and `From`) take two locked instructions,
/// a spawn's largest cost after the allocation. The write needs none: it
/// happens before the task is first queued, by the thread holding its only
/// `Runnable`; every read comes after (the worker that polls it, its wakes
/// and its schedule function, which async-task runs only for a task whose
/// `Runnable` is not out, and its drop, on the thread holding the
/// `Runnable` or after its last poll), ordered by the queue hand-off.
struct Home(UnsafeCell<Option<Arc<Pool>>>);

// SAFETY: the cell is written once, before any other thread can reach the
// task (see above); after, it is only read, and `Arc<Pool>` is `Sync`.
unsafe impl Sync for Home {}

impl Home {
    /// The home, once set.
    fn get(&self) -> Option<&Arc<Pool>> {
        // SAFETY: written only before the task is reachable by readers
        // (see the type's docs).
        unsafe { (*self.0.get()).as_ref() }
    }

    /// Sets the home of a task created without one.
    ///
    /// # Safety
    /// The caller holds the task's `Runnable`, and the task has never been
    /// queued; called once per task.
    unsafe fn set(&self, pool: Arc<Pool>) {
        // SAFETY: the caller's contract: no other access meanwhile.
        let slot = unsafe { &mut *self.0.get() };
        debug_assert!(slot.is_none(), "a task is released once");
        *slot = Some(pool);
    }
}

/// [`TaskMeta::flags`]: left its queue's inactive list (holds a slot).
const RELEASED: u8 = 1 << 0;
/// Ran on a worker of another pod since it was last queued home.
const AWAY: u8 = 1 << 1;
/// Found hogging a CPU: later polls leave concurrency management.
const CPU_HOG: u8 = 1 << 2;
/// Taken off its workqueue's inactive list by a pop (`TAKEN` and
/// `ABORTED`: `scheduler::queue::inactive`, "Abort against pop").
const TAKEN: u8 = 1 << 3;
/// Reported once for blocking its worker.
const REPORTED_BLOCKED: u8 = 1 << 4;
/// Aborted by its handle (while it waited on its workqueue's inactive
/// list, if `TAKEN` was not set first).
const ABORTED: u8 = 1 << 5;

/// What every task carries in its header.
pub(crate) struct TaskMeta {
    /// The pool the task runs in; its wakes re-queue there. Set when the
    /// task is created (`wq::spawn`, a named queue's item that takes a slot
    /// at once) or when its workqueue releases it from the inactive list,
    /// before it is first queued; never changed after.
    home: Home,
    /// The raw [`clock::now`](crate::clock::now) when the task was last
    /// queued.
    /// Written by the scheduler, read by the worker that runs it; the queue
    /// hand-off orders the two, so `Relaxed` suffices. After a named task's
    /// last poll on a worker, that poll's start, written by the poll and
    /// read by the task's end on the same thread (`TaskCell`).
    queued_at: AtomicU64,
    /// The workqueue it was spawned on; `None` for the default queue.
    /// Dereferenced only until the future is gone (`QueueRef`).
    pub(crate) queue: Option<QueueRef>,
    /// The queue's flush color when it was spawned.
    color: u8,
    /// The stripe of the queue's counts it was spawned on (its finish
    /// uncounts it there).
    stripe: u8,
    /// `RELEASED`, `AWAY`, `CPU_HOG`, `TAKEN`, `REPORTED_BLOCKED`,
    /// `ABORTED`.
    /// Read-modify-writes: a wake on another thread may clear `AWAY`
    /// while the task runs. What only its polls write is in its
    /// `TaskCell` (plain fields: polls are ordered one after the other).
    flags: AtomicU8,
}

impl std::fmt::Debug for TaskMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskMeta")
            .field("home", &self.home.get().map(|p| p.id))
            // Not the queue's name: the queue may be gone (`QueueRef`).
            .field("named_queue", &self.queue.is_some())
            .field("flags", &self.flags.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TaskMeta {
    fn new(queue: Option<QueueRef>, color: u8, stripe: u8) -> TaskMeta {
        TaskMeta {
            home: Home(UnsafeCell::new(None)),
            queued_at: AtomicU64::new(0),
            queue,
            color,
            stripe,
            flags: AtomicU8::new(0),
        }
    }

    /// The metadata of a task released at its creation, with `pool` as its
    /// home: built so, without [`release`]'s flag update (a locked
    /// instruction a spawn saves; a `OnceLock` home cost two more).
    fn released(queue: Option<QueueRef>, color: u8, stripe: u8, pool: &Arc<Pool>) -> TaskMeta {
        TaskMeta {
            home: Home(UnsafeCell::new(Some(pool.clone()))),
            queued_at: AtomicU64::new(0),
            queue,
            color,
            stripe,
            flags: AtomicU8::new(RELEASED),
        }
    }

    /// The stripe of its workqueue's counts the task was spawned on.
    pub(crate) fn stripe(&self) -> u8 {
        self.stripe
    }

    /// The task's home pool.
    #[inline]
    pub(crate) fn home(&self) -> &Arc<Pool> {
        self.home
            .get()
            .expect("a task is queued only after its home is set")
    }

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

    /// A worker of another pod took the task (a remote steal).
    pub(crate) fn went_away(&self) {
        self.flags.fetch_or(AWAY, Ordering::Relaxed);
    }

    /// A task taken by another pod that goes back to its home pool without
    /// having run there (the rest of a stolen batch, handed back): it never
    /// ran away, and is not counted as repatriated.
    pub(crate) fn back_unrun(&self) {
        if self.flags.load(Ordering::Relaxed) & AWAY != 0 {
            self.flags.fetch_and(!AWAY, Ordering::Relaxed);
        }
    }

    /// The task is queued on its home pool: if it had run away, it is back
    /// (the kernel's `REPATRIATED`). Returns whether it was away.
    #[inline]
    pub(crate) fn came_home(&self) -> bool {
        if self.flags.load(Ordering::Relaxed) & AWAY == 0 {
            return false;
        }
        let was = self.flags.fetch_and(!AWAY, Ordering::Relaxed) & AWAY != 0;
        if was && let Some(q) = &self.queue {
            q.repatriated();
        }
        was
    }
}

// Every task carries this header: a named queue's task keeps its reference
// and its stripe in it without making a default task larger.
#[cfg(not(loom))]
const _: () = assert!(
    std::mem::size_of::<TaskMeta>() <= 48,
    "TaskMeta outgrew 48 bytes"
);

/// Runs `f`, which blocks its thread (a synchronous call, a lock, a long
/// computation), without stalling the other work of the worker's pool.
///
/// On a worker thread, the worker stops counting against its pool's
/// maximum while `f` runs (the kernel's concurrency management): the task
/// it had just woken becomes stealable, and if work is queued another
/// worker is woken or started to run it (counted as `cm_wakeups` in the
/// metrics). Wakes on this thread meanwhile go through the pool's queue.
/// When `f` returns, the worker counts again; if its replacement still
/// runs, it finishes the poll and then parks (`stepped_down` in the
/// metrics), so the pool goes back to at most its maximum of tasks at once.
/// `f` runs outside the task's operation budget (it may drive wq I/O with
/// another executor's `block_on`). Elsewhere (outside a
/// runtime, in `block_on`, in a task the runtime's rescuer runs because
/// no worker could start, or on a worker outside a task's poll: a waker
/// or a `Drop` the worker runs between polls, in a driver turn, at a
/// named item's end, as it shuts down) it just runs `f`, as blocking code
/// there would; on the rescuer, that holds up
/// every pool's rescue and the CPU-hog watchdog until `f` returns. For work
/// that blocks for long, prefer [`crate::spawn_blocking`].
///
/// A poll that blocks its worker outside `block_in_place` (a
/// `futures::executor::block_on` in the task, a channel's `recv`) holds
/// the task it spawned or woke last in the worker's LIFO slot, where only
/// the watchdog looks: until the poll is found a CPU hog (10 ms by
/// default), or for ever with detection off; a blocking wait for that task
/// is a deadlock there.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
/// use std::time::{Duration, Instant};
///
/// #[wq::main(scope = "system", workers = 1)]
/// async fn main() {
///     // The pool has one worker. `slow` blocks it until `quick` has run,
///     // which another worker does meanwhile, started at once (without
///     // `block_in_place` only once the CPU-hog watchdog finds the poll
///     // blocked, 10 ms by default, or never with detection off).
///     let (blocking, ran) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
///     let slow = {
///         let (blocking, ran) = (blocking.clone(), ran.clone());
///         wq::spawn(async move {
///             wq::block_in_place(|| {
///                 blocking.store(true, SeqCst);
///                 let start = Instant::now();
///                 while !ran.load(SeqCst) && start.elapsed() < Duration::from_secs(10) {
///                     std::thread::sleep(Duration::from_millis(1));
///                 }
///                 ran.load(SeqCst)
///             })
///         })
///     };
///     while !blocking.load(SeqCst) {
///         wq::task::yield_now().await;
///     }
///     wq::spawn(async move { ran.store(true, SeqCst) }).await.unwrap();
///     assert!(slow.await.unwrap(), "`quick` ran while `slow` blocked its worker");
/// }
/// ```
pub fn block_in_place<F, R>(f: F) -> R
where
    F: FnOnce() -> R,
{
    crate::pool::block_in_place(|| crate::coop::unconstrained(f))
}

/// Spawns `future` with `pool` as its home and queues it there (the
/// runtime's default queue). `called_at`: the raw clock when the spawn
/// call began, if latency capture is on; the call's time is then recorded
/// for `pool` (the capture protocol's step 2, `crate::metrics`).
pub(crate) fn spawn<F>(pool: &Arc<Pool>, future: F, called_at: Option<u64>) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if pool.is_closed() {
        // Shut down: the future is dropped here, in the spawner's thread.
        return JoinHandle::refused(crate::task::RUNTIME_SHUT_DOWN);
    }
    let (runnable, handle) = create(TaskMeta::released(None, 0, 0, pool), future);
    queue_released(runnable, pool, false);
    if let Some(start) = called_at {
        crate::metrics::record_spawn(&pool.capture, start, clock::now());
    }
    handle
}

/// Creates a task of workqueue `queue` (flush color `color`) without
/// queueing it: the queue releases it ([`release`]) now or later.
pub(crate) fn spawn_unreleased<F>(
    queue: QueueRef,
    color: u8,
    stripe: u8,
    future: F,
) -> (Runnable, JoinHandle<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (runnable, handle) = create(TaskMeta::new(Some(queue), color, stripe), future);
    let handle = handle.waiting(runnable.metadata());
    (runnable, handle)
}

/// Creates a task of workqueue `queue` (flush color `color`, counted on
/// `stripe`) that holds one of its active slots, with `pool` as its home,
/// and queues it there.
pub(crate) fn spawn_released<F>(
    queue: QueueRef,
    color: u8,
    stripe: u8,
    pool: &Arc<Pool>,
    future: F,
) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (runnable, handle) = create(TaskMeta::released(Some(queue), color, stripe, pool), future);
    queue_released(runnable, pool, false);
    handle
}

/// Marks an item of a workqueue taken off its inactive list; false if
/// its abort came first (it is then its aborter's: `inactive`, "Abort
/// against pop").
pub(crate) fn take_waiting(meta: &TaskMeta) -> bool {
    // AcqRel: of this and the abort's `fetch_or`, the second reads the
    // first.
    meta.flags.fetch_or(TAKEN, Ordering::AcqRel) & ABORTED == 0
}

/// The abort of a task by its handle: whether it is an item waiting on
/// its workqueue's inactive list that no pop took first, which its
/// aborter must then take out of the list (`inactive`, "Abort against
/// pop"; `JoinHandle::abort`).
pub(crate) fn abort_claims_waiting(meta: &TaskMeta) -> bool {
    if meta.queue.is_none() {
        return false;
    }
    meta.flags.fetch_or(ABORTED, Ordering::AcqRel) & (TAKEN | RELEASED) == 0
}

/// The identity of a task in its workqueue's inactive list.
pub(crate) fn waiting_id(meta: &TaskMeta) -> *const () {
    std::ptr::from_ref(meta).cast()
}

/// Gives an aborted task taken out of its workqueue's inactive list its
/// home `pool` and queues it there, without a slot of its queue: it is
/// cancelled, so the worker that runs it drops its future.
pub(crate) fn release_aborted(runnable: Runnable, pool: &Arc<Pool>) {
    // SAFETY: as in `release`: this thread holds the task's only
    // `Runnable`, taken off the inactive list, and the task was never
    // queued.
    unsafe { runnable.metadata().home.set(pool.clone()) };
    queue_released(runnable, pool, true);
}

/// Gives a created task its home `pool` and queues it there. Its
/// workqueue (if any) counts it active from now on.
pub(crate) fn release(runnable: Runnable, pool: &Arc<Pool>) {
    let meta = runnable.metadata();
    // SAFETY: this thread holds the task's `Runnable` and the task was
    // never queued: nothing reads its home yet (`Home`), and it is released
    // once (it left its queue's inactive list once).
    unsafe { meta.home.set(pool.clone()) };
    meta.flags.fetch_or(RELEASED, Ordering::Relaxed);
    // In order: a pump releasing several items one after the other put
    // each in the LIFO slot, the one before behind it, so B, C, D started
    // D, B, C.
    queue_released(runnable, pool, true);
}

/// Queues a task whose home is `pool` for its first poll (`fifo`: see
/// [`schedule_spawned`]).
fn queue_released(runnable: Runnable, pool: &Arc<Pool>, fifo: bool) {
    pool.registry.spawned();
    schedule_spawned(pool, runnable, fifo);
}

fn create<F>(meta: TaskMeta, future: F) -> (Runnable, JoinHandle<F::Output>)
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
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
    (runnable, JoinHandle::new(task.fallible()))
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
    /// A named task's polls: `POLLED`, `LAST_POLL`, `LAST_POLL_FIRST`.
    /// Only its polls and its drop (after them) touch it, one after the
    /// other: a plain field, where flags in `TaskMeta` took two locked
    /// instructions per item, one of them between the item's last act and
    /// its worker's next look (`pool::worker`, "The deferred end").
    polls: u8,
}

/// [`TaskCell::polls`]: polled at least once.
const POLLED: u8 = 1 << 0;
/// The last poll ran on a worker, which records it with the task's end
/// ([`TaskEnd`]); the clock when it began is in `queued_at`.
const LAST_POLL: u8 = 1 << 1;
/// That last poll was also its first.
const LAST_POLL_FIRST: u8 = 1 << 2;

impl<'m, F> TaskCell<'m, F> {
    fn new(meta: &'m TaskMeta, future: F) -> TaskCell<'m, F> {
        TaskCell {
            meta,
            future: ManuallyDrop::new(future),
            entry: None,
            polls: 0,
        }
    }
}

impl<F: Future> Future for TaskCell<'_, F> {
    type Output = Guarded<std::thread::Result<F::Output>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of `future` only: it is never moved out
        // of `self` (it is dropped in place, in `Drop`), so a pinned
        // `TaskCell` pins it; `meta` and `entry` are not pinned and are only
        // used through plain references.
        let this = unsafe { self.get_unchecked_mut() };
        let meta = this.meta;
        // SAFETY: see above: `future` stays where it is until dropped.
        let future = unsafe { Pin::new_unchecked(&mut *this.future) };
        let poll = || std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx)));
        let hog = meta.flags.load(Ordering::Relaxed) & CPU_HOG != 0;
        let result = match &meta.queue {
            // The default queue's task: nothing to account for.
            None if !hog => poll(),
            None => crate::pool::run_cpu_intensive(poll),
            Some(q) => {
                let first = this.polls & POLLED == 0;
                this.polls |= POLLED;
                let intensive = hog || q.is_cpu_intensive();
                let polled = current::with_running_queue(q.id(), || {
                    if intensive {
                        crate::pool::run_cpu_intensive(poll)
                    } else {
                        poll()
                    }
                });
                let (result, start) = (polled.result, polled.started);
                if !matches!(result, Ok(Poll::Pending)) && polled.on_worker {
                    // The last poll (the future is dropped next, on this
                    // thread): timed with the task's end, which its worker
                    // runs after its next look at its queues, to the clock
                    // the worker reads as the run ends (`TaskEnd`): no
                    // clock read here, between what the item did last and
                    // that look. `queued_at` is not read again as a queue
                    // time: only the end reads it, as this poll's start.
                    meta.queued_at.store(start, Ordering::Relaxed);
                    this.polls |= LAST_POLL | if first { LAST_POLL_FIRST } else { 0 };
                } else {
                    q.polled(first, clock::delay_ns(start, clock::now()));
                }
                for _ in 0..polled.cm_wakeups {
                    q.cm_wakeup();
                }
                result
            }
        };
        if let Some(long) = crate::pool::long_poll() {
            // Outside the poll's catch: its report runs the process's
            // logger, which may panic; unguarded, that closed the task
            // and its handle said "runtime shut down". The report is lost,
            // the task goes on.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| this.ran_long(long)));
        }
        match result {
            Ok(Poll::Pending) => {
                if this.entry.is_none() {
                    let registry = &meta.home().registry;
                    this.entry = registry.register(cx.waker());
                    if this.entry.is_none() {
                        // The pool is shut down: this wake makes the
                        // scheduler drop the task once this poll returns.
                        cx.waker().wake_by_ref();
                    }
                } else if meta.home().is_closed() {
                    // Registered before, and the shutdown's wake of the
                    // idle tasks came while this task was taken from its
                    // queue but not yet run (merged with this run: a
                    // worker a `shutdown_timeout` gave up on): queued on
                    // its closed pool to be dropped, as that wake would
                    // have (`registry`'s module docs). The run's start
                    // acquired that wake's state, which the close precedes.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
            Ok(Poll::Ready(out)) => Poll::Ready(Guarded::new(Ok(out))),
            Err(panic) => Poll::Ready(Guarded::new(Err(panic))),
        }
    }
}

impl<F> TaskCell<'_, F> {
    /// The watchdog found this task's poll running longer than the CPU-hog
    /// threshold. Using its CPU: its later polls leave concurrency
    /// management, counted as CPU-intensive. Blocking its thread: nothing
    /// changes for its later polls (the pool counts the wakeup the
    /// watchdog made). Reported once per task either way.
    #[cold]
    fn ran_long(&self, long: crate::pool::LongPoll) {
        let meta = self.meta;
        if let (Some(q), crate::pool::LongPoll::Blocked { woke: true }) = (&meta.queue, long) {
            // Each such poll whose grant woke or started a worker (the
            // kernel's CM_WAKEUP, as the pool counts it), not only the
            // first one reported.
            q.cm_wakeup();
        }
        let bit = match long {
            crate::pool::LongPoll::OnCpu => CPU_HOG,
            crate::pool::LongPoll::Blocked { .. } => REPORTED_BLOCKED,
        };
        let before = meta.flags.fetch_or(bit, Ordering::Relaxed);
        if before & bit != 0 {
            return;
        }
        if let (Some(q), crate::pool::LongPoll::OnCpu) = (&meta.queue, long) {
            q.hogged();
        }
        // The pool of the worker it ran on (the watchdog marked that
        // worker's poll), which is not its home pool if it was stolen.
        let home = meta.home();
        let pool = crate::pool::current::with_worker(|w| w.map(|l| l.pool.clone()))
            .unwrap_or_else(|| home.clone());
        let queue = meta.queue.as_ref().map_or_else(
            || "the default queue".to_owned(),
            |q| format!("workqueue {:?}", q.name()),
        );
        match long {
            crate::pool::LongPoll::OnCpu => log::warn!(
                "wq: a task of {queue} ran on pool {} ({} pod {}) longer than the CPU-hog \
                 threshold without yielding; it is marked CPU-intensive: its polls no longer \
                 hold up the pool's other work. Yield every millisecond or so in a computation \
                 you can split (wq::task::yield_now); give long ones that must stay on the \
                 pools a .cpu_intensive() workqueue",
                pool.id,
                pool.scope,
                pool.pod
            ),
            crate::pool::LongPoll::Blocked { .. } => log::warn!(
                "wq: a task of {queue} blocked its worker of pool {} ({} pod {}) longer than the \
                 CPU-hog threshold (a synchronous call inside a poll); the pool may run another \
                 worker meanwhile, if it had work queued. Wrap a blocking call of about a \
                 millisecond or less in wq::block_in_place; run longer ones with \
                 wq::spawn_blocking",
                pool.id,
                pool.scope,
                pool.pod
            ),
        }
    }
}

impl<F> Drop for TaskCell<'_, F> {
    fn drop(&mut self) {
        let future = &mut self.future;
        let meta = self.meta;
        let drop_future = move || {
            // SAFETY: the future is dropped exactly once, here, in place
            // (pinning allows dropping in place), and never used again.
            let mut drop_it = move || unsafe { ManuallyDrop::drop(future) };
            // An item's future is dropped as one of its queue's items, as
            // it is polled: what its drop spawns there is chained work,
            // which a drain accepts (a guard's cleanup, in an item aborted
            // mid-drain, or kept by a hand-written future past `Ready`). A
            // drain may begin at any moment of the drop, so whether one is
            // on cannot be asked first: every item's drop is marked.
            match &meta.queue {
                Some(q) => current::with_queue_mark(q.id(), drop_it),
                None => drop_it(),
            }
        };
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(drop_future)) {
            // The panic hook already reported it; the payload's own drop
            // must not unwind either.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(panic)));
        }
        let flags = self.meta.flags.load(Ordering::Relaxed);
        if let Some(home) = self.meta.home.get() {
            home.registry.dropped(self.entry.take());
        }
        if let Some(q) = &self.meta.queue {
            let last_poll = (self.polls & LAST_POLL != 0).then(|| {
                (
                    self.polls & LAST_POLL_FIRST != 0,
                    self.meta.queued_at.load(Ordering::Relaxed),
                )
            });
            // SAFETY: the future is dropped once, here, and the task's
            // queue is not reached after (its polls are over, and a task
            // whose future is gone is never scheduled again).
            let end = unsafe {
                q.end(
                    last_poll,
                    flags & RELEASED != 0,
                    self.meta.color,
                    self.meta.stripe,
                )
            };
            // Run after this worker's next look at its queues, or now.
            crate::pool::worker::defer_end(end, self.meta);
        }
    }
}
