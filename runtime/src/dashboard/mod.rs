//! A live latency dashboard served by the runtime itself (cargo feature
//! `dashboard`): hyper on wq, through [`wq::net`](crate::net) and
//! [`wq::hyper`](crate::hyper).
//!
//! | route | what |
//! |---|---|
//! | `/` (and `/app.js`, `/app.css`) | a live page: per-pool p50/p95/p99 scheduling delay over the last five minutes, rates, and the pods drawn as the machine's CPUs with their workers by state; refreshed every second; every asset served from here (no CDN) |
//! | `/api/history?since=SEQ` | the page's feed (JSON): the points after `SEQ`, or, when over [`SINCE_POINTS_MAX`] are, every point kept (a reader keeps those beyond its `SEQ`) |
//! | `/api/snapshot` | [`Snapshot`] as JSON (what `wq-monitor` polls) |
//! | `/metrics` | the Prometheus text format ([`Snapshot::to_prometheus`](crate::metrics::Snapshot::to_prometheus)) |
//!
//! ```no_run
//! #[wq::main]
//! async fn main() -> std::io::Result<()> {
//!     let dashboard = wq::dashboard::serve("127.0.0.1:8089")?;
//!     println!("dashboard on http://{}", dashboard.local_addr());
//!     // ... the service's own work; dropping `dashboard` stops it.
//!     # Ok(())
//! }
//! ```
//!
//! # How it runs
//! 1. [`serve`] binds where its caller says (loopback unless told
//!    otherwise: it shows the process's load, not secrets, but it is
//!    nobody else's business) and spawns, on the current runtime, an
//!    accept loop and a **sampler**.
//! 2. The sampler takes a [`Snapshot`] every
//!    second on the dashboard's own thread (`<name>-dashboard`, after
//!    the runtime's `thread_name`, `wq-dashboard` by default: merging
//!    histograms must not hold a worker, and the application's
//!    `spawn_blocking` jobs filling the blocking pool must not leave the
//!    dashboard blind when it is wanted most), diffs it with the previous
//!    one, and appends the interval's point (per pool: p50/p95/p99
//!    scheduling delay, p99 poll, rates, workers by state) to a ring of
//!    [`HISTORY`] points, the diff without the ring's lock (only the push
//!    takes it). Pages read the ring on that thread too
//!    (`/api/history`: the points asked for are copied under the lock and
//!    serialized after it, so the push waits for a copy at most); no
//!    request takes a snapshot but
//!    `/metrics` and `/api/snapshot`, on that thread too, one at a
//!    time (at most [`JOBS_MAX`] queued; beyond, `503`): a request within
//!    [`SNAPSHOT_FRESH`] of the last snapshot is answered from it, so clients polling fast cost one snapshot per
//!    [`SNAPSHOT_FRESH`], not one each (a snapshot reads every slot's
//!    counters and histograms, and takes the queue list's lock and the
//!    spawn shards' locks). Rendering (JSON,
//!    Prometheus text) happens there too, once per snapshot and format
//!    (`Latest`): a scrape flood costs one render per [`SNAPSHOT_FRESH`].
//! 3. Each connection is a task: HTTP/1.1 (hyper), keep-alive.
//!
//! # Hardening
//! - read-only: `GET` and `HEAD` only, `405` (with `Allow`) otherwise;
//! - on a connection made to a loopback address (bound to loopback, or to
//!   a wildcard address and reached through loopback), it answers only
//!   requests whose `Host` is `localhost` or a loopback address (`403`
//!   otherwise): a web page that rebinds its host name to 127.0.0.1
//!   cannot read it through a browser;
//! - a client has [`HEADER_READ_TIMEOUT`] to send each request head
//!   (`WqTimer`), the head is at most [`MAX_HEAD_BYTES`], a request body
//!   is never read (`413` if one is announced), a response write that
//!   makes no progress for [`WRITE_TIMEOUT`] ends the connection (a
//!   client that stops reading; the kernel too drops data left unread
//!   that long, `TCP_USER_TIMEOUT`, so a closed connection's unsent answer
//!   does not outlive it), and a connection lives at most
//!   [`CONNECTION_LIFETIME`];
//! - at most [`MAX_CONNECTIONS`] at once: beyond, a new connection
//!   closes the least recently active idle one (the connection with no
//!   request in flight and no write waiting for its client, whose last
//!   response was written, or which was accepted, longest ago) if that was at least [`EVICT_IDLE`] ago,
//!   else the connection whose response has been in flight longest, if
//!   for at least [`EVICT_SLOW`] (a reader that takes a byte now and then),
//!   and is itself closed at once otherwise (the
//!   accept loop goes on). Slow or malformed clients cost a bounded number
//!   of small tasks and never a worker, and clients that open connections
//!   and keep them idle cannot lock others out: they lose the oldest;
//! - at most [`MAX_LIVE_FEEDS`] whole history feeds (megabytes each on a
//!   machine of many pools) are alive at once, however many slow readers
//!   hold one: beyond, the whole feed is the last one rendered;
//! - an accept error's warning (one a minute) is written on a thread of
//!   the blocking pool, one at a time: a logger writing to a stalled
//!   stderr holds neither a worker nor the dashboard's thread.
//!
//! [`DashboardHandle`] stops the server when dropped (or
//! [`DashboardHandle::shutdown`]): the accept loop, the sampler and every
//! connection are cancelled.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::Handle;
use crate::hyper::{WqIo, WqTimer};
use crate::metrics::Snapshot;
use crate::task::JoinHandle;

/// Points kept: five minutes at one a second.
pub const HISTORY: usize = 300;
/// Time a client has to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a response write may make no progress (a client that
/// stops reading is cut off, freeing its connection slot).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a connection is served (the page reconnects).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// Connections served at once; more are closed as they come.
pub const MAX_CONNECTIONS: usize = 64;
/// At [`MAX_CONNECTIONS`], how long the least recently active connection
/// must have been without a new request to be closed for a new one.
pub const EVICT_IDLE: Duration = Duration::from_secs(1);
/// At [`MAX_CONNECTIONS`] with none idle, how long a connection's
/// response may have been in flight (its request waiting, its bytes
/// waiting for the client to read them) before it is closed for a new
/// one: a reader that takes a byte now and then keeps its write timeout
/// from firing, but not its slot.
pub const EVICT_SLOW: Duration = Duration::from_secs(30);
/// The largest request head read (hyper's buffer; 431 or a close beyond).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// At most one accept-error warning this often.
const ACCEPT_WARNING_EVERY: Duration = Duration::from_secs(60);
/// Whole history feeds alive at once (rendered at different samples and
/// still held: by the cache, or by responses slow readers have not taken
/// yet); beyond, a request for the whole feed is given the last one
/// rendered, however old (a page takes the points beyond its own newest
/// from it, if any: one that ends before them is no restart).
/// Each is up to every pool's [`HISTORY`] points: megabytes on a machine
/// of many pools, which a reader per connection slot, asking once a
/// sample and reading slowly, held a different one of.
pub const MAX_LIVE_FEEDS: usize = 4;
/// How often the sampler takes a point.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How old a snapshot `/metrics` and `/api/snapshot` answer from may be.
pub const SNAPSHOT_FRESH: Duration = Duration::from_millis(250);
/// The most points after its `since` an `/api/history` request is given
/// in a body of its own; asking for more, it is given the whole feed,
/// whose one body every such request shares (a page polling each second
/// asks for one; a private near-whole copy per request let 64 slow
/// readers hold 64 of them).
pub const SINCE_POINTS_MAX: usize = 10;

