//! The service examples' routes, served as the binaries serve them
//! (`wq_examples::serve`: hyper-util `auto` on wq), fetched with hyper's
//! client on wq: every route, 404, 405, 413, a malformed request, a
//! client that says nothing, a request never answered, a full house and a
//! connection's lifetime.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::{AsyncReadExt, AsyncWriteExt};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::service::service_fn;
use hyper_util::service::TowerToHyperService;
use wq::hyper::WqIo;
use wq::net::{TcpListener, TcpStream};
use wq_examples::{axum_app, routes, serve};

async fn get(addr: SocketAddr, method: &str, path: &str, body: Vec<u8>) -> (u16, String) {
    get_for(addr, "localhost", method, path, body).await
}

/// [`get`] with the request's `Host` header `host`.
async fn get_for(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let io = WqIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    drop(wq::spawn(conn));
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The `Content-Type` of `GET path`'s answer.
async fn content_type(addr: SocketAddr, path: &str) -> String {
    let io = WqIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    drop(wq::spawn(conn));
    let req = Request::builder()
        .uri(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    res.headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn check_routes(addr: SocketAddr) {
    assert_eq!(
        get(addr, "GET", "/", vec![]).await,
        (200, "hello from wq\n".into())
    );
    let (s, b) = get(addr, "GET", "/scope", vec![]).await;
    assert_eq!(s, 200);
    assert!(b.starts_with("ran at the cache scope on thread"), "{b}");
    assert_eq!(
        get(addr, "GET", "/sleep?ms=5", vec![]).await,
        (200, "slept 5 ms\n".into())
    );
    let (s, b) = get(addr, "GET", "/blocking", vec![]).await;
    assert_eq!((s, b.starts_with("sum of squares")), (200, true), "{b}");
    let (s, b) = get(addr, "GET", "/pools", vec![]).await;
    assert_eq!(s, 200);
    assert!(b.contains("pool"), "{b}");
    assert_eq!(
        content_type(addr, "/pools").await,
        "text/plain; charset=utf-8"
    );
    assert_eq!(get(addr, "GET", "/nope", vec![]).await.0, 404);
    assert_eq!(get(addr, "POST", "/", vec![]).await.0, 405);
    // Read-only everywhere: a write to a path that does not exist is 405
    // too (axum's fallback said 404).
    assert_eq!(get(addr, "POST", "/nope", vec![]).await.0, 405);
    assert_eq!(get(addr, "DELETE", "/pools", vec![]).await.0, 405);
    assert_eq!(
        get(addr, "GET", "/sleep?ms=abc", vec![]).await.0,
        400,
        "a bad number is an error, not the default"
    );
    assert_eq!(
        get(addr, "GET", "/sleep?ms=6000", vec![]).await.0,
        504,
        "request timeout"
    );
}

/// The status of the answer to `head`, a request head written whole on a
/// new connection with no body after it.
async fn raw_status(addr: SocketAddr, head: &str) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.windows(2).any(|w| w == b"\r\n") {
        let n = c.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a status line: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap()
        .to_owned()
}

async fn check_hardening(addr: SocketAddr) {
    // A write announcing a body over the limit: refused for its method
    // first, body unread (axum_service answered 413).
    for path in ["/", "/nope"] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n",
            wq_examples::MAX_BODY + 1
        );
        let status = raw_status(addr, &head).await;
        assert!(status.contains(" 405 "), "POST {path}: {status}");
    }
    // A body over the limit.
    let (s, _) = get(addr, "GET", "/", vec![b'x'; wq_examples::MAX_BODY + 1]).await;
    assert_eq!(s, 413);
    // Garbage: hyper answers 400 and closes; the server goes on.
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"\x16\x03\x01 not http at all\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out).await;
    assert!(out.is_empty() || String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"));
    assert_eq!(get(addr, "GET", "/", vec![]).await.0, 200);
}

fn on_wq(f: impl AsyncFnOnce() + Send + 'static) {
    let rt = wq::Runtime::builder().thread_name("svc").build().unwrap();
    rt.block_on(async {
        wq::time::timeout(Duration::from_secs(60), f())
            .await
            .expect("the test stalled")
    });
}

#[test]
fn http_service_answers_its_routes_and_survives_bad_clients() {
    on_wq(async || {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(wq::spawn(serve(l, || service_fn(routes::service))));
        check_routes(addr).await;
        check_hardening(addr).await;
        check_local_only(addr).await;
    });
}

/// On loopback, a request for another host (a web page whose name was
/// made to resolve to 127.0.0.1: DNS rebinding) is refused before the
/// service sees it; localhost by name or address is served.
async fn check_local_only(addr: SocketAddr) {
    for host in ["evil.example", "evil.example:8080", "10.0.0.1"] {
        let (status, body) = get_for(addr, host, "GET", "/pools", vec![]).await;
        assert_eq!(status, 403, "Host {host}: {body}");
        assert!(body.contains("localhost only"), "{body}");
    }
    let port = addr.port();
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let (status, _) = get_for(addr, &host, "GET", "/", vec![]).await;
        assert_eq!(status, 200, "Host {host}");
    }
    // HTTP/2 names the host in `:authority`, with no Host header: it was
    // not checked at all. An HTTP/1 request in absolute form names it in
    // its target, which the server must use over the Host header.
    let io = WqIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake(wq::hyper::WqExecutor::new(), io)
        .await
        .unwrap();
    drop(wq::spawn(conn));
    for (authority, want) in [("evil.example", 403), ("localhost", 200), ("[::1]:80", 200)] {
        let req = Request::builder()
            .uri(format!("http://{authority}/"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let status = send.send_request(req).await.unwrap().status();
        assert_eq!(status, want, "HTTP/2 :authority {authority}");
    }
    let (status, _) = get_for(
        addr,
        "localhost",
        "GET",
        "http://evil.example/pools",
        vec![],
    )
    .await;
    assert_eq!(status, 403, "an absolute-form target for another host");
}

/// Reads until EOF or an error; how long that took.
async fn time_to_close(c: &mut TcpStream) -> Duration {
    let t = std::time::Instant::now();
    let mut sink = Vec::new();
    let _ = c.read_to_end(&mut sink).await;
    t.elapsed()
}

/// `http_service`'s routes served with `limits` on a loopback port: its
/// address.
async fn serve_routes_with(limits: wq_examples::Limits) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(wq::spawn(wq_examples::serve_with(
        l,
        || service_fn(routes::service),
        limits,
    )));
    addr
}

/// A connection to `addr` that answered a request (the server accepted
/// and counted it), tried again while the server closes new ones at once
/// (its house full until the slots of clients closed before come back),
/// until `deadline`; with when its last try began (its accept came after).
async fn answered_connection(
    addr: std::net::SocketAddr,
    deadline: std::time::Instant,
) -> (TcpStream, std::time::Instant) {
    let mut buf = [0u8; 4096];
    loop {
        let started = std::time::Instant::now();
        let mut c = TcpStream::connect(addr).await.unwrap();
        let answered = c
            .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .is_ok()
            && matches!(c.read(&mut buf).await, Ok(n) if n > 0);
        if answered {
            return (c, started);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the closed clients' slots never came back"
        );
        wq::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn silent_clients_full_houses_and_long_connections_are_closed() {
    on_wq(async || {
        // Wide margins: the bounds below hold on a loaded 2-CPU machine.
        let addr = serve_routes_with(wq_examples::Limits {
            first_bytes: Duration::from_millis(1000),
            request: wq_examples::REQUEST_TIMEOUT,
            lifetime: Duration::from_millis(4000),
            idle: Duration::from_secs(60),
            max_connections: 2,
            write_progress: Duration::from_secs(10),
            close_grace: Duration::from_secs(5),
        })
        .await;
        // A client that connects and says nothing is closed after the
        // first-bytes timeout (the auto server's sniffing has no timer).
        // Timed from before the connect: the server's clock starts at the
        // connection's first poll, which may come before this task runs
        // again after its connect.
        let t = std::time::Instant::now();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        time_to_close(&mut silent).await;
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(1000) && waited < Duration::from_millis(3500),
            "silent client closed after {waited:?}"
        );
        // So is one that sends the start of HTTP/2's preface and stops:
        // the sniffing waits for the rest, with no timer either.
        for start in [&b"P"[..], b"PRI * HTTP/2.0\r\n"] {
            let mut partial = TcpStream::connect(addr).await.unwrap();
            partial.write_all(start).await.unwrap();
            let waited = time_to_close(&mut partial).await;
            assert!(
                waited < Duration::from_millis(3500),
                "a client that sent {start:?} was closed after {waited:?}"
            );
        }
        // Two connections fill the house: a third is closed at once, long
        // before its first-bytes timeout would.
        // Each answers a request first: then the server has accepted and
        // counted it (a fixed wait was too short on a loaded machine). The
        // closed clients' slots come back as their server tasks end: one
        // closed at once meanwhile (the house still full: "no answer" on a
        // loaded machine) is tried again, within 3 s: under the 4 s
        // lifetime, so that `a` is still open when the third connects (else
        // its slot came back and the third was let in: a misleading
        // "third closed after" the first-bytes timeout).
        let slots_back = std::time::Instant::now() + Duration::from_secs(3);
        let a = answered_connection(addr, slots_back).await.0;
        let b = answered_connection(addr, slots_back).await.0;
        let mut third = TcpStream::connect(addr).await.unwrap();
        let waited = time_to_close(&mut third).await;
        assert!(
            waited < Duration::from_millis(800),
            "third closed after {waited:?}"
        );
        drop((a, b));
        // A keep-alive client that answers every timer is still closed at
        // the end of the connection's lifetime. The dropped clients' slots
        // come back as their server tasks end (an epoll wake and hyper's
        // EOF each): a connection closed at once meanwhile (the house still
        // full) is tried again; its lifetime starts at its accept, after
        // `started`.
        let slots_back = std::time::Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 4096];
        let (mut c, started) = answered_connection(addr, slots_back).await;
        wq::time::sleep(Duration::from_millis(100)).await;
        loop {
            if c.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
                .await
                .is_err()
            {
                break; // closed between two requests
            }
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => wq::time::sleep(Duration::from_millis(100)).await,
            }
            assert!(started.elapsed() < Duration::from_secs(20), "never closed");
        }
        assert!(started.elapsed() >= Duration::from_millis(3900));
    });
}

/// An idle HTTP/1 keep-alive connection is closed at its idle limit when
/// that is longer than hyper's default header-read timer (10 s): hyper's
/// timer, which also runs between requests, closed it at 10 s (as an
/// error, reported).
#[test]
fn an_idle_http1_connection_lives_to_its_idle_limit() {
    on_wq(async || {
        let addr = serve_routes_with(wq_examples::Limits {
            first_bytes: Duration::from_secs(1),
            request: wq_examples::REQUEST_TIMEOUT,
            lifetime: Duration::from_secs(60),
            idle: Duration::from_secs(11),
            max_connections: 8,
            write_progress: Duration::from_secs(10),
            close_grace: Duration::from_secs(2),
        })
        .await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        assert!(c.read(&mut buf).await.unwrap() > 0, "no answer");
        let waited = time_to_close(&mut c).await;
        assert!(
            waited >= Duration::from_millis(10_500) && waited < Duration::from_secs(25),
            "an idle keep-alive connection closed after {waited:?}"
        );
    });
}

/// An HTTP/2 client that answers the server's keep-alive pings but sends
/// no request after its first is shut down (GOAWAY) once idle for the
/// limit; it was kept for the connection's whole lifetime (five minutes
/// by default, a thousand such clients holding every slot). A client
/// busy with a request meanwhile is not.
#[test]
fn an_idle_http2_connection_is_shut_down_and_a_busy_one_is_not() {
    on_wq(async || {
        let addr = serve_routes_with(wq_examples::Limits {
            first_bytes: Duration::from_secs(10),
            request: wq_examples::REQUEST_TIMEOUT,
            lifetime: Duration::from_secs(60),
            idle: Duration::from_millis(1000),
            max_connections: 8,
            write_progress: Duration::from_secs(10),
            close_grace: Duration::from_secs(2),
        })
        .await;
        // An HTTP/2 client (keep-alive pings, or a flow-control window
        // never opened), and when its connection ended.
        let connect_with = async |zero_window: bool| {
            let io = WqIo::new(TcpStream::connect(addr).await.unwrap());
            let mut b = hyper::client::conn::http2::Builder::new(wq::hyper::WqExecutor::new());
            b.timer(wq::hyper::WqTimer::new());
            if zero_window {
                b.initial_stream_window_size(0);
            } else {
                b.keep_alive_interval(Some(Duration::from_millis(200)));
            }
            let (send, conn) = b.handshake(io).await.unwrap();
            let ended = wq::spawn(async move {
                let t = std::time::Instant::now();
                let _ = conn.await;
                t.elapsed()
            });
            (send, ended)
        };
        let connect = async || connect_with(false).await;
        let request = |path: &str| {
            Request::builder()
                .uri(format!("http://localhost{path}"))
                .body(Full::new(Bytes::new()))
                .unwrap()
        };
        // Idle after one request: ended after about the idle limit.
        let (mut send, ended) = connect().await;
        assert_eq!(send.send_request(request("/")).await.unwrap().status(), 200);
        let lived = wq::time::timeout(Duration::from_secs(20), ended)
            .await
            .expect("an idle HTTP/2 connection was kept open")
            .unwrap();
        assert!(
            lived >= Duration::from_millis(900),
            "closed after {lived:?}"
        );
        // A request in flight across the idle limit (a 3 s sleep) is
        // answered on a connection that was not shut down under it.
        let (mut send, _ended) = connect().await;
        let res = send.send_request(request("/sleep?ms=3000")).await.unwrap();
        assert_eq!(res.status(), 200);
        // A client that never opens its flow-control window: its response
        // body cannot be sent, so the stream, and the connection told to
        // close, stayed open until its lifetime (60 s here, five minutes
        // by default, a slot each). Dropped the grace after its GOAWAY.
        let (mut send, ended) = connect_with(true).await;
        let res = send.send_request(request("/")).await.unwrap();
        assert_eq!(res.status(), 200);
        let lived = wq::time::timeout(Duration::from_secs(20), ended)
            .await
            .expect("a connection whose body could not be sent was held for its lifetime")
            .unwrap();
        drop(res);
        assert!(
            lived >= Duration::from_millis(2900),
            "dropped after {lived:?}"
        );
    });
}

/// An HTTP/2 client flooding frames the server reads and answers nothing
/// to (PRIORITY), with no request in flight, is closed as idle and
/// dropped after the grace: frames that are no request do not keep a
/// connection alive. (Where the client outruns the server, every read is
/// full and the connection spends its task's budget in each poll: the
/// case `a_handler_spending_its_budget_does_not_outlive_the_lifetime`
/// pins, which this 2-vCPU machine's client cannot reach.)
#[test]
fn an_http2_frame_flood_is_closed_by_the_connection_limits() {
    on_wq(async || {
        let addr = serve_routes_with(wq_examples::Limits {
            idle: Duration::from_millis(300),
            lifetime: Duration::from_millis(500),
            close_grace: Duration::from_millis(300),
            ..short_idle()
        })
        .await;
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let mut r = s.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while matches!(r.read(&mut buf), Ok(1..)) {}
            });
            s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
                .unwrap();
            // PRIORITY on stream 1: 9 bytes of header, 5 of payload.
            let frame = b"\0\0\x05\x02\0\0\0\0\x01\0\0\0\0\x10";
            let burst: Vec<u8> = frame
                .iter()
                .copied()
                .cycle()
                .take(frame.len() * 4096)
                .collect();
            let start = std::time::Instant::now();
            let closed = loop {
                if s.write_all(&burst).is_err() {
                    break Some(start.elapsed());
                }
                if start.elapsed() > Duration::from_secs(10) {
                    break None;
                }
            };
            let _ = tx.send(closed);
        });
        let closed = rx.await.unwrap();
        let closed = closed.expect("still open 10 s into the flood");
        assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
    });
}

