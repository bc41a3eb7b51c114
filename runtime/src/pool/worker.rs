//! A worker: one OS thread of a pool, bound to the pool's `run_cpus` (its
//! pod's CPUs; a non-strict `cache_shard` pool's, its cache's) by the
//! scheduler that starts it.
//!
//! # Loop (the steps are those of [`super::idle`])
//! 1. **Work**: take a task ([`Core::find_work`]) and run it, repeat. A
//!    searcher that finds one stops searching; if it was the last searcher
//!    it kicks the pool (the kernel's chaining: the search is handed on,
//!    so a parked sibling is woken to look for the next item, and the
//!    producer of that item finds a searcher and takes no lock).
//! 2. **Search**: with nothing found, become a searcher (at most half the
//!    workers, rounded up, and at least two, search at once) and look again: a producer that skips its
//!    kick because someone searches relies on this look, or on the last
//!    searcher's re-check when it stops.
//! 3. **Spin**: a searcher (at most `Builder::spinning_workers` of them,
//!    default all that search) watches the pool's **injector** for up to
//!    its spin budget, yielding the CPU every [`SPIN_YIELD_EVERY`] (in a
//!    pool of at most [`super::SMALL_POOL`] workers, the deques too: at
//!    most two search there, and what follows does not apply). Not
//!    the other workers' deques: work pushed there by a running worker is
//!    left to it, to the sibling that finishes its own work first
//!    (`find_work` steals), and to the spin's end: the last searcher's
//!    re-check (step 4) or the idle re-check (step 5) finds
//!    it, so a deque's task waits at most one spin budget for a spinner
//!    and a producer that skipped its kick is still covered. Spinners that
//!    stole from deques the moment a task showed took batches of one or
//!    two from a spawning worker, every steal pulling its deque's lines
//!    away from it: on 16 CPUs tokio's spawn_many and ping_pong ran 0.90-1.07x
//!    tokio's time that way, 0.85-0.90x this way, the seed shape (remote
//!    producers, the injector) unchanged (`docs/benchmarks.md`, section 12).
//!    Deque work that no running worker will get to soon is put where
//!    spinners look: a driver turn (a parked worker's, or a busy one's
//!    maintenance turn) keeps the last task it wakes in the LIFO slot and
//!    queues the ones that displaces on the injector ([`schedule_local`]);
//!    a worker that blocks in [`block_in_place`](leave_count), or whose poll the
//!    watchdog finds past the CPU-hog threshold, with tasks on its deque,
//!    raises the pool's **deque alert** (and the watchdog moves the
//!    deque to the injector at each look past the threshold, as many
//!    tasks as it holds then), which the next spinner takes as a hit (and
//!    then steals from the deques, raising it again while blocked or
//!    hogging workers' deques hold more than its steal takes; one whose
//!    tasks are gone is no hit). A task in the LIFO slot from before a
//!    maintenance turn goes to the deque when the turn's first wake
//!    displaces it, as outside a turn: only tasks the turn itself put in
//!    the slot are displaced to the injector. A parked worker costs
//!    a futex wakeup (a context switch each way), a
//!    spinning one answers in well under a microsecond; but a spinning
//!    worker burns CPU time that the kernel's fair scheduler charges to it,
//!    and while it is off its CPU, counted as searching, no other worker is
//!    kicked for new work. So the budget adapts ([`Spin`]): each spin in a
//!    row that finds nothing halves it (down to a sixteenth of the
//!    maximum), one that finds work restores it; the spin yields once
//!    [`SPIN_YIELD_EVERY`] has passed since its last yield (a thread woken
//!    on its CPU waits for it no longer), and a yield that returned after
//!    more than [`PREEMPTED`] (a scheduler slice: another thread holds the
//!    CPU) ends it. No cooldown follows: a worker that stopped spinning for 20 ms
//!    after two such yields (as it did until 2026-12-05) parked and was
//!    woken per item beside busy neighbours (the seed shape's p95 enqueue
//!    7-9 us against 0.1-0.4 us without it) and per request beside an
//!    HTTP load generator (about twice the thread switches per request):
//!    `docs/benchmarks.md`, sections 6 and 9.
//! 4. **Stop searching**; the last searcher re-checks the queues.
//! 5. **Enter idle**, then **park** for `idle_timeout`; on every return,
//!    leave idle (with a cull pass): run, search, park again, or exit.
//!
//! # Where `find_work` looks, in order
//! - every [`GLOBAL_QUEUE_INTERVAL`] ticks, the injector first (fairness:
//!   two tasks waking each other must not starve the pool's queue);
//! - after a task yielded (woke itself while running) into the deque, one
//!   task of the injector first: a task yielding in a loop, the deque
//!   otherwise empty, ran again at once, and what waited in the injector
//!   (a spawn from another thread, maybe what it waited for) only at the
//!   interval's turn;
//! - the LIFO slot, at most [`MAX_LIFO_POLLS`] times in a row;
//! - the worker's own deque, then the injector (a batch);
//! - the deques of the pool's other workers;
//! - unless the pool is strict, the injectors of other pods' pools of the
//!   same scope (of every scope whose pod the pool is, their pods merged:
//!   `Served::steal`), nearest first (counted as remote steals), at most half
//!   of one (`steal_half_into`). A batch taken
//!   there kicks this worker's own pool: the rest of it waits in this
//!   worker's deque, where only its siblings look, and a worker not
//!   searching hands no search on.
//!
//! [`super::current`] holds the worker's [`Local`], so the schedule
//! function can find its LIFO slot and deque when a task is woken on a
//! worker of its home pool.
//!
//! # The deferred end
//! A named workqueue's task ends with bookkeeping on its queue: the
//! statistics of its last poll (its CPU time, `started`) and its finish
//! (its `max_active` slot back, its count in flight down, which may
//! release the next item or answer a flush). It comes after whatever the
//! task did last -- as a rule, telling someone it is done -- so a producer
//! woken by that and queueing its next item found the worker still in the
//! bookkeeping, not looking: on a 2-CPU VM, 100 ns there cost the
//! `test_workqueue` shape about 29% (`docs/benchmarks.md` as of `faa1f9f`,
//! section 3). So a
//! task whose future is dropped as its own run on a worker ends
//! (`Local::running` is that task) hands its end
//! ([`crate::task::TaskEnd`]) to the worker ([`defer_end`],
//! `Local::end`), which runs it right after its next look at its queues
//! ([`Core::find_work`], found or not), before it runs what it found,
//! searches, spins or parks: at most one look later, never behind another
//! task's poll, nor behind an output's `Drop` (one dropped where the task
//! ends because its handle was detached runs the end first:
//! [`run_deferred_end`]). Other code may run first: the awaiter's waker,
//! woken as the task ends (another executor's, run inline), and the wakers
//! of a driver turn in that look. With nothing
//! found, it looks once more after the end, at its own LIFO slot and
//! deque: the end may have woken a task into its LIFO slot (a flush's
//! waiter), where no sibling looks, and idling would strand it. Any other end runs at
//! once: on another thread (the rescuer, a thread dropping a task), and
//! for a task dropped during another task's poll (a runtime dropped inside
//! a task cancels its named items there, and that poll may then wait, in
//! the shutdown, for a blocking job that waits for their flush). A
//! `TaskEnd` runs when dropped, so an unwinding worker loses none.
//!
//! # Blocking
//! [`block_in_place`](leave_count) takes the worker out of the pool's count while its
//! closure blocks the thread ([`super::idle`] step 7): the LIFO task moves
//! to the (stealable) deque, a sibling is kicked or started if work is
//! queued, and wakes on this thread go to the pool's injector until it is
//! back. A deque is looked at only when the injector is empty: the
//! watchdog moves the deque of a worker blocked longer than the CPU-hog
//! threshold to the injector, so its tasks do not wait for the whole block
//! behind a busy queue.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_deque::{Steal, Worker as Deque};

