//! The pool's **hint word**: one atomic that lets a producer decide without
//! the pool lock whether its kick is needed, and lets a worker start and
//! stop searching without it.
//!
//! # Layout (`u64`)
//!
//! | bits | field | written |
//! |---|---|---|
//! | 0..16 | `searching`: workers that will look at the queues before they park (kicked, starting, or scanning and spinning) | lock-free by workers (start / stop searching), and under the pool lock by kicks (a claimed worker counts from the kick on) |
//! | 16..32 | `parked`: workers on the idle list, whom a kick can wake | under the pool lock only |
//! | 32..48 | `workers`: workers that count against the pool's maximum | under the pool lock only |
//! | 48 | `CAN_START`: a kick may reserve a slot for a new worker (room, and no start in flight) | under the pool lock only |
//! | 49 | `CLOSED`: the pool is shut down | under the pool lock only |
//! | 50 | `FULL`: the workers not parked (running, searching, kicked, starting) fill the pool's limit (its maximum plus the CPU-hog allowances) | under the pool lock only |
//! | 51 | `OVER`: they exceed it (a worker back from `block_in_place`, an allowance revoked): one steps down | under the pool lock only |
//! | 52 | `BACKING_OFF`: the OS refused a start, and no kick starts another before the pool's retry deadline (`Idle`'s, beside this word) | under the pool lock only |
//! | 53 | `UNSERVED`: no counted worker serves the queues (none counted, or each in a poll granted a CPU-hog allowance) | under the pool lock only |
//!
//! Every change is a single read-modify-write of the whole word (fields
//! never borrow from each other: each stays in its range by the protocol's
//! own counts), so a reader sees a state the protocol went through. What
//! the readers may conclude from it, and why, is in [`super::idle`].

use crate::loom::sync::atomic::{AtomicU64, Ordering};

const FIELD_BITS: u32 = 16;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
const SEARCHING_SHIFT: u32 = 0;
const PARKED_SHIFT: u32 = 16;
const WORKERS_SHIFT: u32 = 32;
const CAN_START: u64 = 1 << 48;
const CLOSED: u64 = 1 << 49;
const FULL: u64 = 1 << 50;
const OVER: u64 = 1 << 51;
const BACKING_OFF: u64 = 1 << 52;
const UNSERVED: u64 = 1 << 53;

/// Half of at least this many workers may search at once: two, however
/// few workers there are ([`HintWord::try_start_searching`]).
pub(crate) const SEARCH_FLOOR: usize = 4;

/// The most workers (slots) a pool may have: a field's range.
pub(crate) const MAX_SLOTS: usize = FIELD_MASK as usize;

/// A copy of the hint word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hint(u64);

impl Hint {
    pub(crate) fn searching(self) -> usize {
        ((self.0 >> SEARCHING_SHIFT) & FIELD_MASK) as usize
    }

    pub(crate) fn parked(self) -> usize {
        ((self.0 >> PARKED_SHIFT) & FIELD_MASK) as usize
    }

    pub(crate) fn workers(self) -> usize {
        ((self.0 >> WORKERS_SHIFT) & FIELD_MASK) as usize
    }

    pub(crate) fn can_start(self) -> bool {
        self.0 & CAN_START != 0
    }

    pub(crate) fn closed(self) -> bool {
        self.0 & CLOSED != 0
    }

    pub(crate) fn full(self) -> bool {
        self.0 & FULL != 0
    }

    pub(crate) fn over(self) -> bool {
        self.0 & OVER != 0
    }

    pub(crate) fn backing_off(self) -> bool {
        self.0 & BACKING_OFF != 0
    }

    pub(crate) fn unserved(self) -> bool {
        self.0 & UNSERVED != 0
    }
}

impl std::fmt::Debug for Hint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hint")
            .field("searching", &self.searching())
            .field("parked", &self.parked())
            .field("workers", &self.workers())
            .field("can_start", &self.can_start())
            .field("closed", &self.closed())
            .field("full", &self.full())
            .field("over", &self.over())
            .field("backing_off", &self.backing_off())
            .field("unserved", &self.unserved())
            .finish()
    }
}

/// The atomic itself.
pub(crate) struct HintWord(AtomicU64);

/// A change of the fields written under the pool lock, applied in one
/// read-modify-write together with any change of `searching`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Change {
    pub(crate) searching: isize,
    pub(crate) parked: isize,
    pub(crate) workers: isize,
    pub(crate) can_start: Option<bool>,
    pub(crate) closed: bool,
    /// The fields `Idle::publish` derives from the state under the lock
    /// (`FULL`, `OVER`, `BACKING_OFF`, `UNSERVED`), when set.
    pub(crate) derived: Option<Derived>,
}

/// The hint's fields derived from the pool's state under its lock.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Derived {
    pub(crate) full: bool,
    pub(crate) over: bool,
    pub(crate) backing_off: bool,
    pub(crate) unserved: bool,
}

impl HintWord {
    /// No worker (so none serves), room for one.
    pub(crate) fn new() -> HintWord {
        HintWord(AtomicU64::new(CAN_START | UNSERVED))
    }

    /// Reads the word. `Relaxed`: every reader that acts on it does so after
    /// a `SeqCst` fence (see `super::idle`), and under the lock the fields
    /// it owns cannot change.
    pub(crate) fn load(&self) -> Hint {
        Hint(self.0.load(Ordering::Relaxed))
    }

