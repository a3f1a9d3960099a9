//! [`Replay`]: a recorded function evaluated again at new inputs, without the graph: value,
//! gradient and Hessian-vector product, with every recorded comparison re-checked. Also
//! `Var`'s guard methods (`lt`, `le`, ...), which record those comparisons. Uses the tape
//! (read once, to build), the fused nodes' kept sub-computations (`programs.rs`), the op
//! table and the `Scalar` trait; nothing uses it.
//!
//! A replay is the recorded tape cut to the nodes the output and every guard depend on,
//! renumbered densely, with the nodes that do not depend on the inputs frozen as constants.
//! Evaluating it is one forward loop that recomputes each node's value *and* its partials
//! at the new values (so a piecewise op such as `relu` or `abs` takes its derivative at the
//! new point, by construction), one check of every guard, and one reverse sweep written as
//! the plain backward's (`backward.rs`), so that gradients match a fresh recording bit for
//! bit. No slot map, no `RefCell`, and, once a [`ReplayWorkspace`] has been used, no
//! allocation.
//!
//! # Evaluation semantics
//!
//! What any evaluator of a replay's program must reproduce to give its numbers bit for bit
//! (the interpreter here, or a compiler of it):
//!
//! - **Nodes** are in recording order, numbered densely; the inputs, the constants and the
//!   frozen nodes (recorded values that do not depend on the inputs) are leaves holding a
//!   value. Nodes recorded *after* the output can be in the program: operands of guards.
//! - **Edges**: each node's operands in operand order, a node or a constant slot (an `f64`
//!   operand as in `x * 2.0`, whose partial is never needed). A dot block's node is an
//!   ordinary [`Nary::Dot`] node here, its edges expanded.
//! - **Unary, binary, n-ary nodes**: value and every partial by the op table, `f64`:
//!   `Unary::value`/`Unary::partial`, `Binary::value`/`Binary::partial` (a constant
//!   operand's partial is not evaluated), `Nary::value_and_partials_f64` (a dot of tracked
//!   operands: the products summed in order from `-0.0`, partials `b` then `a`).
//! - **User-defined functions** ([`Op::Custom`]): `value = f.value(operands)`, then the
//!   partials slice filled with a marker NaN and `f.partials(operands, value, partials)`,
//!   then checked (a slot left unwritten, or a non-finite partial where
//!   `f.finite_partials()` promises finite, is [`Error::BadPartials`]), as
//!   [`Graph::custom`](crate::Graph::custom) records them.
//! - **Fused nodes** ([`Op::Fused`]): the node's sub-computation, kept when
//!   [`Graph::fuse`](crate::Graph::fuse) recorded it, is a replay of its own (its inputs are
//!   the node's operands); the node's value and partials are that replay's
//!   [`Replay::gradient`] at the operands' values, as `fuse` ran the plain backward. Its
//!   guards are checked there.
//! - **Guards**, after the forward loop, in recording order: the first whose comparison
//!   (`f64`'s operators on the two operands' new values) differs from the recorded outcome
//!   is [`Error::BranchChanged`].
//! - **Reverse sweep**: adjoints zeroed, the output's 1, then each node from the output
//!   down adds `adjoint * partial` into its operands' adjoints in operand order, except
//!   where the one rule at singular points (`chain.rs`) applies: a zero adjoint or partial
//!   against an infinite or NaN one passes nothing, and an infinite partial with a quotient
//!   form is applied as `(adjoint * num) / den`.
//! - **HVP**: see [`Replay::hvp`] (forward over reverse, or reverse over reverse on a
//!   recording where that is not finite).

use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::chain::{NON_FINITE, chain, chain_quotient, rescue};
use super::custom::{check_partials, eval_custom};
use super::dual::Dual;
use super::error::{BranchChanged, Error, or_panic};
use super::graph::{CustomFn, Graph, Var};
use super::guard::{Comparison, Guard, comparisons};
use super::op::{Binary, Nary, Op, Unary};
use super::programs::{ProgramView, Programs};
use super::scalar::Operand;
use super::tape::{CONST_ARG, Resolved, Tape};

/// A unique id per replay, so that a workspace knows which replay it was prepared for.
static NEXT_REPLAY_ID: AtomicU64 = AtomicU64::new(1);

/// Bits of [`Replay::constant_operands`].
const FIRST_CONST: u8 = 1;
const SECOND_CONST: u8 = 2;
const ANY_CONST: u8 = 4;

/// A recorded function of some inputs, evaluated again at new input values: its value, its
/// gradient and Hessian-vector products, without recording anything.
///
/// Record the function once on a [`Graph`](crate::Graph), build the replay from its output
/// and inputs, and evaluate it as often as needed. Each evaluation recomputes every node's
/// value and partials from the op table at the new inputs (a piecewise op such as `relu` or
/// `abs` takes its derivative at the new point), checks every comparison the recording made
/// through the guard methods ([`Var::lt`], [`Var::gt`], ...), and runs one reverse sweep.
/// The value and the gradient are bit for bit those of a fresh recording at the same
/// inputs.
///
/// **Branches.** A comparison made through a guard method is checked at every evaluation,
/// wherever it was made relative to the output (`if x.gt(0.0) { x } else { x * 0.01 }`
/// returns a node recorded *before* its comparison): every comparison of values that
/// depend on the inputs, made before the replay is built, is a guard (those of other
/// computations on the same inputs too, since the graph's last release: record the
/// function on a graph of its own, or after a release, to check its guards only). Rust control flow on
/// a raw [`Var::value`] (`if x.value() > 0.0 { .. }`) is invisible to the tape; with replay
/// checks on (the default, [`Graph::set_replay_checks`](crate::Graph::set_replay_checks)),
/// building a replay over such a read is [`Error::UncheckedRead`]. Reads that decide
/// nothing use [`Var::untracked_value`]: the stable forms of
/// [`functional`](crate::functional) shift logits by their maximum read so, and a replay
/// keeps the recorded shift, which leaves the softmax unchanged in exact arithmetic but can
/// move the last bits against a fresh recording.
///
/// **Your own functions.** A [`CustomFn`](crate::CustomFn)'s value and partials are
/// evaluated again at the new point; a fused node's sub-computation
/// ([`Graph::fuse`](crate::Graph::fuse), [`Scalar::fused`](crate::Scalar::fused)) is kept
/// when it is recorded and replayed with it (see the module's evaluation semantics).
///
/// A replay keeps only the nodes the output and the guards depend on; nodes that do not
/// depend on the replay's inputs (other parameters, data) keep their recorded values.
/// It is immutable, `Send` and `Sync`: threads can evaluate one replay at once, each with
/// its own [`ReplayWorkspace`], with the same results as one thread.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, Replay, ReplayWorkspace};
///
/// let g = Graph::new();
/// let x = g.vars(&[1.0, 2.0]);
/// let f = (x[0] * x[1]).sin() + x[1].relu();
/// let replay = Replay::new(f, &x);
///
/// let mut ws = ReplayWorkspace::new();
/// let mut grad = [0.0; 2];
/// let value = replay.gradient(&[0.5, -3.0], &mut ws, &mut grad).unwrap();
/// // the same numbers as recording again at (0.5, -3)
/// let h = Graph::new();
/// let y = h.vars(&[0.5, -3.0]);
/// let fy = (y[0] * y[1]).sin() + y[1].relu();
/// assert_eq!(value, fy.value());
/// assert_eq!(grad.to_vec(), fy.backward().wrt_all(&y));
/// ```
#[derive(Clone, Debug)]
pub struct Replay {
    id: u64,
    /// Each node's op; the leaves (inputs, constants, frozen nodes) have no edges.
    ops: Vec<Op>,
    /// The nodes that are not leaves, in order, each with what evaluates it.
    steps: Vec<Instr>,
    /// Per node: [`FIRST_CONST`] / [`SECOND_CONST`] for a binary node's constant operands,
    /// [`ANY_CONST`] for an n-ary node with one.
    constant_operands: Vec<u8>,
    /// `edge_start[i]..edge_start[i + 1]` are node `i`'s edges.
    edge_start: Vec<u32>,
    /// Each edge's operand: a node, or a slot past the sink holding a constant.
    args: Vec<u32>,
    /// The values a workspace starts from: every node's recorded value, the sink, then the
    /// constants.
    initial: Vec<f64>,
    /// The node of each input, in the caller's order.
    inputs: Vec<u32>,
    output: u32,
    guards: Vec<ReplayGuard>,
    /// The user-defined functions of the [`Op::Custom`] nodes, by their number here.
    customs: Vec<Arc<dyn CustomFn>>,
    /// Each fused node (by position) with the replay of its sub-computation.
    fused: Vec<(u32, Replay)>,
    /// Whether the output depends on a user-defined function's node (its HVP then goes
    /// through the function's second-order rule), or on a fused node (which has none).
    custom_ancestor: bool,
    fused_ancestor: bool,
}

