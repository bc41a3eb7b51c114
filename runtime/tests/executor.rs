//! The executor's public contract: spawn, join, panics, abort, yield,
//! placement, shutdown.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wq::{Handle, Runtime, Scope, Topology, WakeMode};

use common::{LINGERING, shutdown_beside_a_lingering_thread, wait_until, within};

fn synthetic(desc: &str) -> Runtime {
    Runtime::builder()
        .topology(Topology::synthetic(desc).unwrap())
        .build()
        .unwrap()
}

#[test]
fn spawn_and_join_from_outside_and_inside() {
    let rt = Runtime::new().unwrap();
    let h = rt.spawn(async { 5 });
    assert_eq!(rt.block_on(h).unwrap(), 5);
    let v = rt.block_on(async {
        let inner = wq::spawn(async { wq::spawn(async { 7 }).await.unwrap() * 2 });
        inner.await.unwrap()
    });
    assert_eq!(v, 14);
}

#[test]
fn every_scope_runs_tasks() {
    let rt = synthetic("pack:2 numa:2 l3:2 core:2 pu:2");
    rt.block_on(async {
        let mut hs = Vec::new();
        for scope in Scope::ALL {
            for i in 0..20 {
                hs.push(wq::spawn_on(scope, async move { i }));
            }
        }
        let mut sum = 0;
        for h in hs {
            sum += h.await.unwrap();
        }
        assert_eq!(sum, 6 * (0..20).sum::<i32>());
    });
    // Workers publish their counters when they idle: wait for that.
    let mut m = rt.metrics();
    for _ in 0..5000 {
        let started: u64 = m.pools.iter().map(|p| p.counters.started).sum();
        if started >= 120 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
        m = rt.metrics();
    }
    let started: u64 = m.pools.iter().map(|p| p.counters.started).sum();
    assert!(started >= 120, "{m}");
}

#[test]
fn a_panicking_task_gives_a_panic_error_and_the_worker_survives() {
    let rt = Runtime::builder().max_workers_per_pool(1).build().unwrap();
    let err = rt
        .block_on(rt.spawn(async { panic!("task exploded") }))
        .unwrap_err();
    assert!(err.is_panic());
    assert!(!err.is_cancelled());
    assert!(err.to_string().contains("task exploded"), "{err}");
    let payload = err.into_panic();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"task exploded"));
    // The same single worker still runs tasks.
    assert_eq!(rt.block_on(rt.spawn(async { 1 })).unwrap(), 1);
}

#[test]
fn abort_cancels_a_pending_task_and_drops_its_future() {
    struct Flag(Arc<AtomicUsize>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let rt = Runtime::new().unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    let flag = Flag(dropped.clone());
    let h = rt.spawn(async move {
        let _flag = flag;
        futures::future::pending::<()>().await;
    });
    std::thread::sleep(Duration::from_millis(10));
    assert!(!h.is_finished());
    h.abort();
    let err = rt.block_on(h).unwrap_err();
    assert!(err.is_cancelled(), "{err:?}");
    assert!(err.to_string().contains("its handle aborted it"), "{err}");
    // The future is dropped by the worker that runs the cancelled task.
    for _ in 0..1000 {
        if dropped.load(Ordering::SeqCst) == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[test]
fn abort_after_completion_keeps_the_output() {
    let rt = Runtime::new().unwrap();
    let h = rt.spawn(async { 3 });
    wait_until("the task finished", || h.is_finished());
    h.abort();
    assert_eq!(rt.block_on(h).unwrap(), 3);
}

/// An abort racing the task's completion never drops an output the task
/// had completed with: the await gives it. (A cancel that lands during the
/// task's last poll wins, and the worker drops that output; an output
/// dropped by the aborting thread is one the task had completed with
/// before the abort took effect, as the old `abort` did: it read "not
/// finished", the task completed, and dropping the task dropped the output.)
#[test]
fn abort_racing_completion_never_drops_a_completed_output() {
    struct Out {
        caller: std::thread::ThreadId,
        dropped_by_caller: Arc<AtomicUsize>,
    }
    impl Drop for Out {
        fn drop(&mut self) {
            if std::thread::current().id() == self.caller {
                self.dropped_by_caller.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let rt = Runtime::builder()
        .default_scope(Scope::System)
        .build()
        .unwrap();
    let dropped_by_caller = Arc::new(AtomicUsize::new(0));
    let caller = std::thread::current().id();
    let (mut outputs, mut cancels) = (0, 0);
    for i in 0..20_000u32 {
        let d = dropped_by_caller.clone();
        let h = rt.spawn(async move {
            // Spins of varied length, so that some aborts land before the
            // task's end, some during it, some after.
            for _ in 0..(i % 64) {
                std::hint::spin_loop();
            }
            Out {
                caller,
                dropped_by_caller: d,
            }
        });
        for _ in 0..(i % 53) {
            std::hint::spin_loop();
        }
        h.abort();
        match rt.block_on(h) {
            // Given back: the test's, not counted.
            Ok(out) => {
                std::mem::forget(out);
                outputs += 1;
            }
            Err(e) => {
                assert!(e.is_cancelled(), "{e:?}");
                cancels += 1;
            }
        }
        assert_eq!(
            dropped_by_caller.load(Ordering::SeqCst),
            0,
            "iteration {i}: abort dropped the output of a task that had completed"
        );
    }
    // Both outcomes happened (else the race was never run).
    assert!(
        outputs > 0 && cancels > 0,
        "outputs {outputs}, cancels {cancels}"
    );
}

/// Two aborts of a running task, then the await: cancelled, once the
/// second abort found nothing left to cancel.
#[test]
fn a_second_abort_changes_nothing() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let h = rt.spawn(async move {
            tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            futures::future::pending::<()>().await;
        });
        rx.recv().unwrap();
        h.abort();
        h.abort();
        assert!(h.is_finished());
        assert!(rt.block_on(h).unwrap_err().is_cancelled());
        // A finished task's output survives any number of aborts.
        let h = rt.spawn(async { 7 });
        while !h.is_finished() {
            std::thread::yield_now();
        }
        h.abort();
        h.abort();
        assert_eq!(rt.block_on(h).unwrap(), 7);
    });
}

/// Counts its drops.
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// An abort handle cancels a task whose `JoinHandle` was dropped (the task
/// detached): its future is dropped by a worker.
#[test]
fn an_abort_handle_cancels_a_detached_task() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        let flag = Dropped(dropped.clone());
        let h = rt.spawn(async move {
            let _flag = flag;
            futures::future::pending::<()>().await;
        });
        let abort = h.abort_handle();
        let other = abort.clone();
        drop(h);
        std::thread::sleep(Duration::from_millis(10));
        assert!(!abort.is_finished() && !other.is_finished());
        assert_eq!(dropped.load(Ordering::SeqCst), 0, "detached, it runs on");
        // From another thread, through a clone.
        std::thread::spawn(move || other.abort()).join().unwrap();
        assert!(abort.is_finished(), "{abort:?}");
        wait_until("the aborted future is dropped", || {
            dropped.load(Ordering::SeqCst) == 1
        });
        abort.abort();
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    });
}

/// An abort through an abort handle wakes the task awaiting the
/// `JoinHandle`, which says cancelled by its handle.
#[test]
fn an_abort_handle_wakes_the_await_of_its_join_handle() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let h = wq::spawn(futures::future::pending::<()>());
            let abort = h.abort_handle();
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                abort.abort();
            });
            let err = h.await.unwrap_err();
            assert!(err.is_cancelled(), "{err:?}");
            assert!(err.to_string().contains("its handle aborted it"), "{err}");
            t.join().unwrap();
        });
        // Awaited from outside the runtime (a foreign waker: the relay).
        let h = rt.spawn(futures::future::pending::<()>());
        let abort = h.abort_handle();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            abort.abort();
        });
        assert!(futures::executor::block_on(h).unwrap_err().is_cancelled());
        t.join().unwrap();
    });
}

/// An await that found the task running before the abort handle was made
/// is woken by that handle's abort, with no poll of the `JoinHandle` in
/// between.
#[test]
fn an_abort_handle_wakes_an_await_registered_before_it() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        rt.block_on(async {
            let mut h = wq::spawn(futures::future::pending::<()>());
            std::future::poll_fn(|cx| {
                assert!(std::pin::Pin::new(&mut h).poll(cx).is_pending());
                std::task::Poll::Ready(())
            })
            .await;
            let abort = h.abort_handle();
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                abort.abort();
            });
            // Pending once, with no waker of its own: only the abort's
            // wake of the handle's registered waker resumes this task.
            let mut first = true;
            std::future::poll_fn(|_| {
                if std::mem::take(&mut first) {
                    std::task::Poll::Pending
                } else {
                    std::task::Poll::Ready(())
                }
            })
            .await;
            assert!(h.is_finished());
            assert!(h.await.unwrap_err().is_cancelled());
            t.join().unwrap();
        });
    });
}

/// A task that completed keeps its output through an abort handle's
/// abort, as through its `JoinHandle`'s; a handle whose task answered or
/// was refused gives an abort handle that does nothing.
#[test]
fn an_abort_handle_after_the_end_changes_nothing() {
    let rt = Runtime::new().unwrap();
    let h = rt.spawn(async { 3 });
    let abort = h.abort_handle();
    wait_until("the task finished", || abort.is_finished());
    abort.abort();
    assert_eq!(rt.block_on(h).unwrap(), 3);

    // Answered, then asked for an abort handle.
    let mut h = rt.spawn(async { 4 });
    assert_eq!(rt.block_on(&mut h).unwrap(), 4);
    let abort = h.abort_handle();
    assert!(abort.is_finished());
    abort.abort();

    // Refused: its runtime had shut down.
    let handle = rt.handle().clone();
    drop(rt);
    let h = handle.spawn(async { 5 });
    let abort = h.abort_handle();
    assert!(abort.is_finished());
    abort.abort();
    assert!(futures::executor::block_on(h).unwrap_err().is_refused());
}

/// Dropping the `JoinHandle` of a completed task drops its output then,
/// though abort handles live; the output of a task that completes after
/// its `JoinHandle` is gone is kept until an abort or the last abort
/// handle's drop (documented), and dropped once.
#[test]
fn a_detached_tasks_output_is_dropped_once_by_its_abort_handles() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        // Completed before the handle's drop.
        let dropped = Arc::new(AtomicUsize::new(0));
        let d = dropped.clone();
        let h = rt.spawn(async move { Dropped(d) });
        let abort = h.abort_handle();
        wait_until("the task finished", || abort.is_finished());
        drop(h);
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "dropped with its handle");
        abort.abort();
        drop(abort);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);

        // Completed after it: an abort drops it, once.
        for by_abort in [true, false] {
            let dropped = Arc::new(AtomicUsize::new(0));
            let d = dropped.clone();
            let (tx, rx) = futures::channel::oneshot::channel::<()>();
            let h = rt.spawn(async move {
                let _ = rx.await;
                Dropped(d)
            });
            let abort = h.abort_handle();
            let second = abort.clone();
            drop(h);
            tx.send(()).unwrap();
            wait_until("the task finished", || abort.is_finished());
            assert_eq!(
                dropped.load(Ordering::SeqCst),
                0,
                "kept for its abort handles"
            );
            if by_abort {
                abort.abort();
                assert_eq!(dropped.load(Ordering::SeqCst), 1, "dropped by the abort");
            } else {
                drop(abort);
                assert_eq!(
                    dropped.load(Ordering::SeqCst),
                    0,
                    "one abort handle is left"
                );
            }
            drop(second);
            assert_eq!(dropped.load(Ordering::SeqCst), 1);
        }
    });
}

/// A runtime of one blocking thread, running a job (it gives 7 once `go`
/// sends) and a job queued behind it (never to run: it counts its
/// closure's drop in `dropped`).
#[allow(clippy::type_complexity)]
fn running_and_queued_jobs() -> (
    Runtime,
    wq::JoinHandle<i32>,
    wq::JoinHandle<()>,
    std::sync::mpsc::Sender<()>,
    Arc<AtomicUsize>,
) {
    let rt = Runtime::builder().max_blocking_threads(1).build().unwrap();
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let running = rt.spawn_blocking(move || {
        started_tx.send(()).unwrap();
        wait.recv().unwrap();
        7
    });
    started.recv().unwrap();
    let dropped = Arc::new(AtomicUsize::new(0));
    let flag = Dropped(dropped.clone());
    let queued = rt.spawn_blocking(move || {
        let _flag = flag;
        unreachable!("an aborted job ran");
    });
    (rt, running, queued, go, dropped)
}

/// A blocking job's abort handle aborts it as its `JoinHandle` does: not
/// once its closure has started (its result comes), and a queued one is
/// cancelled.
#[test]
fn an_abort_handle_of_a_blocking_job_stops_it_only_before_it_starts() {
    within(60, || {
        let (rt, running, queued, go, dropped) = running_and_queued_jobs();
        let (a, b) = (running.abort_handle(), queued.abort_handle());
        a.abort();
        b.abort();
        assert!(!a.is_finished(), "a started job runs on");
        assert!(b.is_finished());
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "dropped by the abort");
        go.send(()).unwrap();
        assert_eq!(rt.block_on(running).unwrap(), 7);
        assert!(rt.block_on(queued).unwrap_err().is_cancelled());
    });
}

