//! The scheduler: what a runtime's handles, pools and workers share. It owns
//! the topology, the table of pools per (scope, pod), the runtime's threads
//! and its rescuer, and runs the shutdown. It is the pools'
//! [`Host`](crate::pool::Host); the public API (`crate::runtime`) is a thin
//! layer over it.
//!
//! # Pools
//! `pools[attrs][scope][pod]` is filled on first use. A new pool is looked up by
//! CPU set among the pools made so far (`all_pools`, under its lock): two
//! scopes whose pods have the same CPUs (on a machine without SMT, `cpu` and
//! `smt`) share one pool, as the kernel shares pools of identical
//! attributes.
//!
//! # Placement
//! See [`placement`]: the pod of the spawning CPU, and the steal order of
//! pods for non-strict pools.
//!
//! # Shutdown
//! 1. `closed` is set, under `all_pools`' lock (a pool created after, by a
//!    spawn racing the shutdown, is closed and buried at its creation).
//! 2. Each pool is closed (kicks fail, workers are released), the blocking
//!    pool is closed (no job starts from now on; jobs still queued are
//!    cancelled here, running ones waited for in step 5), the rescuer is
//!    told to exit ([`rescuer`]), and the named queues are closed (items
//!    on their inactive lists are dropped here); then each pool's registry:
//!    every idle task is woken, and its schedule function queues it without
//!    a kick (the pool is closed: `pool::closing`). A task going idle after
//!    this finds the registry closed and wakes itself to the same end (see
//!    `task::registry`); a task never idle is queued or running.
//! 3. Queued tasks are drained and dropped here, in the shutdown thread
//!    (never inside another thread's `wake()`); the runtime's threads are
//!    waited for (unless the caller is one of them) and joined
//!    ([`threads`]). While it waits, every [`STRAGGLER_SLICE`], it drops
//!    what reached the closed queues and the workers' LIFO slots since: a
//!    task whose poll was running when step 2 woke it is queued when the
//!    poll ends, and a worker stuck in a poll never takes its LIFO task;
//!    a thread waited for may wait for either to be dropped
//!    (`Pool::drain_stragglers`). And it turns the I/O driver meanwhile,
//!    if nobody else does: a worker blocked in `block_in_place` may wait
//!    on a wq timer or socket, which only a driver turn serves (each
//!    thread's exit cuts the turn short).
//! 4. The registries are woken once more and the queues and the workers'
//!    LIFO slots drained a last time: a task a worker had already taken
//!    from a queue when step 2 woke it (the wake is absorbed by the pending
//!    run) is idle again once that worker has run it, and nobody else would
//!    wake it; a wait with no time left (a zero timeout) had no slice to
//!    empty the slots in. The pools are buried: a push from now on drops
//!    what it queued (`pool::closing`).
//! 5. The services shut down ([`services`]): the driver (every timer
//!    fires, every socket fails), then the blocking pool, whose running
//!    jobs are waited for.

pub(crate) mod blocking;
pub(crate) mod context;
pub(crate) mod placement;
pub(crate) mod queue;
pub(crate) mod rescuer;
pub(crate) mod services;
mod threads;
pub(crate) mod watchdog;

pub(crate) use services::Turn;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use crate::pool::idle::IdleConfig;
use crate::pool::{self, Host, Pool, PoolAttrs, PoolConfig, Served, StartError, current};
use crate::task::Runnable;
use crate::{Scope, Topology, WakeMode};
use queue::Queue;
use rescuer::Rescuer;
use threads::Threads;

/// How often a pool whose worker start was refused tries again (the
/// kernel's `MAYDAY_INTERVAL`, 100 ms): kicks try no start before, and the
/// rescuer retries at this pace.
pub(crate) const MAYDAY_INTERVAL: Duration = Duration::from_millis(100);

/// The runtime's settings, fixed at build time (`crate::Builder`).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) default_scope: Scope,
    pub(crate) wake_mode: WakeMode,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_workers_per_pool: Option<usize>,
    /// The CPUs this process may use at once, read at build
    /// (`std::thread::available_parallelism`: its affinity mask and its
    /// cgroup CPU quota): unless `max_workers_per_pool` is given, no pool
    /// has more workers.
    pub(crate) cpu_budget: usize,
    pub(crate) thread_name: String,
    pub(crate) worker_spin: Duration,
    /// The most workers of one pool that spin at once (`None`: as many
    /// as search).
    pub(crate) spinning_workers: Option<usize>,
    /// Spinners watch the workers' deques too, not only the injector
    /// (`None`: in pools of at most [`crate::pool::SMALL_POOL`] workers).
    pub(crate) spin_watches_deques: Option<bool>,
    pub(crate) affinity_strict: bool,
    pub(crate) thread_stack_size: Option<usize>,
    /// A poll running longer than this is a CPU hog; zero: no watchdog.
    pub(crate) cpu_hog_threshold: Duration,
    pub(crate) max_blocking_threads: usize,
    pub(crate) blocking_keep_alive: Duration,
    /// Scheduling delays, poll durations and spawn-call times recorded.
    pub(crate) latency_capture: bool,
    /// `Builder::on_thread_start` / `on_thread_stop`.
    pub(crate) on_thread_start: Option<ThreadHook>,
    pub(crate) on_thread_stop: Option<ThreadHook>,
}

/// A closure the runtime's threads call as they start or stop
/// (`Builder::on_thread_start`).
#[derive(Clone)]
pub(crate) struct ThreadHook(pub(crate) Arc<dyn Fn() + Send + Sync + 'static>);

impl std::fmt::Debug for ThreadHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThreadHook")
    }
}

/// Calls the start hook as it is made (on the new thread, the runtime
/// current), the stop hook as it drops; a hook that panics is said on
/// stderr and the thread goes on (a panic out of a runtime thread's loop
/// aborts the process: `pool::worker::AbortOnUnwind`).
pub(crate) struct ThreadHooks<'a> {
    config: &'a Config,
}

impl<'a> ThreadHooks<'a> {
    pub(crate) fn start(config: &'a Config) -> ThreadHooks<'a> {
        if let Some(hook) = &config.on_thread_start {
            call_hook("on_thread_start", hook);
        }
        ThreadHooks { config }
    }
}

impl Drop for ThreadHooks<'_> {
    fn drop(&mut self) {
        if let Some(hook) = &self.config.on_thread_stop {
            call_hook("on_thread_stop", hook);
        }
    }
}

fn call_hook(which: &str, hook: &ThreadHook) {
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (hook.0)())) {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "<non-string payload>".to_owned());
        // Not `eprintln!`: a closed stderr would panic here.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "wq: the Builder::{which} hook panicked on thread {:?}: {msg}; the thread goes on",
            std::thread::current().name().unwrap_or("<unnamed>")
        );
    }
}

/// One table of pools per scope and pod.
type PoolTable = [Box<[OnceLock<Arc<Pool>>]>; 6];

/// See the module docs.
/// The named workqueues of a runtime (`Scheduler::queues`).
#[derive(Default)]
struct Queues {
    /// Alive, each with its creation number, in a slot a queue's drop
    /// empties (its slot is kept in the queue: O(1) either way, with a
    /// queue per connection by the thousand).
    live: Vec<Option<(u64, Weak<Queue>)>>,
    /// Empty slots of `live`.
    free: Vec<usize>,
    /// Queues created so far (creation numbers).
    created: u64,
    /// The counters of dropped queues per name, with the number of the
    /// name's last retirement (`metrics::Snapshot::retired_queues`).
    retired: std::collections::HashMap<String, (crate::metrics::WorkqueueStats, u64)>,
    /// Retirements so far.
    retirements: u64,
    /// How many live queues bear each name: a retired name one of them
    /// bears is not forgotten (its counters in the metrics are the live
    /// queues' plus the retired ones, and must not go down).
    live_names: std::collections::HashMap<String, usize>,
}

impl Queues {
    /// The live queues with their creation numbers, in no order (the
    /// caller sorts them after the unlock: [`in_creation_order`]), and the
    /// slots and creation numbers of those being dropped (the last
    /// reference gone, the counters not yet retired).
    fn live(&self) -> (Vec<Numbered>, Vec<(usize, u64)>) {
        let (mut alive, mut dying) = (Vec::with_capacity(self.live.len()), Vec::new());
        for (slot, e) in self.live.iter().enumerate() {
            if let Some((number, w)) = e {
                match w.upgrade() {
                    Some(q) => alive.push((*number, q)),
                    None => dying.push((slot, *number)),
                }
            }
        }
        (alive, dying)
    }

    /// Whether queue number `number` still holds `slot` (it has not
    /// retired; a queue created since may hold the slot, even at the same
    /// address, under another number).
    fn holds(&self, slot: usize, number: u64) -> bool {
        self.live
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|(n, _)| *n == number)
    }

    /// The retired counters, the least recently retired name first.
    fn retired(&self) -> Vec<crate::metrics::WorkqueueStats> {
        let mut retired: Vec<&(crate::metrics::WorkqueueStats, u64)> =
            self.retired.values().collect();
        retired.sort_unstable_by_key(|(_, n)| *n);
        retired.into_iter().map(|(s, _)| s.clone()).collect()
    }
}

