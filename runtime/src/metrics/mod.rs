//! What a runtime counts, and the [`Snapshot`] readers get of it.
//!
//! ```
//! let rt = wq::Runtime::new().unwrap();
//! let before = rt.metrics();
//! rt.block_on(async { wq::spawn(async { 1 }).await.unwrap() });
//! let after = rt.metrics();
//! let d = after.delta(&before);                // the interval's counts and quantiles
//! // (a worker publishes its counts when it idles, so they may lag a poll behind)
//! let started: u64 = d.pools.iter().map(|p| p.counters.started).sum();
//! println!("{started} polls in {:?}", d.interval.unwrap());
//! println!("{after}");                         // a table like the kernel's wq_monitor.py
//! let text = after.to_prometheus();            // the Prometheus text exposition
//! assert!(text.contains("wq_polls_started_total"));
//! ```
//!
//! This module is a leaf: it defines what is counted and how it is read
//! out; the pools fill it in (`pool::Pool::metrics`). Nothing here is
//! written on a shared line in the hot path:
//! - events that happen under the pool lock anyway (kicks, coalesced kicks,
//!   unparks, workers created and culled) are counted there;
//! - events of a worker (polls started and completed, steals, spins) are
//!   counted in the worker's own plain locals and published when it goes
//!   idle, and every 64 polls, into its slot's cache-padded counters (its
//!   parks there as it parks);
//! - latencies are recorded per slot (scheduling delay, poll duration: the
//!   worker bumps a bucket of its slot's lock-free histogram) and per
//!   stripe (spawn-call times, buffered per spawning thread, into
//!   mutex-guarded bucket counts): the protocol, and what a reader
//!   may see, is in the `capture` module's docs (`runtime/src/metrics/capture.rs`).
//!
//! A reader ([`Runtime::metrics`](crate::Runtime::metrics)) has each pool
//! fill in a [`PoolSnapshot`] (it sums the slots and merges their
//! histograms), then sums the pools per scope ([`ScopeSnapshot`]).
//! [`Snapshot::delta`] turns two snapshots into the interval between them;
//! [`Snapshot::to_prometheus`] writes the Prometheus text format (metric
//! names and bucket bounds in `prometheus.rs`'s docs, and
//! `docs/metrics.md`).

mod capture;
mod prometheus;

pub(crate) use capture::{
    PoolCapture, SAMPLES, WorkerCounters, flush_spawns, new_histogram, record_spawn,
};
pub use prometheus::BUCKET_BOUNDS_SECONDS;

/// The HdrHistogram crate whose `Histogram` [`Latency::histogram`] returns,
/// re-exported so that users name the same version wq was built with.
pub use hdrhistogram;

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Scope;

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scope, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// `Duration`s as seconds (a float) in serialized snapshots.
mod secs {
    use super::*;

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }

    pub(super) mod opt {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&d.as_secs_f64()),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            Option::<f64>::deserialize(d)?
                .map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// Declares [`Counters`] once: its fields, their docs, and the help text of
