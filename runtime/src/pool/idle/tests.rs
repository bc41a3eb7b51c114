//! Unit tests of each step of the protocol, one thread driving it.

use super::*;

/// An unparker for slot states that never park (the tests drive the
/// protocol from one thread).
fn unparker() -> Unparker {
    crate::pool::park::Parker::new().unparker()
}

fn config(max_workers: usize) -> IdleConfig {
    IdleConfig {
        max_workers,
        slots: 2 * max_workers,
        idle_timeout: Duration::from_secs(300),
        min_idle: 2,
        wake_mode: WakeMode::Deferred,
        start_backoff: Duration::from_millis(100),
        kicked_list: true,
    }
}

/// `config(max_workers)` whose culls take an idle worker at once, keeping
/// `min_idle`.
fn culling_at_once(max_workers: usize, min_idle: usize) -> IdleConfig {
    IdleConfig {
        idle_timeout: Duration::ZERO,
        min_idle,
        ..config(max_workers)
    }
}

/// Starts `n` workers, each running (a new worker searches first, finds
/// nothing, and stops); returns their slots.
fn running_workers(idle: &Idle, n: usize) -> Vec<usize> {
    (0..n)
        .map(|_| {
            let Kick::Start(slot) = idle.kick() else {
                panic!("expected a start")
            };
            idle.started(slot, unparker());
            idle.stop_searching();
            slot
        })
        .collect()
}

/// Starts `n` workers (slots 0..n) and idles them in order.
fn idle_workers(idle: &Idle, n: usize, now: Instant) {
    running_workers(idle, n);
    for slot in 0..n {
        assert_eq!(idle.enter_idle(slot, now, || false), Next::Park);
    }
}

/// A worker searching does not count as coming to the I/O driver: it was
/// kicked, most likely for work, which it runs first (counted, an attend
/// that found only a worker just started for a long task started nobody
/// elsewhere, and a timer waited for that task). `wake_idle` unparks a
/// parked worker beside it, without a claim (a claim coalesces on the
/// searcher), and with none parked wakes nobody and says so.
#[test]
fn a_searching_worker_does_not_count_as_coming_to_the_driver() {
    let idle = Idle::new(config(4));
    let now = Instant::now();
    idle_workers(&idle, 2, now);
    assert_eq!(idle.notify(), Kick::Woke);
    assert_eq!(idle.slot_state(1), SlotState::Kicked);
    assert_eq!(idle.hint().searching(), 1);
    let (unparks, kicks) = {
        let c = idle.snapshot().counters;
        (c.unparks, c.kicks)
    };
    assert!(idle.may_wake_idle() && idle.wake_idle());
    let c = idle.snapshot().counters;
    assert_eq!(c.unparks, unparks + 1, "the parked worker is woken");
    assert_eq!(c.kicks, kicks, "no kick counted: none was made");
    assert_eq!(idle.slot_state(0), SlotState::Idle, "not claimed");
    assert_eq!(idle.hint().searching(), 1);
    // The woken worker finds work and runs it: only the searcher is left,
    // and nobody comes.
    let mut wake = WakeQueue::default();
    assert_eq!(
        idle.leave_idle(0, now, false, false, || true, &mut wake),
        Next::Run
    );
    assert!(!idle.may_wake_idle());
    assert!(!idle.wake_idle());
}

#[test]
fn kick_takes_the_most_recently_idle_worker_and_coalesces() {
    let idle = Idle::new(config(4));
    let now = Instant::now();
    idle_workers(&idle, 3, now);
    assert_eq!(idle.notify(), Kick::Woke, "nobody searches, one is parked");
    assert_eq!(
        idle.slot_state(2),
        SlotState::Kicked,
        "LIFO: last idled first"
    );
    assert_eq!(idle.hint().searching(), 1, "a kicked worker searches");
    // The next producer sees the searcher: no lock, no kick.
    let locks = idle.snapshot().counters.lock_acquisitions;
    assert_eq!(idle.notify(), Kick::Skipped);
    assert_eq!(idle.snapshot().counters.lock_acquisitions, locks);
    // Under the lock, a kick coalesces on the kicked worker.
    assert_eq!(idle.kick(), Kick::Coalesced);
    assert_eq!(idle.slot_state(1), SlotState::Idle);
    let snap = idle.snapshot();
    assert_eq!((snap.nr_idle, snap.nr_kicked), (2, 1));
    assert_eq!(snap.counters.unparks, 1);
    assert_eq!(snap.counters.coalesced_kicks, 1);
    let mut wq = WakeQueue::default();
    assert_eq!(
        idle.leave_idle(2, now, true, false, || true, &mut wq),
        Next::Search
    );
    assert_eq!(idle.slot_state(2), SlotState::Running);
    // It finds the work and stops searching: the last searcher.
    assert!(idle.stop_searching());
    // The next kick claims the next idle worker.
    assert_eq!(idle.notify(), Kick::Woke);
    assert_eq!(idle.slot_state(1), SlotState::Kicked);
}

