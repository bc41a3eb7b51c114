//! The `echo` example's connection: bytes back until EOF, within limits a
//! slow or stuck client cannot stretch.

use std::io;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};

/// How long a connection may stay silent, or leave its echo unread.
pub const IDLE: Duration = Duration::from_secs(30);

/// What ended a connection that did not end in EOF.
fn timed_out(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

/// Echoes `stream` until EOF, returning the bytes echoed. An error if the
/// client sends nothing for `idle`, does not take its echo back within
/// `idle` (its receive buffer full), or is still connected after
/// `lifetime` (a client trickling a byte now and then would otherwise
/// hold its connection forever).
pub async fn echo(
    stream: wq::net::TcpStream,
    idle: Duration,
    lifetime: Duration,
) -> io::Result<u64> {
    match wq::time::timeout(lifetime, echo_until_eof(stream, idle)).await {
        Ok(r) => r,
        Err(_) => Err(timed_out(format!(
            "closed after {:?}, the connection lifetime",
            lifetime
        ))),
    }
}

async fn echo_until_eof(mut stream: wq::net::TcpStream, idle: Duration) -> io::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = wq::time::timeout(idle, stream.read(&mut buf))
            .await
            .map_err(|_| timed_out(format!("idle for {idle:?}")))??;
        if n == 0 {
            stream.close().await?;
            return Ok(total);
        }
        wq::time::timeout(idle, stream.write_all(&buf[..n]))
            .await
            .map_err(|_| timed_out(format!("did not read its echo for {idle:?}")))??;
        total += n as u64;
    }
}
