//! The I/O and timer driver: a mio `Poll` (epoll) and timing wheels (one
//! per timer shard: [`timers`]).
//!
//! # Parts, and who holds what
//! - [`Driver`]: owns the `mio::Poll` and its event buffer. Turning it needs
//!   `&mut`: one thread at a time turns a driver, and nothing assumes which
//!   (the runtime lends it to whichever of its threads parks:
//!   `scheduler::services`).
//! - [`Handle`]: cloneable, `Send + Sync`; what sockets and timers hold. It
//!   has the `mio::Registry` (a dup of the epoll fd), the `mio::Waker` that
//!   interrupts a turn ([`Handle::unpark`]), the table of registered
//!   sources (`ios`) and the timers (`timers`).
//!
//! # Tokens: slot index and generation
//! A registered source gets a slot in `ios` and the token
//! `generation << INDEX_BITS | index`. Deregistering frees the slot and bumps
//! its generation, so an event still in flight for the old registration
//! (delivered in the same `epoll_wait` batch, or queued before the
//! `EPOLL_CTL_DEL`) names a generation that no longer matches and is
//! dropped: it cannot wake the slot's next owner, even if the kernel reused
//! the fd number too. Sockets are deregistered **explicitly** before their
//! fd is closed: epoll tracks open file descriptions, not fd numbers, so a
//! description still open elsewhere (a `dup`, a forked child) would keep
//! reporting events for a closed fd's token.
//!
//! # A turn ([`Driver::turn`])
//! 1. Note a lower bound of the earliest timer's tick over the shards
//!    (`u64::MAX` if none) and publish it: an arm of an earlier timer after this unparks the driver
//!    ([`timers`], T1). A turn that does not wait (`max_wait` zero: a
//!    busy worker's look, the watchdog's) skips this step: nothing sleeps
//!    for an arm to cut short.
//! 2. `epoll_wait` for at most `min(max_wait, time to that timer)`; then
//!    the caller's `awake` ([`Driver::turn_then`]: a parker leaves its
//!    parked state before any waker runs).
//! 3. Mark the driver awake (arms need not unpark; the next turn
//!    recomputes the wait).
//! 4. Under the `ios` lock: for each event whose generation matches, set the
//!    source's readiness and collect the wakers of its waiters
//!    (`scheduled_io`); wake them after the unlock.
//! 5. For each timer shard with a timer due (or left [`timers`]'s
//!    `FRESH_TICKS` behind), under its lock, in batches of
//!    [`WAKE_BATCH`]: advance its wheel to now, collecting the due timers'
//!    wakers; wake each batch after the unlock ([`timers`], T3).
//!
//! Every waker is a task's own `Waker`: waking it runs wq's schedule
//! function (the task's home pool's queue, then a kick). The driver adds no
//! other wake path.
//!
//! # Time
//! Ticks are milliseconds since `base` (the driver's creation). A deadline
//! becomes the tick `ceil(deadline - base)`; a turn fires the ticks up to
//! `floor(now - base)`. So a timer never fires before its deadline, and
//! fires at most ~2 ms plus the wake-up latency after it (the tick's
//! rounding, then epoll's wait, which mio rounds up to whole milliseconds).
//! The kernel lets `epoll_wait` sleep past its timeout by a slack of 0.1%
//! of it (0.5% in a niced process), up to 100 ms
//! (`select_estimate_accuracy`; 7.9 ms late for a 10 s wait on the 2-vCPU
//! VM): a wait for a timer more than [`SLACK_FREE_WAIT`] away ends 1% of
//! it early (at most 200 ms), and the next turn waits the rest, whose
//! slack is under a millisecond ([`wait_for_timer`]).
//!
//! # Shutdown ([`Handle::shutdown`] then [`Driver::shut_down`])
//! `shutdown` is set and the driver unparked: a turn in progress returns,
//! and no thread takes the driver for another. The runtime's shutdown then
//! takes it and calls [`Driver::shut_down`]: every registered source gets the SHUTDOWN bit
//! (its waits fail with an error saying the runtime is gone), every pending
//! timer fires and is marked so (a `Sleep` polled after it panics with a
//! message), and their tasks are woken. The runtime calls this after it
//! has dropped every task, so in practice only futures outside the runtime
//! (a `block_on` on another thread) see it.
//!
//! Lock order: `ios`, then a source's `waiters`; a timer shard's lock is
//! taken alone.
//! No waker is woken or dropped under any of them. One is cloned (and
//! compared with `will_wake`) under a shard's lock when a `Sleep` stores
//! its task's waker, and under a source's `waiters` when an I/O future
//! stores its task's: a foreign executor's waker whose `clone` armed a wq
//! timer on the same shard, or registered a wq socket (which takes `ios`,
//! taken before `waiters` by a driver turn), would deadlock there (wq's
//! own wakers do nothing of the kind).

