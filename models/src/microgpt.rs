//! Karpathy's microgpt (the character model of `MICROGPT.md`), bit for bit, written once over
//! [`Scalar`] with `tapegrad::nn`. Uses the engine, `nn`, `parallel` and `pyrandom`;
//! nothing else in the crate may use it.
//!
//! One layer, `n_embd` 16, 4 heads of width 4, block size 16, an MLP of width 64, no
//! biases, RMSNorm without gain: 4,192 parameters for the 27-token vocabulary of names.
//! Every floating-point operation is the reference's, in the reference's order (its
//! micrograd-style `Value` turns `a / b` into `a * b^-1` and `x^p` into C `pow`, sums start
//! from 0 and run left to right), so the losses, the trained weights and the sampled names
//! are the reference's own. The model is a plain struct of [`nn`](tapegrad::nn) modules
//! ([`Microgpt`]) beside an [`nn::Params`](Params) store; [`Trainer`] trains it in constant
//! memory on one reused [`Graph`]; [`Microgpt::sample`] draws names from the plain `f64`
//! values, with no graph at all.
//!
//! ```
//! use tapegrad_models::microgpt::{self, Trainer};
//!
//! let text = "emma\nolivia\nava\n";
//! let (docs, tokenizer, mut rng) = microgpt::prepare(text, 42);
//! let graph = tapegrad::Graph::new();
//! let mut trainer = Trainer::new(&graph, &tokenizer, &mut rng, 10);
//! let first = trainer.step(&tokenizer.encode(&docs[0]));
//! let second = trainer.step(&tokenizer.encode(&docs[0]));
//! assert!(second < first); // Adam went downhill on the same document
//! let name = trainer.model().sample(&trainer.params().view(), &tokenizer, &mut rng, 0.5);
//! assert!(name.chars().all(|c| "emaolivy".contains(c)));
//! ```

use std::hint::black_box;

use tapegrad::linalg::{Matrix, Pairing};
use tapegrad::nn::{Binding, Embedding, Linear, ParamGrads, Params, RmsNorm, View};
use tapegrad::parallel::mean_value_and_grad_by_cost;
use tapegrad::pyrandom::PyRandom;
use tapegrad::{Graph, Scalar};

/// The width of the residual stream.
///
/// # Examples
///
/// ```
/// use tapegrad_models::microgpt::{HEAD_DIM, N_EMBD, N_HEAD};
/// assert_eq!(N_EMBD, N_HEAD * HEAD_DIM);
/// ```
pub const N_EMBD: usize = 16;
/// The number of attention heads.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::microgpt::N_HEAD, 4);
/// ```
pub const N_HEAD: usize = 4;
/// The width of one head.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::microgpt::HEAD_DIM, 4);
/// ```
pub const HEAD_DIM: usize = N_EMBD / N_HEAD;
/// The longest context: at most this many positions per document (and per sample).
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::microgpt::BLOCK_SIZE, 16);
/// ```
pub const BLOCK_SIZE: usize = 16;
/// The MLP's hidden width (`4 * N_EMBD`).
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::microgpt::MLP_WIDTH, 64);
/// ```
pub const MLP_WIDTH: usize = 4 * N_EMBD;
/// The standard deviation of the initial weights, `random.gauss(0, 0.08)`.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::microgpt::INIT_STD, 0.08);
/// ```
pub const INIT_STD: f64 = 0.08;

/// The reference's Adam hyper-parameters: learning rate `0.01 * (1 - step / steps)`,
/// `beta1 = 0.85`, `beta2 = 0.99`, `eps = 1e-8`.
///
/// # Examples
///
/// ```
/// use tapegrad_models::microgpt::ADAM;
/// assert_eq!((ADAM.lr, ADAM.beta1, ADAM.beta2, ADAM.eps), (0.01, 0.85, 0.99, 1e-8));
/// ```
pub const ADAM: AdamConfig = AdamConfig {
    lr: 0.01,
    beta1: 0.85,
    beta2: 0.99,
    eps: 1e-8,
};

/// Adam's constants (see [`ADAM`]).
///
/// # Examples
///
/// ```
/// let c = tapegrad_models::microgpt::AdamConfig { lr: 0.1, ..tapegrad_models::microgpt::ADAM };
/// assert_eq!(c.beta1, 0.85);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// The learning rate at step 0 (it decays linearly to 0 at the last step).
    pub lr: f64,
    /// The first moment's decay.
    pub beta1: f64,
    /// The second moment's decay.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
}

/// C's `pow(x, p)`, what Python's float `**` calls. `p` goes through [`black_box`] so that
/// the compiler cannot replace `pow(x, -1.0)` by `1.0 / x`, `pow(x, 2.0)` by `x * x` or
/// `pow(x, 0.5)` by `sqrt(x)`: the C library's `pow` is not correctly rounded, and on about
/// one input in a thousand differs from those in the last bit.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::microgpt::c_pow(2.0, -1.0), 0.5);
/// ```
#[inline]
pub fn c_pow(x: f64, p: f64) -> f64 {
    x.powf(black_box(p))
}

/// `x * y - fl(x * y)`, exactly (Dekker's product by Veltkamp splitting, no FMA needed),
/// for `x`, `y` and their product well inside the normal range.
fn product_error(x: f64, y: f64, xy: f64) -> f64 {
    let split = |a: f64| {
        let c = 134_217_729.0 * a; // 2^27 + 1
        let high = c - (c - a);
        (high, a - high)
    };
    let ((xh, xl), (yh, yl)) = (split(x), split(y));
    ((xh * yh - xy) + xh * yl + xl * yh) + xl * yl
}

