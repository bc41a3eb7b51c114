//! A task's reference to its workqueue, counted on the stripe the task was
//! spawned on.
//!
//! A task of a named workqueue holds its queue until the task is freed: it
//! reports its polls, its finish and its repatriations there. With an `Arc`
//! clone per task, every item would write the `Arc`'s count at its spawn
//! (the spawner's clone) and at its free (as a rule on a worker's CPU): one
//! cache line that every CPU spawning or running the queue's items writes.
//! So tasks count their references on the queue's stripes, beside its
//! other per-item counts, [`TaskRefs`], and hold the queue's allocation
//! together through one strong count of its `Arc`, **the tasks' share**,
//! taken when the queue is created.
//!
//! # Protocol
//! The references are counted per stripe (the spawning thread's, as the
//! queue's other counts): each stripe's word is `2 * tasks | DEAD`, and a
//! task takes and puts its reference on its spawner's stripe, so a stripe
//! never counts below its live tasks. Once every handle of the queue (the
//! `Workqueue`s a user holds) is gone, the stripes are collected into one
//! count, `left`, as the kernel's `percpu_ref` switches to atomic mode.
//! - **Take** (a spawn, by a thread that holds a handle): add 2 to the
//!   stripe (`Relaxed`, as `Arc::clone`: the spawner's handle keeps the
//!   queue alive, and the task is published to other threads by its
//!   queueing).
//! - **Put** (a task freed): subtract 2 from its stripe (`Release`). If the
//!   stripe was not yet collected, that is all: the put's last access to
//!   the queue. If it was (`DEAD` set), the task was counted in `left`:
//!   subtract 1 there (`Release`); the put that leaves `left` at zero fences
//!   (`Acquire`) and drops the tasks' share, maybe the queue with it.
//! - **Gone** (the last handle dropped, while it still holds its own strong
//!   count): mark every stripe `DEAD` (`AcqRel`), collecting its count, and
//!   add the sum to `left` (`AcqRel`); if that leaves `left` at zero, no
//!   task holds a reference: drop the tasks' share.
//!
//! Invariants: no take follows the gone step (only a handle's holder
//! spawns). A put on a stripe before its collection is in the collected
//! count; one after it subtracts from `left` (which may go below zero
//! until the gone step adds the collected counts, so zero is reached
//! exactly once, after both the gone step and every put). Every access a
//! task makes to its queue comes before its put (`Release`); the step that
//! reaches zero acquires every put before it (the stripes' and `left`'s
//! read-modify-writes are release sequences), and the `Arc`'s own count
//! orders the share's drop before the queue is freed. The model
//! `loom_a_queue_outlives_its_tasks_and_is_freed_once` checks it, and its
//! two negative controls (the puts' orderings off, the gone step's off)
//! show that each side's orderings are needed.
//!
//! A spawn and a free on one CPU write only that stripe's line.

use std::ptr::NonNull;
use std::sync::Arc;

use crossbeam_utils::CachePadded;

use super::QueueLink;
use crate::loom::Fences;
use crate::loom::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// A stripe's flag: collected by the gone step.
const DEAD: usize = 1;
/// One task's reference on a stripe.
const TASK: usize = 2;

/// What a workqueue counts per stripe, all on the stripe's one cache line:
/// what an item writes at its spawn and again at its end (its task's
/// reference, its in-flight count, its slot) is one line, not three, to
/// move between the spawning CPU and the CPU that ran the item.
#[derive(Debug)]
pub(crate) struct StripeLine {
    /// [`TaskRefs`]: `2 * tasks | DEAD`.
    pub(crate) refs: AtomicUsize,
    /// `scheduler::queue::flight`: items in flight per flush color.
    pub(crate) flight: [AtomicIsize; 2],
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
                refs: AtomicUsize::new(0),
                flight: [AtomicIsize::new(0), AtomicIsize::new(0)],
                spare: AtomicUsize::new(0),
            })
        })
        .collect()
}

/// The references tasks hold to their queue (module docs).
#[derive(Debug)]
pub(crate) struct TaskRefs {
    /// Per stripe: `refs` is `2 * tasks | DEAD`.
    stripes: StripeLines,
    /// After the gone step: the references left.
    left: AtomicIsize,
    /// The puts' orderings (turned off by a negative model).
    fences: Fences,
    /// The gone step's orderings (turned off by another).
    gone_fences: Fences,
}

impl TaskRefs {
    /// References counted in `stripes` stripes (at least one) of their
    /// own.
    #[cfg(all(test, loom))]
    pub(crate) fn new(stripes: usize) -> TaskRefs {
        TaskRefs::on(stripe_lines(stripes))
    }

