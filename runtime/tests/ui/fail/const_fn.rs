// A `const` function is refused by the macro alone: rustc adds nothing
// of its own (the expansion is not `const`, so calling the runtime's
// builder in it is no error of rustc's).

#[wq::main]
const async fn main() {}
