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
//! Every column is as long as its allocation and written by index; `len` and `edges` say
//! how much of it is recorded. So recording a node is one room check and one store per
//! column, and two counts updated, instead of a push's length and capacity per column: the
//! columns' lengths are not loaded and stored again by every node, which kept each
//! recording waiting on the one before it. The columns are private to this module (and the
//! dot blocks', its child): the rest of the engine reads them through slices cut to what is
//! recorded ([`Tape::values`], [`Tape::args`], ...).
//!
//! An `f64` operand (as in `x * 2.0`) is stored as an edge whose `arg` is [`CONST_ARG`] and
//! whose weight slot holds the constant itself, so that the differentiable backward can
//! re-evaluate the op's rule with it. The plain sweep sends such edges to a sink slot.
//! A weight matrix's dot products are stored without edges, as a block (`blocks.rs`).

mod blocks;

use std::borrow::Cow;
use std::panic::Location;

pub(in crate::engine) use blocks::{DotBlock, sweep_block};

use super::error::{Anomaly, Error};
use super::guard::{Guard, ReadLog};
use super::keys::{Handle, Keys, NodeKey, Owner, carried};
use super::op::{Binary, Nary, Op, Unary};
use super::opcodes::OpCodes;

/// The `arg` of an edge whose operand is an untracked `f64` constant.
pub(in crate::engine) const CONST_ARG: u32 = u32::MAX;
/// Positions are `u32`, and `u32::MAX` is [`CONST_ARG`].
const MAX_NODES: usize = (u32::MAX - 1) as usize;

/// Below this many nodes and edges, a node is recorded inline with no exact test of the
/// limits.
pub(in crate::engine) const FAST_LIMIT: usize = 1 << 31;
const _: () = assert!(FAST_LIMIT <= MAX_NODES);

/// The nodes a new tape has room for, at least.
const MIN_ROOM: usize = 64;

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

/// A node just recorded: what its handle carries (its key and value, and its position and
/// the release epoch it was recorded in, as one word: see [`Var`](crate::Var)'s layout).
#[derive(Clone, Copy, Debug)]
pub(in crate::engine) struct Recorded {
    pub(in crate::engine) key: NodeKey,
    pub(in crate::engine) value: f64,
    /// The position (low 32 bits) and the epoch (high 32 bits).
    pub(in crate::engine) at: u64,
}

impl Recorded {
    /// The node's position.
    #[inline(always)]
    pub(in crate::engine) fn pos(&self) -> u32 {
        self.at as u32
    }

    /// The release epoch the node was recorded in.
    #[inline(always)]
    pub(in crate::engine) fn epoch(&self) -> u32 {
        (self.at >> 32) as u32
    }
}

