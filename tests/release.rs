//! Marks and release: a training loop that re-records each step on the same parameters
//! runs in constant memory, parameters survive, released handles are errors (never
//! another node's value), and a `Gradients` computed before a release stays truthful.

use approx::assert_relative_eq;
use tapegrad::linalg::{Matrix, Pairing};
use tapegrad::{Error, Gradients, Graph, Scalar, Var};

/// The data of step `step`: four points on the line t = 3x - 1, with x varying by step so
/// that every step's loss and gradient differ.
fn batch(step: usize) -> [(f64, f64); 4] {
    let s = step as f64 * 0.01;
    [-1.0, -0.25, 0.5, 1.5].map(|x| (x + s, 3.0 * (x + s) - 1.0))
}

/// Fits `t = w0 x + w1` by SGD on the mean squared error, 200 steps, releasing each
/// step's nodes and updating the parameters with `Graph::set_value`. Each step's gradient
/// is checked against the closed form at the parameters' current values.
#[test]
fn training_loop_runs_in_constant_memory() {
    let g = Graph::new();
    let w = g.vars(&[0.0, 0.0]);
    let mark = g.mark();
    let params_len = g.len();
    let lr = 0.1;
    let mut step_len = None;
    let mut heap_after_first_step = None;
    let mut grads = Gradients::new();
    for step in 0..200 {
        let (w0, w1) = (w[0].value(), w[1].value());
        let data = batch(step);
        let residuals = data.map(|(x, t)| w[0] * x + w[1] - t);
        let loss = g.sum(residuals.iter().map(|r| r.powi(2))) / data.len() as f64;
        // Every step records the same number of nodes.
        assert_eq!(*step_len.get_or_insert(g.len()), g.len(), "step {step}");

        // L = (1/n) sum r^2 with r = w0 x + w1 - t:
        // dL/dw0 = (2/n) sum r x, dL/dw1 = (2/n) sum r.
        let n = data.len() as f64;
        let r: Vec<f64> = data.iter().map(|(x, t)| w0 * x + w1 - t).collect();
        let d_w0 = 2.0 / n * r.iter().zip(&data).map(|(r, (x, _))| r * x).sum::<f64>();
        let d_w1 = 2.0 / n * r.iter().sum::<f64>();
        loss.backward_into(&mut grads);
        // The same operations up to summation order: 1e-12 relative, or 1e-14 absolute
        // near the optimum, where the gradient is a cancelling sum of O(1) terms.
        assert_relative_eq!(grads[w[0]], d_w0, epsilon = 1e-14, max_relative = 1e-12);
        assert_relative_eq!(grads[w[1]], d_w1, epsilon = 1e-14, max_relative = 1e-12);

        g.release(mark);
        assert_eq!(g.len(), params_len, "step {step}: back to the parameters");
        // The parameters keep their values through the release.
        assert_eq!((w[0].value(), w[1].value()), (w0, w1));
        // ... and the gradients computed before it still read them.
        let (new0, new1) = (w0 - lr * grads[w[0]], w1 - lr * grads[w[1]]);
        g.set_value(w[0], new0);
        g.set_value(w[1], new1);
        assert_eq!((w[0].value(), w[1].value()), (new0, new1));

        // Capacity is reached in the first step and reused ever after.
        let heap = g.heap_bytes();
        assert_eq!(
            *heap_after_first_step.get_or_insert(heap),
            heap,
            "step {step}"
        );
    }
    // The fit converged to t = 3x - 1: the loop really trained on the updated values.
    assert_relative_eq!(w[0].value(), 3.0, max_relative = 1e-4);
    assert_relative_eq!(w[1].value(), -1.0, max_relative = 1e-4);
}

/// A released slot is reused by the next node, but the old handle's version no longer
/// matches: it reports `Released` instead of reading the new node.
#[test]
fn released_handle_never_reads_the_node_that_reuses_its_slot() {
    let g = Graph::new();
    let w = g.var(2.0);
    let mark = g.mark();
    let old = w * 10.0;
    g.release(mark);
    let new = w * 3.0; // same tape position, same slot, new version
    assert_eq!(new.try_position(), Ok(1));
    assert_eq!(old.try_value(), Err(Error::Released));
    assert_eq!(old.try_position(), Err(Error::Released));
    assert_eq!(old.try_add(1.0).err(), Some(Error::Released));
    assert!(!old.same_node(new));
    assert_eq!(new.value(), 6.0);
    assert_eq!(w.value(), 2.0);
}

