#!/usr/bin/env bash
# tests/gpu/ncu_wkv.sh [BUILD] — Nsight Compute on the wkv7 kernels that run by default at the ≤ 17 ms target's
# shape (B8 T4096 H64 N64: gpu_bench wkv's first wkv7 case): one launch of the forward and one of the backward,
# with what limits them — speed of light, occupancy, warp stall reasons, the source lines the stalls sample at.
# Prints a short table first (the metrics that decided the last changes), then ncu's own report.
# On a machine without a build: tests/gpu/prebuilt.sh shell DIR 'bash tests/gpu/ncu_wkv.sh $B'.
# RL_NCU_KERNELS: the kernel-name regexes (default: the per-row forward and the register backward).
set -uo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build-gpu}
NCU=${NCU:-$(command -v ncu || echo /usr/local/cuda/bin/ncu)}
[ -x "$NCU" ] || { echo "ncu_wkv.sh: no ncu (Nsight Compute) here: set NCU" >&2; exit 77; }
[ -x "$BUILD/tests/gpu/gpu_bench" ] || { echo "ncu_wkv.sh: no $BUILD/tests/gpu/gpu_bench (build with -Dcuda=enabled)" >&2; exit 1; }
KERNELS=${RL_NCU_KERNELS:-"wkv_forward_kernel wkv_backward_reg_kernel"}
# time, how busy, occupancy, registers, shared-memory wavefronts, L2 and DRAM bytes, local (spill) requests,
# and the average cycles a warp waits on each of the stall reasons that mattered so far
METRICS=gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed
METRICS+=,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.per_cycle_active
METRICS+=,launch__registers_per_thread,launch__occupancy_limit_registers,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum
METRICS+=,lts__t_bytes.sum,dram__bytes.sum,l1tex__t_requests_pipe_lsu_mem_local.sum
for s in barrier short_scoreboard long_scoreboard wait math_pipe_throttle mio_throttle lg_throttle not_selected; do
  METRICS+=,smsp__average_warp_latency_issue_stalled_$s.ratio
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
rc=0
for k in $KERNELS; do
  echo "== $k (first launch at the target shape)"
  # gpu_bench wkv warms each kernel up first: skip nothing, profile one launch (ncu serialises and replays it)
  # the CSV (after gpu_bench's own lines): a header row starting "ID", a units row, a row per profiled launch
  if timeout 300 "$NCU" --kernel-name "regex:$k" --launch-count 1 --csv --page raw --metrics "$METRICS" \
       "$BUILD/tests/gpu/gpu_bench" wkv >"$out/$k.csv" 2>"$out/$k.err"; then
    python3 - "$out/$k.csv" <<'PY' || tail -5 "$out/$k.csv"
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
at = next(i for i, r in enumerate(rows) if r and r[0] == "ID")
head, units, vals = rows[at], rows[at + 1], rows[at + 2]
for name, unit, val in zip(head, units, vals):
    if "__" in name or name.startswith("local"):
        print(f"  {name:72s} {val:>16s} {unit}")
PY
  else
    tail -5 "$out/$k.err"; rc=1 # (an unknown metric name on another ncu: the sections below still run)
  fi
  echo "-- $k: sections"
  timeout 300 "$NCU" --kernel-name "regex:$k" --launch-count 1 --section SpeedOfLight --section Occupancy \
    --section WarpStateStats --section LaunchStats --section SourceCounters \
    "$BUILD/tests/gpu/gpu_bench" wkv 2>&1 | grep -v -E "^\s*$|gpu_bench|^(wkv|attention|gemm)" | head -150 || rc=1
done
exit $rc