use super::idle::Next;
use super::park::Parker;
use super::wake_queue::WakeQueue;
use super::{Host, LongPoll, Pool, current};
use crate::clock;
use crate::task::Runnable;

/// Check the pool's injector before the local queues every this many ticks
/// (Go's and tokio's value).
pub(crate) const GLOBAL_QUEUE_INTERVAL: u32 = 61;
/// A busy worker turns the I/O driver, without waiting, every this many
/// ticks (if nobody else turns it), so sockets and timers move on while
/// every worker is busy (tokio's `event_interval`).
pub(crate) const MAINTENANCE_INTERVAL: u32 = 61;
/// Polls of the LIFO slot in a row before the deque gets a turn (tokio's).
pub(crate) const MAX_LIFO_POLLS: u32 = 3;
/// Polls between two publications of a worker's plain counters
/// (`crate::metrics`'s capture protocol, step 1).
const PUBLISH_EVERY: usize = crate::metrics::SAMPLES;
/// Queue checks between two reads of the clock while spinning.
pub(crate) const SPIN_CHECKS: u32 = 8;
/// A spinning worker yields its CPU once this long has passed since its
/// last yield (or the spin's start): a thread woken on its CPU (the
/// producer its last item signalled) waits at most about this long for
/// it. Every 64 checks, as before, was every 6-10 us on the 2-vCPU VM
/// (each check reads lines other CPUs write), and the woken producer's
/// wait was most of the seed shape's round-trip tail
/// (`docs/benchmarks.md`, section 3). Every microsecond, as until
/// 2026-12-06, the quiet seed shape's `system` workers were in the
/// spinning mode (a spinner takes each item) in 8 of 30 runs, against 25
/// of 30 with 2 us (227K against 300K items/s at the median); and beside
/// a busy neighbour each yield is one more chance to lose the CPU to it
/// for a scheduler slice while counted as searching (new work coalesces
/// on a searcher; `docs/benchmarks.md`, section 5). A
/// spin whose budget misses have halved yields every half budget instead
/// ([`Spin::yield_every_ns`]): one that ended without a yield left a
/// producer woken on its CPU waiting for it to park, and the seed shape's
/// `system` workers parked per item in some runs (and at 4 or 8 us for
/// every spin, beside busy loops, the `cpu` ones).
pub(crate) const SPIN_YIELD_EVERY: Duration = Duration::from_micros(2);
/// A yield that takes this long means a thread that does not give the CPU
/// back ran on it: a busy neighbour holding a scheduler slice (0.75-3 ms
/// on current kernels), not one of the runtime's own short-lived threads
/// (a producer woken on this CPU runs for microseconds).
pub(crate) const PREEMPTED: Duration = Duration::from_micros(500);

/// What the schedule function needs of the worker running on this thread.
pub(crate) struct Local {
    pub(crate) pool: Arc<Pool>,
    pub(crate) slot: usize,
    deque: Deque<Runnable>,
    /// The scheduling clock, read once per poll (after it) and when the
    /// worker comes back from idle: the next poll's start, and the time
    /// the deferred end of the task that just ran is timed to.
    now: Cell<u64>,
    /// In `block_in_place`: wakes on this thread go to the injector.
    blocked: Cell<bool>,
    /// Back from `block_in_place` into a pool over its limit, or its
    /// poll's CPU-hog allowance given up ([`Local::end_allowance`]): try
    /// to step down after this poll (`idle` step 9).
    over_limit: Cell<bool>,
    /// Parked (perhaps turning the I/O driver): `now` is stale, so tasks
    /// a driver turn wakes here are stamped with the clock.
    parked: Cell<bool>,
    /// Its last park was in the I/O driver, and it has not asked anyone to
    /// take the driver since (`park`, "Attending the driver").
    left_driver: Cell<bool>,
    /// In a maintenance turn of the I/O driver (`find_work`).
    turning: Cell<bool>,
    /// The LIFO slot held a task woken before this maintenance turn: the
    /// first task the turn puts there displaces it, and it keeps its place
    /// on the deque.
    held_before_turn: Cell<bool>,
    /// The CPU this worker stands for when the topology is not this
    /// machine's (placement of its spawns).
    pub(crate) virtual_cpu: usize,
    /// Its number among its runtime's live workers (`Host::worker_numbers`):
    /// its timer shard.
    pub(crate) number: usize,
    /// Its runtime (the thread holds it for its whole life): reached
    /// without the pool's `Weak`, whose upgrade in `block_in_place` was a
    /// read-modify-write of the one count every worker shares.
    host: Arc<dyn Host>,
    /// The deferred end of the named task it ran last (module docs, "The
    /// deferred end"): run after its next look at its queues.
    end: Cell<Option<crate::task::TaskEnd>>,
    /// The task whose `run` is in progress (its metadata's address; null
    /// between runs): only its own end is deferred.
    running: Cell<*const crate::task::TaskMeta>,
    /// That task's waker's data pointer (async-task's task pointer): a
    /// `JoinHandle` the task awaits with its own waker gives it to
    /// async-task as it is ([`is_running_tasks_waker`]).
    running_waker: Cell<*const ()>,
    /// A task yielded (woke itself while running) into the deque since
    /// the last look at the queues: the pool's queue goes first at the
    /// next one (`find_work`).
    yielded: Cell<bool>,
}

/// Runs the current worker's deferred end now, if it holds one (before a
/// task's output is dropped where the task ends: user code).
pub(crate) fn run_deferred_end() {
    let end = current::with_worker(|local| local.and_then(|l| l.end.take()));
    drop(end);
}

/// Keeps `end` (the end of the task of `meta`: its last poll's
/// statistics and its finish) for the current worker to run after its
/// next look at its queues, if that task is the one the worker is
/// running (its own future dropped at the end of its run); runs it now
/// otherwise: on any other thread, or for a task dropped during another
/// task's poll (a runtime dropped inside a task cancels its named items
/// there, and that poll may then wait, in the shutdown, for a job that
/// waits for their flush).
pub(crate) fn defer_end(end: crate::task::TaskEnd, meta: &crate::task::TaskMeta) {
    let now = current::with_worker(|local| match local {
        Some(l) if std::ptr::eq(l.running.get(), meta) => l.end.replace(Some(end)),
        _ => Some(end),
    });
    // Run after the closure, not inside it: a finish may wake a flush's
    // task, which comes back to this worker (`schedule_local`).
    drop(now);
}

/// Whether `waker` is the waker of the task this worker runs now (a wq
/// task's waker, which does not panic: `task::join`'s relay is for the
/// others).
pub(crate) fn is_running_tasks_waker(waker: &std::task::Waker) -> bool {
    current::with_worker(|local| local.is_some_and(|l| l.running_waker.get() == waker.data()))
}

