//! TCP: [`TcpListener`], [`TcpStream`] and its owned halves.

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use super::stream::{Half, async_read, async_write, read_readiness, write_readiness};
use crate::driver::registration::{PollIo, SharedKey};
use crate::driver::scheduled_io::Direction;

/// A TCP socket listening for connections.
///
/// ```no_run
/// use wq::net::TcpListener;
///
/// #[wq::main]
/// async fn main() -> std::io::Result<()> {
///     let listener = TcpListener::bind("127.0.0.1:8080").await?;
///     loop {
///         let (stream, peer) = match listener.accept().await {
///             Ok(conn) => conn,
///             Err(e) => {
///                 // Out of file descriptors, say: back off, then go on.
///                 eprintln!("accept: {e}");
///                 wq::time::sleep(std::time::Duration::from_millis(100)).await;
///                 continue;
///             }
///         };
///         wq::spawn(async move {
///             println!("{peer} connected");
///             drop(stream);
///         });
///     }
/// }
/// ```
pub struct TcpListener {
    io: PollIo<mio::net::TcpListener>,
    /// [`TcpListener::poll_accept`]'s waiter slot.
    poll_key: SharedKey,
}

impl TcpListener {
    /// Binds to `addr` (each resolved address in turn) and listens
    /// (`SO_REUSEADDR` set, backlog the kernel's maximum, `net.core.somaxconn`). Port 0 picks a free port: see
    /// [`local_addr`](TcpListener::local_addr). A host name blocks the
    /// calling worker while it is resolved (the module docs).
    ///
    /// # Panics
    /// Outside a wq runtime.
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<TcpListener> {
        let driver = super::current("wq::net::TcpListener::bind")?;
        super::each_addr(addr, |a| {
            let driver = driver.clone();
            async move {
                let l = mio::net::TcpListener::bind(a)?;
                super::listen_backlog(std::os::fd::AsRawFd::as_raw_fd(&l))?;
                Ok(TcpListener {
                    io: PollIo::new(driver, l)?,
                    poll_key: SharedKey::default(),
                })
            }
        })
        .await
    }

