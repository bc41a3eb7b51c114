//! Named workqueues: every guarantee, through the public API. Each test
//! runs under a watchdog: a stranded item or a flush that never returns is
//! a failure, not a hung test.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use wq::{Runtime, Scope, Topology, Workqueue};

use common::within;

fn runtime(desc: &str) -> Runtime {
    Runtime::builder()
        .topology(Topology::synthetic(desc).unwrap())
        .default_scope(Scope::System)
        .build()
        .unwrap()
}

/// One `system` pool of at most one worker on two made-up CPUs.
fn one_worker_runtime() -> Runtime {
    Runtime::builder()
        .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
        .default_scope(Scope::System)
        .max_workers_per_pool(1)
        .build()
        .unwrap()
}

/// [`one_worker_runtime`] with the CPU-hog watchdog off: a poll that
/// spins or blocks on purpose gets no second worker beside it.
fn one_worker_runtime_without_watchdog() -> Runtime {
    Runtime::builder()
        .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
        .default_scope(Scope::System)
        .max_workers_per_pool(1)
        .cpu_hog_threshold(Duration::ZERO)
        .build()
        .unwrap()
}

/// Tracks how many items run at once, and the most seen.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    high: AtomicUsize,
}

impl Concurrency {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.high.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An item inside a [`Concurrency`] count until dropped, its future's
/// drop included.
struct Inside(Arc<Concurrency>);

impl Inside {
    fn enter(c: Arc<Concurrency>) -> Inside {
        c.enter();
        Inside(c)
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// One `system` pool of at most `max_workers` workers on two made-up
/// CPUs, with the CPU-hog watchdog at 10 ms.
fn hog_runtime(max_workers: usize) -> Runtime {
    hog_runtime_with(max_workers, "wq", Duration::from_millis(10))
}

/// The same with workers named `thread_name` and the watchdog at
/// `threshold`.
fn hog_runtime_with(max_workers: usize, thread_name: &str, threshold: Duration) -> Runtime {
    Runtime::builder()
        .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
        .default_scope(Scope::System)
        .max_workers_per_pool(max_workers)
        .cpu_hog_threshold(threshold)
        .thread_name(thread_name)
        .build()
        .unwrap()
}

/// Spawns `per` items on `q` from each of `producers` threads; each item is
/// counted in `c` while it runs, across `yields` yields (an item is active
/// across its waits too). Returns their handles.
fn spawn_counted(
    q: &Workqueue,
    c: &Arc<Concurrency>,
    producers: usize,
    per: usize,
    yields: usize,
) -> Vec<wq::JoinHandle<()>> {
    let handles = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..producers {
            s.spawn(|| {
                for _ in 0..per {
                    let c = c.clone();
                    let h = q.spawn(async move {
                        c.enter();
                        for _ in 0..yields {
                            wq::task::yield_now().await;
                        }
                        c.leave();
                    });
                    handles.lock().unwrap().push(h);
                }
            });
        }
    });
    handles.into_inner().unwrap()
}

/// Waits for every handle; each item must have finished well.
fn await_all(rt: &Runtime, handles: Vec<wq::JoinHandle<()>>) {
    rt.block_on(async {
        for h in handles {
            h.await.unwrap();
        }
    });
}

#[test]
fn max_active_is_never_exceeded_under_load() {
    within(120, || {
        let rt = runtime("pack:1 core:4 pu:1");
        let q = Workqueue::builder("limited")
            .max_active(3)
            .build(rt.handle())
            .unwrap();
        let c = Arc::new(Concurrency::default());
        await_all(&rt, spawn_counted(&q, &c, 4, 500, 3));
        let high = c.high.load(Ordering::SeqCst);
        assert!(high <= 3, "{high} items active at once, max_active 3");
        assert_eq!(high, 3, "items did overlap up to the limit");
        // The handles' awaits may return before their items' ends are
        // counted (`Workqueue::stats`); a flush returns after.
        rt.block_on(q.flush());
        let s = q.stats();
        assert_eq!((s.started, s.completed), (2000, 2000), "{s:?}");
        assert_eq!((s.in_flight, s.active, s.inactive), (0, 0, 0), "{s:?}");
    });
}

#[test]
fn ordered_items_never_overlap_and_keep_their_order() {
    within(120, || {
        let rt = runtime("pack:1 core:4 pu:1");
        let q = Workqueue::builder("ordered")
            .ordered()
            .build(rt.handle())
            .unwrap();
        assert_eq!(q.max_active(), 1);
        let c = Arc::new(Concurrency::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..300)
            .map(|i| {
                let (c, order) = (c.clone(), order.clone());
                q.spawn(async move {
                    c.enter();
                    order.lock().unwrap().push(i);
                    wq::task::yield_now().await;
                    c.leave();
                })
            })
            .collect();
        rt.block_on(async {
            for h in handles {
                h.await.unwrap();
            }
        });
        assert_eq!(c.high.load(Ordering::SeqCst), 1, "ordered items overlapped");
        assert_eq!(*order.lock().unwrap(), (0..300).collect::<Vec<_>>());
    });
}

/// An ordered queue moved between pods while its items run (`set_scope`,
/// `set_strict` from another thread), items spawned from CPUs of either
/// cache pod, one item panicking and one aborted while it waits: the
/// rest still run one at a time, in submission order, each after the one
/// before ended (the slot comes back at an item's end, whatever pool it
/// ran in, and a panic or an abort gives it back too).
#[test]
fn an_ordered_queue_keeps_its_order_across_moves_a_panic_and_an_abort() {
    within(120, || {
        // 2 packages x 2 cores: cache pods {0,1} and {2,3}.
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:2 l3:1 core:2 pu:1").unwrap())
            .build()
            .unwrap();
        let q = Workqueue::builder("ordered-mover")
            .ordered()
            .scope(Scope::Cache)
            .build(rt.handle())
            .unwrap();
        let c = Arc::new(Concurrency::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let moves = std::thread::scope(|scope| {
            let stop = Arc::new(AtomicBool::new(false));
            let mover = {
                let (q, stop) = (q.clone(), stop.clone());
                scope.spawn(move || {
                    let mut moves = 0u32;
                    while !stop.load(Ordering::SeqCst) {
                        let scope = if moves.is_multiple_of(2) {
                            Scope::System
                        } else {
                            Scope::Cache
                        };
                        q.set_scope(scope);
                        q.set_strict(moves.is_multiple_of(3));
                        moves += 1;
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    moves
                })
            };
            let handles: Vec<_> = (0..400)
                .map(|i| {
                    let (c, order) = (c.clone(), order.clone());
                    q.spawn_on_cpu(i % 4, async move {
                        // Left when the future ends or is dropped (an
                        // abort of a started item drops it at its yield).
                        let _inside = Inside::enter(c);
                        order.lock().unwrap().push(i);
                        wq::task::yield_now().await;
                        if i == 150 {
                            panic!("item 150 panics on purpose");
                        }
                    })
                })
                .collect();
            // Aborted while it waits: its turn passes to the next.
            handles[300].abort();
            rt.block_on(async {
                for (i, h) in handles.into_iter().enumerate() {
                    match (i, h.await) {
                        (150, r) => assert!(r.unwrap_err().is_panic()),
                        (300, _) => {}
                        (_, r) => r.unwrap(),
                    }
                }
            });
            stop.store(true, Ordering::SeqCst);
            mover.join().unwrap()
        });
        assert!(moves > 0);
        assert_eq!(c.high.load(Ordering::SeqCst), 1, "ordered items overlapped");
        let order = order.lock().unwrap();
        let expected: Vec<usize> = (0..400).collect();
        // Item 300 started or not (an abort of an item whose turn had
        // come drops its future at its yield): the rest ran in order.
        let ran: Vec<usize> = order.iter().copied().filter(|&i| i != 300).collect();
        let want: Vec<usize> = expected.into_iter().filter(|&i| i != 300).collect();
        assert_eq!(ran, want, "ordered items ran out of order");
    });
}

#[test]
fn flush_waits_for_exactly_what_came_before() {
    within(60, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Workqueue::builder("flushed").build(rt.handle()).unwrap();
        let (release_a, a_waits) = futures::channel::oneshot::channel::<()>();
        let a_done = Arc::new(AtomicBool::new(false));
        let d = a_done.clone();
        let a = q.spawn(async move {
            a_waits.await.unwrap();
            d.store(true, Ordering::SeqCst);
        });
        rt.block_on(async {
            let mut flush = std::pin::pin!(q.flush());
            // Pending while A runs.
            assert!(futures::poll!(flush.as_mut()).is_pending());
            // B, spawned after the flush began, never finishes in this test.
            let b = q.spawn(futures::future::pending::<()>());
            assert!(futures::poll!(flush.as_mut()).is_pending());
            release_a.send(()).unwrap();
            flush.await;
            assert!(
                a_done.load(Ordering::SeqCst),
                "flush returned before A finished"
            );
            assert_eq!(q.stats().in_flight, 1, "B is still in flight");
            b.abort();
            assert!(b.await.unwrap_err().is_cancelled());
            a.await.unwrap();
        });
        // A flush with nothing in flight returns at once.
        rt.block_on(q.flush());
    });
}

/// A flush begins in the call, not at its first poll: an item spawned
/// between `flush()` and its `.await` is not waited for (it was: a caller
/// that released such an item after the await waited for ever). A drain
/// refuses outside items from its call on.
#[test]
fn a_flush_begins_in_the_call_not_at_its_first_poll() {
    within(60, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Workqueue::builder("eager").build(rt.handle()).unwrap();
        // A, in flight before the call, holds the flush.
        let (release_a, a_waits) = futures::channel::oneshot::channel::<()>();
        let a = q.spawn(async move { a_waits.await.unwrap() });
        let flush = q.flush();
        // B, spawned after the call, is released only after the flush.
        let (release_b, b_waits) = futures::channel::oneshot::channel::<()>();
        let b = q.spawn(async move { b_waits.await.unwrap() });
        release_a.send(()).unwrap();
        rt.block_on(async {
            wq::time::timeout(Duration::from_secs(10), flush)
                .await
                .expect("the flush waited for an item spawned after the call");
        });
        release_b.send(()).unwrap();
        rt.block_on(a).unwrap();
        rt.block_on(b).unwrap();

        let drain = q.drain();
        let refused = q.try_spawn(async {}).map(drop).unwrap_err();
        assert!(refused.is_draining(), "{refused}");
        rt.block_on(drain);
        rt.block_on(q.spawn(async {})).unwrap();
    });
}

/// The `log` records of this test binary, kept (a logger is set once per
/// process: the first call installs it).
struct Logged;

static LOG_LINES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl log::Log for Logged {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        LOG_LINES
            .lock()
            .unwrap()
            .push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

impl Logged {
    /// Installs the logger (once), and gives the lines logged so far that
    /// contain `text`.
    fn lines_with(text: &str) -> Vec<String> {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            log::set_logger(&Logged).expect("no other logger in this test binary");
            log::set_max_level(log::LevelFilter::Warn);
        });
        LOG_LINES
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .cloned()
            .collect()
    }
}

/// A refused item's error goes into the usual boxed errors, whatever its
/// future: `SpawnError` holds it (to give it back), and a boxed future is
/// not `Sync`.
#[test]
fn a_spawn_error_is_a_send_sync_error_for_any_future() {
    fn boxed<E: std::error::Error + Send + Sync + 'static>(
        e: E,
    ) -> Box<dyn std::error::Error + Send + Sync> {
        Box::new(e)
    }
    let rt = runtime("core:2 pu:1");
    let q = Workqueue::builder("boxed").build(rt.handle()).unwrap();
    rt.shutdown_timeout(Duration::from_secs(10));
    let fut: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = Box::pin(async {});
    let err = q.try_spawn(fut).unwrap_err();
    assert!(boxed(err).to_string().contains("shut down"));
}

/// A spawn on a CPU the topology does not know (a typo, or another
/// machine's numbering) runs, placed round-robin, and says so once per
/// runtime: it was silent.
#[test]
fn a_spawn_on_an_unknown_cpu_runs_and_is_logged_once() {
    let _ = Logged::lines_with("");
    within(60, || {
        let rt = runtime("pack:2 core:2 pu:1");
        let q = Workqueue::builder("unknown-cpu")
            .scope(Scope::Cache)
            .build(rt.handle())
            .unwrap();
        for _ in 0..2 {
            rt.block_on(rt.handle().spawn_on_cpu(64, Scope::Cache, async {}))
                .unwrap();
            rt.block_on(q.spawn_on_cpu(64, async {})).unwrap();
        }
        // Known CPUs say nothing.
        rt.block_on(rt.handle().spawn_on_cpu(3, Scope::Cache, async {}))
            .unwrap();
        // A scope of one pod (system here) says so too, once per runtime.
        let one = runtime("core:2 pu:1");
        one.block_on(one.handle().spawn_on_cpu(64, Scope::System, async {}))
            .unwrap();
        let logged = Logged::lines_with("spawn_on_cpu(64)");
        assert_eq!(logged.len(), 2, "{logged:?}");
        assert!(
            logged
                .iter()
                .any(|l| l.contains("CPU 64 is not in the runtime's topology")
                    && l.contains("CPUs 0-3")
                    && l.contains("round-robin")),
            "{logged:?}"
        );
        assert!(logged.iter().any(|l| l.contains("CPUs 0-1")), "{logged:?}");
    });
}

