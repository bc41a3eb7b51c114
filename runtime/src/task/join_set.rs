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
//!
//! # The relay: no wake for a yield
//! `FuturesUnordered` answers `Pending` *and wakes its poller* once it has
//! polled each of its futures in one call (a yield, so one poll never
//! runs too long), and when futures woke themselves during the call: a
//! set's first poll after a spawn always did that, and its task was
//! scheduled and polled once for nothing (a handler that spawns one task
//! and joins it: three polls where two do). So the set polls it with its
//! own waker, the [`Relay`], never the caller's:
//! - during a call (`IN_CALL` set) a wake only marks `WOKEN`: the call
//!   then looks again (the futures it woke are in the queue by then), at
//!   most [`LOOKS`] times for a poll, after which the wake goes on to the
//!   caller (a real yield: a budget spent, futures that keep waking
//!   themselves);
//! - outside a call a wake goes to the last poller's waker (`poller`, an
//!   `AtomicWaker`).
//!
//! No lost wake: both marks are bits of one word, changed only by
//! read-modify-writes, so every wake falls before a call's start or after
//! it, and before its end or after it, in that word's one order. A call
//! starts by setting `IN_CALL` and clearing `WOKEN` in one swap (a wake
//! before it saw no call and woke the poller itself; the futures it woke
//! are in the queue for the call's first look), and ends by clearing both
//! in one swap, which reads the wakes that came after its last look. (As
//! two words, a call's start storing `in_call` then clearing `woken`, a
//! wake between the two saw a call, and its mark was cleared: a
//! `try_join_next` that gave one result lost the wake of another, and the
//! poller slept with it in the set; a loom model found it.)

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::stream::{FuturesUnordered, Stream};
use futures::task::AtomicWaker;

use super::{JoinError, JoinHandle};
use crate::loom::sync::atomic::{AtomicU8, Ordering};

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
/// Unlike tokio's, the `spawn` methods return nothing (no
/// [`AbortHandle`](crate::AbortHandle): one would cost every spawn an
/// allocation): a set aborts its tasks together
/// ([`abort_all`](JoinSet::abort_all), or its drop). For a task that may
/// need aborting on its own, spawn it, take its
/// [`abort_handle`](JoinHandle::abort_handle), and [`push`](JoinSet::push)
/// the handle.
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
    /// What `tasks` is polled with (module docs, "The relay"), and its
    /// waker.
    relay: Arc<Relay>,
    relay_waker: Waker,
    /// That poll gave no result (nothing ready, or the set empty), and its
    /// waker has not been woken for a task added since: `FuturesUnordered`
    /// polls a new handle (registering the set's wake with it) only at the
    /// next poll, and does not wake its poller when one is pushed.
    waiting: bool,
}

