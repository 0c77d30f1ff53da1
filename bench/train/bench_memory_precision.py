"""Backend memory and speed of activation recomputation and bf16 GEMMs in the trainer (CPU).

For each seq_len, trains the same student for a few steps in each of recompute 0/1 x precision fp32 / bf16 /
bf16-weights (the trainable matrices and their gradients in bf16 with fp32 master weights) and
reports, per run: the backend's peak bytes (metrics.jsonl `backend_peak_bytes`, the most bytes held through the
backend's allocator, max over the steps), the steady-state tokens/s (steps 2..N from `elapsed_s`, so the
first step's warm-up is left out), each against the peer row (recompute 0, fp32, measured in the same run), and
the final step's loss. It also checks that recompute 1 gives exactly the same loss and grad norm at every step
as recompute 0 at the same precision (the recomputed forward is the same arithmetic on the same inputs).

Setup: a random Qwen2-style teacher from `radlads init-model` (hidden 256, 8 layers, 4 heads / 2 KV heads,
FFN 768, byte vocabulary of 257 ids: `radlads tokenize --tokenizer bytes --write-tokenizer`), a RAD-RWKV7
student from `--stage transfer`, text from ../shared/corpora/tinyshakespeare.txt (read in place, tokenized
into a temporary folder). Distill (step 2) at every --seq value; align (step 1) at --align-seq (0 = skip).
micro-batch 2, batch 2, --threads 2, OMP_WAIT_POLICY=passive.

On a CPU the bf16 path does the same arithmetic in fp32 plus the rounding of the operands, so its time here is
emulation overhead; the speed benefit of bf16 needs the GPU's tensor cores.

usage: /usr/bin/python3 bench/train/bench_memory_precision.py [--seq 512,1024] [--steps 8] [--align-seq 1024]
         [--align-steps 8] [--threads 2] [--build DIR] [--keep DIR]"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = [(0, "fp32"), (1, "fp32"), (0, "bf16"), (1, "bf16"), (0, "bf16-weights"),
           (1, "bf16-weights")]  # the first is the peer
PRECISIONS = ("fp32", "bf16", "bf16-weights")
BATCH, MICRO = 2, 2


def call(args, env=None):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        raise SystemExit("failed: " + " ".join(map(str, args)))
    return r


def metrics(out):
    rows = []
    for line in open(os.path.join(out, "metrics.jsonl")):
        m = json.loads(line)
        if "loss" in m:
            rows.append(m)
    return sorted(rows, key=lambda m: m["step"])


def train(worker, stage, teacher, student, data, out, seq, steps, recompute, precision, threads, env):
    lr = "3e-3:1e-4" if stage == "align" else "1e-3:1e-4"
    call([worker, "run", "--stage", stage, "--teacher", teacher, "--student", student, "--data", data, "--out",
          out, "--tokens", steps * BATCH * seq, "--seq-len", seq, "--batch", BATCH, "--micro-batch", MICRO,
          "--lr", lr, "--warmup", "2", "--log-every", "0", "--checkpoint-every", "0", "--threads", threads,
          "--recompute", recompute, "--precision", precision], env)
    ms = metrics(out)
    if len(ms) != steps:
        raise SystemExit(f"{out}: {len(ms)} steps in metrics.jsonl, expected {steps}")
    first, last = ms[0], ms[-1]
    tps = (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"]) if steps > 1 \
        else last["tokens_per_s"]
    return dict(peak=max(m["backend_peak_bytes"] for m in ms), tps=tps, loss=last["loss"],
                losses=[m["loss"] for m in ms], gnorms=[m["grad_norm"] for m in ms])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", default="512,1024", help="distill seq_len values, comma-separated")
    ap.add_argument("--steps", type=int, default=8, help="distill steps per run")
    ap.add_argument("--align-seq", type=int, default=1024, help="align seq_len (0: no align rows)")
    ap.add_argument("--align-steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--keep", default=None, help="keep the work folder here")
    a = ap.parse_args()
    radlads, worker = os.path.join(a.build, "cli", "radlads"), os.path.join(a.build, "worker", "radlads-worker")
    work = a.keep or tempfile.mkdtemp(prefix="radlads-memprec-")
    os.makedirs(work, exist_ok=True)
    d = lambda n: os.path.join(work, n)  # noqa: E731
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    corpus = os.path.join(SRC, "..", "shared", "corpora", "tinyshakespeare.txt")
    t_all = time.time()
    call([radlads, "init-model", "--arch", "qwen2", "--hidden", "256", "--layers", "8", "--heads", "4",
          "--kv-heads", "2", "--intermediate", "768", "--vocab", "257", "--seed", "1", "--out", d("teacher")])
    call([radlads, "tokenize", "--tokenizer", "bytes", "--in", corpus, "--out", d("data"), "--no-progress",
          "--write-tokenizer", d("teacher")])
    call([worker, "run", "--stage", "transfer", "--teacher", d("teacher"), "--arch", "rad-rwkv7", "--out",
          d("student")])
    data = d("data.tok")

    plan = [("distill", int(s), a.steps) for s in a.seq.split(",") if s]
    if a.align_seq:
        plan.append(("align", a.align_seq, a.align_steps))
    table, checks = [], []
    for stage, seq, steps in plan:
        res = {}
        for r, p in CONFIGS:
            out = d(f"{stage}-{seq}-r{r}-{p}")
            res[(r, p)] = train(worker, stage, d("teacher"), d("student"), data, out, seq, steps, r, p, a.threads,
                                env)
            shutil.rmtree(out)
            print(f"  {stage} seq {seq} recompute {r} {p}: peak {res[(r, p)]['peak'] / 2**20:.1f} MiB, "
                  f"{res[(r, p)]['tps']:.0f} tok/s", file=sys.stderr, flush=True)
        peer = res[(0, "fp32")]
        for r, p in CONFIGS:
            x = res[(r, p)]
            table.append((stage, seq, r, p, x["peak"] / 2**20, x["peak"] / peer["peak"], x["tps"],
                          x["tps"] / peer["tps"], x["loss"]))
        for p in PRECISIONS:
            x0, x1 = res[(0, p)], res[(1, p)]
            same = x0["losses"] == x1["losses"] and x0["gnorms"] == x1["gnorms"]
            checks.append(f"{stage} seq {seq} {p}: recompute 1 vs 0, all {steps} steps' loss and grad norm "
                          f"{'IDENTICAL' if same else 'DIFFERENT'} (final loss {x0['loss']!r} vs {x1['loss']!r})")
    wall = time.time() - t_all

    print(f"teacher qwen2 hidden 256, 8 layers, heads 4/2, FFN 768, vocab 257 (bytes), random init; student "
          f"rad-rwkv7 b; batch {BATCH}, micro-batch {MICRO}, threads {a.threads}; distill {a.steps} steps"
          f"{f', align {a.align_steps} steps' if a.align_seq else ''}; peer = recompute 0 fp32 of the same row group")
    print("| stage | seq_len | recompute | precision | backend peak MiB | vs peer | tokens/s | vs peer | final loss |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for stage, seq, r, p, mib, mr, tps, tr, loss in table:
        print(f"| {stage} | {seq} | {r} | {p} | {mib:.1f} | {mr:.2f}x | {tps:.0f} | {tr:.2f}x | {loss:.6f} |")
    print()
    for c in checks:
        print(c)
    print(f"total wall {wall:.0f} s; work folder {work}")
    if not a.keep:
        shutil.rmtree(work)
    return 0 if all("IDENTICAL" in c for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