const PAGE: &str = include_str!("page.html");
const APP_JS: &str = include_str!("app.js");
const APP_CSS: &str = include_str!("app.css");

/// Serves the dashboard on `addr` from the current runtime. See the module
/// docs.
///
/// It resolves and binds `addr` before it returns, blocking the calling
/// thread meanwhile: a host name is a DNS lookup. Call it at start (in
/// `main`, or `#[wq::main]` before serving), or give an IP address when
/// calling it from a task, whose worker would wait on the lookup.
///
/// # Errors
/// Outside a wq runtime, if `addr` cannot be resolved or bound (the
/// error says which address), or if the runtime is shut down (or shutting
/// down: no dashboard would answer).
pub fn serve(addr: impl ToSocketAddrs + fmt::Debug) -> io::Result<DashboardHandle> {
    let Some(handle) = Handle::try_current() else {
        return Err(io::Error::other(
            "wq::dashboard::serve called outside a wq runtime: call it from a task, inside \
             Runtime::block_on or #[wq::main], or after Runtime::enter()",
        ));
    };
    serve_on(&handle, addr)
}

/// As [`serve`], on `handle`'s runtime (from any thread).
///
/// # Errors
/// As [`serve`]'s, but for the first.
///
/// ```no_run
/// let rt = wq::Runtime::new().unwrap();
/// let d = wq::dashboard::serve_on(rt.handle(), "127.0.0.1:0").unwrap();
/// println!("http://{}", d.local_addr());
/// ```
pub fn serve_on(
    handle: &Handle,
    addr: impl ToSocketAddrs + fmt::Debug,
) -> io::Result<DashboardHandle> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "wq dashboard: could not resolve {addr:?} to an address to listen on: {e} \
                     (give HOST:PORT, as 127.0.0.1:8089)"
                ),
            )
        })?
        .collect();
    let std_listener = std::net::TcpListener::bind(&addrs[..]).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("wq dashboard: could not listen on {addrs:?}: {e}"),
        )
    })?;
    let local_addr = std_listener.local_addr()?;
    let _enter = crate::scheduler::context::enter(handle.scheduler.clone());
    let listener = crate::net::TcpListener::from_std(std_listener)?;
    let timer = WqTimer::new();
    let jobs = start_thread(handle.scheduler.clone())?;
    let shared = Arc::new(Shared {
        handle: handle.clone(),
        jobs,
        history: Mutex::new(History::default()),
        latest: Mutex::new(None),
        whole_history: Mutex::new(None),
        live_feeds: Arc::new(AtomicUsize::new(0)),
        warning: Arc::new(AtomicBool::new(false)),
        conns: AtomicUsize::new(0),
        refused: AtomicU64::new(0),
        evicted: AtomicU64::new(0),
        epoch: Instant::now(),
        instance: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        tasks: Mutex::new(Tasks::default()),
        stopped: AtomicBool::new(false),
    });
    let sampler = handle.spawn(sample(shared.clone()));
    let accept = handle.spawn(accept(shared.clone(), listener, timer));
    {
        let mut t = crate::loom::lock(&shared.tasks);
        t.loops.push(sampler);
        t.loops.push(accept);
    }
    let dashboard = DashboardHandle { shared, local_addr };
    // A runtime shutting down (closed, its driver not yet shut: the
    // listener was taken) refused the loops: no dashboard would answer.
    if handle.scheduler.is_closed() {
        drop(dashboard);
        return Err(io::Error::other(
            "wq dashboard: the runtime is shut down (or shutting down): serve it while the \
             runtime is alive",
        ));
    }
    Ok(dashboard)
}

/// A running dashboard; dropping it stops the server.
#[derive(Debug)]
#[must_use = "the dashboard stops when its handle is dropped"]
pub struct DashboardHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl DashboardHandle {
    /// Where it listens (the port the OS chose, for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the server: the accept loop, the sampler and every
    /// connection are cancelled (their futures are dropped by the
    /// runtime's workers shortly after; the port is free once the accept
    /// loop's is).
    pub fn shutdown(self) {
        drop(self);
    }

    /// Connections being served now.
    pub fn connections(&self) -> usize {
        self.shared.conns.load(Ordering::Relaxed)
    }