/// A live queue and its creation number.
type Numbered = (u64, Arc<Queue>);

/// The queues of [`Queues::live`] in creation order: sorted with the
/// registry's lock released (with a queue per connection, a snapshot's sort
/// held up every queue's creation and drop).
fn in_creation_order(mut live: Vec<Numbered>) -> Vec<Arc<Queue>> {
    live.sort_unstable_by_key(|(n, _)| *n);
    live.into_iter().map(|(_, q)| q).collect()
}

/// [`Scheduler::instance`]: never 0 (a snapshot from a build without the
/// field reads 0, "unknown").
fn instance_id(address: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = nanos ^ (u64::from(std::process::id()) << 40) ^ (address as u64).rotate_left(17);
    mixed.max(1)
}

pub(crate) struct Scheduler {
    pub(crate) topology: Topology,
    pub(crate) config: Config,
    /// When the runtime was built (snapshots' `uptime`).
    pub(crate) started_at: std::time::Instant,
    /// Held while a snapshot reads its uptime and its counts: snapshots
    /// taken on several threads at once are then ordered as their uptimes
    /// (one that `follows` another has at least its counts, so their delta
    /// is not emptied by a subtraction that would go negative).
    pub(crate) snapshots: Mutex<()>,
    /// Tells this runtime from any other, in this process or after a
    /// restart (snapshots' `instance`): the wall clock at its build, in
    /// nanoseconds, mixed with the process id and the runtime's address.
    pub(crate) instance: u64,
    /// Per pool attributes (`PoolAttrs::index`), scope and pod.
    pools: [PoolTable; 4],
    all_pools: Mutex<Vec<Arc<Pool>>>,
    /// The named workqueues, for metrics and shutdown, and the counters of
    /// those dropped.
    queues: Mutex<Queues>,
    /// For each scope and pod: the other pods, nearest first.
    steal_order: [Box<[Box<[usize]>]>; 6],
    /// Per scope: it splits the machine as a narrower scope does (its
    /// neighbours are that one's: `placement::repeats_a_narrower`).
    repeats_a_narrower: [bool; 6],
    threads: Threads,
    closed: AtomicBool,
    /// Per scope: the next pod for a spawn from a CPU the topology does not
    /// know. One counter for every scope sent spawns that alternate
    /// between two scopes to the same pods of each for good (with 2 and
    /// 4 pods: pod 0 of one, pods 1 and 3 of the other).
    round_robin: [AtomicUsize; 6],
    /// A spawn on a CPU the topology does not know was logged (once).
    unknown_cpu_logged: AtomicBool,
    /// The live workers' numbers (`Host::worker_numbers`).
    worker_numbers: Mutex<crate::pool::current::Numbers>,
    /// The process's nice value when the runtime was built (its main
    /// thread's; 0 for a negative one the kernel resets for children),
    /// which the runtime's threads but the high-priority workers take
    /// whatever thread started them ([`process_scheduling`]).
    base_nice: Option<libc::c_int>,
    /// The process's scheduling policy for the runtime's threads
    /// ([`Policy::for_threads`]), which they take whatever thread started
    /// them.
    base_policy: Option<Policy>,
    /// On a topology that is not this machine's: the CPUs the process's
    /// main thread could use when the runtime was built, where its threads
    /// run ([`Scheduler::bind_to_every_cpu`]).
    process_cpus: Option<Box<[usize]>>,
    /// The mayday list of pools no worker could be started for.
    pub(crate) rescuer: Rescuer,
    /// The I/O and timer driver and the blocking pool (`crate::services`).
    pub(crate) services: services::Services,
    /// Test hook: worker starts to refuse (as the OS would at its limit).
    #[cfg(test)]
    pub(crate) refuse_worker_starts: AtomicUsize,
    me: Weak<Scheduler>,
}

/// How often a shutdown waiting for its threads drops the tasks that
/// reached its closed pools ([`Scheduler::wait_dropping_stragglers`]).
const STRAGGLER_SLICE: Duration = Duration::from_millis(10);

impl Scheduler {
    pub(crate) fn new(topology: Topology, config: Config) -> Arc<Scheduler> {
        let pools = PoolAttrs::ALL.map(|_| {
            Scope::ALL.map(|s| {
                (0..topology.pods(s).len())
                    .map(|_| OnceLock::new())
                    .collect()
            })
        });
        let steal_order = Scope::ALL.map(|s| placement::steal_order(&topology, s));
        let repeats_a_narrower = placement::repeats_a_narrower(&topology);
        let process_cpus = (!topology.is_live())
            .then(crate::topology::process_cpus)
            .flatten()
            .map(Vec::into_boxed_slice);
        let (base_policy, base_nice) = process_scheduling();
        Arc::new_cyclic(|me| Scheduler {
            topology,
            config,
            started_at: std::time::Instant::now(),
            snapshots: Mutex::new(()),
            instance: instance_id(me.as_ptr() as usize),
            pools,
            all_pools: Mutex::new(Vec::new()),
            queues: Mutex::new(Queues::default()),
            steal_order,
            repeats_a_narrower,
            threads: Threads::default(),
            closed: AtomicBool::new(false),
            round_robin: Default::default(),
            unknown_cpu_logged: AtomicBool::new(false),
            worker_numbers: Mutex::new(crate::pool::current::Numbers::new()),
            base_nice,
            base_policy,
            process_cpus,
            rescuer: Rescuer::default(),
            services: services::Services::default(),
            #[cfg(test)]
            refuse_worker_starts: AtomicUsize::new(0),
            me: me.clone(),
        })
    }

