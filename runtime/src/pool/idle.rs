//! The kick / idle / cull protocol of one worker pool.
//!
//! This is the part of a pool that decides which worker runs newly queued
//! work, when a worker may sleep, and when it may be retired. It mirrors the
//! kernel's `kick_pool()`, `worker_enter_idle()`, `worker_leave_idle()` and
//! `idle_cull_fn()` with the seed patches applied: the **kicked list** and the
//! **deferred wakeup**. It knows nothing of tasks: the queues are seen only
//! through a `has_work` closure, so the same code is model-checked by loom
//! with a toy queue (`loom_tests` below) and runs the real pools.
//!
//! # State (all under the pool lock, `Idle::state`)
//!
//! Each worker slot is `Absent`, `Busy`, `Idle`, `Kicked` or `Culled`.
//! - `idle`: the idle list, a stack of `Idle` workers, most recently idle
//!   last. A kick takes the last one (LIFO: the cache-hot one), a cull the
//!   first one (the oldest).
//! - `kicked`: the kicked list, workers a kick has claimed that have not run
//!   yet.
//! - `nr_workers`: workers that count against the pool's maximum: `Busy`,
//!   `Idle` and `Kicked` slots (a reserved slot whose thread is being created
//!   is `Busy`). `Culled` slots are being retired and do not count.
//!
//! # Invariants
//! - **I1** a slot is on the idle list iff it is `Idle`, on the kicked list
//!   iff it is `Kicked` (with the kicked list disabled, kicked workers stay
//!   `Idle` on the idle list: the pre-patch kernel, for the model test).
//! - **I2** a cull takes workers only from the idle list, so a kicked worker
//!   is never culled.
//! - **I3** (no lost wakeup) a producer pushes its item *before* it takes the
//!   lock to kick; a worker re-checks the queues *after* it put itself on the
//!   idle list, under the same lock. Whichever takes the lock second sees the
//!   other: the worker sees the item, or the producer sees the idle worker.
//! - **I4** (no stranded item) after a kick, some worker that has not yet
//!   looked at the queues will look: a `Kicked` worker (never culled, I2), a
//!   `Busy` one being created, or, when the pool is at its maximum, every
//!   worker is `Busy` and each re-checks the queues before it idles (I3).
//! - **I5** a worker's unparker is held (an `Arc` inside [`Thread`]) for as
//!   long as it is in a wake queue; a duplicate or late unpark is harmless.
//!
//! # Steps
//! 1. **Kick** (a producer after pushing; a worker starting an item while
//!    more are queued, the kernel's chaining). Fast path: if the `may_kick`
//!    hint (idle workers + room to create one, written under the lock) reads
//!    zero after a `SeqCst` fence, every worker is busy or kicked and will
//!    see the work (I3/I4): skip. The worker side stores the hint, fences,
//!    then re-checks the queues in step 2. Otherwise lock. `first_idle_worker` looks
//!    at the kicked list first: a worker there is already on its way, the
//!    kick is *coalesced* and costs no unpark. Else the last idle worker moves
//!    to the kicked list and its unparker is taken: unparked before the
//!    unlock (`UnderLock`) or after it (`Deferred`). With no idle worker and
//!    the pool under its maximum, a slot is reserved (`Busy`) and the caller
//!    creates the thread after the unlock; only one creation is in flight at
//!    a time (the new worker's own chaining kick creates the next).
//! 2. **Enter idle** (a worker that found no work). Lock; move to the idle
//!    list, stamp `idle_since`; re-check the queues (I3): if there is work,
//!    leave the list again and go back to work. Unlock; the worker may spin
//!    a little, then parks.
//! 3. **Wake** (a worker back from park, or a spinning worker that saw
//!    work). Lock. `Kicked` or `Idle`: leave whichever list it is on and run
//!    (an `Idle` worker with no work to do stays idle, and first runs a cull
//!    pass if asked to). `Culled`: exit.
//! 4. **Cull** (an idle worker whose idle timeout elapsed, under the lock):
//!    while there are too many workers (`nr_idle > min_idle && (nr_idle -
//!    min_idle) * 4 >= nr_busy`, `min_idle` = 2 as the kernel's) and the
//!    oldest idle worker has been idle for `idle_timeout`, it leaves the idle
//!    list as `Culled` and is unparked after the unlock to exit.
//! 5. **Exit** (a culled worker, or any worker at shutdown). Lock; the slot
//!    becomes `Absent`. If a kick could not create a worker because every
//!    free slot was still held by exiting threads, the exiting thread takes
//!    the reservation and becomes the new worker instead.

