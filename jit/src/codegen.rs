//! From a replay's program to Cranelift IR to machine code: the program is cut into chunks
//! of consecutive nodes; each chunk gets a forward function (its values and partials, in
//! the tape's order) and a reverse function (its part of the sweep, from its top node
//! down), so that compile time stays linear in the tape's length however long it is.
//!
//! Every operation is the interpreter's, in its order: IEEE arithmetic (`fadd`, `fsub`,
//! `fmul`, `fdiv`, `fneg`, `sqrt`, `fabs`, comparisons and selects) is emitted inline where
//! the op table's rule is exactly that arithmetic, and everything else calls the op table's
//! own functions (`calls.rs`, and `native::node_trampoline` for n-ary ops other than sum,
//! dot and logsumexp). Cranelift never contracts a multiply and an add into an FMA, nor
//! reassociates: it only does that for an explicit `fma` instruction, which is never
//! emitted here (the crate's tests check a case where an FMA would change the result).
//!
//! Values live in registers within a short window and in the `values` buffer always (each
//! node's value is stored where it is computed, so later chunks, the reverse sweep, the
//! guards and the trampoline read it there). A partial that is not a constant, an operand's
//! value or the node's own value is stored in the `partials` buffer. The sweep keeps each
//! adjoint in a register while it is being summed and spills the least recently used ones
//! to the `adjoints` buffer, with every contribution added in the interpreter's order.

use std::collections::HashMap;
use std::f64::consts::{LN_2, LN_10};

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::types::{F64, I32, I64};
use cranelift_codegen::ir::{AbiParam, Block, InstBuilder, MemFlagsData, SigRef, Signature, Value};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Module, default_libcall_names};
use tapegrad::{Binary, Error, Nary, Op, ReplayProgram, Unary};

use crate::calls;
use crate::native::{Code, Context, Sizes, node_trampoline, sweep_trampoline};

/// How much work (nodes plus operands) one chunk's functions hold: large enough that calls
/// between chunks cost nothing, small enough that Cranelift's passes (register allocation
/// above all) stay fast.
const CHUNK_WORK: usize = 4096;
/// How many nodes back a value computed or loaded in the same function is reused from its
/// register; older ones are read again from the `values` buffer (which costs less than
/// keeping them alive, and spilling them, across the nodes between).
const VALUE_WINDOW: usize = 16;
/// How many adjoints the sweep sums in registers at once before it writes the least
/// recently used ones to the `adjoints` buffer.
const LIVE_ADJOINTS: usize = 32;
/// Sums and dots of more operands than this are evaluated, and swept, by loops in Rust
/// (the interpreter's) rather than unrolled: unrolled, their code outgrows the instruction
/// cache (a dot-heavy transformer took 55 bytes of code per edge), and a loop's overhead is
/// small beside a long node's work.
const WIDE: usize = 16;

/// What compiling a program produced, besides its code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// The number of nodes.
    pub nodes: usize,
    /// The number of operand edges.
    pub edges: usize,
    /// The number of functions (a forward and a reverse per chunk).
    pub functions: usize,
    /// Bytes of machine code.
    pub code_bytes: usize,
}

/// Buffers the trampoline evaluates n-ary nodes in: kept between calls, so that an
/// evaluation allocates nothing once they have grown.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scratch {
    operands: Vec<f64>,
    out: Vec<f64>,
    /// The first error a node evaluated here gave (a user-defined function's malformed
    /// partials, a flipped guard inside a fused node), for the caller to return once the
    /// compiled code is back.
    pub(crate) error: Option<Error>,
}

/// Evaluates node `node` (whose partials start at `edge`) in the compiled code's buffers,
/// for the trampoline, with the interpreter's operations: logsumexp as
/// [`logsumexp_node`], another n-ary op by the op table's `value` and `partials_f64` (what
/// the interpreter's `value_and_partials_f64` computes for them), anything else by
/// [`ReplayProgram::evaluate`], the interpreter's own evaluation.
pub(crate) fn evaluate_node(
    program: ReplayProgram<'_>,
    node: usize,
    edge: usize,
    values: &mut [f64],
    partials: &mut [f64],
    scratch: &mut Scratch,
) {
    let args = program.operands(node);
    let partials = &mut partials[edge..edge + args.len()];
    let op = match program.op(node) {
        Op::Nary(op) => op,
        _ => {
            if let Err(e) = program.evaluate(node, values, partials) {
                scratch.error.get_or_insert(e);
            }
            return;
        }
    };
    match op {
        // The interpreter's own loops for these (its `dot_in_place`, and `Nary::value` and
        // `partials_f64` for a sum), reading the values in place.
        Nary::Dot if args.len().is_multiple_of(2) => {
            let (a, b) = args.split_at(args.len() / 2);
            let (pa, pb) = partials.split_at_mut(a.len());
            for ((pa, pb), (&a, &b)) in pa.iter_mut().zip(pb).zip(a.iter().zip(b)) {
                *pa = values[b as usize];
                *pb = values[a as usize];
            }
            values[node] = a
                .iter()
                .zip(b)
                .map(|(&a, &b)| values[a as usize] * values[b as usize])
                .sum();
            return;
        }
        Nary::Sum => {
            partials.fill(1.0);
            values[node] = args.iter().map(|&a| values[a as usize]).sum();
            return;
        }
        _ => {}
    }
    let Scratch { operands, out, .. } = scratch;
    operands.clear();
    operands.extend(args.iter().map(|&a| values[a as usize]));
    if op == Nary::LogSumExp
        && let Some(y) = logsumexp_node(operands, partials)
    {
        values[node] = y;
        return;
    }
    out.clear();
    let y = op.value(operands);
    op.partials_f64(operands, y, out);
    partials.copy_from_slice(out);
    values[node] = y;
}

