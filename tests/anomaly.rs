//! Anomaly mode: when the output or a gradient is NaN or infinite, the first op the output
//! depends on whose value is NaN or infinite, or else the op whose backward produced the
//! non-finite gradient, is reported with its name, its input values and the line of user
//! code that recorded it (`tests/singular_points.rs` checks that unused nodes and attention
//! masks are not); with the mode off (the default) nothing is checked and IEEE arithmetic
//! runs its course.
//!
//! Every expected location is the `line!()` written on the same line as the op, so the
//! tests check that `#[track_caller]` carries the caller's line through operators,
//! methods, `Graph::sum`/`dot`, the `Scalar` trait and `Var::grad`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tapegrad::{Anomaly, Error, Graph, Scalar, Var};

/// Discards a value (most are `Copy`, so `drop` would say nothing).
fn ignore<T>(_: T) {}

/// The anomaly `y.try_backward()` reports; fails the test if there is none.
fn reported(y: Var<'_>) -> Anomaly {
    match y.try_backward() {
        Err(Error::Anomaly(a)) => *a,
        other => panic!("expected an anomaly, got {other:?}"),
    }
}

/// Checks the op, inputs (NaN-aware), output, gradient kind and source line.
#[track_caller]
fn assert_anomaly(a: &Anomaly, op: &str, inputs: &[f64], line: u32) {
    assert_eq!(a.op, op, "{a}");
    assert_eq!(a.inputs.len(), inputs.len(), "{a}");
    for (got, want) in a.inputs.iter().zip(inputs) {
        assert!(got == want || (got.is_nan() && want.is_nan()), "{a}");
    }
    let location = a.location.unwrap_or_else(|| panic!("no location in {a}"));
    assert_eq!(location.file(), file!(), "{a}");
    assert_eq!(location.line(), line, "{a}");
}

#[test]
fn ln_of_zero_is_reported_at_its_line() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let x = g.var(0.0);
    let (y, line) = (x.ln(), line!());
    let loss = y * 2.0 + 1.0;
    let a = reported(loss);
    // ln 0 = -inf, a forward anomaly (no gradient involved).
    assert_anomaly(&a, "ln", &[0.0], line);
    assert_eq!(a.output, f64::NEG_INFINITY);
    assert_eq!(a.gradient, None);
    let message = a.to_string();
    assert!(message.contains("ln of [0.0] gave -inf"), "{message}");
    assert!(
        message.contains(&format!("{}:{line}", file!())),
        "{message}"
    );
}

#[test]
fn zero_over_zero_is_reported_at_its_line() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let (x, y) = (g.var(0.0), g.var(0.0));
    let (q, line) = (x / y, line!());
    let a = reported(q.exp());
    assert_anomaly(&a, "/", &[0.0, 0.0], line);
    assert!(a.output.is_nan());
}

#[test]
fn sqrt_of_minus_one_is_reported_at_its_line() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let x = g.var(-1.0);
    let (y, line) = (x.sqrt(), line!());
    let a = reported(y);
    assert_anomaly(&a, "sqrt", &[-1.0], line);
    assert!(a.output.is_nan());
}

#[test]
fn exp_overflow_is_reported_at_its_line() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let x = g.var(1000.0);
    // e^1000 overflows f64 (the largest is about e^709.78).
    let (y, line) = (x.exp(), line!());
    assert_eq!(g.anomaly().map(|a| a.op), Some("exp"));
    let a = reported(y * 2.0);
    assert_anomaly(&a, "exp", &[1000.0], line);
    assert_eq!(a.output, f64::INFINITY);
    // tanh(inf) = 1 with gradient 0 (sech^2 inf = 0, the true value to f64 precision): the
    // infinity reaches no non-finite value or gradient, so the backward does not report it.
    assert_eq!(y.tanh().try_backward().map(|gr| gr[x]), Ok(0.0));
}

#[test]
fn infinite_gradient_of_sqrt_at_zero_is_reported_at_its_line() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let x = g.var(0.0);
    // sqrt(0) = 0 is a fine value, but d sqrt(x)/dx = 1 / (2 sqrt x) is infinite at 0:
    // the anomaly is in the backward, and names the op whose rule produced it.
    let (y, line) = (x.sqrt(), line!());
    let loss = y * 3.0;
    assert_eq!(g.anomaly(), None);
    let a = reported(loss);
    assert_anomaly(&a, "sqrt", &[0.0], line);
    assert_eq!(a.output, 0.0);
    assert_eq!(a.gradient, Some(f64::INFINITY));
    assert!(a.to_string().contains("the backward of sqrt"), "{a}");
}

