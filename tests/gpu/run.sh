#!/usr/bin/env bash
# tests/gpu/run.sh — the one command for a GPU machine (TESTING.md "GPU checks"): builds with CUDA, checks
# every backend op on the GPU against the CPU reference, and prints the kernel timings against the
# card's measured ceilings. Run from anywhere; exits non-zero if any op fails its check.
# Record the output in bench/RESULTS.md with the card's name.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/local/cuda/bin:$PATH
BUILD=${RL_GPU_BUILD:-build-gpu}
SETUP_LOG=${TMPDIR:-/tmp}/radlads-gpu-setup.log
# RL_GPU_PREBUILT=1: $BUILD already holds the four programs (tests/gpu/prebuilt.sh: a GPU machine without the
# build's libraries); RL_PYTHON: the interpreter for the end-to-end script; RL_GPU_T_*: each part's time limit.
PY=${RL_PYTHON:-/usr/bin/python3}
[ -x "$PY" ] || PY=python3
PROGS="tests/gpu/gpu_ops_check tests/gpu/gpu_bench cli/radlads worker/radlads-worker"

echo "== GPU"
if ! nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; then
  echo "run.sh: nvidia-smi failed: no usable GPU here; the check below will say SKIP" >&2
fi

if [ "${RL_GPU_PREBUILT:-0}" = 1 ]; then
  echo "== prebuilt programs in $BUILD (not building)"
  for p in $PROGS; do
    [ -x "$BUILD/$p" ] || { echo "run.sh: FAIL: RL_GPU_PREBUILT=1 but $BUILD/$p is missing" >&2; exit 1; }
  done
else
  echo "== build ($BUILD, -Dcuda=enabled)"
  if ! command -v meson >/dev/null || ! command -v ninja >/dev/null; then
    scripts/install-deps.sh || { echo "run.sh: FAIL: installing the build dependencies failed" >&2; exit 1; }
  fi
  if [ -d "$BUILD" ]; then
    meson setup --reconfigure "$BUILD" -Dcuda=enabled >"$SETUP_LOG" 2>&1
  else
    meson setup "$BUILD" -Dcuda=enabled >"$SETUP_LOG" 2>&1
  fi
  if [ $? -ne 0 ]; then
    # a machine with meson but without every library the project configures against
    scripts/install-deps.sh && meson setup --wipe "$BUILD" -Dcuda=enabled >"$SETUP_LOG" 2>&1 ||
      { tail -30 "$SETUP_LOG"; echo "run.sh: FAIL: meson setup" >&2; exit 1; }
  fi
  ninja -C "$BUILD" $PROGS || { echo "run.sh: FAIL: build" >&2; exit 1; }
fi

# each part's wall time (the device is lent by the minute: sizes the next run)
t_part=$SECONDS
took() { echo "   ($1 took $((SECONDS - t_part)) s)"; t_part=$SECONDS; }
took "set-up"
echo "== every op: CUDA vs CPU"
timeout "${RL_GPU_T_CHECK:-300}" "$BUILD/tests/gpu/gpu_ops_check"
check_rc=$?
case $check_rc in
  0) check_msg="all ops PASS" ;;
  77) check_msg="SKIPPED (no GPU)" ;;
  *) check_msg="FAILED (rc $check_rc): see the FAIL lines above" ;;
esac

