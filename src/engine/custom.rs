//! Nodes whose rule the user supplies: [`Graph::custom`] records a user-defined function
//! ([`CustomFn`]) as one node, and [`Graph::fuse`] preaccumulates a sub-computation into
//! one node carrying its local gradient. Recording only; `differentiable.rs` is where a
//! custom node's second-order rule is used. Uses the plain sweep (`backward.rs`, for the
//! nested backward); may not use `var.rs` (which uses it) or `differentiable.rs`.

use std::cell::RefCell;
use std::panic::Location;
use std::sync::Arc;

use super::backward::Gradients;
use super::error::{Error, or_panic};
use super::graph::{CustomFn, Graph, Var};
use super::op::Op;
use super::opcodes::MAX_CUSTOM;
use super::tape::{Resolved, Tape};

/// What a partial's slot holds before [`CustomFn::partials`] runs: a quiet NaN with a
/// payload no arithmetic of the function's makes, so that a slot the function did not
/// write is told apart from one it set to 0 (or to NaN).
const UNWRITTEN: u64 = 0x7ffc_a11e_d0e5_0001;

/// `f`'s value at `xs` and its partials into `out` (prepared with [`UNWRITTEN`]): what a
/// user-defined function's node holds, as recorded and as replayed.
pub(in crate::engine) fn eval_custom(f: &dyn CustomFn, xs: &[f64], out: &mut [f64]) -> f64 {
    let y = f.value(xs);
    out.fill(f64::from_bits(UNWRITTEN));
    f.partials(xs, y, out);
    y
}

/// Checks the partials [`eval_custom`] gave `f` at `xs` (value `y`): every slot written,
/// and finite where `f` promises so ([`CustomFn::finite_partials`]).
pub(in crate::engine) fn check_partials(
    f: &dyn CustomFn,
    xs: &[f64],
    y: f64,
    partials: &[f64],
) -> Result<(), Error> {
    for (operand, &p) in partials.iter().enumerate() {
        if p.to_bits() == UNWRITTEN {
            return Err(Error::BadPartials {
                op: f.name(),
                operand,
                why: format!(
                    "was not written by CustomFn::partials (at inputs {xs:?}); write every \
                     slot, 0.0 for an operand the value does not depend on (the slots do not \
                     start at 0)"
                ),
            });
        }
    }
    check_finite(f, xs, y, partials.iter().copied())
}

/// Where `f` promises finite partials at finite inputs and value, the first of `partials`
/// that is not finite, as an error.
pub(in crate::engine) fn check_finite(
    f: &dyn CustomFn,
    xs: &[f64],
    y: f64,
    partials: impl IntoIterator<Item = f64>,
) -> Result<(), Error> {
    if !f.finite_partials() || !y.is_finite() || xs.iter().any(|x| !x.is_finite()) {
        return Ok(());
    }
    match partials
        .into_iter()
        .enumerate()
        .find(|(_, p)| !p.is_finite())
    {
        None => Ok(()),
        Some((operand, p)) => Err(Error::BadPartials {
            op: f.name(),
            operand,
            why: format!(
                "is {p} at the finite inputs {xs:?} (value {y}), though the function promises \
                 finite partials there (CustomFn::finite_partials)"
            ),
        }),
    }
}

/// What [`Graph::fuse`] reuses from call to call: the scratch graph, its gradient store and
/// the buffers of operand values, partials and resolved operands.
struct FuseScratch {
    graph: Box<Graph>,
    grads: Gradients,
    values: Vec<f64>,
    partials: Vec<f64>,
    operands: Vec<Resolved>,
}

thread_local! {
    /// [`Graph::fuse`]'s scratch, kept per thread so that a loop of fused statements
    /// allocates little after the first (a nested call finds it taken and makes its own).
    static FUSE_SCRATCH: RefCell<Option<FuseScratch>> = const { RefCell::new(None) };
}

