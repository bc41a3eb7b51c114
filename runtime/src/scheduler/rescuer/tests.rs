//! The rescuer through the public API, with a hook that refuses worker
//! starts as the OS would at its thread limit.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::{Runtime, Scope, Topology};

fn pool_totals(rt: &Runtime) -> (usize, u64, u64, u64) {
    let m = rt.metrics();
    m.pools.iter().fold((0, 0, 0, 0), |(w, r, f, d), p| {
        (
            w + p.workers.total,
            r + p.counters.rescued,
            f + p.counters.worker_start_failures,
            d + p.sched_delay.count,
        )
    })
}

/// A runtime on synthetic topology `desc` whose next `refused` worker
/// starts the "OS" refuses.
fn refusing_runtime(desc: &str, scope: Scope, refused: usize) -> Runtime {
    let rt = Runtime::builder()
        .topology(Topology::synthetic(desc).unwrap())
        .default_scope(scope)
        .latency_capture(true)
        .build()
        .unwrap();
    rt.handle()
        .scheduler
        .refuse_worker_starts
        .store(refused, Ordering::Relaxed);
    rt
}

/// Fails instead of hanging if the work is stranded.
fn within_watchdog(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => t.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = t.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(_) => panic!("stalled for 60 s: the pool's work was stranded"),
    }
}

#[test]
fn work_runs_on_the_rescuer_while_no_worker_can_start() {
    within_watchdog(work_runs_on_the_rescuer);
}

