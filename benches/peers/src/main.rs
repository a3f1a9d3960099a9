//! tapegrad side by side with echidna 0.15 (reverse mode) and reverse 0.2 on the
//! workloads W1 to W4, in one run: `cargo run --release` in `benches/peers` (the default
//! release build), and `cargo run --profile release-lto` (fat LTO, one codegen unit, for
//! every engine: each one's best build). The output names the build it was made with.
//!
//! Method: every workload is written once over `tapegrad::Scalar` (`workloads.rs`) and
//! run by every engine (`engines.rs`). For each workload, one repetition measures every
//! (engine, mode) pair once, in an order rotated from one repetition to the next so that
//! machine noise spreads over all engines; a measurement times enough calls to last about
//! `TARGET` and reports the time per call. Ratios are taken within each repetition and the
//! table shows medians over repetitions. "Warm" keeps each engine's tape memory from one
//! call to the next (as a training loop would); "cold" starts from a fresh tape each call.
//!
//! Flags: `--quick` (fewer repetitions); `--replay` / `--jit` (only the record-once
//! table / only the compiled-replay tables); `--only TEXT` (only the workloads whose name
//! contains TEXT, and no other section); `--rss ENGINE OPS` (internal: one W2 gradient in
//! this fresh process, printing its peak resident bytes per op); `--release-probe` (only
//! the release after a large evaluation); `--map-cost` (only the share of the slotmap's
//! own inserts and removals, against echidna's whole record and reverse); `--profile ENGINE
//! WORKLOAD CALLS` (warm gradients of one workload on one engine and nothing else, to run
//! under `valgrind --tool=callgrind`; WORKLOAD is w1c, w1f, w2, w3 or w4).

mod alloc_count;
mod engines;
mod jit_table;
mod replay_table;
mod workloads;

use std::hint::black_box;
use std::time::{Duration, Instant};

use tapegrad::{Gradients, Graph, Var};

use engines::{Buffers, EchidnaEngine, Engine, Plain, ReverseEngine, Tapegrad, TapegradBinary};
use workloads::{
    Chain, CrossEntropy, CrossEntropyForm, Rosenbrock, Transformer, Workload, thousands,
};

#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

/// The tolerance of the correctness column: `|g - reference| <= TOL * max(1, |reference|)`.
const TOL: f64 = 1e-10;

struct Settings {
    /// Measure only the workloads whose name contains this, and skip the other sections.
    only: Option<String>,
    reps: usize,
    target: Duration,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--rss") {
        rss_child(&args[2], args[3].parse().expect("--rss ENGINE OPS"));
        return;
    }
    if args.get(1).map(String::as_str) == Some("--profile") {
        profile(
            &args[2],
            &args[3],
            args[4].parse().expect("--profile ENGINE WORKLOAD CALLS"),
        );
        return;
    }
    if args.get(1).map(String::as_str) == Some("--release-probe") {
        release_after_large();
        return;
    }
    if args.get(1).map(String::as_str) == Some("--map-cost") {
        map_cost();
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let replay_only = args.iter().any(|a| a == "--replay");
    let jit_only = args.iter().any(|a| a == "--jit");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args[i + 1].clone());
    let settings = Settings {
        only,
        reps: if quick { 5 } else { 15 },
        target: Duration::from_millis(if quick { 3 } else { 8 }),
    };

    println!("# tapegrad vs echidna 0.15 and reverse 0.2\n");
    println!("Machine: {}\n", machine());
    println!("Build: {}\n", build());
    if replay_only {
        replay_table::table(&settings);
        return;
    }
    if jit_only {
        jit_table::table(&settings);
        return;
    }
    print_sizes();

    for buffers in [Buffers::Warm, Buffers::Cold] {
        let label = match buffers {
            Buffers::Warm => "warm: each engine keeps its tape memory between calls",
            Buffers::Cold => "cold: a fresh tape every call",
        };
        println!(
            "\n## Peer table ({label}); medians of {} repetitions\n",
            settings.reps
        );
        println!(
            "| workload | engine | nodes | record | record+backward | ns/node | x f64 | x echidna | x reverse | gradient check |"
        );
        println!("|---|---|--:|--:|--:|--:|--:|--:|--:|---|");
        for form in [CrossEntropyForm::Composed, CrossEntropyForm::Fused] {
            for n in [1_000, 100_000] {
                let w = CrossEntropy { n, target: 3, form };
                compare(&w, buffers, &settings);
            }
        }
        compare(&Chain { ops: 1_000_000 }, buffers, &settings);
        compare(&Transformer, buffers, &settings);
        compare(&Rosenbrock { n: 100 }, buffers, &settings);
    }

    if settings.only.is_some() {
        return;
    }
    replay_table::table(&settings);
    jit_table::table(&settings);
    memory();
    scaling(&settings);
    deep_stack();
    release_after_large();
    map_cost();
    steady_state();
}

