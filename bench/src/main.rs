//! `wq-bench`: wq's benchmarks, beside tokio on the same work. See
//! `docs/benchmarks.md` for what each measures and the figures it gave.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use wq_bench::args::Args;
use wq_bench::neighbours::Neighbours;
use wq_bench::{locality, machine, memory, out, outln, shapes, sweep, workqueue};

const WORKQUEUE: &str = "\
wq-bench workqueue: the kernel's test_workqueue.c shape (producers queue items one at a time
and wait for each): every scope x {under_lock, deferred}, plus tokio
  --producers P (default: the CPUs it may use)  --items N per producer (default 200000, the spec's)
  --repeat R (default 5)  --warmup W  --topology \"<hwloc synthetic>\"  --scopes cpu,smt,...
  --modes under_lock,deferred  --tokio-workers T (default: the CPUs it may use)  --spin-us US  --spinners N  --spin-watch deques|injector
  --workers W (wq's max_workers_per_pool; default: the pod's CPUs, at most the CPUs the
  process may use: pass it to give a --topology wider than this machine a worker per CPU)
  --plot-dir DIR (write SVG plots)  --json  --no-pin  --no-tokio
  --named (a row per scope spawning through a named wq::Workqueue: what a queue costs)
  --capture-off (a row per scope with latency capture off, the runtime's default; the other
  wq rows run with Builder::latency_capture(true), as a service with its dashboards would:
  the conservative figure, at capture's cost; the delay columns need no capture)
  --busy-neighbours N (N busy-loop processes run beside the benchmark)
";

const SWEEP: &str = "\
wq-bench sweep: the workqueue shape over producer counts, wq (deferred, latency capture on) at a
few scopes beside tokio: items/s and p95 enqueue with the wq/tokio ratio, and wq's pool-lock
acquisitions per item
  --producers 1,2,4,... (default: doubling up to 4x the CPUs it may use)  --items N per producer
  (default 20000)  --repeat R (default 3)  --scopes cpu,cache_shard,system (default)
  --topology \"<hwloc synthetic>\"  --tokio-workers T  --spin-us US  --spinners N  --spin-watch deques|injector  --workers W  --warmup W
  --plot-dir DIR (write SVG plots)  --json  --no-pin  --busy-neighbours N
";

const LOCALITY: &str = "\
wq-bench locality: same-pod vs cross-pod remote wake; cache-affine working set (wq cache/system,
tokio)
  --topology S (default \"pack:2 l3:2 core:2 pu:1\", since this machine has one LLC)
  --rounds N (default 100000)  --walks N (default 200)  --working-set-kib K (default 4096)
  --repeat R (default 6; rounded up to a multiple of 3: each row first as often)  --json
";

const MEMORY: &str = "\
wq-bench memory: bytes per idle task, RSS of an idle runtime, worker threads while idle
  --tasks N (default 100000)  --idle-secs S (default 5; spec 600)  --burst-workers W (default 8)
  --repeat R (default 3)  --workers W (both runtimes: wq's per pool, tokio's)  --json
";

const SHAPES: &str = "\
wq-bench shapes: tokio's rt_multi_threaded shapes without criterion (for perf/callgrind, and
beside busy neighbours); wq and tokio alternate iteration by iteration
  --shapes spawn_many,yield_many,ping_pong,chained_spawn,remote_spawn (the default), and
  block_in_place (1,000 tasks each spinning 20 us in the runtime's block_in_place), spawn_join
  (a task spawns 10,000 tasks one at a time, awaiting each one's join handle), join_set
  (100 rounds of 100 tasks spawned into the runtime's JoinSet and joined, then 10,000 spawned
  into a set and joined one at a time)
  --runtimes wq,tokio (wq runs with Builder::latency_capture(true); also wq-nocapture:
  latency capture off, the runtime's default)
  --iters N (default 50; rounded up to a multiple of the runtimes)  --workers W (both runtimes; default: the CPUs it may use)  --spin-us US  --spinners N  --spin-watch deques|injector  --json
  --busy-neighbours N (measure quietly, then beside N busy-loop processes, and report the
  runtimes' run-queue wait from schedstat)
  --layouts N (the measurement in N processes, each with its heap shifted differently, pooled,
  with wq/tokio per layout: a shape's ratio moves with where the runtimes' structures land)
";

const TIMERS: &str = "\
wq-bench timers: insert, cancel and fire of N timers, wq and tokio, ns per timer
  --timers N (default 1000000)  --repeat R (default 6; rounded up to even: each runtime first in half)
  --workers W (both runtimes; default: the CPUs it may use)
";

const FLUSHES: &str = "\
wq-bench flushes: N tasks at once, each spawning an item on one named wq queue and flushing it
(a flush per request): time until all returned, and per flush (wq only: tokio has no flush)
  --concurrent 10,100,1000,3000,10000 (default)  --repeat R (default 5)
  --workers W (default: the CPUs it may use)
";

const HTTP: &str = "\
wq-bench http: hyper http1 hello world on wq and tokio, loaded by wrk (scripts/setup-bench)
  --threads T (wrk -t, default 1)  --conns C (wrk -c, default 64)  --secs S (default 10)
  --repeat R (default 4; rounded up to even)  --workers W (both runtimes; default: the CPUs it may use)
  --spin-us US (wq's worker spin before parking; default: the runtime's)  --spinners N (the most wq workers of a pool spinning at once)  --spin-watch deques|injector (what wq spinners watch; default: by pool width)
  --runtimes wq,tokio (default both; one alone to profile it, e.g. under perf record)
";

const ECHO: &str = "\
wq-bench echo: TCP echo ping-pong, the same std-thread client against wq and tokio
  --conns C (default 8)  --size BYTES (default 64, at most 1 MiB)  --secs S (default 5)  --repeat R (default 4; rounded up to even)
  --workers W (both runtimes; default: the CPUs it may use)  --spin-us US (wq's worker spin before parking)  --spinners N  --spin-watch deques|injector
";

fn usage() -> String {
    format!(
        "usage: wq-bench <workqueue|sweep|locality|memory|shapes|timers|flushes|http|echo> [options]\n\
         (`wq-bench <subcommand> --help` shows one)\n\n{WORKQUEUE}\n{SWEEP}\n{LOCALITY}\n{MEMORY}\n{SHAPES}\n{TIMERS}\n{FLUSHES}\n{HTTP}\n{ECHO}"
    )
}

/// The command line's arguments (`main` refuses one that is not UTF-8
/// first: `std::env::args` panicked on it).
fn args() -> impl Iterator<Item = String> {
    std::env::args_os().map(|a| a.to_string_lossy().into_owned())
}

fn command_line() -> String {
    let mut parts = vec!["wq-bench".to_owned()];
    for a in args().skip(1) {
        if a.contains(' ') || a.is_empty() {
            parts.push(format!("\"{a}\""));
        } else {
            parts.push(a);
        }
    }
    parts.join(" ")
}

fn main() -> ExitCode {
    if let Some(bad) = std::env::args_os().skip(1).find(|a| a.to_str().is_none()) {
        wq_bench::progress!(
            "wq-bench: argument {bad:?} is not valid UTF-8: give options and paths in UTF-8"
        );
        return ExitCode::from(1);
    }
    let mut argv = args().skip(1);
    let Some(sub) = argv.next() else {
        eprint!("{}", usage());
        return ExitCode::from(2);
    };
    let rest: Vec<String> = argv.collect();
    let help = rest.iter().any(|a| a == "--help" || a == "-h");
    let sub_usage = match sub.as_str() {
        "workqueue" => Some(WORKQUEUE),
        "sweep" => Some(SWEEP),
        "locality" => Some(LOCALITY),
        "memory" => Some(MEMORY),
        "shapes" => Some(SHAPES),
        "timers" => Some(TIMERS),
        "flushes" => Some(FLUSHES),
        "http" => Some(HTTP),
        "echo" => Some(ECHO),
        _ => None,
    };
    if let (true, Some(u)) = (help, sub_usage) {
        out!("{u}");
        return ExitCode::SUCCESS;
    }
    let result = match sub.as_str() {
        "workqueue" => run_workqueue(&rest),
        "sweep" => run_sweep(&rest),
        "locality" => locality::main(&rest, &command_line()),
        "memory" => memory::main(&rest, &command_line()),
        "memory-probe" => memory::probe_main(&rest),
        // Started by `--busy-neighbours` with its parent's pid, which it
        // exits with: without one (a typo, `--help`), it would spin for
        // ever from a shell.
        "busy-loop" => match rest.first().and_then(|p| p.parse().ok()) {
            Some(parent) => wq_bench::neighbours::busy_loop(parent),
            None => Err(
                "busy-loop is the process --busy-neighbours starts, given its parent's pid; it is not run by hand".to_owned(),
            ),
        },
        "shapes" => run_shapes(&rest),
        "timers" => wq_bench::services::timers_main(&rest, &command_line()),
        "flushes" => wq_bench::flushes::main(&rest, &command_line()),
        "http" => wq_bench::services::http_main(&rest, &command_line()),
        "echo" => wq_bench::services::echo_main(&rest, &command_line()),
        "-h" | "--help" | "help" => {
            out!("{}", usage());
            Ok(())
        }
        other => Err(format!("unknown subcommand {other:?}\n\n{}", usage())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            wq_bench::progress!("wq-bench {sub}: {e}");
            // Only a subcommand that has options (an unknown one was just
            // told the list of those that do).
            if sub_usage.is_some() {
                wq_bench::progress!("(`wq-bench {sub} --help` lists the options)");
            }
            ExitCode::FAILURE
        }
    }
}

fn parse(argv: &[String], options: &[&str], flags: &[&str]) -> Result<Args, String> {
    let a = Args::parse(argv.iter().cloned(), flags)?;
    a.check_known(&options.iter().chain(flags).copied().collect::<Vec<_>>())?;
    Ok(a)
}

fn neighbours_line(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("# beside {n} busy-loop processes (--busy-neighbours)\n")
    }
}

/// `--plot-dir DIR`, made (and checked writable) before the run: a
/// directory that cannot take the plots is said at once, not after
/// minutes of measuring (when the results were lost with it).
fn plot_dir(dir: Option<&str>) -> Result<Option<PathBuf>, String> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let dir = PathBuf::from(dir);
    let fail = |e: std::io::Error| format!("--plot-dir {}: {e}", dir.display());
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let probe = dir.join(".wq-bench-probe");
    std::fs::write(&probe, b"").map_err(fail)?;
    let _ = std::fs::remove_file(&probe);
    Ok(Some(dir))
}

/// Writes the plots `plots` makes in `dir` (from [`plot_dir`]), before the
/// results are printed: a reader that closes stdout early (`| head`)
/// loses none.
fn write_plots(
    dir: Option<PathBuf>,
    plots: impl FnOnce(&Path) -> Result<Vec<String>, String>,
) -> Result<(), String> {
    let Some(dir) = dir else {
        return Ok(());
    };
    for p in plots(&dir)? {
        wq_bench::progress!("wrote {p}");
    }
    Ok(())
}

fn run_workqueue(argv: &[String]) -> Result<(), String> {
    let a = parse(argv, workqueue::OPTIONS, workqueue::FLAGS)?;
    let cfg = workqueue::Config::from_args(&a)?;
    let command = command_line();
    let plots = plot_dir(a.raw("plot-dir"))?;
    let busy = Neighbours::start(a.get("busy-neighbours", 0usize)?)?;
    let rows = workqueue::run(&cfg)?;
    let n = busy.len();
    drop(busy);
    // Before the results (a reader that closes stdout early loses no
    // plot); a plot that fails is reported after them (a long run's
    // results are not lost to it).
    let plotted = write_plots(plots, |dir| workqueue::plots(&cfg, &rows, dir));
    if a.flag("json") {
        let mut v = workqueue::json(&cfg, &rows, &command, n);
        v["busy_neighbours"] = n.into();
        outln!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
        return plotted;
    }
    out!("{}", machine::header(&command));
    out!("{}", neighbours_line(n));
    outln!(
        "# topology: {}",
        cfg.topology
            .as_deref()
            .map_or("this machine (read with hwloc)".to_owned(), |t| format!(
                "synthetic \"{t}\" (pods laid out as on that machine; threads not bound)"
            ))
    );
    let wq_workers = match cfg.workers {
        Some(n) => format!("{n} per pool (--workers)"),
        None => format!(
            "a pool's pod CPUs, at most {} (the CPUs this process may use)",
            machine::online_cpus()
        ),
    };
    outln!(
        "# {} producers x {} items (+{} warm-up), medians of {} runs; wq workers: {wq_workers}; tokio: {} workers\n",
        cfg.producers,
        cfg.items,
        cfg.warmup,
        // The runs made (`balanced_repeats` may round the count up).
        rows.first().map_or(cfg.repeat, |r| r.runs.len()),
        cfg.tokio_workers
    );
    out!("{}", workqueue::patch_table(&cfg, &rows));
    outln!();
    out!("{}", workqueue::detail_table(&cfg, &rows));
    outln!(
        "\ntargets (level: not met, but inside the spread of rows that repeat one configuration here):"
    );
    for (what, verdict) in workqueue::targets(&cfg, &rows, n) {
        outln!("  [{}] {what}", verdict.label());
    }
    plotted
}

fn run_sweep(argv: &[String]) -> Result<(), String> {
    let a = parse(argv, sweep::OPTIONS, sweep::FLAGS)?;
    let s = sweep::Sweep::from_args(&a)?;
    let command = command_line();
    let plots = plot_dir(a.raw("plot-dir"))?;
    let busy = Neighbours::start(a.get("busy-neighbours", 0usize)?)?;
    let steps = sweep::run(&s)?;
    let n = busy.len();
    drop(busy);
    // Before the results (a reader that closes stdout early loses no
    // plot); a plot that fails is reported after them (a long run's
    // results are not lost to it).
    let plotted = write_plots(plots, |dir| sweep::plots(&s, &steps, dir));
    if a.flag("json") {
        let v = sweep::json(&s, &steps, &command, n);
        outln!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
        return plotted;
    }
    out!("{}", machine::header(&command));
    out!("{}", neighbours_line(n));
    outln!(
        "# {} items per producer (+{} warm-up), medians of {} runs; tokio: {} workers; wq with latency capture on (Builder::latency_capture(true))\n",
        s.base.items,
        s.base.warmup,
        sweep::runs_made(&s, &steps),
        s.base.tokio_workers
    );
    out!("{}", sweep::table(&s, &steps));
    outln!(
        "\ntargets (for a 16-64 CPU machine; on fewer CPUs every wide scope is one small pool):"
    );
    for (what, met) in sweep::targets(&s, &steps, n) {
        outln!("  [{}] {what}", if met { "met" } else { "MISSED" });
    }
    plotted
}

/// `shapes --layouts N`: the same measurement in N processes, each with
/// its heap shifted differently (`--pad K`), pooled: a shape's ratio
/// moves with where the runtimes' hot structures land (section 5 of
/// docs/benchmarks.md), so one process measures one layout.
fn run_shape_layouts(
    argv: &[String],
    a: &wq_bench::args::Args,
    layouts: usize,
) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find wq-bench itself: {e}"))?;
    // Its own arguments but `--layouts` and `--json`, which it sets.
    let mut child_args: Vec<String> = vec!["shapes".to_owned()];
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--layouts" | "--pad" => {
                it.next();
            }
            "--json" => {}
            other if other.starts_with("--layouts=") || other.starts_with("--pad=") => {}
            other => child_args.push(other.to_owned()),
        }
    }
    let mut measured = Vec::with_capacity(layouts);
    for k in 0..layouts {
        wq_bench::progress!("[layout {}/{layouts}] --pad {k}", k + 1);
        // A layout's process goes with this one, set up before it runs
        // (its busy neighbours go with it, by their own death signal).
        let out = wq_bench::neighbours::die_with_parent(&mut std::process::Command::new(&exe))
            .args(&child_args)
            .args(["--json", "--pad", &k.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| format!("could not run layout {k}: {e}"))?;
        if !out.status.success() {
            return Err(format!("layout {k} failed ({})", out.status));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("layout {k}'s output is not JSON: {e}"))?;
        measured.push(shapes::timings_of_json(&v)?);
    }
    let timings = shapes::pool_layouts(&measured);
    let neighbours: usize = a.get("busy-neighbours", 0)?;
    let ratios = shapes::layout_ratios(&measured, 0);
    let busy_ratios = (neighbours > 0).then(|| shapes::layout_ratios(&measured, neighbours));
    let workers: usize = a.count("workers", machine::online_cpus())?;
    let spin = workqueue::spin_arg(a)?;
    let command = command_line();
    if a.flag("json") {
        let mut v = shapes::json(&timings, neighbours, &command, workers, spin);
        v["layouts"] = layouts.into();
        // Judged as the text's are: on the layouts' own ratios.
        v["targets"] = shapes::layout_targets(&measured, neighbours)
            .into_iter()
            .map(|(t, met)| serde_json::json!({"target": t, "met": met}))
            .collect::<Vec<_>>()
            .into();
        let by_shape = |ratios: &[(String, Vec<f64>)]| -> serde_json::Value {
            ratios
                .iter()
                .map(|(s, r)| (s.clone(), serde_json::json!(r)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        v["layout_ratios"] = by_shape(&ratios);
        if let Some(busy) = &busy_ratios {
            v["layout_ratios_busy"] = by_shape(busy);
        }
        return print_json(&v);
    }
    out!("{}", machine::header(&command));
    outln!(
        "# {layouts} heap layouts (a process each, --pad 0..{}), their iterations pooled; {workers} workers each\n",
        layouts - 1
    );
    out!("{}", shapes::table(&timings, neighbours));
    let phases = std::iter::once(("quiet".to_owned(), &ratios)).chain(
        busy_ratios
            .iter()
            .map(|b| (format!("beside {neighbours} busy loops"), b)),
    );
    for (phase, ratios) in phases {
        outln!(
            "\n{}/tokio median time per layout ({phase}):",
            shapes::compared(&timings)
        );
        for (shape, r) in ratios {
            let mut sorted = r.clone();
            sorted.sort_by(f64::total_cmp);
            outln!(
                "  {shape:<14} {}  (median {:.2}, {:.2}-{:.2})",
                r.iter()
                    .map(|x| format!("{x:.2}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                wq_bench::stats::median(r),
                sorted[0],
                sorted[sorted.len() - 1]
            );
        }
    }
    print_targets(
        &shapes::layout_targets(&measured, neighbours),
        " (wq/tokio: the median of the layouts' ratios; the slowest run: over all)",
    );
    Ok(())
}

/// The shapes' targets, when measured beside busy neighbours.
fn print_shape_targets(timings: &[shapes::Timing], neighbours: usize, on: &str) {
    print_targets(&shapes::targets(timings, neighbours), on);
}

/// Targets and their verdicts, if any.
fn print_targets(t: &[(String, bool)], on: &str) {
    if !t.is_empty() {
        outln!("\ntargets{on}:");
        for (what, met) in t {
            outln!("  [{}] {what}", if *met { "met" } else { "MISSED" });
        }
    }
}

/// Prints a `--json` document.
fn print_json(v: &serde_json::Value) -> Result<(), String> {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn run_shapes(argv: &[String]) -> Result<(), String> {
    let a = parse(argv, shapes::OPTIONS, shapes::FLAGS)?;
    let layouts: usize = a.count("layouts", 1)?;
    if layouts > 1 {
        if a.raw("pad").is_some() {
            return Err(format!(
                "--pad with --layouts {layouts}: each layout's process is given its own pad (0..{}); give one or the other",
                layouts - 1
            ));
        }
        return run_shape_layouts(argv, &a, layouts);
    }
    shapes::pad_heap(a.get("pad", 0usize)?);
    let names: Vec<String> = a.list(
        "shapes",
        shapes::NAMES.iter().map(|s| s.to_string()).collect(),
    )?;
    let runtimes: Vec<String> = a.list("runtimes", vec!["wq".to_owned(), "tokio".to_owned()])?;
    // Each runtime first in an equal share of the rounds.
    let iters = a.rounds("iters", 50, runtimes.len())?;
    let workers: usize = a.count("workers", machine::online_cpus())?;
    let neighbours: usize = a.get("busy-neighbours", 0)?;
    let command = command_line();
    let spin = workqueue::spin_arg(&a)?;
    let timings = shapes::measure(&names, &runtimes, iters, workers, neighbours, spin)?;
    if a.flag("json") {
        return print_json(&shapes::json(&timings, neighbours, &command, workers, spin));
    }
    out!("{}", machine::header(&command));
    outln!(
        "# {workers} workers each; {iters} iterations per runtime, alternating (each first in an equal share){}\n",
        if neighbours > 0 {
            format!("; quiet, then beside {neighbours} busy-loop processes")
        } else {
            String::new()
        }
    );
    out!("{}", shapes::table(&timings, neighbours));
    print_shape_targets(&timings, neighbours, "");
    Ok(())
}
