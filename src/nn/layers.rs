//! The modules: [`Linear`], [`Mlp`], [`Embedding`], [`LayerNorm`], [`RmsNorm`]. Each holds
//! [`Param`] ids and a forward pass written once over [`Scalar`]. Uses the store
//! (`params.rs`) and `linalg`; nothing in the crate below `nn` may use it.

use crate::engine::Scalar;
use crate::linalg::{Matrix, Pairing};
use crate::nn::Module;
use crate::nn::params::{Param, Params, View};
use crate::nn::safetensors::StateDict;

/// A module's name, for its errors: its tensor's name without the last part
/// (`"fc.weight"` -> `"fc"`).
fn module_name<'a, T: Copy>(p: &View<'a, T>, tensor: Param) -> &'a str {
    let name = p.name(tensor);
    name.rsplit_once('.').map_or(name, |(module, _)| module)
}

/// A fully connected layer: `y[o] = b[o] + sum_i W[o][i] x[i]`, with `W` stored
/// `outputs x inputs` (PyTorch's layout, names `{name}.weight` and `{name}.bias`).
///
/// Each output is one fused dot node on a tape, summed as micrograd's neuron sums:
/// starting from the bias, then adding `W[o][i] x[i]` left to right (so the rounding is
/// micrograd's too).
///
/// # Examples
///
/// ```
/// use tapegrad::{nn::{Linear, Params}, Graph};
///
/// let mut params = Params::new();
/// let layer = Linear::new(&mut params, "fc", 2, 1, &mut || 0.5);
/// params[layer.bias().unwrap()][0] = 1.0;
/// // Plain evaluation on data: 1 + 0.5 * 2 + 0.5 * 4.
/// assert_eq!(layer.forward_f64(&params.view(), &[2.0, 4.0]), vec![4.0]);
/// // Recorded, with the same data: dy/dW = x, dy/db = 1.
/// let g = Graph::new();
/// let (y, grads) = params
///     .value_and_grad(&g, |p| layer.forward_f64(p, &[2.0, 4.0])[0])
///     .unwrap();
/// assert_eq!(y, 4.0);
/// assert_eq!(&grads[layer.weight()], &[2.0, 4.0]);
/// assert_eq!(&grads[layer.bias().unwrap()], &[1.0]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    weight: Param,
    bias: Option<Param>,
    inputs: usize,
    outputs: usize,
}

impl Linear {
    /// A layer from `inputs` to `outputs`: the weight drawn from `init` row by row (output
    /// by output, as micrograd draws neuron by neuron), the bias zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Linear, Params};
    /// let mut params = Params::new();
    /// let layer = Linear::new(&mut params, "fc", 3, 2, &mut || 1.0);
    /// assert_eq!(params.name(layer.weight()), "fc.weight");
    /// assert_eq!(params.shape(layer.weight()), &[2, 3]);
    /// assert_eq!(&params[layer.bias().unwrap()], &[0.0, 0.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// If the store already has a tensor of that name.
    #[track_caller]
    pub fn new(
        params: &mut Params,
        name: &str,
        inputs: usize,
        outputs: usize,
        init: &mut dyn FnMut() -> f64,
    ) -> Self {
        let mut layer = Linear::without_bias(params, name, inputs, outputs, init);
        layer.bias = Some(params.zeros(format!("{name}.bias"), &[outputs]));
        layer
    }

    /// A layer with no bias: `y = W x`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Linear, Params};
    /// let mut params = Params::new();
    /// let layer = Linear::without_bias(&mut params, "proj", 2, 2, &mut || 1.0);
    /// assert_eq!(layer.bias(), None);
    /// assert_eq!(layer.forward(&params.view(), &[1.0, 2.0]), vec![3.0, 3.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// If the store already has a tensor of that name.
    #[track_caller]
    pub fn without_bias(
        params: &mut Params,
        name: &str,
        inputs: usize,
        outputs: usize,
        init: &mut dyn FnMut() -> f64,
    ) -> Self {
        let weight = params.init(format!("{name}.weight"), &[outputs, inputs], init);
        Linear {
            weight,
            bias: None,
            inputs,
            outputs,
        }
    }

