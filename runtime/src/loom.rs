//! The synchronisation facade: `std` in builds, `loom` under `--cfg loom`.
//!
//! Code whose protocol is model-checked (the kick / idle / cull protocol in
//! [`crate::pool::idle`]) takes its `Mutex`, atomics and thread handles from
//! here, so the same source runs in production and under loom's model
//! checker, as tokio's `loom` module does.

#[cfg(not(loom))]
pub(crate) mod sync {
    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
    }
    pub(crate) use std::sync::{Mutex, MutexGuard};
}

#[cfg(loom)]
pub(crate) mod sync {
    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
    }
    pub(crate) use loom::sync::{Mutex, MutexGuard};
}

#[cfg(not(loom))]
pub(crate) mod thread {
    pub(crate) use std::thread::{Thread, current, park_timeout};
}

#[cfg(loom)]
pub(crate) mod thread {
    pub(crate) use loom::thread::{Thread, current, park};

    /// loom has no clock: a timed park is a park, and the model decides who
    /// unparks.
    pub(crate) fn park_timeout(_: std::time::Duration) {
        park();
    }
}

/// Locks `mutex`, ignoring poisoning: no code that can panic runs while a wq
/// lock is held, so a poisoned lock still guards consistent state.
pub(crate) fn lock<T>(mutex: &sync::Mutex<T>) -> sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
