use std::collections::BTreeMap;
use tapegrad::models::transformer::{self, Params};
use tapegrad::{Graph, Replay};
fn main() {
    let x = Params::series_init().as_slice().to_vec();
    let g = Graph::new();
    let xs = g.vars(&x);
    let loss = transformer::loss(&Params::from_flat(xs.clone()), &transformer::SENTENCE).mean;
    let replay = Replay::new(loss, &xs);
    let p = replay.program();
    let mut h: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for n in 0..p.nodes() {
        let e = h.entry(format!("{}", p.op(n))).or_default();
        e.0 += 1;
        e.1 += p.operands(n).len();
    }
    for (k, (n, e)) in h {
        println!("{k}: {n} nodes, {e} edges");
    }
    let c = tapegrad_jit::Compiled::new(&replay).unwrap();
    println!("{:?} {:?}", c.stats(), c.compile_time());
}
