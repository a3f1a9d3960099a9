//! The sub-computations of fused nodes ([`Graph::fuse`](crate::Graph::fuse)), kept so that
//! a [`Replay`](crate::Replay) can evaluate them again at new inputs: a fused node carries
//! only its partials at the values it was recorded with, and the closure that made it is
//! gone. Each sub-computation is copied off the scratch tape it was recorded on (its ops,
//! values, edges, guards, and its first raw read of a value), before that tape is released.
//! Storage only, in flat arrays shared by all the programs of a graph (no allocation per
//! fused node once they have grown). Uses the tape; knows nothing of graphs or replays.

use std::panic::Location;

use super::guard::Guard;
use super::op::Op;
use super::tape::{CONST_ARG, Tape};

/// One fused node's sub-computation: its nodes are `nodes` of the arrays, numbered from 0
/// (the first `inputs` of them are the inputs, in the fused node's operand order), its
/// edges `edges`, its guards `guards`; `output` is the node the closure returned.
#[derive(Clone, Debug)]
pub(in crate::engine) struct Program {
    /// The fused node's position on its graph's tape (for a nested program, its parent's).
    pub(in crate::engine) node: u32,
    pub(in crate::engine) nodes: std::ops::Range<usize>,
    /// Where its nodes' entries of `edge_start` begin (one more entry than nodes).
    starts: usize,
    pub(in crate::engine) edges: std::ops::Range<usize>,
    pub(in crate::engine) guards: std::ops::Range<usize>,
    /// The programs of the fused nodes inside this one, by the index of their node here.
    pub(in crate::engine) nested: std::ops::Range<usize>,
    pub(in crate::engine) inputs: u32,
    pub(in crate::engine) output: u32,
    /// Its raw value reads (a replay refuses those of nodes that depend on its inputs).
    pub(in crate::engine) reads: std::ops::Range<usize>,
}

/// The lengths of [`Programs`]' arrays when a program began to be appended.
struct Opened {
    nodes: usize,
    starts: usize,
    edges: usize,
    guards: usize,
    nested: usize,
    reads: usize,
}

/// Every fused node's [`Program`] of one graph, in the order the nodes were recorded.
#[derive(Debug, Default)]
pub(in crate::engine) struct Programs {
    programs: Vec<Program>,
    /// The programs of the graph's own fused nodes (not nested ones), by node position.
    by_node: Vec<(u32, u32)>,
    ops: Vec<Op>,
    values: Vec<f64>,
    /// Per node, where its edges start (relative to its program's first edge); one more
    /// per program, its end.
    edge_start: Vec<u32>,
    /// Operand numbers within the program, or [`CONST_ARG`] (the constant in `weights`).
    args: Vec<u32>,
    weights: Vec<f64>,
    guards: Vec<Guard>,
    /// `(node within the program, where it was read)`.
    reads: Vec<(u32, &'static Location<'static>)>,
    /// `(node within the program, nested program)`.
    nested: Vec<(u32, u32)>,
    /// The programs used last, the most recent first (at most [`RECENT`]): a new fused
    /// node's sub-computation is compared with them before it is copied.
    recent: Vec<u32>,
}

/// How many recent programs a new one is compared with: a layer fuses a few statements in
/// turn (a norm's mean, its inverse deviation, its outputs), each many times.
const RECENT: usize = 4;

/// A read-only view of one program and the arrays it lives in.
#[derive(Clone, Copy, Debug)]
pub(in crate::engine) struct ProgramView<'a> {
    pub(in crate::engine) all: &'a Programs,
    pub(in crate::engine) program: &'a Program,
}

