//! The engines under comparison, each behind the same small interface.
//!
//! The workloads are written over [`tapegrad::Scalar`]; tapegrad's `Var` and `f64`
//! implement it already, and the peers' variable types are wrapped here in newtypes that
//! implement it with the peers' own operations. Where a peer has no fused n-ary node (a
//! sum, a dot product, a log-sum-exp), the newtype composes it from binary ops, exactly
//! as a user of that crate would write it. [`BinaryOnly`] does the same on tapegrad, so
//! the table also shows tapegrad's cost per node on the peers' node set.

use std::ops::{Add, Div, Mul, Neg, Sub};

use num_traits::Float as _;
use tapegrad::{Gradients, Graph, Scalar, Var};

use crate::workloads::Workload;

/// `sqrt(2 / pi)` and the cubic coefficient of GELU's tanh form.
const SQRT_2_OVER_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2;
const GELU_CUBIC: f64 = 0.044715;

/// How an engine is run: with its buffers kept from one call to the next (warm, as in a
/// training loop), or with a fresh tape every call (cold, as in a one-off gradient).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffers {
    /// Reuse the tape's (and the gradient store's) memory across calls.
    Warm,
    /// Allocate a new tape for every call.
    Cold,
}

/// One AD engine (or plain `f64`), able to record a workload and to differentiate it.
pub trait Engine {
    /// The name shown in tables.
    fn name(&self) -> &'static str;
    /// Records `w` at `x` without differentiating; returns the value and the number of
    /// nodes (or statements) the engine recorded.
    fn record<W: Workload>(&mut self, w: &W, x: &[f64]) -> (f64, usize);
    /// Records `w` at `x` and computes its gradient into `grad`; returns the value and the
    /// number of nodes.
    fn gradient<W: Workload>(&mut self, w: &W, x: &[f64], grad: &mut Vec<f64>) -> (f64, usize);
}

/// Plain `f64` evaluation: the baseline every ratio is taken against.
pub struct Plain;

impl Engine for Plain {
    fn name(&self) -> &'static str {
        "f64"
    }
    fn record<W: Workload>(&mut self, w: &W, x: &[f64]) -> (f64, usize) {
        (w.eval(x), 0)
    }
    fn gradient<W: Workload>(&mut self, w: &W, x: &[f64], grad: &mut Vec<f64>) -> (f64, usize) {
        grad.clear();
        (w.eval(x), 0)
    }
}

// ---------------------------------------------------------------------------------------
// tapegrad
// ---------------------------------------------------------------------------------------

/// tapegrad with its fused n-ary nodes (`Var` as it is).
pub struct Tapegrad {
    buffers: Buffers,
    graph: Graph,
    grads: Gradients,
}

impl Tapegrad {
    pub fn new(buffers: Buffers) -> Self {
        Tapegrad {
            buffers,
            graph: Graph::new(),
            grads: Gradients::new(),
        }
    }

    /// Runs `body` on a graph: the kept one (released afterwards) or a fresh one.
    fn with_graph<R>(&mut self, body: impl FnOnce(&Graph, &mut Gradients) -> R) -> R {
        match self.buffers {
            Buffers::Warm => {
                let mark = self.graph.mark();
                let result = body(&self.graph, &mut self.grads);
                self.graph.release(mark);
                result
            }
            Buffers::Cold => body(&Graph::new(), &mut Gradients::new()),
        }
    }
}

impl Engine for Tapegrad {
    fn name(&self) -> &'static str {
        "tapegrad"
    }
    fn record<W: Workload>(&mut self, w: &W, x: &[f64]) -> (f64, usize) {
        self.with_graph(|g, _| {
            let xs = g.vars(x);
            let y = w.eval(&xs);
            (y.value(), g.len())
        })
    }
    fn gradient<W: Workload>(&mut self, w: &W, x: &[f64], grad: &mut Vec<f64>) -> (f64, usize) {
        self.with_graph(|g, grads| {
            let xs = g.vars(x);
            let y = w.eval(&xs);
            y.backward_into(grads);
            grad.clear();
            *grad = grads.wrt_all(&xs);
            (y.value(), g.len())
        })
    }
}