#[test]
fn drain_refuses_outside_work_and_accepts_chained_work() {
    // Installed before the refusals below.
    let _ = Logged::lines_with("");
    within(60, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Workqueue::builder("drained").build(rt.handle()).unwrap();
        let (go_tx, go_rx) = futures::channel::oneshot::channel::<()>();
        let chained = Arc::new(AtomicUsize::new(0));
        let (q2, ch) = (q.clone(), chained.clone());
        let first = q.spawn(async move {
            go_rx.await.unwrap();
            // Queued from one of the queue's own tasks while it drains.
            let ch2 = ch.clone();
            q2.try_spawn(async move {
                ch2.fetch_add(1, Ordering::SeqCst);
            })
            .expect("chained work is accepted while draining")
            .await
            .unwrap();
        });
        rt.block_on(async {
            let mut drain = std::pin::pin!(q.drain());
            assert!(futures::poll!(drain.as_mut()).is_pending());
            // try_spawn gives the refused future back, not dropped: it
            // runs once spawned again after the drain.
            struct Kept(Arc<AtomicUsize>);
            impl Drop for Kept {
                fn drop(&mut self) {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
            let kept = Arc::new(AtomicUsize::new(0));
            let k = Kept(kept.clone());
            let err = q
                .try_spawn(async move {
                    let _k = k;
                    7
                })
                .unwrap_err();
            assert!(err.is_draining(), "{err}");
            assert!(err.to_string().contains("drained"), "{err}");
            assert_eq!(
                kept.load(Ordering::SeqCst),
                0,
                "the refused future was dropped"
            );
            let job = err.into_future();
            // spawn() hands back a handle whose error says why.
            let err = q.spawn(async {}).await.unwrap_err();
            assert!(err.is_cancelled() && err.is_refused(), "{err:?}");
            assert!(err.to_string().contains("being drained"), "{err}");
            // Counted, and the first refusal logged (once per queue).
            assert_eq!(q.stats().refused, 2);
            let logged = Logged::lines_with("workqueue \"drained\" refused an item");
            assert_eq!(logged.len(), 1, "{logged:?}");
            assert!(logged[0].starts_with("WARN wq: "), "{logged:?}");
            go_tx.send(()).unwrap();
            drain.await;
            assert_eq!(q.spawn(job).await.unwrap(), 7);
            assert_eq!(kept.load(Ordering::SeqCst), 1);
        });
        assert_eq!(chained.load(Ordering::SeqCst), 1);
        rt.block_on(first).unwrap();
        // Drained: it accepts work again.
        assert_eq!(rt.block_on(q.spawn(async { 5 })).unwrap(), 5);
    });
}

/// Waits (up to 10 s) until `f` finds what it wants in the metrics.
fn eventually<T>(rt: &Runtime, f: impl Fn(&wq::metrics::Snapshot) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = rt.metrics();
        if let Some(t) = f(&m) {
            return t;
        }
        assert!(Instant::now() < deadline, "never seen in the metrics: {m}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn set_scope_moves_later_items_to_the_new_pods() {
    within(60, || {
        // 2 packages x 2 cores: cache pods {0,1} and {2,3}.
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:2 l3:1 core:2 pu:1").unwrap())
            .build()
            .unwrap();
        let q = Workqueue::builder("mover")
            .scope(Scope::Cache)
            .build(rt.handle())
            .unwrap();
        // Submitted on CPU 3: cache pod 1, CPUs 2-3.
        rt.block_on(q.spawn_on_cpu(3, async {})).unwrap();
        let m = rt.metrics();
        assert_eq!(m.pools.len(), 1);
        assert_eq!(m.pools[0].cpus, vec![2, 3]);
        q.set_scope(Scope::System);
        assert_eq!(q.scope(), Scope::System);
        rt.block_on(q.spawn_on_cpu(3, async {})).unwrap();
        // Workers publish their counters when they idle: wait for it.
        let system = eventually(&rt, |m| {
            m.pools
                .iter()
                .find(|p| p.scope == Scope::System && p.counters.started == 1)
                .cloned()
        });
        assert_eq!(system.cpus, vec![0, 1, 2, 3]);
        assert_eq!(q.stats().attrs.scope, Scope::System);
    });
}

/// Items submitted from a CPU the topology does not know wait (max_active
/// 1, each released as the one before ends) and are placed round-robin
/// at their release, over both pods, with latency capture on too: the
/// spawn sample of a waiting item took a round-robin turn of its own, and
/// every release then landed on the same pod.
#[test]
fn waiting_items_from_an_unknown_cpu_are_spread_over_the_pods() {
    within(60, || {
        for capture in [false, true] {
            let rt = Runtime::builder()
                .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
                .latency_capture(capture)
                .build()
                .unwrap();
            // Strict: an item runs in the pod it was placed in (a
            // non-strict pool's idle worker steals the other pod's items,
            // and its count says where they ran, not where they went).
            let q = Workqueue::builder("round-robin")
                .scope(Scope::Cpu)
                .strict(true)
                .max_active(1)
                .build(rt.handle())
                .unwrap();
            rt.block_on(async {
                let (go, wait) = futures::channel::oneshot::channel::<()>();
                let mut holder = (go, q.spawn_on_cpu(99, async move { wait.await.unwrap() }));
                for _ in 0..20 {
                    let (go, wait) = futures::channel::oneshot::channel::<()>();
                    // Waits: the holder has the one slot.
                    let next = q.spawn_on_cpu(99, async move { wait.await.unwrap() });
                    let (old_go, old) = std::mem::replace(&mut holder, (go, next));
                    old_go.send(()).unwrap();
                    old.await.unwrap();
                }
                let (go, last) = holder;
                go.send(()).unwrap();
                last.await.unwrap();
            });
            // Both pods ran a share (workers publish their counts when
            // they idle: looked at until then; all on one pod, the two
            // pools' counts show in the failure).
            let started = eventually(&rt, |m| {
                let counts: Vec<u64> = m.pools.iter().map(|p| p.counters.started).collect();
                (counts.len() == 2 && counts.iter().all(|&n| n >= 5)).then_some(counts)
            });
            assert_eq!(started.len(), 2, "capture {capture}: {started:?}");
        }
    });
}

#[test]
fn set_max_active_takes_effect_on_waiting_items() {
    within(60, || {
        let rt = runtime("pack:1 core:4 pu:1");
        let q = Workqueue::builder("raised")
            .max_active(1)
            .build(rt.handle())
            .unwrap();
        let c = Arc::new(Concurrency::default());
        let release = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..10)
            .map(|_| {
                let (c, release) = (c.clone(), release.clone());
                q.spawn(async move {
                    c.enter();
                    while !release.load(Ordering::SeqCst) {
                        wq::task::yield_now().await;
                    }
                    c.leave();
                })
            })
            .collect();
        let wait_for = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.now.load(Ordering::SeqCst) != n {
                assert!(
                    Instant::now() < deadline,
                    "{} active, want {n}",
                    c.now.load(Ordering::SeqCst)
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        wait_for(1);
        let s = q.stats();
        assert_eq!((s.active, s.inactive), (1, 9), "{s:?}");
        q.set_max_active(5).unwrap();
        wait_for(5);
        assert_eq!(q.stats().inactive, 5);
        release.store(true, Ordering::SeqCst);
        rt.block_on(async {
            for h in handles {
                h.await.unwrap();
            }
        });
        assert_eq!(c.high.load(Ordering::SeqCst), 5);
    });
}

/// Items released together from the inactive list start in order: a
/// pump on a worker of their pool put each in the LIFO slot, the one
/// before behind it, so B, C, D started D, B, C.
#[test]
fn items_released_together_start_in_submission_order() {
    within(60, || {
        let rt = one_worker_runtime();
        let q = Arc::new(
            Workqueue::builder("in order")
                .max_active(1)
                .build(rt.handle())
                .unwrap(),
        );
        let order = Arc::new(Mutex::new(Vec::new()));
        let (open_tx, open_rx) = futures::channel::oneshot::channel::<()>();
        let (a_tx, a_rx) = mpsc::channel::<()>();
        let first = q.spawn(async move {
            a_tx.send(()).unwrap();
            let _ = open_rx.await;
        });
        a_rx.recv().unwrap();
        let later: Vec<_> = ["B", "C", "D"]
            .into_iter()
            .map(|name| {
                let order = order.clone();
                q.spawn(async move { order.lock().unwrap().push(name) })
            })
            .collect();
        assert_eq!(q.stats().inactive, 3);
        // Raised from a task of the same pool, on its only worker: the
        // pump releases B, C, D there.
        let raiser = q.clone();
        rt.block_on(rt.spawn(async move { raiser.set_max_active(4).unwrap() }))
            .unwrap();
        rt.block_on(async {
            for h in later {
                h.await.unwrap();
            }
        });
        assert_eq!(*order.lock().unwrap(), ["B", "C", "D"]);
        drop(open_tx);
        rt.block_on(first).unwrap();
    });
}

/// Items a raise of `max_active` releases onto a worker start ahead of a
/// task queued on the pool after them: the release marked the worker as
/// after a yield, and its next look took the pool's queue first, so a
/// spawn made from outside during the raise ran before them (X, B, C, D).
#[test]
fn released_items_are_not_overtaken_by_a_later_spawn() {
    within(60, || {
        // No watchdog: the raiser's poll waits for X by spinning, and a
        // second worker (a CPU hog's) would run X beside it.
        let rt = one_worker_runtime_without_watchdog();
        let q = Arc::new(
            Workqueue::builder("released first")
                .max_active(1)
                .build(rt.handle())
                .unwrap(),
        );
        let order = Arc::new(Mutex::new(Vec::new()));
        let (open_tx, open_rx) = futures::channel::oneshot::channel::<()>();
        let first = q.spawn(async move {
            let _ = open_rx.await;
        });
        let later: Vec<_> = ["B", "C", "D"]
            .into_iter()
            .map(|name| {
                let o = order.clone();
                q.spawn(async move { o.lock().unwrap().push(name) })
            })
            .collect();
        assert_eq!(q.stats().inactive, 3);
        // Raised from a task on the pool's only worker: B, C, D go to its
        // deque, in order; X is queued from outside before that poll ends.
        let (raised_tx, raised) = mpsc::channel::<()>();
        let x_queued = Arc::new(AtomicBool::new(false));
        let (raiser, queued) = (q.clone(), x_queued.clone());
        let raise = rt.spawn(async move {
            raiser.set_max_active(4).unwrap();
            raised_tx.send(()).unwrap();
            while !queued.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
        });
        raised.recv().unwrap();
        let o = order.clone();
        let x = rt.spawn(async move { o.lock().unwrap().push("X") });
        x_queued.store(true, Ordering::Release);
        rt.block_on(async {
            raise.await.unwrap();
            for h in later {
                h.await.unwrap();
            }
            x.await.unwrap();
        });
        assert_eq!(*order.lock().unwrap(), ["B", "C", "D", "X"]);
        drop(open_tx);
        rt.block_on(first).unwrap();
    });
}

#[test]
fn a_cpu_hog_is_detected_while_short_tasks_keep_completing() {
    within(60, || {
        // One pool of one worker: without the watchdog, the short task
        // would wait behind the hog.
        Logged::lines_with(""); // installed before the hog is found
        let rt = hog_runtime(1);
        let q = Workqueue::builder("hogs").build(rt.handle()).unwrap();
        let short_ran = Arc::new(AtomicBool::new(false));
        let s = short_ran.clone();
        let hog = q.spawn(async move {
            // At least 50 ms without yielding, until the short task has run
            // (or 30 s: then it was held up, and the test fails). Not 5 s:
            // the watchdog grants nothing while the hog waits for a CPU
            // more than half its window (another worker would not help),
            // and on a loaded machine that can last seconds.
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(50)
                || (!s.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(30))
            {
                std::hint::spin_loop();
            }
            s.load(Ordering::SeqCst)
        });
        // Let the hog start, then queue short work on the same pool.
        std::thread::sleep(Duration::from_millis(5));
        let shorts: Vec<_> = (0..20)
            .map(|_| {
                let s = short_ran.clone();
                q.spawn(async move { s.store(true, Ordering::SeqCst) })
            })
            .collect();
        assert!(
            rt.block_on(hog).unwrap(),
            "short tasks were held up behind the hog"
        );
        rt.block_on(async {
            for h in shorts {
                h.await.unwrap();
            }
        });
        let pool = &rt.metrics().pools[0];
        assert_eq!(pool.counters.cpu_intensive, 1, "{pool:?}");
        assert!(
            pool.counters.workers_created >= 2,
            "a worker beyond the maximum: {pool:?}"
        );
        assert_eq!(q.stats().cpu_intensive, 1);
        // Reported once, with the advice the README gives.
        let logged = Logged::lines_with("workqueue \"hogs\"");
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(
            logged[0].contains("marked CPU-intensive")
                && logged[0].contains("yield_now")
                && logged[0].contains(".cpu_intensive() workqueue"),
            "{logged:?}"
        );
    });
}

/// A CPU hog whose poll blocks briefly in `block_in_place` (which gives its
/// extra worker up) and then hogs on gets the extra worker back: short work
/// queued after the block runs meanwhile on the pool of one worker.
#[test]
fn a_cpu_hog_that_blocks_briefly_gets_its_extra_worker_back() {
    within(60, || {
        let rt = hog_runtime(1);
        let (back_tx, back_rx) = mpsc::channel::<()>();
        let short_ran = Arc::new(AtomicBool::new(false));
        let s = short_ran.clone();
        let hog = rt.spawn(async move {
            // Long enough to be granted (the watchdog looks every 5 ms).
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(40) {
                std::hint::spin_loop();
            }
            wq::block_in_place(|| std::thread::sleep(Duration::from_millis(20)));
            back_tx.send(()).unwrap();
            let t = Instant::now();
            // 30 s: as above, a loaded machine may hold the grant back.
            while !s.load(Ordering::SeqCst) && t.elapsed() < Duration::from_secs(30) {
                std::hint::spin_loop();
            }
            s.load(Ordering::SeqCst)
        });
        back_rx.recv().unwrap();
        let s = short_ran.clone();
        let short = rt.spawn(async move { s.store(true, Ordering::SeqCst) });
        assert!(
            rt.block_on(hog).unwrap(),
            "the short task waited behind the hog after its block"
        );
        rt.block_on(short).unwrap();
        let pool = &rt.metrics().pools[0];
        assert_eq!(pool.counters.cpu_intensive, 1, "counted once: {pool:?}");
    });
}

/// A poll that comes back from `block_in_place` is timed from then: a
/// computation shorter than the threshold after a long block is no CPU hog
/// (timed from the poll's start, it was found one at the watchdog's second
/// look after the block, about half the time), and the task it spawns
/// stays in its worker's LIFO slot (timed from the poll's start, the
/// watchdog's first look after the block took it out as a long poll's:
/// one look decides that, and a spin of over half the threshold holds
/// one). The spin is 60 ms under the threshold: a loaded machine (a CI
/// run's tests in parallel on 2 CPUs) may preempt the poll around it (with
/// a 20 ms threshold and a 15 ms spin, 5 ms of preemption failed it).
#[test]
fn a_short_computation_after_a_long_block_is_not_a_cpu_hog() {
    within(60, || {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
            .default_scope(Scope::System)
            .max_workers_per_pool(2)
            .cpu_hog_threshold(Duration::from_millis(200))
            .build()
            .unwrap();
        // Short polls on the other worker keep the watchdog looking every
        // half threshold.
        let busy = rt.spawn(async {
            let end = Instant::now() + Duration::from_millis(700);
            while Instant::now() < end {
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(2) {
                    std::hint::spin_loop();
                }
                wq::task::yield_now().await;
            }
        });
        let q = Workqueue::builder("after-block")
            .build(rt.handle())
            .unwrap();
        let h = q.spawn(async {
            wq::block_in_place(|| std::thread::sleep(Duration::from_millis(400)));
            // Into this worker's LIFO slot, run when the poll ends.
            drop(wq::spawn(async {}));
            // Under the threshold by 60 ms; long enough for the watchdog's
            // looks (every 100 ms) to have found the old bug: the LIFO
            // steal at the first, the hog mark at the second (seen about
            // 40% of the time).
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(140) {
                std::hint::spin_loop();
            }
        });
        rt.block_on(h).unwrap();
        rt.block_on(busy).unwrap();
        let stats = q.stats();
        assert_eq!(stats.cpu_intensive, 0, "{stats:?}");
        let stolen: u64 = rt
            .metrics()
            .pools
            .iter()
            .map(|p| p.counters.lifo_stolen)
            .sum();
        assert_eq!(
            stolen, 0,
            "the short poll's LIFO task taken out as a long poll's"
        );
    });
}

/// A runtime of one worker and a `cpu_intensive()` queue on it.
fn one_worker_and_a_cpu_intensive_queue() -> (Runtime, Workqueue) {
    let rt = one_worker_runtime();
    let q = Workqueue::builder("crunch")
        .cpu_intensive()
        .build(rt.handle())
        .unwrap();
    (rt, q)
}

/// A `cpu_intensive()` item's polls leave the pool's count (and let
/// another worker in for what is queued), but they compute: that is no
/// block, and no `cm_wakeup` (the kernel counts none for a
/// `WQ_CPU_INTENSIVE` item's kick either). Each such poll that found work
/// queued counted one, on the queue and on the pool.
#[test]
fn a_cpu_intensive_items_polls_are_not_cm_wakeups() {
    within(60, || {
        let (rt, q) = one_worker_and_a_cpu_intensive_queue();
        // Two items taking turns: the other is queued as each poll begins.
        let items: Vec<_> = (0..2)
            .map(|_| {
                q.spawn(async {
                    for _ in 0..20 {
                        let t = Instant::now();
                        while t.elapsed() < Duration::from_micros(200) {
                            std::hint::spin_loop();
                        }
                        wq::task::yield_now().await;
                    }
                })
            })
            .collect();
        for h in items {
            rt.block_on(h).unwrap();
        }
        rt.block_on(q.flush());
        let stats = q.stats();
        assert_eq!(stats.cm_wakeups, 0, "{stats:?}");
        // Every pool, not the one that shows the polls: a worker publishes
        // its poll counts as it idles, so right after the flush its pool
        // may show none yet; `cm_wakeups` is counted under the pool lock.
        let m = rt.metrics();
        assert!(!m.pools.is_empty(), "{m}");
        for pool in &m.pools {
            assert_eq!(pool.counters.cm_wakeups, 0, "{pool:?}");
        }
    });
}

/// A worker in a `cpu_intensive()` item's poll is out of the count, as a
/// blocked one is, but it computes: the metrics say `cpu_intensive`, not
/// `blocked` (they said blocked, which the docs and the dashboard call a
/// worker in `block_in_place`); one in `block_in_place` stays `blocked`.
#[test]
fn a_worker_in_a_cpu_intensive_poll_is_not_reported_blocked() {
    within(60, || {
        let (rt, q) = one_worker_and_a_cpu_intensive_queue();
        let states = |rt: &wq::Runtime| {
            let m = rt.metrics();
            let sum = |f: fn(&wq::metrics::WorkerStates) -> usize| {
                m.pools.iter().map(|p| f(&p.workers)).sum::<usize>()
            };
            (sum(|w| w.blocked), sum(|w| w.cpu_intensive))
        };
        for intensive in [true, false] {
            let (in_tx, in_rx) = std::sync::mpsc::channel();
            let (out_tx, out_rx) = std::sync::mpsc::channel::<()>();
            let work = move || {
                in_tx.send(()).unwrap();
                out_rx.recv().unwrap();
            };
            let h = if intensive {
                q.spawn(async move { work() })
            } else {
                rt.spawn(async move { wq::task::block_in_place(work) })
            };
            in_rx.recv().unwrap();
            let seen = states(&rt);
            out_tx.send(()).unwrap();
            rt.block_on(h).unwrap();
            let want = if intensive { (0, 1) } else { (1, 0) };
            assert_eq!(
                seen,
                want,
                "(blocked, cpu_intensive) in a {} poll",
                if intensive {
                    "cpu_intensive"
                } else {
                    "block_in_place"
                }
            );
        }
    });
}

/// A task spawned by a poll goes to its worker's LIFO slot, which no
/// sibling looks at: if that poll then hogs its CPU, the watchdog takes the
/// task out, and another worker runs it.
#[test]
fn a_task_a_cpu_hog_spawned_before_hogging_runs_meanwhile() {
    within(60, || {
        // Two workers: the task taken out runs on the other one even if
        // the hog is found waiting for a CPU (a loaded machine), when no
        // extra worker is granted; it is in the hog's LIFO slot, where the
        // other worker does not look.
        let rt = hog_runtime(2);
        let hog = rt.spawn(async {
            let child_ran = Arc::new(AtomicBool::new(false));
            let c = child_ran.clone();
            // Into this worker's LIFO slot (its home is this pool).
            let child = wq::spawn(async move { c.store(true, Ordering::SeqCst) });
            // Hog until the child has run, or 5 s: then it was held.
            let start = Instant::now();
            while !child_ran.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(5) {
                std::hint::spin_loop();
            }
            (child_ran.load(Ordering::SeqCst), child)
        });
        let (ran, child) = rt.block_on(hog).unwrap();
        assert!(ran, "the task the hog spawned waited for the hog to end");
        rt.block_on(child).unwrap();
        // Taken out of the LIFO slot by the watchdog -- unless the poll
        // was found a hog before it spawned the child (its worker
        // preempted for the threshold on a loaded machine), which then
        // went to the pool's queue: `ran` holds either way, and fails if
        // the child is left in the slot.
        let pool = &rt.metrics().pools[0];
        assert!(pool.counters.lifo_stolen <= 1, "{pool:?}");
    });
}

/// The same for a task woken by a poll that then blocks its thread.
#[test]
fn a_task_woken_by_a_poll_that_then_blocks_runs_meanwhile() {
    within(60, || {
        // Two workers, as above: the woken task is in the blocked worker's
        // LIFO slot, where the other one does not look.
        let rt = hog_runtime(2);
        let (wake_tx, wake_rx) = futures::channel::oneshot::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        // Waits to be woken, then unblocks the waker's poll.
        let woken = rt.spawn(async move {
            wake_rx.await.unwrap();
            done_tx.send(()).unwrap();
        });
        std::thread::sleep(Duration::from_millis(5));
        let blocker = rt.spawn(async move {
            // Wakes `woken` into this worker's LIFO slot, then blocks.
            wake_tx.send(()).unwrap();
            done_rx.recv_timeout(Duration::from_secs(5)).is_ok()
        });
        assert!(
            rt.block_on(blocker).unwrap(),
            "the task woken by the blocked poll waited for it"
        );
        rt.block_on(woken).unwrap();
    });
}

#[test]
fn highpri_items_overtake_a_backlog_of_normal_ones() {
    within(60, || {
        let rt = one_worker_runtime_without_watchdog();
        let normal = Workqueue::builder("normal").build(rt.handle()).unwrap();
        let high = Workqueue::builder("urgent")
            .highpri()
            .build(rt.handle())
            .unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let backlog: Vec<_> = (0..100)
            .map(|_| {
                let done = done.clone();
                normal.spawn(async move {
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_millis(5) {
                        std::hint::spin_loop();
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        let d = done.clone();
        let overtaken = rt
            .block_on(high.spawn(async move { d.load(Ordering::SeqCst) }))
            .unwrap();
        assert!(
            overtaken < 100,
            "the highpri item ran after the whole backlog ({overtaken} done)"
        );
        rt.block_on(async {
            for h in backlog {
                h.await.unwrap();
            }
        });
        let m = rt.metrics();
        assert_eq!(m.pools.len(), 2, "highpri items have pools of their own");
    });
}

/// A worker takes the scheduling of the thread that started it, and wq
/// starts a pool's workers from the thread whose spawn or wake kicked it:
/// a `SCHED_IDLE` producer at nice 5 made a worker that ran the pool's
/// tasks only when nothing else would. It runs at the process's policy and
/// nice value. (Taking them back needs `CAP_SYS_NICE` or a nice limit,
/// which CI has: `.ci/run` checks.)
#[test]
fn a_worker_started_from_a_thread_of_other_scheduling_runs_at_the_processs() {
    within(60, || {
        let rt = one_worker_runtime();
        let h = rt.handle().clone();
        // SAFETY: getpid has no preconditions; plain integers.
        let (base_policy, base_nice) = unsafe {
            let pid = libc::getpid();
            (
                libc::sched_getscheduler(pid),
                libc::getpriority(libc::PRIO_PROCESS, pid as libc::id_t),
            )
        };
        let (policy, worker_nice) = std::thread::spawn(move || {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: the calling thread's own scheduling, plain values.
            unsafe {
                assert_eq!(libc::sched_setscheduler(0, libc::SCHED_IDLE, &param), 0);
                assert_eq!(
                    libc::setpriority(
                        libc::PRIO_PROCESS,
                        libc::gettid() as libc::id_t,
                        base_nice + 5
                    ),
                    0
                );
            }
            // The pool's first spawn: its worker starts from this thread.
            futures::executor::block_on(h.spawn(async {
                // SAFETY: the calling thread's policy.
                (unsafe { libc::sched_getscheduler(0) }, nice())
            }))
            .unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(policy, base_policy, "the worker kept its starter's policy");
        assert_eq!(
            worker_nice, base_nice,
            "the worker kept its starter's nice value"
        );
    });
}

/// The child half of the next test: runs only when that test re-executes
/// this binary with `WQ_RESET_ON_FORK_CHILD` set (it changes the
/// process's main thread's scheduling).
#[test]
fn reset_on_fork_child() {
    if std::env::var_os("WQ_RESET_ON_FORK_CHILD").is_none() {
        return;
    }
    const SCHED_RESET_ON_FORK: i32 = 0x4000_0000;
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain values; the main thread's and this thread's own
    // scheduling.
    unsafe {
        for who in [libc::getpid(), 0] {
            let tid = if who == 0 { libc::gettid() } else { who };
            assert_eq!(
                libc::sched_setscheduler(who, libc::SCHED_OTHER | SCHED_RESET_ON_FORK, &param),
                0
            );
            if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, -5) != 0 {
                println!("skipped: the process may not raise its priority");
                return;
            }
        }
    }
    let rt = one_worker_runtime();
    let worker_nice = rt.block_on(rt.spawn(async { nice() })).unwrap();
    assert_eq!(
        worker_nice, 0,
        "a worker was raised to the nice value the kernel reset"
    );
    println!("reset-on-fork ok");
}

/// A process whose main thread asks the kernel to start its children at
/// normal scheduling (`SCHED_RESET_ON_FORK`, as rtkit's real-time and
/// high-priority threads do) has its runtime threads left there: a
/// negative nice value reset to 0 at the thread's start was raised back
/// (and a real-time policy would have been taken back too, or warned of
/// on every run without the privilege).
#[test]
fn a_process_that_resets_scheduling_on_fork_keeps_its_threads_at_normal() {
    let out = common::child::this_binary_test("reset_on_fork_child", "WQ_RESET_ON_FORK_CHILD", "1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && (stdout.contains("reset-on-fork ok") || stdout.contains("skipped")),
        "the child {}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The calling thread's nice value.
fn nice() -> i32 {
    // SAFETY: plain integers; the calling thread's nice value.
    unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
}

/// The process's (main thread's) nice value, a runtime, and a high-priority
/// queue `name` on it.
fn highpri_queue(name: &str) -> (i32, Runtime, Workqueue) {
    // SAFETY: plain integers; the process's main thread's nice value.
    let base = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::getpid() as libc::id_t) };
    let rt = Runtime::builder()
        .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
        .build()
        .unwrap();
    let high = Workqueue::builder(name)
        .highpri()
        .build(rt.handle())
        .unwrap();
    (base, rt, high)
}

/// A thread takes its creator's nice value: a blocking thread, and a
/// worker of a normal pool, started from a high-priority worker ran at
/// nice -20 for life. They run at the process's priority. (Where the
/// process may not raise priorities, the high-priority worker is at the
/// normal one and this checks nothing.)
#[test]
fn threads_started_by_a_highpri_worker_run_at_the_process_priority() {
    within(60, || {
        let (base, rt, high) = highpri_queue("urgent");
        let (hp, job, worker) = rt
            .block_on(high.spawn(async {
                let hp = nice();
                let job = wq::spawn_blocking(nice).await.unwrap();
                let worker = wq::spawn(async { nice() }).await.unwrap();
                (hp, job, worker)
            }))
            .unwrap();
        if hp == base {
            // Under CI (`.ci/run` sets CI) a skip would hide the test.
            assert!(
                std::env::var_os("CI").is_none(),
                "this process may not raise a thread's priority: run CI as root or with CAP_SYS_NICE"
            );
            eprintln!("skipped: this process may not raise a thread's priority");
            return;
        }
        assert_eq!(hp, -20, "the high-priority worker");
        assert_eq!(
            job, base,
            "a blocking thread started by a high-priority worker"
        );
        assert_eq!(worker, base, "a normal pool's worker started by one");
    });
}

/// The dashboard's thread, started from a high-priority item, runs at the
/// process's priority, as the runtime's own threads do: it inherited the
/// item's worker's nice -20 for life.
#[cfg(feature = "dashboard")]
#[test]
fn a_dashboard_started_by_a_highpri_item_runs_at_the_process_priority() {
    within(60, || {
        let (base, rt, high) = highpri_queue("urgent-dashboard");
        let (hp, dashboard) = rt
            .block_on(high.spawn(async { (nice(), wq::dashboard::serve("127.0.0.1:0").unwrap()) }))
            .unwrap();
        if hp == base {
            // Under CI (`.ci/run` sets CI) a skip would hide the test.
            assert!(
                std::env::var_os("CI").is_none(),
                "this process may not raise a thread's priority: run CI as root or with CAP_SYS_NICE"
            );
            eprintln!("skipped: this process may not raise a thread's priority");
            return;
        }
        // The dashboard's thread, by its name (which it sets once it runs,
        // as it sets its priority: look until both are done).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let nice = loop {
            let nices: Vec<i32> = std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| {
                    let t = t.ok()?;
                    let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
                    let tid: libc::id_t = t.file_name().to_str()?.parse().ok()?;
                    // SAFETY: plain integers; that thread's nice value.
                    (comm.trim_end() == "wq-dashboard")
                        .then(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) })
                })
                .collect();
            // None yet: a new thread names itself once it runs.
            assert!(nices.len() <= 1, "one dashboard thread: {nices:?}");
            let timed_out = std::time::Instant::now() > deadline;
            assert!(!(nices.is_empty() && timed_out), "no dashboard thread");
            if nices.first() == Some(&base) || (timed_out && !nices.is_empty()) {
                break nices[0];
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(
            nice, base,
            "the dashboard's thread started by a high-priority item"
        );
        drop(dashboard);
    });
}

#[test]
fn queues_with_the_same_attributes_share_pools() {
    let rt = runtime("pack:1 core:2 pu:1");
    let a = Workqueue::builder("a").build(rt.handle()).unwrap();
    let b = Workqueue::builder("b")
        .max_active(7)
        .build(rt.handle())
        .unwrap();
    rt.block_on(a.spawn(async {})).unwrap();
    rt.block_on(b.spawn(async {})).unwrap();
    rt.block_on(rt.spawn(async {})).unwrap();
    let m = rt.metrics();
    assert_eq!(m.pools.len(), 1, "one pool for all three");
    assert_eq!(m.queues.len(), 2);
    let strict = Workqueue::builder("strict")
        .strict(true)
        .build(rt.handle())
        .unwrap();
    rt.block_on(strict.spawn(async {})).unwrap();
    assert_eq!(
        rt.metrics().pools.len(),
        2,
        "strictness is a pool attribute"
    );
}

#[test]
fn a_task_stolen_by_another_pod_is_counted_repatriated_when_it_comes_home() {
    within(60, || {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:2 core:1 pu:1").unwrap())
            .worker_spin(Duration::from_millis(50))
            .cpu_hog_threshold(Duration::ZERO)
            .build()
            .unwrap();
        let q = Workqueue::builder("roaming")
            .scope(Scope::Cpu)
            .strict(false)
            .build(rt.handle())
            .unwrap();
        // Block the only worker of CPU 0's pool.
        let (block_tx, block_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel::<()>();
        drop(q.spawn_on_cpu(0, async move {
            started_tx.send(()).unwrap();
            let _ = block_rx.recv_timeout(Duration::from_secs(10));
        }));
        started_rx.recv().unwrap();
        // Queue a task at CPU 0 that yields once: CPU 1's worker steals it,
        // and its yield sends it back home.
        let roamer = q.spawn_on_cpu(0, async {
            wq::task::yield_now().await;
        });
        rt.block_on(q.spawn_on_cpu(1, async {})).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while q.stats().repatriated == 0 {
            assert!(
                Instant::now() < deadline,
                "never repatriated: {:?}",
                rt.metrics()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(block_tx);
        rt.block_on(roamer).unwrap();
        assert_eq!(
            rt.metrics()
                .pools
                .iter()
                .map(|p| p.counters.repatriated)
                .sum::<u64>(),
            1
        );
        // Workers publish their counters when they idle: wait for it.
        eventually(&rt, |m| {
            (m.pools
                .iter()
                .map(|p| p.counters.remote_steals)
                .sum::<u64>()
                >= 1)
                .then_some(())
        });
    });
}

#[test]
fn bad_settings_are_refused_with_what_to_do() {
    let rt = runtime("pack:1 core:2 pu:1");
    let h = rt.handle();
    for name in ["", "   "] {
        let err = Workqueue::builder(name).build(h).unwrap_err().to_string();
        assert!(
            err.contains("needs a name") && err.contains("non-space"),
            "{err}"
        );
    }
    // A control character in a name broke the metrics table's lines and
    // reached the terminal raw.
    for (name, c) in [
        ("a\nb", "'\\n'"),
        ("a\0b", "'\\0'"),
        ("x\u{1b}[2J", "'\\u{1b}'"),
        // A line separator breaks a line too, and a bidirectional
        // override shows another name ("a\u{202e}lper").
        ("a\u{2028}b", "'\\u{2028}'"),
        ("a\u{202e}lper", "'\\u{202e}'"),
        ("x\u{2067}y", "'\\u{2067}'"),
    ] {
        let err = Workqueue::builder(name).build(h).unwrap_err().to_string();
        assert!(
            err.contains(&format!("unprintable character {c}")) && err.contains("printable text"),
            "{err}"
        );
    }
    assert!(
        Workqueue::builder("réseau-rx 0").build(h).is_ok(),
        "printable, not ASCII"
    );
    let err = Workqueue::builder("big")
        .max_active(4096)
        .build(h)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"big\"") && err.contains("4096") && err.contains("2048"),
        "{err}"
    );
    let err = Workqueue::builder("both")
        .ordered()
        .max_active(4)
        .build(h)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ordered"), "{err}");
    let q = Workqueue::builder("default").build(h).unwrap();
    assert_eq!(q.max_active(), 1024, "0 means the kernel's default");
    let err = q.set_max_active(3000).unwrap_err().to_string();
    assert!(err.contains("\"default\"") && err.contains("3000"), "{err}");
    q.set_max_active(0).unwrap();
    assert_eq!(q.max_active(), 1024);
    let o = Workqueue::builder("o").ordered().build(h).unwrap();
    assert!(
        o.set_max_active(2)
            .unwrap_err()
            .to_string()
            .contains("ordered")
    );
}

#[test]
fn a_shut_down_runtime_drops_waiting_items_and_refuses_new_ones() {
    within(60, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Workqueue::builder("closing")
            .max_active(1)
            .build(rt.handle())
            .unwrap();
        let blocker = q.spawn(futures::future::pending::<()>());
        let waiting: Vec<_> = (0..5).map(|i| q.spawn(async move { i })).collect();
        assert_eq!(q.stats().inactive, 5);
        drop(rt);
        assert!(
            futures::executor::block_on(blocker)
                .unwrap_err()
                .is_cancelled()
        );
        for h in waiting {
            assert!(futures::executor::block_on(h).unwrap_err().is_cancelled());
        }
        let err = q.try_spawn(async {}).unwrap_err();
        assert!(err.is_shut_down(), "{err}");
        assert_eq!(q.stats().in_flight, 0);
        // Changing it now says so, instead of an Ok that changes nothing.
        let err = q.set_max_active(4).unwrap_err();
        assert!(err.to_string().contains("runtime is shut down"), "{err}");
        // ... which a caller can tell from a setting refused.
        assert!(err.is_shut_down(), "{err}");
        let live = Runtime::new().unwrap();
        let refused = Workqueue::builder("o")
            .ordered()
            .max_active(2)
            .build(live.handle())
            .unwrap_err();
        assert!(!refused.is_shut_down(), "{refused}");
    });
}

#[test]
fn a_poll_blocking_its_worker_gets_a_replacement_and_is_not_a_cpu_hog() {
    a_blocking_poll_is_not_a_cpu_hog("wq");
}

/// The same with workers whose names the OS cuts (at 15 bytes) inside a
/// character: their `/proc` stat is not UTF-8, the watchdog could not read
/// it, and every long poll counted as on its CPU -- a blocked one a hog.
#[test]
fn a_blocking_poll_is_not_a_cpu_hog_whatever_the_thread_name() {
    a_blocking_poll_is_not_a_cpu_hog("αβγδεζηθ");
}

fn a_blocking_poll_is_not_a_cpu_hog(thread_name: &'static str) {
    within(60, move || {
        // A threshold far above how long the main thread may take, loaded,
        // from the item's start to its spawn of the unblocker: the grant's
        // wakeup is a `cm_wakeup` only if it finds that queued.
        Logged::lines_with(""); // installed before the block is found
        let rt = hog_runtime_with(1, thread_name, Duration::from_millis(200));
        let (tx, rx) = mpsc::channel::<()>();
        let (began_tx, began_rx) = mpsc::channel::<()>();
        // A synchronous wait inside a poll, without block_in_place, on a
        // named queue (which counts the wakeup too).
        let q = Workqueue::builder("blocks").build(rt.handle()).unwrap();
        let blocked = q.spawn(async move {
            began_tx.send(()).unwrap();
            rx.recv_timeout(Duration::from_secs(10)).is_ok()
        });
        began_rx.recv().unwrap();
        let unblocker = rt.spawn(async move { tx.send(()).unwrap() });
        assert!(
            rt.block_on(blocked).unwrap(),
            "the pool's other work waited behind the blocked worker"
        );
        rt.block_on(unblocker).unwrap();
        let pool = &rt.metrics().pools[0];
        assert_eq!(
            pool.counters.cpu_intensive, 0,
            "blocking is not a CPU hog: {pool:?}"
        );
        assert!(pool.counters.cm_wakeups >= 1, "{pool:?}");
        let stats = q.stats();
        assert_eq!(stats.cm_wakeups, 1, "{stats:?}");
        assert_eq!(stats.cpu_intensive, 0, "{stats:?}");
        // Reported with the README's advice: block_in_place for short
        // calls, spawn_blocking for longer ones.
        let logged = Logged::lines_with("workqueue \"blocks\"");
        assert!(
            logged.iter().any(|l| l.contains("blocked its worker")
                && l.contains("wq::block_in_place")
                && l.contains("wq::spawn_blocking")),
            "{logged:?}"
        );
    });
}

/// A queue lives while anything refers to it: its handles, and its tasks
/// (which report to it) once the handles are gone; it is freed with the
/// last of them, whichever goes last, and then leaves the metrics.
#[test]
fn a_queue_lives_while_its_handles_or_tasks_do_and_is_freed_with_the_last() {
    within(60, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let listed = |name: &str| {
            let m = rt.metrics();
            m.queues.iter().filter(|q| q.name == name).count()
        };
        let gone = |name: &str| eventually(&rt, |_| (listed(name) == 0).then_some(()));

        // No task ever: the last handle frees it.
        let q = Workqueue::builder("idle").build(rt.handle()).unwrap();
        let copy = q.clone();
        drop(q);
        assert_eq!(listed("idle"), 1, "a clone still holds it");
        drop(copy);
        gone("idle");

        // Handles dropped while tasks wait: the tasks keep it.
        let q = Workqueue::builder("orphan").build(rt.handle()).unwrap();
        let (senders, tasks): (Vec<_>, Vec<_>) = (0..4u32)
            .map(|i| {
                let (tx, rx) = futures::channel::oneshot::channel::<u32>();
                (tx, q.spawn(async move { rx.await.unwrap() + i }))
            })
            .unzip();
        drop(q);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(listed("orphan"), 1, "its waiting tasks hold it");
        for (i, tx) in senders.into_iter().enumerate() {
            tx.send(10 * i as u32).unwrap();
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(rt.block_on(t).unwrap(), 11 * i as u32);
        }
        gone("orphan");
        let stats_left = rt.metrics().queues.len();
        assert_eq!(stats_left, 0, "no queue is left behind");

        // Tasks done before the handle goes: the handle frees it.
        let q = Workqueue::builder("finished").build(rt.handle()).unwrap();
        let done: Vec<_> = (0..4u32).map(|i| q.spawn(async move { i })).collect();
        for t in done {
            rt.block_on(t).unwrap();
        }
        assert_eq!(listed("finished"), 1);
        drop(q);
        gone("finished");
    });
}

/// A limit large enough for slots to be leased to stripes (module docs of
/// `scheduler/queue/gate.rs`): many producers, each on its own stripe,
/// spawn past it; it is never exceeded, and it holds again after a shrink
/// (which turns the gate global) and a raise.
#[test]
fn a_striped_max_active_is_never_exceeded_and_survives_a_shrink_and_a_raise() {
    within(120, || {
        let rt = runtime("pack:1 core:4 pu:1");
        let q = Workqueue::builder("striped")
            .max_active(128)
            .build(rt.handle())
            .unwrap();
        let round = |limit: usize| {
            let c = Arc::new(Concurrency::default());
            await_all(&rt, spawn_counted(&q, &c, 8, 300, 10));
            let high = c.high.load(Ordering::SeqCst);
            assert!(
                high <= limit,
                "{high} items active at once, max_active {limit}"
            );
            assert!(
                high >= limit / 2,
                "items overlapped up to {high} only, max_active {limit}"
            );
            rt.block_on(q.flush());
            let s = q.stats();
            assert_eq!((s.in_flight, s.active, s.inactive), (0, 0, 0), "{s:?}");
        };
        round(128);

        // A shrink while the limit is reached: the slots the running items
        // give back start no more items than the new limit.
        let hold = Arc::new(AtomicBool::new(true));
        let blockers: Vec<_> = (0..128)
            .map(|_| {
                let hold = hold.clone();
                q.spawn(async move {
                    while hold.load(Ordering::SeqCst) {
                        wq::task::yield_now().await;
                    }
                })
            })
            .collect();
        eventually(&rt, |_| (q.stats().active == 128).then_some(()));
        let c = Arc::new(Concurrency::default());
        let waiting = spawn_counted(&q, &c, 8, 50, 10);
        assert_eq!(q.stats().inactive, 400);
        q.set_max_active(40).unwrap();
        hold.store(false, Ordering::SeqCst);
        await_all(&rt, blockers.into_iter().chain(waiting).collect());
        let high = c.high.load(Ordering::SeqCst);
        assert!(
            high <= 40,
            "{high} items started at once after a shrink to 40"
        );

        round(40);
        q.set_max_active(200).unwrap();
        round(200);
        rt.block_on(q.flush());
        let s = q.stats();
        assert_eq!((s.started, s.completed), (7728, 7728), "{s:?}");
    });
}

/// Flushes take turns; a flush dropped while it waits for its turn (a
/// timeout, a `select!`) gives the turn up, and one dropped while it waits
/// for its items passes the turn on: later flushes still return.
#[test]
fn a_flush_dropped_before_or_during_its_turn_does_not_block_later_ones() {
    within(60, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Workqueue::builder("abandoned").build(rt.handle()).unwrap();
        let (release, waits) = futures::channel::oneshot::channel::<()>();
        let item = q.spawn(async move { waits.await.unwrap() });
        rt.block_on(async {
            // The first flush has the turn and waits for the item.
            let mut first = std::pin::pin!(q.flush());
            assert!(futures::poll!(first.as_mut()).is_pending());
            // The second waits for its turn, and is dropped there.
            {
                let mut second = std::pin::pin!(q.flush());
                assert!(futures::poll!(second.as_mut()).is_pending());
            }
            // The third waits for its turn too.
            let mut third = std::pin::pin!(q.flush());
            assert!(futures::poll!(third.as_mut()).is_pending());
            release.send(()).unwrap();
            first.await;
            // The dropped second is skipped: the third gets its turn.
            third.await;
            // A flush dropped while waiting for its items passes its turn.
            let (release, waits) = futures::channel::oneshot::channel::<()>();
            let held = q.spawn(async move { waits.await.unwrap() });
            {
                let mut fourth = std::pin::pin!(q.flush());
                assert!(futures::poll!(fourth.as_mut()).is_pending());
            }
            release.send(()).unwrap();
            q.flush().await;
            held.await.unwrap();
        });
        rt.block_on(item).unwrap();
    });
}

/// A flush dropped while it waited left its items in the color it flipped
/// away from; the next flush flipped back into it and waited only on the
/// other, empty, color. A flush now waits for both.
#[test]
fn a_flush_after_a_dropped_one_still_waits_for_earlier_items() {
    within(60, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Workqueue::builder("dropped-flush")
            .build(rt.handle())
            .unwrap();
        let (release, waits) = futures::channel::oneshot::channel::<()>();
        let x = q.spawn(async move { waits.await.unwrap() });
        rt.block_on(async {
            {
                let mut dropped = std::pin::pin!(q.flush());
                assert!(futures::poll!(dropped.as_mut()).is_pending());
            }
            // X, spawned before this flush, still runs: it must wait.
            let early = wq::time::timeout(Duration::from_millis(100), q.flush()).await;
            assert!(early.is_err(), "a flush returned while an earlier item ran");
            let mut flush = std::pin::pin!(q.flush());
            assert!(futures::poll!(flush.as_mut()).is_pending());
            release.send(()).unwrap();
            flush.await;
        });
        rt.block_on(x).unwrap();
    });
}

/// A flush kept but no longer polled (timed out, its future held) does
/// not hold up the flushes and drains after it: they finish its wait for
/// it once its items are done (it held the turn until dropped, and they
/// waited for ever), and it is ready when polled again.
#[test]
fn a_flush_held_but_not_polled_does_not_hold_up_later_ones() {
    within(60, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Workqueue::builder("held-flush").build(rt.handle()).unwrap();
        let (release, waits) = futures::channel::oneshot::channel::<()>();
        let x = q.spawn(async move { waits.await.unwrap() });
        rt.block_on(async {
            let mut held = Box::pin(q.flush());
            let timed_out = wq::time::timeout(Duration::from_millis(50), held.as_mut()).await;
            assert!(
                timed_out.is_err(),
                "a flush returned while an earlier item ran"
            );
            // Later, each behind the held one: one waiting already when X
            // ends, one begun after.
            let mut waiting = std::pin::pin!(q.flush());
            assert!(futures::poll!(waiting.as_mut()).is_pending());
            release.send(()).unwrap();
            wq::time::timeout(Duration::from_secs(10), waiting)
                .await
                .expect("a flush waited behind one held but not polled");
            wq::time::timeout(Duration::from_secs(10), q.drain())
                .await
                .expect("a drain waited behind a flush held but not polled");
            // The held one's wait is over too.
            assert!(futures::poll!(held.as_mut()).is_ready());
            // And it is not in anyone's way when dropped.
            drop(held);
            wq::time::timeout(Duration::from_secs(10), q.flush())
                .await
                .expect("a flush after the held one was dropped");
        });
        rt.block_on(x).unwrap();
    });
}

/// The served flush dropped while the next in line is held, unpolled,
/// and a third waits behind it: the third (a flush, or a drain) finishes
/// once the items are done (the turn passed to the held one, which
/// nobody polls: the drop and the items' finishers take it, and then the
/// third, on).
#[test]
fn a_dropped_served_flush_passes_the_turn_through_a_held_one() {
    for drain in [false, true] {
        within(60, move || {
            let rt = runtime("pack:1 core:2 pu:1");
            let q = Workqueue::builder("dropped-served")
                .build(rt.handle())
                .unwrap();
            let (release, waits) = futures::channel::oneshot::channel::<()>();
            let x = q.spawn(async move { waits.await.unwrap() });
            let q = Arc::new(q);
            rt.block_on(async {
                let mut served = Box::pin(q.flush());
                assert!(futures::poll!(served.as_mut()).is_pending());
                // Held by a task of its own that polls it once, then waits
                // on something else: its wakes poll it no more.
                let (polled, was_polled) = futures::channel::oneshot::channel::<()>();
                let holder = {
                    let q = q.clone();
                    wq::spawn(async move {
                        let mut held = Box::pin(q.flush());
                        assert!(futures::poll!(held.as_mut()).is_pending());
                        polled.send(()).unwrap();
                        futures::future::pending::<()>().await;
                        drop(held);
                    })
                };
                was_polled.await.unwrap();
                // The third in line, in a task of its own too: nothing
                // but a wake polls it again.
                let (in_line, was_in_line) = futures::channel::oneshot::channel::<()>();
                let third = {
                    let q = q.clone();
                    wq::spawn(async move {
                        let mut third: std::pin::Pin<
                            Box<dyn std::future::Future<Output = ()> + Send>,
                        > = if drain {
                            Box::pin(q.drain())
                        } else {
                            Box::pin(q.flush())
                        };
                        assert!(futures::poll!(third.as_mut()).is_pending());
                        in_line.send(()).unwrap();
                        third.await;
                    })
                };
                was_in_line.await.unwrap();
                drop(served);
                release.send(()).unwrap();
                wq::time::timeout(Duration::from_secs(10), third)
                    .await
                    .expect("the last in line waited behind a held flush")
                    .unwrap();
                holder.abort();
            });
            rt.block_on(x).unwrap();
        });
    }
}

/// Flushes from many tasks at once, some given up by a timeout and held,
/// some dropped, while items come and go: each that is polled to the end
/// returns after every item spawned before it finished.
#[test]
fn concurrent_flushes_each_wait_for_what_came_before() {
    within(120, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Arc::new(
            Workqueue::builder("many-flushes")
                .build(rt.handle())
                .unwrap(),
        );
        let done = Arc::new(AtomicUsize::new(0));
        let flushers: Vec<_> = (0..6)
            .map(|f| {
                let (q, done) = (q.clone(), done.clone());
                rt.spawn(async move {
                    // Flushes given up on by a timeout and kept, unpolled,
                    // until this task ends.
                    let mut held = Vec::new();
                    for round in 0..60 {
                        let spawned = {
                            let done = done.clone();
                            q.spawn(async move {
                                wq::task::yield_now().await;
                                done.fetch_add(1, Ordering::SeqCst);
                            })
                        };
                        match (f + round) % 3 {
                            0 => {
                                q.flush().await;
                                assert!(
                                    spawned.is_finished(),
                                    "a flush returned before an earlier item"
                                );
                            }
                            1 => {
                                let mut flush = Box::pin(q.flush());
                                let _ = futures::poll!(flush.as_mut());
                                held.push(flush);
                            }
                            _ => {
                                let _ =
                                    wq::time::timeout(Duration::from_micros(20), q.flush()).await;
                            }
                        }
                        spawned.await.unwrap();
                    }
                    held.len()
                })
            })
            .collect();
        for f in flushers {
            assert!(rt.block_on(f).unwrap() > 0);
        }
        rt.block_on(q.drain());
        assert_eq!(done.load(Ordering::SeqCst), 360);
        assert_eq!(q.stats().in_flight, 0);
    });
}

/// A guard whose drop spawns cleanup (answering 7) on its queue, and
/// sends the cleanup's handle.
struct CleanupGuard(Arc<Workqueue>, mpsc::Sender<wq::JoinHandle<u32>>);

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        let _ = self.1.send(self.0.spawn(async { 7 }));
    }
}

