//! UDP: [`UdpSocket`].

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::task::{Context, Poll};

use crate::driver::registration::{Datagram, PollIo};

/// A UDP socket. Every operation takes `&self`: share it (an `Arc`)
/// between a sending and a receiving task, or among several receivers.
///
/// ```
/// #[wq::main]
/// async fn main() -> std::io::Result<()> {
///     let a = wq::net::UdpSocket::bind("127.0.0.1:0").await?;
///     let b = wq::net::UdpSocket::bind("127.0.0.1:0").await?;
///     a.send_to(b"hi", b.local_addr()?).await?;
///     let mut buf = [0; 16];
///     let (n, from) = b.recv_from(&mut buf).await?;
///     assert_eq!((&buf[..n], from), (&b"hi"[..], a.local_addr()?));
///     Ok(())
/// }
/// ```
pub struct UdpSocket {
    sock: Datagram<mio::net::UdpSocket>,
}

impl UdpSocket {
    /// Binds to `addr` (each resolved address in turn).
    ///
    /// # Panics
    /// Outside a wq runtime.
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<UdpSocket> {
        let driver = super::current("wq::net::UdpSocket::bind")?;
        super::each_addr(addr, |a| {
            let driver = driver.clone();
            async move {
                Ok(UdpSocket {
                    sock: Datagram::new(PollIo::new(driver, mio::net::UdpSocket::bind(a)?)?),
                })
            }
        })
        .await
    }