/// A guard with its operands renumbered.
#[derive(Clone, Copy, Debug)]
struct ReplayGuard {
    comparison: Comparison,
    operands: [u32; 2],
    outcome: bool,
    location: &'static Location<'static>,
}

/// The buffers one evaluation of a [`Replay`] works in: values, partials, adjoints (and
/// their tangents, for [`Replay::hvp`]). Keep one per thread and pass it to every call: after
/// the first call with a given replay, evaluating allocates nothing. A workspace used with
/// another replay re-prepares itself for it.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, Replay, ReplayWorkspace};
///
/// let g = Graph::new();
/// let x = g.var(1.0);
/// let replay = Replay::new(x.exp(), &[x]);
/// let mut ws = ReplayWorkspace::new();
/// for t in [0.0, 1.0, 2.0] {
///     assert_eq!(replay.eval(&[t], &mut ws), Ok(t.exp()));
/// }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ReplayWorkspace {
    replay: u64,
    values: Vec<f64>,
    partials: Vec<f64>,
    adjoints: Vec<f64>,
    /// An n-ary node's operand values and partials.
    operands: Vec<f64>,
    out: Vec<f64>,
    tangents: Vec<f64>,
    partial_tangents: Vec<f64>,
    adjoint_tangents: Vec<f64>,
    duals: Vec<Dual>,
    /// One workspace per fused node, for its sub-computation's replay.
    subs: Vec<ReplayWorkspace>,
}

impl ReplayWorkspace {
    /// An empty workspace; the first evaluation sizes it.
    ///
    /// # Examples
    ///
    /// ```
    /// let ws = tapegrad::ReplayWorkspace::new();
    /// # drop(ws);
    /// ```
    pub fn new() -> Self {
        ReplayWorkspace::default()
    }
}

