//! A socket's answers that need no descriptor keep working when the
//! process has none left.
//!
//! Alone in its binary: it lowers the process's descriptor limit and uses
//! every descriptor up to it, which would fail any test running beside it.

mod common;

use std::net::Shutdown;
use std::time::Duration;

use common::{open_fds, within_watchdog};

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
