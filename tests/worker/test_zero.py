"""ZeRO-1 (--zero 1 / job-spec `zero: 1`) under real mpirun: the AdamW moments sharded over the ranks.

- 2 ranks, zero=1 vs zero=0, same seed and global batch (align and distill): every step's loss and grad norm
  and the final weights are bit-identical, and so is the optimizer state a checkpoint holds (rank 0 gathers
  the shards into the same optimizer.safetensors).  Expected exactly: a sum of two floats does not depend on
  the order, so MPI_Reduce_scatter gives the bits MPI_Allreduce gives; the clip norm is assembled from the
  shards' sums in double, and its float clip factor is what AdamW sees.  The same with 700-float buckets
  (packed buckets, buckets cut by a shard boundary).
- 3 ranks (uneven shards, a middle rank): zero=1 vs zero=0 within fp32 reduction error (three summands may be
  added in another order): losses rel < 1e-5, weights max abs diff < 1e-5.
- optimizer-state bytes per rank, as printed at stage start and in metrics.jsonl: half with 2 ranks.
- 1 rank with zero=1: a no-op, bit-identical to zero=0.
- a NaN gradient in either rank's shard stops both ranks naming the tensor (the owners' flags are summed).
- stop after step 5 (--stop-after) and kill -9 of a rank at a random moment, then --resume: bit-exact against
  the uninterrupted zero=1 run (weights, optimizer state of a later checkpoint, every step's metrics); a zero=1
  checkpoint resumed with zero=0 is bit-exact too (the format is the unsharded one), and on 1 rank it runs.
- through radladsd: a job whose align stage has `zero: 1` runs sharded on a launched 2-rank pool; a spec with
  `zero: 2` is refused by `radlads submit` with the field named.

usage: test_zero.py [test_name ...]   (default: all)"""
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from poolfix import (WORKER, check, failures, make_teacher, mpirun, processes, read_bytes, run,  # noqa: E402
                     safetensors)



def metrics(out):
    """step -> (loss, grad_norm, lr, lr2, optimizer_bytes_per_rank); a resumed run's later line wins."""
    by_step = {}
    for line in open(os.path.join(out, "metrics.jsonl")):
        m = json.loads(line)
        if "loss" in m:
            by_step[m["step"]] = (m["loss"], m["grad_norm"], m["lr"], m["lr2"], m["optimizer_bytes_per_rank"])
    return by_step



def opt_bytes(stdout):
    m = re.search(r"optimizer state \(AdamW m and v, fp32\): (\d+) bytes per rank", stdout)
    return int(m.group(1)) if m else None


def floats(path):
    return {k: np.frombuffer(v, dtype=np.float32) for k, v in safetensors(path).items()}


def setup(tmp):
    teacher, data = make_teacher(tmp)
    student = os.path.join(tmp, "student")
    run(WORKER, "run", "--stage", "transfer", "--teacher", teacher, "--arch", "rad-rwkv7", "--out", student)
    return teacher, data, student


def stage_args(stage, teacher, data, student, batch=4, steps=8):
    lr = "3e-3:1e-4" if stage == "align" else "1e-3:1e-4"
    return ["--stage", stage, "--teacher", teacher, "--student", student, "--data", data, "--tokens",
            str(steps * batch * 32), "--seq-len", "32", "--batch", str(batch), "--micro-batch", "1", "--lr", lr,
            "--warmup", "2", "--checkpoint-every", "2", "--keep-checkpoints", "5", "--log-every", "0"]


