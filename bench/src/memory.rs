//! Memory and threads: bytes per idle task, RSS of an idle runtime, and the
//! worker threads of a runtime left idle after a burst.
//!
//! Each figure is taken in a fresh child process (this binary, re-run with
//! the hidden `memory-probe` subcommand): in one process the allocator
//! would reuse what an earlier measurement freed and the RSS deltas after
//! the first would read near zero.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::args::Args;
use crate::machine::{rss_anon_bytes, rss_bytes, thread_count};
use crate::stats::{fmt_bytes, median};

const OPTIONS: &[&str] = &["tasks", "idle-secs", "burst-workers", "repeat", "workers"];
const FLAGS: &[&str] = &["json"];

/// `wq-bench memory`.
pub fn main(argv: &[String], command: &str) -> Result<(), String> {
    let a = Args::parse(argv.iter().cloned(), FLAGS)?;
    a.check_known(&OPTIONS.iter().chain(FLAGS).copied().collect::<Vec<_>>())?;
    let tasks: usize = a.count("tasks", 100_000)?;
    let idle_secs: u64 = a.get("idle-secs", 5)?;
    let burst: usize = a.count("burst-workers", 8)?;
    let repeat: usize = a.count("repeat", 3usize)?;
    let workers: usize = a.count("workers", crate::machine::online_cpus())?;

    let mut out = json!({
        "bench": "memory", "machine": crate::machine::description(),
        "date": crate::machine::date(), "command": command,
        "tasks": tasks, "workers": workers, "idle_secs": idle_secs, "burst_workers": burst,
    });
    let mut text = crate::machine::header(command);
    text.push_str(&format!(
        "# wq: system scope, max_workers_per_pool {workers}; tokio: multi-thread, worker_threads {workers}; \
         every figure from a fresh process, medians of {repeat} (the threads after a burst below: one run)\n\n"
    ));
    text.push_str(&format!(
        "{:<8} {:>16} {:>16} {:>18} {:>16}\n",
        "runtime", "idle runtime RSS", "of it anonymous", "bytes / idle task", "threads (idle)"
    ));
    for rt in ["wq", "tokio"] {
        let mut rss = Vec::new();
        let mut anon = Vec::new();
        let mut rss_topo = Vec::new();
        let mut anon_topo = Vec::new();
        let mut per_task = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..repeat {
            let v = probe(&["idle", rt, &workers.to_string()])?;
            rss.push(v["rss_delta"].as_f64().unwrap_or(f64::NAN));
            rss_topo.push(v["rss_topology"].as_f64().unwrap_or(0.0));
            anon.push(v["rss_anon_delta"].as_f64().unwrap_or(f64::NAN));
            anon_topo.push(v["rss_anon_topology"].as_f64().unwrap_or(0.0));
            threads.push(v["threads"].as_f64().unwrap_or(f64::NAN));
            let v = probe(&["tasks", rt, &workers.to_string(), &tasks.to_string()])?;
            per_task.push(v["bytes_per_task"].as_f64().unwrap_or(f64::NAN));
        }
        let (r, p, t) = (median(&rss), median(&per_task), median(&threads));
        let (rt_topo, a, a_topo) = (median(&rss_topo), median(&anon), median(&anon_topo));
        text.push_str(&format!(
            "{rt:<8} {:>16} {:>16} {:>18.0} {:>16}{}\n",
            fmt_bytes(r),
            fmt_bytes(a),
            p,
            t,
            if rt_topo > 0.0 {
                format!(
                    "   (of which the hwloc topology read: {}, {} anonymous)",
                    fmt_bytes(rt_topo),
                    fmt_bytes(a_topo)
                )
            } else {
                String::new()
            }
        ));
        out[rt] = json!({
            "idle_runtime_rss_bytes": r, "idle_runtime_rss_runs": rss,
            "idle_runtime_rss_anon_bytes": a, "idle_runtime_rss_anon_runs": anon,
            "topology_read_rss_bytes": rt_topo, "topology_read_rss_anon_bytes": a_topo,
            "bytes_per_idle_task": p, "bytes_per_idle_task_runs": per_task,
            "idle_runtime_threads": t,
        });
    }
    text.push_str(&format!(
        "(idle runtime: RSS and threads added by building the runtime and running one task, 200 ms later; \
         anonymous: the private pages (heap, stacks) of that RSS, without mapped library code; \
         bytes / idle task: RSS added by {tasks} spawned tasks each parked on a pending future, JoinHandles dropped)\n\n"
    ));
    text.push_str(&format!(
        "worker threads after a burst of {burst} blocking items, then idle {idle_secs} s (1 s idle timeout; one run each):\n"
    ));
    for rt in ["wq", "tokio"] {
        let v = probe(&[
            "cull",
            rt,
            &workers.to_string(),
            &burst.to_string(),
            &idle_secs.to_string(),
        ])?;
        let samples: Vec<(f64, f64)> = v["samples"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| (s[0].as_f64().unwrap_or(0.0), s[1].as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default();
        let mut line = format!("  {rt:<6} threads at t=");
        let mut last = f64::NAN;
        for (i, (t, n)) in samples.iter().enumerate() {
            if *n != last || i + 1 == samples.len() {
                line.push_str(&format!("{t:.0}s:{n} "));
                last = *n;
            }
        }
        text.push_str(&line);
        text.push('\n');
        if let Some(extra) = v["note"].as_str() {
            text.push_str(&format!("         {extra}\n"));
        }
        out[format!("{rt}_cull")] = v;
    }
    text.push_str(
        "(threads: the process's threads minus those before the runtime was built; wq's kernel minimum is 2 idle workers per pool)\n",
    );
    if a.flag("json") {
        outln!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?
        );
    } else {
        out!("{text}");
    }
    Ok(())
}

fn probe(args: &[&str]) -> Result<Value, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = crate::neighbours::die_with_parent(&mut Command::new(exe))
        .arg("memory-probe")
        .args(args)
        .output()
        .map_err(|e| format!("memory probe: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "memory probe {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("memory probe output: {e}"))
}

/// Either runtime, built for a probe.
enum Rt {
    Wq(wq::Runtime),
    Tokio(tokio::runtime::Runtime),
}

impl Rt {
    fn build(name: &str, workers: usize, topology: Option<wq::Topology>) -> Result<Rt, String> {
        Rt::build_with(name, workers, None, topology)
    }

    fn build_with(
        name: &str,
        workers: usize,
        idle_timeout: Option<Duration>,
        topology: Option<wq::Topology>,
    ) -> Result<Rt, String> {
        match name {
            "wq" => {
                let mut b = wq::Runtime::builder()
                    .default_scope(wq::Scope::System)
                    .max_workers_per_pool(workers);
                if let Some(t) = topology {
                    b = b.topology(t);
                }
                if let Some(t) = idle_timeout {
                    b = b.idle_timeout(t);
                }
                b.build().map(Rt::Wq).map_err(|e| e.to_string())
            }
            "tokio" => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                // Its drivers on, as wq's always are (`workqueue::build_tokio`).
                b.worker_threads(workers).enable_all();
                if let Some(t) = idle_timeout {
                    b.thread_keep_alive(t);
                }
                b.build().map(Rt::Tokio).map_err(|e| e.to_string())
            }
            other => Err(format!("unknown runtime {other:?}")),
        }
    }

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
        match self {
            Rt::Wq(rt) => drop(rt.spawn(f)),
            Rt::Tokio(rt) => drop(rt.spawn(f)),
        }
    }

    fn run_one(&self) {
        let done = crate::completion::Completion::new();
        let d = done.clone();
        self.spawn(async move { d.complete() });
        done.wait();
    }
}

