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
//! **Never slower than one thread (by more than 10%).** Worker threads pay off only while
//! they can run: on a machine whose other cores are busy (another process spinning, a
//! shared virtual machine), a worker that is descheduled while it holds an example makes
//! the whole batch wait for it, and two threads were measured up to 3x slower than one. So
//! each call measures itself: the batch's wall time against one thread's time for it (the
//! fastest thread's time per example, times the examples). While the workers do not beat
//! one thread by more than 10%, the next calls run on the calling thread alone, trying the
//! workers again after a back-off (50 ms, doubling to 2 s while they keep not paying off;
//! `Adaptive` in the source); once they pay off again, they are used at once. The bits
//! never depend on it.
//!
//! What it costs: one gradient vector per example (`batch.len() * params.len()` floats
//! live at once at most), plus one graph per thread. This serves one machine's cores and
//! models whose gradient is a scalar tape; a model that outgrows that belongs in a tensor
//! framework (PyTorch's DistributedDataParallel, JAX's `pmap`/sharding), where batches are
//! matrices and devices are many.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Whether worker threads have been paying off, for one thread count: the rule that keeps
/// [`mean_value_and_grad`] within 10% of one thread's time when the other cores are busy.
///
/// After each call on several threads, [`Adaptive::record`] compares its wall time with an
/// estimate of one thread's time for the same batch. With a speed-up of at least
/// [`Adaptive::PAYS_OFF`] (1.1x), the workers stay in use. Above it, the next calls run on
/// the calling thread alone until a back-off has passed, and then try the workers again
/// (a probe); the back-off doubles after each probe that does not pay off, from
/// [`Adaptive::FIRST_BACKOFF`] to [`Adaptive::LONGEST_BACKOFF`], and returns to the first
/// after one that does. While the cores stay busy, a probe costs one slow call per
/// back-off (a 6 ms microgpt step twice as slow, once per 2 s: 0.3%); once they are free
/// again, the workers are back within 2 s.
#[derive(Clone, Copy, Debug)]
struct Adaptive {
    /// `Some(t)`: one thread only, until `t`.
    serial_until: Option<Instant>,
    backoff: Duration,
}

impl Adaptive {
    /// The smallest speed-up over one thread at which the workers are kept: 1.1x, as the
    /// fraction `11 / 10`.
    const PAYS_OFF: (u128, u128) = (11, 10);
    /// The first back-off before trying the workers again.
    const FIRST_BACKOFF: Duration = Duration::from_millis(50);
    /// The longest back-off.
    const LONGEST_BACKOFF: Duration = Duration::from_secs(2);

    /// A rule that starts with the workers in use.
    fn new() -> Self {
        Adaptive {
            serial_until: None,
            backoff: Adaptive::FIRST_BACKOFF,
        }
    }

    /// Whether a call starting at `now` should use the worker threads.
    fn use_workers(&self, now: Instant) -> bool {
        self.serial_until.is_none_or(|until| now >= until)
    }

    /// Takes in a call on the workers that started at `now` and took `wall`, where one
    /// thread would have taken about `one_thread`.
    fn record(&mut self, now: Instant, wall: Duration, one_thread: Duration) {
        let (num, den) = Adaptive::PAYS_OFF;
        if wall.as_nanos() * num <= one_thread.as_nanos() * den {
            self.serial_until = None;
            self.backoff = Adaptive::FIRST_BACKOFF;
        } else {
            self.serial_until = Some(now + wall + self.backoff);
            self.backoff = (self.backoff * 2).min(Adaptive::LONGEST_BACKOFF);
        }
    }
}

/// The [`Adaptive`] rule of each thread count, shared by every caller.
fn rule(threads: usize) -> Arc<Mutex<Adaptive>> {
    static RULES: Mutex<Vec<(usize, Arc<Mutex<Adaptive>>)>> = Mutex::new(Vec::new());
    let mut rules = RULES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, rule)) = rules.iter().find(|(n, _)| *n == threads) {
        return Arc::clone(rule);
    }
    let rule = Arc::new(Mutex::new(Adaptive::new()));
    rules.push((threads, Arc::clone(&rule)));
    rule
}