    /// Connections closed at once because [`MAX_CONNECTIONS`] were open
    /// and none could be evicted: none had been idle for [`EVICT_IDLE`]
    /// nor had a response in flight for [`EVICT_SLOW`], or twice the limit
    /// were still counted (closed ones whose tasks were not yet dropped).
    pub fn refused_connections(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Connections closed to make room for a new one at
    /// [`MAX_CONNECTIONS`]: the one idle longest (at least [`EVICT_IDLE`]),
    /// else the one whose response has been in flight longest (at least
    /// [`EVICT_SLOW`]: a reader too slow to finish it).
    pub fn evicted_connections(&self) -> u64 {
        self.shared.evicted.load(Ordering::Relaxed)
    }
}

impl Drop for DashboardHandle {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

#[derive(Debug, Default)]
struct Tasks {
    loops: Vec<JoinHandle<()>>,
    conns: HashMap<u64, Conn>,
    next: u64,
}

/// A connection's task, and when its last response was done with (or it
/// was accepted): milliseconds since [`Shared::epoch`], [`BUSY`] while a
/// request is in flight.
#[derive(Debug)]
struct Conn {
    task: JoinHandle<()>,
    active: Arc<AtomicU64>,
    /// Its last write waits for the client to read ([`Watched`]).
    writing: Arc<AtomicBool>,
    /// When (the clock of `active`) its last request came: while a
    /// response is in flight, how long it has been.
    request_at: Arc<AtomicU64>,
}

#[derive(Debug)]
struct Shared {
    handle: Handle,
    /// The dashboard's own thread's queue (module docs: its blocking work
    /// does not wait behind the application's on the blocking pool).
    jobs: std::sync::mpsc::SyncSender<Job>,
    history: Mutex<History>,
    /// The last snapshot taken for a request, and when; held while one is
    /// taken (on the dashboard's thread, never a worker).
    latest: Mutex<Option<Latest>>,
    /// The whole feed (`/api/history` without `since`) as last rendered,
    /// and the history's `revision` it was rendered at: requests between
    /// two samples share one body (up to every pool's 300 points: megabytes
    /// on a machine of many pools, which 64 slow readers each held a copy
    /// of).
    whole_history: Mutex<Option<(u64, Bytes)>>,
    /// Whole feeds alive ([`MAX_LIVE_FEEDS`]): each body's owner counts
    /// itself out when its last clone goes ([`FeedBody`]).
    live_feeds: Arc<AtomicUsize>,
    /// An accept-error warning is being written ([`warn_off_thread`]).
    warning: Arc<AtomicBool>,
    conns: AtomicUsize,
    refused: AtomicU64,
    evicted: AtomicU64,
    /// The clock of [`Conn::active`].
    epoch: Instant,
    /// When this dashboard started (ns since the Unix epoch): tells a page
    /// that the service behind an address restarted ([`Feed::instance`]).
    instance: u64,
    tasks: Mutex<Tasks>,
    stopped: AtomicBool,
}

impl Shared {
    fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        let t = std::mem::take(&mut *crate::loom::lock(&self.tasks));
        for h in t.loops.iter().chain(t.conns.values().map(|c| &c.task)) {
            h.abort();
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// At the connection limit: closes the least recently active
    /// connection if it has been idle for [`EVICT_IDLE`], else the one
    /// whose response has been in flight longest if that is at least
    /// [`EVICT_SLOW`]; whether one was. Past twice the limit (closed
    /// connections whose tasks have not been dropped yet), none is.
    fn evict_idle(&self) -> bool {
        self.evict_at(self.now_ms())
    }

    /// [`Shared::evict_idle`] at time `now` (the clock of
    /// [`Conn::active`]).
    fn evict_at(&self, now: u64) -> bool {
        if self.conns.load(Ordering::Relaxed) >= 2 * MAX_CONNECTIONS {
            return false;
        }
        let idle_before = now.saturating_sub(EVICT_IDLE.as_millis() as u64);
        let slow_before = now.saturating_sub(EVICT_SLOW.as_millis() as u64);
        let victim = {
            let mut t = crate::loom::lock(&self.tasks);
            let in_flight = |c: &Conn| {
                c.writing.load(Ordering::Relaxed) || c.active.load(Ordering::Relaxed) == BUSY
            };
            let live = t.conns.iter().filter(|(_, c)| !c.task.is_finished());
            let idle = live
                .clone()
                .filter(|(_, c)| !in_flight(c))
                .map(|(id, c)| (c.active.load(Ordering::Relaxed), *id))
                .min()
                .filter(|&(active, _)| active <= idle_before);
            let slow = || {
                live.filter(|(_, c)| in_flight(c))
                    .map(|(id, c)| (c.request_at.load(Ordering::Relaxed), *id))
                    .min()
                    .filter(|&(at, _)| at <= slow_before)
            };
            match idle.or_else(slow) {
                Some((_, id)) => t.conns.remove(&id),
                None => None,
            }
        };
        // Aborted outside the lock (the cancel may kick a pool); its task's
        // guard counts it out when a worker drops it.
        let Some(victim) = victim else {
            return false;
        };
        victim.task.abort();
        self.evicted.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// One pool's figures over one sampling interval.
#[derive(Clone, Debug, Serialize)]
struct PoolPoint {
    id: usize,
    /// Scheduling delay quantiles over the interval, ns (0: no poll).
    p50: u64,
    p95: u64,
    p99: u64,
    /// Poll duration p99 over the interval, ns.
    poll_p99: u64,
    /// Per second.
    started: f64,
    kicks: f64,
    coalesced: f64,
    cm_wakeups: f64,
    /// Workers now.
    busy: usize,
    idle: usize,
    kicked: usize,
    blocked: usize,
    cpu_intensive: usize,
    tasks: usize,
}

#[derive(Clone, Debug, Serialize)]
struct Point {
    seq: u64,
    /// Seconds since the runtime was built.
    t: f64,
    pools: Vec<PoolPoint>,
}

#[derive(Clone, Debug, Serialize)]
struct PoolInfo {
    id: usize,
    scope: crate::Scope,
    pod: usize,
    cpus: Vec<usize>,
    max_workers: usize,
    highpri: bool,
    strict: bool,
}

#[derive(Debug, Default)]
struct History {
    points: VecDeque<Point>,
    pools: Vec<PoolInfo>,
    next_seq: u64,
    /// Counts the samples added: what a cached feed is keyed on (the
    /// first sample adds pools but no point, so `next_seq` does not say
    /// the feed changed).
    revision: u64,
    last: Option<Snapshot>,
}

/// `/api/history`'s answer: copied out of the history under its lock,
/// serialized after (the sampler's push waits only for the copy).
#[derive(Serialize)]
struct Feed<'a> {
    thread_name: &'a str,
    /// The machine's CPUs (OS indices) as the runtime sees them.
    cpus: Vec<usize>,
    latency_capture: bool,
    pools: Vec<PoolInfo>,
    points: Vec<Point>,
    /// The seq the next point will have. A page that has seen a point at
    /// or beyond it was given an older feed (the last whole one rendered,
    /// while [`MAX_LIVE_FEEDS`] are alive) and takes nothing from it; a
    /// restart is told by `instance`.
    next_seq: u64,
    /// This dashboard's start: a page that held another's is reading a
    /// restarted service and starts over, even one that has made more
    /// points since than the page had seen (a background tab polled
    /// rarely).
    instance: u64,
}

/// A sample made ready outside the history's lock (its diff merges
/// histograms: module docs).
struct Prepared {
    /// The point against the last sample (none for the first).
    pools: Option<Vec<PoolPoint>>,
    t: f64,
    infos: Vec<PoolInfo>,
}

impl History {
    /// The point `now` makes after `last` (no lock held).
    fn prepare(last: Option<&Snapshot>, now: &Snapshot) -> Prepared {
        let pools = last.map(|last| {
            let d = now.delta(last);
            let secs = d.interval.map_or(1.0, |i| i.as_secs_f64()).max(1e-3);
            d.pools
                .iter()
                .map(|p| PoolPoint {
                    id: p.id,
                    p50: p.sched_delay.p50_ns,
                    p95: p.sched_delay.p95_ns,
                    p99: p.sched_delay.p99_ns,
                    poll_p99: p.poll_time.p99_ns,
                    // Polls started: the interval's scheduling-delay
                    // samples, one per poll and exact (workers publish
                    // `started` every 64 polls or when idle, so a busy
                    // worker's rate read in steps of 64: 192 and 256 in
                    // turn for 200/s).
                    started: p.sched_delay.count as f64 / secs,
                    kicks: p.counters.kicks as f64 / secs,
                    coalesced: p.counters.coalesced_kicks as f64 / secs,
                    cm_wakeups: p.counters.cm_wakeups as f64 / secs,
                    busy: p.workers.busy,
                    idle: p.workers.idle,
                    kicked: p.workers.kicked,
                    blocked: p.workers.blocked,
                    cpu_intensive: p.workers.cpu_intensive,
                    tasks: p.tasks,
                })
                .collect()
        });
        let infos = now
            .pools
            .iter()
            .map(|p| PoolInfo {
                id: p.id,
                scope: p.scope,
                pod: p.pod,
                cpus: p.cpus.clone(),
                max_workers: p.max_workers,
                highpri: p.highpri,
                strict: p.strict,
            })
            .collect();
        Prepared {
            pools,
            t: now.uptime.as_secs_f64(),
            infos,
        }
    }

    /// Adds a prepared sample, `now` being the snapshot it was made of.
    fn add(&mut self, p: Prepared, now: Snapshot) {
        if let Some(pools) = p.pools {
            self.points.push_back(Point {
                seq: self.next_seq,
                t: p.t,
                pools,
            });
            self.next_seq += 1;
            while self.points.len() > HISTORY {
                self.points.pop_front();
            }
        }
        self.pools = p.infos;
        self.last = Some(now);
        self.revision += 1;
    }

    #[cfg(test)]
    fn push(&mut self, now: Snapshot) {
        let p = History::prepare(self.last.as_ref(), &now);
        self.add(p, now);
    }
}

/// The snapshot requests are answered from, and its renders, each made
/// once: a flood of scrapes within [`SNAPSHOT_FRESH`] costs one snapshot
/// and one render per format, not one each (the dashboard's one thread
/// shares the machine with the workers).
#[derive(Debug)]
struct Latest {
    at: Instant,
    snapshot: Arc<Snapshot>,
    prometheus: Option<Bytes>,
    json: Option<Bytes>,
}

/// A format a snapshot is served in.
#[derive(Clone, Copy, Debug)]
enum Format {
    Prometheus,
    Json,
}

/// The snapshot no older than [`SNAPSHOT_FRESH`] rendered in `format`, on
/// the dashboard's thread (module docs), rendered once per snapshot;
/// `None` if the thread is busy or gone. A JSON error is the request's
/// `Err`.
async fn rendered(shared: &Arc<Shared>, format: Format) -> Option<Result<Bytes, String>> {
    let s = shared.clone();
    off_worker(shared, move || s.render(format)).await
}

/// Writes a warning (`log`) on a thread of the blocking pool, one at a
/// time (`writing`: one still being written, the next is not started: its
/// errors are counted into the one after). A logger writing to a stalled
/// stderr then holds one blocking thread, not a worker, and not the
/// dashboard's thread, whose samples and renders the dashboard lives by
/// (it went blind, and its requests waited, just when the process was
/// out of descriptors).
fn warn_off_thread(writing: &Arc<AtomicBool>, warn: impl FnOnce() + Send + 'static) {
    /// Clears `writing` when the warning is written, or dropped unwritten
    /// (a runtime shutting down refuses the job).
    struct Written(Arc<AtomicBool>);
    impl Drop for Written {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Relaxed);
        }
    }
    writing.store(true, Ordering::Relaxed);
    let written = Written(writing.clone());
    drop(crate::spawn_blocking(move || {
        let _written = written;
        warn();
    }));
}

/// A whole history feed's bytes, counted alive in [`Shared::live_feeds`]
/// until the last clone of its `Bytes` goes (the cache's, and those of
/// responses not yet written).
struct FeedBody {
    body: Vec<u8>,
    live: Arc<AtomicUsize>,
}

impl FeedBody {
    fn counted(body: Vec<u8>, live: &Arc<AtomicUsize>) -> Bytes {
        live.fetch_add(1, Ordering::Relaxed);
        Bytes::from_owner(FeedBody {
            body,
            live: live.clone(),
        })
    }
}

impl AsRef<[u8]> for FeedBody {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

impl Drop for FeedBody {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// `/api/history`'s body: the points after `since` if they are at
    /// most [`SINCE_POINTS_MAX`], else all of them (on the dashboard's
    /// thread: up to every pool's 300 points).
    fn history_body(&self, since: Option<u64>) -> Result<Bytes, serde_json::Error> {
        // The whole feed is rendered once per sample (`whole_history`; the
        // sampler adds samples meanwhile: a body is cached under the
        // history's `revision`), and served for every request it answers:
        // one without `since`, or with a `since` that leaves more than
        // `SINCE_POINTS_MAX` points after it (`?since=0`, or the oldest
        // point's seq, rendered a copy of nearly the whole feed per
        // request, which 64 slow readers each held). Only the dashboard's
        // thread takes this lock.
        let mut whole = crate::loom::lock(&self.whole_history);
        let (pools, points, next_seq, revision, all) = {
            let h = crate::loom::lock(&self.history);
            let all = since.is_none_or(|since| {
                // Points are in seq order: count from the newest.
                h.points
                    .iter()
                    .rev()
                    .take_while(|p| p.seq > since)
                    .take(SINCE_POINTS_MAX + 1)
                    .count()
                    > SINCE_POINTS_MAX
            });
            if all
                && let Some((seq, body)) = whole.as_ref()
                && (*seq == h.revision || self.live_feeds.load(Ordering::Relaxed) >= MAX_LIVE_FEEDS)
            {
                // The current feed, or the last one rendered while as many
                // as may be are alive (`MAX_LIVE_FEEDS`): only this thread
                // renders them, and the count only falls meanwhile.
                return Ok(body.clone());
            }
            let points = h
                .points
                .iter()
                .filter(|p| all || since.is_none_or(|since| p.seq > since))
                .cloned()
                .collect();
            (h.pools.clone(), points, h.next_seq, h.revision, all)
        };
        let feed = Feed {
            thread_name: &self.handle.scheduler.config.thread_name,
            cpus: self
                .handle
                .topology()
                .cpus()
                .iter()
                .map(|c| c.os_index)
                .collect(),
            latency_capture: self.handle.scheduler.config.latency_capture,
            pools,
            points,
            next_seq,
            instance: self.instance,
        };
        let body = serde_json::to_vec(&feed)?;
        if !all {
            return Ok(Bytes::from(body));
        }
        let body = FeedBody::counted(body, &self.live_feeds);
        *whole = Some((revision, body.clone()));
        Ok(body)
    }