/// A request whose handler spends the task's operation budget in every
/// poll (a loop of completed sleeps: busy, yielding) is closed at the
/// connection's lifetime and dropped after the grace: the lifetime and
/// grace sleeps, polled after the connection in the same poll, saw the
/// budget spent and said `Pending` in every poll, and the connection
/// stayed open for good.
#[test]
fn a_handler_spending_its_budget_does_not_outlive_the_lifetime() {
    on_wq(async || {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let busy = |_: Request<hyper::body::Incoming>| async {
            loop {
                wq::time::sleep(Duration::ZERO).await;
            }
            #[allow(unreachable_code)]
            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::new())))
        };
        drop(wq::spawn(wq_examples::serve_with(
            l,
            move || service_fn(busy),
            wq_examples::Limits {
                lifetime: Duration::from_millis(500),
                close_grace: Duration::from_millis(300),
                ..short_idle()
            },
        )));
        let (tx, rx) = futures::channel::oneshot::channel();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
                .unwrap();
            let start = std::time::Instant::now();
            let mut buf = [0u8; 256];
            let read = s.read(&mut buf);
            let _ = tx.send((read.map_err(|e| e.kind()), start.elapsed()));
        });
        let (read, took) = rx.await.unwrap();
        assert_eq!(read, Ok(0), "after {took:?}: the connection was not closed");
        assert!(took < Duration::from_secs(5), "closed after {took:?}");
    });
}

