//! Named workqueues: `Workqueue`, its builder, errors and stats.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::Handle;
use crate::Scope;
use crate::metrics::WorkqueueStats;
use crate::scheduler::Scheduler;
use crate::scheduler::queue::{DEFAULT_MAX_ACTIVE, MAX_ACTIVE, QueueConfig, QueueHandle, Refused};
use crate::task::JoinHandle;

/// A named workqueue: a policy over the runtime's pools, as the kernel's
/// `alloc_workqueue()` gives. Its items (tasks) run in the pools of its
/// scope's pods, shared with every queue of the same attributes; it limits
/// how many run at once (`max_active`), can run them one at a time in
/// order (`ordered`), on high-priority pools (`highpri`), and be changed
/// while it runs. `wq::spawn` uses the runtime's default queue (its default
/// scope, no `max_active` limit).
///
/// An item is **active** from the moment it is handed to a pool until its
/// future is gone (finished, panicked or cancelled) and its end counted --
/// while it runs and while it waits for a wake. Items beyond `max_active`
/// wait on the queue's inactive list and start in submission order as
/// active ones finish. (An item's worker counts its end right after its
/// next look at its queues: awaiting its handle can return a moment
/// before; see [`Workqueue::stats`].)
///
/// Like a [`Handle`], a workqueue does not keep its runtime running: once
/// the [`Runtime`](crate::Runtime) is dropped, its items are cancelled and
/// [`Workqueue::try_spawn`] says the runtime is shut down.
///
/// ```
/// use wq::{Scope, Workqueue};
///
/// #[wq::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let q = Workqueue::builder("compress")
///         .scope(Scope::Cache)
///         .max_active(4)
///         .build(&wq::Handle::current())?;
///     let jobs: Vec<_> = (0..16u64).map(|i| q.spawn(async move { i * i })).collect();
///     q.flush().await; // everything queued above has finished
///     let mut sum = 0;
///     for j in jobs {
///         sum += j.await?;
///     }
///     assert_eq!(sum, (0..16u64).map(|i| i * i).sum::<u64>());
///     assert_eq!(q.stats().completed, 16);
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Workqueue {
    /// The queue, through the claim every handle of it shares (its drop,
    /// the last handle's, lets the queue go once its tasks have).
    pub(crate) queue: Arc<QueueHandle>,
    /// The runtime it was built on, held as a [`Handle`] holds it: a spawn
    /// places its item through it without touching the runtime's reference
    /// count (a line every spawning CPU would write).
    scheduler: Arc<Scheduler>,
}

/// Builds a [`Workqueue`]: [`Workqueue::builder`].
#[derive(Clone, Debug)]
#[must_use = "a WorkqueueBuilder does nothing until .build() is called"]
pub struct WorkqueueBuilder {
    name: String,
    scope: Option<Scope>,
    strict: Option<bool>,
    max_active: usize,
    ordered: bool,
    highpri: bool,
    cpu_intensive: bool,
}

impl Workqueue {
    /// A builder for a queue named `name` (it names the queue in stats,
    /// metrics and reports).
    pub fn builder(name: impl Into<String>) -> WorkqueueBuilder {
        WorkqueueBuilder {
            name: name.into(),
            scope: None,
            strict: None,
            max_active: 0,
            ordered: false,
            highpri: false,
            cpu_intensive: false,
        }
    }