#[test]
fn off_by_default_and_no_errors_then() {
    let g = Graph::new();
    assert!(!g.anomaly_mode());
    let (zero, minus_one, big) = (g.var(0.0), g.var(-1.0), g.var(1000.0));
    let values = [
        zero.ln(),
        zero / zero,
        minus_one.sqrt(),
        big.exp(),
        zero.sqrt(),
    ];
    assert_eq!(g.anomaly(), None);
    // IEEE results, no error: the mode is what turns them into reports.
    let [ln0, nan, sqrt_neg, inf, sqrt0] = values.map(|v| v.value());
    assert_eq!((ln0, inf, sqrt0), (f64::NEG_INFINITY, f64::INFINITY, 0.0));
    assert!(nan.is_nan() && sqrt_neg.is_nan());
    let grads = values[4]
        .try_backward()
        .expect("no check when the mode is off");
    assert_eq!(grads[zero], f64::INFINITY); // 1 / (2 sqrt 0)
    for v in values {
        assert!(v.try_backward().is_ok());
        assert!(v.try_grad(&[zero]).is_ok());
    }
}

#[test]
fn the_first_anomaly_is_the_one_reported() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let x = g.var(0.0);
    let (first, line) = (x.ln(), line!());
    let second = (x - 1.0).sqrt(); // NaN too, but later
    assert_anomaly(&reported(first + second), "ln", &[0.0], line);
    assert_anomaly(&g.anomaly().expect("recorded"), "ln", &[0.0], line);
}

#[test]
fn an_anomaly_after_the_output_is_not_its_concern() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let x = g.var(0.0);
    let y = x * 2.0;
    let _later = x.ln();
    // ln(0) was recorded after y, so y's backward cannot involve it.
    assert_eq!(y.try_backward().expect("y is clean")[x], 2.0);
}

#[test]
fn a_released_anomaly_is_forgotten() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let x = g.var(0.0);
    let mark = g.mark();
    let _ = x.ln();
    assert!(g.anomaly().is_some());
    g.release(mark);
    assert_eq!(g.anomaly(), None);
    assert_eq!((x * 3.0).try_backward().expect("clean")[x], 3.0);
}

#[test]
fn backward_panics_with_the_report() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let x = g.var(-1.0);
    let (y, line) = (x.sqrt(), line!());
    let payload = catch_unwind(AssertUnwindSafe(|| y.backward())).expect_err("must panic");
    let message = payload
        .downcast_ref::<String>()
        .expect("a formatted message");
    let expected = format!(
        "tapegrad anomaly: sqrt of [-1.0] gave NaN, recorded at {}:{line}:",
        file!()
    );
    assert!(message.starts_with(&expected), "{message}");
}

