//! Karpathy's microgpt (the character model of `MICROGPT.md`), bit for bit, written once over
//! [`Scalar`]. Uses the engine, `linalg` and `pyrandom`; no other model may depend on it.
//!
//! One layer, `n_embd` 16, 4 heads of width 4, block size 16, an MLP of width 64, no
//! biases, RMSNorm without gain: 4,192 parameters for the 27-token vocabulary of names.
//! Every floating-point operation is the reference's, in the reference's order (its
//! micrograd-style `Value` turns `a / b` into `a * b^-1` and `x^p` into C `pow`, sums start
//! from 0 and run left to right), so the losses, the trained weights and the sampled names
//! are the reference's own. [`Trainer`] trains in constant memory on one reused
//! [`Graph`]; [`sample`] draws names from plain `f64` parameters, with no graph at all.
//!
//! ```
//! use tapegrad::models::microgpt::{self, Trainer};
//!
//! let text = "emma\nolivia\nava\n";
//! let (docs, tokenizer, mut rng) = microgpt::prepare(text, 42);
//! let mut trainer = Trainer::new(&tokenizer, &mut rng, 10);
//! let first = trainer.step(&tokenizer.encode(&docs[0]));
//! let second = trainer.step(&tokenizer.encode(&docs[0]));
//! assert!(second < first); // Adam went downhill on the same document
//! let name = microgpt::sample(trainer.params(), &tokenizer, &mut rng, 0.5);
//! assert!(name.chars().all(|c| "emaolivy".contains(c)));
//! ```

use std::hint::black_box;

use crate::Scalar;
use crate::linalg::{Matrix, mat_vec};
use crate::parallel::DataParallel;
use crate::pyrandom::PyRandom;
use crate::{Gradients, Graph, Mark};

/// The width of the residual stream.
///
/// # Examples
///
/// ```
/// use tapegrad::models::microgpt::{HEAD_DIM, N_EMBD, N_HEAD};
/// assert_eq!(N_EMBD, N_HEAD * HEAD_DIM);
/// ```
pub const N_EMBD: usize = 16;
/// The number of attention heads.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad::models::microgpt::N_HEAD, 4);
/// ```
pub const N_HEAD: usize = 4;
/// The width of one head.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad::models::microgpt::HEAD_DIM, 4);
/// ```
pub const HEAD_DIM: usize = N_EMBD / N_HEAD;
/// The longest context: at most this many positions per document (and per sample).
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad::models::microgpt::BLOCK_SIZE, 16);
/// ```
pub const BLOCK_SIZE: usize = 16;
/// The MLP's hidden width (`4 * N_EMBD`).
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad::models::microgpt::MLP_WIDTH, 64);
/// ```
pub const MLP_WIDTH: usize = 4 * N_EMBD;
/// The standard deviation of the initial weights, `random.gauss(0, 0.08)`.
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad::models::microgpt::INIT_STD, 0.08);
/// ```
pub const INIT_STD: f64 = 0.08;

/// The reference's Adam hyper-parameters: learning rate `0.01 * (1 - step / steps)`,
/// `beta1 = 0.85`, `beta2 = 0.99`, `eps = 1e-8`.
///
/// # Examples
///
/// ```
/// use tapegrad::models::microgpt::ADAM;
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
/// let c = tapegrad::models::microgpt::AdamConfig { lr: 0.1, ..tapegrad::models::microgpt::ADAM };
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
/// assert_eq!(tapegrad::models::microgpt::c_pow(2.0, -1.0), 0.5);
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

/// How far (in units in the last place) a correctly rounded result may lie from the exact
/// value for C's `pow` to be certain to return it. glibc's `pow` is within 0.52 ulp of the
/// exact value, so where the exact value is closer than `0.5 - 0.02` ulp to the correctly
/// rounded one, that is the only double `pow` can return. (Measured on this machine's glibc
/// 2.36 over 5e7 inputs: `pow` differed from `x * x` or `sqrt(x)` only where the exact
/// value lay beyond 0.4916 ulp, within 0.0084 ulp of a rounding midpoint.)
const SURE_ULPS: f64 = 0.48;