/// A position and a release epoch as one word (position low, epoch high), as handles carry
/// them.
#[inline(always)]
pub(in crate::engine) fn pack_at(pos: u32, epoch: u32) -> u64 {
    u64::from(pos) | u64::from(epoch) << 32
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

/// A column's new allocation: `room` entries, `old`'s first `kept` copied, the rest zeroed
/// (by the allocator: fresh pages are touched only when written).
fn regrow<T: Copy + Default>(old: &mut Vec<T>, kept: usize, room: usize) {
    if room <= old.len() {
        return;
    }
    let mut new = vec![T::default(); room];
    new[..kept].copy_from_slice(&old[..kept]);
    *old = new;
}

/// The nodes, struct-of-arrays (see the module docs).
#[derive(Debug)]
pub(in crate::engine) struct Tape {
    pub(in crate::engine) keys: Keys,
    /// How many nodes are recorded.
    len: usize,
    /// How many edges are stored.
    edges: usize,
    values: Vec<f64>,
    ops: OpCodes,
    /// `edge_start[i]..edge_start[i + 1]` are node `i`'s edges; one longer than the other
    /// node columns.
    edge_start: Vec<u32>,
    args: Vec<u32>,
    weights: Vec<f64>,
    /// What a new node's position must be below, and its edges' end at most, to be recorded
    /// inline: the columns' room, capped at [`FAST_LIMIT`], or 0 in anomaly mode, so that
    /// one comparison each covers the room, the limits and the mode.
    node_limit: usize,
    edge_limit: usize,
    /// [`FAST_LIMIT`], or 0 in anomaly mode.
    pub(in crate::engine) fast_limit: usize,
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
    /// The operand positions, values and partials of the n-ary node being recorded (kept
    /// to avoid reallocating).
    scratch_args: Vec<u32>,
    scratch: Vec<f64>,
    scratch_weights: Vec<f64>,
    /// The resolved operands of a matrix product ([`Tape::matrix_dots`]): positions and
    /// values of the matrix's entries, then of the vector's (kept to avoid reallocating).
    matrix_args: Vec<u32>,
    matrix_values: Vec<f64>,
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
        let mut tape = Tape {
            keys: Keys::default(),
            len: 0,
            edges: 0,
            values: Vec::new(),
            ops: OpCodes::default(),
            edge_start: vec![0],
            args: Vec::new(),
            weights: Vec::new(),
            node_limit: 0,
            edge_limit: 0,
            fast_limit: FAST_LIMIT,
            epoch: 0,
            releases: Vec::new(),
            anomaly: None,
            guards: Vec::new(),
            reads: Some(ReadLog::default()),
            scratch_args: Vec::new(),
            scratch: Vec::new(),
            scratch_weights: Vec::new(),
            matrix_args: Vec::new(),
            matrix_values: Vec::new(),
            blocks: Vec::new(),
            block_args: Vec::new(),
            custom_names: Vec::new(),
        };
        tape.reserve(nodes, 2 * nodes);
        tape
    }

    /// Room for `nodes` nodes and `edges` edges in all, growing every column of a kind
    /// together (at least doubling, so growth is amortised).
    #[cold]
    #[inline(never)]
    pub(in crate::engine) fn reserve(&mut self, nodes: usize, edges: usize) {
        if nodes > self.values.len() {
            let room = nodes.max(2 * self.values.len()).max(MIN_ROOM);
            regrow(&mut self.values, self.len, room);
            self.ops.regrow(self.len, room);
            regrow(&mut self.edge_start, self.len + 1, room + 1);
            self.keys.regrow(room);
        }
        if edges > self.args.len() {
            let room = edges.max(2 * self.args.len()).max(2 * MIN_ROOM);
            regrow(&mut self.args, self.edges, room);
            regrow(&mut self.weights, self.edges, room);
        }
        self.set_limits();
    }

    /// `node_limit` and `edge_limit` from the columns' room and `fast_limit`.
    pub(in crate::engine) fn set_limits(&mut self) {
        self.node_limit = self.values.len().min(self.fast_limit);
        self.edge_limit = self.args.len().min(self.fast_limit);
    }

    /// The number of nodes recorded.
    #[inline(always)]
    pub(in crate::engine) fn len(&self) -> usize {
        self.len
    }

    /// Every node's value, by position.
    #[inline(always)]
    pub(in crate::engine) fn values(&self) -> &[f64] {
        &self.values[..self.len]
    }

    /// [`Tape::values`], to change inputs' values in place.
    pub(in crate::engine) fn values_mut(&mut self) -> &mut [f64] {
        &mut self.values[..self.len]
    }

    /// Node `pos`'s op.
    #[inline(always)]
    pub(in crate::engine) fn op(&self, pos: usize) -> Op {
        debug_assert!(pos < self.len);
        self.ops[pos]
    }

    /// Every node's first edge, and one past the last node's last: `len + 1` entries.
    #[inline(always)]
    pub(in crate::engine) fn edge_start(&self) -> &[u32] {
        &self.edge_start[..=self.len]
    }

    /// Every stored edge's operand position ([`CONST_ARG`] for a constant).
    #[inline(always)]
    pub(in crate::engine) fn args(&self) -> &[u32] {
        &self.args[..self.edges]
    }

    /// Every stored edge's partial (or, for a constant operand, the constant).
    #[inline(always)]
    pub(in crate::engine) fn weights(&self) -> &[f64] {
        &self.weights[..self.edges]
    }

    /// A tape that holds no memory (and is not valid to record on); what a dropped graph
    /// leaves behind after giving its tape away.
    pub(in crate::engine) fn hollow() -> Self {
        Tape::with_capacity(0)
    }

    /// Empties the tape for a new graph, keeping its arrays' memory.
    pub(in crate::engine) fn reset(&mut self) {
        self.keys.clear();
        self.len = 0;
        self.edges = 0;
        self.epoch = 0;
        self.releases.clear();
        self.anomaly = None;
        self.guards.clear();
        self.reads = Some(ReadLog::default());
        self.fast_limit = FAST_LIMIT;
        self.set_limits();
        self.blocks.clear();
        self.block_args.clear();
        self.custom_names.clear();
    }

    /// The nodes the arrays have room for.
    pub(in crate::engine) fn capacity(&self) -> usize {
        self.values.len()
    }

    /// The heap bytes the columns hold (their room, not just what is recorded).
    pub(in crate::engine) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.keys.heap_bytes()
            + self.values.capacity() * size_of::<f64>()
            + self.ops.capacity()
            + self.edge_start.capacity() * size_of::<u32>()
            + self.args.capacity() * size_of::<u32>()
            + self.weights.capacity() * size_of::<f64>()
            + (self.scratch.capacity() + self.scratch_weights.capacity()) * size_of::<f64>()
            + self.scratch_args.capacity() * size_of::<u32>()
            + self.matrix_args.capacity() * size_of::<u32>()
            + self.matrix_values.capacity() * size_of::<f64>()
            + self.blocks.capacity() * size_of::<DotBlock>()
            + self.block_args.capacity() * size_of::<u32>()
            + self.releases.capacity() * size_of::<(u64, u32)>()
            + self.anomaly.as_ref().map_or(0, |a| {
                a.locations.capacity() * size_of::<Option<&'static Location<'static>>>()
            })
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
        self.args()[later_edges..].iter().any(|&p| inside(p))
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
        self.edges + self.blocks.iter().map(DotBlock::edge_count).sum::<usize>()
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

    /// Records a node with the `N` edges `args`, `weights`: the path of every op with a
    /// fixed number of operands (leaves, unary and binary ops). The common case is one room
    /// check, a store per column and a key; a full column, a graph near its limits and
    /// anomaly mode go to [`Tape::record_rare`], out of line, so that this inlines into
    /// every op.
    #[inline(always)]
    fn record<const N: usize>(
        &mut self,
        op: Op,
        value: f64,
        args: [u32; N],
        weights: [f64; N],
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        let (pos, e) = (self.len, self.edges);
        if pos >= self.node_limit || e + N > self.edge_limit {
            return self.record_rare(op, value, &args, &weights, location);
        }
        // One store per edge, not `copy_from_slice`: that copies the partials through the
        // stack, and the 16-byte load of two partials just stored apart waits for both
        // stores to retire (a failed store-to-load forward, which stalled every binary op).
        let (args_out, weights_out) = (&mut self.args[e..e + N], &mut self.weights[e..e + N]);
        #[allow(clippy::manual_memcpy)] // on purpose: see above
        for k in 0..N {
            args_out[k] = args[k];
            weights_out[k] = weights[k];
        }
        Ok(self.commit(pos, op, value, e + N))
    }

    /// [`Tape::record`] for a node with any number of edges (the n-ary ops, user-defined
    /// functions).
    #[inline]
    fn record_slice(
        &mut self,
        op: Op,
        value: f64,
        args: &[u32],
        weights: &[f64],
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        let (pos, e, n) = (self.len, self.edges, args.len());
        if pos >= self.node_limit || e + n > self.edge_limit {
            return self.record_rare(op, value, args, weights, location);
        }
        self.args[e..e + n].copy_from_slice(args);
        self.weights[e..e + n].copy_from_slice(weights);
        Ok(self.commit(pos, op, value, e + n))
    }

    /// Closes node `pos` (the next), whose edges end at `end`: its value, op, edge offset
    /// and key.
    #[inline(always)]
    fn commit(&mut self, pos: usize, op: Op, value: f64, end: usize) -> Recorded {
        self.values[pos] = value;
        self.ops.set(pos, op);
        self.edge_start[pos + 1] = end as u32;
        let key = self.keys.issue(pos as u32);
        self.len = pos + 1;
        self.edges = end;
        Recorded {
            key,
            value,
            at: pack_at(pos as u32, self.keys.epoch()),
        }
    }

    /// [`Tape::record`] when a column is full, the graph near its limits (past 2^31 nodes
    /// or edges: tested exactly here), or anomaly mode on.
    #[cold]
    #[inline(never)]
    fn record_rare(
        &mut self,
        op: Op,
        value: f64,
        args: &[u32],
        weights: &[f64],
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        let (pos, e, n) = (self.len, self.edges, args.len());
        if pos >= MAX_NODES || e + n > u32::MAX as usize {
            return Err(Error::GraphFull);
        }
        self.reserve(pos + 1, e + n);
        self.args[e..e + n].copy_from_slice(args);
        self.weights[e..e + n].copy_from_slice(weights);
        let node = self.commit(pos, op, value, e + n);
        if self.anomaly.is_some() {
            self.note_for_anomaly(pos, location);
        }
        Ok(node)
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
    /// one room check, not one per parameter and column.
    pub(in crate::engine) fn inputs(
        &mut self,
        xs: &[f64],
        location: &'static Location<'static>,
    ) -> Result<u32, Error> {
        let first = self.len;
        let n = xs.len();
        if (first + n) | self.edges >= self.fast_limit {
            // Near the limits, or in anomaly mode (which checks each value): one at a time.
            for &x in xs {
                if let Err(e) = self.record::<0>(Op::Input, x, [], [], location) {
                    self.truncate(first);
                    return Err(e);
                }
            }
        } else {
            if first + n > self.values.len() {
                self.reserve(first + n, self.edges);
            }
            self.values[first..first + n].copy_from_slice(xs);
            self.ops.fill(first..first + n, Op::Input);
            let edges = self.edges as u32;
            self.edge_start[first + 1..=first + n].fill(edges);
            self.keys.issue_run(first as u32, n);
            self.len = first + n;
        }
        Ok(first as u32)
    }

    /// Records a leaf: an input or a constant.
    #[inline]
    pub(in crate::engine) fn leaf(
        &mut self,
        op: Op,
        value: f64,
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        self.record::<0>(op, value, [], [], location)
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
        let partial = op.partial(x.value, y);
        self.record(Op::Unary(op), y, [x.arg], [partial], location)
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
        let weights = [weight(a, a_const, 0), weight(b, b_const, 1)];
        self.record(Op::Binary(op), y, [a.arg, b.arg], weights, location)
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
        let mut args = std::mem::take(&mut self.scratch_args);
        let mut values = std::mem::take(&mut self.scratch);
        args.clear();
        values.clear();
        let mut result = Ok(());
        for x in operands {
            match resolve(&self.keys, self.values(), x) {
                Ok(x) => {
                    args.push(x.arg);
                    values.push(x.value);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let node = result.and_then(|()| {
            // Checked after the loop, which stays tighter without the flag.
            let has_constants = args.contains(&CONST_ARG);
            self.record_nary(op, &args, &values, has_constants, location)
        });
        self.scratch_args = args;
        self.scratch = values;
        node
    }

    /// [`Tape::nary`] over slices of `graph`'s `Var`s, which are never constants: the path
    /// of the fused ops on `Var` slices ([`Scalar`](crate::Scalar)'s `dot`, `sum` and
    /// `logsumexp`, which the transformer's matrix products are made of). Each slice is
    /// resolved by one `extend` over it, so an operand costs its handle check and two
    /// stores, without the operand enum and the chained iterator of the general path. A bad
    /// handle is remembered and reported after the loop, the first in operand order.
    pub(in crate::engine) fn nary_vars<H: Handle>(
        &mut self,
        owner: Owner,
        op: Nary,
        parts: &[&[H]],
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        let mut args = std::mem::take(&mut self.scratch_args);
        args.clear();
        let mut first_error = None;
        for part in parts {
            let keys = &self.keys;
            args.extend(
                part.iter()
                    .map(|&x| position_or_note(owner, keys, x, &mut first_error)),
            );
        }
        let node = match first_error {
            Some(e) => Err(e),
            None => self.nary_at(op, &args, location),
        };
        self.scratch_args = args;
        node
    }

    /// Records the n-ary node over the tracked operands at positions `args` (of recorded
    /// nodes), reading their values from the tape.
    pub(in crate::engine) fn nary_at(
        &mut self,
        op: Nary,
        args: &[u32],
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        let mut values = std::mem::take(&mut self.scratch);
        values.clear();
        // A slice, not `self.values[..]` in the loop: the compiler would reload the
        // vector's pointer and length at every operand, as the writes to `values` might
        // change them for all it knows.
        let node_values = self.values();
        values.extend(args.iter().map(|&pos| node_values[pos as usize]));
        let node = self.record_nary(op, args, &values, false, location);
        self.scratch = values;
        node
    }

    /// Records the n-ary node whose operands have positions `args` and values `values`.
    fn record_nary(
        &mut self,
        op: Nary,
        args: &[u32],
        values: &[f64],
        has_constants: bool,
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        let mut weights = std::mem::take(&mut self.scratch_weights);
        weights.clear();
        let y = op.value_and_partials_f64(values, &mut weights);
        if has_constants {
            // A constant operand's weight slot holds the constant itself (see the module docs).
            for ((w, &arg), &x) in weights.iter_mut().zip(args).zip(values) {
                if arg == CONST_ARG {
                    *w = x;
                }
            }
        }
        let node = self.record_slice(Op::Nary(op), y, args, &weights, location);
        self.scratch_weights = weights;
        node
    }

    /// Records a node whose value and partials `eval` computes from its operands' values:
    /// a user-defined function or a fused sub-computation. `eval` gets the values and the
    /// node's partials (one per operand, zeroed) and returns the value. The operands are
    /// all tracked (no constants).
    pub(in crate::engine) fn computed(
        &mut self,
        op: Op,
        operands: &[Resolved],
        eval: impl FnOnce(&[f64], &mut [f64]) -> f64,
        location: &'static Location<'static>,
    ) -> Result<Recorded, Error> {
        debug_assert!(operands.iter().all(|x| x.arg != CONST_ARG));
        let mut args = std::mem::take(&mut self.scratch_args);
        let mut values = std::mem::take(&mut self.scratch);
        let mut weights = std::mem::take(&mut self.scratch_weights);
        args.clear();
        args.extend(operands.iter().map(|x| x.arg));
        values.clear();
        values.extend(operands.iter().map(|x| x.value));
        weights.clear();
        weights.resize(operands.len(), 0.0);
        let y = eval(&values, &mut weights);
        let node = self.record_slice(op, y, &args, &weights, location);
        self.scratch_args = args;
        self.scratch = values;
        self.scratch_weights = weights;
        node
    }

    /// Frees every node at position `len` and above, and their keys, in time proportional
    /// to what it frees, whatever the graph held before.
    pub(in crate::engine) fn truncate(&mut self, len: usize) {
        let cut = self.cut_block_row(len);
        let edges = self.edge_start[len] as usize;
        self.keys.release(len);
        self.len = len;
        self.edges = edges;
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
