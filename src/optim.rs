//! Optimizers over an [`nn::Params`](crate::nn::Params) store: [`Optimizer`] runs SGD (with
//! momentum, dampening, Nesterov and weight decay), Adam or AdamW as PyTorch defines them,
//! with a learning rate that follows a [`Schedule`], and saves its state by PyTorch's names.
//! Built on `nn`'s store; nothing below uses it.
//!
//! ```
//! use tapegrad::nn::Params;
//! use tapegrad::optim::{Optimizer, SgdConfig};
//! use tapegrad::Graph;
//!
//! let mut params = Params::new();
//! let w = params.add("w", &[2], vec![3.0, -2.0]);
//! let mut sgd = Optimizer::sgd(&params, SgdConfig::new(0.25));
//! let graph = Graph::new();
//! for _ in 0..3 {
//!     let (_loss, grads) = params.value_and_grad(&graph, |p| p[w][0] * p[w][0] + p[w][1] * p[w][1]).unwrap();
//!     sgd.step(&mut params, &grads).unwrap();
//! }
//! // Each step multiplies w by 1 - 0.25 * 2 = 0.5 (the gradient of w^2 is 2w).
//! assert_eq!(&params[w], &[3.0 / 8.0, -2.0 / 8.0]);
//! ```

use crate::nn::{ParamError, ParamGrads, Params, StateDict, StoreId};

#[track_caller]
fn check_lr(who: &str, lr: f64) {
    assert!(
        lr.is_finite() && lr >= 0.0,
        "{who}: the learning rate must be finite and >= 0, got {lr}"
    );
}

/// Stochastic gradient descent's hyperparameters, as PyTorch's `torch.optim.SGD` defines
/// them (defaults: no momentum, no dampening, no weight decay, not Nesterov).
///
/// # Examples
///
/// ```
/// use tapegrad::optim::SgdConfig;
/// let c = SgdConfig { lr: 0.1, momentum: 0.9, ..SgdConfig::default() };
/// assert_eq!((c.dampening, c.weight_decay, c.nesterov), (0.0, 0.0, false));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// The learning rate (the schedule's start; see [`Optimizer::set_schedule`]).
    pub lr: f64,
    /// The momentum factor `mu`; 0 is plain gradient descent.
    pub momentum: f64,
    /// The dampening `tau` of the momentum.
    pub dampening: f64,
    /// L2 penalty: `g + weight_decay * theta` is used as the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl SgdConfig {
    /// The default with learning rate `lr` (PyTorch's `SGD(params, lr=lr)`).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::optim::SgdConfig;
    /// assert_eq!(SgdConfig::new(0.5), SgdConfig { lr: 0.5, ..SgdConfig::default() });
    /// ```
    pub fn new(lr: f64) -> Self {
        SgdConfig {
            lr,
            ..SgdConfig::default()
        }
    }
}