/// `pow(x, 2.0)` exactly as C's `pow` gives it, fast: `x * x` wherever that is provably the
/// same double (about 96% of inputs), `pow` itself near a rounding midpoint.
///
/// # Examples
///
/// ```
/// use tapegrad::models::microgpt::{c_pow, pow2};
/// for x in [0.0, 3.0, 0.1, -1e-7, 1.000_000_000_000_000_2] {
///     assert_eq!(pow2(x).to_bits(), c_pow(x, 2.0).to_bits());
/// }
/// ```
#[inline]
pub fn pow2(x: f64) -> f64 {
    let xx = x * x;
    let a = x.abs();
    if a > 1e-140 && a < 1e140 {
        let (u, power_of_two) = ulp(xx);
        if !power_of_two && product_error(x, x, xx).abs() < SURE_ULPS * u {
            return xx;
        }
    }
    c_pow(x, 2.0)
}

/// `pow(x, 0.5)` exactly as C's `pow` gives it, fast: `sqrt(x)` wherever that is provably
/// the same double, `pow` itself near a rounding midpoint.
///
/// # Examples
///
/// ```
/// use tapegrad::models::microgpt::{c_pow, pow_half};
/// for x in [0.0, 4.0, 2.0, 1e-9, 0.37] {
///     assert_eq!(pow_half(x).to_bits(), c_pow(x, 0.5).to_bits());
/// }
/// ```
#[inline]
pub fn pow_half(x: f64) -> f64 {
    let s = x.sqrt();
    if x > 1e-280 && x < 1e280 {
        let (u, power_of_two) = ulp(s);
        let ss = s * s;
        // x - s^2 exactly up to one rounding (x - ss is exact by Sterbenz), so the exact
        // root is s + r / 2s to far better than the margin.
        let r = (x - ss) - product_error(s, s, ss);
        if !power_of_two && (r / (2.0 * s)).abs() < SURE_ULPS * u {
            return s;
        }
    }
    c_pow(x, 0.5)
}

/// `x^p` for a constant `p` as the reference's `Value.__pow__` makes it: value `pow(x, p)`,
/// partial `p * pow(x, p - 1)` (what [`Scalar::powf`] records for `Var`; its exponent,
/// a constant node, gets a gradient nobody reads).
fn pow_const<T: Scalar>(x: T, p: f64) -> T {
    x.powf(x.lift(black_box(p)))
}

/// The characters of the documents, sorted, and `BOS` after them.
///
/// # Examples
///
/// ```
/// use tapegrad::models::microgpt::Tokenizer;
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
    /// let t = tapegrad::models::microgpt::Tokenizer::new(&["hello".to_string()]);
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
    /// let t = tapegrad::models::microgpt::Tokenizer::new(&["ba".to_string()]);
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
    /// let t = tapegrad::models::microgpt::Tokenizer::new(&["ba".to_string()]);
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
    /// let t = tapegrad::models::microgpt::Tokenizer::new(&["ba".to_string()]);
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
    /// let t = tapegrad::models::microgpt::Tokenizer::new(&["ba".to_string()]);
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
    /// let t = tapegrad::models::microgpt::Tokenizer::new(&["ba".to_string()]);
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
/// let docs = tapegrad::models::microgpt::read_docs("  emma\r\n\n ava \n");
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
/// let (docs, tokenizer, _rng) = tapegrad::models::microgpt::prepare("b\na\nc\n", 42);
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

/// One weight matrix's place in [`Params`]: its name, shape (out x in, row-major) and
/// offset.
///
/// # Examples
///
/// ```
/// let p = tapegrad::models::microgpt::Params::<f64>::zeros(27);
/// let fc1 = p.specs().iter().find(|s| s.name == "layer0.mlp_fc1").unwrap();
/// assert_eq!((fc1.rows, fc1.cols), (64, 16));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The reference's `state_dict` key.
    pub name: &'static str,
    /// Output size (rows).
    pub rows: usize,
    /// Input size (columns).
    pub cols: usize,
    /// Where the matrix starts in the flat parameter vector.
    pub offset: usize,
}

