#![deny(warnings)]
//! `#[wq::main]` on associated functions: a body that says `Self`, and
//! one that uses its `impl`'s generic parameter (an inner item could
//! name neither, so the body stays an `async` block there).

struct App(u32);

impl App {
    #[wq::main]
    async fn run() -> Self {
        Self::build().await
    }

    async fn build() -> Self {
        App(wq::spawn(async { 7 }).await.unwrap())
    }
}

struct Maker<T>(std::marker::PhantomData<T>);

impl<T: Default + Send + 'static> Maker<T> {
    #[wq::main]
    async fn make() -> T {
        wq::spawn(async { T::default() }).await.unwrap()
    }
}

fn main() {
    assert_eq!(App::run().0, 7);
    assert_eq!(Maker::<u8>::make(), 0);
}