    /// Takes over a listening std socket (made non-blocking here). Its
    /// listen backlog stays what it was made with (std's `bind`: 128; a
    /// socket from systemd: its `Backlog=`), where [`TcpListener::bind`]
    /// takes the kernel's maximum: a burst of connects beyond 128 has SYNs
    /// dropped, and those clients retry a second later. Call `listen(2)`
    /// on the socket again (with `socket2`, say) to raise it.
    ///
    /// # Errors
    /// `InvalidInput` if the socket is not a listening stream socket (a
    /// `TcpListener` made from another descriptor), or has a nonzero
    /// `SO_LINGER` (its connections inherit it, and each one's drop would
    /// block a worker: see [`TcpStream::set_linger`]), saying which; with
    /// the call's name, if the descriptor is no socket at all
    /// (`ENOTSOCK`); the OS's own error if it cannot be registered with the
    /// driver (`EEXIST`: a wq socket of this runtime has it already); an
    /// error saying so if the runtime has shut down or its driver cannot
    /// be made (out of file descriptors).
    ///
    /// On an error the socket is closed (it was moved in): where the
    /// descriptor must outlive a refusal (to try it as another kind, say),
    /// pass a duplicate (`try_clone`): a refusal leaves it as it was,
    /// blocking or not (the socket is made non-blocking once registered).
    ///
    /// # Panics
    /// Outside a wq runtime.
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        let driver = super::current("wq::net::TcpListener::from_std")?;
        super::check_socket(
            std::os::fd::AsRawFd::as_raw_fd(&listener),
            "wq::net::TcpListener::from_std",
            super::Taken::TcpListener,
        )?;
        let l = TcpListener {
            io: PollIo::new(driver, mio::net::TcpListener::from_std(listener))?,
            poll_key: SharedKey::default(),
        };
        super::set_nonblocking(&l)?;
        Ok(l)
    }

    /// Waits for a connection. Several tasks may wait on one listener
    /// (through an `Arc`); each connection goes to one of them. Errors of
    /// a connection reset before it was taken (`ECONNABORTED`, `EPROTO`,
    /// ...) are skipped; what is returned is the listener's own (out of
    /// file descriptors: back off before accepting again), or the
    /// registration's of the connection taken: that connection is closed
    /// then, and its client reads an end (the runtime shut down, or epoll
    /// refused the descriptor: `ENOSPC` past `fs.epoll.max_user_watches`).
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, peer) = self
            .io
            .async_io(Direction::Read, |l| super::accept_retrying(|| l.accept()))
            .await?;
        Ok((TcpStream::from_mio(self.io.handle().clone(), s)?, peer))
    }

    /// [`accept`](TcpListener::accept) for code that keeps no future: a
    /// `poll_*` method of its own, or a `Stream` of connections. `Pending`
    /// registers the task to wake; the listener keeps one such task, the
    /// one that polled last (as tokio's `poll_accept`): tasks that wait on
    /// one listener side by side each call `accept`.
    ///
    /// Its errors are `accept`'s: the listener's own, such as running out
    /// of file descriptors (`EMFILE`, `ENFILE`), while the connection
    /// stays queued, so polling again at once fails again at once: a
    /// stream of connections built on it should pause (a
    /// [`sleep`](crate::time::sleep) of some milliseconds) after an error
    /// rather than poll straight on, or it spins a CPU that the tasks
    /// closing connections need.
    ///
    /// ```
    /// use futures::StreamExt;
    ///
    /// #[wq::main]
    /// async fn main() -> std::io::Result<()> {
    ///     let l = wq::net::TcpListener::bind("127.0.0.1:0").await?;
    ///     let addr = l.local_addr()?;
    ///     let clients = wq::spawn(async move {
    ///         let a = wq::net::TcpStream::connect(addr).await?;
    ///         let b = wq::net::TcpStream::connect(addr).await?;
    ///         std::io::Result::Ok((a, b))
    ///     });
    ///     let incoming = futures::stream::poll_fn(|cx| l.poll_accept(cx).map(Some));
    ///     let conns: Vec<_> = incoming.take(2).collect().await;
    ///     assert!(conns.iter().all(|c| c.is_ok()));
    ///     drop(clients.await.unwrap()?);
    ///     Ok(())
    /// }
    /// ```
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        let (s, peer) = ready!(
            self.io
                .poll_io_shared(cx, Direction::Read, &self.poll_key, |l| {
                    super::accept_retrying(|| l.accept())
                })
        )?;
        Poll::Ready(TcpStream::from_mio(self.io.handle().clone(), s).map(|s| (s, peer)))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.source().local_addr()
    }

    /// Takes the socket's pending error (`SO_ERROR`), clearing it: `None`
    /// if there was none.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.source().take_error()
    }

    /// Sets `IP_TTL` (the connections it accepts inherit it).
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.io.source().set_ttl(ttl)
    }

    /// `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.io.source().ttl()
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        // The slot's waker goes now (the slot itself would go with the
        // registration's `ScheduledIo`).
        self.io.release_shared(&self.poll_key);
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpListener")
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

/// A TCP connection. Implements `futures::io::AsyncRead` and `AsyncWrite`
/// (`close` shuts the write side down).
///
/// ```
/// use futures::{AsyncReadExt, AsyncWriteExt};
///
/// #[wq::main]
/// async fn main() -> std::io::Result<()> {
///     let l = wq::net::TcpListener::bind("127.0.0.1:0").await?;
///     let mut c = wq::net::TcpStream::connect(l.local_addr()?).await?;
///     let (s, _) = l.accept().await?;
///     c.set_nodelay(true)?;
///     c.write_all(b"ping").await?;
///     c.close().await?; // the server reads "ping" then EOF
///     let (mut r, _w) = s.into_split();
///     let mut got = Vec::new();
///     r.read_to_end(&mut got).await?;
///     assert_eq!(got, b"ping");
///     Ok(())
/// }
/// ```
pub struct TcpStream {
    read: Half<mio::net::TcpStream>,
    write: Half<mio::net::TcpStream>,
}

