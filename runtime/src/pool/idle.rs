//! The kick / idle / cull protocol of one worker pool.
//!
//! This is the part of a pool that decides which worker runs newly queued
//! work, when a worker may sleep, and when it may be retired. It mirrors the
//! kernel's `kick_pool()`, `worker_enter_idle()`, `worker_leave_idle()` and
//! `idle_cull_fn()` with Breno Leitao's two patches of June 2026 applied
//! ("workqueue: park kicked worker on pool->kicked_list" and "workqueue:
//! defer the worker wakeup outside pool->lock", see `docs/architecture.md`):
//! the **kicked list** and the **deferred wakeup**. On top of the kernel's
//! design it lets the common case take no lock at all: a worker that is
//! **searching** (awake, about to look at the queues) absorbs kicks through
//! the pool's [hint word](super::hint), as tokio's and rayon's idle
//! coordination do. It knows nothing of tasks: the queues are seen only
//! through a `has_work` closure, so the same code is model-checked by loom
//! with a toy queue (`loom_tests` below) and runs the real pools.
//!
//! # State
//!
//! Under the pool lock (`Idle::state`), each worker slot has a
//! [`SlotState`] (each variant documents its invariant), and:
//! - `idle`, the **idle list**: `Idle` workers, parked, most recently idle
//!   last. A kick takes the last one (LIFO: the cache-hot one), a cull the
//!   first one (the oldest).
//! - `kicked`, the **kicked list**: workers a kick has claimed that have not
//!   run yet.
//! - `nr_workers`: workers that count against the pool's maximum (`Starting`,
//!   `Running`, `Idle`, `Kicked`).
//! - **running**: the counted workers not on the idle list (`Starting`,
//!   `Running`, `Kicked`), and the **limit**: `max_workers` plus `extra`,
//!   the CPU-hog allowances (step 8).
//!
//! Outside the lock, the hint word ([`super::hint`]) mirrors `parked`
//! (= `idle.len()`), `workers` (= `nr_workers`), `CAN_START`, `CLOSED`,
//! `FULL` (running >= limit), `OVER` (running > limit), `BACKING_OFF`
//! (`retry_start_at` set; its deadline in an atomic beside the word) and
//! `UNSERVED` (`nr_workers <= extra`: no counted worker outside a granted
//! poll), and holds
//! `searching`: the workers that will look at the queues before they park.
//! A `Kicked` or `Starting` worker is a searcher from the kick that claimed
//! it; a `Running` worker is one between "my queues are empty" and "I
//! park".
//!
//! # Invariants
//! - **I1** a slot is on the idle list iff it is `Idle`, on the kicked list
//!   iff it is `Kicked` (with the kicked list disabled, a kicked worker stays
//!   on the idle list: the pre-patch kernel, for the model test).
//! - **I2** a cull takes workers only from the idle list, so a kicked worker
//!   is never culled.
//! - **I3** (no lost wakeup, parked side) a producer pushes its item, fences
//!   (`SeqCst`), then reads the hint; a worker going idle adds itself to
//!   `parked` (a `SeqCst` read-modify-write, under the lock), then, after
//!   the lock, fences and re-checks the queues. Of the two fences one comes
//!   first: either the worker's re-check sees the item, or the producer
//!   sees the worker parked and takes the lock to kick it. (The lock plays
//!   no part: the re-check ran under it until 2026-12-06.)
//! - **I4** (no lost wakeup, searching side) a searcher stops searching by
//!   a `SeqCst` decrement of `searching` and a fence, and re-checks the
//!   queues after it: at once, without the lock, if it was the **last
//!   searcher** (the count reached zero), and in any case when it enters
//!   idle (I3). A producer that skipped its kick because it
//!   read `searching > 0` read a value from before that decrement, so by
//!   the same fence argument those re-checks see its item.
//! - **I5** (no stranded item) after a kick, some worker that has not yet
//!   looked at the queues will look: a searcher (a `Kicked` one is never
//!   culled, I2; a `Starting` one is being created), or, when the running
//!   workers fill the limit, every one of them (`Running`, or a `Kicked`
//!   or `Starting` searcher) looks at the queues before it idles (I3, I4).
//!   A worker parks with work queued only when, under the lock, the others
//!   running fill the limit (step 3's re-check, step 4, step 9): the last
//!   of them to idle finds the others under the limit and takes the work.
//!   (A worker stepping down, step 9, idles without looking: it does so
//!   only while the others running still fill the limit, and they look.)
//!   A worker culled between its idle and its re-check leaves work it saw
//!   only when the others fill the limit, when a kick's reservation waits
//!   for a culled thread (it takes that up: step 6), or when the workers
//!   are at their maximum, others idle (a producer before them kicked one;
//!   those after re-check, I3); else it stays (step 3).
//! - **I7** (the limit) a worker leaves the idle list to run work (a kick's
//!   claim, step 3's re-check, step 4) only while the running workers are
//!   under the limit, so running <= limit, except after step 7's return
//!   from blocking or step 8's revoke, until a worker steps down (step 9).
//!   The kernel's per-CPU pools keep the same bound at each item
//!   (`keep_working()`: no next item while more than one runs).
//! - **I6** a worker's unparker is held (an `Arc` inside [`Unparker`]) for as
//!   long as the wake queue holds it: waking after the unlock cannot touch
//!   a freed worker. A spurious unpark is harmless: a worker back from park
//!   re-reads its state under the lock.
//!
//! # Steps
//! 1. **Kick** ([`Idle::notify`], by a producer after pushing; by the last
//!    searcher when it finds work, step 2, the kernel's chaining). Fence, read the hint. `searching > 0`: a worker will look
//!    (I4): done, no lock. `FULL`, or no worker parked and none can be
//!    started, and a counted worker serving (not `UNSERVED`): every
//!    running worker will look (I3, I5): done, no lock (with none counted,
//!    every slot blocked in `block_in_place`, or each counted one in a
//!    poll granted a hog allowance, the kick takes the lock: it starts a
//!    worker where a slot is free and no refused start backs off, else
//!    hands the pool to the rescuer).
//!    A start refused less than `start_backoff` ago (`BACKING_OFF`, and
//!    the deadline beside the hint), none parked, and a worker serving:
//!    the same, for none can start (while the OS refuses threads, a kick
//!    per item took the lock to learn it). Otherwise [`Idle::kick`]: lock; a searcher now (a kicked worker, or
//!    one that started searching meanwhile) absorbs the kick (*coalesced*,
//!    the kernel's `first_idle_worker()` peeking the kicked list first);
//!    else, with the running workers under the limit (I7), the last idle
//!    worker moves to the kicked list, becomes a searcher, and its unparker
//!    is taken: unparked before the unlock
//!    ([`WakeMode::UnderLock`]) or after it ([`WakeMode::Deferred`]). With
//!    no idle worker and the running workers under the limit (the maximum
//!    plus hog allowances, I7), a slot is reserved
//!    (`Starting`, a searcher) and the caller starts the thread after the
//!    unlock; one start is in flight at a time (the kernel's manager): the
//!    new worker's own chaining creates the next. After the OS refused a
//!    start, no kick tries another for `start_backoff`; a pool left with no
//!    worker serving its queues (none at all, or only ones in a poll the
//!    watchdog granted a replacement for: step 8) is handed to the
//!    rescuer ([`Kick::Mayday`]).
//! 2. **Search** (a worker whose queues are empty). It becomes a searcher
//!    ([`Idle::try_start_searching`]: at most half the workers, rounded
//!    up, and at least two, search at once), scans the queues again, and may spin a
//!    little (`super::worker`). When it finds work it stops searching
//!    ([`Idle::stop_searching`]); if it was the last searcher, it kicks
//!    (step 1; tokio's rule: work came, more may follow, so a parked worker
//!    is woken to search, and the wakeup is paid by a worker, not by the
//!    next producer). When it finds none it stops searching;
//!    if it was the last searcher it re-checks the queues (I4) and goes
//!    back to work if they hold any.
//! 3. **Enter idle** ([`Idle::enter_idle`]). Lock; move to the idle list
//!    (`parked + 1`), stamp `idle_since`; unlock; fence; re-check the
//!    queues (I3), outside the lock (it reads every worker's deque). If
//!    there is work, lock again: search if a kick claimed the worker
//!    meanwhile; go back to work if the others running are under the limit
//!    (with the limit filled, they will look: I5), and if a cull retired
//!    it meanwhile (`idle_timeout` elapsed in between) stay, the cull
//!    undone (but for I5's cases: then exit). Otherwise park.
//! 4. **Leave idle** ([`Idle::leave_idle`], a worker back from park). A
//!    park that ended with no wakeup (a driver turn's events, a timeout)
//!    looks at the queues first, without the lock (O(workers) loads in a
//!    wide pool; safe, as the worker is on the idle list: I3). Lock.
//!    `Kicked`: leave the kicked list and search (it is a searcher already).
//!    `Idle` (a timeout or a spurious wake): run if there is work (looked
//!    at now, under the lock, if not before) and the
//!    running workers are under the limit, else run a cull pass if the
//!    idle timeout elapsed, else park again. `Culled`: exit.
//! 5. **Cull** (under the lock): while there are too many workers
//!    (`nr_idle > min_idle && (nr_idle - min_idle) * 4 >= nr_busy`,
//!    `min_idle` = 2 as the kernel's) and the oldest idle worker has been
//!    idle for `idle_timeout`, it leaves the idle list as `Culled` and is
//!    unparked (after the unlock, or before it under
//!    [`WakeMode::UnderLock`], as every step's wakes) to exit (one still in step 3's re-check
//!    may stay, if the re-check saw work).
//! 6. **Exit** ([`Idle::exit`], a culled worker, or any worker at
//!    shutdown). Lock; the slot becomes `Absent`. If a kick could not start
//!    a worker because every free slot was still held by exiting threads,
//!    the exiting thread takes the reservation and becomes the new worker
//!    -- unless the pool has closed since: then the reservation is undone
//!    (its worker and searcher counts with it).
//! 7. **Block** ([`Idle::block`] / [`Idle::unblock`], the kernel's
//!    concurrency management): a worker about to block its thread
//!    (`wq::block_in_place`) stops counting against the maximum, under the
//!    lock; after it, fenced, it looks at the queues (every deque: not
//!    under the lock) and kicks the pool as a producer would if work is
//!    queued, so another worker runs it (`cm_wakeups`). Back from blocking, it counts again; if that puts the
//!    running workers over the limit, it steps down after its poll (step
//!    9).
//! 8. **CPU hog** ([`Idle::grant_hog`] / [`Idle::revoke_hog`], by the
//!    runtime's watchdog, the kernel's CPU-intensive detection): a poll
//!    that has run longer than the threshold lets the pool have one worker
//!    beyond its maximum, and kicks it if work is queued (the grant
//!    publishes the room it makes, unlocks, fences, then looks at the
//!    queues, taking the lock again to kick only if it found work, as step
//!    7's block: a producer that read the pool full and skipped its kick
//!    pushed before that look, which sees its item: I3's pair, the grant in
//!    the parking worker's place), so the pool's
//!    other work is not held behind the hog; when that poll ends, the
//!    allowance goes (and a worker steps down if the pool is left over its
//!    limit, step 9). The watchdog grants the allowance; the hog's worker
//!    gives it up as the marked poll ends (its poll is not interrupted),
//!    and the watchdog's next scan revokes whatever a race left (a revoke
//!    takes the slot's `granted` flag: idempotent). One allowance per slot, marked on it; if
//!    the poll then blocks (step 7), the block gives the allowance up (the
//!    worker leaves the count anyway: both would put the pool two over its
//!    maximum), the watchdog grants it again if the poll comes back still
//!    running ([`Idle::regrant_hog`]), and its revoke takes back whatever
//!    is held then.
//! 9. **Step down** ([`Idle::step_down`], a worker between two polls that
//!    read `OVER`: at once after a poll that returned from blocking or
//!    whose CPU-hog allowance it gave up (step 8), else
//!    after a poll at a tick that is a multiple of
//!    [`GLOBAL_QUEUE_INTERVAL`](super::worker::GLOBAL_QUEUE_INTERVAL)).
//!    Its LIFO task and deque go to the pool's injector, with a kick (step
//!    1: skipped while the limit is filled; on a closed pool, the tasks
//!    are dropped). Lock; if the others running still fill the limit,
//!    move to the idle list without a re-check (I5) and park; else go on
//!    (two workers that raced here both handed their tasks off, one
//!    parks). A parked worker whose driver turn woke tasks into its own
//!    LIFO slot and deque, and that step 4 keeps parked, hands them off
//!    the same way.
//!    Over the limit, the pool parks its excess within a poll and 61 ticks
//!    instead of running it until the next cull (which keeps two idle
//!    workers): a pool of one worker that blocked once would otherwise run
//!    two tasks at once on its one CPU for good.
//!
//! # Lock acquisitions per item
//! A producer takes the pool lock only when no worker is searching, the
//! running workers do not fill the limit, and one is parked (or can be
//! started, and no refused start backs off), or none serves the queues
//! (the kick hands the pool to the rescuer); a worker only to park (and
//! once more when its re-check finds work: `work_seen_on_idle`), to come
//! back from a park, to block (and once more to kick for work it then
//! finds), to come back from blocking, to step down, to start or exit,
//! and to give up a CPU-hog allowance as its marked poll ends (step 8). With work arriving faster than
//! workers park, an item costs no lock at all; `lock_acquisitions` in the
//! pool's metrics counts them.

