//! A Hessian-vector product against one plain gradient, on a 10,000-input function, in one
//! criterion group so the ratio is read from one run.
//!
//! The function is a sum over inputs of a nonlinear chain plus a Rosenbrock-style coupling
//! between neighbours (see [`objective`]), so its Hessian is tridiagonal and every input's
//! second derivative runs through transcendental ops.
//!
//! Four measurements:
//! - `gradient`: record `f` and run one plain backward (`y.backward()`): what a gradient
//!   costs a user who starts from numbers;
//! - `hvp`: record `f`, then `higher::hvp` (record the gradient, one plain sweep of `g . v`);
//! - `backward only` and `hvp only`: the same on an `f` recorded once beforehand (only
//!   the differentiation is timed; the HVP releases what it records every time).
//!
//! Before the criterion group it prints the two ratios as medians of 41 paired timings
//! (see [`paired_ratios`]), which a shared, noisy machine disturbs less than two figures
//! measured a minute apart.
//!
//! Run: `cargo bench --bench hvp`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group};
use tapegrad::{Graph, Scalar, Var, higher};

const N: usize = 10_000;

/// `f(x) = sum_i [ ln(1 + x_i^2) + tanh(x_i) sigmoid(x_{i+1}) + (x_{i+1} - x_i^2)^2 ]`,
/// the last two over neighbours: per input about a dozen nodes, both unary and binary.
fn objective<T: Scalar>(x: &[T]) -> T {
    let mut terms = Vec::with_capacity(x.len());
    for i in 0..x.len() {
        let xi = x[i];
        let mut term = (xi * xi + 1.0).ln();
        if let Some(&next) = x.get(i + 1) {
            term = term + xi.tanh() * next.sigmoid() + (next - xi * xi).powi(2);
        }
        terms.push(term);
    }
    T::sum(&terms)
}

fn point() -> Vec<f64> {
    (0..N).map(|i| ((i as f64) * 0.37).sin()).collect()
}

fn direction() -> Vec<f64> {
    (0..N).map(|i| ((i as f64) * 0.11).cos()).collect()
}

fn record<'g>(g: &'g Graph, at: &[f64]) -> (Vec<Var<'g>>, Var<'g>) {
    let xs = g.vars(at);
    let y = objective(&xs);
    (xs, y)
}

fn hvp_vs_gradient(c: &mut Criterion) {
    let (at, v) = (point(), direction());
    let mut group = c.benchmark_group("hvp_vs_gradient_10000");
    group.sample_size(30);

    group.bench_function("f64 forward", |b| b.iter(|| objective(black_box(&at))));

    let g = Graph::new();
    let start = g.mark();
    group.bench_function("gradient (record + backward)", |b| {
        b.iter(|| {
            let (xs, y) = record(&g, black_box(&at));
            let grad = y.backward()[xs[N / 2]];
            g.release(start);
            grad
        })
    });
    group.bench_function("hvp (record + hvp)", |b| {
        b.iter(|| {
            let (xs, y) = record(&g, black_box(&at));
            let hv = higher::hvp(y, &xs, black_box(&v));
            g.release(start);
            hv[N / 2]
        })
    });

    let (xs, y) = record(&g, &at);
    group.bench_function("backward only", |b| b.iter(|| y.backward()[xs[N / 2]]));
    group.bench_function("hvp only", |b| {
        b.iter(|| higher::hvp(y, &xs, black_box(&v))[N / 2])
    });
    group.finish();
}

/// The machine may be shared, so the criterion figures (measured one benchmark after the
/// other) can drift apart with the load. This times the two sides in alternation, 41
/// pairs, and prints the median of the per-pair ratios, which a slow spell affects on
/// both sides alike.
fn paired_ratios() {
    let (at, v) = (point(), direction());
    let g = Graph::new();
    let start = g.mark();
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    let (mut with_record, mut sweep_only) = (Vec::new(), Vec::new());
    let (xs, y) = record(&g, &at);
    let kept = g.mark();
    for _ in 0..41 {
        let gradient = time(&mut || {
            let (xs, y) = record(&g, &at);
            black_box(y.backward()[xs[N / 2]]);
            g.release(kept);
        });
        let product = time(&mut || {
            let (xs, y) = record(&g, &at);
            black_box(higher::hvp(y, &xs, &v)[N / 2]);
            g.release(kept);
        });
        with_record.push(product / gradient);
        let backward = time(&mut || {
            black_box(y.backward()[xs[N / 2]]);
        });
        let product = time(&mut || {
            black_box(higher::hvp(y, &xs, &v)[N / 2]);
        });
        sweep_only.push(product / backward);
    }
    g.release(start);
    let median = |r: &mut Vec<f64>| {
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    println!(
        "paired medians over 41 rounds: (record + hvp) / (record + backward) = {:.2}; \
         hvp only / backward only = {:.2}",
        median(&mut with_record),
        median(&mut sweep_only)
    );
}

criterion_group!(benches, hvp_vs_gradient);

fn main() {
    paired_ratios();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
