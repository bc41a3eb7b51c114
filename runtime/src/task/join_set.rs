//! `JoinSet`: tasks spawned into a set, awaited in the order they finish.
//!
//! A set holds [`JoinHandle`]s in a `futures` `FuturesUnordered`: a task
//! that finishes wakes its handle's entry, and `join_next` polls only the
//! entries woken since its last call (no scan of the whole set per
//! completion). Dropping the set aborts every task still in it, as
//! tokio's does: a set owns its tasks, so a connection handler's
//! per-request tasks go when the handler goes. The set itself is not
//! shared between tasks: it is `Send`, and its methods take `&mut self`.
//! Its `spawn` methods are the runtime's (`runtime/join_set.rs`: this layer
//! does not reach the runtime).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::stream::{FuturesUnordered, Stream};

use super::{JoinError, JoinHandle};

/// A set of tasks, awaited in the order they finish.
///
/// Tasks are spawned into the set ([`spawn`](JoinSet::spawn),
/// [`spawn_on`](JoinSet::spawn_on),
/// [`spawn_blocking`](JoinSet::spawn_blocking)), or their handles are
/// added ([`push`](JoinSet::push): an item of a named
/// [`Workqueue`](crate::Workqueue), a task of another runtime's
/// [`Handle`](crate::Handle)). [`join_next`](JoinSet::join_next) gives the
/// result of the next one to finish; a task that panicked or was aborted
/// gives its [`JoinError`] there and the set goes on.
///
/// **Dropping the set aborts the tasks still in it** (see
/// [`JoinHandle::abort`]); [`detach_all`](JoinSet::detach_all) lets them
/// run on instead.
///
/// Unlike tokio's, the `spawn` methods return nothing (no `AbortHandle`):
/// a set aborts its tasks together ([`abort_all`](JoinSet::abort_all), or
/// its drop); a task that may need aborting on its own is better kept as
/// its [`JoinHandle`] ([`JoinHandle::abort`]) than put in a set.
///
/// ```
/// use wq::task::JoinSet;
///
/// # let rt = wq::Runtime::new().unwrap();
/// rt.block_on(async {
///     let mut set = JoinSet::new();
///     for i in 0..10u64 {
///         set.spawn(async move { i * i });
///     }
///     let mut sum = 0;
///     while let Some(r) = set.join_next().await {
///         sum += r.unwrap();
///     }
///     assert_eq!(sum, 285);
///     assert!(set.is_empty());
/// });
/// ```
#[must_use = "dropping a JoinSet aborts its tasks"]
pub struct JoinSet<T> {
    tasks: FuturesUnordered<JoinHandle<T>>,
    /// The waker of the last [`poll_join_next`](JoinSet::poll_join_next):
    /// [`try_join_next`](JoinSet::try_join_next) polls with one that wakes
    /// it too, so a caller polling the set still hears of later results.
    waker: Option<Waker>,
    /// That poll gave no result (nothing ready, or the set empty), and its
    /// waker has not been woken for a task added since: `FuturesUnordered`
    /// polls a new handle (registering the set's wake with it) only at the
    /// next poll, and does not wake its poller when one is pushed.
    waiting: bool,
}

impl<T> JoinSet<T> {
    /// An empty set.
    pub fn new() -> JoinSet<T> {
        JoinSet {
            tasks: FuturesUnordered::new(),
            waker: None,
            waiting: false,
        }
    }

    /// Tasks in the set: spawned or pushed, and not yet given back by a
    /// join.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the set holds no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Adds a task's handle: the set now owns the task (a join gives its
    /// result; dropping the set aborts it).
    ///
    /// # Panics
    /// If an await of `handle` has given its result already: the set would
    /// have nothing to join (the next join panicked, naming a poll after
    /// the result).
    pub fn push(&mut self, mut handle: JoinHandle<T>) {
        assert!(
            !handle.answered(),
            "wq::task::JoinSet::push: this JoinHandle's await has given its result already, \
             so there is nothing left to join: push a handle before awaiting it"
        );
        self.tasks.push(handle);
        self.wake_waiting_poller();
    }

    /// Wakes the last poller if it waits: a task was added, whose end would
    /// wake nobody until a poll has seen it.
    fn wake_waiting_poller(&mut self) {
        if std::mem::take(&mut self.waiting)
            && let Some(w) = &self.waker
        {
            w.wake_by_ref();
        }
    }

    /// Polls for the result of the next task to finish: `Ready(None)` when
    /// the set is empty. Only the last waker given is woken (as for a
    /// `Stream`).
    pub fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, JoinError>>> {
        match &mut self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        let polled = Pin::new(&mut self.tasks).poll_next(cx);
        // `Ready(None)` too: a task spawned into the empty set wakes it.
        self.waiting = !matches!(polled, Poll::Ready(Some(_)));
        polled
    }

    /// The result of the next task to finish, or `None` when the set is
    /// empty. Cancel safe: a call dropped before it answers loses no
    /// result (the task stays in the set).
    pub async fn join_next(&mut self) -> Option<Result<T, JoinError>> {
        std::future::poll_fn(|cx| self.poll_join_next(cx)).await
    }

