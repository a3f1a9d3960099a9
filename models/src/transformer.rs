//! The tutorial series' tiny GPT-style transformer, written once over [`Scalar`], and the
//! series' own optimizers ([`Sgd`], [`AdamW`]). A user of tapegrad's public API like any
//! other.
//!
//! One block, vocabulary 6, `d_model` 16, two heads of width 8, a feed-forward layer of
//! width 64, sequences of at most 5 tokens: 3,456 parameters. The forward pass follows the
//! series step by step (see [`logits`]). Because it is generic over [`Scalar`], the same
//! code evaluates the model plainly with `f64` and records it on a tape with
//! [`Var`](tapegrad::Var), whose backward then gives the true gradient of every parameter.
//!
//! ```
//! use tapegrad::Graph;
//! use tapegrad_models::transformer::{self, Params};
//!
//! let params = Params::series_init();
//! // The series prints an average loss of 1.8299 for its sentence.
//! let loss = transformer::loss(&params, &transformer::SENTENCE).mean;
//! assert_eq!(format!("{loss:.4}"), "1.8299");
//!
//! // The same forward pass on a tape, differentiated.
//! let g = Graph::new();
//! let vars = params.map(|x| g.var(x));
//! let mean = transformer::loss(&vars, &transformer::SENTENCE).mean;
//! assert_eq!(mean.value(), loss);
//! let grads = mean.backward();
//! assert_eq!(grads.wrt_all(vars.as_slice()).len(), transformer::N_PARAMS);
//! ```

mod optim;

use tapegrad::linalg::{Matrix, mat_mul, mat_mul_t};
use tapegrad::nn;
use tapegrad::pyrandom::PyRandom;
use tapegrad::{Scalar, Statement};

pub use optim::{AdamW, AdamWConfig, Sgd};

/// The vocabulary, by token id.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::transformer::VOCAB[3], "I");
/// ```
pub const VOCAB: [&str; VOCAB_SIZE] = ["<PAD>", "<BOS>", "<EOS>", "I", "like", "transformers"];
/// The number of tokens in the vocabulary.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::transformer::VOCAB.len(), tapegrad_models::transformer::VOCAB_SIZE);
/// ```
pub const VOCAB_SIZE: usize = 6;
/// The id of `<BOS>`, where generation starts.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::transformer::VOCAB[tapegrad_models::transformer::BOS], "<BOS>");
/// ```
pub const BOS: usize = 1;
/// The id of `<EOS>`, where generation stops.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::transformer::VOCAB[tapegrad_models::transformer::EOS], "<EOS>");
/// ```
pub const EOS: usize = 2;
/// The width of the residual stream.
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::{D_K, D_MODEL, N_HEADS};
/// assert_eq!(D_MODEL, N_HEADS * D_K);
/// ```
pub const D_MODEL: usize = 16;
/// The number of attention heads.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::transformer::N_HEADS, 2);
/// ```
pub const N_HEADS: usize = 2;
/// The width of one head (`D_MODEL / N_HEADS`).
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::transformer::D_K, 8);
/// ```
pub const D_K: usize = 8;
/// The width of the feed-forward layer.
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::{D_FF, D_MODEL};
/// assert_eq!(D_FF, 4 * D_MODEL);
/// ```
pub const D_FF: usize = 64;
/// The longest sequence (the number of learned positions).
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::{MAX_LEN, SENTENCE};
/// assert_eq!(SENTENCE.len(), MAX_LEN);
/// ```
pub const MAX_LEN: usize = 5;
/// The series' one sentence: `<BOS> I like transformers <EOS>`.
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::{decode, SENTENCE};
/// assert_eq!(decode(&SENTENCE), "<BOS> I like transformers <EOS>");
/// ```
pub const SENTENCE: [usize; MAX_LEN] = [1, 3, 4, 5, 2];
/// The `random.seed` the series draws its weights after.
///
/// # Examples
///
/// ```
/// use tapegrad::pyrandom::PyRandom;
/// use tapegrad_models::transformer::{Params, INIT_STD, SEED};
/// let first = PyRandom::seed(SEED).gauss(0.0, INIT_STD);
/// assert_eq!(Params::series_init().as_slice()[0], first);
/// ```
pub const SEED: u64 = 42;
/// The standard deviation of every drawn weight: `random.gauss(0, 0.1)`.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::transformer::INIT_STD, 0.1);
/// ```
pub const INIT_STD: f64 = 0.1;
/// LayerNorm's epsilon, added to the variance.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::transformer::LN_EPS, 1e-5);
/// ```
pub const LN_EPS: f64 = 1e-5;