#[test]
fn a_producer_takes_no_lock_while_every_worker_runs() {
    let idle = Idle::new(config(2));
    for _ in 0..2 {
        let Kick::Start(slot) = idle.notify() else {
            panic!()
        };
        idle.started(slot, unparker());
        idle.stop_searching();
    }
    let locks = idle.snapshot().counters.lock_acquisitions;
    for _ in 0..100 {
        assert_eq!(idle.notify(), Kick::Skipped, "two running, at the maximum");
    }
    assert_eq!(idle.snapshot().counters.lock_acquisitions, locks);
}

#[test]
fn at_most_half_the_workers_search() {
    let idle = Idle::new(config(4));
    for _ in 0..4 {
        let Kick::Start(slot) = idle.kick() else {
            panic!()
        };
        idle.started(slot, unparker());
        idle.stop_searching();
    }
    assert!(idle.try_start_searching());
    assert!(idle.try_start_searching());
    assert!(!idle.try_start_searching(), "2 of 4 search");
    assert!(!idle.stop_searching());
    assert!(idle.stop_searching(), "the last one re-checks the queues");
}

#[test]
fn starts_are_one_at_a_time_up_to_the_maximum() {
    let idle = Idle::new(config(2));
    let Kick::Start(a) = idle.kick() else {
        panic!()
    };
    assert_eq!(idle.notify(), Kick::Skipped, "the starting worker searches");
    assert_eq!(idle.kick(), Kick::Coalesced);
    idle.started(a, unparker());
    assert!(idle.stop_searching());
    let Kick::Start(b) = idle.kick() else {
        panic!()
    };
    assert_ne!(a, b);
    idle.started(b, unparker());
    idle.stop_searching();
    assert_eq!(idle.kick(), Kick::Busy, "at the maximum");
    assert!(!idle.hint().can_start());
}

#[test]
fn a_refused_start_backs_off_and_a_pool_without_workers_sends_a_mayday() {
    let mut cfg = config(2);
    cfg.start_backoff = Duration::from_secs(3600);
    let idle = Idle::new(cfg);
    let Kick::Start(a) = idle.kick() else {
        panic!()
    };
    assert_eq!(idle.start_failed(a), Kick::Mayday, "no worker at all");
    let snap = idle.snapshot();
    assert_eq!((snap.nr_workers, snap.nr_searching), (0, 0));
    // Backing off: kicks start nothing and keep sending maydays.
    assert_eq!(idle.notify(), Kick::Mayday);
    assert_eq!(idle.kick(), Kick::Mayday);
    assert_eq!(idle.snapshot().nr_workers, 0);

    // With a worker running, a refused start leaves the work to it. (The
    // back-off of an hour: the default 100 ms may pass between two calls
    // on a loaded machine.)
    let mut cfg = config(2);
    cfg.start_backoff = Duration::from_secs(3600);
    let idle = Idle::new(cfg);
    let Kick::Start(a) = idle.kick() else {
        panic!()
    };
    idle.started(a, unparker());
    idle.stop_searching();
    let Kick::Start(b) = idle.kick() else {
        panic!()
    };
    assert_eq!(idle.start_failed(b), Kick::Busy);
    assert_eq!(idle.kick(), Kick::Busy, "backing off");
}

/// While a refused start backs off, a producer's kick takes no lock when
/// a worker serves the queues and none is parked (it would end `Busy`):
/// the OS refusing threads cost a lock per item. With a worker parked it
/// still wakes it, and with none serving it still hands the pool to the
/// rescuer.
#[test]
fn while_a_start_backs_off_a_kick_skips_the_lock_only_where_a_worker_will_look() {
    let mut cfg = config(2);
    cfg.start_backoff = Duration::from_secs(3600);
    let idle = Idle::new(cfg);
    let [a] = running_workers(&idle, 1)[..] else {
        panic!()
    };
    let Kick::Start(b) = idle.kick() else {
        panic!()
    };
    assert_eq!(idle.start_failed(b), Kick::Busy);
    assert!(idle.hint().backing_off() && !idle.hint().unserved());
    // Room, but no start before the deadline: the driver's attend looks
    // for a pool that may start one elsewhere.
    assert!(idle.hint().can_start() && !idle.may_start());
    let locks = idle.snapshot().counters.lock_acquisitions;
    for _ in 0..100 {
        assert_eq!(idle.notify(), Kick::Skipped);
    }
    assert_eq!(idle.snapshot().counters.lock_acquisitions, locks);

    // The worker parks: the next kick wakes it.
    assert_eq!(idle.enter_idle(a, Instant::now(), || false), Next::Park);
    assert_eq!(idle.notify(), Kick::Woke);
    let mut wake = WakeQueue::default();
    assert_eq!(
        idle.leave_idle(a, Instant::now(), false, false, || true, &mut wake),
        Next::Search
    );
    idle.stop_searching();

    // Its poll is granted a CPU-hog allowance: nobody serves the queues,
    // and a kick (the slot the allowance would start is backing off) asks
    // the rescuer.
    assert_eq!(idle.serving(), 1);
    assert_eq!(idle.grant_hog(a, true, || false), Some(Kick::Busy));
    assert!(idle.hint().unserved());
    assert_eq!(idle.serving(), 0);
    assert_eq!(idle.notify(), Kick::Mayday);
    idle.revoke_hog(a);
    assert!(!idle.hint().unserved());
    assert_eq!(idle.serving(), 1);
    assert_eq!(idle.notify(), Kick::Skipped);
}

