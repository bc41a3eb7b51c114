//! The rescuer: one thread per runtime that keeps a pool's queued work
//! moving when no worker thread can be started for it -- the kernel's
//! mayday timer and `rescuer_thread()`.
//!
//! A pool starts its workers on demand (a kick that reserves a slot starts
//! the thread, `pool::Pool::create_worker`). If the OS refuses (`EAGAIN` at
//! the process's thread limit, `ENOMEM`) and the pool has no worker, nothing
//! would ever look at its queue again until the next push: the work would
//! be stranded. The rescuer is started with the runtime, before any such
//! failure can happen, so it does not depend on being able to create a
//! thread when it is needed.
//!
//! # Protocol
//! - **Mayday.** A failed start puts the pool on the runtime's mayday list
//!   (once: `Pool::on_mayday` is set with the push and cleared by the
//!   rescuer when it takes the pool) and wakes the rescuer. The list and
//!   its `closed` flag are under one lock, a leaf: no other lock is taken
//!   under it and no task runs under it.
//! - **Rescue.** For each pool taken from the list, while the pool is open
//!   and its injector holds work: if the pool has a worker now, kick it and
//!   stop (a worker sees the queue); else, at most once per
//!   [`MAYDAY_INTERVAL`], kick the pool so that it tries to start a worker
//!   (a failure sends a new mayday, which only re-queues the pool); then run
//!   up to [`RESCUE_BATCH`] of its tasks here, bound to the pool's CPUs on a
//!   live topology. Their scheduling delays go to the pool's rescuer
//!   counters, merged into the pool's metrics (`rescued`).
//! - **Shutdown** (step 2 of `runtime::shared`) closes the list and wakes
//!   the rescuer, which exits; it is counted live and joined like a worker.
//!
//! The rescuer is not a worker: a task it runs that wakes itself is pushed
//! on its home pool's injector and kicks, as from any thread.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::context;
use super::shared::{LiveWorker, Shared};
use crate::pool::Pool;

/// How often the rescuer retries starting a worker for a pool it is
/// rescuing (the kernel's `MAYDAY_INTERVAL`, 100 ms).
pub(crate) const MAYDAY_INTERVAL: Duration = Duration::from_millis(100);

/// Tasks run between two checks of the pool (and retries).
const RESCUE_BATCH: usize = 64;

#[derive(Default)]
struct List {
    pools: Vec<Arc<Pool>>,
    closed: bool,
}

/// The mayday list and the rescuer's wakeup.
#[derive(Default)]
pub(crate) struct Rescuer {
    list: Mutex<List>,
    wakeup: Condvar,
}

impl Rescuer {
    /// Asks the rescuer to look after `pool` (no-op if it already will).
    pub(crate) fn mayday(&self, pool: &Arc<Pool>) {
        if pool
            .on_mayday
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let mut list = crate::lock_std(&self.list);
        if list.closed {
            return;
        }
        list.pools.push(pool.clone());
        drop(list);
        self.wakeup.notify_one();
    }

    /// Makes the rescuer exit (shutdown).
    pub(crate) fn close(&self) {
        let pools = {
            let mut list = crate::lock_std(&self.list);
            list.closed = true;
            std::mem::take(&mut list.pools)
        };
        drop(pools);
        self.wakeup.notify_one();
    }

    /// The pools to rescue, waiting for some; `None` once closed.
    fn take(&self) -> Option<Vec<Arc<Pool>>> {
        let mut list = crate::lock_std(&self.list);
        loop {
            if list.closed {
                return None;
            }
            if !list.pools.is_empty() {
                return Some(std::mem::take(&mut list.pools));
            }
            list = self.wakeup.wait(list).unwrap_or_else(|e| e.into_inner());
        }
    }
}

thread_local! {
    /// The runtime whose rescuer this thread is, if it is one.
    static RESCUER_OF: std::cell::Cell<*const Shared> = const { std::cell::Cell::new(std::ptr::null()) };
}

/// Whether the current thread is the rescuer of `shared` (which must not
/// wait for itself at shutdown).
pub(crate) fn on_rescuer_of(shared: &Shared) -> bool {
    RESCUER_OF
        .try_with(|r| std::ptr::eq(r.get(), shared))
        .unwrap_or(false)
}