    /// [`rendered`]'s job.
    fn render(&self, format: Format) -> Result<Bytes, String> {
        let mut latest = crate::loom::lock(&self.latest);
        let fresh = matches!(&*latest, Some(l) if l.at.elapsed() < SNAPSHOT_FRESH);
        if !fresh {
            // Its age counts from when it was taken, not from when the
            // taking began (a snapshot can wait up to a second for a queue
            // being dropped: it was stale on arrival, and each request
            // then took its own).
            let snapshot = Arc::new(self.handle.metrics());
            *latest = Some(Latest {
                at: Instant::now(),
                snapshot,
                prometheus: None,
                json: None,
            });
        }
        let Latest {
            snapshot,
            prometheus,
            json,
            ..
        } = latest.as_mut().expect("made above");
        let cache = match format {
            Format::Prometheus => prometheus,
            Format::Json => json,
        };
        if let Some(body) = cache {
            return Ok(body.clone());
        }
        let body = match format {
            Format::Prometheus => Bytes::from(snapshot.to_prometheus()),
            Format::Json => serde_json::to_vec(&**snapshot)
                .map(Bytes::from)
                .map_err(|e| e.to_string())?,
        };
        *cache = Some(body.clone());
        Ok(body)
    }
}

/// Work for the dashboard's thread.
type Job = Box<dyn FnOnce() + Send>;

/// Jobs queued for the dashboard's thread at most; beyond, requests get
/// `503` (a client pipelining snapshot requests cannot queue without
/// bound).
pub const JOBS_MAX: usize = 64;

/// Starts the dashboard's thread: it runs queued jobs until every sender
/// is gone (the dashboard's shared state dropped). Like the runtime's own
/// threads, it runs at the process's priority on every CPU, whatever its
/// creator's (a high-priority worker's nice -20, a worker's one CPU).
fn start_thread(
    scheduler: Arc<crate::scheduler::Scheduler>,
) -> io::Result<std::sync::mpsc::SyncSender<Job>> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(JOBS_MAX);
    std::thread::Builder::new()
        .name(format!("{}-dashboard", scheduler.config.thread_name))
        .spawn(move || {
            scheduler.bind_to_every_cpu();
            scheduler.normal_priority();
            // Not kept: the thread outlives the runtime when a handle does.
            drop(scheduler);
            for job in rx {
                // A panic in a render is that request's failure only (its
                // reply sender is dropped: the request gets 503).
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        })
        .map(|_| tx)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("wq dashboard: could not start its thread: {e}; check the process's thread limit (`ulimit -u`)"),
            )
        })
}

