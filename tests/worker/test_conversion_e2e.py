"""End to end at tiny scale (issue 5's acceptance test), real processes only:

  radlads tokenize --tokenizer bytes (train text / held-out text, the last 10 %, never trained on)
  radlads init-model (Qwen2-style softmax teacher, vocab 257) -> radlads-worker run --stage pretrain
  -> transfer (RAD-RWKV7) -> align -> distill -> extend (short, 2x seq) -> export
  radlads score --window SEQ on the held-out tokens: teacher, untrained student (after transfer), student.

Asserts: the converted student's held-out loss is within 10 % of the teacher's and far below the untrained
student's; the trainer's own validation loss (--valid) equals `radlads score --window` on the same tokens;
the exported folder carries the byte tokenizer.  Sizes are chosen to finish in about a minute on 2 cores."""
import json
import os
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("RADLADS_BUILD", "build")
SRC = os.environ.get("RADLADS_SRC", ".")
sys.path.insert(0, os.path.join(SRC, "tests"))
from testdata import english_text  # noqa: E402
RADLADS = os.path.join(BUILD, "cli", "radlads")
WORKER = os.path.join(BUILD, "worker", "radlads-worker")
SEQ, BATCH = 64, 8
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from poolfix import check, failures  # noqa: E402  (the checks' bookkeeping)


def run(*args):
    t0 = time.time()
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        raise SystemExit(f"command failed: {' '.join(map(str, args))}")
    return r, time.time() - t0


def score(model, tokens):
    r, _ = run(RADLADS, "score", "--model", model, "--tokens", tokens, "--window", SEQ, "--json")
    return json.loads(r.stdout)["mean_cross_entropy"]


def last_valid(out):
    v = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if '"valid_loss"' in line]
    return v[-1]["valid_loss"] if v else None


def main():
    for exe in (RADLADS, WORKER):
        if not os.path.exists(exe):
            print(f"missing {exe}: build first (RADLADS_BUILD={BUILD})")
            return 1
    t_all = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        d = lambda n: os.path.join(tmp, n)  # noqa: E731
        text = english_text(400000)
        cut = len(text) * 9 // 10
        open(d("train.txt"), "wb").write(text[:cut])
        open(d("held.txt"), "wb").write(text[cut:])
        run(RADLADS, "init-model", "--arch", "qwen2", "--hidden", "64", "--layers", "2", "--heads", "2", "--kv-heads",
            "1", "--intermediate", "192", "--vocab", "257", "--seed", "1", "--out", d("init"))
        run(RADLADS, "tokenize", "--tokenizer", "bytes", "--in", d("train.txt"), "--out", d("train"), "--no-progress",
            "--write-tokenizer", d("init"))
        run(RADLADS, "tokenize", "--tokenizer", "bytes", "--in", d("held.txt"), "--out", d("held"), "--no-progress")
        data, held = d("train.tok"), d("held.tok")
        common = ["--data", data, "--valid", held, "--valid-windows", "100000", "--seq-len", SEQ, "--batch", BATCH, "--log-every", "100",
                  "--checkpoint-every", "200"]
        times = {}
        _, times["pretrain"] = run(WORKER, "run", "--stage", "pretrain", "--student", d("init"), "--out",
                                   d("teacher"), "--tokens", "800K", "--lr", "3e-3:1e-4", "--warmup", "30", *common)
        _, times["transfer"] = run(WORKER, "run", "--stage", "transfer", "--teacher", d("teacher"), "--arch",
                                   "rad-rwkv7", "--out", d("s0"))
        _, times["align"] = run(WORKER, "run", "--stage", "align", "--teacher", d("teacher"), "--student", d("s0"),
                                "--out", d("s1"), "--tokens", "24K", "--lr", "1e-3:1e-5", "--warmup", "10", *common)
        _, times["distill"] = run(WORKER, "run", "--stage", "distill", "--teacher", d("teacher"), "--student", d("s1"),
                                  "--out", d("s2"), "--tokens", "96K", "--lr", "1e-3:1e-4", "--warmup", "10", *common)
        _, times["extend"] = run(WORKER, "run", "--stage", "extend", "--student", d("s2"), "--out", d("s3"),
                                 "--tokens", "8K", "--lr", "1e-4", "--schedule", "flat", "--warmup", "0", "--data",
                                 data, "--seq-len", 2 * SEQ, "--batch", BATCH // 2, "--log-every", "100")
        _, times["export"] = run(WORKER, "run", "--stage", "export", "--student", d("s3"), "--teacher", d("teacher"),
                                 "--out", d("export"))
        print("stage seconds:", ", ".join(f"{k} {v:.1f}" for k, v in times.items()))
        lt, l0, ls = score(d("teacher"), held), score(d("s0"), held), score(d("export"), held)
        print(f"held-out CE (nats, {SEQ}-token windows): teacher {lt:.4f}, untrained student {l0:.4f}, "
              f"converted student {ls:.4f}; ratio {ls / lt:.4f}")
        check("converted student's held-out loss within 10% of the teacher's", ls <= 1.10 * lt, f"{ls / lt:.4f}")
        check("... and far below the untrained student's (closes >= 75% of the gap to the teacher)",
              l0 - ls >= 0.75 * (l0 - lt), f"{l0:.3f} -> {ls:.3f}")
        check("the teacher learned the text (held-out CE < 2.6 nats, uniform is 5.55)", lt < 2.6, f"{lt:.3f}")
        for stage, out in (("pretrain", d("teacher")), ("distill", d("s2"))):
            v = last_valid(out)
            ref = score(out, held)
            check(f"{stage}: final validation loss in metrics.jsonl equals `radlads score --window {SEQ}`",
                  v is not None and abs(v - ref) <= 1e-4 * ref, f"{v} vs {ref:.6f}")
        check("exported folder carries the byte tokenizer", os.path.exists(os.path.join(d("export"), "tokenizer.json"))
              and os.path.exists(os.path.join(d("export"), "tokenizer_config.json")))
    print(f"total {time.time() - t_all:.0f} s")
    print(f"{len(failures)} failures" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
