//! Every op's second derivative, from the differentiable backward (`Var::grad` twice, or
//! `higher::hessian`), against its closed form and against central differences of the
//! tape's first derivative (`higher::gradgradcheck`), at several points, with `f64`
//! constants as operands on either side as well as `Var`s.

use std::f64::consts::LN_2;

use approx::assert_relative_eq;
use tapegrad::check::Tolerance;
use tapegrad::higher::{gradgradcheck, hessian};
use tapegrad::{Graph, Var, powf};

/// A function of one `Var`, as the tests tabulate them.
type Fn1 = for<'g> fn(Var<'g>) -> Var<'g>;

/// `(f'(x), f''(x), f'''(x))` by differentiating the tape's gradient twice more.
fn derivatives(f: Fn1, x: f64) -> (f64, f64, f64) {
    let g = Graph::new();
    let x = g.var(x);
    let d1 = f(x).grad(&[x])[0];
    let d2 = d1.grad(&[x])[0];
    let d3 = d2.grad(&[x])[0];
    (d1.value(), d2.value(), d3.value())
}

/// The tape's second derivative of `f` at each point matches `closed` and passes
/// `gradgradcheck` (central differences of the tape's first derivative).
#[track_caller]
fn check_second(name: &str, f: Fn1, closed: fn(f64) -> f64, points: &[f64]) {
    for &x in points {
        let (_, d2, _) = derivatives(f, x);
        assert_relative_eq!(d2, closed(x), max_relative = 1e-13, epsilon = 1e-15);
        let report = gradgradcheck(|_, v| f(v[0]), &[x], Tolerance::default());
        assert!(report.passed(), "{name} at {x}:\n{report}");
    }
}

#[test]
fn exp_second_derivative_is_exp() {
    // (e^x)'' = e^x
    check_second("exp", |x| x.exp(), f64::exp, &[-2.0, 0.3, 1.5]);
}

#[test]
fn ln_second_derivative_is_minus_inverse_square() {
    // (ln x)'' = -1 / x^2
    check_second("ln", |x| x.ln(), |x| -1.0 / (x * x), &[0.2, 1.0, 3.7]);
}

#[test]
fn sqrt_second_derivative() {
    // (x^(1/2))'' = -(1/4) x^(-3/2)
    check_second(
        "sqrt",
        |x| x.sqrt(),
        |x| -0.25 * x.powf(-1.5),
        &[0.3, 1.0, 4.5],
    );
}

#[test]
fn recip_second_derivative() {
    // (1/x)'' = 2 / x^3
    check_second(
        "recip",
        |x| x.recip(),
        |x| 2.0 / x.powi(3),
        &[-1.5, 0.4, 2.0],
    );
}

#[test]
fn sin_and_cos_second_derivatives() {
    // sin'' = -sin, cos'' = -cos
    check_second("sin", |x| x.sin(), |x| -x.sin(), &[-1.0, 0.5, 2.5]);
    check_second("cos", |x| x.cos(), |x| -x.cos(), &[-1.0, 0.5, 2.5]);
}

#[test]
fn tanh_second_derivative_keeps_precision_far_out() {
    // tanh'' = -2 tanh(x) sech^2(x). At x = 20 it is about -3.4e-17; the rule 1/cosh^2
    // keeps full relative precision there (1 - tanh^2 would give exactly 0).
    check_second(
        "tanh",
        |x| x.tanh(),
        |x| -2.0 * x.tanh() / x.cosh().powi(2),
        &[-1.2, 0.3, 2.0, 20.0],
    );
}

#[test]
fn sinh_and_cosh_second_derivatives() {
    // sinh'' = sinh, cosh'' = cosh
    check_second("sinh", |x| x.sinh(), f64::sinh, &[-1.3, 0.2, 2.2]);
    check_second("cosh", |x| x.cosh(), f64::cosh, &[-1.3, 0.2, 2.2]);
}

