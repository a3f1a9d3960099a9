//! State dicts and their files: safetensors round trips, files written by CPython (`F64`,
//! `F32`, `F16`, `BF16`, a PyTorch `nn.Sequential`'s names), loads that report every
//! problem at once or, non-strict, what they skipped, and errors that name the tensor and
//! the file.

use tapegrad::nn::{Linear, LoadReport, Mlp, Param, ParamError, Params, StateDict};

fn param_names(params: &Params) -> Vec<(String, Param)> {
    params
        .params()
        .map(|p| (params.name(p).to_owned(), p))
        .collect()
}

#[test]
fn safetensors_round_trip_keeps_every_bit() {
    let mut params = Params::new();
    let specials = vec![
        0.1,
        -0.0,
        f64::MIN_POSITIVE / 4.0,
        f64::INFINITY,
        f64::NAN,
        -1e300,
    ];
    params.add("odd", &[2, 3], specials.clone());
    params.add("scalar", &[], vec![42.0]);
    params.add("empty", &[0, 4], vec![]);
    let bytes = params.state_dict().to_safetensors();
    let mut back = Params::new();
    back.zeros("odd", &[2, 3]);
    back.zeros("scalar", &[]);
    back.zeros("empty", &[0, 4]);
    back.load_state_dict(&StateDict::from_safetensors(&bytes).unwrap())
        .unwrap();
    let bits = |p: &Params| p.as_slice().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&params));
    assert_eq!(param_names(&back).len(), 3);
    // Read independently: the 8-byte length, then a JSON header with F64 entries.
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    assert_eq!(header["odd"]["dtype"], "F64");
    assert_eq!(header["odd"]["shape"], serde_json::json!([2, 3]));
    assert_eq!(
        header["scalar"]["data_offsets"],
        serde_json::json!([48, 56])
    );
    let data = &bytes[8 + len..];
    assert_eq!(f64::from_le_bytes(data[48..56].try_into().unwrap()), 42.0);
}

/// Written by CPython 3.11 with `struct` and `json` (not by tapegrad): a `__metadata__`
/// entry, header keys in its own order, `fc.weight` stored before `fc.bias`, no padding.
///
/// ```python
/// tensors = {"fc.bias": ([2], [0.5, -0.25]),
///            "fc.weight": ([2, 3], [1.0, 2.0, 3.0, -4.0, 1e-300, 0.1])}
/// data = b""; header = {"__metadata__": {"format": "pt"}}
/// for name in ["fc.weight", "fc.bias"]:
///     shape, vals = tensors[name]
///     b = struct.pack("<%dd" % len(vals), *vals)
///     header[name] = {"dtype": "F64", "shape": shape,
///                     "data_offsets": [len(data), len(data) + len(b)]}
///     data += b
/// h = json.dumps(header).encode()
/// blob = struct.pack("<Q", len(h)) + h + data
/// ```
const FROM_PYTHON: &[u8] = &[
    0xb0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7b, 0x22, 0x5f, 0x5f, 0x6d, 0x65, 0x74, 0x61,
    0x64, 0x61, 0x74, 0x61, 0x5f, 0x5f, 0x22, 0x3a, 0x20, 0x7b, 0x22, 0x66, 0x6f, 0x72, 0x6d, 0x61,
    0x74, 0x22, 0x3a, 0x20, 0x22, 0x70, 0x74, 0x22, 0x7d, 0x2c, 0x20, 0x22, 0x66, 0x63, 0x2e, 0x77,
    0x65, 0x69, 0x67, 0x68, 0x74, 0x22, 0x3a, 0x20, 0x7b, 0x22, 0x64, 0x74, 0x79, 0x70, 0x65, 0x22,
    0x3a, 0x20, 0x22, 0x46, 0x36, 0x34, 0x22, 0x2c, 0x20, 0x22, 0x73, 0x68, 0x61, 0x70, 0x65, 0x22,
    0x3a, 0x20, 0x5b, 0x32, 0x2c, 0x20, 0x33, 0x5d, 0x2c, 0x20, 0x22, 0x64, 0x61, 0x74, 0x61, 0x5f,
    0x6f, 0x66, 0x66, 0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x20, 0x5b, 0x30, 0x2c, 0x20, 0x34, 0x38,
    0x5d, 0x7d, 0x2c, 0x20, 0x22, 0x66, 0x63, 0x2e, 0x62, 0x69, 0x61, 0x73, 0x22, 0x3a, 0x20, 0x7b,
    0x22, 0x64, 0x74, 0x79, 0x70, 0x65, 0x22, 0x3a, 0x20, 0x22, 0x46, 0x36, 0x34, 0x22, 0x2c, 0x20,
    0x22, 0x73, 0x68, 0x61, 0x70, 0x65, 0x22, 0x3a, 0x20, 0x5b, 0x32, 0x5d, 0x2c, 0x20, 0x22, 0x64,
    0x61, 0x74, 0x61, 0x5f, 0x6f, 0x66, 0x66, 0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x20, 0x5b, 0x34,
    0x38, 0x2c, 0x20, 0x36, 0x34, 0x5d, 0x7d, 0x7d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf0, 0x3f,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x40,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0xc0, 0x59, 0xf3, 0xf8, 0xc2, 0x1f, 0x6e, 0xa5, 0x01,
    0x9a, 0x99, 0x99, 0x99, 0x99, 0x99, 0xb9, 0x3f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xe0, 0x3f,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xd0, 0xbf,
];
const F32_FILE: &[u8] = &[
    0x3d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7b, 0x22, 0x77, 0x22, 0x3a, 0x20, 0x7b, 0x22,
    0x64, 0x74, 0x79, 0x70, 0x65, 0x22, 0x3a, 0x20, 0x22, 0x46, 0x33, 0x32, 0x22, 0x2c, 0x20, 0x22,
    0x73, 0x68, 0x61, 0x70, 0x65, 0x22, 0x3a, 0x20, 0x5b, 0x31, 0x5d, 0x2c, 0x20, 0x22, 0x64, 0x61,
    0x74, 0x61, 0x5f, 0x6f, 0x66, 0x66, 0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x20, 0x5b, 0x30, 0x2c,
    0x20, 0x34, 0x5d, 0x7d, 0x7d, 0x00, 0x00, 0xc0, 0x3f,
];

