//! The scheduling clock: a raw timestamp per enqueue and per poll, and the
//! delay between two of them in nanoseconds.
//!
//! A worker reads the clock once per poll, and every task once per
//! enqueue: on a busy pool that is tens of millions
//! of reads a second, so the read must be cheap. `clock_gettime` (the vDSO,
//! what `std::time::Instant` calls) was 35% of worker time in `yield_many`
//! (`perf`, 2-vCPU VM): its seqlock, ordered `rdtsc` and scaling cost ~20 ns
//! per call there. We use [`quanta`]: where the CPU has an invariant TSC it
//! reads the counter (`rdtsc`, unscaled: [`now`]) and scales only the
//! differences we record ([`delay_ns`]); elsewhere it falls back to the
//! monotonic clock, and nothing changes for us.
//!
//! Timestamps taken on different CPUs are compared (queued on one, run on
//! another). That assumes the CPUs' TSCs agree, as they do on current
//! single-board machines and most VMs; the kernel does not make them
//! agree, it checks them and stops using the TSC as its clocksource where
//! they do not, and quanta checks only that the TSC is invariant. Where
//! they disagree, a cross-CPU delay is off by the skew (a stamp that
//! reads later than the poll gives a delay of 0), and so is the CPU-hog
//! watchdog's age of a poll. Not checked here: reading the monotonic
//! clock instead costs ~20 ns a read.
//! The first call calibrates the counter against the monotonic clock
//! (quanta: usually 10-20 ms, at most 200 ms); [`calibrate`] runs it when a
//! runtime is built, not in the first spawn.

use std::sync::OnceLock;

static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

#[inline]
fn clock() -> &'static quanta::Clock {
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Calibrates the clock now (once per process).
pub(crate) fn calibrate() {
    let _ = clock();
}

/// A raw timestamp: comparable only through [`delay_ns`].
#[inline]
pub(crate) fn now() -> u64 {
    clock().raw()
}

/// Nanoseconds from raw timestamp `earlier` to `later`; 0 if `later` is
/// not later (cross-CPU skew).
#[inline]
pub(crate) fn delay_ns(earlier: u64, later: u64) -> u64 {
    clock().delta_as_nanos(earlier, later)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn saturating_add_never_panics_even_near_the_end_of_instant() {
        let now = Instant::now();
        let year = Duration::from_secs(86400 * 365);
        assert_eq!(super::saturating_add(now, year), now + year);
        assert!(super::saturating_add(now, Duration::MAX) > now + 29 * year);
        // The last representable instant, found by halving: within 30
        // years of it, even the fallback overflows; `t` comes back.
        let (mut end, mut step) = (now, Duration::MAX / 2);
        while step > Duration::from_secs(1) {
            if let Some(t) = end.checked_add(step) {
                end = t;
            } else {
                step /= 2;
            }
        }
        assert_eq!(super::saturating_add(end, Duration::MAX), end);
    }

    #[test]
    fn delays_are_nanoseconds_of_the_monotonic_clock() {
        calibrate();
        let (t0, i0) = (now(), Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let (t1, i1) = (now(), Instant::now());
        let want = (i1 - i0).as_nanos() as f64;
        let got = delay_ns(t0, t1) as f64;
        // Calibration is good to well under 1%; allow 5% for the two reads
        // not being taken at the same instant on a loaded machine.
        assert!((got / want - 1.0).abs() < 0.05, "{got} ns vs {want} ns");
        assert_eq!(delay_ns(t1, t0), 0, "a later stamp gives no delay");
    }
}

/// `t + d`, or about 30 years after `t` where that overflows `Instant`
/// (`Duration::MAX` means "never", not a panic), or `t` itself for a `t`
/// within 30 years of `Instant`'s end.
pub(crate) fn saturating_add(t: std::time::Instant, d: std::time::Duration) -> std::time::Instant {
    t.checked_add(d)
        .or_else(|| t.checked_add(std::time::Duration::from_secs(86400 * 365 * 30)))
        .unwrap_or(t)
}