impl Default for SgdConfig {
    /// lr 0.01 (PyTorch has no default: set it), no momentum, no dampening, no weight decay.
    fn default() -> Self {
        SgdConfig {
            lr: 0.01,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
}

/// Adam's and AdamW's hyperparameters, as PyTorch's `torch.optim.Adam` and
/// `torch.optim.AdamW` define them. The default is PyTorch's `Adam` (no weight decay);
/// PyTorch's `AdamW` default has `weight_decay: 0.01`.
///
/// # Examples
///
/// ```
/// use tapegrad::optim::AdamConfig;
/// let c = AdamConfig::default();
/// assert_eq!((c.lr, c.beta1, c.beta2, c.eps, c.weight_decay), (0.001, 0.9, 0.999, 1e-8, 0.0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// The learning rate (the schedule's start; see [`Optimizer::set_schedule`]).
    pub lr: f64,
    /// The decay of the first moment.
    pub beta1: f64,
    /// The decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Adam: an L2 penalty added to the gradient; AdamW: decoupled decay of the weights.
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    /// lr 0.001, betas (0.9, 0.999), eps 1e-8, no weight decay.
    fn default() -> Self {
        AdamConfig {
            lr: 0.001,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// The learning rate as a function of the step `k` (0 for the first step). It can be
/// changed between steps ([`Optimizer::set_schedule`], [`Optimizer::set_lr`]).
///
/// `k` counts optimizer steps. PyTorch's schedulers count calls to `scheduler.step()`,
/// usually one per epoch: with `e` steps per epoch, PyTorch's `StepLR(step_size=s)` is
/// [`Schedule::Step`] with `step_size` `s * e`, and its `ExponentialLR` stepped per epoch is
/// `Step` with `step_size` `e`.
///
/// # Examples
///
/// ```
/// use tapegrad::optim::Schedule;
/// // micrograd's demo: 1 - 0.9 k / 100.
/// let decay = Schedule::Linear { start: 1.0, end: 0.1, steps: 100 };
/// assert_eq!(decay.lr(0), 1.0);
/// assert_eq!(decay.lr(50), 1.0 - 0.9 * 50.0 / 100.0);
/// assert_eq!(decay.lr(1000), 0.1);
/// // PyTorch's StepLR(lr=0.05, step_size=30, gamma=0.1).
/// let step = Schedule::step(0.05, 30, 0.1);
/// assert_eq!((step.lr(29), step.lr(30), step.lr(60)), (0.05, 0.05 * 0.1, 0.05 * 0.1 * 0.1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// The same rate at every step.
    Constant(f64),
    /// From `start` at step 0 to `end` at step `steps`, linearly: `start - (start - end)
    /// k / steps` (micrograd's `1 - 0.9 k / 100` is `start 1, end 0.1, steps 100`); `end`
    /// after.
    Linear {
        /// The rate at step 0.
        start: f64,
        /// The rate from step `steps` on.
        end: f64,
        /// The length of the decay.
        steps: u64,
    },
    /// Linear warmup then cosine decay, as nanoGPT's `get_lr`: `peak (k + 1) / (warmup +
    /// 1)` for `k < warmup`; then with `r = (k - warmup) / (steps - warmup)`,
    /// `min + (peak - min) (1 + cos(pi r)) / 2` until step `steps`; `min` after.
    Cosine {
        /// The rate at the end of the warmup.
        peak: f64,
        /// The rate from step `steps` on.
        min: f64,
        /// The number of warmup steps.
        warmup: u64,
        /// The step where the decay ends.
        steps: u64,
    },
    /// PyTorch's `StepLR`: `start`, multiplied by `gamma` every `step_size` steps. As
    /// PyTorch computes it (its chainable form), the rate is the previous rate times
    /// `gamma`, one rounding per decay, not `start * gamma^n`.
    #[doc(alias = "StepLR")]
    Step {
        /// The rate at step 0.
        start: f64,
        /// The number of steps between decays.
        step_size: u64,
        /// The factor of each decay.
        gamma: f64,
    },
    /// PyTorch's `ExponentialLR`: `start`, multiplied by `gamma` at every step (the
    /// previous rate times `gamma`, as PyTorch computes it).
    #[doc(alias = "ExponentialLR")]
    Exponential {
        /// The rate at step 0.
        start: f64,
        /// The factor of each step.
        gamma: f64,
    },
}

impl Schedule {
    /// [`Schedule::Linear`] from `start` to `end` over `steps` steps.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::optim::Schedule;
    /// assert_eq!(Schedule::linear(1.0, 0.1, 100), Schedule::Linear { start: 1.0, end: 0.1, steps: 100 });
    /// ```
    pub fn linear(start: f64, end: f64, steps: u64) -> Self {
        Schedule::Linear { start, end, steps }
    }

    /// [`Schedule::Cosine`]: `warmup` steps up to `peak`, then down to `min` at step
    /// `steps`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::optim::Schedule;
    /// let s = Schedule::cosine(6e-4, 6e-5, 10, 100);
    /// assert_eq!(s.lr(9), 6e-4 * 10.0 / 11.0);
    /// assert_eq!(s.lr(100), 6e-5);
    /// ```
    pub fn cosine(peak: f64, min: f64, warmup: u64, steps: u64) -> Self {
        Schedule::Cosine {
            peak,
            min,
            warmup,
            steps,
        }
    }

    /// [`Schedule::Step`]: `start`, times `gamma` every `step_size` steps.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::optim::Schedule;
    /// let s = Schedule::step(1.0, 2, 0.5);
    /// assert_eq!([s.lr(0), s.lr(1), s.lr(2), s.lr(3), s.lr(4)], [1.0, 1.0, 0.5, 0.5, 0.25]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `step_size` is 0.
    #[track_caller]
    pub fn step(start: f64, step_size: u64, gamma: f64) -> Self {
        assert!(step_size > 0, "Schedule::step: step_size must be > 0");
        Schedule::Step {
            start,
            step_size,
            gamma,
        }
    }

    /// [`Schedule::Exponential`]: `start`, times `gamma` at every step.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::optim::Schedule;
    /// let s = Schedule::exponential(1.0, 0.5);
    /// assert_eq!([s.lr(0), s.lr(1), s.lr(3)], [1.0, 0.5, 0.125]);
    /// ```
    pub fn exponential(start: f64, gamma: f64) -> Self {
        Schedule::Exponential { start, gamma }
    }

    /// The learning rate of step `k` (0-based). For [`Schedule::Step`] and
    /// [`Schedule::Exponential`] this repeats PyTorch's multiplications from `start` (one
    /// per decay, so it takes time in proportion to their number; an [`Optimizer`] keeps
    /// its current rate and multiplies once per decay instead).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::optim::Schedule;
    /// let s = Schedule::Cosine { peak: 1.0, min: 0.1, warmup: 1, steps: 3 };
    /// assert_eq!(s.lr(0), 0.5); // warmup: 1 * (0 + 1) / (1 + 1)
    /// assert_eq!(s.lr(1), 1.0); // the peak
    /// approx::assert_relative_eq!(s.lr(2), 0.55, max_relative = 1e-15); // half way
    /// assert_eq!(s.lr(3), 0.1);
    /// ```
    ///
    /// # Panics
    ///
    /// For a [`Schedule::Step`] with `step_size` 0.
    #[track_caller]
    pub fn lr(&self, k: u64) -> f64 {
        match *self {
            Schedule::Constant(lr) => lr,
            Schedule::Linear { start, end, steps } => {
                if k >= steps {
                    end
                } else {
                    start - (start - end) * k as f64 / steps as f64
                }
            }
            Schedule::Cosine {
                peak,
                min,
                warmup,
                steps,
            } => {
                if k < warmup {
                    peak * (k + 1) as f64 / (warmup + 1) as f64
                } else if k >= steps {
                    min
                } else {
                    let r = (k - warmup) as f64 / (steps - warmup) as f64;
                    min + 0.5 * (1.0 + (std::f64::consts::PI * r).cos()) * (peak - min)
                }
            }
            Schedule::Step {
                start,
                step_size,
                gamma,
            } => {
                assert!(step_size > 0, "Schedule::Step: step_size must be > 0");
                (0..k / step_size).fold(start, |lr, _| lr * gamma)
            }
            Schedule::Exponential { start, gamma } => (0..k).fold(start, |lr, _| lr * gamma),
        }
    }

    /// The rate of step `k + 1` given `lr`, the rate of step `k`: PyTorch's chainable form,
    /// one multiplication per decay for [`Schedule::Step`] and [`Schedule::Exponential`]
    /// (the same bits as [`Schedule::lr`]), the closed form for the others.
    fn next_lr(&self, k: u64, lr: f64) -> f64 {
        match *self {
            Schedule::Step {
                step_size, gamma, ..
            } if (k + 1) % step_size == 0 => lr * gamma,
            Schedule::Step { .. } => lr,
            Schedule::Exponential { gamma, .. } => lr * gamma,
            _ => self.lr(k + 1),
        }
    }
}

/// Which update rule an [`Optimizer`] applies.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    Sgd(SgdConfig),
    Adam(AdamConfig),
    AdamW(AdamConfig),
}

/// An optimizer over a [`Params`] store: SGD (with momentum), Adam or AdamW, each as
/// PyTorch defines it, with a learning rate that follows a [`Schedule`] and state that is
/// saved and restored by name ([`Optimizer::state_dict`]).
///
/// An optimizer serves the store it was made for, and [`Optimizer::step`] takes the
/// [`ParamGrads`] of that store's current values: another store (a clone included, whose
/// values would silently leave this optimizer's momenta behind), gradients of another
/// store, or stale ones computed before the last step are refused, so a loop in the wrong
/// order fails loudly.
///
/// # Examples
///
/// ```
/// use tapegrad::{nn::Params, optim::{AdamConfig, Optimizer}, Graph};
/// let mut params = Params::new();
/// let w = params.add("w", &[1], vec![1.0]);
/// let mut opt = Optimizer::adam(&params, AdamConfig { lr: 0.1, ..AdamConfig::default() });
/// let g = Graph::new();
/// let (_, grads) = params.value_and_grad(&g, |p| p[w][0] * 3.0).unwrap();
/// opt.step(&mut params, &grads).unwrap();
/// // Adam's first step moves by lr against the gradient's sign (up to eps).
/// approx::assert_relative_eq!(params[w][0], 0.9, max_relative = 1e-8);
/// assert!(opt.step(&mut params, &grads).is_err()); // stale: computed before the step
/// ```
#[derive(Clone, Debug)]
pub struct Optimizer {
    rule: Rule,
    /// The store it was made for.
    store: StoreId,
    schedule: Schedule,
    /// Steps taken.
    t: u64,
    /// The learning rate of step `t`, `schedule.lr(t)`, kept so that a multiplicative
    /// schedule costs one multiplication per step.
    lr: f64,
    /// SGD: the momentum buffer; Adam(W): the first and second moments.
    state: Vec<Vec<f64>>,
}

/// PyTorch's names for each state vector, by rule.
const SGD_STATE: [&str; 1] = ["momentum_buffer"];
const ADAM_STATE: [&str; 2] = ["exp_avg", "exp_avg_sq"];

impl Optimizer {
    /// SGD as PyTorch's `torch.optim.SGD`, per scalar, with `g` the gradient:
    ///
    /// ```text
    /// g = g + weight_decay theta                       (if weight_decay != 0)
    /// b = g at the first step, else momentum b + (1 - dampening) g
    /// g = g + momentum b if nesterov, else b           (if momentum != 0)
    /// theta = theta - lr g
    /// ```
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, optim::{Optimizer, SgdConfig}};
    /// let mut params = Params::new();
    /// params.add("w", &[1], vec![1.0]);
    /// let config = SgdConfig { lr: 0.1, momentum: 0.9, ..SgdConfig::default() };
    /// let mut opt = Optimizer::sgd(&params, config);
    /// for _ in 0..2 {
    ///     let grads = params.grads_from(vec![1.0]);
    ///     opt.step(&mut params, &grads).unwrap();
    /// }
    /// // b = 1, then 0.9 + 1 = 1.9: theta = 1 - 0.1 - 0.19.
    /// approx::assert_relative_eq!(params.as_slice()[0], 0.71, max_relative = 1e-15);
    /// ```
    ///
    /// # Panics
    ///
    /// If `lr`, `momentum`, `dampening` or `weight_decay` is negative or not finite, or
    /// `nesterov` is asked for without momentum or with dampening (as PyTorch).
    #[track_caller]
    pub fn sgd(params: &Params, config: SgdConfig) -> Self {
        check_lr("SGD", config.lr);
        for (name, x) in [
            ("momentum", config.momentum),
            ("dampening", config.dampening),
            ("weight_decay", config.weight_decay),
        ] {
            assert!(
                x.is_finite() && x >= 0.0,
                "SGD: {name} must be finite and >= 0, got {x}"
            );
        }
        assert!(
            !config.nesterov || (config.momentum > 0.0 && config.dampening == 0.0),
            "SGD: Nesterov momentum requires a momentum and zero dampening"
        );
        Optimizer::with_rule(params, Rule::Sgd(config), config.lr, 1)
    }

    /// Adam as PyTorch's `torch.optim.Adam` (its single-tensor code's order of
    /// operations), per scalar, with step `t` counted from 1:
    ///
    /// ```text
    /// g = g + weight_decay theta                       (an L2 penalty)
    /// m = m + (1 - beta1) (g - m)                      (torch's lerp)
    /// v = beta2 v + (1 - beta2) g g
    /// theta = theta - (lr / (1 - beta1^t)) m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    /// ```
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, optim::{AdamConfig, Optimizer}};
    /// let mut params = Params::new();
    /// params.add("w", &[1], vec![1.0]);
    /// let mut opt = Optimizer::adam(&params, AdamConfig::default());
    /// let grads = params.grads_from(vec![-4.0]);
    /// opt.step(&mut params, &grads).unwrap();
    /// approx::assert_relative_eq!(params.as_slice()[0], 1.001, max_relative = 1e-11);
    /// ```
    ///
    /// # Panics
    ///
    /// If a hyperparameter is out of range: `lr` and `weight_decay` finite and `>= 0`,
    /// the betas in `[0, 1)`, `eps` finite and `> 0`.
    #[track_caller]
    pub fn adam(params: &Params, config: AdamConfig) -> Self {
        check_adam("Adam", &config);
        Optimizer::with_rule(params, Rule::Adam(config), config.lr, 2)
    }

