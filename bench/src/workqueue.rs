//! The kernel's `lib/test_workqueue.c` shape on wq, and the same on tokio.
//!
//! For each scope and wake mode a fresh runtime is built; `producers`
//! threads (each pinned to its own CPU, released together by a barrier)
//! each queue `items` items one at a time: only the spawn call is timed
//! (enqueue latency), then the producer waits for its item to run (a flag
//! plus `thread::park`, see [`Completion`]); spawn to producer resumed is
//! the round trip, split at the item's signal into the runtime's part
//! (spawn to signal) and the wakeup (from the later of the signal and the
//! spawn call's return to the producer running again: the signaller's
//! `unpark` and the operating system's wakeup). items/s is all items over the wall time from the barrier
//! to the last producer done. Every figure reported is the median of
//! `repeat` runs; the runs of one repeat are interleaved over the rows (the
//! first row rotating from repeat to repeat) so drift and a neighbour's
//! compile spread over all of them.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use wq::{Scope, WakeMode};

use crate::args::Args;
use crate::completion::Completion;
use crate::stats::{self, Quantiles, fmt_count, fmt_ns, fmt_pct, median, pct_change};

/// Settings of one `workqueue` invocation.
#[derive(Clone, Debug)]
pub struct Config {
    /// Producer threads.
    pub producers: usize,
    /// Timed items per producer.
    pub items: usize,
    /// Untimed items per producer before the barrier.
    pub warmup: usize,
    /// Runs per row; medians are reported.
    pub repeat: usize,
    /// hwloc synthetic description, or `None` for this machine.
    pub topology: Option<String>,
    /// Scopes, narrowest first.
    pub scopes: Vec<Scope>,
    /// Wake modes (the gain columns compare `deferred` with `under_lock`,
    /// whichever is given first).
    pub modes: Vec<WakeMode>,
    /// Worker threads of the tokio row.
    pub tokio_workers: usize,
    /// wq's worker spin before parking and spinners per pool.
    pub spin: Spin,
    /// wq's `max_workers_per_pool` (`None`: the runtime's default, the
    /// pod's CPUs up to the CPUs this process may use).
    pub workers: Option<usize>,
    /// Pin producer `i` to the `i`-th CPU this process may use.
    pub pin: bool,
    /// Skip the tokio row.
    pub no_tokio: bool,
    /// Add a row per scope through a named workqueue.
    pub named: bool,
    /// Add a row per scope with latency capture off (deferred wake).
    pub capture_off: bool,
}

/// The valued options `workqueue` takes.
pub const OPTIONS: &[&str] = &[
    "producers",
    "items",
    "warmup",
    "repeat",
    "topology",
    "scopes",
    "modes",
    "tokio-workers",
    "spin-us",
    "spinners",
    "spin-watch",
    "workers",
    "plot-dir",
    "busy-neighbours",
];
/// Its flags.
pub const FLAGS: &[&str] = &["json", "no-pin", "no-tokio", "named", "capture-off"];

/// wq's spin settings from the command line (`None`: the runtime's
/// default).
#[derive(Clone, Copy, Debug, Default)]
pub struct Spin {
    /// `--spin-us US`: `Builder::worker_spin`.
    pub spin: Option<Duration>,
    /// `--spinners N`: `Builder::spinning_workers`.
    pub spinners: Option<usize>,
    /// `--spin-watch deques|injector`: what spinners watch
    /// (`Builder::spin_watches_deques`; `None`: the runtime's choice by
    /// pool width).
    pub watch_deques: Option<bool>,
}

impl Spin {
    /// `b` with these settings.
    pub fn apply(self, mut b: wq::Builder) -> wq::Builder {
        if let Some(s) = self.spin {
            b = b.worker_spin(s);
        }
        if let Some(n) = self.spinners {
            b = b.spinning_workers(n);
        }
        if let Some(w) = self.watch_deques {
            b = b.spin_watches_deques(w);
        }
        b
    }

    /// The settings as JSON fields (null: the runtime's default).
    pub fn json(self) -> Value {
        json!({
            "worker_spin_us": self.spin.map(|s| s.as_secs_f64() * 1e6),
            "spinning_workers": self.spinners,
            "spin_watches_deques": self.watch_deques,
        })
    }
}

/// `--spin-us US` and `--spinners N`: wq's worker spin and the most
/// workers of a pool that spin at once, if given.
pub fn spin_arg(a: &Args) -> Result<Spin, String> {
    let spin = a
        .raw("spin-us")
        .map(|v| v.parse::<u64>().map(Duration::from_micros))
        .transpose()
        .map_err(|e| format!("--spin-us: {e} (give microseconds, 0 to park at once)"))?;
    let spinners = match a.raw("spinners").map(str::parse::<usize>).transpose() {
        Ok(Some(0)) => {
            return Err("--spinners 0: give at least 1 (--spin-us 0 parks at once)".into());
        }
        Ok(n) => n,
        Err(e) => {
            return Err(format!(
                "--spinners: {e} (give a number of workers, 1 or more)"
            ));
        }
    };
    Ok(Spin {
        spin,
        spinners,
        watch_deques: match a.raw("spin-watch") {
            None => None,
            Some("deques") => Some(true),
            Some("injector") => Some(false),
            Some(other) => {
                return Err(format!(
                    "--spin-watch {other:?}: give deques (spinners watch the workers' deques and the injector) or injector (the injector only)"
                ));
            }
        },
    })
}

/// `--workers N`: wq's `max_workers_per_pool`, if given (1 or more).
pub fn workers_arg(a: &Args) -> Result<Option<usize>, String> {
    if a.raw("workers").is_none() {
        return Ok(None);
    }
    // Through `get`: its limit (as `shapes --workers` has).
    match a.get::<usize>("workers", 0) {
        Ok(0) => Err("--workers 0: a pool needs at least one worker; give 1 or more".into()),
        Ok(n) => Ok(Some(n)),
        Err(e) => Err(format!("{e} (give a number of workers per pool)")),
    }
}

impl Config {
    /// From the command line; defaults sized for a 2-CPU machine.
    pub fn from_args(a: &Args) -> Result<Config, String> {
        let cpus = crate::machine::online_cpus();
        let items = a.count("items", 200_000usize)?;
        let producers = a.count("producers", cpus)?;
        if a.flag("no-tokio") && a.raw("tokio-workers").is_some() {
            return Err("--tokio-workers with --no-tokio: there is no tokio row to size; give one or the other".into());
        }
        let modes: Vec<WakeMode> = a.list("modes", WakeMode::ALL.to_vec())?;
        if !modes.contains(&WakeMode::Deferred) {
            for flag in ["named", "capture-off"] {
                if a.flag(flag) {
                    return Err(format!(
                        "--{flag} rows are measured against the deferred `wq::spawn` rows, which --modes leaves out: add deferred to --modes"
                    ));
                }
            }
        }
        Config {
            producers,
            items,
            warmup: a.get("warmup", (items / 20).clamp(1, 2000))?,
            repeat: a.count("repeat", 5usize)?,
            topology: a.raw("topology").map(str::to_owned),
            scopes: a.list("scopes", Scope::ALL.to_vec())?,
            modes,
            tokio_workers: a.count("tokio-workers", cpus)?,
            spin: spin_arg(a)?,
            workers: workers_arg(a)?,
            pin: !a.flag("no-pin"),
            no_tokio: a.flag("no-tokio"),
            named: a.flag("named"),
            capture_off: a.flag("capture-off"),
        }
        .fair_warmup()
    }

