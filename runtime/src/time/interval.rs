//! [`Interval`], [`interval`], [`interval_at`] and [`MissedTickBehavior`].

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use super::Sleep;

/// Ticks every `period`, the first tick at once.
///
/// **Missed ticks are skipped** by default: if a tick is taken late (the
/// task was busy longer than a period), the next tick is the first one
/// still ahead on the original schedule (`start + k * period`), so a slow
/// consumer never gets a burst of catch-up ticks and the ticks stay
/// aligned to the schedule. [`Interval::set_missed_tick_behavior`] chooses
/// otherwise (tokio's default is [`MissedTickBehavior::Burst`]).
/// Timers have a resolution of 1 ms, and a tick fires up to about 2 ms
/// after it is due: with a period under a millisecond or two, every tick is
/// late and, by default, the ones missed meanwhile are skipped, so such an
/// interval ticks about once per 1-2 ms, not once per period (with
/// [`MissedTickBehavior::Burst`] it catches up in bursts instead).
///
/// # Panics
/// If `period` is zero, or outside a wq runtime (as [`sleep`](super::sleep)).
///
/// ```
/// use std::time::Duration;
///
/// #[wq::main]
/// async fn main() {
///     let mut every = wq::time::interval(Duration::from_millis(5));
///     let first = every.tick().await; // at once
///     let second = every.tick().await;
///     assert!(second - first >= Duration::from_millis(5));
/// }
/// ```
pub fn interval(period: Duration) -> Interval {
    interval_at_named("wq::time::interval", Instant::now(), period)
}

/// As [`interval`], with the first tick at `start`.
///
/// # Panics
/// As [`interval`].
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    interval_at_named("wq::time::interval_at", start, period)
}

fn interval_at_named(what: &str, start: Instant, period: Duration) -> Interval {
    assert!(
        !period.is_zero(),
        "{what}: the period is zero; give a positive Duration"
    );
    Interval {
        sleep: Sleep::new(super::sleep_driver(what), start),
        period,
        missed: MissedTickBehavior::Skip,
    }
}

/// What an [`Interval`] does after a tick taken late, more than a period
/// after it was due.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissedTickBehavior {
    /// The missed ticks come at once, one per `tick()`, until the schedule
    /// is caught up (`start + k * period` for every `k`; tokio's default):
    /// for a count of ticks that must not fall short.
    Burst,
    /// The schedule restarts from the late tick: the next one is a period
    /// after it was taken, and later ones a period apart. Unlike tokio's
    /// (which restarts after a tick over 5 ms late), a tick late by less
    /// than a whole period keeps the schedule.
    Delay,
    /// The missed ticks are dropped: the next tick is the first one still
    /// ahead on the original schedule (wq's default).
    #[default]
    Skip,
}

/// Ticks on a fixed schedule: see [`interval`].
#[derive(Debug)]
pub struct Interval {
    sleep: Sleep,
    period: Duration,
    missed: MissedTickBehavior,
}

impl Interval {
    /// Waits for the next tick; returns when it was scheduled.
    pub async fn tick(&mut self) -> Instant {
        poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// Polls for the next tick; see [`Interval::tick`].
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        ready!(Pin::new(&mut self.sleep).poll(cx));
        let tick = self.sleep.deadline();
        let next = match self.missed {
            MissedTickBehavior::Burst => super::saturating_add(tick, self.period),
            MissedTickBehavior::Delay => {
                // On schedule unless a whole period was missed.
                let now = Instant::now();
                let next = super::saturating_add(tick, self.period);
                if next > now {
                    next
                } else {
                    super::saturating_add(now, self.period)
                }
            }
            MissedTickBehavior::Skip => next_tick(tick, self.period, Instant::now()),
        };
        self.sleep.reset(next);
        Poll::Ready(tick)
    }

    /// What to do after a tick taken late: see [`MissedTickBehavior`]
    /// (default [`Skip`](MissedTickBehavior::Skip)). Takes effect from the
    /// next tick taken.
    pub fn set_missed_tick_behavior(&mut self, behavior: MissedTickBehavior) {
        self.missed = behavior;
    }

    /// What it does after a tick taken late.
    pub fn missed_tick_behavior(&self) -> MissedTickBehavior {
        self.missed
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Restarts the schedule: the next tick is one period from now.
    pub fn reset(&mut self) {
        self.sleep.reset(super::deadline_in(self.period));
    }

    /// Restarts the schedule from now: the next tick is at once, later
    /// ones a period apart.
    pub fn reset_immediately(&mut self) {
        self.sleep.reset(Instant::now());
    }

    /// Restarts the schedule: the next tick is `after` from now, later ones
    /// a period apart.
    pub fn reset_after(&mut self, after: Duration) {
        self.sleep.reset(super::deadline_in(after));
    }

    /// Restarts the schedule from `deadline`: the next tick is then (at
    /// once if it has passed, a tick taken late), and later ones on the
    /// schedule `deadline + k * period` as the
    /// [`MissedTickBehavior`] says (by default the first still ahead: with
    /// `deadline` 25 ms back and a period of 10 ms, 5 ms after the late
    /// tick).
    pub fn reset_at(&mut self, deadline: Instant) {
        self.sleep.reset(deadline);
    }
}

/// The first tick after `now` on the schedule `tick + k * period`, `k >= 1`.
/// Saturates (about 30 years ahead) where `Instant` would overflow, as a
/// period of `Duration::MAX` asks.
fn next_tick(tick: Instant, period: Duration, now: Instant) -> Instant {
    let next = super::saturating_add(tick, period);
    if next > now {
        return next;
    }
    let behind = now.duration_since(tick).as_nanos();
    let periods = behind / period.as_nanos() + 1;
    // In nanoseconds (u128): a `Duration` multiplied by a `u32` count
    // would stop short of `now` after 2^32 periods (4.3 s of 1 ns periods),
    // giving a tick in the past: a burst.
    let offset = period.as_nanos().saturating_mul(periods);
    u64::try_from(offset)
        .ok()
        .and_then(|ns| tick.checked_add(Duration::from_nanos(ns)))
        .unwrap_or_else(|| super::saturating_add(now, period))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn missed_ticks_are_skipped_onto_the_schedule() {
        let t0 = Instant::now();
        let p = Duration::from_millis(10);
        assert_eq!(next_tick(t0, p, t0 + Duration::from_millis(3)), t0 + p);
        assert_eq!(
            next_tick(t0, p, t0 + Duration::from_millis(35)),
            t0 + Duration::from_millis(40)
        );
        assert_eq!(
            next_tick(t0, p, t0 + Duration::from_millis(40)),
            t0 + Duration::from_millis(50),
            "a tick exactly now is missed too: it is taken late"
        );
    }

    #[test]
    fn more_than_four_billion_missed_periods_still_land_after_now() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(10);
        let p = Duration::from_nanos(1);
        let next = next_tick(t0, p, now);
        assert!(next > now, "a tick {:?} before now", now - next);
        assert_eq!(next, now + p);
        let p = Duration::from_micros(1);
        let now = t0 + Duration::from_secs(5 * 3600);
        assert_eq!(next_tick(t0, p, now), now + p);
    }

    #[test]
    fn a_period_beyond_instant_saturates_instead_of_panicking() {
        let t0 = Instant::now();
        let next = next_tick(t0, Duration::MAX, t0);
        assert!(next > t0 + Duration::from_secs(86400 * 365));
        let late = t0 + Duration::from_secs(5);
        assert!(next_tick(t0, Duration::MAX, late) > late);
    }
}