/// `json.dumps({"w": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}})` and 3 as
/// `struct.pack("<q", 3)`, framed as safetensors by CPython 3.11.
const I64_FILE: &[u8] = &[
    0x3d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7b, 0x22, 0x77, 0x22, 0x3a, 0x20, 0x7b, 0x22,
    0x64, 0x74, 0x79, 0x70, 0x65, 0x22, 0x3a, 0x20, 0x22, 0x49, 0x36, 0x34, 0x22, 0x2c, 0x20, 0x22,
    0x73, 0x68, 0x61, 0x70, 0x65, 0x22, 0x3a, 0x20, 0x5b, 0x31, 0x5d, 0x2c, 0x20, 0x22, 0x64, 0x61,
    0x74, 0x61, 0x5f, 0x6f, 0x66, 0x66, 0x73, 0x65, 0x74, 0x73, 0x22, 0x3a, 0x20, 0x5b, 0x30, 0x2c,
    0x20, 0x38, 0x5d, 0x7d, 0x7d, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
];

/// An `F32` and a `BF16` tensor, as PyTorch or JAX would save a model in single or brain
/// precision: written by CPython 3.11 (`struct.pack("<f", x)` for `w`; the upper two bytes
/// of each `f32` for `b`), header `{"w": F32 [2, 2], "b": BF16 [2]}`.
const NARROW_FILE: &[u8] = &[
    113, 0, 0, 0, 0, 0, 0, 0, 123, 34, 119, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34, 58, 34,
    70, 51, 50, 34, 44, 34, 115, 104, 97, 112, 101, 34, 58, 91, 50, 44, 50, 93, 44, 34, 100, 97,
    116, 97, 95, 111, 102, 102, 115, 101, 116, 115, 34, 58, 91, 48, 44, 49, 54, 93, 125, 44, 34,
    98, 34, 58, 123, 34, 100, 116, 121, 112, 101, 34, 58, 34, 66, 70, 49, 54, 34, 44, 34, 115, 104,
    97, 112, 101, 34, 58, 91, 50, 93, 44, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115, 101, 116,
    115, 34, 58, 91, 49, 54, 44, 50, 48, 93, 125, 125, 0, 0, 192, 63, 0, 0, 16, 192, 89, 217, 0,
    51, 0, 224, 127, 71, 32, 62, 64, 192,
];

