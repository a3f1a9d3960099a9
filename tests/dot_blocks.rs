//! A weight matrix's dot products recorded as one edge-free block (`Var::dots` with
//! `Pairing::Rows` over consecutive weights) give the same values, gradients, second
//! derivatives, replays, errors, edge counts and DOT drawings, bit for bit, as the same
//! products recorded edge by edge: through one `Var::dot` per output (the same nodes at
//! the same positions, with edges), and through weights bound with a dummy after each
//! (not consecutive). `Pairing::Columns` over the transposed handles, whose read order is
//! consecutive too, records a block as well and is compared the same way; so does
//! `Pairing::Columns` over weights bound transposed (`x W` with `W` consecutive, a block
//! whose parts are columns).
//!
//! Cases come from a fixed-seed LCG: 1-3 rows, 1-6 outputs, 1-9 inner; values with
//! 0.0, -0.0, 1e-300, 1e300, subnormals, and (where said) infinities and NaN; first
//! factors that are consecutive inputs (dense blocks), reversed, or drawn with repeats,
//! weight entries (aliasing), derived nodes and constants; optionally a second block
//! over the first block's outputs. Bits are compared with every NaN counted as one.

use tapegrad::dot::Dot;
use tapegrad::linalg::{Matrix, Pairing};
use tapegrad::nn::{Linear, Params};
use tapegrad::{Error, Gradients, Graph, Inputs, Replay, ReplayWorkspace, Scalar, Var, higher};

/// A 64-bit LCG (Knuth's MMIX constants), top bits out.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `[-2, 2)`, with arbitrary low bits.
    fn uniform(&mut self) -> f64 {
        self.next() as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
    }

    fn value(&mut self, profile: Profile) -> f64 {
        const TAME: [f64; 4] = [0.0, -0.0, 1.0, -1.0];
        const FINITE: [f64; 8] = [1e-300, -1e-300, 1e300, -1e300, 5e-324, -5e-324, 1e160, 3.0];
        const WILD: [f64; 4] = [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, f64::MAX];
        let special = self.below(10) < 4;
        match (profile, special) {
            (_, false) => self.uniform(),
            (Profile::Tame, true) => TAME[self.below(TAME.len())],
            (Profile::Finite, true) => {
                let k = self.below(TAME.len() + FINITE.len());
                *TAME.iter().chain(&FINITE).nth(k).unwrap()
            }
            (Profile::Wild, true) => {
                let k = self.below(TAME.len() + FINITE.len() + WILD.len());
                *TAME.iter().chain(&FINITE).chain(&WILD).nth(k).unwrap()
            }
        }
    }

    fn values(&mut self, n: usize, profile: Profile) -> Vec<f64> {
        (0..n).map(|_| self.value(profile)).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Profile {
    /// Moderate values, zeros of both signs.
    Tame,
    /// Also tiny, subnormal and huge values (products and sums may overflow).
    Finite,
    /// Also infinities and NaN.
    Wild,
}

/// Where an entry of the first factor comes from.
#[derive(Clone, Copy, Debug)]
enum Src {
    /// An input of the pool (bound together with `Graph::vars`).
    Pool(usize),
    /// An entry of the weight matrix itself.
    Weight(usize),
    /// `pool[k] * 0.5`, a node recorded after the weights.
    Derived(usize),
    /// `Graph::constant(c)`.
    Const(f64),
}

#[derive(Clone, Debug)]
struct Case {
    rows: usize,
    outputs: usize,
    inner: usize,
    pool: Vec<f64>,
    /// `outputs x inner`, row-major.
    w: Vec<f64>,
    /// `rows x inner`, row-major.
    x: Vec<Src>,
    weights_first: bool,
    /// The loss's coefficient of each output (`rows * outputs`), zeros of both signs.
    c: Vec<f64>,
    /// A second block, `pool (cycled) . y^T` over the outputs as a `rows x outputs`
    /// matrix, with these coefficients (`rows`), if any.
    d: Option<Vec<f64>>,
}

/// How the first factor is laid out.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// Consecutive pool inputs in order: a dense block.
    Dense,
    /// The pool in reverse order: positions decrease (dense only when `inner == 1`).
    Reversed,
    /// Drawn with repeats, weights, derived nodes and constants.
    Mixed,
}

/// A coefficient of the loss: half of them zeros, of both signs (zero adjoints).
fn coefficient(rng: &mut Lcg) -> f64 {
    match rng.below(4) {
        0 => 0.0,
        1 => -0.0,
        _ => rng.value(Profile::Tame),
    }
}

