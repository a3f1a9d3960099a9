//! The compiled replay's behaviour at the edges: outputs that are inputs or constants,
//! inputs nothing depends on, the replay's errors for bad lengths and flipped branches,
//! no fused multiply-add anywhere, sweeps that meet infinities, and threads sharing one
//! compilation.

use tapegrad::{Error, Graph, Replay, ReplayWorkspace};
use tapegrad_jit::{Compiled, Workspace};

/// The compiled gradient and value at `x`, with the replay's, bit for bit.
fn both(replay: &Replay, x: &[f64]) -> (Result<f64, Error>, Vec<f64>) {
    let compiled = Compiled::new(replay).unwrap();
    let n = replay.inputs();
    let (mut grad, mut want) = (vec![f64::NAN; n], vec![0.0; n]);
    let got = compiled.gradient(x, &mut Workspace::new(), &mut grad);
    let expected = replay.gradient(x, &mut ReplayWorkspace::new(), &mut want);
    assert_eq!(got, expected);
    if got.is_ok() {
        let bits = |v: &[f64]| v.iter().map(|g| g.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&grad), bits(&want));
    }
    assert_eq!(
        compiled.eval(x, &mut Workspace::new()),
        replay.eval(x, &mut ReplayWorkspace::new())
    );
    (got, grad)
}

#[test]
fn an_output_that_is_an_input_or_a_constant() {
    let g = Graph::new();
    let x = g.vars(&[1.0, 2.0]);
    assert_eq!(
        both(&Replay::new(x[1], &x), &[3.0, 4.0]),
        (Ok(4.0), vec![0.0, 1.0])
    );
    let w = g.var(5.0); // not an input of the replay: its function is a constant
    let c = w.exp();
    let (value, grad) = both(&Replay::new(c, &x), &[3.0, 4.0]);
    assert_eq!((value, grad), (Ok(5f64.exp()), vec![0.0, 0.0]));
}

#[test]
fn an_input_recorded_after_the_output_gets_a_zero_gradient() {
    let g = Graph::new();
    let x = g.var(1.0);
    let y = x.sin() * x;
    let late = g.var(2.0);
    let (value, grad) = both(&Replay::new(y, &[late, x]), &[7.0, 0.5]);
    assert_eq!(value, Ok(0.5f64.sin() * 0.5));
    assert_eq!(grad[0].to_bits(), 0.0f64.to_bits());
    assert_eq!(grad[1], 0.5f64.cos() * 0.5 + 0.5f64.sin());
}

#[test]
fn bad_lengths_are_the_replays_errors() {
    let g = Graph::new();
    let x = g.vars(&[1.0, 2.0]);
    let replay = Replay::new(x[0] * x[1], &x);
    let compiled = Compiled::new(&replay).unwrap();
    let (mut ws, mut rws) = (Workspace::new(), ReplayWorkspace::new());
    let short = [1.0];
    let err = compiled.eval(&short, &mut ws).unwrap_err();
    assert_eq!(Err(err), replay.eval(&short, &mut rws));
    let mut grad = [0.0; 3];
    let err = compiled
        .gradient(&[1.0, 2.0], &mut ws, &mut grad)
        .unwrap_err();
    assert!(matches!(err, Error::BadOperands { .. }), "{err}");
    assert_eq!(Err(err), replay.gradient(&[1.0, 2.0], &mut rws, &mut grad));
}

#[test]
fn a_flipped_branch_is_the_replays_error_naming_the_first_guard() {
    let g = Graph::new();
    let x = g.vars(&[1.0, 3.0]);
    let a = if x[0].lt(2.0) { x[0] * 2.0 } else { x[0] };
    let b = if x[1].ge(a) { x[1] - a } else { a - x[1] };
    let replay = Replay::new(a * b, &x);
    let compiled = Compiled::new(&replay).unwrap();
    let mut ws = Workspace::new();
    // Both flip at (5, 1): the first recorded one is reported, with its operands.
    let Err(Error::BranchChanged(flip)) = compiled.eval(&[5.0, 1.0], &mut ws) else {
        panic!("no error")
    };
    assert_eq!(
        (flip.comparison, flip.recorded, flip.operands),
        ("<", true, [5.0, 2.0])
    );
    // Only the second at (1, 1).
    let mut grad = [0.0; 2];
    let Err(Error::BranchChanged(flip)) = compiled.gradient(&[1.0, 1.0], &mut ws, &mut grad) else {
        panic!("no error")
    };
    assert_eq!(
        (flip.comparison, flip.recorded, flip.operands),
        (">=", true, [1.0, 2.0])
    );
    // And where nothing flips, the numbers.
    assert_eq!(
        compiled.gradient(&[1.5, 4.0], &mut ws, &mut grad),
        Ok(3.0 * 1.0)
    );
    assert_eq!(grad, [2.0 * 1.0 + 3.0 * -2.0, 3.0]);
}

