//! What TCP and Unix streams share: reading, writing, shutting down, and
//! splitting into owned halves.
//!
//! A stream is an `Arc<PollIo<S>>` and one waiter key per direction
//! (`driver::registration`); each owned half takes the `Arc` and its
//! direction's key, so the two halves can be used from two tasks.

use std::io::{self, IoSlice, Read};
use std::net::Shutdown;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::driver::registration::PollIo;
use crate::driver::scheduled_io::Direction;

/// A mio stream type: reads and writes through `&self`, and shuts down.
pub(crate) trait StreamSource: mio::event::Source + Send + Sync + 'static {
    /// Whether a short read means the receive queue is drained, so the read
    /// readiness may be cleared without the `WouldBlock` syscall
    /// (`driver::registration`). Not for Unix streams: a read stops after a
    /// message that carried file descriptors (`SCM_RIGHTS`, which a peer
    /// may send unasked) or at a change of sender credentials, with more
    /// queued behind it and no new edge to come. TCP keeps it, as tokio
    /// does, but for urgent data (a peer's `MSG_OOB`, out of use but for
    /// telnet-era protocols), where a read stops at the mark: a TCP stream
    /// is registered for its events, and a short read keeps the readiness
    /// while one is pending (`driver::scheduled_io`, "Urgent data").
    const SHORT_READ_DRAINS: bool;
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write(&self, buf: &[u8]) -> io::Result<usize>;
    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
}

// Both streams write with `send`/`sendmsg` and `MSG_NOSIGNAL`: `write(2)`
// or `writev(2)` to a stream whose peer has gone raises SIGPIPE, which
// kills a process that has not ignored it (a C or Python host of a library
// using wq; Rust binaries ignore it by default). std's TcpStream sends its
// plain writes that way, but its `write_vectored` (hyper's every write
// through `WqIo`) is a plain `writev`, and its Unix stream uses `write`.
macro_rules! stream_source {
    ($ty:ty, $drains:expr) => {
        impl StreamSource for $ty {
            const SHORT_READ_DRAINS: bool = $drains;
            fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
                Read::read(&mut &*self, buf)
            }
            fn write(&self, buf: &[u8]) -> io::Result<usize> {
                send(std::os::fd::AsRawFd::as_raw_fd(self), buf)
            }
            fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                send_vectored(std::os::fd::AsRawFd::as_raw_fd(self), bufs)
            }
            fn shutdown(&self, how: Shutdown) -> io::Result<()> {
                <$ty>::shutdown(self, how)
            }
        }
    };
}

stream_source!(mio::net::TcpStream, true);
stream_source!(mio::net::UnixStream, false);

/// `send(fd, buf, MSG_NOSIGNAL)`; `fd` must be a connected stream socket
/// open for the call.
fn send(fd: std::os::fd::RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes; the caller's `fd` is
    // open (its stream is borrowed).
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `sendmsg(fd, bufs, MSG_NOSIGNAL)`, at most [`MAX_IOV`] slices.
fn send_vectored(fd: std::os::fd::RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: a zeroed msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix (std's guarantee);
    // sendmsg only reads through the pointer.
    msg.msg_iov = bufs.as_ptr().cast_mut().cast();
    msg.msg_iovlen = bufs.len().min(MAX_IOV) as _;
    // SAFETY: `msg` points at `bufs`, valid for this call; the caller's
    // `fd` is open.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One direction of a stream, with its waiter key.
pub(crate) struct Half<S: StreamSource> {
    pub(crate) io: Arc<PollIo<S>>,
    key: Option<usize>,
}

/// The most slices one `writev` takes on Linux (`UIO_MAXIOV`).
const MAX_IOV: usize = 1024;

impl<S: StreamSource> Half<S> {
    pub(crate) fn new(io: Arc<PollIo<S>>) -> Half<S> {
        Half { io, key: None }
    }

    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        // Nothing asked: nothing to wait for (std's `Read` answers 0 too).
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Asking 0 never counts as short.
        let asked = if S::SHORT_READ_DRAINS { buf.len() } else { 0 };
        self.io
            .poll_transfer(cx, Direction::Read, &mut self.key, asked, |s| s.read(buf))
    }

    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.io
            .poll_transfer(cx, Direction::Write, &mut self.key, buf.len(), |s| {
                s.write(buf)
            })
    }

    pub(crate) fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // Empty slices first would fill `writev`'s count with nothing (a
        // write of 0, which `write_all` reads as the peer gone).
        let bufs = &bufs[bufs.iter().take_while(|b| b.is_empty()).count()..];
        if bufs.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // `writev` passes at most `MAX_IOV` slices (std caps the count at
        // the kernel's limit): a write of more may stop at the limit with
        // the socket still writable, which is not the full buffer a short
        // transfer means. Asking 0 never counts as short.
        let asked = if bufs.len() <= MAX_IOV {
            bufs.iter().map(|b| b.len()).sum()
        } else {
            0
        };
        self.io
            .poll_transfer(cx, Direction::Write, &mut self.key, asked, |s| {
                s.write_vectored(bufs)
            })
    }

    /// The socket's `shutdown(2)`; a write side shut raises the write
    /// readiness (`PollIo::mark_write_shut`: a Unix writer waiting for
    /// room gets no event otherwise).
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.source().shutdown(how)?;
        if how != Shutdown::Read {
            self.io.mark_write_shut();
        }
        Ok(())
    }

    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self.shutdown(Shutdown::Write) {
            // Already shut down, or the peer reset it: nothing left to close.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        }
    }
}

