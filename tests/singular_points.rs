//! Singular points (issue 14): where a zero, infinite or NaN partial meets an infinite, NaN
//! or zero adjoint, every sweep applies the one documented rule (the crate docs' table):
//! the plain backward and `Var::grad` give the same first-order numbers bit for bit, and
//! the two Hessian routes (`higher::hessian` and `grad` of `grad`) the same second-order
//! numbers up to rounding.
//!
//! Expected values come from the convention and closed forms; PyTorch's answers (float64)
//! are the ones quoted in the issue, noted beside each case.

use tapegrad::{Graph, Var, higher, powf};

/// The same `f64`, bit for bit (any NaN equals any NaN).
fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// `dy/dx` by the plain backward, checked bit for bit against `Var::grad`.
fn d<'g>(y: Var<'g>, x: Var<'g>) -> f64 {
    let plain = y.backward()[x];
    let g = y.graph();
    let mark = g.mark();
    let differentiable = y.grad(&[x])[0].value();
    g.release(mark);
    assert!(
        same(plain, differentiable),
        "backward gives {plain:e}, grad gives {differentiable:e}"
    );
    plain
}

/// `d2y/dx2` by `higher::hessian`, checked against `grad` of `grad`.
fn d2<'g>(y: Var<'g>, x: Var<'g>) -> f64 {
    let by_hessian = higher::hessian(y, &[x])[0][0];
    let g = y.graph();
    let mark = g.mark();
    let dy = y.grad(&[x])[0];
    let by_grad = dy.grad(&[x])[0].value();
    g.release(mark);
    let close = (by_hessian - by_grad).abs() <= 1e-12 * by_hessian.abs().max(1.0);
    assert!(
        same(by_hessian, by_grad) || close,
        "hessian gives {by_hessian:e}, grad of grad gives {by_grad:e}"
    );
    by_hessian
}

#[test]
fn an_infinite_derivative_after_relu_gives_zero_as_a_select() {
    // PyTorch and JAX: 0 (their relu backward is a select). tapegrad gave NaN by backward.
    for at in [0.0, -1.0, -0.0] {
        let g = Graph::new();
        let x = g.var(at);
        assert_eq!(d(x.relu().sqrt(), x), 0.0, "sqrt(relu(x)) at {at}");
        let y = powf(-2.5, x.relu());
        assert_eq!(y.value(), 1.0);
        assert_eq!(d(y, x), 0.0, "(-2.5)^relu(x) at {at}");
    }
    // Above the kink the derivative is the ordinary one.
    let g = Graph::new();
    let x = g.var(4.0);
    assert_eq!(d(x.relu().sqrt(), x), 0.25);
}

#[test]
fn relu_and_abs_of_nan_propagate_nan() {
    // PyTorch gives relu'(NaN) = 1; a NaN must not vanish into a zero gradient.
    let g = Graph::new();
    let x = g.var(f64::NAN);
    assert!(d(x.relu(), x).is_nan());
    assert!(d(x.abs(), x).is_nan());
    assert!(d(x.relu() * 2.0 + 1.0, x).is_nan());
}

#[test]
fn an_infinite_adjoint_meeting_a_difference_is_nan() {
    // PyTorch: NaN. The adjoint inf reaches x twice, as +inf and -inf.
    let g = Graph::new();
    let x = g.var(0.0);
    assert!(d((x - x).sqrt(), x).is_nan());
    // (-2.46)^0 = 1, but ln(-2.46) is NaN.
    let y = powf(-2.46, x - x);
    assert_eq!(y.value(), 1.0);
    assert!(d(y, x).is_nan());
}

