#[wq::main]
fn main() {}

#[wq::test]
fn a_test() {}
