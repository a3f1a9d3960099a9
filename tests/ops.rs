//! Every op, in every operand combination (`Var` with `Var`, `Var` with `f64`, `f64` with
//! `Var`), checked three ways at several points including the edges of its domain:
//!
//! 1. its value against the plain `f64` computation;
//! 2. its derivative against the closed form, written here from the calculus (not copied
//!    from `op.rs`);
//! 3. its derivative against a central finite difference of the tape's own forward value
//!    (so the value the tape records and the partial it records are checked against each
//!    other, in each operand combination separately).
//!
//! The tables below list every op once; `every_*_op_has_a_row` fail when an op is added to
//! `op.rs` without a row here, and check that each row's method records the op it claims.

use approx::relative_eq;
use std::f64::consts::PI;
use tapegrad::{Binary, Graph, Nary, Op, Unary, Var};

// ---------------------------------------------------------------------------------------
// Tolerances and the central difference
// ---------------------------------------------------------------------------------------

/// Value against the plain `f64` computation. Most ops call the very same `f64` function
/// (the result is bitwise equal); sigmoid and GELU are written in a different but
/// equivalent form here, whose rounding differs by a few ulps, amplified by at most a few
/// times where `1 + tanh(u)` cancels (GELU at x = -3). 1e-14 is about 45 ulps.
const VALUE_TOL: f64 = 1e-14;

/// Derivative against the closed form. Both sides evaluate a handful of correctly rounded
/// (or near: libm's exp/cosh are within an ulp) operations in possibly different orders,
/// so they agree to a few ulps. A wrong rule (missing factor, wrong sign, `-1/x` for
/// `-2/x^2`) is off by far more than 1e-14 relative. Expected zeros must be exact: the
/// relative comparison below has no absolute slack.
const CLOSED_FORM_TOL: f64 = 1e-14;

/// Derivative against the central difference. With the step `h = eps^(1/3) |x|` the
/// truncation error `h^2 f'''/6` is about `eps^(2/3) ~ 4e-11` relative for functions
/// whose derivatives vary on the scale of `|x|` (all the points below); 1e-7 leaves three
/// orders of margin for larger third derivatives, yet catches any wrong rule. Where the
/// derivative is far below the rounding noise of `f` (tanh at 20, sigmoid at 40) the
/// difference cannot resolve it and only the noise bound applies: the closed-form check
/// is the sharp one there.
const FD_TOL: f64 = 1e-7;

/// A central difference and how much rounding noise it carries.
struct CentralDiff {
    slope: f64,
    /// `f(x ± h)` are each within a few ulps of their magnitude; their difference divided
    /// by `2h` can therefore be wrong by about `eps |f| / h`. Taken with a factor 8.
    noise: f64,
}

/// `(f(x + h) - f(x - h)) / 2h` with the step scaled to `|x|`: `h = eps^(1/3) |x|` (or
/// `eps^(1/3)` at 0). Scaling with `|x|` keeps points near a domain edge inside the domain
/// (ln at 1e-8 is differenced over 1e-8 ± 6e-14, not across 0) and resolves functions
/// whose features scale with `x`. The divisor is the step actually taken, `(x+h) - (x-h)`,
/// which need not be exactly `2h` in floating point.
fn central_diff(f: impl Fn(f64) -> f64, x: f64) -> CentralDiff {
    let h = f64::EPSILON.cbrt() * if x == 0.0 { 1.0 } else { x.abs() };
    let (up, down) = (x + h, x - h);
    let (f_up, f_down) = (f(up), f(down));
    let step = up - down;
    CentralDiff {
        slope: (f_up - f_down) / step,
        noise: 8.0 * f64::EPSILON * f_up.abs().max(f_down.abs()) / step,
    }
}

