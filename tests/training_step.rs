//! One training step, two forms: `Params::value_and_grad` (and `_aux`), and a `Binding`
//! that keeps the store bound to its graph for a run. The binding is the same step made
//! faster: the same losses, auxiliary values and gradients, bit for bit, step after step,
//! with the optimizer in the loop; and the same refusals.

use tapegrad::nn::{Mlp, ParamError, ParamGrads, Params, View};
use tapegrad::optim::{AdamConfig, Optimizer, Schedule};
use tapegrad::pyrandom::PyRandom;
use tapegrad::{Error, Graph, Var};

/// A small MLP's squared error at a point that moves with `k`, and the output's value.
fn loss<'g>(mlp: &Mlp, p: &View<'_, Var<'g>>, k: usize) -> (Var<'g>, f64) {
    let x = [k as f64 * 0.3, -0.5, 1.0 / (1.0 + k as f64)];
    let y = mlp.forward_f64(p, &x)[0];
    ((y - 0.25).powi(2), y.value())
}

fn bits(g: &ParamGrads) -> Vec<u64> {
    g.as_slice().iter().map(|x| x.to_bits()).collect()
}

fn setup() -> (Params, Mlp) {
    let mut rng = PyRandom::seed(3);
    let mut params = Params::new();
    let mlp = Mlp::new(&mut params, "mlp", &[3, 5, 1], &mut || {
        rng.uniform(-1.0, 1.0)
    });
    (params, mlp)
}

/// A store bound once ([`Params::bind`]) gives, step after step, the same losses,
/// auxiliary values and gradients bit for bit as binding it every step, with AdamW and a
/// schedule stepping both stores, and keeps one graph of constant size.
#[test]
fn a_binding_gives_every_steps_bits() {
    let (mut a, mlp) = setup();
    let mut b = a.clone(); // the same tensors, a store of its own
    let config = AdamConfig {
        lr: 0.05,
        weight_decay: 0.01,
        ..AdamConfig::default()
    };
    let (mut opt_a, mut opt_b) = (Optimizer::adamw(&a, config), Optimizer::adamw(&b, config));
    for opt in [&mut opt_a, &mut opt_b] {
        opt.set_schedule(Schedule::exponential(0.05, 0.9));
    }
    let (ga, gb) = (Graph::new(), Graph::new());
    let mut binding = a.bind(&ga);
    let after_binding = ga.len();
    for k in 0..20 {
        // Both forms of both methods, alternating.
        let ((la, ya, da), (lb, yb, db)) = if k % 2 == 0 {
            let (la, ya, da) = binding
                .value_and_grad_aux(&a, |p| loss(&mlp, p, k))
                .unwrap();
            let (lb, yb, db) = b.value_and_grad_aux(&gb, |p| loss(&mlp, p, k)).unwrap();
            ((la, ya, da), (lb, yb, db))
        } else {
            let (la, da) = binding.value_and_grad(&a, |p| loss(&mlp, p, k).0).unwrap();
            let (lb, db) = b.value_and_grad(&gb, |p| loss(&mlp, p, k).0).unwrap();
            ((la, 0.0, da), (lb, 0.0, db))
        };
        assert_eq!(la.to_bits(), lb.to_bits(), "step {k}");
        assert_eq!(ya.to_bits(), yb.to_bits(), "step {k}");
        assert_eq!(bits(&da), bits(&db), "step {k}");
        opt_a.step(&mut a, &da).unwrap();
        opt_b.step(&mut b, &db).unwrap();
        assert_eq!(ga.len(), after_binding, "the step's nodes were released");
        assert!(gb.is_empty());
    }
    assert_eq!(a.as_slice(), b.as_slice());
}

#[test]
fn a_binding_refuses_another_store_and_released_inputs() {
    let (mut a, mlp) = setup();
    let ga = Graph::new();
    let start = ga.mark();
    let mut binding = a.bind(&ga);
    // Another store (a clone is one) is refused, naming both.
    let c = a.clone();
    let err = binding
        .value_and_grad(&c, |p| loss(&mlp, p, 0).0)
        .unwrap_err();
    let ParamError::ForeignStore {
        what,
        made_for,
        given,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*what, "binding");
    assert_ne!(made_for, given);
    assert!(made_for.contains("\"mlp.0.weight\""), "{made_for}");
    // Inputs released under the binding are an error, not stale numbers, whether or not
    // the store changed since the last step.
    ga.release(start);
    assert_eq!(
        binding
            .value_and_grad(&a, |p| loss(&mlp, p, 0).0)
            .unwrap_err(),
        ParamError::Engine(Error::Released)
    );
    a[mlp.layers()[0].weight()][0] += 1.0;
    assert_eq!(
        binding
            .value_and_grad_aux(&a, |p| loss(&mlp, p, 0))
            .unwrap_err(),
        ParamError::Engine(Error::Released)
    );
}

/// A forward that panics leaves both forms' graphs as they were: a `Binding`'s keeps only
/// its inputs.
#[test]
fn a_panicking_forward_releases_the_step_in_both_forms() {
    let (params, mlp) = setup();
    let (g, h) = (Graph::new(), Graph::new());
    let mut binding = params.bind(&h);
    let bound = h.len();
    let fail = |p: &View<'_, Var<'_>>| -> Var<'_> {
        let _ = loss(&mlp, p, 1);
        panic!("the user's forward fails")
    };
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        params.value_and_grad(&g, fail)
    }));
    assert!(caught.is_err());
    assert!(g.is_empty());
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        binding.value_and_grad(&params, fail)
    }));
    assert!(caught.is_err());
    assert_eq!(h.len(), bound);
}