/// Narrower floats widen exactly: every `f32` and `bf16` is an `f64`.
#[test]
fn loads_f32_and_bf16_tensors_exactly() {
    let sd = StateDict::from_safetensors(NARROW_FILE).unwrap();
    let w = sd.get("w").unwrap();
    assert_eq!(w.shape, vec![2, 2]);
    // CPython: [struct.unpack("<f", struct.pack("<f", x))[0] for x in (1.5, -2.25, 3e-8, 65504)]
    assert_eq!(w.data, vec![1.5, -2.25, 2.999999892949745e-08, 65504.0]);
    assert_eq!(sd.get("b").unwrap().data, vec![0.15625, -3.0]);
    // And a one-entry F32 file: 1.5.
    assert_eq!(
        StateDict::from_safetensors(F32_FILE)
            .unwrap()
            .get("w")
            .unwrap()
            .data,
        vec![1.5]
    );
}

#[test]
fn loads_a_safetensors_file_written_by_python() {
    let sd = StateDict::from_safetensors(FROM_PYTHON).unwrap();
    let names: Vec<&str> = sd.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["fc.weight", "fc.bias"]); // the order of the data
    let mut params = Params::new();
    let layer = Linear::new(&mut params, "fc", 3, 2, &mut || 0.0);
    params.load_state_dict(&sd).unwrap();
    assert_eq!(&params[layer.weight()], &[1.0, 2.0, 3.0, -4.0, 1e-300, 0.1]);
    assert_eq!(&params[layer.bias().unwrap()], &[0.5, -0.25]);
    // y = b + W x for x = (1, 1, 1).
    assert_eq!(
        layer.forward_f64(&params.view(), &[1.0, 1.0, 1.0]),
        vec![6.5, -4.25 + 1e-300 + 0.1]
    );
}

