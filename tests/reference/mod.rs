//! An independent `f64` evaluation of every op, and central differences with an error
//! estimate, and the proptest run configuration, shared by `tests/properties.rs` and
//! `tests/fuzz.rs` (and a user-defined function they both draw).
//!
//! The reference values are written from the textbook definitions with `std`'s `f64`
//! functions, not through tapegrad's op table or its `Scalar` impl for `f64`, so a wrong
//! rule or a wrong value in the crate cannot also be in the reference.

use tapegrad::{Binary, Nary, Unary};

/// A user-defined function with its partials over `Scalar` (every order): `a sin(b)`, drawn
/// by the random programs beside the built-in ops.
pub struct Wave;

impl tapegrad::ScalarFn for Wave {
    fn name(&self) -> &'static str {
        "wave"
    }
    fn value(&self, xs: &[f64]) -> f64 {
        xs[0] * xs[1].sin()
    }
    fn partials<T: tapegrad::Scalar>(&self, xs: &[T], _y: T, out: &mut [T]) {
        out[0] = xs[1].sin();
        out[1] = xs[0] * xs[1].cos();
    }
}

/// One registration of [`Wave`] shared by every graph of the run.
pub static WAVE: std::sync::LazyLock<std::sync::Arc<dyn tapegrad::CustomFn>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(Wave));

/// `sqrt(2 / pi)` as `2/sqrt(pi) * 1/sqrt(2)`, both correctly rounded `std` constants.
fn sqrt_2_over_pi() -> f64 {
    std::f64::consts::FRAC_2_SQRT_PI * std::f64::consts::FRAC_1_SQRT_2
}

/// The value of a unary op at `x`. NaN in gives NaN out for every op, as in PyTorch, JAX
/// and micrograd (`relu(NaN)` is NaN, not 0: a NaN must never be silently erased).
pub fn unary(op: Unary, x: f64) -> f64 {
    match op {
        Unary::Neg => -x,
        Unary::Recip => 1.0 / x,
        Unary::Exp => x.exp(),
        Unary::Ln => x.ln(),
        Unary::Sqrt => x.sqrt(),
        Unary::Sin => x.sin(),
        Unary::Cos => x.cos(),
        Unary::Tanh => x.tanh(),
        Unary::Sinh => x.sinh(),
        Unary::Cosh => x.cosh(),
        Unary::Abs => x.abs(),
        Unary::Relu => {
            if x.is_nan() || x > 0.0 {
                x
            } else {
                0.0
            }
        }
        // 1 / (1 + e^-x), written as e^x / (1 + e^x) for negative x, where e^-x would
        // overflow and round a tiny (even subnormal) result to 0.
        Unary::Sigmoid => {
            if x >= 0.0 {
                1.0 / (1.0 + (-x).exp())
            } else {
                x.exp() / (1.0 + x.exp())
            }
        }
        // The tanh form rounds like the crate's, operation for operation: for negative x,
        // 1 + tanh(u) cancels (to 6e-4 at x = -3.5), so one ulp of difference in tanh(u)
        // becomes 2e-13 of the result, beyond `same_value`'s tolerance.
        Unary::Gelu => 0.5 * x * (1.0 + (sqrt_2_over_pi() * (x + 0.044715 * x * x * x)).tanh()),
        Unary::Atan => x.atan(),
        Unary::Asin => x.asin(),
        Unary::Acos => x.acos(),
        Unary::Tan => x.tan(),
        Unary::Ln1p => x.ln_1p(),
        Unary::ExpM1 => x.exp_m1(),
        Unary::Log2 => x.log2(),
        Unary::Log10 => x.log10(),
        Unary::Exp2 => x.exp2(),
        Unary::Cbrt => x.cbrt(),
        // ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|), which cannot overflow.
        Unary::Softplus => {
            if x.is_nan() {
                x
            } else {
                x.max(0.0) + (-x.abs()).exp().ln_1p()
            }
        }
        // std has no erf: these are libm's, the same functions the crate calls, so the
        // value is only checked for its wiring; the derivatives are checked independently
        // (central differences) all the same.
        Unary::Erf => libm::erf(x),
        Unary::Erfc => libm::erfc(x),
        // libm's, as for erf: std's asinh overflows past about 9e307 and its acosh loses
        // precision near 1, and an ulp of difference in a value grows through a later
        // power (`x^1000`) past `same_value`'s tolerance. The derivatives are checked
        // independently all the same.
        Unary::Asinh => libm::asinh(x),
        Unary::Acosh => libm::acosh(x),
        Unary::Atanh => libm::atanh(x),
    }
}

