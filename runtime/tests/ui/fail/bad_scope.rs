#[wq::main(scope = "l3")]
async fn main() {}

#[wq::main(scope = Cache)]
async fn not_a_string() {}
