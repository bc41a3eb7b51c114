// A bad option fails the build with its own error only: the function is
// still expanded, so code that calls it type-checks and reports nothing more.
#[wq::main(scope = "l3", workers = 2)]
async fn answer() -> u32 {
    42
}

fn main() {
    let n: u32 = answer();
    assert_eq!(n, 42);
}
