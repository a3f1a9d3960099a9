//! [`StateDict`]: named tensors (parameters, optimizer state) and their files: safetensors
//! (what PyTorch, JAX and Hugging Face read) and JSON. Bytes and names only: uses the
//! store, never a graph.
//!
//! The safetensors format is small enough to write by hand: an 8-byte little-endian header
//! length, a JSON header `{"name": {"dtype": "F64", "shape": [..], "data_offsets": [b, e]}}`
//! (padded with spaces to a multiple of 8), then the tensors' little-endian bytes. Its
//! JSON is read with `serde_json`; the `safetensors` crate would add `serde_derive` (and
//! `syn`) and `hashbrown` to the library's build for the same thirty lines.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::nn::error::ParamError;
use crate::nn::params::Params;

/// One named tensor: its shape and its entries, row-major.
///
/// # Examples
///
/// ```
/// use tapegrad::nn::Tensor;
/// let t = Tensor { name: "w".into(), shape: vec![2], data: vec![1.0, 2.0] };
/// assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The name, e.g. `fc.weight`.
    pub name: String,
    /// The shape (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// The entries, row-major: as many as the product of `shape`.
    pub data: Vec<f64>,
}

/// Named tensors in order: a model's parameters ([`Params::state_dict`]), an optimizer's
/// state, or both under prefixes; saved and loaded as safetensors or JSON.
///
/// # Examples
///
/// ```
/// use tapegrad::nn::{Params, StateDict};
/// let mut params = Params::new();
/// let w = params.add("w", &[2], vec![1.5, -2.0]);
/// let bytes = params.state_dict().to_safetensors();
/// let mut other = Params::new();
/// let w2 = other.zeros("w", &[2]);
/// other.load_state_dict(&StateDict::from_safetensors(&bytes).unwrap()).unwrap();
/// assert_eq!(&other[w2], &params[w]);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    tensors: Vec<Tensor>,
}

/// The largest header accepted (as the `safetensors` crate: 100 MB).
const MAX_HEADER: usize = 100_000_000;

fn format_error(why: impl Into<String>) -> ParamError {
    ParamError::Format(why.into())
}

impl StateDict {
    /// An empty state dict.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tapegrad::nn::StateDict::new().is_empty());
    /// ```
    pub fn new() -> Self {
        StateDict::default()
    }

