//! Gradients of gradients through the entry points: `Var::grad` to third (and higher)
//! order, `higher::hessian`, `higher::hvp`, `higher::jacobian`, on closed-form problems and
//! on the seed chapter's data; and that the helpers leave the graph as they found it.

use approx::assert_relative_eq;
use tapegrad::check::Tolerance;
use tapegrad::higher::{hessian, hvp, hvpcheck, jacobian, try_hessian, try_hvp, try_jacobian};
use tapegrad::{Error, Graph, Var};

/// The seed chapter's probability table (positions 0..3 x the 6 tokens), copied from the
/// chapter ("Loss Gradients"): already rounded to 4 places, so row 2 sums to 0.9999.
const PROBS: [[f64; 6]; 4] = [
    [0.1785, 0.2007, 0.1759, 0.1254, 0.1563, 0.1632],
    [0.1836, 0.1969, 0.1805, 0.1233, 0.1500, 0.1657],
    [0.1795, 0.2050, 0.1782, 0.1207, 0.1437, 0.1728],
    [0.1855, 0.2017, 0.1771, 0.1271, 0.1391, 0.1695],
];
/// The chapter's targets per position: I, like, transformers, <EOS>.
const TARGETS: [usize; 4] = [3, 4, 5, 2];

/// The softmax of `ln P` for one row: `P` renormalised (a no-op up to rounding for rows
/// 0, 1, 3; row 2 is divided by 0.9999). This is the distribution the tape's nodes hold.
fn softmax_of_ln(row: &[f64; 6]) -> [f64; 6] {
    let total: f64 = row.iter().sum();
    row.map(|p| p / total)
}