/// How a parameter tensor starts.
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::{Init, LAYOUT};
/// assert_eq!(LAYOUT[0].init, Init::Normal);
/// assert_eq!(LAYOUT.last().unwrap().init, Init::Zeros); // beta
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// Drawn entry by entry from `random.gauss(0, INIT_STD)`, in layout order.
    Normal,
    /// All ones (LayerNorm's gamma).
    Ones,
    /// All zeros (LayerNorm's beta).
    Zeros,
}

/// One parameter tensor: its series name, its head (for the per-head projections), its
/// shape (one number for a vector, rows and columns for a matrix) and its start.
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::LAYOUT;
/// let w_q1 = &LAYOUT[3];
/// assert_eq!((w_q1.name, w_q1.head, w_q1.shape), ("W_Q", Some(1), &[16, 8][..]));
/// assert_eq!(w_q1.len(), 128);
/// assert_eq!(w_q1.label(), "W_Q[1]");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The series' name (`E_token`, `W_Q`, `b1`, ...).
    pub name: &'static str,
    /// Which head, for `W_Q`, `W_K` and `W_V`.
    pub head: Option<usize>,
    /// `[len]` for a vector, `[rows, cols]` for a row-major matrix.
    pub shape: &'static [usize],
    /// How it starts.
    pub init: Init,
}

impl TensorSpec {
    /// The number of scalars.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tapegrad_models::transformer::LAYOUT[0].len(), 6 * 16);
    /// ```
    pub const fn len(&self) -> usize {
        let mut n = 1;
        let mut i = 0;
        while i < self.shape.len() {
            n *= self.shape[i];
            i += 1;
        }
        n
    }

    /// Whether it holds no scalars (never, for the series' layout).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!tapegrad_models::transformer::LAYOUT[0].is_empty());
    /// ```
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name with the head, e.g. `W_K[0]`, or just the name.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tapegrad_models::transformer::LAYOUT[0].label(), "E_token");
    /// ```
    pub fn label(&self) -> String {
        match self.head {
            Some(h) => format!("{}[{h}]", self.name),
            None => self.name.to_owned(),
        }
    }
}

const fn spec(
    name: &'static str,
    head: Option<usize>,
    shape: &'static [usize],
    init: Init,
) -> TensorSpec {
    TensorSpec {
        name,
        head,
        shape,
        init,
    }
}

/// Every parameter tensor, in the order the series draws them (then gamma and beta, which
/// are not drawn). This is also the order of [`Params::as_slice`].
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::{LAYOUT, N_PARAMS};
/// assert_eq!(LAYOUT.iter().map(|t| t.len()).sum::<usize>(), N_PARAMS);
/// ```
pub const LAYOUT: [TensorSpec; 16] = [
    spec("E_token", None, &[VOCAB_SIZE, D_MODEL], Init::Normal),
    spec("E_pos", None, &[MAX_LEN, D_MODEL], Init::Normal),
    spec("W_Q", Some(0), &[D_MODEL, D_K], Init::Normal),
    spec("W_Q", Some(1), &[D_MODEL, D_K], Init::Normal),
    spec("W_K", Some(0), &[D_MODEL, D_K], Init::Normal),
    spec("W_K", Some(1), &[D_MODEL, D_K], Init::Normal),
    spec("W_V", Some(0), &[D_MODEL, D_K], Init::Normal),
    spec("W_V", Some(1), &[D_MODEL, D_K], Init::Normal),
    spec("W_O", None, &[D_MODEL, D_MODEL], Init::Normal),
    spec("W1", None, &[D_FF, D_MODEL], Init::Normal),
    spec("b1", None, &[D_FF], Init::Normal),
    spec("W2", None, &[D_MODEL, D_FF], Init::Normal),
    spec("b2", None, &[D_MODEL], Init::Normal),
    spec("W_lm", None, &[VOCAB_SIZE, D_MODEL], Init::Normal),
    spec("gamma", None, &[D_MODEL], Init::Ones),
    spec("beta", None, &[D_MODEL], Init::Zeros),
];

