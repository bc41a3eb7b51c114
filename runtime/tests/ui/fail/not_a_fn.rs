#[wq::main]
struct App;

#[wq::test]
mod tests {}

fn main() {}