    /// The result of a task that has finished, if one has, without
    /// waiting: `None` when none has yet (or the set is empty).
    pub fn try_join_next(&mut self) -> Option<Result<T, JoinError>> {
        /// Records a wake: `FuturesUnordered` answers `Pending` and wakes
        /// its caller, rather than look further, when it finds a wake
        /// half-way into its ready queue (a task finishing on another
        /// thread right then), or after polling each of its futures once
        /// (a yield), so `Pending` alone does not mean that nothing has
        /// finished. Once this call has answered (`done`), it wakes the
        /// set's last poller's waker instead: `FuturesUnordered` keeps the
        /// waker of its last poll, this one, for the results that come
        /// later. (Passed on during the call too, the yield woke the
        /// poller for nothing at every call.)
        struct Woken {
            woken: AtomicBool,
            done: AtomicBool,
            poller: Option<Waker>,
        }
        impl Wake for Woken {
            fn wake(self: Arc<Self>) {
                self.wake_by_ref();
            }
            fn wake_by_ref(self: &Arc<Self>) {
                // SeqCst, with `done`'s store and the answer's re-read of
                // `woken` below: a wake racing the answer is seen by one
                // side at least (a Dekker pair), so the poller is never
                // left unwoken for a task that finished.
                self.woken.store(true, Ordering::SeqCst);
                if self.done.load(Ordering::SeqCst)
                    && let Some(w) = &self.poller
                {
                    w.wake_by_ref();
                }
            }
        }
        let woken = Arc::new(Woken {
            woken: AtomicBool::new(false),
            done: AtomicBool::new(false),
            poller: self.waker.clone(),
        });
        let waker = Waker::from(woken.clone());
        // A wake in flight is in the queue by the next round; bounded all
        // the same. Without the operation budget: a handle polled with the
        // calling task's budget spent answers `Pending` (and wakes itself),
        // which would read as nothing finished.
        let answer = crate::coop::unconstrained(|| {
            for _ in 0..=self.len() {
                match Pin::new(&mut self.tasks).poll_next(&mut Context::from_waker(&waker)) {
                    Poll::Ready(r) => return r,
                    Poll::Pending if woken.woken.swap(false, Ordering::SeqCst) => {}
                    Poll::Pending => return None,
                }
            }
            // Woken at every look, up to the bound: the last wake's
            // result is the poller's to take.
            woken.woken.store(true, Ordering::SeqCst);
            None
        });
        // From now on wakes go to the poller; one that came since the last
        // look (a task finishing on another thread) is passed on here.
        woken.done.store(true, Ordering::SeqCst);
        if woken.woken.load(Ordering::SeqCst)
            && let Some(w) = &woken.poller
        {
            w.wake_by_ref();
        }
        answer
    }

    /// Waits for every task and gives their outputs, in the order they
    /// finished.
    ///
    /// # Panics
    /// If a task panicked, the others are aborted and its panic resumes
    /// here; if one was cancelled (aborted, or its runtime shut down), the
    /// others are aborted and this panics saying so. To handle each
    /// [`JoinError`], loop on [`join_next`](JoinSet::join_next) instead.
    pub async fn join_all(mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.len());
        while let Some(r) = self.join_next().await {
            match r {
                Ok(v) => out.push(v),
                Err(e) if e.is_panic() => {
                    self.abort_all();
                    std::panic::resume_unwind(e.into_panic());
                }
                Err(e) => {
                    self.abort_all();
                    panic!(
                        "wq::task::JoinSet::join_all: a task did not finish ({e}); the others were aborted. Loop on join_next to handle each task's JoinError"
                    );
                }
            }
        }
        out
    }

    /// Aborts every task in the set ([`JoinHandle::abort`]); they stay in
    /// the set until joined, each giving a cancelled [`JoinError`] (or its
    /// output, if it had finished first).
    pub fn abort_all(&mut self) {
        for handle in self.tasks.iter() {
            handle.abort();
        }
    }

    /// Empties the set, leaving its tasks to run on, detached.
    pub fn detach_all(&mut self) {
        // Dropping a handle detaches its task.
        self.tasks.clear();
    }

    /// Aborts every task and waits until the set has given back every
    /// result (dropping them). A cancelled task's future may still be
    /// dropped after this returns, by a worker of its pool: as for
    /// [`JoinHandle::abort`], do not count on its resources being free.
    pub async fn shutdown(&mut self) {
        self.abort_all();
        while self.join_next().await.is_some() {}
    }
}

impl<T> Default for JoinSet<T> {
    fn default() -> JoinSet<T> {
        JoinSet::new()
    }
}

impl<T> Drop for JoinSet<T> {
    fn drop(&mut self) {
        self.abort_all();
    }
}

impl<T> fmt::Debug for JoinSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinSet").field("len", &self.len()).finish()
    }
}

impl<T> Extend<JoinHandle<T>> for JoinSet<T> {
    fn extend<I: IntoIterator<Item = JoinHandle<T>>>(&mut self, handles: I) {
        for h in handles {
            self.push(h);
        }
    }
}

impl<T> FromIterator<JoinHandle<T>> for JoinSet<T> {
    fn from_iter<I: IntoIterator<Item = JoinHandle<T>>>(handles: I) -> JoinSet<T> {
        let mut set = JoinSet::new();
        set.extend(handles);
        set
    }
}
