//! A bounded, deterministic fuzz harness: byte strings (drawn by proptest from a fixed seed,
//! and shrunk on failure) drive a small interpreter that records on two graphs at once,
//! mixing their handles, releasing to old and foreign marks, feeding NaN, infinities,
//! subnormals and huge values, toggling anomaly mode, changing input values, and running
//! both backwards. A model kept beside the engine (which nodes are alive, each node's op,
//! operands and value by an independent `f64` evaluation) predicts every outcome:
//!
//! - a `try_` form returns exactly the error the model expects (`ForeignHandle` naming
//!   both graphs, `Released`, `BadOperands`), or the value the reference computes;
//! - an operator or plain method fails only by panicking with that error's message, and
//!   records nothing when it does; no other panic is allowed anywhere;
//! - every gradient is finite where the model says so, matches central differences of the
//!   model's own evaluation when the graph is tame (finite, bounded, away from kinks and
//!   domain edges), and the differentiable backward gives the plain one's numbers bit for
//!   bit everywhere, singular points included;
//! - in anomaly mode, a backward fails exactly when root's value or a gradient (of the same
//!   graph rebuilt without anomaly mode) is not finite, and reports the first non-finite
//!   node that root depends on, or else a non-finite gradient;
//! - a `Gradients` read later (after releases, for released or foreign handles) gives the
//!   gradient it held, 0, or the right error.
//!
//! cargo-fuzz needs a nightly toolchain; this harness runs in CI instead, within seconds:
//! 20,000 byte strings of up to 1,000 bytes (set `PROPTEST_CASES` / `PROPTEST_RNG_SEED` to
//! run longer or elsewhere).

#[allow(
    dead_code,
    reason = "the program strategies are the proptest files' own"
)]
mod reference;

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use tapegrad::{Binary, Error, Gradients, Graph, Mark, Nary, Unary, Var};

// ---------------------------------------------------------------------------------------
// The model.

#[derive(Clone, Copy, Debug)]
enum Operand {
    Pos(usize),
    Const(f64),
}

#[derive(Clone, Debug)]
enum Kind {
    Input,
    Constant,
    Unary(Unary),
    Binary(Binary),
    Nary(Nary),
    /// `g.custom(&WAVE, &[a, b])`, the user-defined `a sin b`.
    Custom,
}

/// A user-defined function with its partials over `Scalar`: `a sin(b)`.
use reference::WAVE;

/// A node as the model sees it.
#[derive(Clone, Debug)]
struct Node {
    /// Unique over the whole run: a handle is alive while its position holds its serial.
    serial: u64,
    kind: Kind,
    operands: Vec<Operand>,
    value: f64,
    /// The value it was recorded with (`set_value` may change an input's since).
    recorded: f64,
    /// Recorded while anomaly mode is on, in its current period, with a non-finite value.
    anomalous: bool,
}

impl Node {
    fn name(&self) -> &'static str {
        match &self.kind {
            Kind::Input => "input",
            Kind::Constant => "constant",
            Kind::Unary(op) => op.name(),
            Kind::Binary(op) => op.name(),
            Kind::Nary(op) => op.name(),
            Kind::Custom => "wave",
        }
    }
}

/// One graph and the model of its tape.
struct Side<'g> {
    graph: &'g Graph,
    nodes: Vec<Node>,
    anomaly: bool,
}

/// A handle the interpreter holds.
#[derive(Clone, Copy, Debug)]
struct Entry<'g> {
    var: Var<'g>,
    side: usize,
    pos: usize,
    serial: u64,
}

/// A backward result kept for later reads: its side, root and the gradient by serial.
struct Kept {
    side: usize,
    grads: Gradients,
    by_serial: HashMap<u64, f64>,
}

/// Evaluates `op` on operand values with the reference.
fn evaluate(kind: &Kind, xs: &[f64]) -> f64 {
    match kind {
        Kind::Input | Kind::Constant => unreachable!("leaves have no operands"),
        Kind::Unary(op) => reference::unary(*op, xs[0]),
        Kind::Binary(op) => reference::binary(*op, xs[0], xs[1]),
        Kind::Nary(op) => reference::nary(*op, xs),
        Kind::Custom => xs[0] * xs[1].sin(),
    }
}

/// Whether an op at these operand values is smooth enough, far enough from a kink or a
/// domain edge, for central differences to be its derivative.
fn tame(kind: &Kind, xs: &[f64]) -> bool {
    let away = |x: f64| x.abs() >= 0.01;
    match kind {
        Kind::Unary(Unary::Ln | Unary::Sqrt) => xs[0] >= 0.01,
        Kind::Unary(Unary::Recip | Unary::Abs | Unary::Relu | Unary::Cbrt) => away(xs[0]),
        Kind::Unary(Unary::Asin | Unary::Acos | Unary::Atanh) => xs[0].abs() <= 0.99,
        Kind::Unary(Unary::Acosh) => xs[0] >= 1.01,
        Kind::Unary(Unary::Ln1p) => xs[0] >= -0.99,
        Kind::Unary(Unary::Log2 | Unary::Log10) => xs[0] >= 0.01,
        Kind::Unary(Unary::Tan) => away(xs[0].cos()),
        // atan2 jumps by 2 pi across its branch cut, a = 0 with b < 0.
        Kind::Binary(Binary::Atan2) => away(xs[0].hypot(xs[1])) && (xs[1] > 0.0 || away(xs[0])),
        Kind::Binary(Binary::Hypot) => away(xs[0].hypot(xs[1])),
        Kind::Binary(Binary::Max | Binary::Min) => away(xs[0] - xs[1]),
        // ln y needs y > 0; at x = 0 the x-derivative is a convention.
        Kind::Binary(Binary::Xlogy) => xs[1] >= 0.01 && away(xs[0]),
        Kind::Nary(Nary::Clamp) => away(xs[0] - xs[1]) && away(xs[0] - xs[2]),
        Kind::Nary(Nary::Max) => {
            // One operand at the maximum, the others clearly below it.
            let m = reference::nary(Nary::Max, xs);
            xs.iter().filter(|&&x| x == m).count() == 1
                && xs.iter().all(|&x| x == m || m - x >= 0.01)
        }
        Kind::Binary(Binary::Div) => away(xs[1]),
        Kind::Binary(Binary::Powf) => xs[0] >= 0.01,
        Kind::Binary(Binary::Powi) => xs[1] >= 0.0 || away(xs[0]),
        _ => true,
    }
}

