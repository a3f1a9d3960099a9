use tapegrad::{Graph, Replay};
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(4);
    let g = Graph::new();
    let x = g.vars(&(0..n).map(|i| 0.5 + i as f64).collect::<Vec<_>>());
    let term = |i: usize| {
        let t1 = x[i] - 1.0;
        let t2 = x[i + 1] - x[i] * x[i];
        t1 * t1 + t2 * t2 * 100.0
    };
    let mut sum = term(0);
    for i in 1..n - 1 {
        sum = sum + term(i);
    }
    let replay = Replay::new(sum, &x);
    let c = tapegrad_jit::Compiled::new(&replay).unwrap();
    eprintln!("{:?}", c.stats());
}
