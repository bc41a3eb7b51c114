//! `http_service`: a hyper service on `#[wq::main]` (see
//! `wq_examples::routes` for its routes and `wq_examples` for its limits),
//! with the runtime's live dashboard (`wq::dashboard`) on its own address.
//! Its runtime records latencies (`Builder::latency_capture(true)`: off by
//! default), so the dashboard has its charts.
//!
//! ```text
//! cargo run --release -p wq-examples --bin http_service -- --addr 127.0.0.1:8080
//! curl localhost:8080/scope
//! open http://127.0.0.1:8089/            # the dashboard (--dashboard-addr ADDR, or off)
//! cargo run -p wq-examples --bin wq-monitor
//! ```

use std::process::ExitCode;

use hyper::service::service_fn;
use wq_examples::{
    Limits, bind_or_exit, dashboard_addr, parse_args, routes, serve_until, stop_requested,
};

fn main() -> ExitCode {
    // As `#[wq::main(scope = "cache")]`, with latency capture on.
    let rt = wq::Runtime::builder()
        .default_scope(wq::Scope::Cache)
        .latency_capture(true)
        .build();
    match rt {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("http_service: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let parsed = dashboard_addr(wq_examples::args())
        .map_err(|msg| format!("{msg}\n{}", wq_examples::usage("http_service", 8080)))
        .and_then(|(dash, rest)| Ok((dash, parse_args("http_service", 8080, rest)?)));
    let (dash, opts) = match parsed {
        Ok(o) => o,
        Err(msg) => {
            return wq_examples::refused_args(&format!(
                "{}\n  --dashboard-addr ADDR   the live dashboard (default {}; off for none)",
                msg.replace(
                    "usage: http_service [--addr ADDR]",
                    "usage: http_service [--addr ADDR] [--dashboard-addr ADDR|off]"
                ),
                wq_examples::DEFAULT_DASHBOARD_ADDR
            ));
        }
    };
    // ctrl-c or SIGTERM: stop accepting, let connections finish, exit 0.
    // Listened for before the bind: once the address is announced, a
    // SIGTERM is this service's, not the default action's.
    let stop = match stop_requested() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("http_service: cannot listen for ctrl-c and SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (listener, addr) = match bind_or_exit("http_service", &opts).await {
        Ok(l) => l,
        Err(code) => return code,
    };
    // Both bound before either is announced: a script that waits for the
    // "listening" line must not find a service about to exit because the
    // dashboard's address was taken. Kept alive for as long as the
    // service runs.
    let dashboard = match dash.map(wq::dashboard::serve).transpose() {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "http_service: {e} (give the dashboard another address with --dashboard-addr HOST:PORT, or turn it off with --dashboard-addr off)"
            );
            return ExitCode::FAILURE;
        }
    };
    eprintln!("http_service: listening on http://{addr}");
    wq_examples::say_connection_cap("http_service", wq_examples::max_connections());
    if let Some(d) = &dashboard {
        let at = d.local_addr();
        eprintln!(
            "http_service: dashboard on http://{at}/ (Prometheus: http://{at}/metrics; wq-monitor {at})"
        );
    }
    match serve_until(
        listener,
        || service_fn(routes::service),
        Limits::default(),
        stop,
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http_service: {e}");
            ExitCode::FAILURE
        }
    }
}