/// The back-off ends for the lock-free check too: a kick after the
/// deadline takes the lock and starts a worker, and `BACKING_OFF` goes.
#[test]
fn after_the_backoff_a_kick_that_skipped_the_lock_starts_a_worker() {
    let mut cfg = config(2);
    cfg.start_backoff = Duration::from_millis(1);
    let idle = Idle::new(cfg);
    running_workers(&idle, 1);
    let Kick::Start(b) = idle.kick() else {
        panic!()
    };
    assert_eq!(idle.start_failed(b), Kick::Busy);
    assert!(idle.hint().backing_off());
    std::thread::sleep(Duration::from_millis(5));
    assert!(idle.may_start());
    assert!(matches!(idle.notify(), Kick::Start(_)));
    assert!(!idle.hint().backing_off());
}

#[test]
fn after_the_backoff_a_kick_starts_a_worker_again() {
    let mut cfg = config(1);
    cfg.start_backoff = Duration::from_millis(1);
    let idle = Idle::new(cfg);
    let Kick::Start(a) = idle.kick() else {
        panic!()
    };
    let _ = idle.start_failed(a);
    std::thread::sleep(Duration::from_millis(5));
    assert!(matches!(idle.kick(), Kick::Start(_)));
}

/// A refused start never asks for another start at once, however long
/// the failing thread was held up between setting the back-off and
/// reading the clock again (here: a back-off of zero, as if the thread had
/// been preempted for all of it). `Pool::start_worker` would otherwise
/// start again from inside the failure (it asserted that it cannot).
#[test]
fn a_refused_start_never_asks_for_a_start_at_once() {
    let mut cfg = config(2);
    cfg.start_backoff = Duration::ZERO;
    let idle = Idle::new(cfg);
    let Kick::Start(a) = idle.kick() else {
        panic!()
    };
    idle.started(a, unparker());
    idle.stop_searching();
    let Kick::Start(b) = idle.kick() else {
        panic!()
    };
    assert_eq!(idle.start_failed(b), Kick::Busy);
}

/// The re-check runs outside the pool lock (it reads every worker's
/// deque): a kick or a cull may come between the worker's idle and its
/// re-check (here, inside it: under the lock this would deadlock). A kick
/// makes it a searcher; a cull is undone when it saw work, which its
/// producer may have left to it (it saw the worker running).
#[test]
fn enter_idle_rechecks_outside_the_lock_and_keeps_a_worker_culled_meanwhile() {
    let idle = Idle::new(culling_at_once(2, 0));
    let Kick::Start(a) = idle.kick() else {
        panic!()
    };
    idle.started(a, unparker());
    idle.stop_searching();
    let next = idle.enter_idle(a, Instant::now(), || {
        let _ = idle.cull_now(Instant::now());
        assert_eq!(idle.slot_state(a), SlotState::Culled);
        true
    });
    assert_eq!(next, Next::Run, "it stays for the work it saw");
    assert_eq!(idle.slot_state(a), SlotState::Running);
    let snap = idle.snapshot();
    assert_eq!((snap.nr_workers, snap.nr_idle), (1, 0));
    assert_eq!(snap.counters.workers_culled, 1, "a counter: never down");
    assert_eq!(idle.hint().parked(), 0);
    // A kick in the same place: it searches.
    let next = idle.enter_idle(a, Instant::now(), || {
        assert_eq!(idle.kick(), Kick::Woke);
        true
    });
    assert_eq!(next, Next::Search);
    assert_eq!(idle.slot_state(a), SlotState::Running);
    assert_eq!(idle.hint().searching(), 1);
    assert!(idle.stop_searching());
    // Nothing seen: it stays culled, and exits.
    assert_eq!(
        idle.enter_idle(a, Instant::now(), || {
            let _ = idle.cull_now(Instant::now());
            false
        }),
        Next::Park
    );
    assert_eq!(idle.slot_state(a), SlotState::Culled);
}