use std::fmt;
use std::time::{Duration, Instant};

use crate::WakeMode;
use crate::loom::lock;
use crate::loom::sync::Mutex;
use crate::loom::sync::atomic::{AtomicUsize, Ordering, fence};
use crate::loom::thread::Thread;
use crate::wake::WakeQueue;

/// What a pool's protocol is configured with.
#[derive(Clone, Debug)]
pub(crate) struct IdleConfig {
    pub(crate) max_workers: usize,
    pub(crate) idle_timeout: Duration,
    /// Idle workers always kept (the kernel keeps 2).
    pub(crate) min_idle: usize,
    pub(crate) wake_mode: WakeMode,
    /// Off only in model tests: the seed's race must then be found.
    pub(crate) kicked_list: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotState {
    Absent,
    Busy,
    Idle,
    Kicked,
    Culled,
}

struct Slot {
    state: SlotState,
    idle_since: Instant,
    thread: Option<Thread>,
}

/// Counters kept under the pool lock, where the events happen anyway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LockedCounters {
    pub(crate) kicks: u64,
    pub(crate) coalesced_kicks: u64,
    pub(crate) unparks: u64,
    pub(crate) workers_created: u64,
    pub(crate) workers_culled: u64,
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
    creating: bool,
    /// A kick found no free slot (all held by exiting threads).
    want_create: bool,
    closed: bool,
    counters: LockedCounters,
}

/// The outcome of [`Idle::kick`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kick {
    /// An idle worker was claimed and unparked.
    Woke,
    /// A worker already on the kicked list will see the work.
    Coalesced,
    /// Slot reserved: the caller must start a worker thread for it and call
    /// [`Idle::started`] from it, or [`Idle::create_failed`].
    Create(usize),
    /// Every worker is busy (or one is being created) and will look at the
    /// queues before it idles.
    Busy,
    /// The pool is shut down: the caller drops what it queued.
    Closed,
}

/// The outcome of [`Idle::enter_idle`] and [`Idle::wake`].
#[must_use]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Go (back) to work.
    Run,
    /// Stay idle: park.
    Park,
    /// Leave: culled, or the pool is shut down. Call [`Idle::exit`].
    Exit,
}

/// A pool's worker lists under its lock. See the module docs.
pub(crate) struct Idle {
    state: Mutex<State>,
    config: IdleConfig,
    /// `idle.len()` mirrored for lock-free hints (chaining kicks). Written
    /// under the lock; readers act on it only as a hint, never for
    /// correctness, so `Relaxed` suffices.
    nr_idle_hint: AtomicUsize,
}

impl Idle {
    pub(crate) fn new(config: IdleConfig) -> Idle {
        assert!(config.max_workers > 0, "a pool needs at least one worker");
        let now = Instant::now();
        let slots = (0..config.max_workers)
            .map(|_| Slot {
                state: SlotState::Absent,
                idle_since: now,
                thread: None,
            })
            .collect();
        Idle {
            state: Mutex::new(State {
                slots,
                idle: Vec::with_capacity(config.max_workers),
                kicked: Vec::with_capacity(config.max_workers),
                nr_workers: 0,
                creating: false,
                want_create: false,
                closed: false,
                counters: LockedCounters::default(),
            }),
            config,
            // No worker yet, room for one: a kick would create it.
            nr_idle_hint: AtomicUsize::new(1),
        }
    }