    /// This scheduler's address, which tells runtimes apart in
    /// `pool::current`.
    pub(crate) fn id(&self) -> *const () {
        std::ptr::from_ref(self).cast()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The attributes of the default queue's pools (`wq::spawn`).
    pub(crate) fn default_attrs(&self) -> PoolAttrs {
        PoolAttrs {
            strict: self.config.affinity_strict,
            highpri: false,
        }
    }

    /// The pool of `scope`'s pod `pod` with `attrs`, created on first use.
    #[inline]
    pub(crate) fn pool(&self, attrs: PoolAttrs, scope: Scope, pod: usize) -> &Arc<Pool> {
        match self.pools[attrs.index()][scope.index()][pod].get() {
            Some(pool) => pool,
            None => self.first_use(attrs, scope, pod),
        }
    }

    /// [`Scheduler::pool`] the first time a scope's pod is used.
    #[cold]
    #[inline(never)]
    fn first_use(&self, attrs: PoolAttrs, scope: Scope, pod: usize) -> &Arc<Pool> {
        let pool = self.pools[attrs.index()][scope.index()][pod]
            .get_or_init(|| self.create_pool(attrs, scope, pod));
        self.enter_in_every_scope(pool);
        pool
    }

    /// Enters `pool` in the table of every scope with a pod of its CPUs
    /// and attributes: one pool serves them all (`create_pool`), and a
    /// non-strict pool looks for pools to steal from in its own scope's
    /// table (`steal_remote`), where a pool first reached through another
    /// scope was missing (`cpu` beside `smt` with no SMT, `cache_shard`
    /// beside `cache` on a small LLC). Outside `all_pools`' lock: a cell
    /// that another thread is initializing makes `set` wait for it, and
    /// that thread takes the lock (to find this same pool).
    fn enter_in_every_scope(&self, pool: &Arc<Pool>) {
        for &(scope, pod) in pool.served.pods.iter() {
            let _ = self.pools[pool.attrs.index()][scope.index()][pod].set(pool.clone());
        }
    }

    /// Every scope with a pod of exactly `cpus` (of which `scope`'s `pod`
    /// is one), and that pod, narrowest first, and where those scopes
    /// split the machine differently, their steal orders merged
    /// ([`Served`]). The pod of a scope with those CPUs, if any, is the
    /// one that holds the first (a scope's pods partition the CPUs): one
    /// look per scope, where a scan of every pod of every scope at each
    /// pool's first use made a machine of N CPUs compare O(N^2) CPU lists.
    fn served_by(&self, cpus: &[usize], scope: Scope, pod: usize) -> Served {
        let pods: Box<[(Scope, usize)]> = Scope::ALL
            .into_iter()
            .filter_map(|s| {
                let p = self.topology.pod_index_of(s, cpus[0])?;
                (self.topology.pods(s)[p].cpus() == cpus).then_some((s, p))
            })
            .collect();
        debug_assert!(pods.contains(&(scope, pod)));
        // A scope that splits the machine as a narrower one does (no SMT:
        // `smt` as `cpu`) has the same neighbours: walked once.
        let distinct: Vec<(Scope, usize)> = pods
            .iter()
            .copied()
            .filter(|(s, _)| !self.repeats_a_narrower[s.index()])
            .collect();
        let steal = (distinct.len() > 1).then(|| {
            placement::merged_steal_order(&self.topology, &self.steal_order, cpus, &distinct)
        });
        Served { pods, steal }
    }

    fn create_pool(&self, attrs: PoolAttrs, scope: Scope, pod: usize) -> Arc<Pool> {
        let cpus = self.topology.pods(scope)[pod].cpus();
        let mut all = crate::loom::lock(&self.all_pools);
        if let Some(p) = all.iter().find(|p| &*p.cpus == cpus && p.attrs == attrs) {
            return p.clone();
        }
        let max_workers = self
            .config
            .max_workers_per_pool
            .unwrap_or_else(|| cpus.len().min(self.config.cpu_budget))
            .min(pool::MAX_WORKERS);
        let config = PoolConfig {
            idle: IdleConfig {
                max_workers,
                // As many again for workers blocked in block_in_place.
                slots: 2 * max_workers,
                idle_timeout: self.config.idle_timeout,
                min_idle: 2,
                wake_mode: self.config.wake_mode,
                start_backoff: MAYDAY_INTERVAL,
                kicked_list: true,
            },
            worker_spin: self.config.worker_spin,
            spinning_workers: self.config.spinning_workers,
            spin_watches_deques: self.config.spin_watches_deques,
            attrs,
            capture: self.config.latency_capture,
        };
        let host: Weak<dyn Host> = self.me.clone();
        let run_cpus = self.run_cpus(attrs, cpus);
        let pool = Arc::new(Pool::new(
            all.len(),
            (scope, pod),
            self.served_by(cpus, scope, pod),
            cpus.into(),
            run_cpus,
            config,
            host,
        ));
        if self.is_closed() {
            pool.close();
            pool.registry.close_and_wake_all();
            pool.bury();
        }
        all.push(pool.clone());
        pool
    }

    /// The CPUs the threads of a pool of `cpus` with `attrs` are bound to
    /// on a live topology ([`Pool::run_cpus`]): its pod's, except for a
    /// non-strict pool of a `cache_shard` pod, bound to the CPUs of its
    /// last-level cache. A shard splits a wide cache's *pool* (its queue,
    /// lock and idle list, which the cache's CPUs would otherwise share),
    /// not the cache: its items still queue in the submitter's shard's
    /// pool, but its workers, like the kernel's non-strict
    /// workers, may run on any CPU the scheduler finds idle in the cache
    /// rather than wait for one of the shard's CPUs while the other shard's
    /// are idle (8 producers pinned to one shard of a 16-CPU cache: 0.80-0.93x
    /// tokio's items/s with the shard's workers held to its 8 CPUs,
    /// `docs/benchmarks.md` section 12). A strict pool stays in its pod,
    /// and `cpu` and `smt` pods, whose point is the CPU's own caches, keep
    /// their CPUs.
    ///
    /// Pools are shared by CPU set, so a shard that is one core (a shard
    /// size of 1 or 2, `Topology::with_cache_shard_size`) is also the
    /// core's `smt` pool, and the core's rule wins.
    fn run_cpus(&self, attrs: PoolAttrs, cpus: &[usize]) -> Box<[usize]> {
        let is_pod = |scope: Scope| {
            cpus.first()
                .and_then(|&cpu| self.topology.pod_of(scope, cpu))
                .filter(|p| p.cpus() == cpus)
        };
        if !attrs.strict
            && is_pod(Scope::CacheShard).is_some()
            && is_pod(Scope::Smt).is_none()
            && let Some(cache) = cpus
                .first()
                .and_then(|&cpu| self.topology.pod_of(Scope::Cache, cpu))
        {
            return cache.cpus().into();
        }
        cpus.into()
    }

    /// Binds the calling thread, one of the runtime's own that is not a
    /// worker of a live topology's pod (a blocking thread, the rescuer, any
    /// worker of a synthetic or XML topology), to every CPU: a live
    /// topology's, else those of the process when the runtime was built. A
    /// thread inherits its creator's CPUs, and the creator may be a thread
    /// pinned to one CPU (a worker, a benchmark's producer), or a thread
    /// that built the runtime inside a worker's task. Best effort, as for a
    /// worker.
    pub(crate) fn bind_to_every_cpu(&self) {
        if self.topology.is_live() {
            let all: Vec<usize> = self.topology.cpus().iter().map(|c| c.os_index).collect();
            let _ = crate::topology::bind_current_thread(&all);
        } else if let Some(cpus) = &self.process_cpus {
            let _ = crate::topology::bind_current_thread(cpus);
        }
    }

    /// Gives the calling thread (a worker of a normal pool, a blocking
    /// thread, the rescuer) the process's priority back if it inherited a
    /// high-priority worker's ([`normal_priority`]).
    pub(crate) fn normal_priority(&self) {
        normal_priority(self.base_nice, self.base_policy);
    }

    /// Every pool created so far.
    pub(crate) fn pools(&self) -> Vec<Arc<Pool>> {
        crate::loom::lock(&self.all_pools).clone()
    }

    /// The pool with `attrs` a task spawned now with `scope` goes to: the
    /// pod of `cpu` if given, else of the calling thread's CPU.
    pub(crate) fn place(&self, attrs: PoolAttrs, scope: Scope, cpu: Option<usize>) -> &Arc<Pool> {
        if let Some(cpu) = cpu
            && self.topology.pod_of(scope, cpu).is_none()
        {
            // Asked for (`spawn_on_cpu`), and not known: said once, as the
            // kernel warns of work queued on a CPU it cannot use (a scope
            // of one pod too, which places it there anyway). An array
            // lookup, for spawns given a CPU only.
            self.log_unknown_cpu(cpu, scope);
        }
        let pod = placement::pod(&self.topology, self.id(), scope, attrs, cpu, || {
            self.round_robin[scope.index()].fetch_add(1, Ordering::Relaxed)
        });
        self.pool(attrs, scope, pod)
    }

    /// As [`Scheduler::place`] for a pool to record a sample against, not
    /// to run on: takes no round-robin turn (a waiting item's spawn sample
    /// took one, and its release the next, so items submitted and released
    /// one at a time from an unknown CPU all went to every other pod), and
    /// says nothing of an unknown CPU (its release will).
    pub(crate) fn place_for_sample(
        &self,
        attrs: PoolAttrs,
        scope: Scope,
        cpu: Option<usize>,
    ) -> &Arc<Pool> {
        let pod = placement::pod(&self.topology, self.id(), scope, attrs, cpu, || {
            self.round_robin[scope.index()].load(Ordering::Relaxed)
        });
        self.pool(attrs, scope, pod)
    }

    /// Logs, once per runtime, a spawn on a CPU its topology does not know
    /// (placed round-robin instead, or in the scope's one pod).
    #[cold]
    fn log_unknown_cpu(&self, cpu: usize, scope: Scope) {
        if self.unknown_cpu_logged.swap(true, Ordering::Relaxed) {
            return;
        }
        let cpus: Vec<usize> = self.topology.cpus().iter().map(|c| c.os_index).collect();
        warn_caught!(
            "wq: spawn_on_cpu({cpu}): CPU {cpu} is not in the runtime's topology ({}: CPUs {}); its tasks are placed round-robin over the {scope} pods (or in its one pod; logged once per runtime)",
            self.topology.source(),
            crate::topology::format_cpu_list(&cpus)
        );
    }

    /// For a `block_on` thread leaving the driver (to poll its future, or
    /// returning), and an attend left to a zero-wait turn: an idle
    /// worker, or a waiter, takes it; with none, and the driver still
    /// unattended, the default pool is kicked, which starts a worker if
    /// it may (one blocked in `block_in_place` no longer counts) to park
    /// in it, as a blocking worker's attend does. If every one of its
    /// workers runs and none can be started, the first pool that may
    /// start one and has tasks is kicked: an attend left to a zero-wait
    /// turn came from a worker blocking in a pool of its own (a strict or
    /// high-priority queue's), whose start was the one to make. (Rare: a
    /// scan of the pools' hints.)
    pub(crate) fn attend_driver_or_start(&self) {
        if crate::pool::Host::attend_driver(self) || !self.services.driver_unattended() {
            return;
        }
        let default = self.place(self.default_attrs(), self.config.default_scope, None);
        if default.kick_reaches() {
            return;
        }
        // Another pool than the one just kicked (its kick coalesced on a
        // searcher, or it is full).
        let room = crate::loom::lock(&self.all_pools)
            .iter()
            .find(|p| p.id != default.id && p.idle.may_start() && p.registry.len() > 0)
            .cloned();
        if let Some(pool) = room {
            pool.kick();
        }
    }

    /// After the watchdog's zero-wait turn: a worker that idled during it
    /// found the driver taken and sleeps on its futex: it takes the driver
    /// now. An attend left to this turn is done as its maker would have
    /// done it: with no idle worker and no waiter, a pool is kicked,
    /// which starts a worker if it may (the maker, a worker blocking in
    /// `block_in_place` or a `block_on` thread off to poll, counted the
    /// driver attended and kicked nothing).
    pub(crate) fn attend_after_zero_wait_turn(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.services.take_deferred_attend() {
            self.attend_driver_or_start();
        } else {
            crate::pool::Host::attend_driver(self);
        }
    }

    /// Creates a named workqueue on this runtime.
    pub(crate) fn create_queue(&self, config: queue::QueueConfig) -> Arc<Queue> {
        let q = Arc::new(Queue::new(config, self.me.clone()));
        // A dropped queue takes its own entry out (`retire_queue`).
        let mut queues = crate::loom::lock(&self.queues);
        let slot = queues.free.pop().unwrap_or_else(|| {
            queues.live.push(None);
            queues.live.len() - 1
        });
        let number = queues.created;
        queues.created += 1;
        queues.live[slot] = Some((number, Arc::downgrade(&q)));
        *queues.live_names.entry(q.name().to_owned()).or_default() += 1;
        q.set_registry_slot(slot);
        drop(queues);
        if self.is_closed() {
            q.close();
        }
        q
    }

    /// The named queue at `queue` is being dropped, with these counters:
    /// its entry leaves the live list and its counters join its name's
    /// retired entry, in one critical section, so a snapshot sees them in
    /// one list or the other ([`Scheduler::queues_and_retired`]). The
    /// retired entry moves to the end; the least recently dropped names
    /// are forgotten beyond [`crate::metrics::RETIRED_QUEUE_NAMES`].
    pub(crate) fn retire_queue(
        &self,
        queue: *const Queue,
        slot: usize,
        stats: crate::metrics::WorkqueueStats,
    ) {
        let mut queues = crate::loom::lock(&self.queues);
        let queues = &mut *queues;
        if let Some(entry) = queues.live.get_mut(slot)
            && entry
                .as_ref()
                .is_some_and(|(_, w)| std::ptr::eq(w.as_ptr(), queue))
        {
            *entry = None;
            queues.free.push(slot);
            if let Some(n) = queues.live_names.get_mut(&stats.name) {
                *n -= 1;
                if *n == 0 {
                    queues.live_names.remove(&stats.name);
                }
            }
        }
        let number = queues.retirements;
        queues.retirements += 1;
        match queues.retired.get_mut(&stats.name) {
            Some((r, n)) => {
                r.absorb(&stats.retired());
                *n = number;
            }
            None => {
                let name = stats.name.clone();
                queues.retired.insert(name, (stats.retired(), number));
            }
        }
        // Past the limit, forget the names retired longest ago that no
        // live queue bears (a scan per name forgotten, only past the
        // limit; with every retired name live, none is forgotten: the map
        // is bounded by the live queues). At every retirement, not only a
        // new name's: names kept while live queues bore them are
        // forgotten as those queues go.
        while queues.retired.len() > crate::metrics::RETIRED_QUEUE_NAMES {
            let live_names = &queues.live_names;
            let oldest = queues
                .retired
                .iter()
                .filter(|(name, _)| !live_names.contains_key(*name))
                .min_by_key(|(_, (_, n))| *n)
                .map(|(name, _)| name.clone());
            let Some(oldest) = oldest else { break };
            queues.retired.remove(&oldest);
        }
    }

    /// The named workqueues alive now, in creation order.
    pub(crate) fn queues(&self) -> Vec<Arc<Queue>> {
        let live = crate::loom::lock(&self.queues).live().0;
        in_creation_order(live)
    }

    /// The live queues and the retired counters, consistent: a queue being
    /// dropped (its last reference gone, its counters not yet retired) is
    /// waited for, or it would be in neither and its name's counters would
    /// go down for that snapshot. Only the queues found dying are waited
    /// for (each drop takes microseconds): those found alive are held, so
    /// none of them can die meanwhile. (Waiting for a scan that found none
    /// dying retried for ever under a steady churn of queues, the lock
    /// held for a scan each time.) After a second the snapshot goes on
    /// without them.
    pub(crate) fn queues_and_retired(
        &self,
    ) -> (Vec<Arc<Queue>>, Vec<crate::metrics::WorkqueueStats>) {
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let (live, dying) = crate::loom::lock(&self.queues).live();
        loop {
            let queues = crate::loom::lock(&self.queues);
            let retired = dying
                .iter()
                .all(|&(slot, number)| !queues.holds(slot, number));
            if retired || std::time::Instant::now() >= give_up {
                #[cfg(test)]
                if !retired {
                    SNAPSHOTS_GAVE_UP.fetch_add(1, Ordering::Relaxed);
                }
                let retired = queues.retired();
                drop(queues);
                return (in_creation_order(live), retired);
            }
            drop(queues);
            std::thread::yield_now();
        }
    }

    /// Waits for the threads (as `Threads::wait`), dropping every
    /// [`STRAGGLER_SLICE`] what reached the closed pools meanwhile: a task
    /// whose poll was running when the pools closed absorbed the registry
    /// wake and is queued when that poll ends; a worker stuck in a poll
    /// (no `block_in_place`, the watchdog gone) keeps the task it spawned
    /// last in its LIFO slot, where no drain looked. A thread waited for (a
    /// worker blocked in `block_in_place`, the stuck worker itself) may be
    /// waiting for such a task to be dropped: waited for in one go, the
    /// shutdown hung.
    ///
    /// While it waits it turns the I/O driver, if the runtime has one and
    /// nobody else turns it: a worker blocked in `block_in_place` may wait,
    /// in synchronous code, on a wq timer or socket, which the workers
    /// served by parking in the driver, and they are gone (the drop hung
    /// for ever). Each thread's exit unparks the driver
    /// ([`Threads::on_exit`](threads::Threads::on_exit)), so the turn ends
    /// as soon as the last one is out.
    fn wait_dropping_stragglers(
        &self,
        pools: &[Arc<Pool>],
        deadline: Option<std::time::Instant>,
        me: usize,
    ) -> bool {
        let mut driver: Option<crate::driver::Handle> = None;
        loop {
            // Looked for at each pass: a thread waited for may make the
            // runtime's first socket or timer while the shutdown waits.
            if driver.is_none()
                && let Some(d) = self.services.existing_driver()
            {
                let d = d.clone();
                driver = Some(d.clone());
                self.threads.on_exit(Box::new(move || d.unpark()));
            }
            let slice = match deadline {
                None => STRAGGLER_SLICE,
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        // One last look (joining them if all exited): a
                        // deadline that ran out during a drain says
                        // nothing of the threads.
                        let all = self.threads.wait(
                            Some(Duration::ZERO),
                            me,
                            threads::join_deadline(deadline),
                        );
                        if !all {
                            self.threads.give_up();
                        }
                        return all;
                    }
                    left.min(STRAGGLER_SLICE)
                }
            };
            // Checked after the hook is set: a thread out before it is
            // counted here, one out after it cuts the turn short.
            let turned = driver.is_some()
                && !self.threads.at_most(me)
                && self.services.turn_driver(Turn::Park, &mut |d| {
                    d.turn(Some(slice));
                });
            let waited = if turned { Duration::ZERO } else { slice };
            if self
                .threads
                .wait(Some(waited), me, threads::join_deadline(deadline))
            {
                return true;
            }
            for pool in pools {
                pool.drain_stragglers();
            }
        }
    }

    /// Starts the rescuer thread (at build time).
    pub(crate) fn start_rescuer(&self) -> std::io::Result<()> {
        let me = self.me.upgrade().expect("called on a live runtime");
        self.threads.spawn(
            format!("{}-rescuer", self.config.thread_name),
            self.config.thread_stack_size,
            move || rescuer::run(&me),
        )
    }

    /// Shuts the runtime down (idempotent). Waits for the threads, workers
    /// and then blocking ones, up to `timeout` in all (forever if `None`);
    /// returns whether they all exited.
    pub(crate) fn shutdown(&self, timeout: Option<Duration>) -> bool {
        // One deadline for every wait below. A timeout past what `Instant`
        // holds (`Duration::MAX`) is forever.
        let deadline = timeout.and_then(|t| std::time::Instant::now().checked_add(t));
        // The futures dropped in this thread (idle tasks, items on inactive
        // lists) see this runtime as current, as they would on a worker: a
        // `Drop` that spawns gets a refused handle rather than an "outside
        // a runtime" panic (or, inside another runtime's `block_on`, a
        // spawn onto that one).
        let _enter = self.me.upgrade().and_then(context::try_enter);
        // A thread of this runtime dropping it cannot wait for itself.
        let me = usize::from(current::on_worker_of(self.id()) || current::on_rescuer_of(self.id()));
        let pools = {
            let all = crate::loom::lock(&self.all_pools);
            if self.closed.swap(true, Ordering::AcqRel) {
                drop(all);
                return self
                    .threads
                    .wait(timeout, me, threads::join_deadline(deadline));
            }
            all.clone()
        };
        self.threads.close();
        for pool in &pools {
            pool.close();
        }
        // No blocking job starts from now on: one started while the
        // workers are waited for could outlast the shutdown's timeout, or
        // be what a blocked worker waits for behind a job that waits for
        // it.
        self.services.blocking.close();
        self.rescuer.close();
        // Items waiting on the queues' inactive lists are dropped here.
        for queue in self.queues() {
            queue.close();
        }
        for pool in &pools {
            pool.registry.close_and_wake_all();
            pool.drain();
        }
        if current::on_worker_of(self.id()) {
            // Dropped inside one of its own tasks: this worker's LIFO slot
            // holds a task no drain reaches (the drains above took its
            // deque's). Dropped now, not after the wait below: a thread
            // it waits for (a blocked worker, a blocking job) may be
            // waiting for one of them to go.
            crate::pool::worker::drop_local_tasks();
        }
        let all_exited = self.wait_dropping_stragglers(&pools, deadline, me);
        // A task that a worker took from a queue before the pool closed, and
        // whose wake above was absorbed by that pending run, is idle again
        // now that the worker is gone: wake what is left once more, with no
        // worker running. And the workers' LIFO slots once more: the wait
        // empties them only in its slices, which a deadline already past
        // skips (`shutdown_timeout(Duration::ZERO)`), and a poll stuck on
        // its slot's task stayed stuck for the life of the process.
        for pool in &pools {
            pool.registry.close_and_wake_all();
            pool.drain_stragglers();
            pool.bury();
        }
        self.services.shutdown(deadline) && all_exited
    }
}

