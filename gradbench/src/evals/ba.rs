//! ba: bundle adjustment (ADBench's BA, GradBench's `ba.hpp`): for each of `p`
//! observations, the reprojection error of a point `X` seen by a camera (Rodrigues
//! rotation, projection, radial distortion) weighted by `w`, and each weight's error
//! `1 - w^2`; `jacobian` is the sparse Jacobian, a 2 x 15 block per observation (the
//! camera's 11 parameters, the point's 3, the weight) and one entry per weight.
//!
//! Each block is taken the way a reverse-mode user takes a small Jacobian: record the
//! observation's 15 inputs and its two errors after a mark, one reverse sweep per error,
//! release, or (by default) replaying one recording of the block, whose branch (the
//! rotation angle 0 or not) a guard checks. The weights' entries are the gradient of the
//! weight errors' sum. The eval replicates one camera, point and feature; every block is computed
//! anyway, as the `manual` tool does, and the output holds the first block and the last
//! weight entry, as `manual`'s `to_json` does.

use serde::Deserialize;
use serde_json::{Value, json};
use tapegrad::{Gradients, Graph, Replay, Scalar, Var};

use crate::runs::{Evaluation, Runs, prepare, repeat};

use super::{Prepared, Strategy, SubFrom, expect_len, parse, unknown_function};

/// Camera parameters: rotation (3), centre (3), focal length, principal point (2),
/// radial distortion (2).
const CAM: usize = 11;
/// Inputs of one block: the camera's, the point's 3 and the weight.
const BLOCK: usize = CAM + 3 + 1;

#[derive(Deserialize)]
struct Input {
    n: usize,
    m: usize,
    p: usize,
    cam: Vec<f64>,
    x: Vec<f64>,
    w: f64,
    feat: Vec<f64>,
}

/// The problem the eval describes: `n` cameras, `m` points, `p` observations.
struct Problem {
    n: usize,
    m: usize,
    cams: Vec<f64>,
    points: Vec<f64>,
    weights: Vec<f64>,
    /// Per observation: camera and point.
    obs: Vec<(usize, usize)>,
    feats: Vec<[f64; 2]>,
}

impl Problem {
    /// As GradBench's `ba.hpp` builds it: every camera, point, weight and feature the
    /// same, observation `i` of camera `i % n` and point `i % m`.
    fn new(input: &Input) -> Problem {
        Problem {
            n: input.n,
            m: input.m,
            cams: input.cam.repeat(input.n),
            points: input.x.repeat(input.m),
            weights: vec![input.w; input.p],
            obs: (0..input.p).map(|i| (i % input.n, i % input.m)).collect(),
            feats: vec![[input.feat[0], input.feat[1]]; input.p],
        }
    }
}

fn cross<T: Scalar>(a: &[T], b: &[T]) -> [T; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// A test against zero that a [`Replay`] re-checks: on `Var` a guard (`Var::ne_value`).
pub trait NonZero: Copy {
    /// `self != 0`.
    fn is_nonzero(self) -> bool;
}

impl NonZero for f64 {
    fn is_nonzero(self) -> bool {
        self != 0.0
    }
}

impl NonZero for Var<'_> {
    fn is_nonzero(self) -> bool {
        self.ne_value(0.0)
    }
}

/// `pt` rotated by the angle-axis vector `rot` (Rodrigues' formula; at angle 0, its
/// first-order form, whose derivative is right there too).
fn rodrigues_rotate_point<T: Scalar + SubFrom + NonZero>(rot: &[T], pt: &[T]) -> [T; 3] {
    let sqtheta = T::dot(rot, rot);
    if sqtheta.is_nonzero() {
        let theta = sqtheta.sqrt();
        let (costheta, sintheta) = (theta.cos(), theta.sin());
        let theta_inverse = theta.recip();
        let w = [
            rot[0] * theta_inverse,
            rot[1] * theta_inverse,
            rot[2] * theta_inverse,
        ];
        let w_cross_pt = cross(&w, pt);
        let tmp = T::dot(&w, pt) * costheta.sub_from(1.0);
        std::array::from_fn(|i| T::dot(&[pt[i], w_cross_pt[i], w[i]], &[costheta, sintheta, tmp]))
    } else {
        let rot_cross_pt = cross(rot, pt);
        std::array::from_fn(|i| pt[i] + rot_cross_pt[i])
    }
}

