//! Parking a thread of the runtime: on its own futex, or inside the
//! runtime's I/O driver, so that a parked worker answers both a kick and a
//! socket's readiness (tokio's `park.rs` does the same).
//!
//! # States (one atomic per parker)
//! - `EMPTY`: not parked, no wakeup pending.
//! - `PARKED`: parked on its thread (`std::thread::park_timeout`).
//! - `PARKED_DRIVER`: parked in the driver's `epoll_wait` (it holds the
//!   driver: no other thread turns it meanwhile). Only while it waits: as
//!   the wait ends, before the turn runs any waker, the state is `EMPTY`
//!   again, so a wakeup during the rest of the turn (the turn's own wakes
//!   kick this very worker when it is its pool's only idle one) costs no
//!   eventfd write, which would only have made the next turn return at
//!   once.
//! - `NOTIFIED`: a wakeup is pending; the next park returns at once.
//!
//! # Protocol
//! - **Unpark**: swap in `NOTIFIED`; if the state was `PARKED`, unpark the
//!   thread; if `PARKED_DRIVER`, wake the driver (its eventfd). A wakeup
//!   that finds `EMPTY` or `NOTIFIED` does nothing else: the parker will
//!   see `NOTIFIED` before it sleeps.
//! - **Park**: a `NOTIFIED` state is consumed (back to `EMPTY`) and the
//!   park returns. Otherwise `EMPTY` becomes `PARKED` or `PARKED_DRIVER` by
//!   compare-and-swap (a concurrent unpark makes it fail: consume and
//!   return), then the thread sleeps: std's park keeps a token, and the
//!   driver's eventfd stays readable, so a wakeup between the swap and the
//!   sleep is not lost. On waking, the state goes back to `EMPTY` (a
//!   `NOTIFIED` left by the waker is consumed with it). Parks may return
//!   spuriously: callers re-check their condition (`super::idle`'s workers
//!   re-read their slot state under the pool lock).
//!
//! The driver (`crate::driver`) is lent by the runtime's scheduler through
//! [`super::Host::turn_driver`]: whoever takes it turns it for at most the
//! park's timeout and gives it back.
//!
//! # Attending the driver
//! A thread that parks while another holds the driver parks on its futex,
//! for as long as `idle_timeout`: it does not come back when the holder
//! leaves. Most holders come back (a worker kicked out of the driver runs
//! its work and idles again; a busy pool's long polls are covered by the
//! watchdog's turn). Those that may not come back for long call
//! [`super::Host::attend_driver`], which wakes an idle worker to park in
//! it if nobody turns it (while its pool's running workers fill the
//! pool's limit, or a worker of its pool searches, the idle worker is
//! woken without a claim and parks again, in the driver, unless the limit
//! has room and work is queued, which it runs first; a worker searching
//! does not count as coming: `idle::Idle::wake_idle`): `block_on` each
//! time it leaves the driver (or a wake as a waiter) to poll its future
//! after a wake of it, its return covered by the attend before its last
//! poll (the poll may block its thread; not after a turn that
//! only woke other tasks: it parks again at once; with no idle worker and
//! no waiter, it kicks the default pool, which starts one if it may), a
//! worker culled out of the driver, or blocking in `block_in_place` after
//! leaving it (once per stay: [`Parker::was_in_driver`]) or with nobody
//! parked in the driver (it may have been woken to take the driver and
//! found this task first; the worker woken for its deque's work runs
//! that first and does not count; with none woken, it starts a worker if
//! none is idle, the blocked one no longer counting), the watchdog after
//! its zero-wait turn, and a busy worker after its own (for its pool's
//! idlers): a worker that idled during those found the driver taken. The
//! caller fences (`SeqCst`) after giving the driver back and before
//! reading who is parked; a parker counts itself parked, fences
//! (`SeqCst`), then tries the driver: one of the two sees the other
//! (`loom_attending_the_driver_*` model the pair). Without it, with the
//! watchdog off, a timer waited for the next push
//! (`a_timer_fires_after_block_on_leaves_the_driver`,
//! `a_timer_fires_while_block_on_blocks_in_a_poll`,
//! `a_timer_fires_while_the_worker_that_held_the_driver_blocks`, and
//! beside a `block_on`: `..._blocks_beside_a_block_on`,
//! `a_timer_fires_while_block_on_polls_after_the_only_worker_blocked`).
//!
//! A `block_on` thread is no worker: an attend cannot wake it as an idle
//! one. One that finds the driver taken is a **waiter** while it parks
//! (`Services::add_block_on_waiter`, before its second try: a pair the
//! waiters' lock orders, `loom_a_block_on_waiter_*`); an attend that
//! finds no idle worker wakes waiters, the latest first, until one was
//! asleep on its futex (counted as coming; the others sleep on).
//! Off to poll its future, it is no waiter, and one that was attends as
//! if it left the driver (an attend may have counted it).
//!
//! A zero-wait turn holding the driver (a busy worker's maintenance turn,
//! the watchdog's) is no attendance: it is over in microseconds, and a
//! worker that idled meanwhile sleeps on its futex. An attend that finds
//! one marks `attend_after`, fences (`SeqCst`) and looks at the turn
//! again (ended: whoever takes the mark back attends, so exactly one
//! side does); a parker that finds the lock held by anything but a
//! thread parked in it (a zero-wait turn, or any turn taking the lock:
//! `turning` is still 0) marks it too, fences and tries the lock once
//! more. `turning` is cleared after the unlock, so a parked thread's turn
//! reads as parked to its end, running the wakers of its events included:
//! a parker that meets it then sleeps unmarked, as below. The turn's thread, after its
//! turn, fences and takes the mark, and attends (any pool's idle worker,
//! where its own turn woke only its pool's, unless that woke one); with
//! nobody to wake, it kicks the default pool, which starts a worker if it
//! may (or, with that pool's workers all running, a pool with room and
//! tasks: the maker's own, say a strict queue's), as the attend's maker
//! would have (a worker blocking, which counted
//! the driver attended and kicked nothing: the timer waited for the
//! block, `a_timer_fires_while_a_worker_blocks_*` in `scheduler::services`).
//! One of the two sees the other (`loom_an_attend_left_to_a_zero_wait_turn_*`,
//! `loom_a_park_that_meets_a_zero_wait_turn_*`); before, an attend that
//! met such a turn counted the driver as attended, and a worker of
//! another pool that idled during one slept until the watchdog's tick
//! (or, with the watchdog off, the next worker to idle). A parker that
//! finds the driver held by a thread parked in it sleeps unmarked: that
//! thread attends (it comes back, or attends as it leaves for long).

