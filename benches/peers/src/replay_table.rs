//! Record once, evaluate many times: gradients by tapegrad's `Replay` beside
//! re-recording (tapegrad, echidna), echidna's own record-once `BytecodeTape`, and plain
//! `f64`, on W2, W3 and W4. `cargo run --release -- --replay` in `benches/peers` prints only
//! this table; the full run prints it too.
//!
//! Each repetition times every row once, in an order rotated from one repetition to the
//! next; the ratios are taken within a repetition and the table shows their medians.

use std::hint::black_box;
use std::ops::{Add, Div, Mul, Neg, Sub};

use tapegrad::{Gradients, Graph, Replay, ReplayWorkspace, Scalar};

use crate::engines::{
    Buffers, EchidnaEngine, Engine, composed, forward_operators, peer_scalar_methods,
};
use crate::workloads::{Chain, Rosenbrock, Transformer, Workload};
use crate::{Settings, median, time_per_call};
use num_traits::Float as _;

/// echidna's bytecode-tape variable, for the record-once rows.
#[derive(Clone, Copy, Debug)]
pub struct EchidnaB(pub echidna::BReverse<f64>);

forward_operators!(EchidnaB);

impl Scalar for EchidnaB {
    fn value(&self) -> f64 {
        echidna::Scalar::value(&self.0)
    }
    fn lift(&self, c: f64) -> Self {
        EchidnaB(echidna::BReverse::constant(c))
    }
    peer_scalar_methods!(EchidnaB, |a, b| a.powf(b));
}

impl From<EchidnaB> for tapegrad::Operand<EchidnaB> {
    fn from(x: EchidnaB) -> Self {
        tapegrad::Operand::Scalar(x)
    }
}

