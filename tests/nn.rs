//! `tapegrad::nn`: the parameter store, its views and gradients, the modules (against
//! central differences and closed forms), and safetensors files (round trip, a file
//! written by CPython's `struct` and `json`, and the errors that name the tensor).

use tapegrad::nn::{Embedding, LayerNorm, Linear, Mlp, Module, ParamError, Params, RmsNorm, View};
use tapegrad::pyrandom::PyRandom;
use tapegrad::{Error, Graph, Scalar, Var};

/// A little of everything: token and position embeddings, RMSNorm with a gain, a linear
/// layer on activations, LayerNorm, a bias-free head on the data, and a log-sum-exp loss.
struct Tiny {
    tokens: Embedding,
    positions: Embedding,
    norm: RmsNorm,
    hidden: Linear,
    ln: LayerNorm,
    head: Linear,
    mix: Linear,
}

impl Tiny {
    fn new(params: &mut Params) -> Self {
        let mut rng = PyRandom::seed(7);
        let mut draw = || rng.gauss(0.0, 0.5);
        let tiny = Tiny {
            tokens: Embedding::new(params, "tok", 3, 4, &mut draw),
            positions: Embedding::new(params, "pos", 2, 4, &mut draw),
            norm: RmsNorm::with_gain(params, "norm", 4, 1e-5),
            hidden: Linear::new(params, "hidden", 4, 4, &mut draw),
            ln: LayerNorm::new(params, "ln", 4, 1e-5),
            head: Linear::without_bias(params, "head", 4, 3, &mut draw),
            mix: Linear::new(params, "mix", 2, 3, &mut draw),
        };
        // Move the ones and zeros off their starting values so every gradient is generic.
        for (i, x) in params.as_mut_slice().iter_mut().enumerate() {
            *x += 0.01 * (i % 7) as f64;
        }
        tiny
    }

    fn loss<T: Scalar>(&self, p: &View<T>, tokens: &[usize], data: [f64; 2]) -> T {
        let mut total = Vec::new();
        for (i, &t) in tokens.iter().enumerate() {
            let x: Vec<T> = (self.tokens.forward(p, t).iter())
                .zip(self.positions.forward(p, i))
                .map(|(&a, &b)| a + b)
                .collect();
            let x = self.norm.forward(p, &x);
            let h: Vec<T> = self
                .hidden
                .forward(p, &x)
                .into_iter()
                .map(T::gelu)
                .collect();
            let h = self.ln.forward(p, &h);
            let logits = self.head.forward(p, &h);
            let bias = self.mix.forward_f64(p, &data);
            let logits: Vec<T> = logits.iter().zip(&bias).map(|(&l, &b)| l + b).collect();
            total.push(T::logsumexp(&logits) - logits[(t + 1) % 3]);
        }
        T::sum(&total) / tokens.len() as f64
    }
}

#[test]
fn module_gradients_match_central_differences() {
    let mut params = Params::new();
    let model = Tiny::new(&mut params);
    let (tokens, data) = ([2, 0], [0.3, -1.2]);
    let g = Graph::new();
    let (value, grads) = params
        .value_and_grad(&g, |p| model.loss(p, &tokens, data))
        .unwrap();
    assert!(g.is_empty(), "the step's nodes were released");
    // The recorded forward and the plain one are the same arithmetic.
    assert_eq!(value, model.loss(&params.view(), &tokens, data));
    let h = 1e-5;
    for i in 0..params.len() {
        let at = |dx: f64| {
            let mut moved = params.clone();
            moved.as_mut_slice()[i] += dx;
            model.loss(&moved.view(), &tokens, data)
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h);
        let exact = grads.as_slice()[i];
        assert!(
            (exact - numeric).abs() <= 1e-7 * (1.0 + numeric.abs()),
            "parameter {i}: exact {exact}, central difference {numeric}"
        );
    }
    // Every module's parameters are in the store, and only those.
    let modules: [&dyn Module; 7] = [
        &model.tokens,
        &model.positions,
        &model.norm,
        &model.hidden,
        &model.ln,
        &model.head,
        &model.mix,
    ];
    let count: usize = modules.iter().map(|m| m.num_params(&params)).sum();
    assert_eq!(count, params.len());
}

