//! The registry of a pool's tasks: a count of the live ones, and the wakers
//! of those that went idle, so shutdown can cancel them.
//!
//! # Protocol
//! - **Count.** A task is counted when it is spawned and uncounted when its
//!   future is dropped (completed or cancelled). The count is sharded by
//!   thread ordinal: a thread adds to and takes from its own shard, so a
//!   spawn touches no line another thread writes; the shards' wrapping sum
//!   is the live count ([`Registry::len`]).
//! - **Idle tasks.** A task is registered the first time a poll returns
//!   `Pending` (by the worker that polled it, with the task's waker), and
//!   removed when its future is dropped. A task that completes in its first
//!   poll -- a work item -- never takes a registry lock. Tasks that never
//!   returned `Pending` are always either queued (shutdown drains the
//!   queues) or running on a worker (which polls them to `Pending`, and
//!   registers them then).
//! - **Shutdown** ([`Registry::close_and_wake_all`]) marks every shard
//!   closed and wakes the registered tasks, outside the shard lock (the
//!   wake queues the task on its closed pool, where the shutdown's drain
//!   drops it, its future, and with it the shard entry, which takes the
//!   lock: `pool::closing`). A registration that finds its shard closed
//!   does not insert: it returns `None` and the caller wakes the task
//!   itself, to the same end (the pool was closed before the registry).
//!   Under the shard lock each registration is thus either seen by the
//!   shutdown's wake or sees `closed`: no idle task outlives the shutdown.
//!   A wake absorbed by a poll in progress (a worker a `shutdown_timeout`
//!   gave up on) ends the same way when that poll returns: the schedule
//!   function sees the pool closed and queues the task (`pool::closing`).
//!   One merged with a run not yet started (the task taken from its queue,
//!   not yet polled, by such a worker) is made again by that poll: a
//!   registered task whose poll answers `Pending` on a closed pool wakes
//!   itself (`TaskCell::poll`).
//!
//!   `loom_a_registration_racing_the_close_is_woken` checks it, and fails
//!   when the check of `closed` and the insert are two critical sections.
//!
//! Lock order: a shard lock is a leaf; no other lock is taken under it and
//! no waker is woken or dropped under it (the removed waker is dropped after
//! the guard).

use std::fmt;
use std::task::Waker;

use crossbeam_utils::CachePadded;
use slab::Slab;

use crate::loom::lock;
use crate::loom::sync::Mutex;
use crate::loom::sync::atomic::{AtomicUsize, Ordering};
use crate::pool::current::thread_ordinal;

const SHARDS: usize = 16;

struct Shard {
    tasks: Slab<Waker>,
    closed: bool,
    /// Its length at its last shrink (`usize::MAX`: none since it grew).
    shrunk_at: usize,
}

impl Default for Shard {
    fn default() -> Shard {
        Shard {
            tasks: Slab::new(),
            closed: false,
            shrunk_at: usize::MAX,
        }
    }
}

/// A shard's slab is shrunk only beyond this capacity (`Registry::dropped`:
/// an emptied one above it is given back whole).
const SHRINK_ABOVE: usize = 1024;

/// See the module docs.
pub(crate) struct Registry {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    /// Spawns minus drops, per thread-ordinal shard (wrapping).
    alive: Box<[CachePadded<AtomicUsize>]>,
    /// Model tests only: check `closed` and insert in two critical sections
    /// (the bug the protocol avoids).
    #[cfg(loom)]
    split_check: bool,
}

/// Where a task's waker sits in the registry, kept by the task.
#[derive(Debug)]
pub(crate) struct Entry {
    shard: usize,
    key: usize,
}

