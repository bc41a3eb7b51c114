//! The synchronisation facade: `std` in builds, `loom` under `--cfg loom`,
//! and the one lock helper of the crate.
//!
//! Code whose protocol is model-checked (the kick / idle / cull protocol in
//! [`crate::pool::idle`], the closing protocol, the rescuer's mayday list,
//! the task registry, a worker's LIFO slot, a workqueue's `max_active` gate, its flush
//! handshake, its drains' count and its tasks' references to it, a
//! parker's states) takes its `Mutex`, atomics and thread handles from
//! here, so the same source runs in production and under loom's model
//! checker, as tokio's `loom` module does. Other code uses `std::sync`
//! directly, and locks through [`lock`] all the same.

#[cfg(not(loom))]
pub(crate) mod sync {
    pub(crate) mod atomic {
        pub(crate) use std::sync::atomic::{
            AtomicBool, AtomicIsize, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence,
        };
    }
    pub(crate) use std::sync::{Condvar, Mutex, MutexGuard, TryLockError};
}

#[cfg(loom)]
pub(crate) mod sync {
    pub(crate) mod atomic {
        pub(crate) use loom::sync::atomic::{
            AtomicBool, AtomicIsize, AtomicPtr, AtomicU8, AtomicU64, AtomicUsize, Ordering, fence,
        };
    }
    pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
    pub(crate) use std::sync::TryLockError;
}

/// Threads: the idle protocol's unparker (`pool::wake_queue`) is a loom
/// thread under loom, and its model workers park on it; so does a
/// [`Parker`](crate::pool::park) (loom's park has no timeout: a model
/// parks until unparked, and a lost wakeup is a deadlock).
#[cfg(loom)]
pub(crate) mod thread {
    pub(crate) use loom::thread::{Thread, current};

    pub(crate) fn park_timeout(_: std::time::Duration) {
        loom::thread::park();
    }
}

/// Threads: `std`'s.
#[cfg(not(loom))]
pub(crate) mod thread {
    pub(crate) use std::thread::{Thread, current, park_timeout};
}

/// `yield_now` for model-checked code that waits for another thread.
#[cfg(not(loom))]
pub(crate) mod yielding {
    pub(crate) use std::thread::yield_now;
}

/// `yield_now` for model-checked code that waits for another thread.
#[cfg(loom)]
pub(crate) mod yielding {
    pub(crate) use loom::thread::yield_now;
}

/// A mutex [`lock`] can take: std's, and loom's under `--cfg loom`.
pub(crate) trait Lock {
    /// The mutex's guard.
    type Guard<'a>
    where
        Self: 'a;
    /// Locks, ignoring poisoning.
    fn lock_unpoisoned(&self) -> Self::Guard<'_>;
}

impl<T: ?Sized> Lock for std::sync::Mutex<T> {
    type Guard<'a>
        = std::sync::MutexGuard<'a, T>
    where
        T: 'a;

    fn lock_unpoisoned(&self) -> Self::Guard<'_> {
        self.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(loom)]
impl<T> Lock for loom::sync::Mutex<T> {
    type Guard<'a>
        = loom::sync::MutexGuard<'a, T>
    where
        T: 'a;

    fn lock_unpoisoned(&self) -> Self::Guard<'_> {
        self.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Locks `mutex`, ignoring poisoning: a wq lock guards consistent state
/// whenever code that can panic runs under it. Little does: another
/// executor's waker is cloned under a source's `waiters` lock (before the
/// waiter slab changes), and the driver's mutex is held through a turn's
/// wakes (`driver::wake_all` catches their panics); no other user code
/// runs under a wq lock.
pub(crate) fn lock<M: Lock + ?Sized>(mutex: &M) -> M::Guard<'_> {
    mutex.lock_unpoisoned()
}

/// The orderings of a model-checked protocol that a negative loom model
/// turns off (to `Relaxed`, and no fences) to show that the model finds the
/// bug they prevent: a workqueue's `max_active` gate and flush handshake,
/// and a task's reference to its workqueue.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Fences {
    /// Turned off (only a negative model does this).
    #[cfg(loom)]
    pub(crate) off: bool,
}

impl Fences {
    /// `SeqCst`, or `Relaxed` when turned off.
    pub(crate) fn order(self) -> sync::atomic::Ordering {
        self.or_relaxed(sync::atomic::Ordering::SeqCst)
    }

    /// `order`, or `Relaxed` when turned off.
    pub(crate) fn or_relaxed(self, order: sync::atomic::Ordering) -> sync::atomic::Ordering {
        #[cfg(loom)]
        if self.off {
            return sync::atomic::Ordering::Relaxed;
        }
        order
    }

    /// A `SeqCst` fence, or nothing when turned off.
    pub(crate) fn fence(self) {
        self.fence_of(sync::atomic::Ordering::SeqCst);
    }

    /// A fence of `order`, or nothing when turned off.
    pub(crate) fn fence_of(self, order: sync::atomic::Ordering) {
        #[cfg(loom)]
        if self.off {
            return;
        }
        sync::atomic::fence(order);
    }

    /// Between two `SeqCst` accesses of one thread to different atomics
    /// (`order()`), where the protocol needs them in the single total
    /// order C11 gives every `SeqCst` access: a `SeqCst` fence under loom
    /// only, or nothing when turned off. Loom regards `SeqCst` accesses
    /// as `AcqRel` (its README, "Unsupported features") and would report
    /// the store-buffering outcome that order rules out; a real fence
    /// after a locked read-modify-write would cost an `mfence` for
    /// nothing.
    #[inline(always)]
    pub(crate) fn total_order(self) {
        #[cfg(loom)]
        self.fence();
    }
}
