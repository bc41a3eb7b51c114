//! A worker: one OS thread of a pool, bound to the pod's CPUs.
//!
//! # Loop
//! 1. **Work**: take a task (`find_work`), kick the pool if more is queued
//!    (chaining, so idle siblings join in), run it, repeat.
//! 2. **Enter idle** (protocol step 2 in [`super::idle`]): on the idle list,
//!    re-check the injector under the lock.
//! 3. **Spin** for up to `Config::spin` watching the injector, yielding the
//!    CPU every 64 checks to any thread that wants it: a parked
//!    worker costs a futex wakeup (about 18 µs each way on the development
//!    VM), a spinning one answers in well under a microsecond. A kick on a
//!    spinning worker is a plain unpark of a running thread (no syscall).
//! 4. **Park** for `idle_timeout`. On every return, protocol step 3 (with a
//!    cull pass): run, park again, or exit.
//!
//! # Where `find_work` looks, in order
//! - every [`GLOBAL_QUEUE_INTERVAL`] ticks, the injector first (fairness:
//!   two tasks waking each other must not starve the pool's queue);
//! - the LIFO slot, at most [`MAX_LIFO_POLLS`] times in a row;
//! - the worker's own deque, then the injector (a batch);
//! - the deques of the pool's other workers;
//! - unless the pool is strict, the injectors of other pods' pools of the
//!   same scope, nearest first (counted as remote steals).
//!
//! The thread-local [`CURRENT`] lets the schedule function find the worker's
//! LIFO slot and deque when a task is woken on one of its home pool's
//! workers.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_deque::{Steal, Worker as Deque};

use super::Pool;
use super::idle::Next;
use crate::clock;
use crate::loom::thread;
use crate::runtime::context;
use crate::runtime::shared::Shared;
use crate::task::Runnable;
use crate::wake::WakeQueue;

/// Check the pool's injector before the local queues every this many ticks
/// (Go's and tokio's value).
pub(crate) const GLOBAL_QUEUE_INTERVAL: u32 = 61;
/// Polls of the LIFO slot in a row before the deque gets a turn (tokio's).
pub(crate) const MAX_LIFO_POLLS: u32 = 3;
/// Scheduling delays buffered by a worker before they are recorded into its
/// slot's histogram (under the slot's lock, uncontended but for readers).
const SAMPLES: usize = 64;

/// What the schedule function needs of the worker running on this thread.
pub(crate) struct Local {
    pub(crate) pool: Arc<Pool>,
    deque: Deque<Runnable>,
    lifo: Cell<Option<Runnable>>,
    /// The scheduling clock, read once per poll (after it) and when the
    /// worker comes back from idle; local wakes are stamped with it.
    now: Cell<u64>,
    /// The CPU this worker stands for when the topology is not this
    /// machine's (placement of its spawns).
    pub(crate) virtual_cpu: usize,
}

thread_local! {
    pub(crate) static CURRENT: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
}

/// Schedules `runnable` on the current worker if it is a worker of the
/// task's home pool; gives it back otherwise.
pub(crate) fn schedule_local(runnable: Runnable, yielded: bool) -> Option<Runnable> {
    let mut runnable = Some(runnable);
    let _ = CURRENT.try_with(|cur| {
        let cur = cur.borrow();
        let Some(local) = cur.as_ref() else { return };
        let r = runnable.as_ref().expect("not taken yet");
        if !Arc::ptr_eq(&local.pool, &r.metadata().home) {
            return;
        }
        let r = runnable.take().expect("not taken yet");
        r.metadata().stamp(local.now.get());
        if yielded {
            local.deque.push(r);
        } else if let Some(prev) = local.lifo.replace(Some(r)) {
            local.deque.push(prev);
        } else {
            return;
        }
        // The deque is stealable: let an idle sibling help. Fenced, so a
        // sibling going idle right now either is kicked or sees the deque.
        local.pool.kick_if_needed();
    });
    runnable
}

/// Whether the current thread is a worker of the runtime `shared`.
pub(crate) fn on_worker_of(shared: &Shared) -> bool {
    CURRENT
        .try_with(|c| {
            c.borrow()
                .as_ref()
                .is_some_and(|l| std::ptr::eq(l.pool.shared.as_ptr(), shared))
        })
        .unwrap_or(false)
}

