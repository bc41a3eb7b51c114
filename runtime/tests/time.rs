//! `wq::time` through the public API: never early, a ready future is not
//! timed out, resets, intervals, a timer armed while the driver sleeps,
//! and a million sleeping tasks.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{within, within_watchdog};
use wq::Runtime;
use wq::time::{
    Elapsed, MissedTickBehavior, interval, interval_at, sleep, sleep_until, timeout, timeout_at,
};

const LIMIT: Duration = Duration::from_secs(120);

fn rt() -> Runtime {
    Runtime::builder().thread_name("time").build().unwrap()
}

#[test]
fn timeouts_never_fire_early_and_sleeps_last_their_duration() {
    within_watchdog("never early", LIMIT, || {
        rt().block_on(async {
            let tasks: Vec<_> = (0..300u64)
                .map(|i| {
                    wq::spawn(async move {
                        let d = Duration::from_micros(100 + i * 97 % 30_000);
                        let start = Instant::now();
                        let r = timeout(d, std::future::pending::<()>()).await;
                        let took = start.elapsed();
                        assert!(r.is_err());
                        assert!(took >= d, "timeout of {d:?} fired after {took:?}");
                        let start = Instant::now();
                        sleep(d).await;
                        let took = start.elapsed();
                        assert!(took >= d, "sleep of {d:?} ended after {took:?}");
                        took - d
                    })
                })
                .collect();
            let mut late = Vec::new();
            for t in tasks {
                late.push(t.await.unwrap());
            }
            late.sort();
            // Not a latency benchmark (CI shares the CPUs): a sanity bound.
            assert!(
                late[late.len() / 2] < Duration::from_millis(100),
                "{late:?}"
            );
        });
    });
}

#[test]
fn a_future_that_is_ready_is_not_timed_out() {
    within_watchdog("ready first", LIMIT, || {
        rt().block_on(async {
            assert_eq!(timeout(Duration::ZERO, async { 5 }).await, Ok(5));
            for i in 0..100 {
                // The inner sleep's deadline is at or before the timeout's:
                // when both are due, the inner future wins.
                let d = Duration::from_millis(1 + i % 7);
                assert_eq!(timeout(d, sleep(d)).await, Ok(()), "round {i}");
            }
        });
    });
}

#[test]
fn sleep_reset_in_place_and_deadline() {
    within_watchdog("reset", LIMIT, || {
        rt().block_on(async {
            let mut s = sleep(Duration::from_secs(3600));
            // Arm it (poll once), then move it.
            assert!(futures::poll!(&mut s).is_pending());
            let at = Instant::now() + Duration::from_millis(15);
            s.reset(at);
            assert_eq!(s.deadline(), at);
            (&mut s).await;
            assert!(Instant::now() >= at && s.is_elapsed());
            // A completed sleep re-armed waits again.
            let at = Instant::now() + Duration::from_millis(10);
            s.reset(at);
            assert!(!s.is_elapsed());
            s.await;
            assert!(Instant::now() >= at);
            sleep_until(Instant::now() - Duration::from_millis(1)).await; // past: at once
        });
    });
}

/// A sleep of an hour, shared, and a task waiting on it (it has polled
/// it once), for another task to reset.
async fn a_task_waiting_on_an_hours_sleep()
-> (Arc<std::sync::Mutex<wq::time::Sleep>>, wq::JoinHandle<()>) {
    let s = Arc::new(std::sync::Mutex::new(sleep(Duration::from_secs(3600))));
    let polled = Arc::new(AtomicUsize::new(0));
    let waiter = {
        let (s, polled) = (s.clone(), polled.clone());
        wq::spawn(std::future::poll_fn(move |cx| {
            polled.fetch_add(1, Ordering::SeqCst);
            std::pin::Pin::new(&mut *s.lock().unwrap()).poll(cx)
        }))
    };
    while polled.load(Ordering::SeqCst) == 0 {
        wq::task::yield_now().await;
    }
    (s, waiter)
}

#[test]
fn a_sleep_reset_into_the_past_wakes_the_task_waiting_on_it() {
    within_watchdog("reset-past", LIMIT, || {
        rt().block_on(async {
            let (s, waiter) = a_task_waiting_on_an_hours_sleep().await;
            // Another task moves the deadline to the past: the waiter, not
            // the resetter, must be woken.
            s.lock()
                .unwrap()
                .reset(Instant::now() - Duration::from_millis(1));
            timeout(Duration::from_secs(10), waiter)
                .await
                .expect("the waiting task was not woken by the reset")
                .unwrap();
        });
    });
}

