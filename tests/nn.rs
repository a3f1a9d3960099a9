//! `tapegrad::nn`: the parameter store, its views and gradients, the modules (against
//! central differences and closed forms), and safetensors files (round trip, a file
//! written by CPython's `struct` and `json`, and the errors that name the tensor).

use tapegrad::nn::{
    Embedding, LayerNorm, Linear, Mlp, Module, Param, ParamError, Params, RmsNorm, StateDict, View,
    init,
};
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
        let mut draw = init::gauss(&mut rng, 0.0, 0.5);
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
    let bound = params.bind(&g);
    let p = bound.view();
    assert_eq!(layer.forward_f64(&p, &[1.0, 1.0])[0].value(), 1e16);
    let x = g.vars(&[1.0, 1.0]);
    assert_eq!(layer.forward(&p, &x)[0].value(), 1e16);
}

#[test]
fn data_enters_a_dot_as_constants_with_the_same_numbers() {
    let mut params = Params::new();
    let mut rng = PyRandom::seed(3);
    let layer = Linear::new(
        &mut params,
        "fc",
        3,
        2,
        &mut init::uniform(&mut rng, -1.0, 1.0),
    );
    params[layer.bias().unwrap()].copy_from_slice(&[0.25, -0.5]);
    let data = [0.7, -1.1, 2.3];
    let g = Graph::new();
    // Data as f64: one dot node per output, nothing for the data.
    let bound = params.bind(&g);
    let before = g.len();
    let fused = layer.forward_f64(&bound.view(), &data);
    assert_eq!(g.len(), before + 2);
    let fused_grads = (fused[0] * 2.0 + fused[1]).backward();
    let fused_grads: Vec<f64> = bound
        .view()
        .as_slice()
        .iter()
        .map(|&w| fused_grads[w])
        .collect();
    // The same data lifted to constant nodes, through the Var-with-Var path.
    let lifted: Vec<Var> = data.iter().map(|&x| g.constant(x)).collect();
    let both = layer.forward(&bound.view(), &lifted);
    let both_grads = (both[0] * 2.0 + both[1]).backward();
    let both_grads: Vec<f64> = bound
        .view()
        .as_slice()
        .iter()
        .map(|&w| both_grads[w])
        .collect();
    assert_eq!(
        fused.iter().map(|y| y.value()).collect::<Vec<_>>(),
        both.iter().map(|y| y.value()).collect::<Vec<_>>()
    );
    assert_eq!(fused_grads, both_grads);
    // dW[o][i] = (2, 1)[o] x[i]; db = (2, 1).
    assert_eq!(fused_grads, [1.4, -2.2, 4.6, 0.7, -1.1, 2.3, 2.0, 1.0]);
}

#[test]
fn mlp_draws_micrograds_weights_in_micrograds_order() {
    let mut params = Params::new();
    let mut rng = PyRandom::seed(1337);
    let mlp = Mlp::new(
        &mut params,
        "mlp",
        &[2, 16, 16, 1],
        &mut init::uniform(&mut rng, -1.0, 1.0),
    );
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
#[should_panic(expected = "a Param of another parameter store")]
fn a_param_of_another_store_is_refused() {
    let mut a = Params::new();
    let mut b = Params::new();
    a.zeros("w", &[1]);
    let w = b.zeros("w", &[1]);
    let _ = &a[w];
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
    assert_eq!(
        total.add_assign(&other.zero_grads()),
        Err(ParamError::ForeignGradients)
    );
}

fn param_names(params: &Params) -> Vec<(String, Param)> {
    params
        .params()
        .map(|p| (params.name(p).to_owned(), p))
        .collect()
}

#[test]
fn safetensors_round_trip_keeps_every_bit() {
    let mut params = Params::new();
    let specials = vec![
        0.1,
        -0.0,
        f64::MIN_POSITIVE / 4.0,
        f64::INFINITY,
        f64::NAN,
        -1e300,
    ];
    params.add("odd", &[2, 3], specials.clone());
    params.add("scalar", &[], vec![42.0]);
    params.add("empty", &[0, 4], vec![]);
    let bytes = params.state_dict().to_safetensors();
    let mut back = Params::new();
    back.zeros("odd", &[2, 3]);
    back.zeros("scalar", &[]);
    back.zeros("empty", &[0, 4]);
    back.load_state_dict(&StateDict::from_safetensors(&bytes).unwrap())
        .unwrap();
    let bits = |p: &Params| p.as_slice().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&params));
    assert_eq!(param_names(&back).len(), 3);
    // Read independently: the 8-byte length, then a JSON header with F64 entries.
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    assert_eq!(header["odd"]["dtype"], "F64");
    assert_eq!(header["odd"]["shape"], serde_json::json!([2, 3]));
    assert_eq!(
        header["scalar"]["data_offsets"],
        serde_json::json!([48, 56])
    );
    let data = &bytes[8 + len..];
    assert_eq!(f64::from_le_bytes(data[48..56].try_into().unwrap()), 42.0);
}

