//! The conventions table (the guide's "Kinks"): one test per row, each pinning the gradient
//! at the row's points against the number PyTorch 2.15.0 printed in float64
//! (`tools/reference/pytorch_conventions.py`), or, for the rows that are the crate's own, the
//! crate's number beside PyTorch's. Every row holds in every sweep: the plain backward,
//! `Var::grad`, a `Replay` recorded elsewhere, and forward mode (`Dual`), to the bit.

use tapegrad::{Dual, Graph, Replay, ReplayWorkspace, Scalar};

/// The functions of the table's rows.
#[derive(Clone, Copy, Debug)]
enum Row {
    Abs,
    Relu,
    Maximum,
    Minimum,
    Amax,
    Clamp(f64, f64),
    Atan2,
    Softplus,
    Cbrt,
}

fn eval<T: Scalar>(row: Row, x: &[T]) -> T {
    match row {
        Row::Abs => x[0].abs(),
        Row::Relu => x[0].relu(),
        Row::Maximum => x[0].max(x[1]),
        Row::Minimum => x[0].min(x[1]),
        Row::Amax => T::amax(x),
        Row::Clamp(lo, hi) => x[0].clamp(lo, hi),
        Row::Atan2 => x[0].atan2(x[1]),
        Row::Softplus => x[0].softplus(),
        Row::Cbrt => x[0].cbrt(),
    }
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// The value and gradient of `row` at `at`, the same bits from every sweep.
fn gradient(row: Row, at: &[f64]) -> (f64, Vec<f64>) {
    let g = Graph::new();
    let xs = g.vars(at);
    let y = eval(row, &xs);
    let plain = y.backward().wrt_all(&xs);
    let differentiable: Vec<f64> = y.grad(&xs).iter().map(|d| d.untracked_value()).collect();
    // A replay recorded at another point (where the branch inside the rule goes the other
    // way), evaluated here.
    let elsewhere: Vec<f64> = at.iter().map(|x| x + 0.75).collect();
    let h = Graph::new();
    let hs = h.vars(&elsewhere);
    let replay = Replay::new(eval(row, &hs), &hs);
    let mut replayed = vec![0.0; at.len()];
    let value = replay
        .gradient(at, &mut ReplayWorkspace::new(), &mut replayed)
        .unwrap();
    let forward: Vec<f64> = (0..at.len())
        .map(|i| {
            let duals: Vec<Dual> = at
                .iter()
                .enumerate()
                .map(|(j, &x)| Dual::new(x, [if i == j { 1.0 } else { 0.0 }]))
                .collect();
            eval(row, &duals).tangent()
        })
        .collect();
    for (route, got) in [
        ("Var::grad", &differentiable),
        ("Replay", &replayed),
        ("Dual", &forward),
    ] {
        assert!(
            got.iter().zip(&plain).all(|(a, b)| same(*a, *b)),
            "{row:?} at {at:?}: backward {plain:?}, {route} {got:?}"
        );
    }
    assert!(same(value, y.untracked_value()));
    (value, plain)
}

/// Asserts `row`'s gradient at `at` is `want`, bit for bit (signed zeros included).
#[track_caller]
fn pin(row: Row, at: &[f64], want: &[f64]) {
    let (_, got) = gradient(row, at);
    assert!(
        got.iter().zip(want).all(|(a, b)| same(*a, *b)),
        "{row:?} at {at:?}: tapegrad {got:?}, expected {want:?}"
    );
}

const NAN: f64 = f64::NAN;

/// `abs`: `0` at the kink, as PyTorch (`grad * self.sgn()`); NaN at NaN where PyTorch
/// gives 0 (a NaN must not turn into a gradient).
#[test]
fn abs_at_zero() {
    // PyTorch 2.15: abs'(0) = 0, abs'(-0) = 0, abs'(1.5) = 1, abs'(-1.5) = -1, abs'(NaN) = 0.
    pin(Row::Abs, &[0.0], &[0.0]);
    pin(Row::Abs, &[-0.0], &[0.0]);
    pin(Row::Abs, &[1.5], &[1.0]);
    pin(Row::Abs, &[-1.5], &[-1.0]);
    pin(Row::Abs, &[NAN], &[NAN]);
}

/// `relu`: `0` at the kink, as PyTorch; NaN at NaN where PyTorch gives 1.
#[test]
fn relu_at_zero() {
    // PyTorch 2.15: relu'(0) = 0, relu'(-0) = 0, relu'(1.5) = 1, relu'(-1.5) = 0,
    // relu'(NaN) = 1.
    pin(Row::Relu, &[0.0], &[0.0]);
    pin(Row::Relu, &[-0.0], &[0.0]);
    pin(Row::Relu, &[1.5], &[1.0]);
    pin(Row::Relu, &[-1.5], &[0.0]);
    pin(Row::Relu, &[NAN], &[NAN]);
}

/// `max` and `min`: half to each at a tie; slope 1 to both when one is NaN, as PyTorch's
/// `maximum` and `minimum`.
#[test]
fn max_and_min_at_a_tie() {
    // PyTorch 2.15: maximum(1, 1) -> [0.5, 0.5]; maximum(1, 2) -> [0, 1];
    // maximum(NaN, 1) -> [1, 1]; maximum(1, NaN) -> [1, 1]; minimum likewise.
    pin(Row::Maximum, &[1.0, 1.0], &[0.5, 0.5]);
    pin(Row::Maximum, &[1.0, 2.0], &[0.0, 1.0]);
    pin(Row::Maximum, &[NAN, 1.0], &[1.0, 1.0]);
    pin(Row::Maximum, &[1.0, NAN], &[1.0, 1.0]);
    pin(Row::Minimum, &[1.0, 1.0], &[0.5, 0.5]);
    pin(Row::Minimum, &[1.0, 2.0], &[1.0, 0.0]);
    pin(Row::Minimum, &[NAN, 1.0], &[1.0, 1.0]);
    pin(Row::Minimum, &[1.0, NAN], &[1.0, 1.0]);
}

/// `amax`: shared evenly among the operands tied at the maximum, as PyTorch.
#[test]
fn amax_at_a_tie() {
    // PyTorch 2.15: amax([1, 3, 3]) -> [0, 0.5, 0.5].
    pin(Row::Amax, &[1.0, 3.0, 3.0], &[0.0, 0.5, 0.5]);
}

/// `clamp`: slope 1 strictly inside, 0 at a bound and outside, 0 at NaN: PyTorch 2.15's
/// `clamp` with scalar bounds (the crate passed the gradient at the bounds before).
#[test]
fn clamp_at_a_bound() {
    // PyTorch 2.15: clamp(x, -1, 1)' at -1, 1, 0.5, -2, 2, NaN -> 0, 0, 1, 0, 0, 0;
    // clamp(1, 1, 1)' = 0; clamp(0, min = 0)' = 0.
    let inside = Row::Clamp(-1.0, 1.0);
    for (x, want) in [
        (-1.0, 0.0),
        (1.0, 0.0),
        (0.5, 1.0),
        (-2.0, 0.0),
        (2.0, 0.0),
        (NAN, 0.0),
    ] {
        pin(inside, &[x], &[want]);
    }
    pin(Row::Clamp(1.0, 1.0), &[1.0], &[0.0]);
    pin(Row::Clamp(0.0, f64::INFINITY), &[0.0], &[0.0]);
    // clamp(x, 0, inf) is relu, slope for slope.
    for x in [-1.0, 0.0, 2.0] {
        assert_eq!(
            gradient(Row::Clamp(0.0, f64::INFINITY), &[x]).1,
            gradient(Row::Relu, &[x]).1
        );
    }
}

/// `atan2` at the origin: PyTorch 2.15's zeros (the crate gave NaN before; PyTorch's are
/// signed, a gradient here is a sum from `+0`); where `a^2 + b^2` underflows, the true
/// slope, where PyTorch gives 0 (the crate's own).
#[test]
fn atan2_at_the_origin() {
    // PyTorch 2.15: atan2 at (0, 0) -> [0, -0]; (-0, 0) -> [0, 0]; (0, -0) -> [-0, -0];
    // (-0, -0) -> [-0, 0]; (0, 1) -> [1, -0]; (1e-300, 1e-300) -> [0, -0].
    for (at, torch) in [
        ([0.0, 0.0], [0.0, -0.0]),
        ([-0.0, 0.0], [0.0, 0.0]),
        ([0.0, -0.0], [-0.0, -0.0]),
        ([-0.0, -0.0], [-0.0, 0.0]),
        ([0.0, 1.0], [1.0, -0.0]),
    ] {
        let (_, d) = gradient(Row::Atan2, &at);
        assert_eq!(d, torch, "at {at:?}"); // as numbers: 0 == -0
        assert!(d.iter().all(|v| v.is_sign_positive()), "never -0: {d:?}");
    }
    // The crate's own: d/da = b / (a^2 + b^2) = 1 / (2e-300), not PyTorch's 0.
    let (_, d) = gradient(Row::Atan2, &[1e-300, 1e-300]);
    approx::assert_relative_eq!(d[0], 0.5e300, max_relative = 1e-15);
    approx::assert_relative_eq!(d[1], -0.5e300, max_relative = 1e-15);
    // The second derivative at the origin: 0 here (the zero slope is a constant).
    let g = Graph::new();
    let xs = g.vars(&[0.0, 0.0]);
    let h = tapegrad::higher::hessian(xs[0].atan2(xs[1]), &xs);
    assert!(h.iter().flatten().all(|&v| v == 0.0), "{h:?}");
}

/// `softplus`: the exact `ln(1 + e^x)` and `sigmoid(x)` past PyTorch's threshold (the
/// crate's own), equal to PyTorch's below it.
#[test]
fn softplus_past_pytorchs_threshold() {
    // PyTorch 2.15: softplus(19) = 19.000000005602796, slope 0.9999999943972036;
    // softplus(20) = 20.000000002061153, slope 0.9999999979388464;
    // softplus(25) = 25 and slope 1 (x > 20: the threshold); softplus(-20) =
    // 2.061153620314381e-09, slope 2.0611536181902033e-09.
    for (x, torch_value, torch_slope) in [
        (19.0, 19.000000005602796, 0.9999999943972036),
        (20.0, 20.000000002061153, 0.9999999979388464),
        (-20.0, 2.061153620314381e-09, 2.0611536181902033e-09),
    ] {
        let (value, d) = gradient(Row::Softplus, &[x]);
        approx::assert_relative_eq!(value, torch_value, max_relative = 1e-15);
        approx::assert_relative_eq!(d[0], torch_slope, max_relative = 1e-15);
    }
    for x in [20.5, 25.0, 40.0] {
        let (value, d) = gradient(Row::Softplus, &[x]);
        // ln(1 + e^x) = x + ln(1 + e^-x), slope 1 / (1 + e^-x): a hair off PyTorch's x, 1.
        let tail = (-x).exp();
        approx::assert_relative_eq!(value, x + tail.ln_1p(), max_relative = 1e-16);
        approx::assert_relative_eq!(d[0], 1.0 / (1.0 + tail), max_relative = 1e-16);
        assert!(value >= x && d[0] <= 1.0 && (1.0 - d[0]) < 2.1e-9);
        assert!(
            x > 30.0 || (value > x && d[0] < 1.0),
            "the exact form differs at {x}"
        );
    }
}

/// `cbrt` at 0: `+inf`, as PyTorch's `x.pow(1/3)` (PyTorch has no `cbrt`); defined for
/// negative `x` too.
#[test]
fn cbrt_at_zero() {
    // PyTorch 2.15: pow(x, 1/3)' at 0 and -0 -> inf; at 8 -> 0.08333333333333331.
    pin(Row::Cbrt, &[0.0], &[f64::INFINITY]);
    pin(Row::Cbrt, &[-0.0], &[f64::INFINITY]);
    let (_, d) = gradient(Row::Cbrt, &[8.0]);
    approx::assert_relative_eq!(d[0], 0.08333333333333331, max_relative = 1e-15);
    let (value, d) = gradient(Row::Cbrt, &[-8.0]);
    assert_eq!((value, d[0]), (-2.0, 1.0 / 12.0));
}
