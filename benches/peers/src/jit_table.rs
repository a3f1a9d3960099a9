//! The replay compiled to native code (`tapegrad-jit`) beside the interpreted replay and
//! plain `f64`: gradient time per call on W1-W4, with what compiling costs (time and code
//! bytes per node, and the number of gradients after which compiling has paid for itself
//! against the replay); and how compile time grows with the tape, up to a million nodes.
//! `cargo run --profile release-lto -- --jit` in `benches/peers` prints only these tables;
//! the full run prints them too.
//!
//! Each repetition times every row once, in an order rotated from one repetition to the
//! next; the ratios are taken within a repetition, and the table shows their medians and
//! their range (smallest to largest) over the repetitions.

use std::hint::black_box;
use std::time::Instant;

use tapegrad::{Graph, Replay, ReplayWorkspace};
use tapegrad_jit::{Compiled, Workspace};

use crate::workloads::{
    Chain, CrossEntropy, CrossEntropyForm, Rosenbrock, Transformer, Workload, thousands,
};
use crate::{Settings, median, time_per_call};

/// Prints the gradient table and the compile-time scaling table.
pub fn table(settings: &Settings) {
    println!(
        "\n## Compiled replay (tapegrad-jit): gradient per call; medians of {} repetitions, \
         ratio ranges in brackets\n",
        settings.reps
    );
    println!(
        "| workload | nodes | f64 | replay | tapegrad-jit | jit x f64 | replay x f64 | jit x replay | compile | compile per node | code bytes per node | break-even gradients |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for form in [CrossEntropyForm::Composed, CrossEntropyForm::Fused] {
        workload(
            &CrossEntropy {
                n: 1_000,
                target: 3,
                form,
            },
            settings,
        );
    }
    workload(&Chain { ops: 1_000_000 }, settings);
    workload(&Transformer, settings);
    workload(&Rosenbrock { n: 100 }, settings);
    println!(
        "\nEvery compiled gradient equals the replay's bit for bit (asserted above), and \
         allocates nothing once its workspace has been used. Break-even: compile time over \
         the time a compiled gradient saves against the replay."
    );
    if settings.only.is_none() {
        scaling();
    }
}

fn workload<W: Workload>(w: &W, settings: &Settings) {
    if let Some(only) = &settings.only
        && !w.name().contains(only.as_str())
    {
        return;
    }
    let x = w.inputs();
    let n = x.len();

    let g = Graph::new();
    let xs = g.vars(&x);
    let replay = Replay::new(w.eval(&xs), &xs);
    drop(g);
    let compiled = Compiled::new(&replay).expect("compiles");
    let (mut rws, mut ws) = (ReplayWorkspace::new(), Workspace::new());
    let (mut rgrad, mut grad) = (vec![0.0; n], vec![0.0; n]);
    let want = replay.gradient(&x, &mut rws, &mut rgrad).unwrap();
    let got = compiled.gradient(&x, &mut ws, &mut grad).unwrap();
    assert_eq!(got.to_bits(), want.to_bits(), "{}: value", w.name());
    assert!(
        grad.iter()
            .zip(&rgrad)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "{}: the compiled gradient differs from the replay's",
        w.name()
    );
    let before = crate::alloc_count::allocations();
    for _ in 0..3 {
        black_box(compiled.gradient(&x, &mut ws, &mut grad).unwrap());
    }
    assert_eq!(
        crate::alloc_count::allocations() - before,
        0,
        "{}: the compiled gradient allocated",
        w.name()
    );
    // Compile time: the median of a few compilations (the first one above included).
    let mut compile_times = vec![compiled.compile_time().as_secs_f64()];
    for _ in 0..4 {
        let start = Instant::now();
        black_box(Compiled::new(&replay).unwrap());
        compile_times.push(start.elapsed().as_secs_f64());
    }
    let compile = median(&mut compile_times);
    let stats = compiled.stats();

    let x = &x;
    let mut runs: Vec<Box<dyn FnMut() -> f64 + '_>> = vec![
        Box::new(move || w.eval(x)),
        Box::new(move || replay.gradient(x, &mut rws, &mut rgrad).unwrap() + rgrad[0]),
        Box::new(move || compiled.gradient(x, &mut ws, &mut grad).unwrap() + grad[0]),
    ];
    let k = runs.len();
    let mut calls = vec![1usize; k];
    for (i, run) in runs.iter_mut().enumerate() {
        let once = time_per_call(1, || {
            black_box(run());
        });
        calls[i] = ((settings.target.as_secs_f64() / once) as usize).max(1);
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); k];
    for rep in 0..settings.reps {
        for j in 0..k {
            let i = (j + rep) % k;
            let run = &mut runs[i];
            times[i].push(time_per_call(calls[i], || {
                black_box(run());
            }));
        }
    }
    let ratio = |a: usize, b: usize| {
        let mut r: Vec<f64> = (0..settings.reps)
            .map(|r| times[a][r] / times[b][r])
            .collect();
        let m = median(&mut r);
        format!("{m:.2} [{:.2}-{:.2}]", r[0], r[r.len() - 1])
    };
    let med: Vec<f64> = times.iter().map(|t| median(&mut t.clone())).collect();
    let (f64_, replay_, jit) = (0, 1, 2);
    let saved = med[replay_] - med[jit];
    let break_even = if saved > 0.0 {
        thousands((compile / saved).ceil() as usize)
    } else {
        "never".into()
    };
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} ns | {:.0} | {} |",
        w.name(),
        thousands(stats.nodes),
        fmt(med[f64_]),
        fmt(med[replay_]),
        fmt(med[jit]),
        ratio(jit, f64_),
        ratio(replay_, f64_),
        ratio(jit, replay_),
        fmt(compile),
        compile * 1e9 / stats.nodes as f64,
        stats.code_bytes as f64 / stats.nodes as f64,
        break_even,
    );
}

