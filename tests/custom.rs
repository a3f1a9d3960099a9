//! User-defined functions (`CustomFn`, `ScalarFn`) and preaccumulation (`Graph::fuse`):
//! one node each, the user's partials checked against closed forms and central
//! differences, a wrong derivative caught by `check::gradcheck`, second order where a
//! rule is given and a named error where it is not.

use std::sync::Arc;

use approx::assert_relative_eq;
use tapegrad::check::{Tolerance, gradcheck};
use tapegrad::higher::{gradgradcheck, hessian};
use tapegrad::{CustomFn, Error, Graph, Op, Scalar, ScalarFn, Var};

/// `x sin(y)`: first partials only.
struct XSinY;

impl CustomFn for XSinY {
    fn name(&self) -> &'static str {
        "x_sin_y"
    }
    fn value(&self, xs: &[f64]) -> f64 {
        xs[0] * xs[1].sin()
    }
    fn partials(&self, xs: &[f64], _y: f64, out: &mut [f64]) {
        out[0] = xs[1].sin();
        out[1] = xs[0] * xs[1].cos();
    }
}

/// The same function with a wrong partial (`d/dy` missing its factor `x`), as a user
/// might write it by mistake.
struct XSinYWrong;

impl CustomFn for XSinYWrong {
    fn name(&self) -> &'static str {
        "x_sin_y_wrong"
    }
    fn value(&self, xs: &[f64]) -> f64 {
        xs[0] * xs[1].sin()
    }
    fn partials(&self, xs: &[f64], _y: f64, out: &mut [f64]) {
        out[0] = xs[1].sin();
        out[1] = xs[1].cos();
    }
}

/// `ln(a^2 + b^2 + c^2) / 2`, the log-norm, with its partials over `Scalar` (every order).
struct LogNorm;

impl ScalarFn for LogNorm {
    fn name(&self) -> &'static str {
        "log_norm"
    }
    fn value(&self, xs: &[f64]) -> f64 {
        0.5 * xs.iter().map(|x| x * x).sum::<f64>().ln()
    }
    fn partials<T: Scalar>(&self, xs: &[T], _y: T, out: &mut [T]) {
        // d/dx_k = x_k / |x|^2
        let squares: Vec<T> = xs.iter().map(|&x| x * x).collect();
        let norm2 = T::sum(&squares);
        for (o, &x) in out.iter_mut().zip(xs) {
            *o = x / norm2;
        }
    }
}

fn arc(f: impl CustomFn + 'static) -> Arc<dyn CustomFn> {
    Arc::new(f)
}

#[test]
fn a_custom_function_is_one_named_node_with_the_users_partials() {
    let f = arc(XSinY);
    let g = Graph::new();
    let (x, y) = (g.var(1.5), g.var(0.7));
    let before = g.len();
    let z = g.custom(&f, &[x, y]);
    assert_eq!(g.len(), before + 1, "one node");
    assert_eq!(z.op(), Op::Custom(0));
    assert_eq!(z.op_name(), "x_sin_y");
    assert_eq!(z.value(), 1.5 * 0.7f64.sin());
    // Used inside a bigger expression: the chain rule through it.
    let w = (z * 2.0).exp();
    let grads = w.backward();
    let outer = 2.0 * w.value();
    assert_relative_eq!(grads[x], outer * 0.7f64.sin(), max_relative = 1e-15);
    assert_relative_eq!(grads[y], outer * 1.5 * 0.7f64.cos(), max_relative = 1e-15);
    // The same Arc is registered once; a second function gets the next code.
    let z2 = g.custom(&f, &[y, x]);
    assert_eq!(z2.op(), Op::Custom(0));
    let other = arc(LogNorm);
    assert_eq!(g.custom(&other, &[x]).op(), Op::Custom(1));
}

#[test]
fn gradcheck_passes_right_partials_and_catches_a_wrong_one() {
    let right = arc(XSinY);
    let report = gradcheck(
        |g, v| g.custom(&right, v),
        &[1.5, 0.7],
        Tolerance::default(),
    );
    assert!(report.passed(), "{report}");
    let wrong = arc(XSinYWrong);
    let report = gradcheck(
        |g, v| g.custom(&wrong, v),
        &[1.5, 0.7],
        Tolerance::default(),
    );
    assert!(!report.passed(), "a wrong d/dy must fail:\n{report}");
    // The failing entry is d/dy (input 1), off by the factor x = 1.5.
    assert!(report.to_string().contains("FAILED"), "{report}");
}

