//! Reverse mode: the plain sweep that fills [`Gradients`], and the differentiable sweep
//! ([`Var::grad`]) that records its own arithmetic so gradients can be differentiated again.
//!
//! Because a node can only refer to nodes recorded before it, tape order is a topological
//! order: one reverse pass over positions `root..=0`, no recursion, visits every consumer
//! of a node before the node itself, so each node's adjoint is complete when it is read.

use std::fmt;
use std::ops::{Add, Div, Index, Mul, Neg, Sub};
use std::panic::Location;

use crate::error::{Anomaly, Error};
use crate::graph::{CONST_ARG, Graph, Resolved, Tape};
use crate::op::{Binary, Nary, Op, Unary};
use crate::scalar::Scalar;
use crate::var::Var;

/// The derivatives of one output with respect to every node recorded before it, held
/// apart from the graph: computing them twice, or for two outputs, just works, and there
/// is no `zero_grad` to forget.
///
/// Read them with [`Gradients::wrt`] or by indexing with the `Var`. A node that does not
/// reach the output, or was recorded after it, has gradient 0.
///
/// # Examples
///
/// ```
/// use tapegrad::Graph;
///
/// let g = Graph::new();
/// let a = g.var(3.0);
/// let b = a * a; // used twice below: its contributions add up
/// let c = b + b;
/// let grads = c.backward();
/// assert_eq!(grads.wrt(a), 12.0); // d(2 a^2)/da = 4a
/// assert_eq!(grads[b], 2.0);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Gradients {
    graph: u64,
    root: u32,
    epoch: u64,
    adjoints: Vec<f64>,
}

static ZERO: f64 = 0.0;

impl Gradients {
    /// An empty store, to be filled (again and again, without reallocating) by
    /// [`Var::backward_into`].
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(2.0);
    /// let mut grads = tapegrad::Gradients::new();
    /// (x * x).backward_into(&mut grads);
    /// assert_eq!(grads[x], 4.0);
    /// ```
    pub fn new() -> Self {
        Gradients::default()
    }

    /// `d output / d x`.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(2.0);
    /// assert_eq!(x.powi(3).backward().wrt(x), 12.0);
    /// ```
    ///
    /// # Panics
    ///
    /// If `x` was released or belongs to another graph (see [`Gradients::try_wrt`]).
    #[track_caller]
    pub fn wrt(&self, x: Var<'_>) -> f64 {
        self.try_wrt(x).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `d output / d x`, or the error that prevents reading it.
    ///
    /// # Errors
    ///
    /// [`Error::Released`] if `x` was released; [`Error::ForeignHandle`] if `x` belongs to
    /// another graph than the one these gradients were computed on.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::Graph;
    /// let (g, h) = (Graph::new(), Graph::new());
    /// let x = g.var(1.0);
    /// let grads = x.exp().backward();
    /// assert_eq!(grads.try_wrt(x), Ok(1f64.exp()));
    /// assert!(grads.try_wrt(h.var(1.0)).is_err());
    /// ```
    pub fn try_wrt(&self, x: Var<'_>) -> Result<f64, Error> {
        self.position(x)
            .map(|pos| pos.map_or(0.0, |p| self.adjoints[p]))
    }

    /// The gradients with respect to each of `xs`, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let xs = g.vars(&[1.0, 2.0]);
    /// let y = xs[0] * xs[1];
    /// assert_eq!(y.backward().wrt_all(&xs), vec![2.0, 1.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`Gradients::wrt`].
    #[track_caller]
    pub fn wrt_all(&self, xs: &[Var<'_>]) -> Vec<f64> {
        xs.iter().map(|&x| self.wrt(x)).collect()
    }

    /// Where `x`'s gradient is stored, or `None` if it is 0 because `x` was recorded after
    /// the output (or after a release that followed this backward).
    fn position(&self, x: Var<'_>) -> Result<Option<usize>, Error> {
        let graph = x.graph();
        if graph.id() != self.graph {
            return Err(Error::ForeignHandle {
                what: "Var",
                owner: graph.id(),
                used_with: self.graph,
            });
        }
        let tape = graph.tape.borrow();
        let pos = graph.resolve(&tape, x)?.arg;
        let valid = pos <= self.root && pos < tape.released_since(self.epoch);
        Ok(valid.then_some(pos as usize))
    }
}

impl Index<Var<'_>> for Gradients {
    type Output = f64;

    /// `grads[x]` is [`Gradients::wrt`]: it panics on a released or foreign handle.
    #[track_caller]
    fn index(&self, x: Var<'_>) -> &f64 {
        match self.position(x) {
            Ok(Some(pos)) => &self.adjoints[pos],
            Ok(None) => &ZERO,
            Err(e) => panic!("{e}"),
        }
    }
}

impl<'g> Var<'g> {
    /// The gradients of `self` with respect to every node recorded before it.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let (x, y) = (g.var(2.0), g.var(3.0));
    /// let f = x.exp() / y.ln();
    /// let grads = f.backward();
    /// approx::assert_relative_eq!(grads[x], f.value());
    /// ```
    ///
    /// # Panics
    ///
    /// If `self` was released, or in anomaly mode if a NaN or infinity appeared (see
    /// [`Var::try_backward`]).
    #[track_caller]
    pub fn backward(self) -> Gradients {
        self.try_backward().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Var::backward`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::Released`] if `self` was released; in anomaly mode, [`Error::Anomaly`] for
    /// the first op at or before `self` whose value was NaN or infinite, or the first op
    /// whose backward produced a NaN or infinite gradient.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(2.0);
    /// assert_eq!(x.powi(2).try_backward().unwrap()[x], 4.0);
    /// ```
    pub fn try_backward(self) -> Result<Gradients, Error> {
        let mut grads = Gradients::new();
        self.try_backward_into(&mut grads)?;
        Ok(grads)
    }

