//! Softmax, log-softmax, log-sum-exp and cross-entropy, written once over [`Scalar`] so the
//! same code evaluates plainly on `f64` and records on a tape with [`Var`](crate::Var).
//! Built on [`Scalar`] and the engine's public API only.
//!
//! Two forms of each:
//!
//! - **Stable** ([`softmax`], [`log_softmax`], [`logsumexp`], [`cross_entropy`]): built on
//!   the fused n-ary log-sum-exp node, whose partials are the softmax, applied to the logits
//!   minus their maximum (a constant, which changes no gradient, and keeps the values exact
//!   to a few ulps). Cross-entropy is `logsumexp(logits) - logits[target]`, so its gradient
//!   is exactly `P - onehot(target)` and stays finite for logits like `±1000`.
//! - **Composed** ([`softmax_composed`], [`cross_entropy_composed`]): the chapter's formula
//!   as it is written, `-ln(e^l_t / sum_j e^l_j)`, recorded as exp, sum, division and log
//!   nodes. The tape derives `P - onehot` from those nodes by the chain rule alone, which is
//!   what the loss-gradient chapter shows by hand. `e^l` overflows past `l = 709.78`, so
//!   this form gives NaN or infinity for large logits; use it to learn, the stable form to
//!   train.
//!
//! # Examples
//!
//! ```
//! use tapegrad::{functional, Graph};
//!
//! let g = Graph::new();
//! let logits = g.vars(&[2.0, 1.0, 0.1]);
//! let loss = functional::cross_entropy(&logits, 0);
//! let grads = loss.backward();
//! let p = functional::softmax(&[2.0, 1.0, 0.1]); // plain f64
//! // dL/dl_i = P_i - [i == target]
//! approx::assert_relative_eq!(grads[logits[0]], p[0] - 1.0, epsilon = 1e-15);
//! approx::assert_relative_eq!(grads[logits[2]], p[2], epsilon = 1e-15);
//! ```

use crate::engine::Error;
use crate::engine::Scalar;
use crate::engine::or_panic;

/// Checks that `logits` is not empty, naming `op` in the error.
fn check_logits<T>(op: &'static str, logits: &[T]) -> Result<(), Error> {
    if logits.is_empty() {
        return Err(Error::BadOperands {
            op,
            why: "no logits: a distribution needs at least one class".into(),
        });
    }
    Ok(())
}

/// Checks `logits` and that `target` indexes it.
fn check_target<T>(op: &'static str, logits: &[T], target: usize) -> Result<(), Error> {
    check_logits(op, logits)?;
    if target >= logits.len() {
        return Err(Error::BadOperands {
            op,
            why: format!(
                "target class {target} is out of range for {} logits (valid: 0..={})",
                logits.len(),
                logits.len() - 1
            ),
        });
    }
    Ok(())
}

/// `logits[i] - max_j logits[j]`, the maximum taken as a plain constant.
///
/// Softmax is unchanged when every logit moves by the same amount, so subtracting a
/// constant changes no gradient; it keeps the values exact. The fused log-sum-exp node is
/// stable on its own, but its value at logits near 1000 is about 1000 and carries that
/// number's rounding (1.1e-13); `lse - logits[target]` would then lose 13 digits of a loss
/// near 0.3. Shifted, the largest logit is 0 and the log-sum-exp lies in `[0, ln n]`.
///
/// The maximum is read as a plain number, untracked ([`Scalar::untracked_value`]): it
/// picks no branch, and any constant shift gives the same function. A
/// [`Replay`](crate::Replay) keeps the recorded shift, which leaves the softmax unchanged in
/// exact arithmetic but can move the last bits against a fresh recording.
fn shift_by_max<T: Scalar>(logits: &[T]) -> Vec<T> {
    let mut max = f64::NEG_INFINITY;
    for l in logits {
        max = max.max(l.untracked_value());
    }
    logits.iter().map(|&l| l - max).collect()
}

/// `ln(sum_i e^logits[i])`, stable (shifted by the maximum), one fused node on a tape whose
/// partials are the softmax.
///
/// # Examples
///
/// ```
/// use tapegrad::functional::logsumexp;
///
/// assert_eq!(logsumexp(&[0.0_f64, 0.0]), 2f64.ln());
/// // e^1000 overflows; the shifted form does not.
/// approx::assert_relative_eq!(logsumexp(&[1000.0_f64, 1000.0]), 1000.0 + 2f64.ln());
/// ```
///
/// # Panics
///
/// If `logits` is empty (see [`try_logsumexp`]), or for `Var`s if they mix graphs or one
/// was released.
#[track_caller]
pub fn logsumexp<T: Scalar>(logits: &[T]) -> T {
    or_panic(try_logsumexp(logits))
}

