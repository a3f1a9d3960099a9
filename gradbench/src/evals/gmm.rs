//! gmm: the log-posterior of a Gaussian mixture model with a Wishart prior on the
//! precision matrices (ADBench's GMM, GradBench's `gmm.hpp`); `jacobian` is its gradient
//! with respect to the weights `alpha`, the means `mu` and the precision factors `q` (log
//! diagonal) and `l` (strictly lower triangle, by columns).
//!
//! Per point and component, each entry of `Q (x - mu)` is one fused dot node (the row of
//! `Q` against the centred point), its squared norm another, and per point the mixture is
//! one `Scalar::logsumexp` node. At `d = 64, k = 100, n = 1000` that is 440 million edges
//! (5 GB of tape), so the gradient is taken the way a training loop takes a large batch's:
//! the points' terms in chunks of about 16 million edges, each recorded after a mark,
//! swept backward into the running gradient and released.

use serde::Deserialize;
use serde_json::{Value, json};
use tapegrad::{Gradients, Graph, Replay, Scalar, Var};

use crate::runs::{Evaluation, Runs, prepare, repeat};

use super::{Prepared, Strategy, expect_len, parse, unknown_function};

#[derive(Deserialize)]
struct Input {
    d: usize,
    k: usize,
    n: usize,
    x: Vec<Vec<f64>>,
    m: i32,
    gamma: f64,
    alpha: Vec<f64>,
    mu: Vec<Vec<f64>>,
    q: Vec<Vec<f64>>,
    l: Vec<Vec<f64>>,
}

/// The sizes and data of one problem.
#[derive(Clone, Debug)]
pub struct Problem {
    /// Dimensions.
    pub d: usize,
    /// Mixture components.
    pub k: usize,
    /// The points, `n x d` row-major.
    pub x: Vec<f64>,
    /// The Wishart prior's extra degrees of freedom.
    pub m: i32,
    /// The Wishart prior's precision.
    pub gamma: f64,
}

impl Problem {
    /// The number of points.
    pub fn n(&self) -> usize {
        self.x.len() / self.d
    }

    /// The length of one component's `l`.
    pub fn l_len(&self) -> usize {
        self.d * (self.d - 1) / 2
    }

    /// Points per chunk of the gradient: about 16 million edges (192 MB of tape).
    fn chunk(&self) -> usize {
        let d = self.d;
        let edges_per_point = self.k * (d * d + 5 * d + 4);
        (16_000_000 / edges_per_point).max(1)
    }

    /// The number of parameters: `alpha`, `mu`, `q`, `l`.
    pub fn params(&self) -> usize {
        self.k * (1 + 2 * self.d + self.l_len())
    }
}

/// `ln Gamma_p(a)`, the multivariate gamma function's logarithm.
fn log_gamma_distrib(a: f64, p: usize) -> f64 {
    let p_f = p as f64;
    (1..=p).fold(
        0.25 * p_f * (p_f - 1.0) * std::f64::consts::PI.ln(),
        |out, j| out + libm::lgamma(a + 0.5 * (1.0 - j as f64)),
    )
}

/// The model at one parameter vector (`alpha`, `mu`, `q`, `l` concatenated), with what
/// every point's term shares: `exp(q)` and the sums of `q`.
pub struct Model<'a, T> {
    problem: &'a Problem,
    alpha: &'a [T],
    mu: &'a [T],
    l: &'a [T],
    q_diag: Vec<T>,
    sum_q: Vec<T>,
}

impl<'a, T: Scalar> Model<'a, T> {
    /// Splits `params` and computes the shared parts.
    pub fn new(problem: &'a Problem, params: &'a [T]) -> Self {
        let (d, k) = (problem.d, problem.k);
        let (alpha, rest) = params.split_at(k);
        let (mu, rest) = rest.split_at(k * d);
        let (q, l) = rest.split_at(k * d);
        Model {
            problem,
            alpha,
            mu,
            l,
            q_diag: q.iter().map(|&qi| qi.exp()).collect(),
            sum_q: q.chunks(d).map(T::sum).collect(),
        }
    }

    /// `ln sum_k alpha_k + sum q_k - |Q_k (x - mu_k)|^2 / 2`: one point's term.
    pub fn point(&self, x: &[f64], scratch: &mut Scratch<T>) -> T {
        let d = self.problem.d;
        let l_len = self.problem.l_len();
        let Scratch {
            centred,
            qx,
            row,
            col,
            terms,
        } = scratch;
        terms.clear();
        for ik in 0..self.problem.k {
            // mu - x: the opposite of x - mu, with the same squared norm after Q.
            centred.clear();
            centred.extend(self.mu[ik * d..][..d].iter().zip(x).map(|(&m, &xj)| m - xj));
            let l = &self.l[ik * l_len..][..l_len];
            qx.clear();
            for j in 0..d {
                // Row j of Q: the diagonal, then l's entries (i, j) for i < j, which sit
                // in l's column i.
                row.clear();
                col.clear();
                row.push(self.q_diag[ik * d + j]);
                col.push(centred[j]);
                for i in 0..j {
                    row.push(l[i * d - i * (i + 1) / 2 + (j - i - 1)]);
                    col.push(centred[i]);
                }
                qx.push(T::dot(row, col));
            }
            let squared = T::dot(qx, qx);
            terms.push(T::dot_f64(
                &[self.alpha[ik], self.sum_q[ik], squared],
                &[1.0, 1.0, -0.5],
            ));
        }
        T::logsumexp(terms)
    }

