//! Unix domain stream sockets: [`UnixListener`], [`UnixStream`] and its
//! owned halves.

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use super::stream::{Half, async_read, async_write, read_readiness, write_readiness};
use crate::driver::registration::{PollIo, SharedKey};
use crate::driver::scheduled_io::Direction;

/// A Unix domain socket listening for connections.
///
/// ```
/// use futures::{AsyncReadExt, AsyncWriteExt};
///
/// #[wq::main]
/// async fn main() -> std::io::Result<()> {
///     let path = std::env::temp_dir().join(format!("wq-doc-{}.sock", std::process::id()));
///     let _ = std::fs::remove_file(&path);
///     let l = wq::net::UnixListener::bind(&path)?;
///     let mut c = wq::net::UnixStream::connect(&path).await?;
///     let (mut s, _) = l.accept().await?;
///     c.write_all(b"hi").await?;
///     let mut buf = [0; 2];
///     s.read_exact(&mut buf).await?;
///     assert_eq!(&buf, b"hi");
///     std::fs::remove_file(&path)?;
///     Ok(())
/// }
/// ```
pub struct UnixListener {
    io: PollIo<mio::net::UnixListener>,
    /// [`UnixListener::poll_accept`]'s waiter slot.
    poll_key: SharedKey,
}

impl UnixListener {
    /// Binds to `path` and listens. The socket file is not removed on
    /// drop (as with std); remove a stale one before binding.
    ///
    /// # Panics
    /// Outside a wq runtime.
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        let path = path.as_ref();
        let driver = super::current("wq::net::UnixListener::bind")?;
        let l = mio::net::UnixListener::bind(path)?;
        let io = super::listen_backlog(std::os::fd::AsRawFd::as_raw_fd(&l))
            .and_then(|()| PollIo::new(driver, l));
        match io {
            Ok(io) => Ok(UnixListener {
                io,
                poll_key: SharedKey::default(),
            }),
            Err(e) => {
                // The file this call made would make the next bind fail
                // with `AddrInUse`.
                let _ = std::fs::remove_file(path);
                Err(e)
            }
        }
    }

    /// Takes over a listening std socket (made non-blocking here): one
    /// inherited from a service manager (systemd's socket activation), or
    /// bound to an abstract name (`SocketAddrExt::from_abstract_name`).
    ///
    /// # Errors
    /// `InvalidInput` if the socket is not a listening Unix stream socket
    /// (a `UnixListener` made from another descriptor), saying which; with
    /// the call's name, if the descriptor is no socket at all; the OS's own
    /// error if it cannot be registered with the driver (`EEXIST`: a wq
    /// socket of this runtime has it already); an error saying so if the
    /// runtime has shut down or its driver cannot be made.
    ///
    /// On an error the socket is closed (it was moved in): where the
    /// descriptor must outlive a refusal (to try it as another kind, say),
    /// pass a duplicate (`try_clone`): a refusal leaves it as it was,
    /// blocking or not (the socket is made non-blocking once registered).
    ///
    /// # Panics
    /// Outside a wq runtime.
    pub fn from_std(listener: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
        let driver = super::current("wq::net::UnixListener::from_std")?;
        super::check_socket(
            std::os::fd::AsRawFd::as_raw_fd(&listener),
            "wq::net::UnixListener::from_std",
            super::Taken::UnixListener,
        )?;
        let l = UnixListener {
            io: PollIo::new(driver, mio::net::UnixListener::from_std(listener))?,
            poll_key: SharedKey::default(),
        };
        super::set_nonblocking(&l)?;
        Ok(l)
    }

    /// Waits for a connection. Several tasks may wait on one listener
    /// (through an `Arc`); each connection goes to one of them. What is
    /// returned is the listener's own error (out of file descriptors: back
    /// off before accepting again), or the registration's of the
    /// connection taken: that connection is closed then, and its client
    /// reads an end (the runtime shut down, or epoll refused the
    /// descriptor: `ENOSPC` past `fs.epoll.max_user_watches`).
    pub async fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (s, peer) = self
            .io
            .async_io(Direction::Read, |l| super::accept_retrying(|| accept(l)))
            .await?;
        Ok((UnixStream::from_mio(self.io.handle().clone(), s)?, peer))
    }

    /// [`accept`](UnixListener::accept) for code that keeps no future (a
    /// `poll_*` method of its own, a `Stream` of connections); as
    /// [`TcpListener::poll_accept`](super::TcpListener::poll_accept): the
    /// listener wakes the task that polled last, and after an error
    /// (out of file descriptors) the caller should pause before polling
    /// again.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(UnixStream, SocketAddr)>> {
        let (s, peer) = ready!(
            self.io
                .poll_io_shared(cx, Direction::Read, &self.poll_key, |l| {
                    super::accept_retrying(|| accept(l))
                })
        )?;
        Poll::Ready(UnixStream::from_mio(self.io.handle().clone(), s).map(|s| (s, peer)))
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
}