/// Collects failures so that a table test reports every bad row at once, not just the
/// first.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    /// `got` within `max_relative` of `want` (exactly equal for zeros and infinities).
    fn close(&mut self, what: &str, got: f64, want: f64, max_relative: f64) {
        if !relative_eq!(got, want, epsilon = 0.0, max_relative = max_relative) {
            self.0.push(format!("{what}: got {got:e}, want {want:e}"));
        }
    }

    /// An AD derivative against a central difference.
    fn close_fd(&mut self, what: &str, ad: f64, fd: &CentralDiff) {
        if !relative_eq!(ad, fd.slope, epsilon = fd.noise, max_relative = FD_TOL) {
            self.0.push(format!(
                "{what}: AD {ad:e}, central difference {:e} (noise {:e})",
                fd.slope, fd.noise
            ));
        }
    }

    fn check(self) {
        assert!(
            self.0.is_empty(),
            "{} failure(s):\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------
// Unary ops
// ---------------------------------------------------------------------------------------

type UnaryFn = for<'g> fn(Var<'g>) -> Var<'g>;

struct UnaryCase {
    op: Unary,
    record: UnaryFn,
    /// The plain `f64` value.
    value: fn(f64) -> f64,
    /// The closed-form derivative.
    derivative: fn(f64) -> f64,
    /// Points where the closed form and the central difference both apply.
    points: &'static [f64],
    /// `(x, derivative)` at kinks, where a central difference straddles two slopes and
    /// the derivative is a convention (0, as PyTorch and JAX choose).
    kinks: &'static [(f64, f64)],
}

/// `sqrt(2/pi)`, computed here independently of the crate's constant.
fn sqrt_2_over_pi() -> f64 {
    (2.0 / PI).sqrt()
}

fn gelu_reference(x: f64) -> f64 {
    0.5 * x * (1.0 + (sqrt_2_over_pi() * (x + 0.044715 * x.powi(3))).tanh())
}

/// GELU = 0.5 x (1 + tanh u), u = k (x + c x^3), k = sqrt(2/pi), c = 0.044715:
/// d/dx = 0.5 (1 + tanh u) + 0.5 x sech^2(u) k (1 + 3 c x^2).
fn gelu_derivative(x: f64) -> f64 {
    let k = sqrt_2_over_pi();
    let u = k * (x + 0.044715 * x.powi(3));
    let sech2 = 1.0 / u.cosh().powi(2);
    0.5 * (1.0 + u.tanh()) + 0.5 * x * sech2 * k * (1.0 + 3.0 * 0.044715 * x * x)
}

fn unary_table() -> Vec<UnaryCase> {
    vec![
        UnaryCase {
            op: Unary::Neg,
            record: |x| -x,
            value: |x| -x,
            derivative: |_| -1.0,
            points: &[-2.5, 0.0, 3.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Exp,
            record: |x| x.exp(),
            value: f64::exp,
            // d e^x = e^x
            derivative: f64::exp,
            points: &[-3.0, 0.0, 0.5, 3.0, 20.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Ln,
            record: |x| x.ln(),
            value: f64::ln,
            // d ln x = 1/x; 1e-8 is the "ln near 0" edge: 1e8, differenced over ±6e-14.
            derivative: |x| 1.0 / x,
            points: &[1e-8, 0.5, 1.0, 10.0, 1e8],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Sqrt,
            record: |x| x.sqrt(),
            value: f64::sqrt,
            // d sqrt x = 1 / (2 sqrt x)
            derivative: |x| 0.5 / x.sqrt(),
            points: &[1e-8, 0.25, 2.0, 1e6],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Recip,
            record: |x| x.recip(),
            value: |x| 1.0 / x,
            // d (1/x) = -1/x^2
            derivative: |x| -1.0 / (x * x),
            points: &[-2.0, 1e-3, 0.5, 3.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Sin,
            record: |x| x.sin(),
            value: f64::sin,
            derivative: f64::cos,
            points: &[-2.0, 0.0, 0.5, 3.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Cos,
            record: |x| x.cos(),
            value: f64::cos,
            // d cos x = -sin x (exactly 0 at 0)
            derivative: |x| -x.sin(),
            points: &[-2.0, 0.0, 0.5, 3.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Tanh,
            record: |x| x.tanh(),
            value: f64::tanh,
            // d tanh x = 1 / cosh^2 x; at 20 that is about 1.7e-17, where 1 - tanh^2 is 0.
            derivative: |x| 1.0 / x.cosh().powi(2),
            points: &[-3.0, 0.0, 0.5, 20.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Sinh,
            record: |x| x.sinh(),
            value: f64::sinh,
            derivative: f64::cosh,
            points: &[-2.0, 0.0, 0.5, 3.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Cosh,
            record: |x| x.cosh(),
            value: f64::cosh,
            derivative: f64::sinh,
            points: &[-2.0, 0.0, 0.5, 3.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Abs,
            record: |x| x.abs(),
            value: f64::abs,
            // d |x| = sign(x)
            derivative: f64::signum,
            points: &[-2.5, -1e-8, 0.5, 3.0],
            kinks: &[(0.0, 0.0)],
        },
        UnaryCase {
            op: Unary::Relu,
            record: |x| x.relu(),
            value: |x| x.max(0.0),
            // d max(x, 0) = 1 for x > 0, 0 for x < 0
            derivative: |x| if x > 0.0 { 1.0 } else { 0.0 },
            points: &[-2.5, -1e-8, 1e-8, 0.5, 3.0],
            kinks: &[(0.0, 0.0)],
        },
        UnaryCase {
            op: Unary::Sigmoid,
            record: |x| x.sigmoid(),
            value: |x| 1.0 / (1.0 + (-x).exp()),
            // s = 1 / (1 + e^-x): ds/dx = e^-x / (1 + e^-x)^2, about 4.2e-18 at ±40
            derivative: |x| (-x).exp() / (1.0 + (-x).exp()).powi(2),
            points: &[-40.0, -2.0, 0.0, 0.5, 40.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Gelu,
            record: |x| x.gelu(),
            value: gelu_reference,
            derivative: gelu_derivative,
            points: &[-5.0, -3.0, -1.0, 0.0, 0.5, 2.0, 5.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Atan,
            record: |x| x.atan(),
            value: f64::atan,
            // d atan x = 1 / (1 + x^2)
            derivative: |x| 1.0 / (1.0 + x * x),
            points: &[-3.0, 0.0, 0.5, 40.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Asin,
            record: |x| x.asin(),
            value: f64::asin,
            // d asin x = 1 / sqrt(1 - x^2)
            derivative: |x| 1.0 / (1.0 - x * x).sqrt(),
            points: &[-0.9, -0.3, 0.0, 0.5, 0.99],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Acos,
            record: |x| x.acos(),
            value: f64::acos,
            // d acos x = -1 / sqrt(1 - x^2)
            derivative: |x| -1.0 / (1.0 - x * x).sqrt(),
            points: &[-0.9, -0.3, 0.0, 0.5, 0.99],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Tan,
            record: |x| x.tan(),
            value: f64::tan,
            // d tan x = 1 / cos^2 x
            derivative: |x| 1.0 / x.cos().powi(2),
            points: &[-1.2, 0.0, 0.5, 1.4],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Ln1p,
            record: |x| x.ln_1p(),
            value: f64::ln_1p,
            // d ln(1 + x) = 1 / (1 + x)
            derivative: |x| 1.0 / (1.0 + x),
            points: &[-0.5, 1e-10, 0.0, 3.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::ExpM1,
            record: |x| x.exp_m1(),
            value: f64::exp_m1,
            // d (e^x - 1) = e^x
            derivative: f64::exp,
            points: &[-3.0, 1e-10, 0.0, 2.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Log2,
            record: |x| x.log2(),
            value: f64::log2,
            // d log2 x = 1 / (x ln 2)
            derivative: |x| 1.0 / (x * 2f64.ln()),
            points: &[0.3, 1.0, 8.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Log10,
            record: |x| x.log10(),
            value: f64::log10,
            // d log10 x = 1 / (x ln 10)
            derivative: |x| 1.0 / (x * 10f64.ln()),
            points: &[0.3, 1.0, 1000.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Exp2,
            record: |x| x.exp2(),
            value: f64::exp2,
            // d 2^x = 2^x ln 2
            derivative: |x| 2f64.powf(x) * 2f64.ln(),
            points: &[-3.0, 0.0, 0.5, 10.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Cbrt,
            record: |x| x.cbrt(),
            value: f64::cbrt,
            // d x^(1/3) = 1 / (3 x^(2/3)), also for negative x (an odd function)
            derivative: |x| 1.0 / (3.0 * x.abs().powf(2.0 / 3.0)),
            points: &[-8.0, -0.5, 1e-3, 2.0, 27.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Softplus,
            record: |x| x.softplus(),
            // log1p(e^x), fine at these points (its overflow is tested below).
            value: |x| x.exp().ln_1p(),
            // d ln(1 + e^x) = e^x / (1 + e^x) = 1 / (1 + e^-x)
            derivative: |x| 1.0 / (1.0 + (-x).exp()),
            points: &[-20.0, -2.0, 0.0, 0.5, 30.0],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Erf,
            record: |x| x.erf(),
            value: erf_reference,
            // d erf x = 2/sqrt(pi) e^(-x^2)
            derivative: |x| 2.0 / PI.sqrt() * (-x * x).exp(),
            points: ERF_POINTS,
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Erfc,
            record: |x| x.erfc(),
            value: erfc_reference,
            // d erfc x = -2/sqrt(pi) e^(-x^2)
            derivative: |x| -2.0 / PI.sqrt() * (-x * x).exp(),
            points: ERF_POINTS,
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Asinh,
            record: |x| x.asinh(),
            value: f64::asinh,
            // d asinh x = 1 / sqrt(1 + x^2)
            derivative: |x| 1.0 / (1.0 + x * x).sqrt(),
            points: &[-3.0, -0.5, 0.0, 1e-8, 2.0, 1e6],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Acosh,
            record: |x| x.acosh(),
            value: |x| (x + (x * x - 1.0).sqrt()).ln(),
            // d acosh x = 1 / sqrt(x^2 - 1)
            derivative: |x| 1.0 / (x * x - 1.0).sqrt(),
            points: &[1.01, 1.5, 2.0, 10.0, 1e6],
            kinks: &[],
        },
        UnaryCase {
            op: Unary::Atanh,
            record: |x| x.atanh(),
            value: |x| 0.5 * ((1.0 + x) / (1.0 - x)).ln(),
            // d atanh x = 1 / (1 - x^2)
            derivative: |x| 1.0 / (1.0 - x * x),
            points: &[-0.9, -0.3, 0.0, 0.5, 0.95],
            kinks: &[],
        },
    ]
}

/// The points where erf and erfc are tabulated below.
const ERF_POINTS: &[f64] = &[-2.0, -0.5, 0.0, 0.3, 1.5, 3.0];

/// `math.erf` and `math.erfc` of CPython 3.11 (C's libm) at [`ERF_POINTS`], and erfc at 10.
const ERF_TABLE: &[(f64, f64, f64)] = &[
    (-2.0, -0.9953222650189527, 1.9953222650189528),
    (-0.5, -0.5204998778130465, 1.5204998778130465),
    (0.0, 0.0, 1.0),
    (0.3, 0.3286267594591274, 0.6713732405408726),
    (1.5, 0.9661051464753108, 0.033894853524689274),
    (3.0, 0.9999779095030014, 2.2090496998585438e-05),
    (10.0, 1.0, 2.088487583762545e-45),
];

fn erf_reference(x: f64) -> f64 {
    ERF_TABLE
        .iter()
        .find(|r| r.0 == x)
        .expect("a tabulated point")
        .1
}

fn erfc_reference(x: f64) -> f64 {
    ERF_TABLE
        .iter()
        .find(|r| r.0 == x)
        .expect("a tabulated point")
        .2
}

fn check_unary(case: &UnaryCase, x: f64, failures: &mut Failures) {
    let name = case.op.name();
    let g = Graph::new();
    let v = g.var(x);
    let y = (case.record)(v);
    if y.op() != Op::Unary(case.op) {
        failures
            .0
            .push(format!("{name}: the method recorded {}", y.op()));
    }
    failures.close(
        &format!("{name}({x}) value"),
        y.value(),
        (case.value)(x),
        VALUE_TOL,
    );
    let ad = y.backward()[v];
    failures.close(
        &format!("{name}'({x}) vs closed form"),
        ad,
        (case.derivative)(x),
        CLOSED_FORM_TOL,
    );
    let fd = central_diff(
        |t| {
            let g = Graph::new();
            (case.record)(g.var(t)).value()
        },
        x,
    );
    failures.close_fd(&format!("{name}'({x}) vs central difference"), ad, &fd);
}

#[test]
fn every_unary_op_has_a_row() {
    let table = unary_table();
    for op in Unary::ALL {
        let rows = table.iter().filter(|c| c.op == *op).count();
        assert_eq!(
            rows,
            1,
            "unary op {} has {rows} rows in the table",
            op.name()
        );
    }
}

#[test]
fn unary_ops_match_closed_form_and_central_difference() {
    let mut failures = Failures::default();
    for case in &unary_table() {
        for &x in case.points {
            check_unary(case, x, &mut failures);
        }
    }
    failures.check();
}

#[test]
fn unary_ops_at_kinks_take_derivative_zero() {
    let mut failures = Failures::default();
    for case in &unary_table() {
        for &(x, want) in case.kinks {
            let g = Graph::new();
            let v = g.var(x);
            let y = (case.record)(v);
            failures.close(
                &format!("{}({x}) value", case.op.name()),
                y.value(),
                (case.value)(x),
                VALUE_TOL,
            );
            failures.close(
                &format!("{}'({x})", case.op.name()),
                y.backward()[v],
                want,
                0.0,
            );
        }
    }
    failures.check();
}

// ---------------------------------------------------------------------------------------
// Binary ops
// ---------------------------------------------------------------------------------------

type VarVar = for<'g> fn(Var<'g>, Var<'g>) -> Var<'g>;
type VarConst = for<'g> fn(Var<'g>, f64) -> Var<'g>;
type ConstVar = for<'g> fn(f64, Var<'g>) -> Var<'g>;

struct BinaryCase {
    op: Binary,
    var_var: VarVar,
    var_const: VarConst,
    const_var: ConstVar,
    value: fn(f64, f64) -> f64,
    /// Closed-form `d/da` and `d/db` of `op(a, b)`.
    d_a: fn(f64, f64) -> f64,
    d_b: fn(f64, f64) -> f64,
    points: &'static [(f64, f64)],
}

fn binary_table() -> Vec<BinaryCase> {
    vec![
        BinaryCase {
            op: Binary::Add,
            var_var: |a, b| a + b,
            var_const: |a, b| a + b,
            const_var: |a, b| a + b,
            value: |a, b| a + b,
            d_a: |_, _| 1.0,
            d_b: |_, _| 1.0,
            points: &[(1.5, -2.25), (0.0, 0.0), (-3.0, 1e-3)],
        },
        BinaryCase {
            op: Binary::Sub,
            var_var: |a, b| a - b,
            var_const: |a, b| a - b,
            const_var: |a, b| a - b,
            value: |a, b| a - b,
            d_a: |_, _| 1.0,
            d_b: |_, _| -1.0,
            points: &[(1.5, -2.25), (0.0, 0.0), (-3.0, 1e-3)],
        },
        BinaryCase {
            op: Binary::Mul,
            var_var: |a, b| a * b,
            var_const: |a, b| a * b,
            const_var: |a, b| a * b,
            value: |a, b| a * b,
            // d(ab)/da = b, d(ab)/db = a
            d_a: |_, b| b,
            d_b: |a, _| a,
            points: &[(1.5, -2.25), (0.0, 3.0), (-3.0, 1e-3)],
        },
        BinaryCase {
            op: Binary::Div,
            var_var: |a, b| a / b,
            var_const: |a, b| a / b,
            const_var: |a, b| a / b,
            value: |a, b| a / b,
            // d(a/b)/da = 1/b, d(a/b)/db = -a/b^2. The point (2, x) is `2.0 / x`, whose
            // derivative -2/x^2 a known Rust AD crate reports as -1/x.
            d_a: |_, b| 1.0 / b,
            d_b: |a, b| -a / (b * b),
            points: &[
                (3.0, 1.5),
                (2.0, -0.5),
                (2.0, 1e-3),
                (-1.0, 7.0),
                (0.0, 2.0),
            ],
        },
        BinaryCase {
            op: Binary::Powf,
            var_var: |a, b| a.powf(b),
            var_const: |a, b| a.powf(b),
            const_var: tapegrad::powf,
            value: f64::powf,
            // d(a^b)/da = b a^(b-1), d(a^b)/db = ln(a) a^b. The point (2, x) is
            // `2.0.powf(x)`, whose derivative ln 2 * 2^x a known Rust AD crate gets wrong.
            d_a: |a, b| b * a.powf(b - 1.0),
            d_b: |a, b| a.ln() * a.powf(b),
            points: &[
                (2.0, 3.0),
                (2.0, -0.5),
                (0.5, -1.5),
                (3.0, 0.5),
                (1e-8, 2.0),
                (7.0, 0.0),
                (1.0, 2.5),
            ],
        },
        BinaryCase {
            op: Binary::Atan2,
            var_var: |a, b| a.atan2(b),
            var_const: |a, b| a.atan2(b),
            const_var: tapegrad::atan2,
            value: f64::atan2,
            // atan2(a, b) = atan(a / b) (+ a constant by quadrant):
            // d/da = b / (a^2 + b^2), d/db = -a / (a^2 + b^2)
            d_a: |a, b| b / (a * a + b * b),
            d_b: |a, b| -a / (a * a + b * b),
            points: &[
                (1.0, 2.0),
                (-0.5, -1.5),
                (3.0, -0.25),
                (0.0, 2.0),
                (2.0, 0.0),
            ],
        },
        BinaryCase {
            op: Binary::Hypot,
            var_var: |a, b| a.hypot(b),
            var_const: |a, b| a.hypot(b),
            const_var: tapegrad::hypot,
            value: f64::hypot,
            // h = sqrt(a^2 + b^2): dh/da = a / h, dh/db = b / h
            d_a: |a, b| a / (a * a + b * b).sqrt(),
            d_b: |a, b| b / (a * a + b * b).sqrt(),
            points: &[(3.0, 4.0), (-1.0, 0.5), (0.0, 2.0), (1e100, -3e100)],
        },
        BinaryCase {
            op: Binary::Max,
            var_var: |a, b| a.max(b),
            var_const: |a, b| a.max(b),
            const_var: tapegrad::max,
            value: f64::max,
            // 1 for the larger operand, 0 for the other (ties: see kinks_follow_pytorch)
            d_a: |a, b| if a > b { 1.0 } else { 0.0 },
            d_b: |a, b| if b > a { 1.0 } else { 0.0 },
            points: &[(1.0, 2.0), (3.0, -1.0), (-2.0, -2.5)],
        },
        BinaryCase {
            op: Binary::Min,
            var_var: |a, b| a.min(b),
            var_const: |a, b| a.min(b),
            const_var: tapegrad::min,
            value: f64::min,
            d_a: |a, b| if a < b { 1.0 } else { 0.0 },
            d_b: |a, b| if b < a { 1.0 } else { 0.0 },
            points: &[(1.0, 2.0), (3.0, -1.0), (-2.0, -2.5)],
        },
        BinaryCase {
            op: Binary::Xlogy,
            var_var: |a, b| a.xlogy(b),
            var_const: |a, b| a.xlogy(b),
            const_var: tapegrad::xlogy,
            value: |a, b| a * b.ln(),
            // d(a ln b)/da = ln b, d/db = a / b
            d_a: |_, b| b.ln(),
            d_b: |a, b| a / b,
            points: &[(2.0, 3.0), (-1.5, 0.25), (0.5, 1.0), (3.0, 1e-3)],
        },
    ]
}

fn check_binary(case: &BinaryCase, a: f64, b: f64, failures: &mut Failures) {
    let name = case.op.name();
    let want = (case.value)(a, b);
    let (want_a, want_b) = ((case.d_a)(a, b), (case.d_b)(a, b));

    // Var with Var.
    {
        let g = Graph::new();
        let (va, vb) = (g.var(a), g.var(b));
        let y = (case.var_var)(va, vb);
        let what = format!("Var({a}) {name} Var({b})");
        if y.op() != Op::Binary(case.op) {
            failures.0.push(format!("{what}: recorded {}", y.op()));
        }
        failures.close(&format!("{what} value"), y.value(), want, VALUE_TOL);
        let grads = y.backward();
        failures.close(&format!("{what} d/da"), grads[va], want_a, CLOSED_FORM_TOL);
        failures.close(&format!("{what} d/db"), grads[vb], want_b, CLOSED_FORM_TOL);
        let fd_a = central_diff(
            |t| {
                let g = Graph::new();
                (case.var_var)(g.var(t), g.var(b)).value()
            },
            a,
        );
        let fd_b = central_diff(
            |t| {
                let g = Graph::new();
                (case.var_var)(g.var(a), g.var(t)).value()
            },
            b,
        );
        failures.close_fd(&format!("{what} d/da"), grads[va], &fd_a);
        failures.close_fd(&format!("{what} d/db"), grads[vb], &fd_b);
    }

    // Var with f64: the constant is an untracked operand, not a node.
    {
        let g = Graph::new();
        let va = g.var(a);
        let y = (case.var_const)(va, b);
        let what = format!("Var({a}) {name} {b}_f64");
        if g.len() != 2 {
            failures.0.push(format!(
                "{what}: {} nodes, want 2 (no constant node)",
                g.len()
            ));
        }
        failures.close(&format!("{what} value"), y.value(), want, VALUE_TOL);
        let ad = y.backward()[va];
        failures.close(&format!("{what} d/da"), ad, want_a, CLOSED_FORM_TOL);
        let fd = central_diff(
            |t| {
                let g = Graph::new();
                (case.var_const)(g.var(t), b).value()
            },
            a,
        );
        failures.close_fd(&format!("{what} d/da"), ad, &fd);
    }

    // f64 with Var.
    {
        let g = Graph::new();
        let vb = g.var(b);
        let y = (case.const_var)(a, vb);
        let what = format!("{a}_f64 {name} Var({b})");
        if g.len() != 2 {
            failures.0.push(format!(
                "{what}: {} nodes, want 2 (no constant node)",
                g.len()
            ));
        }
        failures.close(&format!("{what} value"), y.value(), want, VALUE_TOL);
        let ad = y.backward()[vb];
        failures.close(&format!("{what} d/db"), ad, want_b, CLOSED_FORM_TOL);
        let fd = central_diff(
            |t| {
                let g = Graph::new();
                (case.const_var)(a, g.var(t)).value()
            },
            b,
        );
        failures.close_fd(&format!("{what} d/db"), ad, &fd);
    }
}

#[test]
fn every_binary_op_has_a_row() {
    let table = binary_table();
    for op in Binary::ALL {
        // powi's exponent is always an integer constant: it has its own table below.
        let rows = table.iter().filter(|c| c.op == *op).count();
        let want = usize::from(*op != Binary::Powi);
        assert_eq!(rows, want, "binary op {} has {rows} rows", op.name());
    }
    let g = Graph::new();
    assert_eq!(g.var(2.0).powi(3).op(), Op::Binary(Binary::Powi));
}

#[test]
fn binary_ops_in_every_operand_combination() {
    let mut failures = Failures::default();
    for case in &binary_table() {
        for &(a, b) in case.points {
            check_binary(case, a, b, &mut failures);
        }
    }
    failures.check();
}

/// The compound assignments record the same op as the operator: checked on the closed
/// forms at one point, for both right-hand-side kinds.
#[test]
fn compound_assignment_records_the_operator() {
    let (a, b) = (1.5, -2.5);
    let g = Graph::new();
    let (va, vb) = (g.var(a), g.var(b));

    let mut y = va;
    y += vb; // a + b
    y -= 0.5; // a + b - 0.5
    y *= vb; // (a + b - 0.5) b
    y /= 4.0; // (a + b - 0.5) b / 4
    // d/da = b/4;  d/db = (a + 2b - 0.5) / 4
    assert_eq!(y.value(), (a + b - 0.5) * b / 4.0);
    let grads = y.backward();
    assert_eq!(grads[va], b / 4.0);
    assert_eq!(grads[vb], (a + 2.0 * b - 0.5) / 4.0);

    let mut z = va;
    z -= vb; // a - b
    z += 2.0; // a - b + 2
    z /= vb; // (a - b + 2) / b
    z *= 3.0; // 3 (a - b + 2) / b
    // d/da = 3/b;  d/db = 3 (-b - (a - b + 2)) / b^2 = -3 (a + 2) / b^2
    approx::assert_relative_eq!(z.value(), 3.0 * (a - b + 2.0) / b, max_relative = 1e-15);
    let grads = z.backward();
    approx::assert_relative_eq!(grads[va], 3.0 / b, max_relative = 1e-15);
    approx::assert_relative_eq!(grads[vb], -3.0 * (a + 2.0) / (b * b), max_relative = 1e-15);
}

// ---------------------------------------------------------------------------------------
// powi: the exponent is an integer constant
// ---------------------------------------------------------------------------------------

#[test]
fn powi_for_several_exponents() {
    let mut failures = Failures::default();
    for n in [0, 1, 2, 3, 7, -1, -2, -3] {
        for x in [-1.5, 0.5, 2.0, 1e-3] {
            let g = Graph::new();
            let v = g.var(x);
            let y = v.powi(n);
            let what = format!("({x})^{n}");
            failures.close(&format!("{what} value"), y.value(), x.powf(n.into()), 1e-14);
            // d x^n = n x^(n-1); the constant x^0 = 1 has derivative 0.
            let want = if n == 0 {
                0.0
            } else {
                f64::from(n) * x.powf(f64::from(n - 1))
            };
            let ad = y.backward()[v];
            failures.close(&format!("{what} d/dx"), ad, want, CLOSED_FORM_TOL);
            let fd = central_diff(
                |t| {
                    let g = Graph::new();
                    g.var(t).powi(n).value()
                },
                x,
            );
            failures.close_fd(&format!("{what} d/dx"), ad, &fd);
        }
    }
    failures.check();
}

/// At 0: d x^0 = 0 (x^0 is the constant 1, and 0^0 = 1), d x^1 = 1, d x^n = 0 for n > 1,
/// d x^-1 = -1/x^2 = -inf. `n x^(n-1)` evaluated literally at n = 0 is 0 * inf = NaN.
#[test]
fn powi_at_zero() {
    let cases = [
        (0, 0.0),
        (1, 1.0),
        (2, 0.0),
        (3, 0.0),
        (-1, f64::NEG_INFINITY),
    ];
    for (n, want) in cases {
        let g = Graph::new();
        let x = g.var(0.0);
        let y = x.powi(n);
        assert_eq!(y.value(), 0f64.powi(n), "0^{n}");
        assert_eq!(y.backward()[x], want, "d x^{n} at 0");
        // The differentiable backward uses the same rule.
        assert_eq!(y.grad(&[x])[0].value(), want, "grad of x^{n} at 0");
    }
}

/// The most negative exponent: d x^n = n x^(n-1), where n - 1 = -2147483649 does not fit an
/// i32. At x = 1 that is n exactly; at x = -1 it is n (-1)^(n-1) = -n, since n - 1 is odd.
#[test]
fn powi_at_the_most_negative_exponent() {
    let n = i32::MIN;
    for (at, want) in [(1.0, f64::from(n)), (-1.0, -f64::from(n))] {
        let g = Graph::new();
        let x = g.var(at);
        let y = x.powi(n);
        assert_eq!(y.backward()[x], want, "d x^{n} at {at}");
        assert_eq!(y.grad(&[x])[0].value(), want, "grad of x^{n} at {at}");
    }
}

// ---------------------------------------------------------------------------------------
// powf edges
// ---------------------------------------------------------------------------------------

/// Base 0, variable base: d x^p = p x^(p-1) at 0 is 0 for p > 1, 1 for p = 1, +inf for
/// 0 < p < 1, and 0 for p = 0 (x^0 is the constant 1).
#[test]
fn powf_variable_base_at_zero() {
    let cases = [(2.0, 0.0), (1.0, 1.0), (0.5, f64::INFINITY), (0.0, 0.0)];
    for (p, want) in cases {
        let g = Graph::new();
        let x = g.var(0.0);
        let y = x.powf(p);
        assert_eq!(y.value(), 0f64.powf(p), "0^{p}");
        assert_eq!(y.backward()[x], want, "d x^{p} at x = 0");
        assert_eq!(y.grad(&[x])[0].value(), want, "grad of x^{p} at x = 0");
    }
}

/// Base 0, variable exponent: 0^p = 0 for every p > 0, so d/dp = 0 (the limit of
/// ln(a) a^p as a -> 0), not ln 0 * 0 = NaN.
#[test]
fn powf_variable_exponent_at_base_zero() {
    let g = Graph::new();
    let p = g.var(2.0);
    let y = tapegrad::powf(0.0, p);
    assert_eq!(y.value(), 0.0);
    assert_eq!(y.backward()[p], 0.0);

    let (x, p) = (g.var(0.0), g.var(2.0));
    let grads = x.powf(p).backward();
    assert_eq!((grads[x], grads[p]), (0.0, 0.0)); // 2 * 0^1 and the limit above
}

/// A negative base with an integer-valued constant exponent is differentiable in the
/// base: d x^3 = 3 x^2 = 12 at -2 (the exponent being a constant, ln(-2) never enters).
#[test]
fn powf_negative_base_constant_integer_exponent() {
    let g = Graph::new();
    let x = g.var(-2.0);
    let y = x.powf(3.0);
    assert_eq!(y.value(), -8.0);
    let ad = y.backward()[x];
    assert_eq!(ad, 12.0);
    let fd = central_diff(|t| Graph::new().var(t).powf(3.0).value(), -2.0);
    approx::assert_relative_eq!(ad, fd.slope, max_relative = FD_TOL);
}

/// The two derivatives a known Rust AD crate gets wrong, named on their own.
#[test]
fn two_over_x_is_minus_two_over_x_squared() {
    for x in [0.5, 3.0, -4.0] {
        let g = Graph::new();
        let v = g.var(x);
        // d(2/x)/dx = -2/x^2 (not -1/x, nor -1/x^2)
        approx::assert_relative_eq!(
            (2.0 / v).backward()[v],
            -2.0 / (x * x),
            max_relative = 1e-15
        );
    }
}

#[test]
fn two_to_the_x_is_ln2_times_two_to_the_x() {
    for x in [-1.5, 0.0, 3.0] {
        let g = Graph::new();
        let v = g.var(x);
        // d 2^x/dx = ln(2) 2^x
        let y = tapegrad::powf(2.0, v);
        approx::assert_relative_eq!(y.value(), 2f64.powf(x), max_relative = 1e-15);
        approx::assert_relative_eq!(
            y.backward()[v],
            2f64.ln() * 2f64.powf(x),
            max_relative = 1e-15
        );
    }
}

// ---------------------------------------------------------------------------------------
// Named edges (also rows of the tables above, spelled out where a reader looks for them)
// ---------------------------------------------------------------------------------------

#[test]
fn tanh_derivative_at_20_is_tiny_but_not_zero() {
    let g = Graph::new();
    let x = g.var(20.0);
    let d = x.tanh().backward()[x];
    // 1 / cosh^2(20) = 4 / (e^20 + e^-20)^2 ~ 1.7e-17; 1 - tanh^2(20) rounds to 0.
    assert!(d > 0.0);
    approx::assert_relative_eq!(
        d,
        4.0 / (20f64.exp() + (-20f64).exp()).powi(2),
        max_relative = 1e-14
    );
}

#[test]
fn sigmoid_derivative_at_plus_and_minus_40() {
    for x in [40.0, -40.0] {
        let g = Graph::new();
        let v = g.var(x);
        let d = v.sigmoid().backward()[v];
        // e^-|x| / (1 + e^-|x|)^2 ~ 4.25e-18 on both sides; y (1 - y) would be 0 at +40.
        let e = (-40f64).exp();
        assert!(d > 0.0);
        approx::assert_relative_eq!(d, e / (1.0 + e).powi(2), max_relative = 1e-14);
    }
}

#[test]
fn relu_and_abs_at_zero_and_below() {
    let g = Graph::new();
    let (zero, neg) = (g.var(0.0), g.var(-1.5));
    assert_eq!(zero.relu().backward()[zero], 0.0);
    assert_eq!(neg.relu().backward()[neg], 0.0);
    assert_eq!(neg.relu().value(), 0.0);
    assert_eq!(zero.abs().backward()[zero], 0.0);
    assert_eq!(neg.abs().backward()[neg], -1.0);
}

#[test]
fn ln_near_zero() {
    let g = Graph::new();
    let x = g.var(1e-8);
    let y = x.ln();
    assert_eq!(y.value(), 1e-8f64.ln());
    // d ln x = 1/x = 1e8
    approx::assert_relative_eq!(y.backward()[x], 1e8, max_relative = 1e-15);
}

// ---------------------------------------------------------------------------------------
// N-ary ops: sum, dot, logsumexp
// ---------------------------------------------------------------------------------------

/// Checks an n-ary recording against closed-form partials and central differences in
/// each input.
fn check_nary(
    what: &str,
    xs: &[f64],
    record: &dyn for<'g> Fn(&'g Graph, &[Var<'g>]) -> Var<'g>,
    value: f64,
    partials: &[f64],
    failures: &mut Failures,
) {
    let g = Graph::new();
    let vars = g.vars(xs);
    let y = record(&g, &vars);
    failures.close(&format!("{what} value"), y.value(), value, VALUE_TOL);
    let grads = y.backward();
    for (k, &want) in partials.iter().enumerate() {
        let ad = grads[vars[k]];
        failures.close(&format!("{what} d/dx{k}"), ad, want, CLOSED_FORM_TOL);
        let fd = central_diff(
            |t| {
                let g = Graph::new();
                let mut moved = xs.to_vec();
                moved[k] = t;
                record(&g, &g.vars(&moved)).value()
            },
            xs[k],
        );
        failures.close_fd(&format!("{what} d/dx{k}"), ad, &fd);
    }
}

#[test]
fn sum_of_vars() {
    let mut failures = Failures::default();
    let xs = [1.5, -2.0, 0.25, 3.0];
    // d(sum x)/dx_k = 1
    check_nary(
        "sum",
        &xs,
        &|g, v| g.sum(v.iter().copied()),
        xs.iter().sum(),
        &[1.0; 4],
        &mut failures,
    );
    // Terms made on the fly: sum_k x_k^2, d/dx_k = 2 x_k.
    check_nary(
        "sum of squares",
        &xs,
        &|g, v| g.sum(v.iter().map(|x| x.powi(2))),
        xs.iter().map(|x| x * x).sum(),
        &xs.map(|x| 2.0 * x),
        &mut failures,
    );
    failures.check();

    let g = Graph::new();
    let x = g.var(2.0);
    let s = g.sum([]);
    assert_eq!(s.value(), 0.0, "the empty sum is 0");
    assert_eq!(s.op(), Op::Nary(Nary::Sum));
    assert_eq!(s.backward()[x], 0.0);
    // One term repeated: sum(x, x, x) = 3x.
    assert_eq!(g.sum([x, x, x]).backward()[x], 3.0);
}

#[test]
fn dot_in_every_operand_combination() {
    let mut failures = Failures::default();
    let a = [1.5, -2.0, 0.5];
    let b = [3.0, 0.25, -4.0];
    let value: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    // Var . Var over [a, b]: d/da_i = b_i, d/db_i = a_i.
    let ab = [a, b].concat();
    let partials = [b, a].concat();
    check_nary(
        "Var.Var dot",
        &ab,
        &|g, v| g.dot(&v[..3], &v[3..]),
        value,
        &partials,
        &mut failures,
    );
    // Var . f64: d/da_i = b_i.
    check_nary(
        "Var.f64 dot",
        &a,
        &|g, v| g.dot(v, &b),
        value,
        &b,
        &mut failures,
    );
    // f64 . Var: d/db_i = a_i.
    check_nary(
        "f64.Var dot",
        &b,
        &|g, v| g.dot(&a, v),
        value,
        &a,
        &mut failures,
    );
    failures.check();

    // A Var on both sides at once: x . x = |x|^2, d/dx_i = 2 x_i.
    let g = Graph::new();
    let x = g.vars(&a);
    let y = g.dot(&x, &x);
    assert_eq!(y.op(), Op::Nary(Nary::Dot));
    assert_eq!(y.backward().wrt_all(&x), a.map(|v| 2.0 * v).to_vec());
    // The f64 side records no nodes: 3 inputs + 1 dot.
    let h = Graph::new();
    let w = h.vars(&a);
    let _ = h.dot(&w, &b);
    assert_eq!(h.len(), 4);
}

#[test]
fn logsumexp_value_and_softmax_gradient() {
    let mut failures = Failures::default();
    // y = ln sum_j e^x_j; dy/dx_k = e^x_k / sum_j e^x_j (the softmax).
    for xs in [
        vec![0.5_f64, -1.0, 2.0],
        vec![3.0],
        vec![-2.0, -2.0, -2.0, -2.0],
        vec![10.0, -10.0],
    ] {
        let total: f64 = xs.iter().map(|x| x.exp()).sum();
        let softmax: Vec<f64> = xs.iter().map(|x| x.exp() / total).collect();
        check_nary(
            &format!("logsumexp{xs:?}"),
            &xs,
            &|g, v| g.logsumexp(v.iter().copied()),
            total.ln(),
            &softmax,
            &mut failures,
        );
    }
    failures.check();

    // Large inputs: e^1000 overflows, the fused node does not.
    // ln(e^1000 + e^1000) = 1000 + ln 2; softmax = [1/2, 1/2].
    let g = Graph::new();
    let xs = g.vars(&[1000.0, 1000.0]);
    let y = g.logsumexp(xs.iter().copied());
    approx::assert_relative_eq!(y.value(), 1000.0 + 2f64.ln(), max_relative = 1e-15);
    assert_eq!(y.backward().wrt_all(&xs), vec![0.5, 0.5]);
    // ln(e^-1000 + e^0) = ln(1 + e^-1000) = 0 to double precision; softmax = [e^-1000, 1].
    let zs = g.vars(&[-1000.0, 0.0]);
    let y = g.logsumexp(zs.iter().copied());
    assert_eq!(y.value(), 0.0);
    assert_eq!(y.backward().wrt_all(&zs), vec![0.0, 1.0]);
}

// ---------------------------------------------------------------------------------------
// The elementary functions' named edges
// ---------------------------------------------------------------------------------------

/// `ln(1 + e^x)` written out overflows past 709; softplus does not, and its derivative,
/// the sigmoid, is exact at both ends. Expected values: CPython 3.11,
/// `800 + log1p(exp(-800))` = 800 and `log1p(exp(-30))` = 9.357622968839737e-14.
#[test]
fn softplus_does_not_overflow() {
    let g = Graph::new();
    let (big, small) = (g.var(800.0), g.var(-30.0));
    assert!(
        (1.0 + 800f64.exp()).ln().is_infinite(),
        "the naive form overflows"
    );
    let y = big.softplus();
    assert_eq!(y.value(), 800.0);
    assert_eq!(y.backward()[big], 1.0);
    let z = small.softplus();
    approx::assert_relative_eq!(z.value(), 9.357622968839737e-14, max_relative = 1e-15);
    // sigmoid(-30) = e^-30 / (1 + e^-30)
    let e = (-30f64).exp();
    approx::assert_relative_eq!(z.backward()[small], e / (1.0 + e), max_relative = 1e-15);
    assert_eq!(g.var(-800.0).softplus().value(), 0.0);
    assert!(g.var(f64::NAN).softplus().value().is_nan());
}

/// erfc keeps its precision where erf rounds to 1 (CPython's `math.erfc(10)`).
#[test]
fn erfc_far_out() {
    let g = Graph::new();
    let x = g.var(10.0);
    approx::assert_relative_eq!(x.erfc().value(), erfc_reference(10.0), max_relative = 1e-14);
    assert_eq!(x.erf().value(), 1.0);
    // d erfc = -2/sqrt(pi) e^-100
    approx::assert_relative_eq!(
        x.erfc().backward()[x],
        -2.0 / PI.sqrt() * (-100f64).exp(),
        max_relative = 1e-14
    );
}

/// At ±1 asin's and acos's derivatives are infinite; cbrt's is infinite at 0; acosh's at 1
/// (`1 / sqrt(x^2 - 1)` = `1 / 0`) and atanh's at ±1 (`1 / (1 - x^2)` = `1 / 0`, where its
/// value is ±inf). Both sweeps give the same infinity.
#[test]
fn infinite_derivatives_at_domain_edges() {
    let g = Graph::new();
    let (one, minus_one, zero) = (g.var(1.0), g.var(-1.0), g.var(0.0));
    assert_eq!(one.asin().backward()[one], f64::INFINITY);
    assert_eq!(one.acos().backward()[one], f64::NEG_INFINITY);
    assert_eq!(zero.cbrt().backward()[zero], f64::INFINITY);
    let inf = f64::INFINITY;
    let cases = [
        ("acosh(1)", one.acosh(), one, 0.0, inf),
        ("atanh(1)", one.atanh(), one, inf, inf),
        ("atanh(-1)", minus_one.atanh(), minus_one, -inf, inf),
    ];
    for (name, y, x, value, slope) in cases {
        assert_eq!(y.value(), value, "{name}");
        assert_eq!(y.backward()[x], slope, "{name}'");
        assert_eq!(y.grad(&[x])[0].value(), slope, "{name}' by grad");
    }
}

/// The inverse hyperbolic functions where a naive derivative loses it, and outside their
/// domains. Far out, `1 / sqrt(x^2 + 1)` (asinh) and `1 / sqrt(x^2 - 1)` (acosh) square
/// past the largest `f64` and give 0; the rows use `hypot` and two roots, and give about
/// `1 / |x|`. Next to 1, acosh's `x^2 - 1` cancels; `(x - 1)(x + 1)` does not. Outside the
/// domain the value is NaN and the derivative is PyTorch's formula's (`derivatives.yaml`:
/// acosh `grad * (self.pow(2) - 1).rsqrt()`, NaN below 1; atanh `grad * 1 / (1 - self.pow(2))`,
/// finite past 1).
#[test]
fn inverse_hyperbolic_functions_far_out_next_to_one_and_outside_their_domains() {
    let slope = |x: f64, f: for<'g> fn(Var<'g>) -> Var<'g>| {
        let g = Graph::new();
        let v = g.var(x);
        let y = f(v);
        (y.value(), y.backward()[v])
    };
    // d asinh x = 1 / sqrt(x^2 + 1) = 1 / (|x| sqrt(1 + x^-2)), which is 1 / |x| to double
    // precision at |x| = 1e300 (and so acosh's).
    assert!(
        (1.0 / (1e300f64 * 1e300 + 1.0).sqrt()) == 0.0,
        "the naive form underflows"
    );
    for x in [1e300, -1e300] {
        approx::assert_relative_eq!(slope(x, |v| v.asinh()).1, 1e-300, max_relative = 1e-15);
    }
    approx::assert_relative_eq!(slope(1e300, |v| v.acosh()).1, 1e-300, max_relative = 1e-15);
    // x = 1 + e with e = x - 1 exact: x^2 - 1 = e (2 + e), where x * x - 1 has lost 8e-10
    // of it (the rounding of x * x, against a difference of 7e-9).
    let x: f64 = 1.0 + 3.3333333333333e-9;
    let e = x - 1.0;
    let closed = 1.0 / (e * (2.0 + e)).sqrt();
    let naive = 1.0 / (x * x - 1.0).sqrt();
    assert!(
        (naive - closed).abs() > 1e-10 * closed,
        "the naive form cancels"
    );
    approx::assert_relative_eq!(slope(x, |v| v.acosh()).1, closed, max_relative = 1e-15);
    // Outside: acosh below 1, atanh past ±1.
    let (value, d) = slope(0.5, |v| v.acosh());
    assert!(value.is_nan() && d.is_nan());
    for (x, want) in [(1.5, 1.0 / (1.0 - 2.25)), (-3.0, 1.0 / (1.0 - 9.0))] {
        let (value, d) = slope(x, |v| v.atanh());
        assert!(value.is_nan());
        approx::assert_relative_eq!(d, want, max_relative = 1e-15);
    }
}

/// `xlogy` where `x = 0`, as PyTorch defines it: `torch.xlogy`'s docs give 0 where `x = 0`
/// and NaN where `y` is NaN; `derivatives.yaml` gives `d/dx = xlogy(grad, y)`, set to 0
/// where `x = 0` and `y <= 0` (the directional derivative along `x = 0`, PyTorch issue
/// 80770, where `x ln y` is not differentiable), and `d/dy = grad * x / y` (NaN at
/// `x = y = 0`). Checked with both variables, with an `f64` on either side, by both sweeps
/// and in forward mode.
#[test]
fn xlogy_at_x_zero_follows_pytorch() {
    let (nan, inf) = (f64::NAN, f64::INFINITY);
    // (x, y, value, d/dx, d/dy)
    let cases = [
        (0.0, 0.0, 0.0, 0.0, nan),
        (0.0, -1.0, 0.0, 0.0, 0.0),
        (-0.0, -2.5, 0.0, 0.0, 0.0),
        (0.0, nan, nan, nan, nan),
        (0.0, -inf, 0.0, 0.0, 0.0),
        // x != 0: x ln y, d/dx = ln y, d/dy = x / y.
        (2.0, 0.0, -inf, -inf, inf),
        (-2.0, 0.0, inf, -inf, -inf),
        (2.0, -1.0, nan, nan, -2.0),
        (1.5, inf, inf, inf, 0.0),
    ];
    // Equal as numbers (a zero's sign aside), or both NaN.
    let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
    for (x0, y0, value, d_x, d_y) in cases {
        let what = format!("xlogy({x0}, {y0})");
        let g = Graph::new();
        let (x, y) = (g.var(x0), g.var(y0));
        for (form, z, wrt) in [
            ("Var, Var", x.xlogy(y), vec![(x, d_x), (y, d_y)]),
            ("Var, f64", x.xlogy(y0), vec![(x, d_x)]),
            ("f64, Var", tapegrad::xlogy(x0, y), vec![(y, d_y)]),
        ] {
            assert!(
                same(z.value(), value),
                "{what} ({form}): value {}",
                z.value()
            );
            let grads = z.backward();
            for (v, want) in wrt {
                let by_grad = z.grad(&[v])[0].value();
                assert!(
                    same(grads[v], want),
                    "{what} ({form}): {:e}, want {want:e}",
                    grads[v]
                );
                assert!(same(by_grad, want), "{what} ({form}) by grad: {by_grad:e}");
            }
        }
        let fwd = tapegrad::Scalar::xlogy(
            tapegrad::Dual::<2>::unit(x0, 0),
            tapegrad::Dual::unit(y0, 1),
        );
        assert!(same(fwd.value, value), "{what} forward value");
        assert!(
            same(fwd.tangents[0], d_x) && same(fwd.tangents[1], d_y),
            "{what} forward: {:?}",
            fwd.tangents
        );
    }
}

/// Where `y > 0`, `x ln y` is smooth in `x` through 0, and PyTorch's derivative there is
/// `ln y` (with a symmetric Hessian, `d2/dx dy = 1 / y`).
#[test]
fn xlogy_derivative_in_x_at_zero_is_ln_y_where_y_is_positive() {
    for y0 in [2.0, 0.5, f64::INFINITY] {
        let g = Graph::new();
        let (x, y) = (g.var(0.0), g.var(y0));
        let grads = x.xlogy(y).backward();
        assert_eq!(grads[x], y0.ln(), "d/dx xlogy(0, {y0})");
        assert_eq!(x.xlogy(y0).backward()[x], y0.ln());
        let fd = central_diff(|t| Graph::new().var(t).xlogy(y0).value(), 0.0);
        if y0.is_finite() {
            approx::assert_relative_eq!(fd.slope, y0.ln(), max_relative = FD_TOL);
            let h = tapegrad::higher::hessian(x.xlogy(y), &[x, y]);
            assert_eq!((h[0][1], h[1][0]), (1.0 / y0, 1.0 / y0), "H at (0, {y0})");
        }
    }
}

/// The kink convention (documented in the guide, `tapegrad::guide#kinks`), PyTorch's at every kink:
/// `maximum`/`minimum` split a tie 1/2 and 1/2, `amax` shares it evenly among ties,
/// `clamp` has slope 0 at both ends, `relu'(0) = abs'(0) = 0`. Checked by both
/// sweeps.
#[test]
fn kinks_follow_pytorch() {
    let g = Graph::new();
    let (a, b) = (g.var(1.5), g.var(1.5));
    for (name, y) in [("max", a.max(b)), ("min", a.min(b))] {
        let grads = y.backward();
        assert_eq!((grads[a], grads[b]), (0.5, 0.5), "{name} at a tie");
        let second = y.grad(&[a, b]);
        assert_eq!(
            (second[0].value(), second[1].value()),
            (0.5, 0.5),
            "{name} by grad"
        );
    }
    // A constant operand at a tie: the Var gets its half.
    assert_eq!(a.max(1.5).backward()[a], 0.5);
    assert_eq!(tapegrad::min(1.5, a).backward()[a], 0.5);
    // The same node on both sides: max(x, x) = x, slope 1/2 + 1/2.
    assert_eq!(a.max(a).backward()[a], 1.0);

    // amax: three tied of four.
    let xs = g.vars(&[2.0, 2.0, -1.0, 2.0]);
    let m = g.amax(xs.iter().copied());
    let third = 1.0 / 3.0;
    assert_eq!(m.backward().wrt_all(&xs), vec![third, third, 0.0, third]);
    let by_grad: Vec<f64> = m.grad(&xs).iter().map(|v| v.value()).collect();
    assert_eq!(by_grad, vec![third, third, 0.0, third]);

    // clamp: 1 strictly inside, 0 at both ends (PyTorch 2.15) and outside.
    for (x, want) in [
        (-1.0, 0.0),
        (1.0, 0.0),
        (0.25, 1.0),
        (-1.5, 0.0),
        (3.0, 0.0),
    ] {
        let v = g.var(x);
        let y = v.clamp(-1.0, 1.0);
        assert_eq!(y.value(), x.clamp(-1.0, 1.0));
        assert_eq!(y.backward()[v], want, "clamp'({x})");
        assert_eq!(y.grad(&[v])[0].value(), want, "clamp'({x}) by grad");
    }

    let zero = g.var(0.0);
    assert_eq!(zero.relu().backward()[zero], 0.0);
    assert_eq!(zero.abs().backward()[zero], 0.0);
}

/// NaN is never dropped by max, min, amax or clamp (`f64::max` would drop it).
#[test]
fn nan_propagates_through_the_kinks() {
    let g = Graph::new();
    let (nan, one) = (g.var(f64::NAN), g.var(1.0));
    assert!(nan.max(one).value().is_nan());
    assert!(one.min(nan).value().is_nan());
    assert!(nan.clamp(0.0, 1.0).value().is_nan());
    let m = g.amax([one, nan]);
    assert!(m.value().is_nan());
    // PyTorch: amax's gradient at a NaN maximum is NaN for every operand.
    assert!(m.backward()[one].is_nan());
    // max: every comparison with NaN is false, so the slope is 1 for each operand.
    let grads = nan.max(one).backward();
    assert_eq!(grads[one], 1.0);
}

#[test]
fn clamp_rejects_bad_bounds() {
    let g = Graph::new();
    let x = g.var(0.0);
    let err = x.try_clamp(1.0, -1.0).unwrap_err();
    assert!(err.to_string().contains("lo <= hi"), "{err}");
    assert!(x.try_clamp(f64::NAN, 1.0).is_err());
    assert!(g.try_amax([]).is_err());
}

#[test]
fn amax_and_clamp_against_closed_form_and_central_difference() {
    let mut failures = Failures::default();
    // amax: d/dx_k = 1 for the (single) largest, 0 for the others.
    let xs = [0.5, -1.0, 2.0, 1.5];
    check_nary(
        "amax",
        &xs,
        &|g, v| g.amax(v.iter().copied()),
        2.0,
        &[0.0, 0.0, 1.0, 0.0],
        &mut failures,
    );
    // clamp inside and outside the interval.
    for (x, slope) in [(0.3, 1.0), (-2.0, 0.0), (5.0, 0.0)] {
        check_nary(
            &format!("clamp({x})"),
            &[x],
            &|_, v| v[0].clamp(-1.0, 1.0),
            x.clamp(-1.0, 1.0),
            &[slope],
            &mut failures,
        );
    }
    // A softmax shifted by its amax has the unshifted softmax's gradient: the shift's
    // derivative cancels. d/dx_j of s_0 = e^(x_0 - m) / sum e^(x_i - m) is s_0 (d_0j - s_j).
    let total: f64 = xs.iter().map(|x| x.exp()).sum();
    let s: Vec<f64> = xs.iter().map(|x| x.exp() / total).collect();
    let want: Vec<f64> = (0..4)
        .map(|j| s[0] * (f64::from(u8::from(j == 0)) - s[j]))
        .collect();
    check_nary(
        "shifted softmax",
        &xs,
        &|g, v| {
            let m = g.amax(v.iter().copied());
            let e: Vec<Var<'_>> = v.iter().map(|&x| (x - m).exp()).collect();
            e[0] / g.sum(e.iter().copied())
        },
        s[0],
        &want,
        &mut failures,
    );
    failures.check();
}

/// `Nary::Dot` over an odd number of operands has no pairing: refused, not truncated.
#[test]
#[should_panic(expected = "Nary::Dot needs an even number of operands")]
fn dot_value_refuses_an_odd_operand_count() {
    tapegrad::Nary::Dot.value(&[1.0, 2.0, 3.0]);
}

/// `powi` within 1 ulp of the true power `x^n` (correctly rounded, from mpmath at 60
/// digits: `tools/reference/powi_mpmath.py`) and of `powf` of the same exponent, for every
/// exponent up to `i32::MAX`: `f64::powi`'s repeated squaring is 1.7e-7 relative off at
/// `i32::MAX`. Through `Var::powi`, its derivative `n x^(n-1)`, and `Scalar::powi` on `f64`.
#[test]
fn powi_is_within_an_ulp_of_the_true_power_for_every_exponent() {
    let rows: &[(f64, i32, f64)] = &[
        (1.000000001, 2147483647, 8.56328453237305),
        (1.000000001, -2147483648, 0.11677762139276725),
        (1.000000001, -2147483647, 0.11677762150954488),
        (1.000000001, 1000003, 1.0010005032520328),
        (1.000000001, 1048576, 1.0010491260343437),
        (1.000000001, 64, 1.0000000640000073),
        (1.000000001, -64, 0.9999999359999968),
        (1.000000001, 5, 1.0000000050000004),
        (1.000000001, 4, 1.0000000040000003),
        (1.000000001, 3, 1.0000000030000002),
        (1.000000001, 2, 1.0000000020000002),
        (1.000000001, -2, 0.9999999979999998),
        (1.000000001, -3, 0.9999999969999998),
        (0.999999999, 2147483647, 0.11677764910072466),
        (0.999999999, -2147483648, 8.563282517679957),
        (0.999999999, -2147483647, 8.563282509116673),
        (0.999999999, 1000003, 0.9990004968641277),
        (0.999999999, 1048576, 0.9989519735928116),
        (0.999999999, 64, 0.9999999360000038),
        (0.999999999, -64, 1.0000000640000002),
        (0.999999999, 5, 0.9999999950000001),
        (0.999999999, 4, 0.9999999960000001),
        (0.999999999, 3, 0.9999999970000001),
        (0.999999999, 2, 0.9999999980000001),
        (0.999999999, -2, 1.000000002),
        (0.999999999, -3, 1.000000003),
        (1.0000001, 2147483647, 1.8366448196907325e+93),
        (1.0000001, -2147483648, 5.444710317852295e-94),
        (1.0000001, -2147483647, 5.444710862323328e-94),
        (1.0000001, 1000003, 1.1051712441656278),
        (1.0000001, 1048576, 1.110552450671116),
        (1.0000001, 64, 1.0000064000201638),
        (1.0000001, -64, 0.9999936000207962),
        (1.0000001, 5, 1.0000005000001002),
        (1.0000001, 4, 1.0000004000000602),
        (1.0000001, 3, 1.0000003000000302),
        (1.0000001, 2, 1.00000020000001),
        (1.0000001, -2, 0.9999998000000299),
        (1.0000001, -3, 0.9999997000000598),
        (-1.0000000001, 2147483647, -1.239549965208056),
        (-1.0000000001, -2147483648, 0.8067444056054264),
        (-1.0000000001, -2147483647, -0.8067444056861007),
        (-1.0000000001, 1000003, -1.0001000053084665),
        (-1.0000000001, 1048576, 1.000104863106422),
        (-1.0000000001, 64, 1.0000000064000005),
        (-1.0000000001, -64, 0.9999999935999995),
        (-1.0000000001, 5, -1.0000000005),
        (-1.0000000001, 4, 1.0000000004),
        (-1.0000000001, 3, -1.0000000003),
        (-1.0000000001, 2, 1.0000000002),
        (-1.0000000001, -2, 0.9999999998),
        (-1.0000000001, -3, -0.9999999997),
        (3.0, 64, 3.4336838202925124e+30),
        (3.0, -64, 2.912324058756263e-31),
        (3.0, 5, 243.0),
        (3.0, 4, 81.0),
        (3.0, 3, 27.0),
        (3.0, 2, 9.0),
        (3.0, -2, 0.1111111111111111),
        (3.0, -3, 0.037037037037037035),
        (1.5, 64, 186140372879.47342),
        (1.5, -64, 5.372289657158384e-12),
        (1.5, 5, 7.59375),
        (1.5, 4, 5.0625),
        (1.5, 3, 3.375),
        (1.5, 2, 2.25),
        (1.5, -2, 0.4444444444444444),
        (1.5, -3, 0.2962962962962963),
        (1.0000000000000002, 2147483647, 1.0000004768372717),
        (1.0000000000000002, -2147483648, 0.9999995231629555),
        (1.0000000000000002, -2147483647, 0.9999995231629557),
        (1.0000000000000002, 1000003, 1.0000000002220453),
        (1.0000000000000002, 1048576, 1.0000000002328306),
        (1.0000000000000002, 64, 1.0000000000000142),
        (1.0000000000000002, -64, 0.9999999999999858),
        (1.0000000000000002, 5, 1.000000000000001),
        (1.0000000000000002, 4, 1.0000000000000009),
        (1.0000000000000002, 3, 1.0000000000000007),
        (1.0000000000000002, 2, 1.0000000000000004),
        (1.0000000000000002, -2, 0.9999999999999996),
        (1.0000000000000002, -3, 0.9999999999999993),
        (-1.0000000000000002, 2147483647, -1.0000004768372717),
        (-1.0000000000000002, -2147483648, 0.9999995231629555),
        (-1.0000000000000002, -2147483647, -0.9999995231629557),
        (-1.0000000000000002, 1000003, -1.0000000002220453),
        (-1.0000000000000002, 1048576, 1.0000000002328306),
        (-1.0000000000000002, 64, 1.0000000000000142),
        (-1.0000000000000002, -64, 0.9999999999999858),
        (-1.0000000000000002, 5, -1.000000000000001),
        (-1.0000000000000002, 4, 1.0000000000000009),
        (-1.0000000000000002, 3, -1.0000000000000007),
        (-1.0000000000000002, 2, 1.0000000000000004),
        (-1.0000000000000002, -2, 0.9999999999999996),
        (-1.0000000000000002, -3, -0.9999999999999993),
    ];
    let ulps = |a: f64, b: f64| (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs();
    for &(x, n, want) in rows {
        let g = Graph::new();
        let v = g.var(x);
        let y = v.powi(n);
        assert!(
            ulps(y.value(), want) <= 1,
            "{x}^{n}: {:e} vs {want:e}",
            y.value()
        );
        assert!(
            ulps(y.value(), x.powf(f64::from(n))) <= 1,
            "{x}^{n} against powf"
        );
        assert!(
            ulps(tapegrad::Scalar::powi(x, n), want) <= 1,
            "{x}^{n} on f64"
        );
        // d/dx x^n = n x^(n-1), within an ulp of the product of n and the true power.
        if n != i32::MIN {
            let d = y.backward()[v];
            let want_d = f64::from(n) * x.powf(f64::from(n - 1));
            assert!(ulps(d, want_d) <= 2, "d/dx {x}^{n}: {d:e} vs {want_d:e}");
        }
    }
}