    /// Everything but the points' terms: the normal densities' constant, `-n ln sum
    /// e^alpha`, and the Wishart prior's log-density.
    pub fn rest(&self) -> T {
        let Problem { d, k, m, gamma, .. } = *self.problem;
        let n = self.problem.n();
        let l_len = self.problem.l_len();
        let constant = -(n as f64) * d as f64 * 0.5 * (2.0 * std::f64::consts::PI).ln();
        let n_w = d as f64 + f64::from(m) + 1.0;
        let c = n_w * d as f64 * (gamma.ln() - 0.5 * 2f64.ln()) - log_gamma_distrib(0.5 * n_w, d);
        let prior_terms: Vec<T> = (0..k)
            .map(|ik| {
                let qd = &self.q_diag[ik * d..][..d];
                let mut frobenius = T::dot(qd, qd);
                if l_len > 0 {
                    let l = &self.l[ik * l_len..][..l_len];
                    frobenius = frobenius + T::dot(l, l);
                }
                T::dot_f64(
                    &[frobenius, self.sum_q[ik]],
                    &[0.5 * gamma * gamma, -f64::from(m)],
                )
            })
            .collect();
        let prior = -T::sum(&prior_terms) + k as f64 * c;
        T::logsumexp(self.alpha) * -(n as f64) + constant + prior
    }
}

/// Buffers for [`Model::point`], reused from point to point.
pub struct Scratch<T> {
    centred: Vec<T>,
    qx: Vec<T>,
    row: Vec<T>,
    col: Vec<T>,
    terms: Vec<T>,
}

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Scratch {
            centred: Vec::new(),
            qx: Vec::new(),
            row: Vec::new(),
            col: Vec::new(),
            terms: Vec::new(),
        }
    }
}

/// The log-posterior at `params`.
///
/// # Examples
///
/// ```
/// use tapegrad_gradbench::evals::gmm::{objective, Problem};
/// // One component at the origin, identity precision, one point at the origin, d = 1:
/// // ln N(0; 0, 1) = -ln(2 pi)/2, plus the prior's terms.
/// let p = Problem { d: 1, k: 1, x: vec![0.0], m: 0, gamma: 1.0 };
/// let y = objective(&p, &[0.0, 0.0, 0.0]);
/// assert!(y.is_finite());
/// ```
pub fn objective<T: Scalar>(problem: &Problem, params: &[T]) -> T {
    let model = Model::new(problem, params);
    let mut scratch = Scratch::default();
    let points: Vec<T> = problem
        .x
        .chunks(problem.d)
        .map(|x| model.point(x, &mut scratch))
        .collect();
    model.rest() + T::sum(&points)
}

/// The gradient at `params`, written to `out`: the shared parts and the rest recorded
/// once, then the points' terms in chunks (see the module docs), each swept backward and
/// released.
pub fn gradient(
    problem: &Problem,
    params: &[f64],
    graph: &Graph,
    grads: &mut Gradients,
    out: &mut Vec<f64>,
) {
    let d = problem.d;
    let chunk = problem.chunk();
    let start = graph.mark();
    {
        let vars = graph.inputs(params);
        let model = Model::new(problem, &vars);
        model.rest().backward_into(grads);
        out.clear();
        out.extend(grads.wrt_all(&vars));
        let mut scratch = Scratch::default();
        for points in problem.x.chunks(chunk * d) {
            let mark = graph.mark();
            let terms: Vec<_> = points
                .chunks(d)
                .map(|x| model.point(x, &mut scratch))
                .collect();
            Var::sum(&terms).backward_into(grads);
            for (o, g) in out.iter_mut().zip(grads.wrt_all(&vars)) {
                *o += g;
            }
            graph.release(mark);
        }
    }
    graph.release(start);
}

/// The objective recorded once as replays, for [`Strategy::Replay`] and
/// [`Strategy::Compiled`]: one per chunk of points (the first with the rest of the
/// objective), each a function of every parameter, with a workspace each (a workspace
/// switched between replays is prepared again, which costs a pass over the replay); the
/// same chunks as [`gradient`]'s, so that no recording holds more than one chunk. With
/// [`Strategy::Compiled`], the chunks are compiled if they have at most
/// [`COMPILE_AT_MOST_NODES`](super::COMPILE_AT_MOST_NODES) nodes together, else replayed
/// by the interpreter.
pub struct Replays {
    parts: Vec<Prepared>,
    part_gradient: Vec<f64>,
}

