//! Unix domain datagram sockets: [`UnixDatagram`].

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use crate::driver::registration::{Datagram, PollIo};

/// A Unix domain datagram socket: a service manager's notification socket
/// (`NOTIFY_SOCKET`), a local log sink, a pair of processes trading
/// messages. Every operation takes `&self`: share it (an `Arc`) between a
/// sending and a receiving task, or among several receivers.
///
/// Addresses are paths. An abstract one (Linux's, `@name`: some service
/// managers' `NOTIFY_SOCKET`) is reached through std, then taken over:
/// `std::os::unix::net::UnixDatagram::unbound()`, `connect_addr` with
/// `SocketAddr::from_abstract_name` (`std::os::linux::net::SocketAddrExt`),
/// then [`UnixDatagram::from_std`] and [`send`](UnixDatagram::send).
///
/// ```
/// #[wq::main]
/// async fn main() -> std::io::Result<()> {
///     let dir = std::env::temp_dir().join(format!("wq-doc-dgram-{}", std::process::id()));
///     std::fs::create_dir_all(&dir)?;
///     let (a_path, b_path) = (dir.join("a.sock"), dir.join("b.sock"));
///     let _ = std::fs::remove_file(&a_path);
///     let _ = std::fs::remove_file(&b_path);
///     let a = wq::net::UnixDatagram::bind(&a_path)?;
///     let b = wq::net::UnixDatagram::bind(&b_path)?;
///     a.send_to(b"hi", &b_path).await?;
///     let mut buf = [0; 16];
///     let (n, from) = b.recv_from(&mut buf).await?;
///     assert_eq!(&buf[..n], b"hi");
///     assert_eq!(from.as_pathname(), Some(a_path.as_path()));
///     std::fs::remove_dir_all(&dir)?;
///     Ok(())
/// }
/// ```
pub struct UnixDatagram {
    sock: Datagram<mio::net::UnixDatagram>,
    /// [`UnixDatagram::poll_send_to`]'s backoff.
    send_wait: std::sync::Mutex<Backoff>,
}

/// A refused unconnected send's wait ([`UnixDatagram::send_to`]): its timer
/// while armed, and the next pause.
#[derive(Debug)]
struct Backoff {
    sleep: Option<crate::time::Sleep>,
    pause: std::time::Duration,
}

/// The first pause after a refused unconnected send.
const FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);
/// The longest.
const LAST_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            sleep: None,
            pause: FIRST_PAUSE,
        }
    }
}