    /// Appends a tensor.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut sd = tapegrad::nn::StateDict::new();
    /// sd.push("step", &[], vec![3.0]);
    /// assert_eq!(sd.get("step").unwrap().data, vec![3.0]);
    /// ```
    ///
    /// # Panics
    ///
    /// If `name` is taken, or `data.len()` is not the product of `shape`.
    #[track_caller]
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize], data: Vec<f64>) {
        let name = name.into();
        assert_eq!(
            data.len(),
            shape.iter().product::<usize>(),
            "StateDict::push: tensor {name:?} of shape {shape:?} got {} values",
            data.len()
        );
        assert!(
            self.get(&name).is_none(),
            "StateDict::push: tensor {name:?} is there already"
        );
        self.tensors.push(Tensor {
            name,
            shape: shape.to_vec(),
            data,
        });
    }

    /// The tensor called `name`.
    ///
    /// # Examples
    ///
    /// ```
    /// let sd = tapegrad::nn::StateDict::new();
    /// assert!(sd.get("w").is_none());
    /// ```
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensors, in order.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut sd = tapegrad::nn::StateDict::new();
    /// sd.push("a", &[1], vec![1.0]);
    /// assert_eq!(sd.tensors()[0].name, "a");
    /// ```
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// The number of tensors.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(tapegrad::nn::StateDict::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether it holds no tensors.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tapegrad::nn::StateDict::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Appends every tensor of `other` with `prefix` before its name (e.g. `"optim."`, to
    /// keep an optimizer's state in the same file as the parameters).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::StateDict;
    /// let mut state = StateDict::new();
    /// state.push("step", &[], vec![1.0]);
    /// let mut all = StateDict::new();
    /// all.push("w", &[1], vec![0.5]);
    /// all.extend_prefixed("optim.", state);
    /// assert!(all.get("optim.step").is_some());
    /// assert_eq!(all.prefixed("optim.").get("step").unwrap().data, vec![1.0]);
    /// assert_eq!(all.without_prefix("optim.").len(), 1);
    /// ```
    ///
    /// # Panics
    ///
    /// If a prefixed name is taken.
    #[track_caller]
    pub fn extend_prefixed(&mut self, prefix: &str, other: StateDict) {
        for t in other.tensors {
            self.push(format!("{prefix}{}", t.name), &t.shape, t.data);
        }
    }

    /// The tensors whose names start with `prefix`, with the prefix removed.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut sd = tapegrad::nn::StateDict::new();
    /// sd.push("a.x", &[1], vec![1.0]);
    /// sd.push("b.x", &[1], vec![2.0]);
    /// assert_eq!(sd.prefixed("b.").tensors()[0].name, "x");
    /// ```
    pub fn prefixed(&self, prefix: &str) -> StateDict {
        let tensors = self
            .tensors
            .iter()
            .filter_map(|t| {
                let name = t.name.strip_prefix(prefix)?;
                Some(Tensor {
                    name: name.to_owned(),
                    ..t.clone()
                })
            })
            .collect();
        StateDict { tensors }
    }

    /// The tensors whose names do not start with `prefix`.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut sd = tapegrad::nn::StateDict::new();
    /// sd.push("a.x", &[1], vec![1.0]);
    /// sd.push("b.x", &[1], vec![2.0]);
    /// assert_eq!(sd.without_prefix("b.").tensors()[0].name, "a.x");
    /// ```
    pub fn without_prefix(&self, prefix: &str) -> StateDict {
        let tensors = self
            .tensors
            .iter()
            .filter(|t| !t.name.starts_with(prefix))
            .cloned()
            .collect();
        StateDict { tensors }
    }

    /// The same tensors, each renamed by `rename` (PyTorch users' dict comprehension over
    /// a state dict's keys), e.g. to load a checkpoint whose names differ from the
    /// store's. For PyTorch's `nn.Sequential` names see [`Mlp::map_sequential`](crate::nn::Mlp::map_sequential).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut sd = tapegrad::nn::StateDict::new();
    /// sd.push("encoder.weight", &[1], vec![1.0]);
    /// let renamed = sd.map_names(|name| name.replace("encoder.", "enc."));
    /// assert_eq!(renamed.tensors()[0].name, "enc.weight");
    /// ```
    ///
    /// # Panics
    ///
    /// If two tensors get the same name.
    #[track_caller]
    pub fn map_names(&self, mut rename: impl FnMut(&str) -> String) -> StateDict {
        let mut out = StateDict::new();
        for t in &self.tensors {
            out.push(rename(&t.name), &t.shape, t.data.clone());
        }
        out
    }

    /// The tensors as a safetensors file: `F64`, little-endian, in this order.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut sd = tapegrad::nn::StateDict::new();
    /// sd.push("w", &[1], vec![1.0]);
    /// let bytes = sd.to_safetensors();
    /// let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    /// assert_eq!(header_len % 8, 0);
    /// assert_eq!(bytes.len(), 8 + header_len + 8);
    /// ```
    pub fn to_safetensors(&self) -> Vec<u8> {
        let mut header = Map::new();
        let mut offset = 0;
        for t in &self.tensors {
            let end = offset + 8 * t.data.len();
            header.insert(
                t.name.clone(),
                json!({"dtype": "F64", "shape": t.shape, "data_offsets": [offset, end]}),
            );
            offset = end;
        }
        let mut header = Value::Object(header).to_string().into_bytes();
        // The data starts 8-aligned (as the `safetensors` crate writes it).
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut bytes = Vec::with_capacity(8 + header.len() + offset);
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&header);
        for t in &self.tensors {
            for x in &t.data {
                bytes.extend_from_slice(&x.to_le_bytes());
            }
        }
        bytes
    }

    /// Reads a safetensors file, in the order of its tensors' data: `F64` tensors (what
    /// [`StateDict::to_safetensors`] writes), and `F32`, `F16` or `BF16` ones (what PyTorch
    /// and JAX usually save), widened to `f64` exactly (every such number is an `f64`;
    /// infinities stay infinite and NaNs NaN).
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::StateDict;
    /// let mut sd = StateDict::new();
    /// sd.push("w", &[2, 1], vec![1.0, f64::MIN_POSITIVE]);
    /// assert_eq!(StateDict::from_safetensors(&sd.to_safetensors()).unwrap(), sd);
    /// assert!(StateDict::from_safetensors(b"not a file").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`ParamError::Dtype`] naming a tensor of another dtype (an integer, `F8_E4M3`, ...);
    /// [`ParamError::Format`] for
    /// anything else that is not a valid safetensors file (the header's length, JSON or
    /// fields, offsets that do not tile the data exactly).
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, ParamError> {
        let Some((len, rest)) = bytes.split_first_chunk::<8>() else {
            return Err(format_error("shorter than the 8-byte header length"));
        };
        let len = usize::try_from(u64::from_le_bytes(*len)).unwrap_or(usize::MAX);
        if len > MAX_HEADER || len > rest.len() {
            return Err(format_error(format!(
                "a header of {len} bytes in a file of {} bytes",
                bytes.len()
            )));
        }
        let (header, data) = rest.split_at(len);
        let header: Value = serde_json::from_slice(header)
            .map_err(|e| format_error(format!("the header is not JSON: {e}")))?;
        let Value::Object(header) = header else {
            return Err(format_error("the header is not a JSON object"));
        };
        let mut entries = Vec::new();
        for (name, entry) in &header {
            if name == "__metadata__" {
                continue;
            }
            entries.push(read_entry(name, entry)?);
        }
        entries.sort_by_key(|e| e.2);
        let mut tensors = Vec::with_capacity(entries.len());
        let mut at = 0;
        for (name, shape, (begin, end), dtype) in entries {
            let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            let width = dtype.width();
            if begin != at || Some(end - begin) != count.and_then(|n| n.checked_mul(width)) {
                return Err(format_error(format!(
                    "tensor {name:?} of shape {shape:?} has data_offsets [{begin}, {end}]; \
                     the tensors must tile the data, {} bytes, with {width} bytes per entry",
                    data.len()
                )));
            }
            let bytes = data.get(begin..end).ok_or_else(|| {
                format_error(format!(
                    "tensor {name:?} ends at byte {end} of {} bytes of data",
                    data.len()
                ))
            })?;
            let data = bytes.chunks_exact(width).map(|b| dtype.read(b)).collect();
            tensors.push(Tensor { name, shape, data });
            at = end;
        }
        if at != data.len() {
            return Err(format_error(format!(
                "the tensors cover {at} bytes of {} bytes of data",
                data.len()
            )));
        }
        Ok(StateDict { tensors })
    }

    /// The tensors as JSON: `[{"name": .., "shape": [..], "data": [..]}, ..]`, every number
    /// written so that it reads back to the same `f64`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::StateDict;
    /// let mut sd = StateDict::new();
    /// sd.push("w", &[2], vec![0.1, -2.5]);
    /// let text = sd.to_json().unwrap();
    /// assert_eq!(text, r#"[{"data":[0.1,-2.5],"name":"w","shape":[2]}]"#);
    /// assert_eq!(StateDict::from_json(&text).unwrap(), sd);
    /// ```
    ///
    /// # Errors
    ///
    /// [`ParamError::Format`] naming a tensor with a NaN or infinite entry, which JSON
    /// cannot hold (safetensors can).
    pub fn to_json(&self) -> Result<String, ParamError> {
        let mut list = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            if t.data.iter().any(|x| !x.is_finite()) {
                return Err(format_error(format!(
                    "tensor {:?} holds a NaN or infinity, which JSON cannot hold",
                    t.name
                )));
            }
            list.push(json!({"name": t.name, "shape": t.shape, "data": t.data}));
        }
        Ok(Value::Array(list).to_string())
    }

    /// Reads [`StateDict::to_json`]'s format.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::StateDict;
    /// let sd = StateDict::from_json(r#"[{"name": "b", "shape": [], "data": [2]}]"#).unwrap();
    /// assert_eq!(sd.get("b").unwrap().data, vec![2.0]);
    /// ```
    ///
    /// # Errors
    ///
    /// [`ParamError::Format`] if it is not that format, naming the tensor where one is at
    /// fault.
    pub fn from_json(text: &str) -> Result<Self, ParamError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format_error(format!("not JSON: {e}")))?;
        let Value::Array(list) = value else {
            return Err(format_error("expected a JSON array of tensors"));
        };
        let mut sd = StateDict::new();
        for item in &list {
            let name = item["name"]
                .as_str()
                .ok_or_else(|| format_error("a tensor without a string \"name\""))?;
            let bad = |what: &str| format_error(format!("tensor {name:?}: {what}"));
            let shape = read_shape(&item["shape"]).ok_or_else(|| bad("bad \"shape\""))?;
            let data = item["data"]
                .as_array()
                .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
                .ok_or_else(|| bad("\"data\" is not an array of numbers"))?;
            if data.len() != shape.iter().product::<usize>() || sd.get(name).is_some() {
                return Err(bad("the data does not fit the shape, or the name repeats"));
            }
            sd.push(name, &shape, data);
        }
        Ok(sd)
    }

    /// Writes [`StateDict::to_safetensors`] to `path`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::StateDict;
    /// let mut sd = StateDict::new();
    /// sd.push("w", &[1], vec![1.0]);
    /// let path = std::env::temp_dir().join(format!("tapegrad-doc-{}.safetensors", std::process::id()));
    /// sd.save_safetensors(&path).unwrap();
    /// assert_eq!(StateDict::load_safetensors(&path).unwrap(), sd);
    /// std::fs::remove_file(&path).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`ParamError::File`] naming the path, with the [`ParamError::Io`] error.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<(), ParamError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_safetensors())
            .map_err(|e| in_file(path, ParamError::Io(format!("cannot write: {e}"))))
    }

    /// Reads a safetensors file from `path`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{ParamError, StateDict};
    /// let err = StateDict::load_safetensors("/no/such/file.safetensors").unwrap_err();
    /// assert!(matches!(err, ParamError::File { .. }));
    /// assert!(err.to_string().starts_with("tapegrad::nn: /no/such/file.safetensors: cannot read"));
    /// ```
    ///
    /// # Errors
    ///
    /// [`ParamError::File`] naming the path, with the error: [`ParamError::Io`] if it
    /// cannot be read, else as [`StateDict::from_safetensors`].
    pub fn load_safetensors(path: impl AsRef<Path>) -> Result<Self, ParamError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| in_file(path, ParamError::Io(format!("cannot read: {e}"))))?;
        StateDict::from_safetensors(&bytes).map_err(|e| in_file(path, e))
    }
}

