//! The registry of live tasks of one pool, so shutdown can cancel them.
//!
//! A task is inserted when it is spawned and removed when its future is
//! dropped (it completed, or was cancelled). The registry holds a [`Waker`]
//! of each task: at shutdown every registered task is woken, its schedule
//! function sees the pool closed and drops it, which drops its future and
//! removes it from here. Without this, a task waiting on a waker nobody
//! will ever call would keep its future alive after the runtime is gone.
//!
//! The registry is sharded by the spawning thread so concurrent spawns
//! rarely meet on a lock. Wakers are woken outside the shard lock: waking
//! drops the future, and the future's guard takes the same lock.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::task::Waker;

use crossbeam_utils::CachePadded;
use slab::Slab;

use crate::pool::Pool;
use crate::runtime::context::thread_ordinal;

const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    tasks: Slab<Waker>,
    closed: bool,
}

/// See the module docs.
pub(crate) struct Registry {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
}

/// Removes its task from the registry when dropped (with the future).
pub(crate) struct Registered {
    pool: Arc<Pool>,
    shard: usize,
    key: usize,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut shard = crate::lock_std(&self.pool.registry.shards[self.shard]);
        shard.tasks.try_remove(self.key);
    }
}

impl fmt::Debug for Registered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registered")
            .field("shard", &self.shard)
            .field("key", &self.key)
            .finish()
    }
}

impl Registry {
    pub(crate) fn new() -> Registry {
        Registry {
            shards: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::default()))
                .collect(),
        }
    }

    /// Builds a task with `make` (given its removal guard) and registers its
    /// waker, under the shard lock. `None` if the registry is closed; `make`
    /// is then not called.
    pub(crate) fn insert_with<T>(
        &self,
        make: impl FnOnce(Registered) -> (super::Runnable, T),
        pool: &Arc<Pool>,
    ) -> Option<(super::Runnable, T)> {
        let shard_index = thread_ordinal() % SHARDS;
        let mut shard = crate::lock_std(&self.shards[shard_index]);
        if shard.closed {
            return None;
        }
        let entry = shard.tasks.vacant_entry();
        let guard = Registered {
            pool: pool.clone(),
            shard: shard_index,
            key: entry.key(),
        };
        let (runnable, task) = make(guard);
        entry.insert(runnable.waker());
        Some((runnable, task))
    }

    /// Closes the registry and wakes every task in it (outside the locks).
    pub(crate) fn close_and_wake_all(&self) {
        for shard in self.shards.iter() {
            let wakers: Vec<Waker> = {
                let mut shard = crate::lock_std(shard);
                shard.closed = true;
                shard.tasks.iter().map(|(_, w)| w.clone()).collect()
            };
            for waker in wakers {
                waker.wake();
            }
        }
    }

    /// Tasks alive now.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| crate::lock_std(s).tasks.len())
            .sum()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("tasks", &self.len())
            .finish()
    }
}