impl Host for Scheduler {
    fn start_worker(&self, pool: &Arc<Pool>, slot: usize) -> Result<(), StartError> {
        #[cfg(test)]
        if self
            .refuse_worker_starts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StartError::Os(std::io::Error::from_raw_os_error(
                libc::EAGAIN,
            )));
        }
        let Some(me) = self.me.upgrade() else {
            return Err(StartError::Closed);
        };
        let name = format!("{}-{}.{}", self.config.thread_name, pool.id, slot);
        let pool = pool.clone();
        let spawned = self
            .threads
            .spawn(name, self.config.thread_stack_size, move || {
                if me.topology.is_live() {
                    // Best effort: a CPU set we may not use (a cgroup
                    // changed under us, a CPU taken offline) is said once
                    // per pool, and the thread goes on every CPU it may
                    // use -- not where its starter was pinned (a worker of
                    // another pod, on one CPU).
                    if let Err(e) = crate::topology::bind_current_thread(&pool.run_cpus) {
                        me.bind_to_every_cpu();
                        pool.warn_unbound(&e);
                    }
                } else {
                    // Bound to no pod, and not to whatever its starter was
                    // pinned to.
                    me.bind_to_every_cpu();
                }
                if pool.attrs.highpri {
                    process_policy(me.base_policy);
                    raise_priority(me.base_nice);
                } else {
                    me.normal_priority();
                }
                let _context = context::enter(me.clone());
                let _hooks = ThreadHooks::start(&me.config);
                let host: Arc<dyn Host> = me.clone();
                pool::worker::run(&pool, slot, &host);
            });
        match spawned {
            Ok(()) => Ok(()),
            Err(_) if self.is_closed() => Err(StartError::Closed),
            Err(err) => Err(StartError::Os(err)),
        }
    }

    fn mayday(&self, pool: &Arc<Pool>) {
        self.rescuer.mayday_pool(pool);
    }

    fn turn_driver(&self, kind: Turn, turn: &mut dyn FnMut(&mut crate::driver::Driver)) -> bool {
        self.services.turn_driver(kind, turn)
    }

    fn take_deferred_attend(&self) -> bool {
        self.services.take_deferred_attend()
    }

    fn attend_driver_or_start(&self) {
        Scheduler::attend_driver_or_start(self);
    }

    fn worker_numbers(&self) -> &Mutex<crate::pool::current::Numbers> {
        &self.worker_numbers
    }

    fn driver_unattended(&self) -> bool {
        self.services.driver_unattended()
    }

    fn driver_unparked(&self) -> bool {
        self.services.driver_unparked()
    }

    fn attend_driver(&self) -> bool {
        // The store-buffering pair with a worker that parks: it counts
        // itself parked, then tries the driver's lock; this thread gave the
        // lock back, then reads who is parked. One of the two sees the
        // other.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.services.attend() == services::Attended::Yes {
            return true;
        }
        // Only the pools with a worker parked (the hint, read without
        // their locks; a worker searching does not count: `wake_idle`):
        // no clone of every pool's `Arc`.
        let candidates: Vec<Arc<Pool>> = crate::loom::lock(&self.all_pools)
            .iter()
            .filter(|p| p.idle.may_wake_idle())
            .cloned()
            .collect();
        // No worker to wake (every one busy, blocked, or none started): a
        // `block_on` thread that found the driver taken and sleeps on its
        // futex takes it (it slept its whole park, a minute, a timer of
        // its future unfired).
        candidates.iter().any(|p| p.idle.wake_idle()) || self.services.wake_block_on_waiters()
    }

    fn steal_remote(
        &self,
        pool: &Pool,
        take: &mut dyn FnMut(&Pool) -> Option<Runnable>,
    ) -> Option<Runnable> {
        // The neighbours in every scope that shares the pool, nearest
        // first: it looked in its creating scope's table alone, so whether
        // it helped another scope's pods depended on which scope reached
        // it first (a cache of 4 CPUs beside one of 16 split in two
        // shards: its one pool is both a `cache` and a `cache_shard` pod).
        let tables = &self.pools[pool.attrs.index()];
        let usable = |p: &&Arc<Pool>| p.id != pool.id && !p.attrs.strict;
        match &pool.served.steal {
            Some(merged) => merged
                .iter()
                .filter_map(|&(scope, pod)| tables[scope.index()][pod].get())
                .filter(usable)
                .find_map(|p| take(p)),
            None => {
                let (scope, pod) = pool.served.pods[0];
                let table = &tables[scope.index()];
                self.steal_order[scope.index()][pod]
                    .iter()
                    .filter_map(|&pod| table[pod].get())
                    .filter(usable)
                    .find_map(|p| take(p))
            }
        }
    }
}

