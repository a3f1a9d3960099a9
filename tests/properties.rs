//! Property tests: random expression graphs over every op (and a user-defined function,
//! `Wave`, recorded by `Graph::custom`) agree with an independent `f64`
//! evaluation (values), with central differences (gradients), and, through the
//! differentiable backward, with central differences of the gradient (second derivatives).
//!
//! A generated case is a [`Program`]: inputs, then a list of statements, each an op over
//! earlier values (by a back-reference, so any sub-list of statements is still a valid
//! program and failures shrink by dropping statements), or over `f64` constants on either
//! side. Reusing a value gives shared subexpressions and diamonds; the reference `0` (the
//! latest value) gives deep chains; sums, dots and logsumexps of up to dozens of operands
//! give wide nodes. The output is the last statement.
//!
//! Domains: an op applied outside a safe domain (ln or sqrt of less than 0.1, a divisor or
//! reciprocal within 0.1 of 0, relu or abs within 0.01 of their kink, a negative `powf`
//! base, `xlogy(x, y)` with `y` below 0.1 or `x` within 0.01 of 0, or an output beyond 1e3
//! in size) is skipped, its statement passing its first
//! operand through unchanged; the choice is made once, at the drawn inputs, and the
//! perturbed evaluations of the finite differences reuse it, so every comparison is
//! between derivatives of the same smooth function.
//!
//! Tolerances (see `reference::Difference`): a derivative is compared only where its
//! Richardson-extrapolated central difference is reliable (error estimate within 1e-7 of
//! `max(1, |d|)`), and must then agree within 1e-6 of `max(1, |d|)`. The share of
//! comparisons skipped as unreliable is asserted to be small, so the test cannot pass by
//! skipping. Values must match the reference within 1e-13 relative.
//!
//! Cases: 24,000 + 10,000 + 3,200 + 2,800 = 40,000 per run, from a fixed seed (set
//! `PROPTEST_RNG_SEED` to explore others, `PROPTEST_CASES` to change every count).

mod reference;

use std::cell::Cell;
use std::fmt;

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use reference::{constant, reference};
use tapegrad::{Binary, Graph, Nary, Unary, Var, higher};

use reference::Difference;

/// A reference to an earlier value: `0` is the latest, `r` the one `r` before it, taken
/// modulo the number of values so that it stays valid when statements are removed.
type Ref = usize;

/// An operand of a binary op: an earlier value, or an `f64` written in the code.
#[derive(Clone, Copy)]
enum Arg {
    Node(Ref),
    Const(f64),
}

#[derive(Clone, Debug)]
enum Stmt {
    /// `g.constant(c)`: a node with no gradient.
    Constant(f64),
    /// `x.exp()`, `-x`, ...
    Unary(Unary, Ref),
    /// `a op b` with `op` in `+ - * /` or `powf`; at least one side is a `Node`.
    Binary(Binary, Arg, Arg),
    /// `x op= rhs`, the compound assignment operators.
    Assign(Binary, Ref, Arg),
    /// `x.powi(n)`.
    Powi(Ref, i32),
    /// `g.sum(..)`.
    Sum(Vec<Ref>),
    /// `g.dot(&vars, &vars)`.
    DotVars(Vec<(Ref, Ref)>),
    /// `g.dot(&vars, &f64s)` (`flipped`: `g.dot(&f64s, &vars)`).
    DotConsts(Vec<(Ref, f64)>, bool),
    /// `g.logsumexp(..)`.
    LogSumExp(Vec<Ref>),
    /// `g.amax(..)`.
    Amax(Vec<Ref>),
    /// `x.clamp(lo, hi)`.
    Clamp(Ref, f64, f64),
    /// `g.custom(&WAVE, &[a, b])`, a user-defined function (`a sin b`).
    Custom(Ref, Ref),
}

use reference::WAVE;

#[derive(Clone)]
struct Program {
    inputs: Vec<f64>,
    stmts: Vec<Stmt>,
}

impl Program {
    /// The value index that `r` names when `count` values exist.
    fn index(count: usize, r: Ref) -> usize {
        count - 1 - r % count
    }
}

/// Values as a plain `f64` evaluation computes them, or as `Var`s on a tape.
trait Values<T: Copy> {
    fn at(&self, r: Ref) -> T;
}

impl<T: Copy> Values<T> for [T] {
    fn at(&self, r: Ref) -> T {
        self[Program::index(self.len(), r)]
    }
}