def test_sharded_equals_unsharded(tmp):
    teacher, data, student = setup(tmp)
    for stage in ("align", "distill"):
        args = stage_args(stage, teacher, data, student)
        out = {k: os.path.join(tmp, f"{stage}-{k}") for k in ("z0", "z1", "z1b", "r1z0", "r1z1")}
        r0 = run(*mpirun(2), WORKER, "run", *args, "--out", out["z0"])
        r1 = run(*mpirun(2), WORKER, "run", *args, "--out", out["z1"], "--zero", "1")
        r1b = run(*mpirun(2), WORKER, "run", *args, "--out", out["z1b"], "--zero", "1", "--bucket-floats", "700")
        check(f"{stage}: zero=1 reports reduce-scatter buckets", "reduce-scatter buckets" in r1.stdout and
              re.search(r"\d+ reduce-scatter buckets of ≤ 700 floats \([1-9]\d* packed\)", r1b.stdout) is not None)
        m0, m1, m1b = metrics(out["z0"]), metrics(out["z1"]), metrics(out["z1b"])
        same = all(m0[s][:4] == m1[s][:4] == m1b[s][:4] for s in m0) and len(m0) == len(m1) == len(m1b) == 8
        worst = max(abs(m0[s][0] - m1[s][0]) / abs(m0[s][0]) for s in m0)
        check(f"{stage}: 2 ranks zero=1 (default and 700-float buckets) vs zero=0: every step's loss and grad norm "
              "bit-identical", same, f"8 steps, max rel loss diff {worst:.1e}")
        w = {k: read_bytes(os.path.join(out[k], "model.safetensors")) for k in ("z0", "z1", "z1b")}
        check(f"{stage}: final weights bit-identical", w["z0"] == w["z1"] == w["z1b"])
        ck = "checkpoints/step-00000006/optimizer.safetensors"
        o = {k: read_bytes(os.path.join(out[k], ck)) for k in ("z0", "z1", "z1b")}
        check(f"{stage}: the gathered optimizer state of a checkpoint is the unsharded one, byte for byte",
              o["z0"] == o["z1"] == o["z1b"])
        b0, b1 = opt_bytes(r0.stdout), opt_bytes(r1.stdout)
        check(f"{stage}: optimizer-state bytes per rank about half with 2 ranks (stage start line)",
              b0 and b1 and abs(b1 / b0 - 0.5) < 0.01 and "ZeRO-1" in r1.stdout, f"{b0} -> {b1} bytes")
        check(f"{stage}: metrics.jsonl carries the same numbers", {v[4] for v in m0.values()} == {b0} and
              {v[4] for v in m1.values()} == {b1})
        # one rank: nothing to shard
        run(WORKER, "run", *args, "--out", out["r1z0"])
        r = run(WORKER, "run", *args, "--out", out["r1z1"], "--zero", "1")
        check(f"{stage}: 1 rank with zero=1 is a no-op: bit-identical weights and metrics, says so",
              read_bytes(os.path.join(out["r1z0"], "model.safetensors")) == read_bytes(os.path.join(out["r1z1"], "model.safetensors"))
              and [v[:4] for v in metrics(out["r1z0"]).values()] == [v[:4] for v in metrics(out["r1z1"]).values()]
              and "nothing to shard" in r.stdout)
    # a NaN gradient (injected at step 4) in rank 0's shard and in rank 1's: every rank stops naming the tensor
    args = stage_args("distill", teacher, data, student)
    for tensor in ("model.embed_tokens.weight", "model.layers.1.self_attn.r_k"):
        out = os.path.join(tmp, f"poison-{tensor}")
        r = run(*mpirun(2), "-x", "RADLADS_TEST_POISON", WORKER, "run", *args, "--out", out, "--zero", "1", ok=False,
                env=dict(os.environ, RADLADS_TEST_POISON=f"grad:4:{tensor}"))
        named = [ln for ln in r.stderr.splitlines() if f"step 4: the gradient of {tensor} is not finite" in ln]
        check(f"NaN gradient of {tensor.split('.', 1)[1]} under zero=1: both ranks stop naming it",
              r.returncode != 0 and len(named) == 2 and sorted(os.listdir(os.path.join(out, "checkpoints"))) ==
              ["step-00000002", "step-00000004"], named[0][:60] if named else r.stderr[-200:])
    # three ranks: shards of 1/3 each, the middle one owning neither end
    args = stage_args("distill", teacher, data, student, batch=6)
    o3 = {k: os.path.join(tmp, f"distill3-{k}") for k in ("z0", "z1")}
    run(*mpirun(3), WORKER, "run", *args, "--out", o3["z0"])
    r = run(*mpirun(3), WORKER, "run", *args, "--out", o3["z1"], "--zero", "1", "--bucket-floats", "5000")
    m0, m1 = metrics(o3["z0"]), metrics(o3["z1"])
    rel = max(abs(m0[s][0] - m1[s][0]) / abs(m0[s][0]) for s in m0)
    w0, w1 = floats(os.path.join(o3["z0"], "model.safetensors")), floats(os.path.join(o3["z1"], "model.safetensors"))
    dw = max(float(np.max(np.abs(w0[k] - w1[k]))) for k in w0)
    check("distill on 3 ranks: zero=1 vs zero=0 within fp32 reduction error (loss rel < 1e-5, weights < 1e-5)",
          len(m0) == len(m1) == 8 and rel < 1e-5 and dw < 1e-5, f"loss rel {rel:.1e}, weights max abs {dw:.1e}")
    b = opt_bytes(r.stdout)
    check("3 ranks: optimizer-state bytes per rank about a third", b and abs(b / m0[1][4] - 1 / 3) < 0.01,
          f"{m0[1][4]} -> {b} bytes")


