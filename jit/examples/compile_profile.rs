use tapegrad::{Graph, Replay};
fn main() {
    let ops: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(10_000);
    let g = Graph::new();
    let x = g.var(0.5);
    let mut y = x;
    for _ in 0..ops / 4 {
        y = (y * (1.0 + 1e-7) + 1e-8).exp().ln();
    }
    let replay = Replay::new(y, &[x]);
    let _ = cranelift_codegen::timing::take_current();
    let c = tapegrad_jit::Compiled::new(&replay).unwrap();
    eprintln!("{:?} {:?}", c.compile_time(), c.stats());
    eprintln!("{}", cranelift_codegen::timing::take_current());
}
