//! microgpt against the reference: the lines MICROGPT.md says it prints, its full loss
//! trace and gradients (from tools/microgpt_reference.py, the team's CPython 3.11.7 reading
//! of MICROGPT.md), central finite differences, and its sampled names.

use tapegrad::Graph;
use tapegrad::nn::{Params, StateDict};
use tapegrad_models::microgpt::{self, Microgpt, Trainer};

const NAMES: &str = include_str!("../data/names.txt");

/// Every step's loss of the reference's 1,000-step run, printed (with `repr`, which
/// round-trips the exact `f64`) by CPython 3.11.7:
/// `nice python3 tools/microgpt_reference.py data/names.txt --trace tests/data/microgpt_trace.json`
/// (run in `models/`)
fn reference_trace() -> Vec<f64> {
    serde_json::from_str(include_str!("data/microgpt_trace.json")).unwrap()
}

fn trainer(
    graph: &Graph,
    steps: usize,
) -> (
    Vec<String>,
    microgpt::Tokenizer,
    tapegrad::pyrandom::PyRandom,
    Trainer<'_>,
) {
    let (docs, tokenizer, mut rng) = microgpt::prepare(NAMES, 42);
    let t = Trainer::new(graph, &tokenizer, &mut rng, steps);
    (docs, tokenizer, rng, t)
}

#[test]
fn data_vocabulary_and_parameter_counts_are_the_references() {
    let graph = Graph::new();
    let (docs, tokenizer, _, t) = trainer(&graph, 1000);
    // MICROGPT.md: num docs: 32033, vocab size: 27, num params: 4192.
    assert_eq!(docs.len(), 32_033);
    assert_eq!(tokenizer.vocab_size(), 27);
    assert_eq!(t.params().as_slice().len(), 4192);
    assert_eq!(microgpt::n_params(27), 4192);
    // CPython 3.11.7: random.seed(42); docs = [...names.txt as MICROGPT.md reads it...];
    // random.shuffle(docs); docs[:3]
    assert_eq!(docs[..3], ["yuheng", "diondre", "xavien"]);
}

#[test]
fn first_steps_print_the_references_losses_and_match_its_trace() {
    let graph = Graph::new();
    let (docs, tokenizer, _, mut t) = trainer(&graph, 1000);
    let trace = reference_trace();
    let printed = ["3.3660", "3.4243", "3.1778"];
    for (step, want) in printed.iter().enumerate() {
        let loss = t.step(&tokenizer.encode(&docs[step]));
        assert_eq!(&format!("{loss:.4}"), want, "step {}", step + 1);
        assert!(
            (loss - trace[step]).abs() <= 1e-12,
            "step {}: {loss:?} vs the reference's {:?}",
            step + 1,
            trace[step]
        );
    }
}