/// Written by CPython 3.11 with `struct` and `json` (not by tapegrad): a `__metadata__`
/// entry, header keys in its own order, `fc.weight` stored before `fc.bias`, no padding.
///
/// ```python
/// tensors = {"fc.bias": ([2], [0.5, -0.25]),
///            "fc.weight": ([2, 3], [1.0, 2.0, 3.0, -4.0, 1e-300, 0.1])}
/// data = b""; header = {"__metadata__": {"format": "pt"}}
/// for name in ["fc.weight", "fc.bias"]:
///     shape, vals = tensors[name]
///     b = struct.pack("<%dd" % len(vals), *vals)
///     header[name] = {"dtype": "F64", "shape": shape,
///                     "data_offsets": [len(data), len(data) + len(b)]}
///     data += b
/// h = json.dumps(header).encode()
/// blob = struct.pack("<Q", len(h)) + h + data
/// ```
const FROM_PYTHON: &[u8] = &[
    0xb0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7b, 0x22, 0x5f, 0x5f, 0x6d, 0x65, 0x74, 0x61,
    0x64, 0x61, 0x74, 0x61, 0x5f, 0x5f, 0x22, 0x3a, 0x20, 0x7b, 0x22, 0x66, 0x6f, 0x72, 0x6d, 0x61,
    0x74, 0x22, 0x3a, 0x20, 0x22, 0x70, 0x74, 0x22, 0x7d, 0x2c, 0x20, 0x22, 0x66, 0x63, 0x2e, 0x77,
    0x65, 0x69, 0x67, 0x68, 0x74, 0x22, 0x3a, 0x20, 0x7b, 0x22, 0x64, 0x74, 0x79, 0x70, 0x65, 0x22,
    0x3a, 0x20, 0x22, 0x46, 0x36, 0x34, 0x22, 0x2c, 0x20, 0x22, 0x73, 0x68, 0x61, 0x70, 0x65, 0x22,
    0x3a, 0x20, 0x5b, 0x32, 0x2c, 0x20, 0x33, 0x5d, 0x2c, 0x20, 0x22, 0x64, 0x61, 0x74, 0x61, 0x5f,
    0x6f, 0x66, 0x66, 0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x20, 0x5b, 0x30, 0x2c, 0x20, 0x34, 0x38,
    0x5d, 0x7d, 0x2c, 0x20, 0x22, 0x66, 0x63, 0x2e, 0x62, 0x69, 0x61, 0x73, 0x22, 0x3a, 0x20, 0x7b,
    0x22, 0x64, 0x74, 0x79, 0x70, 0x65, 0x22, 0x3a, 0x20, 0x22, 0x46, 0x36, 0x34, 0x22, 0x2c, 0x20,
    0x22, 0x73, 0x68, 0x61, 0x70, 0x65, 0x22, 0x3a, 0x20, 0x5b, 0x32, 0x5d, 0x2c, 0x20, 0x22, 0x64,
    0x61, 0x74, 0x61, 0x5f, 0x6f, 0x66, 0x66, 0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x20, 0x5b, 0x34,
    0x38, 0x2c, 0x20, 0x36, 0x34, 0x5d, 0x7d, 0x7d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0x3f,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x40,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0xc0, 0x59, 0xf3, 0xf8, 0xc2, 0x1f, 0x6e, 0xa5, 0x01,
    0x9a, 0x99, 0x99, 0x99, 0x99, 0x99, 0xb9, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x3f,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xd0, 0xbf,
];
const F32_FILE: &[u8] = &[
    0x3d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7b, 0x22, 0x77, 0x22, 0x3a, 0x20, 0x7b, 0x22,
    0x64, 0x74, 0x79, 0x70, 0x65, 0x22, 0x3a, 0x20, 0x22, 0x46, 0x33, 0x32, 0x22, 0x2c, 0x20, 0x22,
    0x73, 0x68, 0x61, 0x70, 0x65, 0x22, 0x3a, 0x20, 0x5b, 0x31, 0x5d, 0x2c, 0x20, 0x22, 0x64, 0x61,
    0x74, 0x61, 0x5f, 0x6f, 0x66, 0x66, 0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x20, 0x5b, 0x30, 0x2c,
    0x20, 0x34, 0x5d, 0x7d, 0x7d, 0x00, 0x00, 0xc0, 0x3f,
];