use std::sync::{Arc, OnceLock};

use crate::loom::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crate::driver;

const EMPTY: u8 = 0;
const PARKED: u8 = 1;
const PARKED_DRIVER: u8 = 2;
const NOTIFIED: u8 = 3;

struct Inner {
    state: AtomicU8,
    thread: crate::loom::thread::Thread,
    /// The driver this thread parks in, once it has parked there.
    driver: OnceLock<driver::Handle>,
}

/// The parking side, kept by its thread.
pub(crate) struct Parker {
    inner: Arc<Inner>,
    /// The last park was in the driver.
    in_driver: std::cell::Cell<bool>,
    /// The last park went as far as the driver ([`Parker::tried_driver`]).
    tried_driver: std::cell::Cell<bool>,
    /// The last park ended on a wakeup ([`Parker::was_woken`]).
    woken: std::cell::Cell<bool>,
    /// A negative model's fault: `enter` stores its state over whatever is
    /// there, a wakeup included.
    #[cfg(loom)]
    plain_enter: std::cell::Cell<bool>,
}

/// The waking side: cloneable, `Send + Sync`.
#[derive(Clone)]
pub(crate) struct Unparker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Unparker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unparker")
            .field("state", &self.inner.state.load(Ordering::Relaxed))
            .finish()
    }
}

