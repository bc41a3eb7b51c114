//! What needs no descriptor keeps working when the process has none left:
//! a socket's answers, the CPU-hog watchdog's judgement of a long poll;
//! and an accept that needs one fails without losing its connection.
//!
//! Alone in its binary, one test at a time (a lock): each lowers the
//! process's descriptor limit and uses every descriptor up to it, which
//! would fail any test running beside it.

mod common;

use std::net::Shutdown;
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use common::{open_fds, within_watchdog};
use wq::{Runtime, Scope, Topology, Workqueue};

/// Held by each test for its length: the descriptor limit is the
/// process's, and the other test's runtime would be built without any.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Uses up the process's descriptors (the soft limit lowered to just above
/// those open), runs `f`, and gives them back.
fn without_descriptors<T>(f: impl FnOnce() -> T) -> T {
    let mut was = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `was` is a valid rlimit to write to.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut was) }, 0);
    let low = libc::rlimit {
        rlim_cur: (open_fds() as libc::rlim_t + 16).min(was.rlim_cur),
        rlim_max: was.rlim_max,
    };
    // SAFETY: `low` is a valid rlimit, below the hard limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    let mut fillers = Vec::new();
    let full = loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => fillers.push(f),
            Err(e) => break e,
        }
    };
    assert_eq!(full.raw_os_error(), Some(libc::EMFILE), "{full}");
    let out = f();
    drop(fillers);
    // SAFETY: `was` is the limit read above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &was) }, 0);
    out
}

/// `recv_from` on a Unix datagram socket shut for reading returns 0 bytes
/// from the unnamed address. It made that address by opening a socket on
/// every call, so a server out of descriptors (as it shut down) got
/// `EMFILE` instead.
#[test]
fn a_datagram_socket_shut_for_reading_answers_without_a_descriptor() {
    let _alone = alone();
    within_watchdog("dgram shut, no fds", Duration::from_secs(60), || {
        let rt = wq::Runtime::new().unwrap();
        rt.block_on(async {
            let (a, _b) = wq::net::UnixDatagram::pair().unwrap();
            a.shutdown(Shutdown::Read).unwrap();
            let (waited, tried, polled) = without_descriptors(|| {
                let waited = futures::executor::block_on(a.recv_from(&mut [0; 8]));
                let tried = a.try_recv_from(&mut [0; 8]);
                let polled = futures::executor::block_on(futures::future::poll_fn(|cx| {
                    a.poll_recv_from(cx, &mut [0; 8])
                }));
                (waited, tried, polled)
            });
            for (what, got) in [
                ("recv_from", waited),
                ("try_recv_from", tried),
                ("poll_recv_from", polled),
            ] {
                let (n, from) = got.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(n, 0, "{what}");
                assert!(from.is_unnamed(), "{what}: {from:?}");
            }
        });
    });
}

/// An accept out of descriptors returns `EMFILE` (the listener's own
/// error: back off) and leaves the connection queued: accepted once a
/// descriptor is free, by a wait (the readiness was kept), and by
/// `poll_accept` too. (TCP and Unix.)
#[test]
fn an_accept_out_of_descriptors_fails_and_keeps_the_connection() {
    let _alone = alone();
    within_watchdog("accept, no fds", Duration::from_secs(60), || {
        let rt = wq::Runtime::new().unwrap();
        rt.block_on(async {
            let tcp = wq::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let _c = std::net::TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
            let dir = std::env::temp_dir().join(format!("wq-emfile-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("l.sock");
            let unix = wq::net::UnixListener::bind(&path).unwrap();
            let _u = std::os::unix::net::UnixStream::connect(&path).unwrap();
            let (t, u) = without_descriptors(|| {
                (
                    futures::executor::block_on(tcp.accept()).map(drop),
                    futures::executor::block_on(unix.accept()).map(drop),
                )
            });
            for (what, r) in [("tcp", t), ("unix", u)] {
                let e = r.expect_err(what);
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{what}: {e}");
            }
            let accepted = wq::time::timeout(Duration::from_secs(10), async {
                tcp.accept().await.unwrap();
                unix.accept().await.unwrap();
            })
            .await;
            assert!(accepted.is_ok(), "the connection was lost with the EMFILE");
            // A second connection each, through poll_accept.
            let _c2 = std::net::TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
            let _u2 = std::os::unix::net::UnixStream::connect(&path).unwrap();
            let (t, u) = without_descriptors(|| {
                (
                    futures::executor::block_on(futures::future::poll_fn(|cx| tcp.poll_accept(cx)))
                        .map(drop),
                    futures::executor::block_on(futures::future::poll_fn(|cx| {
                        unix.poll_accept(cx)
                    }))
                    .map(drop),
                )
            });
            assert_eq!(t.unwrap_err().raw_os_error(), Some(libc::EMFILE));
            assert_eq!(u.unwrap_err().raw_os_error(), Some(libc::EMFILE));
            futures::future::poll_fn(|cx| tcp.poll_accept(cx))
                .await
                .unwrap();
            futures::future::poll_fn(|cx| unix.poll_accept(cx))
                .await
                .unwrap();
            drop(unix);
            std::fs::remove_dir_all(&dir).unwrap();
        });
    });
}

/// A poll that blocks its worker in a synchronous wait is not a CPU hog
/// when the watchdog cannot open `/proc` (no descriptor left; also no
/// procfs, or another PID namespace's): its thread's CPU clock, which
/// needs no descriptor, shows it off its CPU. Before, with no figures, a
/// poll not seen asleep counted as on its CPU: this one was marked
/// CPU-intensive for the rest of its task's life.
#[test]
fn a_blocking_poll_is_not_a_cpu_hog_without_descriptors() {
    let _alone = alone();
    within_watchdog("blocked poll, no fds", Duration::from_secs(60), || {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
            .default_scope(Scope::System)
            .max_workers_per_pool(1)
            .cpu_hog_threshold(Duration::from_millis(200))
            .build()
            .unwrap();
        let q = Workqueue::builder("blocks").build(rt.handle()).unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        let (began_tx, began_rx) = mpsc::channel::<()>();
        let (unblocked, sent) = without_descriptors(|| {
            // Its one worker waits for the unblocker, which runs only on
            // the worker the watchdog grants the pool for the blocked poll.
            let blocked = q.spawn(async move {
                began_tx.send(()).unwrap();
                rx.recv_timeout(Duration::from_secs(10)).is_ok()
            });
            began_rx.recv().unwrap();
            let unblocker = rt.spawn(async move { tx.send(()).is_ok() });
            (
                rt.block_on(blocked).unwrap(),
                rt.block_on(unblocker).unwrap(),
            )
        });
        assert!(
            unblocked && sent,
            "the pool's other work waited behind the blocked worker"
        );
        let stats = q.stats();
        assert_eq!(
            stats.cpu_intensive, 0,
            "blocking is not a CPU hog: {stats:?}"
        );
        assert_eq!(stats.cm_wakeups, 1, "{stats:?}");
    });
}