use std::fmt;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use super::hint::{Change, Derived, Hint, HintWord, MAX_SLOTS};
use super::wake_queue::{Unparker, WakeQueue};
use crate::WakeMode;
use crate::loom::lock;
use crate::loom::sync::atomic::{AtomicU64, Ordering, fence};
use crate::loom::sync::{Mutex, MutexGuard, TryLockError};

/// What a pool's protocol is configured with.
#[derive(Clone, Debug)]
pub(crate) struct IdleConfig {
    /// Workers that count against the maximum at once.
    pub(crate) max_workers: usize,
    /// Slots: `max_workers` plus as many for workers blocked in
    /// `block_in_place` (each is replaced while it blocks).
    pub(crate) slots: usize,
    pub(crate) idle_timeout: Duration,
    /// Idle workers always kept (the kernel keeps 2).
    pub(crate) min_idle: usize,
    pub(crate) wake_mode: WakeMode,
    /// After the OS refused a worker thread, no kick tries another for this
    /// long (the kernel's `MAYDAY_INTERVAL`).
    pub(crate) start_backoff: Duration,
    /// Off only in model tests: the kernel's stranding race must then be
    /// found.
    pub(crate) kicked_list: bool,
}

/// What a worker slot is, under the pool lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// No thread holds the slot. Not counted; not on a list; no unparker.
    Absent,
    /// Reserved by a kick; its thread is being started. Counted in
    /// `nr_workers` and as a searcher (the kick's claim); not on a list.
    Starting,
    /// Its thread runs tasks, or searches for them. Counted; on no list.
    Running,
    /// Parked on the idle list, claimable by a kick, cullable after
    /// `idle_timeout`. Counted; on the idle list (I1); its unparker set.
    Idle,
    /// Claimed by a kick and unparked, but has not run since. Counted, and
    /// as a searcher; on the kicked list (I1); never culled (I2).
    Kicked,
    /// In `block_in_place`: its thread is busy outside the pool's control.
    /// Not counted against the maximum (the pool may start a replacement);
    /// on no list.
    Blocked,
    /// Retired by a cull; its thread is on its way out (or, in step 3's
    /// re-check, may stay: back to `Running`). Not counted; on no list.
    Culled,
}

