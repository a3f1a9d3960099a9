//! [`Params`]: named, shaped parameter tensors owned as plain `f64`, handed out as [`Param`]
//! ids; [`View`] reads them as `f64` or as bound `Var`s; [`ParamGrads`] holds one step's
//! gradients; [`Binding`] keeps a store bound to a graph for a whole run. Built on the
//! engine's public API and `linalg`; may not use the modules (`layers.rs`).

use std::fmt;
use std::ops::{Index, IndexMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::engine::Error;
use crate::engine::Gradients;
use crate::engine::Var;
use crate::engine::{Graph, Inputs, Mark};
use crate::linalg::Matrix;
use crate::nn::error::ParamError;

/// Store ids (layouts and instances) start at 1 and are unique in the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Every live store's layout, so that a [`Param`] used with the wrong store can be named:
/// a `Param` holds only its layout's id and its index. The references are weak, so the
/// registry keeps no store alive; dead ones are dropped whenever a layout is registered.
static LAYOUTS: Mutex<Vec<Weak<Layout>>> = Mutex::new(Vec::new());

/// Adds `layout` to [`LAYOUTS`] (after every change: a changed layout is a new allocation).
fn register(layout: &Arc<Layout>) {
    let mut all = LAYOUTS.lock().unwrap_or_else(PoisonError::into_inner);
    all.retain(|w| w.strong_count() > 0);
    all.push(Arc::downgrade(layout));
}

/// `tensor "fc.weight" (#0 of a store of 2 tensors: "fc.weight", "fc.bias")`, or as much
/// of it as is still known.
fn describe_param(p: Param) -> String {
    let all = LAYOUTS.lock().unwrap_or_else(PoisonError::into_inner);
    let owner = all
        .iter()
        .filter_map(Weak::upgrade)
        .find(|l| l.id == p.layout && p.index() < l.tensors.len());
    match owner {
        Some(l) => format!(
            "tensor {:?} (#{} of a store of {})",
            l.tensors[p.index()].name,
            p.index,
            l.summary()
        ),
        None => format!("tensor #{} of a store that no longer exists", p.index),
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
    /// The range of `p`'s values.
    ///
    /// # Panics
    ///
    /// If `p` is not one of this layout's tensors, naming it and both stores.
    #[track_caller]
    fn range(&self, p: Param, store: u64) -> std::ops::Range<usize> {
        match self.tensors.get(p.index()) {
            Some(t) if p.layout == self.id => t.start..t.start + t.len,
            _ => panic!(
                "tapegrad::nn: {} was used with store #{store} ({}); a Param indexes only \
                 the store that made it and that store's clones",
                describe_param(p),
                self.summary()
            ),
        }
    }

    /// `2 tensors: "fc.weight", "fc.bias"` (the first three names).
    fn summary(&self) -> String {
        let n = self.tensors.len();
        let names: Vec<String> = (self.tensors.iter().take(3))
            .map(|t| format!("{:?}", t.name))
            .collect();
        let more = if n > 3 { ", ..." } else { "" };
        match n {
            0 => "no tensors".to_owned(),
            1 => format!("1 tensor: {}", names[0]),
            _ => format!("{n} tensors: {}{more}", names.join(", ")),
        }
    }
}

/// Which store a binding, an optimizer or gradients belong to: the store's instance (its
/// clones have others) and its layout as it was (a store that gains tensors gets a new
/// layout, copy on write).
#[derive(Clone, Debug)]
pub(crate) struct StoreId {
    instance: u64,
    layout: Arc<Layout>,
}

impl StoreId {
    /// `store #3 (2 tensors: "fc.weight", "fc.bias")`.
    fn describe(&self) -> String {
        format!("store #{} ({})", self.instance, self.layout.summary())
    }

    /// `Ok` if `params` is this store with the same tensors; else
    /// [`ParamError::ForeignStore`] naming `what` and both stores.
    pub(crate) fn check(&self, params: &Params, what: &'static str) -> Result<(), ParamError> {
        if params.instance == self.instance && Arc::ptr_eq(&params.layout, &self.layout) {
            return Ok(());
        }
        Err(ParamError::ForeignStore {
            what,
            made_for: self.describe(),
            given: params.id().describe(),
        })
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
/// Each step binds it to a [`Graph`] ([`Params::value_and_grad`], or a [`Binding`] kept for
/// the run) and gets [`ParamGrads`] back; an optimizer then updates it. The store counts its
/// changes, so gradients computed before a change are refused
/// ([`ParamError::StaleGradients`]) rather than applied to values they were not computed
/// at. A clone is a store of its own: the same [`Param`]s index it, but gradients, bindings
/// and optimizers of one are refused by the other.
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
        let id = layout.id;
        register(&self.layout);
        self.values.extend(values);
        self.version += 1;
        Param { layout: id, index }
    }

    /// Adds a tensor whose entries are drawn one by one, row-major, from `init` (e.g.
    /// `&mut || rng.uniform(-1.0, 1.0)` with a [`PyRandom`](crate::pyrandom::PyRandom)).
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
        self.layout.range(p, self.instance);
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
        self.layout.range(p, self.instance);
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
            store: self.instance,
            values: &self.values,
        }
    }

    /// One step's forward and backward: binds every value to `graph` as a differentiable
    /// input (in one bulk call, after a mark), runs `f` on the bound view to record the
    /// loss, and returns the loss's value and its gradients with respect to every
    /// parameter. Everything the step recorded (parameters included) is released before
    /// it returns, even if `f` panics, so `graph` is left as it was and the store can be
    /// stepped at once. This is the training step; a [`Binding`] is the same step made
    /// faster for a whole run.
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
    /// assert!(g.is_empty());
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
    ) -> Result<(f64, ParamGrads), ParamError> {
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
    ) -> Result<(f64, A, ParamGrads), ParamError> {
        let step = StepInputs {
            graph,
            mark: graph.mark(),
            inputs: graph.inputs(&self.values),
        };
        let view = View {
            layout: &self.layout,
            store: self.instance,
            values: &step.inputs,
        };
        let (loss, aux) = f(&view);
        let (value, gradients) = loss_and_gradients(loss, graph, &step.inputs)?;
        Ok((value, aux, self.grads_from(gradients)))
        // `step` drops here (or during a panic) and releases everything after its mark.
    }

    /// Binds the store's values to `graph` once for a whole training run, as inputs
    /// recorded together ([`Graph::inputs`]): a [`Binding`] whose
    /// [`value_and_grad`](Binding::value_and_grad) and
    /// [`value_and_grad_aux`](Binding::value_and_grad_aux) are this store's, with the same
    /// results bit for bit, but write the store's current values into the same input nodes
    /// instead of binding them again every step. The graph is then the binding's
    /// workspace: anything recorded on it after the binding is released by the next step.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, Graph};
    /// let mut params = Params::new();
    /// let w = params.add("w", &[1], vec![3.0]);
    /// let g = Graph::new();
    /// let mut binding = params.bind(&g);
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
    pub fn bind<'g>(&self, graph: &'g Graph) -> Binding<'g> {
        let inputs = graph.inputs(&self.values);
        Binding {
            store: self.id(),
            version: self.version,
            step: graph.mark(),
            graph,
            inputs,
        }
    }

    /// Gradients of zero for every parameter, valid for the store as it is now (e.g. to
    /// accumulate into with [`ParamGrads::add_assign`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// params.zeros("w", &[3]);
    /// assert_eq!(params.zero_grads().as_slice(), &[0.0; 3]);
    /// ```
    pub fn zero_grads(&self) -> ParamGrads {
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
    pub fn grads_from(&self, values: Vec<f64>) -> ParamGrads {
        assert_eq!(
            values.len(),
            self.len(),
            "Params::grads_from: the store has {} parameters, got {} gradients",
            self.len(),
            values.len()
        );
        ParamGrads {
            store: self.id(),
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
    /// // A clone is a store of its own.
    /// let err = params.clone().check_grads(&params.zero_grads()).unwrap_err();
    /// assert!(matches!(err, ParamError::ForeignGradients { .. }));
    /// ```
    ///
    /// # Errors
    ///
    /// [`ParamError::ForeignGradients`] for gradients of another store (a clone
    /// included), naming both; [`ParamError::StaleGradients`] if the store changed since.
    pub fn check_grads(&self, grads: &ParamGrads) -> Result<(), ParamError> {
        if grads.store.instance != self.instance {
            return Err(ParamError::ForeignGradients {
                computed_for: grads.store.describe(),
                applied_to: self.id().describe(),
            });
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
        grads: &ParamGrads,
        update: impl FnOnce(&mut [f64], &[f64]),
    ) -> Result<(), ParamError> {
        self.check_grads(grads)?;
        self.version += 1;
        update(&mut self.values, &grads.values);
        Ok(())
    }

    /// This store's identity, for what is made for it (gradients, bindings, optimizers).
    pub(crate) fn id(&self) -> StoreId {
        StoreId {
            instance: self.instance,
            layout: Arc::clone(&self.layout),
        }
    }

    /// The range of `p`'s values in the flat vector.
    #[track_caller]
    pub(crate) fn range(&self, p: Param) -> std::ops::Range<usize> {
        self.layout.range(p, self.instance)
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
        &self.values[self.layout.range(p, self.instance)]
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
        let range = self.layout.range(p, self.instance);
        &mut self.values[range]
    }
}

/// A store's values as `T`: `f64` ([`Params::view`], plain evaluation) or `Var` (the view
/// that [`Params::value_and_grad`] and a [`Binding`] give their closure, recorded). Index it with a [`Param`] for the tensor's entries, or ask
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
    /// The store's instance, for errors.
    store: u64,
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
        &self.values[self.layout.range(p, self.store)]
    }

    /// The tensor's name (as [`Params::name`]; a module names itself in its errors by it).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// let w = params.zeros("fc.weight", &[2]);
    /// assert_eq!(params.view().name(w), "fc.weight");
    /// ```
    ///
    /// # Panics
    ///
    /// If `p` belongs to another store.
    #[track_caller]
    pub fn name(&self, p: Param) -> &'a str {
        self.layout.range(p, self.store);
        &self.layout.tensors[p.index()].name
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

/// A store's values bound to a graph once for a whole run ([`Params::bind`]): the
/// training step of [`Params::value_and_grad`] made faster, with the same method names
/// and the same results, bit for bit. The input nodes stay on the graph between steps;
/// each step writes the store's current values into them
/// ([`Inputs::set_values`](crate::Inputs::set_values)) if the store changed, records the
/// loss, reads the gradients as one range and releases everything recorded after the
/// inputs. On a model of thousands of parameters that saves binding them every step
/// (microgpt: about 4% of a step).
///
/// # Examples
///
/// ```
/// use tapegrad::nn::{Param, Params, View};
/// use tapegrad::{Graph, Var};
///
/// fn loss<'g>(p: &View<'_, Var<'g>>, w: Param) -> Var<'g> {
///     p[w][0] * p[w][1]
/// }
/// let mut params = Params::new();
/// let w = params.add("w", &[2], vec![1.0, 2.0]);
/// let (g, h) = (Graph::new(), Graph::new());
/// let mut binding = params.bind(&g);
/// // The same step as params.value_and_grad, to the bit.
/// let (value, grads) = binding.value_and_grad(&params, |p| loss(p, w)).unwrap();
/// let (again, regrads) = params.value_and_grad(&h, |p| loss(p, w)).unwrap();
/// assert_eq!((value, &grads[w]), (again, &regrads[w]));
/// assert_eq!((value, &grads[w]), (2.0, &[2.0, 1.0][..]));
/// // A binding serves the store it was made for; a clone is another store.
/// let other = params.clone();
/// assert!(binding.value_and_grad(&other, |p| p[w][0]).is_err());
/// ```
pub struct Binding<'g> {
    graph: &'g Graph,
    store: StoreId,
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
            .field("store", &self.store.instance)
            .field("params", &self.inputs.len())
            .finish()
    }
}

