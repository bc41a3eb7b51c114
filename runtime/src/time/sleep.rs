//! [`Sleep`], [`sleep`] and [`sleep_until`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::driver;

/// A future that completes at its deadline. Made by [`sleep`] and
/// [`sleep_until`].
///
/// It is `Unpin`: it can be moved, stored and re-armed with
/// [`reset`](Sleep::reset) without pinning. Dropping it cancels the timer.
///
/// ```
/// use std::time::{Duration, Instant};
///
/// #[wq::main]
/// async fn main() {
///     let mut s = wq::time::sleep(Duration::from_secs(3600));
///     // Changed our mind: wake in 5 ms instead, same timer.
///     s.reset(Instant::now() + Duration::from_millis(5));
///     s.await;
/// }
/// ```
#[must_use = "a Sleep does nothing unless .awaited or polled"]
pub struct Sleep {
    driver: driver::Handle,
    deadline: Instant,
    /// The deadline's tick (rounded up).
    tick: u64,
    /// The wheel entry, once armed.
    key: Option<usize>,
    fired: bool,
    /// The timer shard `key` is in: that of the thread that armed it
    /// (`driver::timers`; beside `fired`, so a `Sleep` is no larger).
    shard: u8,
}

/// Waits until `duration` has passed.
///
/// # Panics
/// Outside a wq runtime (call it from a task, inside `Runtime::block_on`
/// or `#[wq::main]`, or after `Runtime::enter`), if the runtime's driver
/// cannot be created (epoll: the process is out of file descriptors), or
/// in a runtime that shut down before it had made its driver. A sleep of
/// a runtime that has shut down (a `Handle::block_on` after the `Runtime`
/// was dropped, a `Drop` running in the shutdown) panics when it is
/// polled with its deadline still ahead, and completes if the deadline
/// has passed, as the [module docs](crate::time) say.
///
/// ```
/// # #[wq::main] async fn main() {
/// wq::time::sleep(std::time::Duration::from_millis(1)).await;
/// # }
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    Sleep::new(
        current_driver_or_panic("wq::time::sleep"),
        super::deadline_in(duration),
    )
}

/// [`sleep`] on `driver`'s timers (a socket's own, whatever runtime, if
/// any, the polling thread is in).
pub(crate) fn sleep_on(driver: driver::Handle, duration: Duration) -> Sleep {
    Sleep::new(driver, super::deadline_in(duration))
}

/// Waits until `deadline`. A deadline in the past completes at once.
///
/// # Panics
/// As [`sleep`].
///
/// ```
/// # #[wq::main] async fn main() {
/// let at = std::time::Instant::now() + std::time::Duration::from_millis(2);
/// wq::time::sleep_until(at).await;
/// assert!(std::time::Instant::now() >= at);
/// # }
/// ```
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep::new(current_driver_or_panic("wq::time::sleep_until"), deadline)
}

/// The current runtime's driver, or a panic naming `what`.
pub(crate) fn current_driver_or_panic(what: &str) -> driver::Handle {
    crate::scheduler::services::current_driver(what)
        .unwrap_or_else(|e| panic!("{what}: the runtime's timer driver is unavailable: {e}"))
}

impl Sleep {
    pub(crate) fn new(driver: driver::Handle, deadline: Instant) -> Sleep {
        let tick = driver.tick_ceil(deadline);
        Sleep {
            driver,
            deadline,
            tick,
            key: None,
            fired: false,
            shard: 0,
        }
    }

    /// Frees its wheel entry, if armed (the entry's waker is dropped
    /// after the shard's lock).
    fn disarm(&mut self) {
        if let Some(key) = self.key.take() {
            let shard = usize::from(self.shard);
            let waker = self
                .driver
                .with_timers(shard, |t| (t.wheel.remove(key), None));
            drop(waker);
        }
    }

