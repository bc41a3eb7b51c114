//! Worker pools: one per pod, shared by every scope whose pod has the same
//! CPUs.
//!
//! A pool can be read without the rest of the runtime: it needs only a
//! [`Host`], which starts its worker threads, runs the rescuer and lends it
//! the queues of neighbouring pools (the scheduler, `crate::scheduler`).
//!
//! # Queues
//! - `injector`: the pool's shared FIFO (crossbeam `Injector`). Spawns and
//!   wakes from outside the pool land here, then the pool is kicked.
//! - one crossbeam deque per worker slot, stolen from by the pool's other
//!   workers only (other pools' idle workers, when neither pool is
//!   strict, take from its injector), plus a one-task **LIFO slot** per worker for the task it just
//!   woke (see [`worker`]), which only that worker takes from, but for the
//!   watchdog when a poll runs too long ([`lifo`]).
//!
//! # Where a scheduled task goes ([`schedule`])
//! 1. Its home pool is closed: the task is pushed on the injector, without
//!    a kick, for the shutdown thread to drop (see [`closing`]).
//! 2. The current thread is a worker of its home pool: the task goes to that
//!    worker's LIFO slot (a yield goes to the back of its deque instead).
//!    The displaced LIFO task goes to the deque (to the injector where a
//!    driver turn displaced it and the pool's spinners watch only the
//!    injector: [`worker`]'s step 3), and the pool is notified, so an idle
//!    sibling can steal it (lock-free unless nobody searches and one is
//!    parked: [`idle`]'s step 1).
//! 3. Otherwise: pushed on the home pool's injector, then the pool is
//!    notified: push first, then kick (invariants I3 and I4 of [`idle`]).
//!
//! A kick that reserves a slot starts the worker thread here, after the
//! pool lock is released (the kernel's manager does the same); a refused
//! start backs off, and a pool left with no worker is handed to the
//! rescuer.

mod closing;
pub(crate) mod current;
mod hint;
pub(crate) mod idle;
pub(crate) mod lifo;
pub(crate) mod park;
mod wake_queue;
pub(crate) mod worker;

use std::fmt;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crossbeam_deque::{Injector, Stealer, Worker as Deque};
use crossbeam_utils::CachePadded;

use crate::Scope;
use crate::metrics::{PoolCapture, PoolSnapshot, WorkerCounters};
use crate::task::{Registry, Runnable};
use closing::Closing;
use idle::{Idle, IdleConfig, Kick};

/// The most workers a pool may count at once (half its slots, the other
/// half for workers blocked in `block_in_place`).
pub(crate) const MAX_WORKERS: usize = hint::MAX_SLOTS / 2;

/// How a thread turns the host's I/O driver ([`Host::turn_driver`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Parked in it: it waits there for events, a timer or a wakeup (it
    /// attends the driver).
    Park = 1,
    /// A turn that does not wait (a busy worker's maintenance turn, the
    /// watchdog's): over in microseconds, it does not attend the driver;
    /// its thread attends after it if an attend was left to it
    /// ([`Host::take_deferred_attend`]).
    ZeroWait = 2,
}

