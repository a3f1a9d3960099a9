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
use tapegrad::{Binary, Nary, Op, ReplayProgram, Unary};

use crate::calls;
use crate::native::{Code, Context, Sizes, node_trampoline};

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
}

/// Evaluates node `node` (whose partials start at `edge`) in the compiled code's buffers,
/// for the trampoline: an n-ary op by the op table's `value` and `partials_f64` (what the
/// interpreter's `value_and_partials_f64` computes for those it sends here), anything else
/// by [`ReplayProgram::evaluate`], the interpreter's own evaluation.
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
    match program.op(node) {
        Op::Nary(op) => {
            let Scratch { operands, out } = scratch;
            operands.clear();
            operands.extend(args.iter().map(|&a| values[a as usize]));
            out.clear();
            let y = op.value(operands);
            op.partials_f64(operands, y, out);
            partials.copy_from_slice(out);
            values[node] = y;
        }
        _ => program.evaluate(node, values, partials),
    }
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
    /// Exactly -1: the contribution is subtracted (`s + a * -1 = s - a`).
    MinusOne,
    /// A slot's value (a product's other factor, `exp`'s own value).
    Value(u32),
    /// Computed in the forward function and stored in `partials`.
    Stored,
}

/// An adjoint while the sweep's code is being generated.
#[derive(Clone, Copy, Debug)]
enum Adjoint {
    /// Nothing has reached it yet: it is 0, and its node passes nothing on (the
    /// interpreter's sweep skips a zero adjoint).
    Untouched,
    /// Being summed in a register, last touched at the given step.
    Live(Value, usize),
    /// Its sum so far is in the `adjoints` buffer.
    Memory,
}

