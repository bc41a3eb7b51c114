//! The runtime's services beside its pools: the I/O and timer driver and
//! the blocking pool. One `Services` per runtime, in its scheduler.
//!
//! # The driver thread
//! Started on first use of a socket or a timer, not at build: a runtime
//! that runs only computation (most of wq's users so far, and every
//! benchmark of the pools) costs no extra thread and no epoll fds. The
//! first use pays one thread start (~50 us), once.
//!
//! States, under `state`'s lock:
//! 1. **idle**: no driver. [`Services::driver`] creates the driver (epoll,
//!    its registry dup, its eventfd), starts `<thread_name>-io` turning it,
//!    and publishes the handle in `driver` (a `OnceLock`, read lock-free
//!    from then on).
//! 2. **running**: the thread loops on `Driver::turn(None)` until the
//!    handle's `shutdown` flag is set.
//! 3. **closed**: [`Services::shutdown`] sets `closed` (no driver starts
//!    after), asks the driver to shut down, and joins its thread, which on
//!    its way out fails every source and fires every timer still there
//!    (`driver`'s module docs).
//!
//! A driver that cannot start (no fds, no thread) is an `io::Error` for the
//! socket call that needed it; a timer panics with it.
//!
//! # Shutdown order
//! The runtime calls [`Services::shutdown`] last, after every task has been
//! dropped: sockets and timers that lived in tasks have deregistered by
//! then, so the driver's last turn sees only those held outside the
//! runtime. Then the blocking pool: queued jobs are dropped (their handles
//! give a cancelled `JoinError`), running ones are waited for up to the
//! shutdown's timeout (`blocking`'s module docs).

use std::io;
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle as ThreadHandle;
use std::time::{Duration, Instant};

use super::Scheduler;
use super::blocking::BlockingPool;
use crate::driver::{self, Driver};

/// See the module docs.
#[derive(Default)]
pub(crate) struct Services {
    driver: OnceLock<driver::Handle>,
    state: Mutex<DriverState>,
    pub(crate) blocking: BlockingPool,
}

#[derive(Default)]
struct DriverState {
    thread: Option<ThreadHandle<()>>,
    closed: bool,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("driver", &self.driver.get().is_some())
            .field("blocking", &self.blocking)
            .finish()
    }
}

thread_local! {
    static ON_DRIVER_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Services {
    /// The runtime's driver, started on first use (module docs).
    pub(crate) fn driver(&self, shared: &Scheduler) -> io::Result<&driver::Handle> {
        if let Some(h) = self.driver.get() {
            return Ok(h);
        }
        let mut state = crate::loom::lock(&self.state);
        if let Some(h) = self.driver.get() {
            return Ok(h);
        }
        if state.closed {
            return Err(driver::scheduled_io::shutdown_error());
        }
        let mut driver = Driver::new().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("wq: could not create the I/O driver (epoll): {e}; check the process's open-file limit (`ulimit -n`)"),
            )
        })?;
        let handle = driver.handle().clone();
        let mut builder =
            std::thread::Builder::new().name(format!("{}-io", shared.config.thread_name));
        if let Some(bytes) = shared.config.thread_stack_size {
            builder = builder.stack_size(bytes);
        }
        let thread = builder
            .spawn(move || {
                ON_DRIVER_THREAD.with(|d| d.set(true));
                while !driver.handle().is_shutdown() {
                    driver.turn(None);
                }
                driver.shut_down();
            })
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("wq: could not start the I/O driver thread: {e}; the process may be at its thread limit (`ulimit -u`)"),
                )
            })?;
        state.thread = Some(thread);
        Ok(self.driver.get_or_init(|| handle))
    }

    /// Shuts the services down (module docs); waits for running blocking
    /// jobs up to `timeout`. Returns whether every service thread exited.
    pub(crate) fn shutdown(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let thread = {
            let mut state = crate::loom::lock(&self.state);
            state.closed = true;
            state.thread.take()
        };
        if let Some(h) = self.driver.get() {
            h.shutdown();
        }
        let mut all = true;
        if let Some(thread) = thread {
            if ON_DRIVER_THREAD.with(|d| d.get()) {
                // A waker run by the driver dropped the runtime: the loop
                // sees the flag when this turn ends.
                all = false;
            } else {
                let _ = thread.join();
            }
        }
        self.blocking.shutdown(deadline) && all
    }
}

/// The driver of the thread's current runtime; panics naming `what`
/// outside a runtime (as `wq::spawn` does).
pub(crate) fn current_driver(what: &str) -> io::Result<driver::Handle> {
    super::context::with_current(|s| match s {
        Some(s) => s.services.driver(s).cloned(),
        None => super::context::outside(what),
    })
}