/// `json.dumps({"w": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}})` and 3 as
/// `struct.pack("<q", 3)`, framed as safetensors by CPython 3.11.
const I64_FILE: &[u8] = &[
    0x3d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7b, 0x22, 0x77, 0x22, 0x3a, 0x20, 0x7b, 0x22,
    0x64, 0x74, 0x79, 0x70, 0x65, 0x22, 0x3a, 0x20, 0x22, 0x49, 0x36, 0x34, 0x22, 0x2c, 0x20, 0x22,
    0x73, 0x68, 0x61, 0x70, 0x65, 0x22, 0x3a, 0x20, 0x5b, 0x31, 0x5d, 0x2c, 0x20, 0x22, 0x64, 0x61,
    0x74, 0x61, 0x5f, 0x6f, 0x66, 0x66, 0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x20, 0x5b, 0x30, 0x2c,
    0x20, 0x38, 0x5d, 0x7d, 0x7d, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// An `F32` and a `BF16` tensor, as PyTorch or JAX would save a model in single or brain
/// precision: written by CPython 3.11 (`struct.pack("<f", x)` for `w`; the upper two bytes
/// of each `f32` for `b`), header `{"w": F32 [2, 2], "b": BF16 [2]}`.
const NARROW_FILE: &[u8] = &[
    113, 0, 0, 0, 0, 0, 0, 0, 123, 34, 119, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34, 58, 34,
    70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58, 91, 50, 44, 50, 93, 44, 34, 100, 97,
    116, 97, 95, 111, 102, 102, 115, 101, 116, 115, 34, 58, 91, 48, 44, 49, 54, 93, 125, 44, 34,
    98, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34, 58, 34, 66, 70, 49, 54, 34, 44, 34, 115, 104,
    97, 112, 101, 34, 58, 91, 50, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115, 101, 116,
    115, 34, 58, 91, 49, 54, 44, 50, 48, 93, 125, 125, 0, 0, 192, 63, 0, 0, 16, 192, 89, 217, 0,
    51, 0, 224, 127, 71, 32, 62, 64, 192,
];

/// Narrower floats widen exactly: every `f32` and `bf16` is an `f64`.
#[test]
fn loads_f32_and_bf16_tensors_exactly() {
    let sd = StateDict::from_safetensors(NARROW_FILE).unwrap();
    let w = sd.get("w").unwrap();
    assert_eq!(w.shape, vec![2, 2]);
    // CPython: [struct.unpack("<f", struct.pack("<f", x))[0] for x in (1.5, -2.25, 3e-8, 65504)]
    assert_eq!(w.data, vec![1.5, -2.25, 2.999999892949745e-08, 65504.0]);
    assert_eq!(sd.get("b").unwrap().data, vec![0.15625, -3.0]);
    // And a one-entry F32 file: 1.5.
    assert_eq!(
        StateDict::from_safetensors(F32_FILE)
            .unwrap()
            .get("w")
            .unwrap()
            .data,
        vec![1.5]
    );
}

#[test]
fn loads_a_safetensors_file_written_by_python() {
    let sd = StateDict::from_safetensors(FROM_PYTHON).unwrap();
    let names: Vec<&str> = sd.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["fc.weight", "fc.bias"]); // the order of the data
    let mut params = Params::new();
    let layer = Linear::new(&mut params, "fc", 3, 2, &mut || 0.0);
    params.load_state_dict(&sd).unwrap();
    assert_eq!(&params[layer.weight()], &[1.0, 2.0, 3.0, -4.0, 1e-300, 0.1]);
    assert_eq!(&params[layer.bias().unwrap()], &[0.5, -0.25]);
    // y = b + W x for x = (1, 1, 1).
    assert_eq!(
        layer.forward_f64(&params.view(), &[1.0, 1.0, 1.0]),
        vec![6.5, -4.25 + 1e-300 + 0.1]
    );
}