/// `serve_with` answers 504 for a request its service has not answered
/// within `Limits::request`, whatever the service (one that never
/// answers here): the limit was the routes' own, and a service of a
/// user's held its connection and slot to the lifetime.
#[test]
fn serve_with_answers_504_for_a_request_its_service_never_answers() {
    on_wq(async || {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = dropped.clone();
        let never = move |_: Request<hyper::body::Incoming>| {
            struct CountsDrop(std::sync::Arc<std::sync::atomic::AtomicUsize>);
            impl Drop for CountsDrop {
                fn drop(&mut self) {
                    self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            let d = CountsDrop(dropped.clone());
            async move {
                let _d = d;
                std::future::pending::<()>().await;
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::new())))
            }
        };
        drop(wq::spawn(wq_examples::serve_with(
            l,
            move || service_fn(never.clone()),
            wq_examples::Limits {
                request: Duration::from_millis(300),
                ..short_idle()
            },
        )));
        let start = std::time::Instant::now();
        let (status, body) = get(addr, "GET", "/", Vec::new()).await;
        let took = start.elapsed();
        assert_eq!(status, 504, "{body}");
        assert_eq!(body, "request timed out\n");
        assert!(
            took >= Duration::from_millis(300),
            "answered after {took:?}"
        );
        assert!(took < Duration::from_secs(5), "answered after {took:?}");
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the call was dropped"
        );
    });
}

