//! Softmax cross-entropy on the tape gives the chapter's closed form,
//! `dL/dlogit_i = P_i - [i == target]`, for the chapter's own data, for thousands of random
//! logit vectors (sum and mean of per-row losses, composed and stable forms), and for
//! extreme logits (stable form); and the functional forms pass the gradient checker.
//!
//! Reference values are computed here in plain `f64`, independently of the library:
//! `P_i = e^(l_i - m) / sum_j e^(l_j - m)` with `m = max l`, and the loss
//! `ln(sum_j e^(l_j - m)) - (l_t - m)`.

use tapegrad::check::{Tolerance, gradcheck};
use tapegrad::{Graph, Var, functional};

/// The chapter's probabilities (rounded to 4 places; row 2 sums to 0.9999).
const PROBS: [[f64; 6]; 4] = [
    [0.1785, 0.2007, 0.1759, 0.1254, 0.1563, 0.1632],
    [0.1836, 0.1969, 0.1805, 0.1233, 0.1500, 0.1657],
    [0.1795, 0.2050, 0.1782, 0.1207, 0.1437, 0.1728],
    [0.1855, 0.2017, 0.1771, 0.1271, 0.1391, 0.1695],
];
const TARGETS: [usize; 4] = [3, 4, 5, 2];

/// SplitMix64: a small seeded generator, so the random cases are the same on every run.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
    /// Uniform in lo..=hi.
    fn index(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// The softmax in plain f64, shifted by the maximum.
fn reference_softmax(logits: &[f64]) -> Vec<f64> {
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

/// `-ln softmax(logits)[target]` in plain f64.
fn reference_loss(logits: &[f64], target: usize) -> f64 {
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = logits.iter().map(|l| (l - m).exp()).sum();
    s.ln() - (logits[target] - m)
}

/// `P - onehot(target)`.
fn closed_form(p: &[f64], target: usize) -> Vec<f64> {
    let mut g = p.to_vec();
    g[target] -= 1.0;
    g
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[derive(Clone, Copy, Debug)]
enum Form {
    Composed,
    Stable,
}

fn loss<'g>(form: Form, logits: &[Var<'g>], target: usize) -> Var<'g> {
    match form {
        Form::Composed => functional::cross_entropy_composed(logits, target),
        Form::Stable => functional::cross_entropy(logits, target),
    }
}

#[test]
fn chapter_table_gradient_is_p_minus_onehot_for_all_24_entries() {
    for form in [Form::Composed, Form::Stable] {
        let g = Graph::new();
        let rows: Vec<Vec<Var>> = PROBS.iter().map(|r| g.vars(&r.map(f64::ln))).collect();
        let total = g.sum(rows.iter().zip(TARGETS).map(|(l, t)| loss(form, l, t)));
        let grads = total.backward();
        for (row, t) in rows.iter().zip(TARGETS) {
            // P is the tape's softmax of ln P: the row renormalised to sum to 1.
            let p: Vec<f64> = functional::softmax_composed(row)
                .iter()
                .map(Var::value)
                .collect();
            let diff = max_abs_diff(&grads.wrt_all(row), &closed_form(&p, t));
            assert!(diff < 1e-12, "{form:?}: |tape - (P - onehot)| = {diff:e}");
        }
    }
}

#[test]
fn chapter_table_gradient_rows_sum_to_zero() {
    // sum_i (P_i - [i = t]) = 1 - 1 = 0 for a softmax P, including row 2, whose printed
    // probabilities sum to 0.9999 (the chapter reports that row "off by -1.00e-04").
    let g = Graph::new();
    let rows: Vec<Vec<Var>> = PROBS.iter().map(|r| g.vars(&r.map(f64::ln))).collect();
    let total = g.sum(
        rows.iter()
            .zip(TARGETS)
            .map(|(l, t)| functional::cross_entropy_composed(l, t)),
    );
    let grads = total.backward();
    for row in &rows {
        let sum: f64 = grads.wrt_all(row).iter().sum();
        assert!(sum.abs() < 1e-12, "row sums to {sum:e}");
    }
    let chapter_row2: f64 = PROBS[2].iter().sum::<f64>() - 1.0;
    assert!(
        (chapter_row2 + 1e-4).abs() < 1e-12,
        "the chapter's rounding"
    );
}

