//! [`Params`]: named, shaped parameter tensors owned as plain `f64`, handed out as [`Param`]
//! ids; [`View`] reads them as `f64` or as bound `Var`s; [`Grads`] holds one step's gradients.
//! Built on the engine's public API and `linalg`; may not use the modules (`layers.rs`).

use std::fmt;
use std::ops::{Index, IndexMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::Error;
use crate::engine::Gradients;
use crate::engine::Var;
use crate::engine::{Graph, Inputs, Mark};
use crate::linalg::Matrix;

/// Store ids (layouts and instances) start at 1 and are unique in the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// What a store or a state dict reports instead of a wrong number.
///
/// # Examples
///
/// ```
/// use tapegrad::nn::{ParamError, Params};
/// let mut params = Params::new();
/// params.zeros("w", &[2]);
/// let err = params.load_state_dict(&Params::new().state_dict()).unwrap_err();
/// assert_eq!(err, ParamError::Missing { name: "w".into() });
/// assert!(err.to_string().contains("\"w\""));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ParamError {
    /// Gradients computed for another store were applied to this one.
    ForeignGradients,
    /// Gradients computed before the store last changed (an optimizer step, a load, an
    /// edit): applying them would step from values they were not computed at.
    StaleGradients,
    /// A [`Binding`] made for one store was given another.
    ForeignStore,
    /// A tensor the store (or optimizer) needs is not in the file or state dict.
    Missing {
        /// The tensor's name.
        name: String,
    },
    /// A tensor in the file or state dict that the store does not have.
    Unexpected {
        /// The tensor's name.
        name: String,
    },
    /// A tensor has another shape than the store's.
    Shape {
        /// The tensor's name.
        name: String,
        /// The store's shape.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A tensor is stored with a dtype tapegrad cannot read as `f64` exactly (only `F64`,
    /// `F32` and `BF16` can be).
    Dtype {
        /// The tensor's name.
        name: String,
        /// The dtype found.
        found: String,
    },
    /// The bytes are not a valid file of the format (what is wrong, in words).
    Format(String),
    /// Reading or writing a file failed.
    Io(String),
    /// The engine refused (a released or foreign output, an anomaly).
    Engine(Error),
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::ForeignGradients => f.write_str(
                "tapegrad::nn: these gradients were computed for another parameter store",
            ),
            ParamError::StaleGradients => f.write_str(
                "tapegrad::nn: these gradients are stale: the parameters changed (a step, a \
                 load or an edit) after they were computed; compute them again",
            ),
            ParamError::ForeignStore => f.write_str(
                "tapegrad::nn: this binding was made for another parameter store (or the \
                 same store before its tensors changed); bind this one",
            ),
            ParamError::Missing { name } => {
                write!(f, "tapegrad::nn: tensor {name:?} is missing")
            }
            ParamError::Unexpected { name } => write!(
                f,
                "tapegrad::nn: tensor {name:?} is not a tensor of this store"
            ),
            ParamError::Shape {
                name,
                expected,
                found,
            } => write!(
                f,
                "tapegrad::nn: tensor {name:?} has shape {found:?}, expected {expected:?}"
            ),
            ParamError::Dtype { name, found } => write!(
                f,
                "tapegrad::nn: tensor {name:?} has dtype {found}, expected F64, F32 or BF16"
            ),
            ParamError::Format(why) => write!(f, "tapegrad::nn: not a valid file: {why}"),
            ParamError::Io(why) => write!(f, "tapegrad::nn: {why}"),
            ParamError::Engine(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ParamError {}

impl From<Error> for ParamError {
    fn from(e: Error) -> Self {
        ParamError::Engine(e)
    }
}

/// One tensor's place in the store.
#[derive(Clone, Debug, PartialEq)]
struct TensorInfo {
    name: String,
    shape: Vec<usize>,
    start: usize,
    len: usize,
}

/// The names and shapes of a store's tensors, shared (copy on write) by its clones and its
/// gradients, so both can be indexed by [`Param`].
#[derive(Clone, Debug, PartialEq)]
struct Layout {
    /// Tells this store's `Param`s from another's (clones share it).
    id: u64,
    tensors: Vec<TensorInfo>,
}

impl Layout {
    #[track_caller]
    fn range(&self, p: Param) -> std::ops::Range<usize> {
        assert!(
            p.layout == self.id && (p.index as usize) < self.tensors.len(),
            "tapegrad::nn: a Param of another parameter store (store #{}, tensor {}) was used \
             with store #{}",
            p.layout,
            p.index,
            self.id
        );
        let t = &self.tensors[p.index as usize];
        t.start..t.start + t.len
    }
}

/// A handle to one tensor of a [`Params`] store: `Copy`, 16 bytes, no lifetime. Models hold
/// these instead of values.
///
/// # Examples
///
/// ```
/// use tapegrad::nn::Params;
/// let mut params = Params::new();
/// let w = params.add("w", &[2], vec![1.0, 2.0]);
/// assert_eq!(&params[w], &[1.0, 2.0]);
/// assert_eq!(params.name(w), "w");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Param {
    layout: u64,
    index: u32,
}

impl Param {
    /// Its position among the store's tensors (the order they were added).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::Params;
    /// let mut params = Params::new();
    /// params.zeros("a", &[1]);
    /// assert_eq!(params.zeros("b", &[1]).index(), 1);
    /// ```
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// Named, shaped parameter tensors, owned as plain `f64` in one flat vector (in the order
/// they were added, each row-major). No lifetime: a model owns it (or sits beside it).
///
/// Each step binds it to a [`Graph`] ([`Params::value_and_grad`], or [`Params::bind`]
/// for more control) and gets [`Grads`] back; an optimizer then updates it. The store
/// counts its changes, so gradients computed before a change are refused
/// ([`ParamError::StaleGradients`]) rather than applied to values they were not computed
/// at.
///
/// # Examples
///
/// ```
/// use tapegrad::nn::Params;
/// let mut params = Params::new();
/// let w = params.add("w", &[2, 2], vec![1.0, 2.0, 3.0, 4.0]);
/// let b = params.zeros("b", &[2]);
/// assert_eq!((params.len(), params.num_tensors()), (6, 2));
/// assert_eq!(params.shape(w), &[2, 2]);
/// assert_eq!(params.find("b"), Some(b));
/// params[b][1] = 0.5;
/// assert_eq!(params.as_slice(), &[1.0, 2.0, 3.0, 4.0, 0.0, 0.5]);
/// ```
#[derive(Debug)]
pub struct Params {
    layout: Arc<Layout>,
    /// Tells this store from its clones (gradients are checked against it).
    instance: u64,
    /// Bumped by every change of the values or the layout.
    version: u64,
    values: Vec<f64>,
}

impl Clone for Params {
    /// A copy with the same tensors (the same [`Param`]s index it), but gradients computed
    /// for one are refused by the other.
    fn clone(&self) -> Self {
        Params {
            layout: Arc::clone(&self.layout),
            instance: next_id(),
            version: 0,
            values: self.values.clone(),
        }
    }
}

impl Default for Params {
    fn default() -> Self {
        Params::new()
    }
}

impl Params {
    /// An empty store.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tapegrad::nn::Params::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Params {
            layout: Arc::new(Layout {
                id: next_id(),
                tensors: Vec::new(),
            }),
            instance: next_id(),
            version: 0,
            values: Vec::new(),
        }
    }

    /// Adds a tensor called `name` of `shape` with `values` (row-major).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// let w = params.add("w", &[1, 3], vec![1.0, 2.0, 3.0]);
    /// assert_eq!(params.view().matrix(w).get(0, 2), 3.0);
    /// ```
    ///
    /// # Panics
    ///
    /// If the store already has a tensor called `name`, or `values.len()` is not the
    /// product of `shape`.
    #[track_caller]
    pub fn add(&mut self, name: impl Into<String>, shape: &[usize], values: Vec<f64>) -> Param {
        let name = name.into();
        let len = shape.iter().product::<usize>();
        assert_eq!(
            values.len(),
            len,
            "Params::add: tensor {name:?} of shape {shape:?} needs {len} values, got {}",
            values.len()
        );
        assert!(
            self.find(&name).is_none(),
            "Params::add: the store already has a tensor called {name:?}"
        );
        let index = u32::try_from(self.layout.tensors.len()).expect("fewer than 2^32 tensors");
        let layout = Arc::make_mut(&mut self.layout);
        layout.tensors.push(TensorInfo {
            name,
            shape: shape.to_vec(),
            start: self.values.len(),
            len,
        });
        self.values.extend(values);
        self.version += 1;
        Param {
            layout: layout.id,
            index,
        }
    }

    /// Adds a tensor whose entries are drawn one by one, row-major, from `init` (e.g.
    /// [`init::uniform`](crate::nn::init::uniform)).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// let mut n = 0.0;
    /// let w = params.init("w", &[3], &mut || { n += 1.0; n });
    /// assert_eq!(&params[w], &[1.0, 2.0, 3.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`Params::add`].
    #[track_caller]
    pub fn init(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        init: &mut dyn FnMut() -> f64,
    ) -> Param {
        let values = (0..shape.iter().product::<usize>())
            .map(|_| init())
            .collect();
        self.add(name, shape, values)
    }

    /// Adds a tensor of zeros.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// let b = params.zeros("b", &[2]);
    /// assert_eq!(&params[b], &[0.0, 0.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`Params::add`].
    #[track_caller]
    pub fn zeros(&mut self, name: impl Into<String>, shape: &[usize]) -> Param {
        self.full(name, shape, 0.0)
    }

    /// Adds a tensor whose entries are all `value`.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// let g = params.full("gamma", &[2], 1.0);
    /// assert_eq!(&params[g], &[1.0, 1.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// As [`Params::add`].
    #[track_caller]
    pub fn full(&mut self, name: impl Into<String>, shape: &[usize], value: f64) -> Param {
        self.add(name, shape, vec![value; shape.iter().product()])
    }

    /// The number of scalars.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// params.zeros("w", &[2, 3]);
    /// assert_eq!(params.len(), 6);
    /// ```
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether it holds no scalars.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tapegrad::nn::Params::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The number of tensors.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// params.zeros("w", &[2, 3]);
    /// assert_eq!(params.num_tensors(), 1);
    /// ```
    pub fn num_tensors(&self) -> usize {
        self.layout.tensors.len()
    }

    /// Every tensor's id, in the order they were added.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// let (a, b) = (params.zeros("a", &[1]), params.zeros("b", &[1]));
    /// assert_eq!(params.params().collect::<Vec<_>>(), vec![a, b]);
    /// ```
    pub fn params(&self) -> impl ExactSizeIterator<Item = Param> + '_ {
        let layout = self.layout.id;
        (0..self.layout.tensors.len() as u32).map(move |index| Param { layout, index })
    }

    /// The tensor called `name`, if there is one.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// let w = params.zeros("w", &[1]);
    /// assert_eq!(params.find("w"), Some(w));
    /// assert_eq!(params.find("v"), None);
    /// ```
    pub fn find(&self, name: &str) -> Option<Param> {
        self.params().find(|&p| self.name(p) == name)
    }

    /// The tensor's name.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// let w = params.zeros("fc.weight", &[1]);
    /// assert_eq!(params.name(w), "fc.weight");
    /// ```
    ///
    /// # Panics
    ///
    /// If `p` belongs to another store.
    #[track_caller]
    pub fn name(&self, p: Param) -> &str {
        self.layout.range(p);
        &self.layout.tensors[p.index()].name
    }

    /// The tensor's shape.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// let w = params.zeros("w", &[2, 3]);
    /// assert_eq!(params.shape(w), &[2, 3]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `p` belongs to another store.
    #[track_caller]
    pub fn shape(&self, p: Param) -> &[usize] {
        self.layout.range(p);
        &self.layout.tensors[p.index()].shape
    }

    /// All values, flat, in the order the tensors were added.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// params.add("w", &[2], vec![1.0, 2.0]);
    /// assert_eq!(params.as_slice(), &[1.0, 2.0]);
    /// ```
    pub fn as_slice(&self) -> &[f64] {
        &self.values
    }

    /// All values, flat, to change (gradients computed before are then stale).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// params.add("w", &[2], vec![1.0, 2.0]);
    /// params.as_mut_slice()[0] = 5.0;
    /// assert_eq!(params.as_slice(), &[5.0, 2.0]);
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [f64] {
        self.version += 1;
        &mut self.values
    }

    /// A view of the values as `f64`: run a model's forward on it to evaluate without
    /// recording anything (PyTorch's `no_grad`).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// let w = params.add("w", &[2], vec![1.0, 2.0]);
    /// let p = params.view();
    /// assert_eq!(p[w][1], 2.0);
    /// ```
    pub fn view(&self) -> View<'_, f64> {
        View {
            layout: &self.layout,
            values: &self.values,
        }
    }

    /// Binds every value to `graph` as a differentiable input, in one bulk call, after a
    /// mark taken first: [`Bound::gradients`] (or dropping the [`Bound`]) releases them
    /// with everything recorded after them. While it is bound, the store cannot change
    /// (the `Bound` borrows it), so the order forward, backward, step is the only one
    /// that compiles.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, Graph};
    /// let mut params = Params::new();
    /// let w = params.add("w", &[2], vec![3.0, 4.0]);
    /// let g = Graph::new();
    /// let bound = params.bind(&g);
    /// let p = bound.view();
    /// let loss = p[w][0] * p[w][1];
    /// let grads = bound.gradients(loss).unwrap();
    /// assert_eq!(&grads[w], &[4.0, 3.0]);
    /// assert!(g.is_empty());
    /// ```
    ///
    /// # Panics
    ///
    /// If the graph is full.
    #[track_caller]
    pub fn bind<'p, 'g>(&'p self, graph: &'g Graph) -> Bound<'p, 'g> {
        let mark = graph.mark();
        let vars = graph.inputs(&self.values);
        Bound {
            params: self,
            graph,
            mark,
            vars,
        }
    }

    /// The store's values bound to `graph` once for a whole training run: each
    /// [`Binding::value_and_grad`] writes the store's current values into the same input
    /// nodes (no new nodes or handles, where [`Params::value_and_grad`] binds the store
    /// again every step) and releases the step's nodes after it. The graph is then the
    /// binding's workspace: anything recorded on it after the binding is released by the
    /// next step.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, Graph};
    /// let mut params = Params::new();
    /// let w = params.add("w", &[1], vec![3.0]);
    /// let g = Graph::new();
    /// let mut binding = params.binding(&g);
    /// for _ in 0..3 {
    ///     let (loss, grads) = binding.value_and_grad(&params, |p| (p[w][0] - 1.0).powi(2)).unwrap();
    ///     assert_eq!(grads[w][0], 2.0 * (params[w][0] - 1.0));
    ///     let step = 0.25 * grads[w][0];
    ///     params.update(&grads, |v, _| v[0] -= step).unwrap();
    ///     assert!(loss > 0.0);
    /// }
    /// assert_eq!(params[w][0], 1.25); // 3 -> 2 -> 1.5 -> 1.25
    /// assert_eq!(g.len(), 1); // the bound parameter, nothing else
    /// ```
    ///
    /// # Panics
    ///
    /// If the graph is full.
    #[track_caller]
    pub fn binding<'g>(&self, graph: &'g Graph) -> Binding<'g> {
        let inputs = graph.inputs(&self.values);
        Binding {
            layout: Arc::clone(&self.layout),
            instance: self.instance,
            version: self.version,
            step: graph.mark(),
            graph,
            inputs,
        }
    }

    /// One step's forward and backward: binds the values to `graph`, runs `f` on the
    /// bound view to record the loss, and returns the loss's value and its gradients with
    /// respect to every parameter. The step's nodes (parameters included) are released
    /// before it returns, so `graph` is left as it was.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, Graph};
    /// let mut params = Params::new();
    /// let w = params.add("w", &[2], vec![3.0, 4.0]);
    /// let g = Graph::new();
    /// let (loss, grads) = params.value_and_grad(&g, |p| p[w][0] * p[w][1]).unwrap();
    /// assert_eq!((loss, &grads[w]), (12.0, &[4.0, 3.0][..]));
    /// ```
    ///
    /// # Errors
    ///
    /// [`ParamError::Engine`] if the loss is a released `Var` or one of another graph, or
    /// the backward fails (anomaly mode).
    ///
    /// # Panics
    ///
    /// Where `f` panics; if the graph is full.
    #[track_caller]
    pub fn value_and_grad<'g>(
        &self,
        graph: &'g Graph,
        f: impl FnOnce(&View<'_, Var<'g>>) -> Var<'g>,
    ) -> Result<(f64, Grads), ParamError> {
        let (value, (), grads) = self.value_and_grad_aux(graph, |p| (f(p), ()))?;
        Ok((value, grads))
    }

    /// [`Params::value_and_grad`] for a closure that returns something else beside the
    /// loss (JAX's `has_aux`), e.g. the scores or an accuracy. `Var`s in it are released
    /// when this returns: read their values inside `f`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, Graph};
    /// let mut params = Params::new();
    /// let w = params.add("w", &[1], vec![3.0]);
    /// let g = Graph::new();
    /// let (loss, cube, grads) = params
    ///     .value_and_grad_aux(&g, |p| {
    ///         let x = p[w][0];
    ///         (x * x, x.powi(3).value())
    ///     })
    ///     .unwrap();
    /// assert_eq!((loss, cube, grads[w][0]), (9.0, 27.0, 6.0));
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Params::value_and_grad`].
    ///
    /// # Panics
    ///
    /// As [`Params::value_and_grad`].
    #[track_caller]
    pub fn value_and_grad_aux<'g, A>(
        &self,
        graph: &'g Graph,
        f: impl FnOnce(&View<'_, Var<'g>>) -> (Var<'g>, A),
    ) -> Result<(f64, A, Grads), ParamError> {
        let bound = self.bind(graph);
        let (loss, aux) = f(&bound.view());
        let value = loss.try_value()?;
        let grads = bound.gradients(loss)?;
        Ok((value, aux, grads))
    }

    /// Gradients of zero for every parameter, valid for the store as it is now (e.g. to
    /// accumulate into with [`Grads::add_assign`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// params.zeros("w", &[3]);
    /// assert_eq!(params.zero_grads().as_slice(), &[0.0; 3]);
    /// ```
    pub fn zero_grads(&self) -> Grads {
        self.grads_from(vec![0.0; self.len()])
    }

    /// Gradients for the store as it is now from plain numbers, one per scalar in store
    /// order (e.g. computed by hand, or by another tool).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// let w = params.zeros("w", &[2]);
    /// let grads = params.grads_from(vec![1.0, 2.0]);
    /// assert_eq!(&grads[w], &[1.0, 2.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `values.len()` is not [`Params::len`].
    #[track_caller]
    pub fn grads_from(&self, values: Vec<f64>) -> Grads {
        assert_eq!(
            values.len(),
            self.len(),
            "Params::grads_from: the store has {} parameters, got {} gradients",
            self.len(),
            values.len()
        );
        Grads {
            layout: Arc::clone(&self.layout),
            instance: self.instance,
            version: self.version,
            values,
        }
    }

    /// `Ok` if `grads` were computed for this store as it is now; optimizers call this
    /// before they change anything.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{ParamError, Params};
    /// let mut params = Params::new();
    /// params.zeros("w", &[1]);
    /// let grads = params.zero_grads();
    /// assert_eq!(params.check_grads(&grads), Ok(()));
    /// params.as_mut_slice()[0] = 1.0;
    /// assert_eq!(params.check_grads(&grads), Err(ParamError::StaleGradients));
    /// ```
    ///
    /// # Errors
    ///
    /// [`ParamError::ForeignGradients`] for gradients of another store (a clone
    /// included); [`ParamError::StaleGradients`] if the store changed since.
    pub fn check_grads(&self, grads: &Grads) -> Result<(), ParamError> {
        if grads.instance != self.instance {
            return Err(ParamError::ForeignGradients);
        }
        if grads.version != self.version {
            return Err(ParamError::StaleGradients);
        }
        Ok(())
    }

    /// Checks `grads` ([`Params::check_grads`]), then lets `update` change the values
    /// with the gradients beside them: what an optimizer's step is made of. Afterwards
    /// `grads` (and every other gradient computed before) is stale.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// params.add("w", &[2], vec![1.0, 2.0]);
    /// let grads = params.grads_from(vec![10.0, 20.0]);
    /// params.update(&grads, |values, g| {
    ///     for (x, g) in values.iter_mut().zip(g) { *x -= 0.1 * g; }
    /// }).unwrap();
    /// assert_eq!(params.as_slice(), &[0.0, 0.0]);
    /// assert!(params.update(&grads, |_, _| {}).is_err()); // stale now
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Params::check_grads`]; nothing is changed then.
    pub fn update(
        &mut self,
        grads: &Grads,
        update: impl FnOnce(&mut [f64], &[f64]),
    ) -> Result<(), ParamError> {
        self.check_grads(grads)?;
        self.version += 1;
        update(&mut self.values, &grads.values);
        Ok(())
    }

    /// The range of `p`'s values in the flat vector.
    #[track_caller]
    pub(crate) fn range(&self, p: Param) -> std::ops::Range<usize> {
        self.layout.range(p)
    }

    /// Replaces the values from `values` (flat, store order); used by loading.
    pub(crate) fn replace_values(&mut self, values: Vec<f64>) {
        debug_assert_eq!(values.len(), self.values.len());
        self.values = values;
        self.version += 1;
    }
}

impl Index<Param> for Params {
    type Output = [f64];

    /// The tensor's values, row-major.
    ///
    /// # Panics
    ///
    /// If `p` belongs to another store.
    #[track_caller]
    fn index(&self, p: Param) -> &[f64] {
        &self.values[self.layout.range(p)]
    }
}

impl IndexMut<Param> for Params {
    /// The tensor's values, to change (gradients computed before are then stale).
    ///
    /// # Panics
    ///
    /// If `p` belongs to another store.
    #[track_caller]
    fn index_mut(&mut self, p: Param) -> &mut [f64] {
        self.version += 1;
        let range = self.layout.range(p);
        &mut self.values[range]
    }
}

/// A store's values as `T`: `f64` ([`Params::view`], plain evaluation) or `Var`
/// ([`Bound::view`], recorded). Index it with a [`Param`] for the tensor's entries, or ask
/// for a [`Matrix`]. A model's forward takes `&View<T>` and is written once.
///
/// # Examples
///
/// ```
/// use tapegrad::{nn::{Params, View}, Graph, Scalar};
///
/// fn norm2<T: Scalar>(p: &View<T>, w: tapegrad::nn::Param) -> T {
///     T::dot(&p[w], &p[w])
/// }
///
/// let mut params = Params::new();
/// let w = params.add("w", &[2], vec![3.0, 4.0]);
/// assert_eq!(norm2(&params.view(), w), 25.0);
/// let g = Graph::new();
/// let (value, grads) = params.value_and_grad(&g, |p| norm2(p, w)).unwrap();
/// assert_eq!((value, &grads[w]), (25.0, &[6.0, 8.0][..]));
/// ```
#[derive(Debug)]
pub struct View<'a, T> {
    layout: &'a Layout,
    values: &'a [T],
}

