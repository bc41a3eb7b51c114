//! I/O on file descriptors that `wq::net` does not cover: [`AsyncFd`].

use std::io;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};

use crate::driver::registration::{PollIo, SharedKey};
use crate::driver::scheduled_io::{Direction, ReadyEvent};

/// A file descriptor of yours (an eventfd, an inotify or netlink socket, a
/// pipe, a serial port, a socket type `wq::net` lacks...) registered with
/// the runtime's I/O driver, so that a task can wait for it to be readable
/// or writable without blocking a worker.
///
/// The descriptor must be in **non-blocking** mode (`O_NONBLOCK`).
/// [`read_with`](AsyncFd::read_with) and [`write_with`](AsyncFd::write_with)
/// wait for the driver to report the descriptor ready (edge-triggered
/// epoll), try your operation, and when it says `WouldBlock` clear that
/// readiness and wait for the next event. So the operation must say
/// `WouldBlock` **only when the descriptor itself said `EAGAIN`**: one it
/// makes up (from a buffer of its own) clears a readiness whose data is
/// still pending, and no new edge comes; and an operation that would block
/// but does not say `WouldBlock` blocks its worker.
///
/// The descriptor must stay open, and `T::as_raw_fd` must keep returning
/// it, until the `AsyncFd` is dropped or [`into_inner`](AsyncFd::into_inner)
/// is called: otherwise waits may never complete, and the deregistration
/// at the drop may hit whatever descriptor reuses the number. Dropping the
/// `AsyncFd` deregisters the descriptor, then drops `T` (which closes it,
/// if `T` owns it); `into_inner` deregisters it and gives `T` back, open.
/// A close that blocks blocks the thread that drops it, maybe a worker: a
/// TCP socket with a nonzero `SO_LINGER` (which `wq::net`'s `from_std`
/// refuses) waits there until its data is sent or the linger ends.
///
/// ```
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
/// use wq::io::AsyncFd;
///
/// #[wq::main]
/// async fn main() -> std::io::Result<()> {
///     let (a, mut b) = UnixStream::pair()?;
///     a.set_nonblocking(true)?;
///     let a = AsyncFd::new(a)?;
///     let writer = wq::spawn_blocking(move || b.write_all(b"ping"));
///     let mut buf = [0u8; 4];
///     let n = a.read_with(|s| (&*s).read(&mut buf)).await?;
///     assert_eq!(&buf[..n], &b"ping"[..n]);
///     writer.await.unwrap()?;
///     Ok(())
/// }
/// ```
pub struct AsyncFd<T: AsRawFd> {
    io: PollIo<FdSource<T>>,
    /// The waiter slots of [`poll_read_with`](AsyncFd::poll_read_with)
    /// and [`poll_write_with`](AsyncFd::poll_write_with) (indexes into the
    /// registration's own waiters: they go with it, at the drop or
    /// [`into_inner`](AsyncFd::into_inner), whose deregistration frees
    /// the registration's state, wakers included).
    keys: [SharedKey; 2],
}

/// `T`'s descriptor as a mio source.
struct FdSource<T: AsRawFd>(T);

impl<T: AsRawFd> mio::event::Source for FdSource<T> {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.0.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        mio::unix::SourceFd(&self.0.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        mio::unix::SourceFd(&self.0.as_raw_fd()).deregister(registry)
    }
}

impl<T: AsRawFd> AsyncFd<T> {
    /// Registers `inner`'s descriptor with the current runtime's driver.
    ///
    /// # Errors
    /// The descriptor cannot be registered: this runtime's driver has its
    /// number registered already (another `AsyncFd`, or a wq socket, of
    /// that descriptor: `EEXIST`), or epoll does not take it (a regular
    /// file, a directory, most of `/proc`: `EPERM`); the runtime has shut
    /// down, or its I/O driver could not be created (no descriptors left).
    /// `inner` is dropped then (and closed, if it owns its descriptor):
    /// [`try_new`](AsyncFd::try_new) gives it back.
    ///
    /// # Panics
    /// Outside a wq runtime, as `wq::spawn`.
    pub fn new(inner: T) -> io::Result<AsyncFd<T>> {
        AsyncFd::try_new_named("wq::io::AsyncFd::new", inner).map_err(|e| e.error)
    }

    /// As [`new`](AsyncFd::new), giving `inner` back with the error, so a
    /// descriptor epoll refuses (a regular file) can be used another way
    /// (`spawn_blocking`, say).
    ///
    /// # Panics
    /// Outside a wq runtime, as `wq::spawn`.
    pub fn try_new(inner: T) -> Result<AsyncFd<T>, AsyncFdTryNewError<T>> {
        AsyncFd::try_new_named("wq::io::AsyncFd::try_new", inner)
    }

