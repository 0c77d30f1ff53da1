"""Training stages: checkpoints, resume and clear errors (radlads-worker run, real processes).

- pretrain, align and distill: 2N steps straight == N steps, process gone (--stop-after, and a real kill -9
  at a random moment), --resume to the end: the final model.safetensors, the AdamW state of a later
  checkpoint and every step's loss are byte-identical, so the data order is identical too.
- keep-last-N checkpoints; each one verifies (manifest sizes and SHA-256).
- Bad input stops with a message that names the fix: data shorter than one window, token ids outside the
  model's vocabulary, a resume with other options, a teacher folder where a student is expected."""
import json
import os
import random
import signal
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from poolfix import check, failures  # noqa: E402  (the checks' bookkeeping)


def run(*args, ok=True):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if ok and r.returncode != 0:
        print(r.stdout, r.stderr)
        raise SystemExit(f"command failed: {' '.join(map(str, args))}")
    return r


def read(path):
    with open(path, "rb") as f:
        return f.read()


def losses(out):
    by_step = {}
    for line in open(os.path.join(out, "metrics.jsonl")):
        m = json.loads(line)
        by_step[m["step"]] = (m["loss"], m["grad_norm"], m["lr"])  # a resumed run's later line wins
    return by_step


def same_run(tag, a, b, ckpt_step):
    check(f"{tag}: final model.safetensors byte-identical", read(os.path.join(a, "model.safetensors")) ==
          read(os.path.join(b, "model.safetensors")))
    ck = f"checkpoints/step-{ckpt_step:08d}"
    pa, pb = os.path.join(a, ck, "optimizer.safetensors"), os.path.join(b, ck, "optimizer.safetensors")
    check(f"{tag}: AdamW state at step {ckpt_step} byte-identical", os.path.exists(pa) and os.path.exists(pb)
          and read(pa) == read(pb))
    la, lb = losses(a), losses(b)
    check(f"{tag}: every step's loss, grad norm and lr identical (same data order)", la == lb and len(la) > 0,
          f"{len(la)} steps")


def main():
    for exe in (RADLADS, WORKER):
        if not os.path.exists(exe):
            print(f"missing {exe}: build first (RADLADS_BUILD={BUILD})")
            return 1
    rnd = random.Random(int(os.environ.get("RADLADS_TEST_SEED", time.time())))
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "text.txt")
        open(text, "wb").write(english_text(60000))
        tok = os.path.join(SRC, "tests", "tokenizer", "fixtures", "gpt2_plain.json")
        run(RADLADS, "tokenize", "--tokenizer", tok, "--in", text, "--out", os.path.join(tmp, "data"), "--no-progress")
        data = os.path.join(tmp, "data.tok")
        teacher = os.path.join(tmp, "teacher")
        run(RADLADS, "init-model", "--arch", "qwen2", "--hidden", "32", "--layers", "2", "--heads", "2", "--kv-heads",
            "1", "--intermediate", "64", "--vocab", "293", "--seed", "1", "--out", teacher)
        student = os.path.join(tmp, "student")
        run(WORKER, "run", "--stage", "transfer", "--teacher", teacher, "--arch", "rad-rwkv7", "--out", student)
        common = ["--data", data, "--tokens", str(8 * 4 * 32), "--seq-len", "32", "--batch", "4", "--micro-batch", "2",
                  "--lr", "3e-3:1e-4", "--warmup", "2", "--checkpoint-every", "2", "--keep-checkpoints", "3",
                  "--log-every", "0"]
        stages = [("pretrain", ["--student", teacher]),
                  ("align", ["--teacher", teacher, "--student", student]),
                  ("distill", ["--teacher", teacher, "--student", student, "--lr2", "1e-2:1e-3"])]
        for stage, extra in stages:
            print(stage)
            a, b, c = (os.path.join(tmp, f"{stage}_{x}") for x in "abc")
            run(WORKER, "run", "--stage", stage, *extra, *common, "--out", a)
            cks = sorted(os.listdir(os.path.join(a, "checkpoints")))
            check(f"{stage}: keep-last-3 checkpoints (steps 2..6 written, final is the model)",
                  cks == ["step-00000002", "step-00000004", "step-00000006"], str(cks))
            # stopped after step 5: step 5 is lost, the resume restarts from step 4
            run(WORKER, "run", "--stage", stage, *extra, *common, "--out", b, "--stop-after", "5")
            check(f"{stage}: a stopped run leaves no final model", not os.path.exists(os.path.join(b, "model.safetensors")))
            r = run(WORKER, "run", "--stage", stage, *extra, *common, "--out", b, "--resume")
            check(f"{stage}: resume reports where it continues", "resumed from" in r.stdout and "at step 4" in r.stdout)
            same_run(f"{stage} stop after 5 + resume", a, b, 6)
            # kill -9 at a random moment after the first checkpoint
            p = subprocess.Popen([WORKER, "run", "--stage", stage, *extra, *common, "--out", c],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            first = os.path.join(c, "checkpoints", "step-00000002")
            while not os.path.exists(first) and p.poll() is None:
                time.sleep(0.005)
            time.sleep(rnd.random() * 0.3)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
            r = run(WORKER, "run", "--stage", stage, *extra, *common, "--out", c, "--resume")
            same_run(f"{stage} kill -9 (random moment) + resume", a, c, 6)
        print("errors")
        big = ["--tokens", "1M", "--seq-len", "100000", "--batch", "1"]
        r = run(WORKER, "run", "--stage", "pretrain", "--student", teacher, "--data", data, "--out",
                os.path.join(tmp, "e1"), *big, ok=False)
        check("data shorter than one window: clear error", r.returncode == 1 and "too few" in r.stderr, r.stderr.strip()[:90])
        small = os.path.join(tmp, "small_vocab")
        run(RADLADS, "init-model", "--arch", "qwen2", "--hidden", "32", "--layers", "1", "--heads", "2", "--kv-heads",
            "1", "--intermediate", "64", "--vocab", "100", "--out", small)
        r = run(WORKER, "run", "--stage", "pretrain", "--student", small, *common, "--out", os.path.join(tmp, "e2"), ok=False)
        check("token ids outside the vocabulary: clear error", r.returncode == 1 and "vocabulary" in r.stderr,
              r.stderr.strip()[:90])
        r = run(WORKER, "run", "--stage", "align", "--teacher", teacher, "--student", student, *common, "--batch", "8",
                "--out", os.path.join(tmp, "align_a"), "--resume", ok=False)
        check("resume with another batch size is refused", r.returncode == 1 and "other options" in r.stderr)
        r = run(WORKER, "run", "--stage", "align", "--teacher", teacher, "--student", teacher, *common,
                "--out", os.path.join(tmp, "e3"), ok=False)
        check("a teacher folder as --student: says to run transfer", r.returncode == 1 and "transfer" in r.stderr)
        r = run(WORKER, "run", "--stage", "align", "--student", student, *common, "--out", os.path.join(tmp, "e4"), ok=False)
        check("align without --teacher: says so", r.returncode == 1 and "--teacher" in r.stderr)
    print(f"{len(failures)} failures" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
