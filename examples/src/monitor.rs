//! `wq-monitor`'s parts, testable apart from its terminal: the HTTP/1.1
//! fetch of a service's `/api/snapshot`, the per-pool rows (like the
//! kernel's `tools/workqueue/wq_monitor.py`), the line table and the
//! ratatui frame.
//!
//! The client is `std::net::TcpStream` with timeouts, not hyper: one
//! `GET` with `Connection: close` per refresh, read to its end (the
//! dashboard closes the connection after the answer), within a deadline
//! and a size cap. Every address the name resolves to is tried in turn.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row as TableRow, Table, TableState};
use wq::metrics::{Snapshot, fmt_ns};

/// Where `wq-monitor` looks by default: `http_service`'s `--dashboard-addr`
/// default.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8089";

/// How to start a service with a dashboard, for error messages.
pub const HOW_TO_START: &str = "start one with `cargo run -p wq-examples --bin http_service` \
     (its dashboard is on 127.0.0.1:8089, or --dashboard-addr), or call wq::dashboard::serve in your service";

/// Options of `wq-monitor`.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// The service's dashboard address.
    pub addr: String,
    /// Line mode: a table every this many seconds.
    pub interval: Option<f64>,
    /// Print snapshots as JSON (one per line; with `interval`, the whole
    /// first, then one per interval: its delta).
    pub json: bool,
    /// Stop after this many reports (line and JSON modes).
    pub count: Option<u64>,
}

/// The usage text.
pub fn usage() -> String {
    format!(
        "usage: wq-monitor [ADDR] [-i SECONDS] [--json] [-c COUNT]\n\n\
         Shows a wq service's pools, as the kernel's wq_monitor.py shows workqueues, from its\n\
         dashboard's /api/snapshot (ADDR: HOST:PORT or its http:// URL, default {DEFAULT_ADDR}).\n\n\
         \x20 (none)        a refreshing terminal table (q or Esc quits; arrows, PgUp, PgDn, Home and End scroll)\n\
         \x20 -i SECONDS    print a table every SECONDS (counters and quantiles of the interval)\n\
         \x20 --json        print the snapshot as JSON, for scripts; with -i, one line per interval: the\n\
         \x20               first the whole snapshot (\"interval\": null, counters since the start), each\n\
         \x20               later one the interval's (queues summed by name, no retired queues)\n\
         \x20 -c COUNT      with -i: stop after COUNT intervals (reports, and fetches that failed)\n"
    )
}

/// Parses the command line (without the program name). `Err` holds the
/// message to print (the usage for `--help`).
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        addr: DEFAULT_ADDR.to_owned(),
        interval: None,
        json: false,
        count: None,
    };
    let mut it = args.into_iter();
    let mut addr_seen = false;
    while let Some(a) = it.next() {
        match a.as_str() {
            "-i" | "--interval" => {
                let v = it.next().ok_or(format!("{a} needs SECONDS\n{}", usage()))?;
                let s: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| (0.25..=86_400.0).contains(s))
                    .ok_or(format!(
                        "{a} {v:?}: give seconds, from 0.25 (the dashboard serves a fresh snapshot at most every 0.25 s) to 86400 (a day)\n{}",
                        usage()
                    ))?;
                o.interval = Some(s);
            }
            "-c" | "--count" => {
                let v = it.next().ok_or(format!("{a} needs COUNT\n{}", usage()))?;
                o.count = Some(
                    v.parse()
                        .ok()
                        .filter(|&n: &u64| n > 0)
                        .ok_or(format!("{a} {v:?}: give a positive count\n{}", usage()))?,
                );
            }
            "--json" => o.json = true,
            "-h" | "--help" => return Err(usage()),
            s if s.starts_with('-') => return Err(format!("unknown option {s:?}\n{}", usage())),
            s if !addr_seen => {
                // The dashboard's URL as http_service prints it is taken
                // too, with a path (its /metrics or /api/snapshot URL):
                // its HOST:PORT.
                o.addr = s
                    .strip_prefix("http://")
                    .map_or(s, |rest| rest.split('/').next().unwrap_or(rest))
                    .to_owned();
                if o.addr.is_empty() {
                    return Err(format!("{s:?} names no address\n{}", usage()));
                }
                addr_seen = true;
            }
            s => return Err(format!("one address only, got {s:?} too\n{}", usage())),
        }
    }
    if o.count.is_some() && o.interval.is_none() {
        // Without -i there are no intervals to count: the screen refreshes
        // until q, and --json prints one snapshot (-c was ignored).
        return Err(format!(
            "-c counts intervals: give -i SECONDS too (without -i, the screen runs until q and --json prints one snapshot)\n{}",
            usage()
        ));
    }
    Ok(o)
}