    /// Takes the pool lock for a protocol step, counting the acquisition
    /// (and whether it had to wait) in the locked counters.
    fn lock(&self) -> crate::loom::sync::MutexGuard<'_, State> {
        let mut st = match self.state.try_lock() {
            Ok(st) => st,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                let mut st = lock(&self.state);
                st.counters.lock_contended += 1;
                st
            }
        };
        st.counters.lock_acquisitions += 1;
        st
    }

    pub(crate) fn config(&self) -> &IdleConfig {
        &self.config
    }

    /// Whether a kick could do anything now (an idle worker, room for a new
    /// one, or a closed pool to drain). A hint: stale by the time it is read.
    pub(crate) fn may_kick(&self) -> bool {
        self.nr_idle_hint.load(Ordering::Relaxed) > 0
    }

    /// Step 1 with its fast path: when no worker is idle and none can be
    /// created, every worker is busy or kicked and will look at the queues
    /// before it idles (I3, I4), so the kick is skipped without the lock.
    /// Call after the work is visible in the queues.
    ///
    /// The hint is read after a `SeqCst` fence that pairs with the one in
    /// [`Idle::enter_idle`] (a Dekker pair): either this load sees the
    /// worker's hint store, or that worker's re-check sees our push.
    pub(crate) fn kick_if_needed(&self) -> Kick {
        fence(Ordering::SeqCst);
        if self.nr_idle_hint.load(Ordering::Relaxed) == 0 {
            return Kick::Busy;
        }
        self.kick()
    }

    /// Step 1. Call after the work is visible in the queues.
    pub(crate) fn kick(&self) -> Kick {
        let mut wake = None;
        let outcome = {
            let mut st = self.lock();
            if st.closed {
                return Kick::Closed;
            }
            st.counters.kicks += 1;
            let outcome = match st.first_idle_worker(self.config.kicked_list) {
                Some(id) if st.slots[id].state == SlotState::Kicked => {
                    st.counters.coalesced_kicks += 1;
                    Kick::Coalesced
                }
                Some(id) => {
                    if self.config.kicked_list {
                        let last = st.idle.pop();
                        debug_assert_eq!(last, Some(id));
                        st.kicked.push(id);
                        st.slots[id].state = SlotState::Kicked;
                        self.sync_hint(&st);
                    }
                    st.counters.unparks += 1;
                    let thread = st.slots[id]
                        .thread
                        .clone()
                        .expect("idle worker has a thread");
                    match self.config.wake_mode {
                        // The seed's baseline: the wakeup happens inside the
                        // critical section.
                        WakeMode::UnderLock => thread.unpark(),
                        WakeMode::Deferred => wake = Some(thread),
                    }
                    Kick::Woke
                }
                None => st.reserve(self.config.max_workers),
            };
            self.sync_hint(&st);
            outcome
        };
        // Deferred: the lock is released, now wake (I5: `wake` holds the Arc).
        if let Some(thread) = wake {
            thread.unpark();
        }
        outcome
    }

    /// A reserved worker thread is running.
    pub(crate) fn started(&self, id: usize, thread: Thread) {
        let mut st = self.lock();
        debug_assert_eq!(st.slots[id].state, SlotState::Busy);
        st.slots[id].thread = Some(thread);
        st.creating = false;
        st.counters.workers_created += 1;
        self.sync_hint(&st);
    }

    /// The thread for reserved slot `id` could not be created. Returns
    /// whether the pool is left without any worker (nobody would look at
    /// its queue: the caller sends a mayday, see `runtime::rescuer`).
    pub(crate) fn create_failed(&self, id: usize) -> bool {
        let mut st = self.lock();
        st.slots[id].state = SlotState::Absent;
        st.nr_workers -= 1;
        st.creating = false;
        self.sync_hint(&st);
        st.nr_workers == 0
    }

    /// Step 2. `has_work` is called under the lock.
    pub(crate) fn enter_idle(
        &self,
        id: usize,
        now: Instant,
        has_work: impl FnOnce() -> bool,
    ) -> Next {
        let mut st = self.lock();
        if st.closed {
            return Next::Exit;
        }
        debug_assert_eq!(st.slots[id].state, SlotState::Busy);
        st.slots[id].state = SlotState::Idle;
        st.slots[id].idle_since = now;
        st.idle.push(id);
        self.sync_hint(&st);
        // Pairs with the fence in `kick_if_needed`: a producer that skipped
        // the lock pushed before its fence, so this re-check sees the item.
        fence(Ordering::SeqCst);
        if has_work() {
            // I3: the item arrived before we were on the list; take it.
            st.idle.pop();
            st.slots[id].state = SlotState::Busy;
            self.sync_hint(&st);
            return Next::Run;
        }
        Next::Park
    }

    /// Step 3, with step 4 when `cull` is set and the worker is still idle.
    /// Culled workers other than `id` are queued on `wake`.
    pub(crate) fn wake(
        &self,
        id: usize,
        now: Instant,
        cull: bool,
        has_work: impl FnOnce() -> bool,
        wake: &mut WakeQueue,
    ) -> Next {
        let mut st = self.lock();
        let next = match st.slots[id].state {
            SlotState::Kicked => {
                remove(&mut st.kicked, id);
                st.slots[id].state = SlotState::Busy;
                Next::Run
            }
            SlotState::Idle if st.closed => Next::Exit,
            SlotState::Idle => {
                if has_work() {
                    remove(&mut st.idle, id);
                    st.slots[id].state = SlotState::Busy;
                    Next::Run
                } else if cull && st.cull(&self.config, now, id, wake) {
                    Next::Exit
                } else {
                    Next::Park
                }
            }
            SlotState::Culled => Next::Exit,
            state @ (SlotState::Busy | SlotState::Absent) => {
                unreachable!("worker {id} woke in state {state:?}")
            }
        };
        self.sync_hint(&st);
        next
    }

    /// Step 4 on behalf of a timer or a test: cull what is due at `now`.
    #[cfg(any(test, loom))]
    pub(crate) fn cull_now(&self, now: Instant) -> WakeQueue {
        let mut wake = WakeQueue::default();
        let mut st = self.lock();
        st.cull(&self.config, now, usize::MAX, &mut wake);
        self.sync_hint(&st);
        wake
    }

    /// Step 5. Returns `Next::Run` when the exiting thread was drafted to be
    /// the worker a kick could not create.
    pub(crate) fn exit(&self, id: usize) -> Next {
        let mut st = self.lock();
        match st.slots[id].state {
            SlotState::Idle => remove(&mut st.idle, id),
            SlotState::Kicked => remove(&mut st.kicked, id),
            _ => {}
        }
        if matches!(
            st.slots[id].state,
            SlotState::Busy | SlotState::Idle | SlotState::Kicked
        ) {
            st.nr_workers -= 1;
        }
        if st.want_create && !st.closed && st.nr_workers < self.config.max_workers {
            st.want_create = false;
            st.nr_workers += 1;
            st.slots[id].state = SlotState::Busy;
            st.counters.workers_created += 1;
            self.sync_hint(&st);
            return Next::Run;
        }
        st.slots[id].state = SlotState::Absent;
        st.slots[id].thread = None;
        self.sync_hint(&st);
        Next::Exit
    }

    /// Shuts the pool: no kick succeeds after this, and every worker is
    /// queued on the returned wake queue so it sees `closed` and exits.
    pub(crate) fn close(&self) -> WakeQueue {
        let mut wake = WakeQueue::default();
        let mut st = self.lock();
        st.closed = true;
        // Every later kick takes the lock and sees `closed`.
        self.sync_hint(&st);
        for slot in st.slots.iter() {
            if let Some(thread) = &slot.thread {
                wake.push(thread.clone());
            }
        }
        drop(st);
        // Pairs with the fence in `kick_if_needed`: a producer that still
        // skipped the lock pushed before its fence, so the caller's drain,
        // after this one, sees its item.
        fence(Ordering::SeqCst);
        wake
    }

    /// A consistent copy of the lists' sizes and the counters.
    pub(crate) fn snapshot(&self) -> IdleSnapshot {
        let st = lock(&self.state);
        IdleSnapshot {
            nr_workers: st.nr_workers,
            nr_idle: st.idle.len(),
            nr_kicked: st.kicked.len(),
            counters: st.counters,
        }
    }

    /// The state of slot `id` (tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn slot_state(&self, id: usize) -> SlotState {
        lock(&self.state).slots[id].state
    }

    /// Refreshes the `may_kick` hint; called at the end of every change
    /// under the lock.
    fn sync_hint(&self, st: &State) {
        let can_create = !st.creating && st.nr_workers < self.config.max_workers;
        let may = if st.closed {
            usize::MAX
        } else {
            st.idle.len() + usize::from(can_create)
        };
        self.nr_idle_hint.store(may, Ordering::Relaxed);
    }
}

