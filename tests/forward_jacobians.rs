//! `higher::jvp` and `higher::jacobian_of` (forward mode, or reverse by shape) against
//! reverse mode on a recording (`higher::jacobian`) and central differences; and second
//! order where forward mode composes with reverse: Hessian-vector products four ways
//! (reverse over forward with `Dual<1, Var>`, forward over forward with `Dual<1, Dual>`,
//! `higher::hvp`'s reverse over reverse, `Replay::hvp`'s forward over reverse), each op's
//! second derivatives by forward over forward and reverse over forward against
//! `higher::hessian`, and central differences of the gradient (`higher::hvpcheck`).
//!
//! Tolerances: where both modes multiply the same partials in the same order (an op, one
//! use of its output) they agree bit for bit; elsewhere they round differently and agree
//! within `1e-14` of the entry's scale (at least 1; for random programs the largest term
//! summed into the entry, as the worst of 100,000 was `1.2e-15` of it); a central
//! difference within `1e-6` of the derivative's scale where it is reliable
//! (`reference::Difference`).

#![expect(
    clippy::needless_range_loop,
    reason = "Jacobian and Hessian entries read as J[i][k], indexed by row and column"
)]

#[allow(
    dead_code,
    reason = "only the proptest configuration, strategies and differences are used here"
)]
mod reference;

use std::cell::RefCell;

use approx::assert_relative_eq;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use tapegrad::check::Tolerance;
use tapegrad::higher::{self, Function, jacobian_of, jvp};
use tapegrad::{Binary, Dual, Graph, Nary, Replay, ReplayWorkspace, Scalar, Unary, Var};

/// The same `f64`, bit for bit (any NaN equals any NaN).
fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Whether `a` and `b` agree within `rel` of `scale` (and are both finite), or are the
/// same number.
fn close(a: f64, b: f64, rel: f64, scale: f64) -> bool {
    same(a, b) || (a.is_finite() && b.is_finite() && (a - b).abs() <= rel * scale.max(1.0))
}

/// `f`'s Jacobian by reverse mode on a recording, for comparison.
fn reverse_jacobian<F: Function>(f: &F, x: &[f64]) -> Vec<Vec<f64>> {
    let g = Graph::new();
    let xs = g.vars(x);
    higher::jacobian(&f.eval(&xs), &xs)
}