/// their Prometheus series (`wq_<name>_total`).
macro_rules! counters {
    ($($(#[doc = $doc:literal])+ $name:ident => $metric:literal,)+) => {
        /// A pool's (or a scope's) event counters, in the kernel's
        /// vocabulary where it has a word (`docs/architecture.md`). In a
        /// [`Snapshot::delta`], the events of the interval.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        // A field a newer wq added reads as zero from an older one's JSON.
        #[serde(default)]
        #[non_exhaustive]
        pub struct Counters {
            $($(#[doc = $doc])+ pub $name: u64,)+
        }

        impl Counters {
            /// Every counter: field name, Prometheus name (without `wq_`
            /// and `_total`), help text, value.
            pub fn fields(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
                // Each doc line starts with a space: the first one is cut.
                vec![$((stringify!($name), $metric, concat!($($doc),+).trim_start(), self.$name),)+]
            }

            // Saturating: the counters may come from a deserialized snapshot.
            fn add(&mut self, o: &Counters) {
                $(self.$name = self.$name.saturating_add(o.$name);)+
            }

            fn since(&self, earlier: &Counters) -> Counters {
                Counters { $($name: self.$name.saturating_sub(earlier.$name),)+ }
            }
        }
    };
}

counters! {
    /// Task polls started (the kernel's `PWQ_STAT_STARTED`; a task is
    /// polled once per wake).
    started => "polls_started",
    /// Task polls completed (`PWQ_STAT_COMPLETED`).
    completed => "polls_completed",
    /// Kicks that took the pool lock (work queued from outside the pool,
    /// and chaining; also the wake of an idle worker to attend the I/O
    /// driver that a worker left, which has no work for it). A kick that
    /// finds a worker searching, or every worker running, is skipped
    /// without the lock and not counted.
    kicks => "kicks",
    /// Kicks that took the lock and found a worker already kicked or
    /// searching, and woke nobody.
    coalesced_kicks => "coalesced_kicks",
    /// Worker threads unparked by kicks (those to attend the I/O driver
    /// included).
    unparks => "unparks",
    /// Worker threads created.
    workers_created => "workers_created",
    /// Idle workers culled.
    workers_culled => "workers_culled",
    /// Task polls run by the runtime's rescuer thread because no worker
    /// could be started for the pool, or because every worker it may run
    /// was blocked (`block_in_place`) with work queued (included in
    /// `started`).
    rescued => "rescued",
    /// Workers woken or started because a worker blocked, in
    /// `block_in_place` or in a poll the watchdog found blocking, while
    /// work was queued (the kernel's `CM_WAKEUP`).
    cm_wakeups => "cm_wakeups",
    /// Tasks queued back to this, their home pool, after running on another
    /// pod's worker (the kernel's `REPATRIATED`).
    repatriated => "repatriated",
    /// Polls found using their CPU longer than the CPU-hog threshold; each
    /// let the pool start a worker beyond its maximum while it ran (the
    /// kernel's `CPU_INTENSIVE`). Polls found blocked that long get the
    /// extra worker too, uncounted here.
    cpu_intensive => "cpu_intensive",
    /// Tasks the watchdog moved from a worker's LIFO slot to the pool's
    /// injector because the poll that put them there ran longer than the
    /// CPU-hog threshold (no other worker looks in that slot).
    lifo_stolen => "lifo_stolen",
    /// Workers that parked between two polls because the pool ran more
    /// workers than its limit (its maximum plus the CPU-hog allowances it
    /// holds: one back from `block_in_place` while its replacement ran, or
    /// an allowance revoked): the kernel's `keep_working()` bound.
    stepped_down => "stepped_down",
    /// Acquisitions of the pool lock by the kick / idle / cull protocol
    /// (metrics readers not counted): every one is a cache-line transfer
    /// between the CPUs that share the pool.
    lock_acquisitions => "lock_acquisitions",
    /// Acquisitions that found the lock held and waited for it.
    lock_contended => "lock_contended",
    /// Tasks taken from another pod's pool.
    remote_steals => "remote_steals",
    /// Tasks taken from a sibling worker's deque (counted as a batch
    /// lands: a third worker stealing part of it at that instant leaves
    /// those uncounted).
    sibling_steals => "sibling_steals",
    /// Times a worker parked.
    parks => "parks",
    /// Times a worker found work while spinning before parking.
    spin_hits => "spin_hits",
    /// Times a spinning worker stopped because another thread held its
    /// CPU (a yield that took a scheduler slice); it then looks at the
    /// queues once more, and parks or runs what it found (not a spin hit).
    spin_backoffs => "spin_backoffs",
    /// Worker threads the OS refused to start for this pool.
    worker_start_failures => "worker_start_failures",
}

/// How a pool's (or a scope's) workers stand at the snapshot's instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
// A field a newer wq added reads as zero from an older one's JSON.
#[serde(default)]
#[non_exhaustive]
pub struct WorkerStates {
    /// Workers alive and counted against the pool's maximum: busy, idle or
    /// kicked (and those starting).
    pub total: usize,
    /// Workers running tasks or searching for them (`total - idle -
    /// kicked`).
    pub busy: usize,
    /// Workers parked on the idle list.
    pub idle: usize,
    /// Workers on the kicked list: kicked, not yet running.
    pub kicked: usize,
    /// Workers searching for work: kicked or starting ones, and running
    /// ones scanning the queues or spinning before they park.
    pub searching: usize,
    /// Workers blocked in [`block_in_place`](crate::task::block_in_place),
    /// not counted in `total`.
    pub blocked: usize,
    /// Workers in a CPU-intensive poll, not counted in `total` (the
    /// kernel's `WORKER_CPU_INTENSIVE`): an item of a
    /// [`cpu_intensive`](crate::WorkqueueBuilder::cpu_intensive) queue, or
    /// of a task the watchdog found hogging its CPU.
    pub cpu_intensive: usize,
}

impl WorkerStates {
    /// `busy/idle/kicked/max`, and `+N` for the workers out of the count
    /// (`blocked`, `cpu_intensive`) if any: a pool whose workers all
    /// compute in `cpu_intensive()` items read `0/0/0/2`, as if idle.
    pub fn column(&self, max_workers: usize) -> String {
        let out = self.blocked.saturating_add(self.cpu_intensive);
        let counted = format!("{}/{}/{}/{max_workers}", self.busy, self.idle, self.kicked);
        if out > 0 {
            format!("{counted}+{out}")
        } else {
            counted
        }
    }

    // Saturating: the states may come from a deserialized snapshot.
    fn add(&mut self, o: &WorkerStates) {
        self.total = self.total.saturating_add(o.total);
        self.busy = self.busy.saturating_add(o.busy);
        self.idle = self.idle.saturating_add(o.idle);
        self.kicked = self.kicked.saturating_add(o.kicked);
        self.searching = self.searching.saturating_add(o.searching);
        self.blocked = self.blocked.saturating_add(o.blocked);
        self.cpu_intensive = self.cpu_intensive.saturating_add(o.cpu_intensive);
    }
}

/// One latency's distribution: a summary of an HdrHistogram (1% precision)
/// and its counts at the fixed Prometheus bucket bounds.
///
/// All values are nanoseconds. Empty (`count == 0`): every value is 0.
#[derive(Clone, Default, Serialize, Deserialize)]
// A field a newer wq added reads as zero from an older one's JSON.
#[serde(default)]
#[non_exhaustive]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    /// Smallest sample (in a delta of deserialized snapshots: the bound
    /// of the lowest bucket with a sample of the interval).
    pub min_ns: u64,
    /// Largest sample (in a delta of deserialized snapshots: exact if it
    /// grew in the interval, else the bound of the highest bucket with a
    /// sample of the interval).
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 95th percentile.
    pub p95_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Sum of the samples, each counted at the middle of its HdrHistogram
    /// bucket (within 1%), summed in integers: it never goes down between
    /// two snapshots.
    pub sum_ns: f64,
    /// Samples at or below each of [`BUCKET_BOUNDS_SECONDS`] (cumulative,
    /// one entry per bound; the `+Inf` bucket is `count`). A sample within
    /// the histogram's 1% of a bound may be counted on either side of it.
    pub buckets: Vec<u64>,
    /// The histogram itself; absent in a deserialized snapshot, and when
    /// nothing was recorded (an idle pool's 30 KiB, three times per pool
    /// and snapshot, were most of a big machine's snapshot).
    #[serde(skip)]
    histogram: Option<Box<Histogram<u64>>>,
    /// Taken from this process's histograms (not deserialized): an absent
    /// histogram then means an empty one.
    #[serde(skip)]
    live: bool,
}

impl fmt::Debug for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latency")
            .field("count", &self.count)
            .field("min_ns", &self.min_ns)
            .field("max_ns", &self.max_ns)
            .field("mean_ns", &self.mean_ns)
            .field("p50_ns", &self.p50_ns)
            .field("p99_ns", &self.p99_ns)
            .field("p999_ns", &self.p999_ns)
            .finish_non_exhaustive()
    }
}

impl Latency {
    /// An empty summary taken from this process's histograms.
    pub(crate) fn empty() -> Latency {
        Latency {
            buckets: vec![0; BUCKET_BOUNDS_SECONDS.len()],
            live: true,
            ..Latency::default()
        }
    }

    /// The summary of `h`, if anything was recorded (`None`: nothing).
    pub(crate) fn from_recorded(h: Option<Histogram<u64>>) -> Latency {
        h.map_or_else(Latency::empty, Latency::from_histogram)
    }

    /// The summary of `h`.
    pub(crate) fn from_histogram(h: Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::empty();
        }
        let bounds_ns = prometheus::bounds_ns();
        let mut buckets = vec![0u64; bounds_ns.len()];
        // In integers, as HdrHistogram's mean sums (each sample at its
        // bucket's middle), so that a later snapshot's sum is never below
        // an earlier one's (mean times count, in floating point, could be:
        // a Prometheus `_sum` that goes down).
        let mut sum_ns: u128 = 0;
        for v in h.iter_recorded() {
            // The bucket's lowest value: a sample recorded exactly at a
            // bound counts at or below it.
            let value = h.lowest_equivalent(v.value_iterated_to());
            let n = v.count_at_value();
            sum_ns += u128::from(h.median_equivalent(v.value_iterated_to())) * u128::from(n);
            // Counted in every bucket whose bound is at or above it.
            let first = bounds_ns.partition_point(|&b| b < value);
            for b in &mut buckets[first..] {
                *b += n;
            }
        }
        Latency {
            count: h.len(),
            min_ns: h.min(),
            max_ns: h.max(),
            mean_ns: h.mean(),
            p50_ns: h.value_at_quantile(0.5),
            p90_ns: h.value_at_quantile(0.9),
            p95_ns: h.value_at_quantile(0.95),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            sum_ns: sum_ns as f64,
            buckets,
            histogram: Some(Box::new(h)),
            live: true,
        }
    }

    /// The value at quantile `q` (0.0..=1.0), nanoseconds: from the
    /// histogram where the snapshot has it, else the upper bound of the
    /// bucket it falls in (the largest sample for the `+Inf` bucket).
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if let Some(h) = &self.histogram {
            return h.value_at_quantile(q);
        }
        if self.count == 0 {
            return 0;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let bounds = prometheus::bounds_ns();
        // A deserialized snapshot's buckets come from elsewhere (another wq
        // version, a server that is not one): a bucket beyond the bounds
        // known here reads as the `+Inf` bucket, never a panic.
        match self.buckets.iter().position(|&c| c >= rank) {
            Some(i) => bounds
                .get(i)
                .map_or(self.max_ns, |b| (*b).min(self.max_ns.max(1))),
            None => self.max_ns,
        }
    }

    /// The histogram, where the snapshot has it: not in a deserialized
    /// one, nor where nothing was recorded.
    pub fn histogram(&self) -> Option<&Histogram<u64>> {
        self.histogram.as_deref()
    }

    /// Adds the samples of `others` (live summaries) to this one,
    /// summarized once.
    fn merge_all<'a>(&mut self, others: impl Iterator<Item = &'a Latency>) {
        let mut h: Option<Histogram<u64>> = self.histogram.take().map(|h| *h);
        for o in others.filter_map(|o| o.histogram.as_deref()) {
            let _ = h.get_or_insert_with(new_histogram).add(o);
        }
        *self = Latency::from_recorded(h);
    }

    /// The samples recorded after `earlier`.
    fn since(&self, earlier: &Latency) -> Latency {
        if self.live && earlier.live {
            return match (&self.histogram, &earlier.histogram) {
                // Nothing recorded now: nothing since.
                (None, _) => Latency::empty(),
                (Some(now), None) => Latency::from_histogram((**now).clone()),
                (Some(now), Some(then)) => {
                    let mut h = (**now).clone();
                    // Counts only grow between two snapshots of one pool.
                    match h.subtract(&**then) {
                        Ok(()) => Latency::from_histogram(h),
                        Err(_) => Latency::empty(),
                    }
                }
            };
        }
        // Deserialized snapshots: counts and buckets only; quantiles from
        // the buckets' differences.
        let buckets: Vec<u64> = self
            .buckets
            .iter()
            .zip(earlier.buckets.iter().chain(std::iter::repeat(&0)))
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let count = self.count.saturating_sub(earlier.count);
        let sum_ns = (self.sum_ns - earlier.sum_ns).max(0.0);
        let mut d = Latency {
            count,
            min_ns: 0,
            max_ns: if count > 0 { self.max_ns } else { 0 },
            mean_ns: if count > 0 {
                sum_ns / count as f64
            } else {
                0.0
            },
            sum_ns,
            buckets,
            ..Latency::default()
        };
        // The lifetime maximum is the interval's only if it grew in it;
        // else the interval's largest sample is at most its highest
        // bucket's bound (it reported a startup stall in every interval).
        if count > 0 && self.max_ns <= earlier.max_ns {
            d.max_ns = d.quantile_ns(1.0);
        }
        d.p50_ns = d.quantile_ns(0.5);
        d.p90_ns = d.quantile_ns(0.9);
        d.p95_ns = d.quantile_ns(0.95);
        d.p99_ns = d.quantile_ns(0.99);
        d.p999_ns = d.quantile_ns(0.999);
        d.min_ns = if count > 0 { d.quantile_ns(0.0) } else { 0 };
        d
    }
}

