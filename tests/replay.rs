//! Replay: a function recorded once and evaluated at new inputs gives, bit for bit, the value
//! and gradient of recording it again at those inputs; where a recorded comparison would go
//! the other way, it is an error naming that comparison, never a number from the wrong
//! branch; and a raw read of a value the inputs decide is refused when the replay is built.
//! Its Hessian-vector product equals `higher::hvp` on a fresh recording wherever that is
//! finite.
//!
//! The property test draws random programs over every op of the table (through
//! `Var::apply` and `Var::try_binary` over `Unary::ALL` and `Binary::ALL`, so ops added to
//! the table are drawn too), `f64` operands on either side, sums, dots, logsumexps and
//! amaxes, constants, a user-defined function (`reference::Wave`), fused sub-computations,
//! and branches on guard comparisons (`lt`, `le`, `gt`, `ge`, `eq_value`, `ne_value`) whose
//! arms record a new op, return an existing node unchanged, or a constant; the output is
//! any node, so branches stand before, at and after the output's node. Some programs also
//! branch on a raw `Var::value`. No domain is avoided: NaN and infinities must replay
//! exactly too. (Its generator is its own rather than `tests/properties.rs`'s, whose
//! statements are fixed per op and which has no branches.)

#[allow(
    dead_code,
    reason = "only the proptest configuration and program strategies are used here"
)]
mod reference;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use reference::{WAVE, constant, reference};
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

/// What a branch's arm gives: a new node, an existing one unchanged (recorded before the
/// comparison), or a constant.
#[derive(Clone, Copy, Debug)]
enum Arm {
    Apply(Unary),
    Existing,
    Constant(f64),
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
    /// `Wave(a, b) = a sin(b)`, a user-defined function with its rule over `Scalar`.
    Custom(Ref, Ref),
    /// `g.fuse(&[a, b], |_, v| sin(v0 v1) + tanh(v0))`, one node carrying its partials.
    Fused(Ref, Ref),
    /// `if a cmp b { then(x) } else { otherwise(x) }`, compared through a guard method, or
    /// (`raw`) on `a.value()` against `b`'s value, which no replay can check.
    Branch {
        cmp: Cmp,
        a: Ref,
        b: Arg,
        x: Ref,
        then: Arm,
        otherwise: Arm,
        raw: bool,
    },
}

#[derive(Clone, Debug)]
struct Program {
    inputs: usize,
    stmts: Vec<Stmt>,
    /// The output: any node (statements after it still run, their guards too).
    output: Ref,
}

fn at<T: Copy>(v: &[T], r: Ref) -> T {
    v[v.len() - 1 - r % v.len()]
}

/// What recording a program gave: the output, the inputs, every guard's outcome, and
/// whether a raw read saw a value that depends on the inputs.
struct Recorded<'g> {
    output: Var<'g>,
    inputs: Vec<Var<'g>>,
    outcomes: Vec<bool>,
    /// The tape's length when each guard was made.
    guard_at: Vec<usize>,
    raw_read_of_an_input_function: bool,
}

