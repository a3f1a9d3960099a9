//! Node identity: every node's [`NodeKey`], issued by a `slotmap::SlotMap` that maps it to
//! the node's tape position, and the column that maps each position back to its key. A
//! handle is valid exactly when its key is live in the map: releasing nodes removes their
//! keys (newest first, so the cost is what is freed), and a released key is never live
//! again (slotmap's versioned keys), so a stale handle is an error, never another node.
//! Knows nothing of `Graph`, `Var` or the tape's other columns: handles reach it through
//! the [`Handle`] trait.
//!
//! What it costs per node: a slot of the map (8 bytes: the position and slotmap's
//! version) and an entry of the position column (8 bytes: the key); recording inserts the
//! key (the map's free list, about a dozen instructions), resolving an operand reads its
//! slot (one 8-byte load and a comparison), and releasing removes the key (about a dozen
//! instructions). Why this layout: the position a key names is read with the version that
//! validates it, in one load, and the values stay in one contiguous column (what the sweep
//! and the dot blocks read); the key column is what makes a release remove exactly the
//! keys it frees.

use slotmap::SlotMap;

use super::error::Error;

slotmap::new_key_type! {
    /// The key of a node in its graph: a `slotmap` key, live in the graph's map from the
    /// moment the node is recorded until it is released. A key to a released node is
    /// detected instead of read, even after its position is recorded again.
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
    /// let d = a + b; // the same position as c, another key
    /// assert_ne!(c.key(), d.key());
    /// assert!(c.try_value().is_err());
    /// ```
    pub struct NodeKey;
}

/// Which key names which tape position, both ways: the slot map (key to position) and the
/// position column (position to key).
#[derive(Debug, Default)]
pub(in crate::engine) struct Keys {
    map: SlotMap<NodeKey, u32>,
    by_position: Vec<NodeKey>,
}

impl Keys {
    pub(in crate::engine) fn with_capacity(nodes: usize) -> Self {
        Keys {
            map: SlotMap::with_capacity_and_key(nodes),
            by_position: Vec::with_capacity(nodes),
        }
    }

    /// A new key for the node recorded at `pos`, the next position.
    #[inline(always)]
    pub(in crate::engine) fn issue(&mut self, pos: u32) -> NodeKey {
        debug_assert_eq!(pos as usize, self.by_position.len());
        let key = self.map.insert(pos);
        self.by_position.push(key);
        key
    }

    /// New keys for the `n` nodes recorded at `first..first + n`.
    pub(in crate::engine) fn issue_run(&mut self, first: u32, n: usize) {
        debug_assert_eq!(first as usize, self.by_position.len());
        self.by_position.reserve(n);
        for pos in first..first + n as u32 {
            let key = self.map.insert(pos);
            self.by_position.push(key);
        }
    }

    /// The position `key` names, if its node is still recorded.
    #[inline(always)]
    pub(in crate::engine) fn position(&self, key: NodeKey) -> Option<u32> {
        self.map.get(key).copied()
    }

    /// The key of the node at `pos`.
    #[inline(always)]
    pub(in crate::engine) fn key(&self, pos: u32) -> NodeKey {
        self.by_position[pos as usize]
    }

    /// The keys of the nodes at `first..first + n`.
    pub(in crate::engine) fn keys(&self, first: u32, n: usize) -> &[NodeKey] {
        &self.by_position[first as usize..][..n]
    }

    /// Removes the keys of the nodes at `len` and above, newest first, so that the map's
    /// free list hands their slots out again in recording order.
    pub(in crate::engine) fn release_from(&mut self, len: usize) {
        for &key in self.by_position[len..].iter().rev() {
            self.map.remove(key);
        }
        self.by_position.truncate(len);
    }

    /// Forgets every key, keeping the memory (for a tape given to a new graph).
    pub(in crate::engine) fn clear(&mut self) {
        self.release_from(0);
    }

    /// The heap bytes held (capacity).
    pub(in crate::engine) fn heap_bytes(&self) -> usize {
        // A slot holds the position (4 bytes) and slotmap's version (4).
        self.map.capacity() * 8 + self.by_position.capacity() * size_of::<NodeKey>()
    }

    /// The nodes the key column has room for.
    pub(in crate::engine) fn capacity(&self) -> usize {
        self.by_position.capacity().min(self.map.capacity())
    }
}

/// A handle to a node, as the engine's storage sees it: which graph made it, its key, and
/// the value it carries. The tape resolves handles itself on its many-operand paths,
/// without knowing the handle type.
pub(in crate::engine) trait Handle: Copy {
    /// The address of the graph that made the handle: compared, never read.
    fn owner(self) -> *const ();
    /// That graph's id, for error messages (the cold path).
    fn owner_id(self) -> u64;
    /// The node's key.
    fn key(self) -> NodeKey;
    /// The value the handle carries: its node's value, or [`READ_THE_TAPE`] for an input,
    /// whose value can change (see [`carried`]).
    fn carried(self) -> f64;
}

