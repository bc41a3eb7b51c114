//! `JoinHandle`, `AbortHandle` and `JoinError`.
//!
//! # The handle's task, and abort handles
//!
//! A [`JoinHandle`] holds its task (async-task's handle: what awaits the
//! output, cancels the task, or detaches it when dropped) in a slot behind
//! a lock: its await (`&mut`), its abort and `is_finished` (`&self`, any
//! thread) and its drop take the task out of the slot or look at it there.
//! No allocation beyond the task's own: a spawn pays for no abort handle.
//!
//! [`JoinHandle::abort_handle`] moves the task into a `Shared` slot (an
//! `Arc`, made at the first call) that the handle and its abort handles
//! hold; the handle's own slot then says `Shared`, and the handle's
//! methods go through to it. States of a slot:
//!
//! - `Task(task, waited)`: running, or completed and not yet awaited;
//! - `Detached(task)` (a `Shared` slot only): its `JoinHandle` was dropped
//!   while it ran; abort handles may still cancel it;
//! - `Ended(output)`: aborted after it had completed: the output kept
//!   for the await;
//! - `Done`: the await gave the result; in a `Shared` slot also: the
//!   handle was dropped after the task ended (its output dropped then) or
//!   after an abort (an abort that finds an output then drops it);
//! - none: refused at its spawn, or aborted (before it completed, or,
//!   detached, its output dropped by the abort).
//!
//! Invariants, each kept under the slot's lock:
//! - the task is in exactly one slot, or out of all of them only during an
//!   abort (which took it out to cancel it without the lock: a concurrent
//!   abort finds nothing and does nothing, `is_finished` says true);
//! - a `Shared` slot never holds `Shared`: an abort or `is_finished` that
//!   finds `Shared` in a handle's slot goes on with the shared one (the
//!   slot may have turned `Shared` after the handle's abort checked);
//! - the waker an abort wakes (`awaiter`) is the one of the slot the task
//!   is in: `abort_handle` moves a registered one to the shared slot, and
//!   an await of a shared handle registers it there;
//! - a blocking job's word gets an abort's bit once per abort: a handle's
//!   abort that goes on with its shared slot does not set it again (a
//!   second look could see a start that came between, and leave the job
//!   waiting for a cancel that never comes);
//! - no user code runs under a slot's lock: outputs and panic payloads
//!   found there are dropped after it (an output's drop may abort or
//!   await its own task), and so are the wakers an await or the handle's
//!   drop let go of. A shared slot's await polls async-task through the
//!   handle's relay whatever the caller's waker (the caller's cloned into
//!   it before the lock), so async-task, which wakes a registered waker
//!   that differs from the polling one, finds the same one. One wake can
//!   still come under the lock: that of an await registered before the
//!   handle made its abort handle, when the next poll or the drop finds
//!   the task complete (a wq task's waker schedules it: the pool's lock,
//!   which is taken under no other).
//!
//! The task's output: given to the await, or dropped when the task ends if
//! the handle was dropped (async-task's detach), as before. With abort
//! handles alive, a handle dropped before its task ended leaves the task
//! attached to them (a detach would end their abort): its output is then
//! dropped by an abort, or when the last abort handle is dropped, not when
//! the task completes (tokio drops it then).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::TaskMeta;

type Outcome<T> = Result<T, Box<dyn Any + Send + 'static>>;
type RawTask<T> = async_task::FallibleTask<Guarded<Outcome<T>>, TaskMeta>;

/// A handle's task.
enum Slot<T> {
    /// Not aborted (or aborted while it had finished: it keeps its output);
    /// `true` once an await found it running and left async-task its
    /// waker (let go of at the drop: `Drop`). A flag here, in the tag's
    /// padding, not a look at `awaiter`: a handle stays 96 bytes, and a
    /// detached spawn's drop free of atomics.
    Task(RawTask<T>, bool),
    /// In a [`Shared`] slot: the task of a handle dropped while it ran,
    /// kept for its abort handles (module docs).
    Detached(RawTask<T>),
    /// Aborted after it had completed (the cancel found its output).
    /// Boxed: a handle is not as large as its task's output (that case is
    /// rare; every handle and `JoinSet` entry held the room).
    Ended(Option<Box<Guarded<Outcome<T>>>>),
    /// The await has given its result: polling again is a caller's bug.
    Done,
    /// The handle made an [`AbortHandle`]: the task is in the slot they
    /// share (module docs).
    Shared(Arc<Shared<T>>),
}

impl<T> Slot<T> {
    /// An await found the task running (it left async-task its waker).
    fn waited(&mut self) {
        if let Slot::Task(_, waited) = self {
            *waited = true;
        }
    }

    /// Polls for the task's end: its output, or `None` if it was cancelled.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Guarded<Outcome<T>>>> {
        match self {
            Slot::Task(task, _) | Slot::Detached(task) => Pin::new(task).poll(cx),
            Slot::Ended(out) => Poll::Ready(out.take().map(|out| *out)),
            Slot::Shared(_) => unreachable!("a handle polls its shared slot's task"),
            Slot::Done => panic!(
                "a wq::JoinHandle was polled after it gave its result: await it once (wrap it in `futures::FutureExt::fuse` to poll it in a loop)"
            ),
        }
    }
}