/// One worker pool: its pod, its workers' states, its counters and its
/// latencies.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PoolSnapshot {
    /// The pool's runtime-unique id (worker threads are named
    /// `<thread_name>-<id>.<slot>`).
    pub id: usize,
    /// The scope the pool was created for (other scopes whose pod has the
    /// same CPUs share it).
    pub scope: Scope,
    /// The pod's index in that scope.
    pub pod: usize,
    /// The pod's CPUs (OS indices).
    pub cpus: Vec<usize>,
    /// A strict pool: its workers take no work from other pods.
    pub strict: bool,
    /// A high-priority pool.
    pub highpri: bool,
    /// The pool's maximum number of workers.
    pub max_workers: usize,
    /// What its spinning workers watch: the workers' deques and the
    /// injector (`true`: pools of at most four workers, by default), or
    /// the injector only (see `docs/architecture.md`, "Spinning").
    #[serde(default = "watched_deques_before")]
    pub spin_watches_deques: bool,
    /// Its workers now.
    pub workers: WorkerStates,
    /// Tasks alive whose home is this pool (in flight).
    pub tasks: usize,
    /// Event counters.
    pub counters: Counters,
    /// Scheduling delay: queued (spawned or woken) to the start of its
    /// poll.
    pub sched_delay: Latency,
    /// Poll duration (empty unless latency capture is on).
    pub poll_time: Latency,
    /// Spawn-call time: how long a spawn onto this pool took its caller
    /// (empty unless latency capture is on).
    pub spawn_time: Latency,
}

/// What a snapshot from a runtime older than the field says: its
/// spinners watched the deques.
fn watched_deques_before() -> bool {
    true
}

