//! The series' tiny transformer: its printed numbers reproduced, its true gradients
//! verified by finite differences, and training that runs in constant memory and learns
//! the sentence.
//!
//! Every expected number in the first tests was printed by the series (SERIES.md,
//! section 2, "What the series prints", to 4 decimals); `assert_prints` checks that our
//! value rounds to exactly what it printed.

use tapegrad::check::{Tolerance, gradcheck};
use tapegrad::{Gradients, Graph};
use tapegrad_models::transformer::{self, N_PARAMS, Params, SENTENCE};
use tapegrad_models::transformer::{AdamW, AdamWConfig};

/// `x` printed to as many decimals as `printed` has is `printed`.
#[track_caller]
fn assert_prints(x: f64, printed: &str) {
    let decimals = printed.split('.').nth(1).map_or(0, str::len);
    assert_eq!(format!("{x:.decimals$}"), printed, "value {x:e}");
}

#[test]
fn parameter_count_is_3456() {
    // 6*16 + 5*16 + 6 * 16*8 + 16*16 + 64*16 + 64 + 16*64 + 16 + 6*16 + 16 + 16.
    let by_hand = 96 + 80 + 6 * 128 + 256 + 1024 + 64 + 1024 + 16 + 96 + 16 + 16;
    assert_eq!(N_PARAMS, by_hand);
    assert_eq!(Params::series_init().as_slice().len(), 3456);
}

#[test]
fn embedding_rows_match_series() {
    let p = Params::series_init();
    // E_token row 1 (<BOS>) starts 0.0246, 0.1311, 0.0042, -0.0106.
    let e_token = p.tensor("E_token", None);
    for (x, printed) in e_token[16..20]
        .iter()
        .zip(["0.0246", "0.1311", "0.0042", "-0.0106"])
    {
        assert_prints(*x, printed);
    }
    // E_pos row 0 starts 0.1227, -0.0030, 0.1953, -0.0359.
    let e_pos = p.tensor("E_pos", None);
    for (x, printed) in e_pos[..4]
        .iter()
        .zip(["0.1227", "-0.0030", "0.1953", "-0.0359"])
    {
        assert_prints(*x, printed);
    }
}

#[test]
fn init_draws_in_series_order_and_sets_layer_norm_to_identity() {
    // The first value drawn is the series' first random.gauss(0, 0.1) check value, and
    // E_pos starts right after E_token's 96 draws; gamma = 1, beta = 0 are not drawn.
    let p = Params::series_init();
    assert_eq!(
        p.as_slice()[0].to_bits(),
        (-0.014409032957792837f64).to_bits()
    );
    assert_eq!(p.tensor("gamma", None), &[1.0; 16]);
    assert_eq!(p.tensor("beta", None), &[0.0; 16]);
    assert_eq!(p.as_slice()[96], p.tensor("E_pos", None)[0]);
}

#[test]
fn logits_table_matches_series() {
    let printed = [
        [
            "0.3362", "-0.1025", "-0.0514", "-0.0053", "0.2907", "0.0848",
        ],
        [
            "0.3332", "-0.1114", "-0.0743", "-0.0182", "0.2730", "0.0714",
        ],
        [
            "0.3179", "-0.1641", "-0.0885", "-0.0041", "0.3290", "0.0326",
        ],
        [
            "0.3252", "-0.1279", "-0.0646", "-0.0031", "0.3202", "0.0518",
        ],
        ["0.3209", "-0.1388", "-0.0673", "0.0066", "0.3317", "0.0356"],
    ];
    let logits = transformer::logits(&Params::series_init(), &SENTENCE);
    assert_eq!(logits.len(), 5);
    for (row, printed_row) in logits.iter().zip(printed) {
        for (&x, p) in row.iter().zip(printed_row) {
            assert_prints(x, p);
        }
    }
}

