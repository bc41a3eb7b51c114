//! Task-local values: [`task_local!`](crate::task_local) declares a
//! [`LocalKey`]; [`LocalKey::scope`] runs a future with a value of it set,
//! and code the future runs reads it ([`LocalKey::with`], `get`) as long
//! as it runs inside that future (a request's id, a tracing context, a
//! deadline), whatever worker polls it.
//!
//! # Protocol
//!
//! A key is a thread-local slot (`RefCell<Option<T>>`, empty outside every
//! scope). A [`TaskLocalFuture`] owns its value between polls; each poll
//! of it swaps the value into the polling thread's slot, polls the inner
//! future, and swaps it back out, through a guard, so a poll that unwinds
//! puts it back too. So:
//! - a value is in a thread's slot only during a poll of its scope on that
//!   thread: a task that moves to another worker between polls takes it
//!   along, and tasks interleaving on one worker never see each other's;
//! - scopes of one key nest: the inner poll's swap saves the outer value
//!   in the inner future, and its swap back restores it;
//! - the inner future is dropped inside its scope too, when it completes
//!   or when the scope is dropped first (its destructors may read the
//!   value), except where the swap cannot be made: inside a `with` of the
//!   same key (its destructors then see the value that `with` reads) or
//!   during the thread's thread-local destructors (they see none);
//! - `sync_scope` is the same swap around a closure;
//! - a `with` holds a borrow of the slot while its closure runs: a scope
//!   of the same key entered inside that closure would have to swap the
//!   borrowed value out, and panics saying so (tokio's does too).
//!
//! Spawned tasks do not inherit their spawner's values (as tokio's):
//! wrap the spawned future in a scope of its own.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Declares task-local keys: `static NAME: Type;` items, each a
/// [`LocalKey`] (attributes and a visibility allowed, several in one
/// call).
///
/// ```
/// wq::task_local! {
///     /// The id of the request a task is serving.
///     pub static REQUEST_ID: u64;
/// }
///
/// # let rt = wq::Runtime::new().unwrap();
/// rt.block_on(REQUEST_ID.scope(7, async {
///     wq::task::yield_now().await;
///     assert_eq!(REQUEST_ID.get(), 7);
/// }));
/// assert!(REQUEST_ID.try_with(|_| ()).is_err());
/// ```
#[macro_export]
macro_rules! task_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty; $($rest:tt)*) => {
        $crate::__task_local_key!($(#[$attr])* $vis $name, $t);
        $crate::task_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty) => {
        $crate::__task_local_key!($(#[$attr])* $vis $name, $t);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __task_local_key {
    ($(#[$attr:meta])* $vis:vis $name:ident, $t:ty) => {
        $(#[$attr])*
        $vis static $name: $crate::task::LocalKey<$t> = {
            ::std::thread_local! {
                static __WQ_TASK_LOCAL: ::std::cell::RefCell<::std::option::Option<$t>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }
            $crate::task::LocalKey::__new(__WQ_TASK_LOCAL)
        };
    };
}

/// A task-local key, declared with [`task_local!`](crate::task_local).
pub struct LocalKey<T: 'static> {
    slot: std::thread::LocalKey<RefCell<Option<T>>>,
}

impl<T: 'static> LocalKey<T> {
    #[doc(hidden)]
    pub const fn __new(slot: std::thread::LocalKey<RefCell<Option<T>>>) -> LocalKey<T> {
        LocalKey { slot }
    }

    /// `future`, with this key set to `value` while it runs (each of its
    /// polls, and its drop: the module docs say where a drop cannot be
    /// inside the scope); the value is dropped with the returned future,
    /// or taken back ([`TaskLocalFuture::take_value`]).
    pub fn scope<F: Future>(&'static self, value: T, future: F) -> TaskLocalFuture<T, F> {
        TaskLocalFuture {
            key: self,
            value: Some(value),
            future: Some(future),
        }
    }

    /// Runs `f` with this key set to `value`, and gives its result.
    ///
    /// # Panics
    /// Inside a [`with`](LocalKey::with) of this key (module docs).
    #[track_caller]
    pub fn sync_scope<R>(&'static self, value: T, f: impl FnOnce() -> R) -> R {
        let mut value = Some(value);
        self.swapped(&mut value, f)
    }

    /// Runs `f` with `value` swapped into this thread's slot, and swaps it
    /// back after, also if `f` unwinds.
    #[track_caller]
    fn swapped<R>(&'static self, value: &mut Option<T>, f: impl FnOnce() -> R) -> R {
        struct Back<'a, T: 'static> {
            key: &'static LocalKey<T>,
            value: &'a mut Option<T>,
        }
        impl<T: 'static> Drop for Back<'_, T> {
            fn drop(&mut self) {
                // The slot was borrowable at the swap in, and every borrow
                // since (a `with`, a nested scope) ended with its closure
                // or its own swap back.
                self.key
                    .slot
                    .with(|slot| std::mem::swap(self.value, &mut slot.borrow_mut()));
            }
        }
        self.slot.with(|slot| match slot.try_borrow_mut() {
            Ok(mut slot) => std::mem::swap(value, &mut slot),
            Err(_) => panic!(
                "a task-local scope was entered inside a `with` of the same key (wq::task::LocalKey::with): the value it reads cannot be swapped out; enter the scope outside the closure"
            ),
        });
        let back = Back { key: self, value };
        let out = f();
        drop(back);
        out
    }

    /// Runs `f` with a reference to this key's value.
    ///
    /// # Panics
    /// Outside every scope of this key ([`try_with`](LocalKey::try_with)
    /// says so instead).
    #[track_caller]
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        match self.try_with(f) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs `f` with a reference to this key's value, or says that no
    /// scope of it is running here ([`AccessError`]).
    pub fn try_with<R>(&'static self, f: impl FnOnce(&T) -> R) -> Result<R, AccessError> {
        self.slot
            .try_with(|slot| {
                let slot = slot.borrow();
                slot.as_ref().map(f).ok_or(AccessError(()))
            })
            .unwrap_or(Err(AccessError(())))
    }

    /// A copy of this key's value.
    ///
    /// # Panics
    /// As [`with`](LocalKey::with).
    #[track_caller]
    pub fn get(&'static self) -> T
    where
        T: Clone,
    {
        self.with(T::clone)
    }
}

impl<T: 'static> fmt::Debug for LocalKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKey").finish_non_exhaustive()
    }
}

/// A task-local key was read outside every scope of it (or while the
/// thread's thread-locals were being destroyed).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AccessError(());

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "task-local value not set: it is read only inside a future run by its key's `scope` (or a closure run by `sync_scope`), and not while the thread's thread-locals are being destroyed; spawned tasks do not inherit their spawner's values",
        )
    }
}

