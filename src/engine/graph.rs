//! [`Graph`]: owns every node; its recording order is the tape.
//!
//! Storage is struct-of-arrays, indexed by *tape position* (the order of recording):
//! `values[i]`, `ops[i]`, and node `i`'s edges `edge_start[i]..edge_start[i + 1]` into the
//! flat `args` (operand positions) and `weights` (the local partials, computed when the
//! node is recorded). A `slotmap::SlotMap<NodeKey, u32>` maps each user-visible handle to
//! its tape position; its generational keys are what make a handle to a released node
//! detectable. The reverse sweep never touches the slot map: it walks the flat arrays.
//!
//! An `f64` operand (as in `x * 2.0`) is stored as an edge whose `arg` is [`CONST_ARG`] and
//! whose weight slot holds the constant itself, so that the differentiable backward can
//! re-evaluate the op's rule with it. The plain sweep sends such edges to a sink slot.

use std::cell::RefCell;
use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering};

use slotmap::SlotMap;

use crate::error::{Anomaly, Error};
use crate::linalg::Pairing;
use crate::op::{Binary, Nary, Op, Unary};
use crate::var::{Operand, Var};

slotmap::new_key_type! {
    /// The key of a node in its graph's slot map: an index plus a version, so a key to a
    /// released (and possibly reused) slot is detected instead of read.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::Graph;
    ///
    /// let g = Graph::new();
    /// let (a, b) = (g.var(1.0), g.var(2.0));
    /// assert_ne!(a.key(), b.key());
    /// ```
    pub struct NodeKey;
}

/// The `arg` of an edge whose operand is an untracked `f64` constant.
pub(crate) const CONST_ARG: u32 = u32::MAX;
/// Positions are `u32`, and `u32::MAX` is [`CONST_ARG`].
const MAX_NODES: usize = (u32::MAX - 1) as usize;

/// Below this many nodes and edges, [`Tape::finish`] needs no exact test of the limits.
const FAST_LIMIT: usize = 1 << 31;
const _: () = assert!(FAST_LIMIT <= MAX_NODES);

/// A unique id per graph, to recognise handles from another graph in messages.
static NEXT_GRAPH_ID: AtomicU64 = AtomicU64::new(1);

/// An operand as the tape sees it: its value, and its position (or [`CONST_ARG`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Resolved {
    pub(crate) value: f64,
    pub(crate) arg: u32,
}

impl Resolved {
    pub(crate) fn constant(value: f64) -> Self {
        Resolved {
            value,
            arg: CONST_ARG,
        }
    }
}

/// `x`'s tape position, for the loops that resolve many operands at once; for a handle
/// that is released or of another graph, [`CONST_ARG`], and the error that the one-operand
/// path ([`Graph::resolve`]) reports for it is kept in `first_error` if none is yet (the
/// caller reports it after the loop, which stays tighter without an early exit).
#[inline(always)]
fn position_or_note(
    graph: &Graph,
    slots: &SlotMap<NodeKey, u32>,
    values: &[f64],
    x: Var<'_>,
    first_error: &mut Option<Error>,
) -> u32 {
    if std::ptr::eq(x.graph(), graph)
        && let Some(&pos) = slots.get(x.key())
    {
        return pos;
    }
    note_error(graph, slots, values, x, first_error);
    CONST_ARG
}

/// [`position_or_note`]'s rare case, out of line.
#[cold]
#[inline(never)]
fn note_error(
    graph: &Graph,
    slots: &SlotMap<NodeKey, u32>,
    values: &[f64],
    x: Var<'_>,
    first_error: &mut Option<Error>,
) {
    if first_error.is_none() {
        *first_error = graph.resolve_in(slots, values, x.into()).err();
    }
}

/// The nodes, struct-of-arrays (see the module docs).
#[derive(Debug)]
pub(crate) struct Tape {
    pub(crate) slots: SlotMap<NodeKey, u32>,
    pub(crate) values: Vec<f64>,
    pub(crate) ops: OpCodes,
    /// `edge_start[i]..edge_start[i + 1]` are node `i`'s edges; always one longer than `values`.
    pub(crate) edge_start: Vec<u32>,
    pub(crate) args: Vec<u32>,
    pub(crate) weights: Vec<f64>,
    /// Counts releases, so a `Gradients` knows which positions were re-recorded after it.
    pub(crate) epoch: u64,
    /// `(epoch, mark)` of past releases, kept as a stack whose marks increase: the first
    /// entry after a given epoch holds the lowest mark released since then.
    releases: Vec<(u64, u32)>,
    pub(crate) anomaly: Option<Box<AnomalyLog>>,
    /// [`FAST_LIMIT`], or 0 in anomaly mode: [`Tape::finish`] records a node inline only
    /// while `pos | edges` is below it, so one comparison covers both the limits and the
    /// mode.
    fast_limit: usize,
    /// Operand values of the n-ary node being recorded (kept to avoid reallocating).
    scratch: Vec<f64>,
    /// The resolved operands of a matrix product ([`Tape::matrix_dots`]): positions and
    /// values of the matrix's entries, then of the vector's (kept to avoid reallocating).
    matrix_args: Vec<u32>,
    matrix_values: Vec<f64>,
}

