//! The `max_active` gate of a workqueue: at most `max` items active, the
//! rest on an inactive FIFO, released in order as slots free (the protocol
//! is in the parent module's docs; this is its code, generic over the list;
//! the loom models run it over the shipped inactive list, of items never
//! aborted: `inactive`'s own model races an abort against a pop).
//!
//! # Slots leased to stripes
//! One count of active items, taken and given back by every item, is a
//! line every CPU that spawns or finishes the queue's items writes. So the
//! gate counts **leased** slots instead, and leases them to stripes (the
//! spawning thread's, as the in-flight counts) in batches: a stripe keeps
//! the slots it leased and does not use as **spares**, and its items take
//! and give back spares on the stripe's own line.
//! - **Take** on stripe `s`: a spare of `s`; else lease a batch (up to
//!   `batch` slots, while `leased < max`), one for the item, the rest
//!   spares of `s`; else reclaim the spares of another stripe, one for the
//!   item, the rest spares of `s`; else none is free.
//! - **Give back** on `s`: one more spare for `s`; a stripe holding more
//!   than two batches returns all but one batch to `leased`.
//! - A **deposit** (any step that adds spares to a stripe) is followed by
//!   a `SeqCst` fence and a look at the mode (below), and then by a pump.
//!
//! Invariant: `active + sum(spares) = leased`, and no slot is taken while
//! `leased >= max`, so at most `max` items are active; after `max` is
//! lowered, `leased` may exceed it until enough of the items already
//! active finish (no new one is admitted meanwhile). No slot is stranded while an item waits: the waiting
//! item's spawner pushes, fences, then takes, and a take looks at every
//! place a slot can be (its stripe, `leased`, every other stripe); a thread
//! that puts a slot anywhere fences, then looks at the list. Of the two
//! fences one comes first, so either the take finds the slot or the
//! depositor finds the item; a slot moved again by a third thread was
//! deposited by it, which then looks at the list itself. The models check
//! it with batches of one (`loom_an_item_is_never_stranded_on_the_inactive_list`),
//! a take that reclaims another stripe's spares
//! (`loom_a_take_reclaiming_spares_racing_a_finish_strands_nothing`), a
//! trim of a stripe's excess spares (`loom_a_trim_racing_an_admit_strands_nothing`)
//! and a global gate (`loom_in_global_mode_an_item_is_never_stranded`);
//! the negatives (`loom_*without_the_fences_*`) fail without the fences.
//!
//! # Global mode
//! A smaller `max` cannot be enforced on spares already leased, so the gate
//! turns **global** for good when `max` shrinks (or from the start when
//! `max` is too small for a batch of two per stripe): `leased` then counts
//! the active items, as one counter, and spares are swept into it. A
//! deposit that raced the sweep finds the mode global after its fence and
//! sweeps its own stripe. The models `loom_an_item_is_never_stranded_on_the_inactive_list`
//! (striped, a finish racing an admit),
//! `loom_in_global_mode_an_item_is_never_stranded` (the same race on a
//! global gate) and `loom_a_shrink_racing_a_finish_keeps_every_slot` check
//! both.
//!
//! A lowering racing a raise (both read the old limit first) turns the
//! gate global too: a `set_max` compares its limit with the one its swap
//! replaced, not only with the one it read
//! (`loom_a_raise_racing_a_lowering_keeps_the_lower_limit`). A take in
//! global mode reads the limit after the mode, and again after its slot is
//! taken (a gate global already, from a small limit or an earlier
//! lowering, orders nothing by its mode): a slot taken against a limit
//! lowered since is given back, so a take preempted across a lowering
//! does not admit against the old limit
//! (`loom_a_global_take_preempted_across_a_lowering_keeps_the_new_limit`,
//! its negative `loom_a_global_take_that_trusts_its_read_admits_over_the_new_limit`;
//! the second read needed since 2026-12-07); a striped take that
//! leased against the old limit looks at the mode after its lease, and if
//! the gate turned global meanwhile gives the lease back and takes as the
//! global gate does
//! (`loom_a_striped_take_preempted_across_a_lowering_keeps_the_new_limit`).
//! Each of the two steps has a negative model that leaves it out
//! (`loom_a_lowering_that_trusts_its_first_read_admits_over_the_limit`,
//! `loom_a_lease_against_the_old_limit_admits_over_the_new_one`).

use crate::loom::Fences;
use crossbeam_utils::CachePadded;

use crate::loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use crate::task::StripeLines;

/// The inactive list: a multi-producer, multi-consumer FIFO.
pub(crate) trait Fifo<T> {
    fn push(&self, item: T);
    /// The oldest item, if any; may fail spuriously under contention
    /// (`None` with items left): the gate re-checks.
    fn pop(&self) -> Option<T>;
    fn is_empty(&self) -> bool;
}