/// Limits with an idle close and a grace of 600 ms each.
fn short_idle() -> wq_examples::Limits {
    wq_examples::Limits {
        first_bytes: Duration::from_secs(10),
        request: wq_examples::REQUEST_TIMEOUT,
        lifetime: Duration::from_secs(60),
        idle: Duration::from_millis(600),
        max_connections: 8,
        write_progress: Duration::from_secs(10),
        close_grace: Duration::from_millis(600),
    }
}

/// A response whose body streams for longer than the idle limit, a frame
/// at a time well inside it, is sent whole: the connection counted as
/// idle from the service's return, and was told to close and dropped
/// mid-body (a download cut off).
#[test]
fn a_body_streaming_past_the_idle_limit_is_sent_whole() {
    on_wq(async || {
        use http_body_util::StreamBody;
        use hyper::body::Frame;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let limits = short_idle();
        let slow = |_: Request<hyper::body::Incoming>| async {
            let chunks = futures::stream::unfold(0u32, |i| async move {
                if i == 12 {
                    return None;
                }
                wq::time::sleep(Duration::from_millis(200)).await;
                Some((
                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'x'; 1024]))),
                    i + 1,
                ))
            });
            Ok::<_, std::convert::Infallible>(hyper::Response::new(StreamBody::new(Box::pin(
                chunks,
            ))))
        };
        drop(wq::spawn(wq_examples::serve_with(
            l,
            move || service_fn(slow),
            limits,
        )));
        let (status, body) = get(addr, "GET", "/", vec![]).await;
        assert_eq!(status, 200);
        assert_eq!(body.len(), 12 * 1024, "the download was cut off");
    });
}