#[test]
fn sigmoid_second_derivative() {
    // s' = s (1 - s), so s'' = s' (1 - s) - s s' = s (1 - s) (1 - 2 s)
    fn s(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }
    check_second(
        "sigmoid",
        |x| x.sigmoid(),
        |x| s(x) * (1.0 - s(x)) * (1.0 - 2.0 * s(x)),
        &[-2.0, 0.1, 3.0],
    );
}

#[test]
fn gelu_second_derivative() {
    // f = x/2 (1 + tanh u), u = c (x + a x^3), c = sqrt(2/pi), a = 0.044715.
    // f'  = (1 + tanh u)/2 + x/2 sech^2(u) u'
    // f'' = sech^2(u) u' + x/2 sech^2(u) (u'' - 2 tanh(u) u'^2), u' = c (1 + 3a x^2), u'' = 6 a c x
    fn closed(x: f64) -> f64 {
        let c = (2.0 / std::f64::consts::PI).sqrt();
        let a = 0.044715;
        let u = c * (x + a * x.powi(3));
        let (du, ddu) = (c * (1.0 + 3.0 * a * x * x), 6.0 * a * c * x);
        let sech2 = 1.0 / u.cosh().powi(2);
        sech2 * du + 0.5 * x * sech2 * (ddu - 2.0 * u.tanh() * du * du)
    }
    check_second("gelu", |x| x.gelu(), closed, &[-1.5, 0.2, 1.1]);
}

#[test]
fn piecewise_linear_ops_have_zero_second_derivative() {
    // -x, |x| and relu(x) are linear on each side of 0.
    check_second("neg", |x| -x, |_| 0.0, &[-1.0, 2.0]);
    check_second("abs", |x| x.abs(), |_| 0.0, &[-1.0, 2.0]);
    check_second("relu", |x| x.relu(), |_| 0.0, &[-1.0, 2.0]);
}

#[test]
fn powi_second_derivative_for_every_kind_of_exponent() {
    // (x^n)'' = n (n - 1) x^(n - 2), including n = 0 and n = 1 (both 0) and negative n.
    let cases: [(i32, Fn1); 7] = [
        (-3, |x| x.powi(-3)),
        (-1, |x| x.powi(-1)),
        (0, |x| x.powi(0)),
        (1, |x| x.powi(1)),
        (2, |x| x.powi(2)),
        (3, |x| x.powi(3)),
        (5, |x| x.powi(5)),
    ];
    for (n, f) in cases {
        for x in [-1.3, 0.7, 2.1] {
            let (_, d2, _) = derivatives(f, x);
            let closed = f64::from(n * (n - 1)) * x.powi(n - 2);
            assert_relative_eq!(d2, closed, max_relative = 1e-13, epsilon = 1e-15);
            gradgradcheck(|_, v| f(v[0]), &[x], Tolerance::default()).assert_passed();
        }
    }
}

#[test]
fn powf_with_constant_exponent() {
    // (x^p)'' = p (p - 1) x^(p - 2)
    check_second("x^3.0", |x| x.powf(3.0), |x| 6.0 * x, &[0.5, 1.7]);
    check_second(
        "x^2.5",
        |x| x.powf(2.5),
        |x| 2.5 * 1.5 * x.powf(0.5),
        &[0.5, 1.7],
    );
    check_second(
        "x^-0.5",
        |x| x.powf(-0.5),
        |x| 0.75 * x.powf(-2.5),
        &[0.5, 1.7],
    );
}

#[test]
fn powf_with_constant_base() {
    // (b^x)'' = ln(b)^2 b^x, for a base above and below 1.
    check_second(
        "2^x",
        |x| powf(2.0, x),
        |x| LN_2 * LN_2 * 2f64.powf(x),
        &[-1.0, 0.5, 3.0],
    );
    check_second(
        "0.5^x",
        |x| powf(0.5, x),
        |x| LN_2 * LN_2 * 0.5f64.powf(x),
        &[-1.0, 0.5, 3.0],
    );
}

