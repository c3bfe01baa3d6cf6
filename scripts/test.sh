#!/usr/bin/env bash
# The whole test suite: unit, in-process API, store conformance and
# end-to-end tests (the real binary driven by real kubectl).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo test --workspace --no-fail-fast "$@"
