//! The tape's storage: every node, struct-of-arrays, in recording order, and the recording
//! and release primitives the [`Graph`](super::Graph) API calls. Hot path: no allocation per
//! node beyond the arrays' amortised growth, no dispatch on the op while recording; it knows
//! nothing of `Graph` or `Var` (handles reach it through the [`Handle`] trait).
//!
//! Storage is struct-of-arrays, indexed by *tape position* (the order of recording):
//! `values[i]`, `ops[i]`, and node `i`'s edges `edge_start[i]..edge_start[i + 1]` into the
//! flat `args` (operand positions) and `weights` (the local partials, computed when the
//! node is recorded); `keys` holds every node's [`NodeKey`] (`keys.rs`). The reverse sweep
//! never touches the keys: it walks the flat arrays.
//!
//! An `f64` operand (as in `x * 2.0`) is stored as an edge whose `arg` is [`CONST_ARG`] and
//! whose weight slot holds the constant itself, so that the differentiable backward can
//! re-evaluate the op's rule with it. The plain sweep sends such edges to a sink slot.
//! A weight matrix's dot products are stored without edges, as a block (`blocks.rs`).

use std::borrow::Cow;
use std::panic::Location;

use super::blocks::DotBlock;
use super::error::{Anomaly, Error};
use super::guard::{Guard, ReadLog};
use super::keys::{Handle, Keys, NodeKey, Owner, carried};
use super::op::{Binary, Nary, Op, Unary};
use super::opcodes::OpCodes;

/// The `arg` of an edge whose operand is an untracked `f64` constant.
pub(in crate::engine) const CONST_ARG: u32 = u32::MAX;
/// Positions are `u32`, and `u32::MAX` is [`CONST_ARG`].
const MAX_NODES: usize = (u32::MAX - 1) as usize;

/// Below this many nodes and edges, [`Tape::finish`] needs no exact test of the limits.
pub(in crate::engine) const FAST_LIMIT: usize = 1 << 31;
const _: () = assert!(FAST_LIMIT <= MAX_NODES);

/// An operand as the tape sees it: its value, and its position (or [`CONST_ARG`]).
#[derive(Clone, Copy, Debug)]
pub(in crate::engine) struct Resolved {
    pub(in crate::engine) value: f64,
    pub(in crate::engine) arg: u32,
}

impl Resolved {
    pub(in crate::engine) fn constant(value: f64) -> Self {
        Resolved {
            value,
            arg: CONST_ARG,
        }
    }
}

/// A node just recorded: its position, its key and its value (what its handle carries).
#[derive(Clone, Copy, Debug)]
pub(in crate::engine) struct Recorded {
    pub(in crate::engine) pos: u32,
    pub(in crate::engine) key: NodeKey,
    pub(in crate::engine) value: f64,
}

/// Resolves `x` against `keys` and `values` (a tape's, borrowed apart), or explains why it
/// cannot: a handle of another graph, or one whose node was released.
#[inline(always)]
pub(in crate::engine) fn resolve(
    owner: Owner,
    keys: &Keys,
    values: &[f64],
    x: impl Handle,
) -> Result<Resolved, Error> {
    let pos = owner.position(keys, x)?;
    Ok(Resolved {
        value: carried(x, values, pos),
        arg: pos,
    })
}

/// `x`'s tape position, for the loops that resolve many operands at once; for a handle
/// that is released or of another graph, [`CONST_ARG`], and the error that the one-operand
/// path ([`resolve`]) reports for it is kept in `first_error` if none is yet (the caller
/// reports it after the loop, which stays tighter without an early exit).
#[inline(always)]
pub(in crate::engine) fn position_or_note<H: Handle>(
    owner: Owner,
    keys: &Keys,
    x: H,
    first_error: &mut Option<Error>,
) -> u32 {
    match owner.position(keys, x) {
        Ok(pos) => pos,
        Err(e) => {
            note_error(e, first_error);
            CONST_ARG
        }
    }
}

/// [`position_or_note`]'s rare case, out of line.
#[cold]
#[inline(never)]
fn note_error(e: Error, first_error: &mut Option<Error>) {
    if first_error.is_none() {
        *first_error = Some(e);
    }
}

