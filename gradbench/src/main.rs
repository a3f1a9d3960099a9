//! The GradBench tool: reads the eval's messages from stdin, one JSON object per line, and
//! writes one response per message to stdout.

use std::io::{self, BufWriter};
use std::process::ExitCode;

fn main() -> ExitCode {
    if let Some(arg) = std::env::args().nth(1) {
        eprintln!(
            "tapegrad-gradbench takes no arguments (got {arg:?}): it speaks GradBench's \
             protocol on stdin and stdout; run it through GradBench's `gradbench run --tool`"
        );
        return ExitCode::FAILURE;
    }
    let stdin = io::stdin().lock();
    let stdout = BufWriter::new(io::stdout().lock());
    match tapegrad_gradbench::protocol::serve(stdin, stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapegrad-gradbench: {e}");
            ExitCode::FAILURE
        }
    }
}