impl TcpStream {
    /// Connects to `addr`, trying each resolved address in turn; the
    /// error is the last address's (e.g. `ConnectionRefused`). A host
    /// name is resolved with the system resolver, which blocks the calling
    /// worker (tokio resolves off it): give literal addresses on hot
    /// paths, or resolve in [`crate::spawn_blocking`].
    ///
    /// # Panics
    /// Outside a wq runtime.
    pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        let driver = super::current("wq::net::TcpStream::connect")?;
        super::each_addr(addr, |a| {
            let driver = driver.clone();
            async move {
                let s = TcpStream::from_mio(driver, mio::net::TcpStream::connect(a)?)?;
                s.read
                    .io
                    .async_io(Direction::Write, |s| match s.take_error() {
                        Ok(Some(e)) | Err(e) => Err(e),
                        Ok(None) => match s.peer_addr() {
                            Ok(_) => Ok(()),
                            // Still connecting: wait for the next edge.
                            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                                Err(io::ErrorKind::WouldBlock.into())
                            }
                            Err(e) => Err(e),
                        },
                    })
                    .await?;
                Ok(s)
            }
        })
        .await
    }

    /// Takes over a connected std socket (made non-blocking here).
    ///
    /// # Errors
    /// `InvalidInput` if the socket is not an IP (TCP) stream socket, is a
    /// listener (a std stream made from another descriptor), or has a
    /// nonzero `SO_LINGER` (its drop would block a worker: see
    /// [`TcpStream::set_linger`]), saying which;
    /// with the call's name, if the descriptor is no socket at all
    /// (`ENOTSOCK`); the OS's own error if the socket cannot be made non-blocking or
    /// registered with the driver (`EEXIST`: a wq socket of this runtime
    /// has it already); an error saying so if the runtime has shut down or
    /// its driver cannot be made (out of file descriptors).
    ///
    /// On an error the socket is closed (it was moved in): where the
    /// descriptor must outlive a refusal (to try it as another kind, say),
    /// pass a duplicate (`try_clone`): a refusal leaves it as it was,
    /// blocking or not (the socket is made non-blocking once registered).
    ///
    /// # Panics
    /// Outside a wq runtime.
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        let driver = super::current("wq::net::TcpStream::from_std")?;
        super::check_socket(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            "wq::net::TcpStream::from_std",
            super::Taken::TcpStream,
        )?;
        let s = TcpStream::from_mio(driver, mio::net::TcpStream::from_std(stream))?;
        super::set_nonblocking(&s)?;
        Ok(s)
    }

    fn from_mio(driver: crate::driver::Handle, s: mio::net::TcpStream) -> io::Result<TcpStream> {
        let io = Arc::new(PollIo::new_tcp_stream(driver, s)?);
        Ok(TcpStream {
            read: Half::new(io.clone()),
            write: Half::new(io),
        })
    }

    fn source(&self) -> &mio::net::TcpStream {
        self.read.io.source()
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.source().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.source().local_addr()
    }

    /// Takes the socket's pending error (`SO_ERROR`), clearing it: `None`
    /// if there was none.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.source().take_error()
    }

    /// Copies what has arrived into `buf` without taking it (`MSG_PEEK`):
    /// waits until at least one byte has, and returns how many were
    /// copied, or 0 at EOF. The next read returns the same bytes. A server
    /// can wait for a client's first bytes under a timeout this way before
    /// handing the stream to code that reads it with no timer of its own.
    ///
    /// It returns at once while any byte is queued, the same bytes each
    /// time: a loop that waits for *more* bytes this way spins; sleep
    /// between looks, or read. An empty `buf` returns `Ok(0)` at once,
    /// which is not EOF.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        peek(&self.read, buf).await
    }

    /// Sets `TCP_NODELAY` (no Nagle delay for small writes).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.source().set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.source().nodelay()
    }

    /// Sets `IP_TTL`: the hop limit of the IPv4 packets it sends (on an
    /// IPv6 socket, of its IPv4-mapped traffic only; IPv6's hop limit,
    /// `IPV6_UNICAST_HOPS`, is not set here).
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.source().set_ttl(ttl)
    }

    /// `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.source().ttl()
    }

    /// Sets `SO_LINGER`: `Some(Duration::ZERO)` makes the stream's close
    /// abortive (the peer gets a reset, unsent data is dropped, and the
    /// socket skips `TIME_WAIT`); `None` is the default graceful close.
    ///
    /// # Errors
    /// A nonzero linger is `InvalidInput`: it makes `close(2)` wait until
    /// the data is sent or the linger ends, blocking the thread that drops
    /// the stream, a worker with every task queued on it (for a graceful
    /// close with a bound, `close` the stream under
    /// [`wq::time::timeout`](crate::time::timeout) and drop it after).
    /// The system's refusal otherwise.
    pub fn set_linger(&self, linger: Option<std::time::Duration>) -> io::Result<()> {
        if linger.is_some_and(|d| !d.is_zero()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "wq::net::TcpStream::set_linger: only Some(Duration::ZERO) (an abortive close) or None: a nonzero linger blocks the thread that drops the stream, a wq worker, until the data is sent; close the stream under wq::time::timeout instead",
            ));
        }
        let value = libc::linger {
            l_onoff: linger.is_some().into(),
            l_linger: 0,
        };
        super::set_option(self.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, value)
    }

    /// `SO_LINGER`: `None` when off (a graceful close); `Duration::MAX`
    /// for one set without a bound (by another owner of the socket).
    pub fn linger(&self) -> io::Result<Option<std::time::Duration>> {
        let off = libc::linger {
            l_onoff: 0,
            l_linger: 0,
        };
        let value = super::get_option(self.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, off)?;
        // A negative linger is one set without a bound (the kernel keeps
        // it as "for ever"): not zero, which is an abortive close.
        Ok(
            (value.l_onoff != 0).then(|| match u64::try_from(value.l_linger) {
                Ok(secs) => std::time::Duration::from_secs(secs),
                Err(_) => std::time::Duration::MAX,
            }),
        )
    }

    /// Sets `TCP_USER_TIMEOUT`: the longest data written may wait unsent
    /// or unacknowledged -- a peer that stopped reading (its window zero)
    /// or vanished -- before the kernel drops the connection and its
    /// queued data (`None`: the kernel's default, retrying for many
    /// minutes). It holds after the stream is dropped too: a server that
    /// closes a connection to a client that never reads otherwise leaves
    /// the unsent answer in kernel memory (the socket in `FIN-WAIT-1`)
    /// for as long as the client's kernel answers its window probes.
    /// Rounded up to whole milliseconds, and at least one
    /// (`Some(Duration::ZERO)` is one millisecond: the kernel's default is
    /// `None`).
    ///
    /// # Errors
    /// A timeout over `i32::MAX` milliseconds (about 24.8 days: the kernel
    /// reads the option as a signed `int`) is `InvalidInput`; the system's
    /// refusal otherwise.
    pub fn set_tcp_user_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        let ms = match timeout {
            None => 0,
            Some(t) => {
                let ms = t.as_nanos().div_ceil(1_000_000).max(1);
                libc::c_int::try_from(ms).map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "TCP_USER_TIMEOUT of {t:?} is over the kernel's {} ms (about 24.8 \
                             days): give a shorter one, or None for the kernel's default",
                            libc::c_int::MAX
                        ),
                    )
                })?
            }
        };
        super::set_option(
            self.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            ms,
        )
    }

    /// `TCP_USER_TIMEOUT` ([`set_tcp_user_timeout`](Self::set_tcp_user_timeout)):
    /// `None` where the kernel's default applies.
    pub fn tcp_user_timeout(&self) -> io::Result<Option<std::time::Duration>> {
        let ms: libc::c_uint = super::get_option(
            self.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            0,
        )?;
        Ok((ms != 0).then(|| std::time::Duration::from_millis(u64::from(ms))))
    }

    /// Shuts down the read side, the write side (the peer reads EOF), or
    /// both. Dropping the stream closes it whatever this says.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.write.shutdown(how)
    }

    /// Splits into a read half and a write half, usable from different
    /// tasks. The connection closes when both are dropped; dropping the
    /// write half alone does not shut the write side down (unlike tokio's
    /// halves): `close` it first for the peer to read EOF.
    pub fn into_split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        (
            OwnedReadHalf { read: self.read },
            OwnedWriteHalf { write: self.write },
        )
    }
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TcpStream")
            .field("local_addr", &self.local_addr().ok())
            .field("peer_addr", &self.peer_addr().ok())
            .finish()
    }
}

