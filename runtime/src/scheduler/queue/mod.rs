//! Named workqueues: the kernel's `workqueue_struct` and its `pwq`s, over
//! the scheduler's shared pools.
//!
//! A queue is a policy object; it owns no threads. Its items run in the
//! pools of its scope's pods, shared with every queue of the same pool
//! attributes (strictness, priority), as the kernel shares `worker_pool`s.
//! The runtime's default queue (`wq::spawn`) is not a `Queue`: its tasks
//! carry no queue link and pay for none of this.
//!
//! # Active and inactive items (`max_active`)
//! An item (a task) is **active** from the moment it is *released* to a
//! pool until its end (its future gone -- finished, panicked or
//! cancelled -- and its end run: `task::TaskEnd`, the deferred end on a
//! worker): while it runs, and while it waits for a wake. At most `max_active` items are
//! active; the others wait on the queue's **inactive list** (a FIFO of
//! created, never-queued tasks with the CPU they were submitted on) and
//! are released in order as active ones finish; one whose handle aborts
//! it meanwhile is taken out of the list and dropped by a worker at once,
//! holding no slot ([`inactive`]). An ordered queue is
//! `max_active = 1` with the same FIFO: its items never overlap and start
//! in submission order.
//!
//! # Stripes
//! What every item writes at its spawn and its end -- its slot, and its
//! in-flight count, which is also its task's reference to the queue -- is
//! counted per **stripe**, the spawning thread's (`thread ordinal % 16`;
//! the next one with room if that one counts ~66 million items of a color),
//! each stripe on a cache line of its own, and the item's end writes its
//! spawn's stripe again. Items spawned and run on one CPU (the `cpu` and
//! `smt` scopes, a submitter feeding its own pod) then write no line
//! another CPU writes; one global count per queue was a line that moved
//! between CPUs with every item (`docs/benchmarks.md`, section 3). A
//! stripe's counts share its one line (`task::StripeLine`): an item's spawn
//! and its end, on two CPUs, move one line between them. Each count's
//! protocol is in its module: [`gate`] (slots leased to stripes in
//! batches), [`flight`] (one word per stripe: a sum a flush can trust, and
//! the references collected into one count when the last handle goes).
//!
//! A named spawn adds two read-modify-writes to `wq::spawn`'s (a slot, a
//! count in flight); its finish three (a slot back and its fence, a count
//! down), and one more fence and a sum of the stripes while a flush waits.
//!
//! # Spawn, finish, pump
//! - **Spawn**: if the inactive list is empty and a slot can be taken,
//!   release the item now (the fast path: no lock). Else push it on the
//!   inactive list, fence (`SeqCst`), and **pump**.
//! - **Finish** (of a released item): give its slot back (`SeqCst`), fence,
//!   and pump.
//! - **Pump**: while the inactive list is not empty and a slot can be
//!   taken, pop the oldest item and release it; a slot taken when the list
//!   turned out empty is given back, and the list re-checked.
//!
//! No item is stranded on the inactive list while a slot is free: a
//! spawner pushes, then tries for a slot; a thread that frees or moves a
//! slot puts it down, then looks at the list. Of the two fences one comes
//! first, so either the spawner's try sees the free slot or the other's
//! look sees the item (the model
//! `loom_an_item_is_never_stranded_on_the_inactive_list` checks it, and
//! fails without the fences).
//!
//! # Flush colors (`flush`, `drain`)
//! Every item is counted in flight, from its spawn to its finish, in the
//! queue's current **color** (0 or 1), on its stripe. A flush (flushes are
//! served one at a time, in order, by tickets; one dropped before its turn
//! gives the turn up, one dropped during it passes it on) flips the color,
//! then waits until
//! the old color's stripes sum to zero: every item spawned before the
//! flush began was counted in the old color (or, if it raced the flip,
//! possibly the new one, and waiting for it is not needed). An item's
//! finish decrements the counter its spawn incremented (the task keeps its
//! color and stripe), so a stripe never reads below its items in flight.
//! A finisher's decrement returns the stripe's word with the flusher's flag
//! in it; one that sees the flag fences, sums, and, if the color is empty,
//! takes the served flush on itself (below); the flusher sets its flags,
//! fences, then reads
//! ([`flight`]; the model `loom_a_flush_racing_the_last_finishes_is_woken`
//! checks it, and fails without the fences). Two colors suffice because a
//! flush, once it has its turn, first waits for the *other* color to empty,
//! then flips, then waits for the color it flipped away from. The other
//! color can still hold items spawned before the flush: those of a flush
//! dropped while it waited (it flipped, then gave up), and an item whose
//! spawn read the color just before the last flip and counted itself after
//! that flush's read. Nothing new is counted there (spawns that begin now
//! read the current color), so the wait ends. Without it, such an item is
//! missed by every later flush
//! (`a_flush_after_a_dropped_one_still_waits_for_earlier_items`).
//!
//! The served flush's progress (`Phase`: begun, flipped) is kept with the
//! turn, under the `flush` lock, not in its future, and whoever can move
//! it does (`Queue::drive`): a flush's call and its polls, a flush given
//! up during its turn (after passing the turn on), and a finisher that
//! empties a flagged color (after its decrement, under the lock); each
//! takes the served flush as far as it goes and, as each one is done,
//! passes the turn on and takes the next one on, waking only the flushes
//! it finished: the kernel's first flusher works for the others alike. A
//! flush future given up on by a timeout but kept, no longer polled, held
//! the turn until dropped, and every later flush and drain waited for ever
//! (`a_flush_held_but_not_polled_does_not_hold_up_later_ones`); then every
//! waiting flush was woken at every pass and every emptied color, to take
//! the turn on, which made N flushes in line O(N^2) wakes and polls
//! (10,000 at once took 1.5 s; `wq-bench flushes`, `docs/benchmarks.md`
//! section 3). Now each is woken once, when it is done. A flush reads a
//! color only under the lock, after flagging it, and a finisher that saw
//! the flag and a zero sum reads it again under the lock: one of the two
//! sees the color empty (the fences' handshake, [`flight`]). The price: a
//! finisher may carry the whole line, under the lock, on its worker (a
//! few atomic operations per stripe for each flush it finishes), where
//! each flush's own poll paid it before.
//! `drain` flushes until nothing is in flight, refusing work from outside
//! the queue meanwhile (a task of the queue may still queue more, as the
//! kernel allows chained work). "Nothing in flight" is a sum of the
//! stripes read one by one, which an item chained onto a stripe already
//! read by an item that then finished on a stripe read after can escape:
//! a spawn counted while a drain is on also bumps `chained`, and the drain
//! ends only on an empty sum between two equal reads of it
//! (`flight::Drains`; `loom_a_drain_sees_an_item_chained_across_its_sum`,
//! with a negative).
//!
//! # Lifetime
//! The task of an item holds its queue until its end, by its
//! count in flight (`task::QueueRef`: the tasks together hold one count of
//! the queue's `Arc`, the **tasks' share**), and the [`QueueHandle`] every
//! `Workqueue` of the queue shares lets it go when the last of them is
//! dropped: the queue is freed once both are gone ([`flight`], "Steps").
//!
//! # Changing a queue while it runs
//! `set_scope`, `set_strict` and `set_max_active` take effect for items
//! not yet released (those on the inactive list, and those spawned later);
//! released items finish in the pool they were given. A smaller
//! `max_active` turns the gate global for good (one count, as before
//! stripes): slots already leased to stripes could not be held to it.

