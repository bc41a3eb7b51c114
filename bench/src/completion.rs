//! The producer's wait: a flag plus `thread::park`/`unpark`, the same for
//! wq and tokio so both runtimes pay the same wakeup cost on the way back.
//! The completion keeps the time it was signalled, so that a round trip
//! splits into the runtime's part (spawn to the task's signal) and the
//! operating system's (the signal to the waiter running again).
//!
//! A wait parks with no timeout: `park_timeout` arms a kernel timer per
//! wait, and on the 2-vCPU VM that made every round trip of the seed
//! shape about 0.6 us longer, wq's and tokio's alike (rtt p50 7.0 against
//! 6.4 us at `cpu`, 2026-12-07; from `2637223` to `faa1f9f`). A wait
//! that never ends (a lost wakeup, a task that panicked before its
//! signal) is found by one watchdog thread instead, which looks at every
//! live completion once a second: a waiter parked in the same wait for
//! [`WAIT_LIMIT`] is told so, and panics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long [`Completion::wait`] waits before it calls the run lost: far
/// beyond any item's or iteration's time, beside busy neighbours too.
pub const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// A reusable one-waiter completion (the kernel test's
/// `wait_for_completion`).
#[derive(Debug)]
pub struct Completion {
    /// When `complete` was last called: nanoseconds since [`epoch`].
    signalled_at: AtomicU64,
    done: AtomicBool,
    waiter: Thread,
    /// The waits that parked, and whether one is parked now: written by
    /// the waiter only, read by the watchdog.
    parked_waits: AtomicU64,
    parked: AtomicBool,
    /// Set by the watchdog for a wait parked [`WAIT_LIMIT`]: the waiter
    /// panics.
    lost: AtomicBool,
}

impl Completion {
    /// A completion the current thread will wait on.
    pub fn new() -> Arc<Completion> {
        let c = Arc::new(Completion {
            signalled_at: AtomicU64::new(0),
            done: AtomicBool::new(false),
            waiter: thread::current(),
            parked_waits: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            lost: AtomicBool::new(false),
        });
        watched().lock().unwrap().push(Arc::downgrade(&c));
        c
    }

    /// Marks it done and unparks the waiter.
    pub fn complete(&self) {
        self.signalled_at
            .store(since_epoch(Instant::now()), Ordering::Relaxed);
        // Release: the waiter's Acquire swap sees what the task did (and
        // the time above).
        self.done.store(true, Ordering::Release);
        self.waiter.unpark();
    }

    /// Waits until [`complete`](Self::complete) was called, and resets it.
    /// Call only from the thread that created it. Panics after
    /// [`WAIT_LIMIT`] without it, told by the watchdog (a lost wakeup, or
    /// a task that panicked before its signal: the run is abandoned rather
    /// than left hanging with its busy neighbours spinning).
    pub fn wait(&self) {
        // Acquire: pairs with the Release store in `complete`.
        if self.done.swap(false, Ordering::Acquire) {
            return;
        }
        let n = self.parked_waits.load(Ordering::Relaxed) + 1;
        self.parked_waits.store(n, Ordering::Relaxed);
        self.parked.store(true, Ordering::Relaxed);
        while !self.done.swap(false, Ordering::Acquire) {
            if self.lost.load(Ordering::Acquire) {
                panic!("{}", lost_message(WAIT_LIMIT));
            }
            thread::park();
        }
        self.parked.store(false, Ordering::Relaxed);
    }

    /// [`wait`](Self::wait), giving up after `limit` by its own timer
    /// (`park_timeout`: a timer per wait; for a limit other than
    /// [`WAIT_LIMIT`]).
    pub fn wait_within(&self, limit: Duration) {
        if self.done.swap(false, Ordering::Acquire) {
            return;
        }
        let deadline = Instant::now() + limit;
        while !self.done.swap(false, Ordering::Acquire) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{}", lost_message(limit));
            thread::park_timeout(left);
        }
    }

    /// When the `complete` that the last `wait` returned for was called.
    pub fn signalled_at(&self) -> Instant {
        epoch() + std::time::Duration::from_nanos(self.signalled_at.load(Ordering::Relaxed))
    }
}

fn lost_message(limit: Duration) -> String {
    format!(
        "wq-bench: a task did not signal its completion within {limit:?} (a lost wakeup, or a task that panicked before its signal); the run is abandoned"
    )
}

/// Starts the watchdog's thread now if no completion has: a measurement
/// of the process's threads or memory takes its baseline after this, so
/// that the harness's thread is not counted as the runtime's.
pub fn start_watchdog() {
    let _ = watched();
}