/// Node `node`'s part of the sweep (its partials start at `edge`), for the trampoline: the
/// interpreter's fast loop, `adjoint[operand] += adjoint * partial` in edge order, over its
/// operands that are nodes or inputs (a constant operand's slot is past the nodes; a leaf
/// that is not an input gets a sum nobody reads).
pub(crate) fn sweep_node(
    program: ReplayProgram<'_>,
    node: usize,
    edge: usize,
    adjoint: f64,
    partials: &[f64],
    adjoints: &mut [f64],
) {
    let args = program.operands(node);
    for (&arg, &partial) in args.iter().zip(&partials[edge..edge + args.len()]) {
        if let Some(sum) = adjoints.get_mut(arg as usize) {
            *sum += adjoint * partial;
        }
    }
}

/// Logsumexp's value and partials (written to `partials`) as the interpreter records them
/// (tapegrad's `Nary::value_and_partials_f64`, which is not public), where the largest
/// operand `m` is finite: `e_k = exp(x_k - m)`, their sum `s` (in order), the partials
/// `e_k / s`, the value `m + ln s`, each exp computed once. `None` where `m` is not finite
/// (an infinite operand, or none but NaNs and -inf): there the op table's `value` and
/// `partials_f64` give the interpreter's numbers, special cases and all.
fn logsumexp_node(xs: &[f64], partials: &mut [f64]) -> Option<f64> {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return None;
    }
    for (e, &x) in partials.iter_mut().zip(xs) {
        *e = (x - max).exp();
    }
    let sum: f64 = partials.iter().sum();
    partials.iter_mut().for_each(|e| *e /= sum);
    Some(max + sum.ln())
}

/// What a slot holds during an evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// One of the replay's inputs.
    Input,
    /// A value fixed when the replay was built: a constant operand, or a leaf that is not an
    /// input (its adjoint is never read, so the sweep passes nothing to it).
    Constant(f64),
    /// A node evaluated from its operands.
    Node,
}

/// How the sweep gets an edge's partial.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Partial {
    /// The operand is a constant: no contribution.
    Skip,
    /// Exactly 1: the contribution is the adjoint itself (`a * 1 = a`).
    One,
    /// Exactly -1: the contribution is the adjoint negated (`s + a * -1 = s - a`).
    MinusOne,
    /// A slot's value (a product's other factor, `exp`'s own value).
    Value(u32),
    /// Computed in the forward function and stored in `partials`.
    Stored,
}

/// A number in the sweep, `±v` (or `±1` where `v` is known to be 1): signs are tracked
/// rather than computed, as `-(x y) = (-x) y` and `-(x + y) = (-x) + (-y)` exactly (IEEE
/// rounding is symmetric; only the sign of a zero can differ, see [`Compiler::accumulate`]).
#[derive(Clone, Copy, Debug)]
struct Signed {
    v: Value,
    negated: bool,
    /// `v` is the constant 1: a product with it is the other factor.
    one: bool,
}

/// An adjoint while the sweep's code is being generated.
#[derive(Clone, Copy, Debug)]
enum Adjoint {
    /// Nothing has reached it yet: it is 0, and its node passes nothing on (the
    /// interpreter's sweep skips a zero adjoint).
    Untouched,
    /// Being summed in a register, last touched at the given step.
    Live(Signed, usize),
    /// Its sum so far is in the `adjoints` buffer.
    Memory,
}

/// Which buffer a load or store goes to.
#[derive(Clone, Copy, Debug)]
enum Buffer {
    Values,
    Partials,
    Adjoints,
    /// `x`, by input.
    Inputs,
    /// The gradient, by input.
    Gradient,
}

/// Compiles `program`, which has `guards` guards.
pub(crate) fn compile(program: ReplayProgram<'_>, guards: usize) -> Result<(Code, Stats), String> {
    Compiler::new(program, guards)?.run()
}

struct Compiler<'p> {
    program: ReplayProgram<'p>,
    /// The number of guards.
    guards: usize,
    module: JITModule,
    kinds: Vec<Kind>,
    /// Per node: its index among the inputs (`u32::MAX` if it is not one).
    input_index: Vec<u32>,
    /// `edge_start[n]..edge_start[n + 1]` are node `n`'s edges (its partials' positions).
    edge_start: Vec<usize>,
    partials: Vec<Partial>,
    /// Per node: whether its value is stored in `values` where it is computed (because a
    /// later chunk, the sweep, the trampoline or the caller reads it there); per input,
    /// whether the first forward function copies it there from `x` (for the trampoline).
    stored: Vec<bool>,
    adjoints: Vec<Adjoint>,
    /// What `[f64]::iter().sum()` starts from (-0.0, which leaves the first term as it
    /// is; +0.0 in older Rust, which does not for a -0.0), so that sums fold as the
    /// interpreter's do.
    sum_start: f64,
    sizes: Sizes,
    stats: Stats,
}

