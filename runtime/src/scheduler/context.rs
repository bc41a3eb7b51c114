//! The thread's current runtime, for `wq::spawn` and `Handle::current`.
//!
//! Set on worker threads and the rescuer for their whole life, and on other
//! threads while they are inside [`Runtime::block_on`](crate::Runtime::block_on)
//! or hold an [`EnterGuard`](crate::EnterGuard). Guards nest: leaving
//! restores the previous value. (What a thread *is* to wq, a worker or a
//! rescuer, is `pool::current`'s; this is only which runtime `wq::spawn`
//! uses.)

use std::cell::RefCell;
use std::sync::Arc;

use super::Scheduler;

thread_local! {
    static RUNTIME: RefCell<Option<Arc<Scheduler>>> = const { RefCell::new(None) };
    /// Guards alive on this thread: each knows its depth, so one dropped
    /// before a later one is seen out of order even when both made the
    /// same runtime current.
    static DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// What guards dropped out of order would have restored, by their
    /// depth: the guard above such a guard restores it in its place when
    /// it drops (so the thread ends with the runtime it had before its
    /// first guard, not one left current with no guard alive). Empty but
    /// after that misuse.
    static SKIPPED: RefCell<Vec<(u32, Option<Arc<Scheduler>>)>> = const { RefCell::new(Vec::new()) };
    /// `with_current` calls running on this thread (they nest: a spawn in
    /// a dropped future's `Drop`).
    static BORROWING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// Runtimes that guards dropped out of order stopped holding while a
    /// `with_current` ran, which may be using one of them: dropped when
    /// the outermost `with_current` returns (or with the thread's
    /// thread-locals), not before, and not leaked.
    static RETIRED: RefCell<Vec<Arc<Scheduler>>> = const { RefCell::new(Vec::new()) };
}

/// Drops `retired` runtimes now, or, while a `with_current` runs on this
/// thread, when the outermost one returns (its safety argument).
fn retire(retired: Vec<Arc<Scheduler>>) {
    if retired.is_empty() {
        return;
    }
    if BORROWING.try_with(|b| b.get()).unwrap_or(0) == 0 {
        drop(retired);
    } else {
        // Where `RETIRED` is gone (a thread-local's destructor after it),
        // they are kept: a count leaked there beats a freed scheduler.
        let mut retired = Some(retired);
        let _ = RETIRED.try_with(|r| r.borrow_mut().extend(retired.take().unwrap()));
        std::mem::forget(retired);
    }
}

/// Restores the previous current runtime when dropped. Not `Send`: it
/// belongs to the thread whose context it changed (a guard held across an
/// `.await` would otherwise move to another worker and restore this
/// thread's context there).
pub(crate) struct ContextGuard {
    prev: Option<Arc<Scheduler>>,
    /// The runtime this guard made current (compared, never dereferenced):
    /// guards must be dropped in the reverse order of their creation.
    set: *const Scheduler,
    /// Its place among the thread's guards (`DEPTH` after it was made).
    depth: u32,
}

impl std::fmt::Debug for ContextGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextGuard").finish_non_exhaustive()
    }
}

/// Makes `scheduler`'s runtime current until the guard drops.
pub(crate) fn enter(scheduler: Arc<Scheduler>) -> ContextGuard {
    let set = Arc::as_ptr(&scheduler);
    let prev = RUNTIME.with(|c| c.borrow_mut().replace(scheduler));
    ContextGuard {
        prev,
        set,
        depth: deeper(),
    }
}

/// One guard more on this thread: its depth.
fn deeper() -> u32 {
    DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get()
    })
}