#[test]
#[should_panic(expected = "released by Graph::release")]
fn value_of_a_released_handle_panics_with_a_clear_message() {
    let g = Graph::new();
    let mark = g.mark();
    let tmp = g.var(1.0);
    g.release(mark);
    let _ = tmp.value();
}

#[test]
#[should_panic(expected = "released by Graph::release")]
fn operator_on_a_released_handle_panics_with_a_clear_message() {
    let g = Graph::new();
    let w = g.var(1.0);
    let mark = g.mark();
    let tmp = w.exp();
    g.release(mark);
    let _ = w * tmp;
}

/// A `Gradients` computed before a release reads the kept nodes as before, 0 for nodes
/// recorded later at the released positions (it has no number for them), and `Released`
/// for the released handles themselves.
#[test]
fn gradients_computed_before_a_release_stay_truthful() {
    let g = Graph::new();
    let w0 = 0.5_f64;
    let w = g.var(w0);
    let mark = g.mark();
    let y = w * 3.0;
    let z = y.exp();
    // dz/dw = 3 e^(3w);  dz/dy = e^y
    let grads = z.backward();
    g.release(mark);
    let again = w * 3.0; // re-recorded at y's old position
    let other = again.exp(); // and at z's
    assert_relative_eq!(grads[w], 3.0 * (3.0 * w0).exp(), max_relative = 1e-15);
    assert_eq!(grads[again], 0.0, "not y's stale gradient");
    assert_eq!(grads[other], 0.0, "not z's stale gradient");
    // The bulk read (one borrow of the tape) agrees with the one-at-a-time reads.
    assert_eq!(grads.wrt_all(&[w, again, other]), vec![grads[w], 0.0, 0.0]);
    assert_eq!(grads.try_wrt(y), Err(Error::Released));
    assert_eq!(grads.try_wrt(z), Err(Error::Released));
    // A fresh backward reads the new nodes.
    let fresh = other.backward();
    assert_relative_eq!(fresh[again], (3.0 * w0).exp(), max_relative = 1e-15);
}

/// Two nested marks released one after the other: a `Gradients` keeps reading exactly
/// the positions below the lowest mark released since it was computed.
#[test]
fn gradients_across_nested_releases() {
    let g = Graph::new();
    let w = g.var(1.5);
    let outer = g.mark();
    let a = w * 2.0; // position 1
    let inner = g.mark();
    let b = a * 3.0; // position 2
    // b = 6w: db/dw = 6, db/da = 3
    let grads = b.backward();

    g.release(inner);
    let b2 = a * 5.0; // position 2 again
    assert_eq!((grads[w], grads[a], grads[b2]), (6.0, 3.0, 0.0));
    assert_eq!(grads.wrt_all(&[w, a, b2]), vec![6.0, 3.0, 0.0]);
    // A store computed now sees b2 and not b.
    let grads2 = b2.backward();
    assert_eq!((grads2[w], grads2[a], grads2[b2]), (10.0, 5.0, 1.0));

    g.release(outer);
    let a2 = w * 7.0; // position 1 again
    assert_eq!(grads[w], 6.0);
    assert_eq!(grads[a2], 0.0);
    assert_eq!(grads2[a2], 0.0);
    assert_eq!(grads.try_wrt(a), Err(Error::Released));
    assert_eq!(grads2.try_wrt(b2), Err(Error::Released));
}

/// Releasing to a mark at or past the end of the tape does nothing: no node is freed, and
/// a `Gradients` computed before it still reads every node.
#[test]
fn releasing_to_a_mark_at_or_past_the_end_is_a_no_op() {
    let g = Graph::new();
    let w = g.var(2.0);
    let start = g.mark();
    let y = w * w;
    let z = y + 1.0;
    let end = g.mark();
    // dz/dy = 1, dz/dw = 2w = 4
    let grads = z.backward();
    g.release(end);
    g.release(g.mark());
    assert_eq!(g.len(), 3);
    assert_eq!(z.value(), 5.0);
    assert_eq!((grads[w], grads[y], grads[z]), (4.0, 1.0, 1.0));

    g.release(start);
    assert_eq!(g.len(), 1);
    g.release(end); // now past the end
    assert_eq!(g.len(), 1);
    assert_eq!(w.value(), 2.0);
}

