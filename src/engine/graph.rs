//! The types a graph is made of and its recording API: [`Graph`] (recording, marks,
//! release, anomaly mode, parameter updates), [`Var`] (a `Copy` handle to a node), [`Mark`],
//! and the traits of the user-defined functions a graph holds ([`CustomFn`], [`ScalarFn`]:
//! a graph stores them and they take `Var`s, so they live beside both). The arithmetic on
//! `Var` lives in `var.rs`, the sweeps in `backward.rs` and `differentiable.rs`, `Inputs` in
//! `inputs.rs`, the thread's pool of tapes in `pool.rs`; the storage in `tape.rs`. It may
//! not use those files but `pool.rs` (they use it).

use std::cell::RefCell;
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::{Anomaly, Error, or_panic};
use super::guard::ReadLog;
use super::keys::{Handle, Keys, KnownRuns, NodeKey, Owner, READ_THE_TAPE};
use super::matrix::Pairing;
use super::op::{Nary, Op};
use super::programs::Programs;
use super::scalar::{Operand, Scalar};
use super::tape::{AnomalyLog, FAST_LIMIT, Recorded, Resolved, Tape, pack_at, resolve};

/// A unique id per graph, to recognise handles from another graph in messages.
static NEXT_GRAPH_ID: AtomicU64 = AtomicU64::new(1);

/// A handle to one node of a [`Graph`]: the graph's reference plus the node's key.
///
/// `Var` is `Copy` and cheap (32 bytes: the graph, the node's key, its position and value,
/// carried so that a chain of operations does not read each back from the tape);
/// arithmetic on it records new nodes. Using a `Var` whose node was released, or combining
/// `Var`s of two graphs, panics with a message that says so (operators cannot return
/// `Result`); the `try_` methods return the [`Error`].
///
/// # Examples
///
/// ```
/// use tapegrad::Graph;
///
/// let g = Graph::new();
/// let x = g.var(0.5);
/// let y = 2.0 * x.tanh() + x / 3.0 - 1.0;
/// let dy = y.backward()[x];
/// // d/dx = 2 / cosh^2(x) + 1/3
/// approx::assert_relative_eq!(dy, 2.0 / 0.5f64.cosh().powi(2) + 1.0 / 3.0, max_relative = 1e-15);
/// ```
#[derive(Clone, Copy)]
pub struct Var<'g> {
    pub(in crate::engine) graph: &'g Graph,
    pub(in crate::engine) key: NodeKey,
    /// The node's value, or [`READ_THE_TAPE`] for an input (whose value can change).
    carried: f64,
    /// The node's position (low 32 bits), and the release epoch the handle was issued in
    /// (high 32 bits): a handle issued since the last release needs no lookup of its key
    /// (see `keys.rs`). One word, not two `u32` fields: a `Var` returned through memory is
    /// then written and read back by one store and one load of the same width, which the
    /// processor forwards; two 4-byte stores read back as 8 bytes stall every such return.
    at: u64,
}

impl<'g> From<Var<'g>> for Operand<Var<'g>> {
    fn from(x: Var<'g>) -> Self {
        Operand::Scalar(x)
    }
}

impl<'g> Var<'g> {
    /// The handle of a node just recorded (not an input, which carries no value).
    #[inline(always)]
    pub(in crate::engine) fn recorded(graph: &'g Graph, node: Recorded) -> Self {
        Var {
            graph,
            key: node.key,
            carried: node.value,
            at: node.at,
        }
    }

    /// The handle of the input node at `pos`, with key `key`, issued in `epoch`.
    pub(in crate::engine) fn input(graph: &'g Graph, key: NodeKey, pos: u32, epoch: u32) -> Self {
        Var {
            graph,
            key,
            carried: READ_THE_TAPE,
            at: pack_at(pos, epoch),
        }
    }