/// What an item's future spawns on its own queue as it is dropped (a
/// guard's cleanup) is chained work: a drain accepts it, when the item is
/// aborted during the drain (it was refused: only polls counted as the
/// queue's own).
#[test]
fn a_drain_accepts_what_an_aborted_items_drop_spawns() {
    within(60, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Arc::new(
            Workqueue::builder("drop-spawns")
                .build(rt.handle())
                .unwrap(),
        );
        let (tx, rx) = mpsc::channel();
        let (started, wait_started) = mpsc::channel();
        let guard = CleanupGuard(q.clone(), tx);
        let item = q.spawn(async move {
            let _guard = guard;
            started.send(()).unwrap();
            futures::future::pending::<()>().await;
        });
        wait_started.recv().unwrap();
        rt.block_on(async {
            let mut drain = std::pin::pin!(q.drain());
            assert!(futures::poll!(drain.as_mut()).is_pending());
            item.abort();
            wq::time::timeout(Duration::from_secs(10), drain)
                .await
                .expect("the drain waited on");
        });
        let cleanup = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(rt.block_on(cleanup).unwrap(), 7);
    });
}

/// As above, for an item that returned: a hand-written future may keep a
/// guard beside its inner future after `Ready`, dropped with the task;
/// during a drain, what that drop spawns on the queue is chained work.
#[test]
fn a_drain_accepts_what_a_returned_items_guard_spawns() {
    within(60, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Arc::new(
            Workqueue::builder("guard-spawns")
                .build(rt.handle())
                .unwrap(),
        );
        /// Ready once told to, keeping its guard until dropped.
        struct KeepsGuard {
            _guard: CleanupGuard,
            go: futures::channel::oneshot::Receiver<()>,
        }
        impl std::future::Future for KeepsGuard {
            type Output = ();
            fn poll(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<()> {
                std::pin::Pin::new(&mut self.go).poll(cx).map(|_| ())
            }
        }
        let (tx, rx) = mpsc::channel();
        let (go, go_rx) = futures::channel::oneshot::channel();
        let item = q.spawn(KeepsGuard {
            _guard: CleanupGuard(q.clone(), tx),
            go: go_rx,
        });
        rt.block_on(async {
            let mut drain = std::pin::pin!(q.drain());
            assert!(futures::poll!(drain.as_mut()).is_pending());
            go.send(()).unwrap();
            wq::time::timeout(Duration::from_secs(10), drain)
                .await
                .expect("the drain waited on");
        });
        rt.block_on(item).unwrap();
        let cleanup = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(rt.block_on(cleanup).unwrap(), 7);
    });
}