/// The unit in the last place of a positive normal `x`, and whether `x` is a power of two
/// (where the gap below is half the gap above).
fn ulp(x: f64) -> (f64, bool) {
    const EXPONENT: u64 = 0x7ff0_0000_0000_0000;
    let bits = x.to_bits();
    (
        f64::from_bits(bits & EXPONENT) * f64::EPSILON,
        bits & !EXPONENT == 0,
    )
}

/// How close (in units in the last place) the exact `x^y` must lie to a double for C's
/// `pow` to be certain to return that double, for `y = 2` and `2^-64 <= |x| <= 2^64`.
///
/// glibc's `pow` (ARM's optimized-routines code, also musl's) states its error bound:
/// `ulperr_exp + |y ln x| * relerr_log * 2^53` ulp, with `ulperr_exp` = 0.511 ulp (0.509
/// with FMA) the error of its final `exp`, rounding included, and `relerr_log` =
/// 1.5 * 2^-68 (1.3 * 2^-68 with FMA) the relative error of its `log`. So before its final
/// rounding its value is within `0.011 + |y ln x| * 4.6e-5` ulp of the exact power, and
/// where the exact power lies closer than 0.5 ulp minus that to a double, that double is
/// what `pow` returns. For squares in the range, `|y ln x| <= 128 ln 2 = 88.8`: 0.0151 ulp,
/// so 0.484 leaves a margin. (Measured on this machine's glibc 2.36 over 5e7 inputs,
/// `pow` differed from `x * x` or `sqrt(x)` only within 0.0084 ulp of a rounding
/// midpoint.) About 3% of inputs fall inside the band and go to `pow` itself.
const SQUARE_SURE_ULPS: f64 = 0.484;
/// The square's range for [`SQUARE_SURE_ULPS`]: `2^-64 <= |x| <= 2^64`.
const SQUARE_RANGE: (f64, f64) = (5.421_010_862_427_522e-20, 1.844_674_407_370_955_2e19);
/// As [`SQUARE_SURE_ULPS`] for `y = 0.5` and `2^-128 <= x <= 2^128`, where
/// `|y ln x| <= 64 ln 2 = 44.4`: within 0.0131 ulp before rounding.
const ROOT_SURE_ULPS: f64 = 0.486;
/// The root's range for [`ROOT_SURE_ULPS`]: `2^-128 <= x <= 2^128`.
const ROOT_RANGE: (f64, f64) = (2.938_735_877_055_719e-39, 3.402_823_669_209_385e38);

/// `pow(x, 2.0)` exactly as C's `pow` gives it, fast: `x * x` wherever that is provably the
/// same double (about 97% of inputs), `pow` itself near a rounding midpoint.
///
/// # Examples
///
/// ```
/// use tapegrad_models::microgpt::{c_pow, pow2};
/// for x in [0.0, -0.0, 3.0, 0.1, -1e-7, 1.000_000_000_000_000_2] {
///     assert_eq!(pow2(x).to_bits(), c_pow(x, 2.0).to_bits());
/// }
/// ```
#[inline]
pub fn pow2(x: f64) -> f64 {
    let xx = square_or_nan(x);
    if xx.is_nan() { c_pow(x, 2.0) } else { xx }
}

/// `x * x` where that is provably `pow(x, 2.0)`'s bits (see [`pow2`]), NaN where it may
/// not be. Branch-free, so that a loop of it vectorises; the caller calls `pow` for the
/// NaNs (a NaN `x` included, whose `pow` is NaN again).
#[inline]
fn square_or_nan(x: f64) -> f64 {
    let xx = x * x;
    let a = x.abs();
    let (u, power_of_two) = ulp(xx);
    // `&`, not `&&`: every test is computed (out of range they are harmless, at worst NaN,
    // which compares false), and the choice is a select, not a branch.
    // Zero (a step's unused embedding rows, hundreds per step) is exact: `pow(±0, 2)` and
    // `±0 * ±0` are both +0.
    let sure = (x == 0.0)
        | ((a >= SQUARE_RANGE.0)
            & (a <= SQUARE_RANGE.1)
            & !power_of_two
            & (product_error(x, x, xx).abs() < SQUARE_SURE_ULPS * u));
    if sure { xx } else { f64::NAN }
}

/// `pow(x, 0.5)` exactly as C's `pow` gives it, fast: `sqrt(x)` wherever that is provably
/// the same double, `pow` itself near a rounding midpoint.
///
/// # Examples
///
/// ```
/// use tapegrad_models::microgpt::{c_pow, pow_half};
/// for x in [0.0, -0.0, 4.0, 2.0, 1e-9, 0.37] {
///     assert_eq!(pow_half(x).to_bits(), c_pow(x, 0.5).to_bits());
/// }
/// ```
#[inline]
pub fn pow_half(x: f64) -> f64 {
    let s = root_or_nan(x);
    if s.is_nan() { c_pow(x, 0.5) } else { s }
}

/// `sqrt(x)` where that is provably `pow(x, 0.5)`'s bits (see [`pow_half`]), NaN where it
/// may not be (branch-free, as [`square_or_nan`]).
#[inline]
fn root_or_nan(x: f64) -> f64 {
    let s = x.sqrt();
    let (u, power_of_two) = ulp(s);
    let ss = s * s;
    // x - s^2 exactly up to one rounding (x - ss is exact by Sterbenz), so the exact
    // root is s + r / 2s to far better than the margin.
    let r = (x - ss) - product_error(s, s, ss);
    // `|r / 2s| < ROOT_SURE_ULPS * u` without the division (a third of the update's time
    // is its divisions and root): the bound's 1e-9 below `2 * ROOT_SURE_ULPS` covers the
    // two roundings of `ROOT_BOUND * s * u`. +0 (a parameter whose gradient was always
    // zero) is exact: `pow(+0, 0.5)` and `sqrt(+0)` are +0 (but `sqrt(-0) = -0`).
    const ROOT_BOUND: f64 = 2.0 * ROOT_SURE_ULPS * (1.0 - 1e-9);
    let sure = (x.to_bits() == 0)
        | ((x >= ROOT_RANGE.0)
            & (x <= ROOT_RANGE.1)
            & !power_of_two
            & (r.abs() < ROOT_BOUND * s * u));
    if sure { s } else { f64::NAN }
}