#[test]
fn chapter_row_2_is_renormalised_by_the_softmax_of_ln_p() {
    // softmax(ln P)_i = P_i / sum_j P_j, so row 2 is divided by 0.9999.
    let g = Graph::new();
    let row = g.vars(&PROBS[2].map(f64::ln));
    let p = functional::softmax_composed(&row);
    let sum: f64 = PROBS[2].iter().sum();
    for (pi, chapter) in p.iter().zip(PROBS[2]) {
        approx::assert_relative_eq!(pi.value(), chapter / sum, max_relative = 1e-14);
    }
    approx::assert_relative_eq!(p[5].value(), 0.1728 / 0.9999, max_relative = 1e-14);
}

#[test]
fn chapter_losses_match_minus_ln_p() {
    // L_i = -ln P(target) with P = the renormalised row.
    let g = Graph::new();
    for (row, t) in PROBS.iter().zip(TARGETS) {
        let l = g.vars(&row.map(f64::ln));
        let expected = -(row[t] / row.iter().sum::<f64>()).ln();
        for form in [Form::Composed, Form::Stable] {
            approx::assert_relative_eq!(loss(form, &l, t).value(), expected, max_relative = 1e-14);
        }
    }
}

/// Checks a batch of rows: the loss (sum or mean of per-row losses) against the reference,
/// and every gradient against `(P - onehot) * scale` within 1e-12.
fn check_batch(form: Form, rows: &[Vec<f64>], targets: &[usize], mean: bool) -> (f64, Vec<f64>) {
    let g = Graph::with_capacity(rows.iter().map(|r| 4 * r.len() + 4).sum());
    let vars: Vec<Vec<Var>> = rows.iter().map(|r| g.vars(r)).collect();
    let per_row: Vec<Var> = vars
        .iter()
        .zip(targets)
        .map(|(l, &t)| loss(form, l, t))
        .collect();
    let n = rows.len() as f64;
    let total = g.sum(per_row.iter().copied());
    let objective = if mean { total / n } else { total };
    let scale = if mean { 1.0 / n } else { 1.0 };

    let expected: f64 = rows
        .iter()
        .zip(targets)
        .map(|(r, &t)| reference_loss(r, t))
        .sum::<f64>()
        * scale;
    let value = objective.value();
    assert!(
        (value - expected).abs() <= 1e-12 * expected.abs().max(1.0),
        "{form:?}: loss {value} vs reference {expected}"
    );

    let grads = objective.backward();
    let mut all = Vec::new();
    for ((l, r), &t) in vars.iter().zip(rows).zip(targets) {
        let tape = grads.wrt_all(l);
        let expected: Vec<f64> = closed_form(&reference_softmax(r), t)
            .iter()
            .map(|x| x * scale)
            .collect();
        let diff = max_abs_diff(&tape, &expected);
        assert!(
            diff < 1e-12,
            "{form:?}, mean {mean}, length {}: |tape - (P - onehot)| = {diff:e}",
            r.len()
        );
        let row_sum: f64 = tape.iter().sum();
        assert!(row_sum.abs() < 1e-12, "row sums to {row_sum:e}");
        all.extend(tape);
    }
    (value, all)
}

#[test]
fn random_logits_gradient_is_p_minus_onehot_sum_and_mean_composed_and_stable() {
    let mut rng = Rng(0x5EED_0001);
    let mut vectors = 0;
    while vectors < 2_000 {
        // A batch of 1 to 4 rows of lengths 2 to 1,000, logits of scale 0.1 to 50 (the
        // composed form stays finite: e^50 * 1000 is far below f64::MAX).
        let batch = rng.index(1, 4);
        let scale = [0.1, 1.0, 5.0, 20.0, 50.0][rng.index(0, 4)];
        let rows: Vec<Vec<f64>> = (0..batch)
            .map(|_| {
                let n = rng.index(2, 1_000);
                (0..n).map(|_| rng.range(-scale, scale)).collect()
            })
            .collect();
        let targets: Vec<usize> = rows.iter().map(|r| rng.index(0, r.len() - 1)).collect();
        let mean = rng.uniform() < 0.5;
        let (composed_loss, composed_grads) = check_batch(Form::Composed, &rows, &targets, mean);
        let (stable_loss, stable_grads) = check_batch(Form::Stable, &rows, &targets, mean);
        // Composed and stable agree where both are finite.
        assert!(composed_loss.is_finite() && stable_loss.is_finite());
        assert!((composed_loss - stable_loss).abs() <= 1e-12 * stable_loss.abs().max(1.0));
        assert!(max_abs_diff(&composed_grads, &stable_grads) < 1e-12);
        vectors += batch;
    }
}