/// Two drains at once: the first to end must not reopen the queue to
/// outside work while the other still drains.
#[test]
fn a_drain_ending_does_not_reopen_the_queue_while_another_drains() {
    within(60, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Workqueue::builder("two-drains").build(rt.handle()).unwrap();
        let (release, waits) = futures::channel::oneshot::channel::<()>();
        let x = q.spawn(async move { waits.await.unwrap() });
        rt.block_on(async {
            let mut second = std::pin::pin!(q.drain());
            assert!(futures::poll!(second.as_mut()).is_pending());
            {
                // Another drain, given up on (dropped) while it waits.
                let mut first = std::pin::pin!(q.drain());
                assert!(futures::poll!(first.as_mut()).is_pending());
            }
            // The second drain still runs: outside work is refused.
            let err = q.try_spawn(async {}).unwrap_err();
            assert!(err.is_draining(), "{err}");
            release.send(()).unwrap();
            second.await;
            q.try_spawn(async {}).unwrap().await.unwrap();
        });
        rt.block_on(x).unwrap();
    });
}

/// Queues created and dropped from several threads while their tasks run
/// (detached: freed by the workers that finish them), some handles dropped
/// on a thread of their own: every queue is freed once its last handle and
/// task are gone, and no queue is left behind.
#[test]
fn queues_created_and_dropped_under_load_are_all_freed() {
    within(120, || {
        let rt = runtime("pack:1 core:4 pu:1");
        let done = Arc::new(AtomicUsize::new(0));
        std::thread::scope(|s| {
            for t in 0..4 {
                let (rt, done) = (&rt, done.clone());
                s.spawn(move || {
                    for i in 0..50 {
                        let q = Workqueue::builder(format!("churn-{t}-{i}"))
                            .build(rt.handle())
                            .unwrap();
                        for _ in 0..20 {
                            let done = done.clone();
                            drop(q.spawn(async move {
                                for _ in 0..3 {
                                    wq::task::yield_now().await;
                                }
                                done.fetch_add(1, Ordering::Relaxed);
                            }));
                        }
                        if i % 2 == 0 {
                            // The last handle goes on another thread.
                            std::thread::spawn(move || drop(q.clone()));
                        }
                    }
                });
            }
        });
        eventually(&rt, |m| {
            (done.load(Ordering::Relaxed) == 4 * 50 * 20 && m.queues.is_empty()).then_some(())
        });
    });
}