// ---------------------------------------------------------------------------------------
// The interpreter.

/// Reads the fuzz bytes; every read past the end is 0 (and ends the run at the next op).
struct Bytes<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn done(&self) -> bool {
        self.at >= self.data.len()
    }

    /// A value: half the time tame (in [-3.2, 3.2]), else one of the values that break
    /// naive code.
    fn value(&mut self) -> f64 {
        const SPECIAL: [f64; 26] = [
            1e-310,
            1e-160,
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            2.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-300,
            5e-324,
            f64::MIN_POSITIVE,
            1e300,
            1e308,
            -1e308,
            f64::MAX,
            709.0,
            710.0,
            1000.0,
            -1000.0,
            30.0,
            -745.0,
            0.01,
            3.0,
        ];
        let b = self.byte();
        if b < 128 {
            (f64::from(self.byte()) - 127.5) / 40.0
        } else {
            SPECIAL[usize::from(b) % SPECIAL.len()]
        }
    }
}

/// What one run saw, for the final tallies.
#[derive(Default)]
struct Tally {
    actions: Cell<usize>,
    errors: Cell<usize>,
    panics: Cell<usize>,
    backwards: Cell<usize>,
    anomalies: Cell<usize>,
    compared: Cell<usize>,
    unreliable: Cell<usize>,
}

fn bump(c: &Cell<usize>) {
    c.set(c.get() + 1);
}

/// With `FUZZ_TRACE` set, prints what the interpreter does (to read a failing case).
fn trace(line: impl FnOnce() -> String) {
    if std::env::var_os("FUZZ_TRACE").is_some() {
        eprintln!("{}", line());
    }
}

