//! What a runtime's handles, pools and workers share: the topology, the
//! pools per (scope, pod), placement, and shutdown.
//!
//! # Pools
//! `pools[scope][pod]` is filled on first use. A new pool is looked up by
//! CPU set among the pools made so far (`all_pools`, under its lock): two
//! scopes whose pods have the same CPUs (on a machine without SMT, `cpu` and
//! `smt`) share one pool, as the kernel shares pools of identical
//! attributes.
//!
//! # Placement
//! A task spawned with scope S goes to the S-pod holding the spawning CPU:
//! `sched_getcpu()` on a topology read from this machine; on a synthetic or
//! XML one, a worker's virtual CPU (a CPU of its pod) or, for other threads,
//! a CPU picked once per thread in turn. A CPU the topology does not know
//! (outside the allowed set) falls back to round-robin over the pods.
//!
//! # Shutdown
//! 1. `closed` is set, under `all_pools`' lock (no pool is created after).
//! 2. Each pool is closed (kicks fail, workers are released) and the
//!    rescuer is told to exit (`runtime::rescuer`); then each pool's
//!    registry: every idle task is woken, and its schedule function queues
//!    it without a kick (the pool is closed: `pool::closing`). A task going idle
//!    after this finds the registry closed and wakes itself to the same end
//!    (see `task::registry`); a task never idle is queued or running.
//! 3. Queued tasks are drained and dropped here, in the shutdown thread
//!    (never inside another thread's `wake()`); the workers are waited for
//!    (unless the caller is one of them) and joined.
//! 4. The registries are woken once more and the queues drained a last
//!    time: a task a worker had already taken from a queue when step 2 woke
//!    it (the wake is absorbed by the pending run) is idle again once that
//!    worker has run it, and nobody else would wake it. The pools are
//!    buried: a push from now on drops what it queued (`pool::closing`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::thread::JoinHandle as ThreadHandle;
use std::time::{Duration, Instant};

use super::builder::Config;
use super::rescuer::{self, Rescuer};
use crate::pool::Pool;
use crate::pool::idle::IdleConfig;
use crate::{Scope, Topology};

pub(crate) struct Shared {
    pub(crate) topology: Topology,
    pub(crate) config: Config,
    pools: [Box<[OnceLock<Arc<Pool>>]>; 6],
    all_pools: Mutex<Vec<Arc<Pool>>>,
    /// For each scope and pod: the other pods, nearest first.
    steal_order: [Box<[Box<[usize]>]>; 6],
    threads: Mutex<Vec<ThreadHandle<()>>>,
    live: Mutex<usize>,
    live_changed: Condvar,
    closed: AtomicBool,
    round_robin: AtomicUsize,
    /// The mayday list of pools no worker could be started for.
    pub(crate) rescuer: Rescuer,
    /// The I/O and timer driver and the blocking pool (`crate::services`).
    pub(crate) services: crate::services::Services,
    /// Test hook: worker starts to refuse (as the OS would at its limit).
    #[cfg(test)]
    pub(crate) refuse_worker_starts: AtomicUsize,
    me: Weak<Shared>,
}

/// Counts a live worker thread until dropped (at the thread's very end).
pub(crate) struct LiveWorker(Arc<Shared>);

impl Drop for LiveWorker {
    fn drop(&mut self) {
        let mut live = crate::lock_std(&self.0.live);
        *live -= 1;
        self.0.live_changed.notify_all();
    }
}

