//! A child process run with a time limit, shared by the workspace's tests
//! (`#[path]`-included by the examples' and the benchmarks' tests and by
//! the crate's own unit tests): a child that hangs is killed and its test
//! fails with what it printed, rather than holding the test run until the
//! CI step's own limit.

#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
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
    // waits for the reader. What they read so far is kept where a reader
    // that never reaches the end (a grandchild, a browser's helper, holds
    // the pipe) still shows it.
    let drain = |mut r: Box<dyn Read + Send>| {
        let got = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<()>();
        let g = got.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = r.read(&mut buf) {
                g.lock().unwrap().extend_from_slice(&buf[..n]);
            }
            let _ = tx.send(());
        });
        (got, rx)
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    // What a pipe held, once the child has gone: its end waited for 5 s
    // at most (a grandchild may hold it open for longer).
    let read = |(got, end): &(Arc<Mutex<Vec<u8>>>, mpsc::Receiver<()>)| {
        let _ = end.recv_timeout(Duration::from_secs(5));
        std::mem::take(&mut *got.lock().unwrap())
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

/// Runs test `test` of this test binary in a child process, alone, with
/// `var` set to `value` (the child half of a test that must run in a
/// process of its own: one that may abort it, or install process-wide
/// state), killed past [`CHILD_LIMIT`].
pub fn this_binary_test(test: &str, var: &str, value: &str) -> Output {
    output(
        Command::new(std::env::current_exe().expect("this test binary"))
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(var, value),
    )
}

/// A child killed (and reaped) when the test lets go of it: at the end of
/// the test, or as a failed assertion unwinds it (a service that never
/// exits on its own outlived the test before). One already waited for is
/// left alone (std knows it has exited: no signal goes to its pid, which
/// another process may have by then).
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Kills process `pid` (SIGKILL) unless dropped within `limit`: for a test
/// that talks to its child over pipes or sockets (reads that would wait
/// for ever on a child that hangs), the kill closes them and the read
/// fails, with the test. Drop it once the child has been waited for.
#[must_use = "the kill is called off when the guard drops"]
pub struct KillAfter {
    /// Dropped with the guard: the waiting thread sees `Disconnected`.
    _call_off: mpsc::Sender<()>,
}

pub fn kill_after(pid: u32, limit: Duration) -> KillAfter {
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if rx.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout) {
            eprintln!("child {pid} still running after {limit:?}: killed");
            // SAFETY: kill takes a pid and a signal number.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    });
    KillAfter { _call_off: tx }
}
