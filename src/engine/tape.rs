//! The tape's storage: every node, struct-of-arrays, in recording order, and the recording
//! and release primitives the [`Graph`](super::Graph) API calls. Hot path: no allocation per
//! node beyond the arrays' amortised growth, no dispatch on the op while recording; it knows
//! nothing of `Graph` or `Var` (handles reach it through the [`Handle`] trait).
//!
//! Storage is struct-of-arrays, indexed by *tape position* (the order of recording):
//! `values[i]`, `ops[i]`, and node `i`'s edges `edge_start[i]..edge_start[i + 1]` into the
//! flat `args` (operand positions) and `weights` (the local partials, computed when the
//! node is recorded), and `slots` (each position's generation, see [`Slots`]). A handle's
//! [`NodeKey`] is its node's position plus the generation the node was recorded in; a handle
//! to a released node is detected because its position is past the end or now holds a node
//! of a later generation. The reverse sweep never touches the slots: it walks the flat arrays.
//!
//! An `f64` operand (as in `x * 2.0`) is stored as an edge whose `arg` is [`CONST_ARG`] and
//! whose weight slot holds the constant itself, so that the differentiable backward can
//! re-evaluate the op's rule with it. The plain sweep sends such edges to a sink slot.

use std::borrow::Cow;
use std::panic::Location;

use super::error::{Anomaly, Error};
use super::guard::Guard;
use super::matrix::Pairing;
use super::op::{Binary, Nary, Op, Unary};

/// The key of a node in its graph: its tape position plus the generation it was recorded
/// in, so a key to a released (and possibly re-recorded) position is detected instead of
/// read.
///
/// # Examples
///
/// ```
/// use tapegrad::Graph;
///
/// let g = Graph::new();
/// let (a, b) = (g.var(1.0), g.var(2.0));
/// assert_ne!(a.key(), b.key());
/// let mark = g.mark();
/// let c = a * b;
/// g.release(mark);
/// let d = a + b; // the same position as c, a later generation
/// assert_ne!(c.key(), d.key());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey {
    pos: u32,
    generation: u32,
}

impl NodeKey {
    /// The key `k` positions after this one, in the same generation.
    pub(in crate::engine) fn advanced(self, k: usize) -> NodeKey {
        NodeKey {
            pos: self.pos + k as u32,
            generation: self.generation,
        }
    }

    /// The node's tape position.
    pub(in crate::engine) fn position(self) -> u32 {
        self.pos
    }
}

/// Which node each position holds: the generation it was recorded in (a position's
/// generation changes whenever it is released and recorded again), one `u32` per node.
///
/// This replaces a slot map (8 bytes per node, and a release that filtered every slot the
/// graph ever held): a key is checked by one comparison, a handle costs nothing to issue,
/// and releasing is a truncation. The generation is [`Tape::epoch`] (which counts releases)
/// at recording, truncated to 32 bits: a stale handle would be misread only if it were used
/// after exactly a multiple of 2^32 releases, at a position re-recorded in that very
/// generation (a slot map's `u32` versions wrap after 2^31 reuses of one slot).
#[derive(Debug, Default)]
pub(in crate::engine) struct Slots {
    generations: Vec<u32>,
}

impl Slots {
    /// The position `key` names, if that position still holds the node it was issued for.
    #[inline(always)]
    pub(in crate::engine) fn get(&self, key: NodeKey) -> Option<u32> {
        (self.generations.get(key.pos as usize) == Some(&key.generation)).then_some(key.pos)
    }

    /// The key of the node now at `pos`.
    #[inline(always)]
    pub(in crate::engine) fn key(&self, pos: u32) -> NodeKey {
        NodeKey {
            pos,
            generation: self.generations[pos as usize],
        }
    }

    /// The keys of the `n` nodes from `first` on, recorded together (in one generation):
    /// the generation is read once.
    #[inline]
    pub(in crate::engine) fn keys_of_run(
        &self,
        first: u32,
        n: usize,
    ) -> impl Iterator<Item = NodeKey> {
        let generation = self
            .generations
            .get(first as usize)
            .copied()
            .unwrap_or_default();
        debug_assert!(
            self.generations[first as usize..][..n]
                .iter()
                .all(|&g| g == generation)
        );
        (first..)
            .take(n)
            .map(move |pos| NodeKey { pos, generation })
    }

    pub(in crate::engine) fn capacity(&self) -> usize {
        self.generations.capacity()
    }
}

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