    /// The weight, `outputs x inputs`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Linear, Params};
    /// let mut params = Params::new();
    /// let layer = Linear::new(&mut params, "fc", 3, 2, &mut || 1.0);
    /// assert_eq!(params[layer.weight()].len(), 6);
    /// ```
    pub fn weight(&self) -> Param {
        self.weight
    }

    /// The bias (`outputs` entries), if it has one.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Linear, Params};
    /// let mut params = Params::new();
    /// let layer = Linear::new(&mut params, "fc", 3, 2, &mut || 1.0);
    /// assert_eq!(params.shape(layer.bias().unwrap()), &[2]);
    /// ```
    pub fn bias(&self) -> Option<Param> {
        self.bias
    }

    /// The number of inputs.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Linear, Params};
    /// let layer = Linear::new(&mut Params::new(), "fc", 3, 2, &mut || 1.0);
    /// assert_eq!((layer.inputs(), layer.outputs()), (3, 2));
    /// ```
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// The number of outputs.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Linear, Params};
    /// let layer = Linear::new(&mut Params::new(), "fc", 3, 2, &mut || 1.0);
    /// assert_eq!(layer.outputs(), 2);
    /// ```
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// The layer on activations of the model's own scalar type.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::{Linear, Params}, Graph};
    /// let mut params = Params::new();
    /// let layer = Linear::without_bias(&mut params, "fc", 2, 1, &mut || 3.0);
    /// assert_eq!(layer.forward(&params.view(), &[1.0, 2.0]), vec![9.0]);
    /// // Recorded: activations of the tape, here inputs made before the step.
    /// let g = Graph::new();
    /// let x = g.vars(&[1.0, 2.0]);
    /// let (y, dy_dx1, grads) = params
    ///     .value_and_grad_aux(&g, |p| {
    ///         let y = layer.forward(p, &x)[0];
    ///         (y, y.backward()[x[1]])
    ///     })
    ///     .unwrap();
    /// assert_eq!((y, dy_dx1, &grads[layer.weight()]), (9.0, 3.0, &[1.0, 2.0][..]));
    /// ```
    ///
    /// # Panics
    ///
    /// If `x.len()` is not [`Linear::inputs`] (naming the layer), or `p` is not a view of
    /// this layer's store.
    #[track_caller]
    pub fn forward<T: Scalar>(&self, p: &View<'_, T>, x: &[T]) -> Vec<T> {
        self.forward_rows(p, Matrix::new(x, 1, x.len()))
    }

    /// The layer on every row of `x` (`rows x inputs`), row-major `rows x outputs`: one
    /// matrix product on the tape, every handle looked up once.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{linalg::Matrix, nn::{Linear, Params}};
    /// let mut params = Params::new();
    /// let layer = Linear::new(&mut params, "fc", 2, 1, &mut || 1.0);
    /// let x = [1.0, 2.0, 3.0, 4.0];
    /// assert_eq!(layer.forward_rows(&params.view(), Matrix::new(&x, 2, 2)), vec![3.0, 7.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `x.cols()` is not [`Linear::inputs`] (naming the layer), or `p` is not a view of
    /// this layer's store.
    #[track_caller]
    pub fn forward_rows<T: Scalar>(&self, p: &View<'_, T>, x: Matrix<'_, T>) -> Vec<T> {
        self.check_inputs(p, x.cols());
        let w = p.matrix(self.weight);
        let Some(bias) = self.bias else {
            return T::dots(x, w, Pairing::Rows);
        };
        let b = p.get(bias);
        if x.rows() == 0 {
            return Vec::new();
        }
        // The bias first in every dot: row o of W becomes [b[o], W[o]...], every input
        // row [1, x...], so each output sums from the bias as micrograd's neuron does.
        let one = b[0].lift(1.0);
        let n = self.inputs + 1;
        let mut wb = Vec::with_capacity(self.outputs * n);
        for (o, &bo) in b.iter().enumerate() {
            wb.push(bo);
            wb.extend_from_slice(w.row(o));
        }
        let mut xb = Vec::with_capacity(x.rows() * n);
        for r in 0..x.rows() {
            xb.push(one);
            xb.extend_from_slice(x.row(r));
        }
        T::dots(
            Matrix::new(&xb, x.rows(), n),
            Matrix::new(&wb, self.outputs, n),
            Pairing::Rows,
        )
    }

