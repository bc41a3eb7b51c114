//! tokio's `rt_multi_threaded` benchmark shapes, written once over
//! [`BenchRuntime`] so wq and tokio run the same code.
//!
//! Worker counts are matched: wq runs one `system`-scope pool whose
//! maximum is the online CPU count (`max_workers_per_pool(n)`; wq starts
//! workers on demand), tokio a multi-thread runtime with
//! `worker_threads(n)` (started eagerly). Every shape ends with the
//! calling (non-runtime) thread waiting on the same [`Completion`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::channel::oneshot;

use crate::completion::Completion;

/// Spawns in `spawn_many`.
pub const SPAWN_MANY: usize = 10_000;
/// Tasks in `yield_many`.
pub const YIELD_TASKS: usize = 200;
/// Yields per task in `yield_many`.
pub const YIELDS: usize = 1_000;
/// Pairs in `ping_pong`.
pub const PING_PONGS: usize = 1_000;
/// Depth of `chained_spawn`.
pub const CHAIN_DEPTH: usize = 1_000;
/// Spawner threads in `remote_spawn`.
pub const REMOTE_THREADS: usize = 2;
/// Spawns per spawner thread in `remote_spawn`.
pub const REMOTE_SPAWNS: usize = 5_000;

/// What a shape needs of a runtime.
pub trait BenchRuntime: Sync {
    /// Spawns a detached task from any thread, through a handle.
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F);
    /// Spawns a detached task from inside a task of this runtime.
    fn spawn_current<F: Future<Output = ()> + Send + 'static>(f: F);
    /// Yields once.
    fn yield_now() -> impl Future<Output = ()> + Send;
}

/// wq with one `system` pool of `n` workers.
#[derive(Debug)]
pub struct Wq(pub wq::Runtime);

impl Wq {
    /// Workers: `n` (the pool's maximum).
    pub fn new(n: usize) -> Wq {
        Wq(wq::Runtime::builder()
            .default_scope(wq::Scope::System)
            .max_workers_per_pool(n)
            .build()
            .expect("wq runtime"))
    }
}

impl BenchRuntime for Wq {
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F) {
        drop(self.0.spawn(f));
    }
    fn spawn_current<F: Future<Output = ()> + Send + 'static>(f: F) {
        drop(wq::spawn(f));
    }
    fn yield_now() -> impl Future<Output = ()> + Send {
        wq::task::yield_now()
    }
}

/// tokio's multi-thread runtime with `n` workers.
#[derive(Debug)]
pub struct Tokio(pub tokio::runtime::Runtime);

impl Tokio {
    /// Workers: `n`.
    pub fn new(n: usize) -> Tokio {
        Tokio(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .build()
                .expect("tokio runtime"),
        )
    }
}

impl BenchRuntime for Tokio {
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F) {
        drop(self.0.spawn(f));
    }
    fn spawn_current<F: Future<Output = ()> + Send + 'static>(f: F) {
        drop(tokio::spawn(f));
    }
    fn yield_now() -> impl Future<Output = ()> + Send {
        tokio::task::yield_now()
    }
}

/// Counts down; the last one completes `done`.
fn countdown(n: usize) -> (Arc<AtomicUsize>, Arc<Completion>) {
    (Arc::new(AtomicUsize::new(n)), Completion::new())
}

fn finish_one(rem: &AtomicUsize, done: &Completion) {
    // AcqRel: the last decrement sees every other task's work.
    if rem.fetch_sub(1, Ordering::AcqRel) == 1 {
        done.complete();
    }
}

/// A task spawns [`SPAWN_MANY`] tasks from inside the runtime.
pub fn spawn_many<R: BenchRuntime>(rt: &R) {
    let (rem, done) = countdown(SPAWN_MANY);
    let d = done.clone();
    rt.spawn(async move {
        for _ in 0..SPAWN_MANY {
            let (rem, d) = (rem.clone(), d.clone());
            R::spawn_current(async move { finish_one(&rem, &d) });
        }
    });
    done.wait();
}

/// [`YIELD_TASKS`] tasks yield [`YIELDS`] times each.
pub fn yield_many<R: BenchRuntime>(rt: &R) {
    let (rem, done) = countdown(YIELD_TASKS);
    for _ in 0..YIELD_TASKS {
        let (rem, d) = (rem.clone(), done.clone());
        rt.spawn(async move {
            for _ in 0..YIELDS {
                R::yield_now().await;
            }
            finish_one(&rem, &d);
        });
    }
    done.wait();
}

/// [`PING_PONGS`] pairs of tasks exchange a ping and a pong over
/// `futures` oneshot channels.
pub fn ping_pong<R: BenchRuntime>(rt: &R) {
    let (rem, done) = countdown(PING_PONGS);
    let d = done.clone();
    rt.spawn(async move {
        for _ in 0..PING_PONGS {
            let (rem, d) = (rem.clone(), d.clone());
            R::spawn_current(async move {
                let (tx1, rx1) = oneshot::channel::<()>();
                let (tx2, rx2) = oneshot::channel::<()>();
                R::spawn_current(async move {
                    rx1.await.expect("ping");
                    tx2.send(()).expect("pong");
                });
                tx1.send(()).expect("ping");
                rx2.await.expect("pong");
                finish_one(&rem, &d);
            });
        }
    });
    done.wait();
}

fn chain<R: BenchRuntime>(done: Arc<Completion>, n: usize) {
    if n == 0 {
        done.complete();
    } else {
        R::spawn_current(async move { chain::<R>(done, n - 1) });
    }
}

/// Each task spawns the next, [`CHAIN_DEPTH`] deep.
pub fn chained_spawn<R: BenchRuntime>(rt: &R) {
    let done = Completion::new();
    let d = done.clone();
    rt.spawn(async move { chain::<R>(d, CHAIN_DEPTH) });
    done.wait();
}

/// [`REMOTE_THREADS`] threads outside the runtime spawn
/// [`REMOTE_SPAWNS`] tasks each.
pub fn remote_spawn<R: BenchRuntime>(rt: &R) {
    let (rem, done) = countdown(REMOTE_THREADS * REMOTE_SPAWNS);
    std::thread::scope(|s| {
        for _ in 0..REMOTE_THREADS {
            let (rem, done) = (&rem, &done);
            s.spawn(move || {
                for _ in 0..REMOTE_SPAWNS {
                    let (rem, d) = (rem.clone(), done.clone());
                    rt.spawn(async move { finish_one(&rem, &d) });
                }
            });
        }
    });
    done.wait();
}

/// Every shape by name, for the criterion benches and `wq-bench shapes`.
pub const NAMES: [&str; 5] = [
    "spawn_many",
    "yield_many",
    "ping_pong",
    "chained_spawn",
    "remote_spawn",
];

/// Runs shape `name` once on `rt`; `false` if there is no such shape.
pub fn run<R: BenchRuntime>(name: &str, rt: &R) -> bool {
    match name {
        "spawn_many" => spawn_many(rt),
        "yield_many" => yield_many(rt),
        "ping_pong" => ping_pong(rt),
        "chained_spawn" => chained_spawn(rt),
        "remote_spawn" => remote_spawn(rt),
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_completes_on_both_runtimes() {
        let (w, t) = (Wq::new(2), Tokio::new(2));
        for name in NAMES {
            assert!(run(name, &w), "{name}");
            assert!(run(name, &t), "{name}");
        }
        assert!(!run("nope", &w));
    }
}