/// The first earlier value a statement reads: what it passes through when skipped.
fn first_ref(stmt: &Stmt) -> Ref {
    let first_node = |args: &[Arg]| {
        args.iter().find_map(|a| match a {
            Arg::Node(r) => Some(*r),
            Arg::Const(_) => None,
        })
    };
    match stmt {
        Stmt::Constant(_) => 0,
        Stmt::Unary(_, r) | Stmt::Assign(_, r, _) | Stmt::Powi(r, _) | Stmt::Clamp(r, ..) => *r,
        Stmt::Custom(a, _) => *a,
        Stmt::Binary(_, a, b) => first_node(&[*a, *b]).unwrap_or(0),
        Stmt::Sum(rs) | Stmt::LogSumExp(rs) | Stmt::Amax(rs) => rs.first().copied().unwrap_or(0),
        Stmt::DotVars(ps) => ps.first().map_or(0, |p| p.0),
        Stmt::DotConsts(ps, _) => ps.first().map_or(0, |p| p.0),
    }
}

/// Every earlier value a statement reads.
fn refs(stmt: &Stmt) -> Vec<Ref> {
    let node = |a: &Arg| match a {
        Arg::Node(r) => Some(*r),
        Arg::Const(_) => None,
    };
    match stmt {
        Stmt::Constant(_) => vec![],
        Stmt::Unary(_, r) | Stmt::Powi(r, _) | Stmt::Clamp(r, ..) => vec![*r],
        Stmt::Custom(a, b) => vec![*a, *b],
        Stmt::Binary(_, a, b) => [a, b].into_iter().filter_map(node).collect(),
        Stmt::Assign(_, r, b) => std::iter::once(*r).chain(node(b)).collect(),
        Stmt::Sum(rs) | Stmt::LogSumExp(rs) | Stmt::Amax(rs) => rs.clone(),
        Stmt::DotVars(ps) => ps.iter().flat_map(|p| [p.0, p.1]).collect(),
        Stmt::DotConsts(ps, _) => ps.iter().map(|p| p.0).collect(),
    }
}

fn arg_value(values: &[f64], a: Arg) -> f64 {
    match a {
        Arg::Node(r) => values.at(r),
        Arg::Const(c) => c,
    }
}

/// A statement's value by the reference, and whether it lies inside the safe domain.
fn reference_value(stmt: &Stmt, v: &[f64]) -> (f64, bool) {
    let (y, operand_ok) = match stmt {
        Stmt::Constant(c) => (*c, true),
        Stmt::Unary(op, r) => {
            let x = v.at(*r);
            let ok = match op {
                Unary::Ln | Unary::Sqrt => x >= 0.1,
                Unary::Recip => x.abs() >= 0.1,
                Unary::Abs | Unary::Relu | Unary::Cbrt => x.abs() >= 0.01,
                Unary::Asin | Unary::Acos | Unary::Atanh => x.abs() <= 0.9,
                Unary::Acosh => x >= 1.1,
                Unary::Ln1p => x >= -0.9,
                Unary::Log2 | Unary::Log10 => x >= 0.1,
                Unary::Tan => x.cos().abs() >= 0.1,
                _ => true,
            };
            (reference::unary(*op, x), ok)
        }
        Stmt::Binary(op, a, b) => {
            let (a, b) = (arg_value(v, *a), arg_value(v, *b));
            let ok = match op {
                Binary::Div => b.abs() >= 0.1,
                Binary::Powf => a >= 0.1,
                // atan2 jumps by 2 pi across its branch cut, a = 0 with b < 0.
                Binary::Atan2 => a * a + b * b >= 0.01 && (b > 0.0 || a.abs() >= 0.1),
                Binary::Hypot => a * a + b * b >= 0.01,
                Binary::Max | Binary::Min => (a - b).abs() >= 0.01,
                // ln y needs y > 0; x = 0 is where the x-derivative is a convention.
                Binary::Xlogy => b >= 0.1 && a.abs() >= 0.01,
                _ => true,
            };
            (reference::binary(*op, a, b), ok)
        }
        Stmt::Assign(op, r, b) => {
            let (a, b) = (v.at(*r), arg_value(v, *b));
            (
                reference::binary(*op, a, b),
                *op != Binary::Div || b.abs() >= 0.1,
            )
        }
        Stmt::Powi(r, n) => {
            let x = v.at(*r);
            (x.powi(*n), *n >= 0 || x.abs() >= 0.1)
        }
        Stmt::Sum(rs) => {
            let xs: Vec<f64> = rs.iter().map(|&r| v.at(r)).collect();
            (reference::nary(Nary::Sum, &xs), true)
        }
        Stmt::DotVars(ps) => {
            let xs: Vec<f64> = ps
                .iter()
                .map(|p| v.at(p.0))
                .chain(ps.iter().map(|p| v.at(p.1)))
                .collect();
            (reference::nary(Nary::Dot, &xs), true)
        }
        Stmt::DotConsts(ps, _) => {
            let xs: Vec<f64> = ps
                .iter()
                .map(|p| v.at(p.0))
                .chain(ps.iter().map(|p| p.1))
                .collect();
            (reference::nary(Nary::Dot, &xs), true)
        }
        Stmt::LogSumExp(rs) => {
            let xs: Vec<f64> = rs.iter().map(|&r| v.at(r)).collect();
            (reference::nary(Nary::LogSumExp, &xs), true)
        }
        Stmt::Amax(rs) => {
            let xs: Vec<f64> = rs.iter().map(|&r| v.at(r)).collect();
            let y = reference::nary(Nary::Max, &xs);
            // Away from a kink: the maximum is one operand's value (repeats of one node
            // are fine), every other is at least 0.01 below it.
            let top = rs
                .iter()
                .find(|&&r| v.at(r) == y)
                .map(|&r| Program::index(v.len(), r));
            let ok = rs
                .iter()
                .all(|&r| Some(Program::index(v.len(), r)) == top || y - v.at(r) >= 0.01);
            (y, ok)
        }
        Stmt::Custom(a, b) => (v.at(*a) * v.at(*b).sin(), true),
        Stmt::Clamp(r, lo, hi) => {
            let x = v.at(*r);
            let ok = (x - lo).abs() >= 0.01 && (x - hi).abs() >= 0.01;
            (reference::nary(Nary::Clamp, &[x, *lo, *hi]), ok)
        }
    };
    (y, operand_ok && y.is_finite() && y.abs() <= 1e3)
}

