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
//! 1. **Workers** (single writer per slot). A worker records each poll's
//!    scheduling delay (and, with capture on, its duration) straight into
//!    its slot's [`SlotHistogram`]s: HdrHistogram's buckets as relaxed
//!    atomic counts, bumped with a plain load and store (one writer: no
//!    lock, no locked instruction, no line but the slot's own; the worker's
//!    clock read after each poll, which it makes anyway, is the end of one
//!    poll). Every [`SAMPLES`] polls, and whenever the worker goes idle or
//!    exits, it **publishes** its plain counters into the slot's atomics
//!    with a load and a store (it is their only writer): `started` first,
//!    `Relaxed`, then `completed` with `Release`, which a snapshot reads
//!    first with `Acquire` (`metrics::add_worker`), so that no snapshot
//!    shows more polls completed than started. (Before, samples were
//!    buffered and recorded into a mutex-guarded `hdrhistogram::Histogram`
//!    per 64 polls: ~80 instructions a sample, against ~30 now, callgrind.)
//! 2. **Spawners** (any thread). A spawn reads the clock before and after
//!    the call and appends the difference to a buffer of [`SAMPLES`] in a
//!    **thread-local** ([`record_spawn`]): no shared write per spawn. The
//!    buffer belongs to one pool at a time (the spawned task's home pool);
//!    it is flushed into that pool's [`PoolCapture`] when it is full, when
//!    a spawn goes to another pool, when its oldest sample is older than
//!    [`SPAWN_FLUSH_AGE`] at the next spawn, when a worker thread publishes
//!    (step 1: a worker's spawns are seen whenever its polls are), and when
//!    the thread exits. The pool's spawn histogram is **sharded**: one
//!    cache-padded, mutex-guarded array of bucket counts per shard
//!    ([`SPAWN_SHARDS`]),
//!    a thread flushing always into the same shard, the next in turn at
//!    its first flush (a process-wide round robin), so flushes of
//!    different threads take different locks and write different lines
//!    (threads beyond the shard count share shards: one lock per 64
//!    spawns, not per spawn).
//! 3. **Readers** (`Handle::metrics`, any thread) merge: for each slot
//!    they add its histograms' non-empty buckets to the pool's total (one
//!    `record_n` each), the rescuer's after the slots', then the spawn
//!    shards (under each shard's mutex). Histograms are allocated on their first
//!    record (a pool has twice its maximum in slots, most never used; each
//!    histogram is 30 KiB).
//!
//! # What a reader may see
//! - A worker's latencies are seen as soon as they are recorded; its
//!   counters within [`SAMPLES`] polls. Spawn-call times still in a
//!   spawner's buffer are not seen yet: fewer than [`SAMPLES`] per
//!   spawner thread, all of one pool (a spawn onto another pool flushes
//!   the buffer first). Once a pool is
//!   quiescent (every worker idle) its workers have published everything,
//!   so `count` of the scheduling-delay and poll histograms equals the
//!   polls started (the rescuer records both too).
//! - The histograms and the counters of one slot are not published
//!   atomically together, and the slots are read one after the other: a
//!   snapshot of a busy pool is a merge of slightly different instants,
//!   every part of it monotonic (counts never go back between snapshots).
//! - A spawner thread that stops spawning keeps up to [`SAMPLES`] samples
//!   until it spawns again (after [`SPAWN_FLUSH_AGE`]) or exits; worker
//!   threads publish theirs whenever they publish their polls, a
//!   `block_on` thread as its future returns, the rescuer after each batch
//!   it runs. (A worker in `block_in_place` or a CPU-intensive poll
//!   publishes nothing until its poll ends: a pool's histogram counts may
//!   run ahead of its `started` and `completed` for that long.)
//!
//! With capture off ([`Builder::latency_capture`](crate::Builder::latency_capture),
//! the default) only the scheduling delays are kept: workers record no poll
//! duration and spawns make no second clock read for their call's time
//! (step 2 does not run). The delay is kept always because it costs a
//! clock read per enqueue (the task's stamp), and a subtraction and a
//! bucket's count per poll on the worker's own lines (the poll's start is
//! read anyway), and it is the latency this runtime exists to keep low.

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
/// Spawn-call samples buffered by a spawner thread before they are
/// recorded into a shared histogram; also the polls between two
/// publications of a worker's counters.
pub(crate) const SAMPLES: usize = 64;
/// Shards of a pool's spawn-call histogram.
pub(crate) const SPAWN_SHARDS: usize = 16;
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