#[test]
fn a_zero_factor_wins_over_an_infinite_one() {
    // The crate's rule (PyTorch: NaN for both): a zero partial or a zero adjoint passes
    // nothing. sqrt(0 x) and 0 sqrt(x) are constant in x, so 0 is their true derivative.
    let g = Graph::new();
    let x = g.var(0.0);
    assert_eq!(d((x * 0.0).sqrt(), x), 0.0);
    assert_eq!(d(x.sqrt() * 0.0, x), 0.0);
    assert_eq!(d(0.0 * x.sqrt(), x), 0.0);
    // abs' = 0 at 0 is a zero partial like relu's (PyTorch: sgn(0) * inf = NaN).
    assert_eq!(d(x.abs().sqrt(), x), 0.0);
    // A zero *value* times an infinite partial, at first order and at second.
    let z = g.var(0.0);
    assert_eq!(d(x.sqrt() * z, x), 0.0);
    assert_eq!(d(x.sqrt() * z, z), 0.0);
    // x^0 is the constant 1 (PyTorch and JAX agree: d/dx x^0 = 0, also at x = 0).
    assert_eq!(d(x.powf(0.0), x), 0.0);
    for at in [5e-324, f64::INFINITY, f64::NAN, -2.0] {
        let a = g.var(at);
        assert_eq!(d(a.powf(0.0), a), 0.0, "d/da a^0 at {at}");
    }
    assert_eq!(d(x.powi(0), x), 0.0);
    assert_eq!(d(x.powi(0).sqrt(), x), 0.0);
    assert_eq!(d((x.powi(0) - 1.0).sqrt(), x), 0.0);
    // ... and 0^0 = 1.
    assert_eq!(x.powf(0.0).value(), 1.0);
}

#[test]
fn zero_to_the_power_y_at_y_zero_has_derivative_zero() {
    // PyTorch: 0 (it masks base == 0 with exponent >= 0); tapegrad gave ln(0) * 1 = -inf.
    let g = Graph::new();
    let y = g.var(0.0);
    let z = powf(0.0, y);
    assert_eq!(z.value(), 1.0);
    assert_eq!(d(z, y), 0.0);
    let y2 = g.var(2.0);
    assert_eq!(d(powf(0.0, y2), y2), 0.0);
    // A base that is a variable too: d/da a^b at a = b = 0 is 0, d/db is 0.
    let (a, b) = (g.var(0.0), g.var(0.0));
    let p = a.powf(b);
    assert_eq!((d(p, a), d(p, b)), (0.0, 0.0));
}

#[test]
fn both_hessian_routes_agree_on_a_nan_partial_behind_a_constant() {
    // x^((-3)^(x^0)) = x^-3 near 1, with d2/dx2 = 12 x^-5 = 12 (PyTorch 12). The inner
    // (-3)^u has a NaN partial in u, reached only through d(x^0)/dx = 0.
    let g = Graph::new();
    let x = g.var(1.0);
    let y = x.powf(powf(-3.0, x.powi(0)));
    assert_eq!(y.value(), 1.0);
    assert_eq!(d(y, x), -3.0);
    assert_eq!(d2(y, x), 12.0);
    assert_eq!(higher::hvp(y, &[x], &[0.5]), vec![6.0]);
}

#[test]
fn second_derivatives_at_kinks_agree_between_routes() {
    let g = Graph::new();
    for at in [0.0, -1.0, 2.0] {
        let x = g.var(at);
        let y = x.relu().sqrt() + x.relu().powi(3) + (x * x).sqrt();
        let expected = if at > 0.0 {
            6.0 * at - 0.25 * at.powf(-1.5)
        } else {
            0.0
        };
        // |x|'' = 0 away from 0; at 0 sqrt(x * x) has an infinite first partial.
        let got = d2(y, x);
        if at != 0.0 {
            approx::assert_relative_eq!(got, expected, max_relative = 1e-14, epsilon = 1e-12);
        }
    }
}

