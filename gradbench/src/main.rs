//! The GradBench tool: reads the eval's messages from stdin, one JSON object per line, and
//! writes one response per message to stdout.
//!
//! `tapegrad-gradbench` records a function once and replays it where the function allows
//! (see `Strategy`); `tapegrad-gradbench --record-every-run` records every run instead,
//! and `tapegrad-gradbench --jit` compiles each recording it replays to native code
//! (`tapegrad_jit::Compiled`).

use std::io::{self, BufWriter};
use std::process::ExitCode;

use tapegrad_gradbench::evals::Strategy;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let strategy = match args.as_slice() {
        [] => Strategy::Replay,
        [flag] if flag == "--record-every-run" => Strategy::Record,
        [flag] if flag == "--jit" => Strategy::Compiled,
        _ => {
            eprintln!(
                "usage: tapegrad-gradbench [--record-every-run | --jit] (got {args:?}): it speaks \
                 GradBench's protocol on stdin and stdout; run it through GradBench's \
                 `gradbench run --tool`"
            );
            return ExitCode::FAILURE;
        }
    };
    let stdin = io::stdin().lock();
    let stdout = BufWriter::new(io::stdout().lock());
    match tapegrad_gradbench::protocol::serve(stdin, stdout, strategy) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tapegrad-gradbench: {e}");
            ExitCode::FAILURE
        }
    }
}
