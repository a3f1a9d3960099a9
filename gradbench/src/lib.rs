//! tapegrad as a [GradBench](https://github.com/gradbench/gradbench) tool.
//!
//! GradBench runs an *eval* and a *tool* as two processes exchanging JSON lines: the eval
//! sends `start`, `define {module}`, then `evaluate {module, function, input}` messages
//! (each followed by its own `analysis` of the answer), and the tool answers each with its
//! `id`. This crate is the tool: [`protocol::serve`] reads messages from stdin and writes
//! responses to stdout, and [`evals`] holds one module per eval, each written the way a
//! user of tapegrad writes the function (ordinary Rust over [`tapegrad::Var`] or
//! [`tapegrad::Scalar`], with the fused nodes where the maths has a sum or a dot) and
//! differentiated by tapegrad's public API.
//!
//! # Examples
//!
//! ```
//! use serde_json::json;
//! use tapegrad_gradbench::protocol::respond;
//!
//! let start = respond(&json!({"id": 0, "kind": "start", "eval": "hello"}));
//! assert_eq!(start, json!({"id": 0, "tool": "tapegrad"}));
//! let define = respond(&json!({"id": 1, "kind": "define", "module": "hello"}));
//! assert_eq!(define, json!({"id": 1, "success": true}));
//! let double = respond(&json!({"id": 2, "kind": "evaluate", "module": "hello",
//!                              "function": "double", "input": 3.0}));
//! assert_eq!(double["output"], json!(6.0)); // d(x^2)/dx at 3, by reverse mode
//! ```

pub mod evals;
pub mod protocol;
pub mod runs;
