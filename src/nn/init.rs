//! Initialisers: closures that draw one entry at a time, for [`Params::init`] and the
//! modules' constructors. Python's `random` numbers bit for bit ([`PyRandom`]). Uses only
//! `pyrandom`.
//!
//! [`Params::init`]: crate::nn::Params::init

use crate::pyrandom::PyRandom;

/// Python's `random.uniform(lo, hi)` from `rng`, as CPython computes it:
/// `lo + (hi - lo) * random()`. micrograd draws every weight with `uniform(-1, 1)`.
///
/// # Examples
///
/// ```
/// use tapegrad::{nn::init, pyrandom::PyRandom};
/// // Python: random.seed(1337); random.uniform(-1, 1)
/// let mut rng = PyRandom::seed(1337);
/// let mut draw = init::uniform(&mut rng, -1.0, 1.0);
/// let first = draw();
/// assert_eq!(first, -1.0 + 2.0 * PyRandom::seed(1337).random());
/// ```
pub fn uniform(rng: &mut PyRandom, lo: f64, hi: f64) -> impl FnMut() -> f64 + '_ {
    move || lo + (hi - lo) * rng.random()
}

/// Python's `random.gauss(mu, sigma)` from `rng` (Box-Muller with CPython's cached second
/// value).
///
/// # Examples
///
/// ```
/// use tapegrad::{nn::init, pyrandom::PyRandom};
/// // Python: random.seed(42); random.gauss(0, 0.1)
/// let mut rng = PyRandom::seed(42);
/// let mut draw = init::gauss(&mut rng, 0.0, 0.1);
/// assert_eq!(draw(), -0.014409032957792837);
/// ```
pub fn gauss(rng: &mut PyRandom, mu: f64, sigma: f64) -> impl FnMut() -> f64 + '_ {
    move || rng.gauss(mu, sigma)
}

/// Every entry `value` (e.g. `constant(0.0)`).
///
/// # Examples
///
/// ```
/// let mut zero = tapegrad::nn::init::constant(0.0);
/// assert_eq!(zero(), 0.0);
/// ```
pub fn constant(value: f64) -> impl FnMut() -> f64 {
    move || value
}