    /// Refuses `--warmup 0` beside tokio: wq starts its workers on demand
    /// (in the first items, timed without a warm-up), tokio at build.
    pub fn fair_warmup(self) -> Result<Config, String> {
        if self.warmup == 0 && !self.no_tokio {
            return Err("--warmup 0 beside tokio would time wq's worker starts (on demand, in the first items) but not tokio's (at build): give --warmup 1 or more (or, to `workqueue`, --no-tokio)".into());
        }
        Ok(self)
    }
}

impl Config {
    /// Items run per row, warm-up included: what wq's counters (read once
    /// per run, after it) are divided by for their per-item figures.
    pub fn counted_items(&self) -> f64 {
        (self.producers * (self.items + self.warmup)) as f64
    }
}

/// wq's own counters over one run, summed over its pools.
#[derive(Clone, Copy, Debug, Default)]
pub struct WqCounters {
    /// Pools created.
    pub pools: usize,
    /// Worker threads created.
    pub workers_created: u64,
    /// Kicks.
    pub kicks: u64,
    /// Kicks that found a worker already kicked.
    pub coalesced: u64,
    /// Worker threads unparked by kicks.
    pub unparks: u64,
    /// Times a worker parked.
    pub parks: u64,
    /// Pool-lock acquisitions.
    pub lock_acquisitions: u64,
    /// Pool-lock acquisitions that waited.
    pub lock_contended: u64,
    /// Times a spinning worker found work before parking.
    pub spin_hits: u64,
    /// Times a spinning worker stopped because another thread wanted its
    /// CPU.
    pub spin_backoffs: u64,
    /// Pools whose spinners watched the deques too (the others: the
    /// injector only).
    pub pools_watching_deques: usize,
    /// Scheduling delay p50, ns (recorded whether latency capture is on
    /// or off); `None` when nothing was recorded: not a delay of 0.
    pub sched_p50: Option<f64>,
    /// Scheduling delay p99, ns, as `sched_p50`.
    pub sched_p99: Option<f64>,
}

impl WqCounters {
    fn of(rt: &wq::Runtime) -> WqCounters {
        let m = rt.metrics();
        let mut c = WqCounters {
            pools: m.pools.len(),
            ..WqCounters::default()
        };
        let mut h = wq_histogram();
        for p in &m.pools {
            c.workers_created += p.counters.workers_created;
            c.kicks += p.counters.kicks;
            c.coalesced += p.counters.coalesced_kicks;
            c.unparks += p.counters.unparks;
            c.parks += p.counters.parks;
            c.lock_acquisitions += p.counters.lock_acquisitions;
            c.lock_contended += p.counters.lock_contended;
            c.spin_hits += p.counters.spin_hits;
            c.spin_backoffs += p.counters.spin_backoffs;
            c.pools_watching_deques += usize::from(p.spin_watches_deques);
            if let Some(ph) = p.sched_delay.histogram() {
                let _ = h.add(ph);
            }
        }
        if !h.is_empty() {
            c.sched_p50 = Some(h.value_at_quantile(0.5) as f64);
            c.sched_p99 = Some(h.value_at_quantile(0.99) as f64);
        }
        c
    }
}

fn wq_histogram() -> Histogram<u64> {
    // The runtime's own bounds (1 ns..60 s, 2 digits), so `add` never fails.
    Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid bounds")
}

/// One run of one row.
#[derive(Clone, Debug)]
pub struct Run {
    /// Items per second, all producers.
    pub items_per_s: f64,
    /// Enqueue (spawn call) latency.
    pub enqueue: Quantiles,
    /// Spawn to producer resumed.
    pub round_trip: Quantiles,
    /// Spawn to the item's signal (the runtime's part of the round trip:
    /// the spawn, the item queued, found, polled).
    pub to_signal: Quantiles,
    /// The item's signal (or the spawn call's return, if later) to its
    /// producer resumed (the signaller's `unpark` and the operating system's
    /// part: a parked thread woken, the same `unpark` on every row).
    pub wakeup: Quantiles,
    /// wq's counters (none for tokio).
    pub wq: Option<WqCounters>,
}

/// What a row measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// wq at a scope in a wake mode.
    Wq(Scope, WakeMode),
    /// wq through a named workqueue (default `max_active`) at a scope,
    /// deferred wake: what a queue's accounting costs over `Wq`.
    WqNamed(Scope),
    /// wq at a scope, deferred wake, with `Builder::latency_capture(false)`:
    /// what the latency histograms cost.
    WqNoCapture(Scope),
    /// tokio's multi-thread runtime.
    Tokio,
}

/// One row: a target and its runs.
#[derive(Clone, Debug)]
pub struct Row {
    /// What ran.
    pub target: Target,
    /// One per repeat.
    pub runs: Vec<Run>,
}

impl Row {
    /// Median items/s.
    pub fn items_per_s(&self) -> f64 {
        median(&self.runs.iter().map(|r| r.items_per_s).collect::<Vec<_>>())
    }
    /// Median enqueue quantiles.
    pub fn enqueue(&self) -> Quantiles {
        Quantiles::median_of(&self.runs.iter().map(|r| r.enqueue).collect::<Vec<_>>())
    }
    /// Median round-trip quantiles.
    pub fn round_trip(&self) -> Quantiles {
        Quantiles::median_of(&self.runs.iter().map(|r| r.round_trip).collect::<Vec<_>>())
    }
    /// Median spawn-to-signal quantiles.
    pub fn to_signal(&self) -> Quantiles {
        Quantiles::median_of(&self.runs.iter().map(|r| r.to_signal).collect::<Vec<_>>())
    }
    /// Median signal-to-wakeup quantiles.
    pub fn wakeup(&self) -> Quantiles {
        Quantiles::median_of(&self.runs.iter().map(|r| r.wakeup).collect::<Vec<_>>())
    }
    /// Median of a wq counter per item.
    fn per_item(&self, items: f64, f: fn(&WqCounters) -> f64) -> f64 {
        median(
            &self
                .runs
                .iter()
                .filter_map(|r| r.wq.as_ref().map(f))
                .map(|v| v / items)
                .collect::<Vec<_>>(),
        )
    }
    /// Median pool-lock acquisitions per item (wq rows; NaN for tokio).
    pub fn lock_acquisitions_per_item(&self, items: f64) -> f64 {
        self.per_item(items, |c| c.lock_acquisitions as f64)
    }
    /// Name for tables: `wq cache deferred`, `tokio`.
    pub fn label(&self) -> String {
        match self.target {
            Target::Wq(s, m) => format!("wq {s} {m}"),
            Target::WqNamed(s) => format!("wq {s} named queue"),
            Target::WqNoCapture(s) => format!("wq {s} capture off"),
            Target::Tokio => "tokio".to_owned(),
        }
    }
}

