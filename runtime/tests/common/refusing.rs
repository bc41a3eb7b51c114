//! A loopback TCP address that refuses connections, held for the test.

/// A loopback TCP address nothing listens on, held by the returned socket:
/// bound, not listening, so a connect is refused (RST), and no other
/// test's bind can take the port meanwhile, as one could the port of a
/// listener just dropped (tests run in parallel).
pub fn refusing_addr() -> (std::os::fd::OwnedFd, std::net::SocketAddr) {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) has no memory preconditions; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd, owned by nobody else.
    let sock = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sa` is a sockaddr_in of `len` bytes, read by bind and
    // written by getsockname.
    unsafe {
        let p = (&raw mut sa).cast::<libc::sockaddr>();
        assert_eq!(
            libc::bind(fd, p, len),
            0,
            "bind: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            libc::getsockname(fd, p, &mut len),
            0,
            "getsockname: {}",
            std::io::Error::last_os_error()
        );
    }
    let port = u16::from_be(sa.sin_port);
    (
        sock,
        std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
    )
}
