//! What the service examples share: command-line options, the HTTP serve
//! loop (hyper-util's `auto` server on wq), and the routes of
//! `http_service` ([`routes`]) and `axum_service` ([`axum_app`]).
//!
//! Hardening, the same for every listener:
//! - it binds where its user says (`--addr`), loopback by default;
//! - at most [`MAX_CONNECTIONS`] connections at once, fewer if the
//!   open-file limit leaves less ([`max_connections`]; beyond, a new one is
//!   closed at once), each told to close at [`CONNECTION_LIFETIME`]
//!   (gracefully: requests in flight are answered) and dropped
//!   [`CLOSE_GRACE`] later if it has not;
//! - a client has [`HEADER_READ_TIMEOUT`] to send its first bytes, enough
//!   of them to tell HTTP/1 from HTTP/2 (the `auto` server's version
//!   sniffing has no timer of its own: a client that connects and says
//!   nothing, or sends `P` and stops, would hold its connection forever) and
//!   then each request head, and each request [`REQUEST_TIMEOUT`] to be
//!   answered (504 after);
//! - a connection with no request in flight for [`IDLE_TIMEOUT`] is shut
//!   down gracefully, HTTP/2 included (its keep-alive pings, answered,
//!   kept an idle connection for its whole lifetime: a thousand of those
//!   held every slot for five minutes), and dropped [`CLOSE_GRACE`] later
//!   if it has not closed (an HTTP/2 client that never opens its
//!   flow-control window keeps a stream, and its connection, open);
//! - at ctrl-c or SIGTERM ([`stop_requested`], [`serve_until`]) the
//!   listener closes and every connection is told to close gracefully,
//!   with [`CLOSE_GRACE`] to do so; a second signal ends the service at
//!   once;
//! - request bodies are capped at [`MAX_BODY`] bytes (413 beyond; HTTP/2
//!   allows [`MAX_STREAMS`] streams a connection, each with a window of
//!   [`MAX_BODY`], so one connection buffers at most that many bodies), and a
//!   response write that makes no progress for [`WRITE_TIMEOUT`] (a client
//!   that stops reading) ends the connection, and the kernel drops data a
//!   client leaves unread that long, on a closed connection too
//!   (`TCP_USER_TIMEOUT`: else a closed connection's unsent answers stay
//!   in kernel memory, its socket in `FIN-WAIT-1`, for minutes, while the
//!   client's kernel answers the window probes);
//! - malformed requests get hyper's 400, connection errors are logged and
//!   the connection dropped; accept errors (out of fds) are logged and the
//!   loop backs off 100 ms instead of spinning; the log lines go through
//!   [`report`], which never blocks a worker on a stalled stderr;
//! - the services are read-only: GET (and HEAD) only, 405 otherwise.
//!
//! To add a route, add an arm to
//! [`routes::route`] and a `.route(..)` to [`axum_app::router`].

pub mod axum_app;
pub mod echo;
pub mod monitor;
pub mod report;
pub mod routes;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::server::conn::auto;
use wq::hyper::{WqExecutor, WqIo, WqTimer};
use wq::net::TcpListener;
use wq::task::Unconstrained;

/// Time a client has to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a request has to be answered ([`Limits::request`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// The longest a response write may make no progress.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a connection is served, however busy (HTTP/2 keep-alive
/// pings would keep an idle one open forever), counted from its client's
/// first bytes: then it is told to close, and dropped [`CLOSE_GRACE`]
/// later if it has not, so a connection is open at most
/// [`HEADER_READ_TIMEOUT`] + this + [`CLOSE_GRACE`].
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// The longest a connection stays open with no request in flight.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 streams (requests) at once on one connection.
pub const MAX_STREAMS: u32 = 16;
/// The longest a connection told to close (idle, at its lifetime, or as
/// the service stops) may take to finish its requests in flight before it
/// is dropped: an answer
/// ([`REQUEST_TIMEOUT`]) and its write ([`WRITE_TIMEOUT`]).
pub const CLOSE_GRACE: Duration = Duration::from_secs(15);

