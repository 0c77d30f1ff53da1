"""Training data and failures (radlads / radlads-worker as real processes):

- `radlads tokenize --tokenizer bytes`: ids are the text's bytes, 256 ends each document, vocab 257;
  `radlads score --tokens` and `radlads decode --tokenizer bytes` work on the file.
- --valid-fraction: the tail of the stream is never sampled for training (a marker byte that only the tail
  holds never shows up in any traced sample); validation loss lines at checkpoints and at the end; bad
  combinations are refused.
- A vocabulary mismatch between the data (or --valid data) and the model/teacher is a clear error up front.
- NaN gradient / infinite loss injected at step K (RADLADS_TEST_POISON): the stage stops with exit 1 and an
  error naming the step (and the tensor); no final model; the last checkpoint verifies (`radlads inspect`)
  and a resume from it finishes with the same model as a run that never failed.
- `--device` other than cpu|cuda is refused; `--device cuda` where no GPU (or no CUDA build) is at hand
  stops with the reason.
- `radlads inspect` summarises teacher, student, exported and checkpoint folders; a damaged checkpoint
  fails verification (exit 1)."""
import json
import os
import subprocess
import sys
import tempfile

BUILD = os.environ.get("RADLADS_BUILD", "build")
SRC = os.environ.get("RADLADS_SRC", ".")
sys.path.insert(0, os.path.join(SRC, "tests"))
from testdata import english_text  # noqa: E402
RADLADS = os.path.join(BUILD, "cli", "radlads")
WORKER = os.path.join(BUILD, "worker", "radlads-worker")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from poolfix import check, failures  # noqa: E402  (the checks' bookkeeping)


LSAN_CRASH = "LeakSanitizer has encountered a fatal error"  # its tracer dying at exit, no leak (scripts/test.sh)


def run(*args, ok=True, env=None):
    for _ in range(2):  # under the sanitizers, once more when LeakSanitizer's own tracer died at exit
        r = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                           env=dict(os.environ, **env) if env else None)
        if LSAN_CRASH not in r.stderr:
            break
    if ok and r.returncode != 0:
        print(r.stdout, r.stderr)
        raise SystemExit(f"command failed: {' '.join(map(str, args))}")
    return r


def token_ids(path):
    raw = open(path, "rb").read()
    assert raw[:8] == b"RLTOKENS"
    width = int.from_bytes(raw[12:16], "little")
    n = int.from_bytes(raw[16:24], "little")
    vocab = int.from_bytes(raw[32:36], "little")
    eos = int.from_bytes(raw[36:40], "little")
    ids = [int.from_bytes(raw[64 + i * width:64 + (i + 1) * width], "little") for i in range(n)]
    return ids, vocab, eos


def inspect(path):
    r = run(RADLADS, "inspect", path, "--json", ok=False)
    return r.returncode, json.loads(r.stdout) if r.stdout.strip() else {}


