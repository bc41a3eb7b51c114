//! `http_service`: a hyper service on `#[wq::main]` (see
//! `wq_examples::routes` for its routes and `wq_examples` for its limits).
//!
//! ```text
//! cargo run --release -p wq-examples --bin http_service -- --addr 127.0.0.1:8080
//! curl localhost:8080/scope
//! ```

use std::process::ExitCode;

use hyper::service::service_fn;
use wq_examples::{bind, parse_args, routes, serve};

#[wq::main(scope = "cache")]
async fn main() -> ExitCode {
    let opts = match parse_args("http_service", 8080, std::env::args().skip(1)) {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let (listener, addr) = match bind(&opts).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("http_service: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("http_service: listening on http://{addr}");
    match serve(listener, || service_fn(routes::service)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http_service: {e}");
            ExitCode::FAILURE
        }
    }
}