impl State {
    /// The kernel's `first_idle_worker()` with the seed's 1/4 patch: an
    /// already kicked worker first, so back-to-back kicks coalesce.
    fn first_idle_worker(&self, kicked_list: bool) -> Option<usize> {
        if kicked_list && let Some(&id) = self.kicked.last() {
            return Some(id);
        }
        self.idle.last().copied()
    }

    fn reserve(&mut self, max_workers: usize) -> Kick {
        if self.creating || self.nr_workers >= max_workers {
            return Kick::Busy;
        }
        match self.slots.iter().position(|s| s.state == SlotState::Absent) {
            Some(id) => {
                self.slots[id].state = SlotState::Busy;
                self.nr_workers += 1;
                self.creating = true;
                // This creation meets any earlier demand.
                self.want_create = false;
                Kick::Create(id)
            }
            None => {
                // Every free slot is still held by a culled thread on its
                // way out; the first to exit becomes the new worker.
                self.want_create = true;
                Kick::Busy
            }
        }
    }

    /// The kernel's `too_many_workers()`. Kicked workers are idle too until
    /// they run, as in the kernel.
    fn too_many_workers(&self, min_idle: usize) -> bool {
        let nr_idle = self.idle.len() + self.kicked.len();
        let nr_busy = self.nr_workers - nr_idle;
        nr_idle > min_idle && (nr_idle - min_idle) * 4 >= nr_busy
    }