/// Fetches `/api/snapshot` from the dashboard at `addr`.
///
/// # Errors
/// A message saying what went wrong and, when nothing listens there, how
/// to start a dashboard.
pub fn fetch(addr: &str, timeout: Duration) -> Result<Snapshot, String> {
    // One deadline for the name's resolution, the connect, the request
    // and the answer.
    let deadline = std::time::Instant::now() + timeout;
    let targets = resolve(addr, deadline)?;
    if targets.is_empty() {
        return Err(format!("{addr:?} resolves to no address"));
    }
    let mut s = connect_any(&targets, deadline).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                format!("no answer within {timeout:?}")
            }
            _ => e.to_string(),
        };
        format!("no wq dashboard at {addr}: {why}; {HOW_TO_START}")
    })?;
    let io = |e: std::io::Error| format!("wq dashboard at {addr}: {e}");
    let late = || format!("wq dashboard at {addr}: no complete answer within {timeout:?}");
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    if left.is_zero() {
        return Err(late());
    }
    s.set_write_timeout(Some(left)).map_err(io)?;
    // The host is the address connected to, not the name typed: a
    // dashboard on loopback refuses a Host that is not a loopback address
    // (a name that resolves to 127.0.1.1, as Debian's host name does, would
    // be refused by name).
    let host = s.peer_addr().map_err(io)?;
    s.write_all(
        format!("GET /api/snapshot HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .map_err(io)?;
    // The whole answer within `timeout`, and at most MAX_ANSWER bytes: a
    // server that dribbles or never stops cannot hold the monitor. The
    // answer ends at its Content-Length, or where the server closes (a
    // server that keeps the connection open after a whole answer, a proxy
    // that ignores `Connection: close`, is not waited on).
    let mut raw = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // The answer's whole length, once its head is in (looked for in the
    // first [`MAX_HEAD`] bytes only: a server sending megabytes of no
    // head is not searched again at every read).
    let mut len = None;
    let mut looked = 0;
    loop {
        if len.is_none() && looked <= MAX_HEAD && raw.len() > looked {
            match answer_len(&raw[..raw.len().min(MAX_HEAD)]) {
                Ok(l) => len = l,
                // A bad Content-Length: its status and body say more (a
                // proxy's 502), which `parse_response` looks at first.
                Err(_) => break,
            }
            looked = raw.len();
        }
        if len.is_some_and(|len| raw.len() >= len) {
            break;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(late());
        }
        s.set_read_timeout(Some(left)).map_err(io)?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&chunk[..n]);
                if raw.len() > MAX_ANSWER {
                    return Err(format!(
                        "{addr} sent over {} MiB for /api/snapshot, the most wq-monitor reads: \
                         a runtime with hundreds of thousands of live workqueues (each is \
                         listed; read its /metrics, where they are summed by name), or not \
                         a wq dashboard",
                        MAX_ANSWER >> 20
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(late());
            }
            Err(e) => return Err(io(e)),
        }
    }
    parse_response(addr, &raw)
}

/// The longest answer head looked for a Content-Length in.
const MAX_HEAD: usize = 64 * 1024;

/// The whole answer's length in `raw` (head and body), once its head has
/// arrived and says its Content-Length; `Err` for a Content-Length that
/// is not a number, or two that differ (RFC 9110: an answer framed two
/// ways is not read).
fn answer_len(raw: &[u8]) -> Result<Option<usize>, String> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut len = None;
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        let value = value.trim();
        let n = value
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| value.parse::<usize>().ok())
            .flatten()
            .ok_or_else(|| {
                format!(
                    "its answer's Content-Length {:?} is not a length: not a wq dashboard",
                    printable(value)
                )
            })?;
        if len.is_some_and(|l| l != n) {
            return Err(
                "its answer has two Content-Lengths that differ: not a wq dashboard".into(),
            );
        }
        len = Some(n);
    }
    Ok(len.and_then(|n| (split + 4).checked_add(n)))
}

/// `addr`'s socket addresses, resolved by `deadline`: an address (the
/// usual `127.0.0.1:8089`) at once; a name on a thread of its own, given
/// up on at the deadline (`getaddrinfo` has no timeout: a slow resolver
/// held the fetch past it, and froze the screen's refreshes). One such
/// thread at a time: a fetch that finds one still waiting says so.
fn resolve(addr: &str, deadline: std::time::Instant) -> Result<Vec<SocketAddr>, String> {
    static RESOLVING: AtomicBool = AtomicBool::new(false);
    resolve_with(addr, deadline, &RESOLVING, |name| {
        name.to_socket_addrs().map(Iterator::collect)
    })
}

/// [`resolve`] with its resolver (`lookup`) and its flag of a lookup in
/// flight (`busy`) given.
fn resolve_with(
    addr: &str,
    deadline: std::time::Instant,
    busy: &'static AtomicBool,
    lookup: fn(&str) -> std::io::Result<Vec<SocketAddr>>,
) -> Result<Vec<SocketAddr>, String> {
    let bad = |e: std::io::Error| {
        format!("{addr:?} is not an address: {e}; give HOST:PORT, e.g. 127.0.0.1:8089")
    };
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let slow = || {
        format!(
            "{addr:?}: its name did not resolve in time (a slow resolver); give an address, \
             e.g. 127.0.0.1:8089"
        )
    };
    if busy.swap(true, Ordering::Acquire) {
        return Err(slow());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = addr.to_owned();
    let spawned = std::thread::Builder::new()
        .name("wq-monitor-resolve".into())
        .spawn(move || {
            /// Clears `busy` however the lookup ends (a panic too: a flag
            /// left set refused every later lookup).
            struct Done(&'static AtomicBool);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::Release);
                }
            }
            let done = Done(busy);
            let r = lookup(&name);
            drop(done);
            let _ = tx.send(r);
        });
    if spawned.is_err() {
        // No thread: resolved here, unbounded, as before.
        busy.store(false, Ordering::Release);
        return lookup(addr).map_err(bad);
    }
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    match rx.recv_timeout(left) {
        Ok(r) => r.map_err(bad),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(slow()),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(format!(
            "{addr:?}: its lookup failed (the resolver panicked); give an address, e.g. 127.0.0.1:8089"
        )),
    }
}

