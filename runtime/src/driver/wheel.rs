//! A hierarchical timing wheel: O(1) insert and cancel, firing in time
//! proportional to the timers due (plus their cascades), whatever the
//! number pending.
//!
//! # Layout
//! Time is counted in **ticks** of 1 ms since the driver's base instant.
//! Six levels of 64 slots: a slot of level `L` spans `64^L` ticks, so level
//! 0 holds the next 64 ms one tick per slot, level 1 the next ~4 s, level 2
//! ~4.4 min, level 3 ~4.7 h, level 4 ~12.4 days, level 5 ~2.2 years. A slot
//! is a doubly linked list of entries threaded through one `Slab` by index
//! (no allocation per timer beyond the slab's growth, no unsafe), and each
//! level keeps a 64-bit mask of its non-empty slots.
//!
//! A timer due at tick `when` is placed, relative to `elapsed` (the last
//! tick processed), at the level of the highest bit where `when` and
//! `elapsed` differ (divided by 6): the first level whose slots tell them
//! apart. Its slot there is `when`'s digit at that level, which is always
//! at or after `elapsed`'s digit, in the same rotation.
//!
//! # Invariants
//! - **W1** every pending entry is linked in exactly one slot, and its
//!   level's mask has that slot's bit set; a fired or idle entry is in none.
//! - **W2** at each level, the slots before `elapsed`'s digit are empty, but
//!   for the one wrapped case below: so the next slot to process is found
//!   from the masks alone ([`Wheel::next_expiration`]).
//! - **W3** an entry fires only when `when <= elapsed`: never early. A slot
//!   of level > 0 is processed when `elapsed` reaches its start; its
//!   entries are re-placed (cascaded) at lower levels, or fired if due.
//!
//! Timers past the end of the current rotation of the top level (a
//! rotation is ~2.2 years: a timer 1 ms ahead is past it when `elapsed`
//! is at its last ticks) are placed at the rotation's last tick and
//! re-placed from there (if `elapsed` is that last tick, at the next
//! rotation's first slot: W2's wrapped case).
//!
//! The wheel is single-threaded: the driver keeps it under a mutex (see
//! `driver`), and wakers are handed back to be woken outside that lock.

use std::task::Waker;

use slab::Slab;

const LEVELS: usize = 6;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const NIL: u32 = u32::MAX;
/// Ticks covered by one rotation of the top level.
const ROTATION: u64 = 1 << (SLOT_BITS as u64 * LEVELS as u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Linked in `heads[level][slot]`.
    Pending { level: u8, slot: u8 },
    /// Due: its waker was taken (or it was due when armed).
    Fired,
}

#[derive(Debug)]
struct Entry {
    when: u64,
    waker: Option<Waker>,
    prev: u32,
    next: u32,
    state: State,
}

/// Entries' capacity kept once the wheel is empty; beyond it, an empty
/// wheel frees its slab.
const KEEP_ENTRIES: usize = 4096;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Wheel {
    elapsed: u64,
    entries: Slab<Entry>,
    heads: [[u32; SLOTS]; LEVELS],
    occupied: [u64; LEVELS],
    pending: usize,
}

/// The level at which a timer due at `when` is placed when the wheel is at
/// `elapsed` (`when > elapsed`, within one rotation).
fn level_for(elapsed: u64, when: u64) -> usize {
    let differ = (elapsed ^ when) | (SLOTS as u64 - 1);
    let bit = 63 - differ.leading_zeros();
    ((bit / SLOT_BITS) as usize).min(LEVELS - 1)
}

fn slot_for(when: u64, level: usize) -> usize {
    ((when >> (SLOT_BITS as usize * level)) & (SLOTS as u64 - 1)) as usize
}

fn slot_span(level: usize) -> u64 {
    1 << (SLOT_BITS as usize * level)
}

impl Wheel {
    pub(crate) fn new() -> Wheel {
        Wheel {
            elapsed: 0,
            entries: Slab::new(),
            heads: [[NIL; SLOTS]; LEVELS],
            occupied: [0; LEVELS],
            pending: 0,
        }
    }

