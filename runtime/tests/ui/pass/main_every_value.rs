// Every `scope` and `wake` value, on functions other than `main`.

#[wq::main(scope = "cpu", wake = "under_lock")]
async fn cpu() -> u32 {
    1
}

#[wq::main(scope = "smt")]
async fn smt() -> u32 {
    2
}

#[wq::main(scope = "cache_shard", workers = 1)]
async fn cache_shard() -> u32 {
    3
}

#[wq::main(scope = "numa")]
async fn numa() -> u32 {
    4
}

#[wq::main(scope = "system", topology = "core:2 pu:2")]
async fn system() -> u32 {
    5
}

fn main() {
    assert_eq!(cpu() + smt() + cache_shard() + numa() + system(), 15);
}
