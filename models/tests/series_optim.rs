//! SGD and AdamW follow their defining formulas: the series' worked AdamW example, and
//! closed forms over several steps.

use approx::assert_relative_eq;
use tapegrad::{Gradients, Graph};
use tapegrad_models::transformer::{AdamW, AdamWConfig, Sgd};

#[test]
fn adamw_reproduces_series_worked_example() {
    // The series' optimizer chapter: E_token[<BOS>][0] = 0.024634, g = -0.352893, lr 0.001,
    // beta1 0.9, beta2 0.999, eps 1e-8, wd 0.01 -> 0.025634 after step 1.
    let mut adamw = AdamW::new(1, AdamWConfig::default());
    let mut theta = [0.024634];
    adamw.update(&mut theta, &[-0.352893]);
    assert_eq!(format!("{:.6}", theta[0]), "0.025634");
    // By hand: m_hat = g, v_hat = g^2 at t = 1, so
    // theta = 0.024634 (1 - 1e-5) + 0.001 * 0.352893 / (0.352893 + 1e-8).
    let by_hand = 0.024634 * (1.0 - 1e-5) + 0.001 * 0.352893 / (0.352893 + 1e-8);
    assert_relative_eq!(theta[0], by_hand, max_relative = 1e-15);
}

#[test]
fn adamw_with_constant_gradient_follows_geometric_closed_form() {
    // With a constant g: m_t = g (1 - b1^t), v_t = g^2 (1 - b2^t), so m_hat = g and
    // v_hat = g^2 at every step, and the update is the affine map
    // theta <- a theta - s with a = 1 - lr wd, s = lr g / (|g| + eps), whose t-th iterate is
    // theta_t = a^t theta_0 - s (1 - a^t) / (1 - a).
    let config = AdamWConfig {
        lr: 0.01,
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let (theta0, g) = (0.7, -2.5);
    let a: f64 = 1.0 - config.lr * config.weight_decay;
    let s = config.lr * g / (g.abs() + config.eps);
    let mut adamw = AdamW::new(1, config);
    let mut theta = [theta0];
    for t in 1..=50 {
        adamw.update(&mut theta, &[g]);
        let closed = a.powi(t) * theta0 - s * (1.0 - a.powi(t)) / (1.0 - a);
        assert_relative_eq!(theta[0], closed, max_relative = 1e-12);
    }
    assert_eq!(adamw.steps(), 50);
}

#[test]
fn adamw_two_steps_match_hand_computation() {
    // g1 = 0.2, g2 = -0.4, theta0 = 1, series hyperparameters.
    // Step 1: m = 0.02, v = 0.001 * 0.04 = 4e-5; m_hat = 0.2, v_hat = 0.04;
    //   theta1 = 1 (1 - 1e-5) - 0.001 * 0.2 / (0.2 + 1e-8).
    // Step 2: m = 0.9 * 0.02 + 0.1 * -0.4 = -0.022; v = 0.999 * 4e-5 + 0.001 * 0.16 = 1.9996e-4;
    //   m_hat = -0.022 / (1 - 0.81) = -0.022 / 0.19; v_hat = 1.9996e-4 / (1 - 0.998001);
    //   theta2 = theta1 (1 - 1e-5) - 0.001 m_hat / (sqrt(v_hat) + 1e-8).
    let theta1 = 1.0 * (1.0 - 1e-5) - 0.001 * 0.2 / (0.2 + 1e-8);
    let m_hat: f64 = -0.022 / 0.19;
    let v_hat: f64 = 1.9996e-4 / 0.001999;
    let theta2 = theta1 * (1.0 - 1e-5) - 0.001 * m_hat / (v_hat.sqrt() + 1e-8);

    let mut adamw = AdamW::new(1, AdamWConfig::default());
    let mut theta = [1.0];
    adamw.update(&mut theta, &[0.2]);
    assert_relative_eq!(theta[0], theta1, max_relative = 1e-14);
    adamw.update(&mut theta, &[-0.4]);
    assert_relative_eq!(theta[0], theta2, max_relative = 1e-12);
}

#[test]
fn adamw_weight_decay_applies_before_the_update_even_at_zero_gradient() {
    // g = 0: m = v = 0, the adaptive term is 0 / (0 + eps) = 0, and only the decoupled
    // decay acts: theta_t = theta_0 (1 - lr wd)^t.
    let config = AdamWConfig {
        lr: 0.1,
        weight_decay: 0.5,
        ..AdamWConfig::default()
    };
    let mut adamw = AdamW::new(2, config);
    let mut theta = [3.0, -1.0];
    for _ in 0..10 {
        adamw.update(&mut theta, &[0.0, 0.0]);
    }
    assert_relative_eq!(theta[0], 3.0 * 0.95f64.powi(10), max_relative = 1e-14);
    assert_relative_eq!(theta[1], -0.95f64.powi(10), max_relative = 1e-14);
}

#[test]
fn adamw_keeps_separate_moments_per_parameter() {
    // Two parameters with opposite constant gradients move in opposite directions by the
    // same amount (no decay): the moments must not be shared.
    let config = AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    };
    let mut adamw = AdamW::new(2, config);
    let mut theta = [0.0, 0.0];
    for _ in 0..5 {
        adamw.update(&mut theta, &[1.0, -3.0]);
    }
    // Each step moves by lr |g| / (|g| + eps) ~ lr.
    assert_relative_eq!(theta[0], -5.0 * 0.001 / (1.0 + 1e-8), max_relative = 1e-12);
    assert_relative_eq!(
        theta[1],
        5.0 * 0.001 * 3.0 / (3.0 + 1e-8),
        max_relative = 1e-12
    );
}

