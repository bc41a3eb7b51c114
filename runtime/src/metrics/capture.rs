//! Latency capture: who writes which buffer, when it is published, and what
//! a reader may see.
//!
//! Three latencies are captured per task event, each into HdrHistograms
//! (1 ns to 60 s, 2 significant digits: 1% precision):
//!
//! - **scheduling delay**: from the task being queued (spawned or woken) to
//!   a worker starting to poll it, that start being the worker's clock read
//!   at the end of its previous poll (or its return from idle): one clock
//!   read per poll, so the delay leaves out the worker's own search for the
//!   task (at most a few hundred ns, or a non-blocking driver turn every
//!   61 ticks);
//! - **poll duration**: from that same clock read to the poll's end, so it
//!   includes the search (`find_work`) before the poll;
//! - **spawn-call time**: how long a `spawn` call takes its caller (the
//!   task's creation, queueing and the pool's kick).
//!
//! # Protocol
//! 1. **Workers** (single writer per slot). A worker keeps the scheduling
//!    delays and poll durations of its polls in two plain arrays of
//!    [`SAMPLES`] in its own loop state (no atomics, no shared line: the
//!    worker's clock read after each poll, which it makes anyway, is the
//!    end of one poll). When the arrays fill, and whenever the worker goes
//!    idle or exits, it **publishes**: it records them into its slot's
//!    [`WorkerCounters`] histograms under each histogram's mutex (taken by
//!    nobody else but a metrics reader, so uncontended but for a reader's
//!    merge), then stores its plain counters into the slot's atomics with
//!    `Relaxed` load + store (it is their only writer).
//! 2. **Spawners** (any thread). A spawn reads the clock before and after
//!    the call and appends the difference to a buffer of [`SAMPLES`] in a
//!    **thread-local** ([`record_spawn`]): no shared write per spawn. The
//!    buffer belongs to one pool at a time (the spawned task's home pool);
//!    it is flushed into that pool's [`PoolCapture`] when it is full, when
//!    a spawn goes to another pool, when its oldest sample is older than
//!    [`SPAWN_FLUSH_AGE`] at the next spawn, when a worker thread publishes
//!    (step 1: a worker's spawns are seen whenever its polls are), and when
//!    the thread exits. The pool's spawn histogram is **striped**: one
//!    cache-padded, mutex-guarded histogram per stripe ([`SPAWN_STRIPES`]),
//!    a thread flushing always into the stripe of its ordinal, so flushes
//!    of different threads take different locks and write different lines
//!    (threads beyond the stripe count share stripes: one lock per 64
//!    spawns, not per spawn).
//! 3. **Readers** (`Handle::metrics`, any thread) merge: for each slot they
//!    take each histogram's mutex in turn and add it to the pool's total,
//!    then the spawn stripes, then the rescuer's. Histograms are allocated
//!    on their first record (a pool has twice its maximum in slots, most
//!    never used; each histogram is ~30 KiB).
//!
//! # What a reader may see
//! - Samples still in a worker's or a spawner's buffer are not seen yet: at
//!   most [`SAMPLES`] per worker and per pool a spawner thread has spawned
//!   onto, and a busy worker's for at most 64 polls. Once a pool is
//!   quiescent (every worker idle) its workers have published everything,
//!   so `count` of the scheduling-delay and poll histograms equals the
//!   polls started (the rescuer records both too).
//! - The histograms and the counters of one slot are not published
//!   atomically together, and the slots are read one after the other: a
//!   snapshot of a busy pool is a merge of slightly different instants,
//!   every part of it monotonic (counts never go back between snapshots).
//! - A spawner thread that stops spawning keeps up to [`SAMPLES`] samples
//!   until it spawns again (after [`SPAWN_FLUSH_AGE`]) or exits; worker
//!   threads publish theirs whenever they publish their polls.
//!
//! With capture off ([`Builder::latency_capture`](crate::Builder::latency_capture),
//! the default) only the scheduling delays are kept: workers buffer no poll
//! duration and spawns read no clock (step 2 does not run). The delay is
//! kept always because it costs a subtraction and a store per poll into
//! the worker's own array (the poll's start is read anyway), and it is the
//! latency this runtime exists to keep low.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_utils::CachePadded;
use hdrhistogram::Histogram;

use crate::clock;

