// `#[wq::test]` expands without errors. (Outside `cargo test` the test
// functions are compiled out; `tests/macros.rs` runs real ones.)

#[wq::test]
async fn plain() {
    assert_eq!(wq::spawn(async { 2 }).await.unwrap(), 2);
}

#[wq::test(
    scope = "system",
    wake = "deferred",
    topology = "core:2 pu:2",
    workers = 2
)]
async fn every_option() -> Result<(), wq::JoinError> {
    wq::spawn(async {}).await
}

#[wq::test]
#[test]
#[should_panic]
async fn has_its_own_test_attribute() {
    panic!("expected");
}

// A test that never returns (`-> !`): its body is not pinned behind
// `dyn Future<Output = !>`, which does not compile (`!` is unstable there).
#[wq::test]
#[ignore = "ends the process"]
async fn never_returns() -> ! {
    std::process::exit(0)
}

fn main() {}