#[test]
fn no_multiply_and_add_is_fused() {
    // a b + c with a b = 1 - 2^-60 exactly: rounded, a b = 1 and the sum is 0; fused, it
    // would be -2^-60. The same product and sum appear in the sweep: d/dc of
    // (a b + c) * k is k, d/da is b k, and an adjoint sums such products.
    let e = 2f64.powi(-30);
    let (a0, b0) = (1.0 + e, 1.0 - e);
    let g = Graph::new();
    let x = g.vars(&[a0, b0, -1.0]);
    let y = x[0] * x[1] + x[2];
    let replay = Replay::new(y, &x);
    let (value, _) = both(&replay, &[a0, b0, -1.0]);
    assert_eq!(value, Ok(0.0));
    assert_eq!(
        a0.mul_add(b0, -1.0),
        -(2f64.powi(-60)),
        "the FMA would differ"
    );

    // In the sweep: f = (x0 x1) x3 + x0 x2 gives x0 the adjoint x2 + x3 x1 (the second
    // contribution added to the first), the same rounded sum.
    let x = g.vars(&[0.5, b0, -1.0, a0]);
    let f = x[0] * x[1] * x[3] + x[0] * x[2];
    let (_, grad) = both(&Replay::new(f, &x), &[0.5, b0, -1.0, a0]);
    assert_eq!(grad[0].to_bits(), 0f64.to_bits());
}

#[test]
fn a_sweep_through_an_infinite_partial_gives_the_careful_sweeps_numbers() {
    // sqrt at 0 has an infinite partial; times an adjoint of 0 (relu below its kink), the
    // careful sweep passes nothing (a zero factor wins), where the fast one would give NaN.
    let g = Graph::new();
    let x = g.vars(&[0.0, -1.0]);
    let y = x[0].sqrt() * x[1].relu() + x[1];
    let (value, grad) = both(&Replay::new(y, &x), &[0.0, -1.0]);
    assert_eq!((value, grad), (Ok(-1.0), vec![0.0, 1.0]));
    // ln at a subnormal: 1/x overflows, the careful sweep's quotient rescues it.
    let x = g.var(1.0);
    let y = x.ln().exp();
    let (_, grad) = both(&Replay::new(y, &[x]), &[5e-324]);
    assert_eq!(grad, vec![1.0]);
}

#[test]
fn threads_share_one_compilation() {
    let g = Graph::new();
    let x = g.vars(&[1.0, 2.0]);
    let replay = Replay::new((x[0] * x[1]).tanh() + x[0].exp(), &x);
    let compiled = Compiled::new(&replay).unwrap();
    drop(g);
    let results: Vec<(f64, [f64; 2])> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let compiled = &compiled;
                s.spawn(move || {
                    let mut ws = Workspace::new();
                    let mut grad = [0.0; 2];
                    let mut last = 0.0;
                    for i in 0..1000 {
                        let at = [0.25 * t as f64, 0.001 * i as f64];
                        last = compiled.gradient(&at, &mut ws, &mut grad).unwrap();
                    }
                    (last, grad)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (t, (value, grad)) in results.into_iter().enumerate() {
        let mut want = [0.0; 2];
        let at = [0.25 * t as f64, 0.999];
        let v = replay
            .gradient(&at, &mut ReplayWorkspace::new(), &mut want)
            .unwrap();
        assert_eq!((value, grad), (v, want));
    }
}

#[test]
fn a_workspace_moves_between_compilations() {
    let g = Graph::new();
    let x = g.var(2.0);
    let (f, h) = (
        Compiled::new(&Replay::new(x * x, &[x])).unwrap(),
        Compiled::new(&Replay::new(x.exp() + x, &[x])).unwrap(),
    );
    let mut ws = Workspace::new();
    let mut grad = [0.0];
    for t in [0.5, 1.5] {
        assert_eq!(f.gradient(&[t], &mut ws, &mut grad), Ok(t * t));
        assert_eq!(grad, [2.0 * t]);
        assert_eq!(h.gradient(&[t], &mut ws, &mut grad), Ok(t.exp() + t));
        assert_eq!(grad, [t.exp() + 1.0]);
    }
}

/// `x y`, whose rule forgets the partial for `y` where `x <= 0`.
struct ForgetsOne;

impl tapegrad::CustomFn for ForgetsOne {
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

/// User-defined functions and fused nodes run the replay's own evaluation from compiled
/// code: the same numbers bit for bit, the same error for a malformed rule, and the same
/// `BranchChanged` for a guard inside a fused node.
#[test]
fn user_defined_functions_and_fused_nodes_as_the_replay() {
    let f: std::sync::Arc<dyn tapegrad::CustomFn> = std::sync::Arc::new(ForgetsOne);
    let g = Graph::new();
    let x = g.vars(&[1.5, -0.5]);
    let product = g.custom(&f, &x);
    let fused = g.fuse(&x, |_, v| {
        let inner = if v[0].gt(0.0) { v[0].sin() } else { v[0] * 0.5 };
        inner * v[1].exp()
    });
    let y = (product + fused).tanh() * x[1];
    let replay = Replay::new(y, &x);
    for at in [[1.5, -0.5], [0.25, 2.0], [3.0, 40.0], [1e-3, -700.0]] {
        let (value, _) = both(&replay, &at);
        assert!(value.is_ok(), "{at:?}: {value:?}");
    }
    // x[0] <= 0: the rule leaves a partial unwritten, and the fused node's guard flips;
    // the rule is met first, as the interpreter meets it.
    let (value, _) = both(&replay, &[-1.0, 2.0]);
    assert!(matches!(value, Err(Error::BadPartials { .. })), "{value:?}");
    // The fused node alone, past its guard.
    let replay = Replay::new(fused, &x);
    let (value, _) = both(&replay, &[-1.0, 2.0]);
    assert!(matches!(value, Err(Error::BranchChanged(_))), "{value:?}");
}