/// The weighted reprojection error of point `x` seen by camera `cam`, against the
/// feature `feat`.
///
/// # Examples
///
/// ```
/// use tapegrad_gradbench::evals::ba::reprojection_error;
/// // No rotation, camera at the origin, f = 1, no distortion: (1, 2, 4) projects to
/// // (0.25, 0.5).
/// let cam = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
/// let e = reprojection_error(&cam, &[1.0, 2.0, 4.0], 2.0, &[0.0, 0.0]);
/// assert_eq!(e, [0.5, 1.0]);
/// ```
pub fn reprojection_error<T: Scalar + SubFrom + NonZero>(
    cam: &[T],
    x: &[T],
    w: T,
    feat: &[T],
) -> [T; 2] {
    let centred = [x[0] - cam[3], x[1] - cam[4], x[2] - cam[5]];
    let xcam = rodrigues_rotate_point(&cam[0..3], &centred);
    let proj = [xcam[0] / xcam[2], xcam[1] / xcam[2]];
    // Radial distortion: L = 1 + k1 r^2 + k2 r^4.
    let rsq = T::dot(&proj, &proj);
    let distortion = T::dot(&cam[9..11], &[rsq, rsq * rsq]) + 1.0;
    std::array::from_fn(|i| ((proj[i] * distortion * cam[6] + cam[7 + i]) - feat[i]) * w)
}

/// The weight's error `1 - w^2`.
pub fn weight_error<T: Scalar + SubFrom>(w: T) -> T {
    (w * w).sub_from(1.0)
}

/// The reprojection errors and weight errors, as `ba.hpp`'s `objective`.
fn objective(problem: &Problem) -> (Vec<[f64; 2]>, Vec<f64>) {
    let errors = problem
        .obs
        .iter()
        .zip(&problem.feats)
        .zip(&problem.weights)
        .map(|((&(c, p), &feat), &w)| {
            reprojection_error(
                &problem.cams[c * CAM..][..CAM],
                &problem.points[p * 3..][..3],
                w,
                &feat,
            )
        })
        .collect();
    (
        errors,
        problem.weights.iter().map(|&w| weight_error(w)).collect(),
    )
}

/// The Jacobian in compressed sparse rows, as `ba.hpp`'s `SparseMat` (32-bit indices, as
/// its `int`s: [`evaluate`] checks that they fit).
#[derive(Default)]
struct SparseMat {
    rows: Vec<u32>,
    cols: Vec<u32>,
    vals: Vec<f64>,
}

/// An index of the Jacobian (checked to fit by [`evaluate`]).
fn index(i: usize) -> u32 {
    i as u32
}

/// One observation's numbers: its camera, point and weight (the block's 15 columns),
/// then its feature (data; a replay takes it as an input too, and its derivatives are not
/// read).
type Numbers = [f64; BLOCK + 2];

/// The two reprojection errors of one observation's numbers.
fn block_errors<T: Scalar + SubFrom + NonZero>(v: &[T]) -> [T; 2] {
    reprojection_error(&v[..CAM], &v[CAM..CAM + 3], v[CAM + 3], &v[BLOCK..])
}

/// Each observation's 2 x 15 block and each weight's entry, one at a time: by recording
/// them (after a mark, one reverse sweep per error, then a release), or by replaying one
/// recording of the block (each error's replay made once at the first observation, and
/// compiled for [`Strategy::Compiled`]; where an observation's rotation angle is 0 and the
/// first's is not, or the other way round, the guard fails and that block is recorded
/// instead).
struct Blocks {
    graph: Graph,
    grads: Gradients,
    replays: Option<([Prepared; 2], Prepared)>,
    gradient: Vec<f64>,
}

