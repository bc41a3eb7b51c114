//! What the current OS thread is to wq, in one place: its role (a worker of
//! a pool, the rescuer of a runtime, or neither), the pools it is draining,
//! and its ordinal. Two thread-locals hold it: the worker as a pointer
//! (`WORKER`, read on every local schedule), the rest in `THREAD`.
//!
//! - **worker**: set by a worker thread for as long as it serves its slot;
//!   the schedule function reads it to put a task woken on a worker of its
//!   home pool into that worker's LIFO slot (`super::worker`).
//! - **rescuer**: set by a runtime's rescuer thread; shutdown must not wait
//!   for itself, and `block_on` must not block it.
//! - **draining**: the pools whose queues this thread is dropping, innermost
//!   last (`super::closing`).
//! - **running queue**: while a task of a named workqueue is polled, that
//!   queue (a queue being drained accepts work only from its own tasks), and
//!   the concurrency-management wakeups its blocking caused, for its stats.
//! - **roaming**: set while the thread is a worker of a pool whose threads
//!   may run outside its pod (`Pool::run_cpus`), so that placement looks
//!   at its pod only on such a thread (one thread-local read elsewhere).
//! - **ordinal**: a small number for the thread; it spreads striped
//!   counters and registry shards, and gives a thread outside the runtime
//!   a sticky virtual CPU on a topology that is not this machine's. A
//!   worker's comes from its slot in its pool, offset by the pool's id,
//!   counted down from the top (`worker_ordinal`); another thread's is
//!   handed out process-wide in order of first use, counting up from
//!   zero. So a pool's workers spread over a pool's 16 stripes one each
//!   (the registry's; process-wide numbers, interleaved with every other
//!   thread's, did not, and nor did the runtime's worker numbers, which
//!   pools starting workers in turn interleave: 4 stripes for a pool of
//!   16 beside 3 others), a queue's items run by several pools' workers
//!   spread over its stripes as evenly, and the first producers and the
//!   first workers take different stripes. Only spreading matters: a
//!   stripe's count is summed, and what a task took from a stripe it
//!   gives back there (its stripe is recorded).
//!
//! Runtimes are told apart by the address of their scheduler (an opaque
//! `*const ()`, compared, never dereferenced).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::worker::Local;
use super::{Pool, PoolAttrs};

struct ThreadState {
    ordinal: Cell<usize>,
    roaming: Cell<bool>,
    rescuer_of: Cell<*const ()>,
    draining: RefCell<Vec<*const Pool>>,
    running_queue: Cell<*const ()>,
    cm_wakeups: Cell<u32>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            ordinal: Cell::new(usize::MAX),
            roaming: Cell::new(false),
            rescuer_of: Cell::new(std::ptr::null()),
            draining: RefCell::new(Vec::new()),
            running_queue: Cell::new(std::ptr::null()),
            cm_wakeups: Cell::new(0),
        }
    };
}

thread_local! {
    /// The worker this thread is (null: none), set by [`as_worker`] for
    /// the length of the worker's run, whose caller holds the `Local`'s
    /// handle all that time. Apart from `THREAD`, as a pointer: a
    /// constant thread-local with nothing to drop is read with no state
    /// check and no `RefCell` count, and a closure given the worker runs
    /// outside any thread-local's closure (a `with` that moved it in
    /// through an `Option` and its result out cost a deferred end's 48
    /// bytes twice each way, on a named item's path between its last act
    /// and its worker's next look). The scoped thread-local of `scoped-tls`
    /// and tokio's runtime context, on one pointer.
    static WORKER: Cell<*const Local> = const { Cell::new(std::ptr::null()) };
}

static NEXT_ORDINAL: AtomicUsize = AtomicUsize::new(0);

/// This thread's ordinal (0 while the thread is being torn down).
#[inline]
pub(crate) fn thread_ordinal() -> usize {
    THREAD
        .try_with(|t| {
            let o = t.ordinal.get();
            if o != usize::MAX {
                return o;
            }
            // Only uniqueness matters.
            let o = NEXT_ORDINAL.fetch_add(1, Ordering::Relaxed);
            t.ordinal.set(o);
            o
        })
        .unwrap_or(0)
}

/// The ordinal of the worker in slot `slot` of pool `pool_id`, whose
/// maximum is `width` workers: from the top down (below `usize::MAX`,
/// "unset"), so modulo any power of two the workers take the stripes from
/// the last down while other threads take them from the first up; a
/// pool's slots take consecutive stripes, the pools' ranges one after the
/// other (pools of one width fill the stripes evenly).
fn worker_ordinal(pool_id: usize, width: usize, slot: usize) -> usize {
    let n = pool_id.wrapping_mul(width).wrapping_add(slot);
    usize::MAX - 1 - n % (usize::MAX / 2)
}