    /// AdamW as PyTorch's `torch.optim.AdamW`: Adam without the L2 penalty, and before
    /// each step `theta = theta (1 - lr weight_decay)`. (The tutorial series' AdamW, in
    /// `tapegrad-models`, is the same rule with another order of operations, kept for its
    /// printed numbers.)
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, optim::{AdamConfig, Optimizer}};
    /// let mut params = Params::new();
    /// params.add("w", &[1], vec![2.0]);
    /// let config = AdamConfig { lr: 0.1, weight_decay: 0.5, ..AdamConfig::default() };
    /// let mut opt = Optimizer::adamw(&params, config);
    /// let grads = params.grads_from(vec![0.0]);
    /// opt.step(&mut params, &grads).unwrap();
    /// assert_eq!(params.as_slice()[0], 2.0 * (1.0 - 0.1 * 0.5)); // decay only
    /// ```
    ///
    /// # Panics
    ///
    /// As [`Optimizer::adam`].
    #[track_caller]
    pub fn adamw(params: &Params, config: AdamConfig) -> Self {
        check_adam("AdamW", &config);
        Optimizer::with_rule(params, Rule::AdamW(config), config.lr, 2)
    }

    fn with_rule(params: &Params, rule: Rule, lr: f64, vectors: usize) -> Self {
        Optimizer {
            rule,
            store: params.id(),
            schedule: Schedule::Constant(lr),
            t: 0,
            lr,
            state: vec![vec![0.0; params.len()]; vectors],
        }
    }

    /// The number of steps taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, optim::{Optimizer, SgdConfig}};
    /// let opt = Optimizer::sgd(&Params::new(), SgdConfig::default());
    /// assert_eq!(opt.steps(), 0);
    /// ```
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// The learning rate the next step will use.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, optim::{Optimizer, SgdConfig}};
    /// let opt = Optimizer::sgd(&Params::new(), SgdConfig { lr: 0.5, ..SgdConfig::default() });
    /// assert_eq!(opt.lr(), 0.5);
    /// ```
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// A constant learning rate from the next step on.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, optim::{Optimizer, SgdConfig}};
    /// let mut opt = Optimizer::sgd(&Params::new(), SgdConfig::default());
    /// opt.set_lr(0.25);
    /// assert_eq!(opt.lr(), 0.25);
    /// ```
    ///
    /// # Panics
    ///
    /// If `lr` is negative or not finite.
    #[track_caller]
    pub fn set_lr(&mut self, lr: f64) {
        check_lr("Optimizer::set_lr", lr);
        self.schedule = Schedule::Constant(lr);
        self.lr = lr;
    }

    /// The learning rate from the next step on follows `schedule`, read at the number of
    /// steps taken so far.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, optim::{Optimizer, Schedule, SgdConfig}};
    /// let mut opt = Optimizer::sgd(&Params::new(), SgdConfig::default());
    /// opt.set_schedule(Schedule::Linear { start: 1.0, end: 0.0, steps: 4 });
    /// assert_eq!(opt.lr(), 1.0);
    /// ```
    ///
    /// # Panics
    ///
    /// For a [`Schedule::Step`] with `step_size` 0, or if the rate it gives now is negative
    /// or not finite.
    #[track_caller]
    pub fn set_schedule(&mut self, schedule: Schedule) {
        let lr = schedule.lr(self.t);
        check_lr("Optimizer::set_schedule", lr);
        self.schedule = schedule;
        self.lr = lr;
    }

    /// The schedule.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, optim::{Optimizer, Schedule, SgdConfig}};
    /// let opt = Optimizer::sgd(&Params::new(), SgdConfig { lr: 0.5, ..SgdConfig::default() });
    /// assert_eq!(opt.schedule(), Schedule::Constant(0.5));
    /// ```
    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    /// One step: checks that `grads` are the gradients of `params` as they are now, then
    /// updates every parameter. Afterwards those gradients are stale.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::{ParamError, Params}, optim::{Optimizer, SgdConfig}};
    /// let mut params = Params::new();
    /// params.add("w", &[1], vec![1.0]);
    /// let mut opt = Optimizer::sgd(&params, SgdConfig { lr: 0.5, ..SgdConfig::default() });
    /// let grads = params.grads_from(vec![2.0]);
    /// opt.step(&mut params, &grads).unwrap();
    /// assert_eq!(params.as_slice(), &[0.0]);
    /// assert_eq!(opt.step(&mut params, &grads), Err(ParamError::StaleGradients));
    /// ```
    ///
    /// # Errors
    ///
    /// [`ParamError::ForeignStore`] if `params` is not the store the optimizer was made for
    /// (a clone included; or it gained tensors since), naming both;
    /// [`ParamError::ForeignGradients`] or [`ParamError::StaleGradients`] (see
    /// [`Params::check_grads`]). Nothing is changed then.
    pub fn step(&mut self, params: &mut Params, grads: &ParamGrads) -> Result<(), ParamError> {
        self.store.check(params, "optimizer")?;
        let lr = self.lr;
        let first = self.t == 0;
        let t = self.t + 1;
        let rule = self.rule;
        let state = &mut self.state;
        params.update(grads, |theta, g| match rule {
            Rule::Sgd(c) => sgd_step(&c, lr, first, theta, g, &mut state[0]),
            Rule::Adam(c) | Rule::AdamW(c) => {
                let decoupled = matches!(rule, Rule::AdamW(_));
                let (m, v) = state.split_at_mut(1);
                adam_step(&c, decoupled, lr, t, theta, g, &mut m[0], &mut v[0]);
            }
        })?;
        self.lr = self.schedule.next_lr(self.t, self.lr);
        self.t = t;
        Ok(())
    }

    /// The state by PyTorch's names: `step` (a scalar), then per parameter tensor
    /// `momentum_buffer.{name}` (SGD with momentum) or `exp_avg.{name}` and
    /// `exp_avg_sq.{name}` (Adam, AdamW). Save it beside the parameters with
    /// [`StateDict::extend_prefixed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, optim::{AdamConfig, Optimizer}};
    /// let mut params = Params::new();
    /// params.add("w", &[2], vec![1.0, 2.0]);
    /// let opt = Optimizer::adam(&params, AdamConfig::default());
    /// let sd = opt.state_dict(&params);
    /// let names: Vec<&str> = sd.tensors().iter().map(|t| t.name.as_str()).collect();
    /// assert_eq!(names, ["step", "exp_avg.w", "exp_avg_sq.w"]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `params` is not the store the optimizer was made for (naming both).
    #[track_caller]
    pub fn state_dict(&self, params: &Params) -> StateDict {
        if let Err(e) = self.store.check(params, "optimizer") {
            panic!("Optimizer::state_dict: {e}");
        }
        let mut sd = StateDict::new();
        sd.push("step", &[], vec![self.t as f64]);
        for (name, values) in self.state_names().iter().zip(&self.state) {
            for p in params.params() {
                let range = params.range(p);
                let tensor = format!("{name}.{}", params.name(p));
                sd.push(tensor, params.shape(p), values[range].to_vec());
            }
        }
        sd
    }

    /// Restores [`Optimizer::state_dict`]'s state, saved from a store with the same names
    /// and shapes as `params` (the store this optimizer was made for). The learning rate
    /// is then the schedule's at the restored step.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, optim::{Optimizer, SgdConfig}};
    /// let mut params = Params::new();
    /// params.add("w", &[1], vec![1.0]);
    /// let config = SgdConfig { lr: 0.1, momentum: 0.9, ..SgdConfig::default() };
    /// let mut opt = Optimizer::sgd(&params, config);
    /// let grads = params.grads_from(vec![1.0]);
    /// opt.step(&mut params, &grads).unwrap();
    /// let mut restored = Optimizer::sgd(&params, config);
    /// restored.load_state_dict(&params, &opt.state_dict(&params)).unwrap();
    /// assert_eq!(restored.steps(), 1);
    /// ```
    ///
    /// # Errors
    ///
    /// [`ParamError::ForeignStore`] if `params` is not the store the optimizer was made
    /// for; else [`ParamError::Load`] listing every problem: each [`ParamError::Missing`]
    /// or [`ParamError::Shape`] in the store's order, a [`ParamError::Format`] if `step` is
    /// not a whole number, each [`ParamError::Unexpected`] in `sd`'s order. Nothing is
    /// changed then.
    pub fn load_state_dict(&mut self, params: &Params, sd: &StateDict) -> Result<(), ParamError> {
        self.store.check(params, "optimizer")?;
        let mut problems = Vec::new();
        let t = match sd.get("step").map(|step| &step.data[..]) {
            None => {
                problems.push(ParamError::Missing {
                    name: "step".into(),
                });
                0
            }
            Some(&[t]) if t >= 0.0 && t.fract() == 0.0 && t < 2f64.powi(53) => t as u64,
            Some(data) => {
                problems.push(ParamError::Format(format!(
                    "tensor \"step\" is {data:?}, not one whole number"
                )));
                0
            }
        };
        let mut state = Vec::with_capacity(self.state.len());
        let mut expected = vec!["step".to_owned()];
        for name in self.state_names() {
            let mut values = Vec::with_capacity(params.len());
            for p in params.params() {
                let tensor = format!("{name}.{}", params.name(p));
                match sd.get(&tensor) {
                    None => problems.push(ParamError::Missing {
                        name: tensor.clone(),
                    }),
                    Some(found) if found.shape != params.shape(p) => {
                        problems.push(ParamError::Shape {
                            name: tensor.clone(),
                            expected: params.shape(p).to_vec(),
                            found: found.shape.clone(),
                        });
                    }
                    Some(found) => values.extend_from_slice(&found.data),
                }
                expected.push(tensor);
            }
            state.push(values);
        }
        for t in sd.tensors().iter().filter(|t| !expected.contains(&t.name)) {
            problems.push(ParamError::Unexpected {
                name: t.name.clone(),
            });
        }
        if !problems.is_empty() {
            return Err(ParamError::Load(problems));
        }
        self.t = t;
        self.lr = self.schedule.lr(t);
        self.state = state;
        Ok(())
    }

    fn state_names(&self) -> &'static [&'static str] {
        match self.rule {
            Rule::Sgd(_) => &SGD_STATE,
            Rule::Adam(_) | Rule::AdamW(_) => &ADAM_STATE,
        }
    }
}

