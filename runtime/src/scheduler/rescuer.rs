//! The rescuer: one thread per runtime that keeps a pool's queued work
//! moving when no worker thread can be started for it -- the kernel's
//! mayday timer and `rescuer_thread()`.
//!
//! A pool starts its workers on demand (a kick that reserves a slot starts
//! the thread). If the OS refuses (`EAGAIN` at the process's thread limit,
//! `ENOMEM`) and the pool has no worker, nothing would ever look at its
//! queue again until the next push: the work would be stranded. The
//! rescuer is started with the runtime, before any such failure can happen,
//! so it does not depend on being able to create a thread when it is
//! needed.
//!
//! # Protocol
//! - **Back-off** (in the pool, `pool::idle`). A refused start makes kicks
//!   try no new start for [`MAYDAY_INTERVAL`](super::MAYDAY_INTERVAL): a burst of pushes to a pool
//!   at the thread limit costs no failing `clone()` each.
//! - **Mayday.** A refused or backed-off start that leaves the pool with no
//!   worker serving its queues (none at all, or only workers in polls the
//!   watchdog granted a replacement for: a hog, or a poll blocked without
//!   `block_in_place`, which the kernel would not count as running
//!   either) sends the pool to the runtime's [`MaydayList`] and wakes
//!   the rescuer (the kernel's `send_mayday`). A pool with a serving
//!   worker sends none: that worker looks at the queue before it idles. A pool is
//!   *marked* while it is on the list; marks are read and written only
//!   under the list lock, so a mayday either finds the pool still listed
//!   (and the rescuer will take it, and visit it, after this mayday) or
//!   lists it. `loom_a_mayday_racing_the_rescuers_take_is_not_lost` checks
//!   it, and fails with the marks cleared outside the lock.
//! - **Rescue.** The rescuer takes the whole list (clearing the marks) and
//!   visits each pool once: if it is open and has queued work (in its
//!   injector, or in the deque of a worker blocked in `block_in_place`:
//!   the tasks its last poll spawned or woke, which no other thread would
//!   run while every slot is blocked), kick it (a
//!   thread start, paced by the back-off); if the pool now has a worker,
//!   done; else run up to [`RESCUE_BATCH`] of its tasks here (checking
//!   `closed` before each), bound to the pool's pod on a live topology
//!   (not its `run_cpus`: the rescuer is no worker, and its spawns are
//!   placed by the CPU it runs on), and
//!   if work is left, send the pool a mayday again: it is visited after the
//!   other listed pools, so one busy pool cannot starve another. Rescued
//!   tasks' scheduling delays go to the pool's `rescued` counters, merged
//!   into the pool's metrics.
//! - **The driver.** A rescued task may wait on the I/O driver (a timer,
//!   a socket), which only a parking thread turns: while a pool whose
//!   tasks this thread ran, or that was sent here with no work queued and
//!   the driver unattended (an attend's kick that found every slot
//!   blocked), has tasks alive and no worker serving (and, with no work
//!   queued, no thread is parked in the driver: that one turns it, and
//!   attends when it leaves for long), the
//!   rescuer turns the driver without waiting, a [`RESCUED_DRIVER_TICK`]
//!   (a timer's tick) after a rescue or a turn that woke a task, then
//!   twice as long after each whole wait whose turn woke none (up to the
//!   mayday interval; a wait a mayday or a poke ends early does not
//!   count), with or without the watchdog (which turns it every tick of
//!   its own, and looks at its pace, not this one's: the wait ends at its
//!   next scan at the latest).
//! - **Stranded blocking jobs.** A blocking-pool thread the OS refuses,
//!   with no blocking thread left, strands the queued `spawn_blocking`
//!   jobs (`blocking`'s step 4): the pool pokes the rescuer, which tries a
//!   thread for them every [`MAYDAY_INTERVAL`](super::MAYDAY_INTERVAL) after the last refusal while
//!   they stay stranded (it does not run them itself: a blocking job may block
//!   for good, and the rescuer must stay free for the pools).
//! - **Shutdown** (step 2 of `crate::scheduler`) closes the list and wakes
//!   the rescuer, which exits; it is counted live and joined like a worker.
//!
//! The list lock is a leaf: no other lock is taken under it and no task
//! runs under it.
//!
//! The rescuer is not a worker: a task it runs that wakes itself is pushed
//! on its home pool's injector and kicks, as from any thread.
//!
//! Between maydays the thread is the runtime's CPU-hog watchdog
//! ([`super::watchdog`]): it waits for maydays at most one watchdog tick.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::watchdog::Watchdog;
use super::{Scheduler, context};
use crate::clock;
use crate::loom::lock;
use crate::loom::sync::{Condvar, Mutex};
use crate::pool::{Pool, current};

