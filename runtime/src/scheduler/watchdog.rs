//! The CPU-hog watchdog: the kernel's CPU-intensive detection
//! (`wq_cpu_intensive_thresh_us`, checked from the scheduler tick there).
//!
//! A worker stores, before every poll, when it started (`pool::Watch`,
//! a plain store on a line of its own that the watchdog reads: the clock
//! it read as its last poll ended, so its look for work since counts
//! too), and 0 after it. The watchdog -- the runtime's rescuer thread,
//! between maydays -- looks at every worker every half threshold (at least
//! every millisecond, at most every
//! [`IDLE_TICK`]: its turns of the I/O driver bound how long a busy pool
//! holds sockets and timers up, whatever the threshold) while any runs a
//! task, less and less often (down to [`IDLE_TICK`]) while none does.
//!
//! # Protocol
//! - **Sample.** A poll older than half the threshold is sampled (not
//!   while its worker is in `block_in_place`: `Watch::blocked`; a poll
//!   that came back from one is timed from then, `Watch::unblocked_at`): the
//!   worker thread's CPU time (its CPU clock, `Watch::cpu_clock`: a system
//!   call, under a microsecond) and the wall time.
//! - **Grant.** A poll older than the threshold (the same `poll_started`
//!   as sampled) runs too long. Over the time since the sample, if its
//!   thread was on a CPU at least half the time, it is a **CPU hog** (the
//!   kernel's `CPU_INTENSIVE`). If not, it was waiting for a CPU or
//!   blocked, and its state now (`/proc/self/task/<tid>/stat`) tells
//!   which where it can: asleep (or stopped), it is **blocking** its
//!   thread in a synchronous call (the kernel would count the wakeup it
//!   causes as `CM_WAKEUP`); runnable, it may be waiting for a CPU or back
//!   from blocking, and the sample is taken again with the thread's
//!   scheduler statistics (`schedstat`: time on a CPU, time waiting on a
//!   run queue) and judged after its window: if it waited on a run queue
//!   at least half the time, or is runnable without having been on a CPU
//!   (a wait is added to the statistics only when it ends), the CPUs are
//!   saturated and another worker would not help: nothing is granted (it
//!   is sampled again, and judged after twice the window, at most 8
//!   thresholds: `/proc` reads take about 22 us, and are not made for
//!   every long poll at every tick while the CPUs are saturated); if it
//!   is runnable having been on a CPU under half the time (on it at the
//!   look after blocking, or waiting since a short run: the same
//!   figures), it is judged at a later look, the sample kept; else it is
//!   blocking. With `/proc` unreadable (no procfs, another PID namespace,
//!   no file descriptor left), a poll off its CPU half the time counts as
//!   blocking: a grant on saturated CPUs costs one thread more for the
//!   poll's length, where a blocking task read as a hog lost concurrency
//!   management for life. (A thread whose CPU clock cannot be read, never
//!   seen on Linux, is sampled with the statistics at once.) For a hog or a blocked poll,
//!   under the pool lock its pool may have one worker beyond
//!   its maximum and is kicked if work is queued (`Idle::grant_hog`, step
//!   8 of `pool::idle`); the slot's `hog` mark is set to that poll's start
//!   (and whether it was on its CPU), and the process's `HOG_MARKS` counts
//!   it. The watchdog remembers the grant.
//! - **Steal.** From a poll older than the threshold, whatever it found
//!   (and at every look while it lasts), the task in its worker's LIFO
//!   slot is taken out and pushed on the pool's injector, with a kick
//!   (`pool::lifo`; counted as `lifo_stolen`): the poll spawned or woke
//!   it, and no sibling looks there. So are the tasks on its deque, where
//!   siblings look only when the injector is empty (under a steady stream
//!   of work, never while the poll lasts).
//! - **Again.** A granted poll that calls `block_in_place` gives its
//!   allowance up (the blocked worker leaves the count anyway); when it
//!   comes back still polling (`Watch::unblocked_at` later than the
//!   grant), the allowance is granted again, the poll not counted again.
//! - **Revoke.** When the slot's `poll_started` is no longer the granted
//!   one (the hog poll ended), the allowance is revoked and the mark
//!   uncounted. The hog's worker gives the allowance up itself as the
//!   marked poll ends (`pool::long_poll`: until this scan, the pool read
//!   nobody serving while its worker served); the watchdog alone grants,
//!   and its revoke here is the backstop: a grant that races the poll's
//!   end (made or made again after the worker's look) lasts at most until
//!   the next scan, and a revoke is idempotent (`Idle::revoke_hog` takes
//!   the slot's `granted` flag), so no race leaks an allowance or takes
//!   one twice.
//! - **The task.** At the end of its poll, a task that finds its worker's
//!   mark equal to its poll's start (only looked at while `HOG_MARKS` is
//!   not zero) learns it ran long: a CPU hog marks itself CPU-intensive
//!   (its later polls leave concurrency management, as `block_in_place`
//!   does) and counts `cpu_intensive` on its workqueue; a blocking task
//!   counts a `cm_wakeup` there, for every such poll whose grant woke or
//!   started a worker (as the pool counts it). Either is reported
//!   once per task through the `log` facade.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::clock;
use crate::pool::idle::Kick;
use crate::pool::{HOG_MARKS, Pool};

/// The longest the watchdog sleeps while no worker runs a task.
pub(crate) const IDLE_TICK: Duration = Duration::from_millis(100);