/// Builds a wq runtime of one row (the topology, spin and workers of
/// `cfg`), latency capture on (the wq rows: their scheduling-delay columns
/// need it) or off (the runtime's default).
pub fn build_wq(
    cfg: &Config,
    scope: Scope,
    mode: WakeMode,
    capture: bool,
) -> Result<wq::Runtime, String> {
    let mut b = wq::Runtime::builder()
        .default_scope(scope)
        .wake_mode(mode)
        .latency_capture(capture);
    if let Some(t) = &cfg.topology {
        b = b.topology(wq::Topology::synthetic(t).map_err(|e| e.to_string())?);
    }
    b = cfg.spin.apply(b);
    if let Some(n) = cfg.workers {
        b = b.max_workers_per_pool(n);
    }
    b.build().map_err(|e| e.to_string())
}

/// Builds the tokio runtime of the comparison (multi-thread, `workers`),
/// with its I/O and time drivers, as `#[tokio::main]` and tokio's own
/// benchmarks build it: wq's are always on (an idle worker parks in its
/// epoll), and without them tokio's idle workers parked on a plain futex
/// and it carried no driver memory.
pub fn build_tokio(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// What [`run_once`] measured: items/s, and the histograms of the enqueue
/// (spawn call), the round trip (spawn to producer resumed), and its two
/// parts (spawn to the item's signal, signal to producer resumed).
#[derive(Debug)]
pub struct Measured {
    /// Items per second, all producers.
    pub items_per_s: f64,
    /// The spawn calls.
    pub enqueue: Histogram<u64>,
    /// Spawn to producer resumed.
    pub round_trip: Histogram<u64>,
    /// Spawn to the item's signal.
    pub to_signal: Histogram<u64>,
    /// The item's signal (or the spawn call's return, if later) to its
    /// producer resumed.
    pub wakeup: Histogram<u64>,
}

impl Measured {
    /// The run of a row.
    fn run(&self, wq: Option<WqCounters>) -> Run {
        Run {
            items_per_s: self.items_per_s,
            enqueue: Quantiles::of(&self.enqueue),
            round_trip: Quantiles::of(&self.round_trip),
            to_signal: Quantiles::of(&self.to_signal),
            wakeup: Quantiles::of(&self.wakeup),
            wq,
        }
    }
}

/// Whether every producer so far was pinned to its CPU (`--no-pin` aside):
/// reported as `producers_pinned`.
static ALL_PINNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether the producers of every run so far were pinned (false with
/// `--no-pin`, or where a pin failed or no CPU list could be read).
pub fn producers_pinned(cfg: &Config) -> bool {
    cfg.pin && ALL_PINNED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The producers' start line: a barrier that a producer which could not
/// start, or panicked before it, breaks (the others were left waiting for
/// it for ever, and the run hung with its busy neighbours spinning).
struct StartLine {
    state: std::sync::Mutex<(usize, bool)>,
    all_in: std::sync::Condvar,
    producers: usize,
}

impl StartLine {
    fn new(producers: usize) -> StartLine {
        StartLine {
            state: std::sync::Mutex::new((0, false)),
            all_in: std::sync::Condvar::new(),
            producers,
        }
    }

    /// Waits for every producer; false if the line was broken.
    fn wait(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += 1;
        if s.0 == self.producers {
            self.all_in.notify_all();
        }
        while s.0 < self.producers && !s.1 {
            s = self.all_in.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        !s.1
    }

    fn r#break(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.all_in.notify_all();
    }
}

/// Breaks the start line if its producer unwinds before reaching it.
struct Arriving<'a>(Option<&'a StartLine>);

impl Drop for Arriving<'_> {
    fn drop(&mut self) {
        if let Some(line) = self.0 {
            line.r#break();
        }
    }
}

/// Runs the producers against `spawn` once. A producer that could not
/// start or that panicked fails the run (the others are released).
pub fn run_once<H, S>(cfg: &Config, spawn: S) -> Result<Measured, String>
where
    S: Fn(Arc<Completion>) -> H + Sync,
{
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if cfg.pin && cores.is_empty() {
        ALL_PINNED.store(false, std::sync::atomic::Ordering::Relaxed);
    }
    let line = StartLine::new(cfg.producers);
    let results: Result<Vec<_>, String> = thread::scope(|s| {
        let mut workers = Vec::with_capacity(cfg.producers);
        for i in 0..cfg.producers {
            let (spawn, line, cores) = (&spawn, &line, &cores);
            let started = thread::Builder::new()
                .name(format!("producer-{i}"))
                .spawn_scoped(s, move || {
                    let mut arriving = Arriving(Some(line));
                    if cfg.pin
                        && !cores.is_empty()
                        && !core_affinity::set_for_current(cores[i % cores.len()])
                    {
                        ALL_PINNED.store(false, std::sync::atomic::Ordering::Relaxed);
                        static SAID: std::sync::Once = std::sync::Once::new();
                        SAID.call_once(|| {
                            crate::progress!(
                                "wq-bench: could not pin a producer to its CPU; producers run unpinned (--no-pin says so)"
                            );
                        });
                    }
                    let done = Completion::new();
                    for _ in 0..cfg.warmup {
                        let h = spawn(done.clone());
                        done.wait();
                        drop(h);
                    }
                    let mut h = [(); 4].map(|()| stats::histogram());
                    arriving.0 = None;
                    if !line.wait() {
                        return None;
                    }
                    let start = Instant::now();
                    for _ in 0..cfg.items {
                        let c = done.clone();
                        let t0 = Instant::now();
                        let handle = spawn(c);
                        let t1 = Instant::now();
                        done.wait();
                        let t2 = Instant::now();
                        drop(handle);
                        let signal = done.signalled_at();
                        let ns = |a: Instant, b: Instant| b.saturating_duration_since(a).as_nanos() as u64;
                        h[0].saturating_record(ns(t0, t1));
                        h[1].saturating_record(ns(t0, t2));
                        h[2].saturating_record(ns(t0, signal));
                        // The signal may come before the spawn call
                        // returns (the producer preempted by the worker it
                        // woke): the wakeup starts at the later of the two.
                        h[3].saturating_record(ns(signal.max(t1), t2));
                    }
                    Some((start, Instant::now(), h))
                });
            match started {
                Ok(w) => workers.push(w),
                Err(e) => {
                    line.r#break();
                    return Err(format!(
                        "could not start producer {i} of {} ({e}): fewer --producers, or a higher thread limit (`ulimit -u`, a cgroup's pids.max)",
                        cfg.producers
                    ));
                }
            }
        }
        let mut out = Vec::with_capacity(workers.len());
        let mut failed = None;
        for (i, w) in workers.into_iter().enumerate() {
            match w.join() {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(_) => failed = failed.or(Some(format!("producer {i} panicked"))),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
    });
    let results = results?;
    let start = results.iter().map(|r| r.0).min().expect("a producer");
    let end = results.iter().map(|r| r.1).max().expect("a producer");
    let mut h = [(); 4].map(|()| stats::histogram());
    for r in &results {
        for (all, one) in h.iter_mut().zip(&r.2) {
            all.add(one).expect("same bounds");
        }
    }
    let total = (cfg.producers * cfg.items) as f64;
    let [enqueue, round_trip, to_signal, wakeup] = h;
    Ok(Measured {
        items_per_s: total / (end - start).as_secs_f64(),
        enqueue,
        round_trip,
        to_signal,
        wakeup,
    })
}

fn run_target(cfg: &Config, target: Target) -> Result<Run, String> {
    match target {
        Target::Wq(scope, _) | Target::WqNoCapture(scope) => {
            let (mode, capture) = match target {
                Target::Wq(_, mode) => (mode, true),
                _ => (WakeMode::Deferred, false),
            };
            let rt = build_wq(cfg, scope, mode, capture)?;
            let measured = run_once(cfg, |c: Arc<Completion>| {
                rt.spawn_on(scope, async move { c.complete() })
            })?;
            let counters = WqCounters::of(&rt);
            drop(rt);
            Ok(measured.run(Some(counters)))
        }
        Target::WqNamed(scope) => {
            let rt = build_wq(cfg, scope, WakeMode::Deferred, true)?;
            let q = wq::Workqueue::builder("wq-bench")
                .scope(scope)
                .build(rt.handle())
                .map_err(|e| e.to_string())?;
            let measured = run_once(cfg, |c: Arc<Completion>| {
                q.spawn(async move { c.complete() })
            })?;
            let counters = WqCounters::of(&rt);
            drop(rt);
            Ok(measured.run(Some(counters)))
        }
        Target::Tokio => {
            let rt = build_tokio(cfg.tokio_workers);
            let handle = rt.handle().clone();
            let measured = run_once(cfg, |c: Arc<Completion>| {
                handle.spawn(async move { c.complete() })
            })?;
            drop(rt);
            Ok(measured.run(None))
        }
    }
}

/// Runs every row `repeat` times, interleaved; progress on stderr.
pub fn run(cfg: &Config) -> Result<Vec<Row>, String> {
    let mut rows: Vec<Row> = Vec::new();
    for &scope in &cfg.scopes {
        for &mode in &cfg.modes {
            rows.push(Row {
                target: Target::Wq(scope, mode),
                runs: Vec::new(),
            });
        }
    }
    if cfg.named {
        for &scope in &cfg.scopes {
            rows.push(Row {
                target: Target::WqNamed(scope),
                runs: Vec::new(),
            });
        }
    }
    if cfg.capture_off {
        for &scope in &cfg.scopes {
            rows.push(Row {
                target: Target::WqNoCapture(scope),
                runs: Vec::new(),
            });
        }
    }
    if !cfg.no_tokio {
        rows.push(Row {
            target: Target::Tokio,
            runs: Vec::new(),
        });
    }
    let n = rows.len();
    let repeat = balanced_repeats(cfg.repeat, n);
    for rep in 0..repeat {
        // The row that goes first rotates with each repeat: on a shared
        // VM a run times differently by where it falls in the cycle.
        let first = first_row(rep, repeat, n);
        for k in 0..n {
            let row = &mut rows[(first + k) % n];
            let run = run_target(cfg, row.target)?;
            crate::progress!(
                "[{}/{}] {:<24} {:>10} items/s  enqueue p95 {:>8}  rtt p50 {:>8}",
                rep + 1,
                repeat,
                row.label(),
                fmt_count(run.items_per_s),
                fmt_ns(run.enqueue.p95),
                fmt_ns(run.round_trip.p50)
            );
            row.runs.push(run);
        }
    }
    Ok(rows)
}
/// A "costs at most `budget` over `base`" target (0.10: 10%): `with`'s
/// items/s at least `1 - budget` of `base`'s and its p95 enqueue at most
/// `1 + budget` times; `what` words it from the two ratios (with / base).
fn cost_target(
    base: Option<&Row>,
    with: Option<&Row>,
    budget: f64,
    what: impl FnOnce(f64, f64, f64) -> String,
) -> Option<(String, Verdict)> {
    let (base, with) = (base?, with?);
    let tput = with.items_per_s() / base.items_per_s();
    let p95 = with.enqueue().p95 / base.enqueue().p95;
    // The median is not judged (the budget is on the tail), only shown: on
    // a noisy machine it is the steadier of the two.
    let p50 = with.enqueue().p50 / base.enqueue().p50;
    let met = tput >= 1.0 - budget && p95 <= 1.0 + budget;
    Some((
        what(tput, p95, p50),
        if met { Verdict::Met } else { Verdict::Missed },
    ))
}

fn find(rows: &[Row], t: Target) -> Option<&Row> {
    rows.iter().find(|r| r.target == t)
}

/// The kernel patch's table: baseline vs deferred items/s, tput gain, p95
/// drop.
pub fn patch_table(cfg: &Config, rows: &[Row]) -> String {
    let (base_mode, new_mode) = (WakeMode::UnderLock, WakeMode::Deferred);
    let mut out = String::new();
    out.push_str("affinity_scope  under_lock   deferred    tput    p95\n");
    out.push_str("                (items/s)    (items/s)   gain    drop\n");
    out.push_str("--------------  -----------  ----------- ------  ------\n");
    for &scope in &cfg.scopes {
        let (Some(b), Some(n)) = (
            find(rows, Target::Wq(scope, base_mode)),
            find(rows, Target::Wq(scope, new_mode)),
        ) else {
            continue;
        };
        out.push_str(&format!(
            "{:<14}  {:>11}  {:>11} {:>6}  {:>6}\n",
            scope.name(),
            fmt_count(b.items_per_s()),
            fmt_count(n.items_per_s()),
            fmt_pct(pct_change(b.items_per_s(), n.items_per_s())),
            fmt_pct(pct_change(b.enqueue().p95, n.enqueue().p95)),
        ));
    }
    out.push_str("\n(p95 drop is the change in the p95 enqueue latency; negative is better.)\n");
    out
}

/// Every row with its latency quantiles and wq's counters per item.
pub fn detail_table(cfg: &Config, rows: &[Row]) -> String {
    let items = cfg.counted_items();
    let mut out = format!(
        "{:<26} {:>10} | {:>7} {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} {:>7} | {:>6} {:>6} {:>6} {:>6} {:>7} {:>7}\n",
        "row",
        "items/s",
        "enq p50",
        "p90",
        "p95",
        "p99",
        "rtt p50",
        "p90",
        "p95",
        "p99",
        "unpark",
        "coal",
        "spinhit",
        "lock",
        "sched50",
        "workers"
    );
    for r in rows {
        let (e, t) = (r.enqueue(), r.round_trip());
        let wq_cols = if r.runs.iter().any(|x| x.wq.is_some()) {
            format!(
                "{:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>7} {:>7}",
                r.per_item(items, |c| c.unparks as f64),
                r.per_item(items, |c| c.coalesced as f64),
                r.per_item(items, |c| c.spin_hits as f64),
                r.lock_acquisitions_per_item(items),
                {
                    let sched: Vec<f64> = r
                        .runs
                        .iter()
                        .filter_map(|x| x.wq.and_then(|c| c.sched_p50))
                        .collect();
                    // No delay recorded (no wq row ran).
                    if sched.is_empty() {
                        "-".to_owned()
                    } else {
                        fmt_ns(median(&sched))
                    }
                },
                median(
                    &r.runs
                        .iter()
                        .filter_map(|x| x.wq.map(|c| c.workers_created as f64))
                        .collect::<Vec<_>>()
                )
            )
        } else {
            format!(
                "{:>6} {:>6} {:>6} {:>6} {:>7} {:>7}",
                "-", "-", "-", "-", "-", "-"
            )
        };
        out.push_str(&format!(
            "{:<26} {:>10} | {:>7} {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} {:>7} | {wq_cols}\n",
            r.label(),
            fmt_count(r.items_per_s()),
            fmt_ns(e.p50),
            fmt_ns(e.p90),
            fmt_ns(e.p95),
            fmt_ns(e.p99),
            fmt_ns(t.p50),
            fmt_ns(t.p90),
            fmt_ns(t.p95),
            fmt_ns(t.p99),
        ));
    }
    out.push_str(
        "(medians of the runs; unpark/coal/spinhit/lock: wq's worker unparks, coalesced kicks, spin hits and pool-lock acquisitions per item; sched50: wq's p50 scheduling delay; workers: wq's worker threads started in the run, over all its pools, against tokio's fixed count in the header)\n",
    );
    out.push_str(&split_table(rows));
    out
}

/// The round trip in its two parts: spawn to the item's signal (the
/// runtime's: the spawn, the item queued, found and polled) and the signal
/// to its producer running again (the operating system's wakeup of a
/// parked thread, the same `unpark` on every row).
pub fn split_table(rows: &[Row]) -> String {
    let mut out = format!(
        "\n{:<26} | {:>9} {:>7} {:>7} | {:>9} {:>7} {:>7}\n",
        "round trip split", "to signal", "p90", "p99", "wakeup", "p90", "p99"
    );
    for r in rows {
        let (s, w) = (r.to_signal(), r.wakeup());
        out.push_str(&format!(
            "{:<26} | {:>9} {:>7} {:>7} | {:>9} {:>7} {:>7}\n",
            r.label(),
            fmt_ns(s.p50),
            fmt_ns(s.p90),
            fmt_ns(s.p99),
            fmt_ns(w.p50),
            fmt_ns(w.p90),
            fmt_ns(w.p99),
        ));
    }
    out.push_str("(medians of the runs, each quantile on its own: the parts' quantiles do not add up to the round trip's; to signal: from the spawn call to the item's signal, the runtime's part; wakeup: from the later of the signal and the spawn call's return to the producer running again, the signaller's unpark and the operating system's wakeup)\n");
    out
}

/// A target's verdict.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// The target holds.
    Met,
    /// It does not hold, but the difference is inside this machine's noise
    /// floor: the rows of scopes that are one and the same pool here (the
    /// same configuration measured again) differ by as much.
    Level,
    /// It does not hold, by more than the noise floor (or no floor could be
    /// measured: every scope is its own pool layout).
    Missed,
}

impl Verdict {
    /// As printed.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Level => "level",
            Verdict::Missed => "MISSED",
        }
    }
}

