// Names the user may have in scope do not clash with the expansion.
#![allow(non_upper_case_globals, dead_code, unused_macros)]

const body: u8 = 1;
const e: u8 = 2;
fn block_on() {}
macro_rules! panic {
    ($($t:tt)*) => {
        compile_error!("the expansion must not use the user's `panic!`")
    };
}
mod core {}

#[wq::main]
async fn main() {
    let __wq_body = body + e;
    assert_eq!(__wq_body, 3);
}
