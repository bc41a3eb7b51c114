#[wq::main]
async fn main(args: Vec<String>) {
    drop(args);
}

#[wq::test]
async fn a_test(n: u32) {
    assert_eq!(n, 0);
}
