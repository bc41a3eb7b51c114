//! The `max_active` gate of a workqueue: at most `max` items active, the
//! rest on an inactive FIFO, released in order as slots free (the protocol
//! is in the parent module's docs; this is its code, generic over the list
//! so that loom can check it with a list of its own atomics).

use crate::loom::Fences;
use crate::loom::sync::atomic::{AtomicUsize, Ordering};

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

/// The active count and its limit.
#[derive(Debug)]
pub(crate) struct Gate {
    active: AtomicUsize,
    max: AtomicUsize,
    /// `SeqCst` and fences (turned off by a negative model).
    fences: Fences,
}

impl Gate {
    pub(crate) fn new(max: usize) -> Gate {
        Gate {
            active: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
            fences: Fences::default(),
        }
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub(crate) fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Takes a slot if one is free. `SeqCst`: one side of the gate's Dekker
    /// pairs (a spawner's push against a finisher's give-back).
    fn try_acquire(&self) -> bool {
        let max = self.max.load(self.fences.order());
        self.active
            .fetch_update(self.fences.order(), self.fences.order(), |a| {
                (a < max).then_some(a + 1)
            })
            .is_ok()
    }

    /// A new item: `Some(item)` back if it may be released now (it holds a
    /// slot), else it is queued on `list` (and items may be released
    /// through `release`, this one included).
    pub(crate) fn admit<T>(
        &self,
        list: &impl Fifo<T>,
        item: T,
        release: &mut impl FnMut(T),
    ) -> Option<T> {
        // FIFO: nobody overtakes an item already waiting.
        if list.is_empty() && self.try_acquire() {
            return Some(item);
        }
        list.push(item);
        // The spawner's half: pushed before trying for a slot.
        self.fences.fence();
        self.pump(list, release);
        None
    }

    /// A released item finished: its slot goes back, and waiting items are
    /// released into the free slots.
    pub(crate) fn finished<T>(&self, list: &impl Fifo<T>, release: &mut impl FnMut(T)) {
        self.active.fetch_sub(1, self.fences.order());
        // The finisher's half: the slot is free before the look at the list.
        self.fences.fence();
        self.pump(list, release);
    }

    /// A slot was taken for an item that could not be released after all.
    pub(crate) fn give_back(&self) {
        self.active.fetch_sub(1, self.fences.order());
    }

    /// A new limit; waiting items are released if it allows.
    pub(crate) fn set_max<T>(&self, max: usize, list: &impl Fifo<T>, release: &mut impl FnMut(T)) {
        self.max.store(max, self.fences.order());
        self.fences.fence();
        self.pump(list, release);
    }

    /// Releases waiting items while slots are free.
    pub(crate) fn pump<T>(&self, list: &impl Fifo<T>, release: &mut impl FnMut(T)) {
        while !list.is_empty() {
            if !self.try_acquire() {
                return;
            }
            match list.pop() {
                Some(item) => release(item),
                None => {
                    // Taken by another pump: give the slot back and look
                    // again (a pusher may have missed it meanwhile).
                    self.active.fetch_sub(1, self.fences.order());
                    self.fences.fence();
                }
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// A FIFO of item numbers made of loom atomics: `tail` counts pushes,
    /// `head` pops (items are numbered in push order).
    #[derive(Default)]
    struct Counted {
        head: AtomicUsize,
        tail: AtomicUsize,
    }

    impl Fifo<usize> for Counted {
        fn push(&self, _: usize) {
            // Release, as a queue's push publishes its item.
            self.tail.fetch_add(1, Ordering::Release);
        }
        fn pop(&self) -> Option<usize> {
            let mut h = self.head.load(Ordering::Acquire);
            loop {
                if h >= self.tail.load(Ordering::Acquire) {
                    return None;
                }
                match self
                    .head
                    .compare_exchange(h, h + 1, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => return Some(h),
                    Err(now) => h = now,
                }
            }
        }
        fn is_empty(&self) -> bool {
            self.head.load(Ordering::Acquire) >= self.tail.load(Ordering::Acquire)
        }
    }

    /// max_active 1: item A is active; B is admitted by one thread while A
    /// finishes on another. B must be released (by either), exactly once,
    /// and never while A holds the slot.
    fn admit_racing_finish(unfenced: bool) {
        loom::model(move || {
            let gate = Arc::new(Gate {
                fences: Fences { off: unfenced },
                ..Gate::new(1)
            });
            let list = Arc::new(Counted::default());
            let released = Arc::new(AtomicUsize::new(0));
            assert!(gate.admit(&*list, 0, &mut |_| unreachable!()).is_some());
            let (g, l, r) = (gate.clone(), list.clone(), released.clone());
            let spawner = loom::thread::spawn(move || {
                let mut release = |_| {
                    r.fetch_add(1, Ordering::Relaxed);
                };
                if g.admit(&*l, 1, &mut release).is_some() {
                    release(1);
                }
            });
            let r = released.clone();
            gate.finished(&*list, &mut |_| {
                r.fetch_add(1, Ordering::Relaxed);
            });
            spawner.join().unwrap();
            assert_eq!(
                released.load(Ordering::Relaxed),
                1,
                "item B stranded on the inactive list (or released twice)"
            );
            assert_eq!(gate.active(), 1, "B holds the one slot");
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
}
