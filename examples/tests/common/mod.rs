//! Helpers shared by the examples' tests.

#![allow(dead_code)]

#[path = "../../../runtime/tests/common/child.rs"]
mod child;
#[path = "../../../runtime/tests/common/refusing.rs"]
mod refusing;

#[allow(unused_imports)] // each test file uses its part
pub use child::{CHILD_LIMIT, KillOnDrop, kill_after, output, output_within};
#[allow(unused_imports)]
pub use refusing::{hold, refusing_addr};
