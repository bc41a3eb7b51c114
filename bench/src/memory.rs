//! Memory shapes (stub).
/// Entry point.
pub fn main(_argv: &[String], _command: &str) -> Result<(), String> {
    Err("not yet".into())
}