/// What a pool needs of the scheduler that owns it.
pub(crate) trait Host: Send + Sync + 'static {
    /// Starts the thread of a new worker for reserved slot `slot` of `pool`:
    /// it binds itself to the pool's `run_cpus`, enters the runtime, and calls
    /// [`worker::run`].
    fn start_worker(&self, pool: &Arc<Pool>, slot: usize) -> Result<(), StartError>;
    /// Hands `pool` to the rescuer: work is queued and no worker can run it.
    fn mayday(&self, pool: &Arc<Pool>);
    /// Offers `take` the other pools of `pool`'s scopes (every one it
    /// serves: [`Served`]), nearest first, until it returns a task.
    fn steal_remote(
        &self,
        pool: &Pool,
        take: &mut dyn FnMut(&Pool) -> Option<Runnable>,
    ) -> Option<Runnable>;
    /// Lends the host's I/O driver to `turn`, a turn of `kind`, if it has
    /// one and nobody turns it now; returns whether it did (see [`park`]).
    fn turn_driver(&self, kind: Turn, turn: &mut dyn FnMut(&mut crate::driver::Driver)) -> bool;
    /// Whether the host has an I/O driver that nobody turns now (a hint).
    fn driver_unattended(&self) -> bool;
    /// Whether the host has an I/O driver that no thread is parked in now
    /// (a hint): unattended, or held by a zero-wait turn.
    fn driver_unparked(&self) -> bool;
    /// A thread gave up the driver, or may have left it to nobody (see
    /// [`park`]'s "Attending the driver"): if nobody turns it now, wakes an
    /// idle worker, of any pool, to park in it. Returns whether the driver
    /// is turned or a worker is on its way. A zero-wait turn does not
    /// count as turning it: the attend is left to its thread, which calls
    /// [`Host::take_deferred_attend`] after its turn.
    fn attend_driver(&self) -> bool;
    /// After a zero-wait turn and a `SeqCst` fence: whether an attend was
    /// left to this turn (the caller then calls
    /// [`Host::attend_driver_or_start`]).
    fn take_deferred_attend(&self) -> bool;
    /// [`Host::attend_driver`], and with nobody to wake and the driver
    /// still unattended, a kick of the default pool, which starts a worker
    /// if it may: for an attend left to a zero-wait turn, whose maker (a
    /// worker blocking, a `block_on` thread off to poll) counted the
    /// driver attended and kicked nothing itself.
    fn attend_driver_or_start(&self);
    /// The numbers of the host's live workers, over all its pools: a
    /// worker takes the lowest free one at its start and gives it back
    /// at its exit (its timer shard, `time::sleep`).
    fn worker_numbers(&self) -> &Mutex<current::Numbers>;
}

/// Why a worker thread was not started.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The runtime is shutting down.
    Closed,
    /// The OS refused the thread.
    Os(io::Error),
}

/// What, besides its CPUs, makes a pool: workqueues with the same
/// attributes share pools, as the kernel's do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct PoolAttrs {
    /// Its workers never take work from other pods, and other pods'
    /// workers never take its work.
    pub(crate) strict: bool,
    /// Its workers run at raised priority (`nice -20` where the process
    /// may; the kernel's `WQ_HIGHPRI` pools).
    pub(crate) highpri: bool,
}

impl PoolAttrs {
    /// Every combination, in a fixed order (index with [`PoolAttrs::index`]).
    pub(crate) const ALL: [PoolAttrs; 4] = [
        PoolAttrs {
            strict: false,
            highpri: false,
        },
        PoolAttrs {
            strict: true,
            highpri: false,
        },
        PoolAttrs {
            strict: false,
            highpri: true,
        },
        PoolAttrs {
            strict: true,
            highpri: true,
        },
    ];

    /// Position in [`PoolAttrs::ALL`].
    pub(crate) fn index(self) -> usize {
        usize::from(self.strict) + 2 * usize::from(self.highpri)
    }
}

/// A pool's settings.
#[derive(Clone, Debug)]
pub(crate) struct PoolConfig {
    pub(crate) idle: IdleConfig,
    /// The longest a searching worker spins before it parks.
    pub(crate) worker_spin: Duration,
    /// The most workers that spin at once (`None`: as many as search).
    pub(crate) spinning_workers: Option<usize>,
    /// Spinners watch the workers' deques too, not only the injector
    /// (`None`: in pools of at most [`SMALL_POOL`] workers).
    pub(crate) spin_watches_deques: Option<bool>,
    pub(crate) attrs: PoolAttrs,
    /// Latency capture on (`Builder::latency_capture`).
    pub(crate) capture: bool,
}

/// Outstanding CPU-hog marks of the process's watchdogs: while zero (the
/// common case), a finishing poll need not look at its worker's mark.
pub(crate) static HOG_MARKS: AtomicUsize = AtomicUsize::new(0);

/// The scopes a pool is a pod of (the same CPUs), and where its idle
/// workers look for work in other pools (the scheduler's `steal_remote`).
#[derive(Debug)]
pub(crate) struct Served {
    /// Every scope with a pod of exactly the pool's CPUs, and that pod,
    /// narrowest scope first: the tables that hold it.
    pub(crate) pods: Box<[(Scope, usize)]>,
    /// Where those scopes split the machine differently (a pool that is a
    /// `cache` pod, and a `cache_shard` pod beside shards of a bigger
    /// cache), their steal orders merged, nearest first, each other pod
    /// once; `None` where one scope's order is all of them (the scheduler
    /// walks the first pod's: the common case).
    pub(crate) steal: Option<Box<[(Scope, usize)]>>,
}

