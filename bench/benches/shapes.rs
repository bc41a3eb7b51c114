//! tokio's `rt_multi_threaded` shapes on wq and on tokio, same worker count
//! (see `wq_bench::shapes`). Small samples so `cargo bench -p wq-bench`
//! stays well under ten minutes on two CPUs.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use wq_bench::shapes::{self, Tokio, Wq};

fn shapes(c: &mut Criterion) {
    let n = wq_bench::machine::online_cpus();
    let wq = Wq::new(n);
    let tokio = Tokio::new(n);
    for (i, name) in shapes::NAMES.iter().enumerate() {
        let mut g = c.benchmark_group(*name);
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        // Which runtime goes first alternates shape by shape: on a shared
        // VM the second of a pair times differently (docs/benchmarks.md,
        // "Reading the figures"), and wq always went first. (No settle
        // between the groups as `wq-bench shapes` makes: the 500 ms
        // warm-up outlasts wq's spin after its last task.)
        if i % 2 == 0 {
            g.bench_function("wq", |b| b.iter(|| shapes::run(name, &wq)));
            g.bench_function("tokio", |b| b.iter(|| shapes::run(name, &tokio)));
        } else {
            g.bench_function("tokio", |b| b.iter(|| shapes::run(name, &tokio)));
            g.bench_function("wq", |b| b.iter(|| shapes::run(name, &wq)));
        }
        g.finish();
    }
}

criterion_group!(benches, shapes);
criterion_main!(benches);
