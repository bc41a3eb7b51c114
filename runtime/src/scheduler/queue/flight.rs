//! A workqueue's items in flight per flush color, the handshake that wakes
//! a waiting flush, and the queue's lifetime: an item's count in flight is
//! also its task's reference to the queue (the protocol of "Flush colors"
//! and "Lifetime" in the parent module's docs; this is its code, on the
//! facade's atomics so that loom can check it).
//!
//! # One word per stripe
//! Each stripe's word (on the queue's stripe lines, `task::StripeLine`)
//! holds, from the low bits up:
//! - `DEAD`: the stripe was collected by the gone step (below);
//! - `FLUSHING[c]`: a flush waits for color `c` to empty (set on every
//!   stripe by the flusher);
//! - `pending`: finishers that saw their color's flag and still touch the
//!   queue (8 bits);
//! - `count[0]`, `count[1]`: items spawned on the stripe and not finished,
//!   per color (26 bits each; a spawn moves to another stripe before one
//!   fills up, and is refused if all are full).
//!
//! The counts are striped by the spawning thread: an item counts itself on
//! its spawner's stripe (or the next with room, `Flight::stripe_for`) and
//! uncounts itself there at its end, so a stripe
//! never reads below the items of that stripe still in flight, and a sum of
//! the stripes read one by one is zero only if every item counted before
//! the reads began has finished (an item that raced the reads adds zero or
//! one, never minus one).
//!
//! # Steps
//! - **Spawn** (by a thread holding a handle): add one to `count[c]`
//!   (`SeqCst`): one read-modify-write, which is both the item's count in
//!   flight and its task's reference to the queue.
//! - **Finish** (the task's future is gone): one compare-and-swap on the
//!   stripe's word that takes one from `count[c]` and, if `FLUSHING[c]` is
//!   set in the word it replaces and the swap takes the stripe's
//!   `count[c]` to zero, adds one to `pending`. Otherwise that swap was the
//!   task's last access to the queue (the **fast path**: one
//!   read-modify-write, no fence). Flag seen and stripe emptied (the **slow
//!   path**): the finisher, still counted as pending, fences, sums the
//!   stripes of `c`, takes the flush on if the sum is zero (under the
//!   queue's flush lock: `Queue::drive`, which reads the sum again and
//!   wakes the flushes it finishes), and then takes
//!   one from `pending`, its last access. A finish that leaves items of
//!   `c` on its stripe cannot make the sum zero: one of those items'
//!   finishes will empty the stripe, and sum then (so a flush over a
//!   queue of 64 workers' items costs each finisher one swap, not a fence
//!   and 16 loads; before 2026-12-06 every finisher that saw the flag
//!   summed).
//! - **Flush of `c`**: under the queue's flush lock, set `FLUSHING[c]` on
//!   every stripe, fence, read the sum, and if it is not zero keep the
//!   flush's progress (its phase) there, in that one critical section;
//!   then wait. A finisher that takes the flush on reads the sum again
//!   under the same lock. **End of a flush**: clear the flags.
//! - **Gone** (the last handle dropped, while it still holds its own strong
//!   count): set `DEAD` on every stripe (`AcqRel`), collecting its counts
//!   and `pending`, and add the sum to `left`; if that leaves `left` at
//!   zero, no task holds the queue: drop the tasks' share.
//! - A finish whose last read-modify-write finds `DEAD` was collected into
//!   `left`: it takes one from `left` (`Release`); the one that leaves it
//!   at zero fences (`Acquire`) and drops the tasks' share.
//!
//! # Why a flush is woken
//! A finish whose swap came before the flusher's flag on that stripe (in
//! the word's modification order) is seen by the flusher's reads, which
//! come after its own read-modify-write of the same word. Of the finishes
//! whose swap came after, those that empty their stripe take the slow
//! path: the decrement, a `SeqCst` fence, then the sum (the others leave
//! their stripe above zero, and the stripe's last finish is one of
//! these). Of two such finishers on two stripes,
//! the one whose fence comes second sees the other's decrement
//! (store-buffering, ordered by the fences), so the last of them reads
//! zero and takes the flush on under the flush lock (reading the sum
//! again); the flusher read the sum and kept its progress in one
//! critical section of that lock, so either the finisher's critical
//! section comes after it and finds the flush waiting on a sum that is
//! zero now, or before it, and the flusher's read sees the finisher's
//! decrement. (Until 2026-12-08 the finisher took the waiting flushes'
//! wakers, and their polls advanced the flush; the models below still
//! take a waker, the same handshake.)
//! Without the fences, both finishers may read the other's stale count
//! and neither wakes (`loom_without_the_fences_a_flush_is_never_woken`);
//! with the waker stored in a critical section of its own after the read
//! (before 2026-12-05 a second read followed it), a finisher's take can
//! fall between the two and the flush waits for ever
//! (`loom_a_waker_stored_apart_from_the_read_is_never_woken`).
//!
//! # Why the queue is freed once, after every task's last access
//! The word's read-modify-writes form one modification order per stripe:
//! a finish before the stripe's collection is in the collected sum; one
//! after it takes one from `left` (which may go below zero until the gone
//! step adds the collected sums, so zero is reached exactly once, after the
//! gone step and every finish). A finisher on the slow path is counted in
//! `pending` until its last access, so a flush that ends (and a last handle
//! dropped) meanwhile cannot free the queue under it. Every access a task
//! makes to its queue comes before its last read-modify-write (`Release`);
//! the step that reaches zero acquires them all (release sequences), and
//! the `Arc`'s own count orders the share's drop before the queue is
//! freed. No borrow of the queue (or of this `Flight`) spans a finish's
//! last read-modify-write: a reference passed to a function is assumed
//! valid until that function returns, and another thread may free the
//! queue right after that change; so it is made through the atomic alone
//! ([`LastStep`], as `Arc::drop` does), after the borrows that read what
//! it needs have ended. `loom_a_queue_outlives_its_tasks_and_is_freed_once` checks it,
//! with a flush that ends while a finisher is on the slow path; its two
//! negative controls (the finishes' orderings off, the gone step's off)
//! show that each side's orderings are needed. A finisher that took the
//! slow path without counting itself in `pending` is caught by the same
//! model (a read of the freed queue), tried by hand when it was written.
//!
//! A spawn and a finish on one CPU write only that stripe's line; the
//! flags and `DEAD` are written there only by a flush and by the gone step.