impl<T> Fifo<T> for crossbeam_deque::Injector<T> {
    fn push(&self, item: T) {
        crossbeam_deque::Injector::push(self, item);
    }
    fn pop(&self) -> Option<T> {
        loop {
            match self.steal() {
                crossbeam_deque::Steal::Success(t) => return Some(t),
                crossbeam_deque::Steal::Empty => return None,
                crossbeam_deque::Steal::Retry => std::hint::spin_loop(),
            }
        }
    }
    fn is_empty(&self) -> bool {
        crossbeam_deque::Injector::is_empty(self)
    }
}

/// What a take found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Taken {
    /// No free slot.
    None,
    /// A slot for the item.
    Slot,
    /// A slot for the item, and spares deposited on the stripe (a pump
    /// must follow).
    SlotAndSpares,
}

/// The leased count, the stripes' spares, and the limit.
#[derive(Debug)]
pub(crate) struct Gate {
    max: AtomicUsize,
    /// Slots leased: the active items and the stripes' spares. On a line
    /// of its own: written once per batch, while `max` and `global` are
    /// read by every take.
    leased: CachePadded<AtomicUsize>,
    /// Per stripe: `spare`, slots leased and not in use (on the queue's
    /// stripe lines).
    spares: StripeLines,
    /// Slots leased per batch.
    batch: usize,
    /// Every slot goes through `leased` (set for good: module docs).
    global: AtomicBool,
    /// `SeqCst` and fences (turned off by a negative model).
    fences: Fences,
    /// A negative model's fault, if any.
    #[cfg(loom)]
    fault: Option<Fault>,
}

/// A step left out by a negative model (`loom_tests`).
#[cfg(loom)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// A striped take keeps a lease made against the limit it read before
    /// the gate turned global.
    LeaseKeepsOldLimit,
    /// `set_max` compares its limit only with the one it read first, not
    /// with the one its swap replaced.
    SetMaxComparesTheReadLimit,
    /// A trim takes a stripe's excess spares without giving their lease
    /// back.
    TrimKeepsLease,
    /// A take on a gate global already keeps a slot taken against the
    /// limit it read, lowered since.
    GlobalTakeTrustsItsRead,
}

impl Gate {
    /// A gate of `max` slots over the stripes of `lines`.
    pub(crate) fn new(max: usize, lines: StripeLines) -> Gate {
        let batch = max / (4 * lines.len());
        Gate::with_batch(max, lines, batch, batch < 2)
    }

    /// A gate leasing `batch` slots at a time, global from the start or
    /// not.
    fn with_batch(max: usize, lines: StripeLines, batch: usize, global: bool) -> Gate {
        Gate {
            max: AtomicUsize::new(max),
            leased: CachePadded::new(AtomicUsize::new(0)),
            spares: lines,
            batch: batch.max(1),
            global: AtomicBool::new(global),
            fences: Fences::default(),
            #[cfg(loom)]
            fault: None,
        }
    }

    /// Active items now (a snapshot: stripes are read one by one).
    pub(crate) fn active(&self) -> usize {
        let spares: usize = self
            .spares
            .iter()
            .map(|s| s.spare.load(Ordering::Relaxed))
            .sum();
        self.leased.load(Ordering::Relaxed).saturating_sub(spares)
    }

    pub(crate) fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// `stripe`'s spares (`stripe` is below the stripe count).
    fn spare(&self, stripe: usize) -> &AtomicUsize {
        &self.spares[stripe].spare
    }

    fn is_global(&self) -> bool {
        self.global.load(self.fences.order())
    }

    /// Takes a slot on `stripe` if one is free. `SeqCst`: one side of the
    /// gate's Dekker pairs (a spawner's push against a depositor's slot).
    /// The common case, a spare of the stripe's own, is inlined into the
    /// spawn; the rest ([`Gate::take_elsewhere`]) is a call.
    #[inline]
    fn take(&self, stripe: usize) -> Taken {
        let o = self.fences.order();
        if !self.is_global()
            && self
                .spare(stripe)
                .fetch_update(o, o, |c| c.checked_sub(1))
                .is_ok()
        {
            return Taken::Slot;
        }
        self.take_elsewhere(stripe)
    }