/// What anomaly mode keeps: where each node was recorded, and the first bad value.
#[derive(Debug, Default)]
pub(crate) struct AnomalyLog {
    pub(crate) locations: Vec<Option<&'static Location<'static>>>,
    first: Option<(u32, Anomaly)>,
}

impl Tape {
    fn with_capacity(nodes: usize) -> Self {
        let mut edge_start = Vec::with_capacity(nodes + 1);
        edge_start.push(0);
        Tape {
            slots: SlotMap::with_capacity_and_key(nodes),
            values: Vec::with_capacity(nodes),
            ops: OpCodes(Vec::with_capacity(nodes)),
            edge_start,
            args: Vec::with_capacity(nodes * 2),
            weights: Vec::with_capacity(nodes * 2),
            epoch: 0,
            releases: Vec::new(),
            anomaly: None,
            fast_limit: FAST_LIMIT,
            scratch: Vec::new(),
            matrix_args: Vec::new(),
            matrix_values: Vec::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }

    /// Node `pos`'s edges as `(args, weights)`.
    #[inline]
    pub(crate) fn edges(&self, pos: usize) -> (&[u32], &[f64]) {
        let range = self.edge_start[pos] as usize..self.edge_start[pos + 1] as usize;
        (&self.args[range.clone()], &self.weights[range])
    }

    /// Node `pos`'s operand values in operand order (constants included).
    pub(crate) fn operand_values(&self, pos: usize) -> Vec<f64> {
        let (args, weights) = self.edges(pos);
        args.iter()
            .zip(weights)
            .map(|(&a, &w)| {
                if a == CONST_ARG {
                    w
                } else {
                    self.values[a as usize]
                }
            })
            .collect()
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
        if self.anomaly.is_some() {
            self.note_for_anomaly(pos, location);
        }
        Ok(pos as u32)
    }

    #[cold]
    fn note_for_anomaly(&mut self, pos: usize, location: &'static Location<'static>) {
        let value = self.values[pos];
        let found = (!value.is_finite()).then(|| Anomaly {
            op: self.op_name(pos),
            inputs: self.operand_values(pos),
            output: value,
            gradient: None,
            location: Some(location),
        });
        let log = self.anomaly.as_mut().expect("anomaly mode is on");
        log.locations.push(Some(location));
        if let (None, Some(found)) = (&log.first, found) {
            log.first = Some((pos as u32, found));
        }
    }

    pub(crate) fn op_name(&self, pos: usize) -> &'static str {
        match self.ops[pos] {
            Op::Input => "input",
            Op::Constant => "constant",
            Op::Unary(op) => op.name(),
            Op::Binary(op) => op.name(),
            Op::Nary(op) => op.name(),
        }
    }

    /// Where node `pos` was recorded, if anomaly mode was on then.
    pub(crate) fn location(&self, pos: usize) -> Option<&'static Location<'static>> {
        self.anomaly
            .as_ref()
            .and_then(|log| log.locations.get(pos).copied().flatten())
    }

    /// The first forward anomaly at or before `pos`.
    pub(crate) fn anomaly_up_to(&self, pos: u32) -> Option<&Anomaly> {
        match &self.anomaly.as_ref()?.first {
            Some((at, a)) if *at <= pos => Some(a),
            _ => None,
        }
    }

    /// In anomaly mode, attributes the nodes from position `start` on, which tapegrad
    /// recorded on the user's behalf (the differentiable backward), to the user's call at
    /// `location`; returns the first anomaly among them.
    pub(crate) fn adopt_from(
        &mut self,
        start: usize,
        location: &'static Location<'static>,
    ) -> Option<Anomaly> {
        let log = self.anomaly.as_mut()?;
        log.locations
            .iter_mut()
            .skip(start)
            .for_each(|l| *l = Some(location));
        match &mut log.first {
            Some((at, a)) if *at as usize >= start => {
                a.location = Some(location);
                Some(a.clone())
            }
            _ => None,
        }
    }