/// The weight matrices, in the reference's order, for a vocabulary of `vocab` tokens.
fn specs(vocab: usize) -> Vec<TensorSpec> {
    let shapes = [
        ("wte", vocab, N_EMBD),
        ("wpe", BLOCK_SIZE, N_EMBD),
        ("lm_head", vocab, N_EMBD),
        ("layer0.attn_wq", N_EMBD, N_EMBD),
        ("layer0.attn_wk", N_EMBD, N_EMBD),
        ("layer0.attn_wv", N_EMBD, N_EMBD),
        ("layer0.attn_wo", N_EMBD, N_EMBD),
        ("layer0.mlp_fc1", MLP_WIDTH, N_EMBD),
        ("layer0.mlp_fc2", N_EMBD, MLP_WIDTH),
    ];
    let mut offset = 0;
    shapes
        .iter()
        .map(|&(name, rows, cols)| {
            let spec = TensorSpec {
                name,
                rows,
                cols,
                offset,
            };
            offset += rows * cols;
            spec
        })
        .collect()
}

/// The model's parameters as one flat vector (the reference's `params` list: the matrices
/// of [`Params::specs`] in order, each row by row), of `f64` (plain) or `Var` (recorded).
///
/// # Examples
///
/// ```
/// use tapegrad::{microgpt::Params, pyrandom::PyRandom};
///
/// let p = Params::init(27, &mut PyRandom::seed(42));
/// assert_eq!(p.as_slice().len(), 4192);
/// assert_eq!(p.tensor("wpe").len(), 16 * 16);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Params<T> {
    vocab: usize,
    specs: Vec<TensorSpec>,
    data: Vec<T>,
}

/// Where each matrix starts in the flat parameters, so the forward pass does not search
/// by name.
#[derive(Clone, Copy)]
struct Layout {
    wte: usize,
    wpe: usize,
    lm_head: usize,
    wq: usize,
    wk: usize,
    wv: usize,
    wo: usize,
    fc1: usize,
    fc2: usize,
}

impl<T: Copy> Params<T> {
    /// Parameters from a flat vector in the order of [`Params::specs`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::models::microgpt::Params;
    /// let p = Params::from_flat(27, vec![0.5; 4192]).unwrap();
    /// assert_eq!(p.tensor("lm_head")[0], 0.5);
    /// assert!(Params::from_flat(27, vec![0.5; 10]).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// If `data` does not have [`n_params(vocab)`](n_params) entries (the message gives both
    /// counts).
    pub fn from_flat(vocab: usize, data: Vec<T>) -> Result<Self, String> {
        let want = n_params(vocab);
        if data.len() != want {
            return Err(format!(
                "microgpt with a vocabulary of {vocab} has {want} parameters, got {}",
                data.len()
            ));
        }
        Ok(Params {
            vocab,
            specs: specs(vocab),
            data,
        })
    }

    /// The vocabulary size the shapes are for.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tapegrad::models::microgpt::Params::<f64>::zeros(5).vocab_size(), 5);
    /// ```
    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    /// The matrices' names, shapes and offsets, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = tapegrad::models::microgpt::Params::<f64>::zeros(27);
    /// assert_eq!(p.specs()[0].name, "wte");
    /// assert_eq!(p.specs().len(), 9);
    /// ```
    pub fn specs(&self) -> &[TensorSpec] {
        &self.specs
    }

    /// All parameters, flat.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tapegrad::models::microgpt::Params::<f64>::zeros(27).as_slice().len(), 4192);
    /// ```
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// The matrix called `name`, flat, row by row.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = tapegrad::models::microgpt::Params::<f64>::zeros(27);
    /// assert_eq!(p.tensor("layer0.mlp_fc2").len(), 16 * 64);
    /// ```
    ///
    /// # Panics
    ///
    /// If there is no matrix called `name`.
    pub fn tensor(&self, name: &str) -> &[T] {
        let Some(s) = self.specs.iter().find(|s| s.name == name) else {
            panic!("microgpt has no parameter matrix {name:?}");
        };
        &self.data[s.offset..s.offset + s.rows * s.cols]
    }

    /// The same shapes with every entry mapped by `f` (e.g. `f64` to a graph's `Var`s).
    ///
    /// # Examples
    ///
    /// ```
    /// let p = tapegrad::models::microgpt::Params::<f64>::zeros(27).map(|x| x + 1.0);
    /// assert_eq!(p.as_slice()[7], 1.0);
    /// ```
    pub fn map<U>(&self, f: impl FnMut(T) -> U) -> Params<U> {
        Params {
            vocab: self.vocab,
            specs: self.specs.clone(),
            data: self.data.iter().copied().map(f).collect(),
        }
    }
}