impl Replay {
    /// Builds the replay of `output` as a function of `inputs` (inputs made by
    /// [`Graph::var`](crate::Graph::var) or [`Graph::vars`](crate::Graph::vars)).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay, ReplayWorkspace};
    ///
    /// let g = Graph::new();
    /// let (x, w) = (g.var(3.0), g.var(0.5)); // w is not an input of the replay
    /// let replay = Replay::new(w * x * x, &[x]);
    /// assert_eq!(replay.eval(&[4.0], &mut ReplayWorkspace::new()), Ok(8.0));
    /// ```
    ///
    /// # Panics
    ///
    /// In the cases where [`Replay::try_new`] returns an error.
    #[track_caller]
    pub fn new(output: Var<'_>, inputs: &[Var<'_>]) -> Replay {
        or_panic(Replay::try_new(output, inputs))
    }

    /// [`Replay::new`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::Released`] or [`Error::ForeignHandle`] for a bad handle;
    /// [`Error::BadOperands`] if an input is not an input node or appears twice;
    /// [`Error::UncheckedRead`] if replay checks are on and the value of a node that
    /// depends on the inputs was read before the output was recorded.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay};
    ///
    /// let g = Graph::new();
    /// let x = g.var(3.0);
    /// let y = x.exp();
    /// assert!(Replay::try_new(y, &[y]).is_err()); // y is not an input
    /// assert!(Replay::try_new(y, &[x, x]).is_err());
    /// ```
    pub fn try_new(output: Var<'_>, inputs: &[Var<'_>]) -> Result<Replay, Error> {
        let graph = output.graph();
        let tape = graph.tape.borrow();
        let root = graph.resolve_var(&tape, output)?.arg as usize;
        let mut input_pos = Vec::with_capacity(inputs.len());
        for &x in inputs {
            let pos = graph.resolve_var(&tape, x)?.arg as usize;
            if tape.op(pos) != Op::Input {
                return Err(Error::BadOperands {
                    op: "Replay",
                    why: format!(
                        "input {} is a {} node; a replay's inputs must be inputs made by \
                         Graph::var or Graph::vars",
                        input_pos.len(),
                        tape.op_name(pos)
                    ),
                });
            }
            input_pos.push(pos);
        }
        let customs = graph.customs.borrow();
        let programs = graph.fused.borrow();
        let source = TapeSource {
            tape: &tape,
            customs: &customs,
            programs: &programs,
        };
        build(&source, root, &input_pos)
    }

    /// The number of nodes kept (the output's and the guards' dependencies).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay};
    ///
    /// let g = Graph::new();
    /// let x = g.var(1.0);
    /// let _unused = x.sin();
    /// let y = x.exp();
    /// assert_eq!(Replay::new(y, &[x]).len(), 2); // x and exp(x)
    /// ```
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the replay has no nodes (never: it holds at least its output).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// assert!(!tapegrad::Replay::new(x, &[x]).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The number of inputs (the length of the `x` every evaluation takes).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.vars(&[1.0, 2.0]);
    /// assert_eq!(tapegrad::Replay::new(x[0] * x[1], &x).inputs(), 2);
    /// ```
    pub fn inputs(&self) -> usize {
        self.inputs.len()
    }

    /// The number of guards (recorded comparisons) every evaluation checks.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// let y = if x.lt(0.5) { x } else { x * 2.0 };
    /// assert_eq!(tapegrad::Replay::new(y, &[x]).guards(), 1);
    /// ```
    pub fn guards(&self) -> usize {
        self.guards.len()
    }

    /// The function's value at `x` (the inputs, in the order given to [`Replay::new`]).
    ///
    /// # Errors
    ///
    /// [`Error::BadOperands`] if `x` has the wrong length; [`Error::BranchChanged`] for the
    /// first guard (in recording order) that comes out otherwise at `x`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay, ReplayWorkspace};
    ///
    /// let g = Graph::new();
    /// let x = g.var(1.0);
    /// let replay = Replay::new(x * x + 1.0, &[x]);
    /// assert_eq!(replay.eval(&[3.0], &mut ReplayWorkspace::new()), Ok(10.0));
    /// ```
    pub fn eval(&self, x: &[f64], ws: &mut ReplayWorkspace) -> Result<f64, Error> {
        self.forward(x, ws)?;
        Ok(ws.values[self.output as usize])
    }

    /// The value at `x`, returned, and the gradient with respect to the inputs, written to
    /// `grad`: bit for bit what recording the function at `x` and calling
    /// [`Var::backward`] gives.
    ///
    /// # Errors
    ///
    /// As [`Replay::eval`]; also [`Error::BadOperands`] if `grad` has the wrong length.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay, ReplayWorkspace};
    ///
    /// let g = Graph::new();
    /// let x = g.vars(&[1.0, 1.0]);
    /// let replay = Replay::new(x[0] * x[1].exp(), &x);
    /// let mut grad = [0.0; 2];
    /// let y = replay.gradient(&[2.0, 0.0], &mut ReplayWorkspace::new(), &mut grad);
    /// assert_eq!(y, Ok(2.0));
    /// assert_eq!(grad, [1.0, 2.0]);
    /// ```
    pub fn gradient(
        &self,
        x: &[f64],
        ws: &mut ReplayWorkspace,
        grad: &mut [f64],
    ) -> Result<f64, Error> {
        self.check_len("gradient", grad.len())?;
        self.forward(x, ws)?;
        self.reverse(ws);
        for (g, &i) in grad.iter_mut().zip(&self.inputs) {
            *g = ws.adjoints[i as usize];
        }
        Ok(ws.values[self.output as usize])
    }

    /// The Hessian-vector product `H v` at `x`, written to `out`: the numbers of
    /// [`higher::hvp`](crate::higher::hvp) (reverse over reverse on a fresh recording at
    /// `x`) wherever those are finite, under one rule:
    ///
    /// - it evaluates forward over reverse, without recording: every node's partials on
    ///   dual numbers (value and derivative along `v`) by the op table's own rules at `x`
    ///   (so kinks and branches inside the rules are taken where they hold at `x`), then one
    ///   reverse sweep of adjoints and their tangents, the zero-wins rule of the sweeps
    ///   applied to every product. Where every entry is finite, that is `higher::hvp`'s
    ///   `H v` up to rounding (the two differentiate in different orders);
    /// - where an entry is not finite (a singular point: `x^y` at `(-1, 0)`, `sqrt(x) * z` at
    ///   `x = z = 0`), where the two orders can drop different `0 * inf` products, it
    ///   records the program at `x` on a scratch graph and runs reverse over reverse, as
    ///   `higher::hvp` does: the same numbers, bit for bit;
    /// - where the output depends on a user-defined function, it always runs reverse over
    ///   reverse (through [`CustomFn::graph_partials`](crate::CustomFn::graph_partials), the
    ///   function's second-order rule), at `higher::hvp`'s cost; so it does where it depends
    ///   on a fused node, which has no second-order rule: [`Error::NoSecondOrder`] if the
    ///   sweep reaches it, as from `higher::hvp`.
    ///
    /// # Errors
    ///
    /// As [`Replay::eval`]; also [`Error::BadOperands`] if `v` or `out` has the wrong
    /// length; [`Error::NoSecondOrder`] through a fused node or a user-defined function
    /// without a second-order rule (where `higher::hvp` reports it).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay, ReplayWorkspace};
    ///
    /// let g = Graph::new();
    /// let x = g.vars(&[1.0, 1.0]);
    /// let replay = Replay::new(x[0] * x[0] * x[1], &x);
    /// // H = [[2 y, 2 x], [2 x, 0]] at (x, y) = (3, 5)
    /// let mut hv = [0.0; 2];
    /// replay.hvp(&[3.0, 5.0], &[1.0, 0.0], &mut ReplayWorkspace::new(), &mut hv).unwrap();
    /// assert_eq!(hv, [10.0, 6.0]);
    /// ```
    pub fn hvp(
        &self,
        x: &[f64],
        v: &[f64],
        ws: &mut ReplayWorkspace,
        out: &mut [f64],
    ) -> Result<(), Error> {
        self.check_len("hvp direction", v.len())?;
        self.check_len("hvp output", out.len())?;
        self.forward(x, ws)?;
        if !self.custom_ancestor && !self.fused_ancestor {
            self.tangent_forward(v, ws);
            self.tangent_reverse(ws);
            for (o, &i) in out.iter_mut().zip(&self.inputs) {
                *o = ws.adjoint_tangents[i as usize];
            }
            if out.iter().all(|h| h.is_finite()) {
                return Ok(());
            }
        }
        self.hvp_recorded(ws, v, out)
    }

    /// [`Replay::hvp`] by reverse over reverse: the program recorded on a scratch graph at
    /// the values of the last [`Replay::forward`] (in `ws`), then [`Var::grad`], its dot
    /// with `v`, and a plain backward, as `higher::hvp` does.
    fn hvp_recorded(&self, ws: &ReplayWorkspace, v: &[f64], out: &mut [f64]) -> Result<(), Error> {
        let graph = Graph::new();
        let location = Location::caller();
        let positions = {
            let mut tape = graph.tape.borrow_mut();
            for f in &self.customs {
                graph.register_custom(&mut tape, f)?;
            }
            let mut is_input = vec![false; self.ops.len()];
            for &i in &self.inputs {
                is_input[i as usize] = true;
            }
            let mut positions: Vec<u32> = Vec::with_capacity(self.ops.len());
            let resolved = |a: u32, positions: &[u32], tape: &Tape| match positions.get(a as usize)
            {
                Some(&pos) => Resolved {
                    value: tape.values()[pos as usize],
                    arg: pos,
                },
                // A constant operand's slot, past the nodes and the sink.
                None => Resolved::constant(self.initial[a as usize]),
            };
            for (node, &op) in self.ops.iter().enumerate() {
                let edges = self.edge_start[node] as usize..self.edge_start[node + 1] as usize;
                let operands: Vec<Resolved> = self.args[edges]
                    .iter()
                    .map(|&a| resolved(a, &positions, &tape))
                    .collect();
                let recorded = match op {
                    Op::Input | Op::Constant => {
                        let kind = if is_input[node] {
                            Op::Input
                        } else {
                            Op::Constant
                        };
                        tape.leaf(kind, ws.values[node], location)
                    }
                    Op::Unary(u) => tape.unary(u, operands[0], location),
                    Op::Binary(b) => tape.binary(b, operands[0], operands[1], location),
                    Op::Nary(n) => tape.nary(n, operands, |_, _, r| Ok(r), location),
                    Op::Custom(k) => {
                        let f = &self.customs[usize::from(k)];
                        let eval = |xs: &[f64], out: &mut [f64]| eval_custom(&**f, xs, out);
                        tape.computed(op, &operands, eval, location)
                    }
                    // A fused node again, with the partials evaluated at `x`: reverse over
                    // reverse reports it as `higher::hvp` does, if it reaches it.
                    Op::Fused => {
                        let edges =
                            self.edge_start[node] as usize..self.edge_start[node + 1] as usize;
                        let partials = &ws.partials[edges];
                        let eval = |_: &[f64], out: &mut [f64]| {
                            out.copy_from_slice(partials);
                            ws.values[node]
                        };
                        tape.computed(op, &operands, eval, location)
                    }
                };
                positions.push(recorded?.pos());
            }
            positions
        };
        let (y, xs) = {
            let tape = graph.tape.borrow();
            let y = graph.handle(&tape, positions[self.output as usize]);
            let xs: Vec<Var<'_>> = self
                .inputs
                .iter()
                .map(|&i| graph.handle(&tape, positions[i as usize]))
                .collect();
            (y, xs)
        };
        let dy = y.try_grad(&xs)?;
        let gv = graph.try_dot(&dy, v)?;
        let grads = gv.try_backward()?;
        for (o, &x) in out.iter_mut().zip(&xs) {
            *o = grads.try_wrt(x)?;
        }
        Ok(())
    }

    fn check_len(&self, what: &str, len: usize) -> Result<(), Error> {
        if len == self.inputs.len() {
            return Ok(());
        }
        Err(Error::BadOperands {
            op: "Replay",
            why: format!(
                "the {what} has {len} entries; the replay has {} inputs",
                self.inputs.len()
            ),
        })
    }

    /// Sizes `ws` for this replay (once: a workspace remembers the replay it was sized for).
    fn prepare(&self, ws: &mut ReplayWorkspace) {
        if ws.replay == self.id {
            return;
        }
        ws.replay = self.id;
        ws.values.clear();
        ws.values.extend_from_slice(&self.initial);
        ws.partials.clear();
        ws.partials.resize(self.args.len(), 0.0);
        ws.adjoints.clear();
        // One adjoint per value slot, constants included: a constant operand's edge adds
        // (its partial, never written, is 0) to a slot nobody reads, with no test for it.
        ws.adjoints.resize(self.initial.len(), 0.0);
        ws.subs
            .resize_with(self.fused.len(), ReplayWorkspace::default);
    }

    /// Every node's value and partials at `x`, then every guard checked.
    fn forward(&self, x: &[f64], ws: &mut ReplayWorkspace) -> Result<(), Error> {
        self.check_len("input", x.len())?;
        self.prepare(ws);
        let values = ws.values.as_mut_slice();
        for (&i, &x) in self.inputs.iter().zip(x) {
            values[i as usize] = x;
        }
        let partials = ws.partials.as_mut_slice();
        for instr in &self.steps {
            if let Some(step) = instr.step {
                step(instr, values, partials);
                continue;
            }
            let node = instr.node as usize;
            let edges = self.edge_start[node] as usize..self.edge_start[node + 1] as usize;
            let buffers = (&mut ws.operands, &mut ws.out, ws.subs.as_mut_slice());
            values[node] =
                self.evaluate_without_step(node, values, &mut partials[edges], buffers)?;
        }
        for g in &self.guards {
            let operands = g.operands.map(|a| values[a as usize]);
            if g.comparison.holds(operands[0], operands[1]) != g.outcome {
                return Err(Error::BranchChanged(Box::new(BranchChanged {
                    comparison: g.comparison.symbol(),
                    recorded: g.outcome,
                    operands,
                    location: g.location,
                })));
            }
        }
        Ok(())
    }

    /// The value of node `node`, one without a step (an n-ary, user-defined or fused node),
    /// its partials written to `partials`: what every evaluation of the replay computes for
    /// it, [`Replay::eval`]'s and [`ReplayProgram::evaluate`]'s. `operands` and `out` are
    /// scratch; `subs` are the fused nodes' workspaces (a fresh one where it has none).
    #[inline(always)]
    fn evaluate_without_step(
        &self,
        node: usize,
        values: &[f64],
        partials: &mut [f64],
        (operands, out, subs): (&mut Vec<f64>, &mut Vec<f64>, &mut [ReplayWorkspace]),
    ) -> Result<f64, Error> {
        let args = &self.args[self.edge_start[node] as usize..self.edge_start[node + 1] as usize];
        match self.ops[node] {
            Op::Nary(Nary::Dot) if self.constant_operands[node] == 0 => {
                Ok(dot_in_place(values, args, partials))
            }
            Op::Nary(op) => {
                operands.clear();
                operands.extend(args.iter().map(|&a| values[a as usize]));
                out.clear();
                let y = op.value_and_partials_f64(operands, out);
                partials.copy_from_slice(out);
                Ok(y)
            }
            Op::Custom(k) => {
                // As `Graph::custom` records it: the value, then the partials (every slot
                // written, checked).
                let f = &*self.customs[usize::from(k)];
                operands.clear();
                operands.extend(args.iter().map(|&a| values[a as usize]));
                let y = eval_custom(f, operands, partials);
                check_partials(f, operands, y, partials)?;
                Ok(y)
            }
            Op::Fused => {
                // As `Graph::fuse` records it: the sub-computation's value and its gradient
                // with respect to the operands (a replay's own `gradient`, bit for bit the
                // plain backward the recording ran).
                let k = self.fused.partition_point(|&(at, _)| (at as usize) < node);
                let (at, sub) = &self.fused[k];
                debug_assert_eq!(*at as usize, node);
                operands.clear();
                operands.extend(args.iter().map(|&a| values[a as usize]));
                let mut fresh = ReplayWorkspace::new();
                sub.gradient(operands, subs.get_mut(k).unwrap_or(&mut fresh), partials)
            }
            op => unreachable!("{op} has a step"),
        }
    }

    /// The reverse sweep of the plain backward (`backward.rs`), over the replay's arrays:
    /// the same order and the same rule at singular points (its `chain` and `rescue`), so
    /// the same numbers bit for bit. As there, a fast multiply-add loop runs while every
    /// adjoint is finite, and the careful loop, edge by edge, takes over from the root at
    /// the first that is not. Constant operands' edges go to slots of their own, which
    /// nothing reads.
    fn reverse(&self, ws: &mut ReplayWorkspace) {
        if !self.reverse_fast(ws) {
            self.reverse_careful(ws);
        }
    }

    /// The constants' slots (past the nodes) are never read: left as they are.
    fn seed(&self, adjoints: &mut [f64]) {
        adjoints[..self.ops.len()].fill(0.0);
        adjoints[self.output as usize] = 1.0;
    }

    /// [`Replay::reverse`]'s fast loop; `false` if it met a non-finite adjoint.
    fn reverse_fast(&self, ws: &mut ReplayWorkspace) -> bool {
        let root = self.output as usize;
        let adjoints = ws.adjoints.as_mut_slice();
        self.seed(adjoints);
        let edge_start = &self.edge_start[..=root + 1];
        let mut end = edge_start[root + 1] as usize;
        let args = &self.args[..end];
        let weights = &ws.partials[..end];
        for node in (0..root + 1).rev() {
            let start = edge_start[node] as usize;
            let adjoint = adjoints[node];
            // Finite and nonzero, in one unsigned comparison (as in `backward.rs`).
            let ordinary = (adjoint.to_bits() << 1).wrapping_sub(1) < NON_FINITE - 1;
            if start != end && ordinary {
                match (&args[start..end], &weights[start..end]) {
                    (&[a], &[w]) => adjoints[a as usize] += adjoint * w,
                    (&[a0, a1], &[w0, w1]) => {
                        adjoints[a0 as usize] += adjoint * w0;
                        adjoints[a1 as usize] += adjoint * w1;
                    }
                    (args, weights) => {
                        for (&arg, &partial) in args.iter().zip(weights) {
                            adjoints[arg as usize] += adjoint * partial;
                        }
                    }
                }
            } else if !adjoint.is_finite() {
                return false;
            }
            end = start;
        }
        true
    }

    /// [`Replay::reverse`]'s careful loop: the rule of `backward.rs`'s `chain` and
    /// `rescue`, edge by edge.
    #[cold]
    fn reverse_careful(&self, ws: &mut ReplayWorkspace) {
        let root = self.output as usize;
        let sink = self.ops.len() as u32;
        let adjoints = ws.adjoints.as_mut_slice();
        self.seed(adjoints);
        let values = ws.values.as_slice();
        for node in (0..root + 1).rev() {
            let adjoint = adjoints[node];
            if adjoint == 0.0 {
                continue;
            }
            let edges = self.edge_start[node] as usize..self.edge_start[node + 1] as usize;
            let args = &self.args[edges.clone()];
            for (k, (&arg, &partial)) in args.iter().zip(&ws.partials[edges]).enumerate() {
                if arg > sink {
                    continue; // a constant operand
                }
                let rescued = if partial.is_infinite() {
                    ws.operands.clear();
                    ws.operands.extend(args.iter().map(|&a| values[a as usize]));
                    rescue(self.ops[node], &ws.operands, values[node], k, partial)
                } else {
                    None
                };
                let contribution = match rescued {
                    Some(quotient) => chain_quotient(adjoint, quotient),
                    None => chain(adjoint, partial),
                };
                if let Some(c) = contribution {
                    adjoints[arg as usize] += c;
                }
            }
        }
    }

    /// After [`Replay::forward`]: each node's derivative along `v` (its tangent), and each
    /// partial's, by the op table's rules on dual numbers.
    fn tangent_forward(&self, v: &[f64], ws: &mut ReplayWorkspace) {
        let slots = self.initial.len();
        ws.tangents.clear();
        ws.tangents.resize(slots, 0.0);
        ws.partial_tangents.clear();
        ws.partial_tangents.resize(self.args.len(), 0.0);
        let (values, partials) = (&ws.values, &ws.partials);
        let tangents = ws.tangents.as_mut_slice();
        for (&i, &v) in self.inputs.iter().zip(v) {
            tangents[i as usize] = v;
        }
        let dual = |a: u32, tangents: &[f64]| Dual::new(values[a as usize], [tangents[a as usize]]);
        for (node, &op) in self.ops.iter().enumerate() {
            let (start, end) = (
                self.edge_start[node] as usize,
                self.edge_start[node + 1] as usize,
            );
            if start == end {
                continue;
            }
            let args = &self.args[start..end];
            // By the rule of `backward::chain`: a zero tangent passes nothing through an
            // infinite or NaN partial, as a zero adjoint does backward.
            let t: f64 = args
                .iter()
                .zip(&partials[start..end])
                .filter_map(|(&a, &p)| chain(p, tangents[a as usize]))
                .sum();
            tangents[node] = t;
            let y = Dual::new(values[node], [t]);
            let dp = &mut ws.partial_tangents[start..end];
            let constant = self.constant_operands[node];
            match op {
                Op::Input | Op::Constant => {}
                Op::Unary(op) => dp[0] = op.partial(dual(args[0], tangents), y).tangents[0],
                Op::Binary(op) => {
                    let (a, b) = (dual(args[0], tangents), dual(args[1], tangents));
                    if constant & FIRST_CONST == 0 {
                        dp[0] = op.partial(a, b, y, 0).tangents[0];
                    }
                    if constant & SECOND_CONST == 0 {
                        dp[1] = op.partial(a, b, y, 1).tangents[0];
                    }
                }
                // Not on the output's way (`Replay::hvp` runs reverse over reverse through
                // them otherwise): kept for the guards, which need no tangents.
                Op::Custom(_) | Op::Fused => dp.fill(0.0),
                Op::Nary(op) => {
                    ws.duals.clear();
                    ws.duals.extend(args.iter().map(|&a| dual(a, tangents)));
                    match op {
                        // Each partial on its own costs O(1).
                        Nary::Sum | Nary::Dot | Nary::Clamp => {
                            for (k, dp) in dp.iter_mut().enumerate() {
                                *dp = op.partial(&ws.duals, y, k).tangents[0];
                            }
                        }
                        // Every partial at once: one pass over the operands, not one each
                        // (which made an HVP through a logsumexp quadratic).
                        Nary::LogSumExp | Nary::Max => {
                            let partials = op.partials(&ws.duals, y);
                            for (dp, p) in dp.iter_mut().zip(partials) {
                                *dp = p.tangents[0];
                            }
                        }
                    }
                }
            }
        }
    }

    /// The reverse sweep of adjoints and their tangents: `d(adjoint_arg) += adjoint * w`
    /// and `d(tangent_arg) += tangent * w + adjoint * dw`.
    fn tangent_reverse(&self, ws: &mut ReplayWorkspace) {
        let root = self.output as usize;
        let adjoints = ws.adjoints.as_mut_slice();
        adjoints.fill(0.0);
        adjoints[root] = 1.0;
        ws.adjoint_tangents.clear();
        ws.adjoint_tangents.resize(self.initial.len(), 0.0);
        let adjoint_tangents = ws.adjoint_tangents.as_mut_slice();
        for node in (0..root + 1).rev() {
            let (start, end) = (
                self.edge_start[node] as usize,
                self.edge_start[node + 1] as usize,
            );
            let (a, at) = (adjoints[node], adjoint_tangents[node]);
            if start == end || (a == 0.0 && at == 0.0) {
                continue;
            }
            for e in start..end {
                let arg = self.args[e] as usize;
                let (w, dw) = (ws.partials[e], ws.partial_tangents[e]);
                // The rule of `backward::chain` on the product `a w` and on each term of
                // its derivative, as reverse-over-reverse applies it to the node `a * w`
                // it records: where a zero factor wins, neither passes anything.
                if let Some(c) = chain(a, w) {
                    adjoints[arg] += c;
                    adjoint_tangents[arg] +=
                        chain(at, w).unwrap_or(0.0) + chain(a, dw).unwrap_or(0.0);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Building: a graph's tape (or a fused node's sub-computation) cut to what the output needs
// ---------------------------------------------------------------------------------------

/// What a replay is built from: a graph's tape ([`TapeSource`]), or the sub-computation of
/// one of its fused nodes ([`ProgramSource`]), which becomes a replay of its own.
trait Source {
    /// The number of nodes (the last one's position plus one).
    fn len(&self) -> usize;
    fn op(&self, pos: usize) -> Op;
    /// The node's recorded value.
    fn value(&self, pos: usize) -> f64;
    /// The node's operands in order into `out` (cleared first): each a node position, or
    /// [`CONST_ARG`] with the constant.
    fn operands(&self, pos: usize, out: &mut Vec<(u32, f64)>);
    /// The comparisons recorded as guards, in order.
    fn guards(&self) -> &[Guard];
    /// The raw value reads, in order: node and where.
    fn reads(&self) -> Vec<(u32, &'static Location<'static>)>;
    /// The user-defined function `k` (of [`Op::Custom`]).
    fn custom(&self, k: u8) -> Arc<dyn CustomFn>;
    /// The replay of the fused node at `pos`'s sub-computation, as a function of its
    /// operands.
    fn fused(&self, pos: usize) -> Result<Replay, Error>;
    /// Whether every node but the inputs and constants is evaluated again, even one that
    /// does not depend on the inputs (a fused node's program keeps only those values).
    fn recomputes_all(&self) -> bool {
        false
    }
}

/// A graph's tape, its user-defined functions and its fused nodes' programs.
struct TapeSource<'a> {
    tape: &'a Tape,
    customs: &'a [Arc<dyn CustomFn>],
    programs: &'a Programs,
}

impl Source for TapeSource<'_> {
    fn len(&self) -> usize {
        self.tape.len()
    }
    fn op(&self, pos: usize) -> Op {
        self.tape.op(pos)
    }
    fn value(&self, pos: usize) -> f64 {
        self.tape.values()[pos]
    }
    fn operands(&self, pos: usize, out: &mut Vec<(u32, f64)>) {
        out.clear();
        // Only stored edges hold constants (a dot block has none): the constant is in the
        // edge's weight slot.
        let stored = self.tape.edge_start()[pos] as usize;
        out.extend(
            self.tape
                .operand_positions(pos)
                .enumerate()
                .map(|(k, a)| match a {
                    CONST_ARG => (a, self.tape.weights()[stored + k]),
                    a => (a, 0.0),
                }),
        );
    }
    fn guards(&self) -> &[Guard] {
        &self.tape.guards
    }
    fn reads(&self) -> Vec<(u32, &'static Location<'static>)> {
        self.tape
            .reads
            .as_ref()
            .map_or_else(Vec::new, |reads| reads.iter().collect())
    }
    fn custom(&self, k: u8) -> Arc<dyn CustomFn> {
        Arc::clone(&self.customs[usize::from(k)])
    }
    fn fused(&self, pos: usize) -> Result<Replay, Error> {
        let view = self
            .programs
            .of_node(pos as u32)
            .ok_or_else(|| Error::BadOperands {
                op: "Replay",
                why: "a fused node's sub-computation was not kept".into(),
            })?;
        ProgramSource {
            view,
            customs: self.customs,
        }
        .replay()
    }
}

/// A fused node's sub-computation (numbered from 0, its inputs first), with the
/// user-defined functions of the graph it belongs to.
struct ProgramSource<'a> {
    view: ProgramView<'a>,
    customs: &'a [Arc<dyn CustomFn>],
}