/// An item of an ordered queue aborts a later item, still waiting on the
/// inactive list behind it, and awaits it: the await says cancelled at
/// once (it must not wait for the item's turn, which comes only after the
/// awaiting item ends).
#[test]
fn aborting_a_waiting_item_resolves_at_once() {
    let rt = Runtime::new().unwrap();
    let q = Workqueue::builder("abort-waiting")
        .ordered()
        .build(rt.handle())
        .unwrap();
    let q2 = q.clone();
    let first = q.spawn(async move {
        let later = q2.spawn(async { 1 });
        later.abort();
        later.await
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(rt.block_on(first)).unwrap());
    let awaited = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the aborted item's await waited for its turn: a deadlock");
    assert!(awaited.unwrap().unwrap_err().is_cancelled());
}

/// A flush or a drain awaited by one of the queue's own items would wait
/// for that item forever: it panics instead (the item's handle says so),
/// and the queue goes on.
#[test]
fn a_flush_or_drain_from_the_queues_own_item_panics_instead_of_hanging() {
    within(30, || {
        let rt = Runtime::new().unwrap();
        let q = Workqueue::builder("self-flush").build(rt.handle()).unwrap();
        for drain in [false, true] {
            let q2 = q.clone();
            let h = q.spawn(async move {
                if drain {
                    q2.drain().await
                } else {
                    q2.flush().await
                }
            });
            let err = rt.block_on(h).unwrap_err();
            assert!(err.is_panic(), "{err:?}");
            assert!(err.to_string().contains("wait for itself"), "{err}");
        }
        // Neither left the queue stuck nor refusing outside work.
        assert_eq!(rt.block_on(q.spawn(async { 3 })).unwrap(), 3);
        rt.block_on(q.flush());
    });
}

/// The check is where the flush is awaited, not where it was made: a
/// flush made outside and awaited by an item of the queue panics (it
/// hung when the check ran only in the call), and one an item makes and
/// hands to a task outside the queue waits for that item and returns.
#[test]
fn a_flush_is_checked_where_it_is_awaited() {
    within(30, || {
        let rt = Runtime::new().unwrap();
        let q = Workqueue::builder("handed").build(rt.handle()).unwrap();
        let q: &'static Workqueue = Box::leak(Box::new(q));
        type Made = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
        for drain in [false, true] {
            // The item first (a drain refuses items from outside), then
            // the future it awaits.
            let (tx, rx) = futures::channel::oneshot::channel::<Made>();
            let item = q.spawn(async move { rx.await.unwrap().await });
            let made: Made = if drain {
                Box::pin(q.drain())
            } else {
                Box::pin(q.flush())
            };
            tx.send(made).ok().unwrap();
            let err = rt.block_on(item).unwrap_err();
            assert!(err.is_panic(), "{err:?}");
            assert!(err.to_string().contains("wait for itself"), "{err}");
        }
        let (tx, rx) = futures::channel::oneshot::channel();
        let item = q.spawn(async move {
            let flush = q.flush();
            tx.send(wq::spawn(flush)).ok().unwrap();
        });
        rt.block_on(item).unwrap();
        rt.block_on(async { rx.await.unwrap().await.unwrap() });
    });
}

/// A task's reference to its queue ends with its future, not with the
/// task: a queue whose items have finished is freed while their
/// `JoinHandle`s (and so the tasks) live on, and the handles still give
/// their outputs.
#[test]
fn a_queue_is_freed_when_its_items_finish_while_their_handles_live() {
    within(60, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Workqueue::builder("outlived").build(rt.handle()).unwrap();
        let handles: Vec<_> = (0..100u32)
            .map(|i| {
                q.spawn(async move {
                    wq::task::yield_now().await;
                    i
                })
            })
            .collect();
        drop(q);
        eventually(&rt, |m| m.queues.is_empty().then_some(()));
        for (i, h) in handles.into_iter().enumerate() {
            assert_eq!(rt.block_on(h).unwrap(), i as u32);
        }
    });
}

