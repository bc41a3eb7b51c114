//! The public API: `Runtime`, `Handle`, `Builder`, and the free functions.
//! A thin layer over the scheduler (`crate::scheduler`).

pub(crate) mod builder;
mod join_set;
pub(crate) mod workqueue;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use builder::{BuildError, Builder, DEFAULT_CPU_HOG_THRESHOLD, DEFAULT_WORKER_SPIN};

use crate::metrics::Snapshot;
use crate::pool::current;
use crate::pool::park::{Parker, Unparker};
use crate::scheduler::context::{self, outside};
use crate::scheduler::{Config, Scheduler};
use crate::task::{self, JoinHandle};
use crate::{Scope, Topology};

/// A wq runtime: worker pools per pod of each affinity scope in use, created
/// on demand.
///
/// Dropping it shuts it down: tasks not yet finished are cancelled and their
/// futures dropped, and every worker thread is joined (while the dropping
/// thread panics, at most 10 s is waited: a panicking `#[wq::main]` or
/// `#[wq::test]` whose tasks are stuck fails instead of hanging).
///
/// The drop blocks the dropping thread until then. Dropped inside an
/// async task (allowed: tokio panics there), it holds that task's worker
/// for the whole shutdown: another runtime's tasks woken on that worker
/// wait for it, and in its own runtime a running blocking job or
/// `block_in_place` that waits for the dropping task deadlocks the drop
/// (the shutdown waits for them). Drop a runtime from a plain thread, or
/// use [`Runtime::shutdown_timeout`] there.
///
/// ```
/// use wq::{Runtime, Scope};
///
/// let rt = Runtime::new().unwrap();
/// let sum = rt.block_on(async {
///     let a = wq::spawn_on(Scope::Cache, async { 1 });
///     let b = wq::spawn_on(Scope::System, async { 2 });
///     a.await.unwrap() + b.await.unwrap()
/// });
/// assert_eq!(sum, 3);
/// ```
pub struct Runtime {
    handle: Handle,
    /// Set by `shutdown_timeout`, so dropping does not wait again.
    shut_down: bool,
}

/// A cheap, cloneable reference to a runtime, usable from any thread.
///
/// It does not keep the runtime alive: once the [`Runtime`] is dropped,
/// a spawn through a handle is refused at the call (its future dropped
/// there, its [`JoinError`](crate::JoinError) `is_refused`);
/// [`Handle::try_spawn`] gives the future back instead.
#[derive(Clone)]
pub struct Handle {
    pub(crate) scheduler: Arc<Scheduler>,
}

/// Makes a runtime current on this thread until dropped (see
/// [`Runtime::enter`]). Guards nest and must be dropped in the reverse
/// order of their creation (out of order is a panic). A guard belongs to
/// its thread: it is not `Send`, so it cannot be held across an `.await`
/// in a spawned task (where it would restore one worker's context on
/// another):
///
/// ```compile_fail
/// fn needs_send<T: Send>(_: T) {}
/// let rt = wq::Runtime::new().unwrap();
/// needs_send(rt.enter());
/// ```
#[must_use = "the runtime is current only while the guard lives"]
pub struct EnterGuard<'a> {
    /// `None` on a thread whose thread-locals are being destroyed (a
    /// guard taken in a `thread_local!`'s `Drop`): the runtime cannot be
    /// made current there, and trying aborted the process.
    _guard: Option<context::ContextGuard>,
    _runtime: std::marker::PhantomData<&'a Handle>,
}

impl Runtime {
    /// A runtime with the default settings on this machine's topology. See
    /// [`Builder::new`].
    pub fn new() -> Result<Runtime, BuildError> {
        Builder::new().build()
    }

    /// A [`Builder`] to configure one.
    pub fn builder() -> Builder {
        Builder::new()
    }

    pub(crate) fn from_parts(topology: Topology, config: Config) -> Runtime {
        Runtime {
            handle: Handle {
                scheduler: Scheduler::new(topology, config),
            },
            shut_down: false,
        }
    }

