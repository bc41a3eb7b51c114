//! A mio source registered with a driver: the glue between a socket's
//! non-blocking syscalls and its task's waker.
//!
//! An operation ([`PollIo::poll_io`]) loops: wait for the direction's
//! readiness (`ScheduledIo::poll_ready`), run the syscall; on `WouldBlock`
//! clear the readiness observed (at its tick; a closed bit with it, see
//! `scheduled_io`) and wait again; anything else is the result. A short
//! read or write (fewer bytes than asked) means the kernel buffer is
//! drained or full: the readiness is cleared then too, which saves the
//! syscall that would only say `WouldBlock` (a racing event moved the
//! tick, so the clear cannot lose it). Where a short transfer does not
//! mean that, the caller asks 0 bytes, which never counts as short: a
//! `writev` of more slices than the kernel takes, a Unix stream's read
//! (`net::stream`, `StreamSource::SHORT_READ_DRAINS`); and a read that
//! observed TCP urgent data pending keeps the readiness, short or not
//! (`scheduled_io`, "Urgent data").
//!
//! Waiter keys: a stream keeps one per direction (`&mut self` polls); an
//! `async fn` operation holds one in its future ([`PollIo::async_io`],
//! [`PollIo::ready`]) and releases it when the future is dropped, so any number of tasks may wait
//! on one socket (`accept` on a shared listener, `recv_from` on a shared
//! UDP socket); a `&self` poll method (`TcpListener::poll_accept`,
//! `AsyncFd::poll_read_with`) keeps one [`SharedKey`] in its object,
//! taken out for each poll and put back after it (no lock held across
//! the poll), whose waker is the last polling task's (as tokio's `poll_*`
//! on `&self`), freed with the object ([`Datagram`] holds a datagram
//! socket's two; an `AsyncFd`'s go with its registration).
//!
//! Drop deregisters the source from epoll **before** its fd is closed (see
//! `driver`'s module docs on file descriptions), then frees the slot;
//! `into_source` deregisters it and frees the slot, and gives the source
//! back open (`wq::io::AsyncFd::into_inner`).

use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::Handle;
use super::Registered;
use super::scheduled_io::{
    Direction, READ_CLOSED, READABLE, ReadyEvent, ScheduledIo, WRITABLE, WRITE_CLOSED,
};

/// A registered mio source.
pub(crate) struct PollIo<S: mio::event::Source> {
    source: Option<S>,
    handle: Handle,
    registered: Registered,
    /// A TCP stream's descriptor, to tell a read stopped at its urgent
    /// mark by a signal ([`PollIo::stopped_at_urgent_byte`]); `None` for
    /// the other sources.
    urgent_fd: Option<std::os::fd::RawFd>,
    /// Reads in a row [`PollIo::stopped_at_urgent_byte`] kept the
    /// readiness for without seeing data behind the mark.
    urgent_tries: std::sync::atomic::AtomicU8,
}

impl<S: mio::event::Source> std::fmt::Debug for PollIo<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PollIo")
            .field("io", &self.registered.io)
            .finish_non_exhaustive()
    }
}

/// Reads in a row at TCP's urgent mark that see no data behind it and
/// keep the readiness, before it is cleared
/// ([`PollIo::stopped_at_urgent_byte`]). At 32, the signal-flood test
/// (`net_urgent_signal`) found 32 in a row stopped by signals in 2 of 8
/// runs of CI's build; a peek waiting for more costs 200 yields (each a
/// `SIOCATMARK` and two peeks, microseconds) before it sleeps.
const URGENT_TRIES: u8 = 200;