/// A histogram with many writers (a pool's spawn-call shard): bucket
/// counts as in [`SlotHistogram`], behind a mutex that its writers take
/// once per batch and metrics readers once per merge, allocated on the
/// first record.
#[derive(Debug, Default)]
pub(crate) struct LazyHistogram(Mutex<Option<Box<[u64]>>>);

impl LazyHistogram {
    /// Records `samples` (nanoseconds, as [`SlotHistogram::record`]).
    pub(crate) fn record_all(&self, samples: &[u64]) {
        if samples.is_empty() {
            return;
        }
        let mut counts = crate::loom::lock(&self.0);
        let counts = counts.get_or_insert_with(|| vec![0; SLOT_COUNTS].into_boxed_slice());
        for &ns in samples {
            counts[bucket(ns)] += 1;
        }
    }

    /// Adds what was recorded to `into` (a histogram of wq's bounds).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn merge_into(&self, into: &mut Histogram<u64>) {
        if let Some(counts) = &*crate::loom::lock(&self.0) {
            merge_counts(counts.iter().copied(), into);
        }
    }

    /// As [`merge_into`](Self::merge_into), making `into` only if
    /// something was recorded.
    pub(crate) fn merge_into_recorded(&self, into: &mut Option<Histogram<u64>>) {
        if let Some(counts) = &*crate::loom::lock(&self.0) {
            merge_counts(
                counts.iter().copied(),
                into.get_or_insert_with(new_histogram),
            );
        }
    }
}

/// `log2` of HdrHistogram's sub-bucket count for [`HIST_SIGFIG`] digits
/// (the crate's `sub_bucket_count_magnitude`: the smallest power of two
/// holding `2 * 10^digits` values at unit resolution).
const SUB_BUCKET_MAGNITUDE: u32 = (2 * 10u64.pow(HIST_SIGFIG as u32))
    .next_power_of_two()
    .trailing_zeros();
/// Half of it: each bucket past the first uses the upper half of its
/// sub-buckets.
const HALF_MAGNITUDE: u32 = SUB_BUCKET_MAGNITUDE - 1;
/// The lowest discernible value is 1 ns: unit magnitude 0.
const SUB_BUCKET_MASK: u64 = (1 << SUB_BUCKET_MAGNITUDE) - 1;
/// The crate's `leading_zero_count_base`.
const LEADING_ZERO_BASE: u32 = 64 - HALF_MAGNITUDE - 1;
/// Counts in a [`SlotHistogram`]: up to the end of the bucket that holds
/// [`HIST_MAX_NS`], as the crate allocates (it records values up to that
/// end as they are, and clamps larger ones to the maximum).
const SLOT_COUNTS: usize = ((index_of(HIST_MAX_NS) >> HALF_MAGNITUDE) + 1) << HALF_MAGNITUDE;

/// The index of `ns`'s bucket in HdrHistogram's layout for wq's bounds
/// (1 ns to [`HIST_MAX_NS`], [`HIST_SIGFIG`] digits): the crate's
/// `index_for`, for values within the bounds.
#[inline]
const fn index_of(ns: u64) -> usize {
    let bucket = LEADING_ZERO_BASE - (ns | SUB_BUCKET_MASK).leading_zeros();
    let sub_bucket = ns >> bucket;
    (((bucket + 1) << HALF_MAGNITUDE) as u64 + sub_bucket - (1 << HALF_MAGNITUDE)) as usize
}