impl<S: StreamSource> Drop for Half<S> {
    fn drop(&mut self) {
        self.io.release(&mut self.key);
    }
}

/// Implements `futures::io::AsyncRead` / `AsyncWrite` for a stream type
/// with `read` and `write` halves, or for a read half (`read`) or a write
/// half (`write`).
macro_rules! async_read {
    ($ty:ty, $field:ident) => {
        impl futures::io::AsyncRead for $ty {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.get_mut().$field.poll_read(cx, buf)
            }
        }
    };
}

macro_rules! async_write {
    ($ty:ty, $field:ident) => {
        impl futures::io::AsyncWrite for $ty {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.get_mut().$field.poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.get_mut().$field.poll_write_vectored(cx, bufs)
            }

            /// Writes go straight to the socket: nothing to flush.
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }

            /// Shuts the write side down (the peer reads EOF).
            fn poll_close(
                self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(self.get_mut().$field.shutdown_write())
            }
        }
    };
}

/// The readiness methods of a stream type or an owned half: `readable`
/// and `try_read` through its read half (`read` field), `writable` and
/// `try_write` through its write half (`write` field).
macro_rules! read_readiness {
    ($ty:ty, $field:ident) => {
        impl $ty {
            /// Waits until a read may make progress: data, end of file or
            /// an error is there. A hint, as the kernel's readiness is:
            /// [`try_read`](Self::try_read) may still say `WouldBlock`
            /// (another reader took the data); then wait again.
            ///
            /// # Errors
            /// When the runtime has shut down.
            pub async fn readable(&self) -> std::io::Result<()> {
                self.$field
                    .io
                    .ready(crate::driver::scheduled_io::Direction::Read)
                    .await
            }

            /// Reads what is there without waiting: the bytes read, `0` at
            /// end of file (or for an empty `buf`), or `WouldBlock` when
            /// nothing is (await [`readable`](Self::readable), then try
            /// again). It answers by the readiness the runtime has seen,
            /// so it may also say `WouldBlock` before the first
            /// `readable` has returned. Once the runtime has shut down,
            /// an error that says so.
            pub fn try_read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
                if buf.is_empty() {
                    return Ok(0);
                }
                self.$field
                    .io
                    .try_io(crate::driver::scheduled_io::Direction::Read, |s| {
                        crate::net::stream::StreamSource::read(s, buf)
                    })
            }
        }
    };
}

macro_rules! write_readiness {
    ($ty:ty, $field:ident) => {
        impl $ty {
            /// Waits until a write may make progress: room in the send
            /// buffer, or an error to report. A hint:
            /// [`try_write`](Self::try_write) may still say `WouldBlock`;
            /// then wait again.
            ///
            /// # Errors
            /// When the runtime has shut down.
            pub async fn writable(&self) -> std::io::Result<()> {
                self.$field
                    .io
                    .ready(crate::driver::scheduled_io::Direction::Write)
                    .await
            }

            /// Writes what fits without waiting: the bytes written, or
            /// `WouldBlock` when the send buffer is full (await
            /// [`writable`](Self::writable), then try again). It answers
            /// by the readiness the runtime has seen: on a new stream,
            /// await `writable` first. An empty `buf` writes nothing
            /// (`Ok(0)`). Once the runtime has shut down, an error that
            /// says so.
            pub fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
                if buf.is_empty() {
                    return Ok(0);
                }
                self.$field
                    .io
                    .try_io(crate::driver::scheduled_io::Direction::Write, |s| {
                        crate::net::stream::StreamSource::write(s, buf)
                    })
            }

            /// [`try_write`](Self::try_write) from several buffers in
            /// order, in one `sendmsg` (a header and a body without
            /// copying them together): the bytes written, which may end
            /// inside any buffer. Buffers that are all empty write nothing
            /// (`Ok(0)`).
            pub fn try_write_vectored(
                &self,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::io::Result<usize> {
                // Empty slices first would fill `sendmsg`'s count (1,024
                // at most) with nothing: a write of 0 with bytes behind.
                let bufs = &bufs[bufs.iter().take_while(|b| b.is_empty()).count()..];
                if bufs.is_empty() {
                    return Ok(0);
                }
                self.$field
                    .io
                    .try_io(crate::driver::scheduled_io::Direction::Write, |s| {
                        crate::net::stream::StreamSource::write_vectored(s, bufs)
                    })
            }
        }
    };
}

pub(crate) use {async_read, async_write, read_readiness, write_readiness};