/// A read stopped at TCP's urgent mark by a signal
/// ([`PollIo::stopped_at_urgent_byte`]): wakes the task to read again
/// after the pool's other work, rather than loop here (a storm of signals
/// would hold the poll).
fn yield_now<R>(cx: &mut Context<'_>) -> Poll<io::Result<R>> {
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// Whether a transfer of `n` of `asked` bytes was short: the kernel buffer
/// is drained (read) or full (write). Zero is EOF (or an empty buffer),
/// not a short transfer.
fn is_short(n: usize, asked: usize) -> bool {
    n > 0 && n < asked
}

impl<S: mio::event::Source> PollIo<S> {
    /// Registers `source` with `handle`'s driver.
    pub(crate) fn new(handle: Handle, source: S) -> io::Result<PollIo<S>> {
        PollIo::registered(handle, source, false).map_err(|(e, _)| e)
    }

    /// [`PollIo::new`] for a TCP stream: registered for urgent data's
    /// events too (`scheduled_io`, "Urgent data").
    pub(crate) fn new_tcp_stream(handle: Handle, source: S) -> io::Result<PollIo<S>>
    where
        S: std::os::fd::AsRawFd,
    {
        let fd = source.as_raw_fd();
        let mut io = PollIo::registered(handle, source, true).map_err(|(e, _)| e)?;
        io.urgent_fd = Some(fd);
        Ok(io)
    }

    /// [`PollIo::new`], giving the source back if it cannot be registered.
    pub(crate) fn try_new(handle: Handle, source: S) -> Result<PollIo<S>, (io::Error, S)> {
        PollIo::registered(handle, source, false)
    }

    fn registered(
        handle: Handle,
        mut source: S,
        urgent: bool,
    ) -> Result<PollIo<S>, (io::Error, S)> {
        match handle.register(&mut source, urgent) {
            Ok(registered) => Ok(PollIo {
                source: Some(source),
                handle,
                registered,
                urgent_fd: None,
                urgent_tries: std::sync::atomic::AtomicU8::new(0),
            }),
            Err(e) => Err((e, source)),
        }
    }

    pub(crate) fn source(&self) -> &S {
        self.source
            .as_ref()
            .expect("taken only by drop and into_source")
    }

    pub(crate) fn source_mut(&mut self) -> &mut S {
        self.source
            .as_mut()
            .expect("taken only by drop and into_source")
    }

    /// Deregisters the source and gives it back (its fd stays open).
    pub(crate) fn into_source(mut self) -> S {
        let mut source = self.source.take().expect("taken only here or in drop");
        let _ = self.handle.deregister(&mut source, &self.registered);
        source
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    fn scheduled(&self) -> &Arc<ScheduledIo> {
        &self.registered.io
    }

    /// After a read's `WouldBlock` that observed TCP urgent data pending:
    /// whether a signal, not a want of data, may have stopped it at the
    /// urgent mark, so that the readiness is kept (the task reads again).
    /// Linux's TCP read stops at the mark when a signal is pending and has
    /// copied nothing, with `EAGAIN` on a non-blocking socket
    /// (`tcp_recvmsg`); cleared then, the readiness would leave the bytes
    /// behind the mark for an edge that does not come.
    ///
    /// Not at the mark, or with no urgent byte there (a read that found no
    /// data skipped the byte; one whose byte has not arrived has none to
    /// peek): cleared as any `WouldBlock`. At the mark with the byte and
    /// data behind it (a peek of one byte finds it): kept. At the mark
    /// with the byte and no data seen behind it, either there is none (a
    /// peek, which skips the byte without moving the mark, waiting for
    /// more) or a signal stopped that peek too: kept for
    /// [`URGENT_TRIES`] reads in a row, then cleared (so a peek waiting
    /// for more does not spin; a signal would have to stop that many in a
    /// row). Syscalls only on this rare path: `SIOCATMARK` and two peeks.
    fn stopped_at_urgent_byte(&self, ev: &ReadyEvent) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(fd) = self.urgent_fd.filter(|_| ev.is_urgent()) else {
            return false;
        };
        /// `SIOCATMARK` (`asm-generic/sockios.h`; not in the `libc` crate
        /// for Linux).
        const SIOCATMARK: libc::c_ulong = 0x8905;
        // A one-byte peek of `fd` with `flags`: whether it found a byte.
        let peek = |flags: libc::c_int| {
            let mut byte = 0u8;
            // SAFETY: a one-byte buffer for the length given; MSG_PEEK
            // leaves the byte, MSG_DONTWAIT never blocks.
            unsafe {
                libc::recv(
                    fd,
                    (&raw mut byte).cast(),
                    1,
                    flags | libc::MSG_PEEK | libc::MSG_DONTWAIT,
                ) == 1
            }
        };
        let mut at: libc::c_int = 0;
        // SAFETY: `fd` is the source's, open while it is held (`self`);
        // SIOCATMARK writes one int.
        let at_mark = unsafe { libc::ioctl(fd, SIOCATMARK as _, &mut at) } == 0 && at != 0;
        if !at_mark || !peek(libc::MSG_OOB) {
            self.urgent_tries.store(0, Relaxed);
            return false;
        }
        if peek(0) {
            self.urgent_tries.store(0, Relaxed);
            return true;
        }
        let tries = self.urgent_tries.load(Relaxed) + 1;
        if tries > URGENT_TRIES {
            self.urgent_tries.store(0, Relaxed);
            return false;
        }
        self.urgent_tries.store(tries, Relaxed);
        true
    }

    /// Raises the write readiness with the write side's closed bit, after
    /// a `shutdown(2)` of the write side that succeeded: Linux reports no
    /// event for a Unix socket's write side shut alone while it has no
    /// room (no room, no hang-up), and a writer waiting for room must
    /// meet the error its next send gets (`EPIPE`). TCP reports one; a
    /// second is harmless. The bit stays: a send on a shut side fails,
    /// never says `WouldBlock`.
    pub(crate) fn mark_write_shut(&self) {
        let mut wake = Vec::new();
        self.scheduled()
            .set_ready(WRITABLE | WRITE_CLOSED, &mut wake);
        crate::driver::wake_all(&mut wake);
    }

    /// Runs `f` when `dir` is ready, until it does not say `WouldBlock`
    /// (module docs). `key` is the caller's waiter slot for `dir`.
    pub(crate) fn poll_io<R>(
        &self,
        cx: &mut Context<'_>,
        dir: Direction,
        key: &mut Option<usize>,
        mut f: impl FnMut(&S) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            let ev = ready!(self.scheduled().poll_ready(cx, dir, key))?;
            match f(self.source()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.stopped_at_urgent_byte(&ev) {
                        return yield_now(cx);
                    }
                    self.scheduled().clear_blocked(ev);
                }
                r => return Poll::Ready(r),
            }
        }
    }

    /// [`PollIo::poll_io`] for a transfer of at most `asked` bytes: a short
    /// one clears the readiness too (module docs).
    pub(crate) fn poll_transfer(
        &self,
        cx: &mut Context<'_>,
        dir: Direction,
        key: &mut Option<usize>,
        asked: usize,
        mut f: impl FnMut(&S) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            let ev = ready!(self.scheduled().poll_ready(cx, dir, key))?;
            match f(self.source()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.stopped_at_urgent_byte(&ev) {
                        return yield_now(cx);
                    }
                    self.scheduled().clear_blocked(ev);
                }
                // Not at TCP's urgent mark, where a read stops short with
                // data behind it (`scheduled_io`, "Urgent data").
                Ok(n) if is_short(n, asked) && !ev.is_closed() && !ev.is_urgent() => {
                    self.scheduled().clear(ev);
                    return Poll::Ready(Ok(n));
                }
                r => return Poll::Ready(r),
            }
        }
    }

    /// An `async` [`PollIo::poll_io`] holding its own waiter slot, freed
    /// when the future completes or is dropped.
    pub(crate) async fn async_io<R>(
        &self,
        dir: Direction,
        mut f: impl FnMut(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        let mut key = Key {
            io: self.scheduled(),
            key: None,
        };
        poll_fn(|cx| self.poll_io(cx, dir, &mut key.key, &mut f)).await
    }

    /// Waits until `dir` is ready (a hint: the next operation may still
    /// get `WouldBlock`, and clear it), holding its own waiter slot.
    pub(crate) async fn ready(&self, dir: Direction) -> io::Result<()> {
        let mut key = Key {
            io: self.scheduled(),
            key: None,
        };
        poll_fn(|cx| {
            self.scheduled()
                .poll_ready(cx, dir, &mut key.key)
                .map_ok(drop)
        })
        .await
    }

    /// As [`PollIo::ready`], giving the readiness seen, for the caller to
    /// clear ([`PollIo::clear_ready`]) when its own operation meets
    /// `WouldBlock` (`wq::io::AsyncFd`'s guards).
    pub(crate) async fn ready_event(&self, dir: Direction) -> io::Result<ReadyEvent> {
        let mut key = Key {
            io: self.scheduled(),
            key: None,
        };
        poll_fn(|cx| self.scheduled().poll_ready(cx, dir, &mut key.key)).await
    }

    /// Clears the readiness `event` saw (unless an event came since: its
    /// tick); `blocked`: after a `WouldBlock`, which shows a closed bit no
    /// longer holds, that bit too (else it stays: a hang-up is final).
    pub(crate) fn clear_ready(&self, event: ReadyEvent, blocked: bool) {
        if blocked {
            self.scheduled().clear_blocked(event);
        } else {
            self.scheduled().clear(event);
        }
    }

    /// Runs `f` once if `dir` is ready now, without waiting: `WouldBlock`
    /// if it is not, or if `f` says so (which clears the readiness seen,
    /// as a waiting operation's `WouldBlock` does).
    pub(crate) fn try_io<R>(
        &self,
        dir: Direction,
        f: impl FnOnce(&S) -> io::Result<R>,
    ) -> io::Result<R> {
        let Some(ev) = self.scheduled().ready_now(dir) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let ev = ev?;
        let r = f(self.source());
        self.tried(ev, r)
    }

    /// A try's end: a `WouldBlock` clears the readiness `ev` saw (unless
    /// a signal stopped the read at TCP's urgent mark: kept, and the
    /// caller's `readable` answers at once, and its next try reads).
    fn tried<R>(&self, ev: ReadyEvent, r: io::Result<R>) -> io::Result<R> {
        if let Err(e) = &r
            && e.kind() == io::ErrorKind::WouldBlock
            && !self.stopped_at_urgent_byte(&ev)
        {
            self.scheduled().clear_blocked(ev);
        }
        r
    }

    /// [`PollIo::async_io`] with the source borrowed mutably (the caller
    /// holds the object exclusively: `AsyncFd::read_with_mut`).
    pub(crate) async fn async_io_mut<R>(
        &mut self,
        dir: Direction,
        mut f: impl FnMut(&mut S) -> io::Result<R>,
    ) -> io::Result<R> {
        let io = self.registered.io.clone();
        let mut key = Key { io: &io, key: None };
        poll_fn(|cx| {
            loop {
                let ev = ready!(io.poll_ready(cx, dir, &mut key.key))?;
                match f(self.source_mut()) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if self.stopped_at_urgent_byte(&ev) {
                            return yield_now(cx);
                        }
                        io.clear_blocked(ev);
                    }
                    r => return Poll::Ready(r),
                }
            }
        })
        .await
    }

    /// [`PollIo::try_io`] with the source borrowed mutably.
    pub(crate) fn try_io_mut<R>(
        &mut self,
        dir: Direction,
        f: impl FnOnce(&mut S) -> io::Result<R>,
    ) -> io::Result<R> {
        let Some(ev) = self.scheduled().ready_now(dir) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let ev = ev?;
        let r = f(self.source_mut());
        self.tried(ev, r)
    }

    /// Frees a waiter slot the caller kept (a stream half being dropped).
    pub(crate) fn release(&self, key: &mut Option<usize>) {
        self.scheduled().release(key);
    }

    /// [`PollIo::poll_io`] with the object's shared waiter slot (module
    /// docs, "Waiter keys"). The slot is taken out of `key` for the poll
    /// and put back after it, its lock not held meanwhile: `f` may be a
    /// user's (`AsyncFd::poll_read_with`), which may poll the same object
    /// again (a `std` mutex held across it deadlocked that), and the
    /// budget's wake may be another executor's. Polls at once (from two
    /// threads, or nested) each wait in a slot of their own; the one that
    /// puts its slot back last keeps it and the other slot is released:
    /// the last poller is the one woken, as the method's docs say.
    pub(crate) fn poll_io_shared<R>(
        &self,
        cx: &mut Context<'_>,
        dir: Direction,
        key: &SharedKey,
        f: impl FnMut(&S) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        let mut slot = key.take();
        let r = self.poll_io(cx, dir, &mut slot, f);
        let replaced = key.put(slot);
        if replaced.is_some() {
            // Another poll put its slot back meanwhile: ours is the later.
            self.release(&mut { replaced });
        }
        r
    }

    /// Frees the object's shared waiter slot (the object being dropped).
    pub(crate) fn release_shared(&self, key: &SharedKey) {
        self.release(&mut key.take());
    }

    /// Waiter slots held now.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn waiters(&self) -> usize {
        self.scheduled().waiters()
    }
}