    /// The layer on plain data (`f64`, no gradient) with weights of the model's scalar
    /// type: on a tape each output is one fused dot node whose data operands are
    /// constants, no node per input.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::{Linear, Params}, Graph};
    /// let mut params = Params::new();
    /// let layer = Linear::new(&mut params, "fc", 2, 3, &mut || 1.0);
    /// let g = Graph::new();
    /// let (y2, nodes, _) = params
    ///     .value_and_grad_aux(&g, |p| {
    ///         let before = g.len();
    ///         let y = layer.forward_f64(p, &[1.0, 2.0]);
    ///         (y[2], g.len() - before)
    ///     })
    ///     .unwrap();
    /// assert_eq!((y2, nodes), (3.0, 3)); // one node per output
    /// ```
    ///
    /// # Panics
    ///
    /// If `x.len()` is not [`Linear::inputs`] (naming the layer), or `p` is not a view of
    /// this layer's store.
    #[track_caller]
    pub fn forward_f64<T: Scalar>(&self, p: &View<'_, T>, x: &[f64]) -> Vec<T> {
        self.check_inputs(p, x.len());
        let w = p.matrix(self.weight);
        let Some(bias) = self.bias else {
            return (0..self.outputs).map(|o| T::dot_f64(w.row(o), x)).collect();
        };
        let b = p.get(bias);
        let mut wb = Vec::with_capacity(self.inputs + 1);
        let mut xb = Vec::with_capacity(self.inputs + 1);
        xb.push(1.0);
        xb.extend_from_slice(x);
        (0..self.outputs)
            .map(|o| {
                wb.clear();
                wb.push(b[o]);
                wb.extend_from_slice(w.row(o));
                T::dot_f64(&wb, &xb)
            })
            .collect()
    }

    #[track_caller]
    fn check_inputs<T: Copy>(&self, p: &View<'_, T>, n: usize) {
        if n != self.inputs {
            panic!(
                "Linear {:?}: an input of {n} values for a layer of {} inputs ({} outputs)",
                module_name(p, self.weight),
                self.inputs,
                self.outputs
            );
        }
    }
}

impl Module for Linear {
    fn params(&self) -> Vec<Param> {
        std::iter::once(self.weight).chain(self.bias).collect()
    }
}

/// micrograd's `MLP`: [`Linear`] layers of the given sizes, ReLU after every layer but the
/// last (whose output is linear). Layer `i` is named `{name}.{i}` (PyTorch's
/// `Sequential` naming: `{name}.{i}.weight`, `{name}.{i}.bias`).
///
/// With micrograd's initialisation (weights from `random.uniform(-1, 1)`, drawn neuron by
/// neuron; biases zero) and its order of summation, it computes micrograd's numbers.
///
/// # Examples
///
/// ```
/// use tapegrad::{nn::{Mlp, Module, Params}, pyrandom::PyRandom};
///
/// let mut params = Params::new();
/// let mut rng = PyRandom::seed(1337);
/// let mlp = Mlp::new(&mut params, "mlp", &[2, 16, 16, 1], &mut || rng.uniform(-1.0, 1.0));
/// assert_eq!(mlp.num_params(&params), 337); // micrograd's demo: 337 parameters
/// let score = mlp.forward_f64(&params.view(), &[0.5, -0.5]);
/// assert_eq!(score.len(), 1);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    name: String,
    layers: Vec<Linear>,
}