impl<'p> Compiler<'p> {
    fn new(program: ReplayProgram<'p>, guards: usize) -> Result<Compiler<'p>, String> {
        let mut flags = settings::builder();
        let set = |flags: &mut settings::Builder, name: &str, value: &str| {
            flags
                .set(name, value)
                .map_err(|e| format!("Cranelift setting {name}={value}: {e}"))
        };
        set(&mut flags, "opt_level", "speed")?;
        set(
            &mut flags,
            "enable_verifier",
            if cfg!(debug_assertions) {
                "true"
            } else {
                "false"
            },
        )?;
        // A chunk's frame can be large (spilled values): probe it, page by page, so that a
        // deep stack meets its guard page instead of jumping past it.
        set(&mut flags, "enable_probestack", "true")?;
        set(&mut flags, "probestack_strategy", "inline")?;
        // Nothing unwinds through compiled code: the functions it calls are `extern "C"`.
        set(&mut flags, "unwind_info", "false")?;
        set(&mut flags, "use_colocated_libcalls", "false")?;
        set(&mut flags, "is_pic", "false")?;
        let isa = cranelift_native::builder()
            .map_err(|e| format!("Cranelift does not support this machine: {e}"))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| format!("Cranelift: {e}"))?;
        let module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));

        let nodes = program.nodes();
        let slots = program.slots();
        let mut is_input = vec![false; nodes];
        for &i in program.inputs() {
            is_input[i as usize] = true;
        }
        let kinds: Vec<Kind> = (0..nodes)
            .map(|n| match program.op(n) {
                Op::Input if is_input[n] => Kind::Input,
                Op::Input | Op::Constant => Kind::Constant(slots[n]),
                _ => Kind::Node,
            })
            .collect();
        let mut edge_start = Vec::with_capacity(nodes + 1);
        edge_start.push(0);
        for n in 0..nodes {
            edge_start.push(edge_start[n] + program.operands(n).len());
        }
        let edges = edge_start[nodes];
        let sizes = Sizes {
            slots: slots.len(),
            edges,
            nodes,
            inputs: program.inputs().len(),
        };
        let mut input_index = vec![u32::MAX; nodes];
        for (k, &i) in program.inputs().iter().enumerate() {
            input_index[i as usize] = k as u32;
        }
        // Every access is at a constant byte offset, an `i32`.
        let largest = sizes.slots.max(edges);
        if largest >= (i32::MAX as usize) / 8 {
            return Err(format!(
                "the program has {largest} slots or edges; the compiler handles fewer than {}",
                i32::MAX / 8
            ));
        }
        Ok(Compiler {
            program,
            guards,
            module,
            kinds,
            input_index,
            edge_start,
            partials: vec![Partial::Skip; edges],
            stored: vec![false; nodes],
            adjoints: vec![Adjoint::Untouched; nodes],
            sum_start: Nary::Sum.value(&[]),
            sizes,
            stats: Stats {
                nodes,
                edges,
                ..Stats::default()
            },
        })
    }

    fn run(mut self) -> Result<(Code, Stats), String> {
        let nodes = self.program.nodes();
        let root = self.program.output();
        // Chunks of consecutive nodes, up to the root (the nodes above it are inputs).
        let mut chunks = Vec::new();
        let mut chunk_of = vec![0u32; root + 1];
        let (mut start, mut work) = (0, 0);
        for (n, chunk) in chunk_of.iter_mut().enumerate() {
            *chunk = chunks.len() as u32;
            work += 1 + self.program.operands(n).len();
            if work >= CHUNK_WORK || n == root {
                chunks.push(start..n + 1);
                (start, work) = (n + 1, 0);
            }
        }
        self.plan(&chunk_of);

        let mut context = self.module.make_context();
        let mut builder_context = FunctionBuilderContext::new();
        let mut signature = self.module.make_signature();
        for _ in 0..6 {
            signature.params.push(AbiParam::new(I64));
        }
        signature.returns.push(AbiParam::new(I32));

        let mut define = |this: &mut Self,
                          context: &mut cranelift_codegen::Context,
                          emit: &mut dyn FnMut(&mut Self, &mut Frame<'_>)|
         -> Result<FuncId, String> {
            context.func.signature = signature.clone();
            {
                let mut frame = Frame::new(
                    FunctionBuilder::new(&mut context.func, &mut builder_context),
                    this.sizes,
                );
                emit(this, &mut frame);
                frame.finish(this.module.target_config());
            }
            let id = this
                .module
                .declare_anonymous_function(&signature)
                .map_err(|e| format!("Cranelift: {e}"))?;
            this.module
                .define_function(id, context)
                .map_err(|e| format!("Cranelift: {e:?}"))?;
            if let Some(code) = context.compiled_code() {
                this.stats.code_bytes += code.code_buffer().len();
            }
            this.module.clear_context(context);
            this.stats.functions += 1;
            Ok(id)
        };

        let mut forward = Vec::with_capacity(chunks.len());
        for (k, chunk) in chunks.iter().enumerate() {
            let last = k + 1 == chunks.len();
            let chunk = chunk.clone();
            forward.push(define(&mut self, &mut context, &mut |this, frame| {
                if k == 0 {
                    // The inputs the trampoline reads, where it reads them.
                    for &slot in this.program.inputs() {
                        if this.stored[slot as usize] {
                            let x = this.value(frame, slot);
                            frame.store(Buffer::Values, slot as usize, x);
                        }
                    }
                }
                for node in chunk.clone() {
                    this.forward_node(frame, node);
                    frame.step += 1;
                }
                if last {
                    this.guards(frame);
                }
                let zero = frame.b.ins().iconst(I32, 0);
                frame.b.ins().return_(&[zero]);
            })?);
        }
        let mut reverse = Vec::with_capacity(chunks.len());
        for (k, chunk) in chunks.iter().enumerate().rev() {
            let first = k + 1 == chunks.len();
            let chunk = chunk.clone();
            reverse.push(define(&mut self, &mut context, &mut |this, frame| {
                if first {
                    // The seed; and the inputs above the root, which nothing reaches.
                    let one = frame.b.ins().f64const(1.0);
                    let seed = Signed {
                        v: one,
                        negated: false,
                        one: true,
                    };
                    this.adjoints[root] = Adjoint::Live(seed, 0);
                    frame.live.push(root as u32);
                    for n in root + 1..nodes {
                        if this.kinds[n] == Kind::Input {
                            let zero = frame.b.ins().f64const(0.0);
                            frame.store(Buffer::Gradient, this.input_index[n] as usize, zero);
                        }
                    }
                }
                for node in chunk.clone().rev() {
                    this.reverse_node(frame, node);
                    frame.step += 1;
                }
                // What this chunk passed to nodes below it, for the next function.
                for slot in std::mem::take(&mut frame.live) {
                    this.spill(frame, slot as usize);
                }
                let zero = frame.b.ins().iconst(I32, 0);
                frame.b.ins().return_(&[zero]);
            })?);
        }
        self.module
            .finalize_definitions()
            .map_err(|e| format!("Cranelift: {e}"))?;
        let address = |id: &FuncId| self.module.get_finalized_function(*id);
        let forward: Vec<*const u8> = forward.iter().map(address).collect();
        let reverse: Vec<*const u8> = reverse.iter().map(address).collect();
        Ok((
            Code::new(self.module, &forward, &reverse, self.sizes),
            self.stats,
        ))
    }

    fn is_active(&self, slot: u32) -> bool {
        (slot as usize) < self.kinds.len()
            && !matches!(self.kinds[slot as usize], Kind::Constant(_))
    }

    fn is_input(&self, slot: u32) -> bool {
        self.kinds.get(slot as usize) == Some(&Kind::Input)
    }

    fn is_node(&self, slot: u32) -> bool {
        self.kinds.get(slot as usize) == Some(&Kind::Node)
    }

    /// Whether the forward function computes `op` itself (else the trampoline does, and
    /// the sweep's trampoline sweeps it).
    fn inline(op: Op, operands: usize) -> bool {
        match op {
            Op::Unary(_) | Op::Binary(_) => true,
            Op::Nary(Nary::Sum) => operands <= WIDE,
            Op::Nary(Nary::Dot) => operands.is_multiple_of(2) && operands <= WIDE,
            _ => false,
        }
    }

    /// Before any code: how the sweep gets each partial, and which values must be stored.
    fn plan(&mut self, chunk_of: &[u32]) {
        let root = self.program.output();
        for node in 0..=root {
            if self.kinds[node] != Kind::Node {
                continue;
            }
            let op = self.program.op(node);
            let args = self.program.operands(node);
            let edge = self.edge_start[node];
            let inline = Self::inline(op, args.len());
            for (k, &a) in args.iter().enumerate() {
                let partial = match op {
                    Op::Unary(Unary::Neg) => Partial::MinusOne,
                    Op::Unary(Unary::Exp) => Partial::Value(node as u32),
                    Op::Binary(Binary::Add) | Op::Nary(Nary::Sum) => Partial::One,
                    Op::Binary(Binary::Sub) if k == 0 => Partial::One,
                    Op::Binary(Binary::Sub) => Partial::MinusOne,
                    Op::Binary(Binary::Mul) => Partial::Value(args[1 - k]),
                    Op::Nary(Nary::Dot) if inline => {
                        Partial::Value(args[(k + args.len() / 2) % args.len()])
                    }
                    _ => Partial::Stored,
                };
                self.partials[edge + k] = if self.is_active(a) {
                    partial
                } else {
                    Partial::Skip
                };
                if let Partial::Value(s) = self.partials[edge + k]
                    && self.is_node(s)
                {
                    self.stored[s as usize] = true;
                }
                let elsewhere = || !inline || chunk_of[a as usize] != chunk_of[node];
                if (self.is_node(a) && elsewhere()) || (self.is_input(a) && !inline) {
                    self.stored[a as usize] = true;
                }
            }
        }
        for k in 0..self.guards {
            let (_, operands, _) = self.program.guard(k);
            for a in operands {
                if self.is_node(a) {
                    self.stored[a as usize] = true;
                }
            }
        }
        if self.kinds[root] == Kind::Node {
            self.stored[root] = true;
        }
    }

    /// A slot's value in a function: a constant; or the node's value, from its register if
    /// it is recent or is not stored, else from `values`.
    fn value(&self, frame: &mut Frame<'_>, slot: u32) -> Value {
        let s = slot as usize;
        let constant = match self.kinds.get(s) {
            Some(&Kind::Constant(c)) => Some(c),
            Some(_) => None,
            None => Some(self.program.slots()[s]),
        };
        if let Some(c) = constant {
            return frame.b.ins().f64const(c);
        }
        if let Some(&(v, at)) = frame.cache.get(&slot)
            && (frame.step - at <= VALUE_WINDOW || (self.is_node(slot) && !self.stored[s]))
        {
            return v;
        }
        let v = match self.kinds[s] {
            Kind::Input => frame.load(Buffer::Inputs, self.input_index[s] as usize),
            _ => frame.load(Buffer::Values, s),
        };
        frame.cache.insert(slot, (v, frame.step));
        v
    }

    /// Node `node`'s value, and its partials that are stored, in the interpreter's
    /// operations.
    fn forward_node(&mut self, frame: &mut Frame<'_>, node: usize) {
        if self.kinds[node] != Kind::Node {
            return;
        }
        let op = self.program.op(node);
        let args = self.program.operands(node);
        let edge = self.edge_start[node];
        let wanted = |this: &Self, k: usize| this.partials[edge + k] == Partial::Stored;
        let one = |frame: &mut Frame<'_>| frame.b.ins().f64const(1.0);
        let y = match op {
            Op::Unary(u) => {
                let x = self.value(frame, args[0]);
                let (y, p) = self.unary(frame, u, x);
                if let Some(p) = p
                    && wanted(self, 0)
                {
                    let p = p(frame);
                    frame.store(Buffer::Partials, edge, p);
                }
                y
            }
            Op::Binary(bop) => {
                let (a, b) = (self.value(frame, args[0]), self.value(frame, args[1]));
                match bop {
                    Binary::Add => frame.b.ins().fadd(a, b),
                    Binary::Sub => frame.b.ins().fsub(a, b),
                    Binary::Mul => frame.b.ins().fmul(a, b),
                    Binary::Div => {
                        // a / b: d/da = 1 / b, d/db = -(y / b).
                        let y = frame.b.ins().fdiv(a, b);
                        if wanted(self, 0) {
                            let one = one(frame);
                            let p = frame.b.ins().fdiv(one, b);
                            frame.store(Buffer::Partials, edge, p);
                        }
                        if wanted(self, 1) {
                            let q = frame.b.ins().fdiv(y, b);
                            let p = frame.b.ins().fneg(q);
                            frame.store(Buffer::Partials, edge + 1, p);
                        }
                        y
                    }
                    _ => {
                        let y = frame.call(calls::binary_value_of(bop) as usize, &[a, b]);
                        for k in 0..2 {
                            if wanted(self, k) {
                                let f = calls::binary_partial_of(bop, k) as usize;
                                let p = frame.call(f, &[a, b, y]);
                                frame.store(Buffer::Partials, edge + k, p);
                            }
                        }
                        y
                    }
                }
            }
            Op::Nary(Nary::Sum) if Self::inline(op, args.len()) => {
                let terms: Vec<Value> = args.iter().map(|&a| self.value(frame, a)).collect();
                self.sum(frame, terms)
            }
            _ if Self::inline(op, args.len()) => {
                // A dot: a's entries then b's.
                let half = args.len() / 2;
                let mut products = Vec::with_capacity(half);
                for i in 0..half {
                    let (a, b) = (
                        self.value(frame, args[i]),
                        self.value(frame, args[i + half]),
                    );
                    products.push(frame.b.ins().fmul(a, b));
                }
                self.sum(frame, products)
            }
            _ => {
                // Everything else (logsumexp, amax, clamp, and ops this compiler does not
                // know) by the interpreter's rules, through the trampoline, which reads the
                // operands and writes the value and partials in the buffers.
                frame.call_node(node, edge);
                frame.load(Buffer::Values, node)
            }
        };
        if self.stored[node] && Self::inline(op, args.len()) {
            frame.store(Buffer::Values, node, y);
        }
        frame.cache.insert(node as u32, (y, frame.step));
    }

    /// A unary op's value, and how to compute its partial (where the sweep does not find it
    /// without: `None` for `-x` and `e^x`).
    #[allow(clippy::type_complexity)]
    fn unary(
        &mut self,
        frame: &mut Frame<'_>,
        op: Unary,
        x: Value,
    ) -> (Value, Option<Box<dyn FnOnce(&mut Frame<'_>) -> Value>>) {
        let call = |frame: &mut Frame<'_>| frame.call(calls::unary_value_of(op) as usize, &[x]);
        let recip = |frame: &mut Frame<'_>, v: Value| {
            let one = frame.b.ins().f64const(1.0);
            frame.b.ins().fdiv(one, v)
        };
        let by_table = move |y: Value| -> Box<dyn FnOnce(&mut Frame<'_>) -> Value> {
            Box::new(move |frame| frame.call(calls::unary_partial_of(op) as usize, &[x, y]))
        };
        match op {
            // -x; d = -1
            Unary::Neg => (frame.b.ins().fneg(x), None),
            // e^x; d = y
            Unary::Exp => (call(frame), None),
            // 1 / x; d = -(y y)
            Unary::Recip => {
                let y = recip(frame, x);
                (
                    y,
                    Some(Box::new(move |frame| {
                        let yy = frame.b.ins().fmul(y, y);
                        frame.b.ins().fneg(yy)
                    })),
                )
            }
            // sqrt x (IEEE, correctly rounded); d = (1 / y) * 0.5
            Unary::Sqrt => {
                let y = frame.b.ins().sqrt(x);
                (
                    y,
                    Some(Box::new(move |frame| {
                        let r = recip(frame, y);
                        let half = frame.b.ins().f64const(0.5);
                        frame.b.ins().fmul(r, half)
                    })),
                )
            }
            // ln x; d = 1 / x
            Unary::Ln => (call(frame), Some(Box::new(move |frame| recip(frame, x)))),
            // tan x; d = y y + 1
            Unary::Tan => {
                let y = call(frame);
                (
                    y,
                    Some(Box::new(move |frame| {
                        let yy = frame.b.ins().fmul(y, y);
                        let one = frame.b.ins().f64const(1.0);
                        frame.b.ins().fadd(yy, one)
                    })),
                )
            }
            // 2^x; d = y ln 2
            Unary::Exp2 => {
                let y = call(frame);
                (
                    y,
                    Some(Box::new(move |frame| {
                        let ln2 = frame.b.ins().f64const(LN_2);
                        frame.b.ins().fmul(y, ln2)
                    })),
                )
            }
            // log2 x, log10 x; d = 1 / (x ln b)
            Unary::Log2 | Unary::Log10 => {
                let ln_b = if op == Unary::Log2 { LN_2 } else { LN_10 };
                (
                    call(frame),
                    Some(Box::new(move |frame| {
                        let ln_b = frame.b.ins().f64const(ln_b);
                        let d = frame.b.ins().fmul(x, ln_b);
                        recip(frame, d)
                    })),
                )
            }
            // ln(1 + x); d = 1 / (x + 1)
            Unary::Ln1p => (
                call(frame),
                Some(Box::new(move |frame| {
                    let one = frame.b.ins().f64const(1.0);
                    let d = frame.b.ins().fadd(x, one);
                    recip(frame, d)
                })),
            ),
            // atan x; d = 1 / (x x + 1)
            Unary::Atan => (
                call(frame),
                Some(Box::new(move |frame| {
                    let xx = frame.b.ins().fmul(x, x);
                    let one = frame.b.ins().f64const(1.0);
                    let d = frame.b.ins().fadd(xx, one);
                    recip(frame, d)
                })),
            ),
            // cbrt x; d = 1 / (y y 3)
            Unary::Cbrt => {
                let y = call(frame);
                (
                    y,
                    Some(Box::new(move |frame| {
                        let yy = frame.b.ins().fmul(y, y);
                        let three = frame.b.ins().f64const(3.0);
                        let d = frame.b.ins().fmul(yy, three);
                        recip(frame, d)
                    })),
                )
            }
            // max(x, 0) as `if x <= 0 { 0 } else { x }` (NaN passes); d = 1 above 0, 0 at
            // and below, NaN at NaN.
            Unary::Relu => {
                let zero = frame.b.ins().f64const(0.0);
                let at_most_zero = frame.b.ins().fcmp(FloatCC::LessThanOrEqual, x, zero);
                let y = frame.b.ins().select(at_most_zero, zero, x);
                (
                    y,
                    Some(Box::new(move |frame| {
                        let above = frame.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                        let one = frame.b.ins().f64const(1.0);
                        let nan = frame.b.ins().f64const(f64::NAN);
                        let below = frame.b.ins().select(at_most_zero, zero, nan);
                        frame.b.ins().select(above, one, below)
                    })),
                )
            }
            // |x| (clears the sign bit, as `f64::abs`); d by the op table.
            Unary::Abs => {
                let y = frame.b.ins().fabs(x);
                (y, Some(by_table(y)))
            }
            _ => {
                let y = call(frame);
                (y, Some(by_table(y)))
            }
        }
    }

    /// `terms` summed left to right, as `[f64]::iter().sum()` sums them.
    fn sum(&self, frame: &mut Frame<'_>, terms: Vec<Value>) -> Value {
        let mut terms = terms.into_iter();
        let mut total = if self.sum_start.to_bits() == (-0.0f64).to_bits() {
            // -0 + t is t for every t: start from the first term.
            match terms.next() {
                Some(t) => t,
                None => return frame.b.ins().f64const(self.sum_start),
            }
        } else {
            frame.b.ins().f64const(self.sum_start)
        };
        for t in terms {
            total = frame.b.ins().fadd(total, t);
        }
        total
    }

    /// Every guard, in recording order: the first that comes out otherwise returns its
    /// index plus one.
    fn guards(&mut self, frame: &mut Frame<'_>) {
        for k in 0..self.guards {
            let (comparison, [a, b], outcome) = self.program.guard(k);
            let cc = match comparison {
                "<" => FloatCC::LessThan,
                "<=" => FloatCC::LessThanOrEqual,
                ">" => FloatCC::GreaterThan,
                ">=" => FloatCC::GreaterThanOrEqual,
                "==" => FloatCC::Equal,
                // `!=` is true when either is NaN, as Cranelift's `NotEqual` is.
                "!=" => FloatCC::NotEqual,
                other => unreachable!("unknown comparison {other}"),
            };
            let (va, vb) = (self.value(frame, a), self.value(frame, b));
            let holds = frame.b.ins().fcmp(cc, va, vb);
            let (next, flipped) = (frame.b.create_block(), frame.b.create_block());
            if outcome {
                frame.b.ins().brif(holds, next, &[], flipped, &[]);
            } else {
                frame.b.ins().brif(holds, flipped, &[], next, &[]);
            }
            frame.b.switch_to_block(flipped);
            frame.b.set_cold_block(flipped);
            let status = frame.b.ins().iconst(I32, k as i64 + 1);
            frame.b.ins().return_(&[status]);
            frame.b.switch_to_block(next);
        }
    }

    /// Node `node`'s part of the sweep: its adjoint times each partial, added to its
    /// operands' adjoints in edge order.
    fn reverse_node(&mut self, frame: &mut Frame<'_>, node: usize) {
        let adjoint = match self.adjoints[node] {
            Adjoint::Untouched => None,
            Adjoint::Live(a, _) => {
                if let Some(i) = frame.live.iter().position(|&s| s as usize == node) {
                    frame.live.swap_remove(i);
                }
                Some(a)
            }
            Adjoint::Memory => Some(Signed {
                v: frame.load(Buffer::Adjoints, node),
                negated: false,
                one: false,
            }),
        };
        self.adjoints[node] = Adjoint::Memory;
        match self.kinds[node] {
            Kind::Input => {
                // Its gradient, plus +0: the interpreter's adjoints are never -0 (see
                // `accumulate`).
                let zero = frame.b.ins().f64const(0.0);
                let g = match adjoint {
                    // -v + 0 is 0 - v, for every v.
                    Some(a) if a.negated => frame.b.ins().fsub(zero, a.v),
                    Some(a) => frame.b.ins().fadd(a.v, zero),
                    None => zero,
                };
                frame.store(Buffer::Gradient, self.input_index[node] as usize, g);
                return;
            }
            Kind::Constant(_) => return,
            Kind::Node => {}
        }
        // A node nothing reached passes nothing on, as the interpreter skips a zero adjoint.
        let Some(a) = adjoint else { return };
        let edge = self.edge_start[node];
        let args = self.program.operands(node);
        if !Self::inline(self.program.op(node), args.len()) {
            // The trampoline adds to the operands' adjoints in `adjoints`: put them there
            // (one that nothing has reached yet starts at +0, as in the interpreter).
            for &arg in args {
                let slot = arg as usize;
                if !self.is_active(arg) {
                    continue;
                }
                match self.adjoints[slot] {
                    Adjoint::Untouched => {
                        let zero = frame.b.ins().f64const(0.0);
                        frame.store(Buffer::Adjoints, slot, zero);
                    }
                    Adjoint::Live(..) => {
                        self.spill(frame, slot);
                        if let Some(i) = frame.live.iter().position(|&s| s == arg) {
                            frame.live.swap_remove(i);
                        }
                    }
                    Adjoint::Memory => {}
                }
                self.adjoints[slot] = Adjoint::Memory;
            }
            let a = frame.materialize(a);
            frame.call_sweep(node, edge, a);
            return;
        }
        for (k, &arg) in self.program.operands(node).iter().enumerate() {
            let w = match self.partials[edge + k] {
                Partial::Skip => continue,
                Partial::One => None,
                Partial::MinusOne => {
                    let c = Signed {
                        negated: !a.negated,
                        ..a
                    };
                    self.accumulate(frame, arg as usize, c);
                    continue;
                }
                Partial::Value(slot) => Some(self.value(frame, slot)),
                Partial::Stored => Some(frame.load(Buffer::Partials, edge + k)),
            };
            // a w, as ±(v w); with v = 1, ±w.
            let c = match w {
                None => a,
                Some(w) if a.one => Signed {
                    v: w,
                    negated: a.negated,
                    one: false,
                },
                Some(w) => Signed {
                    v: frame.b.ins().fmul(a.v, w),
                    negated: a.negated,
                    one: false,
                },
            };
            self.accumulate(frame, arg as usize, c);
        }
    }

    /// Adds a contribution to `slot`'s adjoint, in the interpreter's order.
    ///
    /// The interpreter adds the first contribution to +0, so its adjoints are never -0;
    /// here the first contribution is the sum as it is, and signs are tracked rather than
    /// applied, so a sum can be a zero of the other sign. Nothing else differs (a zero's
    /// sign changes no other sum's or product's magnitude, and an infinity or NaN sends the
    /// whole gradient to the interpreter), and the caller adds +0 to each gradient.
    fn accumulate(&mut self, frame: &mut Frame<'_>, slot: usize, c: Signed) {
        let sum = match self.adjoints[slot] {
            Adjoint::Untouched => {
                frame.live.push(slot as u32);
                c
            }
            Adjoint::Live(s, _) => frame.add(s, c),
            Adjoint::Memory => {
                frame.live.push(slot as u32);
                let s = Signed {
                    v: frame.load(Buffer::Adjoints, slot),
                    negated: false,
                    one: false,
                };
                frame.add(s, c)
            }
        };
        self.adjoints[slot] = Adjoint::Live(sum, frame.step);
        if frame.live.len() > LIVE_ADJOINTS {
            self.spill_oldest(frame);
        }
    }

    /// Writes `slot`'s adjoint, if it is in a register, to `adjoints`.
    fn spill(&mut self, frame: &mut Frame<'_>, slot: usize) {
        if let Adjoint::Live(s, _) = self.adjoints[slot] {
            let v = frame.materialize(s);
            frame.store(Buffer::Adjoints, slot, v);
            self.adjoints[slot] = Adjoint::Memory;
        }
    }

    /// Writes the least recently touched half of the live adjoints to `adjoints`.
    fn spill_oldest(&mut self, frame: &mut Frame<'_>) {
        let mut live: Vec<(usize, u32)> = frame
            .live
            .iter()
            .map(|&s| match self.adjoints[s as usize] {
                Adjoint::Live(_, at) => (at, s),
                _ => unreachable!("a live slot is live"),
            })
            .collect();
        live.sort_unstable();
        let keep = live.split_off(live.len() / 2);
        for (_, s) in live {
            self.spill(frame, s as usize);
        }
        frame.live = keep.into_iter().map(|(_, s)| s).collect();
    }
}

