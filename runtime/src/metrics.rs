//! Per-pool metrics: counters and the scheduling-delay histogram.
//!
//! Nothing here is written on a shared line in the hot path:
//! - events that happen under the pool lock anyway (kicks, coalesced kicks,
//!   unparks, workers created and culled) are counted there
//!   (the pool's locked counters);
//! - events of a worker (tasks started and completed, steals, parks) are
//!   counted in the worker's own plain locals and published whenever it
//!   goes idle into its slot's cache-padded [`WorkerCounters`]; its
//!   scheduling delays are buffered (64) and recorded into the slot's
//!   HdrHistogram when the buffer fills and when it goes idle.
//!
//! A reader ([`Runtime::metrics`](crate::Runtime::metrics)) has each pool
//! fill in a [`PoolMetrics`]: it sums the slots and merges the histograms.
//! This module is a leaf: it defines what is counted; the pools fill it in. The **scheduling delay** of a task is the
//! time from its being queued (spawned or woken) to a worker starting to
//! poll it, in nanoseconds.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::Scope;

/// Highest delay a histogram tracks (60 s); longer ones saturate.
const HIST_MAX_NS: u64 = 60_000_000_000;
/// Significant digits: 2 keeps each histogram at a few KiB with 1%
/// precision, enough for p50/p99 dashboards.
const HIST_SIGFIG: u8 = 2;

pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, HIST_SIGFIG).expect("valid histogram bounds")
}

/// A worker slot's published counters (single writer: the slot's worker).
#[derive(Debug)]
pub(crate) struct WorkerCounters {
    pub(crate) started: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) remote_steals: AtomicU64,
    pub(crate) sibling_steals: AtomicU64,
    pub(crate) parks: AtomicU64,
    pub(crate) spin_hits: AtomicU64,
    pub(crate) spin_backoffs: AtomicU64,
    pub(crate) sched_delay: Mutex<Histogram<u64>>,
}

impl Default for WorkerCounters {
    fn default() -> Self {
        WorkerCounters {
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            remote_steals: AtomicU64::new(0),
            sibling_steals: AtomicU64::new(0),
            parks: AtomicU64::new(0),
            spin_hits: AtomicU64::new(0),
            spin_backoffs: AtomicU64::new(0),
            sched_delay: Mutex::new(new_histogram()),
        }
    }
}

/// A snapshot of one worker pool.
#[derive(Clone)]
#[non_exhaustive]
pub struct PoolMetrics {
    /// The pool's runtime-unique id (worker threads are named
    /// `<thread_name>-<id>.<slot>`).
    pub id: usize,
    /// The scope the pool was created for.
    pub scope: Scope,
    /// The pod's index in that scope.
    pub pod: usize,
    /// The pod's CPUs (OS indices).
    pub cpus: Vec<usize>,
    /// Workers alive (busy, idle or kicked).
    pub workers: usize,
    /// Workers on the idle list.
    pub idle: usize,
    /// Workers on the kicked list (kicked, not yet running).
    pub kicked: usize,
    /// Workers searching for work: kicked or starting ones, and running
    /// ones scanning the queues or spinning before they park.
    pub searching: usize,
    /// Workers blocked in [`block_in_place`](crate::task::block_in_place),
    /// not counted in `workers`.
    pub blocked: usize,
    /// The pool's maximum number of workers.
    pub max_workers: usize,
    /// Tasks alive whose home is this pool.
    pub tasks: usize,
    /// Task polls started.
    pub items_started: u64,
    /// Task polls completed.
    pub items_completed: u64,
    /// Kicks that took the pool lock (work queued from outside the pool,
    /// and chaining). A kick that finds a worker searching, or every
    /// worker running, is skipped without the lock and not counted.
    pub kicks: u64,
    /// Kicks that took the lock and found a worker already kicked or
    /// searching, and woke nobody.
    pub coalesced_kicks: u64,
    /// Worker threads unparked by kicks.
    pub unparks: u64,
    /// Acquisitions of the pool lock by the kick / idle / cull protocol
    /// (metrics readers not counted). The figure a wide pool is judged by:
    /// every acquisition is a cache-line transfer between the CPUs that
    /// share the pool.
    pub lock_acquisitions: u64,
    /// Acquisitions that found the lock held and waited for it.
    pub lock_contended: u64,
    /// Worker threads created.
    pub workers_created: u64,
    /// Idle workers culled.
    pub workers_culled: u64,
    /// Workers woken or started because a worker blocked in
    /// [`block_in_place`](crate::task::block_in_place) while work was
    /// queued (the kernel's `CM_WAKEUP`).
    pub cm_wakeups: u64,
    /// Polls found running longer than the CPU-hog threshold
    /// ([`Builder::cpu_hog_threshold`](crate::Builder::cpu_hog_threshold));
    /// each let the pool start a worker beyond its maximum while it ran
    /// (the kernel's `CPU_INTENSIVE`).
    pub cpu_intensive: u64,
    /// Tasks queued back to this, their home pool, after running on another
    /// pod's worker (the kernel's `REPATRIATED`).
    pub repatriated: u64,
    /// Tasks taken from another pod's pool.
    pub remote_steals: u64,
    /// Tasks taken from a sibling worker's deque.
    pub sibling_steals: u64,
    /// Times a worker parked.
    pub parks: u64,
    /// Times a worker found work while spinning before parking.
    pub spin_hits: u64,
    /// Times a spinning worker stopped because another thread wanted its
    /// CPU (it then parks at once for a while).
    pub spin_backoffs: u64,
    /// Task polls run by the runtime's rescuer thread because no worker
    /// could be started for the pool (included in `items_started`).
    pub rescued: u64,
    /// Worker threads the OS refused to start for this pool.
    pub worker_start_failures: u64,
    /// Scheduling delays (queued to first poll), nanoseconds.
    pub sched_delay: Histogram<u64>,
}

