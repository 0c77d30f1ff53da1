"""Training-step throughput and model-FLOP utilisation of the worker on one GPU (issue 9's MFU target).

Trains a Qwen2-shaped teacher (`radlads init-model`) and its student (`--stage transfer`: RAD-RWKV7, or RAD-RWKV6
with `--arch rad-rwkv6`) for a few
steps with `radlads-worker run --device cuda` in each of: pretrain (the teacher's own training step: softmax
attention, the peer architecture), align (step 1), distill (step 2: teacher forward + student forward/backward),
each in fp32 and in bf16 (`--precision bf16`), and prints per run the steady-state tokens/s (the steps after the
first two, from metrics.jsonl's `tokens`/`elapsed_s`), the model TFLOP/s and the MFU against the bf16 GEMM
ceiling measured in the same run (PyTorch `torch.matmul`, 8192^3 bf16, median of 10 after 3 warm-ups; the
peer: what this card's tensor cores do on the best-shaped GEMM).

Model FLOPs per token (the usual accounting: matmul parameters, x2 forward, x6 forward+backward):
  pretrain   6 * P_teacher + attention 6 * L * T * d (causal QK^T and PV, forward 2*T*d per layer, x3)
  align      2 * P_teacher body (no head) + teacher attention + 6 * the student's time-mix + wkv: only the
             time-mix trains (its input gradient, which align computes and discards, is counted too)
  distill    2 * P_teacher + 6 * P_student + teacher attention 2*L*T*d + wkv 3 * 8 * N * d per layer (RAD-RWKV6,
             `--arch rad-rwkv6`: 3 * 4 * N * d)
The wkv forward counts its products of a state with a vector, 2 FLOP per multiply-add: RWKV-7's four (S·a, sa·bᵀ,
v·kᵀ, S·r: 8N² a head), RAD-RWKV6's two (v·kᵀ, S·r: 4N²); the decay's multiply is left out of both (KERNELS.md §5
counts it: 9N² and 5N²), and wkv is about 1 % of a step's FLOPs either way.
P counts every 2-D weight a token multiplies (the tied or untied vocabulary head included, the embedding
lookup not).  Recomputation and the CE/KL softmax are not counted (the convention of MFU).

usage: python3 bench/train/bench_gpu_step.py [--build DIR] [--hidden 2048] [--layers 4] [--seq 1024]
          [--batch 8] [--steps 12] [--stages pretrain,align,distill] [--arch rad-rwkv7|rad-rwkv6] [--device cuda]
The student is converted by `--stage transfer`, so a RAD-RWKV6 student runs on its decays as converted.
Needs a GPU (`--device cpu` runs the same on the CPU: a dry run of the script, tiny sizes advised)."""
import argparse
import csv
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRC, "tests"))
from testdata import english_text  # noqa: E402


def call(args):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:])
        raise SystemExit("failed: " + " ".join(map(str, args)))
    return r


def tensors(model_dir):
    """name -> shape from the folder's safetensors headers."""
    out = {}
    for fn in sorted(os.listdir(model_dir)):
        if fn.endswith(".safetensors"):
            with open(os.path.join(model_dir, fn), "rb") as f:
                n = struct.unpack("<Q", f.read(8))[0]
                for k, v in json.loads(f.read(n)).items():
                    if k != "__metadata__":
                        out[k] = v["shape"]
    return out


def matmul_params(model_dir, only=None):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    p = 0
    for name, shape in tensors(model_dir).items():
        if len(shape) != 2 or "embed_tokens" in name or name.endswith(".r_k"):
            continue  # r_k: a per-head bonus vector, not a matrix a token multiplies
        if only and not only(name):
            continue
        p += shape[0] * shape[1]
    if cfg.get("tie_word_embeddings") and not only:
        p += cfg["vocab_size"] * cfg["hidden_size"]
    return p, cfg


