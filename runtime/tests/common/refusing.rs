//! A loopback TCP address that refuses connections, held for the test.
//!
//! Also included by `wq-examples`' tests, which use only some of it.
#![allow(dead_code)]

use std::os::fd::{FromRawFd, OwnedFd};

/// A loopback TCP address nothing listens on, held by the returned socket:
/// bound, not listening, so a connect is refused (RST), and no other
/// test's bind can take the port meanwhile, as one could the port of a
/// listener just dropped (tests run in parallel).
pub fn refusing_addr() -> (OwnedFd, std::net::SocketAddr) {
    let sock = bound(0, false).unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = local_addr(&sock);
    (sock, addr)
}

/// Holds the loopback port of `addr`, bound and not listening, once
/// nothing listens on it: `AddrInUse` while a listener has it. A test
/// that dropped a listener checks its port this way, then connects while
/// holding it: a connect to the freed port alone could reach another
/// test's listener bound there meanwhile. With `SO_REUSEADDR` (a closed
/// connection's `TIME_WAIT` on the port must not keep it), so it keeps
/// out binds to port 0 and connects' ephemeral ports, not a bind to this
/// port with `SO_REUSEADDR` too (which no test makes).
pub fn hold(addr: std::net::SocketAddr) -> std::io::Result<OwnedFd> {
    assert!(addr.ip().is_loopback(), "{addr}: not a loopback address");
    bound(addr.port(), true)
}

/// A TCP socket bound to 127.0.0.1:`port` (0: any), not listening, with
/// `SO_REUSEADDR` if `reuse`.
fn bound(port: u16, reuse: bool) -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2) has no memory preconditions; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd, owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    if reuse {
        let on: libc::c_int = 1;
        // SAFETY: `on` is a c_int of the length given.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sa` is a sockaddr_in of `len` bytes.
    if unsafe { libc::bind(fd, (&raw const sa).cast::<libc::sockaddr>(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sock)
}

/// The loopback address `sock` is bound to.
fn local_addr(sock: &OwnedFd) -> std::net::SocketAddr {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sa` is a sockaddr_in of `len` bytes, written by getsockname.
    let rc = unsafe {
        libc::getsockname(
            sock.as_raw_fd(),
            (&raw mut sa).cast::<libc::sockaddr>(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockname: {}", std::io::Error::last_os_error());
    std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, u16::from_be(sa.sin_port)))
}
