//! Replay: a function recorded once and evaluated at new inputs gives, bit for bit, the value
//! and gradient of recording it again at those inputs; where a recorded comparison would go
//! the other way, it is an error naming that comparison, never a number from the wrong
//! branch. Its Hessian-vector product agrees with `higher::hvp` on a fresh recording.
//!
//! The property test draws random programs over every op of the table (through
//! `Var::apply` and `Var::try_binary` over `Unary::ALL` and `Binary::ALL`, so ops added to
//! the table are drawn too), `f64` operands on either side, sums, dots and logsumexps,
//! constants, and branches on guard comparisons (`lt`, `le`, `gt`, `ge`, `eq_value`,
//! `ne_value`) whose arms record different ops. No domain is avoided: NaN and infinities
//! must replay exactly too. (Its generator is its own rather than `tests/properties.rs`'s,
//! whose statements are fixed per op and which has no branches.)

#[allow(
    dead_code,
    reason = "only the proptest configuration and program strategies are used here"
)]
mod reference;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use reference::{constant, reference};
use tapegrad::{Binary, Error, Graph, Nary, Replay, ReplayWorkspace, Unary, Var, higher};

type Ref = usize;

#[derive(Clone, Copy, Debug)]
enum Arg {
    Node(Ref),
    Const(f64),
}

#[derive(Clone, Copy, Debug)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Clone, Debug)]
enum Stmt {
    Constant(f64),
    Unary(Unary, Ref),
    /// `a op b`; at least one side is a node (a constant-only one takes `Node(0)` as `a`).
    Binary(Binary, Arg, Arg),
    Nary(Nary, Vec<Ref>),
    /// `g.dot(&vars, &f64s)`.
    DotConsts(Vec<(Ref, f64)>),
    /// `if a cmp b { then(x) } else { otherwise(x) }`.
    Branch {
        cmp: Cmp,
        a: Ref,
        b: Arg,
        x: Ref,
        then: Unary,
        otherwise: Unary,
    },
}

#[derive(Clone, Debug)]
struct Program {
    inputs: usize,
    stmts: Vec<Stmt>,
}

fn at<T: Copy>(v: &[T], r: Ref) -> T {
    v[v.len() - 1 - r % v.len()]
}

