//! [`timeout`], [`timeout_at`], [`Timeout`] and [`Elapsed`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::Sleep;
use crate::scheduler::Scheduler;

/// Runs `future` for at most `duration`: `Ok(output)` if it completes in
/// time, `Err(Elapsed)` otherwise (the future is dropped with the
/// `Timeout`).
///
/// The future is polled before the timer, and once more when the timer
/// is found elapsed while the task's budget lasts (the deadline may have
/// passed since the first poll: this thread may have been preempted
/// between the two), so a future that is ready when the deadline passes
/// is not timed out; and the timer never fires before `duration` has
/// passed. The timer is armed at the first poll that finds the future
/// pending: a future ready at once costs no timer (nor, on a runtime that
/// only computes, its I/O driver).
///
/// # Panics
/// Outside a wq runtime, as [`sleep`](super::sleep); at a poll that
/// waits with the deadline still ahead, if the runtime's driver cannot be
/// created (no file descriptors left) or the runtime has shut down (the
/// message then names `wq::time::Sleep` if the runtime had made its
/// driver before and a `Handle` of it is still alive, `wq::time::timeout`
/// otherwise). Past its deadline it gives `Err(Elapsed)` instead.
///
/// ```
/// use std::time::Duration;
/// use wq::time::{sleep, timeout};
///
/// #[wq::main]
/// async fn main() {
///     assert_eq!(timeout(Duration::from_secs(5), async { 7 }).await, Ok(7));
///     let err = timeout(Duration::from_millis(5), sleep(Duration::from_secs(5))).await.unwrap_err();
///     assert_eq!(err.to_string(), "deadline has elapsed");
/// }
/// ```
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    Timeout::new("wq::time::timeout", super::deadline_in(duration), future)
}

/// Runs `future` until `deadline` at most: as [`timeout`], with the
/// deadline given as an instant (a deadline already past still polls the
/// future: a ready one is not timed out).
///
/// # Panics
/// As [`timeout`]: outside a wq runtime, and at a poll that waits with
/// the deadline still ahead once the runtime's driver is gone or cannot
/// be created.
///
/// ```
/// use std::time::{Duration, Instant};
/// use wq::time::{sleep, timeout_at};
///
/// #[wq::main]
/// async fn main() {
///     let deadline = Instant::now() + Duration::from_millis(5);
///     assert!(timeout_at(deadline, sleep(Duration::from_secs(5))).await.is_err());
///     assert_eq!(timeout_at(deadline, async { 7 }).await, Ok(7));
/// }
/// ```
pub fn timeout_at<F: Future>(deadline: std::time::Instant, future: F) -> Timeout<F> {
    Timeout::new("wq::time::timeout_at", deadline, future)
}

/// The future of [`timeout`] and [`timeout_at`].
#[must_use = "a Timeout does nothing unless .awaited or polled"]
pub struct Timeout<F> {
    future: F,
    deadline: Instant,
    timer: Timer,
}

/// A [`Timeout`]'s timer, armed only once its future is first pending: a
/// future ready at its first poll needs none, and a runtime that only
/// computes then creates no I/O driver (its epoll and eventfd) for it.
enum Timer {
    /// The runtime it was made in, whose driver will time it (weak: a
    /// `Timeout` does not keep its runtime's pools alive).
    Unarmed(Weak<Scheduler>, &'static str),
    Armed(Sleep),
}

impl<F> Timeout<F> {
    /// `future` until `deadline`, on the current runtime's timers; panics
    /// naming `what` outside a runtime (as a `Sleep` does).
    fn new(what: &'static str, deadline: Instant, future: F) -> Timeout<F> {
        let scheduler = crate::scheduler::context::with_current(|s| s.map(Arc::downgrade))
            .unwrap_or_else(|| crate::scheduler::context::outside(what));
        Timeout {
            future,
            deadline,
            timer: Timer::Unarmed(scheduler, what),
        }
    }

    /// The future inside.
    pub fn get_ref(&self) -> &F {
        &self.future
    }

    /// The future inside, mutably.
    pub fn get_mut(&mut self) -> &mut F {
        &mut self.future
    }

