//! `spawn_blocking` through the public API: it does not hold up tasks,
//! panics, the thread limit and FIFO queueing, culling, shutdown.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    LINGERING, Lingering, shutdown_beside_a_lingering_thread, threads_named, within_watchdog,
};
use wq::{Runtime, Scope};

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn a_long_blocking_job_does_not_delay_short_tasks() {
    within_watchdog("no delay", LIMIT, || {
        let rt = Runtime::builder().thread_name("nodelay").build().unwrap();
        rt.block_on(async {
            // More blocking jobs than the machine has CPUs (workers).
            let n = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
            let blocking: Vec<_> = (0..n)
                .map(|_| wq::spawn_blocking(|| std::thread::sleep(Duration::from_millis(2000))))
                .collect();
            let start = Instant::now();
            let short: Vec<_> = (0..100).map(|i| wq::spawn(async move { i * 2 })).collect();
            let mut sum = 0;
            for s in short {
                sum += s.await.unwrap();
            }
            let took = start.elapsed();
            assert_eq!(sum, 9900);
            assert!(
                blocking.iter().all(|b| !b.is_finished()),
                "the short tasks took {took:?}: the blocking jobs finished first"
            );
            // What matters is the order (above), not the speed: no timed
            // bound here (a loaded machine's), the jobs' 2 s is the bound.
            for b in blocking {
                b.await.unwrap();
            }
        });
    });
}

#[test]
fn a_panic_in_the_closure_is_the_handles_panic_error() {
    let rt = Runtime::new().unwrap();
    let err = rt
        .block_on(rt.spawn_blocking(|| -> u32 { panic!("blocking boom") }))
        .unwrap_err();
    assert!(err.is_panic());
    assert_eq!(err.to_string(), "task panicked: blocking boom");
    // The pool lives on.
    assert_eq!(rt.block_on(rt.spawn_blocking(|| 3)).unwrap(), 3);
}

