//! What preaccumulation (`Graph::fuse`, `Scalar::fused`) saves on two models: the tape
//! nodes, edges and bytes of one training step, and the time of a step (record the loss,
//! backward, read every gradient, release), plain against fused.
//!
//! ```text
//! cargo run --release -p tapegrad-models --example preaccumulation [-- STEPS]
//! ```
//!
//! The models: the series' tiny transformer (`models::transformer::loss` against
//! `loss_fused`: attention outputs, bias + GELU and LayerNorm fused), and a microgpt-style
//! model written here (one layer, one head, RMSNorm, ReLU MLP, the cross-entropy written
//! out as micrograd writes it), fused the same way (RMSNorm's scale, attention outputs,
//! the cross-entropy). Times are medians over STEPS steps (default 400) of each, run
//! alternately in blocks of 20 on the same graph; the machine may be shared, so compare
//! the two columns of one run.

use std::time::Instant;

use tapegrad::pyrandom::PyRandom;
use tapegrad::{Gradients, Graph, Scalar, Statement, Var};
use tapegrad_models::transformer::{self, Params, SENTENCE};

/// A tape's size: nodes, edges, and the bytes they take in the tape's arrays (value 8, op
/// code 1 and edge offset 4 per node; operand 4 and partial 8 per edge).
#[derive(Clone, Copy, Debug)]
struct Size {
    nodes: usize,
    edges: usize,
}

impl Size {
    fn of(g: &Graph, base: Size) -> Size {
        Size {
            nodes: g.len() - base.nodes,
            edges: g.edge_count() - base.edges,
        }
    }
    /// The tape's bytes: per node a value (8), an op code (1), an edge offset (4) and a
    /// generation (4); per edge a position (4) and a partial (8).
    fn bytes(self) -> usize {
        self.nodes * 17 + self.edges * 12
    }
}