/// A value whose drop may run user code (a task's output or panic payload,
/// a blocking job's unrun closure) where async-task drops it: inside its
/// `abort_on_panic`, so a panic there would abort the process. Dropped
/// through this, such a panic is caught (the panic hook has reported it).
pub(crate) struct Guarded<T>(Option<T>);

impl<T> Guarded<T> {
    pub(crate) fn new(value: T) -> Guarded<T> {
        Guarded(Some(value))
    }

    /// The value, which is no longer guarded.
    pub(crate) fn take(mut self) -> T {
        self.0.take().expect("a guarded value is taken once")
    }
}

impl<T> Drop for Guarded<T> {
    fn drop(&mut self) {
        if std::mem::needs_drop::<T>() {
            // A task's output dropped where it ends (its handle detached or
            // aborted) runs user code: the task's deferred end, if its
            // worker holds it, goes first, as it did before the output's
            // drop when ends were not deferred (that drop may wait for
            // something that waits for the end: a flush).
            crate::pool::worker::run_deferred_end();
        }
        if let Some(value) = self.0.take()
            && let Err(panic) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(value)))
        {
            // The payload's own drop must not unwind either.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(panic)));
        }
    }
}

/// An owned permission to await a spawned task's output.
///
/// Awaiting it gives `Ok(output)`, or a [`JoinError`] if the task panicked
/// or was cancelled (by [`abort`](JoinHandle::abort), or because the runtime
/// shut down first), or was refused at its spawn (the runtime shut down, a
/// named workqueue being drained or over its items in flight:
/// [`JoinError::is_refused`]). Dropping it detaches the task: it runs on, and its
/// output is dropped. It gives its result once: a poll after that panics
/// (a caller's bug); it is a `FusedFuture`, so `futures::select!` in a
/// loop skips a handle that has answered.
///
/// ```
/// # let rt = wq::Runtime::new().unwrap();
/// rt.block_on(async {
///     let h = wq::spawn(async { 40 + 2 });
///     assert_eq!(h.await.unwrap(), 42);
///
///     let p = wq::spawn(async { panic!("boom") });
///     let err = p.await.unwrap_err();
///     assert!(err.is_panic());
/// });
/// ```
#[must_use = "dropping a JoinHandle detaches the task; .await it to get its output"]
pub struct JoinHandle<T> {
    // A lock so `abort(&self)` can cancel from any thread; uncontended in
    // practice (taken by the owner's polls and the rare abort). Not
    // dropped: the handle's `Drop` leaves it empty or `Done`, which own
    // nothing (and a `Mutex` on Linux is a futex word), and the drop of a
    // `Slot` (an `Arc`, two task handles, a box) is a call where this
    // drop is inlined into its caller's.
    task: std::mem::ManuallyDrop<Mutex<Option<Slot<T>>>>,
    /// The waker async-task was given by the last await that found the
    /// task running: woken by [`abort`](JoinHandle::abort). async-task
    /// wakes the awaiter when a cancel closes the task, but a cancel that
    /// finds it closed already (the shutdown dropping it) does not, and the
    /// abort's own poll of the cancel then registered a no-op waker in its
    /// place: a `JoinSet` entry was never polled again (`join_next` waited
    /// for ever).
    awaiter: futures::task::AtomicWaker,
    /// For an await whose waker is not the polling task's own (another
    /// executor's, a `JoinSet`'s): the relay async-task is given instead,
    /// and a waker of it, made at the first such await.
    relay: Option<(Arc<Relay>, Waker)>,
    kind: Kind,
}

/// What async-task wakes when a handle's task ends or is cancelled: the
/// awaiting task's waker, registered here, woken with a panic caught.
/// async-task calls its awaiter under an abort-on-panic guard, so a
/// foreign executor's waker that panicked aborted the process; the
/// driver and the flush waiters catch such a panic the same way.
#[derive(Default)]
struct Relay {
    waker: futures::task::AtomicWaker,
}

impl Relay {
    fn wake_awaiter(&self) {
        if let Some(w) = self.waker.take() {
            super::queue_ref::wake_caught(w);
        }
    }

    /// A relay and its waker.
    fn new() -> (Arc<Relay>, Waker) {
        let relay = Arc::new(Relay::default());
        let waker = Waker::from(relay.clone());
        (relay, waker)
    }
}

impl std::task::Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_awaiter();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_awaiter();
    }
}