/// Where [`schedule_local`] puts a task on its worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The LIFO slot (a spawn, a wake): run next.
    Lifo,
    /// The back of the deque: behind the worker's queued work (items a
    /// workqueue releases from its inactive list, which start in order).
    Fifo,
    /// The back of the deque, and the pool's queue looked at first next
    /// time: a task that woke itself while running (a yield).
    Yielded,
}

/// Schedules `runnable` on the current worker if it is a worker of the
/// task's home pool (and not blocked), as `slot` says; gives it back
/// otherwise.
#[inline]
pub(crate) fn schedule_local(runnable: Runnable, slot: Slot) -> Option<Runnable> {
    current::with_worker(|local| {
        let Some(local) = local else {
            return Some(runnable);
        };
        if !Arc::ptr_eq(&local.pool, runnable.metadata().home()) || local.blocked.get() {
            return Some(runnable);
        }
        // Queued now: the clock (a task spawned or woken late in a long
        // poll was charged the poll's part before, stamped with the poll's
        // start; one woken during its own poll, with that whole poll).
        runnable.metadata().stamp(clock::now());
        if slot != Slot::Lifo {
            local.deque.push(runnable);
            // Only a yield: a released item set it too, and the worker
            // whose deferred ends released a queue's next items looked at
            // the pool's queue first at nearly every tick, taking a task
            // queued after them ahead of them (A, X, B, C).
            if slot == Slot::Yielded {
                local.yielded.set(true);
            }
        } else {
            // An empty slot took it: scheduled (`None`), no kick (the
            // worker runs it next).
            let prev = local.lifo().put(runnable)?;
            // Displacing a task this driver turn woke (a parked worker's
            // slot is empty when it parks)?
            let woken_by_turn = local.parked.get()
                || (local.turning.get() && !local.held_before_turn.replace(false));
            if woken_by_turn && !local.pool.spin_watches_deques {
                // A driver turn woke more than one (a burst of sockets):
                // the last stays in the LIFO slot, the ones it displaces
                // go where spinners look (step 3 of the module docs), not
                // to a deque they would wait on for a spin's length.
                local.pool.injector.push(prev);
            } else {
                local.deque.push(prev);
            }
        }
        // The deque is stealable: let an idle sibling help (step 1 of
        // `idle`, lock-free unless nobody searches and one is parked).
        local.pool.notify();
        None
    })
}

/// Drops the tasks in the calling worker's LIFO slot and deque (its
/// runtime is shutting down from inside one of its tasks, on this worker).
pub(crate) fn drop_local_tasks() {
    let Some(local) = current::worker() else {
        return;
    };
    drop(local.lifo().take());
    while let Some(r) = local.deque.pop() {
        drop(r);
    }
}

/// Runs `f`, which blocks the thread (or computes for long), on a worker
/// without stalling its pool: see the module docs. Elsewhere it just runs
/// `f`. `blocks`: `f` blocks, and a worker it lets in for queued work is
/// a `cm_wakeup` (not for a CPU-intensive poll).
pub(crate) fn leave_count<R>(f: impl FnOnce() -> R, blocks: bool) -> R {
    let Some(local) = current::worker() else {
        return f();
    };
    // Nested, or not in a poll: a worker runs foreign code between polls
    // (a waker in its driver turn, parked or in a busy worker's zero-wait
    // turn; a flush's waiter woken by a named item's end; a future dropped
    // as it shuts down). A slot that is not running (parked: idle) cannot
    // block, and one between polls may count as searching (which the
    // block would hold, so that every kick coalesced with it) or hold the
    // driver (which the block would keep) or a task it took.
    if local.blocked.get() || local.parked.get() || local.running.get().is_null() {
        return f();
    }
    // Its LIFO task to the stealable deque, where `block` below sees it.
    // (Not the injector: a short block, the common case, would move a
    // stolen batch back and forth, 1.2x the `block_in_place` shape's time.
    // A long one has its deque moved there by the watchdog.)
    if let Some(r) = local.lifo().take() {
        local.deque.push(r);
    }
    local.blocked.set(true);
    let watch = &local.pool.slots[local.slot].watch;
    watch.blocked_at.store(clock::now(), Ordering::Relaxed);
    // Release: the watchdog that reads `blocked` reads `blocked_at` too.
    watch.blocked.store(true, Ordering::Release);
    // Its deque waits for the block: a spinner must look there (step 3
    // of the module docs) before the kick below finds it searching and
    // coalesces. After `blocked`: the spinner that takes the alert looks
    // at the deques of blocked workers.
    if !local.deque.is_empty() {
        local.pool.alert_spinners();
    }
    let kick = local
        .pool
        .idle
        .block(local.slot, blocks, || local.pool.has_work());
    // Woken or started (a start the OS refused is neither).
    let coming = local.pool.handle_kick(kick);
    if blocks && coming {
        current::count_cm_wakeup();
    }
    // This worker may have been kicked out of the I/O driver into this
    // task, or woken to take it (by a thread that left it, which counted
    // on an idle worker) and found this task first: an idle worker takes
    // the driver, so that timers and sockets do not wait for `f` (`park`,
    // "Attending the driver"). The worker woken or started for the deque's
    // work, if any, runs that work first (a long poll there would hold the
    // driver up): it does not count. With none woken or started, one is
    // (the blocked worker no longer counts). A driver held by a zero-wait
    // turn is not attended: the attend is left to that turn's thread,
    // which kicks a pool itself if it finds nobody to wake.
    let left_driver = local.left_driver.replace(false);
    if (left_driver || local.host.driver_unparked()) && !local.host.attend_driver() && !coming {
        if left_driver {
            local.pool.kick();
        } else {
            // Only to have the driver turned: through the lock-free look
            // first (a pool whose slots are all running or starting, the
            // usual case while every worker is busy, needs no lock: a
            // busy worker's zero-wait turns cover the driver then).
            local.pool.notify();
        }
    }
    struct Unblock<'a>(&'a Local);
    impl Drop for Unblock<'_> {
        fn drop(&mut self) {
            if self.0.pool.idle.unblock(self.0.slot) {
                self.0.over_limit.set(true);
            }
            let watch = &self.0.pool.slots[self.0.slot].watch;
            watch.unblocked_at.store(clock::now(), Ordering::Relaxed);
            // Release: the watchdog that reads `blocked` false (Acquire)
            // reads this `unblocked_at`.
            watch.blocked.store(false, Ordering::Release);
            self.0.blocked.set(false);
            self.0.now.set(clock::now());
        }
    }
    let _unblock = Unblock(&local);
    f()
}