/// Records a step's loss with `step`, then backward into `grads` and reads every gradient.
fn measure<'g>(
    g: &'g Graph,
    params: &[Var<'g>],
    steps: usize,
    plain: &dyn Fn() -> Var<'g>,
    fused: &dyn Fn() -> Var<'g>,
) -> [(Size, f64, f64); 2] {
    let base = Size {
        nodes: g.len(),
        edges: g.edge_count(),
    };
    let mark = g.mark();
    let mut grads = Gradients::new();
    let mut sizes = [base; 2];
    let mut losses = [0.0; 2];
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut sink = 0.0;
    for block in 0..steps.div_ceil(20) * 2 {
        let which = block % 2;
        let record = if which == 0 { plain } else { fused };
        for _ in 0..20 {
            let start = Instant::now();
            let loss = record();
            loss.backward_into(&mut grads);
            sink += grads.wrt_all(params)[0];
            sizes[which] = Size::of(g, base);
            losses[which] = loss.value();
            g.release(mark);
            times[which].push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    assert!(sink.is_finite());
    let median = |t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    [
        (sizes[0], median(&mut times[0]), losses[0]),
        (sizes[1], median(&mut times[1]), losses[1]),
    ]
}

fn report(name: &str, rows: [(Size, f64, f64); 2]) {
    let [(p, pt, pl), (f, ft, fl)] = rows;
    println!("{name}: loss {pl} (plain), {fl} (fused)");
    println!(
        "  {:<8} {:>7} {:>7} {:>10} {:>12}",
        "", "nodes", "edges", "tape bytes", "µs per step"
    );
    println!(
        "  {:<8} {:>7} {:>7} {:>10} {:>12.1}",
        "plain",
        p.nodes,
        p.edges,
        p.bytes(),
        pt
    );
    println!(
        "  {:<8} {:>7} {:>7} {:>10} {:>12.1}",
        "fused",
        f.nodes,
        f.edges,
        f.bytes(),
        ft
    );
    let ratio = |a: usize, b: usize| a as f64 / b as f64;
    println!(
        "  fused/plain: nodes {:.2}, edges {:.2}, bytes {:.2}, time {:.2}",
        ratio(f.nodes, p.nodes),
        ratio(f.edges, p.edges),
        ratio(f.bytes(), p.bytes()),
        ft / pt
    );
}

// ---------------------------------------------------------------------------------------
// A microgpt-style model: one layer, one head, written over `Scalar`.

const VOCAB: usize = 27;
const EMBD: usize = 16;
const BLOCK: usize = 8;
const MLP: usize = 4 * EMBD;
/// The tensors in order: wte, wpe, wq, wk, wv, wo, fc1, fc2, lm_head.
const SHAPES: [(usize, usize); 9] = [
    (VOCAB, EMBD),
    (BLOCK, EMBD),
    (EMBD, EMBD),
    (EMBD, EMBD),
    (EMBD, EMBD),
    (EMBD, EMBD),
    (MLP, EMBD),
    (EMBD, MLP),
    (VOCAB, EMBD),
];

/// `scale = (mean(x^2) + 1e-5)^-1/2`, RMSNorm's one number per row.
struct RmsScale;

impl Statement for RmsScale {
    fn eval<T: Scalar>(&self, x: &[T]) -> T {
        let squares: Vec<T> = x.iter().map(|&v| v * v).collect();
        (T::sum(&squares) / x.len() as f64 + 1e-5).powf(x[0].lift(-0.5))
    }
}

/// `softmax(s / sqrt(EMBD)) . v` over `[s.., v..]`, the max shift a constant (read
/// untracked: it decides no branch).
struct Attend;

impl Statement for Attend {
    fn eval<T: Scalar>(&self, xs: &[T]) -> T {
        let (s, v) = xs.split_at(xs.len() / 2);
        let s: Vec<T> = s.iter().map(|&x| x / (EMBD as f64).sqrt()).collect();
        let max = s
            .iter()
            .map(Scalar::untracked_value)
            .fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<T> = s.iter().map(|&x| (x - max).exp()).collect();
        let total = T::sum(&e);
        let w: Vec<T> = e.iter().map(|&x| x / total).collect();
        T::dot(&w, v)
    }
}

/// `-ln softmax(logits)[target]` written out: the target's operand comes first.
struct CrossEntropy;

impl Statement for CrossEntropy {
    fn eval<T: Scalar>(&self, xs: &[T]) -> T {
        let max = xs
            .iter()
            .map(Scalar::untracked_value)
            .fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<T> = xs.iter().map(|&x| (x - max).exp()).collect();
        -(e[0] / T::sum(&e)).ln()
    }
}

fn fused_or<T: Scalar, S: Statement>(fuse: bool, s: &S, xs: &[T]) -> T {
    if fuse { T::fused(s, xs) } else { s.eval(xs) }
}

fn rmsnorm<T: Scalar>(x: &[T], fuse: bool) -> Vec<T> {
    let scale = fused_or(fuse, &RmsScale, x);
    x.iter().map(|&v| v * scale).collect()
}

fn linear<T: Scalar>(w: &[T], rows: usize, x: &[T]) -> Vec<T> {
    let cols = x.len();
    (0..rows)
        .map(|r| T::dot(&w[r * cols..(r + 1) * cols], x))
        .collect()
}

/// The mean next-token loss of `tokens` (positions 0..n-1 predict 1..n).
fn microgpt_loss<T: Scalar>(p: &[Vec<T>], tokens: &[usize], fuse: bool) -> T {
    let (mut keys, mut values): (Vec<Vec<T>>, Vec<Vec<T>>) = (Vec::new(), Vec::new());
    let mut losses = Vec::new();
    for (t, pair) in tokens.windows(2).enumerate() {
        let (token, target) = (pair[0], pair[1]);
        let x: Vec<T> = (0..EMBD)
            .map(|i| p[0][token * EMBD + i] + p[1][t * EMBD + i])
            .collect();
        let x = rmsnorm(&x, fuse);
        let h = rmsnorm(&x, fuse);
        let (q, k, v) = (
            linear(&p[2], EMBD, &h),
            linear(&p[3], EMBD, &h),
            linear(&p[4], EMBD, &h),
        );
        keys.push(k);
        values.push(v);
        let scores: Vec<T> = keys.iter().map(|k| T::dot(&q, k)).collect();
        let attended: Vec<T> = (0..EMBD)
            .map(|d| {
                let mut operands = scores.clone();
                operands.extend(values.iter().map(|v| v[d]));
                fused_or(fuse, &Attend, &operands)
            })
            .collect();
        let x: Vec<T> = linear(&p[5], EMBD, &attended)
            .iter()
            .zip(&x)
            .map(|(&a, &r)| a + r)
            .collect();
        let h = rmsnorm(&x, fuse);
        let hidden: Vec<T> = linear(&p[6], MLP, &h).into_iter().map(T::relu).collect();
        let x: Vec<T> = linear(&p[7], EMBD, &hidden)
            .iter()
            .zip(&x)
            .map(|(&a, &r)| a + r)
            .collect();
        let mut logits = linear(&p[8], VOCAB, &x);
        logits.swap(0, target);
        losses.push(fused_or(fuse, &CrossEntropy, &logits));
    }
    T::sum(&losses) / losses.len() as f64
}

/// The one optional argument: the number of steps to time (default 400).
fn parse_steps() -> Result<usize, lexopt::Error> {
    use lexopt::prelude::*;
    let mut steps = 400;
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Value(n) => steps = n.parse()?,
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(steps)
}

fn main() {
    let steps = match parse_steps() {
        Ok(steps) => steps,
        Err(e) => {
            eprintln!("preaccumulation: {e}\nusage: preaccumulation [STEPS]");
            std::process::exit(2);
        }
    };

    let g = Graph::new();
    let p = Params::series_init().map(|x| g.var(x));
    let params = p.as_slice().to_vec();
    let rows = measure(
        &g,
        &params,
        steps,
        &|| transformer::loss(&p, &SENTENCE).mean,
        &|| transformer::loss_fused(&p, &SENTENCE).mean,
    );
    report("series transformer (loss vs loss_fused, 5 tokens)", rows);

    let h = Graph::new();
    let mut rng = PyRandom::seed(42);
    let weights: Vec<Vec<Var<'_>>> = SHAPES
        .iter()
        .map(|&(r, c)| {
            let w: Vec<f64> = (0..r * c).map(|_| rng.gauss(0.0, 0.08)).collect();
            h.vars(&w)
        })
        .collect();
    let all: Vec<Var<'_>> = weights.concat();
    let tokens = [0, 5, 12, 12, 15, 26, 3, 7, 0];
    let rows = measure(
        &h,
        &all,
        steps,
        &|| microgpt_loss(&weights, &tokens, false),
        &|| microgpt_loss(&weights, &tokens, true),
    );
    report("microgpt-style (1 layer, 1 head, 8 positions)", rows);
}
