//! Reverse mode: the plain sweep that fills [`Gradients`]. (The differentiable sweep,
//! [`Var::grad`], is in `differentiable.rs`.) Hot path: one multiply-add loop over the tape's
//! arrays; no allocation per node, no handle lookups. Applies the one rule at singular
//! points (`chain.rs`) that every sweep applies; may not record nodes.
//!
//! Because a node can only refer to nodes recorded before it, tape order is a topological
//! order: one reverse pass over positions `root..=0`, no recursion, visits every consumer
//! of a node before the node itself, so each node's adjoint is complete when it is read.

use std::ops::Index;

use super::chain::{chain, chain_quotient, ordinary, rescue};
use super::error::{Anomaly, Error};
use super::graph::Var;
use super::keys::Handle;
use super::tape::{CONST_ARG, Tape, sweep_block};

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

/// The graph id of a store that holds no gradients (graph ids start at 1).
const EMPTY: u64 = 0;

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
    #[inline]
    pub fn wrt(&self, x: Var<'_>) -> f64 {
        super::error::or_panic(self.try_wrt(x))
    }

    /// `d output / d x`, or the error that prevents reading it.
    ///
    /// # Errors
    ///
    /// [`Error::Released`] if `x` was released; [`Error::ForeignHandle`] if `x` belongs to
    /// another graph than the one these gradients were computed on;
    /// [`Error::BadOperands`] if the store is empty (new, or its last fill failed).
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
    #[inline]
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
        let Some(first) = xs.first() else {
            return Vec::new();
        };
        // One borrow of the tape for all the reads (`position_in` checks each handle's
        // graph, so a handle of another graph is still reported, not misread).
        let graph = first.graph();
        let tape = graph.tape.borrow();
        let read = |x: Var<'_>| match self.position_in(&tape, x) {
            Ok(pos) => pos.map_or(0.0, |p| self.adjoints[p]),
            Err(e) => super::error::fail(e),
        };
        if graph.id() != self.graph || tape.epoch != self.epoch {
            return xs.iter().map(|&x| read(x)).collect();
        }
        // The usual case, these gradients' own graph with no release since. Handles bound
        // together (a slice of an `Inputs`: one lookup; or any run issued together since
        // the last release, `Graph::vars`: one pass) are read as one slice; any others
        // each read their adjoint (0 above the output) after their check.
        let run = graph.runs.borrow().find(&tape.keys, xs);
        if let Some(first) = run.or_else(|| graph.owner().run(&tape.keys, xs)) {
            // Those at or below the root read their adjoints, the rest 0.
            let first = first as usize;
            let at_or_below_root = (self.root as usize + 1).saturating_sub(first);
            let read = at_or_below_root.min(xs.len());
            let mut values = match read {
                0 => Vec::with_capacity(xs.len()),
                _ => self.adjoints[first..first + read].to_vec(),
            };
            values.resize(xs.len(), 0.0);
            return values;
        }
        xs.iter()
            .map(|&x| {
                if std::ptr::eq(x.graph(), graph)
                    && let Some(pos) = tape.keys.validate(x.key(), x.pos(), x.epoch())
                {
                    return if pos <= self.root {
                        self.adjoints[pos as usize]
                    } else {
                        0.0
                    };
                }
                read(x)
            })
            .collect()
    }

    /// Where `x`'s gradient is stored, or `None` if it is 0 because `x` was recorded after
    /// the output (or after a release that followed this backward).
    #[inline(always)]
    fn position(&self, x: Var<'_>) -> Result<Option<usize>, Error> {
        self.position_in(&x.graph().tape.borrow(), x)
    }

    /// [`Gradients::position`] with the tape already borrowed (once for many reads).
    #[inline(always)]
    fn position_in(&self, tape: &Tape, x: Var<'_>) -> Result<Option<usize>, Error> {
        let graph = x.graph();
        if graph.id() != self.graph {
            return Err(self.not_from_this_graph(graph.id()));
        }
        // The key lookup of `Graph::resolve` without reading the value (this is on the
        // path of every gradient read).
        let pos = tape
            .keys
            .validate(x.key(), x.pos(), x.epoch())
            .ok_or(Error::Released)?;
        // With no release since the backward (the usual case) nothing was re-recorded.
        let valid = pos <= self.root && (tape.epoch == self.epoch || self.survived(tape, pos));
        Ok(valid.then_some(pos as usize))
    }

    /// Whether position `pos` still holds the node it held at the backward, after releases.
    #[cold]
    #[inline(never)]
    fn survived(&self, tape: &Tape, pos: u32) -> bool {
        pos < tape.released_since(self.epoch)
    }

    /// The error for a handle of graph `owner`, which is not the one these gradients
    /// were computed on (or the store is empty).
    #[cold]
    fn not_from_this_graph(&self, owner: u64) -> Error {
        if self.graph == EMPTY {
            return Error::BadOperands {
                op: "Gradients",
                why: "this store holds no gradients: fill it with Var::backward_into \
                      (a failed backward leaves it empty)"
                    .into(),
            };
        }
        Error::ForeignHandle {
            what: "Var",
            owner,
            used_with: self.graph,
        }
    }
}

