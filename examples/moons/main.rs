//! micrograd's demo (`demo.ipynb`) on `tapegrad::nn`: an MLP 2-16-16-1 learns the two
//! moons with an SVM max-margin loss and SGD, printing micrograd's own losses, and draws
//! the decision boundary.
//!
//! ```text
//! cargo run --release --example moons -- [--plot target/moons.svg]
//! ```
//!
//! The data (`data/moons.json`) is the set micrograd's notebook trains on: scikit-learn's
//! `make_moons(n_samples=100, noise=0.1)` after `np.random.seed(1337)`, labels -1 / +1.
//! The model and its training loop are in `model.rs`.

mod model;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use model::Model;
use plotters::prelude::*;
use tapegrad::nn::Params;

/// The two moons: points and labels (-1 or +1).
fn load() -> (Vec<[f64; 2]>, Vec<f64>) {
    let data: serde_json::Value =
        serde_json::from_str(include_str!("../../data/moons.json")).expect("valid JSON");
    let xs = data["X"]
        .as_array()
        .expect("X")
        .iter()
        .map(|p| [p[0].as_f64().expect("x"), p[1].as_f64().expect("y")])
        .collect();
    let ys = data["y"]
        .as_array()
        .expect("y")
        .iter()
        .map(|y| y.as_f64().expect("label"))
        .collect();
    (xs, ys)
}

/// The decision boundary as micrograd's notebook draws it: the sign of the score on a grid
/// over the points' range plus one, and the points coloured by label. micrograd's grid is
/// 0.25 wide, smoothed by contourf; a finer grid draws the same boundary without a contour
/// routine (each column's cells of one colour are one rectangle).
fn plot(
    path: &Path,
    model: &Model,
    params: &Params,
    xs: &[[f64; 2]],
    ys: &[f64],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("plotting to {}: {e}", path.display());
    let (lo, hi) = xs
        .iter()
        .fold(([f64::MAX; 2], [f64::MIN; 2]), |(lo, hi), p| {
            (
                [lo[0].min(p[0]), lo[1].min(p[1])],
                [hi[0].max(p[0]), hi[1].max(p[1])],
            )
        });
    let (x0, x1, y0, y1) = (lo[0] - 1.0, hi[0] + 1.0, lo[1] - 1.0, hi[1] + 1.0);
    let scale = 100.0; // pixels per unit
    let size = (((x1 - x0) * scale) as u32, ((y1 - y0) * scale) as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(&e))?;

    let p = params.view(); // evaluation: plain f64, no graph
    let h = 0.02;
    let (columns, rows) = (
        ((x1 - x0) / h).ceil() as usize,
        ((y1 - y0) / h).ceil() as usize,
    );
    let (positive_fill, negative_fill) = (RGBColor(0xf6, 0xc7, 0xa3), RGBColor(0xa9, 0xc6, 0xe8));
    let mut cells = Vec::new();
    for i in 0..columns {
        let gx = x0 + i as f64 * h;
        let positive = |j: usize| model.score(&p, [gx + h / 2.0, y0 + (j as f64 + 0.5) * h]) > 0.0;
        let mut start = 0;
        while start < rows {
            let side = positive(start);
            let end = (start..rows).find(|&j| positive(j) != side).unwrap_or(rows);
            let fill = if side { positive_fill } else { negative_fill };
            let corners = [(gx, y0 + start as f64 * h), (gx + h, y0 + end as f64 * h)];
            cells.push(Rectangle::new(corners, fill.filled()));
            start = end;
        }
    }
    chart.draw_series(cells).map_err(|e| err(&e))?;
    let points = xs.iter().zip(ys).map(|(x, &y)| {
        let fill = if y > 0.0 {
            RGBColor(0xd9, 0x5f, 0x02)
        } else {
            RGBColor(0x1f, 0x5f, 0xa8)
        };
        EmptyElement::at((x[0], x[1]))
            + Circle::new((0, 0), 5, fill.filled())
            + Circle::new((0, 0), 5, BLACK.stroke_width(1))
    });
    chart.draw_series(points).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// `--plot PATH` (default `target/moons.svg`), or `None` for `--help`.
fn parse_args() -> Result<Option<PathBuf>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut plot = PathBuf::from("target/moons.svg");
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("plot") => plot = parser.value()?.into(),
            Long("help") | Short('h') => return Ok(None),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some(plot))
}

const USAGE: &str = "usage: moons [--plot PATH]";

fn main() -> ExitCode {
    let plot_path = match parse_args() {
        Ok(Some(path)) => path,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("moons: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (xs, ys) = load();
    let mut params = Params::new();
    let model = Model::new(&mut params);
    println!("{} parameters", params.len());
    let trained = model::train(&mut params, &model, (&xs, &ys), |k, loss, accuracy| {
        // As micrograd prints them: Python's repr of the floats (shortest round trip).
        println!("step {k} loss {loss}, accuracy {:?}%", accuracy * 100.0);
    });
    if let Err(e) = trained {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = plot(&plot_path, &model, &params, &xs, &ys) {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    println!("decision boundary: {}", plot_path.display());
    ExitCode::SUCCESS
}
