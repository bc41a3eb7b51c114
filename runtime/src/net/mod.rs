//! Sockets on the runtime's I/O driver: TCP, UDP and Unix domain sockets.
//!
//! Every socket is non-blocking and registered with the runtime's driver
//! (edge-triggered epoll through mio); an operation that would block parks
//! the task until the driver sees the socket ready, and the wake goes
//! through the task's home pool like any other (`driver`'s module docs).
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
//! Errors are `std::io::Error`s carrying the OS cause
//! (`ConnectionRefused`, `AddrInUse` ...). Creating a socket outside a wq
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

mod stream;
pub mod tcp;
mod udp;
pub mod unix;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

pub use tcp::{TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixListener, UnixStream};

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

/// The current runtime's driver, or a panic naming `what` outside one.
fn current(what: &str) -> io::Result<driver::Handle> {
    crate::scheduler::services::current_driver(what)
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