/// One function being built: its builder, its pointer parameters, and what it caches.
struct Frame<'f> {
    b: FunctionBuilder<'f>,
    params: [Value; 6],
    sizes: Sizes,
    /// Signatures of the calls, imported on first use.
    signatures: HashMap<usize, SigRef>,
    /// Each computed or loaded slot's value and the step it was made at.
    cache: HashMap<u32, (Value, usize)>,
    /// The slots whose adjoints are being summed in registers.
    live: Vec<u32>,
    /// Nodes done so far in this function.
    step: usize,
}

impl<'f> Frame<'f> {
    fn new(mut b: FunctionBuilder<'f>, sizes: Sizes) -> Frame<'f> {
        let entry: Block = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let p = b.block_params(entry);
        let params = [p[0], p[1], p[2], p[3], p[4], p[5]];
        Frame {
            b,
            params,
            sizes,
            signatures: HashMap::new(),
            cache: HashMap::new(),
            live: Vec::new(),
            step: 0,
        }
    }

    fn finish(mut self, config: cranelift_codegen::isa::TargetFrontendConfig) {
        self.b.seal_all_blocks();
        self.b.finalize(config);
    }

    /// The base pointer and length of a buffer.
    fn buffer(&self, buffer: Buffer) -> (Value, usize) {
        match buffer {
            Buffer::Values => (self.params[0], self.sizes.slots),
            Buffer::Partials => (self.params[1], self.sizes.edges),
            Buffer::Adjoints => (self.params[2], self.sizes.nodes),
            Buffer::Inputs => (self.params[4], self.sizes.inputs),
            Buffer::Gradient => (self.params[5], self.sizes.inputs),
        }
    }

    /// The byte offset of entry `index`, which must be in bounds: the one check that keeps
    /// every access of the generated code inside its buffers (`native.rs` relies on it).
    fn offset(&self, buffer: Buffer, index: usize) -> (Value, i32) {
        let (base, len) = self.buffer(buffer);
        assert!(index < len, "{buffer:?}[{index}] out of bounds ({len})");
        (base, (index * 8) as i32)
    }

    /// Every access is aligned and never traps (in bounds by construction).
    fn load(&mut self, buffer: Buffer, index: usize) -> Value {
        let (base, offset) = self.offset(buffer, index);
        self.b
            .ins()
            .load(F64, MemFlagsData::trusted(), base, offset)
    }

    fn store(&mut self, buffer: Buffer, index: usize, v: Value) {
        let (base, offset) = self.offset(buffer, index);
        self.b.ins().store(MemFlagsData::trusted(), v, base, offset);
    }

    /// The number itself: `v` or `-v`.
    fn materialize(&mut self, s: Signed) -> Value {
        if s.negated {
            self.b.ins().fneg(s.v)
        } else {
            s.v
        }
    }

    /// `s + c`, as `±(s.v + c.v)` or `±(s.v - c.v)`.
    fn add(&mut self, s: Signed, c: Signed) -> Signed {
        let v = if s.negated == c.negated {
            self.b.ins().fadd(s.v, c.v)
        } else {
            self.b.ins().fsub(s.v, c.v)
        };
        Signed {
            v,
            negated: s.negated,
            one: false,
        }
    }

    /// A call of an `extern "C"` function of `f64`s returning an `f64`.
    fn call(&mut self, function: usize, args: &[Value]) -> Value {
        let signature = self.signature(args.len());
        let callee = self.b.ins().iconst(I64, function as i64);
        let call = self.b.ins().call_indirect(signature, callee, args);
        self.b.inst_results(call)[0]
    }

    /// A call's signature: `f64`s in, one `f64` out (`params` of them), or the
    /// trampoline's (`usize::MAX`), or the sweep's trampoline's (`usize::MAX - 1`).
    fn signature(&mut self, params: usize) -> SigRef {
        if let Some(&s) = self.signatures.get(&params) {
            return s;
        }
        let call_conv = self.b.func.signature.call_conv;
        let mut signature = Signature::new(call_conv);
        if params >= usize::MAX - 1 {
            signature.params.push(AbiParam::new(I64));
            signature.params.push(AbiParam::new(I32));
            signature.params.push(AbiParam::new(I32));
            if params == usize::MAX - 1 {
                signature.params.push(AbiParam::new(F64));
            }
        } else {
            for _ in 0..params {
                signature.params.push(AbiParam::new(F64));
            }
            signature.returns.push(AbiParam::new(F64));
        }
        let s = self.b.import_signature(signature);
        self.signatures.insert(params, s);
        s
    }

    /// Calls the trampoline for node `node`: its operands are in `values` (the plan
    /// stores them), and its value and partials are there after the call.
    fn call_node(&mut self, node: usize, edge: usize) {
        let signature = self.signature(usize::MAX);
        let trampoline = node_trampoline as extern "C" fn(*mut Context<'static>, u32, u32);
        let callee = self.b.ins().iconst(I64, trampoline as usize as i64);
        let node = self.b.ins().iconst(I32, node as i64);
        let edge = self.b.ins().iconst(I32, edge as i64);
        let context = self.params[3];
        self.b
            .ins()
            .call_indirect(signature, callee, &[context, node, edge]);
    }

    /// Calls the sweep's trampoline for node `node` with its adjoint `a`: adds `a` times
    /// each partial to each operand's adjoint in `adjoints`, in edge order.
    fn call_sweep(&mut self, node: usize, edge: usize, a: Value) {
        let signature = self.signature(usize::MAX - 1);
        let trampoline = sweep_trampoline as extern "C" fn(*mut Context<'static>, u32, u32, f64);
        let callee = self.b.ins().iconst(I64, trampoline as usize as i64);
        let node = self.b.ins().iconst(I32, node as i64);
        let edge = self.b.ins().iconst(I32, edge as i64);
        let context = self.params[3];
        self.b
            .ins()
            .call_indirect(signature, callee, &[context, node, edge, a]);
    }
}