/// `error` as it happened to the file at `path`.
fn in_file(path: &Path, error: ParamError) -> ParamError {
    ParamError::File {
        path: path.to_owned(),
        error: Box::new(error),
    }
}

/// A header entry: name, shape, data offsets `(begin, end)` and the stored dtype.
type Entry = (String, Vec<usize>, (usize, usize), Dtype);

/// The dtypes a file may store: `F64` as tapegrad writes it, and the narrower floats other
/// tools write (PyTorch's default `F32`, half precision `F16` and `BF16`), which widen to
/// `f64` exactly.
#[derive(Clone, Copy, Debug)]
enum Dtype {
    F64,
    F32,
    F16,
    Bf16,
}

impl Dtype {
    fn parse(name: &str) -> Option<Dtype> {
        match name {
            "F64" => Some(Dtype::F64),
            "F32" => Some(Dtype::F32),
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::Bf16),
            _ => None,
        }
    }

    /// Bytes per entry.
    fn width(self) -> usize {
        match self {
            Dtype::F64 => 8,
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }

    /// One little-endian entry as `f64` (exact: every `f32`, `f16` and `bf16` is an `f64`).
    fn read(self, b: &[u8]) -> f64 {
        match self {
            Dtype::F64 => f64::from_le_bytes(b.try_into().expect("8 bytes")),
            Dtype::F32 => f64::from(f32::from_le_bytes(b.try_into().expect("4 bytes"))),
            Dtype::F16 => f64::from(f16_to_f32(u16::from_le_bytes(
                b.try_into().expect("2 bytes"),
            ))),
            // bf16 is the upper half of an f32.
            Dtype::Bf16 => f64::from(f32::from_bits(
                u32::from(u16::from_le_bytes(b.try_into().expect("2 bytes"))) << 16,
            )),
        }
    }
}