impl<T> Clone for View<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for View<'_, T> {}

impl<'a, T: Copy> View<'a, T> {
    /// The tensor's entries, row-major (as `view[p]`, with the view's lifetime).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// let w = params.add("w", &[2], vec![1.0, 2.0]);
    /// assert_eq!(params.view().get(w), &[1.0, 2.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `p` belongs to another store.
    #[track_caller]
    pub fn get(&self, p: Param) -> &'a [T] {
        &self.values[self.layout.range(p)]
    }

    /// The tensor as a row-major matrix; a vector of length `n` is one row of `n`.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// let w = params.add("w", &[2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    /// assert_eq!(params.view().matrix(w).row(1), &[3.0, 4.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `p` belongs to another store, or has more than two dimensions.
    #[track_caller]
    pub fn matrix(&self, p: Param) -> Matrix<'a, T> {
        let data = self.get(p);
        match self.layout.tensors[p.index()].shape[..] {
            [] => Matrix::new(data, 1, 1),
            [n] => Matrix::new(data, 1, n),
            [rows, cols] => Matrix::new(data, rows, cols),
            ref shape => panic!(
                "View::matrix: tensor {:?} has shape {shape:?}, not one or two dimensions",
                self.layout.tensors[p.index()].name
            ),
        }
    }

    /// Every value, flat, in store order.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// params.add("a", &[1], vec![1.0]);
    /// params.add("b", &[1], vec![2.0]);
    /// assert_eq!(params.view().as_slice(), &[1.0, 2.0]);
    /// ```
    pub fn as_slice(&self) -> &'a [T] {
        self.values
    }
}

