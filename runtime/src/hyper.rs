//! hyper 1.x on wq (cargo feature `hyper`): an executor, a timer and an I/O
//! adapter, which are all the glue hyper's servers and connection-level
//! clients (`hyper::client::conn`) and hyper-util's servers need.
//! hyper-util's pooled client (`client::legacy::Client`) also wants its
//! connector's connections to implement its `Connection` trait, which wq
//! does not depend on: wrap [`WqIo`] in a type of your own that forwards
//! `Read` and `Write` and implements it.
//!
//! - [`WqExecutor`]: `hyper::rt::Executor`; spawns hyper's background tasks
//!   (HTTP/2 streams, connection drivers) on a wq runtime, captured when it
//!   is made, so it also works when handed to code on other threads.
//! - [`WqTimer`]: `hyper::rt::Timer` on the runtime's timing wheel; `reset`
//!   re-arms the same [`Sleep`] in place. Give it to
//!   hyper always: its header-read timeout and HTTP/2 keep-alive need one.
//! - [`WqIo`]: wraps any wq stream (`futures::io::AsyncRead + AsyncWrite`)
//!   as `hyper::rt::Read + Write`.
//!
//! A connection served with hyper-util's `auto` builder (HTTP/1.1 and
//! HTTP/2 on one port), without hyper-util's `tokio` feature:
//!
//! ```no_run
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http_body_util::Full;
//! use hyper::{Request, Response, body::{Bytes, Incoming}, service::service_fn};
//! use hyper_util::server::conn::auto;
//! use wq::hyper::{WqExecutor, WqIo, WqTimer};
//!
//! async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     Ok(Response::new(Full::new(Bytes::from("hello"))))
//! }
//!
//! #[wq::main]
//! async fn main() -> std::io::Result<()> {
//!     let listener = wq::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     let mut http = auto::Builder::new(WqExecutor::new());
//!     http.http1().timer(WqTimer::new()).header_read_timeout(Duration::from_secs(10));
//!     http.http2().timer(WqTimer::new());
//!     loop {
//!         let (stream, _) = match listener.accept().await {
//!             Ok(conn) => conn,
//!             Err(e) => {
//!                 // Out of file descriptors, say: back off, then accept again.
//!                 eprintln!("accept: {e}");
//!                 wq::time::sleep(Duration::from_millis(100)).await;
//!                 continue;
//!             }
//!         };
//!         let http = http.clone();
//!         wq::spawn(async move {
//!             if let Err(e) = http.serve_connection(WqIo::new(stream), service_fn(hello)).await {
//!                 eprintln!("connection: {e}");
//!             }
//!         });
//!     }
//! }
//! ```
//!
//! That is the shape, not a service to expose: hyper-util's `auto` server
//! reads a client's first bytes (to tell HTTP/1.1 from HTTP/2) with no
//! timer, so a client that connects and says nothing holds its connection
//! for ever, and nothing here caps connections. The README's "Services"
//! section says what the runnable, hardened version (`serve` in
//! `examples/src/lib.rs`) adds.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures::io::{AsyncRead, AsyncWrite};

use crate::Handle;
use crate::time::Sleep;

/// `hyper::rt::Executor` spawning on a wq runtime (at its default scope).
///
/// ```
/// # let rt = wq::Runtime::new().unwrap();
/// let exec = rt.block_on(async { wq::hyper::WqExecutor::new() });
/// // Usable from any thread from now on:
/// std::thread::spawn(move || hyper::rt::Executor::execute(&exec, async {})).join().unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct WqExecutor {
    handle: Handle,
}

impl WqExecutor {
    /// An executor for the current runtime.
    ///
    /// # Panics
    /// Outside a wq runtime: use [`WqExecutor::with_handle`] there.
    pub fn new() -> WqExecutor {
        WqExecutor {
            handle: Handle::try_current().unwrap_or_else(|| {
                crate::scheduler::context::outside("wq::hyper::WqExecutor::new")
            }),
        }
    }

    /// An executor for `handle`'s runtime.
    pub fn with_handle(handle: Handle) -> WqExecutor {
        WqExecutor { handle }
    }
}