/// Groups of the run's scopes whose pods have the same CPU sets on the
/// topology of the run: the same pools, so their rows repeat one
/// configuration. `None` if the topology cannot be read.
pub fn same_pool_groups(cfg: &Config) -> Option<Vec<Vec<Scope>>> {
    let topo = match &cfg.topology {
        Some(t) => wq::Topology::synthetic(t).ok()?,
        None => wq::Topology::detect().ok()?,
    };
    let layout =
        |s: Scope| -> Vec<Vec<usize>> { topo.pods(s).iter().map(|p| p.cpus().to_vec()).collect() };
    let mut groups: Vec<(Vec<Vec<usize>>, Vec<Scope>)> = Vec::new();
    for &s in &cfg.scopes {
        let l = layout(s);
        match groups.iter_mut().find(|(g, _)| *g == l) {
            Some((_, scopes)) => scopes.push(s),
            None => groups.push((l, vec![s])),
        }
    }
    Some(groups.into_iter().map(|(_, s)| s).collect())
}

/// The repeats a run of `n` rows makes when asked for `repeat`: as many,
/// unless there are at least as many as rows, then rounded up to a
/// multiple of them, so each row goes first equally often (5 repeats of 2
/// rows put wq's first 3 times, tokio's twice, and the slot moves a run
/// 5-25% on a shared VM: `Args::rounds`). Fewer repeats than rows spread
/// the rows' places instead ([`first_row`]).
pub fn balanced_repeats(repeat: usize, n: usize) -> usize {
    if n > 0 && repeat >= n {
        repeat.div_ceil(n) * n
    } else {
        repeat
    }
}