/// What a [`JoinHandle`] is the handle of, besides a task of the pools.
#[derive(Debug, Clone)]
enum Kind {
    Task,
    /// A task never spawned ([`JoinHandle::refused`]), and why.
    Refused(&'static str),
    /// A blocking job ([`JoinHandle::blocking`]): its pool's view of it,
    /// with the [`JOB_STARTED`], [`JOB_ABORTED`] and [`JOB_REFUSED`] bits.
    Job(Arc<dyn JobControl>),
    /// An item of a workqueue created to wait on its inactive list
    /// ([`JoinHandle::waiting`]): its task's metadata, which its abort
    /// reads while it holds the task.
    Waiting(MetaPtr),
}

/// The metadata of the task a handle holds (in its allocation, which the
/// handle's task reference keeps).
#[derive(Debug, Clone)]
struct MetaPtr(std::ptr::NonNull<super::TaskMeta>);

// SAFETY: only dereferenced as `&TaskMeta` (which is `Sync`) while the
// handle holds its task.
unsafe impl Send for MetaPtr {}
// SAFETY: as above.
unsafe impl Sync for MetaPtr {}

/// [`Kind::Job`]: the job's closure has started (set by its thread).
const JOB_STARTED: u8 = 1;
/// [`Kind::Job`]: the handle aborted it before it started.
const JOB_ABORTED: u8 = 2;
/// [`Kind::Job`]: its pool had shut down when the job came to it (a spawn
/// racing the runtime's shutdown): it never ran, and its handle says
/// refused, as a spawn after the shutdown does.
const JOB_REFUSED: u8 = 4;

/// A blocking job as its pool keeps it, beside its runnable (one
/// allocation per job, as the bare word was).
pub(crate) trait JobControl: Send + Sync + std::fmt::Debug {
    /// Its [`JOB_STARTED`], [`JOB_ABORTED`] and [`JOB_REFUSED`] bits.
    fn word(&self) -> &AtomicU8;
    /// Its handle aborted it before its closure started, and cancelled it:
    /// the pool drops it now if it is still queued (a queued job's cancel
    /// does not schedule it again), rather than when a thread reaches it.
    fn aborted(&self);
}

/// Whether a blocking job's handle aborted it ([`JOB_ABORTED`]).
pub(crate) fn job_aborted(word: &AtomicU8) -> bool {
    word.load(Ordering::Acquire) & JOB_ABORTED != 0
}

/// A blocking job's pool refuses it ([`JOB_REFUSED`]), unless its handle
/// aborted it first (an abort's cancel also comes to the pool).
pub(crate) fn refuse_job(word: &AtomicU8) {
    let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
        (w & (JOB_ABORTED | JOB_STARTED) == 0).then_some(w | JOB_REFUSED)
    });
}

/// [`JoinHandle::refused`]'s reason when the runtime is shut down.
pub(crate) const RUNTIME_SHUT_DOWN: &str =
    "its runtime had shut down (spawn while the Runtime is alive)";

impl<T> JoinHandle<T> {
    pub(crate) fn new(task: RawTask<T>) -> JoinHandle<T> {
        JoinHandle {
            task: std::mem::ManuallyDrop::new(Mutex::new(Some(Slot::Task(task, false)))),
            awaiter: futures::task::AtomicWaker::new(),
            relay: None,
            kind: Kind::Task,
        }
    }

    /// The handle of a workqueue's item created to wait on its inactive
    /// list: its abort takes it out of the list (`abort`).
    pub(crate) fn waiting(mut self, meta: &super::TaskMeta) -> JoinHandle<T> {
        self.kind = Kind::Waiting(MetaPtr(std::ptr::NonNull::from(meta)));
        self
    }

    /// The handle of a task that was never spawned, `why` (the future was
    /// dropped): it resolves to a [`JoinError`] that says so
    /// ([`JoinError::is_refused`]).
    pub(crate) fn refused(why: &'static str) -> JoinHandle<T> {
        JoinHandle {
            task: std::mem::ManuallyDrop::new(Mutex::new(None)),
            awaiter: futures::task::AtomicWaker::new(),
            relay: None,
            kind: Kind::Refused(why),
        }
    }