/// Runs `f` with this thread as the worker `local`: this thread is what
/// it was before (no worker, for a worker thread's run) when `f` returns
/// or unwinds. (The ordinal stays: only its spreading matters.)
pub(crate) fn as_worker<R>(local: &Rc<Local>, f: impl FnOnce() -> R) -> R {
    /// Puts the thread back as it was, `f` returned or unwinding.
    struct Reset {
        worker: *const Local,
        roaming: bool,
    }
    impl Drop for Reset {
        fn drop(&mut self) {
            WORKER.with(|w| w.set(self.worker));
            let _ = THREAD.try_with(|t| t.roaming.set(self.roaming));
        }
    }
    let roaming = THREAD.with(|t| {
        let pool = &local.pool;
        t.ordinal.set(worker_ordinal(
            pool.id,
            pool.idle.config().max_workers,
            local.slot,
        ));
        t.roaming.replace(pool.run_cpus.len() != pool.cpus.len())
    });
    let _reset = Reset {
        worker: WORKER.with(|w| w.replace(Rc::as_ptr(local))),
        roaming,
    };
    f()
}

/// Calls `f` with this thread's worker, if it is one.
#[inline]
pub(crate) fn with_worker<R>(f: impl FnOnce(Option<&Local>) -> R) -> R {
    let worker = WORKER.with(Cell::get);
    // SAFETY: a pointer set by `as_worker` on this thread, which is still
    // running its `f` (it resets the pointer as that returns or unwinds);
    // its caller's handle keeps the `Local` alive meanwhile. The
    // reference lives for `f` alone (`f` takes it for any lifetime, so
    // it cannot keep it).
    f(unsafe { worker.as_ref() })
}

/// This thread's worker, if it is one (a clone of its handle).
pub(crate) fn worker() -> Option<Rc<Local>> {
    let worker = WORKER.with(Cell::get);
    (!worker.is_null()).then(|| {
        // SAFETY: as in `with_worker`: the pointer is `Rc::as_ptr` of the
        // handle `as_worker`'s caller holds, alive while it is set, so a
        // count may be added to it.
        unsafe {
            Rc::increment_strong_count(worker);
            Rc::from_raw(worker)
        }
    })
}

/// Whether this thread is a worker of the runtime whose scheduler is at
/// `host`.
pub(crate) fn on_worker_of(host: *const ()) -> bool {
    with_worker(|w| w.is_some_and(|l| l.pool.host_ptr() == host))
}

/// Whether this thread is a worker of any wq runtime.
pub(crate) fn on_worker_thread() -> bool {
    with_worker(|w| w.is_some())
}

/// This thread's number among its runtime's live workers, if it is a
/// worker (of any runtime): it picks the thread's timer shard
/// (`time::sleep`).
pub(crate) fn worker_number() -> Option<usize> {
    with_worker(|w| w.map(|l| l.number))
}

/// The virtual CPU of this worker thread, if it is one of the runtime
/// whose scheduler is at `host` (placement on a topology that is not this
/// machine's).
pub(crate) fn virtual_cpu_of(host: *const ()) -> Option<usize> {
    with_worker(|w| {
        w.filter(|l| l.pool.host_ptr() == host)
            .map(|l| l.virtual_cpu)
    })
}

/// The CPU a `cache_shard` spawn into a pool with `attrs` on the runtime
/// at `host` is placed by, for this thread, which runs on `cpu` of a live
/// topology: `cpu`, unless the thread is a worker of that runtime whose
/// pool's threads may run outside its pod, it runs outside it now, and
/// its pool has `attrs`; then the CPU of its pod it stands for, so that
/// its spawns, like those of a worker at home, go to its own pool (its
/// LIFO slot and deque) and not to the pool of the pod it visits. A spawn
/// into pools of other attributes (a strict queue's, a high-priority
/// one's) is not its pool's: it goes by where the thread runs, as any
/// other thread's (it went to the home shard's, whose strict workers
/// never run where it was submitted).
#[inline]
pub(crate) fn placement_cpu(host: *const (), cpu: usize, attrs: PoolAttrs) -> usize {
    if !THREAD.try_with(|t| t.roaming.get()).unwrap_or(false) {
        return cpu;
    }
    with_worker(|w| {
        w.filter(|l| l.pool.host_ptr() == host && l.pool.attrs == attrs)
            .map_or(cpu, |l| home_cpu(&l.pool.cpus, cpu, l.virtual_cpu))
    })
}

