//! CPU hogs (`docs/guide/cpu-hogs.md`): a poll longer than the runtime's
//! `cpu_hog_threshold` (10 ms) is found by the watchdog, counted as
//! `cpu_intensive`, reported once through the `log` facade, and its pool
//! may start a worker beyond its maximum meanwhile, so the short tasks
//! behind it keep completing.
//!
//! The runtime has one worker per pool here (`workers = 1`), so without
//! the watchdog the short tasks would wait for the whole hog.
//!
//! ```sh
//! cargo run -p wq-examples --bin cpu_hogs
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wq::Workqueue;
use wq_examples::check;

const USAGE: &str = "usage: cpu_hogs (no arguments): a 50 ms poll is found as a CPU hog while short tasks on its pool keep completing";

const SHORT: usize = 20;

#[wq::main(scope = "system", workers = 1)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    wq_examples::no_arguments("cpu_hogs", USAGE);
    let q = Workqueue::builder("crunch").build(&wq::Handle::current())?;
    let (started_tx, started) = futures::channel::oneshot::channel::<()>();
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    // A poll of at least 50 ms that never yields; it goes on (up to 30 s:
    // a loaded machine can hold the watchdog's grant back for seconds)
    // until the short tasks are done, to show they did not wait for it.
    let hog = q.spawn(async move {
        let _ = started_tx.send(());
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(50)
            || (d.load(Ordering::SeqCst) < SHORT && start.elapsed() < Duration::from_secs(30))
        {
            std::hint::spin_loop();
        }
        (start.elapsed(), d.load(Ordering::SeqCst))
    });
    let _ = started.await;
    let short: Vec<_> = (0..SHORT)
        .map(|_| {
            let done = done.clone();
            q.spawn(async move {
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let (hogged, done_during) = hog.await?;
    for s in short {
        s.await?;
    }
    let stats = q.stats();
    wq_examples::say!(
        "hog: polled {hogged:.1?}; {done_during} of {SHORT} short tasks completed meanwhile; cpu_intensive {}",
        stats.cpu_intensive
    );
    check(done_during == SHORT, "the short tasks waited for the hog")?;
    check(
        stats.cpu_intensive == 1,
        "the hog was not counted as cpu_intensive",
    )?;
    Ok(())
}