/// The body of a worker thread for reserved slot `slot` of `pool`, from
/// its start to its exit. The caller has bound the thread and entered the
/// runtime's context.
pub(crate) fn run(pool: &Arc<Pool>, slot: usize, runtime: &Arc<dyn Host>) {
    // A panic out of this body is a bug in wq (every task's poll, drop and
    // end is caught): the slot would stay reserved and counted among the
    // pool's workers, its deque gone, so work queued to the pool could
    // wait for good and a shutdown for its deadline. The process is
    // aborted instead, after the panic's message, as rayon's workers do.
    let _abort = AbortOnUnwind {
        what: "a worker thread",
        pool: pool.id,
    };
    let host: &dyn Host = &**runtime;
    /// The thread's number among the runtime's live workers, given back
    /// when it exits (or unwinds).
    struct Number<'a>(usize, &'a dyn Host);
    impl Drop for Number<'_> {
        fn drop(&mut self) {
            crate::loom::lock(self.1.worker_numbers()).give(self.0);
        }
    }
    let number = Number(crate::loom::lock(host.worker_numbers()).take(), host);
    let mut core = Core::new(pool.worker_spin);
    let parker = Parker::new();
    pool.slots[slot]
        .watch
        .tid
        // SAFETY: gettid has no preconditions.
        .store(unsafe { libc::gettid() }, Ordering::Relaxed);
    pool.slots[slot]
        .watch
        .cpu_clock
        .store(crate::clock::this_threads_cpu_clock(), Ordering::Relaxed);
    #[cfg(not(loom))]
    pool.idle.started(slot, parker.unparker());
    // Under loom only the protocol is modeled (`idle::loom_tests`); this
    // loop is compiled, not run.
    #[cfg(loom)]
    pool.idle.started(slot, crate::loom::thread::current());
    let mut next = Next::Search;
    loop {
        let deque = crate::loom::lock(&pool.slots[slot].deque)
            .take()
            .expect("a slot's deque is back before the slot is reused");
        let local = Rc::new(Local {
            pool: pool.clone(),
            slot,
            deque,
            now: Cell::new(clock::now()),
            blocked: Cell::new(false),
            over_limit: Cell::new(false),
            left_driver: Cell::new(false),
            turning: Cell::new(false),
            held_before_turn: Cell::new(false),
            parked: Cell::new(false),
            virtual_cpu: virtual_cpu(&pool.cpus, slot, pool.idle.config().max_workers),
            number: number.0,
            host: runtime.clone(),
            end: Cell::new(None),
            running: Cell::new(std::ptr::null()),
            running_waker: Cell::new(std::ptr::null()),
            yielded: Cell::new(false),
        });
        #[cfg(all(test, not(loom)))]
        if tests::PANIC_OUTSIDE_POLLS.load(Ordering::Relaxed) {
            panic!("injected: a bug in a worker's loop, outside any task's poll");
        }
        current::as_worker(&local, || {
            core.work_until_exit(&local, host, &parker, next == Next::Search);
            // Its last task's end, if the loop left with one kept.
            drop(local.end.take());
        });
        let local = Rc::try_unwrap(local).unwrap_or_else(|_| {
            unreachable!("the clones `current::worker` gives are dropped in the run")
        });
        let left_driver = local.left_driver.get();
        // Anything left: the pool is closed (the tasks are dropped, as the
        // shutdown drops everything queued), or we were culled, and a task
        // may have been queued here since we went idle: a worker parked in
        // the I/O driver turns it, and the tasks its turn wakes come to its
        // own LIFO slot and deque. Those go back to their home pools.
        let leftovers = pool.slots[slot]
            .watch
            .lifo
            .take()
            .into_iter()
            .chain(std::iter::from_fn(|| local.deque.pop()));
        for r in leftovers {
            if r.metadata().home().is_closed() {
                drop(r);
            } else {
                Pool::send_home(r);
            }
        }
        *crate::loom::lock(&pool.slots[slot].deque) = Some(local.deque);
        core.publish(pool, slot);
        next = pool.idle.exit(slot);
        // Culled out of the driver: an idle worker takes it -- also when
        // this thread is drafted as a new worker (it runs queued work,
        // not the driver, and the others may sleep on their futexes).
        // Closed out of it too: a `block_on` thread may sleep beside the
        // driver as a waiter (the shutdown's thread itself, in a `Drop`
        // its drain runs, which would wait its whole park: nobody else
        // turns the driver then).
        if left_driver {
            host.attend_driver();
        }
        if next == Next::Exit {
            break;
        }
    }
}

/// Aborts the process if dropped while its thread unwinds: a panic out of
/// a runtime thread's loop, outside any task's poll, is a bug in wq that
/// leaves the runtime's accounting wrong (see [`run`]).
pub(crate) struct AbortOnUnwind {
    /// The thread, for the message: "a worker thread", "the rescuer".
    pub(crate) what: &'static str,
    /// Its pool's id (the rescuer's: none, `usize::MAX`).
    pub(crate) pool: usize,
}

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let of = if self.pool == usize::MAX {
            String::new()
        } else {
            format!(" of pool {}", self.pool)
        };
        eprintln!(
            "wq: {}{of} panicked outside any task's poll (the message above): a bug in wq, \
             please report it; aborting, as the runtime's accounting of its threads can no \
             longer be trusted",
            self.what
        );
        std::process::abort();
    }
}

impl Local {
    /// This worker's LIFO slot (in its pool slot, where the watchdog can
    /// reach it: [`super::lifo`]).
    #[inline]
    fn lifo(&self) -> &super::lifo::LifoSlot<Runnable> {
        &self.pool.slots[self.slot].watch.lifo
    }

    /// Moves the tasks of this worker's LIFO slot and deque to their home
    /// pools' injectors, where every worker of a pool looks (a deque is
    /// looked at by the others only when their own queues and the injector
    /// are empty): this pool's without a kick (the caller kicks once),
    /// another pool's (a remote steal's batch) with its own.
    fn hand_off(&self) {
        let lifo = self.lifo().take();
        for r in lifo
            .into_iter()
            .chain(std::iter::from_fn(|| self.deque.pop()))
        {
            if Arc::ptr_eq(r.metadata().home(), &self.pool) {
                self.pool.injector.push(r);
            } else {
                Pool::send_home(r);
            }
        }
    }

    /// Whether this worker's own LIFO slot or deque holds a task.
    fn has_local_work(&self) -> bool {
        !self.lifo().is_empty() || !self.deque.is_empty()
    }

    /// The worker's scheduling clock: its last read, at the end of its
    /// previous poll or as it came back from idle; as a poll begins, that
    /// poll's start (a `block_in_place` in the poll reads it again as it
    /// returns).
    pub(crate) fn clock(&self) -> u64 {
        self.now.get()
    }

    /// The poll this worker runs, granted a CPU-hog allowance, ends: the
    /// allowance goes (`super::long_poll` says why), and this worker looks
    /// whether the pool is over its limit after the poll.
    pub(crate) fn end_allowance(&self) {
        self.pool.idle.revoke_hog(self.slot);
        self.over_limit.set(true);
    }

    /// Whether the watchdog marked the poll this worker runs, and how.
    pub(crate) fn long_poll(&self) -> Option<LongPoll> {
        let w = &self.pool.slots[self.slot].watch;
        // Acquire: pairs with the watchdog's Release of the mark, so the
        // two flags read below are the ones stored with it.
        let hog = w.hog.load(Ordering::Acquire);
        if hog == 0 || hog != w.poll_started.load(Ordering::Relaxed) {
            return None;
        }
        Some(if w.hog_on_cpu.load(Ordering::Relaxed) {
            LongPoll::OnCpu
        } else {
            LongPoll::Blocked {
                woke: w.hog_woke.load(Ordering::Relaxed),
            }
        })
    }
}

