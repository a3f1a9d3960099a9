//! Bad input is a clear error, never a wrong number: a handle from another graph and a
//! released handle are reported at every entry point, as `Err` from the `try_` forms and
//! as a panic naming the problem from operators and plain methods; nothing is recorded
//! when an operation fails; `tapegrad::Error` is a standard error.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tapegrad::{Binary, Error, Gradients, Graph, Scalar, Unary, Var};

/// Runs `f`, which must panic, and returns its message.
fn panic_message(what: &str, f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f))
        .err()
        .unwrap_or_else(|| panic!("{what}: expected a panic"));
    match payload.downcast_ref::<String>() {
        Some(s) => s.clone(),
        None => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .unwrap_or_else(|| panic!("{what}: the panic carries no message")),
    }
}

/// An entry point called with a bad handle, to be run under `catch_unwind`.
type Call<'a> = Box<dyn Fn() + 'a>;
type CallMut<'a> = Box<dyn FnMut() + 'a>;

/// Discards a result (most are `Copy`, so `drop` would say nothing).
fn ignore<T>(_: T) {}

fn foreign(owner: &Graph, used_with: &Graph) -> Error {
    Error::ForeignHandle {
        what: "Var",
        owner: owner.id(),
        used_with: used_with.id(),
    }
}