/// The release probe: a small step (W4, record + backward + release to a mark) on a graph,
/// before and after one 1,000,000-op W2 evaluation on the same graph was released. A
/// release costs what it frees, so the small step must cost what it did before (the keys
/// issued ahead of the large evaluation's nodes were removed with them).
fn release_after_large() {
    let w4 = Rosenbrock { n: 100 };
    let x = w4.inputs();
    let graph = Graph::new();
    let mut grads = Gradients::new();
    let mark = graph.mark();
    let mut step = || {
        let xs = graph.vars(&x);
        let y = w4.eval(&xs);
        y.backward_into(&mut grads);
        black_box(grads.wrt_all(&xs));
        graph.release(mark);
    };
    let measure = |step: &mut dyn FnMut()| {
        let mut times: Vec<f64> = (0..15).map(|_| time_per_call(2_000, &mut *step)).collect();
        median(&mut times)
    };
    let before = measure(&mut step);
    {
        let xs = graph.vars(&[0.5]);
        let y = Chain { ops: 1_000_000 }.eval(&xs);
        black_box(y.backward().wrt(xs[0]));
        graph.release(mark);
    }
    let after = measure(&mut step);
    println!(
        "\nRelease after a large evaluation: a W4 step (record, backward, release) takes {} \
         before and {} after a 1,000,000-op evaluation on the same graph was released: {:.2}x \
         (medians of 15)",
        seconds(before),
        seconds(after),
        after / before
    );
}

/// The slotmap's own work per node, alone: what tapegrad's handle identity requires (every
/// node's key inserted into a `SlotMap` when it is recorded, removed when it is released),
/// measured without the rest of the engine. Per workload, one repetition times echidna's
/// warm gradient (record + reverse), tapegrad's, and one cycle of the map's work for as
/// many nodes as tapegrad records: the keys inserted into a column, as `Keys::issue_batch`
/// does, then removed newest first, as `Keys::release` does; in an order rotated from one
/// repetition to the next. Ratios are taken within each repetition; medians of 15.
fn map_cost() {
    println!("\n## The slotmap's share: one insert and one removal per node, alone\n");
    println!(
        "| workload | nodes | echidna ns/node | slotmap insert+remove ns/node | slotmap x echidna | tapegrad x echidna | tapegrad minus slotmap, x echidna |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|");
    map_cost_of(&Rosenbrock { n: 100 });
    map_cost_of(&Chain { ops: 1_000_000 });
}

fn map_cost_of<W: Workload>(w: &W) {
    let x = w.inputs();
    let mut echidna = EchidnaEngine::new(Buffers::Warm);
    let mut tapegrad = Tapegrad::new(Buffers::Warm);
    let mut grad = Vec::new();
    let nodes = tapegrad.gradient(w, &x, &mut grad).1;
    echidna.gradient(w, &x, &mut grad);
    let mut map: slotmap::SlotMap<tapegrad::NodeKey, ()> = slotmap::SlotMap::with_key();
    let mut column = vec![tapegrad::NodeKey::default(); nodes];
    let mut map_cycle = || {
        for key in column.iter_mut() {
            *key = map.insert(());
        }
        for &key in column.iter().rev() {
            map.remove(key);
        }
        black_box(map.len());
    };
    map_cycle(); // the map's slots allocated, as a warm graph's are
    let once = time_per_call(1, || {
        black_box(echidna.gradient(w, &x, &mut grad));
    });
    let iters = (0.008 / once).ceil().clamp(1.0, 1e6) as usize;
    let (mut slot_x, mut tape_x, mut rest_x, mut e_ns, mut m_ns) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 0..15 {
        // Seconds per call of echidna, tapegrad and the map's cycle, in rotated order.
        let mut times = [0.0; 3];
        for k in 0..3 {
            let which = (k + rep) % 3;
            times[which] = match which {
                0 => time_per_call(iters, || {
                    black_box(echidna.gradient(w, &x, &mut grad));
                }),
                1 => time_per_call(iters, || {
                    black_box(tapegrad.gradient(w, &x, &mut grad));
                }),
                _ => time_per_call(iters, &mut map_cycle),
            };
        }
        let [e, t, m] = times;
        slot_x.push(m / e);
        tape_x.push(t / e);
        rest_x.push((t - m) / e);
        e_ns.push(e * 1e9 / nodes as f64);
        m_ns.push(m * 1e9 / nodes as f64);
    }
    println!(
        "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        w.name(),
        thousands(nodes),
        median(&mut e_ns),
        median(&mut m_ns),
        median(&mut slot_x),
        median(&mut tape_x),
        median(&mut rest_x),
    );
}

