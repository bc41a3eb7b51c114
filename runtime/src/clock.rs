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

/// The calling thread's CPU-time clock, for [`cpu_time`] from any thread
/// of the process; 0 (never a thread's clock: theirs are negative on
/// Linux) if it cannot be had.
pub(crate) fn this_threads_cpu_clock() -> libc::clockid_t {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `pthread_self()` is the calling thread, alive for the call,
    // and `clock` is a valid place for the id.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
    if rc == 0 && clock < 0 { clock } else { 0 }
}

/// Nanoseconds of CPU time a thread of this process has used, read from
/// its clock ([`this_threads_cpu_clock`]); `None` for an unknown clock or
/// a thread that has exited. Up to date for a thread running now (the
/// kernel adds its current run), unlike `/proc`'s `schedstat`, which
/// moves at ticks and switches. A system call: under a microsecond.
pub(crate) fn cpu_time(clock: libc::clockid_t) -> Option<u64> {
    if clock >= 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid place for the time; an id whose thread is
    // gone is refused (`EINVAL`), not undefined (if the kernel has given
    // the id to another thread of this process meanwhile, that thread's
    // time is read: a wrong sample, which the callers' saturating
    // arithmetic bounds).
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(u64::try_from(ts.tv_sec).ok()? * 1_000_000_000 + u64::try_from(ts.tv_nsec).ok()?)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Another thread's CPU clock counts its time on a CPU, not the wall
    /// time: a thread that spins until its own clock reads 20 ms and then
    /// sleeps reads at least 20 ms from here, no more than the wall time
    /// since it started, and about nothing more while it sleeps; an
    /// unknown clock reads nothing.
    #[test]
    fn a_threads_cpu_clock_counts_its_cpu_time_from_another_thread() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let started = Instant::now();
        let t = std::thread::spawn(move || {
            let clock = this_threads_cpu_clock();
            while cpu_time(clock).unwrap() < 20_000_000 {
                std::hint::spin_loop();
            }
            tx.send(clock).unwrap();
            done_rx.recv().unwrap();
        });
        let clock = rx.recv().unwrap();
        assert!(clock < 0, "a thread's clock id: {clock}");
        let used = cpu_time(clock).expect("the thread is alive");
        let wall = started.elapsed().as_nanos() as u64;
        assert!(
            (20_000_000..=wall).contains(&used),
            "{used} ns of CPU in {wall} ns"
        );
        std::thread::sleep(Duration::from_millis(30));
        let asleep = cpu_time(clock).unwrap() - used;
        assert!(
            asleep < 10_000_000,
            "{asleep} ns of CPU while blocked in a receive"
        );
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(cpu_time(0), None);
    }

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
