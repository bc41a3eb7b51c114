//! A child process run with a time limit, shared by the workspace's tests
//! (`#[path]`-included by the examples' and the benchmarks' tests and by
//! the crate's own unit tests): a child that hangs is killed and its test
//! fails with what it printed, rather than holding the test run until the
//! CI step's own limit.

#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a test's child process may run before it is taken for hung.
pub const CHILD_LIMIT: Duration = Duration::from_secs(120);

/// `cmd.output()`, failing (the child killed) past [`CHILD_LIMIT`].
pub fn output(cmd: &mut Command) -> Output {
    output_within(cmd, CHILD_LIMIT)
}

/// `cmd.output()`, failing (the child killed) past `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    // Read on threads of their own: a child that fills a pipe's buffer
    // waits for the reader.
    let drain = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            let _ = tx.send(v);
        });
        rx
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    // What a pipe held, waiting at most until the deadline plus a grace: a
    // grandchild (a browser's helpers) may hold a pipe open after the
    // child has gone.
    let read = |rx: &mpsc::Receiver<Vec<u8>>| {
        let grace = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
        rx.recv_timeout(grace).unwrap_or_default()
    };
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} ran over {limit:?} and was killed; its stdout:\n{}\nits stderr:\n{}",
                String::from_utf8_lossy(&read(&stdout)),
                String::from_utf8_lossy(&read(&stderr))
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: read(&stdout),
        stderr: read(&stderr),
    }
}