/// A long poll's first sighting.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Its `poll_started`.
    started: u64,
    /// The raw clock and the thread's CPU time then (`None`: its clock
    /// unknown).
    wall: u64,
    cpu: Option<u64>,
    /// Its scheduler statistics then, where its CPU clock did not settle
    /// it (the second look: module docs), or the clock is unknown.
    stat: Option<SchedStat>,
    /// The window judged from it, ns: half the threshold at first, doubled
    /// (up to [`MAX_WINDOWS`] thresholds) after each look that found the
    /// CPUs saturated, or could not decide ([`Sample::kept_longer`]). A
    /// `/proc` read is about 22 us: a pool of 64 long
    /// polls read them every tick while saturated, most of a CPU at the
    /// default threshold, and grants are put off then anyway.
    window: u64,
}

/// The longest a sample's window grows to, in thresholds.
const MAX_WINDOWS: u64 = 8;

/// The tick while workers run: half the threshold, at least a millisecond
/// (the smallest threshold, 100 us, scanned and turned the driver every
/// 50 us from a runtime's start), at most [`IDLE_TICK`].
fn busy_tick(threshold: Duration) -> Duration {
    (threshold / 2).max(Duration::from_millis(1)).min(IDLE_TICK)
}

/// A thread's time on a CPU and waiting on a run queue, ns, and whether
/// it is runnable now.
#[derive(Clone, Copy, Debug)]
struct SchedStat {
    on_cpu: u64,
    run_queue: u64,
    /// State `R` in `/proc/self/task/<tid>/stat`: on a CPU or waiting
    /// for one. The kernel adds a wait to `run_queue` only when the wait
    /// ends, so a thread that waited through the whole interval shows no
    /// growth in either figure; this tells it from a sleeping one.
    runnable: bool,
}

impl Sample {
    /// Kept for a later look (undecided, or figures that did not move):
    /// its window doubled from the same start (up to `cap`), so the next
    /// look spans a longer time and comes a window later, not at the next
    /// tick; at `cap`, taken again from now (`cpu`, `stat`: the figures
    /// now), so a poll no figure settles is read once a `cap`.
    fn kept_longer(self, now: u64, cpu: Option<u64>, stat: Option<SchedStat>, cap: u64) -> Sample {
        if self.window < cap {
            Sample {
                window: (self.window * 2).min(cap),
                ..self
            }
        } else {
            Sample {
                wall: now,
                cpu,
                stat: stat.or(self.stat),
                window: cap,
                ..self
            }
        }
    }

    /// A first sample of the poll that started at `started`, on the
    /// thread of `watch`: its CPU clock, or the statistics where the
    /// clock is unknown.
    fn new(started: u64, now: u64, watch: &crate::pool::Watch, window: u64) -> Sample {
        let cpu = clock::cpu_time(watch.cpu_clock.load(Ordering::Relaxed));
        Sample {
            started,
            wall: now,
            cpu,
            stat: if cpu.is_none() {
                SchedStat::of(watch.tid.load(Ordering::Relaxed))
            } else {
                None
            },
            window,
        }
    }
}

impl SchedStat {
    /// The statistics of this process's thread `tid` (`None` if unknown).
    fn of(tid: i32) -> Option<SchedStat> {
        if tid <= 0 {
            return None;
        }
        #[cfg(all(test, not(loom)))]
        tests::PROC_READS.with(|n| n.set(n.get() + 2));
        let schedstat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
        // Bytes, not text: the thread's name is printed as it is, and the
        // OS cut it at 15 bytes, maybe inside a character.
        let stat = std::fs::read(format!("/proc/self/task/{tid}/stat")).ok()?;
        SchedStat::parse(&schedstat, &stat)
    }

    /// The statistics from a thread's `schedstat` and `stat` files.
    fn parse(schedstat: &str, stat: &[u8]) -> Option<SchedStat> {
        let mut f = schedstat.split_whitespace().map(|v| v.parse::<u64>().ok());
        let (on_cpu, run_queue) = (f.next()??, f.next()??);
        if on_cpu == 0 && run_queue == 0 {
            // A kernel without CONFIG_SCHED_INFO prints zeros: unknown
            // (a worker in a poll has run), not a thread that never ran
            // -- which, runnable, read as waiting for a CPU for ever, and
            // a hog was never granted.
            return None;
        }
        Some(SchedStat {
            on_cpu,
            run_queue,
            runnable: state_of(stat)? == b'R',
        })
    }
}