/// The kernel's `HIGHPRI_NICE_LEVEL`.
const HIGHPRI_NICE: libc::c_int = -20;

/// The nice value of thread (or process) `who`, `None` if unknown (-1 is a
/// nice value: errno tells an error from it).
fn nice_of(who: libc::id_t) -> Option<libc::c_int> {
    // SAFETY: errno is this thread's; getpriority takes plain integers.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, who);
        (n != -1 || *libc::__errno_location() == 0).then_some(n)
    }
}

/// A scheduling policy and its static priority (`sched_getscheduler`,
/// `sched_getparam`), and whether it asks the kernel to start children at
/// normal scheduling (`SCHED_RESET_ON_FORK`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    policy: libc::c_int,
    priority: libc::c_int,
    reset_on_fork: bool,
}

/// `sched_getscheduler`'s flag asking children to start at `SCHED_OTHER`
/// (not in `libc` for Linux).
const SCHED_RESET_ON_FORK: libc::c_int = 0x4000_0000;

/// `SCHED_DEADLINE` (set only by `sched_setattr`, which wq does not call).
const SCHED_DEADLINE: libc::c_int = 6;

impl Policy {
    /// The same policy and priority (the flag aside).
    fn same(self, other: Policy) -> bool {
        (self.policy, self.priority) == (other.policy, other.priority)
    }

    /// What the runtime's threads take from the process's (its main
    /// thread's) scheduling: what a thread the main thread started would
    /// have. With `SCHED_RESET_ON_FORK` the kernel starts those at normal
    /// scheduling (a real-time or deadline policy becomes `SCHED_OTHER`,
    /// a negative nice value 0: rtkit's real-time and high-priority
    /// threads ask for that), and the runtime's threads stay there. `None`
    /// for a deadline policy without the flag (`sched_setscheduler` cannot
    /// set one: the threads are left as they start).
    fn for_threads(self) -> Option<Policy> {
        let realtime = matches!(
            self.policy,
            libc::SCHED_FIFO | libc::SCHED_RR | SCHED_DEADLINE
        );
        if self.reset_on_fork && realtime {
            return Some(Policy {
                policy: libc::SCHED_OTHER,
                priority: 0,
                reset_on_fork: false,
            });
        }
        (self.policy != SCHED_DEADLINE).then_some(Policy {
            reset_on_fork: false,
            ..self
        })
    }
}

/// The scheduling policy of thread (or process) `pid` (0: the calling
/// thread), `None` if unknown.
fn policy_of(pid: libc::pid_t) -> Option<Policy> {
    // SAFETY: plain integers, and a `sched_param` to write to.
    unsafe {
        let policy = libc::sched_getscheduler(pid);
        let mut param = libc::sched_param { sched_priority: 0 };
        (policy >= 0 && libc::sched_getparam(pid, &mut param) == 0).then_some(Policy {
            policy: policy & !SCHED_RESET_ON_FORK,
            priority: param.sched_priority,
            reset_on_fork: policy & SCHED_RESET_ON_FORK != 0,
        })
    }
}

/// The process's scheduling for the runtime's threads ([`Policy::for_threads`]):
/// its main thread's policy, and nice value (0 where that is negative and
/// the kernel resets it for children).
fn process_scheduling() -> (Option<Policy>, Option<libc::c_int>) {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let policy = policy_of(pid);
    let nice = nice_of(pid as libc::id_t);
    let reset = policy.is_some_and(|p| p.reset_on_fork);
    (
        policy.and_then(Policy::for_threads),
        nice.map(|n| if reset { n.max(0) } else { n }),
    )
}

