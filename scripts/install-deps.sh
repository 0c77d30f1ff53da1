#!/usr/bin/env bash
# Installs every Debian package radlads needs to build, test and run its demo.  Idempotent: when all
# packages are present it does nothing (no network).  Needs root (apt-get).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

PKGS=(
  # build
  meson ninja-build pkg-config gcc clang libclang-rt-14-dev
  libuv1-dev libsqlite3-dev sqlite3 libcurl4-openssl-dev libjansson-dev libfyaml-dev
  libprotobuf-c-dev protobuf-c-compiler libopenmpi-dev openmpi-bin libopenblas-dev
  libpcre2-dev libzstd-dev libutf8proc-dev zstd
  # tests: PyTorch references (only /usr/bin/python3 has them), permission tests
  python3 python3-torch python3-numpy util-linux procps
  # HTTP server (llhttp C sources) and the dashboard browser test
  node-llhttp chromium
  # the Slurm launcher's tests: a one-node Slurm on localhost (scripts/slurm-local.sh starts it)
  slurmctld slurmd slurm-client munge
  # benchmarks (bench/, not the tests)
  wrk
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run this script as root (apt-get)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
