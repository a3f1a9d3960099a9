//! The differentiable backward: [`Var::grad`] records the reverse sweep's own arithmetic
//! on the graph, so every gradient is a `Var` that can be differentiated again. It uses the
//! op table's rules as they are: no derivative is written here.
//!
//! It evaluates the same generic rules of `op.rs` as the plain backward, but on [`Term`]s
//! (graph nodes addressed by tape position, or folded constants) instead of `f64`s.

use std::borrow::Borrow;
use std::fmt;
use std::ops::{Add, Div, Mul, Neg, Sub};
use std::panic::Location;
use std::sync::Arc;

use super::chain::{chain, chain_quotient, rescue};
use super::custom::check_finite;
use super::error::{Error, or_panic};
use super::graph::{Graph, Var};
use super::op::{Binary, Nary, Op, Unary};
use super::scalar::{Operand, Scalar};
use super::tape::{CONST_ARG, Resolved, Tape};

impl<'g> Var<'g> {
    /// The gradient of `self` with respect to each of `inputs`, as `Var`s on the same graph:
    /// the backward pass is recorded as graph nodes, so each gradient can be differentiated
    /// again (second and higher derivatives, Hessians). It applies the same derivative
    /// rules as [`Var::backward`], and records only what the chosen inputs need.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(2.0);
    /// let y = x.powi(3);
    /// let dy = y.grad(&[x])[0]; // 3 x^2
    /// let d2y = dy.grad(&[x])[0]; // 6 x
    /// let d3y = d2y.grad(&[x])[0]; // 6
    /// assert_eq!((dy.value(), d2y.value(), d3y.value()), (12.0, 12.0, 6.0));
    /// ```
    ///
    /// # Panics
    ///
    /// On a released or foreign handle, or in anomaly mode on a NaN or infinity (see
    /// [`Var::try_grad`]).
    #[track_caller]
    pub fn grad(self, inputs: &[Var<'g>]) -> Vec<Var<'g>> {
        or_panic(self.try_grad(inputs))
    }

    /// [`Var::grad`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::Released`] or [`Error::ForeignHandle`] for `self` or an input;
    /// [`Error::NoSecondOrder`] if the way from an input to `self` passes through a node
    /// with first partials only (a [`CustomFn`](crate::CustomFn) without a second-order
    /// rule, or a [`Graph::fuse`] node), naming it; nothing is left recorded then. In anomaly
    /// mode, [`Error::Anomaly`] for what [`Var::try_backward`] would report (the gradients'
    /// values are the plain backward's, bit for bit). The nodes the call records are
    /// attributed to the line that called `grad`, where a later backward through them
    /// reports an anomaly.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::Graph;
    /// let (g, h) = (Graph::new(), Graph::new());
    /// let x = g.var(1.0);
    /// assert!(x.exp().try_grad(&[h.var(1.0)]).is_err());
    /// ```
    #[track_caller]
    pub fn try_grad(self, inputs: &[Var<'g>]) -> Result<Vec<Var<'g>>, Error> {
        let location = Location::caller();
        let graph = self.graph();
        let (root, positions) = {
            let tape = graph.tape.borrow();
            let root = graph.resolve(&tape, self)?.arg as usize;
            let positions = inputs
                .iter()
                .map(|&x| Ok(graph.resolve(&tape, x)?.arg as usize))
                .collect::<Result<Vec<_>, Error>>()?;
            (root, positions)
        };
        if graph.anomaly_mode() {
            // The checks of the plain backward first: a NaN or infinity in a value, or in a
            // gradient flowing back, is reported before anything is recorded.
            self.try_backward()?;
        }
        let start = graph.len();
        let adjoints = match differentiable_sweep(graph, root, &positions) {
            Ok(adjoints) => adjoints,
            Err(e) => {
                // Drop what the sweep recorded before it stopped (no handle refers to it
                // but the ones it made itself, which go with it).
                graph.tape.borrow_mut().truncate(start);
                return Err(e);
            }
        };
        let mut tape = graph.tape.borrow_mut();
        let grads = positions
            .iter()
            .map(|&p| match adjoints.get(p).copied().flatten() {
                Some(Term::Node(_, pos)) => graph.handle(&tape, pos),
                Some(Term::Const(c)) => constant(graph, &mut tape, c),
                None => constant(graph, &mut tape, 0.0),
            })
            .collect();
        // The gradients' values are the plain backward's, checked above; the nodes recorded
        // on the way (an infinite partial that a zero factor stopped, say) are checked only
        // when a later backward goes through them.
        tape.adopt_from(start, location);
        Ok(grads)
    }
}

fn constant<'g>(graph: &'g Graph, tape: &mut Tape, c: f64) -> Var<'g> {
    let node = tape
        .leaf(Op::Constant, c, Location::caller())
        .unwrap_or_else(|e| panic!("{e}"));
    Var::recorded(graph, node)
}

/// The adjoint of every node up to `root` that depends on one of `inputs`, as terms
/// recorded on the graph (`None` where nothing flows); an error for a node on the way
/// that has no second-order rule.
fn differentiable_sweep<'g>(
    graph: &'g Graph,
    root: usize,
    inputs: &[usize],
) -> Result<Vec<Option<Term<'g>>>, Error> {
    // Only nodes that depend on an input need adjoints: mark them in one forward pass.
    let mut depends = vec![false; root + 1];
    {
        let tape = graph.tape.borrow();
        for &p in inputs.iter().filter(|&&p| p <= root) {
            depends[p] = true;
        }
        for node in 0..=root {
            if !depends[node] {
                depends[node] = tape
                    .operand_positions(node)
                    .any(|a| a != CONST_ARG && depends[a as usize]);
            }
        }
    }
    let mut adjoints: Vec<Option<Term<'g>>> = vec![None; root + 1];
    if !depends[root] {
        return Ok(adjoints);
    }
    adjoints[root] = Some(Term::Const(1.0));
    let operand = |arg: u32, w: f64| {
        if arg == CONST_ARG {
            Term::Const(w)
        } else {
            Term::Node(graph, arg)
        }
    };
    // The plain sweep's sums start at +0, so none of them is ever -0; a first
    // contribution of -0 is made +0 here too (by a recorded `+ 0`, which keeps its
    // derivative), so that the two sweeps agree to the bit.
    let add = |adjoints: &mut [Option<Term<'g>>], arg: u32, contribution: Option<Term<'g>>| {
        let Some(contribution) = contribution else {
            return;
        };
        let slot = &mut adjoints[arg as usize];
        *slot = Some(match *slot {
            Some(sum) => sum + contribution,
            None => contribution.without_negative_zero(),
        });
    };
    let needs = |arg: u32| arg != CONST_ARG && depends[arg as usize];
    let (mut args, mut operands) = (Vec::new(), Vec::new());
    for node in (0..=root).rev() {
        let Some(adjoint) = adjoints[node] else {
            continue;
        };
        let y = Term::Node(graph, node as u32);
        // Operand positions and terms, in operand order.
        let op = {
            let tape = graph.tape.borrow();
            let (a, w) = tape.edges(node);
            args.clear();
            args.extend_from_slice(&a);
            operands.clear();
            operands.extend(a.iter().zip(w.iter()).map(|(&arg, &w)| operand(arg, w)));
            tape.op(node)
        };
        // Each edge's contribution by the plain sweep's rule (`backward::chain`, and
        // `backward::rescue` for a partial that overflowed), edge by edge in operand order,
        // as the plain sweep adds them.
        let contribute = |adjoints: &mut [Option<Term<'g>>], k: usize, partial: Term<'g>| {
            let rescued = rescue(op, &operands, y, k, partial.value());
            let contribution = match rescued {
                Some(quotient) => chain_quotient(adjoint, quotient),
                None => chain(adjoint, partial),
            };
            add(adjoints, args[k], contribution);
        };
        match op {
            Op::Unary(u) => {
                if needs(args[0]) {
                    contribute(&mut adjoints, 0, u.partial(operands[0], y));
                }
            }
            Op::Binary(b) => {
                for (k, &arg) in args.iter().enumerate() {
                    if needs(arg) {
                        contribute(&mut adjoints, k, b.partial(operands[0], operands[1], y, k));
                    }
                }
            }
            Op::Nary(n) => {
                if args.iter().any(|&a| needs(a)) {
                    let partials = n.partials(&operands, y);
                    for (k, partial) in partials.into_iter().enumerate() {
                        if needs(args[k]) {
                            contribute(&mut adjoints, k, partial);
                        }
                    }
                }
            }
            Op::Custom(f) => {
                let name = graph.tape.borrow().op_name(node);
                let partials = custom_partials(graph, usize::from(f), node, &args)?
                    .ok_or(Error::NoSecondOrder { op: name })?;
                for (k, partial) in partials.into_iter().enumerate() {
                    if needs(args[k]) {
                        contribute(&mut adjoints, k, partial);
                    }
                }
            }
            Op::Fused => return Err(Error::NoSecondOrder { op: "fused" }),
            Op::Input | Op::Constant => {}
        }
    }
    Ok(adjoints)
}

/// The partials of the user-defined function `k` at node `node` (operands at `args`), as
/// terms recorded by the function's second-order rule, or `None` if it has none. The rule
/// works on `Var`s: the operands and the node get handles for it (released with the
/// graph's next release, like the gradients `grad` returns). A malformed rule (the wrong
/// number of partials, a `Var` that is not a live node of this graph, or a non-finite
/// partial where the function promises finite ones) is [`Error::BadPartials`].
fn custom_partials<'g>(
    graph: &'g Graph,
    k: usize,
    node: usize,
    args: &[u32],
) -> Result<Option<Vec<Term<'g>>>, Error> {
    let f = Arc::clone(&graph.customs.borrow()[k]);
    let (xs, y) = {
        let tape = graph.tape.borrow();
        let xs: Vec<Var<'g>> = args.iter().map(|&a| graph.handle(&tape, a)).collect();
        (xs, graph.handle(&tape, node as u32))
    };
    let Some(partials) = f.graph_partials(&xs, y) else {
        return Ok(None);
    };
    if partials.len() != xs.len() {
        return Err(Error::BadPartials {
            op: f.name(),
            operand: partials.len().min(xs.len()),
            why: format!(
                "is {}: CustomFn::graph_partials returned {} partials for {} operands",
                if partials.len() < xs.len() {
                    "missing"
                } else {
                    "one too many"
                },
                partials.len(),
                xs.len()
            ),
        });
    }
    let tape = graph.tape.borrow();
    let terms = partials
        .iter()
        .enumerate()
        .map(|(operand, v)| match graph.resolve_var(&tape, *v) {
            Ok(r) => Ok(Term::Node(graph, r.arg)),
            Err(e) => Err(Error::BadPartials {
                op: f.name(),
                operand,
                why: format!("from CustomFn::graph_partials is not a node of this graph: {e}"),
            }),
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let values: Vec<f64> = args.iter().map(|&a| tape.values()[a as usize]).collect();
    let partial_values = terms.iter().map(|t| match *t {
        Term::Node(_, pos) => tape.values()[pos as usize],
        Term::Const(c) => c,
    });
    check_finite(&*f, &values, tape.values()[node], partial_values)?;
    Ok(Some(terms))
}

/// A value inside the differentiable sweep: a constant (folded, never recorded) or a node
/// of the graph addressed by tape position (every node recorded gets its key as any does,
/// but only the gradients handed back to the user get handles).
#[derive(Clone, Copy)]
pub(in crate::engine) enum Term<'g> {
    Const(f64),
    Node(&'g Graph, u32),
}

impl fmt::Debug for Term<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Term::Const(c) => write!(f, "Const({c})"),
            Term::Node(g, pos) => write!(f, "Node(graph #{}, position {pos})", g.id()),
        }
    }
}