mod flight;
mod gate;
mod inactive;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};

use crossbeam_utils::CachePadded;

use super::{Scheduler, placement};
use crate::Scope;
use crate::clock;
use crate::loom::lock;
use crate::pool::{Pool, PoolAttrs, current};
use crate::task::in_flight::{Finished, LastStep};
use crate::task::wake_caught;
use crate::task::{self, JoinHandle, QueueLink, Runnable, TasksShare};
use flight::{Drains, Flight};
use gate::{Fifo, Gate};
use inactive::{InactiveList, Waiting};

/// The kernel's `WQ_MAX_ACTIVE`.
pub(crate) const MAX_ACTIVE: usize = 2048;
/// The kernel's `WQ_DFL_ACTIVE`.
pub(crate) const DEFAULT_MAX_ACTIVE: usize = 1024;

/// An item of a workqueue waiting on its inactive list, as the list sees
/// it: its task and the CPU it was submitted on.
impl Waiting for (Runnable, Option<usize>) {
    fn take(&self) -> bool {
        task::take_waiting(self.0.metadata())
    }
    fn is(&self, id: *const ()) -> bool {
        std::ptr::eq(task::waiting_id(self.0.metadata()), id)
    }
}

/// Stripes of a queue's per-item counts (slots, in-flight counts, task
/// references) and of its statistics: a thread counts on stripe
/// `thread ordinal % STRIPES`.
const STRIPES: usize = 16;

/// The calling thread's stripe.
#[inline]
fn this_stripe() -> usize {
    current::thread_ordinal() % STRIPES
}

/// The stripe a task of a queue was spawned on.
fn stripe_of(runnable: &Runnable) -> usize {
    usize::from(runnable.metadata().stripe())
}

/// A queue's statistics, striped by thread ordinal: a thread adds to its
/// own stripe, so the hot path writes no line other threads write (but
/// those of threads of its stripe); readers sum. All of a stripe's
/// counters share its one line: a worker that starts, times and finishes
/// an item writes one line, not three, and a queue carries 16 lines of
/// statistics, not 96 (12 KiB of them before).
#[derive(Default)]
struct Stats([CachePadded<StatLine>; STRIPES]);

#[derive(Default)]
struct StatLine {
    started: AtomicU64,
    completed: AtomicU64,
    cpu_time_ns: AtomicU64,
    hogs: AtomicU64,
    cm_wakeups: AtomicU64,
    repatriated: AtomicU64,
}

impl Stats {
    /// This thread's stripe.
    fn mine(&self) -> &StatLine {
        &self.0[this_stripe()]
    }
    /// The sum of the counter `field` picks over the stripes.
    fn sum(&self, field: impl Fn(&StatLine) -> &AtomicU64) -> u64 {
        self.sum_with(field, Ordering::Relaxed)
    }

    /// [`Stats::sum`], each load of `order`.
    fn sum_with(&self, field: impl Fn(&StatLine) -> &AtomicU64, order: Ordering) -> u64 {
        self.0.iter().map(|s| field(s).load(order)).sum()
    }
}

/// What every item of a queue writes at its spawn and at its end, each
/// count striped (module docs, "Stripes"); what is not striped here is read
/// by every item and written rarely.
struct Counts {
    /// Slots (`max_active`), leased to stripes.
    gate: Gate,
    /// Items in flight per flush color, the flushes waiting on them, and
    /// the references the queue's tasks hold (`task::QueueRef`).
    flight: Flight,
}

/// A queue's settings.
#[derive(Clone, Debug)]
pub(crate) struct QueueConfig {
    pub(crate) name: String,
    pub(crate) scope: Scope,
    pub(crate) strict: bool,
    pub(crate) max_active: usize,
    pub(crate) ordered: bool,
    pub(crate) highpri: bool,
    pub(crate) cpu_intensive: bool,
}

/// Why an item was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue is being drained and the spawner is not one of its tasks.
    Draining,
    /// The runtime is shut down.
    Closed,
    /// Every stripe of the queue's counts in flight is full.
    Full,
}

impl Refused {
    /// The reason a refused item's `JoinError` gives.
    pub(crate) fn why(self) -> &'static str {
        match self {
            Refused::Draining => {
                "its workqueue was being drained (Workqueue::drain refuses work from outside \
                 the queue until it returns)"
            }
            Refused::Closed => crate::task::RUNTIME_SHUT_DOWN,
            Refused::Full => {
                "its workqueue has over a billion items in flight (counted per spawning thread, \
                 about 66 million each on 16 stripes); await some before spawning more"
            }
        }
    }
}

#[derive(Default)]
struct Flush {
    /// Flushes waiting for their turn, in ticket order, with their wakers
    /// (a no-op one until their first wait): every live flush in line is
    /// here from the moment it takes its ticket, and leaves when it is
    /// given up or its turn comes. A ticket not here, between `serving`
    /// and `next_ticket`, was given up: the turn passes over it.
    queue: std::collections::VecDeque<(u64, Waker)>,
    next_ticket: u64,
    /// The ticket whose flush is served; those below are done.
    serving: u64,
    /// How far the served flush is (module docs, "Flush colors").
    phase: Phase,
    /// The served flush's waker, while it waits.
    waiter: Option<Waker>,
}

/// The served flush's progress, kept with the turn rather than in its
/// future, so that a flush waiting behind it can finish it (module docs,
/// "Flush colors").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// Not begun.
    #[default]
    Start,
    /// Waiting for the color `old ^ 1` to empty (flagged), before the flip
    /// away from `old`.
    Other { old: usize },
    /// Flipped; waiting for `old` to empty (flagged).
    Old { old: usize },
}

impl Flush {
    /// The flush being served is over (done or dropped): the turn passes to
    /// the next ticket not given up. Returns the served flush's waker, to
    /// wake if it is done (it may have been done by another thread: a
    /// finisher, or another flush's poll). The next one's progress is
    /// not its own to make: whoever passed the turn takes it on at once
    /// ([`Queue::drive`]), so one held but not polled holds nobody up.
    fn pass_turn(&mut self) -> Option<Waker> {
        self.phase = Phase::Start;
        let done = self.waiter.take();
        // The oldest flush in line is served next (those given up left
        // the line); with none, the next ticket taken is. Its waker (a
        // no-op until its first poll) is woken when it is done.
        match self.queue.pop_front() {
            Some((next, w)) => {
                self.serving = next;
                self.waiter = Some(w);
            }
            None => self.serving = self.next_ticket,
        }
        done
    }

    /// Whether a flush is being served (its ticket live: a served flush
    /// given up passes the turn at once).
    fn serves(&self) -> bool {
        self.serving < self.next_ticket
    }