/// Abort handles aborting from another thread race each task's end, its
/// `JoinHandle`'s await and its `JoinHandle`'s drop: every future and every
/// output is dropped once, an await gives the output or says cancelled,
/// A `JoinHandle` dropped after making an abort handle lets go of the
/// waker its last await left (the awaiting task, or a foreign waker in
/// the handle's relay): a long-lived abort handle does not keep it, and
/// its abort wakes nobody.
#[test]
fn a_dropped_handle_lets_go_of_its_awaits_waker_though_abort_handles_live() {
    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    within(60, || {
        let rt = Runtime::new().unwrap();
        for made_before in [true, false] {
            let count = Arc::new(Count(AtomicUsize::new(0)));
            let waker = std::task::Waker::from(count.clone());
            let mut h = rt.spawn(futures::future::pending::<()>());
            let early = made_before.then(|| h.abort_handle());
            let mut cx = std::task::Context::from_waker(&waker);
            assert!(std::pin::Pin::new(&mut h).poll(&mut cx).is_pending());
            let abort = early.unwrap_or_else(|| h.abort_handle());
            drop(h);
            drop(waker);
            assert_eq!(Arc::strong_count(&count), 1, "the waker is kept");
            abort.abort();
            assert_eq!(count.0.load(Ordering::SeqCst), 0, "a dropped await woken");
        }
    });
}

/// `JoinHandle::abort` on a handle that made an abort handle: a queued
/// blocking job is cancelled (its closure dropped unrun), a started one
/// runs to its end; racing the job's start, the await always answers.
/// (The race a review found, a start between the handle's look at the
/// job's word and a second look by its shared slot's abort, is too narrow
/// for this loop to reach: the abort now looks once.)
#[test]
fn a_handles_abort_after_its_abort_handle_stops_a_job_only_before_it_starts() {
    within(120, || {
        let (rt, running, queued, go, dropped) = running_and_queued_jobs();
        let _keep = (running.abort_handle(), queued.abort_handle());
        running.abort();
        queued.abort();
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "dropped by the abort");
        go.send(()).unwrap();
        assert_eq!(rt.block_on(running).unwrap(), 7);
        assert!(rt.block_on(queued).unwrap_err().is_cancelled());

        let rt = Runtime::builder().max_blocking_threads(2).build().unwrap();
        for i in 0..2_000u32 {
            let h = rt.spawn_blocking(|| 1);
            let abort = h.abort_handle();
            for _ in 0..(i % 97) {
                std::hint::spin_loop();
            }
            h.abort();
            match rt.block_on(h) {
                Ok(v) => assert_eq!(v, 1),
                Err(e) => assert!(e.is_cancelled(), "{e:?}"),
            }
            assert!(abort.is_finished());
        }
    });
}

/// and nothing hangs.
#[test]
fn abort_handles_racing_ends_awaits_and_drops_lose_nothing() {
    within(120, || {
        let rt = Runtime::builder()
            .default_scope(Scope::System)
            .build()
            .unwrap();
        let futures_dropped = Arc::new(AtomicUsize::new(0));
        let outputs_made = Arc::new(AtomicUsize::new(0));
        let outputs_dropped = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel::<(wq::AbortHandle, u32)>();
        let aborter = std::thread::spawn(move || {
            for (abort, i) in rx {
                for _ in 0..(i % 61) {
                    std::hint::spin_loop();
                }
                abort.abort();
                assert!(abort.is_finished());
            }
        });
        const N: u32 = 5_000;
        let (mut outputs, mut cancels) = (0usize, 0);
        for i in 0..N {
            let f = Dropped(futures_dropped.clone());
            let (made, o) = (outputs_made.clone(), outputs_dropped.clone());
            let h = rt.spawn(async move {
                let _f = f;
                for _ in 0..(i % 67) {
                    std::hint::spin_loop();
                }
                if i % 3 == 0 {
                    wq::task::yield_now().await;
                }
                made.fetch_add(1, Ordering::SeqCst);
                Dropped(o)
            });
            tx.send((h.abort_handle(), i)).unwrap();
            if i % 4 == 0 {
                drop(h);
            } else {
                match rt.block_on(h) {
                    Ok(out) => {
                        outputs += 1;
                        drop(out);
                    }
                    Err(e) => {
                        assert!(e.is_cancelled(), "{e:?}");
                        cancels += 1;
                    }
                }
            }
        }
        drop(tx);
        aborter.join().unwrap();
        wait_until("every future is dropped", || {
            futures_dropped.load(Ordering::SeqCst) == N as usize
        });
        drop(rt);
        // Every output made is dropped once: those awaited here, and those
        // the aborts, the handles' drops and the workers let go of.
        assert_eq!(futures_dropped.load(Ordering::SeqCst), N as usize);
        assert_eq!(
            outputs_dropped.load(Ordering::SeqCst),
            outputs_made.load(Ordering::SeqCst)
        );
        assert!(
            outputs > 0 && cancels > 0,
            "outputs {outputs}, cancels {cancels}: the race was never run"
        );
    });
}

/// A handle awaited, left waiting and dropped (a `select!` that took
/// another branch) lets go of the waker it was awaited with: async-task
/// kept it until the task ended, and woke it for nothing then (a task's
/// own await: its allocation, sized to its future).
#[test]
fn a_dropped_handle_lets_go_of_its_awaiters_waker() {
    within(60, || {
        struct Count;
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {}
        }
        let rt = Runtime::new().unwrap();
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        let mut h = rt.spawn(async move {
            let _ = rx.await;
        });
        let count = Arc::new(Count);
        let waker = std::task::Waker::from(count.clone());
        let polled = std::pin::Pin::new(&mut h).poll(&mut std::task::Context::from_waker(&waker));
        assert!(polled.is_pending());
        drop(h);
        drop(waker);
        assert_eq!(
            Arc::strong_count(&count),
            1,
            "the dropped handle's task kept the waker"
        );
        tx.send(()).unwrap();
    });
}

/// A handle polled again after its await gave the result says so (it
/// said "cancelled", hiding a caller's bug behind a false reason); fused,
/// `select!` in a loop skips it.
#[test]
fn a_join_handle_polled_after_its_result_says_so() {
    use futures::FutureExt;
    use futures::future::FusedFuture;
    let rt = Runtime::new().unwrap();
    let mut h = rt.spawn(async { 5 });
    assert!(!h.is_terminated());
    assert_eq!(rt.block_on(&mut h).unwrap(), 5);
    assert!(h.is_terminated() && h.is_finished());
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = h.poll_unpin(&mut cx);
    }))
    .expect_err("a second poll gave a result");
    let msg = again.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(msg.contains("polled after it gave its result"), "{msg}");
    // Aborted and awaited, then terminated too.
    let mut a = rt.spawn(futures::future::pending::<()>());
    a.abort();
    assert!(rt.block_on(&mut a).unwrap_err().is_cancelled());
    assert!(a.is_terminated());
    // select! in a loop awaits each handle once.
    let (mut x, mut y) = (rt.spawn(async { 1 }), rt.spawn(async { 2 }));
    let sum = rt.block_on(async {
        let mut sum = 0;
        loop {
            futures::select! {
                v = x => sum += v.unwrap(),
                v = y => sum += v.unwrap(),
                complete => break sum,
            }
        }
    });
    assert_eq!(sum, 3);
}

#[test]
fn yield_now_lets_others_run() {
    // No watchdog: it would grant a second worker to a spinner that never
    // yields, and the setter would run anyway.
    within(60, || {
        let rt = Runtime::builder()
            .max_workers_per_pool(1)
            .cpu_hog_threshold(Duration::ZERO)
            .build()
            .unwrap();
        yield_now_lets_others_run_on(&rt);
    });
}

fn yield_now_lets_others_run_on(rt: &Runtime) {
    let counter = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let c = counter.clone();
        let spinner = wq::spawn(async move {
            // Without yielding this would never see the other task's write
            // on a one-worker pool.
            while c.load(Ordering::SeqCst) == 0 {
                wq::task::yield_now().await;
            }
        });
        let c = counter.clone();
        let setter = wq::spawn(async move {
            c.store(1, Ordering::SeqCst);
        });
        setter.await.unwrap();
        spinner.await.unwrap();
    });
}

#[test]
fn handle_current_and_try_current() {
    assert!(Handle::try_current().is_none());
    let rt = Runtime::new().unwrap();
    rt.block_on(async {
        let h = Handle::current();
        let v = h
            .spawn(async { Handle::try_current().is_some() })
            .await
            .unwrap();
        assert!(v, "tasks see their runtime");
    });
    let _g = rt.enter();
    assert!(Handle::try_current().is_some());
    drop(_g);
    assert!(Handle::try_current().is_none());
}

#[test]
fn spawn_outside_a_runtime_panics_with_a_hint() {
    let err = std::panic::catch_unwind(|| {
        drop(wq::spawn(async {}));
    })
    .unwrap_err();
    let msg = err.downcast_ref::<String>().unwrap();
    assert!(msg.contains("outside a wq runtime"), "{msg}");
    assert!(msg.contains("block_on"), "{msg}");
}

#[test]
fn block_on_inside_a_worker_panics_with_a_hint() {
    let rt = Runtime::new().unwrap();
    let h = rt.handle().clone();
    let err = rt
        .block_on(rt.spawn(async move { h.block_on(async {}) }))
        .unwrap_err();
    assert!(
        err.to_string().contains("in a task, .await the future"),
        "{err}"
    );
}