pub(crate) mod coarse;
pub(crate) mod registration;
pub(crate) mod scheduled_io;
pub(crate) mod timers;
pub(crate) mod wheel;

use crossbeam_utils::CachePadded;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use scheduled_io::{READ_CLOSED, READABLE, ScheduledIo, URGENT, WRITABLE, WRITE_CLOSED};
use timers::TimerShards;
pub(crate) use timers::Timers;

/// Bits of a token that hold the slot index; the generation is above.
const INDEX_BITS: u32 = if usize::BITS >= 64 { 32 } else { 20 };
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;
/// Generation bits: the top bit of the token is left clear, so no I/O token
/// equals `WAKE_TOKEN`.
const GENERATION_MASK: usize = (1 << (usize::BITS - INDEX_BITS - 1)) - 1;
const WAKE_TOKEN: Token = Token(usize::MAX);
/// Wakers collected under a lock before it is dropped to wake them.
const WAKE_BATCH: usize = 1024;
/// Events read per `epoll_wait`.
const EVENTS: usize = 1024;

/// Owns the `mio::Poll`: see the module docs.
pub(crate) struct Driver {
    poll: Poll,
    events: Events,
    handle: Handle,
    wake: Vec<Waker>,
}

/// A reference to a driver, held by sockets and timers.
#[derive(Clone)]
pub(crate) struct Handle {
    inner: Arc<Inner>,
}

struct Inner {
    registry: mio::Registry,
    waker: mio::Waker,
    /// A line of its own: locked at every turn with events and every
    /// registration, while every timer's poll reads `base`, `coarse` and
    /// `shutdown`. (The `Arc`'s counts, written at every clone, are on a
    /// line apart already: `TimerShards` aligns this struct to a line.)
    ios: CachePadded<Mutex<IoTable>>,
    timers: TimerShards,
    /// The tick base: deadlines are milliseconds after it.
    base: Instant,
    /// The coarse clock related to `base` ([`coarse`]).
    coarse: Option<coarse::CoarseClock>,
    shutdown: AtomicBool,
}

#[derive(Default)]
struct IoTable {
    slots: Vec<IoSlot>,
    free: Vec<usize>,
    shut_down: bool,
}

struct IoSlot {
    generation: usize,
    io: Option<Arc<ScheduledIo>>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("driver::Handle").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

/// The longest wait for a timer made whole: the kernel's slack on it is
/// at most 2 ms (0.5% in a niced process; module docs, "Time").
pub(crate) const SLACK_FREE_WAIT: Duration = Duration::from_millis(400);

/// How long a turn waits for a timer `until` away: all of it up to
/// [`SLACK_FREE_WAIT`]; beyond, 1% less (at most 200 ms less), so that
/// the kernel's slack (at most 0.5%) ends the wait before the deadline,
/// not after: the turn that follows waits the rest. A 60 s sleep ended
/// about 60 ms late; now two wakeups, the second within a millisecond of
/// the deadline.
pub(crate) fn wait_for_timer(until: Duration) -> Duration {
    if until <= SLACK_FREE_WAIT {
        until
    } else {
        until - (until / 100).min(Duration::from_millis(200))
    }
}

impl Driver {
    /// Creates the epoll instance, its registry dup and its waker (three
    /// fds), with a timer shard per CPU of this machine (tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn new() -> io::Result<Driver> {
        Driver::with_timer_shards(TimerShards::for_this_machine())
    }

