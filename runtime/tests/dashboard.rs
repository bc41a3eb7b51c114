//! `wq::dashboard` (feature `dashboard`): every route, read-only, bad and
//! slow clients, the connection limit, shutdown, and the page itself in
//! headless Chromium (installed by `scripts/setup`; skipped with a printed
//! reason where it is not installed, except in CI). Each test runs under a
//! watchdog.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wq::metrics::Snapshot;
use wq::{Runtime, Scope, Topology};

use common::within;

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// One request on its own connection (`Connection: close`), read to EOF.
fn request(addr: SocketAddr, raw: &str) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head,
        body: out[split + 4..].to_vec(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Reply {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
}

fn runtime() -> Runtime {
    Runtime::builder()
        .topology(Topology::synthetic("pack:2 core:2 pu:1").unwrap())
        .default_scope(Scope::System)
        .thread_name("dash")
        .latency_capture(true)
        .build()
        .unwrap()
}

/// Until the connection is closed by the server (EOF or reset), at most
/// `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn every_route_answers_read_only() {
    within(120, || {
        let rt = runtime();
        rt.block_on(async {
            wq::spawn(async {}).await.unwrap();
        });
        let d = wq::dashboard::serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        let addr = d.local_addr();
        assert!(addr.ip().is_loopback());

        let page = get(addr, "/");
        assert_eq!(page.status, 200);
        assert!(
            page.header("content-type")
                .unwrap()
                .starts_with("text/html")
        );
        assert!(page.text().contains("<script src=\"/app.js\">"));
        for (path, kind) in [("/app.js", "text/javascript"), ("/app.css", "text/css")] {
            let r = get(addr, path);
            assert_eq!(r.status, 200, "{path}");
            assert!(
                r.header("content-type").unwrap().starts_with(kind),
                "{path}"
            );
            assert!(r.body.len() > 500, "{path}");
        }
        // No asset from elsewhere: every src/href is local.
        for asset in [page.text(), get(addr, "/app.js").text()] {
            assert!(!asset.contains("http://") && !asset.contains("https://"));
        }

        let metrics = get(addr, "/metrics");
        assert_eq!(metrics.status, 200);
        assert!(
            metrics
                .header("content-type")
                .unwrap()
                .contains("version=0.0.4")
        );
        let snap: Snapshot = serde_json::from_slice(&get(addr, "/api/snapshot").body).unwrap();
        assert_eq!(snap.thread_name, "dash");
        assert!(!snap.pools.is_empty());
        for p in &snap.pools {
            assert!(
                metrics
                    .text()
                    .contains(&format!("wq_sched_delay_seconds_count{{pool=\"{}\"", p.id)),
                "pool {} in /metrics",
                p.id
            );
        }
        let history: serde_json::Value =
            serde_json::from_slice(&get(addr, "/api/history?since=0").body).unwrap();
        assert!(history["pools"].is_array() && history["points"].is_array());
        assert_eq!(history["cpus"].as_array().unwrap().len(), 4);
        // The seq the next point will have: beyond every point served (a
        // page that saw one at or beyond it reads a restarted service).
        let next = history["next_seq"].as_u64().expect("next_seq");
        assert!(
            history["points"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["seq"].as_u64().unwrap() < next),
            "{history}"
        );
        // Which dashboard answered: the same one twice; another (a
        // restarted service on the address) differs, so a page that held
        // the first starts over whatever the seqs say.
        let instance = history["instance"].as_u64().expect("instance");
        let again: serde_json::Value =
            serde_json::from_slice(&get(addr, "/api/history?since=0").body).unwrap();
        assert_eq!(again["instance"].as_u64(), Some(instance));
        {
            let other = wq::dashboard::serve_on(rt.handle(), "127.0.0.1:0").unwrap();
            let theirs: serde_json::Value =
                serde_json::from_slice(&get(other.local_addr(), "/api/history").body).unwrap();
            assert_ne!(theirs["instance"].as_u64(), Some(instance));
        }

        // Read-only, and the rest.
        let post = request(
            addr,
            "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(post.status, 405);
        assert_eq!(post.header("allow").as_deref(), Some("GET, HEAD"));
        let del = request(
            addr,
            "DELETE /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(del.status, 405);
        // Another host name on a loopback listener: a page that rebound its
        // DNS to this machine.
        let rebound = request(
            addr,
            "GET /api/snapshot HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(rebound.status, 403);
        assert!(rebound.text().contains("loopback"), "{}", rebound.text());
        let head = request(
            addr,
            "HEAD / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        assert_eq!((head.status, head.body.len()), (200, 0));
        let with_body = request(
            addr,
            "GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        );
        assert_eq!(with_body.status, 413);
        assert_eq!(get(addr, "/nope").status, 404);
    });
}

#[test]
fn bad_slow_and_too_many_clients_do_not_stall_it() {
    within(120, || {
        let rt = runtime();
        let d = wq::dashboard::serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        let addr = d.local_addr();

        // Garbage: 400 or a close; the server goes on.
        let mut g = TcpStream::connect(addr).unwrap();
        g.write_all(b"\x16\x03\x01 not http at all\r\n\r\n")
            .unwrap();
        let mut out = Vec::new();
        g.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = g.read_to_end(&mut out);
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1.1 400"),
            "{out:?}"
        );
        assert_eq!(get(addr, "/").status, 200);

        // A head over the limit is refused (431) or closed.
        let mut big = TcpStream::connect(addr).unwrap();
        let filler = "x".repeat(wq::dashboard::MAX_HEAD_BYTES * 2);
        let _ = big.write_all(format!("GET / HTTP/1.1\r\nX-Filler: {filler}\r\n\r\n").as_bytes());
        let mut out = Vec::new();
        big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = big.read_to_end(&mut out);
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1.1 431"),
            "{:?}",
            String::from_utf8_lossy(&out[..out.len().min(80)])
        );

        // A client too slow with its head is cut off after the timeout,
        // and served nobody's time meanwhile.
        // Before the connect: the timeout may start at the accept.
        let t0 = Instant::now();
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            .unwrap();
        assert_eq!(
            get(addr, "/metrics").status,
            200,
            "served while one dawdles"
        );
        assert!(closed_within(
            &mut slow,
            wq::dashboard::HEADER_READ_TIMEOUT + Duration::from_secs(5)
        ));
        assert!(t0.elapsed() >= wq::dashboard::HEADER_READ_TIMEOUT - Duration::from_millis(100));

        // The connection limit: connections up to it are held; the next
        // is closed at once while every held one is younger than
        // EVICT_IDLE (tried three times: a machine so slow that a second
        // passed between the accepts and the next connect evicts instead);
        // once they have been idle that long, the next closes the oldest
        // and is served. (Counted once the earlier connections' tasks have
        // ended, and once the held ones are accepted.)
        let until = |what: &str, f: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !f() {
                assert!(Instant::now() < deadline, "never: {what}");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let hold = || {
            until("no connection open", &|| d.connections() == 0);
            let held: Vec<TcpStream> = (0..wq::dashboard::MAX_CONNECTIONS)
                .map(|_| TcpStream::connect(addr).unwrap())
                .collect();
            until("the held connections accepted", &|| {
                d.connections() == wq::dashboard::MAX_CONNECTIONS
            });
            held
        };
        let refused = (0..3).any(|_| {
            let _held = hold();
            let mut over = TcpStream::connect(addr).unwrap();
            closed_within(&mut over, Duration::from_secs(3)) && d.refused_connections() >= 1
        });
        assert!(
            refused,
            "over the limit, beside young connections: closed at once"
        );
        let held = hold();
        let evicted = d.evicted_connections();
        std::thread::sleep(wq::dashboard::EVICT_IDLE + Duration::from_millis(200));
        assert_eq!(
            get(addr, "/").status,
            200,
            "over the limit, beside idle connections: served"
        );
        assert_eq!(
            d.evicted_connections(),
            evicted + 1,
            "one idle connection closed"
        );
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            if out.starts_with(b"HTTP/1.1 200") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "never served again after the limit"
            );
            std::thread::sleep(Duration::from_millis(50));
        }

        // Shutdown frees the port: it can be held (bound, not listening;
        // a connect to it alone could reach another test's listener that
        // took the freed port).
        d.shutdown();
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Err(e) = common::refusing::hold(addr) {
            assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
            assert!(Instant::now() < deadline, "still listening after shutdown");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

#[test]
fn requests_polling_fast_share_a_snapshot_and_a_bad_since_is_refused() {
    within(120, || {
        let rt = runtime();
        let d = wq::dashboard::serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        let addr = d.local_addr();
        let uptime = || {
            let r = get(addr, "/api/snapshot");
            assert_eq!(r.status, 200);
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["uptime"].clone()
        };
        // Back to back, within the freshness window: the same snapshot (a
        // slow machine may straddle a window's end, so a few tries).
        let shared = (0..5).any(|_| uptime() == uptime());
        assert!(shared, "every request took its own snapshot");
        let before = uptime();
        std::thread::sleep(wq::dashboard::SNAPSHOT_FRESH + Duration::from_millis(100));
        assert_ne!(uptime(), before, "a stale snapshot was served");
        let r = get(addr, "/api/history?since=lots");
        assert_eq!(r.status, 400);
        assert!(r.text().contains("give a whole number"), "{}", r.text());
    });
}

/// Bound to a wildcard address, the dashboard is reached through
/// loopback too: such a connection gets the same Host check (a page
/// rebinding its DNS to 127.0.0.1 would read it otherwise).
#[test]
fn a_wildcard_listener_checks_the_host_of_loopback_connections() {
    within(60, || {
        let rt = runtime();
        let d = wq::dashboard::serve_on(rt.handle(), "0.0.0.0:0").unwrap();
        let port = d.local_addr().port();
        let local = SocketAddr::from(([127, 0, 0, 1], port));
        let rebound = request(
            local,
            "GET /api/snapshot HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(rebound.status, 403);
        // A target in absolute form names the host the server must use,
        // over the Host header's.
        let absolute = request(
            local,
            "GET http://evil.example/api/snapshot HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(absolute.status, 403);
        assert_eq!(get(local, "/api/snapshot").status, 200);
    });
}

/// The application's `spawn_blocking` jobs filling the blocking pool do not
/// leave the dashboard blind: its snapshots and history run on a thread
/// of its own.
#[test]
fn a_full_blocking_pool_does_not_hold_the_dashboard() {
    within(60, || {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
            .thread_name("dashfull")
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let d = wq::dashboard::serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        // The one blocking thread is busy for 10 s, and a job waits behind.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let busy = rt.handle().spawn_blocking(move || {
            let _ = held.recv_timeout(Duration::from_secs(10));
        });
        let queued = rt.handle().spawn_blocking(|| ());
        let started = std::time::Instant::now();
        for path in ["/metrics", "/api/snapshot", "/api/history"] {
            let r = get(d.local_addr(), path);
            assert_eq!(
                r.status,
                200,
                "{path}: {}",
                String::from_utf8_lossy(&r.body)
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the dashboard waited for the blocking pool: {:?}",
            started.elapsed()
        );
        release.send(()).unwrap();
        rt.block_on(async {
            busy.await.unwrap();
            queued.await.unwrap();
        });
    });
}

#[test]
fn serve_outside_a_runtime_says_how_to_call_it() {
    let err = wq::dashboard::serve("127.0.0.1:0").unwrap_err();
    assert!(err.to_string().contains("outside a wq runtime"), "{err}");
    let rt = runtime();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = wq::dashboard::serve_on(rt.handle(), taken.local_addr().unwrap()).unwrap_err();
    assert!(err.to_string().contains("could not listen on"), "{err}");
    // An address without a port says what failed, not only "invalid socket
    // address".
    let err = wq::dashboard::serve_on(rt.handle(), "localhost").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("could not resolve \"localhost\""), "{msg}");
    assert!(msg.contains("HOST:PORT"), "{msg}");
}

/// The dashboard's thread is named after its runtime's threads
/// (`<name>-dashboard`): it was `wq-dashboard` whatever the runtime's
/// `thread_name`, and two runtimes' dashboards could not be told apart.
#[test]
fn the_dashboards_thread_takes_the_runtimes_thread_name() {
    within(60, || {
        let rt = runtime();
        let d = wq::dashboard::serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        assert_eq!(get(d.local_addr(), "/api/snapshot").status, 200);
        let named = || {
            std::fs::read_dir("/proc/self/task").unwrap().any(|t| {
                t.ok()
                    .and_then(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                    .is_some_and(|c| c.trim_end() == "dash-dashboard")
            })
        };
        // A new thread names itself once it runs; the snapshot above ran
        // on it.
        assert!(named(), "no thread named dash-dashboard");
        drop(d);
    });
}

/// A dashboard asked for while its runtime shuts down (its drop waiting
/// for a task) is an error: it was `Ok`, its loops refused and its port
/// closed, a dashboard that never answers.
#[test]
fn serve_on_a_runtime_shutting_down_is_an_error() {
    within(60, || {
        let rt = runtime();
        let h = rt.handle().clone();
        let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        drop(rt.spawn(async move {
            entered_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        }));
        entered.recv().unwrap();
        let dropper = std::thread::spawn(move || drop(rt));
        // Closing once a spawn is refused.
        loop {
            match futures::executor::block_on(h.spawn(async {})) {
                Err(e) if e.is_refused() => break,
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        let served = wq::dashboard::serve_on(&h, "127.0.0.1:0");
        release.send(()).unwrap();
        dropper.join().unwrap();
        let Err(err) = served else {
            panic!("a dashboard on a runtime shutting down")
        };
        assert!(err.to_string().contains("shut"), "{err}");
    });
}

/// Chromium as Debian packages it, or `WQ_CHROMIUM`.
fn chromium() -> Option<String> {
    if let Some(c) = std::env::var_os("WQ_CHROMIUM") {
        return Some(c.to_string_lossy().into_owned());
    }
    ["chromium", "chromium-browser", "chromium-headless-shell"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_owned)
}

/// [`chromium`], or `None` with the reason printed (a failure in CI,
/// where scripts/setup installs it).
fn chromium_or_skip() -> Option<String> {
    let browser = chromium();
    if browser.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium not found in CI: scripts/setup installs it"
        );
        eprintln!(
            "skipped: no chromium (Debian's `chromium`, which scripts/setup installs; or set WQ_CHROMIUM)"
        );
    }
    browser
}

fn headless(browser: &str, profile: &std::path::Path, extra: &[&str], url: &str) -> String {
    headless_for(browser, profile, extra, url, "--virtual-time-budget=6000")
}

/// `headless` with its own time flag: `--virtual-time-budget=MS` (the
/// page's timers run as fast as they may, but time stands still while a
/// fetch is in flight) or `--timeout=MS` (real time).
fn headless_for(
    browser: &str,
    profile: &std::path::Path,
    extra: &[&str],
    url: &str,
    time: &str,
) -> String {
    let out = common::child::output(
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                // Nothing but the page: no update checks, sync or QUIC probes
                // to hosts a test machine may not reach.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--hide-scrollbars",
                "--window-size=1400,1500",
                time,
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url),
    );
    assert!(
        out.status.success(),
        "{browser}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `name="value"` of the first element of `dom` whose opening tag holds
/// `marker`.
fn attr(dom: &str, marker: &str, name: &str) -> Option<String> {
    let at = dom.find(marker)?;
    let tag_start = dom[..=at].rfind('<')?;
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>')?];
    let key = format!("{name}=\"");
    let v = &tag[tag.find(&key)? + key.len()..];
    Some(v[..v.find('"')?].to_owned())
}

#[test]
fn the_page_draws_its_charts_in_headless_chromium() {
    let Some(browser) = chromium_or_skip() else {
        return;
    };
    within(180, move || {
        let rt = runtime();
        let d = wq::dashboard::serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        let addr = d.local_addr();
        // Load: tasks on two scopes' pools, some queued behind short
        // blocking ones, until the test ends.
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (h, stop) = (rt.handle().clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let mut hs = Vec::new();
                    for i in 0..200u32 {
                        let scope = if i % 2 == 0 {
                            Scope::System
                        } else {
                            Scope::Cpu
                        };
                        hs.push(h.spawn_on_cpu(i as usize % 4, scope, async move {
                            if i % 50 == 0 {
                                std::thread::sleep(Duration::from_micros(300));
                            }
                            wq::task::yield_now().await;
                        }));
                    }
                    for j in hs {
                        let _ = h.block_on(j);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        // Three seconds of history first.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let h: serde_json::Value =
                serde_json::from_slice(&get(addr, "/api/history").body).unwrap();
            if h["points"].as_array().unwrap().len() >= 3 {
                break;
            }
            assert!(Instant::now() < deadline, "no history after 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        // `?ink`: the page counts what each canvas drew (`data-inked`).
        let url = format!("http://{addr}/?ink");
        let profile = std::env::temp_dir().join(format!("wq-chromium-{}", std::process::id()));
        let dom = headless(&browser, &profile, &["--dump-dom"], &url);
        assert_eq!(
            attr(&dom, "<body", "data-ready").as_deref(),
            Some("1"),
            "the page never rendered a point:\n{dom}"
        );
        let points: usize = attr(&dom, "<body", "data-points").unwrap().parse().unwrap();
        assert!(points >= 3, "{points} points");
        let snap: Snapshot = serde_json::from_slice(&get(addr, "/api/snapshot").body).unwrap();
        assert!(snap.pools.len() >= 2, "two scopes' pools under load");
        for p in &snap.pools {
            assert!(
                dom.contains(&format!("id=\"pool-{}\"", p.id)),
                "a chart for pool {}",
                p.id
            );
        }
        // Every canvas drew something: delays, rates, pods.
        let mut canvases = 0;
        for (i, _) in dom.match_indices("<canvas") {
            let inked: usize = attr(&dom[i..], "<canvas", "data-inked")
                .unwrap_or_else(|| panic!("a canvas never drawn: {}", &dom[i..i + 120]))
                .parse()
                .unwrap();
            assert!(
                inked > 100,
                "a blank canvas ({inked} inked): {}",
                &dom[i..i + 120]
            );
            canvases += 1;
        }
        assert!(canvases >= snap.pools.len() + 2, "{canvases} canvases");
        // The delay charts have lines: each has all its points.
        let delay_points: usize = attr(&dom, "class=\"chart delay\"", "data-points")
            .unwrap()
            .parse()
            .unwrap();
        assert!(delay_points >= 9, "{delay_points}");

        let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        let _ = std::fs::remove_file(&shot);
        headless(
            &browser,
            &profile,
            &[&format!("--screenshot={}", shot.display())],
            &url,
        );
        let png = std::fs::read(&shot).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 20_000,
            "{} bytes",
            png.len()
        );
        eprintln!("screenshot: {}", shot.display());
        let _ = std::fs::remove_dir_all(&profile);
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap();
    });
}

/// A machine with hundreds of pools (a cpu-scope pool per CPU): the page
/// charts the 48 pools with the highest p99 and says so, draws pod rows
/// for the first 160 (a canvas of a row per pool was 8,000 px tall here,
/// and past browsers' canvas limits at 1,000 pools), and its table has
/// every pool. (Each redraw also searched every point's pools for each
/// pool: quadratic in them; now a map per point.)
#[test]
fn a_page_of_hundreds_of_pools_charts_the_worst_and_tables_them_all() {
    let Some(browser) = chromium_or_skip() else {
        return;
    };
    within(180, move || {
        let cpus = 180;
        let rt = Runtime::builder()
            .topology(Topology::synthetic(&format!("pack:1 core:{cpus} pu:1")).unwrap())
            .thread_name("dash-wide")
            .build()
            .unwrap();
        let d = wq::dashboard::serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        let addr = d.local_addr();
        let hs: Vec<_> = (0..cpus)
            .map(|cpu| rt.handle().spawn_on_cpu(cpu, Scope::Cpu, async {}))
            .collect();
        for h in hs {
            rt.block_on(h).unwrap();
        }
        let pools = rt.metrics().pools.len();
        assert!(pools >= cpus, "{pools} pools");
        // Two points of history.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let h: serde_json::Value =
                serde_json::from_slice(&get(addr, "/api/history").body).unwrap();
            if h["points"].as_array().unwrap().len() >= 2 {
                break;
            }
            assert!(Instant::now() < deadline, "no history after 30 s");
            std::thread::sleep(Duration::from_millis(200));
        }
        let url = format!("http://{addr}/");
        let profile = std::env::temp_dir().join(format!("wq-chromium-wide-{}", std::process::id()));
        let dom = headless(&browser, &profile, &["--dump-dom"], &url);
        let _ = std::fs::remove_dir_all(&profile);
        assert_eq!(
            attr(&dom, "<body", "data-ready").as_deref(),
            Some("1"),
            "the page never rendered a point"
        );
        let cards = dom.matches("class=\"card\"").count();
        assert_eq!(cards, 48, "delay charts");
        let note = &dom[dom.find("id=\"delays-more\"").expect("the note")..];
        let note = &note[..note.find("</p>").unwrap()];
        assert!(
            !note.contains("hidden") && note.contains(&format!("of {pools}")),
            "{note}"
        );
        let height: usize = attr(&dom, "id=\"pods\"", "height")
            .unwrap()
            .parse()
            .unwrap();
        assert!(height <= 161 * 46 + 30, "pods canvas {height} px");
        // Every CPU has its cell in a pool's row (those past the canvas's
        // width were left out).
        assert_eq!(
            attr(&dom, "id=\"pods\"", "data-cpus").as_deref(),
            Some(cpus.to_string().as_str()),
            "CPUs drawn"
        );
        let tbody = &dom[dom.find("<tbody>").unwrap()..dom.find("</tbody>").unwrap()];
        assert_eq!(tbody.matches("<tr>").count(), pools, "table rows");
    });
}

/// A dashboard of `rt` on loopback, once its history holds `points`
/// points (30 s at most), and its address.
fn serving_points(rt: &Runtime, points: u64) -> (wq::dashboard::DashboardHandle, SocketAddr) {
    let d = wq::dashboard::serve_on(rt.handle(), "127.0.0.1:0").unwrap();
    let addr = d.local_addr();
    let deadline = Instant::now() + Duration::from_secs(30);
    while next_seq(addr) < points {
        assert!(Instant::now() < deadline, "no history after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    (d, addr)
}

/// The `next_seq` of the history feed: the sampler's points so far.
fn next_seq(addr: SocketAddr) -> u64 {
    let r = get(addr, "/api/history");
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["next_seq"].as_u64().unwrap()
}

/// Clients that send a request and hang up at once do not hold others
/// up: other requests are served meanwhile, and the sampler keeps its
/// points (each such request's job once rendered for nobody, keeping the
/// thread's queue full: 503 for everyone else; their jobs run now, the
/// connection taking half-closed sockets, but share the cached renders).
#[test]
fn clients_that_hang_up_on_their_requests_do_not_hold_others_up() {
    within(120, || {
        let rt = runtime();
        let d = wq::dashboard::serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        let addr = d.local_addr();
        let before = next_seq(addr);
        let stop = Arc::new(AtomicBool::new(false));
        let flood: Vec<_> = (0..4)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(mut s) = TcpStream::connect(addr) {
                            let _ = s
                                .write_all(b"GET /api/history HTTP/1.1\r\nHost: localhost\r\n\r\n");
                        }
                    }
                })
            })
            .collect();
        // A request of ours may also find the connection limit full of
        // the flood's (closed at once then): only a 503 counts against.
        let status = || -> Option<u16> {
            let mut s = TcpStream::connect(addr).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).ok()?;
            std::str::from_utf8(out.get(9..12)?).ok()?.parse().ok()
        };
        let t0 = Instant::now();
        let (mut served, mut busy) = (0, 0);
        while t0.elapsed() < Duration::from_secs(3) {
            match status() {
                Some(200) => served += 1,
                Some(503) => busy += 1,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::Relaxed);
        for f in flood {
            f.join().unwrap();
        }
        // Read once the flood's connections are gone (a request of ours
        // meanwhile may find the limit full, closed at once; the listen
        // backlog may still hold some after the threads stop): the points
        // are cumulative, so those made during the flood count all the
        // same.
        let t0 = Instant::now();
        while d.connections() > 0 && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let during = next_seq(addr);
        // At most half refused: a loaded 2-CPU machine (the flood's
        // threads, other tests' headless browser) starves the dashboard's
        // thread; held up, ours were refused every time.
        assert!(
            served > 0 && busy <= served,
            "/metrics served {served} times, busy (503) {busy} times"
        );
        assert!(
            during >= before + 2,
            "the sampler's points stopped: {before} -> {during} in 3 s"
        );
    });
}

/// A client that trickles a request's head a byte at a time is not
/// active: at the connection limit it is evicted once idle, as a silent
/// one is (hyper flushes on every byte read, and a flush stamped the
/// connection active).
#[test]
fn a_client_trickling_its_head_is_evicted_at_the_limit() {
    within(120, || {
        let rt = runtime();
        let d = wq::dashboard::serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        let addr = d.local_addr();
        let mut held: Vec<TcpStream> = (0..wq::dashboard::MAX_CONNECTIONS)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
                s
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.connections() < wq::dashboard::MAX_CONNECTIONS {
            assert!(
                Instant::now() < deadline,
                "the held connections never accepted"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // A byte each, every 200 ms, for longer than EVICT_IDLE.
        let t0 = Instant::now();
        while t0.elapsed() < wq::dashboard::EVICT_IDLE + Duration::from_millis(500) {
            for s in &mut held {
                let _ = s.write_all(b"X");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let evicted = d.evicted_connections();
        assert_eq!(get(addr, "/").status, 200, "a newcomer beside tricklers");
        assert_eq!(d.evicted_connections(), evicted + 1);
        drop(held);
    });
}

/// What a [`stand_in`] does after its first history answer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum After {
    /// The sampler stopped: every history answer the same, no new point.
    Frozen,
    /// It stopped answering: requests are read and never answered, the
    /// connection held open, as a stopped process's kernel does.
    Hung,
    /// Every later answer an older feed of the same service (the same
    /// instance, no point, a `next_seq` of 1), as the last whole feed
    /// rendered is handed out while `MAX_LIVE_FEEDS` are alive.
    Older,
}

/// A stand-in for a service that behaves as `after` says. Serves the real
/// dashboard's page and assets and its first history answer; counts the
/// history requests without `since` (a page starting over).
fn stand_in(real: SocketAddr, after: After) -> (SocketAddr, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let hung = after == After::Hung;
    let mut page = get(real, "/").body;
    if hung {
        // The page's load (after which Chromium dumps it) waits for an
        // image the stand-in sends 8 s late: the page runs 8 s of real
        // time first.
        let at = page.windows(7).position(|w| w == b"</body>").unwrap();
        page.splice(at..at, b"<img src=\"/slow.png\" alt=\"\">".iter().copied());
    }
    let js = get(real, "/app.js").body;
    let css = get(real, "/app.css").body;
    let history = get(real, "/api/history").body;
    let older = {
        let mut v: serde_json::Value = serde_json::from_slice(&history).unwrap();
        v["points"] = serde_json::json!([]);
        v["next_seq"] = serde_json::json!(1);
        serde_json::to_vec(&v).unwrap()
    };
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let whole = Arc::new(AtomicUsize::new(0));
    let (stop2, answered, whole2) = (
        stop.clone(),
        Arc::new(AtomicBool::new(false)),
        whole.clone(),
    );
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && matches!(s.read(&mut b), Ok(1)) {
                head.push(b[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let path = head.split(' ').nth(1).unwrap_or("");
            if path == "/slow.png" {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(8));
                    let _ = s.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                });
                continue;
            }
            let (kind, body) = if path == "/" {
                ("text/html", &page)
            } else if path == "/app.js" {
                ("text/javascript", &js)
            } else if path == "/app.css" {
                ("text/css", &css)
            } else if path.starts_with("/api/history") {
                if !path.contains("since=") {
                    whole2.fetch_add(1, Ordering::Relaxed);
                }
                let later = answered.swap(true, Ordering::Relaxed);
                match after {
                    After::Hung if later => {
                        held.push(s);
                        continue;
                    }
                    After::Older if later => ("application/json", &older),
                    _ => ("application/json", &history),
                }
            } else {
                continue;
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
    (addr, stop, whole)
}

/// The page says so when the service stops making points or stops
/// answering, within seconds, instead of "live" over charts frozen at the
/// last point (a fetch to a stopped process waits for ever: the page
/// gives one up after 5 s, and looks at the newest point's age every
/// second whatever its fetch is doing).
#[test]
fn the_page_says_when_its_service_is_stale_or_hung() {
    let Some(browser) = chromium_or_skip() else {
        return;
    };
    within(180, move || {
        let rt = runtime();
        let (_d, real) = serving_points(&rt, 1);
        for hung in [false, true] {
            let after = if hung { After::Hung } else { After::Frozen };
            let (addr, stop, _) = stand_in(real, after);
            let profile = std::env::temp_dir()
                .join(format!("wq-chromium-stale-{hung}-{}", std::process::id()));
            // A hung fetch stops virtual time: the hung service's page
            // runs in real time (8 s: its image; 20 s at most).
            let time = if hung {
                "--timeout=20000"
            } else {
                "--virtual-time-budget=6000"
            };
            let dom = headless_for(
                &browser,
                &profile,
                &["--dump-dom"],
                &format!("http://{addr}/"),
                time,
            );
            stop.store(true, Ordering::Relaxed);
            let _ = std::fs::remove_dir_all(&profile);
            let status = &dom[dom.find("id=\"status\"").expect("a status")..];
            let status = &status[..status.find("</span>").unwrap()];
            assert!(
                status.contains("class=\"err\"")
                    && (status.contains("stale") || status.contains("no answer")),
                "hung {hung}: {status}"
            );
        }
    });
}

/// A feed older than the page's newest point, from the same service (the
/// last whole feed rendered, handed out while `MAX_LIVE_FEEDS` are alive),
/// is no restart: the page keeps its points and goes on asking for those
/// after them (it threw its history away and asked for the whole feed
/// again, then showed the old points as live).
#[test]
fn an_older_feed_of_the_same_service_is_no_restart() {
    let Some(browser) = chromium_or_skip() else {
        return;
    };
    within(180, move || {
        let rt = runtime();
        // Points up to seq 1 at least: the older feed's `next_seq` (1) is
        // at or before the page's newest.
        let (_d, real) = serving_points(&rt, 2);
        let (addr, stop, whole) = stand_in(real, After::Older);
        let profile =
            std::env::temp_dir().join(format!("wq-chromium-older-{}", std::process::id()));
        let dom = headless(
            &browser,
            &profile,
            &["--dump-dom"],
            &format!("http://{addr}/"),
        );
        stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_dir_all(&profile);
        assert!(dom.contains("id=\"status\""), "{dom}");
        assert_eq!(
            whole.load(Ordering::Relaxed),
            1,
            "the page asked for the whole feed again: it took an older feed for a restart"
        );
    });
}

/// A client that shuts its writing side after its request (as `nc -N`
/// and socat do) gets its answer, on every route.
#[test]
fn a_client_that_half_closes_after_its_request_is_answered() {
    within(60, || {
        let rt = runtime();
        let d = wq::dashboard::serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        for path in ["/", "/app.css", "/metrics", "/api/snapshot", "/api/history"] {
            for version in ["HTTP/1.0", "HTTP/1.1"] {
                let mut s = TcpStream::connect(d.local_addr()).unwrap();
                write!(s, "GET {path} {version}\r\nHost: localhost\r\n\r\n").unwrap();
                s.shutdown(std::net::Shutdown::Write).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut out = Vec::new();
                s.read_to_end(&mut out).unwrap();
                assert!(
                    out.starts_with(b"HTTP/1.") && out[9..12] == *b"200",
                    "{path} {version}: {:?}",
                    String::from_utf8_lossy(&out[..out.len().min(200)])
                );
            }
        }
    });
}
