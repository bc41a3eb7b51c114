//! The Prometheus text exposition format (version 0.0.4) of a
//! [`Snapshot`].
//!
//! # Series
//! Every name starts with `wq_` and carries its unit (`_seconds`) or
//! `_total` for counters. Pool series carry the labels `pool` (its id),
//! `scope` (the scope it was created for) and `pod` (the pod's index in
//! that scope); workqueue series carry `queue` (its name).
//!
//! | series | type | what |
//! |---|---|---|
//! | `wq_uptime_seconds` | gauge | since the runtime was built |
//! | `wq_cpu_budget` | gauge | the CPUs the process may use at once (affinity and cgroup quota), read at build: a pool's default maximum workers (absent if unknown) |
//! | `wq_blocking_threads`, `wq_blocking_threads_idle`, `wq_blocking_threads_max`, `wq_blocking_queue_depth` | gauge | the blocking pool (`spawn_blocking`): threads alive, idle, its limit, jobs waiting for a thread |
//! | `wq_blocking_jobs_total`, `wq_blocking_start_failures_total` | counter | jobs queued so far; thread starts the OS refused |
//! | `wq_pool_info{pool,scope,pod,cpus,strict,highpri}` | gauge (1) | the pod's CPUs (`0-3,8`) and attributes |
//! | `wq_workers{pool,scope,pod,state}` | gauge | workers by `state`, each in one: `busy`, `idle`, `kicked`, `blocked`, `cpu_intensive` (summed over `state`: the pool's workers, those in `block_in_place` or in a CPU-intensive poll included) |
//! | `wq_workers_searching{..}` | gauge | of those, the ones searching (busy or kicked) |
//! | `wq_workers_max{..}` | gauge | the pool's maximum |
//! | `wq_tasks_alive{..}` | gauge | tasks whose home is the pool (in flight) |
//! | `wq_<counter>_total{..}` | counter | one per field of [`Counters`](super::Counters): `wq_polls_started_total`, `wq_kicks_total`, `wq_coalesced_kicks_total`, `wq_cm_wakeups_total`, ... |
//! | `wq_sched_delay_seconds{..}` | histogram | queued (spawned or woken) to the start of the poll |
//! | `wq_poll_duration_seconds{..}` | histogram | poll durations |
//! | `wq_spawn_call_seconds{..}` | histogram | how long a spawn call took its caller |
//! | `wq_workqueue_<counter>_total{queue}` | counter | `started`, `completed`, `cpu_seconds`, `cpu_intensive`, `cm_wakeups`, `repatriated`, `refused` |
//! | `wq_workqueue_{in_flight,active,inactive,max_active}{queue}` | gauge | the queue's items now, and its limit |
//!
//! Scopes are not exported separately: the buckets are fixed, so
//! `sum by (scope, le) (rate(wq_sched_delay_seconds_bucket[1m]))` gives
//! the histogram of the pools each scope created exactly. A pool is
//! labelled with the scope that created it, and serves every scope whose
//! pod has its CPUs (on one cache, `cache_shard`, `cache`, `numa` and
//! `system` share one pool, labelled with whichever was used first).
//!
//! # Buckets
//! Classic cumulative histograms with the fixed bounds
//! [`BUCKET_BOUNDS_SECONDS`]: 1, 2.5 and 5 per decade from 100 ns to 10 s,
//! then `+Inf`. They are counted from wq's HdrHistograms (1% precision),
//! so a sample within 1% of a bound may be counted on either side of it;
//! `_sum` is the HdrHistogram's samples summed at their buckets' middles
//! (within 1%), in integers: it never goes down between two scrapes.
//!
//! prometheus-client, the official crate, is not used: its text encoder
//! writes OpenMetrics 1.0 only, whose counters are declared without their
//! `_total` suffix (`# TYPE wq_kicks counter` over samples named
//! `wq_kicks_total`). Parsed as the classic text format -- by `promtool
//! check metrics` (Prometheus 2.42, Debian 12), and by any scraper that does
//! not negotiate OpenMetrics -- such a sample is an untyped series without
//! help (promtool exits 3: `wq_kicks_total no help text`, checked here
//! with Debian's promtool). Its collector API would also have us copy each
//! HdrHistogram into its own bucket type per scrape, which is what this
//! file does directly in about four hundred lines with its tests; the tests check the output
//! with promtool (installed by `scripts/setup`) and with a parser of their
//! own.

use std::fmt::Write as _;

use super::{Latency, PoolSnapshot, Snapshot};

/// The upper bounds (seconds) of the Prometheus histogram buckets, shared
/// by the scheduling-delay, poll-duration and spawn-call histograms:
/// log-spaced, 1, 2.5 and 5 per decade, from 100 ns to 10 s (`+Inf`
/// follows).
pub const BUCKET_BOUNDS_SECONDS: [f64; 25] = [
    1e-7, 2.5e-7, 5e-7, //
    1e-6, 2.5e-6, 5e-6, //
    1e-5, 2.5e-5, 5e-5, //
    1e-4, 2.5e-4, 5e-4, //
    1e-3, 2.5e-3, 5e-3, //
    1e-2, 2.5e-2, 5e-2, //
    0.1, 0.25, 0.5, //
    1.0, 2.5, 5.0, //
    10.0,
];

