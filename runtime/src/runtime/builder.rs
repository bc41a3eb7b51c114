//! `Builder`, its configuration and `BuildError`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::Runtime;
use crate::scheduler::Config;
use crate::{Scope, Topology, TopologyError, WakeMode};

/// The default of [`Builder::cpu_hog_threshold`]: the kernel's
/// `wq_cpu_intensive_thresh_us` (10 ms).
pub const DEFAULT_CPU_HOG_THRESHOLD: Duration = Duration::from_millis(10);

/// The default of [`Builder::worker_spin`]: the longest a searching worker
/// spins before it parks. See `docs/benchmarks.md` for what it buys and
/// costs.
pub const DEFAULT_WORKER_SPIN: Duration = Duration::from_micros(20);

/// The smallest `thread_stack_size` accepted.
const MIN_STACK: usize = 64 * 1024;
/// The largest `thread_stack_size` accepted: each thread maps this much,
/// and a pool of 64 workers at 4 GiB each is a unit slip, not a plan.
const MAX_STACK: usize = 1 << 30;
/// The longest `worker_spin` accepted.
const MAX_WORKER_SPIN: Duration = Duration::from_millis(100);
/// The shortest nonzero `cpu_hog_threshold` accepted.
const MIN_CPU_HOG_THRESHOLD: Duration = Duration::from_micros(100);

/// Builds a [`Runtime`] with custom settings.
///
/// ```
/// use std::time::Duration;
/// use wq::{Runtime, Scope, Topology, WakeMode};
///
/// let rt = Runtime::builder()
///     .topology(Topology::synthetic("pack:2 l3:2 core:4 pu:2").unwrap())
///     .default_scope(Scope::Cache)
///     .wake_mode(WakeMode::Deferred)
///     .idle_timeout(Duration::from_secs(10))
///     .max_workers_per_pool(4)
///     .thread_name("app")
///     .build()
///     .unwrap();
/// assert_eq!(rt.topology().pods(Scope::Cache).len(), 4);
/// assert_eq!(rt.block_on(async { wq::spawn(async { 1 }).await.unwrap() }), 1);
/// ```
#[derive(Debug)]
#[must_use = "a Builder does nothing until .build() is called"]
pub struct Builder {
    topology: Option<Topology>,
    config: Config,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Settings as the kernel's unbound workqueues: `cache_shard` scope,
    /// deferred wakeups, a 300 s idle timeout, one worker per pod CPU (at
    /// most as many as the CPUs the process may use:
    /// [`max_workers_per_pool`](Builder::max_workers_per_pool)).
    pub fn new() -> Builder {
        Builder {
            topology: None,
            config: Config {
                default_scope: Scope::CacheShard,
                wake_mode: WakeMode::Deferred,
                idle_timeout: Duration::from_secs(300),
                max_workers_per_pool: None,
                // Read by `build`.
                cpu_budget: usize::MAX,
                thread_name: "wq".to_owned(),
                worker_spin: DEFAULT_WORKER_SPIN,
                spinning_workers: None,
                spin_watches_deques: None,
                affinity_strict: false,
                thread_stack_size: None,
                cpu_hog_threshold: DEFAULT_CPU_HOG_THRESHOLD,
                max_blocking_threads: crate::scheduler::blocking::DEFAULT_MAX_THREADS,
                blocking_keep_alive: crate::scheduler::blocking::DEFAULT_KEEP_ALIVE,
                latency_capture: false,
                on_thread_start: None,
                on_thread_stop: None,
            },
        }
    }

    /// The machine to schedule for. Default: [`Topology::detect`]. A
    /// synthetic or XML topology lays out pods as on that machine but binds
    /// no thread to a pod: the runtime's threads run on the CPUs the
    /// process's main thread had when the runtime was built (not those of
    /// the thread that built it or started them), and each stands for a
    /// CPU of the made-up machine when it places a spawn (see
    /// [`Runtime::spawn_on`]).
    pub fn topology(mut self, topology: Topology) -> Builder {
        self.topology = Some(topology);
        self
    }

