//! GradBench's protocol (its CONTRIBUTING.md, section Protocol): one response per message,
//! with the message's `id`. `define` says whether the module is known, `evaluate` runs
//! the function and reports its output and timings; every other kind (`start`,
//! `analysis`, ...) is acknowledged with the `id` alone (`start` also names the tool).

use std::io::{self, BufRead, Write};
use std::panic::{self, AssertUnwindSafe};

use serde_json::{Value, json};

use crate::evals::{self, Strategy};

/// The tool's name in the `start` response.
pub const TOOL: &str = "tapegrad";

/// The response to one message of the eval.
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use tapegrad_gradbench::protocol::respond;
///
/// let r = respond(&json!({"id": 7, "kind": "define", "module": "nope"}));
/// assert_eq!(r["success"], json!(false));
/// assert_eq!(respond(&json!({"id": 8, "kind": "analysis", "of": 7, "valid": true})),
///            json!({"id": 8}));
/// ```
pub fn respond(message: &Value) -> Value {
    respond_with(message, Strategy::default())
}

/// [`respond`], evaluating with the given [`Strategy`].
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use tapegrad_gradbench::{evals::Strategy, protocol::respond_with};
///
/// let m = json!({"id": 3, "kind": "evaluate", "module": "llsq", "function": "gradient",
///                "input": {"x": [0.0], "n": 3, "min_runs": 1, "min_seconds": 0}});
/// let r = respond_with(&m, Strategy::Record);
/// assert_eq!(r["output"], json!([-0.0])); // residuals 1, 0, -1 against the constant 0
/// assert_eq!(r["timings"].as_array().unwrap().len(), 1);
/// ```
pub fn respond_with(message: &Value, strategy: Strategy) -> Value {
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let text = |key: &str| message.get(key).and_then(Value::as_str);
    match text("kind") {
        Some("start") => json!({ "id": id, "tool": TOOL }),
        Some("define") => match text("module") {
            Some(module) if evals::MODULES.contains(&module) => {
                json!({ "id": id, "success": true })
            }
            Some(module) => json!({
                "id": id,
                "success": false,
                "error": format!("tapegrad has no implementation of the module {module:?}"),
            }),
            None => json!({ "id": id, "success": false, "error": "define without a module name" }),
        },
        Some("evaluate") => {
            let (Some(module), Some(function)) = (text("module"), text("function")) else {
                return json!({
                    "id": id,
                    "success": false,
                    "error": "evaluate needs a module and a function name",
                });
            };
            let input = message.get("input").unwrap_or(&Value::Null);
            // An eval's input reaching a panic (a bug, or an input the checks missed) is
            // reported as a failed evaluation, not a dead tool.
            let result = panic::catch_unwind(AssertUnwindSafe(|| {
                evals::evaluate_with(module, function, input, strategy)
            }))
            .unwrap_or_else(|payload| {
                let why = payload
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| payload.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic without a message");
                Err(format!("{module}::{function} panicked: {why}"))
            });
            match result {
                Ok(evaluation) => json!({
                    "id": id,
                    "success": true,
                    "output": evaluation.output,
                    "timings": evaluation.timings,
                }),
                Err(error) => json!({ "id": id, "success": false, "error": error }),
            }
        }
        _ => json!({ "id": id }),
    }
}

/// Answers every message read from `input`, one JSON line each, on `output`, until the end
/// of `input`, evaluating with `strategy`.
///
/// # Errors
///
/// An I/O error reading or writing, or a line that is not a JSON object (there is no `id`
/// to answer it with).
///
/// # Examples
///
/// ```
/// let messages = b"{\"id\": 0, \"kind\": \"start\"}\n{\"id\": 1, \"kind\": \"define\", \"module\": \"lse\"}\n";
/// let mut out = Vec::new();
/// use tapegrad_gradbench::{evals::Strategy, protocol::serve};
/// serve(&messages[..], &mut out, Strategy::Replay).unwrap();
/// assert_eq!(String::from_utf8(out).unwrap(),
///            "{\"id\":0,\"tool\":\"tapegrad\"}\n{\"id\":1,\"success\":true}\n");
/// ```
pub fn serve(input: impl BufRead, mut output: impl Write, strategy: Strategy) -> io::Result<()> {
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let message: Value = serde_json::from_str(&line).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a message that is not JSON ({e}): {line:.200}"),
            )
        })?;
        if !message.is_object() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a message that is not a JSON object: {line:.200}"),
            ));
        }
        serde_json::to_writer(&mut output, &respond_with(&message, strategy))?;
        output.write_all(b"\n")?;
        output.flush()?;
    }
    Ok(())
}