// ---------------------------------------------------------------------------------------
// The peer table
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Record,
    Gradient,
}

/// Runs one engine in one mode, filling the gradient; returns the value and node count.
type Run<'a> = Box<dyn FnMut(Mode, &mut Vec<f64>) -> (f64, usize) + 'a>;

/// One engine, type-erased for the measuring loop.
struct Runner<'a> {
    name: &'static str,
    run: Run<'a>,
}

fn runner<'a, E: Engine + 'a, W: Workload>(mut engine: E, w: &'a W, x: &'a [f64]) -> Runner<'a> {
    Runner {
        name: engine.name(),
        run: Box::new(move |mode, grad| match mode {
            Mode::Record => engine.record(w, x),
            Mode::Gradient => engine.gradient(w, x, grad),
        }),
    }
}

/// Seconds per call of `f`, timed over `iters` calls.
fn time_per_call(iters: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_secs_f64() / iters as f64
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        0.5 * (xs[n / 2 - 1] + xs[n / 2])
    }
}

/// Measures `w` on every engine and prints its rows of the table.
fn compare<W: Workload>(w: &W, buffers: Buffers, settings: &Settings) {
    if let Some(only) = &settings.only
        && !w.name().contains(only.as_str())
    {
        return;
    }
    let x = w.inputs();
    let mut runners = [
        runner(Plain, w, &x),
        runner(Tapegrad::new(buffers), w, &x),
        runner(TapegradBinary::new(buffers), w, &x),
        runner(EchidnaEngine::new(buffers), w, &x),
        runner(ReverseEngine::new(buffers), w, &x),
    ];
    let (plain, echidna, reverse) = (0, 3, 4);

    // One call each: the gradients for the check, the node counts, and the calibration.
    let mut grads = Vec::new();
    let mut nodes = Vec::new();
    let mut entries = Vec::new(); // (runner, mode, calls per measurement)
    for (i, r) in runners.iter_mut().enumerate() {
        let mut grad = Vec::new();
        let modes: &[Mode] = if i == plain {
            &[Mode::Gradient]
        } else {
            &[Mode::Record, Mode::Gradient]
        };
        for &mode in modes {
            (r.run)(mode, &mut grad); // warms caches and buffers
            let once = time_per_call(1, || {
                black_box((r.run)(mode, &mut grad));
            });
            let iters = (settings.target.as_secs_f64() / once)
                .ceil()
                .clamp(1.0, 1e6) as usize;
            entries.push((i, mode, iters));
        }
        nodes.push((r.run)(Mode::Gradient, &mut grad).1);
        grads.push(grad);
    }

    // Interleaved repetitions.
    let mut samples = vec![Vec::with_capacity(settings.reps); entries.len()];
    for rep in 0..settings.reps {
        for k in 0..entries.len() {
            let e = (k + rep) % entries.len();
            let (i, mode, iters) = entries[e];
            let mut grad = Vec::new();
            let r = &mut runners[i];
            samples[e].push(time_per_call(iters, || {
                black_box((r.run)(mode, &mut grad));
            }));
        }
    }
    let sample = |i: usize, mode: Mode| -> &Vec<f64> {
        let e = entries
            .iter()
            .position(|&(j, m, _)| j == i && m == mode)
            .expect("measured");
        &samples[e]
    };
    let ratio = |i: usize, to: usize| -> f64 {
        let mut r: Vec<f64> = sample(i, Mode::Gradient)
            .iter()
            .zip(sample(to, Mode::Gradient))
            .map(|(a, b)| a / b)
            .collect();
        median(&mut r)
    };

    // The reference gradient: the closed form, or else tapegrad's (itself checked
    // against echidna's).
    let closed = w.closed_form(&x);
    let name = w.name();
    let f64_time = median(&mut sample(plain, Mode::Gradient).clone());
    println!("| {name} | f64 | | | {} | | 1 | | | |", seconds(f64_time));
    for i in 1..runners.len() {
        let (reference, against) = match &closed {
            Some(g) => (g, "closed form"),
            None if i == 1 => (&grads[echidna], "echidna"),
            None => (&grads[1], "tapegrad"),
        };
        let err = max_error(&grads[i], reference);
        let verdict = if err <= TOL { "ok" } else { "WRONG" };
        let rb = median(&mut sample(i, Mode::Gradient).clone());
        let rec = median(&mut sample(i, Mode::Record).clone());
        println!(
            "| {name} | {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {verdict}: {err:.1e} vs {against} |",
            runners[i].name,
            thousands(nodes[i]),
            seconds(rec),
            seconds(rb),
            rb * 1e9 / nodes[i] as f64,
            ratio(i, plain),
            ratio(i, echidna),
            ratio(i, reverse),
        );
    }
}