impl ProgramSource<'_> {
    fn replay(&self) -> Result<Replay, Error> {
        let p = self.view.program;
        let inputs: Vec<usize> = (0..p.inputs as usize).collect();
        build(self, p.output as usize, &inputs)
    }
}

impl Source for ProgramSource<'_> {
    fn len(&self) -> usize {
        self.view.len()
    }
    fn op(&self, pos: usize) -> Op {
        self.view.op(pos)
    }
    fn value(&self, pos: usize) -> f64 {
        self.view.value(pos)
    }
    fn operands(&self, pos: usize, out: &mut Vec<(u32, f64)>) {
        out.clear();
        let (args, weights) = self.view.edges(pos);
        out.extend(args.iter().zip(weights).map(|(&a, &w)| match a {
            CONST_ARG => (a, w),
            a => (a, 0.0),
        }));
    }
    fn guards(&self) -> &[Guard] {
        self.view.guards()
    }
    fn reads(&self) -> Vec<(u32, &'static Location<'static>)> {
        self.view.reads().to_vec()
    }
    fn custom(&self, k: u8) -> Arc<dyn CustomFn> {
        Arc::clone(&self.customs[usize::from(k)])
    }
    fn recomputes_all(&self) -> bool {
        true
    }
    fn fused(&self, pos: usize) -> Result<Replay, Error> {
        let view = self.view.nested(pos).ok_or_else(|| Error::BadOperands {
            op: "Replay",
            why: "a fused node's sub-computation was not kept".into(),
        })?;
        ProgramSource {
            view,
            customs: self.customs,
        }
        .replay()
    }
}