    /// The scope of [`Runtime::spawn`] and [`crate::spawn`]. Default
    /// [`Scope::CacheShard`], as the kernel's.
    pub fn default_scope(mut self, scope: Scope) -> Builder {
        self.config.default_scope = scope;
        self
    }

    /// When kicked workers are unparked. Default [`WakeMode::Deferred`].
    pub fn wake_mode(mut self, mode: WakeMode) -> Builder {
        self.config.wake_mode = mode;
        self
    }

    /// How long a worker stays idle before it may be culled. Default 300 s
    /// (the kernel's `IDLE_WORKER_TIMEOUT`). Under a millisecond is
    /// refused by [`build`](Builder::build) (workers would be culled as
    /// they park).
    ///
    /// ```
    /// use std::time::Duration;
    /// let err = wq::Runtime::builder().idle_timeout(Duration::ZERO).build().unwrap_err();
    /// assert!(err.to_string().contains("idle_timeout"), "{err}");
    /// ```
    pub fn idle_timeout(mut self, timeout: Duration) -> Builder {
        self.config.idle_timeout = timeout;
        self
    }

    /// The most workers one pool may have. Default: its pod's CPU count,
    /// capped at the CPUs this process may use at once, as
    /// [`std::thread::available_parallelism`] reads them when the runtime
    /// is built (its affinity mask and, on Linux, its cgroup's CPU quota:
    /// `cpu.max`, or `cpu.cfs_quota_us` / `cpu.cfs_period_us`). So a
    /// container limited to 4 CPUs on a 64-CPU machine gets `system` pools
    /// of at most 4 workers, not 64 threads contending for 4 CPUs' worth
    /// of time; and a [`Topology::synthetic`] layout larger than the
    /// machine gets no more workers per pool than the machine has CPUs.
    /// A number given here is used as it is. Each pool reserves twice
    /// this many worker slots (a worker blocked in `block_in_place` is
    /// replaced) when it is created: 384 bytes each and a work-stealing
    /// deque (a 512-byte buffer and its shared state), over 1 KiB in all
    /// before a worker uses one, so 32,767, the most, is about 80 MiB per
    /// pool in use.
    pub fn max_workers_per_pool(mut self, n: usize) -> Builder {
        self.config.max_workers_per_pool = Some(n);
        self
    }

    /// Worker threads are named `<name>-<pool>.<slot>` (the others
    /// `<name>-rescuer`, `<name>-blocking`, and a dashboard's
    /// `<name>-dashboard`). Default `wq`. Linux keeps 15
    /// bytes of a thread's name (`top`, `ps`, `/proc/*/comm`): a name of
    /// more than about 8 bytes hides the suffixes there, and the threads
    /// look alike.
    pub fn thread_name(mut self, name: impl Into<String>) -> Builder {
        self.config.thread_name = name.into();
        self
    }

    /// The longest a worker that ran out of work spins, watching its pool's
    /// queues, before it parks. Default [`DEFAULT_WORKER_SPIN`]; zero parks
    /// at once; at most 100 ms ([`build`](Builder::build) refuses more).
    /// At most half a pool's workers (rounded up, at least two) spin at once, fewer
    /// with [`spinning_workers`](Builder::spinning_workers), and each adapts
    /// its spin below this bound: longer while spins find work, shorter
    /// while they do not, and a spin ends at once when a yield shows that
    /// another thread holds the CPU (see `docs/architecture.md`,
    /// "Spinning").
    pub fn worker_spin(mut self, spin: Duration) -> Builder {
        self.config.worker_spin = spin;
        self
    }

    /// The most workers of one pool that spin at once (at least 1; the
    /// others that run out of work look once and park). Default: as many as
    /// may search, half the pool's workers rounded up and at least two. Zero is refused: give
    /// [`worker_spin`](Builder::worker_spin) `Duration::ZERO` to park at
    /// once.
    pub fn spinning_workers(mut self, n: usize) -> Builder {
        self.config.spinning_workers = Some(n);
        self
    }