    /// Culls from the idle list only (I2). Returns whether `me` was culled.
    fn cull(&mut self, config: &IdleConfig, now: Instant, me: usize, wake: &mut WakeQueue) -> bool {
        let mut me_culled = false;
        while self.too_many_workers(config.min_idle) {
            let Some(&oldest) = self.idle.first() else {
                break;
            };
            let slot = &self.slots[oldest];
            if now.saturating_duration_since(slot.idle_since) < config.idle_timeout {
                break;
            }
            self.idle.remove(0);
            self.slots[oldest].state = SlotState::Culled;
            self.nr_workers -= 1;
            self.counters.workers_culled += 1;
            if oldest == me {
                me_culled = true;
            } else if let Some(thread) = &self.slots[oldest].thread {
                wake.push(thread.clone());
            }
        }
        me_culled
    }
}

fn remove(list: &mut Vec<usize>, id: usize) {
    let pos = list
        .iter()
        .position(|&w| w == id)
        .expect("worker is on the list its state names");
    list.remove(pos);
}

/// Sizes and counters of a pool's lists at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct IdleSnapshot {
    pub(crate) nr_workers: usize,
    pub(crate) nr_idle: usize,
    pub(crate) nr_kicked: usize,
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
mod tests {
    use super::*;

    fn config(max_workers: usize) -> IdleConfig {
        IdleConfig {
            max_workers,
            idle_timeout: Duration::from_secs(300),
            min_idle: 2,
            wake_mode: WakeMode::Deferred,
            kicked_list: true,
        }
    }

    /// Starts `n` workers (slots 0..n) and idles them in order.
    fn idle_workers(idle: &Idle, n: usize, now: Instant) {
        for _ in 0..n {
            let Kick::Create(id) = idle.kick() else {
                panic!("expected a creation")
            };
            idle.started(id, std::thread::current());
        }
        for id in 0..n {
            assert_eq!(idle.enter_idle(id, now, || false), Next::Park);
        }
    }

