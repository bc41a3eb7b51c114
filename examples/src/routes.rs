//! The routes of `http_service`, as a plain hyper service.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | `hello from wq` |
//! | `GET /scope` | runs the handler at the `cache` scope (`wq::spawn_on`) and says on which thread and CPU |
//! | `GET /sleep?ms=N` | waits N ms (the request timeout cuts it at 5 s: 504) |
//! | `GET /blocking` | sums 2^20 numbers on the blocking pool (`wq::spawn_blocking`); at most 64 such requests waiting at once (503 beyond), a job not yet started cancelled with its request (a started one finishes) |
//! | `GET /pools` | the runtime's pools and workqueues as text tables (`Snapshot`'s `Display`; for Prometheus, the dashboard's `/metrics`) |
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
        "/blocking" => match blocking_sum().await {
            Ok(sum) => text(
                StatusCode::OK,
                format!("sum of squares below 2^20: {sum}\n"),
            ),
            Err(BlockingError::Busy) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many blocking jobs at once: try again\n",
            ),
            Err(BlockingError::Failed(e)) => internal_error("/blocking", &e),
        },
        "/pools" => match pools_table().await {
            // The cached table itself: a response holds a reference to it,
            // not a copy (16 streams on each of 1,024 connections could
            // hold one each until idle).
            Ok(table) => text(StatusCode::OK, table),
            Err(e) => internal_error("/pools", &e),
        },
        _ => text(StatusCode::NOT_FOUND, "no such page\n"),
    }
}

/// How old a `/pools` table may be when served again.
pub const POOLS_FRESH: std::time::Duration = std::time::Duration::from_millis(250);

/// A `/pools` table being made (one snapshot job), awaited by every
/// request that wants it.
type Making = futures::future::Shared<futures::future::BoxFuture<'static, Result<Bytes, String>>>;

/// The `/pools` cache: the runtime it is for ([`wq::Handle::instance`]:
/// an address could be a dropped runtime's), the last table and when it
/// was made, and the one being made.
struct Pools {
    runtime: u64,
    last: Option<(std::time::Instant, Bytes)>,
    making: Option<Making>,
}

static POOLS: std::sync::Mutex<Option<Pools>> = std::sync::Mutex::new(None);

/// The runtime's metrics as a table, taken on the blocking pool: a
/// snapshot merges every pool's histograms under their locks, which
/// must not hold a worker. Requests within [`POOLS_FRESH`] of the last
/// table share it, and those after it share the next: one snapshot job at
/// a time, whatever the number of requests (as the dashboard does:
/// 1,024 clients polling cost one snapshot per 250 ms, not one each, nor a
/// blocking thread each). A request that goes leaves the job to the
/// others, or, if none is left, to the next request.
pub async fn pools_table() -> Result<Bytes, String> {
    use futures::FutureExt;
    let handle = wq::Handle::current();
    let runtime = handle.instance();
    // Held only to look or to store (taken on a worker).
    let making = {
        let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
        let cache = match &mut *pools {
            Some(p) if p.runtime == runtime => p,
            other => other.insert(Pools {
                runtime,
                last: None,
                making: None,
            }),
        };
        if let Some((at, table)) = &cache.last
            && at.elapsed() < POOLS_FRESH
        {
            return Ok(table.clone());
        }
        cache
            .making
            .get_or_insert_with(|| {
                // A task of its own, not a future only the requests poll:
                // run to its end whether or not they stay (one whose
                // requests all went kept its snapshot, and served it as
                // new to the next request, however old).
                let job = wq::spawn(async move {
                    let table = wq::spawn_blocking(move || handle.metrics().to_string())
                        .await
                        .map(Bytes::from)
                        .map_err(|e| e.to_string());
                    // Made or failed, the next request after makes its own.
                    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(p) = &mut *pools
                        && p.runtime == runtime
                    {
                        if let Ok(table) = &table {
                            p.last = Some((std::time::Instant::now(), table.clone()));
                        }
                        p.making = None;
                    }
                    table
                });
                async move { job.await.map_err(|e| e.to_string())? }
                    .boxed()
                    .shared()
            })
            .clone()
    };
    making.await
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
        Err(e) => internal_error("/scope", &e),
    }
}

/// A 500 that says nothing of the failure (a panic's message may carry
/// anything: these routes are a template); the detail goes to the log.
pub fn internal_error(route: &str, e: &dyn std::fmt::Display) -> Reply {
    crate::report::report(format!("{route}: {e}"));
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
}

/// The most `/blocking` requests waiting for their job at once; beyond,
/// 503.
pub const MAX_BLOCKING_JOBS: usize = 64;