/// Highest latency a histogram tracks (60 s); longer ones saturate.
pub(crate) const HIST_MAX_NS: u64 = 60_000_000_000;
/// Significant digits: 2 gives 1% precision.
pub(crate) const HIST_SIGFIG: u8 = 2;
/// Samples buffered by a worker (per kind) and by a spawner thread before
/// they are recorded into a shared histogram.
pub(crate) const SAMPLES: usize = 64;
/// Stripes of a pool's spawn-call histogram.
pub(crate) const SPAWN_STRIPES: usize = 16;
/// A spawner's buffer older than this is flushed at its next spawn, so a
/// thread that spawns rarely is still seen within about this long of its
/// next spawn.
pub(crate) const SPAWN_FLUSH_AGE_NS: u64 = 100_000_000;
/// [`SPAWN_FLUSH_AGE_NS`] as a `Duration`, for the docs.
#[allow(dead_code)]
pub(crate) const SPAWN_FLUSH_AGE: std::time::Duration =
    std::time::Duration::from_nanos(SPAWN_FLUSH_AGE_NS);

/// An empty histogram with wq's bounds.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_NS, HIST_SIGFIG).expect("valid histogram bounds")
}

/// A histogram allocated on its first record, behind a mutex that its
/// writer and metrics readers take.
#[derive(Debug, Default)]
pub(crate) struct LazyHistogram(Mutex<Option<Box<Histogram<u64>>>>);

impl LazyHistogram {
    /// Records `samples` (nanoseconds; 0 is recorded as 1).
    pub(crate) fn record_all(&self, samples: &[u64]) {
        if samples.is_empty() {
            return;
        }
        let mut h = crate::loom::lock(&self.0);
        let h = h.get_or_insert_with(|| Box::new(new_histogram()));
        for &ns in samples {
            h.saturating_record(ns.max(1));
        }
    }

    /// Adds what was recorded to `into`.
    pub(crate) fn merge_into(&self, into: &mut Histogram<u64>) {
        if let Some(h) = &*crate::loom::lock(&self.0) {
            // Same bounds: `add` cannot fail.
            let _ = into.add(&**h);
        }
    }
}

/// What one worker slot publishes (single writer: the slot's worker; the
/// rescuer for a pool's `rescued` counters).
#[derive(Debug, Default)]
pub(crate) struct WorkerCounters {
    pub(crate) started: std::sync::atomic::AtomicU64,
    pub(crate) completed: std::sync::atomic::AtomicU64,
    pub(crate) remote_steals: std::sync::atomic::AtomicU64,
    pub(crate) sibling_steals: std::sync::atomic::AtomicU64,
    pub(crate) parks: std::sync::atomic::AtomicU64,
    pub(crate) spin_hits: std::sync::atomic::AtomicU64,
    pub(crate) spin_backoffs: std::sync::atomic::AtomicU64,
    pub(crate) sched_delay: LazyHistogram,
    pub(crate) poll_time: LazyHistogram,
}

/// A pool's capture switch and its striped spawn-call histogram (shared
/// with the spawner threads' buffers, hence its own `Arc`).
#[derive(Debug)]
pub(crate) struct PoolCapture {
    /// Latency capture on (fixed when the pool is made).
    pub(crate) enabled: bool,
    spawn: Box<[CachePadded<LazyHistogram>]>,
}

impl PoolCapture {
    pub(crate) fn new(enabled: bool) -> PoolCapture {
        PoolCapture {
            enabled,
            spawn: (0..SPAWN_STRIPES)
                .map(|_| CachePadded::new(LazyHistogram::default()))
                .collect(),
        }
    }

    /// Adds the spawn-call times flushed so far to `into`.
    pub(crate) fn merge_spawns_into(&self, into: &mut Histogram<u64>) {
        for s in self.spawn.iter() {
            s.merge_into(into);
        }
    }
}

/// A thread's spawn-call samples not yet flushed (step 2 of the module
/// docs).
struct SpawnBuffer {
    target: Option<Arc<PoolCapture>>,
    samples: [u64; SAMPLES],
    len: usize,
    /// Raw clock at the first sample in the buffer.
    first_at: u64,
    /// This thread's stripe (`usize::MAX` until first flushed).
    stripe: usize,
}

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

