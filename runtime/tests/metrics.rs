//! Metrics through the public API: the latency histograms count what ran,
//! a delay made on purpose shows at p99, deltas are the interval's, and the
//! Prometheus text parses (with a parser here, and with Prometheus'
//! `promtool` where `scripts/setup` installed it). Each test runs under a
//! watchdog: a wait that never ends is a failure, not a hung test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wq::metrics::{BUCKET_BOUNDS_SECONDS, Snapshot};
use wq::{Runtime, Scope, Topology, Workqueue};

use common::within;

/// Waits (at most 20 s) until `f` holds for a snapshot; returns it.
fn eventually(rt: &Runtime, what: &str, f: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = rt.metrics();
        if f(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "never: {what}\n{m}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn one_pool(workers: usize) -> Runtime {
    Runtime::builder()
        .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
        .default_scope(Scope::System)
        .max_workers_per_pool(workers)
        // The test blocks a worker on purpose: no hog watchdog.
        .cpu_hog_threshold(Duration::ZERO)
        .latency_capture(true)
        .build()
        .unwrap()
}

/// Spawns made in a `block_on`'s future are in the next snapshot once it
/// returns: its thread flushes its spawn-call samples then (they waited
/// for that thread's 64th spawn, a spawn 100 ms later, or its exit).
#[test]
fn spawns_made_in_block_on_are_counted_when_it_returns() {
    within(60, || {
        let rt = one_pool(2);
        rt.block_on(async {
            for _ in 0..10 {
                drop(wq::spawn(async {}));
            }
        });
        assert_eq!(rt.metrics().pools[0].spawn_time.count, 10);
    });
}

#[test]
fn histogram_counts_equal_the_polls_and_spawns_made() {
    within(60, || {
        let rt = one_pool(2);
        const TASKS: u64 = 300;
        const YIELDS: u64 = 3;
        let handle = rt.handle().clone();
        // Spawned from a thread that then exits (its spawn-call sample is
        // flushed at exit); the inner spawns run on workers, which flush
        // theirs when they publish.
        std::thread::spawn(move || {
            let outer = handle.spawn(async {
                let inner: Vec<_> = (0..TASKS)
                    .map(|_| {
                        wq::spawn(async {
                            for _ in 0..YIELDS {
                                wq::task::yield_now().await;
                            }
                        })
                    })
                    .collect();
                for h in inner {
                    h.await.unwrap();
                }
            });
            handle.block_on(outer).unwrap();
        })
        .join()
        .unwrap();
        // The outer task: 1 poll, plus one per inner task it waits for at
        // most; the inner ones (YIELDS + 1) each.
        let min_polls = TASKS * (YIELDS + 1) + 1;
        let m = eventually(&rt, "every poll and spawn published", |m| {
            let p = &m.pools[0];
            p.counters.started >= min_polls
                && p.sched_delay.count == p.counters.started
                && p.poll_time.count == p.counters.started
                && p.spawn_time.count == TASKS + 1
                && p.workers.idle == p.workers.total
        });
        let p = &m.pools[0];
        assert_eq!(m.pools.len(), 1, "{m}");
        assert_eq!(p.counters.completed, p.counters.started);
        assert!(
            p.counters.started <= min_polls + TASKS,
            "at most one extra poll of the outer task per inner task: {m}"
        );
        // Latencies are sane: positive, ordered quantiles.
        for l in [&p.sched_delay, &p.poll_time, &p.spawn_time] {
            assert!(l.min_ns >= 1 && l.min_ns <= l.p50_ns, "{l:?}");
            assert!(l.p50_ns <= l.p90_ns && l.p90_ns <= l.p95_ns, "{l:?}");
            assert!(l.p95_ns <= l.p99_ns && l.p99_ns <= l.p999_ns, "{l:?}");
            assert!(l.p999_ns <= l.max_ns, "{l:?}");
            assert_eq!(*l.buckets.last().unwrap(), l.count, "all under 10 s");
        }
        // The scope aggregate is the pool (one pool).
        assert_eq!(m.scopes.len(), 1);
        assert_eq!(m.scopes[0].counters, p.counters);
        assert_eq!(m.scopes[0].sched_delay.count, p.sched_delay.count);
    });
}

/// A spawn through a named workqueue is timed when its item is released
/// at once, and not when the item waits on the inactive list (its pool is
/// chosen when it is released).
#[test]
fn named_queue_spawns_are_timed_whether_released_at_once_or_waiting() {
    within(60, || {
        let rt = one_pool(2);
        let wide = Workqueue::builder("wide").build(rt.handle()).unwrap();
        let one = Workqueue::builder("one")
            .max_active(1)
            .build(rt.handle())
            .unwrap();
        const WIDE: u64 = 50;
        const WAITING: u64 = 5;
        let (release_tx, release_rx) = futures::channel::oneshot::channel::<()>();
        // From a thread that then exits: its spawn-call samples are flushed
        // at exit.
        let handles = std::thread::spawn(move || {
            let mut hs: Vec<_> = (0..WIDE).map(|_| wide.spawn(async {})).collect();
            // `one`'s first item holds its only slot until released; the
            // ones after it wait on the inactive list, and are timed for the
            // pool the queue's settings give (the one pool here).
            hs.push(one.spawn(async move {
                let _ = release_rx.await;
            }));
            hs.extend((0..WAITING).map(|_| one.spawn(async {})));
            hs
        })
        .join()
        .unwrap();
        let m = eventually(&rt, "every spawn call published", |m| {
            m.pools[0].spawn_time.count == WIDE + 1 + WAITING
        });
        release_tx.send(()).unwrap();
        for h in handles {
            rt.block_on(h).unwrap();
        }
        let p = &m.pools[0];
        assert!(p.spawn_time.min_ns >= 1, "{m}");
        // Released later by the workers that freed the slot, the waiting
        // items are not timed again.
        let after = rt.metrics();
        assert_eq!(
            after.pools[0].spawn_time.count,
            WIDE + 1 + WAITING,
            "{after}"
        );
    });
}

#[test]
fn a_task_queued_behind_a_blocking_one_shows_the_wait_at_p99() {
    within(60, || {
        let rt = one_pool(1);
        const BLOCK: Duration = Duration::from_millis(200);
        const BEHIND: usize = 20;
        let (started_tx, started_rx) = mpsc::channel();
        let blocker = rt.spawn(async move {
            started_tx.send(Instant::now()).unwrap();
            // Blocks the pool's only worker (no block_in_place on purpose).
            std::thread::sleep(BLOCK);
        });
        let began = started_rx.recv().unwrap();
        // Queued while the only worker is blocked: each waits for the rest
        // of BLOCK.
        let behind: Vec<_> = (0..BEHIND).map(|_| rt.spawn(async {})).collect();
        let queued = Instant::now();
        rt.block_on(blocker).unwrap();
        for h in behind {
            rt.block_on(h).unwrap();
        }
        let least_wait = BLOCK.saturating_sub(queued - began);
        let m = eventually(&rt, "the delays published", |m| {
            m.pools[0].sched_delay.count >= (BEHIND + 1) as u64
        });
        let p = &m.pools[0];
        let p99 = Duration::from_nanos(p.sched_delay.p99_ns);
        // 1% histogram precision, and the worker's clock read before the
        // poll may be a little early.
        assert!(
            p99.as_secs_f64() >= least_wait.as_secs_f64() * 0.98,
            "p99 {p99:?} < the wait {least_wait:?}\n{m}"
        );
        assert!(p99 < BLOCK + Duration::from_secs(2), "p99 {p99:?}\n{m}");
        // The blocker's own poll is the longest poll.
        let poll_max = Duration::from_nanos(p.poll_time.max_ns);
        assert!(
            poll_max.as_secs_f64() >= BLOCK.as_secs_f64() * 0.99,
            "poll max {poll_max:?}"
        );
    });
}

/// Spins for `d` (a poll that uses its CPU, as a computation does).
fn spin_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// The scheduling delays recorded while `f` runs on `rt`'s pool: the
/// interval's histogram, once `samples` delays are published.
fn delays_of(rt: &Runtime, samples: u64, f: impl FnOnce()) -> wq::metrics::Latency {
    // The pool is made by its first spawn.
    rt.block_on(rt.spawn(async {})).unwrap();
    let before = eventually(rt, "the pool", |m| m.pools.len() == 1);
    let counted = before.pools[0].sched_delay.count;
    f();
    let after = eventually(rt, "the delays published", |m| {
        m.pools[0].sched_delay.count >= counted + samples
    });
    after.delta(&before).pools[0].sched_delay.clone()
}

/// A task that yields after a long poll (as the CPU-hog warning advises)
/// is queued when that poll has ended: its delay is the time to its next
/// poll, not its own poll's length (it was stamped with the poll's start).
#[test]
fn a_task_woken_during_its_own_poll_is_not_charged_that_poll() {
    within(60, || {
        let rt = one_pool(1);
        const POLL: Duration = Duration::from_millis(5);
        let d = delays_of(&rt, 21, || {
            rt.block_on(rt.spawn(async {
                for _ in 0..20 {
                    spin_for(POLL);
                    wq::task::yield_now().await;
                }
            }))
            .unwrap();
        });
        // 20 yields' re-polls (the only worker runs them at once) and the
        // spawn's: at most two preempted by the OS.
        assert!(d.count >= 21, "{d:?}");
        assert!(
            Duration::from_nanos(d.p90_ns) < POLL / 2,
            "p90 {:?}: a yield charged its own poll\n{d:?}",
            Duration::from_nanos(d.p90_ns)
        );
    });
}

/// A task spawned at the end of a long poll is queued when spawned: its
/// delay is the rest of that poll and after, not the part of the poll
/// before the spawn (it was stamped with the poll's start).
#[test]
fn a_task_spawned_late_in_a_long_poll_is_charged_from_its_spawn() {
    within(60, || {
        let rt = one_pool(1);
        const POLL: Duration = Duration::from_millis(20);
        let d = delays_of(&rt, 21, || {
            rt.block_on(rt.spawn(async {
                let mut children = Vec::new();
                for _ in 0..10 {
                    spin_for(POLL);
                    // The child runs when this poll ends: at once.
                    children.push(wq::spawn(async {}));
                    wq::task::yield_now().await;
                }
                for c in children {
                    c.await.unwrap();
                }
            }))
            .unwrap();
        });
        assert!(
            Duration::from_nanos(d.p90_ns) < POLL / 4,
            "p90 {:?}: a child charged its parent's poll before the spawn\n{d:?}",
            Duration::from_nanos(d.p90_ns)
        );
    });
}

#[test]
fn a_delta_is_the_interval() {
    within(60, || {
        let rt = one_pool(2);
        rt.block_on(async {
            for _ in 0..50 {
                wq::spawn(async {}).await.unwrap();
            }
        });
        let a = eventually(&rt, "50 polls", |m| m.pools[0].sched_delay.count >= 50);
        std::thread::sleep(Duration::from_millis(20));
        rt.block_on(async {
            for _ in 0..30 {
                wq::spawn(async {}).await.unwrap();
            }
        });
        let b = eventually(&rt, "80 polls", |m| {
            m.pools[0].sched_delay.count >= a.pools[0].sched_delay.count + 30
        });
        let d = b.delta(&a);
        let interval = d.interval.expect("a delta has an interval");
        assert!(interval >= Duration::from_millis(20), "{interval:?}");
        assert_eq!(d.uptime, b.uptime);
        let (pa, pb, pd) = (&a.pools[0], &b.pools[0], &d.pools[0]);
        assert_eq!(
            pd.counters.started,
            pb.counters.started - pa.counters.started
        );
        assert_eq!(
            pd.sched_delay.count,
            pb.sched_delay.count - pa.sched_delay.count
        );
        assert!(pd.sched_delay.count >= 30);
        assert_eq!(pd.workers, pb.workers, "gauges are the later snapshot's");
        // Through JSON (no histograms): the same counts.
        // A snapshot from a build before `cpu_budget` still reads.
        let mut old = serde_json::to_value(&a).unwrap();
        old.as_object_mut().unwrap().remove("cpu_budget").unwrap();
        // And one from before `spin_watches_deques`: its spinners watched
        // the deques.
        for p in old["pools"].as_array_mut().unwrap() {
            p.as_object_mut()
                .unwrap()
                .remove("spin_watches_deques")
                .unwrap();
        }
        // A snapshot whose buckets do not match this build's bounds (read
        // from another build's server) still exports cumulative buckets.
        let mut short = serde_json::to_value(&b).unwrap();
        for p in short["pools"].as_array_mut().unwrap() {
            p["sched_delay"]["buckets"] = serde_json::json!([3]);
        }
        let short: Snapshot = serde_json::from_value(short).unwrap();
        let (_, samples) = parse(&short.to_prometheus());
        let id = short.pools[0].id.to_string();
        let counts: Vec<f64> = samples
            .iter()
            .filter(|(n, l, _)| n == "wq_sched_delay_seconds_bucket" && l["pool"] == id)
            .map(|(_, _, v)| *v)
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        let old: Snapshot = serde_json::from_value(old).unwrap();
        assert_eq!(old.cpu_budget, None);
        assert!(!old.pools.is_empty() && old.pools.iter().all(|p| p.spin_watches_deques));
        let ja: Snapshot = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        let jb: Snapshot = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        let jd = jb.delta(&ja);
        assert_eq!(jd.pools[0].counters, pd.counters);
        assert_eq!(jd.pools[0].sched_delay.count, pd.sched_delay.count);
        assert_eq!(jd.scopes[0].counters, d.scopes[0].counters);
        // A service restarted between two reads (the earlier snapshot has
        // the longer uptime): not a difference, this snapshot whole.
        let restarted = a.delta(&b);
        assert_eq!(restarted.interval, Some(a.uptime));
        assert_eq!(restarted.pools[0].counters, a.pools[0].counters);
        let restarted = ja.delta(&jb);
        assert_eq!(restarted.pools[0].counters, a.pools[0].counters);
        // Another runtime (a service restarted, with the same thread name)
        // whose uptime has passed the earlier snapshot's: still not a
        // difference (it subtracted the old process's counters).
        let other = Runtime::new().unwrap();
        other.block_on(other.spawn(async {})).unwrap();
        let mut later = other.metrics();
        while later.uptime <= b.uptime {
            std::thread::sleep(Duration::from_millis(5));
            later = other.metrics();
        }
        assert_ne!(later.instance, b.instance);
        assert!(!later.follows(&b));
        assert_eq!(later.delta(&b).interval, Some(later.uptime));
        let jlater: Snapshot =
            serde_json::from_str(&serde_json::to_string(&later).unwrap()).unwrap();
        assert!(!jlater.follows(&jb), "the instance goes through JSON");
        assert_eq!(b.delta(&a).instance, b.instance);
    });
}

#[test]
fn latency_capture_off_keeps_scheduling_delays_and_counts_only() {
    within(60, || {
        // Off is the default.
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
            .default_scope(Scope::System)
            .build()
            .unwrap();
        rt.block_on(async {
            for _ in 0..100 {
                wq::spawn(async {}).await.unwrap();
            }
        });
        let m = eventually(&rt, "100 polls and their delays published", |m| {
            m.pools[0].counters.started >= 100 && m.pools[0].sched_delay.count >= 100
        });
        assert!(!m.latency_capture);
        let p = &m.pools[0];
        // Each task is polled once; each poll's delay is recorded.
        assert_eq!(p.counters.started, 100);
        assert_eq!(p.sched_delay.count, 100);
        assert_eq!((p.poll_time.count, p.spawn_time.count), (0, 0));
    });
}

/// One sample line of the text format: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// A strict reader of the Prometheus text format 0.0.4, enough to check
/// ours: every sample belongs to a family declared once with HELP and
/// TYPE, before its samples, with its samples together.
fn parse(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
    let mut types = BTreeMap::new();
    let mut helps = BTreeSet::new();
    let mut samples = Vec::new();
    let mut current = String::new();
    let mut closed = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            // One space, then the text: a doubled space was a doc
            // comment's leading one.
            assert!(
                !help.is_empty() && !help.starts_with(' '),
                "line {n}: HELP text {help:?}"
            );
            let name = name.to_owned();
            assert!(
                helps.insert(name.clone()),
                "line {n}: second HELP for {name}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "line {n}: {kind}"
            );
            assert!(
                helps.contains(name),
                "line {n}: TYPE before HELP for {name}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "line {n}: second TYPE for {name}"
            );
            if !current.is_empty() {
                closed.insert(std::mem::take(&mut current));
            }
            current = name.to_owned();
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "line {n}: {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("line {n}: value {v:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "line {n}: label {key}");
                    let mut val = String::new();
                    loop {
                        match chars.next().expect("closing quote") {
                            '\\' => match chars.next().unwrap() {
                                'n' => val.push('\n'),
                                c => val.push(c),
                            },
                            '"' => break,
                            c => val.push(c),
                        }
                    }
                    labels.insert(key, val);
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(&name)
            .to_owned();
        assert_eq!(family, current, "line {n}: {name} outside its family");
        assert!(!closed.contains(&family), "line {n}: {family} split");
        assert!(name.starts_with("wq_"), "line {n}: {name}");
        samples.push((name, labels, value));
    }
    (types, samples)
}

