//! A compiled replay gives the replay's numbers bit for bit (a NaN is any NaN), and its
//! errors: on random programs over every op of the table (through `Var::apply` and
//! `Var::try_binary` over `Unary::ALL` and `Binary::ALL`, so ops added to the table are
//! drawn too), `f64` operands on either side, sums, dots, logsumexps, amaxes and clamps,
//! constants, and branches on guard comparisons, evaluated at the recorded point, at a
//! nearby one (where guards mostly hold) and at singular points (zeros of both signs,
//! subnormals, infinities, NaN, huge values), where the sweep meets infinite and NaN
//! adjoints. Long programs cross the compiler's chunks and its register limits.

use std::cell::Cell;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use tapegrad::{Binary, Error, Graph, Nary, Replay, ReplayWorkspace, Unary, Var};
use tapegrad_jit::{Compiled, Workspace};

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
    /// `a op b`; at least one side is a node.
    Binary(Binary, Arg, Arg),
    Nary(Nary, Vec<Ref>),
    /// `g.dot(&vars, &f64s)`.
    DotConsts(Vec<(Ref, f64)>),
    /// `x.clamp(lo, hi)`.
    Clamp(Ref, f64, f64),
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
    stmts: Vec<Stmt>,
}

fn at<T: Copy>(v: &[T], r: Ref) -> T {
    v[v.len() - 1 - r % v.len()]
}

/// Records `p` at `x`; returns the output and the inputs.
fn record<'g>(g: &'g Graph, p: &Program, x: &[f64]) -> (Var<'g>, Vec<Var<'g>>) {
    let xs = g.vars(x);
    let mut v = xs.clone();
    for stmt in &p.stmts {
        let y = match stmt {
            Stmt::Constant(c) => g.constant(*c),
            Stmt::Unary(op, r) => at(&v, *r).apply(*op),
            Stmt::Binary(op, a, b) => {
                let a = match *a {
                    Arg::Node(r) => at(&v, r),
                    Arg::Const(c) => {
                        // `f64 op Var` where the operator exists; otherwise a constant node.
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
                            _ => None,
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
                        tapegrad::Operand::Const((c * 2.0).round().clamp(-16.0, 16.0))
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
                    Nary::Max => g.amax(terms),
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
            Stmt::Clamp(r, lo, hi) => at(&v, *r).clamp(lo.min(*hi), lo.max(*hi)),
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
                at(&v, *x).apply(if taken { *then } else { *otherwise })
            }
        };
        v.push(y);
    }
    (*v.last().unwrap(), xs)
}

fn constant() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => -3.0..3.0f64,
        1 => prop::sample::select(vec![0.0, -0.0, 1.0, -1.0, 2.0, 0.5, 1e-310, 1e300]),
    ]
}

fn reference(reach: usize) -> impl Strategy<Value = usize> {
    prop_oneof![1 => Just(0usize), 1 => 0..reach]
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
        8 => (prop::sample::select(Binary::ALL), arg(reach), arg(reach))
            .prop_map(|(op, a, b)| Stmt::Binary(op, a, b)),
        3 => (
            prop::sample::select(vec![Nary::Sum, Nary::Dot, Nary::LogSumExp, Nary::Max]),
            // Short ones, compiled inline, and long ones, swept by loops.
            prop_oneof![3 => 1..12usize, 1 => 12..48usize]
                .prop_flat_map(move |n| prop::collection::vec(reference(reach), n)),
        )
            .prop_map(|(op, rs)| Stmt::Nary(op, rs)),
        1 => prop::collection::vec((reference(reach), constant()), 1..6).prop_map(Stmt::DotConsts),
        1 => (reference(reach), constant(), constant()).prop_map(|(r, a, b)| Stmt::Clamp(r, a, b)),
        3 => (cmp, reference(reach), arg(reach), reference(reach), unary(), unary()).prop_map(
            |(cmp, a, b, x, then, otherwise)| Stmt::Branch { cmp, a, b, x, then, otherwise }
        ),
    ]
}

/// An input value: mostly ordinary, sometimes singular.
fn point_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => -2.5..2.5f64,
        2 => prop::sample::select(vec![
            0.0, -0.0, 1.0, -1.0, 1e-310, -5e-324, 800.0, -800.0, 1e300,
            f64::INFINITY, f64::NEG_INFINITY, f64::NAN,
        ]),
    ]
}

