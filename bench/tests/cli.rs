//! `wq-bench` as a user runs it: help, bad input, and the busy neighbours
//! cleaned up after a run.

use std::process::Command;

#[path = "../../runtime/tests/common/child.rs"]
mod child;

fn wq_bench(args: &[&str]) -> std::process::Output {
    child::output(Command::new(env!("CARGO_BIN_EXE_wq-bench")).args(args))
}

/// `shapes --shapes chained_spawn --iters 2 --json`.
const CHAINED_SPAWN_JSON: [&str; 6] = [
    "shapes",
    "--shapes",
    "chained_spawn",
    "--iters",
    "2",
    "--json",
];

/// [`CHAINED_SPAWN_JSON`] with `extra`: its
/// document, the run having succeeded.
fn chained_spawn_json(extra: &[&str]) -> serde_json::Value {
    let args = [&CHAINED_SPAWN_JSON[..], extra].concat();
    let out = wq_bench(&args);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn help_after_any_subcommand_prints_its_usage() {
    for sub in [
        "workqueue",
        "sweep",
        "locality",
        "memory",
        "shapes",
        "flushes",
    ] {
        for flag in ["--help", "-h"] {
            let out = wq_bench(&[sub, "--items", "5", flag]);
            assert!(out.status.success(), "{sub} {flag}: {out:?}");
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(
                text.starts_with(&format!("wq-bench {sub}:")),
                "{sub} {flag}: {text}"
            );
        }
    }
    let out = wq_bench(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("sweep"));
}

#[test]
fn bad_options_say_what_is_wrong_and_where_to_look() {
    let out = wq_bench(&["sweep", "--producers", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--producers"), "{err}");
    assert!(err.contains("wq-bench sweep --help"), "{err}");
    // No warm-up beside tokio would time wq's worker starts only.
    for sub in ["workqueue", "sweep"] {
        let out = wq_bench(&[sub, "--warmup", "0", "--items", "5"]);
        assert!(!out.status.success(), "{sub}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("give --warmup 1 or more"), "{err}");
    }
    let out = wq_bench(&["workqueue", "--no-such-option", "1"]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown option --no-such-option"), "{err}");
    let out = wq_bench(&["frobnicate"]);
    assert!(!out.status.success());
    // No `wq-bench frobnicate --help` to point at: the list of those
    // there are is the answer.
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown subcommand \"frobnicate\""), "{err}");
    assert!(!err.contains("frobnicate --help"), "{err}");
    // A run's length that overflows its end instant (it panicked).
    for sub in ["echo", "http"] {
        let out = wq_bench(&[sub, "--secs", "18446744073709551615"]);
        assert_eq!(out.status.code(), Some(1), "{sub}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("at most 86400 (a day)"), "{err}");
    }
}

/// The busy-loop processes wq-bench process `parent` started (each is
/// given its parent's pid; they outlive it only if left behind). Those of
/// other wq-bench runs on the machine (a developer's benchmark beside the
/// tests) are not counted.
fn busy_loops_of(parent: u32) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mine = format!("busy-loop {parent}");
    dir.flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c).replace('\0', " ");
                    c.contains("wq-bench") && c.trim_end().ends_with(&mine)
                })
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn busy_neighbours_run_beside_a_benchmark_and_are_gone_after_it() {
    let bench = Command::new(env!("CARGO_BIN_EXE_wq-bench"))
        .args(CHAINED_SPAWN_JSON)
        .args(["--busy-neighbours", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = bench.id();
    let _killer = child::kill_after(pid, child::CHILD_LIMIT);
    let out = bench.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["busy_neighbours"], 2);
    // Quiet and busy rows for both runtimes, and the two targets each.
    assert_eq!(v["rows"].as_array().unwrap().len(), 4);
    assert_eq!(v["targets"].as_array().unwrap().len(), 2);
    // The children are killed and reaped before wq-bench exits.
    assert_eq!(busy_loops_of(pid), 0, "busy loops left behind");
}

/// A `--plot-dir` that cannot take the plots is refused before the run
/// (it failed after the whole run, its results unprinted); one that can
/// gets them after the results.
#[test]
fn a_plot_dir_is_checked_before_the_run() {
    let small = [
        "workqueue",
        "--items",
        "5",
        "--repeat",
        "1",
        "--warmup",
        "0",
        "--scopes",
        "cpu",
        "--modes",
        "deferred",
        "--no-tokio",
        "--json",
        "--plot-dir",
    ];
    let started = std::time::Instant::now();
    let out = wq_bench(&[&small[..], &["/proc/no-such-dir"]].concat());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--plot-dir /proc/no-such-dir"), "{err}");
    assert!(out.stdout.is_empty(), "measured anyway");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let dir = std::env::temp_dir().join(format!("wq-bench-plots-{}", std::process::id()));
    let out = wq_bench(&[&small[..], &[dir.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.is_object());
    assert!(
        std::fs::read_dir(&dir).unwrap().count() > 0,
        "no plot written"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An echo message larger than the socket buffers would stall both ends
/// (the client writes it whole before reading): refused at once.
#[test]
fn an_echo_size_past_the_socket_buffers_is_refused() {
    let out = wq_bench(&["echo", "--size", "67108864", "--secs", "1", "--repeat", "2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--size 67108864: at most 1048576 bytes"),
        "{err}"
    );
}

/// Options a run would ignore are refused, saying why: tokio's size with
/// no tokio row; the named and capture-off rows without the deferred rows
/// they are measured against (they ran, and their targets were silently
/// left out).
#[test]
fn options_a_workqueue_run_would_ignore_are_refused() {
    for (args, said) in [
        (
            &["--no-tokio", "--tokio-workers", "4"][..],
            "--tokio-workers with --no-tokio",
        ),
        (&["--modes", "under_lock", "--named"][..], "--named rows"),
        (
            &["--modes", "under_lock", "--capture-off"][..],
            "--capture-off rows",
        ),
    ] {
        let out = wq_bench(&[&["workqueue", "--items", "10"][..], args].concat());
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(said), "{args:?}: {err}");
    }
}

/// `--pad` beside `--layouts`: each layout's process takes its own pad,
/// and the parent measures nothing, so the pad given was silently unused.
#[test]
fn a_pad_with_layouts_is_refused() {
    let out = wq_bench(&["shapes", "--layouts", "2", "--pad", "3", "--iters", "2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--pad with --layouts 2"), "{err}");
}

/// `busy-loop` without its parent's pid (a typo, `--help`) exits with an
/// error instead of spinning for ever.
#[test]
fn busy_loop_without_a_parent_exits() {
    for args in [&["busy-loop"][..], &["busy-loop", "--help"]] {
        let out = wq_bench(args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not run by hand"), "{err}");
    }
}

/// `shapes --layouts N` measures in N processes, each heap shifted, and
/// pools them: every iteration of every layout counted, and a wq/tokio
/// ratio per layout.
#[test]
fn shapes_over_several_heap_layouts_are_pooled() {
    let v = chained_spawn_json(&["--layouts", "3"]);
    assert_eq!(v["layouts"], 3);
    assert_eq!(
        v["layout_ratios"]["chained_spawn"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    for row in v["rows"].as_array().unwrap() {
        assert_eq!(row["times_ns"].as_array().unwrap().len(), 2 * 3, "{row}");
    }
}

/// A size beyond what a run can build, and an argument that is not UTF-8,
/// are refused with a message and exit status 1 (bad option values), not a panic (a capacity
/// overflow after the run's setup; `std::env::args` on the argument).
#[test]
fn an_oversized_count_and_a_non_utf8_argument_are_refused() {
    use std::os::unix::ffi::OsStrExt;
    let out = wq_bench(&[
        "workqueue",
        "--producers",
        "18446744073709551615",
        "--items",
        "1",
        "--no-tokio",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--producers") && err.contains("at most 4096"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let out = child::output(
        Command::new(env!("CARGO_BIN_EXE_wq-bench"))
            .arg("workqueue")
            .arg("--topology")
            .arg(std::ffi::OsStr::from_bytes(b"core:\xff")),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not valid UTF-8"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A tiny `workqueue` run with plots into a fresh `dir`, over `repeat`
/// runs, stdout and stderr piped.
fn plotting_run(dir: &std::path::Path, repeat: &str) -> std::process::Child {
    let _ = std::fs::remove_dir_all(dir);
    Command::new(env!("CARGO_BIN_EXE_wq-bench"))
        .args([
            "workqueue",
            "--scopes",
            "cpu",
            "--modes",
            "deferred",
            "--items",
            "200",
            "--warmup",
            "0",
            "--repeat",
            repeat,
            "--no-tokio",
            "--json",
            "--plot-dir",
        ])
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child`, at most `child::CHILD_LIMIT`.
fn wait_bounded(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + child::CHILD_LIMIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("wq-bench ran over {:?}", child::CHILD_LIMIT);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The plots `dir` holds (then removed).
fn plots_in(dir: &std::path::Path) -> usize {
    let plots = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let _ = std::fs::remove_dir_all(dir);
    plots
}

/// A reader that closes stdout early (`wq-bench ... | head`) ends the run
/// quietly with its plots written: `print!` panicked on the broken pipe
/// (exit 101), after the measurement, and the plots came after it.
#[test]
fn a_closed_stdout_ends_quietly_with_the_plots_written() {
    let dir = std::env::temp_dir().join(format!("wq-bench-pipe-{}", std::process::id()));
    let mut child = plotting_run(&dir, "1");
    // The reader goes before anything is written.
    drop(child.stdout.take());
    let status = wait_bounded(&mut child);
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(plots_in(&dir) > 0, "no plot written: {err}");
}

/// The progress lines go to stderr: a reader of stderr that has gone
/// (`2>&1 | head`) ends nothing early. `eprintln!` panicked on the broken
/// pipe after the first run (exit status 101, no plots written).
#[test]
fn a_closed_stderr_ends_nothing_early() {
    let dir = std::env::temp_dir().join(format!("wq-bench-errpipe-{}", std::process::id()));
    let mut child = plotting_run(&dir, "2");
    drop(child.stderr.take());
    // Read meanwhile: a full stdout pipe would hold the run up.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
    });
    let status = wait_bounded(&mut child);
    reader.join().unwrap();
    assert!(status.success(), "{status}");
    assert!(plots_in(&dir) > 0, "no plot written");
}

/// `flushes` runs its line of flushes and prints a row per count; a count
/// of zero is refused.
#[test]
fn flushes_prints_a_row_per_count_and_refuses_zero() {
    let out = wq_bench(&["flushes", "--concurrent", "3,40", "--repeat", "1"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[1].trim_start().starts_with("40 ") && rows[1].ends_with(" us"),
        "{text}"
    );
    let out = wq_bench(&["flushes", "--concurrent", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--concurrent"), "{err}");
}