#[test]
fn spawning_on_a_closed_runtime_is_cancelled_and_drops_the_future() {
    let rt = Runtime::new().unwrap();
    let handle = rt.handle().clone();
    drop(rt);
    let dropped = Arc::new(AtomicUsize::new(0));
    struct Count(Arc<AtomicUsize>);
    impl Drop for Count {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let c = Count(dropped.clone());
    let h = handle.spawn(async move {
        let _c = c;
    });
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
    let err = futures::executor::block_on(h).unwrap_err();
    assert!(err.is_cancelled() && err.is_refused(), "{err:?}");
    assert!(
        err.to_string()
            .contains("task was never run: its runtime had shut down"),
        "{err}"
    );
    // Also spawn_blocking's.
    let err = futures::executor::block_on(handle.spawn_blocking(|| 1)).unwrap_err();
    assert!(err.is_refused(), "{err}");
}

#[test]
fn dropping_the_runtime_drops_every_pending_future_and_joins_workers() {
    within(60, || {
        static LIVE: AtomicUsize = AtomicUsize::new(0);
        struct Live;
        impl Live {
            fn new() -> Live {
                LIVE.fetch_add(1, Ordering::SeqCst);
                Live
            }
        }
        impl Drop for Live {
            fn drop(&mut self) {
                LIVE.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:2 core:2 pu:1").unwrap())
            .thread_name("droptest")
            .build()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut handles = Vec::new();
        for scope in Scope::ALL {
            for _ in 0..50 {
                let live = Live::new();
                // Pending forever: nobody will ever wake them but shutdown.
                handles.push(rt.spawn_on(scope, async move {
                    let _live = live;
                    futures::future::pending::<()>().await
                }));
            }
            // Detached, queued and never run on a busy pool.
            let live = Live::new();
            drop(rt.spawn_on(scope, async move {
                let _live = live;
                wq::task::yield_now().await;
                futures::future::pending::<()>().await
            }));
        }
        // A task blocked until the runtime is being dropped.
        let live = Live::new();
        drop(rt.spawn(async move {
            let _live = live;
            let _ = rx.recv_timeout(Duration::from_millis(50));
        }));
        drop(tx);
        // Worker threads name themselves when they start.
        for _ in 0..5000 {
            // The rescuer (`droptest-rescuer`) runs from the start; wait for a worker.
            if threads_named("droptest") > 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(threads_named("droptest") > 1);
        drop(rt);
        assert_eq!(LIVE.load(Ordering::SeqCst), 0, "every future was dropped");
        for h in handles {
            let err = futures::executor::block_on(h).unwrap_err();
            assert!(err.is_cancelled());
            // Says why, and not an abort nobody made.
            let text = err.to_string();
            assert!(
                text.contains("its runtime shut down before it finished")
                    && !text.contains("abort"),
                "{text}"
            );
        }
        // A joined thread can stay listed in /proc for a moment after
        // pthread_join returns (the kernel clears its tid before it reaps it):
        // give it a bounded time to go; a thread never joined stays.
        for _ in 0..5000 {
            if threads_named("droptest") == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let left: Vec<String> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| {
                let p = t.ok()?.path();
                Some(format!(
                    "{} {}",
                    p.display(),
                    std::fs::read_to_string(p.join("comm")).ok()?.trim()
                ))
            })
            .collect();
        assert_eq!(
            threads_named("droptest"),
            0,
            "every worker and the rescuer were joined: {left:?}"
        );
    });
}

/// Threads of this process whose name starts with `prefix` (Linux).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with(prefix))
        .count()
}

#[test]
fn shutdown_timeout_returns_when_a_worker_is_stuck() {
    let rt = Runtime::builder().max_workers_per_pool(1).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    drop(rt.spawn(async move {
        s.store(1, Ordering::SeqCst);
        // A blocking call inside a task: the worker is stuck until tx drops.
        let _ = rx.recv();
    }));
    wait_until("the blocking task started", || {
        started.load(Ordering::SeqCst) != 0
    });
    assert!(!rt.shutdown_timeout(Duration::from_millis(20)));
    drop(tx);
}

/// `shutdown_timeout` waits at most its timeout for the workers, their
/// thread-locals' destructors included (it joined every thread that had
/// counted itself out, without a bound: as long as such a destructor
/// blocked).
#[test]
fn shutdown_timeout_does_not_wait_past_it_for_a_workers_thread_local_destructor() {
    within(60, || {
        let rt = Runtime::builder().max_workers_per_pool(1).build().unwrap();
        let all = shutdown_beside_a_lingering_thread(rt, |rt, l| {
            rt.block_on(rt.spawn(async move {
                LINGERING.with(|s| *s.borrow_mut() = Some(l));
            }))
            .unwrap();
        });
        assert!(
            !all,
            "a worker still running its destructors counted as exited"
        );
    });
}

/// A shutdown whose timeout runs out while it drops queued futures (a
/// slow `Drop`), with every thread gone meanwhile, says they all exited:
/// the joins of threads already out are not held to the spent deadline
/// (they were, through the joining thread, and it said false).
#[test]
fn a_deadline_spent_on_drops_does_not_fail_the_joins_of_exited_threads() {
    within(60, || {
        // Its drop lasts until the runtime's threads are gone (past the
        // deadline), not a fixed time a loaded machine may not give them.
        struct SlowDrop;
        impl Drop for SlowDrop {
            fn drop(&mut self) {
                std::thread::sleep(Duration::from_millis(150));
                let deadline = Instant::now() + Duration::from_secs(10);
                while threads_named("slowdrop") > 0 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let rt = Runtime::builder().thread_name("slowdrop").build().unwrap();
        let q = wq::Workqueue::builder("slow-drop")
            .max_active(1)
            .build(rt.handle())
            .unwrap();
        // A holds the queue's one slot; B waits on its inactive list, and
        // the shutdown drops it (on its own thread, before the joins).
        drop(q.spawn(std::future::pending::<()>()));
        let slow = SlowDrop;
        drop(q.spawn(async move {
            let _s = &slow;
        }));
        std::thread::sleep(Duration::from_millis(50));
        drop(q);
        assert!(
            rt.shutdown_timeout(Duration::from_millis(100)),
            "every thread exited while the drop ran"
        );
    });
}

/// `q`'s flush, polled once with `waiter` (its items still run): the
/// worker that ends the last of them wakes `waiter`, at that item's
/// deferred end.
fn flush_waiting<'a>(
    q: &'a wq::Workqueue,
    waiter: &std::task::Waker,
) -> std::pin::Pin<Box<impl Future<Output = ()> + 'a>> {
    let mut flush = Box::pin(q.flush());
    assert!(
        flush
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waiter))
            .is_pending()
    );
    flush
}

/// A task a worker has taken from its queue but not yet run when a
/// `shutdown_timeout` gives up on that worker: the shutdown's wake of the
/// idle tasks finds it scheduled already (the wake is merged with the run
/// to come), and no drain sees it. Its poll after the shutdown answers
/// `Pending`: it must queue itself on its closed pool, to be dropped, or
/// its future (and what it holds) lived for ever. The window is held open
/// by the worker's deferred end of the previous item, which wakes a
/// flush's waiter that blocks.
#[test]
fn a_task_taken_but_not_run_when_a_shutdown_gives_up_is_still_dropped() {
    use std::sync::mpsc;
    use std::task::{Wake, Waker};

    struct DropFlag(Arc<AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A flush's waiter that says it was woken, then blocks its waker's
    /// caller (the worker) until told to go on.
    struct Blocking {
        woken: std::sync::Mutex<mpsc::Sender<()>>,
        go_on: std::sync::Mutex<mpsc::Receiver<()>>,
    }
    impl Wake for Blocking {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            let _ = self.woken.lock().unwrap().send(());
            let _ = self
                .go_on
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
        }
    }

    within(60, || {
        let rt = Runtime::builder().max_workers_per_pool(1).build().unwrap();
        // Same attributes, one pod: one pool, one worker (on a machine of
        // several cache shards, the default scope's pool was the spawning
        // CPU's, and T and S could land in two).
        let queue = |name| {
            wq::Workqueue::builder(name)
                .scope(Scope::System)
                .build(rt.handle())
                .unwrap()
        };
        let (tasks, ender) = (queue("tasks"), queue("ender"));
        let dropped = Arc::new(AtomicBool::new(false));
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        let (go_tx, go_rx) = futures::channel::oneshot::channel::<()>();
        let polled = Arc::new(AtomicBool::new(false));
        let (flag, p) = (DropFlag(dropped.clone()), polled.clone());
        // T: idle (registered) on `rx`, then idle for good.
        drop(tasks.spawn(async move {
            let _flag = flag;
            p.store(true, Ordering::SeqCst);
            let _ = rx.await;
            std::future::pending::<()>().await;
        }));
        wait_until("T polled", || polled.load(Ordering::SeqCst));
        // S: wakes T from the worker (into its LIFO slot) and ends; its end
        // is deferred until after the worker's next look, which takes T.
        // (Its handle kept: a detached task's output is dropped where it
        // ends, after its end.)
        let _s = ender.spawn(async move {
            let _ = go_rx.await;
            let _ = tx.send(());
        });
        let (woken_tx, woken_rx) = mpsc::channel();
        let (go_on_tx, go_on_rx) = mpsc::channel();
        let waiter = Waker::from(Arc::new(Blocking {
            woken: std::sync::Mutex::new(woken_tx),
            go_on: std::sync::Mutex::new(go_on_rx),
        }));
        let flush = flush_waiting(&ender, &waiter);
        go_tx.send(()).unwrap();
        // The worker holds T, untouched, in the flush waiter's wake.
        woken_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("S ended and its end woke the flush");
        assert!(!rt.shutdown_timeout(Duration::ZERO), "the worker is held");
        go_on_tx.send(()).unwrap();
        wait_until(
            "T's future dropped after its poll on the closed pool",
            || dropped.load(Ordering::SeqCst),
        );
        drop(flush);
    });
}

/// `block_in_place` in code a worker runs between polls (here a flush's
/// waiter, woken by a named item's end, which the worker runs after its
/// next look at its queues) runs `f` as it would anywhere outside a poll:
/// the worker is not counted blocked. (It was: a worker counted as
/// searching stayed counted so through the block, and every kick of its
/// pool coalesced with it; one parked in a closed pool's drain hit an
/// unreachable state.)
#[test]
fn block_in_place_between_polls_runs_in_place() {
    use std::sync::mpsc;
    use std::task::{Wake, Waker};

    struct Report {
        handle: Handle,
        out: std::sync::Mutex<mpsc::Sender<(String, usize)>>,
    }
    impl Wake for Report {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            let blocked = wq::block_in_place(|| {
                self.handle
                    .metrics()
                    .pools
                    .iter()
                    .map(|p| p.workers.blocked)
                    .sum()
            });
            let name = std::thread::current().name().unwrap_or("").to_owned();
            let _ = self.out.lock().unwrap().send((name, blocked));
        }
    }

    within(60, || {
        let rt = Runtime::builder()
            .thread_name("between")
            .max_workers_per_pool(1)
            .build()
            .unwrap();
        let q = wq::Workqueue::builder("between")
            .scope(Scope::System)
            .build(rt.handle())
            .unwrap();
        let (go_tx, go_rx) = futures::channel::oneshot::channel::<()>();
        let _item = q.spawn(async move {
            let _ = go_rx.await;
        });
        let (tx, rx) = mpsc::channel();
        let waiter = Waker::from(Arc::new(Report {
            handle: rt.handle().clone(),
            out: std::sync::Mutex::new(tx),
        }));
        let _flush = flush_waiting(&q, &waiter);
        go_tx.send(()).unwrap();
        let (thread, blocked) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the item ended and its end woke the flush");
        assert!(
            thread.starts_with("between"),
            "woken on {thread:?}, not a worker"
        );
        assert_eq!(blocked, 0, "a worker between polls counted blocked");
    });
}

#[test]
fn a_shutdown_timeout_of_duration_max_waits_instead_of_panicking() {
    within(60, || {
        let rt = Runtime::builder().build().unwrap();
        assert_eq!(rt.block_on(rt.spawn(async { 3 })).unwrap(), 3);
        assert!(rt.shutdown_timeout(Duration::MAX), "every thread exited");
    });
}

#[test]
fn both_wake_modes_run_work() {
    for mode in WakeMode::ALL {
        let rt = Runtime::builder()
            .wake_mode(mode)
            .worker_spin(Duration::ZERO)
            .build()
            .unwrap();
        let n = rt.block_on(async {
            let mut hs = Vec::new();
            for i in 0..200u64 {
                hs.push(wq::spawn_on(Scope::System, async move { i }));
            }
            let mut n = 0;
            for h in hs {
                n += h.await.unwrap();
            }
            n
        });
        assert_eq!(n, (0..200).sum::<u64>(), "{mode}");
    }
}

#[test]
fn pools_with_the_same_cpus_are_shared() {
    // No SMT: cpu and smt pods have the same CPUs.
    let rt = synthetic("core:4 pu:1");
    rt.block_on(async {
        wq::spawn_on(Scope::Cpu, async {}).await.unwrap();
        wq::spawn_on(Scope::Smt, async {}).await.unwrap();
    });
    let m = rt.metrics();
    assert_eq!(m.pools.len(), 1, "{m}");
}

/// A pool has no more workers, by default, than the CPUs the process may
/// use at once (`available_parallelism`: affinity and cgroup CPU quota),
/// however wide its pod: a layout twice as wide as the process's CPUs (at
/// least 64), as a container limited to a few CPUs of a big machine.
#[test]
fn a_pool_has_no_more_workers_than_the_process_may_use_cpus() {
    let budget = std::thread::available_parallelism().unwrap().get();
    // A pod wider than the process's CPUs, whatever the machine.
    let wide = (2 * budget).max(64);
    let layout = format!("core:{wide} pu:1");
    let rt = Runtime::builder()
        .topology(Topology::synthetic(&layout).unwrap())
        .worker_spin(Duration::ZERO)
        // No watchdog: a sleep stretched past its threshold on a loaded
        // machine would start an extra worker for the "hog".
        .cpu_hog_threshold(Duration::ZERO)
        .build()
        .unwrap();
    // A task per CPU of the pod, each holding its worker a while: a pool
    // allowed a worker per CPU would start many more than the budget.
    rt.block_on(async {
        let hs: Vec<_> = (0..wide)
            .map(|_| {
                wq::spawn_on(Scope::System, async {
                    std::thread::sleep(Duration::from_millis(2))
                })
            })
            .collect();
        for h in hs {
            h.await.unwrap();
        }
    });
    let m = rt.metrics();
    let pool = m.pools.iter().find(|p| p.scope == Scope::System).unwrap();
    assert_eq!(pool.max_workers, budget, "{m}");
    assert!(
        pool.counters.workers_created <= budget as u64,
        "no more workers than the process's CPUs: {m}"
    );
    // A number given is used as it is.
    let rt = Runtime::builder()
        .topology(Topology::synthetic(&layout).unwrap())
        .max_workers_per_pool(16)
        .build()
        .unwrap();
    rt.block_on(rt.spawn_on(Scope::System, async {})).unwrap();
    let m = rt.metrics();
    let pool = m.pools.iter().find(|p| p.scope == Scope::System).unwrap();
    assert_eq!(pool.max_workers, 16, "{m}");
}

#[test]
fn idle_workers_are_culled_down_to_the_kernel_minimum() {
    let rt = Runtime::builder()
        .topology(Topology::synthetic("core:8 pu:1").unwrap())
        // A worker per CPU of the pod even on a smaller machine (the
        // default caps a pool at the CPUs the process may use).
        .max_workers_per_pool(8)
        .idle_timeout(Duration::from_millis(5))
        .worker_spin(Duration::ZERO)
        .build()
        .unwrap();
    // Make the system pool grow: 8 tasks that each block briefly.
    rt.block_on(async {
        let hs: Vec<_> = (0..8)
            .map(|_| {
                wq::spawn_on(Scope::System, async {
                    std::thread::sleep(Duration::from_millis(50))
                })
            })
            .collect();
        for h in hs {
            h.await.unwrap();
        }
    });
    let grown = rt.metrics().pools[0].counters.workers_created;
    assert!(
        grown > 2,
        "the pool must grow past 2 to be culled: {}",
        rt.metrics()
    );
    let mut workers = usize::MAX;
    for _ in 0..2000 {
        workers = rt.metrics().pools[0].workers.total;
        if workers <= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(workers <= 2, "culled to 2 idle: {}", rt.metrics());
    assert!(rt.metrics().pools[0].counters.workers_culled >= grown - 2);
}

/// A worker of the `cpu` scope is bound to one CPU; a topology read on it
/// (a runtime built inside a task) must still see the process's CPUs.
#[test]
fn a_topology_read_on_a_bound_worker_sees_the_whole_process() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        let outer = rt.handle().topology().cpus().len();
        let inner = rt
            .block_on(rt.spawn_on(Scope::Cpu, async {
                Topology::detect().map(|t| t.cpus().len())
            }))
            .unwrap()
            .unwrap();
        assert_eq!(inner, outer, "the inner read saw only its worker's CPU");
    });
}

