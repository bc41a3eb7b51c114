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

/// `print!` to stdout that ends the program quietly (exit status 0) when
/// the reader has gone (`wq-bench ... | head`): Rust ignores SIGPIPE, and
/// `print!` panicked on the broken pipe. What matters is done by then
/// (the busy neighbours stopped, the plots written).
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => {
        $crate::write_out(&::std::format!($($t)*))
    };
}

/// [`out!`] with a newline.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::write_out("\n")
    };
    ($($t:tt)*) => {
        $crate::write_out(&::std::format!("{}\n", ::std::format_args!($($t)*)))
    };
}

/// `eprintln!` for progress and notes: a write error (a reader of stderr
/// that has gone, `2>&1 | head`) is ignored, where `eprintln!` panicked
/// mid-run (exit status 101, the plots never written).
#[macro_export]
macro_rules! progress {
    ($($t:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stderr().lock(), $($t)*);
    }};
}

/// Writes `s` to stdout (see [`out!`]); another write error ends the
/// program with it.
pub fn write_out(s: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(s.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            progress!("wq-bench: could not write the results to stdout: {e}");
            std::process::exit(1);
        }
    }
}

pub mod args;
pub mod completion;
pub mod flushes;
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
