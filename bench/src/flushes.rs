//! `wq-bench flushes`: many flushes of one named workqueue at once, as a
//! service whose every request queues an item and flushes (waits for its
//! earlier items) before it answers. What it measures is how the flushes
//! in line scale with their number: each flush is woken once, when it is
//! done (`runtime/src/scheduler/queue/mod.rs`, "Flush colors"), so the
//! time per flush should stay level as the line grows.

use std::time::{Duration, Instant};

use crate::args::Args;

/// Runs the subcommand (see `wq-bench flushes --help`).
pub fn main(argv: &[String], command: &str) -> Result<(), String> {
    let a = Args::parse(argv.iter().cloned(), &[])?;
    a.check_known(&["concurrent", "repeat", "workers"])?;
    let counts: Vec<usize> = a.list("concurrent", vec![10, 100, 1000, 3000, 10000])?;
    if counts.contains(&0) {
        return Err("--concurrent takes counts of at least 1".into());
    }
    let repeat: usize = a.count("repeat", 5)?;
    let workers: usize = a.count("workers", crate::machine::online_cpus())?;
    if workers == 0 || repeat == 0 {
        return Err("--workers and --repeat must be at least 1".into());
    }
    let rt = wq::Runtime::builder()
        .default_scope(wq::Scope::System)
        .max_workers_per_pool(workers)
        .build()
        .map_err(|e| e.to_string())?;
    out!("{}", crate::machine::header(command));
    outln!(
        "# N tasks at once, each spawning an item (a sleep of 0-600 us) on one named queue and flushing it; time until every flush returned, medians of {repeat}\n"
    );
    outln!("{:>8} {:>12} {:>14}", "N", "all done", "per flush");
    for &n in &counts {
        let mut runs = Vec::with_capacity(repeat);
        for _ in 0..repeat {
            runs.push(round(&rt, n).as_secs_f64());
        }
        let median = crate::stats::median(&runs);
        outln!(
            "{:>8} {:>9.2} ms {:>11.2} us",
            n,
            median * 1e3,
            median * 1e6 / n as f64
        );
    }
    Ok(())
}

/// One round of `n` flushing tasks; how long until all returned.
fn round(rt: &wq::Runtime, n: usize) -> Duration {
    let q = wq::Workqueue::builder("flushes")
        .build(rt.handle())
        .expect("a queue with the default settings");
    let start = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let q = q.clone();
                wq::spawn(async move {
                    let sleep = Duration::from_micros((i % 7) as u64 * 100);
                    drop(q.spawn(wq::time::sleep(sleep)));
                    q.flush().await;
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("a flushing task");
        }
    });
    start.elapsed()
}