/// Evaluates `program` on `f64`s. With `skips` given, those statements pass their first
/// operand through; otherwise the statements outside the safe domain do, and `skips` is
/// returned so that perturbed evaluations make the same choices.
fn evaluate(program: &Program, inputs: &[f64], skips: Option<&[bool]>) -> (Vec<f64>, Vec<bool>) {
    let mut values = inputs.to_vec();
    let mut chosen = Vec::with_capacity(program.stmts.len());
    for (k, stmt) in program.stmts.iter().enumerate() {
        let (y, ok) = reference_value(stmt, &values);
        let skip = skips.map_or(!ok, |s| s[k]);
        chosen.push(skip);
        values.push(if skip { values.at(first_ref(stmt)) } else { y });
    }
    (values, chosen)
}

fn output(values: &[f64]) -> f64 {
    *values.last().expect("a program has at least one input")
}

/// Records `program` on `g` with the given skips; returns every value's `Var`.
fn record<'g>(g: &'g Graph, program: &Program, xs: &[Var<'g>], skips: &[bool]) -> Vec<Var<'g>> {
    let mut v: Vec<Var<'g>> = xs.to_vec();
    for (stmt, &skip) in program.stmts.iter().zip(skips) {
        let y = if skip {
            v.at(first_ref(stmt))
        } else {
            match stmt {
                Stmt::Constant(c) => g.constant(*c),
                Stmt::Unary(op, r) => unary_method(*op, v.at(*r)),
                Stmt::Binary(op, a, b) => binary_operator(*op, *a, *b, &v),
                Stmt::Assign(op, r, b) => {
                    let mut x = v.at(*r);
                    match (op, *b) {
                        (Binary::Add, Arg::Node(b)) => x += v.at(b),
                        (Binary::Add, Arg::Const(c)) => x += c,
                        (Binary::Sub, Arg::Node(b)) => x -= v.at(b),
                        (Binary::Sub, Arg::Const(c)) => x -= c,
                        (Binary::Mul, Arg::Node(b)) => x *= v.at(b),
                        (Binary::Mul, Arg::Const(c)) => x *= c,
                        (Binary::Div, Arg::Node(b)) => x /= v.at(b),
                        (Binary::Div, Arg::Const(c)) => x /= c,
                        (op, _) => unreachable!("no compound assignment for {op:?}"),
                    }
                    x
                }
                Stmt::Powi(r, n) => v.at(*r).powi(*n),
                Stmt::Sum(rs) => g.sum(rs.iter().map(|&r| v.at(r))),
                Stmt::DotVars(ps) => {
                    let a: Vec<Var> = ps.iter().map(|p| v.at(p.0)).collect();
                    let b: Vec<Var> = ps.iter().map(|p| v.at(p.1)).collect();
                    g.dot(&a, &b)
                }
                Stmt::DotConsts(ps, flipped) => {
                    let a: Vec<Var> = ps.iter().map(|p| v.at(p.0)).collect();
                    let c: Vec<f64> = ps.iter().map(|p| p.1).collect();
                    if *flipped {
                        g.dot(&c, &a)
                    } else {
                        g.dot(&a, &c)
                    }
                }
                Stmt::LogSumExp(rs) => g.logsumexp(rs.iter().map(|&r| v.at(r))),
                Stmt::Amax(rs) => g.amax(rs.iter().map(|&r| v.at(r))),
                Stmt::Clamp(r, lo, hi) => v.at(*r).clamp(*lo, *hi),
                Stmt::Custom(a, b) => g.custom(&WAVE, &[v.at(*a), v.at(*b)]),
            }
        };
        v.push(y);
    }
    v
}

/// Each unary op through its own method (or operator), as users call them.
fn unary_method(op: Unary, x: Var<'_>) -> Var<'_> {
    match op {
        Unary::Neg => -x,
        Unary::Recip => x.recip(),
        Unary::Exp => x.exp(),
        Unary::Ln => x.ln(),
        Unary::Sqrt => x.sqrt(),
        Unary::Sin => x.sin(),
        Unary::Cos => x.cos(),
        Unary::Tanh => x.tanh(),
        Unary::Sinh => x.sinh(),
        Unary::Cosh => x.cosh(),
        Unary::Abs => x.abs(),
        Unary::Relu => x.relu(),
        Unary::Sigmoid => x.sigmoid(),
        Unary::Gelu => x.gelu(),
        Unary::Atan => x.atan(),
        Unary::Asin => x.asin(),
        Unary::Acos => x.acos(),
        Unary::Tan => x.tan(),
        Unary::Ln1p => x.ln_1p(),
        Unary::ExpM1 => x.exp_m1(),
        Unary::Log2 => x.log2(),
        Unary::Log10 => x.log10(),
        Unary::Exp2 => x.exp2(),
        Unary::Cbrt => x.cbrt(),
        Unary::Softplus => x.softplus(),
        Unary::Erf => x.erf(),
        Unary::Erfc => x.erfc(),
        Unary::Asinh => x.asinh(),
        Unary::Acosh => x.acosh(),
        Unary::Atanh => x.atanh(),
    }
}

/// `a op b` through the operator impl for the operand kinds at hand (`Var op Var`,
/// `Var op f64`, `f64 op Var`), or `powf` / `tapegrad::powf`.
fn binary_operator<'g>(op: Binary, a: Arg, b: Arg, v: &[Var<'g>]) -> Var<'g> {
    use Arg::{Const as C, Node as N};
    match (op, a, b) {
        (Binary::Add, N(a), N(b)) => v.at(a) + v.at(b),
        (Binary::Add, N(a), C(b)) => v.at(a) + b,
        (Binary::Add, C(a), N(b)) => a + v.at(b),
        (Binary::Sub, N(a), N(b)) => v.at(a) - v.at(b),
        (Binary::Sub, N(a), C(b)) => v.at(a) - b,
        (Binary::Sub, C(a), N(b)) => a - v.at(b),
        (Binary::Mul, N(a), N(b)) => v.at(a) * v.at(b),
        (Binary::Mul, N(a), C(b)) => v.at(a) * b,
        (Binary::Mul, C(a), N(b)) => a * v.at(b),
        (Binary::Div, N(a), N(b)) => v.at(a) / v.at(b),
        (Binary::Div, N(a), C(b)) => v.at(a) / b,
        (Binary::Div, C(a), N(b)) => a / v.at(b),
        (Binary::Powf, N(a), N(b)) => v.at(a).powf(v.at(b)),
        (Binary::Powf, N(a), C(b)) => v.at(a).powf(b),
        (Binary::Powf, C(a), N(b)) => tapegrad::powf(a, v.at(b)),
        (Binary::Atan2, N(a), N(b)) => v.at(a).atan2(v.at(b)),
        (Binary::Atan2, N(a), C(b)) => v.at(a).atan2(b),
        (Binary::Atan2, C(a), N(b)) => tapegrad::atan2(a, v.at(b)),
        (Binary::Hypot, N(a), N(b)) => v.at(a).hypot(v.at(b)),
        (Binary::Hypot, N(a), C(b)) => v.at(a).hypot(b),
        (Binary::Hypot, C(a), N(b)) => tapegrad::hypot(a, v.at(b)),
        (Binary::Max, N(a), N(b)) => v.at(a).max(v.at(b)),
        (Binary::Max, N(a), C(b)) => v.at(a).max(b),
        (Binary::Max, C(a), N(b)) => tapegrad::max(a, v.at(b)),
        (Binary::Min, N(a), N(b)) => v.at(a).min(v.at(b)),
        (Binary::Min, N(a), C(b)) => v.at(a).min(b),
        (Binary::Min, C(a), N(b)) => tapegrad::min(a, v.at(b)),
        (Binary::Xlogy, N(a), N(b)) => v.at(a).xlogy(v.at(b)),
        (Binary::Xlogy, N(a), C(b)) => v.at(a).xlogy(b),
        (Binary::Xlogy, C(a), N(b)) => tapegrad::xlogy(a, v.at(b)),
        (op, a, b) => unreachable!("not generated: {op:?} {a:?} {b:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Generators.

fn arg(reach: usize) -> impl Strategy<Value = Arg> {
    prop_oneof![3 => reference(reach).prop_map(Arg::Node), 1 => constant().prop_map(Arg::Const)]
}

/// A binary op with at least one `Var` side; a constant `powf` base and a constant `xlogy`
/// `y` are drawn positive.
fn binary_stmt(reach: usize) -> impl Strategy<Value = Stmt> {
    let ops = prop::sample::select(vec![
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::Powf,
        Binary::Atan2,
        Binary::Hypot,
        Binary::Max,
        Binary::Min,
        Binary::Xlogy,
    ]);
    (
        ops,
        reference(reach),
        arg(reach),
        any::<bool>(),
        0.2..3.0f64,
    )
        .prop_map(|(op, r, other, var_first, base)| {
            let other = match (op, other, var_first) {
                (Binary::Powf, Arg::Const(_), false) => Arg::Const(base),
                (Binary::Xlogy, Arg::Const(_), true) => Arg::Const(base),
                _ => other,
            };
            if var_first {
                Stmt::Binary(op, Arg::Node(r), other)
            } else {
                Stmt::Binary(op, other, Arg::Node(r))
            }
        })
}

fn assign_stmt(reach: usize) -> impl Strategy<Value = Stmt> {
    let ops = prop::sample::select(vec![Binary::Add, Binary::Sub, Binary::Mul, Binary::Div]);
    (ops, reference(reach), arg(reach)).prop_map(|(op, r, b)| Stmt::Assign(op, r, b))
}

/// One statement; n-ary ones take up to `width` operands.
fn stmt(reach: usize, width: usize) -> impl Strategy<Value = Stmt> {
    let refs = move |min| prop::collection::vec(reference(reach), min..=width);
    prop_oneof![
        1 => constant().prop_map(Stmt::Constant),
        8 => (prop::sample::select(Unary::ALL), reference(reach))
            .prop_map(|(op, r)| Stmt::Unary(op, r)),
        6 => binary_stmt(reach),
        2 => assign_stmt(reach),
        2 => (reference(reach), -3..=4i32).prop_map(|(r, n)| Stmt::Powi(r, n)),
        1 => refs(0).prop_map(Stmt::Sum),
        1 => prop::collection::vec((reference(reach), reference(reach)), 0..=width)
            .prop_map(Stmt::DotVars),
        1 => (prop::collection::vec((reference(reach), constant()), 0..=width), any::<bool>())
            .prop_map(|(ps, flipped)| Stmt::DotConsts(ps, flipped)),
        1 => refs(1).prop_map(Stmt::LogSumExp),
        1 => refs(1).prop_map(Stmt::Amax),
        1 => (reference(reach), -1.5..0.5f64, 0.0..2.0f64)
            .prop_map(|(r, lo, width)| Stmt::Clamp(r, lo, lo + width)),
        1 => (reference(reach), reference(reach)).prop_map(|(a, b)| Stmt::Custom(a, b)),
    ]
}

fn program(
    inputs: std::ops::RangeInclusive<usize>,
    stmts: std::ops::RangeInclusive<usize>,
    width: usize,
) -> impl Strategy<Value = Program> {
    let reach = stmts.end() + inputs.end();
    (
        prop::collection::vec(-2.0..2.0f64, inputs),
        prop::collection::vec(stmt(reach, width), stmts),
    )
        .prop_map(|(inputs, stmts)| Program { inputs, stmts })
}

/// A long chain: mostly unary ops and `f64` operands applied to the latest value.
fn chain(length: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Program> {
    let link = prop_oneof![
        4 => prop::sample::select(Unary::ALL).prop_map(|op| Stmt::Unary(op, 0)),
        2 => (prop::sample::select(vec![Binary::Add, Binary::Mul, Binary::Div]), constant(), any::<bool>())
            .prop_map(|(op, c, var_first)| if var_first {
                Stmt::Binary(op, Arg::Node(0), Arg::Const(c))
            } else {
                Stmt::Binary(op, Arg::Const(c), Arg::Node(0))
            }),
        1 => (1..4usize).prop_map(|back| Stmt::Binary(Binary::Add, Arg::Node(0), Arg::Node(back))),
    ];
    (
        prop::collection::vec(-2.0..2.0f64, 1..=2),
        prop::collection::vec(link, length),
    )
        .prop_map(|(inputs, stmts)| Program { inputs, stmts })
}

// ---------------------------------------------------------------------------------------
// Printing a failing case as code.

impl fmt::Debug for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Node(r) => write!(f, "@{r}"),
            Arg::Const(c) => write!(f, "{c:?}"),
        }
    }
}