#[test]
fn partials_that_overflow_when_stored_give_the_finite_gradient() {
    // PyTorch computes grad / x and gets 1; the stored partial 1/x is inf here.
    let g = Graph::new();
    let x = g.var(5e-324);
    let y = x.ln().exp();
    assert_eq!(y.value(), 5e-324);
    assert_eq!(d(y, x), 1.0);

    // d(a/b)/da = 1/b, d(a/b)/db = -(a/b)/b with |b| < 5.6e-309: 1/b overflows.
    let (a, b) = (g.var(1e-310), g.var(2e-310));
    let y = (a / b) * 1e-300;
    assert_eq!(d(y, a), 1e-300 / 2e-310);
    assert_eq!(d(y, b), (1e-300 * -(1e-310 / 2e-310)) / 2e-310);

    // d(1/x)/dx = -1/x^2 = -y/x overflows for |x| < 1e-154 while y is finite.
    let x = g.var(1e-160);
    let r = x.recip();
    let y = r * 1e-300;
    assert_eq!(d(y, x), (1e-300 * -r.value()) / 1e-160);

    // x^n for a negative integer n: n x^(n-1) = n y / x.
    let x = g.var(1e-200);
    let y = x.powi(-1) * 1e-300;
    let (n, x_to_n) = (-1.0, 1e200);
    assert_eq!(d(y, x), (1e-300 * (n * x_to_n)) / 1e-200);

    // log2 and log10 likewise: 1 / (x ln 2) at x = 5e-324.
    let x = g.var(5e-324);
    let y = x.log2().exp2();
    assert_eq!(y.value(), 5e-324);
    approx::assert_relative_eq!(d(y, x), 1.0, max_relative = 1e-15);

    // A truly infinite derivative stays infinite: sqrt at 0, ln at 0.
    let z = g.var(0.0);
    assert_eq!(d(z.sqrt(), z), f64::INFINITY);
    assert_eq!(d(z.ln(), z), f64::INFINITY);
}

#[test]
fn logsumexp_with_an_infinite_operand_gives_the_finite_ones_zero() {
    // PyTorch: 0 for the finite operand (its softmax weight), NaN for the infinite one.
    let g = Graph::new();
    let x = g.var(1.5);
    let inf = g.var(f64::INFINITY);
    let y = g.logsumexp([x, inf]);
    assert_eq!(y.value(), f64::INFINITY);
    assert_eq!(d(y, x), 0.0);
    assert!(d(y, inf).is_nan());
    // A -inf operand (a mask) gets weight 0 and the others their softmax.
    let m = g.var(f64::NEG_INFINITY);
    let y = g.logsumexp([x, m]);
    assert_eq!(y.value(), 1.5);
    assert_eq!((d(y, x), d(y, m)), (1.0, 0.0));
    // A NaN operand makes every partial NaN, as the value is.
    let n = g.var(f64::NAN);
    let y = g.logsumexp([x, n]);
    assert!(y.value().is_nan());
    assert!(d(y, x).is_nan());
}

#[test]
fn logsumexp_partials_are_the_same_by_backward_and_grad_at_large_values() {
    let g = Graph::new();
    let xs = g.vars(&[1e300, 1e300, 1e300 - 1e285, 3.0]);
    let y = g.logsumexp(xs.iter().copied());
    for &x in &xs {
        d(y, x);
    }
    let xs = g.vars(&[-800.0, 700.0, 700.5, 0.1]);
    let y = g.logsumexp(xs.iter().copied());
    for &x in &xs {
        d(y, x);
        d2(y, x);
    }
}

#[test]
fn anomaly_mode_ignores_nodes_the_output_does_not_use() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let x = g.var(0.0);
    let _unused = x.ln();
    let y = x.relu() + 1.0;
    assert_eq!(y.try_backward().map(|gr| gr[x]), Ok(0.0));
    // The forward report is eager, with that caveat in its docs.
    assert_eq!(g.anomaly().map(|a| a.op), Some("ln"));
    // grad, hessian: the same.
    assert!(y.try_grad(&[x]).is_ok());
    assert!(higher::try_hessian(y, &[x]).is_ok());
}

#[test]
fn anomaly_mode_accepts_an_attention_mask() {
    // An intentional -inf that reaches no non-finite value or gradient.
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let scores = g.vars(&[0.5, 1.5, -0.25]);
    let mask = [0.0, 0.0, f64::NEG_INFINITY];
    let masked: Vec<Var<'_>> = scores.iter().zip(mask).map(|(&s, m)| s + m).collect();
    let lse = g.logsumexp(masked.iter().copied());
    let p: Vec<Var<'_>> = masked.iter().map(|&s| (s - lse).exp()).collect();
    let loss = -(p[0].ln());
    let grads = loss.try_backward().expect("a mask is not an anomaly");
    assert_eq!(grads[scores[2]], 0.0);
    assert!(grads[scores[0]].is_finite() && grads[scores[0]] != 0.0);
    assert!(loss.try_grad(&scores).is_ok());
}