/// Each binary operator and operand kind, each producing an overflow or NaN on its own
/// line from finite operands.
#[test]
fn every_operator_reports_its_own_line() {
    type Case = fn(&Graph) -> (Var<'_>, u32);
    let big = 1e308;
    let cases: Vec<(&str, Vec<f64>, Case)> = vec![
        ("+", vec![big, big], |g| {
            (g.var(1e308) + g.var(1e308), line!())
        }),
        ("+", vec![big, big], |g| (g.var(1e308) + 1e308, line!())),
        ("+", vec![big, big], |g| (1e308 + g.var(1e308), line!())),
        ("-", vec![big, -big], |g| {
            (g.var(1e308) - g.var(-1e308), line!())
        }),
        ("-", vec![big, -big], |g| (g.var(1e308) - -1e308, line!())),
        ("-", vec![big, -big], |g| (1e308 - g.var(-1e308), line!())),
        ("*", vec![big, 10.0], |g| {
            (g.var(1e308) * g.var(10.0), line!())
        }),
        ("*", vec![big, 10.0], |g| (g.var(1e308) * 10.0, line!())),
        ("*", vec![big, 10.0], |g| (1e308 * g.var(10.0), line!())),
        ("/", vec![1.0, 0.0], |g| (g.var(1.0) / g.var(0.0), line!())),
        ("/", vec![1.0, 0.0], |g| (g.var(1.0) / 0.0, line!())),
        ("/", vec![1.0, 0.0], |g| (1.0 / g.var(0.0), line!())),
        ("powf", vec![-1.0, 0.5], |g| {
            (g.var(-1.0).powf(g.var(0.5)), line!())
        }),
        ("powf", vec![-1.0, 0.5], |g| {
            (g.var(-1.0).powf(0.5), line!())
        }),
        ("powf", vec![-1.0, 0.5], |g| {
            (tapegrad::powf(-1.0, g.var(0.5)), line!())
        }),
        ("powi", vec![10.0, 400.0], |g| {
            (g.var(10.0).powi(400), line!())
        }),
        ("+", vec![big, big], |g| {
            let mut x = g.var(1e308);
            x += 1e308;
            (x, line!() - 1)
        }),
        ("/", vec![1.0, 0.0], |g| {
            let mut x = g.var(1.0);
            x /= g.var(0.0);
            (x, line!() - 1)
        }),
    ];
    for (op, inputs, case) in cases {
        let g = Graph::new();
        g.set_anomaly_mode(true);
        let (y, line) = case(&g);
        assert_anomaly(&reported(y), op, &inputs, line);
    }
}

/// Each unary method on a NaN input recorded before the mode was turned on: the method
/// is then the first op with a non-finite value, and its line is the one reported.
#[test]
fn every_method_reports_its_own_line() {
    type Case = fn(Var<'_>) -> (Var<'_>, u32);
    let cases: Vec<(&str, Case)> = vec![
        ("neg", |x| (-x, line!())),
        ("exp", |x| (x.exp(), line!())),
        ("ln", |x| (x.ln(), line!())),
        ("sqrt", |x| (x.sqrt(), line!())),
        ("recip", |x| (x.recip(), line!())),
        ("sin", |x| (x.sin(), line!())),
        ("cos", |x| (x.cos(), line!())),
        ("tanh", |x| (x.tanh(), line!())),
        ("sinh", |x| (x.sinh(), line!())),
        ("cosh", |x| (x.cosh(), line!())),
        ("abs", |x| (x.abs(), line!())),
        ("relu", |x| (x.relu(), line!())),
        ("sigmoid", |x| (x.sigmoid(), line!())),
        ("gelu", |x| (x.gelu(), line!())),
        ("powi", |x| (x.powi(2), line!())),
        ("powf", |x| (x.powf(2.0), line!())),
        ("exp", |x| (x.apply(tapegrad::Unary::Exp), line!())),
        ("*", |x| (x.try_mul(2.0).expect("recorded"), line!())),
    ];
    for (op, case) in cases {
        let g = Graph::new();
        let x = g.var(f64::NAN);
        g.set_anomaly_mode(true);
        let (y, line) = case(x);
        let a = reported(y);
        assert_eq!(a.op, op, "{a}");
        assert!(a.output.is_nan(), "{a}");
        let location = a.location.expect("recorded in anomaly mode");
        assert_eq!((location.file(), location.line()), (file!(), line), "{a}");
    }
}

/// Inputs are checked too, also when made in bulk by `vars`: the first bad one is
/// reported, at the line of the call.
#[test]
fn a_nan_input_from_vars_is_reported_at_its_line() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let (xs, line) = (g.vars(&[1.0, f64::NAN, f64::INFINITY]), line!());
    assert_eq!(xs.len(), 3);
    let a = g.anomaly().expect("the NaN input is an anomaly");
    assert_eq!(a.op, "input");
    assert!(a.output.is_nan(), "{a}");
    let location = a.location.expect("a location");
    assert_eq!((location.file(), location.line()), (file!(), line));
    assert_eq!(xs[2].value(), f64::INFINITY);
}

#[test]
fn sum_and_dot_report_their_line() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let xs = g.vars(&[1e308, 1e308]);
    let (s, line) = (g.sum(xs.iter().copied()), line!());
    assert_anomaly(&reported(s), "sum", &[1e308, 1e308], line);

    let g = Graph::new();
    g.set_anomaly_mode(true);
    let xs = g.vars(&[1e200, 1.0]);
    let (d, line) = (g.dot(&xs, &[1e200, 0.0]), line!());
    assert_anomaly(&reported(d), "dot", &[1e200, 1.0, 1e200, 0.0], line);

    // logsumexp never overflows, but a NaN operand recorded before the mode gives NaN.
    let g = Graph::new();
    let x = g.var(f64::NAN);
    g.set_anomaly_mode(true);
    let (l, line) = (g.logsumexp([x, x]), line!());
    assert_anomaly(&reported(l), "logsumexp", &[f64::NAN, f64::NAN], line);
}