# The other kernels the launcher can pick (benchmark knobs): every wkv at head sizes 64 and 128 on the chunked
# tensor-core kernels and attention on the tensor cores (by default only the wkv6 backward is chunked: the one the H100
# measured faster), the chunked kernels with 128 threads per block instead of 256, and every wkv on the per-row
# kernels: the N-thread backward with 16-token segments, the four-threads-per-row one with 4-token segments, and
# that one writing every segment's state history instead of stepping the state back; at head size 64 the backward
# with the state in registers (G's rows in shared memory, reading the forward's sa or not, or both copies of G in
# registers; with two or four threads per index) and the forward with one thread per row or four (the launcher picks by the number of (b, h) pairs: the
# check's shapes have few), the forwards and backwards staging their tokens synchronously instead of with cp.async;
# at head sizes 64 and 128 the register backward with each pair's value rows split over 2 or 4 blocks (4 is the
# default at 128 where it fits: the check's shapes; with 4, the forward with four threads per row at 128 too); the
# knob sets that pick another backward turn the split off (RADLADS_WKV_SPLIT=0); the forward with each pair's rows
# split over 2 or 4 blocks (RADLADS_WKV_SPLIT_FWD; by default 4 at head size 128 with few pairs: the check's
# shapes) rides on two of the sets; and every op as on a
# GPU that grants a block 99 KiB of shared memory (sm_86 / sm_89: RADLADS_TEST_SMEM_OPTIN=101376), where the
# backward at head size 128 cannot take the four-threads-per-row kernel (118.5 KiB) nor the chunked ones (the
# split 4 backward, 90 KiB, still runs where it fits: the check's shapes).
if [ $check_rc -eq 0 ]; then
  for knobs in "RADLADS_WKV_CHUNKED=1 RADLADS_ATTN_TC=1" "RADLADS_WKV_CHUNKED=1 RADLADS_WKV_THREADS=128" \
               "RADLADS_WKV_CHUNKED=0 RADLADS_WKV_WIDE=0 RADLADS_WKV_BSEG=16 RADLADS_WKV_SPLIT=0" \
               "RADLADS_WKV_CHUNKED=0 RADLADS_WKV_WIDE=1 RADLADS_WKV_BSEG=4 RADLADS_WKV_SPLIT=0" \
               "RADLADS_WKV_CHUNKED=0 RADLADS_WKV_BACKSTEP=0 RADLADS_WKV_SPLIT=0" \
               "RADLADS_WKV_CHUNKED=0 RADLADS_WKV_REG=2 RADLADS_WKV_WIDE_FWD=0" \
               "RADLADS_WKV_CHUNKED=0 RADLADS_WKV_WIDE_FWD=0 RADLADS_WKV_ASYNC=0 RADLADS_WKV_SPLIT_FWD=0" \
               "RADLADS_WKV_CHUNKED=0 RADLADS_WKV_REG=2 RADLADS_WKV_SA=0" \
               "RADLADS_WKV_CHUNKED=0 RADLADS_WKV_SA=0 RADLADS_WKV_SPLIT=0" \
               "RADLADS_WKV_CHUNKED=0 RADLADS_WKV_REG=1 RADLADS_WKV_WIDE_FWD=1" "RADLADS_WKV_CHUNKED=0 RADLADS_WKV_REG=0" \
               "RADLADS_WKV_CHUNKED=0 RADLADS_WKV_REG=3 RADLADS_WKV_SPLIT_FWD=4" "RADLADS_WKV_CHUNKED=0 RADLADS_WKV_REG=4" \
               "RADLADS_WKV_CHUNKED=0 RADLADS_WKV_REG=5 RADLADS_WKV_ASYNC=0" \
               "RADLADS_WKV_CHUNKED=0 RADLADS_WKV_SPLIT=2 RADLADS_WKV_SPLIT_FWD=2" \
               "RADLADS_WKV_CHUNKED=0 RADLADS_WKV_SPLIT=4 RADLADS_WKV_WIDE_FWD=1 RADLADS_WKV_SPLIT_FWD=0" \
               "RADLADS_TEST_SMEM_OPTIN=101376" "RADLADS_TEST_SMEM_OPTIN=101376 RADLADS_WKV_SPLIT=0"; do
    echo "== every op again with $knobs"
    env $knobs timeout "${RL_GPU_T_CHECK:-300}" "$BUILD/tests/gpu/gpu_ops_check" | grep -E "FAIL|passed"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { check_rc=$rc; check_msg="FAILED with $knobs (rc $rc): see the FAIL lines above"; }
  done
fi