    /// A new flush's ticket: served at once if none is, else in line
    /// (under the same lock: a turn passed between the ticket and the
    /// flush's first wait must not pass over it).
    fn take_ticket(&mut self) -> u64 {
        let t = self.next_ticket;
        self.next_ticket += 1;
        if t != self.serving {
            self.queue.push_back((t, Waker::noop().clone()));
        }
        t
    }

    /// A flush given up in line, before its turn: it leaves the line, and
    /// the turn passes over its ticket. (A set of given-up tickets, kept
    /// until their turn, grew by one per timed-out flush while a flush
    /// held the turn: a health probe's `timeout(flush)` every 100 ms
    /// behind a stuck one, 864,000 a day.)
    fn give_up_in_line(&mut self, ticket: u64) -> Option<Waker> {
        let at = self.in_line(ticket)?;
        self.queue.remove(at).map(|(_, w)| w)
    }

    /// Where `ticket` waits in line, if it does (the line is in ticket
    /// order: a binary search, as thousands may wait).
    fn in_line(&self, ticket: u64) -> Option<usize> {
        self.queue.binary_search_by_key(&ticket, |(t, _)| *t).ok()
    }
}

/// A named workqueue (see the module docs).
pub(crate) struct Queue {
    name: String,
    scheduler: Weak<Scheduler>,
    ordered: bool,
    highpri: bool,
    cpu_intensive: bool,
    scope: AtomicU8,
    strict: AtomicBool,
    /// The slots and in-flight counts (the task references), striped.
    counts: CachePadded<Counts>,
    /// Created, never-queued items and the CPU each was submitted on
    /// ([`inactive`]: a handle's abort takes its item out).
    inactive: InactiveList<(Runnable, Option<usize>)>,
    /// The current flush color (0 or 1); flipped only under the `flush`
    /// lock, by whoever drives the served flush (`Queue::drive`).
    color: AtomicU8,
    flush: Mutex<Flush>,
    /// Drains on, and the items counted while one was.
    drains: Drains,
    closed: AtomicBool,
    /// Started, completed, CPU time and the event counters, striped: a
    /// repatriation (a wake) must not write the line every spawn reads
    /// (`closed`, `color`, ...).
    stats: Stats,
    /// Its slot in the scheduler's list of queues (set once, when it is
    /// registered).
    registry_slot: AtomicUsize,
    /// Items refused (`Queue::refuse`); written only by refusals.
    refused: AtomicU64,
    /// A refusal of a draining or full queue was logged.
    refusal_logged: AtomicBool,
    /// Releases that upgraded `scheduler` (not current there): tests.
    #[cfg(all(test, not(loom)))]
    release_upgrades: AtomicUsize,
}

/// What `Queue::stats` reads.
#[derive(Clone, Debug)]
pub(crate) struct QueueCounts {
    pub(crate) started: u64,
    pub(crate) completed: u64,
    pub(crate) cpu_time_ns: u64,
    pub(crate) cpu_intensive: u64,
    pub(crate) cm_wakeups: u64,
    pub(crate) repatriated: u64,
    pub(crate) refused: u64,
    pub(crate) in_flight: usize,
    pub(crate) active: usize,
    pub(crate) inactive: usize,
}

impl Queue {
    pub(crate) fn new(config: QueueConfig, scheduler: Weak<Scheduler>) -> Queue {
        // One line per stripe for all the per-item counts ("Stripes").
        let lines = task::stripe_lines(STRIPES);
        Queue {
            name: config.name,
            scheduler,
            ordered: config.ordered,
            highpri: config.highpri,
            cpu_intensive: config.cpu_intensive,
            scope: AtomicU8::new(config.scope.index() as u8),
            strict: AtomicBool::new(config.strict),
            counts: CachePadded::new(Counts {
                gate: Gate::new(config.max_active, lines.clone()),
                flight: Flight::on(lines),
            }),
            inactive: InactiveList::new(),
            color: AtomicU8::new(0),
            flush: Mutex::new(Flush::default()),
            drains: Drains::new(),
            closed: AtomicBool::new(false),
            stats: Stats::default(),
            registry_slot: AtomicUsize::new(usize::MAX),
            refused: AtomicU64::new(0),
            refusal_logged: AtomicBool::new(false),
            #[cfg(all(test, not(loom)))]
            release_upgrades: AtomicUsize::new(0),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }
    pub(crate) fn scope(&self) -> Scope {
        Scope::ALL[usize::from(self.scope.load(Ordering::Relaxed))]
    }
    pub(crate) fn is_strict(&self) -> bool {
        self.strict.load(Ordering::Relaxed)
    }
    pub(crate) fn max_active(&self) -> usize {
        self.counts.gate.max()
    }
    pub(crate) fn is_ordered(&self) -> bool {
        self.ordered
    }
    pub(crate) fn is_highpri(&self) -> bool {
        self.highpri
    }
    pub(crate) fn is_cpu_intensive_queue(&self) -> bool {
        self.cpu_intensive
    }

    /// Later items go to `scope`'s pods.
    pub(crate) fn set_scope(&self, scope: Scope) {
        self.scope.store(scope.index() as u8, Ordering::Relaxed);
    }

    /// Later items go to strict (or non-strict) pools.
    pub(crate) fn set_strict(&self, strict: bool) {
        self.strict.store(strict, Ordering::Relaxed);
    }

    /// At most `n` items active from now on; waiting ones start at once if
    /// the new limit allows.
    pub(crate) fn set_max_active(&self, n: usize) {
        self.counts
            .gate
            .set_max(n, this_stripe(), &self.inactive, &mut self.releaser());
    }

    fn releaser(&self) -> impl FnMut((Runnable, Option<usize>)) + '_ {
        move |(runnable, cpu)| self.release(runnable, cpu)
    }

    fn link_id(&self) -> *const () {
        std::ptr::from_ref(self).cast()
    }

    /// Gives an item that holds an active slot its home pool and queues it
    /// (an item taken off the inactive list, by whichever thread freed its
    /// slot).
    fn release(&self, runnable: Runnable, cpu: Option<usize>) {
        // The thread's current runtime, when it is the queue's (its
        // workers, where the finishes that free slots run, and its
        // `block_on`), is borrowed: an upgrade per released item wrote
        // the runtime's count, a line every CPU releasing items shared.
        super::context::with_current(|current| match current {
            Some(s) if std::ptr::eq(Arc::as_ptr(s), self.scheduler.as_ptr()) => {
                self.release_on(s, runnable, cpu);
            }
            _ => {
                #[cfg(all(test, not(loom)))]
                self.release_upgrades.fetch_add(1, Ordering::Relaxed);
                match self.scheduler.upgrade() {
                    Some(s) => self.release_on(&s, runnable, cpu),
                    None => self.refuse_released(runnable),
                }
            }
        });
    }

    /// [`Queue::release`] on its runtime `scheduler`.
    fn release_on(&self, scheduler: &Scheduler, runnable: Runnable, cpu: Option<usize>) {
        if self.closed.load(Ordering::Acquire) {
            self.refuse_released(runnable);
        } else {
            task::release(runnable, self.place(scheduler, cpu));
        }
    }

