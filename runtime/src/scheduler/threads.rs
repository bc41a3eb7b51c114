//! The runtime's threads (workers and the rescuer): started, counted live,
//! and joined at shutdown.
//!
//! # Protocol
//! - **Spawn.** The `handles` lock is held across the OS spawn and the
//!   push of its handle; `live` is counted, and `closed` checked, under the
//!   `live` lock before the spawn. A thread counts itself out (the `live`
//!   lock, then a notify) as its very last act, through a guard.
//! - **Close and wait** (shutdown): `close` sets `closed` under the `live`
//!   lock; `wait` waits for `live` to reach the number of the caller's own
//!   threads (0, or 1 when a runtime thread drops its runtime), then takes
//!   `handles` and joins them. A spawn racing the shutdown therefore either
//!   saw `closed` and refused, or was counted live before `close`: then
//!   `wait` waits for it, and since the spawner held `handles` until its
//!   handle was pushed, `wait`'s take of `handles` finds it.
//!
//! - **Join.** A thread counted out has ended the runtime's work, but its
//!   thread-locals' destructors run after that (an application's
//!   thread-local whose `Drop` flushes a connection, say; a C library's
//!   per-thread destructor). With a deadline, each thread is joined by it
//!   plus 100 ms (the threads are out already; one grace for a whole
//!   shutdown, `join_deadline`), and one not gone by then is detached,
//!   left to end on its own (the shutdown returns false); without one,
//!   joined as long as it takes
//!   ([`join_all`], for the blocking pool's threads too). Threads that
//!   have gone are also joined as other threads exit and start, without
//!   waiting (`Thread::try_join`: their stacks freed). A shutdown whose
//!   deadline passes before every thread counted itself out detaches them
//!   all (the last to exit would otherwise stay joinable, as no thread
//!   joins itself, until the runtime's last handle went).
//!
//! - **Exit hook** (shutdown): a thread counting itself out then calls the
//!   hook set with [`Threads::on_exit`], outside the `live` lock: the
//!   shutdown, turning the I/O driver while it waits (a thread it waits
//!   for may wait on a wq timer or socket), has its turn cut short there
//!   rather than at its slice's end.
//!
//! Lock order: `handles`, then `live`. Both are leaves otherwise.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::loom::lock;

#[derive(Default)]
struct Live {
    count: usize,
    closed: bool,
    /// A wait left a thread detached, not gone by its deadline: every
    /// later wait says so too (the shutdown's last look took no handle
    /// left, and said every thread had exited).
    left_one: bool,
}

/// Called by each thread after it counted itself out.
type ExitHook = Box<dyn Fn() + Send + Sync>;

/// A runtime thread (a worker, the rescuer, a blocking thread): its
/// handle, joined without waiting (when the thread has gone: pruned) or
/// by a deadline (the shutdown). `JoinHandle::is_finished` says finished
/// once the thread's closure returns, before its thread-locals'
/// destructors (an application's, say, that flushes a connection) and a C
/// library's per-thread ones (`pthread_key_create`), which a join waits
/// for: a thread is gone when the OS says so, by a join that does not
/// wait (`pthread_tryjoin_np`), tried again in naps until a deadline.
pub(crate) struct Thread {
    /// `None` once joined.
    join: Option<JoinHandle<()>>,
}