fn several_pools() -> (Runtime, Workqueue) {
    let rt = Runtime::builder()
        .topology(Topology::synthetic("pack:2 l3:2 core:2 pu:1").unwrap())
        .latency_capture(true)
        .build()
        .unwrap();
    let h = rt.handle().clone();
    for cpu in [0, 2, 5, 7] {
        for scope in [Scope::Cpu, Scope::Cache, Scope::System] {
            rt.block_on(h.spawn_on_cpu(cpu, scope, async {})).unwrap();
        }
    }
    let q = Workqueue::builder("io \"fast\"\\lane")
        .max_active(2)
        .build(rt.handle())
        .unwrap();
    rt.block_on(q.spawn(async {})).unwrap();
    // Counted at the item's end, which may come a moment after its handle
    // answers (the deferred end): a flush waits for it.
    rt.block_on(q.flush());
    (rt, q)
}

#[test]
fn prometheus_text_parses_and_carries_every_pool() {
    within(60, || {
        let (rt, _q) = several_pools();
        // One worker in a CPU-intensive poll while the snapshot is taken.
        let crunch = Workqueue::builder("crunch")
            .cpu_intensive()
            .build(rt.handle())
            .unwrap();
        let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let held = crunch.spawn(async move {
            entered_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        });
        entered.recv().unwrap();
        let m = rt.metrics();
        release.send(()).unwrap();
        rt.block_on(held).unwrap();
        assert!(m.pools.len() >= 7, "{m}");
        let text = m.to_prometheus();
        let (types, samples) = parse(&text);
        for (name, kind) in &types {
            match kind.as_str() {
                "counter" => assert!(name.ends_with("_total"), "{name}"),
                "histogram" => assert!(name.ends_with("_seconds"), "{name}"),
                _ => assert!(!name.ends_with("_total"), "{name}"),
            }
        }
        let pools_in = |family: &str| -> BTreeSet<String> {
            samples
                .iter()
                .filter(|(n, _, _)| n == family)
                .map(|(_, l, _)| l["pool"].clone())
                .collect()
        };
        let ids: BTreeSet<String> = m.pools.iter().map(|p| p.id.to_string()).collect();
        // A worker is in one state: their sum is the pool's workers.
        for p in &m.pools {
            let id = p.id.to_string();
            let by_state: f64 = samples
                .iter()
                .filter(|(n, l, _)| n == "wq_workers" && l["pool"] == id)
                .map(|(_, _, v)| *v)
                .sum();
            let w = &p.workers;
            let out = w.blocked + w.cpu_intensive;
            assert_eq!(by_state as usize, w.busy + w.idle + w.kicked + out);
            assert!(
                by_state as usize <= w.total + out,
                "{by_state} workers by state in a pool of {} and {out} out of the count",
                w.total,
            );
        }
        let computing: f64 = samples
            .iter()
            .filter(|(n, l, _)| n == "wq_workers" && l["state"] == "cpu_intensive")
            .map(|(_, _, v)| *v)
            .sum();
        assert_eq!(computing, 1.0, "the worker in the CPU-intensive poll");
        for family in [
            "wq_pool_info",
            "wq_workers",
            "wq_workers_searching",
            "wq_polls_started_total",
            "wq_kicks_total",
            "wq_coalesced_kicks_total",
            "wq_cm_wakeups_total",
            "wq_sched_delay_seconds_count",
            "wq_poll_duration_seconds_count",
            "wq_spawn_call_seconds_count",
        ] {
            assert_eq!(pools_in(family), ids, "{family}");
        }
        // Every pool's histogram: cumulative buckets, +Inf equal to the
        // count and to the snapshot's.
        for p in &m.pools {
            let id = p.id.to_string();
            let buckets: Vec<(f64, f64)> = samples
                .iter()
                .filter(|(n, l, _)| n == "wq_sched_delay_seconds_bucket" && l["pool"] == id)
                .map(|(_, l, v)| {
                    let le = match l["le"].as_str() {
                        "+Inf" => f64::INFINITY,
                        s => s.parse().unwrap(),
                    };
                    (le, *v)
                })
                .collect();
            assert_eq!(buckets.len(), BUCKET_BOUNDS_SECONDS.len() + 1);
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
            );
            assert_eq!(buckets.last().unwrap().1, p.sched_delay.count as f64);
            let labels = &samples
                .iter()
                .find(|(n, l, _)| n == "wq_pool_info" && l["pool"] == id)
                .unwrap()
                .1;
            assert_eq!(labels["scope"], p.scope.name());
            assert_eq!(labels["pod"], p.pod.to_string());
            assert_eq!(labels["cpus"], p.cpu_list());
        }
        // The queue, its name escaped and read back.
        let q = samples
            .iter()
            .find(|(n, _, _)| n == "wq_workqueue_started_total")
            .unwrap();
        assert_eq!(q.1["queue"], "io \"fast\"\\lane");
        assert_eq!(q.2, 1.0);
        // The CPU budget, as std reads it here (the runtime was built on
        // this thread, which wq has not bound).
        let budget = std::thread::available_parallelism().unwrap().get();
        assert_eq!(m.cpu_budget, Some(budget));
        let b = samples
            .iter()
            .find(|(n, _, _)| n == "wq_cpu_budget")
            .unwrap();
        assert_eq!(b.2, budget as f64);
        assert_eq!(types["wq_cpu_budget"], "gauge");

        promtool_check(&text);
    });
}

