//! `optim::Optimizer` against PyTorch's published algorithms (the `torch.optim` docs, in
//! the order of operations of torch's single-tensor code), computed independently in
//! CPython 3.11 for fixed gradient sequences; against closed forms; and its state saved
//! and restored through safetensors.

use tapegrad::Graph;
use tapegrad::nn::{ParamError, Params, StateDict};
use tapegrad::optim::{AdamConfig, Optimizer, Schedule, SgdConfig};

/// The gradients fed at steps 1 to 4, whatever the parameters (as if the loss were linear
/// with changing slopes), so the expected values depend on the update rule alone.
const GRADS: [[f64; 3]; 4] = [
    [0.5, -1.5, 2.0],
    [0.25, 1.0, -3.0],
    [-0.75, 0.5, 1.0],
    [1.0, -2.0, 0.125],
];
const THETA0: [f64; 3] = [1.0, -2.0, 0.5];

fn run(mut make: impl FnMut(&Params) -> Optimizer) -> (Params, Optimizer) {
    let mut params = Params::new();
    params.add("w", &[3], THETA0.to_vec());
    let mut opt = make(&params);
    for g in GRADS {
        let grads = params.grads_from(g.to_vec());
        opt.step(&mut params, &grads).unwrap();
    }
    (params, opt)
}

fn assert_all_close(got: &[f64], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= rel * b.abs(),
            "entry {i}: got {a}, want {b} (relative {:e})",
            ((a - b) / b).abs()
        );
    }
}

#[test]
fn sgd_without_momentum_is_gradient_descent() {
    let (params, _) = run(|p| Optimizer::sgd(p, SgdConfig::new(0.1)));
    // theta - 0.1 * (sum of the four gradients): sums 1.0, -2.0, 0.125.
    assert_all_close(params.as_slice(), &[0.9, -1.8, 0.4875], 1e-15);
}

#[test]
fn sgd_momentum_matches_a_hand_computed_run() {
    let config = SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.1)
    };
    let (params, _) = run(|p| Optimizer::sgd(p, config));
    // Entry 0: the buffer is g at step 1, then 0.9 b + g: 0.5, 0.7, -0.12, 0.892; their sum
    // 1.972 times lr 0.1 is subtracted from 1: 0.8028. (CPython agrees for all three.)
    assert_all_close(params.as_slice(), &[0.8028, -1.65015, 0.4227], 1e-15);
}

#[test]
fn sgd_dampening_weight_decay_and_nesterov_match_pytorchs_algorithm() {
    let damped = SgdConfig {
        momentum: 0.9,
        dampening: 0.5,
        weight_decay: 0.01,
        ..SgdConfig::new(0.1)
    };
    let (params, _) = run(|p| Optimizer::sgd(p, damped));
    let want = [0.8094173890813748, -1.5552429756689996, 0.1149736092500625];
    assert_all_close(params.as_slice(), &want, 1e-15);

    let nesterov = SgdConfig {
        momentum: 0.9,
        weight_decay: 0.01,
        nesterov: true,
        ..SgdConfig::new(0.1)
    };
    let (params, _) = run(|p| Optimizer::sgd(p, nesterov));
    let want = [0.7114158608163371, -1.4627631986692795, 0.4132253424987861];
    assert_all_close(params.as_slice(), &want, 1e-15);
}

#[test]
fn adam_and_adamw_match_pytorchs_algorithm() {
    let cases = [
        (
            AdamConfig {
                lr: 0.01,
                ..AdamConfig::default()
            },
            false,
            [0.9777109072391162, -1.9852940067619806, 0.4925313241640478],
        ),
        (
            // Adam's weight decay is an L2 penalty added to the gradient.
            AdamConfig {
                lr: 0.01,
                weight_decay: 0.1,
                ..AdamConfig::default()
            },
            false,
            [0.974546327757106, -1.9808853784050002, 0.4918532561556087],
        ),
        (
            // AdamW's is decoupled: theta (1 - lr wd) before each step.
            AdamConfig {
                lr: 0.01,
                weight_decay: 0.1,
                ..AdamConfig::default()
            },
            true,
            [0.9737646877520619, -1.977338225541005, 0.4905592039480387],
        ),
        (
            AdamConfig {
                lr: 0.05,
                beta1: 0.85,
                beta2: 0.99,
                eps: 1e-6,
                weight_decay: 0.01,
            },
            true,
            [0.8888168759574026, -1.9247567969407406, 0.4634743225452817],
        ),
    ];
    for (config, decoupled, want) in cases {
        let (params, opt) = run(|p| {
            if decoupled {
                Optimizer::adamw(p, config)
            } else {
                Optimizer::adam(p, config)
            }
        });
        assert_all_close(params.as_slice(), &want, 1e-15);
        assert_eq!(opt.steps(), 4);
    }
}