#[test]
fn anomaly_mode_names_the_first_used_anomaly_in_tape_order() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let x = g.var(0.0);
    let _unused = x.ln(); // -inf, not used
    let q = x / x; // NaN, used
    let y = q.exp() + x;
    let a = match y.try_backward() {
        Err(tapegrad::Error::Anomaly(a)) => a,
        other => panic!("expected an anomaly, got {other:?}"),
    };
    assert_eq!(a.op, "/");
    assert!(a.output.is_nan());
    // A used -inf that reaches the output value is reported, at its own node.
    let z = x.ln() * 2.0;
    let a = match z.try_backward() {
        Err(tapegrad::Error::Anomaly(a)) => a,
        other => panic!("expected an anomaly, got {other:?}"),
    };
    assert_eq!(a.op, "ln");
    // An infinite gradient with finite values is still reported.
    let s = x.sqrt();
    assert!(s.try_backward().is_err());
}

/// The inverse hyperbolic functions at the ends of their domains, and `xlogy` where
/// `x = 0` or `y = 0`, under the one rule (PyTorch's answers from its `derivatives.yaml`
/// formulas noted beside each).
#[test]
fn inverse_hyperbolic_functions_and_xlogy_at_their_singular_points() {
    let inf = f64::INFINITY;
    let g = Graph::new();
    let (one, minus_one) = (g.var(1.0), g.var(-1.0));
    // d acosh x = 1/sqrt(x^2 - 1) and d atanh x = 1/(1 - x^2) are infinite there (PyTorch
    // inf); behind a zero factor nothing passes (PyTorch inf * 0 = NaN).
    assert_eq!(d(one.acosh(), one), inf);
    assert_eq!(d(one.atanh(), one), inf);
    assert_eq!(d(minus_one.atanh(), minus_one), inf);
    assert_eq!(d(one.acosh() * 0.0, one), 0.0);
    assert_eq!(d(minus_one.atanh() * g.var(0.0), minus_one), 0.0);
    // Second order: acosh'' = -x (x^2 - 1)^(-3/2) and atanh'' = 2x (1 - x^2)^(-2) are
    // infinite too, by both Hessian routes.
    assert_eq!(d2(one.acosh(), one), -inf);
    assert_eq!(d2(one.atanh(), one), inf);
    assert_eq!(d2(minus_one.atanh(), minus_one), -inf);
    // relu's zero slope is a select: acosh(relu(x) + 1) and atanh(relu(x) - 1) at x <= 0
    // have derivative 0 (PyTorch and JAX: 0).
    let x = g.var(-0.5);
    assert_eq!(d((x.relu() + 1.0).acosh(), x), 0.0);
    assert_eq!(d((x.relu() - 1.0).atanh(), x), 0.0);

    // xlogy(p, p) = p ln p at p = 0: d/dx is 0 (x = 0, y <= 0) and d/dy = 0/0 is NaN, so
    // the sum is NaN (PyTorch: 0 + 0/0 = NaN).
    let p = g.var(0.0);
    assert_eq!(p.xlogy(p).value(), 0.0);
    assert!(d(p.xlogy(p), p).is_nan());
    // x ln y * 0 at (2, 0): partials -inf and inf meet a zero adjoint (PyTorch NaN).
    let (a, b) = (g.var(2.0), g.var(0.0));
    let y = a.xlogy(b) * 0.0;
    assert_eq!((d(y, a), d(y, b)), (0.0, 0.0));
    // xlogy(0, relu(z)) for z < 0: d/dy = 0/0 is NaN, but relu's zero slope selects.
    let z = g.var(-1.0);
    assert_eq!(d(tapegrad::xlogy(0.0, z.relu()), z), 0.0);
    // The mixed second derivative 1/y of x ln y at y = 0 is infinite, by both routes.
    let (a, b) = (g.var(2.0), g.var(0.0));
    let dy_da = a.xlogy(b).grad(&[a])[0];
    assert_eq!(d(dy_da, b), inf);
}