#[test]
fn powf_in_both_arguments_and_mixed() {
    // y = x^p: y_xx = p (p - 1) x^(p - 2), y_pp = ln(x)^2 x^p,
    // y_xp = d/dp (p x^(p - 1)) = x^(p - 1) (1 + p ln x).
    for (x, p) in [(0.6, 2.3), (1.8, -0.7), (2.5, 0.5)] {
        let g = Graph::new();
        let v = g.vars(&[x, p]);
        let h = hessian(v[0].powf(v[1]), &v);
        let ln = f64::ln(x);
        assert_relative_eq!(
            h[0][0],
            p * (p - 1.0) * x.powf(p - 2.0),
            max_relative = 1e-13
        );
        assert_relative_eq!(h[1][1], ln * ln * x.powf(p), max_relative = 1e-13);
        let mixed = x.powf(p - 1.0) * (1.0 + p * ln);
        assert_relative_eq!(h[0][1], mixed, max_relative = 1e-13);
        assert_relative_eq!(h[1][0], mixed, max_relative = 1e-13);
        gradgradcheck(|_, v| v[0].powf(v[1]), &[x, p], Tolerance::default()).assert_passed();
    }
}

#[test]
fn division_in_both_arguments_and_mixed() {
    // y = a / b: y_aa = 0, y_bb = 2a / b^3, y_ab = -1 / b^2.
    for (a, b) in [(1.5, 0.8), (-2.0, 3.0), (0.3, -1.2)] {
        let g = Graph::new();
        let v = g.vars(&[a, b]);
        let h = hessian(v[0] / v[1], &v);
        assert_eq!(h[0][0], 0.0);
        assert_relative_eq!(h[1][1], 2.0 * a / b.powi(3), max_relative = 1e-14);
        assert_relative_eq!(h[0][1], -1.0 / (b * b), max_relative = 1e-14);
        assert_relative_eq!(h[1][0], -1.0 / (b * b), max_relative = 1e-14);
        gradgradcheck(|_, v| v[0] / v[1], &[a, b], Tolerance::default()).assert_passed();
    }
}

#[test]
fn constant_over_var_second_and_third_derivatives() {
    // The `reverse` crate's bug was d(2/x)/dx = -1/x (a wrong rule for a constant
    // numerator). Here 2/x goes through the Var/Var rule: (2/x)' = -2/x^2,
    // (2/x)'' = 4/x^3, (2/x)''' = -12/x^4.
    for x in [-1.5, 0.5, 2.0] {
        let (d1, d2, d3) = derivatives(|x| 2.0 / x, x);
        assert_relative_eq!(d1, -2.0 / x.powi(2), max_relative = 1e-15);
        assert_relative_eq!(d2, 4.0 / x.powi(3), max_relative = 1e-15);
        assert_relative_eq!(d3, -12.0 / x.powi(4), max_relative = 1e-15);
        gradgradcheck(|_, v| 2.0 / v[0], &[x], Tolerance::default()).assert_passed();
    }
    // x / 2 is linear.
    check_second("x/2", |x| x / 2.0, |_| 0.0, &[-1.0, 3.0]);
}

#[test]
fn constant_base_power_third_derivative() {
    // `reverse` also got 2^x wrong. (2^x)^(k) = ln(2)^k 2^x for every k.
    for x in [-1.0, 0.0, 2.5] {
        let (d1, d2, d3) = derivatives(|x| powf(2.0, x), x);
        let y = 2f64.powf(x);
        assert_relative_eq!(d1, LN_2 * y, max_relative = 1e-15);
        assert_relative_eq!(d2, LN_2.powi(2) * y, max_relative = 1e-15);
        assert_relative_eq!(d3, LN_2.powi(3) * y, max_relative = 1e-15);
    }
}

