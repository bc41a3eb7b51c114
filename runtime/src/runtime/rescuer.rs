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
//! - **Back-off.** A refused start sets the pool's `start_retry_at` to
//!   [`MAYDAY_INTERVAL`] from now; until then kicks do not try to start a
//!   thread (a reserved slot is given back at once). So a burst of pushes
//!   to a pool at the thread limit costs no failing `clone()` each.
//! - **Mayday.** A failed or backed-off start that leaves the pool with no
//!   worker at all (`Idle::create_failed` says so, under the pool lock) puts
//!   the pool on the runtime's mayday list and wakes the rescuer (the
//!   kernel's `send_mayday`). A pool with a busy worker sends none: that
//!   worker looks at the queue before it idles. `Pool::on_mayday` says the
//!   pool is on the list; it is read and written only under the list lock,
//!   so a mayday either finds the pool still listed (the rescuer will visit
//!   it after this push) or lists it.
//! - **Rescue.** The rescuer takes the whole list and visits each pool once:
//!   if it is open and has queued work, kick it (a thread start, paced by
//!   the back-off); if the pool now has a worker, done; else run up to
//!   [`RESCUE_BATCH`] of its tasks here (checking `closed` before each),
//!   bound to the pool's CPUs on a live topology, and if work is left, send
//!   the pool a mayday again: it is visited after the other listed pools,
//!   so one busy pool cannot starve another. Rescued tasks' scheduling
//!   delays go to the pool's rescuer counters, merged into the pool's
//!   metrics (`rescued`).
//! - **Shutdown** (step 2 of `runtime::shared`) closes the list and wakes
//!   the rescuer, which exits; it is counted live and joined like a worker.
//!
//! The list lock is a leaf: no other lock is taken under it and no task
//! runs under it.
//!
//! The rescuer is not a worker: a task it runs that wakes itself is pushed
//! on its home pool's injector and kicks, as from any thread.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

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
    /// `on_mayday` is only read and written under the list lock: a pool is
    /// either on the list (and will be visited after this push is visible)
    /// or is put on it here.
    pub(crate) fn mayday(&self, pool: &Arc<Pool>) {
        let mut list = crate::lock_std(&self.list);
        if list.closed || pool.on_mayday.swap(true, Ordering::Relaxed) {
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
                let pools = std::mem::take(&mut list.pools);
                for pool in &pools {
                    pool.on_mayday.store(false, Ordering::Relaxed);
                }
                return Some(pools);
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

/// Whether the current thread is a rescuer (of any runtime).
pub(crate) fn on_rescuer_thread() -> bool {
    RESCUER_OF.try_with(|r| !r.get().is_null()).unwrap_or(false)
}

/// The rescuer thread's body.
pub(crate) fn run(shared: Arc<Shared>, live: LiveWorker) {
    RESCUER_OF.set(Arc::as_ptr(&shared));
    let _context = context::enter(crate::Handle {
        shared: shared.clone(),
    });
    while let Some(pools) = shared.rescuer.take() {
        for pool in pools {
            rescue(&shared, &pool);
        }
    }
    drop(live);
}

/// One visit to `pool`: at most one batch, then the next pool.
fn rescue(shared: &Shared, pool: &Arc<Pool>) {
    if pool.is_closed() || pool.injector.is_empty() {
        return;
    }
    // Try for a worker: paced by the pool's start back-off, so this tries
    // a thread start at most once per MAYDAY_INTERVAL. A failure with no
    // worker sends a new mayday, which puts the pool back on the list.
    pool.kick();
    if pool.idle.snapshot().nr_workers > 0 {
        // A worker (new, or busy) looks at the queue before it idles.
        return;
    }
    if shared.topology.is_live() {
        // Best effort, as for a worker.
        let _ = crate::topology::bind_current_thread(&pool.cpus);
    }
    for _ in 0..RESCUE_BATCH {
        if pool.is_closed() {
            return;
        }
        let Some(runnable) = pool.injector.steal().success() else {
            break;
        };
        pool.run_rescued(runnable);
    }
    if !pool.injector.is_empty() {
        // Come back after the other pools on the list.
        shared.rescuer.mayday(pool);
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

    /// A runtime on synthetic topology `desc` whose next `refused` worker
    /// starts the "OS" refuses.
    fn refusing_runtime(desc: &str, scope: Scope, refused: usize) -> Runtime {
        let rt = Runtime::builder()
            .topology(Topology::synthetic(desc).unwrap())
            .default_scope(scope)
            .build()
            .unwrap();
        rt.handle()
            .shared
            .refuse_worker_starts
            .store(refused, Ordering::Relaxed);
        rt
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
        // The OS refuses every worker thread from now on.
        let rt = refusing_runtime("pack:1 core:2 pu:1", Scope::System, usize::MAX);
        let shared = &rt.handle().shared;
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
    fn one_busy_pool_does_not_starve_another() {
        within_watchdog(|| {
            let rt = refusing_runtime("pack:2 core:1 pu:1", Scope::Cpu, usize::MAX);
            let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            // Pool of CPU 0: a task that keeps re-queueing itself until the
            // task on CPU 1's pool has run.
            let f = flag.clone();
            let waiter = rt.handle().spawn_on_cpu(0, Scope::Cpu, async move {
                let mut yields = 0u64;
                while !f.load(Ordering::Acquire) {
                    crate::task::yield_now().await;
                    yields += 1;
                }
                yields
            });
            let f = flag.clone();
            let setter =
                rt.handle().spawn_on_cpu(
                    1,
                    Scope::Cpu,
                    async move { f.store(true, Ordering::Release) },
                );
            rt.block_on(setter).unwrap();
            assert!(rt.block_on(waiter).is_ok());
        });
    }

    #[test]
    fn refused_starts_are_retried_at_the_mayday_pace_not_per_push() {
        within_watchdog(|| {
            const BUDGET: usize = 1_000_000;
            let rt = refusing_runtime("pack:1 core:2 pu:1", Scope::System, BUDGET);
            let shared = &rt.handle().shared;
            let started = std::time::Instant::now();
            // Thousands of pushes (spawns and yields) while no worker starts.
            for _ in 0..20 {
                let hs: Vec<_> = (0..50)
                    .map(|_| {
                        rt.spawn(async {
                            for _ in 0..5 {
                                crate::task::yield_now().await;
                            }
                        })
                    })
                    .collect();
                rt.block_on(async {
                    for h in hs {
                        h.await.unwrap();
                    }
                });
            }
            let intervals = started.elapsed().as_millis() / super::MAYDAY_INTERVAL.as_millis();
            let attempts = BUDGET - shared.refuse_worker_starts.load(Ordering::Relaxed);
            // One attempt per interval, plus racing kicks that both found
            // the back-off expired; without the back-off, one per push.
            assert!(
                attempts as u128 <= 2 * (intervals + 1),
                "{attempts} thread starts tried in {intervals} intervals"
            );
        });
    }

    #[test]
    fn a_runtime_whose_workers_never_start_still_shuts_down() {
        within_watchdog(never_start_then_shut_down);
    }

    fn never_start_then_shut_down() {
        let rt = refusing_runtime("pack:2 core:1 pu:1", Scope::Cpu, usize::MAX);
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
