//! A worker's **LIFO slot**: the task its running poll last spawned or
//! woke into the worker's own pool, run next while its data is in cache
//! (tokio's `lifo_slot`, Go's `runnext`). Siblings do not look there; the
//! watchdog takes the task out when the worker's current poll (the one
//! that put it, or a later one) runs too long, so
//! a CPU hog or a poll blocking its thread does not hold it (the kernel's
//! workqueue has no such slot; its CPU-intensive detection lets the pool's
//! other work run, and this is that work too).
//!
//! # Protocol
//! One **owner**, the worker thread holding the slot (the only one that
//! puts), and **thieves** (the watchdog, any thread in principle). The slot
//! is one atomic pointer, empty or holding one task.
//! - **Put** (owner): if the slot reads empty, a plain store of the task
//!   (`Release`: a thief that takes it sees the task as the owner left it).
//!   Only the owner makes the slot full and a thief only empties it, so the
//!   slot is still empty when the store lands. If it reads full, a
//!   compare-and-swap of that task for the new one: the task it displaced
//!   goes to the owner's deque; if it fails, a thief took that task, the
//!   slot is empty, and a plain store follows.
//! - **Take** (owner): if the slot reads empty, it is (as above): nothing
//!   to do, and no locked instruction. If full, a compare-and-swap of the
//!   task it read for empty, which fails only if a thief took it first.
//! - **Steal** (thief): the same, once (a failure means the owner moved
//!   on: its poll is not the long one any more).
//!
//! Invariant: every task put leaves the slot through exactly one
//! successful compare-and-swap, so it runs once. A compare-and-swap that
//! expects a pointer read earlier may find the same address put again
//! meanwhile (the same task woken again, or a new task where a finished
//! one was freed): it then removes the task the slot holds now, having
//! synchronized with the put that placed it, which is as right as
//! removing the one it read (no ABA hazard;
//! `loom_a_task_put_again_at_the_same_address_comes_out_once_per_put`).
//! The model `loom_a_lifo_task_is_taken_once` races a
//! thief against puts and takes; with the owner's take made a plain load
//! and store it fails. (Compare-and-swap, not swap: loom 0.7 lets a swap
//! read a value that a store it raced with then overwrites, tokio-rs/loom
//! #254, and the model then fails on a correct slot.)
//!
//! # Cost
//! tokio's slot is a plain field: nothing can take its task while the poll
//! that put it runs. Here a put into an empty slot is a load and a store,
//! and taking a task, or displacing one with a put, is one
//! compare-and-swap (a locked instruction, on a line the watchdog only
//! writes to steal) in place of a plain load and store: the price of a
//! slot the watchdog can empty.

use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::loom::sync::atomic::{AtomicPtr, Ordering};

/// A value that travels as one pointer (a task's `Runnable`).
pub(crate) trait Raw: Sized {
    fn into_raw(self) -> NonNull<()>;
    /// # Safety
    /// `ptr` came from [`Raw::into_raw`] of this type, and is turned back
    /// once.
    unsafe fn from_raw(ptr: NonNull<()>) -> Self;
}

impl Raw for crate::task::Runnable {
    fn into_raw(self) -> NonNull<()> {
        crate::task::Runnable::into_raw(self)
    }

    unsafe fn from_raw(ptr: NonNull<()>) -> Self {
        // SAFETY: the caller's contract.
        unsafe { crate::task::Runnable::from_raw(ptr) }
    }
}

/// The slot (module docs).
pub(crate) struct LifoSlot<T: Raw> {
    task: AtomicPtr<()>,
    /// Under loom: the owner's take as a plain load and store (the negative
    /// model).
    #[cfg(loom)]
    plain_take: bool,
    /// Under loom: the owner's put into an empty slot as a relaxed store
    /// (the negative model of the payload's publication).
    #[cfg(loom)]
    relaxed_put: bool,
    /// It holds a `T` as a pointer (neither `Send` nor `Sync` by itself:
    /// the impls below say when).
    _owns: PhantomData<*const T>,
}

// SAFETY: the slot moves a `T` from the thread that puts it to the one
// that takes it (a thief's), and shares nothing else: `T: Send` suffices,
// to send the slot or to share it.
unsafe impl<T: Raw + Send> Send for LifoSlot<T> {}
// SAFETY: as above.
unsafe impl<T: Raw + Send> Sync for LifoSlot<T> {}