/// Tasks run between two checks of the pool (and retries).
const RESCUE_BATCH: usize = 64;

/// How soon the rescuer turns the I/O driver again, while pools it ran
/// tasks of have tasks alive and no worker, after a rescue or a turn that
/// woke a task: a timer's tick. Each whole wait whose turn woke none doubles it,
/// up to [`MAYDAY_INTERVAL`](super::MAYDAY_INTERVAL): rescued tasks that
/// wait for good (a channel that never sends) cost ten turns a second,
/// not a thousand, and a timer armed since the last rescue fires within
/// twice its time.
const RESCUED_DRIVER_TICK: std::time::Duration = std::time::Duration::from_millis(1);

struct List<T> {
    items: Vec<(usize, T)>,
    /// `marked[key]`: the item with `key` is on the list.
    marked: Vec<bool>,
    closed: bool,
    /// [`MaydayList::poke`]d since the last take.
    poked: bool,
}

/// The mayday list: items (pools) by key (pool id), each on it at most once.
pub(crate) struct MaydayList<T> {
    list: Mutex<List<T>>,
    wakeup: Condvar,
    /// Model tests only: leave the marks to be cleared after the visit
    /// ([`MaydayList::unmark`]) instead of by `take` (the bug the protocol
    /// avoids).
    #[cfg(loom)]
    unmark_after_visit: bool,
}

impl<T> Default for MaydayList<T> {
    fn default() -> Self {
        MaydayList {
            list: Mutex::new(List {
                items: Vec::new(),
                marked: Vec::new(),
                closed: false,
                poked: false,
            }),
            wakeup: Condvar::new(),
            #[cfg(loom)]
            unmark_after_visit: false,
        }
    }
}

impl<T> MaydayList<T> {
    /// Lists `item` under `key` unless it is listed already (or the list is
    /// closed); wakes the rescuer if it was listed here.
    pub(crate) fn mayday(&self, key: usize, item: impl FnOnce() -> T) {
        let mut list = lock(&self.list);
        if list.closed {
            return;
        }
        if list.marked.len() <= key {
            list.marked.resize(key + 1, false);
        }
        if list.marked[key] {
            return;
        }
        list.marked[key] = true;
        list.items.push((key, item()));
        drop(list);
        self.wakeup.notify_one();
    }

    /// Wakes the rescuer with nothing listed: a take returns (perhaps
    /// empty), for the rescuer's other duties (stranded blocking jobs).
    pub(crate) fn poke(&self) {
        lock(&self.list).poked = true;
        self.wakeup.notify_one();
    }

    /// Closes the list: the rescuer exits; later maydays are ignored.
    pub(crate) fn close(&self) {
        let items = {
            let mut list = lock(&self.list);
            list.closed = true;
            std::mem::take(&mut list.items)
        };
        drop(items);
        self.wakeup.notify_one();
    }

    /// Everything listed, waiting for something; `None` once closed. The
    /// items' marks are cleared: a mayday from now on lists them again.
    #[cfg(all(test, loom))]
    pub(crate) fn take(&self) -> Option<Vec<T>> {
        self.take_timeout(None)
    }

