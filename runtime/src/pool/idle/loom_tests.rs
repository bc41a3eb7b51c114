//! Model checks of the protocol with loom: run with `scripts/loom` (or
//! `RUSTFLAGS="--cfg loom" cargo test -p wq --lib --release loom_`).
//!
//! The model worker below follows `super::super::worker`'s loop (work,
//! search, one spin check, stop searching, enter idle, park, leave idle)
//! over a toy queue of anonymous items, in its protocol steps; its
//! chaining kick is narrower than the worker's, its items live only in the
//! shared queue (no LIFO slot or deque to hand off), and no watchdog or
//! cull races it: those parts are covered by the executor and stress
//! tests.

use super::*;
use loom::sync::Arc;
use loom::sync::atomic::AtomicUsize as Items;

/// A queue of anonymous items: all the protocol needs to know.
struct Queue(Items);

impl Queue {
    fn push(&self) {
        // Release: the producer's fence in `notify` follows.
        self.0.fetch_add(1, Ordering::Release);
    }
    fn has_work(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }
    fn pop(&self) -> bool {
        let mut n = self.0.load(Ordering::Acquire);
        while n > 0 {
            match self
                .0
                .compare_exchange(n, n - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => n = actual,
            }
        }
        false
    }
}

fn config(kicked_list: bool, wake_mode: WakeMode) -> IdleConfig {
    IdleConfig {
        max_workers: 1,
        slots: 1,
        idle_timeout: Duration::ZERO,
        min_idle: 0,
        wake_mode,
        start_backoff: Duration::ZERO,
        kicked_list,
    }
}

/// `config` with the kicked list, whose workers are never culled.
fn no_cull(wake_mode: WakeMode) -> IdleConfig {
    IdleConfig {
        idle_timeout: Duration::from_secs(3600),
        ..config(true, wake_mode)
    }
}

/// A worker of the model: runs items until `quota` are done, searches,
/// idles and parks in between, leaves when culled. Returns how many it ran.
fn worker(idle: &Idle, queue: &Queue, slot: usize, quota: usize, mut searching: bool) -> usize {
    let mut done = 0;
    'work: loop {
        // 1. Work.
        while queue.pop() {
            if searching {
                searching = false;
                if idle.stop_searching() && queue.has_work() {
                    let _ = idle.notify();
                }
            }
            done += 1;
            if done == quota {
                break 'work;
            }
        }
        // 2.-5. Search, spin, stop searching, enter idle; park.
        match look_then_idle(idle, queue, slot, &mut searching) {
            Next::Park => {}
            Next::Exit => break,
            Next::Run | Next::Search => continue 'work,
        }
        if park_until_woken(idle, queue, slot, &mut searching) == Next::Exit {
            break;
        }
    }
    done
}

/// Steps 2-5 of the worker's loop (search, one round of the spin, stop
/// searching, enter idle): `Park`, `Exit`, or `Run` to work again.
fn look_then_idle(idle: &Idle, queue: &Queue, slot: usize, searching: &mut bool) -> Next {
    // 2. Search (or not: refused, as others search already).
    if !*searching {
        if idle.try_start_searching() {
            *searching = true;
            return Next::Run;
        }
        REFUSED.with(|r| r.set(r.get() + 1));
    }
    // 3. One round of the spin.
    if *searching && queue.has_work() {
        return Next::Run;
    }
    // 4. Stop searching.
    if *searching {
        *searching = false;
        if idle.stop_searching() && queue.has_work() {
            return Next::Run;
        }
    }
    // 5. Enter idle (claimed by a kick meanwhile: a searcher).
    match idle.enter_idle(slot, Instant::now(), || queue.has_work()) {
        Next::Search => {
            *searching = true;
            Next::Run
        }
        next => next,
    }
}