/// Every entry point that takes a `Var` of graph `g`, given one of graph `h`: the
/// panicking forms name both graphs, and nothing is recorded on either graph.
#[test]
fn foreign_handle_panics_at_every_entry_point() {
    let (g, h) = (Graph::new(), Graph::new());
    let x = g.var(2.0);
    let y = h.var(3.0);
    let grads = (x * x).backward();
    let ex = x.exp();
    let (g_len, h_len) = (g.len(), h.len());
    // (what, the graph that records or reads, the closure)
    let cases: Vec<(&str, &Graph, Call<'_>)> = vec![
        ("x + y", &g, Box::new(|| ignore(x + y))),
        ("x - y", &g, Box::new(|| ignore(x - y))),
        ("x * y", &g, Box::new(|| ignore(x * y))),
        ("x / y", &g, Box::new(|| ignore(x / y))),
        ("y * x", &h, Box::new(|| ignore(y * x))),
        (
            "x += y",
            &g,
            Box::new(|| {
                let mut z = x;
                z += y;
            }),
        ),
        (
            "x /= y",
            &g,
            Box::new(|| {
                let mut z = x;
                z /= y;
            }),
        ),
        ("x.powf(y)", &g, Box::new(|| ignore(x.powf(y)))),
        ("g.sum([x, y])", &g, Box::new(|| ignore(g.sum([x, y])))),
        ("g.sum([y])", &g, Box::new(|| ignore(g.sum([y])))),
        (
            "g.dot(&[x], &[y])",
            &g,
            Box::new(|| ignore(g.dot(&[x], &[y]))),
        ),
        (
            "g.dot(&[y], &[1.0])",
            &g,
            Box::new(|| ignore(g.dot(&[y], &[1.0]))),
        ),
        (
            "g.logsumexp([x, y])",
            &g,
            Box::new(|| ignore(g.logsumexp([x, y]))),
        ),
        (
            "Scalar::sum(&[x, y])",
            &g,
            Box::new(|| ignore(<Var<'_> as Scalar>::sum(&[x, y]))),
        ),
        ("grads.wrt(y)", &g, Box::new(|| ignore(grads.wrt(y)))),
        ("grads[y]", &g, Box::new(|| ignore(grads[y]))),
        (
            "grads.wrt_all(&[y])",
            &g,
            Box::new(|| ignore(grads.wrt_all(&[y]))),
        ),
        (
            "grads.wrt_all(&[x, y])",
            &g,
            Box::new(|| ignore(grads.wrt_all(&[x, y]))),
        ),
        ("x.grad(&[y])", &g, Box::new(|| ignore(ex.grad(&[y])))),
        ("g.set_value(y, 1.0)", &g, Box::new(|| g.set_value(y, 1.0))),
    ];
    for (what, used_with, f) in &cases {
        let owner = if std::ptr::eq(*used_with, &g) { &h } else { &g };
        let message = panic_message(what, f);
        let want = foreign(owner, used_with).to_string();
        assert_eq!(message, want, "{what}");
        assert!(message.contains("handles only work with the graph that made them"));
        assert_eq!((g.len(), h.len()), (g_len, h_len), "{what} recorded a node");
    }
}

/// The same entry points' `Result` forms return exactly `Error::ForeignHandle`, and
/// record nothing.
#[test]
fn foreign_handle_is_an_error_from_every_try_form() {
    let (g, h) = (Graph::new(), Graph::new());
    let x = g.var(2.0);
    let y = h.var(3.0);
    let grads = (x * x).backward();
    let (g_len, h_len) = (g.len(), h.len());
    let want = foreign(&h, &g);
    let cases: Vec<(&str, Result<(), Error>)> = vec![
        ("x.try_add(y)", x.try_add(y).map(ignore)),
        ("x.try_sub(y)", x.try_sub(y).map(ignore)),
        ("x.try_mul(y)", x.try_mul(y).map(ignore)),
        ("x.try_div(y)", x.try_div(y).map(ignore)),
        (
            "x.try_binary(Powf, y)",
            x.try_binary(Binary::Powf, y).map(ignore),
        ),
        ("g.try_sum([x, y])", g.try_sum([x, y]).map(ignore)),
        ("g.try_dot(&[x], &[y])", g.try_dot(&[x], &[y]).map(ignore)),
        ("g.try_dot(&[y], &[x])", g.try_dot(&[y], &[x]).map(ignore)),
        (
            "g.try_logsumexp([y, x])",
            g.try_logsumexp([y, x]).map(ignore),
        ),
        ("grads.try_wrt(y)", grads.try_wrt(y).map(ignore)),
        ("x.try_grad(&[y])", x.try_grad(&[y]).map(ignore)),
        ("g.try_set_value(y, 1.0)", g.try_set_value(y, 1.0)),
    ];
    for (what, result) in cases {
        assert_eq!(result, Err(want.clone()), "{what}");
    }
    assert_eq!((g.len(), h.len()), (g_len, h_len), "nothing recorded");
    assert_eq!(
        g.try_release(h.mark()),
        Err(Error::ForeignHandle {
            what: "Mark",
            owner: h.id(),
            used_with: g.id(),
        })
    );
    // The graph is still fully usable after the errors: d(x^2 + 1)/dx = 2x = 4.
    assert_eq!((x * x + 1.0).backward()[x], 4.0);
}

/// Every entry point given a released `Var`: the panicking forms say "released", and
/// nothing is recorded.
#[test]
fn released_handle_panics_at_every_entry_point() {
    let g = Graph::new();
    let w = g.var(2.0);
    let mark = g.mark();
    let r = w.exp();
    g.release(mark);
    let grads = (w * 3.0).backward();
    let ew = w.exp();
    let len = g.len();
    let mut store = Gradients::new();
    let cases: Vec<(&str, CallMut<'_>)> = vec![
        ("r.value()", Box::new(|| ignore(r.value()))),
        ("r.op()", Box::new(|| ignore(r.op()))),
        ("-r", Box::new(|| ignore(-r))),
        ("r.exp()", Box::new(|| ignore(r.exp()))),
        ("r.apply(Sin)", Box::new(|| ignore(r.apply(Unary::Sin)))),
        ("r + w", Box::new(|| ignore(r + w))),
        ("w * r", Box::new(|| ignore(w * r))),
        ("r - 1.0", Box::new(|| ignore(r - 1.0))),
        ("1.0 / r", Box::new(|| ignore(1.0 / r))),
        ("r.powi(2)", Box::new(|| ignore(r.powi(2)))),
        ("w.powf(r)", Box::new(|| ignore(w.powf(r)))),
        ("powf(2.0, r)", Box::new(|| ignore(tapegrad::powf(2.0, r)))),
        ("g.sum([w, r])", Box::new(|| ignore(g.sum([w, r])))),
        (
            "g.dot(&[r], &[1.0])",
            Box::new(|| ignore(g.dot(&[r], &[1.0]))),
        ),
        ("g.logsumexp([r])", Box::new(|| ignore(g.logsumexp([r])))),
        ("r.backward()", Box::new(|| ignore(r.backward()))),
        ("r.backward_into", Box::new(|| r.backward_into(&mut store))),
        ("grads.wrt(r)", Box::new(|| ignore(grads.wrt(r)))),
        ("grads[r]", Box::new(|| ignore(grads[r]))),
        ("r.grad(&[w])", Box::new(|| ignore(r.grad(&[w])))),
        ("w.grad(&[r])", Box::new(|| ignore(ew.grad(&[r])))),
        ("g.set_value(r, 1.0)", Box::new(|| g.set_value(r, 1.0))),
    ];
    let want = Error::Released.to_string();
    for (what, mut f) in cases {
        let message = panic_message(what, &mut f);
        assert_eq!(message, want, "{what}");
        assert!(message.contains("released"));
    }
    assert_eq!(g.len(), len, "nothing recorded");
}

/// The `Result` forms return exactly `Error::Released`.
#[test]
fn released_handle_is_an_error_from_every_try_form() {
    let g = Graph::new();
    let w = g.var(2.0);
    let mark = g.mark();
    let r = w.exp();
    g.release(mark);
    let grads = (w * 3.0).backward();
    let len = g.len();
    let mut store = Gradients::new();
    let cases: Vec<(&str, Result<(), Error>)> = vec![
        ("r.try_value()", r.try_value().map(ignore)),
        ("r.try_position()", r.try_position().map(ignore)),
        ("r.try_apply(Exp)", r.try_apply(Unary::Exp).map(ignore)),
        (
            "r.try_binary(Add, w)",
            r.try_binary(Binary::Add, w).map(ignore),
        ),
        ("w.try_mul(r)", w.try_mul(r).map(ignore)),
        ("r.try_sub(1.0)", r.try_sub(1.0).map(ignore)),
        ("g.try_sum([w, r])", g.try_sum([w, r]).map(ignore)),
        (
            "g.try_dot(&[1.0], &[r])",
            g.try_dot(&[1.0], &[r]).map(ignore),
        ),
        (
            "g.try_logsumexp([w, r])",
            g.try_logsumexp([w, r]).map(ignore),
        ),
        ("r.try_backward()", r.try_backward().map(ignore)),
        ("r.try_backward_into", r.try_backward_into(&mut store)),
        ("grads.try_wrt(r)", grads.try_wrt(r).map(ignore)),
        ("r.try_grad(&[w])", r.try_grad(&[w]).map(ignore)),
        ("w.try_grad(&[r])", w.try_grad(&[r]).map(ignore)),
        ("g.try_set_value(r, 1.0)", g.try_set_value(r, 1.0)),
    ];
    for (what, result) in cases {
        assert_eq!(result, Err(Error::Released), "{what}");
    }
    assert_eq!(g.len(), len, "nothing recorded");
    assert_eq!(format!("{r}"), "<released>");
    assert!(format!("{r:?}").contains("<released>"));
}

#[test]
fn error_is_a_standard_error_with_a_readable_message() {
    fn is_std_error<E: std::error::Error + Send + Sync + 'static>() {}
    is_std_error::<Error>();

    // `?` converts it into a boxed error, and the message survives.
    fn fails() -> Result<f64, Box<dyn std::error::Error>> {
        let g = Graph::new();
        let mark = g.mark();
        let x = g.var(1.0);
        g.release(mark);
        Ok(x.try_value()?)
    }
    let message = fails().unwrap_err().to_string();
    assert!(message.starts_with("tapegrad: "), "{message}");
    assert!(message.contains("released by Graph::release"), "{message}");

    // Every variant's message names the crate and what went wrong.
    let messages = [
        (foreign(&Graph::new(), &Graph::new()), "was used with graph"),
        (Error::Released, "released"),
        (Error::GraphFull, "u32::MAX - 1 nodes"),
        (
            Error::BadOperands {
                op: "dot",
                why: "why".into(),
            },
            "dot: why",
        ),
    ];
    for (err, needle) in messages {
        let text = err.to_string();
        assert!(text.starts_with("tapegrad"), "{text}");
        assert!(text.contains(needle), "{text}");
    }
}

#[test]
fn dot_with_mismatched_lengths() {
    let g = Graph::new();
    let a = g.vars(&[1.0, 2.0]);
    let len = g.len();
    let Err(Error::BadOperands { op, why }) = g.try_dot(&a, &[1.0, 2.0, 3.0]) else {
        panic!("expected BadOperands")
    };
    assert_eq!(op, "dot");
    assert!(why.contains("lengths 2 and 3"), "{why}");
    assert_eq!(g.len(), len);
    let message = panic_message("dot", || ignore(g.dot(&[3.0], &a)));
    assert!(
        message.contains("dot") && message.contains("lengths 1 and 2"),
        "{message}"
    );
    assert_eq!(g.len(), len);
    // The Scalar form too.
    let message = panic_message("Scalar::dot", || {
        ignore(<Var<'_> as Scalar>::dot(&a, &a[..1]))
    });
    assert!(message.contains("dot"), "{message}");
}

#[test]
fn logsumexp_of_nothing() {
    let g = Graph::new();
    let Err(Error::BadOperands { op, why }) = g.try_logsumexp([]) else {
        panic!("expected BadOperands")
    };
    assert_eq!(op, "logsumexp");
    assert!(why.contains("at least one term"), "{why}");
    assert!(g.is_empty());
    let message = panic_message("logsumexp", || ignore(g.logsumexp([])));
    assert!(message.contains("logsumexp"), "{message}");
    // The Scalar forms have no graph to record on for an empty slice.
    let none: &[Var<'_>] = &[];
    let message = panic_message("Scalar::logsumexp", || {
        ignore(<Var<'_> as Scalar>::logsumexp(none))
    });
    assert!(message.contains("logsumexp of no Vars"), "{message}");
    let message = panic_message("Scalar::sum", || ignore(<Var<'_> as Scalar>::sum(none)));
    assert!(message.contains("sum of no Vars"), "{message}");
    assert!(g.is_empty());
}