#[test]
fn sgd_on_quadratic_follows_closed_form() {
    // f = theta^2 / 2 has gradient theta, so theta_t = theta_0 (1 - lr)^t.
    let mut sgd = Sgd::new(0.3);
    let mut theta = [2.0];
    for t in 1..=20 {
        let g = [theta[0]];
        sgd.update(&mut theta, &g);
        assert_relative_eq!(theta[0], 2.0 * 0.7f64.powi(t), max_relative = 1e-13);
    }
}

#[test]
fn steps_on_vars_equal_updates_on_values() {
    // The Var form reads tape gradients and writes through Graph::set_value; it must give
    // exactly the f64 form's numbers. f(w) = sum_i (i + 1) w_i^2, gradient 2 (i + 1) w_i.
    let g = Graph::new();
    let start = [0.5, -1.5, 2.0];
    let w = g.vars(&start);
    let mark = g.mark();
    let mut adamw = AdamW::new(3, AdamWConfig::default());
    let mut sgd = Sgd::new(0.01);
    let mut plain = start;
    let mut plain_adamw = AdamW::new(3, AdamWConfig::default());
    let mut plain_sgd = Sgd::new(0.01);
    let mut grads = Gradients::new();
    for step in 0..10 {
        let terms: Vec<_> = w
            .iter()
            .enumerate()
            .map(|(i, &wi)| wi * wi * (i as f64 + 1.0))
            .collect();
        g.sum(terms).backward_into(&mut grads);
        g.release(mark);
        let by_hand: Vec<f64> = plain
            .iter()
            .enumerate()
            .map(|(i, &p)| 2.0 * (i as f64 + 1.0) * p)
            .collect();
        if step % 2 == 0 {
            adamw.step(&w, &grads);
            plain_adamw.update(&mut plain, &by_hand);
        } else {
            sgd.step(&w, &grads);
            plain_sgd.update(&mut plain, &by_hand);
        }
        let values: Vec<f64> = w.iter().map(|x| x.value()).collect();
        assert_eq!(values, plain, "step {step}");
        assert_eq!(g.len(), 3);
    }
}

#[test]
#[should_panic(expected = "release those nodes")]
fn stepping_before_release_is_refused() {
    // The loss node still uses w; updating w would leave it stale.
    let g = Graph::new();
    let w = g.vars(&[1.0]);
    let grads = (w[0] * w[0]).backward();
    Sgd::new(0.1).step(&w, &grads);
}

#[test]
#[should_panic(expected = "this AdamW was made for 2 parameters, got 3")]
fn adamw_rejects_wrong_parameter_count() {
    AdamW::new(2, AdamWConfig::default()).update(&mut [0.0; 3], &[0.0; 3]);
}

#[test]
#[should_panic(expected = "3 parameters but 2 gradients")]
fn sgd_rejects_mismatched_gradients() {
    Sgd::new(0.1).update(&mut [0.0; 3], &[0.0; 2]);
}

#[test]
#[should_panic(expected = "beta2 must be in [0, 1), got 1")]
fn adamw_rejects_beta_of_one() {
    // beta2 = 1 would make 1 - beta2^t = 0 and v_hat = 0 / 0.
    let _ = AdamW::new(
        1,
        AdamWConfig {
            beta2: 1.0,
            ..AdamWConfig::default()
        },
    );
}

#[test]
#[should_panic(expected = "learning rate must be finite and >= 0, got NaN")]
fn sgd_rejects_nan_learning_rate() {
    let _ = Sgd::new(f64::NAN);
}