/// A worker culled between its idle and its re-check, with every free
/// slot held by culled threads: a kick in that window reserves a worker
/// for the first of them to exit. The re-check that saw work must leave
/// it to that reservation (its exit drafts it), not stay beside it: the
/// reservation would count a worker and a searcher for good.
#[test]
fn a_worker_culled_before_its_recheck_takes_up_a_kicks_reservation() {
    // Two workers, two slots; the cull takes both, so the limit is not
    // what stops this one.
    let idle = Idle::new(IdleConfig {
        slots: 2,
        ..culling_at_once(2, 0)
    });
    let now = Instant::now();
    let slots = running_workers(&idle, 2);
    let (a, b) = (slots[1], slots[0]);
    assert_eq!(idle.enter_idle(b, now, || false), Next::Park);
    let next = idle.enter_idle(a, now, || {
        let _ = idle.cull_now(Instant::now());
        assert_eq!(idle.slot_state(b), SlotState::Culled);
        assert_eq!(idle.kick(), Kick::Busy, "reserved for a culled thread");
        true
    });
    assert_eq!(next, Next::Exit);
    assert_eq!(idle.exit(a), Next::Search, "drafted");
    assert_eq!(idle.slot_state(a), SlotState::Running);
    let snap = idle.snapshot();
    assert_eq!(snap.nr_workers, 1);
    assert_eq!(
        idle.hint().searching(),
        1,
        "the kick's searcher, this worker"
    );
    assert!(idle.stop_searching());
}

/// A worker started on a CPU-hog allowance (the pool at its maximum plus
/// one), culled between its idle and its re-check after the allowance was
/// revoked, with another worker idle: the workers are at the maximum, the
/// others running are under the limit. It must not stay (the pool would
/// count a worker over its maximum); the idle one re-checks (I3).
#[test]
fn a_worker_culled_before_its_recheck_stays_only_under_the_maximum() {
    let idle = Idle::new(culling_at_once(2, 1));
    let slots = running_workers(&idle, 2);
    let (a, b) = (slots[0], slots[1]);
    // `a` hogs its CPU: a third worker on the allowance.
    let Some(Kick::Start(c)) = idle.grant_hog(a, true, || true) else {
        panic!("the allowance starts a worker")
    };
    idle.started(c, unparker());
    idle.stop_searching();
    assert_eq!(idle.snapshot().nr_workers, 3);
    let next = idle.enter_idle(c, Instant::now(), || {
        // `b` idles after `c` (so `c` is the oldest idle), the allowance
        // goes, and a cull takes `c` (`b` stays: the one idle kept).
        assert_eq!(idle.enter_idle(b, Instant::now(), || false), Next::Park);
        idle.revoke_hog(a);
        let _ = idle.cull_now(Instant::now());
        assert_eq!(idle.slot_state(c), SlotState::Culled);
        assert_eq!(idle.slot_state(b), SlotState::Idle);
        true
    });
    assert_eq!(next, Next::Exit, "two workers, the maximum: it leaves");
    assert_eq!(idle.snapshot().nr_workers, 2);
    assert_eq!(idle.exit(c), Next::Exit);
}

#[test]
fn enter_idle_rechecks_the_queues() {
    let idle = Idle::new(config(1));
    let Kick::Start(a) = idle.kick() else {
        panic!()
    };
    idle.started(a, unparker());
    idle.stop_searching();
    assert_eq!(idle.enter_idle(a, Instant::now(), || true), Next::Run);
    assert_eq!(idle.slot_state(a), SlotState::Running);
    let snap = idle.snapshot();
    assert_eq!(snap.nr_idle, 0);
    assert_eq!(idle.hint().parked(), 0);
}

#[test]
fn cull_keeps_two_idle_plus_a_quarter_of_the_busy_and_never_the_kicked() {
    let mut cfg = config(8);
    cfg.idle_timeout = Duration::from_millis(10);
    let idle = Idle::new(cfg);
    let t0 = Instant::now();
    idle_workers(&idle, 6, t0);
    // Worker 5 (the most recent) is kicked: it must survive the cull.
    assert_eq!(idle.kick(), Kick::Woke);
    assert_eq!(idle.slot_state(5), SlotState::Kicked);
    // Not yet expired: nothing culled.
    assert!(idle.cull_now(t0).is_empty());
    let later = t0 + Duration::from_millis(20);
    let woken = idle.cull_now(later);
    // 6 idle (5 + 1 kicked), 0 busy: cull down to min_idle = 2 idle.
    let snap = idle.snapshot();
    assert_eq!(snap.nr_idle + snap.nr_kicked, 2, "{snap:?}");
    assert_eq!(snap.counters.workers_culled, 4);
    assert!(!woken.is_empty());
    // The oldest went first; the kicked one stayed.
    for slot in 0..4 {
        assert_eq!(idle.slot_state(slot), SlotState::Culled, "slot {slot}");
    }
    assert_eq!(idle.slot_state(4), SlotState::Idle);
    assert_eq!(idle.slot_state(5), SlotState::Kicked);
    let h = idle.hint();
    assert_eq!((h.parked(), h.workers(), h.searching()), (1, 2, 1));
    assert!(h.can_start());
}