/// A runtime built inside a task of the `cpu` scope (its worker bound to
/// one CPU) still sizes its pools by the process's CPUs, not its worker's.
#[test]
fn a_runtime_built_on_a_bound_worker_sizes_its_pools_by_the_process() {
    within(60, || {
        let budget = std::thread::available_parallelism().unwrap().get();
        let rt = Runtime::new().unwrap();
        let inner = rt
            .block_on(rt.spawn_on(Scope::Cpu, async {
                Runtime::builder()
                    .topology(Topology::synthetic("core:64 pu:1").unwrap())
                    .build()
            }))
            .unwrap()
            .unwrap();
        inner
            .block_on(inner.spawn_on(Scope::System, async {}))
            .unwrap();
        let m = inner.metrics();
        let pool = m.pools.iter().find(|p| p.scope == Scope::System).unwrap();
        assert_eq!(
            pool.max_workers,
            budget.min(64),
            "the pool was sized by the building worker's one CPU: {m}"
        );
    });
}

/// A runtime dropped inside one of its own tasks, while a task queued on
/// that same worker holds what a blocking job waits for: the shutdown
/// waits for the job, so the queued task must be dropped before it waits.
#[test]
fn a_runtime_dropped_in_its_own_task_drops_its_worker_local_tasks_first() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        let h = rt.handle().clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (running_tx, running_rx) = std::sync::mpsc::channel::<()>();
        let job = h.spawn_blocking(move || {
            running_tx.send(()).unwrap();
            rx.recv().is_err()
        });
        // Running before the drop: a job still queued then is cancelled
        // by the shutdown, not waited for (a loaded machine may start its
        // thread late).
        running_rx.recv().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        drop(h.spawn(async move {
            // Queued on this worker (its LIFO slot), never polled: it holds
            // the job's sender.
            drop(wq::spawn(async move {
                let _tx = tx;
                std::future::pending::<()>().await;
            }));
            drop(rt);
            done_tx.send(()).unwrap();
        }));
        done_rx.recv().unwrap();
        assert!(
            futures::executor::block_on(job).unwrap(),
            "the job saw its sender dropped"
        );
    });
}

/// Panics on drop (a task output or a captured value whose drop fails).
struct PanicsOnDrop(Arc<AtomicUsize>);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("a value that panics when dropped (expected by the test)");
    }
}

/// async-task drops a detached task's output inside its abort-on-panic
/// guard: a panic there took the whole process down.
#[test]
fn an_output_that_panics_on_drop_does_not_abort_the_process() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        let dropped = Arc::new(AtomicUsize::new(0));
        let d = dropped.clone();
        // Detached at once: its output is dropped where it is produced.
        drop(rt.spawn(async move { PanicsOnDrop(d) }));
        while dropped.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Awaited: the output is handed over, and dropped by the caller.
        let d = dropped.clone();
        let out = rt
            .block_on(rt.spawn(async move { PanicsOnDrop(d) }))
            .unwrap();
        std::mem::forget(out);
        // The runtime and the process live on.
        assert_eq!(rt.block_on(rt.spawn(async { 7 })).unwrap(), 7);
    });
}

#[test]
fn enter_guards_dropped_out_of_order_panic_with_what_to_do() {
    let (a, b) = (Runtime::new().unwrap(), Runtime::new().unwrap());
    let outer = a.enter();
    let inner = b.enter();
    let dropped_outer_first =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(outer)));
    let payload = dropped_outer_first.unwrap_err();
    let msg = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap();
    assert!(msg.contains("reverse order"), "{msg}");
    drop(inner);
    // With no guard left, no runtime is current (the outer guard's drop
    // restored nothing, and the inner one's put the outer runtime back).
    assert!(
        Handle::try_current().is_none(),
        "a runtime current with no guard"
    );
    // In order is fine.
    let g1 = a.enter();
    let g2 = b.enter();
    drop(g2);
    drop(g1);
    assert!(Handle::try_current().is_none());
    // A middle guard dropped first: the one above it restores what it
    // would have (`a`), and the one below is then dropped in order.
    let g1 = a.enter();
    let g2 = b.enter();
    let g3 = a.enter();
    let middle = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(g2)));
    assert!(middle.is_err());
    drop(g3);
    assert!(
        Handle::try_current().is_some(),
        "g1's runtime is current again"
    );
    drop(g1);
    assert!(Handle::try_current().is_none());
}

#[test]
fn build_errors_say_what_to_do() {
    let e = Runtime::builder()
        .max_workers_per_pool(0)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("at least one worker"), "{e}");
    let e = Runtime::builder().thread_name("").build().unwrap_err();
    assert!(e.to_string().contains("non-empty"), "{e}");
    for idle in [Duration::ZERO, Duration::from_nanos(1)] {
        let e = Runtime::builder().idle_timeout(idle).build().unwrap_err();
        assert!(
            e.to_string().contains("idle_timeout") && e.to_string().contains("at least 1 ms"),
            "{e}"
        );
    }
    assert!(
        Runtime::builder()
            .idle_timeout(Duration::from_millis(1))
            .build()
            .is_ok()
    );
    let e = Runtime::builder().thread_stack_size(0).build().unwrap_err();
    assert!(e.to_string().contains("thread_stack_size"), "{e}");
    let e = Runtime::builder()
        .thread_stack_size(4096)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("at least 65536"), "{e}");
    let e = Runtime::builder()
        .worker_spin(Duration::from_secs(3600))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("worker_spin"), "{e}");
    let e = Runtime::builder().spinning_workers(0).build().unwrap_err();
    assert!(e.to_string().contains("spinning_workers is 0"), "{e}");
    let e = Runtime::builder()
        .cpu_hog_threshold(Duration::from_nanos(1))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("turns detection off"), "{e}");
    // The edges are fine.
    for b in [
        Runtime::builder().thread_stack_size(64 * 1024),
        Runtime::builder().worker_spin(Duration::from_millis(100)),
        Runtime::builder().spinning_workers(1),
        Runtime::builder().cpu_hog_threshold(Duration::ZERO),
        Runtime::builder().cpu_hog_threshold(Duration::from_micros(100)),
    ] {
        b.build().unwrap();
    }
    // A stack no machine can map, and a unit slip (4 GiB where 4 MiB was
    // meant): refused, naming the setting and its unit.
    for bytes in [1 << 60, 4 << 30] {
        let e = Runtime::builder()
            .thread_stack_size(bytes)
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("thread_stack_size"), "{e}");
        assert!(e.to_string().contains("at most 1073741824"), "{e}");
    }
}

/// The child half of the next test (alone in its process: it limits the
/// process's address space).
#[test]
fn a_rescuer_the_os_refuses_child() {
    if std::env::var_os("WQ_RESCUER_REFUSED_CHILD").is_none() {
        return;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize in /proc/self/status");
    // Room for the build, not for a 1 GiB stack (within a hard limit
    // already set, if any).
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain struct written by pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rl) }, 0);
    rl.rlim_cur = ((vm_kib + (256 << 10)) << 10).min(rl.rlim_max);
    // SAFETY: a plain struct passed by pointer.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
    let e = Runtime::builder()
        .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
        .thread_stack_size(1 << 30)
        .build()
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("could not start the runtime's rescuer thread")
            && msg.contains("Builder::thread_stack_size"),
        "{msg}"
    );
    let io = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .unwrap_or_else(|| panic!("no io::Error beneath: {e:?}"));
    assert!(io.raw_os_error().is_some(), "{io:?}");
}

/// A runtime whose rescuer thread the OS will not start is a build error
/// that says so, with the OS's error as its source (it was kept as text).
#[test]
fn a_rescuer_the_os_refuses_is_a_build_error_with_the_os_error_beneath() {
    let out = common::child::this_binary_test(
        "a_rescuer_the_os_refuses_child",
        "WQ_RESCUER_REFUSED_CHILD",
        "1",
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tasks_run_on_stacks_of_the_configured_size() {
    // ~3 MiB of stack in one synchronous call: more than the default 2 MiB.
    #[inline(never)]
    fn deep(n: usize) -> u64 {
        let buf = std::hint::black_box([n as u8; 1024]);
        if n == 0 {
            0
        } else {
            deep(n - 1) + u64::from(buf[n % 1024])
        }
    }
    let rt = Runtime::builder()
        .thread_stack_size(16 << 20)
        .max_workers_per_pool(1)
        .build()
        .unwrap();
    let h = rt.spawn(async { deep(3 * 1024) });
    assert!(rt.block_on(h).unwrap() > 0);
}

/// Spawns from a CPU the topology does not know go round-robin over the
/// pods, per scope: one counter for every scope sent spawns alternating
/// between two scopes to the same pods of each for good (pod 0 of 2
/// caches, pods 1 and 3 of 4 CPUs).
#[test]
fn spawns_from_an_unknown_cpu_reach_every_pod_of_each_scope() {
    let rt = synthetic("pack:2 l3:1 core:2 pu:1");
    let h = rt.handle().clone();
    for _ in 0..8 {
        rt.block_on(h.spawn_on_cpu(999, Scope::Cache, async {}))
            .unwrap();
        rt.block_on(h.spawn_on_cpu(999, Scope::Cpu, async {}))
            .unwrap();
    }
    let m = rt.metrics();
    let mut cpus: Vec<Vec<usize>> = m.pools.iter().map(|p| p.cpus.clone()).collect();
    cpus.sort();
    assert_eq!(
        cpus,
        [vec![0], vec![0, 1], vec![1], vec![2], vec![2, 3], vec![3]],
        "{m}"
    );
}

#[test]
fn spawns_from_a_worker_stay_in_its_pod() {
    let rt = synthetic("pack:2 l3:2 core:2 pu:1");
    let h = rt.handle().clone();
    rt.block_on(h.spawn_on_cpu(5, Scope::Cache, async {
        // From a worker of the cache pod {4, 5}: the same pool.
        wq::spawn_on(Scope::Cache, async {}).await.unwrap();
        wq::spawn_on(Scope::Cache, async {}).await.unwrap();
    }))
    .unwrap();
    let m = rt.metrics();
    assert_eq!(m.pools.len(), 1, "{m}");
    assert_eq!(m.pools[0].cpus, vec![4, 5]);
}

#[test]
fn threads_outside_the_runtime_spread_over_pods_by_their_cpu() {
    // A synthetic topology gives each outside thread a CPU of its own, in
    // turn: 8 threads spawning at cpu scope reach several pools.
    let rt = Arc::new(synthetic("core:8 pu:1"));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                rt.block_on(rt.spawn_on(Scope::Cpu, async {})).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(rt.metrics().pools.len() >= 2, "{}", rt.metrics());
}

/// What [`remote_steals_at`] saw.
struct Steals {
    /// The pools' `remote_steals`.
    steals: u64,
    /// Tasks that ran while their own pool's worker was blocked.
    ran_while_blocked: usize,
    /// The pools' `repatriated`.
    repatriated: u64,
    /// The tasks' polls on a worker other than their pool's.
    away_polls: u64,
    /// Their yields there (each queues the task home: repatriated).
    away_yields: u64,
}

/// Blocks the only worker of cpu 0's pool, queues work there, and lets the
/// worker of cpu 1's pool finish a task: a non-strict pool's worker then
/// takes the queued work (a remote steal); a strict one never does. CPU
/// 1's pool is first reached through `idle_scope`.
fn remote_steals_at(strict: bool, idle_scope: Scope) -> Steals {
    common::within_watchdog("remote_steals_at", Duration::from_secs(90), move || {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:2 core:1 pu:1").unwrap())
            .affinity_strict(strict)
            .worker_spin(Duration::from_millis(50))
            // The blocked worker below would be replaced by the hog watchdog:
            // this test is about stealing.
            .cpu_hog_threshold(Duration::ZERO)
            .build()
            .unwrap();
        let h = rt.handle();
        let (block_tx, block_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<std::thread::ThreadId>();
        drop(h.spawn_on_cpu(0, Scope::Cpu, async move {
            started_tx.send(std::thread::current().id()).unwrap();
            let _ = block_rx.recv_timeout(Duration::from_secs(30));
        }));
        let home = started_rx.recv().unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let away_polls = Arc::new(AtomicU64::new(0));
        let away_yields = Arc::new(AtomicU64::new(0));
        for _ in 0..10 {
            let (ran, polls, yields) = (ran.clone(), away_polls.clone(), away_yields.clone());
            drop(h.spawn_on_cpu(0, Scope::Cpu, async move {
                // Stolen, a task goes home at its yield (repatriated), to be
                // stolen again.
                if std::thread::current().id() != home {
                    polls.fetch_add(1, Ordering::SeqCst);
                    yields.fetch_add(1, Ordering::SeqCst);
                }
                wq::task::yield_now().await;
                if std::thread::current().id() != home {
                    polls.fetch_add(1, Ordering::SeqCst);
                }
                ran.fetch_add(1, Ordering::SeqCst);
            }));
        }
        // Cpu 1's worker runs one task, then spins looking for work.
        rt.block_on(h.spawn_on_cpu(1, idle_scope, async {}))
            .unwrap();
        // Non-strict: until it has run them all (a loaded machine's delays);
        // strict: a while, in which it must run none.
        let deadline = Instant::now() + Duration::from_secs(if strict { 0 } else { 10 });
        std::thread::sleep(Duration::from_millis(100));
        while ran.load(Ordering::SeqCst) < 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let ran_while_blocked = ran.load(Ordering::SeqCst);
        drop(block_tx);
        let all_ran = Instant::now() + Duration::from_secs(30);
        let (steals, repatriated) = loop {
            let m = rt.metrics();
            if ran.load(Ordering::SeqCst) == 10
                && m.pools.iter().all(|p| p.workers.total == p.workers.idle)
            {
                break (
                    m.pools.iter().map(|p| p.counters.remote_steals).sum(),
                    m.pools.iter().map(|p| p.counters.repatriated).sum(),
                );
            }
            assert!(Instant::now() < all_ran, "never ran all 10 and idled:\n{m}");
            std::thread::sleep(Duration::from_millis(1));
        };
        Steals {
            steals,
            ran_while_blocked,
            repatriated,
            away_polls: away_polls.load(Ordering::SeqCst),
            away_yields: away_yields.load(Ordering::SeqCst),
        }
    })
}

/// A worker that takes a batch from another pod's queue (not searching:
/// straight after a task of its own) kicks its own pool for the rest of
/// the batch, now in its deque, where the other pod's workers never look:
/// here X, the batch's first task, waits for Y, the second, and Y waited
/// in the busy worker's deque, its sibling asleep, until X gave up.
#[test]
fn a_remote_batch_behind_a_long_task_is_taken_by_a_sibling() {
    within(60, || {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:2 l3:1 core:2 pu:1").unwrap())
            .default_scope(Scope::Cache)
            .worker_spin(Duration::ZERO)
            .cpu_hog_threshold(Duration::ZERO)
            // Two workers per pod on a machine of one CPU too (the
            // default caps them at the CPUs the process may use).
            .max_workers_per_pool(2)
            .build()
            .unwrap();
        let h = rt.handle();
        // Both workers of CPU 0's pod busy until the end.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = Arc::new(std::sync::Mutex::new(released));
        let (started, wait_started) = std::sync::mpsc::channel::<()>();
        for _ in 0..2 {
            let (released, started) = (released.clone(), started.clone());
            drop(h.spawn_on_cpu(0, Scope::Cache, async move {
                started.send(()).unwrap();
                let _ = released
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(30));
            }));
            wait_started.recv().unwrap();
        }
        // A task of CPU 2's pod, running until the work below is queued.
        let (go, wait_go) = std::sync::mpsc::channel::<()>();
        let other = h.spawn_on_cpu(2, Scope::Cache, async move {
            started.send(()).unwrap();
            wait_go.recv().unwrap();
        });
        wait_started.recv().unwrap();
        // Let its pod's other worker, woken to search, park.
        std::thread::sleep(Duration::from_millis(100));
        let y_ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = y_ran.clone();
        let x = h.spawn_on_cpu(0, Scope::Cache, async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !seen.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::yield_now();
            }
            seen.load(Ordering::SeqCst)
        });
        let set = y_ran.clone();
        let y = h.spawn_on_cpu(
            0,
            Scope::Cache,
            async move { set.store(true, Ordering::SeqCst) },
        );
        let rest: Vec<_> = (0..4)
            .map(|_| h.spawn_on_cpu(0, Scope::Cache, async {}))
            .collect();
        go.send(()).unwrap();
        rt.block_on(other).unwrap();
        assert!(rt.block_on(x).unwrap(), "X waited for Y for 10 s");
        rt.block_on(y).unwrap();
        drop(release);
        for r in rest {
            rt.block_on(r).unwrap();
        }
    });
}

