//! Wake modes and the wake queue.
//!
//! A kick picks and claims a worker under the pool lock. What happens to the
//! worker's unparker then is the [`WakeMode`]: `UnderLock` unparks before the
//! lock is released (the kernel before its deferred-wakeup patch), `Deferred` puts it
//! in a [`WakeQueue`] that is drained only after the lock is dropped (the
//! kernel's `wake_q` / `raw_spin_unlock_irq_wake()`). The queue holds the
//! worker's [`Thread`] handle, an `Arc` inside, so the worker is kept alive
//! across the gap; a duplicate unpark is harmless (it only leaves a park
//! token, and a parked worker re-checks its state when it wakes).

use std::fmt;
use std::str::FromStr;

use crate::loom::thread::Thread;

/// When a kicked worker's thread is unparked, relative to the pool lock.
///
/// ```
/// use wq::WakeMode;
/// assert_eq!(WakeMode::default(), WakeMode::Deferred);
/// assert_eq!("under_lock".parse::<WakeMode>().unwrap(), WakeMode::UnderLock);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WakeMode {
    /// Claim the worker under the pool lock, unpark it after the lock is
    /// dropped. The default.
    #[default]
    Deferred,
    /// Unpark the worker while still holding the pool lock: the kernel
    /// before its deferred-wakeup patch, kept to reproduce the patch's A/B
    /// measurement.
    UnderLock,
}

impl WakeMode {
    /// Both modes, baseline first.
    pub const ALL: [WakeMode; 2] = [WakeMode::UnderLock, WakeMode::Deferred];

    /// `"deferred"` or `"under_lock"`.
    pub const fn name(self) -> &'static str {
        match self {
            WakeMode::Deferred => "deferred",
            WakeMode::UnderLock => "under_lock",
        }
    }
}

impl fmt::Display for WakeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`WakeMode`] from a string that names none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseWakeModeError {
    input: String,
}

impl fmt::Display for ParseWakeModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown wake mode {:?}: expected `deferred` or `under_lock`",
            self.input
        )
    }
}

impl std::error::Error for ParseWakeModeError {}

impl FromStr for WakeMode {
    type Err = ParseWakeModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WakeMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| ParseWakeModeError {
                input: s.to_owned(),
            })
    }
}

/// Unparkers collected under a pool lock, unparked by [`WakeQueue::wake_all`]
/// after it is released. A kick queues at most one; a cull or a shutdown may
/// queue several.
#[derive(Default)]
pub(crate) struct WakeQueue {
    first: Option<Thread>,
    rest: Vec<Thread>,
}

impl WakeQueue {
    pub(crate) fn push(&mut self, thread: Thread) {
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
