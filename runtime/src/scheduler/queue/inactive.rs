//! A workqueue's inactive list, and the abort of an item waiting on it.
//!
//! # Why a lock
//! An item beyond `max_active` waits here until a slot frees. When its
//! handle aborts it, its future must be dropped then, not when its turn
//! comes: on an ordered queue whose running item awaits something the
//! waiting item owns (a channel's sender, a lock guard's release), the two
//! would wait for each other for good. A lock-free FIFO cannot give an
//! item up from its middle; this list is a `VecDeque` under a mutex, its
//! length mirrored in an atomic for the spawn's lock-free look ("is
//! anything waiting?", `Fifo::is_empty`). Only items over the limit pay
//! for the lock, as they paid for the injector's `steal` before.
//!
//! # Abort against pop
//! A waiting item carries two flags ([`Waiting`], in its task's metadata):
//! **taken** (a pop took it off the list: it is then released with a slot,
//! or dropped by the queue's close) and **aborted** (its handle aborted it
//! while it waited). Each is set by one read-modify-write that returns the
//! flags before it, so exactly one of the two comes first.
//! - **Pop** (under the lock): takes the oldest item and sets taken. If
//!   aborted came first, the item is its aborter's: it goes on the
//!   `aborted` list (under the same lock), and the pop takes the next one.
//! - **Abort**: sets aborted. If taken came first, nothing more: whoever
//!   popped the item releases or drops it (and a cancelled task is dropped
//!   by the worker that runs it, not polled). Else the item stays on one
//!   of the two lists until its aborter takes it out, so it cannot end
//!   meanwhile, and its queue, held by the item's count in flight until
//!   its end, lives while the aborter locks the list and removes it
//!   ([`InactiveList::remove`]). The aborter then releases it without a
//!   slot, to a worker that drops its future, or drops it itself if the
//!   queue is closed (`JoinHandle::abort`).
//!
//! Nothing else removes an item from `aborted`: the queue's close leaves
//! them to their aborters. `loom_an_item_aborted_while_it_waits_has_one_owner`
//! checks that a pop racing an abort leaves the item to exactly one of
//! them, and that the aborter always finds an item it claimed;
//! `loom_a_pop_ignoring_aborts_gives_an_item_two_owners` is its negative.

use std::collections::VecDeque;

use super::gate::Fifo;
use crate::loom::lock;
use crate::loom::sync::Mutex;
use crate::loom::sync::atomic::{AtomicUsize, Ordering};

/// What the list needs of a waiting item.
pub(crate) trait Waiting {
    /// Marks it taken off the list; false if its abort came first (it is
    /// then its aborter's).
    fn take(&self) -> bool;
    /// Whether it is the item `id` names (its task's metadata address).
    fn is(&self, id: *const ()) -> bool;
}

struct Lists<T> {
    /// Waiting items, oldest first.
    waiting: VecDeque<T>,
    /// Items a pop found aborted before it took them, kept for their
    /// aborters.
    aborted: Vec<T>,
}

/// The capacity `aborted` keeps however empty it gets.
const KEEP: usize = 64;

impl<T> Lists<T> {
    /// Gives memory back after a burst (`scheduler::trim`).
    fn trim(&mut self) {
        crate::scheduler::trim(&mut self.waiting);
        let cap = self.aborted.capacity();
        if cap > KEEP && self.aborted.len() < cap / 4 {
            self.aborted.shrink_to(cap / 2);
        }
    }
}

/// The inactive list (module docs).
pub(crate) struct InactiveList<T> {
    lists: Mutex<Lists<T>>,
    /// `waiting.len()`, stored under the lock, read without it.
    len: AtomicUsize,
}

impl<T> InactiveList<T> {
    pub(crate) fn new() -> InactiveList<T> {
        InactiveList {
            lists: Mutex::new(Lists {
                waiting: VecDeque::new(),
                aborted: Vec::new(),
            }),
            len: AtomicUsize::new(0),
        }
    }

    /// Items waiting now.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

impl<T: Waiting> InactiveList<T> {
    /// Takes the item `id` out of the list (or out of `aborted`, where a
    /// pop put it). Only its aborter calls this, after its abort came first
    /// (module docs): it is then on one of the two.
    pub(crate) fn remove(&self, id: *const ()) -> Option<T> {
        let mut l = lock(&self.lists);
        if let Some(i) = crate::scheduler::position_from_ends(&l.waiting, |t| t.is(id)) {
            let item = l.waiting.remove(i);
            self.len.store(l.waiting.len(), Ordering::SeqCst);
            l.trim();
            return item;
        }
        let i = l.aborted.iter().position(|t| t.is(id))?;
        let item = l.aborted.swap_remove(i);
        l.trim();
        Some(item)
    }

    /// A pop that takes the oldest item whatever its flags say: the
    /// negative control of the abort protocol.
    #[cfg(all(test, loom))]
    fn pop_ignoring_aborts(&self) -> Option<T> {
        let mut l = lock(&self.lists);
        let item = l.waiting.pop_front();
        self.len.store(l.waiting.len(), Ordering::SeqCst);
        item
    }
}

impl<T: Waiting> Fifo<T> for InactiveList<T> {
    fn push(&self, item: T) {
        let mut l = lock(&self.lists);
        l.waiting.push_back(item);
        // SeqCst, as the gate's fences around it (a push, then a fence,
        // then a try for a slot: `gate`, "no item stranded").
        self.len.store(l.waiting.len(), Ordering::SeqCst);
    }