#[test]
fn loss_per_position_and_totals_match_series() {
    let loss = transformer::loss(&Params::series_init(), &SENTENCE);
    let printed = [
        ("0.1491", "1.9033"),
        ("0.1994", "1.6123"),
        ("0.1576", "1.8479"),
        ("0.1414", "1.9560"),
    ];
    for (&nll, (p_target, l)) in loss.nll.iter().zip(printed) {
        assert_prints((-nll).exp(), p_target);
        assert_prints(nll, l);
    }
    assert_prints(loss.nll.iter().sum(), "7.3195");
    assert_prints(loss.mean, "1.8299");
    assert_prints(loss.mean.exp(), "6.23");
}

#[test]
fn tape_forward_matches_plain_forward() {
    // One generic forward pass: recording it on a tape must not change its numbers.
    let p = Params::series_init();
    let plain = transformer::loss(&p, &SENTENCE);
    let g = Graph::new();
    let vars = p.map(|x| g.var(x));
    let taped = transformer::loss(&vars, &SENTENCE);
    approx::assert_relative_eq!(taped.mean.value(), plain.mean, max_relative = 1e-14);
    for (row_t, row_p) in taped.logits.iter().zip(&plain.logits) {
        for (t, p) in row_t.iter().zip(row_p) {
            approx::assert_relative_eq!(t.value(), *p, max_relative = 1e-12, epsilon = 1e-15);
        }
    }
}

#[test]
fn loss_gradient_wrt_logits_is_softmax_minus_onehot_over_positions() {
    // The seed chapter's closed form: d(-ln P(target))/d logit_i = P(i) - 1[i = target];
    // the loss is the mean over 4 positions, so each row is divided by 4.
    let p = Params::series_init();
    let g = Graph::new();
    let vars = p.map(|x| g.var(x));
    let loss = transformer::loss(&vars, &SENTENCE);
    let grads = loss.mean.backward();
    for (pos, row) in loss.logits.iter().enumerate() {
        let values: Vec<f64> = row.iter().map(|l| l.value()).collect();
        let total: f64 = values.iter().map(|l| l.exp()).sum();
        let target = SENTENCE[pos + 1];
        for (i, &logit) in row.iter().enumerate() {
            let onehot = if i == target { 1.0 } else { 0.0 };
            let closed = (values[i].exp() / total - onehot) / 4.0;
            approx::assert_relative_eq!(
                grads[logit],
                closed,
                epsilon = 1e-15,
                max_relative = 1e-12
            );
        }
    }
}

#[test]
fn unused_embeddings_get_exactly_zero_gradient() {
    // Positions 0..3 read tokens <BOS> I like transformers and positions 0..3: E_token rows
    // <PAD> (0) and <EOS> (2), and E_pos row 4, do not reach the loss at all.
    let p = Params::series_init();
    let g = Graph::new();
    let vars = p.map(|x| g.var(x));
    let grads = transformer::loss(&vars, &SENTENCE).mean.backward();
    let e_token = vars.tensor("E_token", None);
    let e_pos = vars.tensor("E_pos", None);
    for &x in e_token[..16]
        .iter()
        .chain(&e_token[32..48])
        .chain(&e_pos[64..80])
    {
        assert_eq!(grads[x], 0.0);
    }
    // And every used one gets a nonzero gradient.
    for &x in &e_token[16..32] {
        assert_ne!(grads[x], 0.0);
    }
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "7,000 forward passes: about 4 s in release (CI runs `cargo test --release`), 40 s unoptimised"
)]
fn all_3456_gradients_match_central_differences() {
    // Every parameter's tape gradient against (f(x + h) - f(x - h)) / 2h of the mean loss,
    // with tapegrad's checker. The attention projections' gradients are small (W_Q and W_K
    // about 1e-4), so the absolute tolerance is tightened from the default 1e-6 to 1e-8,
    // checking them to about 0.01%: the central difference's rounding error is about
    // eps |f| / h = 2.2e-16 * 1.83 / 1e-6 = 4e-10 (the worst seen is 3.4e-10), and its
    // truncation error h^2 |f'''| / 6 is far smaller.
    let tolerance = Tolerance {
        abs: 1e-8,
        ..Tolerance::default()
    };
    let at = Params::series_init().as_slice().to_vec();
    let report = gradcheck(
        |_, xs| transformer::loss(&Params::from_flat(xs.to_vec()), &SENTENCE).mean,
        &at,
        tolerance,
    );
    assert_eq!(report.entries.len(), 3456);
    report.assert_passed();
    // The check is not vacuous: the gradients are of the size the loss surface has.
    let largest = report
        .entries
        .iter()
        .map(|e| e.tape.abs())
        .fold(0.0, f64::max);
    assert!(largest > 1e-2, "largest gradient {largest}");
}

