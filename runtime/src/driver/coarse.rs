//! Telling a deadline far from now without reading the clock.
//!
//! A `Sleep` completes at once when its deadline has passed by the clock,
//! whatever the wheel's last turn says (`time::sleep`): the wheel may be
//! well behind the clock, and a deadline already past would otherwise wait
//! for the next turn. That took a read of `Instant::now()`
//! (`CLOCK_MONOTONIC`, the vDSO's ordered `rdtsc`, seqlock and scaling) in
//! every first poll: 20 ns of `wq-bench timers`' 76 ns insert on the 2-vCPU
//! VM, the whole of its gap to tokio's (`docs/benchmarks.md`, section 9).
//!
//! `CLOCK_MONOTONIC_COARSE` is the same clock as of the kernel's last tick
//! (a seqlock and a copy, no counter read): never ahead of
//! `CLOCK_MONOTONIC`, behind it by at most a tick while ticks run (its
//! resolution, `clock_getres`: 1-10 ms by `CONFIG_HZ`). So a deadline at or
//! before the coarse reading has **passed**, and one more than a margin
//! after it (two ticks, plus the error of relating the two clocks, plus a
//! millisecond) is **ahead**: only a deadline within the margin of now
//! needs the fine read ([`Coarse::Near`]). A `Sleep` of 10 s, or hyper's
//! header timer, is ahead; a sleep of a few milliseconds still reads the
//! clock.
//!
//! # Never early
//! [`Coarse::Passed`] is said only when the deadline is at or before the
//! coarse reading, which is at or before now: a sleep it completes was due.
//! Deadlines are compared in the driver's ticks (`ceil(deadline - base)`,
//! `driver`'s module docs) against the reading's time since `base` as
//! recorded here ([`CoarseClock::new`] reads `base` first, then the
//! clock's timespec: the recorded offset is at or after `base`, so a
//! reading's time since it is at most the true one).
//!
//! [`Coarse::Ahead`] trusts the lag bound. Where it fails (a kernel that
//! stopped ticking on a busy CPU, `nohz_full`), a deadline passed by less
//! than the lag is armed rather than completed, and fires at the wheel's
//! next turn: late by a turn, never early.

use std::time::{Duration, Instant};

/// What the coarse clock says of a deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coarse {
    /// At or before the coarse reading: passed.
    Passed,
    /// Beyond the reading plus the margin: ahead (module docs).
    Ahead,
    /// Within the margin: read the clock.
    Near,
}

/// `CLOCK_MONOTONIC_COARSE`, related to a driver's tick base.
#[derive(Debug)]
pub(crate) struct CoarseClock {
    /// `CLOCK_MONOTONIC` in nanoseconds, read just after `base`.
    base_ns: i128,
    /// Ahead needs the deadline this far past the reading (nanoseconds).
    margin_ns: i128,
}

fn read(clock: libc::clockid_t) -> Option<i128> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec))
}

