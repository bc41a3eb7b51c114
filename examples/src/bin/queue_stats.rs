//! A queue's statistics (`docs/guide/queue-stats.md`), in the kernel's
//! vocabulary (`PWQ_STAT_*`): items started and completed, CPU time,
//! items found CPU-intensive, concurrency-management wakeups, items
//! repatriated, and the items in flight, active and waiting now.
//!
//! ```sh
//! cargo run -p wq-examples --bin queue_stats
//! ```

use std::time::Duration;

use wq::Workqueue;
use wq_examples::check;

const USAGE: &str =
    "usage: queue_stats (no arguments): runs items on a named workqueue and prints its stats";

#[wq::main(scope = "system")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    wq_examples::no_arguments("queue_stats", USAGE);
    let q = Workqueue::builder("reports")
        .max_active(2)
        .build(&wq::Handle::current())?;
    // Ten items that each wait 10 ms (two at a time), one that blocks in
    // block_in_place, one that panics.
    for _ in 0..10 {
        drop(q.spawn(wq::time::sleep(Duration::from_millis(10))));
    }
    drop(q.spawn(async {
        // Work queued in its pool (64 tasks of 100 us on the default
        // queue) as it blocks: its pool wakes or starts another worker for
        // that work meanwhile, a concurrency-management wakeup. (With
        // nothing queued there, a block wakes nobody and counts none; nor
        // does it when a worker is already on its way to that work, woken
        // by the spawns: so it is usually 1 here, sometimes 0.)
        let work: Vec<_> = (0..64)
            .map(|_| wq::spawn(spin(Duration::from_micros(100))))
            .collect();
        wq::block_in_place(|| std::thread::sleep(Duration::from_millis(20)));
        futures::future::join_all(work).await;
    }));
    // Its message comes back in its JoinError; the default hook would also
    // print it (and, with RUST_BACKTRACE set, a backtrace) on stderr. Only
    // that panic is kept quiet: any other meanwhile (stdout full, a bug)
    // is reported as usual.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"a report failed") {
            report(info);
        }
    }));
    let panicked = q.spawn(async { panic!("a report failed") });
    let s = q.stats();
    wq_examples::say!(
        "while running: in flight {}, active {}, inactive {}",
        s.in_flight,
        s.active,
        s.inactive
    );
    check(s.active <= 2, "more items active than max_active")?;
    q.flush().await;
    let joined = panicked.await;
    // The default hook back: a later panic (a bug) is reported.
    drop(std::panic::take_hook());
    let s = q.stats();
    wq_examples::say!(
        "after flush:   started {}, completed {}, cpu_time {:.1?}, cpu_intensive {}, cm_wakeups {}, repatriated {}, in flight {}",
        s.started,
        s.completed,
        s.cpu_time,
        s.cpu_intensive,
        s.cm_wakeups,
        s.repatriated,
        s.in_flight
    );
    let panic = joined.as_ref().err().filter(|e| e.is_panic());
    wq_examples::say!(
        "the panicking item: {}",
        joined
            .as_ref()
            .err()
            .map_or("no panic".into(), |e| e.to_string())
    );
    check(
        panic.is_some(),
        "the panicking item did not end in its panic",
    )?;
    check(
        s.started == 12 && s.completed == 12 && s.in_flight == 0,
        "the stats do not count the 12 items",
    )?;
    // Short items, one pod (system scope): none CPU-intensive, none
    // repatriated.
    check(
        s.cpu_intensive == 0 && s.repatriated == 0,
        "an item counted CPU-intensive or repatriated",
    )?;
    Ok(())
}

/// Keeps its CPU busy for `d`.
async fn spin(d: Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}
