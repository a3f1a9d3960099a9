//! Data-parallel gradients (`tapegrad::parallel`): the same bits for any thread count, the
//! same as a plain loop, and the gradient of the mean loss.

use tapegrad::nn::{Linear, Mlp, ParamGrads, Params, View};
use tapegrad::parallel::{mean_value_and_grad, mean_value_and_grad_by_cost};
use tapegrad::pyrandom::PyRandom;
use tapegrad::{Graph, Scalar, Var};

/// A small MLP and a batch of 16 regression examples.
fn setup() -> (Params, Mlp, Vec<([f64; 3], f64)>) {
    let mut params = Params::new();
    let mut rng = PyRandom::seed(7);
    let mlp = Mlp::new(&mut params, "mlp", &[3, 8, 8, 1], &mut || {
        rng.uniform(-1.0, 1.0)
    });
    let batch = (0..16)
        .map(|i| {
            let x = [i as f64 * 0.1, (i as f64).sin(), 1.0 / (1.0 + i as f64)];
            (x, (x[0] - x[1] * x[2]).tanh())
        })
        .collect();
    (params, mlp, batch)
}

/// The batch's mean loss and gradient on `threads` threads.
fn parallel(
    params: &Params,
    mlp: &Mlp,
    batch: &[([f64; 3], f64)],
    threads: usize,
) -> (f64, ParamGrads) {
    mean_value_and_grad(params, batch, threads, |p, e| example_loss(mlp, p, e)).unwrap()
}

fn example_loss<'g>(mlp: &Mlp, p: &View<'_, Var<'g>>, (x, y): &([f64; 3], f64)) -> Var<'g> {
    (mlp.forward_f64(p, x)[0] - *y).powi(2)
}

#[test]
fn any_thread_count_gives_the_same_bits() {
    let (params, mlp, batch) = setup();
    let (l1, g1) = parallel(&params, &mlp, &batch, 1);
    for threads in [2, 3, 4, 16, 64, 0] {
        let (l, g) = parallel(&params, &mlp, &batch, threads);
        assert_eq!(l.to_bits(), l1.to_bits(), "{threads} threads");
        let (a, b): (Vec<u64>, Vec<u64>) = (
            g.as_slice().iter().map(|x| x.to_bits()).collect(),
            g1.as_slice().iter().map(|x| x.to_bits()).collect(),
        );
        assert_eq!(a, b, "{threads} threads");
    }
}

/// Starting the examples in another order (by a cost, longest first) changes no bit:
/// the sums still run in example order.
#[test]
fn scheduling_by_cost_gives_the_same_bits() {
    let (params, mlp, batch) = setup();
    let (l1, g1) = parallel(&params, &mlp, &batch, 1);
    // Costs that reverse the batch, shuffle it, and tie everything.
    type Cost = fn(&([f64; 3], f64)) -> usize;
    let costs: [Cost; 3] = [
        |e| (e.0[0] * 10.0).round() as usize,
        |e| ((e.0[1] + 1.0) * 1000.0) as usize,
        |_| 7,
    ];
    for cost in costs {
        for threads in [1, 2, 3, 0] {
            let (l, g) = mean_value_and_grad_by_cost(&params, &batch, threads, cost, |p, e| {
                example_loss(&mlp, p, e)
            })
            .unwrap();
            assert_eq!(l.to_bits(), l1.to_bits(), "{threads} threads");
            let bits =
                |g: &ParamGrads| g.as_slice().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&g), bits(&g1), "{threads} threads");
        }
    }
}

#[test]
fn equals_a_plain_loop_over_the_examples() {
    let (params, mlp, batch) = setup();
    let graph = Graph::new();
    let mut sum_loss = 0.0;
    let mut sum = vec![0.0; params.len()];
    for e in &batch {
        let (l, g) = params
            .value_and_grad(&graph, |p| example_loss(&mlp, p, e))
            .unwrap();
        sum_loss += l;
        sum.iter_mut().zip(g.as_slice()).for_each(|(s, g)| *s += g);
    }
    let n = batch.len() as f64;
    let (l, g) = parallel(&params, &mlp, &batch, 4);
    assert_eq!(l, sum_loss / n);
    let expected: Vec<f64> = sum.iter().map(|s| s / n).collect();
    assert_eq!(g.as_slice(), &expected[..]);
}

/// Independent of the reduction: the gradient of the mean loss recorded as one graph (one
/// sum node over all examples) agrees to rounding, and so does a central difference.
#[test]
fn is_the_gradient_of_the_mean_loss() {
    let (params, mlp, batch) = setup();
    let (l, g) = parallel(&params, &mlp, &batch, 2);
    let graph = Graph::new();
    let (l_one, g_one) = params
        .value_and_grad(&graph, |p| {
            let losses: Vec<Var> = batch.iter().map(|e| example_loss(&mlp, p, e)).collect();
            Var::sum(&losses) / batch.len() as f64
        })
        .unwrap();
    approx::assert_relative_eq!(l, l_one, max_relative = 1e-14);
    for (a, b) in g.as_slice().iter().zip(g_one.as_slice()) {
        approx::assert_relative_eq!(*a, *b, max_relative = 1e-12, epsilon = 1e-15);
    }
    // Central difference on the first weight, with plain f64 evaluation.
    let f = |params: &Params| {
        let p = params.view();
        let losses: Vec<f64> = batch
            .iter()
            .map(|(x, y)| (mlp.forward_f64(&p, x)[0] - y).powi(2))
            .collect();
        f64::sum(&losses) / batch.len() as f64
    };
    let h = 1e-6;
    let (mut plus, mut minus) = (params.clone(), params.clone());
    plus.as_mut_slice()[0] += h;
    minus.as_mut_slice()[0] -= h;
    approx::assert_relative_eq!(
        g.as_slice()[0],
        (f(&plus) - f(&minus)) / (2.0 * h),
        max_relative = 1e-7
    );
}

#[test]
fn an_empty_batch_is_an_error() {
    let (params, mlp, _) = setup();
    let batch: Vec<([f64; 3], f64)> = Vec::new();
    let err = mean_value_and_grad(&params, &batch, 2, |p, e| example_loss(&mlp, p, e)).unwrap_err();
    assert!(err.to_string().contains("batch is empty"), "{err}");
}

#[test]
fn a_linear_model_trains_with_it() {
    // y = 2 x0 - x1 + 0.5, fitted by SGD on the parallel mean gradient.
    let mut params = Params::new();
    let layer = Linear::new(&mut params, "fc", 2, 1, &mut || 0.0);
    let batch: Vec<([f64; 2], f64)> = (0..8)
        .map(|i| {
            let x = [i as f64 / 8.0, (i * i % 5) as f64 / 5.0];
            (x, 2.0 * x[0] - x[1] + 0.5)
        })
        .collect();
    for _ in 0..3000 {
        let (_, grads) = mean_value_and_grad(&params, &batch, 2, |p, (x, y)| {
            (layer.forward_f64(p, x)[0] - *y).powi(2)
        })
        .unwrap();
        params
            .update(&grads, |v, g| {
                v.iter_mut().zip(g).for_each(|(v, g)| *v -= 0.5 * g)
            })
            .unwrap();
    }
    let w = &params[layer.weight()];
    approx::assert_relative_eq!(w[0], 2.0, epsilon = 1e-6);
    approx::assert_relative_eq!(w[1], -1.0, epsilon = 1e-6);
}