/// The live completions, and the watchdog thread that looks at them
/// (started with the first).
fn watched() -> &'static Mutex<Vec<Weak<Completion>>> {
    static WATCHED: OnceLock<Mutex<Vec<Weak<Completion>>>> = OnceLock::new();
    WATCHED.get_or_init(|| {
        thread::Builder::new()
            .name("bench-stall".into())
            .spawn(|| {
                let mut seen = Seen::default();
                loop {
                    thread::sleep(Duration::from_secs(1));
                    seen.scan(WAIT_LIMIT, Instant::now());
                }
            })
            .expect("wq-bench: could not start the stall watchdog's thread");
        Mutex::new(Vec::new())
    })
}

/// The watchdog's memory: per parked completion (by address), the wait
/// it was parked in and since when that was seen.
#[derive(Default)]
struct Seen(HashMap<usize, (u64, Instant)>);

impl Seen {
    /// Tells every waiter parked in one wait for `limit` (as seen by the
    /// scans) that its run is lost; forgets completions dropped.
    fn scan(&mut self, limit: Duration, now: Instant) {
        let live: Vec<Arc<Completion>> = {
            let mut w = watched().lock().unwrap();
            w.retain(|c| c.strong_count() > 0);
            w.iter().filter_map(Weak::upgrade).collect()
        };
        let mut next = HashMap::new();
        for c in &live {
            if !c.parked.load(Ordering::Relaxed) {
                continue;
            }
            let key = Arc::as_ptr(c) as usize;
            let wait = c.parked_waits.load(Ordering::Relaxed);
            let since = match self.0.get(&key) {
                Some(&(w, since)) if w == wait => since,
                _ => now,
            };
            if now.duration_since(since) >= limit && since != now {
                c.lost.store(true, Ordering::Release);
                c.waiter.unpark();
            }
            next.insert(key, (wait, since));
        }
        self.0 = next;
    }
}

/// The process's reference instant for [`Completion::signalled_at`].
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `t` as nanoseconds since [`epoch`] (0 if before it).
fn since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_across_threads_and_resets_and_keeps_the_signal_time() {
        let c = Completion::new();
        for _ in 0..3 {
            let c2 = c.clone();
            let before = Instant::now();
            let t = thread::spawn(move || {
                thread::sleep(Duration::from_millis(2));
                c2.complete()
            });
            c.wait();
            let after = Instant::now();
            t.join().unwrap();
            // Between the thread's start (2 ms after `before`) and the
            // wait's return; rebuilt from whole nanoseconds.
            let at = c.signalled_at();
            assert!(at + Duration::from_nanos(1) >= before + Duration::from_millis(2));
            assert!(at <= after, "signalled after the wait returned");
        }
        assert!(!c.done.load(Ordering::Relaxed));
    }

    #[test]
    #[should_panic(expected = "did not signal its completion within 20ms")]
    fn a_completion_never_signalled_is_a_lost_run() {
        Completion::new().wait_within(Duration::from_millis(20));
    }

    /// A waiter parked in one wait across the watchdog's scans for the
    /// limit panics; one whose waits move on, or that is not parked, is
    /// left alone.
    #[test]
    fn the_watchdog_ends_a_wait_parked_for_the_limit() {
        let (tx, rx) = std::sync::mpsc::channel();
        let stuck = thread::spawn(move || {
            let c = Completion::new();
            tx.send(c.clone()).unwrap();
            c.wait();
        });
        let c = rx.recv().unwrap();
        while !c.parked.load(Ordering::Relaxed) {
            thread::yield_now();
        }
        let idle = Completion::new();
        let mut seen = Seen::default();
        let t0 = Instant::now();
        seen.scan(Duration::from_secs(60), t0);
        seen.scan(Duration::from_secs(60), t0 + Duration::from_secs(59));
        assert!(!c.lost.load(Ordering::Relaxed), "lost before the limit");
        seen.scan(Duration::from_secs(60), t0 + Duration::from_secs(60));
        let err = stuck.join().unwrap_err();
        let msg = err.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("did not signal its completion within 120s"),
            "{msg}"
        );
        assert!(
            !idle.lost.load(Ordering::Relaxed),
            "a completion nobody waits on"
        );
    }

    /// A completion whose waits move on between scans is not lost.
    #[test]
    fn a_wait_that_moves_on_between_scans_is_not_lost() {
        let c = Completion::new();
        c.parked.store(true, Ordering::Relaxed);
        let mut seen = Seen::default();
        let t0 = Instant::now();
        for i in 0..5u64 {
            c.parked_waits.store(i, Ordering::Relaxed);
            seen.scan(Duration::from_secs(1), t0 + Duration::from_secs(10 * i));
        }
        assert!(!c.lost.load(Ordering::Relaxed));
        c.parked.store(false, Ordering::Relaxed);
    }
}