    /// [`Driver::new`] with a timer shard for each of `cpus` CPUs (those
    /// the runtime may use at once: its workers, as a rule, arm timers one
    /// per CPU), up to `timers::MAX_SHARDS`.
    pub(crate) fn for_cpus(cpus: usize) -> io::Result<Driver> {
        Driver::with_timer_shards(TimerShards::new(cpus))
    }

    fn with_timer_shards(timers: TimerShards) -> io::Result<Driver> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = mio::Waker::new(poll.registry(), WAKE_TOKEN)?;
        let base = Instant::now();
        Ok(Driver {
            poll,
            events: Events::with_capacity(EVENTS),
            handle: Handle {
                inner: Arc::new(Inner {
                    registry,
                    waker,
                    ios: CachePadded::new(Mutex::new(IoTable::default())),
                    timers,
                    base,
                    coarse: coarse::CoarseClock::new(base),
                    shutdown: AtomicBool::new(false),
                }),
            },
            wake: Vec::with_capacity(WAKE_BATCH),
        })
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Processes I/O events and fires due timers, waiting at most
    /// `max_wait` (`None`: until an event, a timer or an unpark) for
    /// something to happen. See the module docs for the steps. Returns how
    /// many tasks it woke.
    pub(crate) fn turn(&mut self, max_wait: Option<Duration>) -> usize {
        self.turn_then(max_wait, &mut || {})
    }

    /// [`Driver::turn`], calling `awake` as soon as the wait is over,
    /// before any waker runs (a parker leaves its "asleep in the driver"
    /// state there: `pool::park`).
    pub(crate) fn turn_then(
        &mut self,
        max_wait: Option<Duration>,
        awake: &mut dyn FnMut(),
    ) -> usize {
        let mut woken = 0;
        let inner = &*self.handle.inner.clone();
        // 1. (A turn that does not wait publishes no deadline: an arm
        // meanwhile would write the eventfd for a sleep that never
        // happens, and the next real park would return at once for it.)
        let wait = if max_wait == Some(Duration::ZERO) {
            max_wait
        } else {
            let next = inner.timers.park();
            let until_timer = (next != u64::MAX).then(|| {
                wait_for_timer(
                    inner
                        .instant_of(next)
                        .saturating_duration_since(Instant::now()),
                )
            });
            match (max_wait, until_timer) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        // 2.
        if let Err(err) = self.poll.poll(&mut self.events, wait)
            && err.kind() != io::ErrorKind::Interrupted
        {
            // epoll_wait fails only on a bad fd or buffer: not
            // recoverable, and not silently ignorable either.
            panic!("wq: the I/O driver's epoll_wait failed: {err}");
        }
        awake();
        // 3.
        inner.timers.unpark();
        // 4.
        {
            let ios = crate::loom::lock(&*inner.ios);
            for event in self.events.iter() {
                let token = event.token();
                if token == WAKE_TOKEN {
                    continue;
                }
                let (index, generation) = (token.0 & INDEX_MASK, token.0 >> INDEX_BITS);
                let Some(slot) = ios.slots.get(index) else {
                    continue;
                };
                let Some(io) = slot.io.as_ref().filter(|_| slot.generation == generation) else {
                    continue; // a stale token (module docs)
                };
                let mut ready = 0;
                if event.is_readable() {
                    ready |= READABLE;
                }
                if event.is_writable() {
                    ready |= WRITABLE;
                }
                if event.is_read_closed() {
                    ready |= READ_CLOSED;
                }
                if event.is_write_closed() {
                    ready |= WRITE_CLOSED;
                }
                if event.is_error() {
                    // The syscall of either side reports the error.
                    ready |= READABLE | WRITABLE;
                }
                if event.is_priority() {
                    // Registered for TCP streams only (`register`).
                    ready |= URGENT;
                }
                io.set_ready(ready, &mut self.wake);
            }
        }
        woken += self.wake.len();
        wake_all(&mut self.wake);
        // 5.
        let now = inner.tick_floor(Instant::now());
        inner
            .timers
            .advance(now, &mut self.wake, WAKE_BATCH, &mut |wake| {
                woken += wake.len();
                wake_all(wake);
            });
        woken
    }

    /// Fails every registered source and fires every timer (see the
    /// module docs); called by whoever turns the driver once
    /// [`Handle::is_shutdown`] is set.
    pub(crate) fn shut_down(&mut self) {
        let inner = &*self.handle.inner.clone();
        {
            let mut ios = crate::loom::lock(&*inner.ios);
            ios.shut_down = true;
            for io in ios.slots.iter().filter_map(|s| s.io.as_ref()) {
                io.shutdown(&mut self.wake);
            }
        }
        wake_all(&mut self.wake);
        inner.timers.shut_down(&mut self.wake);
        wake_all(&mut self.wake);
    }
}

/// `d` in whole milliseconds, rounded up, at most `u64::MAX`: in u64 (a
/// whole second is whole milliseconds), where `as_nanos`' u128 division
/// cost a call per timer armed.
fn ms_ceil(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(d.subsec_nanos().div_ceil(1_000_000)))
}