/// The read half of a [`TcpStream`] ([`TcpStream::into_split`]).
pub struct OwnedReadHalf {
    read: Half<mio::net::TcpStream>,
}

/// The write half of a [`TcpStream`] ([`TcpStream::into_split`]);
/// `close` shuts the connection's write side down, a drop does not.
pub struct OwnedWriteHalf {
    write: Half<mio::net::TcpStream>,
}

super::halves!(TcpStream, SocketAddr);

impl fmt::Debug for OwnedReadHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("tcp::OwnedReadHalf").finish_non_exhaustive()
    }
}

impl fmt::Debug for OwnedWriteHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("tcp::OwnedWriteHalf")
            .finish_non_exhaustive()
    }
}

impl OwnedReadHalf {
    /// As [`TcpStream::peek`]: waits for bytes and copies them into `buf`
    /// without taking them off the connection.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        peek(&self.read, buf).await
    }
}

/// [`TcpStream::peek`] on a stream's read half.
async fn peek(read: &Half<mio::net::TcpStream>, buf: &mut [u8]) -> io::Result<usize> {
    if buf.is_empty() {
        return Ok(0);
    }
    read.io.async_io(Direction::Read, |s| s.peek(buf)).await
}

async_read!(TcpStream, read);
async_write!(TcpStream, write);
async_read!(OwnedReadHalf, read);
async_write!(OwnedWriteHalf, write);
read_readiness!(TcpStream, read);
write_readiness!(TcpStream, write);
read_readiness!(OwnedReadHalf, read);
write_readiness!(OwnedWriteHalf, write);

