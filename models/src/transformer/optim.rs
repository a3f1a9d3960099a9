//! The series' optimizer chapter, as it defines its optimizers: plain gradient descent
//! ([`Sgd`]) and [`AdamW`], on `f64` slices or on parameter [`Var`]s kept across steps
//! (each gradient read from a [`Gradients`] store, each new value written with
//! [`Graph::set_value`](tapegrad::Graph::set_value)). They are bit-exact replicas of the
//! series' arithmetic, kept for its printed numbers; a model of your own uses
//! [`tapegrad::optim::Optimizer`], PyTorch's SGD, Adam and AdamW.
//!
//! A training loop in constant memory, the series' way:
//!
//! ```
//! use tapegrad::{Gradients, Graph};
//! use tapegrad_models::transformer::Sgd;
//!
//! let g = Graph::new();
//! let w = g.vars(&[3.0, -2.0]); // the parameters, created before the mark
//! let mark = g.mark();
//! let mut sgd = Sgd::new(0.25);
//! let mut grads = Gradients::new();
//! for _ in 0..3 {
//!     let loss = w[0] * w[0] + w[1] * w[1];
//!     loss.backward_into(&mut grads);
//!     g.release(mark); // drop the step's nodes first ...
//!     sgd.step(&w, &grads); // ... then update the parameters
//!     assert_eq!(g.len(), 2);
//! }
//! // Each step multiplies w by 1 - 0.25 * 2 = 0.5 (the gradient of w^2 is 2w).
//! assert_eq!((w[0].value(), w[1].value()), (3.0 / 8.0, -2.0 / 8.0));
//! ```

use tapegrad::{Gradients, Var};

/// Applies `update(i, value, gradient) -> new value` to every parameter `Var`.
#[track_caller]
fn step_vars(
    params: &[Var<'_>],
    grads: &Gradients,
    mut update: impl FnMut(usize, f64, f64) -> f64,
) {
    for (i, &x) in params.iter().enumerate() {
        let new = update(i, x.untracked_value(), grads[x]);
        x.graph().set_value(x, new);
    }
}

#[track_caller]
fn check_lengths(who: &str, params: usize, grads: usize) {
    assert_eq!(
        params, grads,
        "{who}: {params} parameters but {grads} gradients; give one gradient per parameter"
    );
}

#[track_caller]
fn check_lr(who: &str, lr: f64) {
    assert!(
        lr.is_finite() && lr >= 0.0,
        "{who}: the learning rate must be finite and >= 0, got {lr}"
    );
}

/// Plain gradient descent: `theta = theta - lr g`.
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::Sgd;
/// let mut theta = [1.0, 2.0];
/// Sgd::new(0.1).update(&mut theta, &[10.0, -10.0]);
/// assert_eq!(theta, [0.0, 3.0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    lr: f64,
}

impl Sgd {
    /// Gradient descent with learning rate `lr`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tapegrad_models::transformer::Sgd::new(0.1).lr(), 0.1);
    /// ```
    ///
    /// # Panics
    ///
    /// If `lr` is negative or not finite.
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        check_lr("Sgd", lr);
        Sgd { lr }
    }

    /// The learning rate.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tapegrad_models::transformer::Sgd::new(0.5).lr(), 0.5);
    /// ```
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// One step on plain values: `params[i] -= lr grads[i]`.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut theta = [1.0];
    /// tapegrad_models::transformer::Sgd::new(0.5).update(&mut theta, &[1.0]);
    /// assert_eq!(theta, [0.5]);
    /// ```
    ///
    /// # Panics
    ///
    /// If the slices' lengths differ.
    #[track_caller]
    pub fn update(&mut self, params: &mut [f64], grads: &[f64]) {
        check_lengths("Sgd::update", params.len(), grads.len());
        for (theta, g) in params.iter_mut().zip(grads) {
            *theta -= self.lr * g;
        }
    }

    /// One step on parameter `Var`s: each takes its gradient from `grads` and its new value
    /// through [`Graph::set_value`](tapegrad::Graph::set_value).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let w = g.var(1.0);
    /// let mark = g.mark();
    /// let grads = (w * 4.0).backward();
    /// g.release(mark);
    /// tapegrad_models::transformer::Sgd::new(0.5).step(&[w], &grads);
    /// assert_eq!(w.value(), -1.0);
    /// ```
    ///
    /// # Panics
    ///
    /// If a parameter was released, is not an input made by
    /// [`Graph::var`](tapegrad::Graph::var), belongs to another graph than `grads`, or is still
    /// used by a recorded node (release the step's nodes before stepping). Parameters before
    /// the offending one have been updated by then.
    #[track_caller]
    pub fn step(&mut self, params: &[Var<'_>], grads: &Gradients) {
        let lr = self.lr;
        step_vars(params, grads, |_, theta, g| theta - lr * g);
    }
}