    /// Records one input node per value of `xs`; returns the first one's position.
    ///
    /// Inputs have no edges, so they go on in bulk: a model's thousands of parameters cost
    /// one capacity test per array, not one per parameter and array.
    pub(crate) fn inputs(
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
        }
        Ok(first as u32)
    }

    #[inline]
    pub(crate) fn leaf(
        &mut self,
        op: Op,
        value: f64,
        location: &'static Location<'static>,
    ) -> Result<u32, Error> {
        self.finish(op, value, location)
    }

    /// Records `op(x)`; `x` is a tracked operand.
    #[inline(always)]
    pub(crate) fn unary(
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
    pub(crate) fn binary(
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
    pub(crate) fn binary_of_kinds(
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
    pub(crate) fn nary<X>(
        &mut self,
        op: Nary,
        operands: impl IntoIterator<Item = X>,
        resolve: impl Fn(&SlotMap<NodeKey, u32>, &[f64], X) -> Result<Resolved, Error>,
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
    pub(crate) fn nary_vars(
        &mut self,
        graph: &Graph,
        op: Nary,
        parts: &[&[Var<'_>]],
        location: &'static Location<'static>,
    ) -> Result<u32, Error> {
        let start = self.args.len();
        let mut first_error = None;
        for part in parts {
            let (slots, values) = (&self.slots, &self.values);
            self.args.extend(
                part.iter()
                    .map(|&x| position_or_note(graph, slots, values, x, &mut first_error)),
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
    /// order, the same value bit for bit.
    ///
    /// Every handle of `a` and `b` is resolved (slot lookup, value) once, not once per
    /// output that uses it, and in the order the dots read them (`b` column by column for
    /// [`Pairing::Columns`]), so that each dot's operands are contiguous. A bad handle
    /// anywhere is reported before anything is recorded.
    pub(crate) fn matrix_dots(
        &mut self,
        graph: &Graph,
        (a, b): (&[Var<'_>], &[Var<'_>]),
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
        let mut resolve =
            |&v: &Var<'_>| position_or_note(graph, slots, node_values, v, &mut first_error);
        positions.extend(a.iter().map(&mut resolve));
        match pairing {
            Pairing::Rows => positions.extend(b.iter().map(&mut resolve)),
            Pairing::Columns => {
                for j in 0..outputs {
                    positions.extend(b[j..].iter().step_by(outputs).map(&mut resolve));
                }
            }
        }
        let result = match first_error {
            Some(e) => Err(e),
            None => {
                values.extend(positions.iter().map(|&pos| node_values[pos as usize]));
                let (a_args, b_args) = positions.split_at(a.len());
                let (a_values, b_values) = values.split_at(a.len());
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
        };
        self.matrix_args = positions;
        self.matrix_values = values;
        result
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

    /// Frees every node at position `len` and above.
    fn truncate(&mut self, len: usize) {
        let edges = self.edge_start[len] as usize;
        self.values.truncate(len);
        self.ops.truncate(len);
        self.edge_start.truncate(len + 1);
        self.args.truncate(edges);
        self.weights.truncate(edges);
        self.slots.retain(|_, pos| (*pos as usize) < len);
        if let Some(log) = &mut self.anomaly {
            log.locations.truncate(len);
            if matches!(log.first, Some((at, _)) if at as usize >= len) {
                log.first = None;
            }
        }
        self.epoch += 1;
        let mark = len as u32;
        while self.releases.last().is_some_and(|&(_, m)| m >= mark) {
            self.releases.pop();
        }
        self.releases.push((self.epoch, mark));
    }

    /// The lowest position released (and so possibly re-recorded) since `epoch`.
    pub(crate) fn released_since(&self, epoch: u64) -> u32 {
        let first_after = self.releases.partition_point(|&(e, _)| e <= epoch);
        self.releases
            .get(first_after)
            .map_or(u32::MAX, |&(_, mark)| mark)
    }
}

/// A computation graph: owns every node, records operations in order (the tape), and
/// differentiates by one reverse sweep over that order.
///
/// `Graph` is `Send` but not `Sync`: build and differentiate a graph on one thread at a
/// time (move it between threads freely, or give each thread its own).
///
/// # Examples
///
/// ```
/// use tapegrad::Graph;
///
/// let g = Graph::new();
/// let x = g.var(2.0);
/// let y = g.var(3.0);
/// let f = x.exp() / y.ln();
/// let grads = f.backward();
/// // d/dx e^x / ln y = e^x / ln y;  d/dy = -e^x / (y ln^2 y)
/// approx::assert_relative_eq!(grads[x], 2f64.exp() / 3f64.ln(), max_relative = 1e-15);
/// approx::assert_relative_eq!(grads[y], -2f64.exp() / (3.0 * 3f64.ln().powi(2)), max_relative = 1e-15);
/// ```
///
/// Sharing a graph between threads is rejected at compile time:
///
/// ```compile_fail,E0277
/// fn needs_sync<T: Sync>(_: &T) {}
/// needs_sync(&tapegrad::Graph::new());
/// ```
///
/// and so is sending a `Var` (a reference to its graph) to another thread, even a scoped
/// one that could borrow:
///
/// ```compile_fail,E0277
/// let g = tapegrad::Graph::new();
/// let x = g.var(1.0);
/// std::thread::scope(|s| {
///     s.spawn(move || x.value());
/// });
/// ```
///
/// A `Var` cannot outlive its graph:
///
/// ```compile_fail,E0597
/// let x = {
///     let g = tapegrad::Graph::new();
///     g.var(1.0)
/// };
/// x.value();
/// ```
#[derive(Debug)]
pub struct Graph {
    id: u64,
    pub(crate) tape: RefCell<Tape>,
    /// Operands of an n-ary node gathered from an iterator (kept to avoid reallocating).
    operands: RefCell<Vec<Resolved>>,
}

/// A point on the tape: [`Graph::release`] frees every node recorded after it.
///
/// # Examples
///
/// ```
/// use tapegrad::Graph;
///
/// let g = Graph::new();
/// let w = g.var(0.5);
/// let mark = g.mark();
/// for _ in 0..3 {
///     let loss = (w * 3.0 - 1.0).powi(2);
///     assert_eq!(loss.backward()[w], 2.0 * (0.5 * 3.0 - 1.0) * 3.0);
///     g.release(mark);
///     assert_eq!(g.len(), 1);
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    graph: u64,
    len: u32,
}

impl Default for Graph {
    fn default() -> Self {
        Graph::new()
    }
}

impl Graph {
    /// An empty graph.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// assert!(g.is_empty());
    /// ```
    pub fn new() -> Self {
        Graph::with_capacity(0)
    }

    /// An empty graph with room for `nodes` nodes (and twice as many edges) before it
    /// reallocates.
    ///
    /// # Panics
    ///
    /// As `Vec::with_capacity`: if the storage for `nodes` exceeds `isize::MAX` bytes (or,
    /// by aborting, if the allocation fails).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::with_capacity(1_000);
    /// assert_eq!(g.len(), 0);
    /// ```
    pub fn with_capacity(nodes: usize) -> Self {
        Graph {
            id: NEXT_GRAPH_ID.fetch_add(1, Ordering::Relaxed),
            tape: RefCell::new(Tape::with_capacity(nodes)),
            operands: RefCell::new(Vec::new()),
        }
    }

    /// This graph's id, unique in the process; error messages name graphs by it.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::Graph;
    /// assert_ne!(Graph::new().id(), Graph::new().id());
    /// ```
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The number of nodes on the tape.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// let _y = x * x + 1.0;
    /// assert_eq!(g.len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        self.tape.borrow().len()
    }

    /// Whether the tape has no nodes.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// assert!(g.is_empty());
    /// g.var(1.0);
    /// assert!(!g.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The heap bytes the graph's storage holds now (capacity, not just what is used).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let before = g.heap_bytes();
    /// let x = g.var(1.0);
    /// for _ in 0..1000 { let _ = x.exp(); }
    /// assert!(g.heap_bytes() > before);
    /// ```
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let t = self.tape.borrow();
        // A slot is the u32 position plus slotmap's u32 version.
        t.slots.capacity() * (size_of::<u32>() + size_of::<u32>())
            + t.values.capacity() * size_of::<f64>()
            + t.ops.0.capacity() * size_of::<u8>()
            + t.edge_start.capacity() * size_of::<u32>()
            + t.args.capacity() * size_of::<u32>()
            + t.weights.capacity() * size_of::<f64>()
            + t.scratch.capacity() * size_of::<f64>()
            + t.matrix_args.capacity() * size_of::<u32>()
            + t.matrix_values.capacity() * size_of::<f64>()
            + t.releases.capacity() * size_of::<(u64, u32)>()
            + self.operands.borrow().capacity() * size_of::<Resolved>()
            + t.anomaly.as_ref().map_or(0, |a| {
                a.locations.capacity() * size_of::<Option<&'static Location<'static>>>()
            })
    }

    /// A differentiable input with value `x`.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(3.0);
    /// assert_eq!((x * x).backward()[x], 6.0);
    /// ```
    ///
    /// # Panics
    ///
    /// If the graph is full (`u32::MAX - 1` nodes).
    #[track_caller]
    pub fn var(&self, x: f64) -> Var<'_> {
        self.leaf(Op::Input, x)
    }

    /// Differentiable inputs, one per value.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let xs = g.vars(&[1.0, 2.0]);
    /// assert_eq!(xs[1].value(), 2.0);
    /// ```
    ///
    /// # Panics
    ///
    /// If the graph is full.
    #[track_caller]
    pub fn vars(&self, xs: &[f64]) -> Vec<Var<'_>> {
        // One borrow of the tape for all of them (a model's thousands of parameters).
        let location = Location::caller();
        let mut tape = self.tape.borrow_mut();
        let first = crate::var::or_panic(tape.inputs(xs, location));
        let slots = &mut tape.slots;
        (first..)
            .take(xs.len())
            .map(|pos| Var::from_parts(self, slots.insert(pos)))
            .collect()
    }

    /// A constant: a node with value `c` that is never differentiated (its gradient is
    /// always reported, and is the derivative with respect to it, but nothing depends on
    /// it being read).
    ///
    /// Plain `f64` operands (`x * 2.0`) need no constant node; use this where a `Var` is
    /// required, e.g. to start a sum.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let c = g.constant(2.0);
    /// let x = g.var(5.0);
    /// assert_eq!((c * x).backward()[x], 2.0);
    /// ```
    ///
    /// # Panics
    ///
    /// If the graph is full.
    #[track_caller]
    pub fn constant(&self, c: f64) -> Var<'_> {
        self.leaf(Op::Constant, c)
    }

    #[track_caller]
    fn leaf(&self, op: Op, value: f64) -> Var<'_> {
        let mut tape = self.tape.borrow_mut();
        let pos = crate::var::or_panic(tape.leaf(op, value, Location::caller()));
        self.handle(&mut tape, pos)
    }

    /// A new user-visible handle for the node at `pos`.
    #[inline]
    pub(crate) fn handle(&self, tape: &mut Tape, pos: u32) -> Var<'_> {
        Var::from_parts(self, tape.slots.insert(pos))
    }

    /// Resolves an operand of this graph to its tape position and value.
    #[inline]
    pub(crate) fn resolve<'a>(
        &self,
        tape: &Tape,
        x: impl Into<Operand<'a>>,
    ) -> Result<Resolved, Error> {
        self.resolve_in(&tape.slots, &tape.values, x.into())
    }

    /// [`Graph::resolve`] against the tape's fields, for use while other fields are borrowed.
    #[inline]
    fn resolve_in(
        &self,
        slots: &SlotMap<NodeKey, u32>,
        values: &[f64],
        x: Operand<'_>,
    ) -> Result<Resolved, Error> {
        match x {
            Operand::Var(x) => self.resolve_var_in(slots, values, x),
            Operand::Const(c) => Ok(Resolved::constant(c)),
        }
    }

    /// Resolves a `Var` of this graph to its tape position and value.
    #[inline(always)]
    pub(crate) fn resolve_var(&self, tape: &Tape, x: Var<'_>) -> Result<Resolved, Error> {
        self.resolve_var_in(&tape.slots, &tape.values, x)
    }

    #[inline(always)]
    fn resolve_var_in(
        &self,
        slots: &SlotMap<NodeKey, u32>,
        values: &[f64],
        x: Var<'_>,
    ) -> Result<Resolved, Error> {
        if !std::ptr::eq(x.graph(), self) {
            return Err(self.foreign(x));
        }
        let pos = *slots.get(x.key()).ok_or(Error::Released)?;
        Ok(Resolved {
            value: values[pos as usize],
            arg: pos,
        })
    }

    /// The error for `x`, a handle of another graph, used with this one.
    #[cold]
    fn foreign(&self, x: Var<'_>) -> Error {
        Error::ForeignHandle {
            what: "Var",
            owner: x.graph().id,
            used_with: self.id,
        }
    }

    /// The sum of `terms` as one n-ary node (a constant 0 if there are none).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let xs = g.vars(&[1.0, 2.0, 3.0]);
    /// let s = g.sum(xs.iter().map(|x| x.powi(2)));
    /// assert_eq!(s.value(), 14.0);
    /// assert_eq!(s.backward()[xs[2]], 6.0);
    /// ```
    ///
    /// # Panics
    ///
    /// If a term is released or from another graph (see [`Graph::try_sum`]).
    #[track_caller]
    pub fn sum<'g>(&'g self, terms: impl IntoIterator<Item = Var<'g>>) -> Var<'g> {
        crate::var::or_panic(self.try_sum(terms))
    }

    /// [`Graph::sum`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::Released`] or [`Error::ForeignHandle`] for a bad term; nothing is recorded.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::Graph;
    /// let (g, h) = (Graph::new(), Graph::new());
    /// let x = h.var(1.0);
    /// assert!(g.try_sum([g.var(1.0), x]).is_err());
    /// ```
    #[track_caller]
    pub fn try_sum<'g>(
        &'g self,
        terms: impl IntoIterator<Item = Var<'g>>,
    ) -> Result<Var<'g>, Error> {
        self.try_nary_iter(Nary::Sum, terms)
    }

    /// `sum_i a[i] * b[i]` as one fused node; either side may be `Var`s or `f64`s.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let w = g.vars(&[1.0, 2.0]);
    /// let y = g.dot(&w, &[3.0, 4.0]);
    /// assert_eq!(y.value(), 11.0);
    /// assert_eq!(y.backward()[w[1]], 4.0);
    /// ```
    ///
    /// # Panics
    ///
    /// If the lengths differ, or a `Var` is released or from another graph.
    #[track_caller]
    pub fn dot<'g, A, B>(&'g self, a: &[A], b: &[B]) -> Var<'g>
    where
        A: Copy + Into<Operand<'g>>,
        B: Copy + Into<Operand<'g>>,
    {
        crate::var::or_panic(self.try_dot(a, b))
    }

    /// [`Graph::dot`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::BadOperands`] if the lengths differ; [`Error::Released`] or
    /// [`Error::ForeignHandle`] for a bad `Var`.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let w = g.vars(&[1.0, 2.0]);
    /// assert!(g.try_dot(&w, &[3.0]).is_err());
    /// ```
    #[track_caller]
    pub fn try_dot<'g, A, B>(&'g self, a: &[A], b: &[B]) -> Result<Var<'g>, Error>
    where
        A: Copy + Into<Operand<'g>>,
        B: Copy + Into<Operand<'g>>,
    {
        if a.len() != b.len() {
            return Err(Error::BadOperands {
                op: "dot",
                why: format!(
                    "the two sides have lengths {} and {}; they must be equal",
                    a.len(),
                    b.len()
                ),
            });
        }
        let operands = a
            .iter()
            .map(|&x| x.into())
            .chain(b.iter().map(|&x| x.into()));
        self.try_nary(Nary::Dot, operands)
    }

    /// `ln(sum_i e^terms[i])` as one fused, numerically stable node; its partials are the
    /// softmax of `terms`.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let xs = g.vars(&[1000.0, 1000.0]);
    /// let y = g.logsumexp(xs.iter().copied());
    /// approx::assert_relative_eq!(y.value(), 1000.0 + 2f64.ln());
    /// assert_eq!(y.backward()[xs[0]], 0.5);
    /// ```
    ///
    /// # Panics
    ///
    /// If there are no terms, or a term is released or from another graph.
    #[track_caller]
    pub fn logsumexp<'g>(&'g self, terms: impl IntoIterator<Item = Var<'g>>) -> Var<'g> {
        crate::var::or_panic(self.try_logsumexp(terms))
    }

    /// [`Graph::logsumexp`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::BadOperands`] for no terms; [`Error::Released`] or [`Error::ForeignHandle`]
    /// for a bad term.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// assert!(g.try_logsumexp([]).is_err());
    /// ```
    #[track_caller]
    pub fn try_logsumexp<'g>(
        &'g self,
        terms: impl IntoIterator<Item = Var<'g>>,
    ) -> Result<Var<'g>, Error> {
        let mut terms = terms.into_iter().peekable();
        if terms.peek().is_none() {
            return Err(Error::BadOperands {
                op: "logsumexp",
                why: "needs at least one term (the log of an empty sum is -infinity)".into(),
            });
        }
        self.try_nary_iter(Nary::LogSumExp, terms)
    }

    /// Records an n-ary node over operands produced by an arbitrary iterator. The iterator
    /// may itself record nodes (`g.sum(xs.iter().map(|x| x.exp()))`), so each item is
    /// resolved on its own, with no tape borrow held while the iterator runs.
    #[track_caller]
    fn try_nary_iter<'g>(
        &'g self,
        op: Nary,
        terms: impl IntoIterator<Item = Var<'g>>,
    ) -> Result<Var<'g>, Error> {
        let location = Location::caller();
        // Reuse one buffer across calls; a nested call (from inside the iterator) finds it
        // taken and uses a fresh one.
        let mut buffer = std::mem::take(&mut *self.operands.borrow_mut());
        buffer.clear();
        let epoch = self.tape.borrow().epoch;
        let mut result = Ok(());
        for x in terms {
            let resolved = self.resolve(&self.tape.borrow(), x);
            match resolved {
                Ok(r) => buffer.push(r),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let mut tape = self.tape.borrow_mut();
        if result.is_ok() && tape.epoch != epoch {
            result = Err(Error::BadOperands {
                op: op.name(),
                why: "the graph was released while the operands were being produced; \
                      release before or after recording the node, not from its operand iterator"
                    .into(),
            });
        }
        let pos =
            result.and_then(|()| tape.nary(op, buffer.iter().copied(), |_, _, r| Ok(r), location));
        *self.operands.borrow_mut() = buffer;
        Ok(self.handle(&mut tape, pos?))
    }

    /// The dot products of the rows of `a` with the columns or rows of `b` (see
    /// [`Tape::matrix_dots`]), as handles in output order.
    #[track_caller]
    pub(crate) fn try_matrix_dots<'g>(
        &'g self,
        (a, b): (&[Var<'g>], &[Var<'g>]),
        inner: usize,
        pairing: Pairing,
    ) -> Result<Vec<Var<'g>>, Error> {
        let location = Location::caller();
        let mut tape = self.tape.borrow_mut();
        let first = tape.matrix_dots(self, (a, b), inner, pairing, location)?;
        let end = tape.len() as u32;
        let slots = &mut tape.slots;
        Ok((first..end)
            .map(|pos| Var::from_parts(self, slots.insert(pos)))
            .collect())
    }

    /// Records an n-ary node over the `Var`s of `parts`, in order (see [`Tape::nary_vars`]).
    #[track_caller]
    pub(crate) fn try_nary_vars<'g>(
        &'g self,
        op: Nary,
        parts: &[&[Var<'g>]],
    ) -> Result<Var<'g>, Error> {
        let location = Location::caller();
        let mut tape = self.tape.borrow_mut();
        let pos = tape.nary_vars(self, op, parts, location)?;
        Ok(self.handle(&mut tape, pos))
    }

    #[track_caller]
    pub(crate) fn try_nary<'g>(
        &'g self,
        op: Nary,
        operands: impl IntoIterator<Item = Operand<'g>>,
    ) -> Result<Var<'g>, Error> {
        let location = Location::caller();
        let mut tape = self.tape.borrow_mut();
        let resolve =
            |slots: &SlotMap<NodeKey, u32>, values: &[f64], x| self.resolve_in(slots, values, x);
        let pos = tape.nary(op, operands, resolve, location)?;
        Ok(self.handle(&mut tape, pos))
    }

    /// A mark at the current end of the tape, for [`Graph::release`].
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// let mark = g.mark();
    /// let _ = x.exp();
    /// g.release(mark);
    /// assert_eq!(g.len(), 1);
    /// assert_eq!(x.value(), 1.0);
    /// ```
    pub fn mark(&self) -> Mark {
        Mark {
            graph: self.id,
            len: self.len() as u32,
        }
    }

    /// Frees every node recorded after `mark` (at tape positions from the mark on), keeping
    /// the earlier ones. Handles to freed nodes become errors when used, never wrong values.
    /// Releasing to a mark at or past the end of the tape does nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let w = g.var(2.0);
    /// let mark = g.mark();
    /// let y = w * w;
    /// g.release(mark);
    /// assert!(y.try_value().is_err());
    /// ```
    ///
    /// # Panics
    ///
    /// If `mark` belongs to another graph (see [`Graph::try_release`]).
    #[track_caller]
    pub fn release(&self, mark: Mark) {
        crate::var::or_panic(self.try_release(mark))
    }

    /// [`Graph::release`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::ForeignHandle`] if `mark` belongs to another graph.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::Graph;
    /// let (g, h) = (Graph::new(), Graph::new());
    /// assert!(g.try_release(h.mark()).is_err());
    /// ```
    pub fn try_release(&self, mark: Mark) -> Result<(), Error> {
        if mark.graph != self.id {
            return Err(Error::ForeignHandle {
                what: "Mark",
                owner: mark.graph,
                used_with: self.id,
            });
        }
        let mut tape = self.tape.borrow_mut();
        if (mark.len as usize) < tape.len() {
            tape.truncate(mark.len as usize);
        }
        Ok(())
    }

    /// Turns anomaly mode on or off (it is off by default, and costs nothing then).
    ///
    /// While it is on, every node remembers the source line that recorded it, the first
    /// op whose value is NaN or infinite is remembered (see [`Graph::anomaly`]), and
    /// backward checks every gradient it propagates: [`Var::try_backward`] then reports
    /// the first anomaly, forward or backward, as [`Error::Anomaly`] naming the op, its
    /// input values and its line, and [`Var::backward`] panics with that message.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// g.set_anomaly_mode(true);
    /// let x = g.var(0.0);
    /// let y = x.sqrt(); // finite value, but an infinite derivative at 0
    /// let err = y.try_backward().unwrap_err();
    /// assert!(err.to_string().contains("backward of sqrt"));
    /// ```
    pub fn set_anomaly_mode(&self, on: bool) {
        let mut tape = self.tape.borrow_mut();
        match (on, tape.anomaly.is_some()) {
            (true, false) => {
                let len = tape.len();
                tape.anomaly = Some(Box::new(AnomalyLog {
                    locations: vec![None; len],
                    first: None,
                }));
                tape.fast_limit = 0;
            }
            (false, true) => {
                tape.anomaly = None;
                tape.fast_limit = FAST_LIMIT;
            }
            _ => {}
        }
    }

    /// Whether anomaly mode is on.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// assert!(!g.anomaly_mode());
    /// ```
    pub fn anomaly_mode(&self) -> bool {
        self.tape.borrow().anomaly.is_some()
    }

    /// In anomaly mode, the first op recorded so far whose value was NaN or infinite.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// g.set_anomaly_mode(true);
    /// let x = g.var(1000.0);
    /// let _ = x.exp();
    /// assert_eq!(g.anomaly().unwrap().op, "exp");
    /// ```
    pub fn anomaly(&self) -> Option<Anomaly> {
        self.tape.borrow().anomaly_up_to(u32::MAX).cloned()
    }

    /// Changes the value of an input made by [`Graph::var`]: how an optimizer updates
    /// parameters that live across training steps.
    ///
    /// A recorded node keeps the value and partials it was recorded with, so changing an
    /// input that some node uses would leave that node silently stale; that is refused.
    /// The intended order is: record the step, backward, [`Graph::release`] the step's
    /// nodes (to a mark taken after the parameters were created), then update. The check
    /// costs time proportional to the edges recorded after `x`, which is none in that use.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let w = g.var(1.0);
    /// let mark = g.mark();
    /// let grad = (w * 3.0).powi(2).backward()[w]; // d(9 w^2)/dw = 18 w = 18
    /// g.release(mark);
    /// g.set_value(w, 1.0 - 0.01 * grad);
    /// assert_eq!(w.value(), 1.0 - 0.18);
    /// ```
    ///
    /// # Panics
    ///
    /// In the cases where [`Graph::try_set_value`] returns an error.
    #[track_caller]
    pub fn set_value(&self, x: Var<'_>, value: f64) {
        crate::var::or_panic(self.try_set_value(x, value))
    }

    /// [`Graph::set_value`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::Released`] or [`Error::ForeignHandle`] for a bad `x`;
    /// [`Error::BadOperands`] if `x` is not an input, or if a node recorded after it uses
    /// it. Nothing changes on error.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let w = g.var(1.0);
    /// let y = w.exp();
    /// assert!(g.try_set_value(w, 2.0).is_err()); // y still uses w = 1
    /// assert!(g.try_set_value(y, 2.0).is_err()); // not an input
    /// assert_eq!(w.value(), 1.0);
    /// ```
    pub fn try_set_value(&self, x: Var<'_>, value: f64) -> Result<(), Error> {
        let mut tape = self.tape.borrow_mut();
        let pos = self.resolve(&tape, x)?.arg as usize;
        if tape.ops[pos] != Op::Input {
            return Err(Error::BadOperands {
                op: "set_value",
                why: format!(
                    "only an input made by Graph::var can change its value; this node is {}",
                    tape.op_name(pos)
                ),
            });
        }
        let later_edges = tape.edge_start[pos + 1] as usize;
        if tape.args[later_edges..].contains(&(pos as u32)) {
            return Err(Error::BadOperands {
                op: "set_value",
                why: "a node recorded after this input uses it and would keep the old value; \
                      release those nodes (Graph::mark / Graph::release) before changing it"
                    .into(),
            });
        }
        tape.values[pos] = value;
        Ok(())
    }
}