impl Thread {
    /// Starts `f` on a thread made by `builder`.
    pub(crate) fn spawn(
        builder: std::thread::Builder,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Thread> {
        Ok(Thread {
            join: Some(builder.spawn(f)?),
        })
    }

    fn id(&self) -> Option<std::thread::ThreadId> {
        self.join.as_ref().map(|j| j.thread().id())
    }

    /// Joins the thread if it has gone, without waiting; whether it had.
    pub(crate) fn try_join(&mut self) -> bool {
        use std::os::unix::thread::JoinHandleExt;
        let Some(j) = &self.join else {
            return true;
        };
        // SAFETY: the handle's own thread, not joined or detached yet
        // (`join` is `Some`); on success it is joined, and the handle is
        // consumed below without detaching it.
        if unsafe { libc::pthread_tryjoin_np(j.as_pthread_t(), std::ptr::null_mut()) } != 0 {
            return false;
        }
        if let Some(j) = self.join.take() {
            let _joined = j.into_pthread_t();
        }
        true
    }

    /// Joins the thread, waiting until `deadline` at most (for ever if
    /// `None`); left detached, to end on its own, if it has not gone by
    /// then. Whether it was joined. The wait is by the monotonic clock, in
    /// naps between joins that do not wait (a timed pthread join reads the
    /// wall clock, which a step would stretch or cut short).
    fn join_by(mut self, deadline: Option<Instant>) -> bool {
        let Some(deadline) = deadline else {
            if let Some(j) = self.join.take() {
                let _ = j.join();
            }
            return true;
        };
        let mut nap = Duration::from_micros(50);
        loop {
            if self.try_join() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                // Dropped: detached.
                drop(self.join.take());
                return false;
            }
            std::thread::sleep(nap.min(deadline - now));
            nap = (nap * 2).min(Duration::from_millis(10));
        }
    }
}

#[derive(Default)]
struct Inner {
    /// The threads' handles. Those of threads that have gone are joined
    /// (their stacks freed) as each thread exits and at each start; the
    /// shutdown joins the rest.
    handles: Mutex<Vec<Thread>>,
    live: Mutex<Live>,
    live_changed: Condvar,
    exit_hook: std::sync::OnceLock<ExitHook>,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct Threads {
    inner: Arc<Inner>,
}

/// What joins of threads that have counted themselves out are given past
/// a shutdown's deadline (their OS threads' exits): the deadline of every
/// join of one shutdown ([`join_deadline`]).
const JOIN_GRACE: Duration = Duration::from_millis(100);

/// The deadline of a shutdown's joins: its own plus [`JOIN_GRACE`], once
/// for all of them (the workers', the blocking threads'), so that the
/// shutdown ends at most a grace past its deadline. None (no deadline)
/// for one within the grace of the last `Instant` (`shutdown_timeout`
/// with such a timeout panicked here, its pools closed and its driver
/// never shut down): as good as for ever.
pub(crate) fn join_deadline(deadline: Option<Instant>) -> Option<Instant> {
    deadline.and_then(|d| d.checked_add(JOIN_GRACE))
}

/// Joins `handles` but the calling thread's: by `deadline` if one is
/// given ([`join_deadline`]), those not gone by then left detached; else
/// waiting as long as they take. Returns whether all were joined.
pub(crate) fn join_all(handles: Vec<Thread>, deadline: Option<Instant>) -> bool {
    let current = Some(std::thread::current().id());
    let mut all = true;
    for t in handles {
        if t.id() != current {
            all &= t.join_by(deadline);
        }
    }
    all
}

/// Counts a live thread out when dropped (at the thread's very end).
struct Counted(Arc<Inner>);

impl Drop for Counted {
    fn drop(&mut self) {
        // Threads culled after a burst are joined as others exit, not at
        // the next start, which a pool culled to its idle two may never
        // make (14 exited workers' stacks stayed mapped): those gone
        // (`Thread::try_join`: one still in a destructor is not), at any
        // time, the shutdown's included (a thread it left is joined by a
        // later exit; one it gave up waiting for is detached); this one is
        // joined at the next exit or start. (A
        // try: a start that fails drops this guard with the closure while
        // it holds `handles`, and it joins them itself.)
        if let Ok(mut handles) = self.0.handles.try_lock() {
            handles.retain_mut(|t| !t.try_join());
        }
        {
            let mut live = lock(&self.0.live);
            live.count -= 1;
            self.0.live_changed.notify_all();
        }
        if let Some(hook) = self.0.exit_hook.get() {
            hook();
        }
    }
}

impl Threads {
    /// Starts a thread named `name` running `f`; refused once closed.
    pub(crate) fn spawn(
        &self,
        name: String,
        stack_size: Option<usize>,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let mut handles = lock(&self.inner.handles);
        {
            let mut live = lock(&self.inner.live);
            if live.closed {
                return Err(std::io::Error::other("the runtime is shut down"));
            }
            live.count += 1;
        }
        let counted = Counted(self.inner.clone());
        let mut builder = std::thread::Builder::new().name(name);
        if let Some(bytes) = stack_size {
            builder = builder.stack_size(bytes);
        }
        // On failure the closure, and with it `counted`, is dropped: the
        // thread is counted out again.
        let handle = Thread::spawn(builder, move || {
            let _counted = counted;
            f();
        })?;
        // Culled workers' threads: join those gone.
        handles.retain_mut(|t| !t.try_join());
        handles.push(handle);
        Ok(())
    }

