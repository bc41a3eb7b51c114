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
//!   thread-local whose `Drop` flushes a connection, say). A [`Thread`]
//!   knows when they have all run (its end mark, the thread's last
//!   thread-local destructor): those **ended** are joined in place at
//!   once; with a deadline, the others are joined on a thread of their
//!   own (`wq-join`), and what is not joined by the deadline (or 100 ms,
//!   if less is left: the threads are out already) is left to it (the
//!   shutdown returns false; a later wait waits for that joiner first).
//!   Without one, they are joined in place. [`Joins`] does it, for the
//!   blocking pool's threads too. Ended threads' handles are also dropped
//!   (their stacks freed) as other threads exit and start, until the
//!   threads are closed.
//!
//! - **Exit hook** (shutdown): a thread counting itself out then calls the
//!   hook set with [`Threads::on_exit`], outside the `live` lock: the
//!   shutdown, turning the I/O driver while it waits (a thread it waits
//!   for may wait on a wq timer or socket), has its turn cut short there
//!   rather than at its slice's end.
//!
//! Lock order: `handles`, then `live`. Both are leaves otherwise.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::loom::lock;

#[derive(Default)]
struct Live {
    count: usize,
    closed: bool,
}

/// Called by each thread after it counted itself out.
type ExitHook = Box<dyn Fn() + Send + Sync>;

/// A runtime thread (a worker, the rescuer, a blocking thread): its
/// handle, and whether it has **ended**: its thread-locals' destructors
/// have all run. `JoinHandle::is_finished` says finished once the thread's
/// closure returns, before those destructors (an application's, say, that
/// flushes a connection); a join then waits for them. An ended thread's
/// join is an OS thread's exit, microseconds.
pub(crate) struct Thread {
    join: JoinHandle<()>,
    ended: Arc<AtomicBool>,
}

