//! ht: hand tracking (ADBench's hand model, GradBench's `ht.hpp`): 26 pose parameters
//! `theta` pose a skinned hand mesh (22 bones, each an Euler rotation of its rest pose,
//! chained from the wrist; each vertex a weighted blend of its bones' transforms; then a
//! global rotation and translation), and the residuals are the differences between
//! observed points and their corresponding mesh points, 3 per correspondence. In the
//! `complicated` variant a correspondence is a point of a triangle, at barycentric
//! coordinates `us` that are unknowns too. `jacobian` is the `3c x 26` Jacobian (`3c x 28`
//! with the two `us` columns: each residual depends on its own correspondence's `us`
//! only, so their columns are compressed into two, as every GradBench tool does).
//!
//! The model is written once over `Scalar`. The Jacobian is by forward (vector) mode: the
//! Jacobian is tall (`3c` rows, 26 or 28 columns), so one evaluation on dual numbers
//! carrying every column at once ([`Dual`] with 26 or 28 tangents, `theta` and `us` seeded
//! with the identity) gives all of it: the pose once, then each vertex a correspondence
//! uses, once, then the residuals. Reverse mode would pay one sweep of the pose per row.

use serde::Deserialize;
use serde_json::{Value, json};
use tapegrad::{Dual, Scalar};

use crate::runs::{Evaluation, Runs, repeat};

use super::{SubFrom, expect_len, parse, unknown_function};

#[derive(Deserialize)]
struct ModelInput {
    bone_names: Vec<String>,
    parents: Vec<i64>,
    base_relatives: Vec<[[f64; 4]; 4]>,
    inverse_base_absolutes: Vec<[[f64; 4]; 4]>,
    base_positions: Vec<[f64; 4]>,
    weights: Vec<Vec<f64>>,
    triangles: Vec<[usize; 3]>,
    is_mirrored: bool,
}

#[derive(Deserialize)]
struct DataInput {
    model: ModelInput,
    correspondences: Vec<usize>,
    points: Vec<[f64; 3]>,
}

#[derive(Deserialize)]
struct Input {
    theta: Vec<f64>,
    data: DataInput,
    #[serde(default)]
    us: Vec<[f64; 2]>,
}

/// Pose parameters.
pub const THETA: usize = 26;

/// An affine transform: the top three rows of a 4 x 4 matrix whose last row is
/// `[0, 0, 0, 1]`.
pub type Affine<T> = [[T; 4]; 3];

/// The hand model and the observations.
#[derive(Clone, Debug)]
pub struct Hand {
    /// Each bone's parent (`None` for the root), parents before children.
    pub parents: Vec<Option<usize>>,
    /// Each bone's rest pose relative to its parent.
    pub base_relatives: Vec<Affine<f64>>,
    /// Each bone's inverse absolute rest pose.
    pub inverse_base_absolutes: Vec<Affine<f64>>,
    /// Each vertex's rest position (homogeneous, last coordinate 1).
    pub base_positions: Vec<[f64; 4]>,
    /// Per vertex, the bones that move it and their weights (nonzero only).
    pub weights: Vec<Vec<(usize, f64)>>,
    /// Mirror the mesh in x.
    pub is_mirrored: bool,
    /// Triangles (the `complicated` variant's correspondences).
    pub triangles: Vec<[usize; 3]>,
    /// Per correspondence: a vertex (simple) or a triangle (complicated).
    pub correspondences: Vec<usize>,
    /// The observed points.
    pub points: Vec<[f64; 3]>,
}

/// The top three rows of a 4 x 4 matrix, if its last row is `[0, 0, 0, 1]`.
fn affine(m: &[[f64; 4]; 4], what: &str) -> Result<Affine<f64>, String> {
    if m[3] != [0.0, 0.0, 0.0, 1.0] {
        return Err(format!(
            "ht: a bone's {what} has the last row {:?}, not [0, 0, 0, 1]",
            m[3]
        ));
    }
    Ok([m[0], m[1], m[2]])
}

/// The pose from `theta`: each bone's Euler angles, the global rotation (angle-axis) and
/// the global translation (zero where the hand has no degree
/// of freedom), from `theta` (`to_pose_params` in `ht.hpp`, without its scale column,
/// which is all ones).
fn pose_params<T: Scalar>(theta: &[T], bones: usize) -> (Vec<[T; 3]>, [T; 3], [T; 3]) {
    let zero = theta[0].lift(0.0);
    let mut columns = vec![[zero; 3]; bones];
    let mut next = 6;
    // Bones 2.. are the fingers' four joints (the fourth is fixed): the first joint
    // bends and spreads, the next two bend.
    for finger in 0..5 {
        for joint in 0..3 {
            let column = &mut columns[2 + 4 * finger + joint];
            column[0] = theta[next];
            next += 1;
            if joint == 0 {
                column[1] = theta[next];
                next += 1;
            }
        }
    }
    (
        columns,
        [theta[0], theta[1], theta[2]],
        [theta[3], theta[4], theta[5]],
    )
}

