//! The gradient checker itself: it passes correct gradients, catches wrong ones (a
//! detached operand, a kink), names the worst input in its report, judges like numpy's
//! `allclose`, and re-records on one graph released between evaluations.

use std::cell::Cell;

use tapegrad::check::{Entry, Report, Tolerance, gradcheck};
use tapegrad::{Graph, Var};

#[test]
fn passes_smooth_functions_of_many_ops() {
    // f = sum over every smooth op, so each op's rule is checked at once.
    let report = gradcheck(
        |g, x| {
            let terms = [
                x[0].exp() * x[1].sin(),
                x[1].cos() / (x[2].powi(2) + 1.0),
                x[2].tanh() - x[3].sigmoid(),
                (x[3] * x[3] + 1.0).ln().sqrt(),
                x[0].gelu() * x[4].sinh(),
                x[4].cosh().recip(),
                x[0].powf(x[5]) + tapegrad::powf(2.0, x[5]),
                2.0 / x[5] - x[1] * 3.0,
            ];
            g.sum(terms)
        },
        &[0.4, -1.3, 0.8, 2.1, -0.6, 1.7],
        Tolerance::default(),
    );
    report.assert_passed();
    assert_eq!(report.entries.len(), 6);
    for (i, e) in report.entries.iter().enumerate() {
        assert_eq!(e.input, i);
    }
}

#[test]
fn passes_at_large_inputs_thanks_to_the_relative_step() {
    // d/dx x^2 = 2x at x = 1e8: a fixed step of 1e-6 would be lost next to 1e8 (its
    // ulp is 1.5e-8, so x + 1e-6 moves by a rounded 67 ulps); the relative step moves by 100.
    let report = gradcheck(|_, x| x[0] * x[0] * 1e-8, &[1e8], Tolerance::default());
    report.assert_passed();
    approx::assert_relative_eq!(report.entries[0].tape, 2.0, max_relative = 1e-15);
}

#[test]
fn catches_a_detached_operand_and_names_that_input() {
    // f(x) = x0 * c + x1^2 + x2 where c is a constant copy of x1's value: the value is
    // x0 x1 + x1^2 + x2, but the tape does not see that c depends on x1, so its gradient
    // for x1 is 2 x1 instead of x0 + 2 x1 (the classic "detached tensor" bug).
    let report = gradcheck(
        |g, x| {
            let c = g.constant(x[1].value());
            x[0] * c + x[1].powi(2) + x[2]
        },
        &[3.0, 0.5, -2.0],
        Tolerance::default(),
    );
    assert!(!report.passed());
    let worst = report.worst_abs();
    assert_eq!(worst.input, 1);
    approx::assert_relative_eq!(worst.tape, 1.0, max_relative = 1e-12); // 2 x1
    approx::assert_relative_eq!(worst.numeric, 4.0, max_relative = 1e-8); // x0 + 2 x1
    assert_eq!(report.failures().len(), 1);
    assert!(report.entries[0].passes(&report.tolerance));
    assert!(report.entries[2].passes(&report.tolerance));

    let text = report.to_string();
    assert!(text.starts_with("gradcheck FAILED: 3 input(s)"), "{text}");
    assert!(
        text.contains("worst absolute error 3.000e+00 at input 1"),
        "{text}"
    );
    assert!(text.contains("1 of 3 input(s) fail"), "{text}");
}

#[test]
fn assert_passed_panics_with_the_report() {
    let report = gradcheck(
        |g, x| x[0] * g.constant(x[0].value()),
        &[2.0],
        Tolerance::default(),
    );
    let message = std::panic::catch_unwind(|| report.assert_passed())
        .expect_err("a wrong gradient must fail")
        .downcast::<String>()
        .expect("the panic message is the formatted report");
    assert!(message.contains("gradcheck FAILED"), "{message}");
    assert!(message.contains("at input 0"), "{message}");
}

#[test]
fn relu_at_its_kink_fails_and_away_from_it_passes() {
    // At 0 the tape uses relu'(0) = 0 while the central difference (h - 0) / 2h = 1/2.
    let at_kink = gradcheck(|_, x| x[0].relu(), &[0.0], Tolerance::default());
    assert!(!at_kink.passed());
    assert_eq!(at_kink.worst_abs().tape, 0.0);
    approx::assert_relative_eq!(at_kink.worst_abs().numeric, 0.5, max_relative = 1e-9);
    gradcheck(|_, x| x[0].relu(), &[0.3], Tolerance::default()).assert_passed();
    gradcheck(|_, x| x[0].relu(), &[-0.3], Tolerance::default()).assert_passed();
}

#[test]
fn abs_at_zero_passes_because_its_kink_is_symmetric() {
    // A known limit of central differences: (|h| - |-h|) / 2h = 0 = the tape's abs'(0).
    let report = gradcheck(|_, x| x[0].abs(), &[0.0], Tolerance::default());
    report.assert_passed();
    assert_eq!(report.entries[0].numeric, 0.0);
}

#[test]
fn an_infinite_tape_gradient_fails_and_is_reported_worst() {
    // sqrt at 0: the tape's derivative 1 / (2 sqrt 0) is infinite; sqrt(-h) is NaN.
    let report = gradcheck(
        |_, x| x[0].sqrt() + x[1] * 2.0,
        &[0.0, 1.0],
        Tolerance::default(),
    );
    assert!(!report.passed());
    assert_eq!(report.worst_abs().input, 0);
    assert_eq!(report.worst_rel().input, 0);
    assert!(report.entries[1].passes(&report.tolerance));
}