/// One worker pool: the execution object for one pod.
pub(crate) struct Pool {
    /// Runtime-unique, for names and metrics.
    pub(crate) id: usize,
    /// The scope and pod it was created for (other scopes with the same CPU
    /// set share it).
    pub(crate) scope: Scope,
    pub(crate) pod: usize,
    /// The scopes it is a pod of, and where its idle workers look for
    /// work in other pools.
    pub(crate) served: Served,
    /// OS indices of the pod's CPUs.
    pub(crate) cpus: Box<[usize]>,
    /// OS indices of the CPUs its workers are bound to, on a live
    /// topology: the pod's, but for a non-strict pool of a `cache_shard`
    /// pod (not one of a single core), whose workers may run anywhere in
    /// the pod's last-level cache (`Scheduler::run_cpus` says why).
    pub(crate) run_cpus: Box<[usize]>,
    pub(crate) injector: Injector<Runnable>,
    pub(crate) idle: Idle,
    pub(crate) slots: Box<[WorkerSlot]>,
    /// One past the highest slot ever started: the deques beyond it are
    /// empty, and the idle re-check and the steal loop skip them (a pool
    /// has twice its maximum in slots, most never used).
    slots_used: AtomicUsize,
    /// Every task whose home this pool is, so shutdown can cancel them.
    pub(crate) registry: Registry,
    /// Mirrors the protocol's `closed` for lock-free checks on hot paths.
    /// Set before the pool is closed under its lock; a stale `false` only
    /// sends a task the slow way, where the lock sees `closed`.
    closed: AtomicBool,
    /// The shutdown's last drain, announced (see [`closing`]).
    closing: Closing,
    /// Worker threads the OS refused to start.
    start_failures: AtomicU64,
    /// Tasks queued back here after running on another pod's worker. A
    /// line of its own: written by the waking CPU for each task that ran
    /// away and comes back, beside fields every spawn and steal scan read
    /// (`slots_used`, the registry).
    repatriated: CachePadded<AtomicU64>,
    /// Tasks the watchdog took from a long poll's LIFO slot (single
    /// writer: the watchdog).
    pub(crate) lifo_stolen: AtomicU64,
    /// A thread of this pool could not be bound to its CPUs, and it was
    /// said (once).
    unbound_said: AtomicBool,
    /// Tasks run for this pool by the rescuer (single writer: the rescuer).
    pub(crate) rescued: WorkerCounters,
    /// Latency capture: its switch and the spawn-call histogram's stripes
    /// (`crate::metrics`'s capture protocol).
    pub(crate) capture: Arc<PoolCapture>,
    pub(crate) worker_spin: Duration,
    /// Workers spinning now (step 3 of the worker loop).
    pub(crate) spinners: Spinners,
    pub(crate) spin_watches_deques: bool,
    /// A worker that will not run its deque soon (blocked, a CPU hog) has
    /// tasks there: the next spinner steals them (`worker` step 3). A
    /// line of its own, written only then and by the spinner that takes it.
    deque_alert: CachePadded<AtomicBool>,
    pub(crate) attrs: PoolAttrs,
    host: Weak<dyn Host>,
}

/// The workers of a pool that spin now, and the most that may
/// (`Builder::spinning_workers`). Only a count: a worker that finds the
/// limit reached has searched once already and parks, so nothing waits on
/// it; the count is on a line of its own, written twice per spin (not per
/// check).
pub(crate) struct Spinners {
    count: CachePadded<AtomicUsize>,
    max: usize,
}

impl Spinners {
    pub(crate) fn new(max: usize) -> Spinners {
        Spinners {
            count: CachePadded::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Counts the caller as spinning, unless `max` workers spin already;
    /// the guard uncounts it. Without a limit (the default) nothing is
    /// counted: the line is not written twice per spin for nothing.
    pub(crate) fn try_start(&self) -> Option<SpinGuard<'_>> {
        if self.max == usize::MAX {
            return Some(SpinGuard(None));
        }
        self.count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| SpinGuard(Some(&self.count)))
    }
}