/// `max_i |g_i - r_i| / max(1, |r_i|)`; infinite if the lengths differ.
fn max_error(g: &[f64], reference: &[f64]) -> f64 {
    if g.len() != reference.len() {
        return f64::INFINITY;
    }
    g.iter()
        .zip(reference)
        .map(|(a, b)| {
            let e = (a - b).abs() / b.abs().max(1.0);
            if e.is_nan() { f64::INFINITY } else { e }
        })
        .fold(0.0, f64::max)
}

fn seconds(s: f64) -> String {
    if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

// ---------------------------------------------------------------------------------------
// Machine, sizes, memory
// ---------------------------------------------------------------------------------------

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{model}, {cpus} CPUs available")
}

/// The cargo profile this binary was built with, read from the directory cargo put it in
/// (`target/<profile>/tapegrad-peers`), with what that profile means (see Cargo.toml).
fn build() -> String {
    let exe = std::env::current_exe().expect("own path");
    let profile = exe
        .parent()
        .and_then(|dir| dir.file_name())
        .map_or("unknown".into(), |name| name.to_string_lossy().into_owned());
    let meaning = match profile.as_str() {
        "release" => "the default release build (no LTO, 16 codegen units)",
        "release-lto" => "fat LTO, codegen-units = 1, for every engine",
        _ => "not one of this crate's two benchmark builds",
    };
    format!("cargo profile `{profile}`: {meaning}")
}

fn print_sizes() {
    use std::mem::size_of;
    println!("## Stored structures (std::mem::size_of)\n");
    println!("| item | bytes |");
    println!("|---|--:|");
    println!(
        "| `Var` (handle: graph reference, key, position, release epoch, value) | {} |",
        size_of::<Var>()
    );
    println!(
        "| `NodeKey` (a slotmap key: slot index + version) | {} |",
        size_of::<tapegrad::NodeKey>()
    );
    println!("| per node: value `f64` | {} |", size_of::<f64>());
    println!(
        "| per node: op (an `Op` is {} bytes; the tape stores its one-byte code) | {} |",
        size_of::<tapegrad::Op>(),
        size_of::<u8>()
    );
    println!("| per node: edge start `u32` | {} |", size_of::<u32>());
    println!(
        "| per node: its key in the position column (`NodeKey`) | {} |",
        size_of::<tapegrad::NodeKey>()
    );
    // slotmap's slot for a `()` value: its version and the free list's link (a union).
    let slot = 2 * size_of::<u32>();
    println!("| per node: its slot in the slotmap (version + free-list link) | {slot} |");
    println!(
        "| per operand edge (an `f64` operand too): position `u32` + partial `f64` | {} |",
        size_of::<u32>() + size_of::<f64>()
    );
    println!(
        "| per node in backward: adjoint `f64` | {} |",
        size_of::<f64>()
    );
    // W2's ops: mul and add by a constant (two edges each), exp and ln (one each).
    let node = size_of::<f64>()
        + size_of::<u8>()
        + size_of::<u32>()
        + size_of::<tapegrad::NodeKey>()
        + slot;
    let edges = 1.5 * (size_of::<u32>() + size_of::<f64>()) as f64;
    println!(
        "| W2 per op: node {node} + 1.5 edges {edges} + adjoint {} | {} |",
        size_of::<f64>(),
        node as f64 + edges + size_of::<f64>() as f64
    );
    // What the graph reports: capacity, so it includes the slack of growth by doubling.
    let ops = 1_000_000;
    let g = Graph::new();
    let x = g.var(0.5);
    let _y = Chain { ops }.eval(&[x]);
    println!(
        "| W2 per op, `Graph::heap_bytes() / len()` (capacity, growth slack included) | {:.1} |",
        g.heap_bytes() as f64 / g.len() as f64
    );
}