impl<'g> Term<'g> {
    fn graph(self) -> Option<&'g Graph> {
        match self {
            Term::Const(_) => None,
            Term::Node(g, _) => Some(g),
        }
    }

    fn resolved(self, tape: &Tape) -> Resolved {
        match self {
            Term::Const(c) => Resolved::constant(c),
            Term::Node(_, pos) => Resolved {
                value: tape.values()[pos as usize],
                arg: pos,
            },
        }
    }

    fn is(self, c: f64) -> bool {
        matches!(self, Term::Const(x) if x == c)
    }

    fn is_positive_zero(self) -> bool {
        let v = self.value();
        v == 0.0 && v.is_sign_positive()
    }

    fn is_negative_zero(self) -> bool {
        let v = self.value();
        v == 0.0 && v.is_sign_negative()
    }

    /// `self`, or `self + 0` (recorded, not folded) if its value is -0.
    fn without_negative_zero(self) -> Self {
        match self {
            Term::Const(c) => Term::Const(c + 0.0),
            Term::Node(graph, _) if self.is_negative_zero() => {
                Term::record_binary(graph, Binary::Add, self, Term::Const(0.0))
            }
            Term::Node(..) => self,
        }
    }

    fn unary(self, op: Unary) -> Self {
        match self {
            Term::Const(c) => Term::Const(op.value(c)),
            Term::Node(graph, _) => {
                let mut tape = graph.tape.borrow_mut();
                let x = self.resolved(&tape);
                let pos = tape
                    .unary(op, x, Location::caller())
                    .unwrap_or_else(|e| panic!("{e}"));
                Term::Node(graph, pos.pos())
            }
        }
    }

    fn binary(op: Binary, a: Self, b: Self) -> Self {
        // Fold what symbolic differentiation makes plentiful: x + 0, x * 1, 0 * x, x / 1,
        // each to exactly the number the operation would give (the plain backward's
        // partials are these operations on `f64`, and the two sweeps agree to the bit):
        // `+0 + -0` is `+0`, `0 * x` is `-0` for a negative `x` and NaN for an infinite one.
        match op {
            Binary::Add if a.is(0.0) && !(a.is_positive_zero() && b.is_negative_zero()) => {
                return b;
            }
            Binary::Add if b.is(0.0) && !(b.is_positive_zero() && a.is_negative_zero()) => {
                return a;
            }
            Binary::Sub if b.is(0.0) && !(b.is_negative_zero() && a.is_negative_zero()) => {
                return a;
            }
            Binary::Mul if a.is(1.0) => return b,
            Binary::Mul | Binary::Div if b.is(1.0) => return a,
            // Constant: its derivative, 0 times the other's, passes nothing (a zero factor
            // wins, as in `backward::chain`).
            Binary::Mul if a.is(0.0) || b.is(0.0) => return Term::Const(a.value() * b.value()),
            _ => {}
        }
        match (a, b) {
            (Term::Const(x), Term::Const(y)) => Term::Const(op.value(x, y)),
            (Term::Node(graph, _), _) | (_, Term::Node(graph, _)) => {
                Term::record_binary(graph, op, a, b)
            }
        }
    }

    fn record_binary(graph: &'g Graph, op: Binary, a: Self, b: Self) -> Self {
        let mut tape = graph.tape.borrow_mut();
        let (x, y) = (a.resolved(&tape), b.resolved(&tape));
        let pos = tape
            .binary(op, x, y, Location::caller())
            .unwrap_or_else(|e| panic!("{e}"));
        Term::Node(graph, pos.pos())
    }

    fn nary(op: Nary, terms: &[Self]) -> Self {
        let Some(graph) = terms.iter().find_map(|t| t.graph()) else {
            let values: Vec<f64> = terms.iter().map(|t| t.value()).collect();
            return Term::Const(op.value(&values));
        };
        let mut tape = graph.tape.borrow_mut();
        let resolve = |_: &_, values: &[f64], t: &Term<'g>| {
            Ok(match *t {
                Term::Const(c) => Resolved::constant(c),
                Term::Node(_, pos) => Resolved {
                    value: values[pos as usize],
                    arg: pos,
                },
            })
        };
        let pos = tape
            .nary(op, terms, resolve, Location::caller())
            .unwrap_or_else(|e| panic!("{e}"));
        Term::Node(graph, pos.pos())
    }
}