#[test]
fn busy_workers_keep_idle_ones_alive() {
    let mut cfg = config(16);
    cfg.idle_timeout = Duration::ZERO;
    let idle = Idle::new(cfg);
    let now = Instant::now();
    running_workers(&idle, 12);
    for slot in 0..4 {
        assert_eq!(idle.enter_idle(slot, now, || false), Next::Park);
    }
    // 4 idle, 8 busy: (4 - 2) * 4 = 8 >= 8, too many by one.
    idle.cull_now(now).wake_all();
    let snap = idle.snapshot();
    assert_eq!(snap.nr_idle, 3);
    // 3 idle, 8 busy: (3 - 2) * 4 = 4 < 8: enough.
    assert_eq!(snap.counters.workers_culled, 1);
}

/// A pool of one slot whose only worker was culled and has not exited
/// yet, and a kick that found no free slot: a start reserved for the
/// exiting thread to take up.
fn a_culled_thread_and_a_reservation() -> Idle {
    let mut cfg = config(1);
    cfg.slots = 1;
    cfg.idle_timeout = Duration::ZERO;
    cfg.min_idle = 0;
    let idle = Idle::new(cfg);
    let now = Instant::now();
    idle_workers(&idle, 1, now);
    idle.cull_now(now).wake_all();
    assert_eq!(idle.slot_state(0), SlotState::Culled);
    // Work arrives while the culled thread is still on its way out.
    assert_eq!(idle.kick(), Kick::Busy);
    idle
}

#[test]
fn an_exiting_thread_is_drafted_when_no_slot_is_free() {
    let idle = a_culled_thread_and_a_reservation();
    assert_eq!(idle.hint().searching(), 1, "the reservation searches");
    assert_eq!(idle.exit(0), Next::Search, "drafted as the new worker");
    assert_eq!(idle.slot_state(0), SlotState::Running);
    assert_eq!(idle.snapshot().nr_workers, 1);
    assert!(idle.stop_searching());
}

/// The same reservation, with the pool closed before the culled thread
/// exits: nobody takes it up, and its counts go (a searching worker that
/// never was stayed in the counts for good).
#[test]
fn a_reservation_for_a_culled_thread_goes_if_the_pool_closes_first() {
    let idle = a_culled_thread_and_a_reservation();
    drop(idle.close());
    assert_eq!(idle.exit(0), Next::Exit, "not drafted into a closed pool");
    let snap = idle.snapshot();
    assert_eq!((snap.nr_workers, snap.nr_searching), (0, 0));
}

#[test]
fn a_blocked_worker_is_replaced_while_work_is_queued() {
    let idle = Idle::new(config(1));
    let Kick::Start(a) = idle.kick() else {
        panic!()
    };
    idle.started(a, unparker());
    idle.stop_searching();
    assert_eq!(idle.kick(), Kick::Busy, "at the maximum");
    let Kick::Start(b) = idle.block(a, true, || true) else {
        panic!("a replacement is started while `a` blocks")
    };
    assert_eq!(idle.snapshot().nr_blocked, 1);
    // Counted once its thread runs.
    assert_eq!(idle.snapshot().counters.cm_wakeups, 0);
    idle.started(b, unparker());
    assert_eq!(idle.snapshot().counters.cm_wakeups, 1);
    idle.stop_searching();
    assert!(
        idle.unblock(a),
        "back beside its replacement: over the limit"
    );
    let snap = idle.snapshot();
    assert_eq!((snap.nr_workers, snap.nr_blocked), (2, 0));
    assert!(idle.hint().full() && idle.hint().over());
    // Step 9: `a` steps down after its poll; the hint says full, not over.
    assert_eq!(idle.step_down(a, Instant::now()), Next::Park);
    assert_eq!(idle.snapshot().counters.stepped_down, 1);
    assert!(idle.hint().full() && !idle.hint().over());
    // Full: a kick wakes nobody, with or without the lock (`b` will look).
    assert_eq!(idle.notify(), Kick::Skipped);
    assert_eq!(idle.kick(), Kick::Busy);
    // Woken for the I/O driver: unparked, not claimed (it parks again, in
    // the driver, and runs nothing).
    assert!(idle.may_wake_idle() && idle.wake_idle());
    assert_eq!(idle.slot_state(a), SlotState::Idle);
    assert_eq!(idle.hint().searching(), 0);
    // `a` back from a spurious wake with work queued: the limit is filled.
    let mut wq = WakeQueue::default();
    assert_eq!(
        idle.leave_idle(a, Instant::now(), false, false, || true, &mut wq),
        Next::Park
    );
    // Not over: `b` does not step down, and when it idles with work queued
    // it takes the work (the others no longer fill the limit).
    assert_eq!(idle.step_down(b, Instant::now()), Next::Run);
    assert_eq!(idle.enter_idle(b, Instant::now(), || true), Next::Run);
    assert_eq!(idle.enter_idle(b, Instant::now(), || false), Next::Park);
    assert!(!idle.hint().full());
    // Both idle: a kick wakes one (the most recently idle).
    assert_eq!(idle.kick(), Kick::Woke);
    assert_eq!(
        idle.leave_idle(b, Instant::now(), false, false, || true, &mut wq),
        Next::Search
    );
    assert!(idle.stop_searching());
    // Nothing queued: blocking kicks nobody.
    assert_eq!(idle.block(b, true, || false), Kick::Busy);
    assert!(!idle.unblock(b), "its sibling is idle: not over");
    assert_eq!(idle.snapshot().counters.cm_wakeups, 1);
}

