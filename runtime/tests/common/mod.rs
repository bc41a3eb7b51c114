//! Helpers shared by the integration tests: a watchdog, and the process's
//! open-file limit and count, a child process run with a time limit.

#![allow(dead_code)]

pub mod child;
pub mod refusing;
pub mod urgent;

use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on its own thread; fails if it does not finish within `limit`
/// (a lost wakeup shows up as a stall, reported instead of a hung test).
pub fn within_watchdog<T: Send + 'static>(
    name: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let out = f();
        let _ = tx.send(());
        out
    });
    match rx.recv_timeout(limit) {
        Ok(()) => t.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => match t.join() {
            Ok(out) => out,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!(
                "{name}: stalled for {limit:?}: a lost wakeup, a stranded item, a flush that never returned or a stuck driver"
            )
        }
    }
}

/// Waits (in 1 ms naps) until `done`; fails naming `what` after 30 s (a
/// lost wakeup is a failure, not a hung test run).
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// [`within_watchdog`] for a test body of no result, `secs` seconds, named
/// after the test thread.
pub fn within(secs: u64, f: impl FnOnce() + Send + 'static) {
    let name = std::thread::current().name().unwrap_or("test").to_owned();
    within_watchdog(&name, Duration::from_secs(secs), f)
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft
/// limit.
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass; no other
    // preconditions.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// The message of a panic caught with `catch_unwind` (a `String` or a
/// `&str` payload; empty otherwise).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// Open fds of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd is readable on Linux")
        .count()
}

/// Threads of this process whose name starts with `prefix`.
pub fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task is readable on Linux")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end().starts_with(prefix))
        .count()
}

/// A thread-local value whose destructor blocks until its sender is
/// dropped (30 s at most): it runs after its thread has counted itself out
/// of the runtime's live threads, as the thread ends.
pub struct Lingering(pub std::sync::mpsc::Receiver<()>);

impl Drop for Lingering {
    fn drop(&mut self) {
        let _ = self.0.recv_timeout(Duration::from_secs(30));
    }
}

thread_local! {
    /// Where a test leaves a [`Lingering`] on the thread it runs on.
    pub static LINGERING: std::cell::RefCell<Option<Lingering>> = const { std::cell::RefCell::new(None) };
}

/// Leaves a [`Lingering`] on a thread of `rt` (`leave` runs there what it
/// is given), then shuts `rt` down with a 200 ms timeout while that
/// thread's end blocks in its destructor; checks the call kept to its
/// timeout (within 15 s: not the 30 s the destructor lasts) and returns
/// what it said.
pub fn shutdown_beside_a_lingering_thread(
    rt: wq::Runtime,
    leave: impl FnOnce(&wq::Runtime, Lingering),
) -> bool {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    leave(&rt, Lingering(rx));
    let start = std::time::Instant::now();
    let all = rt.shutdown_timeout(Duration::from_millis(200));
    let took = start.elapsed();
    drop(tx);
    assert!(
        took < Duration::from_secs(15),
        "shutdown_timeout(200 ms) took {took:?}"
    );
    all
}