/// The row that goes first in repeat `rep` of `repeat` over `n` rows:
/// the rotation strides over the whole order, so that each row runs at
/// places spread over the cycle (stepping by one, 5 repeats of 25 rows
/// put tokio's row, the last, at places 20-24 only: late in every
/// repeat, where a drifting VM was slowest or fastest). The order stays
/// cyclic, so a row follows the same row in every repeat but the one it
/// opens (each run's threads are joined before the next run starts): an
/// order run backward in odd repeats varied that, but put rows at the
/// same place twice where repeats and rows are as many and odd (`ad613da`,
/// reverted).
pub fn first_row(rep: usize, repeat: usize, n: usize) -> usize {
    if repeat >= n {
        rep % n
    } else {
        rep * n / repeat
    }
}

/// The noise floor of `scope`'s rows: the largest spread (max over min,
/// in %) of items/s and of p95 enqueue among the rows of one wake mode
/// whose scopes share `scope`'s pools, `scope`'s own rows left out (an
/// outlier row must not widen the floor it is judged against). `None`
/// unless at least two other scopes do.
pub fn noise_floor(groups: &[Vec<Scope>], rows: &[Row], scope: Scope) -> Option<(f64, f64)> {
    let group = groups.iter().find(|g| g.contains(&scope))?;
    let others: Vec<Scope> = group.iter().copied().filter(|&s| s != scope).collect();
    if others.len() < 2 {
        return None;
    }
    let spread = |v: &[f64]| {
        let (lo, hi) = v
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        if lo > 0.0 {
            (hi / lo - 1.0) * 100.0
        } else {
            0.0
        }
    };
    let (mut tput, mut p95) = (0f64, 0f64);
    for mode in WakeMode::ALL {
        let same: Vec<&Row> = others
            .iter()
            .filter_map(|&s| find(rows, Target::Wq(s, mode)))
            .collect();
        if same.len() >= 2 {
            let t: Vec<f64> = same.iter().map(|r| r.items_per_s()).collect();
            let p: Vec<f64> = same.iter().map(|r| r.enqueue().p95).collect();
            tput = tput.max(spread(&t));
            p95 = p95.max(spread(&p));
        }
    }
    Some((tput, p95))
}