/// The widest pool whose spinners watch the workers' deques by default
/// (`worker`, step 3): at most two of its workers search (the searchers'
/// floor; three while a CPU hog's extra worker makes it five), so
/// spinners crowding a spawning worker's deque cannot happen,
/// and a task on a deque is taken at once. Measured: 2 workers, the
/// deque watch ahead on HTTP; 16, the injector-only watch ahead on
/// tokio's spawn_many and ping_pong (`docs/benchmarks.md`, section 12).
pub(crate) const SMALL_POOL: usize = 4;

/// Whether a pool of at most `max_workers` has its spinners watch the
/// deques: as `setting` says, else if it is no wider than [`SMALL_POOL`].
fn spin_watches_deques(setting: Option<bool>, max_workers: usize) -> bool {
    setting.unwrap_or(max_workers <= SMALL_POOL)
}

/// A worker counted in its pool's [`Spinners`] (if they are limited).
pub(crate) struct SpinGuard<'a>(Option<&'a AtomicUsize>);

impl Drop for SpinGuard<'_> {
    fn drop(&mut self) {
        if let Some(count) = self.0 {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// What a pool keeps per worker slot, whichever thread holds the slot.
pub(crate) struct WorkerSlot {
    /// The slot's deque; a worker thread takes it when it starts and puts it
    /// back (empty) when it exits.
    pub(crate) deque: Mutex<Option<Deque<Runnable>>>,
    pub(crate) stealer: Stealer<Runnable>,
    pub(crate) counters: CachePadded<WorkerCounters>,
    /// The watchdog's view of the slot's worker (see `poll_was_hog`).
    pub(crate) watch: CachePadded<Watch>,
}

/// What the hog watchdog reads of a worker, and marks.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// The raw clock the worker read before the running poll (as its last
    /// poll ended, or its park: the look for work in between counts
    /// toward this poll's age, no clock read being spent on it); 0 while
    /// the worker runs no task. Written by the worker before and after each poll (a
    /// plain store on a line the watchdog reads, and writes only to mark a
    /// long poll, `hog`, and to empty `lifo`).
    pub(crate) poll_started: AtomicU64,
    /// The OS thread id of the slot's thread, set when a worker takes the
    /// slot (the watchdog reads its state and scheduler statistics in
    /// `/proc` when its CPU clock does not settle a long poll); 0 if
    /// unknown.
    pub(crate) tid: AtomicI32,
    /// The slot's thread's CPU-time clock (`pthread_getcpuclockid`), set
    /// with `tid`: the watchdog's first look at a long poll reads it (a
    /// system call, under a microsecond) rather than `/proc` files (two
    /// reads, about 22 us). A thread's clock id is negative on Linux; 0
    /// (`CLOCK_REALTIME`, never a thread's) if unknown.
    pub(crate) cpu_clock: AtomicI32,
    /// The `poll_started` of the poll the watchdog found running too long.
    pub(crate) hog: AtomicU64,
    /// Whether that poll was using its CPU (a CPU hog) rather than
    /// blocking its thread (sleeping in a synchronous call).
    pub(crate) hog_on_cpu: AtomicBool,
    /// The slot's worker is in `block_in_place` (the watchdog does not
    /// sample a poll while it blocks there: it left the pool's count, and
    /// reading its `/proc` statistics every tick would cost the watchdog's
    /// thread CPU time for nothing).
    pub(crate) blocked: AtomicBool,
    /// The raw clock when the worker last came back from
    /// `block_in_place`: the watchdog times a poll from then, not from its
    /// start (its block is not time on a CPU).
    pub(crate) unblocked_at: AtomicU64,
    /// The raw clock when the worker last went into `block_in_place`: the
    /// watchdog moves its deque once the block (not the poll) outlasts the
    /// threshold.
    pub(crate) blocked_at: AtomicU64,
    /// The grant for the marked poll woke or started a worker.
    pub(crate) hog_woke: AtomicBool,
    /// The slot's LIFO slot (owned by the slot's worker thread; the
    /// watchdog empties it when a poll runs too long: [`lifo`]). On this
    /// line, which the worker writes at every poll anyway.
    pub(crate) lifo: lifo::LifoSlot<Runnable>,
}

/// What the watchdog found of the poll that just ran on this thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LongPoll {
    /// It ran longer than the threshold using its CPU.
    OnCpu,
    /// It ran longer than the threshold blocking its thread; `woke`: the
    /// grant woke or started another worker for queued work (a
    /// `cm_wakeup`).
    Blocked { woke: bool },
}