impl Index<Var<'_>> for Gradients {
    type Output = f64;

    /// `grads[x]` is [`Gradients::wrt`]: it panics on a released or foreign handle.
    #[track_caller]
    #[inline(always)]
    fn index(&self, x: Var<'_>) -> &f64 {
        match self.position(x) {
            Ok(Some(pos)) => &self.adjoints[pos],
            Ok(None) => &ZERO,
            Err(e) => super::error::fail(e),
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
        super::error::or_panic(self.try_backward())
    }

    /// [`Var::backward`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::Released`] if `self` was released; in anomaly mode, when `self`'s value
    /// or a gradient is NaN or infinite, [`Error::Anomaly`] for the first op in tape order
    /// that `self` depends on whose value was NaN or infinite, or else the op whose
    /// backward produced a NaN or infinite gradient (see
    /// [`Graph::set_anomaly_mode`](crate::Graph::set_anomaly_mode)).
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
        super::error::or_panic(self.try_backward_into(grads))
    }

    /// [`Var::backward_into`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// As [`Var::try_backward`]. On error the store is left empty (reading it is an
    /// error), never holding the previous output's gradients.
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
        let result = graph.resolve(&tape, self).and_then(|root| {
            let root = root.arg;
            grads.graph = graph.id();
            grads.root = root;
            grads.epoch = tape.epoch;
            if tape.anomaly.is_some() {
                let root = root as usize;
                let non_finite = sweep_careful(&tape, root, &mut grads.adjoints, true);
                return match anomaly_report(&tape, root, non_finite) {
                    Some(a) => Err(Error::Anomaly(Box::new(a))),
                    None => Ok(()),
                };
            }
            sweep(&tape, root as usize, &mut grads.adjoints);
            Ok(())
        });
        // A failed fill must not leave the previous output's numbers (or a half-finished
        // sweep's) readable as this output's: it empties the store, keeping its memory.
        if result.is_err() {
            grads.graph = EMPTY;
            grads.adjoints.clear();
        }
        result
    }
}

/// The reverse sweep: `adjoint[arg] += adjoint[node] * partial` over every edge, from the
/// root down, by the rule of [`chain`] (and [`rescue`] for overflowed partials).
///
/// The fast loop multiplies and adds without looking at the partials, which gives exactly
/// the rule's numbers as long as every adjoint it meets is finite (a finite adjoint times a
/// zero partial is a ±0 that changes no sum). An overflowed or infinite partial makes some
/// adjoint below it non-finite; at the first non-finite adjoint the fast loop stops and the
/// careful one, which applies the rule edge by edge, starts again from the root. Ordinary
/// sweeps pay one test per node for this.
fn sweep(tape: &Tape, root: usize, adjoints: &mut Vec<f64>) {
    if !sweep_fast(tape, root, adjoints) {
        sweep_careful(tape, root, adjoints, false);
    }
}

