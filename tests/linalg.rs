//! Matrix products on the tape: `Var`'s batched `mat_mul`, `mat_mul_t`, `mat_vec` and
//! `vec_mat` (each handle looked up once for the whole product) record exactly the dot
//! nodes that one `Scalar::dot` per output records, refuse bad handles before recording
//! anything, and agree with a plain `f64` evaluation written here from the definition.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tapegrad::linalg::{Matrix, Pairing, mat_mul, mat_mul_t, mat_vec, vec_mat};
use tapegrad::{Error, Graph, Scalar, Var};

/// Deterministic entries in [-1, 1], different for every `(seed, i)`.
fn entries(seed: u64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| ((seed as f64 + 1.0) * 0.7 + i as f64 * 1.3).sin())
        .collect()
}

/// `A B` (`b` is `k x m`) or `A B^T` (`b` is `m x k`) by the definition, in `f64`.
fn reference(a: &[f64], b: &[f64], k: usize, pairing: Pairing) -> Vec<f64> {
    let (n, m) = (a.len() / k, b.len() / k);
    let b_at = |kk: usize, j: usize| match pairing {
        Pairing::Columns => b[kk * m + j],
        Pairing::Rows => b[j * k + kk],
    };
    (0..n)
        .flat_map(|i| (0..m).map(move |j| (i, j)))
        .map(|(i, j)| (0..k).map(|kk| a[i * k + kk] * b_at(kk, j)).sum())
        .collect()
}

/// One `Var::dot` per output, row by row: what the batched path must reproduce.
fn one_dot_per_output<'g>(
    a: Matrix<'_, Var<'g>>,
    b: Matrix<'_, Var<'g>>,
    pairing: Pairing,
) -> Vec<Var<'g>> {
    let outputs = match pairing {
        Pairing::Columns => b.cols(),
        Pairing::Rows => b.rows(),
    };
    let mut out = Vec::new();
    for i in 0..a.rows() {
        for j in 0..outputs {
            let part: Vec<Var> = match pairing {
                Pairing::Columns => (0..b.rows()).map(|kk| b.get(kk, j)).collect(),
                Pairing::Rows => b.row(j).to_vec(),
            };
            out.push(Var::dot(a.row(i), &part));
        }
    }
    out
}

/// For every shape from 1x1 by 1x1 to 3x5 by 5x4, both pairings (`mat_mul`, `mat_mul_t`):
/// the batched nodes have the values and the gradients (with respect to every entry of
/// both factors) of one dot per output, bit for bit, and the values of the definition.
#[test]
fn batched_products_record_the_same_nodes_as_one_dot_per_output() {
    for n in 1..=3 {
        for k in 1..=5 {
            for m in 1..=4 {
                for pairing in [Pairing::Columns, Pairing::Rows] {
                    let seed = (n * 100 + k * 10 + m) as u64;
                    let a = entries(seed, n * k);
                    let b = entries(seed + 1000, k * m);
                    let (b_rows, b_cols) = match pairing {
                        Pairing::Columns => (k, m),
                        Pairing::Rows => (m, k),
                    };
                    let want = reference(&a, &b, k, pairing);

                    let (g, h) = (Graph::new(), Graph::new());
                    let (ag, bg) = (g.vars(&a), g.vars(&b));
                    let (ah, bh) = (h.vars(&a), h.vars(&b));
                    let (am, bm) = (Matrix::new(&ag, n, k), Matrix::new(&bg, b_rows, b_cols));
                    let batched = match pairing {
                        Pairing::Columns => mat_mul(am, bm),
                        Pairing::Rows => mat_mul_t(am, bm),
                    };
                    let singly = one_dot_per_output(
                        Matrix::new(&ah, n, k),
                        Matrix::new(&bh, b_rows, b_cols),
                        pairing,
                    );
                    let case = format!("{n}x{k} by {b_rows}x{b_cols}, {pairing:?}");
                    assert_eq!(g.len(), h.len(), "{case}");
                    assert_eq!(batched.len(), want.len(), "{case}");
                    for (o, (p, q)) in batched.iter().zip(&singly).enumerate() {
                        assert_eq!(p.value().to_bits(), q.value().to_bits(), "{case} {o}");
                        approx::assert_relative_eq!(p.value(), want[o], max_relative = 1e-14);
                        let (gp, gq) = (p.backward(), q.backward());
                        for (x, y) in ag.iter().chain(&bg).zip(ah.iter().chain(&bh)) {
                            assert_eq!(gp[*x].to_bits(), gq[*y].to_bits(), "{case} {o}");
                        }
                    }
                    // A closed form: d out(n-1, m-1) / d a(n-1, 0) = b's entry paired with it.
                    let grads = batched[n * m - 1].backward();
                    let paired = match pairing {
                        Pairing::Columns => b[m - 1],
                        Pairing::Rows => b[(m - 1) * k],
                    };
                    assert_eq!(grads[ag[(n - 1) * k]], paired, "{case}");
                }
            }
        }
    }
}