    /// [`Gate::take`] once the stripe's own spares were looked at (none,
    /// or the gate is global): the global count, a lease, or another
    /// stripe's spares.
    #[inline(never)]
    fn take_elsewhere(&self, stripe: usize) -> Taken {
        let o = self.fences.order();
        if self.is_global() {
            return self.take_global();
        }
        let own = self.spare(stripe);
        let max = self.max.load(o);
        let batch = self.batch;
        let leased = self
            .leased
            .fetch_update(o, o, |l| (l < max).then(|| l + (max - l).min(batch)));
        let got = match leased {
            Ok(l) => {
                let got = (max - l).min(batch);
                // Leased against the limit read before; a lowering since
                // (the gate turned global) may have admitted items against
                // the new one: give the lease back and take as the global
                // gate does. Had the lease come first, a global take saw
                // it in `leased` (both `SeqCst`).
                #[cfg(loom)]
                let keeps = self.fault == Some(Fault::LeaseKeepsOldLimit);
                #[cfg(not(loom))]
                let keeps = false;
                if !keeps && self.is_global() {
                    self.leased.fetch_sub(got, o);
                    return match self.take(stripe) {
                        // Slots went back to `leased` while items may have
                        // queued on seeing them taken: a pump must follow,
                        // as after a deposit.
                        Taken::Slot | Taken::SlotAndSpares => Taken::SlotAndSpares,
                        // No slot free now: none was for a waiting item.
                        Taken::None => Taken::None,
                    };
                }
                got
            }
            Err(_) => self.reclaim(stripe),
        };
        match got {
            0 => Taken::None,
            1 => Taken::Slot,
            n => {
                own.fetch_add(n - 1, o);
                Taken::SlotAndSpares
            }
        }
    }

    /// A take on a global gate: a slot of `leased`, if it is below the
    /// limit. `max` is read after the mode: a shrink turns the gate global
    /// before it stores the smaller limit, so a take that finds the mode
    /// global *because of that shrink* reads that limit or a later one
    /// (read before, a take preempted across a `set_max_active(1)`
    /// admitted against the old limit after the call returned). A gate
    /// global before (a small limit, or lowered once already) orders
    /// nothing that way: the limit is read again after the slot is
    /// taken, and a slot taken against a limit lowered meanwhile is given
    /// back (module docs, "Global mode").
    fn take_global(&self) -> Taken {
        let o = self.fences.order();
        let mut gave_back = false;
        loop {
            let Ok(l) = self
                .leased
                .fetch_update(o, o, |l| (l < self.max.load(o)).then_some(l + 1))
            else {
                // No slot free now: none was for a waiting item either
                // (all are held by active items, whose ends pump).
                return Taken::None;
            };
            // With `set_max`'s swap and fence: one of the two sees the
            // other (the slot in `leased`, or the new limit).
            self.fences.total_order();
            #[cfg(loom)]
            let trusts = self.fault == Some(Fault::GlobalTakeTrustsItsRead);
            #[cfg(not(loom))]
            let trusts = false;
            if trusts || l < self.max.load(o) {
                // A slot given back meanwhile may have been seen taken by
                // an item that queued: a pump must follow, as after a
                // deposit.
                return if gave_back {
                    Taken::SlotAndSpares
                } else {
                    Taken::Slot
                };
            }
            // Taken against a limit lowered since: give it back, look
            // again.
            self.leased.fetch_sub(1, o);
            gave_back = true;
        }
    }

    /// Takes every spare of the first other stripe that has some.
    fn reclaim(&self, stripe: usize) -> usize {
        let o = self.fences.order();
        let n = self.spares.len();
        (1..n)
            .map(|i| &self.spares[(stripe + i) % n].spare)
            .filter(|s| s.load(o) > 0)
            .map(|s| s.swap(0, o))
            .find(|&x| x > 0)
            .unwrap_or(0)
    }

    /// A slot taken on `stripe` is free again, and fenced: the caller may
    /// look at the list (and pump).
    fn put(&self, stripe: usize) {
        let o = self.fences.order();
        if self.is_global() {
            self.leased.fetch_sub(1, o);
            self.fences.fence();
            return;
        }
        let own = self.spare(stripe);
        let now = own.fetch_add(1, o) + 1;
        if now > 2 * self.batch
            && let Ok(had) = own.fetch_update(o, o, |c| (c > self.batch).then_some(self.batch))
        {
            #[cfg(loom)]
            let keeps = self.fault == Some(Fault::TrimKeepsLease);
            #[cfg(not(loom))]
            let keeps = false;
            if !keeps {
                self.leased.fetch_sub(had - self.batch, o);
            }
        }
        self.deposited(stripe);
    }

    /// Spares were put on `stripe`: fence, and if the gate turned global
    /// meanwhile, sweep them into `leased` (the caller then pumps).
    fn deposited(&self, stripe: usize) {
        self.fences.fence();
        if self.is_global() {
            let x = self.spare(stripe).swap(0, self.fences.order());
            if x > 0 {
                self.leased.fetch_sub(x, self.fences.order());
            }
        }
    }

    /// A new item spawned on `stripe`: `Some(item)` back if it may be
    /// released now (it holds a slot), else it is queued on `list` (and
    /// items may be released through `release`, this one included).
    #[cfg(all(test, loom))]
    pub(crate) fn admit<T>(
        &self,
        stripe: usize,
        list: &impl Fifo<T>,
        item: T,
        release: &mut impl FnMut(T),
    ) -> Option<T> {
        if self.admit_now(stripe, list, release) {
            return Some(item);
        }
        self.wait(stripe, list, item, release);
        None
    }

