//! Node identity: every node's [`NodeKey`], issued by a `slotmap::SlotMap`, and the column
//! that maps each tape position to its key. A handle is valid exactly when its key is live
//! in the map: releasing nodes removes their keys, and a removed key is never live again
//! (slotmap's versioned keys), so a stale handle is an error, never another node. Knows
//! nothing of `Graph`, `Var` or the tape's other columns: handles reach it through the
//! [`Handle`] trait.
//!
//! Keys are issued ahead of the nodes, a few at a time: when the tape reaches a position
//! without a key, [`Keys::issue`] inserts keys for it and the next [`KEY_BATCH`] positions
//! in one loop, and recording a node takes the key at its position, one load. A release
//! removes the keys from its mark to the last issued (the freed nodes', and at most a
//! batch issued ahead), newest first: its cost is what it frees. A key issued ahead names
//! no node and no handle carries it.
//!
//! What it costs per node: a slot of the map (8 bytes: slotmap's version and its free
//! list's link; the map holds no value, since a handle carries its node's position) and an
//! entry of the position column (8 bytes: the key). An insert when the node's batch is
//! issued and a removal when it is released, about a dozen instructions each; the inserts
//! wait on each other (each reads the free list's next link from the slot the one before
//! took), about five cycles each. A handle issued since the last release is proven live by
//! its epoch (one comparison, see [`Keys::validate`]); any other by one lookup of its
//! slot's version.
//!
//! Why this layout (measured against a map holding each key's position, against the
//! position looked up for every handle, and against one insert per recorded node:
//! ARCHITECTURE.md, `benches/peers/RESULTS.md`): the values stay in one contiguous column,
//! which the sweep and the dot blocks read; a fresh handle needs no lookup at all; the
//! map's inserts run together in a loop, off the recording of each node, where each one
//! waited on the insert of the node before through the map's fields in memory; and the key
//! column is what makes a release remove exactly the keys it frees.

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

/// The epoch handles are issued in once the releases have run out of 32-bit epochs: it
/// names no single epoch, so a handle carrying it is always looked up.
const SATURATED_EPOCH: u32 = u32::MAX - 1;

/// How many keys [`Keys::issue`] inserts ahead of the node that needs one: enough to take
/// the map's inserts out of the per-node path, few enough that a release of a handful of
/// nodes removes about as many keys as it frees.
const KEY_BATCH: usize = 16;

/// The graph's live keys (the `slotmap`), the position column (position to key), and the
/// release epoch, which lets a handle issued since the last release skip the map (see
/// [`Keys::validate`]).
#[derive(Debug, Default)]
pub(in crate::engine) struct Keys {
    map: SlotMap<NodeKey, ()>,
    by_position: Vec<NodeKey>,
    /// How many positions have a key in `by_position` (live in the map): the recorded
    /// nodes', and at most [`KEY_BATCH`] issued ahead for the next positions.
    issued: usize,
    /// The epoch new handles carry: the number of releases so far (saturating at
    /// [`SATURATED_EPOCH`]).
    issue_epoch: u32,
    /// The epoch a handle must carry to skip the map: `issue_epoch`, or `u32::MAX` (which
    /// no handle carries) once the releases have run out of 32-bit epochs, so that the
    /// shortcut is never taken again rather than ever taken wrongly.
    check_epoch: u32,
}

impl Keys {
    /// The epoch a handle issued now carries.
    #[inline(always)]
    pub(in crate::engine) fn epoch(&self) -> u32 {
        self.issue_epoch
    }

    /// The epoch a handle must carry to skip the map (see [`Keys::validate`]).
    pub(in crate::engine) fn check_epoch(&self) -> u32 {
        self.check_epoch
    }

    /// Room for `room` positions in the position column (written by index, as the tape's
    /// other columns), the keys issued so far kept, and for `room` keys in the map, so that
    /// it grows with the columns rather than by doubling of its own while recording.
    pub(in crate::engine) fn regrow(&mut self, room: usize) {
        if room > self.map.capacity() {
            self.map.reserve(room - self.map.len());
        }
        if room > self.by_position.len() {
            let mut column = vec![NodeKey::default(); room];
            column[..self.issued].copy_from_slice(&self.by_position[..self.issued]);
            self.by_position = column;
        }
    }