/// One `accept4` (non-blocking, close-on-exec), the peer's address read
/// by std (`getpeername`). Not mio's accept: it parses the address itself,
/// and a peer bound to a path of all 108 bytes of `sun_path` (no NUL; the
/// kernel reports a length of 111) made it slice past the array and
/// panic, and a peer bound to an abstract name came out unnamed. std's
/// parsing takes both.
fn accept(l: &mio::net::UnixListener) -> io::Result<(mio::net::UnixStream, SocketAddr)> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: null address arguments: `accept4` writes through neither.
    let fd = unsafe {
        libc::accept4(
            l.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor `accept4` just made, owned by nothing else.
    let s = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    // The kernel keeps an accepted socket's peer while it lives (even a
    // peer closed since): this fails only as `accept` itself would have.
    let peer = s.peer_addr()?;
    Ok((mio::net::UnixStream::from_std(s), peer))
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        // The slot's waker goes now (the slot itself would go with the
        // registration's `ScheduledIo`).
        self.io.release_shared(&self.poll_key);
    }
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixListener")
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

/// A Unix domain stream connection. Implements `futures::io::AsyncRead`
/// and `AsyncWrite` (`close` shuts the write side down).
pub struct UnixStream {
    read: Half<mio::net::UnixStream>,
    write: Half<mio::net::UnixStream>,
}

impl UnixStream {
    /// Connects to the socket at `path`. A listener whose queue is full
    /// (the connect's `EAGAIN`: Unix sockets give no readiness for it) is
    /// tried again, backing off from 1 to 50 ms, until it takes the
    /// connection: bound the wait with [`wq::time::timeout`](crate::time::timeout).
    ///
    /// # Panics
    /// Outside a wq runtime.
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let path = path.as_ref();
        UnixStream::connect_with("wq::net::UnixStream::connect", || {
            mio::net::UnixStream::connect(path)
        })
        .await
    }

    /// Connects to the socket at `addr`: as [`UnixStream::connect`], and
    /// takes the addresses a path cannot say, a Linux abstract name
    /// (`std::os::linux::net::SocketAddrExt::from_abstract_name`) among
    /// them.
    ///
    /// ```
    /// use std::os::linux::net::SocketAddrExt;
    /// use std::os::unix::net::SocketAddr;
    ///
    /// # let rt = wq::Runtime::new().unwrap();
    /// rt.block_on(async {
    ///     let name = format!("wq-doc-{}", std::process::id());
    ///     let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    ///     let listener = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    ///     let listener = wq::net::UnixListener::from_std(listener)?;
    ///     let _client = wq::net::UnixStream::connect_addr(&addr).await?;
    ///     let (_server, _) = listener.accept().await?;
    ///     std::io::Result::Ok(())
    /// })
    /// .unwrap();
    /// ```
    ///
    /// # Panics
    /// Outside a wq runtime.
    pub async fn connect_addr(addr: &SocketAddr) -> io::Result<UnixStream> {
        UnixStream::connect_with("wq::net::UnixStream::connect_addr", || {
            mio::net::UnixStream::connect_addr(addr)
        })
        .await
    }

    /// A connect of `connect`'s, retried while the listener's queue is
    /// full, then awaited (see [`UnixStream::connect`]).
    async fn connect_with(
        what: &str,
        mut connect: impl FnMut() -> io::Result<mio::net::UnixStream>,
    ) -> io::Result<UnixStream> {
        let driver = super::current(what)?;
        let mut pause = std::time::Duration::from_millis(1);
        let sock = loop {
            match connect() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // On the socket's own driver: the polling thread may
                    // be in another runtime, or none.
                    let mut wait = crate::time::sleep_on(driver.clone(), pause);
                    std::future::poll_fn(|cx| wait.poll_unless_shut_down(cx))
                        .await
                        .map_err(|_| crate::driver::scheduled_io::shutdown_error())?;
                    pause = (pause * 2).min(std::time::Duration::from_millis(50));
                }
                r => break r?,
            }
        };
        let s = UnixStream::from_mio(driver, sock)?;
        s.read
            .io
            .async_io(Direction::Write, |s| match s.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => Ok(()),
            })
            .await?;
        Ok(s)
    }

    /// A connected pair (`socketpair`).
    ///
    /// # Panics
    /// Outside a wq runtime.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let driver = super::current("wq::net::UnixStream::pair")?;
        let (a, b) = mio::net::UnixStream::pair()?;
        Ok((
            UnixStream::from_mio(driver.clone(), a)?,
            UnixStream::from_mio(driver, b)?,
        ))
    }

    /// Takes over a connected std stream (made non-blocking here).
    ///
    /// # Errors
    /// `InvalidInput` if the socket is not a Unix domain stream socket, or
    /// is a listener (a std stream made from another descriptor), saying
    /// which; with the call's name, if the descriptor is no socket at all
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
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        let driver = super::current("wq::net::UnixStream::from_std")?;
        super::check_socket(
            std::os::fd::AsRawFd::as_raw_fd(&stream),
            "wq::net::UnixStream::from_std",
            super::Taken::UnixStream,
        )?;
        let s = UnixStream::from_mio(driver, mio::net::UnixStream::from_std(stream))?;
        super::set_nonblocking(&s)?;
        Ok(s)
    }

    fn from_mio(driver: crate::driver::Handle, s: mio::net::UnixStream) -> io::Result<UnixStream> {
        let io = Arc::new(PollIo::new(driver, s)?);
        Ok(UnixStream {
            read: Half::new(io.clone()),
            write: Half::new(io),
        })
    }

    fn source(&self) -> &mio::net::UnixStream {
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

    /// The peer's credentials (`SO_PEERCRED`): its process, user and group
    /// at the time it connected (or the pair was made), as the kernel
    /// recorded them, which the peer cannot forge.
    pub fn peer_cred(&self) -> io::Result<UCred> {
        let none = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let cred = super::get_option(self.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERCRED, none)?;
        Ok(UCred {
            pid: cred.pid,
            uid: cred.uid,
            gid: cred.gid,
        })
    }

    /// Shuts down the read side, the write side, or both. A task waiting
    /// for room to write is woken (Linux reports no event for it): its
    /// next write fails.
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

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnixStream").finish_non_exhaustive()
    }
}

