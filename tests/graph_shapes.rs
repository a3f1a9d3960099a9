//! Graph shapes: reuse, fan-out, diamonds, unreachable and later nodes, backward from any
//! node, repeated and independent backward runs, and a very long chain. Every expected
//! gradient is a closed form, with the calculus in a comment.

use approx::assert_relative_eq;
use tapegrad::Graph;

/// x -> u = 2x, v = sin x -> y = u v: both paths reach y and their contributions add.
#[test]
fn diamond_adds_both_paths() {
    let g = Graph::new();
    let x0 = 0.7_f64;
    let x = g.var(x0);
    let u = x * 2.0;
    let v = x.sin();
    let y = u * v;
    // dy/dx = 2 sin x + 2x cos x;  dy/du = v;  dy/dv = u
    let grads = y.backward();
    assert_relative_eq!(
        grads[x],
        2.0 * x0.sin() + 2.0 * x0 * x0.cos(),
        max_relative = 1e-15
    );
    assert_eq!(grads[u], x0.sin());
    assert_eq!(grads[v], 2.0 * x0);
}

/// b = a + a; c = b + b: c = 4a, dc/da = 4, dc/db = 2.
#[test]
fn doubled_twice_accumulates_to_four() {
    let g = Graph::new();
    let a = g.var(1.25);
    let b = a + a;
    let c = b + b;
    assert_eq!(c.value(), 5.0);
    let grads = c.backward();
    assert_eq!(grads[a], 4.0);
    assert_eq!(grads[b], 2.0);
    assert_eq!(grads[c], 1.0);
}

/// A node used as both operands of one op gets both partials.
#[test]
fn same_node_as_both_operands() {
    let g = Graph::new();
    let x = g.var(3.0);
    // d(x x)/dx = 2x
    assert_eq!((x * x).backward()[x], 6.0);
    // d(x + x)/dx = 2
    assert_eq!((x + x).backward()[x], 2.0);
    // d(x - x)/dx = 1 - 1 = 0
    assert_eq!((x - x).backward()[x], 0.0);
    // d(x / x)/dx = 1/x - x/x^2 = 0
    assert_eq!((x / x).backward()[x], 0.0);
    // d(x^x)/dx = x^x (ln x + 1)
    assert_relative_eq!(
        x.powf(x).backward()[x],
        27.0 * (3f64.ln() + 1.0),
        max_relative = 1e-15
    );
}

/// One input feeding 10,000 consumers: every contribution is accumulated.
#[test]
fn fan_out_to_ten_thousand_consumers() {
    let g = Graph::new();
    let x = g.var(0.5);
    let n = 10_000;
    // y = sum_i i x, dy/dx = sum_i i = n (n - 1) / 2, exact in f64.
    let y = g.sum((0..n).map(|i| x * f64::from(i)));
    assert_eq!(g.len(), 1 + n as usize + 1);
    assert_eq!(y.backward()[x], f64::from(n) * f64::from(n - 1) / 2.0);
    // The same fan-out through binary adds instead of one n-ary node:
    // z = sum_i x^2 as a left fold, dz/dx = n 2x = 10,000.
    let mut z = g.constant(0.0);
    for _ in 0..n {
        z += x * x;
    }
    assert_eq!(z.backward()[x], f64::from(n) * 2.0 * 0.5);
}

/// A subexpression used several times: s = sin x, y = s s + s.
#[test]
fn reused_subexpression() {
    let g = Graph::new();
    let x0 = 1.1_f64;
    let x = g.var(x0);
    let s = x.sin();
    let y = s * s + s;
    // dy/ds = 2s + 1; dy/dx = (2 sin x + 1) cos x
    let grads = y.backward();
    assert_relative_eq!(grads[s], 2.0 * x0.sin() + 1.0, max_relative = 1e-15);
    assert_relative_eq!(
        grads[x],
        (2.0 * x0.sin() + 1.0) * x0.cos(),
        max_relative = 1e-15
    );
}

/// Nodes recorded after the output, and nodes that never reach it, have gradient 0.
#[test]
fn later_and_unreachable_nodes_have_gradient_zero() {
    let g = Graph::new();
    let x = g.var(2.0);
    let w = g.var(5.0);
    let unused = w.exp(); // before the output, not on its path
    let y = x * 3.0;
    let later = x * y; // after the output, uses both
    let grads = y.backward();
    assert_eq!(grads[x], 3.0);
    assert_eq!(grads[w], 0.0);
    assert_eq!(grads[unused], 0.0);
    assert_eq!(grads[later], 0.0);
    // Differentiating the later node instead sees everything before it:
    // later = 3 x^2, d/dx = 6x = 12, d/dy = x = 2.
    let grads = later.backward();
    assert_eq!(grads[x], 12.0);
    assert_eq!(grads[y], 2.0);
    assert_eq!(grads[w], 0.0);
}

/// Backward from an intermediate node: the derivative of that node, not of the graph's
/// last node.
#[test]
fn backward_from_an_intermediate_node() {
    let g = Graph::new();
    let x0 = 0.3_f64;
    let x = g.var(x0);
    let e = x.exp();
    let z = e.sin();
    // de/dx = e^x
    let grads = e.backward();
    assert_eq!(grads[x], x0.exp());
    assert_eq!(grads[z], 0.0);
    // dz/dx = cos(e^x) e^x
    assert_relative_eq!(
        z.backward()[x],
        x0.exp().cos() * x0.exp(),
        max_relative = 1e-15
    );
}

/// Gradients live outside the graph: a second run, or a run from another output,
/// neither sees nor disturbs the first.
#[test]
fn repeated_and_independent_backward_runs() {
    let g = Graph::new();
    let x = g.var(1.5);
    let y1 = x * x; // d/dx = 2x = 3
    let y2 = x * 4.0; // d/dx = 4
    let first = y1.backward();
    let second = y2.backward();
    let again = y1.backward();
    assert_eq!(first[x], 3.0);
    assert_eq!(second[x], 4.0);
    assert_eq!(again[x], 3.0);
    assert_eq!(first[x], 3.0, "the first store is unchanged by later runs");
    // y2 was recorded after y1: it is not part of y1's gradients, and vice versa.
    assert_eq!(first[y2], 0.0);
    assert_eq!(second[y1], 0.0);
    // And many runs later nothing has accumulated.
    for _ in 0..100 {
        assert_eq!(y1.backward()[x], 3.0);
    }
}

/// 1,000,000 nodes in one chain: the reverse sweep is a loop, not recursion, so it runs
/// on the test thread's default stack. y_{k+1} = r y_k + c, so after n steps
/// y_n = r^n x + c (r^n - 1) / (r - 1) and dy_n/dx = r^n.
#[test]
fn chain_of_a_million_nodes() {
    let steps = 500_000; // two nodes per step
    let (x0, r, c) = (0.75, 1.0 + 1e-6, 1e-3);
    let g = Graph::with_capacity(2 * steps + 1);
    let x = g.var(x0);
    let mut y = x;
    for _ in 0..steps {
        y = y * r + c;
    }
    assert_eq!(g.len(), 2 * steps + 1);
    let rn = r.powi(steps as i32);
    // Rounding accumulates over 10^6 operations: at most about 10^6 eps ~ 2e-10 relative.
    assert_relative_eq!(
        y.value(),
        rn * x0 + c * (rn - 1.0) / (r - 1.0),
        max_relative = 1e-9
    );
    assert_relative_eq!(y.backward()[x], rn, max_relative = 1e-9);
}
