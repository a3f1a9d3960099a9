//! Second order through one n-ary node costs time linear in its operands: the gradient of
//! the gradient (`Var::grad` twice), `higher::hvp`, `higher::hessian` and `Replay::hvp`,
//! through a `sum`, a `dot`, a `logsumexp`, an `amax` and a dot block (a weight matrix's
//! products, stored without edges), from 1,000 to 1,000,000 operands. Run it in release:
//!
//! ```sh
//! cargo run --release --example second_order_scaling
//! cargo run --release --example second_order_scaling -- --max 100000   # a quicker table
//! cargo run --release --example second_order_scaling -- --node logsumexp --route Replay::hvp
//! ```
//!
//! Each cell is nanoseconds per operand: the median of a few runs (3 to 9, after one that
//! warms the graph's memory), recording the function included. A linear route keeps a row flat as the operands grow 1,000-fold
//! (cache misses, once the graph outgrows the caches, raise it by a small factor); a
//! quadratic one would grow 4x from one column to the next, 1,000x across the table. The
//! last column is the largest cell over the smallest. Timings move with the machine's
//! load; `valgrind --tool=callgrind` on two sizes (`--sizes 1000` and `--sizes 8000`, with
//! `--repeats 1`) counts instructions instead, which grow 8x for 8x the operands.
//!
//! The function is `f(x, y) = op(t_1, ..., t_n)` with `t_i = sin(x c_i + y d_i)` (for the
//! dot, `t_i` dotted with `t_i / 2 + x`; for `amax`, its square; for the dot block, the
//! products of `[x, y]` with an `n/2 x 2` weight matrix of inputs, squared and summed): two
//! inputs, `n` operands, so the Hessian is 2 x 2 and every route is a few sweeps over a
//! tape of `O(n)` nodes.

use std::hint::black_box;
use std::time::Instant;

use tapegrad::linalg::{Matrix, Pairing};
use tapegrad::{Graph, Replay, ReplayWorkspace, Scalar, Var, higher};

/// The n-ary node the function goes through.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Node {
    Sum,
    Dot,
    LogSumExp,
    Amax,
    DotBlock,
}

impl Node {
    const ALL: [Node; 5] = [
        Node::Sum,
        Node::Dot,
        Node::LogSumExp,
        Node::Amax,
        Node::DotBlock,
    ];

    fn name(self) -> &'static str {
        match self {
            Node::Sum => "sum",
            Node::Dot => "dot",
            Node::LogSumExp => "logsumexp",
            Node::Amax => "amax",
            Node::DotBlock => "dot block",
        }
    }
}

/// The second-order route measured.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Route {
    GradOfGrad,
    Hvp,
    Hessian,
    ReplayHvp,
}

impl Route {
    const ALL: [Route; 4] = [
        Route::GradOfGrad,
        Route::Hvp,
        Route::Hessian,
        Route::ReplayHvp,
    ];

    fn name(self) -> &'static str {
        match self {
            Route::GradOfGrad => "grad of grad",
            Route::Hvp => "higher::hvp",
            Route::Hessian => "higher::hessian",
            Route::ReplayHvp => "Replay::hvp",
        }
    }
}

/// `f(x, y)` over `n` operands of `node`, recorded on `g`.
fn record<'g>(g: &'g Graph, node: Node, n: usize, xy: &[Var<'g>]) -> Var<'g> {
    let (x, y) = (xy[0], xy[1]);
    let coefficient = |i: usize| 0.5 + (i % 97) as f64 / 97.0;
    let terms = |count: usize| -> Vec<Var<'g>> {
        (0..count)
            .map(|i| (x * coefficient(i) + y * coefficient(i + 13)).sin())
            .collect()
    };
    match node {
        Node::Sum => g.sum(terms(n)),
        Node::Dot => {
            let t = terms(n / 2);
            let u: Vec<Var> = t.iter().map(|&t| t * 0.5 + x).collect();
            g.dot(&t, &u)
        }
        Node::LogSumExp => g.logsumexp(terms(n)),
        Node::Amax => {
            let m = g.amax(terms(n));
            m * m
        }
        Node::DotBlock => {
            let w: Vec<f64> = (0..n).map(coefficient).collect();
            let w = g.inputs(&w);
            let v = [x, y];
            let out = Var::dots(
                Matrix::new(&v, 1, 2),
                Matrix::new(&w, n / 2, 2),
                Pairing::Rows,
            );
            g.sum(out.iter().map(|&o| o * o))
        }
    }
}