/// Code written once over `Scalar` reports the line inside the generic function.
#[test]
fn generic_code_reports_the_generic_line() {
    fn entropy_term<T: Scalar>(p: T) -> (T, u32) {
        (p * p.ln(), line!())
    }
    fn total<T: Scalar>(xs: &[T]) -> (T, u32) {
        (T::sum(xs), line!())
    }
    fn weighted<T: Scalar>(a: &[T], b: &[T]) -> (T, u32) {
        (T::dot(a, b), line!())
    }
    fn lifted<T: Scalar>(x: T) -> (T, u32) {
        (x.lift(f64::INFINITY), line!())
    }

    let g = Graph::new();
    g.set_anomaly_mode(true);
    let p = g.var(0.0);
    // p ln p at p = 0: ln 0 = -inf is the first anomaly (the product 0 * -inf is NaN after).
    let (y, line) = entropy_term(p);
    assert_anomaly(&reported(y), "ln", &[0.0], line);

    let g = Graph::new();
    g.set_anomaly_mode(true);
    let xs = g.vars(&[1e308, 1e308]);
    let (y, line) = total(&xs);
    assert_anomaly(&reported(y), "sum", &[1e308, 1e308], line);

    let g = Graph::new();
    g.set_anomaly_mode(true);
    let xs = g.vars(&[1e300, 1e300]);
    let (y, line) = weighted(&xs, &xs);
    assert_anomaly(&reported(y), "dot", &[1e300; 4], line);

    let g = Graph::new();
    g.set_anomaly_mode(true);
    let (y, line) = lifted(g.var(1.0));
    assert_anomaly(&reported(y), "constant", &[], line);
}

#[test]
fn grad_reports_like_backward() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let x = g.var(0.0);
    let (y, line) = (x.sqrt(), line!());
    match y.try_grad(&[x]) {
        Err(Error::Anomaly(a)) => {
            assert_anomaly(&a, "sqrt", &[0.0], line);
            assert_eq!(a.gradient, Some(f64::INFINITY));
        }
        other => panic!("expected an anomaly, got {other:?}"),
    }
}

/// x^1.5 at 0: the first derivative 1.5 x^0.5 = 0 is fine; the second, 0.75 x^-0.5, is
/// infinite, in the backward of the `powf(x, 0.5)` node that the first `grad` recorded.
/// That node was recorded by tapegrad on the user's behalf: it is reported at the line
/// of the `grad` call that made it.
#[test]
fn second_derivative_anomaly_points_at_the_grad_call() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let x = g.var(0.0);
    let y = x.powf(1.5);
    let (dy, line) = (y.grad(&[x])[0], line!());
    assert_eq!(dy.value(), 0.0);
    match dy.try_grad(&[x]) {
        Err(Error::Anomaly(a)) => {
            assert_anomaly(&a, "powf", &[0.0, 0.5], line);
            assert_eq!(a.gradient, Some(f64::INFINITY));
        }
        other => panic!("expected an anomaly, got {other:?}"),
    }
}

/// Misuse panics point at the user's line too, not at a line inside tapegrad.
#[test]
fn misuse_panics_point_at_the_callers_line() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let hook_seen = Arc::clone(&seen);
    let this_test = std::thread::current().id();
    let previous = std::panic::take_hook();
    // The hook is process-wide; other tests may panic on their threads meanwhile.
    std::panic::set_hook(Box::new(move |info| {
        if let Some(l) = info
            .location()
            .filter(|_| std::thread::current().id() == this_test)
        {
            let mut seen = hook_seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.push((l.file().to_string(), l.line()));
        }
    }));
    let g = Graph::new();
    let h = Graph::new();
    let mark = g.mark();
    let gone = g.var(1.0);
    g.release(mark);
    let other = h.var(1.0);
    let panics = |f: &dyn Fn()| catch_unwind(AssertUnwindSafe(f)).is_err();
    let lines = [
        (panics(&|| ignore(gone.value())), line!()),
        (panics(&|| ignore(gone.exp())), line!()),
        (panics(&|| ignore(gone + 1.0)), line!()),
        (panics(&|| ignore(g.sum([other]))), line!()),
        (panics(&|| ignore(g.dot(&[other], &[1.0]))), line!()),
        (panics(&|| ignore(gone.backward())), line!()),
        (panics(&|| ignore(gone.grad(&[]))), line!()),
        (panics(&|| g.release(h.mark())), line!()),
    ];
    std::panic::set_hook(previous);
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let expected: Vec<(String, u32)> = lines
        .iter()
        .map(|&(panicked, line)| {
            assert!(panicked);
            (file!().to_string(), line)
        })
        .collect();
    assert_eq!(seen, expected);
}