#[test]
fn constant_exponent_power_third_derivative() {
    // (x^3)' = 3x^2, (x^3)'' = 6x, (x^3)''' = 6, with the exponent an untracked f64.
    for x in [0.5, 1.3, 4.0] {
        let (d1, d2, d3) = derivatives(|x| x.powf(3.0), x);
        assert_relative_eq!(d1, 3.0 * x * x, max_relative = 1e-14);
        assert_relative_eq!(d2, 6.0 * x, max_relative = 1e-14);
        assert_relative_eq!(d3, 6.0, max_relative = 1e-14);
    }
}

#[test]
fn multiplication_hessian() {
    // y = a b: y_aa = y_bb = 0, y_ab = 1. x * x: 2. 3 * x: 0.
    let g = Graph::new();
    let v = g.vars(&[1.7, -0.4]);
    assert_eq!(
        hessian(v[0] * v[1], &v),
        vec![vec![0.0, 1.0], vec![1.0, 0.0]]
    );
    assert_eq!(hessian(v[0] * v[0], &v[..1]), vec![vec![2.0]]);
    assert_eq!(hessian(3.0 * v[0], &v[..1]), vec![vec![0.0]]);
    gradgradcheck(|_, v| v[0] * v[1], &[1.7, -0.4], Tolerance::default()).assert_passed();
}

#[test]
fn addition_and_subtraction_hessians_are_zero() {
    let g = Graph::new();
    let v = g.vars(&[1.0, 2.0]);
    assert_eq!(hessian(v[0] + v[1], &v), vec![vec![0.0; 2]; 2]);
    assert_eq!(hessian(v[0] - v[1] + 4.0, &v), vec![vec![0.0; 2]; 2]);
    assert_eq!(hessian(1.0 - v[0], &v), vec![vec![0.0; 2]; 2]);
}

#[test]
fn logsumexp_hessian_is_softmax_covariance() {
    // y = ln sum_j e^x_j: dy/dx_i = s_i (the softmax), d2y/dx_i dx_j = s_i (d_ij - s_j).
    for point in [vec![0.5, -1.0, 2.0], vec![1000.0, 999.0, 1001.5, 998.0]] {
        let g = Graph::new();
        let xs = g.vars(&point);
        let h = hessian(g.logsumexp(xs.iter().copied()), &xs);
        let max = point.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = point.iter().map(|x| (x - max).exp()).collect();
        let total: f64 = e.iter().sum();
        let s: Vec<f64> = e.iter().map(|e| e / total).collect();
        for i in 0..point.len() {
            for j in 0..point.len() {
                let closed = s[i] * (f64::from(u8::from(i == j)) - s[j]);
                assert_relative_eq!(h[i][j], closed, max_relative = 1e-12, epsilon = 1e-15);
            }
        }
    }
    gradgradcheck(
        |g, x| g.logsumexp(x.iter().copied()),
        &[0.5, -1.0, 2.0],
        Tolerance::default(),
    )
    .assert_passed();
}

#[test]
fn dot_hessian() {
    // y = a . b: d2y/da_i db_j = d_ij, every other second derivative 0.
    let g = Graph::new();
    let v = g.vars(&[1.0, 2.0, 3.0, 4.0]);
    let h = hessian(g.dot(&v[..2], &v[2..]), &v);
    let expected = vec![
        vec![0.0, 0.0, 1.0, 0.0],
        vec![0.0, 0.0, 0.0, 1.0],
        vec![1.0, 0.0, 0.0, 0.0],
        vec![0.0, 1.0, 0.0, 0.0],
    ];
    assert_eq!(h, expected);
    // x . x = |x|^2 through the fused node with each operand twice: Hessian 2 I.
    let x = &v[..2];
    assert_eq!(
        hessian(g.dot(x, x), x),
        vec![vec![2.0, 0.0], vec![0.0, 2.0]]
    );
    // Against f64 constants it is linear.
    assert_eq!(hessian(g.dot(x, &[5.0, 6.0]), x), vec![vec![0.0; 2]; 2]);
    gradgradcheck(
        |g, v| g.dot(&v[..2], &v[2..]),
        &[1.0, 2.0, 3.0, 4.0],
        Tolerance::default(),
    )
    .assert_passed();
}