/// The value of a binary op at `(a, b)`; for `Powi`, `b` is the integer exponent.
pub fn binary(op: Binary, a: f64, b: f64) -> f64 {
    match op {
        Binary::Add => a + b,
        Binary::Sub => a - b,
        Binary::Mul => a * b,
        Binary::Div => a / b,
        Binary::Powf => a.powf(b),
        // The true power: `powf` (within an ulp of it), but for the small exponents whose
        // repeated products are within an ulp too and that users write out (`x * x`).
        Binary::Powi if (-2.0..=3.0).contains(&b) => a.powi(b as i32),
        Binary::Powi => a.powf(b),
        Binary::Atan2 => a.atan2(b),
        Binary::Hypot => a.hypot(b),
        Binary::Max => maximum(a, b),
        // PyTorch's xlogy: NaN for a NaN b, else 0 where a = 0, else a ln b.
        Binary::Xlogy => {
            if b.is_nan() {
                f64::NAN
            } else if a == 0.0 {
                0.0
            } else {
                a * b.ln()
            }
        }
        Binary::Min => {
            // IEEE 754-2019 minimum: NaN if either is NaN, and -0 < +0.
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else if a < b || (a == b && a.is_sign_negative()) {
                a
            } else {
                b
            }
        }
    }
}

/// IEEE 754-2019 maximum: NaN if either is NaN (`f64::max` drops it), and -0 < +0.
fn maximum(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a > b || (a == b && b.is_sign_negative()) {
        a
    } else {
        b
    }
}

/// The value of an n-ary op; `Dot`'s operands are `a`'s entries then `b`'s.
pub fn nary(op: Nary, xs: &[f64]) -> f64 {
    match op {
        Nary::Sum => xs.iter().sum(),
        Nary::Dot => {
            let (a, b) = xs.split_at(xs.len() / 2);
            a.iter().zip(b).map(|(a, b)| a * b).sum()
        }
        // ln sum e^x = m + ln sum e^(x - m): the shift by the maximum keeps every term <= 1.
        Nary::LogSumExp => {
            if xs.iter().any(|x| x.is_nan()) {
                return f64::NAN;
            }
            let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if m.is_infinite() {
                return m;
            }
            m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
        }
        Nary::Max => xs.iter().copied().fold(f64::NEG_INFINITY, maximum),
        // Operands `[x, lo, hi]`, lo <= hi; NaN stays NaN.
        Nary::Clamp if xs[0].is_nan() => f64::NAN,
        Nary::Clamp => xs[0].clamp(xs[1], xs[2]),
    }
}

/// Whether two values agree: both NaN, equal (infinities included), or within a relative
/// 1e-13 (the reference formulas may round differently from the crate's by a few ulps:
/// `1 / (1 + e^-x)` against a branch-stable sigmoid, for instance).
pub fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan())
        || a == b
        || (a.is_finite() && b.is_finite() && (a - b).abs() <= 1e-13 * a.abs().max(b.abs()))
}

/// A central-difference derivative: the estimate and an estimate of its own error.
#[derive(Clone, Copy, Debug)]
pub struct Difference {
    /// `df/dx_i`, Richardson-extrapolated.
    pub value: f64,
    /// `|R(h) - R(h/2)|`, or the distance to a difference at a 100 times smaller step if
    /// that is larger: how much the estimates disagree. Large when the step
    /// crosses a kink or a domain edge, or `f` varies too fast for the step: then the
    /// difference says nothing about the derivative and must not be compared.
    pub error: f64,
}

impl Difference {
    /// Whether the estimate is trustworthy enough to judge a gradient with: its error
    /// estimate is below 1e-7 of the derivative's scale `max(1, |value|)`.
    pub fn reliable(&self) -> bool {
        self.value.is_finite() && self.error <= 1e-7 * self.value.abs().max(1.0)
    }

