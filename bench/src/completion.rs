//! The producer's wait: a flag plus `thread::park`/`unpark`, the same for
//! wq and tokio so both runtimes pay the same wakeup cost on the way back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, Thread};

/// A reusable one-waiter completion (the kernel test's
/// `wait_for_completion`).
#[derive(Debug)]
pub struct Completion {
    done: AtomicBool,
    waiter: Thread,
}

impl Completion {
    /// A completion the current thread will wait on.
    pub fn new() -> Arc<Completion> {
        Arc::new(Completion {
            done: AtomicBool::new(false),
            waiter: thread::current(),
        })
    }

    /// Marks it done and unparks the waiter.
    pub fn complete(&self) {
        // Release: the waiter's Acquire swap sees what the task did.
        self.done.store(true, Ordering::Release);
        self.waiter.unpark();
    }

    /// Waits until [`complete`](Self::complete) was called, and resets it.
    /// Call only from the thread that created it.
    pub fn wait(&self) {
        // Acquire: pairs with the Release store in `complete`.
        while !self.done.swap(false, Ordering::Acquire) {
            thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_across_threads_and_resets() {
        let c = Completion::new();
        for _ in 0..3 {
            let c2 = c.clone();
            let t = thread::spawn(move || c2.complete());
            c.wait();
            t.join().unwrap();
        }
        assert!(!c.done.load(Ordering::Relaxed));
    }
}