    /// Whether spinning workers watch the other workers' deques too (and
    /// a driver turn queues the tasks it wakes on its worker's deque), or
    /// only the pool's injector. Default: the deques too in pools of at
    /// most four workers, the injector only in wider ones (see
    /// `docs/architecture.md`, "Spinning"). For A/B runs (`wq-bench
    /// --spin-watch`), not a setting for services.
    #[doc(hidden)]
    pub fn spin_watches_deques(mut self, watch: bool) -> Builder {
        self.config.spin_watches_deques = Some(watch);
        self
    }

    /// Strict pools never run tasks of other pods; non-strict ones (the
    /// default, as the kernel's `affinity_strict = 0`) let a worker with
    /// nothing to do take work queued on the nearest other pod, and bind
    /// a `cache_shard` pool's workers to every CPU of the shard's cache
    /// (its items still queue in the submitter's shard's pool).
    pub fn affinity_strict(mut self, strict: bool) -> Builder {
        self.config.affinity_strict = strict;
        self
    }

    /// The stack size of the runtime's threads (workers, the rescuer and
    /// the blocking pool's threads), in bytes. Default: the standard
    /// library's (2 MiB, or `RUST_MIN_STACK`). Tasks are polled on these
    /// stacks, and `spawn_blocking` closures run on them (a C library or a
    /// DNS lookup may need more than a small stack): give more when
    /// either's synchronous code recurses deeply. At least 64 KiB
    /// ([`build`](Builder::build) refuses less: a stack overflow aborts
    /// the process), at most 1 GiB (more is refused as a unit slip: every
    /// thread maps it, and where memory is not overcommitted later worker
    /// starts fail).
    pub fn thread_stack_size(mut self, bytes: usize) -> Builder {
        self.config.thread_stack_size = Some(bytes);
        self
    }

    /// A closure every thread of the runtime that runs tasks or blocking
    /// jobs (the workers, the rescuer, the blocking pool's threads) calls
    /// as it starts, before its first task or job, with the runtime
    /// current: to register the thread with a profiler or a tracer, set a
    /// thread-local, name it for an allocator's arenas. Workers start on
    /// demand and are culled after [`idle_timeout`](Builder::idle_timeout),
    /// blocking threads after
    /// [`blocking_keep_alive`](Builder::blocking_keep_alive): over a
    /// runtime's life a pool's threads come and go, each calling it once.
    /// Keep it short, and never wait in it on the runtime's own tasks: a
    /// worker runs it before it takes the work it was started for (which
    /// may be the task waited on). A hook that panics is reported on
    /// stderr and the thread goes on.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    ///
    /// let started = Arc::new(AtomicUsize::new(0));
    /// let counter = started.clone();
    /// let rt = wq::Runtime::builder()
    ///     .on_thread_start(move || {
    ///         counter.fetch_add(1, Ordering::SeqCst);
    ///     })
    ///     .build()
    ///     .unwrap();
    /// rt.block_on(rt.spawn(async {})).unwrap();
    /// assert!(started.load(Ordering::SeqCst) >= 1);
    /// ```
    pub fn on_thread_start<F>(mut self, f: F) -> Builder
    where
        F: Fn() + Send + Sync + 'static,
    {
        self.config.on_thread_start = Some(crate::scheduler::ThreadHook(Arc::new(f)));
        self
    }

    /// A closure each of the threads
    /// [`on_thread_start`](Builder::on_thread_start) names calls as it
    /// stops (culled, or at the shutdown, which waits for it as for the
    /// thread), after its last task or job, the runtime still current (a
    /// blocking thread has left its pool by then: its count in the
    /// metrics). A hook that panics is reported on stderr.
    pub fn on_thread_stop<F>(mut self, f: F) -> Builder
    where
        F: Fn() + Send + Sync + 'static,
    {
        self.config.on_thread_stop = Some(crate::scheduler::ThreadHook(Arc::new(f)));
        self
    }