/// The replay of node `root` of `source` as a function of the input nodes at `input_pos`.
fn build<S: Source>(source: &S, root: usize, input_pos: &[usize]) -> Result<Replay, Error> {
    let len = source.len();
    // Per position: INPUT, DEPENDS (on an input), KEEP (in the replay).
    const INPUT: u8 = 1;
    const DEPENDS: u8 = 2;
    const KEEP: u8 = 4;
    let mut flags = vec![0u8; len];
    for (k, &pos) in input_pos.iter().enumerate() {
        if flags[pos] & INPUT != 0 {
            return Err(Error::BadOperands {
                op: "Replay",
                why: format!("input {k} appears twice in the inputs"),
            });
        }
        flags[pos] = INPUT | DEPENDS | KEEP;
    }
    // Which nodes depend on the inputs (the others keep their recorded values), over the
    // whole tape: a guard or a read after the output may have chosen it (`if x.gt(0.0) {
    // x } else { .. }` returns a node recorded before its own comparison).
    let mut operands = Vec::new();
    let recomputes_all = source.recomputes_all();
    for pos in 0..len {
        if recomputes_all && !matches!(source.op(pos), Op::Input | Op::Constant) {
            flags[pos] |= DEPENDS;
        }
        if flags[pos] & DEPENDS == 0 {
            source.operands(pos, &mut operands);
            if operands
                .iter()
                .any(|&(a, _)| a != CONST_ARG && flags[a as usize] & DEPENDS != 0)
            {
                flags[pos] |= DEPENDS;
            }
        }
    }
    let depends_on_inputs = |a: u32| a != CONST_ARG && flags[a as usize] & DEPENDS != 0;

    // A raw read of a value that depends on the inputs, made at any time before now, may
    // have decided a branch the replay cannot check.
    if let Some((_, location)) = source
        .reads()
        .into_iter()
        .find(|&(pos, _)| depends_on_inputs(pos))
    {
        return Err(Error::UncheckedRead { location });
    }

    // Every comparison made so far that can come out otherwise, wherever it stands
    // relative to the output: it may have chosen the output.
    let guards: Vec<Guard> = source
        .guards()
        .iter()
        .filter(|g| g.operands.iter().any(|&a| depends_on_inputs(a)))
        .copied()
        .collect();

    // Keep the output, the guards' operands and the inputs, and what they depend on.
    flags[root] |= KEEP;
    for g in &guards {
        for &a in &g.operands {
            if a != CONST_ARG {
                flags[a as usize] |= KEEP;
            }
        }
    }
    for pos in (0..len).rev() {
        if flags[pos] & (KEEP | DEPENDS) == KEEP | DEPENDS {
            source.operands(pos, &mut operands);
            for &(a, _) in &operands {
                if a != CONST_ARG {
                    flags[a as usize] |= KEEP;
                }
            }
        }
    }

    // Which of them the output itself depends on (the others are kept for guards only):
    // second order needs the rules of those alone.
    const ANCESTOR: u8 = 8;
    flags[root] |= ANCESTOR;
    for pos in (0..=root).rev() {
        if flags[pos] & (ANCESTOR | DEPENDS) == ANCESTOR | DEPENDS {
            source.operands(pos, &mut operands);
            for &(a, _) in &operands {
                if a != CONST_ARG {
                    flags[a as usize] |= ANCESTOR;
                }
            }
        }
    }
    let (mut custom_ancestor, mut fused_ancestor) = (false, false);

    // Renumber the kept nodes densely, in tape order.
    let mut index = vec![u32::MAX; len];
    let mut n = 0u32;
    for (pos, &f) in flags.iter().enumerate() {
        if f & KEEP != 0 {
            index[pos] = n;
            n += 1;
        }
    }
    let sink = n;
    let mut ops = Vec::with_capacity(n as usize);
    let mut constant_operands = Vec::with_capacity(n as usize);
    let mut edge_start = Vec::with_capacity(n as usize + 1);
    let mut args = Vec::with_capacity(2 * n as usize);
    let mut initial = Vec::with_capacity(n as usize + 1);
    let mut steps = Vec::with_capacity(n as usize);
    let mut constants = Vec::new();
    let mut customs: Vec<(u8, Arc<dyn CustomFn>)> = Vec::new();
    let mut fused = Vec::new();
    let constant_slot = |c: f64, constants: &mut Vec<f64>| {
        constants.push(c);
        sink + constants.len() as u32
    };
    edge_start.push(0u32);
    for (pos, &f) in flags.iter().enumerate() {
        if f & KEEP == 0 {
            continue;
        }
        let mut op = source.op(pos);
        initial.push(source.value(pos));
        let leaf = matches!(op, Op::Input | Op::Constant) || f & DEPENDS == 0;
        let mut flags = 0;
        if leaf {
            ops.push(if op == Op::Input {
                Op::Input
            } else {
                Op::Constant
            });
        } else {
            custom_ancestor |= matches!(op, Op::Custom(_)) && f & ANCESTOR != 0;
            fused_ancestor |= op == Op::Fused && f & ANCESTOR != 0;
            match op {
                Op::Custom(k) => {
                    // Renumbered among the replay's own functions.
                    let at = match customs.iter().position(|&(c, _)| c == k) {
                        Some(at) => at,
                        None => {
                            customs.push((k, source.custom(k)));
                            customs.len() - 1
                        }
                    };
                    op = Op::Custom(at as u8);
                }
                Op::Fused => {
                    let sub = source.fused(pos).map_err(|e| match e {
                        Error::UncheckedRead { .. } | Error::BadOperands { .. } => e,
                        e => Error::BadOperands {
                            op: "Replay",
                            why: format!("a fused node cannot be replayed: {e}"),
                        },
                    })?;
                    fused.push((ops.len() as u32, sub));
                }
                _ => {}
            }
            let first = args.len();
            source.operands(pos, &mut operands);
            for (k, &(a, c)) in operands.iter().enumerate() {
                if a == CONST_ARG {
                    flags |= ANY_CONST | if k == 0 { FIRST_CONST } else { SECOND_CONST };
                    args.push(constant_slot(c, &mut constants));
                } else {
                    args.push(index[a as usize]);
                }
            }
            let operand = |k: usize| args.get(first + k).copied().unwrap_or(0);
            steps.push(Instr {
                step: step(op, flags),
                node: ops.len() as u32,
                edge: first as u32,
                operands: [operand(0), operand(1)],
            });
            ops.push(op);
        }
        constant_operands.push(flags);
        edge_start.push(args.len() as u32);
    }
    let guards = guards
        .iter()
        .map(|g| ReplayGuard {
            comparison: g.comparison,
            operands: [0, 1].map(|k| match g.operands[k] {
                CONST_ARG => constant_slot(g.constants[k], &mut constants),
                a => index[a as usize],
            }),
            outcome: g.outcome,
            location: g.location,
        })
        .collect();
    initial.push(0.0);
    initial.extend_from_slice(&constants);
    Ok(Replay {
        steps,
        id: NEXT_REPLAY_ID.fetch_add(1, Ordering::Relaxed),
        ops,
        constant_operands,
        edge_start,
        args,
        initial,
        inputs: input_pos.iter().map(|&p| index[p]).collect(),
        output: index[root],
        guards,
        customs: customs.into_iter().map(|(_, f)| f).collect(),
        fused,
        custom_ancestor,
        fused_ancestor,
    })
}