impl Parker {
    /// A parker for the calling thread.
    pub(crate) fn new() -> Parker {
        Parker {
            inner: Arc::new(Inner {
                state: AtomicU8::new(EMPTY),
                thread: crate::loom::thread::current(),
                driver: OnceLock::new(),
            }),
            in_driver: std::cell::Cell::new(false),
            tried_driver: std::cell::Cell::new(false),
            woken: std::cell::Cell::new(false),
            #[cfg(loom)]
            plain_enter: std::cell::Cell::new(false),
        }
    }

    pub(crate) fn unparker(&self) -> Unparker {
        Unparker {
            inner: self.inner.clone(),
        }
    }

    /// Consumes a pending wakeup, if any.
    fn consume(&self) -> bool {
        // Acquire: what the waker did before unparking is visible after
        // the park returns.
        let woken = self
            .inner
            .state
            .compare_exchange(NOTIFIED, EMPTY, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        self.woken.set(self.woken.get() || woken);
        woken
    }

    /// Enters `parked` from `EMPTY`; false if a wakeup came first (it is
    /// consumed).
    fn enter(&self, parked: u8) -> bool {
        #[cfg(loom)]
        if self.plain_enter.get() {
            self.inner.state.store(parked, Ordering::Release);
            return true;
        }
        match self.inner.state.compare_exchange(
            EMPTY,
            parked,
            // Release/Acquire: pairs with the waker's swap.
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(_) => {
                // NOTIFIED: consume it.
                self.inner.state.swap(EMPTY, Ordering::Acquire);
                self.woken.set(true);
                false
            }
        }
    }

    fn leave(&self) {
        // Acquire: as in `consume`.
        if self.inner.state.swap(EMPTY, Ordering::Acquire) == NOTIFIED {
            self.woken.set(true);
        }
    }

    /// Parks for at most `timeout` (see the module docs), in the driver if
    /// `turn` lends it: `turn` is called with a function that turns the
    /// driver it holds, and returns whether it could (the driver exists and
    /// nobody else turns it). Returns how many tasks a driver turn woke.
    pub(crate) fn park(
        &self,
        timeout: Duration,
        turn: impl FnOnce(&mut dyn FnMut(&mut driver::Driver)) -> bool,
    ) -> usize {
        self.in_driver.set(false);
        self.tried_driver.set(false);
        self.woken.set(false);
        if self.consume() {
            return 0;
        }
        self.tried_driver.set(true);
        // The parker's side of the "attending the driver" pair (module
        // docs): this thread counted itself parked (the pool's hint) before
        // it tries the driver's lock. A SeqCst read-modify-write of the
        // hint does not order the lock's later load on every CPU (ARM may
        // read the lock before the count is visible): the fence does.
        crate::loom::sync::atomic::fence(Ordering::SeqCst);
        let mut woken = None;
        let lent = turn(&mut |d: &mut driver::Driver| {
            let _ = self.inner.driver.set(d.handle().clone());
            woken = Some(if self.enter(PARKED_DRIVER) {
                // Awake once the wait is over: a wakeup while the turn
                // runs wakers (this thread's own kicks included) leaves
                // `NOTIFIED` and writes no eventfd, which would only make
                // the next turn return at once; the second `leave`
                // consumes it, as this park returns anyway.
                let n = d.turn_then(Some(timeout), &mut || self.leave());
                self.leave();
                n
            } else {
                0
            });
        });
        if lent && let Some(n) = woken {
            self.in_driver.set(true);
            return n;
        }
        if self.enter(PARKED) {
            crate::loom::thread::park_timeout(timeout);
            self.leave();
        }
        0
    }
}

impl Parker {
    /// Whether the last [`park`](Parker::park) held the driver: the thread
    /// leaves it to nobody until it parks again (`attend_driver`).
    pub(crate) fn was_in_driver(&self) -> bool {
        self.in_driver.get()
    }