/// The bounds in nanoseconds.
pub(super) fn bounds_ns() -> &'static [u64; 25] {
    static NS: std::sync::OnceLock<[u64; 25]> = std::sync::OnceLock::new();
    NS.get_or_init(|| BUCKET_BOUNDS_SECONDS.map(|s| (s * 1e9).round() as u64))
}

/// Escapes a label value (`\`, `"`, newline).
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', r"\\").replace('\n', " ");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn pool_labels(p: &PoolSnapshot) -> String {
    format!(
        "pool=\"{}\",scope=\"{}\",pod=\"{}\"",
        p.id,
        p.scope.name(),
        p.pod
    )
}

/// A float as the text format spells it.
fn num(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.is_nan() {
        "NaN".to_owned()
    } else {
        format!("{v}")
    }
}

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    pools: &[PoolSnapshot],
    of: fn(&PoolSnapshot) -> &Latency,
) {
    family(out, name, "histogram", help);
    for p in pools {
        let l = of(p);
        let labels = pool_labels(p);
        // Cumulative whatever the snapshot holds: one read from JSON (a
        // server's `/api/snapshot`, another build's bounds) may lack
        // buckets, or hold ones that do not add up; a missing bucket
        // repeats the one before (its samples are counted in +Inf).
        let mut before = 0;
        for (i, bound) in BUCKET_BOUNDS_SECONDS.iter().enumerate() {
            let n = l
                .buckets
                .get(i)
                .copied()
                .unwrap_or(before)
                .max(before)
                .min(l.count);
            before = n;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{}\"}} {n}", num(*bound));
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", l.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", num(l.sum_ns / 1e9));
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", l.count);
    }
}

/// A gauge family with one sample per pool, labelled as every pool series.
fn pool_gauge(
    out: &mut String,
    s: &Snapshot,
    name: &str,
    help: &str,
    value: impl Fn(&PoolSnapshot) -> usize,
) {
    family(out, name, "gauge", help);
    for p in &s.pools {
        let _ = writeln!(out, "{name}{{{}}} {}", pool_labels(p), value(p));
    }
}