/// A task yielding in a loop lets what waits in its pool's queue run at
/// its next yield: a spawn from another thread, which here is what it
/// waits for, ran only every 61 polls (the queue's turn), the yielding
/// task running again at once from its worker's otherwise empty deque.
#[test]
fn a_yield_lets_the_pools_queue_go_first() {
    within(60, || {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("core:1").unwrap())
            .cpu_hog_threshold(Duration::ZERO)
            .build()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let yields = Arc::new(AtomicU64::new(0));
        let (s, y) = (stop.clone(), yields.clone());
        let yielder = rt.spawn(async move {
            while !s.load(Ordering::SeqCst) {
                y.fetch_add(1, Ordering::SeqCst);
                wq::task::yield_now().await;
            }
        });
        while yields.load(Ordering::SeqCst) < 100 {
            std::thread::yield_now();
        }
        for _ in 0..20 {
            let ran = Arc::new(AtomicU64::new(u64::MAX));
            let (r, y) = (ran.clone(), yields.clone());
            let queued =
                rt.spawn(async move { r.store(y.load(Ordering::SeqCst), Ordering::SeqCst) });
            // Counted from the spawn's return (it may have run already):
            // the spawn call itself takes some yields' time.
            let at = yields.load(Ordering::SeqCst);
            rt.block_on(queued).unwrap();
            let waited = ran.load(Ordering::SeqCst).saturating_sub(at);
            assert!(waited <= 4, "{waited} yields before the queued task ran");
        }
        stop.store(true, Ordering::SeqCst);
        rt.block_on(yielder).unwrap();
    });
}

#[test]
fn non_strict_pools_steal_from_the_nearest_pod() {
    let s = remote_steals_at(false, Scope::Cpu);
    assert_eq!(
        s.ran_while_blocked, 10,
        "cpu 1's worker ran cpu 0's queued work"
    );
    // Every poll away from home came from a steal, each task counted
    // once: a steal takes a batch, and only the task it returned was
    // counted (and marked away).
    assert_eq!(s.steals, s.away_polls, "remote_steals counts tasks");
    assert_eq!(
        s.repatriated, s.away_yields,
        "every stolen task that yielded went home, counted"
    );
}

/// `sibling_steals` counts tasks: a worker's tasks that its sibling ran
/// were each taken from its deque by a steal (a batch was counted once).
#[test]
fn sibling_steals_count_the_tasks_taken() {
    within(60, || {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("core:2 pu:1").unwrap())
            .default_scope(Scope::System)
            .worker_spin(Duration::from_millis(50))
            .cpu_hog_threshold(Duration::ZERO)
            // A sibling on a machine of one CPU too.
            .max_workers_per_pool(2)
            .build()
            .unwrap();
        let elsewhere = Arc::new(AtomicUsize::new(0));
        let e = elsewhere.clone();
        rt.block_on(rt.spawn(async move {
            let me = std::thread::current().id();
            let handles: Vec<_> = (0..100)
                .map(|_| {
                    let e = e.clone();
                    wq::spawn(async move {
                        if std::thread::current().id() != me {
                            e.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            // This worker holds its deque's tasks until the sibling has
            // taken some (a fixed wait could end before a sibling started
            // late on a loaded machine ran at all).
            let t = Instant::now();
            while e.load(Ordering::SeqCst) == 0 && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(1));
            }
            for h in handles {
                h.await.unwrap();
            }
        }))
        .unwrap();
        let ran_elsewhere = elsewhere.load(Ordering::SeqCst) as u64;
        // Counts are published by the time a worker idles.
        let steals: u64 = loop {
            let m = rt.metrics();
            if m.pools.iter().all(|p| p.workers.total == p.workers.idle) {
                break m.pools.iter().map(|p| p.counters.sibling_steals).sum();
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(ran_elsewhere > 0, "the sibling took nothing");
        assert!(
            steals >= ran_elsewhere,
            "{steals} sibling steals for {ran_elsewhere} tasks run by the sibling"
        );
    });
}

/// With no SMT, a `cpu` pod and an `smt` pod have the same CPUs and one
/// pool: CPU 1's, first reached through `smt`, steals from CPU 0's, first
/// reached through `cpu` (it looked in the `smt` table only, where CPU 0's
/// pool was missing).
#[test]
fn a_pool_reached_through_another_scope_steals_as_its_own() {
    let s = remote_steals_at(false, Scope::Smt);
    assert!(s.steals >= 1, "no remote steal");
    assert_eq!(
        s.ran_while_blocked, 10,
        "cpu 1's worker ran cpu 0's queued work"
    );
}

#[test]
fn strict_pools_never_steal() {
    let s = remote_steals_at(true, Scope::Cpu);
    assert_eq!(s.repatriated, 0);
    assert_eq!(s.steals, 0);
    assert_eq!(s.away_polls, 0);
    assert_eq!(s.ran_while_blocked, 0, "the work waited for its own pod");
}

#[cfg(target_os = "linux")]
#[test]
fn workers_are_bound_to_their_pod_on_a_live_topology() {
    fn allowed_cpus() -> String {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_owned()
    }
    // Strict: an idle worker of another pod may otherwise take the task
    // from this pod's queue (a remote steal) and run it on its own CPU.
    let rt = Runtime::builder().affinity_strict(true).build().unwrap();
    assert!(rt.topology().is_live());
    for pod in rt.topology().pods(Scope::Cpu) {
        let cpu = pod.cpus()[0];
        let seen = rt
            .block_on(
                rt.handle()
                    .spawn_on_cpu(cpu, Scope::Cpu, async { allowed_cpus() }),
            )
            .unwrap();
        assert_eq!(
            seen,
            cpu.to_string(),
            "a cpu-scope worker runs on its CPU only"
        );
    }
    // A synthetic topology binds to no pod.
    let rt = synthetic("core:1 pu:1");
    let outside = allowed_cpus();
    let seen = rt.block_on(rt.spawn(async { allowed_cpus() })).unwrap();
    assert_eq!(seen, outside);
    // Nor to where the thread that started a worker was pinned (a
    // benchmark's producer): a new thread inherits its creator's CPUs.
    let rt = synthetic("core:4 pu:1");
    let h = rt.handle().clone();
    let seen = std::thread::spawn(move || {
        // SAFETY: a zeroed cpu_set_t is an empty set; the calls take it
        // by pointer with its size.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set),
                0
            );
            let first = (0..libc::CPU_SETSIZE as usize)
                .find(|&c| libc::CPU_ISSET(c, &set))
                .unwrap();
            libc::CPU_ZERO(&mut set);
            libc::CPU_SET(first, &mut set);
            assert_eq!(
                libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
                0
            );
        }
        futures::executor::block_on(h.spawn(async { allowed_cpus() })).unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(seen, outside, "a worker kept its starter's CPU");
}

#[test]
fn a_task_woken_on_another_pod_runs_again_at_home() {
    let rt = Runtime::builder()
        .topology(Topology::synthetic("pack:2 core:1 pu:1").unwrap())
        .affinity_strict(true)
        .build()
        .unwrap();
    let h = rt.handle();
    let (tx, rx) = futures::channel::oneshot::channel::<u32>();
    let (polled_tx, polled_rx) = std::sync::mpsc::channel::<()>();
    let waiter = h.spawn_on_cpu(0, Scope::Cpu, async move {
        let mut rx = rx;
        let mut polled = Some(polled_tx);
        std::future::poll_fn(move |cx| {
            let r = std::pin::Pin::new(&mut rx).poll(cx);
            // Tell the test only once the waker is registered.
            if let Some(tx) = polled.take() {
                tx.send(()).unwrap();
            }
            r
        })
        .await
        .unwrap()
    });
    // The waiter has registered its waker (its first poll returns
    // Pending) before the sender runs.
    polled_rx.recv().unwrap();
    let sender = h.spawn_on_cpu(1, Scope::Cpu, async move { tx.send(9).unwrap() });
    rt.block_on(sender).unwrap();
    assert_eq!(rt.block_on(waiter).unwrap(), 9);
    // Counters are published when workers idle: wait for both polls.
    let started = |cpu: usize| {
        rt.metrics()
            .pools
            .iter()
            .filter(|p| p.cpus == [cpu])
            .map(|p| p.counters.started)
            .sum::<u64>()
    };
    for _ in 0..5000 {
        if started(0) == 2 && started(1) == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        started(0),
        2,
        "first poll and the poll after the wake, at home"
    );
    assert_eq!(started(1), 1);
}

#[test]
fn a_future_whose_drop_panics_on_abort_does_not_kill_the_worker() {
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("drop exploded");
        }
    }
    let rt = Runtime::builder().max_workers_per_pool(1).build().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let h = rt.spawn(async move {
        let _bomb = PanicOnDrop;
        tx.send(()).unwrap();
        futures::future::pending::<()>().await
    });
    rx.recv().unwrap();
    h.abort();
    assert!(rt.block_on(h).unwrap_err().is_cancelled());
    // The pool's only worker ran the cancelled task's drop, and lives on.
    for _ in 0..3 {
        assert_eq!(rt.block_on(rt.spawn(async { 5 })).unwrap(), 5);
    }
}

#[test]
fn metrics_count_the_live_tasks_of_each_pool() {
    let rt = Runtime::builder()
        .default_scope(Scope::System)
        .build()
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for i in 0..10 {
        let (tx, rx) = futures::channel::oneshot::channel::<usize>();
        senders.push(tx);
        let started = started.clone();
        handles.push(rt.spawn(async move {
            started.fetch_add(1, Ordering::SeqCst);
            rx.await.unwrap() + i
        }));
    }
    let tasks = |rt: &Runtime| rt.metrics().pools.iter().map(|p| p.tasks).sum::<usize>();
    // Queued or idle, every task is alive.
    assert_eq!(tasks(&rt), 10);
    wait_until("10 tasks started", || started.load(Ordering::SeqCst) >= 10);
    assert_eq!(tasks(&rt), 10, "idle tasks are alive");
    for tx in senders {
        tx.send(1).unwrap();
    }
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(rt.block_on(h).unwrap(), i + 1);
    }
    // A task's future is dropped before its output is handed over.
    assert_eq!(tasks(&rt), 0);
}

#[test]
fn a_task_that_goes_idle_while_the_runtime_shuts_down_is_dropped() {
    within(60, || {
        static LIVE: AtomicUsize = AtomicUsize::new(0);
        struct Live;
        impl Drop for Live {
            fn drop(&mut self) {
                LIVE.fetch_sub(1, Ordering::SeqCst);
            }
        }
        for round in 0..20 {
            let rt = Runtime::builder().max_workers_per_pool(1).build().unwrap();
            let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            LIVE.fetch_add(1, Ordering::SeqCst);
            let live = Live;
            // Its first poll blocks until the shutdown has begun (or nearly:
            // the release below races with `drop(rt)` on purpose), then the task
            // goes idle, on a waker nobody holds.
            drop(rt.spawn(async move {
                let _live = live;
                started_tx.send(()).unwrap();
                let _ = go_rx.recv();
                futures::future::pending::<()>().await
            }));
            started_rx.recv().unwrap();
            let release = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(round % 3));
                drop(go_tx);
            });
            drop(rt);
            release.join().unwrap();
            assert_eq!(LIVE.load(Ordering::SeqCst), 0, "round {round}");
        }
    });
}