    /// Runs `future` to completion on the current thread, with this runtime
    /// current (so [`crate::spawn`] works inside).
    ///
    /// # Panics
    /// When called from a worker thread (or the rescuer) of a wq runtime,
    /// `wq::block_in_place`'s closure included: blocking a worker stalls
    /// its pool, and this thread's driver turns would be its pool's. In a
    /// task, `.await` the future; in synchronous code on a worker, use
    /// `futures::executor::block_on` inside [`crate::block_in_place`]
    /// (wq's sockets and timers work under it: the pools' drivers serve
    /// them), or move the code to [`crate::spawn_blocking`], where
    /// `block_on` is allowed. Not inside `block_in_place`, a task the
    /// blocked poll spawned or woke last waits in its worker's LIFO slot
    /// until the watchdog finds the poll (the CPU-hog threshold, 10 ms by
    /// default, plus up to 100 ms for a poll that starts after the runtime
    /// idled: [`Builder::cpu_hog_threshold`](crate::Builder::cpu_hog_threshold)),
    /// or for ever with detection off: a `block_on` that awaits it never
    /// returns.
    ///
    /// In a thread-local's destructor that runs after wq's own (a
    /// connection flushed at a thread's exit), the future runs with no
    /// runtime current: what needs one there (`wq::spawn`, timers, sockets)
    /// panics, which aborts the process inside a destructor. Do that work
    /// before the thread exits.
    ///
    /// Nested on one thread (a `block_on` inside the future of another: a
    /// synchronous library called from `#[wq::main]` that blocks on a
    /// future), it runs, the outer future suspended until it returns: an
    /// inner future that waits for something only the outer one would do
    /// waits for ever (tokio refuses any nesting with a panic; wq allows
    /// the independent kind).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }

    /// Spawns `future` at the runtime's default scope. See
    /// [`Runtime::spawn_on`].
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// Spawns `future` on the pool of the `scope` pod that holds the calling
    /// thread's CPU; that pool stays the task's home. (A worker of a
    /// non-strict `cache_shard` pool may run on another shard's CPU: its
    /// `cache_shard` spawns go to its own shard.) On a synthetic or XML
    /// topology the CPU is a made-up one: a worker's stands for a CPU of
    /// its pod, any other thread is given one in turn, once. From a CPU
    /// the topology does not know (outside a [`Topology::restrict`]ed
    /// set, or added since), a thread that is not one of the runtime's
    /// workers spawns round-robin over the pods; a worker (moved there by
    /// `taskset`, say) spawns as from the CPU of its pod it stands for, so
    /// its spawns stay in its pod.
    ///
    /// [`Topology::restrict`]: crate::Topology::restrict
    pub fn spawn_on<F>(&self, scope: Scope, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn_on(scope, future)
    }