#[test]
fn linear_sums_from_the_bias_like_micrograds_neuron() {
    // micrograd: sum((wi*xi ...), b) = ((b + w0 x0) + w1 x1). With b = 1e16 each + 1 is lost
    // to rounding (1e16 + 1 rounds back to 1e16); summed the other way, (1 + 1) + 1e16 is
    // 1e16 + 2, a different double.
    let mut params = Params::new();
    let layer = Linear::new(&mut params, "fc", 2, 1, &mut || 1.0);
    params[layer.bias().unwrap()][0] = 1e16;
    let plain = layer.forward_f64(&params.view(), &[1.0, 1.0])[0];
    assert_eq!(plain, 1e16);
    assert_ne!(plain, (1.0 + 1.0) + 1e16);
    let g = Graph::new();
    let (recorded, on_vars, _) = params
        .value_and_grad_aux(&g, |p| {
            let y = layer.forward_f64(p, &[1.0, 1.0])[0];
            let x = g.vars(&[1.0, 1.0]);
            (y, layer.forward(p, &x)[0].value())
        })
        .unwrap();
    assert_eq!((recorded, on_vars), (1e16, 1e16));
}

#[test]
fn data_enters_a_dot_as_constants_with_the_same_numbers() {
    let mut params = Params::new();
    let mut rng = PyRandom::seed(3);
    let layer = Linear::new(&mut params, "fc", 3, 2, &mut || rng.uniform(-1.0, 1.0));
    params[layer.bias().unwrap()].copy_from_slice(&[0.25, -0.5]);
    let data = [0.7, -1.1, 2.3];
    let g = Graph::new();
    // Data as f64: one dot node per output, nothing for the data.
    let (_, (fused, nodes), fused_grads) = params
        .value_and_grad_aux(&g, |p| {
            let before = g.len();
            let y = layer.forward_f64(p, &data);
            let nodes = g.len() - before;
            (
                y[0] * 2.0 + y[1],
                (y.iter().map(|y| y.value()).collect::<Vec<_>>(), nodes),
            )
        })
        .unwrap();
    assert_eq!(nodes, 2);
    // The same data lifted to constant nodes, through the Var-with-Var path.
    let (_, both, both_grads) = params
        .value_and_grad_aux(&g, |p| {
            let lifted: Vec<Var> = data.iter().map(|&x| g.constant(x)).collect();
            let y = layer.forward(p, &lifted);
            (
                y[0] * 2.0 + y[1],
                y.iter().map(|y| y.value()).collect::<Vec<_>>(),
            )
        })
        .unwrap();
    assert_eq!(fused, both);
    let (fused_grads, both_grads) = (fused_grads.as_slice(), both_grads.as_slice());
    assert_eq!(fused_grads, both_grads);
    // dW[o][i] = (2, 1)[o] x[i]; db = (2, 1).
    assert_eq!(fused_grads, [1.4, -2.2, 4.6, 0.7, -1.1, 2.3, 2.0, 1.0]);
}

#[test]
fn mlp_draws_micrograds_weights_in_micrograds_order() {
    let mut params = Params::new();
    let mut rng = PyRandom::seed(1337);
    let mlp = Mlp::new(&mut params, "mlp", &[2, 16, 16, 1], &mut || {
        rng.uniform(-1.0, 1.0)
    });
    // CPython: random.seed(1337); [random.uniform(-1, 1) for _ in range(3)]
    let first = [
        0.23550571390294128,
        0.06653114721000164,
        -0.26830328150124894,
    ];
    let neurons = mlp.neuron_params(&params.view());
    assert_eq!(neurons.len(), 337);
    // Neuron 0: w0, w1, then its bias 0; neuron 1 starts with the third draw.
    assert_eq!(neurons[..4], [first[0], first[1], 0.0, first[2]]);
    // The store keeps PyTorch's layout: mlp.0.weight (16 x 2), mlp.0.bias, ...
    let names: Vec<&str> = params.params().map(|p| params.name(p)).collect();
    assert_eq!(names[..3], ["mlp.0.weight", "mlp.0.bias", "mlp.1.weight"]);
    assert_eq!(params[params.find("mlp.0.weight").unwrap()][..3], first);
    // ReLU between layers, none at the end: a negative output is possible.
    assert_eq!(mlp.layers().len(), 3);
}