    /// The graph this handle belongs to.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// assert_eq!(x.graph().id(), g.id());
    /// ```
    pub fn graph(&self) -> &'g Graph {
        self.graph
    }

    /// Whether `self` and `other` name the same node of the same graph: the handle
    /// comparison. `Var` has no `==`: written on numbers-like handles, `x == y` reads as a
    /// comparison of values, and a silent comparison of handles would be a surprise;
    /// compare values with [`Var::eq_value`] (or [`Var::lt`], ...), which also record the
    /// comparison for a [`Replay`](crate::Replay).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let (a, b) = (g.var(1.0), g.var(1.0));
    /// let c = a;
    /// assert!(a.same_node(c) && !a.same_node(b));
    /// assert!(a.eq_value(b)); // equal values, different nodes
    /// ```
    ///
    /// ```compile_fail,E0369
    /// let g = tapegrad::Graph::new();
    /// let (a, b) = (g.var(1.0), g.var(1.0));
    /// let _ = a == b; // neither a value nor a handle comparison: say which
    /// ```
    pub fn same_node(self, other: Var<'_>) -> bool {
        std::ptr::eq(self.graph, other.graph) && self.key == other.key
    }

    /// The node's key: live in the graph's `slotmap` until the node is released.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// assert_eq!(x.key(), x.key());
    /// ```
    pub fn key(&self) -> NodeKey {
        self.key
    }
}

