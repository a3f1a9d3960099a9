#!/bin/sh
# The crate's unsafe code (native.rs: calling the generated machine code, and the
# trampolines it calls back with pointers into the workspace) under valgrind's memcheck:
# the edge-case tests (threads included) and 300 random programs, every read and write
# checked, generated code and Rust alike. Miri cannot run code generated at run time, and
# the sanitizers need a nightly compiler; valgrind runs the release test binaries as they
# are. `./memcheck.sh` in jit/; fails on any memcheck error.
set -e
cd "$(dirname "$0")/.."
cargo test --release -p tapegrad-jit --no-run --quiet
for test in compiled random_programs; do
  bin=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/"$test"-* | grep -v '\.d$' | head -1)
  PROPTEST_CASES=300 valgrind --error-exitcode=1 --quiet "$bin" --test-threads=1 --skip long_programs
done
echo "memcheck: no errors"