/// `f`'s Jacobian by central differences (Richardson-extrapolated, with an error
/// estimate), column by column.
fn difference_jacobian<F: Function>(f: &F, x: &[f64]) -> Vec<Vec<reference::Difference>> {
    let m = f.eval(x).len();
    (0..m)
        .map(|i| {
            (0..x.len())
                .map(|j| reference::derivative(|at| f.eval(at)[i], x, j))
                .collect()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Functions written once over Scalar.

/// Hand-tracking-like: 26 parameters (a rotation, a scale, a translation and 19 blend
/// weights) move `points` 3-vectors: `3 * points` outputs, a tall Jacobian.
struct Pose {
    points: usize,
}

impl Function for Pose {
    fn eval<T: Scalar>(&self, p: &[T]) -> Vec<T> {
        assert_eq!(p.len(), 26);
        let (ca, sa, cb, sb) = (p[0].cos(), p[0].sin(), p[1].cos(), p[1].sin());
        let scale = p[3].exp();
        let mut out = Vec::with_capacity(3 * self.points);
        for k in 0..self.points {
            let t = k as f64 * 0.37 + 0.1;
            // A fixed point, bent by the blend weights.
            let bend = T::dot_f64(
                &p[7..],
                &(0..19)
                    .map(|j| ((j + k) % 5) as f64 * 0.1 - 0.2)
                    .collect::<Vec<_>>(),
            );
            let (x, y, z) = (bend + t.sin(), (bend * t).tanh() + t.cos(), p[2] * t + 1.0);
            // Rotate about z by a, then about x by b; scale; translate.
            let (x1, y1) = (ca * x - sa * y, sa * x + ca * y);
            let (y2, z2) = (cb * y1 - sb * z, sb * y1 + cb * z);
            out.push(x1 * scale + p[4]);
            out.push(y2 * scale + p[5].asinh());
            out.push(z2 * scale + p[6].atan());
        }
        out
    }
}

/// Two outputs of ten inputs: a wide Jacobian (reverse mode).
struct Wide;

impl Function for Wide {
    fn eval<T: Scalar>(&self, x: &[T]) -> Vec<T> {
        let norm = T::dot(x, x).sqrt();
        let lse = T::logsumexp(x);
        vec![
            norm * lse,
            T::sum(x.iter().map(|&v| v.sigmoid().xlogy(v * v + 1.0))),
        ]
    }
}

/// Three outputs of three inputs, with every new op: square, so forward mode.
struct Square;

impl Function for Square {
    fn eval<T: Scalar>(&self, x: &[T]) -> Vec<T> {
        vec![
            x[0].asinh() * x[1],
            (x[1] * 0.5).atanh() + x[2].acosh(),
            x[0].xlogy(x[2]) - x[1].recip(),
        ]
    }
}

/// The point each is differentiated at.
const POSE_AT: [f64; 26] = [
    0.3, -0.2, 0.5, 0.1, 1.0, -0.5, 0.25, 0.1, -0.2, 0.3, 0.05, 0.0, 0.4, -0.1, 0.2, 0.15, -0.3,
    0.6, 0.0, 0.1, -0.05, 0.2, 0.35, -0.25, 0.1, 0.45,
];
const WIDE_AT: [f64; 10] = [0.5, -1.0, 0.25, 2.0, -0.75, 0.1, 1.5, -0.3, 0.8, -1.2];
const SQUARE_AT: [f64; 3] = [0.7, -0.9, 1.6];

/// The Jacobian by `jacobian_of` against reverse mode, central differences and (in forward
/// mode) `jvp` along each input, which gives each column bit for bit.
#[track_caller]
fn check_jacobian<F: Function>(name: &str, f: &F, x: &[f64]) {
    let j = jacobian_of(f, x);
    let m = f.eval(x).len();
    assert_eq!((j.len(), j[0].len()), (m, x.len()), "{name}: shape");
    let reverse = reverse_jacobian(f, x);
    let differences = difference_jacobian(f, x);
    let mut compared = 0;
    for i in 0..m {
        let scale = j[i].iter().fold(0.0, |s: f64, v| s.max(v.abs()));
        for k in 0..x.len() {
            assert!(
                close(j[i][k], reverse[i][k], 1e-14, scale),
                "{name} J[{i}][{k}]: {:e}, reverse {:e}",
                j[i][k],
                reverse[i][k]
            );
            let d = differences[i][k];
            if d.reliable() {
                compared += 1;
                assert!(
                    d.agrees_with(j[i][k]),
                    "{name} J[{i}][{k}]: {:e}, central difference {:e}",
                    j[i][k],
                    d.value
                );
            }
        }
    }
    assert!(
        compared * 10 >= 9 * m * x.len(),
        "{name}: only {compared} reliable differences"
    );
    if m >= x.len() {
        for k in 0..x.len() {
            let e: Vec<f64> = (0..x.len()).map(|i| f64::from(u8::from(i == k))).collect();
            let (values, column) = jvp(f, x, &e);
            assert_eq!(values, f.eval(x));
            for i in 0..m {
                assert!(same(column[i], j[i][k]), "{name} J[{i}][{k}] against jvp");
            }
        }
    } else {
        // Reverse mode on a fresh recording: that, bit for bit.
        for i in 0..m {
            for k in 0..x.len() {
                assert!(
                    same(j[i][k], reverse[i][k]),
                    "{name} J[{i}][{k}] in reverse mode"
                );
            }
        }
    }
}

#[test]
fn a_tall_jacobian_by_forward_mode_matches_reverse_mode_and_differences() {
    check_jacobian("pose", &Pose { points: 12 }, &POSE_AT);
    check_jacobian("square", &Square, &SQUARE_AT);
}

#[test]
fn a_wide_jacobian_by_reverse_mode_matches_differences() {
    check_jacobian("wide", &Wide, &WIDE_AT);
}

/// Which scalar types a function was evaluated with, in order.
struct Logged<'a, F> {
    inner: &'a F,
    log: RefCell<Vec<&'static str>>,
}

impl<F: Function> Function for Logged<'_, F> {
    fn eval<T: Scalar>(&self, x: &[T]) -> Vec<T> {
        let name = std::any::type_name::<T>();
        self.log
            .borrow_mut()
            .push(name.rsplit("::").next().unwrap_or(name));
        self.inner.eval(x)
    }
}

/// The documented passes: one plain evaluation for the shape; then blocks of 8 directions
/// (the last of 1, 2, 4 or 8) for a tall Jacobian, or one recording for a wide one.
#[test]
fn jacobian_of_picks_the_mode_by_shape() {
    let log = |f: &dyn Fn(&Logged<'_, Pose>)| {
        let logged = Logged {
            inner: &Pose { points: 9 },
            log: RefCell::new(Vec::new()),
        };
        f(&logged);
        logged.log.into_inner()
    };
    let tall = log(&|f| {
        jacobian_of(f, &POSE_AT);
    });
    assert_eq!(tall, ["f64", "Dual<8>", "Dual<8>", "Dual<8>", "Dual<2>"]);
    let three = Logged {
        inner: &Pose { points: 3 },
        log: RefCell::new(Vec::new()),
    };
    jacobian_of(&three, &POSE_AT);
    // 9 outputs of 26 inputs: reverse.
    assert_eq!(three.log.into_inner(), ["f64", "Var<'_>"]);
    let square = Logged {
        inner: &Square,
        log: RefCell::new(Vec::new()),
    };
    jacobian_of(&square, &SQUARE_AT);
    assert_eq!(square.log.into_inner(), ["f64", "Dual<4>"]);
}

/// Each op through the API: a function of two inputs with three outputs (forward mode)
/// gives reverse mode's Jacobian bit for bit, including at singular points, and a zero
/// entry is `+0` as reverse mode gives it.
#[test]
fn jacobian_of_each_op_is_reverse_modes_bit_for_bit() {
    struct UnaryOp(Unary);
    impl Function for UnaryOp {
        fn eval<T: Scalar>(&self, x: &[T]) -> Vec<T> {
            vec![x[0].unary(self.0), x[1].unary(self.0) + x[0], x[1]]
        }
    }
    struct BinaryOp(Binary, f64);
    impl Function for BinaryOp {
        fn eval<T: Scalar>(&self, x: &[T]) -> Vec<T> {
            let (op, c) = (self.0, self.1);
            if op == Binary::Powi {
                return vec![x[0].powi(c as i32), x[1].powi(2), x[0] * x[1]];
            }
            vec![
                x[0].binary(op, x[1]),
                x[0].binary_f64(op, c),
                x[1].lift(c).binary(op, x[1]),
            ]
        }
    }
    let points = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        2.0,
        5e-324,
        f64::INFINITY,
        f64::NAN,
        1e300,
    ];
    for &op in Unary::ALL {
        for a in points {
            for b in points {
                let f = UnaryOp(op);
                let (fwd, rev) = (jacobian_of(&f, &[a, b]), reverse_jacobian(&f, &[a, b]));
                for (i, (fr, rr)) in fwd.iter().zip(&rev).enumerate() {
                    for (k, (x, y)) in fr.iter().zip(rr).enumerate() {
                        assert!(
                            same(*x, *y),
                            "{} at ({a}, {b}): J[{i}][{k}] {x:e}, reverse {y:e}",
                            op.name()
                        );
                    }
                }
            }
        }
    }
    for &op in Binary::ALL {
        for a in points {
            for b in points {
                for c in [2.0, -1.0, 0.0] {
                    let f = BinaryOp(op, c);
                    let (fwd, rev) = (jacobian_of(&f, &[a, b]), reverse_jacobian(&f, &[a, b]));
                    for (i, (fr, rr)) in fwd.iter().zip(&rev).enumerate() {
                        for (k, (x, y)) in fr.iter().zip(rr).enumerate() {
                            assert!(
                                same(*x, *y),
                                "{} at ({a}, {b}), c = {c}: J[{i}][{k}] {x:e}, reverse {y:e}",
                                op.name()
                            );
                        }
                    }
                }
            }
        }
    }
    // d cos x at 0 is -sin 0 = -0 in forward mode; the Jacobian gives +0, as reverse mode.
    let j = jacobian_of(&UnaryOp(Unary::Cos), &[0.0, 0.0]);
    assert_eq!(j[0][0].to_bits(), 0.0f64.to_bits());
}

