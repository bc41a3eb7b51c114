//! The driver's timers: one timing wheel per **shard**, as many shards as
//! CPUs (up to [`MAX_SHARDS`]), each behind its own lock.
//!
//! # Why shards
//! A timer is armed and, as a rule, cancelled by the CPU that polls its
//! task: hyper arms a header-read timer for every request and drops it
//! once the head is read, two lock acquisitions a request. With one wheel
//! behind one lock, that lock's line moved between every worker serving
//! requests (the largest wq-only item in the HTTP profile,
//! `docs/benchmarks.md` as of `faa1f9f`, section 9). A worker arms on the shard of its
//! number among its runtime's live workers (the lowest number no live
//! worker of the runtime holds, taken at its start and given back at its
//! exit; `number % shards`, shards a power of two), so a runtime's
//! workers spread evenly over its shards, and a shard's lock stays in its
//! workers' caches unless a timer is cancelled elsewhere; tokio shards its
//! wheel by worker the same way. Any other thread arms on the shard of its
//! number among such threads (`time::sleep`: numbered the same way, at its
//! first arm). (The current CPU's shard, `sched_getcpu`, costs 5 ns an arm
//! more; the CPU a worker stands for put every worker on one or two
//! shards under a CPU quota, whose workers stand for CPUs a power of two
//! apart.)
//!
//! # Parts
//! - A shard: its [`Wheel`] and `shut_down` flag under its mutex
//!   ([`Timers`]), and `earliest`, a **lower bound** on the tick of its
//!   earliest pending timer (`u64::MAX`: none), written under the mutex
//!   and read without it. An arm that lowers it stores the new tick; a
//!   cancel leaves it (stale low: the driver wakes once for nothing and
//!   recomputes); a turn that advances the shard sets it to the wheel's
//!   next expiration (the start of its earliest non-empty slot: at most
//!   the earliest timer's tick, and the turn that reaches it cascades
//!   that slot to a finer level).
//! - `parked_until`: the tick the thread turning the driver sleeps until,
//!   `SCANNING` (`u64::MAX`) while it computes that, or `AWAKE` (0).
//!
//! A `Sleep` arms on the shard of the thread that first polls it and keeps
//! that shard (its key is the shard's) until it is dropped, polled past its
//! deadline (how most sleeps end: the clock passed it before the wheel's
//! turn did), or reset to a deadline already past; its timer is then freed,
//! and the next poll after a reset to the future arms on the polling
//! thread's shard (every poll that completes a sleep frees its timer, a
//! tick the driver fired too, since its deadline is past by the clock: an
//! `Interval`'s next tick arms on the thread that polls it).
//!
//! # Protocol: no timer is slept past
//! - **T1 (turn, before `epoll_wait`)** ([`TimerShards::park`]): store
//!   `parked_until = SCANNING`, SeqCst fence, read every shard's `earliest`,
//!   then lower `parked_until` to their minimum `m` (`fetch_min`: an arm
//!   that already set `AWAKE` keeps it) and sleep at most until `m`.
//! - **T2 (arm)** ([`TimerShards::with_shard`]): under the shard's lock,
//!   arm at tick `t`; if `t < earliest`, store `earliest = t`, then (after
//!   the lock) SeqCst fence, read `parked_until`; if `t` is below it, swap
//!   it to `AWAKE` and, if it was not `AWAKE` already, unpark the driver.
//! - **T3 (turn, after `epoll_wait`)**: `parked_until = AWAKE`; then, for
//!   each shard whose `earliest` is due (or whose wheel is [`FRESH_TICKS`]
//!   behind), lock it, advance its wheel and set `earliest` to its next
//!   expiration ([`TimerShards::advance`]). Other shards are not locked.
//!
//! The two fences make T1's scan and T2's check a Dekker pair: either the
//! scan reads the lowered `earliest` (and the sleep ends by `t`), or the arm
//! reads `SCANNING` or the tick slept until (and unparks). An arm that does
//! not lower `earliest` needs no check: the bound it found is at most `t`
//! and was published by an earlier arm (which checked) or by T3 of an
//! earlier turn (which the next T1 reads, turns being serialised by the
//! driver's owner). Loom models: `loom_an_arm_during_a_park_scan_*`.
//!
//! Lock order: a shard's lock is taken alone; no waker is woken or dropped
//! under it (one is cloned there: `driver`'s module docs).

