//! Data parallelism on one machine's cores: the mean loss and gradient of a batch of
//! examples, each example recorded on a worker's own [`Graph`], reduced in example order.
//! Built on [`nn::Params`](crate::nn::Params) and a `rayon` thread pool kept per thread
//! count; the engine knows nothing of it.
//!
//! A [`Graph`] is `Send` but not `Sync`, so each worker thread owns one (reused for all
//! the examples it takes; the calling thread is one of the workers and the pool holds the
//! others, whose threads outlive the call, so every graph's memory stays warm from one
//! batch to the next). Workers take examples one at a time from a shared counter, so
//! a slow example does not hold up a fixed share of the batch. Every example's loss and
//! gradient is kept by its index and the batch is reduced in example order, one example
//! after another, whatever thread computed it: the result is **bit-identical for any
//! number of threads**, and identical to a plain loop over the examples.
//!
//! What it costs: one gradient vector per example (`batch.len() * params.len()` floats
//! live at once at most), plus one graph per thread. This serves one machine's cores and
//! models whose gradient is a scalar tape; a model that outgrows that belongs in a tensor
//! framework (PyTorch's DistributedDataParallel, JAX's `pmap`/sharding), where batches are
//! matrices and devices are many.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::engine::{Error, Graph, Var};
use crate::nn::{ParamError, ParamGrads, Params, View};

/// A pool of `threads` worker threads, made once per thread count and kept: its threads
/// live across calls, so each keeps its graph's memory warm (a `Graph` made on a thread
/// reuses the tape of the last one dropped there), where threads spawned per call would
/// fault in fresh pages for every batch.
fn pool(threads: usize) -> Arc<rayon::ThreadPool> {
    static POOLS: Mutex<Vec<(usize, Arc<rayon::ThreadPool>)>> = Mutex::new(Vec::new());
    let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, pool)) = pools.iter().find(|(n, _)| *n == threads) {
        return Arc::clone(pool);
    }
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("tapegrad-parallel-{i}"))
            .build()
            .expect("the operating system refused to start worker threads"),
    );
    pools.push((threads, Arc::clone(&pool)));
    pool
}

/// One example's loss and gradient, or why it has none.
type ExampleResult = Result<(f64, ParamGrads), ParamError>;

/// The mean of `loss(params, example)` over `batch` and its gradient with respect to
/// every parameter, computed on `threads` worker threads (0: as many as the machine has
/// cores), each with a graph of its own.
///
/// The sums run in example order (`((l_0 + l_1) + l_2) + ...`, then divided by the batch
/// size, gradients likewise), so the result is the same bits for every thread count, and
/// the same as computing each example's [`Params::value_and_grad`] in a loop and
/// averaging in that order. The examples' losses are independent: the loss of one
/// example may not depend on another (batch statistics would need one graph).
///
/// Pass the loss as a closure written in the call (as below): Rust infers the
/// lifetime-generic signature it needs only there.
///
/// # Examples
///
/// ```
/// use tapegrad::{nn::Params, parallel::mean_value_and_grad};
///
/// // Least squares y = w x: loss (w x - y)^2, one example per (x, y).
/// let mut params = Params::new();
/// let w = params.add("w", &[1], vec![1.0]);
/// let batch = [(1.0, 2.0), (2.0, 4.0), (3.0, 6.0), (4.0, 8.0)];
/// let (mean, grads) =
///     mean_value_and_grad(&params, &batch, 2, |p, &(x, y)| (p[w][0] * x - y).powi(2)).unwrap();
/// // At w = 1: losses x^2 (1, 4, 9, 16), mean 7.5; d/dw = 2 (w x - y) x = -2 x^2, mean -15.
/// assert_eq!(mean, 7.5);
/// assert_eq!(grads[w][0], -15.0);
/// // The same bits on one thread.
/// let (mean1, grads1) =
///     mean_value_and_grad(&params, &batch, 1, |p, &(x, y)| (p[w][0] * x - y).powi(2)).unwrap();
/// assert_eq!((mean1.to_bits(), grads1.as_slice()), (mean.to_bits(), grads.as_slice()));
/// ```
///
/// # Errors
///
/// [`ParamError::Engine`] with [`Error::BadOperands`] for an empty batch; otherwise the
/// error of the first example (in example order) whose loss failed, as
/// [`Params::value_and_grad`] reports it.
///
/// # Panics
///
/// If `loss` panics on a worker (the panic is passed on), or if the operating system
/// refuses to start the worker threads (the first call with a given thread count starts
/// them).
pub fn mean_value_and_grad<E, F>(
    params: &Params,
    batch: &[E],
    threads: usize,
    loss: F,
) -> Result<(f64, ParamGrads), ParamError>
where
    E: Sync,
    F: for<'g> Fn(&View<'_, Var<'g>>, &E) -> Var<'g> + Sync,
{
    mean_value_and_grad_by_cost(params, batch, threads, |_| 0, loss)
}

