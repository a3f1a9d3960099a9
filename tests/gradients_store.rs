//! The `Gradients` store: filled again and again by `backward_into` with no stale values,
//! read by `wrt`, `wrt_all`, `try_wrt` and indexing, and holding the gradients of
//! constant nodes too.

use approx::assert_relative_eq;
use tapegrad::{Error, Gradients, Graph, Var};

/// `backward` and `backward_into` give the same number for every node.
fn assert_same(a: &Gradients, b: &Gradients, nodes: &[Var<'_>]) {
    for &x in nodes {
        assert_eq!(a[x], b[x], "{x:?}");
    }
}

/// One store, filled by outputs of different sizes in turn: each fill is exactly what a
/// fresh `backward` gives, with nothing left over from the previous fill.
#[test]
fn backward_into_refills_the_store_with_no_stale_values() {
    let g = Graph::new();
    let x = g.var(0.5);
    let w = g.var(-1.5);
    let mut chain = vec![x];
    for _ in 0..1_000 {
        let last = *chain.last().expect("not empty");
        chain.push(last * w + 1.0);
    }
    let long = *chain.last().expect("not empty");
    let short = x * 4.0; // recorded after the chain, depends on x only
    let mut nodes = vec![x, w, short];
    nodes.extend(&chain);

    let mut store = Gradients::new();
    long.backward_into(&mut store);
    assert_same(&store, &long.backward(), &nodes);
    // long = w^1000 x + (geometric terms in w): d/dx = w^1000.
    assert_relative_eq!(store[x], (-1.5f64).powi(1_000), max_relative = 1e-12);
    assert_ne!(store[w], 0.0);
    assert_eq!(store[short], 0.0);

    // A short output after the long one: w's large gradient must not survive.
    short.backward_into(&mut store);
    assert_same(&store, &short.backward(), &nodes);
    assert_eq!((store[x], store[w], store[short]), (4.0, 0.0, 1.0));
    assert_eq!(store[long], 0.0);

    // An early node as the root: everything after it reads 0.
    chain[1].backward_into(&mut store);
    assert_eq!((store[x], store[w]), (-1.5, 0.5)); // d(wx + 1)/dx = w, d/dw = x
    assert_eq!(store[chain[2]], 0.0);
    assert_eq!(store[short], 0.0);

    // And back to the long one: identical to the first fill.
    long.backward_into(&mut store);
    assert_same(&store, &long.backward(), &nodes);
}

/// A store moved from one graph to another answers for the new graph only.
#[test]
fn backward_into_a_store_from_another_graph() {
    let (g, h) = (Graph::new(), Graph::new());
    let x = g.var(2.0);
    let y = h.var(3.0);
    let mut store = Gradients::new();
    (x * x).backward_into(&mut store);
    assert_eq!(store[x], 4.0);
    y.exp().backward_into(&mut store);
    assert_eq!(store[y], 3f64.exp());
    assert_eq!(
        store.try_wrt(x),
        Err(Error::ForeignHandle {
            what: "Var",
            owner: g.id(),
            used_with: h.id(),
        })
    );
}

/// Reading a store that no backward has filled is an error that says so, not a number.
#[test]
fn reading_an_empty_store_is_an_error() {
    let g = Graph::new();
    let x = g.var(1.0);
    for store in [Gradients::new(), Gradients::default()] {
        let Err(Error::BadOperands { op, why }) = store.try_wrt(x) else {
            panic!("expected an error")
        };
        assert_eq!(op, "Gradients");
        assert!(why.contains("holds no gradients"), "{why}");
    }
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Gradients::new()[x]))
        .expect_err("index panics");
    let message = panic.downcast_ref::<String>().expect("a formatted message");
    assert!(message.contains("holds no gradients"), "{message}");
}

