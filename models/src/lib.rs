//! # tapegrad-models
//!
//! The tutorials' models on [`tapegrad`], each a bit-exact replica of its reference and
//! built on tapegrad's public API like any user's model:
//!
//! - [`transformer`]: the tutorial series' tiny GPT-style transformer (3,456 parameters),
//!   with the series' own optimizers ([`transformer::AdamW`], [`transformer::Sgd`]), which
//!   reproduce every number the series prints;
//! - [`microgpt`]: Karpathy's microgpt character model (4,192 parameters), its tokenizer,
//!   its trainer and the reference's Adam in CPython's arithmetic (C `pow` included), which
//!   reproduce the reference's 1,000-step loss trace and sampled names.
//!
//! Their examples run with one command each:
//!
//! ```text
//! cargo run --release -p tapegrad-models --example microgpt
//! cargo run --release -p tapegrad-models --example tiny_transformer
//! ```
//!
//! A model of your own needs none of this: see [`tapegrad::nn`] and [`tapegrad::optim`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod microgpt;
pub mod transformer;