/// `promtool check metrics` (Prometheus' own linter and parser). Required
/// in CI (`CI` set), where `scripts/setup` installs it; elsewhere skipped
/// with a note when it is not installed.
fn promtool_check(text: &str) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped `promtool check metrics`: {e}; scripts/setup installs promtool");
            return;
        }
        Err(e) => panic!("promtool not found ({e}): scripts/setup installs it"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}\n{said}\n--- input ---\n{text}",
        out.status
    );
}

/// Queues may share a name; a Prometheus series is known by its labels,
/// so they are one series each, summed (a duplicate would make Prometheus
/// drop the sample), and a delta sums them on both sides.
#[test]
fn queues_sharing_a_name_are_one_series_summed() {
    within(60, || {
        let rt = Runtime::builder().build().unwrap();
        let a = Workqueue::builder("io")
            .max_active(3)
            .build(rt.handle())
            .unwrap();
        let b = Workqueue::builder("io")
            .max_active(5)
            .build(rt.handle())
            .unwrap();
        let before = rt.metrics();
        rt.block_on(async {
            a.spawn(async {}).await.unwrap();
            b.spawn(async {}).await.unwrap();
            b.spawn(async {}).await.unwrap();
            // The items' ends counted (`Workqueue::stats`).
            a.flush().await;
            b.flush().await;
        });
        let m = rt.metrics();
        assert_eq!(m.queues.len(), 2, "the snapshot keeps both");
        let text = m.to_prometheus();
        let (_, samples) = parse(&text);
        let series: Vec<_> = samples
            .iter()
            .filter(|(n, l, _)| n == "wq_workqueue_started_total" && l["queue"] == "io")
            .collect();
        assert_eq!(series.len(), 1, "one series for the name:\n{text}");
        assert_eq!(series[0].2, 3.0);
        let max = samples
            .iter()
            .find(|(n, _, _)| n == "wq_workqueue_max_active")
            .unwrap();
        assert_eq!(max.2, 8.0);
        let d = m.delta(&before);
        assert_eq!(d.queues.len(), 1);
        assert_eq!(d.queues[0].started, 3);
        promtool_check(&text);
        // One of them dropped (a connection closed): the name's counters
        // do not go down (Prometheus would read a reset, and `increase()`
        // count everything again).
        let started = |m: &wq::metrics::Snapshot| {
            let (_, samples) = parse(&m.to_prometheus());
            let find = |name: &str| {
                samples
                    .iter()
                    .find(|(n, l, _)| n == name && l["queue"] == "io")
                    .map(|s| s.2)
            };
            (
                find("wq_workqueue_started_total"),
                find("wq_workqueue_max_active"),
            )
        };
        drop(b);
        let after_b = rt.metrics();
        assert_eq!(after_b.queues.len(), 1);
        assert_eq!(started(&after_b), (Some(3.0), Some(3.0)));
        assert_eq!(after_b.delta(&m).queues_by_name()[0].started, 0);
        drop(a);
        let after_a = rt.metrics();
        assert!(after_a.queues.is_empty());
        assert_eq!(started(&after_a), (Some(3.0), Some(0.0)));
        // A snapshot from before the field reads it as empty.
        let mut json: serde_json::Value = serde_json::to_value(&after_a).unwrap();
        json.as_object_mut().unwrap().remove("retired_queues");
        let old: wq::metrics::Snapshot = serde_json::from_value(json).unwrap();
        assert!(old.retired_queues.is_empty());
    });
}