    /// Spawns `future` as an item of the queue. It starts at once if fewer
    /// than `max_active` items are active, else when its turn comes.
    ///
    /// If the queue refuses it (it is being [drained](Workqueue::drain) and
    /// the caller is not one of its tasks, the runtime is shut down, or the
    /// queue holds over a billion items in flight), the
    /// future is dropped and the handle resolves to a
    /// [`JoinError`](crate::JoinError) that says why
    /// ([`is_refused`](crate::JoinError::is_refused));
    /// [`Workqueue::try_spawn`] gives the reason at once, and the future
    /// back.
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.queue
            .spawn(&self.scheduler, None, future)
            .unwrap_or_else(refused_handle)
    }

    /// As [`Workqueue::spawn`], but a refused item is an error that says
    /// why and gives the future back
    /// ([`SpawnError::into_future`]: to spawn it again once a drain
    /// returns, say, or to run it elsewhere).
    ///
    /// ```
    /// # #[wq::main] async fn main() {
    /// let q = wq::Workqueue::builder("jobs").build(&wq::Handle::current()).unwrap();
    /// let item = q.spawn(async {});
    /// // Draining from the call on.
    /// let drain = q.drain();
    /// // Refused from outside the queue while it drains, the job kept.
    /// let err = q.try_spawn(async { 7 }).unwrap_err();
    /// assert!(err.is_draining());
    /// let job = err.into_future();
    /// drain.await;
    /// item.await.unwrap();
    /// assert_eq!(q.spawn(job).await.unwrap(), 7);
    /// # }
    /// ```
    pub fn try_spawn<F>(&self, future: F) -> Result<JoinHandle<F::Output>, SpawnError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.queue
            .spawn(&self.scheduler, None, future)
            .map_err(|refused| self.refused(refused))
    }

    /// As [`Workqueue::spawn`], placed as if spawned on CPU `cpu` (an OS
    /// index; the kernel's `queue_work_on()`): the item goes to the pool of
    /// the queue's scope's pod that holds `cpu`. A CPU the topology does not
    /// know falls back to round-robin over the pods (logged once per
    /// runtime, through `log`).
    pub fn spawn_on_cpu<F>(&self, cpu: usize, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.queue
            .spawn(&self.scheduler, Some(cpu), future)
            .unwrap_or_else(refused_handle)
    }

    /// As [`Workqueue::spawn_on_cpu`], but a refused item is an error that
    /// says why and gives the future back, as [`Workqueue::try_spawn`].
    ///
    /// ```
    /// # #[wq::main] async fn main() {
    /// let q = wq::Workqueue::builder("per-cpu").build(&wq::Handle::current()).unwrap();
    /// let drain = q.drain();
    /// let err = q.try_spawn_on_cpu(0, async { 7 }).unwrap_err();
    /// assert!(err.is_draining());
    /// drain.await;
    /// assert_eq!(q.try_spawn_on_cpu(0, err.into_future()).unwrap().await.unwrap(), 7);
    /// # }
    /// ```
    pub fn try_spawn_on_cpu<F>(
        &self,
        cpu: usize,
        future: F,
    ) -> Result<JoinHandle<F::Output>, SpawnError<F>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.queue
            .spawn(&self.scheduler, Some(cpu), future)
            .map_err(|refused| self.refused(refused))
    }

    /// The error of a refused item, naming this queue.
    fn refused<F>(&self, (refused, future): (Refused, F)) -> SpawnError<F> {
        SpawnError {
            queue: Some(self.queue.name().to_owned()),
            refused,
            future,
        }
    }

    /// Waits until every item spawned on the queue before this call has
    /// finished. The flush begins in the call, not at the first poll of
    /// the future it returns: items spawned after the call are not waited
    /// for (unless an earlier flush was dropped in its turn, or one is
    /// still being served: the flush then starts when its turn comes, and
    /// may wait for items spawned before that too; or a spawn that began
    /// before an earlier flush and counted itself after it still runs:
    /// the flush then waits for it first, and for what was spawned until
    /// it ended). Flushes of one queue
    /// are served one at a time, in order; one given up on (a timeout) but
    /// kept, no longer polled, holds none of the later ones up: they
    /// finish its wait for it.
    ///
    /// # Panics
    /// When awaited by one of the queue's own items: it would wait for
    /// itself forever (the kernel warns of the same). Flush from outside
    /// the queue, or await the items' handles. (An item may make the
    /// future and hand it to a task outside the queue.)
    pub fn flush(&self) -> impl Future<Output = ()> + Send + '_ {
        self.queue.flush()
    }

    /// Flushes until no item is left, refusing items from outside the queue
    /// from the call until the returned future completes or is dropped (an
    /// item of the queue may still spawn more on it, as the kernel's
    /// `drain_workqueue()` allows chained work).
    ///
    /// # Panics
    /// When awaited by one of the queue's own items, as
    /// [`flush`](Workqueue::flush).
    pub fn drain(&self) -> impl Future<Output = ()> + Send + '_ {
        self.queue.drain()
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        self.queue.name()
    }

    /// The queue's attributes and counters now.
    ///
    /// An item's end is counted (`completed`, its last poll's `cpu_time`,
    /// and `started` for an item of one poll; it leaves `in_flight` and
    /// `active`, and its slot frees) by its worker right after that
    /// worker's next look at its queues: awaiting the item's
    /// [`JoinHandle`](crate::JoinHandle) can return a moment before.
    /// After [`flush`](Workqueue::flush) returns, every item spawned
    /// before it is counted.
    pub fn stats(&self) -> WorkqueueStats {
        self.queue.stats()
    }

    /// Items not yet handed to a pool (waiting ones, and later ones) go to
    /// `scope`'s pods; items already handed over finish where they are.
    ///
    /// Once its runtime has shut down, the queue runs nothing more, and
    /// this changes only what [`Workqueue::scope`] says.
    pub fn set_scope(&self, scope: Scope) {
        self.queue.set_scope(scope);
    }

    /// Items not yet handed to a pool go to strict (`true`) or non-strict
    /// pools: see [`WorkqueueBuilder::strict`]. Once its runtime has shut
    /// down, this changes only what the queue's attributes say.
    pub fn set_strict(&self, strict: bool) {
        self.queue.set_strict(strict);
    }

    /// At most `n` items active from now on (0: the default, 1024; at most
    /// 2048); waiting items start at once if the new limit allows. Items
    /// already active above a lowered limit finish as they are.
    ///
    /// A lowered limit costs the queue its per-CPU slot counts for good:
    /// its slots are counted on one cache line from then on, which every
    /// CPU feeding the queue writes (`docs/guide/workqueues.md`, "Cost").
    /// So does a limit below 128 from the start, and raising it later does
    /// not give them back.
    ///
    /// # Errors
    /// On an ordered queue, for `n` over 2048, and once its runtime has
    /// shut down ([`WorkqueueError::is_shut_down`]).
    pub fn set_max_active(&self, n: usize) -> Result<(), WorkqueueError> {
        // The runtime closes before its queues do (`Scheduler::shutdown`):
        // either says it is shut down.
        if self.scheduler.is_closed() || self.queue.is_closed() {
            return Err(WorkqueueError::shut_down(format!(
                "workqueue {:?}: its runtime is shut down, and the queue runs nothing more; build a new queue on a running runtime",
                self.name()
            )));
        }
        if self.queue.is_ordered() {
            return Err(WorkqueueError::new(format!(
                "workqueue {:?} is ordered: it runs one item at a time, and its max_active cannot change; if its items may overlap, build it without .ordered() and with .max_active(n)",
                self.name()
            )));
        }
        let n = max_active(self.name(), n)?;
        self.queue.set_max_active(n);
        Ok(())
    }

    /// The scope its next items go to.
    pub fn scope(&self) -> Scope {
        self.queue.scope()
    }

    /// Its `max_active` now.
    pub fn max_active(&self) -> usize {
        self.queue.max_active()
    }
}