impl Programs {
    /// The heap bytes the programs hold (capacity).
    pub(in crate::engine) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.programs.capacity() * size_of::<Program>()
            + self.by_node.capacity() * size_of::<(u32, u32)>()
            + self.ops.capacity() * size_of::<Op>()
            + self.values.capacity() * size_of::<f64>()
            + self.edge_start.capacity() * size_of::<u32>()
            + self.args.capacity() * size_of::<u32>()
            + self.weights.capacity() * size_of::<f64>()
            + self.guards.capacity() * size_of::<Guard>()
            + self.reads.capacity() * size_of::<(u32, &'static Location<'static>)>()
            + self.nested.capacity() * size_of::<(u32, u32)>()
            + self.recent.capacity() * size_of::<u32>()
    }

    /// The program of the fused node at tape position `node`, if it was kept.
    pub(in crate::engine) fn of_node(&self, node: u32) -> Option<ProgramView<'_>> {
        let k = self.by_node.binary_search_by_key(&node, |&(n, _)| n).ok()?;
        Some(self.view(self.by_node[k].1))
    }

    fn view(&self, id: u32) -> ProgramView<'_> {
        ProgramView {
            all: self,
            program: &self.programs[id as usize],
        }
    }

    /// Drops the programs of nodes at `node` and above (released: positions are recorded
    /// again in increasing order, so a program recorded at `node` replaces them), so that
    /// a training loop that fuses in every step keeps one step's programs.
    fn forget_from(&mut self, node: u32) {
        while self.by_node.last().is_some_and(|&(n, _)| n >= node) {
            self.by_node.pop();
        }
        let keep = self.programs.partition_point(|p| p.node < node);
        self.recent.retain(|&id| (id as usize) < keep);
        if let Some(first) = self.programs.get(keep) {
            self.ops.truncate(first.nodes.start);
            self.values.truncate(first.nodes.start);
            self.edge_start.truncate(first.starts);
            self.args.truncate(first.edges.start);
            self.weights.truncate(first.edges.start);
            self.guards.truncate(first.guards.start);
            self.reads.truncate(first.reads.start);
            self.nested.truncate(first.nested.start);
            self.programs.truncate(keep);
        }
    }

    /// Keeps the sub-computation recorded on `tape` from position `start` on (its inputs
    /// first, `inputs` of them, then what the closure recorded; `output` is the node it
    /// returned) as the program of the fused node about to be recorded at `node`.
    /// `custom` renumbers a user-defined function of the scratch tape into the fused node's
    /// graph's numbering; `nested` gives the program of a fused node of the scratch tape.
    pub(in crate::engine) fn keep(
        &mut self,
        node: u32,
        tape: &Tape,
        (start, inputs, output): (usize, u32, u32),
        custom: &mut dyn FnMut(u8) -> u8,
        nested: Option<&Programs>,
    ) {
        self.forget_from(node);
        let found = (0..self.recent.len())
            .find_map(|k| self.same_as(self.recent[k], tape, (start, inputs, output)));
        let id = match found {
            Some(id) => id,
            None => self.copy(node, tape, (start, inputs, output), custom, nested),
        };
        // The most recent first, each once.
        self.recent.retain(|&r| r != id);
        self.recent.insert(0, id);
        self.recent.truncate(RECENT);
        self.by_node.push((node, id));
    }

    /// `id`, if the sub-computation on `tape` from `start` is the same program (a statement
    /// fused in a loop, on other inputs: the same ops, edges, constants, guards), compared
    /// in place, without a copy. `None` where it differs, or has what this test does not
    /// compare (a dot block, a user-defined function, a nested fused node, a raw read):
    /// such programs are always copied.
    fn same_as(
        &self,
        id: u32,
        tape: &Tape,
        (start, inputs, output): (usize, u32, u32),
    ) -> Option<u32> {
        let last = self.programs.get(id as usize)?;
        let end = tape.len();
        if last.nodes.len() != end - start
            || last.inputs != inputs
            || last.output as usize + start != output as usize
            || !last.nested.is_empty()
            || tape.blocks.last().is_some_and(|b| b.end() > start)
        {
            return None;
        }
        let later_guards = tape.guards.partition_point(|g| g.at as usize <= start);
        let guards = &self.guards[last.guards.clone()];
        let relative = |a: u32| if a == CONST_ARG { a } else { a - start as u32 };
        let same_guards_here = tape.guards.len() - later_guards == guards.len()
            && tape.guards[later_guards..]
                .iter()
                .zip(guards)
                .all(|(g, old)| {
                    let g = Guard {
                        operands: g.operands.map(relative),
                        ..*g
                    };
                    same_guards(std::slice::from_ref(&g), std::slice::from_ref(old))
                });
        let reads_here = tape.reads.as_ref().map_or(0, |r| {
            r.iter().filter(|&(pos, _)| pos as usize >= start).count()
        });
        if !same_guards_here || reads_here != 0 || !last.reads.is_empty() {
            return None;
        }
        // The ops, and the constants' values (every other value is recomputed: see
        // `Programs::canonical`).
        let old_nodes = last.nodes.clone();
        let same_nodes = (start..end)
            .zip(old_nodes)
            .enumerate()
            .all(|(k, (pos, old))| {
                let op = tape.op(pos);
                op == self.ops[old]
                    && !matches!(op, Op::Custom(_) | Op::Fused)
                    && (!keeps_value(op, k, inputs)
                        || tape.values()[pos].to_bits() == self.values[old].to_bits())
            });
        // The edges: their places, their operands, and the constant operands' values.
        let (first, last_edge) = (tape.edge_start()[start], tape.edge_start()[end]);
        let old_starts = &self.edge_start[last.starts..=last.starts + last.nodes.len()];
        let edges = first as usize..last_edge as usize;
        let same_edges = edges.len() == last.edges.len()
            && tape.edge_start()[start..=end]
                .iter()
                .zip(old_starts)
                .all(|(&e, &old)| e - first == old)
            && tape.args()[edges.clone()]
                .iter()
                .zip(&self.args[last.edges.clone()])
                .all(|(&a, &old)| relative(a) == old)
            && tape.args()[edges.clone()]
                .iter()
                .zip(&tape.weights()[edges])
                .zip(&self.weights[last.edges.clone()])
                .all(|((&a, w), old)| a != CONST_ARG || w.to_bits() == old.to_bits());
        if !(same_nodes && same_edges) {
            return None;
        }
        Some(id)
    }

    fn copy(
        &mut self,
        node: u32,
        tape: &Tape,
        (start, inputs, output): (usize, u32, u32),
        custom: &mut dyn FnMut(u8) -> u8,
        nested: Option<&Programs>,
    ) -> u32 {
        let end = tape.len();
        // The nested programs first (each a self-contained copy), then this one. (Only a
        // scratch graph that recorded fused nodes has programs to look for.)
        let mut inner = Vec::new();
        if let Some(nested) = nested.filter(|n| !n.by_node.is_empty()) {
            for pos in start..end {
                if tape.op(pos) == Op::Fused
                    && let Some(view) = nested.of_node(pos as u32)
                {
                    let id = self.copy_program(node, view, custom);
                    inner.push(((pos - start) as u32, id));
                }
            }
        }
        let open = self.open();
        let edges_start = open.edges;
        let relative = |a: u32| if a == CONST_ARG { a } else { a - start as u32 };
        self.ops.extend((start..end).map(|pos| match tape.op(pos) {
            Op::Custom(k) => Op::Custom(custom(k)),
            op => op,
        }));
        self.values.extend_from_slice(&tape.values()[start..end]);
        let in_a_block = tape.blocks.last().is_some_and(|b| b.end() > start);
        if in_a_block {
            // A dot block's nodes store no edges: each node's, expanded.
            for pos in start..end {
                self.edge_start.push((self.args.len() - edges_start) as u32);
                let (args, weights) = tape.edges(pos);
                self.args.extend(args.iter().map(|&a| relative(a)));
                self.weights.extend_from_slice(&weights);
            }
            self.edge_start.push((self.args.len() - edges_start) as u32);
        } else {
            // Stored edges only: the tape's own ranges, shifted.
            let (first, last) = (tape.edge_start()[start], tape.edge_start()[end]);
            self.edge_start
                .extend(tape.edge_start()[start..=end].iter().map(|&e| e - first));
            let edges = first as usize..last as usize;
            self.args
                .extend(tape.args()[edges.clone()].iter().map(|&a| relative(a)));
            self.weights.extend_from_slice(&tape.weights()[edges]);
        }
        self.canonical(end - start, edges_start, inputs);
        let later_guards = tape.guards.partition_point(|g| g.at as usize <= start);
        self.guards
            .extend(tape.guards[later_guards..].iter().map(|g| Guard {
                at: g.at - start as u32,
                operands: g.operands.map(relative),
                ..*g
            }));
        self.nested.extend_from_slice(&inner);
        if let Some(reads) = &tape.reads {
            self.reads.extend(
                reads
                    .iter()
                    .filter(|&(pos, _)| pos as usize >= start)
                    .map(|(pos, location)| (pos - start as u32, location)),
            );
        }
        self.close(node, open, inputs, output - start as u32)
    }

    /// Where the program about to be added begins in each array (see [`Programs::close`]).
    fn open(&self) -> Opened {
        Opened {
            nodes: self.ops.len(),
            starts: self.edge_start.len(),
            edges: self.args.len(),
            guards: self.guards.len(),
            nested: self.nested.len(),
            reads: self.reads.len(),
        }
    }

    /// Adds the program whose entries were appended to the arrays since `open`; returns
    /// its index.
    fn close(&mut self, node: u32, open: Opened, inputs: u32, output: u32) -> u32 {
        self.programs.push(Program {
            node,
            nodes: open.nodes..self.ops.len(),
            starts: open.starts,
            edges: open.edges..self.args.len(),
            guards: open.guards..self.guards.len(),
            nested: open.nested..self.nested.len(),
            inputs,
            output,
            reads: open.reads..self.reads.len(),
        });
        (self.programs.len() - 1) as u32
    }

    /// Sets to 0 what a replay of the last program recomputes (its last `nodes` values, but
    /// the constants'; the partials of its edges from `edges`, but a constant operand's
    /// slot, which holds the constant), so that a statement fused again on other inputs
    /// compares equal (see `Programs::same_as`). A replay of a program recomputes every
    /// node that is not an input or a constant, even those that do not depend on the
    /// inputs.
    fn canonical(&mut self, nodes: usize, edges: usize, inputs: u32) {
        let first = self.values.len() - nodes;
        let ops = &self.ops[first..];
        for (k, (value, &op)) in self.values[first..].iter_mut().zip(ops).enumerate() {
            if !keeps_value(op, k, inputs) {
                *value = 0.0;
            }
        }
        for (w, &a) in self.weights[edges..].iter_mut().zip(&self.args[edges..]) {
            if a != CONST_ARG {
                *w = 0.0;
            }
        }
    }

    /// Copies `view` (a program of another graph's arrays, with its nested ones) here.
    fn copy_program(
        &mut self,
        node: u32,
        view: ProgramView<'_>,
        custom: &mut dyn FnMut(u8) -> u8,
    ) -> u32 {
        let (from, p) = (view.all, view.program);
        let inner: Vec<(u32, u32)> = from.nested[p.nested.clone()]
            .iter()
            .map(|&(at, id)| (at, self.copy_program(node, from.view(id), custom)))
            .collect();
        let open = self.open();
        self.ops
            .extend(from.ops[p.nodes.clone()].iter().map(|&op| match op {
                Op::Custom(k) => Op::Custom(custom(k)),
                op => op,
            }));
        self.values.extend_from_slice(&from.values[p.nodes.clone()]);
        self.edge_start
            .extend_from_slice(&from.edge_start[p.starts..=p.starts + p.nodes.len()]);
        self.args.extend_from_slice(&from.args[p.edges.clone()]);
        self.weights
            .extend_from_slice(&from.weights[p.edges.clone()]);
        self.guards
            .extend_from_slice(&from.guards[p.guards.clone()]);
        self.reads.extend_from_slice(&from.reads[p.reads.clone()]);
        self.nested.extend_from_slice(&inner);
        self.close(node, open, p.inputs, p.output)
    }
}