fn work_runs_on_the_rescuer() {
    // The OS refuses every worker thread from now on.
    let rt = refusing_runtime("pack:1 core:2 pu:1", Scope::System, usize::MAX);
    let scheduler = &rt.handle().scheduler;
    let handles: Vec<_> = (0..200u64)
        .map(|i| {
            rt.spawn(async move {
                // Wakes itself, and spawns: both queue on the injector.
                crate::task::yield_now().await;
                crate::spawn(async move { i * 2 }).await.unwrap()
            })
        })
        .collect();
    let sum: u64 = rt.block_on(async {
        let mut sum = 0;
        for h in handles {
            sum += h.await.unwrap();
        }
        sum
    });
    assert_eq!(sum, (0..200u64).map(|i| i * 2).sum::<u64>());
    let (workers, rescued, failures, delays) = pool_totals(&rt);
    assert_eq!(workers, 0, "no worker could start");
    assert!(rescued >= 400, "the rescuer ran every task: {rescued}");
    assert!(failures >= 1);
    assert!(delays >= rescued, "rescued polls record their delay");

    // The limit is lifted: the next kick starts a worker.
    scheduler.refuse_worker_starts.store(0, Ordering::Relaxed);
    assert_eq!(rt.block_on(rt.spawn(async { 7 })).unwrap(), 7);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while pool_totals(&rt).0 == 0 {
        assert!(std::time::Instant::now() < deadline, "no worker started");
        drop(rt.spawn(async {}));
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn one_busy_pool_does_not_starve_another() {
    within_watchdog(|| {
        let rt = refusing_runtime("pack:2 core:1 pu:1", Scope::Cpu, usize::MAX);
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Pool of CPU 0: a task that keeps re-queueing itself until the
        // task on CPU 1's pool has run.
        let f = flag.clone();
        let waiter = rt.handle().spawn_on_cpu(0, Scope::Cpu, async move {
            let mut yields = 0u64;
            while !f.load(Ordering::Acquire) {
                crate::task::yield_now().await;
                yields += 1;
            }
            yields
        });
        let f = flag.clone();
        let setter =
            rt.handle().spawn_on_cpu(
                1,
                Scope::Cpu,
                async move { f.store(true, Ordering::Release) },
            );
        rt.block_on(setter).unwrap();
        assert!(rt.block_on(waiter).is_ok());
    });
}

#[test]
fn refused_starts_are_retried_at_the_mayday_pace_not_per_push() {
    within_watchdog(|| {
        const BUDGET: usize = 1_000_000;
        let rt = refusing_runtime("pack:1 core:2 pu:1", Scope::System, BUDGET);
        let scheduler = &rt.handle().scheduler;
        let started = std::time::Instant::now();
        // Thousands of pushes (spawns and yields) while no worker starts.
        for _ in 0..20 {
            let hs: Vec<_> = (0..50)
                .map(|_| {
                    rt.spawn(async {
                        for _ in 0..5 {
                            crate::task::yield_now().await;
                        }
                    })
                })
                .collect();
            rt.block_on(async {
                for h in hs {
                    h.await.unwrap();
                }
            });
        }
        let intervals =
            started.elapsed().as_millis() / crate::scheduler::MAYDAY_INTERVAL.as_millis();
        let attempts = BUDGET - scheduler.refuse_worker_starts.load(Ordering::Relaxed);
        // One attempt per interval, plus racing kicks that both found
        // the back-off expired; without the back-off, one per push.
        assert!(
            attempts as u128 <= 2 * (intervals + 1),
            "{attempts} thread starts tried in {intervals} intervals"
        );
    });
}

#[test]
fn a_runtime_whose_workers_never_start_still_shuts_down() {
    within_watchdog(never_start_then_shut_down);
}

fn never_start_then_shut_down() {
    let rt = refusing_runtime("pack:2 core:1 pu:1", Scope::Cpu, usize::MAX);
    let pending: Vec<_> = (0..2)
        .map(|cpu| {
            rt.handle()
                .spawn_on_cpu(cpu, Scope::Cpu, futures::future::pending::<()>())
        })
        .collect();
    for cpu in 0..2 {
        let h = rt
            .handle()
            .spawn_on_cpu(cpu, Scope::Cpu, async move { cpu });
        assert_eq!(rt.block_on(h).unwrap(), cpu);
    }
    drop(rt);
    for h in pending {
        assert!(futures::executor::block_on(h).unwrap_err().is_cancelled());
    }
}

/// A `spawn_blocking` job whose thread the OS refused, with no blocking
/// thread left, runs once a thread can start: the rescuer retries (the
/// job waited for the next `spawn_blocking`, for ever if none came). The
/// watchdog is off, so the rescuer's only reasons to wake are this poke
/// and its retry interval.
#[test]
fn a_stranded_blocking_job_runs_once_a_thread_can_start() {
    within_watchdog(|| {
        let rt = Runtime::builder()
            .cpu_hog_threshold(Duration::ZERO)
            .build()
            .unwrap();
        let blocking = &rt.handle().scheduler.services.blocking;
        // The rescuer waits for a mayday, with nothing to time.
        std::thread::sleep(Duration::from_millis(50));
        // The spawn's start and two paced retries fail.
        blocking.refuse_starts.store(3, Ordering::Relaxed);
        let h = rt.spawn_blocking(|| 7);
        assert_eq!(futures::executor::block_on(h).unwrap(), 7);
        assert_eq!(blocking.refuse_starts.load(Ordering::Relaxed), 0);
        // The refusals are in the metrics, as text and as Prometheus.
        let m = rt.metrics();
        assert_eq!((m.blocking.start_failures, m.blocking.jobs), (3, 1));
        assert!(
            m.to_prometheus()
                .contains("\nwq_blocking_start_failures_total 3\n")
        );
        assert!(m.to_string().contains("3 refused thread starts"), "{m}");
    });
}

/// A runtime with the watchdog off (the rescuer wakes only for maydays and
/// its retries), and a blocking job running `f` on it, started by the time
/// this returns.
fn running_job<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> (Runtime, crate::JoinHandle<T>) {
    let rt = Runtime::builder()
        .cpu_hog_threshold(Duration::ZERO)
        .build()
        .unwrap();
    let (started, wait_started) = std::sync::mpsc::channel();
    let job = rt.spawn_blocking(move || {
        started.send(()).unwrap();
        f()
    });
    wait_started.recv().unwrap();
    (rt, job)
}

/// A job whose thread the OS refused while another blocking thread runs
/// is stranded too when that thread waits for it (a job that spawns a job
/// and waits for it): the rescuer retries it, where only a pool with no
/// thread at all was retried, and the two waited for each other for ever.
#[test]
fn a_job_refused_a_thread_beside_a_running_one_is_retried() {
    within_watchdog(|| {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (rt, first) = running_job(move || rx.recv_timeout(Duration::from_secs(60)));
        let handle = rt.handle().clone();
        let blocking = &handle.scheduler.services.blocking;
        blocking.refuse_starts.store(1, Ordering::Relaxed);
        let second = rt.spawn_blocking(move || tx.send(()).unwrap());
        assert_eq!(futures::executor::block_on(first).unwrap(), Ok(()));
        futures::executor::block_on(second).unwrap();
        assert_eq!(blocking.refuse_starts.load(Ordering::Relaxed), 0);
        assert_eq!(rt.metrics().blocking.start_failures, 1);
    });
}

/// A refused job is still stranded when a later job's start succeeds:
/// that thread takes the refused job (the queue is FIFO), and the later
/// job waits behind it for a thread no one starts -- here the job the
/// first waits for. (A start that succeeded paid the refused one back,
/// and the rescuer stopped retrying.)
#[test]
fn a_later_jobs_start_does_not_hide_a_stranded_job() {
    within_watchdog(|| {
        // A thread kept busy throughout.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (rt, busy) = running_job(move || {
            let _ = released.recv_timeout(Duration::from_secs(60));
        });
        let handle = rt.handle().clone();
        let blocking = &handle.scheduler.services.blocking;
        blocking.refuse_starts.store(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // Refused a thread, then taken by the next job's thread.
        let waits = rt.spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)));
        let sends = rt.spawn_blocking(move || tx.send(()).unwrap());
        assert_eq!(futures::executor::block_on(waits).unwrap(), Ok(()));
        futures::executor::block_on(sends).unwrap();
        drop(release);
        futures::executor::block_on(busy).unwrap();
    });
}