/// AdamW training of the sentence on one graph: parameters before the mark, each step's
/// nodes released after backward. Returns the loss before each step and the final
/// parameters; checks the node count and heap after every step.
fn train(config: AdamWConfig, steps: usize) -> (Vec<f64>, Params<f64>) {
    let g = Graph::new();
    let params = Params::series_init().map(|x| g.var(x));
    let mark = g.mark();
    let mut adamw = AdamW::new(N_PARAMS, config);
    let mut grads = Gradients::new();
    let mut losses = Vec::with_capacity(steps);
    let mut heap_after_first = None;
    for step in 0..steps {
        let loss = transformer::loss(&params, &SENTENCE).mean;
        losses.push(loss.value());
        loss.backward_into(&mut grads);
        g.release(mark);
        adamw.step(params.as_slice(), &grads);
        assert_eq!(g.len(), N_PARAMS, "node count after step {step}");
        let heap = g.heap_bytes();
        assert_eq!(
            *heap_after_first.get_or_insert(heap),
            heap,
            "heap after step {step}"
        );
    }
    (losses, params.map(|x| x.value()))
}

#[test]
fn training_runs_in_constant_nodes_and_memory() {
    let (losses, _) = train(AdamWConfig::default(), 20);
    // At lr 0.001 the loss falls steadily from the series' 1.8299.
    assert_prints(losses[0], "1.8299");
    assert!(losses.windows(2).all(|w| w[1] < w[0]), "{losses:?}");
}

#[test]
fn training_learns_the_sentence() {
    // lr 0.01 keeps the test short: the loss falls below 0.01 after about 42 updates (the
    // example trains at the series' 0.001 by default, about 520 updates).
    let (losses, params) = train(
        AdamWConfig {
            lr: 0.01,
            ..AdamWConfig::default()
        },
        STEPS_TO_LEARN,
    );
    let last = *losses.last().unwrap();
    assert!(last < 0.01, "loss {last} after {STEPS_TO_LEARN} steps");
    assert_eq!(
        transformer::decode(&transformer::generate(&params)),
        "<BOS> I like transformers <EOS>"
    );
}
const STEPS_TO_LEARN: usize = 100;

#[test]
fn untrained_model_does_not_generate_the_sentence() {
    // So that training_learns_the_sentence is not vacuous.
    let tokens = transformer::generate(&Params::series_init());
    assert_ne!(
        transformer::decode(&tokens),
        "<BOS> I like transformers <EOS>"
    );
}

#[test]
#[should_panic(expected = "token 9 at position 2 is not in the vocabulary")]
fn unknown_token_is_rejected() {
    let _ = transformer::logits(&Params::series_init(), &[1, 3, 9]);
}

#[test]
#[should_panic(expected = "a sequence of 6 tokens; the model reads 1 to 5")]
fn too_long_sequence_is_rejected() {
    let _ = transformer::logits(&Params::series_init(), &[1, 3, 4, 5, 2, 0]);
}

#[test]
#[should_panic(expected = "a sequence of 1 tokens; the model reads 2 to 5")]
fn loss_needs_a_next_token() {
    let _ = transformer::loss(&Params::series_init(), &[1]);
}

#[test]
#[should_panic(expected = "the model has 3456 parameters, got 10")]
fn wrong_parameter_count_is_rejected() {
    let _ = Params::from_flat(vec![0.0; 10]);
}