impl Replays {
    /// Records the objective's parts at `params`, each evaluated as `strategy` says.
    ///
    /// # Errors
    ///
    /// The compiler's error, if it refuses a part.
    pub fn new(problem: &Problem, params: &[f64], strategy: Strategy) -> Result<Self, String> {
        let graph = Graph::new();
        let vars = graph.vars(params);
        let model = Model::new(problem, &vars);
        let rest = model.rest();
        let mut replays = Vec::new();
        let mut scratch = Scratch::default();
        for (i, points) in problem.x.chunks(problem.chunk() * problem.d).enumerate() {
            let mark = graph.mark();
            let mut terms: Vec<_> = points
                .chunks(problem.d)
                .map(|x| model.point(x, &mut scratch))
                .collect();
            if i == 0 {
                terms.push(rest);
            }
            replays.push(Replay::new(Var::sum(&terms), &vars));
            graph.release(mark);
        }
        let nodes: usize = replays.iter().map(Replay::len).sum();
        let strategy = if nodes > super::COMPILE_AT_MOST_NODES {
            Strategy::Replay
        } else {
            strategy
        };
        let parts = replays
            .into_iter()
            .map(|part| Prepared::new(part, strategy))
            .collect::<Result<_, _>>()?;
        Ok(Replays {
            parts,
            part_gradient: vec![0.0; params.len()],
        })
    }

    /// The gradient at `params`, written to `out`: the parts' replayed gradients summed.
    ///
    /// # Errors
    ///
    /// A replay's error (none is expected: the objective has no guards).
    pub fn gradient(&mut self, params: &[f64], out: &mut Vec<f64>) -> Result<(), tapegrad::Error> {
        out.clear();
        out.resize(params.len(), 0.0);
        for part in &mut self.parts {
            part.gradient(params, &mut self.part_gradient)?;
            for (o, g) in out.iter_mut().zip(&self.part_gradient) {
                *o += g;
            }
        }
        Ok(())
    }
}

/// Evaluates `objective` or `jacobian` (the gradient).
///
/// # Errors
///
/// An unknown function, or an input whose sizes disagree with `d`, `k` and `n`.
pub fn evaluate(function: &str, input: &Value, strategy: Strategy) -> Result<Evaluation, String> {
    let runs = Runs::of(input)?;
    let Input {
        d,
        k,
        n,
        x,
        m,
        gamma,
        alpha,
        mu,
        q,
        l,
    } = parse("gmm", input)?;
    if d == 0 || k == 0 || n == 0 {
        return Err(format!(
            "gmm: d, k and n must be positive (d = {d}, k = {k}, n = {n})"
        ));
    }
    let l_len = d * (d - 1) / 2;
    expect_len("gmm", "alpha", alpha.len(), k)?;
    expect_len("gmm", "x (points)", x.len(), n)?;
    for (field, rows, len) in [("mu", &mu, d), ("q", &q, d), ("l", &l, l_len)] {
        expect_len("gmm", field, rows.len(), k)?;
        for row in rows.iter() {
            expect_len("gmm", &format!("a row of {field}"), row.len(), len)?;
        }
    }
    for row in &x {
        expect_len("gmm", "a point of x", row.len(), d)?;
    }
    let problem = Problem {
        d,
        k,
        x: x.concat(),
        m,
        gamma,
    };
    let params: Vec<f64> = [alpha, mu.concat(), q.concat(), l.concat()].concat();
    match function {
        "objective" => {
            let (y, timings) = repeat(runs, || objective(&problem, &params));
            Ok(Evaluation {
                output: json!(y),
                timings,
            })
        }
        "jacobian" => {
            let mut g = Vec::new();
            let timings = match strategy {
                Strategy::Replay | Strategy::Compiled => {
                    let (replays, prepared) = prepare(|| Replays::new(&problem, &params, strategy));
                    let mut replays = replays?;
                    let (result, mut timings) = repeat(runs, || replays.gradient(&params, &mut g));
                    result.map_err(|e| format!("gmm: the replay failed: {e}"))?;
                    timings.insert(0, prepared);
                    timings
                }
                Strategy::Record => {
                    let graph = Graph::new();
                    let mut grads = Gradients::new();
                    repeat(runs, || {
                        gradient(&problem, &params, &graph, &mut grads, &mut g)
                    })
                    .1
                }
            };
            let (alpha, rest) = g.split_at(k);
            let (mu, rest) = rest.split_at(k * d);
            let (q, l) = rest.split_at(k * d);
            let rows = |v: &[f64], len: usize| -> Vec<Vec<f64>> {
                (0..k).map(|i| v[i * len..][..len].to_vec()).collect()
            };
            let output =
                json!({ "alpha": alpha, "mu": rows(mu, d), "q": rows(q, d), "l": rows(l, l_len) });
            Ok(Evaluation { output, timings })
        }
        _ => Err(unknown_function(
            "gmm",
            function,
            &["objective", "jacobian"],
        )),
    }
}
