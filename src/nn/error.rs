//! [`ParamError`]: what a store, a state dict, a file or an optimizer reports instead of a
//! wrong number. Uses the engine's [`Error`] only.

use std::fmt;
use std::path::PathBuf;

use crate::engine::Error;

/// What a store, a state dict, a file or an optimizer reports instead of a wrong number.
///
/// Each message names what it is about: the tensor, the file, and for a mix-up of stores
/// both stores (`store #3 (2 tensors: "fc.weight", "fc.bias")`, numbered in the order they
/// were made; a clone is a store of its own).
///
/// # Examples
///
/// ```
/// use tapegrad::nn::{ParamError, Params, StateDict};
/// let mut params = Params::new();
/// params.zeros("w", &[2]);
/// params.zeros("b", &[1]);
/// let mut sd = StateDict::new();
/// sd.push("w", &[3], vec![0.0; 3]);
/// sd.push("extra", &[1], vec![0.0]);
/// // Every problem at once, as PyTorch's load_state_dict reports them.
/// let ParamError::Load(problems) = params.load_state_dict(&sd).unwrap_err() else { panic!() };
/// assert_eq!(problems, [
///     ParamError::Shape { name: "w".into(), expected: vec![2], found: vec![3] },
///     ParamError::Missing { name: "b".into() },
///     ParamError::Unexpected { name: "extra".into() },
/// ]);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ParamError {
    /// Gradients computed for one store were applied to another (a clone included).
    ForeignGradients {
        /// The store the gradients were computed for, described.
        computed_for: String,
        /// The store they were applied to, described.
        applied_to: String,
    },
    /// Gradients computed before the store last changed (an optimizer step, a load, an
    /// edit): applying them would step from values they were not computed at.
    StaleGradients,
    /// An optimizer or a [`Binding`](crate::nn::Binding) made for one store was used with
    /// another (a clone included), or with its store after tensors were added to it.
    ForeignStore {
        /// What was misused: `"optimizer"` or `"binding"`.
        what: &'static str,
        /// The store it was made for, described as it was then.
        made_for: String,
        /// The store it was given, described.
        given: String,
    },
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
    /// Every problem one load found ([`Missing`](ParamError::Missing),
    /// [`Unexpected`](ParamError::Unexpected), [`Shape`](ParamError::Shape), ...), in the
    /// store's order, then the state dict's; nothing was loaded.
    Load(Vec<ParamError>),
    /// A tensor is stored with a dtype tapegrad cannot read as `f64` exactly (only `F64`,
    /// `F32`, `F16` and `BF16` can be).
    Dtype {
        /// The tensor's name.
        name: String,
        /// The dtype found.
        found: String,
    },
    /// The bytes are not a valid file of the format (what is wrong, in words).
    Format(String),
    /// Reading or writing failed (the operating system's words).
    Io(String),
    /// A file could not be read, written or understood: the path, and what went wrong
    /// ([`Io`](ParamError::Io), [`Format`](ParamError::Format), [`Dtype`](ParamError::Dtype)).
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        error: Box<ParamError>,
    },
    /// The engine refused (a released or foreign output, an anomaly).
    Engine(Error),
}

impl ParamError {
    /// The message without the crate's prefix (so that nested errors read as one).
    fn describe(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::ForeignGradients {
                computed_for,
                applied_to,
            } => write!(
                f,
                "these gradients were computed for {computed_for}, not for {applied_to} \
                 (a clone is a store of its own)"
            ),
            ParamError::StaleGradients => f.write_str(
                "these gradients are stale: the parameters changed (a step, a load or an \
                 edit) after they were computed; compute them again",
            ),
            ParamError::ForeignStore {
                what,
                made_for,
                given,
            } => write!(
                f,
                "this {what} was made for {made_for}, and was given {given}; a clone of a \
                 store is a store of its own (copy values into the original with \
                 load_state_dict), and a store that gained tensors needs a new {what}"
            ),
            ParamError::Missing { name } => write!(f, "tensor {name:?} is missing"),
            ParamError::Unexpected { name } => {
                write!(f, "tensor {name:?} is not a tensor of this store")
            }
            ParamError::Shape {
                name,
                expected,
                found,
            } => write!(
                f,
                "tensor {name:?} has shape {found:?}, expected {expected:?}"
            ),
            ParamError::Load(problems) => {
                let n = problems.len();
                write!(
                    f,
                    "the state dict does not fit ({n} problem{}; nothing was loaded):",
                    if n == 1 { "" } else { "s" }
                )?;
                for problem in problems {
                    f.write_str("\n  ")?;
                    problem.describe(f)?;
                }
                Ok(())
            }
            ParamError::Dtype { name, found } => write!(
                f,
                "tensor {name:?} has dtype {found}, expected F64, F32, F16 or BF16"
            ),
            ParamError::Format(why) => write!(f, "not a valid file: {why}"),
            ParamError::Io(why) => f.write_str(why),
            ParamError::File { path, error } => {
                write!(f, "{}: ", path.display())?;
                error.describe(f)
            }
            ParamError::Engine(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The engine's errors carry their own prefix.
            ParamError::Engine(e) => e.fmt(f),
            _ => {
                f.write_str("tapegrad::nn: ")?;
                self.describe(f)
            }
        }
    }
}

impl std::error::Error for ParamError {}

impl From<Error> for ParamError {
    fn from(e: Error) -> Self {
        ParamError::Engine(e)
    }
}