#[test]
fn the_table_has_a_line_per_pool_and_queue() {
    within(60, || {
        let (rt, q) = several_pools();
        let m = rt.metrics();
        let table = m.to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("p99 delay"), "{table}");
        assert_eq!(
            lines
                .iter()
                .filter(|l| l
                    .split_whitespace()
                    .next()
                    .is_some_and(|w| w.parse::<usize>().is_ok()))
                .count(),
            m.pools.len(),
            "{table}"
        );
        assert!(lines.iter().any(|l| l.starts_with(q.name())), "{table}");
    });
}

#[test]
fn the_grafana_dashboard_queries_only_series_and_labels_we_export() {
    within(60, || {
        let (rt, _q) = several_pools();
        let text = rt.metrics().to_prometheus();
        let (_, samples) = parse(&text);
        let names: BTreeSet<&str> = samples.iter().map(|(n, _, _)| n.as_str()).collect();
        let labels: BTreeSet<&str> = samples
            .iter()
            .flat_map(|(_, l, _)| l.keys().map(String::as_str))
            // `instance` and `job` are the scrape's own.
            .chain(["le", "instance", "job"])
            .collect();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/grafana/wq-dashboard.json"
        );
        let dash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut queries = Vec::new();
        for p in dash["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                queries.push(t["expr"].as_str().unwrap().to_owned());
            }
        }
        for v in dash["templating"]["list"].as_array().unwrap() {
            if let Some(q) = v["query"]["query"].as_str() {
                queries.push(q.to_owned());
            }
        }
        assert!(queries.len() >= 8, "{queries:?}");
        let states: BTreeSet<&str> = samples
            .iter()
            .filter(|(n, _, _)| n == "wq_workers")
            .map(|(_, l, _)| l["state"].as_str())
            .collect();
        assert!(states.contains("cpu_intensive"), "{states:?}");
        for q in &queries {
            let mut rest = q.as_str();
            while let Some(i) = rest.find("wq_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    names.contains(name.as_str()),
                    "{name} in {q:?} is not exported"
                );
                rest = &rest[i + name.len()..];
            }
            for (i, _) in q.match_indices("by (") {
                let inside = &q[i + 4..i + 4 + q[i + 4..].find(')').unwrap()];
                for l in inside.split(',').map(str::trim) {
                    assert!(labels.contains(l), "label {l} in {q:?} is not exported");
                }
                // Pool ids are a process's own: pool 3 of two replicas (or
                // of two machines, one's `cpu 3`, the other's `system 0`)
                // are different pools.
                let by: Vec<&str> = inside.split(',').map(str::trim).collect();
                assert!(
                    !by.contains(&"pool") || by.contains(&"instance"),
                    "{q:?} sums one pool id over every instance"
                );
            }
            // A matcher on `state` takes every state exported: a stack of
            // workers by state adds up to the pool's workers (the panel
            // left out `cpu_intensive` when it came).
            if let Some(i) = q.find("state=~\"") {
                let list = &q[i + 8..i + 8 + q[i + 8..].find('"').unwrap()];
                let matched: BTreeSet<&str> = list.split('|').collect();
                assert_eq!(matched, states, "{q:?}");
            }
        }
    });
}