#[test]
fn a_mark_of_another_graph_is_rejected() {
    let (g, h) = (Graph::new(), Graph::new());
    let x = g.var(1.0);
    let _y = x.exp();
    let _ = h.var(1.0);
    let foreign = h.mark();
    let err = g.try_release(foreign).unwrap_err();
    assert_eq!(
        err,
        Error::ForeignHandle {
            what: "Mark",
            owner: h.id(),
            used_with: g.id(),
        }
    );
    assert_eq!(g.len(), 2, "nothing was released");
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.release(foreign)))
        .expect_err("release with a foreign mark panics");
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert!(message.contains("Mark"), "{message}");
    assert!(message.contains(&format!("graph #{}", h.id())), "{message}");
    assert_eq!(g.len(), 2);
}

/// Many short steps, each releasing to the same mark, never grow the node count: the
/// issue's "node count returns to the same value after each of many steps", on a step
/// shaped like a network layer (n-ary dot and sum, tanh, logsumexp).
#[test]
fn node_count_returns_after_each_of_many_steps() {
    let g = Graph::new();
    let weights = g.vars(&[0.1, -0.2, 0.3, 0.05, -0.15, 0.25]);
    let mark = g.mark();
    let mut seen = None;
    for step in 0..1_000 {
        let x = [1.0, step as f64 * 1e-3, -0.5];
        let h0 = g.dot(&weights[..3], &x).tanh();
        let h1 = g.dot(&weights[3..], &x).tanh();
        let out = g.logsumexp([h0, h1]) + g.sum([h0, h1]);
        let grads = out.backward();
        // d out/d w_j (j < 3) = (softmax_0 + 1) (1 - h0^2) x_j; checked on one entry.
        let (v0, v1) = (h0.value(), h1.value());
        let softmax0 = v0.exp() / (v0.exp() + v1.exp());
        let sech2 = 1.0 / (0.1 - 0.2 * x[1] - 0.15f64).cosh().powi(2);
        assert_relative_eq!(
            grads[weights[0]],
            (softmax0 + 1.0) * sech2,
            max_relative = 1e-12
        );
        let recorded = g.len();
        assert_eq!(*seen.get_or_insert(recorded), recorded);
        g.release(mark);
        assert_eq!(g.len(), weights.len());
    }
}

/// A graph that was once large (a 200,000-node evaluation) goes back to small steps with
/// everything as before: the same node counts per step, released handles still errors
/// (including one from the large evaluation, whose position is past the end now, and one
/// whose position was re-recorded), and the parameters' values and gradients intact. (That
/// release costs what it frees, not what the graph once held, is timed in the peers
/// benchmark, `benches/peers`, "release after a large evaluation".)
#[test]
fn small_steps_after_a_large_evaluation_behave_as_before() {
    let g = Graph::new();
    let w = g.vars(&[0.5, -0.25]);
    let mark = g.mark();
    let step = |k: usize| {
        let y = (w[0] * (k as f64) + w[1]).tanh() * w[1];
        let grads = y.backward();
        (y, grads[w[0]], grads[w[1]])
    };
    let (_, d0, d1) = step(3);
    let step_len = g.len();
    g.release(mark);

    let mut y = w[0];
    for _ in 0..200_000 {
        y = (y * 0.5).sin();
    }
    let large = y;
    let large_grad = large.backward()[w[0]];
    assert!(large_grad.is_finite());
    g.release(mark);
    assert_eq!(g.len(), 2);

    for k in 0..1000 {
        let (y, e0, e1) = step(3);
        assert_eq!(g.len(), step_len, "step {k}");
        assert_eq!((e0, e1), (d0, d1), "step {k}");
        g.release(mark);
        assert_eq!(y.try_value(), Err(Error::Released), "step {k}");
        assert_eq!(large.try_value(), Err(Error::Released), "step {k}");
    }
    // A handle whose position now holds another node is an error, not that node.
    let reused = {
        let z = w[0] * 2.0;
        g.release(mark);
        let _again = w[1] * 3.0; // the same position as z
        z
    };
    assert_eq!(reused.try_value(), Err(Error::Released));
    assert_eq!((w[0].value(), w[1].value()), (0.5, -0.25));
}