    /// The key of the node recorded at `pos`, the next position: issued ahead, in a batch
    /// (see [`Keys::issue_batch`]). The column must have room for `pos`.
    #[inline(always)]
    pub(in crate::engine) fn issue(&mut self, pos: u32) -> NodeKey {
        if pos as usize >= self.issued {
            self.issue_batch(pos as usize + 1);
        }
        self.by_position[pos as usize]
    }

    /// Keys for the `n` nodes recorded at `first..first + n` (the next positions).
    pub(in crate::engine) fn issue_run(&mut self, first: u32, n: usize) {
        if first as usize + n > self.issued {
            self.issue_batch(first as usize + n);
        }
    }

    /// Inserts keys into the map for the positions from `issued` to at least `end` (and
    /// up to [`KEY_BATCH`] more, as the column's room allows), in position order: the
    /// inserts run together, off the recording of each node, where each one waited on the
    /// insert of the node before through the map's fields in memory.
    #[inline(never)]
    fn issue_batch(&mut self, end: usize) {
        let end = (end + KEY_BATCH).min(self.by_position.len()).max(end);
        for slot in &mut self.by_position[self.issued..end] {
            *slot = self.map.insert(());
        }
        self.issued = end;
    }

    /// Whether `key`'s node is still recorded.
    #[inline(always)]
    pub(in crate::engine) fn is_live(&self, key: NodeKey) -> bool {
        self.map.contains_key(key)
    }

    /// The position of the node a handle names, if it is still recorded: the handle's
    /// key, and the position and epoch it was issued with. A handle issued since the last
    /// release skips the map: its key is live (keys are removed only by releases) and the
    /// position it carries is its node's. Any other is looked up, so the map decides
    /// whether a stale handle still names its node.
    #[inline(always)]
    pub(in crate::engine) fn validate(&self, key: NodeKey, pos: u32, epoch: u32) -> Option<u32> {
        debug_assert!(epoch != self.check_epoch || self.key(pos) == key);
        // A live key's node has not been released, so it is still at the position its
        // handle was issued with.
        (epoch == self.check_epoch || self.is_live(key)).then_some(pos)
    }

    /// The key of the node at `pos` (recorded).
    #[inline(always)]
    pub(in crate::engine) fn key(&self, pos: u32) -> NodeKey {
        self.by_position[pos as usize]
    }

    /// The keys of the nodes at `first..first + n` (recorded).
    pub(in crate::engine) fn keys(&self, first: u32, n: usize) -> &[NodeKey] {
        &self.by_position[first as usize..][..n]
    }

    /// Removes the keys of the positions from `from` on (the tape's last nodes, and the
    /// keys issued ahead of them: at most [`KEY_BATCH`]), newest first, so that the map's
    /// free list hands their slots out again in position order; a new epoch begins. Time
    /// proportional to what is freed.
    pub(in crate::engine) fn release(&mut self, from: usize) {
        for &key in self.by_position[from..self.issued].iter().rev() {
            self.map.remove(key);
        }
        self.issued = self.issued.min(from);
        if self.issue_epoch < SATURATED_EPOCH - 1 {
            self.issue_epoch += 1;
            self.check_epoch = self.issue_epoch;
        } else {
            self.issue_epoch = SATURATED_EPOCH;
            self.check_epoch = u32::MAX;
        }
    }

    /// Forgets every key issued (the recorded nodes' and those issued ahead), keeping the
    /// memory (for a tape given to a new graph).
    pub(in crate::engine) fn clear(&mut self) {
        self.release(0);
        self.issue_epoch = 0;
        self.check_epoch = 0;
    }