impl Blocks {
    fn new(strategy: Strategy, first: &Numbers, weights: &[f64]) -> Result<Blocks, String> {
        let replays = if strategy.records_once() {
            let graph = Graph::new();
            let v = graph.vars(first);
            let [x, y] = block_errors(&v).map(|e| Replay::new(e, &v));
            let w = graph.vars(weights);
            let weights = Replay::new(weight_errors_sum(&w), &w);
            Some((
                [Prepared::new(x, strategy)?, Prepared::new(y, strategy)?],
                Prepared::new(weights, strategy)?,
            ))
        } else {
            None
        };
        Ok(Blocks {
            graph: Graph::new(),
            grads: Gradients::new(),
            replays,
            gradient: vec![0.0; BLOCK + 2],
        })
    }

    /// The block of one observation: its two rows, appended to `vals`.
    fn block(&mut self, numbers: &Numbers, vals: &mut Vec<f64>) {
        if let Some((errors, _)) = &mut self.replays {
            let start = vals.len();
            let mut replayed = true;
            for error in errors {
                if error.gradient(numbers, &mut self.gradient).is_err() {
                    replayed = false;
                    break;
                }
                vals.extend_from_slice(&self.gradient[..BLOCK]);
            }
            if replayed {
                return;
            }
            vals.truncate(start);
        }
        let mark = self.graph.mark();
        {
            let v = self.graph.inputs(numbers);
            for error in block_errors(&v) {
                error.backward_into(&mut self.grads);
                vals.extend(v[..BLOCK].iter().map(|&x| self.grads[x]));
            }
        }
        self.graph.release(mark);
    }

    /// `d(1 - w_i^2)/dw_i` for every weight, appended to `vals`: the weight errors'
    /// Jacobian is diagonal (error `i` depends on weight `i` only), so it is the gradient
    /// of their sum, one reverse sweep (or one replay of the sum recorded once).
    fn weights(&mut self, weights: &[f64], vals: &mut Vec<f64>) {
        let start = vals.len();
        vals.resize(start + weights.len(), 0.0);
        if let Some((_, replay)) = &mut self.replays {
            if replay.gradient(weights, &mut vals[start..]).is_ok() {
                return;
            }
        }
        let mark = self.graph.mark();
        {
            let w = self.graph.inputs(weights);
            weight_errors_sum(&w).backward_into(&mut self.grads);
            for (v, &wi) in vals[start..].iter_mut().zip(w.iter()) {
                *v = self.grads[wi];
            }
        }
        self.graph.release(mark);
    }
}

/// `sum_i 1 - w_i^2`, whose gradient is the weight errors' diagonal Jacobian.
fn weight_errors_sum<T: Scalar + SubFrom>(w: &[T]) -> T {
    let errors: Vec<T> = w.iter().map(|&wi| weight_error(wi)).collect();
    T::sum(&errors)
}

/// The observation's numbers.
fn numbers(problem: &Problem, i: usize) -> Numbers {
    let (c, pt) = problem.obs[i];
    let mut v = [0.0; BLOCK + 2];
    v[..CAM].copy_from_slice(&problem.cams[c * CAM..][..CAM]);
    v[CAM..CAM + 3].copy_from_slice(&problem.points[pt * 3..][..3]);
    v[CAM + 3] = problem.weights[i];
    v[BLOCK..].copy_from_slice(&problem.feats[i]);
    v
}