fn draw(rng: &mut Lcg, profile: Profile, layout: Layout) -> Case {
    let (rows, outputs, inner) = (1 + rng.below(3), 1 + rng.below(6), 1 + rng.below(9));
    let n = rows * inner;
    let pool_len = match layout {
        Layout::Dense | Layout::Reversed => n,
        Layout::Mixed => 1 + rng.below(n + 2),
    };
    let pool = rng.values(pool_len, profile);
    let w = rng.values(outputs * inner, profile);
    let x = match layout {
        Layout::Dense => (0..n).map(Src::Pool).collect(),
        Layout::Reversed => (0..n).rev().map(Src::Pool).collect(),
        Layout::Mixed => (0..n)
            .map(|_| match rng.below(10) {
                0..=4 => Src::Pool(rng.below(pool_len)),
                5 | 6 => Src::Weight(rng.below(outputs * inner)),
                7 | 8 => Src::Derived(rng.below(pool_len)),
                _ => Src::Const(rng.value(profile)),
            })
            .collect(),
    };
    let c = (0..rows * outputs).map(|_| coefficient(rng)).collect();
    let d = (rng.below(2) == 0).then(|| (0..rows).map(|_| coefficient(rng)).collect());
    Case {
        rows,
        outputs,
        inner,
        pool,
        w,
        x,
        weights_first: rng.below(2) == 0,
        c,
        d,
    }
}

/// How the products are recorded.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// `Var::dots(.., Pairing::Rows)` over the consecutive weights: a block.
    Block,
    /// `Path::Block` with the weights and the pool bound by `Graph::inputs` (a buffer the
    /// graph knows, checked in one lookup by the product and by `wrt_all`).
    Known,
    /// `Var::dots(.., Pairing::Columns)` over the transposed handles: read column by
    /// column they are the same consecutive run, so this is a block too.
    Columns,
    /// `Var::dots(.., Pairing::Columns)` over weights bound transposed (`inner x outputs`,
    /// consecutive): a block read by columns.
    ByColumns,
    /// `Var::dots(.., Pairing::Rows)` over weights bound with a dummy input after each:
    /// not consecutive, so edges.
    Spread,
    /// One `Var::dot` per output over the consecutive weights: the same nodes at the same
    /// positions as `Path::Block`, with edges.
    PerOutput,
}

/// The recordings compared with `Path::Block`.
const OTHER_PATHS: [Path; 5] = [
    Path::Known,
    Path::Columns,
    Path::ByColumns,
    Path::Spread,
    Path::PerOutput,
];

/// `a` (`rows x inner`) times `b^T` (`b` is `outputs x inner`), recorded by `path`.
fn products<'g>(
    a: &[Var<'g>],
    b: &[Var<'g>],
    (rows, outputs, inner): (usize, usize, usize),
    path: Path,
) -> Vec<Var<'g>> {
    match path {
        Path::Block | Path::Known | Path::Spread => Var::dots(
            Matrix::new(a, rows, inner),
            Matrix::new(b, outputs, inner),
            Pairing::Rows,
        ),
        Path::Columns | Path::ByColumns => {
            let bt: Vec<Var<'g>> = (0..inner)
                .flat_map(|k| (0..outputs).map(move |j| b[j * inner + k]))
                .collect();
            Var::dots(
                Matrix::new(a, rows, inner),
                Matrix::new(&bt, inner, outputs),
                Pairing::Columns,
            )
        }
        Path::PerOutput => (0..rows)
            .flat_map(|i| {
                (0..outputs)
                    .map(move |j| Var::dot(&a[i * inner..][..inner], &b[j * inner..][..inner]))
            })
            .collect(),
    }
}

/// Bound inputs: a `Vec` (`Graph::vars`, or one at a time) or `Inputs`.
enum Bound<'g> {
    Plain(Vec<Var<'g>>),
    Known(Inputs<'g>),
}

impl<'g> std::ops::Deref for Bound<'g> {
    type Target = [Var<'g>];

    fn deref(&self) -> &[Var<'g>] {
        match self {
            Bound::Plain(v) => v,
            Bound::Known(k) => k,
        }
    }
}

/// One recording of a case.
struct Rec<'g> {
    pool: Bound<'g>,
    w: Bound<'g>,
    x: Vec<Var<'g>>,
    y: Vec<Var<'g>>,
    z: Vec<Var<'g>>,
    loss: Var<'g>,
}

impl<'g> Rec<'g> {
    /// The inputs a gradient is taken with respect to: the pool, then the weights.
    fn inputs(&self) -> Vec<Var<'g>> {
        self.pool.iter().chain(self.w.iter()).copied().collect()
    }
}

/// Binds the weights (with a dummy after each for `Path::Spread`).
fn bind_weights<'g>(g: &'g Graph, w: &[f64], path: Path) -> Bound<'g> {
    match path {
        Path::Spread => Bound::Plain(
            w.iter()
                .map(|&v| {
                    let x = g.var(v);
                    let _ = g.var(0.0);
                    x
                })
                .collect(),
        ),
        Path::Known => Bound::Known(g.inputs(w)),
        _ => Bound::Plain(g.vars(w)),
    }
}

/// Binds the pool: `Inputs` for `Path::Known`, else a `Vec`.
fn bind_pool<'g>(g: &'g Graph, pool: &[f64], path: Path) -> Bound<'g> {
    match path {
        Path::Known => Bound::Known(g.inputs(pool)),
        _ => Bound::Plain(g.vars(pool)),
    }
}