    /// A poll that runs longer than this without returning is a **CPU
    /// hog** (the kernel's CPU-intensive detection): the runtime's watchdog
    /// lets its pool start one worker beyond its maximum while it runs, so
    /// the pool's other work is not held behind it, and reports the task
    /// through the [`log`](https://docs.rs/log) facade once per finding
    /// (blocked, CPU hog). A poll found using its CPU is counted
    /// (`cpu_intensive` in the metrics), and the task's later polls no
    /// longer count against the pool (as in
    /// [`block_in_place`](crate::block_in_place)); a poll found blocked in
    /// a synchronous call is not, its extra worker is a `cm_wakeup` when
    /// work was waiting for it, and its task's later polls count as
    /// before. Default
    /// [`DEFAULT_CPU_HOG_THRESHOLD`] (10 ms); zero turns detection off,
    /// and with it the rescue of the tasks left in the LIFO slot and deque
    /// of a worker whose poll runs that long (a hog, or one blocked outside
    /// [`block_in_place`](crate::block_in_place)), and of a blocked
    /// worker's deque.
    ///
    /// The watchdog runs on the runtime's rescuer thread: every half
    /// threshold (at most every millisecond, at least every 100 ms) while
    /// a worker runs a task, less often (down to every 100 ms) while none
    /// does, and marks a poll
    /// it has seen running over the threshold at two looks, so a hog that
    /// starts on an idle runtime is found within 100 ms plus the threshold
    /// plus a look (a threshold of 100 us is found after 1-2 ms). A nonzero threshold under
    /// 100 us is refused by [`build`](Builder::build): every poll would be a
    /// hog.
    pub fn cpu_hog_threshold(mut self, threshold: Duration) -> Builder {
        self.config.cpu_hog_threshold = threshold;
        self
    }

    /// The most threads of the blocking pool ([`crate::spawn_blocking`]).
    /// Default 512. Jobs beyond it wait, first in first out: a job that
    /// waits for another blocking job (a `block_on` of its handle) can
    /// deadlock once every thread holds such a job, the one each waits for
    /// queued behind them (as in tokio). Keep such waits off the blocking
    /// pool, or the limit above the most that can happen at once. Zero is
    /// refused by [`build`](Builder::build).
    ///
    /// ```
    /// let rt = wq::Runtime::builder().max_blocking_threads(2).build().unwrap();
    /// let jobs: Vec<_> = (0..4).map(|i| rt.spawn_blocking(move || i)).collect();
    /// let sum: i32 = jobs.into_iter().map(|j| rt.block_on(j).unwrap()).sum();
    /// assert_eq!(sum, 6);
    /// ```
    pub fn max_blocking_threads(mut self, n: usize) -> Builder {
        self.config.max_blocking_threads = n;
        self
    }

    /// How long a blocking-pool thread waits idle for a job before it
    /// exits. Default 10 s; under a millisecond is refused by
    /// [`build`](Builder::build).
    pub fn blocking_keep_alive(mut self, keep_alive: Duration) -> Builder {
        self.config.blocking_keep_alive = keep_alive;
        self
    }

