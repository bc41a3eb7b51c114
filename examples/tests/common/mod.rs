//! Helpers shared by the examples' tests.

#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long an example binary may run in a test before it is taken for
/// hung (a drain that never ends, a `--help` that waits): killed, and the
/// test fails with what it printed, rather than holding the test run
/// until the CI step's own limit.
pub const EXAMPLE_LIMIT: Duration = Duration::from_secs(120);

/// `cmd.output()`, failing (the child killed) past [`EXAMPLE_LIMIT`].
pub fn output(cmd: &mut Command) -> Output {
    output_within(cmd, EXAMPLE_LIMIT)
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
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "{cmd:?} ran over {limit:?} and was killed; its stderr:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}
