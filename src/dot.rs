//! Graphviz export: the part of a graph that an output depends on, as DOT text (micrograd's
//! `draw_dot`, in Rust and without recursion). Reads the tape; never records or changes it.
//!
//! Each node is drawn as a box of stacked fields: its name (if given), op, value and
//! gradient (if a [`Gradients`] is given), with an edge from each operand labelled by its
//! partial, the op's local derivative at this point. Untracked `f64` constants (the `2.0` in `x * 2.0`) are drawn
//! as plain text beside the node that uses them. Render the text with Graphviz:
//! `dot -Tsvg graph.dot -o graph.svg`.
//!
//! The reachable nodes are found by one reverse pass over tape positions from the root
//! (a node's operands are always recorded before it), so a chain a million nodes deep
//! draws without overflowing the stack.
//!
//! # Examples
//!
//! ```
//! use tapegrad::{dot::Dot, Graph};
//!
//! let g = Graph::new();
//! let x = g.var(3.0);
//! let y = (x * 2.0).exp();
//! let grads = y.backward();
//! let text = Dot::new(y).gradients(&grads).label(x, "x").render();
//! assert!(text.starts_with("digraph tapegrad {"));
//! assert!(text.contains("exp"));
//! // the constant 2 is shown, and x's gradient 2 e^6 is on its node
//! assert!(text.contains("label=\"2\""));
//! assert!(text.contains(&format!("grad {:.4}", 2.0 * 6f64.exp())));
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::engine::{Error, Gradients, Node, Op, Operand, Var};

/// A DOT drawing of everything `root` depends on, with optional gradients and names.
///
/// # Examples
///
/// ```
/// use tapegrad::{dot::Dot, Graph};
///
/// let g = Graph::new();
/// let a = g.var(1.0);
/// let b = g.var(2.0);
/// let unused = g.var(5.0);
/// let c = a * b + a;
/// let text = Dot::new(c).label(a, "a").render();
/// assert_eq!(text.matches("->").count(), 4); // a, b into *; * and a into +
/// assert!(!text.contains("value 5")); // not reachable from c
/// # let _ = unused;
/// ```
#[derive(Clone, Debug)]
pub struct Dot<'a, 'g> {
    root: Var<'g>,
    grads: Option<&'a Gradients>,
    labels: Vec<(Var<'g>, String)>,
    title: Option<String>,
}

impl<'a, 'g> Dot<'a, 'g> {
    /// A drawing of the nodes `root` depends on.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// assert!(tapegrad::dot::Dot::new(x.ln()).render().contains("ln"));
    /// ```
    pub fn new(root: Var<'g>) -> Self {
        Dot {
            root,
            grads: None,
            labels: Vec::new(),
            title: None,
        }
    }

    /// Shows each node's gradient from `grads` (usually `root.backward()`).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// let y = x * x;
    /// let grads = y.backward();
    /// assert!(tapegrad::dot::Dot::new(y).gradients(&grads).render().contains("grad 2.0000"));
    /// ```
    pub fn gradients(mut self, grads: &'a Gradients) -> Self {
        self.grads = Some(grads);
        self
    }

    /// Names node `x` in the drawing (shown above its op), e.g. `"logit[I]"`.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// let text = tapegrad::dot::Dot::new(x.exp()).label(x, "x<0>").render();
    /// assert!(text.contains(r"x\<0\>")); // escaped for Graphviz records
    /// ```
    pub fn label(mut self, x: Var<'g>, name: impl Into<String>) -> Self {
        self.labels.push((x, name.into()));
        self
    }

    /// A title drawn at the top of the picture.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(1.0);
    /// assert!(tapegrad::dot::Dot::new(x).title("one node").render().contains("one node"));
    /// ```
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// The DOT text.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let text = tapegrad::dot::Dot::new(g.var(1.0).sin()).render();
    /// assert!(text.trim_end().ends_with('}'));
    /// ```
    ///
    /// # Panics
    ///
    /// If the root or a labelled `Var` was released, or belongs to another graph than the
    /// root, or the gradients belong to another graph (see [`Dot::try_render`]).
    #[track_caller]
    pub fn render(&self) -> String {
        crate::engine::or_panic(self.try_render())
    }