impl<T: Raw> Default for LifoSlot<T> {
    fn default() -> Self {
        LifoSlot {
            task: AtomicPtr::new(std::ptr::null_mut()),
            #[cfg(loom)]
            plain_take: false,
            #[cfg(loom)]
            relaxed_put: false,
            _owns: PhantomData,
        }
    }
}

impl<T: Raw> std::fmt::Debug for LifoSlot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LifoSlot")
            .field("full", &!self.is_empty())
            .finish()
    }
}

impl<T: Raw> LifoSlot<T> {
    /// Owner: puts `task` in the slot; returns the task it displaced, if a
    /// thief did not take that one.
    #[inline]
    pub(crate) fn put(&self, task: T) -> Option<T> {
        let new = task.into_raw().as_ptr();
        let old = self.task.load(Ordering::Relaxed);
        // A failed exchange means a thief emptied the slot: empty it
        // stays, but for the store below.
        if !old.is_null()
            && let Ok(old) =
                self.task
                    .compare_exchange(old, new, Ordering::AcqRel, Ordering::Relaxed)
        {
            // SAFETY: the pointer came from `into_raw` and the exchange
            // removed it: no one else turns it back.
            return Some(unsafe { T::from_raw(NonNull::new_unchecked(old)) });
        }
        // Release: a thief that takes the task reads what its spawner or
        // waker wrote to it (its header: the home pool) before this.
        #[cfg(loom)]
        let order = if self.relaxed_put {
            Ordering::Relaxed
        } else {
            Ordering::Release
        };
        #[cfg(not(loom))]
        let order = Ordering::Release;
        self.task.store(new, order);
        None
    }

    /// Owner: takes the task in the slot, if any.
    #[inline]
    pub(crate) fn take(&self) -> Option<T> {
        let old = self.task.load(Ordering::Relaxed);
        if old.is_null() {
            return None;
        }
        #[cfg(loom)]
        if self.plain_take {
            self.task.store(std::ptr::null_mut(), Ordering::Relaxed);
            // SAFETY: (not safe: the negative model's point.)
            return Some(unsafe { T::from_raw(NonNull::new_unchecked(old)) });
        }
        self.remove(old)
    }

    /// Thief: takes the task in the slot, if any. One attempt: `None` if
    /// the owner changed the slot meanwhile (it is not in a long poll then).
    pub(crate) fn steal(&self) -> Option<T> {
        let old = self.task.load(Ordering::Acquire);
        if old.is_null() {
            return None;
        }
        self.remove(old)
    }