/// Whether the current thread is a worker of any wq runtime.
pub(crate) fn on_worker_thread() -> bool {
    CURRENT.try_with(|c| c.borrow().is_some()).unwrap_or(false)
}

/// The virtual CPU of the current worker thread, if it is one.
pub(crate) fn current_virtual_cpu() -> Option<usize> {
    CURRENT
        .try_with(|c| c.borrow().as_ref().map(|l| l.virtual_cpu))
        .ok()
        .flatten()
}

/// Starts a worker thread for reserved slot `slot` of `pool`.
pub(crate) fn spawn(shared: &Arc<Shared>, pool: &Arc<Pool>, slot: usize) -> io::Result<()> {
    #[cfg(test)]
    if shared
        .refuse_worker_starts
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        return Err(io::Error::from_raw_os_error(libc::EAGAIN));
    }
    let name = format!("{}-{}.{}", shared.config.thread_name, pool.id, slot);
    let (s, p) = (shared.clone(), pool.clone());
    shared.spawn_worker(name, move |live| run(s, p, slot, live))
}

/// Loop state that only the worker thread touches.
struct Core {
    tick: u32,
    lifo_streak: u32,
    /// Scheduling delays not yet recorded in the slot's histogram. Merging
    /// a whole local histogram instead cost ~10k instructions per idle
    /// transition (callgrind: 47% of a one-item-at-a-time run).
    samples: [u64; SAMPLES],
    nr_samples: usize,
    started: u64,
    completed: u64,
    remote_steals: u64,
    sibling_steals: u64,
    parks: u64,
    spin_hits: u64,
}

fn run(
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    slot: usize,
    live: crate::runtime::shared::LiveWorker,
) {
    if shared.topology.is_live() {
        // Best effort: a CPU set we may not use (a cgroup changed under us)
        // leaves the thread where the OS put it.
        let _ = crate::topology::bind_current_thread(&pool.cpus);
    }
    let _context = context::enter(crate::Handle {
        shared: shared.clone(),
    });
    let mut core = Core {
        tick: 0,
        lifo_streak: 0,
        samples: [0; SAMPLES],
        nr_samples: 0,
        started: 0,
        completed: 0,
        remote_steals: 0,
        sibling_steals: 0,
        parks: 0,
        spin_hits: 0,
    };
    pool.idle.started(slot, thread::current());
    loop {
        let deque = crate::lock_std(&pool.slots[slot].deque)
            .take()
            .expect("a slot's deque is back before the slot is reused");
        let local = Rc::new(Local {
            pool: pool.clone(),
            deque,
            lifo: Cell::new(None),
            now: Cell::new(clock::now()),
            virtual_cpu: pool.cpus[slot % pool.cpus.len()],
        });
        CURRENT.with(|c| *c.borrow_mut() = Some(local.clone()));
        core.work_until_exit(&shared, &local, slot);
        CURRENT.with(|c| *c.borrow_mut() = None);
        let local =
            Rc::try_unwrap(local).unwrap_or_else(|_| unreachable!("only CURRENT shares it"));
        // Anything left is dropped: the pool is closed, or we were culled
        // idle (with nothing queued locally).
        drop(local.lifo.take());
        while let Some(r) = local.deque.pop() {
            drop(r);
        }
        *crate::lock_std(&pool.slots[slot].deque) = Some(local.deque);
        core.publish(&pool, slot);
        if pool.idle.exit(slot) == Next::Exit {
            break;
        }
    }
    drop(live);
}

