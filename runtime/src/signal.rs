//! Signals: `ctrl_c()` and, on Unix, [`unix::signal`], delivered as
//! readiness of the runtime's I/O driver.
//!
//! # How a delivery reaches a task
//! Each [`unix::Signal`] (and each [`ctrl_c`] future) owns a socket pair:
//! the write end is handed to `signal-hook`'s async-signal-safe handler
//! (`signal_hook::low_level::pipe`), which writes one byte per delivery
//! (a byte that does not fit is dropped: the reader wakes anyway); the read
//! end is registered with the driver like any socket. `recv` drains the
//! bytes and completes; finding none, it clears the readiness and waits
//! (the driver's protocol, `driver::registration`). Deliveries that arrive
//! before a `recv` are kept as bytes, so none made after the `Signal` was
//! created is lost; several in a row may complete one `recv` (the kernel
//! merges pending signals of one kind too).
//!
//! Dropping a `Signal` unregisters its handler action (which closes the
//! write end) and deregisters the read end. The process-wide handler that
//! `signal-hook` installed for the signal stays: once a signal has been
//! listened for, its default action (terminating the process, for SIGINT
//! and SIGTERM) does not come back, as with tokio's signals.

use std::future::Future;
use std::io::{self, Read};
use std::task::{Context, Poll};

use crate::driver::registration::PollIo;
use crate::driver::scheduled_io::Direction;

/// Completes at the next SIGINT (ctrl-c in a terminal) delivered after
/// the call, with an error if the handler cannot be installed, or if the
/// runtime shuts down before one is read (none will be). The
/// handler is installed at the call, not at the first poll: a ctrl-c
/// between the two is not lost (and does not end the process).
///
/// # Panics
/// Outside a wq runtime, as `wq::spawn`.
///
/// ```no_run
/// #[wq::main]
/// async fn main() -> std::io::Result<()> {
///     let stop = wq::signal::ctrl_c();
///     // ... start serving ...
///     stop.await?;
///     println!("ctrl-c: shutting down");
///     Ok(())
/// }
/// ```
pub fn ctrl_c() -> impl Future<Output = io::Result<()>> + Send + 'static {
    let signal = unix::signal_named("wq::signal::ctrl_c", unix::SignalKind::interrupt());
    async move {
        let mut signal = signal?;
        match signal.recv().await {
            Some(()) => Ok(()),
            // No more deliveries (the runtime's driver shut down): no
            // ctrl-c came before, none is waiting unread, and none will.
            None => Err(crate::driver::scheduled_io::shutdown_error()),
        }
    }
}

/// Unix signals by kind.
pub mod unix {
    use super::*;

    /// A signal to listen for (`libc::SIG*`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SignalKind(libc::c_int);

    impl SignalKind {
        /// Any signal by number; one the process may not catch (SIGKILL,
        /// SIGSTOP, and the faults SIGSEGV, SIGBUS, SIGILL, SIGFPE), or a
        /// number that is no signal, is refused by [`signal`].
        pub const fn from_raw(signum: libc::c_int) -> SignalKind {
            SignalKind(signum)
        }
        /// Its number.
        pub const fn as_raw_value(self) -> libc::c_int {
            self.0
        }
        /// SIGINT (ctrl-c).
        pub const fn interrupt() -> SignalKind {
            SignalKind(libc::SIGINT)
        }
        /// SIGTERM (a service manager's request to stop).
        pub const fn terminate() -> SignalKind {
            SignalKind(libc::SIGTERM)
        }
        /// SIGHUP (the terminal went away; by convention, reload).
        pub const fn hangup() -> SignalKind {
            SignalKind(libc::SIGHUP)
        }
        /// SIGQUIT.
        pub const fn quit() -> SignalKind {
            SignalKind(libc::SIGQUIT)
        }
        /// SIGUSR1.
        pub const fn user_defined1() -> SignalKind {
            SignalKind(libc::SIGUSR1)
        }
        /// SIGUSR2.
        pub const fn user_defined2() -> SignalKind {
            SignalKind(libc::SIGUSR2)
        }
        /// SIGCHLD. (Listening installs a handler: a process that had set
        /// SIGCHLD to ignored, so that the kernel reaped its children,
        /// must reap them itself from then on.)
        pub const fn child() -> SignalKind {
            SignalKind(libc::SIGCHLD)
        }
        /// SIGWINCH (the terminal was resized).
        pub const fn window_change() -> SignalKind {
            SignalKind(libc::SIGWINCH)
        }
        /// SIGALRM (a timer of `alarm`/`setitimer` expired).
        pub const fn alarm() -> SignalKind {
            SignalKind(libc::SIGALRM)
        }
        /// SIGIO (an `O_ASYNC` descriptor is ready).
        pub const fn io() -> SignalKind {
            SignalKind(libc::SIGIO)
        }
        /// SIGPIPE (a write to a pipe or socket with no reader; Rust
        /// programs ignore it from the start, and listening replaces that
        /// with a handler: writes still fail with `BrokenPipe`).
        pub const fn pipe() -> SignalKind {
            SignalKind(libc::SIGPIPE)
        }
    }

    impl From<libc::c_int> for SignalKind {
        fn from(signum: libc::c_int) -> SignalKind {
            SignalKind::from_raw(signum)
        }
    }

    impl From<SignalKind> for libc::c_int {
        fn from(kind: SignalKind) -> libc::c_int {
            kind.as_raw_value()
        }
    }