/// `x^p` for a constant `p` as the reference's `Value.__pow__` makes it: value `pow(x, p)`,
/// partial `p * pow(x, p - 1)`, what [`Scalar::powf_f64`] records. `p` goes through
/// [`black_box`] so that the compiler cannot turn `pow(x, -1.0)` into `1.0 / x`.
fn pow_const<T: Scalar>(x: T, p: f64) -> T {
    x.powf_f64(black_box(p))
}

/// The characters of the documents, sorted, and `BOS` after them.
///
/// # Examples
///
/// ```
/// use tapegrad_models::microgpt::Tokenizer;
///
/// let t = Tokenizer::new(&["ab".to_string(), "ca".to_string()]);
/// assert_eq!(t.vocab_size(), 4);
/// assert_eq!(t.bos(), 3);
/// assert_eq!(t.encode("cab"), vec![3, 2, 0, 1, 3]);
/// assert_eq!(t.decode(&[2, 0, 1]), "cab");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokenizer {
    chars: Vec<char>,
}

impl Tokenizer {
    /// The sorted set of characters in `docs` (the reference's `sorted(set(''.join(docs)))`).
    ///
    /// # Examples
    ///
    /// ```
    /// let t = tapegrad_models::microgpt::Tokenizer::new(&["hello".to_string()]);
    /// assert_eq!(t.chars(), &['e', 'h', 'l', 'o']);
    /// ```
    pub fn new(docs: &[String]) -> Self {
        let mut chars: Vec<char> = docs.iter().flat_map(|d| d.chars()).collect();
        chars.sort_unstable();
        chars.dedup();
        Tokenizer { chars }
    }

    /// The characters, by token id.
    ///
    /// # Examples
    ///
    /// ```
    /// let t = tapegrad_models::microgpt::Tokenizer::new(&["ba".to_string()]);
    /// assert_eq!(t.chars(), &['a', 'b']);
    /// ```
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The number of tokens: the characters and `BOS`.
    ///
    /// # Examples
    ///
    /// ```
    /// let t = tapegrad_models::microgpt::Tokenizer::new(&["ba".to_string()]);
    /// assert_eq!(t.vocab_size(), 3);
    /// ```
    pub fn vocab_size(&self) -> usize {
        self.chars.len() + 1
    }

    /// The id of `BOS`, which starts and ends every document (the last id).
    ///
    /// # Examples
    ///
    /// ```
    /// let t = tapegrad_models::microgpt::Tokenizer::new(&["ba".to_string()]);
    /// assert_eq!(t.bos(), 2);
    /// ```
    pub fn bos(&self) -> usize {
        self.chars.len()
    }

    /// `[BOS] + ids of doc's characters + [BOS]`.
    ///
    /// # Examples
    ///
    /// ```
    /// let t = tapegrad_models::microgpt::Tokenizer::new(&["ba".to_string()]);
    /// assert_eq!(t.encode("ab"), vec![2, 0, 1, 2]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `doc` has a character outside the vocabulary (naming it).
    pub fn encode(&self, doc: &str) -> Vec<usize> {
        let ids = doc.chars().map(|c| match self.chars.binary_search(&c) {
            Ok(id) => id,
            Err(_) => panic!("encode: {c:?} is not in the vocabulary"),
        });
        std::iter::once(self.bos())
            .chain(ids)
            .chain(std::iter::once(self.bos()))
            .collect()
    }

    /// The characters of `ids` (`BOS` is skipped).
    ///
    /// # Examples
    ///
    /// ```
    /// let t = tapegrad_models::microgpt::Tokenizer::new(&["ba".to_string()]);
    /// assert_eq!(t.decode(&[2, 1, 0, 2]), "ba");
    /// ```
    pub fn decode(&self, ids: &[usize]) -> String {
        ids.iter().filter_map(|&i| self.chars.get(i)).collect()
    }
}

/// The documents of `text` as the reference reads them: strip the text, split it on
/// newlines, strip each line, drop empty lines.
///
/// # Examples
///
/// ```
/// let docs = tapegrad_models::microgpt::read_docs("  emma\r\n\n ava \n");
/// assert_eq!(docs, vec!["emma", "ava"]);
/// ```
pub fn read_docs(text: &str) -> Vec<String> {
    text.trim()
        .split('\n')
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(String::from)
        .collect()
}

/// The reference's preamble: `random.seed(seed)`, read the documents, shuffle them, build
/// the vocabulary. Returns the documents in training order, the tokenizer, and the random
/// stream (next used for the initial weights, see [`Params::init`]).
///
/// # Examples
///
/// ```
/// let (docs, tokenizer, _rng) = tapegrad_models::microgpt::prepare("b\na\nc\n", 42);
/// assert_eq!(docs.len(), 3);
/// assert_eq!(tokenizer.vocab_size(), 4);
/// ```
pub fn prepare(text: &str, seed: u64) -> (Vec<String>, Tokenizer, PyRandom) {
    let mut rng = PyRandom::seed(seed);
    let mut docs = read_docs(text);
    rng.shuffle(&mut docs);
    let tokenizer = Tokenizer::new(&docs);
    (docs, tokenizer, rng)
}

