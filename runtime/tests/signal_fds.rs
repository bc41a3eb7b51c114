//! Signal listeners leave no file descriptor behind. Alone in its test
//! binary: it counts the process's descriptors, which other tests' runtimes
//! open and close.

use wq::signal::unix::{SignalKind, signal};

mod common;

/// A dropped `Signal` closes both ends of its socket pair (the handler's
/// write end is closed when its action is unregistered).
#[test]
fn dropped_signals_leave_no_file_descriptors() {
    wq::Runtime::builder().build().unwrap().block_on(async {
        // The driver's own descriptors exist before the count.
        drop(signal(SignalKind::window_change()).unwrap());
        let before = common::open_fds();
        for _ in 0..100 {
            drop(signal(SignalKind::window_change()).unwrap());
        }
        assert_eq!(common::open_fds(), before);
    });
}