    fn try_new_named(what: &str, inner: T) -> Result<AsyncFd<T>, AsyncFdTryNewError<T>> {
        let driver = match crate::scheduler::services::current_driver(what) {
            Ok(d) => d,
            Err(error) => return Err(AsyncFdTryNewError { inner, error }),
        };
        match PollIo::try_new(driver, FdSource(inner)) {
            Ok(io) => Ok(AsyncFd {
                io,
                keys: Default::default(),
            }),
            Err((error, FdSource(inner))) => Err(AsyncFdTryNewError { inner, error }),
        }
    }

    /// The object inside.
    pub fn get_ref(&self) -> &T {
        &self.io.source().0
    }

    /// The object inside, mutably. Keep its descriptor (see the type's
    /// docs): the registration is of that descriptor.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io.source_mut().0
    }

    /// Deregisters the descriptor and gives the object back, open.
    pub fn into_inner(self) -> T {
        self.io.into_source().0
    }

    /// Waits for the descriptor to be readable and runs `op` (a read from
    /// it, say), again at each readiness event until `op` does not say
    /// `WouldBlock` (see the type's docs). Any number of tasks may wait on
    /// one `AsyncFd` at once.
    pub async fn read_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.io.async_io(Direction::Read, |s| op(&s.0)).await
    }

    /// As [`read_with`](AsyncFd::read_with), for an operation that waits
    /// for the descriptor to be writable.
    pub async fn write_with<R>(&self, mut op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.io.async_io(Direction::Write, |s| op(&s.0)).await
    }

    /// As [`read_with`](AsyncFd::read_with), with the object borrowed
    /// mutably: for a type whose reads need `&mut self` (a device or a
    /// library type with `std::io::Read` on `T` only, not on `&T`). One
    /// operation at a time, as `&mut self` says.
    ///
    /// ```
    /// use std::io::Read;
    /// use std::os::unix::net::UnixStream;
    /// use wq::io::AsyncFd;
    ///
    /// #[wq::main]
    /// async fn main() -> std::io::Result<()> {
    ///     let (a, mut b) = UnixStream::pair()?;
    ///     a.set_nonblocking(true)?;
    ///     let mut fd = AsyncFd::new(a)?;
    ///     std::io::Write::write_all(&mut b, b"hi")?;
    ///     let mut buf = [0u8; 2];
    ///     let n = fd.read_with_mut(|a| a.read(&mut buf)).await?;
    ///     assert_eq!(&buf[..n], b"hi");
    ///     Ok(())
    /// }
    /// ```
    pub async fn read_with_mut<R>(
        &mut self,
        mut op: impl FnMut(&mut T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.io
            .async_io_mut(Direction::Read, |s| op(&mut s.0))
            .await
    }

    /// As [`write_with`](AsyncFd::write_with), with the object borrowed
    /// mutably (see [`read_with_mut`](AsyncFd::read_with_mut)).
    pub async fn write_with_mut<R>(
        &mut self,
        mut op: impl FnMut(&mut T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.io
            .async_io_mut(Direction::Write, |s| op(&mut s.0))
            .await
    }

    /// As [`try_read_with`](AsyncFd::try_read_with), with the object
    /// borrowed mutably.
    pub fn try_read_with_mut<R>(
        &mut self,
        op: impl FnOnce(&mut T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.io.try_io_mut(Direction::Read, |s| op(&mut s.0))
    }

    /// As [`try_write_with`](AsyncFd::try_write_with), with the object
    /// borrowed mutably.
    pub fn try_write_with_mut<R>(
        &mut self,
        op: impl FnOnce(&mut T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.io.try_io_mut(Direction::Write, |s| op(&mut s.0))
    }

    /// [`read_with`](AsyncFd::read_with) as a poll: runs `op` if the
    /// descriptor is readable, until it does not say `WouldBlock`; else
    /// `Pending`, and `cx`'s task is woken at the next readiness event.
    /// For implementing `futures::io::AsyncRead` (or a `Stream`) on a type
    /// of yours around the descriptor. One waker is kept for reading: that
    /// of the task that polled last, as for a socket's `&self` poll
    /// methods; tasks that wait at once use `read_with`.
    ///
    /// ```
    /// use std::io::Read;
    /// use std::os::unix::net::UnixStream;
    /// use std::pin::Pin;
    /// use std::task::{Context, Poll};
    /// use futures::{AsyncRead, AsyncReadExt};
    /// use wq::io::AsyncFd;
    ///
    /// /// A pipe end as an `AsyncRead`.
    /// struct Reader(AsyncFd<UnixStream>);
    ///
    /// impl AsyncRead for Reader {
    ///     fn poll_read(
    ///         self: Pin<&mut Self>,
    ///         cx: &mut Context<'_>,
    ///         buf: &mut [u8],
    ///     ) -> Poll<std::io::Result<usize>> {
    ///         self.0.poll_read_with(cx, |s| (&*s).read(buf))
    ///     }
    /// }
    ///
    /// #[wq::main]
    /// async fn main() -> std::io::Result<()> {
    ///     let (a, mut b) = UnixStream::pair()?;
    ///     a.set_nonblocking(true)?;
    ///     let mut r = Reader(AsyncFd::new(a)?);
    ///     let writer = wq::spawn_blocking(move || std::io::Write::write_all(&mut b, b"hello"));
    ///     let mut got = Vec::new();
    ///     r.read_to_end(&mut got).await?;
    ///     assert_eq!(got, b"hello");
    ///     writer.await.unwrap()
    /// }
    /// ```
    pub fn poll_read_with<R>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        self.io
            .poll_io_shared(cx, Direction::Read, &self.keys[0], |s| op(&s.0))
    }

    /// As [`poll_read_with`](AsyncFd::poll_read_with), for an operation
    /// that waits for the descriptor to be writable (its own waker slot).
    pub fn poll_write_with<R>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        self.io
            .poll_io_shared(cx, Direction::Write, &self.keys[1], |s| op(&s.0))
    }

    /// Runs `op` once if the descriptor is readable now, without waiting:
    /// `WouldBlock` if the driver has not reported it readable since an
    /// operation last said `WouldBlock`, or if `op` says so (which clears
    /// that readiness, as a waiting operation's does).
    pub fn try_read_with<R>(&self, op: impl FnOnce(&T) -> io::Result<R>) -> io::Result<R> {
        self.io.try_io(Direction::Read, |s| op(&s.0))
    }

    /// As [`try_read_with`](AsyncFd::try_read_with), for writing.
    pub fn try_write_with<R>(&self, op: impl FnOnce(&T) -> io::Result<R>) -> io::Result<R> {
        self.io.try_io(Direction::Write, |s| op(&s.0))
    }

    /// Waits until the driver reports the descriptor readable, and gives a
    /// guard of that readiness: tokio's `AsyncFd::readable`, for code
    /// that runs its own operations and says which met `EAGAIN`
    /// ([`AsyncFdReadyGuard::try_io`], or [`clear_ready`](AsyncFdReadyGuard::clear_ready)
    /// after an operation of its own). A readiness not cleared stays: the
    /// next wait answers at once.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::unix::net::UnixStream;
    /// use wq::io::AsyncFd;
    ///
    /// #[wq::main]
    /// async fn main() -> std::io::Result<()> {
    ///     let (a, mut b) = UnixStream::pair()?;
    ///     a.set_nonblocking(true)?;
    ///     let a = AsyncFd::new(a)?;
    ///     b.write_all(b"ping")?;
    ///     let mut buf = [0u8; 4];
    ///     let n = loop {
    ///         let mut guard = a.readable().await?;
    ///         match guard.try_io(|fd| fd.get_ref().read(&mut buf)) {
    ///             Ok(result) => break result?,
    ///             // EAGAIN: the readiness is cleared; wait for the next.
    ///             Err(_would_block) => continue,
    ///         }
    ///     };
    ///     assert_eq!(&buf[..n], b"ping");
    ///     Ok(())
    /// }
    /// ```
    pub async fn readable(&self) -> io::Result<AsyncFdReadyGuard<'_, T>> {
        self.ready(Direction::Read).await
    }

    /// As [`readable`](AsyncFd::readable), for writing.
    pub async fn writable(&self) -> io::Result<AsyncFdReadyGuard<'_, T>> {
        self.ready(Direction::Write).await
    }

    async fn ready(&self, dir: Direction) -> io::Result<AsyncFdReadyGuard<'_, T>> {
        let event = self.io.ready_event(dir).await?;
        Ok(AsyncFdReadyGuard {
            fd: self,
            event: Some(event),
        })
    }
}

