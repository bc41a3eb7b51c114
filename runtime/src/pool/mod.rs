//! Worker pools: one per pod, shared by every scope whose pod has the same
//! CPUs.
//!
//! # Queues
//! - `injector`: the pool's shared FIFO (crossbeam `Injector`). Spawns and
//!   wakes from outside the pool land here, then the pool is kicked.
//! - one crossbeam deque per worker slot, stolen from by the pool's other
//!   workers (and, when the pool is not strict, by other pools' idle
//!   workers), plus a one-task LIFO slot per worker for the task it just
//!   woke (see [`worker`]).
//!
//! # Where a scheduled task goes ([`schedule`])
//! 1. Its home pool is closed: the task is pushed on the injector, without
//!    a kick, for the shutdown thread to drop (see [`closing`]).
//! 2. The current thread is a worker of its home pool: the task goes to that
//!    worker's LIFO slot (a yield goes to the back of its deque instead); no
//!    lock is taken. The displaced LIFO task goes to the deque, and the pool
//!    is kicked if an idle worker could steal it.
//! 3. Otherwise: pushed on the home pool's injector, then the pool is kicked
//!    (push first, then kick: invariant I3 of [`idle`]).
//!
//! A kick that reserves a slot creates the worker thread here, after the
//! pool lock is released (the kernel's manager does the same).

mod closing;
pub(crate) mod idle;
pub(crate) mod worker;

use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crossbeam_deque::{Injector, Stealer, Worker as Deque};
use crossbeam_utils::CachePadded;

use crate::Scope;
use crate::metrics::{PoolMetrics, WorkerCounters};
use crate::runtime::rescuer::MAYDAY_INTERVAL;
use crate::runtime::shared::Shared;
use crate::task::{Registry, Runnable};
use closing::Closing;
use idle::{Idle, IdleConfig, Kick};