/// A revoked CPU-hog allowance leaves the pool over its limit: one of its
/// workers steps down, and the other does not.
#[test]
fn a_revoked_allowance_leaves_one_worker_to_step_down() {
    let idle = Idle::new(config(1));
    let Kick::Start(a) = idle.kick() else {
        panic!()
    };
    idle.started(a, unparker());
    idle.stop_searching();
    assert_eq!(idle.grant_hog(a, true, || true), Some(Kick::Start(1)));
    idle.started(1, unparker());
    idle.stop_searching();
    assert!(idle.hint().full() && !idle.hint().over());
    idle.revoke_hog(a);
    assert!(idle.hint().over());
    assert_eq!(idle.step_down(1, Instant::now()), Next::Park);
    assert_eq!(idle.step_down(a, Instant::now()), Next::Run);
    assert!(!idle.hint().over());
}

#[test]
fn closed_pool_refuses_kicks_and_releases_workers() {
    let idle = Idle::new(config(2));
    idle_workers(&idle, 2, Instant::now());
    let wake = idle.close();
    assert!(!wake.is_empty());
    assert_eq!(idle.notify(), Kick::Closed);
    assert_eq!(idle.kick(), Kick::Closed);
    let mut wq = WakeQueue::default();
    assert_eq!(
        idle.leave_idle(0, Instant::now(), false, false, || true, &mut wq),
        Next::Exit
    );
    assert_eq!(idle.exit(0), Next::Exit);
    assert_eq!(idle.slot_state(0), SlotState::Absent);
}

#[test]
fn lock_acquisitions_are_counted_and_readers_are_not() {
    let idle = Idle::new(config(1));
    assert_eq!(idle.snapshot().counters.lock_acquisitions, 0);
    let Kick::Start(a) = idle.kick() else {
        panic!()
    };
    idle.started(a, unparker());
    let _ = idle.snapshot();
    let c = idle.snapshot().counters;
    assert_eq!((c.lock_acquisitions, c.lock_contended), (2, 0));
}

/// A pool of one worker and `slots` slots whose worker (`a`) is in a poll
/// granted a CPU-hog allowance, the allowance's worker (`b`) started and
/// running: (the pool, `a`, `b`).
fn a_granted_poll_and_its_replacement(slots: usize) -> (Idle, usize, usize) {
    let mut cfg = config(1);
    cfg.slots = slots;
    let idle = Idle::new(cfg);
    let Kick::Start(a) = idle.kick() else {
        panic!()
    };
    idle.started(a, unparker());
    idle.stop_searching();
    let Some(Kick::Start(b)) = idle.grant_hog(a, true, || true) else {
        panic!("the allowance starts a worker for queued work")
    };
    idle.started(b, unparker());
    idle.stop_searching();
    (idle, a, b)
}

#[test]
fn with_every_slot_held_a_kick_reserves_nothing() {
    // Two slots, both running (one over the maximum, as a CPU-hog
    // allowance or a blocked worker's replacement leaves it).
    let (idle, _, b) = a_granted_poll_and_its_replacement(2);
    assert_eq!(idle.grant_hog(b, true, || false), Some(Kick::Busy));
    // Room by count (1 + 2 allowances), but no slot: no reservation, and
    // no searcher left counted for a thread that will never come. Both
    // workers are in granted polls: none serves the queue, so the kick
    // hands the pool to the rescuer.
    assert_eq!(idle.kick(), Kick::Mayday);
    assert_eq!(idle.hint().searching(), 0);
    assert!(!idle.hint().can_start());
}

