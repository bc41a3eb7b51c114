//! `echo`: a TCP echo server on wq.
//!
//! ```text
//! cargo run --release -p wq-examples --bin echo -- --addr 127.0.0.1:7007
//! ```
//!
//! Each connection is echoed in its own task until EOF. A client that
//! sends nothing for `IDLE` (30 s), or does not take its echo back within
//! it (its receive buffer full), is dropped, as is any connection
//! after [`wq_examples::CONNECTION_LIFETIME`] (a client trickling a byte
//! now and then would otherwise keep its slot forever), and at most
//! [`wq_examples::max_connections`] are served at once (beyond, a new one
//! is closed at once): slow or stuck clients cannot pin fds forever.
//! Errors are logged and end only their connection; accept errors (out of
//! fds) back off 100 ms.

use std::process::ExitCode;
use std::time::Duration;

use wq_examples::echo::{IDLE, echo};
use wq_examples::{CONNECTION_LIFETIME, Slots, listen};

#[wq::main]
async fn main() -> ExitCode {
    let (listener, addr) = match listen("echo", 7007).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    eprintln!("echo: listening on {addr}");
    let cap = wq_examples::max_connections();
    wq_examples::say_connection_cap("echo", cap);
    let slots = Slots::new(cap);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let Some(slot) = slots.take() else {
                    drop(stream);
                    continue;
                };
                drop(wq::spawn(async move {
                    let _slot = slot;
                    if let Err(e) = echo(stream, IDLE, CONNECTION_LIFETIME).await {
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
