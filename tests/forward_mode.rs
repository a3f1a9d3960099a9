//! Forward mode's dual numbers (`tapegrad::Dual`) against reverse mode, op by op: every op of
//! the table, in every operand combination, at ordinary and singular points, gives the
//! value and first derivatives that `Var::backward` gives, bit for bit (the same factors
//! multiplied in the same order: an op, then one use of its output); `K` directions at
//! once give what `K` separate passes give; the n-ary ops take the tape's partials; and
//! a unary, binary or short n-ary op allocates nothing.
//!
//! Expected values come from reverse mode (itself checked against closed forms and central
//! differences in `tests/ops.rs` and `tests/properties.rs`), and for the cases where the
//! two modes differ by design, from the rule (the `Dual` docs).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tapegrad::{Binary, Dual, Graph, Scalar, Unary, Var};

/// The same `f64`, bit for bit (any NaN equals any NaN).
fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// A forward-mode derivative as reverse mode reports it: a zero is `+0` (reverse mode sums
/// from `+0`; forward mode may carry `-0`, as `d cos x` at 0 is `-sin 0`).
fn plus_zero(t: f64) -> f64 {
    t + 0.0
}

/// Values where the rules meet their special cases (as in `tests/singular_points.rs`),
/// and ordinary points inside every op's domain.
const POINTS: [f64; 26] = [
    0.0,
    -0.0,
    5e-324,
    -5e-324,
    1e-310,
    f64::MIN_POSITIVE,
    1e-160,
    1e300,
    f64::MAX,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
    710.0,
    -745.0,
    1.0,
    -1.0,
    2.0,
    0.5,
    -2.5,
    1e-300,
    0.3,
    -0.7,
    1.5,
    3.0,
    0.999,
    -0.25,
];

/// Adjoints (reverse) and tangent factors (forward) that the output's last edge applies:
/// `op(..) * w`. Those whose products round alike in either order (a quotient rescued as
/// `(w num) / den` in reverse mode and `(num / den) w` in forward mode).
const WEIGHTS: [f64; 5] = [1.0, 0.0, -1.0, f64::INFINITY, f64::NAN];

/// `what`'s forward-mode value and tangents against reverse mode's value and gradients.
#[track_caller]
fn check(what: &str, forward: Dual<3>, reverse: Var<'_>, wrt: &[Var<'_>]) -> Result<(), String> {
    let grads = reverse.backward();
    if !same(forward.value, reverse.value()) {
        return Err(format!(
            "{what}: value {} forward, {} reverse",
            forward.value,
            reverse.value()
        ));
    }
    for (k, &x) in wrt.iter().enumerate() {
        let (f, r) = (plus_zero(forward.tangents[k]), grads[x]);
        if !same(f, r) {
            return Err(format!("{what}: d/d{k} {f:e} forward, {r:e} reverse"));
        }
    }
    Ok(())
}

/// Collects failures so that one run reports all of them.
fn report(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failure(s), the first:\n{}",
        failures.len(),
        failures[..failures.len().min(20)].join("\n")
    );
}

#[test]
fn every_unary_op_gives_the_backward_numbers_at_every_point() {
    let mut failures = Vec::new();
    for &op in Unary::ALL {
        for x0 in POINTS {
            for w0 in WEIGHTS {
                let g = Graph::new();
                let (x, w) = (g.var(x0), g.var(w0));
                let reverse = x.apply(op) * w;
                let forward = Dual::<3>::unit(x0, 0).unary(op) * Dual::unit(w0, 1);
                let what = format!("{}({x0:e}) * {w0}", op.name());
                failures.extend(check(&what, forward, reverse, &[x, w]).err());
            }
        }
    }
    report(failures);
}

#[test]
fn every_binary_op_in_every_operand_combination_gives_the_backward_numbers() {
    let mut failures = Vec::new();
    for &op in Binary::ALL {
        for a0 in POINTS {
            for b0 in POINTS {
                if op == Binary::Powi && (b0.fract() != 0.0 || b0.abs() > 3.0) {
                    continue; // an integer exponent only
                }
                for w0 in WEIGHTS {
                    let g = Graph::new();
                    let (a, b, w) = (g.var(a0), g.var(b0), g.var(w0));
                    let (fa, fb, fw) =
                        (Dual::<3>::unit(a0, 0), Dual::unit(b0, 1), Dual::unit(w0, 2));
                    let name = op.name();
                    let mut cases = vec![(
                        format!("Var({a0:e}) {name} {b0:e}_f64, * {w0}"),
                        fa.binary_f64(op, b0) * fw,
                        a.try_binary(op, b0).expect("valid") * w,
                    )];
                    if op != Binary::Powi {
                        cases.push((
                            format!("Var({a0:e}) {name} Var({b0:e}), * {w0}"),
                            fa.binary(op, fb) * fw,
                            a.try_binary(op, b).expect("valid") * w,
                        ));
                        cases.push((
                            format!("{a0:e}_f64 {name} Var({b0:e}), * {w0}"),
                            Dual::constant(a0).binary(op, fb) * fw,
                            g.constant(a0).try_binary(op, b).expect("valid") * w,
                        ));
                    }
                    for (what, forward, reverse) in cases {
                        failures.extend(check(&what, forward, reverse, &[a, b, w]).err());
                    }
                }
            }
        }
    }
    report(failures);
}