/// The waiter slot of an object's `&self` poll method: one per object and
/// direction, its waker the last polling task's (module docs).
#[derive(Debug)]
pub(crate) struct SharedKey(AtomicUsize);

/// A [`SharedKey`] holding no slot.
const NO_KEY: usize = usize::MAX;

impl Default for SharedKey {
    fn default() -> SharedKey {
        SharedKey(AtomicUsize::new(NO_KEY))
    }
}

impl SharedKey {
    /// The slot, taken out (a poll waits in it meanwhile).
    fn take(&self) -> Option<usize> {
        let key = self.0.swap(NO_KEY, Ordering::Relaxed);
        (key != NO_KEY).then_some(key)
    }

    /// Puts `key` back; the slot another poll put back meanwhile, if any.
    /// (Relaxed: a slot is an index into the waiters' slab, which its own
    /// lock guards; one swap each way, as the mutex's lock and unlock were.)
    fn put(&self, key: Option<usize>) -> Option<usize> {
        let prev = self.0.swap(key.unwrap_or(NO_KEY), Ordering::Relaxed);
        (prev != NO_KEY).then_some(prev)
    }
}

/// A waiter slot released on drop.
struct Key<'a> {
    io: &'a ScheduledIo,
    key: Option<usize>,
}

impl Drop for Key<'_> {
    fn drop(&mut self) {
        self.io.release(&mut self.key);
    }
}