super::as_fd!(TcpListener, io.source());
super::as_fd!(TcpStream, source());
super::as_fd!(OwnedReadHalf, read.io.source());
super::as_fd!(OwnedWriteHalf, write.io.source());

#[cfg(all(test, not(loom)))]
mod tests {
    use std::future::poll_fn;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    use super::TcpListener;

    /// Polls from two tasks share the listener's one waiter slot (the
    /// later task's waker replaces the earlier's), and an `accept` future
    /// holds its own only while it lives; a connection wakes the waker of
    /// the last poll only.
    #[test]
    fn poll_accept_keeps_one_waiter_slot() {
        let rt = crate::Runtime::builder().build().unwrap();
        rt.block_on(async {
            let l = std::sync::Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
            for _ in 0..3 {
                let l2 = l.clone();
                crate::spawn(async move {
                    poll_fn(|cx| Poll::Ready(l2.poll_accept(cx).is_pending())).await
                })
                .await
                .unwrap();
            }
            assert_eq!(l.io.waiters(), 1, "one slot for every poll_accept");
            {
                let accept = std::pin::pin!(l.accept());
                let mut accept = accept;
                let pending =
                    poll_fn(|cx| Poll::Ready(accept.as_mut().poll(cx).is_pending())).await;
                assert!(pending);
                assert_eq!(l.io.waiters(), 2);
            }
            assert_eq!(l.io.waiters(), 1, "the accept future's slot went with it");
            // Two wakers in turn: the connection wakes the second.
            let (first, second) = (Arc::new(Count::default()), Arc::new(Count::default()));
            for w in [&first, &second] {
                let waker = Waker::from(w.clone());
                assert!(l.poll_accept(&mut Context::from_waker(&waker)).is_pending());
            }
            let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while second.0.load(Ordering::SeqCst) == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the last poller never woken"
                );
                crate::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            assert_eq!(first.0.load(Ordering::SeqCst), 0, "a replaced waker woken");
        });
    }

    /// The shared slot's swap protocol under contention: two threads poll
    /// `poll_accept` on one listener at once while a third connects, so
    /// polls overlap (each waits in a slot of its own, the later put back
    /// keeps its slot and frees the other's). Every connection is
    /// accepted exactly once, and the slots drawn meanwhile are all
    /// freed but the one the listener keeps.
    #[test]
    fn overlapping_poll_accepts_leak_no_waiter_slot() {
        const CONNECTIONS: usize = 300;
        let rt = crate::Runtime::builder().build().unwrap();
        let l = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let l = Arc::new(l);
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        // Each poller waits in a slot before the first connect (a poll
        // that never met `WouldBlock` draws none).
        let started = Arc::new(std::sync::Barrier::new(3));
        let pollers: Vec<_> = (0..2)
            .map(|_| {
                let (l, accepted, started) = (l.clone(), accepted.clone(), started.clone());
                std::thread::spawn(move || {
                    let waker = Waker::from(Arc::new(Count::default()));
                    let mut cx = Context::from_waker(&waker);
                    assert!(l.poll_accept(&mut cx).is_pending());
                    started.wait();
                    let mut kept = Vec::new();
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                    while accepted.load(Ordering::SeqCst) < CONNECTIONS {
                        assert!(std::time::Instant::now() < deadline, "connections lost");
                        if let Poll::Ready(r) = l.poll_accept(&mut cx) {
                            kept.push(r.unwrap().0);
                            accepted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    kept.len()
                })
            })
            .collect();
        started.wait();
        let clients: Vec<_> = (0..CONNECTIONS)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let total: usize = pollers.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, CONNECTIONS, "a connection accepted twice or lost");
        assert_eq!(accepted.load(Ordering::SeqCst), CONNECTIONS);
        assert_eq!(l.io.waiters(), 1, "slots drawn by overlapping polls leaked");
        drop(clients);
    }

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}