impl fmt::Debug for Program {
    /// Prints the program as the Rust it records, e.g. `let t3 = t2.ln();`, with the
    /// back-references resolved to names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.inputs.len();
        let name = |i: usize| {
            if i < n {
                format!("x{i}")
            } else {
                format!("t{}", i - n)
            }
        };
        // Only what the output reads is printed, and a statement skipped at these inputs
        // is printed as the pass-through it records.
        let (_, skips) = evaluate(self, &self.inputs, None);
        let mut live = vec![false; n + self.stmts.len()];
        *live.last_mut().expect("a program has an input") = true;
        for (k, stmt) in self.stmts.iter().enumerate().rev() {
            if live[n + k] {
                let reads = if skips[k] {
                    vec![first_ref(stmt)]
                } else {
                    refs(stmt)
                };
                for r in reads {
                    live[Program::index(n + k, r)] = true;
                }
            }
        }
        writeln!(f)?;
        for (i, x) in self.inputs.iter().enumerate() {
            writeln!(f, "let x{i} = g.var({x:?});")?;
        }
        for (k, stmt) in self.stmts.iter().enumerate() {
            let count = n + k;
            if !live[count] {
                continue;
            }
            if skips[k] {
                let first = name(Program::index(count, first_ref(stmt)));
                writeln!(
                    f,
                    "let {} = {first}; // {stmt:?} is outside its safe domain here",
                    name(count)
                )?;
                continue;
            }
            let at = |r: Ref| name(Program::index(count, r));
            let arg = |a: Arg| match a {
                Arg::Node(r) => at(r),
                Arg::Const(c) => format!("{c:?}"),
            };
            let list = |rs: &[Ref]| rs.iter().map(|&r| at(r)).collect::<Vec<_>>().join(", ");
            let code = match stmt {
                Stmt::Constant(c) => format!("g.constant({c:?})"),
                Stmt::Unary(op, r) => format!("{}.{}()", at(*r), op.name()),
                Stmt::Binary(Binary::Powf, a, b) => match a {
                    Arg::Const(c) => format!("tapegrad::powf({c:?}, {})", arg(*b)),
                    Arg::Node(_) => format!("{}.powf({})", arg(*a), arg(*b)),
                },
                Stmt::Binary(
                    op
                    @ (Binary::Atan2 | Binary::Hypot | Binary::Max | Binary::Min | Binary::Xlogy),
                    a,
                    b,
                ) => match a {
                    Arg::Const(c) => format!("tapegrad::{}({c:?}, {})", op.name(), arg(*b)),
                    Arg::Node(_) => format!("{}.{}({})", arg(*a), op.name(), arg(*b)),
                },
                Stmt::Binary(op, a, b) => format!("{} {} {}", arg(*a), op.name(), arg(*b)),
                Stmt::Assign(op, r, b) => format!(
                    "{{ let mut t = {}; t {}= {}; t }}",
                    at(*r),
                    op.name(),
                    arg(*b)
                ),
                Stmt::Powi(r, p) => format!("{}.powi({p})", at(*r)),
                Stmt::Sum(rs) => format!("g.sum([{}])", list(rs)),
                Stmt::DotVars(ps) => {
                    let (a, b): (Vec<Ref>, Vec<Ref>) = ps.iter().copied().unzip();
                    format!("g.dot(&[{}], &[{}])", list(&a), list(&b))
                }
                Stmt::DotConsts(ps, flipped) => {
                    let a: Vec<Ref> = ps.iter().map(|p| p.0).collect();
                    let c: Vec<String> = ps.iter().map(|p| format!("{:?}", p.1)).collect();
                    let (a, c) = (format!("&[{}]", list(&a)), format!("&[{}]", c.join(", ")));
                    if *flipped {
                        format!("g.dot({c}, {a})")
                    } else {
                        format!("g.dot({a}, {c})")
                    }
                }
                Stmt::LogSumExp(rs) => format!("g.logsumexp([{}])", list(rs)),
                Stmt::Amax(rs) => format!("g.amax([{}])", list(rs)),
                Stmt::Clamp(r, lo, hi) => format!("{}.clamp({lo:?}, {hi:?})", at(*r)),
                Stmt::Custom(a, b) => format!("g.custom(&wave, &[{}, {}])", at(*a), at(*b)),
            };
            writeln!(f, "let {} = {code};", name(count))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The checks.

/// How many derivative comparisons were made, and how many skipped as unreliable.
#[derive(Default)]
struct Tally {
    compared: Cell<usize>,
    skipped: Cell<usize>,
}

impl Tally {
    /// Compares `tape` with `fd` if `fd` is reliable; fails on disagreement.
    fn check(&self, what: &str, tape: f64, fd: Difference) -> Result<(), TestCaseError> {
        if !fd.reliable() {
            self.skipped.set(self.skipped.get() + 1);
            return Ok(());
        }
        self.compared.set(self.compared.get() + 1);
        prop_assert!(
            fd.agrees_with(tape),
            "{what}: tape {tape:e}, central difference {:e} (error estimate {:e})",
            fd.value,
            fd.error
        );
        Ok(())
    }

    /// At most 5% of comparisons may be skipped, and there must be `min` comparisons.
    fn assert_meaningful(&self, min: usize) {
        let (compared, skipped) = (self.compared.get(), self.skipped.get());
        println!("{compared} derivatives compared, {skipped} skipped as unreliable");
        assert!(compared >= min, "only {compared} derivatives compared");
        assert!(
            skipped * 20 <= compared + skipped,
            "{skipped} of {} central differences were unreliable",
            compared + skipped
        );
    }
}

fn run(
    cases: u32,
    strategy: impl Strategy<Value = Program>,
    test: impl Fn(&Program) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(reference::proptest_config(cases, 0x7a9e_96ad));
    if let Err(e) = runner.run(&strategy, |p| test(&p)) {
        panic!("{e}");
    }
}

/// Values match the reference at every statement, and the gradient of the output with
/// respect to each input matches central differences (and is the same whether computed
/// by the plain or the differentiable backward).
fn check_first_order(p: &Program, tally: &Tally) -> Result<(), TestCaseError> {
    let (_, skips) = evaluate(p, &p.inputs, None);
    let g = Graph::new();
    let xs = g.vars(&p.inputs);
    let vars = record(&g, p, &xs, &skips);
    // Each op's value against the reference applied to the tape's own operand values, so
    // that rounding differences of a few ulps do not compound along a chain.
    let values: Vec<f64> = vars.iter().map(|v| v.value()).collect();
    let n = p.inputs.len();
    prop_assert_eq!(&values[..n], &p.inputs[..]);
    for (k, stmt) in p.stmts.iter().enumerate() {
        let (tape, (reference, _)) = (values[n + k], reference_value(stmt, &values[..n + k]));
        prop_assert!(
            skips[k] || reference::same_value(tape, reference),
            "t{k}: tape {tape}, reference {reference}"
        );
    }
    let y = *vars.last().expect("at least one value");
    let grads = y.backward();
    let differentiable = y.grad(&xs);
    let f = |at: &[f64]| output(&evaluate(p, at, Some(&skips)).0);
    for (i, &x) in xs.iter().enumerate() {
        let tape = grads[x];
        prop_assert!(
            same_bits(differentiable[i].value(), tape),
            "d/dx{i}: plain backward {tape:e}, Var::grad {:e}",
            differentiable[i].value()
        );
        tally.check(
            &format!("d/dx{i}"),
            tape,
            reference::derivative(f, &p.inputs, i),
        )?;
    }
    Ok(())
}

#[test]
fn gradients_of_random_graphs_match_central_differences() {
    let tally = Tally::default();
    run(24_000, program(1..=4, 1..=40, 24), |p| {
        check_first_order(p, &tally)
    });
    tally.assert_meaningful(24_000);
}

#[test]
fn gradients_of_deep_chains_match_central_differences() {
    let tally = Tally::default();
    run(3_200, chain(100..=400), |p| check_first_order(p, &tally));
    tally.assert_meaningful(3_200);
}

#[test]
fn gradients_of_wide_graphs_match_central_differences() {
    let tally = Tally::default();
    run(2_800, program(8..=48, 1..=8, 160), |p| {
        check_first_order(p, &tally)
    });
    tally.assert_meaningful(2_800 * 8);
}

/// The Hessian from two differentiable backwards, `d/dx_j (dy/dx_i)`, against central
/// differences in `x_j` of the plain backward's `dy/dx_i` (which the tests above check
/// against differences of `y`).
#[test]
fn second_derivatives_match_differences_of_the_gradient() {
    let tally = Tally::default();
    run(10_000, program(1..=3, 1..=16, 8), |p| {
        let (_, skips) = evaluate(p, &p.inputs, None);
        let gradient = |at: &[f64], i: usize| {
            let g = Graph::new();
            let xs = g.vars(at);
            let y = *record(&g, p, &xs, &skips).last().expect("a value");
            y.backward()[xs[i]]
        };
        let g = Graph::new();
        let xs = g.vars(&p.inputs);
        let y = *record(&g, p, &xs, &skips).last().expect("a value");
        let hessian = higher::hessian(y, &xs);
        let first = y.grad(&xs);
        for (i, dy) in first.iter().enumerate() {
            let second = dy.grad(&xs);
            for (j, d2y) in second.iter().enumerate() {
                // The other route, by plain sweeps over the recorded gradient, to the bit.
                prop_assert!(
                    same_bits(hessian[i][j], d2y.value()),
                    "H[{i}][{j}]: hessian {:e}, grad of grad {:e}",
                    hessian[i][j],
                    d2y.value()
                );
                let fd = reference::derivative(|at| gradient(at, i), &p.inputs, j);
                tally.check(&format!("d2/dx{i}dx{j}"), d2y.value(), fd)?;
            }
        }
        Ok(())
    });
    tally.assert_meaningful(10_000);
}

// ---------------------------------------------------------------------------------------
// Singular points: every sweep applies one rule.

/// The same `f64` to the bit (any NaN equals any NaN).
fn same_bits(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Values where rules meet their special cases: zeros of both signs (every kink), the
/// subnormals and tiny normals whose reciprocals overflow, huge values, infinities and NaN,
/// and a few ordinary ones.
fn singular_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0.0,
            -0.0,
            5e-324,
            -5e-324,
            1e-310,
            f64::MIN_POSITIVE,
            1e-160,
            -1e-200,
            1e300,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            710.0,
            -745.0,
        ]),
        2 => prop::sample::select(vec![1.0, -1.0, 2.0, 0.5, -2.5]),
        1 => -3.0..3.0f64,
    ]
}