    /// Deliveries of one signal kind, from [`signal`].
    pub struct Signal {
        io: PollIo<mio::net::UnixStream>,
        id: signal_hook::SigId,
        kind: SignalKind,
        key: Option<usize>,
        /// `recv` gave `None`: every later call does too.
        ended: bool,
    }

    /// Starts listening for `kind`: every delivery from now on completes a
    /// [`Signal::recv`] (deliveries in a row may complete one). Several
    /// `Signal`s of one kind each see every delivery.
    ///
    /// # Errors
    /// A signal the process may not catch (SIGKILL, SIGSTOP, SIGSEGV,
    /// SIGBUS, SIGILL, SIGFPE), a number that is no signal (`EINVAL`, from
    /// `sigaction`), no file descriptors left for the socket pair, or a
    /// runtime that has shut down (or whose driver cannot be made).
    ///
    /// # Panics
    /// Outside a wq runtime, as `wq::spawn`.
    ///
    /// ```no_run
    /// use wq::signal::unix::{SignalKind, signal};
    ///
    /// #[wq::main]
    /// async fn main() -> std::io::Result<()> {
    ///     let mut term = signal(SignalKind::terminate())?;
    ///     term.recv().await;
    ///     println!("SIGTERM: draining connections");
    ///     Ok(())
    /// }
    /// ```
    pub fn signal(kind: SignalKind) -> io::Result<Signal> {
        signal_named("wq::signal::unix::signal", kind)
    }

    pub(super) fn signal_named(what: &str, kind: SignalKind) -> io::Result<Signal> {
        let driver = crate::scheduler::services::current_driver(what)?;
        // signal-hook's list has the other faults but not SIGBUS, which is
        // one (a read of a mapped file's page past its end): with a
        // handler that returns, the faulting access runs again, and
        // again, where the process should have died with a core dump.
        if signal_hook::consts::FORBIDDEN.contains(&kind.0) || kind.0 == libc::SIGBUS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{what}: signal {} cannot be caught (SIGKILL and SIGSTOP never are, and a \
                     fault signal's handler must not return); listen for another",
                    kind.0
                ),
            ));
        }
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        // The read end first: once the handler has the write end, the read
        // end must outlive its registration (signal-hook's handler sends
        // without MSG_NOSIGNAL: a delivery to a pair whose read end is gone
        // would raise SIGPIPE, fatal to a host that has not ignored it).
        let io = PollIo::new(driver, mio::net::UnixStream::from_std(read))?;
        // The handler owns the write end from here, and closes it when
        // unregistered (or at once, if registering fails).
        let id = signal_hook::low_level::pipe::register(kind.0, write).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{what}: could not install a handler for signal {}: {e}",
                    kind.0
                ),
            )
        })?;
        Ok(Signal {
            io,
            id,
            kind,
            key: None,
            ended: false,
        })
    }

    impl Signal {
        /// Waits for the next delivery (or for those since the last
        /// `recv`). `None` when no more can come: the runtime's driver has
        /// shut down (or something in the process took wq's handler away,
        /// with signal-hook-registry's deprecated `unregister_signal`).
        /// Deliveries made before the first `recv` that sees the shutdown
        /// are still given (`Some`), then `None`, and every later call
        /// gives `None` (the handler is removed then: a delivery after it
        /// is not seen by this `Signal`).
        pub async fn recv(&mut self) -> Option<()> {
            std::future::poll_fn(|cx| self.poll_recv(cx)).await
        }

        /// Polls for the next delivery; see [`Signal::recv`].
        pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<()>> {
            if self.ended {
                return Poll::Ready(None);
            }
            let Signal { io, key, .. } = self;
            let drained = io.poll_io(cx, Direction::Read, key, drain);
            match drained {
                Poll::Ready(Ok(_)) => Poll::Ready(Some(())),
                // The driver shut down (or the pair broke): a delivery
                // already written to the pair is still one, and is given;
                // only then none can come. (The pair stays readable after
                // the shutdown while the handler writes to it: `None` was
                // followed by a `Some` for a delivery after it.)
                Poll::Ready(Err(_)) => match drain(io.source()) {
                    Ok(_) => Poll::Ready(Some(())),
                    Err(_) => {
                        self.ended = true;
                        // Nothing reads the pair any more. (Unregistered
                        // before the read end goes, as `Drop` does: a
                        // second unregister there is a no-op.)
                        signal_hook::low_level::unregister(self.id);
                        Poll::Ready(None)
                    }
                },
                Poll::Pending => Poll::Pending,
            }
        }

        /// The kind it listens for.
        pub fn kind(&self) -> SignalKind {
            self.kind
        }
    }

    /// Reads every delivery's byte from the pair: how many, at least one;
    /// `WouldBlock` if none is there.
    fn drain(s: &mio::net::UnixStream) -> io::Result<usize> {
        let mut buf = [0u8; 64];
        let mut got = 0;
        loop {
            match (&*s).read(&mut buf) {
                // The write end closes only when this Signal drops.
                Ok(0) if got == 0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    impl Drop for Signal {
        fn drop(&mut self) {
            self.io.release(&mut self.key);
            // Before the read end (the `io` field) drops: see `signal_named`.
            signal_hook::low_level::unregister(self.id);
        }
    }

    impl std::fmt::Debug for Signal {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Signal")
                .field("kind", &self.kind)
                .finish_non_exhaustive()
        }
    }
}
