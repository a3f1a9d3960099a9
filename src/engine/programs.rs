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
}

/// A read-only view of one program and the arrays it lives in.
#[derive(Clone, Copy, Debug)]
pub(in crate::engine) struct ProgramView<'a> {
    pub(in crate::engine) all: &'a Programs,
    pub(in crate::engine) program: &'a Program,
}

impl Programs {
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
        let id = self.copy(node, tape, (start, inputs, output), custom, nested);
        self.by_node.push((node, id));
    }

    fn copy(
        &mut self,
        node: u32,
        tape: &Tape,
        (start, inputs, output): (usize, u32, u32),
        custom: &mut dyn FnMut(u8) -> u8,
        nested: Option<&Programs>,
    ) -> u32 {
        // The nested programs first (each a self-contained copy), then this one.
        let mut inner = Vec::new();
        for pos in start..tape.len() {
            if tape.ops[pos] == Op::Fused
                && let Some(view) = nested.and_then(|n| n.of_node(pos as u32))
            {
                let id = self.copy_program(node, view, custom);
                inner.push(((pos - start) as u32, id));
            }
        }
        let nodes_start = self.ops.len();
        let starts = self.edge_start.len();
        let edges_start = self.args.len();
        let guards_start = self.guards.len();
        let nested_start = self.nested.len();
        let relative = |a: u32| if a == CONST_ARG { a } else { a - start as u32 };
        for pos in start..tape.len() {
            self.ops.push(match tape.ops[pos] {
                Op::Custom(k) => Op::Custom(custom(k)),
                op => op,
            });
            self.values.push(tape.values[pos]);
            self.edge_start.push((self.args.len() - edges_start) as u32);
            let (args, weights) = tape.edges(pos);
            self.args.extend(args.iter().map(|&a| relative(a)));
            self.weights.extend_from_slice(&weights);
        }
        self.edge_start.push((self.args.len() - edges_start) as u32);
        self.guards.extend(
            tape.guards
                .iter()
                .filter(|g| g.at as usize > start)
                .map(|g| Guard {
                    at: g.at - start as u32,
                    operands: g.operands.map(relative),
                    ..*g
                }),
        );
        self.nested.extend_from_slice(&inner);
        let reads_start = self.reads.len();
        if let Some(reads) = &tape.reads {
            self.reads.extend(
                reads
                    .iter()
                    .filter(|&(pos, _)| pos as usize >= start)
                    .map(|(pos, location)| (pos - start as u32, location)),
            );
        }
        self.programs.push(Program {
            node,
            nodes: nodes_start..self.ops.len(),
            starts,
            edges: edges_start..self.args.len(),
            guards: guards_start..self.guards.len(),
            nested: nested_start..self.nested.len(),
            inputs,
            output: output - start as u32,
            reads: reads_start..self.reads.len(),
        });
        (self.programs.len() - 1) as u32
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
        let nodes_start = self.ops.len();
        let starts = self.edge_start.len();
        let edges_start = self.args.len();
        let guards_start = self.guards.len();
        let nested_start = self.nested.len();
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
        let reads_start = self.reads.len();
        self.guards
            .extend_from_slice(&from.guards[p.guards.clone()]);
        self.reads.extend_from_slice(&from.reads[p.reads.clone()]);
        self.nested.extend_from_slice(&inner);
        self.programs.push(Program {
            node,
            nodes: nodes_start..self.ops.len(),
            starts,
            edges: edges_start..self.args.len(),
            guards: guards_start..self.guards.len(),
            nested: nested_start..self.nested.len(),
            reads: reads_start..self.reads.len(),
            ..p.clone()
        });
        (self.programs.len() - 1) as u32
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
