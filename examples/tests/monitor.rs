//! `wq-monitor` against the `http_service` example, both as built: the
//! example serves its dashboard, the monitor prints its pools (line mode
//! and JSON), and says what to do when no service is there. Under a
//! watchdog; the service is killed at the end whatever happens.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `http_service` on free ports; returns it and its dashboard's
/// address (read from its stderr).
fn start_service() -> (Service, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_http_service"))
        .args(["--addr", "127.0.0.1:0", "--dashboard-addr", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let service = Service(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("http_service: dashboard on http://") {
                let addr = rest.split('/').next().unwrap().to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("http_service never said where its dashboard is");
    (service, addr)
}

fn monitor(args: &[&str]) -> (bool, String, String) {
    let out = common::output(
        Command::new(env!("CARGO_BIN_EXE_wq-monitor"))
            .args(args)
            .stdin(Stdio::null()),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A test's limit: past the children's own ([`common::CHILD_LIMIT`], at
/// which `output` kills a hung `wq-monitor`), so a hang ends in the
/// test's thread, which drops its `Service` (killing the service) as it
/// unwinds; at the same limit, the test failed first and left both
/// running.
const WITHIN_S: u64 = 180;

fn within(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => t.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(_) => panic!("stalled for {secs} s"),
    }
}

#[test]
fn wq_monitor_prints_the_example_services_pools() {
    within(WITHIN_S, || {
        let (_service, addr) = start_service();
        // JSON: the snapshot itself.
        let (ok, out, err) = monitor(&[&addr, "--json"]);
        assert!(ok, "{err}");
        let snap: wq::metrics::Snapshot = serde_json::from_str(out.trim()).unwrap();
        assert!(
            !snap.pools.is_empty(),
            "the dashboard's own tasks ran on a pool"
        );
        // Line mode, two reports over an interval.
        let (ok, out, err) = monitor(&[&addr, "-i", "0.3", "-c", "2"]);
        assert!(ok, "{err}");
        let titles: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("wq-monitor "))
            .collect();
        assert_eq!(titles.len(), 2, "{out}");
        assert!(titles[1].contains("over the last"), "{out}");
        for p in &snap.pools {
            let pod = format!("{} {}", p.scope, p.pod);
            assert!(
                out.lines()
                    .any(|l| l.split_whitespace().next() == Some(&p.id.to_string())
                        && l.contains(&pod)),
                "pool {} ({pod}) missing:\n{out}",
                p.id
            );
        }
    });
}

/// Line mode whose reader goes away (`| head -1`) ends quietly with
/// success (`println!` panicked on the broken pipe: exit 101); `-c` counts
/// failed fetches too, so a run against a service that went away ends.
#[test]
fn wq_monitor_ends_quietly_when_its_reader_goes_and_counts_failures() {
    within(WITHIN_S, || {
        use std::io::Read;
        let (service, addr) = start_service();
        // A monitor of `count` reports every 0.3 s, once it printed one.
        let after_a_report = |count: &str| {
            let mut child = Command::new(env!("CARGO_BIN_EXE_wq-monitor"))
                .args([&addr, "-i", "0.3", "-c", count])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut out = child.stdout.take().unwrap();
            assert!(out.read(&mut [0u8; 64]).unwrap() > 0, "no report");
            (child, out)
        };
        let (child, out) = after_a_report("50");
        drop(out);
        let done = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&done.stderr);
        assert!(done.status.success(), "{:?}: {err}", done.status);
        assert!(!err.contains("panicked"), "{err}");
        // The service gone after the first report: three intervals end.
        let (child, _out) = after_a_report("3");
        drop(service);
        let done = child.wait_with_output().unwrap();
        assert!(done.status.success(), "{:?}", done.status);
    });
}

#[test]
fn wq_monitor_says_how_to_start_a_service_when_none_is_there() {
    let (_held, addr) = common::refusing_addr();
    let addr = addr.to_string();
    let (ok, _, err) = monitor(&[&addr, "-i", "1"]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "no wq dashboard at {addr}: connection refused; start one with"
        )),
        "{err}"
    );
    let (ok, _, err) = monitor(&["--bogus"]);
    assert!(!ok && err.contains("usage: wq-monitor"), "{err}");
}

/// The terminal screen killed by SIGTERM gives the terminal back (leaves
/// the alternate screen; raw mode goes with it) and then dies by the
/// signal; it left the terminal raw. Run in a pseudo-terminal by
/// util-linux's `script` (Debian: bsdutils, an essential package).
#[test]
fn wq_monitor_gives_the_terminal_back_when_killed() {
    within(WITHIN_S, || {
        let (_service, addr) = start_service();
        let cmd = format!("exec {} {addr}", env!("CARGO_BIN_EXE_wq-monitor"));
        let mut script = Command::new("script")
            .args(["-qfec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("util-linux's `script` runs the monitor in a pseudo-terminal (apt-get install bsdutils)");
        let script_pid = script.id();
        let mut stdout = script.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut chunk = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut chunk) {
                if n == 0 || tx.send(chunk[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut out = Vec::new();
        let has = |out: &[u8], pat: &[u8]| out.windows(pat.len()).any(|w| w == pat);
        const ENTER: &[u8] = b"\x1b[?1049h";
        const LEAVE: &[u8] = b"\x1b[?1049l";
        while !has(&out, ENTER) {
            out.extend(
                rx.recv_timeout(Duration::from_secs(30))
                    .expect("the monitor never took the screen"),
            );
        }
        // The monitor: the process whose parent is `script`.
        let monitor_pid = (0..200)
            .find_map(|_| {
                let found = std::fs::read_dir("/proc").ok()?.find_map(|e| {
                    let stat = std::fs::read_to_string(e.ok()?.path().join("stat")).ok()?;
                    let after = &stat[stat.rfind(')')? + 2..];
                    let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
                    (ppid == script_pid)
                        .then(|| stat.split_whitespace().next()?.parse::<i32>().ok())?
                });
                if found.is_none() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                found
            })
            .expect("the monitor's process under `script`");
        // SAFETY: a signal to a child process of ours.
        assert_eq!(unsafe { libc::kill(monitor_pid, libc::SIGTERM) }, 0);
        let status = script.wait().unwrap();
        while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(5)) {
            out.extend(chunk);
        }
        let after_enter = &out[out.windows(ENTER.len()).position(|w| w == ENTER).unwrap()..];
        assert!(
            has(after_enter, LEAVE),
            "killed, the monitor left the terminal in its screen: {:?}",
            String::from_utf8_lossy(after_enter)
        );
        // `script -e` reports the child's death by a signal as 128 + it.
        assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    });
}
