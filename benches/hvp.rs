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
//! Run: `cargo bench --bench hvp`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
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

criterion_group!(benches, hvp_vs_gradient);
criterion_main!(benches);