impl Layout {
    /// The offsets of [`specs`]`(vocab)`, by arithmetic.
    fn new(vocab: usize) -> Self {
        let square = N_EMBD * N_EMBD;
        let wpe = vocab * N_EMBD;
        let lm_head = wpe + BLOCK_SIZE * N_EMBD;
        let wq = lm_head + vocab * N_EMBD;
        let fc1 = wq + 4 * square;
        Layout {
            wte: 0,
            wpe,
            lm_head,
            wq,
            wk: wq + square,
            wv: wq + 2 * square,
            wo: wq + 3 * square,
            fc1,
            fc2: fc1 + MLP_WIDTH * N_EMBD,
        }
    }
}

impl Params<f64> {
    /// All zeros.
    ///
    /// # Examples
    ///
    /// ```
    /// let p = tapegrad::models::microgpt::Params::<f64>::zeros(27);
    /// assert!(p.as_slice().iter().all(|&x| x == 0.0));
    /// ```
    pub fn zeros(vocab: usize) -> Self {
        Params {
            vocab,
            specs: specs(vocab),
            data: vec![0.0; n_params(vocab)],
        }
    }

    /// The reference's initial weights: `random.gauss(0, 0.08)` for every entry, matrix by
    /// matrix in the order of [`Params::specs`], row by row.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{microgpt::Params, pyrandom::PyRandom};
    /// let mut rng = PyRandom::seed(42);
    /// let first = rng.clone().gauss(0.0, 0.08);
    /// assert_eq!(Params::init(27, &mut rng).as_slice()[0], first);
    /// ```
    pub fn init(vocab: usize, rng: &mut PyRandom) -> Self {
        let data = (0..n_params(vocab))
            .map(|_| rng.gauss(0.0, INIT_STD))
            .collect();
        Params {
            vocab,
            specs: specs(vocab),
            data,
        }
    }

    /// The parameters as a mutable flat slice (for an optimizer or a loader).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut p = tapegrad::models::microgpt::Params::<f64>::zeros(27);
    /// p.as_mut_slice()[0] = 1.0;
    /// assert_eq!(p.tensor("wte")[0], 1.0);
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [f64] {
        &mut self.data
    }
}

/// The number of parameters for a vocabulary of `vocab` tokens (4,192 for 27).
///
/// # Examples
///
/// ```
/// assert_eq!(tapegrad::models::microgpt::n_params(27), 4192);
/// ```
pub fn n_params(vocab: usize) -> usize {
    2 * vocab * N_EMBD + BLOCK_SIZE * N_EMBD + 4 * N_EMBD * N_EMBD + 2 * MLP_WIDTH * N_EMBD
}

/// The keys and values of the positions seen so far (the reference's `keys`, `values`).
///
/// # Examples
///
/// ```
/// let cache = tapegrad::models::microgpt::KvCache::<f64>::new();
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
    /// assert!(tapegrad::models::microgpt::KvCache::<f64>::new().is_empty());
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
    /// assert_eq!(tapegrad::models::microgpt::KvCache::<f64>::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no position is cached.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tapegrad::models::microgpt::KvCache::<f64>::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// `x * (ms + 1e-5)^-0.5` with `ms = (sum x_i^2) / 16`, as the reference: `ms` is
/// `sum * 0.0625` (its `/ 16` is `* 16**-1`), the power is C `pow`.
fn rmsnorm<T: Scalar>(x: &[T]) -> Vec<T> {
    let ms = T::dot(x, x) * (1.0 / x.len() as f64);
    let scale = pow_const(ms + 1e-5, -0.5);
    x.iter().map(|&xi| xi * scale).collect()
}

/// The softmax as the reference forms it: shift by the maximum taken as a plain number,
/// exponentiate, sum left to right, and multiply each exp by its own `pow(total, -1)`
/// (the reference's `e / total` makes a fresh `total**-1` per entry).
///
/// # Examples
///
/// ```
/// let p = tapegrad::models::microgpt::softmax(&[1.0, 2.0, 3.0]);
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

/// `exp(z - max z)` for every `z`, the maximum a plain number.
fn shifted_exps<T: Scalar>(logits: &[T]) -> Vec<T> {
    assert!(!logits.is_empty(), "softmax of no logits");
    let max = logits
        .iter()
        .map(Scalar::value)
        .fold(f64::NEG_INFINITY, f64::max);
    logits.iter().map(|&z| (z - max).exp()).collect()
}

