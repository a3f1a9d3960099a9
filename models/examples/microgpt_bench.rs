//! Time per microgpt training step on one core, split into record / backward / update,
//! beside MICROGPT.md's reference numbers. Release only:
//!
//! ```text
//! cargo run --release -p tapegrad-models --example microgpt_bench [-- --steps 1000 --rounds 3 --batch 16]
//! ```
//!
//! `--batch 0` leaves out the data-parallel table, e.g. to count the instructions of the
//! one-core step alone: `valgrind --tool=callgrind .../microgpt_bench --steps 200 --rounds 1
//! --batch 0` (the count divided by the steps, less the set-up's, is the cost per step).

use std::time::Instant;

use tapegrad::Graph;
use tapegrad::nn::Params;
use tapegrad_models::microgpt::{self, ADAM, Adam, Microgpt, Trainer};

const NAMES: &str = include_str!("../data/names.txt");

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

const USAGE: &str = "usage: microgpt_bench [--steps N] [--rounds R] [--batch B]";

/// `--steps`, `--rounds` and `--batch`.
fn parse_args() -> Result<(usize, usize, usize), lexopt::Error> {
    use lexopt::prelude::*;
    let (mut steps, mut rounds, mut batch) = (1000, 3, 16);
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("steps") => steps = parser.value()?.parse()?,
            Long("rounds") => rounds = parser.value()?.parse()?,
            Long("batch") => batch = parser.value()?.parse()?,
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok((steps, rounds, batch))
}

fn main() {
    let (steps, rounds, batch) = parse_args().unwrap_or_else(|e| {
        eprintln!("microgpt_bench: {e}\n{USAGE}");
        std::process::exit(2);
    });
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; time it with --release");
    }
    let (docs, tokenizer, mut rng) = microgpt::prepare(NAMES, 42);
    let (model, initial) = Microgpt::init(tokenizer.vocab_size(), &mut rng);
    let tokens: Vec<Vec<usize>> = (0..steps)
        .map(|s| tokenizer.encode(&docs[s % docs.len()]))
        .collect();

    let (mut record, mut backward, mut update, mut total) = (vec![], vec![], vec![], vec![]);
    let (mut nodes, mut bytes, mut last_loss) = (0usize, 0usize, 0.0);
    let mut bound_once = vec![];
    for _ in 0..rounds {
        // The same steps with the store bound once for the run (nn::Binding): the inputs
        // stay on the graph and take the store's new values each step.
        let mut params = initial.clone();
        let mut adam = Adam::new(params.len(), ADAM, steps);
        let g = Graph::new();
        let mut binding = params.bind(&g);
        for t in &tokens {
            let t0 = Instant::now();
            let (_, grads) = binding
                .value_and_grad(&params, |p| model.loss(p, t))
                .unwrap();
            params
                .update(&grads, |values, grads| adam.update(values, grads))
                .unwrap();
            bound_once.push(t0.elapsed().as_secs_f64());
        }
    }
    for _ in 0..rounds {
        let mut params = initial.clone();
        let mut adam = Adam::new(params.len(), ADAM, steps);
        let g = Graph::new();
        for t in &tokens {
            // The store's own step (Params::value_and_grad), cut in its three parts: the
            // forward's end is read inside the closure.
            let t0 = Instant::now();
            let (loss, (t1, step_nodes), grads) = params
                .value_and_grad_aux(&g, |p| {
                    let loss = model.loss(p, t);
                    (loss, (Instant::now(), g.len()))
                })
                .unwrap();
            nodes += step_nodes;
            last_loss = loss;
            bytes = bytes.max(g.heap_bytes());
            let t2 = Instant::now();
            params
                .update(&grads, |values, grads| adam.update(values, grads))
                .unwrap();
            let t3 = Instant::now();
            record.push((t1 - t0).as_secs_f64());
            backward.push((t2 - t1).as_secs_f64());
            update.push((t3 - t2).as_secs_f64());
            total.push((t3 - t0).as_secs_f64());
        }
    }
    let n = (steps * rounds) as f64;
    let us = |x: f64| x * 1e6;
    let nodes_per_step = nodes as f64 / n;
    println!(
        "microgpt training step, one core ({steps} steps x {rounds} rounds; last loss {last_loss:.4})"
    );
    println!("| part | median per step |");
    println!("|---|---|");
    println!(
        "| record (bind 4,192 inputs + forward) | {:.1} us |",
        us(median(&mut record))
    );
    println!(
        "| backward (+ read 4,192 gradients, release) | {:.1} us |",
        us(median(&mut backward))
    );
    println!(
        "| Adam update (C pow's bits) | {:.1} us |",
        us(median(&mut update))
    );
    println!(
        "| **total**, the store bound every step (`Params::value_and_grad`) | **{:.1} us** |",
        us(median(&mut total))
    );
    println!(
        "| **total**, the store bound once per run (`nn::Binding`, as `Trainer` does) | **{:.1} us** |",
        us(median(&mut bound_once))
    );
    println!();
    println!("tape nodes per step: {nodes_per_step:.0} (mean, the 4,192 parameters included)");
    println!(
        "graph bytes at the largest step: {bytes} ({:.1} bytes per node of the mean step)",
        bytes as f64 / nodes_per_step
    );
    println!();
    println!("the reference in CPython records 61,158 Value nodes per step (MICROGPT.md)");
    if batch > 0 {
        parallel_table(&docs, &tokenizer, &model, &initial, batch, rounds);
    }
}