/// The targets for this run, each with its figures and verdict;
/// beside `neighbours` busy loops, the busy bound (wq within 1.25x
/// tokio's time) in place of the quiet machine's (1.25x tokio's items/s,
/// a lower p95 enqueue).
pub fn targets(cfg: &Config, rows: &[Row], neighbours: usize) -> Vec<(String, Verdict)> {
    let groups = same_pool_groups(cfg).unwrap_or_default();
    let mut out = Vec::new();
    for &scope in &cfg.scopes {
        let (Some(b), Some(n)) = (
            find(rows, Target::Wq(scope, WakeMode::UnderLock)),
            find(rows, Target::Wq(scope, WakeMode::Deferred)),
        ) else {
            continue;
        };
        let gain = pct_change(b.items_per_s(), n.items_per_s());
        let drop = pct_change(b.enqueue().p95, n.enqueue().p95);
        let contended = !matches!(scope, Scope::Cpu | Scope::Smt);
        let ok = if contended {
            gain >= 0.0 && drop <= 0.0
        } else {
            // "Within noise": 5% either way.
            gain.abs() <= 5.0
        };
        let want = if contended {
            "deferred >= under_lock in items/s and p95"
        } else {
            "within noise (5%)"
        };
        let floor = noise_floor(&groups, rows, scope);
        // The items/s gap on the floor's scale (max over min, in %): a
        // loss of 20% is a 25% gap (0.8x), and was judged against the
        // floor as 20%. (p95's `drop`, a rise over under_lock's, is on it
        // already.)
        let (lo, hi) = {
            let (x, y) = (b.items_per_s(), n.items_per_s());
            (x.min(y), x.max(y))
        };
        let gap = if lo > 0.0 {
            (hi / lo - 1.0) * 100.0
        } else {
            f64::INFINITY
        };
        // Level: every criterion that failed failed by no more than the
        // spread of rows repeating one configuration (a criterion met, by
        // however much, does not count against it; p95 is a criterion at
        // the contended scopes only).
        let within = |(t, p): (f64, f64)| {
            if contended {
                (gain >= 0.0 || gap <= t) && (drop <= 0.0 || drop <= p)
            } else {
                gap <= t.max(5.0)
            }
        };
        let verdict = match floor {
            _ if ok => Verdict::Met,
            Some(f) if within(f) => Verdict::Level,
            _ => Verdict::Missed,
        };
        let floor_note = match floor {
            Some((t, p)) => {
                let group = groups
                    .iter()
                    .find(|g| g.contains(&scope))
                    .expect("floor has a group");
                let names: Vec<&str> = group
                    .iter()
                    .filter(|&&s| s != scope)
                    .map(|s| s.name())
                    .collect();
                format!(
                    " (noise floor: {} are the same pool here; their rows differ by up to {t:.1}% items/s, {p:.1}% p95)",
                    names.join("/")
                )
            }
            None => String::new(),
        };
        out.push((
            format!(
                "{scope}: {want}: tput {} p95 {}{floor_note}",
                fmt_pct(gain),
                fmt_pct(drop)
            ),
            verdict,
        ));
    }
    for &scope in &cfg.scopes {
        let plain = find(rows, Target::Wq(scope, WakeMode::Deferred));
        if let Some(t) = cost_target(
            plain,
            find(rows, Target::WqNamed(scope)),
            0.10,
            |tput, p95, p50| {
                format!(
                    "{scope}: a named queue costs <= 10% over wq::spawn: items/s {tput:.2}x, p95 enqueue {p95:.2}x (p50 {p50:.2}x)"
                )
            },
        ) {
            out.push(t);
        }
        if let Some(t) = cost_target(
            find(rows, Target::WqNoCapture(scope)),
            plain,
            0.05,
            |tput, p95, p50| {
                format!(
                    "{scope}: latency capture costs <= 5% (on vs off): items/s {tput:.3}x, p95 enqueue {p95:.3}x (p50 {p50:.3}x)"
                )
            },
        ) {
            out.push(t);
        }
    }
    if let (Some(w), Some(t)) = (
        find(rows, Target::Wq(Scope::System, WakeMode::Deferred)),
        find(rows, Target::Tokio),
    ) {
        let ratio = w.items_per_s() / t.items_per_s();
        let met = |ok: bool| if ok { Verdict::Met } else { Verdict::Missed };
        if neighbours > 0 {
            // The time for the same items: the inverse of the items/s.
            let time = t.items_per_s() / w.items_per_s();
            out.push((
                format!(
                    "system deferred beside {neighbours} busy loops: wq/tokio time {time:.2} (want <= 1.25): {} vs {} items/s",
                    fmt_count(w.items_per_s()),
                    fmt_count(t.items_per_s())
                ),
                met(time <= 1.25),
            ));
            return out;
        }
        out.push((
            format!(
                "system deferred vs tokio: items/s {:.2}x (target >= 1.25x): {} vs {}",
                ratio,
                fmt_count(w.items_per_s()),
                fmt_count(t.items_per_s())
            ),
            met(ratio >= 1.25),
        ));
        out.push((
            format!(
                "system deferred vs tokio: p95 enqueue {} vs {} (target lower)",
                fmt_ns(w.enqueue().p95),
                fmt_ns(t.enqueue().p95)
            ),
            met(w.enqueue().p95 < t.enqueue().p95),
        ));
    }
    out
}

