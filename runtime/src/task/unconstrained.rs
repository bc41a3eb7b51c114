//! `unconstrained`: a future polled without the operation budget.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polls `future` with no operation budget (tokio's
/// `task::unconstrained`): its socket operations and completed sleeps never
/// make it yield. For a future that must see every ready event of one poll
/// -- a `FuturesUnordered` of many timers in a benchmark -- at the price
/// of the fairness the budget gives: while it keeps finding work, its
/// worker runs nothing else. The budget of the task's poll is back after
/// each poll of `future`.
///
/// ```
/// # let rt = wq::Runtime::new().unwrap();
/// rt.block_on(async {
///     let n = wq::task::unconstrained(async {
///         let mut n = 0;
///         // 1,000 sleeps already due complete in one poll of the task.
///         for _ in 0..1_000 {
///             wq::time::sleep(std::time::Duration::ZERO).await;
///             n += 1;
///         }
///         n
///     })
///     .await;
///     assert_eq!(n, 1_000);
/// });
/// ```
pub fn unconstrained<F: Future>(future: F) -> Unconstrained<F> {
    Unconstrained { future }
}

/// The future of [`unconstrained`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Unconstrained<F> {
    future: F,
}

impl<F: Future> Future for Unconstrained<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: structural pinning of `future`, never moved out of a
        // pinned `Unconstrained` (no `Drop` impl, no method that moves it).
        let future = unsafe { self.map_unchecked_mut(|u| &mut u.future) };
        crate::coop::unconstrained(|| future.poll(cx))
    }
}