/// `cpu` if it is one of the pod's (`pod`, sorted), else `virtual_cpu`.
pub(crate) fn home_cpu(pod: &[usize], cpu: usize, virtual_cpu: usize) -> usize {
    if pod.binary_search(&cpu).is_ok() {
        cpu
    } else {
        virtual_cpu
    }
}

/// Makes this thread the rescuer of the runtime whose scheduler is at
/// `host`.
pub(crate) fn set_rescuer_of(host: *const ()) {
    THREAD.with(|t| t.rescuer_of.set(host));
}

/// Whether this thread is the rescuer of the runtime at `host`.
pub(crate) fn on_rescuer_of(host: *const ()) -> bool {
    THREAD
        .try_with(|t| std::ptr::eq(t.rescuer_of.get(), host))
        .unwrap_or(false)
}

/// Whether this thread is the rescuer of any runtime.
pub(crate) fn on_rescuer_thread() -> bool {
    THREAD
        .try_with(|t| !t.rescuer_of.get().is_null())
        .unwrap_or(false)
}

/// Whether this thread is draining `pool` already.
pub(crate) fn draining(pool: &Pool) -> bool {
    THREAD
        .try_with(|t| t.draining.borrow().contains(&std::ptr::from_ref(pool)))
        .unwrap_or(false)
}

/// Runs `f` with `pool` on this thread's draining stack.
pub(crate) fn while_draining<R>(pool: &Pool, f: impl FnOnce() -> R) -> R {
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            let _ = THREAD.try_with(|t| t.draining.borrow_mut().pop());
        }
    }
    // During the thread-locals' own teardown (a wake from another
    // thread-local's destructor) the stack is gone: drain without it (the
    // nesting guard is only needed for chains of awaiters).
    let pushed = THREAD
        .try_with(|t| t.draining.borrow_mut().push(std::ptr::from_ref(pool)))
        .is_ok();
    let _pop = pushed.then_some(Pop);
    f()
}

/// Runs `f` (the drop of a future of an item of the workqueue `queue`)
/// with `queue` as this thread's running queue: [`with_running_queue`]
/// without its count of wakeups. During the thread-locals' teardown, `f`
/// runs unmarked.
pub(crate) fn with_queue_mark<R>(queue: *const (), f: impl FnOnce() -> R) -> R {
    struct Restore(*const ());
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = THREAD.try_with(|t| t.running_queue.set(self.0));
        }
    }
    let _restore = THREAD
        .try_with(|t| t.running_queue.replace(queue))
        .ok()
        .map(Restore);
    f()
}

/// A poll of a named workqueue's task, as [`with_running_queue`] ran it.
pub(crate) struct QueuePoll<R> {
    /// What the poll returned.
    pub(crate) result: R,
    /// The concurrency-management wakeups its blocking caused.
    pub(crate) cm_wakeups: u32,
    /// The scheduling clock as it began: on a worker, the worker's own
    /// read (at the end of its previous poll or its return from idle, as
    /// `poll_time` counts), so that no read of its own comes between the
    /// worker taking the task and the user's code; elsewhere a read here.
    pub(crate) started: u64,
    /// Whether this thread is a worker.
    pub(crate) on_worker: bool,
}

/// Runs `f` (a poll of a task of the workqueue `queue`) with `queue` as
/// this thread's running queue: see [`QueuePoll`]. Two accesses to
/// `THREAD`, one before `f` and one after (and one more only if `f`
/// unwinds), and a read of the worker's pointer.
pub(crate) fn with_running_queue<R>(queue: *const (), f: impl FnOnce() -> R) -> QueuePoll<R> {
    /// Restores the running queue if `f` unwinds.
    struct Restore(*const ());
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = THREAD.try_with(|t| t.running_queue.set(self.0));
        }
    }
    let worker_now = with_worker(|w| w.map(Local::clock));
    let prev = THREAD.with(|t| {
        t.cm_wakeups.set(0);
        t.running_queue.replace(queue)
    });
    let started = worker_now.unwrap_or_else(crate::clock::now);
    let restore = Restore(prev);
    let result = f();
    std::mem::forget(restore);
    let cm_wakeups = THREAD
        .try_with(|t| {
            t.running_queue.set(prev);
            t.cm_wakeups.replace(0)
        })
        .unwrap_or(0);
    QueuePoll {
        result,
        cm_wakeups,
        started,
        on_worker: worker_now.is_some(),
    }
}