/// [`mean_value_and_grad`] with the examples started longest first by `cost` (an estimate
/// of each example's work, e.g. its length): the threads then finish together, where
/// taking them in batch order can leave one thread idle while another works through a
/// long example at the end. Only the order of the work changes: the sums still run in
/// example order, so the result is the same bits as [`mean_value_and_grad`]'s, for every
/// thread count.
///
/// # Examples
///
/// ```
/// use tapegrad::nn::{Param, Params, View};
/// use tapegrad::{parallel, Scalar, Var};
///
/// // Documents of different lengths: loss = mean over the document of (w x - 1)^2.
/// fn loss<'g>(p: &View<'_, Var<'g>>, w: Param, doc: &[f64]) -> Var<'g> {
///     let terms: Vec<Var<'g>> = doc.iter().map(|&x| (p[w][0] * x - 1.0).powi(2)).collect();
///     Var::sum(&terms) / doc.len() as f64
/// }
/// let mut params = Params::new();
/// let w = params.add("w", &[1], vec![0.5]);
/// let docs: Vec<Vec<f64>> = vec![vec![1.0], vec![1.0, 2.0, 3.0, 4.0], vec![2.0, 2.0]];
/// let (m1, g1) =
///     parallel::mean_value_and_grad_by_cost(&params, &docs, 2, Vec::len, |p, d| loss(p, w, d))
///         .unwrap();
/// let (m2, g2) = parallel::mean_value_and_grad(&params, &docs, 1, |p, d| loss(p, w, d)).unwrap();
/// assert_eq!((m1.to_bits(), g1.as_slice()), (m2.to_bits(), g2.as_slice()));
/// ```
///
/// # Errors
///
/// As [`mean_value_and_grad`].
///
/// # Panics
///
/// As [`mean_value_and_grad`].
pub fn mean_value_and_grad_by_cost<E, C, F>(
    params: &Params,
    batch: &[E],
    threads: usize,
    cost: C,
    loss: F,
) -> Result<(f64, ParamGrads), ParamError>
where
    E: Sync,
    C: Fn(&E) -> usize,
    F: for<'g> Fn(&View<'_, Var<'g>>, &E) -> Var<'g> + Sync,
{
    if batch.is_empty() {
        return Err(ParamError::Engine(Error::BadOperands {
            op: "mean_value_and_grad",
            why: "the batch is empty: its mean loss has no value".into(),
        }));
    }
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(batch.len());

    // One slot per example, filled by whichever worker takes it.
    let results: Vec<Mutex<Option<ExampleResult>>> =
        batch.iter().map(|_| Mutex::new(None)).collect();
    // The order in which the examples are started: by decreasing cost, ties in batch
    // order (a stable sort), so that the last examples taken are the shortest.
    let mut order: Vec<usize> = (0..batch.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(cost(&batch[i])));
    let next = AtomicUsize::new(0);
    let work = || {
        let graph = Graph::new();
        while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            let example = &batch[i];
            let result = params.value_and_grad(&graph, |p| loss(p, example));
            *results[i].lock().expect("a worker panicked holding a slot") = Some(result);
        }
    };
    if threads == 1 {
        work();
    } else {
        // The calling thread is one of the workers: the pool holds the others, so only
        // they need waking (a wake-up costs tens of microseconds on a virtual machine).
        pool(threads - 1).in_place_scope(|s| {
            for _ in 1..threads {
                s.spawn(|_| work());
            }
            work();
        });
    }

    // The reduction, in example order: every parameter's sum starts at 0 and adds the
    // examples' gradients one after another, then is divided by the batch size. On the
    // calling thread: waking the pool again costs more than the pass (measured on the
    // 2-core virtual machine).
    let mut total_loss = 0.0;
    let mut total = params.zero_grads();
    for slot in results {
        let (loss, grads) = slot
            .into_inner()
            .expect("a worker panicked holding a slot")
            .expect("every example was taken by a worker")?;
        total_loss += loss;
        total.add_assign(&grads)?;
    }
    let n = batch.len() as f64;
    for sum in total.as_mut_slice() {
        *sum /= n;
    }
    Ok((total_loss / n, total))
}
