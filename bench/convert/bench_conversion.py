"""A whole RADLADS conversion at tiny scale, measured (CPU, fp32, one process per stage).

  radlads init-model (softmax Qwen2-style teacher) -> pretrain on tinyshakespeare -> transfer -> align ->
  distill (-> optional extend) -> export ; held-out loss of teacher, untrained student and converted student.

Tokenizer: the built-in byte vocabulary (`radlads tokenize --tokenizer bytes`, 257 ids; default) or the
byte-level BPE fixture tests/tokenizer/fixtures/gpt2_plain.json (293 ids, --tokenizer fixture).
Held-out text: the last 10% of tinyshakespeare.txt, never in the training token file, scored with
`radlads score --tokens held.tok --window SEQ` (every window of the training sequence length; mean next-token
CE over all predictions) — the same number the trainer reports as its validation loss (--valid held.tok).
Prints a table: per stage wall time, tokens, tokens/s, peak RSS; then the losses and their ratio.

usage: /usr/bin/python3 bench/convert/bench_conversion.py [--scale small|small-long|medium|long|long-tuned|long-8m|wide-tuned]
         [--pre N] [--align N] [--distill N] [--align-lr I:F] [--distill-lr I:F] [--distill-lr2 I:F]
         [--conv-batch N] [--extend] [--tokenizer bytes|fixture]
         [--build DIR] [--keep DIR]"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCALES = {
    # teacher dims, pretrain tokens, align tokens, distill tokens, seq, batch
    "small": dict(hidden=64, layers=2, heads=2, kv=1, ffn=192, pre="300K", align="12K", distill="24K", seq=64,
                  batch=8),
    "small-long": dict(hidden=64, layers=2, heads=2, kv=1, ffn=192, pre="1M", align="12K", distill="36K", seq=64,
                       batch=8),
    "medium": dict(hidden=128, layers=4, heads=4, kv=2, ffn=384, pre="1M", align="20K", distill="40K", seq=128,
                   batch=16),
    # a longer-trained teacher (2M tokens) and a conversion budget of 5 % of its tokens
    "long": dict(hidden=64, layers=2, heads=2, kv=1, ffn=192, pre="2M", align="24K", distill="76K", seq=64,
                 batch=8),
    # the same teacher and data as "long", with the recipe from the sweep in bench/convert/SWEEP.md: 1 sequence
    # per optimizer step in align and distill (8x the steps of "long" for the same tokens), align LR 1e-2,
    # distill LR 3e-4 for everything but the time-mix, which follows lr2 1e-3 (METHOD.md's two LR groups);
    # 23,936 + 76,032 tokens = 4.997 % of the teacher's 2,000,384 (whole steps, so not over 5 %)
    "long-tuned": dict(hidden=64, layers=2, heads=2, kv=1, ffn=192, pre="2M", align="23936", distill="76032",
                       seq=64, batch=8, conv_batch=1, align_lr="1e-2:1e-4", distill_lr="3e-4:3e-5",
                       distill_lr2="1e-3:1e-4"),
    # the same recipe on the same teacher pretrained 4x longer (8M tokens; held-out 1.616 vs 1.728 at 2M, still
    # improving slowly): 96,000 + 304,000 conversion tokens = 5.000 %
    "long-8m": dict(hidden=64, layers=2, heads=2, kv=1, ffn=192, pre="8M", align="96000", distill="304000",
                    seq=64, batch=8, conv_batch=1, align_lr="1e-2:1e-4", distill_lr="3e-4:3e-5",
                    distill_lr2="1e-3:1e-4"),
    # a ~2M-parameter teacher (hidden 192, 4 layers, GQA 4/2) with the same recipe: does it carry over to a
    # teacher 15x larger?  2M pretraining tokens, 5 % conversion budget in whole steps
    "wide-tuned": dict(hidden=192, layers=4, heads=4, kv=2, ffn=576, pre="2M", align="23936", distill="76032",
                       seq=64, batch=8, conv_batch=1, align_lr="1e-2:1e-4", distill_lr="3e-4:3e-5",
                       distill_lr2="1e-3:1e-4"),
}


def timed(args, log):
    t0 = time.time()
    r = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M"] + [str(a) for a in args], capture_output=True, text=True)
    dt = time.time() - t0
    log.write(r.stdout + r.stderr)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        raise SystemExit("failed: " + " ".join(map(str, args)))
    rss = int(re.search(r"MAXRSS (\d+)", r.stderr).group(1)) / 1024
    m = re.search(r"(\d+) tokens in", r.stdout)
    return dt, rss, int(m.group(1)) if m else 0


def score(radlads, model, held, seq):
    out = subprocess.run([radlads, "score", "--model", model, "--json", "--tokens", held, "--window", str(seq)],
                         check=True, capture_output=True, text=True).stdout
    doc = json.loads(out)
    return doc["mean_cross_entropy"], doc["windows"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", default="small", choices=SCALES)
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--keep", default=None, help="keep the work folder here")
    ap.add_argument("--extend", action="store_true", help="also run a short step-3 extend at 2x seq")
    ap.add_argument("--tokenizer", default="bytes", choices=["bytes", "fixture"])
    ap.add_argument("--pre", help="teacher pretraining tokens (overrides the scale)")
    ap.add_argument("--align", help="align tokens")
    ap.add_argument("--distill", help="distill tokens")
    ap.add_argument("--pre-lr", default="3e-3:1e-4")
    ap.add_argument("--align-lr", help="align LR init:final (default 1e-3:1e-5 or the scale's)")
    ap.add_argument("--distill-lr", help="distill LR init:final (default 1e-3:1e-4 or the scale's)")
    ap.add_argument("--distill-lr2", help="distill LR of the time-mix group (default: the distill LR or the scale's)")
    ap.add_argument("--conv-batch", type=int, help="sequences per optimizer step in align and distill "
                    "(default: the pretraining batch or the scale's)")
    a = ap.parse_args()
    s = dict(SCALES[a.scale])
    s.setdefault("align_lr", "1e-3:1e-5")
    s.setdefault("distill_lr", "1e-3:1e-4")
    s.setdefault("distill_lr2", None)
    s.setdefault("conv_batch", s["batch"])
    for k in ("pre", "align", "distill", "align_lr", "distill_lr", "distill_lr2", "conv_batch"):
        if getattr(a, k):
            s[k] = getattr(a, k)
    radlads, worker = os.path.join(a.build, "cli", "radlads"), os.path.join(a.build, "worker", "radlads-worker")
    work = a.keep or tempfile.mkdtemp(prefix="radlads-convert-")
    os.makedirs(work, exist_ok=True)
    log = open(os.path.join(work, "log.txt"), "w")
    d = lambda n: os.path.join(work, n)  # noqa: E731
    text = open(os.path.join(SRC, "..", "shared", "corpora", "tinyshakespeare.txt"), "rb").read()
    cut = len(text) * 9 // 10
    open(d("train.txt"), "wb").write(text[:cut])
    open(d("held.txt"), "wb").write(text[cut:])
    if a.tokenizer == "bytes":
        tok, vocab = "bytes", 257
    else:
        tok, vocab = os.path.join(SRC, "tests", "tokenizer", "fixtures", "gpt2_plain.json"), 293
    subprocess.run([radlads, "init-model", "--arch", "qwen2", "--hidden", str(s["hidden"]), "--layers", str(s["layers"]),
                    "--heads", str(s["heads"]), "--kv-heads", str(s["kv"]), "--intermediate", str(s["ffn"]), "--vocab",
                    str(vocab), "--seed", "1", "--out", d("init")], check=True, capture_output=True, text=True)
    for name in ("train", "held"):
        subprocess.run([radlads, "tokenize", "--tokenizer", tok, "--in", d(name + ".txt"), "--out", d(name),
                        "--no-progress", "--write-tokenizer", d("init")], check=True, capture_output=True)
    data, held = d("train.tok"), d("held.tok")
    T = s["seq"]
    B = str(s["batch"])
    common = ["--data", data, "--valid", held, "--seq-len", str(T), "--batch", B, "--log-every", "200",
              "--checkpoint-every", "1000"]
    # align and distill: the same, with their own batch (later --batch wins over common's)
    conv_common = common + ["--batch", str(s["conv_batch"])]
    rows = []
    t_all = time.time()
    dt, rss, n = timed([worker, "run", "--stage", "pretrain", "--student", d("init"), "--out", d("teacher"),
                        "--tokens", s["pre"], "--lr", a.pre_lr, "--warmup", "50", *common], log)
    rows.append(("pretrain (teacher)", dt, n, rss))
    pre_tokens = n
    dt, rss, _ = timed([worker, "run", "--stage", "transfer", "--teacher", d("teacher"), "--arch", "rad-rwkv7",
                        "--out", d("s0")], log)
    rows.append(("transfer", dt, 0, rss))
    dt, rss, n = timed([worker, "run", "--stage", "align", "--teacher", d("teacher"), "--student", d("s0"), "--out",
                        d("s1"), "--tokens", s["align"], "--lr", s["align_lr"], "--warmup", "10", *conv_common], log)
    rows.append(("align (step 1)", dt, n, rss))
    conv = n
    dt, rss, n = timed([worker, "run", "--stage", "distill", "--teacher", d("teacher"), "--student", d("s1"), "--out",
                        d("s2"), "--tokens", s["distill"], "--lr", s["distill_lr"],
                        *(["--lr2", s["distill_lr2"]] if s["distill_lr2"] else []), "--warmup", "10", *conv_common],
                       log)
    rows.append(("distill (step 2)", dt, n, rss))
    conv += n
    final = d("s2")
    if a.extend:
        dt, rss, n = timed([worker, "run", "--stage", "extend", "--student", d("s2"), "--out", d("s3"), "--tokens",
                            "8K", "--lr", "1e-4", "--schedule", "flat", "--warmup", "0", "--data", data, "--seq-len",
                            str(2 * T), "--batch", str(s["batch"] // 2), "--log-every", "50"], log)
        rows.append(("extend (step 3)", dt, n, rss))
        conv += n
        final = d("s3")
    dt, rss, _ = timed([worker, "run", "--stage", "export", "--student", final, "--teacher", d("teacher"), "--out",
                        d("export")], log)
    rows.append(("export", dt, 0, rss))
    wall = time.time() - t_all
    lt, nwin = score(radlads, d("teacher"), held, T)
    l0, _ = score(radlads, d("s0"), held, T)
    l1, _ = score(radlads, d("s1"), held, T)
    ls, _ = score(radlads, d("export"), held, T)
    print(f"scale {a.scale}: teacher hidden {s['hidden']} layers {s['layers']} heads {s['heads']}/{s['kv']} "
          f"ffn {s['ffn']} vocab {vocab} ({a.tokenizer}); seq {T}; pretrain batch {s['batch']} lr {a.pre_lr}; "
          f"align/distill batch {s['conv_batch']}, align lr {s['align_lr']}, distill lr {s['distill_lr']}"
          f"{', time-mix lr2 ' + s['distill_lr2'] if s['distill_lr2'] else ''}; work folder {work}")
    print("| stage | wall s | tokens | tokens/s | peak RSS MiB |")
    print("|---|---|---|---|---|")
    for name, dt, n, rss in rows:
        print(f"| {name} | {dt:.1f} | {n} | {n / dt if n else 0:.0f} | {rss:.0f} |")
    print(f"\nheld-out ({nwin} windows of {T} tokens, mean CE in nats):")
    print(f"| model | loss |\n|---|---|\n| teacher | {lt:.4f} |\n| student after transfer (untrained) | {l0:.4f} |\n"
          f"| student after align | {l1:.4f} |\n| student after distill{' + extend' if a.extend else ''} (exported) | {ls:.4f} |")
    print(f"\nstudent/teacher loss ratio {ls / lt:.4f} (goal <= 1.03); conversion tokens {conv} = "
          f"{100 * conv / pre_tokens:.3f}% of the teacher's {pre_tokens} pretraining tokens (goal <= 5%); "
          f"total wall {wall:.0f} s")
    print("exported folder:", sorted(os.listdir(d("export"))))
    if not a.keep:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