    /// Runs the blocking closure `f` on the runtime's blocking pool. See
    /// [`crate::spawn_blocking`].
    ///
    /// ```
    /// let rt = wq::Runtime::new().unwrap();
    /// let h = rt.spawn_blocking(|| 6 * 7);
    /// assert_eq!(rt.block_on(h).unwrap(), 42);
    /// ```
    pub fn spawn_blocking<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.handle.spawn_blocking(f)
    }

    /// A handle to this runtime.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The topology the runtime schedules for.
    pub fn topology(&self) -> &Topology {
        &self.handle.scheduler.topology
    }

    /// A snapshot of every pool (its workers, counters and latencies),
    /// summed per scope, and of every named workqueue: see
    /// [`Snapshot`](crate::metrics::Snapshot). Merging the workers'
    /// histograms reads their bucket counts without a lock, and takes each
    /// spawn shard's lock in turn (never the pools' locks but for an
    /// instant): call it off the hot path, e.g. once a second.
    ///
    /// ```
    /// let rt = wq::Runtime::new().unwrap();
    /// rt.block_on(rt.spawn(async {})).unwrap();
    /// let m = rt.metrics();
    /// println!("{m}");
    /// assert_eq!(m.pools.len(), m.scopes.iter().map(|s| s.pools).sum::<usize>());
    /// ```
    pub fn metrics(&self) -> Snapshot {
        self.handle.metrics()
    }

    /// Makes this runtime current on this thread until the guard drops, so
    /// [`crate::spawn`] and [`Handle::current`] work outside `block_on`.
    /// Guards are dropped in the reverse order of their creation (one
    /// dropped out of order panics, saying so); one made inside a
    /// `block_on` future is dropped before that `block_on` returns. In a
    /// thread-local's destructor that runs after wq's own the guard does
    /// nothing (see [`Runtime::block_on`]).
    pub fn enter(&self) -> EnterGuard<'_> {
        EnterGuard {
            _guard: context::try_enter(self.handle.scheduler.clone()),
            _runtime: std::marker::PhantomData,
        }
    }

    /// Shuts down, waiting at most `timeout` in all for the worker threads
    /// to exit (a task stuck in a blocking call keeps its worker) and then
    /// for running [`spawn_blocking`](crate::spawn_blocking) jobs, their
    /// thread-locals' destructors included (they run as each thread ends;
    /// threads that have finished their work get 100 ms past the timeout
    /// for those).
    /// Returns whether every thread exited in time (but the calling thread,
    /// when it is one of this runtime's own, a task shutting its runtime
    /// down: it is not waited for, and exits once its poll returns);
    /// those that did not are left to finish on their own (detached:
    /// nothing holds them after).
    ///
    /// `Duration::ZERO` signals the threads and returns without waiting
    /// for any still at work (the workers, and then the blocking pool's
    /// threads, each group decided apart: a group whose every thread is
    /// past its work gets the 100 ms for their destructors, one with a
    /// thread still at work is not waited for), as tokio's
    /// `shutdown_background`; what it
    /// returns then says only whether every thread, the runtime's rescuer
    /// among them, happened to have exited already. The timeout bounds the waits, not the drops:
    /// the futures still queued are dropped on the calling thread first,
    /// and a `Drop` that blocks holds the call that long.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> bool {
        self.shut_down = true;
        self.handle.scheduler.shutdown(Some(timeout))
    }
}

/// How long a runtime dropped while its thread panics waits for its
/// threads (a task stuck in a loop or a blocking call would otherwise turn
/// the panic into a hang: a failing `#[wq::test]` that never ends).
const UNWIND_SHUTDOWN: Duration = Duration::from_secs(10);

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.shut_down {
            return;
        }
        if std::thread::panicking() {
            if !self.handle.scheduler.shutdown(Some(UNWIND_SHUTDOWN)) {
                // Not `eprintln!`: a closed stderr would panic during the
                // unwind, and the process would abort.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "wq: a runtime dropped during a panic waited {UNWIND_SHUTDOWN:?} for its threads; \
                     those still running (a task in a loop or a blocking call) are left to finish on their own"
                );
            }
        } else {
            self.handle.scheduler.shutdown(None);
        }
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("topology", &self.handle.scheduler.topology.source())
            .field("config", &self.handle.scheduler.config)
            .finish()
    }
}

impl Handle {
    /// The runtime current on this thread.
    ///
    /// # Panics
    /// Outside a runtime (not in a task, `block_on`, or
    /// [`Runtime::enter`]). Use [`Handle::try_current`] to check.
    pub fn current() -> Handle {
        Handle::try_current().unwrap_or_else(|| {
            if context::tls_gone() {
                context::outside("wq::Handle::current()");
            }
            panic!(
                "wq::Handle::current() called outside a wq runtime: call it from a task, inside Runtime::block_on or #[wq::main], or after Runtime::enter()"
            )
        })
    }