/// An IEEE half-precision number (1 sign bit, 5 exponent bits biased by 15, 10 fraction
/// bits) as the `f32` of the same value, exactly: every half is an `f32`, subnormals
/// included. Infinities stay infinite and a NaN keeps its payload (shifted into the wider
/// fraction, as hardware conversion does; the `f64` widening then quiets a signalling one).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exponent = u32::from((h >> 10) & 0x1f);
    let fraction = u32::from(h & 0x3ff);
    let bits = match exponent {
        // Zero or subnormal: fraction * 2^-24, exact (a normal f32, or zero).
        0 => {
            let magnitude = fraction as f32 * (1.0 / 16_777_216.0);
            return if sign == 0 { magnitude } else { -magnitude };
        }
        // Infinity or NaN.
        0x1f => sign | 0xff << 23 | fraction << 13,
        // Normal: rebias 15 -> 127.
        _ => sign | (exponent + 127 - 15) << 23 | fraction << 13,
    };
    f32::from_bits(bits)
}

/// One header entry, or the error naming it.
fn read_entry(name: &str, entry: &Value) -> Result<Entry, ParamError> {
    let bad = |what: &str| format_error(format!("tensor {name:?}: {what}"));
    let dtype = entry["dtype"]
        .as_str()
        .ok_or_else(|| bad("no string \"dtype\""))?;
    let Some(dtype) = Dtype::parse(dtype) else {
        return Err(ParamError::Dtype {
            name: name.to_owned(),
            found: dtype.to_owned(),
        });
    };
    let shape = read_shape(&entry["shape"]).ok_or_else(|| bad("bad \"shape\""))?;
    let offsets = entry["data_offsets"]
        .as_array()
        .filter(|a| a.len() == 2)
        .and_then(|a| Some((a[0].as_u64()? as usize, a[1].as_u64()? as usize)))
        .filter(|(b, e)| b <= e)
        .ok_or_else(|| bad("\"data_offsets\" is not [begin, end] with begin <= end"))?;
    Ok((name.to_owned(), shape, offsets, dtype))
}