/// A sleep another task waits on, moved from an hour ahead to a few
/// milliseconds ahead while the driver sleeps until its next timer: the
/// reset lowers its shard's earliest tick and wakes the driver, which
/// fires it (the wheel's reset, then `TimerShards::with_shard`'s T2).
#[test]
fn a_sleep_reset_sooner_by_another_task_fires_at_its_new_deadline() {
    within_watchdog("reset-sooner", LIMIT, || {
        rt().block_on(async {
            let (s, waiter) = a_task_waiting_on_an_hours_sleep().await;
            // Time for the driver to go to sleep until the hour's tick (if
            // it has not, the reset is a plain one, and the test weaker).
            std::thread::sleep(Duration::from_millis(50));
            let at = Instant::now() + Duration::from_millis(5);
            s.lock().unwrap().reset(at);
            timeout(Duration::from_secs(10), waiter)
                .await
                .expect("the sleep reset sooner did not fire")
                .unwrap();
            assert!(Instant::now() >= at);
        });
    });
}

/// A deadline the clock has passed completes at the first poll (or the
/// next, for a sleep armed before), even when the driver has not turned
/// since (its wheel's time is its last turn's):
/// here the pool's one worker and the `block_on` thread are both busy for
/// 300 ms, with no watchdog, so nobody turns the driver meanwhile.
#[test]
fn a_deadline_already_past_completes_at_the_first_poll() {
    let rt = Runtime::builder()
        .max_workers_per_pool(1)
        .cpu_hog_threshold(Duration::ZERO)
        .build()
        .unwrap();
    let polls = rt.block_on(async {
        // The driver exists and has turned.
        sleep(Duration::from_millis(1)).await;
        let (busy_tx, busy_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let busy = wq::spawn(async move {
            busy_tx.send(()).unwrap();
            go_rx.recv().unwrap();
        });
        busy_rx.recv().unwrap();
        let noop = &mut std::task::Context::from_waker(std::task::Waker::noop());
        let start = Instant::now();
        // Armed in the wheel before the clock passes its deadline (200 ms
        // away: a thread preempted that long here would find it due).
        let mut armed = sleep_until(start + Duration::from_millis(200));
        assert!(std::pin::Pin::new(&mut armed).poll(noop).is_pending());
        std::thread::sleep(Duration::from_millis(300));
        let armed_ready = std::pin::Pin::new(&mut armed).poll(noop).is_ready();
        let mut first = sleep_until(start + Duration::from_millis(200));
        let first_ready = std::pin::Pin::new(&mut first).poll(noop).is_ready();
        // Armed in the wheel, then moved into the past by the clock.
        let mut reset = sleep(Duration::from_secs(3600));
        assert!(std::pin::Pin::new(&mut reset).poll(noop).is_pending());
        reset.reset(start + Duration::from_millis(200));
        let reset_ready = std::pin::Pin::new(&mut reset).poll(noop).is_ready();
        go_tx.send(()).unwrap();
        busy.await.unwrap();
        (first_ready, reset_ready, armed_ready)
    });
    assert_eq!(
        polls,
        (true, true, true),
        "(sleep_until, reset, armed) did not complete at once"
    );
}

/// A runtime with no watchdog (so nothing turns the driver in the
/// background) and one worker per pool.
fn rt_without_watchdog() -> Runtime {
    Runtime::builder()
        .max_workers_per_pool(1)
        .cpu_hog_threshold(Duration::ZERO)
        .build()
        .unwrap()
}

/// [`rt_without_watchdog`] on one CPU: one pool, of one worker (two
/// slots: a blocked worker's replacement).
fn one_cpu_without_watchdog() -> Runtime {
    Runtime::builder()
        .topology(wq::Topology::synthetic("core:1 pu:1").unwrap())
        .max_workers_per_pool(1)
        .cpu_hog_threshold(Duration::ZERO)
        .build()
        .unwrap()
}

/// Spawns a task that keeps its worker busy 30 ms (while `block_on` parks
/// in the driver), then sleeps 100 ms (its worker idles on its futex, the
/// driver taken) and sends on `tx`.
fn busy_then_timer(tx: std::sync::mpsc::Sender<()>) {
    drop(wq::spawn(async move {
        std::thread::sleep(Duration::from_millis(30));
        sleep(Duration::from_millis(100)).await;
        tx.send(()).unwrap();
    }));
}

/// `block_on` parked in the driver while the pool's worker, busy when it
/// parked, went idle on its futex; when `block_on` returns it leaves the
/// driver, and an idle worker must take it over, or the task's timer never
/// fires.
#[test]
fn a_timer_fires_after_block_on_leaves_the_driver() {
    let rt = rt_without_watchdog();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    rt.block_on(async {
        busy_then_timer(tx);
        sleep(Duration::from_millis(60)).await;
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the task's timer never fired: nobody turns the driver"
    );
}

/// `block_on`, woken out of the driver, polls a future that blocks its
/// thread (a synchronous call in `async fn main`) while the pool's worker
/// sleeps on its futex (it idled while `block_on` held the driver):
/// `block_on` leaves the driver to it before the poll, or the task's timer
/// waits for the whole block.
#[test]
fn a_timer_fires_while_block_on_blocks_in_a_poll() {
    let rt = rt_without_watchdog();
    rt.block_on(async {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        busy_then_timer(tx);
        sleep(Duration::from_millis(60)).await;
        // Out of the driver: this poll blocks until the task's timer fires.
        assert!(
            rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the task's timer waited for block_on's poll: nobody turns the driver"
        );
    });
}

/// The pool's one worker, parked in the driver, is kicked into a task that
/// blocks in `block_in_place`: another worker must take the driver (the
/// blocked one does not count against the pool's maximum), or a pending
/// timer waits for the block to end.
#[test]
fn a_timer_fires_while_the_worker_that_held_the_driver_blocks() {
    let rt = rt_without_watchdog();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    drop(rt.spawn(async move {
        sleep(Duration::from_millis(200)).await;
        tx.send(()).unwrap();
    }));
    // The worker goes idle, in the driver (the task's first poll done).
    let t0 = std::time::Instant::now();
    while rt.metrics().pools[0].workers.idle == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "never idle");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let blocked = rt.spawn(async move { wq::block_in_place(|| release_rx.recv().unwrap()) });
    let fired = rx.recv_timeout(Duration::from_secs(10));
    release_tx.send(()).unwrap();
    rt.block_on(blocked).unwrap();
    assert!(fired.is_ok(), "the timer waited for the blocked worker");
}

/// Spawns a task that sleeps `ms`, then sends: the receiver says when its
/// timer fired.
fn timer_in(ms: u64) -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    drop(wq::spawn(async move {
        sleep(Duration::from_millis(ms)).await;
        tx.send(()).unwrap();
    }));
    rx
}

