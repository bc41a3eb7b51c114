//! A task's reference to its workqueue, counted on the queue's hot line.
//!
//! A task of a named workqueue holds its queue until the task is freed: it
//! reports its polls, its finish and its repatriations there. With an `Arc`
//! clone per task, every item would write the `Arc`'s count at its spawn
//! (the spawner's clone) and at its free (as a rule on a worker's CPU): a
//! cache line that moves between CPUs with every item, besides the queue's
//! hot line (the active and in-flight counts) that the item writes at its
//! spawn and its finish anyway. So tasks count their references in one
//! word on that hot line, [`TaskRefs`], and hold the queue's allocation
//! together through one strong count of its `Arc`, **the tasks' share**,
//! taken when the queue is created.
//!
//! # Protocol
//! The word is `2 * tasks | GONE`: the tasks that hold a reference, and
//! whether every handle of the queue (the `Workqueue`s a user holds) is
//! gone.
//! - **Take** (a spawn, by a thread that holds a handle): add 2
//!   (`Relaxed`, as `Arc::clone`: the spawner's handle keeps the queue
//!   alive, and the task is published to other threads by its queueing).
//! - **Put** (a task freed): subtract 2 (`Release`). The put that leaves
//!   the word at `GONE` (no task, no handle) fences (`Acquire`) and drops
//!   the tasks' share, maybe the queue with it; any other put is the
//!   task's last access to the queue.
//! - **Gone** (the last handle dropped, while it still holds its own strong
//!   count): set `GONE` (`AcqRel`); if no task held a reference, drop the
//!   tasks' share.
//!
//! Invariants: no take follows `GONE` (only a handle's holder spawns), so
//! the word reaches `GONE` exactly once, by the gone step or by the last
//! put, and that step alone drops the share: the share is dropped exactly
//! once, after every task's put. Every access a task makes to its queue
//! comes before its put (`Release`); the step that drops the share
//! acquires every put before it (`Acquire`: the puts are read-modify-writes
//! of one word, a release sequence), and the `Arc`'s own count orders that
//! drop before the queue is freed. The models
//! `loom_a_queue_outlives_its_tasks_and_is_freed_once` (and its negative
//! control without the orderings) check it.
//!
//! One write per item each way on a line the item writes anyway: a spawn
//! on another CPU than the last put takes one line transfer for the active
//! count, the in-flight count and the reference together.

use std::ptr::NonNull;
use std::sync::Arc;

use super::QueueLink;
use crate::loom::Fences;
use crate::loom::sync::atomic::{AtomicUsize, Ordering};

/// The word's flag: every handle of the queue is gone.
const GONE: usize = 1;
/// One task's reference.
const TASK: usize = 2;

/// The references tasks hold to their queue (module docs).
#[derive(Debug, Default)]
pub(crate) struct TaskRefs {
    word: AtomicUsize,
    /// The orderings (turned off by a negative model).
    fences: Fences,
}

impl TaskRefs {
    /// A spawn takes a reference for its task (the spawner holds a handle).
    pub(crate) fn take(&self) {
        let before = self.word.fetch_add(TASK, Ordering::Relaxed);
        debug_assert_eq!(
            before & GONE,
            0,
            "a task is spawned on a queue with no handle"
        );
    }

    /// A task drops its reference. Returns whether the caller must drop
    /// the tasks' share (no task and no handle is left); if not, the caller
    /// must not touch the queue again.
    #[must_use]
    pub(crate) fn put(&self) -> bool {
        let before = self
            .word
            .fetch_sub(TASK, self.fences.or_relaxed(Ordering::Release));
        if before != TASK | GONE {
            return false;
        }
        self.fences.fence_of(Ordering::Acquire);
        true
    }

    /// The last handle of the queue is being dropped. Returns whether the
    /// caller must drop the tasks' share (no task holds a reference).
    #[must_use]
    pub(crate) fn gone(&self) -> bool {
        let before = self
            .word
            .fetch_or(GONE, self.fences.or_relaxed(Ordering::AcqRel));
        debug_assert_eq!(before & GONE, 0, "a queue's handles go once");
        before == 0
    }
}