    /// [`Dot::render`], returning an error instead of panicking.
    ///
    /// # Errors
    ///
    /// [`Error::Released`] if the root or a labelled `Var` was released;
    /// [`Error::ForeignHandle`] if a labelled `Var` or the gradients belong to another
    /// graph than the root.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{dot::Dot, Graph};
    /// let g = Graph::new();
    /// let mark = g.mark();
    /// let y = g.var(1.0).exp();
    /// g.release(mark);
    /// assert!(Dot::new(y).try_render().is_err());
    /// ```
    pub fn try_render(&self) -> Result<String, Error> {
        let graph = self.root.graph();
        let root = self.root.try_position()?;

        let mut names: HashMap<usize, &str> = HashMap::new();
        for (x, name) in &self.labels {
            if !std::ptr::eq(x.graph(), graph) {
                return Err(Error::ForeignHandle {
                    what: "Var",
                    owner: x.graph().id(),
                    used_with: graph.id(),
                });
            }
            names.insert(x.try_position()?, name);
        }

        // Every node the root depends on, found through the public read API (`Var::node`)
        // with an explicit stack, not recursion; drawn in tape order.
        let mut nodes: Vec<Option<(Var<'g>, Node<'g>)>> = vec![None; root + 1];
        let mut stack = vec![(root, self.root)];
        while let Some((pos, x)) = stack.pop() {
            if nodes[pos].is_some() {
                continue;
            }
            let node = x.try_node()?;
            for operand in &node.operands {
                if let Operand::Scalar(y) = *operand {
                    stack.push((y.try_position()?, y));
                }
            }
            nodes[pos] = Some((x, node));
        }
        let grad = |x: Var<'g>| self.grads.map(|grads| grads.try_wrt(x)).transpose();

        let mut out = String::new();
        out.push_str("digraph tapegrad {\n");
        // Left to right, so a record's top-level fields stack vertically: compact boxes.
        out.push_str("  rankdir=LR;\n");
        out.push_str("  node [shape=record, fontname=\"Helvetica\", fontsize=11];\n");
        out.push_str("  edge [fontname=\"Helvetica\", fontsize=9, color=\"#555555\"];\n");
        if let Some(title) = &self.title {
            let _ = writeln!(
                out,
                "  labelloc=t; fontname=\"Helvetica\"; label=\"{}\";",
                escape_string(title)
            );
        }
        for (pos, (x, node)) in nodes
            .iter()
            .enumerate()
            .filter_map(|(pos, n)| Some((pos, n.as_ref()?)))
        {
            let mut fields = Vec::with_capacity(4);
            if let Some(name) = names.get(&pos) {
                fields.push(escape_record(name));
            }
            fields.push(escape_record(node.name));
            fields.push(format!("value {}", number(node.value)));
            if let Some(g) = grad(*x)? {
                fields.push(format!("grad {}", number(g)));
            }
            let style = match node.op {
                Op::Input => ", style=filled, fillcolor=\"#dbe9f6\"",
                Op::Constant => ", style=filled, fillcolor=\"#eeeeee\"",
                _ if pos == root => ", style=filled, fillcolor=\"#f6e0c8\"",
                _ => "",
            };
            let _ = writeln!(out, "  n{pos} [label=\"{}\"{style}];", fields.join(" | "));
            for (k, (operand, &partial)) in node.operands.iter().zip(&node.partials).enumerate() {
                match *operand {
                    Operand::Const(c) => {
                        let _ = writeln!(
                            out,
                            "  c{pos}_{k} [shape=plaintext, label=\"{c}\"];\n  c{pos}_{k} -> n{pos};"
                        );
                    }
                    Operand::Scalar(y) => {
                        let arg = y.try_position()?;
                        let _ =
                            writeln!(out, "  n{arg} -> n{pos} [label=\"∂ {}\"];", number(partial));
                    }
                }
            }
        }
        out.push_str("}\n");
        Ok(out)
    }
}

/// Shorthand for `Dot::new(root)` with optional gradients, rendered: micrograd's
/// `draw_dot(root)`.
///
/// # Examples
///
/// ```
/// let g = tapegrad::Graph::new();
/// let x = g.var(2.0);
/// let y = x.powi(2);
/// let grads = y.backward();
/// let text = tapegrad::dot::draw_dot(y, Some(&grads));
/// assert!(text.contains("grad 4.0000")); // dy/dx = 2x
/// ```
///
/// # Panics
///
/// As [`Dot::render`].
#[track_caller]
pub fn draw_dot(root: Var<'_>, grads: Option<&Gradients>) -> String {
    let mut dot = Dot::new(root);
    if let Some(grads) = grads {
        dot = dot.gradients(grads);
    }
    dot.render()
}

/// A number for a label: four decimals in the range people read comfortably, scientific
/// notation outside it (so 1e-12 does not show as 0.0000).
fn number(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.is_finite() && (1e-3..1e4).contains(&x.abs()) {
        format!("{x:.4}")
    } else {
        format!("{x:.4e}")
    }
}

/// Escapes text for a field of a Graphviz record label.
fn escape_record(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '{' | '}' | '|' | '<' | '>' | '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Escapes text for an ordinary quoted DOT string.
fn escape_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
