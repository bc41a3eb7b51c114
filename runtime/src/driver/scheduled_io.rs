//! The readiness of one registered I/O source, and the tasks waiting on it.
//!
//! # The readiness word
//! One `AtomicUsize` per source (it fits 32 bits, so 32-bit targets work):
//!
//! ```text
//! bit  0      READABLE      set by an event; cleared by a reader that got WouldBlock
//! bit  1      WRITABLE      set by an event; cleared by a writer that got WouldBlock
//! bit  2      READ_CLOSED   set by an event (peer shut its write side: EOF); sticky
//! bit  3      WRITE_CLOSED  set by an event (we can no longer write); sticky
//! bit  4      SHUTDOWN      the driver is gone: every wait fails; sticky
//! bit  5      URGENT        set by an event (TCP urgent data pending, EPOLLPRI);
//!                           cleared with READABLE by a reader that got WouldBlock
//! bits 8-19   read tick     +1 (wrapping) for each event touching the read side
//! bits 20-31  write tick    +1 (wrapping) for each event touching the write side
//! ```
//!
//! An error event (`EPOLLERR`) sets READABLE and WRITABLE: the next read or
//! write syscall reports the error itself.
//!
//! # The clear-readiness race, and the tick
//! mio is edge-triggered: an event is reported once, when the state
//! changes. A task that sees READABLE, reads, and gets `WouldBlock` must
//! clear READABLE so that it waits for the next event; but an event may
//! arrive between its read and its clear, and clearing it then would lose
//! it for good (the kernel will not report the same edge twice): the task
//! would wait forever on a socket with data. So the task clears only the
//! readiness it **observed**: [`ScheduledIo::poll_ready`] returns the
//! direction's tick with the readiness, and [`ScheduledIo::clear`] is a CAS
//! that does nothing if that direction's tick moved since. There is one
//! tick per direction so that a write event does not make a reader's clear
//! fail (that would only cost a spurious retry, but a busy writer would make
//! every read retry once).
//!
//! A task may also see readiness that no longer holds (a spurious wakeup,
//! or data another task already took): its syscall gets `WouldBlock` and it
//! clears and waits again. Readiness is a hint; the syscall is the truth.
//!
//! # A closed bit that no longer holds
//! Closed bits are sticky: EOF and a hung-up socket stay so, and a clear
//! after a short transfer keeps them. But mio also reports an error event
//! as "write closed" (`EPOLLERR` with `EPOLLOUT`: a connected UDP socket
//! told by ICMP that its peer's port is closed), and the error is consumed
//! by the next syscall; the socket goes on working. A stream's closed
//! direction never answers `WouldBlock` (EOF reads 0, a hung-up write
//! fails; a datagram socket shut for reading does, and its receives
//! answer for it: `registration::Datagram`, "Shut for reading"), so a
//! `WouldBlock` clears the direction's closed bit with its readiness
//! ([`ScheduledIo::clear_blocked`], at the observed tick like any clear).
//! Kept, the bit would make the direction ready forever, and an operation
//! that keeps getting `WouldBlock` (a full send buffer) would loop in its
//! poll instead of waiting.
//!
//! # Urgent data
//! A TCP read stops at the urgent mark (a peer's `MSG_OOB` byte) with
//! the data behind it queued and no new edge to come for it, so a short
//! read does not mean a drained buffer while urgent data is pending
//! (`registration`, the short transfer's clear). TCP streams are
//! registered for `EPOLLPRI` too, which sets URGENT, a read-side bit (it
//! moves the read tick and readies readers, as READABLE does); a short
//! read that observed it keeps the readiness, and only a `WouldBlock`
//! clears the two. A short read at the mark made before the driver took
//! the event is saved by the tick: the event moved it, so the read's
//! clear did nothing (or came first, and the event sets both again). A
//! read at the mark may also say `WouldBlock` with data queued, when a
//! signal came during it: a `WouldBlock` that observed URGENT asks the
//! socket whether it stands at the mark with the urgent byte there
//! (`registration`, `PollIo::stopped_at_urgent_byte`), and keeps the
//! readiness if so, the task yielding to read again.
//!
//! # Waiters
//! Tasks waiting for a direction sit in `waiters` (a slab under a mutex),
//! each under a key owned by whoever waits: a stream keeps one key per
//! direction for its `poll_read` / `poll_write`, an `async fn` operation
//! (`accept`, `recv_from`, `readable` ...) holds one for as long as its
//! future lives and releases it on drop (a `try_*` operation, which never
//! waits, holds none: [`ScheduledIo::ready_now`]), and a `&self` poll method (`poll_accept`,
//! `poll_recv_from` ...) keeps one per object and direction in a
//! `registration::SharedKey`, its waker the last poller's. Any number of
//! tasks may wait on one direction.
//!
//! No lost wakeup: the driver updates the word *then* locks `waiters` and
//! takes the wakers of the directions the event touched; a task locks
//! `waiters`, stores its waker, *then* re-loads the word. The lock orders
//! the two: either the task's waker is stored before the driver takes the
//! wakers (and is woken), or the driver's update happened before the task's
//! re-load (and the task sees it). `loom_clear_never_loses_an_edge` checks
//! this together with the tick; with the tick check switched off it finds
//! the lost edge.
//!
//! Wakers are woken outside the `waiters` lock (the driver collects them),
//! and woken through the task's own `Waker`: wq's schedule path (the home
//! pool's queue and a kick) is the only wake path.
//!
//! Lock order: the driver's I/O table lock, then a `waiters` lock. (A
//! `SharedKey` is an atomic: its slot is swapped out before a poll and
//! back after, `PollIo::poll_io_shared`.) No other lock is taken under
//! `waiters`.

