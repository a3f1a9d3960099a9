//! Time per microgpt training step on one core, split into record / backward / update,
//! beside MICROGPT.md's reference numbers. Release only:
//!
//! ```text
//! cargo run --release --example microgpt_bench [-- --steps 1000 --rounds 3]
//! ```

use std::time::Instant;

use tapegrad::models::microgpt::{self, ADAM, Adam, Params};
use tapegrad::{Gradients, Graph};

const NAMES: &str = include_str!("../data/names.txt");

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let mut steps = 1000;
    let mut rounds = 3;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (flag.as_str(), value) {
            ("--steps", Some(n)) => steps = n,
            ("--rounds", Some(n)) => rounds = n,
            _ => {
                eprintln!("usage: microgpt_bench [--steps N] [--rounds R]");
                std::process::exit(2);
            }
        }
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; time it with --release");
    }
    let (docs, tokenizer, mut rng) = microgpt::prepare(NAMES, 42);
    let initial = Params::init(tokenizer.vocab_size(), &mut rng);
    let tokens: Vec<Vec<usize>> = (0..steps)
        .map(|s| tokenizer.encode(&docs[s % docs.len()]))
        .collect();

    let (mut record, mut backward, mut update, mut total) = (vec![], vec![], vec![], vec![]);
    let (mut nodes, mut bytes, mut last_loss) = (0usize, 0usize, 0.0);
    for _ in 0..rounds {
        let mut params = initial.clone();
        let mut adam = Adam::new(params.as_slice().len(), ADAM, steps);
        let g = Graph::new();
        let empty = g.mark();
        let mut grads = Gradients::new();
        let mut flat = Vec::new();
        for t in &tokens {
            let t0 = Instant::now();
            let bound = Params::from_flat(params.vocab_size(), g.vars(params.as_slice())).unwrap();
            let loss = microgpt::loss(&bound, t);
            let t1 = Instant::now();
            loss.backward_into(&mut grads);
            flat.clear();
            flat.extend(grads.wrt_all(bound.as_slice()));
            nodes += g.len();
            bytes = bytes.max(g.heap_bytes());
            last_loss = loss.value();
            drop(bound);
            g.release(empty);
            let t2 = Instant::now();
            adam.update(params.as_mut_slice(), &flat);
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
        "| Adam update (C pow, as the reference) | {:.1} us |",
        us(median(&mut update))
    );
    println!("| **total** | **{:.1} us** |", us(median(&mut total)));
    println!();
    println!("tape nodes per step: {nodes_per_step:.0} (mean, the 4,192 parameters included)");
    println!(
        "graph bytes at the largest step: {bytes} ({:.1} bytes per node of the mean step)",
        bytes as f64 / nodes_per_step
    );
    println!();
    println!(
        "reference (MICROGPT.md, 2-core machine): CPython 350 000 - 500 000 us/step (61,158 Value nodes);"
    );
    println!("fastest public Rust port: 700 - 800 us/step");
}