thread_local! {
    /// The pools this thread is draining, innermost last (see
    /// `pushed_after_close`).
    static DRAINING: std::cell::RefCell<Vec<*const Pool>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether this thread is draining `pool` already.
fn draining(pool: &Pool) -> bool {
    DRAINING
        .try_with(|d| d.borrow().contains(&std::ptr::from_ref(pool)))
        .unwrap_or(false)
}

/// One worker pool: the execution object for one pod.
pub(crate) struct Pool {
    /// Runtime-unique, for names and metrics.
    pub(crate) id: usize,
    /// The scope and pod it was created for (other scopes with the same CPU
    /// set share it).
    pub(crate) scope: Scope,
    pub(crate) pod: usize,
    /// OS indices of the pod's CPUs.
    pub(crate) cpus: Box<[usize]>,
    pub(crate) injector: Injector<Runnable>,
    pub(crate) idle: Idle,
    pub(crate) slots: Box<[WorkerSlot]>,
    /// Every task whose home this pool is, so shutdown can cancel them.
    pub(crate) registry: Registry,
    /// Mirrors the protocol's `closed` for lock-free checks on hot paths.
    /// Set before the pool is closed under its lock; a stale `false` only
    /// sends a task the slow way, where the lock sees `closed`.
    closed: AtomicBool,
    /// The shutdown's last drain, announced (see [`closing`]).
    closing: Closing,
    /// On the runtime's mayday list (see `runtime::rescuer`).
    pub(crate) on_mayday: AtomicBool,
    /// Worker threads the OS refused to start.
    pub(crate) create_failures: AtomicU64,
    /// After a refused start, no kick tries again before this instant
    /// (the rescuer's pace); `None` while starts succeed.
    start_retry_at: Mutex<Option<Instant>>,
    /// Tasks run by the rescuer (single writer: the rescuer thread).
    pub(crate) rescuer: WorkerCounters,
    pub(crate) shared: Weak<Shared>,
}

/// What a pool keeps per worker slot, whichever thread holds the slot.
pub(crate) struct WorkerSlot {
    /// The slot's deque; a worker thread takes it when it starts and puts it
    /// back (empty) when it exits.
    pub(crate) deque: Mutex<Option<Deque<Runnable>>>,
    pub(crate) stealer: Stealer<Runnable>,
    pub(crate) counters: CachePadded<WorkerCounters>,
}

impl Pool {
    pub(crate) fn new(
        id: usize,
        scope: Scope,
        pod: usize,
        cpus: Box<[usize]>,
        config: IdleConfig,
        shared: Weak<Shared>,
    ) -> Pool {
        let slots = (0..config.max_workers)
            .map(|_| {
                let deque = Deque::new_fifo();
                WorkerSlot {
                    stealer: deque.stealer(),
                    deque: Mutex::new(Some(deque)),
                    counters: CachePadded::new(WorkerCounters::default()),
                }
            })
            .collect();
        Pool {
            id,
            scope,
            pod,
            cpus,
            injector: Injector::new(),
            idle: Idle::new(config),
            slots,
            registry: Registry::new(),
            closed: AtomicBool::new(false),
            closing: Closing::default(),
            on_mayday: AtomicBool::new(false),
            create_failures: AtomicU64::new(0),
            start_retry_at: Mutex::new(None),
            rescuer: WorkerCounters::default(),
            shared,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Whether a worker of this pool would find something to run: in the
    /// injector or in a sibling's deque (work batch-stolen or woken there
    /// is stealable). Called under the pool lock by a worker going idle.
    pub(crate) fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.slots.iter().any(|s| !s.stealer.is_empty())
    }

    /// Step 3 of the module docs: queue from outside the pool, then kick.
    pub(crate) fn push_remote(self: &Arc<Self>, runnable: Runnable) {
        self.injector.push(runnable);
        self.handle_kick(self.idle.kick_if_needed());
    }

    /// Kicks the pool unless no worker could be woken or created (the
    /// fenced fast path of [`Idle::kick_if_needed`]).
    pub(crate) fn kick_if_needed(self: &Arc<Self>) {
        self.handle_kick(self.idle.kick_if_needed());
    }

    /// Kicks the pool; creates a worker if the kick reserved a slot.
    pub(crate) fn kick(self: &Arc<Self>) {
        self.handle_kick(self.idle.kick());
    }

    fn handle_kick(self: &Arc<Self>, kick: Kick) {
        match kick {
            Kick::Woke | Kick::Coalesced | Kick::Busy => {}
            Kick::Create(slot) => self.create_worker(slot),
            Kick::Closed => self.pushed_after_close(),
        }
    }

    /// Queues a task scheduled on the closed pool, for the shutdown thread
    /// to drop ([`closing`]).
    fn push_closed(&self, runnable: Runnable) {
        self.injector.push(runnable);
        self.pushed_after_close();
    }

    /// Something was pushed on the closed pool: drop what is queued if the
    /// shutdown's last drain may have missed it ([`closing`]).
    fn pushed_after_close(&self) {
        // A push made by dropping a task in this thread's drain of this
        // pool (its awaiter, woken) is taken by that drain's loop: draining
        // again here would nest one drop per link of a chain of awaiters.
        // (Pools being drained are stacked, so a chain alternating between
        // pools nests at most once per pool.)
        if self.closing.must_drain_after_push() && !draining(self) {
            self.drain();
        }
    }

    /// Starts the thread for reserved slot `slot` (no lock held), unless a
    /// start failed less than [`MAYDAY_INTERVAL`] ago: then the kick only
    /// hands the work to the rescuer, which retries at that pace.
    fn create_worker(self: &Arc<Self>, slot: usize) {
        let Some(shared) = self.shared.upgrade() else {
            // The runtime is gone: its shutdown drained (or will drain) us.
            self.idle.create_failed(slot);
            self.pushed_after_close();
            return;
        };
        let backing_off = crate::lock_std(&self.start_retry_at).is_some_and(|t| Instant::now() < t);
        let result = if backing_off {
            Err(None)
        } else {
            worker::spawn(&shared, self, slot).map_err(Some)
        };
        let err = match result {
            Ok(()) => {
                *crate::lock_std(&self.start_retry_at) = None;
                return;
            }
            Err(err) => err,
        };
        let no_worker = self.idle.create_failed(slot);
        if shared.is_closed() {
            self.pushed_after_close();
            return;
        }
        if let Some(err) = err {
            *crate::lock_std(&self.start_retry_at) = Some(Instant::now() + MAYDAY_INTERVAL);
            if self.create_failures.fetch_add(1, Ordering::Relaxed) == 0 {
                // Not `eprintln!`: a closed stderr must not panic here
                // (inside a waker, async-task would abort the process).
                let _ = writeln!(
                    std::io::stderr(),
                    "wq: could not start a worker thread for pool {} ({} pod {}): {err}; \
                     the pool's work runs on the rescuer thread until a worker can be started \
                     (check the process's thread limit, `ulimit -u`, and free memory)",
                    self.id,
                    self.scope,
                    self.pod
                );
            }
        }
        // The work stays queued. Busy workers see it before they idle; a
        // pool with no worker is handed to the rescuer.
        if no_worker {
            shared.rescuer.mayday(self);
        }
    }

    /// The shutdown's last drain ([`closing`]): from now on, a push on this
    /// pool drops what it queued.
    pub(crate) fn bury(&self) {
        self.closing.bury();
        self.drain();
    }

    /// Drops everything queued on the injector, in this thread (shutdown,
    /// or a push after the last drain: [`closing`]).
    pub(crate) fn drain(&self) {
        DRAINING.with_borrow_mut(|d| d.push(std::ptr::from_ref(self)));
        while !self.injector.is_empty() {
            if let Some(runnable) = self.injector.steal().success() {
                drop(runnable);
            }
        }
        DRAINING.with_borrow_mut(|d| d.pop());
    }

    /// Runs a task on the rescuer thread (see `runtime::rescuer`),
    /// recording its scheduling delay in the pool's rescuer counters.
    pub(crate) fn run_rescued(&self, runnable: Runnable) {
        let delay = crate::clock::delay_ns(runnable.metadata().queued_at(), crate::clock::now());
        let c = &self.rescuer;
        c.started.fetch_add(1, Ordering::Relaxed);
        crate::lock_std(&c.sched_delay).saturating_record(delay.max(1));
        // As on a worker: a panic in a cancelled future's Drop must not
        // take the rescuer down.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runnable.run()));
        c.completed.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks the pool closed and releases its workers: they exit when they
    /// next look at their state. Queued tasks are dropped by the caller.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.idle.close().wake_all();
    }

    pub(crate) fn metrics(&self) -> PoolMetrics {
        PoolMetrics::collect(self)
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("id", &self.id)
            .field("scope", &self.scope)
            .field("pod", &self.pod)
            .field("cpus", &self.cpus)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

/// Queues a task just spawned on `pool`, its home: as [`schedule`], with
/// the caller's reference to the pool instead of a clone of the task's.
pub(crate) fn schedule_spawned(pool: &Arc<Pool>, runnable: Runnable) {
    if let Some(runnable) = worker::schedule_local(runnable, false) {
        runnable.metadata().stamp(crate::clock::now());
        pool.push_remote(runnable);
    }
}

/// The schedule function of every task: see the module docs.
pub(crate) fn schedule(runnable: Runnable, info: async_task::ScheduleInfo) {
    if runnable.metadata().home.is_closed() {
        // The clone keeps the pool alive once the task is queued (it may be
        // drained and freed by then, and the pool with its last reference).
        let home = runnable.metadata().home.clone();
        home.push_closed(runnable);
        return;
    }
    if let Some(runnable) = worker::schedule_local(runnable, info.woken_while_running) {
        runnable.metadata().stamp(crate::clock::now());
        // The slow path: one Arc clone, as the task moves into the injector.
        let home = runnable.metadata().home.clone();
        home.push_remote(runnable);
    }
}