def same_run(tag, a, b):
    check(f"{tag}: final weights byte-identical", read_bytes(os.path.join(a, "model.safetensors")) ==
          read_bytes(os.path.join(b, "model.safetensors")))
    ck = "checkpoints/step-00000006/optimizer.safetensors"
    pa, pb = os.path.join(a, ck), os.path.join(b, ck)
    check(f"{tag}: optimizer state at step 6 byte-identical", os.path.exists(pa) and os.path.exists(pb) and
          read_bytes(pa) == read_bytes(pb))
    ma, mb = metrics(a), metrics(b)
    check(f"{tag}: every step's loss, grad norm and lr identical", [v[:4] for v in ma.values()] ==
          [v[:4] for v in mb.values()] and sorted(ma) == sorted(mb) == list(range(1, 9)))


def kill_a_rank_after_first_checkpoint(cmd, out, rnd):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = os.path.join(out, "checkpoints", "step-00000002")
    while not os.path.exists(first) and p.poll() is None:
        time.sleep(0.005)
    time.sleep(rnd.random() * 0.3)
    ranks = [pid for pid, c in processes(out) if c.startswith(WORKER)]
    killed = bool(ranks) and p.poll() is None
    if killed:
        os.kill(rnd.choice(ranks), signal.SIGKILL)
    p.wait()
    deadline = time.time() + 30
    while processes(out) and time.time() < deadline:
        time.sleep(0.05)
    done = os.path.exists(os.path.join(out, "model.safetensors"))
    return not processes(out), "killed mid-run" if killed and not done else "the run ended before the kill"