impl fmt::Debug for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessError({self})")
    }
}

impl std::error::Error for AccessError {}

/// A future run with a task-local value set ([`LocalKey::scope`]).
pub struct TaskLocalFuture<T: 'static, F> {
    key: &'static LocalKey<T>,
    /// The value, while no poll of this future runs.
    value: Option<T>,
    /// Structurally pinned; `None` once it completed or was dropped
    /// (inside the scope).
    future: Option<F>,
}

impl<T: 'static, F> TaskLocalFuture<T, F> {
    /// The value, taken out of the scope: after the future completed, or
    /// before (its later polls then run with the key not set). `None` if
    /// taken already.
    pub fn take_value(self: Pin<&mut Self>) -> Option<T> {
        // SAFETY: `value` is not structurally pinned; nothing pinned moves.
        let this = unsafe { self.get_unchecked_mut() };
        this.value.take()
    }
}

impl<T: 'static, F: Future> Future for TaskLocalFuture<T, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of
        // its place (only dropped there, `Drop`), and `value` and `key`,
        // which are not, are only read or swapped.
        let this = unsafe { self.get_unchecked_mut() };
        let key = this.key;
        let future = &mut this.future;
        key.swapped(&mut this.value, || {
            // SAFETY: as above: pinned where it lies.
            let mut future = unsafe { Pin::new_unchecked(future) };
            let Some(inner) = future.as_mut().as_pin_mut() else {
                panic!("a wq::task::TaskLocalFuture was polled after it completed");
            };
            let out = inner.poll(cx);
            if out.is_ready() {
                // Done: dropped now, in its scope, where it lies.
                future.set(None);
            }
            out
        })
    }
}

impl<T: 'static, F> Drop for TaskLocalFuture<T, F> {
    fn drop(&mut self) {
        if self.future.is_none() {
            return;
        }
        let key = self.key;
        let future = &mut self.future;
        // Dropped in its scope, where it lies (pinned): its destructors
        // may read the value. Without it where the swap cannot be made:
        // the thread's slots are gone (a thread-local's destructor), or a
        // `with` of the key is reading it (a panic in a drop could abort).
        if key
            .slot
            .try_with(|slot| slot.try_borrow_mut().is_ok())
            .unwrap_or(false)
        {
            key.swapped(&mut self.value, || *future = None);
        } else {
            *future = None;
        }
    }
}

impl<T: fmt::Debug + 'static, F> fmt::Debug for TaskLocalFuture<T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskLocalFuture")
            .field("value", &self.value)
            .finish_non_exhaustive()
    }
}
