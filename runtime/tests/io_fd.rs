//! `wq::io::AsyncFd`: a descriptor of the user's, waited on through the
//! driver: an eventfd read when another task writes it, a socket written
//! once its peer makes room, the object given back deregistered (so it can
//! be registered again), and the errors of a descriptor epoll refuses.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use wq::io::AsyncFd;

mod common;

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
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    rt().block_on(async {
        let fd = Arc::new(AsyncFd::new(eventfd()).unwrap());
        let tries = Arc::new(AtomicUsize::new(0));
        let reader = {
            let (fd, tries) = (fd.clone(), tries.clone());
            wq::spawn(async move {
                fd.read_with(|fd| {
                    tries.fetch_add(1, Ordering::SeqCst);
                    read_counter(fd)
                })
                .await
            })
        };
        // Nothing to read: the reader waits without trying (the eventfd is
        // not readable yet).
        wq::time::sleep(Duration::from_millis(20)).await;
        assert!(!reader.is_finished(), "read an empty eventfd");
        add_counter(&*fd, 7);
        let got = wq::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("the reader was not woken")
            .unwrap()
            .unwrap();
        assert_eq!(got, 7);
        // A try per readiness event, not a loop of them.
        let tries = tries.load(Ordering::SeqCst);
        assert!((1..=3).contains(&tries), "{tries} tries");
    });
}

#[test]
fn a_write_waits_until_the_peer_makes_room() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    rt().block_on(async {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let a = AsyncFd::new(a).unwrap();
        // Fill the socket's buffer, counting what the peer must read.
        let chunk = [7u8; 65536];
        let mut filled = 0;
        while let Ok(n) = a.get_ref().write(&chunk) {
            filled += n;
        }
        let tries = Arc::new(AtomicUsize::new(0));
        let t = tries.clone();
        let writer = wq::spawn(async move {
            let n = a
                .write_with(|s| {
                    t.fetch_add(1, Ordering::SeqCst);
                    (&*s).write(b"more")
                })
                .await;
            (n, a)
        });
        // The writer waits for room (it tries only once the driver reports
        // the socket writable, at most once before room is made: epoll
        // drops the registration's writable edge once the buffer is full).
        wq::time::sleep(Duration::from_millis(20)).await;
        assert!(!writer.is_finished(), "wrote into a full socket");
        let drained = wq::spawn_blocking(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0;
            while total < filled {
                total += b.read(&mut buf).unwrap();
            }
            b
        });
        let (n, _a) = wq::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("the writer was not woken when room was made")
            .unwrap();
        assert_eq!(n.unwrap(), 4);
        let tries = tries.load(Ordering::SeqCst);
        assert!((1..=4).contains(&tries), "{tries} tries");
        drop(drained.await.unwrap());
    });
}

#[test]
fn into_inner_deregisters_so_the_descriptor_can_be_registered_again() {
    rt().block_on(async {
        let fd = AsyncFd::new(eventfd()).unwrap();
        let raw = fd.as_raw_fd();
        // Registered: a second registration of the same descriptor number
        // is refused (a borrowed number: nothing is closed).
        let twice = AsyncFd::new(raw).unwrap_err();
        assert_eq!(twice.raw_os_error(), Some(libc::EEXIST), "{twice}");
        let inner = fd.into_inner();
        assert_eq!(inner.as_raw_fd(), raw, "given back open");
        let again = AsyncFd::new(inner).expect("registered again after into_inner");
        add_counter(&again, 1);
        let got = wq::time::timeout(Duration::from_secs(10), again.read_with(read_counter))
            .await
            .expect("no wake after the registration again")
            .unwrap();
        assert_eq!(got, 1);
    });
}

#[test]
fn a_regular_file_is_refused_with_the_os_error_and_try_new_gives_it_back() {
    use std::io::Seek;
    rt().block_on(async {
        let f = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let err = AsyncFd::new(f).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        let f = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let (mut f, err) = AsyncFd::try_new(f).unwrap_err().into_parts();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        // Given back open: still usable the blocking way.
        assert_eq!(f.seek(std::io::SeekFrom::Start(1)).unwrap(), 1);
        let mut magic = [0u8; 3];
        f.read_exact(&mut magic).unwrap();
        assert_eq!(&magic, b"ELF");
    });
}

#[test]
fn async_fd_outside_a_runtime_panics_with_the_call_named() {
    let panic = std::panic::catch_unwind(|| AsyncFd::new(eventfd())).unwrap_err();
    let msg = common::panic_message(&*panic);
    assert!(msg.contains("wq::io::AsyncFd::new"), "{msg}");
}