/// A runtime dropped inside one of its own tasks drops the named items it
/// cancels on that worker, during that poll: their ends (their counts in
/// flight) must not wait for the poll to return, which waits for the
/// blocking job that waits for their flush.
#[test]
fn a_runtime_dropped_in_its_own_task_ends_the_items_it_drops_at_once() {
    within(60, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let h = rt.handle().clone();
        let q = Workqueue::builder("ends").max_active(1).build(&h).unwrap();
        let running = q.spawn(std::future::pending::<()>());
        let waiting = q.spawn(async {});
        let deadline = Instant::now() + Duration::from_secs(30);
        while (q.stats().active, q.stats().inactive) != (1, 1) {
            assert!(Instant::now() < deadline, "{:?}", q.stats());
            std::thread::sleep(Duration::from_millis(1));
        }
        let job = flush_on_a_blocking_thread(&h, &q);
        let (done_tx, done_rx) = mpsc::channel();
        drop(h.spawn(async move {
            drop(rt);
            done_tx.send(()).unwrap();
        }));
        done_rx.recv().unwrap();
        futures::executor::block_on(job).unwrap();
        drop((running, waiting));
    });
}

/// A detached item's output is dropped where the item ends: its end (its
/// count in flight) must come before that drop, which may wait for a
/// flush of the same queue (here: the output is the runtime, whose drop
/// waits for a blocking job that waits for the flush).
#[test]
fn an_items_end_comes_before_its_detached_outputs_drop() {
    within(60, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let h = rt.handle().clone();
        let q = Workqueue::builder("own").build(&h).unwrap();
        let (go, wait) = futures::channel::oneshot::channel::<()>();
        drop(q.spawn(async move {
            let _ = wait.await;
            rt
        }));
        let job = flush_on_a_blocking_thread(&h, &q);
        go.send(()).unwrap();
        futures::executor::block_on(job).unwrap();
    });
}