/// Connects to the first of `targets` that answers (a name such as
/// `localhost` may resolve to `::1` before `127.0.0.1`, where the
/// dashboard listens): the last error if none does.
/// All of them before `deadline`; the error reported is the most telling
/// one (a timeout or another failure over a refusal).
fn connect_any(targets: &[SocketAddr], deadline: std::time::Instant) -> std::io::Result<TcpStream> {
    let mut error: Option<std::io::Error> = None;
    for target in targets {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(target, left) {
            Ok(s) => return Ok(s),
            Err(e) => {
                let refused = e.kind() == std::io::ErrorKind::ConnectionRefused;
                if error.is_none() || !refused {
                    error = Some(e);
                }
            }
        }
    }
    Err(error.unwrap_or_else(|| std::io::ErrorKind::TimedOut.into()))
}

/// The largest answer [`fetch`] reads (a snapshot of a 1,024-pool runtime
/// is well under it; each live workqueue adds about 300 bytes, so about
/// 200,000 of them fill it).
const MAX_ANSWER: usize = 64 << 20;

/// The snapshot in a raw HTTP/1.1 response.
fn parse_response(addr: &str, raw: &[u8]) -> Result<Snapshot, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(format!(
            "{addr} did not answer in HTTP/1.1 (is it a wq dashboard?)"
        ))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        // A dashboard says why in its body (a Host it refuses, a method):
        // shown, made printable and cut short.
        let body =
            printable(&String::from_utf8_lossy(&raw[split + 4..]).replace(['\r', '\n'], " "));
        let body = body.trim();
        let why = if body.is_empty() {
            String::from("is it a wq dashboard (wq::dashboard::serve)?")
        } else {
            let cut: String = body.chars().take(300).collect();
            let more = if cut.len() < body.len() { "..." } else { "" };
            format!("it says: {cut}{more}")
        };
        return Err(format!(
            "{addr} answered {:?} for /api/snapshot; {why}",
            printable(status)
        ));
    }
    if head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:"))
    {
        return Err(format!(
            "{addr} sent a chunked body: not a wq dashboard (it sends a Content-Length)"
        ));
    }
    let mut body = &raw[split + 4..];
    if let Some(len) = answer_len(raw).map_err(|why| format!("{addr}: {why}"))? {
        let want = len - (split + 4);
        if body.len() < want {
            return Err(format!(
                "{addr}: the answer to /api/snapshot was cut short: {} of its {want} bytes \
                 (the service stopped or the connection broke; try again)",
                body.len()
            ));
        }
        body = &body[..want];
    }
    let mut snapshot: Snapshot = serde_json::from_slice(body)
        .map_err(|e| format!("{addr}: /api/snapshot is not a wq snapshot: {e}"))?;
    // The service names itself: what it says is printed to this terminal,
    // so it may carry no escape sequence (a title, a clipboard write).
    snapshot.thread_name = printable(&snapshot.thread_name);
    // So do its queues (`--json` prints their names).
    for q in snapshot
        .queues
        .iter_mut()
        .chain(snapshot.retired_queues.iter_mut())
    {
        q.name = printable(&q.name);
    }
    Ok(snapshot)
}

/// `text` with every control character (escape sequences included), line
/// and paragraph separator and bidirectional control (which makes a name
/// show as another) replaced by `?`: what wq refuses in a queue's name.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            let bidi = matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}'
                    | '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
            );
            if c.is_control() || bidi { '?' } else { c }
        })
        .collect()
}

/// One pool's line.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The pool's id.
    pub pool: usize,
    /// `system 0`.
    pub pod: String,
    /// Its CPUs, `0-3`.
    pub cpus: String,
    /// busy/idle/kicked/max, `+N` for workers out of the count (blocked,
    /// or in a CPU-intensive poll).
    pub workers: String,
    /// Polls started (over the interval, with a previous snapshot).
    pub total: u64,
    /// Tasks alive (spawned on the pool, not yet ended).
    pub alive: usize,
    /// Kicks that took the lock.
    pub kicks: u64,
    /// Of those, coalesced.
    pub coalesced: u64,
    /// Concurrency-management wakeups.
    pub cm_wakeups: u64,
    /// Scheduling delay p95, ns.
    pub p95_ns: u64,
    /// Scheduling delay p99, ns.
    pub p99_ns: u64,
}

/// The rows of `now`, over the interval since `prev` if given.
pub fn rows(prev: Option<&Snapshot>, now: &Snapshot) -> Vec<Row> {
    let shown = match prev {
        Some(p) => now.delta(p),
        None => now.clone(),
    };
    shown
        .pools
        .iter()
        .map(|p| Row {
            pool: p.id,
            pod: format!("{} {}", p.scope, p.pod),
            cpus: p.cpu_list(),
            workers: p.workers.column(p.max_workers),
            total: p.counters.started,
            alive: p.tasks,
            kicks: p.counters.kicks,
            coalesced: p.counters.coalesced_kicks,
            cm_wakeups: p.counters.cm_wakeups,
            p95_ns: p.sched_delay.p95_ns,
            p99_ns: p.sched_delay.p99_ns,
        })
        .collect()
}

