//! What becomes of a task scheduled on a closed pool.
//!
//! # Who drops what
//! While the runtime shuts down, tasks queued on a pool's injector and on
//! its workers' deques (a live worker's too: `Pool::drain` steals from
//! every used slot), and in a stuck worker's LIFO slot
//! (`Pool::drain_stragglers`), are dropped by the shutdown thread; a
//! worker exiting drops, in its own thread, what is left in its LIFO slot
//! and deque whose home pool is closed, and sends the rest home. A task scheduled on a
//! closed pool -- woken by another
//! thread, by a worker finishing its last poll, or by the shutdown's own
//! registry wake -- is pushed on the pool's injector like any other, and no
//! worker is kicked; the shutdown thread drains the injectors after each
//! registry wake (steps 2 and 4 of the scheduler's shutdown) and every
//! 10 ms while it waits for the threads (step 3). Dropping a task drops
//! its future, which is user code: done inside somebody's `wake()`, it
//! would run in the waker's thread under whatever locks the waker holds,
//! and a chain of tasks awaiting each other's `JoinHandle`s would recurse
//! once per link (each drop completes a handle, whose awaiter would be
//! dropped inside that wake).
//!
//! # The last drain
//! A push after the shutdown's last drain would stay queued for good, and
//! a queued task holds its home pool (`TaskMeta::home`): neither would ever
//! be freed. So the last drain is announced, store-buffering style:
//! - shutdown: `buried = true`, `fence(SeqCst)`, drain;
//! - a push on a closed pool: push, `fence(SeqCst)`, load `buried`; if set,
//!   drain (the pusher drops what is queued).
//!
//! The two fences are ordered one way or the other: if the shutdown's comes
//! first, the pusher loads `true`; if the pusher's comes first, its push is
//! visible to the shutdown's drain. Either way the task is dropped (at most
//! both drain, which is harmless). Only a push after (or racing) the last
//! drain drops tasks in the pusher's thread: by then every task idle at
//! shutdown has been dropped, so such a push comes from a wake racing the
//! shutdown's end, or from a worker a `shutdown_timeout` gave up on.
//! `loom_a_push_racing_the_last_drain_is_dropped` checks the race.
//!
//! A drain that drops a task may wake its awaiter, which is queued on its
//! own (closed) pool: the pools a thread is draining are stacked, and a
//! push onto one of them is left to that drain's loop, so a chain of
//! awaiters is dropped iteratively, nesting at most once per pool.

use crate::loom::sync::atomic::{AtomicBool, Ordering, fence};

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Closing {
    buried: AtomicBool,
    /// Loom's negative control: the pair without its fences.
    #[cfg(loom)]
    skips_fences: bool,
}

impl Closing {
    /// Called after pushing on a closed pool: whether the caller must drain
    /// the queue itself (the shutdown's last drain may have missed it).
    pub(crate) fn must_drain_after_push(&self) -> bool {
        self.fence();
        self.buried.load(Ordering::Relaxed)
    }

    /// Announces the shutdown's last drain; the caller drains after this.
    pub(crate) fn bury(&self) {
        self.buried.store(true, Ordering::Relaxed);
        self.fence();
    }

    fn fence(&self) {
        #[cfg(loom)]
        if self.skips_fences {
            return;
        }
        fence(Ordering::SeqCst);
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicUsize;

    /// The injector is lock-free (a release push, an acquire steal):
    /// modeled by one slot, so that loom, not a lock, orders the two sides.
    #[test]
    fn loom_a_push_racing_the_last_drain_is_dropped() {
        model(false);
    }

    /// The negative control: without the fences, the pusher may read the
    /// pool not yet buried while the last drain missed its push.
    #[test]
    #[should_panic(expected = "a task was stranded")]
    fn loom_without_the_fences_a_push_racing_the_last_drain_is_stranded() {
        model(true);
    }

    fn model(skips_fences: bool) {
        loom::model(move || {
            let closing = Arc::new(Closing {
                skips_fences,
                ..Closing::default()
            });
            let queued = Arc::new(AtomicUsize::new(0));
            let (c, q) = (closing.clone(), queued.clone());
            let pusher = loom::thread::spawn(move || {
                q.store(1, Ordering::Release);
                if c.must_drain_after_push() {
                    q.swap(0, Ordering::Acquire);
                }
            });
            closing.bury();
            queued.swap(0, Ordering::Acquire);
            pusher.join().unwrap();
            assert_eq!(queued.load(Ordering::Relaxed), 0, "a task was stranded");
        });
    }
}