/// [`logsumexp`], returning an error for empty `logits` instead of panicking.
///
/// # Errors
///
/// [`Error::BadOperands`] if `logits` is empty.
///
/// # Examples
///
/// ```
/// use tapegrad::functional::try_logsumexp;
/// assert!(try_logsumexp::<f64>(&[]).is_err());
/// assert_eq!(try_logsumexp(&[0.0_f64]), Ok(0.0));
/// ```
#[track_caller]
pub fn try_logsumexp<T: Scalar>(logits: &[T]) -> Result<T, Error> {
    check_logits("logsumexp", logits)?;
    Ok(T::logsumexp(logits))
}

/// `ln softmax(logits)`, stable: `s[i] - logsumexp(s)` with `s = logits - max(logits)`.
/// Every entry is `<= 0` and finite for finite logits, however large.
///
/// # Examples
///
/// ```
/// use tapegrad::functional::log_softmax;
///
/// let lp = log_softmax(&[1000.0_f64, -1000.0]);
/// assert_eq!(lp[0], 0.0);
/// assert_eq!(lp[1], -2000.0);
/// ```
///
/// # Panics
///
/// If `logits` is empty (see [`try_log_softmax`]).
#[track_caller]
pub fn log_softmax<T: Scalar>(logits: &[T]) -> Vec<T> {
    or_panic(try_log_softmax(logits))
}

/// [`log_softmax`], returning an error for empty `logits`.
///
/// # Errors
///
/// [`Error::BadOperands`] if `logits` is empty.
///
/// # Examples
///
/// ```
/// use tapegrad::functional::try_log_softmax;
/// assert!(try_log_softmax::<f64>(&[]).is_err());
/// ```
#[track_caller]
pub fn try_log_softmax<T: Scalar>(logits: &[T]) -> Result<Vec<T>, Error> {
    check_logits("log_softmax", logits)?;
    let shifted = shift_by_max(logits);
    let lse = T::logsumexp(&shifted);
    Ok(shifted.into_iter().map(|s| s - lse).collect())
}

/// The softmax `e^l_i / sum_j e^l_j`, stable: `e^(log_softmax(l)_i)`, whose exponent is
/// never positive, so it cannot overflow.
///
/// # Examples
///
/// ```
/// use tapegrad::{functional::softmax, Graph};
///
/// let p = softmax(&[1000.0_f64, 1000.0]);
/// assert_eq!(p, vec![0.5, 0.5]);
///
/// // On a tape: dP_0/dl_0 = P_0 (1 - P_0)
/// let g = Graph::new();
/// let l = g.vars(&[0.3, -0.2, 1.1]);
/// let p = softmax(&l);
/// let p0 = p[0].value();
/// approx::assert_relative_eq!(p[0].backward()[l[0]], p0 * (1.0 - p0), epsilon = 1e-15);
/// ```
///
/// # Panics
///
/// If `logits` is empty (see [`try_softmax`]).
#[track_caller]
pub fn softmax<T: Scalar>(logits: &[T]) -> Vec<T> {
    or_panic(try_softmax(logits))
}

/// [`softmax`], returning an error for empty `logits`.
///
/// # Errors
///
/// [`Error::BadOperands`] if `logits` is empty.
///
/// # Examples
///
/// ```
/// use tapegrad::functional::try_softmax;
/// assert!(try_softmax::<f64>(&[]).is_err());
/// ```
#[track_caller]
pub fn try_softmax<T: Scalar>(logits: &[T]) -> Result<Vec<T>, Error> {
    Ok(try_log_softmax(logits)?
        .into_iter()
        .map(Scalar::exp)
        .collect())
}

/// Cross-entropy of `logits` against class `target`, stable:
/// `logsumexp(logits) - logits[target]`, which equals `-ln softmax(logits)[target]`
/// (computed on the logits minus their maximum, a constant, for exact values).
///
/// On a tape the gradient flows through one fused log-sum-exp node, whose partials are the
/// softmax, and the subtraction of the target's logit: exactly `P - onehot(target)`,
/// finite for any finite logits.
///
/// # Examples
///
/// ```
/// use tapegrad::{functional::cross_entropy, Graph};
///
/// let g = Graph::new();
/// let l = g.vars(&[1000.0, -1000.0, 0.0]);
/// let loss = cross_entropy(&l, 1);
/// assert_eq!(loss.value(), 2000.0);
/// let grads = loss.backward();
/// assert_eq!(grads.wrt_all(&l), vec![1.0, -1.0, 0.0]);
/// ```
///
/// # Panics
///
/// If `logits` is empty or `target >= logits.len()` (see [`try_cross_entropy`]).
#[track_caller]
pub fn cross_entropy<T: Scalar>(logits: &[T], target: usize) -> T {
    or_panic(try_cross_entropy(logits, target))
}