static BLOCKING_JOBS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `/blocking` requests waiting for their job now.
pub fn blocking_jobs() -> usize {
    BLOCKING_JOBS.load(std::sync::atomic::Ordering::Acquire)
}

/// Why [`blocking_sum`] gave no sum.
#[derive(Debug)]
pub enum BlockingError {
    /// [`MAX_BLOCKING_JOBS`] are queued or running.
    Busy,
    /// The job failed (a panic).
    Failed(wq::JoinError),
}

/// One of the jobs counted against [`MAX_BLOCKING_JOBS`], held by its
/// request.
struct JobSlot;

impl JobSlot {
    fn take() -> Option<JobSlot> {
        use std::sync::atomic::Ordering;
        BLOCKING_JOBS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_BLOCKING_JOBS).then_some(n + 1)
            })
            .ok()
            .map(|_| JobSlot)
    }
}

impl Drop for JobSlot {
    fn drop(&mut self) {
        BLOCKING_JOBS.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Aborts its job when dropped: a request that goes (timed out, reset)
/// takes its job with it if the job has not started (a dropped
/// `JoinHandle` detaches: every timed-out request left a job queued).
struct AbortOnDrop<T>(wq::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `/blocking`'s work on the blocking pool: at most [`MAX_BLOCKING_JOBS`]
/// at once, each cancelled with its request if it has not started (a
/// started one finishes: a thread cannot be interrupted), so clients that
/// go away leave no backlog behind for the workers and the next clients.
pub async fn blocking_sum() -> Result<u64, BlockingError> {
    capped_blocking(|| (0..1u64 << 20).fold(0u64, |a, x| a.wrapping_add(x * x))).await
}

/// `f` on the blocking pool as [`blocking_sum`]'s job: counted against
/// [`MAX_BLOCKING_JOBS`], cancelled with its request if not started.
pub async fn capped_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BlockingError> {
    // Held by the request: a job cancelled with it stays queued until a
    // blocking thread reaches it (and drops it unrun), and must not count.
    let _slot = JobSlot::take().ok_or(BlockingError::Busy)?;
    let mut job = AbortOnDrop(wq::spawn_blocking(f));
    (&mut job.0).await.map_err(BlockingError::Failed)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Beyond [`MAX_BLOCKING_JOBS`] a request is refused at once; the
    /// jobs of requests that go before their job starts are cancelled
    /// (they stayed queued, and ran after their clients had left, ahead
    /// of every later job).
    #[test]
    fn blocking_jobs_are_capped_and_go_with_their_requests() {
        let rt = wq::Runtime::builder()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        // The one blocking thread, held.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let blocker = rt.spawn_blocking(move || {
            started_tx.send(()).unwrap();
            let _ = held.recv();
        });
        started.recv().unwrap();
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let requests: Vec<_> = (0..MAX_BLOCKING_JOBS + 6)
            .map(|_| {
                let ran = ran.clone();
                rt.spawn(capped_blocking(move || {
                    ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }))
            })
            .collect();
        // Every request has taken its slot or been refused: the slots
        // full, and the 6 beyond them polled (a worker preempted, or their
        // tasks on a deque not yet run, may hold them back a while).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while blocking_jobs() < MAX_BLOCKING_JOBS
            || requests.iter().filter(|r| r.is_finished()).count() < 6
        {
            assert!(std::time::Instant::now() < deadline, "{}", blocking_jobs());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut busy = 0;
        let mut waiting = Vec::new();
        for r in requests {
            if r.is_finished() {
                match rt.block_on(r).unwrap() {
                    Err(BlockingError::Busy) => busy += 1,
                    other => panic!("finished while the pool was held: {other:?}"),
                }
            } else {
                waiting.push(r);
            }
        }
        assert_eq!(busy, 6, "refused beyond the cap");
        // The clients go: their queued jobs with them.
        for r in waiting {
            r.abort();
        }
        while blocking_jobs() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} jobs left behind by requests that went",
                blocking_jobs()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(release);
        rt.block_on(blocker).unwrap();
        // Behind the cancelled jobs in the queue: they were dropped unrun.
        assert!(rt.block_on(blocking_sum()).is_ok());
        assert_eq!(
            ran.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "jobs of requests that went ran"
        );
    }

    /// A 500 says nothing of its cause: a panic's message stays in the log.
    #[test]
    fn an_internal_error_does_not_show_its_cause() {
        let reply = internal_error("/x", &"secret detail");
        assert_eq!(reply.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = futures::executor::block_on(reply.into_body().collect())
            .unwrap()
            .to_bytes();
        assert!(!String::from_utf8_lossy(&body).contains("secret"));
    }
}
