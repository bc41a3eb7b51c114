//! 10,000 short connections (and 2,000 Unix datagram pairs) leave the
//! process's fd count where it was.
//!
//! Alone in its binary: `/proc/self/fd` counts the whole process, and
//! tests in one binary run in parallel.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{open_fds, within_watchdog};
use futures::{AsyncReadExt, AsyncWriteExt};
use wq::net::{TcpListener, TcpStream};

#[test]
fn ten_thousand_short_connections_leave_the_fd_count_unchanged() {
    within_watchdog("fds", Duration::from_secs(240), || {
        // No watchdog: it opens a worker's /proc stat for a moment when it
        // samples a long poll, which a count taken then would see.
        let rt = wq::Runtime::builder()
            .thread_name("fds")
            .cpu_hog_threshold(Duration::ZERO)
            .build()
            .unwrap();
        rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            // Server-side sockets closed: the server task drops its socket
            // after its write, which the client may see first.
            let closed = Arc::new(AtomicUsize::new(0));
            let server_closed = closed.clone();
            drop(wq::spawn(async move {
                loop {
                    let (mut s, _) = l.accept().await.unwrap();
                    let closed = server_closed.clone();
                    drop(wq::spawn(async move {
                        let mut b = [0u8; 4];
                        if s.read_exact(&mut b).await.is_ok() {
                            let _ = s.write_all(&b).await;
                        }
                        drop(s);
                        closed.fetch_add(1, Ordering::SeqCst);
                    }));
                }
            }));
            // Warm up: the driver, the listener and the pools exist now.
            async fn one(addr: std::net::SocketAddr) {
                let mut c = TcpStream::connect(addr).await.unwrap();
                c.write_all(b"ping").await.unwrap();
                let mut b = [0u8; 4];
                c.read_exact(&mut b).await.unwrap();
                assert_eq!(&b, b"ping");
            }
            one(addr).await;
            let all_closed = |n: usize| {
                let closed = closed.clone();
                async move {
                    while closed.load(Ordering::SeqCst) < n {
                        wq::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            };
            all_closed(1).await;
            let before = open_fds();
            // 8 clients at a time, 10,000 connections in all.
            let clients: Vec<_> = (0..8)
                .map(|_| {
                    wq::spawn(async move {
                        for _ in 0..1250 {
                            one(addr).await;
                        }
                    })
                })
                .collect();
            for c in clients {
                c.await.unwrap();
            }
            all_closed(10_001).await;
            // Every socket is closed now; the loop gives anything closed
            // late a moment (a leak stays).
            let mut after = open_fds();
            for _ in 0..200 {
                if after <= before {
                    break;
                }
                wq::time::sleep(Duration::from_millis(10)).await;
                after = open_fds();
            }
            assert_eq!(after, before, "fds leaked: {before} before, {after} after");
            // Then 2,000 Unix datagram pairs, each used through a poll
            // method (its shared waiter slot) and an awaited receive.
            for _ in 0..2000 {
                let (p, q) = wq::net::UnixDatagram::pair().unwrap();
                futures::future::poll_fn(|cx| p.poll_send(cx, b"x"))
                    .await
                    .unwrap();
                let mut b = [0u8; 1];
                assert_eq!(q.recv(&mut b).await.unwrap(), 1);
            }
            assert_eq!(open_fds(), before, "datagram sockets leaked fds");
        });
    });
}