struct Slot {
    state: SlotState,
    idle_since: Instant,
    thread: Option<Unparker>,
    /// The watchdog granted this slot's poll a CPU-hog allowance (counted
    /// in `extra`) that has not been revoked or given up.
    granted: bool,
    /// Out of the count (`Blocked`) for a CPU-intensive poll, not a
    /// block: reported apart (`WorkerStates::cpu_intensive`).
    computing: bool,
    /// Reserved (`Starting`) by a kick that is a `cm_wakeup` (a block's,
    /// a blocked poll's grant): counted when the thread starts, not if the
    /// OS refuses it (`start_failed`).
    cm_start: bool,
}

/// Counters kept under the pool lock, where the events happen anyway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LockedCounters {
    /// Kicks that took the lock.
    pub(crate) kicks: u64,
    /// Of those, the ones that found a worker already kicked or searching.
    pub(crate) coalesced_kicks: u64,
    pub(crate) unparks: u64,
    pub(crate) workers_created: u64,
    pub(crate) workers_culled: u64,
    /// Blocks (`block_in_place`) that woke or started another worker.
    pub(crate) cm_wakeups: u64,
    /// Polls the watchdog found running longer than the CPU-hog threshold
    /// on their CPU.
    pub(crate) cpu_intensive: u64,
    /// Workers that parked because the pool ran more workers than its
    /// limit (step 9).
    pub(crate) stepped_down: u64,
    /// Acquisitions of the pool lock by the protocol's steps (not by
    /// metrics readers).
    pub(crate) lock_acquisitions: u64,
    /// Those that found the lock held and had to wait.
    pub(crate) lock_contended: u64,
}

struct State {
    slots: Box<[Slot]>,
    idle: Vec<usize>,
    kicked: Vec<usize>,
    nr_workers: usize,
    /// A reserved slot whose thread has not started yet.
    starting: bool,
    /// A kick found no free slot (all held by exiting threads).
    want_start: bool,
    /// After a refused start: no new start before this instant.
    retry_start_at: Option<Instant>,
    /// Workers the pool may have beyond its maximum: one per poll the hog
    /// watchdog found running too long (step 8).
    extra: usize,
    closed: bool,
    counters: LockedCounters,
}

impl State {
    /// Counted workers not on the idle list: running, searching, kicked or
    /// starting.
    fn running(&self) -> usize {
        self.nr_workers - self.idle.len()
    }
}

/// The outcome of a kick.
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kick {
    /// No lock taken: a worker is searching and will see the work (I4), or
    /// every worker is running (or the running ones fill the limit) and
    /// will look before it idles (I3, I5).
    Skipped,
    /// Under the lock, a worker already kicked or searching will see it.
    Coalesced,
    /// An idle worker was claimed and unparked.
    Woke,
    /// Slot reserved: the caller must start a worker thread for it and call
    /// [`Idle::started`] from it, or [`Idle::start_failed`].
    Start(usize),
    /// Every worker is running (or one is being started), or the running
    /// ones fill the limit, and they will look at the queues before they
    /// idle.
    Busy,
    /// The pool has no worker and may not start one yet (a start was
    /// refused less than `start_backoff` ago): the caller hands the pool
    /// to the rescuer.
    Mayday,
    /// The pool is shut down: the caller drops what it queued.
    Closed,
}

/// What a worker does next ([`Idle::enter_idle`], [`Idle::leave_idle`],
/// [`Idle::exit`]).
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Go (back) to work, not searching.
    Run,
    /// Go back to work as a searcher (it was kicked or drafted, and is
    /// counted in `searching`).
    Search,
    /// Stay idle: park.
    Park,
    /// Leave: culled, or the pool is shut down. Call [`Idle::exit`].
    Exit,
}

/// A pool's worker lists under its lock, and the hint word. See the module
/// docs.
pub(crate) struct Idle {
    state: Mutex<State>,
    /// A line of its own: every producer reads it per item and searching
    /// workers write it; beside it were fields every worker reads
    /// (the pool's `closed`, its spin settings), and the lock's word.
    hint: CachePadded<HintWord>,
    /// `retry_start_at` while `BACKING_OFF` is set, in nanoseconds since
    /// `epoch` (written under the lock before the bit; a stale read is an
    /// earlier deadline, which sends the kick to the lock): what a
    /// producer's kick reads without the lock ([`Idle::notify`]).
    retry_at_ns: AtomicU64,
    epoch: Instant,
    config: IdleConfig,
    /// The searchers' floor ([`super::hint::SEARCH_FLOOR`]), lowered by a
    /// model to refuse a second searcher of two workers (`loom_tests`).
    #[cfg(loom)]
    pub(crate) search_floor: std::sync::atomic::AtomicUsize,
    /// A negative model's fault: a failed start's searcher goes after its
    /// wake, not before (`loom_tests`).
    #[cfg(loom)]
    pub(crate) failed_start_unsearches_late: std::sync::atomic::AtomicBool,
    /// A negative model's fault: `block` looks at the queues without its
    /// fence (`loom_tests`).
    #[cfg(loom)]
    pub(crate) block_skips_fence: std::sync::atomic::AtomicBool,
    /// A negative model's fault: `enter_idle` re-checks the queues
    /// without its fence (`loom_tests`).
    #[cfg(loom)]
    pub(crate) idle_skips_fence: std::sync::atomic::AtomicBool,
    /// A negative model's fault: `notify` reads the hint without its
    /// fence (`loom_tests`).
    #[cfg(loom)]
    pub(crate) notify_skips_fence: std::sync::atomic::AtomicBool,
    /// A negative model's fault: `close` returns without its fence
    /// (`loom_tests`).
    #[cfg(loom)]
    pub(crate) close_skips_fence: std::sync::atomic::AtomicBool,
    /// A negative model's fault: a CPU-hog grant looks at the queues
    /// without its fence (`loom_tests`).
    #[cfg(loom)]
    pub(crate) grant_skips_fence: std::sync::atomic::AtomicBool,
    /// A negative model's fault: a worker culled before its re-check
    /// exits whatever the others are (`loom_tests`).
    #[cfg(loom)]
    pub(crate) culled_always_exits: std::sync::atomic::AtomicBool,
    /// A negative model's fault: an exit that finds a reservation left for
    /// it after the pool closed keeps its counts (`loom_tests`).
    #[cfg(loom)]
    pub(crate) closed_reservation_kept: std::sync::atomic::AtomicBool,
    /// A negative model's fault: a kick skips the lock while a start backs
    /// off even with a worker parked (`loom_tests`).
    #[cfg(loom)]
    pub(crate) backoff_skip_ignores_parked: std::sync::atomic::AtomicBool,
    /// A negative model's fault: that skip even with no worker serving
    /// (`loom_tests`).
    #[cfg(loom)]
    pub(crate) backoff_skip_ignores_unserved: std::sync::atomic::AtomicBool,
    /// A negative model's fault: the skip for "every running worker will
    /// look" with every counted worker in a granted poll (`loom_tests`).
    #[cfg(loom)]
    pub(crate) running_skip_ignores_unserved: std::sync::atomic::AtomicBool,
    /// Wake queues unparked with the pool lock held, and after it
    /// (`tests`: which [`WakeMode`] each step follows).
    #[cfg(all(test, not(loom)))]
    pub(crate) wakes_locked_unlocked: [std::sync::atomic::AtomicUsize; 2],
}

/// `fence(SeqCst)`: one side of one of the protocol's store-buffering
/// pairs; under loom, left out while the negative model's fault
/// `self.$fault` is set.
macro_rules! protocol_fence {
    ($self:ident . $fault:ident) => {{
        #[cfg(loom)]
        let skip = $self.$fault.load(std::sync::atomic::Ordering::Relaxed);
        #[cfg(not(loom))]
        let skip = false;
        if !skip {
            fence(Ordering::SeqCst);
        }
    }};
}