impl<'a> ProgramView<'a> {
    /// The number of nodes.
    pub(in crate::engine) fn len(&self) -> usize {
        self.program.nodes.len()
    }

    pub(in crate::engine) fn op(&self, pos: usize) -> Op {
        self.all.ops[self.program.nodes.start + pos]
    }

    pub(in crate::engine) fn value(&self, pos: usize) -> f64 {
        self.all.values[self.program.nodes.start + pos]
    }

    /// Node `pos`'s edges: operand numbers (or [`CONST_ARG`]) and weights (the constant,
    /// for a constant operand).
    pub(in crate::engine) fn edges(&self, pos: usize) -> (&'a [u32], &'a [f64]) {
        let p = self.program;
        let range = p.edges.start + self.all.edge_start[p.starts + pos] as usize
            ..p.edges.start + self.all.edge_start[p.starts + pos + 1] as usize;
        (&self.all.args[range.clone()], &self.all.weights[range])
    }

    pub(in crate::engine) fn guards(&self) -> &'a [Guard] {
        &self.all.guards[self.program.guards.clone()]
    }

    pub(in crate::engine) fn reads(&self) -> &'a [(u32, &'static Location<'static>)] {
        &self.all.reads[self.program.reads.clone()]
    }

    /// The program of the fused node `pos` of this one.
    pub(in crate::engine) fn nested(&self, pos: usize) -> Option<ProgramView<'a>> {
        self.all.nested[self.program.nested.clone()]
            .iter()
            .find(|&&(at, _)| at as usize == pos)
            .map(|&(_, id)| self.all.view(id))
    }
}

/// Whether a program keeps the value of its node `k` (of op `op`, with `inputs` inputs):
/// a constant's, or an input's other than the program's own (a `var` made inside the
/// fused closure); a replay recomputes every other value.
fn keeps_value(op: Op, k: usize, inputs: u32) -> bool {
    op == Op::Constant || (op == Op::Input && k >= inputs as usize)
}

/// Whether two guard lists are the same comparisons of the same operands (the same
/// constants, where an operand is one), with the same outcomes, made at the same lines.
fn same_guards(a: &[Guard], b: &[Guard]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            let constants = (0..2).all(|k| {
                a.operands[k] != CONST_ARG || a.constants[k].to_bits() == b.constants[k].to_bits()
            });
            a.comparison == b.comparison
                && a.operands == b.operands
                && constants
                && a.outcome == b.outcome
                && std::ptr::eq(a.location, b.location)
        })
}