/// The Jacobian, block by block (see [`Blocks`]), in `ba.hpp`'s sparse layout.
fn jacobian(problem: &Problem, blocks: &mut Blocks, jac: &mut SparseMat) {
    let p = problem.obs.len();
    jac.rows.clear();
    jac.cols.clear();
    jac.vals.clear();
    jac.rows.reserve(3 * p + 1);
    jac.cols.reserve(BLOCK * 2 * p + p);
    jac.vals.reserve(BLOCK * 2 * p + p);
    jac.rows.push(0);
    for (i, &(c, pt)) in problem.obs.iter().enumerate() {
        blocks.block(&numbers(problem, i), &mut jac.vals);
        let point_cols = index(CAM * problem.n + 3 * pt);
        let weight_col = index(CAM * problem.n + 3 * problem.m + i);
        let camera_cols = index(CAM * c);
        for _ in 0..2 {
            let end = jac.rows.last().copied().unwrap_or(0) + BLOCK as u32;
            jac.rows.push(end);
            jac.cols.extend(
                (camera_cols..camera_cols + CAM as u32)
                    .chain(point_cols..point_cols + 3)
                    .chain([weight_col]),
            );
        }
    }
    for i in 0..p {
        let end = jac.rows.last().copied().unwrap_or(0) + 1;
        jac.rows.push(end);
        jac.cols.push(index(CAM * problem.n + 3 * problem.m + i));
    }
    blocks.weights(&problem.weights, &mut jac.vals);
}

/// `manual`'s output of a Jacobian: the first 30 entries of each array (the first
/// block's two rows) and the last (the last weight's entry).
fn summary<T: Copy>(v: &[T]) -> Vec<T> {
    let head = 2 * BLOCK;
    v.iter().take(head).chain(v.last()).copied().collect()
}

/// Evaluates `objective` or `jacobian`.
///
/// # Errors
///
/// An unknown function, or an input with the wrong number of camera, point or feature
/// parameters, or no cameras, points or observations.
pub fn evaluate(function: &str, input: &Value, strategy: Strategy) -> Result<Evaluation, String> {
    let runs = Runs::of(input)?;
    let input: Input = parse("ba", input)?;
    expect_len("ba", "cam", input.cam.len(), CAM)?;
    expect_len("ba", "x", input.x.len(), 3)?;
    expect_len("ba", "feat", input.feat.len(), 2)?;
    if input.n == 0 || input.m == 0 || input.p < BLOCK {
        return Err(format!(
            "ba: needs cameras, points and at least {BLOCK} observations (n = {}, m = {}, p = {})",
            input.n, input.m, input.p
        ));
    }
    let entries = (2 * BLOCK + 1).checked_mul(input.p);
    let columns = (CAM * input.n)
        .checked_add(3 * input.m)
        .and_then(|c| c.checked_add(input.p));
    if entries.is_none_or(|e| e > u32::MAX as usize)
        || columns.is_none_or(|c| c > u32::MAX as usize)
    {
        return Err(format!(
            "ba: a Jacobian of {} observations does not fit 32-bit indices",
            input.p
        ));
    }
    let problem = Problem::new(&input);
    match function {
        "objective" => {
            let ((errors, weight_errors), timings) = repeat(runs, || objective(&problem));
            let output = json!({
                "reproj_error": { "elements": errors[0], "repeated": errors.len() },
                "w_err": { "element": weight_errors[0], "repeated": weight_errors.len() },
            });
            Ok(Evaluation { output, timings })
        }
        "jacobian" => {
            let mut jac = SparseMat::default();
            let (blocks, prepared) =
                prepare(|| Blocks::new(strategy, &numbers(&problem, 0), &problem.weights));
            let mut blocks = blocks?;
            let ((), mut timings) = repeat(runs, || jacobian(&problem, &mut blocks, &mut jac));
            if strategy.records_once() {
                timings.insert(0, prepared);
            }
            let output = json!({
                "rows": summary(&jac.rows),
                "cols": summary(&jac.cols),
                "vals": summary(&jac.vals),
            });
            Ok(Evaluation { output, timings })
        }
        _ => Err(unknown_function("ba", function, &["objective", "jacobian"])),
    }
}