impl Handle for Var<'_> {
    #[inline(always)]
    fn owner(self) -> *const () {
        std::ptr::from_ref(self.graph).cast()
    }
    fn owner_id(self) -> u64 {
        self.graph.id
    }
    #[inline(always)]
    fn key(self) -> NodeKey {
        self.key
    }
    #[inline(always)]
    fn carried(self) -> f64 {
        self.carried
    }
    #[inline(always)]
    fn pos(self) -> u32 {
        self.at as u32
    }
    #[inline(always)]
    fn epoch(self) -> u32 {
        (self.at >> 32) as u32
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
    pub(in crate::engine) id: u64,
    pub(in crate::engine) tape: RefCell<Tape>,
    /// The positions of an n-ary node's terms gathered from an iterator, and the keys of
    /// those to look up (kept to avoid reallocating).
    term_positions: RefCell<Vec<u32>>,
    stale_terms: RefCell<Vec<(usize, NodeKey)>>,
    /// The user-defined functions recorded on this graph, by [`Op::Custom`] index (their
    /// names are on the tape too, for the code that only sees the tape).
    pub(in crate::engine) customs: RefCell<Vec<Arc<dyn CustomFn>>>,
    /// The handle buffers of the live [`Inputs`](super::Inputs) of this graph.
    pub(in crate::engine) runs: RefCell<KnownRuns>,
    /// The sub-computations of this graph's fused nodes, for replay.
    pub(in crate::engine) fused: RefCell<Programs>,
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

impl Mark {
    /// The tape position the mark stands at (the first node a release to it frees).
    pub(in crate::engine) fn position(self) -> usize {
        self.len as usize
    }
}

impl Drop for Graph {
    /// Gives the tape's memory to this thread's pool for the next [`Graph::new`], if it is
    /// not too large and the pool not full.
    fn drop(&mut self) {
        super::pool::give_back(std::mem::replace(self.tape.get_mut(), Tape::hollow()));
    }
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
        // A tape given back by a dropped graph of this thread, if any.
        match super::pool::take() {
            Some(tape) => Graph::on(tape),
            None => Graph::with_capacity(0),
        }
    }

    /// An empty graph with room for `nodes` nodes (and twice as many edges) before it
    /// reallocates. (Unlike [`Graph::new`], it never reuses a dropped graph's memory.)
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
        Graph::on(Tape::with_capacity(nodes))
    }

    /// A graph recording on `tape` (empty).
    fn on(tape: Tape) -> Self {
        Graph {
            id: NEXT_GRAPH_ID.fetch_add(1, Ordering::Relaxed),
            tape: RefCell::new(tape),
            term_positions: RefCell::new(Vec::new()),
            stale_terms: RefCell::new(Vec::new()),
            customs: RefCell::new(Vec::new()),
            runs: RefCell::new(KnownRuns::default()),
            fused: RefCell::new(Programs::default()),
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

    /// The number of edges (operands) of all nodes on the tape, an `f64` constant operand
    /// included: with [`Graph::len`], what the tape stores (8 + 1 + 4 bytes per node for
    /// its value, op code and edge offset, 4 + 8 per edge for its operand and partial).
    /// The dot products of a weight matrix bound with [`Graph::inputs`] are counted as
    /// their dot nodes' edges, two per product, though the tape stores them as one block
    /// without edges (see [`Scalar::dots`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Graph, Scalar, linalg::{Matrix, Pairing}};
    /// let g = Graph::new();
    /// let x = g.var(1.0);
    /// let _y = x * x + 1.0;
    /// assert_eq!(g.edge_count(), 4);
    /// let w = g.inputs(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]); // 3 x 2
    /// let v = g.vars(&[1.0, 1.0]);
    /// let _wv = Scalar::dots(Matrix::new(&v, 1, 2), Matrix::new(&w, 3, 2), Pairing::Rows);
    /// assert_eq!(g.edge_count(), 4 + 3 * 2 * 2);
    /// ```
    pub fn edge_count(&self) -> usize {
        self.tape.borrow().edge_count()
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
        self.tape.borrow().heap_bytes()
            + self.term_positions.borrow().capacity() * std::mem::size_of::<u32>()
            + self.stale_terms.borrow().capacity() * std::mem::size_of::<(usize, NodeKey)>()
            + self.fused.borrow().heap_bytes()
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

    /// Differentiable inputs, one per value, as a `Vec` (see [`Graph::inputs`] for a model's
    /// parameters).
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
        let first = or_panic(tape.inputs(xs, location));
        let epoch = tape.keys.epoch();
        let keys = tape.keys.keys(first, xs.len());
        let positions = first..;
        keys.iter()
            .zip(positions)
            .map(|(&key, pos)| Var::input(self, key, pos, epoch))
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
        let node = or_panic(tape.leaf(op, value, Location::caller()));
        match op {
            Op::Input => Var::input(self, node.key, node.pos(), node.epoch()),
            _ => Var::recorded(self, node),
        }
    }

    /// A handle for the node at `pos`, which need not be the last recorded (the
    /// differentiable sweep's gradients, a node's operands).
    pub(in crate::engine) fn handle(&self, tape: &Tape, pos: u32) -> Var<'_> {
        let (key, epoch) = (tape.keys.key(pos), tape.keys.epoch());
        match tape.op(pos as usize) {
            Op::Input => Var::input(self, key, pos, epoch),
            _ => Var::recorded(
                self,
                Recorded {
                    key,
                    value: tape.values()[pos as usize],
                    at: pack_at(pos, epoch),
                },
            ),
        }
    }

    /// Resolves an operand of this graph to its tape position and value.
    #[inline]
    pub(in crate::engine) fn resolve<'a>(
        &self,
        tape: &Tape,
        x: impl Into<Operand<Var<'a>>>,
    ) -> Result<Resolved, Error> {
        self.resolve_in(&tape.keys, tape.values(), x.into())
    }

    /// [`Graph::resolve`] against the tape's fields, for use while other fields are borrowed.
    #[inline]
    fn resolve_in(
        &self,
        keys: &Keys,
        values: &[f64],
        x: Operand<Var<'_>>,
    ) -> Result<Resolved, Error> {
        match x {
            Operand::Scalar(x) => self.resolve_var_in(keys, values, x),
            Operand::Const(c) => Ok(Resolved::constant(c)),
        }
    }

    /// Resolves a `Var` of this graph to its tape position and value.
    #[inline(always)]
    pub(in crate::engine) fn resolve_var(
        &self,
        tape: &Tape,
        x: Var<'_>,
    ) -> Result<Resolved, Error> {
        self.resolve_var_in(&tape.keys, tape.values(), x)
    }

    #[inline(always)]
    fn resolve_var_in(&self, keys: &Keys, values: &[f64], x: Var<'_>) -> Result<Resolved, Error> {
        resolve(self.owner(), keys, values, x)
    }

    /// This graph as the tape's handle resolution sees it.
    #[inline(always)]
    pub(in crate::engine) fn owner(&self) -> Owner {
        Owner {
            addr: std::ptr::from_ref(self).cast(),
            id: self.id,
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
        or_panic(self.try_sum(terms))
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
        A: Copy + Into<Operand<Var<'g>>>,
        B: Copy + Into<Operand<Var<'g>>>,
    {
        or_panic(self.try_dot(a, b))
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
        A: Copy + Into<Operand<Var<'g>>>,
        B: Copy + Into<Operand<Var<'g>>>,
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
        or_panic(self.try_logsumexp(terms))
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
        let why = "needs at least one term (the log of an empty sum is -infinity)";
        self.try_nary_nonempty(Nary::LogSumExp, terms, why)
    }

    /// The largest of `terms` as one n-ary node (NaN if any is NaN), as used to shift a
    /// softmax; the derivative is shared evenly by the terms equal to the maximum.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let xs = g.vars(&[1.0, 3.0, 3.0]);
    /// let m = g.amax(xs.iter().copied());
    /// assert_eq!(m.value(), 3.0);
    /// assert_eq!(m.backward().wrt_all(&xs), vec![0.0, 0.5, 0.5]);
    /// ```
    ///
    /// # Panics
    ///
    /// If there are no terms, or a term is released or from another graph.
    #[doc(alias = "max")]
    #[track_caller]
    pub fn amax<'g>(&'g self, terms: impl IntoIterator<Item = Var<'g>>) -> Var<'g> {
        or_panic(self.try_amax(terms))
    }

    /// [`Graph::amax`], returning an error instead of panicking.
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
    /// assert!(g.try_amax([]).is_err());
    /// ```
    #[track_caller]
    pub fn try_amax<'g>(
        &'g self,
        terms: impl IntoIterator<Item = Var<'g>>,
    ) -> Result<Var<'g>, Error> {
        let why = "needs at least one term (the maximum of nothing is undefined)";
        self.try_nary_nonempty(Nary::Max, terms, why)
    }

    /// [`Graph::try_nary_iter`] for an op that has no value over no terms (`why` says so).
    #[track_caller]
    fn try_nary_nonempty<'g>(
        &'g self,
        op: Nary,
        terms: impl IntoIterator<Item = Var<'g>>,
        why: &str,
    ) -> Result<Var<'g>, Error> {
        let mut terms = terms.into_iter().peekable();
        if terms.peek().is_none() {
            return Err(Error::BadOperands {
                op: op.name(),
                why: why.into(),
            });
        }
        self.try_nary_iter(op, terms)
    }

    /// Records an n-ary node over operands produced by an arbitrary iterator. The iterator
    /// may itself record nodes (`g.sum(xs.iter().map(|x| x.exp()))`), so no borrow of the
    /// tape is held while it runs: each term's key is set aside (its graph checked), and
    /// the keys are resolved together once it is done.
    #[track_caller]
    fn try_nary_iter<'g>(
        &'g self,
        op: Nary,
        terms: impl IntoIterator<Item = Var<'g>>,
    ) -> Result<Var<'g>, Error> {
        let location = Location::caller();
        // Reuse the buffers across calls; a nested call (from inside the iterator) finds
        // them taken and uses fresh ones.
        let mut positions = std::mem::take(&mut *self.term_positions.borrow_mut());
        let mut stale = std::mem::take(&mut *self.stale_terms.borrow_mut());
        positions.clear();
        stale.clear();
        let (epoch, check) = {
            let tape = self.tape.borrow();
            (tape.epoch, tape.keys.check_epoch())
        };
        let owner = self.owner();
        let mut result = Ok(());
        for x in terms {
            if !std::ptr::eq(x.owner(), owner.addr) {
                result = Err(owner.foreign(x));
                break;
            }
            // A handle issued since the last release is live (see `Keys::validate`); any
            // other's key is looked up below, once the iterator is done.
            if x.epoch() != check {
                stale.push((positions.len(), x.key));
            }
            positions.push(x.pos());
        }
        let mut tape = self.tape.borrow_mut();
        let mut released = false;
        for &(_, key) in &stale {
            released |= !tape.keys.is_live(key);
        }
        if released {
            // The first bad term in order is reported: a released one before a foreign.
            result = Err(Error::Released);
        }
        if result.is_ok() && tape.epoch != epoch {
            result = Err(Error::BadOperands {
                op: op.name(),
                why: "the graph was released while the operands were being produced; \
                      release before or after recording the node, not from its operand iterator"
                    .into(),
            });
        }
        let node = result.and_then(|()| tape.nary_at(op, &positions, location));
        *self.term_positions.borrow_mut() = positions;
        *self.stale_terms.borrow_mut() = stale;
        Ok(Var::recorded(self, node?))
    }

    /// The dot products of the rows of `a` with the columns or rows of `b` (see
    /// [`Tape::matrix_dots`]), as handles in output order.
    #[track_caller]
    pub(in crate::engine) fn try_matrix_dots<'g>(
        &'g self,
        (a, b): (&[Var<'g>], &[Var<'g>]),
        inner: usize,
        pairing: Pairing,
    ) -> Result<Vec<Var<'g>>, Error> {
        let location = Location::caller();
        let mut tape = self.tape.borrow_mut();
        let known = self.runs.borrow().find(&tape.keys, b);
        let first = tape.matrix_dots(self.owner(), (a, b), known, inner, pairing, location)?;
        let n = tape.len() - first as usize;
        let keys = tape.keys.keys(first, n);
        let values = &tape.values()[first as usize..];
        let epoch = tape.keys.epoch();
        let outputs = keys.iter().zip(values).zip(first..);
        Ok(outputs
            .map(|((&key, &value), pos)| {
                Var::recorded(
                    self,
                    Recorded {
                        key,
                        value,
                        at: pack_at(pos, epoch),
                    },
                )
            })
            .collect())
    }

    /// Records an n-ary node over the `Var`s of `parts`, in order (see [`Tape::nary_vars`]).
    #[track_caller]
    pub(in crate::engine) fn try_nary_vars<'g>(
        &'g self,
        op: Nary,
        parts: &[&[Var<'g>]],
    ) -> Result<Var<'g>, Error> {
        let location = Location::caller();
        let mut tape = self.tape.borrow_mut();
        let node = tape.nary_vars(self.owner(), op, parts, location)?;
        Ok(Var::recorded(self, node))
    }

    #[track_caller]
    pub(in crate::engine) fn try_nary<'g>(
        &'g self,
        op: Nary,
        operands: impl IntoIterator<Item = Operand<Var<'g>>>,
    ) -> Result<Var<'g>, Error> {
        let location = Location::caller();
        let mut tape = self.tape.borrow_mut();
        let resolve = |keys: &Keys, values: &[f64], x| self.resolve_in(keys, values, x);
        let node = tape.nary(op, operands, resolve, location)?;
        Ok(Var::recorded(self, node))
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
        or_panic(self.try_release(mark))
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
    /// While it is on, every node remembers the source line that recorded it, the ops
    /// whose values are NaN or infinite are remembered (see [`Graph::anomaly`]), and
    /// backward checks every gradient it propagates. When the output's value or a gradient
    /// is NaN or infinite, [`Var::try_backward`] reports, as [`Error::Anomaly`] naming the
    /// op, its input values and its line, the first op in tape order that the output
    /// depends on whose value was NaN or infinite, or else the op whose backward made a
    /// gradient non-finite; [`Var::backward`] panics with that message. A NaN or infinity
    /// that the output does not use, or that reaches no non-finite value or gradient (an
    /// attention mask of `-inf`, whose softmax weight is 0), is not reported.
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
                    anomalous: Vec::new(),
                }));
                tape.fast_limit = 0;
                tape.set_limits();
            }
            (false, true) => {
                tape.anomaly = None;
                tape.fast_limit = FAST_LIMIT;
                tape.set_limits();
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
    /// This report is eager: it names the first such op whether or not any output uses
    /// it, and an intentional infinity (an attention mask of `-inf`) counts. The report of
    /// [`Var::try_backward`] considers only what its output depends on.
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
        self.tape.borrow().anomaly_up_to(u32::MAX)
    }

    /// Turns replay checks on or off. They are **on by default**: every raw read of a
    /// node's value ([`Var::value`], [`Var::try_value`]) is remembered, and
    /// [`Replay::new`](crate::Replay::new) refuses (with [`Error::UncheckedRead`]) to build a
    /// replay over a read, made any time before, of a node that depends on the replay's
    /// inputs. Rust control flow on such a read (`if x.value() > 0.0`) is invisible to the
    /// tape: a replay at inputs where it would go the other way would silently evaluate
    /// the branch that was recorded. The guard methods ([`Var::lt`] and its siblings)
    /// compare without that blind spot, and [`Var::untracked_value`] reads for printing.
    ///
    /// Turning them off is **unsafe for correctness**: the reads made while they are off are
    /// never checked, so a replay may answer from the wrong branch without an error. It
    /// saves one bit test per read (and the log of the nodes read, a few bytes each).
    /// Turning them on again starts an empty log.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{Error, Graph, Replay};
    ///
    /// let g = Graph::new();
    /// assert!(g.replay_checks());
    /// let x = g.var(2.0);
    /// let z = if x.gt(0.0) { x * x } else { -x }; // recorded as a guard
    /// assert!(Replay::try_new(z, &[x]).is_ok());
    /// let y = if x.value() > 0.0 { x * x } else { -x }; // invisible to a replay
    /// assert!(matches!(Replay::try_new(y, &[x]), Err(Error::UncheckedRead { .. })));
    /// ```
    pub fn set_replay_checks(&self, on: bool) {
        let mut tape = self.tape.borrow_mut();
        match (on, tape.reads.is_some()) {
            (true, false) => tape.reads = Some(ReadLog::default()),
            (false, true) => tape.reads = None,
            _ => {}
        }
    }

    /// Whether replay checks are on (see [`Graph::set_replay_checks`]; on by default).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// assert!(g.replay_checks());
    /// ```
    pub fn replay_checks(&self) -> bool {
        self.tape.borrow().reads.is_some()
    }

    /// With replay checks on, remembers that the node at `pos` was read at `location`.
    #[cold]
    pub(in crate::engine) fn note_read(&self, pos: u32, location: &'static Location<'static>) {
        if let Some(reads) = &mut self.tape.borrow_mut().reads {
            reads.note(pos, location);
        }
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
        or_panic(self.try_set_value(x, value))
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
        if tape.op(pos) != Op::Input {
            return Err(Error::BadOperands {
                op: "set_value",
                why: format!(
                    "only an input made by Graph::var can change its value; this node is {}",
                    tape.op_name(pos)
                ),
            });
        }
        if tape.used_after(pos..pos + 1) {
            return Err(Error::BadOperands {
                op: "set_value",
                why: "a node recorded after this input uses it and would keep the old value; \
                      release those nodes (Graph::mark / Graph::release) before changing it"
                    .into(),
            });
        }
        tape.values_mut()[pos] = value;
        Ok(())
    }
}

