//! The runtime's services beside its pools: the I/O and timer driver and
//! the blocking pool. One `Services` per runtime, in its scheduler.
//!
//! # Who turns the driver
//! No thread is dedicated to it. The driver is created on first use of a
//! socket or a timer (a runtime that only computes has none: no epoll fds),
//! and then **lent to whoever parks**: a worker about to sleep takes it
//! if nobody has it and waits in its `epoll_wait` instead of on its futex
//! (`pool::park`), so a socket's readiness wakes the task right on that
//! worker, into its LIFO slot when the task's home is that worker's pool:
//! no thread hop, no kick. A kick of that worker wakes the driver's
//! eventfd. A thread in `Runtime::block_on` does the same while its future
//! waits; one that finds the driver taken sleeps on its futex as a
//! **waiter**, woken to take it by an attend that finds no worker to wake
//! (its holder left with every worker busy, blocked or refused). Busy workers turn the driver without waiting every
//! [`MAINTENANCE_INTERVAL`](crate::pool::worker::MAINTENANCE_INTERVAL)
//! polls, so I/O moves on while every worker is busy, and the runtime's
//! watchdog (the rescuer thread) does too at each of its ticks (every half
//! CPU-hog threshold while workers run; its tick grows to 100 ms while
//! none does, and a poll that starts then waits for the tick it is on), so
//! a long poll holds I/O up for at most a tick: half the threshold, or,
//! for one that starts after the runtime idled, up to 100 ms. A worker that leaves the driver after events woke tasks
//! does not hand the driver to a parked sibling (tokio's optional eager
//! hand-off): measured on the echo and HTTP benchmarks, the futex wakeup
//! per batch cost more than it saved; it comes back to the driver when it
//! idles, and the watchdog bounds the stall of a long poll meanwhile. A
//! thread that may not come back for long (`block_on` about to poll its
//! woken future, a worker culled or blocking) wakes an idle
//! worker to take the driver, and a zero-wait turn does not count as
//! attending it (`pool::park`, "Attending the driver"): with the watchdog
//! off (`cpu_hog_threshold(Duration::ZERO)`) nothing else would turn it.
//!
//! States of the driver, under `state`'s lock:
//! 1. **none**: [`Services::driver`] creates it (epoll, its registry dup,
//!    its eventfd), publishes it in `driver` (a `OnceLock`, read lock-free
//!    from then on), and kicks the default pool so that a worker exists to
//!    park in it.
//! 2. **lent**: its `Mutex` is taken with `try_lock` by a parking thread
//!    for one turn; a thread that finds it taken parks on its futex (one
//!    that finds a zero-wait turn holding it first leaves that turn's
//!    thread a mark to attend after it, `pool::park`).
//! 3. **closed**: [`Services::shutdown`] sets `closed` (no driver is
//!    created after), asks the driver to shut down (a turn in progress
//!    returns), takes it (the workers have exited by then) and shuts it
//!    down: every source still registered fails, every timer still armed
//!    fires (`driver`'s module docs).
//!
//! A driver that cannot be created (no fds) is an `io::Error` for the
//! socket call that needed it; a timer panics with it.
//!
//! # Shutdown order
//! As the runtime closes, the blocking pool closes too
//! ([`BlockingPool::close`]): queued jobs are dropped (their handles give a
//! cancelled `JoinError`) and none starts after, while the workers are
//! waited for. The runtime calls [`Services::shutdown`] last, after every
//! task has been dropped: sockets and timers that lived in tasks have
//! deregistered by then. Running blocking jobs are waited for then, up to
//! the shutdown's timeout (`blocking`'s module docs).

use crossbeam_utils::CachePadded;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use super::Scheduler;
use super::blocking::BlockingPool;
use crate::driver::{self, Driver};
pub(crate) use crate::pool::Turn;