impl<T> JoinSet<T> {
    /// An empty set.
    pub fn new() -> JoinSet<T> {
        let relay = Arc::new(Relay::new());
        JoinSet {
            tasks: FuturesUnordered::new(),
            relay_waker: Waker::from(relay.clone()),
            relay,
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
        if std::mem::take(&mut self.waiting) {
            self.relay.poller.wake();
        }
    }

    /// Polls `tasks` through the relay ([`Relay::call`]).
    fn poll_relayed(
        &mut self,
        looks: usize,
        for_another: bool,
    ) -> Poll<Option<Result<T, JoinError>>> {
        let JoinSet {
            tasks,
            relay,
            relay_waker,
            ..
        } = self;
        relay.call(relay_waker, looks, for_another, |cx| {
            let polled = Pin::new(&mut *tasks).poll_next(cx);
            #[cfg(all(test, not(loom)))]
            tests::after_look();
            polled
        })
    }

    /// Polls for the result of the next task to finish: `Ready(None)` when
    /// the set is empty. Only the last waker given is woken (as for a
    /// `Stream`).
    pub fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, JoinError>>> {
        self.relay.poller.register(cx.waker());
        let polled = self.poll_relayed(LOOKS, false);
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
        // `Pending` after a look with no wake means nothing has finished;
        // a wake in flight is in the queue by the next look, so up to one
        // look per task, each ending in a wake at worst (a task finishing
        // on another thread during every look), after which the last
        // wake's result is the poller's to take. The poller is the last
        // `poll_join_next`'s: this call does not take its place. Without
        // the operation budget: a handle polled with the calling task's
        // budget spent answers `Pending` (and wakes itself), which would
        // read as nothing finished.
        let looks = self.len() + 1;
        match crate::coop::unconstrained(|| self.poll_relayed(looks, true)) {
            Poll::Ready(r) => r,
            Poll::Pending => None,
        }
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

/// Looks a `poll_join_next` takes while `FuturesUnordered` wakes it during
/// the call: the second looks at the futures the first woke (its yield after
/// polling each future once, a fresh set's first poll); a third would be a
/// real yield's (module docs, "The relay").
const LOOKS: usize = 2;

/// The waker `tasks` is polled with (module docs, "The relay").
struct Relay {
    /// [`IN_CALL`] and [`WOKEN`].
    state: AtomicU8,
    /// The last `poll_join_next`'s waker; taken by the wake that wakes it.
    poller: AtomicWaker,
    /// A call's start sets `IN_CALL` and clears `WOKEN` in two steps, as
    /// two words would (a negative loom model).
    #[cfg(all(test, loom))]
    split_start: bool,
}

/// A call polls `tasks` now.
const IN_CALL: u8 = 1;
/// Woken during the call (outside a call the bit means nothing).
const WOKEN: u8 = 2;

impl Relay {
    fn new() -> Relay {
        Relay {
            state: AtomicU8::new(0),
            poller: AtomicWaker::new(),
            #[cfg(all(test, loom))]
            split_start: false,
        }
    }

    /// One call: `look` (a poll of the set's futures with the context
    /// given, of `waker`, this relay's) up to `looks` times while wakes
    /// come during it; a wake that came during the last look, or races
    /// the call's end, goes on to the poller when the call answers
    /// `Pending`. If `for_another` (a `try_join_next`, whose result goes
    /// to its own caller while the poller waits) answers `Ready`, any wake
    /// during the call goes on: two tasks that finished during its looks
    /// woke only the relay, and the call gives one result; the other's was
    /// the poller's to take, and nothing else would wake it
    /// (`FuturesUnordered` holds no waker after a wake: later ends wake
    /// nobody either). A `poll_join_next` answered `Ready` polls again by
    /// itself.
    fn call<R>(
        &self,
        waker: &Waker,
        looks: usize,
        for_another: bool,
        mut look: impl FnMut(&mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        self.start();
        let mut cx = Context::from_waker(waker);
        let mut polled = Poll::Pending;
        let mut owed = false;
        let mut woken_in_call = false;
        for n in 1..=looks {
            polled = look(&mut cx);
            if polled.is_ready() || self.state.fetch_and(!WOKEN, Ordering::AcqRel) & WOKEN == 0 {
                break;
            }
            woken_in_call = true;
            owed = n == looks;
        }
        let late = self.state.swap(0, Ordering::AcqRel) & WOKEN != 0;
        let pass_on = if for_another && polled.is_ready() {
            // (A wake consumed before a `Pending` was a yield's, or its
            // future's result was looked at already.)
            woken_in_call | late
        } else {
            polled.is_pending() && (owed | late)
        };
        if pass_on {
            self.poller.wake();
        }
        polled
    }

    /// A call's start: `IN_CALL` set and `WOKEN` cleared at once.
    fn start(&self) {
        #[cfg(all(test, loom))]
        if self.split_start {
            self.state.fetch_or(IN_CALL, Ordering::AcqRel);
            self.state.fetch_and(!WOKEN, Ordering::AcqRel);
            return;
        }
        self.state.swap(IN_CALL, Ordering::AcqRel);
    }
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.fetch_or(WOKEN, Ordering::AcqRel) & IN_CALL == 0 {
            self.poller.wake();
        }
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

#[cfg(all(test, not(loom)))]
mod tests {
    use std::cell::RefCell;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake, Waker};
    use std::time::{Duration, Instant};

    use futures::channel::oneshot;

    use super::JoinSet;

    thread_local! {
        /// Run after each look of `poll_relayed` on this thread, once.
        static AFTER_LOOK: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    }

    pub(super) fn after_look() {
        if let Some(f) = AFTER_LOOK.with(|h| h.borrow_mut().take()) {
            f();
        }
    }

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Two tasks end during a `try_join_next`'s first look (both wakes
    /// reach only the relay), and the call gives one result: the poller
    /// waiting on the set is woken for the other's (it slept for good:
    /// the wakes were the call's, and `FuturesUnordered` had no waker
    /// left for anyone).
    #[test]
    fn a_try_join_next_passes_on_the_wake_of_the_result_it_leaves() {
        let rt = crate::Runtime::builder().build().unwrap();
        let _enter = rt.enter();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut set = JoinSet::new();
        let (go1, wait1) = oneshot::channel::<()>();
        let (go2, wait2) = oneshot::channel::<()>();
        set.spawn(async move { wait1.await.map(|()| 1) });
        set.spawn(async move { wait2.await.map(|()| 2) });
        assert!(
            set.poll_join_next(&mut Context::from_waker(&waker))
                .is_pending()
        );
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        AFTER_LOOK.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                go1.send(()).unwrap();
                go2.send(()).unwrap();
                // Both end on the runtime's workers meanwhile.
                std::thread::sleep(Duration::from_millis(200));
            }))
        });
        let got = set.try_join_next().expect("a task ended during the call");
        assert!(matches!(got, Ok(Ok(1 | 2))));
        let deadline = Instant::now() + Duration::from_secs(10);
        while count.0.load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "the poller was never woken for the result left in the set"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(set.try_join_next().is_some());
    }
}