impl Graph {
    /// Records the user-defined function `f` of `inputs` as one node (see [`CustomFn`]):
    /// its value and partials are `f`'s at the inputs' values.
    ///
    /// `f` is registered with the graph the first time it is used (by the `Arc`'s
    /// address: keep one `Arc` per function and clone it).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tapegrad::{CustomFn, Graph};
    ///
    /// struct Cube;
    /// impl CustomFn for Cube {
    ///     fn name(&self) -> &'static str { "cube" }
    ///     fn value(&self, xs: &[f64]) -> f64 { xs[0].powi(3) }
    ///     fn partials(&self, xs: &[f64], _y: f64, out: &mut [f64]) { out[0] = 3.0 * xs[0] * xs[0] }
    /// }
    ///
    /// let cube: Arc<dyn CustomFn> = Arc::new(Cube);
    /// let g = Graph::new();
    /// let x = g.var(2.0);
    /// let y = g.custom(&cube, &[x]);
    /// assert_eq!((y.value(), y.backward()[x]), (8.0, 12.0));
    /// // Check the partials you wrote against central differences:
    /// let report = tapegrad::check::gradcheck(
    ///     |g, v| g.custom(&cube, v),
    ///     &[0.7],
    ///     tapegrad::check::Tolerance::default(),
    /// );
    /// assert!(report.passed());
    /// ```
    ///
    /// # Panics
    ///
    /// In the cases where [`Graph::try_custom`] returns an error.
    #[track_caller]
    pub fn custom<'g>(&'g self, f: &Arc<dyn CustomFn>, inputs: &[Var<'g>]) -> Var<'g> {
        or_panic(self.try_custom(f, inputs))
    }

    /// [`Graph::custom`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::Released`] or [`Error::ForeignHandle`] for a bad input;
    /// [`Error::BadOperands`] if the graph already holds the most distinct functions a
    /// one-byte op code can number (over 200).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tapegrad::{CustomFn, Graph};
    ///
    /// struct Twice;
    /// impl CustomFn for Twice {
    ///     fn name(&self) -> &'static str { "twice" }
    ///     fn value(&self, xs: &[f64]) -> f64 { 2.0 * xs[0] }
    ///     fn partials(&self, _: &[f64], _: f64, out: &mut [f64]) { out[0] = 2.0 }
    /// }
    ///
    /// let (g, h) = (Graph::new(), Graph::new());
    /// let f: Arc<dyn CustomFn> = Arc::new(Twice);
    /// assert!(g.try_custom(&f, &[h.var(1.0)]).is_err());
    /// ```
    #[track_caller]
    pub fn try_custom<'g>(
        &'g self,
        f: &Arc<dyn CustomFn>,
        inputs: &[Var<'g>],
    ) -> Result<Var<'g>, Error> {
        let location = Location::caller();
        let mut tape = self.tape.borrow_mut();
        let operands = inputs
            .iter()
            .map(|&x| self.resolve_var(&tape, x))
            .collect::<Result<Vec<Resolved>, Error>>()?;
        let index = self.register_custom(&mut tape, f)?;
        let mut malformed = None;
        let eval = |xs: &[f64], out: &mut [f64]| {
            let y = eval_custom(&**f, xs, out);
            malformed = check_partials(&**f, xs, y, out).err();
            y
        };
        let node = tape.computed(Op::Custom(index), &operands, eval, location)?;
        if let Some(e) = malformed {
            // Nothing recorded: the node goes again (a release of one node, just made).
            tape.truncate(node.pos() as usize);
            return Err(e);
        }
        Ok(Var::recorded(self, node))
    }

    /// `f`'s index among this graph's user-defined functions (the code of its nodes'
    /// [`Op::Custom`]), registering it the first time (by the `Arc`'s address).
    pub(in crate::engine) fn register_custom(
        &self,
        tape: &mut Tape,
        f: &Arc<dyn CustomFn>,
    ) -> Result<u8, Error> {
        let mut customs = self.customs.borrow_mut();
        let same = |c: &Arc<dyn CustomFn>| std::ptr::addr_eq(Arc::as_ptr(c), Arc::as_ptr(f));
        match customs.iter().position(same) {
            Some(k) => Ok(k as u8),
            None if customs.len() < MAX_CUSTOM => {
                customs.push(Arc::clone(f));
                tape.custom_names.push(f.name());
                Ok((customs.len() - 1) as u8)
            }
            None => Err(Error::BadOperands {
                op: f.name(),
                why: format!(
                    "a graph can hold {MAX_CUSTOM} distinct user-defined functions; \
                     keep one Arc per function and clone it rather than making new ones"
                ),
            }),
        }
    }

