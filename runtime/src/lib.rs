//! wq: an async runtime that schedules the way the Linux kernel's workqueue
//! does.
//!
//! wq reads the machine's topology ([`Topology`], through hwloc) and splits
//! it into **pods** per **affinity scope** ([`Scope`]: `cpu`, `smt`,
//! `cache_shard`, `cache`, `numa`, `system`). Each pod gets a **worker
//! pool** of threads bound to its CPUs (a non-strict `cache_shard` pool's,
//! to its shard's whole cache). A task spawned with a scope runs in
//! the pool of the pod that holds the spawning CPU, and is re-queued there
//! whenever it wakes. Pools keep the kernel's idle protocol, with two of
//! its newest patches (June 2026): a **kicked list** so culling idle
//! workers can never strand work, and **deferred wakeup** so a wakeup never
//! happens under the pool lock (the default, `WakeMode::Deferred`); workers that are already **searching**
//! absorb new work without any lock. The pools' counters, every task's
//! scheduling delay (per-worker HdrHistograms), and with
//! [`Builder::latency_capture`] every poll's duration and every spawn
//! call's time, are
//! read on demand as a [`metrics::Snapshot`] ([`Runtime::metrics`]), with
//! a Prometheus text form.
//!
//! ```
//! use wq::Scope;
//!
//! #[wq::main(scope = "cache")]
//! async fn main() {
//!     let near = wq::spawn(async { 1 });                     // cache scope
//!     let far = wq::spawn_on(Scope::System, async { 2 });   // any CPU
//!     assert_eq!(near.await.unwrap() + far.await.unwrap(), 3);
//! }
//! ```
//!
//! The vocabulary (scope, pod, pool, worker, kick, idle, kicked, cull, wake
//! queue) is defined in `docs/architecture.md`.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

/// `log::warn!`, a panicking logger's unwind (and its payload's drop)
/// caught here: wq warns from inside its own steps (a spawn between its
/// count and its push, a worker binding itself), where an unwind would
/// leave a count or a slot behind, or end a worker. A logger that panics
/// (one writing to a closed stderr with `eprintln!`) loses its line.
macro_rules! warn_caught {
    ($($arg:tt)+) => {{
        let logged = ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| {
            ::log::warn!($($arg)+)
        }));
        if let Err(panic) = logged {
            let _ = ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(move || drop(panic)));
        }
    }};
}

// The integration tests' child runner (a hung child killed and reported),
// for unit tests that run this test binary as a child.
#[cfg(test)]
#[path = "../tests/common/child.rs"]
mod child_process;

// Layers, each importing only from those above it in this list (the
// task <-> pool link async-task imposes aside); `tests/layers.rs` checks it.
mod clock;
mod coop;
#[cfg(feature = "dashboard")]
pub mod dashboard;
mod driver;
#[cfg(feature = "hyper")]
pub mod hyper;
pub mod io;
mod loom;
pub mod metrics;
pub mod net;
mod pool;
pub mod process;
mod runtime;
mod scheduler;
mod scope;
pub mod signal;
pub mod task;
pub mod time;
mod topology;
mod wake;

pub use metrics::{WorkqueueAttrs, WorkqueueStats};
pub use runtime::workqueue::{SpawnError, Workqueue, WorkqueueBuilder, WorkqueueError};
pub use runtime::{
    BuildError, Builder, DEFAULT_CPU_HOG_THRESHOLD, DEFAULT_WORKER_SPIN, EnterGuard, Handle,
    Runtime, spawn, spawn_blocking, spawn_on,
};
pub use scope::{ParseScopeError, Scope};
pub use task::{AbortHandle, JoinError, JoinHandle, block_in_place};
pub use topology::{
    CpuInfo, DEFAULT_CACHE_SHARD_SIZE, MAX_CPUS, Pod, Topology, TopologyError, TopologyErrorKind,
};
pub use wake::{ParseWakeModeError, WakeMode};

/// Runs an `async fn main` on a wq runtime.
///
/// Options: `scope = "cpu" | "smt" | "cache_shard" | "cache" | "numa" |
/// "system"` (the default scope of `wq::spawn`, see [`Scope`];
/// `cache_shard` if omitted),
/// `wake = "deferred" | "under_lock"` ([`WakeMode`]), `topology = "<hwloc
/// synthetic>"` ([`Topology::synthetic`]), `workers = N`
/// ([`Builder::max_workers_per_pool`]; without it, a pool's pod CPUs up to
/// the CPUs the process may use), `crate = "path"` (the path of `wq` when
/// it is renamed in `Cargo.toml`). A bad value is a compile error that
/// names the option and what it accepts, except a topology's level names
/// and their nesting, which the runtime checks when the program starts
/// (it panics saying what it refused).
///
/// ```
/// #[wq::main(scope = "system", wake = "deferred", workers = 2)]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let n: u32 = "42".parse()?;
///     assert_eq!(wq::spawn(async move { n + 1 }).await?, 43);
///     Ok(())
/// }
/// ```
pub use wq_macros::main;

/// Runs an `async fn` test on a fresh wq runtime; the same options as
/// [`main`].
///
/// ```no_run
/// #[wq::test(scope = "cpu")]
/// async fn spawns() {
///     assert_eq!(wq::spawn(async { 2 }).await.unwrap(), 2);
/// }
/// ```
pub use wq_macros::test;

/// The README's examples, compiled and run as doctests so they stay true.
/// Its hyper, axum and dashboard examples need the `dashboard` feature
/// (which implies `hyper`; on in `cargo test --workspace`, which the
/// examples crate unifies in).
#[cfg(all(doctest, feature = "dashboard"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The workqueue guide's example, compiled and run as a doctest (the other
/// guide pages show output, and point at their runnable examples).
#[cfg(doctest)]
#[doc = include_str!("../../docs/guide/workqueues.md")]
pub struct GuideDoctests;

/// `wq-macros` checks `#[wq::main]`'s options at compile time against
/// copies of these limits (it cannot depend on this crate).
#[cfg(all(test, not(loom)))]
mod limits {
    #[test]
    fn the_macros_copies_of_the_limits_match() {
        assert_eq!(crate::MAX_CPUS, 8192, "update wq-macros' MAX_CPUS too");
        assert_eq!(
            crate::pool::MAX_WORKERS,
            32_767,
            "update wq-macros' MAX_WORKERS too"
        );
    }
}