// Indices into LAYOUT (a head's tensor is the index plus the head).
const E_TOKEN: usize = 0;
const E_POS: usize = 1;
const W_Q: usize = 2;
const W_K: usize = 4;
const W_V: usize = 6;
const W_O: usize = 8;
const W1: usize = 9;
const B1: usize = 10;
const W2: usize = 11;
const B2: usize = 12;
const W_LM: usize = 13;
const GAMMA: usize = 14;
const BETA: usize = 15;

/// Where each tensor starts in the flat parameter vector (and, last, the total).
const OFFSETS: [usize; LAYOUT.len() + 1] = {
    let mut offsets = [0; LAYOUT.len() + 1];
    let mut i = 0;
    while i < LAYOUT.len() {
        offsets[i + 1] = offsets[i] + LAYOUT[i].len();
        i += 1;
    }
    offsets
};

/// The number of parameters: 3,456 (the series' text says "about 2,600").
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::transformer::N_PARAMS, 3456);
/// ```
pub const N_PARAMS: usize = OFFSETS[LAYOUT.len()];

const _: () = assert!(N_PARAMS == 3456 && D_K * N_HEADS == D_MODEL);

/// The model's parameters as one flat vector in [`LAYOUT`] order, of `f64` (plain
/// evaluation) or of [`Var`](tapegrad::Var) (recorded on a tape).
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::Params;
///
/// let p = Params::series_init();
/// // The series prints E_token row 1 (<BOS>) starting 0.0246, 0.1311, 0.0042, -0.0106.
/// let bos = &p.tensor("E_token", None)[16..20];
/// let shown: Vec<String> = bos.iter().map(|x| format!("{x:.4}")).collect();
/// assert_eq!(shown, ["0.0246", "0.1311", "0.0042", "-0.0106"]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Params<T> {
    values: Vec<T>,
}

impl Params<f64> {
    /// The series' initial weights: after Python's `random.seed(42)`, every drawn tensor
    /// takes `random.gauss(0, 0.1)` entry by entry in [`LAYOUT`] order, row by row;
    /// gamma is all ones and beta all zeros.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::transformer::Params;
    /// // The first draw is Python's first random.gauss(0, 0.1) after seed(42).
    /// assert_eq!(Params::series_init().as_slice()[0], -0.014409032957792837);
    /// ```
    pub fn series_init() -> Self {
        let mut rng = PyRandom::seed(SEED);
        let mut values = Vec::with_capacity(N_PARAMS);
        for spec in &LAYOUT {
            values.extend((0..spec.len()).map(|_| match spec.init {
                Init::Normal => rng.gauss(0.0, INIT_STD),
                Init::Ones => 1.0,
                Init::Zeros => 0.0,
            }));
        }
        Params { values }
    }

    /// The parameters as an [`nn::Params`] store, one tensor per [`LAYOUT`] entry named by
    /// its [`TensorSpec::label`] (`E_token`, `W_Q[0]`, ...), in layout order: to train it
    /// with [`optim::Optimizer`](tapegrad::optim::Optimizer) or save it as safetensors.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::transformer::Params;
    /// let store = Params::series_init().to_store();
    /// assert_eq!(store.num_tensors(), 16);
    /// let w_q1 = store.find("W_Q[1]").unwrap();
    /// assert_eq!(store.shape(w_q1), &[16, 8]);
    /// assert_eq!(store.as_slice(), Params::series_init().as_slice());
    /// ```
    pub fn to_store(&self) -> nn::Params {
        let mut store = nn::Params::new();
        for (spec, values) in self.tensors() {
            store.add(spec.label(), spec.shape, values.to_vec());
        }
        store
    }

