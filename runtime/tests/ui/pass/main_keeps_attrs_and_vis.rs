// Attributes, inner attributes and visibility survive; `#[wq::main]` works on
// any parameterless `async fn`, whose return type is kept.

mod app {
    /// Runs the app.
    #[inline(never)]
    pub async fn plain() -> &'static str {
        "plain"
    }

    #[wq::main(workers = 2)]
    #[must_use]
    pub async fn run() -> String {
        #![allow(clippy::useless_conversion)]
        let s = plain().await;
        String::from(s)
    }
}

fn main() {
    assert_eq!(app::run(), "plain");
}