/// The workqueue whose task this thread is polling (null: none).
pub(crate) fn running_queue() -> *const () {
    THREAD
        .try_with(|t| t.running_queue.get())
        .unwrap_or(std::ptr::null())
}

/// Blocking on this thread woke or started another worker.
pub(crate) fn count_cm_wakeup() {
    let _ = THREAD.try_with(|t| t.cm_wakeups.set(t.cm_wakeups.get() + 1));
}

/// Small numbers for threads: the lowest one not held (a runtime's
/// workers, `Host::worker_numbers`; the other threads that arm timers,
/// `time::sleep`).
pub(crate) struct Numbers {
    /// Numbers `0..handed` were handed out at some time.
    handed: usize,
    /// Those given back since.
    free: std::collections::BinaryHeap<std::cmp::Reverse<usize>>,
}

impl Numbers {
    pub(crate) const fn new() -> Numbers {
        Numbers {
            handed: 0,
            free: std::collections::BinaryHeap::new(),
        }
    }

    pub(crate) fn take(&mut self) -> usize {
        match self.free.pop() {
            Some(std::cmp::Reverse(n)) => n,
            None => {
                self.handed += 1;
                self.handed - 1
            }
        }
    }

    pub(crate) fn give(&mut self, n: usize) {
        self.free.push(std::cmp::Reverse(n));
    }
}

/// Test helpers that drive a runtime (they use the public API, a layer
/// above this one: test modules may).
#[cfg(all(test, not(loom)))]
pub(crate) mod two_workers {
    /// Runs `f` on two workers of one pool at once and returns both results:
    /// a `system` pool of 2 workers of a synthetic 8-CPU machine, the default
    /// scope's (so the I/O driver's worker, if a timer makes one, is one of
    /// them); the first task holds its worker until the second has run.
    pub(crate) fn on_two_workers<T: Send + 'static>(f: fn() -> T) -> (T, T) {
        use crate::{Runtime, Scope, Topology};
        use std::sync::mpsc::channel;
        use std::time::Duration;
        let rt = Runtime::builder()
            .topology(Topology::synthetic("core:8 pu:1").unwrap())
            .default_scope(Scope::System)
            .max_workers_per_pool(2)
            .build()
            .unwrap();
        let (result_of, results) = channel::<T>();
        let (release, released) = channel::<()>();
        let first = {
            let result_of = result_of.clone();
            rt.spawn_on(Scope::System, async move {
                result_of.send(f()).unwrap();
                let _ = released.recv_timeout(Duration::from_secs(10));
            })
        };
        let a = results.recv_timeout(Duration::from_secs(10)).unwrap();
        let second = rt.spawn_on(Scope::System, async move {
            result_of.send(f()).unwrap();
        });
        let b = results
            .recv_timeout(Duration::from_secs(10))
            .expect("a second worker ran the second task");
        release.send(()).unwrap();
        rt.block_on(first).unwrap();
        rt.block_on(second).unwrap();
        (a, b)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::two_workers::on_two_workers;
    use super::{thread_ordinal, worker_ordinal};

    /// A pool's workers take one stripe each (of 16, as the registry's),
    /// whatever the order pools started workers in; the workers of 8 pools
    /// of 8 share each stripe 4 ways, evenly (runtime-wide worker numbers,
    /// given out as 4 pools started workers in turn, put a pool of 16 on
    /// 4 stripes).
    #[test]
    fn a_pools_workers_take_a_stripe_each() {
        for pool in 0..8 {
            let mut stripes: Vec<usize> = (0..16)
                .map(|slot| worker_ordinal(pool, 16, slot) % 16)
                .collect();
            stripes.sort_unstable();
            stripes.dedup();
            assert_eq!(stripes.len(), 16, "pool {pool}");
        }
        let mut per_stripe = [0; 16];
        for pool in 0..8 {
            for slot in 0..8 {
                per_stripe[worker_ordinal(pool, 8, slot) % 16] += 1;
            }
        }
        assert_eq!(per_stripe, [4; 16]);
    }

    /// A runtime's workers take the last stripes (their pool's slots, from
    /// the top), however many ordinals other threads took before them;
    /// with process-wide ordinals they took 20 and up here.
    #[test]
    fn a_runtimes_workers_stripe_by_their_slots() {
        for _ in 0..20 {
            std::thread::spawn(|| {
                let _ = thread_ordinal();
            })
            .join()
            .unwrap();
        }
        let (a, b) = on_two_workers(thread_ordinal);
        let mut seen = [a % 16, b % 16];
        seen.sort_unstable();
        assert_eq!(
            seen,
            [13, 14],
            "the first pool's two workers, slots 0 and 1"
        );
    }
}
