#![deny(warnings)]
//! The body is checked against `main`'s return type, as an `async fn`'s
//! is: a boxed error coerces to `Box<dyn Error>` at a `return`.

use std::error::Error;

#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl Error for Refused {}

#[wq::main]
async fn main() -> Result<(), Box<dyn Error>> {
    if std::env::args().count() > 1000 {
        return Err(Box::new(Refused));
    }
    Ok(())
}