#[test]
fn shutdown_drops_a_long_chain_of_awaiting_tasks_without_recursing() {
    within(60, || {
        // Each task awaits the JoinHandle of the one spawned before it; the
        // first waits forever. Dropping a task completes its handle and wakes
        // its awaiter: if that awaiter were dropped inside the wake, the drops
        // would nest once per link and overflow the small stack below.
        const LINKS: usize = 5_000;
        let rt = Runtime::builder()
            .default_scope(Scope::System)
            .build()
            .unwrap();
        let polled = Arc::new(AtomicUsize::new(0));
        let p = polled.clone();
        let mut handle = rt.spawn(async move {
            p.fetch_add(1, Ordering::SeqCst);
            futures::future::pending::<()>().await
        });
        for _ in 1..LINKS {
            let p = polled.clone();
            let inner = handle;
            handle = rt.spawn(async move {
                p.fetch_add(1, Ordering::SeqCst);
                let _ = inner.await;
            });
        }
        // Every task has gone idle (registered) before the shutdown.
        wait_until("every task idle", || polled.load(Ordering::SeqCst) >= LINKS);
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || drop(rt))
            .unwrap()
            .join()
            .expect("the runtime dropped without overflowing its stack");
        assert!(
            futures::executor::block_on(handle)
                .unwrap_err()
                .is_cancelled()
        );
    });
}

/// A runtime of one pool (system scope on 2 CPUs) of at most one worker.
fn one_worker_pool() -> Runtime {
    one_worker_pool_builder().build().unwrap()
}

/// A pool of one worker and no watchdog: no CPU-hog allowance raises the
/// limit, and no long poll's task is taken out of its LIFO slot.
fn one_worker_pool_without_watchdog() -> Runtime {
    one_worker_pool_builder()
        .cpu_hog_threshold(Duration::ZERO)
        .build()
        .unwrap()
}

fn one_worker_pool_builder() -> wq::Builder {
    Runtime::builder()
        .topology(Topology::synthetic("core:2 pu:1").unwrap())
        .default_scope(Scope::System)
        .max_workers_per_pool(1)
}

/// A pool of one worker: the task in `block_in_place` waits for a task of
/// the same pool, which can run only if the blocked worker was replaced.
#[test]
fn block_in_place_lets_another_worker_run_the_pool() {
    within(60, || {
        let rt = one_worker_pool_without_watchdog();
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let blocked = rt.spawn(async move {
            // Queue the task it waits for, from inside the pool, then block.
            let helper = wq::spawn(async move { tx.send(7).unwrap() });
            let got = wq::block_in_place(|| rx.recv().unwrap());
            helper.await.unwrap();
            got
        });
        assert_eq!(rt.block_on(blocked).unwrap(), 7);
        let m = &rt.metrics().pools[0];
        assert_eq!(m.counters.cm_wakeups, 1, "{m:?}");
        assert_eq!(m.workers.blocked, 0);
        assert!(m.counters.workers_created >= 2);
    });
}

/// Synchronous code in a task that blocks on a task it spawns, as the
/// docs say (`futures::executor::block_on` inside `block_in_place`): the
/// spawn, made on a blocked worker, goes to the pool's queue (not the
/// worker's LIFO slot, where only the watchdog looks) and runs on the
/// worker started to replace it, with no watchdog here.
#[test]
fn a_spawn_awaited_by_block_on_inside_block_in_place_runs() {
    within(60, || {
        let rt = one_worker_pool_without_watchdog();
        let got = rt.block_on(rt.spawn(async {
            wq::block_in_place(|| {
                futures::executor::block_on(async { wq::spawn(async { 7 }).await.unwrap() })
            })
        }));
        assert_eq!(got.unwrap(), 7);
    });
}

/// A pool of one worker whose worker comes back from `block_in_place`
/// while its replacement runs: the pool has two workers then, and the one
/// back steps down after its poll, so the pool runs one task at a time
/// again. (Before, both ran tasks until an idle cull, which keeps two idle
/// workers: for good.) The worker that stepped down parks in the I/O
/// driver (nobody else turns it) and its turn wakes a sleeping task into
/// its LIFO slot while the replacement still fills the pool: the task is
/// handed to the pool's queue, not kept where no other worker looks.
#[test]
fn a_worker_back_from_blocking_beside_its_replacement_steps_down() {
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;
    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(20), "{what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    within(60, || {
        // No watchdog: a CPU-hog allowance would raise the limit.
        let rt = one_worker_pool_without_watchdog();
        let started = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let (s, rel) = (started.clone(), release.clone());
        let blocker = rt.spawn(async move {
            // Armed on this worker before it blocks; it fires while this
            // worker has stepped down, in its driver turn.
            let sleeper = wq::spawn(wq::time::sleep(Duration::from_millis(100)));
            wq::task::yield_now().await;
            // Queued before the block: the replacement runs it, and it
            // runs until released, after this worker is back.
            let busy = wq::spawn(async move {
                s.store(true, Ordering::SeqCst);
                let start = Instant::now();
                while !rel.load(Ordering::SeqCst) {
                    assert!(start.elapsed() < Duration::from_secs(20), "never released");
                    std::thread::yield_now();
                }
            });
            wq::block_in_place(|| {
                wait_for("the replacement never ran the queued task", || {
                    started.load(Ordering::SeqCst)
                });
            });
            (busy, sleeper)
        });
        let (busy, sleeper) = rt.block_on(blocker).unwrap();
        wait_for("the worker back from blocking did not step down", || {
            rt.metrics().pools[0].counters.stepped_down == 1
        });
        // The sleeper's timer fires meanwhile.
        std::thread::sleep(Duration::from_millis(200));
        release.store(true, Ordering::SeqCst);
        rt.block_on(busy).unwrap();
        rt.block_on(sleeper).unwrap();
        // One task at a time now: the most tasks in a poll at once.
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (now, most) = (now.clone(), most.clone());
                rt.spawn(async move {
                    most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_micros(20) {
                        std::hint::spin_loop();
                    }
                    now.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            rt.block_on(t).unwrap();
        }
        let m = &rt.metrics().pools[0];
        assert_eq!(most.load(Ordering::SeqCst), 1, "{m:?}");
        assert_eq!(m.counters.stepped_down, 1, "{m:?}");
    });
}

/// Every slot of the pool blocked (one worker, two slots, both in
/// `block_in_place`): the task that would unblock them is queued with no
/// worker to run it and no slot to start one. The rescuer runs it.
#[test]
fn a_pool_whose_every_slot_is_blocked_is_rescued() {
    within(60, || {
        let rt = one_worker_pool();
        let (tx_a, rx_a) = std::sync::mpsc::channel::<u32>();
        let (tx_b, rx_b) = std::sync::mpsc::channel::<u32>();
        let blocked = Arc::new(AtomicUsize::new(0));
        // A task blocking its worker on `rx`, spawned once the ones before
        // it block.
        let block_on_recv = |rx: std::sync::mpsc::Receiver<u32>, nth: usize| {
            let b = blocked.clone();
            let h = rt.spawn(async move {
                wq::block_in_place(|| {
                    b.fetch_add(1, Ordering::SeqCst);
                    rx.recv().unwrap()
                })
            });
            while blocked.load(Ordering::SeqCst) < nth {
                std::thread::sleep(Duration::from_millis(1));
            }
            h
        };
        let a = block_on_recv(rx_a, 1);
        let b = block_on_recv(rx_b, 2);
        let c = rt.spawn(async move {
            tx_a.send(1).unwrap();
            tx_b.send(2).unwrap();
        });
        rt.block_on(async move {
            c.await.unwrap();
            assert_eq!((a.await.unwrap(), b.await.unwrap()), (1, 2));
        });
    });
}

/// As above, but the task that unblocks them is spawned by the second
/// blocked task just before it blocks: it sits in that worker's deque, not
/// in the pool's queue. The rescuer must find it there.
#[test]
fn a_task_in_a_blocked_workers_deque_is_rescued() {
    within(60, || {
        let rt = one_worker_pool_without_watchdog();
        let (tx_a, rx_a) = std::sync::mpsc::channel::<u32>();
        let (tx_b, rx_b) = std::sync::mpsc::channel::<u32>();
        let blocked = Arc::new(AtomicUsize::new(0));
        let b1 = blocked.clone();
        let a = rt.spawn(async move {
            wq::block_in_place(|| {
                b1.fetch_add(1, Ordering::SeqCst);
                rx_a.recv().unwrap()
            })
        });
        while blocked.load(Ordering::SeqCst) < 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let b = rt.spawn(async move {
            // Spawned on this worker: its LIFO slot, then its deque.
            drop(wq::spawn(async move {
                tx_a.send(1).unwrap();
                tx_b.send(2).unwrap();
            }));
            wq::block_in_place(|| rx_b.recv().unwrap())
        });
        rt.block_on(async move {
            assert_eq!((a.await.unwrap(), b.await.unwrap()), (1, 2));
        });
    });
}

/// A worker blocked on a task queued in its own deque while the runtime
/// shuts down: the shutdown drops that task (its sender with it), so the
/// worker unblocks and exits instead of the drop hanging. The pool's one
/// running worker is busy with a 2 s loop meanwhile (no watchdog, so no
/// allowance): nobody else would take the task.
#[test]
fn shutdown_drops_the_tasks_in_a_blocked_workers_deque() {
    within(60, || {
        let rt = one_worker_pool_without_watchdog();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<&str>();
        let spinning = ready_tx.clone();
        let h = rt.spawn(async move {
            let (tx, rx) = std::sync::mpsc::channel::<u32>();
            // Into this worker's deque, in this order: the spinner (taken
            // by the worker the block starts: a steal takes half) and the
            // sender, left behind.
            drop(wq::spawn(async move {
                spinning.send("spinning").unwrap();
                let start = std::time::Instant::now();
                while start.elapsed() < Duration::from_secs(2) {
                    std::hint::spin_loop();
                }
            }));
            drop(wq::spawn(async move {
                tx.send(1).unwrap();
            }));
            wq::block_in_place(|| {
                ready_tx.send("blocked").unwrap();
                rx.recv()
            })
        });
        let mut seen = [ready_rx.recv().unwrap(), ready_rx.recv().unwrap()];
        seen.sort_unstable();
        assert_eq!(seen, ["blocked", "spinning"]);
        drop(h);
        assert!(
            rt.shutdown_timeout(Duration::from_secs(20)),
            "a worker blocked on a task in its deque kept the shutdown waiting"
        );
    });
}

/// A task whose poll is running when the pools close absorbs the
/// shutdown's wake and is queued on its closed pool when the poll ends;
/// a worker blocked in `block_in_place` on what that task holds (a
/// channel's sender) kept the shutdown waiting for ever. The shutdown now
/// drops what reaches the closed queues while it waits.
#[test]
fn shutdown_drops_a_task_whose_poll_was_running_when_the_pools_closed() {
    within(60, || {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("core:2 pu:1").unwrap())
            .default_scope(Scope::System)
            .max_workers_per_pool(2)
            .cpu_hog_threshold(Duration::ZERO)
            .build()
            .unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<&str>();
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let blocked_tx = ready_tx.clone();
        let blocked = rt.spawn(async move {
            wq::block_in_place(|| {
                blocked_tx.send("blocked").unwrap();
                rx.recv()
            })
        });
        let holder = rt.spawn(async move {
            let _tx = tx;
            ready_tx.send("polling").unwrap();
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_millis(300) {
                std::hint::spin_loop();
            }
            wq::task::yield_now().await;
            std::future::pending::<()>().await;
        });
        let mut seen = [ready_rx.recv().unwrap(), ready_rx.recv().unwrap()];
        seen.sort_unstable();
        assert_eq!(seen, ["blocked", "polling"]);
        drop((blocked, holder));
        assert!(
            rt.shutdown_timeout(Duration::from_secs(5)),
            "a task queued after its poll outlived the pools' close, and kept a blocked worker waiting"
        );
    });
}