/// The bucket `ns` is counted in: 0 as 1 ns (as wq has always recorded
/// it), anything over [`HIST_MAX_NS`] as that. (The crate's
/// `saturating_record` keeps values up to its last bucket's end, 68.7 s,
/// and clamps only larger ones to 60 s, so a 65 s delay read as longer
/// than a 10-minute one.)
#[inline]
fn bucket(ns: u64) -> usize {
    index_of(ns.clamp(1, HIST_MAX_NS))
}

/// Adds bucket counts (index order) to `into`, a histogram of wq's
/// bounds: each non-empty bucket as its lowest value, `n` times.
fn merge_counts(counts: impl Iterator<Item = u64>, into: &mut Histogram<u64>) {
    for (index, n) in counts.enumerate() {
        if n > 0 {
            into.saturating_record_n(value_of(index), n);
        }
    }
}

/// The lowest value of the bucket at `index` (the inverse of
/// [`index_of`]): recorded into an HdrHistogram of the same bounds, it
/// lands in the same bucket.
const fn value_of(index: usize) -> u64 {
    let index = index as u64;
    if index < 1 << SUB_BUCKET_MAGNITUDE {
        return index; // the first bucket: unit resolution
    }
    let bucket = (index >> HALF_MAGNITUDE) - 1;
    let sub_bucket = (index & ((1 << HALF_MAGNITUDE) - 1)) + (1 << HALF_MAGNITUDE);
    sub_bucket << bucket
}

/// A histogram with **one writer** (a worker slot's thread, or a pool's
/// rescuer), recorded without a lock: HdrHistogram's buckets as an array
/// of relaxed atomic counts, allocated on the first record. Recording is
/// the bucket's index (a leading-zero count and two shifts) and a load and
/// store of its count, no read-modify-write and no line but the writer's
/// own; readers merge the counts into an HdrHistogram (one `record_n` per
/// non-empty bucket, [`SlotHistogram::merge_into`]), which gives the same
/// histogram as recording each value into it (min, max, counts and every
/// percentile: a value and its bucket's lowest value are equivalent).
///
/// A record is seen by readers as soon as it is made (no buffering); a
/// reader racing a record may see the count before or after it.
#[derive(Debug, Default)]
pub(crate) struct SlotHistogram {
    counts: std::sync::OnceLock<Box<[std::sync::atomic::AtomicU64]>>,
}

impl SlotHistogram {
    /// Records `ns` (0 as 1 ns, past the last bucket as [`HIST_MAX_NS`]).
    /// Only the histogram's one writer calls it.
    #[inline]
    pub(crate) fn record(&self, ns: u64) {
        let counts = self.counts.get_or_init(|| {
            (0..SLOT_COUNTS)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect()
        });
        let count = &counts[bucket(ns)];
        // One writer: a load and a store (no locked instruction).
        count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Adds what was recorded to `into` (a histogram of wq's bounds).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn merge_into(&self, into: &mut Histogram<u64>) {
        if let Some(counts) = self.counts.get() {
            merge_counts(counts.iter().map(|c| c.load(Ordering::Relaxed)), into);
        }
    }

    /// As [`merge_into`](Self::merge_into), making `into` only if
    /// something was recorded (the counts are made at the first record).
    pub(crate) fn merge_into_recorded(&self, into: &mut Option<Histogram<u64>>) {
        if let Some(counts) = self.counts.get() {
            merge_counts(
                counts.iter().map(|c| c.load(Ordering::Relaxed)),
                into.get_or_insert_with(new_histogram),
            );
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
    pub(crate) sched_delay: SlotHistogram,
    pub(crate) poll_time: SlotHistogram,
}

/// A pool's capture switch and its sharded spawn-call histogram (shared
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
            spawn: (0..SPAWN_SHARDS)
                .map(|_| CachePadded::new(LazyHistogram::default()))
                .collect(),
        }
    }

