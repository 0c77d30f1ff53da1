#!/usr/bin/env bash
# tests/gpu/prebuilt.sh — tests/gpu/run.sh on a GPU machine that cannot build the project (no network, none of
# the libraries the build configures against), from programs built on this machine.
#
#   tests/gpu/prebuilt.sh pack DIR     here: builds the four programs run.sh runs (build dir $RL_BUILD, default
#                                      build, CUDA enabled), strips them, and writes DIR/gpupack.tar.xz with them,
#                                      the shared libraries they need that are not glibc's or CUDA's, and
#                                      ../shared/corpora/tinyshakespeare.txt (the end-to-end run's text)
#   tests/gpu/prebuilt.sh run DIR      there (x86-64, CUDA 13 driver): unpacks DIR/gpupack.tar.xz into
#                                      /tmp/radlads-gpu, finds libcudart/libcublasLt/libnccl on that machine
#                                      (the CUDA toolkit or PyTorch's wheels), runs tests/gpu/run.sh on the
#                                      unpacked programs, then bench/train/bench_gpu_step.py; exits with run.sh's
#                                      status.  RL_GPU_T_STEP limits the step benchmark (default 150 s), then
#                                      RL_GPU_T_STEP_4096 (120 s) a distill at hidden 4096 with its profile,
#                                      RL_GPU_T_STEP_PEER (75 s) each RAD-RWKV6 distill (the default, and
#                                      RADLADS_WKV_CHUNKED=3).
#   tests/gpu/prebuilt.sh steps DIR    there: the step benchmarks of `run` alone (unpacking only if not yet done),
#                                      for a machine lent for at most 10 minutes a command: `run.sh` (through
#                                      `shell`), then this, as two commands; exits 1 if any of them failed
#   tests/gpu/prebuilt.sh shell DIR 'CMDS'   there: the same environment (unpacking only if not yet done),
#                                      then bash -c CMDS with $B the unpacked build folder
set -uo pipefail
mode=${1:-}
dir=${2:-}
[ -n "$mode" ] && [ -n "$dir" ] || { sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 2; }
cd "$(dirname "$0")/../.."

PROGS="tests/gpu/gpu_ops_check tests/gpu/gpu_bench cli/radlads worker/radlads-worker"

case $mode in
pack)
  b=${RL_BUILD:-build}
  ninja -C "$b" $PROGS || { echo "prebuilt.sh: build failed" >&2; exit 1; }
  # (grep without -q: -q stops reading at the first match, ldd dies of SIGPIPE and pipefail fails the test)
  ldd "$b/worker/radlads-worker" | grep libcudart >/dev/null ||
    { echo "prebuilt.sh: $b is built without CUDA (meson configure $b -Dcuda=enabled)" >&2; exit 1; }
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  for p in $PROGS; do
    mkdir -p "$tmp/build/$(dirname "$p")"
    cp "$b/$p" "$tmp/build/$p" && strip "$tmp/build/$p"
  done
  mkdir -p "$tmp/lib" "$tmp/corpora"
  # every shared library the programs load except glibc's, the C++/GCC runtime's and CUDA's own
  for p in $PROGS; do ldd "$b/$p"; done | awk '/=> \//{print $3}' | sort -u |
    grep -v -E '/usr/local/cuda|/(ld-linux[^/]*|lib(c|m|mvec|pthread|dl|rt|util|resolv|nsl|anl|stdc\+\+|gcc_s))\.so' |
    while read -r f; do cp -L "$f" "$tmp/lib/"; done
  corpora=${RADLADS_CORPORA:-../shared/corpora}
  [ -f "$corpora/tinyshakespeare.txt" ] && cp "$corpora/tinyshakespeare.txt" "$tmp/corpora/"
  mkdir -p "$dir"
  # xz -9: its 64 MiB window holds a whole program, so the other three programs' copies of the kernels cost almost
  # nothing (48.8 MB at the default -6, 18.1 MB at -9: a device run carries at most 64 MiB). Written aside first, so
  # a failure leaves the last good pack.
  tar -C "$tmp" -cf - build lib corpora | xz -9 -T1 > "$dir/gpupack.tar.xz.part" &&
    mv "$dir/gpupack.tar.xz.part" "$dir/gpupack.tar.xz" || { rm -f "$dir/gpupack.tar.xz.part"; exit 1; }
  ls -la "$dir/gpupack.tar.xz"
  ;;
