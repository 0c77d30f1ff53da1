#!/usr/bin/env bash
# The demo: builds radlads, starts radladsd on a demo state dir, makes a small real teacher model and
# token data, and walks a conversion job through the queue (submit, status, show, hold/release, events,
# cancel).  Training workers arrive with the worker-pools issue; until then no pool takes the job.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
BUILD=${RADLADS_BUILD:-build}
scripts/install-deps.sh
[ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" >/dev/null
ninja -C "$BUILD" >/dev/null

DEMO=${RADLADS_DEMO_DIR:-$PWD/demo-state}
rm -rf "$DEMO" && mkdir -p "$DEMO"
RADLADS="$BUILD/cli/radlads --socket $DEMO/state/radladsd.sock"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

say "radladsd --state-dir $DEMO/state"
"$BUILD/daemon/radladsd" --state-dir "$DEMO/state"
trap 'kill $(head -1 "$DEMO/state/radlads.db.lock") 2>/dev/null || true' EXIT

# A teacher: a small random Qwen2 model written as a real HF folder (config.json + model.safetensors).
if $RADLADS init-model --help >/dev/null 2>&1; then
  say "radlads init-model --arch qwen2 --hidden 128 --layers 2 --heads 4 --kv-heads 2 --vocab 512 --out teacher"
  $RADLADS init-model --arch qwen2 --hidden 128 --layers 2 --heads 4 --kv-heads 2 --intermediate 256 \
    --vocab 512 --out "$DEMO/teacher" --seed 1
else
  mkdir -p "$DEMO/teacher"
  echo '{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 128, "num_hidden_layers": 2}' > "$DEMO/teacher/config.json"
fi
# Training text: a real corpus, as bytes (token files proper come with the tokenizer).
head -c 200000 ../shared/corpora/tinyshakespeare.txt > "$DEMO/train.txt" 2>/dev/null || head -c 200000 /dev/urandom > "$DEMO/train.txt"

cat > "$DEMO/job.yaml" <<YAML
name: demo-rwkv7
teacher: teacher
student: {arch: rad-rwkv7, variant: b}
data: {train: [train.txt]}
stages:
  - transfer
  - {stage: align, tokens: 2M, seq_len: 128, batch: 16, micro_batch: 4, lr: "1e-3:1e-5"}
  - {stage: distill, tokens: 4M, seq_len: 128, batch: 16, micro_batch: 4, lr: 1e-5}
  - export
output: out/demo-rwkv7
YAML
mkdir -p "$DEMO/out"
say "cat job.yaml"; cat "$DEMO/job.yaml"
say "radlads submit job.yaml"
ID=$($RADLADS submit "$DEMO/job.yaml" --print-id)
echo "job $ID"
say "radlads submit job.yaml --name demo-held --hold --priority 5"
ID2=$($RADLADS submit "$DEMO/job.yaml" --name demo-held --hold --priority 5 --print-id)
say "radlads status"; $RADLADS status
say "radlads show $ID"; $RADLADS show "$ID"
say "radlads release $ID2"; $RADLADS release "$ID2"
say "radlads cancel $ID $ID2"; $RADLADS cancel "$ID" "$ID2"
say "radlads events $ID"; $RADLADS events "$ID"
say "radlads status --json"; $RADLADS status --json | head -25
say "radlads daemon-status"; $RADLADS daemon-status
echo; echo "demo finished; state kept in $DEMO"