    #[test]
    fn kick_takes_the_most_recently_idle_worker_and_coalesces() {
        let idle = Idle::new(config(4));
        let now = Instant::now();
        idle_workers(&idle, 3, now);
        assert_eq!(idle.kick(), Kick::Woke);
        assert_eq!(
            idle.slot_state(2),
            SlotState::Kicked,
            "LIFO: last idled first"
        );
        assert_eq!(idle.kick(), Kick::Coalesced);
        assert_eq!(idle.slot_state(1), SlotState::Idle);
        let snap = idle.snapshot();
        assert_eq!((snap.nr_idle, snap.nr_kicked), (2, 1));
        assert_eq!(snap.counters.unparks, 1);
        assert_eq!(snap.counters.coalesced_kicks, 1);
        let mut wq = WakeQueue::default();
        assert_eq!(idle.wake(2, now, true, || true, &mut wq), Next::Run);
        assert_eq!(idle.slot_state(2), SlotState::Busy);
        // The next kick claims the next idle worker.
        assert_eq!(idle.kick(), Kick::Woke);
        assert_eq!(idle.slot_state(1), SlotState::Kicked);
    }

    #[test]
    fn creation_is_one_at_a_time_up_to_the_maximum() {
        let idle = Idle::new(config(2));
        let Kick::Create(a) = idle.kick() else {
            panic!()
        };
        assert_eq!(idle.kick(), Kick::Busy, "one creation in flight");
        idle.started(a, std::thread::current());
        let Kick::Create(b) = idle.kick() else {
            panic!()
        };
        assert_ne!(a, b);
        idle.started(b, std::thread::current());
        assert_eq!(idle.kick(), Kick::Busy, "at the maximum");
        idle.create_failed(b);
        assert_eq!(idle.snapshot().nr_workers, 1);
    }

    #[test]
    fn enter_idle_rechecks_the_queues() {
        let idle = Idle::new(config(1));
        let Kick::Create(a) = idle.kick() else {
            panic!()
        };
        idle.started(a, std::thread::current());
        assert_eq!(idle.enter_idle(a, Instant::now(), || true), Next::Run);
        assert_eq!(idle.slot_state(a), SlotState::Busy);
        assert_eq!(idle.snapshot().nr_idle, 0);
    }

    #[test]
    fn cull_keeps_two_idle_plus_a_quarter_of_the_busy_and_never_the_kicked() {
        let mut cfg = config(8);
        cfg.idle_timeout = Duration::from_millis(10);
        let idle = Idle::new(cfg);
        let t0 = Instant::now();
        idle_workers(&idle, 6, t0);
        // Worker 5 (the most recent) is kicked: it must survive the cull.
        assert_eq!(idle.kick(), Kick::Woke);
        assert_eq!(idle.slot_state(5), SlotState::Kicked);
        // Not yet expired: nothing culled.
        assert!(idle.cull_now(t0).is_empty());
        let later = t0 + Duration::from_millis(20);
        let woken = idle.cull_now(later);
        // 6 idle (5 + 1 kicked), 0 busy: cull down to min_idle = 2 idle.
        let snap = idle.snapshot();
        assert_eq!(snap.nr_idle + snap.nr_kicked, 2, "{snap:?}");
        assert_eq!(snap.counters.workers_culled, 4);
        assert!(!woken.is_empty());
        // The oldest went first; the kicked one stayed.
        for id in 0..4 {
            assert_eq!(idle.slot_state(id), SlotState::Culled, "slot {id}");
        }
        assert_eq!(idle.slot_state(4), SlotState::Idle);
        assert_eq!(idle.slot_state(5), SlotState::Kicked);
    }

