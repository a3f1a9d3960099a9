#!/bin/sh
# Instructions per gradient call (valgrind's callgrind): plain f64, the replay, and the
# replay compiled by tapegrad-jit: `./jit_instructions.sh [WORKLOAD...]` in benches/peers
# (default: w1c w1f w2 w3 w4). Each engine runs CALLS and 2 x CALLS gradients; the
# difference divided by CALLS is the cost of one call, without the one-off recording and
# compilation before the loop.
set -e
cd "$(dirname "$0")"
cargo build --release --quiet
bin="${CARGO_TARGET_DIR:-target}/release/tapegrad-peers"
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --profile "$1" "$2" "$3" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
calls() {
  case "$1" in w1c | w1f) echo 20 ;; w2) echo 2 ;; w3) echo 10 ;; w4) echo 200 ;; esac
}
for w in ${@:-w1c w1f w2 w3 w4}; do
  n=$(calls "$w")
  for engine in f64 replay jit; do
    one=$(count "$engine" "$w" "$n")
    two=$(count "$engine" "$w" "$((n * 2))")
    echo "$w $engine: $(((two - one) / n)) instructions per gradient"
  done
done