    /// Whether to record every task's poll duration and every spawn
    /// call's time into the pools' histograms
    /// ([`Runtime::metrics`]: [`Latency`](crate::metrics::Latency); the
    /// dashboard's poll and spawn charts). Default **off**: on a shape
    /// that is nothing but polls (200 tasks yielding 1,000 times each) it
    /// cost 10% on a 2-vCPU VM at the build `docs/benchmarks.md` section
    /// 4 reports (20-28% in other runs that day, 7-8% on another; one
    /// poll-duration sample, about 45 instructions a poll; over the 5% a
    /// default may cost): off until a wide machine agrees. On a service whose
    /// tasks do real work per poll it is lost in the noise. Off, spawns make
    /// no second clock read for their call's time and workers keep no poll
    /// sample.
    ///
    /// Every task's **scheduling delay** (queued to polled) is recorded
    /// either way, as are the counters and worker states: each enqueue
    /// reads the clock once (its stamp), the worker reads it at each poll's
    /// start anyway, and records the delay into its own slot's histogram,
    /// which a snapshot reads at once.
    ///
    /// ```
    /// let rt = wq::Runtime::builder().latency_capture(true).build().unwrap();
    /// rt.block_on(rt.spawn(async {})).unwrap();
    /// let m = rt.metrics();
    /// assert!(m.latency_capture);
    /// let off = wq::Runtime::new().unwrap();
    /// off.block_on(off.spawn(async {})).unwrap();
    /// assert!(off.metrics().pools.iter().all(|p| p.poll_time.count == 0));
    /// ```
    pub fn latency_capture(mut self, on: bool) -> Builder {
        self.config.latency_capture = on;
        self
    }

    /// Builds the runtime. One thread starts now, the rescuer (it runs a
    /// pool's work if the OS refuses to start its workers, see
    /// `docs/architecture.md`); worker threads start when work arrives
    /// (one on the first use of a socket or timer, to park in the I/O
    /// driver), and blocking-pool threads on the first `spawn_blocking`.
    pub fn build(self) -> Result<Runtime, BuildError> {
        let c = &self.config;
        if c.max_workers_per_pool == Some(0) {
            return Err(BuildError::new(
                "max_workers_per_pool is 0: a pool needs at least one worker; pass 1 or more, or leave it unset for one per pod CPU (at most the CPUs the process may use)",
            ));
        }
        if let Some(n) = c.max_workers_per_pool
            && n > crate::pool::MAX_WORKERS
        {
            return Err(BuildError::new(format!(
                "max_workers_per_pool is {n}: a pool holds at most {} workers; pass a smaller number",
                crate::pool::MAX_WORKERS
            )));
        }
        if c.thread_name.is_empty() || c.thread_name.contains('\0') {
            return Err(BuildError::new(format!(
                "thread_name {:?} is not usable: give a non-empty name without NUL bytes",
                c.thread_name
            )));
        }
        if c.thread_stack_size == Some(0) {
            return Err(BuildError::new(
                "thread_stack_size is zero: give the stack size in bytes (e.g. 4 << 20), or leave it unset for the default",
            ));
        }
        if let Some(n) = c.thread_stack_size
            && n > MAX_STACK
        {
            return Err(BuildError::new(format!(
                "thread_stack_size is {n} bytes ({} MiB): every worker, blocking and rescuer thread maps that much; give at most {MAX_STACK} (1 GiB) -- the size is in bytes (e.g. 8 << 20 for 8 MiB)",
                n >> 20
            )));
        }
        if let Some(n) = c.thread_stack_size
            && n < MIN_STACK
        {
            return Err(BuildError::new(format!(
                "thread_stack_size is {n} bytes: a worker's own frames (the poll loop, the driver's turn, hyper's parser in a task) need more, and a stack overflow aborts the process; give at least {MIN_STACK} (64 KiB), or leave it unset for the default"
            )));
        }
        if c.worker_spin > MAX_WORKER_SPIN {
            return Err(BuildError::new(format!(
                "worker_spin is {:?}: an idle worker would burn its CPU that long before parking; give at most {MAX_WORKER_SPIN:?} (the default is {:?}; Duration::ZERO parks at once)",
                c.worker_spin,
                crate::DEFAULT_WORKER_SPIN
            )));
        }
        if c.spinning_workers == Some(0) {
            return Err(BuildError::new(
                "spinning_workers is 0: give at least 1, or worker_spin(Duration::ZERO) for workers that park at once without spinning",
            ));
        }
        if !c.cpu_hog_threshold.is_zero() && c.cpu_hog_threshold < MIN_CPU_HOG_THRESHOLD {
            return Err(BuildError::new(format!(
                "cpu_hog_threshold is {:?}: every ordinary poll would count as a CPU hog (an extra worker started and a warning logged for each); give at least {MIN_CPU_HOG_THRESHOLD:?} (the default is {:?}; Duration::ZERO turns detection off)",
                c.cpu_hog_threshold,
                crate::DEFAULT_CPU_HOG_THRESHOLD
            )));
        }
        if c.max_blocking_threads == 0 {
            return Err(BuildError::new(
                "max_blocking_threads is 0: spawn_blocking jobs would never run; pass 1 or more (the default is 512)",
            ));
        }
        if c.blocking_keep_alive < Duration::from_millis(1) {
            return Err(BuildError::new(format!(
                "blocking_keep_alive is {:?}: blocking threads would exit between jobs; give at least 1 ms (the default is 10 s)",
                c.blocking_keep_alive
            )));
        }
        if c.idle_timeout < Duration::from_millis(1) {
            return Err(BuildError::new(format!(
                "idle_timeout is {:?}: workers would be culled as soon as they idle; give at least 1 ms (the default is 300 s)",
                c.idle_timeout
            )));
        }
        let topology = match self.topology {
            Some(t) => t,
            None => Topology::detect().map_err(BuildError::topology)?,
        };
        crate::clock::calibrate();
        let mut config = self.config;
        config.cpu_budget = crate::topology::cpu_budget();
        let runtime = Runtime::from_parts(topology, config);
        runtime.handle.scheduler.start_rescuer().map_err(|err| {
            let stack = match runtime.handle.scheduler.config.thread_stack_size {
                Some(n) => format!(", or cannot map thread stacks of {n} bytes (Builder::thread_stack_size)"),
                None => String::new(),
            };
            BuildError::io(
                format!(
                    "could not start the runtime's rescuer thread: {err}; the process may be at its thread limit (`ulimit -u`) or out of memory{stack}"
                ),
                err,
            )
        })?;
        Ok(runtime)
    }
}

