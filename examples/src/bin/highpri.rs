//! High-priority workqueues (`docs/guide/priorities.md`): a `highpri()`
//! queue's items run on pools of their own, whose workers run at nice -20
//! where the process may, so they do not wait behind another queue's
//! backlog.
//!
//! ```sh
//! cargo run -p wq-examples --bin highpri
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wq::Workqueue;
use wq_examples::{busy, check};

const USAGE: &str = "usage: highpri (no arguments): an urgent item on a high-priority queue overtakes another queue's backlog";

#[wq::main(scope = "system")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    wq_examples::no_arguments("highpri", USAGE);
    let handle = wq::Handle::current();
    let normal = Workqueue::builder("backlog").build(&handle)?;
    let urgent = Workqueue::builder("urgent").highpri().build(&handle)?;

    // 128 items of 2 ms of CPU each, more than the CPUs can run at once.
    let done = Arc::new(AtomicUsize::new(0));
    let backlog: Vec<_> = (0..128)
        .map(|_| {
            let done = done.clone();
            normal.spawn(async move {
                busy(2);
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let d = done.clone();
    let seen = urgent
        .spawn(async move { d.load(Ordering::SeqCst) })
        .await?;
    wq_examples::say!("urgent: ran with {seen} of 128 backlog items done");
    for item in backlog {
        item.await?;
    }
    check(
        seen < 128,
        "the high-priority item waited for the whole backlog",
    )?;
    wq_examples::say!(
        "urgent queue: {:?}; backlog queue: {:?}",
        urgent.stats().attrs,
        normal.stats().attrs
    );
    Ok(())
}