/// Peak resident memory per recorded op on W2, each engine in a fresh process.
fn memory() {
    let ops = 4_000_000;
    println!(
        "\n## Peak memory on W2 ({} ops, record + backward, cold, fresh process each)\n",
        thousands(ops)
    );
    println!("| engine | peak RSS bytes per op |");
    println!("|---|--:|");
    let exe = std::env::current_exe().expect("own path");
    for engine in ["tapegrad", "echidna", "reverse"] {
        let out = std::process::Command::new(&exe)
            .args(["--rss", engine, &ops.to_string()])
            .output()
            .expect("run self");
        let text = String::from_utf8_lossy(&out.stdout);
        println!("| {engine} | {} |", text.trim());
    }
}

fn status_kib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("a VmRSS/VmHWM line")
}

fn rss_child(engine: &str, ops: usize) {
    let w = Chain { ops };
    let x = w.inputs();
    let mut grad = Vec::with_capacity(1);
    let before = status_kib("VmRSS:");
    let (_, nodes) = match engine {
        "tapegrad" => Tapegrad::new(Buffers::Cold).gradient(&w, &x, &mut grad),
        "echidna" => EchidnaEngine::new(Buffers::Cold).gradient(&w, &x, &mut grad),
        "reverse" => ReverseEngine::new(Buffers::Cold).gradient(&w, &x, &mut grad),
        other => panic!("unknown engine {other}"),
    };
    let peak = status_kib("VmHWM:");
    println!("{:.1}", (peak - before) * 1024.0 / nodes as f64);
}