/// A worker's spin budget (see the module docs).
struct Spin {
    max_ns: u64,
    /// Spins in a row that found nothing: the budget is the maximum halved
    /// that many times (at most [`MAX_MISS_SHIFT`]); a hit resets it.
    misses: u32,
}

/// The budget never drops below the maximum over 2^this: a spin stays
/// cheap when work is rare, and one hit brings the whole budget back.
const MAX_MISS_SHIFT: u32 = 4;

impl Spin {
    fn new(max: Duration) -> Spin {
        let max_ns = max.as_nanos().min(u128::from(u64::MAX)) as u64;
        Spin { max_ns, misses: 0 }
    }

    /// How long the next spin may last.
    fn budget_ns(&self) -> u64 {
        self.max_ns >> self.misses.min(MAX_MISS_SHIFT)
    }

    /// How long the spin may go without yielding: [`SPIN_YIELD_EVERY`],
    /// or half the budget if that is shorter, so that a spin whose misses
    /// shrank its budget still yields before it ends (see the constant;
    /// the clock is read after each round of [`SPIN_CHECKS`], and a spin
    /// that has not yielded by the end of its budget yields as it ends).
    fn yield_every_ns(&self) -> u64 {
        (SPIN_YIELD_EVERY.as_nanos() as u64).min(self.budget_ns() / 2)
    }

    /// A spin found work: the whole budget next time.
    fn hit(&mut self) {
        self.misses = 0;
    }

    /// A spin found none: half as long next time (down to the floor).
    fn miss(&mut self) {
        self.misses = (self.misses + 1).min(MAX_MISS_SHIFT);
    }

    /// Whether to spin at all.
    fn allowed(&self) -> bool {
        self.max_ns > 0
    }
}

/// Loop state that only the worker thread touches.
struct Core {
    tick: u32,
    lifo_streak: u32,
    spin: Spin,
    /// Polls whose counts are not yet published (step 1 of the capture
    /// protocol; their latencies are recorded already).
    unpublished: usize,
    started: u64,
    completed: u64,
    remote_steals: u64,
    sibling_steals: u64,
    /// Where a remote steal's batch lands first, so that each of its
    /// tasks is marked away from home before it joins the deque.
    scratch: Deque<Runnable>,
    spin_hits: u64,
    spin_backoffs: u64,
}

impl Core {
    fn new(spin: Duration) -> Core {
        Core {
            tick: 0,
            lifo_streak: 0,
            spin: Spin::new(spin),
            unpublished: 0,
            started: 0,
            completed: 0,
            remote_steals: 0,
            sibling_steals: 0,
            scratch: Deque::new_fifo(),
            spin_hits: 0,
            spin_backoffs: 0,
        }
    }