#[test]
fn worst_abs_and_worst_rel_can_be_different_inputs() {
    let report = Report {
        entries: vec![
            Entry::new(0, 100.0, 100.1), // abs 0.1, rel 1e-3
            Entry::new(1, 0.002, 0.001), // abs 1e-3, rel 1
        ],
        tolerance: Tolerance::default(),
        value: 0.0,
    };
    assert_eq!(report.worst_abs().input, 0);
    assert_eq!(report.worst_rel().input, 1);
    let text = report.to_string();
    assert!(
        text.contains("worst absolute error 1.000e-01 at input 0"),
        "{text}"
    );
    assert!(
        text.contains("worst relative error 1.000e+00 at input 1"),
        "{text}"
    );
}

#[test]
fn the_tolerance_is_numpys_allclose() {
    // passes iff |tape - numeric| <= abs + rel * |numeric|
    let tol = Tolerance {
        step: 1e-6,
        abs: 0.5,
        rel: 0.25,
    };
    // numeric 2: allowed 0.5 + 0.5 = 1
    assert!(Entry::new(0, 3.0, 2.0).passes(&tol));
    assert!(!Entry::new(0, 3.0 + 1e-9, 2.0).passes(&tol));
    // relative to the numerical value, not the tape's: numeric 0 allows only abs.
    assert!(Entry::new(0, 0.5, 0.0).passes(&tol));
    assert!(!Entry::new(0, 0.6, 0.0).passes(&tol));
    assert!(!Entry::new(0, f64::NAN, 0.0).passes(&tol));
}

#[test]
fn evaluations_reuse_one_graph_released_between_them() {
    // A function that reads a raw value (which a branch could depend on) cannot be
    // replayed: it is called once for the tape and twice per input, each call starting
    // from a graph that holds nothing but its own inputs, so memory does not grow with
    // the inputs.
    let calls = Cell::new(0);
    let n = 50;
    let at: Vec<f64> = (0..n).map(|i| i as f64 * 0.1).collect();
    let report = gradcheck(
        |g, x| {
            calls.set(calls.get() + 1);
            assert_eq!(
                g.len(),
                x.len(),
                "leftover nodes from an earlier evaluation"
            );
            let _ = x[0].value();
            g.sum(x.iter().map(|v| v.sin()))
        },
        &at,
        Tolerance::default(),
    );
    report.assert_passed();
    assert_eq!(calls.get(), 1 + 2 * n);
}

#[test]
fn a_function_without_raw_reads_is_recorded_once_and_replayed() {
    // The same numbers as recording at every point (the replay is bit for bit a fresh
    // recording), from one call of f.
    thread_local!(static CALLS: Cell<usize> = const { Cell::new(0) });
    fn f<'g>(_: &'g Graph, x: &[Var<'g>]) -> Var<'g> {
        CALLS.with(|c| c.set(c.get() + 1));
        (x[0] * x[1]).tanh() + x[2].relu() * x[0].exp()
    }
    let calls = || CALLS.with(Cell::get);
    let at = [0.3, -1.2, 2.0];
    let replayed = gradcheck(f, &at, Tolerance::default());
    assert_eq!(calls(), 1);
    let recorded = gradcheck(
        |g, x| {
            let _ = x[0].value(); // forces a recording per point
            f(g, x)
        },
        &at,
        Tolerance::default(),
    );
    assert_eq!(calls(), 1 + 1 + 2 * at.len());
    for (a, b) in replayed.entries.iter().zip(&recorded.entries) {
        assert_eq!(a.numeric.to_bits(), b.numeric.to_bits());
        assert_eq!(a.tape.to_bits(), b.tape.to_bits());
    }
    // A guard that flips at a perturbed point: that point is recorded again.
    let calls = Cell::new(0);
    let report = gradcheck(
        |_, x| {
            calls.set(calls.get() + 1);
            if x[0].gt(1.0) {
                x[0] * 2.0
            } else {
                x[0] * 2.0 + 0.0
            }
        },
        &[1.0 + 1e-9],
        Tolerance::default(),
    );
    report.assert_passed();
    assert_eq!(calls.get(), 2, "the recording and the point below 1");
}

#[test]
fn report_value_is_f_at_the_point() {
    let report = gradcheck(|_, x| x[0] * x[1], &[3.0, 4.0], Tolerance::default());
    assert_eq!(report.value, 12.0);
    assert!(report.to_string().contains("f = 12"));
}

#[test]
#[should_panic(expected = "no inputs to check")]
fn an_empty_point_panics() {
    gradcheck(|g: &Graph, _| g.constant(1.0), &[], Tolerance::default());
}

#[test]
#[should_panic(expected = "input 1 is NaN")]
fn a_non_finite_point_panics() {
    gradcheck(|_, x| x[0] + x[1], &[1.0, f64::NAN], Tolerance::default());
}

#[test]
#[should_panic(expected = "step must be positive")]
fn a_zero_step_panics() {
    let tol = Tolerance {
        step: 0.0,
        ..Tolerance::default()
    };
    gradcheck(|_, x| x[0], &[1.0], tol);
}