/// `--profile`: `calls` warm gradients of one workload on one engine.
fn profile(engine: &str, workload: &str, calls: usize) {
    fn run<W: Workload>(engine: &str, w: &W, calls: usize) {
        let x = w.inputs();
        let mut grad = Vec::new();
        let mut go = |e: &mut dyn FnMut(&mut Vec<f64>)| {
            for _ in 0..calls {
                e(&mut grad);
            }
        };
        match engine {
            "f64" => go(&mut |g| {
                black_box(Plain.gradient(w, &x, g));
            }),
            "tapegrad" => {
                let mut e = Tapegrad::new(Buffers::Warm);
                go(&mut |g| {
                    black_box(e.gradient(w, &x, g));
                });
            }
            "binary" => {
                let mut e = TapegradBinary::new(Buffers::Warm);
                go(&mut |g| {
                    black_box(e.gradient(w, &x, g));
                });
            }
            "echidna" => {
                let mut e = EchidnaEngine::new(Buffers::Warm);
                go(&mut |g| {
                    black_box(e.gradient(w, &x, g));
                });
            }
            "reverse" => {
                let mut e = ReverseEngine::new(Buffers::Warm);
                go(&mut |g| {
                    black_box(e.gradient(w, &x, g));
                });
            }
            "replay" | "bytecode" => replay_table::profile(engine, w, &x, calls),
            "jit" => jit_table::profile(w, &x, calls),
            other => panic!("unknown engine {other}"),
        }
    }
    let xent = |form| CrossEntropy {
        n: 10_000,
        target: 3,
        form,
    };
    match workload {
        "w1c" => run(engine, &xent(CrossEntropyForm::Composed), calls),
        "w1f" => run(engine, &xent(CrossEntropyForm::Fused), calls),
        "w2" => run(engine, &Chain { ops: 100_000 }, calls),
        "w3" => run(engine, &Transformer, calls),
        "w4" => run(engine, &Rosenbrock { n: 100 }, calls),
        other => panic!("unknown workload {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// Scaling, deep graphs, steady state
// ---------------------------------------------------------------------------------------

fn scaling(settings: &Settings) {
    println!("\n## Scaling: W2 chain, record + backward (warm), ns per node\n");
    let sizes = [1_000, 10_000, 100_000, 1_000_000, 10_000_000];
    let chains: Vec<Chain> = sizes.iter().map(|&ops| Chain { ops }).collect();
    let x = chains[0].inputs();
    let mut tapegrads: Vec<Tapegrad> = sizes.iter().map(|_| Tapegrad::new(Buffers::Warm)).collect();
    let mut echidnas: Vec<EchidnaEngine> = sizes
        .iter()
        .map(|_| EchidnaEngine::new(Buffers::Warm))
        .collect();
    let mut grad = Vec::new();
    // Calls per measurement, from one warm-up call each; every size is measured once per
    // repetition, so machine noise spreads over all sizes.
    let iters: Vec<usize> = (0..sizes.len())
        .map(|i| {
            echidnas[i].gradient(&chains[i], &x, &mut grad);
            tapegrads[i].gradient(&chains[i], &x, &mut grad);
            let once = time_per_call(1, || {
                black_box(tapegrads[i].gradient(&chains[i], &x, &mut grad));
            });
            (settings.target.as_secs_f64() * 2.0 / once).ceil().max(1.0) as usize
        })
        .collect();
    let reps = settings.reps.min(7);
    let mut samples = vec![[Vec::new(), Vec::new(), Vec::new()]; sizes.len()];
    for _ in 0..reps {
        for i in 0..sizes.len() {
            let (w, n) = (&chains[i], iters[i]);
            samples[i][0].push(time_per_call(n, || {
                black_box(Plain.gradient(w, &x, &mut grad));
            }));
            samples[i][1].push(time_per_call(n, || {
                black_box(tapegrads[i].gradient(w, &x, &mut grad));
            }));
            samples[i][2].push(time_per_call(n, || {
                black_box(echidnas[i].gradient(w, &x, &mut grad));
            }));
        }
    }
    println!("| ops | f64 | tapegrad | echidna 0.15 |");
    println!("|--:|--:|--:|--:|");
    let mut per_node = Vec::new();
    for (i, &ops) in sizes.iter().enumerate() {
        let nodes = (ops + 1) as f64;
        let [f, t, e] = &mut samples[i];
        let (f, t, e) = (
            median(f) * 1e9 / nodes,
            median(t) * 1e9 / nodes,
            median(e) * 1e9 / nodes,
        );
        per_node.push(t);
        println!("| {} | {f:.2} | {t:.2} | {e:.2} |", thousands(ops));
    }
    let max = per_node.iter().copied().fold(0.0, f64::max);
    let min = per_node.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "\ntapegrad ns/node, largest over smallest across sizes: {:.2}x (medians of {reps})",
        max / min
    );
}

/// Record, differentiate and drop a 10-million-op chain on a thread with a 2 MiB stack.
fn deep_stack() {
    let ops = 10_000_000;
    let result = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let g = Graph::new();
            let x = g.var(0.5);
            let y = Chain { ops }.eval(&[x]);
            let plain = y.backward()[x];
            // The differentiable backward too, on a shorter chain (it records ~3 nodes per op).
            let g2 = Graph::new();
            let x2 = g2.var(0.5);
            let y2 = Chain { ops: ops / 10 }.eval(&[x2]);
            let dx = y2.grad(&[x2])[0].value();
            (plain, dx)
        })
        .expect("spawn")
        .join();
    match result {
        Ok((plain, dx)) => println!(
            "\nDeep graph on a 2 MiB stack: {} ops recorded, backward {plain:.6}, differentiable backward on {} ops {dx:.6}, dropped: ok",
            thousands(ops),
            thousands(ops / 10)
        ),
        Err(_) => println!("\nDeep graph on a 2 MiB stack: FAILED"),
    }
}