impl Idle {
    pub(crate) fn new(config: IdleConfig) -> Idle {
        assert!(config.max_workers > 0, "a pool needs at least one worker");
        assert!(
            config.slots >= config.max_workers && config.slots <= MAX_SLOTS,
            "slots out of range"
        );
        let now = Instant::now();
        let slots = (0..config.slots)
            .map(|_| Slot {
                state: SlotState::Absent,
                idle_since: now,
                thread: None,
                granted: false,
                computing: false,
                cm_start: false,
            })
            .collect();
        Idle {
            state: Mutex::new(State {
                slots,
                idle: Vec::with_capacity(config.slots),
                kicked: Vec::with_capacity(config.slots),
                nr_workers: 0,
                starting: false,
                want_start: false,
                retry_start_at: None,
                extra: 0,
                closed: false,
                counters: LockedCounters::default(),
            }),
            hint: CachePadded::new(HintWord::new()),
            retry_at_ns: AtomicU64::new(0),
            epoch: now,
            config,
            #[cfg(loom)]
            search_floor: std::sync::atomic::AtomicUsize::new(super::hint::SEARCH_FLOOR),
            #[cfg(loom)]
            failed_start_unsearches_late: std::sync::atomic::AtomicBool::new(false),
            #[cfg(loom)]
            block_skips_fence: std::sync::atomic::AtomicBool::new(false),
            #[cfg(loom)]
            idle_skips_fence: std::sync::atomic::AtomicBool::new(false),
            #[cfg(loom)]
            notify_skips_fence: std::sync::atomic::AtomicBool::new(false),
            #[cfg(loom)]
            close_skips_fence: std::sync::atomic::AtomicBool::new(false),
            #[cfg(loom)]
            grant_skips_fence: std::sync::atomic::AtomicBool::new(false),
            #[cfg(loom)]
            culled_always_exits: std::sync::atomic::AtomicBool::new(false),
            #[cfg(loom)]
            closed_reservation_kept: std::sync::atomic::AtomicBool::new(false),
            #[cfg(loom)]
            backoff_skip_ignores_parked: std::sync::atomic::AtomicBool::new(false),
            #[cfg(loom)]
            backoff_skip_ignores_unserved: std::sync::atomic::AtomicBool::new(false),
            #[cfg(loom)]
            running_skip_ignores_unserved: std::sync::atomic::AtomicBool::new(false),
            #[cfg(all(test, not(loom)))]
            wakes_locked_unlocked: Default::default(),
        }
    }

    pub(crate) fn config(&self) -> &IdleConfig {
        &self.config
    }

    /// The pool's limit: its maximum and the CPU-hog allowances.
    fn limit(&self, st: &State) -> usize {
        self.config.max_workers + st.extra
    }

    /// Applies `change` to the hint word, with `FULL`, `OVER`,
    /// `BACKING_OFF` and `UNSERVED` as `st` (changed already) says. Under
    /// the lock; every step that changes what they derive from publishes.
    fn publish(&self, st: &State, mut change: Change) -> Hint {
        let (running, limit) = (st.running(), self.limit(st));
        change.derived = Some(Derived {
            full: running >= limit,
            over: running > limit,
            backing_off: st.retry_start_at.is_some(),
            unserved: Self::none_serving(st),
        });
        self.hint.apply(change)
    }

    /// Whether the running workers exceed the limit (the hint: step 9's
    /// cue, read without the lock).
    pub(crate) fn over_limit(&self) -> bool {
        self.hint.load().over()
    }

