//! `wq::task::JoinSet` through the public API: results in the order tasks
//! finish, errors that leave the set going, drop aborts and detach does
//! not, `try_join_next` without waiting, `join_all`, and `shutdown`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{panic_message, within};
use futures::channel::oneshot;
use wq::task::JoinSet;
use wq::{Runtime, Scope};

fn rt() -> Runtime {
    Runtime::builder().thread_name("join-set").build().unwrap()
}

/// Sets its flag when dropped: tells when a task's future is gone.
struct Dropped(Arc<AtomicBool>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Spawns `n` tasks into `set` that never finish; each one's flag says
/// when its future is dropped.
fn spawn_pending(set: &mut JoinSet<()>, n: usize) -> Vec<Arc<AtomicBool>> {
    (0..n)
        .map(|_| {
            let flag = Arc::new(AtomicBool::new(false));
            let guard = Dropped(flag.clone());
            set.spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            });
            flag
        })
        .collect()
}

/// Waits (sleeping on the runtime's timers) until `done` says so; fails
/// after 30 s.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: never happened"
        );
        wq::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A handle (and so a `JoinSet` entry) is not as large as its task's
/// output: it held room for the output of an abort that found the task
/// complete (a 64 KiB array was a 64 KiB handle on the spawner's stack).
#[test]
fn a_handle_is_small_whatever_its_output() {
    let small = std::mem::size_of::<wq::JoinHandle<()>>();
    assert_eq!(std::mem::size_of::<wq::JoinHandle<[u8; 65536]>>(), small);
    assert!(small <= 96, "{small} bytes");
}

#[test]
fn results_come_in_the_order_tasks_finish() {
    within(60, || {
        rt().block_on(async {
            let mut set = JoinSet::new();
            let mut senders = Vec::new();
            for i in 0..4u32 {
                let (tx, rx) = oneshot::channel::<()>();
                senders.push(Some(tx));
                set.spawn(async move {
                    rx.await.unwrap();
                    i
                });
            }
            assert_eq!(set.len(), 4);
            for i in [2usize, 0, 3, 1] {
                senders[i].take().unwrap().send(()).unwrap();
                let got = set.join_next().await.expect("a task is left").unwrap();
                assert_eq!(got, i as u32);
            }
            assert!(set.is_empty());
            assert!(set.join_next().await.is_none());
        });
    });
}

#[test]
fn a_panic_or_an_abort_is_a_join_error_and_the_set_goes_on() {
    within(60, || {
        rt().block_on(async {
            let mut set = JoinSet::new();
            set.spawn(async { panic!("boom in a set") });
            let h = wq::spawn(std::future::pending::<u8>());
            h.abort();
            set.push(h);
            set.spawn_on(Scope::Cpu, async { 7u8 });
            set.spawn_blocking(|| 9u8);
            let (mut ok, mut panics, mut cancelled) = (Vec::new(), 0, 0);
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(v) => ok.push(v),
                    Err(e) if e.is_panic() => {
                        assert_eq!(panic_message(&*e.into_panic()), "boom in a set");
                        panics += 1;
                    }
                    Err(e) => {
                        assert!(e.is_cancelled(), "{e}");
                        cancelled += 1;
                    }
                }
            }
            ok.sort_unstable();
            assert_eq!((ok, panics, cancelled), (vec![7, 9], 1, 1));
        });
    });
}

#[test]
fn dropping_the_set_aborts_its_tasks_and_detach_all_does_not() {
    within(60, || {
        rt().block_on(async {
            let mut set = JoinSet::new();
            let flags = spawn_pending(&mut set, 8);
            drop(set);
            eventually("the dropped set's tasks dropped", || {
                flags.iter().all(|f| f.load(Ordering::SeqCst))
            })
            .await;

            let ran = Arc::new(AtomicUsize::new(0));
            let (tx, rx) = futures::channel::mpsc::unbounded::<()>();
            let mut set = JoinSet::new();
            let mut gates = Vec::new();
            for _ in 0..8 {
                let (go, wait) = oneshot::channel::<()>();
                gates.push(go);
                let (ran, tx) = (ran.clone(), tx.clone());
                set.spawn(async move {
                    wait.await.unwrap();
                    ran.fetch_add(1, Ordering::SeqCst);
                    tx.unbounded_send(()).unwrap();
                });
            }
            set.detach_all();
            assert!(set.is_empty());
            drop(set);
            for go in gates {
                go.send(()).unwrap();
            }
            drop(tx);
            use futures::StreamExt;
            assert_eq!(rx.count().await, 8);
            assert_eq!(ran.load(Ordering::SeqCst), 8);
        });
    });
}

