#[wq::main]
async fn main() {
    let n = wq::spawn(async { 1 + 1 }).await.unwrap();
    assert_eq!(n, 2);
}