impl Thread {
    /// Starts `f` on a thread made by `builder`.
    pub(crate) fn spawn(
        builder: std::thread::Builder,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<Thread> {
        let ended = Arc::new(AtomicBool::new(false));
        let mark = ended.clone();
        let join = builder.spawn(move || {
            // First, so that its destructor runs last (they run in the
            // reverse order of their registration, at a thread's first
            // use of each thread-local).
            let _ = END_MARK.try_with(|m| m.0.set(Some(mark)));
            f();
        })?;
        Ok(Thread { join, ended })
    }

    /// Whether the thread has ended (type docs).
    pub(crate) fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    fn id(&self) -> std::thread::ThreadId {
        self.join.thread().id()
    }

    fn join(self) {
        let _ = self.join.join();
    }
}

/// Sets its thread's end mark as the thread's last thread-local
/// destructor (`Thread`).
struct EndMark(Cell<Option<Arc<AtomicBool>>>);

impl Drop for EndMark {
    fn drop(&mut self) {
        if let Some(ended) = self.0.take() {
            ended.store(true, Ordering::Release);
        }
    }
}

std::thread_local! {
    static END_MARK: EndMark = const { EndMark(Cell::new(None)) };
}

#[derive(Default)]
struct Inner {
    /// The threads' handles. Those of threads that ended are dropped
    /// (detached: their stacks freed) as each thread exits and at each
    /// start; the shutdown joins the rest.
    handles: Mutex<Vec<Thread>>,
    live: Mutex<Live>,
    live_changed: Condvar,
    exit_hook: std::sync::OnceLock<ExitHook>,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct Threads {
    inner: Arc<Inner>,
    joins: Joins,
}

/// The least a join of threads that have counted themselves out is given,
/// however little is left of the deadline (the joining thread must be
/// scheduled first: 10 ms was short on two loaded CPUs).
const JOIN_GRACE: Duration = Duration::from_millis(100);

/// Joins threads by a deadline (module docs, "Join").
#[derive(Debug, Default)]
pub(crate) struct Joins {
    /// A joiner that did not finish by its deadline: done once it sends
    /// (or drops its sender).
    pending: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Joins {
    /// Joins `handles` but the calling thread's, and any joiner left
    /// pending by an earlier call: by `deadline` if one is given, else
    /// waiting as long as they take. Returns whether all were joined.
    pub(crate) fn join(&self, handles: Vec<Thread>, deadline: Option<Instant>) -> bool {
        /// Waits for the pending joiner, then joins the threads.
        fn join_all(pending: Option<mpsc::Receiver<()>>, handles: Vec<Thread>) {
            if let Some(p) = pending {
                let _ = p.recv();
            }
            for t in handles {
                t.join();
            }
        }
        let current = std::thread::current().id();
        // Ended threads are joined here at once (an OS thread's exit); the
        // others may be in a thread-local's destructor.
        let (ended, handles): (Vec<_>, Vec<_>) = handles
            .into_iter()
            .filter(|t| t.id() != current)
            .partition(Thread::has_ended);
        for t in ended {
            t.join();
        }
        let pending = lock(&self.pending).take();
        let Some(deadline) = deadline else {
            join_all(pending, handles);
            return true;
        };
        let done = if handles.is_empty() {
            match pending {
                Some(p) => p,
                None => return true,
            }
        } else {
            let (tx, rx) = mpsc::channel();
            // Shared with the joiner, so that a refused start leaves them here.
            let work = Arc::new(Mutex::new(Some((pending, handles))));
            let w = work.clone();
            let started = std::thread::Builder::new()
                .name("wq-join".into())
                .spawn(move || {
                    if let Some((pending, handles)) = lock(&*w).take() {
                        join_all(pending, handles);
                    }
                    let _ = tx.send(());
                });
            if started.is_err() {
                // No thread to spare (the process's limit): join here.
                if let Some((pending, handles)) = lock(&*work).take() {
                    join_all(pending, handles);
                }
                return true;
            }
            rx
        };
        // The threads joined here have left the runtime's count already:
        // their joins take an OS thread's exit, and a deadline spent on the
        // shutdown's drops (a slow `Drop`) must not fail them (it did:
        // false, with every thread gone). Only a thread-local's destructor
        // that blocks outlasts the grace.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(JOIN_GRACE);
        match done.recv_timeout(left) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => true,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                *lock(&self.pending) = Some(done);
                false
            }
        }
    }
}

/// Counts a live thread out when dropped (at the thread's very end).
struct Counted(Arc<Inner>);

impl Drop for Counted {
    fn drop(&mut self) {
        // Threads culled after a burst: their handles go as each exits,
        // not at the next start, which a pool culled to its idle two
        // may never make (14 exited workers' stacks stayed mapped). Only
        // ended ones (`Thread`: one still in a thread-local's destructor
        // is waited for by a shutdown); this one's own goes at the next
        // exit or start. Not once closed: the shutdown joins them. (The
        // lock order is `handles`, then `live`. A try: a start that fails
        // drops this guard with the closure while it holds `handles`, and
        // it prunes them itself.)
        if let Ok(mut handles) = self.0.handles.try_lock()
            && !lock(&self.0.live).closed
        {
            handles.retain(|t| !t.has_ended());
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
        // Culled workers' handles: drop (detach) the ended ones.
        handles.retain(|t| !t.has_ended());
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

    /// Refuses every later spawn (shutdown, before `wait`).
    pub(crate) fn close(&self) {
        lock(&self.inner.live).closed = true;
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
        self.joins.join(handles, join_by)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Threads;
    use std::time::{Duration, Instant};

    /// Threads that exit have their handles dropped (their stacks freed)
    /// as a later one exits, not only at the next start, which a pool
    /// culled to its idle two may never make; and not once closed (the
    /// shutdown joins them, thread-locals' destructors included).
    #[test]
    fn exited_threads_are_let_go_by_a_later_exit_unless_closed() {
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
                    .iter()
                    .filter(|h| !h.has_ended())
                    .count()
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
            if closed {
                assert_eq!(
                    handles(),
                    6,
                    "closed: every handle is left to the shutdown's joins"
                );
            } else {
                assert!(handles() <= 1, "{} handles left", handles());
            }
            assert!(threads.wait(None, 0, None));
        }
    }
}

#[cfg(all(test, not(loom)))]
mod ended_tests {
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
    /// it (its handle said finished, and a later exit dropped it).
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
        assert!(threads.wait(None, 0, None));
    }
}