// ---------------------------------------------------------------------------------------
// Steps: each op's value and partials, compiled once per op
// ---------------------------------------------------------------------------------------

/// Evaluates one unary or binary node: reads its operands' values, writes its value and
/// partials. One function per op (and per pattern of constant operands), in which the op is
/// a compile-time constant, so that the op table's `match`es fold away and a node costs one
/// indirect call.
type Step = fn(instr: &Instr, values: &mut [f64], partials: &mut [f64]);

/// A node to evaluate: its step (`None` for an n-ary node), its position, its first edge,
/// and (for a unary or binary node) its operands.
#[derive(Clone, Copy, Debug)]
struct Instr {
    step: Option<Step>,
    node: u32,
    edge: u32,
    operands: [u32; 2],
}

/// The most ops of one arity the step tables hold (a compile-time check below).
const MAX_OPS: usize = 64;
const _: () = assert!(Unary::ALL.len() <= MAX_OPS && Binary::ALL.len() <= MAX_OPS);

fn unary_step<const K: usize>(instr: &Instr, values: &mut [f64], partials: &mut [f64]) {
    let Some(&op) = Unary::ALL.get(K) else {
        unreachable!("no unary op {K}")
    };
    let x = values[instr.operands[0] as usize];
    let y = op.value(x);
    partials[instr.edge as usize] = op.partial(x, y);
    values[instr.node as usize] = y;
}

