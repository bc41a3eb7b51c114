//! The blocking pool: threads for closures that block (file I/O, DNS,
//! CPU-heavy calls, C libraries), so they never hold a worker.
//!
//! A job is an `async-task` task whose future runs the closure once (its
//! panic caught, so it becomes the handle's `JoinError::is_panic()`) and
//! whose schedule function pushes it here: it has wq's ordinary
//! [`JoinHandle`](crate::JoinHandle), and dropping a queued job cancels it.
//!
//! # Thread accounting (all under `state`'s lock)
//! - `threads`: started and not exited (including ones being started);
//!   `starting`: of those, the ones whose start has not returned (their
//!   handle not yet kept for the shutdown's join).
//! - `sleepers`: idle threads, most recently idle last, each with a
//!   `woken` flag set (under the lock) by whoever takes it off the stack.
//!
//! 1. **Spawn**: push the job (FIFO). If a thread is idle, take the most
//!    recently idle one off `sleepers`, mark it woken and unpark it after
//!    the unlock. Else, below `max_blocking_threads`, reserve a thread
//!    (`threads += 1`) and start it after the unlock; at the limit the job
//!    waits in the queue for the next free thread.
//! 2. **Run**: a thread pops the oldest job, runs it without the lock,
//!    and looks again. With none, it goes on `sleepers` and parks for
//!    `blocking_keep_alive`; it wakes to work only when marked woken (a
//!    park may return early: it parks again).
//! 3. **Cull**: a thread whose keep-alive ran out unwoken leaves
//!    `sleepers`, and exits (`threads -= 1`) if the queue is empty. Waking
//!    the most recently idle thread first (a stack, not a condvar's FIFO)
//!    lets a trickle of jobs keep one thread busy while the others age
//!    out: woken in turn, none would ever idle for the whole keep-alive.
//! 4. A thread that the OS refuses to start is un-reserved, and the pool
//!    marked `refused`; its job stays queued. Since a refusal (until a
//!    thread finds the queue empty), below the limit, jobs queued beyond
//!    the threads coming for them (reserved and not yet arrived:
//!    `coming`; woken off the stack and not yet back: `waking`) are
//!    **stranded** (reported once on stderr):
//!    the threads that run may be waiting for them (a job that spawned
//!    one and waits for its handle), and a later start for a later job
//!    covers only that one. So the rescuer is poked and tries a thread
//!    every `MAYDAY_INTERVAL` after the last refusal while they stay
//!    stranded (`rescuer`'s module docs); a spawn tries too.
//! 5. **Abort** of a job whose closure has not started (`JoinHandle::
//!    abort`; `task::JobControl`): after its cancel, its handle takes it
//!    out of the queue (found by its cell) and drops it, closure and
//!    captures, outside the lock -- a queued job's cancel does not
//!    schedule it, and waiting for a thread to reach it kept what it
//!    owned (a sender a running job waits on: a deadlock at the thread
//!    limit) and let aborted jobs pile up behind busy threads. A job a
//!    thread left unrun for its abort is scheduled by the cancel: `push`
//!    drops it, not queues it.
//!
//! # Shutdown ([`BlockingPool::close`], [`BlockingPool::shutdown`])
//! **Close**, as soon as the runtime closes (before it waits for its
//! workers, which may take as long as their longest poll): `shutdown` is
//! set, the queue taken and dropped outside the lock (each job is
//! cancelled: its handle gives a cancelled `JoinError`), idle threads are
//! woken and exit, and a thread that finishes its job starts no other.
//! A worker blocked on a queued job's handle (`block_in_place`) is woken
//! by its cancellation rather than waited for. **Shutdown**, last: running
//! jobs, and starts in progress, are
//! waited for (`exited`) until the deadline, then the exited threads are
//! joined (a start that returned after the handles were taken would leave
//! its thread unjoined). A job still running
//! after the deadline keeps its thread, which exits when the job returns.
//! Spawns after the shutdown are refused at once (`is_refused`, also
//! `is_cancelled`), a spawn that met the pool closed after passing the
//! runtime's check too (`task::refuse_job`).

use super::threads::Thread;
use std::collections::VecDeque;
use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::Scheduler;
use crate::task::JoinHandle;

type Job = crate::task::Runnable;

/// A queued job and the pool's view of it.
type Queued = (Job, Arc<JobCell>);