#[test]
fn rmsnorm_is_microgpts_arithmetic() {
    // microgpt: ms = sum(x*x) * 16**-1; scale = (ms + 1e-5) ** -0.5; x * scale.
    let x: Vec<f64> = (0..16).map(|i| (i as f64 - 7.5) * 0.1).collect();
    let ms = x.iter().fold(0.0, |s, v| s + v * v) * (1.0 / 16.0);
    let scale = (ms + 1e-5).powf(-0.5);
    let want: Vec<f64> = x.iter().map(|v| v * scale).collect();
    let norm = RmsNorm::new(16, 1e-5);
    assert_eq!(norm.forward(&Params::new().view(), &x), want);
}

#[test]
fn layer_norm_of_a_constant_vector_is_beta() {
    let mut params = Params::new();
    let ln = LayerNorm::new(&mut params, "ln", 3, 1e-5);
    params[ln.beta()].copy_from_slice(&[1.0, 2.0, 3.0]);
    assert_eq!(
        ln.forward(&params.view(), &[4.0, 4.0, 4.0]),
        vec![1.0, 2.0, 3.0]
    );
}

#[test]
fn gradient_clipping_is_pytorchs() {
    let mut params = Params::new();
    params.zeros("w", &[3]);
    let mut grads = params.grads_from(vec![3.0, -4.0, 12.0]);
    // torch.nn.utils.clip_grad_norm_(max_norm=1): coef = 1 / (13 + 1e-6); CPython:
    let want = [0.23076921301775288, -0.3076922840236705, 0.9230768520710115];
    assert_eq!(grads.clip_norm(1.0), 13.0);
    assert_eq!(grads.as_slice(), want);
    // Below the maximum nothing changes.
    assert_eq!(grads.clip_norm(100.0), grads.norm());
    assert_eq!(grads.as_slice(), want);
}

#[test]
fn a_loss_of_another_graph_is_an_error_and_the_step_is_released() {
    let mut params = Params::new();
    let w = params.add("w", &[1], vec![2.0]);
    let (g, other) = (Graph::new(), Graph::new());
    let stray = other.var(1.0);
    let err = params
        .value_and_grad(&g, |p| stray + 0.0 * p[w][0].value())
        .unwrap_err();
    assert!(
        matches!(err, ParamError::Engine(Error::ForeignHandle { .. })),
        "{err}"
    );
    assert!(g.is_empty());
}

#[test]
fn a_panicking_forward_leaves_the_graph_empty() {
    let mut params = Params::new();
    let w = params.add("w", &[2], vec![1.0, 2.0]);
    let g = Graph::new();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        params.value_and_grad(&g, |p| {
            let _ = p[w][0] * p[w][1];
            panic!("the user's forward fails")
        })
    }));
    assert!(caught.is_err());
    assert!(g.is_empty());
}

#[test]
fn a_var_smuggled_out_of_a_step_is_a_released_handle() {
    let mut params = Params::new();
    let w = params.add("w", &[1], vec![3.0]);
    let g = Graph::new();
    let (_, smuggled, _) = params
        .value_and_grad_aux(&g, |p| (p[w][0], p[w][0]))
        .unwrap();
    assert!(g.is_empty());
    // Detected as released, never read as some other node's value.
    assert_eq!(smuggled.try_value(), Err(Error::Released));
}

#[test]
#[should_panic(expected = "already has a tensor called \"w\"")]
fn a_name_is_added_once() {
    let mut params = Params::new();
    params.zeros("w", &[1]);
    params.zeros("w", &[2]);
}

#[test]
fn gradients_accumulate_over_micro_batches() {
    let mut params = Params::new();
    let w = params.add("w", &[1], vec![2.0]);
    let g = Graph::new();
    let mut total = params.zero_grads();
    for x in [1.0, 3.0] {
        let (_, grads) = params.value_and_grad(&g, |p| p[w][0] * x).unwrap();
        total.add_assign(&grads).unwrap();
    }
    total.scale(0.5);
    assert_eq!(&total[w], &[2.0]);
    let mut other = params.clone();
    other[w][0] = 1.0;
    let err = total.add_assign(&other.zero_grads()).unwrap_err();
    assert!(matches!(err, ParamError::ForeignGradients { .. }), "{err}");
}