/// Runs `f` on the dashboard's thread and waits for its result without
/// holding a worker; `None` if the thread's queue is full or the job
/// panicked.
async fn off_worker<T: Send + 'static>(
    shared: &Shared,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = futures::channel::oneshot::channel();
    shared.jobs.try_send(reply_job(tx, f)).ok()?;
    rx.await.ok()
}

/// The job that runs `f` and sends its result to `tx`, unless the
/// request that waits for it is gone (its connection dropped: evicted,
/// over its lifetime, the dashboard stopped): nothing is rendered for
/// nobody. A client that hangs up is found only when its answer is
/// written (the connection takes a half-closed socket, and a read cannot
/// tell that from a hang-up), so its job runs: a clone of a cached render,
/// or one render per 250 ms shared by every request (a client that sent
/// requests and hung up at once, each rendered alone, once kept the
/// thread's queue full: 503 for every other request, and the sampler
/// lost its points).
fn reply_job<T: Send + 'static>(
    tx: futures::channel::oneshot::Sender<T>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Job {
    Box::new(move || {
        if !tx.is_canceled() {
            let _ = tx.send(f());
        }
    })
}

/// How soon the sampler tries again when the dashboard thread's queue was
/// full (requests queued to the limit): a point a little late, not lost.
const SAMPLE_RETRY: Duration = Duration::from_millis(50);

async fn sample(shared: Arc<Shared>) {
    loop {
        let s = shared.clone();
        let (done, sampled) = futures::channel::oneshot::channel::<()>();
        // The snapshot and its diff, on the dashboard's thread: neither
        // holds a worker.
        let job: Job = Box::new(move || {
            let snap = s.handle.metrics();
            // Only this sampler writes `last`: taken out, diffed
            // without the lock (a request for the feed waits only for
            // the push), and put back with the new point.
            let last = crate::loom::lock(&s.history).last.take();
            let point = History::prepare(last.as_ref(), &snap);
            drop(last);
            crate::loom::lock(&s.history).add(point, snap);
            let _ = done.send(());
        });
        if shared.jobs.try_send(job).is_ok() {
            // (A panicked sample is that point's loss only.)
            let _ = sampled.await;
            crate::time::sleep(SAMPLE_EVERY).await;
        } else {
            crate::time::sleep(SAMPLE_RETRY).await;
        }
    }
}

async fn accept(shared: Arc<Shared>, listener: crate::net::TcpListener, timer: WqTimer) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(timer)
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        // A client that shuts its writing side after its request (`nc
        // -N`, socat, a script's `shutdown(SHUT_WR)`) still gets its
        // answer: hyper's default closed such a connection unanswered. A
        // client gone altogether is found when the answer is written (a
        // render is cached: its job costs a clone).
        .half_close(true)
        .keep_alive(true);
    // Accept errors not logged since the last warning, and when the next
    // may be written.
    let (mut unlogged, mut next_warning) = (0u64, Instant::now());
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of fds: back off, go on. One warning a minute at
                // most, written off the workers and off the dashboard's
                // thread (`warn_off_thread`).
                unlogged += 1;
                if Instant::now() >= next_warning && !shared.warning.load(Ordering::Relaxed) {
                    let n = std::mem::take(&mut unlogged);
                    next_warning = Instant::now() + ACCEPT_WARNING_EVERY;
                    warn_off_thread(&shared.warning, move || {
                        log::warn!(
                            "wq dashboard: accept: {e} ({n} accept errors since the last warning, one a minute at most)"
                        );
                    });
                }
                crate::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if shared.stopped.load(Ordering::Relaxed) {
            return;
        }
        // Relaxed: a count, checked and changed only here and by the
        // connection tasks' guards; a momentary overshoot by one is
        // harmless.
        if shared.conns.load(Ordering::Relaxed) >= MAX_CONNECTIONS && !shared.evict_idle() {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        shared.conns.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        // The kernel drops what a client leaves unread for the write
        // timeout, after the stream's close too (else the answer stays
        // in kernel memory while the client's kernel answers its window
        // probes: minutes, per connection the cap has already freed).
        let _ = stream.set_tcp_user_timeout(Some(WRITE_TIMEOUT));
        // Made to a loopback address: requests must name a local host
        // ([`crate::hyper::is_local_request`]). Per connection: a listener on a wildcard
        // address is reached through loopback too.
        let loopback = stream
            .local_addr()
            .map_or(true, |a| a.ip().to_canonical().is_loopback());
        let conn_shared = shared.clone();
        let active = Arc::new(AtomicU64::new(shared.now_ms()));
        let writing = Arc::new(AtomicBool::new(false));
        let request_at = Arc::new(AtomicU64::new(shared.now_ms()));
        let conn_request_at = request_at.clone();
        let conn_active = active.clone();
        let conn = http.serve_connection(
            Watched {
                io: WqIo::new(stream).write_timeout(WRITE_TIMEOUT),
                active: active.clone(),
                writing: writing.clone(),
                epoch: shared.epoch,
            },
            hyper::service::service_fn(move |req| {
                let s = conn_shared.clone();
                // Busy until its response body is written (or dropped):
                // never evicted meanwhile.
                conn_request_at.store(s.now_ms(), Ordering::Relaxed);
                conn_active.store(BUSY, Ordering::Relaxed);
                let done = conn_active.clone();
                async move {
                    let reply = route(&s, loopback, req).await;
                    Ok::<_, std::convert::Infallible>(reply.map(|body| Stamped {
                        body,
                        active: done,
                        epoch: s.epoch,
                    }))
                }
            }),
        );
        // The id first, the spawn outside the lock (a kick takes the pool
        // lock: this lock nests nothing), then the handle in.
        let id = {
            let mut t = crate::loom::lock(&shared.tasks);
            t.next += 1;
            t.next
        };
        struct Done(Arc<Shared>, u64);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.conns.fetch_sub(1, Ordering::Relaxed);
                // Its own handle, dropped after the lock is.
                let own = crate::loom::lock(&self.0.tasks).conns.remove(&self.1);
                drop(own);
            }
        }
        // Made before the spawn and moved into the task: a task aborted
        // before its first poll (evicted while queued behind busy
        // workers) drops its future unpolled, and a guard made inside it
        // never counted the connection out (`conns` leaked toward the
        // limit at which every newcomer is refused).
        let done = Done(shared.clone(), id);
        let task = shared.handle.spawn(async move {
            let _done = done;
            let _ = crate::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
        let mut t = crate::loom::lock(&shared.tasks);
        if shared.stopped.load(Ordering::Relaxed) {
            // `stop` took the list before this one was in it.
            drop(t);
            task.abort();
            return;
        }
        // A connection that ended before its handle got here left it
        // behind: prune those now and then.
        if id.is_multiple_of(64) {
            t.conns.retain(|_, c| !c.task.is_finished());
        }
        t.conns.insert(
            id,
            Conn {
                task,
                active,
                writing,
                request_at,
            },
        );
    }
}

type Reply = Response<Full<Bytes>>;

/// [`Conn::active`] while a request is in flight (until its response body
/// is written or dropped).
const BUSY: u64 = u64::MAX;