    /// [`Var::backward`] into an existing store, reusing its memory: a training loop that
    /// calls this every step allocates nothing for gradients after the first step.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let w = g.var(1.0);
    /// let mut grads = tapegrad::Gradients::new();
    /// for _ in 0..3 {
    ///     (w * 5.0).backward_into(&mut grads);
    ///     assert_eq!(grads[w], 5.0);
    /// }
    /// ```
    ///
    /// # Panics
    ///
    /// As [`Var::backward`].
    #[track_caller]
    pub fn backward_into(self, grads: &mut Gradients) {
        self.try_backward_into(grads)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Var::backward_into`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// As [`Var::try_backward`].
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(2.0);
    /// let mut grads = tapegrad::Gradients::new();
    /// assert!(x.exp().try_backward_into(&mut grads).is_ok());
    /// ```
    pub fn try_backward_into(self, grads: &mut Gradients) -> Result<(), Error> {
        let graph = self.graph();
        let tape = graph.tape.borrow();
        let root = graph.resolve(&tape, self)?.arg;
        grads.graph = graph.id();
        grads.root = root;
        grads.epoch = tape.epoch;
        if tape.anomaly.is_some() {
            if let Some(a) = tape.anomaly_up_to(root) {
                return Err(Error::Anomaly(Box::new(a.clone())));
            }
            return sweep_checked(&tape, root as usize, &mut grads.adjoints);
        }
        sweep(&tape, root as usize, &mut grads.adjoints);
        Ok(())
    }
}

/// The reverse sweep: `adjoint[arg] += adjoint[node] * partial` over every edge, from the
/// root down. Constant operands' edges point past the end, at a sink slot nobody reads, so
/// the loop needs no branch for them.
fn sweep(tape: &Tape, root: usize, adjoints: &mut Vec<f64>) {
    let sink = root + 1;
    adjoints.clear();
    adjoints.resize(root + 2, 0.0);
    adjoints[root] = 1.0;
    for node in (0..=root).rev() {
        let adjoint = adjoints[node];
        if adjoint == 0.0 {
            continue;
        }
        let (args, weights) = tape.edges(node);
        for (&arg, &partial) in args.iter().zip(weights) {
            adjoints[(arg as usize).min(sink)] += adjoint * partial;
        }
    }
}

/// [`sweep`] in anomaly mode: stops at the first edge whose contribution, or whose
/// operand's accumulated adjoint, is not finite.
#[cold]
fn sweep_checked(tape: &Tape, root: usize, adjoints: &mut Vec<f64>) -> Result<(), Error> {
    adjoints.clear();
    adjoints.resize(root + 2, 0.0);
    adjoints[root] = 1.0;
    for node in (0..=root).rev() {
        let adjoint = adjoints[node];
        if adjoint == 0.0 {
            continue;
        }
        let (args, weights) = tape.edges(node);
        for (&arg, &partial) in args.iter().zip(weights) {
            if arg == CONST_ARG {
                continue;
            }
            let sum = adjoints[arg as usize] + adjoint * partial;
            if !sum.is_finite() {
                return Err(Error::Anomaly(Box::new(Anomaly {
                    op: tape.op_name(node),
                    inputs: tape.operand_values(node),
                    output: tape.values[node],
                    gradient: Some(adjoint * partial),
                    location: tape.location(node),
                })));
            }
            adjoints[arg as usize] = sum;
        }
    }
    Ok(())
}

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
    /// On a released or foreign handle (see [`Var::try_grad`]).
    #[track_caller]
    pub fn grad(self, inputs: &[Var<'g>]) -> Vec<Var<'g>> {
        self.try_grad(inputs).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Var::grad`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::Released`] or [`Error::ForeignHandle`] for `self` or an input.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::Graph;
    /// let (g, h) = (Graph::new(), Graph::new());
    /// let x = g.var(1.0);
    /// assert!(x.exp().try_grad(&[h.var(1.0)]).is_err());
    /// ```
    pub fn try_grad(self, inputs: &[Var<'g>]) -> Result<Vec<Var<'g>>, Error> {
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
        let adjoints = differentiable_sweep(graph, root, &positions);
        let mut tape = graph.tape.borrow_mut();
        Ok(positions
            .iter()
            .map(|&p| match adjoints.get(p).copied().flatten() {
                Some(Term::Node(_, pos)) => graph.handle(&mut tape, pos),
                Some(Term::Const(c)) => constant(graph, &mut tape, c),
                None => constant(graph, &mut tape, 0.0),
            })
            .collect())
    }
}

fn constant<'g>(graph: &'g Graph, tape: &mut Tape, c: f64) -> Var<'g> {
    let pos = tape
        .leaf(Op::Constant, c, Location::caller())
        .unwrap_or_else(|e| panic!("{e}"));
    graph.handle(tape, pos)
}

/// The adjoint of every node up to `root` that depends on one of `inputs`, as terms
/// recorded on the graph (`None` where nothing flows).
fn differentiable_sweep<'g>(
    graph: &'g Graph,
    root: usize,
    inputs: &[usize],
) -> Vec<Option<Term<'g>>> {
    // Only nodes that depend on an input need adjoints: mark them in one forward pass.
    let mut depends = vec![false; root + 1];
    {
        let tape = graph.tape.borrow();
        for &p in inputs.iter().filter(|&&p| p <= root) {
            depends[p] = true;
        }
        for node in 0..=root {
            if !depends[node] {
                let (args, _) = tape.edges(node);
                depends[node] = args.iter().any(|&a| a != CONST_ARG && depends[a as usize]);
            }
        }
    }
    let mut adjoints: Vec<Option<Term<'g>>> = vec![None; root + 1];
    if !depends[root] {
        return adjoints;
    }
    adjoints[root] = Some(Term::Const(1.0));
    let (mut args, mut operands) = (Vec::new(), Vec::new());
    for node in (0..=root).rev() {
        let Some(adjoint) = adjoints[node] else {
            continue;
        };
        let op = {
            let tape = graph.tape.borrow();
            let (a, w) = tape.edges(node);
            args.clear();
            args.extend_from_slice(a);
            operands.clear();
            operands.extend(a.iter().zip(w).map(|(&arg, &w)| {
                if arg == CONST_ARG {
                    Term::Const(w)
                } else {
                    Term::Node(graph, arg)
                }
            }));
            tape.ops[node]
        };
        let y = Term::Node(graph, node as u32);
        for (k, &arg) in args.iter().enumerate() {
            if arg == CONST_ARG || !depends[arg as usize] {
                continue;
            }
            let partial = match op {
                Op::Unary(op) => op.partial(operands[0], y),
                Op::Binary(op) => op.partial(operands[0], operands[1], y, k),
                Op::Nary(op) => op.partial(&operands, y, k),
                Op::Input | Op::Constant => unreachable!("leaves have no operands"),
            };
            let contribution = adjoint * partial;
            let slot = &mut adjoints[arg as usize];
            *slot = Some(match *slot {
                Some(sum) => sum + contribution,
                None => contribution,
            });
        }
    }
    adjoints
}

/// A value inside the differentiable sweep: a constant (folded, never recorded) or a node
/// of the graph addressed by tape position. Recording by position skips the slot map: only
/// the gradients handed back to the user get keys.
#[derive(Clone, Copy)]
pub(crate) enum Term<'g> {
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
                value: tape.values[pos as usize],
                arg: pos,
            },
        }
    }

    fn is(self, c: f64) -> bool {
        matches!(self, Term::Const(x) if x == c)
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
                Term::Node(graph, pos)
            }
        }
    }

    fn binary(op: Binary, a: Self, b: Self) -> Self {
        // Fold what symbolic differentiation makes plentiful: x + 0, x * 1, 0 * x, x / 1.
        match op {
            Binary::Add if a.is(0.0) => return b,
            Binary::Add | Binary::Sub if b.is(0.0) => return a,
            Binary::Mul if a.is(1.0) => return b,
            Binary::Mul | Binary::Div if b.is(1.0) => return a,
            Binary::Mul if a.is(0.0) || b.is(0.0) => return Term::Const(0.0),
            _ => {}
        }
        let Some(graph) = a.graph().or(b.graph()) else {
            let (Term::Const(x), Term::Const(y)) = (a, b) else {
                unreachable!()
            };
            return Term::Const(op.value(x, y));
        };
        let mut tape = graph.tape.borrow_mut();
        let (x, y) = (a.resolved(&tape), b.resolved(&tape));
        let pos = tape
            .binary(op, x, y, Location::caller())
            .unwrap_or_else(|e| panic!("{e}"));
        Term::Node(graph, pos)
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
        Term::Node(graph, pos)
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

impl Scalar for Term<'_> {
    fn value(&self) -> f64 {
        match *self {
            Term::Const(c) => c,
            Term::Node(g, pos) => g.tape.borrow().values[pos as usize],
        }
    }
    fn lift(&self, c: f64) -> Self {
        Term::Const(c)
    }
    fn exp(self) -> Self {
        self.unary(Unary::Exp)
    }
    fn ln(self) -> Self {
        self.unary(Unary::Ln)
    }
    fn sqrt(self) -> Self {
        self.unary(Unary::Sqrt)
    }
    fn recip(self) -> Self {
        self.unary(Unary::Recip)
    }
    fn powi(self, n: i32) -> Self {
        match n {
            1 => self,
            _ => Term::binary(Binary::Powi, self, Term::Const(f64::from(n))),
        }
    }
    fn powf(self, p: Self) -> Self {
        Term::binary(Binary::Powf, self, p)
    }
    fn sin(self) -> Self {
        self.unary(Unary::Sin)
    }
    fn cos(self) -> Self {
        self.unary(Unary::Cos)
    }
    fn tanh(self) -> Self {
        self.unary(Unary::Tanh)
    }
    fn sinh(self) -> Self {
        self.unary(Unary::Sinh)
    }
    fn cosh(self) -> Self {
        self.unary(Unary::Cosh)
    }
    fn abs(self) -> Self {
        self.unary(Unary::Abs)
    }
    fn relu(self) -> Self {
        self.unary(Unary::Relu)
    }
    fn sigmoid(self) -> Self {
        self.unary(Unary::Sigmoid)
    }
    fn gelu(self) -> Self {
        self.unary(Unary::Gelu)
    }
    fn sum(terms: &[Self]) -> Self {
        Term::nary(Nary::Sum, terms)
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
