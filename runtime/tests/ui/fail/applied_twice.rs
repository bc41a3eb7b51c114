#[wq::test]
#[wq::test]
async fn twice() {}

#[wq::main]
#[wq::test]
async fn main() {}
