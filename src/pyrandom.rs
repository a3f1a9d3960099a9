//! [`PyRandom`]: the numbers of Python's `random` module, bit for bit. Plain numbers: it
//! uses nothing else in the crate.
//!
//! The tutorial series draws its weights with `random.seed(42)` and `random.gauss(0, 0.1)`.
//! Reproducing its printed numbers needs the very same stream: CPython's generator is
//! MT19937 (here the well-kept [`rand_mt`] crate rather than a hand-written copy), seeded by
//! `init_by_array` with the seed's 32-bit words, and its two derived draws are written
//! below exactly as CPython computes them, operation for operation, so that every rounding
//! happens in the same place.

use rand_mt::Mt;

/// `2 pi`, as CPython's `random.TWOPI`.
const TWO_PI: f64 = 2.0 * std::f64::consts::PI;

/// Python's `random.Random`: `random()` and `gauss(mu, sigma)` with the same bits as CPython.
///
/// # Examples
///
/// ```
/// use tapegrad::pyrandom::PyRandom;
///
/// // Python: random.seed(42); random.random()
/// let mut rng = PyRandom::seed(42);
/// assert_eq!(rng.random(), 0.6394267984578837);
/// ```
#[derive(Clone, Debug)]
pub struct PyRandom {
    mt: Mt,
    /// The second normal of the last Box-Muller pair, returned by the next `gauss` call
    /// (CPython's `gauss_next`).
    gauss_next: Option<f64>,
}

impl PyRandom {
    /// The generator after Python's `random.seed(n)` for a non-negative integer `n`.
    ///
    /// CPython seeds with `init_by_array` over the 32-bit words of `n`, least significant
    /// first, using as few words as `n` needs (one word, `[0]`, for `n = 0`). Seeding also
    /// forgets any cached `gauss` value, as CPython's `seed` does.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::pyrandom::PyRandom;
    /// // Python: random.seed(0); random.random()
    /// assert_eq!(PyRandom::seed(0).random(), 0.8444218515250481);
    /// ```
    pub fn seed(n: u64) -> Self {
        // Split into 32-bit words by design: that is CPython's key.
        let (low, high) = (n as u32, (n >> 32) as u32);
        let mt = if high == 0 {
            Mt::new_with_key([low])
        } else {
            Mt::new_with_key([low, high])
        };
        PyRandom {
            mt,
            gauss_next: None,
        }
    }

    /// A uniform number in `[0, 1)` with 53 random bits, as Python's `random.random()`:
    /// `(a * 2^26 + b) / 2^53` with `a` the top 27 bits of one 32-bit draw and `b` the top
    /// 26 bits of the next.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::pyrandom::PyRandom;
    /// let mut rng = PyRandom::seed(42);
    /// let x = rng.random();
    /// assert!((0.0..1.0).contains(&x));
    /// assert_eq!(rng.random(), 0.025010755222666936);
    /// ```
    pub fn random(&mut self) -> f64 {
        let a = f64::from(self.mt.next_u32() >> 5);
        let b = f64::from(self.mt.next_u32() >> 6);
        (a * 67_108_864.0 + b) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// A normal number with mean `mu` and standard deviation `sigma`, as Python's
    /// `random.gauss(mu, sigma)`.
    ///
    /// Box-Muller makes two normals from two uniforms `u1, u2`: with
    /// `r = sqrt(-2 ln(1 - u2))`, `cos(2 pi u1) r` is returned now and `sin(2 pi u1) r` is
    /// kept and returned (scaled by that call's `mu` and `sigma`) by the next call, which
    /// draws nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::pyrandom::PyRandom;
    /// // Python: random.seed(42); [random.gauss(0, 0.1) for _ in range(2)]
    /// let mut rng = PyRandom::seed(42);
    /// assert_eq!(rng.gauss(0.0, 0.1), -0.014409032957792837);
    /// assert_eq!(rng.gauss(0.0, 0.1), -0.01729036003315193);
    /// ```
    pub fn gauss(&mut self, mu: f64, sigma: f64) -> f64 {
        let z = match self.gauss_next.take() {
            Some(z) => z,
            None => {
                // CPython's order of operations, so the roundings agree.
                let x2pi = self.random() * TWO_PI;
                let g2rad = (-2.0 * (1.0 - self.random()).ln()).sqrt();
                self.gauss_next = Some(x2pi.sin() * g2rad);
                x2pi.cos() * g2rad
            }
        };
        mu + z * sigma
    }
}