/// The logits of the next token after `token` at position `pos`, appending this position's
/// key and value to `cache` (the reference's `gpt`).
///
/// # Examples
///
/// ```
/// use tapegrad::{microgpt::{self, KvCache, Params}, pyrandom::PyRandom};
///
/// let p = Params::init(27, &mut PyRandom::seed(42));
/// let mut cache = KvCache::new();
/// let logits = microgpt::gpt(&p, 26, 0, &mut cache);
/// assert_eq!((logits.len(), cache.len()), (27, 1));
/// ```
///
/// # Panics
///
/// If `token` is outside the vocabulary, `pos >= BLOCK_SIZE`, or `cache` does not hold
/// exactly `pos` positions.
pub fn gpt<T: Scalar>(p: &Params<T>, token: usize, pos: usize, cache: &mut KvCache<T>) -> Vec<T> {
    gpt_flat(p.vocab, &p.data, token, pos, cache)
}

/// [`gpt`] over the parameters as a flat slice in [`Params`]' order.
fn gpt_flat<T: Scalar>(
    vocab: usize,
    data: &[T],
    token: usize,
    pos: usize,
    cache: &mut KvCache<T>,
) -> Vec<T> {
    assert_eq!(
        data.len(),
        n_params(vocab),
        "gpt: a vocabulary of {vocab} needs {} parameters, got {}",
        n_params(vocab),
        data.len()
    );
    assert!(
        token < vocab,
        "gpt: token {token} is outside the vocabulary of {vocab}"
    );
    assert!(
        pos < BLOCK_SIZE,
        "gpt: position {pos} is past the block size {BLOCK_SIZE}"
    );
    assert_eq!(
        cache.len(),
        pos,
        "gpt: position {pos} needs a cache of {pos} positions"
    );
    let l = Layout::new(vocab);
    let matrix = |offset: usize, rows: usize, cols: usize| {
        Matrix::new(&data[offset..offset + rows * cols], rows, cols)
    };
    let wte = &data[l.wte + token * N_EMBD..][..N_EMBD];
    let wpe = &data[l.wpe + pos * N_EMBD..][..N_EMBD];
    let x: Vec<T> = wte.iter().zip(wpe).map(|(&t, &q)| t + q).collect();
    let x = rmsnorm(&x);

    // Attention.
    let residual = x;
    let x = rmsnorm(&residual);
    let q = mat_vec(matrix(l.wq, N_EMBD, N_EMBD), &x);
    cache.keys.push(mat_vec(matrix(l.wk, N_EMBD, N_EMBD), &x));
    cache.values.push(mat_vec(matrix(l.wv, N_EMBD, N_EMBD), &x));
    let mut attended = Vec::with_capacity(N_EMBD);
    let mut column = Vec::with_capacity(pos + 1);
    for h in 0..N_HEAD {
        let head = h * HEAD_DIM..(h + 1) * HEAD_DIM;
        // `/ sqrt(4)` is `* 2.0**-1`, that is `* 0.5`.
        let scores: Vec<T> = cache
            .keys
            .iter()
            .map(|k| T::dot(&q[head.clone()], &k[head.clone()]) * 0.5)
            .collect();
        let weights = softmax(&scores);
        for j in head {
            column.clear();
            column.extend(cache.values.iter().map(|v| v[j]));
            attended.push(T::dot(&weights, &column));
        }
    }
    let x = mat_vec(matrix(l.wo, N_EMBD, N_EMBD), &attended);
    let x: Vec<T> = x.iter().zip(&residual).map(|(&a, &b)| a + b).collect();

    // MLP.
    let residual = x;
    let x = rmsnorm(&residual);
    let hidden = mat_vec(matrix(l.fc1, MLP_WIDTH, N_EMBD), &x);
    let hidden: Vec<T> = hidden.into_iter().map(Scalar::relu).collect();
    let x = mat_vec(matrix(l.fc2, N_EMBD, MLP_WIDTH), &hidden);
    let x: Vec<T> = x.iter().zip(&residual).map(|(&a, &b)| a + b).collect();

    mat_vec(matrix(l.lm_head, vocab, N_EMBD), &x)
}

