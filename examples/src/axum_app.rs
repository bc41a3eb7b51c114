//! The routes of `axum_service`: [`crate::routes`]' as an axum `Router`.
//!
//! axum is built with its default features off (no tokio, no
//! `axum::serve`); the router is served by hyper-util's `auto` server on
//! wq through `TowerToHyperService` ([`crate::serve`]).

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt;
use wq::Scope;

/// The router (module docs); any other path is 404, any other method 405.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { "hello from wq\n" }))
        .route("/scope", get(scope))
        .route("/sleep", get(sleep))
        .route("/blocking", get(blocking))
        .route("/pools", get(pools))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(crate::MAX_BODY))
        .layer(middleware::from_fn(cap_body))
        .layer(middleware::from_fn(with_timeout))
}

/// Any other path: 404 for a read, 405 for anything else (read-only,
/// as `http_service`, whose routes look at the method first).
async fn fallback(method: http::Method) -> Response {
    if method == http::Method::GET || method == http::Method::HEAD {
        (StatusCode::NOT_FOUND, "no such page\n").into_response()
    } else {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            [(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            )],
            "read-only: GET only\n",
        )
            .into_response()
    }
}

async fn pools() -> Response {
    match crate::routes::pools_table().await {
        // The cached table itself, not a copy (as `http_service`'s route).
        Ok(table) => (
            [(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            table,
        )
            .into_response(),
        Err(e) => crate::routes::internal_error("/pools", &e).into_response(),
    }
}

/// Reads (and caps) any request body before routing, as `http_service`
/// does: 413 beyond [`MAX_BODY`](crate::MAX_BODY), whether or not the
/// handler would read it. (`DefaultBodyLimit` alone only caps extractors.)
/// A method other than GET or HEAD is answered 405 first, body unread, as
/// `http_service`'s routes do (a write with a body over the limit got 413).
async fn cap_body(req: Request, next: Next) -> Response {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return fallback(req.method().clone()).await;
    }
    let (parts, body) = req.into_parts();
    match http_body_util::Limited::new(body, crate::MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => {
            next.run(Request::from_parts(
                parts,
                axum::body::Body::from(b.to_bytes()),
            ))
            .await
        }
        Err(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body too large or broken\n").into_response(),
    }
}

/// Answers 504 if the request is not answered in
/// [`REQUEST_TIMEOUT`](crate::REQUEST_TIMEOUT).
async fn with_timeout(req: Request, next: Next) -> Response {
    match wq::time::timeout(crate::REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (StatusCode::GATEWAY_TIMEOUT, "request timed out\n").into_response(),
    }
}

async fn scope() -> Response {
    let r = wq::spawn_on(Scope::Cache, async {
        // SAFETY: sched_getcpu has no preconditions (-1 on error).
        let cpu = unsafe { libc::sched_getcpu() };
        format!(
            "ran at the cache scope on thread {:?}, cpu {cpu}\n",
            std::thread::current().name().unwrap_or("?")
        )
    })
    .await;
    match r {
        Ok(s) => s.into_response(),
        Err(e) => crate::routes::internal_error("/scope", &e).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct SleepQuery {
    ms: Option<u64>,
}

async fn sleep(Query(q): Query<SleepQuery>) -> String {
    let ms = q.ms.unwrap_or(10).min(60_000);
    wq::time::sleep(Duration::from_millis(ms)).await;
    format!("slept {ms} ms\n")
}

async fn blocking() -> Response {
    use crate::routes::BlockingError;
    match crate::routes::blocking_sum().await {
        Ok(sum) => format!("sum of squares below 2^20: {sum}\n").into_response(),
        Err(BlockingError::Busy) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many blocking jobs at once: try again\n",
        )
            .into_response(),
        Err(BlockingError::Failed(e)) => {
            crate::routes::internal_error("/blocking", &e).into_response()
        }
    }
}