/// AdamW's hyperparameters; the default is the series' optimizer chapter.
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::AdamWConfig;
/// let c = AdamWConfig::default();
/// assert_eq!((c.lr, c.beta1, c.beta2, c.eps, c.weight_decay), (0.001, 0.9, 0.999, 1e-8, 0.01));
/// let fast = AdamWConfig { lr: 0.01, ..AdamWConfig::default() };
/// assert_eq!(fast.beta1, 0.9);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// The learning rate.
    pub lr: f64,
    /// The decay of the first moment (the gradient's running mean).
    pub beta1: f64,
    /// The decay of the second moment (the squared gradient's running mean).
    pub beta2: f64,
    /// Added to `sqrt(v_hat)` so the step is finite where the gradient is 0.
    pub eps: f64,
    /// Decoupled weight decay: each step first scales `theta` by `1 - lr weight_decay`.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// The series' values: lr 0.001, beta1 0.9, beta2 0.999, eps 1e-8, weight decay 0.01.
    fn default() -> Self {
        AdamWConfig {
            lr: 0.001,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW exactly as the series' optimizer chapter defines it, per scalar parameter, with
/// step `t` counted from 1:
///
/// ```text
/// m = beta1 m + (1 - beta1) g          m_hat = m / (1 - beta1^t)
/// v = beta2 v + (1 - beta2) g^2        v_hat = v / (1 - beta2^t)
/// theta = theta (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps)
/// ```
///
/// # Examples
///
/// The series' worked example: `E_token[<BOS>][0] = 0.024634` with gradient `-0.352893`
/// becomes `0.025634` after one step (the first step moves by almost exactly `lr` against
/// the gradient's sign, since `m_hat / sqrt(v_hat) = g / |g|`).
///
/// ```
/// use tapegrad_models::transformer::{AdamW, AdamWConfig};
/// let mut adamw = AdamW::new(1, AdamWConfig::default());
/// let mut theta = [0.024634];
/// adamw.update(&mut theta, &[-0.352893]);
/// assert_eq!(format!("{:.6}", theta[0]), "0.025634");
/// ```
#[derive(Clone, Debug)]
pub struct AdamW {
    config: AdamWConfig,
    t: u64,
    m: Vec<f64>,
    v: Vec<f64>,
    /// Reused buffers for [`AdamW::step`]: the parameters' values and gradients.
    scratch: (Vec<f64>, Vec<f64>),
}

impl AdamW {
    /// AdamW for `n_params` parameters, with zero moments and no step taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::transformer::{AdamW, AdamWConfig};
    /// let adamw = AdamW::new(3, AdamWConfig::default());
    /// assert_eq!((adamw.len(), adamw.steps()), (3, 0));
    /// ```
    ///
    /// # Panics
    ///
    /// If a hyperparameter is out of range: `lr` and `weight_decay` must be finite and
    /// `>= 0`, the betas in `[0, 1)`, `eps` finite and `> 0`.
    #[track_caller]
    pub fn new(n_params: usize, config: AdamWConfig) -> Self {
        let AdamWConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = config;
        check_lr("AdamW", lr);
        for (name, beta) in [("beta1", beta1), ("beta2", beta2)] {
            assert!(
                (0.0..1.0).contains(&beta),
                "AdamW: {name} must be in [0, 1), got {beta}"
            );
        }
        assert!(
            eps.is_finite() && eps > 0.0,
            "AdamW: eps must be finite and > 0, got {eps}"
        );
        assert!(
            weight_decay.is_finite() && weight_decay >= 0.0,
            "AdamW: the weight decay must be finite and >= 0, got {weight_decay}"
        );
        AdamW {
            config,
            t: 0,
            m: vec![0.0; n_params],
            v: vec![0.0; n_params],
            scratch: (Vec::new(), Vec::new()),
        }
    }

    /// The hyperparameters.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::transformer::{AdamW, AdamWConfig};
    /// assert_eq!(AdamW::new(1, AdamWConfig::default()).config().lr, 0.001);
    /// ```
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// The number of parameters it was made for.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::transformer::{AdamW, AdamWConfig};
    /// assert_eq!(AdamW::new(5, AdamWConfig::default()).len(), 5);
    /// ```
    pub fn len(&self) -> usize {
        self.m.len()
    }

    /// Whether it was made for no parameters.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::transformer::{AdamW, AdamWConfig};
    /// assert!(AdamW::new(0, AdamWConfig::default()).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }

    /// The number of steps taken (`t` of the last step).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::transformer::{AdamW, AdamWConfig};
    /// let mut adamw = AdamW::new(1, AdamWConfig::default());
    /// adamw.update(&mut [1.0], &[1.0]);
    /// assert_eq!(adamw.steps(), 1);
    /// ```
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// One step on plain values.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::transformer::{AdamW, AdamWConfig};
    /// let config = AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() };
    /// let mut adamw = AdamW::new(1, config);
    /// let mut theta = [1.0];
    /// adamw.update(&mut theta, &[0.5]);
    /// // First step: m_hat = g, v_hat = g^2, so theta moves by lr g / (|g| + eps).
    /// approx::assert_relative_eq!(theta[0], 1.0 - 0.001 * 0.5 / (0.5 + 1e-8));
    /// ```
    ///
    /// # Panics
    ///
    /// If `params` or `grads` does not have [`AdamW::len`] entries.
    #[track_caller]
    pub fn update(&mut self, params: &mut [f64], grads: &[f64]) {
        check_lengths("AdamW::update", params.len(), grads.len());
        self.check_len("AdamW::update", params.len());
        self.t += 1;
        let AdamWConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        // beta^t as Python's `beta ** t` computes it (C's pow), once per step.
        let t = self.t as f64;
        let (correction1, correction2) = (1.0 - beta1.powf(t), 1.0 - beta2.powf(t));
        let decay = 1.0 - lr * weight_decay;
        // One pass over plain slices: each element's chain of divisions and a square root
        // is long, and independent elements let the processor overlap those chains.
        for (((theta, &g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = beta1 * *m + (1.0 - beta1) * g;
            *v = beta2 * *v + (1.0 - beta2) * g * g;
            let m_hat = *m / correction1;
            let v_hat = *v / correction2;
            *theta = *theta * decay - lr * m_hat / (v_hat.sqrt() + eps);
        }
    }

    /// One step on parameter `Var`s: each takes its gradient from `grads` and its new value
    /// through [`Graph::set_value`](tapegrad::Graph::set_value). The values and gradients are
    /// gathered into buffers kept inside the optimizer, so after the first step this
    /// allocates nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::Graph;
    /// use tapegrad_models::transformer::{AdamW, AdamWConfig};
    /// let g = Graph::new();
    /// let w = g.vars(&[0.024634]);
    /// let mark = g.mark();
    /// let grads = (w[0] * -0.352893).backward(); // d/dw = -0.352893
    /// g.release(mark);
    /// let mut adamw = AdamW::new(1, AdamWConfig::default());
    /// adamw.step(&w, &grads);
    /// assert_eq!(format!("{:.6}", w[0].value()), "0.025634");
    /// ```
    ///
    /// # Panics
    ///
    /// If `params` does not have [`AdamW::len`] entries; and as [`Sgd::step`], except that
    /// nothing is updated if reading a parameter or its gradient fails.
    #[track_caller]
    pub fn step(&mut self, params: &[Var<'_>], grads: &Gradients) {
        self.check_len("AdamW::step", params.len());
        let (mut values, mut gradients) = std::mem::take(&mut self.scratch);
        values.clear();
        values.extend(params.iter().map(|x| x.untracked_value()));
        gradients.clear();
        gradients.extend(params.iter().map(|&x| grads[x]));
        self.update(&mut values, &gradients);
        for (&x, &value) in params.iter().zip(&values) {
            x.graph().set_value(x, value);
        }
        self.scratch = (values, gradients);
    }

    #[track_caller]
    fn check_len(&self, who: &str, n: usize) {
        assert_eq!(
            n,
            self.len(),
            "{who}: this AdamW was made for {} parameters, got {n}",
            self.len()
        );
    }
}