/// The pool's view of a job (`task::JobControl`): its word, and the
/// runtime to tell when its handle aborts it.
#[derive(Debug)]
struct JobCell {
    word: AtomicU8,
    runtime: Weak<Scheduler>,
}

impl crate::task::JobControl for JobCell {
    fn word(&self) -> &AtomicU8 {
        &self.word
    }

    fn aborted(&self) {
        if let Some(shared) = self.runtime.upgrade() {
            shared.services.blocking.remove_aborted(self);
        }
    }
}

/// Default of `Builder::max_blocking_threads`.
pub(crate) const DEFAULT_MAX_THREADS: usize = 512;
/// Default of `Builder::blocking_keep_alive`.
pub(crate) const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// See the module docs.
#[derive(Default)]
pub(crate) struct BlockingPool {
    state: Mutex<State>,
    exited: Condvar,
    /// Test hook: thread starts to refuse (as the OS would at its limit).
    #[cfg(test)]
    pub(crate) refuse_starts: std::sync::atomic::AtomicUsize,
}

/// An idle blocking thread on the stack (module docs).
struct Sleeper {
    /// Taken off the stack to run a job (or to exit at shutdown); written
    /// and read under the pool's lock.
    woken: AtomicBool,
    thread: std::thread::Thread,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    threads: usize,
    /// Of `threads`, those whose start has not returned yet (their handle
    /// not in `handles`): a shutdown takes the handles only once none is.
    starting: usize,
    sleepers: Vec<Arc<Sleeper>>,
    shutdown: bool,
    handles: Vec<Thread>,
    start_failures: u64,
    /// Jobs queued so far.
    jobs: u64,
    /// After a refused start: the rescuer's retry waits until then
    /// (`MAYDAY_INTERVAL` later).
    retry_at: Option<Instant>,
    /// A start was refused since a thread last found the queue empty
    /// (step 4).
    refused: bool,
    /// Threads taken off `sleepers` to run a job (or to exit at the
    /// shutdown) that have not taken the lock again since.
    waking: usize,
    /// Threads reserved whose thread has not taken the lock yet (or whose
    /// start failed): unlike `starting`, which ends when the start
    /// returns, a started thread may have taken a job and blocked before
    /// then, and must not count as coming for another (step 4).
    coming: usize,
    /// Stranded jobs were reported (once per pool).
    stranded_said: bool,
    /// A shutdown gave up on the threads at its deadline: a handle kept
    /// from now on is detached ([`BlockingPool::started`]).
    gave_up: bool,
}

impl State {
    /// Step 4: queued jobs wait for a thread that no one is starting,
    /// below the limit `max`.
    fn stranded(&self, max: usize) -> bool {
        !self.shutdown
            && self.refused
            && self.queue.len() > self.coming + self.waking
            && self.threads < max
    }
}

thread_local! {
    /// The pool whose thread this is (its address), to not wait for
    /// oneself at shutdown.
    static POOL_OF_THREAD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = crate::loom::lock(&self.state);
        f.debug_struct("BlockingPool")
            .field("threads", &s.threads)
            .field("idle", &s.sleepers.len())
            .field("queued", &s.queue.len())
            .finish()
    }
}

impl BlockingPool {
    /// Runs `f` on a blocking thread of `shared`'s runtime.
    pub(crate) fn spawn<F, T>(shared: &Arc<Scheduler>, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if shared.is_closed() {
            return JoinHandle::refused(crate::task::RUNTIME_SHUT_DOWN);
        }
        let cell = Arc::new(JobCell {
            word: AtomicU8::new(0),
            runtime: Arc::downgrade(shared),
        });
        let mine = cell.clone();
        let (job, handle) =
            JoinHandle::blocking(f, cell, move |job| match mine.runtime.upgrade() {
                Some(shared) => shared.services.blocking.push(&shared, job, &mine),
                None => {
                    // The runtime is gone: refused, as after its shutdown.
                    crate::task::refuse_job(&mine.word);
                    drop(job);
                }
            });
        job.schedule();
        handle
    }