    /// Whether the last [`park`](Parker::park) ended on (or found) a
    /// wakeup: an unpark, not a driver turn's events or a timeout alone.
    /// A worker back unwoken is most likely still idle (`Idle::leave_idle`
    /// looks at the queues before the pool lock then).
    pub(crate) fn was_woken(&self) -> bool {
        self.woken.get()
    }

    /// Whether the last [`park`](Parker::park) went as far as the driver
    /// (held it, or found it held): one that returned on a wakeup already
    /// pending did not, and says nothing of who attends the driver (a
    /// worker that left it earlier still owes an attend: `worker`'s
    /// `left_driver`).
    pub(crate) fn tried_driver(&self) -> bool {
        self.tried_driver.get()
    }
}

impl Unparker {
    /// The thread it wakes (tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn thread_id(&self) -> std::thread::ThreadId {
        self.inner.thread.id()
    }

    /// Whether the thread is parked on its futex, or about to be (tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn asleep(&self) -> bool {
        self.inner.state.load(Ordering::Acquire) == PARKED
    }

    /// Wakes the parked thread, or makes its next park return at once.
    pub(crate) fn unpark(&self) {
        self.unpark_asleep();
    }

    /// [`unpark`](Unparker::unpark), saying whether the thread was asleep
    /// on its futex (and so wakes now, to look again: a thread that is
    /// running, or asleep in the driver, is not coming anywhere for this).
    pub(crate) fn unpark_asleep(&self) -> bool {
        // AcqRel: publishes what the waker did (Release), and orders the
        // read of the parked state (Acquire).
        match self.inner.state.swap(NOTIFIED, Ordering::AcqRel) {
            PARKED => {
                self.inner.thread.unpark();
                true
            }
            PARKED_DRIVER => {
                if let Some(d) = self.inner.driver.get() {
                    d.unpark();
                }
                false
            }
            _ => false,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A waker that unparks a parker.
    struct Unpark(Unparker);

    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    #[test]
    fn an_unpark_before_the_park_is_not_lost() {
        let p = Parker::new();
        p.unparker().unpark();
        let t = Instant::now();
        p.park(Duration::from_secs(10), |_| false);
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(p.was_woken());
    }

    /// A park that returns on a wakeup already pending never went to the
    /// driver: it says so, and the worker keeps what it owed the driver
    /// from before (it cleared its "left the driver", and a
    /// `block_in_place` after it attended nobody). One that found the
    /// driver taken did go there.
    #[test]
    fn a_park_on_a_pending_wakeup_says_it_never_tried_the_driver() {
        let p = Parker::new();
        p.unparker().unpark();
        let mut asked = false;
        p.park(Duration::from_secs(10), |_| {
            asked = true;
            false
        });
        assert!(!asked && !p.tried_driver() && !p.was_in_driver());
        p.unparker().unpark();
        p.consume();
        p.park(Duration::from_millis(1), |_| false);
        assert!(p.tried_driver() && !p.was_in_driver());
    }

    #[test]
    fn an_unpark_wakes_a_thread_parked_on_its_futex_or_in_the_driver() {
        for in_driver in [false, true] {
            let (tx, rx) = std::sync::mpsc::channel();
            let t = std::thread::spawn(move || {
                let p = Parker::new();
                let mut driver = driver::Driver::new().unwrap();
                tx.send(p.unparker()).unwrap();
                let start = Instant::now();
                // Parked again after a return that was no wakeup (a
                // futex's spurious return, an interrupted epoll_wait), as
                // a worker does.
                while start.elapsed() < Duration::from_secs(30) {
                    p.park(Duration::from_secs(30), |f| {
                        if in_driver {
                            f(&mut driver);
                        }
                        in_driver
                    });
                    if p.was_woken() {
                        break;
                    }
                }
                assert!(p.was_woken(), "in driver {in_driver}");
                start.elapsed()
            });
            let u = rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(20));
            u.unpark();
            let slept = t.join().unwrap();
            assert!(
                slept < Duration::from_secs(10),
                "in driver {in_driver}: slept {slept:?}"
            );
        }
    }

    /// A wakeup of this very parker from a waker its own driver turn runs
    /// (a worker whose turn wakes a task and kicks itself, its pool's only
    /// idle worker) writes no eventfd: the next turn waits as asked.
    #[test]
    fn a_wake_during_its_own_turn_leaves_the_next_turn_waiting() {
        let p = Parker::new();
        let mut driver = park_through_a_readiness(&p, p.unparker());
        assert!(p.was_woken(), "its own turn's wake is a wakeup");
        let start = Instant::now();
        driver.turn(Some(Duration::from_millis(200)));
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(150),
            "the next turn returned after {waited:?}: the wake wrote the eventfd"
        );
    }

    /// Parks `p` in a new driver whose turn sees a socket readable, its
    /// waiter's waker unparking `wakes`; returns the driver (the socket
    /// deregistered).
    fn park_through_a_readiness(p: &Parker, wakes: Unparker) -> driver::Driver {
        use crate::driver::scheduled_io::Direction;
        use std::io::Write;
        let mut driver = driver::Driver::new().unwrap();
        let h = driver.handle().clone();
        let (mut a, mut a_peer) = mio::net::UnixStream::pair().unwrap();
        let r = h.register(&mut a, false).unwrap();
        let waker = std::task::Waker::from(Arc::new(Unpark(wakes)));
        let mut key = None;
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(
            r.io.poll_ready(&mut cx, Direction::Read, &mut key)
                .is_pending()
        );
        a_peer.write_all(b"x").unwrap();
        // The turn in this park sees `a` readable and runs the waker.
        let start = Instant::now();
        p.park(Duration::from_secs(10), |f| {
            f(&mut driver);
            true
        });
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the event ended the turn"
        );
        r.io.release(&mut key);
        h.deregister(&mut a, &r).unwrap();
        driver
    }

    #[test]
    fn a_park_times_out() {
        let p = Parker::new();
        let t = Instant::now();
        p.park(Duration::from_millis(20), |_| false);
        assert!(t.elapsed() >= Duration::from_millis(15));
        assert!(!p.was_woken());
    }

    /// A park in the driver that returns for an event whose waker is not
    /// this parker's (a task of another pool, say) was not woken: the
    /// worker is most likely still idle (`Idle::leave_idle`'s
    /// `look_first`).
    #[test]
    fn a_driver_turn_for_others_is_no_wakeup() {
        let p = Parker::new();
        let other = Parker::new();
        let _driver = park_through_a_readiness(&p, other.unparker());
        assert!(p.was_in_driver() && !p.was_woken());
        assert!(other.consume(), "the other parker was woken");
    }
}