#[test]
fn jvp_is_the_jacobian_times_the_direction_and_a_directional_difference() {
    let v: Vec<f64> = (0..26).map(|k| ((k * 5) % 7) as f64 * 0.3 - 0.9).collect();
    let f = Pose { points: 12 };
    let (y, jv) = jvp(&f, &POSE_AT, &v);
    assert_eq!(y, f.eval(&POSE_AT));
    let j = reverse_jacobian(&f, &POSE_AT);
    for (i, row) in j.iter().enumerate() {
        let want: f64 = row.iter().zip(&v).map(|(a, b)| a * b).sum();
        let scale = row.iter().zip(&v).map(|(a, b)| (a * b).abs()).sum::<f64>();
        assert!(
            close(jv[i], want, 1e-14, scale),
            "(J v)[{i}]: {:e}, J v by reverse {want:e}",
            jv[i]
        );
        // d/dt f(x + t v) at 0.
        let d = reference::derivative(
            |t| {
                let at: Vec<f64> = POSE_AT.iter().zip(&v).map(|(x, v)| x + t[0] * v).collect();
                f.eval(&at)[i]
            },
            &[0.0],
            0,
        );
        assert!(
            d.reliable() && d.agrees_with(jv[i]),
            "(J v)[{i}]: {:e}, difference {:e}",
            jv[i],
            d.value
        );
    }
}

