//! Messages from a service's tasks to stderr, without ever blocking a
//! worker.
//!
//! A task that writes to stderr itself blocks its worker (and every task
//! queued behind it) whenever stderr blocks: a pipe nobody drains, a
//! terminal on hold. A client that makes many connections fail would then
//! stall the runtime with error lines. So tasks hand their lines to a
//! [`Reporter`]: a bounded queue in front of one thread that writes them.
//! A task only tries to queue its line; when the queue is full the line is
//! dropped and counted, and the writer says how many it lost with the next
//! line it writes. If the writer thread cannot start (no threads left),
//! every line is dropped and counted: reporting never fails where it is
//! used.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, OnceLock};

/// Lines queued at most before new ones are dropped.
pub const CAPACITY: usize = 1024;

/// What the writer thread is given.
#[derive(Debug)]
enum Msg {
    Line(String),
    /// Answered once every line queued before it is written.
    Flush(SyncSender<()>),
}

/// A bounded queue of lines and the thread that writes them.
#[derive(Debug)]
pub struct Reporter {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicUsize>,
}

impl Reporter {
    /// Starts the writer thread, writing to `out`, with room for
    /// `capacity` waiting lines.
    pub fn new<W: Write + Send + 'static>(capacity: usize, out: W) -> Reporter {
        let (tx, rx) = sync_channel(capacity);
        let dropped = Arc::new(AtomicUsize::new(0));
        let counted = dropped.clone();
        // If the thread cannot start, the closure and its receiver are
        // dropped: every `try_send` then fails, and is counted.
        let _ = std::thread::Builder::new()
            .name("wq-examples-report".into())
            .spawn(move || write_lines(rx, out, &counted));
        Reporter { tx, dropped }
    }

    /// Queues `line` for the writer; drops it (and counts it) if the queue
    /// is full. Never blocks.
    pub fn report(&self, line: String) {
        if self.tx.try_send(Msg::Line(line)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits, at most `within`, until the lines queued so far are written
    /// (a process about to exit, whose writer thread would die with it).
    /// Returns whether they were. Blocks the caller: not on a worker.
    pub fn flush(&self, within: std::time::Duration) -> bool {
        let (done, written) = sync_channel(1);
        let deadline = std::time::Instant::now() + within;
        // A full queue: wait for room, as long as the deadline allows.
        let mut msg = Msg::Flush(done);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(std::sync::mpsc::TrySendError::Full(m)) => {
                    if std::time::Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return false,
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        written.recv_timeout(left).is_ok()
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The writer thread: each line as it comes, and after each, the lines
/// dropped since the last notice.
fn write_lines<W: Write>(rx: Receiver<Msg>, mut out: W, dropped: &AtomicUsize) {
    let mut told = 0;
    for msg in rx {
        let line = match msg {
            Msg::Line(line) => line,
            Msg::Flush(done) => {
                let _ = out.flush();
                let _ = done.try_send(());
                continue;
            }
        };
        let _ = writeln!(out, "{line}");
        let now = dropped.load(Ordering::Relaxed);
        if now > told {
            let _ = writeln!(out, "(stderr was not keeping up: {} dropped)", now - told);
            told = now;
        }
    }
}

/// Reports `line` on stderr through the process's [`Reporter`] (started on
/// first use).
pub fn report(line: String) {
    reporter().report(line);
}

/// [`Reporter::flush`] of the process's reporter.
pub fn flush(within: std::time::Duration) -> bool {
    reporter().flush(within)
}

fn reporter() -> &'static Reporter {
    static REPORTER: OnceLock<Reporter> = OnceLock::new();
    REPORTER.get_or_init(|| Reporter::new(CAPACITY, std::io::stderr()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// A writer that holds its first write until told to go on, then
    /// collects every byte.
    struct Held {
        go: Option<mpsc::Receiver<()>>,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Held {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(go) = self.go.take() {
                let _ = go.recv();
            }
            self.out.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A reporter of 4 lines writing to a [`Held`] output: the sender
    /// that lets it go, and what it wrote.
    fn held_reporter() -> (Reporter, mpsc::Sender<()>, Arc<Mutex<Vec<u8>>>) {
        let (go, wait) = mpsc::channel();
        let out = Arc::new(Mutex::new(Vec::new()));
        let r = Reporter::new(
            4,
            Held {
                go: Some(wait),
                out: out.clone(),
            },
        );
        (r, go, out)
    }

    /// With its output blocked, reporting 100 lines returns at once for
    /// every one (the queue holds 4, the writer one more, the rest are
    /// counted); once the output moves, the queued lines and a notice of
    /// the dropped ones come out.
    #[test]
    fn a_blocked_output_never_blocks_the_reporter_and_says_what_it_lost() {
        let (r, go, out) = held_reporter();
        // On a thread of its own, so that a report that blocks fails the
        // test instead of hanging it.
        let (done, finished) = mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..100 {
                    r.report(format!("line {i}"));
                }
                done.send(()).unwrap();
            });
            let waited = finished.recv_timeout(Duration::from_secs(5));
            if waited.is_err() {
                // Let the writer go, so that the scope can end.
                go.send(()).unwrap();
                panic!("report blocked behind a stalled output");
            }
        });
        let dropped = r.dropped();
        assert!(
            (95..=96).contains(&dropped),
            "4 queued and at most one taken by the writer: {dropped} dropped"
        );
        go.send(()).unwrap();
        // A last line after the flood, to have the notice written.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            r.report("after".into());
            let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
            if text.contains(" dropped)") && text.contains("after") {
                assert!(text.starts_with("line 0\n"), "{text}");
                let total: usize = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("(stderr was not keeping up: "))
                    .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
                    .sum();
                assert!(total >= dropped, "{text}");
                break;
            }
            assert!(Instant::now() < deadline, "nothing written: {text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A flush returns once the lines before it are written; with the
    /// output stalled it gives up at its bound instead of blocking.
    #[test]
    fn a_flush_waits_for_the_lines_before_it_and_no_longer_than_told() {
        let (r, go, out) = held_reporter();
        r.report("stopping".into());
        let start = Instant::now();
        assert!(
            !r.flush(Duration::from_millis(200)),
            "written while stalled"
        );
        let took = start.elapsed();
        assert!(took < Duration::from_secs(5), "the flush took {took:?}");
        go.send(()).unwrap();
        r.report("stopped".into());
        assert!(r.flush(Duration::from_secs(10)));
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "stopping\nstopped\n");
    }
}