impl Core {
    fn work_until_exit(&mut self, shared: &Shared, local: &Local, slot: usize) {
        let pool = &local.pool;
        let spin = shared.config.spin;
        let idle_timeout = pool.idle.config().idle_timeout;
        'work: loop {
            // 1. Work.
            local.now.set(clock::now());
            while !pool.is_closed() {
                let Some(runnable) = self.find_work(shared, local, slot) else {
                    break;
                };
                if pool.idle.may_kick() && (!local.deque.is_empty() || !pool.injector.is_empty()) {
                    // The kernel's chaining: more is queued, wake a sibling.
                    pool.kick();
                }
                self.run_task(local, slot, runnable);
            }
            // 2. Enter idle.
            match pool
                .idle
                .enter_idle(slot, Instant::now(), || pool.has_work())
            {
                Next::Run => continue 'work,
                Next::Exit => return,
                Next::Park => {}
            }
            self.publish(pool, slot);
            // 3. Spin.
            let mut found = false;
            if !spin.is_zero() {
                let until = Instant::now() + spin;
                'spin: loop {
                    for _ in 0..64 {
                        if pool.has_work() || pool.is_closed() {
                            found = true;
                            break 'spin;
                        }
                        std::hint::spin_loop();
                    }
                    if Instant::now() >= until {
                        break;
                    }
                    // Give the CPU to a runnable thread, if any (a producer
                    // woken on this CPU): spinning must not delay the work
                    // it waits for. Without one, sched_yield returns at once.
                    std::thread::yield_now();
                }
            }
            if found {
                self.spin_hits += 1;
            }
            // 4. Park.
            loop {
                if !found {
                    self.parks += 1;
                    thread::park_timeout(idle_timeout);
                }
                found = false;
                let mut wake = WakeQueue::default();
                let next =
                    pool.idle
                        .wake(slot, Instant::now(), true, || pool.has_work(), &mut wake);
                wake.wake_all();
                match next {
                    Next::Run => continue 'work,
                    Next::Park => continue,
                    Next::Exit => return,
                }
            }
        }
    }

    fn find_work(&mut self, shared: &Shared, local: &Local, slot: usize) -> Option<Runnable> {
        let pool = &local.pool;
        self.tick = self.tick.wrapping_add(1);
        if self.tick.is_multiple_of(GLOBAL_QUEUE_INTERVAL)
            && let Some(r) = steal_into(&pool.injector, &local.deque)
        {
            return Some(r);
        }
        if let Some(r) = local.lifo.take() {
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
        let n = pool.slots.len();
        for i in 1..n {
            let victim = &pool.slots[(slot + i) % n].stealer;
            if victim.is_empty() {
                continue;
            }
            if let Some(r) = steal_into(victim, &local.deque) {
                self.sibling_steals += 1;
                return Some(r);
            }
        }
        if !shared.config.affinity_strict {
            for other in shared.steal_order(pool) {
                if let Some(r) = steal_into(&other.injector, &local.deque) {
                    self.remote_steals += 1;
                    return Some(r);
                }
            }
        }
        None
    }

    fn run_task(&mut self, local: &Local, slot: usize, runnable: Runnable) {
        let delay = clock::delay_ns(runnable.metadata().queued_at(), local.now.get());
        self.samples[self.nr_samples] = delay;
        self.nr_samples += 1;
        self.started += 1;
        // Polls are wrapped in catch_unwind (see `task`); what can still
        // unwind is a future's Drop when a cancelled task is dropped here.
        // The worker must survive it: its slot would be lost otherwise.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runnable.run()));
        local.now.set(clock::now());
        self.completed += 1;
        if self.nr_samples == SAMPLES {
            self.publish(&local.pool, slot);
        }
    }

    /// Makes the local counters and histogram visible to metrics readers.
    fn publish(&mut self, pool: &Pool, slot: usize) {
        let c = &pool.slots[slot].counters;
        add(&c.started, std::mem::take(&mut self.started));
        add(&c.completed, std::mem::take(&mut self.completed));
        add(&c.remote_steals, std::mem::take(&mut self.remote_steals));
        add(&c.sibling_steals, std::mem::take(&mut self.sibling_steals));
        add(&c.parks, std::mem::take(&mut self.parks));
        add(&c.spin_hits, std::mem::take(&mut self.spin_hits));
        if self.nr_samples > 0 {
            let mut h = crate::lock_std(&c.sched_delay);
            for &ns in &self.samples[..self.nr_samples] {
                h.saturating_record(ns.max(1));
            }
            self.nr_samples = 0;
        }
    }
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