/// A task woken by a timer on the worker parked in the driver: its
/// scheduling delay runs from the wake, not from before the park (the
/// worker's cached time is stale while it sleeps; the whole idle gap was
/// recorded as delay). The first poll's delay includes the worker's start,
/// which a loaded machine may take long over: the gap is a second, the
/// bound half of it.
#[test]
fn a_task_woken_in_a_parked_workers_driver_turn_is_not_charged_the_park() {
    within(60, || {
        let rt = one_pool(1);
        // Only the worker can turn the driver: block_on's thread is busy
        // waiting on a channel, not parked in the driver.
        let (tx, rx) = mpsc::channel();
        drop(rt.spawn(async move {
            wq::time::sleep(Duration::from_millis(1000)).await;
            tx.send(()).unwrap();
        }));
        rx.recv().unwrap();
        // Published when the worker idles again.
        let mut m = rt.metrics();
        let delays = |m: &wq::metrics::Snapshot| -> u64 {
            m.pools.iter().map(|p| p.sched_delay.count).sum()
        };
        for _ in 0..5000 {
            if delays(&m) >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            m = rt.metrics();
        }
        // The woken task's delay is there (without it, the check below
        // saw only the first poll's, and passed whatever the park cost).
        assert!(
            delays(&m) >= 2,
            "the woken task's delay never published\n{m}"
        );
        let worst = m.pools.iter().map(|p| p.sched_delay.max_ns).max().unwrap();
        assert!(
            worst < 500_000_000,
            "a scheduling delay of {worst} ns: the park was counted\n{m}"
        );
    });
}