    /// Whether `tape` agrees with this estimate: within 1e-6 of `max(1, |value|)`. A
    /// wrong derivative rule is off by O(1) of the derivative at a random point, far
    /// outside this; Richardson's O(h^4) truncation at h = 1e-3 and rounding of
    /// `eps |f| / h` (about 1e-10 for |f| <= 1e3) are far inside it.
    pub fn agrees_with(&self, tape: f64) -> bool {
        (tape - self.value).abs() <= 1e-6 * self.value.abs().max(1.0)
    }
}

/// `df/dx_i` at `x` by central differences `D(h) = (f(x + h) - f(x - h)) / 2h` at
/// `h, h/2, h/4` (with `h = 1e-3`), combined by Richardson extrapolation
/// (`R(h) = (4 D(h/2) - D(h)) / 3` cancels the `h^2` error term, and `(16 R(h/2) - R(h)) / 15`
/// the `h^4` one); the error estimate also compares with `D(1e-5)`.
pub fn derivative(f: impl Fn(&[f64]) -> f64, x: &[f64], i: usize) -> Difference {
    let mut at = x.to_vec();
    let mut d = |h: f64| {
        // Round the step to what x + h can represent, so the divisor is exact.
        let h = (x[i] + h) - x[i];
        at[i] = x[i] + h;
        let plus = f(&at);
        at[i] = x[i] - h;
        let minus = f(&at);
        at[i] = x[i];
        (plus - minus) / (2.0 * h)
    };
    // Not scaled with |x_i|: a step of 1e-3 |x| at x = 710 spans a tenth of a period of
    // cos, where `cos(x)^1000` goes through many bends, and the extrapolations agreed on a
    // wrong answer. Inputs compared are at most 1e4 in size, where the step (rounded below
    // to what x + h represents) is still exact.
    let h = 1e-3;
    let (d1, d2, d3) = (d(h), d(h / 2.0), d(h / 4.0));
    let (r1, r2) = ((4.0 * d2 - d1) / 3.0, (4.0 * d3 - d2) / 3.0);
    let value = (16.0 * r2 - r1) / 15.0;
    // The extrapolations can agree on a wrong answer when f wiggles on a scale below h
    // with a small amplitude (a long chain through sin(1/sin ..)): the three differences
    // all average the wiggles away. A plain difference at h = 1e-5 sees them; its own
    // error, 2e-11 |f| of rounding and ~1e-11 f''' of truncation, is far below the
    // tolerance.
    let error = (r2 - r1).abs().max((d(1e-5) - value).abs());
    Difference {
        value,
        error: if error.is_nan() { f64::INFINITY } else { error },
    }
}

/// The random programs' constants: mostly anywhere in [-3, 3], sometimes the values rules
/// special-case.
pub fn constant() -> impl proptest::strategy::Strategy<Value = f64> {
    use proptest::prelude::*;
    prop_oneof![
        6 => -3.0..3.0f64,
        1 => prop::sample::select(vec![0.0, 1.0, -1.0, 2.0, 0.5]),
    ]
}

/// The random programs' back-references (how many values back an operand is): half of
/// them to the latest value (chains), the rest anywhere within `reach`.
pub fn reference(reach: usize) -> impl proptest::strategy::Strategy<Value = usize> {
    use proptest::prelude::*;
    prop_oneof![1 => Just(0usize), 1 => 0..reach]
}

/// A proptest run of `cases` cases from the fixed seed `seed`, unless the environment says
/// otherwise (`PROPTEST_CASES`, `PROPTEST_RNG_SEED`). The seed is fixed, so a failure recurs
/// without a regressions file.
pub fn proptest_config(cases: u32, seed: u64) -> proptest::test_runner::Config {
    use proptest::test_runner::{Config, RngSeed};
    let from_env = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            from_env.cases
        } else {
            cases
        },
        rng_seed: match from_env.rng_seed {
            RngSeed::Random => RngSeed::Fixed(seed),
            fixed => fixed,
        },
        failure_persistence: None,
        ..from_env
    }
}