    /// The first half of admitting a new item spawned on `stripe`: whether
    /// it may be released now (it then holds a slot). If not, the caller
    /// hands it to [`Gate::wait`]. Inlined into the spawn, as is the take
    /// of a spare of the stripe's own (a call and its register saves were
    /// about 15 of the 53 instructions this step cost a named spawn).
    #[inline]
    pub(crate) fn admit_now<T>(
        &self,
        stripe: usize,
        list: &impl Fifo<T>,
        release: &mut impl FnMut(T),
    ) -> bool {
        // FIFO: nobody overtakes an item already waiting.
        if !list.is_empty() {
            return false;
        }
        match self.take(stripe) {
            Taken::Slot => true,
            Taken::SlotAndSpares => {
                self.deposit_and_pump(stripe, list, release);
                true
            }
            Taken::None => false,
        }
    }

    /// A take leased a batch: its spares deposited on `stripe` are
    /// followed by a pump (module docs).
    #[inline(never)]
    fn deposit_and_pump<T>(&self, stripe: usize, list: &impl Fifo<T>, release: &mut impl FnMut(T)) {
        self.deposited(stripe);
        self.pump(stripe, list, release);
    }

    /// The second half: `item` waits on `list` (and items may be released
    /// through `release`, this one included).
    pub(crate) fn wait<T>(
        &self,
        stripe: usize,
        list: &impl Fifo<T>,
        item: T,
        release: &mut impl FnMut(T),
    ) {
        list.push(item);
        // The spawner's half: pushed before trying for a slot.
        self.fences.fence();
        self.pump(stripe, list, release);
    }

    /// A released item of `stripe` finished: its slot goes back, and
    /// waiting items are released into the free slots.
    pub(crate) fn finished<T>(
        &self,
        stripe: usize,
        list: &impl Fifo<T>,
        release: &mut impl FnMut(T),
    ) {
        // The depositor's half: the slot is free, and fenced, before the
        // look at the list.
        self.put(stripe);
        self.pump(stripe, list, release);
    }

    /// A slot was taken for an item that could not be released after all
    /// (the runtime shut down). The caller then looks at the list itself.
    pub(crate) fn give_back(&self, stripe: usize) {
        self.put(stripe);
    }

    /// A new limit; waiting items are released if it allows. A smaller one
    /// turns the gate global (module docs): before the limit is stored,
    /// and again after if the limit it replaced was larger than the one
    /// read first (two calls racing: a raise to 2048 and a lowering to
    /// 1500, both reading 1024, left the gate striped under 1500 with
    /// about 2000 slots leased, for good).
    pub(crate) fn set_max<T>(
        &self,
        max: usize,
        stripe: usize,
        list: &impl Fifo<T>,
        release: &mut impl FnMut(T),
    ) {
        let o = self.fences.order();
        if max < self.max.load(o) {
            self.turn_global();
        }
        let replaced = self.max.swap(max, o);
        #[cfg(loom)]
        let read_only = self.fault == Some(Fault::SetMaxComparesTheReadLimit);
        #[cfg(not(loom))]
        let read_only = false;
        if max < replaced && !read_only {
            self.turn_global();
        }
        self.fences.fence();
        self.pump(stripe, list, release);
    }

    /// Turns the gate global (for good) and sweeps the stripes' spares
    /// into `leased`; again is harmless (a deposit racing it sweeps its
    /// own).
    fn turn_global(&self) {
        let o = self.fences.order();
        if !self.is_global() {
            self.global.store(true, o);
        }
        self.fences.fence();
        for line in &self.spares[..] {
            let x = line.spare.swap(0, o);
            if x > 0 {
                self.leased.fetch_sub(x, o);
            }
        }
    }