    /// The attributes of the pools its items go to now.
    #[inline]
    fn pool_attrs(&self) -> PoolAttrs {
        PoolAttrs {
            strict: self.is_strict(),
            highpri: self.highpri,
        }
    }

    /// The pool the queue's settings give an item placed by `cpu` now.
    #[inline]
    fn place<'s>(&self, scheduler: &'s Scheduler, cpu: Option<usize>) -> &'s Arc<Pool> {
        scheduler.place(self.pool_attrs(), self.scope(), cpu)
    }

    /// [`Queue::place`] for a spawn sample of an item that waits
    /// ([`Scheduler::place_for_sample`]: no round-robin turn taken).
    fn place_for_sample<'s>(&self, scheduler: &'s Scheduler, cpu: Option<usize>) -> &'s Arc<Pool> {
        scheduler.place_for_sample(self.pool_attrs(), self.scope(), cpu)
    }

    /// The runtime is shut down: the task is cancelled here; as far as
    /// `finishing` knows it never held its slot.
    fn refuse_released(&self, runnable: Runnable) {
        self.counts.gate.give_back(stripe_of(&runnable));
        drop(runnable);
        // A slot put down is followed by a look at the inactive list, here
        // too (the gate's stranding argument needs every put to look): an
        // item may have been pushed after `close` emptied the list, and
        // failed to get the slot this one held. Closed, the queue drops
        // waiting items, as `close` does (releasing them would only come
        // back here, one stack frame per item). Dropping a waiting item
        // touches no slot, so nothing recurses.
        while let Some((waiting, _)) = self.inactive.pop() {
            drop(waiting);
        }
    }

    /// A spawn that took a slot found the queue closed before creating its
    /// task: the slot goes back (and the list is looked at, as after every
    /// put: `refuse_released`), and so does its count in flight.
    fn refuse_admitted(&self, stripe: usize, color: u8) {
        self.counts.gate.give_back(stripe);
        while let Some((waiting, _)) = self.inactive.pop() {
            drop(waiting);
        }
        self.refuse_counted(stripe, color);
    }

    /// A spawn counted in flight found the queue closed before creating
    /// its task: the count goes back (with no slot taken, nothing to look
    /// at on the list).
    fn refuse_counted(&self, stripe: usize, color: u8) {
        let step = QueueLink::finishing(self, false, color, stripe as u8);
        let mut waiters = Vec::new();
        // SAFETY: read just now, the item counted; the spawner's handle
        // holds the queue through the call.
        let finished = unsafe { step.take(|| waiters = QueueLink::flagged(self, color)) };
        waiters.into_iter().for_each(wake_caught);
        debug_assert_eq!(finished, Finished::Done, "the spawner holds a handle");
    }

    /// Items in flight now (spawned, not finished), over both colors.
    fn in_flight(&self) -> isize {
        self.color_in_flight(0) + self.color_in_flight(1)
    }

    fn color_in_flight(&self, color: usize) -> isize {
        self.counts.flight.in_flight(color)
    }

    /// Waits until every item spawned before the call has finished. The
    /// flush begins in the call, not at its first poll: its ticket, and,
    /// served at once, its flip (so that an item spawned between the call
    /// and the `.await` is counted in the new color, and not waited for,
    /// unless the other color still held items: module docs).
    pub(crate) fn flush(&self) -> impl Future<Output = ()> + Send + '_ {
        // Our turn: flushes are served one at a time, in order. The served
        // one goes as far as it can now, as a poll would take it.
        let (ticket, wake) = {
            let mut f = lock(&self.flush);
            let ticket = f.take_ticket();
            (ticket, self.drive(&mut f))
        };
        wake.into_iter().for_each(wake_caught);
        // Whatever happens from here (the flush future may be dropped while
        // it waits for its turn, or during it, or never polled), the turn
        // passes on.
        struct Turn<'a> {
            queue: &'a Queue,
            ticket: u64,
        }
        impl Drop for Turn<'_> {
            fn drop(&mut self) {
                let (own, wake) = {
                    let mut f = lock(&self.queue.flush);
                    if f.serving == self.ticket {
                        // Given up during its turn: its flags go, and the
                        // color it may have flipped away from is waited
                        // for by the next (module docs), whose flush is
                        // taken on here. Its own waker is dropped after
                        // the lock and that drive (a user's waker whose
                        // drop panicked left the next one unflagged and
                        // undriven).
                        self.queue.unflag(f.phase);
                        let own = f.pass_turn();
                        (own, self.queue.drive(&mut f))
                    } else if f.serving < self.ticket {
                        // Its waker, dropped after the lock too.
                        (f.give_up_in_line(self.ticket), Vec::new())
                    } else {
                        (None, Vec::new()) // done (by itself or a later flush)
                    }
                };
                wake.into_iter().for_each(wake_caught);
                drop(own);
            }
        }
        let turn = Turn {
            queue: self,
            ticket,
        };
        let wait = std::future::poll_fn(move |cx| {
            // Where it is awaited, not where it was made (an item may
            // hand its flush to a task outside the queue).
            self.not_from_own_item("flush");
            let mut wake = Vec::new();
            let ready = {
                let mut f = lock(&self.flush);
                // The served flush, this one or one before it, as far as
                // it goes now; each one done passes the turn on.
                wake.extend(self.drive(&mut f));
                if f.serving > ticket {
                    true
                } else {
                    // Waiting, under the lock that a finisher's wake takes
                    // (`QueueLink::flagged`): the color was read above
                    // after its flag was set, so a finisher that empties
                    // it later finds this waker.
                    if f.serving == ticket {
                        f.waiter = Some(cx.waker().clone());
                    } else {
                        // In line since its ticket (`take_ticket`).
                        let at = f
                            .in_line(ticket)
                            .expect("a flush waiting for its turn is in line");
                        f.queue[at].1.clone_from(cx.waker());
                    }
                    false
                }
            };
            wake.into_iter().for_each(wake_caught);
            if ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        async move {
            wait.await;
            drop(turn);
        }
    }

    /// Takes the served flush as far as it goes without waiting, and each
    /// next one when it is done (module docs, "Flush colors"), under the
    /// `flush` lock: by a flush's call or poll, a finisher that emptied a
    /// flagged color, or a flush given up during its turn. Returns the
    /// wakers of the flushes it finished.
    fn drive(&self, f: &mut Flush) -> Vec<Waker> {
        let mut done = Vec::new();
        while f.serves() && self.advance(f) {
            done.extend(f.pass_turn());
        }
        done
    }

    /// Takes the served flush as far as it goes without waiting, under
    /// the `flush` lock; true if it is done. The other color first (module docs): it holds
    /// only items spawned before this flush, left by a flush dropped while
    /// it waited or counted by a spawn that raced the last flip; then the
    /// flip, then the color flipped away from. Each wait flags its color
    /// before reading it (`flight`'s handshake), and unflags it when over.
    fn advance(&self, f: &mut Flush) -> bool {
        loop {
            match f.phase {
                Phase::Start => {
                    let old = usize::from(self.color.load(Ordering::Acquire));
                    self.counts.flight.start_flush(old ^ 1);
                    f.phase = Phase::Other { old };
                }
                Phase::Other { old } => {
                    if self.color_in_flight(old ^ 1) > 0 {
                        return false;
                    }
                    self.counts.flight.end_flush(old ^ 1);
                    self.color.store((old as u8) ^ 1, Ordering::Release);
                    self.counts.flight.start_flush(old);
                    f.phase = Phase::Old { old };
                }
                Phase::Old { old } => {
                    if self.color_in_flight(old) > 0 {
                        return false;
                    }
                    self.counts.flight.end_flush(old);
                    return true;
                }
            }
        }
    }

    /// The flags of a served flush at `phase`, given up.
    fn unflag(&self, phase: Phase) {
        match phase {
            Phase::Start => {}
            Phase::Other { old } => self.counts.flight.end_flush(old ^ 1),
            Phase::Old { old } => self.counts.flight.end_flush(old),
        }
    }

    /// Panics if the calling task is one of this queue's items: its
    /// `what` (a flush or a drain) would wait for the item itself.
    fn not_from_own_item(&self, what: &str) {
        assert!(
            current::running_queue() != self.link_id(),
            "wq: Workqueue::{what} of {:?} awaited by one of its own items would wait for itself forever; {what} from outside the queue, or await the items' JoinHandles",
            self.name
        );
    }

    /// Flushes until nothing is in flight, refusing outside work from the
    /// call on (not from the first poll) until the future ends or drops.
    pub(crate) fn drain(&self) -> impl Future<Output = ()> + Send + '_ {
        // Counted, as the kernel's `nr_drainers`: outside work stays
        // refused until the last drain ends (or is dropped).
        self.drains.on.fetch_add(1, Ordering::SeqCst);
        struct Undrain<'a>(&'a crate::loom::sync::atomic::AtomicUsize);
        impl Drop for Undrain<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let undrain = Undrain(&self.drains.on);
        let mut first = Some(self.flush());
        async move {
            let _undrain = undrain;
            self.not_from_own_item("drain");
            loop {
                match first.take() {
                    Some(flush) => flush.await,
                    None => self.flush().await,
                }
                // Empty, and no item counted meanwhile by an item that
                // then finished (`Drains::empty`).
                if self.drains.empty(&self.counts.flight) {
                    return;
                }
            }
        }
    }

    /// The runtime shuts down: no more items, and the waiting ones are
    /// dropped here (in the shutdown thread).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        while let Some((runnable, _)) = self.inactive.pop() {
            drop(runnable);
        }
    }

    /// Its slot in the scheduler's list (`Scheduler::create_queue`).
    pub(crate) fn set_registry_slot(&self, slot: usize) {
        self.registry_slot.store(slot, Ordering::Relaxed);
    }

    /// Its attributes now.
    pub(crate) fn attrs(&self) -> crate::metrics::WorkqueueAttrs {
        crate::metrics::WorkqueueAttrs {
            scope: self.scope(),
            strict: self.is_strict(),
            max_active: self.max_active(),
            ordered: self.is_ordered(),
            highpri: self.is_highpri(),
            cpu_intensive: self.is_cpu_intensive_queue(),
        }
    }

    /// Its stats now.
    pub(crate) fn stats(&self) -> crate::metrics::WorkqueueStats {
        let c = self.counts();
        crate::metrics::WorkqueueStats {
            name: self.name().to_owned(),
            attrs: self.attrs(),
            started: c.started,
            completed: c.completed,
            cpu_time: std::time::Duration::from_nanos(c.cpu_time_ns),
            cpu_intensive: c.cpu_intensive,
            cm_wakeups: c.cm_wakeups,
            repatriated: c.repatriated,
            refused: c.refused,
            in_flight: c.in_flight,
            active: c.active,
            inactive: c.inactive,
        }
    }

    /// Counts a refused item (its stats' `refused`); the first refusal of
    /// a draining or full queue is logged, once per queue, as the kernel
    /// warns once of work queued on a draining workqueue (a refusal after
    /// the shutdown is the shutdown's to explain). Returns `why`.
    #[cold]
    fn refuse(&self, why: Refused) -> Refused {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if why != Refused::Closed && !self.refusal_logged.swap(true, Ordering::Relaxed) {
            warn_caught!(
                "wq: workqueue {:?} refused an item: {} (Workqueue::spawn dropped its future, its handle's JoinError says so; Workqueue::try_spawn gives the future back in its SpawnError; counted in the queue's stats as `refused`; logged once per queue)",
                self.name,
                why.why()
            );
        }
        why
    }

    /// Its runtime has shut down (it accepts and runs nothing more).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The counters and gauges, each read once, one after another, while
    /// items come and go: `completed` is read before `started` (an item's
    /// end counts its start first, then its completion, with Release: an
    /// item whose completion is read has its start read too, and a read
    /// while a one-poll item ended between the two sums said one more
    /// completed than started), and `in_flight` is at least `active` plus
    /// `inactive` (no read order keeps it so for spawns and ends alike: a
    /// spawn counts in flight before active, an end leaves active first).
    pub(crate) fn counts(&self) -> QueueCounts {
        let completed = self.stats.sum_with(|s| &s.completed, Ordering::Acquire);
        let started = self.stats.sum(|s| &s.started);
        let active = self.counts.gate.active();
        let inactive = self.inactive.len();
        QueueCounts {
            started,
            completed,
            cpu_time_ns: self.stats.sum(|s| &s.cpu_time_ns),
            cpu_intensive: self.stats.sum(|s| &s.hogs),
            cm_wakeups: self.stats.sum(|s| &s.cm_wakeups),
            repatriated: self.stats.sum(|s| &s.repatriated),
            refused: self.refused.load(Ordering::Relaxed),
            in_flight: (self.in_flight().max(0) as usize).max(active + inactive),
            active,
            inactive,
        }
    }
}

