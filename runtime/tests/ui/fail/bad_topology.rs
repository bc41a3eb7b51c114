#[wq::main(topology = "pack:2 core4 pu:2")]
async fn main() {}

#[wq::main(topology = "core:0")]
async fn zero() {}

#[wq::main(topology = "")]
async fn empty() {}

#[wq::main(topology = "core:100000 pu:100000")]
async fn too_big() {}