    /// Makes this handle's runtime current on this thread until the guard
    /// drops, as [`Runtime::enter`] (same rules): for a thread that holds
    /// a `Handle` but not the `Runtime`, before a call that needs a
    /// current runtime (`wq::spawn`, `TcpStream::from_std`,
    /// `wq::time::sleep`).
    ///
    /// ```
    /// let rt = wq::Runtime::new().unwrap();
    /// let handle = rt.handle().clone();
    /// std::thread::spawn(move || {
    ///     let _guard = handle.enter();
    ///     let task = wq::spawn(async { 7 });
    ///     assert_eq!(handle.block_on(task).unwrap(), 7);
    /// })
    /// .join()
    /// .unwrap();
    /// ```
    pub fn enter(&self) -> EnterGuard<'_> {
        EnterGuard {
            _guard: context::try_enter(self.scheduler.clone()),
            _runtime: std::marker::PhantomData,
        }
    }

    /// The runtime current on this thread, if any.
    pub fn try_current() -> Option<Handle> {
        context::with_current(|s| {
            s.map(|s| Handle {
                scheduler: s.clone(),
            })
        })
    }

    /// See [`Runtime::spawn`].
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_on(self.scheduler.config.default_scope, future)
    }

    /// See [`Runtime::spawn_on`]. On a shut-down runtime the future is
    /// dropped and the handle resolves to a refused
    /// [`JoinError`](crate::JoinError) (`is_refused`); [`Handle::try_spawn`]
    /// gives it back instead.
    pub fn spawn_on<F>(&self, scope: Scope, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        spawn_at(&self.scheduler, scope, None, future)
    }

    /// As [`Handle::spawn`], but a runtime shut down (or shutting down)
    /// gives the future back in the error
    /// ([`SpawnError::into_future`](crate::SpawnError::into_future),
    /// `is_shut_down`), to run elsewhere or drop where the caller
    /// chooses. (A spawn that races the shutdown may still be accepted,
    /// then dropped unrun with the rest: its handle says so.)
    ///
    /// ```
    /// let rt = wq::Runtime::new().unwrap();
    /// let handle = rt.handle().clone();
    /// drop(rt);
    /// let err = handle.try_spawn(async { 7 }).unwrap_err();
    /// assert!(err.is_shut_down());
    /// assert_eq!(futures::executor::block_on(err.into_future()), 7);
    /// ```
    pub fn try_spawn<F>(&self, future: F) -> Result<JoinHandle<F::Output>, workqueue::SpawnError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.try_spawn_on(self.scheduler.config.default_scope, future)
    }

    /// [`Handle::try_spawn`] at `scope` (see [`Runtime::spawn_on`]).
    pub fn try_spawn_on<F>(
        &self,
        scope: Scope,
        future: F,
    ) -> Result<JoinHandle<F::Output>, workqueue::SpawnError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        try_spawn_at(&self.scheduler, scope, None, future).map_err(workqueue::SpawnError::shut_down)
    }

    /// Spawns `future` on the pool of the `scope` pod that holds CPU `cpu`
    /// (an OS index), as if it were spawned there: the kernel's
    /// `queue_work_on()`. A CPU the topology does not know falls back to
    /// round-robin over the pods (logged once per runtime, through `log`).
    /// Useful on a synthetic topology, whose CPUs
    /// are not this machine's.
    ///
    /// ```
    /// use wq::{Runtime, Scope, Topology};
    /// let rt = Runtime::builder()
    ///     .topology(Topology::synthetic("pack:2 l3:1 core:2 pu:1").unwrap())
    ///     .build()
    ///     .unwrap();
    /// let h = rt.handle().spawn_on_cpu(3, Scope::Cache, async { 1 });
    /// assert_eq!(rt.block_on(h).unwrap(), 1);
    /// let m = rt.metrics();
    /// assert_eq!(m.pools[0].cpus, vec![2, 3]);
    /// ```
    pub fn spawn_on_cpu<F>(&self, cpu: usize, scope: Scope, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        spawn_at(&self.scheduler, scope, Some(cpu), future)
    }

    /// As [`Handle::spawn_on_cpu`], but a runtime shut down gives the
    /// future back, as [`Handle::try_spawn`].
    pub fn try_spawn_on_cpu<F>(
        &self,
        cpu: usize,
        scope: Scope,
        future: F,
    ) -> Result<JoinHandle<F::Output>, workqueue::SpawnError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        try_spawn_at(&self.scheduler, scope, Some(cpu), future)
            .map_err(workqueue::SpawnError::shut_down)
    }

    /// See [`crate::spawn_blocking`]. On a shut-down runtime `f` is
    /// dropped and the handle resolves to a refused
    /// [`JoinError`](crate::JoinError) (`is_refused`).
    pub fn spawn_blocking<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        spawn_blocking_on(&self.scheduler, f)
    }

    /// See [`Runtime::block_on`]. On a handle whose runtime has shut down
    /// the future still runs here, with that runtime current: its spawns
    /// are refused (their handles say so), and its timers panic.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        if current::on_worker_thread() || current::on_rescuer_thread() {
            panic!(
                "wq: block_on called on a wq worker thread (or the rescuer), where blocking stalls its pool: in a task, .await the future; in synchronous code on a worker, use futures::executor::block_on inside wq::block_in_place, or run that code with wq::spawn_blocking, where block_on is allowed"
            );
        }
        // Not current (the future still runs) on a thread whose
        // thread-locals are being destroyed: a `block_on` in a
        // `thread_local!`'s `Drop` (a connection flushed at thread exit)
        // aborted the process there.
        let _guard = context::try_enter(self.scheduler.clone());
        block_on(&self.scheduler, future)
    }

    /// See [`Runtime::metrics`].
    pub fn metrics(&self) -> Snapshot {
        let s = &self.scheduler;
        let _ordered = crate::loom::lock(&s.snapshots);
        let uptime = s.started_at.elapsed();
        let (queues, retired) = s.queues_and_retired();
        let mut snapshot = Snapshot::new(
            uptime,
            s.config.latency_capture,
            s.config.thread_name.clone(),
            (s.config.cpu_budget != usize::MAX).then_some(s.config.cpu_budget),
            s.pools().iter().map(|p| p.metrics()).collect(),
            queues.iter().map(|q| q.stats()).collect(),
            retired,
        );
        snapshot.blocking = s.services.blocking.stats(s.config.max_blocking_threads);
        snapshot.instance = s.instance;
        snapshot
    }

    /// The topology the runtime schedules for.
    pub fn topology(&self) -> &Topology {
        &self.scheduler.topology
    }

    /// Tells this runtime from any other: its metrics'
    /// [`Snapshot::instance`](crate::metrics::Snapshot::instance) (its
    /// build's wall-clock time mixed with the process id). State cached
    /// per runtime keys on it: a dropped runtime's address may be a new
    /// one's.
    ///
    /// ```
    /// let (a, b) = (wq::Runtime::new().unwrap(), wq::Runtime::new().unwrap());
    /// assert_ne!(a.handle().instance(), b.handle().instance());
    /// assert_eq!(a.handle().instance(), a.metrics().instance);
    /// ```
    pub fn instance(&self) -> u64 {
        self.scheduler.instance
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("topology", &self.scheduler.topology.source())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for EnterGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnterGuard").finish_non_exhaustive()
    }
}

