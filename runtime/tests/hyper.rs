//! hyper 1.x on wq with no other glue than `wq::hyper`: HTTP/1.1 and
//! HTTP/2 servers and clients, hyper-util's `auto` server (without its
//! tokio feature), and the header-read timeout driven by `WqTimer`.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{within, within_watchdog};
use futures::{AsyncReadExt, AsyncWriteExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use wq::hyper::{WqExecutor, WqIo, WqTimer};
use wq::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(120);

/// Echoes the request's method, path and body.
async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let head = format!("{} {} ", req.method(), req.uri().path());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    Ok(Response::new(Full::new(Bytes::from(out))))
}

fn rt() -> wq::Runtime {
    wq::Runtime::builder().thread_name("hyper").build().unwrap()
}

/// Serves every connection of a fresh listener with `serve`.
async fn server<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(wq::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            drop(wq::spawn(serve(s)));
        }
    }));
    addr
}

async fn fetch_http1(addr: std::net::SocketAddr, path: &str, body: &'static str) -> String {
    let io = WqIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    drop(wq::spawn(conn));
    let req = Request::post(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert!(res.status().is_success());
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

async fn fetch_http2(addr: std::net::SocketAddr, paths: &[&str]) -> Vec<String> {
    let io = WqIo::new(TcpStream::connect(addr).await.unwrap());
    let (send, conn) = hyper::client::conn::http2::Builder::new(WqExecutor::new())
        .timer(WqTimer::new())
        .handshake(io)
        .await
        .unwrap();
    drop(wq::spawn(conn));
    // Concurrent streams on one connection.
    let reqs: Vec<_> = paths
        .iter()
        .map(|p| {
            let mut send = send.clone();
            let req = Request::get(format!("http://localhost{p}"))
                .body(Full::new(Bytes::new()))
                .unwrap();
            wq::spawn(async move {
                let res = send.send_request(req).await.unwrap();
                assert_eq!(res.version(), hyper::Version::HTTP_2);
                String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec())
                    .unwrap()
            })
        })
        .collect();
    let mut out = Vec::new();
    for r in reqs {
        out.push(r.await.unwrap());
    }
    out
}

#[test]
fn http1_server_and_client() {
    within_watchdog("http1", LIMIT, || {
        rt().block_on(async {
            let addr = server(|s| async move {
                hyper::server::conn::http1::Builder::new()
                    .timer(WqTimer::new())
                    .serve_connection(WqIo::new(s), service_fn(echo))
                    .await
                    .unwrap();
            })
            .await;
            assert_eq!(fetch_http1(addr, "/a", "body").await, "POST /a body");
            // A body that crosses `WqIo`'s small and direct read modes both
            // ways, patterned so that a byte lost or reordered shows.
            let big: String = (0..300_000u32)
                .map(|i| char::from(b'a' + ((i * 7 + i / 251) % 26) as u8))
                .collect();
            let big: &'static str = Box::leak(big.into_boxed_str());
            let got = fetch_http1(addr, "/big", big).await;
            assert!(
                got == format!("POST /big {big}"),
                "the big body came back altered"
            );
        });
    });
}

#[test]
fn http2_server_and_client() {
    within_watchdog("http2", LIMIT, || {
        rt().block_on(async {
            let addr = server(|s| async move {
                hyper::server::conn::http2::Builder::new(WqExecutor::new())
                    .timer(WqTimer::new())
                    .serve_connection(WqIo::new(s), service_fn(echo))
                    .await
                    .unwrap();
            })
            .await;
            let got = fetch_http2(addr, &["/1", "/2", "/3", "/4"]).await;
            assert_eq!(got, ["GET /1 ", "GET /2 ", "GET /3 ", "GET /4 "]);
        });
    });
}

#[test]
fn hyper_util_auto_serves_both_versions_on_one_port() {
    within_watchdog("auto", LIMIT, || {
        rt().block_on(async {
            let mut builder = hyper_util::server::conn::auto::Builder::new(WqExecutor::new());
            builder.http1().timer(WqTimer::new());
            builder.http2().timer(WqTimer::new());
            let addr = server(move |s| {
                let builder = builder.clone();
                async move {
                    builder
                        .serve_connection(WqIo::new(s), service_fn(echo))
                        .await
                        .unwrap();
                }
            })
            .await;
            assert_eq!(fetch_http1(addr, "/one", "1").await, "POST /one 1");
            assert_eq!(fetch_http2(addr, &["/two"]).await, ["GET /two "]);
        });
    });
}

#[test]
fn a_client_too_slow_with_its_headers_is_cut_off_by_the_timer() {
    within_watchdog("header timeout", LIMIT, || {
        rt().block_on(async {
            let addr = server(|s| async move {
                let r = hyper::server::conn::http1::Builder::new()
                    .timer(WqTimer::new())
                    .header_read_timeout(Duration::from_millis(100))
                    .serve_connection(WqIo::new(s), service_fn(echo))
                    .await;
                assert!(r.is_err(), "the slow client must be an error");
            })
            .await;
            // Before the connect: the server's timer may start at its
            // accept, before this thread's next step.
            let start = Instant::now();
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap(); // never finished
            let mut rest = Vec::new();
            // hyper answers 408 or just closes; either way the read ends.
            let _ = c.read_to_end(&mut rest).await;
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(90), "cut off after {took:?}");
            assert!(took < Duration::from_secs(10), "not cut off: {took:?}");
        });
    });
}