/// Compile time against tape length: W2's chain (4 ops per round) and the Rosenbrock
/// function (9 ops per term), up to a million nodes.
fn scaling() {
    println!("\n## Compile time against tape length (one compilation each)\n");
    println!("| tape | nodes | edges | functions | compile | ns per node | code bytes per node |");
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for ops in [1_000, 10_000, 100_000, 1_000_000] {
        compile_row(&Chain { ops });
    }
    for n in [100, 1_000, 10_000, 111_112] {
        compile_row(&Rosenbrock { n });
    }
}

fn compile_row<W: Workload>(w: &W) {
    let x = w.inputs();
    let g = Graph::new();
    let xs = g.vars(&x);
    let replay = Replay::new(w.eval(&xs), &xs);
    drop(g);
    let compiled = Compiled::new(&replay).expect("compiles");
    let stats = compiled.stats();
    let t = compiled.compile_time().as_secs_f64();
    println!(
        "| {} | {} | {} | {} | {} | {:.0} | {:.0} |",
        w.name(),
        thousands(stats.nodes),
        thousands(stats.edges),
        stats.functions,
        fmt(t),
        t * 1e9 / stats.nodes as f64,
        stats.code_bytes as f64 / stats.nodes as f64,
    );
}

fn fmt(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.2} s")
    } else if seconds >= 1e-3 {
        format!("{:.2} ms", seconds * 1e3)
    } else if seconds >= 1e-6 {
        format!("{:.1} µs", seconds * 1e6)
    } else {
        format!("{:.0} ns", seconds * 1e9)
    }
}

/// `--profile jit WORKLOAD CALLS`: compiles once, then `calls` gradients, for callgrind
/// (subtract two call counts to get the cost per call).
pub fn profile<W: Workload>(w: &W, x: &[f64], calls: usize) {
    let g = Graph::new();
    let xs = g.vars(x);
    let compiled = Compiled::new(&Replay::new(w.eval(&xs), &xs)).unwrap();
    let mut ws = Workspace::new();
    let mut grad = vec![0.0; x.len()];
    for _ in 0..calls {
        black_box(compiled.gradient(x, &mut ws, &mut grad).unwrap());
    }
}