impl<'g> Binding<'g> {
    /// One step's loss and gradients at `params`' current values:
    /// [`Params::value_and_grad`] on the bound inputs, the same bits. The step's nodes
    /// are released before it returns (the inputs stay).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, Graph};
    /// let mut params = Params::new();
    /// let w = params.add("w", &[1], vec![2.0]);
    /// let g = Graph::new();
    /// let mut binding = params.bind(&g);
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
    /// (a clone included; or tensors were added to it since), naming both;
    /// [`ParamError::Engine`] if the loss is a released `Var` or one of another graph, the
    /// backward fails (anomaly mode), or the inputs were released by the caller.
    ///
    /// # Panics
    ///
    /// Where `f` panics; if the graph is full.
    #[track_caller]
    pub fn value_and_grad(
        &mut self,
        params: &Params,
        f: impl FnOnce(&View<'_, Var<'g>>) -> Var<'g>,
    ) -> Result<(f64, ParamGrads), ParamError> {
        let (value, (), grads) = self.value_and_grad_aux(params, |p| (f(p), ()))?;
        Ok((value, grads))
    }

    /// [`Params::value_and_grad_aux`] on the bound inputs: the loss, something else the
    /// closure returns beside it (JAX's `has_aux`), and the gradients, the same bits.
    /// `Var`s in the second value are released when this returns: read their values
    /// inside `f`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, Graph};
    /// let mut params = Params::new();
    /// let w = params.add("w", &[1], vec![3.0]);
    /// let g = Graph::new();
    /// let mut binding = params.bind(&g);
    /// let (loss, cube, grads) = binding
    ///     .value_and_grad_aux(&params, |p| {
    ///         let x = p[w][0];
    ///         (x * x, x.powi(3).value())
    ///     })
    ///     .unwrap();
    /// assert_eq!((loss, cube, grads[w][0]), (9.0, 27.0, 6.0));
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Binding::value_and_grad`].
    ///
    /// # Panics
    ///
    /// As [`Binding::value_and_grad`].
    #[track_caller]
    pub fn value_and_grad_aux<A>(
        &mut self,
        params: &Params,
        f: impl FnOnce(&View<'_, Var<'g>>) -> (Var<'g>, A),
    ) -> Result<(f64, A, ParamGrads), ParamError> {
        self.store.check(params, "binding")?;
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
        // Released on every exit, a panic in `f` included.
        let step = ReleaseTo {
            graph: self.graph,
            mark: self.step,
        };
        let view = View {
            layout: &self.store.layout,
            store: self.store.instance,
            values: &self.inputs,
        };
        let (loss, aux) = f(&view);
        let (value, gradients) = loss_and_gradients(loss, self.graph, &self.inputs)?;
        drop(step);
        Ok((value, aux, params.grads_from(gradients)))
    }
}

/// One step's parameters bound after a mark ([`Params::value_and_grad_aux`]); dropping it
/// releases them with everything recorded after them.
struct StepInputs<'g> {
    graph: &'g Graph,
    mark: Mark,
    inputs: Inputs<'g>,
}

impl Drop for StepInputs<'_> {
    fn drop(&mut self) {
        // Fails only if the user released to an earlier mark already: nothing is left then.
        let _ = self.graph.try_release(self.mark);
    }
}

/// Releases `graph` to `mark` when dropped (a [`Binding`]'s step).
struct ReleaseTo<'g> {
    graph: &'g Graph,
    mark: Mark,
}

impl Drop for ReleaseTo<'_> {
    fn drop(&mut self) {
        // Fails only if the user released to an earlier mark already: nothing is left then.
        let _ = self.graph.try_release(self.mark);
    }
}

/// The loss's value and its gradients with respect to `inputs`, the step's parameters.
fn loss_and_gradients(
    loss: Var<'_>,
    graph: &Graph,
    inputs: &[Var<'_>],
) -> Result<(f64, Vec<f64>), ParamError> {
    if loss.graph().id() != graph.id() {
        return Err(ParamError::Engine(Error::ForeignHandle {
            what: "Var (the loss)",
            owner: loss.graph().id(),
            used_with: graph.id(),
        }));
    }
    let value = loss.try_value()?;
    let gradients = loss.try_backward()?;
    Ok((value, read_all(&gradients, inputs)?))
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

/// One step's gradients with respect to every parameter of a store, in store order, tied
/// to the store and to its values when they were computed: an optimizer refuses them once
/// the store has changed. Index with a [`Param`].
///
/// Two gradient stores, by what they are keyed by: the engine's
/// [`Gradients`](crate::Gradients) holds a backward's gradients by [`Var`] (every node of
/// the graph); `ParamGrads` holds a training step's by [`Param`] (only the store's
/// tensors, as plain numbers that outlive the graph).
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
pub struct ParamGrads {
    store: StoreId,
    version: u64,
    values: Vec<f64>,
}

impl ParamGrads {
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
            "ParamGrads::clip_norm: max_norm must be >= 0, got {max_norm}"
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
    /// with [`ParamGrads::scale`]).
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
    pub fn add_assign(&mut self, other: &ParamGrads) -> Result<(), ParamError> {
        if other.store.instance != self.store.instance {
            return Err(ParamError::ForeignGradients {
                computed_for: other.store.describe(),
                applied_to: self.store.describe(),
            });
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

impl Index<Param> for ParamGrads {
    type Output = [f64];

    /// The gradients of the tensor's entries, row-major.
    ///
    /// # Panics
    ///
    /// If `p` belongs to another store.
    #[track_caller]
    fn index(&self, p: Param) -> &[f64] {
        &self.values[self.store.layout.range(p, self.store.instance)]
    }
}