/// The rescuer thread's body.
pub(crate) fn run(shared: Arc<Shared>, live: LiveWorker) {
    RESCUER_OF.set(Arc::as_ptr(&shared));
    let _context = context::enter(crate::Handle {
        shared: shared.clone(),
    });
    while let Some(pools) = shared.rescuer.take() {
        for pool in pools {
            pool.on_mayday
                .store(false, std::sync::atomic::Ordering::Release);
            rescue(&shared, &pool);
        }
    }
    drop(live);
}

fn rescue(shared: &Shared, pool: &Arc<Pool>) {
    let mut last_try: Option<Instant> = None;
    let mut bound = false;
    while !pool.is_closed() && !pool.injector.is_empty() {
        if pool.idle.snapshot().nr_workers > 0 {
            pool.kick();
            return;
        }
        if last_try.is_none_or(|t| t.elapsed() >= MAYDAY_INTERVAL) {
            last_try = Some(Instant::now());
            pool.kick();
            continue;
        }
        if !bound && shared.topology.is_live() {
            // Best effort, as for a worker.
            let _ = crate::topology::bind_current_thread(&pool.cpus);
            bound = true;
        }
        for _ in 0..RESCUE_BATCH {
            let Some(runnable) = pool.injector.steal().success() else {
                break;
            };
            pool.run_rescued(runnable);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crate::{Runtime, Scope, Topology};

    fn pool_totals(rt: &Runtime) -> (usize, u64, u64, u64) {
        let m = rt.metrics();
        m.pools.iter().fold((0, 0, 0, 0), |(w, r, f, d), p| {
            (
                w + p.workers,
                r + p.rescued,
                f + p.worker_start_failures,
                d + p.sched_delay.len(),
            )
        })
    }

    /// Fails instead of hanging if the work is stranded.
    fn within_watchdog(f: impl FnOnce() + Send + 'static) {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => t.join().unwrap(),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                if let Err(p) = t.join() {
                    std::panic::resume_unwind(p);
                }
            }
            Err(_) => panic!("stalled for 60 s: the pool's work was stranded"),
        }
    }

    #[test]
    fn work_runs_on_the_rescuer_while_no_worker_can_start() {
        within_watchdog(work_runs_on_the_rescuer);
    }

    fn work_runs_on_the_rescuer() {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
            .default_scope(Scope::System)
            .build()
            .unwrap();
        // The OS refuses every worker thread from now on.
        let shared = &rt.handle().shared;
        shared
            .refuse_worker_starts
            .store(usize::MAX, Ordering::Relaxed);
        let handles: Vec<_> = (0..200u64)
            .map(|i| {
                rt.spawn(async move {
                    // Wakes itself, and spawns: both queue on the injector.
                    crate::task::yield_now().await;
                    crate::spawn(async move { i * 2 }).await.unwrap()
                })
            })
            .collect();
        let sum: u64 = rt.block_on(async {
            let mut sum = 0;
            for h in handles {
                sum += h.await.unwrap();
            }
            sum
        });
        assert_eq!(sum, (0..200u64).map(|i| i * 2).sum::<u64>());
        let (workers, rescued, failures, delays) = pool_totals(&rt);
        assert_eq!(workers, 0, "no worker could start");
        assert!(rescued >= 400, "the rescuer ran every task: {rescued}");
        assert!(failures >= 1);
        assert!(delays >= rescued, "rescued polls record their delay");

        // The limit is lifted: the next kick starts a worker.
        shared.refuse_worker_starts.store(0, Ordering::Relaxed);
        assert_eq!(rt.block_on(rt.spawn(async { 7 })).unwrap(), 7);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while pool_totals(&rt).0 == 0 {
            assert!(std::time::Instant::now() < deadline, "no worker started");
            drop(rt.spawn(async {}));
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_runtime_whose_workers_never_start_still_shuts_down() {
        within_watchdog(never_start_then_shut_down);
    }

    fn never_start_then_shut_down() {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:2 core:1 pu:1").unwrap())
            .build()
            .unwrap();
        rt.handle()
            .shared
            .refuse_worker_starts
            .store(usize::MAX, Ordering::Relaxed);
        let pending: Vec<_> = (0..2)
            .map(|cpu| {
                rt.handle()
                    .spawn_on_cpu(cpu, Scope::Cpu, futures::future::pending::<()>())
            })
            .collect();
        for cpu in 0..2 {
            let h = rt
                .handle()
                .spawn_on_cpu(cpu, Scope::Cpu, async move { cpu });
            assert_eq!(rt.block_on(h).unwrap(), cpu);
        }
        drop(rt);
        for h in pending {
            assert!(futures::executor::block_on(h).unwrap_err().is_cancelled());
        }
    }
}