#[test]
fn load_errors_name_the_tensor() {
    let sd = StateDict::from_safetensors(FROM_PYTHON).unwrap();
    // A store with a tensor the file lacks.
    let mut params = Params::new();
    Linear::new(&mut params, "fc", 3, 2, &mut || 0.0);
    params.zeros("extra", &[1]);
    let err = params.load_state_dict(&sd).unwrap_err();
    assert_eq!(err.to_string(), "tapegrad::nn: tensor \"extra\" is missing");
    // A store whose layer has another shape.
    let mut params = Params::new();
    Linear::new(&mut params, "fc", 2, 3, &mut || 0.0);
    let err = params.load_state_dict(&sd).unwrap_err();
    assert_eq!(
        err,
        ParamError::Shape {
            name: "fc.weight".into(),
            expected: vec![3, 2],
            found: vec![2, 3]
        }
    );
    assert!(
        params.as_slice().iter().all(|&x| x == 0.0),
        "nothing was loaded"
    );
    // A store without one of the file's tensors.
    let mut params = Params::new();
    Linear::without_bias(&mut params, "fc", 3, 2, &mut || 0.0);
    assert_eq!(
        params.load_state_dict(&sd),
        Err(ParamError::Unexpected {
            name: "fc.bias".into()
        })
    );
    // A tensor of a dtype with no exact f64 reading (CPython: {"w": {"dtype": "I64", ...}}
    // and 3 as "<q").
    let err = StateDict::from_safetensors(I64_FILE).unwrap_err();
    assert_eq!(
        err,
        ParamError::Dtype {
            name: "w".into(),
            found: "I64".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "tapegrad::nn: tensor \"w\" has dtype I64, expected F64, F32 or BF16"
    );
}

#[test]
fn malformed_files_are_refused() {
    let mut good = StateDict::new();
    good.push("a", &[2], vec![1.0, 2.0]);
    good.push("b", &[1], vec![3.0]);
    let bytes = good.to_safetensors();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // Truncated data, a header longer than the file, a header that is not JSON.
    assert!(StateDict::from_safetensors(&bytes[..bytes.len() - 8]).is_err());
    let mut long = bytes.clone();
    long[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    assert!(StateDict::from_safetensors(&long).is_err());
    let mut garbled = bytes.clone();
    garbled[8] = b'[';
    assert!(StateDict::from_safetensors(&garbled).is_err());
    // Offsets that overlap: b's data starting inside a's.
    let header = String::from_utf8(bytes[8..8 + len].to_vec()).unwrap();
    let overlapping = header.replace("[16,24]", "[8,16]");
    assert_ne!(overlapping, header);
    let mut bad = (overlapping.len() as u64).to_le_bytes().to_vec();
    bad.extend_from_slice(overlapping.as_bytes());
    bad.extend_from_slice(&bytes[8 + len..]);
    let err = StateDict::from_safetensors(&bad).unwrap_err();
    assert!(err.to_string().contains("tile the data"), "{err}");
}

#[test]
fn json_state_dicts_round_trip_and_refuse_non_finite_values() {
    let mut params = Params::new();
    params.add("w", &[2], vec![0.1 + 0.2, -3e-310]);
    let text = params.state_dict().to_json().unwrap();
    let back = StateDict::from_json(&text).unwrap();
    assert_eq!(back, params.state_dict());
    params.add("bad", &[1], vec![f64::NAN]);
    let err = params.state_dict().to_json().unwrap_err();
    assert!(err.to_string().contains("\"bad\""), "{err}");
}

/// A store bound once ([`Params::binding`]) gives, step after step, the same losses and
/// gradients bit for bit as binding it every step, keeps one graph of constant size, and
/// refuses another store or inputs released under it.
#[test]
fn a_binding_gives_every_steps_bits_and_refuses_misuse() {
    let mut rng = PyRandom::seed(3);
    let mut a = Params::new();
    let mlp = Mlp::new(
        &mut a,
        "mlp",
        &[3, 5, 1],
        &mut init::uniform(&mut rng, -1.0, 1.0),
    );
    let mut b = a.clone();
    fn loss<'g>(mlp: &Mlp, p: &View<'_, Var<'g>>, k: usize) -> Var<'g> {
        let x = [k as f64 * 0.3, -0.5, 1.0 / (1.0 + k as f64)];
        (mlp.forward_f64(p, &x)[0] - 0.25).powi(2)
    }
    let (ga, gb) = (Graph::new(), Graph::new());
    let start = ga.mark();
    let mut binding = a.binding(&ga);
    let after_binding = ga.len();
    for k in 0..20 {
        let (la, da) = binding.value_and_grad(&a, |p| loss(&mlp, p, k)).unwrap();
        let (lb, db) = b.value_and_grad(&gb, |p| loss(&mlp, p, k)).unwrap();
        assert_eq!(la.to_bits(), lb.to_bits(), "step {k}");
        let bits =
            |g: &tapegrad::nn::Grads| g.as_slice().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&da), bits(&db), "step {k}");
        // Plain SGD on both stores, then the binding must see the new values.
        let rate = 0.1;
        a.update(&da, |v, g| {
            v.iter_mut().zip(g).for_each(|(v, g)| *v -= rate * g)
        })
        .unwrap();
        b.update(&db, |v, g| {
            v.iter_mut().zip(g).for_each(|(v, g)| *v -= rate * g)
        })
        .unwrap();
        assert_eq!(ga.len(), after_binding, "the step's nodes were released");
    }
    // Another store (a clone has another identity) is refused.
    let c = a.clone();
    assert_eq!(
        binding
            .value_and_grad(&c, |p| loss(&mlp, p, 0))
            .unwrap_err(),
        ParamError::ForeignStore
    );
    // Inputs released under the binding are an error, not stale numbers, whether or not
    // the store changed since the last step.
    ga.release(start);
    assert_eq!(
        binding
            .value_and_grad(&a, |p| loss(&mlp, p, 0))
            .unwrap_err(),
        ParamError::Engine(Error::Released)
    );
    a[mlp.layers()[0].weight()][0] += 1.0;
    assert_eq!(
        binding
            .value_and_grad(&a, |p| loss(&mlp, p, 0))
            .unwrap_err(),
        ParamError::Engine(Error::Released)
    );
}