took "the ops checks"
echo "== kernel timings"
bench_rc=0
if [ $check_rc -ne 77 ]; then
  timeout "${RL_GPU_T_BENCH:-270}" "$BUILD/tests/gpu/gpu_bench"
  bench_rc=$?
  echo "== the peers, same machine, same run: every wkv on the chunked tensor-core kernels (RADLADS_WKV_CHUNKED=1),"
  echo "   with 128 threads per block (+ RADLADS_WKV_THREADS=128), every wkv on the per-row kernels"
  echo "   (RADLADS_WKV_CHUNKED=0), attention forward and backward on the tensor cores (RADLADS_ATTN_TC=1)"
  RADLADS_WKV_CHUNKED=1 timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv | grep -E "wkv"
  echo "-- RADLADS_WKV_CHUNKED=1 RADLADS_WKV_THREADS=128"
  RADLADS_WKV_CHUNKED=1 RADLADS_WKV_THREADS=128 timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv | grep -E "wkv"
  echo "-- RADLADS_WKV_CHUNKED=0"
  RADLADS_WKV_CHUNKED=0 timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv | grep -E "wkv"
  echo "-- RADLADS_WKV_BACKSTEP=0 (the per-row backward through the state history)"
  RADLADS_WKV_BACKSTEP=0 timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv | grep -E "wkv"
  echo "-- RADLADS_WKV_SA=0 (the wkv7 backwards recomputing every segment, not reading the forward's sa)"
  RADLADS_WKV_SA=0 timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv | grep -E "wkv7_"
  echo "-- RADLADS_WKV_ASYNC=0 (the forwards and backwards staging their tokens synchronously, not with cp.async)"
  RADLADS_WKV_ASYNC=0 timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv | grep -E "wkv"
  echo "-- RADLADS_WKV_REG=1 (head size 64: both copies of G in registers)"
  RADLADS_WKV_REG=1 timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv | grep -E "wkv7_.*N=64"
  echo "-- RADLADS_WKV_REG=2 RADLADS_WKV_WIDE_FWD=0 (head size 64: one thread per row, forward and backward, at"
  echo "   every shape: the launch rule's other side at the 256-pair T=1024 one)"
  RADLADS_WKV_REG=2 RADLADS_WKV_WIDE_FWD=0 timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv | grep -E "wkv7_.*N=64"
  echo "-- RADLADS_WKV_REG=0 RADLADS_WKV_WIDE_FWD=1 (head size 64: four threads per row, forward and backward; the"
  echo "   few-pairs backward before the H200 measured two threads per index faster)"
  RADLADS_WKV_REG=0 RADLADS_WKV_WIDE_FWD=1 timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv | grep -E "wkv7_.*N=64"
  for reg in 3 4 5; do
    echo "-- RADLADS_WKV_REG=$reg (head size 64: the register backward with $([ $reg = 3 ] && echo two || echo four) threads per index,"
    echo "   G's rows in $([ $reg = 5 ] && echo registers || echo "shared memory"); against the default's backward above at both shapes)"
    RADLADS_WKV_REG=$reg timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv | grep -E "wkv7_(backward|fwd\+bwd).*N=64"
  done
  echo "-- wkv7 at the per-GPU shapes of a Qwen2.5-7B conversion (heads of 128, 56 to 336 (b, h) pairs): the default"
  echo "   (each pair's value rows split over 4 blocks where they fit), then unsplit and split over 2 (RADLADS_WKV_SPLIT)"
  timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv7b | grep -E "wkv7_"
  for split in 0 2; do
    echo "-- RADLADS_WKV_SPLIT=$split"
    RADLADS_WKV_SPLIT=$split timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv7b | grep -E "wkv7_(backward|fwd\+bwd)"
  done
  echo "-- RADLADS_WKV_WIDE_FWD=1 RADLADS_WKV_SPLIT_FWD=0 (the forward with four threads per row at head size 128, unsplit)"
  RADLADS_WKV_WIDE_FWD=1 RADLADS_WKV_SPLIT_FWD=0 timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv7b | grep -E "wkv7_forward"
  for split in 0 2 4; do
    echo "-- RADLADS_WKV_SPLIT_FWD=$split (0: never split, the launch rule's other forwards; 2 and 4: four threads per row,"
    echo "   each pair's rows over that many blocks)"
    RADLADS_WKV_SPLIT_FWD=$split timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv7b | grep -E "wkv7_forward"
    RADLADS_WKV_SPLIT_FWD=$split timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv | grep -E "wkv7_forward"
  done
  echo "-- RADLADS_TEST_SMEM_OPTIN=101376 (as on a GPU granting a block 99 KiB: head size 128's backward one thread per"
  echo "   row with 8-token segments where the split does not fit, wkv6's off the chunked kernel)"
  RADLADS_TEST_SMEM_OPTIN=101376 timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv | grep -E "wkv[67]_backward"
  echo "-- wkv6 on RAD-RWKV6's decays (mild as above; 'rad6-init': layer 14 of 28 as converted; 'steep': the clamp's range,"
  echo "   down to e^-5; 'steep-heads': a quarter of the heads steep): the default (the backward by the decays: chunked where its steep groups would slow the per-row one),"
  echo "   then RADLADS_WKV_CHUNKED=0 (the per-row backwards) and RADLADS_WKV_CHUNKED=3 (the chunked one on any decays)"
  timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv6d | grep -E "wkv6_"
  RADLADS_WKV_CHUNKED=0 timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv6d | grep -E "wkv6_(backward|fwd\+bwd)"
  RADLADS_WKV_CHUNKED=3 timeout 120 "$BUILD/tests/gpu/gpu_bench" wkv6d | grep -E "wkv6_(backward|fwd\+bwd)"
  echo "-- RADLADS_ATTN_TC=1"
  RADLADS_ATTN_TC=1 timeout 120 "$BUILD/tests/gpu/gpu_bench" attn | grep -E "attention_"
  echo "-- RADLADS_ATTN_BF16=0 (a bf16 teacher's attention forward on the fp32 kernel)"
  RADLADS_ATTN_BF16=0 timeout 120 "$BUILD/tests/gpu/gpu_bench" attn | grep -E "attention_forward_bf16"
fi

took "the kernel timings"
echo "== end-to-end: a tiny conversion on the GPU against the same run on the CPU"
e2e_rc=77
if [ $check_rc -ne 77 ]; then
  timeout "${RL_GPU_T_E2E:-240}" "$PY" tests/gpu/e2e_gpu_vs_cpu.py "$BUILD"
  e2e_rc=$?
fi

took "the end-to-end run"
echo "== summary ($SECONDS s in all)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
echo "ops check: $check_msg"
[ $check_rc -eq 77 ] || echo "benchmark: $([ $bench_rc -eq 0 ] && echo ok || echo "FAILED (rc $bench_rc)")"
[ $check_rc -eq 77 ] || echo "end-to-end: $([ $e2e_rc -eq 0 ] && echo ok || echo "FAILED (rc $e2e_rc)")"
if [ $check_rc -ne 0 ] && [ $check_rc -ne 77 ]; then
  echo "run.sh: ******** GPU OPS CHECK FAILED ********" >&2
  exit 1
fi
[ $check_rc -eq 77 ] && exit 77
[ $e2e_rc -ne 0 ] && exit 1
exit $bench_rc