    /// Takes the pool lock for a protocol step, counting the acquisition
    /// (and whether it had to wait).
    fn lock(&self) -> MutexGuard<'_, State> {
        let mut st = match self.state.try_lock() {
            Ok(st) => st,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                let mut st = lock(&self.state);
                st.counters.lock_contended += 1;
                st
            }
        };
        st.counters.lock_acquisitions += 1;
        st
    }

    /// Step 1, from a producer that has made its work visible in the
    /// queues: the lock-free checks, then [`Idle::kick`] if they do not
    /// settle it.
    pub(crate) fn notify(&self) -> Kick {
        // The producer's half of I3 and I4: the push is before this fence,
        // the hint read after it.
        protocol_fence!(self.notify_skips_fence);
        let h = self.hint.load();
        // "Every worker is running and will look" needs a worker that
        // serves the queues: with none counted (every slot blocked in
        // `block_in_place`) or each counted one in a poll granted a CPU-hog
        // allowance (`UNSERVED` covers both), the kick must reach the lock,
        // which hands the pool to the rescuer.
        #[cfg(loom)]
        let unserved_ignored = self
            .running_skip_ignores_unserved
            .load(std::sync::atomic::Ordering::Relaxed);
        #[cfg(not(loom))]
        let unserved_ignored = false;
        let served = if unserved_ignored {
            h.workers() > 0
        } else {
            !h.unserved()
        };
        let all_running = (h.full() || (h.parked() == 0 && !h.can_start())) && served;
        if !h.closed() && (h.searching() > 0 || all_running || self.backing_off(h)) {
            return Kick::Skipped;
        }
        self.kick()
    }

    /// Step 1's last lock-free check: a refused start backs off (no kick
    /// may start a worker before its deadline), no worker is parked, and
    /// one serves the queues: as when none can start, every running worker
    /// will look (I3, I5), and the kick would end `Busy` under the lock.
    /// Reads the clock, only on the path that takes the lock otherwise.
    /// (With every counted worker in a granted poll, the lock hands the
    /// pool to the rescuer; with one parked, it wakes it.)
    fn backing_off(&self, h: Hint) -> bool {
        #[cfg(loom)]
        let (parked_ignored, unserved_ignored) = (
            self.backoff_skip_ignores_parked
                .load(std::sync::atomic::Ordering::Relaxed),
            self.backoff_skip_ignores_unserved
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        #[cfg(not(loom))]
        let (parked_ignored, unserved_ignored) = (false, false);
        (!h.unserved() || unserved_ignored)
            && (h.parked() == 0 || parked_ignored)
            && self.before_retry(h)
    }

    /// Whether a refused start still backs off (the hint's bit, then the
    /// deadline beside it).
    fn before_retry(&self, h: Hint) -> bool {
        h.backing_off()
            && nanos_since(self.epoch, Instant::now()) < self.retry_at_ns.load(Ordering::Relaxed)
    }

    /// Step 1 under the lock. Call after the work is visible in the queues.
    pub(crate) fn kick(&self) -> Kick {
        let mut wake = WakeQueue::default();
        let outcome = {
            let mut st = self.lock();
            let outcome = self.kick_locked(&mut st, &mut wake);
            self.wake_under_lock(&mut wake);
            outcome
        };
        // Deferred: the lock is released, now wake (I6: `wake` holds the Arc).
        self.wake(wake);
        outcome
    }

    /// Under [`WakeMode::UnderLock`], unparks what a step queued while the
    /// caller still holds the pool lock (the kernel before its
    /// deferred-wakeup patch, where every `kick_pool()`, concurrency
    /// management's included, woke inside the critical section); under
    /// `Deferred` leaves it for [`Idle::wake`] after the unlock. Every step
    /// that claims or unparks a worker calls it before its unlock.
    fn wake_under_lock(&self, wake: &mut WakeQueue) {
        if self.config.wake_mode == WakeMode::UnderLock {
            self.wake(std::mem::take(wake));
        }
    }

    /// Unparks what `wake` holds (a step's wakes, after its unlock).
    pub(crate) fn wake(&self, wake: WakeQueue) {
        #[cfg(all(test, not(loom)))]
        if !wake.is_empty() {
            let locked = matches!(self.state.try_lock(), Err(TryLockError::WouldBlock));
            self.wakes_locked_unlocked[usize::from(!locked)]
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        wake.wake_all();
    }

    fn kick_locked(&self, st: &mut State, wake: &mut WakeQueue) -> Kick {
        if st.closed {
            return Kick::Closed;
        }
        self.wake_locked(st, wake)
            .unwrap_or_else(|| self.reserve(st))
    }

    /// A kick that wakes, never starts (under the lock, pool open): counted;
    /// `Coalesced` on a worker already searching, `Woke` an idle one, or
    /// `None` if neither is there, or if the running workers fill the
    /// limit (I7; they will look, I5).
    fn wake_locked(&self, st: &mut State, wake: &mut WakeQueue) -> Option<Kick> {
        st.counters.kicks += 1;
        // Under the lock: the fields this reads other than `searching`
        // cannot change, and a searcher seen now stops searching later,
        // re-checking (I4).
        if self.hint.load().searching() > 0 {
            st.counters.coalesced_kicks += 1;
            return Some(Kick::Coalesced);
        }
        if st.running() >= self.limit(st) {
            return None;
        }
        self.claim_idle(st, wake).then_some(Kick::Woke)
    }

    /// Claims the most recently idle worker and queues its unpark, if one
    /// is idle (step 1's wake). Returns whether it did.
    fn claim_idle(&self, st: &mut State, wake: &mut WakeQueue) -> bool {
        if let Some(&slot) = st.idle.last() {
            if self.config.kicked_list {
                st.idle.pop();
                st.kicked.push(slot);
            }
            st.slots[slot].state = SlotState::Kicked;
            debug_assert!(
                !self.config.kicked_list || st.running() <= self.limit(st),
                "I7: a kick claimed a worker over the limit"
            );
            self.publish(
                st,
                Change {
                    searching: 1,
                    parked: if self.config.kicked_list { -1 } else { 0 },
                    ..Change::default()
                },
            );
            Self::unpark(st, slot, wake);
            return true;
        }
        false
    }

    /// Queues the unpark of idle worker `slot` (counted).
    fn unpark(st: &mut State, slot: usize, wake: &mut WakeQueue) {
        st.counters.unparks += 1;
        wake.push(
            st.slots[slot]
                .thread
                .clone()
                .expect("an idle worker has a thread"),
        );
    }

    /// Whether a kick may start a worker now (the hint, no lock): room,
    /// no start in flight, and none refused less than `start_backoff` ago.
    pub(crate) fn may_start(&self) -> bool {
        let h = self.hint.load();
        !h.closed() && h.can_start() && !self.before_retry(h)
    }

    /// Whether [`Idle::wake_idle`] may find a worker (the hint, no lock).
    pub(crate) fn may_wake_idle(&self) -> bool {
        let h = self.hint.load();
        !h.closed() && h.parked() > 0
    }

    /// Wakes an idle worker with no work for it, to take over the I/O
    /// driver a thread gave up (the worker searches, finds nothing and
    /// parks again, in the driver if nobody turns it): never starts one.
    /// While the running workers fill the limit, or a worker searches
    /// (on which a claim would coalesce), the idle worker is unparked
    /// without a claim: back from the park, step 4 parks it again, in the
    /// driver if nobody turns it (it runs queued work only if the limit
    /// has room: I7). Returns whether a worker was woken.
    ///
    /// A worker searching already does not count as coming: it was
    /// kicked, most likely for work, which it runs first. Counted, an
    /// attend that found only the default pool's searcher (a worker just
    /// started for a task that then ran for seconds) woke nobody and
    /// started nobody in a pool with room, and the driver waited for that
    /// task.
    pub(crate) fn wake_idle(&self) -> bool {
        if !self.may_wake_idle() {
            return false;
        }
        let mut wake = WakeQueue::default();
        let woke = {
            let mut st = self.lock();
            // A worker searching: no claim (it would coalesce), and no
            // kick counted (`wake_locked` counts one, and a coalesced one).
            let claim = self.hint.load().searching() == 0;
            let woke = if st.closed {
                false
            } else if claim && self.wake_locked(&mut st, &mut wake) == Some(Kick::Woke) {
                true
            } else if let Some(&slot) = st.idle.last() {
                // The limit is filled, or a worker searches: a spurious
                // wake (I6), not a claim.
                Self::unpark(&mut st, slot, &mut wake);
                true
            } else {
                false
            };
            self.wake_under_lock(&mut wake);
            woke
        };
        self.wake(wake);
        woke
    }

    /// Whether no worker serves the queues: none counted, or every one
    /// counted is in a poll the watchdog granted a replacement for (a hog,
    /// or a poll blocked without `block_in_place`), which will not look at
    /// them soon. A kick that cannot start a worker then hands the pool to
    /// the rescuer (the kernel's mayday: such workers do not count as
    /// running).
    fn none_serving(st: &State) -> bool {
        st.nr_workers <= st.extra
    }

    /// Reserves a slot for a new worker, if the pool may start one now.
    fn reserve(&self, st: &mut State) -> Kick {
        if st.starting || st.nr_workers >= self.config.max_workers + st.extra {
            return Kick::Busy;
        }
        if let Some(at) = st.retry_start_at {
            if Instant::now() < at {
                return if Self::none_serving(st) {
                    Kick::Mayday
                } else {
                    Kick::Busy
                };
            }
            st.retry_start_at = None;
            // `BACKING_OFF` goes: kicks take the lock again.
            self.publish(st, Change::default());
        }
        let free = st.slots.iter().position(|s| s.state == SlotState::Absent);
        let kick = match free {
            Some(slot) => {
                st.slots[slot].state = SlotState::Starting;
                // This start meets any earlier demand.
                st.want_start = false;
                Kick::Start(slot)
            }
            None if st.slots.iter().any(|s| s.state == SlotState::Culled) => {
                // Every free slot is still held by a culled thread on its
                // way out; the first to exit becomes the new worker.
                st.want_start = true;
                Kick::Busy
            }
            // Every slot holds a live worker (blocked ones and the CPU-hog
            // allowance can take the pool past its maximum): no start. If
            // none of them serves the queues (all blocked, or in polls
            // granted a replacement), nobody will run what was queued: the
            // rescuer must.
            None if Self::none_serving(st) => return Kick::Mayday,
            None => return Kick::Busy,
        };
        st.nr_workers += 1;
        st.starting = true;
        self.publish(
            st,
            Change {
                searching: 1,
                workers: 1,
                can_start: Some(false),
                ..Change::default()
            },
        );
        kick
    }

    /// Whether a kick may reserve a slot, as mirrored in the hint.
    /// Not on a hot path: it scans the slots for one a new worker could
    /// take (free, or freed by a culled thread on its way out).
    fn can_start(&self, st: &State) -> bool {
        !st.closed
            && !st.starting
            && st.nr_workers < self.config.max_workers + st.extra
            && st
                .slots
                .iter()
                .any(|s| matches!(s.state, SlotState::Absent | SlotState::Culled))
    }

    /// A reserved worker thread is running; it searches first.
    pub(crate) fn started(&self, slot: usize, thread: Unparker) {
        let mut st = self.lock();
        debug_assert_eq!(st.slots[slot].state, SlotState::Starting);
        st.slots[slot].state = SlotState::Running;
        st.slots[slot].thread = Some(thread);
        st.starting = false;
        st.retry_start_at = None;
        st.counters.workers_created += 1;
        if std::mem::take(&mut st.slots[slot].cm_start) {
            st.counters.cm_wakeups += 1;
        }
        self.publish(
            &st,
            Change {
                can_start: Some(self.can_start(&st)),
                ..Change::default()
            },
        );
    }

    /// The thread for reserved slot `slot` could not be started. Kicks try
    /// no new start for `start_backoff`. Returns what the caller must do
    /// for work that may have been queued meanwhile: `Kick::Mayday` if the
    /// pool is left with no worker, else the outcome of a kick.
    pub(crate) fn start_failed(&self, slot: usize) -> Kick {
        let mut wake = WakeQueue::default();
        let kick = {
            let mut st = self.lock();
            debug_assert_eq!(st.slots[slot].state, SlotState::Starting);
            st.slots[slot].state = SlotState::Absent;
            // Nobody was woken or started for the block that asked.
            st.slots[slot].cm_start = false;
            st.nr_workers -= 1;
            st.starting = false;
            let retry_at = crate::clock::saturating_add(Instant::now(), self.config.start_backoff);
            st.retry_start_at = Some(retry_at);
            // Before the publish that sets `BACKING_OFF`.
            self.retry_at_ns
                .store(nanos_since(self.epoch, retry_at), Ordering::Relaxed);
            let can_start = self.can_start(&st);
            let unsearch = Change {
                searching: -1,
                workers: -1,
                can_start: Some(can_start),
                ..Change::default()
            };
            #[cfg(loom)]
            let late = self
                .failed_start_unsearches_late
                .load(std::sync::atomic::Ordering::Relaxed);
            #[cfg(not(loom))]
            let late = false;
            if !late {
                // The reservation's searcher goes: producers that skipped
                // their kick on it are served below (a wake that still
                // counted it would coalesce on it).
                self.publish(&st, unsearch);
                fence(Ordering::SeqCst);
            }
            let kick = if Self::none_serving(&st) {
                Kick::Mayday
            } else {
                // A kick's wake, never its start: a parked worker if any;
                // else the running ones look before they idle. (A full kick
                // re-reads the clock against the back-off just set: a thread
                // held up past it would be told to start again from inside
                // this failure.)
                self.wake_locked(&mut st, &mut wake).unwrap_or(Kick::Busy)
            };
            if late {
                self.publish(&st, unsearch);
            }
            self.wake_under_lock(&mut wake);
            kick
        };
        self.wake(wake);
        kick
    }

    /// Step 2: becomes a searcher unless half the workers search already.
    pub(crate) fn try_start_searching(&self) -> bool {
        #[cfg(loom)]
        let floor = self.search_floor.load(std::sync::atomic::Ordering::Relaxed);
        #[cfg(not(loom))]
        let floor = super::hint::SEARCH_FLOOR;
        let started = self.hint.try_start_searching(floor);
        if started {
            // The worker's half of I4: counted before its scan.
            fence(Ordering::SeqCst);
        }
        started
    }

    /// Step 2: stops searching; returns whether this was the last searcher,
    /// which must then re-check the queues (I4).
    pub(crate) fn stop_searching(&self) -> bool {
        let last = self.hint.stop_searching();
        // Pairs with the producer's fence in `notify` (I4).
        fence(Ordering::SeqCst);
        last
    }

    /// Step 3. `has_work` is called after the lock is dropped: it reads
    /// every worker's deque (a line each, and a fence each in
    /// crossbeam's `is_empty`), which at 64 workers is microseconds that
    /// kicks, parks and blocks would wait on the lock for.
    pub(crate) fn enter_idle(
        &self,
        slot: usize,
        now: Instant,
        has_work: impl FnOnce() -> bool,
    ) -> Next {
        {
            let mut st = self.lock();
            if st.closed {
                return Next::Exit;
            }
            debug_assert_eq!(st.slots[slot].state, SlotState::Running);
            st.slots[slot].state = SlotState::Idle;
            st.slots[slot].idle_since = now;
            st.idle.push(slot);
            self.publish(
                &st,
                Change {
                    parked: 1,
                    ..Change::default()
                },
            );
        }
        // The worker's half of I3: on the list before the re-check.
        protocol_fence!(self.idle_skips_fence);
        if !has_work() {
            return Next::Park;
        }
        self.work_seen_on_idle(slot)
    }

    /// An idle worker leaves the idle list to run.
    fn leave_idle_list(&self, st: &mut State, slot: usize) {
        remove(&mut st.idle, slot);
        st.slots[slot].state = SlotState::Running;
        // I7, checked where it is kept (the loom models run with debug
        // assertions: a move made without the check above it fails them).
        debug_assert!(
            st.running() <= self.limit(st),
            "I7: a worker left the idle list to run over the limit"
        );
        self.publish(
            st,
            Change {
                parked: -1,
                ..Change::default()
            },
        );
    }

    /// A kicked worker runs (and searches: the kick counted it).
    fn leave_kicked(&self, st: &mut State, slot: usize) {
        let list = if self.config.kicked_list {
            &mut st.kicked
        } else {
            &mut st.idle
        };
        remove(list, slot);
        st.slots[slot].state = SlotState::Running;
        if !self.config.kicked_list {
            // Claimed on the idle list (`claim_idle` left the parked
            // count): it leaves it only now.
            self.publish(
                st,
                Change {
                    parked: -1,
                    ..Change::default()
                },
            );
        }
    }

    /// Step 3's end: the re-check found work that arrived before the
    /// worker was on the idle list. Since the unlock a kick may have
    /// claimed it (it searches: the kick counted it), a cull retired it,
    /// or the pool closed.
    fn work_seen_on_idle(&self, slot: usize) -> Next {
        let mut st = self.lock();
        let limit_filled = st.running() >= self.limit(&st);
        #[cfg(loom)]
        let fault = self
            .culled_always_exits
            .load(std::sync::atomic::Ordering::Relaxed);
        #[cfg(not(loom))]
        let fault = false;
        match st.slots[slot].state {
            SlotState::Kicked => {
                self.leave_kicked(&mut st, slot);
                Next::Search
            }
            SlotState::Idle if st.closed => Next::Exit,
            // With the limit filled by the others, they will look (I5).
            SlotState::Idle if limit_filled => Next::Park,
            SlotState::Idle => {
                self.leave_idle_list(&mut st, slot);
                Next::Run
            }
            // A kick since the cull may have reserved a worker for the
            // first culled thread to exit (`want_start`, counted already):
            // `exit` drafts this one for it. With the workers at their
            // maximum, others are idle: a producer that came before them
            // kicked one, and those that idled after it re-check (I3).
            SlotState::Culled
                if fault
                    || st.closed
                    || limit_filled
                    || st.want_start
                    || st.nr_workers >= self.config.max_workers + st.extra =>
            {
                Next::Exit
            }
            SlotState::Culled => {
                // Culled after it went idle (`idle_timeout` near zero),
                // before its re-check found the work: it stays. The item's
                // producer may have seen it running and kicked nobody
                // (`loom_kick_and_cull_never_strand_an_item` found the
                // item stranded when it exited here).
                // (The cull still counts: a counter never goes down.)
                st.slots[slot].state = SlotState::Running;
                st.nr_workers += 1;
                debug_assert!(
                    st.running() <= self.limit(&st),
                    "I7: a culled worker stayed to run over the limit"
                );
                let can_start = Some(self.can_start(&st));
                self.publish(
                    &st,
                    Change {
                        workers: 1,
                        can_start,
                        ..Change::default()
                    },
                );
                Next::Run
            }
            state => unreachable!("worker {slot} re-checked its queues in state {state:?}"),
        }
    }

    /// Step 4, with a cull pass (step 5) when `cull` is set and the worker
    /// is still idle. Culled workers other than `slot` are queued on `wake`
    /// (unparked before the unlock under [`WakeMode::UnderLock`]; the
    /// caller passes the rest to [`Idle::wake`]).
    ///
    /// `look_first`: the park ended with no wakeup (a driver turn, a
    /// timeout), so the worker is most likely still idle, and `has_work` is
    /// called before the lock is taken: in a wide pool the look is
    /// O(workers) fenced loads (every deque), which held the lock against
    /// every kick of the pool once per driver turn. Nothing is lost by
    /// looking first: the worker is on the idle list (I3 was settled at
    /// `enter_idle`), so work queued after the look kicks under the lock.
    /// Otherwise (woken: most likely claimed, `Kicked`, which needs no
    /// look) the look is made under the lock, only if still idle.
    pub(crate) fn leave_idle(
        &self,
        slot: usize,
        now: Instant,
        cull: bool,
        look_first: bool,
        has_work: impl FnOnce() -> bool,
        wake: &mut WakeQueue,
    ) -> Next {
        let mut has_work = Some(has_work);
        let looked = if look_first {
            has_work.take().map(|look| look())
        } else {
            None
        };
        let mut st = self.lock();
        match st.slots[slot].state {
            SlotState::Kicked => {
                self.leave_kicked(&mut st, slot);
                Next::Search
            }
            SlotState::Idle if st.closed => Next::Exit,
            SlotState::Idle => {
                let work = looked.or_else(|| has_work.take().map(|look| look()));
                let next = if work == Some(true) && st.running() < self.limit(&st) {
                    self.leave_idle_list(&mut st, slot);
                    Next::Run
                } else if cull && self.cull(&mut st, now, slot, wake) {
                    Next::Exit
                } else {
                    Next::Park
                };
                self.wake_under_lock(wake);
                next
            }
            SlotState::Culled => Next::Exit,
            state => unreachable!("worker {slot} came back from park in state {state:?}"),
        }
    }

    /// Step 5 on behalf of a timer or a test: cull what is due at `now`.
    #[cfg(test)]
    pub(crate) fn cull_now(&self, now: Instant) -> WakeQueue {
        let mut wake = WakeQueue::default();
        let mut st = self.lock();
        self.cull(&mut st, now, usize::MAX, &mut wake);
        wake
    }

    /// Step 6. Returns `Next::Search` when the exiting thread was drafted to
    /// be the worker a kick could not start.
    pub(crate) fn exit(&self, slot: usize) -> Next {
        let mut st = self.lock();
        let state = st.slots[slot].state;
        let mut change = Change::default();
        match state {
            SlotState::Idle => {
                remove(&mut st.idle, slot);
                change.parked = -1;
            }
            SlotState::Kicked => {
                let list = if self.config.kicked_list {
                    &mut st.kicked
                } else {
                    &mut st.idle
                };
                remove(list, slot);
                change.searching = -1;
                change.parked = if self.config.kicked_list { 0 } else { -1 };
            }
            _ => {}
        }
        if matches!(
            state,
            SlotState::Running | SlotState::Idle | SlotState::Kicked
        ) {
            st.nr_workers -= 1;
            change.workers = -1;
        }
        if st.want_start && !st.closed {
            // Drafted (only a culled thread, not counted, exits while the
            // pool is open): the reservation, already counted in
            // `nr_workers` and as a searcher, becomes this thread.
            st.want_start = false;
            st.starting = false;
            st.slots[slot].state = SlotState::Running;
            st.counters.workers_created += 1;
            change.can_start = Some(self.can_start(&st));
            self.publish(&st, change);
            return Next::Search;
        }
        #[cfg(loom)]
        let kept = self
            .closed_reservation_kept
            .load(std::sync::atomic::Ordering::Relaxed);
        #[cfg(not(loom))]
        let kept = false;
        if std::mem::take(&mut st.want_start) && !kept {
            // Closed since the reservation: no thread will take it up, and
            // its counts go with it (they stayed for good, a searching
            // worker that never was).
            st.starting = false;
            st.nr_workers -= 1;
            change.workers -= 1;
            change.searching -= 1;
        }
        st.slots[slot].state = SlotState::Absent;
        st.slots[slot].thread = None;
        change.can_start = Some(self.can_start(&st));
        self.publish(&st, change);
        Next::Exit
    }

    /// Step 7: the running worker in `slot` is about to block its thread
    /// (or, not `blocks`, to run a CPU-intensive poll). It stops counting
    /// against the maximum; if `has_work` (called after the unlock: it
    /// looks at every worker's deque, O(workers) fenced loads a wide pool's
    /// lock must not be held across), another worker is kicked (a
    /// `cm_wakeup` if it `blocks`). Returns that kick's outcome
    /// (`Kick::Busy` if nothing was queued).
    pub(crate) fn block(&self, slot: usize, blocks: bool, has_work: impl FnOnce() -> bool) -> Kick {
        {
            let mut st = self.lock();
            debug_assert_eq!(st.slots[slot].state, SlotState::Running);
            st.slots[slot].state = SlotState::Blocked;
            st.slots[slot].computing = !blocks;
            st.nr_workers -= 1;
            // A hog allowance this slot's poll holds is given up: blocking
            // takes the worker out of the count already, and both would
            // let the pool run two workers beyond its maximum.
            if std::mem::take(&mut st.slots[slot].granted) {
                st.extra -= 1;
            }
            let can_start = self.can_start(&st);
            self.publish(
                &st,
                Change {
                    workers: -1,
                    can_start: Some(can_start),
                    ..Change::default()
                },
            );
        }
        // The worker's half of I3/I4 as in `enter_idle`: the published
        // change before the look at the queues (an RMW alone does not
        // order a later load on every architecture; crossbeam's SeqCst
        // `is_empty` happened to). A producer that pushed meanwhile either
        // is seen here, or sees this worker out of the count and kicks.
        protocol_fence!(self.block_skips_fence);
        if !has_work() {
            return Kick::Busy;
        }
        self.kick_for_work_seen(blocks)
    }

    /// A block's or a grant's kick for the work its look (after the
    /// unlock) found: under the lock, as a producer's (a kick since the
    /// look may have claimed a worker: coalesced then); none on a closed
    /// pool. `cm`: a worker it wakes is a `cm_wakeup` now, one it starts
    /// once its thread runs ([`Slot::cm_start`]).
    fn kick_for_work_seen(&self, cm: bool) -> Kick {
        let mut wake = WakeQueue::default();
        let kick = {
            let mut st = self.lock();
            let kick = if st.closed {
                Kick::Busy
            } else {
                self.kick_locked(&mut st, &mut wake)
            };
            if cm {
                match kick {
                    Kick::Woke => st.counters.cm_wakeups += 1,
                    Kick::Start(slot) => st.slots[slot].cm_start = true,
                    _ => {}
                }
            }
            self.wake_under_lock(&mut wake);
            kick
        };
        self.wake(wake);
        kick
    }

    /// Step 7: the worker in `slot` is back from blocking and counts again.
    /// Returns whether the running workers are now over the limit: the
    /// worker then tries to step down after its poll (step 9).
    pub(crate) fn unblock(&self, slot: usize) -> bool {
        let mut st = self.lock();
        debug_assert_eq!(st.slots[slot].state, SlotState::Blocked);
        st.slots[slot].state = SlotState::Running;
        st.nr_workers += 1;
        let can_start = self.can_start(&st);
        self.publish(
            &st,
            Change {
                workers: 1,
                can_start: Some(can_start),
                ..Change::default()
            },
        );
        st.running() > self.limit(&st)
    }

    /// Step 9: the running worker in `slot`, between two polls, found the
    /// pool over its limit. `Park` if the others running still fill the
    /// limit (it is on the idle list then, and parks without a re-check:
    /// they look before they idle, I5); `Run` if not (or if the pool is
    /// closed: the worker's loop sees it). The worker's LIFO slot must be
    /// empty (no other worker looks there).
    pub(crate) fn step_down(&self, slot: usize, now: Instant) -> Next {
        let mut st = self.lock();
        debug_assert_eq!(st.slots[slot].state, SlotState::Running);
        if st.closed || st.running() <= self.limit(&st) {
            return Next::Run;
        }
        st.slots[slot].state = SlotState::Idle;
        st.slots[slot].idle_since = now;
        st.idle.push(slot);
        st.counters.stepped_down += 1;
        self.publish(
            &st,
            Change {
                parked: 1,
                ..Change::default()
            },
        );
        Next::Park
    }

    /// Step 8: the watchdog found the poll running in `slot` longer than
    /// the CPU-hog threshold, using its CPU (`on_cpu`, counted as
    /// `cpu_intensive`) or blocking its thread. The pool may start one
    /// worker more than its maximum until [`Idle::revoke_hog`], and is
    /// kicked if `has_work` (called after the unlock, as in [`Idle::block`];
    /// a kick that wakes or starts a worker for a blocked poll is a
    /// `cm_wakeup`). `None` if the
    /// worker is not running a task as a counted worker (blocked already,
    /// or gone).
    pub(crate) fn grant_hog(
        &self,
        slot: usize,
        on_cpu: bool,
        has_work: impl FnOnce() -> bool,
    ) -> Option<Kick> {
        self.grant(slot, on_cpu, true, has_work)
    }

    /// Step 8 again for a poll whose allowance a `block_in_place` gave up
    /// (step 7) and that came back still running: the allowance is taken
    /// again, the poll not counted again as `cpu_intensive`.
    pub(crate) fn regrant_hog(
        &self,
        slot: usize,
        on_cpu: bool,
        has_work: impl FnOnce() -> bool,
    ) -> Option<Kick> {
        self.grant(slot, on_cpu, false, has_work)
    }

    fn grant(
        &self,
        slot: usize,
        on_cpu: bool,
        count: bool,
        has_work: impl FnOnce() -> bool,
    ) -> Option<Kick> {
        {
            let mut st = self.lock();
            if st.closed || st.slots[slot].state != SlotState::Running || st.slots[slot].granted {
                return None;
            }
            st.extra += 1;
            st.slots[slot].granted = true;
            if on_cpu && count {
                st.counters.cpu_intensive += 1;
            }
            let can_start = self.can_start(&st);
            self.publish(
                &st,
                Change {
                    can_start: Some(can_start),
                    ..Change::default()
                },
            );
        }
        // As in `block`: the published change before the look at the
        // queues (a producer that read the pool full before it skipped its
        // kick: `loom_a_push_racing_a_grant_is_served`), and the look
        // after the unlock (every worker's deque: O(workers) fenced loads
        // a wide pool's lock must not be held across).
        protocol_fence!(self.grant_skips_fence);
        if !has_work() {
            return Some(Kick::Busy);
        }
        Some(self.kick_for_work_seen(!on_cpu))
    }

    /// Step 8: the poll a grant was for has ended.
    pub(crate) fn revoke_hog(&self, slot: usize) {
        let mut st = self.lock();
        // Given up already if the poll blocked meanwhile (`block`).
        if std::mem::take(&mut st.slots[slot].granted) {
            st.extra -= 1;
        }
        let can_start = self.can_start(&st);
        self.publish(
            &st,
            Change {
                can_start: Some(can_start),
                ..Change::default()
            },
        );
    }

    /// Shuts the pool: no kick succeeds after this, and every worker is
    /// woken so it sees `closed` and exits: under [`WakeMode::UnderLock`]
    /// before the unlock, else queued on the returned wake queue (for
    /// [`Idle::wake`]).
    pub(crate) fn close(&self) -> WakeQueue {
        let mut wake = WakeQueue::default();
        let mut st = self.lock();
        st.closed = true;
        // Every later notify takes the lock and sees `closed`.
        self.publish(
            &st,
            Change {
                closed: true,
                can_start: Some(false),
                ..Change::default()
            },
        );
        for slot in st.slots.iter() {
            if let Some(thread) = &slot.thread {
                wake.push(thread.clone());
            }
        }
        self.wake_under_lock(&mut wake);
        drop(st);
        // Pairs with the fence in `notify`: a producer that skipped the
        // lock pushed before its fence, so the caller's drain, after this
        // one, sees its item (`loom_a_push_racing_close_is_taken_once`).
        protocol_fence!(self.close_skips_fence);
        wake
    }

    /// Workers that serve the queues now ([`Idle::none_serving`]): those
    /// counted, less those a CPU-hog allowance lets in beyond them. Not
    /// through [`Idle::snapshot`], whose walk of every slot and copy of
    /// the counters the rescuer made before each task it ran, under the
    /// lock a blocked worker needs to come back.
    pub(crate) fn serving(&self) -> usize {
        let st = lock(&self.state);
        st.nr_workers.saturating_sub(st.extra)
    }

    /// A consistent copy of the lists' sizes and the counters.
    pub(crate) fn snapshot(&self) -> IdleSnapshot {
        let st = lock(&self.state);
        let (mut blocked, mut computing) = (0, 0);
        for s in st.slots.iter().filter(|s| s.state == SlotState::Blocked) {
            if s.computing {
                computing += 1;
            } else {
                blocked += 1;
            }
        }
        IdleSnapshot {
            nr_workers: st.nr_workers,
            nr_granted: st.extra,
            nr_idle: st.idle.len(),
            nr_kicked: st.kicked.len(),
            nr_blocked: blocked,
            nr_computing: computing,
            nr_searching: self.hint.load().searching(),
            counters: st.counters,
        }
    }

    /// The hint word now (tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn hint(&self) -> Hint {
        self.hint.load()
    }

    /// The state of slot `slot` (tests).
    #[cfg(test)]
    pub(crate) fn slot_state(&self, slot: usize) -> SlotState {
        lock(&self.state).slots[slot].state
    }

    /// The kernel's `too_many_workers()`. Kicked workers are idle too until
    /// they run, as in the kernel.
    fn too_many_workers(&self, st: &State) -> bool {
        let nr_idle = st.idle.len() + st.kicked.len();
        let nr_busy = st.nr_workers - nr_idle;
        let min_idle = self.config.min_idle;
        nr_idle > min_idle && (nr_idle - min_idle) * 4 >= nr_busy
    }

    /// Culls from the idle list only (I2). Returns whether `me` was culled.
    fn cull(&self, st: &mut State, now: Instant, me: usize, wake: &mut WakeQueue) -> bool {
        let mut me_culled = false;
        let mut change = Change::default();
        while self.too_many_workers(st) {
            let Some(&oldest) = st.idle.first() else {
                break;
            };
            if now.saturating_duration_since(st.slots[oldest].idle_since) < self.config.idle_timeout
            {
                break;
            }
            st.idle.remove(0);
            if st.slots[oldest].state == SlotState::Kicked {
                // Only without the kicked list (the pre-patch kernel): the
                // kick's claim is lost with the worker. This is the race
                // the kicked list closes.
                change.searching -= 1;
            }
            st.slots[oldest].state = SlotState::Culled;
            st.nr_workers -= 1;
            change.parked -= 1;
            change.workers -= 1;
            st.counters.workers_culled += 1;
            if oldest == me {
                me_culled = true;
            } else if let Some(thread) = &st.slots[oldest].thread {
                wake.push(thread.clone());
            }
        }
        if change.workers != 0 {
            change.can_start = Some(self.can_start(st));
            self.publish(st, change);
        }
        me_culled
    }
}

/// Nanoseconds from `epoch` to `t` (0 before it, `u64::MAX` past 584
/// years).
fn nanos_since(epoch: Instant, t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

fn remove(list: &mut Vec<usize>, slot: usize) {
    let pos = list
        .iter()
        .position(|&w| w == slot)
        .expect("worker is on the list its state names");
    list.remove(pos);
}

/// Sizes and counters of a pool's lists at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct IdleSnapshot {
    pub(crate) nr_workers: usize,
    /// Of those, the ones in a poll granted a replacement (`extra`).
    pub(crate) nr_granted: usize,
    pub(crate) nr_idle: usize,
    pub(crate) nr_kicked: usize,
    /// Out of the count in `block_in_place`.
    pub(crate) nr_blocked: usize,
    /// Out of the count in a CPU-intensive poll.
    pub(crate) nr_computing: usize,
    pub(crate) nr_searching: usize,
    pub(crate) counters: LockedCounters,
}

impl fmt::Debug for Idle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idle")
            .field("config", &self.config)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;