#[test]
fn jobs_beyond_the_limit_queue_fifo_and_never_exceed_it() {
    within_watchdog("limit", LIMIT, || {
        let rt = Runtime::builder()
            .thread_name("limit")
            .max_blocking_threads(2)
            .build()
            .unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        let jobs: Vec<_> = (0..8)
            .map(|i| {
                let (running, most, order) = (running.clone(), most.clone(), order.clone());
                rt.spawn_blocking(move || {
                    order.lock().unwrap().push(i);
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // The first jobs wait (5 s at most) until two run at
                    // once: a second thread late by a whole job's time on
                    // a loaded machine would leave `most` at 1.
                    let t0 = Instant::now();
                    while most.load(Ordering::SeqCst) < 2 && t0.elapsed() < Duration::from_secs(5) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for j in jobs {
            rt.block_on(j).unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        // Two threads take from one FIFO queue, in turn (a thread held up
        // between its take and its first line can be overtaken, so the
        // order is checked on one thread below).
        assert_eq!(order.lock().unwrap().len(), 8);
        assert!(threads_named("limit-blocking") <= 2);
        drop(rt);
        // One thread: exactly the order queued (the first job holds the
        // thread until all are queued, so that they wait in the queue).
        let rt = Runtime::builder().max_blocking_threads(1).build().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let (all_queued, queued) = std::sync::mpsc::channel::<()>();
        let mut queued = Some(queued);
        let jobs: Vec<_> = (0..8)
            .map(|i| {
                let order = order.clone();
                let hold = queued.take();
                rt.spawn_blocking(move || {
                    if let Some(hold) = hold {
                        hold.recv().unwrap();
                    }
                    order.lock().unwrap().push(i);
                })
            })
            .collect();
        all_queued.send(()).unwrap();
        for j in jobs {
            rt.block_on(j).unwrap();
        }
        assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
    });
}

#[test]
fn idle_threads_are_culled_after_keep_alive() {
    within_watchdog("cull", LIMIT, || {
        let rt = Runtime::builder()
            .thread_name("cull")
            .blocking_keep_alive(Duration::from_millis(50))
            .build()
            .unwrap();
        let jobs: Vec<_> = (0..4)
            .map(|_| {
                rt.spawn_blocking(|| {
                    std::thread::sleep(Duration::from_millis(20));
                    std::thread::current().name().map(str::to_owned)
                })
            })
            .collect();
        // They ran on the pool's threads (not counted here: a count after
        // the jobs races their 50 ms keep-alive if this thread runs late).
        for j in jobs {
            assert_eq!(rt.block_on(j).unwrap().as_deref(), Some("cull-blocking"));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while threads_named("cull-blocking") > 0 {
            assert!(
                Instant::now() < deadline,
                "blocking threads were never culled"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // A job after the cull starts a thread again.
        assert_eq!(rt.block_on(rt.spawn_blocking(|| 1)).unwrap(), 1);
    });
}

/// After a burst, a trickle of short jobs (one every 20 ms, keep-alive
/// 100 ms) is served by the most recently idle thread; the burst's other
/// threads idle out. Woken in turn (a condvar's FIFO), each of 4 threads
/// would get a job every 80 ms and none would ever be culled.
#[test]
fn a_trickle_of_jobs_keeps_one_thread_and_lets_the_rest_be_culled() {
    within_watchdog("trickle", LIMIT, || {
        let rt = Runtime::builder()
            .thread_name("tk")
            .blocking_keep_alive(Duration::from_millis(100))
            .build()
            .unwrap();
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let burst: Vec<_> = (0..4)
            .map(|_| {
                let b = barrier.clone();
                rt.spawn_blocking(move || {
                    b.wait();
                })
            })
            .collect();
        for j in burst {
            rt.block_on(j).unwrap();
        }
        // Four threads ran at once (the barrier held them all); a count
        // here would race their 100 ms keep-alive if this thread ran late.
        // 600 ms of trickle: six keep-alives. One count at the end (a
        // count repeated until it passed let the bug through: a stall of
        // this thread of about a keep-alive culls threads woken in turn
        // too).
        let end = Instant::now() + Duration::from_millis(600);
        while Instant::now() < end {
            rt.block_on(rt.spawn_blocking(|| ())).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = threads_named("tk-blocking");
        assert!(
            left <= 2,
            "{left} blocking threads left: the idle ones were kept alive by the trickle"
        );
    });
}

#[test]
fn shutdown_drops_queued_jobs_and_waits_for_running_ones() {
    within_watchdog("shutdown", LIMIT, || {
        let rt = Runtime::builder()
            .thread_name("sd")
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        // Running, said by the job itself (a new thread may first run a
        // scheduler period later on a loaded machine).
        let (running_tx, running_rx) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let running = rt.spawn_blocking(move || {
            running_tx.send(()).unwrap();
            released.recv().unwrap();
            r.fetch_add(1, Ordering::SeqCst);
            "done"
        });
        running_rx.recv().unwrap();
        let r = ran.clone();
        let queued = rt.spawn_blocking(move || {
            r.fetch_add(10, Ordering::SeqCst);
        });
        // The running job ends once the shutdown has dropped the queued
        // one (a fixed 200 ms job could end before the shutdown began, on
        // a loaded machine, and the queued one then ran).
        let releaser = std::thread::spawn(move || {
            while !queued.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
            }
            release.send(()).unwrap();
            queued
        });
        assert!(
            rt.shutdown_timeout(Duration::from_secs(30)),
            "waited for the running job"
        );
        let queued = releaser.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1, "the queued job never ran");
        assert_eq!(futures::executor::block_on(running).unwrap(), "done");
        assert!(
            futures::executor::block_on(queued)
                .unwrap_err()
                .is_cancelled()
        );

        // A running job longer than the timeout: shutdown gives up on it.
        let rt = Runtime::builder().thread_name("sd2").build().unwrap();
        let (running_tx, running_rx) = std::sync::mpsc::channel::<()>();
        let slow = rt.spawn_blocking(move || {
            running_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(3000));
        });
        running_rx.recv().unwrap();
        let start = Instant::now();
        assert!(!rt.shutdown_timeout(Duration::from_millis(50)));
        assert!(start.elapsed() < Duration::from_millis(2000));
        futures::executor::block_on(slow).unwrap(); // it finishes on its own

        // A stuck worker and a stuck job: the timeout is for the whole
        // shutdown (it was the workers' and then the jobs' again, twice).
        let rt = Runtime::builder().thread_name("sd3").build().unwrap();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (job_tx, job_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let started = started_tx.clone();
        drop(rt.spawn(async move {
            wq::block_in_place(|| {
                started.send(()).unwrap();
                let _ = release_rx.recv();
            })
        }));
        drop(rt.spawn_blocking(move || {
            started_tx.send(()).unwrap();
            let _ = job_rx.recv();
        }));
        started_rx.recv().unwrap();
        started_rx.recv().unwrap();
        let start = Instant::now();
        assert!(!rt.shutdown_timeout(Duration::from_millis(1500)));
        let took = start.elapsed();
        assert!(
            took < Duration::from_millis(2600),
            "shutdown_timeout(1.5 s) took {took:?}"
        );
        drop((release_tx, job_tx));
    });
}

/// A worker in `block_in_place` waiting, in synchronous code, on a wq
/// timer or socket (as the docs suggest: the pools' drivers serve them)
/// when its runtime is dropped: the shutdown waits for that worker, and
/// while it waits it turns the driver itself, as the exiting workers no
/// longer do. Without that the timer never fired and the drop waited for
/// ever (with a timeout: gave up, and the task panicked at the driver's
/// shutdown).
#[test]
fn the_shutdown_turns_the_driver_for_a_worker_it_waits_for() {
    within_watchdog("shutdown turns the driver", LIMIT, || {
        let rt = Runtime::builder().thread_name("std").build().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let slept = rt.spawn(async move {
            wq::block_in_place(|| {
                let s = wq::time::sleep(Duration::from_millis(300));
                tx.send(()).unwrap();
                futures::executor::block_on(s);
                "slept"
            })
        });
        rx.recv().unwrap();
        let start = Instant::now();
        assert!(
            rt.shutdown_timeout(Duration::from_secs(10)),
            "gave up after {:?}",
            start.elapsed()
        );
        let took = start.elapsed();
        assert!(took < Duration::from_secs(5), "the shutdown took {took:?}");
        assert_eq!(futures::executor::block_on(slept).unwrap(), "slept");

        // The runtime's first timer made while the shutdown waits: its
        // driver did not exist when the wait began.
        let rt = Runtime::builder().thread_name("std3").build().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let slept = rt.spawn(async move {
            wq::block_in_place(|| {
                tx.send(()).unwrap();
                // The shutdown is waiting by now.
                std::thread::sleep(Duration::from_millis(200));
                futures::executor::block_on(wq::time::sleep(Duration::from_millis(50)));
                "slept"
            })
        });
        rx.recv().unwrap();
        let start = Instant::now();
        assert!(
            rt.shutdown_timeout(Duration::from_secs(10)),
            "a driver made during the wait: gave up after {:?}",
            start.elapsed()
        );
        assert_eq!(futures::executor::block_on(slept).unwrap(), "slept");

        // And a plain drop, which waits without a limit.
        let rt = Runtime::builder().thread_name("std2").build().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        drop(rt.spawn(async move {
            wq::block_in_place(|| {
                let s = wq::time::sleep(Duration::from_millis(200));
                tx.send(()).unwrap();
                futures::executor::block_on(s);
            })
        }));
        rx.recv().unwrap();
        let start = Instant::now();
        drop(rt);
        assert!(start.elapsed() < Duration::from_secs(5));
    });
}

/// `shutdown_timeout` waits at most its timeout for the blocking
/// threads, their thread-locals' destructors included (it joined every
/// thread that had counted itself out, without a bound).
#[test]
fn shutdown_timeout_does_not_wait_past_it_for_a_blocking_threads_thread_local_destructor() {
    within_watchdog("tls", LIMIT, || {
        let all = shutdown_beside_a_lingering_thread(Runtime::new().unwrap(), |rt, l| {
            rt.block_on(rt.spawn_blocking(move || {
                LINGERING.with(|s| *s.borrow_mut() = Some(l));
            }))
            .unwrap();
        });
        assert!(
            !all,
            "a blocking thread still running its destructors counted as exited"
        );
    });
}

/// The same with a second blocking thread that exits after the first,
/// at the shutdown: its exit must not take the first one's handle (an
/// exiting thread joins threads that have gone, and a thread in its
/// thread-locals' destructors has not, though its handle says finished).
#[test]
fn a_later_exit_at_the_shutdown_leaves_the_lingering_threads_join_to_it() {
    within_watchdog("tls-2", LIMIT, || {
        let rt = Runtime::new().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (b_started, b_is_running) = std::sync::mpsc::channel::<()>();
        // A: sets the thread-local once B runs beside it (two threads).
        let a = rt.spawn_blocking(move || {
            b_is_running.recv().unwrap();
            LINGERING.with(|l| *l.borrow_mut() = Some(Lingering(rx)));
        });
        // B: still running when the shutdown begins; exits after A.
        let b = rt.spawn_blocking(move || {
            b_started.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
        });
        rt.block_on(a).unwrap();
        let start = Instant::now();
        let all = rt.shutdown_timeout(Duration::from_millis(1500));
        let took = start.elapsed();
        drop(tx);
        drop(b);
        assert!(
            !all,
            "A's thread, still in its thread-local's destructor, counted as joined"
        );
        assert!(
            took < Duration::from_secs(15),
            "shutdown_timeout(1.5 s) took {took:?}"
        );
    });
}

/// A C library's per-thread destructor (`pthread_key_create`), which runs
/// after the thread's Rust thread-locals' ones, holds the shutdown no
/// longer than its timeout either, whether the thread exits at the
/// shutdown or was culled before it.
#[test]
fn shutdown_timeout_bounds_a_c_librarys_per_thread_destructor() {
    extern "C" fn slow(_: *mut libc::c_void) {
        std::thread::sleep(Duration::from_secs(5));
    }
    within_watchdog("pthread key", LIMIT, || {
        for culled_first in [false, true] {
            let rt = Runtime::builder()
                .blocking_keep_alive(Duration::from_millis(50))
                .build()
                .unwrap();
            rt.block_on(rt.spawn_blocking(|| {
                let mut key: libc::pthread_key_t = 0;
                // SAFETY: a new key, and a non-null value for this thread:
                // its destructor runs as the thread ends.
                unsafe {
                    libc::pthread_key_create(&mut key, Some(slow));
                    libc::pthread_setspecific(key, std::ptr::dangling::<libc::c_void>());
                }
            }))
            .unwrap();
            if culled_first {
                // Culled: its thread now in `slow`.
                std::thread::sleep(Duration::from_millis(500));
            }
            let start = Instant::now();
            let all = rt.shutdown_timeout(Duration::from_millis(200));
            let took = start.elapsed();
            assert!(
                took < Duration::from_secs(3),
                "culled first {culled_first}: shutdown_timeout(200 ms) took {took:?}"
            );
            assert!(
                !all,
                "culled first {culled_first}: a thread still in its destructor joined"
            );
        }
    });
}

/// The blocking pool closes with the runtime, before its workers are
/// waited for: a job queued then never starts. Here a worker blocks on a
/// queued job's handle, and the job ahead of it waits for that worker: it
/// is the queued job's cancellation that lets the shutdown end (it waited
/// for its whole timeout, and the queued job ran after it had begun).
#[test]
fn a_job_queued_when_the_shutdown_begins_never_starts() {
    within_watchdog("closed early", LIMIT, || {
        let rt = Runtime::builder()
            .thread_name("ce")
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let (worker_done_tx, worker_done_rx) = std::sync::mpsc::channel::<()>();
        let (a_running_tx, a_running_rx) = std::sync::mpsc::channel::<()>();
        // A: holds the only blocking thread until the worker below is done.
        drop(rt.spawn_blocking(move || {
            a_running_tx.send(()).unwrap();
            let _ = worker_done_rx.recv();
        }));
        a_running_rx.recv().unwrap();
        // B: queued behind A.
        let ran_b = Arc::new(AtomicUsize::new(0));
        let r = ran_b.clone();
        let b = rt.spawn_blocking(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        // A worker blocked on B's handle.
        let (waiting_tx, waiting_rx) = std::sync::mpsc::channel::<()>();
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        drop(rt.spawn(async move {
            wq::block_in_place(move || {
                waiting_tx.send(()).unwrap();
                let got = futures::executor::block_on(b);
                *s.lock().unwrap() = Some(got.map_err(|e| e.is_cancelled()));
                drop(worker_done_tx);
            })
        }));
        waiting_rx.recv().unwrap();
        let start = Instant::now();
        assert!(
            rt.shutdown_timeout(Duration::from_secs(20)),
            "the shutdown waited for a worker blocked on a queued job ({:?})",
            start.elapsed()
        );
        assert_eq!(ran_b.load(Ordering::SeqCst), 0, "the queued job started");
        assert_eq!(
            *seen.lock().unwrap(),
            Some(Err(true)),
            "the worker's wait did not end in the job's cancellation"
        );
    });
}

/// An abort stops a job that has not started, and does nothing to one
/// whose closure runs (tokio's rule): `abort` then `await` waits for it,
/// so what it uses is free afterwards (it said cancelled at once, and the
/// result was dropped, while the closure went on).
#[test]
fn abort_cancels_a_queued_job_and_leaves_a_running_one_to_finish() {
    within_watchdog("abort", LIMIT, || {
        let rt = Runtime::builder()
            .thread_name("ab")
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let running = rt.spawn_blocking(move || {
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            5
        });
        started_rx.recv().unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let queued = rt.spawn_blocking(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        running.abort();
        queued.abort();
        assert!(!running.is_finished(), "a running job is not aborted");
        assert!(queued.is_finished(), "a queued job is");
        assert!(
            futures::executor::block_on(queued)
                .unwrap_err()
                .is_cancelled(),
            "the queued job's await says cancelled"
        );
        release_tx.send(()).unwrap();
        assert_eq!(
            futures::executor::block_on(running).unwrap(),
            5,
            "the running job's result"
        );
        // The only thread is free again, and the aborted job never ran.
        assert_eq!(rt.block_on(rt.spawn_blocking(|| 7)).unwrap(), 7);
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the aborted job ran");
    });
}

/// The abort racing the job's start, many times: a job's await gives its
/// result exactly when its closure ran, and cancelled exactly when it
/// never runs; no await hangs.
#[test]
fn an_abort_racing_the_start_either_cancels_the_job_or_lets_it_finish() {
    within_watchdog("abort race", LIMIT, || {
        let rt = Runtime::builder().thread_name("ar").build().unwrap();
        let mut outcomes = Vec::new();
        for _ in 0..2_000 {
            let ran = Arc::new(AtomicUsize::new(0));
            let r = ran.clone();
            let h = rt.spawn_blocking(move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
            h.abort();
            outcomes.push((futures::executor::block_on(h).is_ok(), ran));
        }
        assert!(rt.shutdown_timeout(Duration::from_secs(30)));
        for (ok, ran) in &outcomes {
            assert_eq!(
                usize::from(*ok),
                ran.load(Ordering::SeqCst),
                "a job's result and whether it ran disagree"
            );
        }
        let cancelled = outcomes.iter().filter(|(ok, _)| !ok).count();
        eprintln!(
            "{cancelled} of {} aborted before they started",
            outcomes.len()
        );
    });
}

#[test]
fn the_runtime_is_current_inside_and_handles_work_from_any_thread() {
    let rt = Runtime::new().unwrap();
    let handle = rt.handle().clone();
    let h = std::thread::spawn(move || handle.spawn_blocking(|| wq::spawn(async { 21 })))
        .join()
        .unwrap();
    let inner = rt.block_on(h).unwrap();
    assert_eq!(rt.block_on(inner).unwrap(), 21);
}

#[test]
fn zero_blocking_threads_is_a_build_error_that_says_what_to_do() {
    let err = Runtime::builder()
        .max_blocking_threads(0)
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("max_blocking_threads is 0"),
        "{err}"
    );
    assert!(err.to_string().contains("pass 1 or more"), "{err}");
    // Zero, and anything under the 1 ms the message asks for.
    for keep in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_micros(999),
    ] {
        let err = Runtime::builder()
            .blocking_keep_alive(keep)
            .build()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("blocking_keep_alive is {keep:?}"))
                && err.to_string().contains("at least 1 ms"),
            "{err}"
        );
    }
    let p = std::panic::catch_unwind(|| drop(wq::spawn_blocking(|| ()))).unwrap_err();
    let msg = p.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("wq::spawn_blocking called outside a wq runtime"),
        "{msg}"
    );
}

/// An aborted job still queued behind a busy thread is dropped at its
/// abort, with what it captured: here the sender the running job waits
/// on, which it held until a thread came to it -- the running one, which
/// never returned (at the thread limit, a deadlock that held `Runtime`'s
/// drop too). Its queue does not keep aborted jobs either.
#[test]
fn an_aborted_queued_job_drops_its_closure_at_once() {
    within_watchdog("aborted queued job", LIMIT, || {
        let rt = Runtime::builder().max_blocking_threads(1).build().unwrap();
        let (started, wait_started) = std::sync::mpsc::channel();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (go, wait_go) = std::sync::mpsc::channel::<()>();
        let first = rt.spawn_blocking(move || {
            started.send(()).unwrap();
            let disconnected = rx.recv_timeout(LIMIT);
            wait_go.recv().unwrap();
            disconnected
        });
        wait_started.recv().unwrap();
        let queued = rt.spawn_blocking(move || drop(tx));
        assert_eq!(rt.metrics().blocking.queued, 1);
        queued.abort();
        // Many more, aborted while the one thread is busy: none stays.
        for _ in 0..1_000 {
            let big = vec![0u8; 4096];
            rt.spawn_blocking(move || drop(big)).abort();
        }
        assert_eq!(rt.metrics().blocking.queued, 0);
        go.send(()).unwrap();
        assert_eq!(
            futures::executor::block_on(first).unwrap(),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
        assert!(
            futures::executor::block_on(queued)
                .unwrap_err()
                .is_cancelled()
        );
        assert_eq!(rt.block_on(rt.spawn_blocking(|| 5)).unwrap(), 5);
    });
}

/// A queued blocking job cancelled before it ran: its closure, and what
/// it captured, is dropped by async-task inside its abort-on-panic guard.
#[test]
fn a_cancelled_job_whose_closure_panics_on_drop_does_not_abort_the_process() {
    struct PanicsOnDrop(Arc<AtomicUsize>);
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
            panic!("a captured value that panics when dropped (expected by the test)");
        }
    }
    within_watchdog("job drop panics", LIMIT, || {
        let rt = Runtime::builder().max_blocking_threads(1).build().unwrap();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let first = rt.spawn_blocking(move || wait.recv().is_ok());
        let dropped = Arc::new(AtomicUsize::new(0));
        let captured = PanicsOnDrop(dropped.clone());
        let queued = rt.spawn_blocking(move || drop(captured));
        queued.abort();
        go.send(()).unwrap();
        assert!(futures::executor::block_on(first).unwrap());
        while dropped.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(rt.block_on(rt.spawn_blocking(|| 5)).unwrap(), 5);
    });
}

/// The CPUs the calling thread may run on.
fn allowed_cpus() -> usize {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        libc::CPU_COUNT(&set) as usize
    }
}

/// A blocking thread started from a worker bound to one CPU (a `cpu`
/// scope task calling `spawn_blocking`) runs on every CPU of the runtime,
/// not on the CPU of the worker that happened to start it (Linux threads
/// inherit their creator's affinity).
#[test]
fn a_blocking_thread_started_by_a_bound_worker_is_not_held_to_its_cpu() {
    let everywhere = allowed_cpus();
    if everywhere < 2 {
        eprintln!("one CPU: nothing to tell apart");
        return;
    }
    let rt = Runtime::new().unwrap();
    let (on_worker, in_job) = rt
        .block_on(rt.spawn_on(Scope::Cpu, async {
            let on_worker = allowed_cpus();
            (on_worker, wq::spawn_blocking(allowed_cpus).await.unwrap())
        }))
        .unwrap();
    assert_eq!(on_worker, 1, "a cpu-scope worker is bound to its CPU");
    assert_eq!(
        in_job, everywhere,
        "the blocking thread kept its starter's CPU"
    );
}

/// The blocking pool in the metrics: its threads, the idle ones, jobs
/// waiting for a thread at the limit, and the jobs so far; the counters
/// of a delta are the interval's.
#[test]
fn the_blocking_pool_is_in_the_metrics() {
    within_watchdog("blocking metrics", LIMIT, || {
        let rt = Runtime::builder()
            .thread_name("bmetrics")
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let before = rt.metrics();
        assert_eq!(before.blocking.max_threads, 1);
        assert_eq!((before.blocking.threads, before.blocking.jobs), (0, 0));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (running, is_running) = std::sync::mpsc::channel::<()>();
        let first = rt.spawn_blocking(move || {
            running.send(()).unwrap();
            rx.recv().unwrap();
        });
        is_running.recv().unwrap();
        let second = rt.spawn_blocking(|| ());
        // The second waits for the one thread, busy with the first.
        let m = rt.metrics();
        let b = m.blocking;
        assert_eq!((b.threads, b.idle, b.queued, b.jobs), (1, 0, 1, 2), "{b:?}");
        let text = m.to_prometheus();
        assert!(text.contains("\nwq_blocking_queue_depth 1\n"), "{text}");
        assert!(text.contains("\nwq_blocking_threads_max 1\n"), "{text}");
        assert!(text.contains("# TYPE wq_blocking_jobs_total counter\n"));
        tx.send(()).unwrap();
        rt.block_on(async {
            first.await.unwrap();
            second.await.unwrap();
        });
        // The thread goes idle once its last job is done.
        let start = Instant::now();
        let idle = loop {
            let b = rt.metrics().blocking;
            if b.idle == 1 || start.elapsed() > Duration::from_secs(30) {
                break b;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(
            (idle.threads, idle.idle, idle.queued),
            (1, 1, 0),
            "{idle:?}"
        );
        let d = rt.metrics().delta(&m);
        assert_eq!(d.blocking.jobs, 0, "no job since the snapshot");
        assert_eq!(rt.metrics().delta(&before).blocking.jobs, 2);
    });
}