impl<T: Copy> Index<Param> for View<'_, T> {
    type Output = [T];

    /// The tensor's entries, row-major.
    ///
    /// # Panics
    ///
    /// If `p` belongs to another store.
    #[track_caller]
    fn index(&self, p: Param) -> &[T] {
        self.get(p)
    }
}

/// A store's values bound to a graph once for many steps ([`Params::binding`]): the
/// input nodes stay on the graph between steps, and each step writes the store's current
/// values into them ([`Inputs::set_values`](crate::Inputs::set_values)) if the store
/// changed, records the loss, reads the gradients as one range and releases everything
/// recorded after the inputs.
///
/// # Examples
///
/// ```
/// use tapegrad::{nn::Params, Graph};
/// let mut params = Params::new();
/// let w = params.add("w", &[2], vec![1.0, 2.0]);
/// let g = Graph::new();
/// let mut binding = params.binding(&g);
/// let (loss, grads) = binding.value_and_grad(&params, |p| p[w][0] * p[w][1]).unwrap();
/// assert_eq!((loss, &grads[w]), (2.0, &[2.0, 1.0][..]));
/// // Another store is refused.
/// let other = params.clone();
/// assert!(binding.value_and_grad(&other, |p| p[w][0]).is_err());
/// ```
pub struct Binding<'g> {
    graph: &'g Graph,
    layout: Arc<Layout>,
    instance: u64,
    /// The store's version whose values the inputs hold.
    version: u64,
    inputs: Inputs<'g>,
    /// Just after the inputs: each step releases back to it.
    step: Mark,
}