def steady_rate(out, skip=2):
    rows = [json.loads(ln) for ln in open(os.path.join(out, "metrics.jsonl"))]
    rows = sorted((r for r in rows if "loss" in r and "step" in r), key=lambda r: r["step"])
    if len(rows) <= skip + 1:
        raise SystemExit(f"{out}: only {len(rows)} logged steps")
    a, b = rows[skip], rows[-1]
    return (b["tokens"] - a["tokens"]) / (b["elapsed_s"] - a["elapsed_s"]), rows[-1]


def gemm_ceiling():
    try:
        import torch
    except ImportError:
        return None, "no torch"
    if not torch.cuda.is_available():
        return None, "torch sees no GPU"
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    ts = []
    for _ in range(10):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        a @ b
        e1.record()
        torch.cuda.synchronize()
        ts.append(e0.elapsed_time(e1))
    ts.sort()
    return 2 * n ** 3 / (ts[len(ts) // 2] * 1e-3) / 1e12, torch.cuda.get_device_name()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--stages", default="pretrain,align,distill")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--arch", default="rad-rwkv7", choices=["rad-rwkv7", "rad-rwkv6"])
    ap.add_argument("--profile", default="distill:bf16",
                    help="STAGE:PRECISION run once more with --profile 1 (its top ops printed); '' = none")
    a = ap.parse_args()
    radlads, worker = os.path.join(a.build, "cli", "radlads"), os.path.join(a.build, "worker", "radlads-worker")
    ceiling, card = gemm_ceiling() if a.device == "cuda" else (None, "cpu dry run")
    print(f"bench_gpu_step: {card}; bf16 GEMM ceiling (torch, 8192^3): "
          f"{'%.0f TFLOP/s' % ceiling if ceiling else 'not measured'}")
    d_model, heads = a.hidden, a.hidden // 64
    ffn = (a.hidden * 11 // 4 + 127) // 128 * 128
    with tempfile.TemporaryDirectory() as tmp:
        d = lambda n: os.path.join(tmp, n)  # noqa: E731
        open(d("train.txt"), "wb").write(english_text(a.steps * a.batch * a.seq * 2 + 65536))
        t0 = time.time()
        call([radlads, "init-model", "--arch", "qwen2", "--hidden", d_model, "--layers", a.layers, "--heads", heads,
              "--kv-heads", max(1, heads // 4), "--intermediate", ffn, "--vocab", "257", "--seed", "1",
              "--out", d("teacher")])
        call([radlads, "tokenize", "--tokenizer", "bytes", "--in", d("train.txt"), "--out", d("train"),
              "--no-progress", "--write-tokenizer", d("teacher")])
        call([worker, "run", "--stage", "transfer", "--teacher", d("teacher"), "--arch", a.arch,
              "--out", d("student")])
        print(f"  setup (init, tokenize, transfer on the CPU): {time.time() - t0:.1f} s")
        p_t, _ = matmul_params(d("teacher"))
        p_s, _ = matmul_params(d("student"))
        p_t_body, _ = matmul_params(d("teacher"), lambda n: n.startswith("model.layers."))
        p_tmix, _ = matmul_params(d("student"), lambda n: ".self_attn." in n or ".time_mix" in n or ".att." in n)
        L, T, dm = a.layers, a.seq, d_model
        attn = 2 * L * T * dm          # causal softmax attention, forward, per token
        wkv = (8 if a.arch == "rad-rwkv7" else 4) * 64 * dm * L  # wkv7 (wkv6) forward per token (N = 64)
        flops = {"pretrain": 6 * p_t + 3 * attn,
                 "align": 2 * p_t_body + attn + 6 * p_tmix + 3 * wkv,  # align's teacher has no head
                 "distill": 2 * p_t + attn + 6 * p_s + 3 * wkv}
        print(f"  teacher: hidden {dm}, {L} layers, {heads} heads / {max(1, heads // 4)} KV, FFN {ffn}, vocab 257: "
              f"{p_t / 1e6:.1f}M matmul params; {a.arch} student {p_s / 1e6:.1f}M (time-mix {p_tmix / 1e6:.1f}M); "
              f"batch {a.batch} x seq {T}")
        print(f"  {'stage':<9} {'precision':<9} {'tokens/s':>10} {'ms/step':>9} {'model TFLOP/s':>14} {'MFU':>7}  "
              f"{'peak GiB':>8} {'last loss':>10}")
        profiles = []
        for stage in a.stages.split(","):
            for prec in a.precisions.split(","):
                out = d(f"{stage}-{prec}")
                args = [worker, "run", "--device", a.device, "--stage", stage, "--data", d("train.tok"),
                        "--tokens", a.steps * a.batch * a.seq, "--seq-len", T, "--batch", a.batch, "--micro-batch",
                        a.batch, "--lr", "1e-4", "--warmup", "1", "--log-every", "1", "--checkpoint-every", "0",
                        "--precision", prec]
                if stage == "pretrain":
                    args += ["--student", d("teacher")]
                else:
                    args += ["--student", d("student"), "--teacher", d("teacher")]
                try:
                    call(args + ["--out", out])
                except SystemExit as e:
                    print(f"  {stage:<9} {prec:<9} {e}")
                    continue
                if a.profile == f"{stage}:{prec}":
                    call(args + ["--out", out + "-profile", "--profile", "1"])
                    profiles.append((f"{stage} {prec}", os.path.join(out + "-profile", "profile.tsv")))
                tps, last = steady_rate(out)
                tf = tps * flops[stage] / 1e12
                mfu = f"{100 * tf / ceiling:6.1f}%" if ceiling else "    n/a"
                print(f"  {stage:<9} {prec:<9} {tps:10.0f} {1e3 * a.batch * T / tps:9.1f} {tf:14.1f} {mfu}  "
                      f"{last.get('backend_peak_bytes', 0) / 2**30:8.2f} {last['loss']:10.4f}", flush=True)

        for what, path in profiles:
            print_profile(what, path)


def print_profile(what, path, top=30):
    """the --profile 1 table of one run: the top ops by time, then the step's time by kind"""
    with open(path) as f:
        rows = list(csv.DictReader((ln for ln in f if not ln.startswith("#")), delimiter="\t"))
    print(f"  profile of {what} (--profile 1: each op timed between device syncs), top {top} by time:")
    print(f"    {'op':<24} {'shape M x N x K':<20} {'calls':>6} {'ms/step':>8} {'share':>7} {'TFLOP/s':>8}")
    rest = rows[top:]
    for r in rows[:top]:
        shape = (f"{r['M']}x{r['N']}x{r['K']} {'NT'[int(r['trans_a'])]}{'NT'[int(r['trans_b'])]}"
                 if r["M"] != "0" else "")
        print(f"    {r['op']:<24} {shape:<20} {r['calls']:>6} {float(r['ms_per_step']):8.2f} "
              f"{100 * float(r['share']):6.1f}% {float(r['TFLOP_per_s']):8.1f}")
    if rest:
        print(f"    {'(the other %d)' % len(rest):<52} {sum(float(r['ms_per_step']) for r in rest):8.2f} "
              f"{100 * sum(float(r['share']) for r in rest):6.1f}%")
    # where the step goes by kind: the products (what MFU counts), the recurrences, attention, the rest
    kinds = {"GEMMs": lambda r: r["M"] != "0", "wkv": lambda r: r["op"].startswith("wkv"),
             "attention": lambda r: r["op"].startswith("attention")}
    done = set()
    for name, pick in kinds.items():
        sel = [i for i, r in enumerate(rows) if i not in done and pick(r)]
        done.update(sel)
        print(f"    {name:<52} {sum(float(rows[i]['ms_per_step']) for i in sel):8.2f} "
              f"{100 * sum(float(rows[i]['share']) for i in sel):6.1f}%")
    other = [r for i, r in enumerate(rows) if i not in done]
    print(f"    {'everything else (%d ops)' % len(other):<52} {sum(float(r['ms_per_step']) for r in other):8.2f} "
          f"{100 * sum(float(r['share']) for r in other):6.1f}%")


if __name__ == "__main__":
    main()
