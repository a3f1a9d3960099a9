//! kmeans: the k-means cost `sum_i min_j |p_i - c_j|^2` of `n` points and `k`
//! centroids; `dir` is the Newton step's direction, the gradient divided (entry by entry)
//! by the Hessian's diagonal, with respect to the centroids.
//!
//! Written as JAX's and PyTorch's GradBench tools write it: `|p - c|^2 = |p|^2 - (2 p.c -
//! |c|^2)`, so that the products `p.c` of every point with every centroid are one matrix
//! product (`Scalar::dots`: with the centroids bound by `Graph::inputs`, each block of
//! points against them is stored without edges), and the nearest centroid is one
//! `Scalar::amax` node per point. The Hessian is diagonal (each point's term depends on one
//! centroid, and `|c|^2` is separable), so its diagonal is `H 1`: the gradient is
//! recorded with `Var::grad`, its values are the gradient, and one reverse sweep of its sum
//! gives `H 1` (reverse over reverse, what `higher::hvp` does).

use serde::Deserialize;
use serde_json::{Value, json};
use tapegrad::linalg::{Matrix, Pairing};
use tapegrad::{Gradients, Graph, Scalar, Var};

use crate::runs::{Evaluation, Runs, repeat};

use super::{parse, unknown_function};

#[derive(Deserialize)]
struct Input {
    points: Vec<Vec<f64>>,
    centroids: Vec<Vec<f64>>,
}

/// Points per matrix product.
const BLOCK_ROWS: usize = 64;

/// The cost of `points` (`n x d`, row-major) against `centroids` (`k x d`).
///
/// # Examples
///
/// ```
/// use tapegrad_gradbench::evals::kmeans::cost;
/// // Points 0 and 3 on a line, centroids 1 and 4: 1 + 1.
/// assert_eq!(cost(&[0.0, 3.0], &[1.0, 4.0], 1), 2.0);
/// ```
pub fn cost<T: Scalar>(points: &[T], centroids: &[T], d: usize) -> T {
    let k = centroids.len() / d;
    let squares: Vec<T> = centroids.chunks(d).map(|c| T::dot(c, c)).collect();
    let mut nearest = Vec::with_capacity(points.len() / d);
    let mut scores = Vec::with_capacity(k);
    let mut points_squared = 0.0;
    for block in points.chunks(BLOCK_ROWS * d) {
        let rows = block.len() / d;
        let products = T::dots(
            Matrix::new(block, rows, d),
            Matrix::new(centroids, k, d),
            Pairing::Rows,
        );
        for (p, products) in block.chunks(d).zip(products.chunks(k)) {
            points_squared += p.iter().map(|x| x.value() * x.value()).sum::<f64>();
            scores.clear();
            scores.extend(
                products
                    .iter()
                    .zip(&squares)
                    .map(|(&pc, &cc)| T::dot_f64(&[pc, cc], &[2.0, -1.0])),
            );
            nearest.push(T::amax(&scores));
        }
    }
    -T::sum(&nearest) + points_squared
}

/// The Newton direction at `centroids`, written to `out`: the gradient (the values of
/// `Var::grad`) over `H 1` (one sweep of the recorded gradient's sum).
pub fn direction(
    points: &[f64],
    centroids: &[f64],
    d: usize,
    graph: &Graph,
    grads: &mut Gradients,
    out: &mut Vec<f64>,
) {
    let mark = graph.mark();
    {
        let c = graph.inputs(centroids);
        let p: Vec<Var<'_>> = points.iter().map(|&x| graph.constant(x)).collect();
        let y = cost(&p, &c, d);
        let gradient = y.grad(&c);
        Var::sum(&gradient).backward_into(grads);
        out.clear();
        out.extend(
            gradient
                .iter()
                .zip(c.iter())
                .map(|(g, &ci)| g.value() / grads[ci]),
        );
    }
    graph.release(mark);
}

/// Evaluates `cost` or `dir`.
///
/// # Errors
///
/// An unknown function, or points and centroids of different dimensions, or none.
pub fn evaluate(function: &str, input: &Value) -> Result<Evaluation, String> {
    let runs = Runs::of(input)?;
    let Input { points, centroids } = parse("kmeans", input)?;
    let d = points.first().map_or(0, Vec::len);
    if d == 0 || centroids.is_empty() {
        return Err("kmeans: needs points and centroids of at least one dimension".into());
    }
    if let Some(bad) = points.iter().chain(&centroids).find(|row| row.len() != d) {
        return Err(format!(
            "kmeans: a point or centroid has {} coordinates, not {d}",
            bad.len()
        ));
    }
    let (points, centroids) = (points.concat(), centroids.concat());
    match function {
        "cost" => {
            let (y, timings) = repeat(runs, || cost(&points, &centroids, d));
            Ok(Evaluation {
                output: json!(y),
                timings,
            })
        }
        "dir" => {
            let graph = Graph::new();
            let mut grads = Gradients::new();
            let mut dir = Vec::new();
            let ((), timings) = repeat(runs, || {
                direction(&points, &centroids, d, &graph, &mut grads, &mut dir)
            });
            let rows: Vec<&[f64]> = dir.chunks(d).collect();
            Ok(Evaluation {
                output: json!(rows),
                timings,
            })
        }
        _ => Err(unknown_function("kmeans", function, &["cost", "dir"])),
    }
}
