//! The example binaries' command lines: `--help` prints the usage on
//! stdout and exits 0 (it printed on stderr with status 2, as a bad
//! argument does, so `--help | less` showed nothing); a bad argument
//! says what was wrong, with the usage, on stderr, and exits 2.

mod common;

use std::process::Command;
use std::time::Duration;

/// The user guide's examples (one a page of `docs/guide`).
const GUIDE_EXAMPLES: [(&str, &str); 6] = [
    ("workqueues", env!("CARGO_BIN_EXE_workqueues")),
    ("flush_drain", env!("CARGO_BIN_EXE_flush_drain")),
    ("change_queue", env!("CARGO_BIN_EXE_change_queue")),
    ("highpri", env!("CARGO_BIN_EXE_highpri")),
    ("cpu_hogs", env!("CARGO_BIN_EXE_cpu_hogs")),
    ("queue_stats", env!("CARGO_BIN_EXE_queue_stats")),
];

/// `cmd` run with its stdout on `stdout` (a pipe whose reader is gone,
/// a full device), its stderr read; killed past a minute.
fn output_to(cmd: &mut Command, stdout: impl Into<std::process::Stdio>) -> std::process::Output {
    let child = cmd
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _killer = common::kill_after(child.id(), Duration::from_secs(60));
    child.wait_with_output().unwrap()
}

/// The other binaries: services and tools.
const OTHERS: [(&str, &str); 5] = [
    ("echo", env!("CARGO_BIN_EXE_echo")),
    ("http_service", env!("CARGO_BIN_EXE_http_service")),
    ("axum_service", env!("CARGO_BIN_EXE_axum_service")),
    ("wq-dump", env!("CARGO_BIN_EXE_wq-dump")),
    ("wq-monitor", env!("CARGO_BIN_EXE_wq-monitor")),
];

#[test]
fn help_is_a_success_on_stdout_and_a_bad_argument_an_error_on_stderr() {
    for (name, bin) in GUIDE_EXAMPLES.into_iter().chain(OTHERS) {
        let help = common::output(Command::new(bin).arg("--help"));
        let out = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success(), "{name} --help: {:?}", help.status);
        assert!(
            out.starts_with(&format!("usage: {name}")),
            "{name} --help printed {out:?}"
        );
        let bad = common::output(Command::new(bin).arg("--bogus"));
        let err = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(2), "{name} --bogus: {err}");
        assert!(
            err.contains("--bogus") && err.contains("usage:"),
            "{name} --bogus said {err:?}"
        );
    }
    // The service's synopsis names its dashboard option too.
    let help = common::output(Command::new(env!("CARGO_BIN_EXE_http_service")).arg("--help"));
    assert!(String::from_utf8_lossy(&help.stdout).contains("[--dashboard-addr ADDR|off]"));
}

/// `--help` into a pipe whose reader is gone (`--help | head -0`): every
/// binary ends with status 0, quietly (it panicked, "failed printing to
/// stdout", exit 101).
#[test]
fn help_into_a_closed_pipe_ends_quietly() {
    for (name, bin) in GUIDE_EXAMPLES.into_iter().chain(OTHERS) {
        // The reader closed first: the write fails, deterministically.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = output_to(Command::new(bin).arg("--help"), writer);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{name} --help: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

/// `wq-dump | head` on a large machine: the reader goes after a line, and
/// the dump (more than a pipe's 64 KiB) ends quietly with status 0 (it
/// panicked, "failed printing to stdout", exit 101: Rust ignores SIGPIPE).
#[test]
fn wq_dump_into_a_closed_pipe_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_wq-dump"))
        .args(["--topology", "pack:8 core:32 pu:2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _killer = common::kill_after(child.id(), Duration::from_secs(60));
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("source"), "{first:?}");
    // The reader is gone (dropped above).
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}

/// The guide's examples into a pipe whose reader is gone (`workqueues |
/// head -1` after its first line): they end quietly with status 0 (they
/// panicked, "failed printing to stdout", exit 101; `queue_stats` with
/// nothing on stderr, its panic hook silencing every later panic).
#[test]
fn the_guides_examples_into_a_closed_pipe_end_quietly() {
    use std::process::Stdio;
    for (name, bin) in GUIDE_EXAMPLES {
        let mut child = Command::new(bin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _killer = common::kill_after(child.id(), Duration::from_secs(60));
        // The reader goes before the example's first line.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {:?}: {err}", out.status);
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

/// The guide's examples with a stdout that refuses writes (a full disk:
/// `/dev/full`) fail, saying so on stderr (`queue_stats` exited 101 with
/// nothing on stderr: its panic hook, there to keep its deliberate panic
/// quiet, silenced every panic meanwhile).
#[test]
fn the_guides_examples_say_when_stdout_is_full() {
    for (name, bin) in GUIDE_EXAMPLES {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = output_to(&mut Command::new(bin), full);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {:?}", out.status);
        assert!(err.contains("writing to stdout"), "{name}: {err}");
    }
}

/// `wq-dump --xml` of an endless file reads to a limit and says so (it
/// grew until the OS killed it).
#[test]
fn wq_dump_refuses_an_endless_xml_file() {
    let out =
        common::output(Command::new(env!("CARGO_BIN_EXE_wq-dump")).args(["--xml", "/dev/zero"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is over 64 MiB"), "{err}");
}

/// An argument that is not UTF-8 is refused as unknown, with status 2 (it
/// panicked in `std::env::args`, status 101).
#[test]
fn an_argument_that_is_not_utf8_is_refused_not_a_panic() {
    use std::os::unix::ffi::OsStrExt as _;
    let bad = std::ffi::OsStr::from_bytes(b"--\xff");
    for bin in [
        env!("CARGO_BIN_EXE_echo"),
        env!("CARGO_BIN_EXE_wq-dump"),
        env!("CARGO_BIN_EXE_wq-monitor"),
        env!("CARGO_BIN_EXE_workqueues"),
    ] {
        let out = common::output(Command::new(bin).arg(bad));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin}: {err}");
        assert!(!err.contains("panicked"), "{bin}: {err}");
    }
}

/// A program that does not end is killed and fails its test, with what it
/// printed, instead of holding the test run (the helper every example
/// run here goes through).
#[test]
#[should_panic(expected = "was killed")]
fn a_program_that_hangs_fails_its_test() {
    common::output_within(
        Command::new("sleep").arg("30"),
        std::time::Duration::from_millis(200),
    );
}

/// `http_service` with its dashboard's address taken exits 1 without
/// announcing the service (it printed "listening on" first, then failed:
/// a script waiting for that line connected to a service about to exit),
/// and `--dashboard-addr` with no value says so with the usage, status 2.
#[test]
fn http_service_announces_nothing_when_its_dashboard_cannot_bind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = common::output(Command::new(env!("CARGO_BIN_EXE_http_service")).args([
        "--addr",
        "127.0.0.1:0",
        "--dashboard-addr",
        &format!("127.0.0.1:{port}"),
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("listening on"), "{err}");
    assert!(err.contains("--dashboard-addr"), "{err}");
    drop(taken);

    let out =
        common::output(Command::new(env!("CARGO_BIN_EXE_http_service")).arg("--dashboard-addr"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--dashboard-addr needs a value")
            && err.contains("usage: http_service [--addr ADDR] [--dashboard-addr ADDR|off]"),
        "{err}"
    );
}