impl PoolMetrics {
    /// Adds one worker slot's published counters and histogram.
    pub(crate) fn add_worker(&mut self, c: &WorkerCounters) {
        self.items_started += c.started.load(Ordering::Relaxed);
        self.items_completed += c.completed.load(Ordering::Relaxed);
        self.remote_steals += c.remote_steals.load(Ordering::Relaxed);
        self.sibling_steals += c.sibling_steals.load(Ordering::Relaxed);
        self.parks += c.parks.load(Ordering::Relaxed);
        self.spin_hits += c.spin_hits.load(Ordering::Relaxed);
        self.spin_backoffs += c.spin_backoffs.load(Ordering::Relaxed);
        // Same bounds: `add` cannot fail.
        let _ = self.sched_delay.add(&*crate::loom::lock(&c.sched_delay));
    }

    /// The scheduling delay at quantile `q` (0.0..=1.0), nanoseconds; 0 if
    /// nothing was recorded yet.
    pub fn sched_delay_ns(&self, q: f64) -> u64 {
        self.sched_delay.value_at_quantile(q)
    }
}

impl fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolMetrics")
            .field("id", &self.id)
            .field("scope", &self.scope)
            .field("pod", &self.pod)
            .field("cpus", &self.cpus)
            .field("workers", &self.workers)
            .field("idle", &self.idle)
            .field("kicked", &self.kicked)
            .field("items_started", &self.items_started)
            .field("kicks", &self.kicks)
            .field("coalesced_kicks", &self.coalesced_kicks)
            .field("unparks", &self.unparks)
            .field("workers_created", &self.workers_created)
            .field("workers_culled", &self.workers_culled)
            .field("remote_steals", &self.remote_steals)
            .field("rescued", &self.rescued)
            .field("worker_start_failures", &self.worker_start_failures)
            .field("sched_delay_p50_ns", &self.sched_delay_ns(0.5))
            .field("sched_delay_p99_ns", &self.sched_delay_ns(0.99))
            .finish_non_exhaustive()
    }
}

/// A workqueue's attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkqueueAttrs {
    /// The scope its next items go to.
    pub scope: Scope,
    /// Strict pools (see [`WorkqueueBuilder::strict`](crate::WorkqueueBuilder::strict)).
    pub strict: bool,
    /// Items active at once, at most.
    pub max_active: usize,
    /// One item at a time, in order.
    pub ordered: bool,
    /// High-priority pools.
    pub highpri: bool,
    /// Items leave concurrency management while they run.
    pub cpu_intensive: bool,
}

/// A workqueue's counters, in the kernel's vocabulary (`PWQ_STAT_*`, as
/// `tools/workqueue/wq_monitor.py` prints them).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkqueueStats {
    /// The queue's name.
    pub name: String,
    /// Its attributes now.
    pub attrs: WorkqueueAttrs,
    /// Items that started (were polled once).
    pub started: u64,
    /// Items that finished after starting or being handed to a pool
    /// (completed, panicked or cancelled).
    pub completed: u64,
    /// Time its items spent being polled.
    pub cpu_time: Duration,
    /// Items found hogging a CPU (a poll over the runtime's
    /// [`cpu_hog_threshold`](crate::Builder::cpu_hog_threshold)).
    pub cpu_intensive: u64,
    /// Workers woken or started because one of its items blocked
    /// ([`block_in_place`](crate::block_in_place), or a CPU-intensive
    /// item).
    pub cm_wakeups: u64,
    /// Items queued back to their home pool after running on another pod's
    /// worker.
    pub repatriated: u64,
    /// Items spawned and not finished (active and inactive).
    pub in_flight: usize,
    /// Items handed to a pool and not finished (at most `max_active`).
    pub active: usize,
    /// Items waiting on the inactive list.
    pub inactive: usize,
}

/// A snapshot of every pool and named workqueue of a runtime.
#[derive(Clone, Debug)]
pub struct RuntimeMetrics {
    /// One entry per pool created so far, in creation order.
    pub pools: Vec<PoolMetrics>,
    /// One entry per named workqueue alive, in creation order.
    pub queues: Vec<WorkqueueStats>,
}

impl fmt::Display for RuntimeMetrics {
    /// A table like the kernel's `wq_monitor.py`, one line per pool.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:>4} {:<11} {:>4} {:>8} {:>5} {:>10} {:>9} {:>9} {:>8} {:>7} {:>7} {:>8} {:>10} {:>10}",
            "pool",
            "scope",
            "pod",
            "workers",
            "idle",
            "started",
            "kicks",
            "coalesc",
            "unparks",
            "culled",
            "rsteal",
            "rescued",
            "p50 delay",
            "p99 delay"
        )?;
        for p in &self.pools {
            writeln!(
                f,
                "{:>4} {:<11} {:>4} {:>4}/{:<3} {:>5} {:>10} {:>9} {:>9} {:>8} {:>7} {:>7} {:>8} {:>10} {:>10}",
                p.id,
                p.scope.name(),
                p.pod,
                p.workers,
                p.max_workers,
                p.idle,
                p.items_started,
                p.kicks,
                p.coalesced_kicks,
                p.unparks,
                p.workers_culled,
                p.remote_steals,
                p.rescued,
                fmt_ns(p.sched_delay_ns(0.5)),
                fmt_ns(p.sched_delay_ns(0.99)),
            )?;
        }
        Ok(())
    }
}

fn fmt_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}