#[test]
fn wrt_all_keeps_order_and_duplicates() {
    let g = Graph::new();
    let xs = g.vars(&[1.0, 2.0, 3.0]);
    let unused = g.var(9.0);
    // y = x0 x1^2 x2^3: d/dx0 = x1^2 x2^3 = 108, d/dx1 = 2 x0 x1 x2^3 = 108,
    // d/dx2 = 3 x0 x1^2 x2^2 = 108 (the point is chosen so; the order is checked below).
    let y = xs[0] * xs[1].powi(2) * xs[2].powi(3);
    let later = y * 2.0;
    let grads = y.backward();
    assert_eq!(grads.wrt_all(&xs), vec![108.0, 108.0, 108.0]);
    // Another point where the three differ: order matters.
    let g2 = Graph::new();
    let zs = g2.vars(&[2.0, 1.0, 1.0]);
    let y2 = zs[0] * zs[1].powi(2) * zs[2].powi(3);
    // d/dz0 = 1, d/dz1 = 2 z0 = 4, d/dz2 = 3 z0 = 6
    let grads2 = y2.backward();
    assert_eq!(
        grads2.wrt_all(&[zs[2], zs[0], zs[1], zs[2]]),
        vec![6.0, 1.0, 4.0, 6.0]
    );
    assert_eq!(grads.wrt_all(&[unused, later, y]), vec![0.0, 0.0, 1.0]);
    assert_eq!(grads.wrt_all(&[]), Vec::<f64>::new());
}

/// `grads[x]`, `grads.wrt(x)` and `grads.try_wrt(x)` are the same number.
#[test]
fn index_wrt_and_try_wrt_agree() {
    let g = Graph::new();
    let x = g.var(0.25);
    let y = g.var(-2.0);
    let f = (x * y).sin() + x.exp();
    let grads = f.backward();
    // df/dx = y cos(xy) + e^x, df/dy = x cos(xy)
    let (dx, dy) = (
        -2.0 * (-0.5f64).cos() + 0.25f64.exp(),
        0.25 * (-0.5f64).cos(),
    );
    for (v, want) in [(x, dx), (y, dy)] {
        assert_relative_eq!(grads[v], want, max_relative = 1e-15);
        assert_eq!(grads.wrt(v), grads[v]);
        assert_eq!(grads.try_wrt(v), Ok(grads[v]));
    }
    assert_eq!(grads[f], 1.0);
}

/// A constant node is never an input, but its gradient is still computed: the derivative
/// of the output with respect to it. An `f64` operand has no node and no gradient.
#[test]
fn gradients_of_constants() {
    let g = Graph::new();
    let c = g.constant(2.0);
    let x = g.var(3.0);
    let y = c * x + c.powi(2) + x * 5.0;
    // dy/dc = x + 2c = 7; dy/dx = c + 5 = 7
    let grads = y.backward();
    assert_eq!(grads[c], 7.0);
    assert_eq!(grads[x], 7.0);
    assert_eq!(g.len(), 7, "two leaves, five ops, no node for 5.0");
    // The output with respect to a constant that does not reach it.
    let unused = g.constant(1.0);
    assert_eq!(grads[unused], 0.0);
    // A constant as the output: its gradient with respect to itself is 1.
    assert_eq!(c.backward()[c], 1.0);
    assert_eq!(c.backward()[x], 0.0);
}

/// A cloned store is a snapshot: refilling the original leaves the clone alone.
#[test]
fn a_cloned_store_is_independent() {
    let g = Graph::new();
    let x = g.var(2.0);
    let mut store = Gradients::new();
    (x * x).backward_into(&mut store);
    let snapshot = store.clone();
    (x * 10.0).backward_into(&mut store);
    assert_eq!((snapshot[x], store[x]), (4.0, 10.0));
}

/// A fill that fails (here an anomaly-mode error) leaves no numbers behind: the store
/// must not answer the previous output's gradients as if they were this output's.
#[test]
fn a_failed_backward_into_leaves_no_stale_gradients() {
    let g = Graph::new();
    let x = g.var(3.0);
    let mut store = Gradients::new();
    (x * x).backward_into(&mut store);
    assert_eq!(store[x], 6.0);
    g.set_anomaly_mode(true);
    let bad = (x - 3.0).ln(); // ln 0 = -inf: a forward anomaly
    assert!(matches!(
        bad.try_backward_into(&mut store),
        Err(Error::Anomaly(_))
    ));
    let read = store.try_wrt(x);
    assert!(
        read.is_err(),
        "read {read:?} from a store whose fill failed"
    );
    // A backward anomaly, found midway through the sweep (after x got its contribution
    // through the add): sqrt(x - 3) has value 0 but an infinite partial at x = 3.
    let g = Graph::new();
    g.set_anomaly_mode(true);
    let x = g.var(3.0);
    (x * 2.0).backward_into(&mut store);
    assert_eq!(store[x], 2.0);
    let half_way = (x - 3.0).sqrt() + x;
    assert!(matches!(
        half_way.try_backward_into(&mut store),
        Err(Error::Anomaly(_))
    ));
    let read = store.try_wrt(x);
    assert!(
        read.is_err(),
        "read {read:?} from a store whose fill failed"
    );
}
