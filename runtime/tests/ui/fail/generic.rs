#[wq::main]
async fn run<T: Default>() -> T {
    T::default()
}

fn main() {}