/// Records `p` at `x`.
fn record<'g>(g: &'g Graph, p: &Program, x: &[f64]) -> Recorded<'g> {
    let xs = g.vars(x);
    let mut v = xs.clone();
    // Whether each node depends on an input (tracked here, independently of the crate).
    let mut dep = vec![true; xs.len()];
    let mut outcomes = Vec::new();
    let mut guard_at = Vec::new();
    let mut raw_read = false;
    for stmt in &p.stmts {
        let (y, d) = match stmt {
            Stmt::Constant(c) => (g.constant(*c), false),
            Stmt::Unary(op, r) => (at(&v, *r).apply(*op), at(&dep, *r)),
            Stmt::Binary(op, a, b) => {
                let node_dep = |arg: &Arg| match *arg {
                    Arg::Node(r) => at(&dep, r),
                    Arg::Const(_) => false,
                };
                let a = match *a {
                    Arg::Node(r) => at(&v, r),
                    Arg::Const(c) => {
                        // `f64 op Var` for the ops with an operator or a constant-first
                        // function; `powi`'s constant is its exponent, so a node here.
                        let (b, bd) = match *b {
                            Arg::Node(r) => (at(&v, r), at(&dep, r)),
                            Arg::Const(_) => (at(&v, 0), at(&dep, 0)),
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
                            dep.push(bd);
                            continue;
                        }
                        g.constant(c)
                    }
                };
                let a_dep = match stmt {
                    Stmt::Binary(_, Arg::Node(r), _) => at(&dep, *r),
                    _ => false,
                };
                let (b, b_dep) = match *b {
                    Arg::Node(r) if *op != Binary::Powi => {
                        (tapegrad::Operand::Scalar(at(&v, r)), node_dep(b))
                    }
                    Arg::Node(_) => (tapegrad::Operand::Const(2.0), false),
                    Arg::Const(c) if *op == Binary::Powi => {
                        (tapegrad::Operand::Const((c * 2.0).round()), false)
                    }
                    Arg::Const(c) => (tapegrad::Operand::Const(c), false),
                };
                (a.try_binary(*op, b).unwrap(), a_dep || b_dep)
            }
            Stmt::Nary(op, rs) => {
                let terms = rs.iter().map(|&r| at(&v, r));
                // A dot of an odd count drops its last term.
                let used = if *op == Nary::Dot {
                    rs.len() / 2 * 2
                } else {
                    rs.len()
                };
                let d = rs[..used].iter().any(|&r| at(&dep, r));
                let y = match op {
                    Nary::Sum => g.sum(terms),
                    Nary::LogSumExp => g.logsumexp(terms),
                    Nary::Max => g.amax(terms),
                    _ => {
                        let a: Vec<Var> = terms.collect();
                        let half = a.len() / 2;
                        g.dot(&a[..half], &a[half..2 * half])
                    }
                };
                (y, d)
            }
            Stmt::DotConsts(ps) => {
                let a: Vec<Var> = ps.iter().map(|p| at(&v, p.0)).collect();
                let c: Vec<f64> = ps.iter().map(|p| p.1).collect();
                (g.dot(&a, &c), ps.iter().any(|p| at(&dep, p.0)))
            }
            Stmt::Custom(a, b) => (
                g.custom(&WAVE, &[at(&v, *a), at(&v, *b)]),
                at(&dep, *a) || at(&dep, *b),
            ),
            Stmt::Fused(a, b) => (
                g.fuse(&[at(&v, *a), at(&v, *b)], |_, v| {
                    (v[0] * v[1]).sin() + v[0].tanh()
                }),
                at(&dep, *a) || at(&dep, *b),
            ),
            Stmt::Branch {
                cmp,
                a,
                b,
                x,
                then,
                otherwise,
                raw,
            } => {
                let b_dep = matches!(*b, Arg::Node(r) if at(&dep, r));
                let a_dep = at(&dep, *a);
                let a = at(&v, *a);
                let b = match *b {
                    Arg::Node(r) => tapegrad::Operand::Scalar(at(&v, r)),
                    Arg::Const(c) => tapegrad::Operand::Const(c),
                };
                let taken = if *raw {
                    // Raw reads of both sides (each remembered).
                    raw_read |= a_dep || b_dep;
                    let (a, b) = (
                        a.value(),
                        match b {
                            tapegrad::Operand::Scalar(b) => b.value(),
                            tapegrad::Operand::Const(c) => c,
                        },
                    );
                    match cmp {
                        Cmp::Lt => a < b,
                        Cmp::Le => a <= b,
                        Cmp::Gt => a > b,
                        Cmp::Ge => a >= b,
                        Cmp::Eq => a == b,
                        Cmp::Ne => a != b,
                    }
                } else {
                    let taken = match cmp {
                        Cmp::Lt => a.lt(b),
                        Cmp::Le => a.le(b),
                        Cmp::Gt => a.gt(b),
                        Cmp::Ge => a.ge(b),
                        Cmp::Eq => a.eq_value(b),
                        Cmp::Ne => a.ne_value(b),
                    };
                    outcomes.push(taken);
                    guard_at.push(g.len());
                    taken
                };
                match if taken { *then } else { *otherwise } {
                    Arm::Apply(op) => (at(&v, *x).apply(op), at(&dep, *x)),
                    Arm::Existing => (at(&v, *x), at(&dep, *x)),
                    Arm::Constant(c) => (g.constant(c), false),
                }
            }
        };
        v.push(y);
        dep.push(d);
    }
    Recorded {
        output: at(&v, p.output),
        inputs: xs,
        outcomes,
        guard_at,
        raw_read_of_an_input_function: raw_read,
    }
}

