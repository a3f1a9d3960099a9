//! The tutorial series' tiny transformer on tapegrad: its forward pass reproduced, the
//! true gradients of all 3,456 parameters, and AdamW training until it says
//! "I like transformers <EOS>" after `<BOS>`.
//!
//! ```text
//! cargo run --release -p tapegrad-models --example tiny_transformer -- [--lr 0.001] [--steps 20000]
//!     [--every 100] [--plot target/loss_curve.svg] [--dump-gradients grads.json]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use plotters::prelude::*;
use serde_json::{Map, Value, json};
use tapegrad::{Gradients, Graph};
use tapegrad_models::transformer::{self, N_PARAMS, Params, SENTENCE, VOCAB};
use tapegrad_models::transformer::{AdamW, AdamWConfig};

/// Training stops once the loss is below this and greedy generation is the sentence.
const TARGET_LOSS: f64 = 0.01;

const USAGE: &str = "\
usage: tiny_transformer [--lr RATE] [--steps N] [--every N] [--plot PATH] [--dump-gradients PATH]

  --lr RATE              AdamW learning rate (default 0.001, the series' value)
  --steps N              train at most N steps (default 20000); stops early once the loss
                         is below 0.01 and greedy generation is the sentence
  --every N              print a progress line every N steps (default 100)
  --plot PATH            where to write the loss curve as SVG (default target/loss_curve.svg)
  --dump-gradients PATH  write the initial gradients as JSON, keyed by the series' names";

struct Options {
    lr: f64,
    steps: usize,
    every: usize,
    plot: PathBuf,
    dump_gradients: Option<PathBuf>,
}

/// The options, or `None` for `--help`.
fn parse_args() -> Result<Option<Options>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut options = Options {
        lr: AdamWConfig::default().lr,
        steps: 20_000,
        every: 100,
        plot: PathBuf::from("target/loss_curve.svg"),
        dump_gradients: None,
    };
    let positive = |flag: &str, n: usize| {
        if n > 0 {
            Ok(n)
        } else {
            Err(lexopt::Error::from(format!(
                "{flag} takes a positive whole number"
            )))
        }
    };
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("lr") => {
                options.lr = parser.value()?.parse()?;
                if !(options.lr.is_finite() && options.lr > 0.0) {
                    return Err("--lr takes a positive number".into());
                }
            }
            Long("steps") => options.steps = positive("--steps", parser.value()?.parse()?)?,
            Long("every") => options.every = positive("--every", parser.value()?.parse()?)?,
            Long("plot") => options.plot = parser.value()?.into(),
            Long("dump-gradients") => options.dump_gradients = Some(parser.value()?.into()),
            Long("help") | Short('h') => return Ok(None),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some(options))
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> Result<(), String> {
    let params = Params::series_init();
    print_forward(&params);
    let grads = initial_gradients(&params);
    print_gradients(&params, &grads);
    if let Some(path) = &options.dump_gradients {
        let text = serde_json::to_string_pretty(&gradients_json(&grads))
            .map_err(|e| format!("encoding gradients: {e}"))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("\nInitial gradients written to {}", path.display());
    }
    let run = train(&params, options);
    print_training(&run, options);
    plot_loss_curve(&run.losses, options)?;
    println!("\nLoss curve written to {}", options.plot.display());
    Ok(())
}