/// The operators with an `f64` on either side take the table's rule for that constant, as
/// the tape's do.
#[test]
fn operators_with_a_constant_give_the_backward_numbers() {
    let mut failures = Vec::new();
    type Fwd = fn(Dual<3>, f64) -> Dual<3>;
    type Rev = for<'g> fn(Var<'g>, f64) -> Var<'g>;
    let cases: [(&str, Fwd, Rev); 8] = [
        ("x + c", |x, c| x + c, |x, c| x + c),
        ("x - c", |x, c| x - c, |x, c| x - c),
        ("x * c", |x, c| x * c, |x, c| x * c),
        ("x / c", |x, c| x / c, |x, c| x / c),
        ("c + x", |x, c| c + x, |x, c| c + x),
        ("c - x", |x, c| c - x, |x, c| c - x),
        ("c * x", |x, c| c * x, |x, c| c * x),
        ("c / x", |x, c| c / x, |x, c| c / x),
    ];
    for (name, fwd, rev) in cases {
        for x0 in POINTS {
            for c in POINTS {
                for w0 in WEIGHTS {
                    let g = Graph::new();
                    let (x, w) = (g.var(x0), g.var(w0));
                    let forward = fwd(Dual::unit(x0, 0), c) * Dual::unit(w0, 1);
                    let reverse = rev(x, c) * w;
                    let what = format!("{name} at x = {x0:e}, c = {c:e}, * {w0}");
                    failures.extend(check(&what, forward, reverse, &[x, w]).err());
                }
            }
        }
    }
    // Negation and a dual number on both sides of + and -.
    for x0 in POINTS {
        for y0 in POINTS {
            let g = Graph::new();
            let (x, y) = (g.var(x0), g.var(y0));
            let (fx, fy) = (Dual::<3>::unit(x0, 0), Dual::unit(y0, 1));
            let cases = [
                ("-x", -fx, -x),
                ("x + y", fx + fy, x + y),
                ("x - y", fx - fy, x - y),
                ("x * y", fx * fy, x * y),
                ("x / y", fx / fy, x / y),
            ];
            for (name, forward, reverse) in cases {
                let what = format!("{name} at ({x0:e}, {y0:e})");
                failures.extend(check(&what, forward, reverse, &[x, y]).err());
            }
        }
    }
    report(failures);
}

/// Sum, dot (with dual numbers and with `f64` data), logsumexp, amax and clamp, over
/// distinct operands (so that each input has one path), at pairs of singular values.
#[test]
fn the_nary_ops_take_the_tapes_partials_at_every_point() {
    let mut failures = Vec::new();
    for a0 in POINTS {
        for b0 in POINTS {
            for w0 in [1.0, 0.0, f64::NAN] {
                let g = Graph::new();
                let c0 = -1.5;
                let (a, b, c) = (g.var(a0), g.var(b0), g.var(c0));
                let w = g.var(w0);
                let (fa, fb, fc) = (Dual::<3>::unit(a0, 0), Dual::unit(b0, 1), Dual::unit(c0, 2));
                let fw = Dual::constant(w0);
                let cases = [
                    ("sum", Dual::sum([fa, fb, fc]) * fw, g.sum([a, b, c]) * w),
                    (
                        "dot",
                        Dual::dot(&[fa, fb], &[fc, Dual::constant(2.5)]) * fw,
                        g.dot(&[a, b], &[c, g.constant(2.5)]) * w,
                    ),
                    (
                        "dot_f64",
                        Dual::dot_f64(&[fa, fb, fc], &[b0, 0.5, a0]) * fw,
                        Var::dot_f64(&[a, b, c], &[b0, 0.5, a0]) * w,
                    ),
                    (
                        "logsumexp",
                        Dual::logsumexp(&[fa, fb, fc]) * fw,
                        g.logsumexp([a, b, c]) * w,
                    ),
                    (
                        "amax",
                        Dual::amax(&[fa, fb, fc]) * fw,
                        g.amax([a, b, c]) * w,
                    ),
                    (
                        "clamp",
                        fa.clamp(b0.min(c0), b0.max(c0)) * fw,
                        a.clamp(b0.min(c0), b0.max(c0)) * w,
                    ),
                ];
                // (clamp's bounds: min and max drop a NaN, so they are never NaN here.)
                for (name, forward, reverse) in cases {
                    let what = format!("{name} at ({a0:e}, {b0:e}, {c0}) * {w0}");
                    failures.extend(check(&what, forward, reverse, &[a, b, c]).err());
                }
            }
        }
    }
    report(failures);
}