/// As [`enter`], or `None` on a thread whose thread-locals are being
/// destroyed (a `Runtime` held in a `thread_local!` and dropped at the
/// thread's exit, after this module's): the context cannot be set there,
/// and `enter`'s access would panic, which aborts inside a thread-local's
/// destructor.
pub(crate) fn try_enter(scheduler: Arc<Scheduler>) -> Option<ContextGuard> {
    let set = Arc::as_ptr(&scheduler);
    RUNTIME
        .try_with(|c| c.borrow_mut().replace(scheduler))
        .ok()
        .map(|prev| ContextGuard {
            prev,
            set,
            depth: deeper(),
        })
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        let mut prev = self.prev.take();
        // Dropped after `RUNTIME`'s borrow ends (a scheduler's drop may
        // look at the context).
        let mut retired = Vec::new();
        let mut replaced = None;
        let in_order = RUNTIME.try_with(|c| {
            let mut cur = c.borrow_mut();
            let in_order = DEPTH.with(|d| d.get()) == self.depth
                && cur
                    .as_ref()
                    .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), self.set));
            if in_order {
                // Guards just below it dropped out of order: what they
                // would have restored goes back instead, and the depth
                // steps past them.
                // (`try_with`: in a thread-local's destructor that runs
                // after `SKIPPED`'s and before `RUNTIME`'s, a guard still
                // drops; nothing was skipped there, or it is gone.)
                let mut depth = self.depth;
                while let Some(skipped) = SKIPPED
                    .try_with(|s| {
                        let mut s = s.borrow_mut();
                        let i = s.iter().position(|(d, _)| *d + 1 == depth)?;
                        Some(s.swap_remove(i).1)
                    })
                    .ok()
                    .flatten()
                {
                    // Not dropped at once: a `with_current` in progress
                    // may be using it (its safety argument).
                    retired.extend(std::mem::replace(&mut prev, skipped));
                    depth -= 1;
                }
                DEPTH.with(|d| d.set(depth - 1));
                // Its count may be the scheduler's last: dropped after the
                // borrow, below.
                replaced = std::mem::replace(&mut *cur, prev);
            } else {
                // Out of order, the depth stays: the later guard's drop is
                // then in order, and restores what this one would have.
                // Kept, not dropped, where `SKIPPED` is gone too.
                let mut prev = Some(prev);
                let _ =
                    SKIPPED.try_with(|s| s.borrow_mut().push((self.depth, prev.take().unwrap())));
                std::mem::forget(prev);
            }
            in_order
        });
        drop(replaced);
        retire(retired);
        if in_order == Ok(false) && !std::thread::panicking() {
            panic!(
                "wq: runtime EnterGuards dropped out of order: guards returned by \
                 Runtime::enter must be dropped in the reverse order of \
                 their creation (drop the inner one first); one made inside \
                 a block_on future must be dropped before block_on returns \
                 (block_on's own guard is dropped then)"
            );
        }
    }
}

/// Calls `f` with the current runtime's scheduler, if any.
///
/// The thread-local is not borrowed while `f` runs: `f` may enter a
/// runtime (a future refused by a closed runtime is dropped inside `f`,
/// and its `Drop` may call `block_on`), which a borrow held across it made
/// a "already borrowed" panic. Nor is the scheduler's count touched (a
/// clone per `wq::spawn` would be a read-modify-write of one line by every
/// CPU that spawns).
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Arc<Scheduler>>) -> R) -> R {
    let current = RUNTIME
        .try_with(|c| c.borrow().as_ref().map(Arc::as_ptr))
        .ok()
        .flatten();
    match current {
        None => f(None),
        Some(ptr) => {
            // SAFETY: `ptr` came from an `Arc` (`as_ptr`), and that `Arc`
            // stays owned until `f` returns: by the thread-local, or, once
            // `f` enters another runtime, by that guard's `prev`, which an
            // in-order drop puts back and an out-of-order one keeps in
            // `SKIPPED` (for the guard above to put back, or to retire if
            // a lower one's replaces it: `RETIRED` holds it until the
            // outermost `with_current` returns; what stays in either is
            // dropped only with the thread's thread-locals, when no `f`
            // runs); nothing else takes it out. `ManuallyDrop`: this borrowed view
            // never gives up a count it does not hold.
            let arc = std::mem::ManuallyDrop::new(unsafe { Arc::from_raw(ptr) });
            let _borrowing = Borrowing::new();
            f(Some(&arc))
        }
    }
}

/// A `with_current` running (`BORROWING`); the outermost one's end drops
/// the runtimes retired meanwhile, unwinding included.
struct Borrowing;