#[test]
#[should_panic(expected = "jvp's direction has 2 entries for 3 inputs")]
fn jvp_refuses_a_direction_of_the_wrong_length() {
    let _ = jvp(&Square, &SQUARE_AT, &[1.0, 0.0]);
}

#[test]
#[should_panic(expected = "gave 1 outputs in one evaluation and 3 in another")]
fn jacobian_of_refuses_a_function_whose_output_count_changes() {
    /// One output in plain evaluation, three otherwise.
    struct Moody;
    impl Function for Moody {
        fn eval<T: Scalar>(&self, x: &[T]) -> Vec<T> {
            if std::any::type_name::<T>() == "f64" {
                vec![x[0]]
            } else {
                vec![x[0], x[1], x[2]]
            }
        }
    }
    let _ = jacobian_of(&Moody, &[1.0, 2.0, 3.0]);
}

// ---------------------------------------------------------------------------------------
// Random programs: forward and reverse mode agree on their Jacobians.

type Ref = usize;

#[derive(Clone, Copy, Debug)]
enum Arg {
    Node(Ref),
    Const(f64),
}

#[derive(Clone, Debug)]
enum Stmt {
    Unary(Unary, Ref),
    /// At least one side a node.
    Binary(Binary, Arg, Arg),
    Powi(Ref, i32),
    Nary(Nary, Vec<Ref>),
    DotF64(Vec<(Ref, f64)>),
    Clamp(Ref, f64, f64),
}

/// Inputs, statements over earlier values, and the last `outputs` values as outputs.
#[derive(Clone, Debug)]
struct Program {
    inputs: Vec<f64>,
    stmts: Vec<Stmt>,
    outputs: usize,
}

fn at<T: Copy>(v: &[T], r: Ref) -> T {
    v[v.len() - 1 - r % v.len()]
}

impl Program {
    /// Every value, inputs first.
    fn values<T: Scalar>(&self, xs: &[T]) -> Vec<T> {
        let mut v = xs.to_vec();
        for stmt in &self.stmts {
            let y = match stmt {
                Stmt::Unary(op, r) => at(&v, *r).unary(*op),
                Stmt::Binary(op, Arg::Node(a), Arg::Node(b)) => at(&v, *a).binary(*op, at(&v, *b)),
                Stmt::Binary(op, Arg::Node(a), Arg::Const(c)) => at(&v, *a).binary_f64(*op, *c),
                Stmt::Binary(op, Arg::Const(c), Arg::Node(b)) => {
                    let b = at(&v, *b);
                    b.lift(*c).binary(*op, b)
                }
                Stmt::Binary(_, Arg::Const(_), Arg::Const(_)) => unreachable!("not generated"),
                Stmt::Powi(r, n) => at(&v, *r).powi(*n),
                Stmt::Nary(op, rs) => {
                    let terms: Vec<T> = rs.iter().map(|&r| at(&v, r)).collect();
                    match op {
                        Nary::Sum => T::sum(&terms),
                        Nary::LogSumExp => T::logsumexp(&terms),
                        Nary::Max => T::amax(&terms),
                        _ if terms.len() < 2 => terms[0],
                        _ => {
                            let half = terms.len() / 2;
                            T::dot(&terms[..half], &terms[half..2 * half])
                        }
                    }
                }
                Stmt::DotF64(ps) => {
                    let a: Vec<T> = ps.iter().map(|p| at(&v, p.0)).collect();
                    let c: Vec<f64> = ps.iter().map(|p| p.1).collect();
                    T::dot_f64(&a, &c)
                }
                Stmt::Clamp(r, lo, hi) => at(&v, *r).clamp(*lo, *hi),
            };
            v.push(y);
        }
        v
    }
}

impl Function for Program {
    fn eval<T: Scalar>(&self, xs: &[T]) -> Vec<T> {
        let v = self.values(xs);
        v[v.len() - self.outputs..].to_vec()
    }
}

fn arg(reach: usize) -> impl Strategy<Value = Arg> {
    prop_oneof![3 => reference::reference(reach).prop_map(Arg::Node), 1 => reference::constant().prop_map(Arg::Const)]
}