use std::io;
use std::task::{Context, Poll, Waker};

use slab::Slab;

use crate::loom::sync::Mutex;
use crate::loom::sync::atomic::{AtomicUsize, Ordering};

/// Readiness bits (see the module docs).
pub(crate) const READABLE: usize = 1 << 0;
pub(crate) const WRITABLE: usize = 1 << 1;
pub(crate) const READ_CLOSED: usize = 1 << 2;
pub(crate) const WRITE_CLOSED: usize = 1 << 3;
const SHUTDOWN: usize = 1 << 4;
pub(crate) const URGENT: usize = 1 << 5;
const READ_TICK_SHIFT: u32 = 8;
const WRITE_TICK_SHIFT: u32 = 20;
/// 12 bits a tick: a clear is fooled only if exactly a multiple of 4,096
/// events touch its direction between its observation and its CAS (with 8
/// bits, 256 turns of a busy driver while the clearing thread was
/// preempted erased a new edge).
const TICK_MASK: usize = 0xfff;

/// One side of a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read,
    Write,
}

impl Direction {
    /// The readiness bits that let an operation of this direction proceed.
    fn mask(self) -> usize {
        match self {
            Direction::Read => READABLE | READ_CLOSED | URGENT,
            Direction::Write => WRITABLE | WRITE_CLOSED,
        }
    }

    /// The bits a clear removes.
    fn clearable(self) -> usize {
        match self {
            Direction::Read => READABLE | URGENT,
            Direction::Write => WRITABLE,
        }
    }

    /// The direction's closed bit.
    fn closed(self) -> usize {
        match self {
            Direction::Read => READ_CLOSED,
            Direction::Write => WRITE_CLOSED,
        }
    }

    fn tick_shift(self) -> u32 {
        match self {
            Direction::Read => READ_TICK_SHIFT,
            Direction::Write => WRITE_TICK_SHIFT,
        }
    }

    fn tick(self, word: usize) -> u16 {
        ((word >> self.tick_shift()) & TICK_MASK) as u16
    }
}

/// Readiness observed for one direction, with the tick it was observed at.
#[derive(Clone, Copy, Debug)]
#[must_use = "pass it to ScheduledIo::clear after a WouldBlock"]
pub(crate) struct ReadyEvent {
    pub(crate) ready: usize,
    pub(crate) tick: u16,
    pub(crate) dir: Direction,
}

impl ReadyEvent {
    /// The peer closed this direction (read: EOF; write: broken pipe).
    pub(crate) fn is_closed(&self) -> bool {
        self.ready & (READ_CLOSED | WRITE_CLOSED) != 0
    }

    /// TCP urgent data was pending: a short read may have stopped at its
    /// mark (module docs, "Urgent data").
    pub(crate) fn is_urgent(&self) -> bool {
        self.ready & URGENT != 0
    }
}

struct Waiter {
    dir: Direction,
    waker: Option<Waker>,
}