impl<S: mio::event::Source> Drop for PollIo<S> {
    fn drop(&mut self) {
        // `into_source` took it, and deregistered it, already.
        if let Some(mut source) = self.source.take() {
            // An error here (the fd is not registered any more) leaves
            // nothing to undo; the slot is freed either way.
            let _ = self.handle.deregister(&mut source, &self.registered);
            drop(source); // closes the fd, after the EPOLL_CTL_DEL
        }
    }
}

/// A datagram socket's registration and the waiter slots of its `&self`
/// poll methods (receiving, sending), released when it drops: what
/// `UdpSocket` and `UnixDatagram` share.
///
/// # Shut for reading
/// Linux answers a non-blocking receive on a datagram socket shut down
/// for reading with `EAGAIN` (the blocking one returns 0: only a
/// `SOCK_SEQPACKET` socket says 0 either way), while its readiness says
/// readable and read-closed. The `WouldBlock` would clear that readiness
/// (`scheduled_io`, "A closed bit that no longer holds") and the receive
/// wait for an event that never comes. So the socket's own `shutdown`
/// marks `read_shut` once its call succeeded, and raises the read
/// readiness itself (the call's own event may have been consumed by a
/// receive that read no mark yet: it looks again and sees it); a
/// receive's `WouldBlock` with the mark set is the end of the stream,
/// what the blocking call returns (`at_shut`); `readable` returns at
/// once. (The mark came before the call until 2026-12-06: a receive
/// between the two said the end while the socket still took datagrams.)
/// A shutdown made from outside (on the descriptor) is marked by the
/// first receive that meets `WouldBlock` with the read-closed bit its
/// event raised (`Datagram::shut_seen`): from then on, the same.
pub(crate) struct Datagram<S: mio::event::Source> {
    io: PollIo<S>,
    keys: [SharedKey; 2],
    read_shut: AtomicBool,
}