/// Steps of `batch` documents on 1 and 2 threads, alternating step by step (two trainers
/// on the same batches) so that both see the same machine load: median time per step of
/// each, and the median of the step-by-step ratios (the speed-up least moved by the
/// machine's drift).
fn parallel_table(
    docs: &[String],
    tokenizer: &microgpt::Tokenizer,
    model: &Microgpt,
    initial: &Params,
    batch: usize,
    rounds: usize,
) {
    let steps = 40;
    let batches: Vec<Vec<Vec<usize>>> = (0..steps)
        .map(|s| {
            (0..batch)
                .map(|i| tokenizer.encode(&docs[(s * batch + i) % docs.len()]))
                .collect()
        })
        .collect();
    let threads = [1, 2];
    let mut times = vec![Vec::new(); threads.len()];
    let mut ratios = Vec::new();
    for _ in 0..rounds {
        let graphs: Vec<Graph> = threads.iter().map(|_| Graph::new()).collect();
        let mut trainers: Vec<Trainer> = graphs
            .iter()
            .map(|g| Trainer::from_params(g, model.clone(), initial.clone(), steps))
            .collect();
        for b in &batches {
            let mut step = [0.0; 2];
            let mut bits = [0u64; 2];
            for (k, (&t, trainer)) in threads.iter().zip(&mut trainers).enumerate() {
                let t0 = Instant::now();
                bits[k] = trainer.step_batch(b, t).to_bits();
                step[k] = t0.elapsed().as_secs_f64();
                times[k].push(step[k]);
            }
            assert_eq!(bits[0], bits[1], "threads changed the bits");
            ratios.push(step[0] / step[1]);
        }
    }
    let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    let speedup = median(&mut ratios);
    println!();
    println!(
        "data-parallel steps of {batch} documents ({steps} steps x {rounds} rounds, 1 and 2 threads step by step, the same bits)"
    );
    println!(
        "| threads | median per step | per document | speed-up (median of step ratios) | efficiency |"
    );
    println!("|---|---|---|---|---|");
    for (k, &t) in threads.iter().enumerate() {
        let speedup = if k == 0 { 1.0 } else { speedup };
        println!(
            "| {t} | {:.0} us | {:.0} us | {speedup:.2}x | {:.0}% |",
            medians[k] * 1e6,
            medians[k] * 1e6 / batch as f64,
            100.0 * speedup / t as f64
        );
    }
    let ceiling = two_cores_ceiling(&batches, model, initial, rounds);
    println!(
        "the machine's own ceiling: two independent one-thread trainers at once run {ceiling:.2}x \
         the work of one (no sharing, no waiting; what any data parallelism here can reach)"
    );
}

/// Two single-document trainers, each on its own thread with its own copy of everything,
/// against one alone, alternating: the median throughput ratio of the pair over the one.
fn two_cores_ceiling(
    batches: &[Vec<Vec<usize>>],
    model: &Microgpt,
    initial: &Params,
    rounds: usize,
) -> f64 {
    let docs: Vec<&Vec<usize>> = batches.iter().flatten().collect();
    let run = |docs: &[&Vec<usize>]| {
        let graph = Graph::new();
        let mut trainer = Trainer::from_params(&graph, model.clone(), initial.clone(), docs.len());
        for d in docs {
            trainer.step(d);
        }
    };
    let mut ratios = Vec::new();
    for _ in 0..rounds.max(3) {
        let t0 = Instant::now();
        run(&docs);
        let alone = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| run(&docs));
            run(&docs);
        });
        let pair = t0.elapsed().as_secs_f64();
        ratios.push(2.0 * alone / pair);
    }
    median(&mut ratios)
}
