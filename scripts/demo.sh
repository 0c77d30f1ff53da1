#!/usr/bin/env bash
# The demo: a whole RADLADS conversion through the job queue, on this machine's CPU.
#
#   ./scripts/demo.sh [--quick] [--no-build] [TEXT_FILE]
#
# Installs what is missing and builds; starts radladsd on ./demo-state (SQLite, local mpirun pools);
# byte-tokenizes a text (default ../shared/corpora/tinyshakespeare.txt; the last 10 % is held out);
# submits ONE job that pretrains a small softmax teacher (Qwen2-shaped, byte-level) from scratch on
# 2 MPI ranks and then converts it: transfer -> align -> distill -> export into RAD-RWKV7; shows live
# progress (radlads watch) and ends with a table: teacher vs student held-out loss and their ratio,
# tokens and time per stage, and where the exported model is.  --quick is the < 3 minute version the
# tests run; the full one takes about half a minute on 2 idle cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
BUILD=${RADLADS_BUILD:-build}
QUICK=0 BUILD_IT=1 TEXT=""
for a in "$@"; do
  case "$a" in
    --quick) QUICK=1 ;;
    --no-build) BUILD_IT=0 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    -*) echo "demo: unknown option $a" >&2; exit 2 ;;
    *) TEXT=$a ;;
  esac
done
if [ $BUILD_IT = 1 ]; then
  scripts/install-deps.sh
  [ -f "$BUILD/build.ninja" ] || meson setup "$BUILD" >/dev/null
  ninja -C "$BUILD" >/dev/null
fi
BUILD=$(cd "$BUILD" && pwd)
DEMO=${RADLADS_DEMO_DIR:-$PWD/demo-state}
[ -n "$TEXT" ] || TEXT=${RADLADS_CORPORA:-../shared/corpora}/tinyshakespeare.txt
if [ ! -s "$TEXT" ]; then
  echo "demo: no text at $TEXT; using generated English-like text (give a file: ./scripts/demo.sh FILE)" >&2
  mkdir -p "$DEMO.gen"
  /usr/bin/python3 -c 'import sys; sys.path.insert(0, "tests"); from testdata import english_text; sys.stdout.buffer.write(english_text(1200000))' > "$DEMO.gen/text.txt"
  TEXT=$DEMO.gen/text.txt
fi

# conversion tokens are whole optimizer steps of 2 x 64 tokens; the full run's 39,936 + 110,080 are 5.0 % of the
# teacher's 3,000,320 (5,860 steps of 8 x 64)
if [ $QUICK = 1 ]; then PRE=400K ALIGN=9984 DISTILL=29952; else PRE=3M ALIGN=39936 DISTILL=110080; fi
SEQ=64

rm -rf "$DEMO" && mkdir -p "$DEMO/out"
R="$BUILD/cli/radlads --socket $DEMO/state/radladsd.sock"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

# Held-out text: the last 10 % of the file, never trained on.
size=$(stat -c %s "$TEXT")
head -c $((size * 9 / 10)) "$TEXT" > "$DEMO/train.txt"
tail -c $((size - size * 9 / 10)) "$TEXT" > "$DEMO/valid.txt"

say "radladsd --state-dir $DEMO/state --http 127.0.0.1:0"
"$BUILD/daemon/radladsd" --state-dir "$DEMO/state" --http 127.0.0.1:0 --worker "$BUILD/worker/radlads-worker"
stop_daemon() { kill "$(head -1 "$DEMO/state/radlads.db.lock" 2>/dev/null)" 2>/dev/null || true; }
trap stop_daemon EXIT
for _ in $(seq 50); do [ -s "$DEMO/state/http.addr" ] && break; sleep 0.1; done
[ -s "$DEMO/state/http.addr" ] && echo "dashboard: http://$(cat "$DEMO/state/http.addr")/"