    /// Releases waiting items while slots are free.
    pub(crate) fn pump<T>(&self, stripe: usize, list: &impl Fifo<T>, release: &mut impl FnMut(T)) {
        while !list.is_empty() {
            match self.take(stripe) {
                Taken::None => return,
                Taken::Slot => {}
                Taken::SlotAndSpares => self.deposited(stripe),
            }
            match list.pop() {
                Some(item) => release(item),
                None => {
                    // Taken by another pump: give the slot back and look
                    // again (a pusher may have missed it meanwhile).
                    self.put(stripe);
                }
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crossbeam_deque::Injector;

    fn spare(gate: &Gate, stripe: usize) -> usize {
        gate.spare(stripe).load(Ordering::Relaxed)
    }

    /// Admits an item on `stripe`; `true` if released now.
    fn admit(gate: &Gate, stripe: usize, list: &Injector<usize>) -> bool {
        gate.admit_now(stripe, list, &mut |_| unreachable!())
    }

    #[test]
    fn a_stripe_keeps_at_most_two_batches_and_returns_the_rest() {
        let gate = Gate::with_batch(64, crate::task::stripe_lines(2), 4, false);
        let list = Injector::<usize>::new();
        for _ in 0..40 {
            assert!(admit(&gate, 0, &list));
        }
        assert_eq!(gate.active(), 40);
        assert_eq!(gate.leased.load(Ordering::Relaxed), 40);
        for i in 0..40 {
            gate.finished(0, &list, &mut |_| unreachable!());
            assert!(spare(&gate, 0) <= 8, "after {i} finishes");
        }
        assert_eq!(gate.active(), 0);
        assert_eq!(gate.leased.load(Ordering::Relaxed), spare(&gate, 0));
    }

    #[test]
    fn a_full_queue_reclaims_another_stripes_spares() {
        let gate = Gate::with_batch(8, crate::task::stripe_lines(2), 4, false);
        let list = Injector::<usize>::new();
        for _ in 0..4 {
            assert!(admit(&gate, 0, &list));
        }
        // Stripe 0 finishes two: its spares are the only free slots once
        // stripe 1 has leased the last batch.
        gate.finished(0, &list, &mut |_| unreachable!());
        gate.finished(0, &list, &mut |_| unreachable!());
        for _ in 0..4 {
            assert!(admit(&gate, 1, &list));
        }
        assert_eq!((spare(&gate, 0), spare(&gate, 1)), (2, 0));
        assert_eq!(gate.active(), 6);
        assert!(admit(&gate, 1, &list), "reclaimed from stripe 0");
        assert!(admit(&gate, 1, &list));
        assert!(!admit(&gate, 1, &list), "all 8 in use");
        assert_eq!(gate.active(), 8);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// The shipped inactive list (`super::inactive`), of items never
    /// aborted (`inactive`'s own model races an abort against a pop).
    type List = super::super::inactive::InactiveList<usize>;

    impl super::super::inactive::Waiting for usize {
        fn take(&self) -> bool {
            true
        }
        fn is(&self, _: *const ()) -> bool {
            false
        }
    }

    /// A striped gate (batch 1) of `max` slots over 2 stripes.
    fn striped(max: usize, unfenced: bool) -> Gate {
        Gate {
            fences: Fences { off: unfenced },
            ..Gate::with_batch(max, crate::task::stripe_lines(2), 1, false)
        }
    }

    /// `striped(max, false)` with `fault`.
    fn faulty(max: usize, fault: Fault) -> Gate {
        Gate {
            fault: Some(fault),
            ..striped(max, false)
        }
    }

    /// A striped take (max_active 2) preempted between its read of the
    /// limit and its lease, across a `set_max_active(1)` and a global take
    /// that admitted an item under the new limit: the lease must not
    /// admit a second (it compared against the old limit; two items
    /// active under 1).
    fn take_across_a_lowering(gate: impl Fn() -> Gate + Send + Sync + 'static) {
        loom::model(move || {
            let gate = Arc::new(gate());
            let list = Arc::new(List::new());
            let (g, l) = (gate.clone(), list.clone());
            let a = loom::thread::spawn(move || g.admit_now(0, &*l, &mut |_| unreachable!()));
            gate.set_max(1, 1, &*list, &mut |_| unreachable!());
            let b = gate.admit_now(1, &*list, &mut |_| unreachable!());
            let a = a.join().unwrap();
            assert!(!(a && b), "two items active under max_active 1");
            assert!(gate.active() <= 1, "{} active", gate.active());
        });
    }

    #[test]
    fn loom_a_striped_take_preempted_across_a_lowering_keeps_the_new_limit() {
        take_across_a_lowering(|| striped(2, false));
    }

    /// A lease kept though the gate turned global after the limit was
    /// read: the model must find two items active under 1.
    #[test]
    #[should_panic(expected = "two items active")]
    fn loom_a_lease_against_the_old_limit_admits_over_the_new_one() {
        take_across_a_lowering(|| faulty(2, Fault::LeaseKeepsOldLimit));
    }

    /// A gate global already (max_active 2, as a queue lowered once, or
    /// built with a small limit), item X active: a take preempted between
    /// its read of the limit and its increment, across a
    /// `set_max_active(1)`, must not admit a second item after the call
    /// returned (`leased` did not move, so the increment succeeded).
    fn global_take_across_a_lowering(gate: impl Fn() -> Gate + Send + Sync + 'static) {
        loom::model(move || {
            let gate = Arc::new(gate());
            let list = Arc::new(List::new());
            assert!(gate.admit_now(0, &*list, &mut |_| unreachable!()));
            let (g, l) = (gate.clone(), list.clone());
            let a = loom::thread::spawn(move || g.admit_now(1, &*l, &mut |_| unreachable!()));
            gate.set_max(1, 0, &*list, &mut |_| unreachable!());
            // `SeqCst` (`active` reads `Relaxed`, and may miss a slot taken
            // before the lowering): the items admitted by the return.
            let at_return = gate.leased.load(Ordering::SeqCst);
            a.join().unwrap();
            assert!(
                gate.active() <= at_return.max(1),
                "admitted over the new limit after set_max returned: {} active",
                gate.active()
            );
        });
    }

    /// `striped(max, false)`, global from the start.
    fn global(max: usize) -> Gate {
        Gate {
            global: AtomicBool::new(true),
            ..striped(max, false)
        }
    }

    #[test]
    fn loom_a_global_take_preempted_across_a_lowering_keeps_the_new_limit() {
        global_take_across_a_lowering(|| global(2));
    }

    /// The slot taken against the old limit kept: the model must find two
    /// items active under 1.
    #[test]
    #[should_panic(expected = "admitted over the new limit")]
    fn loom_a_global_take_that_trusts_its_read_admits_over_the_new_limit() {
        global_take_across_a_lowering(|| Gate {
            fault: Some(Fault::GlobalTakeTrustsItsRead),
            ..global(2)
        });
    }

    /// max_active 1, striped: item A is active (stripe 0); B is admitted by
    /// one thread (stripe 1) while A finishes on another. B must be
    /// released (by either), exactly once, and never while A holds the
    /// slot.
    fn admit_racing_finish(unfenced: bool) {
        admit_racing_finish_on(move || striped(1, unfenced));
    }

    fn admit_racing_finish_on(gate: impl Fn() -> Gate + Send + Sync + 'static) {
        admit_racing(gate, 1, "", |gate, list, mut release| {
            gate.finished(0, list, &mut release)
        });
    }

    /// Item A is active (stripe 0); B is admitted by one thread (stripe 1)
    /// while `other` (given a releaser) runs on another. B must be
    /// released (by either), exactly once, and `active` items be left.
    fn admit_racing(
        gate: impl Fn() -> Gate + Send + Sync + 'static,
        active: usize,
        stranded_by: &'static str,
        other: impl Fn(&Gate, &List, &mut dyn FnMut(usize)) + Send + Sync + 'static,
    ) {
        loom::model(move || {
            let gate = Arc::new(gate());
            let list = Arc::new(List::new());
            let released = Arc::new(AtomicUsize::new(0));
            assert!(gate.admit(0, &*list, 0, &mut |_| unreachable!()).is_some());
            let (g, l, r) = (gate.clone(), list.clone(), released.clone());
            let spawner = loom::thread::spawn(move || {
                let mut release = |_| {
                    r.fetch_add(1, Ordering::Relaxed);
                };
                if g.admit(1, &*l, 1, &mut release).is_some() {
                    release(1);
                }
            });
            let r = released.clone();
            other(&gate, &list, &mut |_| {
                r.fetch_add(1, Ordering::Relaxed);
            });
            spawner.join().unwrap();
            let n = released.load(Ordering::Relaxed);
            assert!(n < 2, "item B released twice");
            assert_eq!(n, 1, "item B stranded on the inactive list{stranded_by}");
            assert_eq!(gate.active(), active);
        });
    }

    #[test]
    fn loom_an_item_is_never_stranded_on_the_inactive_list() {
        admit_racing_finish(false);
    }

    /// Without the fences (and with relaxed slot operations), the model
    /// must find the stranded item: the test above can fail.
    #[test]
    #[should_panic(expected = "stranded")]
    fn loom_without_the_fences_an_item_is_stranded() {
        admit_racing_finish(true);
    }

    /// The same race on a global gate (max_active 1: one count, no
    /// spares; an ordered queue's gate, and any gate after a lowering).
    #[test]
    fn loom_in_global_mode_an_item_is_never_stranded() {
        admit_racing_finish_on(|| Gate::with_batch(1, crate::task::stripe_lines(2), 1, true));
    }

    /// Without the fences, the model must find the stranded item there too.
    #[test]
    #[should_panic(expected = "stranded")]
    fn loom_in_global_mode_without_the_fences_an_item_is_stranded() {
        admit_racing_finish_on(|| Gate {
            fences: Fences { off: true },
            ..Gate::with_batch(1, crate::task::stripe_lines(2), 1, true)
        });
    }

    /// max_active 2, striped: A and B active (stripe 0). A finishes while
    /// the limit shrinks to 1 on another thread. Then C is admitted: it
    /// must wait (B holds the one slot), and start when B finishes (no
    /// slot is lost to a spare the shrink missed).
    fn shrink_racing_finish(unfenced: bool) {
        loom::model(move || {
            let gate = Arc::new(striped(2, unfenced));
            let list = Arc::new(List::new());
            let released = Arc::new(AtomicUsize::new(0));
            for item in 0..2 {
                assert!(
                    gate.admit(0, &*list, item, &mut |_| unreachable!())
                        .is_some()
                );
            }
            let (g, l) = (gate.clone(), list.clone());
            let finisher = loom::thread::spawn(move || {
                g.finished(0, &*l, &mut |_| unreachable!("nothing waits yet"));
            });
            gate.set_max(1, 1, &*list, &mut |_| unreachable!("nothing waits yet"));
            finisher.join().unwrap();
            let r = released.clone();
            let mut release = move |_| {
                r.fetch_add(1, Ordering::Relaxed);
            };
            assert!(
                gate.admit(1, &*list, 2, &mut release).is_none(),
                "C started beside B over the new limit"
            );
            gate.finished(0, &*list, &mut release);
            let n = released.load(Ordering::Relaxed);
            assert!(n < 2, "item C released twice");
            assert_eq!(n, 1, "item C stranded: a slot was lost to the shrink");
        });
    }

    #[test]
    fn loom_a_shrink_racing_a_finish_keeps_every_slot() {
        shrink_racing_finish(false);
    }

    /// Without the fences, the model must find the lost slot.
    #[test]
    #[should_panic(expected = "stranded")]
    fn loom_without_the_fences_a_shrink_loses_a_slot() {
        shrink_racing_finish(true);
    }

    /// A striped gate of `max` slots leased `batch` at a time over 2
    /// stripes: takes deposit spares, and finishes trim them.
    fn batched(max: usize, batch: usize, unfenced: bool) -> Gate {
        Gate {
            fences: Fences { off: unfenced },
            ..Gate::with_batch(max, crate::task::stripe_lines(2), batch, false)
        }
    }

    /// max_active 2 leased in batches of 2: A's take leased both slots and
    /// left one as stripe 0's spare, which B took. C is admitted on stripe
    /// 1 (no spare; nothing left to lease) while A finishes on stripe 0:
    /// C's take reclaims the spare A's finish deposits, or A's pump
    /// releases C. C starts exactly once, beside B only, and no slot is
    /// lost or made.
    fn reclaim_racing_finish(unfenced: bool) {
        loom::model(move || {
            let gate = Arc::new(batched(2, 2, unfenced));
            let list = Arc::new(List::new());
            let released = Arc::new(AtomicUsize::new(0));
            for item in 0..2 {
                assert!(
                    gate.admit(0, &*list, item, &mut |_| unreachable!())
                        .is_some()
                );
            }
            assert_eq!(gate.leased.load(Ordering::Relaxed), 2, "one lease of two");
            let (g, l, r) = (gate.clone(), list.clone(), released.clone());
            let spawner = loom::thread::spawn(move || {
                let mut release = |_| {
                    r.fetch_add(1, Ordering::Relaxed);
                };
                if g.admit(1, &*l, 2, &mut release).is_some() {
                    release(2);
                }
            });
            let r = released.clone();
            gate.finished(0, &*list, &mut |_| {
                r.fetch_add(1, Ordering::Relaxed);
            });
            spawner.join().unwrap();
            let n = released.load(Ordering::Relaxed);
            assert!(n < 2, "item C released twice");
            assert_eq!(n, 1, "item C stranded on the inactive list");
            assert_eq!(gate.active(), 2, "B and C hold the two slots");
            assert_eq!(
                gate.leased.load(Ordering::Relaxed),
                2,
                "a slot lost or made"
            );
        });
    }

    #[test]
    fn loom_a_take_reclaiming_spares_racing_a_finish_strands_nothing() {
        reclaim_racing_finish(false);
    }

    /// Without the fences, the model must find C stranded.
    #[test]
    #[should_panic(expected = "stranded")]
    fn loom_without_the_fences_a_reclaiming_take_strands_an_item() {
        reclaim_racing_finish(true);
    }

    /// max_active 3, leased one at a time: three items of stripe 0 finish
    /// one after another while D is admitted on stripe 1. The third
    /// finish finds three spares on its stripe, over two batches, and
    /// returns two to `leased`; D takes a freed slot (a spare it
    /// reclaims, a lease, or a finisher's pump) exactly once, and at the
    /// end every slot is D's or a spare, none lost, none over the limit.
    fn trim_racing_an_admit(gate: impl Fn() -> Gate + Send + Sync + 'static) {
        loom::model(move || {
            let gate = Arc::new(gate());
            let list = Arc::new(List::new());
            let released = Arc::new(AtomicUsize::new(0));
            for item in 0..3 {
                assert!(
                    gate.admit(0, &*list, item, &mut |_| unreachable!())
                        .is_some()
                );
            }
            let (g, l, r) = (gate.clone(), list.clone(), released.clone());
            let spawner = loom::thread::spawn(move || {
                let mut release = |_| {
                    r.fetch_add(1, Ordering::Relaxed);
                };
                if g.admit(1, &*l, 3, &mut release).is_some() {
                    release(3);
                }
            });
            for _ in 0..3 {
                let r = released.clone();
                gate.finished(0, &*list, &mut |_| {
                    r.fetch_add(1, Ordering::Relaxed);
                });
            }
            spawner.join().unwrap();
            let n = released.load(Ordering::Relaxed);
            assert!(n < 2, "item D released twice");
            assert_eq!(n, 1, "item D stranded on the inactive list");
            assert_eq!(gate.active(), 1, "D alone is active");
            let leased = gate.leased.load(Ordering::Relaxed);
            assert!(leased <= 3, "{leased} slots leased under max_active 3");
            assert!(
                gate.spare(0).load(Ordering::Relaxed) <= 2,
                "stripe 0 kept over two batches"
            );
        });
    }

    #[test]
    fn loom_a_trim_racing_an_admit_strands_nothing() {
        trim_racing_an_admit(|| batched(3, 1, false));
    }

    /// Without the fences, the model must find D stranded.
    #[test]
    #[should_panic(expected = "stranded")]
    fn loom_without_the_fences_a_trim_racing_an_admit_strands_an_item() {
        trim_racing_an_admit(|| batched(3, 1, true));
    }

    /// A trim that keeps the lease of the spares it takes: the model must
    /// find a slot lost (counted active, held by nobody).
    #[test]
    #[should_panic(expected = "D alone is active")]
    fn loom_a_trim_that_keeps_its_lease_loses_slots() {
        trim_racing_an_admit(|| faulty(3, Fault::TrimKeepsLease));
    }

    /// max_active 2, striped: a raise to 4 races a lowering to 3 while
    /// items are admitted. Once both returned, an item that finishes and
    /// the next admit must keep to the limit stored last: both calls read
    /// 2 first, so neither turned the gate global, and the stripes kept
    /// the slots leased under 4 as spares for good (the model failed so).
    fn raise_racing_a_lowering(gate: impl Fn() -> Gate + Send + Sync + 'static) {
        loom::model(move || {
            let gate = Arc::new(gate());
            let list = Arc::new(List::new());
            let setters: Vec<_> = [4, 3]
                .into_iter()
                .map(|max| {
                    let (g, l) = (gate.clone(), list.clone());
                    loom::thread::spawn(move || {
                        g.set_max(max, 1, &*l, &mut |_| unreachable!("nothing waits"));
                    })
                })
                .collect();
            let mut active = 0;
            for _ in 0..4 {
                if gate.admit_now(0, &*list, &mut |_| unreachable!("nothing waits")) {
                    active += 1;
                }
            }
            for s in setters {
                s.join().unwrap();
            }
            if active > 0 {
                gate.finished(0, &*list, &mut |_| unreachable!("nothing waits"));
                active -= 1;
            }
            let admitted = gate.admit_now(0, &*list, &mut |_| unreachable!("nothing waits"));
            assert!(
                !admitted || active < gate.max(),
                "admitted beside {active} active items over the limit {}",
                gate.max()
            );
        });
    }

    /// max_active 1, item X active: B is admitted (and queues) on one
    /// thread while `set_max_active(2)` runs on another. The raise frees a
    /// slot with nobody finishing: B must be released, once, by either
    /// (the spawner's push, fence, take against the raise's swap, fence,
    /// look at the list).
    fn raise_racing_a_wait(gate: impl Fn() -> Gate + Send + Sync + 'static) {
        admit_racing(gate, 2, " by the raise", |gate, list, mut release| {
            gate.set_max(2, 0, list, &mut release)
        });
    }

    #[test]
    fn loom_a_raise_racing_a_wait_releases_the_item() {
        raise_racing_a_wait(|| striped(1, false));
    }

    #[test]
    fn loom_a_raise_racing_a_wait_on_a_global_gate_releases_the_item() {
        raise_racing_a_wait(|| global(1));
    }

    /// Without the fences, the model must find the item the raise strands.
    #[test]
    #[should_panic(expected = "stranded")]
    fn loom_without_the_fences_a_raise_strands_a_waiting_item() {
        raise_racing_a_wait(|| striped(1, true));
    }

    #[test]
    fn loom_a_raise_racing_a_lowering_keeps_the_lower_limit() {
        raise_racing_a_lowering(|| striped(2, false));
    }

    /// `set_max` comparing its limit only with the one it read first: the
    /// model must find an admit over the limit.
    #[test]
    #[should_panic(expected = "over the limit")]
    fn loom_a_lowering_that_trusts_its_first_read_admits_over_the_limit() {
        raise_racing_a_lowering(|| faulty(2, Fault::SetMaxComparesTheReadLimit));
    }
}