    /// When it completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        self.fired || self.passed()
    }

    /// Whether the deadline has passed by the clock; read only when the
    /// coarse clock cannot tell (`driver::coarse`).
    #[inline]
    fn passed(&self) -> bool {
        match self.driver.coarse_check(self.tick) {
            driver::coarse::Coarse::Passed => true,
            driver::coarse::Coarse::Ahead => false,
            driver::coarse::Coarse::Near => Instant::now() >= self.deadline,
        }
    }

    /// Moves the deadline to `deadline`, keeping the same timer (no new
    /// allocation) when the sleep has not completed and the new deadline
    /// is still ahead; one already past completes the sleep at once (its
    /// timer is freed, and a later reset to the future arms a new one when
    /// next polled). A sleep that completed (its timer freed by the poll
    /// that completed it) can be reset and awaited again: its next poll
    /// arms a new timer.
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.tick = self.driver.tick_ceil(deadline);
        self.fired = false;
        let shard = usize::from(self.shard);
        if let Some(key) = self.key
            && self.passed()
        {
            // Past by the clock, though maybe not by the driver's last turn
            // (the wheel's time): fired now, as a first poll would.
            let waker = self
                .driver
                .with_timers(shard, |t| (t.wheel.remove(key), None));
            self.key = None;
            self.fired = true;
            // A task waiting on this sleep (it may not be the caller's)
            // must see it fire, as from the driver.
            if let Some(w) = waker {
                w.wake();
            }
        } else if let Some(key) = self.key {
            let tick = self.tick;
            let due = self
                .driver
                .with_timers(shard, |t| match t.wheel.reset(key, tick) {
                    Ok(()) => (None, Some(tick)),
                    // Due by the wheel's time: freed, as above (the reset
                    // took its waker).
                    Err(waker) => {
                        let taken = t.wheel.remove(key);
                        debug_assert!(taken.is_none());
                        (Some(waker), None)
                    }
                });
            if let Some(waker) = due {
                self.key = None;
                self.fired = true;
                // Due already: a task waiting on this sleep (it may not be
                // the caller's) must see it fire, as from the driver.
                if let Some(w) = waker {
                    w.wake();
                }
            }
        }
    }
}

/// The number that picks this thread's timer shard (`driver::timers`): on
/// a worker, its number among its runtime's live workers (taken at its
/// start), so a runtime's workers spread over the shards whatever else
/// arms timers. (Numbers handed out per process in order of first arm
/// gave two workers one shard whenever a thread of another runtime, a
/// `block_on` or a blocking job armed between their first arms; the CPU a
/// worker stands for put every worker on one or two shards where a CPU
/// quota leaves fewer workers than a pod has CPUs: at 2 of 16 CPUs,
/// workers of CPUs 0, 4, 8 and 12, all on shard 0 of 2.) Elsewhere, its
/// number among the other threads that arm timers ([`arming_thread`]).
fn arming_number() -> usize {
    crate::pool::current::worker_number().unwrap_or_else(arming_thread)
}

/// This thread's number among the threads that arm timers, given at its
/// first arm and given back when it exits: the lowest number no live
/// arming thread holds, so a thread started after another exited takes
/// its number (and its shard), not a new one. (A process-wide counter
/// numbered every thread that ever armed a timer.)
fn arming_thread() -> usize {
    use crate::pool::current::Numbers;
    /// Arming threads' numbers.
    static NUMBERS: std::sync::Mutex<Numbers> = std::sync::Mutex::new(Numbers::new());

    /// A thread's number, given back when the thread exits.
    struct Number(usize);

    impl Drop for Number {
        fn drop(&mut self) {
            crate::loom::lock(&NUMBERS).give(self.0);
        }
    }

    thread_local! {
        static THIS: Number = Number(crate::loom::lock(&NUMBERS).take());
    }
    // Only spreading matters: a thread whose locals are being destroyed
    // takes shard 0.
    THIS.try_with(|n| n.0).unwrap_or(0)
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match std::task::ready!(self.get_mut().poll_unless_shut_down(cx)) {
            Ok(()) => Poll::Ready(()),
            Err(ShutDown) => panic!(
                "wq::time::Sleep polled after its runtime shut down: its deadline can never be reached; keep the runtime alive while timers are awaited"
            ),
        }
    }
}

/// A [`Sleep`] polled after its runtime's driver shut down, with its
/// deadline still ahead: it can never fire.
#[derive(Debug)]
pub(crate) struct ShutDown;

