//! The user guide's examples (`docs/guide/`) run to the end and show what
//! their page says: each checks its own guarantee and exits 1 if it does
//! not hold, and here their output is checked for the lines the pages
//! quote.

mod common;

use std::process::Command;

fn run(name: &str, bin: &str) -> String {
    let out = common::output(&mut Command::new(bin));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{name}: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

#[test]
fn the_guide_examples_show_what_their_pages_say() {
    let out = run("workqueues", env!("CARGO_BIN_EXE_workqueues"));
    assert!(out.contains("(max_active 4)"), "{out}");
    let out = run("flush_drain", env!("CARGO_BIN_EXE_flush_drain"));
    assert!(
        out.contains("flush: returned with 16 of 16 items done"),
        "{out}"
    );
    assert!(out.contains("drain: an outside spawn was refused"), "{out}");
    let out = run("change_queue", env!("CARGO_BIN_EXE_change_queue"));
    assert!(
        out.contains("scope cpu: the item ran in the cpu pool of CPUs [3]"),
        "{out}"
    );
    assert!(out.contains("max_active 8: 8 of 8 items started"), "{out}");
    let out = run("highpri", env!("CARGO_BIN_EXE_highpri"));
    assert!(out.contains("urgent: ran with"), "{out}");
    let out = run("cpu_hogs", env!("CARGO_BIN_EXE_cpu_hogs"));
    assert!(
        out.contains("20 of 20 short tasks completed meanwhile; cpu_intensive 1"),
        "{out}"
    );
    let out = run("queue_stats", env!("CARGO_BIN_EXE_queue_stats"));
    assert!(out.contains("started 12, completed 12"), "{out}");
    assert!(out.contains("task panicked: a report failed"), "{out}");
}