/// [`cross_entropy`], returning an error for bad input.
///
/// # Errors
///
/// [`Error::BadOperands`] if `logits` is empty or `target` is out of range.
///
/// # Examples
///
/// ```
/// use tapegrad::functional::try_cross_entropy;
/// let err = try_cross_entropy(&[0.0_f64, 1.0], 2).unwrap_err();
/// assert!(err.to_string().contains("target class 2 is out of range for 2 logits"));
/// ```
#[track_caller]
pub fn try_cross_entropy<T: Scalar>(logits: &[T], target: usize) -> Result<T, Error> {
    check_target("cross_entropy", logits, target)?;
    let shifted = shift_by_max(logits);
    Ok(T::logsumexp(&shifted) - shifted[target])
}

/// The softmax as the chapter writes it: `e^l_i / sum_j e^l_j`, recorded as one exp node
/// per logit, one n-ary sum node and one division per entry.
///
/// Not stable: a logit above about 709.78 makes `e^l` infinite and the result NaN (see
/// [`softmax`] for the stable form).
///
/// # Examples
///
/// ```
/// use tapegrad::functional::{softmax, softmax_composed};
///
/// let l = [0.5_f64, -1.0, 2.0];
/// for (a, b) in softmax_composed(&l).iter().zip(softmax(&l)) {
///     approx::assert_relative_eq!(*a, b, max_relative = 1e-15);
/// }
/// assert!(softmax_composed(&[1000.0_f64, 0.0])[0].is_nan());
/// ```
///
/// # Panics
///
/// If `logits` is empty (see [`try_softmax_composed`]).
#[track_caller]
pub fn softmax_composed<T: Scalar>(logits: &[T]) -> Vec<T> {
    or_panic(try_softmax_composed(logits))
}

/// [`softmax_composed`], returning an error for empty `logits`.
///
/// # Errors
///
/// [`Error::BadOperands`] if `logits` is empty.
///
/// # Examples
///
/// ```
/// use tapegrad::functional::try_softmax_composed;
/// assert!(try_softmax_composed::<f64>(&[]).is_err());
/// ```
#[track_caller]
pub fn try_softmax_composed<T: Scalar>(logits: &[T]) -> Result<Vec<T>, Error> {
    check_logits("softmax_composed", logits)?;
    let exps: Vec<T> = logits.iter().map(|&l| l.exp()).collect();
    let total = T::sum(&exps);
    Ok(exps.into_iter().map(|e| e / total).collect())
}

/// Cross-entropy as the chapter writes it: `-ln(e^l_t / sum_j e^l_j)`, recorded as exp
/// nodes, one n-ary sum, one division, one log and a negation. The numerator is the same
/// exp node that enters the sum, as it would be in a model's graph.
///
/// Backward through these nodes gives `P - onehot(target)` by the chain rule alone. Not
/// stable: large logits make it NaN or infinite (see [`cross_entropy`]).
///
/// # Examples
///
/// ```
/// use tapegrad::{functional::cross_entropy_composed, Graph};
///
/// let g = Graph::new();
/// let l = g.vars(&[0.0, 0.0]);
/// let loss = cross_entropy_composed(&l, 0);
/// approx::assert_relative_eq!(loss.value(), 2f64.ln());
/// // P = (1/2, 1/2): gradient P - onehot(0) = (-1/2, 1/2)
/// let grads = loss.backward();
/// approx::assert_relative_eq!(grads[l[0]], -0.5, epsilon = 1e-16);
/// approx::assert_relative_eq!(grads[l[1]], 0.5, epsilon = 1e-16);
/// ```
///
/// # Panics
///
/// If `logits` is empty or `target >= logits.len()` (see [`try_cross_entropy_composed`]).
#[track_caller]
pub fn cross_entropy_composed<T: Scalar>(logits: &[T], target: usize) -> T {
    or_panic(try_cross_entropy_composed(logits, target))
}

/// [`cross_entropy_composed`], returning an error for bad input.
///
/// # Errors
///
/// [`Error::BadOperands`] if `logits` is empty or `target` is out of range.
///
/// # Examples
///
/// ```
/// use tapegrad::functional::try_cross_entropy_composed;
/// assert!(try_cross_entropy_composed::<f64>(&[], 0).is_err());
/// assert!(try_cross_entropy_composed(&[1.0_f64], 0).is_ok());
/// ```
#[track_caller]
pub fn try_cross_entropy_composed<T: Scalar>(logits: &[T], target: usize) -> Result<T, Error> {
    check_target("cross_entropy_composed", logits, target)?;
    let exps: Vec<T> = logits.iter().map(|&l| l.exp()).collect();
    let total = T::sum(&exps);
    Ok(-(exps[target] / total).ln())
}
