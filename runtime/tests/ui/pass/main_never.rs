#![deny(warnings)]
//! A `main` that never returns: no warning from the expansion (its
//! `block_on` of a `-> !` body is unreachable-code-free as written).

#[wq::main]
async fn main() -> ! {
    std::process::exit(0)
}