/// A binary op; `CONST` has [`FIRST_CONST`] / [`SECOND_CONST`] set for constant operands,
/// whose partials are not needed.
fn binary_step<const K: usize, const CONST: u8>(
    instr: &Instr,
    values: &mut [f64],
    partials: &mut [f64],
) {
    let Some(&op) = Binary::ALL.get(K) else {
        unreachable!("no binary op {K}")
    };
    let [a, b] = instr.operands.map(|a| values[a as usize]);
    let y = op.value(a, b);
    let edge = instr.edge as usize;
    if CONST & FIRST_CONST == 0 {
        partials[edge] = op.partial(a, b, y, 0);
    }
    if CONST & SECOND_CONST == 0 {
        partials[edge + 1] = op.partial(a, b, y, 1);
    }
    values[instr.node as usize] = y;
}

/// [`Nary::Dot`] over tracked operands: its value and partials (`b` then `a`), read in
/// place; the same numbers as [`Nary::value`] and [`Nary::partials_f64`].
fn dot_in_place(values: &[f64], args: &[u32], partials: &mut [f64]) -> f64 {
    let half = args.len() / 2;
    let (a, b) = args.split_at(half);
    let (pa, pb) = partials.split_at_mut(half);
    for ((pa, pb), (&a, &b)) in pa.iter_mut().zip(pb).zip(a.iter().zip(b)) {
        *pa = values[b as usize];
        *pb = values[a as usize];
    }
    a.iter()
        .zip(b)
        .map(|(&a, &b)| values[a as usize] * values[b as usize])
        .sum()
}

/// `[f::<0>, .., f::<63>]`, or `[f::<0, C>, .., f::<63, C>]`.
macro_rules! step_table {
    (@ [$f:ident] $($k:literal)*) => {
        [$($f::<$k> as Step),*]
    };
    (@ [$f:ident, $extra:expr] $($k:literal)*) => {
        [$($f::<$k, { $extra }> as Step),*]
    };
    ($($args:tt)*) => {
        step_table!(@ [$($args)*] 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23
            24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51
            52 53 54 55 56 57 58 59 60 61 62 63)
    };
}

static UNARY_STEPS: [Step; MAX_OPS] = step_table!(unary_step);
static BINARY_STEPS: [[Step; MAX_OPS]; 4] = [
    step_table!(binary_step, 0),
    step_table!(binary_step, FIRST_CONST),
    step_table!(binary_step, SECOND_CONST),
    step_table!(binary_step, FIRST_CONST | SECOND_CONST),
];

/// The step of an op node whose constant operands are flagged in `constant`.
fn step(op: Op, constant: u8) -> Option<Step> {
    match op {
        Op::Input | Op::Constant => None,
        Op::Unary(op) => Some(UNARY_STEPS[op as usize]),
        Op::Binary(op) => {
            let k = Binary::ALL.iter().position(|&b| b == op);
            Some(BINARY_STEPS[(constant & 3) as usize][k.expect("every op is in the table")])
        }
        Op::Nary(_) => None,
        // Refused by `Replay::try_new`.
        Op::Custom(_) | Op::Fused => None,
    }
}

// A replay is shared between threads by reference.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Replay>();
    send_sync::<ReplayWorkspace>();
};

// ---------------------------------------------------------------------------------------
// Guards: comparisons that a replay re-checks
// ---------------------------------------------------------------------------------------

/// The comparisons, each recorded as a guard.
macro_rules! guard_methods {
    ($($(#[$doc:meta])* $method:ident => $cmp:ident, ($x:expr, $y:expr, $want:expr);)*) => {
        impl<'g> Var<'g> {
            $(
                $(#[$doc])*
                ///
                /// Compares the values (as `f64` does: false with a NaN, but for `!=`) and
                /// records the comparison and its outcome as a guard: a [`Replay`] built
                /// after it (whatever the position of its output, before or after this
                /// comparison) checks it at its new inputs, and returns
                /// [`Error::BranchChanged`] if it comes out otherwise. Branch on this, not
                /// on [`Var::value`], in code meant for replay.
                ///
                /// # Examples
                ///
                /// ```
                /// let g = tapegrad::Graph::new();
                #[doc = concat!("let x = g.var(", stringify!($x), ");")]
                #[doc = concat!("assert_eq!(x.", stringify!($method), "(", stringify!($y), "), ", stringify!($want), ");")]
                /// ```
                ///
                /// # Panics
                ///
                /// If a handle is released or of another graph.
                #[track_caller]
                pub fn $method(self, other: impl Into<Operand<Var<'g>>>) -> bool {
                    self.compare(Comparison::$cmp, other.into(), Location::caller())
                }
            )*
        }
    };
}

comparisons!(guard_methods);

impl Var<'_> {
    fn compare(
        self,
        comparison: Comparison,
        rhs: Operand<Var<'_>>,
        location: &'static Location<'static>,
    ) -> bool {
        let graph = self.graph();
        let mut tape = graph.tape.borrow_mut();
        let a = or_panic(graph.resolve(&tape, self));
        let b = or_panic(graph.resolve(&tape, rhs));
        let outcome = comparison.holds(a.value, b.value);
        let at = tape.len() as u32;
        tape.guards.push(Guard {
            at,
            comparison,
            operands: [a.arg, b.arg],
            constants: [a.value, b.value],
            outcome,
            location,
        });
        outcome
    }
}
// ---------------------------------------------------------------------------------------
// The program, as a compiler reads it
// ---------------------------------------------------------------------------------------

impl Replay {
    /// A read-only view of the program this replay evaluates, for code that compiles it to
    /// something faster (the `tapegrad-jit` crate): its slots, each node's op and operands,
    /// its inputs, output and guards, and each node's evaluation exactly as
    /// [`Replay::eval`] performs it.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Binary, Graph, Op, Replay, Unary};
    ///
    /// let g = Graph::new();
    /// let x = g.var(2.0);
    /// let replay = Replay::new((x * 3.0).exp(), &[x]);
    /// let p = replay.program();
    /// assert_eq!(p.nodes(), 3);
    /// assert_eq!(p.inputs(), &[0]);
    /// assert_eq!(p.output(), 2);
    /// assert_eq!(p.op(1), Op::Binary(Binary::Mul));
    /// assert_eq!(p.op(2), Op::Unary(Unary::Exp));
    /// // x * 3: node 0 and a constant, in a slot past the nodes
    /// let [a, c] = p.operands(1) else { panic!() };
    /// assert_eq!((*a, p.slots()[*c as usize]), (0, 3.0));
    /// assert!(*c as usize > p.nodes());
    /// ```
    pub fn program(&self) -> ReplayProgram<'_> {
        ReplayProgram { replay: self }
    }
}

/// A [`Replay`]'s program, read-only, for code that compiles it (see [`Replay::program`]).
///
/// The program is a sequence of nodes in evaluation order, each a leaf (an input, or a
/// constant: a node that does not depend on the inputs keeps its recorded value) or an op
/// of the table applied to operands. Values live in *slots*: slots `0..nodes()` are the
/// nodes, and an operand slot greater than `nodes()` holds a constant operand, whose value
/// is in [`ReplayProgram::slots`] and never changes. An evaluation writes the inputs into
/// their slots, evaluates every non-leaf node in order ([`ReplayProgram::evaluate`]), then
/// checks the guards in order; the gradient is the reverse sweep over the nodes' partials
/// (`adjoint[operand] += adjoint[node] * partial`, edge by edge, from the output down).
///
/// # Examples
///
/// An interpreter in a few lines, giving [`Replay::eval`]'s value:
///
/// ```
/// use tapegrad::{Graph, Replay, ReplayWorkspace};
///
/// let g = Graph::new();
/// let x = g.vars(&[1.0, 2.0]);
/// let replay = Replay::new((x[0] * x[1]).sin() + x[1].exp(), &x);
/// let p = replay.program();
///
/// let at = [0.5, -1.5];
/// let mut values = p.slots().to_vec();
/// for (&slot, &v) in p.inputs().iter().zip(&at) {
///     values[slot as usize] = v;
/// }
/// for node in 0..p.nodes() {
///     let mut partials = vec![0.0; p.operands(node).len()];
///     p.evaluate(node, &mut values, &mut partials)?;
/// }
/// let value = replay.eval(&at, &mut ReplayWorkspace::new());
/// assert_eq!(value, Ok(values[p.output()]));
/// # Ok::<(), tapegrad::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ReplayProgram<'r> {
    replay: &'r Replay,
}