    #[test]
    fn busy_workers_keep_idle_ones_alive() {
        let mut cfg = config(16);
        cfg.idle_timeout = Duration::ZERO;
        let idle = Idle::new(cfg);
        let now = Instant::now();
        for _ in 0..12 {
            let Kick::Create(id) = idle.kick() else {
                panic!()
            };
            idle.started(id, std::thread::current());
        }
        for id in 0..4 {
            assert_eq!(idle.enter_idle(id, now, || false), Next::Park);
        }
        // 4 idle, 8 busy: (4 - 2) * 4 = 8 >= 8, too many by one.
        idle.cull_now(now).wake_all();
        let snap = idle.snapshot();
        assert_eq!(snap.nr_idle, 3);
        // 3 idle, 8 busy: (3 - 2) * 4 = 4 < 8: enough.
        assert_eq!(snap.counters.workers_culled, 1);
    }

    #[test]
    fn an_exiting_thread_is_drafted_when_no_slot_is_free() {
        let mut cfg = config(1);
        cfg.idle_timeout = Duration::ZERO;
        cfg.min_idle = 0;
        let idle = Idle::new(cfg);
        let now = Instant::now();
        idle_workers(&idle, 1, now);
        idle.cull_now(now).wake_all();
        assert_eq!(idle.slot_state(0), SlotState::Culled);
        // Work arrives while the culled thread is still on its way out.
        assert_eq!(idle.kick(), Kick::Busy);
        assert_eq!(idle.exit(0), Next::Run, "drafted as the new worker");
        assert_eq!(idle.slot_state(0), SlotState::Busy);
        assert_eq!(idle.snapshot().nr_workers, 1);
    }

    #[test]
    fn closed_pool_refuses_kicks_and_releases_workers() {
        let idle = Idle::new(config(2));
        idle_workers(&idle, 2, Instant::now());
        let wake = idle.close();
        assert!(!wake.is_empty());
        assert_eq!(idle.kick(), Kick::Closed);
        let mut wq = WakeQueue::default();
        assert_eq!(
            idle.wake(0, Instant::now(), false, || true, &mut wq),
            Next::Exit
        );
        assert_eq!(idle.exit(0), Next::Exit);
        assert_eq!(idle.slot_state(0), SlotState::Absent);
    }
}

