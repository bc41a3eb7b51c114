#![deny(warnings)]
//! `#[wq::main]` on an `unsafe` function that is not the crate's `main`
//! (rustc refuses that one `unsafe` itself): its body is an inner
//! `async unsafe fn`, called in an `unsafe` block.

mod app {
    /// # Safety
    /// None needed; `unsafe` only to check the expansion.
    #[wq::main]
    pub async unsafe fn main() -> u8 {
        wq::spawn(async { 3 }).await.unwrap()
    }
}

fn main() {
    // SAFETY: `app::main` has no preconditions.
    assert_eq!(unsafe { app::main() }, 3);
}
