//! `Builder`, its configuration and `BuildError`.

use std::fmt;
use std::time::Duration;

use super::Runtime;
use crate::{Scope, Topology, TopologyError, WakeMode};

/// The runtime's settings, fixed at build time.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) default_scope: Scope,
    pub(crate) wake_mode: WakeMode,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_workers_per_pool: Option<usize>,
    pub(crate) thread_name: String,
    pub(crate) spin: Duration,
    pub(crate) affinity_strict: bool,
    pub(crate) thread_stack_size: Option<usize>,
    pub(crate) max_blocking_threads: usize,
    pub(crate) blocking_keep_alive: Duration,
}

/// Default time a worker spins looking for work before it parks. See
/// `docs/benchmarks.md` for what it buys and costs.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

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
    /// deferred wakeups, a 300 s idle timeout, one worker per pod CPU.
    pub fn new() -> Builder {
        Builder {
            topology: None,
            config: Config {
                default_scope: Scope::CacheShard,
                wake_mode: WakeMode::Deferred,
                idle_timeout: Duration::from_secs(300),
                max_workers_per_pool: None,
                thread_name: "wq".to_owned(),
                spin: DEFAULT_SPIN,
                affinity_strict: false,
                thread_stack_size: None,
                max_blocking_threads: crate::blocking::DEFAULT_MAX_THREADS,
                blocking_keep_alive: crate::blocking::DEFAULT_KEEP_ALIVE,
            },
        }
    }

    /// The machine to schedule for. Default: [`Topology::detect`]. A
    /// synthetic or XML topology lays out pods as on that machine but binds
    /// no thread (threads get virtual CPUs, see [`Runtime::spawn_on`]).
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
    /// (the kernel's `IDLE_WORKER_TIMEOUT`).
    pub fn idle_timeout(mut self, timeout: Duration) -> Builder {
        self.config.idle_timeout = timeout;
        self
    }

    /// The most workers one pool may have. Default: its pod's CPU count.
    pub fn max_workers_per_pool(mut self, n: usize) -> Builder {
        self.config.max_workers_per_pool = Some(n);
        self
    }

    /// Worker threads are named `<name>-<pool>.<slot>`. Default `wq`.
    pub fn thread_name(mut self, name: impl Into<String>) -> Builder {
        self.config.thread_name = name.into();
        self
    }

    /// How long an idle worker spins before parking. Default
    /// [`DEFAULT_SPIN`]; zero parks at once.
    pub fn worker_spin(mut self, spin: Duration) -> Builder {
        self.config.spin = spin;
        self
    }

    /// Strict pools never run tasks of other pods; non-strict ones (the
    /// default, as the kernel's `affinity_strict = 0`) let a worker with
    /// nothing to do take work queued on the nearest other pod.
    pub fn affinity_strict(mut self, strict: bool) -> Builder {
        self.config.affinity_strict = strict;
        self
    }

    /// The stack size of the runtime's threads (workers and the rescuer),
    /// in bytes. Default: the standard library's (2 MiB, or
    /// `RUST_MIN_STACK`). Tasks are polled on these stacks: give more when
    /// a task's synchronous code recurses deeply. Sizes below the
    /// platform's minimum are rounded up to it.
    pub fn thread_stack_size(mut self, bytes: usize) -> Builder {
        self.config.thread_stack_size = Some(bytes);
        self
    }

    /// The most threads of the blocking pool ([`crate::spawn_blocking`]).
    /// Default 512. Jobs beyond it wait, first in first out.
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
    /// exits. Default 10 s.
    pub fn blocking_keep_alive(mut self, keep_alive: Duration) -> Builder {
        self.config.blocking_keep_alive = keep_alive;
        self
    }

    /// Builds the runtime. One thread starts now, the rescuer (it runs a
    /// pool's work if the OS refuses to start its workers, see
    /// `docs/architecture.md`); worker threads start when work arrives, the
    /// I/O driver thread (`<thread_name>-io`) on the first use of a socket
    /// or timer, and blocking-pool threads on the first `spawn_blocking`.
    pub fn build(self) -> Result<Runtime, BuildError> {
        let c = &self.config;
        if c.max_workers_per_pool == Some(0) {
            return Err(BuildError::new(
                "max_workers_per_pool is 0: a pool needs at least one worker; pass 1 or more, or leave it unset for one per pod CPU",
            ));
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
        if c.max_blocking_threads == 0 {
            return Err(BuildError::new(
                "max_blocking_threads is 0: spawn_blocking jobs would never run; pass 1 or more (the default is 512)",
            ));
        }
        if c.blocking_keep_alive.is_zero() {
            return Err(BuildError::new(
                "blocking_keep_alive is zero: blocking threads would exit between jobs; give at least 1 ms (the default is 10 s)",
            ));
        }
        if c.idle_timeout.is_zero() {
            return Err(BuildError::new(
                "idle_timeout is zero: workers would be culled as soon as they idle; give at least 1 ms",
            ));
        }
        let topology = match self.topology {
            Some(t) => t,
            None => Topology::detect().map_err(BuildError::topology)?,
        };
        crate::clock::calibrate();
        let runtime = Runtime::from_parts(topology, self.config);
        runtime.handle.shared.start_rescuer().map_err(|err| {
            let stack = match runtime.handle.shared.config.thread_stack_size {
                Some(n) => format!(", or cannot map thread stacks of {n} bytes (Builder::thread_stack_size)"),
                None => String::new(),
            };
            BuildError::new(format!(
                "could not start the runtime's rescuer thread: {err}; the process may be at its thread limit (`ulimit -u`) or out of memory{stack}"
            ))
        })?;
        Ok(runtime)
    }
}

/// Why a [`Runtime`] could not be built.
#[derive(Debug)]
pub struct BuildError {
    message: String,
    source: Option<TopologyError>,
}

impl BuildError {
    fn new(message: impl Into<String>) -> BuildError {
        BuildError {
            message: message.into(),
            source: None,
        }
    }

    fn topology(err: TopologyError) -> BuildError {
        BuildError {
            message: format!(
                "could not read this machine's topology: {err}; pass one with Builder::topology (e.g. Topology::detect_sysfs())"
            ),
            source: Some(err),
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
        self.source.as_ref().map(|e| e as _)
    }
}
