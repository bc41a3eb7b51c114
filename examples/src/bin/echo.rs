//! `echo`: a TCP echo server on wq.
//!
//! ```text
//! cargo run --release -p wq-examples --bin echo -- --addr 127.0.0.1:7007
//! ```
//!
//! Each connection is echoed in its own task until EOF. A client that
//! sends nothing for [`IDLE`], or does not take its echo back within
//! [`IDLE`] (its receive buffer full), is dropped, and at most
//! [`wq_examples::MAX_CONNECTIONS`] are served at once (beyond, a new one
//! is closed at once): slow or stuck clients cannot pin fds forever.
//! Errors are logged and end only their connection; accept errors (out of
//! fds) back off 100 ms.

use std::process::ExitCode;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use wq_examples::{Slots, listen};

/// How long a connection may stay silent.
const IDLE: Duration = Duration::from_secs(30);

async fn echo(mut stream: wq::net::TcpStream) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0;
    loop {
        let n = match wq::time::timeout(IDLE, stream.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "idle for 30 s",
                ));
            }
        };
        if n == 0 {
            stream.close().await?;
            return Ok(total);
        }
        match wq::time::timeout(IDLE, stream.write_all(&buf[..n])).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "did not read its echo for 30 s",
                ));
            }
        }
        total += n as u64;
    }
}

#[wq::main]
async fn main() -> ExitCode {
    let (listener, addr) = match listen("echo", 7007).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    eprintln!("echo: listening on {addr}");
    let slots = Slots::new(wq_examples::MAX_CONNECTIONS);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(slot) = slots.take() else {
                    drop(stream);
                    continue;
                };
                drop(wq::spawn(async move {
                    let _slot = slot;
                    if let Err(e) = echo(stream).await {
                        wq_examples::report::report(format!("echo: {peer}: {e}"));
                    }
                }));
            }
            Err(e) => {
                wq_examples::report::report(format!("echo: accept: {e}"));
                wq::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
