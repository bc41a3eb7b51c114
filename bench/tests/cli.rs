//! `wq-bench` as a user runs it: help, bad input, and the busy neighbours
//! cleaned up after a run.

use std::process::Command;

fn wq_bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wq-bench"))
        .args(args)
        .output()
        .expect("run wq-bench")
}

#[test]
fn help_after_any_subcommand_prints_its_usage() {
    for sub in ["workqueue", "sweep", "locality", "memory", "shapes"] {
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
}

/// Busy-loop children of this test's run (their parent is the wq-bench
/// process, which has exited by the time we look).
fn busy_loops() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c).replace('\0', " ");
                    c.contains("wq-bench") && c.contains("busy-loop")
                })
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn busy_neighbours_run_beside_a_benchmark_and_are_gone_after_it() {
    let before = busy_loops();
    let out = wq_bench(&[
        "shapes",
        "--shapes",
        "chained_spawn",
        "--iters",
        "2",
        "--busy-neighbours",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["busy_neighbours"], 2);
    // Quiet and busy rows for both runtimes, and the two targets each.
    assert_eq!(v["rows"].as_array().unwrap().len(), 4);
    assert_eq!(v["targets"].as_array().unwrap().len(), 2);
    // The children are killed and reaped before wq-bench exits.
    assert_eq!(busy_loops(), before, "busy loops left behind");
}
