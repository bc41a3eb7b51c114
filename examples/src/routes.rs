//! The routes of `http_service`, as a plain hyper service.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | `hello from wq` |
//! | `GET /scope` | runs the handler at the `cache` scope (`wq::spawn_on`) and says on which thread and CPU |
//! | `GET /sleep?ms=N` | waits N ms (the request timeout cuts it at 5 s: 504) |
//! | `GET /blocking` | sums 2^20 numbers on the blocking pool (`wq::spawn_blocking`) |
//! | `GET /metrics` | the runtime's pool metrics, as text |
//!
//! Any other path is 404, any other method 405, a body over
//! [`MAX_BODY`](crate::MAX_BODY) 413.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use wq::Scope;

/// One response.
pub type Reply = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The service: routes `req` under the request timeout.
pub async fn service(req: Request<Incoming>) -> Result<Reply, Infallible> {
    Ok(
        match wq::time::timeout(crate::REQUEST_TIMEOUT, route(req)).await {
            Ok(reply) => reply,
            Err(_) => text(StatusCode::GATEWAY_TIMEOUT, "request timed out\n"),
        },
    )
}

/// Dispatches one request (module docs).
pub async fn route(req: Request<Incoming>) -> Reply {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "read-only: GET only\n");
        r.headers_mut().insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
        return r;
    }
    let (parts, body) = req.into_parts();
    // Drain (and cap) any body a client sent with its GET.
    if Limited::new(body, crate::MAX_BODY).collect().await.is_err() {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large or broken\n");
    }
    match parts.uri.path() {
        "/" => text(StatusCode::OK, "hello from wq\n"),
        "/scope" => scope().await,
        "/sleep" => match query_u64(parts.uri.query(), "ms") {
            Ok(ms) => {
                let ms = ms.unwrap_or(10).min(60_000);
                wq::time::sleep(Duration::from_millis(ms)).await;
                text(StatusCode::OK, format!("slept {ms} ms\n"))
            }
            Err(why) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
        },
        "/blocking" => {
            match wq::spawn_blocking(|| (0..1u64 << 20).fold(0u64, |a, x| a.wrapping_add(x * x)))
                .await
            {
                Ok(sum) => text(
                    StatusCode::OK,
                    format!("sum of squares below 2^20: {sum}\n"),
                ),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("blocking job failed: {e}\n"),
                ),
            }
        }
        "/metrics" => match metrics_table().await {
            Ok(table) => text(StatusCode::OK, table.to_string()),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "no such page\n"),
    }
}

/// How old a `/metrics` table may be when served again.
pub const METRICS_FRESH: std::time::Duration = std::time::Duration::from_millis(250);

/// The last `/metrics` table, the runtime it was made for (the address of
/// its topology, which that runtime owns while it lives), and when.
type Cached = (usize, std::time::Instant, std::sync::Arc<str>);
static METRICS: std::sync::Mutex<Option<Cached>> = std::sync::Mutex::new(None);

/// The runtime's metrics as a table, taken on the blocking pool: a
/// snapshot merges every pool's histograms under their locks, which
/// must not hold a worker. Requests within [`METRICS_FRESH`] of the last
/// table share it, one table made at a time (as the dashboard does):
/// 1,024 clients polling cost one snapshot per 250 ms, not one each.
pub async fn metrics_table() -> Result<std::sync::Arc<str>, wq::JoinError> {
    wq::spawn_blocking(|| {
        let handle = wq::Handle::current();
        let runtime = std::ptr::from_ref(handle.topology()) as usize;
        let mut last = METRICS.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((of, at, table)) if *of == runtime && at.elapsed() < METRICS_FRESH => {
                table.clone()
            }
            _ => {
                let table: std::sync::Arc<str> = handle.metrics().to_string().into();
                *last = Some((runtime, std::time::Instant::now(), table.clone()));
                table
            }
        }
    })
    .await
}

/// Runs at the `cache` scope: on the pool of this CPU's cache pod.
pub async fn scope() -> Reply {
    let where_ = wq::spawn_on(Scope::Cache, async {
        // SAFETY: sched_getcpu has no preconditions (-1 on error).
        let cpu = unsafe { libc::sched_getcpu() };
        format!(
            "ran at the cache scope on thread {:?}, cpu {cpu}\n",
            std::thread::current().name().unwrap_or("?")
        )
    })
    .await;
    match where_ {
        Ok(s) => text(StatusCode::OK, s),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// `key=<u64>` from a query string: `None` without one, an error saying
/// what is wrong with one that is not a number.
pub fn query_u64(query: Option<&str>, key: &str) -> Result<Option<u64>, String> {
    let Some((_, v)) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
    else {
        return Ok(None);
    };
    v.parse()
        .map(Some)
        .map_err(|_| format!("{key}={v:?} is not a whole number of {key}"))
}