#[test]
fn sum_hessian() {
    // sum is linear; sum of squares has Hessian 2 I.
    let g = Graph::new();
    let v = g.vars(&[1.0, -2.0, 0.5]);
    assert_eq!(hessian(g.sum(v.iter().copied()), &v), vec![vec![0.0; 3]; 3]);
    let h = hessian(g.sum(v.iter().map(|x| x.powi(2))), &v);
    for (i, row) in h.iter().enumerate() {
        for (j, &hij) in row.iter().enumerate() {
            assert_eq!(hij, if i == j { 2.0 } else { 0.0 });
        }
    }
}

#[test]
fn inverse_trigonometric_second_derivatives() {
    // atan'' = -2x / (1 + x^2)^2; asin'' = x / (1 - x^2)^(3/2); acos'' = -asin''
    check_second(
        "atan",
        |x| x.atan(),
        |x| -2.0 * x / (1.0 + x * x).powi(2),
        &[-2.0, 0.3, 1.5],
    );
    check_second(
        "asin",
        |x| x.asin(),
        |x| x / (1.0 - x * x).powf(1.5),
        &[-0.7, 0.2, 0.9],
    );
    check_second(
        "acos",
        |x| x.acos(),
        |x| -x / (1.0 - x * x).powf(1.5),
        &[-0.7, 0.2, 0.9],
    );
}

#[test]
fn tan_second_derivative() {
    // tan'' = 2 tan x / cos^2 x
    check_second(
        "tan",
        |x| x.tan(),
        |x| 2.0 * x.tan() / x.cos().powi(2),
        &[-1.0, 0.2, 1.3],
    );
}

#[test]
fn log_and_exp_variants_second_derivatives() {
    // ln(1+x)'' = -1/(1+x)^2; (e^x - 1)'' = e^x; log_b'' = -1/(x^2 ln b); (2^x)'' = 2^x ln^2 2
    check_second(
        "ln_1p",
        |x| x.ln_1p(),
        |x| -1.0 / (1.0 + x).powi(2),
        &[-0.5, 1e-9, 2.0],
    );
    check_second("exp_m1", |x| x.exp_m1(), f64::exp, &[-2.0, 1e-9, 1.5]);
    check_second(
        "log2",
        |x| x.log2(),
        |x| -1.0 / (x * x * LN_2),
        &[0.3, 1.0, 6.0],
    );
    check_second(
        "log10",
        |x| x.log10(),
        |x| -1.0 / (x * x * 10f64.ln()),
        &[0.3, 1.0, 6.0],
    );
    check_second(
        "exp2",
        |x| x.exp2(),
        |x| 2f64.powf(x) * LN_2 * LN_2,
        &[-2.0, 0.0, 3.5],
    );
}

#[test]
fn cbrt_second_derivative() {
    // y = x^(1/3): y'' = -(2/9) x^(-5/3), odd: -2 / (9 cbrt(x)^5)
    check_second(
        "cbrt",
        |x| x.cbrt(),
        |x| -2.0 / (9.0 * x.cbrt().powi(5)),
        &[-8.0, 0.4, 3.0],
    );
}

#[test]
fn softplus_second_derivative_is_the_sigmoid_slope() {
    // softplus' = s = sigmoid, softplus'' = s (1 - s)
    fn s(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }
    check_second(
        "softplus",
        |x| x.softplus(),
        |x| s(x) * (1.0 - s(x)),
        &[-3.0, 0.0, 2.5],
    );
}

#[test]
fn erf_and_erfc_second_derivatives() {
    // erf'' = -4x/sqrt(pi) e^(-x^2); erfc'' = -erf''
    check_second(
        "erf",
        |x| x.erf(),
        |x| -2.0 * x * 2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp(),
        &[-1.2, 0.3, 2.0],
    );
    check_second(
        "erfc",
        |x| x.erfc(),
        |x| 2.0 * x * 2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp(),
        &[-1.2, 0.3, 2.0],
    );
}