    fn work_until_exit(
        &mut self,
        local: &Local,
        host: &dyn Host,
        parker: &Parker,
        mut searching: bool,
    ) {
        let pool = &local.pool;
        let idle_timeout = pool.idle.config().idle_timeout;
        'work: loop {
            // 1. Work.
            local.now.set(clock::now());
            let mut step_down = false;
            while !pool.is_closed() {
                let mut found = self.find_work(local, host);
                // The last task's end, after this look (module docs, "The
                // deferred end"). It may queue a task here (a flush's
                // waiter woken into the LIFO slot, where no sibling looks;
                // the queue's next item, released to the deque): with
                // nothing found, look there again, or it would idle with
                // it. Only there: what it queued elsewhere is seen by the
                // idle re-check, and a second full look would scan every
                // sibling and remote pod again.
                if let Some(mut end) = local.end.take() {
                    // Timed to the clock read as its run ended (no read
                    // since: `find_work` sets no time).
                    end.ended_at(local.now.get());
                    drop(end);
                    // Not on a closed pool: a queue's next item released by
                    // the end, before the shutdown closed the queues, would
                    // have its first poll in the shutdown (the drains take
                    // it instead).
                    if found.is_none() && !pool.is_closed() {
                        found = local.lifo().take().or_else(|| local.deque.pop());
                    }
                }
                let Some(runnable) = found else {
                    break;
                };
                if searching {
                    searching = false;
                    if pool.idle.stop_searching() {
                        // The last searcher found work: hand the search on.
                        pool.notify();
                    }
                }
                self.run_task(local, runnable);
                // 1b. Over the limit? (`idle` step 9: after a poll back
                // from blocking or whose CPU-hog allowance this worker gave
                // up, and every so many ticks.) Not once closed:
                // the shutdown drops what is queued.
                if (local.over_limit.replace(false)
                    || self.tick.is_multiple_of(GLOBAL_QUEUE_INTERVAL))
                    && pool.idle.over_limit()
                    && !pool.is_closed()
                {
                    step_down = true;
                    break;
                }
            }
            // Left after a poll (stepping down, or the pool closed): the
            // end goes before the worker idles, timed as in the loop.
            if let Some(mut end) = local.end.take() {
                end.ended_at(local.now.get());
                drop(end);
            }
            // No task runs: nothing for the watchdog to time.
            pool.slots[local.slot]
                .watch
                .poll_started
                .store(0, Ordering::Relaxed);
            if step_down {
                // Its tasks to where the others look, before it is on the
                // idle list (the others' idle re-check sees them),
                // queued as a producer queues: the kick is skipped while
                // the others fill the limit, and drops them if the pool
                // closed meanwhile. (If the step down then finds the pool
                // no longer over, they are run from there.)
                if local.has_local_work() {
                    local.hand_off();
                    pool.notify();
                }
                self.publish(pool, local.slot);
                if pool.idle.step_down(local.slot, Instant::now()) != Next::Park {
                    continue 'work;
                }
            } else {
                if !pool.is_closed() {
                    // 2. Search: counted first, then look again.
                    if !searching && pool.idle.try_start_searching() {
                        searching = true;
                        continue 'work;
                    }
                    // 3. Spin, unless the I/O driver waits for someone to turn
                    // it: then park in it at once (a socket's readiness would
                    // wait for the spin to end).
                    if searching && !host.driver_unattended() && self.spin_for_work(pool) {
                        continue 'work;
                    }
                }
                // 4. Stop searching.
                if searching {
                    searching = false;
                    if pool.idle.stop_searching() && pool.has_work() {
                        // The last searcher found work after all: producers
                        // skipped their kicks while it searched, so hand
                        // the search on, as step 1 does (it ran a burst
                        // alone, the others asleep).
                        pool.notify();
                        continue 'work;
                    }
                }
                // 5. Enter idle, park. The counts are published first: a
                // reader that sees this worker idle (under the pool lock
                // `enter_idle` takes) sees them too.
                self.publish(pool, local.slot);
                match pool
                    .idle
                    .enter_idle(local.slot, Instant::now(), || pool.has_work())
                {
                    Next::Run => continue 'work,
                    // Claimed by a kick between its idle and its re-check:
                    // a searcher (the kick counted it).
                    Next::Search => {
                        searching = true;
                        continue 'work;
                    }
                    Next::Exit => return,
                    Next::Park => {}
                }
            }
            loop {
                // Counted as it parks, not at the next publish: an idle
                // pool shows the parks its workers are in (a park is slow
                // already; the slot's count has this worker for its only
                // writer).
                add(&pool.slots[local.slot].counters.parks, 1);
                // In the runtime's I/O driver if nobody turns it, else on
                // the futex (`park`).
                local.parked.set(true);
                parker.park(idle_timeout, |turn| {
                    host.turn_driver(super::Turn::Park, turn)
                });
                local.parked.set(false);
                // Left it now, or left it before and has not been back
                // (a park on a wakeup already pending never went there:
                // it cleared this, and a `block_in_place` after it
                // attended nobody while the driver sat free).
                local.left_driver.set(
                    parker.was_in_driver() || (local.left_driver.get() && !parker.tried_driver()),
                );
                let mut wake = WakeQueue::default();
                // Tasks the driver turn woke into this worker's LIFO slot
                // are work too.
                let next = pool.idle.leave_idle(
                    local.slot,
                    Instant::now(),
                    true,
                    !parker.was_woken(),
                    || local.has_local_work() || pool.has_work(),
                    &mut wake,
                );
                pool.idle.wake(wake);
                match next {
                    Next::Search => {
                        searching = true;
                        continue 'work;
                    }
                    Next::Run => continue 'work,
                    Next::Park => {
                        // Parked with tasks a driver turn woke here: the
                        // others fill the limit (`idle`, I7). They go to
                        // the injector, queued as a producer queues (I3:
                        // a kick if the others idled meanwhile).
                        if local.has_local_work() {
                            local.hand_off();
                            pool.notify();
                        }
                    }
                    Next::Exit => return,
                }
            }
        }
    }

    /// Step 3: watches the pool's queues for up to the spin budget. Returns
    /// whether to look at them again (work showed up, or the pool closed);
    /// counts a spin hit only for work found while spinning.
    fn spin_for_work(&mut self, pool: &Pool) -> bool {
        if !self.spin.allowed() {
            return false;
        }
        let mut start = clock::now();
        // Enough others spin: look once (done) and park.
        let Some(_spinning) = pool.spinners.try_start() else {
            return false;
        };
        let mut yielded = start;
        let yield_every = self.spin.yield_every_ns();
        loop {
            for _ in 0..SPIN_CHECKS {
                // The injector only, and the alert of a worker that left
                // tasks on its deque and will not run them soon (see the
                // module docs, step 3).
                let work = if pool.spin_watches_deques {
                    pool.has_work()
                } else if !pool.injector.is_empty() {
                    true
                } else if pool.take_deque_alert() {
                    deque_alert_hit(pool)
                } else {
                    false
                };
                if work {
                    self.spin.hit();
                    self.spin_hits += 1;
                    return true;
                }
                if pool.is_closed() {
                    return true;
                }
                std::hint::spin_loop();
            }
            let now = clock::now();
            // Moved to a CPU whose cycle counter is behind this one's (the
            // delay reads 0 until it catches up): the budget counts from
            // here, so the spin lasts at most twice it, not the skew too.
            if now < start {
                start = now;
                yielded = now;
            }
            if clock::delay_ns(start, now) >= self.spin.budget_ns() {
                // One round of checks outlasted half a short budget: the
                // spin yields once before it ends, as every other does (a
                // producer woken on this CPU would otherwise wait for the
                // park: `Spin::yield_every_ns`).
                if yielded == start {
                    std::thread::yield_now();
                }
                self.spin.miss();
                return false;
            }
            if clock::delay_ns(yielded, now) < yield_every {
                continue;
            }
            // Give the CPU to a runnable thread, if any (a producer woken
            // on this CPU): spinning must not delay the work it waits for.
            // Without one, sched_yield returns at once. After one that
            // took a scheduler slice, another thread holds this CPU (a
            // busy neighbour, a load generator): the spin ends (the worker
            // looks once more and parks). The next spin starts afresh: a
            // cooldown without spinning after two such yields made workers
            // park and be woken per item beside busy neighbours, and per
            // request beside a load generator (module docs, step 3).
            std::thread::yield_now();
            let back = clock::now();
            if clock::delay_ns(now, back) >= PREEMPTED.as_nanos() as u64 {
                self.spin_backoffs += 1;
                return pool.has_work();
            }
            yielded = back;
        }
    }

    fn find_work(&mut self, local: &Local, host: &dyn Host) -> Option<Runnable> {
        let pool = &local.pool;
        self.tick = self.tick.wrapping_add(1);
        // Half an interval away from the injector check below: on the same
        // tick, a task the turn woke into the LIFO slot (where siblings do
        // not look) waited behind the task the check takes first, every
        // maintenance turn.
        if self.tick % MAINTENANCE_INTERVAL == MAINTENANCE_INTERVAL / 2 {
            // Tasks it wakes of this pool land in this worker's LIFO slot
            // (the last; in a pool whose spinners watch the injector only,
            // the others on the injector: `schedule_local`).
            /// Clears `turning` even if the turn unwinds.
            struct Turning<'a>(&'a Local);
            impl Drop for Turning<'_> {
                fn drop(&mut self) {
                    self.0.turning.set(false);
                }
            }
            local.turning.set(true);
            local.held_before_turn.set(!local.lifo().is_empty());
            let turning = Turning(local);
            let turned = host.turn_driver(super::Turn::ZeroWait, &mut |d| {
                d.turn(Some(Duration::ZERO));
            });
            drop(turning);
            // A sibling of its pool that idled meanwhile found the driver
            // taken and sleeps on its futex: it takes the driver now (a
            // worker of another pool waits for its own pool's turns, or
            // the watchdog's, which asks every pool). An attend that found
            // this turn holding the driver was left to it: any pool's.
            if turned {
                std::sync::atomic::fence(Ordering::SeqCst);
                let coming = host.driver_unattended() && pool.idle.wake_idle();
                // (With one of its own pool coming to the driver, the
                // mark is taken and nobody else woken.) A turn does not
                // unwind: a waker's panic is caught (`driver::wake_all`).
                if host.take_deferred_attend() && !coming {
                    host.attend_driver_or_start();
                }
            }
        }
        // Every GLOBAL_QUEUE_INTERVAL polls, and after a yield, the pool's
        // queue first: a task that yields in a loop, the deque otherwise
        // empty, would run again at once, and what waits in the pool's
        // queue (a spawn from another thread, maybe what the task waits
        // for) with it only every 61 polls. One task, not a batch (as
        // tokio's interval check): a busy worker's batch would move up to
        // 32 of the queue into its deque, behind its own work, where
        // spinning siblings of a wide pool do not look; a batch is taken
        // when the deque is empty (below). (An empty queue is seen with
        // two loads, no fence.)
        if (local.yielded.replace(false) || self.tick.is_multiple_of(GLOBAL_QUEUE_INTERVAL))
            && !pool.injector.is_empty()
            && let Some(r) = steal_one(&pool.injector)
        {
            return Some(r);
        }
        if let Some(r) = local.lifo().take() {
            if self.lifo_streak < MAX_LIFO_POLLS {
                self.lifo_streak += 1;
                return Some(r);
            }
            local.deque.push(r);
        }
        self.lifo_streak = 0;
        if let Some(r) = local.deque.pop() {
            return Some(r);
        }
        if let Some(r) = steal_into(&pool.injector, &local.deque) {
            return Some(r);
        }
        let slots = pool.used_slots();
        let n = slots.len();
        for i in 1..n {
            let victim = &slots[(local.slot + i) % n].stealer;
            if victim.is_empty() {
                continue;
            }
            if let Some(r) = steal_into(victim, &local.deque) {
                // The task and the rest of its batch, now in this worker's
                // deque (empty before: its `pop` just found nothing); a
                // sibling stealing from it meanwhile makes this a few low.
                self.sibling_steals += 1 + local.deque.len() as u64;
                return Some(r);
            }
        }
        if !pool.attrs.strict
            && let Some(r) = host.steal_remote(pool, &mut |other| {
                steal_half_into(&other.injector, &self.scratch)
            })
        {
            // It and the rest of its batch run away from home: each is
            // counted as repatriated when it is next queued there (unless
            // it goes back unrun: `Pool::send_home`).
            r.metadata().went_away();
            self.remote_steals += 1;
            let mut batch = false;
            while let Some(t) = self.scratch.pop() {
                t.metadata().went_away();
                self.remote_steals += 1;
                local.deque.push(t);
                batch = true;
            }
            // The rest of the batch now waits behind `r` in this deque,
            // where the other pod's workers never look, and this worker
            // may not be searching (straight after a task of its own: no
            // search hand-off follows): kick a sibling to take it.
            if batch {
                pool.notify();
            }
            return Some(r);
        }
        None
    }

    fn run_task(&mut self, local: &Local, runnable: Runnable) {
        let start = local.now.get();
        // For the hog watchdog (a plain store on a line the worker owns:
        // the watchdog reads it, and writes it only to mark a long poll
        // and to take a task out of its LIFO slot).
        let watch = &local.pool.slots[local.slot].watch;
        // Release: the watchdog that reads this start (Acquire) reads this
        // thread's `tid` too, stored before (a slot's next thread stores
        // its own before its first poll).
        watch.poll_started.store(start.max(1), Ordering::Release);
        // The scheduling delay is always recorded (one subtraction and a
        // bucket's count in the slot's histogram, which only this thread
        // writes); poll durations only with latency capture on.
        let counters = &local.pool.slots[local.slot].counters;
        counters
            .sched_delay
            .record(clock::delay_ns(runnable.metadata().queued_at(), start));
        self.started += 1;
        // Polls and a future's Drop are caught inside the task (`TaskCell`),
        // and a task's output is dropped through `task::join::Guarded`:
        // async-task runs those drops under an abort-on-panic guard, so
        // they must not unwind to here. This catch is a last guard: the
        // worker's slot would be lost if it unwound.
        // Its own end (a named task's future dropped as its run ends) is
        // deferred: module docs, "The deferred end".
        local.running.set(runnable.metadata());
        // The task's pointer, which its wakers carry (a no-op round trip).
        let raw = runnable.into_raw();
        local.running_waker.set(raw.as_ptr());
        // SAFETY: the pointer `into_raw` just gave, used once.
        let runnable = unsafe { Runnable::from_raw(raw) };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::coop::with_budget(|| runnable.run())
        }));
        local.running.set(std::ptr::null());
        local.running_waker.set(std::ptr::null());
        // Between polls no poll runs: the watchdog must not time the
        // `find_work` that follows a long one against it (and take a task
        // a driver turn put in the LIFO slot meanwhile).
        watch.poll_started.store(0, Ordering::Relaxed);
        let end = clock::now();
        local.now.set(end);
        self.completed += 1;
        if local.pool.capture.enabled {
            // The poll's duration from the clock read the worker makes
            // anyway: from the end of the previous poll (or the return from
            // idle) to this one's end, so it includes `find_work`.
            counters.poll_time.record(clock::delay_ns(start, end));
        }
        self.unpublished += 1;
        if self.unpublished == PUBLISH_EVERY {
            self.publish(&local.pool, local.slot);
        }
    }

    /// Makes the local counters visible to metrics readers, and this
    /// thread's buffered spawn-call times (step 1 of the capture protocol;
    /// the latencies were recorded at each poll).
    fn publish(&mut self, pool: &Pool, slot: usize) {
        let c = &pool.slots[slot].counters;
        // The latencies were recorded at each poll (`metrics::capture`,
        // step 1): the histograms are ahead of the counters.
        self.unpublished = 0;
        // `completed` after `started`, released: a reader that loads
        // `completed` first (acquire) reads a `started` at least as new,
        // so it never sees more polls completed than started.
        add(&c.started, std::mem::take(&mut self.started));
        let completed = std::mem::take(&mut self.completed);
        if completed != 0 {
            c.completed.store(
                c.completed.load(Ordering::Relaxed) + completed,
                Ordering::Release,
            );
        }
        add(&c.remote_steals, std::mem::take(&mut self.remote_steals));
        add(&c.sibling_steals, std::mem::take(&mut self.sibling_steals));
        add(&c.spin_hits, std::mem::take(&mut self.spin_hits));
        add(&c.spin_backoffs, std::mem::take(&mut self.spin_backoffs));
        if pool.capture.enabled {
            crate::metrics::flush_spawns();
        }
    }
}