/// Records `case` on `g` by `path`; the loss is `sum c_o y_o (+ sum d_i z_i)`, or with
/// `square` `sum c_o y_o^2 (+ ...)`, a function with second derivatives.
fn record<'g>(g: &'g Graph, case: &Case, path: Path, square: bool) -> Rec<'g> {
    let bind_w = || match path {
        Path::ByColumns => {
            // Bound as `inner x outputs`, consecutive; `w` keeps the `outputs x inner`
            // order of the other paths.
            let (outputs, inner) = (case.outputs, case.inner);
            let wt: Vec<f64> = (0..inner * outputs)
                .map(|t| case.w[(t % outputs) * inner + t / outputs])
                .collect();
            let ht = g.vars(&wt);
            Bound::Plain(
                (0..outputs * inner)
                    .map(|o| ht[(o % inner) * outputs + o / inner])
                    .collect(),
            )
        }
        _ => bind_weights(g, &case.w, path),
    };
    let (pool, w) = if case.weights_first {
        let w = bind_w();
        (bind_pool(g, &case.pool, path), w)
    } else {
        let pool = bind_pool(g, &case.pool, path);
        (pool, bind_w())
    };
    let x: Vec<Var> = case
        .x
        .iter()
        .map(|&s| match s {
            Src::Pool(k) => pool[k],
            Src::Weight(k) => w[k],
            Src::Derived(k) => pool[k] * 0.5,
            Src::Const(c) => g.constant(c),
        })
        .collect();
    let shape = (case.rows, case.outputs, case.inner);
    let y = products(&x, &w, shape, path);
    let mut terms: Vec<Var> = if square {
        y.iter().map(|&v| v * v).collect()
    } else {
        y.clone()
    };
    let mut coefficients = case.c.clone();
    let mut z = Vec::new();
    if let Some(d) = &case.d {
        // The outputs, consecutive, as the second factor of another product: a block
        // over non-input nodes (edges for the spread path, whose outputs are consecutive
        // too: per output there).
        let a: Vec<Var> = (0..case.outputs).map(|k| pool[k % pool.len()]).collect();
        let second = if path == Path::Spread {
            Path::PerOutput
        } else {
            path
        };
        z = products(&a, &y, (1, case.rows, case.outputs), second);
        terms.extend(&z);
        coefficients.extend(d);
    }
    let loss = Var::dot_f64(&terms, &coefficients);
    Rec {
        pool,
        w,
        x,
        y,
        z,
        loss,
    }
}

/// Bits, with every NaN as one pattern.
fn bits(xs: impl IntoIterator<Item = f64>) -> Vec<u64> {
    xs.into_iter()
        .map(|x| if x.is_nan() { u64::MAX } else { x.to_bits() })
        .collect()
}

fn values(xs: &[Var]) -> Vec<u64> {
    bits(xs.iter().map(Var::value))
}

/// Everything one backward shows: the gradient with respect to the pool and the weights
/// (read together, and handle by handle), every entry of the first factor and every
/// output.
fn gradient_bits(grads: &Gradients, r: &Rec) -> Vec<(&'static str, Vec<u64>)> {
    let one_by_one = |xs: &[Var]| bits(xs.iter().map(|&x| grads.wrt(x)));
    let all = bits(grads.wrt_all(&r.w));
    assert_eq!(all, one_by_one(&r.w), "wrt_all against wrt, weights");
    vec![
        ("pool", bits(grads.wrt_all(&r.pool))),
        ("weights", all),
        ("first factor", one_by_one(&r.x)),
        ("outputs", one_by_one(&r.y)),
        ("second outputs", one_by_one(&r.z)),
    ]
}

fn forward_bits(r: &Rec) -> Vec<(&'static str, Vec<u64>)> {
    vec![
        ("y", values(&r.y)),
        ("z", values(&r.z)),
        ("loss", values(&[r.loss])),
    ]
}

/// The block recording of `case` against each edge recording: values, the loss's
/// gradients, and the gradients from every single output (a root inside the block).
fn check_first_order(case: &Case) {
    let gb = Graph::new();
    let rb = record(&gb, case, Path::Block, false);
    let block_grads = gradient_bits(&rb.loss.backward(), &rb);
    let block_roots: Vec<_> =
        rb.y.iter()
            .map(|y| gradient_bits(&y.backward(), &rb))
            .collect();
    for path in OTHER_PATHS {
        let ge = Graph::new();
        let re = record(&ge, case, path, false);
        assert_eq!(forward_bits(&rb), forward_bits(&re), "{path:?} {case:?}");
        assert_eq!(
            block_grads,
            gradient_bits(&re.loss.backward(), &re),
            "{path:?} {case:?}"
        );
        for (k, y) in re.y.iter().enumerate() {
            assert_eq!(
                block_roots[k],
                gradient_bits(&y.backward(), &re),
                "root y[{k}], {path:?} {case:?}"
            );
        }
        if path != Path::Spread {
            assert_eq!(gb.edge_count(), ge.edge_count(), "{path:?} {case:?}");
            assert_eq!(gb.len(), ge.len(), "{path:?} {case:?}");
        }
    }
}

fn many(profile: Profile, layout: Layout, cases: usize, seed: u64, check: impl Fn(&Case)) {
    let mut rng = Lcg(seed);
    for _ in 0..cases {
        check(&draw(&mut rng, profile, layout));
    }
}

#[test]
fn dense_blocks_match_the_edges_with_zero_adjoints() {
    many(Profile::Finite, Layout::Dense, 1500, 1, check_first_order);
    many(Profile::Tame, Layout::Dense, 1500, 2, check_first_order);
}

