//! Sockets on the runtime's I/O driver: TCP, UDP and Unix domain sockets.
//!
//! Every socket is non-blocking and registered with the runtime's driver
//! (edge-triggered epoll through mio); an operation that would block parks
//! the task until the driver sees the socket ready, and the wake goes
//! through the task's home pool like any other (`driver`'s module docs).
//! Two waits are on a backoff timer instead (1 ms doubling to 50 ms),
//! where Linux's readiness says nothing useful: a Unix stream's connect to
//! a listener whose backlog is full (`EAGAIN`, no readiness for it), and
//! an unconnected Unix datagram `send_to` to a full receiver (reported
//! writable all along, and woken again by each refusal).
//! Streams implement `futures::io::AsyncRead` and `AsyncWrite`
//! (`poll_close` shuts the write side down), so `futures`' combinators and
//! `wq::hyper::WqIo` (feature `hyper`) work with them.
//!
//! Addresses are anything [`std::net::ToSocketAddrs`] takes (`"127.0.0.1:80"`,
//! `("::1", 80)`, a `SocketAddr`); each resolved address is tried in turn
//! and the last error is returned if none works. A host name is resolved
//! with the system resolver, which blocks the calling worker: give literal
//! addresses on hot paths, or resolve in [`crate::spawn_blocking`].
//!
//! Errors are the OS's own `std::io::Error`s (`ConnectionRefused`,
//! `AddrInUse` ..., `raw_os_error` kept): add the address or path where
//! you report them. A few say what to do too (the open-file limit reached
//! as the runtime's I/O driver is made, the epoll watch limit, a
//! descriptor moved in that is no socket): those keep the OS error's
//! `kind()`, and the OS error itself, with its `raw_os_error`, is their
//! [`source()`](std::error::Error::source). Creating a socket outside a wq
//! runtime panics with a message naming the call, as [`crate::spawn`] does.
//! Dropping a socket deregisters it from epoll before its fd is closed. No
//! task can be waiting on it then: every operation borrows the socket, and
//! a stream's owned halves share it until both are dropped.
//!
//! ```
//! use futures::{AsyncReadExt, AsyncWriteExt};
//! use wq::net::{TcpListener, TcpStream};
//!
//! #[wq::main]
//! async fn main() -> std::io::Result<()> {
//!     let listener = TcpListener::bind("127.0.0.1:0").await?;
//!     let addr = listener.local_addr()?;
//!     let server = wq::spawn(async move {
//!         let (mut s, _) = listener.accept().await?;
//!         let mut buf = [0; 5];
//!         s.read_exact(&mut buf).await?;
//!         s.write_all(&buf).await?;
//!         std::io::Result::Ok(())
//!     });
//!     let mut c = TcpStream::connect(addr).await?;
//!     c.write_all(b"hello").await?;
//!     let mut back = [0; 5];
//!     c.read_exact(&mut back).await?;
//!     assert_eq!(&back, b"hello");
//!     server.await.unwrap()?;
//!     Ok(())
//! }
//! ```

mod datagram;
mod stream;
pub mod tcp;
mod udp;
pub mod unix;
mod unix_datagram;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixListener, UnixStream};
pub use unix_datagram::UnixDatagram;

use crate::driver;

/// Implements `AsRawFd` and `AsFd` for a socket type whose mio source is
/// `self.$($src)*`.
macro_rules! as_fd {
    ($ty:ty, $($src:tt)*) => {
        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                std::os::fd::AsRawFd::as_raw_fd(self.$($src)*)
            }
        }

        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                std::os::fd::AsFd::as_fd(self.$($src)*)
            }
        }
    };
}

use as_fd;

