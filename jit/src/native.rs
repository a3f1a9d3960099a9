//! The one module with `unsafe` code: owning the generated machine code, calling it, and the
//! trampoline through which it calls back into Rust with a pointer. Everything it relies on
//! is stated at each block; the rest of the crate is safe code.
//!
//! The contract with the code generator (`codegen.rs`): every compiled function takes
//! `(values, partials, adjoints, context, x, gradient)` pointers and returns a `u32`; it
//! reads and writes only `values[..slots]`, `partials[..edges]`, `adjoints[..nodes]`, reads
//! only `x[..inputs]` and writes only `gradient[..inputs]` (each access is at a constant
//! offset that `codegen::Frame` checks against those lengths when it emits it), and calls
//! only the `extern "C"` functions of `calls.rs` (which take and return numbers),
//! [`node_trampoline`] and [`sweep_trampoline`] with the `context` pointer it was given.

use cranelift_jit::JITModule;
use tapegrad::ReplayProgram;

use crate::codegen::{Scratch, evaluate_node, sweep_node};

/// A compiled function: `(values, partials, adjoints, context, x, gradient) -> status`.
type Entry = for<'a> unsafe extern "C" fn(
    *mut f64,
    *mut f64,
    *mut f64,
    *mut Context<'a>,
    *const f64,
    *mut f64,
) -> u32;

/// The machine code of one program: its forward functions (in order: values, partials, then
/// the guards at the end of the last) and its reverse functions (in the order they run).
pub(crate) struct Code {
    /// Owns the code's memory; freed on drop.
    module: Option<JITModule>,
    forward: Vec<Entry>,
    reverse: Vec<Entry>,
    /// The lengths the code may index (see the module's contract).
    sizes: Sizes,
}

/// The buffer lengths a program's code indexes below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sizes {
    pub(crate) slots: usize,
    pub(crate) edges: usize,
    pub(crate) nodes: usize,
    pub(crate) inputs: usize,
}

// SAFETY: `Code` holds finalized, immutable machine code: the entry points are plain
// addresses of read-only executable memory, which any thread may call at once (each call
// works on the buffers and context it is passed, never on shared state). The `JITModule`
// is never used through a shared reference: only `Drop` touches it, with `&mut self`.
unsafe impl Send for Code {}
// SAFETY: as for `Send`: nothing in `Code` is mutated through `&self`.
unsafe impl Sync for Code {}

impl Code {
    /// Takes ownership of a finalized module and the addresses of its functions.
    ///
    /// # Panics
    ///
    /// If an address is null (a function that was not finalized).
    pub(crate) fn new(
        module: JITModule,
        forward: &[*const u8],
        reverse: &[*const u8],
        sizes: Sizes,
    ) -> Code {
        let entry = |&address: &*const u8| {
            assert!(!address.is_null(), "a compiled function was not finalized");
            // SAFETY: `address` is the start of a function that `codegen` compiled with the
            // signature `(i64, i64, i64, i64, i64, i64) -> i32` in the host's default (C) calling
            // convention, which is `Entry`'s, and finalized (made executable) in `module`,
            // which `Code` keeps alive as long as the `Entry`s.
            unsafe { std::mem::transmute::<*const u8, Entry>(address) }
        };
        Code {
            module: Some(module),
            forward: forward.iter().map(entry).collect(),
            reverse: reverse.iter().map(entry).collect(),
            sizes,
        }
    }

    /// Runs the forward functions at `x`: every value and partial into `memory`, then the
    /// guards. Returns 0, or `k + 1` for the first guard `k` (in recording order) that came
    /// out otherwise.
    pub(crate) fn forward(
        &self,
        program: ReplayProgram<'_>,
        memory: &mut Memory,
        x: &[f64],
    ) -> u32 {
        self.run(&self.forward, program, memory, x, &mut [])
    }

    /// Runs the reverse functions: the sweep, each input's adjoint (plus +0) written to
    /// `gradient`. Only after [`Code::forward`] returned 0 at the same `x`.
    pub(crate) fn reverse(
        &self,
        program: ReplayProgram<'_>,
        memory: &mut Memory,
        x: &[f64],
        gradient: &mut [f64],
    ) {
        self.run(&self.reverse, program, memory, x, gradient);
    }

