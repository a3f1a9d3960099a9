//! The series' models compiled: the tiny transformer's loss (3,456 parameters) and
//! microgpt's (4,192), whose gradients the compiled code gives bit for bit as the replay
//! does, at the recorded parameters (where both equal the recording's own backward) and at
//! parameters moved by a training-sized step.

use tapegrad::{Graph, Replay, ReplayWorkspace};
use tapegrad_jit::{Compiled, Workspace};
use tapegrad_models::microgpt::{self, Microgpt};
use tapegrad_models::transformer::{self, Params};

/// Checks `compiled` against `replay` at `points`, bit for bit.
fn same_gradients(replay: &Replay, compiled: &Compiled, points: &[Vec<f64>]) {
    let n = replay.inputs();
    let (mut rws, mut ws) = (ReplayWorkspace::new(), Workspace::new());
    let (mut want, mut got) = (vec![0.0; n], vec![0.0; n]);
    for x in points {
        let value = replay.gradient(x, &mut rws, &mut want).unwrap();
        assert_eq!(
            compiled.gradient(x, &mut ws, &mut got).unwrap().to_bits(),
            value.to_bits()
        );
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "parameter {i}: compiled {a}, replay {b}"
            );
        }
        assert_eq!(
            compiled.eval(x, &mut ws).unwrap().to_bits(),
            value.to_bits()
        );
    }
}

/// `x` moved by a deterministic step of about `size` per entry.
fn moved(x: &[f64], size: f64, seed: f64) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| v + size * (seed * (i as f64 + 1.0)).sin())
        .collect()
}

#[test]
fn the_series_transformer_compiles_to_the_replays_gradient() {
    let x = Params::series_init().as_slice().to_vec();
    let g = Graph::new();
    let xs = g.vars(&x);
    let loss = transformer::loss(&Params::from_flat(xs.clone()), &transformer::SENTENCE).mean;
    let replay = Replay::new(loss, &xs);
    let compiled = Compiled::new(&replay).unwrap();
    assert!(
        compiled.stats().functions > 2,
        "the transformer spans several chunks"
    );

    // At the recorded point, the recording's own backward.
    let recorded = loss.backward().wrt_all(&xs);
    let mut grad = vec![0.0; x.len()];
    let value = compiled
        .gradient(&x, &mut Workspace::new(), &mut grad)
        .unwrap();
    assert_eq!(value.to_bits(), loss.value().to_bits());
    for (a, b) in grad.iter().zip(&recorded) {
        assert_eq!(a.to_bits(), b.to_bits());
    }
    same_gradients(
        &replay,
        &compiled,
        &[x.clone(), moved(&x, 1e-3, 0.7), moved(&x, 0.1, 1.3)],
    );
}

#[test]
fn microgpts_loss_compiles_to_the_replays_gradient() {
    let names = include_str!("../../models/data/names.txt");
    let (docs, tokenizer, mut rng) = microgpt::prepare(names, 42);
    let (model, params) = Microgpt::init(tokenizer.vocab_size(), &mut rng);
    let tokens = tokenizer.encode(&docs[0]);
    // The loss recorded in a training step, its replay built from the step's own nodes.
    let g = Graph::new();
    let (_, replay, step) = params
        .value_and_grad_aux(&g, |p| {
            let loss = model.loss(p, &tokens);
            (loss, Replay::new(loss, p.as_slice()))
        })
        .unwrap();
    let compiled = Compiled::new(&replay).unwrap();

    let x = params.as_slice().to_vec();
    let recorded: Vec<f64> = step.as_slice().to_vec();
    let mut grad = vec![0.0; x.len()];
    compiled
        .gradient(&x, &mut Workspace::new(), &mut grad)
        .unwrap();
    for (a, b) in grad.iter().zip(&recorded) {
        assert_eq!(a.to_bits(), b.to_bits());
    }
    same_gradients(&replay, &compiled, &[x.clone(), moved(&x, 1e-2, 0.3)]);
}