impl<S: mio::event::Source> Datagram<S> {
    pub(crate) fn new(io: PollIo<S>) -> Datagram<S> {
        Datagram {
            io,
            keys: Default::default(),
            read_shut: AtomicBool::new(false),
        }
    }

    /// Runs `shutdown` (the socket's `shutdown(2)`, `read` if it shuts the
    /// reading side, `write` the writing side), then, if it succeeded,
    /// marks the socket shut for reading and raises the write side's
    /// readiness (`PollIo::mark_write_shut`) as it shut them (type docs).
    pub(crate) fn shutdown(
        &self,
        read: bool,
        write: bool,
        shutdown: impl FnOnce(&S) -> io::Result<()>,
    ) -> io::Result<()> {
        #[cfg(all(test, not(loom)))]
        if read {
            tests::BEFORE_SHUTDOWN_CALL.with(|h| h.take().map(|f| f()));
        }
        shutdown(self.source())?;
        if read {
            self.mark_read_shut();
        }
        if write {
            self.io.mark_write_shut();
        }
        Ok(())
    }

    /// Marks the socket shut for reading, after its `shutdown(2)` call,
    /// and raises its read readiness (the call's own event may have come
    /// and gone: a receive that met `WouldBlock` before the mark, and
    /// waits, looks again and sees it). Marked before the call, a receive
    /// between the two said the end while the socket took datagrams still,
    /// queued then behind that end.
    fn mark_read_shut(&self) {
        self.read_shut.store(true, Ordering::SeqCst);
        let mut wake = Vec::new();
        self.io
            .scheduled()
            .set_ready(READABLE | READ_CLOSED, &mut wake);
        crate::driver::wake_all(&mut wake);
    }