/// The limits [`serve_with`] applies to each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send its first bytes.
    pub first_bytes: Duration,
    /// Time a request has to be answered: the service's call, to its
    /// response's head (504 after; the body's frames are the `idle`
    /// limit's).
    pub request: Duration,
    /// How long a connection is served, from its first bytes (then told
    /// to close; dropped `close_grace` later: open at most `first_bytes` +
    /// this + `close_grace`).
    pub lifetime: Duration,
    /// The longest a connection stays open making no progress: no
    /// request in flight, or only responses whose bodies yield no frame
    /// (a download that moves is progress; a service computing an answer
    /// counts as busy).
    pub idle: Duration,
    /// The most connections at once.
    pub max_connections: usize,
    /// The longest a response write may make no progress (a client that
    /// stops reading is cut off).
    pub write_progress: Duration,
    /// The longest a connection told to close gracefully (idle, at its
    /// lifetime, or as the service stops) may take to finish what is in
    /// flight before it is dropped.
    pub close_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            first_bytes: HEADER_READ_TIMEOUT,
            request: REQUEST_TIMEOUT,
            lifetime: CONNECTION_LIFETIME,
            idle: IDLE_TIMEOUT,
            max_connections: max_connections(),
            write_progress: WRITE_TIMEOUT,
            close_grace: CLOSE_GRACE,
        }
    }
}

/// File descriptors kept for everything but client connections (the
/// listeners, the dashboard's connections, the runtime's epoll and
/// eventfds, stdio, a blocking route's files): this many, or a quarter of
/// a smaller open-file limit.
const FD_RESERVE: usize = 128;

/// The most connections to serve at once: [`MAX_CONNECTIONS`], or fewer
/// if the process's open-file limit (`RLIMIT_NOFILE`, soft) leaves less
/// than that beside the descriptors kept for the rest (128, or a quarter
/// of a limit under 512). At the limit,
/// `accept` fails and new clients wait unanswered in the backlog (and the
/// dashboard's accept fails too); under the cap, a client beyond it is
/// closed at once.
pub fn max_connections() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call to fill.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0
        && lim.rlim_cur != libc::RLIM_INFINITY;
    connection_cap(known.then(|| usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)))
}

/// [`max_connections`] under an open-file limit (`None`: none known).
fn connection_cap(open_files: Option<usize>) -> usize {
    match open_files {
        Some(n) => MAX_CONNECTIONS.min(n.saturating_sub(FD_RESERVE.min(n / 4)).max(1)),
        None => MAX_CONNECTIONS,
    }
}

/// Says on stderr how many connections `name` serves at once, and why,
/// when the open-file limit holds it below [`MAX_CONNECTIONS`].
pub fn say_connection_cap(name: &str, cap: usize) {
    if cap < MAX_CONNECTIONS {
        eprintln!(
            "{name}: serving at most {cap} connections at once (the open-file limit, `ulimit -n`, \
             leaves no more beside the descriptors kept for the rest; raise it to serve {MAX_CONNECTIONS})"
        );
    }
}

/// Options of the service examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Where to listen.
    pub addr: String,
}

/// The usage text of [`parse_args`]'s options.
pub fn usage(name: &str, default_port: u16) -> String {
    format!(
        "usage: {name} [--addr ADDR]\n\n  --addr ADDR   where to listen (default 127.0.0.1:{default_port}; 0.0.0.0:PORT to accept from other machines)"
    )
}

/// Parses `--addr ADDR` (default `127.0.0.1:<default_port>`) and `--help`.
/// `Err` holds the message to print (the usage for `--help`).
pub fn parse_args(
    name: &str,
    default_port: u16,
    args: impl IntoIterator<Item = String>,
) -> Result<Options, String> {
    let usage = usage(name, default_port);
    let mut opts = Options {
        addr: format!("127.0.0.1:{default_port}"),
    };
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--addr" => {
                opts.addr = it
                    .next()
                    .filter(|v| !v.starts_with('-'))
                    .ok_or(format!("--addr needs a value\n{usage}"))?
            }
            s if s.starts_with("--addr=") => opts.addr = s["--addr=".len()..].to_owned(),
            "-h" | "--help" => return Err(usage),
            other => return Err(format!("unknown argument {other:?}\n{usage}")),
        }
    }
    Ok(opts)
}

/// The default of `http_service --dashboard-addr`.
pub const DEFAULT_DASHBOARD_ADDR: &str = monitor::DEFAULT_ADDR;

/// Takes `--dashboard-addr ADDR` (or `=ADDR`; `off` for none) out of
/// `args`: the dashboard's address (default [`DEFAULT_DASHBOARD_ADDR`],
/// loopback) and the other arguments.
pub fn dashboard_addr(
    args: impl IntoIterator<Item = String>,
) -> Result<(Option<String>, Vec<String>), String> {
    let mut addr = Some(DEFAULT_DASHBOARD_ADDR.to_owned());
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let value = if a == "--dashboard-addr" {
            it.next()
                .filter(|v| !v.starts_with('-'))
                .ok_or("--dashboard-addr needs a value (an address, or off)")?
        } else if let Some(v) = a.strip_prefix("--dashboard-addr=") {
            v.to_owned()
        } else {
            rest.push(a);
            continue;
        };
        addr = (value != "off").then_some(value);
    }
    Ok((addr, rest))
}

