"""An output folder on a full disk (a 2 MiB tmpfs): the stage stops with a clear error (exit 1, "No space
left on device", which checkpoint, earlier checkpoints intact); every checkpoint written before verifies
(`radlads inspect`), no partial step-N.tmp is left behind as a checkpoint, and a resume into a folder with
room continues from the last good one.  Needs root to mount; exits 77 with the reason otherwise."""
import json
import os
import shutil
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


def run(*args, ok=True):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if ok and r.returncode != 0:
        print(r.stdout, r.stderr)
        raise SystemExit(f"command failed: {' '.join(map(str, args))}")
    return r


def main():
    for exe in (RADLADS, WORKER):
        if not os.path.exists(exe):
            print(f"missing {exe}: build first (RADLADS_BUILD={BUILD})")
            return 1
    with tempfile.TemporaryDirectory() as tmp:
        d = lambda n: os.path.join(tmp, n)  # noqa: E731
        disk = d("disk")
        os.makedirs(disk)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", disk], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"skip: cannot mount a 2 MiB tmpfs ({(r.stderr or r.stdout).strip() or 'mount failed'}); this test "
                  "needs root (or CAP_SYS_ADMIN)")
            return 77
        try:
            open(d("text.txt"), "wb").write(english_text(40000))
            # about 0.45 MB per checkpoint (weights + AdamW moments): the 2 MiB disk fills at the 4th or 5th
            run(RADLADS, "init-model", "--arch", "qwen2", "--hidden", "32", "--layers", "2", "--heads", "2",
                "--kv-heads", "1", "--intermediate", "64", "--vocab", "257", "--seed", "1", "--out", d("init"))
            run(RADLADS, "tokenize", "--tokenizer", "bytes", "--in", d("text.txt"), "--out", d("data"),
                "--no-progress")
            out = os.path.join(disk, "run")
            args = ["--stage", "pretrain", "--student", d("init"), "--data", d("data.tok"), "--tokens",
                    str(20 * 4 * 32), "--seq-len", "32", "--batch", "4", "--lr", "3e-3:1e-4", "--warmup", "2",
                    "--checkpoint-every", "2", "--keep-checkpoints", "100", "--log-every", "0"]
            r = run(WORKER, "run", *args, "--out", out, ok=False)
            err = r.stderr.strip()
            print("  error:", err)
            check("full disk: exit 1 with a clear error (no space, which checkpoint, earlier ones intact)",
                  r.returncode == 1 and "No space left on device" in err and "checkpoint at step" in err
                  and "intact" in err)
            cdir = os.path.join(out, "checkpoints")
            done = sorted(x for x in os.listdir(cdir) if not x.endswith(".tmp"))
            check("some checkpoints were written before the disk filled", len(done) >= 2, str(done))
            ok = True
            for c in done:
                ri = run(RADLADS, "inspect", os.path.join(cdir, c), "--json", ok=False)
                ok &= ri.returncode == 0 and json.loads(ri.stdout)["checkpoint"]["verified"]
            check("every checkpoint written before the failure verifies (radlads inspect)", ok)
            check("no final model on the full disk", not os.path.exists(os.path.join(out, "model.safetensors")))
            last = int(done[-1].split("-")[1])
            # the same run, moved to a disk with room, resumes from the last good checkpoint and finishes
            roomy = d("roomy")
            shutil.copytree(out, roomy)
            r = run(WORKER, "run", *args, "--out", roomy, "--resume", ok=False)
            check("resumed on a disk with room: continues from the last good checkpoint and finishes",
                  r.returncode == 0 and f"at step {last}" in r.stdout and
                  os.path.exists(os.path.join(roomy, "model.safetensors")), r.stderr.strip()[:100])
            r = run(WORKER, "run", *args, "--out", os.path.join(disk, "run2"), ok=False)
            check("a second run on the still-full disk fails cleanly too", r.returncode == 1 and
                  ("No space left" in r.stderr or "cannot" in r.stderr), r.stderr.strip()[:100])
        finally:
            subprocess.run(["umount", disk], capture_output=True)
    print(f"{len(failures)} failures" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