/// Spawns `future` on the current runtime at its default scope.
///
/// # Panics
/// Outside a runtime; use [`Handle::spawn`] there.
///
/// ```
/// #[wq::main]
/// async fn main() {
///     let h = wq::spawn(async { "hello" });
///     assert_eq!(h.await.unwrap(), "hello");
/// }
/// ```
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    context::with_current(|s| match s {
        Some(s) => spawn_at(s, s.config.default_scope, None, future),
        None => outside("wq::spawn"),
    })
}

/// Spawns `future` on the current runtime's pool for `scope` at the calling
/// CPU. See [`Runtime::spawn_on`].
///
/// # Panics
/// Outside a runtime; use [`Handle::spawn_on`] there.
pub fn spawn_on<F>(scope: Scope, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    context::with_current(|s| match s {
        Some(s) => spawn_at(s, scope, None, future),
        None => outside("wq::spawn_on"),
    })
}

/// Spawns `future` on `scheduler`'s pool for `scope` at `cpu` (or the
/// calling thread's CPU); a closed runtime drops it.
fn spawn_at<F>(
    scheduler: &Scheduler,
    scope: Scope,
    cpu: Option<usize>,
    future: F,
) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if scheduler.is_closed() {
        return JoinHandle::refused(crate::task::RUNTIME_SHUT_DOWN);
    }
    spawn_placed(scheduler, scope, cpu, future)
}

