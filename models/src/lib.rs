//! # tapegrad-models
//!
//! The tutorials' models on [`tapegrad`], each a bit-exact replica of its reference, built
//! on tapegrad's public API like any user's model:
//!
//! - [`transformer`]: the tutorial series' tiny GPT-style transformer, with the series' own
//!   optimizers ([`transformer::AdamW`], [`transformer::Sgd`]);
//! - [`microgpt`]: Karpathy's microgpt character model, its tokenizer, its trainer and the
//!   reference's Adam in CPython's arithmetic.
//!
//! A model of your own needs none of this: see [`tapegrad::nn`] and [`tapegrad::optim`].
//!
//! ## The series' tiny transformer
//!
//! ```text
//! cargo run --release -p tapegrad-models --example tiny_transformer
//! ```
//!
//! One block, vocabulary 6, `d_model` 16, 2 heads, `d_ff` 64: 3,456 parameters, drawn with
//! Python's `random.seed(42)` and `random.gauss(0, 0.1)`, which
//! [`PyRandom`](tapegrad::pyrandom::PyRandom) reproduces bit for bit. The example prints
//! every number the series prints (the 5 x 6 logits table, P(target) and loss per position,
//! total loss 7.3195, average 1.8299, perplexity 6.23), then the true gradient of every
//! parameter matrix, which the series only simulated (the true gradient of
//! `E_token[<BOS>][0]` is -0.002427, not the stand-in -0.352893), then trains with the
//! series' AdamW until greedy generation after `<BOS>` is `I like transformers <EOS>`,
//! drawing the loss curve (`target/loss_curve.svg`). Flags: `--lr`, `--steps`, `--every`,
//! `--plot`, `--dump-gradients PATH` (the initial gradients as JSON by the series' names,
//! to compare with PyTorch or JAX).
//!
//! The forward pass is written once over [`Scalar`](tapegrad::Scalar), so the same code runs
//! on `f64` and on the tape; `tests/transformer.rs` checks all 3,456 gradients against
//! central differences, and training the model on an [`nn::Params`](tapegrad::nn::Params)
//! store gives the series' own loop's numbers to the bit.
//!
//! ## microgpt, bit for bit
//!
//! ```text
//! cargo run --release -p tapegrad-models --example microgpt
//! ```
//!
//! Karpathy's microgpt (one layer, 16 wide, 4 heads, 4,192 parameters; 1,000 steps of one
//! name each, Adam) on the 32,033 names of `models/data/names.txt`, printing the reference's
//! lines digit for digit (`num docs: 32033`, `vocab size: 27`, `num params: 4192`,
//! `step    1 / 1000 | loss 3.3660` ... `step 1000 / 1000 | loss 2.6497`), then its 20 names
//! at temperature 0.5 (`kamon`, `ann`, `karai`, ...). Flags: `--steps`, `--seed`,
//! `--data PATH`, `--samples`, `--temperature`, `--trace PATH`, `--save PATH` /
//! `--load PATH` (safetensors), `--batch B --threads T` (a batch's mean gradient on worker
//! threads, the same bits for any thread count).
//!
//! How it is exact: the data order, the initial weights and the sampling draws come from
//! `tapegrad::pyrandom` (`shuffle`, `gauss`, `choices`, `random`, each tested against
//! CPython 3.11's own values), and the model performs the reference's floating-point
//! operations in its order: `a / b` as `a * b^-1`, powers through C `pow` (never `powi`, and
//! with the exponent hidden from the optimiser, which would rewrite `pow(x, -1)` as `1/x`),
//! sums from 0 left to right, a fresh `total^-1` per softmax entry. Adam's `g**2` and
//! `v_hat**0.5` are `x * x` and `sqrt` wherever those are provably `pow`'s own bits, and
//! `pow` itself otherwise ([`microgpt::pow2`], [`microgpt::pow_half`]).
//! `models/tools/microgpt_reference.py` is a CPython reading of the reference; it printed
//! the lines above and the full trace in `models/tests/data/microgpt_trace.json`. Against
//! it every one of the 1,000 losses agrees to 1.8e-15 (544 of them bit-identical): the tape
//! sums a node's gradient contributions in reverse recording order, the reference in
//! reverse depth-first order, which moves gradients in their last bits; the 20 names are
//! identical.
//!
//! The model is a plain struct of `tapegrad::nn` modules (`Embedding`, `Linear` without
//! bias, `RmsNorm` without gain) beside an `nn::Params` store; its [`microgpt::Trainer`]
//! keeps the store bound to one graph for the run ([`tapegrad::nn::Binding`]) and steps it
//! with the reference's Adam, in constant memory. `cargo run --release -p tapegrad-models
//! --example microgpt_bench` times a step and its parts.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod microgpt;
pub mod transformer;