fn read_shape(v: &Value) -> Option<Vec<usize>> {
    v.as_array()?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect()
}

impl Params {
    /// Every tensor by name, in store order (PyTorch's `state_dict`).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut params = tapegrad::nn::Params::new();
    /// params.add("w", &[2], vec![1.0, 2.0]);
    /// let sd = params.state_dict();
    /// assert_eq!(sd.get("w").unwrap().data, vec![1.0, 2.0]);
    /// ```
    pub fn state_dict(&self) -> StateDict {
        let mut sd = StateDict::new();
        for p in self.params() {
            sd.push(self.name(p), self.shape(p), self[p].to_vec());
        }
        sd
    }

    /// Sets every tensor from the one of the same name in `sd` (PyTorch's strict
    /// `load_state_dict`). Every tensor missing from `sd`, every tensor of `sd` the store
    /// does not have and every shape that differs is reported at once, in one
    /// [`ParamError::Load`]; nothing is loaded then. Gradients computed before are stale
    /// afterwards.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{ParamError, Params, StateDict};
    /// let mut params = Params::new();
    /// let w = params.zeros("w", &[2]);
    /// params.zeros("b", &[1]);
    /// let mut sd = StateDict::new();
    /// sd.push("w", &[1, 2], vec![1.0, 2.0]);
    /// let err = params.load_state_dict(&sd).unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "tapegrad::nn: the state dict does not fit (2 problems; nothing was loaded):\n  \
    ///      tensor \"w\" has shape [1, 2], expected [2]\n  \
    ///      tensor \"b\" is missing"
    /// );
    /// assert_eq!(&params[w], &[0.0, 0.0]); // unchanged
    /// ```
    ///
    /// # Errors
    ///
    /// [`ParamError::Load`] listing every [`ParamError::Shape`] and [`ParamError::Missing`]
    /// in store order, then every [`ParamError::Unexpected`] in `sd`'s order.
    pub fn load_state_dict(&mut self, sd: &StateDict) -> Result<(), ParamError> {
        let report = self.load(sd, true)?;
        debug_assert!(report.is_empty());
        Ok(())
    }