#[test]
fn second_order_without_a_rule_is_an_error_naming_the_function() {
    let f = arc(XSinY);
    let g = Graph::new();
    let (x, y) = (g.var(1.5), g.var(0.7));
    let z = g.custom(&f, &[x, y]).powi(2);
    let len = g.len();
    let err = z.try_grad(&[x, y]).unwrap_err();
    assert_eq!(err, Error::NoSecondOrder { op: "x_sin_y" });
    assert!(err.to_string().contains("x_sin_y"), "{err}");
    assert_eq!(g.len(), len, "nothing left recorded");
    // Gradients that do not pass through it still work.
    let u = x.powi(3) + z.value();
    assert_eq!(u.grad(&[x])[0].value(), 3.0 * 1.5 * 1.5);
    // higher::hessian reports it too.
    assert!(tapegrad::higher::try_hessian(z, &[x, y]).is_err());
}

#[test]
fn a_scalar_fn_gives_every_order() {
    let f = arc(LogNorm);
    let point = [1.0, -2.0, 0.5];
    let g = Graph::new();
    let v = g.vars(&point);
    let y = g.custom(&f, &v);
    let n2: f64 = point.iter().map(|x| x * x).sum();
    assert_relative_eq!(y.value(), 0.5 * n2.ln(), max_relative = 1e-15);
    let grads = y.backward();
    for k in 0..3 {
        assert_relative_eq!(grads[v[k]], point[k] / n2, max_relative = 1e-15);
    }
    // d2/dx_i dx_j (ln|x|) = d_ij / |x|^2 - 2 x_i x_j / |x|^4
    let h = hessian(y, &v);
    for i in 0..3 {
        for j in 0..3 {
            let want = f64::from(u8::from(i == j)) / n2 - 2.0 * point[i] * point[j] / (n2 * n2);
            assert_relative_eq!(h[i][j], want, max_relative = 1e-14, epsilon = 1e-16);
        }
    }
    gradcheck(|g, v| g.custom(&f, v), &point, Tolerance::default()).assert_passed();
    gradgradcheck(|g, v| g.custom(&f, v).exp(), &point, Tolerance::default()).assert_passed();
}

/// The name shows in anomaly reports and in DOT drawings.
#[test]
fn the_name_shows_in_anomalies_and_drawings() {
    let f = arc(XSinY);
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let origin = g.vars(&[0.0, 0.0]);
    let z = g.custom(&arc(LogNorm), &origin); // ln 0 / 2 = -inf
    let Err(Error::Anomaly(a)) = z.try_backward() else {
        panic!("an anomaly")
    };
    assert_eq!(a.op, "log_norm");
    assert!(
        a.to_string().contains("log_norm of [0.0, 0.0] gave -inf"),
        "{a}"
    );

    let h = Graph::new();
    let (x, y) = (h.var(1.0), h.var(2.0));
    let dot = tapegrad::dot::draw_dot(h.custom(&f, &[x, y]), None);
    assert!(dot.contains("x_sin_y"), "{dot}");
}

#[test]
fn bad_inputs_are_errors() {
    let f = arc(XSinY);
    let (g, h) = (Graph::new(), Graph::new());
    let mark = g.mark();
    let x = g.var(1.0);
    g.release(mark);
    assert_eq!(
        g.try_custom(&f, &[x, g.var(1.0)]).err(),
        Some(Error::Released)
    );
    assert!(matches!(
        g.try_custom(&f, &[g.var(1.0), h.var(1.0)]),
        Err(Error::ForeignHandle { .. })
    ));
}

/// One graph numbers over 200 distinct functions (the op codes left in a byte); the next
/// is a clear error, and reusing a registered one still works.
#[test]
fn the_registry_is_bounded_and_says_so() {
    let g = Graph::new();
    let x = g.var(1.0);
    let fs: Vec<Arc<dyn CustomFn>> = (0..256).map(|_| arc(XSinY)).collect();
    let registered = fs
        .iter()
        .take_while(|f| g.try_custom(f, &[x, x]).is_ok())
        .count();
    assert!((200..256).contains(&registered), "{registered}");
    let err = g.try_custom(&fs[registered], &[x, x]).unwrap_err();
    assert!(
        err.to_string().contains(&format!("{registered} distinct")),
        "{err}"
    );
    let last = g.custom(&fs[registered - 1], &[x, x]);
    assert_eq!(last.op(), Op::Custom((registered - 1) as u8));
}

// ---------------------------------------------------------------------------------------
// Preaccumulation
// ---------------------------------------------------------------------------------------

/// A layer-norm-like statement of four inputs: `(a - m) / sqrt(v + eps) * w + b` with `m`,
/// `v` the mean and variance of `[a, c]`.
fn statement<'g>(v: &[Var<'g>]) -> Var<'g> {
    let (a, c, w, b) = (v[0], v[1], v[2], v[3]);
    let m = (a + c) * 0.5;
    let var = ((a - m).powi(2) + (c - m).powi(2)) * 0.5;
    (a - m) / (var + 1e-5).sqrt() * w + b
}

