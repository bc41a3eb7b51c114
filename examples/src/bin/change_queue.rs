//! Changing a queue while it runs (`docs/guide/changing-queues.md`), as
//! the kernel's sysfs knobs do: `set_scope` sends later items to the new
//! scope's pods; `set_max_active` raised starts waiting items at once.
//!
//! The runtime is given a synthetic topology of 4 CPUs in 2 packages, so
//! the scopes differ on any machine.
//!
//! ```sh
//! cargo run -p wq-examples --bin change_queue
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::channel::oneshot;
use wq::{Scope, Workqueue};
use wq_examples::check;

const USAGE: &str = "usage: change_queue (no arguments): changes a named workqueue's scope and max_active while it runs";

/// The CPUs of the pools that polled something between two snapshots.
fn pools_that_ran(before: &wq::metrics::Snapshot, after: &wq::metrics::Snapshot) -> Vec<String> {
    after
        .delta(before)
        .pools
        .iter()
        .filter(|p| p.sched_delay.count > 0)
        .map(|p| format!("{} pool of CPUs {:?}", p.scope, p.cpus))
        .collect()
}

#[wq::main(topology = "pack:2 core:2 pu:1")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    wq_examples::no_arguments("change_queue", USAGE);
    let handle = wq::Handle::current();
    let q = Workqueue::builder("resize")
        .scope(Scope::Cpu)
        .build(&handle)?;

    // Scope: an item submitted "on CPU 3" runs in CPU 3's pool, then, once
    // the scope is `system`, in the pool of all four.
    let before = handle.metrics();
    q.spawn_on_cpu(3, async {}).await?;
    let at_cpu = pools_that_ran(&before, &handle.metrics());
    wq_examples::say!("scope cpu: the item ran in the {}", at_cpu.join(", "));
    q.set_scope(Scope::System);
    let before = handle.metrics();
    q.spawn_on_cpu(3, async {}).await?;
    let at_system = pools_that_ran(&before, &handle.metrics());
    wq_examples::say!("scope system: the item ran in the {}", at_system.join(", "));
    check(
        at_cpu == ["cpu pool of CPUs [3]"] && at_system == ["system pool of CPUs [0, 1, 2, 3]"],
        "the item did not follow the scope",
    )?;

    // max_active: one item holds the only slot; seven wait. Raised to 8,
    // the seven start at once, beside the first.
    q.set_max_active(1)?;
    let (release, held) = oneshot::channel::<()>();
    let held = held.shared();
    let started = Arc::new(AtomicUsize::new(0));
    let items: Vec<_> = (0..8)
        .map(|_| {
            let (held, started) = (held.clone(), started.clone());
            q.spawn(async move {
                started.fetch_add(1, Ordering::SeqCst);
                let _ = held.await;
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while started.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        wq::time::sleep(Duration::from_millis(1)).await;
    }
    // Time for others to start, were the limit not kept.
    wq::time::sleep(Duration::from_millis(20)).await;
    let before_raise = started.load(Ordering::SeqCst);
    wq_examples::say!("max_active 1: {before_raise} of 8 items started");
    check(
        before_raise == 1,
        "more than one item ran under max_active 1",
    )?;
    q.set_max_active(8)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while started.load(Ordering::SeqCst) < 8 && Instant::now() < deadline {
        wq::time::sleep(Duration::from_millis(1)).await;
    }
    let after_raise = started.load(Ordering::SeqCst);
    wq_examples::say!("max_active 8: {after_raise} of 8 items started, the first still running");
    check(after_raise == 8, "raising max_active left items waiting")?;
    let _ = release.send(());
    for item in items {
        item.await?;
    }
    wq_examples::say!("{:?}", q.stats().attrs);
    Ok(())
}
