//! hyper 1.x on wq (cargo feature `hyper`): an executor, a timer and an I/O
//! adapter, which are all the glue hyper's and hyper-util's servers and
//! clients need.
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
//!         let (stream, _) = listener.accept().await?;
//!         let http = http.clone();
//!         wq::spawn(async move {
//!             if let Err(e) = http.serve_connection(WqIo::new(stream), service_fn(hello)).await {
//!                 eprintln!("connection: {e}");
//!             }
//!         });
//!     }
//! }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
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
    /// A timer on the current runtime's driver (started if need be).
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
        Box::pin(Sleep::new(
            self.driver.clone(),
            crate::time::deadline_in(duration),
        ))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep::new(self.driver.clone(), deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<Sleep>() {
            Some(mut ours) => ours.reset(new_deadline),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

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
    /// How many bytes the next read asks for (see [`READ_MIN`]).
    read_size: usize,
}

/// hyper hands reads an uninitialised buffer and `AsyncRead` needs
/// initialised bytes, so each read zeroes what it asks for first. The size
/// adapts: it doubles (up to [`READ_MAX`]) after a read that filled it and
/// halves (down to `READ_MIN`) after one that used under a quarter, so
/// small requests zero little (zeroing a fixed 64 KiB per read was 4.5% of
/// a hello-world server's CPU) and bulk transfers still read big chunks.
const READ_MIN: usize = 4 * 1024;
/// See [`READ_MIN`].
const READ_MAX: usize = 64 * 1024;

impl<T> WqIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> WqIo<T> {
        WqIo {
            inner,
            read_size: READ_MIN,
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

impl<T: AsyncRead + Unpin> hyper::rt::Read for WqIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let want = buf.remaining().min(this.read_size);
        let dst = buf.initialize_unfilled_to(want);
        let n = match Pin::new(&mut this.inner).poll_read(cx, dst) {
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        assert!(
            n <= want,
            "wq::hyper::WqIo: the stream read more than it was given"
        );
        // SAFETY: the first `want >= n` bytes of the unfilled part were
        // initialised by `initialize_unfilled_to` and `n` of them filled by
        // the read.
        unsafe { buf.advance(n) };
        if n == want {
            this.read_size = (this.read_size * 2).min(READ_MAX);
        } else if n < want / 4 {
            this.read_size = (this.read_size / 2).max(READ_MIN);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for WqIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
}
