//! Helpers shared by the examples' tests.

#![allow(dead_code)]

#[path = "../../../runtime/tests/common/child.rs"]
mod child;

#[allow(unused_imports)] // each test file uses its part
pub use child::{output, output_within};