fn stmt(reach: usize) -> impl Strategy<Value = Stmt> {
    let refs = move || prop::collection::vec(reference::reference(reach), 1..8);
    let binary = prop::sample::select(
        Binary::ALL
            .iter()
            .copied()
            .filter(|&op| op != Binary::Powi)
            .collect::<Vec<_>>(),
    );
    prop_oneof![
        6 => (prop::sample::select(Unary::ALL), reference::reference(reach)).prop_map(|(op, r)| Stmt::Unary(op, r)),
        6 => (binary, reference::reference(reach), arg(reach), any::<bool>()).prop_map(|(op, r, other, first)| {
            if first { Stmt::Binary(op, Arg::Node(r), other) } else { Stmt::Binary(op, other, Arg::Node(r)) }
        }),
        1 => (reference::reference(reach), -3..=4i32).prop_map(|(r, n)| Stmt::Powi(r, n)),
        2 => (prop::sample::select(vec![Nary::Sum, Nary::LogSumExp, Nary::Max, Nary::Dot]), refs())
            .prop_map(|(op, rs)| Stmt::Nary(op, rs)),
        1 => prop::collection::vec((reference::reference(reach), reference::constant()), 1..6).prop_map(Stmt::DotF64),
        1 => (reference::reference(reach), -1.5..0.5f64, 0.0..2.0f64).prop_map(|(r, lo, w)| Stmt::Clamp(r, lo, lo + w)),
    ]
}

fn program() -> impl Strategy<Value = Program> {
    (
        prop::collection::vec(-2.0..2.0f64, 1..=10),
        prop::collection::vec(stmt(30), 1..=24),
        1..=10usize,
    )
        .prop_map(|(inputs, stmts, outputs)| {
            let outputs = outputs.min(stmts.len());
            Program {
                inputs,
                stmts,
                outputs,
            }
        })
}