/// [`spawn_at`], giving the future back if the runtime is shut down (one
/// look at the flag: a second, after the caller's, could drop it).
fn try_spawn_at<F>(
    scheduler: &Scheduler,
    scope: Scope,
    cpu: Option<usize>,
    future: F,
) -> Result<JoinHandle<F::Output>, F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if scheduler.is_closed() {
        return Err(future);
    }
    Ok(spawn_placed(scheduler, scope, cpu, future))
}

/// The spawn itself, the runtime open.
#[inline]
fn spawn_placed<F>(
    scheduler: &Scheduler,
    scope: Scope,
    cpu: Option<usize>,
    future: F,
) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    // The spawn call's time includes the placement (`sched_getcpu`).
    let called_at = scheduler.config.latency_capture.then(crate::clock::now);
    task::spawn(
        scheduler.place(scheduler.default_attrs(), scope, cpu),
        future,
        called_at,
    )
}

/// Runs the blocking closure `f` on the current runtime's blocking pool,
/// so it never holds a worker: file I/O, DNS lookups, a C library's
/// blocking call, CPU-heavy work that would stall a pool.
///
/// The pool grows on demand up to [`Builder::max_blocking_threads`]
/// (default 512; beyond, jobs queue FIFO) and culls threads idle for
/// [`Builder::blocking_keep_alive`] (default 10 s). A thread start the
/// system refuses (the process's thread limit, memory) leaves the job
/// queued: it runs on a thread already there once one is free, or on one
/// the runtime starts when it can (it retries every 100 ms while jobs
/// wait with no thread coming; said once on stderr, counted in
/// [`BlockingStats::start_failures`](crate::metrics::BlockingStats::start_failures)).
/// A panic in `f` gives a
/// [`JoinError`](crate::JoinError) with `is_panic()`. At shutdown, jobs not
/// started are dropped (their handles give a cancelled `JoinError`) and
/// running ones are waited for up to the shutdown's timeout: without limit
/// when the runtime is simply dropped, so a job that never returns holds
/// the drop ([`Runtime::shutdown_timeout`] bounds the wait). They are
/// waited for after the runtime's timers and sockets shut down (as
/// tokio's): from then on a wq socket's operations in a running job fail
/// with an error saying the runtime is gone, and a `wq::time::Sleep` still
/// ahead panics when polled, so a job that may run into the shutdown (a
/// retry loop, a back-off) should sleep with `std::thread::sleep`. Inside
/// `f` the runtime is current: [`crate::spawn`] works there.
/// [`JoinHandle::abort`](crate::JoinHandle::abort) cancels a job that has
/// not started; once `f` runs it cannot be stopped, and awaiting the
/// handle gives its result (as tokio's).
///
/// # Panics
/// Outside a runtime; use [`Handle::spawn_blocking`] there.
///
/// ```
/// #[wq::main]
/// async fn main() {
///     let len = wq::spawn_blocking(|| std::fs::read_to_string("/proc/self/status").map(|s| s.len()));
///     assert!(len.await.unwrap().unwrap() > 0);
/// }
/// ```
pub fn spawn_blocking<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    context::with_current(|s| match s {
        Some(s) => spawn_blocking_on(s, f),
        None => outside("wq::spawn_blocking"),
    })
}