    /// Preaccumulation: records the sub-computation `f` of `inputs` as ONE node that
    /// carries its gradient. `f` runs on a scratch graph (with `Var`s holding the inputs'
    /// values) and returns its output; a nested backward gives the output's partials with
    /// respect to the inputs; the scratch nodes are released; one node with those partials
    /// goes on this graph. A sub-computation with few inputs and many nodes (a GELU written
    /// out, a normalisation, a loss term) then costs one node and one edge per input here.
    ///
    /// The node has no second-order rule: [`Var::grad`] through it is
    /// [`Error::NoSecondOrder`] (use the plain computation where second order is needed).
    /// Its first derivatives are exactly the plain computation's (the same rules, the same
    /// order of sums per input); only the summation of contributions across the node may
    /// round differently.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let (x, w) = (g.var(0.5), g.var(2.0));
    /// let before = g.len();
    /// // softplus(w x) * x, as one node.
    /// let y = g.fuse(&[x, w], |_, v| (v[1] * v[0]).exp().ln_1p() * v[0]);
    /// assert_eq!(g.len(), before + 1);
    /// let plain = ((w * x).exp().ln_1p() * x).backward();
    /// let fused = y.backward();
    /// approx::assert_relative_eq!(fused[x], plain[x], max_relative = 1e-15);
    /// approx::assert_relative_eq!(fused[w], plain[w], max_relative = 1e-15);
    /// ```
    ///
    /// # Panics
    ///
    /// In the cases where [`Graph::try_fuse`] returns an error, and where `f` panics
    /// (e.g. on using a `Var` of this graph inside it: build from its arguments only).
    #[track_caller]
    pub fn fuse<'g, F>(&'g self, inputs: &[Var<'g>], f: F) -> Var<'g>
    where
        F: for<'s> FnOnce(&'s Graph, &[Var<'s>]) -> Var<'s>,
    {
        or_panic(self.try_fuse(inputs, f))
    }

    /// [`Graph::fuse`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::Released`] or [`Error::ForeignHandle`] for a bad input (checked before
    /// and after `f` runs); [`Error::BadOperands`] if `f` returns a `Var` of a graph other
    /// than the scratch graph it was given.
    ///
    /// # Examples
    ///
    /// ```
    /// let (g, h) = (tapegrad::Graph::new(), tapegrad::Graph::new());
    /// assert!(g.try_fuse(&[h.var(1.0)], |_, v| v[0].exp()).is_err());
    /// ```
    #[track_caller]
    pub fn try_fuse<'g, F>(&'g self, inputs: &[Var<'g>], f: F) -> Result<Var<'g>, Error>
    where
        F: for<'s> FnOnce(&'s Graph, &[Var<'s>]) -> Var<'s>,
    {
        let location = Location::caller();
        let mut scratch = FUSE_SCRATCH
            .with(|s| s.borrow_mut().take())
            .unwrap_or_else(|| FuseScratch {
                graph: Box::new(Graph::new()),
                grads: Gradients::new(),
                values: Vec::new(),
                partials: Vec::new(),
                operands: Vec::new(),
            });
        let result = self.fuse_with(&mut scratch, inputs, f, location);
        FUSE_SCRATCH.with(|s| *s.borrow_mut() = Some(scratch));
        result
    }

    /// [`Graph::try_fuse`] with its scratch.
    fn fuse_with<'g, F>(
        &'g self,
        scratch: &mut FuseScratch,
        inputs: &[Var<'g>],
        f: F,
        location: &'static Location<'static>,
    ) -> Result<Var<'g>, Error>
    where
        F: for<'s> FnOnce(&'s Graph, &[Var<'s>]) -> Var<'s>,
    {
        let FuseScratch {
            graph: sub,
            grads,
            values,
            partials,
            operands,
        } = scratch;
        values.clear();
        {
            let tape = self.tape.borrow();
            for &x in inputs {
                values.push(self.resolve_var(&tape, x)?.value);
            }
        }
        let start = sub.mark();
        let result = (|| {
            let xs = sub.vars(values);
            let out = f(sub, &xs);
            if !std::ptr::eq(out.graph(), &**sub) {
                return Err(Error::BadOperands {
                    op: "fuse",
                    why: "the closure must return a Var of the graph it is given".into(),
                });
            }
            let (y, output) = {
                let r = sub.resolve_var(&sub.tape.borrow(), out)?;
                (r.value, r.arg)
            };
            out.try_backward_into(grads)?;
            partials.clear();
            for &x in &xs {
                partials.push(grads.try_wrt(x)?);
            }
            // The sub-computation, kept for a replay to evaluate again (the closure is
            // gone after this call), as the program of the node recorded below.
            self.keep_program(sub, (start.position(), xs.len(), output))?;
            Ok(y)
        })();
        sub.release(start);
        let y = result?;
        let mut tape = self.tape.borrow_mut();
        operands.clear();
        for &x in inputs {
            operands.push(self.resolve_var(&tape, x)?);
        }
        let eval = |_: &[f64], out: &mut [f64]| {
            out.copy_from_slice(partials);
            y
        };
        let pos = tape.computed(Op::Fused, operands, eval, location)?;
        Ok(Var::recorded(self, pos))
    }
}

impl Graph {
    /// Keeps the sub-computation recorded on `sub` from position `start` on (`inputs`
    /// inputs, then the closure's nodes; `output` is what it returned) as the program of the
    /// fused node this graph records next. Its user-defined functions are registered here.
    fn keep_program(
        &self,
        sub: &Graph,
        (start, inputs, output): (usize, usize, u32),
    ) -> Result<(), Error> {
        let node = self.tape.borrow().len() as u32;
        let sub_tape = sub.tape.borrow();
        // The scratch graph's functions, renumbered as this graph's.
        let sub_customs = sub.customs.borrow();
        let mut failed = None;
        let mut custom = |k: u8| {
            let f = &sub_customs[usize::from(k)];
            self.register_custom(&mut self.tape.borrow_mut(), f)
                .unwrap_or_else(|e| {
                    failed.get_or_insert(e);
                    0
                })
        };
        let nested = sub.fused.borrow();
        self.fused.borrow_mut().keep(
            node,
            &sub_tape,
            (start, inputs as u32, output),
            &mut custom,
            Some(&nested),
        );
        failed.map_or(Ok(()), Err)
    }
}

impl Var<'_> {
    /// The name of the op that made this node: the op table's name, or a user-defined
    /// function's [`CustomFn::name`].
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// assert_eq!(g.var(1.0).exp().op_name(), "exp");
    /// ```
    ///
    /// # Panics
    ///
    /// If the node was released.
    #[track_caller]
    pub fn op_name(&self) -> &'static str {
        let tape = self.graph().tape.borrow();
        let pos = or_panic(self.graph().resolve_var(&tape, *self)).arg;
        tape.op_name(pos as usize)
    }
}