/// A program over singular inputs, with some of its constants made singular too; no
/// statement is skipped.
fn singular_program() -> impl Strategy<Value = Program> {
    (
        prop::collection::vec(singular_value(), 1..=3),
        prop::collection::vec(stmt(15, 6), 1..=12),
        prop::collection::vec(prop::option::weighted(0.5, singular_value()), 16),
    )
        .prop_map(|(inputs, mut stmts, specials)| {
            let mut k = 0;
            let mut next = |c: &mut f64| {
                if let Some(s) = specials[k % specials.len()] {
                    *c = s;
                }
                k += 1;
            };
            for stmt in &mut stmts {
                match stmt {
                    Stmt::Constant(c) => next(c),
                    Stmt::Binary(_, a, b) => {
                        for arg in [a, b] {
                            if let Arg::Const(c) = arg {
                                next(c);
                            }
                        }
                    }
                    Stmt::Assign(_, _, Arg::Const(c)) => next(c),
                    Stmt::DotConsts(ps, _) => ps.iter_mut().for_each(|(_, c)| next(c)),
                    _ => {}
                }
            }
            Program { inputs, stmts }
        })
}

/// At singular inputs and constants, with no statement skipped: the plain backward and
/// `Var::grad` give the same gradient to the bit, for every input and every recorded
/// value; a `Replay` the same value and gradient as a fresh recording, to the bit;
/// `higher::hessian` and `grad` of `grad` the same second derivatives to the bit.
#[test]
fn every_sweep_gives_the_same_numbers_at_singular_points() {
    let (count, replays) = (Cell::new(0usize), Cell::new(0usize));
    run(6_000, singular_program(), |p| {
        let skips = vec![false; p.stmts.len()];
        let g = Graph::new();
        let xs = g.vars(&p.inputs);
        let vars = record(&g, p, &xs, &skips);
        let y = *vars.last().expect("a value");
        let grads = y.backward();
        let differentiable = y.grad(&vars);
        for (k, (&v, d)) in vars.iter().zip(&differentiable).enumerate() {
            // Untracked reads: a replay of `y` is built below.
            prop_assert!(
                same_bits(grads[v], d.untracked_value()),
                "d/dt{k}: plain backward {:e}, Var::grad {:e}",
                grads[v],
                d.untracked_value()
            );
            if !grads[v].is_finite() {
                count.set(count.get() + 1);
            }
        }
        // The replayable tape, recorded here and evaluated at these inputs and at the
        // inputs rotated by one (against a fresh recording there).
        if let Ok(replay) = tapegrad::Replay::try_new(y, &xs) {
            replays.set(replays.get() + 1);
            let mut ws = tapegrad::ReplayWorkspace::new();
            let mut rotated = p.inputs.clone();
            rotated.rotate_left(1);
            for at in [&p.inputs, &rotated] {
                let h = Graph::new();
                let hs = h.vars(at);
                let fresh = *record(&h, p, &hs, &skips).last().expect("a value");
                let want = fresh.backward().wrt_all(&hs);
                let mut got = vec![0.0; at.len()];
                let value = replay.gradient(at, &mut ws, &mut got);
                prop_assert!(
                    value.as_ref().is_ok_and(|&v| same_bits(v, fresh.value())),
                    "replay value {value:?}, fresh {}",
                    fresh.value()
                );
                for (i, (r, b)) in got.iter().zip(&want).enumerate() {
                    prop_assert!(same_bits(*r, *b), "d/dx{i}: replay {r:e}, backward {b:e}");
                }
            }
        }
        let hessian = higher::hessian(y, &xs);
        let first = y.grad(&xs);
        for (i, dy) in first.iter().enumerate() {
            let row = dy.grad(&xs);
            for (j, d2y) in row.iter().enumerate() {
                prop_assert!(
                    same_bits(hessian[i][j], d2y.value()),
                    "H[{i}][{j}]: hessian {:e}, grad of grad {:e}",
                    hessian[i][j],
                    d2y.value()
                );
            }
        }
        Ok(())
    });
    // The drawn points are singular: many gradients come out infinite or NaN.
    assert!(count.get() >= 1_000, "{} non-finite gradients", count.get());
    assert!(
        replays.get() >= 5_000,
        "only {} programs replayed",
        replays.get()
    );
}