/// A program of `len` statements reaching `reach` values back, its recorded point, a
/// nearby point and an arbitrary one.
fn case(
    len: std::ops::Range<usize>,
    reach: usize,
) -> impl Strategy<Value = (Program, Vec<f64>, Vec<f64>, Vec<f64>)> {
    (1..5usize, prop::collection::vec(stmt(reach), len)).prop_flat_map(|(inputs, stmts)| {
        let point = || prop::collection::vec(point_value(), inputs);
        (
            Just(Program { stmts }),
            point(),
            prop::collection::vec(-0.3..0.3f64, inputs),
            point(),
        )
            .prop_map(|(p, x0, step, x2)| {
                let x1 = x0.iter().zip(&step).map(|(a, s)| a + s).collect();
                (p, x0, x1, x2)
            })
    })
}

/// The same number, a NaN being any NaN.
fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn same_result(a: &Result<f64, Error>, b: &Result<f64, Error>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => same(*a, *b),
        (Err(Error::BranchChanged(a)), Err(Error::BranchChanged(b))) => {
            a.comparison == b.comparison
                && a.recorded == b.recorded
                && a.location == b.location
                && same(a.operands[0], b.operands[0])
                && same(a.operands[1], b.operands[1])
        }
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}

thread_local! {
    /// Per test (each runs on a thread of its own): evaluations, flipped branches, and
    /// gradients with an infinity or NaN.
    static COUNTS: Cell<[usize; 3]> = const { Cell::new([0; 3]) };
}

fn count(k: usize) {
    COUNTS.with(|c| {
        let mut counts = c.get();
        counts[k] += 1;
        c.set(counts);
    });
}

/// Compiles the replay of `p` recorded at `x0` and compares it with the replay at each
/// point.
fn check(p: &Program, x0: &[f64], points: &[&[f64]]) -> Result<(), TestCaseError> {
    let g = Graph::new();
    let (y0, xs0) = record(&g, p, x0);
    let replay = Replay::new(y0, &xs0);
    let compiled = Compiled::new(&replay).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let (mut ws, mut rws) = (Workspace::new(), ReplayWorkspace::new());
    let n = x0.len();
    let (mut grad, mut rgrad) = (vec![0.0; n], vec![0.0; n]);
    for &x in points {
        count(0);
        let want = replay.gradient(x, &mut rws, &mut rgrad);
        let got = compiled.gradient(x, &mut ws, &mut grad);
        prop_assert!(
            same_result(&got, &want),
            "gradient's value at {x:?}: compiled {got:?}, replay {want:?}"
        );
        if want.is_ok() {
            for (i, (a, b)) in grad.iter().zip(&rgrad).enumerate() {
                prop_assert!(same(*a, *b), "d/dx{i} at {x:?}: compiled {a}, replay {b}");
            }
            if rgrad.iter().any(|g| !g.is_finite()) {
                count(2);
            }
        } else {
            count(1);
        }
        let (got, want) = (compiled.eval(x, &mut ws), replay.eval(x, &mut rws));
        prop_assert!(
            same_result(&got, &want),
            "value at {x:?}: compiled {got:?}, replay {want:?}"
        );
    }
    Ok(())
}

/// Runs `cases` cases (or `PROPTEST_CASES`); returns how many ran.
fn run(
    cases: u32,
    seed: u64,
    strategy: impl Strategy<Value = (Program, Vec<f64>, Vec<f64>, Vec<f64>)>,
) -> usize {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |(p, x0, x1, x2)| {
        check(&p, &x0, &[&x0, &x1, &x2])
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    cases as usize
}

#[test]
fn compiled_equals_replay_bit_for_bit_on_random_programs() {
    let cases = run(6_000, 0x0071_7c0d, case(1..24, 12));
    let [evaluations, flipped, non_finite] = COUNTS.with(Cell::get);
    eprintln!(
        "{evaluations} evaluations: {flipped} flipped a branch, {non_finite} had a \
         non-finite gradient"
    );
    // Every outcome is exercised in earnest.
    assert!(evaluations == 3 * cases && flipped > cases / 12 && non_finite > cases / 12);
}

#[test]
fn compiled_equals_replay_on_long_programs_across_chunks() {
    // Thousands of nodes reaching far back: several chunks, and more live adjoints than the
    // sweep keeps in registers.
    run(12, 0x0071_7c0e, case(3_000..6_000, 400));
}