/// Forward mode (each column by `jvp`) and reverse mode (each row by a sweep) agree on
/// every program whose values are finite and moderate. They sum the same path products in
/// different groupings (forward mode sums at each node the paths from an input, reverse
/// mode the paths to an output), so an entry is compared within `1e-14` of the largest
/// `tangent * partial * adjoint` over the edges (read with `Var::node`): the size of the
/// terms summed across a cut of the graph, of which the entry may be a cancellation.
/// `jacobian_of` is the mode it picks, bit for bit.
/// The largest `|tangent(operand) * partial * adjoint(node)|` over the edges between
/// `nodes` (skipping a zero factor, which passes nothing).
fn edge_scale(nodes: &[Var<'_>], tangents: &[f64], adjoints: &[f64]) -> f64 {
    let mut scale = 0.0f64;
    for (v, &adjoint) in nodes.iter().zip(adjoints) {
        let node = v.node();
        for (operand, &partial) in node.operands.iter().zip(&node.partials) {
            let tapegrad::Operand::Scalar(u) = operand else {
                continue;
            };
            // Operands outside `nodes` are constants the program lifted: no tangent.
            let Some(i) = nodes.iter().position(|w| w.same_node(*u)) else {
                continue;
            };
            let factors = [tangents[i], partial, adjoint];
            if factors.iter().all(|&f| f != 0.0) {
                scale = scale.max(factors.iter().map(|f| f.abs()).product());
            }
        }
    }
    scale
}

#[test]
fn forward_and_reverse_jacobians_of_random_programs_agree() {
    let mut runner = TestRunner::new(reference::proptest_config(10_000, 0x0f0d_ea11));
    let compared = std::cell::Cell::new(0usize);
    let result = runner.run(&program(), |p| {
        let p = &p;
        let values = p.values(&p.inputs);
        if values.iter().any(|v| !v.is_finite() || v.abs() > 1e6) {
            return Ok(());
        }
        let (n, m) = (p.inputs.len(), p.outputs);
        // Column k by jvp; every node's tangent along x_k by the same pass.
        let mut forward = vec![vec![0.0; n]; m];
        let mut tangents = Vec::with_capacity(n);
        for k in 0..n {
            let e: Vec<f64> = (0..n).map(|i| f64::from(u8::from(i == k))).collect();
            let duals: Vec<Dual> = p
                .inputs
                .iter()
                .zip(&e)
                .map(|(&x, &e)| Dual::new(x, [e]))
                .collect();
            let all: Vec<f64> = p.values(&duals).iter().map(|d| d.tangent()).collect();
            let (_, column) = jvp(p, &p.inputs, &e);
            for i in 0..m {
                prop_assert!(
                    same(column[i], all[all.len() - m + i] + 0.0),
                    "jvp is the pass"
                );
                forward[i][k] = column[i];
            }
            tangents.push(all);
        }
        // Row i by a sweep; every node's adjoint for output i by the same sweep.
        let g = Graph::new();
        let xs = g.vars(&p.inputs);
        let nodes = p.values(&xs);
        let outputs = &nodes[nodes.len() - m..];
        let reverse = higher::jacobian(outputs, &xs);
        if forward
            .iter()
            .chain(&reverse)
            .flatten()
            .any(|d| !d.is_finite())
        {
            return Ok(());
        }
        compared.set(compared.get() + 1);
        for (i, y) in outputs.iter().enumerate() {
            let adjoints = y.backward().wrt_all(&nodes);
            for k in 0..n {
                let scale = edge_scale(&nodes, &tangents[k], &adjoints);
                let (f, r) = (forward[i][k], reverse[i][k]);
                prop_assert!(
                    same(f, r) || (f - r).abs() <= 1e-14 * scale,
                    "J[{i}][{k}]: forward {f:e}, reverse {r:e} (scale {scale:e}){p:?}"
                );
            }
        }
        let picked = jacobian_of(p, &p.inputs);
        let want = if m >= n { &forward } else { &reverse };
        for (row, want) in picked.iter().zip(want) {
            for (a, b) in row.iter().zip(want) {
                prop_assert!(same(*a, *b), "jacobian_of {a:e}, its mode {b:e}");
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        compared.get() >= 4_000,
        "only {} programs compared",
        compared.get()
    );
}

// ---------------------------------------------------------------------------------------
// Second order: forward mode composed with reverse mode, and with itself.

// The test functions, each written once over Scalar and instantiated at f64, Var,
// Dual<_, Var> and Dual<_, Dual>.

fn rosenbrock<T: Scalar>(x: &[T]) -> T {
    T::sum(
        x.windows(2)
            .map(|w| (w[0] - 1.0).powi(2) + (w[1] - w[0] * w[0]).powi(2) * 100.0),
    )
}

fn likelihood<T: Scalar>(x: &[T]) -> T {
    let lse = T::logsumexp(x);
    let p: Vec<T> = x.iter().map(|&v| (v - lse).exp()).collect();
    -T::sum(p.iter().map(|&q| q.xlogy(q))) + x[0].xlogy(x[1] * x[1] + 1.0)
}

fn inverse_hyperbolic<T: Scalar>(x: &[T]) -> T {
    x[0].asinh() * (x[1] * 0.4).atanh()
        + (x[2] * x[2] + 1.5).acosh() * x[3].sin() / x[0].hypot(x[3])
}

fn mixed<T: Scalar>(x: &[T]) -> T {
    let d = T::dot(&x[..2], &x[2..]);
    x[0].powf(x[1] * x[1] + 0.5) * d.tanh() + x[2].atan2(x[3]) * x[1].exp() - x[3].recip().ln_1p()
}

#[test]
fn hessian_vector_products_agree_four_ways() {
    let x4 = [0.6, -0.35, 1.2, 0.8];
    let v4 = [1.0, -0.5, 0.25, 2.0];
    macro_rules! four_ways {
        ($f:ident) => {{
            let name = stringify!($f);
            // Reverse over reverse.
            let g = Graph::new();
            let xs = g.vars(&x4);
            let y = $f(&xs);
            let rr = higher::hvp(y, &xs, &v4);
            // Forward over reverse: the replay's tangent sweep.
            let mut fr = [0.0; 4];
            Replay::new(y, &xs)
                .hvp(&x4, &v4, &mut ReplayWorkspace::new(), &mut fr)
                .expect("replay");
            // Reverse over forward: the directional derivative recorded, then its gradient.
            let h = Graph::new();
            let hs = h.vars(&x4);
            let duals: Vec<Dual<1, Var<'_>>> = hs
                .iter()
                .zip(v4)
                .map(|(&x, v)| Dual::new(x, [h.constant(v)]))
                .collect();
            let dy = $f(&duals).tangent();
            let rf = dy.backward().wrt_all(&hs);
            // Forward over forward: d/dx_i of the derivative along v, one pass per i.
            let ff: Vec<f64> = (0..4)
                .map(|i| {
                    let duals: Vec<Dual<1, Dual>> = (0..4)
                        .map(|k| {
                            Dual::new(
                                Dual::new(x4[k], [v4[k]]),
                                [Dual::constant(f64::from(u8::from(i == k)))],
                            )
                        })
                        .collect();
                    $f(&duals).tangent().tangent()
                })
                .collect();
            let scale = rr.iter().fold(0.0, |s: f64, v| s.max(v.abs()));
            for i in 0..4 {
                for (way, got) in [
                    ("forward over reverse", fr[i]),
                    ("reverse over forward", rf[i]),
                    ("forward over forward", ff[i]),
                ] {
                    assert!(
                        close(got, rr[i], 1e-14, scale),
                        "{name} (H v)[{i}]: {way} {got:e}, reverse over reverse {:e}",
                        rr[i]
                    );
                }
            }
            // And the directional derivative itself is the gradient along v.
            let grad = $f(&xs).backward().wrt_all(&xs);
            let gv: f64 = grad.iter().zip(v4).map(|(g, v)| g * v).sum();
            assert!(close(dy.value(), gv, 1e-14, gv.abs()), "{name}: grad . v");
            // Central differences of the gradient along v.
            higher::hvpcheck(|_, x| $f(x), &x4, &v4, Tolerance::default()).assert_passed();
        }};
    }
    four_ways!(rosenbrock);
    four_ways!(likelihood);
    four_ways!(inverse_hyperbolic);
    four_ways!(mixed);
}

/// The full Hessian by forward over forward (`Dual<4, Dual<4>>`: one pass) and by reverse
/// over forward (`Dual<4, Var>`: one recording, four sweeps) against `higher::hessian`.
#[test]
fn hessians_by_forward_mode_match_reverse_over_reverse() {
    let x4 = [0.6, -0.35, 1.2, 0.8];
    macro_rules! hessians {
        ($f:ident) => {{
            let name = stringify!($f);
            let g = Graph::new();
            let xs = g.vars(&x4);
            let rr = higher::hessian($f(&xs), &xs);
            let ff = {
                let duals: Vec<Dual<4, Dual<4>>> = (0..4)
                    .map(|k| {
                        Dual::new(
                            Dual::unit(x4[k], k),
                            std::array::from_fn(|j| Dual::constant(f64::from(u8::from(j == k)))),
                        )
                    })
                    .collect();
                $f(&duals)
            };
            let h = Graph::new();
            let hs = h.vars(&x4);
            let duals: Vec<Dual<4, Var<'_>>> = hs
                .iter()
                .enumerate()
                .map(|(k, &x)| Dual::unit(x, k))
                .collect();
            let y = $f(&duals);
            let scale = rr.iter().flatten().fold(0.0, |s: f64, v| s.max(v.abs()));
            for i in 0..4 {
                let rf = y.tangents[i].backward().wrt_all(&hs);
                for j in 0..4 {
                    let f = ff.tangents[i].tangents[j];
                    assert!(
                        close(f, rr[i][j], 1e-14, scale),
                        "{name} H[{i}][{j}]: forward over forward {f:e}, {:e}",
                        rr[i][j]
                    );
                    assert!(
                        close(rf[j], rr[i][j], 1e-14, scale),
                        "{name} H[{i}][{j}]: reverse over forward {:e}, {:e}",
                        rf[j],
                        rr[i][j]
                    );
                }
            }
        }};
    }
    hessians!(rosenbrock);
    hessians!(likelihood);
    hessians!(inverse_hyperbolic);
    hessians!(mixed);
}

/// Points inside each unary op's domain, away from its kinks.
fn domain(op: Unary) -> &'static [f64] {
    match op {
        Unary::Ln | Unary::Sqrt | Unary::Log2 | Unary::Log10 => &[0.3, 1.7, 4.0],
        Unary::Asin | Unary::Acos | Unary::Atanh => &[-0.6, 0.2, 0.8],
        Unary::Acosh => &[1.2, 2.0, 7.5],
        Unary::Ln1p => &[-0.5, 0.3, 2.0],
        Unary::Tan => &[-1.0, 0.2, 1.3],
        _ => &[-1.3, 0.4, 2.2],
    }
}

/// Every unary op's second derivative by forward over forward and reverse over forward
/// against reverse over reverse (`higher::hessian`, itself checked against closed forms in
/// `tests/second_derivatives.rs`), and the first derivative, bit for bit, against backward.
#[test]
fn every_unary_ops_second_derivative_composes() {
    for &op in Unary::ALL {
        for &x0 in domain(op) {
            let g = Graph::new();
            let x = g.var(x0);
            let y = x.unary(op);
            let first = y.backward()[x];
            let rr = higher::hessian(y, &[x])[0][0];
            let ff = Dual::variable(Dual::variable(x0)).unary(op);
            let rf = Dual::variable(x).unary(op).tangent();
            let what = format!("{}({x0})", op.name());
            assert!(
                same(ff.tangent().value + 0.0, first),
                "{what}: first derivative"
            );
            assert!(
                same(rf.value() + 0.0, first),
                "{what}: first derivative over Var"
            );
            let scale = rr.abs();
            assert!(
                close(ff.tangent().tangent(), rr, 1e-14, scale),
                "{what}'': forward over forward {:e}, {rr:e}",
                ff.tangent().tangent()
            );
            let rf2 = rf.backward()[x];
            assert!(
                close(rf2, rr, 1e-14, scale),
                "{what}'': reverse over forward {rf2:e}, {rr:e}"
            );
        }
    }
}

/// Every binary op's Hessian with two variables, and its second derivative with an `f64`
/// on either side, by forward over forward and reverse over forward, against
/// `higher::hessian`.
#[test]
fn every_binary_ops_hessian_composes_in_every_operand_combination() {
    let points: &[(Binary, &[(f64, f64)])] = &[
        (Binary::Add, &[(1.5, -2.0)]),
        (Binary::Sub, &[(1.5, -2.0)]),
        (Binary::Mul, &[(1.5, -2.0), (0.0, 3.0)]),
        (Binary::Div, &[(1.5, 0.8), (-2.0, 3.0)]),
        (Binary::Powf, &[(0.6, 2.3), (1.8, -0.7), (2.0, 0.0)]),
        (Binary::Atan2, &[(1.0, 2.0), (-0.5, -1.5)]),
        (Binary::Hypot, &[(3.0, 4.0), (-1.0, 0.5)]),
        (Binary::Max, &[(1.0, 2.0), (3.0, -1.0)]),
        (Binary::Min, &[(1.0, 2.0), (3.0, -1.0)]),
        // xlogy: H = [[0, 1/b], [1/b, -a/b^2]].
        (Binary::Xlogy, &[(2.0, 3.0), (-1.5, 0.25), (0.5, 1.0)]),
    ];
    for &(op, at) in points {
        for &(a0, b0) in at {
            let what = format!("{}({a0}, {b0})", op.name());
            let g = Graph::new();
            let v = g.vars(&[a0, b0]);
            let rr = higher::hessian(v[0].binary(op, v[1]), &v);
            let scale = rr.iter().flatten().fold(0.0, |s: f64, v| s.max(v.abs()));
            // Var with Var.
            let ff = Dual::<2, Dual<2>>::unit(Dual::unit(a0, 0), 0)
                .binary(op, Dual::unit(Dual::unit(b0, 1), 1));
            let rv: Vec<Dual<2, Var<'_>>> = vec![Dual::unit(v[0], 0), Dual::unit(v[1], 1)];
            let rf = rv[0].binary(op, rv[1]);
            for i in 0..2 {
                let row = rf.tangents[i].backward().wrt_all(&v);
                for j in 0..2 {
                    let f = ff.tangents[i].tangents[j];
                    assert!(
                        close(f, rr[i][j], 1e-14, scale),
                        "{what} H[{i}][{j}]: forward over forward {f:e}, {:e}",
                        rr[i][j]
                    );
                    assert!(
                        close(row[j], rr[i][j], 1e-14, scale),
                        "{what} H[{i}][{j}]: reverse over forward {:e}, {:e}",
                        row[j],
                        rr[i][j]
                    );
                }
            }
            // Var with f64, f64 with Var: the diagonal entries.
            let d2 = |y: Dual<1, Dual>| y.tangent().tangent();
            let x2 = |x: f64| Dual::variable(Dual::variable(x));
            let (lhs, rhs) = (
                d2(x2(a0).binary_f64(op, b0)),
                d2(Dual::constant(Dual::constant(a0)).binary(op, x2(b0))),
            );
            let h = Graph::new();
            let (a, b) = (h.var(a0), h.var(b0));
            let want_lhs = higher::hessian(a.try_binary(op, b0).expect("valid"), &[a])[0][0];
            let want_rhs =
                higher::hessian(h.constant(a0).try_binary(op, b).expect("valid"), &[b])[0][0];
            assert!(
                close(lhs, want_lhs, 1e-14, scale),
                "{what} with a constant b: {lhs:e}, {want_lhs:e}"
            );
            assert!(
                close(rhs, want_rhs, 1e-14, scale),
                "{what} with a constant a: {rhs:e}, {want_rhs:e}"
            );
            assert!(
                close(lhs, rr[0][0], 1e-14, scale) && close(rhs, rr[1][1], 1e-14, scale),
                "{what}: diagonal"
            );
        }
    }
    // powi: (x^n)'' = n (n - 1) x^(n - 2).
    for n in [-3, -1, 0, 1, 2, 5] {
        for x0 in [-1.3, 0.7, 2.1] {
            let ff = Dual::variable(Dual::variable(x0))
                .powi(n)
                .tangent()
                .tangent();
            let closed = f64::from(n * (n - 1)) * x0.powi(n - 2);
            assert_relative_eq!(ff, closed, max_relative = 1e-13, epsilon = 1e-15);
        }
    }
}