/// A connection's IO that tells the eviction when it writes: a write or
/// flush that waits for the client to read marks the connection busy
/// (hyper drops a response body, [`Stamped`], when it has queued the last
/// chunk, not when the bytes have gone: a slow reader of a large answer
/// looked idle), and a write that moves bytes stamps it active. A flush
/// that returns stamps nothing: hyper flushes on every turn of its loop,
/// each byte a client trickles in included, and such a client looked
/// active for good (a review found it).
struct Watched<T> {
    io: T,
    active: Arc<AtomicU64>,
    writing: Arc<AtomicBool>,
    epoch: Instant,
}

impl<T> Watched<T> {
    /// After a write or flush: `pending`, whether it waits for the client;
    /// `wrote`, whether it moved bytes.
    fn track(&self, pending: bool, wrote: bool) {
        self.writing.store(pending, Ordering::Relaxed);
        if wrote {
            let now = self.epoch.elapsed().as_millis() as u64;
            let _ = self
                .active
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |a| {
                    (a != BUSY).then_some(now)
                });
        }
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Watched<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Watched<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = std::pin::Pin::new(&mut this.io).poll_write(cx, buf);
        this.track(poll.is_pending(), wrote(&poll));
        poll
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = std::pin::Pin::new(&mut this.io).poll_flush(cx);
        this.track(poll.is_pending(), false);
        poll
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = std::pin::Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.track(poll.is_pending(), wrote(&poll));
        poll
    }
}

/// Whether a write moved bytes.
fn wrote(poll: &std::task::Poll<io::Result<usize>>) -> bool {
    matches!(poll, std::task::Poll::Ready(Ok(n)) if *n > 0)
}

/// A response body that stamps its connection active when it is done
/// with (written to the end, or dropped with the connection).
struct Stamped {
    body: Full<Bytes>,
    active: Arc<AtomicU64>,
    epoch: Instant,
}