impl PoolSnapshot {
    /// A snapshot with the pool's identity and workers; the caller (the
    /// pool) fills in the rest.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: usize,
        scope: Scope,
        pod: usize,
        cpus: Vec<usize>,
        strict: bool,
        highpri: bool,
        max_workers: usize,
        workers: WorkerStates,
    ) -> PoolSnapshot {
        PoolSnapshot {
            id,
            scope,
            pod,
            cpus,
            strict,
            highpri,
            max_workers,
            spin_watches_deques: false,
            workers,
            tasks: 0,
            counters: Counters::default(),
            sched_delay: Latency::default(),
            poll_time: Latency::default(),
            spawn_time: Latency::default(),
        }
    }

    /// Workers' states from the pool lock's view.
    pub(crate) fn worker_states(
        total: usize,
        idle: usize,
        kicked: usize,
        searching: usize,
        blocked: usize,
        cpu_intensive: usize,
    ) -> WorkerStates {
        WorkerStates {
            total,
            busy: total.saturating_sub(idle + kicked),
            idle,
            kicked,
            searching,
            blocked,
            cpu_intensive,
        }
    }

    /// Adds one worker slot's published counters and histograms.
    pub(crate) fn add_worker(
        &mut self,
        c: &WorkerCounters,
        sched: &mut Option<Histogram<u64>>,
        poll: &mut Option<Histogram<u64>>,
    ) {
        use std::sync::atomic::Ordering::{Acquire, Relaxed};
        let k = &mut self.counters;
        // `completed` first: its writers release it after `started`, so
        // the `started` read after it is at least as new (never fewer
        // polls started than completed in one snapshot).
        let completed = c.completed.load(Acquire);
        #[cfg(all(test, not(loom)))]
        tests::BETWEEN_LOADS.with(|h| h.take().map(|f| f()));
        k.started += c.started.load(Relaxed);
        k.completed += completed;
        k.remote_steals += c.remote_steals.load(Relaxed);
        k.sibling_steals += c.sibling_steals.load(Relaxed);
        k.parks += c.parks.load(Relaxed);
        k.spin_hits += c.spin_hits.load(Relaxed);
        k.spin_backoffs += c.spin_backoffs.load(Relaxed);
        c.sched_delay.merge_into_recorded(sched);
        c.poll_time.merge_into_recorded(poll);
    }

    /// Sets the merged histograms (`None`: nothing recorded).
    pub(crate) fn set_latencies(
        &mut self,
        sched: Option<Histogram<u64>>,
        poll: Option<Histogram<u64>>,
        spawn: Option<Histogram<u64>>,
    ) {
        self.sched_delay = Latency::from_recorded(sched);
        self.poll_time = Latency::from_recorded(poll);
        self.spawn_time = Latency::from_recorded(spawn);
    }

    /// The pod's CPUs as a compact list, `0-3,8` (the kernel's
    /// `wq_dump.py`).
    pub fn cpu_list(&self) -> String {
        cpu_list(&self.cpus)
    }

    fn since(&self, earlier: Option<&PoolSnapshot>) -> PoolSnapshot {
        let Some(e) = earlier else {
            return self.clone();
        };
        // Field by field: `..self.clone()` copied the three histograms
        // only to drop them (tens of KiB a pool, each dashboard second).
        PoolSnapshot {
            id: self.id,
            scope: self.scope,
            pod: self.pod,
            cpus: self.cpus.clone(),
            strict: self.strict,
            highpri: self.highpri,
            max_workers: self.max_workers,
            spin_watches_deques: self.spin_watches_deques,
            workers: self.workers,
            tasks: self.tasks,
            counters: self.counters.since(&e.counters),
            sched_delay: self.sched_delay.since(&e.sched_delay),
            poll_time: self.poll_time.since(&e.poll_time),
            spawn_time: self.spawn_time.since(&e.spawn_time),
        }
    }
}

/// The pools created for one scope, summed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScopeSnapshot {
    /// The scope.
    pub scope: Scope,
    /// Pools created for it so far.
    pub pools: usize,
    /// Their workers.
    pub workers: WorkerStates,
    /// Their tasks alive.
    pub tasks: usize,
    /// Their counters, summed.
    pub counters: Counters,
    /// Their scheduling delays, merged.
    pub sched_delay: Latency,
    /// Their poll durations, merged.
    pub poll_time: Latency,
    /// Their spawn-call times, merged.
    pub spawn_time: Latency,
}

/// A workqueue's attributes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
/// `tools/workqueue/wq_monitor.py` prints them). In a [`Snapshot::delta`],
/// the counters are the interval's and the gauges (`in_flight`, `active`,
/// `inactive`) are the later snapshot's.
///
/// An item is counted at its end, which its worker runs right after its
/// next look at its queues (the deferred end, `docs/architecture.md`):
/// its `JoinHandle` may answer a moment before. After a
/// [`flush`](crate::Workqueue::flush), every item queued before it is
/// counted.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkqueueStats {
    /// The queue's name.
    pub name: String,
    /// Its attributes now.
    pub attrs: WorkqueueAttrs,
    /// Items that started (were polled once).
    pub started: u64,
    /// Items that finished after starting or being handed to a pool
    /// with a slot of `max_active` (completed, panicked or cancelled). An
    /// item aborted while it waited on the inactive list counts in neither
    /// `started` nor `completed` (it leaves `in_flight` and `inactive`).
    pub completed: u64,
    /// Time its items spent being polled (seconds, in a serialized
    /// snapshot); on a worker a poll is timed from the worker's clock
    /// read as its previous poll ended, or as it came back from idle
    /// (what the worker did between included: its look at its queues,
    /// the end of the item it ran before), and an item's last poll there to
    /// the end of its run (its future's drop and its result handed over
    /// included).
    #[serde(with = "secs")]
    pub cpu_time: Duration,
    /// Items found hogging a CPU (a poll over the runtime's
    /// [`cpu_hog_threshold`](crate::Builder::cpu_hog_threshold)).
    pub cpu_intensive: u64,
    /// Workers woken or started because one of its items blocked
    /// ([`block_in_place`](crate::block_in_place), or a poll the watchdog
    /// found blocking) while work was queued in its pool.
    pub cm_wakeups: u64,
    /// Items queued back to their home pool after running on another pod's
    /// worker.
    pub repatriated: u64,
    /// Spawns the queue refused (a `spawn`'s future dropped, its handle
    /// resolving to a refused [`JoinError`](crate::JoinError); a
    /// `try_spawn`'s future given back, so one spawned again later counts
    /// here and, when it runs, in `started` too): spawned
    /// from outside the queue during a [`drain`](crate::Workqueue::drain),
    /// after the runtime shut down, or with over a billion in flight. The
    /// first refusal of a draining or full queue is also logged (`log`,
    /// warn), as the kernel warns once of work queued on a draining
    /// workqueue.
    #[serde(default)]
    pub refused: u64,
    /// Items spawned and not finished: active, inactive, and an aborted
    /// waiting item on its way to a worker to be dropped (neither).
    pub in_flight: usize,
    /// Items handed to a pool with a slot of `max_active` and not
    /// finished (an aborted waiting item, sent to a pool only to be
    /// dropped there, holds no slot and is not counted): at most `max_active`,
    /// except while items released before `set_max_active` lowered it
    /// finish (and, for an instant, a slot leased for a batch of spawns).
    pub active: usize,
    /// Items waiting on the inactive list.
    pub inactive: usize,
}

