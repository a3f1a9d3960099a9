//! # tapegrad
//!
//! A scalar reverse-mode automatic-differentiation engine: write ordinary Rust arithmetic
//! on [`Var`] handles, and get the exact gradient of the result with respect to every
//! input — and, because the backward pass can record itself, gradients of gradients.
//!
//! ```
//! use tapegrad::Graph;
//!
//! let g = Graph::new();
//! let x = g.var(2.0);
//! let y = g.var(3.0);
//! let f = x.exp() / y.ln();
//! let grads = f.backward();
//! // d/dx = e^x / ln y;   d/dy = -e^x / (y (ln y)^2)
//! approx::assert_relative_eq!(grads[x], 2f64.exp() / 3f64.ln(), max_relative = 1e-15);
//! approx::assert_relative_eq!(grads[y], -2f64.exp() / (3.0 * 3f64.ln().powi(2)), max_relative = 1e-15);
//! ```
//!
//! The [`guide`] explains the rest: training a model with [`nn`] and [`optim`], checkpoints,
//! gradients of gradients, your own functions, replay, anomaly mode.
//!
//! ## Vocabulary
//!
//! - [`Graph`]: owns every node; the order in which nodes were recorded is the **tape**.
//! - [`Var`]: a `Copy` handle to a node (the graph's reference, the node's [`NodeKey`] and
//!   its value).
//! - A [`Node`] is a value plus the [`Op`] that made it from its operands
//!   ([`Var::node`] reads it).
//! - **partials**: one op's local derivatives, computed when the node is recorded, from the
//!   one row per op of the op table ([`Unary`], [`Binary`], [`Nary`]).
//! - **adjoint**: inside the reverse sweep, the derivative of the output with respect to
//!   a node, accumulated over all the node's uses.
//! - **gradients**: what the user gets, a [`Gradients`] store (or, from [`Var::grad`],
//!   `Var`s that can be differentiated again).
//! - [`Replay`]: a recorded function evaluated again at new inputs (value, gradient,
//!   Hessian-vector product) without recording, bit for bit a fresh recording; comparisons
//!   made through [`Var::lt`] and its siblings are **guards** it re-checks, so a branch that
//!   would go the other way is an error, never a number from the wrong branch.
//!
//! ## What it costs
//!
//! A node is stored struct-of-arrays: its value (8 bytes), a one-byte op code, an edge
//! offset (4), and its identity: its [`NodeKey`]'s slot in the graph's `slotmap` (8:
//! slotmap's version and free-list link; the map holds no value, as a handle carries its
//! node's position) and the key in a column by position (8);
//! each operand edge adds a position (4) and a partial (8), an `f64` constant operand too. A
//! unary node is therefore 41 bytes, a binary one 53; backward adds an 8-byte adjoint per
//! node. Backward is one loop of multiply-adds over those arrays, with one test per node
//! that sends the rare sweep that meets an infinity or a NaN to a careful loop (see the
//! singular points below). Releasing to a mark removes the freed nodes' keys and truncates
//! the arrays: its time is proportional to what it frees, whatever the graph held before.
//!
//! ## Singular points: one rule in every sweep
//!
//! Where a partial or an adjoint is 0, infinite or NaN, every sweep applies one rule: the
//! contribution of an edge is `adjoint * partial`, except that **a zero factor wins**: if
//! either is exactly 0, nothing passes back, even against an infinity or a NaN. The plain
//! backward ([`Var::backward`]), the differentiable one ([`Var::grad`]), and so
//! [`higher::hessian`], [`higher::hvp`] and [`higher::jacobian`], and the replayable tape
//! ([`Replay`]'s gradient, and its forward-over-reverse HVP), share that rule as one
//! function, so they give the same first-order numbers bit for bit at every point, and
//! the two Hessian routes (`hessian`, and `grad` of `grad`) the same second-order numbers.
//! A kink's zero slope is a zero partial, so it acts as a select, as PyTorch's and JAX's
//! `relu` do. Where PyTorch and JAX agree, tapegrad gives their answer; the rows marked
//! *differs* are deliberate:
//!
//! | at | tapegrad | PyTorch | why |
//! |---|---|---|---|
//! | `sqrt(relu(x))`, `(-2.5)^relu(x)` at `x <= 0` | 0 | 0 | `relu' = 0` is a select |
//! | `d/dx x^0` at any `x`, `d/da a^b` at `a = b = 0` | 0 | 0 | `x^0` is the constant 1 |
//! | `d/db 0^b` at `b >= 0` | 0 | 0 | the limit from the right (not `ln 0 * 1 = -inf`) |
//! | `0.0 * sqrt(x)`, `sqrt(x) * z` with `z = 0`, at `x = 0` | 0 | NaN | *differs*: a zero adjoint passes nothing, so a node that does not reach the output cannot poison one that does |
//! | `sqrt(x * 0.0)`, `sqrt(abs(x))` at `x = 0` | 0 | NaN | *differs*: the same rule for a zero partial (a constant 0 factor, `abs' = 0` at 0), as for relu; `sqrt(0 x)` is constant, its derivative is 0 |
//! | `sqrt(x - x)` at 0, `(-2.46)^(x - x)` | NaN | NaN | no factor is 0: `+inf` and `-inf`, or `ln(-2.46)`, reach `x` |
//! | `relu'(NaN)`, `abs'(NaN)` | NaN | 1 (relu), 0 (abs) | *differs*: a NaN must not turn into a gradient |
//! | `atan2` at the origin, `clamp` at a bound | 0, 0 | the same | a point where the slope is undefined or has two sides: see the guide's [conventions](crate::guide#kinks) |
//! | `exp(ln x)` at `x = 5e-324`; `d(a/b)` for `\|b\| < 5.6e-309` | 1; `1/b`, `-(a/b)/b` | 1; `1/b`, `-inf` for `d/db` | a partial that overflows when stored (`1/x`) is applied as `(adjoint * 1) / x`, as dividing would |
//! | `logsumexp([x, inf])` | 0 for `x`, NaN for `inf` | the same | the softmax's limit |
//! | a true infinity: `sqrt` or `ln` at 0 | inf | inf | IEEE |
//!
//! The overflow rescue covers the partials of the form `num / den` (`ln`, `recip`, `/`,
//! `powf` and `powi` in the base); other partials that overflow stay infinite.
//!
//! In [anomaly mode](Graph::set_anomaly_mode), a backward reports only what the output
//! depends on, and only when the output or a gradient is not finite: an unused `ln(0)` or
//! an attention mask of `-inf` (weight `e^-inf = 0`) is not an anomaly.
//!
//! ## Threads
//!
//! [`Graph`] is `Send` but not `Sync`: one graph per thread at a time.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The engine (src/engine/): everything below is built on it, and it on nothing here.
mod engine;

// Built on the engine.
pub mod check;
pub mod dot;
mod forward; // public through `higher`
pub mod functional;
pub mod higher;
pub mod linalg;
pub mod nn;
pub mod optim;
pub mod parallel;

// Python-compatible randomness (the tutorials draw their weights with Python's `random`).
pub mod pyrandom;

// Documentation only: the longer explanations, their examples doctests.
pub mod guide;

/// The README's code blocks, compiled and run as doctests so the tour stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use engine::{
    Anomaly, Binary, BranchChanged, CustomFn, Dual, Error, Gradients, Graph, Inputs, LeftOperand,
    Mark, Nary, Node, NodeKey, Op, Operand, Replay, ReplayProgram, ReplayWorkspace, Scalar,
    ScalarFn, Statement, Unary, Var, atan2, hypot, max, min, powf, xlogy,
};