/// Everything as JSON (`neighbours`: the busy loops beside the run).
pub fn json(cfg: &Config, rows: &[Row], command: &str, neighbours: usize) -> Value {
    let rows_json: Vec<Value> = rows
        .iter()
        .map(|r| {
            let (runtime, scope, mode) = match r.target {
                Target::Wq(s, m) => ("wq", Some(s.name()), Some(m.name())),
                Target::WqNamed(s) => ("wq named queue", Some(s.name()), Some("deferred")),
                Target::WqNoCapture(s) => ("wq capture off", Some(s.name()), Some("deferred")),
                Target::Tokio => ("tokio", None, None),
            };
            json!({
                "runtime": runtime,
                "scope": scope,
                "wake_mode": mode,
                "items_per_s": r.items_per_s(),
                "items_per_s_runs": r.runs.iter().map(|x| x.items_per_s).collect::<Vec<_>>(),
                "enqueue": r.enqueue().json(),
                "round_trip": r.round_trip().json(),
                "to_signal": r.to_signal().json(),
                "wakeup": r.wakeup().json(),
                "lock_acquisitions_per_item": (r.target != Target::Tokio)
                    .then(|| r.lock_acquisitions_per_item(cfg.counted_items())),
                "wq_counters_runs": r.runs.iter().filter_map(|x| x.wq).map(|c| json!({
                    "pools": c.pools, "workers_created": c.workers_created, "kicks": c.kicks,
                    "coalesced_kicks": c.coalesced, "unparks": c.unparks, "parks": c.parks,
                    "spin_hits": c.spin_hits, "spin_backoffs": c.spin_backoffs, "pools_watching_deques": c.pools_watching_deques, "lock_acquisitions": c.lock_acquisitions,
                    "lock_contended": c.lock_contended, "sched_delay_p50_ns": c.sched_p50,
                    "sched_delay_p99_ns": c.sched_p99,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "bench": "workqueue",
        "machine": crate::machine::description(),
        "date": crate::machine::date(),
        "command": command,
        "topology": cfg.topology.clone().unwrap_or_else(|| "this machine".to_owned()),
        "producers": cfg.producers,
        "items_per_producer": cfg.items,
        "warmup_items_per_producer": cfg.warmup,
        // As run: rounded up to a multiple of the rows if at least as
        // many (`balanced_repeats`).
        "repeat": rows.first().map_or(cfg.repeat, |r| r.runs.len()),
        "producers_pinned": producers_pinned(cfg),
        // null: the runtime's default spin.
        "wq_worker_spin_us": cfg.spin.spin.map(|s| s.as_secs_f64() * 1e6),
        // null: the runtime's default (as many as search).
        "wq_spinning_workers": cfg.spin.spinners,
        "wq_spin_watches_deques": cfg.spin.watch_deques,
        // The rows' own runtime says which ran with capture off.
        "wq_latency_capture": true,
        "tokio_workers": cfg.tokio_workers,
        // null: the runtime's default (the pod's CPUs, at most the CPUs
        // the process may use).
        "wq_max_workers_per_pool": cfg.workers,
        "rows": rows_json,
        "targets": targets(cfg, rows, neighbours).into_iter().map(|(what, v)| json!({"target": what, "met": v == Verdict::Met, "verdict": v.label().to_lowercase()})).collect::<Vec<_>>(),
    })
}

/// Writes the items/s and p95 plots per scope and mode into `dir`.
pub fn plots(cfg: &Config, rows: &[Row], dir: &std::path::Path) -> Result<Vec<String>, String> {
    let x: Vec<String> = cfg.scopes.iter().map(|s| s.name().to_owned()).collect();
    let mut ips = Vec::new();
    let mut p95 = Vec::new();
    let mut rtt = Vec::new();
    for &mode in &cfg.modes {
        let pick = |f: &dyn Fn(&Row) -> f64| -> Vec<f64> {
            cfg.scopes
                .iter()
                .map(|&s| find(rows, Target::Wq(s, mode)).map_or(f64::NAN, f))
                .collect()
        };
        ips.push((format!("wq {mode}"), pick(&|r| r.items_per_s())));
        p95.push((format!("wq {mode}"), pick(&|r| r.enqueue().p95 / 1e3)));
        rtt.push((format!("wq {mode}"), pick(&|r| r.round_trip().p50 / 1e3)));
    }
    if let Some(t) = find(rows, Target::Tokio) {
        let flat = |v: f64| vec![v; x.len()];
        ips.push(("tokio".to_owned(), flat(t.items_per_s())));
        p95.push(("tokio".to_owned(), flat(t.enqueue().p95 / 1e3)));
        rtt.push(("tokio".to_owned(), flat(t.round_trip().p50 / 1e3)));
    }
    let topo = cfg
        .topology
        .as_deref()
        .map_or("this machine".to_owned(), |t| format!("synthetic \"{t}\""));
    let mut written = Vec::new();
    for (name, title, y, series) in [
        (
            "workqueue_items_per_s.svg",
            "items/s per scope",
            "items/s",
            &ips,
        ),
        (
            "workqueue_p95_enqueue.svg",
            "p95 enqueue latency",
            "us",
            &p95,
        ),
        ("workqueue_p50_round_trip.svg", "p50 round trip", "us", &rtt),
    ] {
        let path = dir.join(name);
        crate::plot::line_chart(
            &path,
            &format!("{title} ({topo}, {} producers)", cfg.producers),
            y,
            &x,
            series,
        )?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scope: Scope, mode: WakeMode, items_per_s: f64, p95: f64) -> Row {
        Row {
            target: Target::Wq(scope, mode),
            runs: vec![Run {
                items_per_s,
                enqueue: Quantiles {
                    p95,
                    ..Quantiles::default()
                },
                round_trip: Quantiles::default(),
                to_signal: Quantiles::default(),
                wakeup: Quantiles::default(),
                wq: None,
            }],
        }
    }

    fn config(topology: &str, scopes: Vec<Scope>) -> Config {
        let a = Args::parse(["--topology".to_owned(), topology.to_owned()], &[]).unwrap();
        Config {
            scopes,
            no_tokio: true,
            ..Config::from_args(&a).unwrap()
        }
    }

    /// `--workers` is held to the thread limit every other thread count
    /// has (it was parsed on its own, and 32,767 reserved slots for that
    /// many workers in every pool).
    #[test]
    fn workers_beyond_the_thread_limit_are_refused() {
        let parse = |v: &str| workers_arg(&Args::parse(["--workers", v], &[]).unwrap());
        let err = parse("5000").unwrap_err();
        assert!(err.contains("at most 4096"), "{err}");
        assert!(parse("0").unwrap_err().contains("at least one worker"));
        assert!(parse("x").unwrap_err().contains("number of workers"));
        assert_eq!(parse("4096"), Ok(Some(4096)));
        assert_eq!(workers_arg(&Args::default()), Ok(None));
    }

    /// A producer that panics before the start line fails the run: the
    /// others waited for it at the barrier for ever, and the run hung.
    #[test]
    fn a_producer_panicking_before_the_start_fails_the_run() {
        let cfg = Config {
            producers: 3,
            items: 10,
            warmup: 2,
            pin: false,
            ..config("core:2", vec![Scope::Cpu])
        };
        let first = std::sync::atomic::AtomicBool::new(true);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let out = run_once(&cfg, |c: Arc<Completion>| {
                if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    panic!("a spawn that fails");
                }
                std::thread::spawn(move || c.complete())
            });
            tx.send(out.map(|m| m.items_per_s)).unwrap();
        });
        let out = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the run hung on its start line");
        assert!(out.unwrap_err().contains("panicked"));
    }

    #[test]
    fn scopes_with_the_same_pods_form_one_noise_group() {
        // One package of two cores, no SMT: cpu = smt, the others one pod.
        let cfg = config("pack:1 l3:1 core:2 pu:1", Scope::ALL.to_vec());
        let groups = same_pool_groups(&cfg).unwrap();
        assert_eq!(
            groups,
            vec![
                vec![Scope::Cpu, Scope::Smt],
                vec![Scope::CacheShard, Scope::Cache, Scope::Numa, Scope::System]
            ]
        );
    }

    /// A criterion met by a wide margin does not make a miss of the other,
    /// inside the spread, a miss: +30% items/s with p95 1% worse is level
    /// (it read missed: both changes had to be inside the spread).
    #[test]
    fn a_met_criterion_does_not_turn_a_level_miss_into_a_miss() {
        use WakeMode::{Deferred, UnderLock};
        let cfg = config(
            "pack:1 l3:1 core:2 pu:1",
            vec![Scope::Cache, Scope::Numa, Scope::System],
        );
        let rows = vec![
            row(Scope::Cache, UnderLock, 100.0, 100.0),
            row(Scope::Numa, UnderLock, 110.0, 105.0),
            row(Scope::System, UnderLock, 120.0, 110.0),
            row(Scope::Cache, Deferred, 130.0, 101.0), // +30%, +1%: level
            row(Scope::Numa, Deferred, 112.0, 100.0),
            row(Scope::System, Deferred, 125.0, 100.0),
        ];
        let (what, v) = targets(&cfg, &rows, 0).remove(0);
        assert_eq!(v, Verdict::Level, "{what}");
    }

    #[test]
    fn a_miss_inside_the_spread_of_identical_pools_is_level_and_outside_it_missed() {
        use WakeMode::{Deferred, UnderLock};
        let cfg = config(
            "pack:1 l3:1 core:2 pu:1",
            vec![Scope::Cache, Scope::Numa, Scope::System],
        );
        // under_lock rows of the one pool differ by 20% items/s, 10% p95.
        let mut rows = vec![
            row(Scope::Cache, UnderLock, 100.0, 100.0),
            row(Scope::Numa, UnderLock, 110.0, 105.0),
            row(Scope::System, UnderLock, 120.0, 110.0),
            row(Scope::Cache, Deferred, 90.0, 104.0), // -10%, +4%: level
            row(Scope::Numa, Deferred, 112.0, 100.0), // +2%, -5%: met
            row(Scope::System, Deferred, 125.0, 100.0), // +4%, -9%: met
        ];
        let v: Vec<Verdict> = targets(&cfg, &rows, 0)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(v, vec![Verdict::Level, Verdict::Met, Verdict::Met]);
        // Deferred 40% below, the others' rows close: the miss is outside
        // the floor.
        rows[3] = row(Scope::Cache, Deferred, 60.0, 100.0);
        let (what, v) = targets(&cfg, &rows, 0).remove(0);
        assert_eq!(v, Verdict::Missed, "{what}");
        assert!(what.contains("11.6% items/s"), "{what}");
        // The judged row is the outlier of its own mode: it does not widen
        // the floor it is judged against (with it, the deferred spread
        // would be 108%, and -40% would read as level).
        assert!(!what.contains("108"), "{what}");
    }

    /// Beside busy loops the bound is issue 8's busy one, wq within 1.25x
    /// tokio's time: level items/s meets it (it printed the quiet
    /// machine's ">= 1.25x items/s", missed, where the docs judged the
    /// same run met), 0.64x misses it; quiet, the quiet targets.
    #[test]
    fn beside_busy_loops_the_target_is_the_busy_bound() {
        let cfg = Config {
            no_tokio: false,
            ..config("pack:1 l3:1 core:2 pu:1", vec![Scope::System])
        };
        let tokio = |items_per_s| Row {
            target: Target::Tokio,
            ..row(Scope::System, WakeMode::Deferred, items_per_s, 100.0)
        };
        let rows = |wq, tk| vec![row(Scope::System, WakeMode::Deferred, wq, 100.0), tokio(tk)];
        let last = |r: &[Row], n| targets(&cfg, r, n).pop().unwrap();
        let (what, v) = last(&rows(100.0, 100.0), 2);
        assert_eq!(v, Verdict::Met, "{what}");
        assert!(
            what.contains("beside 2 busy loops: wq/tokio time 1.00 (want <= 1.25)"),
            "{what}"
        );
        let (what, v) = last(&rows(64.0, 100.0), 2);
        assert_eq!(v, Verdict::Missed, "{what}");
        assert!(what.contains("time 1.56"), "{what}");
        let quiet = targets(&cfg, &rows(100.0, 100.0), 0);
        assert!(
            quiet
                .iter()
                .any(|(t, v)| t.contains("target >= 1.25x") && *v == Verdict::Missed),
            "{quiet:?}"
        );
    }

    /// Fewer repeats than rows: the rows' places spread over the cycle.
    #[test]
    fn the_first_row_strides_over_the_order() {
        let firsts: Vec<usize> = (0..5).map(|r| first_row(r, 5, 25)).collect();
        assert_eq!(firsts, [0, 5, 10, 15, 20]);
        // The last row's place in each repeat: spread, not 20-24.
        let places: Vec<usize> = firsts.iter().map(|f| (24 + 25 - f) % 25).collect();
        assert_eq!(places, [24, 19, 14, 9, 4]);
        let firsts: Vec<usize> = (0..6).map(|r| first_row(r, 6, 3)).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
    }

    /// At least as many repeats as rows: rounded up to a multiple of them,
    /// so each row goes first equally often (5 repeats of wq and tokio's
    /// two rows gave wq the first slot 3 times, tokio twice).
    #[test]
    fn repeats_give_each_row_the_first_slot_equally_often() {
        for (repeat, n) in [(5, 2), (3, 2), (7, 3), (6, 3), (1, 1), (4, 13), (13, 13)] {
            let repeat = balanced_repeats(repeat, n);
            let mut firsts = vec![0usize; n];
            for rep in 0..repeat {
                firsts[first_row(rep, repeat, n)] += 1;
            }
            if repeat >= n {
                assert!(
                    firsts.iter().all(|&f| f == firsts[0]),
                    "{repeat} {n}: {firsts:?}"
                );
            } else {
                assert!(firsts.iter().all(|&f| f <= 1), "{repeat} {n}: {firsts:?}");
            }
        }
        assert_eq!(balanced_repeats(5, 2), 6);
        assert_eq!(balanced_repeats(4, 13), 4);
    }

    /// tokio's runtime in the comparison has its drivers, as wq's always
    /// does (without them its idle workers parked on a plain futex).
    #[test]
    fn the_tokio_runtime_has_its_drivers() {
        let rt = build_tokio(1);
        rt.block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        });
    }

    /// A loss is judged on the floor's scale (max over min): deferred at
    /// 0.8x under_lock is a 25% gap, a miss beside a 22% floor (as a 20%
    /// loss it read level).
    #[test]
    fn a_loss_is_judged_on_the_floors_scale() {
        use WakeMode::{Deferred, UnderLock};
        let cfg = config(
            "pack:1 l3:1 core:2 pu:1",
            vec![Scope::Cache, Scope::Numa, Scope::System],
        );
        let rows = vec![
            row(Scope::Cache, UnderLock, 100.0, 100.0),
            row(Scope::Numa, UnderLock, 100.0, 100.0),
            row(Scope::System, UnderLock, 122.0, 100.0),
            row(Scope::Cache, Deferred, 80.0, 100.0),
            row(Scope::Numa, Deferred, 100.0, 100.0),
            row(Scope::System, Deferred, 100.0, 100.0),
        ];
        let (what, v) = targets(&cfg, &rows, 0).remove(0);
        assert_eq!(v, Verdict::Missed, "{what}");
    }
}
