#[wq::main(scope = "cpu", workers = 2, scope = "numa")]
async fn main() {}