/// A readiness of an [`AsyncFd`] ([`AsyncFd::readable`],
/// [`AsyncFd::writable`]): the descriptor may be read (or written) now.
/// Dropping it keeps the readiness; [`clear_ready`](AsyncFdReadyGuard::clear_ready)
/// clears it (unless the driver has reported a new event since, which
/// stays), after which a wait lasts until the next event.
pub struct AsyncFdReadyGuard<'a, T: AsRawFd> {
    fd: &'a AsyncFd<T>,
    /// The readiness seen; `None` once cleared.
    event: Option<ReadyEvent>,
}

impl<'a, T: AsRawFd> AsyncFdReadyGuard<'a, T> {
    /// The `AsyncFd` it is a readiness of.
    pub fn get_ref(&self) -> &'a AsyncFd<T> {
        self.fd
    }

    /// The object inside the `AsyncFd`.
    pub fn get_inner(&self) -> &'a T {
        self.fd.get_ref()
    }

    /// Whether the readiness seen includes a hang-up of its direction (the
    /// peer closed: `EPOLLHUP`, or `EPOLLRDHUP` for reading; a broken pipe
    /// for writing), as tokio's `guard.ready().is_read_closed()` /
    /// `is_write_closed()`; `false` once cleared. A hang-up reported once
    /// stays until an operation says `WouldBlock` in
    /// [`try_io`](AsyncFdReadyGuard::try_io) (or in
    /// [`AsyncFd::read_with`] and its kin): where the peer can come back
    /// (a FIFO a new writer opened) it may be stale, and the next read
    /// says which.
    pub fn is_closed(&self) -> bool {
        self.event.is_some_and(|e| e.is_closed())
    }

    /// Clears the readiness: say so when it is used up (your operation met
    /// `EAGAIN`; on a pipe or a TCP socket, a read that gave less than it
    /// asked for: not on a Unix stream socket, whose read stops after a
    /// message carrying descriptors or credentials with more queued, nor
    /// on a packet-mode pipe, a datagram socket or a terminal, where each
    /// read gives one message or line and more may wait), so that the
    /// next wait is
    /// for the next event (not clearing it, the next wait answers at once,
    /// and a loop spins). Clear it only then (see [`AsyncFd`]'s docs: a
    /// readiness cleared while data is still pending waits for an event
    /// that may not come).
    ///
    /// A hang-up the driver reported (the peer closed: `EPOLLHUP`,
    /// `EPOLLRDHUP`) stays, as tokio's final states do: the next wait
    /// answers at once, and the next read says the end (a short read of a
    /// pipe's last bytes, cleared here, must not wait for an event the
    /// closed peer will never send). After an operation that met `EAGAIN`, prefer
    /// [`try_io`](AsyncFdReadyGuard::try_io), whose `WouldBlock` clears a
    /// hang-up too, since it shows the hang-up no longer holds: where the
    /// peer can come back (a FIFO a new writer opened, a UDP socket's
    /// error) a hang-up kept by `clear_ready` makes every wait answer at
    /// once, and a loop of `readable().await` and `EAGAIN` spins until
    /// data comes.
    pub fn clear_ready(&mut self) {
        if let Some(event) = self.event.take() {
            self.fd.io.clear_ready(event, false);
        }
    }

    /// Runs `f` (an operation on the descriptor); if it says `WouldBlock`,
    /// clears the readiness and gives [`TryIoError`]: wait again. Any
    /// other result is `f`'s.
    pub fn try_io<R>(
        &mut self,
        f: impl FnOnce(&'a AsyncFd<T>) -> io::Result<R>,
    ) -> Result<io::Result<R>, TryIoError> {
        match f(self.fd) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Some(event) = self.event.take() {
                    self.fd.io.clear_ready(event, true);
                }
                Err(TryIoError(()))
            }
            r => Ok(r),
        }
    }
}