/// The CPU the worker in `slot` stands for (`Local::virtual_cpu`): with
/// at least as many workers as the pod has CPUs, the pod's `cpus` in turn
/// (slots are taken lowest first, so the first workers stand for different
/// CPUs); with fewer (a pool capped below its pod, on a synthetic layout
/// wider than the machine), its `max_workers` workers spread evenly over
/// the pod, so that their spawns at narrower scopes land in as many parts
/// of it as there are workers, not all in its first; a slot over
/// `max_workers` (a worker standing in for a blocked one) as the slot
/// `max_workers` below it.
fn virtual_cpu(cpus: &[usize], slot: usize, max_workers: usize) -> usize {
    let max = max_workers.max(1);
    if max >= cpus.len() {
        return cpus[slot % cpus.len()];
    }
    cpus[(slot % max) * cpus.len() / max]
}

/// A spinner took `pool`'s deque alert: whether it is a hit, tasks on the
/// deque of a worker that blocks or runs a CPU hog (a stale alert, its
/// tasks gone, is not; running workers' deques are theirs, as without an
/// alert). A steal takes half a deque (at most 32), a second worker may
/// have blocked meanwhile, and the spinner's look takes the injector
/// first: if more than its steal waits, the alert goes up again for the
/// next spinner.
#[cold]
fn deque_alert_hit(pool: &Pool) -> bool {
    let (mut deques, mut most) = (0, 0);
    for slot in pool.used_slots() {
        // Acquire: pairs with the Release of `blocked` (and the hog mark
        // is stored before the alert is raised).
        let held = slot.watch.blocked.load(Ordering::Acquire)
            || slot.watch.hog.load(Ordering::Relaxed) != 0;
        let n = if held { slot.stealer.len() } else { 0 };
        if n > 0 {
            deques += 1;
            most = most.max(n);
        }
    }
    let injected = !pool.injector.is_empty();
    if deques > 1 || most > 1 || (deques > 0 && injected) {
        pool.alert_spinners();
    }
    deques > 0 || injected
}

