//! A task's reference to its workqueue, counted as the item's count in
//! flight on the stripe the task was spawned on.
//!
//! A task of a named workqueue reaches its queue until its end: it
//! reports its polls, its repatriations and at last its finish there (its
//! end, [`TaskEnd`], comes after its future is gone: at once, or after its
//! worker's next look at its queues).
//! With an `Arc` clone per task, every item would write the `Arc`'s count
//! at its spawn (the spawner's clone) and at its free (as a rule on a
//! worker's CPU): one cache line that every CPU spawning or running the
//! queue's items writes, and two read-modify-writes per item besides the
//! queue's own counts. So a task's reference *is* its count in flight, on
//! the queue's stripe lines: taken by the spawn's increment and given back
//! by the finish's decrement, its last access to the queue
//! (`scheduler::queue::flight` has the protocol and its loom models). The
//! tasks together hold the queue's allocation through one strong count of
//! its `Arc`, **the tasks' share**, taken when the queue is created and
//! dropped by whichever comes last of the last handle's drop and the last
//! finish.
//!
//! So a `QueueRef` is valid from the task's spawn to its finish (made when
//! its `TaskEnd` drops: at the drop of its future, `TaskCell::drop`, or,
//! deferred, after its worker's next look), and never dereferenced after: the
//! task's metadata outlives the queue when a `JoinHandle` keeps the task.
//!
//! A spawn and a finish on one CPU write only that stripe's line.

use std::ptr::NonNull;
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::QueueLink;
use super::in_flight::Finished;
use crate::loom::sync::atomic::{AtomicU64, AtomicUsize};

/// What a workqueue counts per stripe, all on the stripe's one cache line:
/// what an item writes at its spawn and again at its end (its in-flight
/// count, which is its task's reference, and its slot) is one line, not
/// two, to move between the spawning CPU and the CPU that ran the item.
#[derive(Debug)]
pub(crate) struct StripeLine {
    /// `scheduler::queue::flight`: items in flight per flush color, the
    /// flushes' flags, the finishers on the slow path, `DEAD`.
    pub(crate) word: AtomicU64,
    /// `scheduler::queue::gate`: slots leased to the stripe and not in use.
    pub(crate) spare: AtomicUsize,
}

/// A queue's stripe lines, shared by its gate, its in-flight counts and
/// its task references (each reads its own fields).
pub(crate) type StripeLines = Arc<[CachePadded<StripeLine>]>;

/// `stripes` (at least one) zeroed stripe lines.
pub(crate) fn stripe_lines(stripes: usize) -> StripeLines {
    (0..stripes.max(1))
        .map(|_| {
            CachePadded::new(StripeLine {
                word: AtomicU64::new(0),
                spare: AtomicUsize::new(0),
            })
        })
        .collect()
}

/// A task's reference to its workqueue (module docs): derefs to the queue
/// from the task's spawn to its finish; [`QueueRef::finish`] gives it
/// back, and nothing may dereference it after.
pub(crate) struct QueueRef {
    /// The queue, as the tasks' share holds it ([`TasksShare`]).
    link: NonNull<dyn QueueLink>,
}

// SAFETY: a `QueueRef` is a shared reference to a `QueueLink`, which is
// `Send + Sync`; its finish only does what any thread may do to the queue.
unsafe impl Send for QueueRef {}
// SAFETY: as above.
unsafe impl Sync for QueueRef {}

/// The tasks' share (module docs): one strong count of a queue's `Arc`,
/// held for all its tasks, as the pointer `Arc::into_raw` gave for it.
pub(crate) struct TasksShare {
    link: NonNull<dyn QueueLink>,
}

// SAFETY: a strong count of an `Arc` of a `QueueLink`, which is `Send +
// Sync`.
unsafe impl Send for TasksShare {}
// SAFETY: as above.
unsafe impl Sync for TasksShare {}

impl TasksShare {
    /// Takes the tasks' share of a new queue (for its first handle).
    pub(crate) fn new<Q: QueueLink>(queue: &Arc<Q>) -> TasksShare {
        let raw: *const Q = Arc::into_raw(queue.clone());
        let link: *const dyn QueueLink = raw;
        TasksShare {
            // `Arc::into_raw` never gives a null pointer.
            link: NonNull::new(link.cast_mut()).expect("an Arc's pointer"),
        }
    }

    /// A reference to the queue for a new task.
    ///
    /// # Safety
    /// The caller holds a handle of the queue (no gone step has run) and
    /// has counted the task in flight (the count is the reference).
    pub(crate) unsafe fn task_ref(&self) -> QueueRef {
        QueueRef { link: self.link }
    }

    /// Drops the share: the gone step found no task left.
    ///
    /// # Safety
    /// The gone step returned `true` for this queue.
    pub(crate) unsafe fn release(&self) {
        // SAFETY: the caller's contract.
        unsafe { drop_share(self.link) };
    }
}

