//! The engine: the tape's storage, the [`Graph`] API and its handles, the op table, the
//! [`Scalar`] trait, the two reverse sweeps, [`Gradients`] and errors. Nothing in this folder
//! may use a module outside it; everything else in the crate is built on it.
//!
//! The files, from the bottom up (each uses only those above it in this list):
//! `error` (errors, panics at the user's line), `matrix` (row-major views), `scalar` (the
//! numeric trait and its `f64` form), `op` (each op's value and partials), `guard` (comparisons
//! recorded for replay, and raw reads: storage only), `tape` (the nodes,
//! struct-of-arrays: the hot path), `programs` (the kept sub-computations of fused nodes,
//! for replay), `graph` ([`Graph`], [`Var`], [`Operand`], [`Mark`],
//! [`CustomFn`]), `backward` (the plain sweep), `custom` (user-defined functions and
//! preaccumulation, recorded as one node each), `var` (`Var`'s arithmetic),
//! `differentiable` (the sweep that records itself, for gradients of gradients), `replay` (a recorded function evaluated again at new
//! inputs, without the graph).

mod backward;
mod chain;
mod custom;
mod differentiable;
mod dual;
mod error;
mod graph;
mod guard;
mod inputs;
mod keys;
mod matrix;
mod node;
mod op;
mod opcodes;
mod pool;
mod programs;
mod replay;
mod rules;
mod scalar;
mod tape;
mod var;

pub use backward::Gradients;
pub use dual::Dual;
pub(crate) use error::or_panic;
pub use error::{Anomaly, BranchChanged, Error};
pub use graph::{CustomFn, Graph, Mark, ScalarFn, Var};
pub use inputs::Inputs;
pub use keys::NodeKey;
pub use matrix::{Matrix, Pairing};
pub use node::Node;
pub use op::{Binary, Nary, Op, Unary};
pub use replay::{Replay, ReplayProgram, ReplayWorkspace};
pub use scalar::{LeftOperand, Operand, Scalar, Statement};
pub use var::{atan2, hypot, max, min, powf, xlogy};
