//! A workqueue's items in flight per flush color, and the handshake that
//! wakes a waiting flush (the protocol is in the parent module's docs,
//! "Flush colors"; this is its code, on the facade's atomics so that loom
//! can check it).
//!
//! The counts are striped by the spawning thread: an item counts itself in
//! its spawner's stripe and uncounts itself there at its end, so a stripe
//! never reads below the items of that stripe still in flight, and a sum
//! of the stripes read one by one is zero only if every item counted
//! before the reads began has finished (an item that raced the reads adds
//! zero or one, never minus one). A queue's items spawned and run on one
//! CPU write only that stripe's line.
//!
//! The handshake is a store-buffering pair: the finisher decrements its
//! stripe, then reads the flag; the flusher sets the flag, then reads the
//! stripes. With a
//! `SeqCst` fence between each side's write and read, at least one of them
//! sees the other's write: the finisher sees the flag (and wakes the
//! flusher), or the flusher sees the count at zero (and does not wait).
//! Without the fences both may read the old values, and the flush waits
//! for a wake that never comes (`loom_without_the_fences_a_flush_is_never_woken`).

use crate::loom::Fences;
use crate::loom::sync::atomic::{AtomicBool, AtomicIsize};
use crate::task::StripeLines;

/// Items in flight per color (0 or 1) and stripe, and which colors a flush
/// waits on.
#[derive(Debug)]
pub(crate) struct Flight {
    /// Per stripe: `flight`, the items of each color spawned there and not
    /// finished (on the queue's stripe lines).
    counts: StripeLines,
    /// Read by every finish, written by flushes only.
    flushing: [AtomicBool; 2],
    /// `SeqCst` and fences (turned off by a negative model).
    fences: Fences,
}

impl Flight {
    /// Counts in `stripes` stripes (at least one) of their own.
    #[cfg(all(test, loom))]
    pub(crate) fn new(stripes: usize) -> Flight {
        Flight::on(crate::task::stripe_lines(stripes))
    }

    /// Counts on `lines`.
    pub(crate) fn on(lines: StripeLines) -> Flight {
        Flight {
            counts: lines,
            flushing: [AtomicBool::new(false), AtomicBool::new(false)],
            fences: Fences::default(),
        }
    }

    /// `stripe`'s counts (`stripe` is below the stripe count).
    fn stripe(&self, stripe: usize) -> &[AtomicIsize; 2] {
        &self.counts[stripe].flight
    }

    /// A spawn on `stripe` counts its item in `color`.
    pub(crate) fn spawned(&self, stripe: usize, color: usize) {
        // SeqCst: a flusher's read is ordered after it.
        self.stripe(stripe)[color].fetch_add(1, self.fences.order());
    }

    /// An item counted in `color` on `stripe` is gone. Returns whether a
    /// flush of that color may be waiting for it (the caller then wakes the
    /// flusher).
    pub(crate) fn finished(&self, stripe: usize, color: usize) -> bool {
        self.stripe(stripe)[color].fetch_sub(1, self.fences.order());
        // The finisher's half: decremented before the flag is read.
        self.fences.fence();
        self.flushing[color].load(self.fences.order()) && self.in_flight(color) <= 0
    }

    /// A flush starts waiting for `color` to empty.
    pub(crate) fn start_flush(&self, color: usize) {
        self.flushing[color].store(true, self.fences.order());
        // The flusher's half: flagged before the count is read.
        self.fences.fence();
    }

    /// The flush of `color` is over (done or dropped).
    pub(crate) fn end_flush(&self, color: usize) {
        self.flushing[color].store(false, self.fences.order());
    }

    /// Items of `color` in flight now: the stripes summed one by one (see
    /// the module docs for why a zero can be trusted).
    pub(crate) fn in_flight(&self, color: usize) -> isize {
        self.counts
            .iter()
            .map(|c| c.flight[color].load(self.fences.order()))
            .sum()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::sync::Mutex;
    use loom::sync::Arc;

    /// One item of color 0 in flight, counted on stripe 1 of 2; a flush of
    /// color 0 races its finish.
    /// The flush, as `Queue::flush` does it: flag, read; if not empty,
    /// store its waker (here a flag) under the lock and read again; if
    /// still not empty, wait. The finisher: `finished`, and if it says so,
    /// take the waker under the lock and wake. A flush that waits must be
    /// woken.
    fn flush_racing_finish(unfenced: bool) {
        loom::model(move || {
            let flight = Arc::new(Flight {
                fences: Fences { off: unfenced },
                ..Flight::new(2)
            });
            let waiter = Arc::new(Mutex::new(false));
            flight.spawned(1, 0);
            let (f, w) = (flight.clone(), waiter.clone());
            let finisher = loom::thread::spawn(move || {
                if f.finished(1, 0) {
                    // Took the waker: `true` means the flusher was woken.
                    return std::mem::take(&mut *w.lock().unwrap());
                }
                false
            });
            flight.start_flush(0);
            let waits = flight.in_flight(0) > 0 && {
                *waiter.lock().unwrap() = true;
                flight.in_flight(0) > 0
            };
            let woken = finisher.join().unwrap();
            flight.end_flush(0);
            assert!(
                !waits || woken,
                "a flush is never woken: it waits on a count the finisher emptied"
            );
        });
    }

    #[test]
    fn loom_a_flush_racing_the_last_finish_is_woken() {
        flush_racing_finish(false);
    }

    /// Without the fences (and with relaxed operations), the model must
    /// find the flush that is never woken: the test above can fail.
    #[test]
    #[should_panic(expected = "never woken")]
    fn loom_without_the_fences_a_flush_is_never_woken() {
        flush_racing_finish(true);
    }
}