def test_resume_bit_exact(tmp):
    teacher, data, student = setup(tmp)
    rnd = random.Random(int(os.environ.get("RADLADS_TEST_SEED", time.time())))
    for stage in ("align", "distill"):
        args = stage_args(stage, teacher, data, student)
        o = {k: os.path.join(tmp, f"{stage}-{k}") for k in ("full", "stop", "kill", "to0", "to1")}
        run(*mpirun(2), WORKER, "run", *args, "--out", o["full"], "--zero", "1")
        run(*mpirun(2), WORKER, "run", *args, "--out", o["stop"], "--zero", "1", "--stop-after", "5")
        check(f"{stage}: a stopped zero=1 run leaves no final model",
              not os.path.exists(os.path.join(o["stop"], "model.safetensors")))
        r = run(*mpirun(2), WORKER, "run", *args, "--out", o["stop"], "--zero", "1", "--resume")
        check(f"{stage}: resumes at the step-4 checkpoint", "resumed from" in r.stdout and "at step 4" in r.stdout)
        same_run(f"{stage} zero=1 stop after 5 + resume", o["full"], o["stop"])
        gone, how = kill_a_rank_after_first_checkpoint([*mpirun(2), WORKER, "run", *args, "--out", o["kill"],
                                                        "--zero", "1"], o["kill"], rnd)
        check(f"{stage}: kill -9 of a rank: mpirun ends the other one", gone, how)
        run(*mpirun(2), WORKER, "run", *args, "--out", o["kill"], "--zero", "1", "--resume")
        same_run(f"{stage} zero=1 kill -9 of a rank (random moment) + resume", o["full"], o["kill"])
        # the checkpoint is the unsharded format: zero off, or another world size, resumes from it
        run(*mpirun(2), WORKER, "run", *args, "--out", o["to0"], "--zero", "1", "--stop-after", "5")
        run(*mpirun(2), WORKER, "run", *args, "--out", o["to0"], "--resume")
        same_run(f"{stage} zero=1 stopped, resumed with zero=0", o["full"], o["to0"])
        run(*mpirun(2), WORKER, "run", *args, "--out", o["to1"], "--zero", "1", "--stop-after", "5")
        r = run(WORKER, "run", *args, "--out", o["to1"], "--zero", "1", "--resume")
        check(f"{stage}: a 2-rank zero=1 checkpoint resumes on 1 rank and finishes", "at step 4" in r.stdout and
              os.path.exists(os.path.join(o["to1"], "model.safetensors")))


def test_spec_zero_through_the_daemon(tmp):
    from harness import Daemon, wait_for
    from test_pool import stop_daemon, train_stage, write_spec
    teacher, data = make_teacher(tmp)
    out = os.path.join(tmp, "out")
    stages = ["transfer", train_stage("align", 8, lr="3e-3:1e-4", checkpoint_every=4, zero=1),
              train_stage("distill", 4, lr="1e-3:1e-4")]
    spec = write_spec(tmp, "zero", teacher, data, stages, out)
    bad = write_spec(tmp, "zero-bad", teacher, data, ["transfer", train_stage("align", 8, zero=2)], out + "-bad")
    d = Daemon(tmp, "--launcher", "local", "--worker", WORKER).start()
    try:
        r = d.cli("submit", bad, check=False)
        check("radlads submit refuses zero: 2 naming the field", r.returncode != 0 and
              "stages[1].zero: must be 0" in r.stderr, r.stderr.strip()[:110])
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        wait_for(lambda: d.json("show", jid)["state"] in ("COMPLETED", "FAILED"), timeout=120, what="the job to end")
        show = d.json("show", jid)
        check("a job with zero: 1 on its align stage completes on a 2-rank pool", show["state"] == "COMPLETED",
              show["state"])
        texts = "\n".join(ln["text"] for ln in d.json("logs", jid)["lines"])
        m = re.search(r"align: optimizer state \(AdamW m and v, fp32\): (\d+) bytes per rank \(ZeRO-1: .*; (\d+) "
                      r"bytes unsharded\)", texts)
        check("the align stage ran sharded: half the optimizer bytes per rank, in the job's log",
              m is not None and abs(int(m.group(1)) / int(m.group(2)) - 0.5) < 0.01, m.group(0)[:100] if m else "")
        check("the distill stage (no zero field) ran unsharded", "distill: optimizer state (AdamW m and v, fp32): "
              in texts and "every rank keeps all of it" in texts)
    finally:
        stop_daemon(d)


def main():
    tests = {n: f for n, f in globals().items() if n.startswith("test_")}
    names = sys.argv[1:] or list(tests)
    for name in names:
        print(name)
        with tempfile.TemporaryDirectory() as tmp:
            tests[name](tmp)
    print(f"{len(failures)} failures" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