/// The most names whose dropped queues' counters a runtime keeps
/// ([`Snapshot::retired_queues`]).
pub const RETIRED_QUEUE_NAMES: usize = 1024;

impl WorkqueueStats {
    /// These counters as a dropped queue's: the gauges and `max_active`
    /// zero.
    pub(crate) fn retired(mut self) -> WorkqueueStats {
        self.in_flight = 0;
        self.active = 0;
        self.inactive = 0;
        self.attrs.max_active = 0;
        self
    }

    /// Adds `o`'s counts and gauges (and its `max_active`) to these.
    pub(crate) fn absorb(&mut self, o: &WorkqueueStats) {
        self.started = self.started.saturating_add(o.started);
        self.completed = self.completed.saturating_add(o.completed);
        self.cpu_time = self.cpu_time.saturating_add(o.cpu_time);
        self.cpu_intensive = self.cpu_intensive.saturating_add(o.cpu_intensive);
        self.cm_wakeups = self.cm_wakeups.saturating_add(o.cm_wakeups);
        self.repatriated = self.repatriated.saturating_add(o.repatriated);
        self.refused = self.refused.saturating_add(o.refused);
        self.in_flight = self.in_flight.saturating_add(o.in_flight);
        self.active = self.active.saturating_add(o.active);
        self.inactive = self.inactive.saturating_add(o.inactive);
        self.attrs.max_active = self.attrs.max_active.saturating_add(o.attrs.max_active);
    }

    fn since(&self, e: &WorkqueueStats) -> WorkqueueStats {
        WorkqueueStats {
            started: self.started.saturating_sub(e.started),
            completed: self.completed.saturating_sub(e.completed),
            cpu_time: self.cpu_time.saturating_sub(e.cpu_time),
            cpu_intensive: self.cpu_intensive.saturating_sub(e.cpu_intensive),
            cm_wakeups: self.cm_wakeups.saturating_sub(e.cm_wakeups),
            repatriated: self.repatriated.saturating_sub(e.repatriated),
            refused: self.refused.saturating_sub(e.refused),
            ..self.clone()
        }
    }
}

/// The blocking pool's threads and jobs
/// ([`spawn_blocking`](crate::spawn_blocking)). In a [`Snapshot::delta`],
/// `jobs` and `start_failures` are the interval's, the others the later
/// snapshot's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BlockingStats {
    /// Threads alive: running a job, idle, or being started.
    pub threads: usize,
    /// Of them, idle: waiting for a job (and exiting after
    /// [`Builder::blocking_keep_alive`](crate::Builder::blocking_keep_alive)).
    pub idle: usize,
    /// Jobs queued that no thread runs yet: every thread busy at
    /// [`max_threads`](BlockingStats::max_threads), or one starting.
    pub queued: usize,
    /// The most threads at once
    /// ([`Builder::max_blocking_threads`](crate::Builder::max_blocking_threads)).
    pub max_threads: usize,
    /// Jobs queued so far.
    pub jobs: u64,
    /// Thread starts the OS refused (jobs then wait; see
    /// [`spawn_blocking`](crate::spawn_blocking)).
    pub start_failures: u64,
}

impl BlockingStats {
    /// The counters since `earlier`; the gauges these.
    fn since(&self, earlier: &BlockingStats) -> BlockingStats {
        BlockingStats {
            jobs: self.jobs.saturating_sub(earlier.jobs),
            start_failures: self.start_failures.saturating_sub(earlier.start_failures),
            ..*self
        }
    }
}

/// A runtime's metrics at one instant ([`Runtime::metrics`](crate::Runtime::metrics)),
/// or over an interval ([`Snapshot::delta`]): every pool, every scope in
/// use, every named workqueue.
///
/// Serializable (`serde`): durations as seconds, latencies as
/// nanoseconds; the histograms themselves are left out (a deserialized
/// snapshot has the summaries and the bucket counts).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// When it was taken: time since the runtime was built.
    #[serde(with = "secs")]
    pub uptime: Duration,
    /// For a [`Snapshot::delta`]: the interval's length (counters and
    /// histogram counts are the interval's); `None` for a snapshot.
    #[serde(with = "secs::opt")]
    pub interval: Option<Duration>,
    /// Whether latency capture is on
    /// ([`Builder::latency_capture`](crate::Builder::latency_capture)); off,
    /// poll durations and spawn-call times stay empty (scheduling delays
    /// are recorded either way).
    pub latency_capture: bool,
    /// The runtime's worker-thread name prefix, to tell services apart.
    pub thread_name: String,
    /// One entry per pool created so far, in creation order.
    pub pools: Vec<PoolSnapshot>,
    /// The pools summed per the scope they were created for, narrowest
    /// scope first; only scopes with pools.
    pub scopes: Vec<ScopeSnapshot>,
    /// One entry per named workqueue alive, in creation order.
    pub queues: Vec<WorkqueueStats>,
    /// The counters of named workqueues dropped so far, summed per name
    /// (their gauges and `max_active` zero), so that a name's counters in
    /// [`Snapshot::queues_by_name`] (and in Prometheus) never go down
    /// when one of its queues is dropped. At most
    /// [`RETIRED_QUEUE_NAMES`] names (more only while live queues bear
    /// more of them: a name a live queue bears is not forgotten): the
    /// least recently dropped are forgotten first. Empty in a [`Snapshot::delta`] (its queues hold
    /// them already) and in a snapshot from a build before this field.
    #[serde(default)]
    pub retired_queues: Vec<WorkqueueStats>,
    /// The CPUs the process may use at once, as the runtime read them when
    /// it was built (the affinity mask and the cgroup's CPU quota,
    /// `std::thread::available_parallelism`): no pool has more workers
    /// unless [`Builder::max_workers_per_pool`](crate::Builder::max_workers_per_pool)
    /// says so. `None` if unknown (or in a snapshot from a build before
    /// this field).
    #[serde(default)]
    pub cpu_budget: Option<usize>,
    /// The blocking pool. Zero in a snapshot from a build before this
    /// field.
    #[serde(default)]
    pub blocking: BlockingStats,
    /// Tells the runtime from any other, in this process or after a
    /// restart of its service: two snapshots of different instances are
    /// not an interval ([`Snapshot::follows`]). 0 (unknown) in a snapshot
    /// from a build before this field.
    #[serde(default)]
    pub instance: u64,
}