#[test]
fn atan2_hessian() {
    // y = atan2(a, b), r^2 = a^2 + b^2: y_aa = -2ab/r^4, y_bb = 2ab/r^4,
    // y_ab = (a^2 - b^2)/r^4.
    for (a, b) in [(1.0, 2.0), (-0.5, -1.5), (3.0, -0.25)] {
        let g = Graph::new();
        let v = g.vars(&[a, b]);
        let h = hessian(v[0].atan2(v[1]), &v);
        let r4 = (a * a + b * b).powi(2);
        assert_relative_eq!(h[0][0], -2.0 * a * b / r4, max_relative = 1e-13);
        assert_relative_eq!(h[1][1], 2.0 * a * b / r4, max_relative = 1e-13);
        assert_relative_eq!(h[0][1], (a * a - b * b) / r4, max_relative = 1e-13);
        assert_relative_eq!(h[1][0], (a * a - b * b) / r4, max_relative = 1e-13);
        gradgradcheck(|_, v| v[0].atan2(v[1]), &[a, b], Tolerance::default()).assert_passed();
        // f64 on either side: the same rule.
        gradgradcheck(|_, v| v[0].atan2(b), &[a], Tolerance::default()).assert_passed();
        gradgradcheck(|_, v| tapegrad::atan2(a, v[0]), &[b], Tolerance::default()).assert_passed();
    }
}

#[test]
fn hypot_hessian() {
    // h = hypot(a, b): h_aa = b^2/h^3, h_bb = a^2/h^3, h_ab = -ab/h^3.
    for (a, b) in [(3.0, 4.0), (-1.0, 0.5), (2.0, -7.0)] {
        let g = Graph::new();
        let v = g.vars(&[a, b]);
        let hm = hessian(v[0].hypot(v[1]), &v);
        let h3 = (a * a + b * b).powf(1.5);
        assert_relative_eq!(hm[0][0], b * b / h3, max_relative = 1e-13);
        assert_relative_eq!(hm[1][1], a * a / h3, max_relative = 1e-13);
        assert_relative_eq!(hm[0][1], -a * b / h3, max_relative = 1e-13);
        assert_relative_eq!(hm[1][0], -a * b / h3, max_relative = 1e-13);
        gradgradcheck(|_, v| v[0].hypot(v[1]), &[a, b], Tolerance::default()).assert_passed();
        gradgradcheck(|_, v| tapegrad::hypot(a, v[0]), &[b], Tolerance::default()).assert_passed();
    }
}

