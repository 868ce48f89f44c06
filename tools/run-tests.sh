#!/usr/bin/env bash
# make test: cargo test --no-fail-fast with the given arguments (so every test binary runs
# even when one fails), then one closing line that counts every test binary's results
# together ("tests: N passed, N failed, N skipped").
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --no-fail-fast "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# Vendored crates with their own tests (make test names vendor/minreq: PATCHED.md there).
for manifest in ${GCE_GUEST_VENDORED_TESTS:-}; do
  cargo test --no-fail-fast --locked --manifest-path "$manifest" --lib 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || rc=101
done
# A test's own threads may write to stderr while the harness prints its summary, so the
# counts are found anywhere on a line that has "test result:", not by field position.
# A test binary killed by a signal prints no result line: it counts as one failed test.
awk '/test result:/ && match($0, /[0-9]+ passed; [0-9]+ failed; [0-9]+ ignored/) {
       split(substr($0, RSTART, RLENGTH), n, /[^0-9]+/)
       passed += n[1]; failed += n[2]; ignored += n[3]
     }
     /process didn.t exit successfully: .*\(signal: [0-9]+/ { failed++ }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$log"
exit "$rc"