#[test]
fn non_dense_blocks_match_the_edges() {
    many(
        Profile::Finite,
        Layout::Reversed,
        1000,
        3,
        check_first_order,
    );
    many(Profile::Finite, Layout::Mixed, 3000, 4, check_first_order);
    many(Profile::Tame, Layout::Mixed, 1000, 5, check_first_order);
}

#[test]
fn non_finite_values_match_the_edges() {
    for (seed, layout) in [
        (6, Layout::Dense),
        (7, Layout::Reversed),
        (8, Layout::Mixed),
    ] {
        many(Profile::Wild, layout, 1500, seed, check_first_order);
    }
}

/// Hand-made cases at the edges of the fast sweep: a finite forward whose backward
/// overflows (the plain sweep falls back to the careful one), infinite and NaN weights
/// meeting zero adjoints, all-negative-zero products (the sums' starting zero shows), and
/// a first factor that is the weight matrix itself.
#[test]
fn hand_made_cases_match_the_edges() {
    let plain = |rows, outputs, inner, pool: Vec<f64>, w: Vec<f64>, c: Vec<f64>| Case {
        rows,
        outputs,
        inner,
        x: (0..pool.len()).map(Src::Pool).collect(),
        pool,
        w,
        weights_first: false,
        c,
        d: None,
    };
    let cases = [
        // y = 1e-300 * 1e300 = 1, but dL/dx = 1e10 * 1e300 overflows.
        plain(1, 1, 1, vec![1e-300], vec![1e300], vec![1e10]),
        plain(1, 5, 1, vec![1e-300], vec![1e300; 5], vec![1e10; 5]),
        // An infinite weight under a zero adjoint, and under a nonzero one.
        plain(
            1,
            2,
            2,
            vec![1.0, 2.0],
            vec![f64::INFINITY, 1.0, 1.0, 1.0],
            vec![0.0, 1.0],
        ),
        plain(
            1,
            2,
            2,
            vec![1.0, 2.0],
            vec![1.0, 1.0, f64::INFINITY, 1.0],
            vec![-0.0, 1.0],
        ),
        plain(
            2,
            1,
            2,
            vec![f64::NAN, 0.0, 1.0, 2.0],
            vec![1.0, 1.0],
            vec![0.0, 1.0],
        ),
        // Every product -0.0: the dot's sum starts at -0.0, so y is -0.0.
        plain(1, 6, 1, vec![-0.0], vec![1.0; 6], vec![1.0; 6]),
        plain(1, 5, 3, vec![-0.0; 3], vec![2.0; 15], vec![-0.0; 5]),
        plain(1, 4, 1, vec![0.0], vec![-1.0; 4], vec![1.0; 4]),
        // 0 * inf in the forward: NaN outputs.
        plain(
            1,
            4,
            2,
            vec![0.0, 1.0],
            vec![f64::INFINITY; 8],
            vec![1.0; 4],
        ),
        Case {
            x: (0..6).map(Src::Weight).collect(),
            ..plain(
                2,
                2,
                3,
                vec![],
                (1..=6).map(f64::from).collect(),
                vec![1.0; 4],
            )
        },
        Case {
            x: vec![Src::Pool(0), Src::Pool(0), Src::Weight(1), Src::Pool(0)],
            ..plain(
                2,
                2,
                2,
                vec![3.0],
                vec![1.0, -2.0, 0.5, 4.0],
                vec![1.0, 0.0, -0.0, 2.0],
            )
        },
    ];
    for case in &cases {
        check_first_order(case);
    }
}

/// Backward from every pool input and every weight (roots below the block) reads the
/// same through `wrt_all` (one slice for the bound weights) as handle by handle.
#[test]
fn roots_below_the_block_read_the_same() {
    let mut rng = Lcg(9);
    for _ in 0..300 {
        let case = draw(&mut rng, Profile::Finite, Layout::Mixed);
        let g = Graph::new();
        let r = record(&g, &case, Path::Block, false);
        for &root in r.pool.iter().chain(r.w.iter()) {
            let _ = gradient_bits(&root.backward(), &r);
        }
    }
}

/// `Gradients::wrt_all` over handles bound together (`Graph::vars`, `Graph::inputs`)
/// recorded after the root: each gradient is 0, as `wrt` says. Found by the test above:
/// `wrt_all`'s slice path (a5f3244, and the `Inputs` path of 364ae9d) slices
/// `adjoints[first..first]`, past the end of the root's adjoints (`root + 2` long) when
/// `first > root + 2`, and panics (`range start index 3 out of range for slice of
/// length 2` here). The fix: clamp `first` too, or return zeros when `first > root`.
#[test]
fn wrt_all_of_handles_recorded_after_the_root_is_zero() {
    let g = Graph::new();
    let x = g.var(1.0);
    let _gap = g.vars(&[2.0, 3.0]);
    let w = g.vars(&[4.0, 5.0]);
    let known = g.inputs(&[6.0, 7.0]);
    let grads = x.backward();
    assert_eq!((grads.wrt(w[0]), grads.wrt(w[1])), (0.0, 0.0));
    assert_eq!(grads.wrt_all(&w), vec![0.0, 0.0]);
    // (Index 5 for these.)
    assert_eq!(grads.wrt_all(&known), vec![0.0, 0.0]);
}

