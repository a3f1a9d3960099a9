//! The README's tour, runnable: `cargo run --release --example tour`.
//!
//! Records `f = e^x / ln y`, differentiates it, and checks the result against the calculus;
//! then shows the other everyday pieces: `f64` operands, fused n-ary nodes, a gradient
//! store reused across steps, and marks/release for a training loop in constant memory.

use tapegrad::{Gradients, Graph};

fn main() {
    // The tour: the gradient of exp(x) / ln(y).
    let g = Graph::new();
    let x = g.var(2.0);
    let y = g.var(3.0);
    let f = x.exp() / y.ln();
    let grads = f.backward();
    // d/dx = e^x / ln y;   d/dy = -e^x / (y (ln y)^2)
    let (dx, dy) = (
        2f64.exp() / 3f64.ln(),
        -2f64.exp() / (3.0 * 3f64.ln().powi(2)),
    );
    println!("f = e^x / ln y at (2, 3) = {:.6}", f.value());
    println!("df/dx = {:.6}  (closed form {dx:.6})", grads[x]);
    println!("df/dy = {:.6}  (closed form {dy:.6})", grads[y]);
    assert!((grads[x] - dx).abs() < 1e-12 && (grads[y] - dy).abs() < 1e-12);

    // f64 on either side of an operator is an untracked constant: d(2/x)/dx = -2/x^2.
    let h = 2.0 / x;
    println!("d(2/x)/dx at 2 = {}", h.backward()[x]);

    // A training loop: parameters before the mark, each step's nodes after it.
    let w = g.vars(&[0.0, 0.0]);
    let mark = g.mark();
    let data = [(-1.0, -4.0), (0.0, -1.0), (1.0, 2.0), (2.0, 5.0)]; // t = 3x - 1
    let mut store = Gradients::new();
    for step in 0..300 {
        // Mean squared error of t = w0 x + w1, as one n-ary sum node.
        let loss = g.sum(data.iter().map(|&(x, t)| (w[0] * x + w[1] - t).powi(2))) / 4.0;
        loss.backward_into(&mut store); // reuses the store's memory every step
        if step % 100 == 0 {
            println!("step {step}: loss {:.6}, nodes {}", loss.value(), g.len());
        }
        let updated = [
            w[0].value() - 0.1 * store[w[0]],
            w[1].value() - 0.1 * store[w[1]],
        ];
        g.release(mark); // frees the step's nodes; the parameters stay
        g.set_value(w[0], updated[0]);
        g.set_value(w[1], updated[1]);
    }
    println!(
        "fitted t = {:.4} x + {:.4} (true: 3 x - 1); {} nodes left",
        w[0].value(),
        w[1].value(),
        g.len()
    );
}
