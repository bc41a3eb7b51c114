//! A task's **operation budget**: I/O operations per poll (tokio's
//! "coop"), so that a socket that stays ready does not hold its task, and
//! its worker, for good.
//!
//! # Protocol
//! - A poll of a task by a worker or the rescuer, and each poll of
//!   `block_on`'s future, runs with a budget of [`PER_POLL`] operations
//!   ([`with_budget`]; after the poll, even one that unwinds, the thread
//!   has the budget it had before: none, unless the poll was nested in
//!   another, as a `block_on` inside `block_on`'s future is, whose budget
//!   goes on). Anywhere else (a wq future polled by another executor)
//!   there is no budget: no limit.
//! - Every readiness check of a socket (`ScheduledIo::poll_ready`, which
//!   every read, write, accept, connect and datagram goes through) asks
//!   [`poll_proceed`] first. With the budget spent, the task is woken
//!   (`wake_by_ref` while it runs: queued behind its worker's other work,
//!   as `yield_now` is) and the operation returns `Pending`, touching
//!   neither the readiness nor the waiters; else an operation that finds
//!   its socket ready takes one unit ([`spend`]).
//! - A [`Sleep`](crate::time::Sleep) is an operation too: a poll with the
//!   budget spent is `Pending` (the task woken), a completion takes a unit;
//!   so a loop over sleeps already due (`sleep(Duration::ZERO)`, a backoff
//!   of zero, timeouts that elapsed) yields its worker as a socket loop
//!   does. A [`timeout`](crate::time::timeout) whose inner future spent
//!   the budget polls its sleep with none ([`has_budget`] before and
//!   after), so the deadline still fires (tokio's rule).
//! - Awaiting a [`JoinHandle`](crate::task::JoinHandle) is an operation
//!   too (as tokio's): a loop joining handles already done yields its
//!   worker every 128.
//! - So a loop over a socket that stays ready (a peer that sends faster
//!   than the task reads, a flood of connections to accept) gives its
//!   worker back every 128 operations: the task's other futures
//!   (`timeout`, `select!`) are polled, and the pool's other tasks run.
//!   Without it, `timeout(d, read_loop)` never fired while the peer kept
//!   sending (`tests/net.rs`,
//!   `a_read_loop_on_a_socket_that_stays_ready_is_timed_out`).
//!
//! - `wq::block_in_place` runs its closure with no budget ([`unconstrained`],
//!   the poll's budget given back after it): a closure that drives wq I/O
//!   synchronously (`futures::executor::block_on` on a socket) after its
//!   task's poll spent the budget would otherwise be told `Pending` and
//!   woken at once, for ever.
//!
//! - A foreign executor nested inside a task's poll (a `Drop`, or code
//!   that calls `futures::executor::block_on` on a wq socket or timer)
//!   runs on the poll's budget: once spent, every operation there is
//!   `Pending` and wakes itself, and the nested `block_on` spins. Blocking
//!   belongs in `wq::block_in_place` (no budget), or the nested future in
//!   `wq::task::unconstrained`.
//!
//! The budget is a thread-local count: a poll sets it and clears it (two
//! stores; about 8 instructions per poll with the guard, by callgrind), an
//! operation reads and decrements it. A poll nested in another on one
//! thread (a `Runtime::block_on` inside a future polled by another
//! executor there) leaves the outer poll with no budget: no limit, never a
//! spent one.

use std::cell::Cell;
use std::task::{Context, Poll};

/// Operations per poll (tokio's value).
pub(crate) const PER_POLL: u32 = 128;

/// No budget: a poll by no wq runtime.
const UNCONSTRAINED: u32 = u32::MAX;

thread_local! {
    static BUDGET: Cell<u32> = const { Cell::new(UNCONSTRAINED) };
}

/// Runs `poll` (one poll of a task) with a fresh budget, then gives the
/// thread the budget it had back, also if `poll` unwinds: none outside a
/// poll (a foreign executor polling wq I/O on this thread later must not
/// find a spent one); the rest of the outer poll's for a nested one (a
/// `block_on` inside `block_on`'s future goes on with it).
#[inline]
pub(crate) fn with_budget<R>(poll: impl FnOnce() -> R) -> R {
    struct Restore(u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            BUDGET.with(|b| b.set(self.0));
        }
    }
    let _restore = Restore(BUDGET.with(|b| b.replace(PER_POLL)));
    poll()
}

/// Runs `f` with no budget, then gives the thread's budget back (also if
/// `f` unwinds).
pub(crate) fn unconstrained<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(u32);
    impl Drop for Restore {
        fn drop(&mut self) {
            BUDGET.with(|b| b.set(self.0));
        }
    }
    let _restore = Restore(BUDGET.with(|b| b.replace(UNCONSTRAINED)));
    f()
}

/// `Ready` if the polling task may do one more operation; with its budget
/// spent, wakes it and says `Pending`.
#[inline]
pub(crate) fn poll_proceed(cx: &mut Context<'_>) -> Poll<()> {
    if BUDGET.with(Cell::get) == 0 {
        cx.waker().wake_by_ref();
        Poll::Pending
    } else {
        Poll::Ready(())
    }
}

/// Whether the running poll has budget left (always, outside a budgeted
/// poll).
#[inline]
pub(crate) fn has_budget() -> bool {
    BUDGET.with(Cell::get) != 0
}

/// An operation found its socket ready: one unit of the budget.
#[inline]
pub(crate) fn spend() {
    BUDGET.with(|b| {
        let n = b.get();
        if n != UNCONSTRAINED {
            b.set(n.saturating_sub(1));
        }
    });
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_poll_has_128_operations_then_yields_and_outside_one_there_is_no_limit() {
        let cx = &mut Context::from_waker(std::task::Waker::noop());
        for _ in 0..1000 {
            assert!(poll_proceed(cx).is_ready());
            spend();
        }
        with_budget(|| {
            for _ in 0..PER_POLL {
                assert!(poll_proceed(cx).is_ready());
                spend();
            }
            assert!(poll_proceed(cx).is_pending());
        });
        assert!(
            poll_proceed(cx).is_ready(),
            "unlimited again after the poll"
        );
        let unwound = std::panic::catch_unwind(|| {
            with_budget(|| {
                for _ in 0..PER_POLL {
                    spend();
                }
                panic!("in the poll");
            })
        });
        assert!(unwound.is_err());
        assert!(
            poll_proceed(cx).is_ready(),
            "unlimited after an unwinding poll"
        );
        // `block_in_place`'s closure has none, and the poll's comes back.
        with_budget(|| {
            for _ in 0..PER_POLL {
                spend();
            }
            unconstrained(|| assert!(poll_proceed(cx).is_ready()));
            assert!(poll_proceed(cx).is_pending());
        });
    }
}
