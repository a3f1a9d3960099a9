//! Criterion benchmarks of the peer comparison's workloads: one group per workload, holding the
//! plain-`f64` evaluation, recording only, and recording + backward, so that each figure
//! is read as a ratio to the others from one run.
//!
//! The workloads are the very functions the peer comparison runs (`peers/src/workloads.rs`,
//! included here by path). Buffers are warm: one graph per group, released to a mark after
//! every iteration, and one `Gradients` reused, as in a training loop.
//!
//! `cd benches/criterion && cargo bench --bench workloads` (about a minute and a half).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use tapegrad::{Gradients, Graph};

#[path = "../../peers/src/workloads.rs"]
#[expect(
    dead_code,
    reason = "shared with the peer comparison, which uses all of it"
)]
mod workloads;

use workloads::{Chain, CrossEntropy, CrossEntropyForm, Rosenbrock, Transformer, Workload};

/// The three measurements of one workload, in one group.
fn group<W: Workload>(c: &mut Criterion, id: &str, w: &W) {
    let x = w.inputs();
    let mut group = c.benchmark_group(id);
    // Ten samples of a ~30 ms gradient need more than the default second.
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("f64", |b| b.iter(|| w.eval(black_box(&x))));

    let g = Graph::new();
    let mark = g.mark();
    group.bench_function("record", |b| {
        b.iter(|| {
            let xs = g.vars(black_box(&x));
            let y = w.eval(&xs);
            black_box(y);
            g.release(mark);
        })
    });

    let mut grads = Gradients::new();
    group.bench_function("record+backward", |b| {
        b.iter(|| {
            let xs = g.vars(black_box(&x));
            let y = w.eval(&xs);
            y.backward_into(&mut grads);
            black_box(grads[xs[0]]);
            g.release(mark);
        })
    });
    group.finish();
}

fn cross_entropy(c: &mut Criterion) {
    for (form, name) in [
        (CrossEntropyForm::Composed, "composed"),
        (CrossEntropyForm::Fused, "fused"),
    ] {
        for n in [1_000, 100_000] {
            let w = CrossEntropy { n, target: 3, form };
            group(c, &format!("W1 xent {name} N={n}"), &w);
        }
    }
}

fn chain(c: &mut Criterion) {
    group(c, "W2 chain 1000000", &Chain { ops: 1_000_000 });
}

fn transformer(c: &mut Criterion) {
    group(c, "W3 transformer", &Transformer);
}

fn rosenbrock(c: &mut Criterion) {
    group(c, "W4 Rosenbrock n=100", &Rosenbrock { n: 100 });
}

/// Short runs: the ratios within a group matter here, not the last percent.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = cross_entropy, chain, transformer, rosenbrock
}
criterion_main!(benches);