impl Mlp {
    /// An MLP through `sizes` (`sizes[0]` inputs, then each layer's outputs).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Mlp, Params};
    /// let mut params = Params::new();
    /// let mlp = Mlp::new(&mut params, "mlp", &[3, 4, 2], &mut || 0.1);
    /// assert_eq!(mlp.layers().len(), 2);
    /// assert_eq!(params.shape(mlp.layers()[1].weight()), &[2, 4]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `sizes` has fewer than two entries, or a name is taken.
    #[track_caller]
    pub fn new(
        params: &mut Params,
        name: &str,
        sizes: &[usize],
        init: &mut dyn FnMut() -> f64,
    ) -> Self {
        assert!(
            sizes.len() >= 2,
            "Mlp::new: sizes {sizes:?} needs the inputs and at least one layer's outputs"
        );
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(i, io)| Linear::new(params, &format!("{name}.{i}"), io[0], io[1], init))
            .collect();
        Mlp {
            name: name.to_owned(),
            layers,
        }
    }

    /// Its layers.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Mlp, Params};
    /// let mlp = Mlp::new(&mut Params::new(), "mlp", &[2, 3], &mut || 0.1);
    /// assert_eq!(mlp.layers()[0].outputs(), 3);
    /// ```
    pub fn layers(&self) -> &[Linear] {
        &self.layers
    }

    /// The MLP on activations of the model's scalar type.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Mlp, Params};
    /// let mut params = Params::new();
    /// let mlp = Mlp::new(&mut params, "mlp", &[1, 1, 1], &mut || -1.0);
    /// // relu(-1 * 2) = 0, then -1 * 0.
    /// assert_eq!(mlp.forward(&params.view(), &[2.0]), vec![0.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `x` has the wrong length, or `p` is not a view of this MLP's store.
    #[track_caller]
    pub fn forward<T: Scalar>(&self, p: &View<'_, T>, x: &[T]) -> Vec<T> {
        let first = self.layers[0].forward(p, x);
        self.rest(p, first)
    }

    /// The MLP on plain data (`f64`, no gradient): the first layer's dots take the data
    /// as constants.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Mlp, Params};
    /// let mut params = Params::new();
    /// let mlp = Mlp::new(&mut params, "mlp", &[1, 1, 1], &mut || 2.0);
    /// assert_eq!(mlp.forward_f64(&params.view(), &[3.0]), vec![12.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`Mlp::forward`].
    #[track_caller]
    pub fn forward_f64<T: Scalar>(&self, p: &View<'_, T>, x: &[f64]) -> Vec<T> {
        let first = self.layers[0].forward_f64(p, x);
        self.rest(p, first)
    }

    /// ReLU after the first layer's output, then the other layers.
    fn rest<T: Scalar>(&self, p: &View<'_, T>, mut x: Vec<T>) -> Vec<T> {
        for layer in &self.layers[1..] {
            let hidden: Vec<T> = x.into_iter().map(Scalar::relu).collect();
            x = layer.forward(p, &hidden);
        }
        x
    }

    /// Every parameter in micrograd's `MLP.parameters()` order: layer by layer, neuron by
    /// neuron, its weights then its bias. (The store keeps PyTorch's order instead: each
    /// layer's weight matrix, then its bias vector.) Summing over these in this order
    /// reproduces micrograd's rounding, e.g. of its `sum(p*p for p in parameters)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Mlp, Params};
    /// let mut params = Params::new();
    /// let mut n = 0.0;
    /// let mlp = Mlp::new(&mut params, "mlp", &[2, 2], &mut || { n += 1.0; n });
    /// assert_eq!(mlp.neuron_params(&params.view()), vec![1.0, 2.0, 0.0, 3.0, 4.0, 0.0]);
    /// ```
    pub fn neuron_params<T: Copy>(&self, p: &View<'_, T>) -> Vec<T> {
        let mut out = Vec::new();
        for layer in &self.layers {
            let w = p.matrix(layer.weight);
            for o in 0..layer.outputs {
                out.extend_from_slice(w.row(o));
                out.extend(layer.bias.map(|b| p.get(b)[o]));
            }
        }
        out
    }
}

impl Mlp {
    /// `sd` with PyTorch's `nn.Sequential` names turned into this MLP's: the same network
    /// built as `nn.Sequential(nn.Linear, nn.ReLU, nn.Linear, ..., nn.Linear)` names its
    /// tensors `0.weight`, `0.bias`, `2.weight`, ... (a ReLU between two layers takes an
    /// index), and they become `{name}.0.weight`, `{name}.0.bias`, `{name}.1.weight`, ...
    /// Names that are not a layer's keep theirs (a strict load then reports them). For a
    /// `Sequential` held as an attribute (`net.0.weight`), take
    /// [`sd.prefixed("net.")`](StateDict::prefixed) first.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Mlp, Params, StateDict};
    /// let mut params = Params::new();
    /// let mlp = Mlp::new(&mut params, "mlp", &[2, 3, 1], &mut || 0.0);
    /// // PyTorch: nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).state_dict()
    /// let mut torch = StateDict::new();
    /// torch.push("0.weight", &[3, 2], vec![1.0; 6]);
    /// torch.push("0.bias", &[3], vec![0.5; 3]);
    /// torch.push("2.weight", &[1, 3], vec![2.0; 3]);
    /// torch.push("2.bias", &[1], vec![-1.0]);
    /// params.load_state_dict(&mlp.map_sequential(&torch)).unwrap();
    /// // relu(1 + 1 + 0.5) = 2.5 in each of 3 units, then 3 * 2 * 2.5 - 1.
    /// assert_eq!(mlp.forward_f64(&params.view(), &[1.0, 1.0]), vec![14.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// If two tensors get the same name (a state dict that has both `1.weight` and
    /// `mlp.0.weight`, say).
    #[track_caller]
    pub fn map_sequential(&self, sd: &StateDict) -> StateDict {
        sd.map_names(|name| {
            let layer = name.split_once('.').and_then(|(index, rest)| {
                let index: usize = index.parse().ok()?;
                let fits = index % 2 == 0 && index / 2 < self.layers.len();
                fits.then(|| format!("{}.{}.{rest}", self.name, index / 2))
            });
            layer.unwrap_or_else(|| name.to_owned())
        })
    }
}