/// A training loop that re-records each step: allocations per step after the first.
fn steady_state() {
    println!("\n## Steady state: allocations per training step (counting global allocator)\n");
    println!("| loop | step 1 | later steps (each) |");
    println!("|---|--:|--:|");
    let counts = train(&Rosenbrock { n: 100 }, 1e-4);
    report_steady("W4 Rosenbrock n=100, gradient descent", &counts);
    let xent = CrossEntropy {
        n: 1_000,
        target: 3,
        form: CrossEntropyForm::Fused,
    };
    let counts = train(&xent, 0.1);
    report_steady("W1 fused cross-entropy N=1,000, gradient descent", &counts);

    // The transformer's own code allocates its activations (`Vec<Vec<T>>`) every call,
    // with `f64` as with `Var`; what matters is what the tape adds to that. So the forward
    // (recording) is counted apart from the rest of the step, and the tape's heap is
    // watched.
    let steps = train_transformer();
    report_steady(
        "W3 transformer, SGD on kept parameters: forward (records the tape)",
        &steps.forward,
    );
    report_steady(
        "W3 transformer, SGD on kept parameters: backward, update, release",
        &steps.rest,
    );
    let steady_heap = steps.heap[1..].iter().all(|&h| h == steps.heap[1]);
    println!(
        "\nThe model's own code allocates its activation vectors on every forward: {} times \
         with plain f64 (which also gathers matrix columns), {} with Var. The tape's heap \
         (Graph::heap_bytes, {} bytes after step 1) {} at every later step.",
        steps.plain_forward,
        steps.forward[1..].iter().max().expect("steps"),
        steps.heap[0],
        if steady_heap {
            "is the same"
        } else {
            "CHANGES"
        }
    );
}

/// Allocations per step of [`train_transformer`], and the tape's heap after each step.
struct TransformerSteps {
    forward: Vec<usize>,
    rest: Vec<usize>,
    heap: Vec<usize>,
    plain_forward: usize,
}

/// SGD on the transformer with tapegrad: the parameters are inputs created once, before
/// the mark, and updated with `Graph::set_value` after each step's release.
fn train_transformer() -> TransformerSteps {
    let mut values = Transformer.inputs();
    let g = Graph::new();
    let params = g.vars(&values);
    let mark = g.mark();
    let mut grads = Gradients::new();
    let (mut forward, mut rest, mut heap) = (
        Vec::with_capacity(10),
        Vec::with_capacity(10),
        Vec::with_capacity(10),
    );
    for _ in 0..10 {
        let before = alloc_count::allocations();
        let loss = Transformer.eval(&params);
        let recorded = alloc_count::allocations();
        loss.backward_into(&mut grads);
        for (v, &p) in values.iter_mut().zip(&params) {
            *v -= 0.1 * grads[p];
        }
        g.release(mark);
        for (&p, &v) in params.iter().zip(&values) {
            g.set_value(p, v);
        }
        let after = alloc_count::allocations();
        // Pushed after reading the counter: these vectors' own growth is not the tape's.
        forward.push(recorded - before);
        rest.push(after - recorded);
        heap.push(g.heap_bytes());
    }
    let before = alloc_count::allocations();
    black_box(Transformer.eval(&values));
    let plain_forward = alloc_count::allocations() - before;
    TransformerSteps {
        forward,
        rest,
        heap,
        plain_forward,
    }
}

fn report_steady(name: &str, counts: &[usize]) {
    let later: Vec<String> = counts[1..].iter().map(usize::to_string).collect();
    let later = if counts[1..].iter().all(|&c| c == counts[1]) {
        counts[1].to_string()
    } else {
        later.join(", ")
    };
    println!("| {name} | {} | {later} |", counts[0]);
}

/// Gradient descent on `w` for 20 steps with tapegrad, reusing one graph (released to a
/// mark each step), one `Gradients` and one buffer of input handles.
fn train<W: Workload>(w: &W, lr: f64) -> Vec<usize> {
    let mut params = w.inputs();
    let g = Graph::new();
    let mut grads = Gradients::new();
    let mut xs: Vec<Var> = Vec::new();
    let mark = g.mark();
    let mut counts = Vec::new();
    for _ in 0..20 {
        let before = alloc_count::allocations();
        xs.clear();
        xs.extend(params.iter().map(|&p| g.var(p)));
        let loss = w.eval(&xs);
        loss.backward_into(&mut grads);
        for (p, &x) in params.iter_mut().zip(&xs) {
            *p -= lr * grads[x];
        }
        g.release(mark);
        counts.push(alloc_count::allocations() - before);
    }
    counts
}