    /// Timers armed and not yet fired.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// Arms a timer due at tick `when`, woken through `waker` (cloned only
    /// if it is armed: an entry that fires at once keeps no waker, as
    /// `advance` and `reset` leave one, so a later `reset` does not re-arm
    /// it with this task's). Returns its key, and whether it is already
    /// fired (`when <= elapsed`).
    pub(crate) fn insert(&mut self, when: u64, waker: &Waker) -> (usize, bool) {
        if when <= self.elapsed {
            let key = self.entries.insert(Entry {
                when,
                waker: None,
                prev: NIL,
                next: NIL,
                state: State::Fired,
            });
            assert!(key < NIL as usize, "wq: more than 4 billion timers pending");
            return (key, true);
        }
        // Cloned first: a foreign waker's clone that panics leaves nothing
        // linked (an entry linked first stayed pending for good, keyless,
        // and its shard's slab never shrank again). The entry is written
        // once, linked at the head of its slot.
        let waker = waker.clone();
        let (level, slot) = self.place(when);
        let head = self.heads[level][slot];
        let key = self.entries.insert(Entry {
            when,
            waker: Some(waker),
            prev: NIL,
            next: head,
            state: State::Pending {
                level: level as u8,
                slot: slot as u8,
            },
        });
        assert!(key < NIL as usize, "wq: more than 4 billion timers pending");
        self.link_at_head(key, level, slot, head);
        (key, false)
    }

    /// Re-arms `key` (fired or pending) for tick `when`. If that is already
    /// due (`when <= elapsed`) the entry is fired, and the waker of a task
    /// waiting on it is returned, to be woken outside the caller's lock.
    pub(crate) fn reset(&mut self, key: usize, when: u64) -> Result<(), Option<Waker>> {
        self.unlink(key);
        if self.arm(key, when) {
            Ok(())
        } else {
            Err(self.entries[key].waker.take())
        }
    }

    /// Whether `key` fired; if not, `waker` is the one to wake. A waker it
    /// replaces is put in `replaced`, to be dropped outside the caller's
    /// lock.
    pub(crate) fn poll(&mut self, key: usize, waker: &Waker, replaced: &mut Option<Waker>) -> bool {
        let e = &mut self.entries[key];
        if e.state == State::Fired {
            return true;
        }
        match &mut e.waker {
            Some(w) if w.will_wake(waker) => {}
            slot => *replaced = slot.replace(waker.clone()),
        }
        false
    }

    /// Cancels and frees `key`. Its waker is returned to be dropped by the
    /// caller, outside its lock.
    pub(crate) fn remove(&mut self, key: usize) -> Option<Waker> {
        self.unlink(key);
        let waker = self.entries.remove(key).waker;
        if self.entries.is_empty() && self.entries.capacity() > KEEP_ENTRIES {
            // No key is live: give back what a burst of timers grew (a
            // slab never shrinks under live keys, which it cannot renumber).
            // So a shard keeps its peak while any timer lives on it (a
            // long-lived `Interval` beside a burst of request timeouts).
            // Trimming the vacant tail with timers left
            // (`Slab::shrink_to_fit`, as the task registry does) was tried
            // (2026-12-06): `wq-bench timers` inserts went from 62 to 72-76
            // ns, and the cause was not found; not kept.
            self.entries = Slab::new();
        }
        waker
    }

    /// The tick at which the earliest non-empty slot must be processed.
    pub(crate) fn next_expiration(&self) -> Option<u64> {
        (0..LEVELS)
            .filter_map(|level| self.next_at_level(level).map(|(_, at)| at))
            .min()
    }

    fn next_at_level(&self, level: usize) -> Option<(usize, u64)> {
        let occupied = self.occupied[level];
        if occupied == 0 {
            return None;
        }
        let span = slot_span(level);
        let now_slot = slot_for(self.elapsed, level);
        let distance = occupied.rotate_right(now_slot as u32).trailing_zeros() as usize;
        let slot = (now_slot + distance) % SLOTS;
        let rotation = span << SLOT_BITS;
        let mut at = (self.elapsed & !(rotation - 1)) + slot as u64 * span;
        if slot < now_slot {
            at += rotation; // W2's wrapped case
        }
        Some((slot, at))
    }