/// A producer's kick goes through [`Idle::notify`]'s lock-free look
/// first: with every counted worker in a granted poll (none parked, none
/// can start) none serves the queues, and the look must not settle it as
/// "every worker is running and will look": the lock hands the pool to
/// the rescuer. (It skipped, and the item waited for a poll's end, an
/// unblock or the watchdog's next scan.)
#[test]
fn a_push_with_every_counted_worker_granted_reaches_the_rescuer() {
    // Both workers in granted polls.
    let (idle, _, b) = a_granted_poll_and_its_replacement(2);
    assert_eq!(idle.grant_hog(b, true, || false), Some(Kick::Busy));
    assert!(idle.hint().unserved() && idle.hint().workers() > 0);
    assert_eq!(idle.notify(), Kick::Mayday);
    // One in a granted poll, the other blocked (`block_in_place`).
    let (idle, _, b) = a_granted_poll_and_its_replacement(2);
    assert_eq!(idle.block(b, true, || false), Kick::Busy);
    assert!(idle.hint().unserved() && idle.hint().workers() > 0);
    assert_eq!(idle.notify(), Kick::Mayday);
}

/// A hog poll granted an allowance that then blocks gives the allowance
/// up: blocking already takes its worker out of the count, and both
/// would let the pool start two workers beyond its maximum.
#[test]
fn a_granted_poll_that_blocks_gives_its_allowance_up() {
    // The allowance started a second worker for queued work.
    let (idle, a, _) = a_granted_poll_and_its_replacement(4);
    assert_eq!(idle.grant_hog(a, true, || true), None, "one grant per slot");
    // The hog blocks: without giving up the allowance, a third worker
    // could start (max 1 + extra 1, 1 counted).
    assert_eq!(idle.block(a, true, || false), Kick::Busy);
    assert_eq!(idle.snapshot().nr_workers, 1);
    assert!(!idle.hint().can_start(), "a third worker could start");
    // The watchdog's revoke, after the poll, finds nothing to take back.
    idle.revoke_hog(a);
    idle.unblock(a);
    assert_eq!(idle.snapshot().nr_workers, 2);
}

/// Every step that wakes a worker follows the wake mode: under `UnderLock`
/// (the kernel before its deferred-wakeup patch) it unparks with the pool
/// lock held, under `Deferred` after the unlock: a producer's kick, a
/// concurrency-management kick (`block`), the watchdog's (`grant_hog`), a
/// failed start's and a driver hand-off's (`wake_idle`).
#[test]
fn every_wake_follows_the_wake_mode() {
    for mode in WakeMode::ALL {
        type Step = (&'static str, fn(&Idle));
        let steps: [Step; 7] = [
            ("kick", |idle| {
                idle_workers(idle, 2, Instant::now());
                assert_eq!(idle.notify(), Kick::Woke);
            }),
            ("block", |idle| {
                running_workers(idle, 2);
                assert_eq!(idle.enter_idle(1, Instant::now(), || false), Next::Park);
                assert_eq!(idle.block(0, true, || true), Kick::Woke);
            }),
            ("grant_hog", |idle| {
                running_workers(idle, 2);
                assert_eq!(idle.enter_idle(1, Instant::now(), || false), Next::Park);
                assert_eq!(idle.grant_hog(0, true, || true), Some(Kick::Woke));
            }),
            ("start_failed", |idle| {
                running_workers(idle, 2);
                let Kick::Start(c) = idle.kick() else {
                    panic!("expected a start")
                };
                assert_eq!(idle.enter_idle(1, Instant::now(), || false), Next::Park);
                assert_eq!(idle.start_failed(c), Kick::Woke);
            }),
            ("wake_idle", |idle| {
                idle_workers(idle, 2, Instant::now());
                assert!(idle.wake_idle());
            }),
            ("cull", |idle| {
                // Three idle, one kept: the worker back from its park
                // culls the longest idle, which it wakes to exit.
                idle_workers(idle, 3, Instant::now());
                let mut wake = WakeQueue::default();
                let next = idle.leave_idle(2, Instant::now(), true, false, || false, &mut wake);
                assert_eq!(next, Next::Park);
                assert_eq!(idle.slot_state(0), SlotState::Culled);
                idle.wake(wake);
            }),
            ("close", |idle| {
                idle_workers(idle, 2, Instant::now());
                let wake = idle.close();
                idle.wake(wake);
            }),
        ];
        for (name, step) in steps {
            let idle = Idle::new(IdleConfig {
                wake_mode: mode,
                ..culling_at_once(4, 1)
            });
            step(&idle);
            let [locked, unlocked] = idle
                .wakes_locked_unlocked
                .each_ref()
                .map(|n| n.load(std::sync::atomic::Ordering::Relaxed));
            let want = match mode {
                WakeMode::UnderLock => [1, 0],
                WakeMode::Deferred => [0, 1],
            };
            assert_eq!(
                [locked, unlocked],
                want,
                "{name} under {mode:?}: [locked, unlocked]"
            );
        }
    }
}

/// A look at the queues that answers `has`, asserting the pool lock is
/// not held while it is made.
fn looked_without_the_lock(idle: &Idle, has: bool) -> impl FnOnce() -> bool + '_ {
    move || {
        assert!(
            idle.state.try_lock().is_ok(),
            "the queues were looked at under the pool lock"
        );
        has
    }
}

