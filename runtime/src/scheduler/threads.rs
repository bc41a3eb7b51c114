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
//!   thread-local whose `Drop` flushes a connection, say): with a
//!   deadline, the joins happen on a thread of their own (`wq-join`), and
//!   what is not joined by the deadline (or 100 ms, if less is left: the
//!   threads are out already) is left to it (the shutdown returns false;
//!   a later wait waits for that joiner first). Without
//!   one, they are joined in place. [`Joins`] does it, for the blocking
//!   pool's threads too.
//!
//! - **Exit hook** (shutdown): a thread counting itself out then calls the
//!   hook set with [`Threads::on_exit`], outside the `live` lock: the
//!   shutdown, turning the I/O driver while it waits (a thread it waits
//!   for may wait on a wq timer or socket), has its turn cut short there
//!   rather than at its slice's end.
//!
//! Lock order: `handles`, then `live`. Both are leaves otherwise.

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

#[derive(Default)]
struct Inner {
    /// The threads' handles. Those of threads that exited are dropped
    /// (detached: their stacks freed) as each thread exits and at each
    /// start; the shutdown joins the rest.
    handles: Mutex<Vec<JoinHandle<()>>>,
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
    pub(crate) fn join(&self, handles: Vec<JoinHandle<()>>, deadline: Option<Instant>) -> bool {
        /// Waits for the pending joiner, then joins the threads.
        fn join_all(pending: Option<mpsc::Receiver<()>>, handles: Vec<JoinHandle<()>>) {
            if let Some(p) = pending {
                let _ = p.recv();
            }
            for t in handles {
                let _ = t.join();
            }
        }
        let current = std::thread::current().id();
        let handles: Vec<_> = handles
            .into_iter()
            .filter(|t| t.thread().id() != current)
            .collect();
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
        // may never make (14 exited workers' stacks stayed mapped). This
        // one's own is not finished yet: the next exit or start drops it.
        // Not once closed: a handle says finished when its closure has
        // returned, before the thread's thread-locals' destructors run,
        // which the shutdown waits for (module docs, "Join"). (The lock
        // order is `handles`, then `live`. A try: a start that fails
        // drops this guard with the closure while it holds `handles`,
        // and it prunes them itself.)
        if let Ok(mut handles) = self.0.handles.try_lock()
            && !lock(&self.0.live).closed
        {
            handles.retain(|t| !t.is_finished());
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
        let handle = builder.spawn(move || {
            let _counted = counted;
            f();
        })?;
        // Culled workers' handles: drop (detach) the finished ones.
        handles.retain(|t| !t.is_finished());
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
                    .filter(|h| !h.is_finished())
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