/// A limit as good as none, that an `Instant` can be moved by.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// The `auto` (HTTP/1.1 + HTTP/2) connection builder with the examples'
/// limits, on the current runtime.
///
/// hyper's HTTP/1 header-read timer also runs while a keep-alive
/// connection waits for its next request: it is set to the longer of
/// `first_bytes` and `idle`, so it ends no connection before its idle
/// limit (with a fixed 10 s, an `idle` of a minute closed HTTP/1
/// connections at 10 s, as errors), and a request head still takes no
/// longer than that.
pub fn http_builder(limits: &Limits) -> auto::Builder<WqExecutor> {
    let mut b = auto::Builder::new(WqExecutor::new());
    b.http1()
        .timer(WqTimer::new())
        // hyper adds it to an `Instant`: a year is as good as never
        // (`Duration::MAX`, no limit, overflowed there).
        .header_read_timeout(limits.first_bytes.max(limits.idle).min(NEVER))
        .max_buf_size(64 * 1024);
    // A body is buffered whole (up to MAX_BODY): the windows keep what one
    // connection can send ahead to MAX_STREAMS bodies, not hyper's 1 MiB
    // per stream.
    b.http2()
        .timer(WqTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .initial_stream_window_size(MAX_BODY as u32)
        .initial_connection_window_size(MAX_STREAMS * MAX_BODY as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// Accepts connections on `listener` forever, serving each in its own task
/// with the service `make()` returns, under the default [`Limits`].
pub async fn serve<S, B>(listener: TcpListener, make: impl Fn() -> S) -> io::Result<()>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send + From<bytes::Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_with(listener, make, Limits::default()).await
}

/// A cap on connections open at once: a listener takes a [`Slot`] per
/// connection and closes the connection at once when none is left.
#[derive(Debug, Clone)]
pub struct Slots {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// One connection counted by [`Slots`] while held.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Slots {
    /// At most `max` at once.
    pub fn new(max: usize) -> Slots {
        Slots {
            open: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Slots held now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A slot, or `None` if `max` are held.
    pub fn take(&self) -> Option<Slot> {
        // Relaxed: a count, taken and given back only through slots.
        self.open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// [`serve`] with the given limits.
pub async fn serve_with<S, B>(
    listener: TcpListener,
    make: impl Fn() -> S,
    limits: Limits,
) -> io::Result<()>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send + From<bytes::Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_until(listener, make, limits, futures::stream::pending()).await
}

/// The process's requests to stop, from the call on: ctrl-c (SIGINT) and
/// SIGTERM (a service manager's stop), each item the signal's name. The
/// first stops a [`serve_until`] gracefully; a second one during the
/// drain ends it at once.
pub fn stop_requested()
-> io::Result<impl futures::Stream<Item = &'static str> + Send + Unpin + 'static> {
    use wq::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate())?;
    let int = signal(SignalKind::interrupt())?;
    Ok(Box::pin(futures::stream::unfold(
        (term, int),
        |(mut term, mut int)| async move {
            let why = {
                let t = std::pin::pin!(term.recv());
                let i = std::pin::pin!(int.recv());
                match futures::future::select(t, i).await {
                    futures::future::Either::Left((Some(()), _)) => "SIGTERM",
                    futures::future::Either::Right((Some(()), _)) => "SIGINT",
                    // The runtime's I/O driver is gone: nothing more comes.
                    _ => return None,
                }
            };
            Some((why, (term, int)))
        },
    )))
}

/// Each connection's way to learn of the stop: a oneshot per connection
/// (its polls, and its end, touch only its own channel), the senders kept
/// by the accept loop alone, dropped all at the stop.
struct Stopping(slab::Slab<futures::channel::oneshot::Sender<()>>);

impl Stopping {
    /// A listener for the stop; senders of connections that ended are
    /// cleared out as they pile up (`open` connections are left).
    fn listen(&mut self, open: usize) -> futures::channel::oneshot::Receiver<()> {
        if self.0.len() > 2 * open + 64 {
            self.0.retain(|_, tx| !tx.is_canceled());
        }
        let (tx, rx) = futures::channel::oneshot::channel();
        self.0.insert(tx);
        rx
    }

    /// Wakes every listener (their senders drop).
    fn stop(&mut self) {
        self.0.clear();
    }
}

/// [`serve_with`] until `stop` yields (a reason to report): then the
/// listener is closed, every connection is told to close gracefully
/// (requests in flight finish; HTTP/2 sends GOAWAY, HTTP/1 closes after the
/// current response; one still waiting for its first bytes is closed) and
/// given [`Limits::close_grace`] to do so, and this returns once they are
/// all gone, or when the grace and a second more have passed (the
/// runtime's shutdown then drops what is left), or at once when `stop`
/// yields again.
pub async fn serve_until<S, B>(
    listener: TcpListener,
    make: impl Fn() -> S,
    limits: Limits,
    stop: impl futures::Stream<Item = &'static str> + Unpin,
) -> io::Result<()>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send + From<bytes::Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use futures::StreamExt;
    let http = http_builder(&limits);
    let slots = Slots::new(limits.max_connections);
    let mut stopping = Stopping(slab::Slab::new());
    // `None` once the stop's stream ended (the runtime's driver is gone):
    // then the service serves on without it.
    let mut stop = Some(stop);
    // The connections' tasks, reaped as they end: what is left when this
    // returns is aborted (a caller whose runtime goes on would have them
    // serve on, with nothing to stop them).
    let mut connections = wq::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        // The stop first: a flood of connections (each poll of accept
        // spends the task's budget) must not keep it from being seen.
        let accepted = match stop.as_mut() {
            Some(st) => {
                match futures::future::select(st.next(), std::pin::pin!(listener.accept())).await {
                    futures::future::Either::Left((Some(why), _)) => Err(why),
                    futures::future::Either::Left((None, _)) => {
                        stop = None;
                        continue;
                    }
                    futures::future::Either::Right((accepted, _)) => Ok(accepted),
                }
            }
            None => Ok(listener.accept().await),
        };
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(why) => {
                drop(listener);
                let open = slots.open();
                // The connections told first, and the lines through the
                // reporter (flushed before this returns, within a bound):
                // a stderr that blocks (a stalled pipe) or fails (EPIPE:
                // `eprintln!` panics) must not hold up or abort the stop.
                stopping.stop();
                report::report(format!(
                    "{why}: no more connections; closing the {open} open gracefully"
                ));
                let deadline =
                    wq::time::sleep(limits.close_grace.saturating_add(Duration::from_secs(1)));
                let deadline = std::pin::pin!(deadline);
                while slots.open() > 0 && !deadline.is_elapsed() {
                    let tick = std::pin::pin!(wq::time::sleep(Duration::from_millis(10)));
                    let Some(st) = stop.as_mut() else {
                        tick.await;
                        continue;
                    };
                    match futures::future::select(st.next(), tick).await {
                        futures::future::Either::Left((Some(again), _)) => {
                            report::report(format!(
                                "{again} again: stopping now, dropping the {} open connections",
                                slots.open()
                            ));
                            connections.shutdown().await;
                            flush_reports().await;
                            return Ok(());
                        }
                        futures::future::Either::Left((None, _)) => stop = None,
                        futures::future::Either::Right(_) => {}
                    }
                }
                let open = slots.open();
                if open > 0 {
                    report::report(format!(
                        "{why}: stopped, dropping the {open} connections still open"
                    ));
                } else {
                    report::report(format!("{why}: stopped"));
                }
                connections.shutdown().await;
                flush_reports().await;
                return Ok(());
            }
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // EMFILE / ENFILE / ECONNABORTED: log, back off, go on.
                report::report(format!("accept: {e}"));
                wq::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = slots.take() else {
            // Full: closed at once, so the client sees it (a connection
            // left unanswered in the backlog would only time out).
            drop(stream);
            continue;
        };
        let mut stopped = stopping.listen(slots.open());
        let _ = stream.set_nodelay(true);
        // Unread data is dropped by the kernel after the write limit, the
        // connection closed or not (no limit: `Duration::MAX` is refused,
        // the kernel's default kept).
        let _ = stream.set_tcp_user_timeout(Some(limits.write_progress));
        // Accepted on a loopback address (a listener on a wildcard serves
        // both): then only requests for localhost (`Tracked`). An address
        // that cannot be read is taken for loopback, the stricter check
        // (as the dashboard's).
        let loopback = stream
            .local_addr()
            .map_or(true, |a| a.ip().to_canonical().is_loopback());
        let http = http.clone();
        let service = make();
        connections.spawn(async move {
            let _slot = slot;
            let conn = async {
                let first = wq::time::timeout(limits.first_bytes, version_known(&stream));
                match futures::future::select(std::pin::pin!(first), &mut stopped).await {
                    // Stopped before a request began: closed, quietly.
                    futures::future::Either::Right((_, _)) => return Ok(()),
                    futures::future::Either::Left((Ok(Ok(false)), _)) => return Ok(()),
                    futures::future::Either::Left((Ok(Ok(true)), _)) => {}
                    futures::future::Either::Left((Ok(Err(e)), _)) => return Err(e.into()),
                    futures::future::Either::Left((Err(_), _)) => {
                        return Err("no request within the first-bytes timeout".into());
                    }
                }
                let io = WqIo::new(stream).write_timeout(limits.write_progress);
                let activity = Arc::new(Activity::new());
                let service = Tracked {
                    inner: service,
                    activity: activity.clone(),
                    loopback,
                    request: limits.request,
                };
                let mut conn = std::pin::pin!(http.serve_connection(io, service));
                // The limits' sleeps are polled after the connection, in
                // the same poll: outside the task's operation budget, which
                // the connection may have spent (a handler busy in a loop of
                // ready operations, a client's flood of frames), else they
                // said `Pending` in every poll and never closed it.
                let mut idle =
                    std::pin::pin!(wq::task::unconstrained(idle_for(&activity, limits.idle)));
                let mut lifetime =
                    std::pin::pin!(wq::task::unconstrained(wq::time::sleep(limits.lifetime)));
                // Set once the connection is told to close: then it has
                // `close_grace` to finish (an HTTP/2 client that never
                // opens its flow-control window keeps its stream, and so
                // its connection, open: the socket is not stalled, so the
                // write timeout does not see it).
                let mut closing: Option<(Pin<Box<Unconstrained<wq::time::Sleep>>>, &str)> = None;
                std::future::poll_fn(|cx| {
                    // The connection first: told to close before its first
                    // poll (while it reads the protocol's version), hyper
                    // cancels it, request and all.
                    if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                        return Poll::Ready(r.or_else(|e| {
                            if idle_timeout(&*e, &activity, limits.idle) {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        }));
                    }
                    if closing.is_none() {
                        let why = if idle.as_mut().poll(cx).is_ready() {
                            Some("idle")
                        } else if lifetime.as_mut().poll(cx).is_ready() {
                            Some("at its lifetime")
                        } else if Pin::new(&mut stopped).poll(cx).is_ready() {
                            Some("as the service stops")
                        } else {
                            None
                        };
                        if let Some(why) = why {
                            // Requests in flight finish; HTTP/2 sends
                            // GOAWAY, HTTP/1 closes after the current one.
                            conn.as_mut().graceful_shutdown();
                            let grace =
                                wq::task::unconstrained(wq::time::sleep(limits.close_grace));
                            closing = Some((Box::pin(grace), why));
                            if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                                return Poll::Ready(r);
                            }
                        }
                    }
                    if let Some((grace, why)) = &mut closing
                        && grace.as_mut().poll(cx).is_ready()
                    {
                        return Poll::Ready(Err(format!(
                            "closed {why}, still open {:?} later: dropped",
                            limits.close_grace
                        )
                        .into()));
                    }
                    Poll::Pending
                })
                .await
            };
            if let Err(e) = conn.await {
                report::report(format!("connection from {peer}: {e}"));
            }
        });
    }
}

/// Whether `e`, a connection's end, is hyper's header-read timer firing on
/// an HTTP/1 connection idle for `idle` with no request in flight: the
/// idle close of [`Limits::idle`] (the two timers end in the same
/// millisecond when `idle` is the longer, and hyper's may come first), not
/// an error to report.
fn idle_timeout(
    e: &(dyn std::error::Error + 'static),
    activity: &Activity,
    idle: Duration,
) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
        && activity.in_flight.load(Ordering::SeqCst) == 0
        && activity
            .idle_since()
            .is_some_and(|since| since.elapsed() >= idle)
}

/// A connection's requests in flight, and when it last made progress.
///
/// A request is in flight from its call until its response body has ended
/// (or been dropped). While some call runs (the service computing an
/// answer) the connection is busy; while every request in flight is
/// sending its body, it is idle since the last frame one of them yielded:
/// a download that moves is not idle, and a body that cannot be sent (an
/// HTTP/2 client that never opens its window) is.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    /// Of those, the ones whose call has not returned.
    calls: AtomicUsize,
    /// Milliseconds since `epoch` when the connection last had no request
    /// in flight, or a body last yielded a frame (or began).
    idle_since_ms: AtomicU64,
    epoch: Instant,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Progress now.
    fn stamp(&self) {
        self.idle_since_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::SeqCst);
    }

    /// Since when the connection has made no progress, or `None` while a
    /// call runs.
    fn idle_since(&self) -> Option<Instant> {
        (self.calls.load(Ordering::SeqCst) == 0)
            .then(|| self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst)))
    }
}