#[test]
fn the_executor_and_timer_work_from_outside_the_runtime() {
    within(60, || {
        let rt = rt();
        let (exec, timer) = rt.block_on(async { (WqExecutor::new(), WqTimer::new()) });
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::spawn(move || {
            use hyper::rt::{Executor, Timer};
            exec.execute(async move {
                let _ = tx.send(());
            });
            let mut s = timer.sleep(Duration::from_secs(3600));
            timer.reset(&mut s, Instant::now() + Duration::from_millis(5));
            futures::executor::block_on(s);
        })
        .join()
        .unwrap();
        futures::executor::block_on(rx).unwrap();
    });
}

/// A peer that stops reading: with `write_timeout`, the writer's call fails
/// with `TimedOut` once no byte has gone out for the limit, instead of
/// waiting forever.
#[test]
fn a_write_to_a_peer_that_does_not_read_times_out() {
    within_watchdog("write timeout", LIMIT, || {
        let rt = rt();
        rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let peer = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            let (stream, _) = l.accept().await.unwrap();
            let mut io = WqIo::new(stream).write_timeout(Duration::from_millis(200));
            let chunk = vec![7u8; 64 * 1024];
            let mut sent = 0usize;
            let err = loop {
                let w = std::future::poll_fn(|cx| {
                    hyper::rt::Write::poll_write(std::pin::Pin::new(&mut io), cx, &chunk)
                })
                .await;
                match w {
                    Ok(n) => sent += n,
                    Err(e) => break e,
                }
            };
            assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
            assert!(sent > 0, "the socket buffers took nothing");
            drop(peer);
        });
    });
}

/// `write_timeout` set inside the runtime times a stall on that runtime,
/// whatever thread polls the stream after (a client connection driven by
/// another executor): it panicked as a `sleep` outside a runtime.
#[test]
fn a_write_timeout_set_in_the_runtime_works_from_another_thread() {
    within_watchdog("write timeout elsewhere", LIMIT, || {
        let rt = rt();
        let (io, peer) = rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let peer = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
            let (stream, _) = l.accept().await.unwrap();
            (
                WqIo::new(stream).write_timeout(Duration::from_millis(200)),
                peer,
            )
        });
        let err = std::thread::spawn(move || {
            let mut io = io;
            let chunk = vec![7u8; 64 * 1024];
            futures::executor::block_on(async {
                loop {
                    let w = std::future::poll_fn(|cx| {
                        hyper::rt::Write::poll_write(std::pin::Pin::new(&mut io), cx, &chunk)
                    })
                    .await;
                    if let Err(e) = w {
                        break e;
                    }
                }
            })
        })
        .join()
        .expect("the writing thread panicked");
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        drop(peer);
    });
}

/// A stream whose close never completes (a TLS close_notify to a peer that
/// does not read): with `write_timeout`, hyper's shutdown fails with
/// `TimedOut` too; it waited for ever.
#[test]
fn a_shutdown_that_makes_no_progress_times_out() {
    struct NeverCloses;
    impl futures::io::AsyncWrite for NeverCloses {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Pending
        }
    }
    within_watchdog("shutdown timeout", LIMIT, || {
        rt().block_on(async {
            let mut io = WqIo::new(NeverCloses)
                .write_timeout(Duration::from_millis(100))
                .vectored_writes(false);
            assert!(!hyper::rt::Write::is_write_vectored(&io));
            let t0 = Instant::now();
            let err = std::future::poll_fn(|cx| {
                hyper::rt::Write::poll_shutdown(std::pin::Pin::new(&mut io), cx)
            })
            .await
            .unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
            assert!(t0.elapsed() >= Duration::from_millis(100));
        });
    });
}