    /// Sets every tensor that `sd` has, and returns the names it skipped: the store's
    /// tensors `sd` lacks (left as they are) and `sd`'s tensors the store does not have
    /// (PyTorch's `load_state_dict(sd, strict=False)` and its `missing_keys`,
    /// `unexpected_keys`). A shape that differs is still an error, as in PyTorch.
    ///
    /// # Examples
    ///
    /// ```
    /// use tapegrad::nn::{Params, StateDict};
    /// let mut params = Params::new();
    /// let w = params.zeros("w", &[2]);
    /// let head = params.zeros("head", &[1]); // new: not in the checkpoint
    /// let mut sd = StateDict::new();
    /// sd.push("w", &[2], vec![1.0, 2.0]);
    /// sd.push("old_head", &[3], vec![0.0; 3]);
    /// let report = params.load_state_dict_non_strict(&sd).unwrap();
    /// assert_eq!(report.missing, ["head"]);
    /// assert_eq!(report.unexpected, ["old_head"]);
    /// assert_eq!((&params[w], &params[head]), (&[1.0, 2.0][..], &[0.0][..]));
    /// ```
    ///
    /// # Errors
    ///
    /// [`ParamError::Load`] listing every [`ParamError::Shape`]; nothing is loaded then.
    #[doc(alias = "strict")]
    pub fn load_state_dict_non_strict(&mut self, sd: &StateDict) -> Result<LoadReport, ParamError> {
        self.load(sd, false)
    }

    /// Loads `sd`: every problem found first, then the values, all or nothing.
    fn load(&mut self, sd: &StateDict, strict: bool) -> Result<LoadReport, ParamError> {
        let mut problems = Vec::new();
        let mut report = LoadReport::default();
        let mut values = self.as_slice().to_vec();
        for p in self.params() {
            let name = self.name(p);
            match sd.get(name) {
                None => report.missing.push(name.to_owned()),
                Some(t) if t.shape != self.shape(p) => problems.push(ParamError::Shape {
                    name: name.to_owned(),
                    expected: self.shape(p).to_vec(),
                    found: t.shape.clone(),
                }),
                Some(t) => values[self.range(p)].copy_from_slice(&t.data),
            }
        }
        for t in sd.tensors() {
            if self.find(&t.name).is_none() {
                report.unexpected.push(t.name.clone());
            }
        }
        if strict {
            let missing = report.missing.drain(..);
            let unexpected = report.unexpected.drain(..);
            problems.extend(missing.map(|name| ParamError::Missing { name }));
            problems.extend(unexpected.map(|name| ParamError::Unexpected { name }));
        }
        if !problems.is_empty() {
            return Err(ParamError::Load(problems));
        }
        self.replace_values(values);
        Ok(report)
    }
}

/// What a non-strict load skipped ([`Params::load_state_dict_non_strict`]), by PyTorch's
/// names: the store's tensors the state dict lacks, and the state dict's tensors the store
/// does not have.
///
/// # Examples
///
/// ```
/// use tapegrad::nn::{LoadReport, Params};
/// let mut params = Params::new();
/// params.zeros("w", &[1]);
/// let report = params.load_state_dict_non_strict(&params.state_dict()).unwrap();
/// assert!(report.is_empty());
/// assert_eq!(report, LoadReport::default());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The store's tensors that were not in the state dict (left as they were).
    pub missing: Vec<String>,
    /// The state dict's tensors that the store does not have (ignored).
    pub unexpected: Vec<String>,
}

impl LoadReport {
    /// Whether nothing was skipped.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(tapegrad::nn::LoadReport::default().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty()
    }
}