#[test]
fn stable_form_on_extreme_logits_is_finite_and_exact() {
    // (logits, target, loss, gradient P - onehot), worked by hand: e^-2000 and e^-1000
    // underflow to 0 in f64, so those probabilities are exactly 0 and 1.
    let third = 1.0 / 3.0;
    let cases: Vec<(Vec<f64>, usize, f64, Vec<f64>)> = vec![
        (vec![1000.0, -1000.0], 1, 2000.0, vec![1.0, -1.0]),
        (vec![1000.0, -1000.0], 0, 0.0, vec![0.0, 0.0]),
        (vec![-1000.0, -1000.0], 0, 2f64.ln(), vec![-0.5, 0.5]),
        (
            vec![1000.0, 1000.0, 1000.0],
            2,
            3f64.ln(),
            vec![third, third, third - 1.0],
        ),
        (vec![1000.0, 0.0, -1000.0], 1, 1000.0, vec![1.0, -1.0, 0.0]),
        // Two maxima one apart: loss ln(1 + e^-1) at the top, 1 + ln(1 + e^-1) below.
        (
            vec![1000.0, 999.0, -1000.0],
            1,
            1.0 + (-1f64).exp().ln_1p(),
            {
                let p0 = 1.0 / (1.0 + (-1f64).exp());
                vec![p0, (1.0 - p0) - 1.0, 0.0]
            },
        ),
    ];
    for (logits, target, expected_loss, expected_grad) in cases {
        let g = Graph::new();
        let l = g.vars(&logits);
        let loss = functional::cross_entropy(&l, target);
        assert!(loss.value().is_finite());
        approx::assert_relative_eq!(
            loss.value(),
            expected_loss,
            epsilon = 1e-15,
            max_relative = 1e-15
        );
        let grads = loss.backward().wrt_all(&l);
        assert!(grads.iter().all(|x| x.is_finite()), "{grads:?}");
        assert!(
            max_abs_diff(&grads, &expected_grad) < 1e-15,
            "{logits:?}: {grads:?}"
        );
        // The composed form overflows here: e^1000 is infinite in f64 (or, at -1000,
        // every term underflows to 0 and 0/0 is NaN). This is why the stable form exists.
        let composed = functional::cross_entropy_composed(&l, target).value();
        assert!(
            !composed.is_finite(),
            "{logits:?}: composed gave {composed}"
        );
    }
}

#[test]
fn stable_form_on_random_extreme_logits_matches_closed_form() {
    let mut rng = Rng(0x5EED_0002);
    for _ in 0..500 {
        let n = rng.index(2, 50);
        // Mixed: some logits near ±1000, some moderate.
        let logits: Vec<f64> = (0..n)
            .map(|_| match rng.index(0, 2) {
                0 => rng.range(990.0, 1000.0),
                1 => rng.range(-1000.0, -990.0),
                _ => rng.range(-5.0, 5.0),
            })
            .collect();
        let target = rng.index(0, n - 1);
        let g = Graph::new();
        let l = g.vars(&logits);
        let loss = functional::cross_entropy(&l, target);
        let expected = reference_loss(&logits, target);
        assert!(loss.value().is_finite());
        assert!((loss.value() - expected).abs() <= 1e-13 * expected.abs().max(1.0));
        let grads = loss.backward().wrt_all(&l);
        let diff = max_abs_diff(&grads, &closed_form(&reference_softmax(&logits), target));
        assert!(diff < 1e-12, "{diff:e}");
    }
}

#[test]
fn softmax_and_log_softmax_are_finite_at_extremes() {
    let l = [1000.0_f64, -1000.0, 0.0];
    assert_eq!(functional::softmax(&l), vec![1.0, 0.0, 0.0]);
    assert_eq!(functional::log_softmax(&l), vec![0.0, -2000.0, -1000.0]);
    assert_eq!(functional::logsumexp(&l), 1000.0);
}

