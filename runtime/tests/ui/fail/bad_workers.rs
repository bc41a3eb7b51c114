#[wq::main(workers = 0)]
async fn main() {}

#[wq::main(workers = "4")]
async fn a_string() {}

#[wq::main(workers = -1)]
async fn negative() {}

#[wq::main(workers = 40000)]
async fn too_many() {}
