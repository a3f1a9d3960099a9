//! [`Inputs`]: differentiable inputs recorded together, in a buffer the graph registers
//! while it lives, so that a slice of it is proven valid with one lookup (a model's
//! weights in a matrix product, a gradient read of them). Uses the graph and the tape.

use super::error::Error;
use super::graph::{Graph, Var};
use super::keys::Handle;

/// Differentiable inputs recorded together by [`Graph::inputs`]: their `Var`s, which it
/// derefs to, in a buffer that cannot change and that the graph knows while it lives.
///
/// A matrix product with a slice of it as its second factor (a model's weights, as
/// [`nn::Linear`](crate::nn::Linear) uses them) and a gradient read of a slice of it
/// ([`Gradients::wrt_all`](crate::Gradients::wrt_all)) then check the slice's handles with
/// one lookup, instead of one per handle: a `Vec<Var>` may have been edited since it was
/// made, this buffer may not. [`nn::Params::bind`](crate::nn::Params::bind) binds a store
/// this way.
///
/// # Examples
///
/// ```
/// use tapegrad::{Graph, Scalar, linalg::{Matrix, Pairing}};
///
/// let g = Graph::new();
/// let w = g.inputs(&[1.0, 2.0, 3.0, 4.0]); // a 2 x 2 weight matrix
/// let x = g.vars(&[5.0, 6.0]);
/// let y = Scalar::dots(Matrix::new(&x, 1, 2), Matrix::new(&w, 2, 2), Pairing::Rows);
/// assert_eq!((y[0].value(), y[1].value()), (17.0, 39.0));
/// let grads = (y[0] + y[1]).backward();
/// assert_eq!(grads.wrt_all(&w), vec![5.0, 6.0, 5.0, 6.0]);
/// ```
pub struct Inputs<'g> {
    graph: &'g Graph,
    vars: Box<[Var<'g>]>,
}

impl<'g> std::ops::Deref for Inputs<'g> {
    type Target = [Var<'g>];

    fn deref(&self) -> &[Var<'g>] {
        &self.vars
    }
}

impl Inputs<'_> {
    /// Gives the inputs new values, in place: the same nodes and handles, for a new
    /// evaluation (a model's parameters after an optimizer step, without binding them
    /// again). Nodes recorded since that use them must have been released first, as for
    /// [`Graph::set_value`]; gradients computed before keep the values they were computed at.
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let w = g.inputs(&[1.0, 2.0]);
    /// let mark = g.mark();
    /// let y = w[0] * w[1];
    /// assert_eq!(y.backward().wrt_all(&w), vec![2.0, 1.0]);
    /// assert!(w.set_values(&[3.0, 4.0]).is_err()); // y still uses them
    /// g.release(mark);
    /// w.set_values(&[3.0, 4.0]).unwrap();
    /// let y = w[0] * w[1];
    /// assert_eq!((y.value(), y.backward().wrt_all(&w)), (12.0, vec![4.0, 3.0]));
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::BadOperands`] if `values` is not one value per input, or a node recorded
    /// after the inputs (and not released) uses one of them; [`Error::Released`] if the
    /// inputs were released.
    pub fn set_values(&self, values: &[f64]) -> Result<(), Error> {
        if values.len() != self.vars.len() {
            return Err(Error::BadOperands {
                op: "Inputs::set_values",
                why: format!(
                    "{} values for {} inputs: give one value per input",
                    values.len(),
                    self.vars.len()
                ),
            });
        }
        if values.is_empty() {
            return Ok(());
        }
        let mut tape = self.graph.tape.borrow_mut();
        let first = self
            .graph
            .runs
            .borrow()
            .find(&tape.keys, &self.vars)
            .ok_or(Error::Released)? as usize;
        let run = first..first + values.len();
        if tape.used_after(run.clone()) {
            return Err(Error::BadOperands {
                op: "Inputs::set_values",
                why: "a node recorded after these inputs uses them and would keep the old \
                      values; release those nodes (Graph::mark / Graph::release) first"
                    .into(),
            });
        }
        tape.values_mut()[run].copy_from_slice(values);
        Ok(())
    }
}

impl std::fmt::Debug for Inputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inputs")
            .field("graph", &self.graph.id)
            .field("len", &self.vars.len())
            .finish()
    }
}

impl Drop for Inputs<'_> {
    fn drop(&mut self) {
        self.graph.runs.borrow_mut().forget(&self.vars);
    }
}

impl Graph {
    /// Differentiable inputs, one per value, held as [`Inputs`]: in a buffer the graph
    /// knows, so that matrix products and gradient reads check a slice of them in one
    /// lookup (what a model's weights want; [`Graph::vars`] gives a plain `Vec`).
    ///
    /// # Examples
    ///
    /// ```
    /// let g = tapegrad::Graph::new();
    /// let w = g.inputs(&[1.0, 2.0]);
    /// assert_eq!(w[1].value(), 2.0);
    /// assert_eq!((w[0] * w[1]).backward().wrt_all(&w), vec![2.0, 1.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// If the graph is full.
    #[track_caller]
    pub fn inputs(&self, xs: &[f64]) -> Inputs<'_> {
        let vars = self.vars(xs).into_boxed_slice();
        if let (Some(first), Some(last)) = (vars.first(), vars.last()) {
            let first_pos = first.pos();
            self.runs
                .borrow_mut()
                .register(&vars, first_pos, (first.key, last.key));
        }
        Inputs { graph: self, vars }
    }
}