use crate::loom::Fences;
use crate::loom::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use crate::task::StripeLines;
#[cfg(test)]
use crate::task::in_flight::Finished;
/// A queue's drains: how many are on, and how many items were counted in
/// flight while one was ("drain" in the parent module's docs). A drain's
/// sum of the stripes, read one by one, can miss an item counted on a
/// stripe already read whose spawner finished on a stripe read after; the
/// chained count moving says so.
#[derive(Debug)]
pub(crate) struct Drains {
    /// Drains on (the kernel's `nr_drainers`): outside work is refused
    /// meanwhile.
    pub(crate) on: AtomicUsize,
    /// Items counted in flight while a drain was on (spawned by the
    /// queue's own items): only grows.
    chained: AtomicU64,
    /// A negative model's fault: the check ignores `chained`.
    #[cfg(loom)]
    ignores_chained: bool,
}

impl Drains {
    pub(crate) fn new() -> Drains {
        Drains {
            on: AtomicUsize::new(0),
            chained: AtomicU64::new(0),
            #[cfg(loom)]
            ignores_chained: false,
        }
    }

    /// A spawn, after its count in flight (both `SeqCst`): a drain on since
    /// before the count is seen here, and the item counted as chained.
    pub(crate) fn counted(&self) {
        if self.on.load(Ordering::SeqCst) > 0 {
            self.chained.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A drain's check after a flush: nothing in flight in either color,
    /// and no item counted meanwhile by an item that then finished (an
    /// item spawned by X is counted, and `chained` bumped, before X
    /// finishes; a sum that saw X gone comes before the second read, which
    /// then sees the bump).
    pub(crate) fn empty(&self, flight: &Flight) -> bool {
        let before = self.chained.load(Ordering::SeqCst);
        #[cfg(loom)]
        let ignores = self.ignores_chained;
        #[cfg(not(loom))]
        let ignores = false;
        flight.in_flight(0) + flight.in_flight(1) <= 0
            && (ignores || self.chained.load(Ordering::SeqCst) == before)
    }
}

#[cfg(all(test, not(loom)))]
use crate::task::in_flight::{COUNT_MAX, COUNT_SHIFT};
use crate::task::in_flight::{DEAD, FLUSHING, LastStep, STRIPE_FULL, count, one, pending};

/// Items in flight per color (0 or 1) and stripe, the flushes' flags, and
/// the references collected when the last handle went.
#[derive(Debug)]
pub(crate) struct Flight {
    /// Per stripe: `word` (module docs), on the queue's stripe lines.
    lines: StripeLines,
    /// After the gone step: the references left.
    left: AtomicIsize,
    /// The flush handshake's `SeqCst` and fences (turned off by a negative
    /// model).
    fences: Fences,
    /// The finishes' orderings (turned off by another).
    finish_fences: Fences,
    /// The gone step's orderings (turned off by another).
    gone_fences: Fences,
}

impl Flight {
    /// Counts in `stripes` stripes (at least one) of their own.
    #[cfg(test)]
    pub(crate) fn new(stripes: usize) -> Flight {
        Flight::on(crate::task::stripe_lines(stripes))
    }

    /// Counts on `lines`.
    pub(crate) fn on(lines: StripeLines) -> Flight {
        Flight {
            lines,
            left: AtomicIsize::new(0),
            fences: Fences::default(),
            finish_fences: Fences::default(),
            gone_fences: Fences::default(),
        }
    }

    /// `stripe`'s word (`stripe` is below the stripe count).
    fn word(&self, stripe: usize) -> &AtomicU64 {
        &self.lines[stripe].word
    }

    /// The stripe a spawn preferring `stripe` counts its item of `color`
    /// on: `stripe` unless it is full, else the next one that is not;
    /// `None` if every stripe is full.
    #[inline]
    pub(crate) fn stripe_for(&self, stripe: usize, color: usize) -> Option<usize> {
        if count(self.word(stripe).load(Ordering::Relaxed), color) < STRIPE_FULL {
            return Some(stripe);
        }
        self.other_stripe(stripe, color)
    }

    /// [`Flight::stripe_for`] when `stripe` is full.
    #[cold]
    fn other_stripe(&self, stripe: usize, color: usize) -> Option<usize> {
        let n = self.lines.len();
        (1..n)
            .map(|i| (stripe + i) % n)
            .find(|&s| count(self.word(s).load(Ordering::Relaxed), color) < STRIPE_FULL)
    }

    /// A spawn (by a thread holding a handle) counts its item in `color` on
    /// `stripe` (from [`Flight::stripe_for`]): its count in flight and its
    /// task's reference to the queue.
    pub(crate) fn spawned(&self, stripe: usize, color: usize) {
        // SeqCst: a flusher's read is ordered after it.
        let before = self.word(stripe).fetch_add(one(color), self.fences.order());
        debug_assert_eq!(
            before & DEAD,
            0,
            "an item is spawned on a queue with no handle"
        );
    }

    /// An item counted in `color` on `stripe` is gone. `wake` is called
    /// (with the task still counted) if a flush waits and this may have
    /// been the color's last item; it takes the flush on. The whole finish
    /// through one borrow of the counts: for callers that hold the queue
    /// through it (tests, models). A task's finish, whose count may be
    /// the queue's last reference, goes by [`Flight::last_step`].
    #[cfg(test)]
    pub(crate) fn finished(&self, stripe: usize, color: usize, wake: impl FnOnce()) -> Finished {
        let step = self.last_step(stripe, color);
        // SAFETY: `self` outlives this call (the caller's borrow).
        unsafe { step.take(|| self.flagged(color, wake)) }
    }

    /// What the finish of an item counted in `color` on `stripe` changes
    /// at its end ([`LastStep`]), read while the item is counted.
    pub(crate) fn last_step(&self, stripe: usize, color: usize) -> LastStep {
        LastStep::new(
            self.word(stripe),
            &self.left,
            color,
            // SeqCst (the flush handshake), which includes the `Release`
            // of the task's accesses when this is its last (the lifetime).
            self.finish_fences
                .or_relaxed(self.fences.or_relaxed(Ordering::SeqCst)),
            self.finish_fences.or_relaxed(Ordering::Release),
            self.finish_fences,
        )
    }

    /// The slow path's middle (a finisher that saw its color's flag, still
    /// counted as pending): fenced after its decrement, it sums the
    /// stripes, and calls `wake` if the color may be empty.
    pub(crate) fn flagged(&self, color: usize, wake: impl FnOnce()) {
        self.fences.fence();
        if self.in_flight(color) <= 0 {
            wake();
        }
    }

    /// A flush starts waiting for `color` to empty.
    pub(crate) fn start_flush(&self, color: usize) {
        for line in &self.lines[..] {
            line.word.fetch_or(FLUSHING[color], self.fences.order());
        }
        // The flusher's half: flagged before the counts are read.
        self.fences.fence();
    }

    /// The flush of `color` is over (done or dropped).
    pub(crate) fn end_flush(&self, color: usize) {
        for line in &self.lines[..] {
            line.word.fetch_and(!FLUSHING[color], self.fences.order());
        }
    }

    /// Items of `color` in flight now: the stripes summed one by one (see
    /// the module docs for why a zero can be trusted).
    pub(crate) fn in_flight(&self, color: usize) -> isize {
        self.lines
            .iter()
            .map(|l| count(l.word.load(self.fences.order()), color) as isize)
            .sum()
    }

    /// The last handle of the queue is being dropped. Returns whether the
    /// caller must drop the tasks' share (no task holds a reference).
    #[must_use]
    pub(crate) fn gone(&self) -> bool {
        let acq_rel = self.gone_fences.or_relaxed(Ordering::AcqRel);
        let counted: u64 = self
            .lines
            .iter()
            .map(|l| {
                let before = l.word.fetch_or(DEAD, acq_rel);
                debug_assert_eq!(before & DEAD, 0, "a queue's handles go once");
                count(before, 0) + count(before, 1) + pending(before)
            })
            .sum();
        let counted = counted as isize;
        self.left.fetch_add(counted, acq_rel) + counted == 0
    }

    /// Sets `stripe`'s count of `color` (tests of the full-stripe check).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn set_count(&self, stripe: usize, color: usize, n: u64) {
        let w = self.word(stripe);
        let old = w.load(Ordering::Relaxed);
        let cleared = old & !(COUNT_MAX << COUNT_SHIFT[color]);
        w.store(cleared | (n << COUNT_SHIFT[color]), Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Under a flush, a finish that leaves items of its color on its
    /// stripe does not sum the stripes (it cannot make the sum zero);
    /// the one that empties it does. (Every finish that saw the flag
    /// summed: 4 here.)
    #[test]
    fn under_a_flush_only_the_finish_that_empties_its_stripe_sums() {
        let f = Flight::new(2);
        for stripe in [0, 0, 0, 1] {
            f.spawned(stripe, 0);
        }
        f.start_flush(0);
        let mut sums = 0;
        for stripe in [0, 0, 1, 0] {
            // SAFETY: `f` lives through the call, the item counted.
            let _ = unsafe { f.last_step(stripe, 0).take(|| sums += 1) };
        }
        assert_eq!(sums, 2, "stripe 1's one item, stripe 0's last");
        assert_eq!(f.in_flight(0), 0);
        f.end_flush(0);
    }

    #[test]
    fn a_full_stripe_sends_spawns_to_the_next_and_all_full_refuses() {
        let f = Flight::new(4);
        assert_eq!(f.stripe_for(2, 0), Some(2));
        f.set_count(2, 0, STRIPE_FULL);
        assert_eq!(f.stripe_for(2, 0), Some(3));
        // The other color is counted apart.
        assert_eq!(f.stripe_for(2, 1), Some(2));
        f.set_count(3, 0, STRIPE_FULL);
        assert_eq!(f.stripe_for(2, 0), Some(0));
        f.set_count(0, 0, STRIPE_FULL);
        f.set_count(1, 0, STRIPE_FULL);
        assert_eq!(f.stripe_for(2, 0), None);
        f.set_count(1, 0, STRIPE_FULL - 1);
        assert_eq!(f.stripe_for(2, 0), Some(1));
    }

    #[test]
    fn counts_do_not_spill_into_each_other_or_the_flags() {
        let f = Flight::new(1);
        f.set_count(0, 0, COUNT_MAX - 1);
        f.set_count(0, 1, COUNT_MAX - 1);
        f.spawned(0, 0);
        f.spawned(0, 1);
        assert_eq!(f.in_flight(0), COUNT_MAX as isize);
        assert_eq!(f.in_flight(1), COUNT_MAX as isize);
        f.start_flush(1);
        let mut woken = false;
        assert_eq!(f.finished(0, 1, || woken = true), Finished::Done);
        assert!(!woken, "items of the color are still in flight");
        assert_eq!(f.in_flight(1), COUNT_MAX as isize - 1);
        f.end_flush(1);
        f.set_count(0, 0, 0);
        f.set_count(0, 1, 1);
        f.start_flush(1);
        assert_eq!(f.finished(0, 1, || woken = true), Finished::Done);
        assert!(woken, "the color's last item wakes the flush");
        f.end_flush(1);
        let w = f.word(0).load(Ordering::Relaxed);
        assert_eq!(w, 0, "no flag, no pending finisher, no count left");
        assert!(
            f.gone(),
            "no task left: the share goes with the last handle"
        );
    }

    #[test]
    fn the_last_finish_after_the_last_handle_drops_the_share() {
        let f = Flight::new(2);
        f.spawned(0, 0);
        f.spawned(1, 1);
        assert!(!f.gone());
        assert_eq!(f.finished(1, 1, || ()), Finished::Done);
        assert_eq!(f.finished(0, 0, || ()), Finished::DropShare);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::sync::Mutex;
    use loom::sync::Arc;

    /// How the model's flusher stores its waker.
    #[derive(Clone, Copy, PartialEq)]
    enum Store {
        /// As `Queue::flush`: flag, read and store the waker in one
        /// critical section of the flush lock.
        WithTheRead,
        /// The fault: the waker stored in a critical section of its own
        /// after the read, which is not made again.
        Apart,
    }

    /// Two items of color 0 in flight, on stripes 0 and 1 of 2, finished on
    /// two threads while a flush of color 0 runs, as `Queue::flush` does
    /// it (`store`): under the flush lock (here the waiter's), flag, read,
    /// and if not empty store its waker (here a flag); then wait. A
    /// finisher told to wake takes the waker under the lock. A flush that
    /// waits must be woken. The flusher's steps are a copy of those
    /// `Queue::flush`'s poll takes under the flush lock (`advance`, then
    /// the waker); the finishers run `Flight`'s own.
    /// `stripes`: the stripe of each item (and its finisher).
    fn flush_racing_finishes(unfenced: bool, store: Store, stripes: &'static [usize]) {
        loom::model(move || {
            let flight = Arc::new(Flight {
                fences: Fences { off: unfenced },
                ..Flight::new(2)
            });
            let waiter = Arc::new(Mutex::new(false));
            for &stripe in stripes {
                flight.spawned(stripe, 0);
            }
            let finishers: Vec<_> = stripes
                .iter()
                .map(|&stripe| {
                    let (f, w) = (flight.clone(), waiter.clone());
                    loom::thread::spawn(move || {
                        let mut woken = false;
                        let _ = f.finished(stripe, 0, || {
                            // Took the waker: `true` means the flusher
                            // was woken.
                            woken = std::mem::take(&mut *w.lock().unwrap());
                        });
                        woken
                    })
                })
                .collect();
            let waits = match store {
                Store::WithTheRead => {
                    let mut w = waiter.lock().unwrap();
                    flight.start_flush(0);
                    let waits = flight.in_flight(0) > 0;
                    *w = waits;
                    waits
                }
                Store::Apart => {
                    flight.start_flush(0);
                    let waits = flight.in_flight(0) > 0;
                    if waits {
                        *waiter.lock().unwrap() = true;
                    }
                    waits
                }
            };
            let woken = finishers
                .into_iter()
                .map(|t| t.join().unwrap())
                .fold(false, |a, b| a | b);
            flight.end_flush(0);
            assert!(
                !waits || woken,
                "a flush is never woken: it waits on a count the finishers emptied"
            );
        });
    }

    /// A served flush's progress as `Queue::advance` takes it (a copy,
    /// over the model's color word): `Done` once both colors it waits
    /// on emptied.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Ph {
        Start,
        Other(usize),
        Old(usize),
        Done,
    }

    /// `Queue::advance`'s steps (a copy): flag the other color and wait
    /// for it, flip, flag the old one and wait for it.
    fn advance(flight: &Flight, color: &crate::loom::sync::atomic::AtomicUsize, ph: &mut Ph) {
        loop {
            match *ph {
                Ph::Start => {
                    let old = color.load(Ordering::Acquire);
                    flight.start_flush(old ^ 1);
                    *ph = Ph::Other(old);
                }
                Ph::Other(old) => {
                    if flight.in_flight(old ^ 1) > 0 {
                        return;
                    }
                    flight.end_flush(old ^ 1);
                    color.store(old ^ 1, Ordering::Release);
                    flight.start_flush(old);
                    *ph = Ph::Old(old);
                }
                Ph::Old(old) => {
                    if flight.in_flight(old) > 0 {
                        return;
                    }
                    flight.end_flush(old);
                    *ph = Ph::Done;
                }
                Ph::Done => return,
            }
        }
    }

    /// The flush driven by whoever can move it (`Queue::drive`): its call
    /// advances it once, under the flush lock (here the phase's), and each
    /// finisher told to act advances it under the same lock (`advances`;
    /// off, the fault: a finisher that does nothing), with no poll of the
    /// flush in between. Two items are left in the other color (a
    /// dropped flush's), on both stripes, and one is in the current
    /// color, so a finisher may carry the flush across the flip and flag
    /// the color another finisher is emptying. The flush must end.
    fn flush_driven_by_finishers(unfenced: bool, advances: bool) {
        loom::model(move || {
            let flight = Arc::new(Flight {
                fences: Fences { off: unfenced },
                ..Flight::new(2)
            });
            let color = Arc::new(crate::loom::sync::atomic::AtomicUsize::new(0));
            let phase = Arc::new(Mutex::new(Ph::Start));
            let items = [(0, 1), (1, 1), (1, 0)];
            for (stripe, c) in items {
                flight.spawned(stripe, c);
            }
            let finishers: Vec<_> = items
                .into_iter()
                .map(|(stripe, c)| {
                    let (f, col, ph) = (flight.clone(), color.clone(), phase.clone());
                    loom::thread::spawn(move || {
                        let _ = f.finished(stripe, c, || {
                            if advances {
                                advance(&f, &col, &mut ph.lock().unwrap());
                            }
                        });
                    })
                })
                .collect();
            advance(&flight, &color, &mut phase.lock().unwrap());
            for t in finishers {
                t.join().unwrap();
            }
            let ph = *phase.lock().unwrap();
            assert_eq!(ph, Ph::Done, "a flush driven by its finishers never ends");
        });
    }

    #[test]
    fn loom_a_flush_driven_by_its_finishers_across_the_flip_ends() {
        flush_driven_by_finishers(false, true);
    }

    /// Without the fences the model must find the flush left waiting.
    #[test]
    #[should_panic(expected = "never ends")]
    fn loom_without_the_fences_a_flush_driven_by_finishers_never_ends() {
        flush_driven_by_finishers(true, true);
    }

    /// Finishers that only wake (nobody polls): the flush never ends.
    #[test]
    #[should_panic(expected = "never ends")]
    fn loom_a_flush_no_finisher_advances_never_ends() {
        flush_driven_by_finishers(false, false);
    }

    /// `Queue::drain`'s last check (`Drains::empty`) against a spawn's
    /// count (`Flight::spawned`, then `Drains::counted`): while a drain is
    /// on, item X (stripe 1) spawns Y, counted on stripe 0 (its worker's),
    /// then finishes. The drain may return only if nothing is in flight.
    /// Without the second read of `chained` (`ignores_chained`), the sum
    /// can read stripe 0 before Y and stripe 1 after X: zero with Y in
    /// flight.
    fn drain_racing_a_chained_spawn(check_chained: bool) {
        loom::model(move || {
            let flight = Arc::new(Flight::new(2));
            let drains = Arc::new(Drains {
                ignores_chained: !check_chained,
                ..Drains::new()
            });
            flight.spawned(1, 0);
            drains.on.fetch_add(1, Ordering::SeqCst);
            let (f, d) = (flight.clone(), drains.clone());
            let x = loom::thread::spawn(move || {
                f.spawned(0, 0);
                d.counted();
                let _ = f.finished(1, 0, || {});
            });
            let empty = drains.empty(&flight);
            x.join().unwrap();
            assert!(
                !empty || flight.in_flight(0) + flight.in_flight(1) == 0,
                "a drain returned with a chained item in flight"
            );
        });
    }

    #[test]
    fn loom_a_drain_sees_an_item_chained_across_its_sum() {
        drain_racing_a_chained_spawn(true);
    }

    /// Without the `chained` check the model must find the early return.
    #[test]
    #[should_panic(expected = "chained item in flight")]
    fn loom_without_the_chained_count_a_drain_returns_early() {
        drain_racing_a_chained_spawn(false);
    }

    #[test]
    fn loom_a_flush_racing_the_last_finishes_is_woken() {
        flush_racing_finishes(false, Store::WithTheRead, &[0, 1]);
    }

    /// Two items on one stripe: the finish that leaves the other there
    /// takes the fast path (no sum), the one that empties it sums.
    #[test]
    fn loom_a_flush_is_woken_by_the_finish_that_empties_a_shared_stripe() {
        flush_racing_finishes(false, Store::WithTheRead, &[0, 0, 1]);
    }

    /// Without the fences (and with relaxed operations), the model must
    /// find the flush that is never woken: the test above can fail.
    #[test]
    #[should_panic(expected = "never woken")]
    fn loom_without_the_fences_a_flush_is_never_woken() {
        flush_racing_finishes(true, Store::WithTheRead, &[0, 1]);
    }

    /// The waker stored apart from the read (the read not made again):
    /// the finisher that empties the count may take the waker between
    /// them, and the flush waits for ever. `Queue::flush` reads and
    /// stores in one critical section; the test above can fail.
    #[test]
    #[should_panic(expected = "never woken")]
    fn loom_a_waker_stored_apart_from_the_read_is_never_woken() {
        flush_racing_finishes(false, Store::Apart, &[0, 1]);
    }

    /// A queue in miniature: its counts, state its tasks read (and its
    /// drop writes), and a count of its drops.
    struct Queue {
        flight: Flight,
        state: loom::cell::UnsafeCell<usize>,
        drops: Arc<loom::sync::atomic::AtomicUsize>,
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

    impl Queue {
        fn read_state(&self) {
            // SAFETY: the model's cell; loom checks the access.
            self.state.with(|s| assert_eq!(unsafe { *s }, 0));
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
            if self.queue.flight.gone() {
                Share(self.share).drop_share();
            }
        }
    }

    /// A task's life after its spawn on `stripe` (color 0): it reads its
    /// queue, then finishes; on the slow path it reads the queue again
    /// (the flush lock) while still counted.
    fn run_task(task: Share, stripe: usize) {
        // SAFETY: the task is counted in flight.
        let queue = unsafe { &*task.0 };
        queue.read_state();
        if queue.flight.finished(stripe, 0, || queue.read_state()) == Finished::DropShare {
            task.drop_share();
        }
    }

    /// A queue with two handles over 2 stripes. This thread spawns a task
    /// on stripe 0, finished on a thread of its own, and drops its handle;
    /// meanwhile another thread spawns a task on stripe 1 through the other
    /// handle, runs a flush of color 0 that it drops at once (the flags go
    /// up and down while the first task may be finishing), drops that
    /// handle, and finishes its task. Whichever handle goes last runs the
    /// gone step. The queue is freed exactly once, after every task's last
    /// read, the slow path's included.
    fn tasks_racing_the_last_handle(finish_unordered: bool, gone_unordered: bool) {
        loom::model(move || {
            let drops = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
            let queue = Arc::new(Queue {
                flight: Flight {
                    finish_fences: Fences {
                        off: finish_unordered,
                    },
                    gone_fences: Fences {
                        off: gone_unordered,
                    },
                    ..Flight::new(2)
                },
                state: loom::cell::UnsafeCell::new(0),
                drops: drops.clone(),
            });
            let share = Arc::into_raw(queue.clone());
            let handle = Arc::new(Handle { queue, share });
            handle.queue.flight.spawned(0, 0);
            let task = Share(share);
            let task = loom::thread::spawn(move || run_task(task, 0));
            let other = handle.clone();
            let other = loom::thread::spawn(move || {
                other.queue.flight.spawned(1, 0);
                other.queue.flight.start_flush(0);
                other.queue.flight.end_flush(0);
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

    /// Without the finishes' orderings, the model must find a task's read
    /// that is not ordered before the queue's free.
    #[test]
    #[should_panic(expected = "Causality violation")]
    fn loom_without_the_finishes_orderings_a_task_reads_a_freed_queue() {
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
