//! The thread's current runtime, for `wq::spawn` and `Handle::current`.
//!
//! Set on worker threads for their whole life, and on other threads while
//! they are inside [`Runtime::block_on`](crate::Runtime::block_on) or hold
//! an [`EnterGuard`](crate::EnterGuard). Guards nest: leaving restores the
//! previous value.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::Handle;

thread_local! {
    static CURRENT: RefCell<Option<Handle>> = const { RefCell::new(None) };
    static ORDINAL: Cell<usize> = const { Cell::new(usize::MAX) };
}

static NEXT_ORDINAL: AtomicUsize = AtomicUsize::new(0);

/// A small number unique to this thread, handed out in order of first use:
/// it spreads registry shards and gives threads a sticky virtual CPU on a
/// topology that is not this machine's.
pub(crate) fn thread_ordinal() -> usize {
    ORDINAL
        .try_with(|o| {
            if o.get() == usize::MAX {
                // Only uniqueness matters.
                o.set(NEXT_ORDINAL.fetch_add(1, Ordering::Relaxed));
            }
            o.get()
        })
        .unwrap_or(0)
}

/// Restores the previous current runtime when dropped.
#[derive(Debug)]
pub(crate) struct ContextGuard {
    prev: Option<Handle>,
}

pub(crate) fn enter(handle: Handle) -> ContextGuard {
    let prev = CURRENT.with(|c| c.borrow_mut().replace(handle));
    ContextGuard { prev }
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        let _ = CURRENT.try_with(|c| *c.borrow_mut() = prev);
    }
}

/// Calls `f` with the current runtime, if any.
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Handle>) -> R) -> R {
    let mut f = Some(f);
    match CURRENT.try_with(|c| (f.take().expect("called once"))(c.borrow().as_ref())) {
        Ok(r) => r,
        Err(_) => (f.take().expect("not called"))(None),
    }
}