fn print_forward(p: &Params<f64>) {
    println!("The series' tiny transformer, weights from random.seed(42), random.gauss(0, 0.1)");
    println!("\nParameters: {N_PARAMS} (the series' text says \"about 2,600\")");
    for (spec, values) in p.tensors() {
        let shape: Vec<String> = spec.shape.iter().map(usize::to_string).collect();
        println!(
            "  {:<8} {:>7}  {:>5}",
            spec.label(),
            shape.join(" x "),
            values.len()
        );
    }
    let row = |xs: &[f64]| {
        xs.iter()
            .map(|x| format!("{x:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "\nE_token[<BOS>] starts {}",
        row(&p.tensor("E_token", None)[16..20])
    );
    println!(
        "E_pos[0]       starts {}",
        row(&p.tensor("E_pos", None)[..4])
    );

    println!("\nLogits:");
    print!("  {:<14}", "position");
    for name in VOCAB {
        print!("{:>9}", short(name));
    }
    println!();
    for (i, row) in transformer::logits(p, &SENTENCE).iter().enumerate() {
        print!("  {:<14}", VOCAB[SENTENCE[i]]);
        for x in row {
            print!("{x:>9.4}");
        }
        println!();
    }

    let loss = transformer::loss(p, &SENTENCE);
    println!(
        "\n  {:<14}{:>14}{:>10}{:>9}",
        "position", "target", "P(target)", "loss"
    );
    for (i, nll) in loss.nll.iter().enumerate() {
        println!(
            "  {:<14}{:>14}{:>10.4}{:>9.4}",
            VOCAB[SENTENCE[i]],
            VOCAB[SENTENCE[i + 1]],
            (-nll).exp(),
            nll
        );
    }
    let total: f64 = loss.nll.iter().sum();
    println!(
        "\nTotal loss {total:.4}; average loss {:.4}; perplexity {:.2}",
        loss.mean,
        loss.mean.exp()
    );
}

fn short(name: &str) -> &str {
    if name == "transformers" {
        "trans"
    } else {
        name
    }
}

/// The gradient of the mean loss with respect to every parameter, from one backward.
fn initial_gradients(p: &Params<f64>) -> Params<f64> {
    let g = Graph::new();
    let vars = p.map(|x| g.var(x));
    let grads = transformer::loss(&vars, &SENTENCE).mean.backward();
    vars.map(|x| grads[x])
}

fn print_gradients(p: &Params<f64>, grads: &Params<f64>) {
    println!("\nTrue gradients of the average loss (one backward pass):");
    println!(
        "  {:<8}{:>11}{:>13}  {:<10}{:>10}",
        "tensor", "norm", "largest", "at", "param"
    );
    for ((spec, g), (_, values)) in grads.tensors().zip(p.tensors()) {
        let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        let (k, largest) = g
            .iter()
            .copied()
            .enumerate()
            .fold((0, 0.0f64), |best, (k, x)| {
                if x.abs() > best.1.abs() { (k, x) } else { best }
            });
        let at = match spec.shape {
            [_, cols] => format!("[{}][{}]", k / cols, k % cols),
            _ => format!("[{k}]"),
        };
        println!(
            "  {:<8}{:>11.4e}{:>13.4e}  {:<10}{:>10.4}",
            spec.label(),
            norm,
            largest,
            at,
            values[k]
        );
    }
    let total = grads.as_slice().iter().map(|x| x * x).sum::<f64>().sqrt();
    println!("  all {N_PARAMS} parameters: norm {total:.4e}");
    println!(
        "  (the series' stand-in gradient for E_token[<BOS>][0] was -0.352893; the true one is {:.6})",
        grads.tensor("E_token", None)[16]
    );
}

/// The initial gradients as JSON keyed by the series' names; `W_Q`, `W_K`, `W_V` are lists
/// of the two heads' matrices, matrices are lists of rows.
fn gradients_json(grads: &Params<f64>) -> Value {
    let mut out = Map::new();
    for (spec, g) in grads.tensors() {
        let tensor = match spec.shape {
            [_, cols] => json!(g.chunks(*cols).collect::<Vec<_>>()),
            _ => json!(g),
        };
        match spec.head {
            Some(_) => out
                .entry(spec.name)
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .expect("per-head tensors are collected in a list")
                .push(tensor),
            None => {
                out.insert(spec.name.to_owned(), tensor);
            }
        }
    }
    Value::Object(out)
}

struct Run {
    losses: Vec<f64>,
    /// Median time of one step (forward + backward + update).
    median_step: Duration,
    total: Duration,
    /// `(steps, elapsed)` when the loss first fell below 0.1 and 0.01.
    below: [Option<(usize, Duration)>; 2],
    params: Params<f64>,
    nodes_per_step: usize,
    done: bool,
}

/// Trains on one graph: the parameters are recorded first and kept; each step records the
/// forward pass, runs backward into a reused store, releases the step's nodes, and lets
/// AdamW write the new parameter values.
fn train(init: &Params<f64>, options: &Options) -> Run {
    let config = AdamWConfig {
        lr: options.lr,
        ..AdamWConfig::default()
    };
    println!(
        "\nTraining with AdamW (lr {}, beta1 {}, beta2 {}, eps {:e}, weight decay {}) for at most {} steps",
        config.lr, config.beta1, config.beta2, config.eps, config.weight_decay, options.steps
    );
    let g = Graph::new();
    let params = init.map(|x| g.var(x));
    let mark = g.mark();
    let mut adamw = AdamW::new(N_PARAMS, config);
    let mut grads = Gradients::new();
    let mut losses = Vec::new();
    let mut times = Vec::new();
    let mut below = [None; 2];
    let mut nodes_per_step = 0;
    let mut done = false;
    let start = Instant::now();
    let mut last_report = (0, start);
    for step in 0..options.steps {
        let t0 = Instant::now();
        let loss = transformer::loss(&params, &SENTENCE).mean;
        loss.backward_into(&mut grads);
        nodes_per_step = g.len() - N_PARAMS;
        let value = loss.value();
        g.release(mark);
        adamw.step(params.as_slice(), &grads);
        times.push(t0.elapsed());
        losses.push(value);

        for (slot, threshold) in below.iter_mut().zip([0.1, 0.01]) {
            if slot.is_none() && value < threshold {
                *slot = Some((step, start.elapsed()));
            }
        }
        if (step + 1) % options.every == 0 {
            let (since, when) = last_report;
            let rate = (step + 1 - since) as f64 / when.elapsed().as_secs_f64();
            println!(
                "  step {:>6}  loss {value:.6}  {rate:>8.0} steps/s",
                step + 1
            );
            last_report = (step + 1, Instant::now());
        }
        // The loss was computed before this step's update; check generation (plain f64,
        // cheap) once the loss is low enough.
        if value < TARGET_LOSS {
            let current = params.map(|x| x.value());
            if transformer::generate(&current) == SENTENCE {
                done = true;
                break;
            }
        }
    }
    let total = start.elapsed();
    times.sort();
    Run {
        median_step: times.get(times.len() / 2).copied().unwrap_or_default(),
        losses,
        total,
        below,
        params: params.map(|x| x.value()),
        nodes_per_step,
        done,
    }
}

fn print_training(run: &Run, options: &Options) {
    let steps = run.losses.len();
    println!(
        "\n{steps} steps in {:.2?} ({:.0} steps/s); median step (forward + backward + update) {:.1?}",
        run.total,
        steps as f64 / run.total.as_secs_f64(),
        run.median_step
    );
    println!(
        "  {} nodes recorded per step and released after it; {N_PARAMS} parameter nodes kept",
        run.nodes_per_step
    );
    for (threshold, below) in [0.1, 0.01].iter().zip(run.below) {
        match below {
            Some((step, at)) => {
                println!("  loss below {threshold} after {step} updates ({at:.2?})");
            }
            None => println!("  loss never fell below {threshold}"),
        }
    }
    let tokens = transformer::generate(&run.params);
    println!(
        "\nGreedy generation after <BOS>: {}",
        transformer::decode(&tokens)
    );
    if !run.done {
        println!(
            "(not yet the sentence with loss below {TARGET_LOSS} after {} steps: try more --steps or a larger --lr)",
            options.steps
        );
    }
    print_curve(&run.losses);
}

/// The loss curve as text: log10(loss) against the step.
fn print_curve(losses: &[f64]) {
    const WIDTH: usize = 64;
    const HEIGHT: usize = 12;
    if losses.is_empty() {
        return;
    }
    let logs: Vec<f64> = losses.iter().map(|l| l.log10()).collect();
    let (lo, hi) = logs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let span = (hi - lo).max(1e-12);
    let mut grid = vec![[' '; WIDTH]; HEIGHT];
    for (col, cell) in (0..WIDTH).map(|c| (c, c * losses.len() / WIDTH)) {
        if let Some(&y) = logs.get(cell) {
            let row = ((hi - y) / span * (HEIGHT - 1) as f64).round() as usize;
            grid[row][col] = '*';
        }
    }
    println!("\nLoss curve (log scale):");
    for (r, line) in grid.iter().enumerate() {
        let label = if r == 0 || r == HEIGHT - 1 || r == HEIGHT / 2 {
            let y = hi - span * r as f64 / (HEIGHT - 1) as f64;
            format!("{:>9.4}", 10f64.powf(y))
        } else {
            String::new()
        };
        println!("{label:>9} |{}", line.iter().collect::<String>());
    }
    println!("{:>9} +{}", "", "-".repeat(WIDTH));
    println!("{:>9}  0{:>w$}", "step", losses.len(), w = WIDTH - 1);
}

fn plot_loss_curve(losses: &[f64], options: &Options) -> Result<(), String> {
    let path = &options.plot;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let err = |e: &dyn std::fmt::Display| format!("plotting to {}: {e}", path.display());
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (lo, hi) = losses
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
    let (lo, hi) = if losses.is_empty() {
        (0.001, 10.0)
    } else {
        (lo * 0.8, hi * 1.25)
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("tiny transformer, AdamW lr {}: mean loss", options.lr),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0..losses.len().max(1), (lo..hi).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss (log scale)")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(losses.iter().copied().enumerate(), &BLUE))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
