//! `#[wq::main]` and `#[wq::test]`: compile-time behaviour through trybuild
//! (`tests/ui/pass` must build and run, `tests/ui/fail` must fail with the
//! errors in its `.stderr` snapshots; refresh them with `TRYBUILD=overwrite`),
//! and `#[wq::test]` at work on real tests.

/// The rustc whose messages the `tests/ui/fail` snapshots hold: besides
/// the macros' own errors they hold rustc's (an error the expansion kept
/// on purpose, and its notes), whose wording changes between releases.
const SNAPSHOTS_RUSTC: &str = "rustc 1.95.";

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = std::process::Command::new(&rustc)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if version.starts_with(SNAPSHOTS_RUSTC) {
        cases.compile_fail("tests/ui/fail/*.rs");
    } else {
        // Another compiler words its own errors its own way: the
        // snapshots are checked by the one CI runs (README, "Quick
        // start"), and refreshed with TRYBUILD=overwrite when it moves.
        eprintln!(
            "tests/ui/fail skipped: its snapshots are of {SNAPSHOTS_RUSTC}x, this is {}",
            version.trim()
        );
    }
}

/// The options reach the runtime the test runs on (the ui tests only
/// build and run them).
#[wq::test(
    scope = "numa",
    wake = "under_lock",
    topology = "pack:2 numa:2 core:2 pu:2",
    workers = 3
)]
async fn test_options_take_effect() {
    wq::spawn(async {}).await.unwrap();
    let h = wq::Handle::current();
    assert_eq!(h.topology().num_cpus(), 16);
    let m = h.metrics();
    assert!(m.pools.iter().all(|p| p.max_workers == 3), "{:?}", m.pools);
    assert!(m.pools.iter().any(|p| p.scope == wq::Scope::Numa));
}

#[wq::test]
async fn test_runs_the_body_on_a_runtime() {
    let n = wq::spawn(async { 6 * 7 }).await.unwrap();
    assert_eq!(n, 42);
}

#[wq::test(
    scope = "system",
    wake = "under_lock",
    topology = "core:2 pu:2",
    workers = 2
)]
async fn test_takes_every_option() -> Result<(), wq::JoinError> {
    wq::spawn(async {}).await
}

#[wq::test]
async fn test_may_return_a_result() -> Result<(), std::num::ParseIntError> {
    let n: u32 = "7".parse()?;
    assert_eq!(n, 7);
    Ok(())
}

#[wq::test]
#[should_panic(expected = "the body panicked")]
async fn test_keeps_should_panic() {
    panic!("the body panicked");
}

// A topology the macro's check lets through and the runtime refuses (`pu`
// must be the last level): a `#[should_panic]` test must not take the
// runtime's refusal for its expected panic. The misconfigured tests live
// inside the tests that call them: the harness registers no inner item
// (they were `#[ignore]`d tests of their own, which `--include-ignored`
// ran and failed).
#[allow(unnameable_test_items)]
#[test]
fn a_should_panic_test_whose_runtime_is_refused_fails_without_running_its_body() {
    #[wq::test(topology = "pu:2 core:4")]
    #[should_panic]
    async fn misconfigured_should_panic_test() {
        panic!("the body ran");
    }
    // Returns (so the harness reports "did not panic as expected", the
    // runtime's error printed on stderr) instead of panicking.
    misconfigured_should_panic_test();
}

// The same runtime refusal under a `cfg_attr` that does not apply: the test
// is an ordinary one, and a runtime that cannot be built must fail it (a
// panic), not return as a `#[should_panic]` test's would, passing it
// without running its body.
#[allow(unnameable_test_items)]
#[test]
#[should_panic(expected = "invalid `topology` option")]
fn a_cfg_attr_that_does_not_apply_keeps_the_runtime_refusal_a_panic() {
    #[wq::test(topology = "pu:2 core:4")]
    #[cfg_attr(any(), should_panic)]
    async fn misconfigured_test_with_an_inactive_should_panic() {}
    misconfigured_test_with_an_inactive_should_panic();
}

// And under one that applies (`all()` is true), it returns as above.
#[allow(unnameable_test_items)]
#[test]
fn a_cfg_attr_that_applies_returns_on_the_runtime_refusal() {
    #[wq::test(topology = "pu:2 core:4")]
    #[cfg_attr(all(), should_panic)]
    async fn misconfigured_test_with_an_active_should_panic() {
        panic!("the body ran");
    }
    misconfigured_test_with_an_active_should_panic();
}

// `#[wq::test]` first, then `#[test]`: the function is registered once.
#[wq::test]
#[test]
async fn test_keeps_an_existing_test_attribute() {
    wq::spawn(async {}).await.unwrap();
}

/// The body is checked against the declared return type, as an `async fn`'s
/// is: a boxed error coerces to `Box<dyn Error>` at a `return`, a closure's
/// parameter types come from the return type.
#[wq::test]
async fn test_body_meets_its_declared_return_type() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("WQ_NEVER_SET_4f1c").is_some() {
        return Err(Box::new(std::fmt::Error));
    }
    let add: Box<dyn Fn(u32) -> u32> = adder().await;
    assert_eq!(add(1), 2);
    Ok(())
}

/// So is the body of a test that holds an item saying `Self` (a
/// hand-written future's `impl`): that made the body an `async` block,
/// whose `return` no longer coerced, and the test did not compile.
#[wq::test]
async fn a_test_with_a_nested_impl_meets_its_declared_return_type()
-> Result<(), Box<dyn std::error::Error>> {
    struct Ready;
    impl std::future::Future for Ready {
        type Output = u8;
        fn poll(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<u8> {
            std::task::Poll::Ready(1)
        }
    }
    if Ready.await != 1 {
        return Err(Box::new(std::fmt::Error));
    }
    Ok(())
}

async fn adder() -> Box<dyn Fn(u32) -> u32> {
    Box::new(|x| x + 1)
}

/// A test that never returns compiles (the body's `-> !` is an inner
/// `async fn`'s; `Output = !` cannot be written): ignored, it would end
/// the process. (libtest's own call of a `-> !` test is an unreachable
/// call, a warning allowed for the module; `ui/pass/main_never.rs` checks
/// the expansion adds none.)
mod never {
    #![allow(unreachable_code)]

    #[wq::test]
    #[ignore = "ends the test process: only its compiling is checked"]
    async fn test_may_never_return() -> ! {
        std::process::exit(0)
    }
}

/// A test may return an `impl Termination` (no `dyn Future` pin for it).
#[wq::test]
async fn test_may_return_an_impl_termination() -> impl std::process::Termination {
    wq::spawn(async {}).await.unwrap();
}

/// The expansion names everything by absolute paths: it compiles where
/// the prelude is not imported.
mod no_prelude {
    #![no_implicit_prelude]

    #[::wq::test]
    async fn plain() {}

    #[::wq::test(topology = "core:2 pu:1")]
    async fn with_options() -> ::core::result::Result<(), ::std::string::String> {
        ::core::result::Result::Ok(())
    }
}
