#[wq::main(wake = "eager")]
async fn main() {}

#[wq::main(wake = true)]
async fn not_a_string() {}