#[test]
fn adam_moments_match_pytorchs_algorithm() {
    let config = AdamConfig {
        lr: 0.01,
        ..AdamConfig::default()
    };
    let (params, opt) = run(|p| Optimizer::adam(p, config));
    let state = opt.state_dict(&params);
    let m = [
        0.08919999999999999,
        -0.18334999999999996,
        0.0052999999999999905,
    ];
    let v = [
        0.0018735633122500016,
        0.007491007747750007,
        0.013984645996000012,
    ];
    assert_all_close(&state.get("exp_avg.w").unwrap().data, &m, 1e-15);
    assert_all_close(&state.get("exp_avg_sq.w").unwrap().data, &v, 1e-15);
    assert_eq!(state.get("step").unwrap().data, vec![4.0]);
}

#[test]
fn adam_with_a_constant_gradient_moves_by_lr_each_step() {
    // With g constant, m_hat = g and v_hat = g^2 exactly in real arithmetic, so every step
    // moves theta by lr g / (|g| + eps): a closed form for any number of steps.
    let mut params = Params::new();
    let w = params.add("w", &[2], vec![0.0, 0.0]);
    let config = AdamConfig {
        lr: 0.01,
        ..AdamConfig::default()
    };
    let mut opt = Optimizer::adam(&params, config);
    for _ in 0..50 {
        let grads = params.grads_from(vec![2.0, -0.5]);
        opt.step(&mut params, &grads).unwrap();
    }
    let want = [
        -50.0 * 0.01 * 2.0 / (2.0 + 1e-8),
        50.0 * 0.01 * 0.5 / (0.5 + 1e-8),
    ];
    assert_all_close(&params[w], &want, 1e-12);
}

#[test]
fn schedules_follow_their_formulas() {
    let linear = Schedule::linear(1.0, 0.1, 100);
    for k in [0u64, 1, 37, 99] {
        // micrograd's demo: learning_rate = 1.0 - 0.9*k/100, bit for bit.
        assert_eq!(linear.lr(k), 1.0 - 0.9 * k as f64 / 100.0);
    }
    assert_eq!(linear.lr(100), 0.1);
    assert_eq!(linear.lr(1000), 0.1);
    // nanoGPT's get_lr(it) with learning_rate 6e-4, min_lr 6e-5, warmup 10, decay to 100,
    // evaluated by CPython.
    let cosine = Schedule::cosine(6e-4, 6e-5, 10, 100);
    let want = [
        (0, 5.454545454545454e-05),
        (1, 0.00010909090909090908),
        (5, 0.00032727272727272726),
        (9, 0.0005454545454545454),
        (10, 0.0006),
        (11, 0.0005998355232951559),
        (50, 0.0003768850079700712),
        (99, 6.0164476704844146e-05),
        (100, 6e-05),
        (150, 6e-05),
    ];
    for (k, lr) in want {
        let got = cosine.lr(k);
        assert!((got - lr).abs() <= 1e-15 * lr, "step {k}: {got}, want {lr}");
    }
    assert_eq!(Schedule::Constant(0.3).lr(12345), 0.3);
}

/// PyTorch's `StepLR` and `ExponentialLR` in their chainable form (what
/// `scheduler.step()` computes: the group's lr times `gamma` at each decay), evaluated by
/// CPython 3.11 for each step `k`. The exponential one differs in its last bits from the
/// closed form `0.05 * 0.9 ** k` from `k = 3` on (0.03645000000000001 against 0.03645).
#[test]
fn step_and_exponential_schedules_are_pytorchs_bit_for_bit() {
    let step = Schedule::step(0.1, 3, 0.1);
    let want_step: [f64; 12] = [
        0.1,
        0.1,
        0.1,
        0.010000000000000002,
        0.010000000000000002,
        0.010000000000000002,
        0.0010000000000000002,
        0.0010000000000000002,
        0.0010000000000000002,
        0.00010000000000000003,
        0.00010000000000000003,
        0.00010000000000000003,
    ];
    let exponential = Schedule::exponential(0.05, 0.9);
    let want_exponential: [f64; 12] = [
        0.05,
        0.045000000000000005,
        0.04050000000000001,
        0.03645000000000001,
        0.03280500000000001,
        0.02952450000000001,
        0.02657205000000001,
        0.02391484500000001,
        0.021523360500000012,
        0.01937102445000001,
        0.01743392200500001,
        0.015690529804500006,
    ];
    for (schedule, want) in [(step, want_step), (exponential, want_exponential)] {
        for (k, &lr) in want.iter().enumerate() {
            assert_eq!(
                schedule.lr(k as u64).to_bits(),
                lr.to_bits(),
                "{schedule:?} at {k}"
            );
        }
        // An optimizer steps through the same rates (kept, one multiplication per decay).
        let mut params = Params::new();
        params.zeros("w", &[1]);
        let mut opt = Optimizer::sgd(&params, SgdConfig::new(1.0));
        opt.set_schedule(schedule);
        for (k, &lr) in want.iter().enumerate() {
            assert_eq!(opt.lr().to_bits(), lr.to_bits(), "{schedule:?} at step {k}");
            let grads = params.grads_from(vec![0.0]);
            opt.step(&mut params, &grads).unwrap();
        }
    }
}