/// Drops the tasks' share held as `link`.
///
/// # Safety
/// The caller owns the share (the step that found no task and no handle
/// left), and `link` is the pointer `Arc::into_raw` gave for it, unsized to
/// `dyn QueueLink` (same data pointer, the queue's layout).
unsafe fn drop_share(link: NonNull<dyn QueueLink>) {
    // SAFETY: the caller's contract.
    drop(unsafe { Arc::from_raw(link.as_ptr().cast_const()) });
}

impl QueueRef {
    /// The task's future is gone: tells the queue (`released`, `color`,
    /// `stripe`: as [`QueueLink::finishing`]), which gives the reference
    /// back. The task's last access to the queue, unless no task and no
    /// handle is left, in which case the queue goes with the tasks' share.
    ///
    /// # Safety
    /// Called once per task, and the reference is not dereferenced after.
    pub(crate) unsafe fn finish(&self, released: bool, color: u8, stripe: u8) {
        // The borrows of the queue end before its last change, made
        // through the atomic alone (`LastStep`: as `Arc::drop`).
        let step = {
            // SAFETY: the task has not finished: its count holds the queue.
            let queue = unsafe { self.link.as_ref() };
            queue.finishing(released, color, stripe)
        };
        let mut waiters = Vec::new();
        // SAFETY: read from this task's queue just now, the task counted.
        let finished = unsafe {
            step.take(|| {
                // On the slow path the task is still counted (as pending)
                // until `take`'s last decrement, after this.
                waiters = self.link.as_ref().flagged(color);
            })
        };
        // Woken after the task's last access.
        waiters.into_iter().for_each(wake_caught);
        if finished == Finished::DropShare {
            // SAFETY: `take` left no task and no handle: this thread
            // owns the share, held as `link` (see `TasksShare::new`).
            unsafe { drop_share(self.link) };
        }
    }
}

impl QueueRef {
    /// The task's end as a value ([`TaskEnd`]): the statistics of its
    /// last poll (`last_poll`: whether it was its first, and the raw clock
    /// when it began), then its finish (as [`QueueRef::finish`]), run when
    /// the value is dropped.
    ///
    /// # Safety
    /// As [`QueueRef::finish`]: once per task, and the reference is not
    /// dereferenced after (the end holds the count in flight until it
    /// runs).
    pub(crate) unsafe fn end(
        &self,
        last_poll: Option<(bool, u64)>,
        released: bool,
        color: u8,
        stripe: u8,
    ) -> TaskEnd {
        TaskEnd {
            link: self.link,
            last_poll,
            ended_at: 0,
            released,
            color,
            stripe,
        }
    }
}

/// A task's end as a value: the statistics of its last poll and its
/// finish ([`QueueRef::end`]), run when dropped, so it is never lost (an
/// item left counted in flight would hold its flush for good). Most run
/// at once; a worker keeps the end of the task whose run it just finished
/// and runs it after its next look at its queues (the **deferred end**,
/// `pool::worker`): the look that may find the next item comes first.
pub(crate) struct TaskEnd {
    link: NonNull<dyn QueueLink>,
    /// Whether its last poll was its first, and when it began (raw clock).
    last_poll: Option<(bool, u64)>,
    /// When the run of that poll ended (raw clock), as its worker read it
    /// ([`TaskEnd::ended_at`]); 0: the clock when the end runs.
    ended_at: u64,
    released: bool,
    color: u8,
    stripe: u8,
}

impl TaskEnd {
    /// Its last poll's run ended at raw clock `at`: the worker's own read
    /// as the run ends, which times the poll (with the rest of its run:
    /// the future's drop, its output stored, its joiner woken) and spares
    /// the poll a read of its own between the item's last act and its
    /// worker's next look.
    pub(crate) fn ended_at(&mut self, at: u64) {
        self.ended_at = at;
    }
}

impl Drop for TaskEnd {
    fn drop(&mut self) {
        let task = QueueRef { link: self.link };
        if let Some((first, start)) = self.last_poll {
            let end = match self.ended_at {
                0 => crate::clock::now(),
                at => at,
            };
            task.polled(first, crate::clock::delay_ns(start, end));
        }
        // SAFETY: `QueueRef::end`'s contract: this is the task's one
        // finish, and its count in flight held the queue until now.
        unsafe { task.finish(self.released, self.color, self.stripe) };
    }
}

impl std::fmt::Debug for TaskEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEnd")
            .field("last_poll", &self.last_poll)
            .field("stripe", &self.stripe)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for QueueRef {
    type Target = dyn QueueLink;

    fn deref(&self) -> &(dyn QueueLink + 'static) {
        // SAFETY: dereferenced only before the task's finish (the type's
        // contract, kept by `task`: its future's poll, its wakes, and the
        // finish in the future's drop), while its count holds the queue.
        unsafe { self.link.as_ref() }
    }
}

/// Wakes a flush's waiter, whose waker may be another executor's and
/// panic: a finish runs where its item ended, on a worker (its deferred
/// end, outside any poll's catch) or in a task's drop, and must not unwind
/// there (a worker thread would die holding its slot). The panic has been
/// reported by the hook; it is dropped here.
pub(crate) fn wake_caught(w: std::task::Waker) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || w.wake())) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(panic)));
    }
}