impl Borrowing {
    fn new() -> Borrowing {
        let _ = BORROWING.try_with(|b| b.set(b.get() + 1));
        Borrowing
    }
}

impl Drop for Borrowing {
    fn drop(&mut self) {
        let outermost = BORROWING
            .try_with(|b| {
                b.set(b.get() - 1);
                b.get() == 0
            })
            .unwrap_or(false);
        if outermost {
            let retired = RETIRED
                .try_with(|r| std::mem::take(&mut *r.borrow_mut()))
                .unwrap_or_default();
            drop(retired);
        }
    }
}

/// Whether this thread's wq thread-locals are destroyed (a thread-local's
/// destructor running after them): no runtime can be current.
pub(crate) fn tls_gone() -> bool {
    RUNTIME.try_with(|_| ()).is_err()
}

/// Panics for `what` (a call that needs a runtime) made outside one, with
/// what to do instead.
pub(crate) fn outside(what: &str) -> ! {
    if tls_gone() {
        // In a thread-local's destructor, after wq's own: no runtime can be
        // current there, `block_on`'s included.
        panic!(
            "{what} called in a thread-local's destructor, after wq's own thread-locals were destroyed: no wq runtime can be current there (Runtime::block_on still runs its future, but spawns, timers and sockets need a current runtime); do that work before the thread exits, or from another thread"
        )
    }
    panic!(
        "{what} called outside a wq runtime: call it from a task, inside Runtime::block_on or #[wq::main], or after Runtime::enter(); from a thread holding only a wq::Handle, spawn through the Handle's methods, or run the code that needs the runtime (timers, sockets, signals) inside Handle::block_on"
    )
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::Arc;

    use super::{enter, with_current};
    use crate::Runtime;

    /// Drops `guard` out of order: the panic that says so, caught.
    fn drop_out_of_order<T>(guard: T) {
        let p = catch_unwind(AssertUnwindSafe(move || drop(guard))).unwrap_err();
        let msg = p.downcast_ref::<&str>().copied().unwrap_or_default();
        assert!(msg.contains("dropped out of order"), "{msg:?}");
    }

    /// Guards of two runtimes dropped out of order: the later guard's drop
    /// restores what the earlier would have (no runtime), and the count on
    /// the first runtime's scheduler its guard held is given back, not
    /// leaked (it was forgotten until 2026-12-07: the scheduler outlived
    /// its runtime).
    #[test]
    fn guards_dropped_out_of_order_leak_no_runtime() {
        let a = Runtime::builder().build().unwrap();
        let b = Runtime::builder().build().unwrap();
        let weak_a = Arc::downgrade(&a.handle().scheduler);
        let ga = enter(a.handle().scheduler.clone());
        let gb = enter(b.handle().scheduler.clone());
        drop_out_of_order(ga);
        drop(gb);
        assert!(crate::Handle::try_current().is_none());
        drop(a);
        assert!(
            weak_a.upgrade().is_none(),
            "the first runtime's scheduler leaked"
        );
    }

    /// The same inside a `with_current` that borrows the first runtime: its
    /// scheduler is kept while the call runs (it may be in use there), and
    /// dropped when the call returns.
    #[test]
    fn a_runtime_retired_under_with_current_lives_until_it_returns() {
        let a = Runtime::builder().build().unwrap();
        let b = Runtime::builder().build().unwrap();
        let weak_a = Arc::downgrade(&a.handle().scheduler);
        let ga = enter(a.handle().scheduler.clone());
        let mut a = Some(a);
        with_current(|current| {
            let current = current.unwrap();
            assert!(Arc::ptr_eq(current, &weak_a.upgrade().unwrap()));
            let gb = enter(b.handle().scheduler.clone());
            drop_out_of_order(ga);
            drop(gb);
            drop(a.take());
            // Only the retired count keeps it now.
            assert_eq!(Arc::strong_count(current), 1);
            assert!(weak_a.upgrade().is_some(), "dropped while borrowed");
        });
        assert!(weak_a.upgrade().is_none(), "the retired scheduler leaked");
    }
}