impl SpawnBuffer {
    fn flush(&mut self) {
        let Some(target) = &self.target else {
            return;
        };
        if self.len == 0 {
            return;
        }
        if self.stripe == usize::MAX {
            // Only spreading matters.
            self.stripe = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % SPAWN_STRIPES;
        }
        target.spawn[self.stripe].record_all(&self.samples[..self.len]);
        self.len = 0;
    }
}

impl Drop for SpawnBuffer {
    fn drop(&mut self) {
        self.flush();
    }
}

thread_local! {
    static SPAWNS: RefCell<SpawnBuffer> = const {
        RefCell::new(SpawnBuffer {
            target: None,
            samples: [0; SAMPLES],
            len: 0,
            first_at: 0,
            stripe: usize::MAX,
        })
    };
}

/// Records a spawn call onto `pool` that ran from raw clock `start` to
/// `end` (step 2 of the module docs).
#[inline]
pub(crate) fn record_spawn(pool: &Arc<PoolCapture>, start: u64, end: u64) {
    let ns = clock::delay_ns(start, end);
    // A thread being torn down records nothing.
    let _ = SPAWNS.try_with(|b| {
        let Ok(mut b) = b.try_borrow_mut() else {
            return;
        };
        let same = b.target.as_ref().is_some_and(|t| Arc::ptr_eq(t, pool));
        if !same {
            b.flush();
            b.target = Some(pool.clone());
        }
        if b.len == 0 {
            b.first_at = end;
        }
        let i = b.len;
        b.samples[i] = ns;
        b.len += 1;
        if b.len == SAMPLES || clock::delay_ns(b.first_at, end) >= SPAWN_FLUSH_AGE_NS {
            b.flush();
        }
    });
}

/// Flushes this thread's spawn-call samples (a worker publishing).
pub(crate) fn flush_spawns() {
    let _ = SPAWNS.try_with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            b.flush();
        }
    });
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn count(p: &PoolCapture) -> u64 {
        let mut h = new_histogram();
        p.merge_spawns_into(&mut h);
        h.len()
    }

    #[test]
    fn spawn_samples_are_buffered_then_flushed_when_full() {
        let p = Arc::new(PoolCapture::new(true));
        let t = clock::now();
        let q = p.clone();
        // A joined std thread has run its thread-locals' destructors (a
        // scoped thread may not have yet).
        std::thread::spawn(move || {
            for _ in 0..SAMPLES - 1 {
                record_spawn(&q, t, t);
            }
            assert_eq!(count(&q), 0, "buffered, not yet shared");
            record_spawn(&q, t, t);
            assert_eq!(count(&q) as usize, SAMPLES, "a full buffer is flushed");
            record_spawn(&q, t, t);
        })
        .join()
        .unwrap();
        assert_eq!(
            count(&p) as usize,
            SAMPLES + 1,
            "the thread's exit flushes the rest"
        );
    }

    #[test]
    fn a_spawn_onto_another_pool_flushes_the_first_pools_samples() {
        let (a, b) = (
            Arc::new(PoolCapture::new(true)),
            Arc::new(PoolCapture::new(true)),
        );
        let t = clock::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                record_spawn(&a, t, t);
                record_spawn(&a, t, t);
                record_spawn(&b, t, t);
                assert_eq!(count(&a), 2);
                assert_eq!(count(&b), 0);
                flush_spawns();
                assert_eq!(count(&b), 1);
            });
        });
    }

    #[test]
    fn an_old_buffer_is_flushed_at_the_next_spawn() {
        clock::calibrate();
        let p = Arc::new(PoolCapture::new(true));
        std::thread::scope(|s| {
            s.spawn(|| {
                let t = clock::now();
                record_spawn(&p, t, t);
                std::thread::sleep(std::time::Duration::from_nanos(
                    SPAWN_FLUSH_AGE_NS + 5_000_000,
                ));
                let t2 = clock::now();
                record_spawn(&p, t2, t2);
                assert_eq!(count(&p), 2);
            });
        });
    }

    #[test]
    fn lazy_histograms_allocate_on_first_record() {
        let h = LazyHistogram::default();
        assert!(crate::loom::lock(&h.0).is_none());
        h.record_all(&[0, 10, 1_000_000]);
        let mut all = new_histogram();
        h.merge_into(&mut all);
        assert_eq!(all.len(), 3);
        assert_eq!(all.min(), 1, "a zero is recorded as 1 ns");
    }
}