/// Values where the rules meet their special cases.
const SINGULAR: [f64; 20] = [
    0.0,
    -0.0,
    5e-324,
    -5e-324,
    1e-310,
    f64::MIN_POSITIVE,
    1e-160,
    1e300,
    f64::MAX,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
    710.0,
    -745.0,
    1.0,
    -1.0,
    2.0,
    0.5,
    -2.5,
    1e-300,
];

/// Adjoints to arrive with: the output is `op(..) * w`, so the op's node gets adjoint `w`.
const WEIGHTS: [f64; 5] = [1.0, 0.0, f64::INFINITY, f64::NAN, 1e-300];

/// Every unary op, at every singular value, under every adjoint: `backward` and `grad`
/// agree to the bit (checked by `d`), and so do the two Hessian routes (`d2`).
#[test]
fn every_unary_op_agrees_across_sweeps_at_singular_points() {
    for &op in tapegrad::Unary::ALL {
        for x0 in SINGULAR {
            for w0 in WEIGHTS {
                let g = Graph::new();
                let (x, w) = (g.var(x0), g.var(w0));
                let y = x.apply(op) * w;
                d(y, x);
                d(y, w);
                d2(y, x);
            }
        }
    }
}

/// Every binary op, with two variables, a constant on either side, and `powi` with small
/// exponents, at every pair of singular values, under every adjoint.
#[test]
fn every_binary_op_agrees_across_sweeps_at_singular_points() {
    use tapegrad::Binary;
    for &op in Binary::ALL {
        for a0 in SINGULAR {
            for b0 in SINGULAR {
                for w0 in WEIGHTS {
                    let g = Graph::new();
                    let (a, b, w) = (g.var(a0), g.var(b0), g.var(w0));
                    let ys = if op == Binary::Powi {
                        if b0.fract() != 0.0 || b0.abs() > 3.0 {
                            continue;
                        }
                        vec![a.try_binary(op, b0).expect("an integer exponent")]
                    } else {
                        vec![
                            a.try_binary(op, b).expect("valid"),
                            a.try_binary(op, b0).expect("valid"),
                            g.constant(a0).try_binary(op, b).expect("valid"),
                        ]
                    };
                    for y in ys {
                        let y = y * w;
                        d(y, a);
                        d(y, b);
                        d2(y, a);
                        d2(y, b);
                    }
                }
            }
        }
    }
}

/// The n-ary ops over pairs and triples of singular values, under every adjoint.
#[test]
fn every_nary_op_agrees_across_sweeps_at_singular_points() {
    for a0 in SINGULAR {
        for b0 in SINGULAR {
            for w0 in WEIGHTS {
                let g = Graph::new();
                let (a, b, c, w) = (g.var(a0), g.var(b0), g.var(-1.5), g.var(w0));
                for y in [
                    g.sum([a, b, c]),
                    g.dot(&[a, b], &[b, c]),
                    g.logsumexp([a, b, c]),
                    g.logsumexp([a, a]),
                ] {
                    let y = y * w;
                    d(y, a);
                    d(y, b);
                    d2(y, a);
                    d2(y, b);
                }
            }
        }
    }
}

/// A function recorded on any graph: what a replay is made from and compared with.
type Build = dyn for<'g> Fn(&[Var<'g>]) -> Var<'g>;

fn build<F: for<'g> Fn(&[Var<'g>]) -> Var<'g>>(f: F) -> F {
    f
}