/// A differentiable function you define: its value and first partial derivatives at plain
/// `f64` inputs. [`Graph::custom`] records it as ONE node, named [`CustomFn::name`] in
/// errors, anomaly reports and DOT drawings; [`Var::backward`] then multiplies by the
/// partials you gave, like any op's.
///
/// For second and higher order ([`Var::grad`], `higher::hessian`), also implement
/// [`CustomFn::graph_partials`], or write the function as a [`ScalarFn`] instead (partials
/// written once over [`Scalar`], which gives every order). Without either, [`Var::grad`]
/// through the node is [`Error::NoSecondOrder`] naming the function, never a silent 0.
///
/// Test your partials with [`check::gradcheck`](crate::check::gradcheck) (central
/// differences of your `value`); `higher::gradgradcheck` tests `graph_partials`.
///
/// The definition is `Send + Sync` and its methods take `&self` and plain slices, so one
/// definition serves every graph and thread.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use tapegrad::{CustomFn, Graph};
///
/// /// `x * e^y`, with its partials `e^y` and `x e^y`.
/// struct XExpY;
///
/// impl CustomFn for XExpY {
///     fn name(&self) -> &'static str {
///         "x_exp_y"
///     }
///     fn value(&self, xs: &[f64]) -> f64 {
///         xs[0] * xs[1].exp()
///     }
///     fn partials(&self, xs: &[f64], y: f64, out: &mut [f64]) {
///         out[0] = xs[1].exp();
///         out[1] = y;
///     }
/// }
///
/// let f: Arc<dyn CustomFn> = Arc::new(XExpY);
/// let g = Graph::new();
/// let (x, y) = (g.var(2.0), g.var(0.5));
/// let z = g.custom(&f, &[x, y]);
/// assert_eq!(z.op_name(), "x_exp_y");
/// assert_eq!(g.len(), 3); // one node
/// let grads = z.backward();
/// assert_eq!((grads[x], grads[y]), (0.5f64.exp(), 2.0 * 0.5f64.exp()));
/// // No second-order rule was given: an error naming the function.
/// let err = z.try_grad(&[x]).unwrap_err();
/// assert!(err.to_string().contains("x_exp_y"));
/// ```
pub trait CustomFn: Send + Sync {
    /// The name shown in errors, anomaly reports and DOT drawings.
    fn name(&self) -> &'static str;
    /// The value at `xs` (one entry per operand, in order).
    fn value(&self, xs: &[f64]) -> f64;
    /// The partial derivatives at `xs` into `out` (`out[k]` is `d value / d xs[k]`, one
    /// slot per operand); `y` is [`CustomFn::value`] at `xs`. **Write every slot** (0.0 for
    /// an operand the value does not depend on): `out` does not start at 0, and a slot left
    /// as it was is [`Error::BadPartials`] naming the function and the operand, never a
    /// silent 0.
    fn partials(&self, xs: &[f64], y: f64, out: &mut [f64]);
    /// The partials as nodes of the graph, computed from `xs` and `y` with `Var`
    /// arithmetic, so that [`Var::grad`] can differentiate through them again (second
    /// and higher order). `None` (the default) means no such rule: [`Var::grad`] through
    /// this function is then [`Error::NoSecondOrder`]. Return one partial per operand,
    /// built from `xs` and `y` (nodes of their graph): too few or too many, or a `Var` of
    /// another graph or a released one, is [`Error::BadPartials`] naming the function and
    /// the operand.
    fn graph_partials<'g>(&self, xs: &[Var<'g>], y: Var<'g>) -> Option<Vec<Var<'g>>> {
        let _ = (xs, y);
        None
    }
    /// Whether the function promises finite partials wherever its inputs and its value
    /// are finite (most smooth functions; not `sqrt` at 0, whose derivative is a true
    /// infinity). `false` by default. With `true`, a partial that is infinite or NaN at
    /// finite inputs and value, from [`CustomFn::partials`] when the node is recorded or
    /// replayed, or from [`CustomFn::graph_partials`] in [`Var::grad`], is
    /// [`Error::BadPartials`] naming the function and the operand: a wrong rule, caught
    /// where it would otherwise be multiplied by a zero adjoint into a silent 0.
    fn finite_partials(&self) -> bool {
        false
    }
}