impl Module for Mlp {
    fn params(&self) -> Vec<Param> {
        self.layers.iter().flat_map(Module::params).collect()
    }
}

/// A table of `count` learned vectors of `dim` entries (`{name}.weight`, `count x dim`),
/// read by id: a token or position embedding.
///
/// # Examples
///
/// ```
/// use tapegrad::nn::{Embedding, Params};
/// let mut params = Params::new();
/// let mut n = 0.0;
/// let emb = Embedding::new(&mut params, "wte", 3, 2, &mut || { n += 1.0; n });
/// assert_eq!(emb.forward(&params.view(), 1), &[3.0, 4.0]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding {
    weight: Param,
    count: usize,
    dim: usize,
}

impl Embedding {
    /// A table drawn from `init` row by row.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Embedding, Params};
    /// let mut params = Params::new();
    /// let emb = Embedding::new(&mut params, "wpe", 5, 4, &mut || 0.0);
    /// assert_eq!(params.shape(emb.weight()), &[5, 4]);
    /// ```
    ///
    /// # Panics
    ///
    /// If the store already has a tensor of that name.
    #[track_caller]
    pub fn new(
        params: &mut Params,
        name: &str,
        count: usize,
        dim: usize,
        init: &mut dyn FnMut() -> f64,
    ) -> Self {
        let weight = params.init(format!("{name}.weight"), &[count, dim], init);
        Embedding { weight, count, dim }
    }

    /// The table.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Embedding, Params};
    /// let mut params = Params::new();
    /// let emb = Embedding::new(&mut params, "e", 2, 2, &mut || 0.0);
    /// assert_eq!(params.name(emb.weight()), "e.weight");
    /// ```
    pub fn weight(&self) -> Param {
        self.weight
    }

    /// The vector of `id` (no node is recorded: it is the parameters themselves).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::{Embedding, Params}, Graph};
    /// let mut params = Params::new();
    /// let emb = Embedding::new(&mut params, "e", 2, 1, &mut || 5.0);
    /// let g = Graph::new();
    /// let (y, grads) = params.value_and_grad(&g, |p| emb.forward(p, 1)[0] * 2.0).unwrap();
    /// assert_eq!((y, &grads[emb.weight()]), (10.0, &[0.0, 2.0][..]));
    /// ```
    ///
    /// # Panics
    ///
    /// If `id >= count` (naming the table), or `p` is not a view of this table's store.
    #[track_caller]
    pub fn forward<'a, T: Copy>(&self, p: &View<'a, T>, id: usize) -> &'a [T] {
        if id >= self.count {
            panic!(
                "Embedding {:?}: id {id} of a table of {} vectors",
                module_name(p, self.weight),
                self.count
            );
        }
        &p.get(self.weight)[id * self.dim..(id + 1) * self.dim]
    }
}

impl Module for Embedding {
    fn params(&self) -> Vec<Param> {
        vec![self.weight]
    }
}

/// LayerNorm over one vector: `gamma (x - mean) / sqrt(var + eps) + beta`, population
/// variance; gamma (`{name}.weight`) starts at ones, beta (`{name}.bias`) at zeros.
///
/// # Examples
///
/// ```
/// use tapegrad::nn::{LayerNorm, Params};
/// let mut params = Params::new();
/// let ln = LayerNorm::new(&mut params, "ln", 2, 0.0);
/// assert_eq!(ln.forward(&params.view(), &[1.0, 3.0]), vec![-1.0, 1.0]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm {
    gamma: Param,
    beta: Param,
    dim: usize,
    eps: f64,
}