/// A stream's halves' addresses, and putting them back together
/// (`reunite`, [`ReuniteError`](tcp::ReuniteError) when they are of two
/// streams), in the module of `$stream`, whose halves are `OwnedReadHalf
/// { read }` and `OwnedWriteHalf { write }`.
macro_rules! halves {
    ($stream:ident, $addr:ty) => {
        impl OwnedReadHalf {
            /// The remote address.
            pub fn peer_addr(&self) -> io::Result<$addr> {
                self.read.io.source().peer_addr()
            }

            /// The local address.
            pub fn local_addr(&self) -> io::Result<$addr> {
                self.read.io.source().local_addr()
            }

            /// Puts the stream back together from its two halves.
            ///
            /// # Errors
            /// [`ReuniteError`], holding both halves, if `write` is the
            /// other half of another stream.
            pub fn reunite(self, write: OwnedWriteHalf) -> Result<$stream, ReuniteError> {
                if std::sync::Arc::ptr_eq(&self.read.io, &write.write.io) {
                    Ok($stream {
                        read: self.read,
                        write: write.write,
                    })
                } else {
                    Err(ReuniteError(self, write))
                }
            }
        }

        impl OwnedWriteHalf {
            /// The remote address.
            pub fn peer_addr(&self) -> io::Result<$addr> {
                self.write.io.source().peer_addr()
            }

            /// The local address.
            pub fn local_addr(&self) -> io::Result<$addr> {
                self.write.io.source().local_addr()
            }

            /// Puts the stream back together from its two halves (as
            /// [`OwnedReadHalf::reunite`]).
            ///
            /// # Errors
            /// [`ReuniteError`], holding both halves, if `read` is the
            /// other half of another stream.
            pub fn reunite(self, read: OwnedReadHalf) -> Result<$stream, ReuniteError> {
                read.reunite(self)
            }
        }

        #[doc = concat!(
                                    "The two halves given to `reunite` were of two different `",
                                    stringify!($stream),
                                    "`s: both, given back."
                                )]
        #[derive(Debug)]
        pub struct ReuniteError(pub OwnedReadHalf, pub OwnedWriteHalf);

        impl fmt::Display for ReuniteError {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    concat!(
                        "the read half and the write half are of two different ",
                        stringify!($stream),
                        "s: only the halves of one stream reunite"
                    )
                )
            }
        }

        impl std::error::Error for ReuniteError {}
    };
}

use halves;

/// The current runtime's driver, or a panic naming `what` outside one.
fn current(what: &str) -> io::Result<driver::Handle> {
    crate::scheduler::services::current_driver(what)
}

/// The listen backlog of wq's listeners: the kernel's maximum (Linux
/// takes a larger one, -1 as unsigned, as `net.core.somaxconn`, 4096 by
/// default since 5.4). mio's TCP `bind` listens with std's 128: a burst
/// of connects beyond it has SYNs dropped, and those clients wait a
/// second for their retransmit. (A fixed 1,024 shrank a Unix listener's
/// queue, which mio opens with the maximum as std does.)
const LISTEN_BACKLOG: libc::c_int = -1;