/// Model checks of the protocol with loom: run with
/// `RUSTFLAGS="--cfg loom" cargo test -p wq --lib --release loom_`.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicUsize as Items;

    /// A queue of anonymous items: all the protocol needs to know.
    struct Queue(Items);

    impl Queue {
        fn push(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn has_work(&self) -> bool {
            self.0.load(Ordering::SeqCst) > 0
        }
        fn pop(&self) -> bool {
            let mut n = self.0.load(Ordering::SeqCst);
            while n > 0 {
                match self
                    .0
                    .compare_exchange(n, n - 1, Ordering::SeqCst, Ordering::SeqCst)
                {
                    Ok(_) => return true,
                    Err(actual) => n = actual,
                }
            }
            false
        }
    }

    fn config(kicked_list: bool, wake_mode: WakeMode) -> IdleConfig {
        IdleConfig {
            max_workers: 1,
            idle_timeout: Duration::ZERO,
            min_idle: 0,
            wake_mode,
            kicked_list,
        }
    }

    /// A worker of the model: runs items until `quota` are done, idles and
    /// parks in between, leaves when culled. Returns how many it ran.
    fn worker(idle: &Idle, queue: &Queue, id: usize, quota: usize) -> usize {
        let mut done = 0;
        'work: loop {
            while queue.pop() {
                done += 1;
                if done == quota {
                    break 'work;
                }
            }
            match idle.enter_idle(id, Instant::now(), || queue.has_work()) {
                Next::Run => continue,
                Next::Exit => break,
                Next::Park => {}
            }
            // One round of the spin before parking: work seen here is taken
            // through `wake` without parking, as the real worker does. Not
            // under `UnderLock`: there the kicker unparks while holding the
            // lock this worker may be blocked on, and loom 0.7's unpark
            // wakes a thread whatever it is blocked on (tokio-rs/loom#249;
            // std's unpark only leaves a token), a false alarm.
            let mut spun = idle.config.wake_mode == WakeMode::Deferred && queue.has_work();
            loop {
                if !spun {
                    crate::loom::thread::park();
                }
                spun = false;
                let mut wake = WakeQueue::default();
                match idle.wake(id, Instant::now(), false, || queue.has_work(), &mut wake) {
                    Next::Run => continue 'work,
                    Next::Park => continue,
                    Next::Exit => break 'work,
                }
            }
        }
        done
    }

    /// `worker` until it leaves for good (an exiting thread may be drafted).
    fn worker_thread(idle: &Idle, queue: &Queue, id: usize, quota: usize) -> usize {
        let mut done = 0;
        loop {
            done += worker(idle, queue, id, quota - done);
            if done == quota || idle.exit(id) == Next::Exit {
                return done;
            }
        }
    }

    /// One worker is idle; a producer queues an item and kicks while a cull
    /// runs. Returns whether the item was stranded.
    fn kick_races_cull(kicked_list: bool, wake_mode: WakeMode) {
        loom::model(move || {
            let idle = Arc::new(Idle::new(config(kicked_list, wake_mode)));
            let queue = Arc::new(Queue(Items::new(0)));
            let Kick::Create(id) = idle.kick() else {
                panic!()
            };
            let (i, q) = (idle.clone(), queue.clone());
            let w = loom::thread::spawn(move || {
                i.started(id, loom::thread::current());
                worker_thread(&i, &q, id, 1)
            });
            let (i, q) = (idle.clone(), queue.clone());
            let producer = loom::thread::spawn(move || {
                q.push();
                match i.kick_if_needed() {
                    // The worker was culled first: create its successor.
                    Kick::Create(id) => {
                        let (i2, q2) = (i.clone(), q.clone());
                        let t = loom::thread::spawn(move || {
                            i2.started(id, loom::thread::current());
                            worker_thread(&i2, &q2, id, 1)
                        });
                        t.join().unwrap()
                    }
                    _ => 0,
                }
            });
            idle.cull_now(Instant::now()).wake_all();
            let ran = w.join().unwrap() + producer.join().unwrap();
            assert_eq!(
                ran, 1,
                "stranded item: the kicked worker was culled before it ran the item"
            );
        });
    }

    #[test]
    fn loom_kick_and_cull_never_strand_an_item() {
        kick_races_cull(true, WakeMode::Deferred);
    }

    #[test]
    fn loom_kick_and_cull_never_strand_an_item_under_lock() {
        kick_races_cull(true, WakeMode::UnderLock);
    }

    /// Without the kicked list the model must find the seed's race: this
    /// proves the test above can fail.
    #[test]
    #[should_panic(expected = "stranded item")]
    fn loom_without_kicked_list_the_item_is_stranded() {
        kick_races_cull(false, WakeMode::Deferred);
    }

    /// Two producers, one worker, no cull: every item runs, and the worker
    /// never parks with work queued (loom reports a deadlock if it does).
    fn no_lost_wakeup(wake_mode: WakeMode) {
        loom::model(move || {
            let mut cfg = config(true, wake_mode);
            cfg.idle_timeout = Duration::from_secs(3600);
            let idle = Arc::new(Idle::new(cfg));
            let queue = Arc::new(Queue(Items::new(0)));
            let Kick::Create(id) = idle.kick() else {
                panic!()
            };
            let (i, q) = (idle.clone(), queue.clone());
            let w = loom::thread::spawn(move || {
                i.started(id, loom::thread::current());
                worker_thread(&i, &q, id, 2)
            });
            let producers: Vec<_> = (0..2)
                .map(|_| {
                    let (i, q) = (idle.clone(), queue.clone());
                    loom::thread::spawn(move || {
                        q.push();
                        let _ = i.kick_if_needed();
                    })
                })
                .collect();
            for p in producers {
                p.join().unwrap();
            }
            assert_eq!(w.join().unwrap(), 2);
        });
    }

    #[test]
    fn loom_no_lost_wakeup() {
        no_lost_wakeup(WakeMode::Deferred);
    }

    #[test]
    fn loom_no_lost_wakeup_under_lock() {
        no_lost_wakeup(WakeMode::UnderLock);
    }
}