fn arg(reach: usize) -> impl Strategy<Value = Arg> {
    prop_oneof![3 => reference(reach).prop_map(Arg::Node), 1 => constant().prop_map(Arg::Const)]
}

fn stmt(reach: usize) -> impl Strategy<Value = Stmt> {
    let unary = || prop::sample::select(Unary::ALL);
    let cmp = prop::sample::select(vec![Cmp::Lt, Cmp::Le, Cmp::Gt, Cmp::Ge, Cmp::Eq, Cmp::Ne]);
    let arm = move || {
        prop_oneof![
            3 => unary().prop_map(Arm::Apply),
            2 => Just(Arm::Existing),
            1 => constant().prop_map(Arm::Constant),
        ]
    };
    prop_oneof![
        1 => constant().prop_map(Stmt::Constant),
        6 => (unary(), reference(reach)).prop_map(|(op, r)| Stmt::Unary(op, r)),
        6 => (prop::sample::select(Binary::ALL), arg(reach), arg(reach))
            .prop_map(|(op, a, b)| Stmt::Binary(op, a, b)),
        2 => (
            prop::sample::select(vec![Nary::Sum, Nary::Dot, Nary::LogSumExp, Nary::Max]),
            prop::collection::vec(reference(reach), 2..12),
        )
            .prop_map(|(op, rs)| Stmt::Nary(op, rs)),
        1 => prop::collection::vec((reference(reach), constant()), 1..6).prop_map(Stmt::DotConsts),
        1 => (reference(reach), reference(reach)).prop_map(|(a, b)| Stmt::Custom(a, b)),
        1 => (reference(reach), reference(reach)).prop_map(|(a, b)| Stmt::Fused(a, b)),
        4 => (
            cmp,
            reference(reach),
            arg(reach),
            reference(reach),
            arm(),
            arm(),
            prop::bool::weighted(0.03),
        )
            .prop_map(|(cmp, a, b, x, then, otherwise, raw)| Stmt::Branch {
                cmp,
                a,
                b,
                x,
                then,
                otherwise,
                raw,
            }),
    ]
}