/// More operands than the stack holds (16): amax with ties and logsumexp gather them on the
/// heap and take the same partials.
#[test]
fn the_nary_ops_over_many_operands_take_the_tapes_partials() {
    let xs: Vec<f64> = (0..40)
        .map(|i| ((i * 7) % 11) as f64 * 0.25 - 1.0)
        .collect();
    let g = Graph::new();
    let vars = g.vars(&xs);
    // The first input of every three along lane 0, the next along lane 1, ...
    let duals: Vec<Dual<3>> = xs
        .iter()
        .enumerate()
        .map(|(i, &x)| Dual::unit(x, i % 3))
        .collect();
    for (name, forward, reverse) in [
        ("amax", Dual::amax(&duals), g.amax(vars.iter().copied())),
        (
            "logsumexp",
            Dual::logsumexp(&duals),
            g.logsumexp(vars.iter().copied()),
        ),
        ("sum", Dual::sum(&duals), g.sum(vars.iter().copied())),
        (
            "dot",
            Dual::dot(&duals, &duals[..].iter().rev().copied().collect::<Vec<_>>()),
            {
                let rev: Vec<Var> = vars.iter().rev().copied().collect();
                g.dot(&vars, &rev)
            },
        ),
    ] {
        assert!(same(forward.value, reverse.value()), "{name} value");
        let grads = reverse.backward();
        for lane in 0..3 {
            // Each lane is the sum of the gradients of the inputs seeded on it.
            let want: f64 = (lane..xs.len()).step_by(3).map(|i| grads[vars[i]]).sum();
            approx::assert_relative_eq!(forward.tangents[lane], want, max_relative = 1e-13);
        }
    }
    // One input per lane, bit for bit: the softmax entries and the shared maximum.
    let few: Vec<f64> = (0..20)
        .map(|i| if i % 5 == 0 { 2.0 } else { i as f64 * 0.05 })
        .collect();
    let g = Graph::new();
    let vars = g.vars(&few);
    for k in 0..few.len() {
        let duals: Vec<Dual> = few
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if i == k {
                    Dual::variable(x)
                } else {
                    Dual::constant(x)
                }
            })
            .collect();
        for (name, forward, reverse) in [
            ("amax", Dual::amax(&duals), g.amax(vars.iter().copied())),
            (
                "logsumexp",
                Dual::logsumexp(&duals),
                g.logsumexp(vars.iter().copied()),
            ),
        ] {
            let r = reverse.backward()[vars[k]];
            assert!(
                same(plus_zero(forward.tangent()), r),
                "{name} d/dx{k}: {} against {r}",
                forward.tangent()
            );
        }
    }
}

/// A function of a few inputs through many ops, generic over the scalar.
fn mixed<T: Scalar>(x: &[T]) -> T {
    let s = T::sum(x.iter().map(|&v| v * v));
    let d = T::dot(&x[..2], &x[1..3]);
    let l = T::logsumexp(&[x[0], x[2], s.sqrt()]);
    (x[0].asinh() * x[1].atanh() + x[2].acosh().xlogy(s)) / d.cosh() + l.tanh() * x[1].powi(3)
}

/// `K` directions in one pass are `K` passes with one each, bit for bit: every lane takes
/// the same operations.
#[test]
fn k_directions_at_once_are_k_single_passes() {
    let x = [0.7, -0.4, 1.8];
    let directions = [
        [1.0, 0.0, 0.0],
        [0.5, -2.0, 0.25],
        [0.0, 0.0, 1.0],
        [3.0, 1.0, -1.0],
    ];
    let wide: Vec<Dual<4>> = (0..3)
        .map(|i| Dual::new(x[i], std::array::from_fn(|k| directions[k][i])))
        .collect();
    let all = mixed(&wide);
    for (k, v) in directions.iter().enumerate() {
        let single: Vec<Dual> = (0..3).map(|i| Dual::new(x[i], [v[i]])).collect();
        let one = mixed(&single);
        assert_eq!(one.value.to_bits(), all.value.to_bits());
        assert_eq!(
            one.tangent().to_bits(),
            all.tangents[k].to_bits(),
            "lane {k}"
        );
    }
    // And it is the gradient along each direction, to rounding.
    let g = Graph::new();
    let xs = g.vars(&x);
    let grads = mixed(&xs).backward().wrt_all(&xs);
    for (k, v) in directions.iter().enumerate() {
        let want: f64 = grads.iter().zip(v).map(|(g, v)| g * v).sum();
        approx::assert_relative_eq!(all.tangents[k], want, max_relative = 1e-14);
    }
}