/// The model: its layers as [`nn`](tapegrad::nn) modules holding [`Param`](tapegrad::nn::Param) ids into an
/// [`nn::Params`](Params) store kept beside it, in the reference's order (`wte`, `wpe`,
/// `lm_head`, then the layer's `attn_wq`, `attn_wk`, `attn_wv`, `attn_wo`, `mlp_fc1`,
/// `mlp_fc2`; every matrix `out x in`, row by row).
///
/// # Examples
///
/// ```
/// use tapegrad::pyrandom::PyRandom;
/// use tapegrad_models::microgpt::Microgpt;
///
/// let (model, params) = Microgpt::init(27, &mut PyRandom::seed(42));
/// assert_eq!(params.len(), 4192);
/// assert_eq!(params.name(params.params().nth(7).unwrap()), "layer0.mlp_fc1.weight");
/// let logits = model.logits(&params.view(), 26, 0, &mut Default::default());
/// assert_eq!(logits.len(), 27);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Microgpt {
    vocab: usize,
    wte: Embedding,
    wpe: Embedding,
    lm_head: Linear,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    fc1: Linear,
    fc2: Linear,
    norm: RmsNorm,
}

impl Microgpt {
    /// Adds the model's matrices to `params`, each entry drawn from `init` in the
    /// reference's order.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::Params;
    /// use tapegrad_models::microgpt::Microgpt;
    /// let mut params = Params::new();
    /// let model = Microgpt::new(&mut params, 5, &mut || 0.0);
    /// assert_eq!((model.vocab_size(), params.num_tensors()), (5, 9));
    /// ```
    ///
    /// # Panics
    ///
    /// If `params` already has a tensor of one of the model's names.
    pub fn new(params: &mut Params, vocab: usize, init: &mut dyn FnMut() -> f64) -> Self {
        let wte = Embedding::new(params, "wte", vocab, N_EMBD, init);
        let wpe = Embedding::new(params, "wpe", BLOCK_SIZE, N_EMBD, init);
        let mut linear =
            |name: &str, inputs, outputs| Linear::without_bias(params, name, inputs, outputs, init);
        let lm_head = linear("lm_head", N_EMBD, vocab);
        let wq = linear("layer0.attn_wq", N_EMBD, N_EMBD);
        let wk = linear("layer0.attn_wk", N_EMBD, N_EMBD);
        let wv = linear("layer0.attn_wv", N_EMBD, N_EMBD);
        let wo = linear("layer0.attn_wo", N_EMBD, N_EMBD);
        let fc1 = linear("layer0.mlp_fc1", N_EMBD, MLP_WIDTH);
        let fc2 = linear("layer0.mlp_fc2", MLP_WIDTH, N_EMBD);
        Microgpt {
            vocab,
            wte,
            wpe,
            lm_head,
            wq,
            wk,
            wv,
            wo,
            fc1,
            fc2,
            // `(ms + 1e-5) ** -0.5`, `ms = sum * 16**-1`: the reference's rmsnorm, no gain.
            norm: RmsNorm::new(N_EMBD, 1e-5),
        }
    }

    /// The model with the reference's initial weights, `random.gauss(0, 0.08)` for every
    /// entry from `rng` (which, just after [`prepare`], is the reference's stream), in a
    /// new store.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::pyrandom::PyRandom;
    /// use tapegrad_models::microgpt::Microgpt;
    /// let mut rng = PyRandom::seed(42);
    /// let first = rng.clone().gauss(0.0, 0.08);
    /// let (_, params) = Microgpt::init(27, &mut rng);
    /// assert_eq!(params.as_slice()[0], first);
    /// ```
    pub fn init(vocab: usize, rng: &mut PyRandom) -> (Self, Params) {
        let mut params = Params::new();
        let model = Microgpt::new(&mut params, vocab, &mut || rng.gauss(0.0, INIT_STD));
        (model, params)
    }

    /// The vocabulary size.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::Params;
    /// use tapegrad_models::microgpt::Microgpt;
    /// assert_eq!(Microgpt::new(&mut Params::new(), 7, &mut || 0.0).vocab_size(), 7);
    /// ```
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// The logits of the next token after `token` at position `pos`, appending this
    /// position's key and value to `cache` (the reference's `gpt`), over `f64` (plain
    /// evaluation) or bound `Var`s (recorded).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::pyrandom::PyRandom;
    /// use tapegrad_models::microgpt::{KvCache, Microgpt};
    /// let (model, params) = Microgpt::init(27, &mut PyRandom::seed(42));
    /// let mut cache = KvCache::new();
    /// model.logits(&params.view(), 26, 0, &mut cache);
    /// assert_eq!(model.logits(&params.view(), 0, 1, &mut cache).len(), 27);
    /// assert_eq!(cache.len(), 2);
    /// ```
    ///
    /// # Panics
    ///
    /// If `token` is outside the vocabulary, `pos >= BLOCK_SIZE`, `cache` does not hold
    /// exactly `pos` positions, or `p` is not a view of the model's store.
    pub fn logits<T: Scalar>(
        &self,
        p: &View<'_, T>,
        token: usize,
        pos: usize,
        cache: &mut KvCache<T>,
    ) -> Vec<T> {
        assert!(
            pos < BLOCK_SIZE,
            "logits: position {pos} is past the block size {BLOCK_SIZE}"
        );
        assert_eq!(
            cache.len(),
            pos,
            "logits: position {pos} needs a cache of {pos} positions"
        );
        let (tok, at) = (self.wte.forward(p, token), self.wpe.forward(p, pos));
        let x: Vec<T> = tok.iter().zip(at).map(|(&t, &q)| t + q).collect();
        let x = self.norm.forward(p, &x);

        // Attention.
        let residual = x;
        let x = self.norm.forward(p, &residual);
        let q = self.wq.forward(p, &x);
        cache.keys.push(self.wk.forward(p, &x));
        cache.values.push(self.wv.forward(p, &x));
        let mut attended = Vec::with_capacity(N_EMBD);
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        let positions = cache.len();
        for h in 0..N_HEAD {
            let head = h * HEAD_DIM..(h + 1) * HEAD_DIM;
            // This head's keys and values, one row per position: each score is the dot of
            // q with a key row, each output the dot of the weights with a value column, as
            // the reference's loops form them (one matrix product records them at once).
            keys.clear();
            keys.extend(cache.keys.iter().flat_map(|k| &k[head.clone()]));
            values.clear();
            values.extend(cache.values.iter().flat_map(|v| &v[head.clone()]));
            let q = Matrix::new(&q[head.clone()], 1, HEAD_DIM);
            let scores = T::dots(q, Matrix::new(&keys, positions, HEAD_DIM), Pairing::Rows);
            // `/ sqrt(4)` is `* 2.0**-1`, that is `* 0.5`.
            let scores: Vec<T> = scores.into_iter().map(|s| s * 0.5).collect();
            let weights = softmax(&scores);
            let weights = Matrix::new(&weights, 1, positions);
            let values = Matrix::new(&values, positions, HEAD_DIM);
            attended.extend(T::dots(weights, values, Pairing::Columns));
        }
        let x = self.wo.forward(p, &attended);
        let x: Vec<T> = x.iter().zip(&residual).map(|(&a, &b)| a + b).collect();

        // MLP.
        let residual = x;
        let x = self.norm.forward(p, &residual);
        let hidden: Vec<T> = self
            .fc1
            .forward(p, &x)
            .into_iter()
            .map(Scalar::relu)
            .collect();
        let x = self.fc2.forward(p, &hidden);
        let x: Vec<T> = x.iter().zip(&residual).map(|(&a, &b)| a + b).collect();

        self.lm_head.forward(p, &x)
    }