say "radlads init-model --arch qwen2 --hidden 64 --layers 2 --heads 2 --kv-heads 1 --vocab 257 --out teacher"
$R init-model --arch qwen2 --hidden 64 --layers 2 --heads 2 --kv-heads 1 --intermediate 192 --vocab 257 \
  --seed 1 --out "$DEMO/teacher" >/dev/null
say "radlads tokenize --tokenizer bytes --in train.txt --out train   (and valid.txt)"
$R tokenize --tokenizer bytes --in "$DEMO/train.txt" --out "$DEMO/train" --no-progress --write-tokenizer "$DEMO/teacher"
$R tokenize --tokenizer bytes --in "$DEMO/valid.txt" --out "$DEMO/valid" --no-progress

cat > "$DEMO/job.yaml" <<YAML
name: demo-rwkv7
teacher: teacher                 # random init-model folder; the pretrain stage trains it
student: {arch: rad-rwkv7, variant: b}
data: {train: [train.tok], valid: [valid.tok]}
stages:
  - {stage: pretrain, tokens: $PRE, seq_len: $SEQ, batch: 8, micro_batch: 2, lr: "3e-3:3e-4", warmup: 20, checkpoint_every: 100}
  - transfer
  - {stage: align, tokens: $ALIGN, seq_len: $SEQ, batch: 2, micro_batch: 1, lr: "1e-2:1e-4", warmup: 10, checkpoint_every: 100}
  - {stage: distill, tokens: $DISTILL, seq_len: $SEQ, batch: 2, micro_batch: 1, lr: "3e-4:3e-5", lr2: "1e-3:1e-4", schedule: cos, warmup: 10, checkpoint_every: 100, recompute: 1}
  - export
resources: {ranks: 2, device: cpu}
output: out/demo-rwkv7
YAML
say "cat job.yaml"; cat "$DEMO/job.yaml"
say "radlads submit job.yaml"
ID=$($R submit "$DEMO/job.yaml" --print-id)
echo "job $ID"
say "radlads watch $ID"
$R watch "$ID" || true
say "radlads status"; $R status
STATE=$($R show "$ID" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
if [ "$STATE" != COMPLETED ]; then
  echo "demo: the job ended $STATE"; $R show "$ID"; $R logs "$ID" --tail 20; exit 1
fi

OUT="$DEMO/out/demo-rwkv7"
score() { $R score --model "$1" --tokens "$DEMO/valid.tok" --window $SEQ --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["mean_cross_entropy"])'; }
T_LOSS=$(score "$OUT/00-pretrain")
S_LOSS=$(score "$OUT/04-export")
$R show "$ID" --json > "$DEMO/show.json"
python3 - "$DEMO/show.json" "$T_LOSS" "$S_LOSS" "$OUT/04-export" <<'PY'
import json, sys
show, t, s, export = json.load(open(sys.argv[1])), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def count(n):
    for unit, div in (("M", 1e6), ("K", 1e3)):
        if n >= div: return f"{n / div:g}{unit}"
    return str(n)
print("\n%-9s %10s %9s  %s" % ("stage", "tokens", "time", "output"))
for st in show["stages"]:
    secs = (st["finished_at_ms"] - st["started_at_ms"]) / 1000 if st["finished_at_ms"] else 0
    print("%-9s %10s %8.1fs  %s" % (st["kind"], count(st["tokens_total"]) if st["tokens_total"] else "-", secs, st["output_dir"]))
pre = next(x["tokens_total"] for x in show["stages"] if x["kind"] == "pretrain")
conv = sum(x["tokens_total"] for x in show["stages"] if x["kind"] in ("align", "distill", "extend"))
print("\nheld-out loss (nats/byte):  teacher %.4f   student %.4f   ratio %.3f" % (t, s, s / t))
print("conversion used %s tokens = %.1f %% of the teacher's pretraining" % (count(conv), 100 * conv / pre))
print("exported RAD-RWKV7 model: %s" % export)
PY