run | shell | steps)
  u=/tmp/radlads-gpu
  if [ "$mode" = run ] || [ ! -x "$u/build/worker/radlads-worker" ]; then
    rm -rf "$u" && mkdir -p "$u" && tar -C "$u" -xJf "$dir/gpupack.tar.xz" ||
      { echo "prebuilt.sh: unpack failed" >&2; exit 1; }
  fi
  libdirs=$u/lib
  for name in libcudart.so.13 libcublasLt.so.13 libcublas.so.13 libnccl.so.2; do
    f=$(find /usr/local/cuda/ /usr/local/cuda/lib64/ /usr/lib/x86_64-linux-gnu/ /opt/ /usr/local/lib/ \
          -name "$name" 2>/dev/null | head -1)
    [ -n "$f" ] && libdirs=$libdirs:$(dirname "$f") || echo "prebuilt.sh: $name not found on this machine" >&2
  done
  export LD_LIBRARY_PATH=$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  [ -f "$u/corpora/tinyshakespeare.txt" ] && export RADLADS_CORPORA=$u/corpora
  if [ "$mode" = shell ]; then # tests/gpu/prebuilt.sh shell DIR 'commands' ($B = the unpacked build)
    shift 2
    B=$u/build bash -c "$*"
    exit $?
  fi
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  for p in $PROGS; do
    ldd "$u/build/$p" | grep "not found" && echo "prebuilt.sh: $p misses the libraries above" >&2
  done
  rc=0
  if [ "$mode" = run ]; then
    RL_GPU_BUILD=$u/build RL_GPU_PREBUILT=1 tests/gpu/run.sh
    rc=$?
  fi
  echo "== training step throughput and MFU (bench/train/bench_gpu_step.py)"
  py=/usr/bin/python3
  python3 -c "import torch" 2>/dev/null && py=python3
  steps_rc=0
  PYTHONUNBUFFERED=1 timeout "${RL_GPU_T_STEP:-150}" "$py" bench/train/bench_gpu_step.py --build "$u/build" ||
    { echo "prebuilt.sh: the step benchmark failed or ran out of time (rc $?)"; steps_rc=1; }
  # where a distill step at hidden 4096 goes (its MFU is the issue's target), with the profile
  echo "== distill bf16 at hidden 4096, 2 layers, with its profile"
  PYTHONUNBUFFERED=1 timeout "${RL_GPU_T_STEP_4096:-120}" "$py" bench/train/bench_gpu_step.py --build "$u/build" \
    --hidden 4096 --layers 2 --stages distill --precisions bf16 ||
    { echo "prebuilt.sh: the hidden-4096 step failed or ran out of time"; steps_rc=1; }
  # a RAD-RWKV6 student on its decays as converted: the wkv6 backward by the decays (the default, which should pick
  # the per-row one there) against the chunked one on any decays (RADLADS_WKV_CHUNKED=3, the default before), in a
  # whole distill step
  for knob in RADLADS_WKV_CHUNKED=2 RADLADS_WKV_CHUNKED=3; do
    echo "== RAD-RWKV6 distill bf16 with $knob"
    env $knob PYTHONUNBUFFERED=1 timeout "${RL_GPU_T_STEP_PEER:-75}" "$py" bench/train/bench_gpu_step.py \
      --build "$u/build" --arch rad-rwkv6 --stages distill --precisions bf16 --profile '' |
      grep -E "ceiling|student|^  distill" ||
      { echo "prebuilt.sh: the RAD-RWKV6 step with $knob failed, ran out of time or printed no result"; steps_rc=1; }
  done
  [ "$mode" = steps ] && rc=$steps_rc # (run: run.sh's status, as before)
  exit $rc
  ;;
*)
  echo "prebuilt.sh: the mode is pack, run, steps or shell, not '$mode'" >&2
  exit 2
  ;;
esac