impl Default for WqExecutor {
    fn default() -> Self {
        WqExecutor::new()
    }
}

impl<F> hyper::rt::Executor<F> for WqExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        // Detached: hyper keeps its own handles on what it spawns.
        drop(self.handle.spawn(fut));
    }
}

/// `hyper::rt::Timer` on a wq runtime's timing wheel.
///
/// ```
/// # let rt = wq::Runtime::new().unwrap();
/// # rt.block_on(async {
/// use hyper::rt::Timer;
/// let timer = wq::hyper::WqTimer::new();
/// let mut s = timer.sleep(std::time::Duration::from_secs(60));
/// timer.reset(&mut s, std::time::Instant::now()); // same Sleep, re-armed
/// s.await;
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct WqTimer {
    driver: crate::driver::Handle,
}

impl WqTimer {
    /// A timer on the current runtime's driver (started if need be). Its
    /// sleeps end at once if polled after that runtime shut down (hyper
    /// takes that for its timeout), where a `wq::time::Sleep` panics.
    ///
    /// # Panics
    /// Outside a wq runtime, or if the I/O driver cannot be created.
    pub fn new() -> WqTimer {
        WqTimer {
            driver: crate::time::sleep_driver("wq::hyper::WqTimer::new"),
        }
    }
}

impl Default for WqTimer {
    fn default() -> Self {
        WqTimer::new()
    }
}

impl hyper::rt::Timer for WqTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(TimerSleep(
            Sleep::new(self.driver.clone(), crate::time::deadline_in(duration)),
            false,
        ))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(TimerSleep(Sleep::new(self.driver.clone(), deadline), false))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<TimerSleep>() {
            Some(mut ours) => ours.0.reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// A [`WqTimer`]'s sleep: a [`Sleep`] that ends once, rather than panics,
/// when polled after its runtime shut down with its deadline ahead (hyper
/// polls its timers before it sees the socket's shutdown error; a
/// connection driven off the runtime, a client's, would have panicked its
/// executor). hyper takes the end for its timeout, and the connection
/// ends with an error, as its socket's operations do then.
struct TimerSleep(Sleep, bool);

impl Future for TimerSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.0.poll_unless_shut_down(cx) {
            Poll::Ready(Err(_)) => {
                // Once: a caller that resets and polls it again (hyper-
                // util's pool's idle loop) would spin on an end at every
                // poll. Later polls wait, for a timer that cannot fire.
                if std::mem::replace(&mut self.1, true) {
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            }
            done => done.map(|_| ()),
        }
    }
}

impl hyper::rt::Sleep for TimerSleep {}

/// A wq stream as `hyper::rt::Read` and `hyper::rt::Write`.
///
/// ```
/// # #[wq::main] async fn main() -> std::io::Result<()> {
/// let l = wq::net::TcpListener::bind("127.0.0.1:0").await?;
/// let io = wq::hyper::WqIo::new(wq::net::TcpStream::connect(l.local_addr()?).await?);
/// assert!(io.inner().peer_addr().is_ok());
/// let _stream: wq::net::TcpStream = io.into_inner();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct WqIo<T> {
    inner: T,
    /// How many bytes the next read asks for (see [`SCRATCH`]).
    read_size: usize,
    /// The small mode's buffer, zeroed once (made at the first read).
    scratch: Option<Box<[u8; SCRATCH]>>,
    /// [`WqIo::write_timeout`].
    write_timeout: Option<Duration>,
    /// Armed while writes make no progress (`write_timeout` set).
    stalled: Option<Sleep>,
    /// The runtime whose timers time a stall: the one current when
    /// `write_timeout` was set (as `WqTimer` keeps its own), else the one
    /// current at the stall.
    driver: Option<crate::driver::Handle>,
    /// [`WqIo::vectored_writes`].
    vectored: bool,
}

