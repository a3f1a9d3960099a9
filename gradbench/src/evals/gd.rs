//! Gradient descent as GradBench's `gd.hpp` does it, for particle and saddle: steps of
//! `eta` along the negative gradient, `eta` doubled after 10 accepted steps and halved
//! after a step that does not decrease the objective, until the gradient or the step is
//! shorter than 1e-5. Generic over `Scalar`, so that a nested optimisation can run on
//! recorded values (its comparisons read the values; each evaluation records afresh).

use tapegrad::Scalar;

fn magnitude<T: Scalar>(v: &[T]) -> f64 {
    v.iter().map(|x| x.value() * x.value()).sum::<f64>().sqrt()
}

fn distance<T: Scalar>(u: &[T], v: &[T]) -> f64 {
    u.iter()
        .zip(v)
        .map(|(a, b)| (a.value() - b.value()).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// The argmin of `objective` from `start`, with its `gradient`.
///
/// # Examples
///
/// ```
/// use tapegrad_gradbench::evals::gd::argmin;
/// let x = argmin(&[3.0], |x| (x[0] - 1.0) * (x[0] - 1.0), |x| vec![2.0 * (x[0] - 1.0)]);
/// assert!((x[0] - 1.0).abs() < 1e-5);
/// ```
pub fn argmin<T: Scalar>(
    start: &[T],
    objective: impl Fn(&[T]) -> T,
    gradient: impl Fn(&[T]) -> Vec<T>,
) -> Vec<T> {
    let mut x = start.to_vec();
    let mut fx = objective(&x);
    let mut gx = gradient(&x);
    let mut accepted = 0;
    let mut eta = 1e-5;
    loop {
        if magnitude(&gx) <= 1e-5 {
            return x;
        } else if accepted == 10 {
            eta *= 2.0;
            accepted = 0;
        } else {
            let next: Vec<T> = x.iter().zip(&gx).map(|(&xi, &gi)| xi - gi * eta).collect();
            if distance(&x, &next) <= 1e-5 {
                return x;
            }
            let f_next = objective(&next);
            if f_next.value() < fx.value() {
                x = next;
                fx = f_next;
                gx = gradient(&x);
                accepted += 1;
            } else {
                eta /= 2.0;
                accepted = 0;
            }
        }
    }
}

/// The argmax of `objective` from `start`: the argmin of its negation.
pub fn argmax<T: Scalar>(
    start: &[T],
    objective: impl Fn(&[T]) -> T,
    gradient: impl Fn(&[T]) -> Vec<T>,
) -> Vec<T> {
    argmin(
        start,
        |x| -objective(x),
        |x| gradient(x).into_iter().map(|g| -g).collect(),
    )
}