/// See the module docs.
pub(super) fn encode(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096 + s.pools.len() * 8192);
    family(
        &mut out,
        "wq_uptime_seconds",
        "gauge",
        "Time since the runtime was built.",
    );
    let _ = writeln!(out, "wq_uptime_seconds {}", num(s.uptime.as_secs_f64()));
    if let Some(budget) = s.cpu_budget {
        family(
            &mut out,
            "wq_cpu_budget",
            "gauge",
            "The CPUs the process may use at once (affinity mask and cgroup CPU quota), read when the runtime was built: no pool has more workers by default.",
        );
        let _ = writeln!(out, "wq_cpu_budget {budget}");
    }
    let b = &s.blocking;
    for (name, kind, help, value) in [
        (
            "wq_blocking_threads",
            "gauge",
            "Blocking-pool threads alive (running a spawn_blocking job, idle, or starting).",
            b.threads as u64,
        ),
        (
            "wq_blocking_threads_idle",
            "gauge",
            "Blocking-pool threads waiting for a job.",
            b.idle as u64,
        ),
        (
            "wq_blocking_threads_max",
            "gauge",
            "The most blocking-pool threads at once (Builder::max_blocking_threads).",
            b.max_threads as u64,
        ),
        (
            "wq_blocking_queue_depth",
            "gauge",
            "spawn_blocking jobs queued that no thread runs yet.",
            b.queued as u64,
        ),
        (
            "wq_blocking_jobs_total",
            "counter",
            "spawn_blocking jobs queued so far.",
            b.jobs,
        ),
        (
            "wq_blocking_start_failures_total",
            "counter",
            "Blocking-pool thread starts the OS refused.",
            b.start_failures,
        ),
    ] {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }

    family(
        &mut out,
        "wq_pool_info",
        "gauge",
        "A worker pool: its pod's CPUs and attributes (value 1).",
    );
    for p in &s.pools {
        let _ = writeln!(
            out,
            "wq_pool_info{{{},cpus=\"{}\",strict=\"{}\",highpri=\"{}\"}} 1",
            pool_labels(p),
            label(&p.cpu_list()),
            p.strict,
            p.highpri
        );
    }

    family(
        &mut out,
        "wq_workers",
        "gauge",
        "Workers of the pool by state, each in one: busy (running or searching), idle (parked), kicked (woken, not yet running), blocked (in block_in_place), cpu_intensive (in a CPU-intensive poll); the last two not counted against the maximum.",
    );
    for p in &s.pools {
        let w = &p.workers;
        for (state, n) in [
            ("busy", w.busy),
            ("idle", w.idle),
            ("kicked", w.kicked),
            ("blocked", w.blocked),
            ("cpu_intensive", w.cpu_intensive),
        ] {
            let _ = writeln!(
                out,
                "wq_workers{{{},state=\"{state}\"}} {n}",
                pool_labels(p)
            );
        }
    }
    // Not a state of its own: a searcher is busy or kicked, and a sum over
    // `state` must count each worker once.
    pool_gauge(
        &mut out,
        s,
        "wq_workers_searching",
        "Workers of the pool searching for work (busy or kicked ones).",
        |p| p.workers.searching,
    );
    pool_gauge(
        &mut out,
        s,
        "wq_workers_max",
        "The pool's maximum number of workers.",
        |p| p.max_workers,
    );
    pool_gauge(
        &mut out,
        s,
        "wq_tasks_alive",
        "Tasks alive whose home is the pool (in flight).",
        |p| p.tasks,
    );

    let names: Vec<(&str, &str)> = super::Counters::default()
        .fields()
        .into_iter()
        .map(|(_, metric, help, _)| (metric, help))
        .collect();
    let values: Vec<Vec<(&str, &str, &str, u64)>> =
        s.pools.iter().map(|p| p.counters.fields()).collect();
    for (i, (metric, help)) in names.iter().enumerate() {
        let name = format!("wq_{metric}_total");
        family(&mut out, &name, "counter", help);
        for (p, v) in s.pools.iter().zip(&values) {
            let _ = writeln!(out, "{name}{{{}}} {}", pool_labels(p), v[i].3);
        }
    }

    histogram(
        &mut out,
        "wq_sched_delay_seconds",
        "Scheduling delay: from a task being queued (spawned or woken) to the start of its poll.",
        &s.pools,
        |p| &p.sched_delay,
    );
    histogram(
        &mut out,
        "wq_poll_duration_seconds",
        "How long a task's poll ran.",
        &s.pools,
        |p| &p.poll_time,
    );
    histogram(
        &mut out,
        "wq_spawn_call_seconds",
        "How long a spawn call onto the pool took its caller.",
        &s.pools,
        |p| &p.spawn_time,
    );

    // One series per name: queues sharing a name are summed (two series
    // with one label set would be a duplicate sample to Prometheus).
    let queues = s.queues_by_name();
    type QueueCounter = fn(&super::WorkqueueStats) -> f64;
    let queue_counters: [(&str, &str, QueueCounter); 7] = [
        ("started", "Items of the workqueue that started.", |q| {
            q.started as f64
        }),
        ("completed", "Items of the workqueue that finished.", |q| {
            q.completed as f64
        }),
        (
            "cpu_seconds",
            "Time the workqueue's items spent being polled.",
            |q| q.cpu_time.as_secs_f64(),
        ),
        (
            "cpu_intensive",
            "Items of the workqueue found hogging a CPU.",
            |q| q.cpu_intensive as f64,
        ),
        (
            "cm_wakeups",
            "Workers woken or started because an item of the workqueue blocked.",
            |q| q.cm_wakeups as f64,
        ),
        (
            "repatriated",
            "Items of the workqueue queued back home after running on another pod.",
            |q| q.repatriated as f64,
        ),
        (
            "refused",
            "Spawns the workqueue refused (draining, shut down, or full): a spawn's future dropped, a try_spawn's given back.",
            |q| q.refused as f64,
        ),
    ];
    for (metric, help, value) in queue_counters {
        let name = format!("wq_workqueue_{metric}_total");
        family(&mut out, &name, "counter", help);
        for q in &queues {
            let _ = writeln!(
                out,
                "{name}{{queue=\"{}\"}} {}",
                label(&q.name),
                num(value(q))
            );
        }
    }
    type QueueGauge = fn(&super::WorkqueueStats) -> usize;
    let queue_gauges: [(&str, &str, QueueGauge); 4] = [
        (
            "in_flight",
            "Items of the workqueue spawned and not finished.",
            |q| q.in_flight,
        ),
        (
            "active",
            "Items of the workqueue handed to a pool with a slot of max_active and not finished.",
            |q| q.active,
        ),
        (
            "inactive",
            "Items of the workqueue waiting on its inactive list.",
            |q| q.inactive,
        ),
        ("max_active", "The workqueue's max_active.", |q| {
            q.attrs.max_active
        }),
    ];
    for (metric, help, value) in queue_gauges {
        let name = format!("wq_workqueue_{metric}");
        family(&mut out, &name, "gauge", help);
        for q in &queues {
            let _ = writeln!(out, "{name}{{queue=\"{}\"}} {}", label(&q.name), value(q));
        }
    }
    out
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_increasing_and_log_spaced() {
        assert!(BUCKET_BOUNDS_SECONDS.windows(2).all(|w| w[0] < w[1]));
        for w in BUCKET_BOUNDS_SECONDS.windows(3).step_by(3) {
            assert!((w[1] / w[0] - 2.5).abs() < 1e-9 && (w[2] / w[1] - 2.0).abs() < 1e-9);
        }
        assert_eq!(bounds_ns()[0], 100);
        assert_eq!(bounds_ns()[24], 10_000_000_000);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(num(f64::INFINITY), "+Inf");
        assert_eq!(num(1e-7), "0.0000001");
    }
}