/// A snapshot serialized by a wq that did not have some counter yet reads
/// back, that counter zero (`wq-monitor` may be newer than the service).
#[test]
fn a_snapshot_missing_newer_counters_still_reads() {
    let rt = one_pool(1);
    rt.block_on(rt.spawn(async {})).unwrap();
    let mut json: serde_json::Value = serde_json::to_value(rt.metrics()).unwrap();
    for pool in json["pools"].as_array_mut().unwrap() {
        pool["counters"]
            .as_object_mut()
            .unwrap()
            .remove("worker_start_failures")
            .expect("the field exists today");
        pool["sched_delay"]
            .as_object_mut()
            .unwrap()
            .remove("p999_ns");
    }
    let back: Snapshot = serde_json::from_value(json).unwrap();
    assert_eq!(back.pools[0].counters.worker_start_failures, 0);
}

/// Queues of one name made and dropped while snapshots are taken: the
/// name's counters never go down between two snapshots (a queue being
/// dropped is in the live list or the retired one, never in neither).
#[test]
fn a_names_counters_never_go_down_while_its_queues_come_and_go() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    within(120, || {
        let rt = Runtime::builder().build().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let churn = {
            let (h, done) = (rt.handle().clone(), done.clone());
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    let q = Workqueue::builder("x").build(&h).unwrap();
                    h.block_on(async {
                        q.spawn(async {}).await.unwrap();
                        // Its end counted before the queue goes.
                        q.flush().await;
                    });
                    drop(q);
                }
                done.store(true, Ordering::SeqCst);
            })
        };
        let mut last = 0;
        let mut snapshots = 0;
        while !done.load(Ordering::SeqCst) {
            let m = rt.metrics();
            let started = m
                .queues_by_name()
                .iter()
                .find(|q| q.name == "x")
                .map_or(0, |q| q.started);
            assert!(started >= last, "x went from {last} to {started} started");
            last = started;
            snapshots += 1;
        }
        churn.join().unwrap();
        let m = rt.metrics();
        assert_eq!(m.queues_by_name()[0].started, 2000, "{snapshots} snapshots");
    });
}