/// A task that, after `before`, blocks in `block_in_place` until released.
struct Blocker {
    started: futures::channel::oneshot::Receiver<()>,
    release: std::sync::mpsc::Sender<()>,
    task: wq::JoinHandle<()>,
}

fn blocker(before: impl std::future::Future<Output = ()> + Send + 'static) -> Blocker {
    let (go_tx, started) = futures::channel::oneshot::channel::<()>();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let task = wq::spawn(async move {
        before.await;
        wq::block_in_place(move || {
            let _ = go_tx.send(());
            release_rx.recv().unwrap()
        })
    });
    Blocker {
        started,
        release,
        task,
    }
}

/// Waits (synchronously, in `block_on`'s poll) for `timer` to fire, then
/// releases the blockers; fails if the timer waited for the poll.
async fn fires_during_the_poll(timer: std::sync::mpsc::Receiver<()>, blockers: Vec<Blocker>) {
    let fired = timer.recv_timeout(Duration::from_secs(10));
    for b in &blockers {
        b.release.send(()).unwrap();
    }
    for b in blockers {
        b.task.await.unwrap();
    }
    assert!(fired.is_ok(), "the timer waited for block_on's poll");
}

/// The same, beside a `block_on` thread whose synchronous poll holds it:
/// the worker that blocks was woken to take the driver (by `block_on`
/// leaving it) and found the blocking task first, so it never held the
/// driver, and attended nothing as it blocked; nobody took the driver,
/// and the timer waited for `block_on`'s poll. A worker that blocks
/// attends an unattended driver too (and a `block_on` thread that found
/// the driver taken is no waiter while it polls).
#[test]
fn a_timer_fires_while_the_worker_that_held_the_driver_blocks_beside_a_block_on() {
    within(60, || {
        let rt = one_cpu_without_watchdog();
        rt.block_on(async {
            let timer = timer_in(200);
            // This thread parks beside the worker, which holds the driver
            // (idle in it), and is woken by its timer.
            sleep(Duration::from_millis(50)).await;
            sleep(Duration::from_millis(10)).await;
            let b = blocker(async {});
            fires_during_the_poll(timer, vec![b]).await;
        });
    });
}