#[test]
fn fuse_records_one_node_with_the_plain_gradient() {
    let point = [0.3, -1.2, 1.7, 0.25];
    let g = Graph::new();
    let v = g.vars(&point);
    let plain = statement(&v);
    let plain_nodes = g.len() - 4;
    let plain_grads = plain.backward().wrt_all(&v);
    let before = g.len();
    let fused = g.fuse(&v, |_, xs| statement(xs));
    assert_eq!(g.len(), before + 1, "one node instead of {plain_nodes}");
    assert_eq!(fused.op(), Op::Fused);
    assert_eq!(fused.op_name(), "fused");
    assert_eq!(fused.value(), plain.value());
    assert_eq!(fused.backward().wrt_all(&v), plain_grads);
    // Inside a bigger expression: the chain rule through it.
    let outer = (fused * fused).backward().wrt_all(&v);
    for (o, p) in outer.iter().zip(&plain_grads) {
        assert_relative_eq!(*o, 2.0 * plain.value() * p, max_relative = 1e-15);
    }
    gradcheck(
        |g, v| g.fuse(v, |_, xs| statement(xs)),
        &point,
        Tolerance::default(),
    )
    .assert_passed();
}

#[test]
fn fuse_has_no_second_order_and_says_so() {
    let g = Graph::new();
    let x = g.var(0.5);
    let y = g.fuse(&[x], |_, v| v[0].exp() * v[0]);
    assert_eq!(
        y.try_grad(&[x]).err(),
        Some(Error::NoSecondOrder { op: "fused" })
    );
}

#[test]
fn fuse_in_a_loop_and_nested() {
    let g = Graph::new();
    let xs = g.vars(&[0.1, 0.2, 0.3]);
    let mut total = g.constant(0.0);
    for &x in &xs {
        // Nested: a fused softplus inside a fused statement.
        total += g.fuse(&[x], |s, v| s.fuse(v, |_, w| w[0].softplus()) * v[0]);
    }
    let grads = total.backward().wrt_all(&xs);
    for (k, x) in [0.1f64, 0.2, 0.3].into_iter().enumerate() {
        // d/dx softplus(x) x = sigmoid(x) x + softplus(x)
        let s = 1.0 / (1.0 + (-x).exp());
        assert_relative_eq!(grads[k], s * x + x.exp().ln_1p(), max_relative = 1e-15);
    }
    assert_eq!(
        g.len(),
        3 + 1 + 2 * 3,
        "inputs, the constant, a fused node and a sum per x"
    );
}

#[test]
fn fuse_rejects_bad_inputs() {
    let (g, h) = (Graph::new(), Graph::new());
    assert!(matches!(
        g.try_fuse(&[h.var(1.0)], |_, v| v[0].exp()),
        Err(Error::ForeignHandle { .. })
    ));
}

/// `x y`, whose rule forgets the partial for `y` where `x <= 0`: a slot left unwritten.
struct ForgetsOne;

impl CustomFn for ForgetsOne {
    fn name(&self) -> &'static str {
        "forgets_one"
    }
    fn value(&self, xs: &[f64]) -> f64 {
        xs[0] * xs[1]
    }
    fn partials(&self, xs: &[f64], _y: f64, out: &mut [f64]) {
        out[0] = xs[1];
        if xs[0] > 0.0 {
            out[1] = xs[0];
        }
    }
}

/// A partial left unwritten is an error naming the function and the operand, when the
/// node is recorded and when a replay evaluates it again: never a silent 0.
#[test]
fn an_unwritten_partial_is_an_error_naming_the_operand() {
    let f = arc(ForgetsOne);
    let g = Graph::new();
    let (x, y) = (g.var(-1.0), g.var(3.0));
    let before = g.len();
    let err = g.try_custom(&f, &[x, y]).unwrap_err();
    let Error::BadPartials { op, operand, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((*op, *operand), ("forgets_one", 1));
    assert!(err.to_string().contains("forgets_one") && err.to_string().contains("operand 1"));
    assert_eq!(g.len(), before, "nothing recorded");

    // Recorded where the rule writes both, replayed where it does not.
    let x = g.var(2.0);
    let z = g.custom(&f, &[x, y]);
    assert_eq!(z.backward().wrt_all(&[x, y]), vec![3.0, 2.0]);
    let replay = tapegrad::Replay::new(z, &[x, y]);
    let mut grad = [0.0; 2];
    let mut ws = tapegrad::ReplayWorkspace::new();
    assert_eq!(replay.gradient(&[1.0, 5.0], &mut ws, &mut grad), Ok(5.0));
    assert!(matches!(
        replay.gradient(&[-1.0, 5.0], &mut ws, &mut grad),
        Err(Error::BadPartials {
            op: "forgets_one",
            operand: 1,
            ..
        })
    ));
}

/// `x y` with a second-order rule that returns one partial for two operands, or a partial
/// that was released.
struct ShortRule(bool);

impl CustomFn for ShortRule {
    fn name(&self) -> &'static str {
        "short_rule"
    }
    fn value(&self, xs: &[f64]) -> f64 {
        xs[0] * xs[1]
    }
    fn partials(&self, xs: &[f64], _y: f64, out: &mut [f64]) {
        out[0] = xs[1];
        out[1] = xs[0];
    }
    fn graph_partials<'g>(&self, xs: &[Var<'g>], _y: Var<'g>) -> Option<Vec<Var<'g>>> {
        if self.0 {
            Some(vec![xs[1]])
        } else {
            // A node released before it is returned: it cannot stand for anything.
            let mark = xs[0].graph().mark();
            let gone = xs[0] * 1.0;
            xs[0].graph().release(mark);
            Some(vec![xs[1], gone])
        }
    }
}