impl fmt::Debug for Binding<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binding")
            .field("graph", &self.graph.id())
            .field("params", &self.inputs.len())
            .finish()
    }
}

impl<'g> Binding<'g> {
    /// One step's loss and gradients at `params`' current values, as
    /// [`Params::value_and_grad`] gives them, on the bound inputs; the step's nodes are
    /// released before it returns (the inputs stay).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, Graph};
    /// let mut params = Params::new();
    /// let w = params.add("w", &[1], vec![2.0]);
    /// let g = Graph::new();
    /// let mut binding = params.binding(&g);
    /// let (loss, grads) = binding.value_and_grad(&params, |p| p[w][0].exp()).unwrap();
    /// assert_eq!((loss, grads[w][0]), (2f64.exp(), 2f64.exp()));
    /// params[w][0] = 0.0; // the next step sees the new value
    /// let (loss, _) = binding.value_and_grad(&params, |p| p[w][0].exp()).unwrap();
    /// assert_eq!(loss, 1.0);
    /// ```
    ///
    /// # Errors
    ///
    /// [`ParamError::ForeignStore`] if `params` is not the store the binding was made for
    /// (or its tensors changed since); [`ParamError::Engine`] if the loss is a released
    /// `Var` or one of another graph, the backward fails (anomaly mode), or the inputs
    /// were released by the caller.
    ///
    /// # Panics
    ///
    /// Where `f` panics; if the graph is full.
    #[track_caller]
    pub fn value_and_grad(
        &mut self,
        params: &Params,
        f: impl FnOnce(&View<'_, Var<'g>>) -> Var<'g>,
    ) -> Result<(f64, Grads), ParamError> {
        if params.instance != self.instance || !Arc::ptr_eq(&params.layout, &self.layout) {
            return Err(ParamError::ForeignStore);
        }
        // Whatever the last step (or the caller) left after the inputs goes first.
        self.graph.try_release(self.step)?;
        if params.version != self.version {
            self.inputs.set_values(&params.values)?;
            self.version = params.version;
        } else if let Some(last) = self.inputs.last() {
            // The inputs were recorded together and a release frees everything after its
            // mark, so if the last is still there, all are.
            last.try_value()?;
        }
        let view = View {
            layout: &self.layout,
            values: &self.inputs,
        };
        let loss = f(&view);
        let result = self
            .gradients(loss)
            .map(|(value, values)| (value, params.grads_from(values)));
        self.graph.try_release(self.step)?;
        result
    }