    /// Empties the slot if it still holds `old` (non-null), and returns
    /// that task. The same pointer put again meanwhile is the same task in
    /// the slot again: taking it then is as good (no ABA hazard).
    fn remove(&self, old: *mut ()) -> Option<T> {
        self.task
            .compare_exchange(
                old,
                std::ptr::null_mut(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .ok()
            // SAFETY: as in `put`.
            .map(|p| unsafe { T::from_raw(NonNull::new_unchecked(p)) })
    }

    /// Whether the slot is empty. A hint: a thief may empty it right after
    /// (for the owner, "full" may turn out empty, never the reverse).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.task.load(Ordering::Relaxed).is_null()
    }
}

impl<T: Raw> Drop for LifoSlot<T> {
    fn drop(&mut self) {
        drop(self.take());
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// A task stand-in: a number carried as the pointer itself.
    #[derive(Debug)]
    struct Token(usize);

    impl Raw for Token {
        fn into_raw(self) -> NonNull<()> {
            NonNull::new(self.0 as *mut ()).expect("tokens start at 1")
        }

        unsafe fn from_raw(ptr: NonNull<()>) -> Self {
            Token(ptr.as_ptr() as usize)
        }
    }

    /// A thief that steals twice from `slot`; it gives what it got.
    fn two_steals(slot: &Arc<LifoSlot<Token>>) -> thread::JoinHandle<Vec<Token>> {
        let slot = slot.clone();
        thread::spawn(move || {
            let mut got: Vec<Token> = slot.steal().into_iter().collect();
            got.extend(slot.steal());
            got
        })
    }

    /// The owner puts three tasks (the second displacing the first) and
    /// takes twice, while a thief steals twice: each task comes out once.
    fn model(plain_take: bool) {
        loom::model(move || {
            let mut slot = LifoSlot::<Token>::default();
            slot.plain_take = plain_take;
            let slot = Arc::new(slot);
            let thief = two_steals(&slot);
            let (mut got, mut log) = (Vec::new(), Vec::new());
            let mut step = |what: &str, out: Vec<Token>| {
                log.push(format!("{what}: {out:?}"));
                got.extend(out);
            };
            step("put 1", slot.put(Token(1)).into_iter().collect());
            step("put 2", slot.put(Token(2)).into_iter().collect());
            step("take", slot.take().into_iter().collect());
            step("put 3", slot.put(Token(3)).into_iter().collect());
            step("take", slot.take().into_iter().collect());
            step("thief", thief.join().unwrap());
            step("take", slot.take().into_iter().collect());
            let mut seen: Vec<usize> = got.iter().map(|t| t.0).collect();
            seen.sort_unstable();
            assert_eq!(seen, [1, 2, 3], "a task lost or ran twice: {log:?}");
        });
    }

    #[test]
    fn loom_a_lifo_task_is_taken_once() {
        model(false);
    }

    #[test]
    #[should_panic(expected = "a task lost or ran twice")]
    fn loom_a_lifo_task_is_taken_once_fails_with_a_plain_take() {
        model(true);
    }

    /// The ABA case: the owner puts the same address again (a task woken
    /// again, or a new one where a freed one was) while a thief that read
    /// it the first time tries its compare-and-swap: each put comes out
    /// once, whichever side takes it.
    fn same_address(plain_take: bool) {
        loom::model(move || {
            let mut slot = LifoSlot::<Token>::default();
            slot.plain_take = plain_take;
            let slot = Arc::new(slot);
            let thief = two_steals(&slot);
            let mut got = Vec::new();
            for _ in 0..2 {
                got.extend(slot.put(Token(1)));
                got.extend(slot.take());
            }
            got.extend(thief.join().unwrap());
            got.extend(slot.take());
            let seen: Vec<usize> = got.iter().map(|t| t.0).collect();
            assert_eq!(seen, [1, 1], "a put lost or taken twice");
        });
    }

    #[test]
    fn loom_a_task_put_again_at_the_same_address_comes_out_once_per_put() {
        same_address(false);
    }

    #[test]
    #[should_panic(expected = "a put lost or taken twice")]
    fn loom_a_task_put_again_fails_with_a_plain_take() {
        same_address(true);
    }

    /// A task with a body: a value its owner writes before the put (as a
    /// spawner writes a task's header) and whoever takes it reads.
    struct Boxed(Box<loom::cell::UnsafeCell<usize>>);

    impl Raw for Boxed {
        fn into_raw(self) -> NonNull<()> {
            NonNull::new(Box::into_raw(self.0).cast()).expect("a box")
        }

        unsafe fn from_raw(ptr: NonNull<()>) -> Self {
            // SAFETY: a pointer `into_raw` gave, turned back once.
            Boxed(unsafe { Box::from_raw(ptr.as_ptr().cast()) })
        }
    }

    /// The owner writes a task's body and puts it; a thief that steals it
    /// reads the body: the put's Release and the steal's Acquire order the
    /// two (loom reports a read of the cell that is not, as a causality
    /// violation).
    fn payload(relaxed_put: bool) {
        loom::model(move || {
            let mut slot = LifoSlot::<Boxed>::default();
            slot.relaxed_put = relaxed_put;
            let slot = Arc::new(slot);
            let thief = {
                let slot = slot.clone();
                thread::spawn(move || {
                    let stolen = slot.steal()?;
                    // SAFETY: the thief owns what it stole.
                    Some(stolen.0.with(|v| unsafe { *v }))
                })
            };
            let task = Boxed(Box::new(loom::cell::UnsafeCell::new(0)));
            // SAFETY: not shared yet.
            task.0.with_mut(|v| unsafe { *v = 42 });
            assert!(slot.put(task).is_none());
            if let Some(v) = thief.join().unwrap() {
                assert_eq!(v, 42);
            }
            drop(slot.take());
        });
    }

    #[test]
    fn loom_a_stolen_task_is_read_as_its_owner_wrote_it() {
        payload(false);
    }

    #[test]
    #[should_panic(expected = "Causality violation")]
    fn loom_a_stolen_task_is_read_as_written_fails_with_a_relaxed_put() {
        payload(true);
    }
}