/// A pool whose only worker is stuck in a poll that blocks (no
/// `block_in_place`: the watchdog grants it a replacement) while no thread
/// can start: its queued work goes to the rescuer, as with no worker at
/// all (the worker counted as serving, and the task the blocked poll
/// waits for never ran).
#[test]
fn work_behind_a_blocked_poll_runs_on_the_rescuer_when_no_worker_can_start() {
    within_watchdog(|| {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("core:1 pu:1").unwrap())
            .max_workers_per_pool(1)
            .cpu_hog_threshold(Duration::from_millis(10))
            .build()
            .unwrap();
        // The pool's worker, started.
        rt.block_on(rt.spawn(async {})).unwrap();
        rt.handle()
            .scheduler
            .refuse_worker_starts
            .store(usize::MAX, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (started, wait_started) = std::sync::mpsc::channel::<()>();
        // A blocks its worker until B runs.
        let a = rt.spawn(async move {
            started.send(()).unwrap();
            rx.recv_timeout(Duration::from_secs(60))
        });
        wait_started.recv().unwrap();
        let b = rt.spawn(async move { tx.send(()).unwrap() });
        assert_eq!(futures::executor::block_on(a).unwrap(), Ok(()));
        futures::executor::block_on(b).unwrap();
        rt.handle()
            .scheduler
            .refuse_worker_starts
            .store(0, Ordering::Relaxed);
    });
}

/// The retries of stranded jobs are paced at the mayday interval: the
/// rescuer wakes every watchdog tick (5 ms while a task runs) and for
/// every mayday, and tried a thread on each wake (about 200 failing
/// clones a second at the thread limit).
#[test]
fn stranded_blocking_jobs_are_retried_at_the_mayday_interval() {
    within_watchdog(|| {
        let rt = Runtime::new().unwrap();
        let blocking = &rt.handle().scheduler.services.blocking;
        blocking.refuse_starts.store(1_000, Ordering::Relaxed);
        // A task running meanwhile: the watchdog ticks fast.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let busy = rt.spawn(async move {
            while !s.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let started = std::time::Instant::now();
        let job = rt.spawn_blocking(|| 7);
        std::thread::sleep(Duration::from_millis(500));
        let tried = 1_000 - blocking.refuse_starts.load(Ordering::Relaxed);
        // The sleep may end late on a loaded machine (the busy task holds
        // one of its CPUs): the bound is for the time that passed.
        let elapsed = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        rt.block_on(busy).unwrap();
        // The spawn's try, then one every 100 ms (and slack for a slow
        // machine's late ticks); per tick, it was about 100.
        let most = 3 + (elapsed.as_millis() / 100) as usize;
        assert!(
            (2..=most).contains(&tried),
            "{tried} starts tried in {elapsed:?}"
        );
        blocking.refuse_starts.store(0, Ordering::Relaxed);
        assert_eq!(futures::executor::block_on(job).unwrap(), 7);
    });
}

/// A blocking job that comes to the pool after it closed (a spawn racing
/// the runtime's shutdown past its check) is refused, as a spawn after the
/// shutdown is, not cancelled as a job the shutdown dropped from the
/// queue.
#[test]
fn a_blocking_job_racing_the_shutdown_is_refused() {
    within_watchdog(|| {
        let rt = Runtime::new().unwrap();
        // The pool closes before the runtime does: the spawn passes the
        // runtime's check and meets the closed pool.
        rt.handle().scheduler.services.blocking.close();
        let h = rt.spawn_blocking(|| 7);
        let err = futures::executor::block_on(h).unwrap_err();
        assert!(err.is_refused(), "{err}");
        assert!(err.to_string().contains("shut down"), "{err}");
    });
}