/// A worker back from its park unwoken (a driver turn, a timeout) looks
/// at the queues before the pool lock (a wide pool's O(workers) fenced
/// loads held it against every kick once per driver turn), then acts on
/// what it saw under one lock; a woken one looks under the lock, and only
/// if nobody claimed it.
#[test]
fn a_worker_back_unwoken_looks_at_the_queues_without_the_pool_lock() {
    let idle = Idle::new(config(4));
    idle_workers(&idle, 2, Instant::now());
    let free = |has| looked_without_the_lock(&idle, has);
    let mut wake = WakeQueue::default();
    let locks = idle.snapshot().counters.lock_acquisitions;
    assert_eq!(
        idle.leave_idle(1, Instant::now(), true, true, free(false), &mut wake),
        Next::Park
    );
    assert_eq!(
        idle.leave_idle(1, Instant::now(), true, true, free(true), &mut wake),
        Next::Run
    );
    assert_eq!(idle.slot_state(1), SlotState::Running);
    assert_eq!(
        idle.snapshot().counters.lock_acquisitions,
        locks + 2,
        "one lock each"
    );
    // Woken, and still idle: the look under the lock.
    let held = || {
        assert!(idle.state.try_lock().is_err(), "looked before the lock");
        false
    };
    assert_eq!(
        idle.leave_idle(0, Instant::now(), true, false, held, &mut wake),
        Next::Park
    );
    // Woken by a claim: a searcher, no look.
    assert_eq!(idle.notify(), Kick::Woke);
    assert_eq!(idle.slot_state(0), SlotState::Kicked);
    let looked = |_: ()| -> bool { panic!("a claimed worker looked at the queues") };
    assert_eq!(
        idle.leave_idle(0, Instant::now(), true, false, || looked(()), &mut wake),
        Next::Search
    );
    assert!(wake.is_empty());
}

/// A blocking worker looks at the queues (every deque of the pool: a wide
/// pool's O(workers) fenced loads) without the pool lock held; only a kick
/// for the work it found takes it again.
#[test]
fn a_block_looks_at_the_queues_without_the_pool_lock() {
    let idle = Idle::new(config(4));
    running_workers(&idle, 2);
    assert_eq!(idle.enter_idle(1, Instant::now(), || false), Next::Park);
    let locks = idle.snapshot().counters.lock_acquisitions;
    let free = |has| looked_without_the_lock(&idle, has);
    assert_eq!(idle.block(0, true, free(false)), Kick::Busy);
    assert_eq!(
        idle.snapshot().counters.lock_acquisitions,
        locks + 1,
        "one lock, nothing queued"
    );
    assert!(!idle.unblock(0));
    assert_eq!(idle.block(0, true, free(true)), Kick::Woke);
    assert_eq!(idle.snapshot().counters.cm_wakeups, 1);
}

/// The watchdog's grant looks at the queues (every deque: O(workers)
/// fenced loads) without the pool lock held, as a block does; only a kick
/// for the work it found takes the lock again, and a blocked poll's grant
/// that wakes a worker counts a `cm_wakeup`.
#[test]
fn a_grant_looks_at_the_queues_without_the_pool_lock() {
    let idle = Idle::new(config(4));
    running_workers(&idle, 2);
    assert_eq!(idle.enter_idle(1, Instant::now(), || false), Next::Park);
    let locks = idle.snapshot().counters.lock_acquisitions;
    let free = |has| looked_without_the_lock(&idle, has);
    assert_eq!(idle.grant_hog(0, false, free(false)), Some(Kick::Busy));
    assert_eq!(
        idle.snapshot().counters.lock_acquisitions,
        locks + 1,
        "one lock, nothing queued"
    );
    idle.revoke_hog(0);
    assert_eq!(idle.grant_hog(0, false, free(true)), Some(Kick::Woke));
    assert_eq!(idle.snapshot().counters.cm_wakeups, 1);
    // Granted already: no second allowance, no look.
    let looked = |_: ()| -> bool { panic!("a granted poll's pool was looked at again") };
    assert_eq!(idle.grant_hog(0, false, || looked(())), None);
}

/// A block's kick that reserves a start is a `cm_wakeup` once the thread
/// runs, and none if the OS refuses it: the count said a worker was
/// started for the block where none was.
#[test]
fn a_refused_start_for_a_block_is_no_cm_wakeup() {
    for refused in [true, false] {
        let idle = Idle::new(config(4));
        running_workers(&idle, 1);
        let Kick::Start(slot) = idle.block(0, true, || true) else {
            panic!("expected a start")
        };
        if refused {
            let _ = idle.start_failed(slot);
        } else {
            idle.started(slot, unparker());
        }
        assert_eq!(
            idle.snapshot().counters.cm_wakeups,
            u64::from(!refused),
            "refused: {refused}"
        );
    }
}