impl Pool {
    /// A pool for `scope`'s pod `pod`, serving every (scope, pod) of
    /// `served` (the same CPUs).
    pub(crate) fn new(
        id: usize,
        (scope, pod): (Scope, usize),
        served: Served,
        cpus: Box<[usize]>,
        run_cpus: Box<[usize]>,
        config: PoolConfig,
        host: Weak<dyn Host>,
    ) -> Pool {
        let spin_watches_deques =
            spin_watches_deques(config.spin_watches_deques, config.idle.max_workers);
        let slots = (0..config.idle.slots)
            .map(|_| {
                let deque = Deque::new_fifo();
                WorkerSlot {
                    stealer: deque.stealer(),
                    deque: Mutex::new(Some(deque)),
                    counters: CachePadded::new(WorkerCounters::default()),
                    watch: CachePadded::new(Watch::default()),
                }
            })
            .collect();
        Pool {
            id,
            scope,
            pod,
            served,
            cpus,
            run_cpus,
            injector: Injector::new(),
            idle: Idle::new(config.idle),
            slots,
            slots_used: AtomicUsize::new(0),
            registry: Registry::new(),
            closed: AtomicBool::new(false),
            closing: Closing::default(),
            start_failures: AtomicU64::new(0),
            repatriated: CachePadded::new(AtomicU64::new(0)),
            lifo_stolen: AtomicU64::new(0),
            unbound_said: AtomicBool::new(false),
            rescued: WorkerCounters::default(),
            capture: Arc::new(PoolCapture::new(config.capture)),
            worker_spin: config.worker_spin,
            spinners: Spinners::new(config.spinning_workers.unwrap_or(usize::MAX)),
            spin_watches_deques,
            deque_alert: CachePadded::new(AtomicBool::new(false)),
            attrs: config.attrs,
            host,
        }
    }

    /// A thread of this pool could not be bound to its CPUs: it runs where
    /// the OS puts it. Logged once per pool.
    pub(crate) fn warn_unbound(&self, e: &io::Error) {
        if !self.unbound_said.swap(true, Ordering::Relaxed) {
            warn_caught!(
                "wq: a thread of pool {} ({} pod {}, CPUs {:?}) could not be bound to its \
                 CPUs ({e}); it runs where the OS puts it. Is the cgroup's cpuset \
                 narrower than when the runtime was built, or are those CPUs offline?",
                self.id,
                self.scope,
                self.pod,
                self.run_cpus
            );
        }
    }

    /// Raises the deque alert (where spinners do not watch the deques).
    /// Only a hint for latency: a spinner that misses it finds the deque's
    /// tasks at its spin's end, in the re-checks every worker makes before
    /// it parks.
    pub(crate) fn alert_spinners(&self) {
        if !self.spin_watches_deques && !self.deque_alert.load(Ordering::Relaxed) {
            // Release: the spinner that takes it sees the deque's tasks
            // and the worker's `blocked` (or hog mark) stored before.
            self.deque_alert.store(true, Ordering::Release);
        }
    }