/// Test hook: the drop of a queue named "dying" waits this long before it
/// retires its counters (widening the window a snapshot must not fall
/// into); one named "dying-ms-N" waits N ms.
#[cfg(all(test, not(loom)))]
pub(crate) static RETIRE_DELAY_MS: AtomicU64 = AtomicU64::new(0);

impl Drop for Queue {
    /// Its counters go on in its name's retired entry, so that a name's
    /// counters never go down in the metrics when one of its queues goes.
    fn drop(&mut self) {
        if let Some(scheduler) = self.scheduler.upgrade() {
            let stats = self.stats();
            #[cfg(all(test, not(loom)))]
            if self.name == "dying" {
                std::thread::sleep(std::time::Duration::from_millis(
                    RETIRE_DELAY_MS.load(Ordering::Relaxed),
                ));
            } else if let Some(ms) = self.name.strip_prefix("dying-ms-") {
                std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap()));
            }
            scheduler.retire_queue(self, self.registry_slot.load(Ordering::Relaxed), stats);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod retire_tests {
    /// A snapshot taken while a queue is being dropped (its last
    /// reference gone, its counters not yet retired) waits for it: the
    /// name's counters are in the live list or the retired one, never in
    /// neither (which read as a counter reset).
    #[test]
    fn a_snapshot_during_a_queues_drop_counts_it() {
        let rt = crate::Runtime::builder().build().unwrap();
        let q = crate::Workqueue::builder("dying")
            .build(rt.handle())
            .unwrap();
        rt.block_on(async {
            q.spawn(async {}).await.unwrap();
            // Its end counted (`Workqueue::stats`).
            q.flush().await;
        });
        let started = |m: &crate::metrics::Snapshot| {
            m.queues_by_name()
                .iter()
                .find(|q| q.name == "dying")
                .map_or(0, |q| q.started)
        };
        assert_eq!(started(&rt.metrics()), 1);
        super::RETIRE_DELAY_MS.store(200, std::sync::atomic::Ordering::SeqCst);
        let dropper = std::thread::spawn(move || drop(q));
        std::thread::sleep(std::time::Duration::from_millis(50));
        let during = rt.metrics();
        super::RETIRE_DELAY_MS.store(0, std::sync::atomic::Ordering::SeqCst);
        dropper.join().unwrap();
        assert_eq!(started(&during), 1, "the dying queue was in neither list");
        assert_eq!(started(&rt.metrics()), 1);
    }

    /// Live queues are listed in creation order though a dropped one's
    /// slot is reused; past the limit, the name retired longest ago is
    /// forgotten.
    #[test]
    fn the_registry_keeps_creation_order_and_forgets_the_oldest_name() {
        use crate::metrics::RETIRED_QUEUE_NAMES;
        let rt = crate::Runtime::builder().build().unwrap();
        let q = |name: &str| crate::Workqueue::builder(name).build(rt.handle()).unwrap();
        let (a, b) = (q("a"), q("b"));
        drop(a);
        let c = q("c");
        let names: Vec<String> = rt.metrics().queues.iter().map(|s| s.name.clone()).collect();
        assert_eq!(names, ["b", "c"]);
        for i in 0..RETIRED_QUEUE_NAMES {
            drop(q(&format!("n{i}")));
        }
        let retired: Vec<String> = rt
            .metrics()
            .retired_queues
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(retired.len(), RETIRED_QUEUE_NAMES);
        assert!(!retired.contains(&"a".to_owned()), "{:?}", &retired[..3]);
        assert_eq!(retired[0], "n0");
        assert_eq!(retired.last().map(String::as_str), Some("n1023"));
        drop((b, c));
    }

    /// A retired name that a live queue bears outlives the limit: its
    /// counters in the metrics are the live queue's plus the retired ones,
    /// and forgetting the retired ones would make a Prometheus counter go
    /// down.
    #[test]
    fn a_retired_name_a_live_queue_bears_is_not_forgotten() {
        use crate::metrics::RETIRED_QUEUE_NAMES;
        let rt = crate::Runtime::builder().build().unwrap();
        let q = |name: &str| crate::Workqueue::builder(name).build(rt.handle()).unwrap();
        let started = |rt: &crate::Runtime| {
            rt.metrics()
                .queues_by_name()
                .into_iter()
                .find(|s| s.name == "db")
                .map_or(0, |s| s.started)
        };
        let old = q("db");
        // Flushed: an awaited item's end may be counted a moment later.
        rt.block_on(async {
            for _ in 0..5 {
                old.spawn(async {}).await.unwrap();
            }
            old.flush().await;
        });
        drop(old);
        let live = q("db");
        rt.block_on(async {
            live.spawn(async {}).await.unwrap();
            live.flush().await;
        });
        assert_eq!(started(&rt), 6);
        for i in 0..=RETIRED_QUEUE_NAMES {
            drop(q(&format!("n{i}")));
        }
        assert_eq!(
            started(&rt),
            6,
            "the live queue's name kept its retired counts"
        );
        let retired = rt.metrics().retired_queues;
        assert_eq!(retired.len(), RETIRED_QUEUE_NAMES);
        assert!(retired.iter().any(|s| s.name == "db"));
        assert!(
            !retired.iter().any(|s| s.name == "n0"),
            "the oldest other name went"
        );
        // Once no live queue bears it, it is forgotten in its turn.
        drop(live);
        for i in 0..=RETIRED_QUEUE_NAMES {
            drop(q(&format!("m{i}")));
        }
        assert_eq!(started(&rt), 0);
        assert_eq!(rt.metrics().retired_queues.len(), RETIRED_QUEUE_NAMES);
    }

    /// Names kept past the limit while live queues bore them are forgotten
    /// once those queues go too (the map stayed at its peak: a name was
    /// forgotten only when a new one came, one at a time).
    #[test]
    fn names_kept_for_live_queues_go_back_under_the_limit_when_they_retire() {
        use crate::metrics::RETIRED_QUEUE_NAMES;
        let rt = crate::Runtime::builder().build().unwrap();
        let q = |name: &str| crate::Workqueue::builder(name).build(rt.handle()).unwrap();
        let n = RETIRED_QUEUE_NAMES + 100;
        let pairs: Vec<_> = (0..n)
            .map(|i| (q(&format!("n{i}")), q(&format!("n{i}"))))
            .collect();
        let (first, second): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        drop(first);
        assert_eq!(rt.metrics().retired_queues.len(), n, "every name is live");
        drop(second);
        assert!(rt.metrics().queues.is_empty());
        assert_eq!(rt.metrics().retired_queues.len(), RETIRED_QUEUE_NAMES);
    }
}

impl QueueLink for Queue {
    fn finishing(&self, released: bool, color: u8, stripe: u8) -> LastStep {
        let (color, stripe) = (usize::from(color), usize::from(stripe));
        if released {
            // Release: a `counts` that reads it reads the item's start
            // (counted before, on this thread or one its run came from).
            self.stats.mine().completed.fetch_add(1, Ordering::Release);
            self.counts
                .gate
                .finished(stripe, &self.inactive, &mut self.releaser());
        }
        // The task's last access to the queue follows (`flight`).
        self.counts.flight.last_step(stripe, color)
    }

