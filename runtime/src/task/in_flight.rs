//! The stripe word of a named workqueue (`StripeLine::word`): its items in
//! flight per flush color, which are also its tasks' references to the
//! queue, and a finish's last step, made here, below the queue's layer,
//! because the task's end makes it (`QueueRef::finish`) after every borrow
//! of the queue has ended. The protocol (the flush handshake, the gone
//! step, `left`) and its loom models are `scheduler::queue::flight`'s.

use std::ptr::NonNull;

use crate::loom::Fences;
use crate::loom::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

/// The stripe was collected by the gone step.
pub(crate) const DEAD: u64 = 1;
/// A flush waits for the color to empty.
pub(crate) const FLUSHING: [u64; 2] = [1 << 1, 1 << 2];
/// One finisher on the slow path.
pub(crate) const PENDING: u64 = 1 << 3;
/// Bits of `pending`.
pub(crate) const PENDING_MAX: u64 = 0xff;
/// Where each color's count starts.
pub(crate) const COUNT_SHIFT: [u32; 2] = [11, 37];
/// Bits of each count.
pub(crate) const COUNT_BITS: u32 = 26;
/// The largest count.
pub(crate) const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
/// A spawn moves to another stripe once its own counts this many of a
/// color: the rest of the range is room for spawns that raced the check
/// (one per thread of the stripe).
pub(crate) const STRIPE_FULL: u64 = COUNT_MAX - (1 << 20);

/// The count of `color` in `word`.
pub(crate) fn count(word: u64, color: usize) -> u64 {
    (word >> COUNT_SHIFT[color]) & COUNT_MAX
}

/// `pending` in `word`.
pub(crate) fn pending(word: u64) -> u64 {
    (word / PENDING) & PENDING_MAX
}

/// One item of `color`.
pub(crate) fn one(color: usize) -> u64 {
    1 << COUNT_SHIFT[color]
}

/// Whether a finish of an item of `color` that replaces `old` takes the
/// slow path: a flush waits on the color, and this finish empties the
/// stripe's count of it (module docs, "Steps").
pub(crate) fn slow_path(old: u64, color: usize) -> bool {
    old & FLUSHING[color] != 0 && count(old, color) == 1
}

/// What a finish leaves its caller to do.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Finished {
    /// Nothing more: the task no longer touches the queue.
    Done,
    /// The finish was the last reference of a queue with no handle left:
    /// the caller drops the tasks' share (nothing else touches the queue).
    DropShare,
}

/// A finish's changes to the counts, as pointers to the atomics it changes
/// and the orderings it uses, read while its item is counted. Its
/// read-modify-write of the stripe's word (the fast path's swap, the slow
/// path's last decrement) may be the queue's last reference, after which
/// another thread may free the queue: no borrow of the queue or of its
/// counts may span that change (a reference passed to a function is
/// assumed valid until the function returns; `Arc::drop` too touches
/// only the atomic count then, rust-lang/rust#55005). So the change is
/// made here, through the atomic alone, after the borrows that read
/// these have ended.
#[must_use]
pub(crate) struct LastStep {
    /// The stripe's word (on the queue's stripe lines).
    word: NonNull<AtomicU64>,
    /// `Flight::left`.
    left: NonNull<AtomicIsize>,
    color: usize,
    swap: Ordering,
    release: Ordering,
    finish_fences: Fences,
}

impl LastStep {
    /// The step of a finish of an item of `color` on the stripe whose
    /// word is `word`, of the counts whose `left` is `left`, with the
    /// orderings the counts use (`Flight::last_step`).
    pub(crate) fn new(
        word: &AtomicU64,
        left: &AtomicIsize,
        color: usize,
        swap: Ordering,
        release: Ordering,
        finish_fences: Fences,
    ) -> LastStep {
        LastStep {
            word: NonNull::from(word),
            left: NonNull::from(left),
            color,
            swap,
            release,
            finish_fences,
        }
    }

    /// Takes the item's count off its stripe; on the slow path (its
    /// color's flag seen) calls `flagged` (`Flight::flagged` on the same
    /// counts, through a borrow that ends before the last decrement), then
    /// takes its pending count off. After this returns, the caller must not
    /// touch the queue, except to drop the tasks' share if told so.
    ///
    /// # Safety
    /// The `Flight` this was read from is alive, its item counted (its
    /// count, or the `left` it was collected into, holds the queue) and not
    /// finished by another step.
    pub(crate) unsafe fn take(self, flagged: impl FnOnce()) -> Finished {
        let color = self.color;
        // SAFETY: the item's count holds the queue (the caller's contract)
        // until the read-modify-write that takes it off; the reference is
        // only used up to that one (and, on the slow path, the decrement
        // of `pending` that ends it).
        let word = unsafe { self.word.as_ref() };
        let mut old = word.load(Ordering::Relaxed);
        loop {
            debug_assert!(count(old, color) > 0, "an item finished twice");
            let slow = slow_path(old, color);
            if slow && pending(old) == PENDING_MAX {
                // As many finishers as `pending` holds are on the slow
                // path: wait for one to leave it.
                crate::loom::yielding::yield_now();
                old = word.load(Ordering::Relaxed);
                continue;
            }
            let new = old - one(color) + if slow { PENDING } else { 0 };
            match word.compare_exchange_weak(old, new, self.swap, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => old = now,
            }
        }
        if slow_path(old, color) {
            // The slow path: still counted (as pending).
            flagged();
            let before = word.fetch_sub(PENDING, self.release);
            return self.put_if_collected(before);
        }
        // The fast path: the swap was the task's last access.
        self.put_if_collected(old)
    }

    /// After a finish's last read-modify-write returned `before`.
    fn put_if_collected(&self, before: u64) -> Finished {
        if before & DEAD == 0 {
            return Finished::Done;
        }
        // A reference counted in `left` goes.
        // SAFETY: collected into `left`, the item still holds the queue
        // until this decrement, its last access.
        let left = unsafe { self.left.as_ref() };
        if left.fetch_sub(1, self.release) != 1 {
            return Finished::Done;
        }
        self.finish_fences.fence_of(Ordering::Acquire);
        Finished::DropShare
    }
}
