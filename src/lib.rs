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
//! ## Vocabulary
//!
//! - [`Graph`]: owns every node; the order in which nodes were recorded is the **tape**.
//! - [`Var`]: a `Copy` handle to a node (the graph's reference plus a [`NodeKey`]).
//! - A node is a value plus the [`Op`] that made it from its operands.
//! - **partials**: one op's local derivatives, computed when the node is recorded, from the
//!   one rule per op in [`op`].
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
//! offset (4) and its generation (4: which recording of that position a handle names); each
//! operand edge adds a position (4) and a partial (8), an `f64` constant operand too. A unary
//! node is therefore 29 bytes, a binary one 41; backward adds an 8-byte adjoint per node.
//! Backward is one loop of multiply-adds over those arrays. Releasing to a mark truncates
//! the arrays: its time does not depend on how many nodes the graph held before.
//!
//! A zero adjoint propagates nothing: the plain backward skips the edges of a node whose
//! adjoint is exactly 0, so `0 * inf` partials (e.g. `sqrt` at 0 under a zero weight)
//! contribute 0, and nodes that do not reach the output cannot poison those that do.
//! [`Var::grad`] cannot skip them (a zero adjoint may still have a non-zero derivative),
//! so at such singular points it gives the IEEE answer, NaN.
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
pub mod functional;
pub mod higher;
pub mod linalg;
pub mod nn;
pub mod optim;
pub mod parallel;

// Python-compatible randomness (the tutorials draw their weights with Python's `random`).
pub mod pyrandom;

// The tutorials' models, out of the general API.
pub mod models;

/// The series' tiny transformer, now at [`models::transformer`].
#[deprecated(since = "0.2.0", note = "moved to tapegrad::models::transformer")]
pub mod transformer {
    pub use crate::models::transformer::*;
}

/// The README's code blocks, compiled and run as doctests so the tour stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use engine::op;
pub use engine::{
    Anomaly, Binary, BranchChanged, CustomFn, Error, Gradients, Graph, Mark, Nary, NodeKey, Op,
    Operand, Replay, ReplayWorkspace, Scalar, ScalarFn, Statement, Unary, Var, atan2, hypot, max,
    min, powf,
};