macro_rules! term_operator {
    ($trait:ident, $method:ident, $op:ident) => {
        impl<'g> $trait for Term<'g> {
            type Output = Term<'g>;
            fn $method(self, rhs: Term<'g>) -> Term<'g> {
                Term::binary(Binary::$op, self, rhs)
            }
        }
        impl<'g> $trait<f64> for Term<'g> {
            type Output = Term<'g>;
            fn $method(self, rhs: f64) -> Term<'g> {
                Term::binary(Binary::$op, self, Term::Const(rhs))
            }
        }
    };
}

term_operator!(Add, add, Add);
term_operator!(Sub, sub, Sub);
term_operator!(Mul, mul, Mul);
term_operator!(Div, div, Div);

impl Neg for Term<'_> {
    type Output = Self;
    fn neg(self) -> Self {
        self.unary(Unary::Neg)
    }
}

impl<'g> From<Term<'g>> for Operand<Term<'g>> {
    fn from(t: Term<'g>) -> Self {
        Operand::Scalar(t)
    }
}

impl<'g> std::iter::Sum for Term<'g> {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        Scalar::sum(iter)
    }
}

impl<'a, 'g> std::iter::Sum<&'a Term<'g>> for Term<'g> {
    fn sum<I: Iterator<Item = &'a Self>>(iter: I) -> Self {
        Scalar::sum(iter)
    }
}

