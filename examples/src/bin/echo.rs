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
//! is closed at once): slow or stuck clients cannot pin fds forever, nor
//! kernel memory (echoes left unread for `IDLE` are dropped by the kernel,
//! after the close too: `TCP_USER_TIMEOUT`).
//! Errors are logged and end only their connection; accept errors (out of
//! fds) back off 100 ms. The connections' tasks are kept in a
//! `wq::task::JoinSet` (reaped as they end): at SIGINT or SIGTERM the
//! listener closes and the set's shutdown aborts them, and the server
//! exits with success.

use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use futures::future::{Either, select};
use wq::task::JoinSet;
use wq_examples::echo::{IDLE, echo};
use wq_examples::{CONNECTION_LIFETIME, Slots, listen};

#[wq::main]
async fn main() -> ExitCode {
    let (listener, addr) = match listen("echo", 7007).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    // After its last signal (the runtime's driver gone), it waits for good:
    // the server serves on, as `serve_until` does.
    let mut stop = match wq_examples::stop_requested() {
        Ok(s) => s.chain(futures::stream::pending()),
        Err(e) => {
            eprintln!("echo: cannot watch for SIGINT and SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("echo: listening on {addr}");
    let cap = wq_examples::max_connections();
    wq_examples::say_connection_cap("echo", cap);
    let slots = Slots::new(cap);
    let mut connections = JoinSet::new();
    loop {
        // Those that ended, without waiting (a panic is reported; the rest
        // reported their own errors).
        while let Some(ended) = connections.try_join_next() {
            if let Err(e) = ended {
                wq_examples::report::report(format!("echo: a connection's task: {e}"));
            }
        }
        // The stop first: a flood of connections must not keep it from
        // being seen.
        let next = match select(stop.next(), std::pin::pin!(listener.accept())).await {
            Either::Left((why, _)) => Err(why.unwrap_or("the signal stream ended")),
            Either::Right((accepted, _)) => Ok(accepted),
        };
        let accepted = match next {
            Ok(accepted) => accepted,
            Err(why) => {
                // Through the reporter: a stderr that blocks or fails must
                // not hold up or abort the stop.
                wq_examples::report::report(format!(
                    "echo: {why}: closing {} connections",
                    slots.open()
                ));
                drop(listener);
                connections.shutdown().await;
                wq_examples::report::report(format!("echo: {why}: stopped"));
                wq_examples::flush_reports().await;
                return ExitCode::SUCCESS;
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(slot) = slots.take() else {
                    drop(stream);
                    continue;
                };
                // Echoes left unread are dropped by the kernel after the
                // idle limit, after the close too (the module docs).
                let _ = stream.set_tcp_user_timeout(Some(IDLE));
                connections.spawn(async move {
                    let _slot = slot;
                    if let Err(e) = echo(stream, IDLE, CONNECTION_LIFETIME).await {
                        wq_examples::report::report(format!("echo: {peer}: {e}"));
                    }
                });
            }
            Err(e) => {
                wq_examples::report::report(format!("echo: accept: {e}"));
                wq::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