impl Sleep {
    /// [`Future::poll`], with its runtime's shutdown (the deadline still
    /// ahead) an error rather than a panic: for wq's own waits (a socket's
    /// back-off), which end with an I/O error then, as the socket's
    /// operations do.
    pub(crate) fn poll_unless_shut_down(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ShutDown>> {
        // An operation of the task's budget (`coop`): a loop over sleeps
        // already due yields its worker every 128.
        std::task::ready!(crate::coop::poll_proceed(cx));
        let done = self.poll_deadline(cx);
        if done.is_ready() {
            crate::coop::spend();
        }
        done
    }

    /// [`Sleep::poll_unless_shut_down`] without the budget.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ShutDown>> {
        let this = self;
        if this.fired {
            return Poll::Ready(Ok(()));
        }
        // The wheel fires by the time of the driver's last turn, which may
        // be well behind the clock (this task may have run since): a
        // deadline the clock has passed completes now, unarmed, or armed
        // (its entry freed: one lock, as the re-poll's would be). The
        // clock is read only for a deadline near now (`driver::coarse`).
        if this.passed() {
            this.fired = true;
            this.disarm();
            return Poll::Ready(Ok(()));
        }
        let tick = this.tick;
        let key = this.key;
        if key.is_none() {
            // Armed on this thread's shard, kept until dropped.
            let shard = this.driver.timer_shard(arming_number());
            this.shard = u8::try_from(shard).expect("at most 64 timer shards");
        }
        let shard = usize::from(this.shard);
        // A replaced waker is dropped after the shard's lock.
        let mut replaced = None;
        let (fired, key, shut_down) = this.driver.with_timers(shard, |t| {
            let shut_down = t.shut_down;
            match key {
                _ if shut_down => ((true, key, true), None),
                Some(key) => (
                    (
                        t.wheel.poll(key, cx.waker(), &mut replaced),
                        Some(key),
                        false,
                    ),
                    None,
                ),
                None => {
                    let (key, fired) = t.wheel.insert(tick, cx.waker());
                    ((fired, Some(key), false), (!fired).then_some(tick))
                }
            }
        });
        drop(replaced);
        this.key = key;
        if shut_down && Instant::now() < this.deadline {
            return Poll::Ready(Err(ShutDown));
        }
        if fired {
            this.fired = true;
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.disarm();
    }
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .field("fired", &self.fired)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "hyper")]
impl hyper::rt::Sleep for Sleep {}

#[cfg(all(test, not(loom)))]
mod tests {
    use crate::pool::current::Numbers;

    /// Arms a timer an hour ahead here; gives the shard it armed on and
    /// how many its driver has.
    fn armed_shard() -> (usize, usize) {
        let mut s = crate::time::sleep(std::time::Duration::from_secs(3600));
        let waker = futures::task::noop_waker();
        let p = s.poll_deadline(&mut std::task::Context::from_waker(&waker));
        assert!(p.is_pending());
        (usize::from(s.shard), s.driver.timer_shards())
    }

    /// Two workers arm on shards of their own, though another thread
    /// armed between their first arms (and lives on). With numbers handed
    /// out per process in order of first arm, they shared one.
    #[cfg(not(loom))]
    #[test]
    fn workers_arm_on_shards_of_their_own_whoever_armed_between() {
        use crate::{Runtime, Scope, Topology};
        // The default scope's pool is the one under test: the driver's
        // creation starts a worker there if it has none (to park in the
        // driver), which would take a number of its own. Strict: CPU 0's
        // worker, idle, took CPU 1's task from its queue while CPU 1's
        // worker was starting (a loaded machine), and armed on its own
        // shard (seen once in CI).
        let rt = Runtime::builder()
            .topology(Topology::synthetic("core:2 pu:1").unwrap())
            .default_scope(Scope::Cpu)
            .affinity_strict(true)
            .build()
            .unwrap();
        let h = rt.handle().clone();
        let on_cpu = |cpu: usize| {
            rt.block_on(h.spawn_on_cpu(cpu, Scope::Cpu, async { armed_shard() }))
                .unwrap()
        };
        let (a, shards) = on_cpu(0);
        let (armed, stay) = std::sync::mpsc::channel::<()>();
        let (go, gone) = std::sync::mpsc::channel::<()>();
        let h2 = h.clone();
        let between = std::thread::spawn(move || {
            let _ = h2.block_on(async { armed_shard() });
            armed.send(()).unwrap();
            // Alive (its number held) until the second worker has armed.
            gone.recv().unwrap();
        });
        stay.recv().unwrap();
        let (b, _) = on_cpu(1);
        go.send(()).unwrap();
        between.join().unwrap();
        if shards >= 2 {
            assert_ne!(a, b, "cpu 0's worker and cpu 1's on one of {shards} shards");
        }
    }

    /// A CPU quota leaves a pod of 8 CPUs 2 workers, standing for CPUs 0
    /// and 4: with the shard picked by that CPU, both took shard 0 of 2.
    #[cfg(not(loom))]
    #[test]
    fn workers_of_a_pod_wider_than_its_workers_spread_over_the_shards() {
        let ((a, shards), (b, _)) = crate::pool::current::two_workers::on_two_workers(armed_shard);
        if shards >= 2 {
            assert_ne!(a, b, "the pod's two workers on one of {shards} shards");
        }
    }

    #[test]
    fn a_thread_number_given_back_is_the_next_taken() {
        let mut n = Numbers::new();
        let (a, b, c) = (n.take(), n.take(), n.take());
        assert_eq!((a, b, c), (0, 1, 2));
        // Worker 1 is culled; its replacement takes its number (and its
        // timer shard), not 3.
        n.give(b);
        assert_eq!(n.take(), 1);
        n.give(c);
        n.give(a);
        assert_eq!((n.take(), n.take(), n.take()), (0, 2, 3));
    }
}