    /// Advances to tick `now`, firing what is due: each fired timer's waker
    /// is pushed on `wake`. Stops early once `wake` holds `limit` wakers (so
    /// the caller can wake them outside its lock), or once it has re-placed
    /// `limit` entries of a higher level's slot (a cascade: a million
    /// sleeps armed within seconds share a level-2 slot, and moving them
    /// all held the caller's lock, which every arm and cancel on the shard
    /// takes, for tens of milliseconds), and returns `false`; call again
    /// to go on (a slot left half moved is safe: an arm meanwhile cannot
    /// land in it, as its span is before the next level's). Returns `true`
    /// when everything due by `now` fired.
    pub(crate) fn advance(&mut self, now: u64, wake: &mut Vec<Waker>, limit: usize) -> bool {
        let mut moved = 0;
        loop {
            let next = (0..LEVELS)
                .filter_map(|level| self.next_at_level(level).map(|(s, at)| (at, level, s)))
                .min();
            let Some((at, level, slot)) = next.filter(|&(at, ..)| at <= now) else {
                self.elapsed = self.elapsed.max(now);
                return true;
            };
            self.elapsed = self.elapsed.max(at);
            while self.heads[level][slot] != NIL {
                if wake.len() >= limit || moved >= limit {
                    return false;
                }
                let key = self.heads[level][slot] as usize;
                self.unlink(key);
                let when = self.entries[key].when;
                if self.arm(key, when) {
                    moved += 1;
                } else if let Some(w) = self.entries[key].waker.take() {
                    // Due (W3): fire it.
                    wake.push(w);
                }
            }
        }
    }

    /// Fires every pending timer (the driver is shutting down).
    pub(crate) fn fire_all(&mut self, wake: &mut Vec<Waker>) {
        for level in 0..LEVELS {
            for slot in 0..SLOTS {
                while self.heads[level][slot] != NIL {
                    let key = self.heads[level][slot] as usize;
                    self.unlink(key);
                    if let Some(w) = self.entries[key].waker.take() {
                        wake.push(w);
                    }
                }
            }
        }
    }

    /// Links `key` for tick `when`; `false` (and left fired) if it is due.
    fn arm(&mut self, key: usize, when: u64) -> bool {
        self.entries[key].when = when;
        if when <= self.elapsed {
            self.entries[key].state = State::Fired;
            return false;
        }
        let (level, slot) = self.place(when);
        let head = self.heads[level][slot];
        {
            let e = &mut self.entries[key];
            e.state = State::Pending {
                level: level as u8,
                slot: slot as u8,
            };
            e.prev = NIL;
            e.next = head;
        }
        self.link_at_head(key, level, slot, head);
        true
    }

    /// The level and slot of a timer due at tick `when` (`when >
    /// elapsed`). Beyond this rotation: parked at the rotation's last
    /// tick.
    #[inline]
    fn place(&self, when: u64) -> (usize, usize) {
        let last = self.elapsed | (ROTATION - 1);
        let place = if when <= last {
            when
        } else if last > self.elapsed {
            last
        } else {
            self.elapsed + 1
        };
        let level = level_for(self.elapsed, place);
        (level, slot_for(place, level))
    }

    /// Makes `key` (its state and `next` already set, `next` = `head`) the
    /// head of its slot.
    #[inline]
    fn link_at_head(&mut self, key: usize, level: usize, slot: usize, head: u32) {
        if head != NIL {
            self.entries[head as usize].prev = key as u32;
        }
        self.heads[level][slot] = key as u32;
        self.occupied[level] |= 1 << slot;
        self.pending += 1;
    }