/// The cases where forward and reverse mode differ by design (the `Dual` docs), so that a
/// change of either is seen.
#[test]
fn where_forward_and_reverse_mode_differ_by_design() {
    // A zero partial passes nothing of an infinite tangent (this was NaN: `inf * 0`).
    let y = Dual::variable(0.0).sqrt().relu();
    assert_eq!(y.tangent(), 0.0);
    let g = Graph::new();
    let x = g.var(0.0);
    assert_eq!(x.sqrt().relu().backward()[x], 0.0);

    // sqrt(x - x) at 0: the tangent of x - x is 0, so nothing passes through sqrt's
    // infinite partial; reverse mode sends +inf and -inf back to x.
    let x0 = Dual::variable(0.0);
    assert_eq!((x0 - x0).sqrt().tangent(), 0.0);
    assert!((x - x).sqrt().backward()[x].is_nan());

    // exp(ln x) at the smallest subnormal: forward mode's tangent of ln x overflows;
    // reverse mode meets the small factor e^(ln x) first.
    let t = Dual::variable(5e-324).ln().exp();
    assert_eq!(t.tangent(), f64::INFINITY);
    let s = g.var(5e-324);
    assert_eq!(s.ln().exp().backward()[s], 1.0);
    // A small tangent through the overflowed partial is rescued as (t / x), as dividing
    // would: d ln x = 1 / x, and t / 5e-324 with t = 1e-300 is 2e23, not inf.
    let small = Dual::new(5e-324, [1e-300]).ln();
    assert_eq!(small.tangent(), 1e-300 / 5e-324);
}

/// Comparisons compare values; over `Var` they are guards (a replay re-checks them).
#[test]
fn comparisons_compare_the_values() {
    let (a, b) = (Dual::<2>::unit(1.0, 0), Dual::<2>::unit(2.0, 1));
    assert!(a.lt(b) && a.le(1.0) && b.gt(a) && b.ge(2.0) && a.eq_value(1.0) && a.ne_value(b));
    let g = Graph::new();
    let x = g.var(1.0);
    let d: Dual<1, Var> = Dual::new(x, [g.constant(1.0)]);
    assert!(d.lt(2.0));
    let replay = tapegrad::Replay::new(d.value * 2.0, &[x]);
    assert_eq!(replay.guards(), 1);
}

#[test]
#[should_panic(expected = "Dual::unit direction 3 of a dual number with 3 tangents")]
fn a_unit_direction_past_the_tangents_is_refused() {
    let _ = Dual::<3>::unit(1.0, 3);
}

#[test]
#[should_panic(expected = "clamp needs lo <= hi")]
fn clamp_refuses_bad_bounds() {
    let _ = Dual::<2>::unit(1.0, 0).clamp(1.0, 0.0);
}

// ---------------------------------------------------------------------------------------
// No allocation per op.

/// The system allocator, counting allocations made by the current thread (tests run on
/// several threads).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to `System` unchanged; the count is a thread-local `Cell`
// with a const initialiser and no destructor, so counting neither allocates nor reenters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc`, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let r = f();
    (r, ALLOCATIONS.with(Cell::get) - before)
}

#[test]
fn unary_binary_and_short_nary_ops_allocate_nothing() {
    let x: Vec<Dual<8>> = (0..12)
        .map(|i| Dual::unit(0.1 * i as f64 + 0.05, i % 8))
        .collect();
    let data: Vec<f64> = (0..12).map(|i| i as f64 - 5.5).collect();
    let (y, count) = allocations_during(|| {
        let unary = Unary::ALL
            .iter()
            .fold(x[0], |acc, &op| acc + x[1].unary(op) * 1e-3);
        let binary = x[2].atan2(x[3]) * x[4].powf(x[5]) / x[6].hypot(2.0) - x[7].xlogy(x[8]);
        let singular = Dual::constant(0.0).sqrt() * x[9] + x[10].relu().max(x[11]);
        let nary = Dual::sum(&x)
            + Dual::dot(&x[..6], &x[6..])
            + Dual::dot_f64(&x, &data)
            + Dual::logsumexp(&x)
            + Dual::amax(&x)
            + x[0].clamp(0.0, 0.5);
        unary + binary + singular + nary
    });
    std::hint::black_box(y);
    assert_eq!(count, 0, "allocations during the forward pass");
    // The counter counts: gathering more than 16 operands allocates.
    let many = vec![x[0]; 17];
    let (_, count) = allocations_during(|| Dual::logsumexp(&many));
    assert!(count > 0);
}
