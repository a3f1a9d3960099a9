//! Matrix-vector products on the tape: `Var`'s batched `mat_vec` and `vec_mat` (each handle
//! looked up once for all outputs) record exactly the dot nodes that one `Scalar::dot` per
//! output records, refuse bad handles before recording anything, and agree with a plain
//! `f64` evaluation written here from the definition.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tapegrad::linalg::{Matrix, mat_vec, vec_mat};
use tapegrad::{Error, Graph, Scalar, Var};

/// Deterministic entries in [-1, 1], different for every `(seed, i)`.
fn entries(seed: u64, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| ((seed as f64 + 1.0) * 0.7 + i as f64 * 1.3).sin())
        .collect()
}

/// The products by their definition, in `f64`, summing in index order.
fn reference(w: &[f64], rows: usize, cols: usize, x: &[f64], by_columns: bool) -> Vec<f64> {
    if by_columns {
        (0..cols)
            .map(|j| (0..rows).map(|i| x[i] * w[i * cols + j]).sum())
            .collect()
    } else {
        (0..rows)
            .map(|i| (0..cols).map(|j| w[i * cols + j] * x[j]).sum())
            .collect()
    }
}

/// One `Var::dot` per output, on its own graph: what the batched path must reproduce.
fn one_dot_per_output<'g>(w: Matrix<'_, Var<'g>>, x: &[Var<'g>], by_columns: bool) -> Vec<Var<'g>> {
    if by_columns {
        (0..w.cols())
            .map(|j| {
                let column: Vec<Var> = (0..w.rows()).map(|i| w.get(i, j)).collect();
                Var::dot(x, &column)
            })
            .collect()
    } else {
        (0..w.rows()).map(|i| Var::dot(w.row(i), x)).collect()
    }
}

/// For shapes from 1x1 to 7x5, both products: the batched nodes have the values and the
/// gradients (with respect to every entry and every vector element) of one dot per
/// output, bit for bit, and the values of the definition.
#[test]
fn batched_products_record_the_same_nodes_as_one_dot_per_output() {
    for rows in 1..=7 {
        for cols in 1..=5 {
            for by_columns in [false, true] {
                let seed = (rows * 10 + cols) as u64;
                let w = entries(seed, rows * cols);
                let x = entries(seed + 1000, if by_columns { rows } else { cols });
                let want = reference(&w, rows, cols, &x, by_columns);

                let (g, h) = (Graph::new(), Graph::new());
                let (wg, xg) = (g.vars(&w), g.vars(&x));
                let (wh, xh) = (h.vars(&w), h.vars(&x));
                let batched = if by_columns {
                    vec_mat(&xg, Matrix::new(&wg, rows, cols))
                } else {
                    mat_vec(Matrix::new(&wg, rows, cols), &xg)
                };
                let singly = one_dot_per_output(Matrix::new(&wh, rows, cols), &xh, by_columns);
                assert_eq!(g.len(), h.len(), "{rows}x{cols} by_columns={by_columns}");
                assert_eq!(batched.len(), want.len());
                for (k, (b, s)) in batched.iter().zip(&singly).enumerate() {
                    let case = format!("{rows}x{cols} by_columns={by_columns} output {k}");
                    assert_eq!(b.value().to_bits(), s.value().to_bits(), "{case}");
                    approx::assert_relative_eq!(b.value(), want[k], max_relative = 1e-14);
                    let (gb, gs) = (b.backward(), s.backward());
                    for (p, q) in wg.iter().chain(&xg).zip(wh.iter().chain(&xh)) {
                        assert_eq!(gb[*p].to_bits(), gs[*q].to_bits(), "{case}");
                    }
                }
                // The closed form of one gradient: d(W x)_i / d W[i][j] = x_j, and
                // d(x W)_j / d W[i][j] = x_i.
                let last = batched.len() - 1;
                let grads = batched[last].backward();
                if by_columns {
                    assert_eq!(grads[wg[cols - 1]], x[0]);
                } else {
                    assert_eq!(grads[wg[last * cols]], x[0]);
                }
            }
        }
    }
}

/// The `f64` forms are plain evaluations of the same definition.
#[test]
fn f64_products_match_the_definition() {
    let (w, x3, x2) = (entries(1, 6), entries(2, 3), entries(3, 2));
    let by_rows = mat_vec(Matrix::new(&w, 2, 3), &x3);
    let by_columns = vec_mat(&x2, Matrix::new(&w, 2, 3));
    for (got, want) in by_rows.iter().zip(reference(&w, 2, 3, &x3, false)) {
        approx::assert_relative_eq!(*got, want, max_relative = 1e-15);
    }
    for (got, want) in by_columns.iter().zip(reference(&w, 2, 3, &x2, true)) {
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
/// matrix with no rows gives no outputs, an empty vector panics as `dot` does.
#[test]
fn degenerate_shapes() {
    let g = Graph::new();
    let x = g.vars(&[1.0, 2.0]);
    let none: [Var; 0] = [];
    assert!(Var::mat_vec(Matrix::new(&none, 0, 2), &x).is_empty());
    assert!(Var::vec_mat(&x, Matrix::new(&none, 2, 0)).is_empty());
    let message = panic_message(|| drop(Var::mat_vec(Matrix::new(&none, 3, 0), &none)));
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