/// A runtime of one CPU, named `name`, whose every worker start the "OS"
/// refuses: its tasks run on the rescuer.
pub(crate) fn workerless(name: &str, cpu_hog_threshold: Duration) -> Runtime {
    let rt = Runtime::builder()
        .topology(Topology::synthetic("core:1 pu:1").unwrap())
        .cpu_hog_threshold(cpu_hog_threshold)
        .thread_name(name)
        .build()
        .unwrap();
    rt.handle()
        .scheduler
        .refuse_worker_starts
        .store(usize::MAX, Ordering::Relaxed);
    rt
}

/// A task the rescuer runs may wait on the I/O driver (a timer, a
/// socket): with no worker, no thread parks in the driver, so the
/// rescuer turns it while pools it ran tasks of have tasks alive and no
/// worker. It turned the driver only as the CPU-hog watchdog: with
/// detection off (`cpu_hog_threshold(ZERO)`), a rescued task's sleep
/// never fired; with it on, it fired at the watchdog's idle tick (100 ms,
/// rescued polls not counting as work). Waited on from a thread that is
/// no runtime's (a `block_on` here would turn the driver itself).
#[test]
fn a_rescued_tasks_timer_fires_without_a_worker() {
    within_watchdog(|| {
        for threshold in [Duration::ZERO, Duration::from_millis(10)] {
            let rt = workerless("rq-timer", threshold);
            // Ten sleeps of 2 ms: about 30 ms in all with the driver
            // turned every millisecond; at the watchdog's idle tick
            // (from half the threshold, doubling at each scan) about
            // 850 ms in all. The bound leaves 20 times the time for a busy
            // machine and still catches that (900 ms did not).
            let h = rt.spawn(async {
                let t0 = std::time::Instant::now();
                for _ in 0..10 {
                    crate::time::sleep(Duration::from_millis(2)).await;
                }
                t0.elapsed()
            });
            let took = futures::executor::block_on(h).unwrap();
            assert!(
                took < Duration::from_millis(600),
                "threshold {threshold:?}: ten 2 ms sleeps took {took:?}"
            );
            assert_eq!(pool_totals(&rt).0, 0, "no worker started");
        }
    });
}

/// Voluntary context switches of this process's thread named `name` (its
/// first 15 bytes: the kernel's `comm`).
fn switches_of(name: &str) -> u64 {
    let comm: String = name.chars().take(15).collect();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        if std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == comm) {
            let status = std::fs::read_to_string(dir.join("status")).unwrap();
            let line = status
                .lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches:"))
                .unwrap();
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
    panic!("no thread named {comm}");
}

/// A rescued task that waits for good (a channel that never sends) keeps
/// its pool on the rescuer's watch, and the rescuer turning the driver
/// for it backs off: it turned it every millisecond for as long as the
/// task lived (a thousand wakes a second of an idle process).
#[test]
fn a_rescued_task_waiting_for_good_costs_few_wakes() {
    within_watchdog(|| {
        for threshold in [Duration::ZERO, Duration::from_millis(10)] {
            let rt = workerless("rq-idle", threshold);
            let (_keep, never) = futures::channel::oneshot::channel::<()>();
            let (started, on_start) = futures::channel::oneshot::channel::<()>();
            let h = rt.spawn(async move {
                let _ = started.send(());
                let _ = never.await;
            });
            futures::executor::block_on(on_start).unwrap();
            // The back-off settles (1 + 2 + ... + 64 ms: about 130 ms).
            std::thread::sleep(Duration::from_millis(300));
            let before = switches_of("rq-idle-rescuer");
            std::thread::sleep(Duration::from_millis(1000));
            let woke = switches_of("rq-idle-rescuer") - before;
            assert!(
                woke < 100,
                "threshold {threshold:?}: the rescuer woke {woke} times in a second"
            );
            h.abort();
        }
    });
}

