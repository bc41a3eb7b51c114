//! Task-local values (`wq::task_local!`): set for a future's polls on
//! whatever worker, private to each task, nested, restored after a
//! panic, there at the future's drop, and not inherited by spawns.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wq::Runtime;

use common::within;

wq::task_local! {
    /// A request's id.
    static ID: u64;
    pub(crate) static NAME: String;
}

/// Stores, when dropped, the `ID` it sees then (0: none).
struct ReadsAtDrop(Arc<AtomicUsize>);

impl Drop for ReadsAtDrop {
    fn drop(&mut self) {
        let id = ID.try_with(|id| *id).unwrap_or(0);
        self.0.store(id as usize, Ordering::SeqCst);
    }
}

/// Each task sees its own value at every poll, on a pool of two workers
/// where tasks interleave and move between polls.
#[test]
fn each_task_sees_its_own_value_across_polls_and_workers() {
    within(60, || {
        let rt = Runtime::builder()
            .default_scope(wq::Scope::System)
            .build()
            .unwrap();
        rt.block_on(async {
            let handles: Vec<_> = (0..64u64)
                .map(|i| {
                    wq::spawn(ID.scope(i, async move {
                        for _ in 0..50 {
                            assert_eq!(ID.get(), i);
                            wq::task::yield_now().await;
                        }
                        ID.with(|id| *id)
                    }))
                })
                .collect();
            for (i, h) in handles.into_iter().enumerate() {
                assert_eq!(h.await.unwrap(), i as u64);
            }
            // The workers that polled them: nothing left set there.
            let unscoped: Vec<_> = (0..64)
                .map(|_| wq::spawn(async { ID.try_with(|id| *id) }))
                .collect();
            for h in unscoped {
                assert!(h.await.unwrap().is_err());
            }
        });
    });
}

/// Scopes of one key nest, the outer value back after the inner scope;
/// two keys are independent; `sync_scope` sets it for a closure.
#[test]
fn scopes_nest_and_keys_are_independent() {
    let rt = Runtime::new().unwrap();
    rt.block_on(ID.scope(1, async {
        assert_eq!(ID.get(), 1);
        let inner = ID
            .scope(2, async {
                wq::task::yield_now().await;
                ID.get()
            })
            .await;
        assert_eq!(inner, 2);
        assert_eq!(ID.get(), 1, "the outer value restored");
        NAME.scope("n".to_owned(), async {
            assert_eq!((ID.get(), NAME.get()), (1, "n".to_owned()));
        })
        .await;
        assert!(NAME.try_with(|_| ()).is_err());
        assert_eq!(ID.sync_scope(3, || ID.get()), 3);
        assert_eq!(ID.get(), 1);
    }));
}

/// A spawned task does not inherit its spawner's value; one wrapped in a
/// scope of its own has it. (The contract, as documentation: a spawned
/// task never runs inside its spawner's poll, so this cannot fail.)
#[test]
fn spawns_do_not_inherit_values() {
    let rt = Runtime::new().unwrap();
    rt.block_on(ID.scope(5, async {
        let err = wq::spawn(async { ID.try_with(|_| ()) })
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("not set"), "{err}");
        let id = ID.get();
        assert_eq!(
            wq::spawn(ID.scope(id, async { ID.get() })).await.unwrap(),
            5
        );
    }));
}

/// A poll that panics gives the slot back: the value is not left set on
/// the worker, and a task that catches the panic still has its own.
#[test]
fn a_panicking_poll_leaves_no_value_behind() {
    within(60, || {
        // One pool of one worker: both tasks run on the same thread.
        let rt = Runtime::builder()
            .default_scope(wq::Scope::System)
            .max_workers_per_pool(1)
            .build()
            .unwrap();
        let panicked = rt.block_on(rt.spawn(ID.scope(9, async {
            panic!("boom");
        })));
        assert!(panicked.unwrap_err().is_panic());
        // The same (only) worker: nothing set there now.
        let after = rt.block_on(rt.spawn(async { ID.try_with(|id| *id) }));
        assert!(after.unwrap().is_err());
        let caught = std::panic::catch_unwind(|| ID.sync_scope(4, || panic!("in a closure")));
        assert!(caught.is_err());
        assert!(ID.try_with(|_| ()).is_err());
    });
}

/// The inner future is dropped inside its scope: its destructors read the
/// value (a scope dropped before it finished, and one never polled).
#[test]
fn the_inner_future_is_dropped_inside_its_scope() {
    let rt = Runtime::new().unwrap();
    for polled in [true, false] {
        let seen = Arc::new(AtomicUsize::new(0));
        let guard = ReadsAtDrop(seen.clone());
        let mut scoped = Box::pin(ID.scope(11, async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        }));
        if polled {
            rt.block_on(async {
                futures::future::poll_fn(|cx| {
                    assert!(scoped.as_mut().poll(cx).is_pending());
                    std::task::Poll::Ready(())
                })
                .await;
            });
        }
        drop(scoped);
        assert_eq!(seen.load(Ordering::SeqCst), 11, "polled first: {polled}");
    }
}

/// `with` outside every scope panics, naming what was wrong; a scope
/// entered inside a `with` of the same key panics too.
#[test]
fn misuse_panics_say_what_was_wrong() {
    let outside = std::panic::catch_unwind(|| ID.with(|_| ())).unwrap_err();
    let msg = common::panic_message(&*outside);
    assert!(msg.contains("task-local value not set"), "{msg}");
    let nested = std::panic::catch_unwind(|| {
        ID.sync_scope(1, || ID.with(|_| ID.sync_scope(2, || ())));
    })
    .unwrap_err();
    let msg = common::panic_message(&*nested);
    assert!(msg.contains("inside a `with` of the same key"), "{msg}");
    assert!(ID.try_with(|_| ()).is_err(), "the slot given back");
}

/// The inner future is dropped when it completes, inside its scope; a
/// poll after that panics; the value can be taken back.
#[test]
fn a_completed_scope_drops_its_future_and_gives_its_value_back() {
    let rt = Runtime::new().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let guard = ReadsAtDrop(seen.clone());
    let mut scoped = Box::pin(ID.scope(12, async move {
        let _guard = guard;
    }));
    rt.block_on(scoped.as_mut());
    assert_eq!(
        seen.load(Ordering::SeqCst),
        12,
        "dropped at its end, in its scope"
    );
    assert_eq!(scoped.as_mut().take_value(), Some(12));
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(scoped.as_mut());
    }))
    .unwrap_err();
    let msg = common::panic_message(&*again);
    assert!(msg.contains("polled after it completed"), "{msg}");
}