/// `Graph::new()` reuses the memory of a graph dropped on the same thread (a fresh graph
/// per call then allocates no tape after the first call), and nothing else of it: the new
/// graph is empty, with anomaly mode off and replay checks on (the defaults) and nothing
/// remembered of the old graph's reads or guards, its own id, and handles that work as on
/// any new graph.
#[test]
fn a_new_graph_reuses_a_dropped_graphs_memory_and_nothing_else() {
    let old_id = {
        let g = Graph::new();
        g.set_anomaly_mode(true);
        let x = g.var(2.0);
        let _ = x.value();
        let mut y = x;
        for _ in 0..1000 {
            y *= 1.001;
        }
        assert!(x.gt(0.0));
        y.backward();
        g.set_replay_checks(false);
        g.id()
    };
    let g = Graph::new();
    assert_ne!(g.id(), old_id);
    assert!(g.is_empty());
    assert!(!g.anomaly_mode() && g.replay_checks());
    assert!(g.heap_bytes() > 1000 * 8, "the dropped graph's arrays");
    let x = g.var(3.0);
    let y = (x * x).ln();
    assert_eq!(y.backward()[x], 2.0 / 3.0);
    assert_eq!(g.len(), 3);
    assert_eq!(tapegrad::Replay::new(y, &[x]).guards(), 0);
}

/// Parameters made one by one before a mark stay one run after every release: a matrix
/// product with them, read by columns, keeps recording as a block (which stores no
/// edges), so each step's heap is the first step's, and its gradient is the closed form.
#[test]
fn parameters_made_before_a_mark_stay_a_run_after_releases() {
    let (inner, outputs) = (32, 16);
    let g = Graph::new();
    let w: Vec<_> = (0..inner * outputs)
        .map(|i| g.var(i as f64 * 0.5))
        .collect();
    let mark = g.mark();
    let mut heap_after_first = None;
    let mut grads = Gradients::new();
    for step in 0..5 {
        let x: Vec<f64> = (0..inner).map(|k| (k + step) as f64).collect();
        let xv = g.vars(&x);
        let y = Var::dots(
            Matrix::new(&xv, 1, inner),
            Matrix::new(&w, inner, outputs),
            Pairing::Columns,
        );
        // d/dW[k][j] of sum_j (j + 1) y_j is (j + 1) x_k.
        let weighted: Var = y.iter().zip(1..).map(|(&yj, c)| yj * c as f64).sum();
        weighted.backward_into(&mut grads);
        for (i, &wi) in w.iter().enumerate() {
            let (k, j) = (i / outputs, i % outputs);
            assert_eq!(grads.wrt(wi), (j + 1) as f64 * x[k]);
        }
        g.release(mark);
        let heap = g.heap_bytes();
        assert_eq!(*heap_after_first.get_or_insert(heap), heap, "step {step}");
    }
}

/// Handles to consecutive positions issued in one epoch, whose tail was released and
/// recorded again, are not a run: the released ones are errors.
#[test]
fn a_run_whose_tail_was_released_is_refused() {
    let g = Graph::new();
    let head = g.vars(&[1.0, 2.0]);
    let mark = g.mark();
    let tail = g.vars(&[3.0, 4.0]);
    g.release(mark);
    let again = g.vars(&[5.0, 6.0]); // the tail's positions, new keys
    let straddling = [head[0], head[1], tail[0], tail[1]];
    assert_eq!(
        g.try_dot(&straddling, &[1.0; 4]).err(),
        Some(Error::Released)
    );
    let kept = [head[0], head[1], again[0], again[1]];
    assert_eq!(g.dot(&kept, &[1.0; 4]).value(), 14.0);
}