/// Dot products recorded as one block, storing no edges: the outputs of
/// [`Tape::matrix_dots`] when its second factor is a run of consecutive tape positions (a
/// weight matrix bound as inputs). Output `(i, j)` is node `first + i * outputs + j`, the
/// dot of row `i` of the first factor (its positions kept once for all `outputs` dots, in
/// `Tape::block_args`) with part `j` of the second: row `j` of it (positions
/// `b_first + j * inner ..`, `inner` of them) for `A W^T`, or column `j` when
/// `transposed` (positions `b_first + j`, then every `outputs`-th) for `A W`. Its
/// operands and partials are the values at those positions, which never change once
/// recorded; so nothing per edge is stored, and the sweep reads the weights and their
/// adjoints in place.
#[derive(Clone, Copy, Debug)]
pub(in crate::engine) struct DotBlock {
    pub(in crate::engine) first: u32,
    pub(in crate::engine) rows: u32,
    pub(in crate::engine) outputs: u32,
    pub(in crate::engine) inner: u32,
    pub(in crate::engine) b_first: u32,
    /// Where the first factor's positions start in `Tape::block_args`.
    pub(in crate::engine) a_start: u32,
    /// Within each row of the first factor the positions are distinct and none is in
    /// the second factor's range: the sweep may gather that row's adjoints, add every
    /// output's contributions to them in order and scatter them back, with the same sums
    /// (in the same order) as edge by edge.
    pub(in crate::engine) dense: bool,
    /// The second factor is `inner x outputs`, each part one of its columns.
    pub(in crate::engine) transposed: bool,
}

impl DotBlock {
    /// One past the position of the last output.
    #[inline]
    pub(in crate::engine) fn end(&self) -> usize {
        self.first as usize + self.rows as usize * self.outputs as usize
    }

    /// The positions of the second factor, every part.
    #[inline]
    pub(in crate::engine) fn b_range(&self) -> std::ops::Range<usize> {
        let b = self.b_first as usize;
        b..b + self.outputs as usize * self.inner as usize
    }

    /// The first factor's positions, as a range of `Tape::block_args`.
    #[inline]
    pub(in crate::engine) fn a_range(&self) -> std::ops::Range<usize> {
        let a = self.a_start as usize;
        a..a + self.rows as usize * self.inner as usize
    }

    /// How many edges its outputs have (two per product).
    fn edge_count(&self) -> usize {
        2 * self.rows as usize * self.outputs as usize * self.inner as usize
    }

    /// Where part `j` of the second factor starts and the step between its positions.
    #[inline]
    pub(in crate::engine) fn part(&self, j: usize) -> (usize, usize) {
        let (b, inner, outputs) = (
            self.b_first as usize,
            self.inner as usize,
            self.outputs as usize,
        );
        if self.transposed {
            (b + j, outputs)
        } else {
            (b + j * inner, 1)
        }
    }

    /// The operands of output node `pos`: the positions of its row of the first factor
    /// (in `block_args`) and of its part of the second.
    pub(in crate::engine) fn operands<'a>(
        &self,
        pos: usize,
        block_args: &'a [u32],
    ) -> (&'a [u32], std::iter::StepBy<std::ops::Range<usize>>) {
        let (inner, outputs) = (self.inner as usize, self.outputs as usize);
        let o = pos - self.first as usize;
        let (i, j) = (o / outputs, o % outputs);
        let a = &block_args[self.a_range()][i * inner..(i + 1) * inner];
        let (start, step) = self.part(j);
        (a, (start..start + step * inner).step_by(step))
    }
}

/// A handle to a node, as the tape sees it: which graph made it and its key. The tape
/// resolves handles itself on its many-operand paths, without knowing the handle type.
pub(in crate::engine) trait Handle: Copy {
    /// The address of the graph that made the handle: compared, never read.
    fn owner(self) -> *const ();
    /// That graph's id, for error messages (the cold path).
    fn owner_id(self) -> u64;
    /// The node's key: its tape position and the generation it was recorded in.
    fn key(self) -> NodeKey;
}

/// Who is resolving handles: the address and id of the graph that owns this tape.
#[derive(Clone, Copy)]
pub(in crate::engine) struct Owner {
    pub(in crate::engine) addr: *const (),
    pub(in crate::engine) id: u64,
}

/// Resolves `x` against the tape's slots and values, or explains why it cannot: a handle
/// of another graph, or one whose node was released.
#[inline(always)]
pub(in crate::engine) fn resolve_handle(
    owner: Owner,
    slots: &Slots,
    values: &[f64],
    x: impl Handle,
) -> Result<Resolved, Error> {
    if !std::ptr::eq(x.owner(), owner.addr) {
        return Err(foreign(owner, x));
    }
    let pos = slots.get(x.key()).ok_or(Error::Released)?;
    Ok(Resolved {
        value: values[pos as usize],
        arg: pos,
    })
}