/// The pool's one worker blocks while the `block_on` thread is parked (in
/// the driver, or beside it as a waiter) and then polls synchronously:
/// the blocking worker's attend counted that thread as coming (in the
/// driver, or woken), which then went to poll instead, and attended
/// nothing that started a worker (the blocked one no longer counts): the
/// timer waited for the poll.
#[test]
fn a_timer_fires_while_block_on_polls_after_the_only_worker_blocked() {
    within(60, || {
        let rt = one_cpu_without_watchdog();
        rt.block_on(async {
            // The driver made, the worker idle.
            sleep(Duration::from_millis(10)).await;
            let timer = timer_in(200);
            // This thread parks while the task's first poll takes 50 ms.
            let mut b = blocker(async { std::thread::sleep(Duration::from_millis(50)) });
            (&mut b.started).await.unwrap();
            fires_during_the_poll(timer, vec![b]).await;
        });
    });
}

/// The `block_on` thread parks as a waiter beside the worker's turn; the
/// worker leaves the driver for a task that blocks, and its attend,
/// finding no idle worker, wakes the waiter and counts it as coming; the
/// waiter's future is woken too, and it goes to poll synchronously: it
/// must attend as one leaving the driver does (a worker is started), or
/// nobody turns the driver.
#[test]
fn a_timer_fires_while_a_woken_waiter_polls_and_the_worker_blocks() {
    within(60, || {
        let rt = one_cpu_without_watchdog();
        rt.block_on(async {
            let timer = timer_in(300);
            let mut b = blocker(async { sleep(Duration::from_millis(100)).await });
            // The worker runs both tasks' first polls and idles in the
            // driver meanwhile (nobody else holds it: this thread waits here).
            let t0 = std::time::Instant::now();
            while wq::Handle::current().metrics().pools[0].workers.idle == 0 {
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "the worker never idled"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            // This thread finds the worker's turn: a waiter.
            (&mut b.started).await.unwrap();
            fires_during_the_poll(timer, vec![b]).await;
        });
    });
}

/// Both slots of the pool's one worker blocked (the worker and its
/// replacement), the `block_on` thread polling synchronously: no worker
/// can be started, the kick sends the pool to the rescuer, and the
/// rescuer turns the driver while nobody does (it visited the pool,
/// found no work queued, and left it: the timer waited for the poll).
#[test]
fn a_timer_fires_while_block_on_polls_and_every_slot_is_blocked() {
    within(60, || {
        let rt = one_cpu_without_watchdog();
        rt.block_on(async {
            sleep(Duration::from_millis(10)).await;
            let timer = timer_in(200);
            let mut blockers = Vec::new();
            for _ in 0..2 {
                let mut b = blocker(async {});
                (&mut b.started).await.unwrap();
                blockers.push(b);
            }
            fires_during_the_poll(timer, blockers).await;
        });
    });
}

/// A timer whose waker panics (a foreign executor's, say) fires in some
/// thread's driver turn: that thread -- here the pool's only worker,
/// parked in the driver -- must live on, and the pool keep running tasks.
#[test]
fn a_waker_that_panics_in_a_driver_turn_does_not_kill_the_worker() {
    struct Bomb;
    impl std::task::Wake for Bomb {
        fn wake(self: Arc<Self>) {
            panic!("this waker explodes");
        }
    }
    let rt = rt_without_watchdog();
    let (tx, rx) = std::sync::mpsc::channel();
    drop(rt.spawn(async move {
        let mut s = sleep(Duration::from_millis(20));
        let bomb = std::task::Waker::from(Arc::new(Bomb));
        let polled = std::pin::Pin::new(&mut s).poll(&mut std::task::Context::from_waker(&bomb));
        assert!(polled.is_pending());
        // Kept armed (dropping it would cancel the timer).
        tx.send(s).unwrap();
    }));
    let _armed = rx.recv().unwrap();
    // The worker idles in the driver and fires the timer.
    std::thread::sleep(Duration::from_millis(200));
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for i in 0..3 {
        let done = done_tx.clone();
        drop(rt.spawn(async move { done.send(i).unwrap() }));
    }
    for _ in 0..3 {
        assert!(
            done_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the pool stopped running tasks after a waker panicked in its worker's driver turn"
        );
    }
}

#[test]
fn an_interval_of_duration_max_ticks_once_and_then_waits() {
    within_watchdog("interval-max", LIMIT, || {
        rt().block_on(async {
            let mut iv = interval(Duration::MAX);
            iv.tick().await; // the first tick is at once
            assert!(
                timeout(Duration::from_millis(20), iv.tick()).await.is_err(),
                "the second tick is ~30 years away, not now and not a panic"
            );
        });
    });
}

#[test]
fn a_timer_armed_while_the_driver_sleeps_wakes_it() {
    within_watchdog("unpark", LIMIT, || {
        rt().block_on(async {
            // The driver parks until this one (an hour away)...
            let far = wq::spawn(sleep(Duration::from_secs(3600)));
            wq::time::sleep(Duration::from_millis(5)).await;
            // ...and must be unparked for a nearer one.
            let start = Instant::now();
            sleep(Duration::from_millis(20)).await;
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{:?}",
                start.elapsed()
            );
            far.abort();
        });
    });
}

