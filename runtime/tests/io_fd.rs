//! `wq::io::AsyncFd`: a descriptor of the user's, waited on through the
//! driver: an eventfd read when another task writes it, a socket written
//! once its peer makes room, the object given back deregistered (so it can
//! be registered again), and the errors of a descriptor epoll refuses.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use wq::io::AsyncFd;

fn rt() -> wq::Runtime {
    wq::Runtime::builder().build().unwrap()
}

/// A non-blocking eventfd.
fn eventfd() -> OwnedFd {
    // SAFETY: eventfd takes plain integers; a non-negative result is a new
    // descriptor that nothing else owns.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: see above.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn read_counter(fd: &OwnedFd) -> std::io::Result<u64> {
    let mut v = [0u8; 8];
    // SAFETY: 8 bytes into an 8-byte buffer.
    let n = unsafe { libc::read(fd.as_raw_fd(), v.as_mut_ptr().cast(), 8) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::from_ne_bytes(v))
}

fn add_counter(fd: &impl AsRawFd, n: u64) {
    let v = n.to_ne_bytes();
    // SAFETY: 8 bytes from an 8-byte buffer.
    let written = unsafe { libc::write(fd.as_raw_fd(), v.as_ptr().cast(), 8) };
    assert_eq!(written, 8);
}

#[test]
fn a_task_waits_for_an_eventfd_that_another_task_writes() {
    rt().block_on(async {
        let fd = std::sync::Arc::new(AsyncFd::new(eventfd()).unwrap());
        let reader = {
            let fd = fd.clone();
            wq::spawn(async move { fd.read_with(read_counter).await })
        };
        // Nothing yet: the reader waits (the first try said WouldBlock).
        wq::time::sleep(Duration::from_millis(20)).await;
        assert!(!reader.is_finished(), "read an empty eventfd");
        add_counter(&*fd, 3);
        add_counter(&*fd, 4);
        let got = wq::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the reader was not woken")
            .unwrap()
            .unwrap();
        assert_eq!(got, 7);
    });
}

#[test]
fn a_write_waits_until_the_peer_makes_room() {
    rt().block_on(async {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let a = AsyncFd::new(a).unwrap();
        // Fill the socket's buffer.
        let chunk = [7u8; 65536];
        while a.get_ref().write(&chunk).is_ok() {}
        let drained = wq::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0;
            while total < 1 {
                total += b.read(&mut buf).unwrap();
            }
            b
        });
        let n = wq::time::timeout(
            Duration::from_secs(10),
            a.write_with(|s| (&*s).write(b"more")),
        )
        .await
        .expect("the writer was not woken when room was made")
        .unwrap();
        assert!(n > 0);
        drop(drained.await.unwrap());
    });
}

#[test]
fn into_inner_deregisters_so_the_descriptor_can_be_registered_again() {
    rt().block_on(async {
        let fd = AsyncFd::new(eventfd()).unwrap();
        let raw = fd.as_raw_fd();
        // Registered: a second registration of the same descriptor fails.
        // SAFETY: only borrowed for the attempt; the eventfd stays owned by
        // `fd` (ManuallyDrop: the borrowed descriptor is not closed).
        let borrowed = std::mem::ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(raw) });
        let twice = AsyncFd::new(borrowed.as_raw_fd());
        assert!(twice.is_err(), "the same descriptor registered twice");
        let inner = fd.into_inner();
        assert_eq!(inner.as_raw_fd(), raw, "given back open");
        let again = AsyncFd::new(inner).expect("registered again after into_inner");
        add_counter(&again, 1);
        assert_eq!(again.read_with(read_counter).await.unwrap(), 1);
    });
}

#[test]
fn a_regular_file_is_refused_with_the_os_error() {
    rt().block_on(async {
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let err = AsyncFd::new(f).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    });
}

#[test]
fn async_fd_outside_a_runtime_panics_with_the_call_named() {
    let panic = std::panic::catch_unwind(|| AsyncFd::new(eventfd())).unwrap_err();
    let msg = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    assert!(msg.contains("wq::io::AsyncFd::new"), "{msg}");
}