    fn run(
        &self,
        entries: &[Entry],
        program: ReplayProgram<'_>,
        memory: &mut Memory,
        x: &[f64],
        gradient: &mut [f64],
    ) -> u32 {
        let Sizes {
            slots,
            edges,
            nodes,
            inputs,
        } = self.sizes;
        // The lengths the code relies on, checked once per call (the forward functions do
        // not write the gradient, and are passed an empty one).
        assert!(
            memory.values.len() >= slots
                && memory.partials.len() >= edges
                && memory.adjoints.len() >= nodes
                && x.len() == inputs
                && (gradient.len() == inputs || std::ptr::eq(entries, self.forward.as_slice())),
            "tapegrad-jit: buffers too short for this program"
        );
        let mut context = Context {
            program,
            values: memory.values.as_mut_ptr(),
            values_len: memory.values.len(),
            partials: memory.partials.as_mut_ptr(),
            partials_len: memory.partials.len(),
            adjoints: memory.adjoints.as_mut_ptr(),
            adjoints_len: memory.adjoints.len(),
            scratch: &mut memory.scratch,
        };
        let (values, partials, adjoints) = (context.values, context.partials, context.adjoints);
        let (x, gradient) = (x.as_ptr(), gradient.as_mut_ptr());
        for entry in entries {
            // SAFETY: by the module's contract, the function reads and writes only
            // `values[..slots]`, `partials[..edges]`, `adjoints[..nodes]`, reads only
            // `x[..inputs]` and writes only `gradient[..inputs]` (the reverse functions; the
            // forward ones never touch it), which the assertion above proved in bounds of
            // the buffers; no Rust reference to them is used while it runs (the pointers came
            // from borrows held for this whole call, `&mut` for those it writes). It calls
            // only number-in, number-out functions and the trampolines, with
            // `&mut context`, which lives until the call returns. It does not unwind: the
            // trampolines are `extern "C"` (a panic aborts).
            let status = unsafe { entry(values, partials, adjoints, &mut context, x, gradient) };
            if status != 0 {
                return status;
            }
        }
        0
    }
}

impl Drop for Code {
    fn drop(&mut self) {
        self.forward.clear();
        self.reverse.clear();
        if let Some(module) = self.module.take() {
            // SAFETY: the entry points above were the only copies of the code's addresses
            // (private to `Code`, never handed out) and are gone; no call is running, as
            // calls borrow `&self`, which `drop`'s `&mut self` excludes.
            unsafe { module.free_memory() };
        }
    }
}

/// The buffers a compiled evaluation works in (see the module's contract).
#[derive(Clone, Debug, Default)]
pub(crate) struct Memory {
    pub(crate) values: Vec<f64>,
    pub(crate) partials: Vec<f64>,
    pub(crate) adjoints: Vec<f64>,
    pub(crate) scratch: Scratch,
}

/// What [`node_trampoline`] needs: the program, and the buffers the compiled code works in.
pub(crate) struct Context<'a> {
    program: ReplayProgram<'a>,
    values: *mut f64,
    values_len: usize,
    partials: *mut f64,
    partials_len: usize,
    adjoints: *mut f64,
    adjoints_len: usize,
    scratch: &'a mut Scratch,
}

/// Called by compiled code for a node it does not compile itself: evaluates node `node`,
/// whose partials start at `edge`, in the buffers the code works in.
pub(crate) extern "C" fn node_trampoline(context: *mut Context<'_>, node: u32, edge: u32) {
    // SAFETY: compiled code passes on the `context` pointer it was called with, which
    // `Code::run` made from a `&mut Context` that outlives the call; nothing else uses the
    // context while the code runs.
    let context = unsafe { &mut *context };
    // SAFETY: `values` and `partials` point to `values_len` and `partials_len` initialised
    // `f64`s (the workspace's vectors, borrowed mutably by `Code::run` for the whole call);
    // while the trampoline runs, the compiled code that called it does not touch them, and
    // no other reference to them exists, so these are the only live references.
    let (values, partials) = unsafe {
        (
            std::slice::from_raw_parts_mut(context.values, context.values_len),
            std::slice::from_raw_parts_mut(context.partials, context.partials_len),
        )
    };
    evaluate_node(
        context.program,
        node as usize,
        edge as usize,
        values,
        partials,
        context.scratch,
    );
}

/// Called by compiled code to sweep a node it does not sweep itself: adds `adjoint` times
/// each of node `node`'s partials (from `edge` on) to its operands' adjoints.
pub(crate) extern "C" fn sweep_trampoline(
    context: *mut Context<'_>,
    node: u32,
    edge: u32,
    adjoint: f64,
) {
    // SAFETY: as in `node_trampoline`: the context pointer is the one `Code::run` made from
    // a `&mut Context` that outlives the call, used by nothing else meanwhile.
    let context = unsafe { &mut *context };
    // SAFETY: `partials` and `adjoints` point to `partials_len` and `adjoints_len`
    // initialised `f64`s (the workspace's vectors, borrowed mutably by `Code::run` for the
    // whole call); the compiled code that called this does not touch them meanwhile, and
    // no other reference to them exists.
    let (partials, adjoints) = unsafe {
        (
            std::slice::from_raw_parts(context.partials, context.partials_len),
            std::slice::from_raw_parts_mut(context.adjoints, context.adjoints_len),
        )
    };
    sweep_node(
        context.program,
        node as usize,
        edge as usize,
        adjoint,
        partials,
        adjoints,
    );
}