/// A large response read slowly but steadily is sent whole: hyper takes
/// a whole body of one frame at once (and drops it: its end), then spends
/// its time writing it, so the connection looked idle while the download
/// moved, and was closed at the idle limit plus the grace. Served bodies
/// are handed to hyper in pieces of at most 64 KiB, each progress.
#[test]
fn a_large_body_read_slowly_is_sent_whole() {
    const LEN: usize = 32 << 20;
    on_wq(async || {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let limits = short_idle();
        let big = |_: Request<hyper::body::Incoming>| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                vec![b'x'; LEN],
            ))))
        };
        drop(wq::spawn(wq_examples::serve_with(
            l,
            move || service_fn(big),
            limits,
        )));
        // A reader of 64 KiB every 5 ms (at most 13 MiB/s: 32 MiB take
        // 2.5 s or more, past the idle limit and the grace, 1.2 s).
        let got = wq::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .unwrap();
            let (mut got, mut buf) = (0usize, vec![0u8; 64 << 10]);
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return got,
                    Ok(n) => got += n,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .await
        .unwrap();
        assert!(got > LEN, "{got} bytes of a body of {LEN} and its head");
    });
}

/// `Duration::MAX`, "no limit", is a limit like any other: each
/// connection's task panicked at its first poll (an `Instant` plus it, in
/// hyper's header timer and the idle close) and the client got a closed
/// connection; `serve_until`'s stop panicked on the grace.
#[test]
fn limits_of_duration_max_mean_no_limit() {
    on_wq(async || {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (stop, stops) = futures::channel::mpsc::unbounded::<&'static str>();
        let limits = wq_examples::Limits {
            first_bytes: Duration::MAX,
            request: wq_examples::REQUEST_TIMEOUT,
            lifetime: Duration::MAX,
            idle: Duration::MAX,
            max_connections: 8,
            write_progress: Duration::MAX,
            close_grace: Duration::MAX,
        };
        let served = wq::spawn(wq_examples::serve_until(
            l,
            || service_fn(routes::service),
            limits,
            stops,
        ));
        let (status, body) = get(addr, "GET", "/", vec![]).await;
        assert_eq!(status, 200, "{body}");
        stop.unbounded_send("stop").unwrap();
        served.await.expect("serve_until panicked").unwrap();
    });
}

/// `serve_until` stopped (here by a second stop during the drain) leaves
/// no connection serving on in a runtime that goes on: its connections'
/// tasks are dropped when it returns (they served on, with nothing left to
/// stop them).
#[test]
fn serve_until_leaves_no_connection_behind() {
    on_wq(async || {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (stop, stops) = futures::channel::mpsc::unbounded::<&'static str>();
        let limits = wq_examples::Limits {
            first_bytes: Duration::from_secs(10),
            request: wq_examples::REQUEST_TIMEOUT,
            lifetime: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            max_connections: 8,
            write_progress: Duration::from_secs(10),
            close_grace: Duration::from_secs(30),
        };
        let served = wq::spawn(wq_examples::serve_until(
            l,
            || service_fn(routes::service),
            limits,
            stops,
        ));
        // A keep-alive connection with a request in flight across the
        // stop (the graceful close waits for it).
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /sleep?ms=3000 HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        wq::time::sleep(Duration::from_millis(200)).await;
        stop.unbounded_send("test stop").unwrap();
        wq::time::sleep(Duration::from_millis(100)).await;
        stop.unbounded_send("test stop").unwrap();
        wq::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("serve_until did not return")
            .unwrap()
            .unwrap();
        // Its task is gone: the connection is closed, with no answer.
        let mut out = Vec::new();
        let read = wq::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the connection was still served");
        assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
    });
}