/// Raises a listening socket's backlog to [`LISTEN_BACKLOG`] (`listen`
/// again on a listening socket only changes its backlog).
fn listen_backlog(fd: std::os::fd::RawFd) -> io::Result<()> {
    // SAFETY: listen(2) on a file descriptor the caller owns.
    if unsafe { libc::listen(fd, LISTEN_BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A C type a socket option is read into or written from.
///
/// # Safety
/// Plain data: every bit pattern of its size is a value of it (no `bool`,
/// no enum, no reference), so whatever the kernel writes is one.
unsafe trait OptionValue: Copy {}
// SAFETY: integers and structs of integers, with no padding.
unsafe impl OptionValue for libc::c_int {}
// SAFETY: as above.
unsafe impl OptionValue for libc::c_uint {}
// SAFETY: as above (two `c_int`s).
unsafe impl OptionValue for libc::linger {}
// SAFETY: as above (`pid_t`, `uid_t`, `gid_t`).
unsafe impl OptionValue for libc::ucred {}

/// getsockopt(2): option `opt` at `level` of socket `fd`, read into a `T`
/// starting as `value`.
fn get_option<T: OptionValue>(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    mut value: T,
) -> io::Result<T> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `value`, a `T`
    // of that size, of which any bytes are a value (`OptionValue`).
    let rc = unsafe { libc::getsockopt(fd, level, opt, (&raw mut value).cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// setsockopt(2): option `opt` at `level` of socket `fd`, from `value`.
fn set_option<T: OptionValue>(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    value: T,
) -> io::Result<()> {
    // SAFETY: setsockopt(2) reads `size_of::<T>()` bytes of `value`.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&raw const value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes a socket taken over from std (`from_std`) non-blocking, once it
/// is registered with the driver: `O_NONBLOCK` belongs to the open file,
/// which a duplicate the caller kept (`try_clone`) shares, so a refused
/// registration must not have changed it (a blocking fallback on the
/// duplicate would fail with `WouldBlock`). Nothing reads or writes the
/// socket in between; epoll takes a blocking one.
fn set_nonblocking(socket: &impl std::os::fd::AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: FIONBIO reads the int it is pointed at, on a descriptor the
    // caller owns.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::FIONBIO, &on) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether an accept(2) error belongs to the connection being accepted,
/// not the listener: Linux reports errors already pending on the new
/// connection as accept's own, and its man page says to retry them as
/// `EAGAIN` (a server's `accept().await?` loop would stop on one client's
/// reset otherwise).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EPROTO
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}

/// What a `from_std` takes: a listener or a connected stream, TCP or Unix.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Taken {
    TcpListener,
    UnixListener,
    TcpStream,
    UnixStream,
    UdpSocket,
    UnixDatagram,
}

impl Taken {
    fn unix(self) -> bool {
        matches!(
            self,
            Taken::UnixListener | Taken::UnixStream | Taken::UnixDatagram
        )
    }

    fn datagram(self) -> bool {
        matches!(self, Taken::UdpSocket | Taken::UnixDatagram)
    }

    fn listener(self) -> bool {
        matches!(self, Taken::TcpListener | Taken::UnixListener)
    }

    /// The wq type of the same role for the other family.
    fn other_family(self) -> &'static str {
        match self {
            Taken::TcpListener => "a Unix socket's listener is wq::net::UnixListener",
            Taken::UnixListener => "a TCP listener is wq::net::TcpListener",
            Taken::TcpStream => "a Unix stream is wq::net::UnixStream",
            Taken::UnixStream => "a TCP stream is wq::net::TcpStream",
            Taken::UdpSocket => "a Unix datagram socket is wq::net::UnixDatagram",
            Taken::UnixDatagram => "a UDP socket is wq::net::UdpSocket",
        }
    }
}

/// Whether `fd` is the socket `taken` needs, checked once as a `from_std`
/// takes a socket made elsewhere: an error saying what it is instead, for
/// `what`.
/// - A listener must be a listening stream socket, as `accept` needs: so
///   that every `accept` error that could also be the listener's own
///   (`EOPNOTSUPP`: not a stream socket) is one of the connection being
///   accepted, which [`accept_retrying`] skips.
/// - A stream must be a stream socket that does not listen.
/// - A datagram socket must be one (`SOCK_DGRAM`).
/// - Each must be of the family the caller reads addresses of, and reads
///   as: a Unix (or vsock) listener passed as a TCP one had each accept
///   take a client off its queue and drop it (mio reads the peer's address
///   as an IP one: `InvalidInput`), and the other way round; a Unix stream
///   passed as a TCP one got TCP's rule that a short read drained the
///   socket (`stream::StreamSource::SHORT_READ_DRAINS`), and bytes queued
///   behind a message carrying descriptors waited for an event that had
///   come already; a Unix datagram socket passed as a UDP one (an
///   inherited descriptor) had each `recv_from` take a datagram and fail
///   on its sender's address, and the other way round.
/// - An IP stream socket must be TCP's (or MPTCP's): an SCTP one is a
///   stream socket whose reads give one message each. And its linger
///   must be off or zero: a nonzero one blocks the thread that drops it,
///   a worker (inherited by a listener's connections).
fn check_socket(fd: std::os::fd::RawFd, what: &str, taken: Taken) -> io::Result<()> {
    let closed = "this socket, moved in, is closed now: pass a try_clone() to keep a descriptor";
    let get = |opt| {
        get_option(fd, libc::SOL_SOCKET, opt, 0 as libc::c_int).map_err(|e| {
            let message = format!("{what}: not a socket wq can take: {e}");
            crate::driver::with_hint(e, message)
        })
    };
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what}: {why} ({closed})"),
        ))
    };
    let ty = get(libc::SO_TYPE)?;
    if taken.datagram() {
        if ty != libc::SOCK_DGRAM {
            return refuse(
                "the socket is not a datagram socket: a stream socket is wq::net::TcpStream or wq::net::UnixStream (a listening one wq::net::TcpListener or wq::net::UnixListener)".into(),
            );
        }
    } else if ty != libc::SOCK_STREAM {
        return refuse(if taken.listener() {
            "the socket is not a stream socket; only stream listeners accept connections".into()
        } else {
            "the socket is not a stream socket (a datagram or sequenced-packet socket keeps its messages' bounds, which a byte stream's reads would cut): a datagram socket is wq::net::UdpSocket or wq::net::UnixDatagram".into()
        });
    }
    let domain = get(libc::SO_DOMAIN)?;
    let ip = domain == libc::AF_INET || domain == libc::AF_INET6;
    if taken.unix() && domain != libc::AF_UNIX {
        return refuse(format!(
            "the socket is not a Unix domain socket (address family {domain}); {}",
            taken.other_family()
        ));
    }
    if !taken.unix() && !ip {
        return refuse(format!(
            "the socket is not an IP ({}) socket (address family {domain}); {}",
            if taken.datagram() { "UDP" } else { "TCP" },
            taken.other_family()
        ));
    }
    if ip && !taken.datagram() {
        // A stream socket of IP is TCP's, or MPTCP's (TCP to the
        // application), or SCTP's one-to-one style, whose reads give one
        // message each: under TCP's rule a short read drained the socket,
        // and a second queued message waited for an event that had come.
        let protocol = get(libc::SO_PROTOCOL)?;
        if protocol != libc::IPPROTO_TCP && protocol != libc::IPPROTO_MPTCP {
            return refuse(format!(
                "the socket is not a TCP socket (IP protocol {protocol}; SCTP is 132): its reads \
                 may keep messages' bounds, which wq's byte streams would cut"
            ));
        }
        // A nonzero linger makes close(2) wait for the data to go: the
        // drop of the stream would block the wq worker that drops it (a
        // listener's linger is inherited by every connection it accepts).
        // `TcpStream::set_linger` refuses it; so does taking a socket
        // that has it.
        let off = libc::linger {
            l_onoff: 0,
            l_linger: 0,
        };
        let linger = get_option(fd, libc::SOL_SOCKET, libc::SO_LINGER, off).map_err(|e| {
            let message = format!("{what}: not a socket wq can take: {e}");
            crate::driver::with_hint(e, message)
        })?;
        // (A linger set unbounded, a negative `l_linger` as socket2's
        // `set_linger(Some(Duration::MAX))` writes, reads back negative on
        // most kernels: the kernel stores it as "for ever".)
        if linger.l_onoff != 0 && linger.l_linger != 0 {
            let set = if linger.l_linger > 0 {
                format!("{} s", linger.l_linger)
            } else {
                "no bound".to_owned()
            };
            return refuse(if taken.listener() {
                format!(
                    "the socket has SO_LINGER set to {set}, which every connection it accepts \
                     inherits: a connection's close would wait until its data is sent or that \
                     time passes, blocking the wq worker that drops it; set the linger off \
                     before taking it (socket2's set_linger(None))"
                )
            } else {
                format!(
                    "the socket has SO_LINGER set to {set}: its close would wait until its data \
                     is sent or that time passes, blocking the wq worker that drops it; set the \
                     linger off, or to zero (an abortive close), before taking it (socket2's \
                     set_linger)"
                )
            });
        }
    }
    let listening = get(libc::SO_ACCEPTCONN)? != 0;
    match (taken, listening) {
        (Taken::TcpListener, false) => refuse(
            "the socket is not listening; call listen on it first (std's TcpListener::bind does), or use wq::net::TcpListener::bind".into(),
        ),
        (Taken::UnixListener, false) => refuse(
            "the socket is not listening; call listen on it first (std's UnixListener::bind does), or use wq::net::UnixListener::bind".into(),
        ),
        (Taken::TcpStream, true) => {
            refuse("the socket is a listener, not a connection: take it with wq::net::TcpListener::from_std".into())
        }
        (Taken::UnixStream, true) => {
            refuse("the socket is a listener, not a connection: take it with wq::net::UnixListener::from_std".into())
        }
        _ => Ok(()),
    }
}

