//! Child processes (`wq::process`): output and status, pipes both ways,
//! waits that leave the worker free, kill, reaping of dropped children,
//! and the errors.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use wq::Runtime;
use wq::process::Command;

use common::{wait_until, within};

/// Whether `pid` is gone: reaped (not a zombie waiting for its parent).
fn reaped(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn output_gives_stdout_stderr_and_the_exit_code() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let out = Command::new("sh")
                .args(["-c", "echo out; echo err >&2; exit 3"])
                .output()
                .await
                .unwrap();
            assert_eq!(out.stdout, b"out\n");
            assert_eq!(out.stderr, b"err\n");
            assert_eq!(out.status.code(), Some(3));
            // stdin is null: `cat` reads end-of-file at once.
            let out = Command::new("cat").output().await.unwrap();
            assert!(out.status.success() && out.stdout.is_empty());
            let status = Command::new("sh")
                .args(["-c", "exit 5"])
                .status()
                .await
                .unwrap();
            assert_eq!(status.code(), Some(5));
        });
    });
}

/// A megabyte through `cat` and back: both pipes fill and drain many
/// times (`WouldBlock` both ways), the writer and the reader in two tasks.
#[test]
fn a_megabyte_goes_through_a_child_and_back() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let mut child = Command::new("cat")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
            let mut stdin = child.stdin.take().unwrap();
            let sent = data.clone();
            let writer = wq::spawn(async move {
                stdin.write_all(&sent).await.unwrap();
                // Dropped: `cat` reads end-of-file.
            });
            let mut stdout = child.stdout.take().unwrap();
            let mut got = Vec::new();
            stdout.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            assert!(got == data, "{} bytes back of {}", got.len(), data.len());
            assert!(child.wait().await.unwrap().success());
        });
    });
}

/// A wait leaves its worker free: on a pool of one worker (and no CPU-hog
/// detection, which would lend the pool another), a task spawned by the
/// waiting task runs while it waits, and ends the child it waits for.
#[test]
fn a_wait_does_not_hold_its_worker() {
    within(60, || {
        let rt = Runtime::builder()
            .max_workers_per_pool(1)
            .cpu_hog_threshold(Duration::ZERO)
            .build()
            .unwrap();
        let waiter = rt.spawn(async {
            let mut child = Command::new("sleep").arg("30").spawn().unwrap();
            let pid = child.id().unwrap();
            // Queued behind this task on its worker: it runs only once
            // this one's wait has given the worker back.
            let killer = wq::spawn(async move {
                // SAFETY: a signal to a child this test started and has
                // not reaped (the wait below reaps it after).
                assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
            });
            let status = child.wait().await.unwrap();
            killer.await.unwrap();
            assert_eq!(child.id(), None, "reaped");
            assert_eq!(child.wait().await.unwrap(), status, "the status kept");
            status
        });
        let status = rt.block_on(waiter).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    });
}

#[test]
fn kill_ends_the_child_and_try_wait_sees_it() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let mut child = Command::new("sleep").arg("30").spawn().unwrap();
            assert_eq!(child.try_wait().unwrap(), None);
            assert!(child.id().is_some());
            child.kill().await.unwrap();
            let status = child.try_wait().unwrap().expect("reaped by kill");
            assert_eq!(status.signal(), Some(libc::SIGKILL));
            assert_eq!(child.id(), None);
            child.start_kill().unwrap();
            child.kill().await.unwrap();
        });
    });
}

/// A child dropped while it runs is reaped by the runtime when it exits
/// (no zombie); with `kill_on_drop`, it is killed first (a `sleep 1000`
/// reaped within 30 s).
#[test]
fn dropped_children_are_reaped() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            // Runs until its stdin, dropped with the child after its
            // reaper was handed it, reads end-of-file.
            let child = Command::new("sh")
                .args(["-c", "read x"])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            let pid = child.id().unwrap();
            drop(child);
            let killed = Command::new("sleep")
                .arg("1000")
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let killed_pid = killed.id().unwrap();
            drop(killed);
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            for pid in [pid, killed_pid] {
                while !reaped(pid) {
                    assert!(std::time::Instant::now() < deadline, "{pid} never reaped");
                    wq::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
    });
}

/// One child's stdout is another's stdin.
#[test]
fn a_childs_stdout_feeds_another_child() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let mut echo = Command::new("echo")
                .arg("piped along")
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let out: Stdio = echo.stdout.take().unwrap().try_into().unwrap();
            let upper = Command::new("tr")
                .args(["a-z", "A-Z"])
                .stdin(out)
                .output()
                .await
                .unwrap();
            assert_eq!(upper.stdout, b"PIPED ALONG\n");
            assert!(echo.wait().await.unwrap().success());
        });
    });
}