/// A poll that blocks (without `block_in_place`) on the task it just
/// spawned, which waits in its worker's LIFO slot where nothing looks once
/// the watchdog is off or gone: the shutdown takes the slot's task and
/// drops it, and the poll ends.
#[test]
fn shutdown_drops_the_task_in_a_stuck_workers_lifo_slot() {
    within(60, || {
        let rt = one_worker_pool_without_watchdog();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let h = rt.spawn(async move {
            let (tx, rx) = std::sync::mpsc::channel::<u32>();
            drop(wq::spawn(async move {
                tx.send(1).unwrap();
            }));
            ready_tx.send(()).unwrap();
            rx.recv()
        });
        ready_rx.recv().unwrap();
        drop(h);
        assert!(
            rt.shutdown_timeout(Duration::from_secs(5)),
            "a worker stuck on the task in its LIFO slot kept the shutdown waiting"
        );
    });
}

/// The same with no time to wait (`shutdown_timeout(Duration::ZERO)`, as
/// `shutdown_background`): the LIFO slot's task is still dropped, on the
/// calling thread, and the stuck poll ends. The slots were emptied only in
/// the wait's slices, which a deadline already past skipped: the worker
/// stayed blocked for the life of the process.
#[test]
fn a_shutdown_without_a_wait_drops_the_task_in_a_stuck_workers_lifo_slot() {
    within(60, || {
        let rt = one_worker_pool_without_watchdog();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let ended = Arc::new(AtomicBool::new(false));
        let ended_in_task = ended.clone();
        let h = rt.spawn(async move {
            let (tx, rx) = std::sync::mpsc::channel::<u32>();
            drop(wq::spawn(async move {
                tx.send(1).unwrap();
            }));
            ready_tx.send(()).unwrap();
            let got = rx.recv();
            ended_in_task.store(true, Ordering::SeqCst);
            got
        });
        ready_rx.recv().unwrap();
        drop(h);
        rt.shutdown_timeout(Duration::ZERO);
        wait_until("the stuck poll to end", || ended.load(Ordering::SeqCst));
    });
}

/// An idle task dropped by the shutdown runs its `Drop` with the runtime
/// current, as on a worker: a spawn there is refused (it panicked "outside
/// a wq runtime" when the shutdown thread was not a worker, and the rest of
/// the `Drop` was skipped; inside another runtime's `block_on`, it spawned
/// onto that one).
#[test]
fn futures_dropped_by_the_shutdown_see_their_runtime() {
    struct SpawnsOnDrop(Arc<AtomicUsize>);
    impl Drop for SpawnsOnDrop {
        fn drop(&mut self) {
            let h = wq::spawn(async {});
            let refused = futures::executor::block_on(h).unwrap_err().is_refused();
            self.0.store(if refused { 1 } else { 2 }, Ordering::SeqCst);
        }
    }
    within(60, || {
        let other = Runtime::new().unwrap();
        for inside_other in [false, true] {
            let rt = Runtime::new().unwrap();
            let done = Arc::new(AtomicUsize::new(0));
            let guard = SpawnsOnDrop(done.clone());
            let (tx, rx) = std::sync::mpsc::channel();
            drop(rt.spawn(async move {
                let _guard = guard;
                tx.send(()).unwrap();
                std::future::pending::<()>().await;
            }));
            rx.recv().unwrap();
            if inside_other {
                other.block_on(async { drop(rt) });
            } else {
                drop(rt);
            }
            assert_eq!(
                done.load(Ordering::SeqCst),
                1,
                "the Drop's spawn was not refused (inside another runtime: {inside_other})"
            );
        }
    });
}

/// A worker of one runtime spawning onto another (both on synthetic
/// topologies) is placed as any other thread of that other runtime, by
/// one CPU picked for the thread: its own runtime's virtual CPU (7 here,
/// unknown to the other) sent each spawn round-robin over the other's pods.
#[test]
fn a_worker_of_another_runtime_is_placed_by_a_cpu_of_this_one() {
    within(60, || {
        let a = synthetic("core:8 pu:1");
        let b = synthetic("core:4 pu:1");
        let bh = b.handle().clone();
        a.block_on(a.handle().spawn_on_cpu(7, Scope::Cpu, async move {
            for _ in 0..4 {
                bh.spawn_on(Scope::Cpu, async {}).await.unwrap();
            }
        }))
        .unwrap();
        assert_eq!(
            b.metrics().pools.len(),
            1,
            "one thread's spawns went to several pods"
        );
    });
}

/// `Handle::block_on` on a worker is refused, `block_in_place`'s closure
/// included (tokio's bridge there); the panic says what works instead (it
/// said ".await the future", which a synchronous closure cannot).
#[test]
fn block_on_inside_block_in_place_says_what_to_use_instead() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        let err = rt
            .block_on(rt.spawn(async {
                wq::block_in_place(|| wq::Handle::current().block_on(async { 7 }))
            }))
            .unwrap_err();
        let payload = err.into_panic();
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap();
        for what in ["futures::executor::block_on", "wq::spawn_blocking"] {
            assert!(msg.contains(what), "{msg:?} does not name {what}");
        }
        // What it advises works.
        let seven = rt
            .block_on(
                rt.spawn(async { wq::block_in_place(|| futures::executor::block_on(async { 7 })) }),
            )
            .unwrap();
        assert_eq!(seven, 7);
    });
}

/// A future refused by a closed runtime is dropped inside `wq::spawn`;
/// its `Drop` may use another runtime (`block_on`, `enter`): it panicked
/// "already borrowed" (the current runtime's thread-local was borrowed for
/// the whole spawn call).
#[test]
fn a_refused_futures_drop_may_enter_another_runtime() {
    struct BlocksOnDrop(wq::Handle, Arc<AtomicUsize>);
    impl Drop for BlocksOnDrop {
        fn drop(&mut self) {
            let n = self.0.block_on(async { 5 });
            self.1.store(n, Ordering::SeqCst);
        }
    }
    within(60, || {
        let closed = Runtime::new().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = closed.handle().clone();
        let other = Runtime::new().unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let guard = BlocksOnDrop(other.handle().clone(), done.clone());
        let t = std::thread::spawn(move || {
            rx.recv().unwrap();
            // Current here: the closed runtime.
            h.block_on(async move { wq::spawn(async move { drop(guard) }).await })
                .unwrap_err()
                .is_refused()
        });
        drop(closed);
        tx.send(()).unwrap();
        assert!(t.join().expect("the refused future's Drop panicked"));
        assert_eq!(done.load(Ordering::SeqCst), 5, "the Drop did not run");
    });
}

/// The thread hooks run on every worker, rescuer and blocking thread, the
/// runtime current, as it starts and as it stops: once the runtime is
/// dropped, as many stops as starts. A hook that panics leaves its thread
/// working.
#[test]
fn thread_hooks_run_as_each_runtime_thread_starts_and_stops() {
    within(60, || {
        let names = Arc::new(Mutex::new(Vec::new()));
        let starts = Arc::new(AtomicUsize::new(0));
        let stops = Arc::new(AtomicUsize::new(0));
        let current = Arc::new(AtomicUsize::new(0));
        let rt = Runtime::builder()
            .thread_name("hooked")
            .on_thread_start({
                let (names, starts, current) = (names.clone(), starts.clone(), current.clone());
                move || {
                    starts.fetch_add(1, Ordering::SeqCst);
                    if wq::Handle::try_current().is_some() {
                        current.fetch_add(1, Ordering::SeqCst);
                    }
                    let me = std::thread::current();
                    names.lock().unwrap().push(me.name().unwrap().to_owned());
                }
            })
            .on_thread_stop({
                let (stops, current) = (stops.clone(), current.clone());
                move || {
                    stops.fetch_add(1, Ordering::SeqCst);
                    if wq::Handle::try_current().is_some() {
                        current.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
            .build()
            .unwrap();
        rt.block_on(async {
            wq::spawn(async {}).await.unwrap();
            wq::spawn_blocking(|| ()).await.unwrap();
        });
        drop(rt);
        let (starts, stops) = (starts.load(Ordering::SeqCst), stops.load(Ordering::SeqCst));
        assert!(starts >= 3, "{starts} starts");
        assert_eq!(starts, stops);
        assert_eq!(
            current.load(Ordering::SeqCst),
            2 * starts,
            "a hook ran outside the runtime"
        );
        let names = names.lock().unwrap();
        for kind in ["hooked-rescuer", "hooked-blocking", "hooked-0."] {
            assert!(
                names.iter().any(|n| n.starts_with(kind)),
                "no {kind} in {names:?}"
            );
        }

        // A panicking hook: said on stderr, the threads work on.
        let rt = Runtime::builder()
            .on_thread_start(|| panic!("a hook that fails"))
            .on_thread_stop(|| panic!("a hook that fails too"))
            .build()
            .unwrap();
        assert_eq!(rt.block_on(rt.spawn(async { 7 })).unwrap(), 7);
        assert_eq!(rt.block_on(rt.spawn_blocking(|| 8)).unwrap(), 8);
        drop(rt);
    });
}

/// `?` turns a `JoinError` or a `BuildError` into an `io::Error` (as
/// tokio's), the error inside it.
#[test]
fn join_and_build_errors_convert_to_io_errors() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        let joined = || -> std::io::Result<u32> {
            let h = rt.spawn(async { panic!("boom") });
            rt.block_on(h)?;
            Ok(1)
        };
        let err = joined().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Other);
        assert_eq!(err.to_string(), "task panicked: boom");
        let inner = err
            .into_inner()
            .unwrap()
            .downcast::<wq::JoinError>()
            .unwrap();
        assert!(inner.is_panic());
        let built = || -> std::io::Result<Runtime> {
            Ok(Runtime::builder().max_workers_per_pool(0).build()?)
        };
        let err = built().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::Other);
        assert!(err.to_string().contains("max_workers_per_pool"), "{err}");
    });
}

/// `Handle::try_spawn` runs a future on a live runtime and gives it back,
/// unpolled and undropped, from one shut down (`spawn` drops it there);
/// so do `try_spawn_on` and `try_spawn_on_cpu`.
#[test]
fn try_spawn_gives_the_future_back_from_a_runtime_shut_down() {
    within(60, || {
        let rt = Runtime::new().unwrap();
        let h = rt.handle().clone();
        let ran = rt.block_on(h.try_spawn(async { 3 }).unwrap()).unwrap();
        assert_eq!(ran, 3);
        drop(rt);
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Counted(Arc<AtomicUsize>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let guard = Counted(dropped.clone());
        let err = h
            .try_spawn_on(Scope::Cpu, async move {
                let _guard = guard;
                7
            })
            .unwrap_err();
        assert!(err.is_shut_down(), "{err}");
        assert!(
            err.to_string().starts_with("the runtime is shut down"),
            "{err}"
        );
        assert_eq!(dropped.load(Ordering::SeqCst), 0, "dropped in the call");
        assert_eq!(futures::executor::block_on(err.into_future()), 7);
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        let guard = Counted(dropped.clone());
        let err = h
            .try_spawn_on_cpu(0, Scope::Cache, async move {
                let _guard = guard;
                8
            })
            .unwrap_err();
        assert!(err.is_shut_down(), "{err}");
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "dropped in the call");
        assert_eq!(futures::executor::block_on(err.into_future()), 8);
    });
}