/// Wakes the wakers a turn collected. A waker is a task's as a rule (wq's
/// schedule path, which does not panic), but one from another executor
/// might: its panic is caught (the panic hook has reported it; the first
/// is also explained once on stderr) and the other wakers are still woken,
/// so the thread turning the driver -- a worker, `block_on`, the watchdog
/// -- lives on with its counts intact.
pub(crate) fn wake_all(wake: &mut Vec<Waker>) {
    static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    for waker in wake.drain(..) {
        let woke = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || waker.wake()));
        if let Err(panic) = woke {
            // The payload's own drop must not unwind either.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(panic)));
            if !REPORTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "wq: a waker registered with a wq socket or timer panicked when the I/O driver woke it; the panic was caught and the driver goes on (is a future polled by another executor waiting on wq I/O?)"
                );
            }
        }
    }
}

impl Inner {
    fn instant_of(&self, tick: u64) -> Instant {
        self.base + Duration::from_millis(tick)
    }

    fn tick_floor(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX)
    }
}

impl Handle {
    /// Interrupts a turn in progress, or makes the next one return at once.
    pub(crate) fn unpark(&self) {
        if let Err(err) = self.inner.waker.wake() {
            // eventfd write fails only if the counter would overflow, which
            // means the driver is woken already.
            debug_assert!(false, "wq: could not wake the I/O driver: {err}");
        }
    }

    /// Asks the driver to shut down (see the module docs).
    pub(crate) fn shutdown(&self) {
        // Release: pairs with the Acquire in `is_shutdown`; the turning
        // thread then sees everything done before the request.
        self.inner.shutdown.store(true, Ordering::Release);
        self.unpark();
    }

    pub(crate) fn is_shutdown(&self) -> bool {
        // Acquire: see `shutdown`.
        self.inner.shutdown.load(Ordering::Acquire)
    }

    /// Registers `source` for read and write readiness (edge-triggered),
    /// and with `urgent` for TCP's urgent data (`EPOLLPRI`: a TCP
    /// stream's; `scheduled_io`, "Urgent data").
    pub(crate) fn register(
        &self,
        source: &mut impl mio::event::Source,
        urgent: bool,
    ) -> io::Result<Registered> {
        #[cfg(all(test, not(loom)))]
        if REFUSE_REGISTER.get() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let io = Arc::new(ScheduledIo::new());
        let (index, generation) = {
            let mut ios = crate::loom::lock(&*self.inner.ios);
            if ios.shut_down {
                return Err(scheduled_io::shutdown_error());
            }
            let index = match ios.free.pop() {
                Some(i) => i,
                None => {
                    ios.slots.push(IoSlot {
                        generation: 0,
                        io: None,
                    });
                    ios.slots.len() - 1
                }
            };
            if index > INDEX_MASK {
                ios.free.push(index);
                return Err(io::Error::other(format!(
                    "wq: more than {INDEX_MASK} I/O sources registered at once"
                )));
            }
            let slot = &mut ios.slots[index];
            slot.io = Some(io.clone());
            (index, slot.generation)
        };
        let token = Token(generation << INDEX_BITS | index);
        let interest = if urgent {
            Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY
        } else {
            Interest::READABLE | Interest::WRITABLE
        };
        if let Err(err) = self.inner.registry.register(source, token, interest) {
            self.release(index);
            return Err(register_error(err));
        }
        Ok(Registered { io, index })
    }

