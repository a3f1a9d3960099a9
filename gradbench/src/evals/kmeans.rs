//! kmeans: the k-means cost `sum_i min_j |p_i - c_j|^2` of `n` points and `k`
//! centroids; `dir` is the Newton step's direction, the gradient divided (entry by entry)
//! by the Hessian's diagonal, with respect to the centroids.
//!
//! Written as JAX's and PyTorch's GradBench tools write it: `|p - c|^2 = |p|^2 + |c|^2 -
//! 2 p.c`, so that the products `p.c` of every point with every centroid are one matrix
//! product (`Scalar::dots`: with the centroids bound by `Graph::inputs`, each block of
//! points against them is stored without edges), and the nearest centroid is picked by
//! value, as an `argmin` would (see [`cost`]'s helper: each evaluation records afresh). The Hessian is diagonal (each point's term depends on one centroid, and `|c|^2`
//! is separable), so its diagonal is `H 1`: the gradient is recorded with `Var::grad`, its
//! values are the gradient, and one reverse sweep of its sum gives `H 1` (reverse over
//! reverse, what `higher::hvp` does), block of points by block of points.

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

/// Points per matrix product, and per recording of the direction.
const BLOCK_ROWS: usize = 64;

/// For each point of `doubled` (the points times 2, `rows x d` row-major), `min_j |c_j|^2 -
/// 2 p.c_j`: its squared distance to the nearest centroid, less `|p|^2`. `squares` are
/// the centroids' `|c_j|^2`. The products of all points and centroids are recorded (one
/// matrix product); the nearest centroid is chosen by comparing values, and only its
/// score is recorded: `min`'s derivative is the nearest one's (no point here is equally
/// near two centroids), and each evaluation records afresh, so the choice is always the
/// one at the current centroids.
fn nearest<T: Scalar>(doubled: &[T], centroids: &[T], squares: &[T], d: usize, out: &mut Vec<T>) {
    let (rows, k) = (doubled.len() / d, squares.len());
    let products = T::dots(
        Matrix::new(doubled, rows, d),
        Matrix::new(centroids, k, d),
        Pairing::Rows,
    );
    out.clear();
    out.extend(products.chunks(k).map(|products| {
        let score = |j: usize| squares[j].value() - products[j].value();
        let (mut best, mut closest) = (0, score(0));
        for j in 1..k {
            let s = score(j);
            if s < closest {
                (best, closest) = (j, s);
            }
        }
        squares[best] - products[best]
    }));
}

/// `|p|^2` of each point of `points`, summed.
fn squared_norms(points: &[f64]) -> f64 {
    points.iter().map(|x| x * x).sum()
}

/// The cost of `points` (`n x d`, row-major) against `centroids` (`k x d`).
///
/// # Examples
///
/// ```
/// use tapegrad_gradbench::evals::kmeans::cost;
/// // Points 0 and 3 on a line, centroids 1 and 4: 1 + 1.
/// assert_eq!(cost(&[0.0, 3.0], &[1.0, 4.0], 1), 2.0);
/// ```
pub fn cost(points: &[f64], centroids: &[f64], d: usize) -> f64 {
    let squares: Vec<f64> = centroids.chunks(d).map(|c| f64::dot(c, c)).collect();
    let doubled: Vec<f64> = points.iter().map(|x| 2.0 * x).collect();
    let mut closest = Vec::new();
    let mut total = squared_norms(points);
    for block in doubled.chunks(BLOCK_ROWS * d) {
        nearest(block, centroids, &squares, d, &mut closest);
        total += closest.iter().sum::<f64>();
    }
    total
}

/// The Newton direction at `centroids`, written to `out`: the gradient over the
/// Hessian's diagonal, accumulated over blocks of points. Each block's cost is recorded
/// after a mark; its gradient with respect to the centroids is recorded by `Var::grad`
/// (its values are the gradient), one sweep of the gradient's sum gives the block's `H 1`,
/// and the block is released.
pub fn direction(
    points: &[f64],
    centroids: &[f64],
    d: usize,
    graph: &Graph,
    grads: &mut Gradients,
    out: &mut Vec<f64>,
) {
    let mut gradient = vec![0.0; centroids.len()];
    let mut diagonal = vec![0.0; centroids.len()];
    let start = graph.mark();
    {
        let c = graph.inputs(centroids);
        let squares: Vec<Var<'_>> = c.chunks(d).map(|cj| Var::dot(cj, cj)).collect();
        let mut closest = Vec::new();
        for block in points.chunks(BLOCK_ROWS * d) {
            let mark = graph.mark();
            let doubled: Vec<Var<'_>> = block.iter().map(|&x| graph.constant(2.0 * x)).collect();
            nearest(&doubled, &c, &squares, d, &mut closest);
            let y = Var::sum(&closest) + squared_norms(block);
            let g = y.grad(&c);
            Var::sum(&g).backward_into(grads);
            for ((gi, hi), (gv, &ci)) in gradient
                .iter_mut()
                .zip(&mut diagonal)
                .zip(g.iter().zip(c.iter()))
            {
                *gi += gv.value();
                *hi += grads[ci];
            }
            graph.release(mark);
        }
    }
    graph.release(start);
    out.clear();
    out.extend(gradient.iter().zip(&diagonal).map(|(g, h)| g / h));
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
