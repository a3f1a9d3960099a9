//! The tool against recorded GradBench exchanges (`tests/fixtures/*.jsonl`, made by
//! `tests/fixtures/make.py`): each eval's messages are sent to the release binary on
//! stdin, and every response is checked as GradBench's intermediary and checker would:
//! its `id`, `define`'s success, and each `evaluate`'s output against the `manual` tool's
//! (GradBench's reference implementation) to GradBench's tolerance, `|a - b| / max(1, |a| +
//! |b|) <= 1e-4`, with the same JSON shape, and one `evaluate` timing per run. Each
//! fixture is run with the default strategy (replays interpreted) and with `--jit` (the
//! replays compiled): both to the checker's tolerance, and the compiled outputs equal to
//! the interpreted ones exactly.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// GradBench's `compare_json_objects` (`python/gradbench/gradbench/comparison.py`): the
/// mismatches between the reference `expected` and `actual`, each with its path.
fn mismatches(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        // Integers and floats compare as numbers (the checker's "fudge"), exactly when
        // both are integers.
        (Value::Number(e), Value::Number(a)) => match (e.as_i64(), a.as_i64()) {
            (Some(e), Some(a)) => {
                if e != a {
                    out.push(format!("{path}: {e} != {a}"));
                }
            }
            _ => {
                let (e, a) = (e.as_f64().unwrap(), a.as_f64().unwrap());
                let difference = (e - a).abs() / (e.abs() + a.abs()).max(1.0);
                if difference > 1e-4 {
                    out.push(format!("{path}: {e} != {a}"));
                }
            }
        },
        (Value::Object(e), Value::Object(a)) => {
            for key in e.keys().chain(a.keys().filter(|k| !e.contains_key(*k))) {
                match (e.get(key), a.get(key)) {
                    (Some(ev), Some(av)) => mismatches(ev, av, &format!("{path}.{key}"), out),
                    (None, _) => out.push(format!("unexpected key {path}.{key}")),
                    (_, None) => out.push(format!("key {path}.{key} is missing")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                out.push(format!(
                    "{path}: expected {} entries, got {}",
                    e.len(),
                    a.len()
                ));
            } else {
                for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                    mismatches(ev, av, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ if expected == actual => {}
        _ => out.push(format!("{path}: expected {expected}, got {actual}")),
    }
}

/// The tool's responses to `messages`, one per message, in order, run with `flags`.
fn run_tool(messages: &[Value], flags: &[&str]) -> Vec<Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tapegrad-gradbench"))
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the tool starts");
    let mut stdin = child.stdin.take().unwrap();
    let input: String = messages.iter().map(|m| format!("{m}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("the tool runs");
    writer
        .join()
        .unwrap()
        .expect("the tool reads every message");
    assert!(
        output.status.success(),
        "the tool exited with {}",
        output.status
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each response is one line of JSON"))
        .collect()
}

/// Replays the fixture `name` to the tool run with `flags` and checks every response
/// against the recorded one; returns the responses.
fn replay(name: &str, flags: &[&str]) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<Value> = lines
        .iter()
        .filter_map(|l| l.get("message").cloned())
        .collect();
    let recorded: Vec<Value> = lines
        .iter()
        .filter_map(|l| l.get("response").cloned())
        .collect();
    assert_eq!(
        messages.len(),
        recorded.len(),
        "{name}: one recorded response per message"
    );
    let responses = run_tool(&messages, flags);
    assert_eq!(
        responses.len(),
        messages.len(),
        "{name}: one response per message"
    );
    let mut evaluations = 0;
    for ((message, expected), response) in messages.iter().zip(&recorded).zip(&responses) {
        let id = &message["id"];
        assert_eq!(&response["id"], id, "{name}: the response's id");
        match message["kind"].as_str().unwrap() {
            "start" => assert_eq!(response["tool"], "tapegrad", "{name}: start names the tool"),
            "define" => assert_eq!(response["success"], expected["success"], "{name}: define"),
            "evaluate" => {
                let what = format!(
                    "{name} {} ({})",
                    message["function"], message["description"]
                );
                assert_eq!(response["success"], true, "{what}: {}", response["error"]);
                let mut found = Vec::new();
                mismatches(
                    &expected["output"],
                    &response["output"],
                    "output",
                    &mut found,
                );
                assert!(
                    found.is_empty(),
                    "{what}: {} mismatches with manual: {found:#?}",
                    found.len()
                );
                let timings = response["timings"].as_array().expect("timings");
                let runs = timings.iter().filter(|t| t["name"] == "evaluate").count();
                let min_runs = message["input"]
                    .get("min_runs")
                    .map_or(1, |r| r.as_u64().unwrap());
                assert!(
                    runs as u64 >= min_runs,
                    "{what}: {runs} evaluate timings for min_runs {min_runs}"
                );
                assert!(
                    timings.iter().all(|t| ["evaluate", "prepare"]
                        .contains(&t["name"].as_str().unwrap())
                        && t["nanoseconds"].is_u64()),
                    "{what}: timings {timings:?}"
                );
                evaluations += 1;
            }
            // analysis, and any other kind: the id alone.
            _ => assert_eq!(
                response,
                &serde_json::json!({ "id": id }),
                "{name}: acknowledgement"
            ),
        }
    }
    assert!(evaluations > 0, "{name}: the exchange evaluates something");
    responses
}

macro_rules! exchanges {
    ($($name:ident)*) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name), &[]);
            }
        )*
    };
}