/// The mean next-token loss over a document's tokens (`[BOS] + chars + [BOS]`), at most
/// [`BLOCK_SIZE`] positions: `(1/n) * sum_t -ln(p_t)`, formed as the reference forms it.
///
/// # Examples
///
/// ```
/// use tapegrad::{microgpt::{self, Params}, pyrandom::PyRandom};
///
/// let p = Params::init(27, &mut PyRandom::seed(42));
/// let loss = microgpt::loss(&p, &[26, 4, 12, 12, 0, 26]);
/// // Near ln 27 = 3.30 for small random weights.
/// assert!((loss - 27f64.ln()).abs() < 0.2);
/// ```
///
/// # Panics
///
/// If `tokens` has fewer than 2 entries, or one outside the vocabulary.
pub fn loss<T: Scalar>(p: &Params<T>, tokens: &[usize]) -> T {
    loss_flat(p.vocab, &p.data, tokens)
}

/// [`loss`] with the parameters as a flat slice in [`Params`]' order, e.g. the inputs a
/// [`DataParallel`](crate::parallel::DataParallel) worker has bound.
///
/// # Examples
///
/// ```
/// use tapegrad::{models::microgpt::{self, Params}, pyrandom::PyRandom};
///
/// let p = Params::init(27, &mut PyRandom::seed(42));
/// let tokens = [26, 4, 12, 12, 0, 26];
/// assert_eq!(microgpt::loss_flat(27, p.as_slice(), &tokens), microgpt::loss(&p, &tokens));
/// ```
///
/// # Panics
///
/// As [`loss`], and if `params` does not have [`n_params`]`(vocab)` entries.
pub fn loss_flat<T: Scalar>(vocab: usize, params: &[T], tokens: &[usize]) -> T {
    assert!(
        tokens.len() >= 2,
        "loss: a document needs at least 2 tokens ([BOS] + [BOS]), got {}",
        tokens.len()
    );
    let n = BLOCK_SIZE.min(tokens.len() - 1);
    let mut cache = KvCache::new();
    let losses: Vec<T> = (0..n)
        .map(|pos| {
            let logits = gpt_flat(vocab, params, tokens[pos], pos, &mut cache);
            let target = tokens[pos + 1];
            assert!(
                target < vocab,
                "loss: token {target} is outside the vocabulary of {vocab}"
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

/// The reference's Adam, operation for operation (`g**2`, `(1 - beta**(t+1))`,
/// `v_hat**0.5` in C `pow`, the first and last through [`pow2`] and [`pow_half`], which
/// give `pow`'s own bits faster), with the learning rate `lr * (1 - step / steps)`.
///
/// # Examples
///
/// ```
/// use tapegrad::models::microgpt::{Adam, ADAM};
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
    /// let adam = tapegrad::models::microgpt::Adam::new(4192, tapegrad::models::microgpt::ADAM, 1000);
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
    /// assert_eq!(tapegrad::models::microgpt::Adam::new(1, tapegrad::models::microgpt::ADAM, 5).step(), 0);
    /// ```
    pub fn step(&self) -> usize {
        self.step
    }

    /// The learning rate of the next update: `lr * (1 - step / steps)`.
    ///
    /// # Examples
    ///
    /// ```
    /// let adam = tapegrad::models::microgpt::Adam::new(1, tapegrad::models::microgpt::ADAM, 1000);
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
    /// let mut adam = tapegrad::models::microgpt::Adam::new(2, tapegrad::models::microgpt::ADAM, 100);
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
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = beta1 * *m + c1 * g;
            *v = beta2 * *v + c2 * pow2(g);
            let m_hat = *m / d1;
            let v_hat = *v / d2;
            *p -= lr * m_hat / (pow_half(v_hat) + eps);
        }
        self.step += 1;
    }
}

/// Trains microgpt one document per step on one [`Graph`] that is reused every step, so
/// memory stays constant: each step binds the parameters as inputs, records the loss,
/// runs backward, releases the step's nodes and lets [`Adam`] update the parameters.
///
/// # Examples
///
/// ```
/// use tapegrad::models::microgpt::{self, Trainer};
///
/// let (docs, tokenizer, mut rng) = microgpt::prepare("anna\nbob\n", 1);
/// let mut trainer = Trainer::new(&tokenizer, &mut rng, 2);
/// let loss = trainer.step(&tokenizer.encode(&docs[0]));
/// assert!(loss > 0.0);
/// assert_eq!(trainer.steps_done(), 1);
/// ```
pub struct Trainer {
    params: Params<f64>,
    adam: Adam,
    graph: Graph,
    empty: Mark,
    grads: Gradients,
    flat_grads: Vec<f64>,
    last_nodes: usize,
}

impl Trainer {
    /// A trainer for a run of `steps` steps, from the reference's initial weights drawn
    /// from `rng` (which must be just after [`prepare`]'s shuffle to be the reference's).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::models::microgpt::{self, Trainer};
    /// let (_, tokenizer, mut rng) = microgpt::prepare("ab\n", 1);
    /// assert_eq!(Trainer::new(&tokenizer, &mut rng, 1).params().as_slice().len(),
    ///            microgpt::n_params(3));
    /// ```
    pub fn new(tokenizer: &Tokenizer, rng: &mut PyRandom, steps: usize) -> Self {
        Trainer::from_params(Params::init(tokenizer.vocab_size(), rng), steps)
    }

    /// A trainer starting from `params`, for a run of `steps` steps.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::models::microgpt::{Params, Trainer};
    /// let t = Trainer::from_params(Params::zeros(3), 10);
    /// assert_eq!(t.steps_done(), 0);
    /// ```
    pub fn from_params(params: Params<f64>, steps: usize) -> Self {
        let n = params.as_slice().len();
        let graph = Graph::new();
        let empty = graph.mark();
        Trainer {
            params,
            adam: Adam::new(n, ADAM, steps),
            graph,
            empty,
            grads: Gradients::new(),
            flat_grads: Vec::with_capacity(n),
            last_nodes: 0,
        }
    }

    /// The current parameters.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::models::microgpt::{Params, Trainer};
    /// assert_eq!(Trainer::from_params(Params::zeros(3), 1).params().vocab_size(), 3);
    /// ```
    pub fn params(&self) -> &Params<f64> {
        &self.params
    }

    /// The trainer's parameters, giving up the trainer.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::models::microgpt::{Params, Trainer};
    /// assert_eq!(Trainer::from_params(Params::zeros(3), 1).into_params(), Params::zeros(3));
    /// ```
    pub fn into_params(self) -> Params<f64> {
        self.params
    }

    /// The number of steps taken.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::models::microgpt::{Params, Trainer};
    /// assert_eq!(Trainer::from_params(Params::zeros(3), 1).steps_done(), 0);
    /// ```
    pub fn steps_done(&self) -> usize {
        self.adam.step()
    }

    /// The number of tape nodes the last step recorded (parameters included).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::models::microgpt::{Params, Trainer};
    /// let mut t = Trainer::from_params(Params::zeros(3), 1);
    /// t.step(&[2, 0, 2]);
    /// assert!(t.last_nodes() > tapegrad::models::microgpt::n_params(3));
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
    /// use tapegrad::models::microgpt::{Params, Trainer};
    /// let mut t = Trainer::from_params(Params::zeros(3), 2);
    /// t.step(&[2, 0, 2]);
    /// let bytes = t.tape_bytes();
    /// t.step(&[2, 0, 2]);
    /// assert_eq!(t.tape_bytes(), bytes);
    /// ```
    pub fn tape_bytes(&self) -> usize {
        self.graph.heap_bytes()
    }

    /// The gradient of the last step's loss, in the order of [`Params::as_slice`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::models::microgpt::{Params, Trainer};
    /// let mut t = Trainer::from_params(Params::zeros(3), 1);
    /// t.step(&[2, 0, 2]);
    /// assert_eq!(t.last_gradient().len(), tapegrad::models::microgpt::n_params(3));
    /// ```
    pub fn last_gradient(&self) -> &[f64] {
        &self.flat_grads
    }

    /// The loss of one document (its tokens, `[BOS] + chars + [BOS]`) and its gradient,
    /// without updating the parameters; the gradient is then [`Trainer::last_gradient`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::models::microgpt::{Params, Trainer};
    /// let mut t = Trainer::from_params(Params::zeros(3), 1);
    /// // All-zero weights: uniform predictions, loss ln 3.
    /// approx::assert_relative_eq!(t.gradient(&[2, 0, 2]), 3f64.ln(), epsilon = 1e-15);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`loss`].
    pub fn gradient(&mut self, tokens: &[usize]) -> f64 {
        let g = &self.graph;
        let vars = Params {
            vocab: self.params.vocab,
            specs: self.params.specs.clone(),
            data: g.vars(self.params.as_slice()),
        };
        let loss = loss(&vars, tokens);
        let value = loss.value();
        self.last_nodes = g.len();
        loss.backward_into(&mut self.grads);
        self.flat_grads.clear();
        self.flat_grads
            .extend(self.grads.wrt_all(vars.as_slice()).iter().copied());
        drop(vars);
        g.release(self.empty);
        value
    }

    /// One training step on one document: loss, gradient, Adam update. Returns the loss
    /// (before the update).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::models::microgpt::{Params, Trainer};
    /// let mut t = Trainer::from_params(Params::zeros(3), 1);
    /// t.step(&[2, 0, 2]);
    /// assert_eq!(t.steps_done(), 1);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`loss`].
    pub fn step(&mut self, tokens: &[usize]) -> f64 {
        let value = self.gradient(tokens);
        self.adam
            .update(self.params.as_mut_slice(), &self.flat_grads);
        value
    }
}

impl Trainer {
    /// One training step on a batch of documents: the mean loss of `batch` and its mean
    /// gradient, computed by `workers` (one graph per thread, reduced in a fixed order, so
    /// the bits are the same for any number of threads), then the Adam update. A batch of one
    /// document is [`Trainer::step`] bit for bit. Returns the mean loss.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{models::microgpt::{Params, Trainer}, parallel::DataParallel};
    ///
    /// let batch = vec![vec![2, 0, 2], vec![2, 1, 0, 2]];
    /// let (mut a, mut b) = (Trainer::from_params(Params::zeros(3), 5), Trainer::from_params(Params::zeros(3), 5));
    /// let la = a.step_batch(&batch, &mut DataParallel::new(1));
    /// let lb = b.step_batch(&batch, &mut DataParallel::new(2));
    /// assert_eq!(la.to_bits(), lb.to_bits());
    /// assert_eq!(a.params(), b.params());
    /// ```
    ///
    /// # Panics
    ///
    /// As [`loss`], or if `batch` is empty.
    pub fn step_batch(&mut self, batch: &[Vec<usize>], workers: &mut DataParallel) -> f64 {
        let vocab = self.params.vocab;
        let value = workers.mean_gradient(
            self.params.as_slice(),
            batch,
            &mut self.flat_grads,
            |vars, tokens| loss_flat(vocab, vars, tokens),
        );
        self.adam
            .update(self.params.as_mut_slice(), &self.flat_grads);
        value
    }
}

/// One sampled document: from `BOS`, at most [`BLOCK_SIZE`] tokens, each drawn with
/// `random.choices` from `softmax(logits / temperature)`, stopping at `BOS` (the
/// reference's sampling loop, on plain `f64`).
///
/// # Examples
///
/// ```
/// use tapegrad::{microgpt::{self, Params, Tokenizer}, pyrandom::PyRandom};
///
/// let t = Tokenizer::new(&["ab".to_string()]);
/// let p = Params::zeros(t.vocab_size());
/// let name = microgpt::sample(&p, &t, &mut PyRandom::seed(1), 0.5);
/// assert!(name.len() <= 16 && name.chars().all(|c| c == 'a' || c == 'b'));
/// ```
///
/// # Panics
///
/// If `tokenizer`'s vocabulary is not `params`'s.
pub fn sample(
    params: &Params<f64>,
    tokenizer: &Tokenizer,
    rng: &mut PyRandom,
    temperature: f64,
) -> String {
    assert_eq!(
        params.vocab_size(),
        tokenizer.vocab_size(),
        "sample: parameters for a vocabulary of {} with a tokenizer of {}",
        params.vocab_size(),
        tokenizer.vocab_size()
    );
    // `logit / temperature` is `logit * temperature**-1`.
    let inv_t = c_pow(temperature, -1.0);
    let mut cache = KvCache::new();
    let mut token = tokenizer.bos();
    let mut ids = Vec::new();
    for pos in 0..BLOCK_SIZE {
        let logits: Vec<f64> = gpt(params, token, pos, &mut cache)
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