/// Preaccumulation (`loss_fused`): the same loss bit for bit on a tape about a third the
/// size, and the same gradient up to the rounding of its sums.
#[test]
fn fused_loss_is_the_same_loss_on_a_smaller_tape() {
    use tapegrad_models::transformer::{loss, loss_fused};
    let g = Graph::new();
    let p = Params::series_init().map(|x| g.var(x));
    let params = p.as_slice().to_vec();
    let (base_nodes, base_edges) = (g.len(), g.edge_count());
    let mark = g.mark();
    let plain = loss(&p, &SENTENCE).mean;
    let plain_nodes = g.len() - base_nodes;
    let plain_edges = g.edge_count() - base_edges;
    let plain_value = plain.value();
    let plain_grads = plain.backward().wrt_all(&params);
    g.release(mark);
    let fused = loss_fused(&p, &SENTENCE).mean;
    let fused_nodes = g.len() - base_nodes;
    let fused_edges = g.edge_count() - base_edges;
    assert_eq!(fused.value(), plain_value);
    let fused_grads = fused.backward().wrt_all(&params);
    let scale = plain_grads.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (k, (f, p)) in fused_grads.iter().zip(&plain_grads).enumerate() {
        assert!(
            (f - p).abs() <= 1e-13 * scale,
            "parameter {k}: fused {f}, plain {p}"
        );
    }
    // Measured: 1214 nodes against 1770 (the matrix products' dots stay).
    assert!(
        fused_nodes * 10 < plain_nodes * 7,
        "{fused_nodes} fused nodes, {plain_nodes} plain"
    );
    println!("nodes {plain_nodes} -> {fused_nodes}, edges {plain_edges} -> {fused_edges}");
    assert!(
        fused_edges < plain_edges,
        "{fused_edges} fused edges, {plain_edges} plain"
    );
    assert!(matches!(
        fused.try_grad(&params),
        Err(tapegrad::Error::NoSecondOrder { op: "fused" })
    ));
}

#[test]
fn the_series_transformer_trains_on_a_store_as_on_its_own_vars() {
    use tapegrad::nn::{ParamError, Params as Store, StateDict};
    use tapegrad_models::transformer::{AdamW, AdamWConfig, Params as Series};
    const STEPS: usize = 3;
    let init = Series::series_init();
    // The series' loop: parameter Vars kept before a mark, AdamW writing into them.
    let g = Graph::new();
    let vars = init.map(|x| g.var(x));
    let mark = g.mark();
    let mut adamw = AdamW::new(N_PARAMS, AdamWConfig::default());
    let mut grads = Gradients::new();
    for _ in 0..STEPS {
        transformer::loss(&vars, &SENTENCE)
            .mean
            .backward_into(&mut grads);
        g.release(mark);
        adamw.step(vars.as_slice(), &grads);
    }
    let series: Vec<f64> = vars.as_slice().iter().map(|v| v.value()).collect();
    // The store's loop: bound for each step, the same AdamW on the plain values.
    let mut store = init.to_store();
    let mut adamw = AdamW::new(N_PARAMS, AdamWConfig::default());
    let h = Graph::new();
    for _ in 0..STEPS {
        let (_, grads) = store
            .value_and_grad(&h, |p| {
                let p = Series::from_flat(p.as_slice().to_vec());
                transformer::loss(&p, &SENTENCE).mean
            })
            .unwrap();
        store.update(&grads, |v, g| adamw.update(v, g)).unwrap();
    }
    // The same tape in the same order: the same bits.
    assert_eq!(store.as_slice(), &series[..]);
    // Saved as safetensors and read back, it is the same model.
    let bytes = store.state_dict().to_safetensors();
    let mut loaded = Series::series_init().to_store();
    loaded
        .load_state_dict(&StateDict::from_safetensors(&bytes).unwrap())
        .unwrap();
    let back = Series::from_store(&loaded).unwrap();
    assert_eq!(back.as_slice(), &series[..]);
    let mut wrong = Store::new();
    wrong.zeros("E_token", &[16, 6]);
    assert_eq!(
        Series::from_store(&wrong),
        Err(ParamError::Shape {
            name: "E_token".into(),
            expected: vec![6, 16],
            found: vec![16, 6]
        })
    );
}