/// Counts a request in flight while held.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.stamp();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a call running while held.
struct Calling(Arc<Activity>);

impl Calling {
    fn new(a: Arc<Activity>) -> Calling {
        a.calls.fetch_add(1, Ordering::SeqCst);
        Calling(a)
    }
}

impl Drop for Calling {
    fn drop(&mut self) {
        // The body's time starts now.
        self.0.stamp();
        self.0.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request in flight until it ends or is
/// dropped, stamping its connection's activity at each frame. A data
/// frame over [`PIECE`] is handed on in pieces of that size: hyper takes
/// a body of one frame whole (and drops it, its end) and then spends the
/// time a slow reader takes writing it; each piece taken is progress.
struct TrackedBody<B: hyper::body::Body> {
    /// `Err`: a refusal's text, sent whole (`Tracked`'s host check).
    inner: Result<Pin<Box<B>>, Option<bytes::Bytes>>,
    in_flight: Option<InFlight>,
    /// What is left of a data frame over [`PIECE`] (boxed: `B::Data`
    /// need not be `Unpin`).
    rest: Option<Box<B::Data>>,
}

/// The largest data frame a [`TrackedBody`] hands on.
const PIECE: usize = 64 << 10;

impl<B: hyper::body::Body> TrackedBody<B>
where
    B::Data: From<bytes::Bytes>,
{
    /// The next piece of `data`: all of it if it is at most [`PIECE`]
    /// (the rest kept otherwise).
    fn piece(&mut self, mut data: B::Data) -> B::Data {
        use bytes::Buf;
        if data.remaining() <= PIECE {
            return data;
        }
        let piece = data.copy_to_bytes(PIECE);
        self.rest = Some(Box::new(data));
        B::Data::from(piece)
    }
}

impl<B: hyper::body::Body> hyper::body::Body for TrackedBody<B>
where
    B::Data: From<bytes::Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        if let Some(rest) = this.rest.take() {
            if let Some(f) = &this.in_flight {
                f.0.stamp();
            }
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(this.piece(*rest)))));
        }
        let inner = match &mut this.inner {
            Ok(inner) => inner,
            Err(text) => {
                return Poll::Ready(
                    text.take()
                        .map(|t| Ok(hyper::body::Frame::data(B::Data::from(t)))),
                );
            }
        };
        let frame = inner.as_mut().poll_frame(cx);
        match frame {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(f) = &this.in_flight {
                    f.0.stamp();
                }
                Poll::Ready(Some(Ok(match frame.into_data() {
                    Ok(data) => hyper::body::Frame::data(this.piece(data)),
                    Err(frame) => frame,
                })))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(f) = &this.in_flight {
                    f.0.stamp();
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.in_flight = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none()
            && match &self.inner {
                Ok(inner) => inner.is_end_stream(),
                Err(text) => text.is_none(),
            }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let rest = self
            .rest
            .as_ref()
            .map_or(0, |r| bytes::Buf::remaining(&**r) as u64);
        match &self.inner {
            Ok(inner) => {
                let h = inner.size_hint();
                let mut with_rest = hyper::body::SizeHint::new();
                with_rest.set_lower(h.lower().saturating_add(rest));
                if let Some(upper) = h.upper() {
                    with_rest.set_upper(upper.saturating_add(rest));
                }
                with_rest
            }
            Err(text) => {
                hyper::body::SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}

/// Waits (a second at most, on the blocking pool) until the reported lines
/// are written: a process that exits next would lose them with the writer
/// thread.
pub async fn flush_reports() {
    let flushed = wq::spawn_blocking(|| report::flush(Duration::from_secs(1)));
    let _ = flushed.await;
}

/// A service whose calls are counted in its connection's [`Activity`]; on
/// a connection to a loopback address, a request whose `Host` does not
/// name this machine is refused (403) before the service sees it: a web
/// page whose own host name was made to resolve to 127.0.0.1 (DNS
/// rebinding) must not read `/pools` or start `/blocking` work
/// ([`wq::hyper::is_local_request`]: the `Host` header, and the target's
/// authority, which HTTP/2 sends instead).
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    loopback: bool,
    /// [`Limits::request`]: a call not answered by then is dropped and
    /// answered 504.
    request: Duration,
}

/// A response of `Tracked`'s own, `text` whole, in no request's count.
fn own_answer<B: hyper::body::Body>(
    status: hyper::StatusCode,
    text: &'static [u8],
) -> Response<TrackedBody<B>> {
    let mut res = Response::new(TrackedBody {
        inner: Err(Some(bytes::Bytes::from_static(text))),
        in_flight: None,
        rest: None,
    });
    *res.status_mut() = status;
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

impl<S, Q, B> hyper::service::Service<Request<Q>> for Tracked<S>
where
    S: hyper::service::Service<Request<Q>, Response = Response<B>>,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, req: Request<Q>) -> Self::Future {
        if self.loopback && !wq::hyper::is_local_request(&req) {
            let res = own_answer(
                hyper::StatusCode::FORBIDDEN,
                b"this service listens on loopback and answers requests for localhost only\n",
            );
            return Box::pin(async move { Ok(res) });
        }
        let in_flight = InFlight::new(self.activity.clone());
        let calling = Calling::new(self.activity.clone());
        let answer = wq::time::timeout(self.request, self.inner.call(req));
        Box::pin(async move {
            let answer = answer.await;
            drop(calling);
            let Ok(answer) = answer else {
                // The call is dropped: its request no longer in flight.
                drop(in_flight);
                return Ok(own_answer(
                    hyper::StatusCode::GATEWAY_TIMEOUT,
                    b"request timed out\n",
                ));
            };
            // In flight until its body has been sent (or dropped).
            answer.map(|res| {
                res.map(|body| TrackedBody {
                    inner: Ok(Box::pin(body)),
                    in_flight: Some(in_flight),
                    rest: None,
                })
            })
        })
    }
}

/// Completes once the connection has made no progress for `limit`
/// ([`Activity`]).
async fn idle_for(activity: &Activity, limit: Duration) {
    loop {
        match activity.idle_since() {
            Some(since) if since.elapsed() >= limit => return,
            Some(since) => match since.checked_add(limit) {
                Some(at) => wq::time::sleep_until(at).await,
                // No limit (`Duration::MAX`): this connection never idles
                // out.
                None => std::future::pending().await,
            },
            // Busy: look again a limit later (a request's end restarts
            // the count).
            None => wq::time::sleep(limit).await,
        }
    }
}

/// HTTP/2's connection preface, which hyper-util's `auto` server reads to
/// tell the protocol.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits (without reading) until the client has sent enough for the
/// `auto` server to tell HTTP/1 from HTTP/2 at once: bytes that leave the
/// preface, or the whole preface. The server's own sniffing has no timer:
/// a client that sent `P` and stopped would hold the connection for its
/// lifetime. Returns `false` if the client closed first.
async fn version_known(stream: &wq::net::TcpStream) -> io::Result<bool> {
    let mut seen = [0u8; H2_PREFACE.len()];
    let mut pause = Duration::from_millis(5);
    loop {
        let n = stream.peek(&mut seen).await?;
        if n == 0 {
            return Ok(false);
        }
        if n == H2_PREFACE.len() || seen[..n] != H2_PREFACE[..n] {
            return Ok(true);
        }
        // A prefix of the preface, the rest not here yet: `peek` would
        // return the same bytes at once, so look again later, backing off
        // (an honest client sends its preface in one write; one that
        // dribbles costs about 40 looks in the first-bytes timeout, not
        // 2,000).
        wq::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Binds `opts.addr`, with an error saying which address failed.
pub async fn bind(opts: &Options) -> io::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(opts.addr.as_str()).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "could not listen on {}: {e} (give another address with --addr HOST:PORT)",
                opts.addr
            ),
        )
    })?;
    let addr = l.local_addr()?;
    Ok((l, addr))
}

