//! [`Interval`], [`interval`] and [`interval_at`].

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use super::Sleep;

/// Ticks every `period`, the first tick at once.
///
/// **Missed ticks are skipped**: if a tick is taken late (the task was busy
/// longer than a period), the next tick is the first one still ahead on the
/// original schedule (`start + k * period`), so a slow consumer never gets
/// a burst of catch-up ticks and the ticks stay aligned to the schedule.
/// Timers have a resolution of 1 ms, and a tick fires up to about 2 ms
/// after it is due: with a period under a millisecond or two, every tick is
/// late and the ones missed meanwhile are skipped, so such an interval
/// ticks about once per 1-2 ms, not once per period.
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
    }
}

/// Ticks on a fixed schedule: see [`interval`].
#[derive(Debug)]
pub struct Interval {
    sleep: Sleep,
    period: Duration,
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
        self.sleep
            .reset(next_tick(tick, self.period, Instant::now()));
        Poll::Ready(tick)
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Restarts the schedule: the next tick is one period from now.
    pub fn reset(&mut self) {
        self.sleep.reset(super::deadline_in(self.period));
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