/// A second-order rule with the wrong number of partials, or one that is not a node of
/// the graph, is an error naming the function and the operand, from `Var::grad`,
/// `higher::hessian`, `higher::hvp` and `Replay::hvp` alike: never a missing partial taken
/// as 0.
#[test]
fn a_malformed_second_order_rule_is_an_error_naming_the_operand() {
    for (short, operand) in [(true, 1), (false, 1)] {
        let f = arc(ShortRule(short));
        let g = Graph::new();
        let xs = g.vars(&[2.0, 3.0]);
        let z = g.custom(&f, &xs).powi(2);
        let len = g.len();
        let err = z.try_grad(&xs).unwrap_err();
        let Error::BadPartials { op, operand: o, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!((*op, *o), ("short_rule", operand), "{err}");
        assert_eq!(g.len(), len, "nothing left recorded");
        assert!(matches!(
            tapegrad::higher::try_hessian(z, &xs),
            Err(Error::BadPartials { .. })
        ));
        assert!(matches!(
            tapegrad::higher::try_hvp(z, &xs, &[1.0, 0.0]),
            Err(Error::BadPartials { .. })
        ));
        let replay = tapegrad::Replay::new(z, &xs);
        let mut hv = [0.0; 2];
        let got = replay.hvp(
            &[2.0, 3.0],
            &[1.0, 0.0],
            &mut tapegrad::ReplayWorkspace::new(),
            &mut hv,
        );
        assert!(
            matches!(
                got,
                Err(Error::BadPartials {
                    op: "short_rule",
                    ..
                })
            ),
            "{got:?}"
        );
        // The first order is unaffected.
        assert_eq!(
            z.backward().wrt_all(&xs),
            vec![2.0 * 6.0 * 3.0, 2.0 * 6.0 * 2.0]
        );
    }
}

/// `ln(x) + y` with a wrong rule for `d/dx` (`ln(x) / x - ln(x) / x + 1 / (x - 1)`): NaN
/// where it should be `1/x`. Promised finite, so the wrong rule is caught.
struct PromisedFinite;

impl ScalarFn for PromisedFinite {
    fn name(&self) -> &'static str {
        "promised_finite"
    }
    fn value(&self, xs: &[f64]) -> f64 {
        xs[0].ln() + xs[1]
    }
    fn partials<T: Scalar>(&self, xs: &[T], _y: T, out: &mut [T]) {
        // Right except at x = 1, where it is inf - inf + ... = NaN.
        out[0] = (xs[0] - 1.0).recip() * (xs[0] - 1.0) / xs[0];
        out[1] = xs[1] * 0.0 + 1.0;
    }
    fn finite_partials(&self) -> bool {
        true
    }
}

/// A non-finite partial at finite inputs and value, from a function that promises finite
/// ones, is an error naming it and the operand: where a zero adjoint would have turned it
/// into a silent 0.
#[test]
fn a_non_finite_partial_where_finite_is_promised_is_an_error() {
    let f = arc(PromisedFinite);
    let g = Graph::new();
    let (x, y) = (g.var(2.0), g.var(0.5));
    let z = g.custom(&f, &[x, y]);
    assert_relative_eq!(z.backward()[x], 0.5, max_relative = 1e-15);
    let one = g.var(1.0);
    let err = g.try_custom(&f, &[one, y]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BadPartials {
                op: "promised_finite",
                operand: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("promises"), "{err}");
    // Replayed at the bad point.
    let replay = tapegrad::Replay::new(z * 0.0, &[x, y]);
    let got = replay.eval(&[1.0, 0.5], &mut tapegrad::ReplayWorkspace::new());
    assert!(
        matches!(got, Err(Error::BadPartials { operand: 0, .. })),
        "{got:?}"
    );
}