/// SGD with momentum under `ExponentialLR(gamma=0.5)`, and plain SGD under
/// `StepLR(step_size=2, gamma=0.1)`, each scheduler stepped after each optimizer step as
/// PyTorch's docs prescribe: CPython 3.11 running torch's single-tensor SGD on the same
/// gradients.
#[test]
fn sgd_under_a_step_or_exponential_schedule_matches_pytorch() {
    let momentum = SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.1)
    };
    let (params, _) = run(|p| {
        let mut opt = Optimizer::sgd(p, momentum);
        opt.set_schedule(Schedule::exponential(0.1, 0.5));
        opt
    });
    assert_eq!(
        params.as_slice(),
        [0.9068499999999999, -1.81420625, 0.3613375]
    );
    let (params, _) = run(|p| {
        let mut opt = Optimizer::sgd(p, SgdConfig::new(0.1));
        opt.set_schedule(Schedule::step(0.1, 2, 0.1));
        opt
    });
    assert_eq!(
        params.as_slice(),
        [0.9224999999999999, -1.935, 0.5887500000000001]
    );
}

#[test]
fn the_learning_rate_can_change_between_steps() {
    let mut params = Params::new();
    params.add("w", &[1], vec![0.0]);
    let mut opt = Optimizer::sgd(&params, SgdConfig::new(1.0));
    opt.set_schedule(Schedule::linear(1.0, 0.0, 4));
    let mut lrs = Vec::new();
    for step in 0..6 {
        if step == 4 {
            opt.set_lr(0.5); // a constant rate from now on
        }
        lrs.push(opt.lr());
        let grads = params.grads_from(vec![-1.0]);
        opt.step(&mut params, &grads).unwrap();
    }
    assert_eq!(lrs, [1.0, 0.75, 0.5, 0.25, 0.5, 0.5]);
    // Each step adds its lr (the gradient is -1).
    assert_eq!(params.as_slice(), &[3.5]);
}

#[test]
fn stale_and_foreign_gradients_are_refused() {
    let mut params = Params::new();
    let w = params.add("w", &[1], vec![1.0]);
    let mut opt = Optimizer::sgd(&params, SgdConfig::new(0.1));
    let g = Graph::new();
    let (_, grads) = params.value_and_grad(&g, |p| p[w][0] * 2.0).unwrap();
    opt.step(&mut params, &grads).unwrap();
    // The same gradients again: they were computed at the values before the step.
    assert_eq!(
        opt.step(&mut params, &grads),
        Err(ParamError::StaleGradients)
    );
    // An edit of the values makes them stale too.
    let (_, grads) = params.value_and_grad(&g, |p| p[w][0] * 2.0).unwrap();
    params[w][0] = 5.0;
    assert_eq!(
        opt.step(&mut params, &grads),
        Err(ParamError::StaleGradients)
    );
    assert_eq!(params[w][0], 5.0); // nothing changed by the refused steps
    // Gradients of a clone (same names and shapes) or of another store.
    let clone = params.clone();
    let (_, grads) = clone.value_and_grad(&g, |p| p[w][0] * 2.0).unwrap();
    let err = opt.step(&mut params, &grads).unwrap_err();
    assert!(matches!(err, ParamError::ForeignGradients { .. }), "{err}");
    let mut other = Params::new();
    other.add("w", &[1], vec![1.0]);
    let grads = other.zero_grads();
    let err = opt.step(&mut params, &grads).unwrap_err();
    assert!(
        err.to_string()
            .contains("gradients were computed for store #"),
        "{err}"
    );
    assert_eq!(params[w][0], 5.0);
}