    /// Makes `f` a task that runs once, outside the pools (the blocking
    /// pool), which `control` is the pool's view of: its runnable goes to
    /// `schedule`, which the caller's `Runnable::schedule` calls first. A
    /// panic in `f` is caught and the
    /// handle gives it as [`JoinError::is_panic`]; dropping the runnable
    /// unrun cancels the task. It has no home pool: it never enters one.
    ///
    /// An abort stops a job only before its closure starts (a thread
    /// cannot be interrupted; tokio's rule): the job's thread and the
    /// handle each set their bit with one `fetch_or` on the job's word,
    /// and whichever comes second sees the other's. The thread that sees
    /// `JOB_ABORTED` leaves the closure unrun and waits (`Pending`) for the
    /// abort's cancel, which drops it; an abort that sees `JOB_STARTED`
    /// does nothing, and the await gives the closure's result. After its
    /// cancel, the abort tells the pool ([`JobControl::aborted`]).
    pub(crate) fn blocking<F>(
        f: F,
        control: Arc<dyn JobControl>,
        schedule: impl Fn(super::Runnable) + Send + Sync + 'static,
    ) -> (super::Runnable, JoinHandle<T>)
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let meta = TaskMeta::new(None, 0, 0);
        // Unrun (cancelled, or dropped at shutdown), the closure is dropped
        // with the future: guarded, as the output is.
        let job = Guarded::new(f);
        let bits = control.clone();
        let future = async move {
            if bits.word().fetch_or(JOB_STARTED, Ordering::AcqRel) & JOB_ABORTED != 0 {
                // Aborted first: its cancel drops this future.
                std::future::pending::<()>().await;
            }
            let f = job.take();
            Guarded::new(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)))
        };
        let (runnable, task) = async_task::Builder::new()
            .metadata(meta)
            .spawn(move |_| future, schedule);
        let mut handle = JoinHandle::new(task.fallible());
        handle.kind = Kind::Job(control);
        (runnable, handle)
    }

    /// Cancels the task. If it has not finished, its future is dropped --
    /// by a worker of its pool, which the cancel schedules (the task is
    /// queued once more, to be dropped instead of polled), or after its
    /// current poll -- and awaiting this handle gives a cancelled
    /// [`JoinError`]. That error can come before the future is dropped:
    /// do not count on its resources (a socket's port, say) being free
    /// when the await returns. A task that completed before the cancel
    /// keeps its output: awaiting gives it. (One whose last poll is
    /// running when the cancel comes is cancelled: its output is dropped,
    /// a panic of that poll included; tokio keeps a poll's result that
    /// completes, and would give that panic.)
    ///
    /// A panic in the future's `Drop` after a cancel reaches only the
    /// panic hook (its message on stderr): the await has answered
    /// cancelled by then, where tokio's handle reports it (`is_panic`).
    /// Where the future is dropped: mostly on a worker of its pool, as
    /// above; on the thread calling `abort` when the task is a named
    /// queue's item still waiting on its queue's inactive list and that
    /// queue has closed, or when the abort races the runtime's shutdown
    /// past its last drain (then the aborting thread drains the closed
    /// pool).
    ///
    /// A [`spawn_blocking`](crate::spawn_blocking) job is aborted only if
    /// its closure has not started: a running closure cannot be stopped,
    /// so the abort does nothing and awaiting gives its result (as
    /// tokio's). A queued one is taken out of the blocking pool's queue
    /// and its closure dropped (with what it captured) during the abort,
    /// on the calling thread; one a blocking thread has just taken from
    /// the queue, not yet started, never runs, and is dropped a moment
    /// after: by that thread, or, if the thread has moved on already, by
    /// the abort itself.
    pub fn abort(&self) {
        self.core().abort();
    }

    /// Whether the task has finished (completed, panicked, or cancelled).
    /// After an [`abort`](JoinHandle::abort) that cancels it (any task but a
    /// blocking job whose closure has started) it is true at once, as
    /// awaiting the handle then says cancelled at once; the future may still be
    /// running its last poll or waiting to be dropped by a worker (tokio's
    /// `is_finished` stays false until then). Do not count on what the
    /// future holds (a socket's port, a lock) being free when it says
    /// true after an abort.
    pub fn is_finished(&self) -> bool {
        self.core().is_finished()
    }

    /// Its slot, the waker its abort wakes, and its kind.
    fn core(&self) -> Core<'_, T> {
        Core {
            task: &self.task,
            awaiter: &self.awaiter,
            kind: &self.kind,
        }
    }
}

impl<T: Send + 'static> JoinHandle<T> {
    /// A handle that aborts this task without owning it: it can be cloned
    /// and sent to other threads, and it works after this `JoinHandle` is
    /// dropped (the task detached). [`AbortHandle::abort`] is
    /// [`JoinHandle::abort`] (a task that completed keeps its output for
    /// this handle's await; a blocking job is aborted only before its
    /// closure starts), and awaiting this handle after it gives a
    /// cancelled [`JoinError`].
    ///
    /// The first call allocates what the handles share (a spawn pays for
    /// none); later calls clone it. A task already answered, aborted or
    /// refused gives a handle that does nothing and says finished.
    ///
    /// While an abort handle lives, a task whose `JoinHandle` was dropped
    /// before it ended keeps its output until an abort or the last abort
    /// handle's drop (tokio's drops it when the task completes); a
    /// blocking job's started closure is not aborted, so its output stays
    /// until the last abort handle's drop.
    ///
    /// ```
    /// # let rt = wq::Runtime::new().unwrap();
    /// rt.block_on(async {
    ///     let handle = wq::spawn(std::future::pending::<()>());
    ///     let abort = handle.abort_handle();
    ///     drop(handle); // detached: it runs on
    ///     assert!(!abort.is_finished());
    ///     abort.abort(); // its future is dropped by a worker
    ///     assert!(abort.is_finished());
    /// });
    /// ```
    pub fn abort_handle(&self) -> AbortHandle {
        let mut slot = crate::loom::lock(&*self.task);
        let shared = match slot.take() {
            Some(Slot::Shared(shared)) => {
                *slot = Some(Slot::Shared(shared.clone()));
                shared
            }
            Some(Slot::Task(task, waited)) => {
                let shared = Arc::new(Shared {
                    task: Mutex::new(Some(Slot::Task(task, waited))),
                    awaiter: futures::task::AtomicWaker::new(),
                    kind: self.kind.clone(),
                });
                // An await's waker registered here is the one an abort
                // wakes now (module docs).
                if let Some(waker) = self.awaiter.take() {
                    shared.awaiter.register(&waker);
                }
                *slot = Some(Slot::Shared(shared.clone()));
                shared
            }
            other => {
                *slot = other;
                return AbortHandle { task: None };
            }
        };
        AbortHandle { task: Some(shared) }
    }
}

/// What an abort needs: the slot holding the task, the waker of an await
/// that found it running, and the task's kind. A handle's own, or the
/// [`Shared`] one it and its abort handles hold.
struct Core<'a, T> {
    task: &'a Mutex<Option<Slot<T>>>,
    awaiter: &'a futures::task::AtomicWaker,
    kind: &'a Kind,
}

