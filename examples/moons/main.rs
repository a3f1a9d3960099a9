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

use std::fmt::Write as _;
use std::process::ExitCode;

use model::Model;
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
/// over the points' range plus one, and the points coloured by label.
fn svg(model: &Model, params: &Params, xs: &[[f64; 2]], ys: &[f64]) -> String {
    let (lo, hi) = xs
        .iter()
        .fold(([f64::MAX; 2], [f64::MIN; 2]), |(lo, hi), p| {
            (
                [lo[0].min(p[0]), lo[1].min(p[1])],
                [hi[0].max(p[0]), hi[1].max(p[1])],
            )
        });
    let (x0, x1, y0, y1) = (lo[0] - 1.0, hi[0] + 1.0, lo[1] - 1.0, hi[1] + 1.0);
    // micrograd's grid is 0.25 wide, smoothed by contourf; a finer grid draws the same
    // boundary without a contour routine. Each column's cells of one colour are one rect.
    let (h, scale) = (0.02, 100.0);
    let (width, height) = ((x1 - x0) * scale, (y1 - y0) * scale);
    let to_px = |x: f64, y: f64| ((x - x0) * scale, (y1 - y) * scale);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\">\n<g shape-rendering=\"crispEdges\">\n"
    );
    let p = params.view(); // evaluation: plain f64, no graph
    let (columns, rows) = (
        ((x1 - x0) / h).ceil() as usize,
        ((y1 - y0) / h).ceil() as usize,
    );
    for i in 0..columns {
        let gx = x0 + i as f64 * h;
        let positive = |j: usize| model.score(&p, [gx + h / 2.0, y0 + (j as f64 + 0.5) * h]) > 0.0;
        let mut start = 0;
        while start < rows {
            let side = positive(start);
            let end = (start..rows).find(|&j| positive(j) != side).unwrap_or(rows);
            let fill = if side { "#f6c7a3" } else { "#a9c6e8" };
            let (px, py) = to_px(gx, y0 + end as f64 * h);
            let (w, ht) = (h * scale, (end - start) as f64 * h * scale);
            writeln!(out, "<rect x=\"{px:.1}\" y=\"{py:.1}\" width=\"{w:.1}\" height=\"{ht:.1}\" fill=\"{fill}\"/>").unwrap();
            start = end;
        }
    }
    out.push_str("</g>\n");
    for (x, &y) in xs.iter().zip(ys) {
        let (px, py) = to_px(x[0], x[1]);
        let fill = if y > 0.0 { "#d95f02" } else { "#1f5fa8" };
        writeln!(
            out,
            "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"5\" fill=\"{fill}\" stroke=\"black\"/>"
        )
        .unwrap();
    }
    out.push_str("</svg>\n");
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plot = match args.as_slice() {
        [] => "target/moons.svg".to_owned(),
        [flag, path] if flag == "--plot" => path.clone(),
        _ => {
            eprintln!("usage: moons [--plot PATH]");
            return ExitCode::FAILURE;
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
    if let Err(e) = std::fs::write(&plot, svg(&model, &params, &xs, &ys)) {
        eprintln!("writing {plot}: {e}");
        return ExitCode::FAILURE;
    }
    println!("decision boundary: {plot}");
    ExitCode::SUCCESS
}