/// A task's counted reference to its workqueue (module docs): derefs to the
/// queue, and puts the reference when dropped.
pub(crate) struct QueueRef {
    /// The queue, with the provenance of its `Arc`; the tasks' share is a
    /// strong count of that `Arc` (as `Arc<dyn QueueLink>`).
    link: NonNull<dyn QueueLink>,
}

// SAFETY: a `QueueRef` is a shared reference to a `QueueLink`, which is
// `Send + Sync`; its drop only does what any thread may do to the queue.
unsafe impl Send for QueueRef {}
// SAFETY: as above.
unsafe impl Sync for QueueRef {}

impl QueueRef {
    /// Takes a reference to `queue` for a new task.
    ///
    /// # Safety
    /// The caller holds a handle of the queue (no `gone` step has run), and
    /// the queue's `Arc` holds the tasks' share: one strong count that the
    /// step that returns `true` (a `put` here, or `gone`) drops.
    pub(crate) unsafe fn take<Q: QueueLink>(queue: &Arc<Q>) -> QueueRef {
        queue.task_refs().take();
        let link: *const dyn QueueLink = Arc::<Q>::as_ptr(queue);
        QueueRef {
            // An `Arc`'s pointer is never null.
            link: NonNull::new(link.cast_mut()).expect("an Arc's pointer"),
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

impl Drop for QueueRef {
    fn drop(&mut self) {
        // The word outlives this borrow only if the put does not return
        // `true`; `put` touches nothing after its decrement (as
        // `Arc::drop`).
        if self.task_refs().put() {
            // SAFETY: the put left no task and no handle: this thread owns
            // the tasks' share, a strong count of the queue's `Arc<Q>`, and
            // `link` is that `Arc`'s pointer unsized to `dyn QueueLink`
            // (same data pointer, `Q`'s layout).
            drop(unsafe { Arc::from_raw(self.link.as_ptr().cast_const()) });
        }
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

    /// A queue with one handle; two tasks are spawned through it and freed
    /// on threads of their own while the handle is dropped. The queue is
    /// freed exactly once, after both tasks' last reads.
    fn tasks_racing_the_last_handle(unfenced: bool) {
        loom::model(move || {
            let drops = Arc::new(AtomicUsize::new(0));
            let handle = Arc::new(Queue {
                refs: TaskRefs {
                    word: AtomicUsize::new(0),
                    fences: Fences { off: unfenced },
                },
                state: UnsafeCell::new(0),
                drops: drops.clone(),
            });
            let share = Arc::into_raw(handle.clone());
            let tasks: Vec<_> = (0..2)
                .map(|_| {
                    handle.refs.take();
                    let task = Share(share);
                    loom::thread::spawn(move || {
                        // SAFETY: the task holds a reference.
                        let queue = unsafe { &*task.0 };
                        // SAFETY: the model's cell; loom checks the access.
                        queue.state.with(|s| assert_eq!(unsafe { *s }, 0));
                        if queue.refs.put() {
                            task.drop_share();
                        }
                    })
                })
                .collect();
            if handle.refs.gone() {
                Share(share).drop_share();
            }
            drop(handle);
            for t in tasks {
                t.join().unwrap();
            }
            assert_eq!(
                drops.load(Ordering::Relaxed),
                1,
                "the queue is freed exactly once"
            );
        });
    }

    #[test]
    fn loom_a_queue_outlives_its_tasks_and_is_freed_once() {
        tasks_racing_the_last_handle(false);
    }

    /// Without the orderings, the model must find a task's read that is
    /// not ordered before the queue's free: the test above can fail.
    #[test]
    #[should_panic(expected = "Causality violation")]
    fn loom_without_the_orderings_a_task_reads_a_freed_queue() {
        tasks_racing_the_last_handle(true);
    }
}
