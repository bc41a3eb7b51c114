//! `#[wq::main]` and `#[wq::test]`: compile-time behaviour through trybuild
//! (`tests/ui/pass` must build and run, `tests/ui/fail` must fail with the
//! errors in its `.stderr` snapshots; refresh them with `TRYBUILD=overwrite`),
//! and `#[wq::test]` at work on real tests.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
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

// `#[wq::test]` first, then `#[test]`: the function is registered once.
#[wq::test]
#[test]
async fn test_keeps_an_existing_test_attribute() {
    wq::spawn(async {}).await.unwrap();
}