    /// Deregisters `source` (before its fd is closed) and frees its slot.
    pub(crate) fn deregister(
        &self,
        source: &mut impl mio::event::Source,
        registered: &Registered,
    ) -> io::Result<()> {
        let result = self.inner.registry.deregister(source);
        self.release(registered.index);
        result
    }

    fn release(&self, index: usize) {
        let old = {
            let mut ios = crate::loom::lock(&*self.inner.ios);
            let slot = &mut ios.slots[index];
            slot.generation = (slot.generation + 1) & GENERATION_MASK;
            let old = slot.io.take();
            ios.free.push(index);
            old
        };
        drop(old);
    }

    /// The tick of `deadline`, rounded up: a timer never fires early.
    pub(crate) fn tick_ceil(&self, deadline: Instant) -> u64 {
        ms_ceil(deadline.saturating_duration_since(self.inner.base))
    }

    /// Whether a deadline at tick `tick` has passed, is ahead, or is near
    /// enough now to read the clock ([`coarse`]).
    #[inline]
    pub(crate) fn coarse_check(&self, tick: u64) -> coarse::Coarse {
        match &self.inner.coarse {
            Some(c) => c.check(tick),
            None if tick == 0 => coarse::Coarse::Passed,
            None => coarse::Coarse::Near,
        }
    }

    /// The timer shard of the arming thread numbered `thread`
    /// (`time::sleep`).
    pub(crate) fn timer_shard(&self, thread: usize) -> usize {
        self.inner.timers.shard_of(thread)
    }

    /// How many timer shards the driver has.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn timer_shards(&self) -> usize {
        self.inner.timers.shards()
    }

    /// Runs `f` on timer shard `shard`, under its lock, then unparks the
    /// driver if `f` armed a timer earlier than the one it sleeps until.
    /// `f` gets the shard's timers and reports the tick it armed, if any.
    pub(crate) fn with_timers<R>(
        &self,
        shard: usize,
        f: impl FnOnce(&mut Timers) -> (R, Option<u64>),
    ) -> R {
        let (r, unpark) = self.inner.timers.with_shard(shard, f);
        if unpark {
            self.unpark();
        }
        r
    }

    /// Sources registered now (tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn registered(&self) -> usize {
        let ios = crate::loom::lock(&*self.inner.ios);
        ios.slots.iter().filter(|s| s.io.is_some()).count()
    }
}

#[cfg(all(test, not(loom)))]
thread_local! {
    /// Tests: this thread's registrations fail (`EEXIST`, as a descriptor
    /// registered already would).
    pub(crate) static REFUSE_REGISTER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A source's registration: its readiness and its slot.
#[derive(Debug)]
pub(crate) struct Registered {
    pub(crate) io: Arc<ScheduledIo>,
    index: usize,
}

/// An OS error with what wq adds to it (what it was doing, what to do):
/// `message` says it all, the OS error included; the OS error, with its
/// `raw_os_error`, is the returned error's `source()`.
pub(crate) fn with_hint(os: io::Error, message: String) -> io::Error {
    io::Error::new(os.kind(), Hinted { message, os })
}

#[derive(Debug)]
struct Hinted {
    message: String,
    os: io::Error,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.os)
    }
}

