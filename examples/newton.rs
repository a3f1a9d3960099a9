//! Newton's method with the tape's Hessian, on two small real problems:
//!
//! 1. the Rosenbrock function `(1 - x)^2 + 100 (y - x^2)^2` from the classic start
//!    `(-1.2, 1)`;
//! 2. L2-regularised logistic regression (3 features and a bias) on 200 points drawn from
//!    a known logistic model (Python-compatible random numbers, seed 7).
//!
//! Each iteration records the objective once on the tape, takes the gradient with
//! `backward` and the Hessian with `higher::hessian` (which releases what it recorded),
//! releases the step's nodes, solves `H p = -g` (Cholesky), backtracks on the step if it
//! does not decrease the objective enough (Armijo), and updates the inputs in place with
//! `Graph::set_value`. Once the iterates are close, full steps (`t = 1`) are taken and the
//! gradient norm falls like `|g_k| <= C |g_(k-1)|^2`: the last column stays bounded while
//! the gradient drops from 1e-3 to rounding level in two or three steps. That is quadratic
//! convergence (the number of correct digits doubles per step), which first-order methods
//! cannot give.
//!
//! Run: `cargo run --release --example newton`.

use tapegrad::pyrandom::PyRandom;
use tapegrad::{Graph, Scalar, Var, higher};

/// `(1 - x)^2 + 100 (y - x^2)^2`, written once for `f64` (line search) and `Var` (tape).
fn rosenbrock<T: Scalar>(v: &[T]) -> T {
    let (x, y) = (v[0], v[1]);
    (-x + 1.0).powi(2) + (y - x * x).powi(2) * 100.0
}

/// A labelled point: features (the last is a constant 1 for the bias) and a label +-1.
struct Sample {
    features: [f64; 4],
    label: f64,
}

const RIDGE: f64 = 1e-2;

/// `mean_i ln(1 + e^(-y_i w.x_i)) + RIDGE / 2 |w|^2`: strictly convex, so Newton's
/// method converges from anywhere once the steps are damped.
fn logistic_loss<T: Scalar>(w: &[T], data: &[Sample]) -> T {
    let terms: Vec<T> = data
        .iter()
        .map(|s| {
            let products: Vec<T> = w.iter().zip(&s.features).map(|(&w, &x)| w * x).collect();
            let margin = T::sum(&products) * -s.label;
            (margin.exp() + 1.0).ln()
        })
        .collect();
    let squares: Vec<T> = w.iter().map(|&w| w * w).collect();
    T::sum(&terms) / data.len() as f64 + T::sum(&squares) * (RIDGE / 2.0)
}

/// 200 points from the model `P(y = 1 | x) = sigmoid(w_true . x)`, `x ~ N(0, 1)^3`.
fn make_data() -> Vec<Sample> {
    let w_true = [1.5, -2.0, 0.5, 0.3];
    let mut rng = PyRandom::seed(7);
    (0..200)
        .map(|_| {
            let features = [
                rng.gauss(0.0, 1.0),
                rng.gauss(0.0, 1.0),
                rng.gauss(0.0, 1.0),
                1.0,
            ];
            let z: f64 = w_true.iter().zip(&features).map(|(w, x)| w * x).sum();
            let label = if rng.random() < 1.0 / (1.0 + (-z).exp()) {
                1.0
            } else {
                -1.0
            };
            Sample { features, label }
        })
        .collect()
}