#[test]
fn a_load_reports_every_problem_at_once_and_loads_nothing() {
    let sd = StateDict::from_safetensors(FROM_PYTHON).unwrap();
    // A store with a tensor the file lacks, a layer of another shape, and without one of
    // the file's tensors: three problems, one error.
    let mut params = Params::new();
    Linear::without_bias(&mut params, "fc", 2, 3, &mut || 0.0);
    params.zeros("extra", &[1]);
    let err = params.load_state_dict(&sd).unwrap_err();
    assert_eq!(
        err,
        ParamError::Load(vec![
            ParamError::Shape {
                name: "fc.weight".into(),
                expected: vec![3, 2],
                found: vec![2, 3]
            },
            ParamError::Missing {
                name: "extra".into()
            },
            ParamError::Unexpected {
                name: "fc.bias".into()
            },
        ])
    );
    assert_eq!(
        err.to_string(),
        "tapegrad::nn: the state dict does not fit (3 problems; nothing was loaded):\n  \
         tensor \"fc.weight\" has shape [2, 3], expected [3, 2]\n  \
         tensor \"extra\" is missing\n  \
         tensor \"fc.bias\" is not a tensor of this store"
    );
    assert!(
        params.as_slice().iter().all(|&x| x == 0.0),
        "nothing was loaded"
    );
    // A tensor of a dtype with no exact f64 reading (CPython: {"w": {"dtype": "I64", ...}}
    // and 3 as "<q").
    let err = StateDict::from_safetensors(I64_FILE).unwrap_err();
    assert_eq!(
        err,
        ParamError::Dtype {
            name: "w".into(),
            found: "I64".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "tapegrad::nn: tensor \"w\" has dtype I64, expected F64, F32, F16 or BF16"
    );
}

/// PyTorch's `load_state_dict(sd, strict=False)`: what fits is loaded, what does not is
/// returned by name; a shape that differs is still an error (PyTorch's too).
#[test]
fn a_non_strict_load_returns_what_it_skipped() {
    let sd = StateDict::from_safetensors(FROM_PYTHON).unwrap();
    let mut params = Params::new();
    let layer = Linear::without_bias(&mut params, "fc", 3, 2, &mut || 0.0);
    let head = params.full("head", &[2], 7.0);
    let report = params.load_state_dict_non_strict(&sd).unwrap();
    assert_eq!(
        report,
        LoadReport {
            missing: vec!["head".into()],
            unexpected: vec!["fc.bias".into()]
        }
    );
    assert_eq!(&params[layer.weight()], &[1.0, 2.0, 3.0, -4.0, 1e-300, 0.1]);
    assert_eq!(
        &params[head],
        &[7.0, 7.0],
        "a missing tensor keeps its values"
    );
    // Shapes that differ: an error naming each, nothing loaded.
    let mut other = Params::new();
    Linear::new(&mut other, "fc", 2, 3, &mut || 0.0);
    let err = other.load_state_dict_non_strict(&sd).unwrap_err();
    let ParamError::Load(problems) = &err else {
        panic!("{err}")
    };
    let names: Vec<&str> = problems
        .iter()
        .map(|p| match p {
            ParamError::Shape { name, .. } => name.as_str(),
            _ => panic!("{p:?}"),
        })
        .collect();
    assert_eq!(names, ["fc.weight", "fc.bias"]);
    assert!(other.as_slice().iter().all(|&x| x == 0.0));
}

/// `nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))` saved as safetensors in F32
/// (PyTorch's default), its tensors named `0.weight`, `0.bias`, `2.weight`, `2.bias`:
/// written by CPython 3.11 with `struct` and `json`, weights
/// `[[0.5, -1.25], [0.1, 2.0], [-0.75, 0.3]]`, biases `[0.25, -0.5, 1.0]`, then
/// `[[1.5, -2.0, 0.7]]` and `[-0.125]`, each `struct.pack("<f", x)`.
const SEQUENTIAL_F32: &[u8] = &[
    59, 1, 0, 0, 0, 0, 0, 0, 123, 34, 95, 95, 109, 101, 116, 97, 100, 97, 116, 97, 95, 95, 34, 58,
    32, 123, 34, 102, 111, 114, 109, 97, 116, 34, 58, 32, 34, 112, 116, 34, 125, 44, 32, 34, 48,
    46, 119, 101, 105, 103, 104, 116, 34, 58, 32, 123, 34, 100, 116, 121, 112, 101, 34, 58, 32, 34,
    70, 51, 50, 34, 44, 32, 34, 115, 104, 97, 112, 101, 34, 58, 32, 91, 51, 44, 32, 50, 93, 44, 32,
    34, 100, 97, 116, 97, 95, 111, 102, 102, 115, 101, 116, 115, 34, 58, 32, 91, 48, 44, 32, 50,
    52, 93, 125, 44, 32, 34, 48, 46, 98, 105, 97, 115, 34, 58, 32, 123, 34, 100, 116, 121, 112,
    101, 34, 58, 32, 34, 70, 51, 50, 34, 44, 32, 34, 115, 104, 97, 112, 101, 34, 58, 32, 91, 51,
    93, 44, 32, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115, 101, 116, 115, 34, 58, 32, 91, 50,
    52, 44, 32, 51, 54, 93, 125, 44, 32, 34, 50, 46, 119, 101, 105, 103, 104, 116, 34, 58, 32, 123,
    34, 100, 116, 121, 112, 101, 34, 58, 32, 34, 70, 51, 50, 34, 44, 32, 34, 115, 104, 97, 112,
    101, 34, 58, 32, 91, 49, 44, 32, 51, 93, 44, 32, 34, 100, 97, 116, 97, 95, 111, 102, 102, 115,
    101, 116, 115, 34, 58, 32, 91, 51, 54, 44, 32, 52, 56, 93, 125, 44, 32, 34, 50, 46, 98, 105,
    97, 115, 34, 58, 32, 123, 34, 100, 116, 121, 112, 101, 34, 58, 32, 34, 70, 51, 50, 34, 44, 32,
    34, 115, 104, 97, 112, 101, 34, 58, 32, 91, 49, 93, 44, 32, 34, 100, 97, 116, 97, 95, 111, 102,
    102, 115, 101, 116, 115, 34, 58, 32, 91, 52, 56, 44, 32, 53, 50, 93, 125, 125, 0, 0, 0, 63, 0,
    0, 160, 191, 205, 204, 204, 61, 0, 0, 0, 64, 0, 0, 64, 191, 154, 153, 153, 62, 0, 0, 128, 62,
    0, 0, 0, 191, 0, 0, 128, 63, 0, 0, 192, 63, 0, 0, 0, 192, 51, 51, 51, 63, 0, 0, 0, 190,
];

#[test]
fn a_pytorch_sequential_loads_into_an_mlp() {
    let torch = StateDict::from_safetensors(SEQUENTIAL_F32).unwrap();
    let mut params = Params::new();
    let mlp = Mlp::new(&mut params, "mlp", &[2, 3, 1], &mut || 0.0);
    // As saved, the names are the Sequential's: a strict load names every mismatch.
    let err = params.load_state_dict(&torch).unwrap_err();
    assert!(
        err.to_string()
            .contains("tensor \"2.weight\" is not a tensor"),
        "{err}"
    );
    params.load_state_dict(&mlp.map_sequential(&torch)).unwrap();
    let first = mlp.layers()[0].weight();
    assert_eq!(params.name(first), "mlp.0.weight");
    // 0.1 as an f32, widened exactly.
    assert_eq!(params[first][2], 0.10000000149011612);
    // CPython: the same network in micrograd's order of summation on the f32 values at
    // x = (0.6, -0.4): hidden [1.05, 0.0, 0.42999999523162846], output below.
    assert_eq!(
        mlp.forward_f64(&params.view(), &[0.6, -0.4]),
        vec![1.7509999915361407]
    );
    // Held as an attribute (`self.net = nn.Sequential(...)`): its names have a prefix.
    let prefixed = torch.map_names(|name| format!("net.{name}"));
    params.zeros("other", &[1]);
    let report = params
        .load_state_dict_non_strict(&mlp.map_sequential(&prefixed.prefixed("net.")))
        .unwrap();
    assert_eq!(report.missing, ["other"]);
    assert!(report.unexpected.is_empty());
}

/// Half precision (`F16`) written by CPython 3.11 (`struct.pack("<H", bits)` for each of
/// the bit patterns below, framed as safetensors by `struct` and `json`).
const F16_FILE: &[u8] = &[
    63, 0, 0, 0, 0, 0, 0, 0, 123, 34, 104, 34, 58, 32, 123, 34, 100, 116, 121, 112, 101, 34, 58,
    32, 34, 70, 49, 54, 34, 44, 32, 34, 115, 104, 97, 112, 101, 34, 58, 32, 91, 49, 52, 93, 44, 32,
    34, 100, 97, 116, 97, 95, 111, 102, 102, 115, 101, 116, 115, 34, 58, 32, 91, 48, 44, 32, 50,
    56, 93, 125, 125, 0, 0, 0, 128, 0, 60, 0, 192, 255, 123, 0, 4, 1, 0, 3, 128, 255, 3, 0, 124, 0,
    252, 0, 126, 85, 53, 102, 46,
];

/// Every half is an `f64`: read exactly, subnormals, signed zeros and infinities included.
/// The expected values are CPython's own reading of each pattern,
/// `struct.unpack("<e", struct.pack("<H", bits))[0].hex()`.
#[test]
fn loads_f16_tensors_exactly() {
    let sd = StateDict::from_safetensors(F16_FILE).unwrap();
    let h = &sd.get("h").unwrap().data;
    let want: [(u16, f64); 14] = [
        (0x0000, 0.0),
        (0x8000, -0.0),
        (0x3c00, 1.0),
        (0xc000, -2.0),
        (0x7bff, 65504.0),                 // the largest half, 0x1.ffcp+15
        (0x0400, 2f64.powi(-14)),          // the smallest normal
        (0x0001, 2f64.powi(-24)),          // the smallest subnormal
        (0x8003, -3.0 * 2f64.powi(-24)),   // -0x1.8p-23
        (0x03ff, 1023.0 * 2f64.powi(-24)), // the largest subnormal, 0x1.ff8p-15
        (0x7c00, f64::INFINITY),
        (0xfc00, f64::NEG_INFINITY),
        (0x7e00, f64::NAN),
        (0x3555, 0.333251953125),  // 1/3 in half precision, 0x1.554p-2
        (0x2e66, 0.0999755859375), // 0.1 in half precision, 0x1.998p-4
    ];
    assert_eq!(h.len(), want.len());
    for (&got, (bits, value)) in h.iter().zip(want) {
        if value.is_nan() {
            assert!(got.is_nan(), "{bits:#06x}: {got}");
        } else {
            assert_eq!(
                got.to_bits(),
                value.to_bits(),
                "{bits:#06x}: {got} vs {value}"
            );
        }
    }
}

#[test]
fn file_errors_name_the_path() {
    let dir = std::env::temp_dir().join(format!("tapegrad-state-dicts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A file that is not safetensors.
    let bad = dir.join("not-a-model.safetensors");
    std::fs::write(&bad, b"hello").unwrap();
    let err = StateDict::load_safetensors(&bad).unwrap_err();
    let ParamError::File { path, error } = &err else {
        panic!("{err}")
    };
    assert_eq!(path, &bad);
    assert!(matches!(**error, ParamError::Format(_)), "{error}");
    assert_eq!(
        err.to_string(),
        format!(
            "tapegrad::nn: {}: not a valid file: shorter than the 8-byte header length",
            bad.display()
        )
    );
    // A file that is not there.
    let missing = dir.join("no-such-file.safetensors");
    let err = StateDict::load_safetensors(&missing).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "tapegrad::nn: {}: cannot read: ",
            missing.display()
        )),
        "{text}"
    );
    // A tensor of a dtype it cannot read, in a file: both named.
    let ints = dir.join("ints.safetensors");
    std::fs::write(&ints, I64_FILE).unwrap();
    let text = StateDict::load_safetensors(&ints).unwrap_err().to_string();
    assert!(text.contains(&ints.display().to_string()) && text.contains("\"w\" has dtype I64"));
    // A file that cannot be written (its directory does not exist).
    let nowhere = dir.join("no-such-dir").join("x.safetensors");
    let err = StateDict::new().save_safetensors(&nowhere).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "tapegrad::nn: {}: cannot write: ",
            nowhere.display()
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_files_are_refused() {
    let mut good = StateDict::new();
    good.push("a", &[2], vec![1.0, 2.0]);
    good.push("b", &[1], vec![3.0]);
    let bytes = good.to_safetensors();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // Truncated data, a header longer than the file, a header that is not JSON.
    assert!(StateDict::from_safetensors(&bytes[..bytes.len() - 8]).is_err());
    let mut long = bytes.clone();
    long[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    assert!(StateDict::from_safetensors(&long).is_err());
    let mut garbled = bytes.clone();
    garbled[8] = b'[';
    assert!(StateDict::from_safetensors(&garbled).is_err());
    // Offsets that overlap: b's data starting inside a's.
    let header = String::from_utf8(bytes[8..8 + len].to_vec()).unwrap();
    let overlapping = header.replace("[16,24]", "[8,16]");
    assert_ne!(overlapping, header);
    let mut bad = (overlapping.len() as u64).to_le_bytes().to_vec();
    bad.extend_from_slice(overlapping.as_bytes());
    bad.extend_from_slice(&bytes[8 + len..]);
    let err = StateDict::from_safetensors(&bad).unwrap_err();
    assert!(err.to_string().contains("tile the data"), "{err}");
}

#[test]
fn json_state_dicts_round_trip_and_refuse_non_finite_values() {
    let mut params = Params::new();
    params.add("w", &[2], vec![0.1 + 0.2, -3e-310]);
    let text = params.state_dict().to_json().unwrap();
    let back = StateDict::from_json(&text).unwrap();
    assert_eq!(back, params.state_dict());
    params.add("bad", &[1], vec![f64::NAN]);
    let err = params.state_dict().to_json().unwrap_err();
    assert!(err.to_string().contains("\"bad\""), "{err}");
}