/// The nodes, struct-of-arrays (see the module docs).
#[derive(Debug)]
pub(in crate::engine) struct Tape {
    pub(in crate::engine) keys: Keys,
    pub(in crate::engine) values: Vec<f64>,
    pub(in crate::engine) ops: OpCodes,
    /// `edge_start[i]..edge_start[i + 1]` are node `i`'s edges; always one longer than `values`.
    pub(in crate::engine) edge_start: Vec<u32>,
    pub(in crate::engine) args: Vec<u32>,
    pub(in crate::engine) weights: Vec<f64>,
    /// Counts releases, so a `Gradients` knows which positions were re-recorded after it.
    pub(in crate::engine) epoch: u64,
    /// `(epoch, mark)` of past releases, kept as a stack whose marks increase: the first
    /// entry after a given epoch holds the lowest mark released since then.
    pub(in crate::engine) releases: Vec<(u64, u32)>,
    pub(in crate::engine) anomaly: Option<Box<AnomalyLog>>,
    /// The value comparisons made through `Var`'s guard methods, in order.
    pub(in crate::engine) guards: Vec<Guard>,
    /// With replay checks on (the default): the raw value reads.
    pub(in crate::engine) reads: Option<ReadLog>,
    /// [`FAST_LIMIT`], or 0 in anomaly mode: [`Tape::finish`] records a node inline only
    /// while `pos | edges` is below it, so one comparison covers both the limits and the
    /// mode.
    pub(in crate::engine) fast_limit: usize,
    /// Operand values of the n-ary node being recorded (kept to avoid reallocating).
    pub(in crate::engine) scratch: Vec<f64>,
    /// The resolved operands of a matrix product ([`Tape::matrix_dots`]): positions and
    /// values of the matrix's entries, then of the vector's (kept to avoid reallocating).
    pub(in crate::engine) matrix_args: Vec<u32>,
    pub(in crate::engine) matrix_values: Vec<f64>,
    /// The blocks of dot products recorded without edges ([`DotBlock`]), in tape order,
    /// and the operand positions of their first factors.
    pub(in crate::engine) blocks: Vec<DotBlock>,
    pub(in crate::engine) block_args: Vec<u32>,
    /// The names of the graph's user-defined functions, by [`Op::Custom`] index (the
    /// functions themselves are on the `Graph`).
    pub(in crate::engine) custom_names: Vec<&'static str>,
}

/// What anomaly mode keeps: where each node was recorded, and every node recorded with a
/// non-finite value (position and that value, in tape order; a short list in practice).
#[derive(Debug, Default)]
pub(in crate::engine) struct AnomalyLog {
    pub(in crate::engine) locations: Vec<Option<&'static Location<'static>>>,
    pub(in crate::engine) anomalous: Vec<(u32, f64)>,
}

impl Tape {
    pub(in crate::engine) fn with_capacity(nodes: usize) -> Self {
        let mut edge_start = Vec::with_capacity(nodes + 1);
        edge_start.push(0);
        Tape {
            keys: Keys::with_capacity(nodes),
            values: Vec::with_capacity(nodes),
            ops: OpCodes::with_capacity(nodes),
            edge_start,
            args: Vec::with_capacity(nodes * 2),
            weights: Vec::with_capacity(nodes * 2),
            epoch: 0,
            releases: Vec::new(),
            anomaly: None,
            guards: Vec::new(),
            reads: Some(ReadLog::default()),
            fast_limit: FAST_LIMIT,
            scratch: Vec::new(),
            matrix_args: Vec::new(),
            matrix_values: Vec::new(),
            blocks: Vec::new(),
            block_args: Vec::new(),
            custom_names: Vec::new(),
        }
    }

    pub(in crate::engine) fn len(&self) -> usize {
        self.values.len()
    }

    /// A tape that holds no memory (and is not valid to record on: `edge_start` lacks its
    /// leading 0); what a dropped graph leaves behind after giving its tape away.
    pub(in crate::engine) fn hollow() -> Self {
        let mut tape = Tape::with_capacity(0);
        tape.edge_start = Vec::new();
        tape
    }

    /// Empties the tape for a new graph, keeping its arrays' memory.
    pub(in crate::engine) fn reset(&mut self) {
        self.keys.clear();
        self.values.clear();
        self.ops.clear();
        self.edge_start.clear();
        self.edge_start.push(0);
        self.args.clear();
        self.weights.clear();
        self.epoch = 0;
        self.releases.clear();
        self.anomaly = None;
        self.guards.clear();
        self.reads = Some(ReadLog::default());
        self.fast_limit = FAST_LIMIT;
        self.blocks.clear();
        self.block_args.clear();
        self.custom_names.clear();
    }