    /// The parameters from a store with [`Params::to_store`]'s names and shapes (e.g. one
    /// loaded from a safetensors file), whatever the order of its tensors.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::transformer::Params;
    /// use tapegrad::nn::StateDict;
    /// let p = Params::series_init();
    /// let bytes = p.to_store().state_dict().to_safetensors();
    /// let mut store = Params::series_init().to_store();
    /// store.load_state_dict(&StateDict::from_safetensors(&bytes).unwrap()).unwrap();
    /// assert_eq!(Params::from_store(&store).unwrap(), p);
    /// ```
    ///
    /// # Errors
    ///
    /// [`nn::ParamError::Missing`] or [`nn::ParamError::Shape`] naming the tensor.
    pub fn from_store(store: &nn::Params) -> Result<Self, nn::ParamError> {
        let mut values = Vec::with_capacity(N_PARAMS);
        for spec in &LAYOUT {
            let name = spec.label();
            let t = store
                .find(&name)
                .ok_or_else(|| nn::ParamError::Missing { name: name.clone() })?;
            if store.shape(t) != spec.shape {
                return Err(nn::ParamError::Shape {
                    name,
                    expected: spec.shape.to_vec(),
                    found: store.shape(t).to_vec(),
                });
            }
            values.extend_from_slice(&store[t]);
        }
        Ok(Params { values })
    }
}

impl<T: Copy> Params<T> {
    /// Parameters from a flat vector in [`LAYOUT`] order.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::transformer::{Params, N_PARAMS};
    /// let p = Params::from_flat(vec![0.5; N_PARAMS]);
    /// assert_eq!(p.tensor("gamma", None), &[0.5; 16]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `values.len()` is not [`N_PARAMS`].
    #[track_caller]
    pub fn from_flat(values: Vec<T>) -> Self {
        assert_eq!(
            values.len(),
            N_PARAMS,
            "Params::from_flat: the model has {N_PARAMS} parameters, got {}",
            values.len()
        );
        Params { values }
    }

    /// All parameters, flat, in [`LAYOUT`] order.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::transformer::{Params, N_PARAMS};
    /// assert_eq!(Params::series_init().as_slice().len(), N_PARAMS);
    /// ```
    pub fn as_slice(&self) -> &[T] {
        &self.values
    }

    /// The same parameters with `f` applied to each, e.g. `|x| g.var(x)` to put them on a
    /// tape, or `|x| x.value()` to read them back.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::Graph;
    /// use tapegrad_models::transformer::Params;
    /// let g = Graph::new();
    /// let p = Params::series_init();
    /// let vars = p.map(|x| g.var(x));
    /// assert_eq!(vars.map(|v| v.value()), p);
    /// ```
    pub fn map<U>(&self, f: impl FnMut(T) -> U) -> Params<U> {
        Params {
            values: self.values.iter().copied().map(f).collect(),
        }
    }

    /// Each tensor's spec beside its entries, in [`LAYOUT`] order.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::transformer::Params;
    /// let p = Params::series_init();
    /// let (spec, gamma) = p.tensors().find(|(s, _)| s.name == "gamma").unwrap();
    /// assert_eq!((spec.shape, gamma), (&[16][..], &[1.0; 16][..]));
    /// ```
    pub fn tensors(&self) -> impl Iterator<Item = (&'static TensorSpec, &[T])> {
        LAYOUT
            .iter()
            .enumerate()
            .map(|(i, spec)| (spec, self.at(i)))
    }