std::thread_local! {
    /// Whether a worker back from a park looks at the queues before the
    /// pool lock, as one back unwoken does (the default here), or under
    /// it, as a woken one does: [`looking_under_the_lock`] runs a model
    /// the second way. (Loom runs a model's threads on the test's thread:
    /// this is the model's.)
    static LOOK_FIRST: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
    /// Whether a worker back from a park with nothing to do may cull
    /// itself, as a production worker does (`leave_idle`'s `cull`); off
    /// but in [`kick_races_a_self_cull`], whose others cull from outside
    /// (`cull_now`).
    static SELF_CULL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Parks left to time out at once (no sleep, no wake), in
    /// [`kick_races_a_self_cull`]: a thread unparking the worker stood in
    /// badly (loom wakes a thread blocked on a mutex with it).
    static TIMEOUTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Searches refused (the searchers' limit), over a model's executions:
    /// proof that a model went that way.
    static REFUSED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs `f` with the model switch `flag` set to `on`, and puts it back
/// to `!on` afterwards, a panic included (the models' negatives panic).
fn with_switch(
    flag: &'static std::thread::LocalKey<std::cell::Cell<bool>>,
    on: bool,
    f: impl FnOnce(),
) {
    struct Reset(&'static std::thread::LocalKey<std::cell::Cell<bool>>, bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    flag.with(|c| c.set(on));
    let _reset = Reset(flag, !on);
    f();
}

/// Runs `model` with its workers looking at the queues under the pool
/// lock after each park (`leave_idle`'s `look_first` off).
fn looking_under_the_lock(model: impl FnOnce()) {
    with_switch(&LOOK_FIRST, false, model);
}

/// Parks until woken to work (`Run`, searching if a kick claimed it) or
/// to leave (`Exit`).
fn park_until_woken(idle: &Idle, queue: &Queue, slot: usize, searching: &mut bool) -> Next {
    loop {
        let timed_out = TIMEOUTS.with(|t| t.replace(t.get().saturating_sub(1)) > 0);
        if !timed_out {
            loom::thread::park();
        }
        let mut wake = WakeQueue::default();
        // Looking before the lock, as a worker back unwoken does, or under
        // it, as a woken one does (`LOOK_FIRST`): each model's threads
        // park and come back every way the worker's can, one way a run.
        let next = idle.leave_idle(
            slot,
            Instant::now(),
            SELF_CULL.with(std::cell::Cell::get),
            LOOK_FIRST.with(std::cell::Cell::get),
            || queue.has_work(),
            &mut wake,
        );
        // Workers its own cull pass took (`WakeMode::Deferred`): unparked
        // after the lock, as the worker does (dropped, a model with two
        // culled workers would report a deadlock that is not).
        wake.wake_all();
        match next {
            Next::Search => {
                *searching = true;
                return Next::Run;
            }
            Next::Run => return Next::Run,
            Next::Park => {}
            Next::Exit => return Next::Exit,
        }
    }
}

/// `worker` until it leaves for good (an exiting thread may be drafted).
fn worker_thread(idle: &Idle, queue: &Queue, slot: usize, quota: usize) -> usize {
    let mut done = 0;
    let mut searching = true;
    loop {
        done += worker(idle, queue, slot, quota - done, searching);
        if done == quota {
            return done;
        }
        match idle.exit(slot) {
            Next::Exit => return done,
            _ => searching = true,
        }
    }
}

/// Starts the model's one worker and lets it go idle (parked, with no
/// work), so the protocol starts from "one idle worker".
fn one_worker(
    idle: &Arc<Idle>,
    queue: &Arc<Queue>,
    quota: usize,
) -> loom::thread::JoinHandle<usize> {
    let Kick::Start(slot) = idle.kick() else {
        panic!("a fresh pool starts a worker")
    };
    let (i, q) = (idle.clone(), queue.clone());
    loom::thread::spawn(move || {
        i.started(slot, loom::thread::current());
        worker_thread(&i, &q, slot, quota)
    })
}

/// A producer thread: queues an item and kicks; a kick that finds the
/// worker gone (culled) starts its successor, which runs the item.
/// Returns the items the successor ran.
fn pushing_producer(idle: &Arc<Idle>, queue: &Arc<Queue>) -> loom::thread::JoinHandle<usize> {
    let (i, q) = (idle.clone(), queue.clone());
    loom::thread::spawn(move || {
        q.push();
        match i.notify() {
            Kick::Start(slot) => {
                let (i2, q2) = (i.clone(), q.clone());
                loom::thread::spawn(move || {
                    i2.started(slot, loom::thread::current());
                    worker_thread(&i2, &q2, slot, 1)
                })
                .join()
                .unwrap()
            }
            _ => 0,
        }
    })
}

/// One worker; a producer queues an item and kicks while a cull runs.
/// Fails if the item is stranded.
fn kick_races_cull(kicked_list: bool, wake_mode: WakeMode) {
    loom::model(move || {
        let idle = Arc::new(Idle::new(config(kicked_list, wake_mode)));
        let queue = Arc::new(Queue(Items::new(0)));
        let w = one_worker(&idle, &queue, 1);
        let producer = pushing_producer(&idle, &queue);
        idle.cull_now(Instant::now()).wake_all();
        let ran = w.join().unwrap() + producer.join().unwrap();
        assert_eq!(
            ran, 1,
            "stranded item: the kicked worker was culled before it ran the item"
        );
    });
}

#[test]
fn loom_kick_and_cull_never_strand_an_item() {
    kick_races_cull(true, WakeMode::Deferred);
}

#[test]
fn loom_kick_and_cull_never_strand_an_item_under_lock() {
    kick_races_cull(true, WakeMode::UnderLock);
}

/// As above, the worker looking at the queues under the pool lock when
/// it comes back from a park (as a woken worker does).
#[test]
fn loom_kick_and_cull_never_strand_an_item_looking_under_the_lock() {
    looking_under_the_lock(|| kick_races_cull(true, WakeMode::Deferred));
}

/// The one worker comes back from its park unwoken (its timeout: here its
/// first park returns at once) and, finding no work, culls itself, as a
/// production worker does, while a producer queues an item and kicks:
/// the item runs once, on the worker (claimed, or seeing it) or on the
/// successor the kick starts once the worker is gone. The models above
/// cull from another thread (`cull_now`); this is the worker's own cull,
/// `leave_idle`'s step 5.
fn kick_races_a_self_cull(wake_mode: WakeMode) {
    with_switch(&SELF_CULL, true, || {
        loom::model(move || {
            TIMEOUTS.with(|t| t.set(1));
            let idle = Arc::new(Idle::new(config(true, wake_mode)));
            let queue = Arc::new(Queue(Items::new(0)));
            let w = one_worker(&idle, &queue, 1);
            let producer = pushing_producer(&idle, &queue);
            let ran = w.join().unwrap() + producer.join().unwrap();
            TIMEOUTS.with(|t| t.set(0));
            assert_eq!(
                ran, 1,
                "stranded item: the worker culled itself with it queued"
            );
        });
    });
}

#[test]
fn loom_a_worker_culling_itself_never_strands_an_item() {
    kick_races_a_self_cull(WakeMode::Deferred);
}

#[test]
fn loom_a_worker_culling_itself_never_strands_an_item_under_lock() {
    kick_races_a_self_cull(WakeMode::UnderLock);
}

/// [`limited_worker`] as a thread's life: after a cull, `exit` may draft
/// the thread for a start a kick reserved (step 6), and it works again;
/// it ends once `total` items ran (the pool closed) or it exits.
fn limited_thread(idle: &Idle, queue: &Queue, slot: usize, ran: &Items, total: usize) {
    loop {
        limited_worker(idle, queue, slot, ran, total, true, false, true, false);
        if ran.load(Ordering::SeqCst) >= total {
            return;
        }
        if idle.exit(slot) == Next::Exit {
            return;
        }
    }
}

/// The cull paths other live workers decide (I5), which the one-slot
/// models above cannot reach: a pool of one worker with a second slot.
/// The worker idles and is culled while a producer queues an item; the
/// kick, finding none idle, starts a successor in the other slot. The
/// culled worker, seeing the item at its re-check with the successor
/// counted, exits (the limit filled: `work_seen_on_idle`), or is drafted
/// for the start (`exit`), or stays (none counted): whichever, the item
/// runs once (loom reports a deadlock if both park with it queued).
fn cull_beside_a_successor(culled_always_exits: bool) {
    loom::model(move || {
        let mut cfg = config(true, WakeMode::Deferred);
        cfg.slots = 2;
        let idle = Idle::new(cfg);
        idle.culled_always_exits
            .store(culled_always_exits, std::sync::atomic::Ordering::Relaxed);
        let idle = Arc::new(idle);
        let queue = Arc::new(Queue(Items::new(0)));
        let ran = Arc::new(Items::new(0));
        let Kick::Start(a) = idle.kick() else {
            panic!("a fresh pool starts a worker")
        };
        let wa = {
            let (i, q, r) = (idle.clone(), queue.clone(), ran.clone());
            loom::thread::spawn(move || {
                i.started(a, loom::thread::current());
                limited_thread(&i, &q, a, &r, 1);
            })
        };
        let producer = {
            let (i, q, r) = (idle.clone(), queue.clone(), ran.clone());
            loom::thread::spawn(move || {
                q.push();
                if let Kick::Start(b) = i.notify() {
                    let (i2, q2, r2) = (i.clone(), q.clone(), r.clone());
                    loom::thread::spawn(move || {
                        i2.started(b, loom::thread::current());
                        limited_thread(&i2, &q2, b, &r2, 1);
                    })
                    .join()
                    .unwrap();
                }
            })
        };
        idle.cull_now(Instant::now()).wake_all();
        producer.join().unwrap();
        wa.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1, "the item was stranded");
    });
}

#[test]
fn loom_a_cull_beside_a_successor_never_strands_an_item() {
    cull_beside_a_successor(false);
}

/// With the culled worker exiting though nobody else counts (the stay of
/// `work_seen_on_idle` removed), the item is stranded: the producer saw
/// the worker counted and kicked nobody.
#[test]
#[should_panic(expected = "the item was stranded")]
fn loom_a_culled_worker_that_always_exits_strands_the_item() {
    cull_beside_a_successor(true);
}

/// Step 6's draft racing the pool's close: the one worker is culled and
/// its thread exits while a producer's kick waits for its slot (every
/// slot held by an exiting thread: the reservation is left for it), and
/// the pool closes meanwhile. Either the thread is drafted before the
/// close, and exits at its next look, or the close comes first and the
/// reservation is undone with its counts: no worker or searcher counted
/// once every thread is gone, and none parked for ever (loom's deadlock
/// check).
fn draft_racing_close(keep_counts: bool) {
    loom::model(move || {
        let idle = Arc::new(Idle::new(config(true, WakeMode::Deferred)));
        idle.closed_reservation_kept
            .store(keep_counts, std::sync::atomic::Ordering::Relaxed);
        let queue = Arc::new(Queue(Items::new(0)));
        // A quota it never reaches: it leaves only through `exit`.
        let w = one_worker(&idle, &queue, 2);
        let (i, q) = (idle.clone(), queue.clone());
        let producer = loom::thread::spawn(move || {
            q.push();
            if let Kick::Start(slot) = i.notify() {
                let (i2, q2) = (i.clone(), q.clone());
                loom::thread::spawn(move || {
                    i2.started(slot, loom::thread::current());
                    worker_thread(&i2, &q2, slot, 2)
                })
                .join()
                .unwrap();
            }
        });
        idle.cull_now(Instant::now()).wake_all();
        let i = idle.clone();
        let closer = loom::thread::spawn(move || i.close().wake_all());
        closer.join().unwrap();
        producer.join().unwrap();
        w.join().unwrap();
        let s = idle.snapshot();
        assert_eq!(
            (s.nr_workers, s.nr_searching, s.nr_idle, s.nr_kicked),
            (0, 0, 0, 0),
            "counts left behind: {s:?}"
        );
    });
}

#[test]
fn loom_a_draft_racing_close_leaves_no_count_behind() {
    draft_racing_close(false);
}

/// The reservation's counts kept by the exit that finds the pool closed:
/// the model must find them left behind.
#[test]
#[should_panic(expected = "counts left behind")]
fn loom_a_closed_reservation_kept_leaves_counts_behind() {
    draft_racing_close(true);
}

/// A parked worker whose park (a driver turn) woke a task into its own
/// LIFO slot, racing a cull of it: a culled worker's LIFO task and deque
/// go home (`worker::run`: queued on the pool's queue, as a producer
/// queues, then `exit`), and the item must run, by this thread drafted for
/// the kick's reservation or by a worker the kick starts. Not culled, the
/// worker runs it (`leave_idle` counts its own LIFO slot as work). The
/// main thread's unpark is the park's timeout. `kick_home: false` queues
/// the task without the kick (the negative model).
fn culled_with_a_lifo_task(kick_home: bool) {
    loom::model(move || {
        let idle = Arc::new(Idle::new(config(true, WakeMode::Deferred)));
        let queue = Arc::new(Queue(Items::new(0)));
        let Kick::Start(slot) = idle.kick() else {
            panic!("a fresh pool starts a worker")
        };
        let (i, q) = (idle.clone(), queue.clone());
        let w = loom::thread::spawn(move || {
            i.started(slot, loom::thread::current());
            let mut searching = true;
            // No work: it idles (a search first).
            loop {
                match look_then_idle(&i, &q, slot, &mut searching) {
                    Next::Park => break,
                    Next::Run | Next::Search => continue,
                    Next::Exit => unreachable!("not closed"),
                }
            }
            loom::thread::park();
            // The park's driver turn woke the item into this LIFO slot.
            let mut wake = WakeQueue::default();
            match i.leave_idle(slot, Instant::now(), false, false, || true, &mut wake) {
                Next::Run | Next::Search => {
                    wake.wake_all();
                    1
                }
                Next::Park => {
                    wake.wake_all();
                    // With no other worker running the limit is free:
                    // the worker runs what it holds.
                    unreachable!("one worker: the limit is free");
                }
                Next::Exit => {
                    wake.wake_all();
                    // Culled: its LIFO task goes home.
                    q.push();
                    let started = if kick_home {
                        match i.notify() {
                            Kick::Start(s) => {
                                let (i2, q2) = (i.clone(), q.clone());
                                Some(loom::thread::spawn(move || {
                                    i2.started(s, loom::thread::current());
                                    worker_thread(&i2, &q2, s, 1)
                                }))
                            }
                            _ => None,
                        }
                    } else {
                        None
                    };
                    let ran = match i.exit(slot) {
                        Next::Exit => 0,
                        _ => worker_thread(&i, &q, slot, 1),
                    };
                    ran + started.map_or(0, |t| t.join().unwrap())
                }
            }
        });
        idle.cull_now(Instant::now()).wake_all();
        // The park's timeout.
        w.thread().unpark();
        let ran = w.join().unwrap();
        assert_eq!(
            ran, 1,
            "stranded item: a culled worker's LIFO task never ran"
        );
    });
}

#[test]
fn loom_a_culled_workers_lifo_task_goes_home_and_runs() {
    culled_with_a_lifo_task(true);
}

/// Queued home without the kick, the item is stranded: the model can fail.
#[test]
#[should_panic(expected = "stranded item")]
fn loom_a_culled_workers_lifo_task_queued_without_a_kick_is_stranded() {
    culled_with_a_lifo_task(false);
}

/// Without the kicked list the model must find the kernel's race: this
/// proves the test above can fail.
#[test]
#[should_panic(expected = "stranded item")]
fn loom_without_kicked_list_the_item_is_stranded() {
    kick_races_cull(false, WakeMode::Deferred);
}

/// Two producers, one worker, no cull: every item runs, and the worker
/// never parks with work queued (loom reports a deadlock if it does). The
/// producers race the worker's search, its last-searcher re-check and its
/// idle re-check.
fn no_lost_wakeup(wake_mode: WakeMode) {
    loom::model(move || {
        let idle = Arc::new(Idle::new(no_cull(wake_mode)));
        let queue = Arc::new(Queue(Items::new(0)));
        let w = one_worker(&idle, &queue, 2);
        let producers: Vec<_> = (0..2)
            .map(|_| {
                let (i, q) = (idle.clone(), queue.clone());
                loom::thread::spawn(move || {
                    q.push();
                    let _ = i.notify();
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(w.join().unwrap(), 2);
    });
}

#[test]
fn loom_no_lost_wakeup() {
    no_lost_wakeup(WakeMode::Deferred);
}

#[test]
fn loom_no_lost_wakeup_under_lock() {
    no_lost_wakeup(WakeMode::UnderLock);
}

/// As above, the worker looking at the queues under the pool lock when
/// it comes back from a park (as a woken worker does).
#[test]
fn loom_no_lost_wakeup_looking_under_the_lock() {
    looking_under_the_lock(|| no_lost_wakeup(WakeMode::Deferred));
}

/// A fence of I3 left out (negative models).
#[derive(Clone, Copy, PartialEq)]
enum Skip {
    None,
    /// The worker's, between going idle and its re-check.
    Idle,
    /// The producer's, between its push and its read of the hint.
    Notify,
}

/// As `no_lost_wakeup`, one producer, the worker on this thread (so that
/// a deadlock is found here: found where a thread joins another, loom's
/// panic aborts the process). `skip`: the fault.
fn one_item_no_lost_wakeup(skip: Skip) {
    loom::model(move || {
        let idle = Arc::new(Idle::new(no_cull(WakeMode::Deferred)));
        idle.idle_skips_fence
            .store(skip == Skip::Idle, std::sync::atomic::Ordering::Relaxed);
        idle.notify_skips_fence
            .store(skip == Skip::Notify, std::sync::atomic::Ordering::Relaxed);
        let queue = Arc::new(Queue(Items::new(0)));
        let Kick::Start(slot) = idle.kick() else {
            panic!("a fresh pool starts a worker")
        };
        idle.started(slot, loom::thread::current());
        let (i, q) = (idle.clone(), queue.clone());
        let producer = loom::thread::spawn(move || {
            q.push();
            let _ = i.notify();
        });
        assert_eq!(worker_thread(&idle, &queue, slot, 1), 1);
        producer.join().unwrap();
    });
}

/// A producer queues an item while the pool closes (the runtime's
/// shutdown: `close`, then the closer drains the queue). The item is
/// taken once: by the worker, by the closer's drain, or by the producer
/// its kick told `Closed` (the pool's `pushed_after_close`, simplified:
/// the bury protocol that decides who drains then is `closing`'s model).
/// A producer that skipped the lock (it saw the worker searching or
/// running) is covered by `close`'s fence against `notify`'s: the drain
/// after `close` sees its item. `close_skips_fence`: the fault.
fn close_races_a_push(close_skips_fence: bool) {
    loom::model(move || {
        let idle = Arc::new(Idle::new(no_cull(WakeMode::Deferred)));
        idle.close_skips_fence
            .store(close_skips_fence, std::sync::atomic::Ordering::Relaxed);
        let queue = Arc::new(Queue(Items::new(0)));
        let w = one_worker(&idle, &queue, 1);
        let (i, q) = (idle.clone(), queue.clone());
        let producer = loom::thread::spawn(move || {
            q.push();
            usize::from(i.notify() == Kick::Closed && q.pop())
        });
        idle.close().wake_all();
        let drained = usize::from(queue.pop());
        let ran = w.join().unwrap();
        let taken = drained + ran + producer.join().unwrap();
        assert_eq!(taken, 1, "a pushed item was left queued on the closed pool");
    });
}

#[test]
fn loom_a_push_racing_close_is_taken_once() {
    close_races_a_push(false);
}

#[test]
#[should_panic(expected = "left queued")]
fn loom_without_the_close_fence_a_push_is_left_queued() {
    close_races_a_push(true);
}

#[test]
fn loom_one_item_no_lost_wakeup() {
    one_item_no_lost_wakeup(Skip::None);
}

/// Without the fence between going idle and the re-check (I3; the
/// re-check runs after the pool lock since 2026-12-06, and the lock
/// orders nothing with a producer that skipped its kick), the model must
/// find the worker parked beside the item.
#[test]
#[should_panic(expected = "deadlock")]
fn loom_without_the_idle_fence_a_wakeup_is_lost() {
    one_item_no_lost_wakeup(Skip::Idle);
}

/// The producer's half: without its fence the model must find the item
/// stranded too. (I4's fence, after a searcher's decrement, has no such
/// model: without it the last searcher's re-check may miss an item whose
/// producer saw it searching, and its idle re-check, fenced, finds it: a
/// later pickup, not a stranded item.)
#[test]
#[should_panic(expected = "deadlock")]
fn loom_without_the_producers_fence_a_wakeup_is_lost() {
    one_item_no_lost_wakeup(Skip::Notify);
}

/// A failed start beside a worker: the pool's one worker is between its
/// search and its idle when a kick (a thread of its own) reserves a
/// second one (nobody searching, nobody idle), a producer skips its kick
/// on the reservation's searcher, and the start fails. The failure must wake that worker if it
/// parked meanwhile (loom reports a deadlock if the item is stranded).
/// Any later start fails too, so the item is the one worker's to run.
/// (With no worker left, a failure always asks the rescuer: a unit test,
/// `idle::tests`; a model of it could not tell a failure that wakes
/// nobody, and was removed.)
fn failed_start_beside_a_worker(unsearch_late: bool) {
    loom::model(move || {
        let mut cfg = config(true, WakeMode::Deferred);
        cfg.max_workers = 2;
        cfg.slots = 2;
        cfg.idle_timeout = Duration::from_secs(3600);
        let idle = Arc::new(Idle::new(cfg));
        idle.failed_start_unsearches_late
            .store(unsearch_late, std::sync::atomic::Ordering::Relaxed);
        let queue = Arc::new(Queue(Items::new(0)));
        let fail_starts = |kick: Kick, idle: &Idle| {
            if let Kick::Start(slot) = kick {
                let _ = idle.start_failed(slot);
            }
        };
        // The worker is this thread, so that a deadlock is found here
        // (found where a thread joins another, loom's panic aborts the
        // process).
        let Kick::Start(a) = idle.kick() else {
            panic!("a fresh pool starts a worker")
        };
        idle.started(a, loom::thread::current());
        let i = idle.clone();
        let reserving = loom::thread::spawn(move || fail_starts(i.kick(), &i));
        let (i, q) = (idle.clone(), queue.clone());
        let producer = loom::thread::spawn(move || {
            q.push();
            fail_starts(i.notify(), &i);
        });
        assert_eq!(worker_thread(&idle, &queue, a, 1), 1);
        reserving.join().unwrap();
        producer.join().unwrap();
    });
}

#[test]
fn loom_a_failed_start_beside_a_worker_wakes_it() {
    failed_start_beside_a_worker(false);
}

/// The failure's searcher taken off after its wake: that wake coalesces
/// on the reservation itself, and the parked worker is never told.
#[test]
#[should_panic(expected = "deadlock")]
fn loom_a_failed_start_that_unsearches_late_strands_the_item() {
    failed_start_beside_a_worker(true);
}

/// A pool of at most two workers (`slots` slots) whose one worker `a`
/// (this thread) is running, not searching, beside a start refused an
/// hour ago: (the pool, its queue, `a`).
fn beside_a_refused_start(slots: usize) -> (Arc<Idle>, Arc<Queue>, usize) {
    let mut cfg = no_cull(WakeMode::Deferred);
    cfg.max_workers = 2;
    cfg.slots = slots;
    cfg.start_backoff = Duration::from_secs(3600);
    let idle = Arc::new(Idle::new(cfg));
    let queue = Arc::new(Queue(Items::new(0)));
    let Kick::Start(a) = idle.kick() else {
        panic!("a fresh pool starts a worker")
    };
    idle.started(a, loom::thread::current());
    // `a` found a task and runs it; a second start is refused.
    idle.stop_searching();
    let Kick::Start(b) = idle.kick() else {
        panic!("room for a second worker, nobody searching")
    };
    assert_eq!(idle.start_failed(b), Kick::Busy);
    (idle, queue, a)
}

/// A worker back from a park that no wakeup ended (a timeout, a driver
/// turn for others: `look_first`) looks at the queue before the pool
/// lock, while a producer pushes and kicks. The item is never stranded:
/// the worker is on the idle list throughout its look (I3), so a push
/// its look missed finds it parked, and the producer's kick, under the
/// lock, either claims it before its lock (it comes back `Kicked`, a
/// searcher) or after (it parked again, claimed and unparked).
#[test]
fn loom_an_unwoken_worker_looking_before_the_lock_strands_nothing() {
    loom::model(|| {
        let idle = Arc::new(Idle::new(no_cull(WakeMode::Deferred)));
        let queue = Arc::new(Queue(Items::new(0)));
        let Kick::Start(a) = idle.kick() else {
            panic!("a fresh pool starts a worker")
        };
        // What the kick unparks: not this thread, which joins the
        // producer (a pending unpark there confuses loom's join).
        let parked = loom::thread::spawn(|| {});
        idle.started(a, parked.thread().clone());
        assert!(idle.stop_searching());
        assert_eq!(
            idle.enter_idle(a, Instant::now(), || queue.has_work()),
            Next::Park
        );
        let producer = push_and_kick(&idle, &queue);
        let mut wake = WakeQueue::default();
        let next = idle.leave_idle(
            a,
            Instant::now(),
            false,
            true,
            || queue.has_work(),
            &mut wake,
        );
        let kick = producer.join().unwrap();
        match next {
            // It saw the item, or was claimed for it.
            Next::Run | Next::Search => {}
            Next::Park => assert!(
                kick == Kick::Woke && idle.slot_state(a) == SlotState::Kicked,
                "stranded: parked again, the push's kick {kick:?}"
            ),
            Next::Exit => panic!("exited with an item queued"),
        }
        parked.join().unwrap();
    });
}

/// A producer thread: pushes an item and kicks the pool (`Idle::notify`);
/// its handle gives the kick.
fn push_and_kick(idle: &Arc<Idle>, queue: &Arc<Queue>) -> loom::thread::JoinHandle<Kick> {
    let (i, q) = (idle.clone(), queue.clone());
    loom::thread::spawn(move || {
        q.push();
        i.notify()
    })
}

/// A pool of at most one worker (two slots: room for an allowance's),
/// its worker `a` started and running a task (not searching): the pool
/// full. Returns the pool, its queue and `a`.
fn one_running_worker() -> (Arc<Idle>, Arc<Queue>, usize) {
    let mut cfg = no_cull(WakeMode::Deferred);
    cfg.max_workers = 1;
    cfg.slots = 2;
    let idle = Arc::new(Idle::new(cfg));
    let queue = Arc::new(Queue(Items::new(0)));
    let Kick::Start(a) = idle.kick() else {
        panic!("a fresh pool starts a worker")
    };
    idle.started(a, loom::thread::current());
    idle.stop_searching();
    (idle, queue, a)
}

/// A push while the worker a CPU-hog allowance started blocks
/// (`block_in_place`) beside the granted poll: the only counted worker is
/// in that poll, none serves the queues and none can start (both slots
/// held), so the pool must go to the rescuer, by the block's kick if its
/// look saw the item, else by the producer's, which reads `UNSERVED` and
/// takes the lock. `ignores_unserved`: the fault, the producer's skip for
/// "every running worker will look" with a worker counted, whatever it
/// does (the item waited for the poll's end or the watchdog's next scan).
fn block_beside_a_granted_poll(ignores_unserved: bool) {
    loom::model(move || {
        let (idle, queue, a) = one_running_worker();
        idle.running_skip_ignores_unserved
            .store(ignores_unserved, std::sync::atomic::Ordering::Relaxed);
        // `a`'s poll runs past the threshold with work queued: the
        // allowance starts `b`, which takes that work and runs it.
        let Some(Kick::Start(b)) = idle.grant_hog(a, true, || true) else {
            panic!("the allowance starts a worker")
        };
        idle.started(b, loom::thread::current());
        idle.stop_searching();
        let producer = push_and_kick(&idle, &queue);
        let blocked = idle.block(b, true, || queue.has_work());
        let pushed = producer.join().unwrap();
        assert!(
            blocked == Kick::Mayday || pushed == Kick::Mayday,
            "stranded: block {blocked:?}, push {pushed:?}"
        );
    });
}

#[test]
fn loom_a_block_beside_a_granted_poll_asks_the_rescuer() {
    block_beside_a_granted_poll(false);
}

#[test]
#[should_panic(expected = "stranded")]
fn loom_negative_a_skip_with_only_granted_workers_strands_the_item() {
    block_beside_a_granted_poll(true);
}

/// A push racing a CPU-hog grant: the pool's one worker is in a long
/// poll (counted, serving, the pool full), a producer queues an item while
/// the watchdog grants that poll its allowance. The item does not wait for
/// the poll's end or the watchdog's next scan: the grant publishes the
/// room it makes, fences and looks at the queues (seeing the item, it
/// starts a worker), and the producer pushes, fences and reads the hint
/// (seeing the grant, it kicks under the lock, which starts one).
/// `skips_fence`: the fault, the grant's look without its fence (both may
/// miss the other: the producer reads the pool full and skips, the grant
/// finds no work).
fn push_racing_a_grant(skips_fence: bool) {
    loom::model(move || {
        let (idle, queue, a) = one_running_worker();
        idle.grant_skips_fence
            .store(skips_fence, std::sync::atomic::Ordering::Relaxed);
        let producer = push_and_kick(&idle, &queue);
        let granted = idle.grant_hog(a, true, || queue.has_work());
        let pushed = producer.join().unwrap();
        assert!(
            matches!(granted, Some(Kick::Start(_))) || matches!(pushed, Kick::Start(_)),
            "stranded: grant {granted:?}, push {pushed:?}"
        );
    });
}

#[test]
fn loom_a_push_racing_a_grant_is_served() {
    push_racing_a_grant(false);
}

#[test]
#[should_panic(expected = "stranded")]
fn loom_without_the_grants_fence_a_push_waits_for_the_poll() {
    push_racing_a_grant(true);
}

/// A push while a refused start backs off: the pool's one worker runs
/// (it serves the queues), a start beside it was refused an hour ago, and
/// a producer queues an item while the worker searches, idles and parks.
/// The producer's kick skips the lock only while no worker is parked (the
/// worker's re-check then sees the item, I3); with one parked it wakes it.
/// `ignores_parked`: the fault, a skip on the back-off alone (loom reports
/// a deadlock: the worker parked before the push, and nobody wakes it).
fn push_while_a_start_backs_off(ignores_parked: bool) {
    loom::model(move || {
        let (idle, queue, a) = beside_a_refused_start(2);
        idle.backoff_skip_ignores_parked
            .store(ignores_parked, std::sync::atomic::Ordering::Relaxed);
        let (i, q) = (idle.clone(), queue.clone());
        let producer = loom::thread::spawn(move || {
            q.push();
            let kick = i.notify();
            assert!(!matches!(kick, Kick::Start(_) | Kick::Mayday), "{kick:?}");
        });
        // The worker is this thread, so that a deadlock is found here
        // (found in a spawned thread, loom's panic aborts the process).
        assert_eq!(worker(&idle, &queue, a, 1, false), 1);
        producer.join().unwrap();
    });
}

/// A push while a refused start backs off and the pool's one serving
/// worker blocks (`block_in_place`): no worker can start, so the pool must
/// go to the rescuer, by the block's kick if its look after its fence saw
/// the item, else by the producer's, which then reads `UNSERVED` and takes
/// the lock. `ignores_unserved`: the fault, a skip on the back-off with
/// nobody serving (neither asks the rescuer).
fn block_while_a_start_backs_off(ignores_unserved: bool) {
    loom::model(move || {
        let (idle, queue, a) = beside_a_refused_start(3);
        idle.backoff_skip_ignores_unserved
            .store(ignores_unserved, std::sync::atomic::Ordering::Relaxed);
        let producer = push_and_kick(&idle, &queue);
        let blocked = idle.block(a, true, || queue.has_work());
        let pushed = producer.join().unwrap();
        assert!(
            blocked == Kick::Mayday || pushed == Kick::Mayday,
            "stranded: block {blocked:?}, push {pushed:?}"
        );
    });
}

#[test]
fn loom_a_block_while_a_start_backs_off_asks_the_rescuer() {
    block_while_a_start_backs_off(false);
}

#[test]
#[should_panic(expected = "stranded")]
fn loom_a_backoff_skip_with_nobody_serving_strands_the_item() {
    block_while_a_start_backs_off(true);
}

#[test]
fn loom_a_push_while_a_start_backs_off_is_run() {
    push_while_a_start_backs_off(false);
}

#[test]
#[should_panic(expected = "deadlock")]
fn loom_a_backoff_skip_beside_a_parked_worker_strands_the_item() {
    push_while_a_start_backs_off(true);
}

/// `worker`'s loop with step 9 (step down) after each item (and before
/// the first, for a worker back from its poll in `block_in_place`), as the
/// real worker checks after a poll; the worker
/// that runs the `total`th item closes the pool, so that the others exit.
/// `checked` off, the step down trusts the hint read before the lock.
#[allow(clippy::too_many_arguments)]
fn limited_worker(
    idle: &Idle,
    queue: &Queue,
    slot: usize,
    ran: &Items,
    total: usize,
    mut searching: bool,
    mut check_limit: bool,
    checked: bool,
    mut parked: bool,
) {
    'work: loop {
        // 1. Work, with 1b. (step 9) between items; `parked`: the worker
        // starts on the idle list, parked.
        let mut stepped_down = std::mem::take(&mut parked);
        while !stepped_down {
            if check_limit && idle.over_limit() {
                let next = if checked {
                    idle.step_down(slot, Instant::now())
                } else {
                    step_down_unchecked(idle, slot)
                };
                if next == Next::Park {
                    stepped_down = true;
                    break;
                }
            }
            if !queue.pop() {
                break;
            }
            if searching {
                searching = false;
                if idle.stop_searching() && queue.has_work() {
                    let _ = idle.notify();
                }
            }
            if ran.fetch_add(1, Ordering::SeqCst) + 1 == total {
                idle.close().wake_all();
                return;
            }
            // As the worker: after a poll (never while searching).
            check_limit = true;
        }
        check_limit = false;
        if !stepped_down {
            match look_then_idle(idle, queue, slot, &mut searching) {
                Next::Park => {}
                Next::Exit => return,
                Next::Run | Next::Search => continue 'work,
            }
        }
        if park_until_woken(idle, queue, slot, &mut searching) == Next::Exit {
            return;
        }
    }
}

/// Step 9 without its check under the lock (the negative model): the
/// worker parks because the hint said "over" when it looked.
fn step_down_unchecked(idle: &Idle, slot: usize) -> Next {
    let mut st = idle.lock();
    if st.closed {
        return Next::Run;
    }
    st.slots[slot].state = SlotState::Idle;
    st.slots[slot].idle_since = Instant::now();
    st.idle.push(slot);
    idle.publish(
        &st,
        Change {
            parked: 1,
            ..Change::default()
        },
    );
    Next::Park
}

/// A pool of one worker (two slots) whose worker `a`, started on this
/// thread, is in `block_in_place` while a kick reserved its replacement
/// `b` (not started yet: the caller's thread for it calls `started`).
fn blocked_and_replaced() -> (Arc<Idle>, usize, usize) {
    let mut cfg = config(true, WakeMode::Deferred);
    cfg.slots = 2;
    cfg.idle_timeout = Duration::from_secs(3600);
    let idle = Arc::new(Idle::new(cfg));
    let Kick::Start(a) = idle.kick() else {
        panic!("a fresh pool starts a worker")
    };
    idle.started(a, loom::thread::current());
    assert!(idle.stop_searching());
    assert_eq!(idle.block(a, true, || false), Kick::Busy);
    let Kick::Start(b) = idle.kick() else {
        panic!("a blocked worker's replacement starts")
    };
    (idle, a, b)
}

/// A pool of one worker: worker `a` (this thread) comes back from
/// `block_in_place` beside the replacement `b` a kick started, so the
/// pool is over its limit (unless `b` idled first), while a producer
/// queues two items (its kicks skipped: the running workers fill the
/// limit). `a` steps down; every
/// item runs (loom reports a deadlock if both workers park with work
/// queued).
fn over_the_limit(checked: bool) {
    loom::model(move || {
        let (idle, a, b) = blocked_and_replaced();
        let queue = Arc::new(Queue(Items::new(0)));
        let ran = Arc::new(Items::new(0));
        let (i, q, r) = (idle.clone(), queue.clone(), ran.clone());
        let wb = loom::thread::spawn(move || {
            i.started(b, loom::thread::current());
            limited_worker(&i, &q, b, &r, 2, true, false, checked, false);
        });
        let (i, q) = (idle.clone(), queue.clone());
        let producer = loom::thread::spawn(move || {
            for _ in 0..2 {
                q.push();
                let kick = i.notify();
                assert!(!matches!(kick, Kick::Start(_) | Kick::Mayday), "{kick:?}");
            }
        });
        // Over the limit unless `b` found nothing and idled already.
        let over = idle.unblock(a);
        limited_worker(&idle, &queue, a, &ran, 2, false, over, checked, false);
        producer.join().unwrap();
        wb.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn loom_a_worker_over_the_limit_steps_down_without_stranding_work() {
    over_the_limit(true);
}

/// Without the check under the lock, both workers may step down on the
/// same stale "over" and park with the items queued.
#[test]
#[should_panic(expected = "deadlock")]
fn loom_a_step_down_on_a_stale_hint_strands_work() {
    over_the_limit(false);
}

/// A worker that stepped down (`a`, this thread: the pool is full while
/// `b` runs) comes back from a park, as from a driver turn that woke a
/// task into its own LIFO slot, where no other worker looks. Kept parked
/// by the limit, it hands the task to the queue and kicks, as a producer
/// does (`pool::worker`); `b` meanwhile runs, searches and idles. The task
/// runs (loom reports a deadlock if both park with it queued, or with it
/// still in `a`'s slot). Without the kick (`hand_off(false)`), loom finds
/// that deadlock (`b` idled before the task was queued); that run is not
/// kept as a negative test because loom 0.7 then aborts the process while
/// unwinding (a panic in a destructor of its own), tried by hand.
fn hand_off(kick: bool) {
    loom::model(move || {
        let (idle, a, b) = blocked_and_replaced();
        let queue = Arc::new(Queue(Items::new(0)));
        let ran = Arc::new(Items::new(0));
        assert!(idle.unblock(a));
        assert_eq!(idle.step_down(a, Instant::now()), Next::Park);
        let (i, q, r) = (idle.clone(), queue.clone(), ran.clone());
        let wb = loom::thread::spawn(move || {
            i.started(b, loom::thread::current());
            limited_worker(&i, &q, b, &r, 1, true, false, true, false);
        });
        // Back from a park with a task in its own slot.
        let mut wake = WakeQueue::default();
        let next = idle.leave_idle(a, Instant::now(), false, false, || true, &mut wake);
        wake.wake_all();
        match next {
            // Claimed, or under the limit: it runs its own task.
            Next::Search | Next::Run => {
                if next == Next::Search {
                    let _ = idle.stop_searching();
                }
                if ran.fetch_add(1, Ordering::SeqCst) + 1 == 1 {
                    idle.close().wake_all();
                }
            }
            Next::Park => {
                queue.push();
                if kick {
                    let kick = idle.notify();
                    assert!(!matches!(kick, Kick::Start(_) | Kick::Mayday), "{kick:?}");
                }
                limited_worker(&idle, &queue, a, &ran, 1, false, false, true, true);
            }
            Next::Exit => unreachable!("the pool is open"),
        }
        wb.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn loom_a_full_pools_idle_worker_hands_its_woken_task_off() {
    hand_off(true);
}

/// The pool's one worker `a` (this thread) enters `block_in_place` while a
/// producer queues an item: the producer's kick is skipped while `a` fills
/// the limit, so the block must start the replacement if it sees the item,
/// and the producer's kick must if the block did not (it no longer counts
/// `a`); never neither, and never both (one start at a time). The
/// replacement then runs the item (here on this thread too: `a` stays
/// blocked).
fn block_racing_a_push(skip_fence: bool) {
    loom::model(move || {
        let mut cfg = config(true, WakeMode::Deferred);
        cfg.slots = 2;
        cfg.idle_timeout = Duration::from_secs(3600);
        let idle = Arc::new(Idle::new(cfg));
        idle.block_skips_fence
            .store(skip_fence, std::sync::atomic::Ordering::Relaxed);
        let queue = Arc::new(Queue(Items::new(0)));
        let Kick::Start(a) = idle.kick() else {
            panic!("a fresh pool starts a worker")
        };
        idle.started(a, loom::thread::current());
        // `a` found a task and runs it.
        assert!(idle.stop_searching());
        let producer = push_and_kick(&idle, &queue);
        let blocked = idle.block(a, true, || queue.has_work());
        let pushed = producer.join().unwrap();
        let starts: Vec<usize> = [&blocked, &pushed]
            .into_iter()
            .filter_map(|k| match k {
                Kick::Start(slot) => Some(*slot),
                _ => None,
            })
            .collect();
        assert_eq!(starts.len(), 1, "block: {blocked:?}, push: {pushed:?}");
        let b = starts[0];
        idle.started(b, loom::thread::current());
        let ran = Items::new(0);
        limited_worker(&idle, &queue, b, &ran, 1, true, false, true, false);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn loom_a_block_racing_a_push_starts_one_replacement() {
    block_racing_a_push(false);
}

/// Without the fence between the block's published count and its look at
/// the queues, both may miss the other: nobody starts the replacement.
#[test]
#[should_panic(expected = "block: Busy")]
fn loom_a_block_without_its_fence_strands_the_item() {
    block_racing_a_push(true);
}

/// A pool of two workers: the first started (searching, then idle), a
/// producer queueing two items with a kick each, the second worker started
/// by whichever kick finds none idle. Both items run, and no worker is
/// left parked with one queued (loom reports the deadlock): the kicked
/// list and the search hand-off with more than one worker, which the
/// one-worker models above cannot show.
#[test]
fn loom_two_workers_two_pushes_run_both() {
    two_workers_two_pushes(super::super::hint::SEARCH_FLOOR);
}

/// [`loom_two_workers_two_pushes_run_both`] with the searchers' floor at
/// `search_floor` (two: one of the two workers may search).
fn two_workers_two_pushes(search_floor: usize) {
    loom::model(move || {
        let mut cfg = config(true, WakeMode::Deferred);
        cfg.max_workers = 2;
        cfg.slots = 2;
        cfg.idle_timeout = Duration::from_secs(3600);
        let idle = Arc::new(Idle::new(cfg));
        idle.search_floor.store(search_floor, Ordering::Relaxed);
        let queue = Arc::new(Queue(Items::new(0)));
        let ran = Arc::new(Items::new(0));
        let start = |slot: usize, idle: &Arc<Idle>, queue: &Arc<Queue>, ran: &Arc<Items>| {
            let (i, q, r) = (idle.clone(), queue.clone(), ran.clone());
            loom::thread::spawn(move || {
                i.started(slot, loom::thread::current());
                limited_worker(&i, &q, slot, &r, 2, true, false, true, false);
            })
        };
        let Kick::Start(a) = idle.kick() else {
            panic!("a fresh pool starts a worker")
        };
        let wa = start(a, &idle, &queue, &ran);
        let (i, q, r) = (idle.clone(), queue.clone(), ran.clone());
        let producer = loom::thread::spawn(move || {
            let mut started = Vec::new();
            for _ in 0..2 {
                q.push();
                if let Kick::Start(slot) = i.notify() {
                    started.push(start(slot, &i, &q, &r));
                }
            }
            for t in started {
                t.join().unwrap();
            }
        });
        producer.join().unwrap();
        wa.join().unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 2);
    });
}

/// Two workers, of whom one may search (the searchers' floor lowered to
/// two, as at most half of many workers may: `try_start_searching`), and
/// two pushes: a worker refused the search skips the scan and goes to
/// enter idle, whose re-check (I3), or the searcher's own (I4), finds
/// what was queued meanwhile; both items run. (With the floor of four, no
/// model of two workers is ever refused; the executions here are, which
/// the model checks.)
#[test]
fn loom_a_worker_refused_the_search_strands_nothing() {
    REFUSED.with(|r| r.set(0));
    two_workers_two_pushes(2);
    assert!(
        REFUSED.with(|r| r.get()) > 0,
        "no execution refused a search: the model does not test the limit"
    );
}

/// A wake of an idle worker with no work for it ([`Idle::wake_idle`], the
/// I/O driver handed over) racing a producer's push and kick: the wake
/// claims the worker as a searcher, on which the producer's kick may
/// coalesce, so the worker's search, or its stop's re-check, must find
/// the item. The item runs, and the worker never parks with it queued
/// (loom reports the deadlock).
#[test]
fn loom_a_wake_idle_racing_a_push_strands_nothing() {
    loom::model(|| {
        let idle = Arc::new(Idle::new(no_cull(WakeMode::Deferred)));
        let queue = Arc::new(Queue(Items::new(0)));
        let w = one_worker(&idle, &queue, 1);
        let i = idle.clone();
        let waker = loom::thread::spawn(move || {
            let _ = i.wake_idle();
        });
        let (i, q) = (idle.clone(), queue.clone());
        let producer = loom::thread::spawn(move || {
            q.push();
            let _ = i.notify();
        });
        producer.join().unwrap();
        waker.join().unwrap();
        assert_eq!(w.join().unwrap(), 1);
    });
}