/// `Var::grad` (the differentiable gradient), its own gradient, `higher::hessian` and
/// `higher::hvp` through block nodes, against the same through edges.
#[test]
fn second_order_matches_the_edges() {
    let mut rng = Lcg(10);
    for k in 0..300 {
        let layout = [Layout::Dense, Layout::Reversed, Layout::Mixed][k % 3];
        let profile = [Profile::Tame, Profile::Finite][k / 3 % 2];
        let case = draw(&mut rng, profile, layout);
        let second_order = |path: Path| {
            let g = Graph::new();
            let r = record(&g, &case, path, true);
            let inputs = r.inputs();
            let grad = r.loss.grad(&inputs);
            let grad_of_grad = g.sum(grad.iter().copied()).backward().wrt_all(&inputs);
            let v: Vec<f64> = (0..inputs.len()).map(|k| 1.0 - 0.25 * k as f64).collect();
            (
                values(&grad),
                bits(grad_of_grad),
                higher::hessian(r.loss, &inputs)
                    .into_iter()
                    .map(bits)
                    .collect::<Vec<_>>(),
                bits(higher::hvp(r.loss, &inputs, &v)),
            )
        };
        let block = second_order(Path::Block);
        for path in [Path::Known, Path::Columns, Path::PerOutput] {
            assert_eq!(block, second_order(path), "{path:?} {case:?}");
        }
    }
}

/// The block path's Hessian against central differences of its own gradient, for a
/// dense block and for one whose first factor repeats a pool entry and uses weights.
#[test]
fn block_hessian_matches_central_differences() {
    let (rows, outputs, inner) = (2, 3, 5);
    let mut rng = Lcg(11);
    let base = Case {
        rows,
        outputs,
        inner,
        pool: rng.values(rows * inner, Profile::Tame),
        w: rng.values(outputs * inner, Profile::Tame),
        x: (0..rows * inner).map(Src::Pool).collect(),
        c: vec![0.5, -1.0, 0.0, 2.0, 1.5, -0.75],
        d: Some(vec![1.0, -0.5]),
        weights_first: false,
    };
    let mut aliased = base.clone();
    aliased.x[1] = Src::Pool(0);
    aliased.x[4] = Src::Weight(7);
    aliased.x[8] = Src::Derived(3);
    for case in [base, aliased] {
        let g = Graph::new();
        let r = record(&g, &case, Path::Block, true);
        let hessian = higher::hessian(r.loss, &r.inputs());
        let n_pool = case.pool.len();
        let gradient_at = |i: usize, h: f64| {
            let mut moved = case.clone();
            if i < n_pool {
                moved.pool[i] += h;
            } else {
                moved.w[i - n_pool] += h;
            }
            let g = Graph::new();
            let r = record(&g, &moved, Path::Block, true);
            r.loss.backward().wrt_all(&r.inputs())
        };
        let h = 1e-4;
        for (i, row) in hessian.iter().enumerate() {
            let (up, down) = (gradient_at(i, h), gradient_at(i, -h));
            for (j, &tape) in row.iter().enumerate() {
                let numeric = (up[j] - down[j]) / (2.0 * h);
                assert!(
                    (tape - numeric).abs() <= 1e-6 * tape.abs().max(1.0),
                    "H[{i}][{j}]: tape {tape}, central difference {numeric}"
                );
            }
        }
    }
}

/// A replay of a function with a block, at new inputs, gives the bits of a fresh
/// recording there; and the replay of the edge recording gives the same.
#[test]
fn replay_through_a_block_matches_a_fresh_recording() {
    let mut rng = Lcg(12);
    let mut ws = ReplayWorkspace::new();
    for k in 0..600 {
        let layout = [Layout::Dense, Layout::Reversed, Layout::Mixed][k % 3];
        let profile = [Profile::Tame, Profile::Finite, Profile::Wild][k / 3 % 3];
        let case = draw(&mut rng, profile, layout);
        let mut moved = case.clone();
        moved.pool = rng.values(case.pool.len(), profile);
        moved.w = rng.values(case.w.len(), profile);
        let at: Vec<f64> = moved.pool.iter().chain(&moved.w).copied().collect();

        let fresh_graph = Graph::new();
        let fresh = record(&fresh_graph, &moved, Path::Block, false);
        let expected = (
            values(&[fresh.loss]),
            bits(fresh.loss.backward().wrt_all(&fresh.inputs())),
        );
        for path in [Path::Block, Path::Known, Path::Columns, Path::PerOutput] {
            let g = Graph::new();
            let r = record(&g, &case, path, false);
            let replay = Replay::new(r.loss, &r.inputs());
            let mut grad = vec![0.0; at.len()];
            let y = replay.gradient(&at, &mut ws, &mut grad).unwrap();
            assert_eq!(
                (bits([y]), bits(grad)),
                expected,
                "{path:?} {case:?} at {at:?}"
            );
        }
    }
}

