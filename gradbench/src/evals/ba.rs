//! ba: bundle adjustment (ADBench's BA, GradBench's `ba.hpp`): for each of `p`
//! observations, the reprojection error of a point `X` seen by a camera (Rodrigues
//! rotation, projection, radial distortion) weighted by `w`, and each weight's error
//! `1 - w^2`; `jacobian` is the sparse Jacobian, a 2 x 15 block per observation (the
//! camera's 11 parameters, the point's 3, the weight) and one entry per weight.
//!
//! Each block is taken the way a reverse-mode user takes a small Jacobian: record the
//! observation's 15 inputs and its two errors after a mark, one reverse sweep per error,
//! release. The eval replicates one camera, point and feature; every block is computed
//! anyway, as the `manual` tool does, and the output holds the first block and the last
//! weight entry, as `manual`'s `to_json` does.

use serde::Deserialize;
use serde_json::{Value, json};
use tapegrad::{Gradients, Graph, Scalar};

use crate::runs::{Evaluation, Runs, repeat};

use super::{SubFrom, expect_len, parse, unknown_function};

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

/// `pt` rotated by the angle-axis vector `rot` (Rodrigues' formula; at angle 0, its
/// first-order form, whose derivative is right there too).
fn rodrigues_rotate_point<T: Scalar + SubFrom>(rot: &[T], pt: &[T]) -> [T; 3] {
    let sqtheta = T::dot(rot, rot);
    if sqtheta.value() != 0.0 {
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
/// let e = reprojection_error(&cam, &[1.0, 2.0, 4.0], 2.0, [0.0, 0.0]);
/// assert_eq!(e, [0.5, 1.0]);
/// ```
pub fn reprojection_error<T: Scalar + SubFrom>(cam: &[T], x: &[T], w: T, feat: [f64; 2]) -> [T; 2] {
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
                feat,
            )
        })
        .collect();
    (
        errors,
        problem.weights.iter().map(|&w| weight_error(w)).collect(),
    )
}

/// The Jacobian in compressed sparse rows, as `ba.hpp`'s `SparseMat`.
#[derive(Default)]
struct SparseMat {
    rows: Vec<usize>,
    cols: Vec<usize>,
    vals: Vec<f64>,
}

/// The Jacobian: per observation, the 2 x 15 block by two reverse sweeps of the
/// observation's recording; then the weights' entries, one sweep each.
fn jacobian(problem: &Problem, graph: &Graph, grads: &mut Gradients, jac: &mut SparseMat) {
    let p = problem.obs.len();
    jac.rows.clear();
    jac.cols.clear();
    jac.vals.clear();
    jac.rows.reserve(3 * p + 1);
    jac.cols.reserve(BLOCK * 2 * p + p);
    jac.vals.reserve(BLOCK * 2 * p + p);
    jac.rows.push(0);
    let mut values = [0.0; BLOCK];
    let mark = graph.mark();
    for (i, (&(c, pt), &feat)) in problem.obs.iter().zip(&problem.feats).enumerate() {
        values[..CAM].copy_from_slice(&problem.cams[c * CAM..][..CAM]);
        values[CAM..CAM + 3].copy_from_slice(&problem.points[pt * 3..][..3]);
        values[CAM + 3] = problem.weights[i];
        let inputs = graph.inputs(&values);
        let errors =
            reprojection_error(&inputs[..CAM], &inputs[CAM..CAM + 3], inputs[CAM + 3], feat);
        let point_cols = CAM * problem.n + 3 * pt;
        let weight_col = CAM * problem.n + 3 * problem.m + i;
        for error in errors {
            error.backward_into(grads);
            let end = jac.rows.last().copied().unwrap_or(0) + BLOCK;
            jac.rows.push(end);
            jac.cols.extend(
                (CAM * c..CAM * (c + 1))
                    .chain(point_cols..point_cols + 3)
                    .chain([weight_col]),
            );
            jac.vals.extend(inputs.iter().map(|&v| grads[v]));
        }
        drop(inputs);
        graph.release(mark);
    }
    for (i, &w) in problem.weights.iter().enumerate() {
        let wv = graph.var(w);
        weight_error(wv).backward_into(grads);
        let end = jac.rows.last().copied().unwrap_or(0) + 1;
        jac.rows.push(end);
        jac.cols.push(CAM * problem.n + 3 * problem.m + i);
        jac.vals.push(grads[wv]);
        graph.release(mark);
    }
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
pub fn evaluate(function: &str, input: &Value) -> Result<Evaluation, String> {
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
            let graph = Graph::new();
            let mut grads = Gradients::new();
            let mut jac = SparseMat::default();
            let ((), timings) = repeat(runs, || jacobian(&problem, &graph, &mut grads, &mut jac));
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