/// Records `p` at `x`; returns the output, the inputs, and every guard's outcome.
fn record<'g>(g: &'g Graph, p: &Program, x: &[f64]) -> (Var<'g>, Vec<Var<'g>>, Vec<bool>) {
    let xs = g.vars(x);
    let mut v = xs.clone();
    let mut outcomes = Vec::new();
    for stmt in &p.stmts {
        let y = match stmt {
            Stmt::Constant(c) => g.constant(*c),
            Stmt::Unary(op, r) => at(&v, *r).apply(*op),
            Stmt::Binary(op, a, b) => {
                let a = match *a {
                    Arg::Node(r) => at(&v, r),
                    Arg::Const(c) => {
                        // `f64 op Var` for the ops with an operator or a constant-first
                        // function; `powi`'s constant is its exponent, so a node here.
                        let b = match *b {
                            Arg::Node(r) => at(&v, r),
                            Arg::Const(_) => at(&v, 0),
                        };
                        let y = match op {
                            Binary::Add => Some(c + b),
                            Binary::Sub => Some(c - b),
                            Binary::Mul => Some(c * b),
                            Binary::Div => Some(c / b),
                            Binary::Powf => Some(tapegrad::powf(c, b)),
                            Binary::Atan2 => Some(tapegrad::atan2(c, b)),
                            Binary::Hypot => Some(tapegrad::hypot(c, b)),
                            Binary::Max => Some(tapegrad::max(c, b)),
                            Binary::Min => Some(tapegrad::min(c, b)),
                            Binary::Xlogy => Some(tapegrad::xlogy(c, b)),
                            Binary::Powi => None,
                        };
                        if let Some(y) = y {
                            v.push(y);
                            continue;
                        }
                        g.constant(c)
                    }
                };
                let b = match *b {
                    Arg::Node(r) if *op != Binary::Powi => tapegrad::Operand::Scalar(at(&v, r)),
                    Arg::Node(_) => tapegrad::Operand::Const(2.0),
                    Arg::Const(c) if *op == Binary::Powi => {
                        tapegrad::Operand::Const((c * 2.0).round())
                    }
                    Arg::Const(c) => tapegrad::Operand::Const(c),
                };
                a.try_binary(*op, b).unwrap()
            }
            Stmt::Nary(op, rs) => {
                let terms = rs.iter().map(|&r| at(&v, r));
                match op {
                    Nary::Sum => g.sum(terms),
                    Nary::LogSumExp => g.logsumexp(terms),
                    _ => {
                        let a: Vec<Var> = terms.collect();
                        let half = a.len() / 2;
                        g.dot(&a[..half], &a[half..2 * half])
                    }
                }
            }
            Stmt::DotConsts(ps) => {
                let a: Vec<Var> = ps.iter().map(|p| at(&v, p.0)).collect();
                let c: Vec<f64> = ps.iter().map(|p| p.1).collect();
                g.dot(&a, &c)
            }
            Stmt::Branch {
                cmp,
                a,
                b,
                x,
                then,
                otherwise,
            } => {
                let a = at(&v, *a);
                let b = match *b {
                    Arg::Node(r) => tapegrad::Operand::Scalar(at(&v, r)),
                    Arg::Const(c) => tapegrad::Operand::Const(c),
                };
                let taken = match cmp {
                    Cmp::Lt => a.lt(b),
                    Cmp::Le => a.le(b),
                    Cmp::Gt => a.gt(b),
                    Cmp::Ge => a.ge(b),
                    Cmp::Eq => a.eq_value(b),
                    Cmp::Ne => a.ne_value(b),
                };
                outcomes.push(taken);
                at(&v, *x).apply(if taken { *then } else { *otherwise })
            }
        };
        v.push(y);
    }
    (*v.last().unwrap(), xs, outcomes)
}

fn arg(reach: usize) -> impl Strategy<Value = Arg> {
    prop_oneof![3 => reference(reach).prop_map(Arg::Node), 1 => constant().prop_map(Arg::Const)]
}

fn stmt(reach: usize) -> impl Strategy<Value = Stmt> {
    let unary = || prop::sample::select(Unary::ALL);
    let cmp = prop::sample::select(vec![Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge, Cmp::Eq, Cmp::Ne]);
    prop_oneof![
        1 => constant().prop_map(Stmt::Constant),
        6 => (unary(), reference(reach)).prop_map(|(op, r)| Stmt::Unary(op, r)),
        6 => (prop::sample::select(Binary::ALL), arg(reach), arg(reach))
            .prop_map(|(op, a, b)| Stmt::Binary(op, a, b)),
        2 => (
            prop::sample::select(vec![Nary::Sum, Nary::Dot, Nary::LogSumExp]),
            prop::collection::vec(reference(reach), 2..12),
        )
            .prop_map(|(op, rs)| Stmt::Nary(op, rs)),
        1 => prop::collection::vec((reference(reach), constant()), 1..6).prop_map(Stmt::DotConsts),
        3 => (cmp, reference(reach), arg(reach), reference(reach), unary(), unary()).prop_map(
            |(cmp, a, b, x, then, otherwise)| Stmt::Branch { cmp, a, b, x, then, otherwise }
        ),
    ]
}