    fn flagged(&self, color: u8) -> Vec<Waker> {
        let mut waiters = Vec::new();
        self.counts.flight.flagged(usize::from(color), || {
            // The finisher takes the served flush on itself (its future
            // may be held but not polled), and the ones after it; only
            // those it finishes are woken.
            waiters = self.drive(&mut lock(&self.flush));
        });
        waiters
    }

    fn polled(&self, first: bool, ns: u64) {
        let line = self.stats.mine();
        if first {
            line.started.fetch_add(1, Ordering::Relaxed);
        }
        line.cpu_time_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn is_cpu_intensive(&self) -> bool {
        self.cpu_intensive
    }

    fn hogged(&self) {
        self.stats.mine().hogs.fetch_add(1, Ordering::Relaxed);
    }

    fn cm_wakeup(&self) {
        self.stats.mine().cm_wakeups.fetch_add(1, Ordering::Relaxed);
    }

    fn repatriated(&self) {
        self.stats
            .mine()
            .repatriated
            .fetch_add(1, Ordering::Relaxed);
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn take_aborted(&self, id: *const ()) -> Option<(Runnable, Option<Arc<Pool>>)> {
        let (runnable, cpu) = self.inactive.remove(id)?;
        let pool = match self.scheduler.upgrade() {
            Some(s) if !self.closed.load(Ordering::Acquire) => Some(self.place(&s, cpu).clone()),
            _ => None,
        };
        Some((runnable, pool))
    }
}

/// What every [`Workqueue`](crate::Workqueue) of one queue shares: the
/// queue, and the handles' claim on it. Created with the queue, it takes
/// the tasks' share (`task::QueueRef`), and its drop (the last handle's)
/// is the protocol's **gone** step.
pub(crate) struct QueueHandle {
    queue: Arc<Queue>,
    /// One strong count of `queue` for all its tasks, dropped by the step
    /// that finds no task and no handle left.
    share: TasksShare,
}

impl QueueHandle {
    /// The first handle of a new queue.
    pub(crate) fn new(queue: Arc<Queue>) -> QueueHandle {
        QueueHandle {
            share: TasksShare::new(&queue),
            queue,
        }
    }

    /// Spawns `future` as an item of the queue, placed by `cpu` (if given)
    /// or by the calling thread's CPU. `scheduler` is the queue's runtime,
    /// borrowed from the caller's `Workqueue`. A refused future is given
    /// back, with why.
    pub(crate) fn spawn<F>(
        &self,
        scheduler: &Scheduler,
        cpu: Option<usize>,
        future: F,
    ) -> Result<JoinHandle<F::Output>, (Refused, F)>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let queue = &self.queue;
        // The runtime's flag too: a shutdown closes the pools before the
        // queues, and an item spawned between the two would be handed to a
        // closed pool and cancelled, not refused as `wq::spawn` is.
        if queue.closed.load(Ordering::Acquire) || scheduler.is_closed() {
            return Err((queue.refuse(Refused::Closed), future));
        }
        if queue.drains.on.load(Ordering::Acquire) > 0
            && current::running_queue() != queue.link_id()
        {
            return Err((queue.refuse(Refused::Draining), future));
        }
        // The spawn call's time, with latency capture on, timed for the
        // item's pool (for an item that waits, the pool the queue's
        // settings give now: its own is chosen when it is released).
        let called_at = scheduler.config.latency_capture.then(clock::now);
        let color = queue.color.load(Ordering::Acquire);
        let Some(stripe) = queue
            .counts
            .flight
            .stripe_for(this_stripe(), usize::from(color))
        else {
            return Err((queue.refuse(Refused::Full), future));
        };
        queue.counts.flight.spawned(stripe, usize::from(color));
        // After the count (both SeqCst): a drain on since before the count
        // is seen here (`Drains::counted`).
        queue.drains.counted();
        // SAFETY: this is a handle, and the item is counted in flight.
        let link = unsafe { self.share.task_ref() };
        let admitted = queue
            .counts
            .gate
            .admit_now(stripe, &queue.inactive, &mut queue.releaser());
        let (handle, pool) = if admitted {
            #[cfg(all(test, not(loom)))]
            tests::BEFORE_CLOSED_RECHECK.with(|h| h.take().map(|f| f(queue)));
            // The runtime's flag too, as above: a shutdown closes the
            // pools before the queues.
            if queue.closed.load(Ordering::Acquire) || scheduler.is_closed() {
                // Closed since the check above: the item is uncounted and
                // its future given back, as at the early refusals (never an
                // item, a flush does not wait for its drop; what the caller
                // does with it, a `Drop` that panics included, happens
                // after the slot and the count are back).
                queue.refuse_admitted(stripe, color);
                return Err((queue.refuse(Refused::Closed), future));
            }
            // Created released, with its home (no atomic steps for them).
            let pool = queue.place(scheduler, cpu);
            let handle = task::spawn_released(link, color, stripe as u8, pool, future);
            (handle, Some(pool))
        } else {
            #[cfg(all(test, not(loom)))]
            tests::BEFORE_WAITING_RECHECK.with(|h| h.take().map(|f| f(queue)));
            // As above: an item that waits, pushed after the shutdown
            // closed the queue, was released into a closed pool or dropped
            // by the next slot put down -- cancelled, not refused.
            if queue.closed.load(Ordering::Acquire) || scheduler.is_closed() {
                queue.refuse_counted(stripe, color);
                return Err((queue.refuse(Refused::Closed), future));
            }
            let (runnable, handle) = task::spawn_unreleased(link, color, stripe as u8, future);
            // The item waits and is released later, maybe by another
            // thread: it keeps the CPU it was submitted on for its
            // placement (one the topology knows, as a spawn now goes by).
            let cpu = cpu.or_else(|| {
                placement::placing_cpu(
                    &scheduler.topology,
                    scheduler.id(),
                    queue.scope(),
                    queue.pool_attrs(),
                )
            });
            queue.counts.gate.wait(
                stripe,
                &queue.inactive,
                (runnable, cpu),
                &mut queue.releaser(),
            );
            let pool = (called_at.is_some() && !queue.closed.load(Ordering::Acquire))
                .then(|| queue.place_for_sample(scheduler, cpu));
            (handle, pool)
        };
        if let (Some(start), Some(pool)) = (called_at, pool) {
            crate::metrics::record_spawn(&pool.capture, start, clock::now());
        }
        Ok(handle)
    }
}

impl Drop for QueueHandle {
    fn drop(&mut self) {
        if self.queue.counts.flight.gone() {
            // SAFETY: `gone` said no task holds a reference, and none can
            // be taken (no handle is left). The handle's own count keeps the
            // queue alive meanwhile.
            unsafe { self.share.release() };
        }
    }
}

impl std::ops::Deref for QueueHandle {
    type Target = Queue;