    fn pop(&self) -> Option<T> {
        let mut l = lock(&self.lists);
        while let Some(item) = l.waiting.pop_front() {
            self.len.store(l.waiting.len(), Ordering::SeqCst);
            if item.take() {
                l.trim();
                return Some(item);
            }
            l.aborted.push(item);
        }
        l.trim();
        None
    }

    fn is_empty(&self) -> bool {
        self.len.load(Ordering::SeqCst) == 0
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU8;

    /// A waiting item with its own flags: 1 taken, 2 aborted.
    struct Item(usize, AtomicU8);

    impl Item {
        fn new(n: usize) -> Item {
            Item(n, AtomicU8::new(0))
        }
        fn id(&self) -> *const () {
            std::ptr::from_ref(self).cast()
        }
        fn abort(&self) -> bool {
            self.1.fetch_or(2, std::sync::atomic::Ordering::AcqRel) & 1 == 0
        }
    }

    impl Waiting for &Item {
        fn take(&self) -> bool {
            self.1.fetch_or(1, std::sync::atomic::Ordering::AcqRel) & 2 == 0
        }
        fn is(&self, id: *const ()) -> bool {
            std::ptr::eq(self.id(), id)
        }
    }

    #[test]
    fn pops_in_order_skipping_aborted_items_which_their_aborters_find() {
        let items: Vec<Item> = (0..4).map(Item::new).collect();
        let list = InactiveList::new();
        for i in &items {
            list.push(i);
        }
        assert_eq!(list.len(), 4);
        // 1 aborted while it waits, and removed by its aborter at once;
        // 2 aborted, and popped over before its aborter comes.
        assert!(items[1].abort());
        assert_eq!(list.remove(items[1].id()).map(|i| i.0), Some(1));
        assert!(items[2].abort());
        assert_eq!(list.pop().map(|i| i.0), Some(0));
        assert_eq!(list.pop().map(|i| i.0), Some(3), "2 was passed over");
        assert!(list.is_empty());
        assert_eq!(list.pop().map(|i| i.0), None);
        assert_eq!(list.remove(items[2].id()).map(|i| i.0), Some(2));
        // Taken first: the abort finds it gone and leaves it.
        assert!(!items[0].abort());
        assert!(list.remove(items[0].id()).is_none());
    }

    /// A burst's memory goes back as the list empties (it stayed at its
    /// peak until the queue was dropped), by pops and by aborters' removes
    /// alike.
    #[test]
    fn the_list_gives_memory_back_as_it_empties() {
        let items: Vec<Item> = (0..1 << 16).map(Item::new).collect();
        let list = InactiveList::new();
        for i in &items {
            list.push(i);
        }
        let cap = |l: &InactiveList<&Item>| lock(&l.lists).waiting.capacity();
        assert!(cap(&list) >= 1 << 16);
        while list.pop().is_some() {}
        assert!(cap(&list) <= KEEP, "{} kept", cap(&list));
        // Half aborted (their aborters remove them), half popped.
        let items: Vec<Item> = (0..1 << 12).map(Item::new).collect();
        for i in &items {
            list.push(i);
        }
        for i in items.iter().step_by(2) {
            assert!(i.abort());
            assert!(list.remove(i.id()).is_some());
        }
        while list.pop().is_some() {}
        assert!(cap(&list) <= KEEP, "{} kept", cap(&list));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU8;

    /// A waiting item of the model: its flags (1 taken, 2 aborted).
    struct Item(AtomicU8);

    /// The item's name in the model (`Waiting::is`).
    const ID: usize = 1;

    impl Waiting for Arc<Item> {
        fn take(&self) -> bool {
            self.0.fetch_or(1, Ordering::AcqRel) & 2 == 0
        }
        fn is(&self, id: *const ()) -> bool {
            id.addr() == ID
        }
    }

    /// A pump pops while the item's handle aborts it: exactly one of them
    /// ends up holding it, and an aborter whose abort came first finds it.
    fn model(pop_checks_aborts: bool) {
        loom::model(move || {
            let item = Arc::new(Item(AtomicU8::new(0)));
            let list = Arc::new(InactiveList::new());
            list.push(item.clone());
            let popper = {
                let list = list.clone();
                loom::thread::spawn(move || {
                    let got = if pop_checks_aborts {
                        list.pop()
                    } else {
                        list.pop_ignoring_aborts()
                    };
                    usize::from(got.is_some())
                })
            };
            let aborted_first = item.0.fetch_or(2, Ordering::AcqRel) & 1 == 0;
            let mine = usize::from(
                aborted_first && list.remove(std::ptr::without_provenance(ID)).is_some(),
            );
            let popped = popper.join().unwrap();
            assert_eq!(
                popped + usize::from(aborted_first),
                1,
                "the item has {} owners",
                popped + usize::from(aborted_first)
            );
            assert_eq!(mine, usize::from(aborted_first), "an aborter lost its item");
        });
    }

    #[test]
    fn loom_an_item_aborted_while_it_waits_has_one_owner() {
        model(true);
    }

    #[test]
    #[should_panic(expected = "owners")]
    fn loom_a_pop_ignoring_aborts_gives_an_item_two_owners() {
        model(false);
    }
}
