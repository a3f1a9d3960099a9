//! micrograd's demo model and training loop on `tapegrad::nn`: the part its `demo.ipynb`
//! writes with `nn.py`. Shared by `examples/moons/main.rs` and `tests/moons.rs`.

use tapegrad::nn::{Mlp, ParamError, Params, View};
use tapegrad::optim::{Optimizer, Schedule, SgdConfig};
use tapegrad::pyrandom::PyRandom;
use tapegrad::{Graph, Scalar};

/// micrograd's `MLP(2, [16, 16, 1])`, weights drawn after `random.seed(1337)`.
pub struct Model {
    pub mlp: Mlp,
}

impl Model {
    pub fn new(params: &mut Params) -> Self {
        let mut rng = PyRandom::seed(1337);
        let mut draw = || rng.uniform(-1.0, 1.0);
        let mlp = Mlp::new(params, "mlp", &[2, 16, 16, 1], &mut draw);
        Model { mlp }
    }

    pub fn score<T: Scalar>(&self, p: &View<T>, x: [f64; 2]) -> T {
        self.mlp.forward_f64(p, &x)[0]
    }

    /// micrograd's `loss()` in its order of operations: the SVM max-margin loss
    /// `mean(relu(1 - y score))` plus `1e-4 sum p^2`; and the accuracy.
    pub fn loss<T: Scalar>(&self, p: &View<T>, xs: &[[f64; 2]], ys: &[f64]) -> (T, f64) {
        let scores: Vec<T> = xs.iter().map(|&x| self.score(p, x)).collect();
        let margins = scores.iter().zip(ys).map(|(&s, &y)| (s * -y + 1.0).relu());
        let losses: Vec<T> = margins.collect();
        let data_loss = T::sum(&losses) * (1.0 / losses.len() as f64);
        let ps = self.mlp.neuron_params(p); // micrograd's parameters() order
        let reg_loss = T::dot(&ps, &ps) * 1e-4;
        let right = scores
            .iter()
            .zip(ys)
            .filter(|&(s, &y)| (s.value() > 0.0) == (y > 0.0));
        (data_loss + reg_loss, right.count() as f64 / ys.len() as f64)
    }
}

/// 100 steps of SGD with learning rate `1 - 0.9 k / 100`; `report(k, loss, accuracy)`.
pub fn train(
    params: &mut Params,
    model: &Model,
    (xs, ys): (&[[f64; 2]], &[f64]),
    mut report: impl FnMut(usize, f64, f64),
) -> Result<(), ParamError> {
    let mut opt = Optimizer::sgd(params, SgdConfig::new(1.0));
    opt.set_schedule(Schedule::linear(1.0, 0.1, 100));
    let graph = Graph::new(); // a workspace: every step leaves it empty
    for k in 0..100 {
        let (loss, accuracy, grads) =
            params.value_and_grad_aux(&graph, |p| model.loss(p, xs, ys))?;
        opt.step(params, &grads)?;
        report(k, loss, accuracy);
    }
    Ok(())
}