fn program() -> impl Strategy<Value = (Program, Vec<f64>, Vec<f64>)> {
    (1..4usize, prop::collection::vec(stmt(12), 1..24)).prop_flat_map(|(inputs, stmts)| {
        let point = prop::collection::vec(
            prop_oneof![
                8 => -2.5..2.5f64,
                1 => prop::sample::select(vec![0.0, -0.0, 1.0, -1.0, 1e-310, 800.0, -800.0]),
            ],
            inputs,
        );
        (
            Just(Program { inputs, stmts }),
            point.clone(),
            // The new point: often near the first (guards mostly hold), sometimes anywhere.
            prop_oneof![1 => point, 1 => prop::collection::vec(-0.3..0.3f64, inputs)],
        )
            .prop_map(|(p, x0, step)| {
                let x1 = if step.iter().all(|s| s.abs() <= 0.3) {
                    x0.iter().zip(&step).map(|(a, s)| a + s).collect()
                } else {
                    step
                };
                (p, x0, x1)
            })
    })
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// How many cases replayed at the new point, and how many reported a flipped branch.
static REPLAYED: AtomicUsize = AtomicUsize::new(0);
static FLIPPED: AtomicUsize = AtomicUsize::new(0);

fn check(p: &Program, x0: &[f64], x1: &[f64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(x0.len(), p.inputs);
    let g = Graph::new();
    let (y0, xs0, outcomes0) = record(&g, p, x0);
    let replay = Replay::new(y0, &xs0);
    let mut ws = ReplayWorkspace::new();
    let mut grad = vec![0.0; x0.len()];

    // At the recorded point: the recording's own numbers.
    let value = replay.gradient(x0, &mut ws, &mut grad);
    prop_assert!(value.is_ok(), "at the recorded point: {value:?}");
    prop_assert!(same(value.unwrap(), y0.value()));
    let recorded = y0.backward().wrt_all(&xs0);
    for (a, b) in grad.iter().zip(&recorded) {
        prop_assert!(same(*a, *b), "gradient at x0: replay {a}, recording {b}");
    }

    // At the new point: a fresh recording's numbers, or the first flipped guard.
    let h = Graph::new();
    let (y1, xs1, outcomes1) = record(&h, p, x1);
    match replay.gradient(x1, &mut ws, &mut grad) {
        Ok(value) => {
            REPLAYED.fetch_add(1, Relaxed);
            prop_assert_eq!(&outcomes0, &outcomes1, "a branch flipped unnoticed");
            prop_assert!(same(value, y1.value()), "value {} vs {}", value, y1.value());
            let fresh = y1.backward().wrt_all(&xs1);
            for (i, (a, b)) in grad.iter().zip(&fresh).enumerate() {
                prop_assert!(same(*a, *b), "d/dx{i} at x1: replay {a}, recording {b}");
            }
            prop_assert!(same(replay.eval(x1, &mut ws).unwrap(), value));
            // The Hessian-vector product, against reverse-over-reverse on the recording.
            let v: Vec<f64> = (0..x1.len()).map(|i| 1.0 - 0.5 * i as f64).collect();
            let mut hv = vec![0.0; x1.len()];
            replay.hvp(x1, &v, &mut ws, &mut hv).unwrap();
            let want = higher::hvp(y1, &xs1, &v);
            let scale = grad.iter().chain(&want).fold(1.0f64, |m, g| m.max(g.abs()));
            if hv.iter().chain(&want).all(|h| h.is_finite()) && scale < 1e6 {
                for (i, (a, b)) in hv.iter().zip(&want).enumerate() {
                    prop_assert!(
                        (a - b).abs() <= 1e-8 * scale,
                        "(H v)_{i}: replay {a}, higher::hvp {b}"
                    );
                }
            }
        }
        Err(Error::BranchChanged(b)) => {
            FLIPPED.fetch_add(1, Relaxed);
            // The first guard whose outcome differs is the one reported.
            let first = outcomes0.iter().zip(&outcomes1).position(|(a, b)| a != b);
            prop_assert!(first.is_some(), "reported {b:?}, but no branch flipped");
            prop_assert_eq!(b.recorded, outcomes0[first.unwrap()]);
        }
        Err(e) => return Err(TestCaseError::fail(format!("unexpected error {e}"))),
    }
    Ok(())
}

#[test]
fn replay_matches_a_fresh_recording_bit_for_bit_or_names_the_flipped_branch() {
    let mut runner = TestRunner::new(reference::proptest_config(6_000, 0x005e_91a7));
    let result = runner.run(&program(), |(p, x0, x1)| check(&p, &x0, &x1));
    if let Err(e) = result {
        panic!("{e}");
    }
    // Both outcomes are exercised in earnest.
    let (replayed, flipped) = (REPLAYED.load(Relaxed), FLIPPED.load(Relaxed));
    eprintln!("{replayed} cases replayed, {flipped} reported a flipped branch");
    assert!(
        replayed > 3_000 && flipped > 300,
        "{replayed} replayed, {flipped} flipped"
    );
}

#[test]
fn relu_and_abs_replay_their_derivative_at_the_new_point() {
    let g = Graph::new();
    let x = g.var(2.0);
    let y = x.relu() * 3.0 + (x - 1.0).abs();
    let replay = Replay::new(y, &[x]);
    let mut ws = ReplayWorkspace::new();
    let mut grad = [0.0];
    // Recorded where relu' = 1 and abs' = 1; replayed where both are 0 and -1.
    assert_eq!(replay.gradient(&[-2.0], &mut ws, &mut grad), Ok(3.0));
    assert_eq!(grad, [-1.0]);
    assert_eq!(replay.gradient(&[0.5], &mut ws, &mut grad), Ok(1.5 + 0.5));
    assert_eq!(grad, [3.0 - 1.0]);
    assert_eq!(replay.guards(), 0);
}

#[test]
fn a_flipped_guard_is_an_error_naming_it() {
    let g = Graph::new();
    let x = g.vars(&[1.0, 2.0]);
    let line = line!() + 1;
    let first = x[0].lt(x[1]); // true
    let second = x[1].ge(0.0); // true
    assert!(first && second);
    let y = x[0] * x[1];
    let replay = Replay::new(y, &x);
    let mut ws = ReplayWorkspace::new();
    assert_eq!(replay.eval(&[1.5, 2.5], &mut ws), Ok(3.75));
    // Both flip: the first in recording order is reported.
    let Err(Error::BranchChanged(b)) = replay.eval(&[3.0, -1.0], &mut ws) else {
        panic!("no error")
    };
    assert_eq!(
        (b.comparison, b.recorded, b.operands),
        ("<", true, [3.0, -1.0])
    );
    assert_eq!(b.location.file(), file!());
    assert_eq!(b.location.line(), line);
    let message = Error::BranchChanged(b).to_string();
    assert!(message.contains("3 < -1"), "{message}");
    assert!(message.contains("record it again"), "{message}");
    // Only the second flips.
    let Err(Error::BranchChanged(b)) = replay.eval(&[-3.0, -1.0], &mut ws) else {
        panic!("no error")
    };
    assert_eq!((b.comparison, b.operands), (">=", [-1.0, 0.0]));
}

#[test]
fn guards_that_cannot_flip_are_not_kept_and_later_ones_are_not_checked() {
    let g = Graph::new();
    let w = g.var(5.0); // not a replay input: it keeps its value
    let x = g.var(1.0);
    assert!(w.gt(0.0)); // depends on no input: cannot flip
    let y = x * w;
    assert!(x.gt(0.0)); // made after the output: did not decide it
    let replay = Replay::new(y, &[x]);
    assert_eq!(replay.guards(), 0);
    assert_eq!(replay.eval(&[-2.0], &mut ReplayWorkspace::new()), Ok(-10.0));
}

#[test]
fn a_release_forgets_the_guards_recorded_after_the_mark() {
    let g = Graph::new();
    let x = g.var(1.0);
    let mark = g.mark();
    let _ = x.exp();
    assert!(x.gt(0.0));
    g.release(mark);
    let y = x.sin();
    assert_eq!(Replay::new(y, &[x]).guards(), 0);
}

#[test]
fn replay_checks_report_a_raw_read_before_the_output_only() {
    let g = Graph::new();
    g.set_replay_checks(true);
    let (x, w) = (g.var(1.0), g.var(2.0));
    let _ = w.value(); // not an input of the replay below: fine
    let t = x * 2.0;
    let line = line!() + 1;
    let _ = x.value(); // reported
    let y = t.exp();
    let _ = y.value(); // after the output: fine
    let Err(Error::UncheckedRead { location }) = Replay::try_new(y, &[x]) else {
        panic!("no error")
    };
    assert_eq!(location.line(), line);
    g.set_replay_checks(false);
    assert!(Replay::try_new(y, &[x]).is_ok());
}

#[test]
fn bad_arguments_are_errors() {
    let (g, h) = (Graph::new(), Graph::new());
    let x = g.vars(&[1.0, 2.0]);
    let y = x[0] + x[1];
    assert!(matches!(
        Replay::try_new(y, &[y]),
        Err(Error::BadOperands { .. })
    ));
    assert!(matches!(
        Replay::try_new(y, &[x[0], x[0]]),
        Err(Error::BadOperands { .. })
    ));
    assert!(matches!(
        Replay::try_new(y, &[h.var(1.0)]),
        Err(Error::ForeignHandle { .. })
    ));
    let mark = g.mark();
    let tmp = g.var(1.0);
    g.release(mark);
    assert_eq!(Replay::try_new(y, &[tmp]).unwrap_err(), Error::Released);
    let replay = Replay::new(y, &x);
    let mut ws = ReplayWorkspace::new();
    assert!(replay.eval(&[1.0], &mut ws).is_err());
    assert!(replay.gradient(&[1.0, 2.0], &mut ws, &mut [0.0]).is_err());
    assert!(
        replay
            .hvp(&[1.0, 2.0], &[1.0], &mut ws, &mut [0.0; 2])
            .is_err()
    );
}

#[test]
fn a_replay_outlives_its_graph_and_is_shared_by_threads() {
    let replay = {
        let g = Graph::new();
        let x = g.vars(&[0.0; 8]);
        let y = g.logsumexp(x.iter().map(|&x| (x * x).sin()));
        Replay::new(y, &x)
    };
    let point = |k: usize| {
        (0..8)
            .map(|i| (k * 8 + i) as f64 * 0.01)
            .collect::<Vec<f64>>()
    };
    let one_thread: Vec<(f64, Vec<f64>)> = (0..64)
        .map(|k| {
            let mut grad = vec![0.0; 8];
            let y = replay.gradient(&point(k), &mut ReplayWorkspace::new(), &mut grad);
            (y.unwrap(), grad)
        })
        .collect();
    let threads: Vec<Vec<(f64, Vec<f64>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (replay, point) = (&replay, &point);
                s.spawn(move || {
                    let mut ws = ReplayWorkspace::new();
                    (t * 16..(t + 1) * 16)
                        .map(|k| {
                            let mut grad = vec![0.0; 8];
                            let y = replay.gradient(&point(k), &mut ws, &mut grad).unwrap();
                            (y, grad)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(threads.concat(), one_thread);
}

#[test]
fn a_fused_node_is_refused_not_replayed_with_stale_partials() {
    let g = Graph::new();
    let x = g.var(0.5);
    let fused = g.fuse(&[x], |_, xs| (xs[0] * xs[0]).sin());
    let y = fused * 2.0;
    let Err(Error::BadOperands { why, .. }) = Replay::try_new(y, &[x]) else {
        panic!("a fused node was replayed")
    };
    assert!(why.contains("fused"), "{why}");
    // A fused node that does not depend on the inputs is a constant: fine.
    let w = g.var(2.0);
    let z = fused * w;
    assert_eq!(
        Replay::new(z, &[w]).eval(&[3.0], &mut ReplayWorkspace::new()),
        Ok(0.25f64.sin() * 3.0)
    );
}
