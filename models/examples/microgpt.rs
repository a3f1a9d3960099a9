//! Karpathy's microgpt on tapegrad, bit for bit: trains the character model on names (one
//! document per step, Adam, 1,000 steps), prints the reference's lines, then samples names.
//!
//! ```text
//! cargo run --release -p tapegrad-models --example microgpt
//! cargo run --release -p tapegrad-models --example microgpt -- --trace target/trace.json --save target/microgpt.safetensors
//! cargo run --release -p tapegrad-models --example microgpt -- --load target/microgpt.safetensors --samples 5
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use tapegrad::Graph;
use tapegrad::nn::{Params, StateDict};
use tapegrad_models::microgpt::{self, Microgpt, Trainer};

const USAGE: &str = "usage: cargo run --release -p tapegrad-models --example microgpt -- [options]

  --steps N          training steps (default 1000; the learning rate decays to 0 at N)
  --seed S           Python's random.seed (default 42)
  --data PATH        one document per line (default the crate's data/names.txt)
  --samples N        names to sample after training (default 20)
  --temperature T    sampling temperature (default 0.5)
  --trace PATH       write every step's loss as a JSON array, full precision
  --plot PATH        the loss curve as SVG (default target/microgpt_loss.svg)
  --save PATH        write the trained parameters (safetensors, by name with shapes)
  --load PATH        sample from saved parameters instead of training
  --batch B          documents per step, gradients averaged (default 1, the reference)
  --threads T        worker threads for the batch (default 1; any T gives the same bits)
  --no-progress      no progress bar";

struct Options {
    steps: usize,
    seed: u64,
    data: PathBuf,
    samples: usize,
    temperature: f64,
    trace: Option<PathBuf>,
    plot: PathBuf,
    save: Option<PathBuf>,
    load: Option<PathBuf>,
    progress: bool,
    batch: usize,
    threads: usize,
}

/// The options, or `None` for `--help`.
fn parse_args() -> Result<Option<Options>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Options {
        steps: 1000,
        seed: 42,
        data: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/names.txt")),
        samples: 20,
        temperature: 0.5,
        trace: None,
        plot: PathBuf::from("target/microgpt_loss.svg"),
        save: None,
        load: None,
        progress: true,
        batch: 1,
        threads: 1,
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
            Long("steps") => o.steps = positive("--steps", parser.value()?.parse()?)?,
            Long("seed") => o.seed = parser.value()?.parse()?,
            Long("samples") => o.samples = parser.value()?.parse()?,
            Long("temperature") => {
                o.temperature = parser.value()?.parse()?;
                if !(o.temperature.is_finite() && o.temperature > 0.0) {
                    return Err("--temperature takes a positive number".into());
                }
            }
            Long("data") => o.data = parser.value()?.into(),
            Long("trace") => o.trace = Some(parser.value()?.into()),
            Long("plot") => o.plot = parser.value()?.into(),
            Long("save") => o.save = Some(parser.value()?.into()),
            Long("load") => o.load = Some(parser.value()?.into()),
            Long("batch") => o.batch = positive("--batch", parser.value()?.parse()?)?,
            Long("threads") => o.threads = positive("--threads", parser.value()?.parse()?)?,
            Long("no-progress") => o.progress = false,
            Long("help") | Short('h') => return Ok(None),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some(o))
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

fn run(o: &Options) -> Result<(), String> {
    let text = std::fs::read_to_string(&o.data)
        .map_err(|e| format!("reading {}: {e}", o.data.display()))?;
    let (docs, tokenizer, mut rng) = microgpt::prepare(&text, o.seed);
    if docs.is_empty() {
        return Err(format!("{} has no documents", o.data.display()));
    }
    println!("num docs: {}", docs.len());
    println!("vocab size: {}", tokenizer.vocab_size());
    // The initial weights are drawn either way: sampling continues the same stream.
    let (model, initial) = Microgpt::init(tokenizer.vocab_size(), &mut rng);
    println!("num params: {}", initial.len());

    let params = match &o.load {
        Some(path) => load(path, initial)?,
        None => train(o, &docs, &tokenizer, model.clone(), initial)?,
    };
    if let Some(path) = &o.save {
        params
            .state_dict()
            .save_safetensors(path)
            .map_err(|e| e.to_string())?;
    }

    println!("\n--- inference (new, hallucinated names) ---");
    for i in 0..o.samples {
        let name = model.sample(&params.view(), &tokenizer, &mut rng, o.temperature);
        println!("sample {:2}: {name}", i + 1);
    }
    Ok(())
}

fn train(
    o: &Options,
    docs: &[String],
    tokenizer: &microgpt::Tokenizer,
    model: Microgpt,
    initial: Params,
) -> Result<Params, String> {
    let graph = Graph::new();
    let mut trainer = Trainer::from_params(&graph, model, initial, o.steps);
    let bar = if o.progress {
        ProgressBar::new(o.steps as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps, {per_sec}, eta {eta} | {msg}")
            .map_err(|e| e.to_string())?,
    );
    let start = Instant::now();
    let mut losses = Vec::with_capacity(o.steps);
    for step in 0..o.steps {
        let loss = if o.batch == 1 && o.threads == 1 {
            trainer.step(&tokenizer.encode(&docs[step % docs.len()]))
        } else {
            let batch: Vec<Vec<usize>> = (0..o.batch)
                .map(|i| tokenizer.encode(&docs[(step * o.batch + i) % docs.len()]))
                .collect();
            trainer.step_batch(&batch, o.threads)
        };
        losses.push(loss);
        bar.set_message(format!("loss {loss:.4}"));
        bar.inc(1);
        if step < 3 || (step + 1) % 100 == 0 {
            bar.suspend(|| println!("step {:4} / {:4} | loss {loss:.4}", step + 1, o.steps));
        }
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "trained {} steps of {} document(s) on {} thread(s) in {seconds:.2} s ({:.1} us/step)",
        o.steps,
        o.batch,
        o.threads,
        seconds * 1e6 / o.steps as f64,
    );
    if let Some(path) = &o.trace {
        let body: Vec<String> = losses.iter().map(|x| format!("{x:?}")).collect();
        write(path, &format!("[{}]\n", body.join(",\n")))?;
    }
    plot(&o.plot, &losses)?;
    Ok(trainer.into_parts().1)
}

fn write(path: &PathBuf, contents: &str) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Saved parameters into `params` (the freshly initialised store of the data's model):
/// every tensor by name, with its shape checked. (The file's errors name it already.)
fn load(path: &PathBuf, mut params: Params) -> Result<Params, String> {
    let sd = StateDict::load_safetensors(path).map_err(|e| e.to_string())?;
    params
        .load_state_dict(&sd)
        .map_err(|e| format!("loading {}: {e}", path.display()))?;
    Ok(params)
}

fn plot(path: &PathBuf, losses: &[f64]) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let err = |e: &dyn std::fmt::Display| format!("plotting to {}: {e}", path.display());
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let hi = losses.iter().copied().fold(1.0, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption("microgpt on names: loss per step", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0..losses.len().max(1), 0.0..hi)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()
        .map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(
            losses.iter().copied().enumerate(),
            &BLUE.mix(0.35),
        ))
        .map_err(|e| err(&e))?;
    // A 50-step moving average, to see the trend through one-document noise.
    let window = 50;
    let smooth = (0..losses.len()).map(|i| {
        let from = i.saturating_sub(window - 1);
        let w = &losses[from..=i];
        (i, w.iter().sum::<f64>() / w.len() as f64)
    });
    chart
        .draw_series(LineSeries::new(smooth, RED.stroke_width(2)))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