/// Prints the table for W2, W3 and W4.
pub fn table(settings: &Settings) {
    println!(
        "\n## Record once, evaluate many times (gradient per call); medians of {} repetitions\n",
        settings.reps
    );
    println!(
        "| workload | f64 | tapegrad record+backward | tapegrad replay | echidna record+reverse | echidna BytecodeTape | replay x f64 | replay x echidna | replay x BytecodeTape | tapegrad first recording (record + Replay::new) |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    workload(&Chain { ops: 1_000_000 }, settings);
    workload(&Transformer, settings);
    workload(&Rosenbrock { n: 100 }, settings);
    println!(
        "\nEvery replayed gradient equals a fresh recording's bit for bit, and allocates \
         nothing once its workspace has been used (asserted above, 3 calls per workload)."
    );
}

fn workload<W: Workload>(w: &W, settings: &Settings) {
    if let Some(only) = &settings.only
        && !w.name().contains(only.as_str())
    {
        return;
    }
    let x = w.inputs();
    let n = x.len();

    // The replay, recorded once; checked against a fresh recording.
    let g = Graph::new();
    let xs = g.vars(&x);
    let y = w.eval(&xs);
    let replay = Replay::new(y, &xs);
    let mut ws = ReplayWorkspace::new();
    let mut grad = vec![0.0; n];
    let value = replay.gradient(&x, &mut ws, &mut grad).expect("no guards");
    assert_eq!(value, y.value());
    assert_eq!(grad, y.backward().wrt_all(&xs), "{}", w.name());
    drop(g);
    // Steady state: no allocation per gradient once the workspace has been used.
    let before = crate::alloc_count::allocations();
    for _ in 0..3 {
        black_box(replay.gradient(&x, &mut ws, &mut grad).unwrap());
    }
    let replay_allocations = crate::alloc_count::allocations() - before;
    assert_eq!(replay_allocations, 0, "{}: replay allocated", w.name());

    // echidna's bytecode tape, recorded once.
    let (mut btape, _) = echidna::record(
        |v: &[echidna::BReverse<f64>]| {
            let v: Vec<EchidnaB> = v.iter().map(|&b| EchidnaB(b)).collect();
            w.eval(&v).0
        },
        &x,
    );
    let mut bbuf = Vec::new();
    let bgrad = btape.gradient_with_buf(&x, &mut bbuf);
    let scale = grad.iter().fold(1.0f64, |m, g| m.max(g.abs()));
    let agree = grad
        .iter()
        .zip(&bgrad)
        .all(|(a, b)| (a - b).abs() <= 1e-10 * scale);
    assert!(agree, "{}: echidna's bytecode gradient disagrees", w.name());

    // The rows, in the order of the table's columns.
    let mut runs: Vec<Box<dyn FnMut() -> f64 + '_>> = Vec::new();
    let x = &x;
    runs.push(Box::new(move || w.eval(x)));
    let (graph, mut grads) = (Graph::new(), Gradients::new());
    runs.push(Box::new(move || {
        let mark = graph.mark();
        let xs = graph.vars(x);
        let y = w.eval(&xs);
        y.backward_into(&mut grads);
        let v = y.value() + grads[xs[0]];
        graph.release(mark);
        v
    }));
    runs.push(Box::new(move || {
        replay.gradient(x, &mut ws, &mut grad).unwrap() + grad[0]
    }));
    let mut echidna = EchidnaEngine::new(Buffers::Warm);
    let mut egrad = Vec::new();
    runs.push(Box::new(move || {
        echidna.gradient(w, x, &mut egrad).0 + egrad[0]
    }));
    runs.push(Box::new(move || btape.gradient_with_buf(x, &mut bbuf)[0]));
    runs.push(Box::new(move || {
        let g = Graph::new();
        let xs = g.vars(x);
        let r = Replay::new(w.eval(&xs), &xs);
        r.len() as f64
    }));

    let k = runs.len();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); k];
    let mut calls = vec![1usize; k];
    // Calls per measurement: enough to last about `target`.
    for (i, run) in runs.iter_mut().enumerate() {
        let once = time_per_call(1, || {
            black_box(run());
        });
        calls[i] = ((settings.target.as_secs_f64() / once) as usize).max(1);
    }
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
        median(&mut r)
    };
    let med: Vec<f64> = times.iter().map(|t| median(&mut t.clone())).collect();
    let (f64_, tapegrad, replay, echidna, bytecode, first) = (0, 1, 2, 3, 4, 5);
    println!(
        "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} ({:.2}x record+backward) |",
        w.name(),
        fmt(med[f64_]),
        fmt(med[tapegrad]),
        fmt(med[replay]),
        fmt(med[echidna]),
        fmt(med[bytecode]),
        ratio(replay, f64_),
        ratio(replay, echidna),
        ratio(replay, bytecode),
        fmt(med[first]),
        ratio(first, tapegrad),
    );
}

fn fmt(seconds: f64) -> String {
    if seconds >= 1e-3 {
        format!("{:.2} ms", seconds * 1e3)
    } else if seconds >= 1e-6 {
        format!("{:.1} µs", seconds * 1e6)
    } else {
        format!("{:.0} ns", seconds * 1e9)
    }
}

/// `--profile replay|bytecode WORKLOAD CALLS`: records once, then `calls` gradients, for
/// callgrind (`replay_instructions.sh` subtracts two call counts to get the cost per call).
pub fn profile<W: Workload>(engine: &str, w: &W, x: &[f64], calls: usize) {
    let mut grad = vec![0.0; x.len()];
    if engine == "replay" {
        let g = Graph::new();
        let xs = g.vars(x);
        let replay = Replay::new(w.eval(&xs), &xs);
        let mut ws = ReplayWorkspace::new();
        for _ in 0..calls {
            black_box(replay.gradient(x, &mut ws, &mut grad).unwrap());
        }
    } else {
        let (mut tape, _) = echidna::record(
            |v: &[echidna::BReverse<f64>]| {
                let v: Vec<EchidnaB> = v.iter().map(|&b| EchidnaB(b)).collect();
                w.eval(&v).0
            },
            x,
        );
        let mut buf = Vec::new();
        for _ in 0..calls {
            black_box(tape.gradient_with_buf(x, &mut buf));
        }
    }
}