/// [`sweep`]'s fast loop; `false` if it met a non-finite adjoint (and stopped there).
fn sweep_fast(tape: &Tape, root: usize, adjoints: &mut Vec<f64>) -> bool {
    adjoints.clear();
    adjoints.resize(root + 2, 0.0);
    adjoints[root] = 1.0;
    let adjoints = adjoints.as_mut_slice();
    let sink = adjoints.len() - 1;
    let mut nodes = Nodes {
        edge_start: &tape.edge_start()[..=sink],
        args: tape.args(),
        weights: tape.weights(),
        end: tape.edge_start()[sink] as usize,
    };
    // The dot blocks at or below the root, from the top down, each walked as a unit
    // between the runs of ordinary nodes above and below it (its nodes store no edges, so
    // the ordinary nodes' edge offsets run on across it unchanged).
    let below_root = tape.blocks.partition_point(|b| b.first as usize <= root);
    let mut scratch = Vec::new();
    let mut high = sink;
    for block in tape.blocks[..below_root].iter().rev() {
        let top = (block.end() - 1).min(root);
        if !nodes.sweep(adjoints, top + 1..high)
            || !sweep_block(tape, block, top, adjoints, &mut scratch)
        {
            return false;
        }
        high = block.first as usize;
    }
    nodes.sweep(adjoints, 0..high)
}

/// The ordinary nodes' edges, for [`sweep_fast`]: `end` is where the edges of the node
/// above the next one to sweep begin.
struct Nodes<'t> {
    edge_start: &'t [u32],
    args: &'t [u32],
    weights: &'t [f64],
    end: usize,
}

impl Nodes<'_> {
    /// The sweep over the nodes of `range` (none of a block), from the top; `false` at a
    /// non-finite adjoint. `adjoints` ends with the sink.
    #[inline(always)]
    fn sweep(&mut self, adjoints: &mut [f64], range: std::ops::Range<usize>) -> bool {
        // Written so that the compiler can drop most bounds checks: the sink is the last
        // slot, so an operand clamped to it is always inside `adjoints`; a node's edges end
        // where the next node's begin, so each node reads one offset and checks one range.
        let sink = adjoints.len() - 1;
        let mut end = self.end;
        // Cut to the edges below the top once, so that each node's reads check only that
        // its edges start before they end.
        let (args, weights) = (&self.args[..end], &self.weights[..end]);
        let edge_start = &self.edge_start[..range.end];
        // The last adjoint written, and where: when the next node is that operand (a chain
        // of ops, each on the one before), its adjoint is taken from the register instead
        // of being read back from memory just after it was stored, which would put a
        // store-to-load forward on the path from each node to the next. Always equal to
        // `adjoints[cached.0]`: every write below sets it or clears it.
        let mut cached = (usize::MAX, 0.0);
        for node in range.rev() {
            let start = edge_start[node] as usize;
            let adjoint = if node == cached.0 {
                cached.1
            } else {
                adjoints[node]
            };
            // Inputs (no edges, often most of the nodes: a model's parameters) cost one
            // test and a finiteness test; nearly every other node has one or two edges,
            // which get straight-line code, without the zipped loop's setup and exit tests.
            if start != end && ordinary(adjoint) {
                match (&args[start..end], &weights[start..end]) {
                    (&[a], &[w]) => {
                        let a = (a as usize).min(sink);
                        let sum = adjoints[a] + adjoint * w;
                        adjoints[a] = sum;
                        cached = (a, sum);
                    }
                    (&[a0, a1], &[w0, w1]) => {
                        let (a0, a1) = ((a0 as usize).min(sink), (a1 as usize).min(sink));
                        let sum0 = adjoints[a0] + adjoint * w0;
                        adjoints[a0] = sum0;
                        let sum1 = adjoints[a1] + adjoint * w1;
                        adjoints[a1] = sum1;
                        // The first operand if it is the next node (`x * c` on the node
                        // before, whose constant's edge goes to the sink), else the second;
                        // with `a0 == a1` the second sum is the slot's.
                        cached = if a0 + 1 == node && a0 != a1 {
                            (a0, sum0)
                        } else {
                            (a1, sum1)
                        };
                    }
                    (args, weights) => {
                        for (&arg, &partial) in args.iter().zip(weights) {
                            adjoints[(arg as usize).min(sink)] += adjoint * partial;
                        }
                        cached.0 = usize::MAX;
                    }
                }
            } else if !adjoint.is_finite() {
                self.end = start;
                return false;
            }
            end = start;
        }
        self.end = end;
        true
    }
}