#[test]
fn kinked_ops_have_zero_hessians_away_from_their_kinks() {
    let g = Graph::new();
    let v = g.vars(&[0.5, -1.0, 2.0]);
    let zero = vec![vec![0.0; 3]; 3];
    assert_eq!(hessian(v[0].max(v[1]), &v), zero);
    assert_eq!(hessian(v[0].min(v[2]), &v), zero);
    assert_eq!(hessian(g.amax(v.iter().copied()), &v), zero);
    assert_eq!(hessian(v[0].clamp(-1.0, 1.0), &v), zero);
    // Composed with a smooth function, only the smooth part curves:
    // max(a, b)^2 with a > b: d2/da2 = 2.
    let h = hessian(v[0].max(v[1]).powi(2), &v);
    assert_eq!(h[0][0], 2.0);
    type F = for<'g> fn(&'g Graph, &[Var<'g>]) -> Var<'g>;
    let cases: [(&str, F); 4] = [
        ("max", |_, v| v[0].max(v[1]).powi(2)),
        ("min", |_, v| v[0].min(v[1]) * v[1]),
        ("amax", |g, v| g.amax(v.iter().copied()).exp()),
        ("clamp", |_, v| v[0].clamp(-1.0, 1.0).powi(3) * v[1]),
    ];
    for (name, f) in cases {
        let report = gradgradcheck(f, &[0.5, -1.0], Tolerance::default());
        assert!(report.passed(), "{name}:\n{report}");
    }
}

#[test]
fn inverse_hyperbolic_second_derivatives() {
    // asinh' = (x^2 + 1)^(-1/2), so asinh'' = -x (x^2 + 1)^(-3/2);
    // acosh' = (x^2 - 1)^(-1/2), so acosh'' = -x (x^2 - 1)^(-3/2);
    // atanh' = (1 - x^2)^(-1), so atanh'' = 2x (1 - x^2)^(-2).
    check_second(
        "asinh",
        |x| x.asinh(),
        |x| -x / (x * x + 1.0).powf(1.5),
        &[-2.0, 0.3, 1.5, 40.0],
    );
    check_second(
        "acosh",
        |x| x.acosh(),
        |x| -x / (x * x - 1.0).powf(1.5),
        &[1.2, 2.0, 5.0],
    );
    check_second(
        "atanh",
        |x| x.atanh(),
        |x| 2.0 * x / (1.0 - x * x).powi(2),
        &[-0.7, 0.2, 0.9],
    );
    // Third derivatives, by grad three times: asinh''' = (2x^2 - 1) (x^2 + 1)^(-5/2),
    // atanh''' = (2 + 6x^2) (1 - x^2)^(-3).
    for x in [-0.8, 0.35, 1.7] {
        let (_, _, d3) = derivatives(|x| x.asinh(), x);
        assert_relative_eq!(
            d3,
            (2.0 * x * x - 1.0) / (x * x + 1.0).powf(2.5),
            max_relative = 1e-13
        );
    }
    for x in [-0.6, 0.1, 0.75] {
        let (_, _, d3) = derivatives(|x| x.atanh(), x);
        assert_relative_eq!(
            d3,
            (2.0 + 6.0 * x * x) / (1.0 - x * x).powi(3),
            max_relative = 1e-13
        );
    }
}

#[test]
fn xlogy_hessian_in_every_operand_combination() {
    // y = a ln b: y_aa = 0, y_ab = 1/b, y_bb = -a/b^2 (a != 0; x = 0 is in tests/ops.rs).
    for (a, b) in [(2.0, 3.0), (-1.5, 0.25), (0.5, 1.0), (1e-3, 40.0)] {
        let g = Graph::new();
        let v = g.vars(&[a, b]);
        let h = hessian(v[0].xlogy(v[1]), &v);
        assert_eq!(h[0][0], 0.0);
        assert_relative_eq!(h[0][1], 1.0 / b, max_relative = 1e-15);
        assert_relative_eq!(h[1][0], 1.0 / b, max_relative = 1e-15);
        assert_relative_eq!(h[1][1], -a / (b * b), max_relative = 1e-15);
        gradgradcheck(|_, v| v[0].xlogy(v[1]), &[a, b], Tolerance::default()).assert_passed();
        // A constant on either side: linear in a; in b, y_bb = -a/b^2 and y_bbb = 2a/b^3.
        gradgradcheck(|_, v| v[0].xlogy(b), &[a], Tolerance::default()).assert_passed();
        assert_eq!(hessian(v[0].xlogy(b), &v[..1]), vec![vec![0.0]]);
        gradgradcheck(|_, v| tapegrad::xlogy(a, v[0]), &[b], Tolerance::default()).assert_passed();
        let g = Graph::new();
        let x = g.var(b);
        let d1 = tapegrad::xlogy(a, x).grad(&[x])[0];
        let d2 = d1.grad(&[x])[0];
        let d3 = d2.grad(&[x])[0];
        assert_relative_eq!(d1.value(), a / b, max_relative = 1e-15);
        assert_relative_eq!(d2.value(), -a / (b * b), max_relative = 1e-15);
        assert_relative_eq!(d3.value(), 2.0 * a / (b * b * b), max_relative = 1e-15);
    }
}