/// `accept` once, retried over [errors of the connection
/// itself](is_connection_error) (the next one in the queue is tried: each
/// retry takes one off the queue, so the loop ends with it).
fn accept_retrying<T>(mut accept: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match accept() {
            Err(e) if is_connection_error(&e) => continue,
            r => return r,
        }
    }
}

/// Resolves `addr` and runs `f` on each address until one succeeds.
async fn each_addr<A, T, F, Fut>(addr: A, mut f: F) -> io::Result<T>
where
    A: ToSocketAddrs,
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let mut last = None;
    for a in addr.to_socket_addrs()? {
        match f(a).await {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to no socket address",
        )
    }))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A socket `from_std` refuses (here: its registration) leaves a
    /// duplicate the caller kept as it was: blocking (`O_NONBLOCK` belongs
    /// to the open file, which a `try_clone` shares; it was set before
    /// the registration was tried, and a blocking fallback on the
    /// duplicate then failed with `WouldBlock`). One that is taken is
    /// non-blocking.
    #[test]
    fn a_refused_from_std_leaves_a_kept_duplicate_blocking() {
        use std::os::fd::AsRawFd;
        fn blocking(fd: &impl AsRawFd) -> bool {
            // SAFETY: F_GETFL on a descriptor the caller holds.
            let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
            assert!(flags >= 0, "{}", io::Error::last_os_error());
            flags & libc::O_NONBLOCK == 0
        }
        let rt = crate::Runtime::builder().build().unwrap();
        let dir = std::env::temp_dir().join(format!("wq-refused-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let (u, _u2) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let ul = std::os::unix::net::UnixListener::bind(dir.join("l")).unwrap();
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ts = std::net::TcpStream::connect(t.local_addr().unwrap()).unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rt.block_on(async {
            crate::driver::REFUSE_REGISTER.set(true);
            let refused = [
                UnixStream::from_std(a.try_clone().unwrap()).err(),
                UnixDatagram::from_std(u.try_clone().unwrap()).err(),
                UnixListener::from_std(ul.try_clone().unwrap()).err(),
                TcpListener::from_std(t.try_clone().unwrap()).err(),
                TcpStream::from_std(ts.try_clone().unwrap()).err(),
                UdpSocket::from_std(udp.try_clone().unwrap()).err(),
            ];
            crate::driver::REFUSE_REGISTER.set(false);
            for e in refused {
                assert_eq!(e.expect("refused").raw_os_error(), Some(libc::EEXIST));
            }
        });
        assert!(blocking(&a), "UnixStream");
        assert!(blocking(&u), "UnixDatagram");
        assert!(blocking(&ul), "UnixListener");
        assert!(blocking(&t), "TcpListener");
        assert!(blocking(&ts), "TcpStream");
        assert!(blocking(&udp), "UdpSocket");
        rt.block_on(async {
            let s = UnixStream::from_std(a.try_clone().unwrap()).unwrap();
            assert!(!blocking(&s));
            let l = TcpListener::from_std(t.try_clone().unwrap()).unwrap();
            assert!(!blocking(&l));
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_connections_own_accept_error_is_retried_and_the_listeners_is_not() {
        for errno in [libc::ECONNABORTED, libc::EPROTO, libc::ENETUNREACH] {
            let mut errors = vec![Ok(7), Err(io::Error::from_raw_os_error(errno))];
            assert_eq!(accept_retrying(|| errors.pop().unwrap()).unwrap(), 7);
        }
        for errno in [libc::EMFILE, libc::ENFILE, libc::EAGAIN] {
            let r = accept_retrying(|| Err::<(), _>(io::Error::from_raw_os_error(errno)));
            assert_eq!(r.unwrap_err().raw_os_error(), Some(errno));
        }
    }
}