fn program() -> impl Strategy<Value = (Program, Vec<f64>, Vec<f64>)> {
    (
        1..4usize,
        prop::collection::vec(stmt(12), 1..24),
        prop_oneof![1 => Just(0usize), 2 => 0..12usize],
    )
        .prop_flat_map(|(inputs, stmts, output)| {
            let point = prop::collection::vec(
                prop_oneof![
                    8 => -2.5..2.5f64,
                    1 => prop::sample::select(vec![0.0, -0.0, 1.0, -1.0, 1e-310, 800.0, -800.0]),
                ],
                inputs,
            );
            (
                Just(Program {
                    inputs,
                    stmts,
                    output,
                }),
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

/// How many cases replayed at the new point, reported a flipped branch, or were refused
/// for a raw read.
static REPLAYED: AtomicUsize = AtomicUsize::new(0);
static FLIPPED: AtomicUsize = AtomicUsize::new(0);
static REFUSED: AtomicUsize = AtomicUsize::new(0);
/// Flips of a guard recorded after the output's node.
static FLIPPED_AFTER_THE_OUTPUT: AtomicUsize = AtomicUsize::new(0);

fn check(p: &Program, x0: &[f64], x1: &[f64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(x0.len(), p.inputs);
    let g = Graph::new();
    let r0 = record(&g, p, x0);
    let (y0, xs0) = (r0.output, &r0.inputs);
    let replay = match Replay::try_new(y0, xs0) {
        Err(Error::UncheckedRead { .. }) => {
            prop_assert!(
                r0.raw_read_of_an_input_function,
                "refused a raw read of a value the inputs do not decide"
            );
            REFUSED.fetch_add(1, Relaxed);
            return Ok(());
        }
        other => {
            prop_assert!(
                !r0.raw_read_of_an_input_function,
                "a raw read of a value the inputs decide was not refused"
            );
            other.unwrap()
        }
    };
    let mut ws = ReplayWorkspace::new();
    let mut grad = vec![0.0; x0.len()];

    // At the recorded point: the recording's own numbers.
    let value = replay.gradient(x0, &mut ws, &mut grad);
    prop_assert!(value.is_ok(), "at the recorded point: {value:?}");
    prop_assert!(same(value.unwrap(), y0.value()));
    let recorded = y0.backward().wrt_all(xs0);
    for (a, b) in grad.iter().zip(&recorded) {
        prop_assert!(same(*a, *b), "gradient at x0: replay {a}, recording {b}");
    }

    // At the new point: a fresh recording's numbers, or the first flipped guard.
    let h = Graph::new();
    let r1 = record(&h, p, x1);
    let (y1, xs1) = (r1.output, &r1.inputs);
    let output_position = y0.try_position().unwrap();
    match replay.gradient(x1, &mut ws, &mut grad) {
        Ok(value) => {
            REPLAYED.fetch_add(1, Relaxed);
            prop_assert_eq!(&r0.outcomes, &r1.outcomes, "a branch flipped unnoticed");
            prop_assert!(same(value, y1.value()), "value {} vs {}", value, y1.value());
            let fresh = y1.backward().wrt_all(xs1);
            for (i, (a, b)) in grad.iter().zip(&fresh).enumerate() {
                prop_assert!(same(*a, *b), "d/dx{i} at x1: replay {a}, recording {b}");
            }
            prop_assert!(same(replay.eval(x1, &mut ws).unwrap(), value));
            // The Hessian-vector product, against reverse-over-reverse on the recording:
            // wherever that is finite, the replay's is the same up to rounding.
            let v: Vec<f64> = (0..x1.len()).map(|i| 1.0 - 0.5 * i as f64).collect();
            let mut hv = vec![0.0; x1.len()];
            let got = replay.hvp(x1, &v, &mut ws, &mut hv);
            match higher::try_hvp(y1, xs1, &v) {
                Ok(want) => {
                    prop_assert!(got.is_ok(), "hvp {got:?}, higher::hvp {want:?}");
                    if !hv.iter().all(|h| h.is_finite()) {
                        // Reverse over reverse, as higher::hvp: the same bits.
                        for (i, (a, b)) in hv.iter().zip(&want).enumerate() {
                            prop_assert!(same(*a, *b), "(H v)_{i}: replay {a}, higher::hvp {b}");
                        }
                    } else if want.iter().all(|h| h.is_finite()) {
                        let scale = want.iter().fold(1.0f64, |m, g| m.max(g.abs()));
                        for (i, (a, b)) in hv.iter().zip(&want).enumerate() {
                            prop_assert!(
                                (a - b).abs() <= 1e-9 * scale,
                                "(H v)_{i}: replay {a}, higher::hvp {b}"
                            );
                        }
                    }
                }
                Err(e) => {
                    let Err(got) = got else {
                        return Err(TestCaseError::fail(format!("hvp {hv:?}, higher::hvp {e}")));
                    };
                    prop_assert_eq!(got, e);
                }
            }
        }
        Err(Error::BranchChanged(b)) => {
            FLIPPED.fetch_add(1, Relaxed);
            // The first guard whose outcome differs is the one reported.
            let first = r0
                .outcomes
                .iter()
                .zip(&r1.outcomes)
                .position(|(a, b)| a != b);
            prop_assert!(first.is_some(), "reported {b:?}, but no branch flipped");
            prop_assert_eq!(b.recorded, r0.outcomes[first.unwrap()]);
            if r0.guard_at[first.unwrap()] > output_position + 1 {
                FLIPPED_AFTER_THE_OUTPUT.fetch_add(1, Relaxed);
            }
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
    // Every outcome is exercised in earnest.
    let (replayed, flipped, refused) = (
        REPLAYED.load(Relaxed),
        FLIPPED.load(Relaxed),
        REFUSED.load(Relaxed),
    );
    let after = FLIPPED_AFTER_THE_OUTPUT.load(Relaxed);
    eprintln!(
        "{replayed} cases replayed, {flipped} reported a flipped branch ({after} with nodes \
         after the output's), {refused} refused a raw read"
    );
    assert!(
        replayed > 2_500 && flipped > 300 && after > 60 && refused > 100,
        "{replayed} replayed, {flipped} flipped ({after} after the output), {refused} refused"
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

/// The smallest program that chose its output with a comparison made after the output's
/// node: `y` is `x` itself, and the guard `x > 0` comes after it. The replay keeps and
/// checks it (the truth at -1 is `-0.01`, derivative `0.01`; answering `-1`, `1` from the
/// recorded branch would be a silent wrong number).
#[test]
fn a_guard_recorded_after_the_outputs_node_is_checked() {
    let g = Graph::new();
    let x = g.var(2.0);
    let y = if x.gt(0.0) { x } else { x * 0.01 };
    let r = Replay::new(y, &[x]);
    assert_eq!(r.guards(), 1);
    let (mut ws, mut d) = (ReplayWorkspace::new(), [0.0]);
    assert_eq!(r.gradient(&[3.0], &mut ws, &mut d), Ok(3.0));
    assert_eq!(d, [1.0]);
    let Err(Error::BranchChanged(b)) = r.gradient(&[-1.0], &mut ws, &mut d) else {
        panic!("answered across a flipped branch")
    };
    assert_eq!(
        (b.comparison, b.recorded, b.operands),
        (">", true, [-1.0, 0.0])
    );

    // An arm that negates or keeps an existing node, and an arm that is a constant.
    let x = g.var(2.0);
    let y = if x.eq_value(2.0) { -x } else { x };
    let r = Replay::new(y, &[x]);
    assert_eq!(r.eval(&[2.0], &mut ws), Ok(-2.0));
    assert!(matches!(
        r.eval(&[3.0], &mut ws),
        Err(Error::BranchChanged(_))
    ));
    let x = g.var(2.0);
    let y = if x.lt(1.0) { x } else { g.constant(1.0) };
    let r = Replay::new(y, &[x]);
    assert_eq!(r.eval(&[5.0], &mut ws), Ok(1.0));
    assert!(matches!(
        r.eval(&[0.5], &mut ws),
        Err(Error::BranchChanged(_))
    ));
}

#[test]
fn guards_that_cannot_flip_are_not_kept() {
    let g = Graph::new();
    let w = g.var(5.0); // not a replay input: it keeps its value
    let x = g.var(1.0);
    assert!(w.gt(0.0)); // depends on no input: cannot flip
    let y = x * w;
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

/// Replay checks are on by default: a raw read of a value that depends on the replay's
/// inputs, made at any time before the replay is built, refuses it (a branch on it would
/// go unchecked), wherever it stands relative to the output; reads of other values, and
/// untracked reads, do not.
#[test]
fn a_raw_read_of_a_value_the_inputs_decide_is_refused_by_default() {
    let g = Graph::new();
    assert!(g.replay_checks());
    let (x, w) = (g.var(1.0), g.var(2.0));
    let _ = w.value(); // not an input of the replay below: fine
    let t = x * 2.0;
    let line = line!() + 1;
    let _ = x.value(); // reported
    let y = t.exp();
    let _ = y.value(); // reported too, but the first read is named
    let Err(Error::UncheckedRead { location }) = Replay::try_new(y, &[x]) else {
        panic!("no error")
    };
    assert_eq!(location.line(), line);
    assert!(
        Error::UncheckedRead { location }
            .to_string()
            .contains("untracked_value")
    );

    // The newcomer's branch on a raw value, after the output's node.
    let x = g.var(2.0);
    let y = if x.value() > 0.0 { x * 1.5 } else { x * 2.5 };
    let z = if y.value() > 0.0 { y } else { -y };
    assert!(matches!(
        Replay::try_new(z, &[x]),
        Err(Error::UncheckedRead { .. })
    ));

    // Untracked reads (printing) and reads with the checks off are not remembered.
    let h = Graph::new();
    let x = h.var(1.0);
    let y = x.exp();
    let _ = (y.untracked_value(), format!("{y} {y:?}"));
    assert!(Replay::try_new(y, &[x]).is_ok());
    h.set_replay_checks(false);
    let _ = y.value();
    assert!(Replay::try_new(y, &[x]).is_ok());
    h.set_replay_checks(true);
    assert!(
        Replay::try_new(y, &[x]).is_ok(),
        "a new log after turning them on"
    );
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

fn same_all(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(*a, *b))
}

/// `f` recorded at `x0`, replayed at `x1`: the value and gradient of recording it at `x1`,
/// bit for bit.
fn replays_as_recorded(
    f: impl for<'g> Fn(&'g Graph, &[Var<'g>]) -> Var<'g>,
    x0: &[f64],
    x1: &[f64],
) -> Replay {
    let g = Graph::new();
    let xs = g.vars(x0);
    let replay = Replay::new(f(&g, &xs), &xs);
    let h = Graph::new();
    let ys = h.vars(x1);
    let y = f(&h, &ys);
    let mut grad = vec![0.0; x1.len()];
    let value = replay.gradient(x1, &mut ReplayWorkspace::new(), &mut grad);
    assert!(same(value.unwrap(), y.untracked_value()));
    assert!(same_all(&grad, &y.backward().wrt_all(&ys)), "{grad:?}");
    replay
}

/// A fused node replays: its sub-computation, kept when it was recorded, is evaluated again
/// at the new point (value and partials, as `Graph::fuse` computes them), so the replay is
/// bit for bit a fresh recording; nested fused nodes and user-defined functions inside it
/// too. It has no second-order rule: the HVP says so, as `higher::hvp` does.
#[test]
fn a_fused_node_replays_its_sub_computation() {
    fn fused<'g>(g: &'g Graph, x: &[Var<'g>]) -> Var<'g> {
        let y = g.fuse(x, |_, v| (v[0] * v[1]).sin() + v[0].tanh());
        y * x[1] + y.exp()
    }
    let replay = replays_as_recorded(fused, &[0.5, 2.0], &[-1.5, 0.25]);
    let mut hv = [0.0; 2];
    let err = replay.hvp(
        &[0.5, 2.0],
        &[1.0, 0.0],
        &mut ReplayWorkspace::new(),
        &mut hv,
    );
    assert_eq!(err, Err(Error::NoSecondOrder { op: "fused" }));

    fn nested<'g>(g: &'g Graph, x: &[Var<'g>]) -> Var<'g> {
        g.fuse(x, |s, v| {
            let inner = s.fuse(v, |_, w| w[0] * w[1].exp());
            let wave = s.custom(&WAVE, &[inner, v[0]]);
            (inner + wave).powi(2) + v[1]
        })
    }
    replays_as_recorded(nested, &[0.5, 2.0], &[1.5, -0.75]);

    // A fused node in a loop with releases: each step's program is its own.
    let g = Graph::new();
    let x = g.vars(&[1.0, 2.0]);
    let mark = g.mark();
    for k in 0..3 {
        let c = f64::from(k);
        let y = g.fuse(&x, |_, v| v[0] * c + v[1].sin());
        let r = Replay::new(y, &x);
        assert_eq!(
            r.eval(&[2.0, 0.0], &mut ReplayWorkspace::new()),
            Ok(2.0 * c)
        );
        g.release(mark);
    }
}

/// A statement fused again and again (a layer's outputs) keeps one program while it is
/// the same, and its own where a constant, a constant node or a guard's outcome differs:
/// each replays as it was recorded.
#[test]
fn fused_statements_in_a_loop_replay_each_as_recorded() {
    let g = Graph::new();
    let x = g.vars(&[0.5, -1.0, 2.0, 3.0]);
    let before = g.heap_bytes();
    let mut ys = Vec::new();
    for k in 0..200 {
        let c = (k % 3) as f64;
        let xk = x[k % 4];
        // The same statement, with a constant operand, a constant node and a guard that
        // vary with k.
        ys.push(g.fuse(&[xk], |s, v| {
            let shifted = if v[0].gt(0.0) { v[0] } else { -v[0] };
            shifted * c + s.constant(c + 1.0) * v[0].sin()
        }));
    }
    let total = g.sum(ys.iter().copied());
    let replay = Replay::new(total, &x);
    let at = [0.25, -2.0, 1.5, 4.0];
    let h = Graph::new();
    let hx = h.vars(&at);
    let want: Vec<Var> = (0..200)
        .map(|k| {
            let c = (k % 3) as f64;
            let v = hx[k % 4];
            let shifted = if v.untracked_value() > 0.0 { v } else { -v };
            shifted * c + h.constant(c + 1.0) * v.sin()
        })
        .collect();
    let want = h.sum(want);
    let mut grad = [0.0; 4];
    let value = replay
        .gradient(&at, &mut ReplayWorkspace::new(), &mut grad)
        .unwrap();
    approx::assert_relative_eq!(value, want.untracked_value(), max_relative = 1e-14);
    for (g, w) in grad.iter().zip(want.backward().wrt_all(&hx)) {
        approx::assert_relative_eq!(*g, w, max_relative = 1e-14);
    }
    // A guard that flips in one statement is named.
    assert!(matches!(
        replay.eval(&[-0.25, -2.0, 1.5, 4.0], &mut ReplayWorkspace::new()),
        Err(Error::BranchChanged(_))
    ));
    // 200 fused nodes of 12 distinct programs: the kept programs take a few kB.
    assert!(
        g.heap_bytes() - before < 64_000,
        "{}",
        g.heap_bytes() - before
    );
}

/// Inside a fused sub-computation a comparison is a guard of the replay, and a raw read of
/// a value the fused node's inputs decide refuses the replay, as outside.
#[test]
fn guards_and_raw_reads_inside_a_fused_node_count() {
    let g = Graph::new();
    let x = g.var(1.0);
    let y = g.fuse(&[x], |_, v| if v[0].gt(0.0) { v[0] } else { -v[0] });
    let r = Replay::new(y, &[x]);
    assert_eq!(r.eval(&[3.0], &mut ReplayWorkspace::new()), Ok(3.0));
    assert!(matches!(
        r.eval(&[-3.0], &mut ReplayWorkspace::new()),
        Err(Error::BranchChanged(_))
    ));
    let z = g.fuse(&[x], |_, v| if v[0].value() > 0.0 { v[0] } else { -v[0] });
    assert!(matches!(
        Replay::try_new(z, &[x]),
        Err(Error::UncheckedRead { .. })
    ));
    // A fused node that does not depend on the inputs is a constant: fine.
    let w = g.var(2.0);
    let fused = g.fuse(&[x], |_, xs| (xs[0] * xs[0]).sin());
    let z = fused * w;
    assert_eq!(
        Replay::new(z, &[w]).eval(&[3.0], &mut ReplayWorkspace::new()),
        Ok(1f64.sin() * 3.0)
    );
}

/// A user-defined function replays (its value and partials evaluated again, bit for bit a
/// fresh recording); its HVP goes through its second-order rule and equals `higher::hvp`,
/// and without one it is the same error as `higher::hvp`'s, naming it.
#[test]
fn a_user_defined_function_replays_and_its_rule_gives_the_hvp() {
    fn f<'g>(g: &'g Graph, x: &[Var<'g>]) -> Var<'g> {
        g.custom(&WAVE, &[x[0] * x[1], x[1].exp()]).tanh()
    }
    let replay = replays_as_recorded(f, &[0.5, 2.0], &[-1.5, 0.25]);
    let (at, v) = ([0.7, -0.3], [1.0, -2.0]);
    let mut hv = [0.0; 2];
    replay
        .hvp(&at, &v, &mut ReplayWorkspace::new(), &mut hv)
        .unwrap();
    let g = Graph::new();
    let xs = g.vars(&at);
    assert_eq!(hv.to_vec(), higher::hvp(f(&g, &xs), &xs, &v));

    struct FirstOrderOnly;
    impl tapegrad::CustomFn for FirstOrderOnly {
        fn name(&self) -> &'static str {
            "first_order_only"
        }
        fn value(&self, xs: &[f64]) -> f64 {
            xs[0] * xs[0]
        }
        fn partials(&self, xs: &[f64], _: f64, out: &mut [f64]) {
            out[0] = 2.0 * xs[0];
        }
    }
    static FIRST: std::sync::LazyLock<std::sync::Arc<dyn tapegrad::CustomFn>> =
        std::sync::LazyLock::new(|| std::sync::Arc::new(FirstOrderOnly));
    fn square<'g>(g: &'g Graph, x: &[Var<'g>]) -> Var<'g> {
        g.custom(&FIRST, &[x[0]]) * 3.0
    }
    let replay = replays_as_recorded(square, &[2.0], &[-3.0]);
    let mut hv = [0.0];
    assert_eq!(
        replay.hvp(&[2.0], &[1.0], &mut ReplayWorkspace::new(), &mut hv),
        Err(Error::NoSecondOrder {
            op: "first_order_only"
        })
    );
}

/// Where forward over reverse meets `0 * inf` or `NaN` that reverse over reverse drops (a
/// singular point), the replay's HVP is `higher::hvp`'s, bit for bit.
#[test]
fn at_a_singular_point_the_hvp_is_higher_hvps() {
    type F = for<'a, 'g> fn(&'a [Var<'g>]) -> Var<'g>;
    let cases: [(F, [f64; 2]); 3] = [
        (|x| x[0].powf(x[1]), [-1.0, 0.0]),
        (|x| x[0].powf(x[1]) * x[0].exp() + x[1].sin(), [-1.0, 0.0]),
        (|x| x[0].sqrt() * x[1], [0.0, 0.0]),
    ];
    for (f, at) in cases {
        for v in [[1.0, 0.0], [0.0, 1.0], [1.0, -0.5]] {
            let g = Graph::new();
            let xs = g.vars(&at);
            let y = f(&xs);
            let replay = Replay::new(y, &xs);
            let want = higher::hvp(y, &xs, &v);
            let mut hv = [0.0; 2];
            replay
                .hvp(&at, &v, &mut ReplayWorkspace::new(), &mut hv)
                .unwrap();
            eprintln!("at {at:?} along {v:?}: replay {hv:?}, higher::hvp {want:?}");
            if want.iter().all(|h| h.is_finite()) || hv.iter().any(|h| !h.is_finite()) {
                assert!(same_all(&hv, &want), "{hv:?} vs {want:?}");
            }
        }
    }
}
