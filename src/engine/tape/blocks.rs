//! Dot products recorded as one block, storing no edges ([`DotBlock`]): what a weight
//! matrix's products become when its handles name consecutive tape positions (a model's
//! weights bound with `Graph::inputs`). Recording a block ([`Tape::matrix_dots`]), reading a
//! block node's edges back, cutting a block at a release, and sweeping a block as a unit
//! (`sweep_block`, which the plain sweep calls). Uses the tape's arrays; the rest of the
//! engine sees a block's nodes as ordinary [`Nary::Dot`] nodes.

use std::panic::Location;

use super::super::chain::ordinary;
use super::super::error::Error;
use super::super::keys::{Handle, Owner};
use super::super::matrix::Pairing;
use super::super::op::{Nary, Op};
use super::{Tape, position_or_note};

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
    pub(in crate::engine) fn edge_count(&self) -> usize {
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

impl Tape {
    /// Records the dot products of every row of `a` (row-major, `inner` columns) with every
    /// column of `b` (row-major `inner x m`, [`Pairing::Columns`]) or every row of `b`
    /// (row-major `m x inner`, [`Pairing::Rows`]): one [`Nary::Dot`] node per output, row
    /// by row, at consecutive positions from the returned one. Each is exactly the node
    /// [`Tape::nary_vars`] records for `dot(row i of a, part j of b)`: operands in that
    /// order, the same value bit for bit, the same gradients bit for bit.
    ///
    /// Every handle of `a` and `b` is resolved (checked, and its position read) once, not once per
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
        let (keys, node_values) = (&self.keys, &self.values[..self.len]);
        let mut resolve = |&v: &H| position_or_note(owner, keys, v, &mut first_error);
        positions.extend(a.iter().map(&mut resolve));
        // A weight matrix bound as inputs, used as `A W^T` or `A W`: its handles are
        // checked as one run (no per-handle lookup), and need no positions of their own.
        let run = known_b.or_else(|| owner.run(keys, b));
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
                let block_fits =
                    (self.len + rows * outputs) | self.edges | (self.block_args.len() + a.len());
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
        let first = self.len;
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
        if first + n > self.values.len() {
            self.reserve(first + n, self.edges);
        }
        self.values[first..first + n].copy_from_slice(&ys);
        self.scratch = ys;
        self.ops.fill_block_dots(first..first + n);
        self.edge_start[first + 1..=first + n].fill(self.edges as u32);
        self.keys.issue_run(first as u32, n);
        self.len = first + n;
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
        let first = self.len;
        let (mut edge_args, mut edge_weights) = (Vec::new(), Vec::new());
        let mut pairs = (0..rows).flat_map(|i| (0..outputs).map(move |j| (i, j)));
        let recorded = pairs.try_for_each(|(i, j)| {
            // Operands row i of `a` then part j of `b`, partials the other way
            // round, value `sum a_k b_k`: `Nary::Dot` over `a_i ++ b_j`.
            let (ai, bj) = (i * inner..(i + 1) * inner, j * inner..(j + 1) * inner);
            let (a_args, a_values) = (&a_args[ai.clone()], &a_values[ai]);
            let (b_args, b_values) = (&b_args[bj.clone()], &b_values[bj]);
            edge_args.clear();
            edge_args.extend_from_slice(a_args);
            edge_args.extend_from_slice(b_args);
            edge_weights.clear();
            edge_weights.extend_from_slice(b_values);
            edge_weights.extend_from_slice(a_values);
            let y = a_values.iter().zip(b_values).map(|(a, b)| a * b).sum();
            let dot = Op::Nary(Nary::Dot);
            self.record_slice(dot, y, &edge_args, &edge_weights, location)
                .map(drop)
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

    /// The block that holds node `pos`, which is a [`DotBlock`] node.
    pub(in crate::engine) fn block_of(&self, pos: usize) -> &DotBlock {
        let k = self.blocks.partition_point(|b| b.first as usize <= pos);
        let block = &self.blocks[k - 1];
        debug_assert!(pos < block.end());
        block
    }

    /// The edges of block node `pos`: operands row `i` of the first factor then part `j`
    /// of the second, partials the other way round.
    pub(in crate::engine) fn block_edges(&self, pos: usize) -> (Vec<u32>, Vec<f64>) {
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

    /// Before a release to `len` (to a mark taken before an earlier release) that falls
    /// inside the last block that starts below `len`: the block keeps its whole rows, and
    /// the outputs of the row it cuts get the edges `Nary::Dot` would have stored. Those
    /// edges, read now, while the values they name are on the tape. (Blocks after it start
    /// at or above `len` and go entirely.)
    pub(in crate::engine) fn cut_block_row(&self, len: usize) -> Option<CutRow> {
        let below = self.blocks.partition_point(|b| (b.first as usize) < len);
        let block = below
            .checked_sub(1)
            .map(|k| self.blocks[k])
            .filter(|b| len < b.end())?;
        let kept_rows = (len - block.first as usize) / block.outputs as usize;
        let row_start = block.first as usize + kept_rows * block.outputs as usize;
        let edges = (row_start..len).map(|p| self.block_edges(p)).collect();
        Some(CutRow {
            kept_rows,
            row_start,
            edges,
        })
    }

    /// After the node arrays were cut to `len`: drops the blocks at or above `len`, and
    /// shortens the cut one, whose cut row's outputs get their edges (`cut`, from
    /// [`Tape::cut_block_row`]).
    pub(in crate::engine) fn drop_blocks_from(&mut self, len: usize, cut: Option<CutRow>) {
        while let Some(block) = self.blocks.last().filter(|b| b.first as usize >= len) {
            self.block_args.truncate(block.a_start as usize);
            self.blocks.pop();
        }
        if let Some(CutRow {
            kept_rows,
            row_start,
            edges,
        }) = cut
        {
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
                let (e, n) = (self.edges, args.len());
                if e + n > self.args.len() {
                    self.reserve(self.len, e + n);
                }
                self.edge_start[pos] = e as u32;
                self.args[e..e + n].copy_from_slice(&args);
                self.weights[e..e + n].copy_from_slice(&weights);
                self.edges = e + n;
                self.ops.set_dot(pos);
            }
            self.edge_start[len] = self.edges as u32;
        }
    }
}

/// The row of a block that a release cuts (see [`Tape::cut_block_row`]).
pub(in crate::engine) struct CutRow {
    kept_rows: usize,
    row_start: usize,
    edges: Vec<(Vec<u32>, Vec<f64>)>,
}

/// [`sweep_fast`] over the nodes of `block` from `top` down to its first: each output's
/// edges in the order [`Nary::Dot`](super::op::Nary::Dot) stores them (its row of the
/// first factor, then its part of the second), so every sum is the one the edge-by-edge
/// sweep makes, bit for bit. `false` at a non-finite adjoint.
///
/// The partials are the operands' values (a product's partial is the other factor), read
/// from the tape: the second factor's part and its adjoints are runs of the tape's arrays
/// (contiguous, or strided for a block read by columns). In a dense block, each row of the
/// first factor has its values and adjoints gathered once (into `scratch`) and its
/// adjoints scattered back after its outputs, so that (by rows) both inner loops run over
/// contiguous memory.
#[inline(never)] // called once per block: kept out of the node loops' registers
pub(in crate::engine) fn sweep_block(
    tape: &Tape,
    block: &DotBlock,
    top: usize,
    adjoints: &mut [f64],
    scratch: &mut Vec<f64>,
) -> bool {
    let (inner, outputs) = (block.inner as usize, block.outputs as usize);
    let first = block.first as usize;
    let a_all = &tape.block_args[block.a_range()];
    let b_first = block.b_first as usize;
    let values = tape.values();
    let b_values = &values[block.b_range()];
    let top_output = top - first;
    for i in (0..=top_output / outputs).rev() {
        let a_pos = &a_all[i * inner..(i + 1) * inner];
        let last_j = if i == top_output / outputs {
            top_output % outputs
        } else {
            outputs - 1
        };
        let row_outputs = first + i * outputs;
        if block.dense {
            scratch.clear();
            scratch.extend(a_pos.iter().map(|&p| values[p as usize]));
            scratch.extend(a_pos.iter().map(|&p| adjoints[p as usize]));
            let (a_values, a_adjoints) = scratch.split_at_mut(inner);
            for j in (0..=last_j).rev() {
                let adjoint = adjoints[row_outputs + j];
                if !ordinary(adjoint) {
                    if adjoint.is_finite() {
                        continue;
                    }
                    return false;
                }
                if block.transposed {
                    // Part j is column j of the `inner x outputs` second factor.
                    let column = b_values[j..].iter().step_by(outputs);
                    for (sum, &w) in a_adjoints.iter_mut().zip(column) {
                        *sum += adjoint * w;
                    }
                    let column = adjoints[b_first + j..].iter_mut().step_by(outputs);
                    for (sum, &x) in column.zip(a_values.iter()) {
                        *sum += adjoint * x;
                    }
                } else {
                    let part = &b_values[j * inner..(j + 1) * inner];
                    add_scaled(a_adjoints, adjoint, part);
                    add_scaled(
                        &mut adjoints[b_first + j * inner..][..inner],
                        adjoint,
                        a_values,
                    );
                }
            }
            for (&p, &sum) in a_pos.iter().zip(a_adjoints.iter()) {
                adjoints[p as usize] = sum;
            }
        } else {
            for j in (0..=last_j).rev() {
                let adjoint = adjoints[row_outputs + j];
                if !ordinary(adjoint) {
                    if adjoint.is_finite() {
                        continue;
                    }
                    return false;
                }
                let (start, step) = block.part(j);
                for (k, &p) in a_pos.iter().enumerate() {
                    adjoints[p as usize] += adjoint * values[start + k * step];
                }
                for (k, &p) in a_pos.iter().enumerate() {
                    adjoints[start + k * step] += adjoint * values[p as usize];
                }
            }
        }
    }
    true
}

/// `sums[k] += scale * xs[k]` for every `k`, four at a time (each sum on its own, so the
/// bits are those of the plain loop; the compiler makes vector code of the fours).
#[inline(always)]
fn add_scaled(sums: &mut [f64], scale: f64, xs: &[f64]) {
    let mut sum_fours = sums.chunks_exact_mut(4);
    let mut x_fours = xs.chunks_exact(4);
    for (s, x) in (&mut sum_fours).zip(&mut x_fours) {
        let s: &mut [f64; 4] = s.try_into().expect("chunks of 4");
        let x: &[f64; 4] = x.try_into().expect("chunks of 4");
        *s = [
            s[0] + scale * x[0],
            s[1] + scale * x[1],
            s[2] + scale * x[2],
            s[3] + scale * x[3],
        ];
    }
    for (s, &x) in sum_fours
        .into_remainder()
        .iter_mut()
        .zip(x_fours.remainder())
    {
        *s += scale * x;
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::keys::{NodeKey, READ_THE_TAPE};
    use super::*;

    /// A handle for the tape alone: a key and its position, and one made-up graph.
    #[derive(Clone, Copy)]
    struct Key(NodeKey, u32);

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
        fn carried(self) -> f64 {
            READ_THE_TAPE
        }
        fn pos(self) -> u32 {
            self.1
        }
        fn epoch(self) -> u32 {
            // No epoch a tape checks: the key is looked up.
            u32::MAX
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
        let keys = tape.keys.keys(first, 64 * 2).iter().zip(first..);
        let keys: Vec<Key> = keys.map(|(&k, pos)| Key(k, pos)).collect();
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
        tape.set_limits();
        let third = product(&mut tape) as usize;
        assert_eq!(tape.blocks.len(), 2);
        assert_eq!(tape.args().len(), 2 * outputs * inner);
        assert_eq!(tape.values[third], 64.0 * 0.25);
    }
}