    /// The entries of the tensor called `name` (and `head`, for `W_Q`, `W_K`, `W_V`),
    /// row by row.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::transformer::Params;
    /// let p = Params::series_init();
    /// assert_eq!(p.tensor("W_K", Some(1)).len(), 16 * 8);
    /// ```
    ///
    /// # Panics
    ///
    /// If there is no such tensor.
    #[track_caller]
    pub fn tensor(&self, name: &str, head: Option<usize>) -> &[T] {
        let i = LAYOUT
            .iter()
            .position(|s| s.name == name && s.head == head)
            .unwrap_or_else(|| {
                panic!("Params::tensor: no tensor {name:?} with head {head:?} in the model")
            });
        self.at(i)
    }

    fn at(&self, i: usize) -> &[T] {
        &self.values[OFFSETS[i]..OFFSETS[i + 1]]
    }

    fn matrix(&self, i: usize) -> Matrix<'_, T> {
        let &[rows, cols] = LAYOUT[i].shape else {
            unreachable!("{} is a vector", LAYOUT[i].name)
        };
        Matrix::new(self.at(i), rows, cols)
    }
}

/// Panics with a clear message unless `tokens` is a sequence the model can read.
#[track_caller]
fn check_tokens(tokens: &[usize], min_len: usize) {
    assert!(
        (min_len..=MAX_LEN).contains(&tokens.len()),
        "transformer: a sequence of {} tokens; the model reads {min_len} to {MAX_LEN}",
        tokens.len()
    );
    if let Some((i, t)) = tokens.iter().enumerate().find(|(_, t)| **t >= VOCAB_SIZE) {
        panic!("transformer: token {t} at position {i} is not in the vocabulary (ids 0 to 5)");
    }
}

/// The logits (one row of [`VOCAB_SIZE`] per position) for `tokens`, computed exactly as
/// the series does:
///
/// 1. `X[i] = E_token[tokens[i]] + E_pos[i]`;
/// 2. per head, `Q = X W_Q`, `K = X W_K`, `V = X W_V`, scores `Q K^T / sqrt(8)` with a causal
///    mask (position `i` sees `j <= i`), softmax per row less its maximum, head `=` weights
///    `V`;
/// 3. `multi_head = [head0 | head1] W_O^T`;
/// 4. `ffn = gelu(multi_head W1^T + b1) W2^T + b2` (GELU in its tanh form);
/// 5. LayerNorm of `multi_head + ffn` (population variance, eps `1e-5`, gamma, beta);
/// 6. `logits = LN W_lm^T`.
///
/// Every output of a matrix product is one fused dot node on a tape; each layer is one
/// product over all positions.
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::{self, Params};
/// let logits = transformer::logits(&Params::series_init(), &transformer::SENTENCE);
/// // The series' logit of <PAD> at position 0.
/// assert_eq!(format!("{:.4}", logits[0][0]), "0.3362");
/// ```
///
/// # Panics
///
/// If `tokens` is empty, longer than [`MAX_LEN`], or holds an id outside the vocabulary.
#[track_caller]
pub fn logits<T: Scalar>(p: &Params<T>, tokens: &[usize]) -> Vec<Vec<T>> {
    forward(p, tokens, false)
}

/// [`logits`] with the statements that have few inputs and many nodes preaccumulated
/// ([`Scalar::fused`]): each attention output `softmax(q k^T / sqrt(8)) v[:, d]` of a row,
/// each bias-plus-GELU, and LayerNorm's mean, inverse deviation and outputs. The values
/// are the same bit for bit (the same operations in the same order, on a scratch tape);
/// on a tape the graph has about 30% fewer nodes, and the gradients equal [`logits`]'s up
/// to the rounding of their sums. First order only: `Var::grad` through a fused node is
/// an error.
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::{self, Params};
/// let p = Params::series_init();
/// assert_eq!(
///     transformer::logits_fused(&p, &transformer::SENTENCE),
///     transformer::logits(&p, &transformer::SENTENCE)
/// );
/// ```
///
/// # Panics
///
/// As [`logits`].
#[track_caller]
pub fn logits_fused<T: Scalar>(p: &Params<T>, tokens: &[usize]) -> Vec<Vec<T>> {
    forward(p, tokens, true)
}