use std::task::Waker;

use crossbeam_utils::CachePadded;

use super::wheel::Wheel;
use crate::loom::Fences;
use crate::loom::sync::Mutex;
use crate::loom::sync::atomic::{AtomicU64, Ordering};

/// The most shards: workers beyond share them.
pub(crate) const MAX_SHARDS: usize = 64;
/// T3 advances a shard with nothing due when its wheel is this many ticks
/// behind: a timer is placed relative to the wheel's time, and one placed
/// from far behind lands on a coarse level and is cascaded at least once
/// more before it fires (1M timers armed on a shard left behind for
/// seconds fired ~10% slower, `wq-bench timers`). One level-0 rotation.
const FRESH_TICKS: u64 = 64;
/// `parked_until` while the turning thread is awake.
const AWAKE: u64 = 0;
/// `parked_until` while the turning thread computes its wait: every arm
/// that lowers a shard's `earliest` unparks.
const SCANNING: u64 = u64::MAX;

/// One shard's wheel (see the module docs).
pub(crate) struct Timers {
    pub(crate) wheel: Wheel,
    /// The driver shut down: every timer fired, no new one is armed.
    pub(crate) shut_down: bool,
}

struct Shard {
    timers: Mutex<Timers>,
    /// A lower bound on the shard's earliest pending tick (module docs).
    earliest: AtomicU64,
    /// The tick the shard's wheel was last advanced to (written under the
    /// lock; T3 reads it without).
    advanced_to: AtomicU64,
}

/// The driver's timers (see the module docs).
pub(crate) struct TimerShards {
    shards: Box<[CachePadded<Shard>]>,
    parked_until: CachePadded<AtomicU64>,
    fences: Fences,
}

impl TimerShards {
    /// `shards` wheels, rounded up to a power of two (a shard is a mask
    /// away), at most [`MAX_SHARDS`].
    pub(crate) fn new(shards: usize) -> TimerShards {
        TimerShards {
            shards: (0..shards.clamp(1, MAX_SHARDS).next_power_of_two())
                .map(|_| {
                    CachePadded::new(Shard {
                        timers: Mutex::new(Timers {
                            wheel: Wheel::new(),
                            shut_down: false,
                        }),
                        earliest: AtomicU64::new(u64::MAX),
                        advanced_to: AtomicU64::new(0),
                    })
                })
                .collect(),
            parked_until: CachePadded::new(AtomicU64::new(AWAKE)),
            fences: Fences::default(),
        }
    }