impl fmt::Debug for Workqueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workqueue")
            .field("name", &self.name())
            .field("attrs", &self.queue.attrs())
            .finish()
    }
}

/// Whether `c` may not be in a queue's name: a control character (a
/// newline, NUL, an escape), or one that breaks a line or reorders the
/// text around it where the name is shown (the line and paragraph
/// separators, the bidirectional marks, embeddings, overrides and
/// isolates: "a\u{202e}lper" shows as another name).
fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Validates queue `name`'s `max_active`: 0 means the default.
fn max_active(name: &str, n: usize) -> Result<usize, WorkqueueError> {
    match n {
        0 => Ok(DEFAULT_MAX_ACTIVE),
        n if n > MAX_ACTIVE => Err(WorkqueueError::new(format!(
            "workqueue {name:?}: max_active {n} is over the limit of {MAX_ACTIVE} (the \
             kernel's WQ_MAX_ACTIVE); pass 1..={MAX_ACTIVE}, or 0 for the default \
             ({DEFAULT_MAX_ACTIVE})"
        ))),
        n => Ok(n),
    }
}

impl WorkqueueBuilder {
    /// The affinity scope its items run in: each item goes to the pool of
    /// the pod holding the CPU it is spawned on. Default: the runtime's
    /// default scope.
    pub fn scope(mut self, scope: Scope) -> WorkqueueBuilder {
        self.scope = Some(scope);
        self
    }

