//! A TCP read at the urgent mark while signals arrive: Linux's read stops
//! there with `EAGAIN` when a signal is pending and nothing was copied,
//! with the urgent byte and the data behind it queued. Its own binary: it
//! installs a process-wide signal handler and floods a thread with it.

mod common;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::within_watchdog;
use futures::{AsyncReadExt, AsyncWriteExt};
use wq::Runtime;
use wq::net::{TcpListener, TcpStream};

extern "C" fn ignore(_: libc::c_int) {}

/// Installs a handler for SIGUSR1 that does nothing (its default would
/// end the process), restarting the calls it interrupts where they can be.
fn handle_sigusr1() {
    // SAFETY: a zeroed sigaction with a handler and SA_RESTART is valid;
    // the handler is async-signal-safe (it does nothing).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ignore as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
            0,
            "sigaction: {}",
            io::Error::last_os_error()
        );
    }
}

#[test]
fn a_read_at_the_urgent_mark_stopped_by_a_signal_keeps_the_data_behind_it() {
    handle_sigusr1();
    within_watchdog("tcp-urgent-signal", Duration::from_secs(120), || {
        let rt = Runtime::builder().thread_name("urg").build().unwrap();
        rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let peer = common::urgent::peer(addr);
            let (mut s, _): (TcpStream, _) = l.accept().await.unwrap();
            wq::time::sleep(Duration::from_millis(50)).await;
            let mut abc = [0u8; 3];
            s.read_exact(&mut abc).await.unwrap();
            assert_eq!(&abc, b"abc");
            // `block_on` polls this future on this thread: flood it with
            // signals while it peeks at the mark, again and again (about
            // half of such reads meet one, on a 2-vCPU VM).
            // SAFETY: pthread_self has no preconditions.
            let me = unsafe { libc::pthread_self() };
            let stop = Arc::new(AtomicBool::new(false));
            let flood = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        // SAFETY: `me` is alive until `stop` is set (the
                        // test thread joins this one after).
                        unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
                        std::thread::yield_now();
                    }
                })
            };
            let mut buf = [0u8; 16];
            for i in 0..2000 {
                let n = wq::time::timeout(Duration::from_secs(10), s.peek(&mut buf))
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "peek {i}: the bytes after the urgent mark were left unread (a read stopped at the mark by a signal cleared the readiness)"
                        )
                    })
                    .unwrap();
                assert_eq!(&buf[..n], b"def", "peek {i}");
            }
            stop.store(true, Ordering::Relaxed);
            flood.join().unwrap();
            let mut def = [0u8; 3];
            s.read_exact(&mut def).await.unwrap();
            assert_eq!(&def, b"def");
            s.write_all(b"ok").await.unwrap();
            assert_eq!(&peer.join().unwrap(), b"ok");
        });
    });
}