/// `epoll_ctl`'s error for a source it would not register, with what to do
/// where the user can act: ENOSPC is the per-user watch limit (it kept its
/// errno's words, "No space left on device", which point at a disk).
fn register_error(err: io::Error) -> io::Error {
    if err.raw_os_error() == Some(libc::ENOSPC) {
        let message = format!(
            "wq: could not register the socket with the I/O driver (epoll_ctl): {err}; the user's epoll watch limit is reached: raise /proc/sys/fs/epoll/max_user_watches"
        );
        return crate::driver::with_hint(err, message);
    }
    err
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::io::Write;

    /// A deadline's tick is its distance in milliseconds rounded up
    /// (never early), saturating: as the u128 division it replaces.
    #[test]
    fn ms_ceil_rounds_up_and_saturates() {
        let exact =
            |d: Duration| u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        for d in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_nanos(999_999),
            Duration::from_nanos(1_000_000),
            Duration::from_nanos(1_000_001),
            Duration::new(1, 0),
            Duration::new(1, 1),
            Duration::new(1, 999_999_999),
            Duration::new(u64::MAX / 1000, 999_000_000),
            Duration::new(u64::MAX / 1000, 999_999_999),
            Duration::new(u64::MAX / 1000 + 1, 0),
            Duration::MAX,
        ] {
            assert_eq!(ms_ceil(d), exact(d), "{d:?}");
        }
    }

    /// A wait for a timer, plus the most slack the kernel may add to it
    /// (`select_estimate_accuracy`: 0.5% of it in a niced process, at most
    /// 100 ms; 0.1% otherwise), ends by the deadline; short waits are
    /// whole. (A 60 s wait could end 300 ms late, niced.)
    #[test]
    fn a_wait_for_a_timer_leaves_room_for_the_kernels_slack() {
        let slack = |w: Duration| (w / 200).min(Duration::from_millis(100));
        for ms in [
            1,
            100,
            400,
            401,
            1_000,
            10_000,
            20_000,
            60_000,
            3_600_000,
            u32::MAX as u64,
        ] {
            let until = Duration::from_millis(ms);
            let wait = wait_for_timer(until);
            if until <= SLACK_FREE_WAIT {
                assert_eq!(wait, until);
                assert!(slack(wait) <= Duration::from_millis(2), "{until:?}");
            } else {
                assert!(wait + slack(wait) < until, "{until:?}: waits {wait:?}");
                // The rest, waited next, has a slack under a millisecond.
                assert!(slack(until - wait) <= Duration::from_millis(1), "{until:?}");
            }
        }
        assert_eq!(
            wait_for_timer(Duration::from_secs(60)),
            Duration::from_millis(59_800)
        );
    }

    #[test]
    fn a_full_epoll_watch_limit_says_which_limit() {
        let e = register_error(io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert!(e.to_string().contains("max_user_watches"), "{e}");
        // The OS's error kept, as the source (its errno was lost).
        let os = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .and_then(io::Error::raw_os_error);
        assert_eq!(os, Some(libc::ENOSPC), "{e:?}");
        let e = register_error(io::Error::from_raw_os_error(libc::EEXIST));
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST), "others unchanged");
    }

    #[test]
    fn a_stale_token_does_not_reach_the_slots_next_owner() {
        let mut driver = Driver::new().unwrap();
        let h = driver.handle().clone();
        let (mut a, mut a_peer) = mio::net::UnixStream::pair().unwrap();
        let ra = h.register(&mut a, false).unwrap();
        let index = ra.index;
        // Make `a` readable, but drop its registration before the turn;
        // a new source gets the same slot with the next generation.
        a_peer.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(10));
        h.deregister(&mut a, &ra).unwrap();
        let (mut b, _b_peer) = mio::net::UnixStream::pair().unwrap();
        let rb = h.register(&mut b, false).unwrap();
        assert_eq!(rb.index, index, "the slot is reused");
        driver.turn(Some(Duration::from_millis(10)));
        let waker = futures::task::noop_waker();
        let mut key = None;
        let r = rb.io.poll_ready(
            &mut std::task::Context::from_waker(&waker),
            scheduled_io::Direction::Read,
            &mut key,
        );
        assert!(r.is_pending(), "b was never readable");
        rb.io.release(&mut key);
        h.deregister(&mut b, &rb).unwrap();
        assert_eq!(h.registered(), 0);
    }

    #[test]
    fn unpark_interrupts_a_turn_from_another_thread() {
        let mut driver = Driver::new().unwrap();
        let h = driver.handle().clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            h.unpark();
        });
        let start = Instant::now();
        driver.turn(Some(Duration::from_secs(30)));
        assert!(start.elapsed() < Duration::from_secs(10));
        t.join().unwrap();
    }

    /// A waker that counts its wakes.
    struct Count(std::sync::atomic::AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Arms a timer `after` from now on `shard` of `h`; returns its key.
    fn arm(h: &Handle, shard: usize, after: Duration, waker: &Waker) -> usize {
        let tick = h.tick_ceil(Instant::now() + after);
        h.with_timers(shard, |t| {
            let (key, fired) = t.wheel.insert(tick, waker);
            assert!(!fired);
            (key, Some(tick))
        })
    }

    #[test]
    fn a_turn_sleeps_until_the_earliest_timer_of_any_shard_and_fires_each() {
        let mut driver = Driver::with_timer_shards(TimerShards::new(4)).unwrap();
        assert_eq!(driver.handle().inner.timers.shards(), 4);
        let h = driver.handle().clone();
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        // Before the arms: "never early" is from the earliest they could
        // have been made (a thread preempted between them and a later
        // clock read failed it).
        let start = Instant::now();
        arm(&h, 0, Duration::from_secs(60), &waker);
        arm(&h, 3, Duration::from_millis(30), &waker);
        arm(&h, 2, Duration::from_millis(60), &waker);
        while count.0.load(Ordering::SeqCst) < 2 {
            driver.turn(None);
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the turn slept past shard 3's and shard 2's timers"
            );
        }
        assert!(start.elapsed() >= Duration::from_millis(60), "never early");
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "the 60 s timer waits");
    }

    #[test]
    fn an_earlier_timer_armed_on_another_shard_unparks_the_driver() {
        let mut driver = Driver::with_timer_shards(TimerShards::new(2)).unwrap();
        let h = driver.handle().clone();
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        arm(&h, 0, Duration::from_secs(60), &waker);
        let h2 = h.clone();
        let w2 = waker.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            arm(&h2, 1, Duration::from_millis(10), &w2);
        });
        let start = Instant::now();
        while count.0.load(Ordering::SeqCst) == 0 {
            driver.turn(None);
            assert!(start.elapsed() < Duration::from_secs(30), "not unparked");
        }
        t.join().unwrap();
    }

    #[test]
    fn a_cancelled_timer_costs_at_most_one_early_wake() {
        let mut driver = Driver::with_timer_shards(TimerShards::new(2)).unwrap();
        let h = driver.handle().clone();
        let waker = futures::task::noop_waker();
        let key = arm(&h, 1, Duration::from_millis(20), &waker);
        h.with_timers(1, |t| (t.wheel.remove(key), None));
        // The shard's bound may stay stale (20 ms); a turn past it sets it
        // from the wheel: nothing left to sleep for.
        let cleared = (0..50).any(|_| {
            driver.turn(Some(Duration::from_millis(100)));
            let next = h.inner.timers.park();
            h.inner.timers.unpark();
            next == u64::MAX
        });
        assert!(cleared, "the stale bound kept waking the driver");
    }

    #[test]
    fn ticks_round_deadlines_up_and_now_down() {
        let driver = Driver::new().unwrap();
        let h = driver.handle();
        let base = h.inner.base;
        assert_eq!(h.tick_ceil(base + Duration::from_micros(1)), 1);
        assert_eq!(h.tick_ceil(base + Duration::from_millis(5)), 5);
        assert_eq!(h.inner.tick_floor(base + Duration::from_micros(5999)), 5);
        assert_eq!(
            h.tick_ceil(base - Duration::from_millis(1).min(base.elapsed())),
            0
        );
    }
}
