//! `DataParallel`: the mean gradient over a batch is the same bits for any number of
//! threads, and is the true mean gradient.

use tapegrad::models::microgpt::{self, Microgpt, Trainer};
use tapegrad::nn::Params;
use tapegrad::parallel::DataParallel;

const NAMES: &str = include_str!("../data/names.txt");

#[test]
fn microgpt_batches_give_the_same_bits_on_1_2_and_4_threads() {
    let (docs, tokenizer, mut rng) = microgpt::prepare(NAMES, 42);
    let (model, initial) = Microgpt::init(tokenizer.vocab_size(), &mut rng);
    let batch_size = 7; // not a multiple of the thread counts: uneven runs per thread
    let runs: Vec<(Vec<u64>, Vec<u64>)> = [1, 2, 4]
        .iter()
        .map(|&threads| {
            let mut workers = DataParallel::new(threads);
            let mut t = Trainer::from_params(model.clone(), initial.clone(), 100);
            let losses = (0..3)
                .map(|step| {
                    let batch: Vec<Vec<usize>> = (0..batch_size)
                        .map(|i| tokenizer.encode(&docs[step * batch_size + i]))
                        .collect();
                    t.step_batch(&batch, &mut workers).to_bits()
                })
                .collect();
            let params = t.params().as_slice().iter().map(|x| x.to_bits()).collect();
            (losses, params)
        })
        .collect();
    assert_eq!(runs[0], runs[1], "1 thread vs 2");
    assert_eq!(runs[0], runs[2], "1 thread vs 4");
}

#[test]
fn a_batch_of_one_is_the_single_document_step() {
    let (docs, tokenizer, mut rng) = microgpt::prepare(NAMES, 42);
    let (model, initial) = Microgpt::init(tokenizer.vocab_size(), &mut rng);
    let (mut a, mut b) = (
        Trainer::from_params(model.clone(), initial.clone(), 1000),
        Trainer::from_params(model, initial, 1000),
    );
    let mut workers = DataParallel::new(2);
    for doc in &docs[..5] {
        let tokens = tokenizer.encode(doc);
        let la = a.step(&tokens);
        let lb = b.step_batch(&[tokens], &mut workers);
        assert_eq!(la.to_bits(), lb.to_bits());
    }
    assert_eq!(a.params().as_slice(), b.params().as_slice());
}

#[test]
fn mean_gradient_is_the_mean_of_the_item_gradients() {
    // loss_i(a, b) = (a x_i + b - y_i)^2; gradient by hand.
    let data = [
        (0.5, 1.0),
        (1.5, -2.0),
        (-1.0, 0.25),
        (3.0, 3.0),
        (2.0, 0.0),
    ];
    let (a, b) = (0.7, -0.3);
    let (mut ga, mut gb, mut l) = (0.0, 0.0, 0.0);
    for &(x, y) in &data {
        let r = a * x + b - y;
        l += r * r;
        ga += 2.0 * r * x;
        gb += 2.0 * r;
    }
    let n = data.len() as f64;
    for threads in [1, 2, 3, 8] {
        let mut grad = Vec::new();
        let loss =
            DataParallel::new(threads).mean_gradient(&[a, b], &data, &mut grad, |p, &(x, y)| {
                let r = p[0] * x + p[1] - y;
                r * r
            });
        approx::assert_relative_eq!(loss, l / n, max_relative = 1e-15);
        approx::assert_relative_eq!(grad[0], ga / n, max_relative = 1e-14);
        approx::assert_relative_eq!(grad[1], gb / n, max_relative = 1e-14);
    }
}

#[test]
#[should_panic(expected = "empty batch")]
fn an_empty_batch_is_an_error() {
    let items: [f64; 0] = [];
    DataParallel::new(2).mean_gradient(&[1.0], &items, &mut Vec::new(), |p, &x| p[0] * x);
}

#[test]
#[should_panic(expected = "at least one thread")]
fn zero_threads_is_an_error() {
    DataParallel::new(0);
}

#[test]
fn mean_grads_of_a_store_equals_mean_gradient_of_its_values() {
    let mut params = Params::new();
    let w = params.add("w", &[2], vec![0.7, -0.3]);
    let data = [
        (0.5, 1.0),
        (1.5, -2.0),
        (-1.0, 0.25),
        (3.0, 3.0),
        (2.0, 0.0),
    ];
    let mut flat = Vec::new();
    let l_flat =
        DataParallel::new(3).mean_gradient(params.as_slice(), &data, &mut flat, |p, &(x, y)| {
            let r = p[0] * x + p[1] - y;
            r * r
        });
    for threads in [1, 2, 4] {
        let (l, grads) = DataParallel::new(threads)
            .mean_grads(&params, &data, |p, &(x, y)| {
                let r = p[w][0] * x + p[w][1] - y;
                r * r
            })
            .unwrap();
        assert_eq!(l.to_bits(), l_flat.to_bits());
        assert_eq!(grads.as_slice(), flat.as_slice());
    }
}