thread_local! {
    /// Set while a panic is expected, so that the hook stays quiet about it.
    static EXPECTING_PANIC: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, which should panic with `expected`'s message; fails otherwise.
fn expect_panic<T>(expected: &Error, f: impl FnOnce() -> T) -> Result<(), TestCaseError> {
    EXPECTING_PANIC.with(|e| e.set(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    EXPECTING_PANIC.with(|e| e.set(false));
    let payload = match result {
        Ok(_) => {
            return Err(TestCaseError::fail(format!(
                "no panic; expected: {expected}"
            )));
        }
        Err(payload) => payload,
    };
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    prop_assert_eq!(message, expected.to_string());
    Ok(())
}

/// Runs `f`, which must not panic (a `try_` form or an operator on valid handles).
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| TestCaseError::fail(format!("{what} panicked")))
}

struct Machine<'g, 'b> {
    sides: [Side<'g>; 2],
    entries: Vec<Entry<'g>>,
    marks: Vec<(usize, Mark, usize)>,
    kept: Vec<Kept>,
    serial: u64,
    bytes: Bytes<'b>,
    tally: &'b Tally,
}

impl<'g, 'b> Machine<'g, 'b> {
    fn new(g: &'g Graph, h: &'g Graph, data: &'b [u8], tally: &'b Tally) -> Self {
        let side = |graph| Side {
            graph,
            nodes: Vec::new(),
            anomaly: false,
        };
        Machine {
            sides: [side(g), side(h)],
            entries: Vec::new(),
            marks: Vec::new(),
            kept: Vec::new(),
            serial: 0,
            bytes: Bytes { data, at: 0 },
            tally,
        }
    }

    fn alive(&self, e: &Entry<'g>) -> bool {
        self.sides[e.side]
            .nodes
            .get(e.pos)
            .is_some_and(|n| n.serial == e.serial)
    }

    /// An entry chosen by the next byte (`None` if there are none yet).
    fn pick(&mut self) -> Option<Entry<'g>> {
        let b = usize::from(self.bytes.byte());
        (!self.entries.is_empty())
            .then(|| self.entries[self.entries.len() - 1 - b % self.entries.len()])
    }

    /// The error resolving `e` on side `on` gives, or its position.
    fn resolve(&self, e: &Entry<'g>, on: usize) -> Result<usize, Error> {
        if e.side != on {
            return Err(Error::ForeignHandle {
                what: "Var",
                owner: self.sides[e.side].graph.id(),
                used_with: self.sides[on].graph.id(),
            });
        }
        if !self.alive(e) {
            return Err(Error::Released);
        }
        Ok(e.pos)
    }

    /// Records the model node for a successful op and checks the engine's value and length.
    fn recorded(
        &mut self,
        side: usize,
        var: Var<'g>,
        kind: Kind,
        operands: Vec<Operand>,
    ) -> Result<(), TestCaseError> {
        let s = &self.sides[side];
        let values: Vec<f64> = operands
            .iter()
            .map(|o| match *o {
                Operand::Pos(p) => s.nodes[p].value,
                Operand::Const(c) => c,
            })
            .collect();
        let expected = match kind {
            Kind::Input | Kind::Constant => values[0],
            _ => evaluate(&kind, &values),
        };
        let operands = match kind {
            Kind::Input | Kind::Constant => vec![],
            _ => operands,
        };
        let got = no_panic("value", || var.try_value())?;
        prop_assert!(
            matches!(got, Ok(v) if reference::same_value(v, expected)),
            "{kind:?} of {values:?}: tape {got:?}, reference {expected}"
        );
        let pos = var.try_position().expect("just recorded");
        trace(|| format!("g{side}[{pos}] = {kind:?} {values:?} = {expected}"));
        prop_assert_eq!(pos, s.nodes.len(), "position of a new node");
        prop_assert_eq!(s.graph.len(), pos + 1);
        self.serial += 1;
        let anomalous = s.anomaly && !expected.is_finite();
        self.sides[side].nodes.push(Node {
            serial: self.serial,
            kind,
            operands,
            value: expected,
            recorded: expected,
            anomalous,
        });
        self.entries.push(Entry {
            var,
            side,
            pos,
            serial: self.serial,
        });
        Ok(())
    }

    /// Checks an outcome against the model's expectation: the error, or a new node.
    fn outcome(
        &mut self,
        side: usize,
        result: Result<Var<'g>, Error>,
        expected: Result<(Kind, Vec<Operand>), Error>,
    ) -> Result<(), TestCaseError> {
        let len = self.sides[side].nodes.len();
        match (result, expected) {
            (Ok(var), Ok((kind, operands))) => self.recorded(side, var, kind, operands),
            (Err(got), Err(want)) => {
                bump(&self.tally.errors);
                prop_assert_eq!(got, want);
                prop_assert_eq!(self.sides[side].graph.len(), len, "recorded on error");
                Ok(())
            }
            (got, want) => Err(TestCaseError::fail(format!(
                "engine: {:?}, model: {:?}",
                got.map(|v| v.try_value()),
                want.map(|(k, _)| k)
            ))),
        }
    }

    /// Like [`Machine::outcome`] for an operator, which panics instead of erring.
    fn operator(
        &mut self,
        side: usize,
        f: impl FnOnce() -> Var<'g>,
        expected: Result<(Kind, Vec<Operand>), Error>,
    ) -> Result<(), TestCaseError> {
        match expected {
            Ok(expected) => {
                let var = no_panic("an operator on valid handles", f)?;
                self.outcome(side, Ok(var), Ok(expected))
            }
            Err(e) => {
                bump(&self.tally.panics);
                let len = self.sides[side].graph.len();
                expect_panic(&e, f)?;
                prop_assert_eq!(self.sides[side].graph.len(), len, "recorded on panic");
                Ok(())
            }
        }
    }

    fn step(&mut self) -> Result<(), TestCaseError> {
        bump(&self.tally.actions);
        trace(|| format!("-- byte {}", self.bytes.at));
        let side = usize::from(self.bytes.byte() & 1);
        match self.bytes.byte() % 16 {
            0 | 1 => self.new_leaf(side),
            2..=4 => self.unary(),
            5..=7 => self.binary(),
            8 => self.nary(side),
            9 => self.powi(),
            10 => {
                let len = self.sides[side].nodes.len();
                self.marks.push((side, self.sides[side].graph.mark(), len));
                Ok(())
            }
            11 => self.release(side),
            12 | 13 => self.backward(),
            14 => self.toggle_anomaly(side),
            _ => self.set_value(side),
        }
    }

    fn new_leaf(&mut self, side: usize) -> Result<(), TestCaseError> {
        let v = self.bytes.value();
        let g = self.sides[side].graph;
        let (var, kind) = if self.bytes.byte() % 4 == 0 {
            (g.constant(v), Kind::Constant)
        } else {
            (g.var(v), Kind::Input)
        };
        self.recorded(side, var, kind, vec![Operand::Const(v)])
    }

    fn unary(&mut self) -> Result<(), TestCaseError> {
        let Some(x) = self.pick() else { return Ok(()) };
        let op = Unary::ALL[usize::from(self.bytes.byte()) % Unary::ALL.len()];
        let expected = self
            .resolve(&x, x.side)
            .map(|p| (Kind::Unary(op), vec![Operand::Pos(p)]));
        if self.bytes.byte() % 2 == 0 {
            let result = no_panic("try_apply", || x.var.try_apply(op))?;
            self.outcome(x.side, result, expected)
        } else {
            let f = move || match op {
                Unary::Neg => -x.var,
                Unary::Recip => x.var.recip(),
                Unary::Exp => x.var.exp(),
                Unary::Ln => x.var.ln(),
                Unary::Sqrt => x.var.sqrt(),
                Unary::Sin => x.var.sin(),
                Unary::Cos => x.var.cos(),
                Unary::Tanh => x.var.tanh(),
                Unary::Sinh => x.var.sinh(),
                Unary::Cosh => x.var.cosh(),
                Unary::Abs => x.var.abs(),
                Unary::Relu => x.var.relu(),
                Unary::Sigmoid => x.var.sigmoid(),
                Unary::Gelu => x.var.gelu(),
                Unary::Atan => x.var.atan(),
                Unary::Asin => x.var.asin(),
                Unary::Acos => x.var.acos(),
                Unary::Tan => x.var.tan(),
                Unary::Ln1p => x.var.ln_1p(),
                Unary::ExpM1 => x.var.exp_m1(),
                Unary::Log2 => x.var.log2(),
                Unary::Log10 => x.var.log10(),
                Unary::Exp2 => x.var.exp2(),
                Unary::Cbrt => x.var.cbrt(),
                Unary::Softplus => x.var.softplus(),
                Unary::Erf => x.var.erf(),
                Unary::Erfc => x.var.erfc(),
                Unary::Asinh => x.var.asinh(),
                Unary::Acosh => x.var.acosh(),
                Unary::Atanh => x.var.atanh(),
            };
            self.operator(x.side, f, expected)
        }
    }

    fn binary(&mut self) -> Result<(), TestCaseError> {
        let Some(a) = self.pick() else { return Ok(()) };
        let ops = [
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
        ];
        let op = ops[usize::from(self.bytes.byte()) % ops.len()];
        let form = self.bytes.byte() % 5;
        // Forms: 0 try_binary(Var), 1 operator Var-Var, 2 compound Var-Var, 3 Var op f64,
        // 4 f64 op Var.
        if form >= 3 {
            let c = self.bytes.value();
            let expected = self.resolve(&a, a.side).map(|p| {
                let (x, y) = if form == 3 {
                    (Operand::Pos(p), Operand::Const(c))
                } else {
                    (Operand::Const(c), Operand::Pos(p))
                };
                (Kind::Binary(op), vec![x, y])
            });
            let v = a.var;
            let f = move || match (op, form == 3) {
                (Binary::Add, true) => v + c,
                (Binary::Sub, true) => v - c,
                (Binary::Mul, true) => v * c,
                (Binary::Div, true) => v / c,
                (Binary::Powf, true) => v.powf(c),
                (Binary::Atan2, true) => v.atan2(c),
                (Binary::Hypot, true) => v.hypot(c),
                (Binary::Max, true) => v.max(c),
                (Binary::Min, true) => v.min(c),
                (Binary::Xlogy, true) => v.xlogy(c),
                (Binary::Atan2, false) => tapegrad::atan2(c, v),
                (Binary::Hypot, false) => tapegrad::hypot(c, v),
                (Binary::Max, false) => tapegrad::max(c, v),
                (Binary::Min, false) => tapegrad::min(c, v),
                (Binary::Xlogy, false) => tapegrad::xlogy(c, v),
                (Binary::Add, false) => c + v,
                (Binary::Sub, false) => c - v,
                (Binary::Mul, false) => c * v,
                (Binary::Div, false) => c / v,
                (_, false) => tapegrad::powf(c, v),
                (op, _) => unreachable!("{op:?} is not drawn"),
            };
            return self.operator(a.side, f, expected);
        }
        let Some(b) = self.pick() else { return Ok(()) };
        // The lhs's graph records; its operands are resolved in order.
        let expected = self.resolve(&a, a.side).and_then(|pa| {
            let pb = self.resolve(&b, a.side)?;
            Ok((Kind::Binary(op), vec![Operand::Pos(pa), Operand::Pos(pb)]))
        });
        let (x, y) = (a.var, b.var);
        match form {
            0 => {
                let result = no_panic("try_binary", || x.try_binary(op, y))?;
                self.outcome(a.side, result, expected)
            }
            1 => {
                let f = move || match op {
                    Binary::Add => x + y,
                    Binary::Sub => x - y,
                    Binary::Mul => x * y,
                    Binary::Div => x / y,
                    Binary::Atan2 => x.atan2(y),
                    Binary::Hypot => x.hypot(y),
                    Binary::Max => x.max(y),
                    Binary::Min => x.min(y),
                    Binary::Xlogy => x.xlogy(y),
                    _ => x.powf(y),
                };
                self.operator(a.side, f, expected)
            }
            _ => {
                let f = move || {
                    let mut z = x;
                    match op {
                        Binary::Add => z += y,
                        Binary::Sub => z -= y,
                        Binary::Mul => z *= y,
                        Binary::Div => z /= y,
                        Binary::Atan2 => z = z.atan2(y),
                        Binary::Hypot => z = z.hypot(y),
                        Binary::Max => z = z.max(y),
                        Binary::Min => z = z.min(y),
                        Binary::Xlogy => z = z.xlogy(y),
                        _ => z = z.powf(y),
                    }
                    z
                };
                self.operator(a.side, f, expected)
            }
        }
    }

    /// `powi` with an integer exponent, or `try_binary(Powi, ..)` with a non-integer or
    /// `Var` exponent, which must be refused (its rule holds the exponent fixed).
    fn powi(&mut self) -> Result<(), TestCaseError> {
        let Some(x) = self.pick() else { return Ok(()) };
        let n = i32::from(self.bytes.byte() as i8 % 8);
        match self.bytes.byte() % 3 {
            0 => {
                let expected = self.resolve(&x, x.side).map(|p| {
                    (
                        Kind::Binary(Binary::Powi),
                        vec![Operand::Pos(p), Operand::Const(f64::from(n))],
                    )
                });
                self.operator(x.side, move || x.var.powi(n), expected)
            }
            1 => {
                let e = f64::from(n) + 0.5;
                let result = no_panic("try_binary(Powi)", || x.var.try_binary(Binary::Powi, e))?;
                // The exponent is checked before the handles are resolved.
                let expected = Err(Error::BadOperands {
                    op: "powi",
                    why: format!(
                        "the exponent must be an integer f64 constant, got {e}; \
                             use powf for a real or variable exponent"
                    ),
                });
                self.outcome(x.side, result, expected)
            }
            _ => {
                let Some(y) = self.pick() else { return Ok(()) };
                let result =
                    no_panic("try_binary(Powi)", || x.var.try_binary(Binary::Powi, y.var))?;
                // The exponent is checked before the handles are resolved.
                let expected = Err(Error::BadOperands {
                    op: "powi",
                    why: "the exponent must be an integer f64 constant, got a Var; \
                              use powf for a real or variable exponent"
                        .to_string(),
                });
                self.outcome(x.side, result, expected)
            }
        }
    }

    /// `sum`, `dot` (vars with vars, vars with f64s, f64s with vars, mismatched lengths)
    /// and `logsumexp` (possibly empty), on `side`'s graph, over entries of either graph.
    fn nary(&mut self, side: usize) -> Result<(), TestCaseError> {
        let count = usize::from(self.bytes.byte() % 8);
        let terms: Vec<Entry<'g>> = (0..count).filter_map(|_| self.pick()).collect();
        let g = self.sides[side].graph;
        let vars: Vec<Var<'g>> = terms.iter().map(|e| e.var).collect();
        let resolved: Result<Vec<Operand>, Error> = terms
            .iter()
            .map(|e| self.resolve(e, side).map(Operand::Pos))
            .collect();
        let panicking = self.bytes.byte() % 2 == 0;
        match self.bytes.byte() % 6 {
            5 => {
                let (Some(a), Some(b)) = (vars.first(), vars.get(1)) else {
                    return Ok(());
                };
                // Only the first two terms are its operands, resolved in order.
                let expected = terms[..2]
                    .iter()
                    .map(|e| self.resolve(e, side).map(Operand::Pos))
                    .collect::<Result<Vec<Operand>, Error>>()
                    .map(|ops| (Kind::Custom, ops));
                let operands = [*a, *b];
                if panicking {
                    self.operator(side, || g.custom(&WAVE, &operands), expected)
                } else {
                    let result = no_panic("try_custom", || g.try_custom(&WAVE, &operands))?;
                    self.outcome(side, result, expected)
                }
            }
            3 => {
                let expected = if vars.is_empty() {
                    Err(Error::BadOperands {
                        op: "amax",
                        why: "needs at least one term (the maximum of nothing is undefined)".into(),
                    })
                } else {
                    resolved.map(|ops| (Kind::Nary(Nary::Max), ops))
                };
                if panicking {
                    self.operator(side, || g.amax(vars.iter().copied()), expected)
                } else {
                    let result = no_panic("try_amax", || g.try_amax(vars.iter().copied()))?;
                    self.outcome(side, result, expected)
                }
            }
            4 => {
                let Some(x) = terms.first() else {
                    return Ok(());
                };
                let (lo, width) = (self.bytes.value(), self.bytes.value().abs());
                let hi = lo + width;
                let expected = self.resolve(x, x.side).map(|p| {
                    let operands = vec![Operand::Pos(p), Operand::Const(lo), Operand::Const(hi)];
                    (Kind::Nary(Nary::Clamp), operands)
                });
                let v = x.var;
                if lo <= hi {
                    let result = no_panic("try_clamp", || v.try_clamp(lo, hi))?;
                    // The clamp records on x's graph, which may be the other side's.
                    self.outcome(x.side, result, expected)
                } else {
                    prop_assert!(v.try_clamp(lo, hi).is_err(), "clamp({lo}, {hi}) accepted");
                    Ok(())
                }
            }
            0 => {
                let expected = resolved.map(|ops| (Kind::Nary(Nary::Sum), ops));
                if panicking {
                    self.operator(side, || g.sum(vars.iter().copied()), expected)
                } else {
                    let result = no_panic("try_sum", || g.try_sum(vars.iter().copied()))?;
                    self.outcome(side, result, expected)
                }
            }
            1 => {
                let expected = if vars.is_empty() {
                    Err(Error::BadOperands {
                        op: "logsumexp",
                        why: "needs at least one term (the log of an empty sum is -infinity)"
                            .into(),
                    })
                } else {
                    resolved.map(|ops| (Kind::Nary(Nary::LogSumExp), ops))
                };
                if panicking {
                    self.operator(side, || g.logsumexp(vars.iter().copied()), expected)
                } else {
                    let result =
                        no_panic("try_logsumexp", || g.try_logsumexp(vars.iter().copied()))?;
                    self.outcome(side, result, expected)
                }
            }
            _ => {
                let consts: Vec<f64> = (0..vars.len()).map(|_| self.bytes.value()).collect();
                let shape = self.bytes.byte() % 4;
                let half = vars.len() / 2;
                let mismatch = |a: usize, b: usize| Error::BadOperands {
                    op: "dot",
                    why: format!("the two sides have lengths {a} and {b}; they must be equal"),
                };
                let (result, expected) = match shape {
                    // vars . vars, split in halves (odd counts mismatch).
                    0 => {
                        let (a, b) = vars.split_at(half);
                        let expected = if a.len() != b.len() {
                            Err(mismatch(a.len(), b.len()))
                        } else {
                            resolved.map(|ops| (Kind::Nary(Nary::Dot), ops))
                        };
                        (no_panic("try_dot", || g.try_dot(a, b))?, expected)
                    }
                    1 => (
                        no_panic("try_dot", || g.try_dot(&vars, &consts))?,
                        resolved.map(|ops| {
                            let cs = consts.iter().map(|&c| Operand::Const(c));
                            (Kind::Nary(Nary::Dot), ops.into_iter().chain(cs).collect())
                        }),
                    ),
                    2 => (
                        no_panic("try_dot", || g.try_dot(&consts, &vars))?,
                        resolved.map(|ops| {
                            let cs: Vec<Operand> =
                                consts.iter().map(|&c| Operand::Const(c)).collect();
                            (Kind::Nary(Nary::Dot), cs.into_iter().chain(ops).collect())
                        }),
                    ),
                    _ => (
                        no_panic("try_dot", || g.try_dot(&vars, &consts[..half]))?,
                        if vars.is_empty() {
                            resolved.map(|ops| (Kind::Nary(Nary::Dot), ops))
                        } else {
                            Err(mismatch(vars.len(), half))
                        },
                    ),
                };
                self.outcome(side, result, expected)
            }
        }
    }

    /// Releases `side`'s graph to a mark chosen from all marks taken (so possibly an old
    /// one, one past the end, or another graph's).
    fn release(&mut self, side: usize) -> Result<(), TestCaseError> {
        if self.marks.is_empty() {
            return Ok(());
        }
        let (mark_side, mark, len) = self.marks[usize::from(self.bytes.byte()) % self.marks.len()];
        let g = self.sides[side].graph;
        let expected = if mark_side != side {
            Err(Error::ForeignHandle {
                what: "Mark",
                owner: self.sides[mark_side].graph.id(),
                used_with: g.id(),
            })
        } else {
            Ok(())
        };
        if self.bytes.byte() % 2 == 0 {
            prop_assert_eq!(
                no_panic("try_release", || g.try_release(mark))?,
                expected.clone()
            );
        } else if let Err(e) = &expected {
            expect_panic(e, || g.release(mark))?;
        } else {
            no_panic("release", || g.release(mark))?;
        }
        trace(|| format!("release g{side} to g{mark_side} mark {len}: {expected:?}"));
        if expected.is_ok() {
            self.sides[side].nodes.truncate(len);
        } else {
            bump(&self.tally.errors);
        }
        prop_assert_eq!(g.len(), self.sides[side].nodes.len());
        Ok(())
    }

    fn toggle_anomaly(&mut self, side: usize) -> Result<(), TestCaseError> {
        let on = self.bytes.byte() % 2 == 0;
        let s = &mut self.sides[side];
        if s.anomaly != on {
            // A new period of anomaly mode (or none): what was recorded before is not in its log.
            for n in &mut s.nodes {
                n.anomalous = false;
            }
        }
        s.anomaly = on;
        s.graph.set_anomaly_mode(on);
        trace(|| format!("anomaly mode g{side}: {on}"));
        prop_assert_eq!(s.graph.anomaly_mode(), on);
        Ok(())
    }

    fn set_value(&mut self, side: usize) -> Result<(), TestCaseError> {
        let Some(x) = self.pick() else { return Ok(()) };
        let v = self.bytes.value();
        let g = self.sides[side].graph;
        let expected = self.resolve(&x, side).and_then(|p| {
            let nodes = &self.sides[side].nodes;
            match nodes[p].kind {
                Kind::Input => {}
                _ => {
                    return Err(Error::BadOperands {
                        op: "set_value",
                        why: format!(
                            "only an input made by Graph::var can change its value; \
                             this node is {}",
                            nodes[p].name()
                        ),
                    });
                }
            }
            let used = nodes[p + 1..].iter().any(|n| {
                n.operands
                    .iter()
                    .any(|o| matches!(o, Operand::Pos(q) if *q == p))
            });
            if used {
                return Err(Error::BadOperands {
                    op: "set_value",
                    why: "a node recorded after this input uses it and would keep the old \
                          value; release those nodes (Graph::mark / Graph::release) before \
                          changing it"
                        .into(),
                });
            }
            Ok(p)
        });
        let result = no_panic("try_set_value", || g.try_set_value(x.var, v))?;
        match (result, expected) {
            (Ok(()), Ok(p)) => {
                self.sides[side].nodes[p].value = v;
                prop_assert!(reference::same_value(x.var.value(), v));
            }
            (Err(got), Err(want)) => {
                bump(&self.tally.errors);
                prop_assert_eq!(got, want);
            }
            (got, want) => {
                return Err(TestCaseError::fail(format!(
                    "set_value: engine {got:?}, model {want:?}"
                )));
            }
        }
        Ok(())
    }

    /// Backward from an entry, plain and differentiable, checked against the model; also
    /// re-reads every `Gradients` kept from earlier backwards.
    fn backward(&mut self) -> Result<(), TestCaseError> {
        self.reread_kept()?;
        let Some(root) = self.pick() else {
            return Ok(());
        };
        let side = root.side;
        let result = no_panic("try_backward", || root.var.try_backward())?;
        trace(|| {
            format!(
                "backward from g{side}[{}]: {:?}",
                root.pos,
                result.as_ref().err()
            )
        });
        if !self.alive(&root) {
            prop_assert_eq!(result.err(), Some(Error::Released));
            bump(&self.tally.errors);
            return Ok(());
        }
        bump(&self.tally.backwards);
        let s = &self.sides[side];
        // In anomaly mode the backward reports only when root's value or a gradient is not
        // finite, and then the first node root depends on that was recorded non-finite in
        // this period of anomaly mode, or else the backward that made a gradient non-finite.
        let cone = cone(s, root.pos);
        let first_anomaly = (0..=root.pos).find(|&p| cone[p] && s.nodes[p].anomalous);
        // (A non-finite root recorded before the period began is not reported by itself.)
        let broken = |adjoints: &[f64]| {
            (!s.nodes[root.pos].value.is_finite() && first_anomaly.is_some())
                || adjoints.iter().any(|d| !d.is_finite())
        };
        let grads = match result {
            Err(Error::Anomaly(a)) => {
                bump(&self.tally.anomalies);
                prop_assert!(s.anomaly, "an anomaly with the mode off: {a}");
                let adjoints = self.replay(side, root.pos)?;
                prop_assert!(
                    broken(&adjoints),
                    "reported {a}, but root and every gradient are finite without anomaly mode"
                );
                match first_anomaly {
                    Some(p) => {
                        let n = &s.nodes[p];
                        prop_assert_eq!(a.op, n.name());
                        prop_assert_eq!(a.gradient, None);
                        prop_assert!(reference::same_value(a.output, n.recorded));
                    }
                    None => prop_assert!(a.gradient.is_some_and(|d| !d.is_finite()), "{a}"),
                }
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("backward: {e}"))),
            Ok(grads) => {
                if s.anomaly {
                    let adjoints = self.replay(side, root.pos)?;
                    prop_assert!(
                        !broken(&adjoints),
                        "root {} or a gradient is not finite, yet anomaly mode let it pass \
                         (first anomaly root uses: {first_anomaly:?})",
                        s.nodes[root.pos].value
                    );
                }
                grads
            }
        };
        let tame = self.check_gradients(&root, &grads)?;
        // The differentiable backward, with anomaly mode off (it records nodes, which are
        // released again so that the model stays exact).
        if !s.anomaly {
            let inputs: Vec<Entry<'g>> = self
                .entries
                .iter()
                .filter(|e| e.side == side && self.alive(e))
                .copied()
                .collect();
            let mark = s.graph.mark();
            let vars: Vec<Var<'g>> = inputs.iter().map(|e| e.var).collect();
            let second = no_panic("try_grad", || root.var.try_grad(&vars))?
                .map_err(|e| TestCaseError::fail(format!("try_grad: {e}")))?;
            for (e, d) in inputs.iter().zip(&second) {
                // The same number bit for bit, tame or not: both sweeps apply one rule at
                // singular points and add the contributions in the same order.
                let (plain, differentiable) = (grads[e.var], d.value());
                prop_assert!(
                    plain.to_bits() == differentiable.to_bits()
                        || (plain.is_nan() && differentiable.is_nan()),
                    "d/d[{}]: plain {plain:e}, Var::grad {differentiable:e} (tame: {tame})",
                    e.pos
                );
            }
            // Second order, for the last few handles: the Hessian by plain sweeps over the
            // recorded gradient and by a second `grad`, to the bit.
            let few = &vars[vars.len().saturating_sub(3)..];
            let firsts = &second[second.len() - few.len()..];
            let hessian = no_panic("try_hessian", || {
                tapegrad::higher::try_hessian(root.var, few)
            })?
            .map_err(|e| TestCaseError::fail(format!("try_hessian: {e}")))?;
            for (i, dy) in firsts.iter().enumerate() {
                let row = no_panic("try_grad", || dy.try_grad(few))?
                    .map_err(|e| TestCaseError::fail(format!("try_grad: {e}")))?;
                for (j, d2y) in row.iter().enumerate() {
                    let (h, d2) = (hessian[i][j], d2y.value());
                    prop_assert!(
                        h.to_bits() == d2.to_bits() || (h.is_nan() && d2.is_nan()),
                        "H[{i}][{j}]: hessian {h:e}, grad of grad {d2:e}"
                    );
                }
            }
            s.graph.release(mark);
        }
        let by_serial = self
            .entries
            .iter()
            .filter(|e| e.side == side && self.alive(e))
            .map(|e| (e.serial, grads[e.var]))
            .collect();
        self.kept.push(Kept {
            side,
            grads,
            by_serial,
        });
        Ok(())
    }

    /// Gradients from `root`: finite where the model's graph is finite and tame, equal to
    /// central differences of the model's evaluation there; foreign handles are errors.
    /// Returns whether the graph was tame.
    fn check_gradients(&self, root: &Entry<'g>, grads: &Gradients) -> Result<bool, TestCaseError> {
        let s = &self.sides[root.side];
        let cone = cone(s, root.pos);
        let value_of = |values: &[f64], o: &Operand| match *o {
            Operand::Pos(q) => values[q],
            Operand::Const(c) => c,
        };
        let current: Vec<f64> = s.nodes.iter().map(|n| n.value).collect();
        let tame_graph = (0..=root.pos).filter(|&p| cone[p]).all(|p| {
            let n = &s.nodes[p];
            let xs: Vec<f64> = n.operands.iter().map(|o| value_of(&current, o)).collect();
            // Constant operands bounded too: they are partials (of dot, of `x * c`).
            let bounded = |v: &f64| v.is_finite() && v.abs() <= 1e4;
            bounded(&n.value)
                && xs.iter().all(bounded)
                && (n.operands.is_empty() || tame(&n.kind, &xs))
        });
        for e in &self.entries {
            let read = grads.try_wrt(e.var);
            if e.side != root.side {
                prop_assert_eq!(
                    read,
                    Err(Error::ForeignHandle {
                        what: "Var",
                        owner: self.sides[e.side].graph.id(),
                        used_with: s.graph.id()
                    })
                );
                continue;
            }
            if !self.alive(e) {
                prop_assert_eq!(read, Err(Error::Released));
                continue;
            }
            let d =
                read.map_err(|err| TestCaseError::fail(format!("reading a gradient: {err}")))?;
            if e.pos > root.pos || !cone[e.pos] {
                prop_assert_eq!(d, 0.0, "a node root does not depend on");
                continue;
            }
            if !tame_graph || !matches!(s.nodes[e.pos].kind, Kind::Input) {
                continue;
            }
            prop_assert!(d.is_finite(), "gradient {d} in a tame graph");
            // Central differences of the model's own evaluation of root in this input.
            let inputs: Vec<f64> = vec![s.nodes[e.pos].value];
            let f = |at: &[f64]| {
                let mut values = current.clone();
                values[e.pos] = at[0];
                for p in e.pos + 1..=root.pos {
                    let n = &s.nodes[p];
                    if cone[p] && !n.operands.is_empty() {
                        let xs: Vec<f64> =
                            n.operands.iter().map(|o| value_of(&values, o)).collect();
                        values[p] = evaluate(&n.kind, &xs);
                    }
                }
                values[root.pos]
            };
            let fd = reference::derivative(f, &inputs, 0);
            if fd.reliable() {
                bump(&self.tally.compared);
                prop_assert!(
                    fd.agrees_with(d),
                    "d[{}]/d[{}]: tape {d}, central difference {} (error {})",
                    root.pos,
                    e.pos,
                    fd.value,
                    fd.error
                );
            } else {
                bump(&self.tally.unreliable);
            }
        }
        Ok(tame_graph)
    }

    /// Rebuilds side's nodes up to `root` on a fresh graph without anomaly mode and returns
    /// the gradient of every node.
    fn replay(&self, side: usize, root: usize) -> Result<Vec<f64>, TestCaseError> {
        let g = Graph::new();
        let mut vars: Vec<Var<'_>> = Vec::with_capacity(root + 1);
        for n in &self.sides[side].nodes[..=root] {
            let operand = |o: &Operand| match *o {
                Operand::Pos(q) => tapegrad::Operand::Scalar(vars[q]),
                Operand::Const(c) => tapegrad::Operand::Const(c),
            };
            let ops: Vec<tapegrad::Operand<Var<'_>>> = n.operands.iter().map(operand).collect();
            let var = match &n.kind {
                Kind::Input => g.var(n.value),
                Kind::Constant => g.constant(n.value),
                Kind::Unary(op) => match ops[0] {
                    tapegrad::Operand::Scalar(x) => x.apply(*op),
                    tapegrad::Operand::Const(_) => unreachable!("a unary op's operand is a node"),
                },
                Kind::Binary(op) => match (ops[0], ops[1]) {
                    (tapegrad::Operand::Scalar(a), b) => a.try_binary(*op, b).expect("valid"),
                    (tapegrad::Operand::Const(c), tapegrad::Operand::Scalar(b)) => match op {
                        Binary::Add => c + b,
                        Binary::Sub => c - b,
                        Binary::Mul => c * b,
                        Binary::Div => c / b,
                        Binary::Atan2 => tapegrad::atan2(c, b),
                        Binary::Hypot => tapegrad::hypot(c, b),
                        Binary::Max => tapegrad::max(c, b),
                        Binary::Min => tapegrad::min(c, b),
                        Binary::Xlogy => tapegrad::xlogy(c, b),
                        _ => tapegrad::powf(c, b),
                    },
                    _ => unreachable!("a binary op has a node operand"),
                },
                Kind::Nary(Nary::Dot) => {
                    let (a, b) = ops.split_at(ops.len() / 2);
                    g.dot(a, b)
                }
                Kind::Custom => match ops[..] {
                    [tapegrad::Operand::Scalar(a), tapegrad::Operand::Scalar(b)] => {
                        g.custom(&WAVE, &[a, b])
                    }
                    _ => unreachable!("wave's operands are two nodes"),
                },
                Kind::Nary(Nary::Clamp) => match ops[..] {
                    [
                        tapegrad::Operand::Scalar(x),
                        tapegrad::Operand::Const(lo),
                        tapegrad::Operand::Const(hi),
                    ] => x.clamp(lo, hi),
                    _ => unreachable!("clamp's operands are a node and two constants"),
                },
                Kind::Nary(Nary::Max) => g.amax(ops.iter().map(|o| match o {
                    tapegrad::Operand::Scalar(x) => *x,
                    tapegrad::Operand::Const(_) => unreachable!("amax operands are nodes"),
                })),
                Kind::Nary(op) => {
                    let xs = ops.iter().map(|o| match o {
                        tapegrad::Operand::Scalar(x) => *x,
                        tapegrad::Operand::Const(_) => unreachable!("sum operands are nodes"),
                    });
                    if *op == Nary::Sum {
                        g.sum(xs)
                    } else {
                        g.logsumexp(xs)
                    }
                }
            };
            vars.push(var);
        }
        let grads = vars[root].backward();
        Ok(vars.iter().map(|&v| grads[v]).collect())
    }

    /// Every kept `Gradients`: alive nodes it saw read the same value, nodes recorded since
    /// read 0, released ones and foreign ones are errors.
    fn reread_kept(&self) -> Result<(), TestCaseError> {
        for k in &self.kept {
            for e in &self.entries {
                let read = k.grads.try_wrt(e.var);
                if e.side != k.side {
                    prop_assert!(
                        matches!(read, Err(Error::ForeignHandle { .. })),
                        "kept gradients read with a foreign handle: {read:?}"
                    );
                } else if !self.alive(e) {
                    prop_assert_eq!(read, Err(Error::Released));
                } else {
                    let want = k.by_serial.get(&e.serial).copied().unwrap_or(0.0);
                    let got = read.map_err(|err| TestCaseError::fail(format!("{err}")))?;
                    prop_assert!(
                        reference::same_value(got, want),
                        "kept gradient {got}, then {want}"
                    );
                }
            }
        }
        Ok(())
    }
}