    /// Step 1 of the module docs.
    fn push(&self, shared: &Arc<Scheduler>, job: Job, cell: &Arc<JobCell>) {
        if crate::task::job_aborted(&cell.word) {
            // The cancel of a job its thread left unrun for its abort
            // (step 5): dropped here, not queued for a thread (which might
            // have to be started) to drop.
            drop(job);
            return;
        }
        let mut s = crate::loom::lock(&self.state);
        if s.shutdown {
            drop(s);
            // A spawn that raced the shutdown past its check: refused, as
            // one after it (an aborted job's cancel stays cancelled).
            crate::task::refuse_job(&cell.word);
            drop(job);
            return;
        }
        s.queue.push_back((job, cell.clone()));
        s.jobs += 1;
        if let Some(sleeper) = s.sleepers.pop() {
            sleeper.woken.store(true, Ordering::Relaxed);
            s.waking += 1;
            drop(s);
            sleeper.thread.unpark();
            return;
        }
        if s.threads >= shared.config.max_blocking_threads {
            return; // queued until a thread is free
        }
        s.threads += 1;
        s.starting += 1;
        s.coming += 1;
        drop(s);
        self.start_thread(shared, false);
    }

    /// Starts a reserved thread. A refusal that strands jobs pokes the
    /// rescuer unless `retrying` (the rescuer's own retry: it tries again
    /// after its interval, not at once).
    fn start_thread(&self, shared: &Arc<Scheduler>, retrying: bool) {
        let mut builder =
            std::thread::Builder::new().name(format!("{}-blocking", shared.config.thread_name));
        if let Some(bytes) = shared.config.thread_stack_size {
            builder = builder.stack_size(bytes);
        }
        let runtime = shared.clone();
        #[cfg(test)]
        if self
            .refuse_starts
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            let err = std::io::Error::from_raw_os_error(libc::EAGAIN);
            if self.start_failed(&err, shared.config.max_blocking_threads) && !retrying {
                shared.rescuer.poke();
            }
            return;
        }
        match Thread::spawn(builder, move || run(runtime)) {
            Ok(handle) => self.started(handle),
            Err(err) => {
                if self.start_failed(&err, shared.config.max_blocking_threads) && !retrying {
                    shared.rescuer.poke();
                }
            }
        }
    }

    /// A thread's start returned: its handle is kept to be joined, or
    /// detached (dropped, outside the lock) if a shutdown gave up on the
    /// threads meanwhile: it took the handles kept so far, and nothing
    /// looks at them again (its thread has exited or is about to: the
    /// shutdown closed the pool first), so a handle kept now stayed, its
    /// stack mapped, for the runtime's life.
    fn started(&self, handle: Thread) {
        let mut s = crate::loom::lock(&self.state);
        s.handles.retain_mut(|h| !h.try_join());
        let detached = if s.gave_up {
            Some(handle)
        } else {
            s.handles.push(handle);
            None
        };
        // Registered: a shutdown waiting for the starts to be over before
        // it takes the handles may go on.
        s.starting -= 1;
        drop(s);
        drop(detached);
        self.exited.notify_all();
    }

    /// Step 5: takes `cell`'s job out of the queue, if it is there, and
    /// drops it (its closure and what it captured) outside the lock.
    fn remove_aborted(&self, cell: &JobCell) {
        let removed = {
            let mut s = crate::loom::lock(&self.state);
            let at =
                super::position_from_ends(&s.queue, |(_, c)| std::ptr::eq(Arc::as_ptr(c), cell));
            let removed = at.and_then(|at| s.queue.remove(at));
            super::trim(&mut s.queue);
            removed
        };
        drop(removed);
    }

    /// Its figures now, for the metrics; `max_threads` is the runtime's
    /// limit.
    pub(crate) fn stats(&self, max_threads: usize) -> crate::metrics::BlockingStats {
        let s = crate::loom::lock(&self.state);
        crate::metrics::BlockingStats {
            threads: s.threads,
            idle: s.sleepers.len(),
            queued: s.queue.len(),
            max_threads,
            jobs: s.jobs,
            start_failures: s.start_failures,
        }
    }

    /// Whether queued jobs wait for a thread no one is starting (step 4);
    /// `max` is the runtime's limit.
    pub(crate) fn is_stranded(&self, max: usize) -> bool {
        crate::loom::lock(&self.state).stranded(max)
    }

    /// Step 4's retry, by the rescuer: a thread for stranded jobs.
    pub(crate) fn retry_stranded(&self, shared: &Arc<Scheduler>) {
        let mut s = crate::loom::lock(&self.state);
        if s.queue.is_empty() {
            s.refused = false;
        }
        if !s.stranded(shared.config.max_blocking_threads) {
            return;
        }
        // Paced: the rescuer wakes for maydays and watchdog ticks (every
        // 5 ms while tasks run), and a failing start costs a clone().
        if s.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        s.threads += 1;
        s.starting += 1;
        s.coming += 1;
        drop(s);
        self.start_thread(shared, true);
    }

    /// Step 4: the thread reserved for a start the OS refused is given
    /// back. A shutdown may be waiting for it, as for one that exited.
    /// Returns whether jobs are left with no thread coming (stranded: the
    /// caller pokes the rescuer, which retries); `max` is the limit.
    fn start_failed(&self, err: &std::io::Error, max: usize) -> bool {
        let mut s = crate::loom::lock(&self.state);
        s.threads -= 1;
        s.starting -= 1;
        s.coming -= 1;
        s.start_failures += 1;
        s.refused = true;
        s.retry_at = Some(crate::clock::saturating_add(
            Instant::now(),
            super::MAYDAY_INTERVAL,
        ));
        let stranded = s.stranded(max);
        let first = stranded && !std::mem::replace(&mut s.stranded_said, true);
        drop(s);
        self.exited.notify_all();
        if first {
            let _ = writeln!(
                std::io::stderr(),
                "wq: could not start a blocking-pool thread: {err}; queued spawn_blocking jobs wait until one can be started (the runtime retries every 100 ms); check the process's thread limit (`ulimit -u`) and free memory"
            );
        }
        stranded
    }

    /// The first half of the module docs' shutdown (idempotent): no job
    /// starts from now on. Queued jobs are cancelled, idle threads woken
    /// to exit.
    pub(crate) fn close(&self) {
        let (queued, sleepers) = {
            let mut s = crate::loom::lock(&self.state);
            s.shutdown = true;
            for sleeper in &s.sleepers {
                sleeper.woken.store(true, Ordering::Relaxed);
            }
            s.waking += s.sleepers.len();
            (
                std::mem::take(&mut s.queue),
                std::mem::take(&mut s.sleepers),
            )
        };
        for sleeper in sleepers {
            sleeper.thread.unpark();
        }
        drop(queued); // cancels them, outside the lock
    }

    /// The module docs' shutdown ([`BlockingPool::close`], then the wait):
    /// returns whether every thread exited by `deadline` (`None`: wait for
    /// them all).
    pub(crate) fn shutdown(&self, deadline: Option<Instant>) -> bool {
        self.close();
        let me = usize::from(POOL_OF_THREAD.with(|p| p.get()) == self as *const _ as usize);
        let mut s = crate::loom::lock(&self.state);
        while s.threads > me || s.starting > 0 {
            s = match deadline {
                None => self.exited.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        // Given up on: detached (`threads`, "Join"; the
                        // last to exit stayed joinable otherwise), and so
                        // is a start still in progress (`started`).
                        s.gave_up = true;
                        let handles = std::mem::take(&mut s.handles);
                        drop(s);
                        drop(handles);
                        return false;
                    }
                    self.exited
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        let handles = std::mem::take(&mut s.handles);
        drop(s);
        // Their thread-locals' destructors run after the count
        // (`threads`, "Join").
        super::threads::join_all(handles, super::threads::join_deadline(deadline))
    }
}

