//! The wake queue: unparkers collected under a pool lock, unparked after
//! it is released (the kernel's `wake_q`).
//!
//! The queue holds each worker's [`Unparker`], an `Arc` inside, so the
//! worker is kept alive across the gap between the unlock and the wakeup; a
//! duplicate unpark is harmless (it only leaves a pending wakeup, and a
//! parked worker re-reads its state under the lock when it wakes).

use std::fmt;

/// What wakes a parked worker: its [`super::park::Unparker`] (which also
/// reaches a worker parked in the I/O driver); under loom, a loom thread.
#[cfg(not(loom))]
pub(crate) type Unparker = super::park::Unparker;
/// What wakes a parked worker (loom: a loom thread).
#[cfg(loom)]
pub(crate) type Unparker = crate::loom::thread::Thread;

/// Unparkers collected under a pool lock, unparked by [`WakeQueue::wake_all`]
/// after it is released. A kick queues at most one; a cull or a shutdown may
/// queue several.
#[derive(Default)]
pub(crate) struct WakeQueue {
    first: Option<Unparker>,
    rest: Vec<Unparker>,
}

impl WakeQueue {
    pub(crate) fn push(&mut self, thread: Unparker) {
        if self.first.is_none() {
            self.first = Some(thread);
        } else {
            self.rest.push(thread);
        }
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Unparks every queued thread. Call it with no lock held.
    pub(crate) fn wake_all(self) {
        if let Some(t) = self.first {
            t.unpark();
        }
        for t in self.rest {
            t.unpark();
        }
    }
}

impl fmt::Debug for WakeQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = usize::from(self.first.is_some()) + self.rest.len();
        f.debug_struct("WakeQueue").field("len", &n).finish()
    }
}