#[test]
fn interval_ticks_at_once_then_on_schedule_and_skips_missed_ticks() {
    within_watchdog("interval", LIMIT, || {
        rt().block_on(async {
            // Periods long beside a loaded machine's scheduling delays.
            let period = Duration::from_millis(100);
            let start = Instant::now();
            let mut iv = interval(period);
            // The first tick is due at once: its first poll is ready.
            let t0 = {
                let tick = std::pin::pin!(iv.tick());
                match futures::poll!(tick) {
                    std::task::Poll::Ready(t) => t,
                    std::task::Poll::Pending => panic!("the first tick was not at once"),
                }
            };
            assert!(t0 >= start);
            // On schedule (one period on, or a multiple if this thread ran
            // over a period late).
            let aligned = |t: Instant| (t - t0).as_nanos().is_multiple_of(period.as_nanos());
            let t1 = iv.tick().await;
            assert!(t1 > t0 && aligned(t1), "{:?}", t1 - t0);
            assert!(Instant::now() >= t1);
            // Miss two ticks: the late one is given, the missed ones skipped.
            std::thread::sleep(period * 3 + period / 2); // t1 + 350 ms or later
            let late = iv.tick().await;
            assert_eq!(late, t1 + period);
            let next = iv.tick().await;
            assert!(next >= t1 + period * 4 && aligned(next), "{:?}", next - t0);
        });
    });
}

/// `reset_immediately`, `reset_after` and `reset_at` move the next tick,
/// and the ticks after it follow a period apart.
#[test]
fn an_interval_is_reset_to_now_after_a_delay_or_an_instant() {
    within_watchdog("interval-reset", LIMIT, || {
        rt().block_on(async {
            let period = Duration::from_secs(3600);
            let mut iv = interval(period);
            iv.tick().await; // at once
            // Now, not in an hour.
            let before = Instant::now();
            iv.reset_immediately();
            let t = iv.tick().await;
            assert!(t >= before && t <= Instant::now());
            // 20 ms on.
            let after = Duration::from_millis(20);
            let before = Instant::now();
            iv.reset_after(after);
            let t = iv.tick().await;
            assert!(t >= before + after, "{:?}", t - before);
            assert!(Instant::now() >= t);
            // At an instant passed: at once, then a period from it.
            let at = Instant::now() - Duration::from_millis(5);
            iv.reset_at(at);
            assert_eq!(iv.tick().await, at);
            let next = std::pin::pin!(iv.tick());
            assert!(
                futures::poll!(next).is_pending(),
                "the tick after is an hour on"
            );
        });
    });
}