/// A user-defined function whose partials are written once, generically over [`Scalar`]
/// (as the crate's own op table is): the same rule gives the first derivative (with
/// `f64`) and every higher one (with graph nodes). Every `ScalarFn` is a [`CustomFn`];
/// record it with [`Graph::custom`].
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use tapegrad::{CustomFn, Graph, Scalar, ScalarFn};
///
/// /// `x^2 y`.
/// struct SquareTimes;
///
/// impl ScalarFn for SquareTimes {
///     fn name(&self) -> &'static str {
///         "square_times"
///     }
///     fn value(&self, xs: &[f64]) -> f64 {
///         xs[0] * xs[0] * xs[1]
///     }
///     fn partials<T: Scalar>(&self, xs: &[T], _y: T, out: &mut [T]) {
///         out[0] = xs[0] * xs[1] * 2.0;
///         out[1] = xs[0] * xs[0];
///     }
/// }
///
/// let f: Arc<dyn CustomFn> = Arc::new(SquareTimes);
/// let g = Graph::new();
/// let (x, y) = (g.var(3.0), g.var(2.0));
/// let z = g.custom(&f, &[x, y]);
/// let dz_dx = z.grad(&[x])[0]; // 2 x y = 12
/// assert_eq!(dz_dx.value(), 12.0);
/// assert_eq!(dz_dx.grad(&[x, y]).iter().map(|v| v.value()).collect::<Vec<_>>(), [4.0, 6.0]);
/// ```
pub trait ScalarFn: Send + Sync {
    /// The name shown in errors, anomaly reports and DOT drawings.
    fn name(&self) -> &'static str;
    /// The value at `xs`.
    fn value(&self, xs: &[f64]) -> f64;
    /// The partials at `xs` into `out` (one slot per operand, each holding some value of
    /// the right type to overwrite: write every one, as for [`CustomFn::partials`]), where
    /// `y` is the value at `xs`: with `T = f64` for the first derivative, with graph nodes
    /// for the higher ones.
    fn partials<T: Scalar>(&self, xs: &[T], y: T, out: &mut [T]);
    /// [`CustomFn::finite_partials`]: whether the partials are finite wherever the inputs
    /// and the value are (`false` by default).
    fn finite_partials(&self) -> bool {
        false
    }
}

impl std::fmt::Debug for dyn CustomFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomFn({})", self.name())
    }
}

impl<F: ScalarFn> CustomFn for F {
    fn name(&self) -> &'static str {
        ScalarFn::name(self)
    }
    fn value(&self, xs: &[f64]) -> f64 {
        ScalarFn::value(self, xs)
    }
    fn partials(&self, xs: &[f64], y: f64, out: &mut [f64]) {
        ScalarFn::partials(self, xs, y, out);
    }
    fn graph_partials<'g>(&self, xs: &[Var<'g>], y: Var<'g>) -> Option<Vec<Var<'g>>> {
        let mut out = vec![y; xs.len()];
        ScalarFn::partials(self, xs, y, &mut out);
        Some(out)
    }
    fn finite_partials(&self) -> bool {
        ScalarFn::finite_partials(self)
    }
}