    /// The loss's value and the gradients with respect to the inputs.
    fn gradients(&self, loss: Var<'g>) -> Result<(f64, Vec<f64>), ParamError> {
        check_loss_graph(loss, self.graph)?;
        let value = loss.try_value()?;
        let gradients = loss.try_backward()?;
        Ok((value, read_all(&gradients, &self.inputs)?))
    }
}

/// A store bound to a graph for one step ([`Params::bind`]): every value is an input
/// `Var`, recorded after a mark. [`Bound::gradients`] runs backward and releases the mark;
/// dropping it unused releases too. It borrows the store, so the store cannot change while
/// `Var`s computed from it exist.
///
/// # Examples
///
/// ```
/// use tapegrad::{nn::Params, Graph};
/// let mut params = Params::new();
/// let w = params.add("w", &[1], vec![2.0]);
/// let g = Graph::new();
/// {
///     let bound = params.bind(&g);
///     let _unused = bound.view()[w][0].exp();
/// } // dropped: released
/// assert!(g.is_empty());
/// ```
///
/// The store cannot be stepped or edited while it is bound (so never between a forward
/// pass and its backward):
///
/// ```compile_fail,E0502
/// use tapegrad::{nn::Params, Graph};
/// let mut params = Params::new();
/// let w = params.add("w", &[1], vec![2.0]);
/// let g = Graph::new();
/// let bound = params.bind(&g);
/// let loss = bound.view()[w][0] * 3.0;
/// params[w][0] = 0.0; // error: `params` is borrowed by `bound`
/// let grads = bound.gradients(loss);
/// ```
pub struct Bound<'p, 'g> {
    params: &'p Params,
    graph: &'g Graph,
    mark: Mark,
    vars: Inputs<'g>,
}