/// Burst gives the missed ticks, on the original schedule; Delay restarts
/// the schedule a period after the late tick was taken. The intervals
/// start 350 ms in the past, so the assertions hold however late this
/// thread runs.
#[test]
fn an_interval_bursts_or_delays_after_missed_ticks_when_told() {
    within_watchdog("interval-missed", LIMIT, || {
        rt().block_on(async {
            let period = Duration::from_millis(100);
            let start = Instant::now() - (period * 3 + period / 2);
            let mut burst = interval_at(start, period);
            burst.set_missed_tick_behavior(MissedTickBehavior::Burst);
            for k in 0..=4 {
                assert_eq!(burst.tick().await, start + period * k, "burst tick {k}");
            }
            let mut delay = interval_at(start, period);
            delay.set_missed_tick_behavior(MissedTickBehavior::Delay);
            assert_eq!(delay.missed_tick_behavior(), MissedTickBehavior::Delay);
            let before = Instant::now();
            assert_eq!(delay.tick().await, start, "the late tick, as due");
            let next = delay.tick().await;
            assert!(
                next >= before + period,
                "not a period after the late tick was taken: {:?} after",
                next.checked_duration_since(before)
            );
            assert!(Instant::now() >= next);
        });
    });
}

#[test]
fn timeout_at_times_out_at_its_instant_and_not_a_ready_future() {
    within_watchdog("timeout_at", LIMIT, || {
        rt().block_on(async {
            let start = Instant::now();
            let deadline = start + Duration::from_millis(50);
            let out: Result<(), Elapsed> =
                timeout_at(deadline, sleep(Duration::from_secs(60))).await;
            assert!(out.is_err(), "a 60 s sleep finished in time");
            assert!(Instant::now() >= deadline, "timed out before its deadline");
            let past = start;
            assert_eq!(timeout_at(past, async { 7 }).await, Ok(7));
        });
    });
}

#[test]
fn a_million_sleeping_tasks_complete() {
    const TASKS: usize = 1_000_000;
    within_watchdog("1M sleeps", Duration::from_secs(300), || {
        let rt = rt();
        let done = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let rss0 = rss_kib();
        rt.block_on(async {
            let handles: Vec<_> = (0..TASKS)
                .map(|i| {
                    let done = done.clone();
                    wq::spawn(async move {
                        sleep(Duration::from_millis(200 + (i % 800) as u64)).await;
                        done.fetch_add(1, Ordering::Relaxed);
                    })
                })
                .collect();
            let spawned = start.elapsed();
            let peak = rss_kib();
            for h in handles {
                h.await.unwrap();
            }
            println!(
                "1M sleeping tasks: spawned in {spawned:?}, all done in {:?}; RSS {} MiB -> {} MiB after spawning",
                start.elapsed(),
                rss0 / 1024,
                peak / 1024
            );
            // Measured in a debug build: ~270 MiB for a million tasks with
            // their sleeps (task cell, registry entry, wheel entry). A leak
            // or a per-timer allocation gone wrong shows up well above 1 GiB.
            assert!(
                peak.saturating_sub(rss0) < 1024 * 1024,
                "a million sleeping tasks took {} MiB",
                peak.saturating_sub(rss0) / 1024
            );
        });
        assert_eq!(done.load(Ordering::Relaxed), TASKS);
    });
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

#[test]
fn elapsed_is_an_error_with_a_message() {
    let elapsed: Elapsed = rt()
        .block_on(async { timeout(Duration::ZERO, std::future::pending::<()>()).await })
        .unwrap_err();
    let e: Box<dyn std::error::Error> = Box::new(elapsed);
    assert_eq!(e.to_string(), "deadline has elapsed");
    let io: std::io::Error = elapsed.into();
    assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
}

#[test]
fn timers_outside_a_runtime_panic_with_what_to_do() {
    let p = std::panic::catch_unwind(|| drop(sleep(Duration::from_secs(1)))).unwrap_err();
    let msg = p.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("wq::time::sleep called outside a wq runtime"),
        "{msg}"
    );
    // A Handle has no timers of its own: the way through it is its
    // block_on (the message said only "use a wq::Handle").
    assert!(msg.contains("inside Handle::block_on"), "{msg}");
    let p =
        std::panic::catch_unwind(|| drop(timeout(Duration::from_secs(1), async {}))).unwrap_err();
    let msg = p.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("wq::time::timeout called outside"), "{msg}");
}

