#!/bin/sh
# Instruction counts (valgrind's callgrind) per recorded node, for decisions that must not
# depend on a noisy shared machine: `./instructions.sh [ENGINE...]` in benches/peers, of the
# default release build; `PROFILE=release-lto ./instructions.sh` for the fat-LTO build.
# Each line: engine, workload, total instructions / (calls * nodes per call).
set -e
cd "$(dirname "$0")"
profile="${PROFILE:-release}"
cargo build --profile "$profile" --quiet
bin="${CARGO_TARGET_DIR:-target}/$profile/tapegrad-peers"
engines="${*:-tapegrad echidna reverse f64}"
for engine in $engines; do
  for spec in "w1c 5 20004" "w1f 5 10002" "w2 3 100001" "w3 5 5226" "w4 50 891"; do
    set -- $spec
    ir=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --profile "$engine" "$1" "$2" 2>&1 |
      sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    echo "$engine $1: $ir instructions, $(echo "$ir / ($2 * $3)" | bc -l | xargs printf "%.1f") per call per tapegrad node"
  done
done