impl<T: AsRawFd> std::fmt::Debug for AsyncFdReadyGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncFdReadyGuard")
            .field("fd", &self.fd.as_raw_fd())
            .field("cleared", &self.event.is_none())
            .finish()
    }
}

/// [`AsyncFdReadyGuard::try_io`]'s operation said `WouldBlock`: the
/// readiness is cleared; wait again.
#[derive(Debug)]
pub struct TryIoError(());

impl std::fmt::Display for TryIoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the operation would block: the readiness is cleared; wait for the next")
    }
}

impl std::error::Error for TryIoError {}

/// The error of [`AsyncFd::try_new`]: why the descriptor could not be
/// registered, and the object, given back.
pub struct AsyncFdTryNewError<T> {
    inner: T,
    error: io::Error,
}

impl<T> AsyncFdTryNewError<T> {
    /// The object and the error.
    pub fn into_parts(self) -> (T, io::Error) {
        (self.inner, self.error)
    }
}

impl<T> std::fmt::Display for AsyncFdTryNewError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

impl<T> std::fmt::Debug for AsyncFdTryNewError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncFdTryNewError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> std::error::Error for AsyncFdTryNewError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T> From<AsyncFdTryNewError<T>> for io::Error {
    fn from(e: AsyncFdTryNewError<T>) -> io::Error {
        e.error
    }
}

impl<T: AsRawFd> AsRawFd for AsyncFd<T> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.get_ref().as_raw_fd()
    }
}

impl<T: AsRawFd + std::os::fd::AsFd> std::os::fd::AsFd for AsyncFd<T> {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

impl<T: AsRawFd + std::fmt::Debug> std::fmt::Debug for AsyncFd<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncFd")
            .field("inner", self.get_ref())
            .finish_non_exhaustive()
    }
}