    fn deref(&self) -> &Queue {
        &self.queue
    }
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name)
            .field("scope", &self.scope())
            .field("max_active", &self.max_active())
            .field("ordered", &self.ordered)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Flush, Queue};

    /// What [`BEFORE_CLOSED_RECHECK`] runs.
    type Hook = Option<Box<dyn FnOnce(&Queue)>>;

    /// An ordered queue's items, each released by the finish of the one
    /// before on a worker (or by the spawning `block_on`), borrow the
    /// runtime current there: none upgrades the queue's reference.
    #[test]
    fn released_items_borrow_the_current_runtime() {
        use std::sync::atomic::Ordering;
        let rt = crate::Runtime::builder().build().unwrap();
        let q = crate::Workqueue::builder("released")
            .ordered()
            .build(rt.handle())
            .unwrap();
        rt.block_on(async {
            let items: Vec<_> = (0..100).map(|i| q.spawn(async move { i })).collect();
            for (i, h) in items.into_iter().enumerate() {
                assert_eq!(h.await.unwrap(), i);
            }
            // An item's end is counted at its worker's next look at its
            // queues, which a handle's await can beat (`Workqueue::stats`);
            // after a flush every item before it is counted (the last
            // one's count was read a moment early: 99, in one CI run).
            q.flush().await;
        });
        assert_eq!(q.stats().completed, 100);
        let upgrades = q.queue.release_upgrades.load(Ordering::Relaxed);
        assert_eq!(upgrades, 0, "{upgrades} upgrades for 99 releases");
    }

