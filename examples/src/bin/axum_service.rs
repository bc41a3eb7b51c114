//! `axum_service`: `http_service`'s routes as an axum 0.8 `Router` (default
//! features off: no tokio), served on wq by hyper-util through
//! `TowerToHyperService`.
//!
//! ```text
//! cargo run --release -p wq-examples --bin axum_service -- --addr 127.0.0.1:8081
//! ```

use std::process::ExitCode;

use hyper_util::service::TowerToHyperService;
use wq_examples::{Limits, axum_app, listen, serve_until, stop_requested};

#[wq::main(scope = "cache")]
async fn main() -> ExitCode {
    // ctrl-c or SIGTERM: stop accepting, let connections finish, exit 0.
    // Listened for before the bind: once the address is announced, a
    // SIGTERM is this service's, not the default action's.
    let stop = match stop_requested() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("axum_service: cannot listen for ctrl-c and SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (listener, addr) = match listen("axum_service", 8081).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    eprintln!("axum_service: listening on http://{addr}");
    wq_examples::say_connection_cap("axum_service", wq_examples::max_connections());
    let router = axum_app::router();
    match serve_until(
        listener,
        || TowerToHyperService::new(router.clone()),
        Limits::default(),
        stop,
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("axum_service: {e}");
            ExitCode::FAILURE
        }
    }
}
