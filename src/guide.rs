//! # The guide
//!
//! What the README only names, explained, each example a doctest that `cargo test` keeps
//! true. The crate's own docs hold the vocabulary, the cost of a node and the
//! [singular-points convention](crate#singular-points-one-rule-in-every-sweep);
//! `ARCHITECTURE.md` maps the source.
//!
//! - [Training a model](#training-a-model): one step, two gradient stores, optimizers
//! - [Checkpoints and PyTorch's files](#checkpoints-and-pytorchs-files)
//! - [Gradients of gradients](#gradients-of-gradients-hessians-hvps-jacobians)
//! - [Operations](#operations)
//! - [Your own functions, and preaccumulation](#your-own-functions-and-preaccumulation)
//! - [Record once, evaluate many times](#record-once-evaluate-many-times)
//! - [Trust: anomaly mode, randomized tests, big graphs](#trust-anomaly-mode-randomized-tests-big-graphs)
//! - [Data parallelism](#data-parallelism)
//!
//! ## Training a model
//!
//! A [`Var`](crate::Var) borrows its [`Graph`](crate::Graph), so a model cannot hold
//! `Var`s. A model is an ordinary struct holding [`Param`](crate::nn::Param) ids; the values
//! live as plain `f64` in a [`Params`](crate::nn::Params) store beside it, with names and
//! shapes. The forward pass is written once over [`Scalar`](crate::Scalar): on `f64` it
//! evaluates with no graph at all (PyTorch's `no_grad`), on `Var` it records.
//!
//! **One training step**: [`params.value_and_grad(&graph, |p| loss)`][vg] binds every value
//! to the graph in one bulk call, records the loss, runs backward, releases everything it
//! recorded and returns the loss and its gradients; an optimizer then steps the store.
//! [`value_and_grad_aux`](crate::nn::Params::value_and_grad_aux) also returns whatever else
//! the closure computed (JAX's `has_aux`: the scores, an accuracy). A
//! [`Binding`](crate::nn::Binding) ([`params.bind(&graph)`](crate::nn::Params::bind)) is the
//! same step made faster for a whole run: the same method names, the same results bit for
//! bit, the inputs kept on the graph and refreshed from the store each step.
//!
//! **Two gradient stores**, named by what they are keyed by: a backward returns
//! [`Gradients`](crate::Gradients), indexed by `Var` (any node of the graph); a training step
//! returns [`ParamGrads`](crate::nn::ParamGrads), indexed by `Param`, plain numbers tied to
//! the store's values when they were computed.
//!
//! ```
//! use tapegrad::nn::{Linear, Params, View};
//! use tapegrad::optim::{AdamConfig, Optimizer, Schedule};
//! use tapegrad::{Graph, Scalar};
//!
//! struct Model {
//!     layer: Linear,
//! }
//!
//! impl Model {
//!     // The loss, once, over Scalar; and the largest error, which is not differentiated.
//!     fn loss<T: Scalar>(&self, p: &View<T>, data: &[([f64; 2], f64)]) -> (T, f64) {
//!         let errors: Vec<T> = data
//!             .iter()
//!             .map(|(x, y)| self.layer.forward_f64(p, x)[0] - *y)
//!             .collect();
//!         let worst = errors.iter().map(|e| e.value().abs()).fold(0.0, f64::max);
//!         let squares: Vec<T> = errors.iter().map(|e| e.powi(2)).collect();
//!         (T::sum(&squares) / data.len() as f64, worst)
//!     }
//! }
//!
//! let data = [([1.0, 2.0], 5.0), ([2.0, 0.0], 2.0), ([0.0, 1.0], 2.0)]; // y = x0 + 2 x1
//! let mut params = Params::new();
//! let model = Model { layer: Linear::new(&mut params, "fc", 2, 1, &mut || 0.0) };
//! let mut opt = Optimizer::adamw(&params, AdamConfig { lr: 0.1, ..AdamConfig::default() });
//! opt.set_schedule(Schedule::step(0.1, 200, 0.5)); // PyTorch's StepLR
//! let graph = Graph::new();
//! let mut binding = params.bind(&graph); // the faster form; params.value_and_grad_aux(&graph, ...) alike
//! let mut worst = f64::INFINITY;
//! for _ in 0..1000 {
//!     let (_loss, largest, grads) =
//!         binding.value_and_grad_aux(&params, |p| model.loss(p, &data)).unwrap();
//!     opt.step(&mut params, &grads).unwrap();
//!     worst = largest;
//! }
//! assert!(worst < 1e-4);
//! let w = &params[model.layer.weight()];
//! assert!((w[0] - 1.0).abs() < 1e-4 && (w[1] - 2.0).abs() < 1e-4);
//! ```
//!
//! [`optim::Optimizer`](crate::optim::Optimizer) is SGD (momentum, dampening, Nesterov,
//! weight decay), Adam or AdamW as PyTorch defines them, in the order of operations of
//! PyTorch's single-tensor code; [`Schedule`](crate::optim::Schedule) is constant, linear,
//! warmup-cosine, or PyTorch's `StepLR` and `ExponentialLR`; gradients can be clipped by
//! global norm ([`ParamGrads::clip_norm`](crate::nn::ParamGrads::clip_norm), as
//! `clip_grad_norm_`). A step in the wrong order cannot go unnoticed: an optimizer refuses
//! gradients of another store, stale gradients (computed before the store last changed: the
//! same gradients applied twice) and a store it was not made for, a clone included; each
//! error names the stores involved.
//!
//! [vg]: crate::nn::Params::value_and_grad
//!
//! ## Checkpoints and PyTorch's files
//!
//! A [`StateDict`](crate::nn::StateDict) is named tensors in order: a store's
//! ([`Params::state_dict`](crate::nn::Params::state_dict)), an optimizer's state by
//! PyTorch's names (`step`, `exp_avg.{name}`, `momentum_buffer.{name}`), or both under
//! prefixes. It is saved as safetensors (`F64`, which PyTorch's
//! `safetensors.torch.load_file` reads) or JSON. Loading reads `F64`, `F32`, `F16` and
//! `BF16` tensors, each widened to `f64` exactly. A strict load reports every missing,
//! unexpected and mis-shaped tensor at once and loads nothing; a non-strict load loads what
//! fits and returns what it skipped; a file error names the file.
//!
//! ```
//! use tapegrad::nn::{Mlp, ParamError, Params, StateDict};
//! use tapegrad::optim::{Optimizer, SgdConfig};
//!
//! let mut params = Params::new();
//! let mlp = Mlp::new(&mut params, "mlp", &[2, 3, 1], &mut || 0.5);
//! let opt = Optimizer::sgd(&params, SgdConfig { momentum: 0.9, ..SgdConfig::new(0.1) });
//! let mut checkpoint = params.state_dict();
//! checkpoint.extend_prefixed("optim.", opt.state_dict(&params));
//! let bytes = checkpoint.to_safetensors();
//!
//! // Back into a fresh model, and its optimizer.
//! let loaded = StateDict::from_safetensors(&bytes).unwrap();
//! let mut restored = Params::new();
//! let _same = Mlp::new(&mut restored, "mlp", &[2, 3, 1], &mut || 0.0);
//! restored.load_state_dict(&loaded.without_prefix("optim.")).unwrap();
//! assert_eq!(restored.as_slice(), params.as_slice());
//! let mut opt = Optimizer::sgd(&restored, SgdConfig { momentum: 0.9, ..SgdConfig::new(0.1) });
//! opt.load_state_dict(&restored, &loaded.prefixed("optim.")).unwrap();
//!
//! // A model with another head: every mismatch at once, or, non-strict, what was skipped.
//! let mut other = Params::new();
//! Mlp::new(&mut other, "mlp", &[2, 3, 4], &mut || 0.0);
//! let Err(ParamError::Load(problems)) = other.load_state_dict(&checkpoint) else { panic!() };
//! assert_eq!(problems.len(), 2 + 5); // two shapes; five optimizer tensors unexpected
//!
//! // PyTorch's nn.Sequential(Linear, ReLU, Linear) names its tensors 0.*, 2.*:
//! let torch = params.state_dict().map_names(|n| n.replace("mlp.1.", "2.").replace("mlp.0.", "0."));
//! assert_eq!(torch.tensors()[2].name, "2.weight");
//! restored.load_state_dict(&mlp.map_sequential(&torch)).unwrap();
//! ```
//!
//! ## Gradients of gradients: Hessians, HVPs, Jacobians
//!
//! [`Var::grad`](crate::Var::grad) is a differentiable backward: it records the reverse
//! sweep's own arithmetic on the graph, using the same per-op rules as the plain backward
//! evaluated on graph nodes instead of `f64`s, so each gradient is a `Var` that can be
//! differentiated again, to any order, with respect to any variable.
//!
//! ```
//! use tapegrad::{Graph, higher};
//! let g = Graph::new();
//! let (x, y) = (g.var(1.0), g.var(2.0));
//! let f = x * x * y + y.exp();
//! let fxx = f.grad(&[x])[0].grad(&[x])[0];          // 2y = 4
//! assert_eq!(fxx.value(), 4.0);
//! let h = higher::hessian(f, &[x, y]);              // [[4, 2], [2, e^2]]
//! assert_eq!(h[0], vec![4.0, 2.0]);
//! let hv = higher::hvp(f, &[x, y], &[1.0, -1.0]);   // H v, without forming H
//! assert_eq!(hv[0], 4.0 - 2.0);
//! let j = higher::jacobian(&[x * y, x.sin()], &[x, y]);
//! assert_eq!(j[0], vec![2.0, 1.0]);
//! ```
//!
//! | entry point | returns | cost |
//! |---|---|---|
//! | `Var::grad(&xs)` | `dy/dx_i` as `Var`s | one recorded reverse sweep |
//! | `higher::hvp(y, &xs, &v)` | `H v` | reverse over reverse: one recorded sweep + one plain sweep |
//! | `higher::hessian(y, &xs)` | `n x n` | one recorded sweep + `n` plain sweeps |
//! | `higher::jacobian(&ys, &xs)` | `m x n` | `m` plain sweeps; records nothing |
//! | `higher::gradgradcheck(f, at, tol)` | tape Hessian vs central differences of the tape gradient | a Hessian + `2n` gradients |
//!
//! `hessian` and `hvp` release what they record, so a Newton loop runs in constant memory
//! (`cargo run --release --example newton`: Rosenbrock and ridge logistic regression, the
//! digits doubling each step). For many HVPs of one function,
//! [`Replay::hvp`](crate::Replay::hvp) evaluates forward over reverse without recording
//! (`higher::hvp`'s numbers wherever those are finite). Every route costs time linear in
//! the graph, through every n-ary node too (`cargo run --release --example
//! second_order_scaling`: 1,000 to 1,000,000 operands of a `sum`, `dot`, `logsumexp`,
//! `amax` or dot block).
//!
//! ## Operations
//!
//! Every op is one row of the op table (its value and partial derivatives written once over
//! `Scalar`, so `Var::grad` gets every higher order from the same rule): a variant of
//! [`Unary`](crate::Unary) or [`Binary`](crate::Binary), a method on `Var` and on
//! [`Scalar`](crate::Scalar), and forward mode on [`Dual`](crate::Dual). Binary ops take a `Var` or
//! an `f64` on either side (an `f64` first operand through a free function:
//! [`powf(2.0, x)`](crate::powf), [`atan2(1.0, x)`](crate::atan2)).
//!
//! | kind | ops |
//! |---|---|
//! | unary | `-x` `recip` `exp` `ln` `sqrt` `sin` `cos` `tan` `tanh` `sinh` `cosh` `atan` `asin` `acos` `asinh` `acosh` `atanh` `ln_1p` `exp_m1` `log2` `log10` `exp2` `cbrt` `abs` `relu` `sigmoid` `softplus` `gelu` `erf` `erfc` |
//! | binary | `+ - * /` `powf` `powi` `atan2` `hypot` `max` `min` `xlogy` |
//! | n-ary (one node) | `g.sum` `g.dot` `g.logsumexp` `g.amax` `x.clamp(lo, hi)`; [`linalg`](crate::linalg)'s matrix products, one dot node per output |
//! | yours | `g.custom(&f, &xs)` (a [`CustomFn`](crate::CustomFn) or [`ScalarFn`](crate::ScalarFn)), `g.fuse(&xs, ...)` and `Scalar::fused` |
//!
//! Names follow `f64` (`ln`, `ln_1p`, `exp_m1`); rustdoc's search finds them by their other
//! names too (`log`, `log1p`, `expm1`, `clip`, `maximum`).
//!
//! ### Kinks
//!
//! Where a function is continuous but has two slopes, or has no derivative at a point, one
//! convention holds in every sweep (the plain backward, `Var::grad`, replay, forward mode).
//! Each row says whether it is PyTorch 2.15's (checked by running PyTorch 2.15.0 in
//! float64: `tools/reference/pytorch_conventions.py`; `tests/conventions.rs` pins every
//! row, with PyTorch's numbers) or the crate's own, and why:
//!
//! | op | at the point | tapegrad | PyTorch 2.15 | which |
//! |---|---|---|---|---|
//! | `abs` | `x = 0` | `0` | `0` (`grad * self.sgn()`) | PyTorch's |
//! | `relu` | `x = 0` | `0` | `0` (`threshold_backward`) | PyTorch's |
//! | `max(a, b)`, `min(a, b)` | a tie | `1/2` to each | `1/2` to each | PyTorch's |
//! | `amax(xs)` | ties at the maximum | shared evenly among them | shared evenly | PyTorch's |
//! | `clamp(x, lo, hi)` | `x == lo` or `x == hi` | `0` (1 strictly inside) | `0` | PyTorch's (it was 1, the gradient passing at the ends; PyTorch 2.15 gives 0, and `clamp(x, 0, inf)` then agrees with `relu` at 0) |
//! | `atan2(a, b)` | the origin `a = b = 0` | `0`, `0` | `0`, `0` (signed: `b * 0`, `-a * 0`) | PyTorch's (it was NaN); a gradient here is a sum from `+0`, so never `-0`; the second derivative there is 0 (the zero is a constant), NaN in PyTorch |
//! | `atan2(a, b)` | `a^2 + b^2` below `f64`'s range (`1e-300`, `1e-300`) | the true slope, `5e299` | `0` | the crate's own: divided by `hypot(a, b)` twice, not by `a^2 + b^2`, which underflows to 0 and which PyTorch masks to 0 |
//! | `softplus(x)` | `x > 20` | `ln(1 + e^x)` and `sigmoid(x)` exactly | `x` and `1` (its threshold) | the crate's own: exact, with no jump of `e^-20` in value and slope at 20, and a second derivative that does not drop to 0 |
//! | `cbrt(x)` | `x = 0` | `+inf` | no `cbrt`; `x.pow(1/3)`: `+inf` | PyTorch's `pow(x, 1/3)` (and JAX's `cbrt`): the true vertical slope; defined for `x < 0` too, where `pow` is NaN |
//!
//! NaN: `max`, `min` and `amax` give NaN as their value when an operand is NaN; the
//! operand's slope in `max`/`min` is then 1 (every comparison is false, as in PyTorch's
//! masks), and every `amax` partial is NaN (PyTorch: a count of 0 ties, `grad / 0 * 0`).
//! `clamp` of NaN is NaN with slope 0 for `x`, as in PyTorch. `relu` and `abs` have slope
//! NaN at NaN (PyTorch's are 1 and 0): a NaN operand must not turn into a finite gradient
//! (the crate docs' table of singular points). A kink's slope is piecewise constant, so its
//! own derivative (the second order) is 0 on both sides.
//!
//! ## Your own functions, and preaccumulation
//!
//! A function of your own, with its own derivative, records as ONE node under its name (in
//! errors, anomaly reports and DOT drawings). Here the Bessel function `J0` from `libm`,
//! whose derivative is `-J1`:
//!
//! ```
//! use std::sync::Arc;
//! use tapegrad::check::{gradcheck, Tolerance};
//! use tapegrad::{CustomFn, Error, Graph};
//!
//! struct BesselJ0;
//!
//! impl CustomFn for BesselJ0 {
//!     fn name(&self) -> &'static str { "bessel_j0" }
//!     fn value(&self, xs: &[f64]) -> f64 { libm::j0(xs[0]) }
//!     fn partials(&self, xs: &[f64], _y: f64, out: &mut [f64]) { out[0] = -libm::j1(xs[0]) }
//! }
//!
//! let j0: Arc<dyn CustomFn> = Arc::new(BesselJ0);
//! let g = Graph::new();
//! let x = g.var(2.0);
//! let y = g.custom(&j0, &[x]) * x; // x J0(x)
//! assert_eq!(y.backward()[x], libm::j0(2.0) - 2.0 * libm::j1(2.0));
//! // Test the derivative you wrote: central differences of your value.
//! gradcheck(|g, v| g.custom(&j0, v) * v[0], &[2.0], Tolerance::default()).assert_passed();
//! // No second-order rule was given: Var::grad says so, never a silent 0.
//! assert_eq!(y.try_grad(&[x]).unwrap_err(), Error::NoSecondOrder { op: "bessel_j0" });
//! ```
//!
//! Write the partials over `Scalar` instead ([`ScalarFn`](crate::ScalarFn)) and the one
//! rule gives every order, checked by [`higher::gradgradcheck`](crate::higher::gradgradcheck);
//! `cargo run --example custom_function` does so for the Lambert W function.
//!
//! **Preaccumulation** (Adept's statements, CoDiPack's preaccumulation):
//! [`g.fuse(&xs, |s, v| ...)`](crate::Graph::fuse) records the closure on a scratch tape,
//! takes its local gradient by a nested backward, releases the scratch and records one node
//! carrying those partials (first order only): fewer nodes, at the price of a nested
//! backward per fused node. `cargo run --release -p tapegrad-models --example
//! preaccumulation` measures both on the series' transformer and a microgpt-style model.
//!
//! ## Record once, evaluate many times
//!
//! A [`Replay`](crate::Replay) built from a recorded output and its inputs evaluates the
//! same function at new inputs (value, gradient, Hessian-vector product) without recording:
//! each call recomputes every node's value and partials from the op table, checks the
//! comparisons the recording made, and runs one reverse sweep, bit for bit what recording
//! again would give. It is `Send + Sync`.
//!
//! ```
//! use tapegrad::{Error, Graph, Replay, ReplayWorkspace};
//!
//! let g = Graph::new();
//! let x = g.vars(&[1.0, 2.0]);
//! // Branch through a guard (`lt`, `le`, `gt`, `ge`, `eq_value`, `ne_value`), not on `.value()`.
//! let y = if x[0].lt(x[1]) { (x[0] * x[1]).sin() } else { x[0].relu() };
//! let replay = Replay::new(y, &x);
//!
//! let mut ws = ReplayWorkspace::new();
//! let mut grad = [0.0; 2];
//! let value = replay.gradient(&[0.5, 3.0], &mut ws, &mut grad).unwrap();
//! assert_eq!(value, 1.5f64.sin());
//! assert_eq!(grad, [3.0 * 1.5f64.cos(), 0.5 * 1.5f64.cos()]);
//!
//! // Where the recorded branch would not be taken, the replay says so: record again there.
//! let Err(Error::BranchChanged(flip)) = replay.eval(&[3.0, 0.5], &mut ws) else { panic!() };
//! assert_eq!((flip.comparison, flip.recorded), ("<", true));
//!
//! // Hessian-vector products: higher::hvp's numbers (forward over reverse, the op table's
//! // rules on dual numbers; reverse over reverse where that is not finite).
//! let mut hv = [0.0; 2];
//! replay.hvp(&[0.5, 3.0], &[1.0, 0.0], &mut ws, &mut hv).unwrap();
//! approx::assert_relative_eq!(hv[0], -9.0 * 1.5f64.sin(), max_relative = 1e-15);
//! ```
//!
//! Every guard made before the replay is built is checked, wherever it stands relative to
//! the output (`if x.gt(0.0) { x } else { x * 0.01 }` returns a node recorded before its own
//! comparison). What a replay cannot see is Rust control flow on a raw `Var::value()`: it
//! would evaluate the branch that was recorded at every input. So replay checks are on by
//! default: `Replay::new` refuses (naming the line) when a node that depends on the inputs
//! was read with `value()` before the replay is built. Read with
//! [`Var::untracked_value`](crate::Var::untracked_value) to print; turning the checks off
//! ([`g.set_replay_checks(false)`](crate::Graph::set_replay_checks)) is unsafe for
//! correctness. User-defined functions and fused nodes replay too (a fused node's
//! sub-computation is kept when it is recorded).
//!
//! ## Trust: anomaly mode, randomized tests, big graphs
//!
//! [`g.set_anomaly_mode(true)`](crate::Graph::set_anomaly_mode) makes `try_backward` (and
//! `try_grad`) report, when the output or a gradient is NaN or infinite, the first op the
//! output depends on whose value is NaN or infinite, with its name, input values and the
//! line of your code that recorded it (an unused `ln(0)`, or a `-inf` attention mask whose
//! softmax weight is 0, is not reported):
//!
//! ```text
//! tapegrad anomaly: ln of [0.0] gave -inf, recorded at src/main.rs:12:13
//! ```
//!
//! It is off by default and free then; on, every node is checked and its source line kept
//! (8 more bytes per node).
//!
//! The tests run in seconds: 40,000 random expression graphs (`tests/properties.rs`,
//! proptest: every op, shared subexpressions, deep chains, wide sums; values, gradients and
//! second derivatives against central differences; failures shrink to a few lines), a
//! model-checked fuzz harness over 20,000 byte strings (`tests/fuzz.rs`: NaN and infinite
//! inputs, released and foreign handles, anomaly mode), and graphs of 10,000,001 nodes
//! (`tests/deep_graphs.rs`: backward, `grad` and `grad` of `grad` on a 1,000,000-node chain,
//! on a 2 MiB thread stack: the sweeps do not recurse).
//!
//! ## Data parallelism
//!
//! [`parallel::mean_value_and_grad`](crate::parallel::mean_value_and_grad) computes a batch's
//! mean loss and gradient on worker threads, one graph each, reduced in example order: the
//! same bits for any number of threads, and the same as a plain loop. How much faster two
//! threads are depends on the second core being free; when it is not (another process
//! spinning on it, a shared virtual machine), each call notices that the workers did not
//! beat one thread by 10% and the next calls run on the calling thread alone, trying the
//! workers again after a back-off of 50 ms to 2 s: never more than about 1.1x one thread's
//! time, and the speed-up back once the core is free (`cargo run --release -p
//! tapegrad-models --example microgpt_bench` prints one thread against two, step by step).
