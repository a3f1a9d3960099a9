//! A first, rough measure of what a node costs: the sizes of the handle types, and the
//! record, backward and release time per node on a 1,000,000-node chain, next to the same
//! arithmetic in plain `f64`. Run it in release:
//!
//! ```sh
//! cargo run --release --example chain_timing
//! ```
//!
//! The criterion benchmarks (`benches/criterion`) are the careful measurement; this is the
//! number the core's notes quote, and takes a second.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tapegrad::{Graph, NodeKey, Op, Var};

/// Two nodes per step: `y = y * r + c`.
const STEPS: usize = 500_000;
const NODES: usize = 2 * STEPS + 1;
const REPEATS: usize = 7;

fn main() {
    println!(
        "size_of::<Var>()     = {} bytes",
        std::mem::size_of::<Var<'_>>()
    );
    println!(
        "size_of::<NodeKey>() = {} bytes",
        std::mem::size_of::<NodeKey>()
    );
    println!("size_of::<Op>()      = {} bytes", std::mem::size_of::<Op>());

    let (r, c) = (black_box(1.0 + 1e-6), black_box(1e-3));
    let (mut plain, mut record, mut backward) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let mut release = Duration::MAX;
    let mut record_reserved = Duration::MAX;
    let mut heap = 0;
    // The minimum over a few runs: the least disturbed by the rest of the machine.
    for _ in 0..REPEATS {
        let start = Instant::now();
        let mut y = black_box(0.75_f64);
        for _ in 0..STEPS {
            y = y * r + c;
        }
        black_box(y);
        plain = plain.min(start.elapsed());

        let g = Graph::new();
        let start = Instant::now();
        let x = g.var(0.75);
        let mark = g.mark();
        let mut y = x;
        for _ in 0..STEPS {
            y = y * r + c;
        }
        record = record.min(start.elapsed());
        assert_eq!(g.len(), NODES);
        heap = g.heap_bytes();

        // The same with the storage reserved up front (Graph::with_capacity).
        let reserved = Graph::with_capacity(NODES);
        let start = Instant::now();
        let mut z = reserved.var(0.75);
        for _ in 0..STEPS {
            z = z * r + c;
        }
        record_reserved = record_reserved.min(start.elapsed());
        black_box(z.value());

        let start = Instant::now();
        let grads = y.backward();
        backward = backward.min(start.elapsed());
        // dy/dx = r^STEPS
        let want = r.powi(STEPS as i32);
        assert!((grads[x] - want).abs() <= 1e-9 * want);

        // Free every node but the input (what a training loop does after each step).
        let start = Instant::now();
        g.release(mark);
        release = release.min(start.elapsed());
        assert_eq!(g.len(), 1);
    }
    let per_node = |d: Duration| d.as_secs_f64() * 1e9 / NODES as f64;
    println!("chain of {NODES} nodes (y = y * r + c), best of {REPEATS}:");
    println!("  plain f64       {:6.2} ns/node", per_node(plain));
    println!("  record          {:6.2} ns/node", per_node(record));
    println!(
        "  record, reserved{:6.2} ns/node (Graph::with_capacity)",
        per_node(record_reserved)
    );
    println!("  backward        {:6.2} ns/node", per_node(backward));
    println!(
        "  record+backward {:6.2} ns/node ({:.1}x plain f64)",
        per_node(record + backward),
        (record + backward).as_secs_f64() / plain.as_secs_f64()
    );
    println!("  release         {:6.2} ns/node", per_node(release));
    println!(
        "  heap            {:6.1} bytes/node (capacity, after growth by doubling)",
        heap as f64 / NODES as f64
    );
}
