#!/usr/bin/env bash
# make test: cargo test with the given arguments, then one closing line that counts every
# test binary's results together ("tests: N passed, N failed, N skipped").
set -uo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$log"
exit "$rc"