    /// Takes `key` out of its slot, if it is in one (it is then fired).
    fn unlink(&mut self, key: usize) {
        let State::Pending { level, slot } = self.entries[key].state else {
            return;
        };
        let (level, slot) = (level as usize, slot as usize);
        let (prev, next) = (self.entries[key].prev, self.entries[key].next);
        if prev == NIL {
            self.heads[level][slot] = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
        if self.heads[level][slot] == NIL {
            self.occupied[level] &= !(1 << slot);
        }
        let e = &mut self.entries[key];
        e.state = State::Fired;
        e.prev = NIL;
        e.next = NIL;
        self.pending -= 1;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::task::Wake;

    /// A waker that records its timer's id when woken.
    struct Id(u64, Arc<std::sync::Mutex<Vec<u64>>>);
    impl Wake for Id {
        fn wake(self: Arc<Self>) {
            self.1.lock().unwrap().push(self.0);
        }
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    #[test]
    fn levels_and_slots() {
        assert_eq!(level_for(0, 1), 0);
        assert_eq!(level_for(0, 63), 0);
        assert_eq!(level_for(0, 64), 1);
        assert_eq!(level_for(63, 64), 1);
        assert_eq!(level_for(64, 127), 0);
        assert_eq!(level_for(0, ROTATION - 1), 5);
        assert_eq!(level_for(0, ROTATION), 5, "clamped");
        assert_eq!(slot_for(130, 1), 2);
    }

    /// A foreign waker whose clone panics (polled by another executor)
    /// leaves nothing pending: the entry was linked before the clone, and
    /// stayed pending for good with no key to remove it by.
    #[test]
    fn a_waker_clone_that_panics_leaves_no_timer_pending() {
        use std::task::{RawWaker, RawWakerVTable};
        fn clone(_: *const ()) -> RawWaker {
            panic!("a foreign waker's clone")
        }
        fn noop(_: *const ()) {}
        static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
        // SAFETY: the vtable's functions ignore the (null) data pointer.
        let waker = unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) };
        let mut wheel = Wheel::new();
        let inserted =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wheel.insert(100, &waker)));
        assert!(inserted.is_err());
        assert_eq!(wheel.pending(), 0);
    }

    /// A cascade is batched as firing is: 3,000 timers sharing one level-2
    /// slot are re-placed at most `limit` per call (one call moved them
    /// all, under the shard's lock), and every one still fires at its tick.
    #[test]
    fn a_cascade_moves_at_most_a_batch_per_call() {
        let woken = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut wheel = Wheel::new();
        for i in 1..=3000u64 {
            let w = Waker::from(Arc::new(Id(8192 + i, woken.clone())));
            assert!(!wheel.insert(8192 + i, &w).1);
        }
        let mut wake = Vec::new();
        assert!(!wheel.advance(8192, &mut wake, 1024), "3,000 moved at once");
        assert!(wake.is_empty());
        // 3,000 moved to level 1, and 63 of those on to level 0.
        let mut calls = 1;
        loop {
            calls += 1;
            if wheel.advance(8192, &mut wake, 1024) {
                break;
            }
        }
        assert_eq!((calls, wake.len(), wheel.pending()), (3, 0, 3000));
        let mut now = 8192;
        while now < 8192 + 3000 {
            now += 7;
            while !wheel.advance(now, &mut wake, 1024) {}
            for w in wake.drain(..) {
                w.wake();
            }
            let fired = woken.lock().unwrap();
            assert!(fired.iter().all(|&t| t <= now), "fired early");
            assert_eq!(fired.len() as u64, (now - 8192).min(3000));
        }
        assert_eq!(wheel.pending(), 0);
    }

    /// A timer due at insert fires at once and keeps no waker: reset into
    /// the future (a `Sleep::reset` before its next poll), it wakes none of
    /// the task that first polled it.
    #[test]
    fn a_timer_fired_at_insert_keeps_no_waker() {
        let woken = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut wheel = Wheel::new();
        assert!(wheel.advance(100, &mut Vec::new(), 16));
        let first = Waker::from(Arc::new(Id(1, woken.clone())));
        let (key, fired) = wheel.insert(50, &first);
        assert!(fired);
        assert_eq!(Arc::strong_count(&woken), 2, "no clone of the waker kept");
        assert!(wheel.reset(key, 150).is_ok());
        let mut wake = Vec::new();
        assert!(wheel.advance(200, &mut wake, 16));
        assert!(wake.is_empty(), "woke the first poller's task");
        wheel.remove(key);
    }

    /// Random inserts, resets, removes and advances (including big jumps
    /// and far timers) against a map of deadlines: every timer fires
    /// exactly once, at the first advance that reaches its tick, never
    /// before.
    #[test]
    fn matches_a_brute_force_model() {
        brute_force_model(
            7,
            0,
            [10, 100, 5_000, 300_000, 40_000_000, ROTATION * 2],
            [1, 3, 64, 1000, 70_000, 50_000_000],
        );
    }

    /// The model across the end of a rotation (every 2^36 ticks, 2.2
    /// years): far timers parked at the rotation's last tick and placed
    /// again as the next rotation starts, from a wheel started just before
    /// the end and advanced by up to a rotation at a time.
    #[test]
    fn matches_a_brute_force_model_across_rotations() {
        for (seed, start) in [
            (11, ROTATION - 1_000),
            (12, ROTATION - 1),
            (13, 5 * ROTATION - 70_000),
        ] {
            brute_force_model(
                seed,
                start,
                [
                    10,
                    5_000,
                    40_000_000,
                    ROTATION / 2,
                    ROTATION * 2,
                    ROTATION * 5,
                ],
                [1, 64, 70_000, 50_000_000, ROTATION / 3, ROTATION],
            );
        }
    }

    /// Random inserts, resets, removes and advances from tick `start`:
    /// timers due within one of `spans` of now, advances by up to one of
    /// `steps`.
    fn brute_force_model(seed: u64, start: u64, spans: [u64; 6], steps: [u64; 6]) {
        let woken = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut rng = Lcg(seed);
        let mut wheel = Wheel::new();
        assert!(wheel.advance(start, &mut Vec::new(), 50));
        // id -> (key, when), for armed timers.
        let mut armed: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
        let mut keys: Vec<(u64, usize)> = Vec::new();
        let mut next_id = 0;
        let mut now = start;
        for round in 0..20_000 {
            match rng.next() % 10 {
                0..=4 => {
                    let span = spans[(rng.next() % 6) as usize];
                    let when = now + rng.next() % span;
                    let id = next_id;
                    next_id += 1;
                    let w = Waker::from(Arc::new(Id(id, woken.clone())));
                    let (key, fired) = wheel.insert(when, &w);
                    assert_eq!(fired, when <= now);
                    keys.push((id, key));
                    if !fired {
                        armed.insert(id, (key, when));
                    }
                }
                5 if !keys.is_empty() => {
                    let i = (rng.next() as usize) % keys.len();
                    let (id, key) = keys.swap_remove(i);
                    drop(wheel.remove(key));
                    armed.remove(&id);
                }
                6 if !keys.is_empty() => {
                    let (id, key) = keys[(rng.next() as usize) % keys.len()];
                    let when = now + rng.next() % 1000;
                    if wheel.reset(key, when).is_err() {
                        armed.remove(&id);
                    } else {
                        // A reset timer's waker was kept (or taken by a
                        // fire): give it a fresh one.
                        let w = Waker::from(Arc::new(Id(id, woken.clone())));
                        assert!(!wheel.poll(key, &w, &mut None));
                        armed.insert(id, (key, when));
                    }
                }
                _ => {
                    let step = steps[(rng.next() % 6) as usize];
                    now += rng.next() % step;
                    let mut wake = Vec::new();
                    while !wheel.advance(now, &mut wake, 50) {
                        wake.drain(..).for_each(Waker::wake);
                    }
                    wake.drain(..).for_each(Waker::wake);
                    let mut got = std::mem::take(&mut *woken.lock().unwrap());
                    got.sort_unstable();
                    let due: Vec<u64> = armed
                        .iter()
                        .filter(|(_, (_, when))| *when <= now)
                        .map(|(id, _)| *id)
                        .collect();
                    assert_eq!(got, due, "round {round}: now {now}");
                    for id in &due {
                        let (key, _) = armed.remove(id).unwrap();
                        let w = futures::task::noop_waker();
                        assert!(wheel.poll(key, &w, &mut None));
                    }
                    assert_eq!(wheel.pending(), armed.len());
                    if let Some(next) = wheel.next_expiration() {
                        let earliest = armed.values().map(|(_, w)| *w).min().unwrap();
                        assert!(
                            next > now && next <= earliest,
                            "next {next} earliest {earliest}"
                        );
                    } else {
                        assert!(armed.is_empty());
                    }
                }
            }
        }
    }

    #[test]
    fn a_million_timers_insert_cancel_and_fire() {
        let mut wheel = Wheel::new();
        let waker = futures::task::noop_waker();
        let keys: Vec<usize> = (0..1_000_000u64)
            .map(|i| wheel.insert(1 + i % 100_000, &waker).0)
            .collect();
        for k in keys.iter().step_by(2) {
            wheel.remove(*k);
        }
        let mut wake = Vec::new();
        let mut fired = 0;
        while !wheel.advance(100_000, &mut wake, 4096) {
            fired += wake.drain(..).count();
        }
        fired += wake.len();
        assert_eq!(fired, 500_000);
        assert_eq!(wheel.pending(), 0);
    }

    /// A burst of timers grows the slab; once the last entry is removed the
    /// wheel gives the memory back, and works on.
    #[test]
    fn an_emptied_wheel_frees_what_a_burst_grew() {
        let mut wheel = Wheel::new();
        let waker = futures::task::noop_waker();
        let keys: Vec<usize> = (0..100_000u64)
            .map(|i| wheel.insert(1 + i % 1000, &waker).0)
            .collect();
        assert!(wheel.entries.capacity() >= 100_000);
        for k in keys {
            wheel.remove(k);
        }
        assert!(
            wheel.entries.capacity() <= KEEP_ENTRIES,
            "capacity {} kept",
            wheel.entries.capacity()
        );
        let (k, fired) = wheel.insert(5, &waker);
        assert!(!fired);
        let mut wake = Vec::new();
        assert!(wheel.advance(10, &mut wake, 16));
        assert_eq!(wake.len(), 1);
        wheel.remove(k);
        assert_eq!(wheel.pending(), 0);
    }
}