    /// Strict: the queue's items run only on workers of their pod, and
    /// those workers take no work from other pods. Non-strict (the kernel's
    /// default, `affinity_strict = 0`): items start in their pod, but an
    /// idle worker of a nearby pod may take one that waits (counted as
    /// `repatriated` when the task is next queued back home), and a
    /// `cache_shard` pool's workers run on any CPU of the shard's cache.
    /// Default: the runtime's
    /// [`affinity_strict`](crate::Builder::affinity_strict).
    pub fn strict(mut self, strict: bool) -> WorkqueueBuilder {
        self.strict = Some(strict);
        self
    }

    /// At most `n` items active at once (0: the default, 1024, as the
    /// kernel's `WQ_DFL_ACTIVE`; at most 2048, `WQ_MAX_ACTIVE`).
    pub fn max_active(mut self, n: usize) -> WorkqueueBuilder {
        self.max_active = n;
        self
    }

    /// One item at a time, in submission order (the kernel's
    /// `alloc_ordered_workqueue()`): `max_active` 1, and it cannot change.
    ///
    /// An item that spawns on its own ordered queue and awaits that item
    /// waits forever: the new item starts only after the one awaiting it
    /// ends. The same holds for any queue whose `max_active` items all
    /// wait so. An item that awaits a task that flushes or drains its own
    /// queue waits forever on any queue (the flush waits for it); a
    /// `flush` or `drain` awaited in an item of the queue itself panics
    /// instead.
    ///
    /// An item aborted while it waits for its turn never starts: its
    /// future is dropped then (by a worker), beside the item running (a drop
    /// that must not overlap the running item needs a lock of its own).
    pub fn ordered(mut self) -> WorkqueueBuilder {
        self.ordered = true;
        self
    }

    /// Items run on separate high-priority pools (the kernel's
    /// `WQ_HIGHPRI`), whose workers run at `nice -20` where the process may
    /// (else wq says once on stderr where they ended up: as far up as the
    /// process's nice limit allows, or at the process's priority, or as
    /// near it as the limit lets a worker started at a lower one come
    /// back; still on workers of their own, ahead of any backlog of other
    /// queues).
    pub fn highpri(mut self) -> WorkqueueBuilder {
        self.highpri = true;
        self
    }

    /// Items are CPU-intensive (the kernel's `WQ_CPU_INTENSIVE`): while one
    /// is polled, its worker does not count against its pool's maximum, so
    /// long computations do not hold up the pool's other work.
    pub fn cpu_intensive(mut self) -> WorkqueueBuilder {
        self.cpu_intensive = true;
        self
    }

    /// Creates the queue on `handle`'s runtime.
    ///
    /// # Errors
    /// A name that is empty or only spaces, or holds a control character
    /// (a newline, NUL, an escape, a line separator or a bidirectional
    /// override: the name is printed in tables and reports), `max_active`
    /// over 2048, `ordered` with a `max_active` over
    /// 1, or a shut-down runtime ([`WorkqueueError::is_shut_down`]).
    pub fn build(self, handle: &Handle) -> Result<Workqueue, WorkqueueError> {
        if self.name.trim().is_empty() {
            return Err(WorkqueueError::new(
                "a workqueue needs a name (it names the queue in stats, metrics and reports): pass one with a non-space character to Workqueue::builder",
            ));
        }
        if let Some((at, c)) = self.name.char_indices().find(|&(_, c)| unprintable(c)) {
            return Err(WorkqueueError::new(format!(
                "workqueue name {:?} holds the unprintable character {c:?} at byte {at} (a control character, a line separator or a bidirectional mark): a name is printed in tables, logs and reports, so pass printable text to Workqueue::builder",
                self.name
            )));
        }
        let mut max = max_active(&self.name, self.max_active)?;
        if self.ordered {
            if self.max_active > 1 {
                return Err(WorkqueueError::new(format!(
                    "workqueue {:?} is ordered, which runs one item at a time, but asks for max_active {}: drop one of .ordered() and .max_active()",
                    self.name, self.max_active
                )));
            }
            max = 1;
        }
        let scheduler = &handle.scheduler;
        if scheduler.is_closed() {
            return Err(WorkqueueError::shut_down(format!(
                "workqueue {:?} cannot be created: the runtime is shut down (build queues while the Runtime is alive)",
                self.name
            )));
        }
        let queue = scheduler.create_queue(QueueConfig {
            name: self.name,
            scope: self.scope.unwrap_or(scheduler.config.default_scope),
            strict: self.strict.unwrap_or(scheduler.config.affinity_strict),
            max_active: max,
            ordered: self.ordered,
            highpri: self.highpri,
            cpu_intensive: self.cpu_intensive,
        });
        Ok(Workqueue {
            queue: Arc::new(QueueHandle::new(queue)),
            scheduler: scheduler.clone(),
        })
    }
}