/// See the module docs.
pub(crate) struct ScheduledIo {
    readiness: AtomicUsize,
    waiters: Mutex<Slab<Waiter>>,
}

impl std::fmt::Debug for ScheduledIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduledIo")
            .field(
                "readiness",
                &format_args!("{:#x}", self.readiness.load(Ordering::Relaxed)),
            )
            .finish_non_exhaustive()
    }
}

pub(crate) fn shutdown_error() -> io::Error {
    io::Error::other(
        "the wq runtime this I/O object was created on has shut down: create sockets and timers on a runtime that outlives them",
    )
}

impl ScheduledIo {
    pub(crate) fn new() -> ScheduledIo {
        ScheduledIo {
            readiness: AtomicUsize::new(0),
            waiters: Mutex::new(Slab::new()),
        }
    }

    /// Driver side: an event brought `ready` (READABLE, WRITABLE and the
    /// closed bits). Sets the bits, moves the tick of each direction
    /// touched, and appends the wakers of those directions' waiters to
    /// `wake` (to be woken by the caller, outside every lock).
    pub(crate) fn set_ready(&self, ready: usize, wake: &mut Vec<Waker>) {
        let touches = |dir: Direction| ready & dir.mask() != 0;
        let mut cur = self.readiness.load(Ordering::Relaxed);
        loop {
            let mut new = cur | ready;
            for dir in [Direction::Read, Direction::Write] {
                if touches(dir) {
                    let tick = (usize::from(dir.tick(cur)) + 1) & TICK_MASK;
                    new = (new & !(TICK_MASK << dir.tick_shift())) | (tick << dir.tick_shift());
                }
            }
            // Release: a task that Acquire-loads this word sees what the
            // driver did before the event (in the loom model, the data);
            // the CAS makes a racing `clear` see the new tick or lose.
            match self.readiness.compare_exchange_weak(
                cur,
                new,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        self.take_wakers(wake, touches);
    }

    /// The driver is gone: fail every wait, now and later.
    pub(crate) fn shutdown(&self, wake: &mut Vec<Waker>) {
        // Release: pairs with the Acquire loads in `poll_ready`.
        self.readiness.fetch_or(SHUTDOWN, Ordering::Release);
        self.take_wakers(wake, |_| true);
    }

    fn take_wakers(&self, wake: &mut Vec<Waker>, dir: impl Fn(Direction) -> bool) {
        let mut waiters = crate::loom::lock(&self.waiters);
        for (_, w) in waiters.iter_mut() {
            if dir(w.dir)
                && let Some(waker) = w.waker.take()
            {
                wake.push(waker);
            }
        }
    }

    fn event(word: usize, dir: Direction) -> Option<io::Result<ReadyEvent>> {
        if word & SHUTDOWN != 0 {
            return Some(Err(shutdown_error()));
        }
        let ready = word & dir.mask();
        (ready != 0).then(|| {
            Ok(ReadyEvent {
                ready,
                tick: dir.tick(word),
                dir,
            })
        })
    }

    /// Task side: the readiness of `dir`, or `Pending` with the task's
    /// waker stored under `key` (allocated on first use; release it with
    /// [`ScheduledIo::release`]).
    pub(crate) fn poll_ready(
        &self,
        cx: &mut Context<'_>,
        dir: Direction,
        key: &mut Option<usize>,
    ) -> Poll<io::Result<ReadyEvent>> {
        // The task's operation budget per poll (`crate::coop`).
        std::task::ready!(crate::coop::poll_proceed(cx));
        // Acquire: pairs with the driver's Release update (see set_ready).
        if let Some(ev) = Self::event(self.readiness.load(Ordering::Acquire), dir) {
            crate::coop::spend();
            return Poll::Ready(ev);
        }
        let mut waiters = crate::loom::lock(&self.waiters);
        // A replaced waker is dropped after the lock (module docs).
        let mut replaced = None;
        match key.and_then(|k| waiters.get_mut(k)) {
            // A key waits in one direction only (a stream's halves and each
            // operation's future keep their own).
            Some(w) => {
                debug_assert_eq!(w.dir, dir, "one key polled in two directions");
                match &mut w.waker {
                    Some(old) if old.will_wake(cx.waker()) => {}
                    slot => replaced = slot.replace(cx.waker().clone()),
                }
            }
            None => {
                *key = Some(waiters.insert(Waiter {
                    dir,
                    waker: Some(cx.waker().clone()),
                }));
            }
        }
        // Acquire, under the lock: an update the driver made before it took
        // the wakers is visible here (module docs: no lost wakeup).
        let ready = Self::event(self.readiness.load(Ordering::Acquire), dir);
        drop(waiters);
        drop(replaced);
        match ready {
            Some(ev) => {
                crate::coop::spend();
                Poll::Ready(ev)
            }
            None => Poll::Pending,
        }
    }

    /// Task side: the readiness of `dir` now, without waiting (`None`: not
    /// ready).
    pub(crate) fn ready_now(&self, dir: Direction) -> Option<io::Result<ReadyEvent>> {
        // Acquire: pairs with the driver's Release update (see set_ready).
        Self::event(self.readiness.load(Ordering::Acquire), dir)
    }

    /// Task side: a short transfer after observing `event` (the buffer is
    /// drained or full): clear its direction's readiness, unless an event
    /// came since (the tick moved), whose readiness must be kept. A closed
    /// bit stays.
    pub(crate) fn clear(&self, event: ReadyEvent) {
        self.clear_at(event, true, false);
    }

    /// Task side: the operation got `WouldBlock` after observing `event`:
    /// as [`ScheduledIo::clear`], and the direction's closed bit goes too
    /// (module docs, "A closed bit that no longer holds").
    pub(crate) fn clear_blocked(&self, event: ReadyEvent) {
        self.clear_at(event, true, true);
    }

    /// [`ScheduledIo::clear`] with the tick check switched off: the bug the
    /// tick prevents, for the loom model to find.
    #[cfg(all(test, loom))]
    fn clear_ignoring_the_tick(&self, event: ReadyEvent) {
        self.clear_at(event, false, false);
    }

    fn clear_at(&self, event: ReadyEvent, check_tick: bool, closed_too: bool) {
        let dir = event.dir;
        let mut cur = self.readiness.load(Ordering::Relaxed);
        loop {
            if check_tick && dir.tick(cur) != event.tick {
                return;
            }
            // Only the readiness observed; the closed bit only after a
            // `WouldBlock`.
            let bits = if closed_too {
                dir.clearable() | dir.closed()
            } else {
                dir.clearable()
            };
            let new = cur & !(bits & event.ready);
            if new == cur {
                return;
            }
            // Relaxed: a clear publishes nothing; the CAS's atomicity alone
            // decides whether a racing event's tick is seen.
            match self.readiness.compare_exchange_weak(
                cur,
                new,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Frees the waiter slot `key` (a future or stream is done with it).
    pub(crate) fn release(&self, key: &mut Option<usize>) {
        if let Some(k) = key.take() {
            let w = crate::loom::lock(&self.waiters).try_remove(k);
            drop(w); // the waker, outside the lock
        }
    }

    /// Waiters registered now.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn waiters(&self) -> usize {
        crate::loom::lock(&self.waiters).len()
    }
}

#[cfg(all(test, not(loom)))]
mod unit_tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize as StdAtomic;
    use std::task::Wake;

    struct Count(StdAtomic);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn ready(io: &ScheduledIo, dir: Direction) -> Option<ReadyEvent> {
        let waker = futures::task::noop_waker();
        let mut key = None;
        let r = match io.poll_ready(&mut Context::from_waker(&waker), dir, &mut key) {
            Poll::Ready(ev) => Some(ev.unwrap()),
            Poll::Pending => None,
        };
        io.release(&mut key);
        r
    }

    #[test]
    fn a_clear_at_a_stale_tick_keeps_the_new_readiness() {
        let io = ScheduledIo::new();
        let mut wake = Vec::new();
        io.set_ready(READABLE, &mut wake);
        let seen = ready(&io, Direction::Read).expect("readable");
        // An event arrives between the WouldBlock and the clear.
        io.set_ready(READABLE, &mut wake);
        io.clear(seen);
        let again = ready(&io, Direction::Read).expect("the new edge is kept");
        io.clear(again);
        assert!(ready(&io, Direction::Read).is_none(), "cleared at its tick");
    }

    #[test]
    fn a_write_event_does_not_spoil_a_read_clear() {
        let io = ScheduledIo::new();
        let mut wake = Vec::new();
        io.set_ready(READABLE, &mut wake);
        let seen = ready(&io, Direction::Read).unwrap();
        io.set_ready(WRITABLE, &mut wake);
        io.clear(seen);
        assert!(ready(&io, Direction::Read).is_none());
        assert!(ready(&io, Direction::Write).is_some());
    }

    #[test]
    fn a_would_block_clears_a_closed_bit_that_no_longer_holds() {
        let io = ScheduledIo::new();
        let mut wake = Vec::new();
        // An error event: mio's "write closed" with EPOLLOUT.
        io.set_ready(WRITABLE | WRITE_CLOSED, &mut wake);
        let seen = ready(&io, Direction::Write).unwrap();
        assert!(seen.is_closed());
        io.clear(seen);
        assert!(
            ready(&io, Direction::Write).is_some(),
            "a short write keeps it"
        );
        let seen = ready(&io, Direction::Write).unwrap();
        io.clear_blocked(seen);
        assert!(
            ready(&io, Direction::Write).is_none(),
            "after WouldBlock the direction waits for its next event"
        );
        // At a stale tick, a newer event's closed bit stays.
        io.set_ready(WRITABLE | WRITE_CLOSED, &mut wake);
        let seen = ready(&io, Direction::Write).unwrap();
        io.set_ready(WRITE_CLOSED, &mut wake);
        io.clear_blocked(seen);
        assert!(ready(&io, Direction::Write).unwrap().is_closed());
    }

    #[test]
    fn urgent_data_is_read_side_readiness_that_only_a_would_block_clears() {
        let io = ScheduledIo::new();
        let mut wake = Vec::new();
        io.set_ready(READABLE, &mut wake);
        let plain = ready(&io, Direction::Read).unwrap();
        assert!(!plain.is_urgent());
        // Urgent data arrives after that observation: the tick moved, so a
        // short read's clear at the old tick keeps it.
        io.set_ready(READABLE | URGENT, &mut wake);
        io.clear(plain);
        let urgent = ready(&io, Direction::Read).expect("kept");
        assert!(urgent.is_urgent());
        assert!(
            ready(&io, Direction::Write).is_none(),
            "a read-side bit only"
        );
        // The reader keeps reading until WouldBlock, which clears both.
        io.clear_blocked(urgent);
        assert!(ready(&io, Direction::Read).is_none());
        // An urgent event alone readies a reader too.
        io.set_ready(URGENT, &mut wake);
        assert!(ready(&io, Direction::Read).unwrap().is_urgent());
    }

    #[test]
    fn closed_bits_are_sticky_and_shutdown_fails_waits() {
        let io = ScheduledIo::new();
        let mut wake = Vec::new();
        io.set_ready(READABLE | READ_CLOSED, &mut wake);
        let seen = ready(&io, Direction::Read).unwrap();
        assert!(seen.is_closed());
        io.clear(seen);
        assert!(
            ready(&io, Direction::Read).unwrap().is_closed(),
            "EOF stays"
        );
        io.shutdown(&mut wake);
        let waker = futures::task::noop_waker();
        let mut key = None;
        let r = io.poll_ready(&mut Context::from_waker(&waker), Direction::Write, &mut key);
        assert!(matches!(r, Poll::Ready(Err(_))));
    }

    #[test]
    fn events_wake_the_waiters_of_their_direction_only() {
        let io = ScheduledIo::new();
        let (r, w) = (
            Arc::new(Count(StdAtomic::new(0))),
            Arc::new(Count(StdAtomic::new(0))),
        );
        let (rw, ww) = (Waker::from(r.clone()), Waker::from(w.clone()));
        let (mut rk, mut wk) = (None, None);
        assert!(
            io.poll_ready(&mut Context::from_waker(&rw), Direction::Read, &mut rk)
                .is_pending()
        );
        assert!(
            io.poll_ready(&mut Context::from_waker(&ww), Direction::Write, &mut wk)
                .is_pending()
        );
        // Polling again keeps one slot per key.
        assert!(
            io.poll_ready(&mut Context::from_waker(&rw), Direction::Read, &mut rk)
                .is_pending()
        );
        assert_eq!(io.waiters(), 2);
        let mut wake = Vec::new();
        io.set_ready(WRITABLE, &mut wake);
        wake.drain(..).for_each(Waker::wake);
        assert_eq!(
            (r.0.load(Ordering::Relaxed), w.0.load(Ordering::Relaxed)),
            (0, 1)
        );
        io.set_ready(READ_CLOSED, &mut wake);
        wake.drain(..).for_each(Waker::wake);
        assert_eq!(r.0.load(Ordering::Relaxed), 1);
        io.release(&mut rk);
        io.release(&mut wk);
        assert_eq!(io.waiters(), 0);
    }

    #[test]
    fn ticks_wrap() {
        let io = ScheduledIo::new();
        let mut wake = Vec::new();
        for _ in 0..5000 {
            io.set_ready(READABLE, &mut wake);
        }
        let seen = ready(&io, Direction::Read).unwrap();
        assert_eq!(seen.tick, (5000 % 4096) as u16);
        // The read tick's wrap left the write tick alone.
        assert_eq!(
            Direction::Write.tick(io.readiness.load(Ordering::Relaxed)),
            0
        );
        io.clear(seen);
        assert!(ready(&io, Direction::Read).is_none());
    }

    /// 256 events between a reader's observation and its clear (the
    /// driver turned 256 times while the reader was preempted): the clear
    /// must see that the tick moved.
    #[test]
    fn a_clear_after_256_new_events_keeps_the_readiness() {
        let io = ScheduledIo::new();
        let mut wake = Vec::new();
        io.set_ready(READABLE, &mut wake);
        let seen = ready(&io, Direction::Read).unwrap();
        for _ in 0..256 {
            io.set_ready(READABLE, &mut wake);
        }
        io.clear(seen);
        assert!(
            ready(&io, Direction::Read).is_some(),
            "a new edge was erased"
        );
    }
}

#[cfg(all(test, loom))]
mod tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicBool;

    struct Flag(AtomicBool);
    impl std::task::Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }

    /// A socket whose previous data was consumed but whose READABLE is
    /// still set (a spurious readiness); the driver brings new data and its
    /// edge while the task reads, gets WouldBlock, and clears. The task must
    /// either consume the new data or be woken for it.
    fn model(check_tick: bool) {
        loom::model(move || {
            let io = Arc::new(ScheduledIo::new());
            let data = Arc::new(AtomicBool::new(false));
            let mut sink = Vec::new();
            io.set_ready(READABLE, &mut sink); // the old, consumed edge
            let (io2, data2) = (io.clone(), data.clone());
            let driver = loom::thread::spawn(move || {
                data2.store(true, Ordering::Release); // the kernel's buffer
                let mut wake = Vec::new();
                io2.set_ready(READABLE, &mut wake);
                wake.into_iter().for_each(Waker::wake);
            });
            let flag = std::sync::Arc::new(Flag(AtomicBool::new(false)));
            let waker = Waker::from(flag.clone());
            let mut cx = Context::from_waker(&waker);
            let mut key = None;
            let mut consumed = false;
            // The task: poll readiness, "read", clear on WouldBlock, until
            // it reads the data or parks (Pending).
            for _ in 0..3 {
                match io.poll_ready(&mut cx, Direction::Read, &mut key) {
                    Poll::Pending => break,
                    Poll::Ready(ev) => {
                        let ev = ev.unwrap();
                        if data.swap(false, Ordering::Acquire) {
                            consumed = true;
                            break;
                        }
                        if check_tick {
                            io.clear(ev);
                        } else {
                            io.clear_ignoring_the_tick(ev);
                        }
                    }
                }
            }
            driver.join().unwrap();
            if !consumed {
                assert!(
                    flag.0.load(Ordering::Acquire) || !data.load(Ordering::Acquire),
                    "lost edge: data is buffered, the task is parked, and nobody will wake it"
                );
                // Woken: a re-poll finds the data ready.
                if data.load(Ordering::Acquire) {
                    assert!(matches!(
                        io.poll_ready(&mut cx, Direction::Read, &mut key),
                        Poll::Ready(Ok(_))
                    ));
                }
            }
            io.release(&mut key);
        });
    }

    #[test]
    fn loom_clear_never_loses_an_edge() {
        model(true);
    }

    /// Without the tick, the clear erases the new edge: the model must find
    /// it (so the check above can fail).
    #[test]
    #[should_panic(expected = "lost edge")]
    fn loom_clear_without_the_tick_loses_an_edge() {
        model(false);
    }
}