/// The relay's protocol under loom (module docs, "The relay"): a call
/// racing the ends of the set's tasks never leaves the poller asleep with
/// a result in the set. The set's futures are a model of
/// `FuturesUnordered`'s part: a task's end queues it, then takes and
/// wakes the waker the set was last polled with; a look registers that
/// waker, then takes a queued end (each under a loom lock, as the ready
/// queue's and `AtomicWaker`'s own orders make them).
#[cfg(all(test, loom))]
mod loom_tests {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    use loom::sync::Mutex;
    use loom::sync::atomic::{AtomicBool, Ordering};

    use super::{LOOKS, Relay};

    /// `FuturesUnordered`'s part.
    #[derive(Default)]
    struct Set {
        /// Ends queued, not yet taken by a look.
        ended: Mutex<usize>,
        /// The waker of the set's last poll; a wake takes it.
        waker: Mutex<Option<Waker>>,
        /// The next look yields first (wakes itself, answers `Pending`), as
        /// `FuturesUnordered` does once it has polled each future.
        yields: AtomicBool,
    }

    impl Set {
        fn end(&self) {
            *self.ended.lock().unwrap() += 1;
            let waker = self.waker.lock().unwrap().take();
            if let Some(w) = waker {
                w.wake();
            }
        }

        fn look(&self, cx: &mut Context<'_>) -> Poll<()> {
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.yields.swap(false, Ordering::Relaxed) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut ended = self.ended.lock().unwrap();
            if *ended == 0 {
                return Poll::Pending;
            }
            *ended -= 1;
            Poll::Ready(())
        }

        fn left(&self) -> usize {
            *self.ended.lock().unwrap()
        }
    }

    /// The poller's waker: says it was woken.
    #[derive(Default)]
    struct Poller(AtomicBool);

    impl Wake for Poller {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A relay over a set, its waker, and the poller's (registered).
    fn parts(split_start: bool) -> (Arc<Relay>, Waker, Arc<Set>, Arc<Poller>) {
        let relay = Arc::new(Relay {
            split_start,
            ..Relay::new()
        });
        let relay_waker = Waker::from(relay.clone());
        let poller = Arc::new(Poller::default());
        relay.poller.register(&Waker::from(poller.clone()));
        (relay, relay_waker, Arc::new(Set::default()), poller)
    }

    /// A `poll_join_next` racing a task's end: it gives the result, or
    /// its poller is woken.
    fn a_call_racing_an_end(yields: bool) {
        loom::model(move || {
            let (relay, relay_waker, set, poller) = parts(false);
            set.yields.store(yields, Ordering::Relaxed);
            let s = set.clone();
            let task = loom::thread::spawn(move || s.end());
            let polled = relay.call(&relay_waker, LOOKS, false, |cx| set.look(cx));
            task.join().unwrap();
            assert!(
                polled.is_ready() || poller.0.load(Ordering::SeqCst),
                "the call answered Pending and the task's end never reached the poller"
            );
        });
    }

    #[test]
    fn loom_a_poll_join_next_racing_an_end_gives_it_or_wakes_its_poller() {
        a_call_racing_an_end(false);
    }

    /// As above, the call's first look a yield (a fresh set's first poll).
    #[test]
    fn loom_a_yielding_poll_join_next_racing_an_end_gives_it_or_wakes_its_poller() {
        a_call_racing_an_end(true);
    }

    /// A `try_join_next` (looks: one per task and one more) racing two
    /// tasks' ends while a `poll_join_next`'s poller waits: a result left
    /// in the set has woken the poller.
    fn a_try_join_next_racing_two_ends(split_start: bool) {
        loom::model(move || {
            let (relay, relay_waker, set, poller) = parts(split_start);
            // The poller's call: nothing yet, the set's waker registered.
            assert!(
                relay
                    .call(&relay_waker, LOOKS, false, |cx| set.look(cx))
                    .is_pending()
            );
            let ends: Vec<_> = (0..2)
                .map(|_| {
                    let s = set.clone();
                    loom::thread::spawn(move || s.end())
                })
                .collect();
            let _ = relay.call(&relay_waker, 3, true, |cx| set.look(cx));
            for t in ends {
                t.join().unwrap();
            }
            assert!(
                set.left() == 0 || poller.0.load(Ordering::SeqCst),
                "a result is left in the set and its poller sleeps"
            );
        });
    }

    #[test]
    fn loom_a_try_join_next_racing_two_ends_leaves_no_result_unwoken() {
        a_try_join_next_racing_two_ends(false);
    }

    /// The call's start in two steps (the relay's first form, two words):
    /// a wake between them saw a call, and its mark was cleared; the
    /// call gave one result and the other's wake was lost.
    #[test]
    #[should_panic(expected = "its poller sleeps")]
    fn loom_a_split_call_start_loses_a_wake() {
        a_try_join_next_racing_two_ends(true);
    }
}