/// The forward pass of [`logits`], with the statements preaccumulated if `fuse`.
#[track_caller]
fn forward<T: Scalar>(p: &Params<T>, tokens: &[usize], fuse: bool) -> Vec<Vec<T>> {
    check_tokens(tokens, 1);
    let n = tokens.len();
    let (e_token, e_pos) = (p.matrix(E_TOKEN), p.matrix(E_POS));
    // Activations are row-major matrices with one row per position, so that each layer is
    // one matrix product for all positions (on a tape, every weight is looked up once).
    let x: Vec<T> = tokens
        .iter()
        .enumerate()
        .flat_map(|(i, &t)| add(e_token.row(t), e_pos.row(i)))
        .collect();
    let x = Matrix::new(&x, n, D_MODEL);

    let scale = (D_K as f64).sqrt();
    let mut concat: Vec<Vec<T>> = vec![Vec::with_capacity(D_MODEL); n];
    for h in 0..N_HEADS {
        let project = |w: usize| mat_mul(x, p.matrix(w + h));
        let (q, k, v) = (project(W_Q), project(W_K), project(W_V));
        let (q, k, v) = (
            Matrix::new(&q, n, D_K),
            Matrix::new(&k, n, D_K),
            Matrix::new(&v, n, D_K),
        );
        let mut v_column = Vec::with_capacity(n);
        let mut operands = Vec::with_capacity(2 * n);
        for (i, out) in concat.iter_mut().enumerate() {
            if fuse {
                // One node per output: the row's raw dots and column d of v.
                let dots: Vec<T> = (0..=i).map(|j| T::dot(q.row(i), k.row(j))).collect();
                for d in 0..D_K {
                    operands.clear();
                    operands.extend_from_slice(&dots);
                    operands.extend((0..=i).map(|j| v.get(j, d)));
                    out.push(T::fused(&AttentionOutput { scale }, &operands));
                }
                continue;
            }
            let scores: Vec<T> = (0..=i)
                .map(|j| T::dot(q.row(i), k.row(j)) / scale)
                .collect();
            let weights = softmax(&scores);
            for d in 0..D_K {
                v_column.clear();
                v_column.extend((0..=i).map(|j| v.get(j, d)));
                out.push(T::dot(&weights, &v_column));
            }
        }
    }

    let concat = concat.concat();
    let multi_head = mat_mul_t(Matrix::new(&concat, n, D_MODEL), p.matrix(W_O));
    let hidden = mat_mul_t(Matrix::new(&multi_head, n, D_MODEL), p.matrix(W1));
    let act: Vec<T> = if fuse {
        hidden
            .chunks_exact(D_FF)
            .flat_map(|row| row.iter().zip(p.at(B1)))
            .map(|(&h, &b)| T::fused(&BiasGelu, &[h, b]))
            .collect()
    } else {
        hidden
            .chunks_exact(D_FF)
            .flat_map(|row| add(row, p.at(B1)))
            .map(Scalar::gelu)
            .collect()
    };
    let ffn = mat_mul_t(Matrix::new(&act, n, D_FF), p.matrix(W2));
    let normed: Vec<T> = multi_head
        .chunks_exact(D_MODEL)
        .zip(ffn.chunks_exact(D_MODEL))
        .flat_map(|(multi_head, ffn)| {
            let residual = add(multi_head, &add(ffn, p.at(B2)));
            if fuse {
                layer_norm_fused(&residual, p.at(GAMMA), p.at(BETA))
            } else {
                nn::LayerNorm::normalize(&residual, p.at(GAMMA), p.at(BETA), LN_EPS)
            }
        })
        .collect();
    mat_mul_t(Matrix::new(&normed, n, D_MODEL), p.matrix(W_LM))
        .chunks_exact(VOCAB_SIZE)
        .map(<[T]>::to_vec)
        .collect()
}

/// Entrywise `a + b`.
fn add<T: Scalar>(a: &[T], b: &[T]) -> Vec<T> {
    a.iter().zip(b).map(|(&x, &y)| x + y).collect()
}

