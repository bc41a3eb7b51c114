//! Flush and drain (`docs/guide/flush-and-drain.md`): a flush returns once
//! everything queued before it has finished; a drain goes on until the
//! queue is empty, and refuses work from outside the queue meanwhile,
//! while the queue's own items may still chain more.
//!
//! ```sh
//! cargo run -p wq-examples --bin flush_drain
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::channel::oneshot;
use wq::Workqueue;
use wq_examples::check;

const USAGE: &str = "usage: flush_drain (no arguments): flushes and drains a named workqueue and says what each waited for";

#[wq::main(scope = "system")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    wq_examples::no_arguments("flush_drain", USAGE);
    let q = Workqueue::builder("uploads")
        .max_active(4)
        .build(&wq::Handle::current())?;

    // Flush: sixteen items, four at a time; flush returns when all are done.
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..16 {
        let done = done.clone();
        drop(q.spawn(async move {
            wq::time::sleep(Duration::from_millis(5)).await;
            done.fetch_add(1, Ordering::SeqCst);
        }));
    }
    q.flush().await;
    let flushed = done.load(Ordering::SeqCst);
    wq_examples::say!("flush: returned with {flushed} of 16 items done");
    check(
        flushed == 16,
        "flush returned before the items queued before it",
    )?;

    // Drain: an item of the queue chains another onto it (allowed); an
    // outside spawn made while the drain is on is refused. The first item
    // waits until the outside spawn was tried, so the drain is still on.
    let (started_tx, started) = oneshot::channel::<()>();
    let (tried_tx, tried) = oneshot::channel::<()>();
    let chained = Arc::new(AtomicUsize::new(0));
    let (own, c) = (q.clone(), chained.clone());
    drop(q.spawn(async move {
        let _ = started_tx.send(());
        let _ = tried.await;
        drop(own.spawn(async move {
            c.fetch_add(1, Ordering::SeqCst);
        }));
    }));
    let outside = async {
        let _ = started.await;
        let refused = q.try_spawn(async {}).map(drop);
        let _ = tried_tx.send(());
        refused
    };
    let ((), refused) = futures::join!(q.drain(), outside);
    match &refused {
        Err(e) => wq_examples::say!("drain: an outside spawn was refused: {e}"),
        Ok(()) => wq_examples::say!("drain: an outside spawn was accepted"),
    }
    check(
        refused.is_err_and(|e| e.is_draining()),
        "an outside spawn during the drain was not refused as draining",
    )?;
    let stats = q.stats();
    wq_examples::say!(
        "drain: returned with the chained item done ({}) and {} in flight",
        chained.load(Ordering::SeqCst),
        stats.in_flight
    );
    check(
        chained.load(Ordering::SeqCst) == 1 && stats.in_flight == 0,
        "drain returned before the chained item",
    )?;
    // After the drain, outside work is welcome again.
    q.spawn(async {}).await?;
    wq_examples::say!("after the drain: an outside spawn runs");
    Ok(())
}