/// The replayable tape applies the same rule: recorded at an ordinary point and replayed at
/// singular ones, every unary and binary op (with `f64` operands on either side) and the
/// n-ary ones give a fresh recording's value and backward gradient to the bit.
#[test]
fn replay_gives_the_backward_numbers_at_singular_points() {
    use tapegrad::{Binary, Replay, ReplayWorkspace, Unary};
    let mut ws = ReplayWorkspace::new();
    // Checks `replay` at `at` against recording `f` afresh there.
    let mut check = |replay: &Replay, at: &[f64], f: &Build| {
        let mut grad = vec![0.0; at.len()];
        let value = replay.gradient(at, &mut ws, &mut grad).expect("no guards");
        let h = Graph::new();
        let xs = h.vars(at);
        let y = f(&xs);
        assert!(same(value, y.value()), "value at {at:?}");
        for (k, (r, b)) in grad.iter().zip(y.backward().wrt_all(&xs)).enumerate() {
            assert!(
                same(*r, b),
                "d/dx{k} at {at:?}: replay {r:e}, backward {b:e}"
            );
        }
    };
    for &op in Unary::ALL {
        let f = build(move |xs| xs[0].apply(op) * xs[1]);
        let g = Graph::new();
        let xs = g.vars(&[0.5, 1.5]);
        let replay = Replay::new(f(&xs), &xs);
        for x0 in SINGULAR {
            for w0 in WEIGHTS {
                check(&replay, &[x0, w0], &f);
            }
        }
    }
    for &op in Binary::ALL {
        if op == Binary::Powi {
            continue; // its exponent is part of the recording; below
        }
        let f = build(move |xs| xs[0].try_binary(op, xs[1]).expect("valid") * xs[2]);
        let g = Graph::new();
        let xs = g.vars(&[0.5, 1.5, 2.0]);
        let replay = Replay::new(f(&xs), &xs);
        for a0 in SINGULAR {
            for b0 in SINGULAR {
                for w0 in WEIGHTS {
                    check(&replay, &[a0, b0, w0], &f);
                }
            }
        }
        for c in SINGULAR {
            let f = build(move |xs| xs[0].try_binary(op, c).expect("valid") * xs[1]);
            let h = build(move |xs| {
                let c = xs[0].graph().constant(c);
                c.try_binary(op, xs[0]).expect("valid") * xs[1]
            });
            for f in [&f as &Build, &h] {
                let g = Graph::new();
                let xs = g.vars(&[0.5, 1.5]);
                let replay = Replay::new(f(&xs), &xs);
                for x0 in SINGULAR {
                    for w0 in WEIGHTS {
                        check(&replay, &[x0, w0], f);
                    }
                }
            }
        }
    }
    for n in -2..=3 {
        let f = build(move |xs| xs[0].powi(n) * xs[1]);
        let g = Graph::new();
        let xs = g.vars(&[0.5, 1.5]);
        let replay = Replay::new(f(&xs), &xs);
        for x0 in SINGULAR {
            for w0 in WEIGHTS {
                check(&replay, &[x0, w0], &f);
            }
        }
    }
    let f = build(|xs| {
        let g = xs[0].graph();
        (g.logsumexp([xs[0], xs[1], xs[2]]) + g.dot(&[xs[0], xs[1]], &[xs[1], xs[2]])) * xs[3]
    });
    let g = Graph::new();
    let xs = g.vars(&[0.5, 1.5, -1.0, 2.0]);
    let replay = Replay::new(f(&xs), &xs);
    for a0 in SINGULAR {
        for b0 in SINGULAR {
            for w0 in WEIGHTS {
                check(&replay, &[a0, b0, -1.5, w0], &f);
            }
        }
    }
}

/// The issue's cases through a replay recorded elsewhere: the kink is re-evaluated at the
/// new point, and the rule applies there.
#[test]
fn replay_at_the_issue_cases() {
    use tapegrad::{Replay, ReplayWorkspace};
    let mut ws = ReplayWorkspace::new();
    let mut grad = [0.0];
    let g = Graph::new();
    let x = g.var(1.0);
    let replay = Replay::new(x.relu().sqrt(), &[x]);
    replay.gradient(&[0.0], &mut ws, &mut grad).unwrap();
    assert_eq!(grad, [0.0]);
    let replay = Replay::new(x.ln().exp(), &[x]);
    replay.gradient(&[5e-324], &mut ws, &mut grad).unwrap();
    assert_eq!(grad, [1.0]);
    // x^((-3)^(x^0)) = x^-3: the HVP is the second derivative 12, as both Hessian routes.
    let replay = Replay::new(x.powf(powf(-3.0, x.powi(0))), &[x]);
    let mut hv = [0.0];
    replay.hvp(&[1.0], &[1.0], &mut ws, &mut hv).unwrap();
    assert_eq!(hv, [12.0]);
}

