#[wq::main(topology = "pack:2 core4 pu:2")]
async fn main() {}

#[wq::main(topology = "core:0")]
async fn zero() {}

#[wq::main(topology = "")]
async fn empty() {}