/// `mat_vec` and `vec_mat` are one-row products: the same nodes as one dot per output,
/// operands in their order (`dot(row of W, x)`, `dot(x, column of W)`).
#[test]
fn vector_products_are_one_row_products() {
    let (w, x2, x3) = (entries(7, 6), entries(8, 2), entries(9, 3));
    let (g, h) = (Graph::new(), Graph::new());
    let (wg, x2g, x3g) = (g.vars(&w), g.vars(&x2), g.vars(&x3));
    let (wh, x2h, x3h) = (h.vars(&w), h.vars(&x2), h.vars(&x3));
    let by_rows = mat_vec(Matrix::new(&wg, 2, 3), &x3g);
    let by_columns = vec_mat(&x2g, Matrix::new(&wg, 2, 3));
    let rows_singly: Vec<Var> = (0..2)
        .map(|i| Var::dot(&wh[i * 3..i * 3 + 3], &x3h))
        .collect();
    let columns_singly: Vec<Var> = (0..3)
        .map(|j| Var::dot(&x2h, &[wh[j], wh[3 + j]]))
        .collect();
    for (p, q) in by_rows
        .iter()
        .chain(&by_columns)
        .zip(rows_singly.iter().chain(&columns_singly))
    {
        assert_eq!(p.value().to_bits(), q.value().to_bits());
        let (gp, gq) = (p.backward(), q.backward());
        for (a, b) in wg
            .iter()
            .chain(&x2g)
            .chain(&x3g)
            .zip(wh.iter().chain(&x2h).chain(&x3h))
        {
            assert_eq!(gp[*a].to_bits(), gq[*b].to_bits());
        }
    }
}

/// The `f64` forms are plain evaluations of the same definition.
#[test]
fn f64_products_match_the_definition() {
    let (a, b) = (entries(1, 6), entries(2, 12));
    let cases = [
        (
            mat_mul(Matrix::new(&a, 2, 3), Matrix::new(&b, 3, 4)),
            Pairing::Columns,
        ),
        (
            mat_mul_t(Matrix::new(&a, 2, 3), Matrix::new(&b, 4, 3)),
            Pairing::Rows,
        ),
    ];
    for (got, pairing) in cases {
        let want = reference(&a, &b, 3, pairing);
        assert_eq!(got.len(), 8);
        for (got, want) in got.iter().zip(want) {
            approx::assert_relative_eq!(*got, want, max_relative = 1e-15);
        }
    }
    let (x2, x3) = (entries(3, 2), entries(4, 3));
    let by_rows = mat_vec(Matrix::new(&a, 2, 3), &x3);
    let by_columns = vec_mat(&x2, Matrix::new(&a, 2, 3));
    for (got, want) in by_rows.iter().zip(reference(&x3, &a, 3, Pairing::Rows)) {
        approx::assert_relative_eq!(*got, want, max_relative = 1e-15);
    }
    for (got, want) in by_columns
        .iter()
        .zip(reference(&x2, &a, 2, Pairing::Columns))
    {
        approx::assert_relative_eq!(*got, want, max_relative = 1e-15);
    }
}

fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("expected a panic");
    match payload.downcast_ref::<String>() {
        Some(s) => s.clone(),
        None => payload
            .downcast_ref::<&str>()
            .expect("a message")
            .to_string(),
    }
}

/// A released or foreign entry anywhere in the matrix (here the last one, which the first
/// output does not use) is reported with the usual message, and nothing is recorded.
#[test]
fn a_bad_entry_is_reported_before_anything_is_recorded() {
    let (g, h) = (Graph::new(), Graph::new());
    let x = g.vars(&[1.0, 2.0]);
    let mut w = g.vars(&[1.0, 2.0, 3.0, 4.0]);
    let mark = g.mark();
    let released = g.var(5.0);
    g.release(mark);
    let len = g.len();

    w[3] = released;
    let message = panic_message(|| drop(mat_vec(Matrix::new(&w, 2, 2), &x)));
    assert_eq!(message, Error::Released.to_string());
    let message = panic_message(|| drop(vec_mat(&x, Matrix::new(&w, 2, 2))));
    assert_eq!(message, Error::Released.to_string());
    assert_eq!(g.len(), len);

    w[3] = h.var(5.0);
    let message = panic_message(|| drop(mat_vec(Matrix::new(&w, 2, 2), &x)));
    let want = format!("a Var of graph #{} was used with graph #{}", h.id(), g.id());
    assert!(message.contains(&want), "{message}");
    assert_eq!(g.len(), len);
}

/// Shapes the batched path hands to the one-dot-per-output path keep their behaviour: a
/// product with no outputs is empty, an empty vector panics as `dot` does.
#[test]
fn degenerate_shapes() {
    let g = Graph::new();
    let x = g.vars(&[1.0, 2.0]);
    let none: [Var; 0] = [];
    let by = |a, b, pairing| Var::dots(a, b, pairing);
    assert!(
        by(
            Matrix::new(&none, 0, 2),
            Matrix::new(&x, 1, 2),
            Pairing::Rows
        )
        .is_empty()
    );
    assert!(
        by(
            Matrix::new(&x, 1, 2),
            Matrix::new(&none, 2, 0),
            Pairing::Columns
        )
        .is_empty()
    );
    assert!(mat_vec(Matrix::new(&none, 0, 2), &x).is_empty());
    assert!(vec_mat(&x, Matrix::new(&none, 2, 0)).is_empty());
    let message = panic_message(|| drop(mat_vec(Matrix::new(&none, 3, 0), &none)));
    assert!(message.contains("dot of no Vars"), "{message}");
}

/// In anomaly mode an overflowing product is reported as a `dot` at the caller's line.
#[test]
fn anomaly_in_a_product_names_the_dot_and_the_line() {
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let w = g.vars(&[1e300, 1.0, 1.0, 1.0]);
    let x = g.vars(&[1e300, 1.0]);
    let (y, line) = (mat_vec(Matrix::new(&w, 2, 2), &x), line!());
    let anomaly = match y[0].try_backward() {
        Err(Error::Anomaly(a)) => a,
        other => panic!("expected an anomaly, got {other:?}"),
    };
    assert_eq!(anomaly.op, "dot");
    assert_eq!(anomaly.location.expect("a location").line(), line);
    // Row 0 is 1e300 * 1e300 (overflow); row 1 is 1e300 + 1, finite.
    assert_eq!(y[1].value(), 1e300);
}