/// Says once that a thread of the runtime's could not take the process's
/// scheduling back (`what`), and what to do.
fn warn_inherited(what: std::fmt::Arguments<'_>) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "wq: a runtime thread started from a thread of other scheduling could not take the process's back ({what}); \
             it keeps its starter's. A thread starts with its creator's policy and nice value, and wq starts workers from \
             the thread that spawns or wakes a task: give the process CAP_SYS_NICE or a nice limit that allows it \
             (`ulimit -e 40`, RLIMIT_NICE), or spawn from threads of the process's scheduling"
        );
    });
}

/// Gives the calling thread, one of the runtime's, the process's
/// scheduling policy (`base`, its main thread's) if it started with
/// another: a thread takes its creator's, and wq starts a worker from the
/// thread whose spawn or wake kicked its pool (a real-time audio thread
/// waking a task made a `SCHED_FIFO` worker that ran every task of its
/// pool, spinning included, as real-time; a `SCHED_IDLE` producer, a
/// worker that runs only when nothing else would).
fn process_policy(base: Option<Policy>) {
    let Some(base) = base else { return };
    if policy_of(0).is_none_or(|now| now.same(base)) {
        return;
    }
    let param = libc::sched_param {
        sched_priority: base.priority,
    };
    // SAFETY: the calling thread (0), a policy and a parameter read from
    // the process.
    if unsafe { libc::sched_setscheduler(0, base.policy, &param) } != 0 {
        let err = std::io::Error::last_os_error();
        warn_inherited(format_args!("policy {}: {err}", base.policy));
    }
}

/// Gives the calling thread, one of the runtime's that is not a
/// high-priority worker, the process's scheduling back (`base`, its main
/// thread's policy and nice value) if it started with another's: a thread
/// takes its creator's, and a high-priority worker starts blocking threads
/// (`spawn_blocking`), workers of other pools (a spawn) and the rescuer (a
/// runtime built in its task), and a user's thread (a producer at nice 19,
/// a real-time thread) starts the workers of the pools it spawns on.
/// Raising a priority back may be refused (no `CAP_SYS_NICE`, a nice limit
/// below it): said once, and the thread keeps its starter's.
fn normal_priority(base: Option<libc::c_int>, policy: Option<Policy>) {
    process_policy(policy);
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as libc::id_t;
    if let (Some(base), Some(now)) = (base, nice_of(tid))
        && now != base
    {
        // SAFETY: as in `raise_priority`.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, base) } != 0 {
            let err = std::io::Error::last_os_error();
            warn_inherited(format_args!("nice {now} to {base}: {err}"));
        }
    }
}

/// Gives the calling (worker) thread the high-priority pools' nice level;
/// where the process may not, the nearest to it the nice limit allows
/// (`RLIMIT_NICE`) above the process's priority (`base`), else the
/// process's, else the nearest to that the limit allows: not simply the
/// nice value of the thread that started the worker (a producer at nice
/// 10 made high-priority workers run below the normal pools). Says once,
/// on stderr, where it ended up (the pools still work, at that priority).
fn raise_priority(base: Option<libc::c_int>) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as libc::id_t;
    let mut err = None;
    let set = |nice| {
        // SAFETY: setpriority takes plain integers; PRIO_PROCESS with a
        // thread id sets that thread's nice value on Linux.
        let ok = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } == 0;
        if !ok && err.is_none() {
            err = Some(std::io::Error::last_os_error());
        }
        ok
    };
    // RLIMIT_NICE's soft limit n allows nice values down to 20 - n.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit to write.
    let allowed = (unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut limit) } == 0)
        .then(|| 20 - limit.rlim_cur.min(40) as libc::c_int);
    if highpri_nice(set, allowed, base) == Some(HIGHPRI_NICE) {
        return;
    }
    let err = err.map_or_else(|| "refused".to_owned(), |e| e.to_string());
    let got = match nice_of(tid) {
        Some(now) if Some(now) == base => "the process's priority".to_owned(),
        Some(now) => format!("nice {now}, as near as the process's nice limit allows"),
        None => "a priority wq could not read".to_owned(),
    };
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "wq: could not raise the priority of high-priority workers to nice {HIGHPRI_NICE}: {err}; \
             they run at {got} (they still have pools of their own). Give the process \
             CAP_SYS_NICE, or a nice limit that allows it (`ulimit -e 40`, RLIMIT_NICE)"
        );
    });
}

/// The nice value [`raise_priority`] sets (with `set`, which says whether
/// it could), tried in turn: -20; the lowest `allowed` (the nice limit's)
/// if below `base` (the process's); `base`; `allowed` if above it (the
/// nearest to `base` a thread above it may go). `None`: none could be set.
fn highpri_nice(
    mut set: impl FnMut(libc::c_int) -> bool,
    allowed: Option<libc::c_int>,
    base: Option<libc::c_int>,
) -> Option<libc::c_int> {
    let allowed = allowed.map(|n| n.max(HIGHPRI_NICE));
    let below = |a: libc::c_int, b: libc::c_int| a < b;
    [
        Some(HIGHPRI_NICE),
        allowed.filter(|&a| base.is_some_and(|b| below(a, b))),
        base,
        allowed.filter(|&a| base.is_some_and(|b| below(b, a))),
    ]
    .into_iter()
    .flatten()
    .find(|&nice| set(nice))
}

/// The capacity a queue keeps however empty it gets ([`trim`]).
const TRIM_KEEP: usize = 64;

/// Gives a queue's memory back after a burst: down to half its capacity
/// when a quarter is used, not below [`TRIM_KEEP`] entries. Called after
/// each removal; halving at a quarter, the copies cost O(1) per entry
/// removed, amortised, and a queue that refills never thrashes. (A named
/// queue's inactive list kept a million waiting items' 24 MiB until the
/// queue was dropped; the blocking pool's queue, a million jobs' 16 MiB
/// for the runtime's life.)
pub(crate) fn trim<T>(queue: &mut std::collections::VecDeque<T>) {
    let cap = queue.capacity();
    if cap > TRIM_KEEP && queue.len() < cap / 4 {
        queue.shrink_to(cap / 2);
    }
}

/// The index of an entry of `queue` matching `found`, looked for from both
/// ends at once: an aborted entry taken out of a FIFO queue (a queued
/// blocking job, an item on an inactive list) is found in a step or two
/// whether the aborts come oldest first (a `Vec` of handles) or newest
/// first (a `JoinSet`'s), where a search from the front made the newest
/// first bulk abort of N entries N²/2 steps under the queue's lock.
pub(crate) fn position_from_ends<T>(
    queue: &std::collections::VecDeque<T>,
    mut found: impl FnMut(&T) -> bool,
) -> Option<usize> {
    let (mut front, mut back) = (0, queue.len());
    while front < back {
        if found(&queue[front]) {
            return Some(front);
        }
        front += 1;
        if front < back {
            back -= 1;
            if found(&queue[back]) {
                return Some(back);
            }
        }
    }
    None
}