exchanges!(hello llsq lse det ode gmm ba ht lstm kmeans particle saddle);

/// Each fixture of an eval that replays, with `--jit`: every output to the checker's tolerance, and each output
/// equal to the interpreted replay's, bit for bit (the compiled code's promise), in the
/// JSON the tool writes (shortest round-trip decimals, so equal text is equal `f64`s).
macro_rules! compiled_exchanges {
    ($($test:ident: $name:ident)*) => {
        $(
            #[test]
            fn $test() {
                let name = stringify!($name);
                let compiled = replay(name, &["--jit"]);
                let interpreted = replay(name, &[]);
                for (c, i) in compiled.iter().zip(&interpreted) {
                    assert_eq!(c.get("output"), i.get("output"), "{name}: response {}", c["id"]);
                }
            }
        )*
    };
}

compiled_exchanges!(
    compiled_llsq: llsq
    compiled_lse: lse
    compiled_det: det
    compiled_ode: ode
    compiled_gmm: gmm
    compiled_ba: ba
    compiled_lstm: lstm
);

/// The checker's rule itself: what it accepts and what it does not.
#[test]
fn tolerance_is_gradbench_s() {
    let check = |e: Value, a: Value| {
        let mut found = Vec::new();
        mismatches(&e, &a, "", &mut found);
        found.len()
    };
    use serde_json::json;
    assert_eq!(check(json!(1.0), json!(1.00009)), 0); // 0.00009 / max(1, 2.00009)
    assert_eq!(check(json!(1.0), json!(1.0003)), 1);
    assert_eq!(check(json!(1e-9), json!(5e-5)), 0); // near 0 the tolerance is absolute
    assert_eq!(check(json!(1000.0), json!(1000.1)), 0); // relative to |a| + |b|
    assert_eq!(check(json!(1000.0), json!(1000.3)), 1);
    assert_eq!(check(json!(3), json!(3.0)), 0); // an integer and a float compare as numbers
    assert_eq!(check(json!(3), json!(4)), 1);
    assert_eq!(check(json!([1.0, 2.0]), json!([1.0])), 1); // shapes must match exactly
    assert_eq!(check(json!({"a": 1.0}), json!({"a": 1.0, "b": 2.0})), 1);
    assert_eq!(check(json!([1.0]), json!(1.0)), 1);
    assert_eq!(check(json!(1.0), json!(null)), 1); // NaN is written as null
}

/// Messages that are not what an eval sends get a failed response naming the problem;
/// the tool keeps answering.
#[test]
fn bad_messages_get_errors() {
    use serde_json::json;
    let responses = run_tool(
        &[
            json!({"id": 0, "kind": "define", "module": "fft"}),
            json!({"id": 1, "kind": "evaluate", "module": "lse", "function": "hessian", "input": {"x": [1.0]}}),
            json!({"id": 2, "kind": "evaluate", "module": "det", "function": "gradient",
               "input": {"A": [1.0, 2.0, 3.0], "ell": 2}}),
            json!({"id": 3, "kind": "evaluate", "module": "gmm", "function": "jacobian", "input": {"d": 2}}),
            json!({"id": 4, "kind": "evaluate", "module": "lse", "function": "gradient",
               "input": {"x": [0.0, 0.0], "min_runs": 0}}),
            json!({"id": 5, "kind": "evaluate", "module": "lse", "function": "gradient", "input": {"x": [0.0, 0.0]}}),
        ],
        &[],
    );
    let error = |i: usize| {
        assert_eq!(
            responses[i]["success"], false,
            "response {i}: {}",
            responses[i]
        );
        responses[i]["error"].as_str().unwrap().to_string()
    };
    assert!(error(0).contains("fft"));
    assert!(error(1).contains("hessian"));
    assert!(
        error(2).contains("A has 3 numbers, expected 4"),
        "{}",
        error(2)
    );
    assert!(error(3).contains("missing field"), "{}", error(3));
    assert!(error(4).contains("min_runs"), "{}", error(4));
    assert_eq!(responses[5]["output"], json!([0.5, 0.5]));
}