/// [`bind`] for an example's `main`: a failure is printed as `name: ...`
/// and becomes the exit code to return.
pub async fn bind_or_exit(
    name: &str,
    opts: &Options,
) -> Result<(TcpListener, SocketAddr), ExitCode> {
    bind(opts).await.map_err(|e| {
        eprintln!("{name}: {e}");
        ExitCode::FAILURE
    })
}

/// Prints what [`parse_args`] refused with: the usage asked for
/// (`--help`) on stdout, exit status 0 (a closed stdout too, [`say!`]); a
/// bad argument and the usage on stderr, status 2.
pub fn refused_args(msg: &str) -> ExitCode {
    if msg.starts_with("usage:") {
        say!("{msg}");
        ExitCode::SUCCESS
    } else {
        eprintln!("{msg}");
        ExitCode::from(2)
    }
}

/// Burns `ms` of CPU without yielding (an example's long poll).
pub fn busy(ms: u64) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(ms) {
        std::hint::spin_loop();
    }
}

/// What an example that takes no arguments does first: `--help` (or `-h`)
/// prints `usage` and exits 0 (a closed stdout too, [`say!`]); any other
/// argument is an error, with the usage, and exits 2.
pub fn no_arguments(name: &str, usage: &str) {
    if let Some(arg) = args().into_iter().next() {
        if arg == "-h" || arg == "--help" {
            say!("{usage}");
            std::process::exit(0);
        }
        eprintln!("{name}: unknown argument {arg:?}\n{usage}");
        std::process::exit(2);
    }
}

