//! What the datagram sockets (`UdpSocket`, `UnixDatagram`) share beyond
//! their registration (`driver::registration::Datagram`): the methods on
//! the connected address and the readiness ones, which read the same on
//! both (the address-taking ones differ by address type and stay in each
//! type's module).

/// Implements `readable`, `writable`, `try_recv`, `try_send`,
/// `poll_recv` and `poll_send` for a type with a `sock:
/// Datagram<_>` field and `recv`, `send`, `recv_from`, `send_to`,
/// `try_recv_from`, `try_send_to`, `poll_recv_from` and `poll_send_to`
/// of its own (the docs link them).
macro_rules! datagram_methods {
    ($ty:ty) => {
        impl $ty {
            /// Waits until a receive may make progress: a datagram (or an
            /// error) is queued. A hint:
            /// [`try_recv_from`](Self::try_recv_from) may still say
            /// `WouldBlock` (another task took it); then wait again.
            pub async fn readable(&self) -> std::io::Result<()> {
                self.sock
                    .ready(crate::driver::scheduled_io::Direction::Read)
                    .await
            }

            /// Waits until a send may make progress (room to queue a
            /// datagram). A hint, as [`readable`](Self::readable).
            pub async fn writable(&self) -> std::io::Result<()> {
                self.sock
                    .ready(crate::driver::scheduled_io::Direction::Write)
                    .await
            }

            /// [`recv`](Self::recv) without waiting, as
            /// [`try_recv_from`](Self::try_recv_from).
            pub fn try_recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.sock.try_recv_with(|s| s.recv(buf), || Ok(0))
            }

            /// [`send`](Self::send) without waiting, as
            /// [`try_send_to`](Self::try_send_to).
            pub fn try_send(&self, buf: &[u8]) -> std::io::Result<usize> {
                self.sock.try_send_with(|s| s.send(buf))
            }

            /// [`recv`](Self::recv) as [`poll_recv_from`](Self::poll_recv_from).
            pub fn poll_recv(
                &self,
                cx: &mut std::task::Context<'_>,
                buf: &mut [u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.sock.poll_recv_with(cx, |s| s.recv(buf), || Ok(0))
            }

            /// [`send`](Self::send) as [`poll_send_to`](Self::poll_send_to).
            pub fn poll_send(
                &self,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                self.sock.poll_send_with(cx, |s| s.send(buf))
            }
        }
    };
}

pub(crate) use datagram_methods;