/// A Unix stream peer's credentials ([`UnixStream::peer_cred`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UCred {
    pid: libc::pid_t,
    uid: libc::uid_t,
    gid: libc::gid_t,
}

impl UCred {
    /// The peer's process ID (as seen from this process's PID namespace;
    /// 0 where the peer's process is not visible there).
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// The peer's effective user ID.
    pub fn uid(&self) -> libc::uid_t {
        self.uid
    }

    /// The peer's effective group ID.
    pub fn gid(&self) -> libc::gid_t {
        self.gid
    }
}

/// The read half of a [`UnixStream`] ([`UnixStream::into_split`]).
pub struct OwnedReadHalf {
    read: Half<mio::net::UnixStream>,
}

/// The write half of a [`UnixStream`] ([`UnixStream::into_split`]);
/// `close` shuts the connection's write side down, a drop does not.
pub struct OwnedWriteHalf {
    write: Half<mio::net::UnixStream>,
}

super::halves!(UnixStream, SocketAddr);

impl fmt::Debug for OwnedReadHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("unix::OwnedReadHalf")
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for OwnedWriteHalf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("unix::OwnedWriteHalf")
            .finish_non_exhaustive()
    }
}

async_read!(UnixStream, read);
async_write!(UnixStream, write);
async_read!(OwnedReadHalf, read);
async_write!(OwnedWriteHalf, write);
read_readiness!(UnixStream, read);
write_readiness!(UnixStream, write);
read_readiness!(OwnedReadHalf, read);
write_readiness!(OwnedWriteHalf, write);

super::as_fd!(UnixListener, io.source());
super::as_fd!(UnixStream, source());
super::as_fd!(OwnedReadHalf, read.io.source());
super::as_fd!(OwnedWriteHalf, write.io.source());