/// Waits until `counter` reaches `n`; an error after 120 s (a figure
/// divided by `n` would then be wrong).
fn wait_for(counter: &AtomicUsize, n: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while counter.load(Ordering::Acquire) < n {
        if Instant::now() >= deadline {
            return Err(format!(
                "memory-probe: only {} of {n} tasks started within 120 s",
                counter.load(Ordering::Acquire)
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// The hidden `memory-probe` subcommand: one measurement, JSON on stdout.
pub fn probe_main(argv: &[String]) -> Result<(), String> {
    let arg = |i: usize| -> Result<&str, String> {
        argv.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("memory-probe: missing argument {i}"))
    };
    let num = |i: usize| -> Result<usize, String> { arg(i)?.parse().map_err(|e| format!("{e}")) };
    let (what, rt_name, workers) = (arg(0)?, arg(1)?, num(2)?);
    // Before any baseline: `run_one`'s completion would start it midway.
    crate::completion::start_watchdog();
    let v = match what {
        "idle" => {
            let (rss0, anon0, th0) = (rss_bytes(), rss_anon_bytes(), thread_count());
            // wq reads the machine with hwloc at build: measure that apart.
            let topo = if rt_name == "wq" {
                Some(wq::Topology::detect().map_err(|e| e.to_string())?)
            } else {
                None
            };
            let (rss_topo, anon_topo) = if topo.is_some() {
                (
                    rss_bytes() as f64 - rss0 as f64,
                    rss_anon_bytes() as f64 - anon0 as f64,
                )
            } else {
                (0.0, 0.0)
            };
            let rt = Rt::build(rt_name, workers, topo)?;
            rt.run_one();
            std::thread::sleep(Duration::from_millis(200));
            let v = json!({
                "rss_delta": rss_bytes() as f64 - rss0 as f64,
                "rss_topology": rss_topo,
                "rss_anon_delta": rss_anon_bytes() as f64 - anon0 as f64,
                "rss_anon_topology": anon_topo,
                "threads": thread_count() - th0,
            });
            drop(rt);
            v
        }
        "tasks" => {
            let n = num(3)?;
            let rt = Rt::build(rt_name, workers, None)?;
            rt.run_one();
            std::thread::sleep(Duration::from_millis(100));
            let started = Arc::new(AtomicUsize::new(0));
            let rss0 = rss_bytes();
            for _ in 0..n {
                let s = started.clone();
                rt.spawn(async move {
                    s.fetch_add(1, Ordering::Release);
                    futures::future::pending::<()>().await
                });
            }
            wait_for(&started, n)?;
            std::thread::sleep(Duration::from_millis(100));
            let delta = rss_bytes() as f64 - rss0 as f64;
            json!({"rss_delta": delta, "bytes_per_task": delta / n as f64})
        }
        "cull" => {
            let burst = num(3)?;
            let idle_secs = num(4)? as u64;
            let th0 = thread_count();
            let rt = Rt::build_with(
                rt_name,
                burst.max(workers),
                Some(Duration::from_secs(1)),
                None,
            )?;
            if let Rt::Tokio(_) = rt {
                // tokio's workers are fixed: rebuild with the shared worker
                // count; the burst grows its blocking pool instead.
                drop(rt);
                return cull_tokio(workers, burst, idle_secs, th0);
            }
            // Items that block their worker, so the pool grows to `burst`.
            let done = Arc::new(AtomicUsize::new(0));
            for _ in 0..burst {
                let d = done.clone();
                rt.spawn(async move {
                    std::thread::sleep(Duration::from_millis(300));
                    d.fetch_add(1, Ordering::Release);
                });
            }
            wait_for(&done, burst)?;
            let samples = sample_threads(th0, idle_secs);
            let Rt::Wq(wqrt) = &rt else { unreachable!() };
            let m = wqrt.metrics();
            let note = m
                .pools
                .iter()
                .map(|p| {
                    format!(
                        "pool {}: {} workers ({} idle), created {}, culled {}",
                        p.id,
                        p.workers.total,
                        p.workers.idle,
                        p.counters.workers_created,
                        p.counters.workers_culled
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            json!({"samples": samples, "note": note})
        }
        other => return Err(format!("memory-probe: unknown probe {other:?}")),
    };
    outln!("{v}");
    Ok(())
}

fn cull_tokio(workers: usize, burst: usize, idle_secs: u64, th0: usize) -> Result<(), String> {
    let rt = Rt::build_with("tokio", workers, Some(Duration::from_secs(1)), None)?;
    let Rt::Tokio(t) = &rt else { unreachable!() };
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..burst {
        let d = done.clone();
        drop(t.spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(300));
            d.fetch_add(1, Ordering::Release);
        }));
    }
    wait_for(&done, burst)?;
    let samples = sample_threads(th0, idle_secs);
    let note = format!(
        "tokio: {workers} fixed workers; the burst ran on spawn_blocking threads (thread_keep_alive 1 s)"
    );
    outln!("{}", json!({"samples": samples, "note": note}));
    Ok(())
}

/// Threads above `base`, every second for `secs` seconds (t = 0 first).
fn sample_threads(base: usize, secs: u64) -> Vec<(u64, usize)> {
    let start = Instant::now();
    let mut out = vec![(0, thread_count().saturating_sub(base))];
    for s in 1..=secs {
        let at = start + Duration::from_secs(s);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        out.push((s, thread_count().saturating_sub(base)));
    }
    out
}