impl Snapshot {
    /// The named workqueues with those of one name summed into one entry
    /// (counters, gauges and `max_active`; the other attributes are the
    /// first's), in order of first appearance. Names need not be unique (a
    /// queue per connection may share one), but a series in Prometheus, or
    /// a queue across two snapshots, is known by its name alone:
    /// [`Snapshot::to_prometheus`] and [`Snapshot::delta`] use this.
    /// The counters of queues dropped so far ([`Snapshot::retired_queues`])
    /// are in their name's entry, so they never go down.
    pub fn queues_by_name(&self) -> Vec<WorkqueueStats> {
        let mut out: Vec<WorkqueueStats> = Vec::with_capacity(self.queues.len());
        // Thousands of queues (one per connection) stay linear.
        let mut at: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for q in self.queues.iter().chain(&self.retired_queues) {
            match at.get(q.name.as_str()) {
                Some(&i) => out[i].absorb(q),
                None => {
                    at.insert(&q.name, out.len());
                    out.push(q.clone());
                }
            }
        }
        out
    }

    /// Assembles a snapshot from its pools and queues (the scopes are
    /// summed here); the blocking pool's figures are the caller's to set.
    pub(crate) fn new(
        uptime: Duration,
        latency_capture: bool,
        thread_name: String,
        cpu_budget: Option<usize>,
        pools: Vec<PoolSnapshot>,
        queues: Vec<WorkqueueStats>,
        retired_queues: Vec<WorkqueueStats>,
    ) -> Snapshot {
        let scopes = Scope::ALL
            .iter()
            .filter_map(|&scope| {
                let mut of = pools.iter().filter(|p| p.scope == scope).peekable();
                of.peek()?;
                let mut s = ScopeSnapshot {
                    scope,
                    pools: 0,
                    workers: WorkerStates::default(),
                    tasks: 0,
                    counters: Counters::default(),
                    sched_delay: Latency::empty(),
                    poll_time: Latency::empty(),
                    spawn_time: Latency::empty(),
                };
                let of: Vec<&PoolSnapshot> = of.collect();
                for p in &of {
                    s.pools += 1;
                    s.workers.add(&p.workers);
                    s.tasks = s.tasks.saturating_add(p.tasks);
                    s.counters.add(&p.counters);
                }
                // Each merged, then summarized once (a summary per pool
                // was a pass over the histogram and five quantile scans
                // per pool).
                s.sched_delay.merge_all(of.iter().map(|p| &p.sched_delay));
                s.poll_time.merge_all(of.iter().map(|p| &p.poll_time));
                s.spawn_time.merge_all(of.iter().map(|p| &p.spawn_time));
                Some(s)
            })
            .collect();
        Snapshot {
            uptime,
            interval: None,
            latency_capture,
            thread_name,
            pools,
            scopes,
            queues,
            retired_queues,
            cpu_budget,
            blocking: BlockingStats::default(),
            instance: 0,
        }
    }

    /// Whether `earlier` is an earlier snapshot of the runtime this one is
    /// of: the same [`instance`](Snapshot::instance) (where both have
    /// one), not a later uptime, and the same thread name (a service that
    /// restarted between two reads is another instance, and has a
    /// younger uptime).
    pub fn follows(&self, earlier: &Snapshot) -> bool {
        let same = self.instance == 0 || earlier.instance == 0 || self.instance == earlier.instance;
        same && earlier.uptime <= self.uptime && earlier.thread_name == self.thread_name
    }

    /// What happened between `earlier` and this snapshot: counters and
    /// histograms (so their counts and quantiles) are the interval's, the
    /// workers' states and other gauges this snapshot's, and `interval`
    /// its length. Divide a counter by `interval` for a rate. Pools are
    /// matched by id (a pool created meanwhile counts from zero), queues
    /// by name. Works on deserialized snapshots too (quantiles then come
    /// from the bucket counts: see [`Latency::quantile_ns`]). An `earlier`
    /// that this snapshot does not [`follow`](Snapshot::follows)
    /// (a service restarted between two reads) is ignored: the result is
    /// this snapshot, over its whole uptime.
    ///
    /// ```
    /// let rt = wq::Runtime::new().unwrap();
    /// let a = rt.metrics();
    /// for _ in 0..10 {
    ///     rt.block_on(rt.spawn(async {})).unwrap();
    /// }
    /// let d = rt.metrics().delta(&a);
    /// let secs = d.interval.unwrap().as_secs_f64();
    /// let started: u64 = d.scopes.iter().map(|s| s.counters.started).sum();
    /// println!("{:.0} polls/s", started as f64 / secs);
    /// assert!(secs > 0.0);
    /// ```
    pub fn delta(&self, earlier: &Snapshot) -> Snapshot {
        if !self.follows(earlier) {
            // The whole of this one, shaped as every delta: queues summed
            // by name, retired names in them.
            let mut whole = self.clone();
            whole.interval = Some(self.uptime);
            whole.queues = self.queues_by_name();
            whole.retired_queues.clear();
            return whole;
        }
        // By id through a map: a snapshot read from a server (wq-monitor)
        // may hold any number of pools, and a search per pool made each
        // redraw quadratic in them.
        let earlier_pools: std::collections::HashMap<usize, &PoolSnapshot> =
            earlier.pools.iter().map(|e| (e.id, e)).collect();
        let pools: Vec<PoolSnapshot> = self
            .pools
            .iter()
            .map(|p| p.since(earlier_pools.get(&p.id).copied()))
            .collect();
        // Queues are told apart across snapshots by name only: those of
        // one name are summed on both sides first.
        let earlier_queues = earlier.queues_by_name();
        let earlier_at: std::collections::HashMap<&str, &WorkqueueStats> = earlier_queues
            .iter()
            .map(|e| (e.name.as_str(), e))
            .collect();
        let queues = self
            .queues_by_name()
            .iter()
            .map(|q| match earlier_at.get(q.name.as_str()) {
                Some(e) => q.since(e),
                None => q.clone(),
            })
            .collect();
        let mut d = Snapshot::new(
            self.uptime,
            self.latency_capture,
            self.thread_name.clone(),
            self.cpu_budget,
            pools,
            queues,
            Vec::new(),
        );
        d.blocking = self.blocking.since(&earlier.blocking);
        d.instance = self.instance;
        // Either side deserialized (no histograms): a pool's difference
        // then has none either.
        if d.pools.iter().any(|p| !p.sched_delay.live) {
            // Deserialized: the scopes cannot be merged from histograms;
            // take the scopes' own differences.
            d.scopes = self
                .scopes
                .iter()
                .map(
                    |s| match earlier.scopes.iter().find(|e| e.scope == s.scope) {
                        Some(e) => ScopeSnapshot {
                            counters: s.counters.since(&e.counters),
                            sched_delay: s.sched_delay.since(&e.sched_delay),
                            poll_time: s.poll_time.since(&e.poll_time),
                            spawn_time: s.spawn_time.since(&e.spawn_time),
                            ..s.clone()
                        },
                        None => s.clone(),
                    },
                )
                .collect();
        }
        d.interval = Some(self.uptime.saturating_sub(earlier.uptime));
        d
    }