    /// Takes over a bound std socket (made non-blocking here).
    ///
    /// # Errors
    /// The OS's own error if the socket cannot be made non-blocking or
    /// registered with the driver (`EEXIST`: a wq socket of this runtime
    /// has it already); an error saying so if the runtime has shut down or
    /// its driver cannot be made (out of file descriptors).
    ///
    /// On an error the socket is closed (it was moved in): where the
    /// descriptor must outlive a refusal (to try it as another kind, say),
    /// pass a duplicate (`try_clone`): a refusal leaves it as it was,
    /// blocking or not (the socket is made non-blocking once registered).
    ///
    /// # Panics
    /// Outside a wq runtime.
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        let driver = super::current("wq::net::UdpSocket::from_std")?;
        super::check_socket(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            "wq::net::UdpSocket::from_std",
            super::Taken::UdpSocket,
        )?;
        let s = UdpSocket {
            sock: Datagram::new(PollIo::new(driver, mio::net::UdpSocket::from_std(socket))?),
        };
        super::set_nonblocking(&s)?;
        Ok(s)
    }

    /// Sets the default destination of [`send`](UdpSocket::send) and the
    /// only source [`recv`](UdpSocket::recv) accepts (each resolved
    /// address in turn). From then on: Linux keeps what was queued before
    /// the connect, so a datagram from another address that came earlier
    /// is still received (by `recv_from` with its sender); a client that
    /// must not read one (a spoofed answer) connects before it sends, or
    /// checks the sender.
    pub async fn connect(&self, addr: impl ToSocketAddrs) -> io::Result<()> {
        let sock = self.sock.source();
        super::each_addr(addr, |a| async move { sock.connect(a) }).await
    }

    /// Sends `buf` to the connected address (on a socket not
    /// [`connect`](UdpSocket::connect)ed, an error: `EDESTADDRREQ`).
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.sock.send_with(|s| s.send(buf)).await
    }

    /// Receives one datagram from the connected address. A datagram longer
    /// than `buf` is truncated to it, and the rest is lost without a word
    /// (an empty `buf` loses the whole datagram and returns 0): size `buf`
    /// for the largest datagram expected (65,507 bytes over IPv4). On a
    /// socket shut for reading (`shutdown(2)` on its descriptor) with
    /// nothing queued, 0 at once, as the blocking call (and
    /// [`recv_from`](UdpSocket::recv_from) 0 bytes from the unspecified
    /// address).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv_with(|s| s.recv(buf), || Ok(0)).await
    }

    /// Sends `buf` to `target` (its first resolved address).
    pub async fn send_to(&self, buf: &[u8], target: impl ToSocketAddrs) -> io::Result<usize> {
        let to = target.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the target address resolved to no socket address",
            )
        })?;
        self.sock.send_with(|s| s.send_to(buf, to)).await
    }

    /// Receives one datagram and its sender's address; truncated to `buf`
    /// as in [`recv`](UdpSocket::recv).
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock
            .recv_with(|s| s.recv_from(buf), || self.shut())
            .await
    }

    /// [`recv_from`](UdpSocket::recv_from) for code that keeps no future
    /// (a `poll_*` method of its own, a `Stream` of datagrams). `Pending`
    /// registers the task to wake; the socket keeps one such task per
    /// direction, the one that polled last (as tokio's `poll_recv_from`):
    /// tasks that receive side by side each call `recv_from`.
    pub fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        self.sock
            .poll_recv_with(cx, |s| s.recv_from(buf), || self.shut())
    }

    /// [`recv_from`](UdpSocket::recv_from) without waiting: `WouldBlock`
    /// when no datagram is queued (await
    /// [`readable`](UdpSocket::readable), then try again). The `try_*`
    /// methods answer by the readiness the runtime has seen: on a new
    /// socket, await `readable` / `writable` first.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock
            .try_recv_with(|s| s.recv_from(buf), || self.shut())
    }

    /// Sends `buf` to `target` without waiting: `WouldBlock` when the
    /// send buffer is full (await [`writable`](UdpSocket::writable)).
    pub fn try_send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.sock.try_send_with(|s| s.send_to(buf, target))
    }

    /// [`send_to`](UdpSocket::send_to) to an address already resolved, as
    /// [`poll_recv_from`](UdpSocket::poll_recv_from) (its own waiter slot:
    /// a task may poll both directions).
    pub fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<io::Result<usize>> {
        self.sock.poll_send_with(cx, |s| s.send_to(buf, target))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.source().local_addr()
    }

    /// Takes the socket's pending error (`SO_ERROR`), clearing it: `None`
    /// if there was none.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.sock.source().take_error()
    }

    /// The connected address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.source().peer_addr()
    }

    /// [`UdpSocket::recv_from`] on a socket shut for reading (from
    /// outside: a `UdpSocket` has no `shutdown` of its own; `shutdown(2)`
    /// on its descriptor) with nothing queued: the end, as
    /// [`UdpSocket::recv`]'s 0, from the unspecified address of the
    /// socket's family (Linux's blocking call gives 0 bytes and no
    /// address, which std's `recv_from` reports as `InvalidInput`).
    fn shut(&self) -> io::Result<(usize, SocketAddr)> {
        let unspecified: std::net::IpAddr = match self.sock.source().local_addr() {
            Ok(SocketAddr::V6(_)) => Ipv6Addr::UNSPECIFIED.into(),
            _ => Ipv4Addr::UNSPECIFIED.into(),
        };
        Ok((0, SocketAddr::new(unspecified, 0)))
    }

    /// Sets `SO_BROADCAST`: whether it may send to a broadcast address.
    pub fn set_broadcast(&self, on: bool) -> io::Result<()> {
        self.sock.source().set_broadcast(on)
    }

    /// `SO_BROADCAST`.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.sock.source().broadcast()
    }

    /// Sets `IP_TTL`: the hop limit of the IPv4 datagrams it sends (an
    /// IPv6 socket's own datagrams keep `IPV6_UNICAST_HOPS`, 64 by
    /// default, which this does not change; only IPv4-mapped traffic
    /// takes it).
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.sock.source().set_ttl(ttl)
    }

    /// `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.sock.source().ttl()
    }

    /// Joins the IPv4 multicast group `group` on the interface of address
    /// `interface` (`Ipv4Addr::UNSPECIFIED`: the system's choice).
    pub fn join_multicast_v4(&self, group: Ipv4Addr, interface: Ipv4Addr) -> io::Result<()> {
        self.sock.source().join_multicast_v4(&group, &interface)
    }

    /// Leaves an IPv4 multicast group joined with
    /// [`join_multicast_v4`](UdpSocket::join_multicast_v4).
    pub fn leave_multicast_v4(&self, group: Ipv4Addr, interface: Ipv4Addr) -> io::Result<()> {
        self.sock.source().leave_multicast_v4(&group, &interface)
    }

    /// Joins the IPv6 multicast group `group` on the interface of index
    /// `interface` (0: the system's choice).
    pub fn join_multicast_v6(&self, group: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.sock.source().join_multicast_v6(group, interface)
    }

    /// Leaves an IPv6 multicast group joined with
    /// [`join_multicast_v6`](UdpSocket::join_multicast_v6).
    pub fn leave_multicast_v6(&self, group: &Ipv6Addr, interface: u32) -> io::Result<()> {
        self.sock.source().leave_multicast_v6(group, interface)
    }

    /// Sets `IP_MULTICAST_LOOP`: whether its IPv4 multicast datagrams come
    /// back to the local host's members.
    pub fn set_multicast_loop_v4(&self, on: bool) -> io::Result<()> {
        self.sock.source().set_multicast_loop_v4(on)
    }

    /// `IP_MULTICAST_LOOP`.
    pub fn multicast_loop_v4(&self) -> io::Result<bool> {
        self.sock.source().multicast_loop_v4()
    }

    /// Sets `IP_MULTICAST_TTL`: the hop limit of its IPv4 multicast
    /// datagrams (1, the default, keeps them on the local network).
    pub fn set_multicast_ttl_v4(&self, ttl: u32) -> io::Result<()> {
        self.sock.source().set_multicast_ttl_v4(ttl)
    }

    /// `IP_MULTICAST_TTL`.
    pub fn multicast_ttl_v4(&self) -> io::Result<u32> {
        self.sock.source().multicast_ttl_v4()
    }

    /// Sets `IPV6_MULTICAST_LOOP`.
    pub fn set_multicast_loop_v6(&self, on: bool) -> io::Result<()> {
        self.sock.source().set_multicast_loop_v6(on)
    }

    /// `IPV6_MULTICAST_LOOP`.
    pub fn multicast_loop_v6(&self) -> io::Result<bool> {
        self.sock.source().multicast_loop_v6()
    }
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

super::as_fd!(UdpSocket, sock.source());

super::datagram::datagram_methods!(UdpSocket);
