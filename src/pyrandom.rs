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

    /// `k` random bits as an integer, as Python's `random.getrandbits(k)` for `k <= 64`.
    ///
    /// CPython takes the top `k` bits of one 32-bit draw when `k <= 32`; for more it fills
    /// 32-bit words from the least significant up, one draw each, and keeps only the top
    /// bits of the last (most significant) word's draw. `getrandbits(0)` is 0 and draws
    /// nothing. For `k > 64` use [`PyRandom::getrandbits_words`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::pyrandom::PyRandom;
    /// // Python: random.seed(42); random.getrandbits(5), random.getrandbits(40)
    /// let mut rng = PyRandom::seed(42);
    /// assert_eq!(rng.getrandbits(5), 20);
    /// assert_eq!(rng.getrandbits(40), 26_247_967_103);
    /// ```
    ///
    /// # Panics
    ///
    /// If `k > 64` (the result would not fit a `u64`).
    pub fn getrandbits(&mut self, k: u32) -> u64 {
        assert!(
            k <= 64,
            "getrandbits({k}): more than 64 bits do not fit a u64; use getrandbits_words"
        );
        self.getrandbits_words(k)
            .iter()
            .rev()
            .fold(0, |acc, &w| (acc << 32) | u64::from(w))
    }

    /// `k` random bits for any `k`, as the 32-bit words of Python's
    /// `random.getrandbits(k)`, least significant word first (`ceil(k / 32)` words, one
    /// 32-bit draw each; the last holds the top `k mod 32` bits of its draw when `k` is
    /// not a multiple of 32).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::pyrandom::PyRandom;
    /// // Python: random.seed(42); x = random.getrandbits(70)
    /// // [x & 0xffffffff, (x >> 32) & 0xffffffff, x >> 64] == [2746317213, 478163327, 1]
    /// let mut rng = PyRandom::seed(42);
    /// assert_eq!(rng.getrandbits_words(70), vec![2_746_317_213, 478_163_327, 1]);
    /// ```
    pub fn getrandbits_words(&mut self, k: u32) -> Vec<u32> {
        if k <= 32 {
            // CPython's fast path, the same draw as the general loop below would make.
            return if k == 0 {
                Vec::new()
            } else {
                vec![self.mt.next_u32() >> (32 - k)]
            };
        }
        let mut left = k;
        let mut words = Vec::with_capacity(k.div_ceil(32) as usize);
        while left > 0 {
            let r = self.mt.next_u32();
            words.push(if left < 32 { r >> (32 - left) } else { r });
            left = left.saturating_sub(32);
        }
        words
    }

    /// A uniform integer in `[0, n)`, as Python's `random._randbelow(n)` (what
    /// `randrange`, `shuffle` and `choice` use): with `k` the bit length of `n`, draw
    /// [`getrandbits(k)`](PyRandom::getrandbits) until it is below `n`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::pyrandom::PyRandom;
    /// // Python: random.seed(42); [random._inst._randbelow(10) for _ in range(5)]
    /// let mut rng = PyRandom::seed(42);
    /// let draws: Vec<u64> = (0..5).map(|_| rng.randbelow(10)).collect();
    /// assert_eq!(draws, vec![1, 0, 4, 3, 3]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `n == 0` (there is no integer in `[0, 0)`; CPython would loop forever).
    pub fn randbelow(&mut self, n: u64) -> u64 {
        assert!(n > 0, "randbelow(0): the range [0, 0) is empty");
        let k = u64::BITS - n.leading_zeros();
        loop {
            let r = self.getrandbits(k);
            if r < n {
                return r;
            }
        }
    }

    /// Shuffles `x` in place as Python's `random.shuffle(x)`: for `i` from `len - 1` down
    /// to 1, swap `x[i]` with `x[randbelow(i + 1)]`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::pyrandom::PyRandom;
    /// // Python: random.seed(42); x = list(range(10)); random.shuffle(x); x
    /// let mut x: Vec<u32> = (0..10).collect();
    /// PyRandom::seed(42).shuffle(&mut x);
    /// assert_eq!(x, vec![7, 3, 2, 8, 5, 6, 9, 4, 0, 1]);
    /// ```
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        for i in (1..x.len()).rev() {
            // i + 1 <= len, which fits a u64; the draw is below it, so it fits a usize.
            let j = self.randbelow(i as u64 + 1) as usize;
            x.swap(i, j);
        }
    }

    /// `k` indices drawn with replacement in proportion to `weights`, as Python's
    /// `random.choices(range(len(weights)), weights=weights, k=k)`.
    ///
    /// CPython's steps, each rounding in the same place: the cumulative sums of the
    /// weights left to right (`itertools.accumulate`), `total = cum[-1] + 0.0`, then per
    /// draw `bisect_right(cum, random() * total, 0, n - 1)`: the first index whose
    /// cumulative weight exceeds the scaled uniform, never past the last index.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::pyrandom::PyRandom;
    /// // Python: random.seed(42); random.choices(range(3), weights=[0.2, 0.5, 0.3], k=5)
    /// let mut rng = PyRandom::seed(42);
    /// assert_eq!(rng.choices(&[0.2, 0.5, 0.3], 5), vec![1, 0, 1, 1, 2]);
    /// ```
    ///
    /// # Panics
    ///
    /// As CPython raises: if `weights` is empty, or their total is not a finite number
    /// greater than zero.
    pub fn choices(&mut self, weights: &[f64], k: usize) -> Vec<usize> {
        let cum: Vec<f64> = weights
            .iter()
            .scan(None, |acc: &mut Option<f64>, &w| {
                let next = acc.map_or(w, |a| a + w);
                *acc = Some(next);
                Some(next)
            })
            .collect();
        let Some(&last) = cum.last() else {
            panic!("choices: no weights (an empty population has nothing to choose)");
        };
        let total = last + 0.0;
        assert!(
            total > 0.0,
            "choices: the weights' total {total} must be greater than zero"
        );
        assert!(
            total.is_finite(),
            "choices: the weights' total {total} must be finite"
        );
        let hi = cum.len() - 1;
        (0..k)
            .map(|_| bisect_right(&cum, self.random() * total, hi))
            .collect()
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

    /// Python's `random.uniform(a, b)`, as CPython computes it: `a + (b - a) * random()`.
    /// micrograd draws every weight with `uniform(-1, 1)`; as an initialiser:
    /// `Linear::new(&mut params, "fc", 2, 16, &mut || rng.uniform(-1.0, 1.0))`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::pyrandom::PyRandom;
    /// // Python: random.seed(1337); [random.uniform(-1, 1) for _ in range(2)]
    /// let mut rng = PyRandom::seed(1337);
    /// assert_eq!(rng.uniform(-1.0, 1.0), 0.23550571390294128);
    /// assert_eq!(rng.uniform(-1.0, 1.0), 0.06653114721000164);
    /// ```
    pub fn uniform(&mut self, a: f64, b: f64) -> f64 {
        a + (b - a) * self.random()
    }
}

/// Python's `bisect.bisect_right(a, x, 0, hi)`: the first index in `[0, hi]` whose entry
/// exceeds `x` (`hi` if none does), by CPython's bisection, comparison for comparison.
fn bisect_right(a: &[f64], x: f64, mut hi: usize) -> usize {
    let mut lo = 0;
    while lo < hi {
        let mid = (lo + hi) / 2;
        if x < a[mid] {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}