/// A blocking job, started before this returns, that flushes `q`.
fn flush_on_a_blocking_thread(h: &wq::Handle, q: &Workqueue) -> wq::JoinHandle<()> {
    let (started_tx, started_rx) = mpsc::channel();
    let flushed = q.clone();
    let job = h.spawn_blocking(move || {
        started_tx.send(()).unwrap();
        futures::executor::block_on(flushed.flush());
    });
    started_rx.recv().unwrap();
    job
}

/// An item's end wakes its queue's flush waiter; that waker may be another
/// executor's and panic. On a worker the end runs after the worker's next
/// look at its queues, outside any poll: the panic must not kill the
/// worker (a pool of one would run nothing more).
#[test]
fn a_flush_waiter_whose_waker_panics_does_not_kill_the_worker() {
    use std::future::Future;
    use std::task::{Context, Wake, Waker};
    struct Bomb;
    impl Wake for Bomb {
        fn wake(self: Arc<Self>) {
            panic!("this flush waker explodes");
        }
    }
    within(60, || {
        let rt = Runtime::builder().max_workers_per_pool(1).build().unwrap();
        let q = Workqueue::builder("bomb").build(rt.handle()).unwrap();
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        let item = q.spawn(async move {
            let _ = rx.await;
        });
        let mut flush = Box::pin(q.flush());
        let bomb = Waker::from(Arc::new(Bomb));
        assert!(
            flush
                .as_mut()
                .poll(&mut Context::from_waker(&bomb))
                .is_pending()
        );
        // The item ends on the pool's one worker, and its end wakes `bomb`.
        tx.send(()).unwrap();
        rt.block_on(item).unwrap();
        // The worker lives on.
        for i in 0..3 {
            assert_eq!(rt.block_on(rt.spawn(async move { i })).unwrap(), i);
        }
        rt.block_on(flush);
    });
}

/// A queue's `cpu_time` is its items' polls: each poll's computation
/// counts (the first poll's, timed in the poll; the last one's, timed with
/// the item's deferred end on its worker), the wait between them does
/// not.
#[test]
fn cpu_time_counts_the_polls_and_not_the_waits_between_them() {
    within(60, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Workqueue::builder("cpu-time").build(rt.handle()).unwrap();
        let compute = || {
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(5) {
                std::hint::spin_loop();
            }
        };
        let waited = Duration::from_millis(400);
        let item = q.spawn(async move {
            compute();
            wq::time::sleep(waited).await;
            compute();
        });
        rt.block_on(item).unwrap();
        rt.block_on(q.flush());
        let s = q.stats();
        assert_eq!((s.started, s.completed), (1, 1), "{s:?}");
        // Both polls' 5 ms (the runtime's clock and `Instant` may differ
        // by a calibration error: 2 ms of slack).
        assert!(
            s.cpu_time >= Duration::from_millis(8),
            "both polls' 5 ms: {s:?}"
        );
        assert!(s.cpu_time < waited, "the sleep between them counted: {s:?}");
    });
}

/// An item aborted while it waits on the inactive list has its future
/// dropped then, not when its turn comes: on an ordered queue whose
/// running item waits for that drop (a sender the waiting item owns), the
/// two would otherwise wait for each other for good. Its slot is never
/// taken, and a flush does not wait for it.
#[test]
fn aborting_a_waiting_item_drops_its_future_before_its_turn() {
    within(30, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Workqueue::builder("abort-waiting")
            .ordered()
            .build(rt.handle())
            .unwrap();
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        let (go, started) = futures::channel::oneshot::channel::<()>();
        let a = q.spawn(async move {
            go.send(()).unwrap();
            // Err: the sender was dropped (B's future, aborted).
            rx.await.is_err()
        });
        let b = q.spawn(async move {
            let _tx = tx;
            unreachable!("an aborted item was polled");
        });
        let c = q.spawn(async { 3 });
        rt.block_on(async {
            started.await.unwrap();
            assert_eq!(q.stats().inactive, 2, "B and C wait behind A");
            b.abort();
            assert!(b.await.unwrap_err().is_cancelled());
            assert!(a.await.unwrap(), "B's sender was never dropped");
            // C still runs, after A, in its turn.
            assert_eq!(c.await.unwrap(), 3);
            q.flush().await;
        });
        let s = q.stats();
        // B never started, and its end is no completion (it held no slot).
        assert_eq!((s.started, s.completed), (2, 2), "{s:?}");
        assert_eq!((s.in_flight, s.active, s.inactive), (0, 0, 0), "{s:?}");
    });
}

/// An abort handle of an item waiting on the inactive list takes it out of
/// the list as its `JoinHandle`'s abort does, after that handle is gone:
/// its future is dropped then, not when its turn comes.
#[test]
fn an_abort_handle_takes_a_waiting_item_out_of_the_line() {
    within(30, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Workqueue::builder("abort-handle-waiting")
            .ordered()
            .build(rt.handle())
            .unwrap();
        let (tx, rx) = futures::channel::oneshot::channel::<()>();
        let (go, started) = futures::channel::oneshot::channel::<()>();
        let a = q.spawn(async move {
            go.send(()).unwrap();
            // Err: the sender was dropped (B's future, aborted).
            rx.await.is_err()
        });
        let b = q.spawn(async move {
            let _tx = tx;
            unreachable!("an aborted item was polled");
        });
        let abort = b.abort_handle();
        drop(b);
        rt.block_on(async {
            started.await.unwrap();
            assert_eq!(q.stats().inactive, 1, "B waits behind A");
            assert!(!abort.is_finished());
            abort.abort();
            assert!(abort.is_finished());
            assert!(a.await.unwrap(), "B's sender was never dropped");
            q.flush().await;
        });
        let s = q.stats();
        assert_eq!((s.started, s.completed), (1, 1), "{s:?}");
        assert_eq!((s.in_flight, s.active, s.inactive), (0, 0, 0), "{s:?}");
    });
}

/// Aborts racing the pumps that release waiting items, from several
/// threads: every item ends once (its future dropped once, or it ran), the
/// queue's slots all come back, and nothing is left waiting.
#[test]
fn aborts_racing_releases_lose_no_slot_and_no_item() {
    within(120, || {
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Workqueue::builder("abort-race")
            .max_active(2)
            .build(rt.handle())
            .unwrap();
        struct Ends(Arc<AtomicUsize>);
        impl Drop for Ends {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let ends = Arc::new(AtomicUsize::new(0));
        let total = 4 * 300;
        std::thread::scope(|s| {
            for t in 0..4 {
                let (q, ends) = (&q, ends.clone());
                s.spawn(move || {
                    let mut handles = Vec::new();
                    for i in 0..300 {
                        let e = Ends(ends.clone());
                        handles.push(q.spawn(async move {
                            let _e = e;
                            wq::task::yield_now().await;
                        }));
                        if (i + t) % 3 == 0 {
                            handles.swap_remove(handles.len() / 2).abort();
                        }
                    }
                    for h in handles.iter().step_by(2) {
                        h.abort();
                    }
                    drop(handles);
                });
            }
        });
        rt.block_on(q.flush());
        assert_eq!(
            ends.load(Ordering::SeqCst),
            total,
            "an item's future was not dropped once"
        );
        let s = q.stats();
        assert_eq!((s.in_flight, s.active, s.inactive), (0, 0, 0), "{s:?}");
        // Both slots came back: two items can run at once again.
        let both = Arc::new(std::sync::Barrier::new(2));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let b = both.clone();
                q.spawn(async move {
                    wq::block_in_place(|| b.wait());
                })
            })
            .collect();
        for h in hs {
            rt.block_on(h).unwrap();
        }
    });
}

/// The child half of the next test: runs only when that test re-executes
/// this binary with `WQ_PANICKING_LOGGER_CHILD` set (the logger is the
/// process's).
#[test]
fn panicking_logger_child() {
    if std::env::var_os("WQ_PANICKING_LOGGER_CHILD").is_none() {
        return;
    }
    struct Panicky;
    impl log::Log for Panicky {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, _: &log::Record) {
            panic!("the logger panicked");
        }
        fn flush(&self) {}
    }
    log::set_logger(&Panicky).unwrap();
    log::set_max_level(log::LevelFilter::Warn);
    let rt = Runtime::builder()
        .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
        .build()
        .unwrap();
    let q = Workqueue::builder("logged")
        .max_active(1)
        .build(rt.handle())
        .unwrap();
    // The runtime's first unknown CPU is logged: the item still runs,
    // and leaves nothing counted.
    let h = q.spawn_on_cpu(1 << 20, async { 7 });
    assert_eq!(rt.block_on(h).unwrap(), 7);
    let flushed =
        rt.block_on(async { wq::time::timeout(Duration::from_secs(20), q.flush()).await });
    assert!(flushed.is_ok(), "the flush never returned: {:?}", q.stats());
    let s = q.stats();
    assert_eq!((s.in_flight, s.active, s.completed), (0, 0, 1), "{s:?}");
    // The slot came back: the next item runs.
    let next = rt
        .block_on(async { wq::time::timeout(Duration::from_secs(20), q.spawn(async { 8 })).await });
    assert_eq!(next.expect("the next item never ran").unwrap(), 8);
}