/// A blocking thread: steps 2 and 3 of the module docs.
fn run(runtime: Arc<Scheduler>) {
    // Started by whoever spawned the job, often a worker bound to its pod:
    // not held to those CPUs.
    runtime.bind_to_every_cpu();
    // Nor at its scheduling (a high-priority worker's, a niced or
    // real-time user thread's): the process's.
    runtime.normal_priority();
    let shared = runtime.clone();
    let pool = &shared.services.blocking;
    POOL_OF_THREAD.with(|p| p.set(pool as *const _ as usize));
    let keep_alive = shared.config.blocking_keep_alive;
    let me = Arc::new(Sleeper {
        woken: AtomicBool::new(false),
        thread: std::thread::current(),
    });
    let _context = super::context::enter(runtime);
    let _hooks = super::ThreadHooks::start(&shared.config);
    let mut s = crate::loom::lock(&pool.state);
    // Arrived: no longer a thread coming for the queue (step 4).
    s.coming -= 1;
    loop {
        if let Some((job, _)) = s.queue.pop_front() {
            super::trim(&mut s.queue);
            drop(s);
            // The job's future catches the closure's panic, and a panic in
            // dropping a cancelled job's closure or its output is caught
            // where async-task drops them (`task::join::Guarded`: there, a
            // panic would abort the process). This catch is a last guard
            // for the thread.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run()));
            s = crate::loom::lock(&pool.state);
            continue;
        }
        // Found the queue empty: what a refusal left queued has been run
        // (step 4).
        s.refused = false;
        if s.shutdown {
            break;
        }
        me.woken.store(false, Ordering::Relaxed);
        s.sleepers.push(me.clone());
        // `None`: a keep-alive too long to add to the clock, forever.
        let deadline = Instant::now().checked_add(keep_alive);
        let culled = loop {
            drop(s);
            match deadline {
                Some(d) => std::thread::park_timeout(d.saturating_duration_since(Instant::now())),
                None => std::thread::park(),
            }
            s = crate::loom::lock(&pool.state);
            if me.woken.load(Ordering::Relaxed) {
                // Taken off the stack for a job (or the shutdown): back.
                s.waking -= 1;
                break false;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let at = s
                    .sleepers
                    .iter()
                    .position(|x| Arc::ptr_eq(x, &me))
                    .expect("an unwoken sleeper is on the stack");
                s.sleepers.remove(at);
                break s.queue.is_empty();
            }
            // Returned early (a park may): park again.
        };
        if culled {
            break;
        }
    }
    s.threads -= 1;
    // Threads that have gone (`threads::Thread::try_join`: joined without
    // waiting, their stacks freed) as each thread exits, not only at the
    // next start, which a trickle served by one thread never makes (this
    // one is joined at the next exit or start).
    s.handles.retain_mut(|h| !h.try_join());
    drop(s);
    pool.exited.notify_all();
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A pool with one thread reserved and its start in progress, and a
    /// shutdown (on a thread of its own, its result on the receiver) that
    /// has set `shutdown` by the time this returns.
    fn shutting_down_during_a_start() -> (Arc<BlockingPool>, std::sync::mpsc::Receiver<bool>) {
        let pool = Arc::new(BlockingPool::default());
        {
            let mut s = crate::loom::lock(&pool.state);
            s.threads = 1;
            s.starting = 1;
            s.coming = 1;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let p = pool.clone();
        std::thread::spawn(move || tx.send(p.shutdown(None)).unwrap());
        while !crate::loom::lock(&pool.state).shutdown {
            std::thread::yield_now();
        }
        (pool, rx)
    }

    /// A burst of queued jobs gives its memory back as the queue empties
    /// (a million queued jobs kept their 16 MiB for the runtime's life).
    #[test]
    fn the_job_queue_gives_memory_back_as_it_empties() {
        let rt = crate::Runtime::builder()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let held = rt.spawn_blocking(move || {
            let _ = rx.recv();
        });
        let queued: Vec<_> = (0..100_000).map(|_| rt.spawn_blocking(|| ())).collect();
        let cap = || {
            crate::loom::lock(&rt.handle().scheduler.services.blocking.state)
                .queue
                .capacity()
        };
        assert!(cap() >= 100_000);
        drop(tx);
        rt.block_on(async {
            held.await.unwrap();
            for h in queued {
                h.await.unwrap();
            }
        });
        assert!(cap() <= 1024, "{} kept", cap());
    }

    /// A thread a shutdown gave up on (its deadline passed) is detached:
    /// its handle, which no exit or start would join, stayed with its
    /// stack mapped for the runtime's life.
    #[test]
    fn a_thread_a_shutdown_gave_up_on_is_detached() {
        let rt = crate::Runtime::builder().build().unwrap();
        let h = rt.handle().clone();
        let (started_tx, started) = std::sync::mpsc::channel();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let _job = rt.spawn_blocking(move || {
            started_tx.send(()).unwrap();
            let _ = held.recv();
        });
        started.recv().unwrap();
        assert!(!rt.shutdown_timeout(std::time::Duration::ZERO));
        drop(release);
        let state = || {
            let s = crate::loom::lock(&h.scheduler.services.blocking.state);
            (s.threads, s.handles.len())
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while state().0 > 0 {
            assert!(std::time::Instant::now() < deadline, "{:?}", state());
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // Its own handle, which no exit or start would join: detached by
        // the shutdown that gave up on it.
        assert_eq!(state().1, 0);
    }

    /// Threads culled after a burst have their handles dropped (so their
    /// stacks are freed) as threads exit, not only at the next start,
    /// which a trickle served by one thread never makes: 64 culled
    /// threads' stacks stayed mapped.
    #[test]
    fn culled_threads_are_let_go_without_a_later_start() {
        let rt = crate::Runtime::builder()
            .blocking_keep_alive(std::time::Duration::from_millis(100))
            .build()
            .unwrap();
        // 64 jobs held together: 64 threads (none idle to take a second).
        let gate = Arc::new(std::sync::Barrier::new(65));
        let burst: Vec<_> = (0..64)
            .map(|_| {
                let gate = gate.clone();
                rt.spawn_blocking(move || {
                    gate.wait();
                })
            })
            .collect();
        gate.wait();
        rt.block_on(async {
            for h in burst {
                h.await.unwrap();
            }
        });
        let state = || {
            let s = crate::loom::lock(&rt.handle().scheduler.services.blocking.state);
            (s.threads, s.handles.len())
        };
        // A trickle, served by the thread that idled last, while the
        // others are culled.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while state().0 > 1 {
            assert!(std::time::Instant::now() < deadline, "{:?}", state());
            rt.block_on(rt.spawn_blocking(|| ())).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        // The exits joined the others (the last one's own is joined by the
        // next exit or start; a few may still have been on their way out
        // of the OS when the last exit looked: not 64).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while state().1 > 8 {
            assert!(std::time::Instant::now() < deadline, "{:?}", state());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// A thread whose start has not returned yet may run and exit before
    /// its starter keeps its handle: the shutdown waits for the start to
    /// return, so that the handle it takes includes that thread's.
    #[test]
    fn a_shutdown_waits_for_a_start_in_progress_to_keep_its_handle() {
        let (pool, rx) = shutting_down_during_a_start();
        // The new thread ran, saw the shutdown and exited...
        let thread = Thread::spawn(std::thread::Builder::new(), || ()).unwrap();
        crate::loom::lock(&pool.state).threads -= 1;
        pool.exited.notify_all();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            rx.try_recv().is_err(),
            "the shutdown went on before the start returned"
        );
        // ...and only now does its starter keep the handle.
        {
            let mut s = crate::loom::lock(&pool.state);
            s.handles.push(thread);
            s.starting -= 1;
        }
        pool.exited.notify_all();
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(true));
        assert!(
            crate::loom::lock(&pool.state).handles.is_empty(),
            "the late handle was not taken to be joined"
        );
    }

    /// A start that returns after a shutdown gave up on the threads (its
    /// deadline passed while the start was in progress) detaches its
    /// thread: the shutdown took the handles kept before, and nothing
    /// looks at them again.
    #[test]
    fn a_start_returning_after_a_shutdown_gave_up_detaches_its_thread() {
        let pool = Arc::new(BlockingPool::default());
        {
            let mut s = crate::loom::lock(&pool.state);
            s.threads = 1;
            s.starting = 1;
            s.coming = 1;
        }
        assert!(!pool.shutdown(Some(Instant::now())), "gave up at once");
        // The new thread ran, saw the shutdown and exited...
        let thread = Thread::spawn(std::thread::Builder::new(), || ()).unwrap();
        crate::loom::lock(&pool.state).threads -= 1;
        // ...and only now does its start return.
        pool.started(thread);
        let s = crate::loom::lock(&pool.state);
        assert!(s.handles.is_empty(), "a handle nobody will join or detach");
        assert_eq!(s.starting, 0);
    }

    /// A shutdown waiting for the threads counts the reserved one whose
    /// start then fails: it must be woken, or `Runtime`'s drop hangs.
    #[test]
    fn a_refused_start_wakes_a_waiting_shutdown() {
        let (pool, rx) = shutting_down_during_a_start();
        // Waiting on `exited` by now, as a rule (if not, it sees no thread).
        std::thread::sleep(Duration::from_millis(50));
        let _ = pool.start_failed(&std::io::Error::from_raw_os_error(libc::EAGAIN), 1);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(30)),
            Ok(true),
            "the shutdown was never woken"
        );
    }
}