/// In a release build (CI's `cargo test --release`) the whole 1,000-step run, about a
/// second; in a debug build the first 100 steps.
#[test]
fn every_step_matches_the_reference_trace_and_the_samples_are_its_names() {
    let steps = if cfg!(debug_assertions) { 100 } else { 1000 };
    let graph = Graph::new();
    let (docs, tokenizer, mut rng, mut t) = trainer(&graph, 1000);
    let trace = reference_trace();
    let mut worst: f64 = 0.0;
    for (step, &want) in trace.iter().enumerate().take(steps) {
        let loss = t.step(&tokenizer.encode(&docs[step % docs.len()]));
        assert!(
            (loss - want).abs() <= 1e-9,
            "step {}: {loss:?} vs the reference's {want:?}",
            step + 1
        );
        worst = worst.max((loss - want).abs());
    }
    // Measured: 1.8e-15 over all 1,000 steps (the gradient's sums run in another order).
    assert!(worst <= 1e-13, "largest difference {worst:e}");
    if steps == 1000 {
        // The reference's 20 names at temperature 0.5 (its printed lines, CPython 3.11.7).
        let want = [
            "kamon", "ann", "karai", "jaire", "vialan", "karia", "yeran", "anna", "areli", "kaina",
            "konna", "keylen", "liole", "alerin", "earan", "lenne", "kana", "lara", "alela",
            "anton",
        ];
        let got: Vec<String> = (0..20)
            .map(|_| {
                t.model()
                    .sample(&t.params().view(), &tokenizer, &mut rng, 0.5)
            })
            .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn first_gradient_matches_the_references() {
    // The gradient of step 1's loss, from the same script with `--grads`, entries by flat
    // index (wte's BOS row, wpe, lm_head, the largest three, and the first non-zero one of
    // each layer matrix), CPython 3.11.7 `repr`s.
    let want = [
        (416, 0.06951253703491278),
        (417, -0.0024958720199959247),
        (432, 0.06951253703491278),
        (688, -0.006371850605660636),
        (805, 0.3083631814250417),
        (909, 0.30404553621211244),
        (1074, 0.34105884409146797),
        (1120, 0.00027156580627405087),
        (1376, 9.950541253532406e-05),
        (1632, -0.0016350321450110978),
        (1888, -0.005716737906154843),
        (2144, 0.0017137791989707178),
        (3168, 0.003950607158603551),
    ];
    let graph = Graph::new();
    let (docs, tokenizer, _, mut t) = trainer(&graph, 1000);
    t.gradient(&tokenizer.encode(&docs[0]));
    let g = t.last_gradient();
    // The reference has 464 exact zeros (rows of wte no token of "yuheng" uses, and more).
    assert_eq!(g.iter().filter(|&&x| x == 0.0).count(), 464);
    for (i, w) in want {
        // Sums of the same terms in another order: a few ulps of the largest term.
        assert!(
            (g[i] - w).abs() <= 1e-12 * w.abs().max(1e-3),
            "d loss / d p[{i}] = {:?}, the reference's {w:?}",
            g[i]
        );
    }
}

#[test]
fn gradient_matches_central_differences() {
    let graph = Graph::new();
    let (docs, tokenizer, _, mut t) = trainer(&graph, 1000);
    let tokens = tokenizer.encode(&docs[1]);
    let loss = t.gradient(&tokens);
    let grad = t.last_gradient().to_vec();
    let (model, base) = (t.model().clone(), t.params().clone());
    // Plain f64 evaluation is the recorded forward, bit for bit.
    assert_eq!(model.loss(&base.view(), &tokens).to_bits(), loss.to_bits());
    let h = 1e-6;
    let mut offset = 0;
    for p in base.params() {
        let len = base[p].len();
        // The entry of each matrix with the largest gradient, and one in its middle.
        let range = offset..offset + len;
        offset += len;
        let largest = range
            .clone()
            .max_by(|&a, &b| grad[a].abs().total_cmp(&grad[b].abs()))
            .unwrap();
        for i in [largest, range.start + len / 2 + 3] {
            let at = |d: f64| {
                let mut shifted = base.clone();
                shifted.as_mut_slice()[i] += d;
                model.loss(&shifted.view(), &tokens)
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (fd - grad[i]).abs() <= 1e-7 + 1e-5 * grad[i].abs(),
                "{}[{}]: backward {:e}, central difference {fd:e}",
                base.name(p),
                i - range.start,
                grad[i]
            );
        }
    }
    assert_eq!(offset, 4192);
}

#[test]
fn training_runs_in_constant_memory() {
    let graph = Graph::new();
    let (docs, tokenizer, _, mut t) = trainer(&graph, 1000);
    for doc in &docs[..20] {
        t.step(&tokenizer.encode(doc));
    }
    let bytes = t.tape_bytes();
    // The longest name (15 characters, all 16 positions) and more short ones: the tape's
    // capacity was reached and is reused, never grown further.
    let longest = docs.iter().max_by_key(|d| d.len()).unwrap();
    t.step(&tokenizer.encode(longest));
    let peak = t.tape_bytes();
    assert!(peak >= bytes);
    for doc in &docs[20..60] {
        t.step(&tokenizer.encode(doc));
        t.step(&tokenizer.encode(longest));
    }
    assert_eq!(t.tape_bytes(), peak);
}

#[test]
fn forward_on_a_tape_and_in_f64_agree() {
    let graph = Graph::new();
    let (docs, tokenizer, _, t) = trainer(&graph, 1000);
    let tokens = tokenizer.encode(&docs[2]);
    let g = Graph::new();
    let (on_tape, _) = t
        .params()
        .value_and_grad(&g, |p| t.model().loss(p, &tokens))
        .unwrap();
    let plain = t.model().loss(&t.params().view(), &tokens);
    assert_eq!(on_tape.to_bits(), plain.to_bits());
}

#[test]
fn trained_parameters_round_trip_through_safetensors() {
    let graph = Graph::new();
    let (docs, tokenizer, mut rng, mut t) = trainer(&graph, 1000);
    for doc in &docs[..3] {
        t.step(&tokenizer.encode(doc));
    }
    let bytes = t.params().state_dict().to_safetensors();
    // A fresh model of the same shapes takes the saved values, by name.
    let (model, mut fresh) = Microgpt::init(tokenizer.vocab_size(), &mut rng);
    fresh
        .load_state_dict(&StateDict::from_safetensors(&bytes).unwrap())
        .unwrap();
    assert_eq!(fresh.as_slice(), t.params().as_slice());
    let probe = tokenizer.encode(&docs[3]);
    assert_eq!(
        model.loss(&fresh.view(), &probe).to_bits(),
        t.model().loss(&t.params().view(), &probe).to_bits()
    );
    // A model for another vocabulary refuses them, naming the tensor.
    let mut other = Params::new();
    Microgpt::new(&mut other, 28, &mut || 0.0);
    let err = other
        .load_state_dict(&StateDict::from_safetensors(&bytes).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("wte"), "{err}");
}

#[test]
fn fast_squares_and_roots_are_c_pows_bits() {
    use tapegrad::pyrandom::PyRandom;
    use tapegrad_models::microgpt::{c_pow, pow_half, pow2};
    // Random mantissas over 200 binades, across both ends of the ranges where the fast
    // paths apply (2^-64..2^64 for squares, 2^-128..2^128 for roots); about 3% of those
    // inside take the slow path, and pow differs from x * x or sqrt(x) on about 1 in 1200
    // (measured, glibc 2.36).
    let mut rng = PyRandom::seed(9);
    let n = if cfg!(debug_assertions) {
        200_000
    } else {
        2_000_000
    };
    for _ in 0..n {
        let m = 1.0 + rng.random();
        let e = rng.randbelow(200) as i32 - 100;
        let x = m * 2f64.powi(e);
        assert_eq!(pow2(x).to_bits(), c_pow(x, 2.0).to_bits(), "pow({x:e}, 2)");
        assert_eq!(
            pow2(-x).to_bits(),
            c_pow(-x, 2.0).to_bits(),
            "pow({:e}, 2)",
            -x
        );
        assert_eq!(
            pow_half(x).to_bits(),
            c_pow(x, 0.5).to_bits(),
            "pow({x:e}, 0.5)"
        );
    }
    for x in [
        0.0,
        -0.0,
        1.0,
        4.0,
        0.25,
        1e-300,
        1e300,
        f64::MIN_POSITIVE,
        5e-324,
        f64::INFINITY,
    ] {
        assert_eq!(pow2(x).to_bits(), c_pow(x, 2.0).to_bits(), "pow({x:e}, 2)");
        assert_eq!(
            pow_half(x).to_bits(),
            c_pow(x, 0.5).to_bits(),
            "pow({x:e}, 0.5)"
        );
    }
}

#[test]
fn batches_give_the_same_bits_on_1_2_and_4_threads() {
    let (docs, tokenizer, mut rng) = microgpt::prepare(NAMES, 42);
    let (model, initial) = Microgpt::init(tokenizer.vocab_size(), &mut rng);
    let batch_size = 7; // not a multiple of the thread counts
    let runs: Vec<(Vec<u64>, Vec<u64>)> = [1, 2, 4]
        .iter()
        .map(|&threads| {
            let graph = Graph::new();
            let mut t = Trainer::from_params(&graph, model.clone(), initial.clone(), 100);
            let losses = (0..3)
                .map(|step| {
                    let batch: Vec<Vec<usize>> = (0..batch_size)
                        .map(|i| tokenizer.encode(&docs[step * batch_size + i]))
                        .collect();
                    t.step_batch(&batch, threads).to_bits()
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
fn a_batch_of_one_gives_the_single_document_losses() {
    let (docs, tokenizer, mut rng) = microgpt::prepare(NAMES, 42);
    let (model, initial) = Microgpt::init(tokenizer.vocab_size(), &mut rng);
    let (ga, gb) = (Graph::new(), Graph::new());
    let (mut a, mut b) = (
        Trainer::from_params(&ga, model.clone(), initial.clone(), 1000),
        Trainer::from_params(&gb, model, initial, 1000),
    );
    let trace = reference_trace();
    for (doc, want) in docs[..5].iter().zip(trace) {
        let tokens = tokenizer.encode(doc);
        let la = a.step(&tokens);
        let lb = b.step_batch(&[tokens], 2);
        assert_eq!(la.to_bits(), lb.to_bits());
        assert!((lb - want).abs() <= 1e-12);
    }
    // A zero gradient may be +0 in the batch (the reduction starts from +0) and -0 alone;
    // Adam makes the same update from either.
    assert_eq!(a.params().as_slice(), b.params().as_slice());
}

/// The trainer keeps its store bound for the run (`nn::Binding`); binding the store afresh
/// every step (`Params::value_and_grad`) gives the same losses and weights, bit for bit.
#[test]
fn a_bound_store_trains_to_the_same_bits_as_binding_every_step() {
    use tapegrad_models::microgpt::{ADAM, Adam};
    let graph = Graph::new();
    let (docs, tokenizer, _, mut t) = trainer(&graph, 20);
    let mut params = t.params().clone();
    let model = t.model().clone();
    let mut adam = Adam::new(params.len(), ADAM, 20);
    let g = Graph::new();
    for doc in &docs[..5] {
        let tokens = tokenizer.encode(doc);
        let bound = t.step(&tokens);
        let (fresh, grads) = params
            .value_and_grad(&g, |p| model.loss(p, &tokens))
            .unwrap();
        params
            .update(&grads, |values, g| adam.update(values, g))
            .unwrap();
        assert_eq!(bound.to_bits(), fresh.to_bits());
        let bits = |p: &Params| p.as_slice().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(t.params()), bits(&params));
    }
}