impl fmt::Debug for Bound<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bound")
            .field("graph", &self.graph.id())
            .field("params", &self.vars.len())
            .finish()
    }
}

impl<'p, 'g> Bound<'p, 'g> {
    /// The store's values as bound `Var`s.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, Graph};
    /// let mut params = Params::new();
    /// let w = params.add("w", &[1], vec![2.0]);
    /// let g = Graph::new();
    /// let bound = params.bind(&g);
    /// assert_eq!(bound.view()[w][0].value(), 2.0);
    /// ```
    pub fn view(&self) -> View<'_, Var<'g>> {
        View {
            layout: &self.params.layout,
            values: &self.vars,
        }
    }

    /// The gradients of `output` with respect to every parameter, then the release of
    /// everything recorded since [`Params::bind`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, Graph};
    /// let mut params = Params::new();
    /// let w = params.add("w", &[1], vec![2.0]);
    /// let g = Graph::new();
    /// let bound = params.bind(&g);
    /// let y = bound.view()[w][0].powi(3);
    /// assert_eq!(bound.gradients(y).unwrap()[w][0], 12.0);
    /// assert!(y.try_value().is_err()); // released
    /// ```
    ///
    /// # Errors
    ///
    /// [`ParamError::Engine`] if `output` is released or of another graph, or the backward
    /// fails in anomaly mode. The step is released in every case.
    pub fn gradients(self, output: Var<'g>) -> Result<Grads, ParamError> {
        check_loss_graph(output, self.graph)?;
        let gradients = output.try_backward()?;
        let values = read_all(&gradients, &self.vars)?;
        Ok(self.params.grads_from(values))
        // `self` drops here and releases the step.
    }
}