/// Appends to `out` the dot of `a` with each `a.len()`-long part of `b`, each summed as
/// `Iterator::sum` sums (from -0.0, in order) so that the bits are those of the dot node,
/// four parts at a time: their four chains of additions overlap instead of each waiting
/// for the last addition's latency (a third of a block's recording time).
fn dots_of_row(a: &[f64], b: &[f64], out: &mut Vec<f64>) {
    let inner = a.len();
    let mut fours = b.chunks_exact(4 * inner);
    for four in &mut fours {
        let (b0, rest) = four.split_at(inner);
        let (b1, rest) = rest.split_at(inner);
        let (b2, b3) = rest.split_at(inner);
        let (mut s0, mut s1, mut s2, mut s3) = (-0.0f64, -0.0f64, -0.0f64, -0.0f64);
        for ((((&x, &w0), &w1), &w2), &w3) in a.iter().zip(b0).zip(b1).zip(b2).zip(b3) {
            s0 += x * w0;
            s1 += x * w1;
            s2 += x * w2;
            s3 += x * w3;
        }
        out.extend_from_slice(&[s0, s1, s2, s3]);
    }
    for part in fours.remainder().chunks_exact(inner) {
        out.push(a.iter().zip(part).map(|(a, b)| a * b).sum::<f64>());
    }
}

/// Appends to `out` the dot of `a` with each column of `b` (row-major, `a.len()` rows),
/// each summed from -0.0 in row order (as [`dots_of_row`]): row by row of `b`, every
/// column's sum advancing at once over contiguous memory.
fn dots_of_row_by_columns(a: &[f64], b: &[f64], out: &mut Vec<f64>) {
    let start = out.len();
    let columns = b.len() / a.len();
    out.resize(start + columns, -0.0);
    let sums = &mut out[start..];
    for (&x, row) in a.iter().zip(b.chunks_exact(columns)) {
        for (sum, &w) in sums.iter_mut().zip(row) {
            *sum += x * w;
        }
    }
}

/// The position of `run[0]` if `run` are handles of `owner`'s graph to consecutive
/// positions `p, p + 1, ...` recorded in one generation, all still valid: each handle is
/// compared with the key it must then have (no slot lookup per handle), and the slots of
/// the first and last are checked. That proves the rest: positions between two that
/// hold nodes of one generation were recorded in that generation (a release starts a new
/// one) and not released since (that would have released the last).
pub(in crate::engine) fn handle_run<H: Handle>(
    owner: Owner,
    slots: &Slots,
    run: &[H],
) -> Option<u32> {
    let (first, last) = (run.first()?.key(), run.last()?.key());
    slots.get(first)?;
    slots.get(last)?;
    // Each handle XOR what it must be, OR-ed over the whole run (no early exit, no
    // comparison per handle): a loop of 64-bit integer lanes the compiler vectorises.
    let bits = |key: NodeKey| u64::from(key.pos) | u64::from(key.generation) << 32;
    let (owner_bits, first_bits) = (owner.addr as usize as u64, bits(first));
    let differs = run.iter().zip(0u64..).fold(0u64, |differs, (x, k)| {
        differs | (x.owner() as usize as u64 ^ owner_bits) | (bits(x.key()) ^ (first_bits + k))
    });
    (differs == 0).then_some(first.pos)
}

/// `positions[0]` if `positions` are consecutive (`p, p + 1, ...`) and not empty.
fn consecutive(positions: &[u32]) -> Option<u32> {
    let &start = positions.first()?;
    // `|` over the whole run, no early exit: a loop the compiler can vectorise.
    let differs = positions
        .iter()
        .zip(start..)
        .fold(false, |differs, (&p, expected)| differs | (p != expected));
    (!differs).then_some(start)
}

/// The error for `x`, a handle of another graph, used with `owner`'s.
#[cold]
fn foreign(owner: Owner, x: impl Handle) -> Error {
    Error::ForeignHandle {
        what: "Var",
        owner: x.owner_id(),
        used_with: owner.id,
    }
}

/// `x`'s tape position, for the loops that resolve many operands at once; for a handle
/// that is released or of another graph, [`CONST_ARG`], and the error that the one-operand
/// path ([`resolve_handle`]) reports for it is kept in `first_error` if none is yet (the
/// caller reports it after the loop, which stays tighter without an early exit).
#[inline(always)]
fn position_or_note<H: Handle>(
    owner: Owner,
    slots: &Slots,
    values: &[f64],
    x: H,
    first_error: &mut Option<Error>,
) -> u32 {
    if std::ptr::eq(x.owner(), owner.addr)
        && let Some(pos) = slots.get(x.key())
    {
        return pos;
    }
    note_error(owner, slots, values, x, first_error);
    CONST_ARG
}

/// [`position_or_note`]'s rare case, out of line.
#[cold]
#[inline(never)]
fn note_error<H: Handle>(
    owner: Owner,
    slots: &Slots,
    values: &[f64],
    x: H,
    first_error: &mut Option<Error>,
) {
    if first_error.is_none() {
        *first_error = resolve_handle(owner, slots, values, x).err();
    }
}