/// tapegrad restricted to the peers' node set: sums, dot products, log-sum-exp, GELU and
/// the logistic function composed from binary and unary ops, as the peers record them.
#[derive(Clone, Copy, Debug)]
pub struct BinaryOnly<'g>(pub Var<'g>);

/// [`Tapegrad`] recording through [`BinaryOnly`].
pub struct TapegradBinary(Tapegrad);

impl TapegradBinary {
    pub fn new(buffers: Buffers) -> Self {
        TapegradBinary(Tapegrad::new(buffers))
    }
}

impl Engine for TapegradBinary {
    fn name(&self) -> &'static str {
        "tapegrad (binary ops only)"
    }
    fn record<W: Workload>(&mut self, w: &W, x: &[f64]) -> (f64, usize) {
        self.0.with_graph(|g, _| {
            let xs: Vec<BinaryOnly> = x.iter().map(|&v| BinaryOnly(g.var(v))).collect();
            let y = w.eval(&xs);
            (y.0.value(), g.len())
        })
    }
    fn gradient<W: Workload>(&mut self, w: &W, x: &[f64], grad: &mut Vec<f64>) -> (f64, usize) {
        self.0.with_graph(|g, grads| {
            let xs: Vec<BinaryOnly> = x.iter().map(|&v| BinaryOnly(g.var(v))).collect();
            let y = w.eval(&xs);
            y.0.backward_into(grads);
            grad.clear();
            grad.extend(xs.iter().map(|v| grads[v.0]));
            (y.0.value(), g.len())
        })
    }
}

// ---------------------------------------------------------------------------------------
// echidna 0.15, reverse mode (its Adept-style `Reverse<f64>` on a thread-local tape)
// ---------------------------------------------------------------------------------------

/// echidna's reverse-mode variable.
#[derive(Clone, Copy, Debug)]
pub struct Echidna(pub echidna::Reverse<f64>);

/// echidna's tape, kept (and cleared) between calls when warm.
pub struct EchidnaEngine {
    buffers: Buffers,
    tape: echidna::tape::Tape<f64>,
}

impl EchidnaEngine {
    pub fn new(buffers: Buffers) -> Self {
        EchidnaEngine {
            buffers,
            tape: echidna::tape::Tape::new(),
        }
    }

    /// Records `w` on the tape; returns the output variable. This is what `echidna::grad`
    /// does, minus its thread-local tape pool, so that warm and cold can be told apart.
    fn run<W: Workload>(
        tape: &mut echidna::tape::Tape<f64>,
        w: &W,
        x: &[f64],
    ) -> echidna::Reverse<f64> {
        let xs: Vec<Echidna> = x
            .iter()
            .map(|&v| {
                let (index, value) = tape.new_variable(v);
                Echidna(echidna::Reverse::from_tape(value, index))
            })
            .collect();
        let _active = echidna::tape::TapeGuard::new(tape);
        w.eval(&xs).0
    }

    fn with_tape<R>(&mut self, body: impl FnOnce(&mut echidna::tape::Tape<f64>) -> R) -> R {
        match self.buffers {
            Buffers::Warm => {
                self.tape.clear();
                body(&mut self.tape)
            }
            Buffers::Cold => body(&mut echidna::tape::Tape::new()),
        }
    }
}

impl Engine for EchidnaEngine {
    fn name(&self) -> &'static str {
        "echidna 0.15"
    }
    fn record<W: Workload>(&mut self, w: &W, x: &[f64]) -> (f64, usize) {
        self.with_tape(|tape| {
            let y = Self::run(tape, w, x);
            // Variables are numbered in recording order, so the output's index + 1 is the
            // number of variables (inputs and recorded ops) on the tape.
            (echidna::Scalar::value(&y), y.index() as usize + 1)
        })
    }
    fn gradient<W: Workload>(&mut self, w: &W, x: &[f64], grad: &mut Vec<f64>) -> (f64, usize) {
        self.with_tape(|tape| {
            let y = Self::run(tape, w, x);
            let adjoints = tape.reverse(y.index());
            grad.clear();
            grad.extend_from_slice(&adjoints[..x.len()]);
            (echidna::Scalar::value(&y), y.index() as usize + 1)
        })
    }
}