/// Snapshots that went on without a queue being dropped (after a second
/// of waiting for it): a test hook.
#[cfg(test)]
static SNAPSHOTS_GAVE_UP: AtomicUsize = AtomicUsize::new(0);

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::SNAPSHOTS_GAVE_UP;
    use crate::pool::PoolAttrs;
    use crate::{Runtime, Scope, Topology, Workqueue};

    /// A high-priority worker refused nice -20 goes as near it as the
    /// nice limit allows, else to the process's priority, else as near
    /// that as allowed, never simply kept at its starter's: from a
    /// producer at nice 10 it ran at 10, below the normal pools.
    #[test]
    fn a_highpri_worker_refused_nice_minus_20_goes_as_high_as_allowed() {
        use super::{HIGHPRI_NICE, highpri_nice};
        let tries = std::cell::RefCell::new(Vec::new());
        // May set -10 and above (RLIMIT_NICE 30), not -20.
        let set = |nice| {
            tries.borrow_mut().push(nice);
            nice >= -10
        };
        assert_eq!(highpri_nice(set, Some(-10), Some(0)), Some(-10));
        assert_eq!(*tries.borrow(), [HIGHPRI_NICE, -10]);
        // A limit at the process's nice value: that.
        assert_eq!(highpri_nice(|n| n >= 0, Some(0), Some(0)), Some(0));
        // A limit short of it (RLIMIT_NICE 15, from a starter at 19):
        // the nearest allowed.
        assert_eq!(highpri_nice(|n| n >= 5, Some(5), Some(0)), Some(5));
        // Nothing allowed, or nothing known: nothing set.
        assert_eq!(highpri_nice(|_| false, Some(5), Some(0)), None);
        assert_eq!(highpri_nice(|n| n >= 5, None, None), None);
        // -20 first, whatever the limit says.
        assert_eq!(highpri_nice(|n| n == -20, Some(-30), Some(0)), Some(-20));
        assert_eq!(
            highpri_nice(|_| true, Some(20), Some(0)),
            Some(HIGHPRI_NICE)
        );
    }

    /// A shutdown that gives up on its threads (a zero timeout: the
    /// rescuer and a worker are still on their way out) leaves none of
    /// them joinable once they are gone: the last of them to exit stayed
    /// so (no thread joins itself), its stack mapped while a `Handle`
    /// kept the runtime.
    #[test]
    fn threads_a_shutdown_gave_up_on_are_not_left_joinable() {
        let rt = Runtime::builder().build().unwrap();
        let h = rt.handle().clone();
        // A worker held in a poll through the shutdown.
        let (started_tx, started) = std::sync::mpsc::channel();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let _task = rt.spawn(async move {
            started_tx.send(()).unwrap();
            let _ = held.recv();
        });
        started.recv().unwrap();
        assert!(!rt.shutdown_timeout(Duration::ZERO));
        drop(release);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !h.scheduler.threads.at_most(0) {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(h.scheduler.threads.handles_held(), 0);
    }

    /// A pool made for one scope's pod is entered in every scope's table
    /// with a pod of the same CPUs (here, without SMT, `cpu` and `smt`;
    /// `cache_shard`, `cache`, `numa` and `system` are the whole machine),
    /// and in no other pod.
    #[test]
    fn a_pool_is_entered_in_every_scope_with_its_cpus() {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("core:4 pu:1").unwrap())
            .build()
            .unwrap();
        rt.block_on(rt.handle().spawn_on_cpu(2, Scope::Cpu, async {}))
            .unwrap();
        rt.block_on(rt.handle().spawn_on_cpu(1, Scope::Cache, async {}))
            .unwrap();
        let s = &rt.handle().scheduler;
        let attrs = s.default_attrs();
        let pools = s.pools();
        assert!(pools.iter().any(|p| *p.cpus == [2]));
        for scope in Scope::ALL {
            for (pod, cell) in s.pools[attrs.index()][scope.index()].iter().enumerate() {
                let cpus = s.topology.pods(scope)[pod].cpus();
                let made = pools.iter().find(|p| &*p.cpus == cpus && p.attrs == attrs);
                match (cell.get(), made) {
                    (Some(p), Some(m)) => assert!(Arc::ptr_eq(p, m), "{scope} {pod}"),
                    (None, None) => {}
                    (p, m) => panic!("{scope} pod {pod}: in the table {p:?}, made {m:?}"),
                }
            }
        }
    }

    /// Every entry is found, each once; removed in either order, oldest or
    /// newest first, each takes at most two looks.
    #[test]
    fn an_entry_is_found_from_either_end_in_two_looks() {
        use std::collections::VecDeque;
        for n in 0..6 {
            let q: VecDeque<usize> = (0..n).collect();
            for want in 0..n {
                assert_eq!(super::position_from_ends(&q, |&x| x == want), Some(want));
            }
            assert_eq!(super::position_from_ends(&q, |&x| x == n), None);
            let mut looks = 0;
            assert_eq!(
                super::position_from_ends(&q, |_| {
                    looks += 1;
                    false
                }),
                None
            );
            assert_eq!(looks, n, "each entry looked at once");
        }
        for newest_first in [false, true] {
            let mut q: VecDeque<usize> = (0..1000).collect();
            let mut looks = 0;
            let order: Vec<usize> = if newest_first {
                (0..1000).rev().collect()
            } else {
                (0..1000).collect()
            };
            for want in order {
                let at = super::position_from_ends(&q, |&x| {
                    looks += 1;
                    x == want
                });
                q.remove(at.unwrap());
            }
            assert!(looks <= 2 * 1000, "{looks} looks for 1000 removals");
        }
    }

    /// A non-strict `cache_shard` pool's threads are bound to its cache,
    /// a strict one's to its shard, and `cpu`, `smt` and `cache` pools'
    /// to their pods (16 cores in one cache: two shards of 8). With the
    /// shard's threads held to its CPUs, 8 producers on one shard of a
    /// 16-CPU cache left the other 8 CPUs idle while 16 threads shared 8
    /// (0.80-0.93x tokio's items/s; 1.40-1.48x bound to the cache).
    #[test]
    fn a_non_strict_shard_pool_runs_anywhere_in_its_cache() {
        let topo = Topology::synthetic("l3:1 core:16 pu:1").unwrap();
        let all: Vec<usize> = (0..16).collect();
        for strict in [false, true] {
            let rt = Runtime::builder()
                .topology(topo.clone())
                .affinity_strict(strict)
                .build()
                .unwrap();
            let s = &rt.handle().scheduler;
            let attrs = s.default_attrs();
            let shard = s.pool(attrs, Scope::CacheShard, 1);
            assert_eq!(&*shard.cpus, &all[8..], "the shard's pod");
            let want = if strict { &all[8..] } else { &all[..] };
            assert_eq!(&*shard.run_cpus, want, "strict: {strict}");
            assert_eq!(&*s.pool(attrs, Scope::Cpu, 3).run_cpus, &[3]);
            assert_eq!(&*s.pool(attrs, Scope::Smt, 5).run_cpus, &[5]);
            assert_eq!(&*s.pool(attrs, Scope::Cache, 0).run_cpus, &all[..]);
        }
        // Shards of one core (a shard size of 1) are the cores' pools,
        // which stay on their core; a shard of two keeps the rule.
        for (size, want) in [(1, vec![1]), (2, vec![0, 1, 2, 3])] {
            let rt = Runtime::builder()
                .topology(
                    Topology::synthetic("l3:1 core:4 pu:1")
                        .unwrap()
                        .with_cache_shard_size(size)
                        .unwrap(),
                )
                .build()
                .unwrap();
            let s = &rt.handle().scheduler;
            let attrs = s.default_attrs();
            assert_eq!(&*s.pool(attrs, Scope::CacheShard, 1).run_cpus, &want[..]);
            assert_eq!(&*s.pool(attrs, Scope::Cpu, 1).run_cpus, &[1]);
        }
        // A shard that is its whole cache (4 cores of 2 CPUs: one shard) is
        // the cache's pool.
        let rt = Runtime::builder()
            .topology(Topology::synthetic("l3:2 core:4 pu:2").unwrap())
            .build()
            .unwrap();
        let s = &rt.handle().scheduler;
        let shard = s.pool(s.default_attrs(), Scope::CacheShard, 1);
        assert!(Arc::ptr_eq(
            shard,
            s.pool(s.default_attrs(), Scope::Cache, 1)
        ));
        assert_eq!(&*shard.run_cpus, &[8, 9, 10, 11, 12, 13, 14, 15]);
    }

    /// A worker of a pool whose workers may leave its pod (a non-strict
    /// shard of a split cache) places its `cache_shard` spawns into pools
    /// like its own from its pod when it runs outside it, and from where
    /// it runs at home; its spawns into other pools (a strict queue's),
    /// any other thread's, and a spawn onto another runtime, by the CPU it
    /// runs on.
    #[test]
    fn a_roaming_worker_places_shard_spawns_from_its_own_pod() {
        let build = || {
            Runtime::builder()
                .topology(
                    Topology::synthetic("l3:1 core:4 pu:1")
                        .unwrap()
                        .with_cache_shard_size(2)
                        .unwrap(),
                )
                .build()
                .unwrap()
        };
        let (rt, other) = (build(), build());
        let (me, them) = (rt.handle().scheduler.id(), other.handle().scheduler.id());
        let (me, them) = (me as usize, them as usize);
        let q = Workqueue::builder("roam")
            .scope(Scope::CacheShard)
            .build(rt.handle())
            .unwrap();
        // Shard 0 is CPUs 0-1, bound (were the topology live) to 0-3.
        let own = rt.handle().scheduler.default_attrs();
        let strict = PoolAttrs {
            strict: true,
            ..own
        };
        let got = rt
            .block_on(q.spawn_on_cpu(0, async move {
                let place = |host: usize, cpu, attrs| {
                    crate::pool::current::placement_cpu(host as *const (), cpu, attrs)
                };
                (
                    place(me, 3, own),
                    place(me, 1, own),
                    place(them, 3, own),
                    place(me, 3, strict),
                )
            }))
            .unwrap();
        assert!(got.0 < 2, "away: placed from CPU {}, not its pod's", got.0);
        assert_eq!(got.1, 1, "at home: where it runs");
        assert_eq!(got.2, 3, "onto another runtime: where it runs");
        assert_eq!(got.3, 3, "into a strict pool: where it runs");
        let outside = crate::pool::current::placement_cpu(me as *const (), 3, own);
        assert_eq!(outside, 3, "a thread that is no worker");
    }

    /// A snapshot waits only for the queues it found dying. Two threads
    /// drop queues whose drops take 300 ms each (a test hook), staggered,
    /// so that one is always dying: waiting for a scan that found none
    /// dying (as a steady churn of a queue per connection makes it) gave
    /// up after its one-second limit, the list's lock taken for a scan
    /// each time, and the snapshot then lost the dying queues' counters.
    #[test]
    fn a_snapshot_waits_only_for_the_queues_it_found_dying() {
        let rt = Runtime::builder().build().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let droppers: Vec<_> = (0..2u64)
            .map(|i| {
                let (h, stop) = (rt.handle().clone(), stop.clone());
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(150 * i));
                    while !stop.load(Ordering::Relaxed) {
                        drop(Workqueue::builder("dying-ms-300").build(&h).unwrap());
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let before = SNAPSHOTS_GAVE_UP.load(Ordering::Relaxed);
        let _ = rt.metrics();
        let gave_up = SNAPSHOTS_GAVE_UP.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        for d in droppers {
            d.join().unwrap();
        }
        assert_eq!(
            gave_up, 0,
            "the snapshot waited for queues that died after its scan"
        );
    }

    /// A pool shared by two scopes looks at the neighbours of both,
    /// whichever reached it first: caches of 16 and 4 CPUs, the first
    /// split in two shards, the second one shard (its pool is both its
    /// `cache` pod and its `cache_shard` pod). Created through `cache`, it
    /// looked only in the `cache` table (the big cache's pool, never made
    /// here), and never at the shard pools beside it; through
    /// `cache_shard`, at both.
    #[test]
    fn a_pool_shared_by_two_scopes_looks_at_the_neighbours_of_both() {
        for first in [Scope::Cache, Scope::CacheShard] {
            let topology = Topology::synthetic("l3:2 core:16 pu:1")
                .unwrap()
                .restrict(&(0..20).collect::<Vec<_>>())
                .unwrap();
            let rt = Runtime::builder()
                .topology(topology)
                .max_workers_per_pool(1)
                .build()
                .unwrap();
            let run = |cpu, scope| {
                rt.block_on(rt.handle().spawn_on_cpu(cpu, scope, async {}))
                    .unwrap()
            };
            run(16, first);
            run(0, Scope::CacheShard);
            run(8, Scope::CacheShard);
            let scheduler = &rt.handle().scheduler;
            let attrs = scheduler.default_attrs();
            let small = scheduler.pool(attrs, Scope::Cache, 1).clone();
            assert!(Arc::ptr_eq(
                &small,
                scheduler.pool(attrs, Scope::CacheShard, 2)
            ));
            let mut looked = Vec::new();
            assert!(
                crate::pool::Host::steal_remote(&**scheduler, &small, &mut |p| {
                    looked.push(p.cpus[0]);
                    None
                })
                .is_none()
            );
            looked.sort_unstable();
            assert_eq!(looked, [0, 8], "created through {first:?}");
        }
    }

    /// The pools `steal_remote` offers a search from the pool of CPU
    /// `from`'s pod in `scope`, by their first CPUs, in order.
    fn looked_at(rt: &Runtime, scope: Scope, from: usize) -> Vec<usize> {
        let scheduler = &rt.handle().scheduler;
        let attrs = scheduler.default_attrs();
        let pod = scheduler.topology.pod_index_of(scope, from).unwrap();
        let pool = scheduler.pool(attrs, scope, pod).clone();
        let mut looked = Vec::new();
        let found = crate::pool::Host::steal_remote(&**scheduler, &pool, &mut |p| {
            looked.push(p.cpus[0]);
            None
        });
        assert!(found.is_none());
        looked
    }

    /// Scopes that split the machine alike (caches of 4 CPUs: each its
    /// own shard) hold the same pools: a search looks at each once (it
    /// looked twice, once per scope, after pools kept every scope they
    /// serve).
    #[test]
    fn scopes_that_split_the_machine_alike_are_searched_once() {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:1 l3:4 core:4 pu:1").unwrap())
            .build()
            .unwrap();
        for cpu in [0, 4, 8, 12] {
            rt.block_on(rt.handle().spawn_on_cpu(cpu, Scope::CacheShard, async {}))
                .unwrap();
        }
        assert_eq!(looked_at(&rt, Scope::Cache, 0), [4, 8, 12]);
    }

    /// A pool that is a `cache` pod and a `cache_shard` pod looks at the
    /// pools of its own NUMA node before those of the other node, whichever
    /// scope they are pods of: two nodes, each of two caches of 16 CPUs
    /// (two shards each) but node 0's second, cut to 4 CPUs (one shard).
    /// Walked scope by scope, the other node's shards came before the
    /// node's own cache.
    #[test]
    fn a_pool_of_two_scopes_looks_nearest_first() {
        let topology = Topology::synthetic("pack:1 numa:2 l3:2 core:16 pu:1")
            .unwrap()
            .restrict(&(0..20).chain(32..64).collect::<Vec<_>>())
            .unwrap();
        let rt = Runtime::builder().topology(topology).build().unwrap();
        let run = |cpu, scope| {
            rt.block_on(rt.handle().spawn_on_cpu(cpu, scope, async {}))
                .unwrap()
        };
        run(16, Scope::Cache);
        run(32, Scope::CacheShard);
        run(40, Scope::CacheShard);
        run(0, Scope::Cache);
        assert_eq!(looked_at(&rt, Scope::Cache, 16), [0, 32, 40]);
        assert_eq!(looked_at(&rt, Scope::CacheShard, 16), [0, 32, 40]);
    }

    /// The same across packages: the pool's own package before the other,
    /// with NUMA nodes (a node of the same package before another's) and
    /// without (one node over both packages: the package alone tells them
    /// apart). Merged by scope alone, the other package's shards came
    /// first.
    #[test]
    fn a_pool_of_two_scopes_looks_in_its_package_first() {
        // On `desc` cut to `cpus`, with pools made at each of `made`: the
        // pools CPU 16's `cache` pool (also a `cache_shard` pod) looks at.
        let looked = |desc: &str, cpus: Vec<usize>, made: &[(usize, Scope)]| {
            let topology = Topology::synthetic(desc).unwrap().restrict(&cpus).unwrap();
            let rt = Runtime::builder().topology(topology).build().unwrap();
            for &(cpu, scope) in made {
                rt.block_on(rt.handle().spawn_on_cpu(cpu, scope, async {}))
                    .unwrap();
            }
            looked_at(&rt, Scope::Cache, 16)
        };
        let no_nodes = looked(
            "pack:2 l3:2 core:16 pu:1",
            (0..20).chain(32..64).collect(),
            &[
                (16, Scope::Cache),
                (32, Scope::CacheShard),
                (0, Scope::Cache),
            ],
        );
        assert_eq!(no_nodes, [0, 32]);
        let nodes = looked(
            "pack:2 numa:2 l3:2 core:16 pu:1",
            (0..20).chain(32..128).collect(),
            &[
                (16, Scope::Cache),
                (64, Scope::CacheShard),
                (32, Scope::Cache),
            ],
        );
        assert_eq!(nodes, [32, 64]);
    }

    /// A named queue's item released, in the shutdown's window (the
    /// runtime closed, the queues not yet), onto a pool created then --
    /// closed and buried at once -- is pushed on that pool's injector,
    /// which no drain of the shutdown looks at again; the push's kick,
    /// answered `Closed`, drains it (`pool::closing`). Stranded, its handle
    /// would never resolve and its queue's flush never return (a review's
    /// doubt). The item waited on an ordered queue behind one that ends in
    /// the window: a spawn in the window itself is refused (below).
    #[test]
    fn an_item_placed_on_a_pool_created_during_the_shutdown_is_dropped() {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("core:2 pu:1").unwrap())
            .default_scope(Scope::Cpu)
            .build()
            .unwrap();
        let q = Workqueue::builder("window")
            .scope(Scope::Cpu)
            .ordered()
            .build(rt.handle())
            .unwrap();
        // CPU 0's pool runs the first item; CPU 1's does not exist yet.
        let (go, wait) = futures::channel::oneshot::channel::<()>();
        let (started, on) = std::sync::mpsc::channel();
        let first = q.spawn_on_cpu(0, async move {
            started.send(()).unwrap();
            let _ = wait.await;
        });
        on.recv().unwrap();
        let h = q.spawn_on_cpu(1, async {});
        let scheduler = rt.handle().scheduler.clone();
        scheduler.closed.store(true, Ordering::SeqCst);
        // The first item ends and releases the second onto CPU 1's pool,
        // created now.
        go.send(()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(futures::executor::block_on(h).map_err(|e| e.is_cancelled()));
        });
        let got = rx.recv_timeout(Duration::from_secs(10));
        // The runtime's own shutdown from here on.
        scheduler.closed.store(false, Ordering::SeqCst);
        assert_eq!(
            got.expect("the item's handle never resolved: stranded on a buried pool"),
            Err(true)
        );
        drop(first);
        drop(q);
        drop(rt);
    }

    /// A named spawn in the shutdown's window (the runtime closed, its
    /// pools closing, the queues not yet closed) is refused, as
    /// `wq::spawn`'s is: before, it was handed to a closed pool and
    /// cancelled, and `try_spawn` said nothing of the shutdown.
    #[test]
    fn a_named_spawn_in_the_shutdown_window_is_refused() {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("core:2 pu:1").unwrap())
            .build()
            .unwrap();
        let q = Workqueue::builder("window").build(rt.handle()).unwrap();
        let scheduler = rt.handle().scheduler.clone();
        scheduler.closed.store(true, Ordering::SeqCst);
        let err = q.try_spawn(async {}).map(drop).unwrap_err();
        let h = q.spawn(async {});
        let joined = futures::executor::block_on(h);
        scheduler.closed.store(false, Ordering::SeqCst);
        assert!(err.is_shut_down(), "{err}");
        let e = joined.unwrap_err();
        assert!(e.is_refused(), "{e}");
        drop(q);
        drop(rt);
    }
}
