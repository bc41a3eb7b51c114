#[wq::main(flavor = "multi_thread")]
async fn main() {}

#[wq::test(worker_threads = 4)]
async fn a_test() {}