/// The nodes, struct-of-arrays (see the module docs).
#[derive(Debug)]
pub(in crate::engine) struct Tape {
    pub(in crate::engine) slots: Slots,
    pub(in crate::engine) values: Vec<f64>,
    pub(in crate::engine) ops: OpCodes,
    /// `edge_start[i]..edge_start[i + 1]` are node `i`'s edges; always one longer than `values`.
    pub(in crate::engine) edge_start: Vec<u32>,
    pub(in crate::engine) args: Vec<u32>,
    pub(in crate::engine) weights: Vec<f64>,
    /// Counts releases, so a `Gradients` knows which positions were re-recorded after it.
    pub(in crate::engine) epoch: u64,
    /// `epoch` truncated to 32 bits: the generation of the nodes recorded now.
    generation: u32,
    /// `(epoch, mark)` of past releases, kept as a stack whose marks increase: the first
    /// entry after a given epoch holds the lowest mark released since then.
    pub(in crate::engine) releases: Vec<(u64, u32)>,
    pub(in crate::engine) anomaly: Option<Box<AnomalyLog>>,
    /// The value comparisons made through `Var`'s guard methods, in order.
    pub(in crate::engine) guards: Vec<Guard>,
    /// With replay checks on: every `Var::value` read, as (position, the tape's length
    /// then, where).
    pub(in crate::engine) reads: Option<Vec<(u32, u32, &'static Location<'static>)>>,
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
            slots: Slots {
                generations: Vec::with_capacity(nodes),
            },
            values: Vec::with_capacity(nodes),
            ops: OpCodes(Vec::with_capacity(nodes)),
            edge_start,
            args: Vec::with_capacity(nodes * 2),
            weights: Vec::with_capacity(nodes * 2),
            epoch: 0,
            generation: 0,
            releases: Vec::new(),
            anomaly: None,
            guards: Vec::new(),
            reads: None,
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
        self.slots.generations.clear();
        self.values.clear();
        self.ops.0.clear();
        self.edge_start.clear();
        self.edge_start.push(0);
        self.args.clear();
        self.weights.clear();
        self.epoch = 0;
        self.generation = 0;
        self.releases.clear();
        self.anomaly = None;
        self.guards.clear();
        self.reads = None;
        self.fast_limit = FAST_LIMIT;
        self.blocks.clear();
        self.block_args.clear();
        self.custom_names.clear();
    }

    /// The nodes the arrays have room for (the smallest of their capacities).
    pub(in crate::engine) fn capacity(&self) -> usize {
        self.values.capacity().min(self.ops.0.capacity())
    }

    /// Node `pos`'s edges as `(args, weights)`: borrowed from the flat arrays, or for a
    /// node of a [`DotBlock`] (which stores none) made from the block, exactly the edges
    /// [`Nary::Dot`] would have stored.
    #[inline]
    pub(in crate::engine) fn edges(&self, pos: usize) -> (Cow<'_, [u32]>, Cow<'_, [f64]>) {
        if self.ops.0[pos] == BLOCK_DOT_CODE {
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
        let (a, b) = if self.ops.0[pos] == BLOCK_DOT_CODE {
            self.block_of(pos).operands(pos, &self.block_args)
        } else {
            let range = self.edge_start[pos] as usize..self.edge_start[pos + 1] as usize;
            (&self.args[range], (0..0).step_by(1))
        };
        a.iter().copied().chain(b.map(|p| p as u32))
    }

    /// The block that holds node `pos`, which is a [`DotBlock`] node.
    pub(in crate::engine) fn block_of(&self, pos: usize) -> &DotBlock {
        let k = self.blocks.partition_point(|b| b.first as usize <= pos);
        let block = &self.blocks[k - 1];
        debug_assert!(pos < block.end());
        block
    }

    /// The edges of block node `pos`: operands row `i` of the first factor then part `j`
    /// of the second, partials the other way round.
    fn block_edges(&self, pos: usize) -> (Vec<u32>, Vec<f64>) {
        let block = self.block_of(pos);
        let (a, b) = block.operands(pos, &self.block_args);
        let args: Vec<u32> = a
            .iter()
            .copied()
            .chain(b.clone().map(|p| p as u32))
            .collect();
        let weights = b
            .map(|p| self.values[p])
            .chain(a.iter().map(|&p| self.values[p as usize]))
            .collect();
        (args, weights)
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
    /// The common case is three pushes; a full graph and anomaly mode go to
    /// [`Tape::finish_rare`], out of line, so that this inlines into every op.
    #[inline(always)]
    fn finish(
        &mut self,
        op: Op,
        value: f64,
        location: &'static Location<'static>,
    ) -> Result<u32, Error> {
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
        self.slots.generations.push(self.generation);
        Ok(pos as u32)
    }

    /// [`Tape::finish`] when the graph is full (or near it) or anomaly mode is on.
    #[cold]
    #[inline(never)]
    fn finish_rare(
        &mut self,
        op: Op,
        value: f64,
        location: &'static Location<'static>,
    ) -> Result<u32, Error> {
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
        self.slots.generations.push(self.generation);
        if self.anomaly.is_some() {
            self.note_for_anomaly(pos, location);
        }
        Ok(pos as u32)
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
            let generations = &mut self.slots.generations;
            generations.resize(generations.len() + xs.len(), self.generation);
        }
        Ok(first as u32)
    }

    #[inline]
    pub(in crate::engine) fn leaf(
        &mut self,
        op: Op,
        value: f64,
        location: &'static Location<'static>,
    ) -> Result<u32, Error> {
        self.finish(op, value, location)
    }

    /// Records `op(x)`; `x` is a tracked operand.
    #[inline(always)]
    pub(in crate::engine) fn unary(
        &mut self,
        op: Unary,
        x: Resolved,
        location: &'static Location<'static>,
    ) -> Result<u32, Error> {
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
    ) -> Result<u32, Error> {
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
    ) -> Result<u32, Error> {
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
        resolve: impl Fn(&Slots, &[f64], X) -> Result<Resolved, Error>,
        location: &'static Location<'static>,
    ) -> Result<u32, Error> {
        let start = self.args.len();
        let mut values = std::mem::take(&mut self.scratch);
        values.clear();
        let operands = operands.into_iter();
        let expected = operands.size_hint().0;
        self.args.reserve(expected);
        self.weights.reserve(expected);
        values.reserve(expected);
        for x in operands {
            match resolve(&self.slots, &self.values, x) {
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
    ) -> Result<u32, Error> {
        let start = self.args.len();
        let mut first_error = None;
        for part in parts {
            let (slots, values) = (&self.slots, &self.values);
            self.args.extend(
                part.iter()
                    .map(|&x| position_or_note(owner, slots, values, x, &mut first_error)),
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

    /// Records the dot products of every row of `a` (row-major, `inner` columns) with every
    /// column of `b` (row-major `inner x m`, [`Pairing::Columns`]) or every row of `b`
    /// (row-major `m x inner`, [`Pairing::Rows`]): one [`Nary::Dot`] node per output, row
    /// by row, at consecutive positions from the returned one. Each is exactly the node
    /// [`Tape::nary_vars`] records for `dot(row i of a, part j of b)`: operands in that
    /// order, the same value bit for bit, the same gradients bit for bit.
    ///
    /// Every handle of `a` and `b` is resolved (slot lookup, value) once, not once per
    /// output that uses it, and in the order the dots read them (`b` column by column for
    /// [`Pairing::Columns`]), so that each dot's operands are contiguous. A bad handle
    /// anywhere is reported before anything is recorded.
    ///
    /// When `b` is a run of consecutive positions in its own order (a weight matrix bound
    /// as inputs; a `transposed` block for [`Pairing::Columns`]) or read in pairing order,
    /// the outputs are recorded as one [`DotBlock`], which stores no edges: `a`'s positions
    /// once, and `b`'s first position. `known_b` is that position when the caller has
    /// proved `b` a run in its own order (`b` is part of an `Inputs`); otherwise the
    /// handles of `b` are checked here. Near the limits and in anomaly mode the outputs
    /// get their edges.
    pub(in crate::engine) fn matrix_dots<H: Handle>(
        &mut self,
        owner: Owner,
        (a, b): (&[H], &[H]),
        known_b: Option<u32>,
        inner: usize,
        pairing: Pairing,
        location: &'static Location<'static>,
    ) -> Result<u32, Error> {
        debug_assert!(inner > 0 && a.len() % inner == 0 && b.len() % inner == 0);
        let (rows, outputs) = (a.len() / inner, b.len() / inner);
        let mut positions = std::mem::take(&mut self.matrix_args);
        let mut values = std::mem::take(&mut self.matrix_values);
        positions.clear();
        values.clear();
        let mut first_error = None;
        let (slots, node_values) = (&self.slots, self.values.as_slice());
        let mut resolve = |&v: &H| position_or_note(owner, slots, node_values, v, &mut first_error);
        positions.extend(a.iter().map(&mut resolve));
        // A weight matrix bound as inputs, used as `A W^T` or `A W`: its handles are
        // checked as one run (no per-handle lookup), and need no positions of their own.
        let run = known_b.or_else(|| handle_run(owner, slots, b));
        if run.is_none() {
            match pairing {
                Pairing::Rows => positions.extend(b.iter().map(&mut resolve)),
                Pairing::Columns => {
                    for j in 0..outputs {
                        positions.extend(b[j..].iter().step_by(outputs).map(&mut resolve));
                    }
                }
            }
        }
        let result = match first_error {
            Some(e) => Err(e),
            None => {
                let (a_args, b_args) = positions.split_at(a.len());
                // The limits cover `block_args` too: a block's `a_start` is a `u32`.
                let block_fits = (self.values.len() + rows * outputs)
                    | self.args.len()
                    | (self.block_args.len() + a.len());
                // `b`'s own order is row-major; read by columns (`A W`), its parts are
                // strided. Without a run, `b` read in pairing order may still be one
                // (a matrix stored by columns): a block of rows.
                let transposed = run.is_some() && pairing == Pairing::Columns;
                match run.or_else(|| consecutive(b_args)) {
                    Some(b_first) if block_fits < self.fast_limit => {
                        values.extend(a_args.iter().map(|&pos| node_values[pos as usize]));
                        let shape = (rows, outputs, inner);
                        Ok(self.record_block(a_args, &values, b_first, shape, transposed))
                    }
                    _ => {
                        if let Some(b_first) = run {
                            // Near the limits or in anomaly mode: the edges after all,
                            // `b`'s positions in pairing order.
                            match pairing {
                                Pairing::Rows => {
                                    positions.extend((0..b.len() as u32).map(|k| b_first + k))
                                }
                                Pairing::Columns => {
                                    for j in 0..outputs {
                                        positions.extend(
                                            (0..inner).map(|k| b_first + (k * outputs + j) as u32),
                                        );
                                    }
                                }
                            }
                        }
                        values.extend(positions.iter().map(|&pos| node_values[pos as usize]));
                        self.record_dots(
                            &positions,
                            &values,
                            a.len(),
                            (rows, outputs, inner),
                            location,
                        )
                    }
                }
            }
        };
        self.matrix_args = positions;
        self.matrix_values = values;
        result
    }

    /// [`Tape::matrix_dots`]'s outputs as one [`DotBlock`]: `a`'s resolved positions and
    /// values, `b`'s first position, and whether `b` is read by columns. Only where
    /// [`Tape::finish`] would take its fast path for every output (no anomaly mode, far
    /// from the limits).
    fn record_block(
        &mut self,
        a_args: &[u32],
        a_values: &[f64],
        b_first: u32,
        (rows, outputs, inner): (usize, usize, usize),
        transposed: bool,
    ) -> u32 {
        let first = self.values.len();
        let b_range = b_first as usize..b_first as usize + outputs * inner;
        let mut ys = std::mem::take(&mut self.scratch);
        ys.clear();
        let b_values = &self.values[b_range.clone()];
        for a_row in a_values.chunks_exact(inner) {
            if transposed {
                dots_of_row_by_columns(a_row, b_values, &mut ys);
            } else {
                dots_of_row(a_row, b_values, &mut ys);
            }
        }
        let dense = a_args.chunks_exact(inner).all(|row| {
            row.windows(2).all(|w| w[0] < w[1])
                && !row.iter().any(|&p| b_range.contains(&(p as usize)))
        });
        let n = ys.len();
        self.values.extend_from_slice(&ys);
        self.scratch = ys;
        self.ops.0.resize(first + n, BLOCK_DOT_CODE);
        let edges = self.args.len() as u32;
        self.edge_start.resize(first + n + 1, edges);
        let generations = &mut self.slots.generations;
        generations.resize(first + n, self.generation);
        self.blocks.push(DotBlock {
            first: first as u32,
            rows: rows as u32,
            outputs: outputs as u32,
            inner: inner as u32,
            b_first,
            a_start: self.block_args.len() as u32,
            dense,
            transposed,
        });
        self.block_args.extend_from_slice(a_args);
        first as u32
    }

    /// [`Tape::matrix_dots`]'s outputs as one [`Nary::Dot`] node each, with their edges:
    /// `positions` and `values` are `a`'s (the first `a_len`) then `b`'s, in read order.
    fn record_dots(
        &mut self,
        positions: &[u32],
        values: &[f64],
        a_len: usize,
        (rows, outputs, inner): (usize, usize, usize),
        location: &'static Location<'static>,
    ) -> Result<u32, Error> {
        let (a_args, b_args) = positions.split_at(a_len);
        let (a_values, b_values) = values.split_at(a_len);
        let first = self.values.len();
        let mut pairs = (0..rows).flat_map(|i| (0..outputs).map(move |j| (i, j)));
        let recorded = pairs.try_for_each(|(i, j)| {
            // Operands row i of `a` then part j of `b`, partials the other way
            // round, value `sum a_k b_k`: `Nary::Dot` over `a_i ++ b_j`.
            let (ai, bj) = (i * inner..(i + 1) * inner, j * inner..(j + 1) * inner);
            let (a_args, a_values) = (&a_args[ai.clone()], &a_values[ai]);
            let (b_args, b_values) = (&b_args[bj.clone()], &b_values[bj]);
            self.args.extend_from_slice(a_args);
            self.args.extend_from_slice(b_args);
            self.weights.extend_from_slice(b_values);
            self.weights.extend_from_slice(a_values);
            let y = a_values.iter().zip(b_values).map(|(a, b)| a * b).sum();
            self.finish(Op::Nary(Nary::Dot), y, location).map(drop)
        });
        match recorded {
            Ok(()) => Ok(first as u32),
            Err(e) => {
                // The graph filled up part way: the outputs recorded have no
                // handles yet, so nothing can refer to them.
                self.truncate(first);
                Err(e)
            }
        }
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
    ) -> Result<u32, Error> {
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
    ) -> Result<u32, Error> {
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

    /// Frees every node at position `len` and above, in time independent of how many
    /// nodes the graph held before (the arrays' truncations drop plain numbers).
    pub(in crate::engine) fn truncate(&mut self, len: usize) {
        // A release can fall inside the last block (to a mark taken before an earlier
        // release): its outputs below `len` stay, so the block keeps its whole rows, and
        // the outputs of a row it cuts get the edges `Nary::Dot` would have stored.
        // (The last block that starts below `len`: blocks after it start at or above
        // `len` and go entirely.)
        let below = self.blocks.partition_point(|b| (b.first as usize) < len);
        let cut = below
            .checked_sub(1)
            .map(|k| self.blocks[k])
            .filter(|b| len < b.end());
        let cut_row = cut.map(|block| {
            let kept_rows = (len - block.first as usize) / block.outputs as usize;
            let row_start = block.first as usize + kept_rows * block.outputs as usize;
            let edges: Vec<_> = (row_start..len).map(|p| self.block_edges(p)).collect();
            (kept_rows, row_start, edges)
        });
        let edges = self.edge_start[len] as usize;
        self.values.truncate(len);
        self.ops.truncate(len);
        self.edge_start.truncate(len + 1);
        self.args.truncate(edges);
        self.weights.truncate(edges);
        self.slots.generations.truncate(len);
        while let Some(block) = self.blocks.last().filter(|b| b.first as usize >= len) {
            self.block_args.truncate(block.a_start as usize);
            self.blocks.pop();
        }
        if let Some((kept_rows, row_start, edges)) = cut_row {
            let block = self.blocks.last_mut().expect("the cut block is kept");
            if kept_rows == 0 {
                self.block_args.truncate(block.a_start as usize);
                self.blocks.pop();
            } else {
                block.rows = kept_rows as u32;
                let a_end = block.a_range().end;
                self.block_args.truncate(a_end);
            }
            for (pos, (args, weights)) in (row_start..).zip(edges) {
                self.edge_start[pos] = self.args.len() as u32;
                self.args.extend_from_slice(&args);
                self.weights.extend_from_slice(&weights);
                self.ops.0[pos] = OpCodes::code(Op::Nary(Nary::Dot));
            }
            self.edge_start[len] = self.args.len() as u32;
        }
        debug_assert!(self.blocks.last().is_none_or(|b| b.end() <= len));
        while self.guards.last().is_some_and(|g| g.at as usize > len) {
            self.guards.pop();
        }
        if let Some(reads) = &mut self.reads {
            reads.retain(|&(pos, _, _)| (pos as usize) < len);
        }
        if let Some(log) = &mut self.anomaly {
            log.locations.truncate(len);
            let kept = log
                .anomalous
                .partition_point(|&(at, _)| (at as usize) < len);
            log.anomalous.truncate(kept);
        }
        self.epoch += 1;
        self.generation = self.epoch as u32;
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

/// Each node's [`Op`] in one byte (an `Op` takes two): its index in [`ALL_OPS`]. The
/// codes left after the built-in ops number the graph's user-defined functions. Reading
/// `ops[pos]` gives the `Op` itself. On the W2 chain this byte is what keeps peak memory
/// under 48 bytes per recorded op (47, with the adjoints; it was 48).
#[derive(Debug, Default)]
pub(in crate::engine) struct OpCodes(pub(in crate::engine) Vec<u8>);

const N_UNARY: usize = Unary::ALL.len();
const N_BINARY: usize = Binary::ALL.len();
const NARY: [Nary; 5] = [
    Nary::Sum,
    Nary::Dot,
    Nary::LogSumExp,
    Nary::Max,
    Nary::Clamp,
];

/// Every op, in code order: the two leaves, then the unary, binary and n-ary ops in their
/// table order, fused, a block's dot ([`BLOCK_DOT_CODE`]), the user-defined functions.
static ALL_OPS: [Op; 256] = {
    let mut all = [Op::Input; 256];
    all[1] = Op::Constant;
    let mut k = 0;
    while k < N_UNARY {
        all[2 + k] = Op::Unary(Unary::ALL[k]);
        k += 1;
    }
    k = 0;
    while k < N_BINARY {
        all[2 + N_UNARY + k] = Op::Binary(Binary::ALL[k]);
        k += 1;
    }
    k = 0;
    while k < NARY.len() {
        all[2 + N_UNARY + N_BINARY + k] = Op::Nary(NARY[k]);
        k += 1;
    }
    all[FUSED_CODE] = Op::Fused;
    all[BLOCK_DOT_CODE as usize] = Op::Nary(Nary::Dot);
    k = 0;
    while k < MAX_CUSTOM {
        all[FIRST_CUSTOM + k] = Op::Custom(k as u8);
        k += 1;
    }
    all
};

/// The code of [`Op::Fused`], after the built-in ops.
const FUSED_CODE: usize = 2 + N_UNARY + N_BINARY + NARY.len();
/// The code of a [`DotBlock`]'s nodes: [`Nary::Dot`] to everyone who reads the op, a
/// node whose edges are its block's to the tape.
pub(in crate::engine) const BLOCK_DOT_CODE: u8 = (FUSED_CODE + 1) as u8;
/// The first code of [`Op::Custom`]; the rest of the byte is theirs.
const FIRST_CUSTOM: usize = BLOCK_DOT_CODE as usize + 1;
/// How many user-defined functions one graph can hold (the op codes left in a byte).
pub(in crate::engine) const MAX_CUSTOM: usize = 256 - FIRST_CUSTOM;

impl OpCodes {
    /// `op`'s index in [`ALL_OPS`]. The unary and binary tables list their ops in
    /// declaration order, so an op's discriminant is its index there.
    #[inline(always)]
    fn code(op: Op) -> u8 {
        (match op {
            Op::Input => 0,
            Op::Constant => 1,
            Op::Unary(u) => 2 + u as usize,
            Op::Binary(b) => 2 + N_UNARY + b as usize,
            // Exhaustive on purpose: a new n-ary op must be added to `NARY` too.
            Op::Nary(n) => {
                2 + N_UNARY
                    + N_BINARY
                    + match n {
                        Nary::Sum => 0,
                        Nary::Dot => 1,
                        Nary::LogSumExp => 2,
                        Nary::Max => 3,
                        Nary::Clamp => 4,
                    }
            }
            Op::Fused => FUSED_CODE,
            Op::Custom(k) => FIRST_CUSTOM + usize::from(k),
        }) as u8
    }

    #[inline(always)]
    pub(in crate::engine) fn push(&mut self, op: Op) {
        self.0.push(Self::code(op));
    }

    /// Pushes `op` `n` times.
    pub(in crate::engine) fn push_n(&mut self, op: Op, n: usize) {
        self.0.resize(self.0.len() + n, Self::code(op));
    }

    pub(in crate::engine) fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }
}

impl std::ops::Index<usize> for OpCodes {
    type Output = Op;

    #[inline]
    fn index(&self, pos: usize) -> &Op {
        &ALL_OPS[self.0[pos] as usize]
    }
}

// Keep the cost of the per-node storage visible to anyone changing it.
const _: () = assert!(std::mem::size_of::<Op>() == 2);
const _: () = assert!(FIRST_CUSTOM < 256, "op codes are one byte");

#[cfg(test)]
mod tests {
    use super::*;

    /// A handle for the tape alone: a key, and one made-up graph.
    #[derive(Clone, Copy)]
    struct Key(NodeKey);

    const OWNER: Owner = Owner {
        addr: 8 as *const (),
        id: 1,
    };

    impl Handle for Key {
        fn owner(self) -> *const () {
            OWNER.addr
        }
        fn owner_id(self) -> u64 {
            OWNER.id
        }
        fn key(self) -> NodeKey {
            self.0
        }
    }

    /// The first factors' positions of all blocks (`block_args`) count against the limits
    /// as the nodes and edges do (a block's `a_start` is a `u32`): past them, the products
    /// are recorded with edges. A lower limit stands in for 2^31 here.
    #[test]
    fn block_args_count_against_the_limits() {
        let location = Location::caller();
        let mut tape = Tape::with_capacity(0);
        // One output per product: each block adds one node and `inner` positions of `a`.
        let (inner, outputs) = (64, 1);
        let first = tape.inputs(&[0.5; 64 * 2], location).unwrap();
        let keys: Vec<Key> = tape.slots.keys_of_run(first, 64 * 2).map(Key).collect();
        let (a, b) = keys.split_at(inner);
        let product = |tape: &mut Tape| {
            tape.matrix_dots(OWNER, (a, b), None, inner, Pairing::Rows, location)
                .unwrap()
        };
        product(&mut tape);
        product(&mut tape);
        assert_eq!((tape.blocks.len(), tape.block_args.len()), (2, 2 * inner));
        // Nodes (130, and 1 more) and edges (0) are below 150, the blocks' positions
        // (128, and 64 more) are not.
        tape.fast_limit = 150;
        let third = product(&mut tape) as usize;
        assert_eq!(tape.blocks.len(), 2);
        assert_eq!(tape.args.len(), 2 * outputs * inner);
        assert_eq!(tape.values[third], 64.0 * 0.25);
    }

    /// Every op survives the trip through its one-byte code: the codes are the positions
    /// in `ALL_OPS`, which must list each op once.
    #[test]
    fn op_codes_round_trip() {
        let mut codes = OpCodes::default();
        for &op in &ALL_OPS {
            codes.push(op);
        }
        assert_eq!(ALL_OPS[255], Op::Custom((MAX_CUSTOM - 1) as u8));
        for (pos, &op) in ALL_OPS.iter().enumerate() {
            assert_eq!(codes[pos], op);
            if pos == usize::from(BLOCK_DOT_CODE) {
                // A block's dot reads as a dot; recording a dot gives the dot's own code.
                assert_eq!(op, Op::Nary(Nary::Dot));
                assert_ne!(OpCodes::code(op), BLOCK_DOT_CODE);
            } else {
                assert_eq!(OpCodes::code(op) as usize, pos);
            }
        }
    }
}