impl LayerNorm {
    /// LayerNorm over `dim` entries with `eps` added to the variance (PyTorch: `1e-5`).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{LayerNorm, Params};
    /// let mut params = Params::new();
    /// let ln = LayerNorm::new(&mut params, "ln", 3, 1e-5);
    /// assert_eq!(&params[ln.gamma()], &[1.0; 3]);
    /// assert_eq!(&params[ln.beta()], &[0.0; 3]);
    /// ```
    ///
    /// # Panics
    ///
    /// If the store already has a tensor of that name.
    #[track_caller]
    pub fn new(params: &mut Params, name: &str, dim: usize, eps: f64) -> Self {
        let gamma = params.full(format!("{name}.weight"), &[dim], 1.0);
        let beta = params.zeros(format!("{name}.bias"), &[dim]);
        LayerNorm {
            gamma,
            beta,
            dim,
            eps,
        }
    }

    /// The scale, gamma.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{LayerNorm, Params};
    /// let mut params = Params::new();
    /// let ln = LayerNorm::new(&mut params, "ln", 3, 1e-5);
    /// assert_eq!(params.name(ln.gamma()), "ln.weight");
    /// ```
    pub fn gamma(&self) -> Param {
        self.gamma
    }

    /// The shift, beta.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{LayerNorm, Params};
    /// let mut params = Params::new();
    /// let ln = LayerNorm::new(&mut params, "ln", 3, 1e-5);
    /// assert_eq!(params.name(ln.beta()), "ln.bias");
    /// ```
    pub fn beta(&self) -> Param {
        self.beta
    }

    /// `x` normalised: the mean as one sum node, the variance as one dot node of the
    /// centred values with themselves.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::{LayerNorm, Params}, Graph};
    /// let mut params = Params::new();
    /// let ln = LayerNorm::new(&mut params, "ln", 2, 0.0);
    /// let g = Graph::new();
    /// let x = g.vars(&[1.0, 3.0]);
    /// let (y1, dy1_dx1, _) = params
    ///     .value_and_grad_aux(&g, |p| {
    ///         let y = ln.forward(p, &x);
    ///         (y[1], y[1].backward()[x[1]])
    ///     })
    ///     .unwrap();
    /// // y1 = (x1 - x0) / |x1 - x0| is flat in x at this point: d y1 / d x1 = 0.
    /// assert_eq!((y1, dy1_dx1), (1.0, 0.0));
    /// ```
    ///
    /// # Panics
    ///
    /// If `x.len()` is not the layer's width (naming the layer), or `p` is not a view of
    /// its store.
    #[track_caller]
    pub fn forward<T: Scalar>(&self, p: &View<'_, T>, x: &[T]) -> Vec<T> {
        if x.len() != self.dim {
            panic!(
                "LayerNorm {:?}: an input of {} values for a width of {}",
                module_name(p, self.gamma),
                x.len(),
                self.dim
            );
        }
        LayerNorm::normalize(x, p.get(self.gamma), p.get(self.beta), self.eps)
    }

    /// LayerNorm's arithmetic on slices: `gamma (x - mean) / sqrt(var + eps) + beta` with
    /// the population variance; the mean is one sum node, the variance one dot node of the
    /// centred values with themselves. ([`LayerNorm::forward`] is this with its own gamma
    /// and beta; a model that keeps them elsewhere calls it directly.)
    ///
    /// # Examples
    ///
    /// ```
    /// let y = tapegrad::nn::LayerNorm::normalize(&[1.0, 3.0], &[2.0, 2.0], &[0.5, 0.5], 0.0);
    /// assert_eq!(y, vec![-1.5, 2.5]);
    /// ```
    ///
    /// # Panics
    ///
    /// For `Var`, if `x` is empty (its sum has no graph) or the handles mix graphs.
    pub fn normalize<T: Scalar>(x: &[T], gamma: &[T], beta: &[T], eps: f64) -> Vec<T> {
        let n = x.len() as f64;
        let mean = T::sum(x) / n;
        let centred: Vec<T> = x.iter().map(|&xi| xi - mean).collect();
        let inv_std = (T::dot(&centred, &centred) / n + eps).sqrt().recip();
        centred
            .iter()
            .zip(gamma.iter().zip(beta))
            .map(|(&c, (&g, &b))| c * inv_std * g + b)
            .collect()
    }
}