impl<T> Core<'_, T> {
    /// [`JoinHandle::abort`].
    fn abort(&self) {
        self.abort_after(false);
    }

    /// [`abort`](Self::abort); `job_told`: a blocking job's word already
    /// has the abort's bit from this abort, which found the job unstarted
    /// (a handle's abort going on with its shared slot: a second
    /// `fetch_or` could see a start that came after the first, and leave
    /// the job waiting for a cancel that never comes).
    fn abort_after(&self, job_told: bool) {
        if !job_told
            && let Kind::Job(job) = self.kind
            && job.word().fetch_or(JOB_ABORTED, Ordering::AcqRel) & JOB_STARTED != 0
        {
            return;
        }
        // Taken out of the slot, so that the cancel runs without the lock
        // (it may schedule the task: its pool's lock, a kick). Meanwhile a
        // concurrent `abort` does nothing and `is_finished` says true, as
        // for a cancelled task.
        let (task, detached) = {
            let mut slot = crate::loom::lock(self.task);
            match slot.take() {
                Some(Slot::Task(task, _)) if !task.is_finished() => (task, false),
                // Finished too: nobody awaits its output, which the
                // cancel gives and the abort drops.
                Some(Slot::Detached(task)) => (task, true),
                // The handle made an abort handle: the task is in their
                // slot (the job's bit, if any, is set: not again).
                Some(Slot::Shared(shared)) => {
                    *slot = Some(Slot::Shared(shared.clone()));
                    drop(slot);
                    return shared.core().abort_after(true);
                }
                other => {
                    *slot = other;
                    return;
                }
            }
        };
        // An item waiting on its workqueue's inactive list is taken out of
        // it now, if no pump took it first (`scheduler::queue::inactive`,
        // "Abort against pop"), and released without a slot once it is
        // cancelled: its future is dropped by a worker now, not when its
        // turn comes (an ordered queue's running item may wait for that
        // drop: a sender the waiting item owns). It cannot end before it
        // is released, so its queue lives through `take_aborted`.
        let waiting = match self.kind {
            Kind::Waiting(meta) => {
                // SAFETY: `task` is this handle's task, whose allocation
                // holds the metadata.
                let meta = unsafe { meta.0.as_ref() };
                match &meta.queue {
                    Some(queue) if super::abort_claims_waiting(meta) => {
                        queue.take_aborted(super::waiting_id(meta))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        // async-task's `cancel` closes the task unless it has completed
        // (one atomic step: a task completing meanwhile keeps its output,
        // where reading `is_finished` and then dropping the handle lost
        // it). An `async fn` does nothing until polled: the first poll is
        // the cancel, and its answer is all this needs.
        let out = {
            let mut cancel = std::pin::pin!(task.cancel());
            match cancel
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
            {
                Poll::Ready(out) => out,
                // Closed before it completed: it never gives an output (a
                // poll running now that completes drops it). The cancel,
                // dropped at the end of this block, detaches the task; the
                // await says cancelled at once, as it did, rather than
                // wait for a queued task's turn (an item on its
                // workqueue's inactive list, a job behind busy blocking
                // threads: waiting there could deadlock its awaiter).
                Poll::Pending => None,
            }
        };
        if let Some(out) = out {
            // Kept for the await, unless nobody will await it: detached,
            // or (a shared slot) its handle answered cancelled or was
            // dropped since the take (`Done`). Dropped after the lock.
            let unwanted = {
                let mut slot = crate::loom::lock(self.task);
                if detached || slot.is_some() {
                    Some(out)
                } else {
                    *slot = Some(Slot::Ended(Some(Box::new(out))));
                    None
                }
            };
            drop(unwanted);
        }
        // The await, if any, finds the slot emptied (or the output): it
        // gives its result now.
        self.awaiter.wake();
        // Closed now: the worker that runs it drops it, unpolled; with its
        // queue closed, it is dropped here (as the close drops waiting
        // items).
        match waiting {
            Some((runnable, Some(pool))) => super::release_aborted(runnable, &pool),
            Some((runnable, None)) => drop(runnable),
            None => {}
        }
        // A queued blocking job is dropped by its pool now, not when a
        // thread comes to it: it may own what a running job waits for.
        if let Kind::Job(job) = self.kind {
            job.aborted();
        }
    }

    /// [`JoinHandle::is_finished`].
    fn is_finished(&self) -> bool {
        let slot = crate::loom::lock(self.task);
        match slot.as_ref() {
            None | Some(Slot::Ended(_) | Slot::Done) => true,
            Some(Slot::Task(task, _) | Slot::Detached(task)) => task.is_finished(),
            Some(Slot::Shared(shared)) => {
                let shared = shared.clone();
                drop(slot);
                shared.core().is_finished()
            }
        }
    }
}

/// A handle's task once it made an [`AbortHandle`], shared by the handle
/// and its abort handles (module docs).
struct Shared<T> {
    task: Mutex<Option<Slot<T>>>,
    awaiter: futures::task::AtomicWaker,
    kind: Kind,
}

impl<T> Shared<T> {
    fn core(&self) -> Core<'_, T> {
        Core {
            task: &self.task,
            awaiter: &self.awaiter,
            kind: &self.kind,
        }
    }

    /// Its `JoinHandle` is dropped: the await's waker is let go of (as the
    /// handle's own drop does), and an output already there is dropped
    /// now; a task still running stays, detached from the handle, for the
    /// abort handles.
    fn handle_dropped(&self) {
        let out = {
            let mut slot = crate::loom::lock(&self.task);
            match slot.take() {
                Some(Slot::Task(mut task, _)) => {
                    let mut noop = Context::from_waker(Waker::noop());
                    match Pin::new(&mut task).poll(&mut noop) {
                        Poll::Ready(out) => {
                            *slot = Some(Slot::Done);
                            out
                        }
                        Poll::Pending => {
                            *slot = Some(Slot::Detached(task));
                            None
                        }
                    }
                }
                Some(Slot::Ended(out)) => {
                    *slot = Some(Slot::Done);
                    out.map(|out| *out)
                }
                // Aborted (`None`): the handle's going is marked, so
                // that an abort racing it drops an output it finds.
                other => {
                    *slot = Some(other.unwrap_or(Slot::Done));
                    None
                }
            }
        };
        // After the lock: its drop runs user code; so may the waker's.
        drop(out);
        drop(self.awaiter.take());
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        release(
            self.task
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }
}

/// Aborts a task without owning it, from any thread, after its
/// [`JoinHandle`] is gone too ([`JoinHandle::abort_handle`]).
#[derive(Clone)]
pub struct AbortHandle {
    /// `None`: made of a handle whose task had answered, been aborted or
    /// been refused.
    task: Option<Arc<dyn Abort>>,
}

/// A [`Shared`] slot, its output type erased.
trait Abort: Send + Sync {
    fn abort(&self);
    fn is_finished(&self) -> bool;
}

impl<T: Send + 'static> Abort for Shared<T> {
    fn abort(&self) {
        self.core().abort();
    }

    fn is_finished(&self) -> bool {
        self.core().is_finished()
    }
}

impl AbortHandle {
    /// Cancels the task, as [`JoinHandle::abort`] does (read its caveats:
    /// the future is dropped by a worker, after the handle's await may
    /// have said cancelled; a completed task keeps its output; a blocking
    /// job's started closure runs to its end).
    pub fn abort(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }

    /// Whether the task has finished (completed, panicked, or cancelled),
    /// as [`JoinHandle::is_finished`]: true at once after an abort that
    /// cancels it.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|task| task.is_finished())
    }
}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

// Nothing in a handle is pinned through it: async-task's handle is a
// pointer, and an ended abort's output is only moved out.
impl<T> Unpin for JoinHandle<T> {}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // An operation of the awaiting task's budget (`coop`), as tokio's
        // join handles are: a loop joining handles that are already done
        // yields its worker every 128.
        std::task::ready!(crate::coop::poll_proceed(cx));
        let out = self.poll_result(cx);
        if out.is_ready() {
            crate::coop::spend();
        }
        out
    }
}