/// A panic's message (a `&str` or `String` payload), or "".
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[test]
fn a_sleep_outliving_its_runtime_panics_instead_of_hanging() {
    let rt = rt();
    let (armed, unarmed) = rt.block_on(async {
        let mut armed = sleep(Duration::from_secs(3600));
        assert!(futures::poll!(&mut armed).is_pending());
        (armed, sleep(Duration::from_secs(3600)))
    });
    drop(rt);
    for s in [armed, unarmed] {
        let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            futures::executor::block_on(s)
        }))
        .unwrap_err();
        let msg = panic_message(&*p);
        assert!(msg.contains("polled after its runtime shut down"), "{msg}");
    }
}

/// A timer made through a handle of a runtime that shut down before it
/// ever made its driver: a panic that says so (it said "the wq runtime
/// this I/O object was created on has shut down", of no object yet).
#[test]
fn a_sleep_made_after_the_shutdown_says_the_runtime_shut_down() {
    let rt = rt();
    let handle = rt.handle().clone();
    drop(rt);
    let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handle.block_on(async { sleep(Duration::from_millis(1)).await })
    }))
    .unwrap_err();
    let msg = panic_message(&*p);
    assert!(
        msg.contains("wq::time::sleep") && msg.contains("the wq runtime has shut down"),
        "{msg}"
    );
    assert!(!msg.contains("I/O object"), "{msg}");
}

/// One pool of one worker, CPU-hog detection (which would let a second
/// worker in) out of reach.
fn one_worker_no_hog_detection() -> Runtime {
    Runtime::builder()
        .default_scope(wq::Scope::System)
        .max_workers_per_pool(1)
        .cpu_hog_threshold(Duration::from_secs(3600))
        .build()
        .unwrap()
}

/// A loop over sleeps already due (a backoff of zero) yields its worker
/// every 128 (the operation budget) as a socket loop does: on a pool of
/// one worker, another task runs meanwhile. (CPU-hog detection, which
/// would let a second worker in, is set out of reach.)
#[test]
fn a_loop_over_sleeps_already_due_lets_other_tasks_run() {
    within_watchdog("due sleeps", LIMIT, || {
        let rt = one_worker_no_hog_detection();
        rt.block_on(async {
            let flag = Arc::new(AtomicUsize::new(0));
            let f = flag.clone();
            let looper = wq::spawn(async move {
                let t0 = Instant::now();
                let mut n = 0u64;
                while f.load(Ordering::SeqCst) == 0 {
                    sleep(Duration::ZERO).await;
                    timeout(Duration::ZERO, std::future::pending::<()>())
                        .await
                        .unwrap_err();
                    n += 1;
                    assert!(
                        t0.elapsed() < Duration::from_secs(10),
                        "the other task never ran: {n} due sleeps held the worker"
                    );
                }
            });
            let setter = wq::spawn(async move { flag.store(1, Ordering::SeqCst) });
            setter.await.unwrap();
            looper.await.unwrap();
        });
    });
}

/// `wq::task::unconstrained`: inside it, due sleeps never yield; outside,
/// a task spawned beside the loop on a one-worker pool runs within it.
#[test]
fn unconstrained_polls_without_the_budget() {
    within_watchdog("unconstrained", LIMIT, || {
        let rt = one_worker_no_hog_detection();
        let ran_beside = |constrained: bool| {
            rt.block_on(rt.spawn(async move {
                let flag = Arc::new(AtomicUsize::new(0));
                let f = flag.clone();
                // Queued on this worker, the only one: it runs when this
                // task yields.
                let beside = wq::spawn(async move { f.store(1, Ordering::SeqCst) });
                let sleeps = async {
                    for _ in 0..1_000 {
                        sleep(Duration::ZERO).await;
                    }
                };
                if constrained {
                    sleeps.await;
                } else {
                    wq::task::unconstrained(sleeps).await;
                }
                let ran = flag.load(Ordering::SeqCst) == 1;
                beside.await.unwrap();
                ran
            }))
            .unwrap()
        };
        assert!(ran_beside(true), "1,000 due sleeps never yielded");
        assert!(!ran_beside(false), "unconstrained sleeps yielded");
    });
}