/// A logger that panics (one writing to a closed stderr with
/// `eprintln!`) does not unwind through wq's own steps: the first
/// unknown CPU given to a named queue's `spawn_on_cpu` is logged between
/// the item's count and its push, and the panic left the item counted in
/// flight and holding a slot of `max_active` for good (its flush never
/// returned; an ordered queue never ran another item).
#[test]
fn a_panicking_logger_leaves_no_count_behind() {
    let out =
        common::child::this_binary_test("panicking_logger_child", "WQ_PANICKING_LOGGER_CHILD", "1");
    assert!(
        out.status.success(),
        "the child {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A queue's stats read while items come and go hold together: no more
/// completed than started (none is cancelled here), and in flight at
/// least active plus inactive. Summed in the other order, an item that
/// ended between the sums of `started` and `completed` made one more
/// completed than started, and a spawn or an end between the reads of the
/// gauges made `in_flight - active - inactive` wrap.
#[test]
fn stats_read_while_items_run_hold_together() {
    within(120, || {
        let rt = Runtime::new().unwrap();
        let q = Arc::new(
            Workqueue::builder("stats-reader")
                .max_active(64)
                .build(rt.handle())
                .unwrap(),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (q2, stop2) = (q.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let s = q2.stats();
                assert!(s.completed <= s.started, "{s:?}");
                assert!(s.active + s.inactive <= s.in_flight, "{s:?}");
                reads += 1;
            }
            reads
        });
        rt.block_on(async {
            for _ in 0..50 {
                let handles: Vec<_> = (0..1000).map(|_| q.spawn(async {})).collect();
                for h in handles {
                    h.await.unwrap();
                }
            }
        });
        stop.store(true, Ordering::Relaxed);
        let reads = reader.join().unwrap();
        assert!(reads > 0);
    });
}

/// One item of [`owners_churning_every_setting_under_load_lose_nothing`]:
/// what happened to it.
#[derive(Default)]
struct Fate {
    began: AtomicBool,
    ended: AtomicBool,
    aborted: AtomicBool,
}

/// A queue of that test, the producer threads that spawn on it, what they
/// spawned, and how many of its items ran at once.
struct Churned {
    queue: Workqueue,
    producers: std::ops::Range<usize>,
    ordered: bool,
    running: Arc<Concurrency>,
}

/// Everything a queue's owner may do, at once and over and over: items
/// spawned from several threads (some aborted at once, some refused by a
/// drain and spawned again), flushes and drains from another thread, and
/// the queues' scope, strictness and `max_active` changed at random (a
/// fixed seed), on a plain, a high-priority and an ordered queue over two
/// L3 pods. Nothing is lost or run twice; a flush or a drain waits for
/// every item spawned before it; the ordered queue's items never overlap
/// and keep their order; `max_active` is never exceeded beyond the highest
/// limit set; the statistics add up; and every slot comes back.
#[test]
fn owners_churning_every_setting_under_load_lose_nothing() {
    within(240, || {
        const PRODUCERS: usize = 4;
        const PER: usize = 3000;
        const LIMIT: usize = 6;
        // Six workers per pool, even on a smaller machine: the last check
        // holds `LIMIT` items in `block_in_place` at once.
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:1 l3:2 core:2 pu:1").unwrap())
            .default_scope(Scope::System)
            .max_workers_per_pool(LIMIT)
            .build()
            .unwrap();
        let h = rt.handle();
        let queues = [
            Churned {
                queue: Workqueue::builder("churn").max_active(4).build(h).unwrap(),
                producers: 0..2,
                ordered: false,
                running: Arc::default(),
            },
            Churned {
                queue: Workqueue::builder("churn-highpri")
                    .highpri()
                    .max_active(3)
                    .build(h)
                    .unwrap(),
                producers: 2..3,
                ordered: false,
                running: Arc::default(),
            },
            Churned {
                queue: Workqueue::builder("churn-ordered")
                    .ordered()
                    .build(h)
                    .unwrap(),
                producers: 3..4,
                ordered: true,
                running: Arc::default(),
            },
        ];
        let fates: Arc<Vec<Vec<Fate>>> = Arc::new(
            (0..PRODUCERS)
                .map(|_| (0..PER).map(|_| Fate::default()).collect())
                .collect(),
        );
        // How many items each producer has spawned (published after the
        // spawn returned, and after an abort of it).
        let published: Vec<AtomicUsize> = (0..PRODUCERS).map(|_| AtomicUsize::new(0)).collect();
        let last_ordered = Arc::new(AtomicUsize::new(0));
        let producing = AtomicUsize::new(PRODUCERS);
        let refused = AtomicUsize::new(0);
        let queue_of = |p: usize| {
            queues
                .iter()
                .find(|q| q.producers.contains(&p))
                .expect("every producer has a queue")
        };
        // The items' handles, awaited once every producer is done.
        let handles = std::thread::scope(|s| {
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let (fates, last_ordered) = (fates.clone(), last_ordered.clone());
                    let (published, producing, refused) = (&published, &producing, &refused);
                    let churned = queue_of(p);
                    s.spawn(move || {
                        let mut handles = Vec::with_capacity(PER);
                        for i in 0..PER {
                            let (mine, running) = (fates.clone(), churned.running.clone());
                            let (last, ordered) = (last_ordered.clone(), churned.ordered);
                            let mut item = async move {
                                let fate = &mine[p][i];
                                assert!(
                                    !fate.began.swap(true, Ordering::SeqCst),
                                    "item {p}/{i} began twice"
                                );
                                let _inside = Inside::enter(running);
                                if ordered {
                                    let before = last.swap(i + 1, Ordering::SeqCst);
                                    assert!(
                                        before < i + 1,
                                        "ordered item {i} ran after item {}",
                                        before - 1
                                    );
                                }
                                for _ in 0..i % 4 {
                                    wq::task::yield_now().await;
                                }
                                fate.ended.store(true, Ordering::SeqCst);
                            };
                            let handle = loop {
                                let spawned = if i % 5 == 0 {
                                    // CPU 4 is not in the layout: placed anywhere.
                                    churned.queue.try_spawn_on_cpu(i % 6, item)
                                } else {
                                    churned.queue.try_spawn(item)
                                };
                                match spawned {
                                    Ok(h) => break h,
                                    Err(e) => {
                                        assert!(e.is_draining(), "refused: {e}");
                                        refused.fetch_add(1, Ordering::Relaxed);
                                        item = e.into_future();
                                        std::thread::sleep(Duration::from_micros(200));
                                    }
                                }
                            };
                            if i % 7 == 3 {
                                fates[p][i].aborted.store(true, Ordering::SeqCst);
                                handle.abort();
                            }
                            published[p].store(i + 1, Ordering::SeqCst);
                            handles.push(handle);
                            // Paced, so that the owner's changes land
                            // between the spawns (about a second).
                            if i % 2 == 0 {
                                std::thread::sleep(Duration::from_micros(100));
                            }
                        }
                        producing.fetch_sub(1, Ordering::SeqCst);
                        handles
                    })
                })
                .collect();

            // The owner, meanwhile.
            let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut next = move |n: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % n) as usize
            };
            let (mut flushes, mut drains) = (0, 0);
            // Until the producers are done, and at least a few flushes and
            // drains were made (on a starved machine the producers may end
            // first).
            while producing.load(Ordering::SeqCst) > 0 || flushes <= 10 || drains <= 10 {
                let churned = &queues[next(3)];
                let q = &churned.queue;
                match next(10) {
                    0..=2 => q.set_scope(Scope::ALL[next(6)]),
                    3 => q.set_strict(next(2) == 1),
                    4 | 5 if !churned.ordered => q.set_max_active(1 + next(LIMIT as u64)).unwrap(),
                    op => {
                        // Every item published before the call must be
                        // over by its return.
                        let before: Vec<(usize, usize)> = churned
                            .producers
                            .clone()
                            .map(|p| (p, published[p].load(Ordering::SeqCst)))
                            .collect();
                        if op == 9 {
                            rt.block_on(q.drain());
                            drains += 1;
                        } else {
                            rt.block_on(q.flush());
                            flushes += 1;
                        }
                        for (p, k) in before {
                            for (i, fate) in fates[p][..k].iter().enumerate() {
                                assert!(
                                    fate.ended.load(Ordering::SeqCst)
                                        || fate.aborted.load(Ordering::SeqCst),
                                    "{}'s item {i} (producer {p}) was spawned before a {} that returned without it",
                                    q.name(),
                                    if op == 9 { "drain" } else { "flush" },
                                );
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_micros(300));
            }
            assert!(
                flushes > 10 && drains > 10,
                "{flushes} flushes, {drains} drains"
            );
            eprintln!("{flushes} flushes, {drains} drains");
            producers
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect::<Vec<_>>()
        });

        // Every item ran once and ended, unless aborted (then it ended or
        // was cancelled).
        let mut began = [0u64; 3];
        for (p, handles) in handles.into_iter().enumerate() {
            rt.block_on(async {
                for (i, h) in handles.into_iter().enumerate() {
                    let fate = &fates[p][i];
                    match h.await {
                        Ok(()) => assert!(fate.ended.load(Ordering::SeqCst)),
                        Err(e) => assert!(
                            e.is_cancelled() && fate.aborted.load(Ordering::SeqCst),
                            "item {p}/{i}: {e}"
                        ),
                    }
                    if !fate.aborted.load(Ordering::SeqCst) {
                        assert!(
                            fate.ended.load(Ordering::SeqCst),
                            "item {p}/{i} never ended"
                        );
                    }
                }
            });
            let q = queues
                .iter()
                .position(|q| q.producers.contains(&p))
                .unwrap();
            began[q] += fates[p]
                .iter()
                .filter(|f| f.began.load(Ordering::SeqCst))
                .count() as u64;
        }
        for (churned, began) in queues.iter().zip(began) {
            let q = &churned.queue;
            rt.block_on(q.flush());
            let s = q.stats();
            assert_eq!(
                (s.in_flight, s.active, s.inactive),
                (0, 0, 0),
                "{}: {s:?}",
                q.name()
            );
            assert_eq!(s.started, began, "{}: {s:?}", q.name());
            let spawned = (churned.producers.len() * PER) as u64;
            assert!(
                s.completed >= began && s.completed <= spawned,
                "{}: {s:?}",
                q.name()
            );
            let high = churned.running.high.load(Ordering::SeqCst);
            let bound = if churned.ordered { 1 } else { LIMIT };
            assert!(
                high <= bound,
                "{}: {high} items at once, no limit over {bound} was set",
                q.name()
            );
        }
        eprintln!(
            "{} spawns refused by a drain, spawned again",
            refused.load(Ordering::Relaxed)
        );

        // The slots all came back: as many items as the limit run at
        // once, and no more.
        for (churned, limit) in queues.iter().zip([LIMIT, 3, 1]) {
            let q = &churned.queue;
            if !churned.ordered {
                q.set_max_active(limit).unwrap();
            }
            // A pod's pool runs at most as many tasks at once as it has
            // workers: one pod of them all.
            q.set_scope(Scope::System);
            let together = Arc::new(std::sync::Barrier::new(limit));
            let c = Arc::new(Concurrency::default());
            let hs: Vec<_> = (0..limit * 4)
                .map(|_| {
                    let (together, c) = (together.clone(), c.clone());
                    q.spawn(async move {
                        let _inside = Inside::enter(c);
                        wq::block_in_place(|| together.wait());
                    })
                })
                .collect();
            await_all(&rt, hs);
            let high = c.high.load(Ordering::SeqCst);
            assert_eq!(
                high,
                limit,
                "{}: {high} items at once, max_active {limit}",
                q.name()
            );
        }
    });
}

/// Counts the wakes of the wakers made from it.
#[derive(Default)]
struct WakeCount(AtomicUsize);

impl std::task::Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Flushes in line are each woken once, when done: the finisher of the
/// item they wait behind takes the whole line on (every waiting flush was
/// woken at every pass of the turn, N^2/2 wakes for N in line).
#[test]
fn each_flush_in_line_is_woken_once_when_it_is_done() {
    within(60, || {
        const N: usize = 200;
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Workqueue::builder("woken-once").build(rt.handle()).unwrap();
        let (release, waits) = futures::channel::oneshot::channel::<()>();
        let item = q.spawn(async move { waits.await.unwrap() });
        let count = Arc::new(WakeCount::default());
        let waker = std::task::Waker::from(count.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut line: Vec<_> = (0..N).map(|_| Box::pin(q.flush())).collect();
        for f in &mut line {
            assert!(f.as_mut().poll(&mut cx).is_pending());
        }
        release.send(()).unwrap();
        rt.block_on(item).unwrap();
        // The item's finisher drove the line: every flush done, each
        // woken once (polled now, each is ready).
        common::wait_until("every flush woken", || count.0.load(Ordering::SeqCst) >= N);
        for f in &mut line {
            assert!(f.as_mut().poll(&mut cx).is_ready());
        }
        let wakes = count.0.load(Ordering::SeqCst);
        assert!(wakes <= 2 * N, "{wakes} wakes for {N} flushes");
    });
}

/// A flush dropped during its turn whose waker's drop panics still passes
/// the turn on and takes the next flush on: the waker is dropped after
/// the flush lock and the next one's drive.
#[test]
fn a_served_flush_whose_waker_panics_on_drop_still_passes_the_turn() {
    within(60, || {
        struct PanicsOnDrop;
        impl std::task::Wake for PanicsOnDrop {
            fn wake(self: Arc<Self>) {}
        }
        impl Drop for PanicsOnDrop {
            fn drop(&mut self) {
                panic!("a waker that panics when dropped");
            }
        }
        let rt = runtime("pack:1 core:2 pu:1");
        let q = Arc::new(
            Workqueue::builder("panicky-waker")
                .build(rt.handle())
                .unwrap(),
        );
        let (release, waits) = futures::channel::oneshot::channel::<()>();
        let item = q.spawn(async move { waits.await.unwrap() });
        let mut served = Box::pin(q.flush());
        {
            let waker = std::task::Waker::from(Arc::new(PanicsOnDrop));
            let mut cx = std::task::Context::from_waker(&waker);
            assert!(served.as_mut().poll(&mut cx).is_pending());
            // Dropped here: the flush keeps the only other clone, and
            // dropping that is what panics.
        }
        let next = {
            let q = q.clone();
            let (in_line, was_in_line) = std::sync::mpsc::channel();
            let task = rt.spawn(async move {
                let mut next = Box::pin(q.flush());
                assert!(futures::poll!(next.as_mut()).is_pending());
                in_line.send(()).unwrap();
                next.await;
            });
            was_in_line.recv().unwrap();
            task
        };
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(served)));
        assert!(
            dropped.is_err(),
            "the waker's drop panicked through the flush's"
        );
        release.send(()).unwrap();
        rt.block_on(item).unwrap();
        rt.block_on(async {
            wq::time::timeout(Duration::from_secs(10), next)
                .await
                .expect("the next flush was never taken on")
                .unwrap();
        });
    });
}
