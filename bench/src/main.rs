//! `wq-bench`: the experiments of issue 4. See `docs/benchmarks.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use wq_bench::args::Args;
use wq_bench::{locality, machine, memory, workqueue};

const USAGE: &str = "\
usage: wq-bench <workqueue|locality|memory|shapes|timers|http|echo> [options]

workqueue  the kernel's test_workqueue.c shape: every scope x {under_lock, deferred} + tokio
  --producers P (default: online CPUs)  --items N per producer (default 200000, the spec's)
  --repeat R (default 5)  --warmup W  --topology \"<hwloc synthetic>\"  --scopes cpu,smt,...
  --modes under_lock,deferred  --tokio-workers T (default: online CPUs)  --spin-us US
  --plot-dir DIR (write SVG plots)  --json  --no-pin  --no-tokio
locality   same-pod vs cross-pod remote wake; cache-affine working set (wq cache/system, tokio)
  --topology S (default \"pack:2 l3:2 core:2 pu:1\", since this machine has one LLC)
  --rounds N (default 100000)  --walks N (default 200)  --working-set-kib K (default 4096)
  --repeat R (default 5)  --json
memory     bytes per idle task, RSS of an idle runtime, worker threads while idle
  --tasks N (default 100000)  --idle-secs S (default 5; spec 600)  --burst-workers W (default 8)
  --repeat R (default 3)  --json
shapes     tokio's rt_multi_threaded shapes without criterion (for perf/callgrind)
  --shapes spawn_many,yield_many,ping_pong,chained_spawn,remote_spawn  --runtimes wq,tokio
  --iters N (default 50)  --workers W (default: online CPUs)
timers     insert, cancel and fire of N timers, wq and tokio, ns per timer
  --timers N (default 1000000)  --repeat R (default 5)
http       hyper http1 hello world on wq and tokio, loaded by wrk (scripts/setup-bench)
  --threads T (wrk -t, default 1)  --conns C (wrk -c, default 64)  --secs S (default 10)
  --repeat R (default 3)  --workers W (default: online CPUs)
echo       TCP echo ping-pong, the same std-thread client against wq and tokio
  --conns C (default 8)  --size BYTES (default 64)  --secs S (default 5)  --repeat R (default 3)
  --workers W (default: online CPUs)
";

fn command_line() -> String {
    let mut parts = vec!["wq-bench".to_owned()];
    for a in std::env::args().skip(1) {
        if a.contains(' ') || a.is_empty() {
            parts.push(format!("\"{a}\""));
        } else {
            parts.push(a);
        }
    }
    parts.join(" ")
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let Some(sub) = argv.next() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest: Vec<String> = argv.collect();
    let result = match sub.as_str() {
        "workqueue" => run_workqueue(&rest),
        "locality" => locality::main(&rest, &command_line()),
        "memory" => memory::main(&rest, &command_line()),
        "memory-probe" => memory::probe_main(&rest),
        "shapes" => run_shapes(&rest),
        "timers" => wq_bench::services::timers_main(&rest, &command_line()),
        "http" => wq_bench::services::http_main(&rest, &command_line()),
        "echo" => wq_bench::services::echo_main(&rest, &command_line()),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown subcommand {other:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wq-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_workqueue(argv: &[String]) -> Result<(), String> {
    let a = Args::parse(argv.iter().cloned(), workqueue::FLAGS)?;
    let known: Vec<&str> = workqueue::OPTIONS
        .iter()
        .chain(workqueue::FLAGS)
        .copied()
        .collect();
    a.check_known(&known)?;
    let cfg = workqueue::Config::from_args(&a)?;
    let command = command_line();
    let rows = workqueue::run(&cfg)?;
    if let Some(dir) = a.raw("plot-dir") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for p in workqueue::plots(&cfg, &rows, &dir)? {
            eprintln!("wrote {p}");
        }
    }
    if a.flag("json") {
        let v = workqueue::json(&cfg, &rows, &command);
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    print!("{}", machine::header(&command));
    println!(
        "# topology: {}",
        cfg.topology
            .as_deref()
            .map_or("this machine (read with hwloc)".to_owned(), |t| format!(
                "synthetic \"{t}\" (pods laid out as on that machine; threads not bound)"
            ))
    );
    println!(
        "# {} producers x {} items (+{} warm-up), medians of {} runs; tokio: {} workers\n",
        cfg.producers, cfg.items, cfg.warmup, cfg.repeat, cfg.tokio_workers
    );
    print!("{}", workqueue::seed_table(&cfg, &rows));
    println!();
    print!("{}", workqueue::detail_table(&cfg, &rows));
    println!(
        "\ntargets (level: not met, but inside the spread of rows that repeat one configuration here):"
    );
    for (what, verdict) in workqueue::targets(&cfg, &rows) {
        println!("  [{}] {what}", verdict.label());
    }
    Ok(())
}

fn run_shapes(argv: &[String]) -> Result<(), String> {
    use wq_bench::shapes;
    let a = Args::parse(argv.iter().cloned(), &[])?;
    a.check_known(&["shapes", "runtimes", "iters", "workers"])?;
    let names: Vec<String> = a.list(
        "shapes",
        shapes::NAMES.iter().map(|s| s.to_string()).collect(),
    )?;
    let runtimes: Vec<String> = a.list("runtimes", vec!["wq".to_owned(), "tokio".to_owned()])?;
    let iters: usize = a.get("iters", 50)?;
    let workers: usize = a.get("workers", machine::online_cpus())?;
    print!("{}", machine::header(&command_line()));
    println!("# {workers} workers each; median of {iters} iterations\n");
    println!("{:<14} {:<6} {:>12}", "shape", "rt", "median");
    for rt in &runtimes {
        let time = |f: &dyn Fn() -> bool| -> Result<f64, String> {
            let mut t = Vec::with_capacity(iters);
            for _ in 0..iters {
                let s = std::time::Instant::now();
                if !f() {
                    return Err("unknown shape".to_owned());
                }
                t.push(s.elapsed().as_nanos() as f64);
            }
            Ok(wq_bench::stats::median(&t))
        };
        match rt.as_str() {
            "wq" => {
                let r = shapes::Wq::new(workers);
                for n in &names {
                    let m = time(&|| shapes::run(n, &r))?;
                    println!("{n:<14} {rt:<6} {:>12}", wq_bench::stats::fmt_ns(m));
                }
            }
            "tokio" => {
                let r = shapes::Tokio::new(workers);
                for n in &names {
                    let m = time(&|| shapes::run(n, &r))?;
                    println!("{n:<14} {rt:<6} {:>12}", wq_bench::stats::fmt_ns(m));
                }
            }
            other => return Err(format!("unknown runtime {other:?}")),
        }
    }
    Ok(())
}