/// One example's loss and gradient, or why it has none.
type ExampleResult = Result<(f64, ParamGrads), ParamError>;

/// The mean of `loss(params, example)` over `batch` and its gradient with respect to
/// every parameter, computed on up to `threads` worker threads (0: as many as the machine
/// has cores), each with a graph of its own: on the calling thread alone while the workers
/// do not pay off (busy cores, see the module docs).
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
    // Each thread's examples and the time it spent in them.
    let spent: Mutex<Vec<(usize, Duration)>> = Mutex::new(Vec::new());
    let work = || {
        let graph = Graph::new();
        let (mut done, mut time) = (0, Duration::ZERO);
        while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            let example = &batch[i];
            let start = Instant::now();
            let result = params.value_and_grad(&graph, |p| loss(p, example));
            time += start.elapsed();
            done += 1;
            *results[i].lock().expect("a worker panicked holding a slot") = Some(result);
        }
        if done > 0 {
            spent
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((done, time));
        }
    };
    let rule = (threads > 1).then(|| rule(threads));
    let start = Instant::now();
    let use_workers = rule.as_ref().is_some_and(|r| {
        r.lock()
            .unwrap_or_else(|e| e.into_inner())
            .use_workers(start)
    });
    if !use_workers {
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
        // One thread's time for the batch, from the fastest thread's time per example (a
        // descheduled worker's is inflated by the wait).
        let per_example = spent
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|&(done, time)| time / done as u32)
            .min()
            .unwrap_or_default();
        let one_thread = per_example * batch.len() as u32;
        if let Some(rule) = rule {
            rule.lock().unwrap_or_else(|e| e.into_inner()).record(
                start,
                start.elapsed(),
                one_thread,
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// The rule's transitions, on a clock of its own: workers while they pay off, one
    /// thread for a back-off that doubles while probes do not pay off, and the workers back
    /// at once after one that does.
    #[test]
    fn workers_are_used_while_they_pay_off_and_tried_again_after_a_back_off() {
        let mut rule = Adaptive::new();
        let t0 = Instant::now();
        assert!(rule.use_workers(t0));
        // Twice as fast as one thread: kept.
        rule.record(t0, 5 * MS, 10 * MS);
        assert!(rule.use_workers(t0 + 5 * MS));
        // Only 1.05x faster (a busy core): one thread for 50 ms after the call's end.
        rule.record(t0, 10 * MS, 10 * MS + MS / 2);
        assert!(!rule.use_workers(t0 + 10 * MS));
        assert!(!rule.use_workers(t0 + 59 * MS));
        let probe = t0 + 60 * MS;
        assert!(rule.use_workers(probe));
        // The probe is slower than one thread: the back-off doubles, to 100 ms.
        rule.record(probe, 20 * MS, 10 * MS);
        assert!(!rule.use_workers(probe + 119 * MS));
        let probe = probe + 120 * MS;
        assert!(rule.use_workers(probe));
        rule.record(probe, 20 * MS, 10 * MS); // 200 ms
        rule.record(probe, 20 * MS, 10 * MS); // 400 ms
        for _ in 0..10 {
            rule.record(probe, 20 * MS, 10 * MS);
        }
        // At most 2 s.
        assert!(!rule.use_workers(probe + 2019 * MS));
        assert!(rule.use_workers(probe + 2020 * MS));
        // A probe that pays off: the workers at once, and the back-off starts again at 50 ms.
        rule.record(probe, 4 * MS, 10 * MS);
        assert!(rule.use_workers(probe + 4 * MS));
        rule.record(probe, 10 * MS, 10 * MS);
        assert!(!rule.use_workers(probe + 59 * MS));
        assert!(rule.use_workers(probe + 60 * MS));
    }

    /// Exactly at 1.1x the workers stay.
    #[test]
    fn a_speed_up_of_one_point_one_keeps_the_workers() {
        let mut rule = Adaptive::new();
        let t0 = Instant::now();
        rule.record(t0, 10 * MS, 11 * MS);
        assert!(rule.use_workers(t0));
    }
}