    /// Adds the spawn-call times flushed so far to `into`.
    pub(crate) fn merge_spawns_into(&self, into: &mut Option<Histogram<u64>>) {
        for s in self.spawn.iter() {
            s.merge_into_recorded(into);
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
    /// This thread's shard (`usize::MAX` until first flushed).
    shard: usize,
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

impl SpawnBuffer {
    fn flush(&mut self) {
        let Some(target) = &self.target else {
            return;
        };
        if self.len == 0 {
            return;
        }
        if self.shard == usize::MAX {
            // Only spreading matters.
            self.shard = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SPAWN_SHARDS;
        }
        target.spawn[self.shard].record_all(&self.samples[..self.len]);
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
            shard: usize::MAX,
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
        let mut h = None;
        p.merge_spawns_into(&mut h);
        h.map_or(0, |h| h.len())
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
    fn slot_buckets_are_hdrhistograms_buckets() {
        let h = new_histogram();
        assert_eq!(
            SLOT_COUNTS,
            h.distinct_values(),
            "one count per bucket of the crate's layout"
        );
        for index in 0..SLOT_COUNTS {
            let v = value_of(index);
            assert_eq!(index_of(v), index, "value_of inverts index_of at {index}");
            assert_eq!(
                h.lowest_equivalent(v),
                v,
                "{v} is its bucket's lowest value"
            );
        }
        // Every value lands in the bucket the crate would put it in.
        let mut v = 1u64;
        while v < value_of(SLOT_COUNTS) {
            for x in [v, v + 1, v.saturating_mul(3) / 2, v * 2 - 1] {
                assert_eq!(
                    value_of(index_of(x)),
                    h.lowest_equivalent(x),
                    "the bucket of {x}"
                );
            }
            v *= 2;
        }
    }

    #[test]
    fn bucket_counts_merge_into_what_recording_each_value_gives() {
        // Every value below 100,000, then a spread up to past the maximum.
        let mut values: Vec<u64> = (0..100_000).collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x >> (x % 40)); // all magnitudes, some over 60 s
        }
        let past = value_of(SLOT_COUNTS);
        values.extend([HIST_MAX_NS, HIST_MAX_NS + 1, past - 1, past, u64::MAX]);
        let mut direct = new_histogram();
        let slot = SlotHistogram::default();
        for &v in &values {
            direct.saturating_record(v.clamp(1, HIST_MAX_NS));
            slot.record(v);
        }
        let lazy = LazyHistogram::default();
        for chunk in values.chunks(SAMPLES) {
            lazy.record_all(chunk);
        }
        let mut merged = new_histogram();
        slot.merge_into(&mut merged);
        let mut merged_lazy = new_histogram();
        lazy.merge_into(&mut merged_lazy);
        assert!(merged_lazy == direct, "the shards' histograms too");
        assert!(merged == direct, "the same counts, min, max and total");
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(merged.value_at_quantile(q), direct.value_at_quantile(q));
        }
        assert_eq!(merged.mean(), direct.mean());
        assert_eq!(merged.min(), 1, "0 is recorded as 1 ns");
        assert_eq!(merged.max(), direct.max(), "over the maximum saturates");
    }

    /// A longer delay never reads shorter: everything over the maximum is
    /// the maximum (65 s read as 65 s and 10 minutes as 60 s).
    #[test]
    fn saturation_is_monotonic() {
        let max_of = |ns: u64| {
            let h = SlotHistogram::default();
            h.record(ns);
            let mut all = new_histogram();
            h.merge_into(&mut all);
            all.max()
        };
        let (at_limit, over, far_over) = (
            max_of(HIST_MAX_NS),
            max_of(65_000_000_000),
            max_of(600_000_000_000),
        );
        assert!(
            far_over >= over && over >= at_limit,
            "{at_limit} {over} {far_over}"
        );
        assert_eq!(over, at_limit);
    }

    #[test]
    fn a_slot_histogram_allocates_on_first_record() {
        let h = SlotHistogram::default();
        assert!(h.counts.get().is_none());
        let mut all = new_histogram();
        h.merge_into(&mut all);
        assert_eq!(all.len(), 0);
        h.record(5);
        h.record(5);
        h.merge_into(&mut all);
        assert_eq!((all.len(), all.count_at(5)), (2, 2));
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