    /// Has every thread call `hook` once it has counted itself out (module
    /// docs); a hook set already stays.
    pub(crate) fn on_exit(&self, hook: ExitHook) {
        let _ = self.inner.exit_hook.set(hook);
    }

    /// Whether at most `own` threads are live now.
    pub(crate) fn at_most(&self, own: usize) -> bool {
        lock(&self.inner.live).count <= own
    }

    /// Handles not joined yet (tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn handles_held(&self) -> usize {
        lock(&self.inner.handles).len()
    }

    /// Refuses every later spawn (shutdown, before `wait`).
    pub(crate) fn close(&self) {
        lock(&self.inner.live).closed = true;
    }

    /// The shutdown gave up waiting for the threads still live (its
    /// deadline passed): their handles are dropped, detaching them, and
    /// every later [`Threads::wait`] says a thread was left. Kept, the last
    /// of them to exit stayed joinable (no thread joins itself, and no
    /// later exit or start came to join it), its stack mapped until the
    /// runtime's last handle went: one per runtime shut down with
    /// `Duration::ZERO`. (Not at a [`Threads::wait`]'s own timeout: the
    /// shutdown waits in slices, turning the driver between them.)
    pub(crate) fn give_up(&self) {
        let handles = std::mem::take(&mut *lock(&self.inner.handles));
        lock(&self.inner.live).left_one = true;
        drop(handles);
    }