/// A non-finite adjoint sum met by [`sweep_careful`] in checking mode: the node whose
/// edge produced it, and the sum.
struct NonFinite {
    node: usize,
    sum: f64,
}

/// The reverse sweep edge by edge, by the rule of [`chain`] and [`rescue`]. With `check`
/// (anomaly mode), it also returns the first edge, in sweep order, that made an operand's
/// adjoint non-finite.
#[cold]
fn sweep_careful(
    tape: &Tape,
    root: usize,
    adjoints: &mut Vec<f64>,
    check: bool,
) -> Option<NonFinite> {
    adjoints.clear();
    adjoints.resize(root + 2, 0.0);
    adjoints[root] = 1.0;
    let mut first = None;
    let mut operands = Vec::new();
    for node in (0..=root).rev() {
        let adjoint = adjoints[node];
        if adjoint == 0.0 {
            continue;
        }
        let (args, weights) = tape.edges(node);
        for (k, (&arg, &partial)) in args.iter().zip(weights.iter()).enumerate() {
            if arg == CONST_ARG {
                continue;
            }
            let rescued = if partial.is_infinite() {
                operands.clear();
                operands.extend(tape.operand_values_iter(node));
                rescue(tape.op(node), &operands, tape.values()[node], k, partial)
            } else {
                None
            };
            let contribution = match rescued {
                Some(quotient) => chain_quotient(adjoint, quotient),
                None => chain(adjoint, partial),
            };
            if let Some(c) = contribution {
                let sum = adjoints[arg as usize] + c;
                if check && first.is_none() && !sum.is_finite() {
                    first = Some(NonFinite { node, sum });
                }
                adjoints[arg as usize] = sum;
            }
        }
    }
    first
}

/// In anomaly mode, the report for the backward from `root` (after [`sweep_careful`] has
/// filled `adjoints` and found `non_finite`), or `None` if there is nothing to report.
///
/// Only nodes that `root` depends on are considered, and only when something went wrong
/// that the user will see: `root`'s value, or a gradient, is not finite. A NaN or infinity
/// that reaches neither (an unused `ln(0)`, or an attention mask of `-inf` whose softmax
/// weight is 0) is not reported. What is reported is the first node in tape order, among
/// those `root` depends on, that was recorded in anomaly mode with a non-finite value; if
/// there is none, the edge whose backward made a gradient non-finite.
#[cold]
fn anomaly_report(tape: &Tape, root: usize, non_finite: Option<NonFinite>) -> Option<Anomaly> {
    if tape.values()[root].is_finite() && non_finite.is_none() {
        return None;
    }
    let log = tape.anomaly.as_ref()?;
    // The nodes root depends on.
    let mut used = vec![false; root + 1];
    used[root] = true;
    for node in (0..=root).rev() {
        if used[node] {
            for arg in tape.operand_positions(node) {
                if arg != CONST_ARG {
                    used[arg as usize] = true;
                }
            }
        }
    }
    let forward = log
        .anomalous
        .iter()
        .map(|&(pos, _)| pos as usize)
        .find(|&pos| pos <= root && used[pos]);
    if let Some(pos) = forward {
        return Some(tape.anomaly_at(pos));
    }
    let NonFinite { node, sum } = non_finite?;
    Some(Anomaly {
        op: tape.op_name(node),
        inputs: tape.operand_values(node),
        output: tape.values()[node],
        // The operand's adjoint with this contribution added: the non-finite number (the
        // contribution alone can be finite, as 1.8e308 is).
        gradient: Some(sum),
        location: tape.location(node),
    })
}