    /// The nodes the arrays have room for (the smallest of their capacities).
    pub(in crate::engine) fn capacity(&self) -> usize {
        self.values
            .capacity()
            .min(self.ops.capacity())
            .min(self.keys.capacity())
    }

    /// Node `pos`'s edges as `(args, weights)`: borrowed from the flat arrays, or for a
    /// node of a [`DotBlock`] (which stores none) made from the block, exactly the edges
    /// [`Nary::Dot`] would have stored.
    #[inline]
    pub(in crate::engine) fn edges(&self, pos: usize) -> (Cow<'_, [u32]>, Cow<'_, [f64]>) {
        if self.ops.is_block_dot(pos) {
            let (args, weights) = self.block_edges(pos);
            return (Cow::Owned(args), Cow::Owned(weights));
        }
        let range = self.edge_start[pos] as usize..self.edge_start[pos + 1] as usize;
        (
            Cow::Borrowed(&self.args[range.clone()]),
            Cow::Borrowed(&self.weights[range]),
        )
    }

    /// Node `pos`'s operand positions in operand order ([`CONST_ARG`] for a constant), as
    /// [`Tape::edges`] lists them but without building a block node's edges: for the
    /// passes that only follow the graph's structure.
    pub(in crate::engine) fn operand_positions(
        &self,
        pos: usize,
    ) -> impl Iterator<Item = u32> + '_ {
        let (a, b) = if self.ops.is_block_dot(pos) {
            self.block_of(pos).operands(pos, &self.block_args)
        } else {
            let range = self.edge_start[pos] as usize..self.edge_start[pos + 1] as usize;
            (&self.args[range], (0..0).step_by(1))
        };
        a.iter().copied().chain(b.map(|p| p as u32))
    }

    /// Whether a node recorded after the positions of `run` uses one of them as an
    /// operand.
    pub(in crate::engine) fn used_after(&self, run: std::ops::Range<usize>) -> bool {
        let later_edges = self.edge_start[run.end] as usize;
        let inside = |p: u32| run.contains(&(p as usize));
        self.args[later_edges..].iter().any(|&p| inside(p))
            || self
                .blocks
                .iter()
                .rev()
                .take_while(|b| b.first as usize >= run.end)
                .any(|b| {
                    let b_range = b.b_range();
                    (b_range.start < run.end && run.start < b_range.end)
                        || self.block_args[b.a_range()].iter().any(|&p| inside(p))
                })
    }

    /// The number of edges of every node: those stored, and those of the blocks.
    pub(in crate::engine) fn edge_count(&self) -> usize {
        self.args.len() + self.blocks.iter().map(DotBlock::edge_count).sum::<usize>()
    }

    /// Node `pos`'s operand values in operand order (constants included).
    pub(in crate::engine) fn operand_values(&self, pos: usize) -> Vec<f64> {
        self.operand_values_iter(pos).collect()
    }

    /// [`Tape::operand_values`] without collecting them.
    pub(in crate::engine) fn operand_values_iter(
        &self,
        pos: usize,
    ) -> impl Iterator<Item = f64> + '_ {
        let (args, weights) = self.edges(pos);
        (0..args.len()).map(move |k| {
            if args[k] == CONST_ARG {
                weights[k]
            } else {
                self.values[args[k] as usize]
            }
        })
    }

    /// Closes the node whose edges were just pushed: every op node goes on here (inputs
    /// made by [`Tape::inputs`] go on in bulk, and through [`Tape::finish_rare`] when it
    /// must check them).
    ///
    /// The common case is three pushes and a key; a full graph and anomaly mode go to
    /// [`Tape::finish_rare`], out of line, so that this inlines into every op.
    #[inline(always)]
    pub(in crate::engine) fn finish(
        &mut self,
        op: Op,
        value: f64,
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        let pos = self.values.len();
        // A conservative test, cheaper than the exact one: `pos | edges` is at least the
        // larger of the two, so this sends every graph near the limits (past 2^31 nodes or
        // edges) to `finish_rare`, which tests exactly and records the node if it fits.
        if (pos | self.args.len()) >= self.fast_limit {
            return self.finish_rare(op, value, location);
        }
        self.values.push(value);
        self.ops.push(op);
        self.edge_start.push(self.args.len() as u32);
        let pos = pos as u32;
        let key = self.keys.issue(pos);
        Ok(Recorded { pos, key, value })
    }

    /// [`Tape::finish`] when the graph is full (or near it) or anomaly mode is on.
    #[cold]
    #[inline(never)]
    fn finish_rare(
        &mut self,
        op: Op,
        value: f64,
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        let pos = self.values.len();
        if pos >= MAX_NODES || self.args.len() > u32::MAX as usize {
            let start = *self.edge_start.last().expect("edge_start is never empty") as usize;
            self.args.truncate(start);
            self.weights.truncate(start);
            return Err(Error::GraphFull);
        }
        self.values.push(value);
        self.ops.push(op);
        self.edge_start.push(self.args.len() as u32);
        let key = self.keys.issue(pos as u32);
        if self.anomaly.is_some() {
            self.note_for_anomaly(pos, location);
        }
        Ok(Recorded {
            pos: pos as u32,
            key,
            value,
        })
    }

    #[cold]
    fn note_for_anomaly(&mut self, pos: usize, location: &'static Location<'static>) {
        let value = self.values[pos];
        let log = self.anomaly.as_mut().expect("anomaly mode is on");
        log.locations.push(Some(location));
        if !value.is_finite() {
            log.anomalous.push((pos as u32, value));
        }
    }

    /// The forward anomaly of node `pos`, recorded with a non-finite value.
    pub(in crate::engine) fn anomaly_at(&self, pos: usize) -> Anomaly {
        let output = self
            .anomaly
            .as_ref()
            .and_then(|log| log.anomalous.iter().find(|&&(p, _)| p as usize == pos))
            .map_or(self.values[pos], |&(_, v)| v);
        Anomaly {
            op: self.op_name(pos),
            inputs: self.operand_values(pos),
            output,
            gradient: None,
            location: self.location(pos),
        }
    }

    pub(in crate::engine) fn op_name(&self, pos: usize) -> &'static str {
        match self.ops[pos] {
            Op::Input => "input",
            Op::Constant => "constant",
            Op::Unary(op) => op.name(),
            Op::Binary(op) => op.name(),
            Op::Nary(op) => op.name(),
            Op::Custom(k) => self.custom_names[usize::from(k)],
            Op::Fused => "fused",
        }
    }

    /// Where node `pos` was recorded, if anomaly mode was on then.
    pub(in crate::engine) fn location(&self, pos: usize) -> Option<&'static Location<'static>> {
        self.anomaly
            .as_ref()
            .and_then(|log| log.locations.get(pos).copied().flatten())
    }

    /// The first forward anomaly at or before `pos`, in tape order.
    pub(in crate::engine) fn anomaly_up_to(&self, pos: u32) -> Option<Anomaly> {
        let &(at, _) = self.anomaly.as_ref()?.anomalous.first()?;
        (at <= pos).then(|| self.anomaly_at(at as usize))
    }

    /// In anomaly mode, attributes the nodes from position `start` on, which tapegrad
    /// recorded on the user's behalf (the differentiable backward), to the user's call at
    /// `location`.
    pub(in crate::engine) fn adopt_from(
        &mut self,
        start: usize,
        location: &'static Location<'static>,
    ) {
        if let Some(log) = self.anomaly.as_mut() {
            log.locations
                .iter_mut()
                .skip(start)
                .for_each(|l| *l = Some(location));
        }
    }

    /// Records one input node per value of `xs`; returns the first one's position.
    ///
    /// Inputs have no edges, so they go on in bulk: a model's thousands of parameters cost
    /// one capacity test per array, not one per parameter and array.
    pub(in crate::engine) fn inputs(
        &mut self,
        xs: &[f64],
        location: &'static Location<'static>,
    ) -> Result<u32, Error> {
        let first = self.values.len();
        if (first + xs.len()) | self.args.len() >= self.fast_limit {
            // Near the limits, or in anomaly mode (which checks each value): one at a time.
            for &x in xs {
                if let Err(e) = self.finish_rare(Op::Input, x, location) {
                    self.truncate(first);
                    return Err(e);
                }
            }
        } else {
            self.values.extend_from_slice(xs);
            self.ops.push_n(Op::Input, xs.len());
            let edges = self.args.len() as u32;
            self.edge_start
                .resize(self.edge_start.len() + xs.len(), edges);
            self.keys.issue_run(first as u32, xs.len());
        }
        Ok(first as u32)
    }

    #[inline]
    pub(in crate::engine) fn leaf(
        &mut self,
        op: Op,
        value: f64,
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        self.finish(op, value, location)
    }

    /// Records `op(x)`; `x` is a tracked operand.
    #[inline(always)]
    pub(in crate::engine) fn unary(
        &mut self,
        op: Unary,
        x: Resolved,
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        let y = op.value(x.value);
        self.args.push(x.arg);
        self.weights.push(op.partial(x.value, y));
        self.finish(Op::Unary(op), y, location)
    }

    /// Records `op(a, b)`.
    #[inline(always)]
    pub(in crate::engine) fn binary(
        &mut self,
        op: Binary,
        a: Resolved,
        b: Resolved,
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        let (a_const, b_const) = (a.arg == CONST_ARG, b.arg == CONST_ARG);
        self.binary_of_kinds(op, (a, a_const), (b, b_const), location)
    }

    /// [`Tape::binary`] with each operand's kind (constant or not) given, so that the
    /// operators, which know it at compile time, record without testing it.
    #[inline(always)]
    pub(in crate::engine) fn binary_of_kinds(
        &mut self,
        op: Binary,
        (a, a_const): (Resolved, bool),
        (b, b_const): (Resolved, bool),
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        let y = op.value(a.value, b.value);
        let weight = |x: Resolved, is_const: bool, operand: usize| {
            debug_assert_eq!(is_const, x.arg == CONST_ARG);
            if is_const {
                x.value
            } else {
                op.partial(a.value, b.value, y, operand)
            }
        };
        // Both edges at once: one capacity test per array instead of two.
        self.args.extend_from_slice(&[a.arg, b.arg]);
        self.weights
            .extend_from_slice(&[weight(a, a_const, 0), weight(b, b_const, 1)]);
        self.finish(Op::Binary(op), y, location)
    }

    /// Records an n-ary node over `operands`, each turned into a [`Resolved`] by `resolve`
    /// (which may fail, e.g. on a released handle, in which case nothing is recorded).
    pub(in crate::engine) fn nary<X>(
        &mut self,
        op: Nary,
        operands: impl IntoIterator<Item = X>,
        resolve: impl Fn(&Keys, &[f64], X) -> Result<Resolved, Error>,
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        let start = self.args.len();
        let mut values = std::mem::take(&mut self.scratch);
        values.clear();
        let operands = operands.into_iter();
        let expected = operands.size_hint().0;
        self.args.reserve(expected);
        self.weights.reserve(expected);
        values.reserve(expected);
        for x in operands {
            match resolve(&self.keys, &self.values, x) {
                Ok(x) => {
                    self.args.push(x.arg);
                    values.push(x.value);
                }
                Err(e) => {
                    self.args.truncate(start);
                    self.scratch = values;
                    return Err(e);
                }
            }
        }
        // Checked after the loop, which stays tighter without the flag.
        let has_constants = self.args[start..].contains(&CONST_ARG);
        self.finish_nary(op, start, values, has_constants, location)
    }

    /// [`Tape::nary`] over slices of `graph`'s `Var`s, which are never constants: the path
    /// of the fused ops on `Var` slices ([`Scalar`](crate::Scalar)'s `dot`, `sum` and
    /// `logsumexp`, which the transformer's matrix products are made of). Each slice is
    /// resolved by one `extend` over it, so an operand costs its slot lookup and two
    /// stores, without the operand enum, the chained iterator and the capacity check per
    /// push of the general path (those were about half of the transformer's recording).
    /// A bad handle is remembered and reported after the loop, the first in operand order.
    pub(in crate::engine) fn nary_vars<H: Handle>(
        &mut self,
        owner: Owner,
        op: Nary,
        parts: &[&[H]],
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        let start = self.args.len();
        let mut first_error = None;
        for part in parts {
            let keys = &self.keys;
            self.args.extend(
                part.iter()
                    .map(|&x| position_or_note(owner, keys, x, &mut first_error)),
            );
        }
        if let Some(e) = first_error {
            self.args.truncate(start);
            return Err(e);
        }
        let mut values = std::mem::take(&mut self.scratch);
        values.clear();
        // A slice, not `self.values[..]` in the loop: the compiler would reload the
        // vector's pointer and length at every operand, as the writes to `values` might
        // change them for all it knows.
        let node_values = self.values.as_slice();
        values.extend(
            self.args[start..]
                .iter()
                .map(|&pos| node_values[pos as usize]),
        );
        self.finish_nary(op, start, values, false, location)
    }

    /// [`Tape::nary`] over the keys of this tape's nodes (checked to be this graph's): each
    /// resolved to its position, or [`Error::Released`].
    pub(in crate::engine) fn nary_keys(
        &mut self,
        op: Nary,
        keys: &[NodeKey],
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        let start = self.args.len();
        let mut released = false;
        let map = &self.keys;
        self.args.extend(keys.iter().map(|&key| {
            map.position(key).unwrap_or_else(|| {
                released = true;
                CONST_ARG
            })
        }));
        if released {
            self.args.truncate(start);
            return Err(Error::Released);
        }
        let mut values = std::mem::take(&mut self.scratch);
        values.clear();
        let node_values = self.values.as_slice();
        values.extend(
            self.args[start..]
                .iter()
                .map(|&pos| node_values[pos as usize]),
        );
        self.finish_nary(op, start, values, false, location)
    }

    /// Records the n-ary node whose operand positions are `args[start..]` and whose operand
    /// values are `values` (the scratch buffer, given back here).
    fn finish_nary(
        &mut self,
        op: Nary,
        start: usize,
        values: Vec<f64>,
        has_constants: bool,
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        let y = op.value_and_partials_f64(&values, &mut self.weights);
        if has_constants {
            // A constant operand's weight slot holds the constant itself (see the module docs).
            for (k, &x) in values.iter().enumerate() {
                if self.args[start + k] == CONST_ARG {
                    self.weights[start + k] = x;
                }
            }
        }
        self.scratch = values;
        self.finish(Op::Nary(op), y, location)
    }

    /// Records a node whose value and partials `eval` computes from its operands' values:
    /// a user-defined function or a fused sub-computation. `eval` gets the values and the
    /// node's weight slots (one per operand, zeroed) and returns the value. The operands
    /// are all tracked (no constants).
    pub(in crate::engine) fn computed(
        &mut self,
        op: Op,
        operands: &[Resolved],
        eval: impl FnOnce(&[f64], &mut [f64]) -> f64,
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        debug_assert!(operands.iter().all(|x| x.arg != CONST_ARG));
        let start = self.weights.len();
        let mut values = std::mem::take(&mut self.scratch);
        values.clear();
        values.extend(operands.iter().map(|x| x.value));
        self.args.extend(operands.iter().map(|x| x.arg));
        self.weights.resize(start + operands.len(), 0.0);
        let y = eval(&values, &mut self.weights[start..]);
        self.scratch = values;
        self.finish(op, y, location)
    }

    /// Frees every node at position `len` and above, and their keys, in time proportional
    /// to what it frees, whatever the graph held before.
    pub(in crate::engine) fn truncate(&mut self, len: usize) {
        let cut = self.cut_block_row(len);
        let edges = self.edge_start[len] as usize;
        self.values.truncate(len);
        self.ops.truncate(len);
        self.edge_start.truncate(len + 1);
        self.args.truncate(edges);
        self.weights.truncate(edges);
        self.keys.release_from(len);
        self.drop_blocks_from(len, cut);
        debug_assert!(self.blocks.last().is_none_or(|b| b.end() <= len));
        while self.guards.last().is_some_and(|g| g.at as usize > len) {
            self.guards.pop();
        }
        if let Some(reads) = &mut self.reads {
            reads.truncate(len);
        }
        if let Some(log) = &mut self.anomaly {
            log.locations.truncate(len);
            let kept = log
                .anomalous
                .partition_point(|&(at, _)| (at as usize) < len);
            log.anomalous.truncate(kept);
        }
        self.epoch += 1;
        let mark = len as u32;
        while self.releases.last().is_some_and(|&(_, m)| m >= mark) {
            self.releases.pop();
        }
        self.releases.push((self.epoch, mark));
    }

    /// The lowest position released (and so possibly re-recorded) since `epoch`.
    pub(in crate::engine) fn released_since(&self, epoch: u64) -> u32 {
        let first_after = self.releases.partition_point(|&(e, _)| e <= epoch);
        self.releases
            .get(first_after)
            .map_or(u32::MAX, |&(_, mark)| mark)
    }
}