    std::thread_local! {
        /// Test hook: runs in a spawn admitted at once, on this thread,
        /// just before it looks at `closed` again.
        pub(super) static BEFORE_CLOSED_RECHECK: std::cell::Cell<Hook> =
            const { std::cell::Cell::new(None) };
        /// Test hook: runs in a spawn that must wait for a slot, on this
        /// thread, just before it looks at `closed` again.
        pub(super) static BEFORE_WAITING_RECHECK: std::cell::Cell<Hook> =
            const { std::cell::Cell::new(None) };
    }

    /// A spawn admitted as its queue closes drops the future it refuses;
    /// a panic in that `Drop` reaches the caller, and the item is
    /// uncounted first: its slot back, nothing in flight, a flush answers.
    #[test]
    fn a_panicking_drop_of_an_item_refused_at_the_close_leaves_no_count() {
        use std::time::Duration;
        let rt = crate::Runtime::builder().build().unwrap();
        let q = crate::Workqueue::builder("closing")
            .max_active(1)
            .build(rt.handle())
            .unwrap();
        struct PanicOnDrop;
        impl Drop for PanicOnDrop {
            fn drop(&mut self) {
                panic!("a future's drop panicked");
            }
        }
        BEFORE_CLOSED_RECHECK.with(|h| h.set(Some(Box::new(|queue: &Queue| queue.close()))));
        let p = PanicOnDrop;
        let fut = async move {
            let _p = &p;
        };
        let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.spawn(fut)));
        assert!(spawned.is_err(), "the drop's panic reaches the caller");
        let s = q.stats();
        assert_eq!((s.in_flight, s.active), (0, 0), "{s:?}");
        let flushed =
            rt.block_on(async { crate::time::timeout(Duration::from_secs(5), q.flush()).await });
        assert!(flushed.is_ok(), "a flush after it waited");
    }

    /// A runtime, and a queue on it (of `max_active` slots, all held by
    /// pending items, if given); `hook` runs the shutdown's first steps
    /// (the runtime's flag, its pools closed; the shutdown closes the
    /// queues after) between a `try_spawn`'s checks. Whether that spawn
    /// was refused as shut down, and the queue's stats right after it.
    fn try_spawn_as_the_runtime_shuts_down(
        hook: &'static std::thread::LocalKey<std::cell::Cell<Hook>>,
        max_active: Option<usize>,
    ) -> (Option<bool>, crate::WorkqueueStats) {
        use std::sync::atomic::Ordering;
        let rt = crate::Runtime::builder().build().unwrap();
        let mut q = crate::Workqueue::builder("shutting");
        if let Some(n) = max_active {
            q = q.max_active(n);
        }
        let q = q.build(rt.handle()).unwrap();
        let holders: Vec<_> = (0..max_active.unwrap_or(0))
            .map(|_| q.spawn(std::future::pending::<()>()))
            .collect();
        let scheduler = rt.handle().scheduler.clone();
        let s = scheduler.clone();
        hook.with(|h| {
            h.set(Some(Box::new(move |_: &Queue| {
                s.closed.store(true, Ordering::Release);
                for pool in crate::loom::lock(&s.all_pools).iter() {
                    pool.close();
                }
            })))
        });
        let spawned = q.try_spawn(async {});
        let refused = spawned
            .as_ref()
            .err()
            .map(crate::runtime::workqueue::SpawnError::is_shut_down);
        let stats = q.stats();
        // Let the real shutdown run.
        scheduler.closed.store(false, Ordering::Release);
        drop((spawned, holders, q, rt));
        (refused, stats)
    }

    /// A spawn admitted while the runtime shuts down -- its pools closed,
    /// its queues not yet (the shutdown closes them after) -- is refused
    /// as `wq::spawn` is, not handed to a closed pool and cancelled.
    #[test]
    fn a_spawn_admitted_as_the_runtime_shuts_down_is_refused() {
        let (refused, stats) = try_spawn_as_the_runtime_shuts_down(&BEFORE_CLOSED_RECHECK, None);
        assert_eq!(
            refused,
            Some(true),
            "accepted, then cancelled by the shutdown"
        );
        assert_eq!((stats.in_flight, stats.active), (0, 0), "{stats:?}");
    }

    /// A spawn that must wait for a slot, made while the runtime shuts
    /// down, is refused too: it was accepted, and its handle said
    /// cancelled.
    #[test]
    fn a_spawn_that_must_wait_as_the_runtime_shuts_down_is_refused() {
        let (refused, stats) =
            try_spawn_as_the_runtime_shuts_down(&BEFORE_WAITING_RECHECK, Some(1));
        assert_eq!(
            refused,
            Some(true),
            "accepted, then cancelled by the shutdown"
        );
        assert_eq!(
            (stats.in_flight, stats.inactive, stats.refused),
            (1, 0, 1),
            "{stats:?}"
        );
    }

    /// Flushes given up in line behind a served one keep nothing: neither
    /// a loop of timed-out flushes one at a time, nor overlapping ones,
    /// each given up while a newer one waits (a health probe's
    /// `timeout(flush)` behind a stuck flush: a set of given-up tickets
    /// grew by one per probe); the turn passes over every given-up ticket
    /// to the oldest flush still in line.
    #[test]
    fn flushes_given_up_in_line_leave_nothing_behind() {
        let mut f = Flush::default();
        let served = f.take_ticket();
        assert_eq!(served, f.serving);
        assert!(f.queue.is_empty(), "served at once, not in line");
        for _ in 0..10_000 {
            let t = f.take_ticket();
            f.give_up_in_line(t);
        }
        assert!(f.queue.is_empty());
        // Overlapping: each given up while the next waits.
        let mut prev = f.take_ticket();
        for _ in 0..100_000 {
            let next = f.take_ticket();
            f.give_up_in_line(prev);
            prev = next;
        }
        assert_eq!(f.queue.len(), 1, "only the one still waiting");
        // Out of order, with a served one ahead: its turn passes over the
        // given-up ones to the oldest left.
        let (a, b, c) = (f.take_ticket(), f.take_ticket(), f.take_ticket());
        f.give_up_in_line(prev);
        f.give_up_in_line(b);
        drop(f.pass_turn());
        assert_eq!(f.serving, a, "the given-up tickets skipped");
        assert_eq!(f.queue.len(), 1);
        drop(f.pass_turn());
        assert_eq!(f.serving, c);
        // None left in line: the next ticket taken is served at once.
        drop(f.pass_turn());
        let d = f.take_ticket();
        assert_eq!(f.serving, d);
        assert!(f.queue.is_empty());
    }
}
