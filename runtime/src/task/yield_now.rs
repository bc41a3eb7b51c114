//! `yield_now`: let other tasks of the pool run.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Yields to the scheduler once: the task goes to the back of its worker's
/// queue, behind the work already waiting there, instead of into the LIFO
/// slot.
///
/// ```
/// # let rt = wq::Runtime::new().unwrap();
/// rt.block_on(async {
///     let h = wq::spawn(async {
///         for _ in 0..3 {
///             wq::task::yield_now().await;
///         }
///         7
///     });
///     assert_eq!(h.await.unwrap(), 7);
/// });
/// ```
pub async fn yield_now() {
    YieldNow { yielded: false }.await
}

struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        // Woken while running: the scheduler queues it behind the others.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