    /// Takes the deque alert, if raised (a spinner's look: a read while
    /// it is down).
    pub(crate) fn take_deque_alert(&self) -> bool {
        self.deque_alert.load(Ordering::Relaxed) && self.deque_alert.swap(false, Ordering::AcqRel)
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// The address of the pool's host, to tell runtimes apart.
    pub(crate) fn host_ptr(&self) -> *const () {
        self.host.as_ptr().cast::<()>()
    }

    /// Whether a worker of this pool would find something to run: in the
    /// injector or in a sibling's deque (work batch-stolen or woken there
    /// is stealable).
    pub(crate) fn has_work(&self) -> bool {
        !self.injector.is_empty() || self.used_slots().iter().any(|s| !s.stealer.is_empty())
    }

    /// Takes one task from the pool's queues, for a thread that is not one
    /// of its workers (the rescuer, a shutdown's drain): the injector
    /// first, then the workers' deques (a blocked worker's deque holds the
    /// tasks its last poll spawned or woke, which no one else may run).
    pub(crate) fn steal_any(&self) -> Option<Runnable> {
        /// One task from `steal`'s source, retrying while contended.
        fn one(steal: impl Fn() -> crossbeam_deque::Steal<Runnable>) -> Option<Runnable> {
            loop {
                match steal() {
                    crossbeam_deque::Steal::Success(r) => return Some(r),
                    crossbeam_deque::Steal::Empty => return None,
                    crossbeam_deque::Steal::Retry => std::hint::spin_loop(),
                }
            }
        }
        one(|| self.injector.steal()).or_else(|| {
            self.used_slots()
                .iter()
                .find_map(|slot| one(|| slot.stealer.steal()))
        })
    }

    /// The slots a worker has ever held (the others' deques are empty).
    pub(crate) fn used_slots(&self) -> &[WorkerSlot] {
        // Acquire: pairs with the Release in `start_worker`, which comes
        // before the new worker can push anything on its deque.
        &self.slots[..self.slots_used.load(Ordering::Acquire)]
    }

    /// Step 3 of the module docs: queue from outside the pool, then kick.
    pub(crate) fn push_remote(self: &Arc<Self>, runnable: Runnable) {
        self.injector.push(runnable);
        self.notify();
    }

    /// Sends a task a worker holds but will not run (its LIFO slot or
    /// deque, handed off) to its home pool's queue: one taken from another
    /// pod in a batch goes back unrun, not repatriated.
    pub(crate) fn send_home(runnable: Runnable) {
        runnable.metadata().back_unrun();
        let home = runnable.metadata().home().clone();
        home.push_remote(runnable);
    }

    /// Kicks the pool if no worker is searching and one is parked or can be
    /// started ([`Idle::notify`]: no lock otherwise).
    pub(crate) fn notify(self: &Arc<Self>) {
        self.handle_kick(self.idle.notify());
    }

    /// Kicks the pool under its lock.
    pub(crate) fn kick(self: &Arc<Self>) {
        self.handle_kick(self.idle.kick());
    }

    /// [`Pool::kick`], saying whether a worker comes of it (one woken or
    /// started) or the rescuer is sent: not when every worker is running
    /// and none can be started, nor when the kick coalesced on a worker
    /// searching (kicked for work, which it runs first: see
    /// [`Idle::wake_idle`]).
    pub(crate) fn kick_reaches(self: &Arc<Self>) -> bool {
        let kick = self.idle.kick();
        let reaches = matches!(kick, Kick::Woke | Kick::Mayday);
        // A start reaches only if the OS gives the thread (refused, it
        // may leave nobody coming: the caller's fallback must run).
        self.handle_kick(kick) || reaches
    }

    /// Does what a kick's outcome asks of its caller.
    /// Returns whether a worker was woken or started (a start the OS
    /// refused is neither).
    pub(crate) fn handle_kick(self: &Arc<Self>, kick: Kick) -> bool {
        match kick {
            Kick::Woke => true,
            Kick::Skipped | Kick::Coalesced | Kick::Busy => false,
            Kick::Start(slot) => self.start_worker(slot),
            Kick::Mayday => {
                if let Some(host) = self.host.upgrade() {
                    host.mayday(self);
                }
                false
            }
            Kick::Closed => {
                self.pushed_after_close();
                false
            }
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
        if self.closing.must_drain_after_push() && !current::draining(self) {
            self.drain();
        }
    }

    /// Starts the thread for reserved slot `slot` (no lock held).
    fn start_worker(self: &Arc<Self>, slot: usize) -> bool {
        // Before the thread exists: its deque is in `used_slots` from then.
        self.slots_used.fetch_max(slot + 1, Ordering::Release);
        let result = match self.host.upgrade() {
            Some(host) => host.start_worker(self, slot),
            // The runtime is gone: its shutdown drained (or will drain) us.
            None => Err(StartError::Closed),
        };
        let err = match result {
            Ok(()) => return true,
            Err(StartError::Closed) => {
                let _ = self.idle.start_failed(slot);
                // Queued work is dropped by the shutdown's drains.
                self.pushed_after_close();
                return false;
            }
            Err(StartError::Os(err)) => err,
        };
        if self.start_failures.fetch_add(1, Ordering::Relaxed) == 0 {
            // Not `eprintln!`: a closed stderr must not panic here (inside
            // a waker, async-task would abort the process).
            let _ = writeln!(
                io::stderr(),
                "wq: could not start a worker thread for pool {} ({} pod {}): {err}; \
                 the pool's work runs on the rescuer thread until a worker can be started \
                 (check the process's thread limit, `ulimit -u`, and free memory)",
                self.id,
                self.scope,
                self.pod
            );
        }
        // The work stays queued: the protocol kicks a parked worker, or the
        // busy ones see it before they idle, or the pool, with no worker at
        // all, is handed to the rescuer (which retries the start at the
        // back-off's pace).
        // (`start_failed` never asks for a start: no recursion here.) Its
        // wake of a parked worker, if any, is not the start asked for.
        self.handle_kick(self.idle.start_failed(slot));
        false
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
        current::while_draining(self, || {
            // The workers' deques too: a worker blocked in `block_in_place`
            // may wait on a task in its own deque, which no worker of a
            // closed pool runs; dropped, it releases what the worker waits
            // on (a channel's sender), and the worker can exit.
            while let Some(runnable) = self.steal_any() {
                drop(runnable);
            }
        });
    }

    /// A shutdown waiting for the closed pool's workers: drops what is
    /// queued ([`drain`](Pool::drain)) and the tasks waiting in the
    /// workers' LIFO slots (a worker stuck in a poll never takes its own;
    /// a running one would have dropped it on its way out, as the pool is
    /// closed).
    pub(crate) fn drain_stragglers(&self) {
        debug_assert!(self.is_closed());
        self.drain();
        current::while_draining(self, || {
            for slot in self.used_slots() {
                while let Some(runnable) = slot.watch.lifo.steal() {
                    drop(runnable);
                }
            }
        });
        // What dropping those woke (their awaiters) is queued here.
        self.drain();
    }

    /// Marks the pool closed and releases its workers: they exit when they
    /// next look at their state. Queued tasks are dropped by the caller.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let wake = self.idle.close();
        self.idle.wake(wake);
    }

    /// A snapshot of the pool's workers, counters and latencies.
    pub(crate) fn metrics(&self) -> PoolSnapshot {
        let snap = self.idle.snapshot();
        let workers = PoolSnapshot::worker_states(
            snap.nr_workers,
            snap.nr_idle,
            snap.nr_kicked,
            snap.nr_searching,
            snap.nr_blocked,
            snap.nr_computing,
        );
        let mut m = PoolSnapshot::new(
            self.id,
            self.scope,
            self.pod,
            self.cpus.to_vec(),
            self.attrs.strict,
            self.attrs.highpri,
            self.idle.config().max_workers,
            workers,
        );
        m.tasks = self.registry.len();
        m.spin_watches_deques = self.spin_watches_deques;
        let k = &mut m.counters;
        let c = snap.counters;
        k.kicks = c.kicks;
        k.coalesced_kicks = c.coalesced_kicks;
        k.unparks = c.unparks;
        k.lock_acquisitions = c.lock_acquisitions;
        k.lock_contended = c.lock_contended;
        k.workers_created = c.workers_created;
        k.workers_culled = c.workers_culled;
        k.cm_wakeups = c.cm_wakeups;
        k.cpu_intensive = c.cpu_intensive;
        k.stepped_down = c.stepped_down;
        k.repatriated = self.repatriated.load(Ordering::Relaxed);
        k.lifo_stolen = self.lifo_stolen.load(Ordering::Relaxed);
        k.rescued = self.rescued.started.load(Ordering::Relaxed);
        k.worker_start_failures = self.start_failures.load(Ordering::Relaxed);
        // Made only if something was recorded: an idle pool's three empty
        // histograms (30 KiB each) were most of a big machine's snapshot.
        let (mut sched, mut poll, mut spawn) = (None, None, None);
        for c in self
            .slots
            .iter()
            .map(|s| &*s.counters)
            .chain(std::iter::once(&self.rescued))
        {
            m.add_worker(c, &mut sched, &mut poll);
        }
        self.capture.merge_spawns_into(&mut spawn);
        m.set_latencies(sched, poll, spawn);
        m
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
/// `fifo`: behind the worker's queued work rather than in its LIFO slot
/// (items a workqueue releases from its inactive list: released together,
/// they start in order).
pub(crate) fn schedule_spawned(pool: &Arc<Pool>, runnable: Runnable, fifo: bool) {
    let slot = if fifo {
        worker::Slot::Fifo
    } else {
        worker::Slot::Lifo
    };
    if let Some(runnable) = worker::schedule_local(runnable, slot) {
        runnable.metadata().stamp(crate::clock::now());
        pool.push_remote(runnable);
    }
}

/// The schedule function of every task: see the module docs.
pub(crate) fn schedule(runnable: Runnable, info: async_task::ScheduleInfo) {
    if runnable.metadata().home().is_closed() {
        // The clone keeps the pool alive once the task is queued (it may be
        // drained and freed by then, and the pool with its last reference).
        let home = runnable.metadata().home().clone();
        home.push_closed(runnable);
        return;
    }
    let meta = runnable.metadata();
    if meta.came_home() {
        meta.home().repatriated.fetch_add(1, Ordering::Relaxed);
    }
    let slot = if info.woken_while_running {
        worker::Slot::Yielded
    } else {
        worker::Slot::Lifo
    };
    if let Some(runnable) = worker::schedule_local(runnable, slot) {
        runnable.metadata().stamp(crate::clock::now());
        // The slow path: one Arc clone, as the task moves into the injector.
        let home = runnable.metadata().home().clone();
        home.push_remote(runnable);
    }
}

/// Whether the watchdog found the poll that just ran on this thread running
/// too long, and how (called by the task at the end of its poll, once).
///
/// The watchdog marks only a poll it granted a CPU-hog allowance: as that
/// poll ends, its worker serves the pool again, so the allowance goes here
/// (`Idle::revoke_hog`), not at the watchdog's next scan (until then the
/// pool read nobody serving: its pushes took the lock, and the rescuer
/// ran its tasks beside the free worker); that scan's revoke finds it
/// gone. Over the limit now, the worker looks at once (its step 1b).
#[inline]
pub(crate) fn long_poll() -> Option<LongPoll> {
    if HOG_MARKS.load(Ordering::Relaxed) == 0 {
        return None;
    }
    current::with_worker(|w| {
        w.and_then(|l| {
            let long = l.long_poll()?;
            l.end_allowance();
            Some(long)
        })
    })
}

/// Runs `f`, which blocks the thread, without stalling the worker's pool:
/// see [`worker::leave_count`].
pub(crate) fn block_in_place<R>(f: impl FnOnce() -> R) -> R {
    worker::leave_count(f, true)
}

/// Runs `f`, a CPU-intensive poll (a `cpu_intensive()` item's, or a task
/// the watchdog found hogging its CPU), out of the pool's count as
/// [`block_in_place`] does, but counted as no block: the kick it makes for
/// queued work is no `cm_wakeup` (nor is the kernel's for a
/// `WQ_CPU_INTENSIVE` item).
pub(crate) fn run_cpu_intensive<R>(f: impl FnOnce() -> R) -> R {
    worker::leave_count(f, false)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{SMALL_POOL, Spinners, spin_watches_deques};

    #[test]
    fn narrow_pools_watch_the_deques_wide_ones_the_injector() {
        for n in 1..=SMALL_POOL {
            assert!(spin_watches_deques(None, n), "{n} workers");
        }
        for n in [SMALL_POOL + 1, 8, 16, 64] {
            assert!(!spin_watches_deques(None, n), "{n} workers");
        }
        // The setting wins either way.
        assert!(spin_watches_deques(Some(true), 64));
        assert!(!spin_watches_deques(Some(false), 2));
    }

    #[test]
    fn spinners_are_limited_and_uncounted_when_they_stop() {
        let s = Spinners::new(2);
        let a = s.try_start().expect("first spinner");
        let b = s.try_start().expect("second spinner");
        assert!(s.try_start().is_none(), "a third spins beside two");
        drop(a);
        let c = s.try_start().expect("a slot freed by a stop");
        assert!(s.try_start().is_none());
        drop((b, c));
        let one = Spinners::new(1);
        let g = one.try_start().unwrap();
        assert!(one.try_start().is_none());
        drop(g);
        assert!(one.try_start().is_some());
        // Unlimited: as many as search.
        let all = Spinners::new(usize::MAX);
        let many: Vec<_> = (0..64).map(|_| all.try_start().unwrap()).collect();
        assert_eq!(many.len(), 64);
    }
}
