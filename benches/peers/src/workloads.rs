//! The benchmark workloads W1 to W4, written once over [`tapegrad::Scalar`], so the
//! same code runs with plain `f64`, with tapegrad's `Var`, and with the peers' types
//! (see `engines.rs`).
//!
//! This file is shared: the peer comparison (`benches/peers`) uses it as a module, and the
//! criterion benchmarks (`benches/criterion/benches/workloads.rs`) include it by path, so
//! that both measure exactly the same functions. It depends on nothing but tapegrad.

use tapegrad::Scalar;
use tapegrad_models::transformer::{self, Params};

/// A function to differentiate, with its inputs and, where there is one, its gradient in
/// closed form.
pub trait Workload {
    /// A short name for tables, e.g. `W2 chain 1,000,000`.
    fn name(&self) -> String;
    /// The point at which the function and its gradient are evaluated.
    fn inputs(&self) -> Vec<f64>;
    /// The function itself.
    fn eval<T: Scalar>(&self, x: &[T]) -> T;
    /// The exact gradient at `x`, from calculus rather than from any AD engine.
    fn closed_form(&self, x: &[f64]) -> Option<Vec<f64>>;
}

/// The two ways W1 writes softmax cross-entropy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrossEntropyForm {
    /// `-ln(e^{l_t} / sum_i e^{l_i})`: exp, an n-ary sum, a division and a log.
    Composed,
    /// `logsumexp(l) - l_t`: one fused, stable node and a subtraction.
    Fused,
}

/// W1: softmax cross-entropy over `n` logits with target class `target`.
#[derive(Clone, Copy, Debug)]
pub struct CrossEntropy {
    /// The number of logits.
    pub n: usize,
    /// The index of the true class.
    pub target: usize,
    /// How the loss is written.
    pub form: CrossEntropyForm,
}

impl Workload for CrossEntropy {
    fn name(&self) -> String {
        let form = match self.form {
            CrossEntropyForm::Composed => "composed",
            CrossEntropyForm::Fused => "fused",
        };
        format!("W1 xent {form} N={}", thousands(self.n))
    }

    fn inputs(&self) -> Vec<f64> {
        // Deterministic logits in [-2, 2], spread so that no class dominates.
        (0..self.n).map(|i| 2.0 * (0.7 * i as f64).sin()).collect()
    }

    fn eval<T: Scalar>(&self, logits: &[T]) -> T {
        match self.form {
            CrossEntropyForm::Composed => {
                let exps: Vec<T> = logits.iter().map(|&l| l.exp()).collect();
                let total = T::sum(&exps);
                -(exps[self.target] / total).ln()
            }
            CrossEntropyForm::Fused => T::logsumexp(logits) - logits[self.target],
        }
    }

    fn closed_form(&self, logits: &[f64]) -> Option<Vec<f64>> {
        // d/dl_i [logsumexp(l) - l_t] = softmax(l)_i - [i = t].
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = exps.iter().sum();
        let mut grad: Vec<f64> = exps.iter().map(|e| e / total).collect();
        grad[self.target] -= 1.0;
        Some(grad)
    }
}

/// W2: a chain of `ops` dependent operations on one input, repeating
/// `y = ln(exp(y * A + B))` (four recorded ops per round).
#[derive(Clone, Copy, Debug)]
pub struct Chain {
    /// The number of recorded operations (a multiple of 4).
    pub ops: usize,
}

impl Chain {
    /// The multiplier: close enough to 1 that `A^(ops/4)` stays near 1 (no overflow or
    /// subnormal adjoints even at 10 million ops), far enough that the gradient is not 1.
    pub const A: f64 = 1.0 + 1e-7;
    /// The added constant, small so that the values stay near the input.
    pub const B: f64 = 1e-8;
}

impl Workload for Chain {
    fn name(&self) -> String {
        format!("W2 chain {}", thousands(self.ops))
    }

    fn inputs(&self) -> Vec<f64> {
        vec![0.5]
    }

    fn eval<T: Scalar>(&self, x: &[T]) -> T {
        let mut y = x[0];
        for _ in 0..self.ops / 4 {
            y = (y * Self::A + Self::B).exp().ln();
        }
        y
    }

    fn closed_form(&self, _: &[f64]) -> Option<Vec<f64>> {
        // Each round is y -> ln(e^(A y + B)) = A y + B, whose derivative is A.
        Some(vec![Self::A.powi((self.ops / 4) as i32)])
    }
}

/// W4: the Rosenbrock function in `n` dimensions, written as echidna's own benchmark
/// writes it (a running sum of binary ops).
#[derive(Clone, Copy, Debug)]
pub struct Rosenbrock {
    /// The dimension.
    pub n: usize,
}

impl Workload for Rosenbrock {
    fn name(&self) -> String {
        format!("W4 Rosenbrock n={}", self.n)
    }

    fn inputs(&self) -> Vec<f64> {
        (0..self.n)
            .map(|i| 0.5 + 0.9 * (1.3 * i as f64).cos())
            .collect()
    }

    fn eval<T: Scalar>(&self, x: &[T]) -> T {
        // sum_i (1 - x_i)^2 + 100 (x_{i+1} - x_i^2)^2; (x_i - 1)^2 is the same square,
        // written so that every engine sees a `Var - f64`.
        let term = |i: usize| {
            let t1 = x[i] - 1.0;
            let t2 = x[i + 1] - x[i] * x[i];
            t1 * t1 + t2 * t2 * 100.0
        };
        let mut sum = term(0);
        for i in 1..x.len() - 1 {
            sum = sum + term(i);
        }
        sum
    }

    fn closed_form(&self, x: &[f64]) -> Option<Vec<f64>> {
        // d/dx_i = 2 (x_i - 1) - 400 x_i (x_{i+1} - x_i^2)   (from term i, i < n-1)
        //        + 200 (x_i - x_{i-1}^2)                    (from term i-1, i > 0)
        let n = x.len();
        let mut g = vec![0.0; n];
        for i in 0..n - 1 {
            g[i] += 2.0 * (x[i] - 1.0) - 400.0 * x[i] * (x[i + 1] - x[i] * x[i]);
            g[i + 1] += 200.0 * (x[i + 1] - x[i] * x[i]);
        }
        Some(g)
    }
}

/// W3: the series' tiny transformer (`tapegrad_models::transformer`): the mean next-token loss on
/// the series' sentence, differentiated with respect to all 3,456 parameters.
#[derive(Clone, Copy, Debug)]
pub struct Transformer;

impl Workload for Transformer {
    fn name(&self) -> String {
        "W3 transformer".into()
    }

    fn inputs(&self) -> Vec<f64> {
        Params::series_init().as_slice().to_vec()
    }

    fn eval<T: Scalar>(&self, x: &[T]) -> T {
        let params = Params::from_flat(x.to_vec());
        transformer::loss(&params, &transformer::SENTENCE).mean
    }

    fn closed_form(&self, _: &[f64]) -> Option<Vec<f64>> {
        // No closed form: the table checks each engine against the others instead.
        None
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    // The first group has 1 to 3 digits; every later group has exactly 3.
    let head = match digits.len() % 3 {
        0 => 3.min(digits.len()),
        r => r,
    };
    let mut out = digits[..head].to_string();
    for group in digits.as_bytes()[head..].chunks(3) {
        out.push(',');
        out.push_str(std::str::from_utf8(group).expect("ASCII digits"));
    }
    out
}