/// See the module docs.
#[derive(Default)]
pub(crate) struct Services {
    /// On lines of its own: its lock and `turning` are written at every
    /// turn and park, beside the scheduler's fields every spawn reads.
    driver: OnceLock<CachePadded<Lent>>,
    state: Mutex<DriverState>,
    /// Threads in `block_on` that found the driver taken (and may sleep on
    /// their futexes), by a key: woken to take it when its holder leaves
    /// and no worker can be ([`Services::wake_block_on_waiters`]).
    block_on_waiters: Mutex<BlockOnWaiters>,
    pub(crate) blocking: BlockingPool,
    /// Test hook: runs once in the next `turn_driver` on the thread that
    /// set it (not a worker's), just before it takes the driver's lock.
    #[cfg(test)]
    #[allow(clippy::type_complexity)]
    before_lock: Mutex<Option<(std::thread::ThreadId, Box<dyn FnOnce() + Send>)>>,
    /// Test hook: runs once at the end of the next turn, between its
    /// unlock and the clear of its mark.
    #[cfg(test)]
    after_unlock: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

/// The driver and its handle.
struct Lent {
    /// Read by every timer and socket made; a line apart from the lock.
    handle: CachePadded<driver::Handle>,
    /// `None` once shut down: its epoll descriptor and event buffer go
    /// then, not with the last `Handle` (a handle kept past its runtime
    /// held them for good). What sockets and timers still use lives in
    /// `handle`.
    driver: Mutex<Option<Driver>>,
    /// Who turns the driver now ([`Turn`] as `u8` in the low byte, 0 for
    /// nobody; the turning thread's [`turn_tag`] above it, so that a turn
    /// that ends clears its own mark only, never the next holder's, which
    /// may take the lock between its unlock and its clear): a hint for
    /// spinning workers, mirroring who holds `driver`, and for
    /// [`Services::attend`].
    turning: AtomicU32,
    /// An attend found a zero-wait turn holding the driver and left it to
    /// that turn's thread, which attends after its turn
    /// ([`Services::take_deferred_attend`]).
    attend_after: AtomicBool,
}

impl Lent {
    /// The [`Turn`] of the turn holding the driver (0: nobody).
    fn turning(&self) -> u8 {
        self.turning.load(Ordering::Relaxed) as u8
    }
}

/// This thread's tag in a turn's mark (`Lent::turning`): nonzero, one per
/// thread (a thread's turns never overlap), repeating only after 2^24
/// threads.
fn turn_tag() -> u32 {
    use std::cell::Cell;
    static NEXT: AtomicU32 = AtomicU32::new(1);
    thread_local! {
        static TAG: Cell<u32> = const { Cell::new(0) };
    }
    TAG.try_with(|t| {
        if t.get() == 0 {
            t.set((NEXT.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff).max(1));
        }
        t.get()
    })
    // In a thread-local's destructor: a tag of its own is not needed for
    // correctness, only to keep a late clear off the next mark.
    .unwrap_or(0x00ff_ffff)
}

/// What [`Services::attend`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attended {
    /// A thread is parked in the driver, or a zero-wait turn will attend
    /// after it: nothing to do.
    Yes,
    /// Nobody turns it: the caller wakes an idle worker to park in it.
    No,
}

#[derive(Default)]
struct DriverState {
    closed: bool,
}

#[derive(Default)]
struct BlockOnWaiters {
    next: u64,
    waiting: Vec<(u64, crate::pool::park::Unparker)>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("driver", &self.driver.get().is_some())
            .field("blocking", &self.blocking)
            .finish()
    }
}