impl UnixDatagram {
    /// Binds to `path`. The socket file is not removed on drop (as with
    /// std); remove a stale one before binding.
    ///
    /// # Panics
    /// Outside a wq runtime.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixDatagram> {
        let driver = super::current("wq::net::UnixDatagram::bind")?;
        let path = path.as_ref();
        let socket = mio::net::UnixDatagram::bind(path)?;
        // Not registered (the runtime shutting down, say): the socket file
        // this call made goes too, or the next bind to `path` would find
        // it in use (as `UnixListener::bind` does).
        UnixDatagram::from_mio(driver, socket).inspect_err(|_| {
            let _ = std::fs::remove_file(path);
        })
    }

    /// A socket bound to no path: it can send (to a path, or to the
    /// address it is [`connect`](UnixDatagram::connect)ed to), and
    /// receive only what its peer sends back to it.
    ///
    /// # Panics
    /// Outside a wq runtime.
    pub fn unbound() -> io::Result<UnixDatagram> {
        let driver = super::current("wq::net::UnixDatagram::unbound")?;
        UnixDatagram::from_mio(driver, mio::net::UnixDatagram::unbound()?)
    }

    /// A connected pair (`socketpair`).
    ///
    /// # Panics
    /// Outside a wq runtime.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let driver = super::current("wq::net::UnixDatagram::pair")?;
        let (a, b) = mio::net::UnixDatagram::pair()?;
        Ok((
            UnixDatagram::from_mio(driver.clone(), a)?,
            UnixDatagram::from_mio(driver, b)?,
        ))
    }

    /// Takes over a std datagram socket (made non-blocking here): one
    /// inherited from a service manager, or bound to an abstract name
    /// (`SocketAddrExt::from_abstract_name`).
    ///
    /// # Errors
    /// The OS's own error if the socket cannot be made non-blocking or
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
    pub fn from_std(socket: std::os::unix::net::UnixDatagram) -> io::Result<UnixDatagram> {
        let driver = super::current("wq::net::UnixDatagram::from_std")?;
        super::check_socket(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            "wq::net::UnixDatagram::from_std",
            super::Taken::UnixDatagram,
        )?;
        let s = UnixDatagram::from_mio(driver, mio::net::UnixDatagram::from_std(socket))?;
        super::set_nonblocking(&s)?;
        Ok(s)
    }

    fn from_mio(
        driver: crate::driver::Handle,
        socket: mio::net::UnixDatagram,
    ) -> io::Result<UnixDatagram> {
        // Best effort: `shut` needs it, maybe when no descriptor is left.
        let _ = unnamed();
        Ok(UnixDatagram {
            sock: Datagram::new(PollIo::new(driver, socket)?),
            send_wait: Default::default(),
        })
    }

    /// Sets the default destination of [`send`](UnixDatagram::send) and
    /// the only source [`recv`](UnixDatagram::recv) accepts, from then on:
    /// what was queued before the connect stays, so a datagram from
    /// another socket that came earlier is still received. Immediate: a
    /// datagram socket's connect only records the address.
    pub fn connect(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.sock.source().connect(path)
    }

    /// Sends `buf` as one datagram to the connected address (on a socket
    /// not connected, an error: `ENOTCONN`). Waits while the receiver's
    /// queue is full.
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.sock.send_with(|s| s.send(buf)).await
    }

    /// Receives one datagram from the connected address. A datagram longer
    /// than `buf` is truncated to it, and the rest is lost without a word:
    /// size `buf` for the largest datagram expected.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv_with(|s| s.recv(buf), || Ok(0)).await
    }

    /// Sends `buf` as one datagram to the socket bound at `path`. Waits
    /// while the receiver's queue is full.
    ///
    /// It waits on a timer, not on the socket's readiness: Linux reports
    /// an unconnected sender writable whatever the receiver's queue, and
    /// each refused send wakes it again (the datagram it could not queue
    /// is freed), so a readiness-driven wait would try again and again
    /// while the queue stays full. So it tries again after 1 ms, then
    /// twice as long each time, up to every 50 ms. A sender that sends to
    /// one receiver often should [`connect`](UnixDatagram::connect) to it
    /// and use [`send`](UnixDatagram::send): a connected sender is told
    /// when the receiver makes room, at once.
    pub async fn send_to(&self, buf: &[u8], path: impl AsRef<Path>) -> io::Result<usize> {
        let path = path.as_ref();
        let mut wait = Backoff::default();
        std::future::poll_fn(|cx| self.poll_send_to_with(cx, buf, path, &mut wait)).await
    }

    /// A `send_to` waiting on `wait`'s timer after a refusal (module docs
    /// of [`send_to`](UnixDatagram::send_to)).
    fn poll_send_to_with(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        path: &Path,
        wait: &mut Backoff,
    ) -> Poll<io::Result<usize>> {
        let driver = self.sock.driver();
        loop {
            // No send is made after the runtime's shutdown.
            if driver.is_shutdown() {
                wait.sleep = None;
                return Poll::Ready(Err(crate::driver::scheduled_io::shutdown_error()));
            }
            if let Some(sleep) = &mut wait.sleep {
                // A shutdown after the check above ends the timer too.
                let waited = std::task::ready!(sleep.poll_unless_shut_down(cx));
                wait.sleep = None;
                if waited.is_err() {
                    return Poll::Ready(Err(crate::driver::scheduled_io::shutdown_error()));
                }
            }
            // An operation of the task's budget, as every socket's
            // (`coop`): a loop of sends that succeed yields in time.
            std::task::ready!(crate::coop::poll_proceed(cx));
            match self.sock.source().send_to(buf, path) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait.sleep = Some(crate::time::sleep_on(driver.clone(), wait.pause));
                    wait.pause = (wait.pause * 2).min(LAST_PAUSE);
                }
                sent => {
                    wait.pause = FIRST_PAUSE;
                    crate::coop::spend();
                    return Poll::Ready(sent);
                }
            }
        }
    }

    /// Receives one datagram and its sender's address (unnamed for an
    /// [`unbound`](UnixDatagram::unbound) sender); truncated to `buf` as in
    /// [`recv`](UnixDatagram::recv).
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock.recv_with(|s| s.recv_from(buf), shut).await
    }

    /// [`recv_from`](UnixDatagram::recv_from) for code that keeps no
    /// future; as [`UdpSocket::poll_recv_from`](super::UdpSocket::poll_recv_from):
    /// the socket wakes the task that polled last, per direction.
    pub fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        self.sock.poll_recv_with(cx, |s| s.recv_from(buf), shut)
    }

    /// [`recv_from`](UnixDatagram::recv_from) without waiting:
    /// `WouldBlock` when no datagram is queued.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock.try_recv_with(|s| s.recv_from(buf), shut)
    }

    /// [`send_to`](UnixDatagram::send_to) without waiting: `WouldBlock`
    /// when the receiver's queue is full (retry on a timer: the socket's
    /// readiness says nothing of it, see [`send_to`](UnixDatagram::send_to)).
    pub fn try_send_to(&self, buf: &[u8], path: impl AsRef<Path>) -> io::Result<usize> {
        let path = path.as_ref();
        self.sock.try_send_with(|s| s.send_to(buf, path))
    }

    /// [`send_to`](UnixDatagram::send_to) for code that keeps no future:
    /// refused by a full receiver, it waits on the same backoff timer, one
    /// per socket, which wakes the task that polled last (as
    /// [`poll_recv_from`](UnixDatagram::poll_recv_from)'s waiter slot).
    pub fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        path: impl AsRef<Path>,
    ) -> Poll<io::Result<usize>> {
        let mut wait = crate::loom::lock(&self.send_wait);
        self.poll_send_to_with(cx, buf, path.as_ref(), &mut wait)
    }

    /// The local address (unnamed for an unbound socket).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.source().local_addr()
    }

    /// Takes the socket's pending error (`SO_ERROR`), clearing it: `None`
    /// if there was none.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.sock.source().take_error()
    }

    /// The connected address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.source().peer_addr()
    }

    /// Shuts the reading side, the writing side or both down
    /// (`shutdown(2)`).
    ///
    /// Shut for reading, a receive returns what the blocking one would
    /// once nothing is queued: 0 bytes (from an unnamed address, for
    /// [`recv_from`](UnixDatagram::recv_from)), at once and every time
    /// ([`readable`](UnixDatagram::readable) too), where Linux's
    /// non-blocking receive says `WouldBlock` for ever. (A `shutdown(2)`
    /// made on the descriptor directly ends a waiting receive the same
    /// way, once the driver reports it.)
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let read = matches!(how, Shutdown::Read | Shutdown::Both);
        let write = matches!(how, Shutdown::Write | Shutdown::Both);
        self.sock.shutdown(read, write, |s| s.shutdown(how))
    }
}

impl fmt::Debug for UnixDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixDatagram")
            .field("local_addr", &self.local_addr().ok())
            .field("peer_addr", &self.peer_addr().ok())
            .finish()
    }
}

super::as_fd!(UnixDatagram, sock.source());

super::datagram::datagram_methods!(UnixDatagram);

/// What [`UnixDatagram::recv_from`] returns once the socket is shut for
/// reading and has nothing queued, as the blocking call: 0 bytes from an
/// unnamed address (`Datagram`'s docs, "Shut for reading").
fn shut() -> io::Result<(usize, SocketAddr)> {
    Ok((0, unnamed()?))
}

/// The unnamed address. std makes no way to build it but an unbound
/// socket's own address, so it is made once per process, when the first
/// socket is registered (a process out of descriptors when it shuts a
/// socket down, or later, still gets it), and kept.
fn unnamed() -> io::Result<SocketAddr> {
    static UNNAMED: OnceLock<SocketAddr> = OnceLock::new();
    if let Some(addr) = UNNAMED.get() {
        return Ok(addr.clone());
    }
    let addr = std::os::unix::net::UnixDatagram::unbound()?.local_addr()?;
    Ok(UNNAMED.get_or_init(|| addr).clone())
}
