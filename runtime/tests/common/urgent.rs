//! A TCP peer that sends urgent data (`MSG_OOB`) in the middle of its
//! bytes: a read stops at the urgent mark with the rest queued behind it.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;

/// Connects to `addr` and sends "abc", one byte of urgent data ("X", out
/// of band: reads skip it), and "def"; then waits for a 2-byte answer,
/// which the thread returns.
pub fn peer(addr: SocketAddr) -> JoinHandle<[u8; 2]> {
    std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        c.write_all(b"abc").unwrap();
        // SAFETY: a one-byte buffer for the length given.
        let n = unsafe { libc::send(c.as_raw_fd(), b"X".as_ptr().cast(), 1, libc::MSG_OOB) };
        assert_eq!(n, 1, "send(MSG_OOB): {}", io::Error::last_os_error());
        c.write_all(b"def").unwrap();
        let mut ack = [0u8; 2];
        c.read_exact(&mut ack).unwrap();
        ack
    })
}
