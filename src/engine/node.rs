//! [`Node`]: what one node holds, read through its handle ([`Var::node`]): the op that made
//! it, its value, and its operands with the op's partial derivative with respect to each
//! (micrograd's `_op` and `_prev`, with the local derivatives beside them). The public way
//! for the layers above the engine (graph drawing, users' own tools) to walk a graph.
//! Reads the tape; never records.

use super::error::{Error, or_panic};
use super::graph::Var;
use super::op::Op;
use super::scalar::Operand;
use super::tape::CONST_ARG;

/// One node as it was recorded, read through a handle with [`Var::node`].
///
/// # Examples
///
/// ```
/// use tapegrad::{Binary, Graph, Op, Operand};
///
/// let g = Graph::new();
/// let (x, y) = (g.var(2.0), g.var(3.0));
/// let z = x * y + 1.0;
/// let node = z.node();
/// assert_eq!((node.op, node.value), (Op::Binary(Binary::Add), 7.0));
/// // Its operands: the product node and the constant 1, each with d z / d operand.
/// assert!(matches!(node.operands[0], Operand::Scalar(p) if p.node().op == Op::Binary(Binary::Mul)));
/// assert!(matches!(node.operands[1], Operand::Const(c) if c == 1.0));
/// assert_eq!(node.partials, vec![1.0, 1.0]);
/// let product = z.node().operands[0];
/// let Operand::Scalar(product) = product else { unreachable!() };
/// assert_eq!(product.node().partials, vec![3.0, 2.0]); // d(xy)/dx = y, d(xy)/dy = x
/// ```
#[derive(Clone, Debug)]
pub struct Node<'g> {
    /// The op that made the node.
    pub op: Op,
    /// The op's name: the op table's, or a user-defined function's
    /// ([`CustomFn::name`](crate::CustomFn::name)).
    pub name: &'static str,
    /// The node's value.
    pub value: f64,
    /// The operands, in order: handles of earlier nodes, or untracked `f64` constants.
    pub operands: Vec<Operand<Var<'g>>>,
    /// The op's partial derivative with respect to each operand, at the recorded values
    /// (what the backward sweep multiplies by); for a constant operand too, from the op
    /// table, though nothing flows to a constant.
    pub partials: Vec<f64>,
}

impl<'g> Var<'g> {
    /// What this node holds: its op, value, operands and partials (see [`Node`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let x = g.var(0.0);
    /// let y = x.exp();
    /// assert_eq!(y.node().name, "exp");
    /// assert_eq!(y.node().partials, vec![1.0]); // d e^x / dx = e^0
    /// assert!(x.node().operands.is_empty());
    /// ```
    ///
    /// # Panics
    ///
    /// If the node was released (see [`Var::try_node`]).
    #[track_caller]
    pub fn node(&self) -> Node<'g> {
        or_panic(self.try_node())
    }

    /// [`Var::node`], or the error that prevents reading it.
    ///
    /// # Errors
    ///
    /// [`Error::Released`] if the node was released.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let mark = g.mark();
    /// let x = g.var(1.0);
    /// g.release(mark);
    /// assert!(x.try_node().is_err());
    /// ```
    pub fn try_node(&self) -> Result<Node<'g>, Error> {
        let graph = self.graph();
        let tape = graph.tape.borrow();
        let at = graph.resolve_var(&tape, *self)?;
        let pos = at.arg as usize;
        let op = tape.op(pos);
        let (args, weights) = tape.edges(pos);
        let operands: Vec<Operand<Var<'g>>> = args
            .iter()
            .zip(weights.iter())
            .map(|(&arg, &w)| match arg {
                // A constant operand's weight slot holds the constant itself.
                CONST_ARG => Operand::Const(w),
                _ => Operand::Scalar(graph.handle(&tape, arg)),
            })
            .collect();
        let mut partials = weights.into_owned();
        if args.contains(&CONST_ARG) {
            // Not stored (nothing flows to a constant): taken from the op table.
            let values: Vec<f64> = tape.operand_values_iter(pos).collect();
            let y = at.value;
            for (k, _) in args.iter().enumerate().filter(|&(_, &a)| a == CONST_ARG) {
                partials[k] = match op {
                    Op::Binary(b) => b.partial(values[0], values[1], y, k),
                    Op::Nary(n) => n.partials(&values, y)[k],
                    _ => unreachable!("only binary and n-ary nodes have constant operands"),
                };
            }
        }
        Ok(Node {
            op,
            name: tape.op_name(pos),
            value: at.value,
            operands,
            partials,
        })
    }
}
