#[wq::main(
    scope = "cache",
    wake = "deferred",
    topology = "pack:2 numa:2 l3:2 core:4 pu:2",
    workers = 4,
    crate = "::wq"
)]
async fn main() {
    let n = wq::spawn(async { 6 * 7 }).await.unwrap();
    assert_eq!(n, 42);
}
