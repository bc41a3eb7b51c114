//! `wq::io::AsyncFd`: a descriptor of the user's, waited on through the
//! driver: an eventfd read when another task writes it, a socket written
//! once its peer makes room, the object given back deregistered (so it can
//! be registered again), and the errors of a descriptor epoll refuses; its
//! poll methods making a type of the user's an `AsyncRead`/`AsyncWrite`,
//! its `try_` methods, the poll's waker released with it, and the
//! readiness guards of `readable`/`writable`.

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
        assert_eq!(std::os::fd::AsFd::as_fd(&fd).as_raw_fd(), raw);
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

/// A type of the user's around an `AsyncFd`, made an `AsyncRead` and an
/// `AsyncWrite` with the poll methods: a pipe's bytes read to its end as
/// a thread writes them in pieces, and a write that waits for room.
struct Pipe(AsyncFd<UnixStream>);

impl futures::AsyncRead for Pipe {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.poll_read_with(cx, |s| (&*s).read(buf))
    }
}

impl futures::AsyncWrite for Pipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.poll_write_with(cx, |s| (&*s).write(buf))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[test]
fn poll_methods_make_a_users_type_an_async_reader_and_writer() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    common::within(60, || {
        rt().block_on(async {
            // Read: pieces written by a thread, with pauses, to the end.
            let (a, mut b) = UnixStream::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            let mut r = Pipe(AsyncFd::new(a).unwrap());
            let writer = std::thread::spawn(move || {
                for piece in [&b"one "[..], b"two ", b"three"] {
                    std::thread::sleep(Duration::from_millis(5));
                    b.write_all(piece).unwrap();
                }
            });
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"one two three");
            writer.join().unwrap();

            // Write: 1 MiB through a socket's buffer, which a thread drains.
            let (a, mut b) = UnixStream::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            let mut w = Pipe(AsyncFd::new(a).unwrap());
            let reader = std::thread::spawn(move || {
                let mut all = Vec::new();
                b.read_to_end(&mut all).unwrap();
                all
            });
            let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
            w.write_all(&data).await.unwrap();
            drop(w); // the peer's read ends
            assert!(reader.join().unwrap() == data, "the bytes written");
        });
    });
}