impl<T> JoinHandle<T> {
    fn poll_result(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>> {
        let this = self.get_mut();
        let slot = this.task.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(Slot::Shared(_)) = slot {
            return this.poll_shared(cx);
        }
        poll_slot(slot, &this.awaiter, &this.kind, Err(&mut this.relay), cx)
    }

    /// [`poll_result`](Self::poll_result) of a handle that made an abort
    /// handle: the result comes from the slot they share, and its waker
    /// waits there (module docs). Out of line: the common await pays a
    /// test of the slot's tag for it.
    #[cold]
    #[inline(never)]
    fn poll_shared(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>> {
        let this = self;
        let Some(Slot::Shared(shared)) = this.task.get_mut().unwrap_or_else(|p| p.into_inner())
        else {
            unreachable!("polled as shared");
        };
        let shared = shared.clone();
        // Through the relay whatever the waker (the task's own too), so
        // that async-task holds the same waker at every poll and wakes
        // none under the lock; the caller's waker is cloned into it before
        // the lock (a foreign waker's clone is user code).
        let (relay, waker) = this.relay.get_or_insert_with(Relay::new);
        relay.waker.register(cx.waker());
        let out = poll_slot(
            &mut crate::loom::lock(&shared.task),
            &shared.awaiter,
            &shared.kind,
            Ok(waker),
            cx,
        );
        if out.is_ready() {
            *this.task.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(Slot::Done);
            // Answered: the wakers let go of, after the lock.
            drop(shared.awaiter.take());
            this.relay = None;
        }
        out
    }
}

/// The await of the task in `slot` (a handle's or its shared one), whose
/// abort wakes `awaiter`: its result, and `slot` done then. `relay`: the
/// relay's waker to poll with (a shared slot's await, the caller's waker
/// registered in it already: the caller lets go of the wakers, after the
/// slot's lock), or the handle's relay, made here for a foreign waker
/// (the wakers let go of here).
#[inline(always)]
fn poll_slot<T>(
    slot: &mut Option<Slot<T>>,
    awaiter: &futures::task::AtomicWaker,
    kind: &Kind,
    mut relay: Result<&Waker, &mut Option<(Arc<Relay>, Waker)>>,
    cx: &mut Context<'_>,
) -> Poll<Result<T, JoinError>> {
    let Some(task) = slot.as_mut() else {
        // Refused, or aborted before it completed.
        *slot = Some(Slot::Done);
        return Poll::Ready(Err(match kind {
            Kind::Refused(why) => JoinError::refused(why),
            Kind::Task | Kind::Job(_) | Kind::Waiting(_) => JoinError::cancelled(),
        }));
    };
    // The running task's own waker (a wq task's: it does not panic)
    // goes to async-task as it is; any other through a relay that
    // catches a panic (`Relay`), made at the first such await (an
    // allocation and a cache line more per handle: 25 ns in a
    // spawn-then-await loop, which a task's own await does not pay).
    let polled = if let Ok(waker) = &relay {
        let polled = task.poll(&mut Context::from_waker(waker));
        if polled.is_pending() {
            awaiter.register(waker);
            task.waited();
        }
        polled
    } else if crate::pool::worker::is_running_tasks_waker(cx.waker()) {
        let polled = task.poll(cx);
        if polled.is_pending() {
            awaiter.register(cx.waker());
            task.waited();
        }
        polled
    } else if let Err(relay) = &mut relay {
        let (relay, waker) = relay.get_or_insert_with(Relay::new);
        // Before the poll: an end after it wakes this waker.
        relay.waker.register(cx.waker());
        let polled = task.poll(&mut Context::from_waker(waker));
        if polled.is_pending() {
            awaiter.register(waker);
            task.waited();
        }
        polled
    } else {
        unreachable!("the relay is given or made")
    };
    let out = match polled {
        Poll::Pending => return Poll::Pending,
        Poll::Ready(Some(out)) => match out.take() {
            Ok(value) => Ok(value),
            Err(payload) => Err(JoinError::panic(payload)),
        },
        // Cancelled, and not by this handle (its abort takes the task
        // out of the slot): its runtime's shutdown dropped it.
        Poll::Ready(None) => Err(match kind {
            Kind::Job(job) if job.word().load(Ordering::Acquire) & JOB_REFUSED != 0 => {
                JoinError::refused(RUNTIME_SHUT_DOWN)
            }
            _ => JoinError::shut_down(),
        }),
    };
    match slot.replace(Slot::Done) {
        // async-task's handle, its result taken (the common case, inline).
        Some(Slot::Task(task, _)) => drop(task),
        other => drop_slot(other),
    }
    if let Err(relay) = relay {
        // Answered: the awaiter's waker (its task's allocation) is not
        // kept for as long as the handle is.
        drop(awaiter.take());
        *relay = None;
    }
    Poll::Ready(out)
}

impl<T> JoinHandle<T> {
    /// Whether an await has given the result ([`FusedFuture::is_terminated`](futures::future::FusedFuture::is_terminated)
    /// through `&mut`: no lock).
    pub(crate) fn answered(&mut self) -> bool {
        matches!(
            self.task.get_mut().unwrap_or_else(|p| p.into_inner()),
            Some(Slot::Done)
        )
    }
}

impl<T> futures::future::FusedFuture for JoinHandle<T> {
    /// True once an await has given the result: `futures::select!` then
    /// skips the handle rather than poll it again.
    fn is_terminated(&self) -> bool {
        matches!(crate::loom::lock(&*self.task).as_ref(), Some(Slot::Done))
    }
}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        let slot = self.task.get_mut().unwrap_or_else(|p| p.into_inner());
        // Answered, or refused or aborted: nothing to drop (a test of the
        // tag). Whatever else it holds is taken out: the slot is left
        // empty, and not dropped (`task`).
        if matches!(slot, Some(Slot::Done) | None) {
            return;
        }
        match slot.take() {
            Some(Slot::Shared(shared)) => {
                // The caller's waker taken out of the relay first: the
                // drop's poll of a completed task wakes the relay (under
                // the shared slot's lock), for nothing now.
                if let Some((relay, _)) = &self.relay {
                    drop(relay.waker.take());
                }
                shared.handle_dropped();
            }
            slot => release(slot),
        }
    }
}

