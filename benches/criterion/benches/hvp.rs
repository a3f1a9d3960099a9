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
//! Before the criterion group it prints the two ratios from 41 interleaved rounds (see
//! [`interleaved_ratios`]), which a shared, noisy machine disturbs less than two figures
//! measured a minute apart.
//!
//! Run: `cd benches/criterion && cargo bench --bench hvp`.

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
/// other) can drift apart with the load. This times the four cases in alternation, 41
/// rounds, and prints each ratio two ways: of the fastest times (the runs least disturbed
/// by other processes), and the median of the per-round ratios.
fn interleaved_ratios() {
    const ROUNDS: usize = 41;
    let (at, v) = (point(), direction());
    let g = Graph::new();
    let start = g.mark();
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    let (xs, y) = record(&g, &at);
    let kept = g.mark();
    // Per round: gradient, hvp (both recording f), backward only, hvp only.
    let mut times = vec![[0.0; 4]; ROUNDS];
    for round in &mut times {
        round[0] = time(&mut || {
            let (xs, y) = record(&g, &at);
            black_box(y.backward()[xs[N / 2]]);
            g.release(kept);
        });
        round[1] = time(&mut || {
            let (xs, y) = record(&g, &at);
            black_box(higher::hvp(y, &xs, &v)[N / 2]);
            g.release(kept);
        });
        round[2] = time(&mut || {
            black_box(y.backward()[xs[N / 2]]);
        });
        round[3] = time(&mut || {
            black_box(higher::hvp(y, &xs, &v)[N / 2]);
        });
    }
    g.release(start);
    let fastest = |k: usize| times.iter().map(|t| t[k]).fold(f64::INFINITY, f64::min);
    let median_ratio = |num: usize, den: usize| {
        let mut r: Vec<f64> = times.iter().map(|t| t[num] / t[den]).collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    println!(
        "fastest of {ROUNDS} interleaved: gradient {:.3} ms, hvp {:.3} ms, backward only {:.3} ms, \
         hvp only {:.3} ms",
        fastest(0) * 1e3,
        fastest(1) * 1e3,
        fastest(2) * 1e3,
        fastest(3) * 1e3
    );
    println!(
        "(record + hvp) / (record + backward): {:.2} (fastest), {:.2} (median of rounds)",
        fastest(1) / fastest(0),
        median_ratio(1, 0)
    );
    println!(
        "hvp only / backward only:             {:.2} (fastest), {:.2} (median of rounds)",
        fastest(3) / fastest(2),
        median_ratio(3, 2)
    );
}

criterion_group!(benches, hvp_vs_gradient);

fn main() {
    interleaved_ratios();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