/// `Ok` if `loss` was recorded on `graph` (the graph its parameters are bound to).
fn check_loss_graph(loss: Var<'_>, graph: &Graph) -> Result<(), ParamError> {
    if loss.graph().id() == graph.id() {
        return Ok(());
    }
    Err(ParamError::Engine(Error::ForeignHandle {
        what: "Var (the loss)",
        owner: loss.graph().id(),
        used_with: graph.id(),
    }))
}

/// Every `x`'s gradient; the handles are this step's, so reading cannot fail but on a
/// handle released by the user's code (a release to an earlier mark inside the step).
///
/// Checking the last handle is enough: the handles were bound together, at consecutive
/// positions after the step's mark, and a release frees every position from its mark on, so
/// one that reaches any of them reaches the last (a reused slot has a new version).
fn read_all(gradients: &Gradients, vars: &[Var<'_>]) -> Result<Vec<f64>, ParamError> {
    if let Some(bad) = vars.last().and_then(|&x| x.try_value().err()) {
        return Err(bad.into());
    }
    Ok(gradients.wrt_all(vars))
}

impl Drop for Bound<'_, '_> {
    fn drop(&mut self) {
        // Fails only if the user released to an earlier mark already: nothing is left then.
        let _ = self.graph.try_release(self.mark);
    }
}

/// One step's gradients with respect to every parameter of a store, in store order, tied
/// to the store and to its values when they were computed: an optimizer refuses them once
/// the store has changed. Index with a [`Param`].
///
/// # Examples
///
/// ```
/// use tapegrad::{nn::Params, Graph};
/// let mut params = Params::new();
/// let (a, b) = (params.add("a", &[1], vec![2.0]), params.add("b", &[1], vec![5.0]));
/// let g = Graph::new();
/// let (_, grads) = params.value_and_grad(&g, |p| p[a][0] * p[b][0]).unwrap();
/// assert_eq!((grads[a][0], grads[b][0]), (5.0, 2.0));
/// assert_eq!(grads.as_slice(), &[5.0, 2.0]);
/// ```
#[derive(Clone, Debug)]
pub struct Grads {
    layout: Arc<Layout>,
    instance: u64,
    version: u64,
    values: Vec<f64>,
}

impl Grads {
    /// All gradients, flat, in store order.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// params.zeros("w", &[2]);
    /// assert_eq!(params.zero_grads().as_slice(), &[0.0, 0.0]);
    /// ```
    pub fn as_slice(&self) -> &[f64] {
        &self.values
    }

    /// All gradients, flat, to change (e.g. to scale or mask them before a step).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// params.zeros("w", &[2]);
    /// let mut grads = params.grads_from(vec![1.0, 2.0]);
    /// grads.as_mut_slice()[1] = 0.0;
    /// assert_eq!(grads.as_slice(), &[1.0, 0.0]);
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [f64] {
        &mut self.values
    }

    /// The global L2 norm, `sqrt(sum g^2)` over every parameter.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// params.zeros("w", &[2]);
    /// assert_eq!(params.grads_from(vec![3.0, 4.0]).norm(), 5.0);
    /// ```
    pub fn norm(&self) -> f64 {
        self.values.iter().map(|g| g * g).sum::<f64>().sqrt()
    }

    /// Gradient clipping by global norm, as PyTorch's `clip_grad_norm_`: if the norm
    /// exceeds `max_norm`, every gradient is scaled by `max_norm / (norm + 1e-6)`.
    /// Returns the norm before clipping.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// params.zeros("w", &[2]);
    /// let mut grads = params.grads_from(vec![3.0, 4.0]);
    /// assert_eq!(grads.clip_norm(1.0), 5.0);
    /// approx::assert_relative_eq!(grads.norm(), 5.0 / (5.0 + 1e-6), max_relative = 1e-15);
    /// ```
    ///
    /// # Panics
    ///
    /// If `max_norm` is negative or NaN.
    #[track_caller]
    pub fn clip_norm(&mut self, max_norm: f64) -> f64 {
        assert!(
            max_norm >= 0.0,
            "Grads::clip_norm: max_norm must be >= 0, got {max_norm}"
        );
        let norm = self.norm();
        // PyTorch: clip_coef = max_norm / (total_norm + 1e-6), applied when < 1.
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for g in &mut self.values {
                *g *= coef;
            }
        }
        norm
    }

    /// Adds `other` entry by entry (e.g. to accumulate over micro-batches; scale the sum
    /// with [`Grads::scale`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// params.zeros("w", &[2]);
    /// let mut total = params.zero_grads();
    /// total.add_assign(&params.grads_from(vec![1.0, 2.0])).unwrap();
    /// total.add_assign(&params.grads_from(vec![3.0, 4.0])).unwrap();
    /// total.scale(0.5);
    /// assert_eq!(total.as_slice(), &[2.0, 3.0]);
    /// ```
    ///
    /// # Errors
    ///
    /// [`ParamError::ForeignGradients`] or [`ParamError::StaleGradients`] unless both were
    /// computed for the same store at the same values; nothing is added then.
    pub fn add_assign(&mut self, other: &Grads) -> Result<(), ParamError> {
        if other.instance != self.instance {
            return Err(ParamError::ForeignGradients);
        }
        if other.version != self.version {
            return Err(ParamError::StaleGradients);
        }
        for (g, o) in self.values.iter_mut().zip(&other.values) {
            *g += o;
        }
        Ok(())
    }

    /// Multiplies every gradient by `factor`.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// params.zeros("w", &[1]);
    /// let mut grads = params.grads_from(vec![3.0]);
    /// grads.scale(2.0);
    /// assert_eq!(grads.as_slice(), &[6.0]);
    /// ```
    pub fn scale(&mut self, factor: f64) {
        for g in &mut self.values {
            *g *= factor;
        }
    }
}

impl Index<Param> for Grads {
    type Output = [f64];

    /// The gradients of the tensor's entries, row-major.
    ///
    /// # Panics
    ///
    /// If `p` belongs to another store.
    #[track_caller]
    fn index(&self, p: Param) -> &[f64] {
        &self.values[self.layout.range(p)]
    }
}