/// Each node's [`Op`] in one byte (an `Op` takes two): its index in [`ALL_OPS`]. Reading
/// `ops[pos]` gives the `Op` itself. On the W2 chain this byte is what keeps peak memory
/// under 48 bytes per recorded op (47, with the adjoints; it was 48).
#[derive(Debug, Default)]
pub(crate) struct OpCodes(Vec<u8>);

const N_UNARY: usize = Unary::ALL.len();
const N_BINARY: usize = Binary::ALL.len();
const NARY: [Nary; 3] = [Nary::Sum, Nary::Dot, Nary::LogSumExp];

/// Every op, in code order: the two leaves, then the unary, binary and n-ary ops in their
/// table order.
static ALL_OPS: [Op; 2 + N_UNARY + N_BINARY + NARY.len()] = {
    let mut all = [Op::Input; 2 + N_UNARY + N_BINARY + NARY.len()];
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
    all
};

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
                    }
            }
        }) as u8
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, op: Op) {
        self.0.push(Self::code(op));
    }

    /// Pushes `op` `n` times.
    fn push_n(&mut self, op: Op, n: usize) {
        self.0.resize(self.0.len() + n, Self::code(op));
    }

    pub(crate) fn truncate(&mut self, len: usize) {
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
const _: () = assert!(ALL_OPS.len() <= 256, "op codes are one byte");

#[cfg(test)]
mod tests {
    use super::*;

    /// Every op survives the trip through its one-byte code: the codes are the positions
    /// in `ALL_OPS`, which must list each op once.
    #[test]
    fn op_codes_round_trip() {
        let mut codes = OpCodes::default();
        for &op in &ALL_OPS {
            codes.push(op);
        }
        for (pos, &op) in ALL_OPS.iter().enumerate() {
            assert_eq!(codes[pos], op);
            assert_eq!(OpCodes::code(op) as usize, pos);
        }
    }
}