/// The back-off doubles after a wait that ran its whole tick only: pokes
/// (a refused blocking-pool thread's, a mayday for a pool with no work)
/// end a wait early, and each such pass, turning the driver and waking
/// nothing, doubled the wait, to 100 ms within a millisecond: a rescued
/// 10 ms sleep fired after about 100 ms.
#[test]
fn a_rescued_timer_fires_on_time_whatever_ends_the_rescuers_waits() {
    within_watchdog(|| {
        let rt = workerless("rq-poke", Duration::ZERO);
        let scheduler = rt.handle().scheduler.clone();
        // About 16 ms now (turns at 1, 3, 7, 15 ms after the pokes); 101
        // ms with every poke doubling the wait. Three tries: a loaded
        // machine may hold the rescuer up past the bound once, the
        // doubling waits did every time.
        let mut tries = Vec::new();
        for _ in 0..3 {
            let (started, on_start) = futures::channel::oneshot::channel::<()>();
            let h = rt.spawn(async move {
                let _ = started.send(());
                let t0 = std::time::Instant::now();
                crate::time::sleep(Duration::from_millis(10)).await;
                t0.elapsed()
            });
            futures::executor::block_on(on_start).unwrap();
            for _ in 0..8 {
                scheduler.rescuer.poke();
                std::thread::sleep(Duration::from_micros(100));
            }
            let took = futures::executor::block_on(h).unwrap();
            if took < Duration::from_millis(80) {
                return;
            }
            tries.push(took);
        }
        panic!("a rescued 10 ms sleep took {tries:?}");
    });
}

/// A pool on the rescuer's watch (every slot blocked, tasks alive, the
/// driver unattended) leaves it while a thread is parked in the driver:
/// that thread fires the timers and attends when it leaves for long, and
/// the rescuer's turns, failing beside it, cost ten wakes a second for as
/// long as the slots stay blocked.
#[test]
fn the_rescuer_stops_turning_the_driver_while_a_thread_is_parked_in_it() {
    within_watchdog(|| {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("core:1 pu:1").unwrap())
            .max_workers_per_pool(1)
            .cpu_hog_threshold(Duration::ZERO)
            .thread_name("rq-parked")
            .build()
            .unwrap();
        let woke = rt.block_on(async {
            crate::time::sleep(Duration::from_millis(10)).await;
            let (fired_tx, fired) = std::sync::mpsc::channel::<()>();
            drop(crate::spawn(async move {
                crate::time::sleep(Duration::from_millis(100)).await;
                fired_tx.send(()).unwrap();
            }));
            let mut releases = Vec::new();
            for _ in 0..2 {
                let (go_tx, go_rx) = futures::channel::oneshot::channel::<()>();
                let (release, release_rx) = std::sync::mpsc::channel::<()>();
                drop(crate::spawn(async move {
                    crate::block_in_place(move || {
                        go_tx.send(()).unwrap();
                        let _ = release_rx.recv();
                    })
                }));
                go_rx.await.unwrap();
                releases.push(release);
            }
            // Every slot blocked, this thread in a synchronous wait: the
            // rescuer turns the driver, and the timer fires.
            fired.recv_timeout(Duration::from_secs(10)).unwrap();
            // This thread parks in the driver from here on.
            crate::time::sleep(Duration::from_millis(300)).await;
            let before = switches_of("rq-parked-rescuer");
            crate::time::sleep(Duration::from_millis(1000)).await;
            let woke = switches_of("rq-parked-rescuer") - before;
            drop(releases);
            woke
        });
        assert!(woke <= 3, "the rescuer woke {woke} times in a second");
    });
}

/// A `block_in_place` whose replacement worker the OS refuses to start
/// woke nobody: no `cm_wakeup` on its pool or its queue (both counted the
/// reservation), and the work it left queued still runs (the rescuer).
#[test]
fn a_block_whose_replacement_is_refused_counts_no_cm_wakeup() {
    within_watchdog(|| {
        let rt = Runtime::builder()
            .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
            .default_scope(Scope::System)
            .max_workers_per_pool(1)
            .build()
            .unwrap();
        // The pool's one worker first, then no more.
        rt.block_on(rt.spawn(async {})).unwrap();
        rt.handle()
            .scheduler
            .refuse_worker_starts
            .store(1, Ordering::Relaxed);
        let q = crate::Workqueue::builder("blocks")
            .build(rt.handle())
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let item = q.spawn(async move {
            // Queued behind the block: it needs another worker.
            let other = crate::spawn(async move { tx.send(()).unwrap() });
            crate::block_in_place(|| rx.recv_timeout(Duration::from_secs(30)).is_ok())
                && other.await.is_ok()
        });
        assert!(rt.block_on(item).unwrap(), "the queued work never ran");
        let m = rt.metrics();
        let pool = &m.pools[0];
        assert_eq!(pool.counters.worker_start_failures, 1, "{pool:?}");
        assert_eq!(pool.counters.cm_wakeups, 0, "{pool:?}");
        assert_eq!(q.stats().cm_wakeups, 0, "{:?}", q.stats());
    });
}
