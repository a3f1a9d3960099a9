//! DOT export: exactly the nodes an output depends on, with op, value, gradient and the
//! partial on each edge, constants shown, names escaped, deep graphs without recursion.
//! (Graphviz itself is not needed: the text is checked directly.)

use tapegrad::dot::{Dot, draw_dot};
use tapegrad::{Error, Graph, Var, functional};

/// The node lines (`  n12 [label=...]`) of a DOT text.
fn node_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.trim_start().starts_with('n') && l.contains("[label=") && !l.contains(" -> "))
        .collect()
}

/// The edge lines between two tape nodes (`  n3 -> n9 [...]`).
fn edge_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.trim_start().starts_with('n') && l.contains(" -> "))
        .collect()
}

/// The label of the node line containing `needle`.
fn line_with<'t>(text: &'t str, needle: &str) -> &'t str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line contains {needle:?} in\n{text}"))
}

#[test]
fn chapter_position_0_loss_draws_exp_sum_div_ln_neg() {
    let probs = [0.1785, 0.2007, 0.1759, 0.1254, 0.1563, 0.1632];
    let g = Graph::new();
    let logits = g.vars(&probs.map(f64::ln));
    let loss = functional::cross_entropy_composed(&logits, 3);
    let grads = loss.backward();
    let text = Dot::new(loss)
        .gradients(&grads)
        .label(logits[3], "logit[I]")
        .render();

    // 6 inputs, 6 exp, 1 sum, 1 division, 1 ln, 1 negation.
    let nodes = node_lines(&text);
    let count = |op: &str| {
        nodes
            .iter()
            .filter(|l| l.contains(&format!("| {op} |")) || l.contains(&format!("\"{op} |")))
            .count()
    };
    assert_eq!(nodes.len(), 16, "{text}");
    assert_eq!(count("input"), 6, "{text}");
    assert_eq!(count("exp"), 6, "{text}");
    assert_eq!(count("sum"), 1, "{text}");
    assert_eq!(count("/"), 1, "{text}");
    assert_eq!(count("ln"), 1, "{text}");
    assert_eq!(count("neg"), 1, "{text}");
    // 6 input -> exp, 6 exp -> sum, exp_t and sum -> /, / -> ln, ln -> neg.
    assert_eq!(edge_lines(&text).len(), 16, "{text}");

    // The target logit's gradient is P(I) - 1 = 0.1254 - 1 (row 0 sums to 1).
    let target = line_with(&text, "logit[I]");
    assert!(target.contains("grad -0.8746"), "{target}");
    assert!(
        target.contains(&format!("value {:.4}", 0.1254f64.ln())),
        "{target}"
    );
    // The root's own gradient is 1 and its value the loss -ln 0.1254.
    let root = line_with(&text, "\"neg |");
    assert!(
        root.contains("value 2.0762") && root.contains("grad 1.0000"),
        "{root}"
    );
}

#[test]
fn edges_carry_the_local_partials() {
    // y = a / b at a = 3, b = 4: d/da = 1/b = 0.25, d/db = -a/b^2 = -0.1875.
    let g = Graph::new();
    let (a, b) = (g.var(3.0), g.var(4.0));
    let y = a / b;
    let text = draw_dot(y, None);
    let edges = edge_lines(&text);
    assert_eq!(edges.len(), 2);
    assert!(edges[0].contains("∂ 0.2500"), "{text}");
    assert!(edges[1].contains("∂ -0.1875"), "{text}");
    // without gradients, no grad field is drawn
    assert!(!text.contains("| grad"), "{text}");
}

#[test]
fn only_nodes_the_root_depends_on_are_drawn() {
    let g = Graph::new();
    let x = g.var(1.0);
    let unused_input = g.var(123.0);
    let side = x.sin() * 77.0; // recorded before the root, not used by it
    let root = x.exp() + 1.0;
    let _after = root * 4.75; // recorded after the root
    let text = draw_dot(root, None);
    assert_eq!(node_lines(&text).len(), 3, "{text}"); // x, exp, +
    for absent in ["123", "77", "4.75", "sin", "*"] {
        assert!(
            !text.contains(absent),
            "{absent} should not be drawn:\n{text}"
        );
    }
    let _ = (unused_input, side);
}

