//! Locality shapes after tokio's LLC benchmarks.
//!
//! 1. **Remote wake, same pod vs cross pod**: two tasks ping-pong a value
//!    over `futures` channels. Same pod: both tasks' home is one `cache`
//!    pod, so a wake lands in the waking worker's LIFO slot. Cross pod: the
//!    homes are two `cache` pods, so every wake goes through the other
//!    pool's injector and a kick. tokio: the same two tasks, on as many
//!    workers as one wq pod's pool (the same-pod row's).
//! 2. **Cache-affine working set**: one task per `cache` pod, each owning a
//!    working set (default 4 MiB) that it walks (read and write every cache
//!    line) each time an outside driver thread wakes it; all are woken
//!    together each round. wq at `cache` scope keeps each task in its pod's
//!    pool; at `system` scope and on tokio a task may run on any worker.
//!
//! This machine has one LLC, so both run on a synthetic topology (default
//! `pack:2 l3:2 core:2 pu:1`: 8 CPUs, 4 L3 pods). wq lays out its pods and
//! pools as on that machine but cannot bind threads to CPUs that do not
//! exist: the *scheduling* differences show (injector vs LIFO, pools
//! crossed), the *cache* effect of staying in one LLC cannot.
//!
//! Tasks are homed on a chosen pod by spawning them from a "placer"
//! thread: on a synthetic topology wq gives each outside thread a sticky
//! virtual CPU, and the placer's pod is found once by spawning a probe task
//! and seeing which pool counts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::Instant;

use futures::SinkExt;
use futures::StreamExt;
use futures::channel::mpsc;
use serde_json::json;
use wq::Scope;

use crate::args::Args;
use crate::completion::Completion;
use crate::stats::{self, fmt_count, fmt_ns, median};

const OPTIONS: &[&str] = &["topology", "rounds", "walks", "working-set-kib", "repeat"];
const FLAGS: &[&str] = &["json"];
/// Default synthetic machine: 4 LLCs.
pub const DEFAULT_TOPOLOGY: &str = "pack:2 l3:2 core:2 pu:1";

type Job = Box<dyn FnOnce() + Send>;

/// A thread that runs closures: every spawn it makes lands on its pod.
struct Placer {
    tx: std_mpsc::Sender<Job>,
    pod: usize,
    join: Option<thread::JoinHandle<()>>,
}

impl Placer {
    fn new(rt: &Arc<wq::Runtime>, scope: Scope) -> Placer {
        let (tx, rx) = std_mpsc::channel::<Job>();
        let join = thread::spawn(move || {
            for job in rx {
                job();
            }
        });
        let (ptx, prx) = std_mpsc::channel();
        let rt2 = rt.clone();
        tx.send(Box::new(move || {
            let _ = ptx.send(probe_pod(&rt2, scope));
        }))
        .expect("placer alive");
        let pod = prx.recv().expect("probe");
        Placer {
            tx,
            pod,
            join: Some(join),
        }
    }

    fn run<F: FnOnce() + Send + 'static>(&self, f: F) {
        let (dtx, drx) = std_mpsc::channel();
        self.tx
            .send(Box::new(move || {
                f();
                let _ = dtx.send(());
            }))
            .expect("placer alive");
        drx.recv().expect("placer ran it");
    }
}