impl Registry {
    pub(crate) fn new() -> Registry {
        Registry {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::default()))
                .collect(),
            alive: (0..SHARDS)
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
            #[cfg(loom)]
            split_check: false,
        }
    }

    fn alive_here(&self) -> &AtomicUsize {
        &self.alive[thread_ordinal() % SHARDS]
    }

    /// Counts a spawned task.
    #[inline]
    pub(crate) fn spawned(&self) {
        self.alive_here().fetch_add(1, Ordering::Relaxed);
    }

    /// Uncounts a dropped task and removes its waker, if it had one here.
    pub(crate) fn dropped(&self, entry: Option<Entry>) {
        self.alive_here().fetch_sub(1, Ordering::Relaxed);
        if let Some(e) = entry {
            let waker = {
                let mut s = lock(&*self.shards[e.shard]);
                let waker = s.tasks.try_remove(e.key);
                // Mostly emptied after a burst of idle tasks: its memory
                // goes (a slab never shrinks by itself). `shrink_to_fit`
                // keeps every key (it trims the vacant tail: after a burst,
                // the burst's keys), so it may run with tasks left: a
                // long-lived one (an accept loop) kept the shard from ever
                // emptying, and so its peak's room. It rebuilds the free
                // list (O(n)): tried again only once the length halved.
                let (len, cap) = (s.tasks.len(), s.tasks.capacity());
                if cap > SHRINK_ABOVE && (len == 0 || (len * 4 < cap && len * 2 <= s.shrunk_at)) {
                    s.tasks.shrink_to_fit();
                    // Counted only if it gave memory back: with its top
                    // key live it gives none (and costs no rebuild), and
                    // is tried again at the next drop.
                    if s.tasks.capacity() < cap {
                        s.shrunk_at = len;
                    }
                }
                waker
            };
            drop(waker);
        }
    }

    /// The wakers the shards' slabs have room for, all together.
    #[cfg(all(test, not(loom)))]
    fn capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| lock(&**s).tasks.capacity())
            .sum()
    }

    /// Registers an idle task's `waker`; `None` if the registry is closed,
    /// and the caller must then wake the task so that it is dropped.
    pub(crate) fn register(&self, waker: &Waker) -> Option<Entry> {
        let shard = thread_ordinal() % SHARDS;
        #[cfg(loom)]
        if self.split_check {
            if lock(&*self.shards[shard]).closed {
                return None;
            }
            let key = lock(&*self.shards[shard]).tasks.insert(waker.clone());
            return Some(Entry { shard, key });
        }
        let mut s = lock(&*self.shards[shard]);
        if s.closed {
            return None;
        }
        let key = s.tasks.insert(waker.clone());
        // Grown past twice its last shrink: a new burst, shrunk from the
        // top again when it goes.
        if s.tasks.len() > s.shrunk_at.saturating_mul(2) {
            s.shrunk_at = usize::MAX;
        }
        Some(Entry { shard, key })
    }

    /// Closes the registry and wakes every registered task (outside the
    /// locks).
    pub(crate) fn close_and_wake_all(&self) {
        for shard in self.shards.iter() {
            let wakers: Vec<Waker> = {
                let mut shard = lock(&**shard);
                shard.closed = true;
                shard.tasks.iter().map(|(_, w)| w.clone()).collect()
            };
            for waker in wakers {
                waker.wake();
            }
        }
    }

    /// Tasks alive now (spawned, their future not yet dropped), read shard
    /// by shard: an estimate while tasks come and go. A task counted on a
    /// shard the read has passed and uncounted on one it has not reached
    /// (spawned on one thread, dropped on another, both during the read)
    /// is subtracted unadded, so the sum may fall below the tasks alive
    /// throughout, to zero (or "negative", reported as zero). Uncounting
    /// on the spawner's shard would make it a lower bound, at the price of
    /// a write to the spawner's line from the CPU where each task ends, on
    /// every task; the callers that act on it are the rescuer's, which
    /// drop a pool they watch only after two zeros in a row, and are sent
    /// a pool again at its next kick that starts no worker.
    pub(crate) fn len(&self) -> usize {
        let sum = self
            .alive
            .iter()
            .fold(0usize, |acc, s| acc.wrapping_add(s.load(Ordering::Relaxed)));
        if sum > isize::MAX as usize { 0 } else { sum }
    }

    /// Idle tasks registered now.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn registered(&self) -> usize {
        self.shards.iter().map(|s| lock(&**s).tasks.len()).sum()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("tasks", &self.len())
            .finish()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use std::task::Wake;

    struct Woken(AtomicUsize);

    impl Wake for Woken {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A task goes idle (registers) while the runtime shuts down (closes
    /// and wakes the registry): it must be woken, by the close or, when
    /// the registration found the registry closed, by itself.
    fn register_racing_close(split_check: bool) {
        loom::model(move || {
            let registry = loom::sync::Arc::new(Registry {
                split_check,
                ..Registry::new()
            });
            let woken = std::sync::Arc::new(Woken(AtomicUsize::new(0)));
            let waker = Waker::from(woken.clone());
            let r = registry.clone();
            let task = loom::thread::spawn(move || {
                if r.register(&waker).is_none() {
                    // The caller's part: wake itself, to be dropped.
                    waker.wake_by_ref();
                }
            });
            registry.close_and_wake_all();
            task.join().unwrap();
            assert!(
                woken.0.load(Ordering::Relaxed) >= 1,
                "an idle task outlived the shutdown: registered after the close's wake"
            );
        });
    }

    #[test]
    fn loom_a_registration_racing_the_close_is_woken() {
        register_racing_close(false);
    }

    /// With the check of `closed` and the insert in two critical sections,
    /// the model must find the task that is never woken.
    #[test]
    #[should_panic(expected = "outlived the shutdown")]
    fn loom_with_a_split_check_a_registration_is_lost() {
        register_racing_close(true);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn counts_live_tasks_and_refuses_registration_once_closed() {
        let r = Registry::new();
        let waker = futures::task::noop_waker();
        r.spawned();
        r.spawned();
        let entry = r.register(&waker).expect("open");
        assert_eq!((r.len(), r.registered()), (2, 1));
        r.dropped(Some(entry));
        assert_eq!((r.len(), r.registered()), (1, 0));
        r.close_and_wake_all();
        assert!(r.register(&waker).is_none(), "closed: the caller wakes it");
        r.dropped(None);
        assert_eq!((r.len(), r.registered()), (0, 0));
    }

    /// A burst of idle tasks does not keep its memory once they are gone:
    /// the slab held a waker's room for each (about 24 bytes) for the
    /// runtime's life.
    #[test]
    fn an_emptied_registry_gives_its_memory_back() {
        let r = Registry::new();
        let waker = futures::task::noop_waker();
        let entries = burst(&r, &waker, 100_000);
        assert!(r.capacity() >= 100_000);
        for e in entries {
            r.dropped(Some(e));
        }
        assert!(r.capacity() <= SHARDS * SHRINK_ABOVE, "{}", r.capacity());
    }

    /// `n` tasks spawned and registered idle.
    fn burst(r: &Registry, waker: &Waker, n: usize) -> Vec<Entry> {
        (0..n)
            .map(|_| {
                r.spawned();
                r.register(waker).unwrap()
            })
            .collect()
    }

    /// The same with a long-lived task registered first (a server's
    /// accept loop): its shard never empties, and kept its peak's room.
    #[test]
    fn a_shard_with_a_task_left_gives_a_bursts_memory_back() {
        let r = Registry::new();
        let waker = futures::task::noop_waker();
        r.spawned();
        let keep = r.register(&waker).unwrap();
        for round in 0..3 {
            let entries = burst(&r, &waker, 100_000);
            assert!(r.capacity() >= 100_000);
            for e in entries {
                r.dropped(Some(e));
            }
            assert!(
                r.capacity() <= SHARDS * SHRINK_ABOVE,
                "round {round}: {}",
                r.capacity()
            );
        }
        r.dropped(Some(keep));
    }

    /// Long-lived tasks spread over a burst's keys, the top one among
    /// them: nothing can be given back while it lives; once it goes, the
    /// room above the next live key is (shrinks that freed nothing were
    /// counted, and none was tried again until the count halved).
    #[test]
    fn the_room_above_the_top_live_key_goes_when_it_does() {
        let r = Registry::new();
        let waker = futures::task::noop_waker();
        let mut entries: Vec<Option<Entry>> = (0..100_000)
            .map(|_| {
                r.spawned();
                r.register(&waker)
            })
            .collect();
        let top = entries[99_999].take().unwrap();
        for (i, e) in entries.iter_mut().enumerate() {
            if i % 1000 != 0 {
                r.dropped(e.take());
            }
        }
        assert!(r.capacity() >= 100_000, "{}", r.capacity());
        r.dropped(Some(top));
        assert!(r.capacity() < 99_500, "{}", r.capacity());
        for e in entries.into_iter().flatten() {
            r.dropped(Some(e));
        }
    }

    #[test]
    fn a_drop_on_another_thread_balances_the_count() {
        let r = std::sync::Arc::new(Registry::new());
        for _ in 0..10 {
            r.spawned();
        }
        let r2 = r.clone();
        std::thread::spawn(move || (0..10).for_each(|_| r2.dropped(None)))
            .join()
            .unwrap();
        assert_eq!(r.len(), 0);
    }
}