/// Polls `future` on this thread until it is ready. While it waits, the
/// thread parks in the runtime's I/O driver if nobody turns it (so a
/// runtime with no worker yet still moves its sockets and timers), else on
/// its futex.
fn block_on<F: Future>(scheduler: &Scheduler, future: F) -> F::Output {
    /// The future's waker: unparks this thread, and says the next poll
    /// is not spurious (a park in the driver also returns when its turn
    /// woke other tasks).
    struct Wake(Unparker, AtomicBool);
    impl std::task::Wake for Wake {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.1.store(true, Ordering::Relaxed);
            self.0.unpark();
        }
    }
    /// This thread may have held the driver while the workers idled on
    /// their futexes (`owes`: since its last attend): one of them takes
    /// it (`pool::park`, "Attending the driver"), before each poll, and
    /// as `block_on` unwinds between a park and that attend (a caller
    /// catching the panic goes on using the runtime). First it stops
    /// waiting for the driver (`waiter`: its key among the threads that
    /// found the driver taken, while it is one). A `block_on` whose
    /// future was ready without a park, or that attended before its last
    /// poll, owes nothing: every return attended (and kicked a pool)
    /// before.
    struct Attend<'a> {
        scheduler: &'a Scheduler,
        waiter: Option<u64>,
        owes: bool,
    }
    impl Drop for Attend<'_> {
        fn drop(&mut self) {
            if let Some(key) = self.waiter.take() {
                self.scheduler.services.remove_block_on_waiter(key);
            }
            if std::mem::take(&mut self.owes) {
                self.scheduler.attend_driver_or_start();
            }
        }
    }
    let parker = Parker::new();
    let wake = Arc::new(Wake(parker.unparker(), AtomicBool::new(false)));
    let waker = std::task::Waker::from(wake.clone());
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    let mut attend = Attend {
        scheduler,
        waiter: None,
        owes: false,
    };
    loop {
        let polled = crate::coop::with_budget(|| future.as_mut().poll(&mut cx));
        if let std::task::Poll::Ready(out) = polled {
            // The future's spawns' samples (with latency capture on), in
            // the next snapshot: this thread may spawn nothing more.
            crate::metrics::flush_spawns();
            return out;
        }
        // Parks until the future is woken: a park in the driver also
        // returns when its turn woke other tasks (or at its timeout),
        // and this thread goes back to the driver then, without a poll.
        loop {
            parker.park(BLOCK_ON_PARK, |turn| {
                let services = &scheduler.services;
                if services.turn_driver(crate::scheduler::Turn::Park, turn) {
                    return true;
                }
                // Found it taken: a thread that gives it back with no
                // worker to take it wakes this one (`attend_driver`); the
                // pair of `add_block_on_waiter`, ordered by the waiters'
                // lock: either the try below finds the lock free, or that
                // thread reads this one registered.
                if attend.waiter.is_none() && services.existing_driver().is_some() {
                    attend.waiter = Some(services.add_block_on_waiter(wake.0.clone()));
                    return services.turn_driver(crate::scheduler::Turn::Park, turn);
                }
                false
            });
            let polling = wake.1.swap(false, Ordering::Relaxed);
            // A waiter only while it parks: in the driver now, or off to
            // poll its future (an attend must not count it as coming). One
            // off to poll may have been counted as coming already (woken
            // by an attend that found no worker, its future woken too): it
            // attends as one that leaves the driver does.
            if (polling || parker.was_in_driver())
                && let Some(key) = attend.waiter.take()
            {
                scheduler.services.remove_block_on_waiter(key);
                attend.owes |= !parker.was_in_driver();
            }
            attend.owes |= parker.was_in_driver();
            if polling {
                break;
            }
        }
        // Out of the driver, to poll a future that may compute or block
        // for long (a synchronous call in `async fn main`): the workers
        // may have idled on their futexes meanwhile, one takes it. Not
        // after each turn (a wakeup per turn is the eager hand-off
        // measured and not kept: `scheduler::services`), only before a
        // poll.
        if std::mem::take(&mut attend.owes) {
            scheduler.attend_driver_or_start();
        }
    }
}

/// The longest one park of `block_on` lasts (it then parks again: its
/// future is polled only after a wake of it).
const BLOCK_ON_PARK: Duration = Duration::from_secs(60);

/// Runs `f` on `scheduler`'s blocking pool.
fn spawn_blocking_on<F, T>(scheduler: &Arc<Scheduler>, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    crate::scheduler::blocking::BlockingPool::spawn(scheduler, f)
}