/// One SGD step over every scalar (PyTorch's single-tensor `sgd`).
fn sgd_step(c: &SgdConfig, lr: f64, first: bool, theta: &mut [f64], g: &[f64], b: &mut [f64]) {
    for ((x, &g), b) in theta.iter_mut().zip(g).zip(b) {
        let mut d = g;
        if c.weight_decay != 0.0 {
            d += c.weight_decay * *x;
        }
        if c.momentum != 0.0 {
            *b = if first {
                d
            } else {
                *b * c.momentum + (1.0 - c.dampening) * d
            };
            d = if c.nesterov { d + c.momentum * *b } else { *b };
        }
        *x += -lr * d;
    }
}

/// One Adam or AdamW step over every scalar (PyTorch's single-tensor `adam` / `adamw`).
#[expect(
    clippy::too_many_arguments,
    reason = "one step's inputs and its three state vectors, all used once"
)]
fn adam_step(
    c: &AdamConfig,
    decoupled: bool,
    lr: f64,
    t: u64,
    theta: &mut [f64],
    g: &[f64],
    m: &mut [f64],
    v: &mut [f64],
) {
    let t = t as f64;
    let correction1 = 1.0 - c.beta1.powf(t);
    let correction2 = 1.0 - c.beta2.powf(t);
    let step_size = lr / correction1;
    let correction2_sqrt = correction2.sqrt();
    let (w1, w2) = (1.0 - c.beta1, 1.0 - c.beta2);
    for (((x, &g), m), v) in theta.iter_mut().zip(g).zip(m).zip(v) {
        let mut g = g;
        if decoupled {
            *x *= 1.0 - lr * c.weight_decay;
        } else if c.weight_decay != 0.0 {
            g += c.weight_decay * *x;
        }
        *m = lerp(*m, g, w1);
        *v = *v * c.beta2 + w2 * g * g;
        let denom = v.sqrt() / correction2_sqrt + c.eps;
        *x += -step_size * *m / denom;
    }
}

/// `a + w (b - a)` as torch's `lerp` computes it (from the far end when `w >= 0.5`).
fn lerp(a: f64, b: f64, w: f64) -> f64 {
    if w.abs() < 0.5 {
        a + w * (b - a)
    } else {
        b - (b - a) * (1.0 - w)
    }
}

#[track_caller]
fn check_adam(who: &str, c: &AdamConfig) {
    check_lr(who, c.lr);
    for (name, beta) in [("beta1", c.beta1), ("beta2", c.beta2)] {
        assert!(
            (0.0..1.0).contains(&beta),
            "{who}: {name} must be in [0, 1), got {beta}"
        );
    }
    assert!(
        c.eps.is_finite() && c.eps > 0.0,
        "{who}: eps must be finite and > 0, got {}",
        c.eps
    );
    assert!(
        c.weight_decay.is_finite() && c.weight_decay >= 0.0,
        "{who}: the weight decay must be finite and >= 0, got {}",
        c.weight_decay
    );
}