    /// A receive `f`, whose `WouldBlock` once the socket is shut for
    /// reading is `at_shut()` (type docs).
    fn receive<R>(
        &self,
        mut f: impl FnMut(&S) -> io::Result<R>,
        at_shut: impl Fn() -> io::Result<R>,
    ) -> impl FnMut(&S) -> io::Result<R> {
        let would_block =
            |r: &io::Result<R>| matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        move |s| match f(s) {
            // SeqCst, as the mark's store: a receive woken by the
            // readiness the mark raised reads it after its own call. Or
            // shut from outside (a `shutdown(2)` on the descriptor, by a
            // library or another process sharing it): its event's
            // read-closed bit says so, and is marked here.
            r if would_block(&r) && (self.read_shut.load(Ordering::SeqCst) || self.shut_seen()) => {
                // The shutdown came between the call and the load: what
                // was queued before it (Linux delivers it) may have come
                // meanwhile too, and goes before the end. The mark is
                // stored after the shutdown's call: this one sees it.
                match f(s) {
                    r if would_block(&r) => at_shut(),
                    r => r,
                }
            }
            r => r,
        }
    }

    /// Whether the driver has reported the socket shut for reading (its
    /// read-closed bit: a datagram socket reports it, `EPOLLRDHUP`, for a
    /// read shutdown only, which lasts): marked then, as the socket's own
    /// `shutdown` marks it (a shutdown made from outside, on the
    /// descriptor, was not seen: Linux answers a receive there `EAGAIN`,
    /// and it waited for ever where the blocking call returns).
    fn shut_seen(&self) -> bool {
        let seen = matches!(
            self.io.scheduled().ready_now(Direction::Read),
            Some(Ok(ev)) if ev.ready & READ_CLOSED != 0
        );
        if seen {
            self.read_shut.store(true, Ordering::SeqCst);
        }
        seen
    }

    pub(crate) fn source(&self) -> &S {
        self.io.source()
    }

    /// The driver the socket is registered with (its timers serve the
    /// socket's own waits, whatever the polling thread's runtime).
    pub(crate) fn driver(&self) -> &Handle {
        self.io.handle()
    }

    /// An awaited receive: `f` when the socket is readable; `at_shut()`
    /// once it is shut for reading and has nothing queued (type docs).
    pub(crate) async fn recv_with<R>(
        &self,
        f: impl FnMut(&S) -> io::Result<R>,
        at_shut: impl Fn() -> io::Result<R>,
    ) -> io::Result<R> {
        self.io
            .async_io(Direction::Read, self.receive(f, at_shut))
            .await
    }