/// One row's loss `-ln(e^l_t / sum_j e^l_j)` from exp, sum, division and ln nodes (the
/// chapter's formula, not the fused logsumexp).
fn row_loss<'g>(g: &'g Graph, logits: &[Var<'g>], target: usize) -> Var<'g> {
    let exps: Vec<Var<'g>> = logits.iter().map(|l| l.exp()).collect();
    let total = g.sum(exps.iter().copied());
    -(exps[target] / total).ln()
}

#[test]
fn seed_chapter_loss_hessian_is_diag_p_minus_p_p_transpose() {
    // dL/dl_i = p_i - [i = t], so d2L/dl_i dl_j = dp_i/dl_j = p_i [i = j] - p_i p_j,
    // whatever the target.
    for (row, &target) in PROBS.iter().zip(&TARGETS) {
        let g = Graph::new();
        let logits: Vec<Var<'_>> = row.iter().map(|p| g.var(p.ln())).collect();
        let h = hessian(row_loss(&g, &logits, target), &logits);
        let p = softmax_of_ln(row);
        for i in 0..6 {
            for j in 0..6 {
                let closed = if i == j { p[i] } else { 0.0 } - p[i] * p[j];
                assert!(
                    (h[i][j] - closed).abs() <= 1e-12,
                    "H[{i}][{j}] = {} but diag(P) - P P^T gives {closed}",
                    h[i][j]
                );
                // Symmetric: the two orders of differentiation round differently, but
                // only in the last bits.
                assert!(
                    (h[i][j] - h[j][i]).abs() <= 1e-15,
                    "H not symmetric at {i},{j}"
                );
            }
            // Each row sums to 0: shifting every logit alike changes nothing (the
            // chapter's translation invariance), to second order as well.
            let sum: f64 = h[i].iter().sum();
            assert!(sum.abs() <= 1e-15, "row {i} sums to {sum}");
        }
    }
}

#[test]
fn seed_chapter_gradient_is_p_minus_one_hot() {
    // The chapter's own result, here through Var::grad (the gradient as Vars): it holds
    // for row 2 too once P is the renormalised softmax, so every row sums to 0.
    for (row, &target) in PROBS.iter().zip(&TARGETS) {
        let g = Graph::new();
        let logits: Vec<Var<'_>> = row.iter().map(|p| g.var(p.ln())).collect();
        let grads = row_loss(&g, &logits, target).grad(&logits);
        let p = softmax_of_ln(row);
        for i in 0..6 {
            let closed = p[i] - if i == target { 1.0 } else { 0.0 };
            assert_relative_eq!(grads[i].value(), closed, epsilon = 1e-15);
        }
        let sum: f64 = grads.iter().map(|d| d.value()).sum();
        assert!(sum.abs() <= 1e-15, "gradient row sums to {sum}");
    }
}

#[test]
fn seed_chapter_softmax_jacobian_via_jacobian() {
    // p_i = e^l_i / sum_j e^l_j: dp_i/dl_j = p_i ([i = j] - p_j), the same matrix.
    for row in &PROBS {
        let g = Graph::new();
        let logits: Vec<Var<'_>> = row.iter().map(|p| g.var(p.ln())).collect();
        let exps: Vec<Var<'_>> = logits.iter().map(|l| l.exp()).collect();
        let total = g.sum(exps.iter().copied());
        let probs: Vec<Var<'_>> = exps.iter().map(|&e| e / total).collect();
        let j = jacobian(&probs, &logits);
        let p = softmax_of_ln(row);
        for a in 0..6 {
            assert_relative_eq!(probs[a].value(), p[a], epsilon = 1e-15);
            for b in 0..6 {
                let closed = if a == b { p[a] } else { 0.0 } - p[a] * p[b];
                assert!((j[a][b] - closed).abs() <= 1e-12, "J[{a}][{b}]");
            }
        }
    }
}

#[test]
fn third_derivative_of_exp_sin() {
    // f = e^(sin x): f' = cos x f, f'' = (cos^2 x - sin x) f,
    // f''' = (cos^3 x - 3 sin x cos x - cos x) f.
    for x0 in [-1.1, 0.0, 0.7, 2.4] {
        let g = Graph::new();
        let x = g.var(x0);
        let d1 = x.sin().exp().grad(&[x])[0];
        let d2 = d1.grad(&[x])[0];
        let d3 = d2.grad(&[x])[0];
        let (s, c, f) = (x0.sin(), x0.cos(), x0.sin().exp());
        assert_relative_eq!(d1.value(), c * f, max_relative = 1e-14, epsilon = 1e-15);
        assert_relative_eq!(
            d2.value(),
            (c * c - s) * f,
            max_relative = 1e-14,
            epsilon = 1e-15
        );
        let closed = (c.powi(3) - 3.0 * s * c - c) * f;
        assert_relative_eq!(d3.value(), closed, max_relative = 1e-13, epsilon = 1e-15);
    }
}

#[test]
fn mixed_third_partials_agree_in_every_order() {
    // f = x^3 y^2 + e^(xy):
    // f_xxx = 6 y^2 + y^3 e^(xy)
    // f_xxy = 12 x y + 2 y e^(xy) + x y^2 e^(xy)
    // f_xyy = 6 x^2 + 2 x e^(xy) + x^2 y e^(xy)
    // f_yyy = x^3 e^(xy)
    let (x0, y0) = (0.8_f64, -1.3_f64);
    let e = (x0 * y0).exp();
    let g = Graph::new();
    let (x, y) = (g.var(x0), g.var(y0));
    let f = x.powi(3) * y.powi(2) + (x * y).exp();
    let third =
        |a: Var<'_>, b: Var<'_>, c: Var<'_>| f.grad(&[a])[0].grad(&[b])[0].grad(&[c])[0].value();
    let f_xxx = 6.0 * y0 * y0 + y0.powi(3) * e;
    let f_xxy = 12.0 * x0 * y0 + 2.0 * y0 * e + x0 * y0 * y0 * e;
    let f_xyy = 6.0 * x0 * x0 + 2.0 * x0 * e + x0 * x0 * y0 * e;
    let f_yyy = x0.powi(3) * e;
    assert_relative_eq!(third(x, x, x), f_xxx, max_relative = 1e-14);
    for (a, b, c) in [(x, x, y), (x, y, x), (y, x, x)] {
        assert_relative_eq!(third(a, b, c), f_xxy, max_relative = 1e-14);
    }
    for (a, b, c) in [(x, y, y), (y, x, y), (y, y, x)] {
        assert_relative_eq!(third(a, b, c), f_xyy, max_relative = 1e-14);
    }
    assert_relative_eq!(third(y, y, y), f_yyy, max_relative = 1e-14);
}

#[test]
fn derivatives_of_a_quintic_to_sixth_order() {
    // d^k/dx^k x^5 = 5!/(5-k)! x^(5-k), and 0 from k = 6 on.
    let g = Graph::new();
    let x0 = 1.7_f64;
    let x = g.var(x0);
    let mut d = x.powi(5);
    let mut coefficient = 1.0;
    for k in 1..=6 {
        d = d.grad(&[x])[0];
        if k <= 5 {
            coefficient *= f64::from(6 - k);
            assert_relative_eq!(
                d.value(),
                coefficient * x0.powi(5 - k),
                max_relative = 1e-14
            );
        } else {
            assert_eq!(d.value(), 0.0);
        }
    }
}

/// The chained Rosenbrock function `sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2`.
fn rosenbrock<'g>(g: &'g Graph, x: &[Var<'g>]) -> Var<'g> {
    g.sum(
        x.windows(2)
            .map(|w| 100.0 * (w[1] - w[0].powi(2)).powi(2) + (1.0 - w[0]).powi(2)),
    )
}

/// Its Hessian, tridiagonal: H_ii = 1200 x_i^2 - 400 x_{i+1} + 2 (i < n-1) + 200 (i > 0),
/// H_{i,i+1} = H_{i+1,i} = -400 x_i.
fn rosenbrock_hessian(x: &[f64]) -> Vec<Vec<f64>> {
    let n = x.len();
    let mut h = vec![vec![0.0; n]; n];
    for i in 0..n {
        if i + 1 < n {
            h[i][i] += 1200.0 * x[i] * x[i] - 400.0 * x[i + 1] + 2.0;
            h[i][i + 1] = -400.0 * x[i];
            h[i + 1][i] = -400.0 * x[i];
        }
        if i > 0 {
            h[i][i] += 200.0;
        }
    }
    h
}

#[test]
fn rosenbrock_hessian_matches_closed_form() {
    let at = [-1.2, 1.0, 0.3, -0.5, 2.0];
    let g = Graph::new();
    let xs = g.vars(&at);
    let h = hessian(rosenbrock(&g, &xs), &xs);
    let closed = rosenbrock_hessian(&at);
    for i in 0..at.len() {
        for j in 0..at.len() {
            assert_relative_eq!(h[i][j], closed[i][j], max_relative = 1e-14);
        }
    }
}

#[test]
fn hvp_equals_hessian_times_vector() {
    let at = [-1.2, 1.0, 0.3, -0.5, 2.0];
    let v = [0.5, -1.0, 2.0, 0.25, -0.75];
    let g = Graph::new();
    let xs = g.vars(&at);
    let y = rosenbrock(&g, &xs);
    let hv = hvp(y, &xs, &v);
    let h = hessian(y, &xs);
    let closed = rosenbrock_hessian(&at);
    for i in 0..at.len() {
        let from_tape: f64 = (0..at.len()).map(|j| h[i][j] * v[j]).sum();
        let from_closed: f64 = (0..at.len()).map(|j| closed[i][j] * v[j]).sum();
        assert_relative_eq!(hv[i], from_tape, max_relative = 1e-13);
        assert_relative_eq!(hv[i], from_closed, max_relative = 1e-13);
    }
}

#[test]
fn hvp_on_ten_thousand_inputs_matches_closed_form() {
    // The HVP never forms the 10,000 x 10,000 Hessian; compare it with the tridiagonal
    // closed form applied to v, and with central differences of the tape gradient.
    let n = 10_000;
    let at: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
    let v: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
    let g = Graph::new();
    let xs = g.vars(&at);
    let hv = hvp(rosenbrock(&g, &xs), &xs, &v);
    for i in 0..n {
        let mut closed = 200.0 * f64::from(u8::from(i > 0)) * v[i];
        if i + 1 < n {
            closed += (1200.0 * at[i] * at[i] - 400.0 * at[i + 1] + 2.0) * v[i];
            closed += -400.0 * at[i] * v[i + 1];
        }
        if i > 0 {
            closed += -400.0 * at[i - 1] * v[i - 1];
        }
        assert_relative_eq!(hv[i], closed, max_relative = 1e-12, epsilon = 1e-10);
    }
    hvpcheck(rosenbrock, &at, &v, Tolerance::default()).assert_passed();
}

#[test]
fn jacobian_of_several_outputs_is_m_by_n() {
    // outputs (x y, x + y, sin x) of (x, y): rows [y, x], [1, 1], [cos x, 0].
    let g = Graph::new();
    let (x, y) = (g.var(0.4), g.var(-2.0));
    let j = jacobian(&[x * y, x + y, x.sin()], &[x, y]);
    assert_eq!(
        j,
        vec![vec![-2.0, 0.4], vec![1.0, 1.0], vec![0.4f64.cos(), 0.0]]
    );
}

#[test]
fn mixed_partial_with_a_variable_outside_the_first_gradient() {
    // g = d/dx sin(x w) = w cos(x w), differentiated afterwards with respect to w, which
    // the first gradient was not taken for: dg/dw = cos(x w) - x w sin(x w).
    let (x0, w0) = (0.9, 1.4);
    let g = Graph::new();
    let (x, w) = (g.var(x0), g.var(w0));
    let dx = (x * w).sin().grad(&[x])[0];
    let dxdw = dx.grad(&[w])[0];
    let closed = (x0 * w0).cos() - x0 * w0 * (x0 * w0).sin();
    assert_relative_eq!(dxdw.value(), closed, max_relative = 1e-14);
}

#[test]
fn gradient_with_respect_to_an_intermediate_node() {
    // y = u^3 with u = x + 1: dy/du = 3 u^2 (as a Var), and d/dx (3 u^2) = 6 u.
    let g = Graph::new();
    let x = g.var(0.5);
    let u = x + 1.0;
    let dy_du = u.powi(3).grad(&[u])[0];
    assert_eq!(dy_du.value(), 3.0 * 1.5 * 1.5);
    assert_eq!(dy_du.grad(&[x])[0].value(), 6.0 * 1.5);
}

#[test]
fn gradients_that_do_not_flow_are_zero_and_differentiable() {
    // An input the output does not use, or one recorded after it, gets gradient 0, as a
    // constant Var that can be differentiated again (to 0).
    let g = Graph::new();
    let (x, unused) = (g.var(1.0), g.var(2.0));
    let y = x.exp();
    let later = g.var(3.0);
    let grads = y.grad(&[unused, later, x]);
    assert_eq!(grads[0].value(), 0.0);
    assert_eq!(grads[1].value(), 0.0);
    assert_eq!(grads[2].value(), 1f64.exp());
    assert_eq!(grads[0].grad(&[x])[0].value(), 0.0);
}

#[test]
fn helpers_leave_the_graph_as_they_found_it() {
    let g = Graph::new();
    let xs = g.vars(&[0.5, -0.2, 1.1]);
    let y = rosenbrock(&g, &xs);
    let len = g.len();
    let _ = hessian(y, &xs);
    assert_eq!(g.len(), len);
    let _ = hvp(y, &xs, &[1.0, 2.0, 3.0]);
    assert_eq!(g.len(), len);
    let _ = jacobian(&[y, xs[0] * xs[1]], &xs);
    // jacobian records nothing of its own; the product above is the caller's one node.
    assert_eq!(g.len(), len + 1);
    // Newton-style loops run in constant memory: after the first call sized the buffers,
    // a hundred more HVPs leave the node count and the heap where they were.
    let _ = hvp(y, &xs, &[1.0, 0.0, 0.0]);
    let heap = g.heap_bytes();
    for k in 0..100 {
        let _ = hvp(y, &xs, &[f64::from(k), 1.0, -1.0]);
    }
    assert_eq!(g.len(), len + 1);
    assert_eq!(g.heap_bytes(), heap);
    // The caller's handles are all still valid.
    assert_eq!(y.value(), rosenbrock(&g, &xs).value());
}

#[test]
fn bad_input_is_an_error_and_records_nothing() {
    let (g, other) = (Graph::new(), Graph::new());
    let x = g.var(1.0);
    let y = x.exp();
    let stranger = other.var(1.0);
    let len = g.len();
    assert!(matches!(
        try_hvp(y, &[x], &[1.0, 2.0]),
        Err(Error::BadOperands { op: "hvp", .. })
    ));
    assert!(matches!(
        try_hessian(y, &[stranger]),
        Err(Error::ForeignHandle { .. })
    ));
    assert!(matches!(
        try_hvp(y, &[stranger], &[1.0]),
        Err(Error::ForeignHandle { .. })
    ));
    assert!(matches!(
        try_jacobian(&[y], &[stranger]),
        Err(Error::ForeignHandle { .. })
    ));
    assert_eq!(g.len(), len);
    // A released output.
    let mark = g.mark();
    let z = x.sin();
    g.release(mark);
    assert_eq!(try_hessian(z, &[x]), Err(Error::Released));
    assert_eq!(try_hvp(z, &[x], &[1.0]), Err(Error::Released));
    assert_eq!(g.len(), len);
}