    /// References counted on `lines`.
    pub(crate) fn on(lines: StripeLines) -> TaskRefs {
        TaskRefs {
            stripes: lines,
            left: AtomicIsize::new(0),
            fences: Fences::default(),
            gone_fences: Fences::default(),
        }
    }

    /// `stripe`'s word (`stripe` is below the stripe count).
    fn stripe(&self, stripe: usize) -> &AtomicUsize {
        &self.stripes[stripe].refs
    }

    /// A spawn takes a reference for its task on `stripe` (the spawner
    /// holds a handle).
    pub(crate) fn take(&self, stripe: usize) {
        let before = self.stripe(stripe).fetch_add(TASK, Ordering::Relaxed);
        debug_assert_eq!(
            before & DEAD,
            0,
            "a task is spawned on a queue with no handle"
        );
    }

    /// A task drops its reference, taken on `stripe`. Returns whether the
    /// caller must drop the tasks' share (no task and no handle is left);
    /// if not, the caller must not touch the queue again.
    #[must_use]
    pub(crate) fn put(&self, stripe: usize) -> bool {
        let release = self.fences.or_relaxed(Ordering::Release);
        let before = self.stripe(stripe).fetch_sub(TASK, release);
        if before & DEAD == 0 {
            return false;
        }
        if self.left.fetch_sub(1, release) != 1 {
            return false;
        }
        self.fences.fence_of(Ordering::Acquire);
        true
    }

    /// The last handle of the queue is being dropped. Returns whether the
    /// caller must drop the tasks' share (no task holds a reference).
    #[must_use]
    pub(crate) fn gone(&self) -> bool {
        let acq_rel = self.gone_fences.or_relaxed(Ordering::AcqRel);
        let counted: usize = self
            .stripes
            .iter()
            .map(|s| {
                let before = s.refs.fetch_or(DEAD, acq_rel);
                debug_assert_eq!(before & DEAD, 0, "a queue's handles go once");
                before / TASK
            })
            .sum();
        let counted = counted as isize;
        self.left.fetch_add(counted, acq_rel) + counted == 0
    }
}

/// A task's counted reference to its workqueue (module docs): derefs to the
/// queue; [`QueueRef::put`] gives it back (the task's metadata does, with
/// the stripe it keeps beside it, when the task is freed).
pub(crate) struct QueueRef {
    /// The queue, as the tasks' share holds it ([`TasksShare`]).
    link: NonNull<dyn QueueLink>,
}

// SAFETY: a `QueueRef` is a shared reference to a `QueueLink`, which is
// `Send + Sync`; its drop only does what any thread may do to the queue.
unsafe impl Send for QueueRef {}
// SAFETY: as above.
unsafe impl Sync for QueueRef {}

/// The tasks' share (module docs): one strong count of a queue's `Arc`,
/// held for all its tasks, as the pointer `Arc::into_raw` gave for it.
pub(crate) struct TasksShare {
    link: NonNull<dyn QueueLink>,
    /// The queue's references, reached without a virtual call (a spawn
    /// takes one).
    refs: NonNull<TaskRefs>,
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
            refs: NonNull::from(queue.task_refs()),
        }
    }

    /// Takes a reference to the queue for a new task, on `stripe`.
    ///
    /// # Safety
    /// The caller holds a handle of the queue (no `gone` step has run).
    pub(crate) unsafe fn take(&self, stripe: u8) -> QueueRef {
        // SAFETY: the handle keeps the queue, and so its references, alive.
        unsafe { self.refs.as_ref() }.take(usize::from(stripe));
        QueueRef { link: self.link }
    }

    /// Drops the share: the gone step found no task left.
    ///
    /// # Safety
    /// `gone` returned `true` for this queue.
    pub(crate) unsafe fn release(&self) {
        // SAFETY: the share is this caller's to drop (see above), and
        // `link` is what `Arc::into_raw` gave for it, unsized to `dyn
        // QueueLink` (same data pointer, the queue's layout).
        drop(unsafe { Arc::from_raw(self.link.as_ptr().cast_const()) });
    }
}

impl QueueRef {
    /// Gives the reference back, taken on `stripe`: the task is being
    /// freed. The last access to the queue, unless no task and no handle is
    /// left, in which case the queue goes with the tasks' share.
    pub(crate) fn put(self, stripe: u8) {
        // The word outlives this borrow only if the put does not return
        // `true`; `put` touches nothing after its decrement (as
        // `Arc::drop`).
        if self.task_refs().put(usize::from(stripe)) {
            // SAFETY: the put left no task and no handle: this thread owns
            // the tasks' share, and `link` is the pointer `Arc::into_raw`
            // gave for it, unsized to `dyn QueueLink` (same data pointer,
            // the queue's layout).
            drop(unsafe { Arc::from_raw(self.link.as_ptr().cast_const()) });
        }
    }
}