    /// The heap bytes held (capacity).
    pub(in crate::engine) fn heap_bytes(&self) -> usize {
        // A slot holds slotmap's version (4 bytes) and its free list's link (4).
        self.map.capacity() * 8 + self.by_position.capacity() * size_of::<NodeKey>()
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
    /// The node's position when the handle was issued.
    fn pos(self) -> u32;
    /// The release epoch the handle was issued in.
    fn epoch(self) -> u32;
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
    /// node was released (see [`Keys::validate`]).
    #[inline(always)]
    pub(in crate::engine) fn position(self, keys: &Keys, x: impl Handle) -> Result<u32, Error> {
        if !std::ptr::eq(x.owner(), self.addr) {
            return Err(self.foreign(x));
        }
        // A match, not `ok_or(Error::Released)`: that builds the error on every call and
        // drops it on success, a call to `Error`'s drop glue per operand resolved.
        match keys.validate(x.key(), x.pos(), x.epoch()) {
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

    /// The position of `run[0]` if `run` are handles of this graph, issued in one epoch to
    /// consecutive positions `p, p + 1, ...` (as `Graph::vars` makes them), and still
    /// valid. Each handle is compared with what it must then carry, with no lookup and no
    /// early exit: a loop of integer lanes the compiler vectorises. Handles issued since
    /// the last release are valid (see [`Keys::validate`]); an older run is valid when its
    /// last node is: within an epoch positions are recorded in increasing order, and a
    /// release frees a whole tail, so nothing below a live node recorded in the same epoch
    /// has been released since (parameters made before a [`Mark`](crate::Mark) stay one
    /// run after every release). `None` proves nothing (a weight matrix bound with
    /// [`Graph::inputs`](crate::Graph::inputs) is proven a run with one lookup instead,
    /// by the graph's registry of them).
    pub(in crate::engine) fn run<H: Handle>(self, keys: &Keys, run: &[H]) -> Option<u32> {
        let (head, last) = (run.first()?, run.last()?);
        let (first, epoch) = (head.pos(), head.epoch());
        let owner = self.addr as usize as u64;
        let bits = |x: H| u64::from(x.pos()) | u64::from(x.epoch()) << 32;
        let expected_first = u64::from(first) | u64::from(epoch) << 32;
        let differs = run.iter().zip(0u64..).fold(0u64, |differs, (&x, k)| {
            differs | (x.owner() as usize as u64 ^ owner) | (bits(x) ^ (expected_first + k))
        });
        // A saturated epoch (see `Keys::release`) names no single epoch.
        let valid =
            epoch == keys.check_epoch || (epoch < SATURATED_EPOCH && keys.is_live(last.key()));
        (differs == 0 && valid).then_some(first)
    }
}

/// The handle buffers of a graph's live `Inputs` (see [`KnownRuns::find`]): each one's
/// address and length, its first node's position, and its first and last node's keys.
#[derive(Debug, Default)]
pub(in crate::engine) struct KnownRuns(Vec<KnownRun>);

#[derive(Clone, Copy, Debug)]
struct KnownRun {
    addr: usize,
    len: usize,
    first_pos: u32,
    first: NodeKey,
    last: NodeKey,
}

impl KnownRuns {
    /// Remembers `buffer`, handles to the consecutive nodes with keys `first` to `last`,
    /// recorded together; its contents must not change while it is registered.
    pub(in crate::engine) fn register<T>(
        &mut self,
        buffer: &[T],
        first_pos: u32,
        (first, last): (NodeKey, NodeKey),
    ) {
        if !buffer.is_empty() {
            self.0.push(KnownRun {
                addr: buffer.as_ptr() as usize,
                len: buffer.len(),
                first_pos,
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
        if !(keys.is_live(run.first) && keys.is_live(run.last)) {
            return None;
        }
        debug_assert_eq!((start - run.addr) % size, 0);
        Some(run.first_pos + ((start - run.addr) / size) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records `n` nodes' keys after the `len` recorded, as the tape does.
    fn record(keys: &mut Keys, len: usize, n: usize) -> Vec<NodeKey> {
        keys.regrow(len + n);
        (len..len + n).map(|pos| keys.issue(pos as u32)).collect()
    }

    /// The map holds the recorded nodes' keys and at most a batch issued ahead, whatever
    /// the graph held before: so a release, which removes the keys from its mark to the
    /// last issued, removes what it frees and at most a batch more, even after a large
    /// evaluation was released.
    #[test]
    fn the_map_holds_the_recorded_keys_and_at_most_a_batch_ahead() {
        let mut keys = Keys::default();
        let params = record(&mut keys, 0, 2);
        let large = record(&mut keys, 2, 100_000);
        assert!(keys.map.len() <= 100_002 + KEY_BATCH);
        keys.release(2);
        assert_eq!(keys.map.len(), 2);
        assert!(large.iter().all(|&k| !keys.is_live(k)));
        for _ in 0..3 {
            let step = record(&mut keys, 2, 10);
            assert!(step.iter().all(|&k| keys.is_live(k)));
            assert!((12..=12 + KEY_BATCH).contains(&keys.map.len()));
            keys.release(2);
            assert_eq!(keys.map.len(), 2);
            assert!(step.iter().all(|&k| !keys.is_live(k)));
        }
        assert!(params.iter().all(|&k| keys.is_live(k)));
        // Every key issued is a new one.
        let again = record(&mut keys, 2, 10);
        assert!(again.iter().all(|k| !large.contains(k)));
    }
}