impl<'r> ReplayProgram<'r> {
    /// The number of nodes (as [`Replay::len`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// assert_eq!(tapegrad::Replay::new(x.exp(), &[x]).program().nodes(), 2);
    /// ```
    pub fn nodes(&self) -> usize {
        self.replay.ops.len()
    }

    /// Every slot's value before an evaluation writes its inputs: each node's recorded value
    /// (the leaves that are not inputs keep it), one unused slot (`nodes()`), then the
    /// constant operands.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// let replay = tapegrad::Replay::new(x + 0.25, &[x]);
    /// assert_eq!(replay.program().slots(), &[1.0, 1.25, 0.0, 0.25]);
    /// ```
    pub fn slots(&self) -> &'r [f64] {
        &self.replay.initial
    }

    /// Node `node`'s op. A leaf is [`Op::Input`] (a graph input, which keeps its recorded
    /// value unless it is one of [`ReplayProgram::inputs`]) or [`Op::Constant`] (a constant,
    /// or a node that does not depend on the inputs).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Binary, Graph, Op, Replay};
    ///
    /// let g = Graph::new();
    /// let (x, w) = (g.var(1.0), g.var(2.0));
    /// let replay = Replay::new(w.exp() * x + w, &[x]);
    /// let p = replay.program();
    /// // w is not an input of the replay, so w and exp(w) keep their recorded values
    /// assert_eq!((p.op(0), p.op(1), p.op(2)), (Op::Input, Op::Input, Op::Constant));
    /// assert_eq!(p.op(3), Op::Binary(Binary::Mul));
    /// assert_eq!(p.slots()[2], 2f64.exp());
    /// ```
    ///
    /// # Panics
    ///
    /// If `node >= nodes()`.
    pub fn op(&self, node: usize) -> Op {
        self.replay.ops[node]
    }

    /// Node `node`'s operands' slots, in the op's order (none for a leaf). A slot greater
    /// than `nodes()` is a constant (see [`ReplayProgram::slots`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.vars(&[1.0, 2.0]);
    /// let replay = tapegrad::Replay::new(g.dot(&x, &x), &x);
    /// assert_eq!(replay.program().operands(2), &[0, 1, 0, 1]);
    /// assert!(replay.program().operands(0).is_empty());
    /// ```
    ///
    /// # Panics
    ///
    /// If `node >= nodes()`.
    pub fn operands(&self, node: usize) -> &'r [u32] {
        let r = self.replay;
        &r.args[r.edge_start[node] as usize..r.edge_start[node + 1] as usize]
    }

    /// The slot of each input, in the order of the `x` every evaluation takes.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.vars(&[1.0, 2.0]);
    /// let replay = tapegrad::Replay::new(x[0] * x[1], &[x[1], x[0]]);
    /// assert_eq!(replay.program().inputs(), &[1, 0]);
    /// ```
    pub fn inputs(&self) -> &'r [u32] {
        &self.replay.inputs
    }

    /// The output's node: the value [`Replay::eval`] returns, where the sweep starts.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// assert_eq!(tapegrad::Replay::new(x, &[x]).program().output(), 0);
    /// ```
    pub fn output(&self) -> usize {
        self.replay.output as usize
    }

    /// Guard `k` (of [`Replay::guards`], in the order they are checked): its comparison
    /// (`"<"`, `"<="`, `">"`, `">="`, `"=="` or `"!="`, as `f64`'s operators compare), its
    /// operands' slots, and the outcome it had when recorded. An evaluation where it comes
    /// out otherwise fails with [`ReplayProgram::branch_changed`].
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// let y = if x.lt(0.5) { x } else { x * 2.0 };
    /// let replay = tapegrad::Replay::new(y, &[x]);
    /// let p = replay.program();
    /// let (comparison, [a, b], outcome) = p.guard(0);
    /// assert_eq!((comparison, a, outcome), ("<", 0, false));
    /// assert_eq!(p.slots()[b as usize], 0.5);
    /// ```
    ///
    /// # Panics
    ///
    /// If `k >= Replay::guards()`.
    pub fn guard(&self, k: usize) -> (&'static str, [u32; 2], bool) {
        let g = &self.replay.guards[k];
        (g.comparison.symbol(), g.operands, g.outcome)
    }

    /// The error an evaluation returns when guard `k` is the first to come out otherwise,
    /// its operands having `operands` as values: [`Error::BranchChanged`], as
    /// [`Replay::eval`] returns it.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Error, Graph, Replay, ReplayWorkspace};
    ///
    /// let g = Graph::new();
    /// let x = g.var(1.0);
    /// let y = if x.lt(0.5) { x } else { x * 2.0 };
    /// let replay = Replay::new(y, &[x]);
    /// let error = replay.program().branch_changed(0, [0.25, 0.5]);
    /// assert_eq!(replay.eval(&[0.25], &mut ReplayWorkspace::new()), Err(error));
    /// ```
    ///
    /// # Panics
    ///
    /// If `k >= Replay::guards()`.
    pub fn branch_changed(&self, k: usize, operands: [f64; 2]) -> Error {
        let g = &self.replay.guards[k];
        Error::BranchChanged(Box::new(BranchChanged {
            comparison: g.comparison.symbol(),
            recorded: g.outcome,
            operands,
            location: g.location,
        }))
    }

    /// Evaluates node `node` as every evaluation of the replay does, with the same
    /// operations in the same order: reads its operands' values from `values` (indexed by
    /// slot, laid out as [`ReplayProgram::slots`]), writes its value to `values[node]`,
    /// and its partial derivative with respect to each operand to `partials` (one per
    /// operand; a constant operand's may be left as it was). A leaf is left as it is. A
    /// compiler calls this for the nodes it does not compile itself, so that they give the
    /// replay's numbers bit for bit: n-ary ops, user-defined functions (their own
    /// [`CustomFn::value`] and [`CustomFn::partials`], checked) and fused nodes (their
    /// sub-computation's replay). Allocates for an n-ary node other than a dot, and for a
    /// user-defined function or a fused node.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Replay};
    ///
    /// let g = Graph::new();
    /// let x = g.var(1.0);
    /// let replay = Replay::new(x.ln(), &[x]);
    /// let p = replay.program();
    /// let mut values = p.slots().to_vec();
    /// values[0] = 4.0;
    /// let mut partial = [0.0];
    /// p.evaluate(1, &mut values, &mut partial)?;
    /// assert_eq!((values[1], partial[0]), (4f64.ln(), 0.25));
    /// # Ok::<(), tapegrad::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Replay::eval`] for such a node: [`Error::BadPartials`] for a user-defined
    /// function's malformed partials, [`Error::BranchChanged`] for a guard of a fused node's
    /// sub-computation.
    ///
    /// # Panics
    ///
    /// If `node >= nodes()`, if `values` is shorter than [`ReplayProgram::slots`], or if
    /// `partials` does not have one entry per operand.
    pub fn evaluate(
        &self,
        node: usize,
        values: &mut [f64],
        partials: &mut [f64],
    ) -> Result<(), Error> {
        let r = self.replay;
        let args = self.operands(node);
        assert_eq!(
            partials.len(),
            args.len(),
            "ReplayProgram::evaluate: one partial per operand"
        );
        assert!(
            values.len() >= r.initial.len(),
            "ReplayProgram::evaluate: one value per slot"
        );
        let Ok(k) = r.steps.binary_search_by_key(&(node as u32), |s| s.node) else {
            return Ok(()); // a leaf
        };
        let instr = r.steps[k];
        if let Some(step) = instr.step {
            step(&Instr { edge: 0, ..instr }, values, partials);
            return Ok(());
        }
        let buffers = (&mut Vec::new(), &mut Vec::new(), &mut [][..]);
        values[node] = r.evaluate_without_step(node, values, partials, buffers)?;
        Ok(())
    }
}