/// The rotation of Euler angles `(x, z, y)`: `Rz Ry Rx`, multiplied out.
fn euler_rotation<T: Scalar>(xzy: [T; 3]) -> [[T; 3]; 3] {
    let (tx, ty, tz) = (xzy[0], xzy[2], xzy[1]);
    let (cx, sx) = (tx.cos(), tx.sin());
    let (cy, sy) = (ty.cos(), ty.sin());
    let (cz, sz) = (tz.cos(), tz.sin());
    // Rz Ry = [[cz cy, -sz, cz sy], [sz cy, cz, sz sy], [-sy, 0, cy]], then times Rx.
    let (czcy, czsy, szcy, szsy) = (cz * cy, cz * sy, sz * cy, sz * sy);
    [
        [
            czcy,
            T::dot(&[czsy, sz], &[sx, -cx]),
            T::dot(&[sz, czsy], &[sx, cx]),
        ],
        [
            szcy,
            T::dot(&[cz, szsy], &[cx, sx]),
            T::dot(&[szsy, cz], &[cx, -sx]),
        ],
        [-sy, cy * sx, cy * cx],
    ]
}

/// The rotation of an angle-axis vector (the identity below an angle of 1e-4).
fn angle_axis_rotation<T: Scalar + SubFrom>(aa: [T; 3]) -> Option<[[T; 3]; 3]> {
    let norm = T::dot(&aa, &aa).sqrt();
    if norm.value() < 1e-4 {
        return None;
    }
    let [x, y, z] = aa.map(|a| a / norm);
    let (s, c) = (norm.sin(), norm.cos());
    let one_c = c.sub_from(1.0);
    let (xy, xz, yz) = (x * y * one_c, x * z * one_c, y * z * one_c);
    let diagonal = |u: T| u * u + (u * u).sub_from(1.0) * c;
    Some([
        [diagonal(x), xy - z * s, xz + y * s],
        [xy + z * s, diagonal(y), yz - x * s],
        [xz - y * s, yz + x * s, diagonal(z)],
    ])
}

/// The pose's bone transforms and global transform: what every vertex shares.
pub struct Pose<T> {
    /// Per bone: its posed absolute transform times its inverse rest absolute.
    pub transforms: Vec<Affine<T>>,
    /// The global rotation (`None`: the identity).
    pub rotation: Option<[[T; 3]; 3]>,
    /// The global translation.
    pub translation: [T; 3],
}

impl<T: Scalar + SubFrom> Pose<T> {
    /// The pose of `theta` (26 parameters).
    pub fn new(hand: &Hand, theta: &[T]) -> Self {
        let bones = hand.parents.len();
        let (columns, global, translation) = pose_params(theta, bones);
        let mut absolutes: Vec<Affine<T>> = Vec::with_capacity(bones);
        for (b, &angles) in columns.iter().enumerate() {
            let r = euler_rotation(angles);
            let base = &hand.base_relatives[b];
            // The posed relative transform: base (rotation part) times r; the translation
            // stays the base's.
            let relative: Affine<T> = std::array::from_fn(|i| {
                let mut row = [theta[0].lift(base[i][3]); 4];
                for (j, entry) in row.iter_mut().enumerate().take(3) {
                    *entry = T::dot_f64(&[r[0][j], r[1][j], r[2][j]], &base[i][..3]);
                }
                row
            });
            let absolute = match hand.parents[b] {
                None => relative,
                Some(p) => {
                    let parent = &absolutes[p];
                    std::array::from_fn(|i| {
                        let a = &parent[i];
                        let mut row: [T; 4] = std::array::from_fn(|j| {
                            T::dot(&a[..3], &[relative[0][j], relative[1][j], relative[2][j]])
                        });
                        row[3] = row[3] + a[3];
                        row
                    })
                }
            };
            absolutes.push(absolute);
        }
        let transforms = absolutes
            .iter()
            .zip(&hand.inverse_base_absolutes)
            .map(|(a, inv)| {
                std::array::from_fn(|i| {
                    std::array::from_fn(|j| {
                        let column = [
                            inv[0][j],
                            inv[1][j],
                            inv[2][j],
                            if j == 3 { 1.0 } else { 0.0 },
                        ];
                        if j == 3 {
                            T::dot_f64(&a[i], &column)
                        } else {
                            T::dot_f64(&a[i][..3], &column[..3])
                        }
                    })
                })
            })
            .collect();
        Pose {
            transforms,
            rotation: angle_axis_rotation(global),
            translation,
        }
    }

