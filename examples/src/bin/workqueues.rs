//! Named workqueues, one of each kind: a bounded queue, an ordered one, a
//! high-priority one overtaking a backlog, a CPU-intensive one, a flush,
//! a drain, a setting changed while running, and the stats in the kernel's
//! vocabulary.
//!
//! ```sh
//! cargo run -p wq-examples --bin workqueues
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wq::{Scope, Workqueue};
use wq_examples::busy;

const USAGE: &str = "usage: workqueues (no arguments): runs the named-workqueue demo and prints what each queue did";

#[wq::main(scope = "system")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    wq_examples::no_arguments("workqueues", USAGE);
    let handle = wq::Handle::current();

    // At most 4 items at once; the rest wait their turn, in order.
    let bounded = Workqueue::builder("bounded")
        .scope(Scope::Cache)
        .max_active(4)
        .build(&handle)?;
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    for _ in 0..32 {
        let (running, most) = (running.clone(), most.clone());
        drop(bounded.spawn(async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            for _ in 0..10 {
                wq::task::yield_now().await;
            }
            running.fetch_sub(1, Ordering::SeqCst);
        }));
    }
    // Everything spawned above has finished once flush returns.
    bounded.flush().await;
    wq_examples::say!(
        "bounded: 32 items, at most {} at once (max_active {})",
        most.load(Ordering::SeqCst),
        bounded.max_active()
    );

    // One at a time, in submission order.
    let ordered = Workqueue::builder("ordered").ordered().build(&handle)?;
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    for i in 0..8 {
        let log = log.clone();
        drop(ordered.spawn(async move { log.lock().unwrap().push(i) }));
    }
    ordered.drain().await;
    wq_examples::say!("ordered: ran {:?}", log.lock().unwrap());

    // High priority: its own pools, ahead of another queue's backlog.
    let normal = Workqueue::builder("backlog").build(&handle)?;
    let urgent = Workqueue::builder("urgent").highpri().build(&handle)?;
    let done = Arc::new(AtomicUsize::new(0));
    let backlog: Vec<_> = (0..64)
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
    wq_examples::say!("highpri: ran with {seen} of 64 backlog items done");
    for h in backlog {
        h.await?;
    }

    // CPU-intensive items do not hold up the pool's other work.
    let crunch = Workqueue::builder("crunch")
        .cpu_intensive()
        .build(&handle)?;
    let heavy = crunch.spawn(async { busy(30) });
    let light = wq::spawn(async { "light work done" }).await?;
    heavy.await?;
    wq_examples::say!("cpu_intensive: {light} beside a 30 ms item");

    // Changed while running: later items go to the new scope's pods.
    bounded.set_scope(Scope::System);
    bounded.set_max_active(16)?;
    bounded.spawn(async {}).await?;

    // Flushed first: an awaited item's end is counted a moment after.
    for q in [&bounded, &ordered, &crunch] {
        q.flush().await;
    }
    for s in [bounded.stats(), ordered.stats(), crunch.stats()] {
        wq_examples::say!(
            "{:<8} started {:>3} completed {:>3} cpu {:>8.1?} cpu_intensive {} cm_wakeups {} in flight {} (scope {}, max_active {})",
            s.name,
            s.started,
            s.completed,
            s.cpu_time,
            s.cpu_intensive,
            s.cm_wakeups,
            s.in_flight,
            s.attrs.scope,
            s.attrs.max_active
        );
    }
    Ok(())
}
