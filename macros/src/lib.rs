//! `#[wq::main]` and `#[wq::test]`. Use them through the `wq` crate, which
//! re-exports them as [`wq::main`](macro@main) and [`wq::test`](macro@test).
//!
//! Both turn an `async fn` into a plain one that builds a wq runtime with
//! `wq::Runtime::builder()` and runs the body on it with `block_on`. The
//! attributes are one-line shims over `proc_macro2` code (`entry` and
//! `options`), so that code is unit-tested here and the crate's trybuild
//! tests live in `wq` (`runtime/tests/macros.rs`).
//!
//! Options, all optional, as comma-separated `name = value` pairs:
//!
//! - `scope = "cpu" | "smt" | "cache_shard" | "cache" | "numa" | "system"`:
//!   the default affinity scope (`Builder::default_scope`);
//! - `wake = "deferred" | "under_lock"`: the wake mode (`Builder::wake_mode`);
//! - `topology = "pack:2 numa:2 l3:2 core:4 pu:2"`: run on a synthetic hwloc
//!   topology instead of the machine's (`Builder::topology`);
//! - `workers = N`: at most N workers per pool, N >= 1
//!   (`Builder::max_workers_per_pool`; without it, a pool's pod CPUs up to
//!   the CPUs the process may use, so a `topology` wider than the machine
//!   gets no more workers per pool than the machine has CPUs);
//! - `crate = "path"`: the path of the `wq` crate, when it is renamed.

mod entry;
mod options;

use proc_macro::TokenStream;

/// Runs an `async fn main` on a wq runtime.
///
/// The function keeps its name, attributes, visibility and return type (a
/// `Result` and `?` work); it must be `async` and take no parameters. The
/// runtime is built from `wq::Runtime::builder()` with the options below and
/// the program panics if it cannot be built.
///
/// ```ignore
/// #[wq::main]
/// async fn main() {
///     let n = wq::spawn(async { 6 * 7 }).await.unwrap();
///     assert_eq!(n, 42);
/// }
/// ```
///
/// With options and a `Result`:
///
/// ```ignore
/// #[wq::main(scope = "cache", wake = "deferred", workers = 4)]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let n: u32 = "42".parse()?;
///     println!("{n}");
///     Ok(())
/// }
/// ```
///
/// # Options
///
/// | option     | values                                                        |
/// |------------|---------------------------------------------------------------|
/// | `scope`    | `"cpu"`, `"smt"`, `"cache_shard"`, `"cache"`, `"numa"`, `"system"` |
/// | `wake`     | `"deferred"`, `"under_lock"`                                  |
/// | `topology` | an hwloc synthetic string, like `"pack:2 numa:2 l3:2 core:4 pu:2"` |
/// | `workers`  | a positive integer: the most workers in one pool              |
/// | `crate`    | the path of a renamed `wq` crate, like `"::my_wq"`            |
///
/// Each may be given once. A bad option, a non-`async` function or one with
/// parameters is a compile error that points at the culprit. A `topology`
/// string is checked there for its form and size (levels `name:N`, the
/// last also a bare `N`, hwloc's attribute lists and memory children
/// skipped; at most `wq::MAX_CPUS` CPUs); its level names and their
/// nesting are checked when
/// the program starts (`wq::Topology::synthetic`, with hwloc's grammar
/// where hwloc is built in), where a bad one panics saying which level.
///
/// The body is checked against the function's return type as an `async
/// fn`'s is (a `return Err(Box::new(e))` coerces to `Box<dyn Error>`),
/// being made an inner `async fn`. On a function that may be an
/// associated one (not named `main`, or whose signature or body says
/// `Self`) it stays an `async` block, which can use `Self` and the
/// `impl`'s generic parameters, and a returned value that must coerce
/// needs the coercion written (`Err(Box::new(e) as Box<dyn Error>)`); so
/// does a `main` inside a generic `impl` that uses the `impl`'s
/// parameters, which an inner function cannot name (rustc says so:
/// rename it, or write `Self`).
///
/// The expansion is, for `#[wq::main(scope = "cache")]`:
///
/// ```ignore
/// fn main() {
///     // The body, checked against the function's return type.
///     async fn body_fn() { /* the body */ }
///     let body = body_fn();
///     return match ::wq::Runtime::builder()
///         .default_scope(::wq::Scope::Cache)
///         .build()
///     {
///         Ok(rt) => rt,
///         Err(e) => panic!("#[wq::main]: failed to build the wq runtime: {} (...)", e),
///     }
///     .block_on(body);
/// }
/// ```
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::expand(entry::Kind::Main, args.into(), item.into()).into()
}

/// Runs an `async fn` test on a fresh wq runtime.
///
/// Like [`macro@main`], with the same options, and the function also gets
/// `#[test]` (unless it already has one). Each test builds its own runtime.
/// The test may return a `Result`; `#[should_panic]` and `#[ignore]` work as
/// usual, except that a `#[should_panic]` test whose runtime cannot be
/// built (a topology hwloc refuses, say) does not take that for its
/// expected panic: it prints the error and returns, failing as "did not
/// panic", without running its body.
///
/// ```ignore
/// #[wq::test]
/// async fn spawns() {
///     assert_eq!(wq::spawn(async { 1 + 1 }).await.unwrap(), 2);
/// }
///
/// #[wq::test(scope = "system", topology = "core:2 pu:2", workers = 2)]
/// async fn on_a_synthetic_machine() -> Result<(), wq::JoinError> {
///     wq::spawn(async {}).await
/// }
/// ```
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::expand(entry::Kind::Test, args.into(), item.into()).into()
}