/// Adds `n` to a counter whose only writer is the calling worker: a load
/// and a store, no read-modify-write.
fn add(counter: &AtomicU64, n: u64) {
    if n != 0 {
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}

/// A source of tasks: the pool's injector or a sibling's deque.
trait Source {
    fn steal_batch_and_pop(&self, dest: &Deque<Runnable>) -> Steal<Runnable>;
}

impl Source for crossbeam_deque::Injector<Runnable> {
    fn steal_batch_and_pop(&self, dest: &Deque<Runnable>) -> Steal<Runnable> {
        crossbeam_deque::Injector::steal_batch_and_pop(self, dest)
    }
}

impl Source for crossbeam_deque::Stealer<Runnable> {
    fn steal_batch_and_pop(&self, dest: &Deque<Runnable>) -> Steal<Runnable> {
        crossbeam_deque::Stealer::steal_batch_and_pop(self, dest)
    }
}

/// Steals a batch into `dest` and pops one, retrying while contended.
fn steal_into(src: &impl Source, dest: &Deque<Runnable>) -> Option<Runnable> {
    loop {
        match src.steal_batch_and_pop(dest) {
            Steal::Success(r) => return Some(r),
            Steal::Empty => return None,
            Steal::Retry => std::hint::spin_loop(),
        }
    }
}

/// Takes one task from `src`, retrying while contended.
fn steal_one(src: &crossbeam_deque::Injector<Runnable>) -> Option<Runnable> {
    loop {
        match src.steal() {
            Steal::Success(r) => return Some(r),
            Steal::Empty => return None,
            Steal::Retry => std::hint::spin_loop(),
        }
    }
}

/// The most tasks a steal from another pod's queue takes (crossbeam's
/// own batch limit).
const MAX_REMOTE_BATCH: usize = 32;

/// Steals from another pod's queue into `dest` and pops one: at most half
/// of what the queue holds. Only this worker's pool sees `dest` after
/// (the other pod never looks in it), so a steal that took most of a
/// short queue -- crossbeam's batch takes everything to the end of the
/// queue's storage block when its tail is in the next one, up to 33 --
/// left the other pod's workers idle while its tasks waited here in a
/// row.
fn steal_half_into<T>(src: &crossbeam_deque::Injector<T>, dest: &Deque<T>) -> Option<T> {
    // An empty queue, the usual case for a searcher looking at each other
    // pod: two loads (`len` reads three, and the batch steal fences even
    // when it finds nothing).
    if src.is_empty() {
        return None;
    }
    loop {
        let limit = (src.len() / 2).clamp(1, MAX_REMOTE_BATCH);
        match src.steal_batch_with_limit_and_pop(dest, limit) {
            Steal::Success(r) => return Some(r),
            Steal::Empty => return None,
            Steal::Retry => std::hint::spin_loop(),
        }
    }
}

#[cfg(all(test, not(loom)))]
pub(crate) mod tests {
    use super::virtual_cpu;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Set in a child process: workers panic in their loop, outside any
    /// poll.
    pub(crate) static PANIC_OUTSIDE_POLLS: AtomicBool = AtomicBool::new(false);

    /// A worker whose loop panics outside any task's poll aborts the
    /// process with a message naming the bug (it died alone: its slot
    /// stayed counted among the pool's workers, and work queued to the
    /// pool waited for good).
    #[test]
    fn a_panic_outside_a_poll_aborts_with_a_message() {
        let out = crate::child_process::output(
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "pool::worker::tests::a_panic_outside_a_poll_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("WQ_PANIC_OUTSIDE_POLLS_CHILD", "1"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{:?}: {err}",
            out.status
        );
        assert!(
            err.contains("injected: a bug in a worker's loop")
                && err.contains("a worker thread of pool")
                && err.contains("a bug in wq"),
            "{err}"
        );
    }

    #[test]
    fn a_panic_outside_a_poll_child() {
        if std::env::var_os("WQ_PANIC_OUTSIDE_POLLS_CHILD").is_none() {
            return;
        }
        PANIC_OUTSIDE_POLLS.store(true, Ordering::Relaxed);
        let rt = crate::Runtime::new().unwrap();
        let h = rt.spawn(async {});
        // Never completes: the worker that would run it aborts the process.
        let _ = rt.block_on(h);
        unreachable!("the process aborted");
    }

    /// A steal from another pod's queue takes at most half of it, also
    /// where the queue's storage block ends inside the tasks queued (a
    /// plain batch then took 23 of 25).
    #[test]
    fn a_remote_steal_takes_at_most_half_of_the_queue() {
        for (before, queued) in [(0, 25), (40, 25), (60, 10), (0, 1), (0, 2), (0, 200)] {
            let injector = crossbeam_deque::Injector::new();
            // Moves the queue's head `before` tasks into its first block.
            for i in 0..before {
                injector.push(i);
            }
            while injector.steal().is_success() {}
            for i in 0..queued {
                injector.push(i);
            }
            let dest = super::Deque::new_fifo();
            assert_eq!(super::steal_half_into(&injector, &dest), Some(0));
            let taken = 1 + dest.len();
            let most = (queued / 2).clamp(1, super::MAX_REMOTE_BATCH);
            assert!(taken <= most, "took {taken} of {queued} (head at {before})");
            assert_eq!(taken + injector.len(), queued);
        }
    }

    #[test]
    fn workers_stand_for_cpus_spread_over_their_pod() {
        let cpus: Vec<usize> = (100..164).collect();
        // As many workers as CPUs: one each, and the stand-ins for blocked
        // workers (slots 64..128) again.
        let each: Vec<usize> = (0..128).map(|s| virtual_cpu(&cpus, s, 64)).collect();
        assert_eq!(&each[..64], &cpus[..]);
        assert_eq!(&each[64..], &cpus[..]);
        // Two workers over 64 CPUs: both halves of the pod, not its first
        // two CPUs.
        let two: Vec<usize> = (0..4).map(|s| virtual_cpu(&cpus, s, 2)).collect();
        assert_eq!(two, [100, 132, 100, 132]);
        // More workers than CPUs: the CPUs in turn, so the first two
        // workers stand for different ones.
        let few = [7, 9];
        let many: Vec<usize> = (0..8).map(|s| virtual_cpu(&few, s, 4)).collect();
        assert_eq!(many, [7, 9, 7, 9, 7, 9, 7, 9]);
    }

    /// A spin's yield interval is under its budget at any number of
    /// misses (with 2 us for all, a spin at the floor ended before its
    /// first yield and left a producer woken on its CPU waiting for the
    /// park: the seed shape parked per item), and a long one yields every
    /// `SPIN_YIELD_EVERY`, not more often.
    #[test]
    fn a_spin_yields_before_its_budget_ends() {
        use super::{MAX_MISS_SHIFT, SPIN_YIELD_EVERY, Spin};
        let every = SPIN_YIELD_EVERY.as_nanos() as u64;
        for max_us in [1, 3, 20, 100, 100_000] {
            let mut spin = Spin::new(std::time::Duration::from_micros(max_us));
            for _ in 0..=MAX_MISS_SHIFT + 1 {
                let (budget, yield_every) = (spin.budget_ns(), spin.yield_every_ns());
                assert!(
                    yield_every < budget && yield_every <= every,
                    "budget {budget} ns, a yield every {yield_every} ns"
                );
                if budget >= 2 * every {
                    assert_eq!(yield_every, every, "budget {budget} ns");
                }
                spin.miss();
            }
        }
    }
}