    /// One shard per CPU of this machine, up to [`MAX_SHARDS`] (tests;
    /// a runtime sizes its shards by its CPU budget).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn for_this_machine() -> TimerShards {
        TimerShards::new(std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// The shard of the arming thread numbered `thread` (module docs).
    pub(crate) fn shard_of(&self, thread: usize) -> usize {
        thread & (self.shards.len() - 1)
    }

    /// Runs `f` on shard `shard`'s timers under its lock; `f` reports the
    /// tick it armed, if any (T2). Returns `f`'s result and whether the
    /// driver must be unparked (it sleeps past that tick).
    pub(crate) fn with_shard<R>(
        &self,
        shard: usize,
        f: impl FnOnce(&mut Timers) -> (R, Option<u64>),
    ) -> (R, bool) {
        let s = &self.shards[shard];
        let (r, lowered) = {
            let mut t = crate::loom::lock(&s.timers);
            let (r, armed) = f(&mut t);
            let lowered = armed.filter(|&tick| tick < s.earliest.load(Ordering::Relaxed));
            if let Some(tick) = lowered {
                s.earliest.store(tick, Ordering::Relaxed);
            }
            (r, lowered)
        };
        let Some(tick) = lowered else {
            return (r, false);
        };
        // T2's fence: pairs with T1's (module docs).
        self.fences.fence();
        let unpark = tick < self.parked_until.load(Ordering::Relaxed)
            && self.parked_until.swap(AWAKE, Ordering::Relaxed) != AWAKE;
        (r, unpark)
    }

    /// T1: the tick to sleep until (`u64::MAX`: no timer), published for
    /// arms to compare with.
    pub(crate) fn park(&self) -> u64 {
        self.parked_until.store(SCANNING, Ordering::Relaxed);
        // T1's fence: pairs with T2's.
        self.fences.fence();
        let next = self
            .shards
            .iter()
            .map(|s| s.earliest.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX);
        self.parked_until.fetch_min(next, Ordering::Relaxed);
        next
    }

    /// T3's first step: awake, arms need not unpark.
    pub(crate) fn unpark(&self) {
        self.parked_until.store(AWAKE, Ordering::Relaxed);
    }

    /// T3: advances every shard with a timer due by tick `now`, pushing due
    /// timers' wakers on `wake` and calling `woke` with them (outside the
    /// shard's lock) whenever [`Wheel::advance`] stops at `batch`.
    pub(crate) fn advance(
        &self,
        now: u64,
        wake: &mut Vec<Waker>,
        batch: usize,
        woke: &mut dyn FnMut(&mut Vec<Waker>),
    ) {
        for s in self.shards.iter() {
            if s.earliest.load(Ordering::Relaxed) > now
                && now < s.advanced_to.load(Ordering::Relaxed) + FRESH_TICKS
            {
                continue;
            }
            loop {
                let done = {
                    let mut t = crate::loom::lock(&s.timers);
                    let done = t.wheel.advance(now, wake, batch);
                    if done {
                        let next = t.wheel.next_expiration().unwrap_or(u64::MAX);
                        s.earliest.store(next, Ordering::Relaxed);
                        s.advanced_to.store(now, Ordering::Relaxed);
                    }
                    done
                };
                woke(wake);
                if done {
                    break;
                }
            }
        }
    }

    /// Marks every shard shut down and fires all its timers into `wake`.
    pub(crate) fn shut_down(&self, wake: &mut Vec<Waker>) {
        for s in self.shards.iter() {
            let mut t = crate::loom::lock(&s.timers);
            t.shut_down = true;
            t.wheel.fire_all(wake);
            s.earliest.store(u64::MAX, Ordering::Relaxed);
        }
    }

    /// Shards (tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn shards(&self) -> usize {
        self.shards.len()
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;

    /// The driver parks (T1) while a task arms an earlier timer on another
    /// shard (T2): the driver must either sleep no later than that timer or
    /// be unparked.
    fn model(fences: Fences) {
        loom::model(move || {
            let mut timers = TimerShards::new(2);
            timers.fences = fences;
            let timers = Arc::new(timers);
            // A far timer on shard 0, published by an earlier turn.
            timers.shards[0].earliest.store(1_000, Ordering::Relaxed);
            let t2 = timers.clone();
            let arm = loom::thread::spawn(move || {
                let ((), unpark) = t2.with_shard(1, |t| {
                    let (_, fired) = t.wheel.insert(10, &futures::task::noop_waker());
                    assert!(!fired);
                    ((), Some(10))
                });
                unpark
            });
            let slept_until = timers.park();
            let unparked = arm.join().unwrap();
            assert!(
                slept_until <= 10 || unparked,
                "the driver sleeps until {slept_until}, past the timer at 10, and nobody unparks it"
            );
        });
    }

    #[test]
    fn loom_an_arm_during_a_park_scan_unparks_or_is_seen() {
        model(Fences::default());
    }

    #[test]
    #[should_panic(expected = "nobody unparks it")]
    fn loom_an_arm_during_a_park_scan_without_fences_is_missed() {
        model(Fences { off: true });
    }
}