impl Module for LayerNorm {
    fn params(&self) -> Vec<Param> {
        vec![self.gamma, self.beta]
    }
}

/// RMSNorm: `x_i (mean(x^2) + eps)^(-1/2)`, times a learned gain (`{name}.weight`, ones
/// at the start) if it has one. Computed as microgpt computes it: `ms = (sum x_i^2) * (1/n)`
/// (one dot node), `scale = pow(ms + eps, -0.5)`.
///
/// # Examples
///
/// ```
/// use tapegrad::nn::{Params, RmsNorm};
/// let norm = RmsNorm::new(2, 0.0); // microgpt's: no gain, no parameters
/// let y = norm.forward(&Params::new().view(), &[3.0, 4.0]);
/// let rms = (12.5f64).powf(-0.5);
/// assert_eq!(y, vec![3.0 * rms, 4.0 * rms]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RmsNorm {
    gain: Option<Param>,
    dim: usize,
    eps: f64,
}

impl RmsNorm {
    /// RMSNorm with no learned gain (microgpt's), so no parameters.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Module, RmsNorm};
    /// assert!(RmsNorm::new(16, 1e-5).params().is_empty());
    /// ```
    pub fn new(dim: usize, eps: f64) -> Self {
        RmsNorm {
            gain: None,
            dim,
            eps,
        }
    }

    /// RMSNorm with a learned gain of `dim` entries, starting at ones.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Params, RmsNorm};
    /// let mut params = Params::new();
    /// let norm = RmsNorm::with_gain(&mut params, "norm", 2, 0.0);
    /// params[norm.gain().unwrap()][1] = 2.0;
    /// let y = norm.forward(&params.view(), &[1.0, 1.0]);
    /// assert_eq!(y, vec![1.0, 2.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// If the store already has a tensor of that name.
    #[track_caller]
    pub fn with_gain(params: &mut Params, name: &str, dim: usize, eps: f64) -> Self {
        let gain = Some(params.full(format!("{name}.weight"), &[dim], 1.0));
        RmsNorm { gain, dim, eps }
    }

    /// The gain, if it has one.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tapegrad::nn::RmsNorm::new(4, 1e-5).gain(), None);
    /// ```
    pub fn gain(&self) -> Option<Param> {
        self.gain
    }

    /// `x` normalised by its root mean square.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::{Params, RmsNorm}, Graph};
    /// let params = Params::new(); // no parameters, but the forward takes a view
    /// let g = Graph::new();
    /// let x = g.vars(&[3.0, 4.0]);
    /// let (y0, _) = params
    ///     .value_and_grad(&g, |p| RmsNorm::new(2, 0.0).forward(p, &x)[0])
    ///     .unwrap();
    /// approx::assert_relative_eq!(y0, 3.0 / 12.5f64.sqrt(), max_relative = 1e-15);
    /// ```
    ///
    /// # Panics
    ///
    /// If `x.len()` is not the norm's width (or is 0; naming the norm by its gain, if it
    /// has one), or `p` is not a view of its store.
    #[track_caller]
    pub fn forward<T: Scalar>(&self, p: &View<'_, T>, x: &[T]) -> Vec<T> {
        if x.len() != self.dim || x.is_empty() {
            let name = match self.gain {
                Some(gain) => format!(" {:?}", module_name(p, gain)),
                None => " (no gain)".to_owned(),
            };
            panic!(
                "RmsNorm{name}: an input of {} values for a width of {}",
                x.len(),
                self.dim
            );
        }
        let ms = T::dot(x, x) * (1.0 / x.len() as f64);
        let scale = (ms + self.eps).powf_f64(-0.5);
        match self.gain {
            None => x.iter().map(|&xi| xi * scale).collect(),
            Some(gain) => x
                .iter()
                .zip(p.get(gain))
                .map(|(&xi, &g)| xi * scale * g)
                .collect(),
        }
    }
}

impl Module for RmsNorm {
    fn params(&self) -> Vec<Param> {
        self.gain.into_iter().collect()
    }
}