const HEADERS: [&str; 11] = [
    "pool",
    "pod",
    "cpus",
    "b/i/k/max",
    "total",
    "alive",
    "kicks",
    "coalesc",
    "cm_wake",
    "p95",
    "p99",
];

fn cells(r: &Row) -> [String; 11] {
    [
        r.pool.to_string(),
        r.pod.clone(),
        r.cpus.clone(),
        r.workers.clone(),
        r.total.to_string(),
        r.alive.to_string(),
        r.kicks.to_string(),
        r.coalesced.to_string(),
        r.cm_wakeups.to_string(),
        fmt_ns(r.p95_ns),
        fmt_ns(r.p99_ns),
    ]
}

/// Which columns are numbers (right-aligned).
const NUMERIC: [bool; 11] = [
    true, false, false, true, true, true, true, true, true, true, true,
];

/// The widest a CPU list is shown in the terminal (the line table shows it
/// whole): a pool of scattered CPUs lists them all.
const CPUS_SHOWN: usize = 24;

/// Each column as wide as its widest cell or header: fixed widths cut a
/// `cache_shard 12` pod to its scope, CPU lists mid-number and counts past
/// seven digits.
fn widths(cells: &[[String; 11]]) -> [usize; 11] {
    let mut w = HEADERS.map(|h| h.chars().count());
    for row in cells {
        for (w, c) in w.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    w
}

/// `list` cut to at most `max` characters at a comma, with `…` for the
/// rest (a CPU is never shown as part of its number).
fn elide_list(list: &str, max: usize) -> String {
    if list.chars().count() <= max {
        return list.to_owned();
    }
    let room = max.saturating_sub(1);
    let cut = list
        .char_indices()
        .take_while(|&(i, _)| i < room)
        .filter(|&(i, c)| c == ',' && i < room)
        .map(|(i, _)| i + 1)
        .last()
        .unwrap_or(0);
    format!("{}…", &list[..cut])
}

/// The line-mode table (`-i`).
pub fn line_table(title: &str, rows: &[Row]) -> String {
    let mut out = format!("{title}\n");
    let body: Vec<[String; 11]> = rows.iter().map(cells).collect();
    let w = widths(&body);
    let fmt = |c: &[String; 11]| {
        let mut line = String::new();
        for (i, cell) in c.iter().enumerate() {
            if i > 0 {
                line.push(' ');
            }
            if NUMERIC[i] {
                line.push_str(&format!("{cell:>width$}", width = w[i]));
            } else if i + 1 < c.len() {
                line.push_str(&format!("{cell:<width$}", width = w[i]));
            } else {
                line.push_str(cell);
            }
        }
        line.push('\n');
        line
    };
    out.push_str(&fmt(&HEADERS.map(str::to_owned)));
    for c in &body {
        out.push_str(&fmt(c));
    }
    out
}

/// The terminal frame: a title line, the pools' table from row `scroll`
/// (clamped here so the last page is full: the keys move it), and a
/// status line that says which pools are shown when not all fit.
pub fn draw(frame: &mut Frame<'_>, title: &str, status: &str, rows: &[Row], scroll: &mut usize) {
    let [top, table, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(
        Paragraph::new(Line::from(title.to_owned()))
            .style(Style::default().add_modifier(Modifier::BOLD)),
        top,
    );
    // Inside the borders, under the header.
    let fits = usize::from(table.height.saturating_sub(3)).max(1);
    *scroll = (*scroll).min(rows.len().saturating_sub(fits));
    let mut body: Vec<[String; 11]> = rows.iter().map(cells).collect();
    for c in &mut body {
        c[2] = elide_list(&c[2], CPUS_SHOWN);
    }
    let w = widths(&body);
    let header = TableRow::new(HEADERS.iter().enumerate().map(|(i, h)| {
        if NUMERIC[i] {
            Line::from(*h).right_aligned()
        } else {
            Line::from(*h)
        }
    }))
    .style(
        Style::default()
            .fg(Color::Yellow)
            .add_modifier(Modifier::BOLD),
    );
    let lines = body.into_iter().map(|c| {
        TableRow::new(c.into_iter().enumerate().map(|(i, cell)| {
            if NUMERIC[i] {
                Line::from(cell).right_aligned()
            } else {
                Line::from(cell)
            }
        }))
    });
    let widths = w.map(|w| Constraint::Length(u16::try_from(w).unwrap_or(u16::MAX)));
    let mut state = TableState::default().with_offset(*scroll);
    frame.render_stateful_widget(
        Table::new(lines, widths)
            .header(header)
            .block(Block::default().borders(Borders::ALL).title(" pools ")),
        table,
        &mut state,
    );
    // The caller's first (a fetch's error, which a narrow terminal would
    // cut off after the scroll's hint).
    let status = if rows.len() > fits {
        format!(
            "{status} · pools {}-{} of {} (↑ ↓ PgUp PgDn Home End)",
            *scroll + 1,
            (*scroll + fits).min(rows.len()),
            rows.len()
        )
    } else {
        status.to_owned()
    };
    frame.render_widget(
        Paragraph::new(Line::from(status)).style(Style::default().fg(Color::DarkGray)),
        bottom,
    );
}

/// The title of a report: the service and what the numbers cover.
pub fn title(addr: &str, now: &Snapshot, prev: Option<&Snapshot>) -> String {
    // A restart between the reads: the rows count since start (`rows`).
    let over = match prev.filter(|p| now.follows(p)) {
        Some(p) => format!(
            "over the last {:.1} s",
            now.uptime.saturating_sub(p.uptime).as_secs_f64()
        ),
        None => format!("since start ({:.0} s)", now.uptime.as_secs_f64()),
    };
    // The CPUs it may use (affinity and quota): what its pools are sized
    // by, worth seeing beside their workers.
    let budget = now
        .cpu_budget
        .map(|n| format!(" · {n} CPUs usable"))
        .unwrap_or_default();
    format!(
        "wq-monitor {addr} · {} · {} pools{budget} · {over}",
        now.thread_name,
        now.pools.len()
    )
}

#[cfg(test)]
#[path = "../../runtime/tests/common/refusing.rs"]
mod refusing;

#[cfg(test)]
mod tests {
    use super::refusing::refusing_addr;
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    /// A service restarted between two reads (a younger uptime): the
    /// line-mode title says "since start", as its rows count (it said
    /// "over the last 0.0 s").
    #[test]
    fn a_restart_between_reads_is_titled_since_start() {
        let secs = std::time::Duration::from_secs;
        let rt = wq::Runtime::new().unwrap();
        let mut old = rt.metrics();
        let mut young = rt.metrics();
        young.uptime = secs(10);
        old.uptime = secs(70);
        let t = title("svc", &young, Some(&old));
        assert!(t.contains("since start"), "{t}");
        let mut earlier = young.clone();
        earlier.uptime = secs(8);
        let t = title("svc", &young, Some(&earlier));
        assert!(t.contains("over the last 2.0 s"), "{t}");
    }

    /// A name that resolves to an address where nothing listens before
    /// the dashboard's: the next one is tried.
    #[test]
    fn every_resolved_address_is_tried() {
        // Held: a listener just dropped frees its port for another test's
        // bind (tests run in parallel).
        let (_held, refused) = refusing_addr();
        let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = live.local_addr().unwrap();
        let s = connect_any(
            &[refused, addr],
            std::time::Instant::now() + Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(s.peer_addr().unwrap(), addr);
        let err = connect_any(
            &[refused],
            std::time::Instant::now() + Duration::from_secs(5),
        )
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// A request's head read from `s` (`None`: the client went first).
    fn read_request(s: &mut std::net::TcpStream) -> Option<Vec<u8>> {
        let mut req = Vec::new();
        let mut b = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return None,
                Ok(n) => req.extend_from_slice(&b[..n]),
            }
        }
        Some(req)
    }

    /// A server on loopback that answers one connection with `answer`.
    fn fake_server(answer: impl FnOnce(std::net::TcpStream) + Send + 'static) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            if let Ok((s, _)) = l.accept() {
                answer(s);
            }
        });
        addr
    }

    #[test]
    fn a_dribbling_or_endless_server_is_given_up_on_with_a_reason() {
        let addr = fake_server(|mut s| {
            for _ in 0..50 {
                if s.write_all(b"H").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let t = std::time::Instant::now();
        let err = fetch(&addr, Duration::from_millis(500)).unwrap_err();
        assert!(err.contains("no complete answer within 500ms"), "{err}");
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
        let addr = fake_server(|mut s| {
            let junk = vec![b'y'; 1 << 20];
            for _ in 0..(MAX_ANSWER >> 20) + 8 {
                if s.write_all(&junk).is_err() {
                    return;
                }
            }
        });
        let err = fetch(&addr, Duration::from_secs(20)).unwrap_err();
        assert!(err.contains("sent over 64 MiB"), "{err}");
    }

    /// A server that sends a whole answer with its Content-Length and
    /// keeps the connection open is not waited on (it was given up on,
    /// "no complete answer"); one whose answer is cut short says so (it
    /// was "not a wq snapshot: EOF while parsing").
    #[test]
    fn an_answer_ends_at_its_content_length() {
        let body = serde_json::to_string(&snapshot()).unwrap();
        let whole = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let answer = whole.clone();
        let addr = fake_server(move |mut s| {
            let _ = s.write_all(answer.as_bytes());
            std::thread::sleep(Duration::from_secs(10));
        });
        let t = std::time::Instant::now();
        let got = fetch(&addr, Duration::from_secs(5)).unwrap();
        assert_eq!(got.thread_name, snapshot().thread_name);
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
        let cut = whole[..whole.len() - 10].to_owned();
        let addr = fake_server(move |mut s| {
            // The request read first: closing on it unread resets the
            // connection.
            let Some(_) = read_request(&mut s) else {
                return;
            };
            let _ = s.write_all(cut.as_bytes());
        });
        let err = fetch(&addr, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("cut short"), "{err}");
    }

    /// An answer framed two ways, or with a length that is no number, is
    /// refused, saying so (it was cut at the first header, or read to the
    /// close).
    #[test]
    fn a_bad_content_length_is_refused_saying_so() {
        let body = serde_json::to_string(&snapshot()).unwrap();
        for (head, says) in [
            (
                format!("content-length: 5\r\ncontent-length: {}", body.len()),
                "differ",
            ),
            ("content-length: +12".to_owned(), "not a length"),
            ("content-length: 5, 5".to_owned(), "not a length"),
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\n{head}\r\n\r\n{body}");
            let err = parse_response("a", raw.as_bytes()).unwrap_err();
            assert!(err.contains(says), "{head}: {err}");
        }
        // A refusal with a bad length is told by its status and reason.
        let answer = "HTTP/1.1 502 Bad Gateway\r\ncontent-length: x\r\n\r\nupstream down";
        let addr = fake_server(move |mut s| {
            if read_request(&mut s).is_some() {
                let _ = s.write_all(answer.as_bytes());
                std::thread::sleep(Duration::from_secs(10));
            }
        });
        let err = fetch(&addr, Duration::from_secs(5)).unwrap_err();
        assert!(
            err.contains("502") && err.contains("upstream down"),
            "{err}"
        );
    }

    /// A lookup that panics leaves no lookup in flight behind: the next
    /// one runs (every later one was refused as still resolving).
    #[test]
    fn a_lookup_that_panics_does_not_refuse_the_next() {
        static BUSY: AtomicBool = AtomicBool::new(false);
        fn panics(_: &str) -> std::io::Result<Vec<SocketAddr>> {
            panic!("a resolver bug")
        }
        fn fine(_: &str) -> std::io::Result<Vec<SocketAddr>> {
            Ok(vec!["127.0.0.1:8089".parse().unwrap()])
        }
        let soon = || std::time::Instant::now() + Duration::from_secs(5);
        let err = resolve_with("dashboard.example:8089", soon(), &BUSY, panics).unwrap_err();
        assert!(err.contains("lookup failed"), "{err}");
        assert_eq!(
            resolve_with("dashboard.example:8089", soon(), &BUSY, fine).unwrap(),
            vec!["127.0.0.1:8089".parse().unwrap()]
        );
    }

    /// A name whose resolver hangs is given up on at the deadline, and a
    /// fetch meanwhile does not start another lookup.
    #[test]
    fn a_slow_resolver_is_given_up_on_at_the_deadline() {
        static BUSY: AtomicBool = AtomicBool::new(false);
        fn hung(_: &str) -> std::io::Result<Vec<SocketAddr>> {
            std::thread::sleep(Duration::from_secs(3));
            Ok(vec![])
        }
        let t = std::time::Instant::now();
        let deadline = t + Duration::from_millis(300);
        let err = resolve_with("dashboard.example:8089", deadline, &BUSY, hung).unwrap_err();
        assert!(err.contains("did not resolve in time"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let later = std::time::Instant::now() + Duration::from_secs(5);
        let err = resolve_with("dashboard.example:8089", later, &BUSY, hung).unwrap_err();
        assert!(err.contains("did not resolve in time"), "{err}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "a second lookup waited"
        );
        // An address needs no lookup.
        assert_eq!(
            resolve_with("127.0.0.1:8089", deadline, &BUSY, hung).unwrap(),
            vec!["127.0.0.1:8089".parse().unwrap()]
        );
    }

    #[test]
    fn options() {
        let o = parse_args(args(&[])).unwrap();
        assert_eq!(
            (o.addr.as_str(), o.interval, o.json, o.count),
            (DEFAULT_ADDR, None, false, None)
        );
        // The dashboard's URL, as http_service prints it, is its address.
        let o = parse_args(args(&["http://127.0.0.1:8089/"])).unwrap();
        assert_eq!(o.addr, "127.0.0.1:8089");
        // With a path, as http_service prints its /metrics URL.
        for url in [
            "http://127.0.0.1:8089/metrics",
            "http://127.0.0.1:8089/api/snapshot",
        ] {
            assert_eq!(parse_args(args(&[url])).unwrap().addr, "127.0.0.1:8089");
        }
        assert!(
            parse_args(args(&["http://"]))
                .unwrap_err()
                .contains("names no address")
        );
        let err = fetch("8089", std::time::Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("give HOST:PORT"), "{err}");
        let o = parse_args(args(&["127.0.0.1:1", "-i", "0.5", "--json", "-c", "3"])).unwrap();
        assert_eq!(
            (o.addr.as_str(), o.interval, o.json, o.count),
            ("127.0.0.1:1", Some(0.5), true, Some(3))
        );
        assert!(
            parse_args(args(&["-i"]))
                .unwrap_err()
                .contains("needs SECONDS")
        );
        assert!(
            parse_args(args(&["-i", "0"]))
                .unwrap_err()
                .contains("from 0.25")
        );
        assert!(
            parse_args(args(&["-i", "1e20"]))
                .unwrap_err()
                .contains("from 0.25"),
            "a finite but huge interval is refused, not a panic later"
        );
        assert!(
            parse_args(args(&["-c", "0"]))
                .unwrap_err()
                .contains("positive")
        );
        assert!(
            parse_args(args(&["--bogus"]))
                .unwrap_err()
                .contains("unknown option")
        );
        assert!(
            parse_args(args(&["a:1", "b:2"]))
                .unwrap_err()
                .contains("one address")
        );
        assert!(
            parse_args(args(&["--help"]))
                .unwrap_err()
                .starts_with("usage: wq-monitor")
        );
        // A count of intervals needs intervals (it was ignored).
        for a in [&["-c", "5"][..], &["--json", "-c", "5"]] {
            assert!(
                parse_args(args(a))
                    .unwrap_err()
                    .contains("give -i SECONDS too"),
                "{a:?}"
            );
        }
    }

    fn snapshot() -> Snapshot {
        let rt = wq::Runtime::builder()
            .topology(wq::Topology::synthetic("pack:2 core:2 pu:1").unwrap())
            .thread_name("mon")
            .latency_capture(true)
            .build()
            .unwrap();
        let h = rt.handle().clone();
        for cpu in [0, 2] {
            rt.block_on(h.spawn_on_cpu(cpu, wq::Scope::Cpu, async {}))
                .unwrap();
        }
        rt.block_on(h.spawn_on_cpu(1, wq::Scope::System, async {}))
            .unwrap();
        // A worker publishes its counts when it goes idle, after the task
        // it ran has finished (and a task may run on another pod's worker:
        // its polls count there).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let m = loop {
            let m = rt.metrics();
            let started: u64 = m.pools.iter().map(|p| p.counters.started).sum();
            if m.pools.len() == 3 && started >= 3 {
                break m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never published:\n{m}"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        // Through JSON, as the monitor gets it.
        serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap()
    }

    #[test]
    fn the_terminal_ui_shows_every_pool() {
        let s = snapshot();
        let r = rows(None, &s);
        assert_eq!(r.len(), 3);
        let mut term = Terminal::new(TestBackend::new(110, 10)).unwrap();
        let t = title("127.0.0.1:9", &s, None);
        term.draw(|f| draw(f, &t, "q quits", &r, &mut 0)).unwrap();
        let buf = term.backend().buffer();
        let lines: Vec<String> = (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_owned())
                    .collect::<String>()
            })
            .collect();
        let screen = lines.join("\n");
        assert!(
            lines[0].starts_with("wq-monitor 127.0.0.1:9 · mon · 3 pools"),
            "{screen}"
        );
        let budget = std::thread::available_parallelism().unwrap().get();
        assert!(
            lines[0].contains(&format!("· {budget} CPUs usable ·")),
            "{screen}"
        );
        assert!(
            lines[2].contains("pool") && lines[2].contains("p99"),
            "{screen}"
        );
        for (i, p) in s.pools.iter().enumerate() {
            let line = &lines[3 + i];
            assert!(line.contains(&format!("{} {}", p.scope, p.pod)), "{screen}");
            assert!(line.contains(&p.cpu_list()), "{screen}");
        }
        assert!(lines[9].starts_with("q quits"), "{screen}");
    }

    fn row(pool: usize, pod: &str, cpus: &str, total: u64) -> Row {
        Row {
            pool,
            pod: pod.to_owned(),
            cpus: cpus.to_owned(),
            workers: "1/0/0/4".to_owned(),
            total,
            alive: 0,
            kicks: 0,
            coalesced: 0,
            cm_wakeups: 0,
            p95_ns: 1_500,
            p99_ns: 2_000,
        }
    }

    fn screen(term: &Terminal<TestBackend>) -> Vec<String> {
        let buf = term.backend().buffer();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_owned())
                    .collect::<String>()
            })
            .collect()
    }

    /// Columns as wide as what they hold: a `cache_shard 12` pod, a long
    /// CPU list and a 12-digit count are shown whole in the line table
    /// (fixed widths cut the pod to its scope, the list mid-number and
    /// pushed the count out of line), every line's columns in line.
    #[test]
    fn columns_fit_what_they_hold() {
        let rows = [
            row(0, "system 0", "0-1", 7),
            row(12, "cache_shard 12", "0-3,8-11,100-107", 123_456_789_012),
        ];
        let table = line_table("t", &rows);
        let lines: Vec<&str> = table.lines().skip(1).collect();
        assert!(lines[2].contains("cache_shard 12 "), "{table}");
        assert!(lines[2].contains(" 0-3,8-11,100-107 "), "{table}");
        assert!(lines[2].contains(" 123456789012 "), "{table}");
        // Every line ends its p99 at the same column.
        let ends: Vec<usize> = lines.iter().map(|l| l.trim_end().len()).collect();
        assert!(ends.iter().all(|&e| e == ends[0]), "{table}");
        // The terminal shows the pod whole, and a CPU list past its
        // room cut at a comma.
        let long: String = (0..40)
            .map(|c| (c * 2).to_string())
            .collect::<Vec<_>>()
            .join(",");
        let mut term = Terminal::new(TestBackend::new(140, 8)).unwrap();
        let rows = [row(12, "cache_shard 12", &long, 5)];
        term.draw(|f| draw(f, "t", "q quits", &rows, &mut 0))
            .unwrap();
        let lines = screen(&term);
        assert!(lines[3].contains("cache_shard 12"), "{lines:#?}");
        assert!(lines[3].contains(" 0,2,4,6,8,10,12,14,16,…"), "{lines:#?}");
    }

    #[test]
    fn a_cpu_list_is_cut_at_a_comma() {
        assert_eq!(elide_list("0-3", 24), "0-3");
        assert_eq!(elide_list("0,2,4,6,8,10,12", 10), "0,2,4,6,…");
        assert_eq!(elide_list("0,2,4,6,8,10,12", 9), "0,2,4,6,…");
        assert_eq!(elide_list("1000-2000,3000", 5), "…");
    }

    /// More pools than rows: the table scrolls, the last page full, and
    /// the status line says which are shown (the pools past the screen
    /// could not be seen at all).
    #[test]
    fn more_pools_than_rows_scroll() {
        let rows: Vec<Row> = (0..40).map(|i| row(i, "cpu", &i.to_string(), 1)).collect();
        // 10 lines: a title, a status line, borders and a header around
        // 5 rows.
        let mut term = Terminal::new(TestBackend::new(110, 10)).unwrap();
        let mut scroll = 0;
        term.draw(|f| draw(f, "t", "q quits", &rows, &mut scroll))
            .unwrap();
        let lines = screen(&term);
        assert!(
            lines[3]
                .trim_start_matches('│')
                .trim_start()
                .starts_with("0 "),
            "{lines:#?}"
        );
        assert!(
            lines[9].starts_with("q quits · pools 1-5 of 40"),
            "{lines:#?}"
        );
        scroll = 1000;
        term.draw(|f| draw(f, "t", "q quits", &rows, &mut scroll))
            .unwrap();
        assert_eq!(scroll, 35, "clamped: the last page full");
        let lines = screen(&term);
        assert!(
            lines[3]
                .trim_start_matches('│')
                .trim_start()
                .starts_with("35 "),
            "{lines:#?}"
        );
        assert!(
            lines[7]
                .trim_start_matches('│')
                .trim_start()
                .starts_with("39 "),
            "{lines:#?}"
        );
        assert!(
            lines[9].starts_with("q quits · pools 36-40 of 40"),
            "{lines:#?}"
        );
        // All fit: no scroll, the status alone.
        let mut scroll = 3;
        term.draw(|f| draw(f, "t", "q quits", &rows[..5], &mut scroll))
            .unwrap();
        assert_eq!(scroll, 0);
        assert!(screen(&term)[9].starts_with("q quits"));
    }

    #[test]
    fn an_interval_shows_the_intervals_counts() {
        let s = snapshot();
        let rows0 = rows(None, &s);
        assert!(rows0.iter().map(|r| r.total).sum::<u64>() >= 3, "{rows0:?}");
        let same = rows(Some(&s), &s);
        assert!(
            same.iter().all(|r| r.total == 0 && r.kicks == 0),
            "{same:?}"
        );
        let table = line_table("t", &rows0);
        assert_eq!(table.lines().count(), 2 + 3);
        assert!(table.lines().nth(1).unwrap().contains("coalesc"));
    }

    #[test]
    fn a_service_that_is_not_there_is_named_with_how_to_start_one() {
        let (_held, addr) = refusing_addr();
        let addr = addr.to_string();
        let e = fetch(&addr, Duration::from_secs(2)).unwrap_err();
        assert!(
            e.starts_with(&format!(
                "no wq dashboard at {addr}: connection refused; start one with"
            )),
            "{e}"
        );
        assert!(
            fetch("nonsense", Duration::from_secs(1))
                .unwrap_err()
                .contains("not an address")
        );
    }

    #[test]
    fn a_service_name_cannot_send_escape_sequences_to_the_terminal() {
        let mut s = snapshot();
        // A window title and a clipboard write, as OSC sequences.
        s.thread_name = "svc\x1b]0;owned\x07\x1b]52;c;ZXZpbA==\x07\n".to_owned();
        let body = serde_json::to_string(&s).unwrap();
        let raw = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let got = parse_response("a", raw.as_bytes()).unwrap();
        assert_eq!(got.thread_name, "svc?]0;owned??]52;c;ZXZpbA==??");
        assert!(!title("a", &got, None).chars().any(char::is_control));
        // A queue's name too, C1 controls (U+009B is a CSI) and DEL
        // included: wq refuses such a name at `build`, but the snapshot may
        // come from anything that answers on the address.
        let rt = wq::Runtime::new().unwrap();
        let q = wq::Workqueue::builder("q-placeholder-x")
            .build(rt.handle())
            .unwrap();
        let body = serde_json::to_string(&rt.metrics()).unwrap().replace(
            "\"q-placeholder-x\"",
            &serde_json::to_string("q\u{9b}31m\u{7f}x\u{202e}y\u{2028}").unwrap(),
        );
        let raw = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let got = parse_response("a", raw.as_bytes()).unwrap();
        assert_eq!(got.queues[0].name, "q?31m?x?y?");
        drop(q);
    }

    #[test]
    fn responses_that_are_not_snapshots_are_refused_with_a_reason() {
        assert!(
            parse_response("a", b"garbage")
                .unwrap_err()
                .contains("HTTP/1.1")
        );
        assert!(
            parse_response("a", b"HTTP/1.1 404 Not Found\r\n\r\nno")
                .unwrap_err()
                .contains("404")
        );
        assert!(
            parse_response("a", b"HTTP/1.1 200 OK\r\n\r\n{}")
                .unwrap_err()
                .contains("not a wq snapshot")
        );
    }

    /// A dashboard's refusal says why in its body: the monitor shows it,
    /// and sends the address it connected to as the Host (a name the
    /// dashboard would refuse is not sent).
    #[test]
    fn a_refusal_is_shown_with_the_dashboards_reason() {
        let addr = fake_server(|mut s| {
            let Some(req) = read_request(&mut s) else {
                return;
            };
            let req = String::from_utf8_lossy(&req).to_string();
            let local = s.local_addr().unwrap();
            let body = if req.contains(&format!("Host: {local}\r\n")) {
                "this wq dashboard listens on loopback;\nask it from there\n".to_owned()
            } else {
                format!("wrong host in {req:?}")
            };
            let _ = write!(
                s,
                "HTTP/1.1 403 Forbidden\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        });
        let err = fetch(&addr, Duration::from_secs(5)).unwrap_err();
        assert!(
            err.contains("403") && err.contains("listens on loopback; ask it from there"),
            "{err}"
        );
    }
}