/// The state in a `/proc/<pid>/task/<tid>/stat` line, `pid (comm) S ...`:
/// the first character after the last ')' (the name may hold one, and
/// need not be UTF-8).
fn state_of(stat: &[u8]) -> Option<u8> {
    let after = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    after.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// The state letter of this process's thread `tid` (`R`, `S`, `D`...).
fn thread_state(tid: i32) -> Option<u8> {
    if tid <= 0 {
        return None;
    }
    #[cfg(all(test, not(loom)))]
    tests::PROC_READS.with(|n| n.set(n.get() + 1));
    state_of(&std::fs::read(format!("/proc/self/task/{tid}/stat")).ok()?)
}

/// What a long poll was doing over the `wall` ns since its sample, from
/// its thread's CPU time grown meanwhile (`cpu`, if its clock was read),
/// its scheduler statistics then and now (`stats`, if the sample took
/// them), and its state now (`state`, if read):
/// - on its CPU at least half the time (the clock, else the statistics);
/// - with the statistics: waiting for a CPU (half the time on a run queue,
///   or runnable with no time on a CPU), undecided (runnable, some time
///   on a CPU), else blocked;
/// - without them: asleep or stopped is blocked; runnable asks for them
///   ([`Doing::Runnable`]) where the clock said it was off its CPU, and
///   is on its CPU where nothing else is known (as is an unknown state);
///   an unknown state with the clock read is blocked.
fn doing(
    cpu: Option<u64>,
    wall: u64,
    stats: Option<(SchedStat, SchedStat)>,
    state: Option<u8>,
) -> Doing {
    let half = |grown: u64| grown.saturating_mul(2) >= wall;
    if cpu.is_some_and(half) {
        return Doing::OnCpu;
    }
    match stats {
        Some((a, b)) if cpu.is_none() && half(b.on_cpu.saturating_sub(a.on_cpu)) => Doing::OnCpu,
        Some((a, b))
            if half(b.run_queue.saturating_sub(a.run_queue))
                || (b.runnable && b.on_cpu == a.on_cpu) =>
        {
            Doing::Waiting
        }
        // Runnable now, some time on its CPU, under half: on its CPU at
        // the look after blocking most of the window, or waiting for one
        // since a short run (a wait is added to the figures when it
        // ends): the figures are the same. Judged at a later look (it was
        // read as waiting, putting a blocked poll's grant off, then as
        // blocked, granting a worker on saturated CPUs).
        Some((_, b)) if b.runnable => Doing::Undecided,
        Some(_) => Doing::Blocked,
        None => match (state, cpu) {
            (Some(b'R'), Some(_)) => Doing::Runnable,
            (Some(b'R') | None, None) => Doing::OnCpu,
            _ => Doing::Blocked,
        },
    }
}

/// What a long poll was doing since its sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Doing {
    OnCpu,
    Waiting,
    Blocked,
    /// The figures fit waiting and blocking alike: looked at again, the
    /// sample kept (a longer window).
    Undecided,
    /// Off its CPU most of the window and runnable now: sampled again
    /// with the scheduler statistics, to tell waiting from blocking.
    Runnable,
}

/// The watchdog's own state (it lives on the rescuer thread).
#[derive(Debug)]
pub(crate) struct Watchdog {
    threshold_ns: u64,
    tick: Duration,
    /// Polls older than half the threshold: (pool id, slot) -> sample.
    samples: HashMap<(usize, usize), Sample>,
    /// Granted hogs by (pool id, slot).
    granted: HashMap<(usize, usize), Grant>,
}

/// A poll granted a worker beyond its pool's maximum.
#[derive(Debug)]
struct Grant {
    pool: Arc<Pool>,
    /// The poll's `poll_started`.
    started: u64,
    on_cpu: bool,
    /// Its slot's `unblocked_at` when granted (or granted again): a later
    /// one means a `block_in_place` gave the allowance up since.
    back: u64,
}

/// Moves what a blocked or long-polling worker's deque holds to the
/// injectors of the tasks' home pools (a remote steal's batch goes home),
/// with one kick per pool (`Worker::hand_off`'s, from outside the worker:
/// its deque's stealing end). As many as it held on entry, at most: a
/// poll still running may push as fast as this takes (a spawn loop), and
/// what it pushes later goes at the next look, not in a loop that held
/// the rescuer for the whole poll.
fn move_deque(pool: &Arc<Pool>, slot: &crate::pool::WorkerSlot) {
    let mut moved = false;
    let mut left = slot.stealer.len();
    while left > 0 {
        match slot.stealer.steal() {
            crossbeam_deque::Steal::Success(r) => {
                left -= 1;
                if Arc::ptr_eq(r.metadata().home(), pool) {
                    pool.injector.push(r);
                    moved = true;
                } else {
                    Pool::send_home(r);
                }
            }
            crossbeam_deque::Steal::Empty => break,
            crossbeam_deque::Steal::Retry => std::hint::spin_loop(),
        }
    }
    if moved {
        pool.notify();
    }
}

impl Watchdog {
    /// A watchdog for `threshold`; `None` when it is zero (detection off).
    pub(crate) fn new(threshold: Duration) -> Option<Watchdog> {
        if threshold.is_zero() {
            return None;
        }
        Some(Watchdog {
            threshold_ns: threshold.as_nanos().min(u128::from(u64::MAX)) as u64,
            // At most the idle tick: the same turns keep the I/O driver
            // going while every worker is busy (`services`), whatever the
            // threshold; hogs are told by their polls' ages, not by it.
            tick: busy_tick(threshold),
            samples: HashMap::new(),
            granted: HashMap::new(),
        })
    }

    /// How long to sleep before the next [`Watchdog::scan`].
    pub(crate) fn tick(&self) -> Duration {
        self.tick
    }