/// A delta over a snapshot of another runtime (a restarted service) is the
/// later snapshot whole, in the shape of every delta: queues summed by
/// name, retired names folded in, `retired_queues` empty.
#[test]
fn a_delta_over_another_instance_has_the_shape_of_every_delta() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        let _a = Workqueue::builder("io").build(rt.handle()).unwrap();
        let _b = Workqueue::builder("io").build(rt.handle()).unwrap();
        drop(Workqueue::builder("gone").build(rt.handle()).unwrap());
        let now = rt.metrics();
        assert!(!now.retired_queues.is_empty());
        let other = Runtime::new().unwrap().metrics();
        assert!(!now.follows(&other));
        let d = now.delta(&other);
        assert!(d.retired_queues.is_empty(), "{:?}", d.retired_queues);
        let mut names: Vec<&str> = d.queues.iter().map(|q| q.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["gone", "io"]);
        assert_eq!(d.interval, Some(now.uptime));
    });
}

/// Each pool says what its spinners watch: the deques too in pools of at
/// most four workers, the injector only in wider ones, unless the builder
/// says.
#[test]
fn pools_report_what_their_spinners_watch() {
    let watch = |workers: usize, setting: Option<bool>| -> Vec<bool> {
        let b = Runtime::builder()
            .topology(Topology::synthetic("pack:2 core:8 pu:1").unwrap())
            .max_workers_per_pool(workers);
        let b = match setting {
            Some(w) => b.spin_watches_deques(w),
            None => b,
        };
        let rt = b.build().unwrap();
        // Pools are created on first use: one of each scope's.
        rt.block_on(async {
            for scope in Scope::ALL {
                wq::spawn_on(scope, async {}).await.unwrap();
            }
        });
        let m = rt.metrics();
        assert!(!m.pools.is_empty());
        m.pools.iter().map(|p| p.spin_watches_deques).collect()
    };
    assert!(
        watch(2, None).iter().all(|&w| w),
        "pools of 2 watch the deques"
    );
    assert!(
        watch(4, None).iter().all(|&w| w),
        "pools of 4 watch the deques"
    );
    // Pools of 8 over the 8-CPU pods; the per-CPU and per-core pools have
    // one worker.
    let wide = watch(8, None);
    assert!(
        wide.iter().any(|&w| !w),
        "no pool of 8 watches the injector only: {wide:?}"
    );
    assert!(watch(8, Some(true)).iter().all(|&w| w));
    assert!(watch(2, Some(false)).iter().all(|&w| !w));
}