/// The mixed second derivative of `a^b` at `b = 0`: `d/da a^b = b
/// a^(b-1)` is 0 there, but its derivative in `b` is `a^(b-1)` = 1/2 at `a = 2`, not 0. Both
/// Hessian routes and the replayed HVP must give the symmetric Hessian.
#[test]
fn powf_mixed_second_derivative_at_a_zero_exponent() {
    use tapegrad::{Replay, ReplayWorkspace};
    let g = Graph::new();
    let x = g.vars(&[2.0, 0.0]);
    let y = x[0].powf(x[1]);
    // H = [[b (b-1) a^(b-2), a^(b-1) (1 + b ln a)], [., ln^2 a  a^b]] at (2, 0).
    let ln2 = 2f64.ln();
    let h = higher::hessian(y, &x);
    assert_eq!(h[0], vec![0.0, 0.5]);
    assert_eq!(h[1][0], 0.5);
    approx::assert_relative_eq!(h[1][1], ln2 * ln2, max_relative = 1e-15);
    let grads = y.grad(&x);
    let row0 = grads[0].grad(&x);
    let replay = Replay::new(y, &x);
    assert_eq!((row0[0].value(), row0[1].value()), (0.0, 0.5));
    let (mut ws, mut hv) = (ReplayWorkspace::new(), [0.0; 2]);
    replay
        .hvp(&[2.0, 0.0], &[1.0, 0.0], &mut ws, &mut hv)
        .unwrap();
    assert_eq!(hv, [0.0, 0.5]);
}

/// The replayed HVP follows the same rule as `higher::hvp` at singular points: a relu's zero slope is a select, and sqrt's infinite second derivative at 0
/// stays infinite.
#[test]
fn replayed_hvp_agrees_with_higher_hvp_at_singular_points() {
    use tapegrad::{Replay, ReplayWorkspace};
    type Build = for<'g> fn(&[Var<'g>]) -> Var<'g>;
    let cases: [(Build, [f64; 2]); 5] = [
        (|x| x[0].relu().sqrt(), [0.0, 1.0]),
        (|x| x[0].relu().sqrt(), [-1.0, 1.0]),
        (|x| x[0].sqrt() + x[1], [0.0, 1.0]),
        (|x| x[0].sqrt() * x[1], [0.0, 2.0]),
        (|x| (x[0] * x[1]).relu().sqrt(), [0.0, -1.0]),
    ];
    // Not here: `sqrt(x) * z` at (0, 0) along z, where `higher::hvp` is infinite and the
    // replay's forward over reverse is finite (the two orders of differentiation meet the
    // singular point differently; see `Replay::hvp` and tests/replay.rs).
    let mut ws = ReplayWorkspace::new();
    for (build, at) in cases {
        // Recorded at an ordinary point, replayed at the singular one.
        let g = Graph::new();
        let x = g.vars(&[1.0, 1.0]);
        let replay = Replay::new(build(&x), &x);
        // Recorded at the singular point itself, by reverse over reverse.
        let h = Graph::new();
        let xs = h.vars(&at);
        let y = build(&xs);
        for v in [[1.0, 0.0], [0.0, 1.0]] {
            let expected = higher::hvp(y, &xs, &v);
            let mut hv = [0.0; 2];
            replay.hvp(&at, &v, &mut ws, &mut hv).unwrap();
            for (a, b) in hv.iter().zip(&expected) {
                let same = a.to_bits() == b.to_bits()
                    || (a.is_finite() && (a - b).abs() <= 1e-12 * b.abs());
                assert!(same, "replay {a} vs hvp {b} at {at:?} along {v:?}");
            }
        }
    }
}
