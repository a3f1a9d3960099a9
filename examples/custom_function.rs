//! A function tapegrad does not have, defined by the user with its own derivative: the
//! Lambert W function (the principal branch, `W(x) e^W(x) = x` for `x >= -1/e`), a
//! solver's result. Its value comes from Halley's iteration; its derivative from the
//! implicit equation: differentiating `W e^W = x` gives `W' e^W (1 + W) = 1`, so
//! `W'(x) = 1 / (e^W (1 + W))`, written in terms of the value `W` itself. Written over
//! `Scalar` (a `ScalarFn`), that one rule gives the first derivative and, on graph nodes,
//! every higher one.
//!
//! Run: `cargo run --example custom_function`. The expected numbers are mpmath's
//! (`mpmath.lambertw`, 30 digits, and `mpmath.diff` for the second derivative).

use std::sync::Arc;

use tapegrad::check::{Tolerance, gradcheck};
use tapegrad::higher::gradgradcheck;
use tapegrad::{CustomFn, Graph, Scalar, ScalarFn};

/// The Lambert W function, principal branch.
struct LambertW;

impl LambertW {
    /// `W(x)` by Halley's iteration on `f(w) = w e^w - x` (cubic convergence), from
    /// `ln(1 + x)`, a start within a factor 2 on the whole branch.
    fn solve(x: f64) -> f64 {
        if x == 0.0 {
            return 0.0;
        }
        if x < -1.0 / std::f64::consts::E || x.is_nan() {
            return f64::NAN;
        }
        let mut w = x.ln_1p();
        for _ in 0..64 {
            let e = w.exp();
            let f = w * e - x;
            let step = f / (e * (w + 1.0) - (w + 2.0) * f / (2.0 * w + 2.0));
            w -= step;
            if step.abs() <= 4.0 * f64::EPSILON * w.abs() {
                break;
            }
        }
        w
    }
}

impl ScalarFn for LambertW {
    fn name(&self) -> &'static str {
        "lambert_w"
    }
    fn value(&self, xs: &[f64]) -> f64 {
        Self::solve(xs[0])
    }
    /// From the implicit equation: `W' = 1 / (e^W (1 + W))`, with `y = W(x)`.
    fn partials<T: Scalar>(&self, _xs: &[T], y: T, out: &mut [T]) {
        out[0] = (y.exp() * (y + 1.0)).recip();
    }
}

fn main() {
    let w: Arc<dyn CustomFn> = Arc::new(LambertW);

    // (x, W(x), W'(x), W''(x)) from mpmath at 30 digits, kept at 17 significant digits.
    #[allow(clippy::excessive_precision, reason = "mpmath's digits, as printed")]
    let expected = [
        (
            1.0,
            0.567_143_290_409_783_87,
            0.361_896_256_634_889_22,
            -0.214_540_646_282_143_71,
        ),
        (
            2.0,
            0.852_605_502_013_725_49,
            0.230_109_837_492_917_25,
            -0.081_532_195_550_432_12,
        ),
        (
            -0.2,
            -0.259_171_101_819_073_76,
            1.749_196_760_921_835_9,
            -7.189_778_342_381_777,
        ),
        (
            10.0,
            1.745_528_002_740_699_4,
            0.063_577_133_469_345_105,
            -0.005_514_283_068_880_89,
        ),
    ];
    println!("     x        W(x)                 W'(x)                W''(x)");
    for (x, w0, w1, w2) in expected {
        let g = Graph::new();
        let v = g.var(x);
        let y = g.custom(&w, &[v]); // one node, named lambert_w
        let d1 = y.grad(&[v])[0];
        let d2 = d1.grad(&[v])[0];
        println!(
            "{x:>6}  {:<20} {:<20} {:<20}",
            y.value(),
            d1.value(),
            d2.value()
        );
        approx::assert_relative_eq!(y.value(), w0, max_relative = 1e-15);
        approx::assert_relative_eq!(y.backward()[v], w1, max_relative = 1e-14);
        approx::assert_relative_eq!(d1.value(), w1, max_relative = 1e-14);
        approx::assert_relative_eq!(d2.value(), w2, max_relative = 1e-13);
        assert_eq!(y.op_name(), "lambert_w");
    }

    // The way to test a derivative you wrote: gradcheck (first order, central differences
    // of your value) and gradgradcheck (second order), here through a composite use.
    let report = gradcheck(
        |g, v| g.custom(&w, &[v[0] * v[1]]).exp() + v[1],
        &[0.7, 1.3],
        Tolerance::default(),
    );
    println!("{report}");
    report.assert_passed();
    let report = gradgradcheck(
        |g, v| g.custom(&w, &[v[0] * v[1]]) * v[0],
        &[0.7, 1.3],
        Tolerance::default(),
    );
    println!("{report}");
    report.assert_passed();
}
