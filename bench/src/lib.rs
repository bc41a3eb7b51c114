//! Benchmarks of wq, and wq beside tokio on the same work.
//!
//! The `wq-bench` binary (`src/main.rs`) runs:
//! - `workqueue`: the kernel's `lib/test_workqueue.c` shape, every scope in
//!   both wake modes plus a tokio row ([`workqueue`]);
//! - `sweep`: that shape over producer counts ([`sweep`]);
//! - `shapes`: tokio's scheduler shapes, quietly and beside busy
//!   neighbours ([`shapes`], [`neighbours`]);
//! - `locality`: same-pod vs cross-pod remote wakes and a cache-affine
//!   working set ([`locality`]);
//! - `memory`: bytes per idle task, RSS of an idle runtime, worker threads
//!   over an idle period ([`memory`]);
//! - `timers`, `http`, `echo`: the services (timing wheel, hyper with
//!   `wrk`, TCP echo) beside tokio ([`services`]).
//!
//! The criterion benches in `benches/` use [`shapes`] for the tokio
//! `rt_multi_threaded` shapes. Results and how they were taken are in
//! `docs/benchmarks.md`.

pub mod args;
pub mod completion;
pub mod locality;
pub mod machine;
pub mod memory;
pub mod neighbours;
pub mod plot;
pub mod services;
pub mod shapes;
pub mod stats;
pub mod sweep;
pub mod workqueue;