/// Which buffer a load or store goes to.
#[derive(Clone, Copy, Debug)]
enum Buffer {
    Values,
    Partials,
    Adjoints,
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
    /// `edge_start[n]..edge_start[n + 1]` are node `n`'s edges (its partials' positions).
    edge_start: Vec<usize>,
    partials: Vec<Partial>,
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
        };
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
            edge_start,
            partials: vec![Partial::Skip; edges],
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
        let (mut start, mut work) = (0, 0);
        for n in 0..=root {
            work += 1 + self.program.operands(n).len();
            if work >= CHUNK_WORK || n == root {
                chunks.push(start..n + 1);
                (start, work) = (n + 1, 0);
            }
        }
        let mut context = self.module.make_context();
        let mut builder_context = FunctionBuilderContext::new();
        let mut signature = self.module.make_signature();
        for _ in 0..4 {
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
                    this.adjoints[root] = Adjoint::Live(one, 0);
                    frame.live.push(root as u32);
                    for n in root + 1..nodes {
                        if this.kinds[n] == Kind::Input {
                            let zero = frame.b.ins().f64const(0.0);
                            frame.store(Buffer::Adjoints, n, zero);
                        }
                    }
                }
                for node in chunk.clone().rev() {
                    this.reverse_node(frame, node);
                    frame.step += 1;
                }
                // What this chunk passed to nodes below it, for the next function.
                for slot in std::mem::take(&mut frame.live) {
                    if let Adjoint::Live(v, _) = this.adjoints[slot as usize] {
                        frame.store(Buffer::Adjoints, slot as usize, v);
                        this.adjoints[slot as usize] = Adjoint::Memory;
                    }
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

    /// A slot's value in the forward function: a constant, or the node's value (from its
    /// register if recent, else from `values`).
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
            && frame.step - at <= VALUE_WINDOW
        {
            return v;
        }
        let v = frame.load(Buffer::Values, s);
        frame.cache.insert(slot, (v, frame.step));
        v
    }

    /// Node `node`'s value and partials, in the interpreter's operations.
    fn forward_node(&mut self, frame: &mut Frame<'_>, node: usize) {
        let op = self.program.op(node);
        if self.kinds[node] != Kind::Node {
            return;
        }
        let args = self.program.operands(node);
        let edge = self.edge_start[node];
        let stored = |this: &mut Self, frame: &mut Frame<'_>, k: usize, p: Value| {
            frame.store(Buffer::Partials, edge + k, p);
            this.partials[edge + k] = Partial::Stored;
        };
        let y = match op {
            Op::Unary(u) => {
                let x = self.value(frame, args[0]);
                let (y, p) = self.unary(frame, u, x, node);
                match p {
                    Ok(p) => self.partials[edge] = p,
                    Err(p) => stored(self, frame, 0, p),
                }
                y
            }
            Op::Binary(bop) => {
                let (sa, sb) = (args[0], args[1]);
                let (a, b) = (self.value(frame, sa), self.value(frame, sb));
                let active = [self.is_active(sa), self.is_active(sb)];
                match bop {
                    Binary::Add | Binary::Sub | Binary::Mul => {
                        let (y, partials) = match bop {
                            Binary::Add => (frame.b.ins().fadd(a, b), [Partial::One; 2]),
                            Binary::Sub => {
                                (frame.b.ins().fsub(a, b), [Partial::One, Partial::MinusOne])
                            }
                            _ => (
                                frame.b.ins().fmul(a, b),
                                [Partial::Value(sb), Partial::Value(sa)],
                            ),
                        };
                        for k in 0..2 {
                            if active[k] {
                                self.partials[edge + k] = partials[k];
                            }
                        }
                        y
                    }
                    Binary::Div => {
                        // a / b: d/da = 1 / b, d/db = -(y / b).
                        let y = frame.b.ins().fdiv(a, b);
                        if active[0] {
                            let one = frame.b.ins().f64const(1.0);
                            let p = frame.b.ins().fdiv(one, b);
                            stored(self, frame, 0, p);
                        }
                        if active[1] {
                            let q = frame.b.ins().fdiv(y, b);
                            let p = frame.b.ins().fneg(q);
                            stored(self, frame, 1, p);
                        }
                        y
                    }
                    _ => {
                        let y = frame.call2(calls::binary_value_of(bop) as usize, a, b);
                        for k in 0..2 {
                            if active[k] {
                                let f = calls::binary_partial_of(bop, k) as usize;
                                let p = frame.call3(f, a, b, y);
                                stored(self, frame, k, p);
                            }
                        }
                        y
                    }
                }
            }
            Op::Nary(Nary::Sum) => {
                let terms: Vec<Value> = args.iter().map(|&a| self.value(frame, a)).collect();
                for (k, &a) in args.iter().enumerate() {
                    if self.is_active(a) {
                        self.partials[edge + k] = Partial::One;
                    }
                }
                self.sum(frame, terms)
            }
            Op::Nary(Nary::Dot) if args.len() % 2 == 0 => {
                // a's entries then b's; the partial of each is its partner's value.
                let half = args.len() / 2;
                let mut products = Vec::with_capacity(half);
                for i in 0..half {
                    let (a, b) = (
                        self.value(frame, args[i]),
                        self.value(frame, args[i + half]),
                    );
                    products.push(frame.b.ins().fmul(a, b));
                }
                for (k, &a) in args.iter().enumerate() {
                    if self.is_active(a) {
                        self.partials[edge + k] = Partial::Value(args[(k + half) % args.len()]);
                    }
                }
                self.sum(frame, products)
            }
            Op::Nary(Nary::LogSumExp) if !args.is_empty() => self.logsumexp(frame, node),
            _ => {
                // Everything else (amax, clamp, and ops this compiler does not know) by the
                // interpreter's own rules, through the trampoline.
                frame.call_node(node, edge);
                for (k, &a) in args.iter().enumerate() {
                    if self.is_active(a) {
                        self.partials[edge + k] = Partial::Stored;
                    }
                }
                frame.load(Buffer::Values, node)
            }
        };
        frame.store(Buffer::Values, node, y);
        frame.cache.insert(node as u32, (y, frame.step));
    }

    /// A unary op's value and partial: `Ok` for a partial the sweep finds without storing
    /// it, `Err` for one to store.
    fn unary(
        &mut self,
        frame: &mut Frame<'_>,
        op: Unary,
        x: Value,
        node: usize,
    ) -> (Value, Result<Partial, Value>) {
        let value = |frame: &mut Frame<'_>| frame.call1(calls::unary_value_of(op) as usize, x);
        let recip = |frame: &mut Frame<'_>, v: Value| {
            let one = frame.b.ins().f64const(1.0);
            frame.b.ins().fdiv(one, v)
        };
        match op {
            // -x; d = -1
            Unary::Neg => (frame.b.ins().fneg(x), Ok(Partial::MinusOne)),
            // 1 / x; d = -(y y)
            Unary::Recip => {
                let y = recip(frame, x);
                let yy = frame.b.ins().fmul(y, y);
                (y, Err(frame.b.ins().fneg(yy)))
            }
            // sqrt x (IEEE, correctly rounded); d = (1 / y) * 0.5
            Unary::Sqrt => {
                let y = frame.b.ins().sqrt(x);
                let r = recip(frame, y);
                let half = frame.b.ins().f64const(0.5);
                (y, Err(frame.b.ins().fmul(r, half)))
            }
            // e^x; d = y
            Unary::Exp => (value(frame), Ok(Partial::Value(node as u32))),
            // ln x; d = 1 / x
            Unary::Ln => {
                let y = value(frame);
                (y, Err(recip(frame, x)))
            }
            // tan x; d = y y + 1
            Unary::Tan => {
                let y = value(frame);
                let yy = frame.b.ins().fmul(y, y);
                let one = frame.b.ins().f64const(1.0);
                (y, Err(frame.b.ins().fadd(yy, one)))
            }
            // 2^x; d = y ln 2
            Unary::Exp2 => {
                let y = value(frame);
                let ln2 = frame.b.ins().f64const(LN_2);
                (y, Err(frame.b.ins().fmul(y, ln2)))
            }
            // log2 x, log10 x; d = 1 / (x ln b)
            Unary::Log2 | Unary::Log10 => {
                let y = value(frame);
                let ln_b = frame
                    .b
                    .ins()
                    .f64const(if op == Unary::Log2 { LN_2 } else { LN_10 });
                let d = frame.b.ins().fmul(x, ln_b);
                (y, Err(recip(frame, d)))
            }
            // ln(1 + x); d = 1 / (x + 1)
            Unary::Ln1p => {
                let y = value(frame);
                let one = frame.b.ins().f64const(1.0);
                let d = frame.b.ins().fadd(x, one);
                (y, Err(recip(frame, d)))
            }
            // atan x; d = 1 / (x x + 1)
            Unary::Atan => {
                let y = value(frame);
                let xx = frame.b.ins().fmul(x, x);
                let one = frame.b.ins().f64const(1.0);
                let d = frame.b.ins().fadd(xx, one);
                (y, Err(recip(frame, d)))
            }
            // cbrt x; d = 1 / (y y 3)
            Unary::Cbrt => {
                let y = value(frame);
                let yy = frame.b.ins().fmul(y, y);
                let three = frame.b.ins().f64const(3.0);
                let d = frame.b.ins().fmul(yy, three);
                (y, Err(recip(frame, d)))
            }
            // max(x, 0) as `if x <= 0 { 0 } else { x }` (NaN passes); d = 1 above 0, 0 at
            // and below, NaN at NaN.
            Unary::Relu => {
                let zero = frame.b.ins().f64const(0.0);
                let at_most_zero = frame.b.ins().fcmp(FloatCC::LessThanOrEqual, x, zero);
                let y = frame.b.ins().select(at_most_zero, zero, x);
                let above = frame.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                let (one, nan) = (
                    frame.b.ins().f64const(1.0),
                    frame.b.ins().f64const(f64::NAN),
                );
                let below = frame.b.ins().select(at_most_zero, zero, nan);
                (y, Err(frame.b.ins().select(above, one, below)))
            }
            // |x| (clears the sign bit, as `f64::abs`); d by the op table.
            Unary::Abs => {
                let y = frame.b.ins().fabs(x);
                let f = calls::unary_partial_of(op) as usize;
                (y, Err(frame.call2(f, x, y)))
            }
            _ => {
                let y = value(frame);
                let f = calls::unary_partial_of(op) as usize;
                (y, Err(frame.call2(f, x, y)))
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

    /// Logsumexp as the interpreter records it (`value_and_partials_f64`): the largest
    /// operand `m` (NaNs skipped, as `f64::max` skips them), `e_k = exp(x_k - m)`, their
    /// sum `s`, partials `e_k / s`, value `m + ln s`. Where `m` is not finite (an infinite
    /// operand, or none but NaNs and -inf), the trampoline computes the node instead.
    fn logsumexp(&mut self, frame: &mut Frame<'_>, node: usize) -> Value {
        let args = self.program.operands(node);
        let edge = self.edge_start[node];
        let xs: Vec<Value> = args.iter().map(|&a| self.value(frame, a)).collect();
        let mut m = frame.b.ins().f64const(f64::NEG_INFINITY);
        for &x in &xs {
            // `max(m, x)` where m is never NaN: x if x > m (false for a NaN x), else m.
            // At a tie of +0 and -0 either may win, as with `f64::max`: m only shifts the
            // exps (x - m is the same number but for a zero's sign, and e^±0 = 1) and adds
            // to ln s >= +0, so the result is the same either way.
            let greater = frame.b.ins().fcmp(FloatCC::GreaterThan, x, m);
            m = frame.b.ins().select(greater, x, m);
        }
        let fast = frame.b.create_block();
        let slow = frame.b.create_block();
        let done = frame.b.create_block();
        let y = frame.b.append_block_param(done, F64);
        let magnitude = frame.b.ins().fabs(m);
        let infinity = frame.b.ins().f64const(f64::INFINITY);
        let finite = frame.b.ins().fcmp(FloatCC::LessThan, magnitude, infinity);
        frame.b.ins().brif(finite, fast, &[], slow, &[]);

        frame.b.switch_to_block(fast);
        let exps: Vec<Value> = xs
            .iter()
            .map(|&x| {
                let shifted = frame.b.ins().fsub(x, m);
                frame.call1(calls::exp as calls::Fn1 as usize, shifted)
            })
            .collect();
        let s = self.sum(frame, exps.clone());
        for (k, &e) in exps.iter().enumerate() {
            let p = frame.b.ins().fdiv(e, s);
            frame.store(Buffer::Partials, edge + k, p);
        }
        let ln_s = frame.call1(calls::ln as calls::Fn1 as usize, s);
        let fast_y = frame.b.ins().fadd(m, ln_s);
        frame.b.ins().jump(done, &[fast_y.into()]);

        frame.b.switch_to_block(slow);
        frame.b.set_cold_block(slow);
        frame.call_node(node, edge);
        let slow_y = frame.load(Buffer::Values, node);
        frame.b.ins().jump(done, &[slow_y.into()]);

        frame.b.switch_to_block(done);
        for (k, &a) in args.iter().enumerate() {
            if self.is_active(a) {
                self.partials[edge + k] = Partial::Stored;
            }
        }
        // Loads made in one arm are not available after the join.
        frame.cache.clear();
        y
    }

    /// Every guard, in recording order: the first that comes out otherwise returns its
    /// index plus one.
    fn guards(&mut self, frame: &mut Frame<'_>) {
        // Guards come after every node: the cache's values are still valid, but a fresh
        // load is as cheap here.
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
            Adjoint::Live(v, _) => {
                if let Some(i) = frame.live.iter().position(|&s| s as usize == node) {
                    frame.live.swap_remove(i);
                }
                Some(v)
            }
            Adjoint::Memory => Some(frame.load(Buffer::Adjoints, node)),
        };
        self.adjoints[node] = Adjoint::Memory;
        match self.kinds[node] {
            Kind::Input => {
                // Its gradient, where the caller reads it.
                let g = adjoint.unwrap_or_else(|| frame.b.ins().f64const(0.0));
                frame.store(Buffer::Adjoints, node, g);
                return;
            }
            Kind::Constant(_) => return,
            Kind::Node => {}
        }
        // A node nothing reached passes nothing on, as the interpreter skips a zero adjoint.
        let Some(a) = adjoint else { return };
        let edge = self.edge_start[node];
        for (k, &arg) in self.program.operands(node).iter().enumerate() {
            let contribution = match self.partials[edge + k] {
                Partial::Skip => continue,
                Partial::One => Contribution::Add(a),
                Partial::MinusOne => Contribution::Subtract(a),
                Partial::Value(slot) => {
                    let w = self.value(frame, slot);
                    Contribution::Add(frame.b.ins().fmul(a, w))
                }
                Partial::Stored => {
                    let w = frame.load(Buffer::Partials, edge + k);
                    Contribution::Add(frame.b.ins().fmul(a, w))
                }
            };
            self.accumulate(frame, arg as usize, contribution);
        }
    }

    /// Adds a contribution to `slot`'s adjoint.
    fn accumulate(&mut self, frame: &mut Frame<'_>, slot: usize, c: Contribution) {
        let sum = match self.adjoints[slot] {
            // The first contribution is the sum (the interpreter adds it to +0, which can
            // differ only in a zero's sign; the caller adds +0 to each gradient, so no sign
            // of zero survives, and a zero's sign changes no other sum or product's
            // magnitude).
            Adjoint::Untouched => {
                frame.live.push(slot as u32);
                match c {
                    Contribution::Add(c) => c,
                    Contribution::Subtract(a) => frame.b.ins().fneg(a),
                }
            }
            Adjoint::Live(s, _) => frame.add(s, c),
            Adjoint::Memory => {
                frame.live.push(slot as u32);
                let s = frame.load(Buffer::Adjoints, slot);
                frame.add(s, c)
            }
        };
        self.adjoints[slot] = Adjoint::Live(sum, frame.step);
        if frame.live.len() > LIVE_ADJOINTS {
            self.spill(frame);
        }
    }

    /// Writes the least recently touched half of the live adjoints to `adjoints`.
    fn spill(&mut self, frame: &mut Frame<'_>) {
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
            if let Adjoint::Live(v, _) = self.adjoints[s as usize] {
                frame.store(Buffer::Adjoints, s as usize, v);
                self.adjoints[s as usize] = Adjoint::Memory;
            }
        }
        frame.live = keep.into_iter().map(|(_, s)| s).collect();
    }
}