/// Solves `a p = b` for a symmetric positive definite `a` by Cholesky, or `None` if `a` is
/// not positive definite.
fn cholesky_solve(a: &[Vec<f64>], b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - s;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[i][i] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    // L z = b, then L^T p = z.
    let mut z = vec![0.0; n];
    for i in 0..n {
        z[i] = (b[i] - (0..i).map(|k| l[i][k] * z[k]).sum::<f64>()) / l[i][i];
    }
    let mut p = vec![0.0; n];
    for i in (0..n).rev() {
        p[i] = (z[i] - (i + 1..n).map(|k| l[k][i] * p[k]).sum::<f64>()) / l[i][i];
    }
    Some(p)
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Newton's method with a backtracking line search: records `f` on the tape each
/// iteration for its gradient and Hessian, and evaluates `plain` (the same function on
/// `f64`) for the line search. Returns the minimiser.
fn newton<F>(name: &str, f: F, plain: &dyn Fn(&[f64]) -> f64, start: &[f64]) -> Vec<f64>
where
    F: for<'g> Fn(&'g Graph, &[Var<'g>]) -> Var<'g>,
{
    println!("\n{name}");
    println!(
        "{:>4} {:>24} {:>12} {:>12} {:>6} {:>16}",
        "iter", "objective", "|gradient|", "|step|", "t", "|g_k|/|g_k-1|^2"
    );
    let g = Graph::new();
    let xs = g.vars(start);
    let mark = g.mark();
    let mut previous_norm: Option<f64> = None;
    for iteration in 0..50 {
        let y = f(&g, &xs);
        let value = y.value();
        let gradient = y.backward().wrt_all(&xs);
        let h = higher::hessian(y, &xs);
        g.release(mark);
        let grad_norm = norm(&gradient);
        let ratio = previous_norm.map_or(String::from("-"), |p| {
            format!("{:.3e}", grad_norm / (p * p))
        });
        let x: Vec<f64> = xs.iter().map(|x| x.value()).collect();
        // Stop where rounding leaves nothing to gain: the gradient of a mean of a few
        // hundred terms carries errors of order 1e-12.
        if grad_norm < 1e-10 {
            println!(
                "{iteration:>4} {value:>24.16e} {grad_norm:>12.3e} {:>12} {:>6} {ratio:>16}",
                "-", "-"
            );
            println!("converged to {x:?}");
            return x;
        }
        // The Newton direction; where the Hessian is not positive definite, shift it
        // towards the identity (Levenberg) until it is, so the step still descends.
        let minus_g: Vec<f64> = gradient.iter().map(|g| -g).collect();
        let mut shift = 0.0;
        let step = loop {
            let shifted: Vec<Vec<f64>> = (0..h.len())
                .map(|i| {
                    let mut row = h[i].clone();
                    row[i] += shift;
                    row
                })
                .collect();
            match cholesky_solve(&shifted, &minus_g) {
                Some(p) => break p,
                None => shift = f64::max(2.0 * shift, 1e-3),
            }
        };
        // Armijo backtracking: halve t until f decreases by at least 1e-4 t g.p.
        let slope: f64 = gradient.iter().zip(&step).map(|(g, p)| g * p).sum();
        let mut t = 1.0;
        let mut trial: Vec<f64>;
        loop {
            trial = x.iter().zip(&step).map(|(x, p)| x + t * p).collect();
            if plain(&trial) <= value + 1e-4 * t * slope || t < 1e-10 {
                break;
            }
            t /= 2.0;
        }
        println!(
            "{iteration:>4} {value:>24.16e} {grad_norm:>12.3e} {:>12.3e} {t:>6} {ratio:>16}",
            t * norm(&step)
        );
        for (x, &new) in xs.iter().zip(&trial) {
            g.set_value(*x, new);
        }
        previous_norm = Some(grad_norm);
    }
    panic!("{name}: no convergence in 50 iterations");
}

fn main() {
    let x = newton(
        "Rosenbrock (1 - x)^2 + 100 (y - x^2)^2 from (-1.2, 1)",
        |_, v| rosenbrock(v),
        &|v| rosenbrock(v),
        &[-1.2, 1.0],
    );
    assert!((x[0] - 1.0).abs() < 1e-10 && (x[1] - 1.0).abs() < 1e-10);

    let data = make_data();
    let positives = data.iter().filter(|s| s.label > 0.0).count();
    let w = newton(
        &format!(
            "Logistic regression, 200 points ({positives} positive), 3 features + bias, ridge {RIDGE}"
        ),
        |_, w| logistic_loss(w, &data),
        &|w| logistic_loss(w, &data),
        &[0.0; 4],
    );
    println!(
        "weights (features..., bias): {w:.4?}  (the data were drawn with [1.5, -2.0, 0.5, 0.3])"
    );
}