/// The nodes of `s` that the node at `root` depends on (itself included).
fn cone(s: &Side<'_>, root: usize) -> Vec<bool> {
    let mut cone = vec![false; root + 1];
    cone[root] = true;
    for p in (0..=root).rev() {
        if cone[p] {
            for o in &s.nodes[p].operands {
                if let Operand::Pos(q) = o {
                    cone[*q] = true;
                }
            }
        }
    }
    cone
}

fn run(data: &[u8], tally: &Tally) -> Result<(), TestCaseError> {
    let (g, h) = (Graph::new(), Graph::new());
    let mut m = Machine::new(&g, &h, data, tally);
    while !m.bytes.done() {
        m.step()?;
    }
    Ok(())
}

#[test]
fn arbitrary_bytes_never_panic_unexpectedly_nor_give_wrong_gradients() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !EXPECTING_PANIC.with(Cell::get) {
            previous(info);
        }
    }));
    let tally = Tally::default();
    let config = reference::proptest_config(20_000, 0x00f0_22ed);
    let cases = config.cases as usize;
    let mut runner = TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(any::<u8>(), 0..1000), |data| {
        run(&data, &tally)
    });
    let _ = std::panic::take_hook();
    if let Err(e) = result {
        panic!("{e}");
    }
    let t = |c: &Cell<usize>| c.get();
    println!(
        "{} actions: {} errors, {} documented panics, {} backwards ({} anomalies), \
         {} gradients compared with central differences, {} differences unreliable",
        t(&tally.actions),
        t(&tally.errors),
        t(&tally.panics),
        t(&tally.backwards),
        t(&tally.anomalies),
        t(&tally.compared),
        t(&tally.unreliable)
    );
    // The run must have exercised what it claims to check (per 20,000 cases, at least
    // about half of what the fixed seed gives).
    for (what, c, per_20k) in [
        ("errors", &tally.errors, 200_000),
        ("panics", &tally.panics, 80_000),
        ("backwards", &tally.backwards, 100_000),
        ("anomalies", &tally.anomalies, 10_000),
        ("gradient comparisons", &tally.compared, 40_000),
    ] {
        let min = per_20k * cases / 20_000;
        assert!(c.get() >= min, "only {} {what} in {cases} cases", c.get());
    }
}

/// Found auditing the `try_` forms: `try_binary(Binary::Powi, 2.5)` recorded `x^2` with derivative
/// `2.5 x`, and a `Var` exponent got gradient 0. Both are now refused.
#[test]
fn powi_with_a_non_integer_or_variable_exponent_is_refused() {
    let g = Graph::new();
    let x = g.var(3.0);
    let len = g.len();
    for exponent in [
        tapegrad::Operand::Const(2.5),
        tapegrad::Operand::Scalar(g.var(2.0)),
    ] {
        let err = x.try_binary(Binary::Powi, exponent).expect_err("refused");
        assert!(
            matches!(err, Error::BadOperands { op: "powi", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("use powf"), "{err}");
    }
    assert_eq!(g.len(), len + 1, "only the Var exponent was recorded");
    // An integer-valued f64 is the same as powi: d x^3 / dx = 3 x^2 = 27.
    let y = x
        .try_binary(Binary::Powi, 3.0)
        .expect("an integer exponent");
    assert_eq!((y.value(), y.backward()[x]), (27.0, 27.0));
}