    /// Vertex `v` posed: its bones' transforms blended by weight, mirrored if the hand
    /// is, then rotated and translated.
    pub fn vertex(
        &self,
        hand: &Hand,
        v: usize,
        terms: &mut Vec<T>,
        weights: &mut Vec<f64>,
    ) -> [T; 3] {
        let base = &hand.base_positions[v];
        let mut skinned: [T; 3] = std::array::from_fn(|i| {
            terms.clear();
            weights.clear();
            for &(b, w) in &hand.weights[v] {
                terms.extend_from_slice(&self.transforms[b][i]);
                weights.extend(base.iter().map(|&x| w * x));
            }
            T::dot_f64(terms, weights)
        });
        if hand.is_mirrored {
            skinned[0] = -skinned[0];
        }
        match &self.rotation {
            None => std::array::from_fn(|i| skinned[i] + self.translation[i]),
            Some(r) => std::array::from_fn(|i| T::dot(&r[i], &skinned) + self.translation[i]),
        }
    }
}

/// Every residual at `theta` (and `us`, in the complicated variant), as `ht.hpp`'s
/// objective: the whole mesh posed, then the correspondences' residuals.
pub fn residuals<T: Scalar + SubFrom>(hand: &Hand, theta: &[T], us: Option<&[[T; 2]]>) -> Vec<T> {
    let pose = Pose::new(hand, theta);
    let (mut terms, mut weights) = (Vec::new(), Vec::new());
    let mesh: Vec<[T; 3]> = (0..hand.base_positions.len())
        .map(|v| pose.vertex(hand, v, &mut terms, &mut weights))
        .collect();
    let mut out = Vec::with_capacity(3 * hand.points.len());
    correspondence_residuals(hand, us, |v| mesh[v], |r| out.extend(r));
    out
}

/// The three residuals of each correspondence in turn, passed to `emit`: the observed
/// point minus its mesh point (a vertex, or the point of a triangle at barycentric
/// coordinates `us`), with `mesh(v)` the posed vertex `v`.
fn correspondence_residuals<T: Scalar + SubFrom>(
    hand: &Hand,
    us: Option<&[[T; 2]]>,
    mut mesh: impl FnMut(usize) -> [T; 3],
    mut emit: impl FnMut([T; 3]),
) {
    for (i, point) in hand.points.iter().enumerate() {
        let corr = hand.correspondences[i];
        let mesh_point: [T; 3] = match us {
            None => mesh(corr),
            Some(us) => {
                let [u0, u1] = us[i];
                let u2 = u0.sub_from(1.0) - u1;
                let [a, b, c] = hand.triangles[corr].map(&mut mesh);
                std::array::from_fn(|j| T::dot(&[u0, u1, u2], &[a[j], b[j], c[j]]))
            }
        };
        emit(std::array::from_fn(|j| mesh_point[j].sub_from(point[j])));
    }
}

/// The Jacobian, row-major (`3c` rows; columns: the two `us` columns in the complicated
/// variant, then `theta`'s 26), by forward mode in one evaluation.
pub fn jacobian(hand: &Hand, theta: &[f64], us: Option<&[[f64; 2]]>, out: &mut Vec<f64>) {
    match us {
        None => jacobian_lanes::<THETA>(hand, theta, None, out),
        Some(us) => jacobian_lanes::<{ THETA + 2 }>(hand, theta, Some(us), out),
    }
}

/// [`jacobian`] with `K` tangents, one per column: `K - 26` for `us` (0 or 2), then
/// `theta`'s. Every column of a residual is the residual's tangent along that column's
/// unit direction; a correspondence's `us` are seeded along the two `us` directions, as
/// its residuals depend on no other correspondence's `us`.
fn jacobian_lanes<const K: usize>(
    hand: &Hand,
    theta: &[f64],
    us: Option<&[[f64; 2]]>,
    out: &mut Vec<f64>,
) {
    let extra = K - THETA;
    let theta: Vec<Dual<K>> = theta
        .iter()
        .enumerate()
        .map(|(j, &t)| Dual::unit(t, extra + j))
        .collect();
    let us: Option<Vec<[Dual<K>; 2]>> = us.map(|us| {
        us.iter()
            .map(|&[u0, u1]| [Dual::unit(u0, 0), Dual::unit(u1, 1)])
            .collect()
    });
    let pose = Pose::new(hand, &theta);
    // Each vertex posed once, when a correspondence first uses it (the objective poses the
    // whole mesh; the Jacobian needs the correspondences' vertices only).
    // `slot[v]`: where vertex `v` is in `posed` (`u32::MAX`: not yet posed).
    let mut slot = vec![u32::MAX; hand.base_positions.len()];
    let mut posed: Vec<[Dual<K>; 3]> = Vec::new();
    let (mut terms, mut weights) = (Vec::new(), Vec::new());
    let mesh = |v: usize| {
        if slot[v] == u32::MAX {
            slot[v] = posed.len() as u32;
            posed.push(pose.vertex(hand, v, &mut terms, &mut weights));
        }
        posed[slot[v] as usize]
    };
    out.clear();
    out.reserve(3 * hand.points.len() * K);
    correspondence_residuals(hand, us.as_deref(), mesh, |residual| {
        for r in residual {
            // `+ 0.0` turns a `-0` tangent into `+0`, as a reverse sweep (summing from
            // `+0`) gives a zero entry.
            out.extend(r.tangents.iter().map(|&t| t + 0.0));
        }
    });
}