    /// Looks at every worker of `pools` once (module docs).
    pub(crate) fn scan(&mut self, pools: &[Arc<Pool>]) {
        let now = clock::now();
        // Revoke grants whose poll has ended.
        self.granted
            .retain(|&(_, slot), Grant { pool, started, .. }| {
                let still = pool.slots[slot].watch.poll_started.load(Ordering::Relaxed) == *started;
                if !still {
                    pool.idle.revoke_hog(slot);
                    pool.slots[slot].watch.hog.store(0, Ordering::Relaxed);
                    HOG_MARKS.fetch_sub(1, Ordering::Relaxed);
                }
                still
            });
        let mut running = false;
        // Grants whose poll is in `block_in_place` now: they gave their
        // allowance up (`Idle::block`), and keep no tick fast.
        let mut granted_blocked = 0;
        let mut seen = std::collections::HashSet::new();
        for pool in pools {
            if pool.is_closed() {
                continue;
            }
            // Whether the pool has work queued with none serving it,
            // looked at once per scan (below), not once per granted poll:
            // each look reads every used slot's deque, and the serving
            // count walks every slot under the pool's lock (G granted polls
            // in a pool of S slots cost G x S otherwise: 512 x 16,384 on a
            // machine of 8,192 CPUs, from a review).
            let mut unserved_work: Option<bool> = None;
            for (slot, s) in pool.used_slots().iter().enumerate() {
                // Acquire: pairs with the worker's Release store; the
                // `tid` read below is that poll's thread's.
                let started = s.watch.poll_started.load(Ordering::Acquire);
                if started == 0 {
                    continue;
                }
                if s.watch.blocked.load(Ordering::Acquire) {
                    // In `block_in_place`: out of the pool's count, its
                    // LIFO task moved to its deque; nothing to grant, and
                    // no reason to tick fast. Sampled afresh if it comes
                    // back still polling. Blocked past the threshold, its
                    // deque goes to the injector: a deque is looked at only
                    // when the injector is empty, and under a steady
                    // stream of work its tasks waited for the whole block.
                    // Timed from the block's start, not the poll's: a poll
                    // that blocks late or often would have its deque moved
                    // at the first scan of every block, short ones too.
                    let blocked_at = s.watch.blocked_at.load(Ordering::Relaxed);
                    if clock::delay_ns(blocked_at, now) >= self.threshold_ns {
                        move_deque(pool, s);
                    }
                    granted_blocked += usize::from(self.granted.contains_key(&(pool.id, slot)));
                    continue;
                }
                running = true;
                let key = (pool.id, slot);
                // Timed from its return from `block_in_place`, if it came
                // back from one during this poll.
                let since = started.max(s.watch.unblocked_at.load(Ordering::Relaxed));
                let age = clock::delay_ns(since, now);
                if age >= self.threshold_ns {
                    if let Some(r) = s.watch.lifo.steal() {
                        // What the poll spawned or woke last waits in its
                        // worker's LIFO slot, where no sibling looks: it
                        // goes to the pool's queue (stamped when it was
                        // put, so its scheduling delay counts the wait).
                        pool.push_remote(r);
                        pool.lifo_stolen.fetch_add(1, Ordering::Relaxed);
                    }
                    // And its deque, as a blocked worker's: a sibling
                    // looks at deques only when the pool's queue is
                    // empty, so under a steady stream of work they
                    // waited for the whole poll.
                    if !s.stealer.is_empty() {
                        move_deque(pool, s);
                    }
                }
                if let Some(g) = self.granted.get_mut(&key) {
                    let back = s.watch.unblocked_at.load(Ordering::Relaxed);
                    // (Re-read: the moves above take time, and a poll
                    // that ended meanwhile must not have its allowance
                    // back, as at the first grant; a poll ending after
                    // this look is revoked at the next scan.)
                    if g.started == started
                        && back > g.back
                        && s.watch.poll_started.load(Ordering::Acquire) == started
                    {
                        // Back from a `block_in_place`, which gave the
                        // allowance up (`Idle::block`): the poll goes on,
                        // so does the allowance.
                        g.back = back;
                        if let Some(kick) =
                            pool.idle.regrant_hog(slot, g.on_cpu, || pool.has_work())
                        {
                            pool.handle_kick(kick);
                        }
                    } else if *unserved_work
                        .get_or_insert_with(|| pool.has_work() && pool.idle.serving() == 0)
                    {
                        // Work queued while every worker is in a granted
                        // poll: a producer's kick skips the lock while the
                        // pool looks full, so the look comes from here (a
                        // start, or, with none possible, the rescuer). One
                        // kick a pool a scan: the worker it reaches serves.
                        pool.kick();
                        unserved_work = Some(false);
                    }
                    continue;
                }
                if age < self.threshold_ns / 2 {
                    continue;
                }
                seen.insert(key);
                let sample = match self.samples.get(&key) {
                    Some(sample) if sample.started == started => *sample,
                    _ => {
                        let sample = Sample::new(started, now, &s.watch, self.threshold_ns / 2);
                        self.samples.insert(key, sample);
                        continue;
                    }
                };
                // Judged once it is over the threshold and its window has
                // passed; read nothing before.
                if age < self.threshold_ns || clock::delay_ns(sample.wall, now) < sample.window {
                    continue;
                }
                let tid = s.watch.tid.load(Ordering::Relaxed);
                let cpu_now = clock::cpu_time(s.watch.cpu_clock.load(Ordering::Relaxed));
                let wall = clock::delay_ns(sample.wall, now).max(1);
                let cpu = sample.cpu.zip(cpu_now).map(|(a, b)| b.saturating_sub(a));
                // `/proc` only where the clock does not settle it: the
                // statistics where the sample took them, else the state.
                let (stats, state) = if cpu.is_some_and(|c| c.saturating_mul(2) >= wall) {
                    (None, None)
                } else {
                    // (Read only where the sample took them: `zip` would
                    // read them for nothing.)
                    let stats = sample.stat.and_then(|a| SchedStat::of(tid).map(|b| (a, b)));
                    (stats, stats.is_none().then(|| thread_state(tid)).flatten())
                };
                let doing = doing(cpu, wall, stats, state);
                if doing == Doing::Runnable {
                    // Off its CPU, runnable now: waiting, or back from a
                    // block. Its statistics decide, a window from now;
                    // without them (no schedstat), the clock and state
                    // again after a longer window, as a wait's (no grant
                    // meanwhile, and no reads every half threshold).
                    let stat = SchedStat::of(tid);
                    let window = if stat.is_some() {
                        sample.window
                    } else {
                        (sample.window * 2).min(self.threshold_ns * MAX_WINDOWS)
                    };
                    self.samples.insert(
                        key,
                        Sample {
                            started,
                            wall: now,
                            cpu: cpu_now,
                            stat,
                            window,
                        },
                    );
                    continue;
                }
                let flat = matches!(
                    stats,
                    Some((a, b)) if a.on_cpu == b.on_cpu && a.run_queue == b.run_queue
                );
                if doing == Doing::Undecided || (doing == Doing::Waiting && flat) {
                    // Undecided (`doing`), or neither figure moved: the
                    // kernel updates them at ticks and switches, and a
                    // tickless CPU (nohz_full) may not have ticked yet.
                    // Kept, so the next look sees a longer window, rather
                    // than start again and never decide; its window
                    // doubled, so that look is not the next tick's (the
                    // `/proc` reads of every look, as long as a throttled
                    // thread stays unrun).
                    let cap = self.threshold_ns * MAX_WINDOWS;
                    let now_stat = stats.map(|(_, b)| b);
                    self.samples
                        .insert(key, sample.kept_longer(now, cpu_now, now_stat, cap));
                    continue;
                }
                if doing == Doing::Waiting {
                    // Saturated CPUs: one more worker would only wait too.
                    // Looked at again after a longer window.
                    self.samples.insert(
                        key,
                        Sample {
                            started,
                            wall: now,
                            cpu: cpu_now,
                            stat: stats.map(|(_, b)| b),
                            window: (sample.window * 2).min(self.threshold_ns * MAX_WINDOWS),
                        },
                    );
                    continue;
                }
                let on_cpu = doing == Doing::OnCpu;
                // The reads above take time (`/proc`'s about 22 us): a
                // poll that ended meanwhile must not have its allowance
                // (and its `cpu_intensive` count) go to the next one. (A
                // poll ending after this look is revoked at the next scan.)
                if s.watch.poll_started.load(Ordering::Acquire) != started {
                    self.samples.remove(&key);
                    continue;
                }
                // Read before the grant: a `block_in_place` that gives the
                // allowance up between the grant and this read would store
                // the `unblocked_at` read here, and no later scan would see
                // it come back to grant it again.
                let back = s.watch.unblocked_at.load(Ordering::Relaxed);
                let Some(kick) = pool.idle.grant_hog(slot, on_cpu, || pool.has_work()) else {
                    continue;
                };
                s.watch.hog_on_cpu.store(on_cpu, Ordering::Relaxed);
                s.watch.hog_woke.store(
                    matches!(kick, Kick::Woke | Kick::Start(_)),
                    Ordering::Relaxed,
                );
                // Release: the worker that reads the mark reads the flags
                // stored before it.
                s.watch.hog.store(started, Ordering::Release);
                HOG_MARKS.fetch_add(1, Ordering::Relaxed);
                // Its deque (moved at each look past the threshold; what
                // the poll queued since) waits for the hog: a spinner must
                // look there
                // (after the mark: the spinner looks at hogs' deques).
                if !s.stealer.is_empty() {
                    pool.alert_spinners();
                }
                self.granted.insert(
                    key,
                    Grant {
                        pool: pool.clone(),
                        started,
                        on_cpu,
                        back,
                    },
                );
                self.samples.remove(&key);
                // Last (a worker it starts looks at the marked hog's
                // deque); a start the OS refused woke nobody: the task
                // counts no `cm_wakeup` for it (unless its poll ended in
                // this instant, having read the flag above).
                let start = matches!(kick, Kick::Start(_));
                if !pool.handle_kick(kick) && start {
                    s.watch.hog_woke.store(false, Ordering::Relaxed);
                }
            }
        }
        self.samples.retain(|k, _| seen.contains(k));
        let busy_tick = busy_tick(Duration::from_nanos(self.threshold_ns));
        // A granted poll blocked in `block_in_place` for minutes kept the
        // fast tick (200 wakes a second of an idle runtime's rescuer): it
        // is looked at again within an idle tick of its return.
        self.tick = if running || self.granted.len() > granted_blocked {
            busy_tick
        } else {
            (self.tick * 2).min(IDLE_TICK)
        };
    }