/// Drops a slot's value out of line: a task's, an abort's output, a shared
/// slot's reference (the common paths match async-task's handle inline).
#[cold]
#[inline(never)]
fn drop_slot<T>(slot: Option<Slot<T>>) {
    drop(slot);
}

/// Lets go of a task no handle will await: a handle's at its drop, a shared
/// slot's when its last holder goes.
#[inline]
fn release<T>(slot: Option<Slot<T>>) {
    match slot {
        Some(Slot::Task(mut task, waited)) => {
            // Awaited and left waiting (a `select!` that took another
            // branch, a timeout): async-task keeps that await's waker
            // (the awaiting task's allocation, or the relay with the
            // caller's waker) until the task ends, and wakes it for
            // nothing then. A poll with a no-op waker puts that in its
            // place (tokio's handle lets go of it at the drop). A
            // result it finds is dropped guarded.
            if waited {
                let mut noop = Context::from_waker(Waker::noop());
                drop(Pin::new(&mut task).poll(&mut noop));
            }
            task.detach();
        }
        // Its waker let go of when its handle was dropped
        // (`Shared::handle_dropped`); a detach drops an output, guarded.
        Some(Slot::Detached(task)) => task.detach(),
        Some(Slot::Done) | None => {}
        // An output an abort found (async-task's `cancel`, dropped then,
        // detached the task; the output is dropped guarded), or a shared
        // slot's reference.
        other => drop_slot(other),
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Why a task gave no output.
pub struct JoinError {
    repr: Repr,
}

enum Repr {
    /// Cancelled: by its handle's abort (`true`), or dropped unfinished by
    /// its runtime's shutdown (`false`).
    Cancelled(bool),
    /// Never spawned, and why.
    Refused(&'static str),
    // Mutex: the payload is `Send` but not `Sync`, and errors must be both.
    Panic(Mutex<Box<dyn Any + Send + 'static>>),
}

impl JoinError {
    /// Cancelled by its handle's abort.
    pub(crate) fn cancelled() -> JoinError {
        JoinError {
            repr: Repr::Cancelled(true),
        }
    }

    /// Dropped unfinished by its runtime's shutdown (or its workqueue's
    /// close, which the shutdown does).
    pub(crate) fn shut_down() -> JoinError {
        JoinError {
            repr: Repr::Cancelled(false),
        }
    }

    pub(crate) fn panic(payload: Box<dyn Any + Send + 'static>) -> JoinError {
        JoinError {
            repr: Repr::Panic(Mutex::new(payload)),
        }
    }

    /// The task was cancelled: aborted, or its runtime shut down, or it
    /// was never run, refused at its spawn ([`is_refused`](Self::is_refused):
    /// the runtime had shut down, or a named workqueue was being drained or
    /// held over a billion items in flight). Tell a refusal from a
    /// cancellation with `is_refused`.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled(_) | Repr::Refused(_))
    }

    /// The task never ran: it was refused when spawned (its runtime had
    /// shut down, or its workqueue was being drained or held over a billion
    /// items in flight), and its future was
    /// dropped then. Such an error is [cancelled](JoinError::is_cancelled)
    /// too.
    pub fn is_refused(&self) -> bool {
        matches!(self.repr, Repr::Refused(_))
    }

    pub(crate) fn refused(why: &'static str) -> JoinError {
        JoinError {
            repr: Repr::Refused(why),
        }
    }

    /// The task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic(_))
    }

    /// The panic payload, to resume the panic with
    /// [`std::panic::resume_unwind`].
    ///
    /// # Panics
    /// If the task was cancelled rather than panicked: check
    /// [`is_panic`](JoinError::is_panic) or use
    /// [`try_into_panic`](JoinError::try_into_panic).
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        self.try_into_panic()
            .expect("JoinError::into_panic: the task was cancelled, it did not panic")
    }

    /// The panic payload, or the error back if the task was cancelled.
    pub fn try_into_panic(self) -> Result<Box<dyn Any + Send + 'static>, JoinError> {
        match self.repr {
            Repr::Panic(p) => Ok(p.into_inner().unwrap_or_else(|e| e.into_inner())),
            Repr::Cancelled(_) | Repr::Refused(_) => Err(self),
        }
    }

    fn panic_message(&self) -> Option<String> {
        let Repr::Panic(p) = &self.repr else {
            return None;
        };
        let p = crate::loom::lock(p);
        Some(
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "<non-string payload>".to_owned()),
        )
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Repr::Refused(why) = self.repr {
            return write!(f, "task was never run: {why}");
        }
        match (&self.repr, self.panic_message()) {
            (Repr::Cancelled(true), _) => f.write_str("task was cancelled: its handle aborted it"),
            (_, None) => f.write_str(
                "task was cancelled: its runtime shut down before it finished (keep the \
                 Runtime alive until its tasks are joined)",
            ),
            (_, Some(msg)) => write!(f, "task panicked: {msg}"),
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.panic_message() {
            None if self.is_refused() => write!(f, "JoinError::Refused({self})"),
            None => write!(f, "JoinError::Cancelled({self})"),
            Some(msg) => write!(f, "JoinError::Panic({msg:?})"),
        }
    }
}

