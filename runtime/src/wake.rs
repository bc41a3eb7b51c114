//! Wake modes.
//!
//! A kick picks and claims a worker under the pool lock (a producer's, or
//! concurrency management's when a worker blocks, the watchdog's for a CPU
//! hog, a failed start's, a driver hand-off's). What happens to the
//! worker's unparker then is the [`WakeMode`]: `UnderLock` unparks before the
//! lock is released (the kernel before its deferred-wakeup patch),
//! `Deferred` puts it in the pool's wake queue, drained only after the lock
//! is dropped (the kernel's `wake_q` / `raw_spin_unlock_irq_wake()`; see
//! `pool::wake_queue`).

use std::fmt;
use std::str::FromStr;

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
