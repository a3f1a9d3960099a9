//! Models as plain Rust structs: a parameter store with no lifetime ([`Params`]), views
//! that index it by [`Param`] id as `f64` or as bound [`Var`]s, modules, and state dicts
//! saved as safetensors. Built on the engine (`Graph`, `Var`, `Scalar`, `linalg`); nothing
//! here is used by it.
//!
//! A [`Var`] borrows its [`Graph`], so a model cannot hold `Var`s. Here it holds [`Param`]
//! ids instead (small `Copy` handles) and the values live in a [`Params`] store that the
//! model's owner keeps beside it. Evaluation without recording (PyTorch's `no_grad`) is the
//! forward pass on `f64` ([`Params::view`]), no graph at all.
//!
//! **One training step**, forward, backward, step:
//! [`params.value_and_grad(&graph, |p| loss)`](Params::value_and_grad) binds every value to
//! the graph in bulk, records the loss (written once over [`Scalar`]), runs backward and
//! releases everything it recorded, and returns the loss and a [`ParamGrads`];
//! [`value_and_grad_aux`](Params::value_and_grad_aux) returns something else beside the
//! loss. An [`optim::Optimizer`](crate::optim::Optimizer) then updates the store. A
//! [`Binding`] ([`Params::bind`]) is the same step made faster for a whole run, with
//! the same method names and the same results, bit for bit.
//!
//! **Two gradient stores**, by what they are keyed by: [`Gradients`](crate::Gradients),
//! the engine's, holds one backward's gradients by [`Var`]; [`ParamGrads`] holds one
//! training step's by [`Param`], as plain numbers tied to the store's values when they were
//! computed (an optimizer refuses stale ones).
//!
//! ```
//! use tapegrad::nn::{Linear, Params, View};
//! use tapegrad::optim::{Optimizer, SgdConfig};
//! use tapegrad::{Graph, Scalar};
//!
//! // A model is an ordinary struct: no lifetime, no graph.
//! struct Model {
//!     layer: Linear,
//! }
//!
//! impl Model {
//!     // The forward pass and loss, written once over Scalar.
//!     fn loss<T: Scalar>(&self, p: &View<T>, data: &[([f64; 2], f64)]) -> T {
//!         let errors: Vec<T> = data
//!             .iter()
//!             .map(|(x, y)| (self.layer.forward_f64(p, x)[0] - *y).powi(2))
//!             .collect();
//!         T::sum(&errors) / data.len() as f64
//!     }
//! }
//!
//! let mut params = Params::new();
//! let model = Model { layer: Linear::new(&mut params, "layer", 2, 1, &mut || 0.0) };
//! let data = [([1.0, 2.0], 5.0), ([2.0, 0.0], 2.0), ([0.0, 1.0], 2.0)]; // y = x0 + 2 x1
//! let mut opt = Optimizer::sgd(&params, SgdConfig { lr: 0.1, ..SgdConfig::default() });
//! let graph = Graph::new(); // a workspace, reused by every step
//! for _ in 0..1000 {
//!     let (_loss, grads) = params.value_and_grad(&graph, |p| model.loss(p, &data)).unwrap();
//!     opt.step(&mut params, &grads).unwrap();
//! }
//! assert!(graph.is_empty()); // the steps left nothing behind
//! // Evaluation: the same code on plain f64, no graph.
//! assert!(model.loss(&params.view(), &data) < 1e-15);
//! let w = &params[model.layer.weight()];
//! assert!((w[0] - 1.0).abs() < 1e-8 && (w[1] - 2.0).abs() < 1e-8);
//! ```

mod error;
mod layers;
mod params;
mod safetensors;

pub use error::ParamError;
pub use layers::{Embedding, LayerNorm, Linear, Mlp, RmsNorm};
pub(crate) use params::StoreId;
pub use params::{Binding, Param, ParamGrads, Params, View};
pub use safetensors::{LoadReport, StateDict, Tensor};

#[cfg(doc)]
use crate::{Graph, Scalar, Var};

/// A model part that owns parameter tensors in a [`Params`] store.
///
/// A module holds [`Param`] ids (never values), so it has no lifetime and can be stored,
/// cloned and sent anywhere. Its forward pass is an ordinary method generic over
/// [`Scalar`] that takes a [`View`] of the store (`forward<T: Scalar>(&self, p: &View<T>,
/// ...)`): with `T = f64` it evaluates plainly, with `T = Var` it records on a tape.
/// (The forward is not a trait method because its inputs differ from module to module:
/// token ids, data or activations.)
///
/// # Examples
///
/// ```
/// use tapegrad::nn::{Linear, Module, Params};
/// let mut params = Params::new();
/// let layer = Linear::new(&mut params, "fc", 3, 2, &mut || 0.5);
/// assert_eq!(layer.params().len(), 2); // weight and bias
/// assert_eq!(layer.num_params(&params), 3 * 2 + 2);
/// ```
pub trait Module {
    /// Its parameter tensors, in the order they were added to the store.
    fn params(&self) -> Vec<Param>;

    /// The number of scalars in its tensors.
    ///
    /// # Panics
    ///
    /// If a tensor belongs to another store.
    #[track_caller]
    fn num_params(&self, store: &Params) -> usize {
        self.params().iter().map(|&p| store[p].len()).sum()
    }
}
