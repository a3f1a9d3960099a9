//! Threads: a `Graph` is `Send` (it can move to another thread) and not `Sync` (the
//! `compile_fail,E0277` example on `Graph` shows sharing rejected); independent graphs on
//! several threads compute exactly what one thread computes.

use tapegrad::{Error, Gradients, Graph, Scalar};

/// Checked at compile time: these types can be moved to another thread.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<Graph>();
    assert_send::<Gradients>();
    assert_send::<Error>();
};

/// A small two-layer network's loss and its gradient with respect to every weight, on a
/// graph of its own; the weights are derived from `seed` so each thread's work differs.
fn loss_and_gradient(seed: u64) -> (f64, Vec<f64>) {
    let g = Graph::new();
    let weights: Vec<f64> = (0..24)
        .map(|i| ((seed * 31 + i) as f64 * 0.37).sin() * 0.5)
        .collect();
    let w = g.vars(&weights);
    let inputs = [0.3, -1.2, 0.8];
    let hidden: Vec<_> = (0..6)
        .map(|j| {
            let pre = g.dot(&w[j * 3..j * 3 + 3], &inputs);
            pre.tanh()
        })
        .collect();
    let logits = [g.dot(&hidden, &w[18..24]), g.constant(0.0)];
    // Cross-entropy of class 0: logsumexp(logits) - logits[0].
    let loss = Scalar::logsumexp(&logits) - logits[0];
    let grads = loss.backward();
    (loss.value(), grads.wrt_all(&w))
}

#[test]
fn independent_graphs_on_eight_threads_match_one_thread() {
    let expected: Vec<_> = (0..8).map(loss_and_gradient).collect();
    // The gradient is not trivially zero, so agreeing means something.
    assert!(
        expected
            .iter()
            .all(|(_, g)| g.iter().any(|d| d.abs() > 1e-3))
    );
    for _ in 0..4 {
        let handles: Vec<_> = (0..8)
            .map(|seed| std::thread::spawn(move || loss_and_gradient(seed)))
            .collect();
        let got: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect();
        // Bit for bit: the same operations in the same order give the same floats.
        assert_eq!(got, expected);
    }
}

#[test]
fn a_graph_moves_to_another_thread_and_keeps_working() {
    let g = Graph::new();
    let before = {
        let x = g.var(2.0);
        let y = x.powi(3);
        y.backward()[x] // 3 x^2 = 12
    };
    let len = g.len();
    let (after, moved_len) = std::thread::spawn(move || {
        let moved_len = g.len();
        let x = g.var(2.0);
        let y = x.powi(3);
        (y.backward()[x], moved_len)
    })
    .join()
    .expect("no panic");
    assert_eq!((before, after), (12.0, 12.0));
    assert_eq!(moved_len, len);
}

/// A `Gradients` can be sent back from a worker thread and read there: it holds plain
/// numbers, not references into the graph.
#[test]
fn gradients_are_sendable_results() {
    let (grads, value) = std::thread::spawn(|| {
        let g = Graph::new();
        let x = g.var(0.5);
        let y = x.exp();
        let grads = y.backward();
        let value = grads[x];
        (grads, value)
    })
    .join()
    .expect("no panic");
    assert_eq!(value, 0.5f64.exp());
    // Reading it with a handle of another graph is a clear error, not a number.
    let h = Graph::new();
    assert!(matches!(
        grads.try_wrt(h.var(0.0)),
        Err(Error::ForeignHandle { .. })
    ));
}