#[test]
fn constants_are_shown() {
    let g = Graph::new();
    let x = g.var(2.0);
    let c = g.constant(10.0);
    let y = x * 2.5 + c;
    let text = draw_dot(y, None);
    // the f64 operand 2.5 as a plain-text node, exactly; the constant node by its op
    assert!(text.contains("shape=plaintext, label=\"2.5\""), "{text}");
    assert!(
        line_with(&text, "\"constant |").contains("value 10.0000"),
        "{text}"
    );
}

#[test]
fn gradients_of_every_node_match_backward() {
    // z = (x y) + x: dz/dx = y + 1, dz/dy = x, dz/d(xy) = 1.
    let g = Graph::new();
    let (x, y) = (g.var(1.5), g.var(-2.0));
    let xy = x * y;
    let z = xy + x;
    let grads = z.backward();
    let text = Dot::new(z)
        .gradients(&grads)
        .label(x, "x")
        .label(y, "y")
        .label(xy, "xy")
        .render();
    assert!(line_with(&text, "\"x |").contains(&format!("grad {:.4}", grads[x])));
    assert!(line_with(&text, "\"x |").contains("grad -1.0000"));
    assert!(line_with(&text, "\"y |").contains("grad 1.5000"));
    assert!(line_with(&text, "\"xy |").contains("grad 1.0000"));
}

#[test]
fn labels_and_titles_are_escaped() {
    let g = Graph::new();
    let x = g.var(1.0);
    let text = Dot::new(x.exp())
        .label(x, "logit[<BOS>] {a|b} \"q\"")
        .title("say \"hi\"")
        .render();
    assert!(text.contains(r#"logit[\<BOS\>] \{a\|b\} \"q\""#), "{text}");
    assert!(text.contains(r#"label="say \"hi\"""#), "{text}");
}

#[test]
fn tiny_and_huge_numbers_stay_visible() {
    let g = Graph::new();
    let x = g.var(-30.0);
    let y = x.exp() * 1e20;
    let text = draw_dot(y, None);
    assert!(text.contains("value 9.3576e-14"), "{text}"); // e^-30, not 0.0000
    assert!(text.contains("value 9.3576e6"), "{text}"); // e^-30 * 1e20
}

#[test]
fn a_chain_100_000_deep_draws_without_recursion() {
    // A recursive walk would overflow the 2 MiB test-thread stack long before this depth.
    let g = Graph::with_capacity(100_001);
    let x = g.var(0.5);
    let mut y = x;
    for _ in 0..100_000 {
        y *= 1.0;
    }
    let text = draw_dot(y, None);
    assert_eq!(node_lines(&text).len(), 100_001);
    assert_eq!(edge_lines(&text).len(), 100_000);
}

#[test]
fn the_text_is_well_formed_dot() {
    let g = Graph::new();
    let xs = g.vars(&[0.1, 0.2, 0.3]);
    let y = functional::cross_entropy(&xs, 1);
    let grads = y.backward();
    let text = draw_dot(y, Some(&grads));
    assert!(text.starts_with("digraph tapegrad {\n"));
    assert!(text.ends_with("}\n"));
    assert_eq!(text.matches('{').count() - text.matches("\\{").count(), 1);
    for line in node_lines(&text) {
        assert!(line.ends_with("];"), "{line}");
        // quotes balance once escaped quotes are removed
        assert_eq!(
            line.replace("\\\"", "").matches('"').count() % 2,
            0,
            "{line}"
        );
    }
    // every edge refers to drawn nodes
    let ids: Vec<&str> = node_lines(&text)
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    for edge in edge_lines(&text) {
        let mut parts = edge.split_whitespace();
        let (from, _, to) = (parts.next().unwrap(), parts.next(), parts.next().unwrap());
        assert!(ids.contains(&from) && ids.contains(&to), "{edge}");
    }
}

#[test]
fn a_released_root_or_foreign_label_is_an_error() {
    let g = Graph::new();
    let x = g.var(1.0);
    let mark = g.mark();
    let y = x.exp();
    g.release(mark);
    assert_eq!(Dot::new(y).try_render(), Err(Error::Released));

    let h = Graph::new();
    let other: Var = h.var(1.0);
    let err = Dot::new(x.ln())
        .label(other, "other")
        .try_render()
        .unwrap_err();
    assert!(matches!(err, Error::ForeignHandle { .. }), "{err}");
}
