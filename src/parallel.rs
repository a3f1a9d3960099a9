//! Data parallelism: the mean gradient of a loss over a batch of items, one graph per worker
//! thread, reduced in a fixed order so the bits do not depend on the number of threads.
//! Built on the engine and `nn`; neither may use it.
//!
//! What PyTorch calls data parallelism, for one machine's cores: every worker records and
//! differentiates whole items (documents, examples) on its own [`Graph`], and the item
//! gradients are summed in item order, `((g_0 + g_1) + g_2) + ...`, then divided by the
//! batch size. Each item's gradient is computed the same way whichever thread computes it,
//! so 1, 2 or 16 threads give identical bits.

use crate::nn::{Grads, ParamError, Params, View};
use crate::{Gradients, Graph, Mark, Var};

/// A pool of per-thread graphs for [`DataParallel::mean_gradient`]; the graphs (and their
/// memory) are kept from one call to the next.
///
/// # Examples
///
/// ```
/// use tapegrad::parallel::DataParallel;
///
/// // Mean over items x of (w * x - 1)^2 at w = 2: items 1, 2, 3.
/// let mut dp = DataParallel::new(2);
/// let mut grad = Vec::new();
/// let loss = dp.mean_gradient(&[2.0], &[1.0, 2.0, 3.0], &mut grad, |w, &x| {
///     let r = w[0] * x - 1.0;
///     r * r
/// });
/// assert_eq!(loss, (1.0 + 9.0 + 25.0) / 3.0);
/// // d/dw = mean of 2 (w x - 1) x = (2 + 12 + 30) / 3
/// assert_eq!(grad, vec![(2.0 + 12.0 + 30.0) / 3.0]);
/// ```
pub struct DataParallel {
    workers: Vec<Worker>,
    /// One gradient per item of the last batch, in item order.
    item_grads: Vec<Vec<f64>>,
    item_losses: Vec<f64>,
}

/// One thread's graph, the mark of its empty state, and its gradient store.
struct Worker {
    graph: Graph,
    empty: Mark,
    grads: Gradients,
}

impl Worker {
    fn new() -> Self {
        let graph = Graph::new();
        let empty = graph.mark();
        Worker {
            graph,
            empty,
            grads: Gradients::new(),
        }
    }

    /// The loss of each item and its gradient with respect to `params`, written into
    /// `losses` and `grads` (one entry per item).
    fn run<I, F>(
        &mut self,
        params: &[f64],
        items: &[I],
        losses: &mut [f64],
        grads: &mut [Vec<f64>],
        loss: &F,
    ) where
        F: for<'g> Fn(&[Var<'g>], &I) -> Var<'g>,
    {
        for ((item, out_loss), out_grad) in items.iter().zip(losses).zip(grads) {
            let g = &self.graph;
            let vars = g.vars(params);
            let l = loss(&vars, item);
            *out_loss = l.value();
            l.backward_into(&mut self.grads);
            out_grad.clear();
            out_grad.extend(self.grads.wrt_all(&vars));
            drop(vars);
            g.release(self.empty);
        }
    }
}

impl DataParallel {
    /// A pool of `threads` workers (the calling thread is one of them).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tapegrad::parallel::DataParallel::new(4).threads(), 4);
    /// ```
    ///
    /// # Panics
    ///
    /// If `threads` is 0.
    pub fn new(threads: usize) -> Self {
        assert!(threads > 0, "DataParallel needs at least one thread");
        DataParallel {
            workers: (0..threads).map(|_| Worker::new()).collect(),
            item_grads: Vec::new(),
            item_losses: Vec::new(),
        }
    }

