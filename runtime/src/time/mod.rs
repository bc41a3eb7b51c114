//! Timers: [`sleep`], [`sleep_until`], [`timeout`], [`timeout_at`],
//! [`interval`], [`interval_at`] (and its [`MissedTickBehavior`]).
//!
//! Timers live in the runtime's driver (a hierarchical timing wheel with
//! 1 ms ticks, `driver::wheel`), which the thread turning the driver fires: a timer
//! costs no thread and no syscall of its own, and a million pending ones
//! cost a slab entry (~56 bytes) each. A `Sleep` is armed on its first
//! poll, re-armed in place by [`Sleep::reset`] while it waits, freed when
//! a poll completes it, and cancelled when dropped.
//!
//! Guarantees:
//! - a timer **never fires before its deadline**: deadlines are rounded up
//!   to the next millisecond tick, and a tick fires only once the clock has
//!   passed it; it fires at most about 2 ms plus the driver's and the
//!   pool's wake-up latency after (the tick's rounding, and epoll's wait,
//!   which takes whole milliseconds and rounds up; a long wait ends early
//!   by more than the kernel's timer slack, 0.1% of it, and waits the rest
//!   after: a 10 s sleep was 7-11 ms late, now 1.1-1.5 ms) -- while a thread
//!   turns the driver. A worker that leaves it to run what its turn woke
//!   does not hand it to an idle sibling (`scheduler::services`, "Who
//!   turns the driver"): if that run is one long poll and no other thread
//!   comes to the driver, timers wait for the runtime's watchdog, which
//!   turns it every half CPU-hog threshold, at most 100 ms (5 ms by default); with the
//!   watchdog off (`cpu_hog_threshold(Duration::ZERO)`), for the next
//!   worker to idle. Polls that return soon, as async code's should,
//!   never meet this;
//! - [`timeout`] polls its future **before** its timer, and once more when
//!   the timer is found elapsed (while the task's budget lasts), so a
//!   future that is ready when the deadline passes is not timed out.
//!
//! Creating a timer outside a runtime panics with a message saying where to
//! call it from (as [`crate::spawn`] does). A `Sleep` polled after its
//! runtime shut down panics too if its deadline is still ahead: nothing
//! would ever fire it (one whose deadline has passed completes).
//!
//! ```
//! use std::time::Duration;
//!
//! #[wq::main]
//! async fn main() {
//!     let start = std::time::Instant::now();
//!     wq::time::sleep(Duration::from_millis(20)).await;
//!     assert!(start.elapsed() >= Duration::from_millis(20));
//!
//!     let slow = wq::time::timeout(Duration::from_millis(10), wq::time::sleep(Duration::from_secs(60)));
//!     assert!(slow.await.is_err());
//! }
//! ```

mod interval;
mod sleep;
mod timeout;

pub use interval::{Interval, MissedTickBehavior, interval, interval_at};
pub(crate) use sleep::sleep_on;
pub use sleep::{Sleep, sleep, sleep_until};
pub use timeout::{Elapsed, Timeout, timeout, timeout_at};

pub(crate) use sleep::current_driver_or_panic as sleep_driver;

/// A deadline `d` from now, or about 30 years from now if that overflows
/// `Instant` (as good as never).
pub(crate) fn deadline_in(d: std::time::Duration) -> std::time::Instant {
    saturating_add(std::time::Instant::now(), d)
}

pub(crate) use crate::clock::saturating_add;
