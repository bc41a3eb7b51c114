//! Signals (`wq::signal`): deliveries reach `recv`, every listener of a
//! kind sees each one, ctrl_c listens from its call, a signal that cannot
//! be caught is refused with a reason, and a dropped listener's handler
//! is gone. In a test binary of their own: they raise signals at the
//! process.

use std::time::Duration;

use wq::signal::unix::{SignalKind, signal};

mod common;

fn rt() -> wq::Runtime {
    wq::Runtime::builder().build().unwrap()
}

fn raise(sig: libc::c_int) {
    // SAFETY: raise takes a plain signal number; a handler is installed
    // for it by the time each test raises it.
    assert_eq!(unsafe { libc::raise(sig) }, 0);
}

/// `recv` within 10 s, or the test fails (never hangs).
async fn recv_in_time(s: &mut wq::signal::unix::Signal) {
    wq::time::timeout(Duration::from_secs(10), s.recv())
        .await
        .expect("no delivery within 10 s")
        .expect("the driver shut down");
}

#[test]
fn a_delivery_completes_recv_and_every_listener_sees_it() {
    rt().block_on(async {
        let mut a = signal(SignalKind::user_defined1()).unwrap();
        let mut b = signal(SignalKind::user_defined1()).unwrap();
        assert_eq!(a.kind(), SignalKind::user_defined1());
        assert_eq!(SignalKind::from(libc::SIGUSR1), SignalKind::user_defined1());
        assert_eq!(libc::c_int::from(SignalKind::alarm()), libc::SIGALRM);
        raise(libc::SIGUSR1);
        recv_in_time(&mut a).await;
        recv_in_time(&mut b).await;
        // Nothing more is pending: the next recv waits for the next delivery.
        assert!(
            wq::time::timeout(Duration::from_millis(50), a.recv())
                .await
                .is_err(),
            "a recv completed with no delivery"
        );
        raise(libc::SIGUSR1);
        recv_in_time(&mut a).await;
    });
}

#[test]
fn a_delivery_before_recv_is_kept_and_one_from_a_spawned_task_is_seen() {
    rt().block_on(async {
        let mut s = signal(SignalKind::user_defined2()).unwrap();
        raise(libc::SIGUSR2);
        raise(libc::SIGUSR2);
        recv_in_time(&mut s).await;
        // Both were drained: the waiter below needs the third delivery.
        assert!(
            wq::time::timeout(Duration::from_millis(50), s.recv())
                .await
                .is_err(),
            "a recv completed with no delivery"
        );
        let waiter = wq::spawn(async move {
            recv_in_time(&mut s).await;
        });
        wq::time::sleep(Duration::from_millis(20)).await;
        raise(libc::SIGUSR2);
        waiter.await.unwrap();
    });
}

/// The tests that listen for SIGINT or raise it, one at a time (every
/// listener sees every delivery).
static SIGINT: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn ctrl_c_listens_from_its_call() {
    let _one = SIGINT.lock().unwrap_or_else(|e| e.into_inner());
    rt().block_on(async {
        let stop = wq::signal::ctrl_c();
        // Raised before the first poll: kept, and the process lives on.
        raise(libc::SIGINT);
        wq::time::timeout(Duration::from_secs(10), stop)
            .await
            .expect("ctrl_c did not complete")
            .unwrap();
    });
}

/// A `ctrl_c` future that outlives its runtime says so: no ctrl-c came
/// (it completed with `Ok`, as if one had).
#[test]
fn ctrl_c_after_its_runtime_shut_down_is_an_error_not_a_ctrl_c() {
    let _one = SIGINT.lock().unwrap_or_else(|e| e.into_inner());
    let rt = rt();
    // Made inside the runtime (it needs its driver), awaited after it.
    let stop = {
        let _in = rt.enter();
        wq::signal::ctrl_c()
    };
    drop(rt);
    let err = futures::executor::block_on(stop).unwrap_err();
    assert!(err.to_string().contains("has shut down"), "{err}");
}

/// A delivery made before the runtime shut down and not yet received is
/// still given after the shutdown (it was `None`, for ctrl_c an error:
/// "no ctrl-c came"), and only then `None`, for good: a delivery after
/// the `None` is not given (the pair stayed readable while the handler
/// wrote to it, and the next `recv` said `Some`).
#[test]
fn a_delivery_unread_at_the_shutdown_is_still_given() {
    let rt = rt();
    let mut s = {
        let _in = rt.enter();
        signal(SignalKind::from_raw(libc::SIGWINCH)).unwrap()
    };
    raise(libc::SIGWINCH);
    drop(rt);
    assert_eq!(futures::executor::block_on(s.recv()), Some(()));
    assert_eq!(futures::executor::block_on(s.recv()), None, "none after it");
    raise(libc::SIGWINCH);
    assert_eq!(futures::executor::block_on(s.recv()), None, "none is final");
}

#[test]
fn a_signal_that_cannot_be_caught_is_refused_with_a_reason() {
    rt().block_on(async {
        for sig in [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, libc::SIGBUS] {
            let err = signal(SignalKind::from_raw(sig)).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains("cannot be caught"), "{err}");
        }
    });
}

#[test]
fn signal_outside_a_runtime_panics_with_the_call_named() {
    let panic = std::panic::catch_unwind(|| signal(SignalKind::hangup())).unwrap_err();
    let msg = common::panic_message(&*panic);
    assert!(msg.contains("wq::signal::unix::signal"), "{msg}");
}