    /// The number of worker threads.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tapegrad::parallel::DataParallel::new(1).threads(), 1);
    /// ```
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// The mean of `loss` over `items` and, into `grad`, its gradient with respect to
    /// `params`. `loss` gets the parameters bound as inputs of a worker's graph (in the
    /// order of `params`) and one item, and returns that item's loss on the same graph.
    ///
    /// Items are split into contiguous runs, one per thread; the item gradients are then
    /// summed in item order and divided by the number of items, so the result is the same
    /// bits for any number of threads (and, for one item, that item's own gradient).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::parallel::DataParallel;
    /// fn f<'g>(w: &[tapegrad::Var<'g>], x: &f64) -> tapegrad::Var<'g> {
    ///     (w[0] * *x).exp()
    /// }
    /// let items: Vec<f64> = (0..10).map(|i| i as f64 / 10.0).collect();
    /// let (mut g1, mut g3) = (Vec::new(), Vec::new());
    /// let l1 = DataParallel::new(1).mean_gradient(&[0.5], &items, &mut g1, f);
    /// let l3 = DataParallel::new(3).mean_gradient(&[0.5], &items, &mut g3, f);
    /// assert_eq!((l1.to_bits(), g1[0].to_bits()), (l3.to_bits(), g3[0].to_bits()));
    /// ```
    ///
    /// # Panics
    ///
    /// If `items` is empty; if `loss` panics on a worker, that panic is raised here.
    pub fn mean_gradient<I, F>(
        &mut self,
        params: &[f64],
        items: &[I],
        grad: &mut Vec<f64>,
        loss: F,
    ) -> f64
    where
        I: Sync,
        F: for<'g> Fn(&[Var<'g>], &I) -> Var<'g> + Sync,
    {
        assert!(!items.is_empty(), "mean_gradient of an empty batch");
        let n = items.len();
        self.item_losses.resize(n, 0.0);
        self.item_grads.resize_with(n, Vec::new);
        let per_thread = n.div_ceil(self.workers.len());
        let losses = self.item_losses.chunks_mut(per_thread);
        let grads = self.item_grads[..n].chunks_mut(per_thread);
        let mut jobs = self
            .workers
            .iter_mut()
            .zip(items.chunks(per_thread).zip(losses.zip(grads)));
        let loss = &loss;
        // The first run on this thread, the others on scoped threads.
        let first = jobs.next();
        std::thread::scope(|scope| {
            for (worker, (items, (losses, grads))) in jobs {
                scope.spawn(move || worker.run(params, items, losses, grads, loss));
            }
            if let Some((worker, (items, (losses, grads)))) = first {
                worker.run(params, items, losses, grads, loss);
            }
        });
        // The fixed-order reduction.
        let scale = n as f64;
        grad.clear();
        grad.extend_from_slice(&self.item_grads[0]);
        for g in &self.item_grads[1..n] {
            grad.iter_mut().zip(g).for_each(|(sum, x)| *sum += x);
        }
        grad.iter_mut().for_each(|x| *x /= scale);
        self.item_losses[..n].iter().sum::<f64>() / scale
    }

    /// [`DataParallel::mean_gradient`] for a model whose parameters live in an
    /// [`nn::Params`](Params) store: each worker binds the store to its own graph for each
    /// item ([`Params::value_and_grad`]), and the item gradients are summed in item order
    /// and divided by the number of items, the same bits for any number of threads.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::{nn::Params, parallel::DataParallel};
    ///
    /// let mut params = Params::new();
    /// let w = params.add("w", &[1], vec![2.0]);
    /// let items = [1.0, 2.0, 3.0];
    /// let (loss, grads) = DataParallel::new(2)
    ///     .mean_grads(&params, &items, |p, &x| {
    ///         let r = p[w][0] * x - 1.0;
    ///         r * r
    ///     })
    ///     .unwrap();
    /// assert_eq!(loss, 35.0 / 3.0);
    /// assert_eq!(grads[w][0], 44.0 / 3.0);
    /// ```
    ///
    /// # Errors
    ///
    /// The first item's error from [`Params::value_and_grad`], in item order.
    ///
    /// # Panics
    ///
    /// If `items` is empty; if `loss` panics on a worker, that panic is raised here.
    pub fn mean_grads<I, F>(
        &mut self,
        params: &Params,
        items: &[I],
        loss: F,
    ) -> Result<(f64, Grads), ParamError>
    where
        I: Sync,
        F: for<'g> Fn(&View<'_, Var<'g>>, &I) -> Var<'g> + Sync,
    {
        assert!(!items.is_empty(), "mean_grads of an empty batch");
        let per_thread = items.len().div_ceil(self.workers.len());
        let loss = &loss;
        let run = |worker: &mut Worker, items: &[I]| -> Vec<Result<(f64, Grads), ParamError>> {
            items
                .iter()
                .map(|item| params.value_and_grad(&worker.graph, |p| loss(p, item)))
                .collect()
        };
        let mut jobs = self.workers.iter_mut().zip(items.chunks(per_thread));
        let first = jobs.next();
        let results: Vec<Result<(f64, Grads), ParamError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .map(|(worker, items)| scope.spawn(move || run(worker, items)))
                .collect();
            let mut results = first.map_or_else(Vec::new, |(worker, items)| run(worker, items));
            for h in handles {
                match h.join() {
                    Ok(r) => results.extend(r),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            results
        });
        // The fixed-order reduction.
        let scale = items.len() as f64;
        let mut results = results.into_iter();
        let (mut total, mut sum) = results.next().expect("at least one item")?;
        for r in results {
            let (l, g) = r?;
            total += l;
            sum.add_assign(&g)?;
        }
        sum.as_mut_slice().iter_mut().for_each(|x| *x /= scale);
        Ok((total / scale, sum))
    }
}