impl Services {
    /// Whether the driver has been created (tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn has_driver(&self) -> bool {
        self.driver.get().is_some()
    }

    /// The runtime's driver, if it has been created.
    pub(crate) fn existing_driver(&self) -> Option<&driver::Handle> {
        self.driver.get().map(|l| &*l.handle)
    }

    /// The runtime's driver, created on first use (module docs).
    pub(crate) fn driver(&self, scheduler: &Scheduler) -> io::Result<&driver::Handle> {
        if let Some(l) = self.driver.get() {
            return Ok(&*l.handle);
        }
        let state = crate::loom::lock(&self.state);
        if let Some(l) = self.driver.get() {
            return Ok(&*l.handle);
        }
        if state.closed {
            return Err(io::Error::other(
                "the wq runtime has shut down: no socket or timer can be made on it; keep the runtime alive while they are made and used",
            ));
        }
        // A shard per CPU the runtime may use (the topology's, when the
        // budget is unknown).
        let cpus = scheduler
            .config
            .cpu_budget
            .min(scheduler.topology.num_cpus());
        let driver = Driver::for_cpus(cpus).map_err(|e| {
            let message = format!(
                "wq: could not create the I/O driver (epoll): {e}; check the process's open-file limit (`ulimit -n`)"
            );
            crate::driver::with_hint(e, message)
        })?;
        let lent = Lent {
            handle: CachePadded::new(driver.handle().clone()),
            driver: Mutex::new(Some(driver)),
            turning: AtomicU32::new(0),
            attend_after: AtomicBool::new(false),
        };
        let handle = &*self.driver.get_or_init(|| CachePadded::new(lent)).handle;
        drop(state);
        // A worker to park in it: a pool with no worker yet starts one,
        // which finds nothing to run and parks in the driver.
        if !scheduler.is_closed() {
            scheduler
                .place(
                    scheduler.default_attrs(),
                    scheduler.config.default_scope,
                    None,
                )
                .notify();
        }
        Ok(handle)
    }

    /// Runs `turn` with the driver if it exists and nobody turns it now;
    /// returns whether it did.
    pub(crate) fn turn_driver(&self, kind: Turn, turn: &mut dyn FnMut(&mut Driver)) -> bool {
        let Some(lent) = self.driver.get() else {
            return false;
        };
        #[cfg(test)]
        {
            let mut hook = crate::loom::lock(&self.before_lock);
            if hook
                .as_ref()
                .is_some_and(|(on, _)| *on == std::thread::current().id())
                && let Some((_, hook)) = hook.take()
            {
                hook();
            }
        }
        // A zero-wait turn (every busy worker's, each 61 polls) while a
        // turn holds the driver has nothing to do: one load of a line
        // every turn writes anyway, not a failed lock's write to the
        // mutex's line, which the holder then misses on to give it back.
        if kind == Turn::ZeroWait && lent.turning() != 0 {
            return false;
        }
        let d = match lent.driver.try_lock() {
            Ok(d) => d,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                // A thread about to sleep on its futex because a zero-wait
                // turn holds the driver (over in microseconds, attending
                // nobody): it leaves that turn's thread a mark to attend
                // after its turn, fences, and tries once more (the
                // store-buffering pair of `attend`: either the turn's
                // thread reads the mark, or this try finds the lock free).
                // `turning` reads 0 too while a turn takes the lock:
                // marked then as well (a mark a parked holder's start gets
                // is taken by the next zero-wait turn: one wakeup for
                // nothing at most). A parked holder's turn reads `Park` to
                // its end (cleared after the unlock): its thread comes
                // back or attends as it leaves for long (`pool::park`,
                // "Attending the driver"); a poll it runs meanwhile is the
                // watchdog's to cover.
                if kind != Turn::Park || lent.turning() == Turn::Park as u8 {
                    return false;
                }
                lent.attend_after.store(true, Ordering::Relaxed);
                std::sync::atomic::fence(Ordering::SeqCst);
                match lent.driver.try_lock() {
                    Ok(d) => d,
                    Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(std::sync::TryLockError::WouldBlock) => return false,
                }
            }
        };
        // Read with the lock held: the shutdown's eventfd write, which
        // ends the turn's wait, may have been taken by the turn that held
        // the driver before, so a turn started after the request would
        // wait its whole time (a minute, in `block_on`) and hold up the
        // shutdown, which takes this lock. Either the flag is seen here,
        // or it is set after, and its write wakes this turn.
        if lent.handle.is_shutdown() || d.is_none() {
            return false;
        }
        // Relaxed: a hint (see `driver_unattended`); an attend orders its
        // read with fences (`attend`).
        let mark = kind as u32 | turn_tag() << 8;
        lent.turning.store(mark, Ordering::Relaxed);
        // Cleared even if the turn unwinds (set for good, it would keep
        // every idle worker off the driver), and only after the lock is
        // given back: a parker that finds the lock held reads the turn's
        // kind, not 0, to its end.
        struct Turned<'a> {
            turning: &'a AtomicU32,
            mark: u32,
            driver: Option<std::sync::MutexGuard<'a, Option<Driver>>>,
            #[cfg(test)]
            services: &'a Services,
        }
        impl Drop for Turned<'_> {
            fn drop(&mut self) {
                drop(self.driver.take());
                #[cfg(test)]
                if let Some(hook) = crate::loom::lock(&self.services.after_unlock).take() {
                    hook();
                }
                let _ = self.turning.compare_exchange(
                    self.mark,
                    0,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }
        let mut turned = Turned {
            turning: &lent.turning,
            mark,
            driver: Some(d),
            #[cfg(test)]
            services: self,
        };
        let driver = turned.driver.as_mut().expect("held until the drop");
        turn(driver.as_mut().expect("checked above, under the lock"));
        true
    }

    /// Whether a thread is parked in the driver now (a hint, stale at
    /// once): it fires timers, and attends when it leaves for long.
    pub(crate) fn driver_parked(&self) -> bool {
        self.driver
            .get()
            .is_some_and(|l| l.turning() == Turn::Park as u8)
    }

    /// Whether the runtime has a driver that nobody turns now: a worker
    /// with nothing to do should park in it rather than spin (a socket's
    /// readiness would wait for the spin to end). A hint, stale at once.
    pub(crate) fn driver_unattended(&self) -> bool {
        self.driver
            .get()
            .is_some_and(|l| l.turning() == 0 && !l.handle.is_shutdown())
    }

    /// Whether the runtime has a driver that no thread is parked in now (a
    /// hint): unattended, or held by a zero-wait turn, which attends
    /// nobody (an attend then leaves it to that turn's thread).
    pub(crate) fn driver_unparked(&self) -> bool {
        self.driver
            .get()
            .is_some_and(|l| l.turning() != Turn::Park as u8 && !l.handle.is_shutdown())
    }

    /// The driver's side of an attend (`Host::attend_driver`, after the
    /// caller's `SeqCst` fence): whether a thread attends the driver. A
    /// zero-wait turn holding it does not (it waits for nothing and is
    /// over at once: the idle workers that found the driver taken sleep on
    /// their futexes): the attend is left to that turn's thread
    /// (`attend_after`, read after its turn; the store-buffering pair of
    /// "Attending the driver" in `pool::park`), unless the turn ended
    /// meanwhile, when the caller wakes a worker itself.
    pub(crate) fn attend(&self) -> Attended {
        let Some(lent) = self.driver.get() else {
            return Attended::Yes; // no driver: nothing to attend
        };
        if lent.handle.is_shutdown() {
            return Attended::Yes;
        }
        match lent.turning() {
            0 => Attended::No,
            t if t == Turn::Park as u8 => Attended::Yes,
            _ => {
                lent.attend_after.store(true, Ordering::Relaxed);
                std::sync::atomic::fence(Ordering::SeqCst);
                if lent.turning() != 0 {
                    return Attended::Yes;
                }
                // The turn ended: whoever takes the mark back attends (this
                // caller, or the turn's thread, which may have read it).
                if lent.attend_after.swap(false, Ordering::Relaxed) {
                    Attended::No
                } else {
                    Attended::Yes
                }
            }
        }
    }

    /// A `block_on` thread that found the driver taken, before it tries
    /// again and sleeps on its futex: the pair of
    /// [`wake_block_on_waiters`] (either its try finds the lock free, or
    /// the thread that gave it back and found no worker to take it reads
    /// this; the waiters' lock orders the two, no fence needed:
    /// `loom_a_block_on_waiter_*` in `pool::park`). Until
    /// [`remove_block_on_waiter`](Services::remove_block_on_waiter).
    ///
    /// [`wake_block_on_waiters`]: Services::wake_block_on_waiters
    pub(crate) fn add_block_on_waiter(&self, unparker: crate::pool::park::Unparker) -> u64 {
        let mut w = crate::loom::lock(&self.block_on_waiters);
        let key = w.next;
        w.next += 1;
        w.waiting.push((key, unparker));
        key
    }

    pub(crate) fn remove_block_on_waiter(&self, key: u64) {
        crate::loom::lock(&self.block_on_waiters)
            .waiting
            .retain(|(k, _)| *k != key);
    }

    /// For an attend that found no worker to wake (`Host::attend_driver`):
    /// wakes the `block_on` threads that found the driver taken, the
    /// latest first, until one was asleep on its futex; whether one was,
    /// and so comes to the driver now (one between two parks is about to:
    /// its next park returns at once, and tries the driver; with none
    /// asleep, the caller starts a worker all the same). The others sleep
    /// on: the one woken takes the driver, or, its future woken first,
    /// attends before its poll as any thread leaving the driver does,
    /// which wakes the next.
    pub(crate) fn wake_block_on_waiters(&self) -> bool {
        let w = crate::loom::lock(&self.block_on_waiters);
        w.waiting.iter().rev().any(|(_, u)| u.unpark_asleep())
    }

    /// For a zero-wait turn's thread, after its turn and a `SeqCst` fence:
    /// whether an attend was left to it ([`Services::attend`]); it then
    /// attends (`Host::attend_driver`).
    pub(crate) fn take_deferred_attend(&self) -> bool {
        self.driver.get().is_some_and(|l| {
            l.attend_after.load(Ordering::Relaxed) && l.attend_after.swap(false, Ordering::Relaxed)
        })
    }

    /// Shuts the services down (module docs); waits for running blocking
    /// jobs until `deadline` (forever if `None`). Returns whether every
    /// service thread exited.
    pub(crate) fn shutdown(&self, deadline: Option<Instant>) -> bool {
        crate::loom::lock(&self.state).closed = true;
        if let Some(lent) = self.driver.get() {
            lent.handle.shutdown();
            // The workers have exited, or those left (a shutdown's timeout
            // ran out) are in a poll; a thread turning the driver (in
            // `block_on`, or such a worker's maintenance turn) returns from
            // its turn at the shutdown's unpark, and the lock below waits
            // for that.
            let mut driver = crate::loom::lock(&lent.driver);
            if let Some(mut d) = driver.take() {
                d.shut_down();
            }
        }
        self.blocking.shutdown(deadline)
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Turn;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    /// A runtime of one CPU whose every worker start the "OS" refuses,
    /// without the watchdog: no thread of its own turns the driver.
    fn no_workers() -> crate::Runtime {
        crate::scheduler::rescuer::tests::workerless("no-workers", Duration::ZERO)
    }

    /// A thread in `block_on` of `rt` sleeping `ms`, once it parks in the
    /// driver for it.
    fn holder_in_the_driver(rt: &crate::Runtime, ms: u64) -> std::thread::JoinHandle<()> {
        let scheduler = rt.handle().scheduler.clone();
        scheduler.services.driver(&scheduler).unwrap();
        let h = rt.handle().clone();
        let holder = std::thread::spawn(move || {
            h.block_on(async { crate::time::sleep(Duration::from_millis(ms)).await });
        });
        until_parked_in_the_driver(&scheduler);
        holder
    }

    /// Waits until a thread of `scheduler` parks in its driver (made
    /// already, or soon).
    fn until_parked_in_the_driver(scheduler: &super::Scheduler) {
        let t0 = Instant::now();
        while scheduler
            .services
            .driver
            .get()
            .is_none_or(|l| l.turning() != Turn::Park as u8)
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "nobody parked in the driver"
            );
            std::thread::yield_now();
        }
    }

    /// A `block_on` thread is a waiter only while it parks: polling its
    /// future it is not coming to the driver, and an attend that found no
    /// worker must not count it (it did: no worker was started, and the
    /// driver waited for the poll).
    #[test]
    fn a_block_on_thread_polling_its_future_is_no_waiter() {
        let rt = no_workers();
        let holder = holder_in_the_driver(&rt, 300);
        let s = rt.handle().scheduler.clone();
        let me_while_polling = rt.block_on(async move {
            // Parks beside the holder's turn (a waiter), woken by its timer
            // in that turn.
            crate::time::sleep(Duration::from_millis(50)).await;
            let me = std::thread::current().id();
            crate::loom::lock(&s.services.block_on_waiters)
                .waiting
                .iter()
                .any(|(_, u)| u.thread_id() == me)
        });
        holder.join().unwrap();
        assert!(!me_while_polling, "a waiter while it polls");
    }

    /// A turn that ends clears its own mark, not that of the turn that
    /// took the driver between its unlock and its clear: a parked turn
    /// read as nobody's for its whole wait (every searcher parked instead
    /// of spinning, every attend woke a worker for nothing).
    #[test]
    fn a_turn_that_ends_leaves_the_next_turns_mark() {
        let rt = no_workers();
        let scheduler = rt.handle().scheduler.clone();
        let services = &scheduler.services;
        services.driver(&scheduler).unwrap();
        let s = scheduler.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        *crate::loom::lock(&services.after_unlock) = Some(Box::new(move || {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                s.services.turn_driver(Turn::Park, &mut |d| {
                    tx.send(()).unwrap();
                    while done_rx.try_recv().is_err() {
                        d.turn(Some(Duration::from_millis(10)));
                    }
                });
            });
            // The next turn holds the driver, its mark stored.
            rx.recv().unwrap();
        }));
        assert!(services.turn_driver(Turn::ZeroWait, &mut |d| {
            d.turn(Some(Duration::ZERO));
        }));
        let unattended = services.driver_unattended();
        done_tx.send(()).unwrap();
        assert!(!unattended, "a turn in the driver read as nobody's");
    }

    /// A `block_on` thread that met another `block_on` thread's turn in
    /// the driver sleeps on its futex; when that turn's thread leaves and
    /// no worker can be woken to take the driver (none here: the "OS"
    /// refuses every start; the watchdog, which turns it too, off), the
    /// sleeper is woken to take it. It slept its whole park (60 s), its
    /// timer unfired.
    #[test]
    fn a_block_on_asleep_beside_the_driver_takes_it_when_its_holder_leaves() {
        let rt = no_workers();
        let holder = holder_in_the_driver(&rt, 300);
        let (tx, rx) = std::sync::mpsc::channel();
        let h = rt.handle().clone();
        let sleeper = std::thread::spawn(move || {
            let start = Instant::now();
            h.block_on(async { crate::time::sleep(Duration::from_millis(600)).await });
            let _ = tx.send(start.elapsed());
        });
        let took = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the sleeper's 600 ms timer had not fired after 20 s");
        assert!(took >= Duration::from_millis(600), "{took:?}");
        holder.join().unwrap();
        sleeper.join().unwrap();
    }

    /// One CPU, one worker, no watchdog (nothing else turns the driver).
    fn one_worker_without_watchdog() -> crate::Runtime {
        crate::Runtime::builder()
            .topology(crate::Topology::synthetic("core:1 pu:1").unwrap())
            .max_workers_per_pool(1)
            .cpu_hog_threshold(Duration::ZERO)
            .build()
            .unwrap()
    }

    /// A task on `rt` that sleeps `ms`, then sends: the receiver says when
    /// its timer fired.
    fn timer_in(rt: &crate::Runtime, ms: u64) -> std::sync::mpsc::Receiver<()> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        drop(rt.spawn(async move {
            crate::time::sleep(Duration::from_millis(ms)).await;
            tx.send(()).unwrap();
        }));
        rx
    }

    /// A strict queue on `rt` (a pool of its own) and a task on it that
    /// sleeps `ms`, then sends: the receiver says when its timer fired.
    fn strict_queue_timer(
        rt: &crate::Runtime,
        ms: u64,
    ) -> (crate::Workqueue, std::sync::mpsc::Receiver<()>) {
        let q = crate::Workqueue::builder("own-pool")
            .strict(true)
            .build(rt.handle())
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        drop(q.spawn(async move {
            crate::time::sleep(Duration::from_millis(ms)).await;
            tx.send(()).unwrap();
        }));
        (q, rx)
    }

    /// A task that first waits (in its poll, holding its worker) for
    /// `held`, then blocks in `block_in_place` until `release`.
    struct Blocker {
        held: std::sync::mpsc::Sender<()>,
        blocked: std::sync::mpsc::Receiver<()>,
        release: std::sync::mpsc::Sender<()>,
        task: crate::JoinHandle<()>,
    }

    fn blocker(rt: &crate::Runtime, entered: std::sync::mpsc::Sender<()>) -> Blocker {
        blocker_with(|f| rt.spawn(f), entered)
    }

    /// [`blocker`], spawned by `spawn`.
    fn blocker_with(
        spawn: impl FnOnce(futures::future::BoxFuture<'static, ()>) -> crate::JoinHandle<()>,
        entered: std::sync::mpsc::Sender<()>,
    ) -> Blocker {
        let (held, held_rx) = std::sync::mpsc::channel::<()>();
        let (blocked_tx, blocked) = std::sync::mpsc::channel::<()>();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let task = spawn(Box::pin(async move {
            entered.send(()).unwrap();
            held_rx.recv().unwrap();
            crate::task::block_in_place(move || {
                blocked_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            });
        }));
        Blocker {
            held,
            blocked,
            release,
            task,
        }
    }

    /// Holds the driver in a zero-wait turn while `b`'s worker blocks
    /// (the turn taken once the driver is free), then does what the
    /// watchdog does after its turn; returns whether `timer` fired while
    /// the worker stayed blocked.
    fn fires_beside_a_zero_wait_turn(
        rt: &crate::Runtime,
        b: Blocker,
        timer: &std::sync::mpsc::Receiver<()>,
    ) -> bool {
        let scheduler = rt.handle().scheduler.clone();
        let t0 = Instant::now();
        let mut pending = Some((b.held, b.blocked));
        while pending.is_some() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "never held the driver"
            );
            scheduler.services.turn_driver(Turn::ZeroWait, &mut |_| {
                let (held, blocked) = pending.take().unwrap();
                held.send(()).unwrap();
                blocked.recv().unwrap();
            });
            std::thread::yield_now();
        }
        scheduler.attend_after_zero_wait_turn();
        let fired = timer.recv_timeout(Duration::from_secs(10)).is_ok();
        b.release.send(()).unwrap();
        rt.block_on(b.task).unwrap();
        fired
    }

    /// The pool's one worker, parked in the driver, is kicked into a task
    /// that blocks in `block_in_place`, and a zero-wait turn (the
    /// watchdog's, here with the watchdog off) holds the driver as it
    /// attends: the attend is left to that turn's thread, which found no
    /// idle worker to wake and did nothing more. Nobody was started (the
    /// blocked worker no longer counts), and the timer waited for the
    /// block to end.
    #[test]
    fn a_timer_fires_while_a_worker_blocks_whose_attend_met_a_zero_wait_turn() {
        let rt = one_worker_without_watchdog();
        let timer = timer_in(&rt, 200);
        until_parked_in_the_driver(&rt.handle().scheduler);
        // Kicked out of the driver into this task.
        let (entered, _entered) = std::sync::mpsc::channel();
        let b = blocker(&rt, entered);
        assert!(
            fires_beside_a_zero_wait_turn(&rt, b, &timer),
            "the timer waited for the blocked worker"
        );
    }

    /// As `a_timer_fires_while_a_worker_blocks_whose_attend_met_a_zero_wait_turn`,
    /// the blocking worker in a pool of its own (a strict queue's) while
    /// the default pool's one worker is in a long poll: the turn's thread
    /// kicked the default pool only, which could start nobody, and the
    /// blocked worker's pool, with room for one, started none.
    #[test]
    fn a_timer_fires_while_a_worker_of_another_pool_blocks_beside_a_zero_wait_turn() {
        let rt = one_worker_without_watchdog();
        // The default pool's one worker in a poll until released.
        let busy = Arc::new(AtomicBool::new(true));
        let b = busy.clone();
        drop(rt.spawn(async move {
            while b.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        }));
        let (q, timer) = strict_queue_timer(&rt, 300);
        // The queue's worker armed the timer and idles in the driver.
        until_parked_in_the_driver(&rt.handle().scheduler);
        let (entered, _entered) = std::sync::mpsc::channel();
        let b = blocker_with(|f| q.spawn(f), entered);
        let fired = fires_beside_a_zero_wait_turn(&rt, b, &timer);
        busy.store(false, Ordering::Relaxed);
        assert!(fired, "the timer waited for the blocked worker");
    }

    /// A worker kicked out of the driver into a task that spawns a long
    /// task and then blocks in `block_in_place`: the worker started for
    /// the long task (its deque's work) runs it first, and must not count
    /// as coming to the driver. It counted (a searcher), the worker of
    /// another pool, idle on its futex beside the driver's holder, was
    /// never woken, and its timer waited for the long task.
    #[test]
    fn a_worker_started_for_a_blocked_workers_deque_does_not_count_as_attending() {
        let rt = one_worker_without_watchdog();
        let scheduler = rt.handle().scheduler.clone();
        // The default pool's worker parks in the driver.
        let _first = timer_in(&rt, 200);
        until_parked_in_the_driver(&scheduler);
        // A strict queue's pool: its worker arms a timer, then idles on
        // its futex (the driver is held).
        let (_q, timer) = strict_queue_timer(&rt, 400);
        let strict = scheduler
            .pools()
            .into_iter()
            .find(|p| p.attrs.strict)
            .unwrap();
        let t0 = Instant::now();
        while strict.idle.hint().parked() == 0 {
            assert!(t0.elapsed() < Duration::from_secs(30), "never idled");
            std::thread::yield_now();
        }
        // Into the default pool's worker, out of the driver: a long task
        // left on its deque, then a block.
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let blocker = rt.spawn(async move {
            drop(crate::spawn(async {
                std::thread::sleep(Duration::from_secs(2));
            }));
            crate::task::block_in_place(move || release_rx.recv().unwrap());
        });
        let fired = timer.recv_timeout(Duration::from_millis(1200)).is_ok();
        release.send(()).unwrap();
        rt.block_on(blocker).unwrap();
        assert!(fired, "the timer waited for the long task");
    }

    /// A worker that never held the driver blocks in `block_in_place` while
    /// the driver is unattended (its `block_on` holder left, finding no
    /// worker to take it: the one worker was in this poll) but held by a
    /// zero-wait turn: that turn attends nobody, yet the worker read the
    /// driver as attended and attended nothing; the turn's thread, with
    /// no attend left to it, found no idle worker, and the timer waited
    /// for the block to end.
    #[test]
    fn a_timer_fires_while_a_worker_blocks_beside_a_zero_wait_turn() {
        let rt = one_worker_without_watchdog();
        let scheduler = rt.handle().scheduler.clone();
        // The one worker busy until released: it never holds the driver.
        let busy = Arc::new(AtomicBool::new(true));
        let b = busy.clone();
        drop(rt.spawn(async move {
            while b.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        }));
        // A `block_on` thread holds the driver until `leave` fires.
        scheduler.services.driver(&scheduler).unwrap();
        let (leave_tx, leave_rx) = futures::channel::oneshot::channel::<()>();
        let h = rt.handle().clone();
        let holder = std::thread::spawn(move || h.block_on(leave_rx).unwrap());
        until_parked_in_the_driver(&scheduler);
        let timer = timer_in(&rt, 300);
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let b = blocker(&rt, entered_tx);
        busy.store(false, Ordering::Relaxed);
        // The worker ran the timer's task and is in the blocker's poll.
        entered.recv().unwrap();
        leave_tx.send(()).unwrap();
        holder.join().unwrap();
        assert!(
            fires_beside_a_zero_wait_turn(&rt, b, &timer),
            "the timer waited for the blocked worker"
        );
    }

    /// The shutdown's own thread as the waiter: a task its drain drops
    /// runs a `Drop` that calls `block_on` while the pool's one worker,
    /// closed but still in its driver turn (running a waker there), holds
    /// the driver. The worker, leaving the turn and exiting, attends the
    /// driver and wakes the waiter, whose timer then fires. It exited
    /// without attending (its pool closed), and nobody else turned the
    /// driver before the shutdown's wait: the drop took the park's 60 s.
    #[test]
    fn a_shutdown_thread_waiting_in_a_drop_is_woken_by_the_exiting_worker() {
        use std::task::{Context, Wake, Waker};
        /// A waker that, woken in the worker's driver turn, says so and
        /// holds the turn until released.
        struct Holds(
            std::sync::Mutex<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>,
        );
        impl Wake for Holds {
            fn wake(self: Arc<Self>) {
                self.wake_by_ref();
            }
            fn wake_by_ref(self: &Arc<Self>) {
                let g = self.0.lock().unwrap();
                let _ = g.0.send(());
                let _ = g.1.recv();
            }
        }
        /// Its `Drop` waits on the runtime it was dropped by.
        struct WaitsOnDrop(crate::Handle, Arc<AtomicBool>);
        impl Drop for WaitsOnDrop {
            fn drop(&mut self) {
                self.0
                    .block_on(async { crate::time::sleep(Duration::from_millis(50)).await });
                self.1.store(true, Ordering::SeqCst);
            }
        }
        let rt = crate::Runtime::builder()
            .topology(crate::Topology::synthetic("pack:1 core:2 pu:1").unwrap())
            .default_scope(crate::Scope::System)
            .max_workers_per_pool(1)
            .cpu_hog_threshold(Duration::ZERO)
            .build()
            .unwrap();
        let scheduler = rt.handle().scheduler.clone();
        scheduler.services.driver(&scheduler).unwrap();
        rt.block_on(rt.spawn(async {})).unwrap();
        until_parked_in_the_driver(&scheduler);
        // A timer whose waker holds the worker's turn.
        let (in_turn_tx, in_turn) = std::sync::mpsc::channel();
        let (release, held) = std::sync::mpsc::channel();
        let waker = Waker::from(Arc::new(Holds(std::sync::Mutex::new((in_turn_tx, held)))));
        let mut sleep = {
            let _in = rt.enter();
            Box::pin(crate::time::sleep(Duration::from_millis(20)))
        };
        assert!(
            std::future::Future::poll(sleep.as_mut(), &mut Context::from_waker(&waker))
                .is_pending()
        );
        in_turn.recv().unwrap();
        // Queued behind the held worker: the shutdown's drain drops it.
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = WaitsOnDrop(rt.handle().clone(), dropped.clone());
        drop(rt.spawn(async move {
            let _guard = guard;
        }));
        let dropper = std::thread::spawn(move || drop(rt));
        let t0 = Instant::now();
        while !crate::loom::lock(&scheduler.services.block_on_waiters)
            .waiting
            .iter()
            .any(|(_, u)| u.asleep())
        {
            assert!(t0.elapsed() < Duration::from_secs(20), "never a waiter");
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || done_tx.send(dropper.join()).unwrap());
        done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the shutdown's thread slept beside a driver nobody turned")
            .unwrap();
        assert!(dropped.load(Ordering::SeqCst));
        drop(sleep);
    }

    /// An attend that finds no worker wakes one `block_on` waiter asleep
    /// on its futex, not every one: the first takes the driver (or polls
    /// its future and attends in turn); the others woke only to sleep
    /// again, a futex wake and a context switch each.
    #[test]
    fn an_attend_wakes_one_sleeping_block_on_waiter() {
        let services = super::Services::default();
        let sleepers: Vec<_> = (0..4)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel();
                let thread = std::thread::spawn(move || {
                    let parker = crate::pool::park::Parker::new();
                    tx.send(parker.unparker()).unwrap();
                    parker.park(Duration::from_secs(30), |_| false);
                });
                (rx.recv().unwrap(), thread)
            })
            .collect();
        for (u, _) in &sleepers {
            services.add_block_on_waiter(u.clone());
        }
        let t0 = Instant::now();
        while !sleepers.iter().all(|(u, _)| u.asleep()) {
            assert!(t0.elapsed() < Duration::from_secs(20), "never all asleep");
            std::thread::yield_now();
        }
        assert!(services.wake_block_on_waiters(), "one was asleep");
        let woken = sleepers.iter().filter(|(u, _)| !u.asleep()).count();
        for (u, thread) in sleepers {
            u.unpark();
            thread.join().unwrap();
        }
        assert_eq!(woken, 1, "an attend woke {woken} sleeping waiters");
    }

    /// A turn that takes the driver after the shutdown was asked for,
    /// whose eventfd write an earlier turn took, does not wait in it: it
    /// waited its whole time (a minute, for `block_on`), holding up the
    /// shutdown. The shutdown comes as the turn is about to take the lock
    /// (after a look at the flag made before it, where one was).
    #[test]
    fn no_turn_starts_after_the_shutdown_was_asked_for() {
        let rt = crate::Runtime::new().unwrap();
        let scheduler = rt.handle().scheduler.clone();
        let services = &scheduler.services;
        services.driver(&scheduler).unwrap();
        let s = scheduler.clone();
        *crate::loom::lock(&services.before_lock) = Some((
            std::thread::current().id(),
            Box::new(move || {
                let lent = s.services.driver.get().unwrap();
                lent.handle.shutdown();
                // The earlier turn: it takes the shutdown's wakeup.
                crate::loom::lock(&lent.driver)
                    .as_mut()
                    .unwrap()
                    .turn(Some(std::time::Duration::ZERO));
            }),
        ));
        let mut waited = false;
        let turned = services.turn_driver(Turn::Park, &mut |_| waited = true);
        assert!(
            !turned && !waited,
            "a turn started after the shutdown was asked for"
        );
    }
}