    /// The mean next-token loss over a document's tokens (`[BOS] + chars + [BOS]`), at
    /// most [`BLOCK_SIZE`] positions: `(1/n) * sum_t -ln(p_t)`, formed as the reference
    /// forms it.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::pyrandom::PyRandom;
    /// use tapegrad_models::microgpt::Microgpt;
    /// let (model, params) = Microgpt::init(27, &mut PyRandom::seed(42));
    /// let loss = model.loss(&params.view(), &[26, 4, 12, 12, 0, 26]);
    /// // Near ln 27 = 3.30 for small random weights.
    /// assert!((loss - 27f64.ln()).abs() < 0.2);
    /// ```
    ///
    /// # Panics
    ///
    /// If `tokens` has fewer than 2 entries or one outside the vocabulary.
    pub fn loss<T: Scalar>(&self, p: &View<'_, T>, tokens: &[usize]) -> T {
        assert!(
            tokens.len() >= 2,
            "loss: a document needs at least 2 tokens ([BOS] + [BOS]), got {}",
            tokens.len()
        );
        let n = BLOCK_SIZE.min(tokens.len() - 1);
        let mut cache = KvCache::new();
        let losses: Vec<T> = (0..n)
            .map(|pos| {
                let logits = self.logits(p, tokens[pos], pos, &mut cache);
                let target = tokens[pos + 1];
                assert!(
                    target < self.vocab,
                    "loss: token {target} is outside the vocabulary of {}",
                    self.vocab
                );
                // Only the target's probability reaches the loss: the reference forms every
                // probability, but the others have no path to the loss (no gradient either).
                let exps = shifted_exps(&logits);
                let total = T::sum(&exps);
                -(exps[target] * pow_const(total, -1.0)).ln()
            })
            .collect();
        T::sum(&losses) * (1.0 / n as f64)
    }

    /// One sampled document: from `BOS`, at most [`BLOCK_SIZE`] tokens, each drawn with
    /// `random.choices` from `softmax(logits / temperature)`, stopping at `BOS` (the
    /// reference's sampling loop, on plain `f64`: no graph).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, pyrandom::PyRandom};
    /// use tapegrad_models::microgpt::{Microgpt, Tokenizer};
    ///
    /// let t = Tokenizer::new(&["ab".to_string()]);
    /// let mut params = Params::new();
    /// let model = Microgpt::new(&mut params, t.vocab_size(), &mut || 0.0);
    /// let name = model.sample(&params.view(), &t, &mut PyRandom::seed(1), 0.5);
    /// assert!(name.len() <= 16 && name.chars().all(|c| c == 'a' || c == 'b'));
    /// ```
    ///
    /// # Panics
    ///
    /// If `tokenizer`'s vocabulary is not the model's.
    pub fn sample(
        &self,
        p: &View<'_, f64>,
        tokenizer: &Tokenizer,
        rng: &mut PyRandom,
        temperature: f64,
    ) -> String {
        assert_eq!(
            self.vocab,
            tokenizer.vocab_size(),
            "sample: a model for a vocabulary of {} with a tokenizer of {}",
            self.vocab,
            tokenizer.vocab_size()
        );
        // `logit / temperature` is `logit * temperature**-1`.
        let inv_t = c_pow(temperature, -1.0);
        let mut cache = KvCache::new();
        let mut token = tokenizer.bos();
        let mut ids = Vec::new();
        for pos in 0..BLOCK_SIZE {
            let logits: Vec<f64> = self
                .logits(p, token, pos, &mut cache)
                .into_iter()
                .map(|z| z * inv_t)
                .collect();
            token = rng.choices(&softmax(&logits), 1)[0];
            if token == tokenizer.bos() {
                break;
            }
            ids.push(token);
        }
        tokenizer.decode(&ids)
    }
}

/// The number of parameters for a vocabulary of `vocab` tokens (4,192 for 27).
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad_models::microgpt::n_params(27), 4192);
/// ```
pub fn n_params(vocab: usize) -> usize {
    2 * vocab * N_EMBD + BLOCK_SIZE * N_EMBD + 4 * N_EMBD * N_EMBD + 2 * MLP_WIDTH * N_EMBD
}