def main():
    for exe in (RADLADS, WORKER):
        if not os.path.exists(exe):
            print(f"missing {exe}: build first (RADLADS_BUILD={BUILD})")
            return 1
    with tempfile.TemporaryDirectory() as tmp:
        d = lambda n: os.path.join(tmp, n)  # noqa: E731
        print("byte vocabulary")
        text = english_text(40000)
        open(d("text.txt"), "wb").write(text)
        run(RADLADS, "init-model", "--arch", "qwen2", "--hidden", "32", "--layers", "2", "--heads", "2", "--kv-heads",
            "1", "--intermediate", "64", "--vocab", "257", "--seed", "1", "--out", d("init"))
        run(RADLADS, "tokenize", "--tokenizer", "bytes", "--in", d("text.txt"), "--out", d("data"), "--no-progress",
            "--write-tokenizer", d("init"))
        ids, vocab, eos = token_ids(d("data.tok"))
        check("ids are the text's bytes, then EOS 256; header vocab 257, eos 256",
              ids == list(text.decode("utf-8", "replace").encode()) + [256] and vocab == 257 and eos == 256,
              f"{len(ids)} ids")
        r = run(RADLADS, "decode", "--tokenizer", "bytes", "--ids", ",".join(map(str, ids[:200])))
        check("decode --tokenizer bytes gives the text back", r.stdout.encode() == text[:200])
        r = run(RADLADS, "score", "--model", d("init"), "--tokens", d("data.tok"), "--window", "64", "--json")
        s = json.loads(r.stdout)
        check("score --tokens on a byte token file: an untrained model scores about ln 257 = 5.55",
              abs(s["mean_cross_entropy"] - 5.549) < 0.1 and s["windows"] == len(ids) // 64,
              f"{s['mean_cross_entropy']:.4f}")
        r = run(RADLADS, "tokenize", "--tokenizer", "byte", "--in", d("text.txt"), "--out", d("x"), "--no-progress",
                ok=False)
        check("an unknown tokenizer name is refused", r.returncode != 0 and "byte" in r.stderr, r.stderr.strip()[:80])

        print("validation split")
        marker = next(c for c in b"~|#@^`" if c not in text[:36200])
        tail = text[:36200] + bytes([marker]) * 3800
        open(d("tail.txt"), "wb").write(tail)
        run(RADLADS, "tokenize", "--tokenizer", "bytes", "--in", d("tail.txt"), "--out", d("tail"), "--no-progress")
        common = ["--seq-len", "32", "--batch", "4", "--lr", "3e-3:1e-4", "--warmup", "2", "--log-every", "4"]
        r = run(WORKER, "run", "--stage", "pretrain", "--student", d("init"), "--data", d("tail.tok"), "--out",
                d("vf"), "--tokens", "16K", "--valid-fraction", "0.1", "--checkpoint-every", "40", "--trace-samples",
                *common)
        lines = [json.loads(x) for x in open(os.path.join(d("vf"), "metrics.jsonl"))]
        samples = [t for x in lines for row in x.get("samples", []) for t in row]
        check("the held-out tail is never trained on (its marker byte is in no sample)",
              len(samples) > 16000 and marker not in samples, f"{len(samples)} sampled tokens")
        vsteps = [x["step"] for x in lines if "valid_loss" in x]
        check("validation at every checkpoint step and at the end (metrics.jsonl)", vsteps == [40, 80, 120, 125],
              str(vsteps))
        check("validation on the progress lines", "valid-loss" in r.stdout and "windows of 32 tokens" in r.stdout)
        vl = [x["valid_loss"] for x in lines if "valid_loss" in x]
        check("the held-out tail (one repeated byte) is unlike the training text: high validation loss",
              vl[-1] > 3.0, f"{vl[-1]:.3f}")
        r = run(WORKER, "run", "--stage", "pretrain", "--student", d("init"), "--data", d("data.tok"), "--out",
                d("e1"), "--tokens", "1K", "--valid-fraction", "0.1", "--valid", d("data.tok"), *common, ok=False)
        check("--valid and --valid-fraction together are refused", r.returncode == 1 and "not both" in r.stderr)
        r = run(WORKER, "run", "--stage", "pretrain", "--student", d("init"), "--data", d("data.tok"), "--out",
                d("e2"), "--tokens", "1K", "--valid-fraction", "0.99", *common, "--seq-len", "512", ok=False)
        check("a fraction that leaves too little to train on is refused", r.returncode == 1 and "too few" in r.stderr
              and "validation" in r.stderr, r.stderr.strip()[:100])

        print("vocabulary mismatch")
        gpt2 = os.path.join(SRC, "tests", "tokenizer", "fixtures", "gpt2_plain.json")
        run(RADLADS, "tokenize", "--tokenizer", gpt2, "--in", d("text.txt"), "--out", d("g"), "--no-progress")
        run(WORKER, "run", "--stage", "transfer", "--teacher", d("init"), "--arch", "rad-rwkv7", "--out", d("s0"))
        r = run(WORKER, "run", "--stage", "align", "--teacher", d("init"), "--student", d("s0"), "--data", d("g.tok"),
                "--out", d("e3"), "--tokens", "1K", *common, ok=False)
        check("data tokenized for 293 ids vs a teacher of 257: clear error", r.returncode == 1 and "293" in r.stderr
              and "257" in r.stderr and "teacher" in r.stderr, r.stderr.strip()[:110])
        r = run(WORKER, "run", "--stage", "pretrain", "--student", d("init"), "--data", d("data.tok"), "--valid",
                d("g.tok"), "--out", d("e4"), "--tokens", "1K", *common, ok=False)
        check("--valid data of another vocabulary: clear error", r.returncode == 1 and "validation data" in r.stderr
              and "293" in r.stderr, r.stderr.strip()[:110])

        print("devices")
        r = run(WORKER, "run", "--device", "tpu", "--stage", "pretrain", "--student", d("init"), "--data",
                d("data.tok"), "--out", d("e5"), "--tokens", "1K", *common, ok=False)
        good = r.returncode == 2 and "cpu or cuda" in r.stderr
        check("--device tpu is refused naming the choices", good,
              r.stderr.strip()[:80] if good else f"exit {r.returncode}: {r.stderr.strip()}")
        has_gpu = subprocess.run(["sh", "-c", "nvidia-smi -L"], capture_output=True).returncode == 0
        if not has_gpu:
            r = run(WORKER, "run", "--device", "cuda", "--stage", "pretrain", "--student", d("init"), "--data",
                    d("data.tok"), "--out", d("e6"), "--tokens", "1K", *common, ok=False)
            check("--device cuda without a GPU (or without CUDA built in): exit 1 with the reason",
                  r.returncode == 1 and "CUDA" in r.stderr and "CPU backend" in r.stderr, r.stderr.strip()[:100])

        print("NaN / inf")
        ck = ["--data", d("data.tok"), "--tokens", str(12 * 4 * 32), "--checkpoint-every", "2", "--keep-checkpoints",
              "10", *common]
        run(WORKER, "run", "--stage", "pretrain", "--student", d("init"), "--out", d("clean"), *ck)
        tensor = "model.layers.1.mlp.down_proj.weight"
        r = run(WORKER, "run", "--stage", "pretrain", "--student", d("init"), "--out", d("nan"), *ck, ok=False,
                env={"RADLADS_TEST_POISON": f"grad:5:{tensor}"})
        check("NaN gradient at step 5: exit 1, the error names the step and the tensor",
              r.returncode == 1 and "step 5" in r.stderr and tensor in r.stderr and "not finite" in r.stderr,
              r.stderr.strip()[:110])
        check("... no final model is written", not os.path.exists(os.path.join(d("nan"), "model.safetensors")))
        rc, doc = inspect(os.path.join(d("nan"), "checkpoints", "step-00000004"))
        check("... the last good checkpoint (step 4) verifies (radlads inspect)", rc == 0 and
              doc["checkpoint"]["verified"] and doc["checkpoint"]["step"] == 4)
        check("... and nothing after it was written", sorted(os.listdir(os.path.join(d("nan"), "checkpoints"))) ==
              ["step-00000002", "step-00000004"])
        run(WORKER, "run", "--stage", "pretrain", "--student", d("init"), "--out", d("nan"), *ck, "--resume")
        same = open(os.path.join(d("nan"), "model.safetensors"), "rb").read() == \
            open(os.path.join(d("clean"), "model.safetensors"), "rb").read()
        check("... a resume from it ends with the model of a run that never failed (bit-exact)", same)
        r = run(WORKER, "run", "--stage", "distill", "--teacher", d("init"), "--student", d("s0"), "--out",
                d("naninf"), *ck, ok=False, env={"RADLADS_TEST_POISON": "loss:3"})
        check("infinite loss at step 3 (distill): exit 1, the error names the step", r.returncode == 1 and
              "step 3" in r.stderr and "loss is inf" in r.stderr, r.stderr.strip()[:100])
        rc, doc = inspect(os.path.join(d("naninf"), "checkpoints", "step-00000002"))
        check("... checkpoint 2 verifies", rc == 0 and doc["checkpoint"]["verified"])
        r = run(WORKER, "run", "--stage", "distill", "--teacher", d("init"), "--student", d("s0"), "--out",
                d("nan2"), *ck, ok=False, env={"RADLADS_TEST_POISON": "grad:0"})
        check("NaN in the first trainable tensor at step 0 (distill): named, before any checkpoint",
              r.returncode == 1 and "step 0" in r.stderr and "gradient of model." in r.stderr, r.stderr.strip()[:110])

        print("inspect")
        rc, doc = inspect(d("clean"))
        check("a trained teacher folder: architecture, dims, parameters, tensors, dtype, checkpoints, metrics",
              rc == 0 and doc["kind"] == "softmax-attention model" and doc["config"]["hidden_size"] == 32
              and doc["weights"]["tensors"] == 27 and doc["weights"]["dtypes"] == {"F32": 27}
              and doc["weights"]["parameters"] > 30000 and len(doc["checkpoints"]) == 5
              and all(c["verified"] for c in doc["checkpoints"]) and doc["metrics"]["step"] == 12
              and "tokenizer.json" in doc["tokenizer"], f"{doc.get('weights')}")
        rc, doc = inspect(d("s0"))
        check("a student folder: RAD-RWKV7 variant b from a qwen2 teacher", rc == 0 and doc["kind"] == "RADLADS student"
              and doc["config"]["model_type"] == "rad-rwkv7" and doc["config"]["variant"] == "b"
              and doc["config"]["teacher_model_type"] == "qwen2")
        run(WORKER, "run", "--stage", "export", "--student", d("s0"), "--teacher", d("init"), "--out", d("exp"))
        rc, doc = inspect(d("exp"))
        check("an exported folder: student config and the teacher's tokenizer", rc == 0 and
              doc["config"]["architecture"] == "RADRWKV7ForCausalLM" and "tokenizer.json" in doc["tokenizer"])
        cdir = os.path.join(d("clean"), "checkpoints", "step-00000010")
        rc, doc = inspect(cdir)
        files = {f["name"]: f for f in doc["checkpoint"]["files"]}
        check("a checkpoint: stage, step, tokens and every file with its sha256, verified", rc == 0 and
              doc["checkpoint"]["stage"] == "pretrain" and doc["checkpoint"]["tokens"] == 10 * 4 * 32 and
              set(files) >= {"model.safetensors", "optimizer.safetensors"} and
              all(len(f["sha256"]) == 64 and f["verified"] for f in files.values()) and
              doc["optimizer"]["tensors"] == 54)
        with open(os.path.join(cdir, "optimizer.safetensors"), "r+b") as f:
            f.seek(200)
            b = f.read(1)
            f.seek(200)
            f.write(bytes([b[0] ^ 0x40]))
        rc, doc = inspect(cdir)
        check("one flipped bit: the checkpoint does not verify (exit 1, SHA-256 named)", rc == 1 and
              not doc["checkpoint"]["verified"] and "sha256" in doc["checkpoint"].get("error", "").lower())
        r = run(RADLADS, "inspect", tmp + "/nothing-here", ok=False)
        check("a missing folder: exit 1 with a message", r.returncode == 1 and "not a folder" in r.stderr)
        r = run(RADLADS, "inspect", d("clean"))
        check("the text summary names the architecture and the parameter count", "Qwen2ForCausalLM" in r.stdout and
              "parameters" in r.stdout and "verified" in r.stdout)
    print(f"{len(failures)} failures" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