impl Shared {
    pub(crate) fn new(topology: Topology, config: Config) -> Arc<Shared> {
        let pools = Scope::ALL.map(|s| {
            (0..topology.pods(s).len())
                .map(|_| OnceLock::new())
                .collect()
        });
        let steal_order = Scope::ALL.map(|s| steal_order(&topology, s));
        Arc::new_cyclic(|me| Shared {
            topology,
            config,
            pools,
            all_pools: Mutex::new(Vec::new()),
            steal_order,
            threads: Mutex::new(Vec::new()),
            live: Mutex::new(0),
            live_changed: Condvar::new(),
            closed: AtomicBool::new(false),
            round_robin: AtomicUsize::new(0),
            rescuer: Rescuer::default(),
            services: crate::services::Services::default(),
            #[cfg(test)]
            refuse_worker_starts: AtomicUsize::new(0),
            me: me.clone(),
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The pool of `scope`'s pod `pod`, created on first use.
    pub(crate) fn pool(&self, scope: Scope, pod: usize) -> &Arc<Pool> {
        self.pools[scope.index()][pod].get_or_init(|| self.create_pool(scope, pod))
    }

    fn create_pool(&self, scope: Scope, pod: usize) -> Arc<Pool> {
        let cpus = self.topology.pods(scope)[pod].cpus();
        let mut all = crate::lock_std(&self.all_pools);
        if let Some(p) = all.iter().find(|p| &*p.cpus == cpus) {
            return p.clone();
        }
        let config = IdleConfig {
            max_workers: self.config.max_workers_per_pool.unwrap_or(cpus.len()),
            idle_timeout: self.config.idle_timeout,
            min_idle: 2,
            wake_mode: self.config.wake_mode,
            kicked_list: true,
        };
        let pool = Arc::new(Pool::new(
            all.len(),
            scope,
            pod,
            cpus.into(),
            config,
            self.me.clone(),
        ));
        if self.is_closed() {
            pool.close();
            pool.registry.close_and_wake_all();
            pool.bury();
        }
        all.push(pool.clone());
        pool
    }

    /// Every pool created so far.
    pub(crate) fn pools(&self) -> Vec<Arc<Pool>> {
        crate::lock_std(&self.all_pools).clone()
    }

    /// The pool a task spawned now with `scope` goes to: the pod of `cpu`
    /// if given, else of the calling thread's CPU.
    pub(crate) fn place(&self, scope: Scope, cpu: Option<usize>) -> &Arc<Pool> {
        let pods = self.topology.pods(scope);
        let pod = if pods.len() == 1 {
            0
        } else {
            cpu.or_else(|| self.current_cpu())
                .and_then(|cpu| self.topology.pod_of(scope, cpu))
                .map(|p| p.index())
                .unwrap_or_else(|| self.round_robin.fetch_add(1, Ordering::Relaxed) % pods.len())
        };
        self.pool(scope, pod)
    }

    /// The CPU placement uses for the calling thread (see module docs).
    fn current_cpu(&self) -> Option<usize> {
        if self.topology.is_live() {
            // SAFETY: sched_getcpu has no preconditions; it returns -1 on
            // error, handled below.
            let cpu = unsafe { libc::sched_getcpu() };
            return usize::try_from(cpu).ok();
        }
        crate::pool::worker::current_virtual_cpu().or_else(|| {
            let cpus = self.topology.cpus();
            Some(cpus[super::context::thread_ordinal() % cpus.len()].os_index)
        })
    }

    /// Pools of other pods of `pool`'s scope that exist, nearest first.
    pub(crate) fn steal_order<'a>(
        &'a self,
        pool: &Pool,
    ) -> impl Iterator<Item = &'a Arc<Pool>> + 'a {
        let scope = pool.scope.index();
        let id = pool.id;
        self.steal_order[scope][pool.pod]
            .iter()
            .filter_map(move |&pod| self.pools[scope][pod].get())
            .filter(move |p| p.id != id)
    }

    /// Starts the rescuer thread (at build time).
    pub(crate) fn start_rescuer(&self) -> std::io::Result<()> {
        let shared = self.me.upgrade().expect("called on a live runtime");
        self.spawn_worker(
            format!("{}-rescuer", self.config.thread_name),
            move |live| rescuer::run(shared, live),
        )
    }

    /// Starts a worker thread running `f`, counted live until `f`'s
    /// `LiveWorker` drops. Refused once the runtime is closed.
    ///
    /// The `threads` lock is held across the spawn and the handle's push,
    /// and `live` is counted (and `closed` checked) under it: shutdown, which
    /// sets `closed`, waits for `live` to reach zero and then takes
    /// `threads`, therefore either joins this thread or makes us refuse it.
    pub(crate) fn spawn_worker(
        &self,
        name: String,
        f: impl FnOnce(LiveWorker) + Send + 'static,
    ) -> std::io::Result<()> {
        let mut threads = crate::lock_std(&self.threads);
        {
            let mut live = crate::lock_std(&self.live);
            if self.is_closed() {
                return Err(std::io::Error::other("the runtime is shut down"));
            }
            *live += 1;
        }
        let guard = LiveWorker(
            self.me
                .upgrade()
                .expect("a pool's runtime outlives its kicks"),
        );
        let mut builder = std::thread::Builder::new().name(name);
        if let Some(bytes) = self.config.thread_stack_size {
            builder = builder.stack_size(bytes);
        }
        let handle = builder.spawn(move || f(guard))?;
        // Culled workers' handles: drop (detach) the finished ones.
        threads.retain(|t| !t.is_finished());
        threads.push(handle);
        Ok(())
    }

    /// Shuts the runtime down (idempotent). Waits for the workers up to
    /// `timeout` (forever if `None`); returns whether they all exited.
    pub(crate) fn shutdown(&self, timeout: Option<Duration>) -> bool {
        let pools = {
            let all = crate::lock_std(&self.all_pools);
            if self.closed.swap(true, Ordering::AcqRel) {
                drop(all);
                return self.wait_workers(timeout);
            }
            all.clone()
        };
        for pool in &pools {
            pool.close();
        }
        self.rescuer.close();
        for pool in &pools {
            pool.registry.close_and_wake_all();
            pool.drain();
        }
        let all_exited = self.wait_workers(timeout);
        // A task that a worker took from a queue before the pool closed, and
        // whose wake above was absorbed by that pending run, is idle again
        // now that the worker is gone: wake what is left once more, with no
        // worker running.
        for pool in &pools {
            pool.registry.close_and_wake_all();
            pool.bury();
        }
        self.services.shutdown(timeout) && all_exited
    }

    fn wait_workers(&self, timeout: Option<Duration>) -> bool {
        // A worker dropping its own runtime cannot wait for itself.
        let me =
            usize::from(crate::pool::worker::on_worker_of(self) || rescuer::on_rescuer_of(self));
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut live = crate::lock_std(&self.live);
        while *live > me {
            live = match deadline {
                None => self
                    .live_changed
                    .wait(live)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    self.live_changed
                        .wait_timeout(live, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        drop(live);
        let threads = std::mem::take(&mut *crate::lock_std(&self.threads));
        let current = std::thread::current().id();
        for t in threads {
            if t.thread().id() != current {
                let _ = t.join();
            }
        }
        true
    }
}

/// For each pod of `scope`, the other pods ordered by the narrowest wider
/// scope they share with it (same cache, then same NUMA node, then the
/// rest), then by index.
fn steal_order(topology: &Topology, scope: Scope) -> Box<[Box<[usize]>]> {
    let pods = topology.pods(scope);
    let wider: Vec<Scope> = Scope::ALL.into_iter().filter(|s| *s > scope).collect();
    let group = |pod: usize, s: Scope| -> Option<usize> {
        let cpu = pods[pod].cpus()[0];
        topology.pod_of(s, cpu).map(|p| p.index())
    };
    (0..pods.len())
        .map(|me| {
            let mut others: Vec<(usize, usize)> = (0..pods.len())
                .filter(|&p| p != me)
                .map(|p| {
                    let distance = wider
                        .iter()
                        .position(|&s| group(p, s) == group(me, s))
                        .unwrap_or(wider.len());
                    (distance, p)
                })
                .collect();
            others.sort_unstable();
            others.into_iter().map(|(_, p)| p).collect()
        })
        .collect()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn steal_order_prefers_the_same_cache_then_numa() {
        let t = Topology::synthetic("pack:2 l3:2 core:2 pu:1").unwrap();
        // 8 cpus, smt pods 0..8; cache pods {0,1},{2,3},{4,5},{6,7};
        // numa: one node (no NUMA in the description) -> system groups all.
        let order = steal_order(&t, Scope::Smt);
        assert_eq!(&*order[0], &[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(order[5][0], 4, "same-cache sibling first");
        let order = steal_order(&t, Scope::Cache);
        assert_eq!(order.len(), 4);
        assert_eq!(&*order[3], &[0, 1, 2]);
    }
}