    /// An awaited send: `f` when the socket is writable.
    pub(crate) async fn send_with<R>(&self, f: impl FnMut(&S) -> io::Result<R>) -> io::Result<R> {
        self.io.async_io(Direction::Write, f).await
    }

    /// Waits until the socket is readable (`Read`: at once once it is
    /// shut for reading) or writable (`Write`).
    pub(crate) async fn ready(&self, dir: Direction) -> io::Result<()> {
        if dir == Direction::Read && self.read_shut.load(Ordering::SeqCst) {
            // An operation of the task's budget, as a readiness found set
            // is (`coop`): a loop of `readable()` and `try_recv` on a shut
            // socket (a `try_recv` there never waits) held its worker,
            // and a timeout around it never fired. The runtime's shutdown
            // still wins, as for every other wait and for `try_recv`.
            return std::future::poll_fn(|cx| {
                std::task::ready!(crate::coop::poll_proceed(cx));
                crate::coop::spend();
                if let Some(Err(e)) = self.io.scheduled().ready_now(Direction::Read) {
                    return std::task::Poll::Ready(Err(e));
                }
                std::task::Poll::Ready(Ok(()))
            })
            .await;
        }
        self.io.ready(dir).await
    }

    /// A send `f` once if the socket is writable now ([`PollIo::try_io`]).
    pub(crate) fn try_send_with<R>(&self, f: impl FnOnce(&S) -> io::Result<R>) -> io::Result<R> {
        self.io.try_io(Direction::Write, f)
    }

    /// A receive `f` once if the socket is readable now
    /// ([`PollIo::try_io`]); `at_shut()` once it is shut for reading and
    /// has nothing queued.
    pub(crate) fn try_recv_with<R>(
        &self,
        f: impl FnMut(&S) -> io::Result<R>,
        at_shut: impl Fn() -> io::Result<R>,
    ) -> io::Result<R> {
        let shut = |e: &io::Error| {
            e.kind() == io::ErrorKind::WouldBlock && self.read_shut.load(Ordering::SeqCst)
        };
        // Its own `WouldBlock` once shut is mapped inside `try_io`, as a
        // waiting receive's is, asking the socket once more first
        // (`receive`): left to `try_io`, it cleared the readiness the
        // shutdown's event raised, and a waiting receive after it waited
        // for an event that never comes; mapped at once, a datagram that
        // came between the call and a shutdown came after the end.
        let mut f = self.receive(f, at_shut);
        // Shut: the socket itself says whether anything is queued (Linux
        // delivers what came before the shutdown). Its readiness may not
        // know yet -- an event the driver has not turned to -- and "not
        // ready" read as "the end" answered 0 with a datagram queued,
        // which then came after it. (The runtime's shutdown still wins.)
        if self.read_shut.load(Ordering::SeqCst) {
            if let Some(Err(e)) = self.io.scheduled().ready_now(Direction::Read) {
                return Err(e);
            }
            return f(self.io.source());
        }
        match self.io.try_io(Direction::Read, &mut f) {
            // Not ready (the readiness cleared by an earlier receive,
            // before the shutdown): once shut, the socket says, as above
            // (a shutdown between the first load and here: what it
            // queued before went after the end).
            Err(e) if shut(&e) => f(self.io.source()),
            r => r,
        }
    }

    /// A polled receive, in the receiving slot; `at_shut()` as for
    /// [`Datagram::recv_with`].
    pub(crate) fn poll_recv_with<R>(
        &self,
        cx: &mut Context<'_>,
        f: impl FnMut(&S) -> io::Result<R>,
        at_shut: impl Fn() -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        self.io
            .poll_io_shared(cx, Direction::Read, &self.keys[0], self.receive(f, at_shut))
    }

    /// A polled send, in the sending slot.
    pub(crate) fn poll_send_with<R>(
        &self,
        cx: &mut Context<'_>,
        f: impl FnMut(&S) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        self.io
            .poll_io_shared(cx, Direction::Write, &self.keys[1], f)
    }
}