    /// Waits up to `timeout` (forever if `None`) until at most `own`
    /// threads are live (the caller's own), then joins the others by
    /// `join_by` (module docs, "Join"). Returns whether they all exited in
    /// time.
    pub(crate) fn wait(
        &self,
        timeout: Option<Duration>,
        own: usize,
        join_by: Option<Instant>,
    ) -> bool {
        // A timeout past what `Instant` holds (`Duration::MAX`) is forever.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut live = lock(&self.inner.live);
        while live.count > own {
            live = match deadline {
                None => self
                    .inner
                    .live_changed
                    .wait(live)
                    .unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    self.inner
                        .live_changed
                        .wait_timeout(live, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        drop(live);
        let handles = std::mem::take(&mut *lock(&self.inner.handles));
        let joined = join_all(handles, join_by);
        let mut live = lock(&self.inner.live);
        live.left_one |= !joined;
        !live.left_one
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Threads;
    use std::time::{Duration, Instant};

    /// A shutdown deadline within the grace of the last `Instant`
    /// (`shutdown_timeout` with a timeout just short of what `Instant`
    /// holds) gives joins with no deadline, not an overflow's panic.
    #[test]
    fn a_deadline_near_the_end_of_instant_joins_without_one() {
        let (mut end, mut step) = (Instant::now(), Duration::MAX / 2);
        while step > Duration::from_nanos(1) {
            match end.checked_add(step) {
                Some(t) => end = t,
                None => step /= 2,
            }
        }
        let near = end - Duration::from_millis(50);
        assert_eq!(super::join_deadline(Some(near)), None);
        let now = Instant::now();
        assert_eq!(
            super::join_deadline(Some(now)),
            Some(now + super::JOIN_GRACE)
        );
        assert_eq!(super::join_deadline(None), None);
    }

    /// Threads that exit are joined (their stacks freed) as a later one
    /// exits, not only at the next start, which a pool culled to its idle
    /// two may never make; once closed too (a join that does not wait
    /// takes only threads that have gone).
    #[test]
    fn exited_threads_are_let_go_by_a_later_exit_closed_or_not() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        for closed in [false, true] {
            let threads = Threads::default();
            // Five that end first and one that ends later, all started
            // before any ends (a start drops finished handles itself).
            let (quick, late) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            let gate = |go: &Arc<AtomicBool>| {
                let go = go.clone();
                move || {
                    while !go.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            };
            threads.spawn("late".into(), None, gate(&late)).unwrap();
            for _ in 0..5 {
                threads.spawn("quick".into(), None, gate(&quick)).unwrap();
            }
            if closed {
                threads.close();
            }
            let handles = || crate::loom::lock(&threads.inner.handles).len();
            let live = || crate::loom::lock(&threads.inner.live).count;
            let deadline = Instant::now() + Duration::from_secs(20);
            quick.store(true, Ordering::Release);
            while live() > 1 {
                assert!(Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(1));
            }
            // Until the quick ones' closures have returned (they count
            // themselves out just before): only `late` is left unfinished
            // (the quick ones' exits may have let go of each other's).
            let unfinished = || {
                crate::loom::lock(&threads.inner.handles)
                    .iter_mut()
                    .map(|h| usize::from(!h.try_join()))
                    .sum::<usize>()
            };
            while unfinished() > 1 {
                assert!(Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(1));
            }
            late.store(true, Ordering::Release);
            while live() > 0 {
                assert!(Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(
                handles() <= 1,
                "closed {closed}: {} handles left",
                handles()
            );
            assert!(threads.wait(None, 0, None));
        }
    }
}

#[cfg(all(test, not(loom)))]
mod lingering_tests {
    use super::Threads;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    /// Blocks its thread's end in its destructor until `release` is set.
    struct Lingering(Arc<AtomicBool>);

    impl Drop for Lingering {
        fn drop(&mut self) {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !self.0.load(Ordering::Acquire) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    std::thread_local! {
        static LINGERING: std::cell::RefCell<Option<Lingering>> = const { std::cell::RefCell::new(None) };
    }

    /// A thread whose closure has returned but whose thread-local
    /// destructor still runs (culled while an application's destructor
    /// flushes) is not let go by a later exit: a shutdown after waits for
    /// it (its handle said finished, and a later exit dropped it), and says
    /// it is left if it has not gone by the deadline.
    #[test]
    fn a_thread_in_its_thread_locals_destructor_is_not_let_go() {
        let threads = Threads::default();
        let release = Arc::new(AtomicBool::new(false));
        let r = release.clone();
        threads
            .spawn("lingering".into(), None, move || {
                LINGERING.with(|l| *l.borrow_mut() = Some(Lingering(r)));
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while crate::loom::lock(&threads.inner.live).count > 0 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        // Its closure returned; a later thread starts and exits.
        std::thread::sleep(Duration::from_millis(20));
        threads.spawn("later".into(), None, || ()).unwrap();
        while crate::loom::lock(&threads.inner.live).count > 0 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        // The shutdown's wait: the lingering thread is still to be joined.
        threads.close();
        let by = Instant::now() + Duration::from_millis(200);
        assert!(
            !threads.wait(Some(Duration::ZERO), 0, Some(by)),
            "a thread in its thread-local's destructor counted as joined"
        );
        release.store(true, Ordering::Release);
        // Left detached by that wait: a later one says so too.
        assert!(!threads.wait(None, 0, None));
    }

    /// A shutdown that gives up waiting for a thread (a zero timeout)
    /// detaches it: no thread joins itself, and the last to exit stayed
    /// joinable, its stack mapped, while the runtime lived on in a handle.
    #[test]
    fn a_thread_a_shutdown_gave_up_on_is_detached() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let threads = Threads::default();
        let release = Arc::new(AtomicBool::new(false));
        let r = release.clone();
        threads
            .spawn("late".into(), None, move || {
                while !r.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
            .unwrap();
        threads.close();
        assert!(!threads.wait(Some(Duration::ZERO), 0, Some(Instant::now())));
        threads.give_up();
        release.store(true, Ordering::Release);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !threads.at_most(0) {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            crate::loom::lock(&threads.inner.handles).is_empty(),
            "a thread the shutdown gave up on is still to be joined"
        );
        assert!(!threads.wait(None, 0, None), "it was not joined");
    }
}
