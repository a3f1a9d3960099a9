//! A release to a mark inside a dot block (a weight matrix's products stored without
//! edges) keeps the block's first outputs and frees the rest; everything recorded after
//! reads the cut tape correctly. Checked against the same steps with the products
//! recorded one dot at a time (with their edges), bit for bit.

use tapegrad::linalg::{Matrix, Pairing};
use tapegrad::{Graph, Scalar, Var};

/// The gradients of `loss` with respect to `xs`, bits.
fn grad_bits(loss: Var<'_>, xs: &[Var<'_>]) -> Vec<u64> {
    loss.backward()
        .wrt_all(xs)
        .iter()
        .map(|g| g.to_bits())
        .collect()
}

/// A release to a mark taken before an earlier release can fall inside a block recorded
/// since: the block's outputs below the mark stay (their handles are valid), and what is
/// recorded next at the freed positions must be read as what it is, not as the block's.
/// Checked against the same steps with the dots recorded one by one (edges), for both
/// pairings, small shapes and every cut.
#[test]
fn a_release_inside_a_block_keeps_its_first_outputs_and_frees_the_rest() {
    for rows in 1..=3 {
        for outputs in 1..=4 {
            for inner in 1..=3 {
                for cut in 1..rows * outputs {
                    cut_block(rows, outputs, inner, cut);
                }
            }
        }
    }
    cut_block(3, 4, 5, 5);
}

/// One case of [`a_release_inside_a_block_keeps_its_first_outputs_and_frees_the_rest`]:
/// `cut` outputs of a `rows x outputs` block over `inner` kept.
fn cut_block(rows: usize, outputs: usize, inner: usize, cut: usize) {
    let w_values: Vec<f64> = (0..outputs * inner)
        .map(|k| 0.25 + k as f64 * 0.375)
        .collect();
    let x_values: Vec<f64> = (0..rows * inner).map(|k| 1.5 - k as f64 * 0.125).collect();
    for (pairing, another) in [
        (Pairing::Rows, false),
        (Pairing::Columns, false),
        (Pairing::Rows, true),
        (Pairing::Columns, true),
    ] {
        let (b_rows, b_cols) = match pairing {
            Pairing::Rows => (outputs, inner),
            Pairing::Columns => (inner, outputs),
        };
        {
            let run = |blocked: bool| {
                let g = Graph::new();
                let w = if blocked {
                    g.inputs(&w_values).to_vec()
                } else {
                    // Not consecutive: every other input, so no block.
                    let spread =
                        g.vars(&w_values.iter().flat_map(|&v| [v, 0.0]).collect::<Vec<_>>());
                    spread.iter().step_by(2).copied().collect()
                };
                let x = g.vars(&x_values);
                let start = g.mark();
                // Nodes that take the positions up to the stale mark, then released.
                let filler: Vec<Var> = (0..cut).map(|k| x[k % x.len()] * 3.0).collect();
                let stale = g.mark();
                drop(filler);
                g.release(start);
                let y = Scalar::dots(
                    Matrix::new(&x, rows, inner),
                    Matrix::new(&w, b_rows, b_cols),
                    pairing,
                );
                assert_eq!(y.len(), rows * outputs);
                if another {
                    // A later block too, which the release frees whole: the cut block is
                    // then not the tape's last.
                    let again = Scalar::dots(
                        Matrix::new(&x, rows, inner),
                        Matrix::new(&w, b_rows, b_cols),
                        pairing,
                    );
                    assert_eq!(again.len(), rows * outputs);
                }
                g.release(stale);
                // The outputs below the mark survive, those above are freed.
                assert!(y[..cut].iter().all(|v| v.try_value().is_ok()));
                assert!(y[cut..].iter().all(|v| v.try_value().is_err()));
                // New nodes at the freed positions, and a loss over both.
                let n = x.len();
                let z: Vec<Var> = (0..outputs + 3)
                    .map(|k| x[k % n] * x[(k + 1) % n] + 0.5)
                    .collect();
                let loss = Var::sum(&y[..cut]) * 1.25 + Var::sum(&z);
                let values: Vec<u64> = y[..cut]
                    .iter()
                    .chain(&z)
                    .chain([&loss])
                    .map(|v| v.value().to_bits())
                    .collect();
                let last = y[cut - 1];
                // The differentiable sweep and the structure passes read the cut tape too.
                let second: Vec<u64> = loss.grad(&w).iter().map(|d| d.value().to_bits()).collect();
                (
                    values,
                    grad_bits(loss, &x),
                    grad_bits(loss, &w),
                    grad_bits(last, &x),
                    second,
                    g.edge_count(),
                )
            };
            assert_eq!(
                run(true),
                run(false),
                "{pairing:?}, cut after {cut}, another block after: {another}"
            );
        }
    }
}