impl<S: mio::event::Source> Drop for Datagram<S> {
    fn drop(&mut self) {
        // The slots' wakers go now (the slots themselves would go with
        // the registration's `ScheduledIo`).
        for key in &self.keys {
            self.io.release_shared(key);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    /// A test hook, run once.
    type Hook = std::cell::Cell<Option<Box<dyn FnOnce()>>>;

    std::thread_local! {
        /// Runs in a datagram socket's `shutdown` (for reading), on this
        /// thread, just before its `shutdown(2)` call.
        pub(super) static BEFORE_SHUTDOWN_CALL: Hook = const { std::cell::Cell::new(None) };
    }

    /// A receive during a shutdown for reading answers by the socket's
    /// state, not the shutdown's intent: before the `shutdown(2)` call,
    /// "nothing yet" (it said the end, and a datagram that came before
    /// the call was queued behind that end); a receive waiting since
    /// before is woken by the mark, and says the end.
    #[test]
    fn a_receive_during_a_shutdown_for_reading_says_the_end_only_once_shut() {
        use std::io::ErrorKind::WouldBlock;
        let rt = crate::Runtime::new().unwrap();
        rt.block_on(async {
            let (a, b) = crate::net::UnixDatagram::pair().unwrap();
            let a = std::sync::Arc::new(a);
            let a2 = a.clone();
            BEFORE_SHUTDOWN_CALL.with(|h| {
                h.set(Some(Box::new(move || {
                    let mut buf = [0u8; 8];
                    let r = a2.try_recv_from(&mut buf).map(|(n, _)| n);
                    assert_eq!(
                        r.map_err(|e| e.kind()),
                        Err(WouldBlock),
                        "the end before the call"
                    );
                })))
            });
            // A receive waiting since before the shutdown.
            let a3 = a.clone();
            let waiting = crate::spawn(async move {
                let mut buf = [0u8; 8];
                a3.recv(&mut buf).await
            });
            crate::time::sleep(std::time::Duration::from_millis(20)).await;
            a.shutdown(std::net::Shutdown::Read).unwrap();
            let got = crate::time::timeout(std::time::Duration::from_secs(5), waiting)
                .await
                .expect("the waiting receive was woken")
                .unwrap();
            assert_eq!(got.unwrap(), 0, "the end, once shut");
            drop(b);
        });
    }

    /// A `try_recv` whose call found nothing, with a datagram and a
    /// shutdown for reading coming between the call and its look at the
    /// mark, gets the datagram, and the end after it (it answered the end
    /// at once, and the datagram came after it).
    #[test]
    fn a_try_recv_racing_a_shutdown_for_reading_gets_what_came_before_it() {
        let rt = crate::Runtime::new().unwrap();
        rt.block_on(async {
            let (a, b) = mio::net::UnixDatagram::pair().unwrap();
            let driver = crate::scheduler::services::current_driver("the test").unwrap();
            let sock = super::Datagram::new(super::PollIo::new(driver, a).unwrap());
            // Readable, and left so by a receive that got a datagram.
            b.send(b"a").unwrap();
            sock.ready(super::Direction::Read).await.unwrap();
            let mut buf = [0u8; 8];
            let got = sock.try_recv_with(|s| s.recv(&mut buf), || Ok(0));
            assert_eq!(got.unwrap(), 1);
            let mut first = true;
            let got = sock.try_recv_with(
                |s| {
                    if std::mem::take(&mut first) {
                        // The call found nothing; then a datagram, and the
                        // shutdown.
                        b.send(b"b").unwrap();
                        sock.shutdown(true, false, |s| s.shutdown(std::net::Shutdown::Read))
                            .unwrap();
                        return Err(std::io::ErrorKind::WouldBlock.into());
                    }
                    s.recv(&mut buf)
                },
                || Ok(0),
            );
            assert_eq!(
                got.unwrap(),
                1,
                "the datagram that came before the shutdown"
            );
            assert_eq!(&buf[..1], b"b");
            let end = sock.try_recv_with(|s| s.recv(&mut buf), || Ok(0));
            assert_eq!(end.unwrap(), 0, "then the end");
        });
    }
}