impl Drop for Placer {
    fn drop(&mut self) {
        let (tx, _) = std_mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// The pod of `scope` that the calling thread's spawns go to.
fn probe_pod(rt: &wq::Runtime, scope: Scope) -> usize {
    let tasks = |rt: &wq::Runtime| -> Vec<(Vec<usize>, usize)> {
        rt.metrics()
            .pools
            .iter()
            .map(|p| (p.cpus.clone(), p.tasks))
            .collect()
    };
    let before = tasks(rt);
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    let h = rt.spawn_on(scope, async move {
        let _ = rx.await;
    });
    let after = tasks(rt);
    let cpus = after
        .iter()
        .find(|(cpus, n)| {
            let old = before.iter().find(|(c, _)| c == cpus).map_or(0, |b| b.1);
            *n > old
        })
        .map(|(c, _)| c.clone())
        .unwrap_or_default();
    drop(tx);
    let _ = futures::executor::block_on(h);
    rt.topology()
        .pods(scope)
        .iter()
        .position(|p| p.cpus() == cpus.as_slice())
        .unwrap_or(0)
}

/// Placers on `n` distinct pods (first found), or fewer if not found.
fn placers(rt: &Arc<wq::Runtime>, scope: Scope, n: usize) -> Vec<Placer> {
    let mut out: Vec<Placer> = Vec::new();
    for _ in 0..64 {
        if out.len() == n {
            break;
        }
        let p = Placer::new(rt, scope);
        if out.iter().all(|q| q.pod != p.pod) {
            out.push(p);
        }
    }
    out
}

/// `rounds` round trips with `pong`; their time (ns) in `took`, timed by
/// this task: the same clock on both runtimes.
async fn ping(
    rounds: usize,
    mut tx: mpsc::Sender<u32>,
    mut rx: mpsc::Receiver<u32>,
    done: Arc<Completion>,
    took: Arc<AtomicU64>,
) {
    let start = Instant::now();
    for i in 0..rounds {
        tx.send(i as u32).await.expect("pong task alive");
        rx.next().await.expect("pong");
    }
    took.store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    done.complete();
}

async fn pong(mut rx: mpsc::Receiver<u32>, mut tx: mpsc::Sender<u32>) {
    while let Some(v) = rx.next().await {
        if tx.send(v).await.is_err() {
            break;
        }
    }
}

/// One end of a ping-pong: where it sends, where it receives.
type End = (mpsc::Sender<u32>, mpsc::Receiver<u32>);

fn pair() -> (End, End) {
    let (a_tx, b_rx) = mpsc::channel(0);
    let (b_tx, a_rx) = mpsc::channel(0);
    ((a_tx, a_rx), (b_tx, b_rx))
}

/// ns per ping-pong round trip on wq, both tasks' homes on `pods`.
fn wq_ping_pong(topology: &str, rounds: usize, cross: bool) -> Result<f64, String> {
    let topo = wq::Topology::synthetic(topology).map_err(|e| e.to_string())?;
    // A worker per CPU of the made-up pod (module docs; wq's default caps a
    // pool at the CPUs this process may use).
    let per_pod = topo.pods(Scope::Cache).iter().map(|p| p.cpus().len()).max();
    let rt = Arc::new(
        wq::Runtime::builder()
            .topology(topo)
            .default_scope(Scope::Cache)
            .max_workers_per_pool(per_pod.unwrap_or(1))
            .build()
            .map_err(|e| e.to_string())?,
    );
    let ps = placers(&rt, Scope::Cache, 2);
    if ps.len() < 2 {
        return Err(format!("topology {topology:?} has fewer than 2 cache pods"));
    }
    let b_placer = if cross { &ps[1] } else { &ps[0] };
    let exchange = |rounds: usize| {
        let ((a_tx, a_rx), (b_tx, b_rx)) = pair();
        let done = Completion::new();
        let took = Arc::new(AtomicU64::new(0));
        let r = rt.clone();
        b_placer.run(move || drop(r.spawn_on(Scope::Cache, pong(b_rx, b_tx))));
        let (r, d, t) = (rt.clone(), done.clone(), took.clone());
        ps[0].run(move || drop(r.spawn_on(Scope::Cache, ping(rounds, a_tx, a_rx, d, t))));
        done.wait();
        took.load(Ordering::Relaxed) as f64 / rounds as f64
    };
    // Untimed first: wq starts its workers on demand (tokio's run from
    // its build), and their starts were timed.
    exchange(WARM_UP_ROUNDS.min(rounds));
    Ok(exchange(rounds))
}

/// Round trips (or walks) run untimed before each timed row.
const WARM_UP_ROUNDS: usize = 1_000;

fn tokio_ping_pong(workers: usize, rounds: usize) -> f64 {
    let rt = crate::workqueue::build_tokio(workers);
    let exchange = |rounds: usize| {
        let ((a_tx, a_rx), (b_tx, b_rx)) = pair();
        let done = Completion::new();
        let took = Arc::new(AtomicU64::new(0));
        drop(rt.spawn(pong(b_rx, b_tx)));
        drop(rt.spawn(ping(rounds, a_tx, a_rx, done.clone(), took.clone())));
        done.wait();
        took.load(Ordering::Relaxed) as f64 / rounds as f64
    };
    // Untimed first, as wq's.
    exchange(WARM_UP_ROUNDS.min(rounds));
    exchange(rounds)
}

/// Walks `buf` once: reads and writes every cache line.
fn walk(buf: &mut [u64]) -> u64 {
    let mut sum = 0u64;
    for line in buf.chunks_mut(8) {
        line[0] = line[0].wrapping_add(1);
        sum = sum.wrapping_add(line[0]);
    }
    sum
}

/// One walker per `cache` pod; returns (walks/s, walk-time histogram).
fn affine(
    kind: &str,
    topology: &str,
    walks: usize,
    ws_kib: usize,
) -> Result<(f64, hdrhistogram::Histogram<u64>), String> {
    let hist = Arc::new(std::sync::Mutex::new(stats::histogram()));
    let words = ws_kib * 1024 / 8;
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = Completion::new();
    let mut senders = Vec::new();
    let make = |rx: mpsc::UnboundedReceiver<usize>,
                hist: Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
                acks: Arc<std::sync::atomic::AtomicUsize>,
                done: Arc<Completion>| {
        async move {
            let mut rx = rx;
            let mut buf = vec![1u64; words];
            while let Some(k) = rx.next().await {
                let t = Instant::now();
                std::hint::black_box(walk(&mut buf));
                let ns = t.elapsed().as_nanos() as u64;
                // Recorded before the ack, so the driver sees it.
                hist.lock().expect("hist").saturating_record(ns);
                if acks.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
                    done.complete();
                }
                let _ = k;
            }
        }
    };
    let run_rounds = |senders: &Vec<mpsc::UnboundedSender<usize>>| -> f64 {
        // One round untimed first (wq's workers start on demand, and each
        // walker's first walk touches its buffer's pages): not in the rate
        // nor in the histogram.
        acks.store(senders.len(), std::sync::atomic::Ordering::Release);
        for s in senders {
            s.unbounded_send(0).expect("walker alive");
        }
        done.wait();
        hist.lock().expect("hist").reset();
        let start = Instant::now();
        for w in 0..walks {
            acks.store(senders.len(), std::sync::atomic::Ordering::Release);
            for s in senders {
                s.unbounded_send(w).expect("walker alive");
            }
            done.wait();
        }
        (walks * senders.len()) as f64 / start.elapsed().as_secs_f64()
    };
    let per_sec;
    match kind {
        "tokio" => {
            let topo = wq::Topology::synthetic(topology).map_err(|e| e.to_string())?;
            let n = topo.pods(Scope::Cache).len();
            // As many workers as wq may start (a worker per CPU of the
            // made-up machine): the same threads on the real CPUs.
            let rt = crate::workqueue::build_tokio(topo.cpus().len());
            for _ in 0..n {
                let (tx, rx) = mpsc::unbounded();
                senders.push(tx);
                drop(rt.spawn(make(rx, hist.clone(), acks.clone(), done.clone())));
            }
            per_sec = run_rounds(&senders);
            senders.clear();
            drop(rt);
        }
        scope_name => {
            let scope: Scope = scope_name.parse().map_err(|e| format!("{e}"))?;
            let topo = wq::Topology::synthetic(topology).map_err(|e| e.to_string())?;
            // A worker per CPU of the made-up pod, as tokio gets a worker
            // per made-up CPU (by default wq caps a pool at the CPUs this
            // process may use).
            let per_pod = topo.pods(scope).iter().map(|p| p.cpus().len()).max();
            let rt = Arc::new(
                wq::Runtime::builder()
                    .topology(topo)
                    .default_scope(scope)
                    .max_workers_per_pool(per_pod.unwrap_or(1))
                    .build()
                    .map_err(|e| e.to_string())?,
            );
            let n = rt.topology().pods(Scope::Cache).len();
            // Spawned from placers on distinct cache pods (at system scope
            // they all share the one pool anyway).
            let ps = placers(&rt, Scope::Cache, n);
            if ps.len() < n {
                return Err(format!(
                    "topology {topology:?}: placed walkers on {} of its {n} cache pods",
                    ps.len()
                ));
            }
            for p in &ps {
                let (tx, rx) = mpsc::unbounded();
                senders.push(tx);
                let fut = make(rx, hist.clone(), acks.clone(), done.clone());
                let r = rt.clone();
                p.run(move || drop(r.spawn_on(scope, fut)));
            }
            per_sec = run_rounds(&senders);
            senders.clear();
            drop(ps);
        }
    }
    let h = hist.lock().expect("hist").clone();
    Ok((per_sec, h))
}

/// `wq-bench locality`.
pub fn main(argv: &[String], command: &str) -> Result<(), String> {
    let a = Args::parse(argv.iter().cloned(), FLAGS)?;
    a.check_known(&OPTIONS.iter().chain(FLAGS).copied().collect::<Vec<_>>())?;
    let topology = a.raw("topology").unwrap_or(DEFAULT_TOPOLOGY).to_owned();
    let rounds: usize = a.count("rounds", 100_000)?;
    let walks: usize = a.count("walks", 200)?;
    let ws: usize = a.count("working-set-kib", 4096)?;
    // A multiple of the three rows, so that each goes first as often
    // (5 let tokio go first once and each wq row twice).
    let repeat: usize = a.rounds("repeat", 6, 3)?;
    // tokio gets as many workers as wq may start on the made-up machine.
    let cpus = wq::Topology::synthetic(&topology)
        .map_err(|e| e.to_string())?
        .cpus()
        .len();
    // A thread each: tokio panics when the OS refuses one.
    if cpus > crate::args::MAX_THREADS {
        return Err(format!(
            "--topology {topology:?}: {cpus} CPUs, and tokio gets a worker thread per CPU here: \
             at most {} (describe fewer)",
            crate::args::MAX_THREADS
        ));
    }

    // The ping-pong's tokio: as many workers as the same-pod row's one wq
    // pool may start (a pod's CPUs), not a worker per CPU of the made-up
    // machine (8 tokio threads against 2 wq ones, on the same CPUs).
    let ping_pong_workers = wq::Topology::synthetic(&topology)
        .map_err(|e| e.to_string())?
        .pods(Scope::Cache)
        .iter()
        .map(|p| p.cpus().len())
        .max()
        .unwrap_or(1);
    // The rows interleaved repeat by repeat, so drift falls on all of
    // them, and the first row rotating from repeat to repeat: on a VM the
    // run that goes second in a pair can time differently.
    let (mut same, mut cross, mut tok) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..repeat {
        for row in (0..3).map(|i| (i + rep) % 3) {
            match row {
                0 => same.push(wq_ping_pong(&topology, rounds, false)?),
                1 => cross.push(wq_ping_pong(&topology, rounds, true)?),
                _ => tok.push(tokio_ping_pong(ping_pong_workers, rounds)),
            }
        }
    }
    let kinds = ["cache", "system", "tokio"];
    let mut samples: Vec<[Vec<f64>; 3]> = kinds.iter().map(|_| Default::default()).collect();
    for rep in 0..repeat {
        for row in (0..kinds.len()).map(|i| (i + rep) % kinds.len()) {
            let [rates, p50, p99] = &mut samples[row];
            let (r, h) = affine(kinds[row], &topology, walks, ws)?;
            rates.push(r);
            p50.push(h.value_at_quantile(0.5) as f64);
            p99.push(h.value_at_quantile(0.99) as f64);
        }
    }
    let affine_rows: Vec<_> = kinds
        .iter()
        .zip(&samples)
        .map(|(kind, [rates, p50, p99])| (*kind, median(rates), median(p50), median(p99)))
        .collect();

    if a.flag("json") {
        let v = json!({
            "bench": "locality", "machine": crate::machine::description(),
            "date": crate::machine::date(), "command": command,
            "topology": topology, "synthetic": true, "repeat": repeat,
            "ping_pong_ns_per_round_trip": {
                "wq_cache_same_pod": median(&same), "wq_cache_cross_pod": median(&cross),
                "tokio": median(&tok),
                "runs": {"same": same, "cross": cross, "tokio": tok},
            },
            "cache_affine": affine_rows.iter().map(|(k, r, p50, p99)| json!({
                "row": if *k == "tokio" { "tokio".to_owned() } else { format!("wq {k}") },
                "walks_per_s": r, "walk_p50_ns": p50, "walk_p99_ns": p99,
            })).collect::<Vec<_>>(),
            "working_set_kib": ws,
        });
        outln!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    out!("{}", crate::machine::header(command));
    outln!(
        "# topology: synthetic \"{topology}\" -- this machine has one LLC, so wq lays out pods as on \
         that machine but its threads are not bound: scheduling paths differ, cache effects cannot show"
    );
    outln!(
        "# medians of {repeat} runs, the rows interleaved (the first rotating); ping-pong: tokio {ping_pong_workers} workers, as one wq pod's pool; walk: tokio {cpus} workers, wq up to a worker per CPU of each pod ({cpus} CPUs): the same threads on the real CPUs\n"
    );
    outln!("remote wake, ping-pong of two tasks ({rounds} round trips):");
    outln!("  {:<28} {:>12}", "row", "per round trip");
    outln!(
        "  {:<28} {:>12}",
        "wq cache, same pod",
        fmt_ns(median(&same))
    );
    outln!(
        "  {:<28} {:>12}",
        "wq cache, cross pod",
        fmt_ns(median(&cross))
    );
    outln!("  {:<28} {:>12}", "tokio", fmt_ns(median(&tok)));
    outln!(
        "\ncache-affine walk: one task per cache pod, {} KiB working set each, {walks} rounds:",
        ws
    );
    outln!(
        "  {:<12} {:>10} {:>12} {:>12}",
        "row",
        "walks/s",
        "walk p50",
        "walk p99"
    );
    for (k, r, p50, p99) in &affine_rows {
        let label = if *k == "tokio" {
            "tokio".to_owned()
        } else {
            format!("wq {k}")
        };
        outln!(
            "  {label:<12} {:>10} {:>12} {:>12}",
            fmt_count(*r),
            fmt_ns(*p50),
            fmt_ns(*p99)
        );
    }
    Ok(())
}