impl CoarseClock {
    /// For tick base `base`, read by the caller just before: `None` where
    /// the kernel has no coarse clock (every deadline is then
    /// [`Coarse::Near`]).
    pub(crate) fn new(base: Instant) -> Option<CoarseClock> {
        let base_ns = read(libc::CLOCK_MONOTONIC)?;
        // The offset is at most this far after `base` (the time between
        // the two reads), which the margin covers.
        let gap = base.elapsed();
        let mut res = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `res` is a valid timespec to write.
        if unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) } != 0 {
            return None;
        }
        read(libc::CLOCK_MONOTONIC_COARSE)?;
        let tick = i128::from(res.tv_sec) * 1_000_000_000 + i128::from(res.tv_nsec);
        Some(CoarseClock {
            base_ns,
            margin_ns: 2 * tick
                + gap.as_nanos() as i128
                + Duration::from_millis(1).as_nanos() as i128,
        })
    }

    /// What the coarse clock says of a deadline at driver tick `tick`
    /// (milliseconds since the base, rounded up; 0: at or before it).
    #[inline]
    pub(crate) fn check(&self, tick: u64) -> Coarse {
        if tick == 0 {
            // At or before the base, which has passed.
            return Coarse::Passed;
        }
        let Some(now) = read(libc::CLOCK_MONOTONIC_COARSE) else {
            return Coarse::Near;
        };
        // At most the true time since the base (module docs).
        let since = now - self.base_ns;
        let tick = i128::from(tick);
        if tick * 1_000_000 <= since {
            // deadline <= tick ms <= since <= now.
            Coarse::Passed
        } else if (tick - 1) * 1_000_000 >= since + self.margin_ns {
            // deadline > (tick - 1) ms >= since + margin >= now.
            Coarse::Ahead
        } else {
            Coarse::Near
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn tick_ceil(base: Instant, deadline: Instant) -> u64 {
        let d = deadline.saturating_duration_since(base);
        u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap()
    }

    #[test]
    fn a_deadline_at_the_base_or_before_has_passed() {
        let base = Instant::now();
        let c = CoarseClock::new(base).expect("Linux has CLOCK_MONOTONIC_COARSE");
        assert_eq!(c.check(0), Coarse::Passed);
    }

    #[test]
    fn far_deadlines_are_ahead_and_old_ones_passed() {
        let base = Instant::now();
        let c = CoarseClock::new(base).unwrap();
        assert_eq!(c.check(10_000), Coarse::Ahead);
        assert_eq!(c.check(u64::MAX), Coarse::Ahead);
        std::thread::sleep(Duration::from_millis(60));
        // 60 ms on, a deadline at 20 ms is behind the coarse clock by more
        // than any tick (at most 10 ms).
        assert_eq!(c.check(20), Coarse::Passed);
    }

    /// Deadlines around now, each checked between two fine reads: one said
    /// passed must be at or before the read after, one said ahead after
    /// the read before. Fails if the offset or the margin is taken the
    /// wrong way (a coarse reading related to the base read after it, or
    /// no margin for the tick). "Ahead" rests on the coarse clock lagging
    /// by at most two ticks (module docs): a check made while it lagged
    /// more (a stalled tick on a loaded VM) is not held to it.
    #[test]
    fn passed_is_never_early_and_ahead_never_late() {
        let base = Instant::now();
        let c = CoarseClock::new(base).unwrap();
        // The lag the margin assumes (module docs): two ticks.
        let mut res = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `res` is a valid timespec to write.
        let got = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
        assert_eq!(got, 0);
        let tick_ns = i128::from(res.tv_sec) * 1_000_000_000 + i128::from(res.tv_nsec);
        std::thread::sleep(Duration::from_millis(30));
        // Offsets beyond the margin either side (the margin is 3-21 ms by
        // the kernel's tick), in 200 steps.
        let span = c.margin_ns as i64 / 1000 + 10_000; // us
        let (mut passed, mut ahead, mut near, mut lagged) = (0, 0, 0, 0);
        for round in 0..20_000i64 {
            let offset_us = (round % 200) * span / 100 - span;
            let now = Instant::now();
            let deadline = if offset_us < 0 {
                now - Duration::from_micros(offset_us.unsigned_abs())
            } else {
                now + Duration::from_micros(offset_us as u64)
            };
            let tick = tick_ceil(base, deadline);
            let lag = || {
                read(libc::CLOCK_MONOTONIC).unwrap() - read(libc::CLOCK_MONOTONIC_COARSE).unwrap()
            };
            let lag_before = lag();
            let before = Instant::now();
            let said = c.check(tick);
            let after = Instant::now();
            match said {
                Coarse::Passed => {
                    passed += 1;
                    assert!(deadline <= after, "passed early: {offset_us} us");
                }
                Coarse::Ahead => {
                    ahead += 1;
                    // The lag at the check is at most the larger of the
                    // two around it (a tick between them lowers the later
                    // one), give or take the microseconds between.
                    let most = lag_before.max(lag()) + 100_000;
                    if most > 2 * tick_ns {
                        lagged += 1;
                    } else {
                        assert!(deadline > before, "ahead but due: {offset_us} us");
                    }
                }
                Coarse::Near => near += 1,
            }
        }
        assert!(
            passed > 0 && ahead > 0 && near > 0,
            "{passed} passed, {ahead} ahead ({lagged} lagged), {near} near"
        );
    }
}