#[test]
fn try_join_next_finds_a_finished_task_behind_many_pending_ones() {
    within(60, || {
        rt().block_on(async {
            let mut set = JoinSet::new();
            assert!(set.try_join_next().is_none(), "an empty set");
            // Many pending tasks, already polled once, then one that has
            // finished.
            let (_hold, wait) = futures::channel::mpsc::channel::<()>(1);
            let wait = Arc::new(futures::lock::Mutex::new(wait));
            for _ in 0..100 {
                let wait = wait.clone();
                set.spawn(async move {
                    use futures::StreamExt;
                    let _ = wait.lock().await.next().await;
                    0u32
                });
            }
            assert!(set.try_join_next().is_none(), "nothing has finished");
            let done = wq::spawn(async { 42u32 });
            eventually("the task finished", || done.is_finished()).await;
            set.push(done);
            assert_eq!(set.len(), 101);
            let got = set
                .try_join_next()
                .expect("a finished task is found without waiting");
            assert_eq!(got.unwrap(), 42);
            assert_eq!(set.len(), 100);
        });
    });
}

#[test]
fn join_all_gives_every_output_and_resumes_a_panic() {
    within(60, || {
        let rt = rt();
        let mut all = rt.block_on(async {
            let set: JoinSet<u32> = (0..50u32).map(|i| wq::spawn(async move { i })).collect();
            set.join_all().await
        });
        all.sort_unstable();
        assert_eq!(all, (0..50).collect::<Vec<_>>());

        let flag = Arc::new(AtomicBool::new(false));
        let guard = Dropped(flag.clone());
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(async move {
                let mut set = JoinSet::new();
                set.spawn(async move {
                    let _guard = guard;
                    std::future::pending::<u32>().await
                });
                set.spawn(async { panic!("join_all's panic") });
                set.join_all().await
            })
        }));
        let payload = caught.expect_err("join_all resumes the task's panic");
        assert_eq!(panic_message(&*payload), "join_all's panic");
        rt.block_on(eventually("the other task aborted", || {
            flag.load(Ordering::SeqCst)
        }));
    });
}

#[test]
fn shutdown_aborts_and_empties_the_set() {
    within(60, || {
        rt().block_on(async {
            let mut set = JoinSet::new();
            let flags = spawn_pending(&mut set, 16);
            set.spawn(async {});
            set.shutdown().await;
            assert!(set.is_empty());
            assert!(set.join_next().await.is_none());
            eventually("every aborted task dropped", || {
                flags.iter().all(|f| f.load(Ordering::SeqCst))
            })
            .await;
            // The set is usable after a shutdown.
            set.spawn(async {});
            assert!(set.join_next().await.unwrap().is_ok());
        });
    });
}

#[test]
fn a_named_workqueue_items_join_through_a_set() {
    within(60, || {
        let rt = rt();
        let queue = wq::Workqueue::builder("join-set-items")
            .max_active(2)
            .build(rt.handle())
            .unwrap();
        let n = rt.block_on(async {
            let mut set: JoinSet<usize> = (0..20).map(|i| queue.spawn(async move { i })).collect();
            let mut n = 0;
            while let Some(r) = set.join_next().await {
                n += r.unwrap();
            }
            n
        });
        assert_eq!(n, (0..20usize).sum::<usize>());
    });
}