/// hyper hands reads an uninitialised buffer and `AsyncRead` needs
/// initialised bytes. Zeroing hyper's buffer before each read cost a
/// hello-world server more CPU than anything else it did in user space
/// (0.85 us a request, two 4 KiB zeroings: the read that takes the request
/// and the one that finds the socket empty), so reads have two modes:
/// - **small** (`read_size <= SCRATCH`, where every connection starts): the
///   stream reads into a buffer of [`SCRATCH`] bytes of the connection's,
///   zeroed once, and what it read is copied into hyper's buffer. A read
///   that finds nothing zeroes and copies nothing.
/// - **direct**: after a read that filled the scratch buffer, the stream
///   reads straight into hyper's buffer, zeroing what it asks for first
///   (copying the bytes twice would cost more than zeroing them). The size
///   doubles (up to [`READ_MAX`]) after a read that filled it and halves
///   after one that used under a quarter, down to the small mode again.
const SCRATCH: usize = 1024;
/// See [`SCRATCH`].
const READ_MAX: usize = 64 * 1024;

impl<T> WqIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> WqIo<T> {
        WqIo {
            inner,
            read_size: SCRATCH,
            scratch: None,
            write_timeout: None,
            stalled: None,
            driver: None,
            vectored: true,
        }
    }

    /// Whether hyper may hand the stream several buffers per write (a
    /// response's head and body in one `writev`). True by default: wq's
    /// streams write vectored (`sendmsg`/`writev`). Say `false` for a
    /// stream whose `poll_write_vectored` is `futures`' default, which
    /// writes only the first buffer (a TLS stream, most wrappers): hyper
    /// then copies head and body into one buffer, rather than sending
    /// them as two writes -- two TLS records, and, without `TCP_NODELAY`,
    /// a second segment that can wait for the peer's delayed ACK.
    #[must_use]
    pub fn vectored_writes(mut self, vectored: bool) -> WqIo<T> {
        self.vectored = vectored;
        self
    }

    /// Fails a write, flush or shutdown (`TimedOut`) that makes no progress for
    /// `limit` (no byte accepted by the stream: for TCP, the kernel's send
    /// buffer stayed full): a peer that stops reading its responses cannot
    /// hold the connection, and what it holds, until some longer deadline.
    /// hyper's own timers cover reading a request head only. A peer that
    /// reads very slowly (far less than a send buffer per `limit`) is cut
    /// off too; an HTTP/2 peer that closes its flow-control window stalls
    /// hyper, not the socket, and is not.
    ///
    /// The stall is timed on the runtime current when this is called
    /// (inside one), so the stream may be polled from any thread after,
    /// as [`WqTimer`] and [`WqExecutor`] may.
    ///
    /// # Panics
    /// Called inside a wq runtime whose driver cannot be created (epoll:
    /// the process is out of file descriptors) or that shut down before it
    /// had made one (as [`WqTimer::new`]). Called outside one, a write
    /// that waits, outside a wq runtime or in one such as above (the
    /// timer is wq's). A wq stream was made by a runtime with its driver,
    /// so only a stream of another kind meets these.
    #[must_use]
    pub fn write_timeout(mut self, limit: Duration) -> WqIo<T> {
        self.write_timeout = Some(limit);
        if crate::scheduler::context::with_current(|s| s.is_some()) {
            self.driver = Some(crate::time::sleep_driver("wq::hyper::WqIo::write_timeout"));
        }
        self
    }

    /// Runs a write, flush or shutdown (`op` on the stream inside) and
    /// passes its result on, timing a wait: `Pending` arms (once per
    /// stall) a sleep of `write_timeout`, whose firing fails the call;
    /// progress disarms it.
    fn timed<R>(
        &mut self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>>
    where
        T: Unpin,
    {
        let poll = op(Pin::new(&mut self.inner), cx);
        let Some(limit) = self.write_timeout else {
            return poll;
        };
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        if !crate::coop::has_budget() {
            // `Pending` because the task's operation budget is spent (no
            // stall: arming the timer would cost a shard lock and a wheel
            // insert every 128 operations of a fast stream). A wq stream
            // woke the task for that; a stream of another kind, which
            // spends no budget, may be pending on its own, after other
            // work spent the last unit: the task is woken to look again
            // with a budget, and to arm the timer then if the stall goes
            // on (it waited for ever when the peer never read again). A
            // stall armed before is looked at (a clock read, no lock):
            // polls that always come with their budget spent (an HTTP/2
            // peer that stopped reading sends frames that need no answer:
            // the reads spend the budget before the flush) must not keep
            // it from ending. A wq stream did not try the operation (it
            // looks at the budget first): it is tried once more outside
            // the budget, and only a stream still not ready has stalled
            // (a peer that read again late in the stall had its live
            // connection cut).
            if self.stalled.as_ref().is_some_and(|s| s.is_elapsed()) {
                self.stalled = None;
                return match crate::coop::unconstrained(|| op(Pin::new(&mut self.inner), cx)) {
                    Poll::Ready(r) => Poll::Ready(r),
                    Poll::Pending => Poll::Ready(Err(stalled_for(limit))),
                };
            }
            cx.waker().wake_by_ref();
            return poll;
        }
        let stall = self.stalled.get_or_insert_with(|| match &self.driver {
            Some(driver) => Sleep::new(driver.clone(), crate::time::deadline_in(limit)),
            None => crate::time::sleep(limit),
        });
        match stall.poll_unless_shut_down(cx) {
            Poll::Ready(Ok(())) => {
                self.stalled = None;
                Poll::Ready(Err(stalled_for(limit)))
            }
            // The runtime that times the stall (the one `write_timeout`
            // was set in) has shut down: an error, as wq's sockets' waits
            // end then, not the panic of a `Sleep` polled after it.
            Poll::Ready(Err(_)) => {
                self.stalled = None;
                Poll::Ready(Err(io::Error::other(
                    "the wq runtime that times this stream's writes (write_timeout) has shut down",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The stream inside.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The stream inside, mutably.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Gives the stream back.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

/// A write's error when it made no progress for `limit`.
fn stalled_for(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no write progress for {limit:?}: the peer does not read"),
    )
}

impl<T: AsyncRead + Unpin> hyper::rt::Read for WqIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let want = buf.remaining().min(this.read_size);
        if this.read_size <= SCRATCH {
            // Kept between reads: zeroing a buffer on the stack for each
            // read, the two of a request that find nothing included, was
            // about 190 instructions a request (callgrind).
            let scratch = this.scratch.get_or_insert_with(|| Box::new([0u8; SCRATCH]));
            let dst = &mut scratch[..want];
            let n = ready!(read_into(&mut this.inner, cx, dst))?;
            buf.put_slice(&dst[..n]);
            if n == SCRATCH {
                this.read_size = SCRATCH * 2;
            }
            return Poll::Ready(Ok(()));
        }
        let dst = buf.initialize_unfilled_to(want);
        let n = ready!(read_into(&mut this.inner, cx, dst))?;
        // SAFETY: the first `want >= n` bytes of the unfilled part were
        // initialised by `initialize_unfilled_to` and `n` of them filled by
        // the read.
        unsafe { buf.advance(n) };
        if n == want {
            this.read_size = (this.read_size * 2).min(READ_MAX);
        } else if n < want / 4 {
            this.read_size = (this.read_size / 2).max(SCRATCH);
        }
        Poll::Ready(Ok(()))
    }
}

/// One read of `inner` into `dst`, checked to stay inside it.
fn read_into<T: AsyncRead + Unpin>(
    inner: &mut T,
    cx: &mut Context<'_>,
    dst: &mut [u8],
) -> Poll<io::Result<usize>> {
    let n = ready!(Pin::new(inner).poll_read(cx, dst))?;
    assert!(
        n <= dst.len(),
        "wq::hyper::WqIo: the stream read more than it was given"
    );
    Poll::Ready(Ok(n))
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for WqIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.timed(cx, |inner, cx| inner.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.timed(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Timed too: a stream whose close flushes (TLS's close_notify)
        // waits on the peer reading.
        let this = self.get_mut();
        this.timed(cx, |inner, cx| inner.poll_close(cx))
    }

    fn is_write_vectored(&self) -> bool {
        self.vectored
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.timed(cx, |inner, cx| inner.poll_write_vectored(cx, bufs))
    }
}

/// Whether a request names this machine as its host wherever it names
/// one: the `Host` header (HTTP/1.1), the target's authority (HTTP/2's
/// `:authority`, which comes with no `Host` header, and an HTTP/1 request
/// in absolute form), each by [`is_local_host`]'s rule; one naming none
/// (HTTP/1.0) is local. Use it rather than checking `Host` alone on a
/// server that speaks HTTP/2.
///
/// ```
/// let req = |uri: &str| hyper::Request::builder().uri(uri).body(()).unwrap();
/// assert!(wq::hyper::is_local_request(&req("http://localhost:8080/")));
/// assert!(!wq::hyper::is_local_request(&req("http://evil.example/")));
/// assert!(wq::hyper::is_local_request(&req("/pools")));
/// ```
pub fn is_local_request<B>(req: &hyper::Request<B>) -> bool {
    let authority = req.uri().authority().map(|a| {
        hyper::header::HeaderValue::from_str(a.host()).is_ok_and(|h| is_local_host(Some(&h)))
    });
    is_local_host(req.headers().get(hyper::header::HOST)) && authority.unwrap_or(true)
}

/// Whether a request's `Host` names this machine: `localhost`, a loopback
/// address, or none (HTTP/1.0). A service listening on loopback that
/// checks it refuses a web page whose own host name was made to resolve to
/// 127.0.0.1 (DNS rebinding: the page sends its own name), as
/// `wq::dashboard` does and the example services do.
///
/// ```
/// use hyper::header::HeaderValue;
/// assert!(wq::hyper::is_local_host(Some(&HeaderValue::from_static("localhost:8080"))));
/// assert!(wq::hyper::is_local_host(Some(&HeaderValue::from_static("[::1]:8080"))));
/// assert!(!wq::hyper::is_local_host(Some(&HeaderValue::from_static("evil.example"))));
/// ```
pub fn is_local_host(host: Option<&hyper::header::HeaderValue>) -> bool {
    let Some(host) = host else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        // `[::1]:8089`: an IPv6 address, then nothing or a port.
        Some(v6) => {
            let Some((address, rest)) = v6.split_once(']') else {
                return false;
            };
            let port = rest.is_empty()
                || rest
                    .strip_prefix(':')
                    .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
            if !port || address.parse::<std::net::Ipv6Addr>().is_err() {
                return false;
            }
            address
        }
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    // `localhost.` is the same name, fully qualified; `::ffff:127.0.0.1`
    // the IPv4 loopback, mapped.
    let name = name.strip_suffix('.').unwrap_or(name);
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

#[cfg(test)]
mod tests {
    use std::mem::MaybeUninit;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures::io::AsyncRead;
    use futures::task::noop_waker_ref;

    use super::{READ_MAX, SCRATCH, WqIo};

    /// Serves `data` in reads of at most the next of `caps` bytes (`None`:
    /// one `Pending`), and records how much each read was offered.
    struct Script {
        data: Vec<u8>,
        at: usize,
        caps: Vec<Option<usize>>,
        offered: Vec<usize>,
    }

    impl AsyncRead for Script {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            self.offered.push(buf.len());
            let cap = self.caps.remove(0);
            let Some(cap) = cap else {
                return Poll::Pending;
            };
            let n = cap.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    /// Reads through `WqIo` into a fresh uninitialised 128 KiB buffer each
    /// time (as hyper does), returning what arrived.
    fn read_once(io: &mut WqIo<Script>) -> Poll<Vec<u8>> {
        let mut raw = vec![MaybeUninit::<u8>::uninit(); 128 * 1024];
        let mut buf = hyper::rt::ReadBuf::uninit(&mut raw);
        let mut cx = Context::from_waker(noop_waker_ref());
        match hyper::rt::Read::poll_read(Pin::new(io), &mut cx, buf.unfilled()) {
            Poll::Ready(r) => {
                r.unwrap();
                Poll::Ready(buf.filled().to_vec())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    #[test]
    fn reads_switch_between_the_scratch_buffer_and_direct_reads_losing_no_byte() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut caps = vec![Some(40), None, Some(SCRATCH)];
        // Bulk: every read fills what it is offered, up to READ_MAX.
        caps.extend([Some(usize::MAX); 8]);
        // Then small reads again: the size halves back to the scratch buffer.
        caps.extend([Some(10); 8]);
        caps.push(None);
        let mut io = WqIo::new(Script {
            data: data.clone(),
            at: 0,
            caps,
            offered: Vec::new(),
        });
        let mut got = Vec::new();
        let mut pending = 0;
        for _ in 0..20 {
            match read_once(&mut io) {
                Poll::Ready(bytes) => got.extend(bytes),
                Poll::Pending => pending += 1,
            }
        }
        assert_eq!(pending, 2);
        assert_eq!(got, data[..got.len()], "bytes lost or reordered");
        let offered = &io.inner().offered;
        // Small mode: the scratch buffer is offered, until a read fills it.
        assert_eq!(offered[..3], [SCRATCH, SCRATCH, SCRATCH]);
        // Then direct reads, doubling up to READ_MAX.
        assert_eq!(
            offered[3..10],
            [2048, 4096, 8192, 16384, 32768, READ_MAX, READ_MAX]
        );
        // Reads using under a quarter halve the size back to the scratch.
        assert_eq!(offered[11..17], [READ_MAX, 32768, 16384, 8192, 4096, 2048]);
        assert_eq!(offered[17..], [SCRATCH, SCRATCH, SCRATCH]);
        assert_eq!(io.read_size, SCRATCH);
    }

    /// A write `Pending` because the task's operation budget is spent is
    /// no stall: no timer is armed (it cost a shard lock and a wheel insert
    /// every 128 operations of a fast stream). Outside a runtime, arming
    /// one would panic.
    #[test]
    fn a_write_pending_on_the_spent_budget_arms_no_stall_timer() {
        let mut io = WqIo::new(()).write_timeout(std::time::Duration::from_millis(5));
        let mut cx = Context::from_waker(noop_waker_ref());
        crate::coop::with_budget(|| {
            for _ in 0..crate::coop::PER_POLL {
                crate::coop::spend();
            }
            let p = io.timed(&mut cx, |_, _| Poll::<std::io::Result<()>>::Pending);
            assert!(p.is_pending());
        });
        assert!(io.stalled.is_none());
    }

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// That `Pending` may be the stream's own (a stream of another kind,
    /// which spends no budget, after the task spent its last unit on
    /// other work): the task is woken to look again with a budget, when
    /// the timer is armed if the stall goes on (it was not woken: a write
    /// whose peer never read again waited for ever).
    #[test]
    fn a_write_pending_on_the_spent_budget_wakes_its_task_to_look_again() {
        let mut io = WqIo::new(()).write_timeout(std::time::Duration::from_millis(5));
        let count = std::sync::Arc::new(Count(std::sync::atomic::AtomicUsize::new(0)));
        let waker = std::task::Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        crate::coop::with_budget(|| {
            for _ in 0..crate::coop::PER_POLL {
                crate::coop::spend();
            }
            assert!(
                io.timed(&mut cx, |_, _| Poll::<std::io::Result<()>>::Pending)
                    .is_pending()
            );
        });
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A stall timed on a runtime that has shut down since (the stream
    /// served by another) ends the write with an error, as wq's sockets'
    /// waits do, not a panic of the connection's task.
    #[test]
    fn a_stall_timed_on_a_runtime_shut_down_since_is_an_error() {
        let a = crate::Runtime::new().unwrap();
        let mut io =
            a.block_on(async { WqIo::new(()).write_timeout(std::time::Duration::from_secs(60)) });
        drop(a);
        let b = crate::Runtime::new().unwrap();
        let r = b.block_on(std::future::poll_fn(|cx| {
            crate::coop::with_budget(|| io.timed(cx, |_, _| Poll::<std::io::Result<()>>::Pending))
        }));
        let e = r.unwrap_err();
        assert!(e.to_string().contains("shut down"), "{e}");
    }

    /// A `WqTimer`'s sleep polled by another executor after its runtime
    /// shut down ends once (hyper's timeout), then waits: it panicked, as
    /// a `wq::time::Sleep` does; ending at every poll would spin a loop
    /// that resets and polls it (hyper-util's pool's idle task).
    #[test]
    fn a_timers_sleep_polled_after_its_runtime_shut_down_ends() {
        use hyper::rt::Timer;
        use std::time::{Duration, Instant};
        let rt = crate::Runtime::new().unwrap();
        let (mut s, mut r) = rt.block_on(async {
            let timer = super::WqTimer::new();
            let mut r = timer.sleep(Duration::from_secs(60));
            timer.reset(&mut r, Instant::now() + Duration::from_secs(120));
            (timer.sleep(Duration::from_secs(60)), r)
        });
        drop(rt);
        // Polled by another executor (a client connection's): no panic.
        futures::executor::block_on(async {
            s.as_mut().await;
            r.as_mut().await;
        });
        // Once: reset and polled again, it waits.
        let timer_less = futures::task::noop_waker();
        let mut cx = Context::from_waker(&timer_less);
        assert!(s.as_mut().poll(&mut cx).is_pending());
    }

    /// A `WqIo` of `()` whose write stall (limit 5 ms) was armed by a
    /// `Pending` write and has run 20 ms; then one poll of `op` through
    /// `timed` with the task's budget spent.
    fn spent_budget_poll_past_a_stall<R: std::fmt::Debug>(
        op: impl FnMut(Pin<&mut ()>, &mut Context<'_>) -> Poll<std::io::Result<R>>,
    ) -> (Poll<std::io::Result<R>>, bool) {
        let rt = crate::Runtime::new().unwrap();
        rt.block_on(async {
            let mut io = WqIo::new(()).write_timeout(std::time::Duration::from_millis(5));
            std::future::poll_fn(|cx| {
                let p = crate::coop::with_budget(|| {
                    io.timed(cx, |_, _| Poll::<std::io::Result<R>>::Pending)
                });
                assert!(p.is_pending());
                Poll::Ready(())
            })
            .await;
            assert!(io.stalled.is_some(), "armed");
            std::thread::sleep(std::time::Duration::from_millis(20));
            let mut op = Some(op);
            let r = std::future::poll_fn(|cx| {
                Poll::Ready(crate::coop::with_budget(|| {
                    for _ in 0..crate::coop::PER_POLL {
                        crate::coop::spend();
                    }
                    io.timed(cx, op.take().unwrap())
                }))
            })
            .await;
            (r, io.stalled.is_some())
        })
    }

    #[test]
    fn a_stall_past_its_limit_on_a_spent_budget_tries_the_write_first() {
        // A wq stream looks at the budget before its socket: with the
        // budget spent it says `Pending` without trying. A stall that
        // elapsed meanwhile is no proof of one if the socket has room now
        // (the peer read again): the write is tried outside the budget.
        let (r, armed) = spent_budget_poll_past_a_stall(|_, _| {
            // Writable now, as a wq stream with a budget to try.
            if crate::coop::has_budget() {
                Poll::Ready(Ok(3))
            } else {
                Poll::Pending
            }
        });
        match r {
            Poll::Ready(Ok(3)) => {}
            other => panic!("{other:?}"),
        }
        assert!(!armed, "progress disarms");
    }

    /// A stall armed before goes on counting while every poll comes with
    /// its budget spent (an HTTP/2 peer that stopped reading but keeps
    /// sending frames that need no answer: the reads spend each poll's
    /// budget before the flush): past its limit the write fails. It was
    /// never looked at in those polls, and the write waited for ever.
    #[test]
    fn a_stall_past_its_limit_ends_the_write_on_a_spent_budget_too() {
        let (r, _) = spent_budget_poll_past_a_stall(|_, _| Poll::<std::io::Result<()>>::Pending);
        match r {
            Poll::Ready(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