impl Scalar for Term<'_> {
    fn value(&self) -> f64 {
        match *self {
            Term::Const(c) => c,
            Term::Node(g, pos) => g.tape.borrow().values()[pos as usize],
        }
    }
    fn lift(&self, c: f64) -> Self {
        Term::Const(c)
    }
    fn unary(self, op: Unary) -> Self {
        Term::unary(self, op)
    }
    fn binary(self, op: Binary, other: Self) -> Self {
        Term::binary(op, self, other)
    }
    fn binary_f64(self, op: Binary, c: f64) -> Self {
        Term::binary(op, self, Term::Const(c))
    }
    fn powi(self, n: i32) -> Self {
        match n {
            1 => self,
            _ => Term::binary(Binary::Powi, self, Term::Const(f64::from(n))),
        }
    }
    fn clamp(self, lo: f64, hi: f64) -> Self {
        Term::nary(Nary::Clamp, &[self, Term::Const(lo), Term::Const(hi)])
    }
    fn amax(terms: &[Self]) -> Self {
        Term::nary(Nary::Max, terms)
    }
    fn sum<I>(terms: I) -> Self
    where
        I: IntoIterator,
        I::Item: Borrow<Self>,
    {
        let terms: Vec<Self> = terms.into_iter().map(|t| *t.borrow()).collect();
        Term::nary(Nary::Sum, &terms)
    }
    fn dot(a: &[Self], b: &[Self]) -> Self {
        assert_eq!(a.len(), b.len(), "dot of slices of different lengths");
        let both: Vec<Self> = a.iter().chain(b).copied().collect();
        Term::nary(Nary::Dot, &both)
    }
    fn logsumexp(terms: &[Self]) -> Self {
        Term::nary(Nary::LogSumExp, terms)
    }
}