/// `Graph::try_set_value` refuses an input a block uses, as a weight or in the first
/// factor, and allows one nothing uses; the same answers as with edges.
#[test]
fn set_value_refuses_the_inputs_a_block_uses() {
    for path in [Path::Block, Path::Columns, Path::PerOutput] {
        let g = Graph::new();
        let unused = g.var(1.0);
        let x = g.vars(&[1.0, 2.0, 3.0]);
        let w = g.vars(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let unused_after = g.var(1.0);
        let a = [x[0], x[2], x[2], x[0]];
        let y = products(&a, &w, (2, 3, 2), path);
        for (k, &wk) in w.iter().enumerate() {
            let err = g.try_set_value(wk, 9.0).unwrap_err();
            assert!(matches!(err, Error::BadOperands { .. }), "w[{k}] {path:?}");
            assert_eq!(wk.value(), (k + 1) as f64);
        }
        for used in [x[0], x[2]] {
            assert!(matches!(
                g.try_set_value(used, 9.0),
                Err(Error::BadOperands { .. })
            ));
        }
        for free in [unused, x[1], unused_after] {
            assert_eq!(g.try_set_value(free, 9.0), Ok(()), "{path:?}");
            assert_eq!(free.value(), 9.0);
        }
        // The block's outputs are not inputs.
        assert!(g.try_set_value(y[0], 1.0).is_err());
        assert_eq!(values(&y), bits([7.0, 15.0, 23.0, 5.0, 13.0, 21.0]));
    }
}

/// Releasing to a mark before the weights frees the block: its outputs are released
/// handles; recording again on the same graph gives a fresh graph's bits. Releasing to a
/// mark after the weights frees only the block, and a new block over the same weights
/// gives the same bits again.
#[test]
fn release_frees_a_block_and_recording_again_works() {
    let mut rng = Lcg(13);
    for k in 0..200 {
        let layout = [Layout::Dense, Layout::Mixed][k % 2];
        let case = draw(&mut rng, Profile::Finite, layout);
        let fresh_graph = Graph::new();
        let fresh = record(&fresh_graph, &case, Path::Block, false);
        let expected = (
            forward_bits(&fresh),
            gradient_bits(&fresh.loss.backward(), &fresh),
        );

        let g = Graph::new();
        let _before = g.var(2.5);
        let mark = g.mark();
        let r = record(&g, &case, Path::Block, false);
        g.release(mark);
        assert_eq!(r.y[0].try_value(), Err(Error::Released));
        assert!(matches!(r.loss.try_backward(), Err(Error::Released)));
        assert!(matches!(
            r.y.last().unwrap().try_backward(),
            Err(Error::Released)
        ));
        assert_eq!(g.len(), 1);
        let again = record(&g, &case, Path::Block, false);
        assert_eq!(
            (
                forward_bits(&again),
                gradient_bits(&again.loss.backward(), &again)
            ),
            expected,
            "{case:?}"
        );

        // Only the block and what follows: the weights and the pool stay.
        let w = g.vars(&case.w);
        let x = g.vars(&case.w[..case.inner]);
        let mark = g.mark();
        let y = products(&x, &w, (1, case.outputs, case.inner), Path::Block);
        let first = (values(&y), bits(y[0].backward().wrt_all(&w)));
        g.release(mark);
        assert_eq!(y[0].try_value(), Err(Error::Released));
        let y = products(&x, &w, (1, case.outputs, case.inner), Path::Block);
        assert_eq!((values(&y), bits(y[0].backward().wrt_all(&w))), first);
    }
}

/// `Graph::edge_count` counts a block's products as the dot nodes' edges:
/// `2 * rows * outputs * inner`.
#[test]
fn edge_count_counts_a_blocks_edges() {
    for (rows, outputs, inner) in [(1, 1, 1), (3, 6, 9), (2, 5, 4), (1, 4, 7)] {
        for path in [Path::Block, Path::Columns, Path::PerOutput] {
            let g = Graph::new();
            let x = g.vars(&vec![1.0; rows * inner]);
            let w = g.vars(&vec![2.0; outputs * inner]);
            assert_eq!(g.edge_count(), 0);
            let y = products(&x, &w, (rows, outputs, inner), path);
            assert_eq!(g.edge_count(), 2 * rows * outputs * inner, "{path:?}");
            let _ = Var::sum(&y);
            let expected = 2 * rows * outputs * inner + rows * outputs;
            assert_eq!(g.edge_count(), expected, "{path:?}");
        }
    }
}

/// The block path really is another representation: a large block holds far fewer heap
/// bytes than its edges would (otherwise the comparisons above prove nothing).
#[test]
fn the_block_path_stores_no_edges() {
    let heap = |path: Path| {
        // No storage reserved up front: what the graph holds is what it grew to.
        let g = Graph::with_capacity(0);
        let x = g.vars(&[1.0; 64]);
        let w = bind_weights(&g, &[2.0; 64 * 64], path);
        let y = products(&x, &w, (1, 64, 64), path);
        assert_eq!(y[63].value(), 128.0);
        g.heap_bytes()
    };
    let (block, known, columns) = (heap(Path::Block), heap(Path::Known), heap(Path::Columns));
    let edges = heap(Path::PerOutput);
    // 2 * 64 * 64 edges of a u32 and an f64 each: 98,304 bytes.
    assert!(block + 90_000 < edges, "block {block} bytes, edges {edges}");
    assert!(
        known + 90_000 < edges,
        "inputs {known} bytes, edges {edges}"
    );
    assert!(
        columns + 50_000 < edges,
        "columns {columns} bytes, edges {edges}"
    );
    // `x W` with `W` consecutive in its own (row-major) order: a block read by columns.
    let by_columns = {
        let g = Graph::with_capacity(0);
        let x = g.vars(&[1.0; 64]);
        let w = g.vars(&[2.0; 64 * 64]);
        let y = Var::dots(
            Matrix::new(&x, 1, 64),
            Matrix::new(&w, 64, 64),
            Pairing::Columns,
        );
        assert_eq!(y[63].value(), 128.0);
        g.heap_bytes()
    };
    assert!(
        by_columns + 90_000 < edges,
        "by columns {by_columns} bytes, edges {edges}"
    );
}

/// In anomaly mode a NaN weight makes backward fail naming `dot`: recorded in anomaly
/// mode (edges), and recorded as a block before anomaly mode was turned on (the same
/// report as the edges recorded then).
#[test]
fn anomaly_mode_names_the_dot() {
    let w = [1.0, 2.0, f64::NAN, 4.0, 5.0, 6.0];
    let c = [1.0, 0.5, -1.0];
    // The products recorded in anomaly mode (the inputs before it, else the NaN input
    // is what is reported): the dot's forward value is reported.
    for path in [Path::Block, Path::PerOutput] {
        let g = Graph::new();
        let x = g.vars(&[1.0, 3.0]);
        let wv = g.vars(&w);
        g.set_anomaly_mode(true);
        let y = products(&x, &wv, (1, 3, 2), path);
        let loss = Var::dot_f64(&y, &c);
        let Err(Error::Anomaly(a)) = loss.try_backward() else {
            panic!("no anomaly")
        };
        assert_eq!(a.op, "dot", "{path:?}");
        assert_eq!(bits(a.inputs), bits([1.0, 3.0, f64::NAN, 4.0]));
        assert!(a.gradient.is_none());
        assert!(a.location.is_some());
    }
    // Recorded before anomaly mode: the backward's first non-finite gradient.
    let report = |path: Path| {
        let g = Graph::new();
        let x = g.vars(&[1.0, 3.0]);
        let wv = g.vars(&w);
        let y = products(&x, &wv, (1, 3, 2), path);
        let loss = Var::dot_f64(&y, &c);
        g.set_anomaly_mode(true);
        let Err(Error::Anomaly(a)) = loss.try_backward() else {
            panic!("no anomaly, {path:?}")
        };
        assert_eq!(a.op, "dot", "{path:?}");
        assert!(a.gradient.is_some_and(f64::is_nan), "{path:?}");
        (a.op, bits(a.inputs), bits([a.output]), a.location.is_none())
    };
    let block = report(Path::Block);
    assert_eq!(block, report(Path::Known));
    assert_eq!(block, report(Path::Columns));
    assert_eq!(block, report(Path::PerOutput));
}

/// The DOT drawing of a block is the edge recording's, character for character (same
/// node numbers: one `Var::dot` per output records the same nodes at the same positions), and
/// every dot node lists its `2 * inner` operands.
#[test]
fn dot_drawing_of_a_block_matches_the_edges() {
    let mut rng = Lcg(14);
    for k in 0..60 {
        let layout = [Layout::Dense, Layout::Mixed][k % 2];
        let case = draw(&mut rng, Profile::Tame, layout);
        let draw_path = |path: Path| {
            let g = Graph::new();
            let r = record(&g, &case, path, false);
            let grads = r.loss.backward();
            let text = Dot::new(r.loss).gradients(&grads).render();
            for y in &r.y {
                let into = format!(" -> n{} ", y.try_position().unwrap());
                assert_eq!(text.matches(&into).count(), 2 * case.inner, "{text}");
            }
            (text, Dot::new(r.y[0]).render())
        };
        let block = draw_path(Path::Block);
        assert!(block.0.contains("dot | value"), "{}", block.0);
        assert_eq!(block, draw_path(Path::PerOutput), "{case:?}");
        assert_eq!(block, draw_path(Path::Columns), "{case:?}");
        assert_eq!(block, draw_path(Path::Known), "{case:?}");
    }
}

/// `nn::Linear` (no bias: a block over the bound weight; with a bias: edges) on a bound
/// store, against the same layer written with one `Var::dot` per output.
#[test]
fn linear_layer_gradients_match_dots_per_output() {
    let mut rng = Lcg(15);
    for k in 0..200 {
        let (inputs, outputs, rows) = (1 + rng.below(9), 1 + rng.below(6), 1 + rng.below(3));
        let with_bias = k % 2 == 0;
        let mut params = Params::new();
        let _before = params.init("before", &[3], &mut || rng.value(Profile::Tame));
        let layer = if with_bias {
            Linear::new(&mut params, "fc", inputs, outputs, &mut || {
                rng.value(Profile::Finite)
            })
        } else {
            Linear::without_bias(&mut params, "fc", inputs, outputs, &mut || {
                rng.value(Profile::Finite)
            })
        };
        if let Some(b) = layer.bias() {
            for v in &mut params[b] {
                *v = rng.value(Profile::Tame);
            }
        }
        let x_values = rng.values(rows * inputs, Profile::Finite);
        let c: Vec<f64> = (0..rows * outputs)
            .map(|_| [0.0, -0.0, 1.5][rng.below(3)])
            .collect();
        let run = |by_layer: bool| {
            let g = Graph::new();
            let (_, (y_bits, x_grads), grads) = params
                .value_and_grad_aux(&g, |p| {
                    let x = g.vars(&x_values);
                    let y = if by_layer {
                        layer.forward_rows(p, Matrix::new(&x, rows, inputs))
                    } else {
                        let w = p.matrix(layer.weight());
                        let mut y = Vec::new();
                        for r in 0..rows {
                            let xr = &x[r * inputs..][..inputs];
                            for o in 0..outputs {
                                y.push(match layer.bias() {
                                    // The layer sums from the bias: [b_o, W_o] . [1, x].
                                    Some(b) => {
                                        let mut wb = vec![p.get(b)[o]];
                                        wb.extend_from_slice(w.row(o));
                                        let mut xb = vec![g.constant(1.0)];
                                        xb.extend_from_slice(xr);
                                        Var::dot(&xb, &wb)
                                    }
                                    None => Var::dot(xr, w.row(o)),
                                });
                            }
                        }
                        y
                    };
                    let loss = Var::dot_f64(&y, &c);
                    let x_grads = bits(loss.backward().wrt_all(&x));
                    (loss, (values(&y), x_grads))
                })
                .unwrap();
            (y_bits, x_grads, bits(grads.as_slice().iter().copied()))
        };
        assert_eq!(
            run(true),
            run(false),
            "{inputs} -> {outputs}, {rows} rows, bias {with_bias}"
        );
    }
}

/// Weights at consecutive positions bound in two generations (a release between the two
/// halves): not one run of handles, but consecutive positions, so still a block; the same
/// bits as one `Var::dot` per output on that graph, and a release to a mark inside the
/// weights frees the block.
#[test]
fn weights_bound_across_a_release_still_match() {
    let run = |path: Path| {
        let g = Graph::new();
        let x = g.vars(&[0.5, -0.0, 3.0]);
        let mut w = g.vars(&[1.0, -2.0, 0.25]);
        let mark = g.mark();
        let _junk = g.vars(&[7.0, 8.0]);
        g.release(mark);
        w.extend(g.vars(&[1e300, 4.0, -1.5]));
        let inside = g.mark();
        w.extend(g.vars(&[2.0, 0.0, -0.0]));
        let y = products(&x, &w, (1, 3, 3), path);
        let loss = Var::dot_f64(&y, &[1.0, -0.0, 2.0]);
        let grads = loss.backward();
        let out = (values(&y), bits(grads.wrt_all(&w)), bits(grads.wrt_all(&x)));
        let edges = g.edge_count();
        g.release(inside);
        assert_eq!(y[0].try_value(), Err(Error::Released));
        assert_eq!(g.edge_count(), 0, "{path:?}");
        (out, edges)
    };
    let block = run(Path::Block);
    assert_eq!(block, run(Path::PerOutput));
    assert_eq!(block, run(Path::Columns));
}

/// A product over `Inputs` released (and their positions recorded again) refuses them,
/// as over a `Vec` of the same handles: a stale buffer is never read as the new nodes.
#[test]
fn released_inputs_are_refused_by_a_product() {
    for path in [Path::Known, Path::Block] {
        let g = Graph::new();
        let x = g.vars(&[1.0, 2.0]);
        let mark = g.mark();
        let w = bind_weights(&g, &[1.0, 2.0, 3.0, 4.0], path);
        g.release(mark);
        // The same positions, a new generation.
        let again = bind_weights(&g, &[5.0, 6.0, 7.0, 8.0], path);
        let stale = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            products(&x, &w, (1, 2, 2), Path::Block)
        }));
        let message = stale.expect_err("a released weight was used");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(text.contains("released"), "{path:?}: {text}");
        assert_eq!(w[0].try_value(), Err(Error::Released));
        let y = products(&x, &again, (1, 2, 2), Path::Block);
        assert_eq!(values(&y), bits([17.0, 23.0]));
        let grads = y[1].backward();
        assert_eq!(grads.wrt_all(&again), vec![0.0, 0.0, 1.0, 2.0]);
        assert_eq!(grads.try_wrt(w[2]), Err(Error::Released));
    }
}

/// A product whose weights are another graph's (`Inputs` or a `Vec`) is refused, not
/// read from this graph's positions.
#[test]
fn another_graphs_weights_are_refused() {
    for path in [Path::Known, Path::Block] {
        let (g, other) = (Graph::new(), Graph::new());
        let x = g.vars(&[1.0, 2.0]);
        let _same_positions = g.vars(&[9.0; 4]);
        let w = bind_weights(&other, &[1.0, 2.0, 3.0, 4.0], path);
        let _ = other.vars(&[1.0, 2.0]);
        let mixed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            products(&x, &w, (1, 2, 2), Path::Block)
        }));
        let message = mixed.expect_err("another graph's weights were used");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(text.contains("was used with graph"), "{path:?}: {text}");
    }
}