    /// Revokes everything (the runtime shuts down).
    pub(crate) fn clear(&mut self) {
        for ((_, slot), Grant { pool, .. }) in self.granted.drain() {
            pool.idle.revoke_hog(slot);
            HOG_MARKS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{Runtime, Scope, Topology};

    std::thread_local! {
        /// The `/proc` files this thread's watchdog read.
        pub(super) static PROC_READS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// The first tick has the busy tick's floor: at the smallest
    /// threshold (100 us) a new runtime's rescuer scanned and turned the
    /// driver every 50 us.
    #[test]
    fn the_first_tick_is_at_least_a_millisecond() {
        let w = Watchdog::new(Duration::from_micros(100)).unwrap();
        assert_eq!(w.tick(), Duration::from_millis(1));
        let w = Watchdog::new(Duration::from_millis(10)).unwrap();
        assert_eq!(w.tick(), Duration::from_millis(5));
        let w = Watchdog::new(Duration::from_secs(10)).unwrap();
        assert_eq!(w.tick(), IDLE_TICK);
    }

    /// A sample kept for a later look (figures that did not move: a
    /// thread throttled unrun) doubles its window from the same start,
    /// then, at the cap, starts again: a look past its window read
    /// `/proc` at every tick while the figures stood still.
    #[test]
    fn a_kept_sample_is_looked_at_after_longer_windows() {
        let stat = SchedStat {
            on_cpu: 5,
            run_queue: 7,
            runnable: true,
        };
        let mut s = Sample {
            started: 1,
            wall: 100,
            cpu: Some(10),
            stat: Some(stat),
            window: 50,
        };
        let cap = 400;
        let mut windows = Vec::new();
        for now in [150, 250, 450, 850, 1250] {
            // Judged only once its window has passed.
            assert!(now - s.wall >= s.window, "looked at before its window");
            s = s.kept_longer(now, Some(20), Some(stat), cap);
            windows.push((s.wall, s.window));
        }
        assert_eq!(
            windows,
            [(100, 100), (100, 200), (100, 400), (850, 400), (1250, 400)]
        );
        assert_eq!((s.started, s.cpu), (1, Some(20)));
    }

    #[test]
    fn the_state_is_read_after_the_names_last_parenthesis_in_any_bytes() {
        assert_eq!(state_of(b"12 (wq-0.1) R 1 2 3"), Some(b'R'));
        assert_eq!(state_of(b"12 (a) b) (c)) S 1"), Some(b'S'));
        // A name cut inside a two-byte character.
        assert_eq!(state_of(b"12 (\xce\xb1\xce\xb2\xce) D 1"), Some(b'D'));
        assert_eq!(state_of(b"12 (no end"), None);
        assert_eq!(state_of(b"12 (x)  "), None);
    }

    /// Zeros (a kernel without CONFIG_SCHED_INFO) are unknown figures
    /// (then the thread's state decides: `doing`): a runnable hog read as
    /// waiting for ever.
    #[test]
    fn zero_scheduler_statistics_are_unknown() {
        assert!(SchedStat::parse("0 0 0\n", b"7 (wq) R 1").is_none());
        let s = SchedStat::parse("1500 20 3\n", b"7 (wq) S 1").unwrap();
        assert_eq!((s.on_cpu, s.run_queue, s.runnable), (1500, 20, false));
        assert!(SchedStat::parse("x", b"7 (wq) R 1").is_none());
    }

    /// The thread's CPU clock settles a hog alone; off its CPU, its state
    /// now decides, asking for the scheduler statistics when runnable; a
    /// state unknown (`/proc` unreadable) is blocked -- it was on its CPU,
    /// and a poll asleep in a call in a process without `/proc` was marked
    /// CPU-intensive for life.
    #[test]
    fn the_cpu_clock_decides_first_and_the_state_next() {
        let ms = 1_000_000;
        let w = 20 * ms;
        assert_eq!(doing(Some(10 * ms), w, None, None), Doing::OnCpu);
        assert_eq!(doing(Some(19 * ms), w, None, Some(b'S')), Doing::OnCpu);
        assert_eq!(doing(Some(ms), w, None, Some(b'S')), Doing::Blocked);
        assert_eq!(doing(Some(ms), w, None, Some(b'D')), Doing::Blocked);
        assert_eq!(doing(Some(ms), w, None, Some(b'T')), Doing::Blocked);
        assert_eq!(doing(Some(ms), w, None, Some(b'R')), Doing::Runnable);
        assert_eq!(doing(Some(0), w, None, None), Doing::Blocked);
        // Nothing known but the state (no clock, no statistics): asleep
        // is blocked, anything else on its CPU.
        assert_eq!(doing(None, w, None, Some(b'S')), Doing::Blocked);
        assert_eq!(doing(None, w, None, Some(b'R')), Doing::OnCpu);
        assert_eq!(doing(None, w, None, None), Doing::OnCpu);
    }

    /// With the scheduler statistics (the second look, or no clock), as
    /// measured: the clock's CPU time first where read, the statistics'
    /// where not.
    #[test]
    fn the_statistics_tell_waiting_from_blocking() {
        let ms = 1_000_000;
        let w = 20 * ms;
        let at = |on_cpu, run_queue, runnable| SchedStat {
            on_cpu,
            run_queue,
            runnable,
        };
        let a = at(0, 0, true);
        let with = |b| Some((a, b));
        assert_eq!(
            doing(None, w, with(at(15 * ms, 0, true)), None),
            Doing::OnCpu
        );
        // The clock read: its figure counts, not the statistics' (which
        // move at ticks and switches).
        assert_eq!(
            doing(Some(ms), w, with(at(15 * ms, 0, false)), None),
            Doing::Blocked
        );
        assert_eq!(
            doing(Some(15 * ms), w, with(at(0, 0, false)), None),
            Doing::OnCpu
        );
        assert_eq!(
            doing(Some(1), w, with(at(1, 15 * ms, true)), None),
            Doing::Waiting
        );
        assert_eq!(
            doing(Some(1), w, with(at(1, 1, false)), None),
            Doing::Blocked
        );
        // Runnable now, and waiting through the whole window (neither
        // figure grown: a wait is added when it ends): waiting.
        assert_eq!(
            doing(Some(0), w, with(at(0, 0, true)), None),
            Doing::Waiting
        );
        // Runnable now with some time on its CPU, under half: on its CPU
        // at the look after blocking most of the window, or waiting since
        // a short run -- the same figures: neither granted nor put off,
        // judged again later (it was read as waiting, putting a blocked
        // poll's grant off; then as blocked, granting on saturated CPUs).
        assert_eq!(
            doing(Some(8 * ms), w, with(at(8 * ms, ms, true)), None),
            Doing::Undecided
        );
        assert_eq!(
            doing(None, 5 * ms, with(at(ms, 0, true)), None),
            Doing::Undecided
        );
        // Not runnable, under half on its CPU: blocked.
        assert_eq!(
            doing(Some(8 * ms), w, with(at(8 * ms, ms, false)), None),
            Doing::Blocked
        );
    }

    /// A long threshold does not slow the watchdog's ticks past
    /// `IDLE_TICK`: they also turn the I/O driver for busy pools (an hour's
    /// threshold left sockets waiting half an hour; `Duration::MAX`, for
    /// ever).
    #[test]
    fn a_long_threshold_keeps_the_tick_at_most_the_idle_tick() {
        for threshold in [Duration::from_secs(3600), Duration::MAX] {
            let mut w = Watchdog::new(threshold).unwrap();
            assert!(w.tick() <= IDLE_TICK, "{:?}", w.tick());
            w.scan(&[]);
            assert!(w.tick() <= IDLE_TICK, "{:?}", w.tick());
        }
        // A short one keeps its half.
        let w = Watchdog::new(Duration::from_millis(10)).unwrap();
        assert_eq!(w.tick(), Duration::from_millis(5));
    }

    /// A runtime whose tasks run in one pool (`system` on 2 CPUs) of at
    /// most one worker, its own watchdog at `threshold`.
    fn one_worker_pool(threshold: Duration) -> Runtime {
        Runtime::builder()
            .topology(Topology::synthetic("pack:1 core:2 pu:1").unwrap())
            .default_scope(Scope::System)
            .max_workers_per_pool(1)
            .cpu_hog_threshold(threshold)
            .build()
            .unwrap()
    }

    /// Scans until `w` grants an allowance (a poll held past its
    /// threshold), for at most 30 s.
    fn scan_until_granted(w: &mut Watchdog, pools: &[Arc<Pool>]) {
        let start = std::time::Instant::now();
        while w.granted.is_empty() {
            assert!(start.elapsed() < Duration::from_secs(30), "never granted");
            w.scan(pools);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A worker in `block_in_place` is not sampled: reading its thread's
    /// `/proc` statistics every tick while it blocks cost the watchdog's
    /// thread about 50 ms of CPU a second per blocked worker at a 2 ms
    /// threshold.
    #[test]
    fn a_worker_in_block_in_place_is_not_sampled() {
        let rt = one_worker_pool(Duration::from_millis(10));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (in_tx, in_rx) = std::sync::mpsc::channel::<()>();
        let h = rt.spawn(async move {
            crate::block_in_place(|| {
                in_tx.send(()).unwrap();
                rx.recv().unwrap();
            })
        });
        in_rx.recv().unwrap();
        // Past half the threshold: a running poll would be sampled.
        std::thread::sleep(Duration::from_millis(30));
        let pools = rt.handle().scheduler.pools();
        let mut w = Watchdog::new(Duration::from_millis(10)).unwrap();
        w.scan(&pools);
        std::thread::sleep(Duration::from_millis(15));
        w.scan(&pools);
        assert!(w.samples.is_empty(), "sampled: {:?}", w.samples);
        assert!(w.granted.is_empty());
        tx.send(()).unwrap();
        rt.block_on(h).unwrap();
    }

    /// A poll blocked off its CPU is judged by its clock and one `/proc`
    /// read (its state): its sample reads nothing, and its scheduler
    /// statistics are not read for a judgement that does not use them
    /// (they were, two files more, by an eager `zip`).
    #[test]
    fn a_blocked_poll_is_judged_with_one_proc_read() {
        // The runtime's own watchdog does not look in this test's time.
        let rt = one_worker_pool(Duration::from_secs(3600));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (in_tx, in_rx) = std::sync::mpsc::channel::<()>();
        let h = rt.spawn(async move {
            in_tx.send(()).unwrap();
            rx.recv().unwrap();
        });
        in_rx.recv().unwrap();
        let pools = rt.handle().scheduler.pools();
        let mut w = Watchdog::new(Duration::from_millis(20)).unwrap();
        PROC_READS.with(|n| n.set(0));
        scan_until_granted(&mut w, &pools);
        let grant = w.granted.values().next().unwrap();
        assert!(!grant.on_cpu, "a blocked poll read as a hog");
        assert_eq!(PROC_READS.with(std::cell::Cell::get), 1);
        tx.send(()).unwrap();
        rt.block_on(h).unwrap();
        w.clear();
    }

    /// A poll past the threshold (here blocked outside `block_in_place`)
    /// has its deque moved to the pool's queue at the watchdog's first
    /// look past it, with its LIFO task: a sibling looks at a deque only
    /// when the pool's queue is empty, so under a steady stream of work
    /// those tasks waited for the whole poll.
    #[test]
    fn a_long_polls_deque_goes_to_the_pools_queue() {
        // No sibling to take them, none started for the full pool; the
        // runtime's own watchdog looks at nothing: this test's does.
        let rt = one_worker_pool(Duration::from_secs(3600));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (in_tx, in_rx) = std::sync::mpsc::channel::<()>();
        let h = rt.spawn(async move {
            // A to the LIFO slot, then B, which puts A on the deque.
            drop(crate::spawn(async {}));
            drop(crate::spawn(async {}));
            in_tx.send(()).unwrap();
            rx.recv().unwrap();
        });
        in_rx.recv().unwrap();
        // Past the threshold.
        std::thread::sleep(Duration::from_millis(30));
        let pools = rt.handle().scheduler.pools();
        let pool = pools
            .iter()
            .find(|p| p.used_slots().iter().any(|s| !s.stealer.is_empty()))
            .expect("A on the worker's deque");
        assert_eq!(pool.injector.len(), 0);
        let mut w = Watchdog::new(Duration::from_millis(10)).unwrap();
        w.scan(&pools);
        assert!(
            pool.used_slots().iter().all(|s| s.stealer.is_empty()),
            "the long poll's deque was left where no sibling looks"
        );
        assert_eq!(pool.injector.len(), 2, "A and B on the pool's queue");
        tx.send(()).unwrap();
        rt.block_on(h).unwrap();
    }

    /// A granted poll's allowance goes when the poll ends, by its worker:
    /// it lasted until the watchdog's next scan, the pool reading nobody
    /// serving meanwhile (its pushes taking the lock, the rescuer running
    /// its tasks beside the free worker).
    #[test]
    fn a_granted_polls_allowance_goes_as_the_poll_ends() {
        // The runtime's own watchdog grants nothing: this test's does.
        let rt = one_worker_pool(Duration::from_secs(3600));
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let h = rt.spawn(async move { go_rx.recv().unwrap() });
        let pools = rt.handle().scheduler.pools();
        let mut w = Watchdog::new(Duration::from_millis(10)).unwrap();
        scan_until_granted(&mut w, &pools);
        let granted = |n| pools.iter().any(|p| p.idle.snapshot().nr_granted == n);
        assert!(granted(1));
        go_tx.send(()).unwrap();
        rt.block_on(h).unwrap();
        // No scan since: the worker gave it up.
        let start = std::time::Instant::now();
        while !pools.iter().all(|p| p.idle.snapshot().nr_granted == 0) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the allowance outlived its poll"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        w.clear();
    }

    /// The hog's worker, over the limit once it gave its allowance up,
    /// steps down before it runs anything more: it ran what was queued
    /// beside the worker started for the grant (two tasks at once in a
    /// pool of one) until a check every 61 ticks.
    #[test]
    fn a_hogs_worker_steps_down_as_it_gives_its_allowance_up() {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        // The runtime's own watchdog grants nothing: this test's does.
        let rt = one_worker_pool(Duration::from_secs(3600));
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let a = rt.spawn(async move { go_rx.recv().unwrap() });
        // Queued behind the blocked poll: run by the worker the grant
        // starts, and held there until the end.
        let (running, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (r, st) = (running.clone(), stop.clone());
        let b = rt.spawn(async move {
            r.store(true, Ordering::SeqCst);
            while !st.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
        });
        let pools = rt.handle().scheduler.pools();
        let mut w = Watchdog::new(Duration::from_millis(10)).unwrap();
        scan_until_granted(&mut w, &pools);
        let start = std::time::Instant::now();
        while !running.load(Ordering::SeqCst) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no worker started for the grant"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // More work, then the hog's poll ends.
        let ran = Arc::new(AtomicUsize::new(0));
        let more: Vec<_> = (0..10)
            .map(|_| {
                let ran = ran.clone();
                rt.spawn(async move {
                    ran.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        go_tx.send(()).unwrap();
        rt.block_on(a).unwrap();
        // Whatever the time, the pool runs one task at a time: `b`.
        std::thread::sleep(Duration::from_millis(100));
        let beside = ran.load(Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
        assert_eq!(
            beside, 0,
            "the hog's worker ran queued tasks beside the one started for it"
        );
        rt.block_on(b).unwrap();
        for h in more {
            rt.block_on(h).unwrap();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 10);
        w.clear();
    }

    /// A poll granted an allowance that then blocks in `block_in_place`
    /// (a sync server loop, for minutes) slows the watchdog's tick as a
    /// blocked worker does: the grant, kept to be taken again at its
    /// return, kept the fast tick (about 200 wakes a second) for the
    /// whole block.
    #[test]
    fn a_granted_poll_blocked_in_place_does_not_keep_the_tick_fast() {
        // The runtime's own watchdog grants nothing: this test's does.
        let rt = one_worker_pool(Duration::from_secs(3600));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (in_tx, in_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let h = rt.spawn(async move {
            // Long on its CPU (granted), then blocking.
            go_rx.recv().unwrap();
            crate::block_in_place(|| {
                in_tx.send(()).unwrap();
                rx.recv().unwrap();
            })
        });
        let pools = rt.handle().scheduler.pools();
        let mut w = Watchdog::new(Duration::from_millis(10)).unwrap();
        scan_until_granted(&mut w, &pools);
        go_tx.send(()).unwrap();
        in_rx.recv().unwrap();
        for _ in 0..20 {
            w.scan(&pools);
        }
        assert_eq!(w.granted.len(), 1, "kept for the poll's return");
        assert_eq!(w.tick(), IDLE_TICK);
        tx.send(()).unwrap();
        rt.block_on(h).unwrap();
        // The grant and its process-wide mark go (the runtime's own
        // watchdog would revoke them at its next look).
        w.clear();
    }
}
