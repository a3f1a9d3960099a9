#!/bin/sh
# Instructions per gradient call (valgrind's callgrind), record-once against re-recording:
# `./replay_instructions.sh` in benches/peers. Each engine runs CALLS and 2 x CALLS
# gradients; the difference divided by CALLS is the cost of one call, without the one-off
# recording (and process start) that the record-once engines pay before their loop.
set -e
cd "$(dirname "$0")"
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/tapegrad-peers"
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --profile "$1" "$2" "$3" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for spec in "w2 2" "w3 10" "w4 200"; do
  set -- $spec
  for engine in f64 tapegrad replay echidna bytecode; do
    one=$(count "$engine" "$1" "$2")
    two=$(count "$engine" "$1" "$(($2 * 2))")
    echo "$1 $engine: $(( (two - one) / $2 )) instructions per gradient"
  done
done