// ---------------------------------------------------------------------------------------
// reverse 0.2
// ---------------------------------------------------------------------------------------

/// reverse's variable.
#[derive(Clone, Copy, Debug)]
pub struct Rev<'t>(pub reverse::Var<'t>);

/// reverse's tape, kept (and cleared) between calls when warm.
pub struct ReverseEngine {
    buffers: Buffers,
    tape: reverse::Tape,
}

impl ReverseEngine {
    pub fn new(buffers: Buffers) -> Self {
        ReverseEngine {
            buffers,
            tape: reverse::Tape::new(),
        }
    }

    fn with_tape<R>(&mut self, body: impl FnOnce(&reverse::Tape) -> R) -> R {
        match self.buffers {
            Buffers::Warm => {
                self.tape.clear();
                body(&self.tape)
            }
            Buffers::Cold => body(&reverse::Tape::new()),
        }
    }
}

impl Engine for ReverseEngine {
    fn name(&self) -> &'static str {
        "reverse 0.2"
    }
    fn record<W: Workload>(&mut self, w: &W, x: &[f64]) -> (f64, usize) {
        self.with_tape(|tape| {
            let xs: Vec<Rev> = x.iter().map(|&v| Rev(tape.add_var(v))).collect();
            let y = w.eval(&xs);
            (y.0.val(), tape.len())
        })
    }
    fn gradient<W: Workload>(&mut self, w: &W, x: &[f64], grad: &mut Vec<f64>) -> (f64, usize) {
        use reverse::Gradient as _;
        self.with_tape(|tape| {
            let xs: Vec<Rev> = x.iter().map(|&v| Rev(tape.add_var(v))).collect();
            let y = w.eval(&xs);
            let adjoints = y.0.grad();
            grad.clear();
            grad.extend(xs.iter().map(|v| adjoints.wrt(&v.0)));
            (y.0.val(), tape.len())
        })
    }
}

// ---------------------------------------------------------------------------------------
// `tapegrad::Scalar` for the newtypes
// ---------------------------------------------------------------------------------------

/// The arithmetic operators of a newtype, forwarded to the wrapped type. Every forward is
/// `#[inline(always)]`, for the three newtypes alike, so that the newtype adds no call of
/// its own: each engine is measured through exactly what its own operators cost.
macro_rules! forward_operators {
    ($name:ident $(<$lt:lifetime>)?) => {
        impl$(<$lt>)? Add for $name$(<$lt>)? {
            type Output = Self;
            #[inline(always)]
            fn add(self, rhs: Self) -> Self { $name(self.0 + rhs.0) }
        }
        impl$(<$lt>)? Sub for $name$(<$lt>)? {
            type Output = Self;
            #[inline(always)]
            fn sub(self, rhs: Self) -> Self { $name(self.0 - rhs.0) }
        }
        impl$(<$lt>)? Mul for $name$(<$lt>)? {
            type Output = Self;
            #[inline(always)]
            fn mul(self, rhs: Self) -> Self { $name(self.0 * rhs.0) }
        }
        impl$(<$lt>)? Div for $name$(<$lt>)? {
            type Output = Self;
            #[inline(always)]
            fn div(self, rhs: Self) -> Self { $name(self.0 / rhs.0) }
        }
        impl$(<$lt>)? Neg for $name$(<$lt>)? {
            type Output = Self;
            #[inline(always)]
            fn neg(self) -> Self { $name(-self.0) }
        }
        impl$(<$lt>)? Add<f64> for $name$(<$lt>)? {
            type Output = Self;
            #[inline(always)]
            fn add(self, rhs: f64) -> Self { $name(self.0 + rhs) }
        }
        impl$(<$lt>)? Sub<f64> for $name$(<$lt>)? {
            type Output = Self;
            #[inline(always)]
            fn sub(self, rhs: f64) -> Self { $name(self.0 - rhs) }
        }
        impl$(<$lt>)? Mul<f64> for $name$(<$lt>)? {
            type Output = Self;
            #[inline(always)]
            fn mul(self, rhs: f64) -> Self { $name(self.0 * rhs) }
        }
        impl$(<$lt>)? Div<f64> for $name$(<$lt>)? {
            type Output = Self;
            #[inline(always)]
            fn div(self, rhs: f64) -> Self { $name(self.0 / rhs) }
        }
    };
}