    /// The Prometheus text exposition format (version 0.0.4): see
    /// `prometheus.rs`'s docs for the names, labels and bucket bounds.
    pub fn to_prometheus(&self) -> String {
        prometheus::encode(self)
    }
}

impl fmt::Display for Snapshot {
    /// A table like the kernel's `wq_monitor.py`: one line per pool, then
    /// one per named workqueue.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.interval {
            writeln!(f, "over the last {:.1} s:", i.as_secs_f64())?;
        }
        writeln!(
            f,
            "{:>4} {:<11} {:>4} {:>7} {:>13} {:>10} {:>7} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
            "pool",
            "scope",
            "pod",
            "cpus",
            "wrk b/i/k/max",
            "total",
            "infl",
            "kicks",
            "coalesc",
            "unparks",
            "cm_wake",
            "rescued",
            "p50 delay",
            "p99 delay",
            "p99 poll"
        )?;
        for p in &self.pools {
            let w = &p.workers;
            let c = &p.counters;
            writeln!(
                f,
                "{:>4} {:<11} {:>4} {:>7} {:>13} {:>10} {:>7} {:>9} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
                p.id,
                p.scope.name(),
                p.pod,
                p.cpu_list(),
                w.column(p.max_workers),
                c.started,
                p.tasks,
                c.kicks,
                c.coalesced_kicks,
                c.unparks,
                c.cm_wakeups,
                c.rescued,
                fmt_ns(p.sched_delay.p50_ns),
                fmt_ns(p.sched_delay.p99_ns),
                fmt_ns(p.poll_time.p99_ns),
            )?;
        }
        let b = &self.blocking;
        writeln!(
            f,
            "blocking pool: {} threads ({} idle) of at most {}, {} jobs queued, {} jobs in all, {} refused thread starts",
            b.threads, b.idle, b.max_threads, b.queued, b.jobs, b.start_failures
        )?;
        if !self.queues.is_empty() {
            writeln!(
                f,
                "\n{:<20} {:>10} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8}",
                "workqueue", "total", "infl", "CPUtime", "CPUitsv", "CMW", "RPR", "refused"
            )?;
            for q in &self.queues {
                writeln!(
                    f,
                    "{:<20} {:>10} {:>7} {:>9.3} {:>8} {:>8} {:>8} {:>8}",
                    q.name,
                    q.started,
                    q.in_flight,
                    q.cpu_time.as_secs_f64(),
                    q.cpu_intensive,
                    q.cm_wakeups,
                    q.repatriated,
                    q.refused
                )?;
            }
        }
        Ok(())
    }
}