    /// Gives the future back, cancelling the timer.
    pub fn into_inner(self) -> F {
        self.future
    }

    /// When it times out.
    pub fn deadline(&self) -> std::time::Instant {
        self.deadline
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of `future` only: it is never moved
        // out of a pinned `Timeout` (`into_inner` takes an unpinned one,
        // and there is no `Drop` impl); `timer` is `Unpin` and used
        // through a plain reference.
        let this = unsafe { self.get_unchecked_mut() };
        // SAFETY: see above.
        let mut future = unsafe { Pin::new_unchecked(&mut this.future) };
        let had_budget = crate::coop::has_budget();
        if let Poll::Ready(out) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        if let Timer::Unarmed(scheduler, what) = &this.timer {
            let driver = match scheduler.upgrade() {
                Some(s) => s.services.driver(&s).cloned(),
                None => Err(crate::driver::scheduled_io::shutdown_error()),
            };
            match driver {
                Ok(driver) => this.timer = Timer::Armed(Sleep::new(driver, this.deadline)),
                // As a `Sleep` polled after its runtime shut down: done if
                // its deadline has passed, else nothing would fire it.
                Err(_) if Instant::now() >= this.deadline => return Poll::Ready(Err(Elapsed(()))),
                Err(e) => panic!("{what}: the runtime's timer driver is unavailable: {e}"),
            }
        }
        let Timer::Armed(sleep) = &mut this.timer else {
            unreachable!("armed above")
        };
        // The inner future spent the budget (a read loop on a socket that
        // stays ready): the deadline is checked with none, or it would
        // never fire (`coop`).
        let sleep = Pin::new(sleep);
        let elapsed = if had_budget && !crate::coop::has_budget() {
            crate::coop::unconstrained(|| sleep.poll(cx))
        } else {
            sleep.poll(cx)
        };
        match elapsed {
            // The deadline passed, perhaps after the poll above (a
            // preemption between the two): a future whose own deadline
            // (a sleep inside it, say) was at or before this one's is
            // ready by now, and wins. Polled at most once more per
            // timeout (the `Timeout` is done after this).
            // Not once the budget is spent: a future that stays ready (a
            // read loop on a busy socket) would run unbounded, unconstrained,
            // and the timeout never fire; with none left it could only yield.
            Poll::Ready(()) if crate::coop::has_budget() => match future.poll(cx) {
                Poll::Ready(out) => Poll::Ready(Ok(out)),
                Poll::Pending => Poll::Ready(Err(Elapsed(()))),
            },
            Poll::Ready(()) => Poll::Ready(Err(Elapsed(()))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<F> fmt::Debug for Timeout<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// The error of a [`timeout`] whose deadline passed first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(e: Elapsed) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::TimedOut, e)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::Duration;

    /// A future ready at its first poll needs no timer: a runtime that
    /// only computes creates no I/O driver (epoll, eventfd: descriptors a
    /// process out of them could not open) for its timeouts; one that
    /// waits arms it then.
    #[test]
    fn a_timeout_arms_its_timer_only_once_its_future_waits() {
        let rt = crate::Runtime::new().unwrap();
        let services = &rt.handle().scheduler.services;
        let ready =
            rt.block_on(async { super::timeout(Duration::from_secs(1), async { 7 }).await });
        assert_eq!(ready, Ok(7));
        assert!(
            !services.has_driver(),
            "a ready future's timeout made a driver"
        );
        let waited = rt.block_on(async {
            super::timeout(Duration::from_millis(5), std::future::pending::<()>()).await
        });
        assert!(waited.is_err());
        assert!(services.has_driver());
    }

    /// A timeout first polled after its runtime shut down, its deadline
    /// past, has elapsed (as a `Sleep` then completes): it panicked, its
    /// timer never armed on a driver that no longer could be made.
    #[test]
    fn a_timeout_past_its_deadline_after_the_shutdown_has_elapsed() {
        let rt = crate::Runtime::new().unwrap();
        let t = {
            let _in = rt.enter();
            super::timeout(Duration::from_millis(1), std::future::pending::<()>())
        };
        drop(rt);
        std::thread::sleep(Duration::from_millis(5));
        assert!(futures::executor::block_on(t).is_err());
    }
}
