//! The producer's wait: a flag plus `thread::park`/`unpark`, the same for
//! wq and tokio so both runtimes pay the same wakeup cost on the way back.
//! The completion keeps the time it was signalled, so that a round trip
//! splits into the runtime's part (spawn to the task's signal) and the
//! operating system's (the signal to the waiter running again).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
}

impl Completion {
    /// A completion the current thread will wait on.
    pub fn new() -> Arc<Completion> {
        Arc::new(Completion {
            signalled_at: AtomicU64::new(0),
            done: AtomicBool::new(false),
            waiter: thread::current(),
        })
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
    /// [`WAIT_LIMIT`] without it (a lost wakeup, or a task that panicked
    /// before its signal: the run is abandoned rather than left hanging
    /// with its busy neighbours spinning).
    pub fn wait(&self) {
        self.wait_within(WAIT_LIMIT);
    }

    /// [`wait`](Self::wait), giving up after `limit`.
    pub fn wait_within(&self, limit: Duration) {
        // Acquire: pairs with the Release store in `complete`.
        if self.done.swap(false, Ordering::Acquire) {
            return;
        }
        // Only a wait that parks reads the clock.
        let deadline = Instant::now() + limit;
        while !self.done.swap(false, Ordering::Acquire) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "wq-bench: a task did not signal its completion within {limit:?} (a lost wakeup, or a task that panicked before its signal); the run is abandoned"
            );
            thread::park_timeout(left);
        }
    }

    /// When the `complete` that the last `wait` returned for was called.
    pub fn signalled_at(&self) -> Instant {
        epoch() + std::time::Duration::from_nanos(self.signalled_at.load(Ordering::Relaxed))
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
}