/// Softmax less the maximum, as the series computes it. The shift is the maximum's value,
/// a constant: softmax is invariant to it, so the gradient is unchanged, and no `e^x`
/// overflows. It decides no branch, so it is read untracked (a replay keeps it).
fn softmax<T: Scalar>(x: &[T]) -> Vec<T> {
    let max = x
        .iter()
        .map(Scalar::untracked_value)
        .fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<T> = x.iter().map(|&xi| (xi - max).exp()).collect();
    let total = T::sum(&e);
    e.into_iter().map(|ei| ei / total).collect()
}

/// One attention output as a statement: over operands `[s_0..s_m, v_0..v_m]` (a row's raw
/// scores `q . k_j` and a column of `v`), `softmax(s / scale) . v`, computed exactly as
/// the unfused path computes it.
struct AttentionOutput {
    scale: f64,
}

impl Statement for AttentionOutput {
    fn eval<T: Scalar>(&self, xs: &[T]) -> T {
        let (dots, v) = xs.split_at(xs.len() / 2);
        let scores: Vec<T> = dots.iter().map(|&d| d / self.scale).collect();
        T::dot(&softmax(&scores), v)
    }
}

/// `gelu(h + b)` over `[h, b]`.
struct BiasGelu;

impl Statement for BiasGelu {
    fn eval<T: Scalar>(&self, xs: &[T]) -> T {
        (xs[0] + xs[1]).gelu()
    }
}

/// The mean of a row, `sum(x) / n`.
struct Mean;

impl Statement for Mean {
    fn eval<T: Scalar>(&self, x: &[T]) -> T {
        T::sum(x) / x.len() as f64
    }
}

/// `1 / sqrt(var + eps)` of a row, as [`nn::LayerNorm::normalize`] computes it.
struct InvStd;

impl Statement for InvStd {
    fn eval<T: Scalar>(&self, x: &[T]) -> T {
        let n = x.len() as f64;
        let mean = T::sum(x) / n;
        let centred: Vec<T> = x.iter().map(|&xi| xi - mean).collect();
        (T::dot(&centred, &centred) / n + LN_EPS).sqrt().recip()
    }
}

/// One LayerNorm output `(x - mean) inv_std gamma + beta` over
/// `[x, mean, inv_std, gamma, beta]`.
struct NormOutput;

impl Statement for NormOutput {
    fn eval<T: Scalar>(&self, v: &[T]) -> T {
        (v[0] - v[1]) * v[2] * v[3] + v[4]
    }
}

/// [`nn::LayerNorm::normalize`] preaccumulated: the mean and the inverse deviation are one node each,
/// and each output one node over its five operands.
fn layer_norm_fused<T: Scalar>(x: &[T], gamma: &[T], beta: &[T]) -> Vec<T> {
    let (mean, inv_std) = (T::fused(&Mean, x), T::fused(&InvStd, x));
    x.iter()
        .zip(gamma.iter().zip(beta))
        .map(|(&xi, (&g, &b))| T::fused(&NormOutput, &[xi, mean, inv_std, g, b]))
        .collect()
}

/// The next-token loss of a sequence and what it was computed from.
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::{self, Params};
/// let loss = transformer::loss(&Params::series_init(), &transformer::SENTENCE);
/// assert_eq!((loss.logits.len(), loss.nll.len()), (4, 4));
/// ```
#[derive(Clone, Debug)]
pub struct Loss<T> {
    /// The logits of every position that predicts a next token (all but the last).
    pub logits: Vec<Vec<T>>,
    /// `-ln P(next token)` at each of those positions.
    pub nll: Vec<T>,
    /// The mean of `nll`: the training loss.
    pub mean: T,
}