impl hyper::body::Body for Stamped {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Stamped {
    fn drop(&mut self) {
        self.active
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

fn reply(status: StatusCode, kind: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

async fn route(shared: &Arc<Shared>, loopback: bool, req: Request<Incoming>) -> Reply {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "the wq dashboard is read-only: GET or HEAD\n",
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if loopback && !crate::hyper::is_local_request(&req) {
        return reply(
            StatusCode::FORBIDDEN,
            TEXT,
            "this wq dashboard listens on loopback and answers requests for localhost or a \
             loopback address only (another host name here means a page rebinding its DNS to \
             this machine); to serve other hosts, bind it to their address\n",
        );
    }
    let announced_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    if announced_body {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            TEXT,
            "the wq dashboard reads no request body\n",
        );
    }
    match req.uri().path() {
        "/" | "/index.html" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        "/app.js" => reply(StatusCode::OK, "text/javascript; charset=utf-8", APP_JS),
        "/app.css" => reply(StatusCode::OK, "text/css; charset=utf-8", APP_CSS),
        "/metrics" => match rendered(shared, Format::Prometheus).await {
            Some(Ok(text)) => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            ),
            Some(Err(e)) => reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{e}\n")),
            None => unavailable(),
        },
        "/api/snapshot" => match rendered(shared, Format::Json).await {
            Some(Ok(body)) => reply(StatusCode::OK, JSON, body),
            Some(Err(e)) => reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{e}\n")),
            None => unavailable(),
        },
        "/api/history" => {
            let since = match query_u64(req.uri().query(), "since") {
                Ok(since) => since,
                Err(why) => return reply(StatusCode::BAD_REQUEST, TEXT, format!("{why}\n")),
            };
            // Serialized on the dashboard's thread: up to HISTORY points
            // per pool, no work for a worker.
            let s = shared.clone();
            let body = off_worker(shared, move || s.history_body(since)).await;
            match body {
                Some(Ok(body)) => reply(StatusCode::OK, JSON, body),
                Some(Err(e)) => reply(StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{e}\n")),
                None => unavailable(),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "no such page: try /, /metrics, /api/snapshot, /api/history\n",
        ),
    }
}

fn unavailable() -> Reply {
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        TEXT,
        "the dashboard is busy or shutting down; try again\n",
    )
}

/// `key=<u64>` from a query string.
fn query_u64(query: Option<&str>, key: &str) -> Result<Option<u64>, String> {
    let Some((_, v)) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
    else {
        return Ok(None);
    };
    v.parse()
        .map(Some)
        .map_err(|_| format!("{key}={v:?}: give a whole number (a point's seq), or leave it out"))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A job whose request is gone does not run its render; one whose
    /// request waits does, and answers it.
    #[test]
    fn a_job_for_a_request_that_is_gone_renders_nothing() {
        let ran = Arc::new(AtomicBool::new(false));
        let (tx, rx) = futures::channel::oneshot::channel::<u32>();
        drop(rx);
        let r = ran.clone();
        reply_job(tx, move || {
            r.store(true, Ordering::SeqCst);
            1
        })();
        assert!(!ran.load(Ordering::SeqCst), "rendered for nobody");
        let (tx, mut rx) = futures::channel::oneshot::channel::<u32>();
        reply_job(tx, || 7)();
        assert_eq!(rx.try_recv().unwrap(), Some(7));
    }

    /// At the limit, a connection with a request in flight (a response
    /// still being written to a slow reader, a request waiting for the
    /// dashboard's thread) is never the one closed, however long ago it
    /// began: the oldest idle one is.
    #[test]
    fn eviction_skips_connections_with_a_request_in_flight() {
        let rt = crate::Runtime::new().unwrap();
        let d = serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        let shared = d.shared.clone();
        std::thread::sleep(Duration::from_millis(1100));
        let fake = |active: u64, writing: bool| Conn {
            task: rt.spawn(std::future::pending::<()>()),
            active: Arc::new(AtomicU64::new(active)),
            writing: Arc::new(AtomicBool::new(writing)),
            request_at: Arc::new(AtomicU64::new(0)),
        };
        {
            let mut t = crate::loom::lock(&shared.tasks);
            // Accepted at the start, then busy ever since; its response
            // handed over 2 ms after the start, its bytes still waiting
            // for a slow reader (it was closed mid-response); idle since
            // 5 ms after the start; idle just now.
            t.conns.insert(1_000_001, fake(BUSY, false));
            t.conns.insert(1_000_004, fake(2, true));
            t.conns.insert(1_000_002, fake(5, false));
            t.conns.insert(1_000_003, fake(shared.now_ms(), false));
        }
        assert!(shared.evict_idle());
        let t = crate::loom::lock(&shared.tasks);
        assert!(
            t.conns.contains_key(&1_000_001),
            "the busy connection was closed"
        );
        assert!(
            t.conns.contains_key(&1_000_004),
            "the connection writing to a slow reader was closed"
        );
        assert!(
            !t.conns.contains_key(&1_000_002),
            "the oldest idle one stays"
        );
        assert!(t.conns.contains_key(&1_000_003));
    }

    /// A snapshot is rendered once per format: requests within
    /// [`SNAPSHOT_FRESH`] of it share its bytes; a stale one is taken and
    /// rendered anew.
    #[test]
    fn renders_are_made_once_per_snapshot_and_format() {
        let rt = crate::Runtime::new().unwrap();
        let d = serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        let shared = d.shared.clone();
        let make_fresh = || {
            if let Some(l) = crate::loom::lock(&shared.latest).as_mut() {
                l.at = Instant::now();
            }
        };
        let prom = shared.render(Format::Prometheus).unwrap();
        make_fresh();
        let again = shared.render(Format::Prometheus).unwrap();
        assert_eq!(prom.as_ptr(), again.as_ptr(), "rendered twice");
        make_fresh();
        let json = shared.render(Format::Json).unwrap();
        assert!(json.starts_with(b"{"), "{json:?}");
        make_fresh();
        assert_eq!(shared.render(Format::Json).unwrap().as_ptr(), json.as_ptr());
        // Stale: a new snapshot, rendered anew.
        if let Some(l) = crate::loom::lock(&shared.latest).as_mut() {
            l.at -= SNAPSHOT_FRESH + Duration::from_millis(1);
        }
        let newer = shared.render(Format::Prometheus).unwrap();
        assert_ne!(
            newer.as_ptr(),
            prom.as_ptr(),
            "a stale snapshot's render was served"
        );
    }

    /// Slow readers each holding a whole feed of a different sample keep
    /// at most [`MAX_LIVE_FEEDS`] alive: beyond, a request is given the
    /// last one rendered; once they are read (dropped), the next sample's
    /// is rendered again.
    #[test]
    fn whole_feeds_alive_at_once_are_bounded() {
        let rt = crate::Runtime::new().unwrap();
        let d = serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        let shared = d.shared.clone();
        let next_sample = || crate::loom::lock(&shared.history).revision += 1;
        let mut held: Vec<Bytes> = Vec::new();
        for _ in 0..MAX_LIVE_FEEDS + 3 {
            next_sample();
            held.push(shared.history_body(None).unwrap());
            assert!(
                shared.live_feeds.load(Ordering::Relaxed) <= MAX_LIVE_FEEDS,
                "{} feeds alive",
                shared.live_feeds.load(Ordering::Relaxed)
            );
        }
        let mut distinct: Vec<*const u8> = held.iter().map(|b| b.as_ptr()).collect();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            MAX_LIVE_FEEDS,
            "one per sample until the bound"
        );
        // Read by their clients: the next sample's feed is its own again
        // (not the cached one, still alive: addresses of freed ones may be
        // reused).
        held.clear();
        let cached = crate::loom::lock(&shared.whole_history)
            .as_ref()
            .map(|(_, b)| b.as_ptr())
            .unwrap();
        next_sample();
        let fresh = shared.history_body(None).unwrap();
        assert_ne!(fresh.as_ptr(), cached, "an old feed served with none held");
        drop(fresh);
        assert_eq!(
            shared.live_feeds.load(Ordering::Relaxed),
            1,
            "the cache's own"
        );
    }

    /// An accept-error warning is written on a blocking-pool thread: a
    /// logger that never returns holds neither a worker nor the dashboard's
    /// thread, which goes on rendering; no second warning is started while
    /// one is being written.
    #[test]
    fn a_stalled_warning_holds_neither_a_worker_nor_the_dashboards_thread() {
        let rt = crate::Runtime::new().unwrap();
        let d = serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        let shared = d.shared.clone();
        let (release, stalled) = std::sync::mpsc::channel::<()>();
        let s = shared.clone();
        rt.block_on(async move {
            warn_off_thread(&s.warning, move || {
                let _ = stalled.recv();
            });
            assert!(s.warning.load(Ordering::Relaxed), "being written");
            let rendered =
                crate::time::timeout(Duration::from_secs(10), rendered(&s, Format::Prometheus))
                    .await
                    .expect("the dashboard's thread waited for the warning");
            assert!(rendered.unwrap().is_ok());
        });
        release.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.warning.load(Ordering::Relaxed) {
            assert!(
                Instant::now() < deadline,
                "the written warning stays marked"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The whole history feed is rendered once per sampled point: requests
    /// between two points share one body, those asking for more than
    /// [`SINCE_POINTS_MAX`] points too; a `since` feed of fewer is its own.
    #[test]
    fn the_whole_history_is_rendered_once_per_point() {
        let rt = crate::Runtime::new().unwrap();
        let d = serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        let shared = d.shared.clone();
        // Between samples (the sampler may add one between two calls:
        // then a third call shares the second's body).
        let same = (0..3)
            .map(|_| shared.history_body(None).unwrap())
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w[0].as_ptr() == w[1].as_ptr());
        assert!(same, "rendered anew for each request");
        // Rendered in full at the first point kept, at once after its
        // first point (the sampler takes one at its start).
        let first = {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(p) = crate::loom::lock(&shared.history).points.front() {
                    break p.seq;
                }
                assert!(Instant::now() < deadline, "no first point");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        let since = shared.history_body(Some(first)).unwrap();
        assert_ne!(since.as_ptr(), shared.history_body(None).unwrap().as_ptr());
        // More points than a private body holds (copies of the first, as
        // the sampler would have added over a minute).
        let last = {
            let mut h = crate::loom::lock(&shared.history);
            let p = h.points.front().unwrap().clone();
            for _ in 0..SINCE_POINTS_MAX + 5 {
                let seq = h.next_seq;
                h.points.push_back(Point { seq, ..p.clone() });
                h.next_seq += 1;
            }
            h.revision += 1;
            h.next_seq - 1
        };
        // A page polling each second asks for a point or two: its own body.
        let recent = shared.history_body(Some(last - 1)).unwrap();
        assert_ne!(recent.as_ptr(), shared.history_body(None).unwrap().as_ptr());
        let v: serde_json::Value = serde_json::from_slice(&recent).unwrap();
        assert!(
            v["points"].as_array().unwrap().len() <= 2,
            "{}",
            v["points"]
        );
        // Asking for more -- from the oldest point kept (which left a
        // private copy of all but one point per request), or from before
        // it -- shares the whole feed's body.
        for since in [first, first.saturating_sub(1), 0] {
            let same = (0..3).any(|_| {
                let whole = shared.history_body(None).unwrap();
                let old = shared.history_body(Some(since)).unwrap();
                whole.as_ptr() == old.as_ptr()
            });
            assert!(same, "since {since} rendered nearly the whole feed anew");
        }
        // A new point: rendered anew, with it.
        let before = shared.history_body(None).unwrap();
        let seq = crate::loom::lock(&shared.history).next_seq;
        let deadline = Instant::now() + Duration::from_secs(10);
        while crate::loom::lock(&shared.history).next_seq == seq {
            assert!(Instant::now() < deadline, "no new point");
            std::thread::sleep(Duration::from_millis(20));
        }
        let after = shared.history_body(None).unwrap();
        assert_ne!(after.as_ptr(), before.as_ptr(), "a stale feed was served");
        let v: serde_json::Value = serde_json::from_slice(&after).unwrap();
        assert!(v["next_seq"].as_u64().unwrap() > seq);
    }

    /// The first sample adds the pools but no point (a point is a delta
    /// between two): a feed rendered before it is not served after it.
    /// (It was, keyed on `next_seq`: a page that polled in the
    /// dashboard's first second listed no pools until the next sample.)
    #[test]
    fn a_sample_without_a_point_renews_the_whole_feed() {
        let rt = crate::Runtime::new().unwrap();
        let d = serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        let shared = d.shared.clone();
        let before = shared.history_body(None).unwrap();
        let (next_seq, revision) = {
            let mut h = crate::loom::lock(&shared.history);
            let info = PoolInfo {
                id: usize::MAX,
                scope: crate::Scope::System,
                pod: 0,
                cpus: vec![0],
                max_workers: 1,
                highpri: false,
                strict: false,
            };
            let now = rt.handle().metrics();
            h.add(
                Prepared {
                    pools: None,
                    t: 0.0,
                    infos: vec![info],
                },
                now,
            );
            (h.next_seq, h.revision)
        };
        let after = shared.history_body(None).unwrap();
        assert_ne!(
            after.as_ptr(),
            before.as_ptr(),
            "the cached feed was served"
        );
        // Unless the sampler added one of its own since (it runs meanwhile,
        // once a second), the feed is the test's sample's.
        if crate::loom::lock(&shared.history).revision == revision {
            let v: serde_json::Value = serde_json::from_slice(&after).unwrap();
            assert_eq!(v["next_seq"].as_u64(), Some(next_seq));
            let pools = v["pools"].as_array().unwrap();
            assert!(
                pools
                    .iter()
                    .any(|p| p["id"].as_u64() == Some(usize::MAX as u64)),
                "{pools:?}"
            );
        }
    }

    /// At the limit with no connection idle, the one whose response has
    /// been in flight longest is closed once that is [`EVICT_SLOW`]: a
    /// reader that takes a byte now and then (its write timeout never
    /// fires) does not keep its slot for the connection's whole lifetime.
    #[test]
    fn a_response_in_flight_for_long_loses_its_slot_when_none_is_idle() {
        let rt = crate::Runtime::new().unwrap();
        let d = serve_on(rt.handle(), "127.0.0.1:0").unwrap();
        let shared = d.shared.clone();
        let slow = EVICT_SLOW.as_millis() as u64;
        // Evictions are asked at `now`, past the first `EVICT_SLOW`.
        let now = slow + 10_000;
        let fake = |active: u64, writing: bool, request_at: u64| Conn {
            task: rt.spawn(std::future::pending::<()>()),
            active: Arc::new(AtomicU64::new(active)),
            writing: Arc::new(AtomicBool::new(writing)),
            request_at: Arc::new(AtomicU64::new(request_at)),
        };
        {
            let mut t = crate::loom::lock(&shared.tasks);
            // A request waiting 1 s; a slow reader of a response that
            // came a little less than the limit ago; one past it; an idle
            // connection active 100 ms ago (not idle long enough).
            t.conns.insert(1, fake(BUSY, false, now - 1000));
            t.conns.insert(2, fake(now - 10, true, now - slow + 2000));
            t.conns.insert(3, fake(now - 10, true, now - slow - 1000));
            t.conns.insert(4, fake(now - 100, false, now - 200));
        }
        assert!(shared.evict_at(now));
        {
            let t = crate::loom::lock(&shared.tasks);
            let left: Vec<u64> = {
                let mut v: Vec<u64> = t.conns.keys().copied().collect();
                v.sort_unstable();
                v
            };
            assert_eq!(
                left,
                [1, 2, 4],
                "the response in flight past the limit went"
            );
        }
        // Nothing else qualifies.
        assert!(!shared.evict_at(now));
    }

    /// A point's polls per second count every poll of the interval: a
    /// worker that has not gone idle publishes its `started` counter only
    /// every 64 polls, so it read 0 here.
    #[test]
    fn a_busy_workers_polls_are_counted_in_its_point() {
        let rt = crate::Runtime::builder()
            .default_scope(crate::Scope::System)
            .max_workers_per_pool(1)
            .cpu_hog_threshold(Duration::ZERO)
            .build()
            .unwrap();
        // The pool exists, and its worker has gone idle once: its poll is
        // published (as it idles), waited for rather than slept on.
        rt.block_on(rt.spawn(async {})).unwrap();
        let published = std::time::Instant::now() + Duration::from_secs(20);
        let last = loop {
            let m = rt.metrics();
            if m.pools.first().is_some_and(|p| p.counters.started == 1) {
                break m;
            }
            assert!(
                std::time::Instant::now() < published,
                "never published:\n{m}"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        let release = Arc::new(AtomicBool::new(false));
        let ran = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let (r, done) = (release.clone(), ran.clone());
        drop(rt.spawn(async move {
            // Ten tasks queued behind this one, run on this worker, then
            // it spins: the worker never goes idle meanwhile. It yields
            // until all ten have run: the injector, where a yielded task
            // goes, is looked at first every 61st tick, so one yield may
            // come back before them.
            for _ in 0..10 {
                let done = done.clone();
                drop(crate::spawn(async move {
                    done.fetch_add(1, Ordering::SeqCst);
                }));
            }
            let mut polls = 1;
            while done.load(Ordering::SeqCst) < 10 {
                crate::task::yield_now().await;
                polls += 1;
            }
            tx.send(polls).unwrap();
            while !r.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
        }));
        let own_polls: u64 = rx.recv().unwrap();
        // A point's rates divide by an interval of at least 1 ms: one
        // shorter would not give the counts back below.
        std::thread::sleep(Duration::from_millis(2));
        let now = rt.metrics();
        release.store(true, Ordering::SeqCst);
        let point = History::prepare(Some(&last), &now);
        let pools = point.pools.unwrap();
        let secs = now.delta(&last).interval.unwrap().as_secs_f64();
        let polls = (pools[0].started * secs).round() as u64;
        let ran = own_polls + ran.load(Ordering::SeqCst) as u64;
        assert_eq!(polls, ran, "{polls} polls counted; {ran} ran");
    }

    #[test]
    fn queries() {
        let h = |v: &str| crate::hyper::is_local_host(Some(&HeaderValue::from_str(v).unwrap()));
        assert!(crate::hyper::is_local_host(None));
        for ok in [
            "localhost",
            "LOCALHOST:8089",
            "127.0.0.1",
            "127.0.0.1:8089",
            "[::1]:8089",
            "[::1]",
            "localhost.:8089",
            "[::ffff:127.0.0.1]:8089",
        ] {
            assert!(h(ok), "{ok}");
        }
        for no in [
            "evil.example",
            "evil.example:8089",
            "10.0.0.1:8089",
            "localhost.evil.example",
            "[fe80::1]:1",
            "[::ffff:10.0.0.1]:8089",
            "localhost..",
            // Only a port may follow the brackets, which hold IPv6.
            "[::1]evil.example",
            "[::1]:80evil",
            "[::1]x:80",
            "[127.0.0.1]",
            "[localhost]:80",
            "[::1",
        ] {
            assert!(!h(no), "{no}");
        }
        assert_eq!(query_u64(Some("since=12&x=1"), "since"), Ok(Some(12)));
        assert!(
            query_u64(Some("since=x"), "since")
                .unwrap_err()
                .contains("give a whole number")
        );
        assert!(query_u64(Some("since=99999999999999999999"), "since").is_err());
        assert_eq!(query_u64(None, "since"), Ok(None));
        assert_eq!(query_u64(Some("x=1"), "since"), Ok(None));
    }

    #[test]
    fn the_history_keeps_the_last_points_only() {
        let rt = crate::Runtime::new().unwrap();
        let mut h = History::default();
        for _ in 0..HISTORY + 5 {
            h.push(rt.metrics());
        }
        assert_eq!(h.points.len(), HISTORY);
        assert_eq!(h.points.back().unwrap().seq, HISTORY as u64 + 3);
    }
}