/// `println!` for the guide's examples: a closed stdout (`workqueues |
/// head -1`, the reader gone) ends the process quietly with status 0,
/// where `println!` panicked ("failed printing to stdout", exit 101: Rust
/// ignores SIGPIPE), as `wq-dump` and `wq-monitor` end.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say_line(::std::format_args!($($arg)*))
    };
}

/// [`say!`]'s line: written to stdout with its newline; a closed stdout
/// exits the process (status 0), another error panics as `println!`.
pub fn say_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => panic!("writing to stdout: {e}"),
    }
}

/// An example's check of what it shows: `Err` (and so a failing exit)
/// with `what` if `ok` is false.
pub fn check(ok: bool, what: impl Into<String>) -> Result<(), Box<dyn std::error::Error>> {
    if ok { Ok(()) } else { Err(what.into().into()) }
}

/// The program's arguments after its name, each read lossily: one that is
/// not UTF-8 is refused by the parsers (or the bind) as what it says,
/// where `std::env::args` panicked on it.
pub fn args() -> Vec<String> {
    std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// What an example service does first: [`parse_args`] on the process's
/// arguments, then [`bind_or_exit`]. `Err` is the exit code to return
/// (0 after `--help`, 2 after a bad argument, 1 when the address cannot be
/// bound).
pub async fn listen(name: &str, default_port: u16) -> Result<(TcpListener, SocketAddr), ExitCode> {
    let opts = parse_args(name, default_port, args()).map_err(|msg| refused_args(&msg))?;
    bind_or_exit(name, &opts).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn connections_stay_under_the_open_file_limit() {
        assert_eq!(connection_cap(None), MAX_CONNECTIONS);
        assert_eq!(connection_cap(Some(1_048_576)), MAX_CONNECTIONS);
        // The common default soft limit: the reserve comes off it.
        assert_eq!(connection_cap(Some(1024)), 1024 - FD_RESERVE);
        // A small limit keeps a quarter for the rest, not all of it.
        assert_eq!(connection_cap(Some(256)), 192);
        assert_eq!(connection_cap(Some(FD_RESERVE)), 96);
        assert_eq!(connection_cap(Some(0)), 1);
    }

    #[test]
    fn dashboard_options() {
        let (a, rest) = dashboard_addr(args(&["--addr", "x:1"])).unwrap();
        assert_eq!(a.as_deref(), Some(DEFAULT_DASHBOARD_ADDR));
        assert_eq!(rest, args(&["--addr", "x:1"]));
        let (a, rest) =
            dashboard_addr(args(&["--dashboard-addr", "[::1]:7", "--addr=y:2"])).unwrap();
        assert_eq!(
            (a.as_deref(), rest),
            (Some("[::1]:7"), args(&["--addr=y:2"]))
        );
        assert_eq!(
            dashboard_addr(args(&["--dashboard-addr=off"])).unwrap().0,
            None
        );
        assert!(dashboard_addr(args(&["--dashboard-addr"])).is_err());
        // The next flag is not taken for the address.
        let err = dashboard_addr(args(&["--dashboard-addr", "--addr", "127.0.0.1:1"])).unwrap_err();
        assert!(err.contains("--dashboard-addr needs a value"), "{err}");
    }

    #[test]
    fn options() {
        assert_eq!(parse_args("x", 80, args(&[])).unwrap().addr, "127.0.0.1:80");
        assert_eq!(
            parse_args("x", 80, args(&["--addr", "[::1]:9"]))
                .unwrap()
                .addr,
            "[::1]:9"
        );
        assert_eq!(
            parse_args("x", 80, args(&["--addr=0.0.0.0:1"]))
                .unwrap()
                .addr,
            "0.0.0.0:1"
        );
        assert!(
            parse_args("x", 80, args(&["--addr"]))
                .unwrap_err()
                .contains("needs a value")
        );
        // An option where the address should be is no address.
        assert!(
            parse_args("x", 80, args(&["--addr", "--help"]))
                .unwrap_err()
                .contains("needs a value")
        );
        assert!(
            parse_args("x", 80, args(&["--port", "1"]))
                .unwrap_err()
                .contains("unknown argument")
        );
        assert!(
            parse_args("x", 80, args(&["--help"]))
                .unwrap_err()
                .starts_with("usage: x")
        );
    }
}