/// At its lifetime a connection is told to close, not cut: a request in
/// flight then is answered (it got EOF and no response).
#[test]
fn a_request_in_flight_at_the_lifetime_is_answered() {
    on_wq(async || {
        let addr = serve_routes_with(wq_examples::Limits {
            first_bytes: Duration::from_secs(10),
            request: wq_examples::REQUEST_TIMEOUT,
            lifetime: Duration::from_millis(2000),
            idle: Duration::from_secs(60),
            max_connections: 8,
            write_progress: Duration::from_secs(10),
            close_grace: Duration::from_secs(10),
        })
        .await;
        let connected = std::time::Instant::now();
        let mut c = TcpStream::connect(addr).await.unwrap();
        // In flight from the start to past the 2 s lifetime (sent after a
        // 1.2 s sleep, a loaded machine's late wake could send it after
        // the lifetime, to a connection already closed).
        c.write_all(b"GET /sleep?ms=3000 HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out).await;
        assert!(
            out.starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        // And closed then, at the end of that request (not 10 s later by
        // the keep-alive's header timeout).
        let lived = connected.elapsed();
        assert!(lived < Duration::from_secs(8), "closed after {lived:?}");
    });
}

/// A stop for `serve_until` from a oneshot: its first item when the
/// sender sends (or drops), then nothing.
fn stop_on(
    rx: futures::channel::oneshot::Receiver<()>,
) -> impl futures::Stream<Item = &'static str> + Unpin {
    use futures::StreamExt;
    Box::pin(
        futures::stream::once(async move {
            let _ = rx.await;
            "test stop"
        })
        .chain(futures::stream::pending()),
    )
}

/// At the stop (`serve_until`'s stream: SIGINT or SIGTERM in the
/// binaries), the listener closes, a request in flight is answered and
/// its connection closed after it, a connection that has not said a word
/// yet is closed at once (not after its first-bytes timeout), and
/// `serve_until` returns.
#[test]
fn at_the_stop_requests_in_flight_finish_and_the_listener_closes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    on_wq(async || {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = futures::channel::oneshot::channel::<()>();
        let asked = Arc::new(AtomicBool::new(false));
        let a = asked.clone();
        let server = wq::spawn(wq_examples::serve_until(
            listener,
            move || {
                let a = a.clone();
                service_fn(move |req| {
                    a.store(true, Ordering::SeqCst);
                    routes::service(req)
                })
            },
            wq_examples::Limits::default(),
            stop_on(stopped),
        ));
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /sleep?ms=500 HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        while !asked.load(Ordering::SeqCst) {
            wq::time::sleep(Duration::from_millis(1)).await;
        }
        let stopped_at = std::time::Instant::now();
        stop.send(()).unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out).await;
        assert!(
            out.starts_with(b"HTTP/1.1 200") && out.ends_with(b"slept 500 ms\n"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        let mut rest = Vec::new();
        assert_eq!(silent.read_to_end(&mut rest).await.unwrap(), 0);
        wq::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve_until did not return")
            .unwrap()
            .unwrap();
        assert!(
            stopped_at.elapsed() < Duration::from_secs(5),
            "the silent connection held the stop for its first-bytes timeout"
        );
        // The port free (held now, so that no other test's listener
        // takes it before the connect) and refusing.
        let _held = common::hold(addr).expect("the listener was not closed");
        let refused = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    });
}

/// A service binary started for a test (killed if the test ends first),
/// its stderr read line by line by a thread, so every wait has a limit.
struct Service {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Service {
    /// Starts `http_service` on a free loopback port, without its
    /// dashboard; returns once it said where it listens, with that address.
    fn start() -> (Service, String) {
        Service::start_bin(
            env!("CARGO_BIN_EXE_http_service"),
            &["--addr", "127.0.0.1:0", "--dashboard-addr", "off"],
            "http://",
        )
    }

    /// Starts `bin` with `args`; returns once a line of its stderr said
    /// `listening on {scheme}ADDR`, with ADDR.
    fn start_bin(bin: &str, args: &[&str], scheme: &str) -> (Service, String) {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut service = Service { child, lines };
        let marker = format!("listening on {scheme}");
        let listening = service.wait_for(&marker);
        let addr = listening
            .rsplit(marker.as_str())
            .next()
            .unwrap()
            .trim()
            .to_owned();
        (service, addr)
    }

    /// The next line of its stderr that contains `what`.
    fn wait_for(&mut self, what: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no line with {what:?} within 20 s"));
            if line.contains(what) {
                return line;
            }
        }
    }

    fn term(&self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill takes a pid and a signal number.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }

    /// Its exit status, once it exits within `limit`.
    fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < limit, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its last lines: the reader thread ends at the exit's end of file.
    fn rest(&self) -> Vec<String> {
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            rest.push(line);
        }
        rest
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The service binaries stop on SIGTERM: with nothing open, a clean exit
/// (the default action of SIGTERM ended them with status 143).
#[test]
fn http_service_exits_cleanly_on_sigterm() {
    let (mut service, _) = Service::start();
    service.term();
    let status = service.exit_within(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    let rest = service.rest();
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM: stopped")),
        "{rest:?}"
    );
}

/// A stderr nobody reads any more (a log shipper gone) does not abort the
/// stop: the request in flight is answered and the exit is clean. The stop
/// wrote its lines with `eprintln!`, which panics on EPIPE: exit 101, the
/// request dropped.
#[test]
fn http_service_stops_cleanly_with_its_stderr_closed() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};
    // Killed if an assertion fails before its stop (it never exits alone).
    let mut child = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_http_service"))
            .args(["--addr", "127.0.0.1:0", "--dashboard-addr", "off"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Its reads below wait on the child: a hung one is killed.
    let _killer = common::kill_after(child.id(), Duration::from_secs(60));
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no listening line");
        if let Some(addr) = line.trim().rsplit("listening on http://").next()
            && line.contains("listening on http://")
        {
            break addr.to_owned();
        }
    };
    // Its stderr's reader goes away.
    drop(err);
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // A quick request answered first: the connection is accepted and
    // served (the service checks the signal before it accepts), and reads
    // the slow one as it comes.
    // The slow one sent with it (pipelined): the service has it once it
    // answers the first (a slow one sent after that answer, and a sleep,
    // could still be on its way when the signal came, on a loaded machine:
    // the connection was idle then, and closed unanswered).
    slow.write_all(
        b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\nGET /sleep?ms=1000 HTTP/1.1\r\nhost: localhost\r\n\r\n",
    )
    .unwrap();
    // The whole answer (its body ends the route's one line), so that what
    // is read after the signal is the slow one's.
    let mut first = Vec::new();
    while !first.ends_with(b"hello from wq\n") {
        let mut buf = [0u8; 512];
        let n = slow.read(&mut buf).unwrap();
        assert!(n > 0, "{:?}", String::from_utf8_lossy(&first));
        first.extend_from_slice(&buf[..n]);
    }
    assert!(
        first.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first)
    );
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill takes a pid and a signal number.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("still running 20 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
}

/// The echo server stops on SIGTERM: its listener closes, the set of its
/// connections' tasks is shut down (an open connection is closed), and it
/// exits with success.
#[test]
fn echo_closes_its_connections_and_exits_cleanly_on_sigterm() {
    use std::io::{Read, Write};
    let (mut service, addr) =
        Service::start_bin(env!("CARGO_BIN_EXE_echo"), &["--addr", "127.0.0.1:0"], "");
    let mut client = std::net::TcpStream::connect(&addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    client.write_all(b"ping").unwrap();
    let mut back = [0u8; 4];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    service.term();
    let status = service.exit_within(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    let rest = service.rest();
    assert!(
        rest.iter()
            .any(|l| l.contains("SIGTERM: closing 1 connections")),
        "{rest:?}"
    );
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM: stopped")),
        "{rest:?}"
    );
    // Closed by the server: end of file, or a reset.
    let mut more = [0u8; 1];
    assert!(matches!(client.read(&mut more), Ok(0) | Err(_)));
    // Held, so that no other test's listener takes the port before the
    // connect.
    let _held = common::hold(addr.parse().unwrap()).expect("still listening");
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "still listening"
    );
}

/// A request in flight holds the graceful stop; a second SIGTERM during
/// the drain ends the service at once.
#[test]
fn http_service_exits_at_once_on_a_second_sigterm() {
    use std::io::{Read, Write};
    let (mut service, addr) = Service::start();
    // A request in flight for 5 s. The connection answers a quick one
    // first, so it is being served (and reads the slow one as it comes)
    // when the SIGTERM arrives.
    // Pipelined: the slow one is the service's once the first is answered.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    slow.write_all(
        b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\nGET /sleep?ms=5000 HTTP/1.1\r\nhost: localhost\r\n\r\n",
    )
    .unwrap();
    let mut first = [0u8; 64];
    let n = slow.read(&mut first).unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &first[..n]);
    std::thread::sleep(Duration::from_millis(300));
    service.term();
    let closing = service.wait_for("no more connections");
    assert!(closing.contains("closing the 1 open"), "{closing}");
    let again = std::time::Instant::now();
    service.term();
    service.wait_for("again: stopping now");
    let status = service.exit_within(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(
        again.elapsed() < Duration::from_secs(4),
        "{:?}",
        again.elapsed()
    );
    drop(slow);
}