/// Why a [`Workqueue`] could not be created or changed.
#[derive(Clone, Debug)]
pub struct WorkqueueError {
    message: String,
    shut_down: bool,
}

impl WorkqueueError {
    fn new(message: impl Into<String>) -> WorkqueueError {
        WorkqueueError {
            message: message.into(),
            shut_down: false,
        }
    }

    fn shut_down(message: impl Into<String>) -> WorkqueueError {
        WorkqueueError {
            shut_down: true,
            ..WorkqueueError::new(message)
        }
    }

    /// The runtime is shut down (a change or a queue asked for during or
    /// after its shutdown: harmless there), not a setting refused (an
    /// ordered queue's `max_active`, one over the limit, no name), which
    /// the message says how to fix.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down
    }
}

impl fmt::Display for WorkqueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WorkqueueError {}

/// The handle of a refused item: its future dropped here (a `Drop` that
/// panics reaches the spawner, as the future's would anywhere), its
/// `JoinError` saying why.
fn refused_handle<F: Future>((refused, future): (Refused, F)) -> JoinHandle<F::Output> {
    drop(future);
    JoinHandle::refused(refused.why())
}

/// Why [`Workqueue::try_spawn`] (or [`Handle::try_spawn`]) refused an
/// item, with the item's future, given back ([`SpawnError::into_future`]).
///
/// [`Handle::try_spawn`]: crate::Handle::try_spawn
pub struct SpawnError<F> {
    /// The queue's name; `None` for a spawn on the runtime itself.
    queue: Option<String>,
    refused: Refused,
    future: F,
}

impl<F> SpawnError<F> {
    /// The runtime refused a spawn of `future`: it is shut down.
    pub(crate) fn shut_down(future: F) -> SpawnError<F> {
        SpawnError {
            queue: None,
            refused: Refused::Closed,
            future,
        }
    }

    /// The refused future, to spawn again (once a drain returns) or to run
    /// elsewhere.
    pub fn into_future(self) -> F {
        self.future
    }

    /// The queue is being drained, and the caller is not one of its tasks.
    pub fn is_draining(&self) -> bool {
        self.refused == Refused::Draining
    }

    /// The runtime is shut down.
    pub fn is_shut_down(&self) -> bool {
        self.refused == Refused::Closed
    }

    /// The queue holds as many items in flight as it can count (over a
    /// billion): await some before spawning more.
    pub fn is_full(&self) -> bool {
        self.refused == Refused::Full
    }
}

impl<F> fmt::Debug for SpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnError")
            .field("queue", &self.queue)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

impl<F> fmt::Display for SpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(queue) = &self.queue else {
            // Only a shutdown refuses a spawn on the runtime.
            return f.write_str(
                "the runtime is shut down: it accepts no task (spawn before the Runtime is shut down or dropped; its handles cannot revive it)",
            );
        };
        match self.refused {
            Refused::Draining => write!(
                f,
                "workqueue {:?} is being drained: it accepts items only from its own tasks until drain() returns",
                queue
            ),
            Refused::Closed => write!(
                f,
                "workqueue {:?} accepts no items: its runtime is shut down (spawn before the Runtime is shut down or dropped; its handles cannot revive it)",
                queue
            ),
            Refused::Full => write!(
                f,
                "workqueue {:?} accepts no more items now: {}",
                queue,
                self.refused.why()
            ),
        }
    }
}

impl<F> std::error::Error for SpawnError<F> {}

// SAFETY: a shared `SpawnError` gives no access to its future (only
// `into_future(self)` moves it out, by value): it may be shared whatever
// the future, as a `Send` one may be sent. So `try_spawn(..)?` works in a
// function returning `Box<dyn Error + Send + Sync>` for any spawnable
// future, boxed `dyn Future + Send` ones (not `Sync`) included.
unsafe impl<F: Send> Sync for SpawnError<F> {}