/// One run of `route` through `node` with `n` operands on `g` (inputs `xy`), recording
/// included: seconds. Everything it records is released, so the next run reuses the warm
/// memory.
fn run<'g>(g: &'g Graph, xy: &[Var<'g>], node: Node, route: Route, n: usize) -> f64 {
    let v = [1.0, -0.5];
    let mark = g.mark();
    let start = Instant::now();
    let f = record(g, node, n, xy);
    match route {
        Route::GradOfGrad => {
            let d = f.grad(xy);
            let dd = d[0].grad(xy);
            black_box(dd[1].untracked_value());
        }
        Route::Hvp => {
            black_box(higher::hvp(f, xy, &v));
        }
        Route::Hessian => {
            black_box(higher::hessian(f, xy));
        }
        Route::ReplayHvp => {
            let replay = Replay::new(f, xy);
            let mut out = [0.0; 2];
            replay
                .hvp(&[0.4, -0.6], &v, &mut ReplayWorkspace::new(), &mut out)
                .expect("no guard in f");
            black_box(out);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    g.release(mark);
    seconds
}

/// The median of `repeats` runs after one to warm the graph's memory.
fn median_run(node: Node, route: Route, n: usize, repeats: usize) -> f64 {
    let g = Graph::new();
    let xy = g.vars(&[0.3, -0.7]);
    run(&g, &xy, node, route, n);
    let mut times: Vec<f64> = (0..repeats).map(|_| run(&g, &xy, node, route, n)).collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

const USAGE: &str = "usage: second_order_scaling [--max N] [--sizes N,N,..] [--node NAME] \
                     [--route NAME] [--repeats N]";

struct Options {
    sizes: Vec<usize>,
    node: Option<String>,
    route: Option<String>,
    repeats: Option<usize>,
}

fn parse_args() -> Result<Options, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Options {
        sizes: vec![1_000, 4_000, 16_000, 64_000, 256_000, 1_000_000],
        node: None,
        route: None,
        repeats: None,
    };
    let mut max = usize::MAX;
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Long("max") => max = parser.value()?.parse()?,
            Long("sizes") => {
                let list: String = parser.value()?.parse()?;
                o.sizes = list
                    .split(',')
                    .map(|s| s.parse().map_err(|_| format!("not a size: {s}")))
                    .collect::<Result<_, _>>()?;
            }
            Long("node") => o.node = Some(parser.value()?.parse()?),
            Long("route") => o.route = Some(parser.value()?.parse()?),
            Long("repeats") => o.repeats = Some(parser.value()?.parse()?),
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(arg.unexpected()),
        }
    }
    o.sizes.retain(|&n| n <= max);
    Ok(o)
}

fn main() {
    let o = parse_args().unwrap_or_else(|e| {
        eprintln!("second_order_scaling: {e}\n{USAGE}");
        std::process::exit(2);
    });
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; time it with --release");
    }
    print!("| node | route |");
    for n in &o.sizes {
        print!(" {n} |");
    }
    println!(" largest / smallest |");
    print!("|---|---|");
    for _ in &o.sizes {
        print!("--:|");
    }
    println!("--:|");
    for node in Node::ALL {
        if o.node.as_deref().is_some_and(|name| name != node.name()) {
            continue;
        }
        for route in Route::ALL {
            if o.route.as_deref().is_some_and(|name| name != route.name()) {
                continue;
            }
            print!("| {} | {} |", node.name(), route.name());
            let mut per_operand = Vec::new();
            for &n in &o.sizes {
                let repeats = o.repeats.unwrap_or((3_000_000 / n).clamp(3, 9));
                let ns = median_run(node, route, n, repeats) / n as f64 * 1e9;
                per_operand.push(ns);
                print!(" {ns:.0} |");
                use std::io::Write;
                std::io::stdout().flush().ok();
            }
            let (lo, hi) = per_operand
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(lo, hi), &t| {
                    (lo.min(t), hi.max(t))
                });
            println!(" {:.1} |", hi / lo);
        }
    }
}