/// Two Adam steps, then a checkpoint of the parameters and the optimizer in one
/// safetensors file; training on from the checkpoint equals training on without it, to
/// the bit.
#[test]
fn a_checkpoint_resumes_training_exactly() {
    fn loss_grads(params: &Params, g: &Graph) -> tapegrad::nn::ParamGrads {
        let w = params.find("w").unwrap();
        params
            .value_and_grad(g, |p| {
                let x = &p[w];
                (x[0] * x[1] - 1.0).powi(2) + x[2].exp()
            })
            .unwrap()
            .1
    }
    let config = AdamConfig {
        lr: 0.05,
        weight_decay: 0.01,
        ..AdamConfig::default()
    };
    let g = Graph::new();
    let mut params = Params::new();
    params.add("w", &[3], vec![0.3, -0.7, 0.2]);
    let mut opt = Optimizer::adamw(&params, config);
    opt.set_schedule(Schedule::exponential(0.05, 0.7));
    for _ in 0..2 {
        let grads = loss_grads(&params, &g);
        opt.step(&mut params, &grads).unwrap();
    }
    let mut checkpoint = params.state_dict();
    checkpoint.extend_prefixed("optim.", opt.state_dict(&params));
    let bytes = checkpoint.to_safetensors();

    let loaded = StateDict::from_safetensors(&bytes).unwrap();
    let mut resumed = Params::new();
    resumed.zeros("w", &[3]);
    resumed
        .load_state_dict(&loaded.without_prefix("optim."))
        .unwrap();
    let mut resumed_opt = Optimizer::adamw(&resumed, config);
    resumed_opt.set_schedule(Schedule::exponential(0.05, 0.7));
    resumed_opt
        .load_state_dict(&resumed, &loaded.prefixed("optim."))
        .unwrap();
    assert_eq!(resumed_opt.steps(), 2);
    assert_eq!(resumed_opt.lr(), opt.lr());
    for _ in 0..3 {
        let grads = loss_grads(&params, &g);
        opt.step(&mut params, &grads).unwrap();
        let grads = loss_grads(&resumed, &g);
        resumed_opt.step(&mut resumed, &grads).unwrap();
    }
    assert_eq!(resumed.as_slice(), params.as_slice());
}

#[test]
fn optimizer_state_errors_name_the_tensor() {
    let mut params = Params::new();
    params.zeros("fc.weight", &[2, 2]);
    let mut opt = Optimizer::adam(&params, AdamConfig::default());
    let mut state = opt.state_dict(&params);
    let missing = state.without_prefix("exp_avg_sq.");
    assert_eq!(
        opt.load_state_dict(&params, &missing),
        Err(ParamError::Load(vec![ParamError::Missing {
            name: "exp_avg_sq.fc.weight".into()
        }]))
    );
    let mut reshaped = StateDict::new();
    for t in state.tensors() {
        let shape = if t.name == "exp_avg.fc.weight" {
            vec![4]
        } else {
            t.shape.clone()
        };
        reshaped.push(t.name.clone(), &shape, t.data.clone());
    }
    let err = opt.load_state_dict(&params, &reshaped).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tapegrad::nn: the state dict does not fit (1 problem; nothing was loaded):\n  \
         tensor \"exp_avg.fc.weight\" has shape [4], expected [2, 2]"
    );
    state.push("extra", &[], vec![0.0]);
    assert_eq!(
        opt.load_state_dict(&params, &state),
        Err(ParamError::Load(vec![ParamError::Unexpected {
            name: "extra".into()
        }]))
    );
    // Every problem at once: SGD's state is not Adam's.
    let mut sgd = Optimizer::sgd(&params, SgdConfig::new(0.1));
    assert_eq!(
        sgd.load_state_dict(&params, &opt.state_dict(&params)),
        Err(ParamError::Load(vec![
            ParamError::Missing {
                name: "momentum_buffer.fc.weight".into()
            },
            ParamError::Unexpected {
                name: "exp_avg.fc.weight".into()
            },
            ParamError::Unexpected {
                name: "exp_avg_sq.fc.weight".into()
            },
        ]))
    );
    assert_eq!(sgd.steps(), 0, "nothing was loaded");
}

#[test]
#[should_panic(expected = "Nesterov momentum requires a momentum")]
fn nesterov_without_momentum_is_refused() {
    let config = SgdConfig {
        nesterov: true,
        ..SgdConfig::new(0.1)
    };
    Optimizer::sgd(&Params::new(), config);
}

#[test]
#[should_panic(expected = "beta2 must be in [0, 1)")]
fn adam_refuses_a_beta_of_one() {
    let config = AdamConfig {
        beta2: 1.0,
        ..AdamConfig::default()
    };
    Optimizer::adam(&Params::new(), config);
}