/// The series' loss: position `i` predicts `tokens[i + 1]`, and the loss is the mean over
/// those positions of `-ln P(target) = logsumexp(logits) - logits[target]` (one fused,
/// stable logsumexp node per position). The last token predicts nothing, and since
/// attention is causal the earlier positions do not depend on it, so it is not computed.
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::{self, Params};
/// let loss = transformer::loss(&Params::series_init(), &transformer::SENTENCE);
/// // The series: P(I | <BOS>) = 0.1491, loss 1.9033; perplexity 6.23.
/// assert_eq!(format!("{:.4}", (-loss.nll[0]).exp()), "0.1491");
/// assert_eq!(format!("{:.4}", loss.nll[0]), "1.9033");
/// assert_eq!(format!("{:.2}", loss.mean.exp()), "6.23");
/// ```
///
/// # Panics
///
/// If `tokens` has fewer than 2 or more than [`MAX_LEN`] tokens, or an id outside the
/// vocabulary.
#[track_caller]
pub fn loss<T: Scalar>(p: &Params<T>, tokens: &[usize]) -> Loss<T> {
    check_tokens(tokens, 2);
    loss_of(logits(p, &tokens[..tokens.len() - 1]), tokens)
}

/// [`loss`] over [`logits_fused`]: the same value bit for bit, on a smaller tape, first
/// order only.
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::{self, Params};
/// use tapegrad::Graph;
///
/// let g = Graph::new();
/// let p = Params::series_init().map(|x| g.var(x));
/// let start = g.len();
/// let plain = transformer::loss(&p, &transformer::SENTENCE).mean;
/// let plain_nodes = g.len() - start;
/// let start = g.len();
/// let fused = transformer::loss_fused(&p, &transformer::SENTENCE).mean;
/// assert_eq!(fused.value(), plain.value());
/// assert!(g.len() - start < plain_nodes * 7 / 10);
/// ```
///
/// # Panics
///
/// As [`loss`].
#[track_caller]
pub fn loss_fused<T: Scalar>(p: &Params<T>, tokens: &[usize]) -> Loss<T> {
    check_tokens(tokens, 2);
    loss_of(logits_fused(p, &tokens[..tokens.len() - 1]), tokens)
}

/// The loss of `logits`, position `i` predicting `tokens[i + 1]`.
fn loss_of<T: Scalar>(logits: Vec<Vec<T>>, tokens: &[usize]) -> Loss<T> {
    let nll: Vec<T> = logits
        .iter()
        .zip(&tokens[1..])
        .map(|(row, &target)| T::logsumexp(row) - row[target])
        .collect();
    let mean = T::sum(&nll) / nll.len() as f64;
    Loss { logits, nll, mean }
}

/// Greedy generation: from `<BOS>`, append the most likely next token until `<EOS>` or
/// [`MAX_LEN`] tokens. Returns the whole sequence, `<BOS>` included.
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::{self, Params};
/// let tokens = transformer::generate(&Params::series_init());
/// assert_eq!(tokens[0], transformer::BOS);
/// assert!(tokens.len() <= transformer::MAX_LEN);
/// ```
pub fn generate(p: &Params<f64>) -> Vec<usize> {
    let mut tokens = vec![BOS];
    while tokens.len() < MAX_LEN && tokens.last() != Some(&EOS) {
        let logits = logits(p, &tokens);
        let last = logits.last().expect("one row per token");
        // The first of equal maxima, as numpy's argmax.
        let next = (0..VOCAB_SIZE).fold(0, |best, t| if last[t] > last[best] { t } else { best });
        tokens.push(next);
    }
    tokens
}

/// The tokens' names, separated by spaces.
///
/// # Examples
///
/// ```
/// use tapegrad_models::transformer::{decode, SENTENCE};
/// assert_eq!(decode(&SENTENCE), "<BOS> I like transformers <EOS>");
/// ```
///
/// # Panics
///
/// If an id is outside the vocabulary.
#[track_caller]
pub fn decode(tokens: &[usize]) -> String {
    tokens
        .iter()
        .map(|&t| {
            *VOCAB.get(t).unwrap_or_else(|| {
                panic!("decode: token {t} is not in the vocabulary (ids 0 to 5)")
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}