    /// Applies `change` in one read-modify-write and returns the previous
    /// value. `SeqCst`: it is one side of the Dekker pairs of `super::idle`
    /// (a worker's "I am searching / parked" against a producer's push),
    /// and the caller follows it with a `SeqCst` fence before re-checking
    /// the queues.
    pub(crate) fn apply(&self, change: Change) -> Hint {
        let prev = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |w| {
                Some(Self::changed(w, change))
            })
            .unwrap_or_else(|w| w);
        Hint(prev)
    }

    /// One more searcher, if fewer than half the workers (at least two)
    /// search already (of 5 workers, 3 may: half rounded up): tokio's limit, so that a burst of idle workers does
    /// not storm the queues, but never below two, so that in a small pool
    /// a worker that finishes while another searches does not park (and
    /// need a futex wakeup for the next item). Returns whether the caller
    /// now searches. `floor`: the fewest workers the half is taken of
    /// ([`SEARCH_FLOOR`]; a loom model lowers it to see a refusal with two
    /// workers).
    pub(crate) fn try_start_searching(&self, floor: usize) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |w| {
                let h = Hint(w);
                (2 * h.searching() < h.workers().max(floor)).then(|| w + (1 << SEARCHING_SHIFT))
            })
            .is_ok()
    }

    /// One searcher fewer; returns whether it was the last one.
    pub(crate) fn stop_searching(&self) -> bool {
        let prev = Hint(self.0.fetch_sub(1 << SEARCHING_SHIFT, Ordering::SeqCst));
        debug_assert!(prev.searching() > 0, "stopped searching twice: {prev:?}");
        prev.searching() == 1
    }

    fn changed(w: u64, c: Change) -> u64 {
        let field = |w: u64, shift: u32, delta: isize| -> u64 {
            let old = (w >> shift) & FIELD_MASK;
            let new = old as i64 + delta as i64;
            debug_assert!(
                (0..=FIELD_MASK as i64).contains(&new),
                "hint field at bit {shift} out of range: {old} {delta:+}"
            );
            (w & !(FIELD_MASK << shift)) | (((new as u64) & FIELD_MASK) << shift)
        };
        let mut w = field(w, SEARCHING_SHIFT, c.searching);
        w = field(w, PARKED_SHIFT, c.parked);
        w = field(w, WORKERS_SHIFT, c.workers);
        match c.can_start {
            Some(true) => w |= CAN_START,
            Some(false) => w &= !CAN_START,
            None => {}
        }
        if c.closed {
            w |= CLOSED;
        }
        if let Some(d) = c.derived {
            let bit = |on: bool, bit: u64| if on { bit } else { 0 };
            w &= !(FULL | OVER | BACKING_OFF | UNSERVED);
            w |= bit(d.full, FULL)
                | bit(d.over, OVER)
                | bit(d.backing_off, BACKING_OFF)
                | bit(d.unserved, UNSERVED);
        }
        w
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fields_change_independently() {
        let h = HintWord::new();
        assert!(h.load().can_start());
        h.apply(Change {
            workers: 3,
            parked: 2,
            can_start: Some(false),
            ..Change::default()
        });
        assert!(h.try_start_searching(SEARCH_FLOOR), "0 of 3 search");
        assert!(h.try_start_searching(SEARCH_FLOOR), "1 of 3 search");
        assert!(
            !h.try_start_searching(SEARCH_FLOOR),
            "2 of 3 search: the limit"
        );
        let now = h.load();
        assert_eq!((now.searching(), now.parked(), now.workers()), (2, 2, 3));
        assert!(!now.can_start() && !now.closed());
        assert!(!h.stop_searching());
        assert!(h.stop_searching(), "the last searcher");
        let prev = h.apply(Change {
            searching: 1,
            parked: -1,
            closed: true,
            ..Change::default()
        });
        assert_eq!(prev.parked(), 2);
        let now = h.load();
        assert_eq!((now.searching(), now.parked(), now.workers()), (1, 1, 3));
        assert!(now.closed());
        assert!(!now.full() && !now.over());
        h.apply(Change {
            derived: Some(Derived {
                full: true,
                over: true,
                backing_off: true,
                unserved: true,
            }),
            ..Change::default()
        });
        let now = h.load();
        assert!(now.full() && now.over() && now.closed());
        assert!(now.backing_off() && now.unserved());
        // A change without `derived` keeps the bits; one with it sets all.
        h.apply(Change {
            parked: 1,
            ..Change::default()
        });
        assert!(h.load().over() && h.load().backing_off());
        h.apply(Change {
            derived: Some(Derived {
                full: true,
                backing_off: true,
                ..Derived::default()
            }),
            ..Change::default()
        });
        let now = h.load();
        assert!(now.full() && !now.over());
        assert!(now.backing_off() && !now.unserved());
        assert_eq!((now.searching(), now.parked(), now.workers()), (1, 2, 3));
    }

    #[test]
    fn a_small_pool_lets_two_search_and_a_wide_one_half() {
        let h = HintWord::new();
        h.apply(Change {
            workers: 1,
            ..Change::default()
        });
        assert!(h.try_start_searching(SEARCH_FLOOR));
        assert!(
            h.try_start_searching(SEARCH_FLOOR),
            "two may search, however small"
        );
        assert!(!h.try_start_searching(SEARCH_FLOOR));
        h.stop_searching();
        h.stop_searching();
        h.apply(Change {
            workers: 15,
            ..Change::default()
        });
        for i in 0..8 {
            assert!(
                h.try_start_searching(SEARCH_FLOOR),
                "searcher {i} of 16 workers"
            );
        }
        assert!(
            !h.try_start_searching(SEARCH_FLOOR),
            "8 of 16 search: the limit"
        );
    }
}