forward_operators!(BinaryOnly<'g>);
forward_operators!(Echidna);
forward_operators!(Rev<'t>);

/// The n-ary functions and the compound unary ones, composed from binary and unary ops
/// (for engines without fused nodes).
pub(crate) mod composed {
    use super::{GELU_CUBIC, SQRT_2_OVER_PI};
    use tapegrad::Scalar;

    pub fn sum<T: Scalar>(terms: &[T]) -> T {
        let (first, rest) = terms.split_first().expect("a sum of no terms");
        rest.iter().fold(*first, |acc, &t| acc + t)
    }

    pub fn dot<T: Scalar>(a: &[T], b: &[T]) -> T {
        assert_eq!(a.len(), b.len(), "dot of slices of different lengths");
        let products: Vec<T> = a.iter().zip(b).map(|(&x, &y)| x * y).collect();
        sum(&products)
    }

    /// `m + ln(sum_i e^(x_i - m))` with `m` the largest value, as a constant.
    pub fn logsumexp<T: Scalar>(terms: &[T]) -> T {
        let max = terms
            .iter()
            .map(Scalar::value)
            .fold(f64::NEG_INFINITY, f64::max);
        let shifted: Vec<T> = terms.iter().map(|&t| (t - max).exp()).collect();
        sum(&shifted).ln() + max
    }

    pub fn sigmoid<T: Scalar>(x: T) -> T {
        ((-x).exp() + 1.0).recip()
    }

    pub fn gelu<T: Scalar>(x: T) -> T {
        let u = (x * x * x * GELU_CUBIC + x) * SQRT_2_OVER_PI;
        (u.tanh() + 1.0) * x * 0.5
    }

    pub fn relu<T: Scalar>(x: T) -> T {
        if x.value() > 0.0 { x } else { x * 0.0 }
    }

    /// The elementary functions the workloads never call, which these engines do not all
    /// have: the tangent line at the point (value and first derivative right, second
    /// derivative 0). Enough for `Scalar`'s contract at first order; not used in timings.
    pub fn tangent1<T: Scalar>(x: T, value: f64, slope: f64) -> T {
        let at = x.value();
        (x - at) * slope + value
    }

    /// [`tangent1`] for a function of two operands, with both partials.
    pub fn tangent2<T: Scalar>(a: T, b: T, value: f64, slopes: (f64, f64)) -> T {
        let (at_a, at_b) = (a.value(), b.value());
        (a - at_a) * slopes.0 + (b - at_b) * slopes.1 + value
    }
}

/// `Scalar` for a peer newtype: the ops its engine has go to its own operations, the
/// compound and n-ary ones are composed from binary ops (`composed`), and the elementary
/// functions the workloads never call, which these engines do not all have, are tangent
/// lines (see `composed::tangent1`). `$powf` is the engine's own `a^b`. Every method is
/// `#[inline(always)]` so that a constant op folds its `match` away, as in tapegrad's own
/// forms.
macro_rules! peer_scalar_methods {
    ($name:ident, |$a:ident, $b:ident| $powf:expr) => {
        #[inline(always)]
        fn unary(self, op: tapegrad::Unary) -> Self {
            use tapegrad::Unary;
            match op {
                Unary::Neg => -self,
                Unary::Exp => $name(self.0.exp()),
                Unary::Ln => $name(self.0.ln()),
                Unary::Sqrt => $name(self.0.sqrt()),
                Unary::Recip => $name(self.0.recip()),
                Unary::Sin => $name(self.0.sin()),
                Unary::Cos => $name(self.0.cos()),
                Unary::Tanh => $name(self.0.tanh()),
                Unary::Sinh => $name(self.0.sinh()),
                Unary::Cosh => $name(self.0.cosh()),
                Unary::Abs => $name(self.0.abs()),
                Unary::Relu => composed::relu(self),
                Unary::Sigmoid => composed::sigmoid(self),
                Unary::Gelu => composed::gelu(self),
                _ => {
                    let x = self.value();
                    let y = op.value(x);
                    composed::tangent1(self, y, op.partial(x, y))
                }
            }
        }
        #[inline(always)]
        fn binary(self, op: tapegrad::Binary, other: Self) -> Self {
            use tapegrad::Binary;
            match op {
                Binary::Add => self + other,
                Binary::Sub => self - other,
                Binary::Mul => self * other,
                Binary::Div => self / other,
                Binary::Powf => {
                    let ($a, $b) = (self.0, other.0);
                    $name($powf)
                }
                Binary::Powi => $name(self.0.powi(other.value() as i32)),
                _ => {
                    let (a, b) = (self.value(), other.value());
                    let y = op.value(a, b);
                    let slopes = (op.partial(a, b, y, 0), op.partial(a, b, y, 1));
                    composed::tangent2(self, other, y, slopes)
                }
            }
        }
        #[inline(always)]
        fn binary_f64(self, op: tapegrad::Binary, c: f64) -> Self {
            use tapegrad::Binary;
            match op {
                Binary::Add => self + c,
                Binary::Sub => self - c,
                Binary::Mul => self * c,
                Binary::Div => self / c,
                Binary::Powi => $name(self.0.powi(c as i32)),
                _ => self.binary(op, self.lift(c)),
            }
        }
        fn clamp(self, lo: f64, hi: f64) -> Self {
            let x = self.value();
            let slope = tapegrad::Nary::Clamp.partial(&[x, lo, hi], 0.0, 0);
            composed::tangent1(self, <f64 as Scalar>::clamp(x, lo, hi), slope)
        }
        fn amax(terms: &[Self]) -> Self {
            let (first, rest) = terms.split_first().expect("an amax of no terms");
            rest.iter().fold(*first, |m, &t| m.max(t))
        }
        fn sum<I>(terms: I) -> Self
        where
            I: IntoIterator,
            I::Item: std::borrow::Borrow<Self>,
        {
            let terms: Vec<Self> = terms
                .into_iter()
                .map(|t| *std::borrow::Borrow::borrow(&t))
                .collect();
            composed::sum(&terms)
        }
        fn dot(a: &[Self], b: &[Self]) -> Self {
            composed::dot(a, b)
        }
        fn logsumexp(terms: &[Self]) -> Self {
            composed::logsumexp(terms)
        }
    };
}

impl<'g> From<BinaryOnly<'g>> for tapegrad::Operand<BinaryOnly<'g>> {
    fn from(x: BinaryOnly<'g>) -> Self {
        tapegrad::Operand::Scalar(x)
    }
}

impl From<Echidna> for tapegrad::Operand<Echidna> {
    fn from(x: Echidna) -> Self {
        tapegrad::Operand::Scalar(x)
    }
}

impl<'t> From<Rev<'t>> for tapegrad::Operand<Rev<'t>> {
    fn from(x: Rev<'t>) -> Self {
        tapegrad::Operand::Scalar(x)
    }
}

impl Scalar for BinaryOnly<'_> {
    fn value(&self) -> f64 {
        self.0.value()
    }
    fn lift(&self, c: f64) -> Self {
        BinaryOnly(self.0.graph().constant(c))
    }
    peer_scalar_methods!(BinaryOnly, |a, b| a.powf(b));
}

impl Scalar for Echidna {
    fn value(&self) -> f64 {
        echidna::Scalar::value(&self.0)
    }
    fn lift(&self, c: f64) -> Self {
        Echidna(echidna::Reverse::constant(c))
    }
    peer_scalar_methods!(Echidna, |a, b| a.powf(b));
}

impl Scalar for Rev<'_> {
    fn value(&self) -> f64 {
        self.0.val()
    }
    fn lift(&self, c: f64) -> Self {
        // reverse has no untracked constant type: a constant is a node without operands.
        Rev(self.0.tape.add_var(c))
    }
    peer_scalar_methods!(Rev, |a, b| {
        use reverse::Powf as _;
        a.powf(b)
    });
}

// For the record-once table's echidna variable (`replay_table.rs`).
pub(crate) use {forward_operators, peer_scalar_methods};
