//! Misuse of a store, a module or an optimizer is reported, never silently computed, and
//! the report names what it is about: the tensor and both stores for a `Param` or
//! gradients of another store, the layer for an input of the wrong width, the optimizer's
//! own store for an optimizer given another (a clone included).

use std::panic::{AssertUnwindSafe, catch_unwind};

use tapegrad::Graph;
use tapegrad::nn::{Embedding, LayerNorm, Linear, Mlp, ParamError, Params, RmsNorm};
use tapegrad::optim::{Optimizer, SgdConfig};

/// The message of the panic `f` raises.
#[track_caller]
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("it should panic");
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload
            .downcast::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

/// `text` with every `#<digits>` replaced by `#N` (store numbers depend on what else the
/// process made).
fn without_numbers(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '#' && chars.peek().is_some_and(char::is_ascii_digit) {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('N');
        }
    }
    out
}

#[test]
fn a_param_of_another_store_names_the_tensor_and_both_stores() {
    let mut model = Params::new();
    let layer = Linear::new(&mut model, "fc", 2, 1, &mut || 0.5);
    let mut other = Params::new();
    other.zeros("w", &[1]);
    let text = panic_message(|| {
        let _ = &other[layer.bias().unwrap()];
    });
    assert_eq!(
        without_numbers(&text),
        "tapegrad::nn: tensor \"fc.bias\" (#N of a store of 2 tensors: \"fc.weight\", \
         \"fc.bias\") was used with store #N (1 tensor: \"w\"); a Param indexes only the \
         store that made it and that store's clones"
    );
    // Through a view (a model's forward), the same.
    let text = panic_message(|| {
        layer.forward_f64(&other.view(), &[1.0, 2.0]);
    });
    assert!(text.contains("tensor \"fc.weight\""), "{text}");
    // A store that no longer exists is still said to be another.
    let stray = {
        let mut gone = Params::new();
        gone.zeros("v", &[1])
    };
    let text = panic_message(|| {
        let _ = other.name(stray);
    });
    assert!(
        text.contains("tensor #0 of a store that no longer exists"),
        "{text}"
    );
    // A clone shares the layout: the same Params index it.
    assert_eq!(&model.clone()[layer.weight()], &[0.5, 0.5]);
}

#[test]
fn layers_name_themselves_for_an_input_of_the_wrong_width() {
    let mut params = Params::new();
    let mlp = Mlp::new(&mut params, "encoder", &[3, 4, 2], &mut || 0.1);
    let emb = Embedding::new(&mut params, "wte", 5, 3, &mut || 0.1);
    let ln = LayerNorm::new(&mut params, "ln_f", 4, 1e-5);
    let gained = RmsNorm::with_gain(&mut params, "norm", 4, 1e-5);
    let p = params.view();
    let text = panic_message(|| {
        mlp.forward_f64(&p, &[1.0, 2.0]);
    });
    assert_eq!(
        text,
        "Linear \"encoder.0\": an input of 2 values for a layer of 3 inputs (4 outputs)"
    );
    let text = panic_message(|| {
        mlp.layers()[1].forward(&p, &[1.0; 3]);
    });
    assert_eq!(
        text,
        "Linear \"encoder.1\": an input of 3 values for a layer of 4 inputs (2 outputs)"
    );
    let text = panic_message(|| {
        emb.forward(&p, 5);
    });
    assert_eq!(text, "Embedding \"wte\": id 5 of a table of 5 vectors");
    let text = panic_message(|| {
        ln.forward(&p, &[1.0; 3]);
    });
    assert_eq!(
        text,
        "LayerNorm \"ln_f\": an input of 3 values for a width of 4"
    );
    let text = panic_message(|| {
        gained.forward(&p, &[1.0; 5]);
    });
    assert_eq!(
        text,
        "RmsNorm \"norm\": an input of 5 values for a width of 4"
    );
    let text = panic_message(|| {
        RmsNorm::new(4, 1e-5).forward(&p, &[1.0; 2]);
    });
    assert_eq!(
        text,
        "RmsNorm (no gain): an input of 2 values for a width of 4"
    );
    // Recorded, the same message.
    let g = Graph::new();
    let text = panic_message(|| {
        let _ = params.value_and_grad(&g, |p| mlp.forward_f64(p, &[1.0])[0]);
    });
    assert!(text.starts_with("Linear \"encoder.0\""), "{text}");
    assert!(g.is_empty(), "the panicking step was released");
}

#[test]
fn gradients_of_another_store_name_both_stores() {
    let mut params = Params::new();
    params.zeros("w", &[1]);
    let mut other = Params::new();
    other.zeros("v", &[2]);
    let err = params.check_grads(&other.zero_grads()).unwrap_err();
    assert_eq!(
        without_numbers(&err.to_string()),
        "tapegrad::nn: these gradients were computed for store #N (1 tensor: \"v\"), not for \
         store #N (1 tensor: \"w\") (a clone is a store of its own)"
    );
}

/// An optimizer keeps momenta for the store it was made for: another store, a clone of it
/// (stepped with the clone's own, valid gradients), or the store after it gained tensors
/// is refused, and the message says which store the optimizer was made for.
#[test]
fn an_optimizer_refuses_a_store_it_was_not_made_for() {
    let mut params = Params::new();
    let w = params.add("w", &[2], vec![1.0, 2.0]);
    let config = SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.1)
    };
    let mut opt = Optimizer::sgd(&params, config);
    let g = Graph::new();
    let (_, grads) = params.value_and_grad(&g, |p| p[w][0] * p[w][1]).unwrap();
    opt.step(&mut params, &grads).unwrap();

    // A clone, with gradients computed for it: not silently stepped with these momenta.
    let mut clone = params.clone();
    let (_, clone_grads) = clone.value_and_grad(&g, |p| p[w][0] * p[w][1]).unwrap();
    let before = clone.as_slice().to_vec();
    let err = opt.step(&mut clone, &clone_grads).unwrap_err();
    assert!(
        matches!(
            err,
            ParamError::ForeignStore {
                what: "optimizer",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(clone.as_slice(), &before[..], "nothing was changed");
    let text = without_numbers(&err.to_string());
    assert!(
        text.starts_with(
            "tapegrad::nn: this optimizer was made for store #N (1 tensor: \"w\"), and was \
             given store #N (1 tensor: \"w\"); a clone of a store is a store of its own"
        ),
        "{text}"
    );

    // Another store of the same shape.
    let mut other = Params::new();
    other.add("w", &[2], vec![0.0, 0.0]);
    let grads = other.zero_grads();
    assert!(matches!(
        opt.step(&mut other, &grads),
        Err(ParamError::ForeignStore { .. })
    ));

    // The store itself after it gained a tensor: the optimizer has no state for it.
    params.zeros("b", &[3]);
    let grads = params.zero_grads();
    let err = opt.step(&mut params, &grads).unwrap_err();
    let text = without_numbers(&err.to_string());
    assert!(
        text.contains(
            "made for store #N (1 tensor: \"w\"), and was given store #N (2 tensors: \"w\", \"b\")"
        ),
        "{text}"
    );
    // Its state is refused likewise, and saving it panics with the same words.
    let text = panic_message(|| {
        opt.state_dict(&params);
    });
    assert!(text.starts_with("Optimizer::state_dict: tapegrad::nn: this optimizer was made for"));
}