/// Tasks a poll spawned before it blocked go where every worker looks
/// once the block outlasts the CPU-hog threshold (the watchdog moves the
/// blocked worker's deque to the injector): left in the deque, they
/// waited for the whole block while a steady stream of work kept the
/// injector (which workers look at first) from ever being empty.
#[test]
fn tasks_spawned_before_a_block_do_not_wait_for_it_behind_a_busy_queue() {
    within(60, || {
        let rt = one_worker_pool_builder()
            .cpu_hog_threshold(Duration::from_millis(10))
            .build()
            .unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let first_child = Arc::new(std::sync::Mutex::new(None::<std::time::Instant>));
        let fc = first_child.clone();
        let blocker = rt.spawn(async move {
            ready_tx.send(()).unwrap();
            // Holds the only worker while the stream below starts.
            go_rx.recv().unwrap();
            for _ in 0..4 {
                let fc = fc.clone();
                drop(wq::spawn(async move {
                    fc.lock()
                        .unwrap()
                        .get_or_insert_with(std::time::Instant::now);
                }));
            }
            let blocked_at = std::time::Instant::now();
            wq::block_in_place(|| std::thread::sleep(Duration::from_millis(3000)));
            blocked_at
        });
        ready_rx.recv().unwrap();
        // A stream of 200 us tasks, one every 150 us: the injector is
        // never empty for long, and the replacement never idles.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, s) = (rt.handle().clone(), stop.clone());
        let producer = std::thread::spawn(move || {
            let spin = |d: Duration| {
                let t = std::time::Instant::now();
                while t.elapsed() < d {
                    std::hint::spin_loop();
                }
            };
            while !s.load(Ordering::Relaxed) {
                drop(h.spawn(async move { spin(Duration::from_micros(200)) }));
                spin(Duration::from_micros(150));
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        go_tx.send(()).unwrap();
        let blocked_at = rt.block_on(blocker).unwrap();
        stop.store(true, Ordering::Relaxed);
        producer.join().unwrap();
        let started = first_child.lock().unwrap().expect("no child ran");
        let waited = started.saturating_duration_since(blocked_at);
        // Moved to the injector within the threshold's looks, the children
        // wait behind the stream's backlog there, which grows by a third
        // of a task per ms it runs (more on a loaded machine, where this
        // thread's sleep above stretches): tens of ms. Left in the deque,
        // they waited for the whole block.
        assert!(
            waited < Duration::from_millis(1500),
            "the tasks spawned before the block started {waited:?} after it"
        );
    });
}

#[test]
fn block_in_place_outside_a_worker_just_runs_the_closure() {
    assert_eq!(wq::block_in_place(|| 5), 5);
    let rt = Runtime::new().unwrap();
    assert_eq!(rt.block_on(async { wq::block_in_place(|| 6) }), 6);
    // Nested, and a panic inside leaves the worker usable.
    let h = rt.spawn(async {
        let r = std::panic::catch_unwind(|| wq::block_in_place(|| panic!("inner")));
        assert!(r.is_err());
        wq::block_in_place(|| wq::block_in_place(|| 8))
    });
    assert_eq!(rt.block_on(h).unwrap(), 8);
    assert!(rt.metrics().pools.iter().all(|p| p.workers.blocked == 0));
}

/// A runtime dropped while its thread panics (a failing `#[wq::test]`)
/// waits a bounded time for a task stuck in its poll, and the panic goes
/// on: before, the drop waited for the stuck task for ever, so the failing
/// test hung instead of failing.
#[test]
fn a_runtime_dropped_in_a_panic_does_not_wait_for_ever_on_a_stuck_task() {
    use std::sync::atomic::AtomicBool;
    within(60, || {
        let release = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let (r, s) = (release.clone(), started.clone());
        let t = std::time::Instant::now();
        let unwound = std::panic::catch_unwind(move || {
            let rt = Runtime::builder().build().unwrap();
            drop(rt.spawn(async move {
                s.store(true, Ordering::SeqCst);
                while !r.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }));
            while !started.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            panic!("the test failed");
        });
        let took = t.elapsed();
        release.store(true, Ordering::SeqCst);
        assert!(unwound.is_err());
        assert!(took >= Duration::from_secs(9), "gave up after {took:?}");
    });
}

/// A runtime held in a `thread_local!` is dropped at the thread's exit,
/// after wq's own thread-locals may be gone: its shutdown cannot make
/// itself the thread's current runtime then, and goes on without (it
/// panicked inside a thread-local's destructor, which aborts the process).
#[test]
fn a_runtime_in_a_thread_local_shuts_down_at_the_threads_exit() {
    thread_local! {
        static RT: Runtime = Runtime::new().unwrap();
    }
    let t = std::thread::spawn(|| {
        RT.with(|rt| {
            let h = rt.spawn(futures::future::pending::<()>());
            assert_eq!(rt.block_on(async { 1 }), 1);
            drop(h);
        });
    });
    t.join().unwrap();
}

/// Awaiting a join handle is an operation of the awaiting task's budget,
/// as in tokio: a task that joins many handles already done yields its
/// worker on the way (polled more than once), where it ran them all in one
/// poll. `JoinSet::try_join_next` still finds every finished task, budget
/// spent or not.
#[test]
fn joining_finished_handles_spends_the_operation_budget() {
    within(60, || {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:1 core:1 pu:1").unwrap())
            .default_scope(Scope::System)
            .build()
            .unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..1000)
            .map(|i| {
                let done = done.clone();
                rt.spawn(async move {
                    done.fetch_add(1, Ordering::SeqCst);
                    i
                })
            })
            .collect();
        let mut set = wq::task::JoinSet::new();
        let _in = rt.enter();
        for i in 0..300 {
            let done = done.clone();
            set.spawn_on(Scope::System, async move {
                done.fetch_add(1, Ordering::SeqCst);
                i
            });
        }
        while done.load(Ordering::SeqCst) < 1300 {
            std::thread::sleep(Duration::from_millis(1));
        }
        /// Counts the polls of the future it wraps.
        struct Counted<F>(F, Arc<AtomicUsize>);
        impl<F: Future + Unpin> Future for Counted<F> {
            type Output = F::Output;
            fn poll(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<F::Output> {
                self.1.fetch_add(1, Ordering::SeqCst);
                std::pin::Pin::new(&mut self.0).poll(cx)
            }
        }
        let polls = Arc::new(AtomicUsize::new(0));
        let joined = rt.spawn(Counted(
            Box::pin(async move {
                let mut sum = 0;
                for h in handles {
                    sum += h.await.unwrap();
                }
                // The budget is spent by now: try_join_next still sees
                // every finished task.
                let mut n = 0;
                while let Some(r) = set.try_join_next() {
                    r.unwrap();
                    n += 1;
                }
                (sum, n)
            }),
            polls.clone(),
        ));
        let (sum, n) = rt.block_on(joined).unwrap();
        assert_eq!(sum, (0..1000).sum::<usize>());
        assert_eq!(n, 300, "try_join_next missed finished tasks");
        assert!(
            polls.load(Ordering::SeqCst) > 1,
            "1000 joins in one poll: the budget was not spent"
        );
    });
}

/// A `block_on` nested in `block_on`'s future runs, and gives the outer
/// poll the rest of its operation budget back: it left the thread with no
/// budget, and the outer poll joined every finished handle at once.
#[test]
fn a_nested_block_on_runs_and_gives_the_budget_back() {
    within(60, || {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let (inner, ready) = rt.block_on(async {
            let mut handles: Vec<_> = (0..300).map(|i| wq::spawn(async move { i })).collect();
            while !handles.iter().all(|h| h.is_finished()) {
                wq::task::yield_now().await;
            }
            // One poll from here: the nested call, then the joins.
            let inner = handle.block_on(async { wq::spawn(async { 7 }).await.unwrap() });
            let mut ready = 0;
            for h in &mut handles {
                match futures::poll!(h) {
                    std::task::Poll::Ready(r) => {
                        r.unwrap();
                        ready += 1;
                    }
                    std::task::Poll::Pending => break,
                }
            }
            (inner, ready)
        });
        assert_eq!(inner, 7);
        assert!(
            (1..300).contains(&ready),
            "{ready} of 300 finished handles joined in one poll after a nested block_on \
             (the budget is 128 operations a poll)"
        );
    });
}

/// Two guards of one runtime dropped in creation order: the first drop is
/// out of order, and says so (it passed, as both made the same runtime
/// current, and cleared the context while the second guard lived).
#[test]
fn enter_guards_of_one_runtime_dropped_out_of_order_are_caught() {
    let rt = Runtime::new().unwrap();
    let first = rt.enter();
    let second = rt.enter();
    let p =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(first))).unwrap_err();
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .unwrap_or_default();
    assert!(msg.contains("dropped out of order"), "{msg:?}");
    // The runtime is still current for the guard alive.
    assert!(wq::Handle::try_current().is_some());
    std::mem::forget(second);
}

/// A guard made inside a `block_on` future and returned from it outlives
/// `block_on`'s own guard: that drop is out of order, and the message
/// says how to keep it in order there (it told to drop the inner guard
/// first, which `block_on`'s caller cannot).
#[test]
fn an_enter_guard_returned_from_block_on_is_caught_and_the_message_says_why() {
    let (rt, other) = (Runtime::new().unwrap(), Runtime::new().unwrap());
    let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = rt.block_on(async { other.enter() });
    }))
    .unwrap_err();
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .unwrap_or_default();
    assert!(msg.contains("dropped out of order"), "{msg:?}");
    assert!(msg.contains("before block_on returns"), "{msg:?}");
}

/// The child half of the next test: runs only when that test re-executes
/// this binary with `WQ_TLS_DROP_CHILD` set.
#[test]
fn block_on_in_a_tls_destructor_child() {
    let Some(mode) = std::env::var_os("WQ_TLS_DROP_CHILD") else {
        return;
    };
    /// A thread's connection, flushed through the runtime as the thread
    /// exits.
    struct Conn(wq::Handle, &'static str);
    impl Drop for Conn {
        fn drop(&mut self) {
            let mode = self.1;
            let n = self.0.block_on(async move {
                // Each needs a current runtime: none can be, here.
                match mode {
                    "timer" => wq::time::sleep(Duration::from_millis(1)).await,
                    "current" => drop(wq::Handle::current()),
                    _ => {}
                }
                6 * 7
            });
            println!("flushed {n}");
        }
    }
    let mode: &'static str = match mode.to_str() {
        Some("timer") => "timer",
        Some("current") => "current",
        Some("early") => "early",
        _ => "",
    };
    std::thread_local! {
        static CONN: std::cell::RefCell<Option<Conn>> = const { std::cell::RefCell::new(None) };
    }
    let rt = Runtime::new().unwrap();
    let h = rt.handle().clone();
    std::thread::spawn(move || {
        if mode == "early" {
            // wq's current runtime first, then this thread-local, then the
            // rest of wq's (a guard's first drop below): at the exit the
            // connection's flush runs between them.
            assert!(wq::Handle::try_current().is_none());
        }
        // This thread-local first, wq's after: wq's is destroyed first at
        // the thread's exit, before the connection's flush.
        CONN.with(|c| *c.borrow_mut() = Some(Conn(h.clone(), mode)));
        assert_eq!(h.block_on(async { 1 }), 1);
    })
    .join()
    .unwrap();
}

/// A `block_on` in a thread-local's destructor, after wq's own
/// thread-locals were destroyed, runs its future (the runtime not current
/// there): it made the runtime current and the access aborted the
/// process.
#[test]
fn block_on_in_a_thread_locals_destructor_runs() {
    let child = |mode| {
        common::child::this_binary_test(
            "block_on_in_a_tls_destructor_child",
            "WQ_TLS_DROP_CHILD",
            mode,
        )
    };
    // "early": wq's current runtime outlives the connection, the rest of
    // its thread-locals not (a guard's drop there aborted the process).
    for mode in ["1", "early"] {
        let out = child(mode);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("flushed 42"),
            "the child ({mode}) {}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A timer there cannot work (no runtime can be current): the panic,
    // an abort in a destructor, says where it was and why, not "outside a
    // wq runtime" from inside a block_on.
    // So does Handle::current() there (it said "outside a wq runtime").
    for mode in ["timer", "current"] {
        let out = child(mode);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("in a thread-local's destructor, after wq's own"),
            "{mode}: {stderr}"
        );
    }
}

/// The child half of the next test: runs only when that test re-executes
/// this binary with `WQ_JOIN_WAKER_CHILD` set.
#[test]
fn panicking_join_waker_child() {
    if std::env::var_os("WQ_JOIN_WAKER_CHILD").is_none() {
        return;
    }
    struct Boom;
    impl std::task::Wake for Boom {
        fn wake(self: Arc<Self>) {
            panic!("a foreign waker panicked");
        }
    }
    let boom = std::task::Waker::from(Arc::new(Boom));
    let rt = Runtime::new().unwrap();
    for abort in [false, true] {
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        let mut h = rt.spawn(async move {
            let _ = rx.await;
        });
        let polled = std::pin::Pin::new(&mut h).poll(&mut std::task::Context::from_waker(&boom));
        assert!(polled.is_pending());
        if abort {
            // The cancel wakes the awaiter on this thread.
            h.abort();
        } else {
            // The task's end wakes the awaiter on its worker.
            tx.send(()).unwrap();
            while !h.is_finished() {
                std::thread::yield_now();
            }
        }
        drop(h);
    }
    // The runtime and its workers live on.
    assert_eq!(rt.block_on(rt.spawn(async { 5 })).unwrap(), 5);
}

/// A waker of another executor that panics when a `JoinHandle`'s task ends
/// (or is aborted) is caught, as the driver catches a socket waker's
/// panic: async-task calls its awaiter under an abort-on-panic guard, and
/// the whole process aborted.
#[test]
fn a_panicking_waker_awaiting_a_join_handle_does_not_abort_the_process() {
    let out =
        common::child::this_binary_test("panicking_join_waker_child", "WQ_JOIN_WAKER_CHILD", "1");
    assert!(
        out.status.success(),
        "the child {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The child half of the next test (alone in its process: it counts the
/// process's epoll descriptors).
#[test]
fn a_handle_kept_past_its_runtime_child() {
    if std::env::var_os("WQ_KEPT_HANDLE_CHILD").is_none() {
        return;
    }
    let epolls = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|l| l.to_string_lossy().contains("eventpoll"))
            .count()
    };
    let before = epolls();
    let rt = Runtime::builder()
        .cpu_hog_threshold(Duration::ZERO)
        .build()
        .unwrap();
    rt.block_on(async { wq::time::sleep(Duration::from_millis(1)).await });
    assert_eq!(
        epolls(),
        before + 2,
        "the driver's epoll and its registry's"
    );
    let h = rt.handle().clone();
    drop(rt);
    // What sockets and timers may still hold stays: the registry's.
    assert_eq!(epolls(), before + 1, "the shut driver's epoll kept");
    drop(h);
    assert_eq!(epolls(), before);
}

/// A `Handle` kept past its runtime keeps no shut driver's epoll
/// descriptor or event buffer (they went with the last handle).
#[test]
fn a_handle_kept_past_its_runtime_holds_no_shut_driver() {
    let out = common::child::this_binary_test(
        "a_handle_kept_past_its_runtime_child",
        "WQ_KEPT_HANDLE_CHILD",
        "1",
    );
    assert!(
        out.status.success(),
        "the child {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