#[test]
fn an_axum_router_answers_its_routes_and_a_404_on_wq() {
    on_wq(async || {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let router = axum_app::router();
        drop(wq::spawn(serve(l, move || {
            TowerToHyperService::new(router.clone())
        })));
        check_routes(addr).await;
        check_hardening(addr).await;
        check_local_only(addr).await;
    });
}

/// Held by the tests that call `pools_table` directly: its cache is the
/// process's, and each of them, run in parallel, took it over from the
/// others (a runtime's table replaces another's), costing them a
/// snapshot job and a shared table.
static POOLS_CACHE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn pools_cache() -> std::sync::MutexGuard<'static, ()> {
    POOLS_CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// `/pools` requests close together share one table (one snapshot per
/// 250 ms, however many clients poll).
#[test]
fn pools_tables_close_together_are_shared() {
    let _cache = pools_cache();
    on_wq(async || {
        let mut shared = false;
        // A slow machine may straddle a window's end: a few tries.
        for _ in 0..5 {
            let a = routes::pools_table().await.unwrap();
            let b = routes::pools_table().await.unwrap();
            if a.as_ptr() == b.as_ptr() {
                shared = true;
                break;
            }
        }
        assert!(shared, "every request took its own snapshot");
    });
}

/// The cached table is the calling runtime's: another runtime in the same
/// process, asking within the window, gets its own -- also one built where
/// a dropped one was (the cache was keyed by an address).
#[test]
fn a_cached_pools_table_is_never_another_runtimes() {
    let _cache = pools_cache();
    let a = wq::Runtime::new().unwrap();
    let b = wq::Runtime::new().unwrap();
    let ta = a.block_on(routes::pools_table()).unwrap();
    let tb = b.block_on(routes::pools_table()).unwrap();
    assert!(ta.as_ptr() != tb.as_ptr(), "runtime b was served a's table");
    drop((a, b));
    for _ in 0..3 {
        let c = wq::Runtime::new().unwrap();
        let tc = c.block_on(routes::pools_table()).unwrap();
        assert!(
            tc.as_ptr() != tb.as_ptr(),
            "a new runtime got a dropped one's table"
        );
        drop(c);
        let d = wq::Runtime::new().unwrap();
        let td = d.block_on(routes::pools_table()).unwrap();
        assert!(
            td.as_ptr() != tc.as_ptr(),
            "a new runtime got a dropped one's table"
        );
    }
}