/// Why a [`Runtime`] could not be built. Its
/// [`source`](std::error::Error::source) is the error beneath, where there
/// is one: the [`TopologyError`] of a topology that could not be read, or
/// the [`std::io::Error`] of a thread the OS would not start.
#[derive(Debug)]
pub struct BuildError {
    message: String,
    source: Option<Source>,
}

#[derive(Debug)]
enum Source {
    Topology(TopologyError),
    Io(std::io::Error),
}

impl BuildError {
    fn new(message: impl Into<String>) -> BuildError {
        BuildError {
            message: message.into(),
            source: None,
        }
    }

    fn topology(err: TopologyError) -> BuildError {
        // `detect_sysfs` is another reader only where `detect` is hwloc's,
        // and no reader helps with no CPU allowed (an empty affinity).
        let other_reader = cfg!(feature = "hwloc")
            && err.kind() != crate::topology::TopologyErrorKind::EmptyCpuSet;
        let hint = if other_reader {
            "pass one with Builder::topology (e.g. Topology::detect_sysfs(), which reads /sys without hwloc)"
        } else {
            "pass one with Builder::topology (Topology::synthetic or Topology::from_cpus, describing the CPUs to use)"
        };
        BuildError {
            message: format!("could not read this machine's topology: {err}; {hint}"),
            source: Some(Source::Topology(err)),
        }
    }

    fn io(message: String, err: std::io::Error) -> BuildError {
        BuildError {
            message,
            source: Some(Source::Io(err)),
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.source.as_ref()? {
            Source::Topology(e) => Some(e),
            Source::Io(e) => Some(e),
        }
    }
}

/// For `Runtime::new()?` in a function returning `io::Result` (tokio's
/// `build` returns one): an error of the kind of the OS error beneath
/// (a thread the OS would not start), else `Other`, holding the
/// `BuildError`.
impl From<BuildError> for std::io::Error {
    fn from(e: BuildError) -> std::io::Error {
        let kind = match &e.source {
            Some(Source::Io(io)) => io.kind(),
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}