/// `try_read_with` does not wait: `WouldBlock` before the driver reports
/// data, the data once it has, and `WouldBlock` again once drained.
#[test]
fn try_read_with_does_not_wait() {
    common::within(60, || {
        rt().block_on(async {
            let (a, mut b) = UnixStream::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            let a = AsyncFd::new(a).unwrap();
            let mut buf = [0u8; 16];
            let err = a.try_read_with(|s| (&*s).read(&mut buf)).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
            b.write_all(b"data").unwrap();
            let n = loop {
                match a.try_read_with(|s| (&*s).read(&mut buf)) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        // The driver has not turned since: let it.
                        wq::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            assert_eq!(&buf[..n], b"data");
            let err = a.try_read_with(|s| (&*s).read(&mut buf)).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        });
    });
}

/// The waker a pending `poll_read_with` left goes with the `AsyncFd`
/// (dropped, or its object taken back with `into_inner`): it kept a task
/// alive otherwise.
#[test]
fn a_polls_waker_goes_with_the_async_fd() {
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    rt().block_on(async {
        for give_back in [false, true] {
            let (a, _b) = UnixStream::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            let a = AsyncFd::new(a).unwrap();
            let noop = Arc::new(Noop);
            let waker = Waker::from(noop.clone());
            let mut cx = Context::from_waker(&waker);
            let mut buf = [0u8; 4];
            assert!(
                a.poll_read_with(&mut cx, |s| (&*s).read(&mut buf))
                    .is_pending()
            );
            drop(waker);
            assert_eq!(Arc::strong_count(&noop), 2, "the read's waker is kept");
            if give_back {
                drop(a.into_inner());
            } else {
                drop(a);
            }
            assert_eq!(Arc::strong_count(&noop), 1, "given back: {give_back}");
        }
    });
}

/// A poll method's operation may poll the same `AsyncFd` again (a length
/// prefix read through a helper, then the rest): it deadlocked on the
/// waiter slot's lock, held across the operation.
#[test]
fn a_poll_operation_may_poll_its_async_fd_again() {
    common::within(30, || {
        rt().block_on(async {
            let (a, mut b) = UnixStream::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            let fd = AsyncFd::new(a).unwrap();
            b.write_all(b"ab").unwrap();
            let (mut first, mut second) = ([0u8; 1], [0u8; 1]);
            let noop = futures::task::noop_waker();
            let n = std::future::poll_fn(|cx| {
                fd.poll_read_with(cx, |s| {
                    // Readable (this operation runs): the inner poll reads.
                    let mut inner_cx = std::task::Context::from_waker(&noop);
                    let inner = fd.poll_read_with(&mut inner_cx, |s| (&*s).read(&mut first));
                    assert!(matches!(inner, std::task::Poll::Ready(Ok(1))), "{inner:?}");
                    (&*s).read(&mut second)
                })
            })
            .await
            .unwrap();
            assert_eq!((n, first, second), (1, *b"a", *b"b"));
        });
    });
}

/// `readable`'s guard: a readiness kept (the guard dropped) answers the
/// next wait at once; one cleared by `try_io`'s `WouldBlock` makes the
/// next wait last until the next event; `writable` answers at once with
/// room.
#[test]
fn ready_guards_keep_or_clear_the_readiness() {
    common::within_watchdog("ready guards", Duration::from_secs(60), || {
        rt().block_on(async {
            let fd = AsyncFd::new(eventfd()).unwrap();
            add_counter(fd.get_ref(), 3);
            let guard = fd.readable().await.unwrap();
            assert!(format!("{guard:?}").contains("cleared: false"));
            assert!(!guard.is_closed(), "readable, no hang-up");
            // Not cleared (a guard has no drop of its own): kept, so the
            // next wait answers at once; the counter read through it.
            let mut guard = wq::time::timeout(Duration::from_secs(10), fd.readable())
                .await
                .expect("a kept readiness made the wait last")
                .unwrap();
            let got = guard.try_io(|fd| read_counter(fd.get_ref()));
            assert_eq!(got.unwrap().unwrap(), 3);
            // The counter is empty: the read says WouldBlock, which clears.
            let again = guard.try_io(|fd| read_counter(fd.get_ref()));
            let err = again.unwrap_err();
            assert!(err.to_string().contains("would block"), "{err}");
            let waited = wq::time::timeout(Duration::from_millis(100), fd.readable()).await;
            assert!(
                waited.is_err(),
                "a cleared readiness answered the next wait"
            );
            // The next event answers it.
            let raw = fd.as_raw_fd();
            let writer = wq::spawn(async move {
                wq::time::sleep(Duration::from_millis(20)).await;
                // SAFETY: `raw` is the eventfd `fd` keeps open until the
                // writer is joined.
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
                add_counter(&fd, 5);
            });
            let mut guard = wq::time::timeout(Duration::from_secs(10), fd.readable())
                .await
                .expect("the next event never answered the wait")
                .unwrap();
            assert_eq!(guard.get_inner().as_raw_fd(), raw);
            assert_eq!(
                guard
                    .try_io(|fd| read_counter(fd.get_ref()))
                    .unwrap()
                    .unwrap(),
                5
            );
            guard.clear_ready();
            writer.await.unwrap();
            // An eventfd has room: writable at once.
            let guard = wq::time::timeout(Duration::from_secs(10), fd.writable())
                .await
                .expect("writable with room made the wait last")
                .unwrap();
            assert!(std::ptr::eq(guard.get_ref(), &fd));
        });
    });
}

/// A hang-up stays through the guard's `clear_ready`, as tokio's final
/// states do: a pipe whose writer closed answers the next `readable` at
/// once (and the read says the end), where a cleared hang-up waited for
/// an event that never comes.
#[test]
fn clear_ready_keeps_a_hang_up() {
    common::within_watchdog("hang-up kept", Duration::from_secs(60), || {
        rt().block_on(async {
            let (r, w) = UnixStream::pair().unwrap();
            r.set_nonblocking(true).unwrap();
            let r = AsyncFd::new(r).unwrap();
            drop(w);
            let mut guard = r.readable().await.unwrap();
            assert!(guard.is_closed(), "the hang-up is told from readable");
            guard.clear_ready();
            assert!(!guard.is_closed(), "cleared");
            let mut guard = wq::time::timeout(Duration::from_secs(10), r.readable())
                .await
                .expect("a cleared hang-up made the next wait last")
                .unwrap();
            let n = guard.try_io(|fd| fd.get_ref().read(&mut [0; 8]));
            assert_eq!(n.unwrap().unwrap(), 0, "the end");
        });
    });
}

/// A hang-up that no longer holds (a FIFO's writer closed, and another
/// opened it since) is cleared by `try_io`'s `WouldBlock`, as its docs
/// say: the next wait lasts until data comes (kept, every wait answered at
/// once and a reading loop spun).
#[test]
fn try_io_would_block_clears_a_hang_up_that_no_longer_holds() {
    use std::os::unix::fs::OpenOptionsExt;
    common::within_watchdog("stale hang-up", Duration::from_secs(60), || {
        let dir = std::env::temp_dir().join(format!("wq-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("fifo");
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let open = |write: bool| {
            std::fs::OpenOptions::new()
                .read(!write)
                .write(write)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
                .unwrap()
        };
        rt().block_on(async {
            let r = AsyncFd::new(open(false)).unwrap();
            drop(open(true));
            let mut guard = r.readable().await.unwrap();
            assert!(guard.is_closed(), "the first writer's close");
            let n = guard.try_io(|fd| fd.get_ref().read(&mut [0; 8]));
            assert_eq!(n.unwrap().unwrap(), 0, "the end");
            let mut w = open(true);
            // The hang-up is stale now; the read says so, and clears it.
            let mut guard = r.readable().await.unwrap();
            assert!(guard.try_io(|fd| fd.get_ref().read(&mut [0; 8])).is_err());
            assert!(
                wq::time::timeout(Duration::from_millis(100), r.readable())
                    .await
                    .is_err(),
                "a stale hang-up answered the wait with nothing to read"
            );
            w.write_all(b"x").unwrap();
            let mut guard = r.readable().await.unwrap();
            let n = guard.try_io(|fd| fd.get_ref().read(&mut [0; 8]));
            assert_eq!(n.unwrap().unwrap(), 1);
        });
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// A type whose reads and writes need `&mut self` (it counts them).
struct Counted {
    stream: UnixStream,
    ops: usize,
}

impl AsRawFd for Counted {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.stream.as_raw_fd()
    }
}

impl Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.ops += 1;
        self.stream.read(buf)
    }
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.ops += 1;
        self.stream.write(buf)
    }
}

/// The `_mut` operations hand the object mutably: a read that meets
/// `WouldBlock` waits for the peer's write and runs again; a write and the
/// `try_` forms too.
#[test]
fn mut_operations_run_on_the_object_mutably_and_wait_like_the_others() {
    common::within(60, || {
        rt().block_on(async {
            let (a, mut peer) = UnixStream::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            let mut fd = AsyncFd::new(Counted { stream: a, ops: 0 }).unwrap();
            let mut buf = [0u8; 8];
            // Nothing yet: the try form says so without running.
            let err = fd.try_read_with_mut(|c| c.read(&mut buf)).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
            peer.write_all(b"x").unwrap();
            let n = fd.read_with_mut(|c| c.read(&mut buf)).await.unwrap();
            assert_eq!(&buf[..n], b"x");
            assert_eq!(fd.get_ref().ops, 1);
            // Readable still (as far as the driver said): the next read
            // runs, meets `WouldBlock`, waits for the late write, runs.
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                peer.write_all(b"late").unwrap();
                peer
            });
            let n = fd.read_with_mut(|c| c.read(&mut buf)).await.unwrap();
            assert_eq!(&buf[..n], b"late");
            assert!(fd.get_ref().ops >= 3, "{} reads", fd.get_ref().ops);
            let mut peer = writer.join().unwrap();
            // Writes, waiting and trying.
            assert_eq!(fd.write_with_mut(|c| c.write(b"back")).await.unwrap(), 4);
            assert_eq!(fd.try_write_with_mut(|c| c.write(b"more")).unwrap(), 4);
            let mut got = [0u8; 8];
            peer.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"backmore");
        });
    });
}