/// A worker's park is counted as it parks: an idle pool shows the parks
/// its idle workers are in (they were published at the next wake, so a
/// pool idle since its start showed none, and a long-idle pool's
/// `wq_parks_total` stood still through its re-parks).
#[test]
fn a_parked_worker_has_its_park_counted() {
    within(60, || {
        let rt = one_pool(1);
        rt.block_on(rt.spawn(async {})).unwrap();
        let m = eventually(&rt, "the worker idle", |m| {
            m.pools
                .iter()
                .any(|p| p.workers.total == 1 && p.workers.idle == 1)
        });
        let pool = m.pools.iter().find(|p| p.workers.total == 1).unwrap();
        // Idle: parked, or a moment away from it.
        let m = eventually(&rt, "its park counted", |m| {
            m.pools
                .iter()
                .any(|p| p.id == pool.id && p.counters.parks >= 1)
        });
        drop(m);
    });
}

/// Snapshots taken on several threads at once are ordered as their
/// uptimes are: one that follows another has at least its counts (before,
/// the uptime was read before the counts, and a delta of two concurrent
/// snapshots could silently come out empty).
#[test]
fn concurrent_snapshots_are_ordered_by_their_uptime() {
    within(60, || {
        let rt = std::sync::Arc::new(one_pool(2));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Work that keeps the counters moving.
        let busy = {
            let stop = stop.clone();
            rt.spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    wq::spawn(async {}).await.unwrap();
                }
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let rt = rt.clone();
                std::thread::spawn(move || {
                    // Seconds on 2 CPUs (it failed within the first 300 ms
                    // or after 22 s, in two runs of 40,000).
                    let until = Instant::now() + Duration::from_secs(5);
                    (0..20_000)
                        .take_while(|_| Instant::now() < until)
                        .map(|_| {
                            let m = rt.metrics();
                            let started: u64 = m.pools.iter().map(|p| p.counters.started).sum();
                            (m.uptime, started)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(Duration, u64)> = readers
            .into_iter()
            .flat_map(|r| r.join().unwrap())
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(busy).unwrap();
        all.sort();
        for w in all.windows(2) {
            assert!(
                w[1].0 == w[0].0 || w[1].1 >= w[0].1,
                "a later snapshot with fewer polls started: {:?} then {:?}",
                w[0],
                w[1]
            );
        }
    });
}