impl std::ops::Deref for QueueRef {
    type Target = dyn QueueLink;

    fn deref(&self) -> &(dyn QueueLink + 'static) {
        // SAFETY: the reference keeps the queue alive until it is dropped.
        unsafe { self.link.as_ref() }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;

    /// A queue in miniature: its task references, state its tasks read
    /// (and its drop writes), and a count of its drops.
    struct Queue {
        refs: TaskRefs,
        state: UnsafeCell<usize>,
        drops: Arc<AtomicUsize>,
    }

    impl Drop for Queue {
        fn drop(&mut self) {
            // A task's read of `state` not ordered before this write is a
            // causality violation (loom reports it).
            // SAFETY: the model's cell; loom checks the access.
            self.state.with_mut(|s| unsafe { *s += 1 });
            self.drops.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The queue's `Arc` as a task holds it: the tasks' share, raw.
    struct Share(*const Queue);
    // SAFETY: the model's queue is Sync (loom atomics and a cell the model
    // checks).
    unsafe impl Send for Share {}

    impl Share {
        fn drop_share(self) {
            // SAFETY: the caller owns the tasks' share.
            drop(unsafe { Arc::from_raw(self.0) });
        }
    }

    /// What a `Workqueue` shares: the queue and the tasks' share; the last
    /// one's drop is the gone step.
    struct Handle {
        queue: Arc<Queue>,
        share: *const Queue,
    }
    // SAFETY: as `Share`.
    unsafe impl Send for Handle {}
    // SAFETY: as `Share`.
    unsafe impl Sync for Handle {}

    impl Drop for Handle {
        fn drop(&mut self) {
            if self.queue.refs.gone() {
                Share(self.share).drop_share();
            }
        }
    }

    /// A task's life after its spawn: it reads its queue, then puts its
    /// reference (taken on `stripe`).
    fn run_task(task: Share, stripe: usize) {
        // SAFETY: the task holds a reference.
        let queue = unsafe { &*task.0 };
        // SAFETY: the model's cell; loom checks the access.
        queue.state.with(|s| assert_eq!(unsafe { *s }, 0));
        if queue.refs.put(stripe) {
            task.drop_share();
        }
    }

    /// A queue with two handles over 2 stripes. This thread spawns a task
    /// on stripe 0, freed on a thread of its own, and drops its handle;
    /// meanwhile another thread spawns a task on stripe 1 through the other
    /// handle, drops that handle, and frees its task. Whichever handle
    /// goes last runs the gone step. The queue is freed exactly once,
    /// after both tasks' last reads.
    fn tasks_racing_the_last_handle(puts_unordered: bool, gone_unordered: bool) {
        loom::model(move || {
            let drops = Arc::new(AtomicUsize::new(0));
            let queue = Arc::new(Queue {
                refs: TaskRefs {
                    fences: Fences {
                        off: puts_unordered,
                    },
                    gone_fences: Fences {
                        off: gone_unordered,
                    },
                    ..TaskRefs::new(2)
                },
                state: UnsafeCell::new(0),
                drops: drops.clone(),
            });
            let share = Arc::into_raw(queue.clone());
            let handle = Arc::new(Handle { queue, share });
            handle.queue.refs.take(0);
            let task = Share(share);
            let task = loom::thread::spawn(move || run_task(task, 0));
            let other = handle.clone();
            let other = loom::thread::spawn(move || {
                other.queue.refs.take(1);
                let task = Share(other.share);
                drop(other);
                run_task(task, 1);
            });
            drop(handle);
            task.join().unwrap();
            other.join().unwrap();
            assert_eq!(
                drops.load(Ordering::Relaxed),
                1,
                "the queue is freed exactly once"
            );
        });
    }

    #[test]
    fn loom_a_queue_outlives_its_tasks_and_is_freed_once() {
        tasks_racing_the_last_handle(false, false);
    }

    /// Without the puts' orderings, the model must find a task's read that
    /// is not ordered before the queue's free.
    #[test]
    #[should_panic(expected = "Causality violation")]
    fn loom_without_the_puts_orderings_a_task_reads_a_freed_queue() {
        tasks_racing_the_last_handle(true, false);
    }

    /// Without the gone step's orderings, likewise: when the last handle's
    /// thread frees the queue, nothing orders the tasks' reads before it.
    #[test]
    #[should_panic(expected = "Causality violation")]
    fn loom_without_the_gone_steps_orderings_a_task_reads_a_freed_queue() {
        tasks_racing_the_last_handle(false, true);
    }
}