    /// As `take`, but waits at most `timeout` (if given): then the list may
    /// be empty.
    pub(crate) fn take_timeout(&self, timeout: Option<std::time::Duration>) -> Option<Vec<T>> {
        let mut list = lock(&self.list);
        let mut waited = false;
        loop {
            if list.closed {
                return None;
            }
            if !list.items.is_empty() || waited || std::mem::take(&mut list.poked) {
                let items = std::mem::take(&mut list.items);
                #[cfg(loom)]
                let clear = !self.unmark_after_visit;
                #[cfg(not(loom))]
                let clear = true;
                if clear {
                    for (key, _) in &items {
                        list.marked[*key] = false;
                    }
                }
                return Some(items.into_iter().map(|(_, t)| t).collect());
            }
            list = match timeout {
                None => self.wakeup.wait(list).unwrap_or_else(|e| e.into_inner()),
                Some(t) => {
                    waited = true;
                    self.wakeup
                        .wait_timeout(list, t)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }
}

/// The runtime's mayday list of pools.
pub(crate) type Rescuer = MaydayList<Arc<Pool>>;

impl Rescuer {
    /// Asks the rescuer to look after `pool` (no-op if it already will).
    pub(crate) fn mayday_pool(&self, pool: &Arc<Pool>) {
        self.mayday(pool.id, || pool.clone());
    }
}

/// The rescuer thread's body; it is also the CPU-hog watchdog
/// ([`super::watchdog`]) between maydays.
pub(crate) fn run(scheduler: &Arc<Scheduler>) {
    // A panic out of this loop (a bug in wq: the tasks it runs are caught
    // as a worker's are) would end rescues, the watchdog and the driver's
    // turns for workerless pools unseen: the process aborts instead.
    let _abort = crate::pool::worker::AbortOnUnwind {
        what: "the rescuer thread",
        pool: usize::MAX,
    };
    // Started by the thread that built the runtime, which may be a worker
    // of another runtime, bound to one CPU.
    scheduler.bind_to_every_cpu();
    scheduler.normal_priority();
    current::set_rescuer_of(scheduler.id());
    let _context = context::enter(scheduler.clone());
    let _hooks = super::ThreadHooks::start(&scheduler.config);
    let mut watchdog = Watchdog::new(scheduler.config.cpu_hog_threshold);
    // Pools this thread ran tasks of that have no worker since, while
    // they have tasks alive (the flag: none were at the last look; gone at
    // the second such look, a sum over stripes can read 0 for an instant):
    // those tasks may wait on the driver, which no worker parks in.
    let mut rescued: Vec<(Arc<Pool>, bool)> = Vec::new();
    let mut rescued_tick = RESCUED_DRIVER_TICK;
    // When this loop last turned the driver: a turn that woke nothing
    // doubles the wait only if the wait before it ran its whole tick (a
    // mayday or a poke ends it early, and ran no batch).
    let mut turned_at = std::time::Instant::now();
    // The watchdog looks at its own pace, however often this loop runs.
    let mut scanned = std::time::Instant::now();
    loop {
        // While blocking jobs are stranded, retry a thread for them every
        // mayday interval.
        let tick = watchdog.as_ref().map(Watchdog::tick);
        let stranded = scheduler
            .services
            .blocking
            .is_stranded(scheduler.config.max_blocking_threads);
        let mut timeout = if stranded {
            Some(tick.map_or(super::MAYDAY_INTERVAL, |t| t.min(super::MAYDAY_INTERVAL)))
        } else {
            tick
        };
        if !rescued.is_empty() {
            // And the next scan due at the watchdog's pace, not a whole
            // tick after this pass.
            let next = match tick {
                Some(t) => rescued_tick.min(t.saturating_sub(scanned.elapsed())),
                None => rescued_tick,
            };
            timeout = Some(timeout.map_or(next, |t| t.min(next)));
        }
        let Some(pools) = scheduler.rescuer.take_timeout(timeout) else {
            break;
        };
        let mut ran = false;
        for pool in pools {
            let batch = rescue(scheduler, &pool);
            ran |= batch;
            // Sent here with no work queued too: a kick that could start
            // no worker (every slot blocked), made to have the driver
            // turned (an attend): its tasks may wait on the driver, which
            // nobody turns.
            let watch = batch
                || (!pool.is_closed()
                    && pool.idle.serving() == 0
                    && pool.registry.len() > 0
                    && scheduler.services.driver_unattended());
            if watch {
                match rescued.iter_mut().find(|(p, _)| Arc::ptr_eq(p, &pool)) {
                    Some((_, none_alive)) => *none_alive = false,
                    None => {
                        rescued.push((pool, false));
                        rescued_tick = RESCUED_DRIVER_TICK;
                    }
                }
            }
        }
        scheduler.services.blocking.retry_stranded(scheduler);
        if let (Some(w), Some(tick)) = (&mut watchdog, tick)
            && (rescued.is_empty() || scanned.elapsed() >= tick)
        {
            w.scan(&scheduler.pools());
            scanned = std::time::Instant::now();
        }
        // A thread parked in the driver turns it for the watched pools'
        // tasks, and attends (which sends a pool here again) when it
        // leaves for long: a pool with no work queued needs no turn of
        // this thread meanwhile (its turns, failing beside that thread,
        // cost ten wakes a second while the pool's slots stay blocked).
        let parked = scheduler.services.driver_parked();
        rescued.retain_mut(|(p, none_alive)| {
            if p.is_closed() || p.idle.serving() > 0 || (parked && !p.has_work()) {
                return false;
            }
            let was = std::mem::replace(none_alive, p.registry.len() == 0);
            !(was && *none_alive)
        });
        if watchdog.is_some() || !rescued.is_empty() {
            // If no worker turns the I/O driver (all busy, or none: none
            // parks in it), turn it without waiting: a long poll holds up
            // sockets and timers for at most a watchdog tick, and rescued
            // tasks' for a timer's tick to a mayday interval (backing off).
            let mut woke = 0;
            let turned = scheduler
                .services
                .turn_driver(super::Turn::ZeroWait, &mut |d| {
                    woke = d.turn(Some(std::time::Duration::ZERO));
                });
            if ran || woke > 0 {
                rescued_tick = RESCUED_DRIVER_TICK;
            } else if turned_at.elapsed() >= rescued_tick {
                rescued_tick = (rescued_tick * 2).min(super::MAYDAY_INTERVAL);
            }
            turned_at = std::time::Instant::now();
            if turned {
                scheduler.attend_after_zero_wait_turn();
            }
        }
    }
    if let Some(w) = &mut watchdog {
        w.clear();
    }
}

/// One visit to `pool`: at most one batch, then the next pool. Whether it
/// ran a batch here.
fn rescue(scheduler: &Scheduler, pool: &Arc<Pool>) -> bool {
    // Queued work, in the injector or a blocked worker's deque (the tasks
    // its last poll spawned or woke).
    if pool.is_closed() || !pool.has_work() {
        return false;
    }
    // Try for a worker: paced by the pool's start back-off, so this tries
    // a thread start at most once per MAYDAY_INTERVAL. A failure with no
    // worker sends a new mayday, which puts the pool back on the list.
    pool.kick();
    if pool.idle.serving() > 0 {
        // A worker (new, or busy) looks at the queue before it idles.
        return false;
    }
    if scheduler.topology.is_live() {
        // Best effort, as for a worker.
        if let Err(e) = crate::topology::bind_current_thread(&pool.cpus) {
            pool.warn_unbound(&e);
        }
    }
    let bound = scheduler.topology.is_live();
    rescue_batch(pool);
    if bound {
        // Back to every CPU: the watchdog runs on this thread too, and
        // must not be held to the CPUs of a pool that is busy.
        scheduler.bind_to_every_cpu();
    }
    if !pool.is_closed() && pool.has_work() && pool.idle.serving() == 0 {
        // Come back after the other pools on the list.
        scheduler.rescuer.mayday_pool(pool);
    }
    true
}

/// Runs up to [`RESCUE_BATCH`] of `pool`'s queued tasks, stopping early
/// once the pool has a worker again (a task run here may have started
/// one: two threads would then run the pool's tasks, one beyond its
/// maximum).
fn rescue_batch(pool: &Arc<Pool>) {
    for _ in 0..RESCUE_BATCH {
        if pool.is_closed() || pool.idle.serving() > 0 {
            break;
        }
        let Some(runnable) = pool.steal_any() else {
            break;
        };
        let start = clock::now();
        let delay = clock::delay_ns(runnable.metadata().queued_at(), start);
        let c = &pool.rescued;
        c.started.fetch_add(1, Ordering::Relaxed);
        // The rescuer is these counters' only writer: recorded per poll (a
        // rescued pool has no worker to be fast for); the delay before the
        // poll, as `started` (always, as on a worker).
        c.sched_delay.record(delay);
        // As on a worker: a panic in a cancelled future's Drop must not
        // take the rescuer down.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::coop::with_budget(|| runnable.run())
        }));
        // Released after `started`, as a worker publishes them.
        c.completed.fetch_add(1, Ordering::Release);
        if pool.capture.enabled {
            c.poll_time.record(clock::delay_ns(start, clock::now()));
        }
    }
    // The rescued tasks' spawns' samples, as a worker flushes its own
    // when it publishes: this thread may rescue nothing for long.
    crate::metrics::flush_spawns();
}

