//! `Inputs::set_values` refuses inputs a dot block reads in place, and once the block is
//! released, the block recorded again at the new values has the bits of a fresh graph.

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

/// `Inputs::set_values` refuses inputs a block reads in place (as its second factor or in
/// its first), and after the release the block recorded again at the new values has the
/// gradients of a fresh graph at those values.
#[test]
fn set_values_refuses_inputs_a_block_reads_then_matches_a_fresh_graph() {
    let (outputs, inner) = (3, 4);
    let w0: Vec<f64> = (0..outputs * inner)
        .map(|k| 0.5 + k as f64 * 0.25)
        .collect();
    let w1: Vec<f64> = w0.iter().map(|v| 1.0 - v * 0.75).collect();
    let x0: Vec<f64> = (0..inner).map(|k| 2.0 - k as f64 * 0.5).collect();
    let record = |w: &[Var], x: &[Var]| {
        let y = Scalar::dots(
            Matrix::new(x, 1, inner),
            Matrix::new(w, outputs, inner),
            Pairing::Rows,
        );
        let loss = Var::sum(&y.iter().map(|&v| v * v).collect::<Vec<_>>());
        (
            loss.value().to_bits(),
            grad_bits(loss, w),
            grad_bits(loss, x),
        )
    };
    let g = Graph::new();
    let w = g.inputs(&w0);
    let x = g.inputs(&x0);
    let mark = g.mark();
    let first = record(&w, &x);
    assert!(w.set_values(&w1).is_err(), "the block reads w in place");
    assert!(x.set_values(&x0).is_err(), "the block reads x in place");
    g.release(mark);
    w.set_values(&w1).unwrap();
    let second = record(&w, &x);

    let fresh = |w_values: &[f64]| {
        let h = Graph::new();
        let w = h.inputs(w_values);
        let x = h.inputs(&x0);
        record(&w, &x)
    };
    assert_eq!(first, fresh(&w0));
    assert_eq!(second, fresh(&w1));
    assert_ne!(first, second);
}