/// Errors: a program that does not exist, and a spawn outside a runtime,
/// which starts nothing.
#[test]
fn spawn_errors_say_what_went_wrong() {
    let rt = Runtime::new().unwrap();
    let err = rt
        .block_on(async { Command::new("/nonexistent/wq-test").spawn() })
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");

    let marker = std::env::temp_dir().join(format!("wq-process-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let err = Command::new("touch").arg(&marker).spawn().unwrap_err();
    assert!(err.to_string().contains("outside a wq runtime"), "{err}");
    std::thread::sleep(Duration::from_millis(50));
    assert!(!marker.exists(), "a refused spawn started the child");

    // The same command spawns inside one.
    let _guard = rt.enter();
    let mut cmd = Command::new("touch");
    cmd.arg(&marker);
    let mut child = cmd.spawn().unwrap();
    drop(_guard);
    let status = rt.block_on(child.wait()).unwrap();
    assert!(status.success());
    wait_until("the child touched its file", || marker.exists());
    let _ = std::fs::remove_file(&marker);
}

/// `output` and `status` start the child when called, as tokio's, and
/// their futures borrow nothing (`wq::spawn` takes them).
#[test]
fn output_and_status_start_the_child_when_called() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        let dir = std::env::temp_dir().join(format!("wq-process-eager-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let _guard = rt.enter();
        let out = Command::new("touch").arg(&a).output();
        let status = Command::new("touch").arg(&b).status();
        // Neither future polled yet: both children run.
        wait_until("both children ran", || a.exists() && b.exists());
        let status = rt.block_on(wq::spawn(status)).unwrap().unwrap();
        assert!(status.success());
        assert!(rt.block_on(out).unwrap().status.success());
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// `output`'s defaults (piped stdout and stderr, a null stdin) apply to
/// the stdio the caller did not set, and are undone after: the next
/// `spawn` inherits again; what the caller set is kept.
#[test]
fn output_leaves_the_command_as_the_caller_set_it() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "echo out; echo err >&2"])
                .stderr(Stdio::null());
            let out = cmd.output().await.unwrap();
            assert_eq!(out.stdout, b"out\n");
            assert!(out.stderr.is_empty(), "the caller's null stderr was kept");
            let mut child = cmd.stdout(Stdio::null()).spawn().unwrap();
            assert!(child.stdin.is_none() && child.stdout.is_none() && child.stderr.is_none());
            assert!(child.wait().await.unwrap().success());
            // Nothing set: nothing piped after an output.
            let mut cmd = Command::new("true");
            assert!(cmd.output().await.unwrap().status.success());
            let mut child = cmd.spawn().unwrap();
            assert!(child.stdin.is_none() && child.stdout.is_none() && child.stderr.is_none());
            assert!(child.wait().await.unwrap().success());
        });
    });
}

/// `status` closes the pipes the caller set: a child writing a megabyte
/// to a piped stdout ends (it would fill the pipe and wait for good).
#[test]
fn status_closes_piped_output() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        let status = rt
            .block_on(async {
                Command::new("sh")
                    .args(["-c", "head -c 1048576 /dev/zero; exit 0"])
                    .stdout(Stdio::piped())
                    .status()
                    .await
            })
            .unwrap();
        // `head` dies of the closed pipe (or its write fails); `sh` exits 0.
        assert!(status.success(), "{status:?}");
    });
}

/// A wait cut short (a timeout) reaps nothing; a later one reaps. A wait
/// polled from a thread of no runtime works; after its runtime's shutdown
/// it is an error, not a panic.
#[test]
fn waits_are_cancel_safe_and_work_off_the_runtime() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        let mut child = rt.block_on(async {
            let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
            let timed_out = wq::time::timeout(Duration::from_millis(20), child.wait()).await;
            assert!(timed_out.is_err());
            assert!(child.id().is_some(), "not reaped");
            child
        });
        // Another thread, no runtime current: a kill and a wait.
        let mut child = std::thread::spawn(move || {
            child.start_kill().unwrap();
            let status = futures::executor::block_on(child.wait()).unwrap();
            assert_eq!(status.signal(), Some(libc::SIGKILL));
            child
        })
        .join()
        .unwrap();
        assert_eq!(child.id(), None);
        drop(child.try_wait());

        let mut child = rt.block_on(async { Command::new("sleep").arg("1000").spawn().unwrap() });
        drop(rt);
        let err = futures::executor::block_on(child.wait()).unwrap_err();
        assert!(err.to_string().contains("shut down"), "{err}");
        child.start_kill().unwrap();
        wait_until("the killed child is reaped", || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
    });
}

/// A pipe end given back as a descriptor is blocking again.
#[test]
fn a_pipe_end_given_back_is_blocking() {
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let fd = child.stdout.take().unwrap().into_owned_fd().unwrap();
        // SAFETY: F_GETFL on a descriptor this test owns.
        let flags = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::F_GETFL) };
        assert!(flags >= 0 && flags & libc::O_NONBLOCK == 0, "{flags:#x}");
        drop(child.stdin.take());
        assert!(child.wait().await.unwrap().success());
    });
}