#[cfg(all(test, loom))]
impl<T> MaydayList<T> {
    /// Model tests only: the broken protocol's late clearing of a mark.
    fn unmark(&self, key: usize) {
        lock(&self.list).marked[key] = false;
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::sync::atomic::AtomicUsize;

    /// One pool (key 0) is listed with an item; the rescuer takes the list
    /// and visits the pool while a producer queues another item and sends
    /// a mayday. Whatever the interleaving, the rescuer's visits (it visits
    /// until the list is empty) take both items.
    fn mayday_racing_take(unmark_after_visit: bool) {
        loom::model(move || {
            let list = Arc::new(MaydayList::<usize> {
                unmark_after_visit,
                ..MaydayList::default()
            });
            let queued = Arc::new(AtomicUsize::new(1));
            list.mayday(0, || 0);
            let (l, q) = (list.clone(), queued.clone());
            let producer = loom::thread::spawn(move || {
                q.fetch_add(1, Ordering::Release);
                l.mayday(0, || 0);
            });
            let mut rescued = 0;
            let visit = |rescued: &mut usize| {
                for key in list.take().expect("listed") {
                    *rescued += queued.swap(0, Ordering::Acquire);
                    if unmark_after_visit {
                        list.unmark(key);
                    }
                }
            };
            visit(&mut rescued);
            producer.join().unwrap();
            // Whatever is listed now is visited next.
            let listed = !lock(&list.list).items.is_empty();
            if listed {
                visit(&mut rescued);
            }
            assert_eq!(
                rescued, 2,
                "lost mayday: work was queued on a pool the rescuer will not visit"
            );
        });
    }

    #[test]
    fn loom_a_mayday_racing_the_rescuers_take_is_not_lost() {
        mayday_racing_take(false);
    }

    /// With a pool's mark cleared only after its visit, a mayday sent
    /// during the visit finds it still marked: the model must find the lost
    /// item, which shows the test above can fail.
    #[test]
    #[should_panic(expected = "lost mayday")]
    fn loom_with_marks_cleared_after_the_visit_a_mayday_is_lost() {
        mayday_racing_take(true);
    }
}

#[cfg(all(test, not(loom)))]
pub(crate) mod tests;