/// What an input's handle carries instead of its value (a NaN payload no operation
/// produces): an input's value lives on the tape only, because `Graph::set_value` can
/// change it. Any handle that carries these bits reads its value from the tape, which is
/// right whatever the node (a node whose value is this very NaN reads the same bits).
pub(in crate::engine) const READ_THE_TAPE: f64 = f64::from_bits(0x7ff8_dead_beef_0001);

/// The value a handle's node has: what the handle carries, or the tape's value at `pos`
/// for an input. Handles carry their values so that a chain of operations does not wait
/// for each value to be written to the tape and read back.
#[inline(always)]
pub(in crate::engine) fn carried(x: impl Handle, values: &[f64], pos: u32) -> f64 {
    let v = x.carried();
    if v.to_bits() == READ_THE_TAPE.to_bits() {
        values[pos as usize]
    } else {
        v
    }
}

/// Who is resolving handles: the address and id of the graph that owns these keys.
#[derive(Clone, Copy)]
pub(in crate::engine) struct Owner {
    pub(in crate::engine) addr: *const (),
    pub(in crate::engine) id: u64,
}

impl Owner {
    /// `x`'s position, or why it has none here: a handle of another graph, or one whose
    /// node was released.
    #[inline(always)]
    pub(in crate::engine) fn position(self, keys: &Keys, x: impl Handle) -> Result<u32, Error> {
        if !std::ptr::eq(x.owner(), self.addr) {
            return Err(self.foreign(x));
        }
        // A match, not `ok_or(Error::Released)`: that builds the error on every call and
        // drops it on success, a call to `Error`'s drop glue per operand resolved.
        match keys.position(x.key()) {
            Some(pos) => Ok(pos),
            None => Err(Error::Released),
        }
    }

    /// The error for `x`, a handle of another graph.
    #[cold]
    pub(in crate::engine) fn foreign(self, x: impl Handle) -> Error {
        Error::ForeignHandle {
            what: "Var",
            owner: x.owner_id(),
            used_with: self.id,
        }
    }

    /// The position of `run[0]` if `run` are valid handles of this graph to consecutive
    /// positions `p, p + 1, ...`: each handle's key is looked up (a weight matrix bound
    /// with [`Graph::inputs`](crate::Graph::inputs) is proven a run with one lookup instead,
    /// by the graph's registry of them).
    pub(in crate::engine) fn run<H: Handle>(self, keys: &Keys, run: &[H]) -> Option<u32> {
        let first = keys.position(run.first()?.key())?;
        let differs = run
            .iter()
            .zip(first..)
            .fold(false, |differs, (&x, expected)| {
                differs
                    | !std::ptr::eq(x.owner(), self.addr)
                    | (keys.position(x.key()) != Some(expected))
            });
        (!differs).then_some(first)
    }
}

/// The handle buffers of a graph's live `Inputs` (see [`KnownRuns::find`]): each one's
/// address and length, and its first and last node's keys.
#[derive(Debug, Default)]
pub(in crate::engine) struct KnownRuns(Vec<KnownRun>);

#[derive(Clone, Copy, Debug)]
struct KnownRun {
    addr: usize,
    len: usize,
    first: NodeKey,
    last: NodeKey,
}

impl KnownRuns {
    /// Remembers `buffer`, handles to the consecutive nodes with keys `first` to `last`,
    /// recorded together; its contents must not change while it is registered.
    pub(in crate::engine) fn register<T>(&mut self, buffer: &[T], first: NodeKey, last: NodeKey) {
        if !buffer.is_empty() {
            self.0.push(KnownRun {
                addr: buffer.as_ptr() as usize,
                len: buffer.len(),
                first,
                last,
            });
        }
    }

    /// Forgets the buffer at `buffer` (before it is freed: its address may hold other
    /// handles next).
    pub(in crate::engine) fn forget<T>(&mut self, buffer: &[T]) {
        let addr = buffer.as_ptr() as usize;
        if !buffer.is_empty() {
            self.0.retain(|run| run.addr != addr);
        }
    }

    /// The position of `xs[0]` if `xs` is a slice of one of the registered buffers whose
    /// nodes are all still recorded (none released): then `xs` are handles to consecutive
    /// positions, and valid. `None` otherwise (which proves nothing about `xs`). One
    /// lookup of two keys, whatever the length of `xs`.
    pub(in crate::engine) fn find<T>(&self, keys: &Keys, xs: &[T]) -> Option<u32> {
        if xs.is_empty() {
            return None;
        }
        let size = size_of::<T>();
        let start = xs.as_ptr() as usize;
        let end = start + size_of_val(xs);
        let run = self
            .0
            .iter()
            .find(|run| run.addr <= start && end <= run.addr + run.len * size)?;
        // The buffer's nodes were recorded together, at consecutive positions: if its first
        // and last are still recorded, so is every one between (a release frees a suffix
        // of the tape).
        let first = keys.position(run.first)?;
        keys.position(run.last)?;
        debug_assert_eq!((start - run.addr) % size, 0);
        Some(first + ((start - run.addr) / size) as u32)
    }
}