/// The keys and values of the positions seen so far (the reference's `keys`, `values`).
///
/// # Examples
///
/// ```
/// let cache = tapegrad_models::microgpt::KvCache::<f64>::new();
/// assert_eq!(cache.len(), 0);
/// ```
#[derive(Clone, Debug, Default)]
pub struct KvCache<T> {
    keys: Vec<Vec<T>>,
    values: Vec<Vec<T>>,
}

impl<T> KvCache<T> {
    /// An empty cache.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tapegrad_models::microgpt::KvCache::<f64>::new().is_empty());
    /// ```
    pub fn new() -> Self {
        KvCache {
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    /// The number of positions cached.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tapegrad_models::microgpt::KvCache::<f64>::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no position is cached.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tapegrad_models::microgpt::KvCache::<f64>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The softmax as the reference forms it: shift by the maximum taken as a plain number,
/// exponentiate, sum left to right, and multiply each exp by its own `pow(total, -1)`
/// (the reference's `e / total` makes a fresh `total**-1` per entry).
///
/// # Examples
///
/// ```
/// let p = tapegrad_models::microgpt::softmax(&[1.0, 2.0, 3.0]);
/// approx::assert_relative_eq!(p.iter().sum::<f64>(), 1.0, epsilon = 1e-15);
/// assert!(p[2] > p[1] && p[1] > p[0]);
/// ```
///
/// # Panics
///
/// If `logits` is empty.
pub fn softmax<T: Scalar>(logits: &[T]) -> Vec<T> {
    let exps = shifted_exps(logits);
    let total = T::sum(&exps);
    exps.iter().map(|&e| e * pow_const(total, -1.0)).collect()
}

/// `exp(z - max z)` for every `z`, the maximum a plain number (read untracked: it decides
/// no branch, and a replay keeps it).
fn shifted_exps<T: Scalar>(logits: &[T]) -> Vec<T> {
    assert!(!logits.is_empty(), "softmax of no logits");
    let max = logits
        .iter()
        .map(Scalar::untracked_value)
        .fold(f64::NEG_INFINITY, f64::max);
    logits.iter().map(|&z| (z - max).exp()).collect()
}

/// The reference's Adam, operation for operation (`g**2`, `(1 - beta**(t+1))`,
/// `v_hat**0.5` in C `pow`, the first and last through [`pow2`] and [`pow_half`], which
/// give `pow`'s own bits faster), with the learning rate `lr * (1 - step / steps)`.
///
/// # Examples
///
/// ```
/// use tapegrad_models::microgpt::{Adam, ADAM};
///
/// let mut adam = Adam::new(1, ADAM, 10);
/// let mut p = [1.0];
/// adam.update(&mut p, &[2.0]);
/// // The first step moves each parameter by about lr against its gradient's sign.
/// approx::assert_relative_eq!(p[0], 1.0 - 0.01, epsilon = 1e-9);
/// assert_eq!(adam.step(), 1);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    config: AdamConfig,
    steps: usize,
    step: usize,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl Adam {
    /// Zero moments for `n` parameters, for a run of `steps` steps (the schedule's length).
    ///
    /// # Examples
    ///
    /// ```
    /// let adam = tapegrad_models::microgpt::Adam::new(4192, tapegrad_models::microgpt::ADAM, 1000);
    /// assert_eq!(adam.step(), 0);
    /// ```
    pub fn new(n: usize, config: AdamConfig, steps: usize) -> Self {
        Adam {
            config,
            steps,
            step: 0,
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }

    /// The number of updates made so far.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tapegrad_models::microgpt::Adam::new(1, tapegrad_models::microgpt::ADAM, 5).step(), 0);
    /// ```
    pub fn step(&self) -> usize {
        self.step
    }

    /// The learning rate of the next update: `lr * (1 - step / steps)`.
    ///
    /// # Examples
    ///
    /// ```
    /// let adam = tapegrad_models::microgpt::Adam::new(1, tapegrad_models::microgpt::ADAM, 1000);
    /// assert_eq!(adam.lr(), 0.01);
    /// ```
    pub fn lr(&self) -> f64 {
        self.config.lr * (1.0 - self.step as f64 / self.steps as f64)
    }

    /// One update of `params` from `grads`.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut adam = tapegrad_models::microgpt::Adam::new(2, tapegrad_models::microgpt::ADAM, 100);
    /// let mut p = [0.0, 0.0];
    /// adam.update(&mut p, &[1.0, 0.0]);
    /// assert!(p[0] < 0.0);
    /// assert_eq!(p[1], 0.0);
    /// ```
    ///
    /// # Panics
    ///
    /// If `params` or `grads` does not have the length given to [`Adam::new`].
    pub fn update(&mut self, params: &mut [f64], grads: &[f64]) {
        assert!(
            params.len() == self.m.len() && grads.len() == self.m.len(),
            "Adam for {} parameters got {} parameters and {} gradients",
            self.m.len(),
            params.len(),
            grads.len()
        );
        let AdamConfig {
            beta1, beta2, eps, ..
        } = self.config;
        let lr = self.lr();
        let t = (self.step + 1) as f64;
        let (c1, c2) = (1.0 - beta1, 1.0 - beta2);
        let (d1, d2) = (1.0 - c_pow(beta1, t), 1.0 - c_pow(beta2, t));
        // Three branch-free passes that vectorise, each followed by `pow` itself for the few
        // entries (about 4%) where `x * x` or `sqrt` might not be its bits: the same
        // operations on every value as one loop of `pow2` and `pow_half` would make.
        let mut squares: Vec<f64> = grads.iter().map(|&g| square_or_nan(g)).collect();
        fill_nans(&mut squares, |k| c_pow(grads[k], 2.0));
        let mut roots: Vec<f64> = (self.m.iter_mut().zip(&mut self.v))
            .zip(grads.iter().zip(&squares))
            .map(|((m, v), (&g, &sq))| {
                *m = beta1 * *m + c1 * g;
                *v = beta2 * *v + c2 * sq;
                root_or_nan(*v / d2)
            })
            .collect();
        fill_nans(&mut roots, |k| c_pow(self.v[k] / d2, 0.5));
        for ((p, &m), &root) in params.iter_mut().zip(&self.m).zip(&roots) {
            let m_hat = m / d1;
            *p -= lr * m_hat / (root + eps);
        }
        self.step += 1;
    }
}

/// Replaces each NaN `xs[k]` by `exact(k)`: the few entries (about 3%) the fast paths
/// left to `pow`. Chunks of 8 are tested at once (a test that vectorises) and only those
/// holding a NaN are walked, so most entries cost no unpredictable branch.
fn fill_nans(xs: &mut [f64], exact: impl Fn(usize) -> f64) {
    const CHUNK: usize = 8;
    for (c, chunk) in xs.chunks_mut(CHUNK).enumerate() {
        if chunk.iter().fold(false, |any, x| any | x.is_nan()) {
            for (k, x) in chunk.iter_mut().enumerate() {
                if x.is_nan() {
                    *x = exact(c * CHUNK + k);
                }
            }
        }
    }
}

/// Trains microgpt one document per step on one [`Graph`] that is reused every step, so
/// memory stays constant: the store is bound to the graph once ([`Params::bind`]); each
/// step writes its current values into the bound inputs, records the loss, runs backward,
/// releases the step's nodes ([`Binding::value_and_grad`], the same bits as
/// [`Params::value_and_grad`]) and lets [`Adam`] update the store.
///
/// # Examples
///
/// ```
/// use tapegrad_models::microgpt::{self, Trainer};
///
/// let (docs, tokenizer, mut rng) = microgpt::prepare("anna\nbob\n", 1);
/// let graph = tapegrad::Graph::new();
/// let mut trainer = Trainer::new(&graph, &tokenizer, &mut rng, 2);
/// let loss = trainer.step(&tokenizer.encode(&docs[0]));
/// assert!(loss > 0.0);
/// assert_eq!(trainer.steps_done(), 1);
/// ```
pub struct Trainer<'g> {
    model: Microgpt,
    params: Params,
    adam: Adam,
    graph: &'g Graph,
    /// The store bound to `graph` once for the run: each step writes the new values into
    /// the same input nodes.
    binding: Binding<'g>,
    grads: Option<ParamGrads>,
    last_nodes: usize,
}

impl<'g> Trainer<'g> {
    /// A trainer for a run of `steps` steps, from the reference's initial weights drawn
    /// from `rng` (which must be just after [`prepare`]'s shuffle to be the reference's).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::microgpt::{self, Trainer};
    /// let (_, tokenizer, mut rng) = microgpt::prepare("ab\n", 1);
    /// assert_eq!(Trainer::new(&tapegrad::Graph::new(), &tokenizer, &mut rng, 1).params().len(), microgpt::n_params(3));
    /// ```
    pub fn new(graph: &'g Graph, tokenizer: &Tokenizer, rng: &mut PyRandom, steps: usize) -> Self {
        let (model, params) = Microgpt::init(tokenizer.vocab_size(), rng);
        Trainer::from_params(graph, model, params, steps)
    }

    /// A trainer for `model` starting from `params`, for a run of `steps` steps.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::Params;
    /// use tapegrad_models::microgpt::{Microgpt, Trainer};
    /// let mut params = Params::new();
    /// let model = Microgpt::new(&mut params, 3, &mut || 0.0);
    /// assert_eq!(Trainer::from_params(&tapegrad::Graph::new(), model, params, 10).steps_done(), 0);
    /// ```
    pub fn from_params(graph: &'g Graph, model: Microgpt, params: Params, steps: usize) -> Self {
        let adam = Adam::new(params.len(), ADAM, steps);
        Trainer {
            model,
            binding: params.bind(graph),
            params,
            adam,
            graph,
            grads: None,
            last_nodes: 0,
        }
    }

    /// The model.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::microgpt::{self, Trainer};
    /// let (_, tokenizer, mut rng) = microgpt::prepare("ab\n", 1);
    /// assert_eq!(Trainer::new(&tapegrad::Graph::new(), &tokenizer, &mut rng, 1).model().vocab_size(), 3);
    /// ```
    pub fn model(&self) -> &Microgpt {
        &self.model
    }

    /// The current parameters.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::microgpt::{self, Trainer};
    /// let (_, tokenizer, mut rng) = microgpt::prepare("ab\n", 1);
    /// assert_eq!(Trainer::new(&tapegrad::Graph::new(), &tokenizer, &mut rng, 1).params().num_tensors(), 9);
    /// ```
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The model and its parameters, giving up the trainer.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::microgpt::{self, Trainer};
    /// let (_, tokenizer, mut rng) = microgpt::prepare("ab\n", 1);
    /// let (model, params) = Trainer::new(&tapegrad::Graph::new(), &tokenizer, &mut rng, 1).into_parts();
    /// assert_eq!(params.len(), tapegrad_models::microgpt::n_params(model.vocab_size()));
    /// ```
    pub fn into_parts(self) -> (Microgpt, Params) {
        (self.model, self.params)
    }

    /// The number of steps taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::microgpt::{self, Trainer};
    /// let (_, tokenizer, mut rng) = microgpt::prepare("ab\n", 1);
    /// assert_eq!(Trainer::new(&tapegrad::Graph::new(), &tokenizer, &mut rng, 1).steps_done(), 0);
    /// ```
    pub fn steps_done(&self) -> usize {
        self.adam.step()
    }

    /// The number of tape nodes the last [`Trainer::gradient`] recorded (parameters
    /// included).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::microgpt::{self, Trainer};
    /// let (_, tokenizer, mut rng) = microgpt::prepare("ab\n", 1);
    /// let graph = tapegrad::Graph::new();
    /// let mut t = Trainer::new(&graph, &tokenizer, &mut rng, 1);
    /// t.step(&[2, 0, 2]);
    /// assert!(t.last_nodes() > microgpt::n_params(3));
    /// ```
    pub fn last_nodes(&self) -> usize {
        self.last_nodes
    }

    /// The bytes the reused graph holds (its capacity): constant once the longest
    /// document has been seen.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::microgpt::{self, Trainer};
    /// let (_, tokenizer, mut rng) = microgpt::prepare("ab\n", 1);
    /// let graph = tapegrad::Graph::new();
    /// let mut t = Trainer::new(&graph, &tokenizer, &mut rng, 2);
    /// t.step(&[2, 0, 2]);
    /// let bytes = t.tape_bytes();
    /// t.step(&[2, 0, 2]);
    /// assert_eq!(t.tape_bytes(), bytes);
    /// ```
    pub fn tape_bytes(&self) -> usize {
        self.graph.heap_bytes()
    }

    /// The gradient of the last [`Trainer::gradient`]'s loss, in store order (empty
    /// before the first, and after the update that used it).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::microgpt::{self, Trainer};
    /// let (_, tokenizer, mut rng) = microgpt::prepare("ab\n", 1);
    /// let graph = tapegrad::Graph::new();
    /// let mut t = Trainer::new(&graph, &tokenizer, &mut rng, 1);
    /// t.gradient(&[2, 0, 2]);
    /// assert_eq!(t.last_gradient().len(), microgpt::n_params(3));
    /// ```
    pub fn last_gradient(&self) -> &[f64] {
        self.grads.as_ref().map_or(&[], ParamGrads::as_slice)
    }

    /// The loss of one document (its tokens, `[BOS] + chars + [BOS]`) and its gradient,
    /// without updating the parameters; the gradient is then [`Trainer::last_gradient`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::Params;
    /// use tapegrad_models::microgpt::{Microgpt, Trainer};
    /// let mut params = Params::new();
    /// let model = Microgpt::new(&mut params, 3, &mut || 0.0);
    /// let graph = tapegrad::Graph::new();
    /// let mut t = Trainer::from_params(&graph, model, params, 1);
    /// // All-zero weights: uniform predictions, loss ln 3.
    /// approx::assert_relative_eq!(t.gradient(&[2, 0, 2]), 3f64.ln(), epsilon = 1e-15);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`Microgpt::loss`].
    pub fn gradient(&mut self, tokens: &[usize]) -> f64 {
        let (g, model, params) = (self.graph, &self.model, &self.params);
        let mut nodes = 0;
        let (value, grads) = self
            .binding
            .value_and_grad(params, |p| {
                let loss = model.loss(p, tokens);
                nodes = g.len();
                loss
            })
            .expect("the loss is this step's own node");
        self.last_nodes = nodes;
        self.grads = Some(grads);
        value
    }

    /// One training step on one document: loss, gradient, Adam update. Returns the loss
    /// (before the update).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::microgpt::{self, Trainer};
    /// let (_, tokenizer, mut rng) = microgpt::prepare("ab\n", 1);
    /// let graph = tapegrad::Graph::new();
    /// let mut t = Trainer::new(&graph, &tokenizer, &mut rng, 1);
    /// t.step(&[2, 0, 2]);
    /// assert_eq!(t.steps_done(), 1);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`Microgpt::loss`].
    pub fn step(&mut self, tokens: &[usize]) -> f64 {
        let value = self.gradient(tokens);
        self.update();
        value
    }

    /// One training step on a batch of documents: the mean loss of `batch` and its mean
    /// gradient, computed by [`mean_value_and_grad_by_cost`] on `threads` worker threads
    /// (one graph each, the longest documents started first, reduced in document order, so
    /// the bits are the same for any number of threads; 0 for one per core), then the Adam
    /// update. Returns the mean loss.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad_models::microgpt::{self, Trainer};
    ///
    /// let (_, tokenizer, rng) = microgpt::prepare("ab\n", 1);
    /// let batch = vec![vec![2, 0, 2], vec![2, 1, 0, 2]];
    /// let g_a = tapegrad::Graph::new();
    /// let mut a = Trainer::new(&g_a, &tokenizer, &mut rng.clone(), 5);
    /// let g_b = tapegrad::Graph::new();
    /// let mut b = Trainer::new(&g_b, &tokenizer, &mut rng.clone(), 5);
    /// let la = a.step_batch(&batch, 1);
    /// let lb = b.step_batch(&batch, 2);
    /// assert_eq!(la.to_bits(), lb.to_bits());
    /// assert_eq!(a.params().as_slice(), b.params().as_slice());
    /// ```
    ///
    /// # Panics
    ///
    /// As [`Microgpt::loss`], or if `batch` is empty.
    pub fn step_batch(&mut self, batch: &[Vec<usize>], threads: usize) -> f64 {
        let model = &self.model;
        // Longest documents first, so that the threads finish together.
        let (value, grads) =
            mean_value_and_grad_by_cost(&self.params, batch, threads, Vec::len, |p, tokens| {
                model.loss(p, tokens)
            })
            .expect("a non-empty batch, each loss its step's own node");
        self.grads = Some(grads);
        self.update();
        value
    }

    fn update(&mut self) {
        let grads = self.grads.take().expect("a gradient to update with");
        let adam = &mut self.adam;
        self.params
            .update(&grads, |values, g| adam.update(values, g))
            .expect("gradients of this store, computed at its current values");
    }
}