/// One term of an adjoint's sum.
#[derive(Clone, Copy, Debug)]
enum Contribution {
    /// `s + c`.
    Add(Value),
    /// `s - a`: `s + a * -1`, the same number.
    Subtract(Value),
}

/// One function being built: its builder, its pointer parameters, and what it caches.
struct Frame<'f> {
    b: FunctionBuilder<'f>,
    params: [Value; 4],
    sizes: Sizes,
    /// Signatures of the calls, imported on first use.
    signatures: HashMap<usize, SigRef>,
    /// Each recently computed or loaded slot's value and the step it was made at.
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
        let params = [p[0], p[1], p[2], p[3]];
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

    fn add(&mut self, s: Value, c: Contribution) -> Value {
        match c {
            Contribution::Add(c) => self.b.ins().fadd(s, c),
            Contribution::Subtract(a) => self.b.ins().fsub(s, a),
        }
    }

    /// A call's signature: `f64`s in, one `f64` out (`params` of them), or the
    /// trampoline's (`usize::MAX`).
    fn signature(&mut self, params: usize) -> SigRef {
        if let Some(&s) = self.signatures.get(&params) {
            return s;
        }
        let call_conv = self.b.func.signature.call_conv;
        let mut signature = Signature::new(call_conv);
        if params == usize::MAX {
            signature.params.push(AbiParam::new(I64));
            signature.params.push(AbiParam::new(I32));
            signature.params.push(AbiParam::new(I32));
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

    fn call(&mut self, function: usize, args: &[Value]) -> Value {
        let signature = self.signature(args.len());
        let callee = self.b.ins().iconst(I64, function as i64);
        let call = self.b.ins().call_indirect(signature, callee, args);
        self.b.inst_results(call)[0]
    }

    fn call1(&mut self, function: usize, x: Value) -> Value {
        self.call(function, &[x])
    }

    fn call2(&mut self, function: usize, x: Value, y: Value) -> Value {
        self.call(function, &[x, y])
    }

    fn call3(&mut self, function: usize, x: Value, y: Value, z: Value) -> Value {
        self.call(function, &[x, y, z])
    }

    /// Calls the trampoline for node `node`; its value and partials are then in the
    /// buffers (so cached loads of them are stale: none are cached for a node not yet
    /// computed, and the trampoline writes nothing else).
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
}