/// A latency for people: `170ns`, `4.4us`, `1.2ms`, `3.00s`.
pub fn fmt_ns(ns: u64) -> String {
    // A unit's range ends where one decimal rounds up to 1000 of it
    // (999,950 ns was "1000.0us").
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..999_950 => format!("{:.1}us", ns as f64 / 1e3),
        999_950..999_950_000 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

/// `0-3,8,10-11`.
fn cpu_list(cpus: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && Some(cpus[j + 1]) == cpus[j].checked_add(1) {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j == i {
            out.push_str(&cpus[i].to_string());
        } else {
            out.push_str(&format!("{}-{}", cpus[i], cpus[j]));
        }
        i = j + 1;
    }
    out
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    std::thread_local! {
        /// Test hook: runs between `add_worker`'s two loads of a slot's
        /// poll counts, on this thread.
        pub(super) static BETWEEN_LOADS: std::cell::Cell<Option<Box<dyn FnOnce()>>> =
            const { std::cell::Cell::new(None) };
    }

    /// A figure just below a unit's end is shown in the next unit, not as
    /// 1000 of its own.
    #[test]
    fn durations_near_a_units_end_take_the_next_unit() {
        assert_eq!(fmt_ns(999), "999ns");
        assert_eq!(fmt_ns(1_000), "1.0us");
        assert_eq!(fmt_ns(999_949), "999.9us");
        assert_eq!(fmt_ns(999_950), "1.0ms");
        assert_eq!(fmt_ns(999_950_000), "1.00s");
        assert_eq!(fmt_ns(u64::MAX), "18446744073.71s");
    }

    /// The workers column (the `Display` table, wq-monitor) shows the
    /// workers out of the count: two in CPU-intensive polls read `0/0/0/2`,
    /// a pool that looked idle.
    #[test]
    fn the_workers_column_shows_workers_out_of_the_count() {
        let computing = PoolSnapshot::worker_states(0, 0, 0, 0, 0, 2);
        assert_eq!(computing.column(2), "0/0/0/2+2");
        let mixed = PoolSnapshot::worker_states(2, 1, 0, 0, 1, 1);
        assert_eq!(mixed.column(4), "1/1/0/4+2");
        assert_eq!(
            PoolSnapshot::worker_states(1, 1, 0, 0, 0, 0).column(2),
            "0/1/0/2"
        );
    }

    /// A worker publishes its poll counts every 64 polls; a snapshot that
    /// read `started` before a publish and `completed` after it had up to
    /// 64 more polls completed than started. The hook publishes between
    /// the two loads.
    #[test]
    fn a_publish_between_the_loads_never_shows_more_polls_completed_than_started() {
        use std::sync::Arc;
        use std::sync::atomic::Ordering;
        let c = Arc::new(WorkerCounters::default());
        c.started.store(100, Ordering::Relaxed);
        c.completed.store(100, Ordering::Relaxed);
        let writer = c.clone();
        BETWEEN_LOADS.with(|h| {
            h.set(Some(Box::new(move || {
                writer.started.store(164, Ordering::Relaxed);
                writer.completed.store(164, Ordering::Release);
            })))
        });
        let workers = PoolSnapshot::worker_states(1, 0, 0, 0, 0, 0);
        let mut p = PoolSnapshot::new(0, Scope::System, 0, vec![0], false, false, 1, workers);
        p.add_worker(&c, &mut None, &mut None);
        assert!(
            p.counters.completed <= p.counters.started,
            "{} completed, {} started",
            p.counters.completed,
            p.counters.started
        );
        assert_eq!(p.counters.completed, 100);
    }

    fn latency(samples: &[u64]) -> Latency {
        let mut h = new_histogram();
        for &s in samples {
            h.record(s).unwrap();
        }
        Latency::from_histogram(h)
    }

    /// Nothing recorded: no histogram kept (an idle pool's three were
    /// 90 KiB per snapshot), and the summary, its differences and its
    /// merges read as empty, not as a deserialized snapshot's.
    #[test]
    fn an_empty_latency_keeps_no_histogram_and_still_merges_and_subtracts() {
        let empty = Latency::from_recorded(None);
        assert!(empty.histogram().is_none() && empty.live);
        assert_eq!((empty.count, empty.p99_ns), (0, 0));
        assert!(
            Latency::from_histogram(new_histogram())
                .histogram()
                .is_none()
        );
        let some = latency(&[1_000, 2_000, 3_000]);
        // Since an empty one: all of it, as a histogram.
        let d = some.since(&empty);
        assert_eq!(d.count, 3);
        assert!(d.histogram().is_some());
        // Nothing since: empty, live.
        let none = empty.since(&empty);
        assert!(none.live && none.count == 0);
        let same = some.since(&some);
        assert_eq!(same.count, 0);
        assert!(same.histogram().is_none());
        // A scope of an idle pool and a busy one.
        let mut scope = Latency::empty();
        scope.merge_all([&empty, &some, &empty].into_iter());
        assert_eq!((scope.count, scope.max_ns), (3, some.max_ns));
        let mut idle_scope = Latency::empty();
        idle_scope.merge_all([&empty, &empty].into_iter());
        assert!(idle_scope.histogram().is_none() && idle_scope.count == 0);
    }

    #[test]
    fn a_foreign_latency_with_more_buckets_than_known_reads_without_panicking() {
        let mut l = latency(&[1_000; 10]);
        l.histogram = None; // as deserialized
        let known = l.buckets.len();
        l.buckets = vec![0; known];
        l.buckets.push(10); // one bucket beyond the bounds known here
        assert_eq!(l.quantile_ns(0.5), l.max_ns);
        let mut c = Counters::default();
        c.add(&Counters {
            started: u64::MAX,
            ..Counters::default()
        });
        c.add(&Counters {
            started: 1,
            ..Counters::default()
        });
        assert_eq!(c.started, u64::MAX, "saturates, no overflow panic");
        assert_eq!(
            cpu_list(&[usize::MAX - 1, usize::MAX]),
            format!("{}-{}", usize::MAX - 1, usize::MAX)
        );
    }

    #[test]
    fn a_latency_summarizes_its_histogram_and_fills_cumulative_buckets() {
        let l = latency(&[100, 1_000, 10_000, 2_000_000_000]);
        assert_eq!(l.count, 4);
        assert_eq!(l.min_ns, 100);
        assert!((l.max_ns as f64 / 2e9 - 1.0).abs() < 0.01);
        assert_eq!(l.buckets.len(), BUCKET_BOUNDS_SECONDS.len());
        assert!(l.buckets.windows(2).all(|w| w[0] <= w[1]), "cumulative");
        let at = |secs: f64| {
            l.buckets[BUCKET_BOUNDS_SECONDS
                .iter()
                .position(|&b| b == secs)
                .unwrap()]
        };
        assert_eq!(at(1e-7), 1, "100 ns is at or below 0.1 us");
        assert_eq!(at(1e-6), 2);
        assert_eq!(at(1e-5), 3);
        assert_eq!(at(1.0), 3, "2 s is above 1 s");
        assert_eq!(*l.buckets.last().unwrap(), 4);
    }

    #[test]
    fn a_delta_holds_the_intervals_samples_only() {
        let a = latency(&[1_000; 10]);
        let mut later = vec![1_000; 10];
        later.extend([5_000_000; 5]);
        let b = latency(&later);
        let d = b.since(&a);
        assert_eq!(d.count, 5);
        assert!((d.p50_ns as f64 / 5e6 - 1.0).abs() < 0.01, "{d:?}");
        assert!((d.min_ns as f64 / 5e6 - 1.0).abs() < 0.01, "{d:?}");
    }

    #[test]
    fn a_delta_of_deserialized_latencies_uses_the_buckets() {
        let strip = |l: Latency| -> Latency {
            serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap()
        };
        let a = strip(latency(&[1_000; 10]));
        let mut later = vec![1_000; 10];
        later.extend([3_000_000; 5]);
        let b = strip(latency(&later));
        assert!(b.histogram().is_none());
        let d = b.since(&a);
        assert_eq!(d.count, 5);
        // 3 ms falls in the (2.5 ms, 5 ms] bucket; capped at the max seen.
        assert!(
            (d.p99_ns as f64 / 3e6 - 1.0).abs() < 0.01,
            "p99 {} ns",
            d.p99_ns
        );
        assert_eq!(d.quantile_ns(0.5), b.max_ns, "capped at the largest sample");
        assert_eq!(d.max_ns, b.max_ns, "the maximum grew in the interval");
    }

    /// An old maximum (a startup stall) is not the maximum of every later
    /// interval of a deserialized delta: the interval's samples bound it.
    #[test]
    fn a_deserialized_delta_bounds_its_maximum_by_its_own_samples() {
        let strip = |l: Latency| -> Latency {
            serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap()
        };
        let a = strip(latency(&[30_000_000_000]));
        let mut later = vec![30_000_000_000];
        later.extend([1_000; 5]);
        let b = strip(latency(&later));
        let d = b.since(&a);
        assert_eq!(d.count, 5);
        assert!(d.max_ns <= 2_500, "max {} ns", d.max_ns);
    }

    #[test]
    fn counters_subtract_and_list_every_field() {
        let a = Counters {
            started: 5,
            kicks: 2,
            ..Counters::default()
        };
        let b = Counters {
            started: 12,
            kicks: 3,
            ..Counters::default()
        };
        let d = b.since(&a);
        assert_eq!((d.started, d.kicks), (7, 1));
        let fields = d.fields();
        assert_eq!(fields.len(), 21);
        assert!(fields.iter().all(|(_, _, help, _)| !help.is_empty()));
        let mut names: Vec<_> = fields.iter().map(|f| f.1).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 21, "distinct metric names");
    }

    #[test]
    fn cpu_lists_are_compact() {
        assert_eq!(cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(cpu_list(&[5]), "5");
        assert_eq!(cpu_list(&[]), "");
    }
}