/// `try_join_next` between two polls of `poll_join_next` does not take
/// the poller's place: the poller is still woken when a task finishes
/// (nothing else wakes it here: no timer).
#[test]
fn try_join_next_leaves_the_pollers_wake_in_place() {
    within(60, || {
        rt().block_on(async {
            let mut set = JoinSet::new();
            let (go, wait) = oneshot::channel::<()>();
            set.spawn(async move {
                wait.await.unwrap();
                7u32
            });
            let mut go = Some(go);
            let got = std::future::poll_fn(|cx| {
                if let std::task::Poll::Ready(r) = set.poll_join_next(cx) {
                    return std::task::Poll::Ready(r);
                }
                assert!(set.try_join_next().is_none());
                // The task finishes after both calls.
                if let Some(go) = go.take() {
                    go.send(()).unwrap();
                }
                std::task::Poll::Pending
            })
            .await;
            assert_eq!(got.unwrap().unwrap(), 7);
        });
    });
}

/// A waker that counts its wakes.
struct Count(AtomicUsize);

impl std::task::Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A [`Count`] and its waker.
fn counted() -> (Arc<Count>, std::task::Waker) {
    let count = Arc::new(Count(AtomicUsize::new(0)));
    (count.clone(), std::task::Waker::from(count))
}

/// A task added after a poll that gave no result wakes that poller: its
/// handle was never polled, so its end woke nobody (a hand-written `poll`
/// that reaps, then accepts and spawns, slept until another task ended),
/// whether that poll found the set waiting (`Pending`) or empty
/// (`Ready(None)`, a server with no connection open).
#[test]
fn a_task_added_after_a_poll_without_a_result_wakes_the_poller() {
    within(60, || {
        let rt = rt();
        let _enter = rt.enter();
        for empty in [false, true] {
            let (count, waker) = counted();
            let mut cx = std::task::Context::from_waker(&waker);
            let mut set = JoinSet::new();
            let (_keep, never) = oneshot::channel::<()>();
            if !empty {
                set.spawn(async move {
                    let _ = never.await;
                    0u32
                });
            }
            // Until a poll gives no result and wakes nobody itself
            // (`FuturesUnordered` wakes its poller after polling each of
            // its futures once).
            loop {
                let before = count.0.load(Ordering::SeqCst);
                let polled = set.poll_join_next(&mut cx);
                assert!(!matches!(polled, std::task::Poll::Ready(Some(_))));
                if count.0.load(Ordering::SeqCst) == before {
                    break;
                }
            }
            let woken = count.0.load(Ordering::SeqCst);
            set.spawn(async { 7u32 });
            // The task ends; whoever holds the set must hear of it.
            let deadline = Instant::now() + Duration::from_secs(10);
            while count.0.load(Ordering::SeqCst) == woken {
                assert!(
                    Instant::now() < deadline,
                    "empty {empty}: the poller was never woken"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let got = loop {
                if let std::task::Poll::Ready(Some(r)) = set.poll_join_next(&mut cx) {
                    break r;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            assert_eq!(got.unwrap(), 7);
            set.abort_all();
        }
    });
}

/// `try_join_next` with nothing finished wakes nobody: `FuturesUnordered`
/// wakes the waker it is polled with after polling each of its futures
/// once (a yield), and that wake went on to the set's last poller, one
/// useless wake and poll per call.
#[test]
fn try_join_next_with_nothing_finished_wakes_nobody() {
    within(60, || {
        let rt = rt();
        let _enter = rt.enter();
        let (count, waker) = counted();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut set = JoinSet::new();
        assert!(set.poll_join_next(&mut cx).is_ready(), "empty");
        tries_with_eight_new_tasks_wake_nobody(&mut set, &count);
        // The same with the poller's waker in place (its last poll gave a
        // result: a spawn wakes nobody), the first call looking at 8 new
        // tasks (the yield's wake is the call's own).
        let mut set = JoinSet::new();
        set.spawn(async {});
        let deadline = Instant::now() + Duration::from_secs(10);
        while !set.poll_join_next(&mut cx).is_ready() {
            assert!(Instant::now() < deadline, "the task never ended");
            std::thread::sleep(Duration::from_millis(1));
        }
        tries_with_eight_new_tasks_wake_nobody(&mut set, &count);
    });
}

/// Three `try_join_next` on `set` with 8 new tasks that never end: none
/// finds a result, and none wakes the poller (`count`).
fn tries_with_eight_new_tasks_wake_nobody(set: &mut JoinSet<()>, count: &Count) {
    let flags = spawn_pending(set, 8);
    let before = count.0.load(Ordering::SeqCst);
    for _ in 0..3 {
        assert!(set.try_join_next().is_none());
    }
    assert_eq!(count.0.load(Ordering::SeqCst), before, "woken for nothing");
    set.abort_all();
    drop(flags);
}

/// Outside a runtime, a JoinSet's spawns panic naming the call made (they
/// named `wq::spawn` and `wq::spawn_blocking`, calls the user did not make).
#[test]
fn a_join_set_spawn_outside_a_runtime_names_itself() {
    let message = |f: fn()| panic_message(&*std::panic::catch_unwind(f).unwrap_err());
    let m = message(|| JoinSet::<()>::new().spawn(async {}));
    assert!(
        m.starts_with("JoinSet::spawn called outside a wq runtime"),
        "{m}"
    );
    let m = message(|| JoinSet::<()>::new().spawn_on(Scope::Cpu, async {}));
    assert!(m.starts_with("JoinSet::spawn_on called outside"), "{m}");
    let m = message(|| JoinSet::<()>::new().spawn_blocking(|| ()));
    assert!(
        m.starts_with("JoinSet::spawn_blocking called outside"),
        "{m}"
    );
}

/// A handle whose await has given its result has nothing left to join:
/// `push` says so (the next `join_next` panicked, telling the caller to
/// fuse a future it never polled twice).
#[test]
fn pushing_an_answered_handle_says_why() {
    let rt = rt();
    let mut h = rt.spawn(async { 1 });
    assert_eq!(rt.block_on(&mut h).unwrap(), 1);
    let pushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        JoinSet::new().push(h);
    }));
    let m = panic_message(&*pushed.unwrap_err());
    assert!(
        m.starts_with("wq::task::JoinSet::push: this JoinHandle's await"),
        "{m}"
    );
    // A handle not yet awaited joins as ever.
    let mut set = JoinSet::new();
    set.push(rt.spawn(async { 2 }));
    assert_eq!(rt.block_on(set.join_next()).unwrap().unwrap(), 2);
}

/// A set's poll that finds its one task still running wakes nobody:
/// `FuturesUnordered` wakes its poller after polling each of its futures
/// once (a yield), and a set's first poll after a spawn always did, so a
/// handler that spawns a task and joins it was polled once for nothing.
/// The task's end still wakes the poller, once.
#[test]
fn a_poll_that_finds_the_task_running_wakes_nobody() {
    within(60, || {
        let rt = rt();
        let _enter = rt.enter();
        for tasks in [1usize, 40] {
            let (count, waker) = counted();
            let mut cx = std::task::Context::from_waker(&waker);
            let mut set = JoinSet::new();
            let mut gos = Vec::new();
            for i in 0..tasks {
                let (go, wait) = oneshot::channel::<()>();
                gos.push(go);
                set.spawn(async move {
                    wait.await.unwrap();
                    i
                });
            }
            assert!(set.poll_join_next(&mut cx).is_pending());
            assert!(set.poll_join_next(&mut cx).is_pending());
            assert_eq!(
                count.0.load(Ordering::SeqCst),
                0,
                "{tasks}: woken for nothing"
            );
            gos.pop().unwrap().send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while count.0.load(Ordering::SeqCst) == 0 {
                assert!(Instant::now() < deadline, "{tasks}: the end woke nobody");
                std::thread::sleep(Duration::from_millis(1));
            }
            match set.poll_join_next(&mut cx) {
                std::task::Poll::Ready(Some(r)) => assert_eq!(r.unwrap(), tasks - 1),
                other => panic!("{tasks}: woken, and no result: {:?}", other.is_ready()),
            }
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(count.0.load(Ordering::SeqCst), 1, "{tasks}: woken twice");
            set.abort_all();
        }
    });
}