impl std::error::Error for JoinError {}

/// For `handle.await?` in a function returning `io::Result` (as tokio's):
/// an error of kind `Other` holding the `JoinError` (its message, and a
/// panic's payload: [`std::io::Error::into_inner`] and a downcast give it
/// back).
impl From<JoinError> for std::io::Error {
    fn from(e: JoinError) -> std::io::Error {
        std::io::Error::other(e)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A task awaiting a handle with its own waker gives async-task that
    /// waker (no relay: the worker knows its running task's pointer, which
    /// async-task's wakers carry); another waker goes through a relay.
    #[test]
    fn only_a_foreign_waker_gets_a_relay() {
        let rt = crate::Runtime::builder().build().unwrap();
        let relays = rt
            .block_on(rt.spawn(async {
                let (tx, rx) = futures::channel::oneshot::channel::<()>();
                let mut h = crate::spawn(async move {
                    let _ = rx.await;
                });
                // Its own waker.
                let own = std::future::poll_fn(|cx| {
                    assert!(Pin::new(&mut h).poll(cx).is_pending());
                    Poll::Ready(h.relay.is_some())
                })
                .await;
                // Another (as a `JoinSet`'s or another executor's).
                let other = futures::task::noop_waker();
                assert!(
                    Pin::new(&mut h)
                        .poll(&mut Context::from_waker(&other))
                        .is_pending()
                );
                let foreign = h.relay.is_some();
                tx.send(()).unwrap();
                h.await.unwrap();
                (own, foreign)
            }))
            .unwrap();
        assert_eq!(relays, (false, true));
    }
}