/// Many `/pools` requests at once share a snapshot job: each started
/// one (all but one waiting on the cache's lock), and the blocking pool a
/// thread for each, up to 512. (Other tests' runtimes asking at the same
/// time -- a service's `/pools` -- take the one cache over meanwhile, each
/// time costing this one a job more: a bound, not one job.)
#[test]
fn many_pools_requests_at_once_share_a_snapshot_job() {
    let _cache = pools_cache();
    let rt = wq::Runtime::new().unwrap();
    rt.block_on(async {
        let requests: Vec<_> = (0..300).map(|_| wq::spawn(routes::pools_table())).collect();
        for r in requests {
            r.await.unwrap().unwrap();
        }
    });
    let blocking = rt.metrics().blocking;
    assert!(
        blocking.jobs <= 10 && blocking.threads <= 10,
        "{} jobs on {} blocking threads for 300 /pools requests",
        blocking.jobs,
        blocking.threads
    );
}

/// A table made for requests that all went (a client's timeout) is not
/// served as new much later: it was kept by the future they shared and
/// handed, however old, to the next request.
#[test]
fn an_abandoned_pools_table_is_not_served_later_as_new() {
    let _cache = pools_cache();
    let rt = wq::Runtime::new().unwrap();
    rt.block_on(async {
        let mut first = Box::pin(routes::pools_table());
        assert!(
            futures::poll!(first.as_mut()).is_pending(),
            "a table made at once"
        );
        drop(first);
        wq::time::sleep(routes::POOLS_FRESH * 4).await;
        let jobs = rt.metrics().blocking.jobs;
        routes::pools_table().await.unwrap();
        assert!(
            rt.metrics().blocking.jobs > jobs,
            "an old table was served as new"
        );
    });
}

/// The echo example's limits: a silent client is dropped after the idle
/// time; one that trickles a byte at a time (each echoed in time) is still
/// closed at the end of the connection's lifetime; both get their bytes
/// back meanwhile.
#[test]
fn echo_drops_silent_clients_and_ends_trickling_ones_at_their_lifetime() {
    on_wq(async || {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // Wide margins: the bounds below hold on a loaded 2-CPU machine.
        // The trickle (a byte every 100 ms) stays far inside `idle`.
        let (idle, lifetime) = (Duration::from_millis(1500), Duration::from_millis(4000));
        let (tx, rx) = futures::channel::mpsc::unbounded();
        drop(wq::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let tx = tx.clone();
                drop(wq::spawn(async move {
                    let _ = tx.unbounded_send(wq_examples::echo::echo(s, idle, lifetime).await);
                }));
            }
        }));
        let mut results = rx;
        // Silent: dropped after `idle`.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let waited = time_to_close(&mut silent).await;
        assert!(
            // The server's clock may start before this client's.
            waited >= Duration::from_millis(1000) && waited < Duration::from_millis(4500),
            "silent client closed after {waited:?}"
        );
        let why = futures::StreamExt::next(&mut results)
            .await
            .unwrap()
            .unwrap_err();
        assert!(why.to_string().contains("idle"), "{why}");
        // Trickling: a byte every 100 ms, each echoed, until the lifetime.
        let mut c = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        let mut echoed = 0;
        loop {
            if c.write_all(b"x").await.is_err() {
                break;
            }
            let mut b = [0u8; 1];
            match c.read(&mut b).await {
                Ok(1) => echoed += 1,
                _ => break,
            }
            wq::time::sleep(Duration::from_millis(100)).await;
            assert!(started.elapsed() < Duration::from_secs(20), "never closed");
        }
        let lived = started.elapsed();
        assert!(
            // The server's clock may start before this client's.
            lived >= Duration::from_millis(3500),
            "closed after {lived:?}, before its lifetime"
        );
        assert!(echoed >= 5, "only {echoed} bytes came back");
        let why = futures::StreamExt::next(&mut results)
            .await
            .unwrap()
            .unwrap_err();
        assert!(why.to_string().contains("lifetime"), "{why}");
    });
}