#[test]
fn same_code_gives_the_same_values_on_f64_and_on_the_tape() {
    // The functions are generic over Scalar and run the same f64 operations either way.
    let logits = [0.3, -1.2, 2.5, 0.0, -0.7];
    let g = Graph::new();
    let l = g.vars(&logits);
    let values = |v: Vec<Var>| v.iter().map(Var::value).collect::<Vec<_>>();
    assert_eq!(
        values(functional::softmax(&l)),
        functional::softmax(&logits)
    );
    assert_eq!(
        values(functional::log_softmax(&l)),
        functional::log_softmax(&logits)
    );
    assert_eq!(
        values(functional::softmax_composed(&l)),
        functional::softmax_composed(&logits)
    );
    assert_eq!(
        functional::logsumexp(&l).value(),
        functional::logsumexp(&logits)
    );
    for t in 0..logits.len() {
        assert_eq!(
            functional::cross_entropy(&l, t).value(),
            functional::cross_entropy(&logits, t)
        );
        assert_eq!(
            functional::cross_entropy_composed(&l, t).value(),
            functional::cross_entropy_composed(&logits, t)
        );
    }
}

/// Fixed weights that turn a vector function into a scalar for gradcheck: checking
/// `sum_i w_i f_i(x)` with generic weights checks the whole Jacobian along w.
fn weights(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| 0.3 + 0.7 * ((i * 7919) % 13) as f64 / 13.0 - 0.5)
        .collect()
}

fn random_points(seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Rng(seed);
    (0..20)
        .map(|_| {
            let n = rng.index(1, 12);
            let scale = [0.5, 3.0, 30.0][rng.index(0, 2)];
            (0..n).map(|_| rng.range(-scale, scale)).collect()
        })
        .collect()
}

#[test]
fn gradcheck_passes_on_softmax() {
    for at in random_points(11) {
        let w = weights(at.len());
        for composed in [false, true] {
            let report = gradcheck(
                |g, l| {
                    let p = if composed {
                        functional::softmax_composed(l)
                    } else {
                        functional::softmax(l)
                    };
                    g.dot(&p, &w)
                },
                &at,
                Tolerance::default(),
            );
            report.assert_passed();
        }
    }
}

#[test]
fn gradcheck_passes_on_log_softmax_and_logsumexp() {
    for at in random_points(12) {
        let w = weights(at.len());
        gradcheck(
            |g, l| g.dot(&functional::log_softmax(l), &w),
            &at,
            Tolerance::default(),
        )
        .assert_passed();
        gradcheck(|_, l| functional::logsumexp(l), &at, Tolerance::default()).assert_passed();
    }
}

#[test]
fn gradcheck_passes_on_cross_entropy_both_forms() {
    for (k, at) in random_points(13).into_iter().enumerate() {
        let target = k % at.len();
        gradcheck(
            |_, l| functional::cross_entropy(l, target),
            &at,
            Tolerance::default(),
        )
        .assert_passed();
        gradcheck(
            |_, l| functional::cross_entropy_composed(l, target),
            &at,
            Tolerance::default(),
        )
        .assert_passed();
    }
}

#[test]
fn gradcheck_passes_on_the_chapters_whole_loss() {
    let at: Vec<f64> = PROBS.iter().flatten().map(|p| p.ln()).collect();
    let report = gradcheck(
        |g, l| {
            let losses: Vec<Var> = l
                .chunks(6)
                .zip(TARGETS)
                .map(|(row, t)| functional::cross_entropy_composed(row, t))
                .collect();
            g.sum(losses)
        },
        &at,
        Tolerance::default(),
    );
    report.assert_passed();
    assert_eq!(report.entries.len(), 24);
}

#[test]
#[should_panic(expected = "target class 6 is out of range for 6 logits")]
fn cross_entropy_with_target_out_of_range_panics_clearly() {
    let g = Graph::new();
    let l = g.vars(&[0.0; 6]);
    functional::cross_entropy(&l, 6);
}

#[test]
#[should_panic(expected = "no logits")]
fn softmax_of_no_logits_panics_clearly() {
    functional::softmax::<f64>(&[]);
}

#[test]
fn try_forms_report_bad_input() {
    let g = Graph::new();
    let l = g.vars(&[0.0, 1.0]);
    let none: [Var; 0] = [];
    let err = functional::try_cross_entropy_composed(&l, 2).unwrap_err();
    assert!(err.to_string().contains("cross_entropy_composed"), "{err}");
    assert!(err.to_string().contains("target class 2"), "{err}");
    assert!(functional::try_cross_entropy(&none, 0).is_err());
    assert!(functional::try_log_softmax(&none).is_err());
    assert!(functional::try_softmax_composed(&none).is_err());
    assert!(functional::try_logsumexp(&none).is_err());
    // nothing was recorded by the failed calls
    assert_eq!(g.len(), 2);
}