/// The parker's own states on the shipped [`Parker`] (no driver lent): an
/// unpark racing a park is never lost; with `enter` a plain store (the
/// fault), the park overwrites a wakeup that came first and sleeps for
/// ever (loom's deadlock).
#[cfg(all(test, loom))]
mod loom_parker {
    use super::*;

    fn unpark_racing_a_park(plain_enter: bool) {
        loom::model(move || {
            let p = Parker::new();
            p.plain_enter.set(plain_enter);
            let u = p.unparker();
            let waker = loom::thread::spawn(move || u.unpark());
            // Loom's park has no timeout: it returns on the unpark alone.
            let _ = p.park(Duration::from_secs(1), |_| false);
            assert!(p.was_woken(), "the park returned without its wakeup");
            waker.join().unwrap();
        });
    }

    #[test]
    fn loom_an_unpark_racing_a_park_is_never_lost() {
        unpark_racing_a_park(false);
    }

    #[test]
    #[should_panic(expected = "deadlock")]
    fn loom_a_park_that_stores_over_a_wakeup_sleeps_for_ever() {
        unpark_racing_a_park(true);
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The store-buffering pairs of "Attending the driver" (module docs),
    //! as their two sides touch memory: a leaver and a parker (the driver's
    //! lock word and the pool's hint of parked workers), an attend left to
    //! a zero-wait turn, and a parker that meets one (`attend_after`); each
    //! with a negative control. (The real sides use `std` types, the
    //! driver's mutex and the services' flags, and a driver loom cannot
    //! run: these models check the orderings they rely on, on atomics of
    //! their own -- a copy, not the shipped code, unlike `loom_parker`'s
    //! models of the parker's states.)
    use crate::loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU8;

    fn model(parker_fences: bool) {
        loom::model(move || {
            // The driver is held (by a `block_on`, say); nobody is parked.
            let locked = Arc::new(AtomicBool::new(true));
            let parked = Arc::new(AtomicUsize::new(0));
            let (l2, p2) = (locked.clone(), parked.clone());
            let leaver = loom::thread::spawn(move || {
                // Gives the driver back, fences, reads who is parked
                // (`Host::attend_driver`).
                l2.store(false, Ordering::Release);
                fence(Ordering::SeqCst);
                p2.load(Ordering::Relaxed) > 0
            });
            // A worker counts itself parked (the hint's SeqCst RMW), then
            // tries the driver's lock (a failed try_lock is a plain load).
            parked.fetch_add(1, Ordering::SeqCst);
            if parker_fences {
                fence(Ordering::SeqCst);
            }
            let took = locked
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok();
            let attended = leaver.join().unwrap();
            assert!(
                took || attended,
                "the driver is free, the worker parked off it, and nobody wakes a worker to turn it"
            );
        });
    }

    /// An attend that finds a zero-wait turn holding the driver leaves the
    /// attend to that turn's thread (`Services::attend`): the attender
    /// marks `attend_after`, fences and looks at the turn again; the turn's
    /// thread clears its turn, fences and takes the mark. One of the two
    /// attends.
    fn deferred_model(attender_fences: bool) {
        loom::model(move || {
            const ZERO_WAIT: u8 = 2;
            let turning = Arc::new(AtomicU8::new(ZERO_WAIT));
            let attend_after = Arc::new(AtomicBool::new(false));
            let (t2, a2) = (turning.clone(), attend_after.clone());
            let turner = loom::thread::spawn(move || {
                // The zero-wait turn ends (`Turned`'s drop), then the
                // thread fences and takes the mark (`take_deferred_attend`).
                t2.store(0, Ordering::Relaxed);
                fence(Ordering::SeqCst);
                a2.load(Ordering::Relaxed) && a2.swap(false, Ordering::Relaxed)
            });
            // `Host::attend_driver`: its fence, then `Services::attend`.
            fence(Ordering::SeqCst);
            let attends_itself = match turning.load(Ordering::Relaxed) {
                0 => true,
                _ => {
                    attend_after.store(true, Ordering::Relaxed);
                    if attender_fences {
                        fence(Ordering::SeqCst);
                    }
                    // Ended: whoever takes the mark back attends.
                    turning.load(Ordering::Relaxed) == 0
                        && attend_after.swap(false, Ordering::Relaxed)
                }
            };
            let turner_attends = turner.join().unwrap();
            assert!(
                attends_itself || turner_attends,
                "the attend was left to a zero-wait turn that ended without it: nobody wakes a worker"
            );
            assert!(
                !(attends_itself && turner_attends),
                "both sides attend: two workers woken for one driver"
            );
        });
    }

    /// A thread about to park finds the driver's lock held by a zero-wait
    /// turn (`Services::turn_driver`): it marks `attend_after`, fences and
    /// tries the lock once more; the turn's thread unlocks, fences and takes
    /// the mark. Either the try takes the driver or the turn's thread
    /// attends (wakes an idle worker, this one among them; a `block_on`
    /// thread is no worker: it is among the waiters an attend that finds
    /// no worker wakes, `Services::add_block_on_waiter`).
    fn parker_model(parker_fences: bool) {
        loom::model(move || {
            let locked = Arc::new(AtomicBool::new(true));
            let attend_after = Arc::new(AtomicBool::new(false));
            let (l2, a2) = (locked.clone(), attend_after.clone());
            let turner = loom::thread::spawn(move || {
                l2.store(false, Ordering::Release);
                fence(Ordering::SeqCst);
                a2.load(Ordering::Relaxed) && a2.swap(false, Ordering::Relaxed)
            });
            // Its first try failed (the lock was held): mark, fence, retry.
            attend_after.store(true, Ordering::Relaxed);
            if parker_fences {
                fence(Ordering::SeqCst);
            }
            let took = locked
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok();
            let attended = turner.join().unwrap();
            assert!(
                took || attended,
                "the parker slept off a driver nobody turns, and nobody wakes a worker"
            );
        });
    }

    /// A `block_on` thread that found the driver taken registers as a
    /// waiter and tries the lock again; the holder gives the lock back and
    /// an attend that finds no worker reads the waiters. Under the
    /// waiters' lock (`Services::add_block_on_waiter`) one side sees the
    /// other with no fence: the lock's acquisitions are ordered, and the
    /// later one happens after the earlier one's side (the fence the
    /// waiter makes is not needed for this pair). With the registration a
    /// relaxed flag and no fence, the waiter is missed.
    fn waiter_model(under_lock: bool) {
        loom::model(move || {
            let locked = Arc::new(AtomicBool::new(true));
            let waiters = Arc::new(loom::sync::Mutex::new(0usize));
            let flag = Arc::new(AtomicBool::new(false));
            let (l2, w2, f2) = (locked.clone(), waiters.clone(), flag.clone());
            let holder = loom::thread::spawn(move || {
                l2.store(false, Ordering::Release);
                if under_lock {
                    *w2.lock().unwrap() > 0
                } else {
                    f2.load(Ordering::Relaxed)
                }
            });
            if under_lock {
                *waiters.lock().unwrap() += 1;
            } else {
                flag.store(true, Ordering::Relaxed);
            }
            let took = locked
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok();
            let woke = holder.join().unwrap();
            assert!(
                took || woke,
                "the waiter slept off a driver nobody turns, and nobody wakes it"
            );
        });
    }

    #[test]
    fn loom_a_block_on_waiter_takes_the_driver_or_is_woken() {
        waiter_model(true);
    }

    #[test]
    #[should_panic(expected = "nobody wakes it")]
    fn loom_a_block_on_waiter_without_the_lock_or_a_fence_is_missed() {
        waiter_model(false);
    }

    #[test]
    fn loom_a_park_that_meets_a_zero_wait_turn_takes_the_driver_or_is_attended() {
        parker_model(true);
    }

    #[test]
    #[should_panic(expected = "nobody wakes a worker")]
    fn loom_a_park_that_meets_a_zero_wait_turn_without_the_fence_is_missed() {
        parker_model(false);
    }

    #[test]
    fn loom_attending_the_driver_one_side_sees_the_other() {
        model(true);
    }

    #[test]
    fn loom_an_attend_left_to_a_zero_wait_turn_is_done_by_one_side() {
        deferred_model(true);
    }

    #[test]
    #[should_panic(expected = "nobody wakes a worker")]
    fn loom_an_attend_left_to_a_zero_wait_turn_without_the_fence_is_lost() {
        deferred_model(false);
    }

    #[test]
    #[should_panic(expected = "nobody wakes a worker")]
    fn loom_attending_the_driver_without_the_parkers_fence_is_missed() {
        model(false);
    }
}