impl Hand {
    fn new(data: DataInput, complicated: bool) -> Result<Hand, String> {
        let model = data.model;
        let bones = model.bone_names.len();
        let verts = model.base_positions.len();
        expect_len("ht", "parents", model.parents.len(), bones)?;
        expect_len("ht", "base_relatives", model.base_relatives.len(), bones)?;
        expect_len(
            "ht",
            "inverse_base_absolutes",
            model.inverse_base_absolutes.len(),
            bones,
        )?;
        expect_len("ht", "weights (vertices)", model.weights.len(), verts)?;
        if bones != 22 {
            return Err(format!(
                "ht: the hand model has 22 bones (5 fingers of 4, wrist, forearm), not {bones}"
            ));
        }
        let parents = model
            .parents
            .iter()
            .enumerate()
            .map(|(b, &p)| match p {
                -1 => Ok(None),
                p if p >= 0 && (p as usize) < b => Ok(Some(p as usize)),
                _ => Err(format!("ht: bone {b}'s parent {p} is not an earlier bone")),
            })
            .collect::<Result<_, _>>()?;
        let weights = model
            .weights
            .iter()
            .map(|row| {
                expect_len("ht", "a vertex's weights", row.len(), bones)?;
                Ok(row
                    .iter()
                    .enumerate()
                    .filter(|&(_, &w)| w != 0.0)
                    .map(|(b, &w)| (b, w))
                    .collect())
            })
            .collect::<Result<_, String>>()?;
        let targets = if complicated {
            model.triangles.len()
        } else {
            verts
        };
        if let Some(&bad) = data.correspondences.iter().find(|&&c| c >= targets) {
            return Err(format!(
                "ht: correspondence {bad} is past the model's {targets} targets"
            ));
        }
        // The simple variant's correspondences are vertices: it does not read the triangles.
        let used = if complicated {
            model.triangles.as_slice()
        } else {
            &[]
        };
        if let Some(bad) = used.iter().flatten().find(|&&v| v >= verts) {
            return Err(format!(
                "ht: a triangle names vertex {bad}, past the model's {verts}"
            ));
        }
        expect_len(
            "ht",
            "points",
            data.points.len(),
            data.correspondences.len(),
        )?;
        Ok(Hand {
            parents,
            base_relatives: model
                .base_relatives
                .iter()
                .map(|m| affine(m, "base relative"))
                .collect::<Result<_, _>>()?,
            inverse_base_absolutes: model
                .inverse_base_absolutes
                .iter()
                .map(|m| affine(m, "inverse base absolute"))
                .collect::<Result<_, _>>()?,
            base_positions: model.base_positions,
            weights,
            is_mirrored: model.is_mirrored,
            triangles: model.triangles,
            correspondences: data.correspondences,
            points: data.points,
        })
    }
}

/// Evaluates `objective` (the residuals) or `jacobian`.
///
/// # Errors
///
/// An unknown function, or an input that is not a hand model with matching observations
/// (sizes, bone order, correspondences within the model).
pub fn evaluate(function: &str, input: &Value) -> Result<Evaluation, String> {
    let runs = Runs::of(input)?;
    let Input { theta, data, us } = parse("ht", input)?;
    expect_len("ht", "theta", theta.len(), THETA)?;
    let complicated = !us.is_empty();
    let hand = Hand::new(data, complicated)?;
    if complicated {
        expect_len("ht", "us", us.len(), hand.points.len())?;
    }
    let us = complicated.then_some(us.as_slice());
    match function {
        "objective" => {
            let (r, timings) = repeat(runs, || residuals(&hand, &theta, us));
            Ok(Evaluation {
                output: json!(r),
                timings,
            })
        }
        "jacobian" => {
            let mut jac = Vec::new();
            let ((), timings) = repeat(runs, || jacobian(&hand, &theta, us, &mut jac));
            let columns = THETA + if complicated { 2 } else { 0 };
            let output: Vec<&[f64]> = jac.chunks(columns).collect();
            Ok(Evaluation {
                output: json!(output),
                timings,
            })
        }
        _ => Err(unknown_function("ht", function, &["objective", "jacobian"])),
    }
}
