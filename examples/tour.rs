//! The README's tour, runnable: `cargo run --release --example tour`.
//!
//! `main` is the README's tour, line for line (`tests/readme_tour.rs` fails if the two
//! differ): edit both together. Not rustfmt'd, to keep the README's aligned comments.

#[rustfmt::skip]
fn main() {
    use tapegrad::Graph;

    let g = Graph::new();
    let x = g.var(2.0);          // a differentiable input
    let y = g.var(3.0);
    let f = x.exp() / y.ln();    // recorded: exp, ln, division
    let grads = f.backward();    // one reverse sweep
    println!("f = {:.6}, df/dx = {:.6}, df/dy = {:.6}", f.value(), grads[x], grads[y]);
    // d/dx = e^x / ln y;   d/dy = -e^x / (y (ln y)^2)
    assert!((grads[x] - 2f64.exp() / 3f64.ln()).abs() < 1e-12);
    assert!((grads[y] + 2f64.exp() / (3.0 * 3f64.ln().powi(2))).abs() < 1e-12);

    // f64 on either side is an untracked constant, through the same rule: d(2/x)/dx = -2/x^2.
    assert_eq!((2.0 / x).backward()[x], -0.5);

    // Fused n-ary nodes: one node for a whole sum, dot product or log-sum-exp.
    let w = g.vars(&[0.5, -1.0]);
    let s = g.dot(&w, &[3.0, 4.0]) + g.sum(w.iter().map(|wi| wi.powi(2)));
    println!("s = {}, ds/dw0 = {}", s.value(), s.backward()[w[0]]);
    assert_eq!(s.backward()[w[0]], 3.0 + 2.0 * 0.5);

    // Gradients of gradients: every gradient from `grad` is itself a Var.
    let d = x.powi(3).grad(&[x])[0];     // 3 x^2 = 12
    let d2 = d.grad(&[x])[0];            // 6 x = 12
    println!("at x = 2: d(x^3)/dx = {}, d2(x^3)/dx2 = {}", d.value(), d2.value());
    assert_eq!((d.value(), d2.value()), (12.0, 12.0));

    // Constant memory: release what was recorded after a mark, keep what came before it
    // (nn's training step, Params::value_and_grad, does this for you).
    let p = g.var(0.0);
    let mark = g.mark();
    let nodes = g.len();
    let mut grads = tapegrad::Gradients::new();
    for _ in 0..100 {
        let loss = (p * 3.0 - 6.0).powi(2);
        loss.backward_into(&mut grads); // reuses the store's memory
        let next = p.value() - 0.02 * grads[p];
        g.release(mark);                // frees the step's nodes; `p` stays
        g.set_value(p, next);
    }
    println!("p = {:.9} after 100 steps; {} nodes, as before the loop", p.value(), g.len());
    assert!((p.value() - 2.0).abs() < 1e-9);
    assert_eq!(g.len(), nodes);
}
