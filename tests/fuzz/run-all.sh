#!/usr/bin/env bash
# make test-long: every fuzz target for FUZZ_SECONDS (default 600) each, one after another.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
secs=${FUZZ_SECONDS:-600}
for target in $(sed -n 's/^name = "\(.*\)"/\1/p' tests/fuzz/Cargo.toml | grep -v gce-guest-fuzz); do
  echo "== fuzzing $target for $secs s"
  # Seed inputs kept in the repository (the corpus directory itself is not).
  if [ -d "tests/fuzz/seeds/$target" ]; then
    mkdir -p "tests/fuzz/corpus/$target"
    cp -n "tests/fuzz/seeds/$target"/* "tests/fuzz/corpus/$target/"
  fi
  cargo +nightly fuzz run --fuzz-dir tests/fuzz "$target" -- -max_total_time="$secs" -print_final_stats=1 2>&1 | tail -15
done
