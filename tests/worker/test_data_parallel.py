"""Data parallel training under real mpirun: one rank and two ranks with the same global batch give the same
loss curve within fp32 reduction error (pretrain, align, distill), and the bucketed gradient all-reduce
gives bit-identical results whatever the bucket size (in-place buckets, packed buckets of small tensors,
one bucket for everything): the buckets change how the sums travel, never what is summed.  The same with
the all-reduce overlapped with the backward (the default: a bucket starts once its layers' gradients are
final) and without (--overlap 0): bit-identical; and a rank whose backward fails half-way with buckets in
flight, or that cannot make its backend, stops both ranks with the reason instead of leaving the other waiting;
one that stops between two agreements ends the job after a bounded wait;
more ranks on a host than it shows GPUs are refused with what to change.

Each rank reads its own slice of every step's batch (global sample g = step·batch + rank·batch/ranks + j);
the two-rank run sums the two halves' gradients with MPI_Allreduce, the one-rank run accumulates the same
micro-batches in one process, so the difference is the order of fp32 additions only."""
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from poolfix import WORKER, check, failures, make_teacher, mpirun, run  # noqa: E402



def losses(out):
    return [json.loads(line)["loss"] for line in open(os.path.join(out, "metrics.jsonl"))]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        teacher, data = make_teacher(tmp)
        student = os.path.join(tmp, "student")
        run(WORKER, "run", "--stage", "transfer", "--teacher", teacher, "--arch", "rad-rwkv7", "--out", student)
        # 16 steps of a global batch of 4 sequences; each rank runs 2 micro-batches of 1, one rank runs 4.
        common = ["--data", data, "--tokens", str(16 * 4 * 32), "--seq-len", "32", "--batch", "4", "--micro-batch",
                  "1", "--warmup", "2", "--log-every", "0"]
        stages = [("pretrain", ["--student", teacher, "--lr", "3e-3:1e-4"]),
                  ("align", ["--teacher", teacher, "--student", student, "--lr", "3e-3:1e-4"]),
                  ("distill", ["--teacher", teacher, "--student", student, "--lr", "1e-3:1e-4"])]
        for stage, extra in stages:
            out = {k: os.path.join(tmp, f"{stage}-{k}") for k in ("r1", "r2", "r2b", "r2c", "r2n", "r2bn")}
            run(WORKER, "run", "--stage", stage, *extra, *common, "--out", out["r1"])
            r = run(*mpirun(2), WORKER, "run", "--stage", stage, *extra, *common, "--out", out["r2"])
            ov = re.search(r"(\d+) of (\d+) gradient buckets started their all-reduce during the backward", r.stdout)
            check(f"{stage}: overlap (default): reported (one bucket: it starts when the backward ends)",
                  ov is not None, ov.group(0) if ov else r.stdout[-300:])
            r = run(*mpirun(2), WORKER, "run", "--stage", stage, *extra, *common, "--out", out["r2n"], "--overlap", "0")
            check(f"{stage}: --overlap 0: no bucket starts during the backward",
                  "during the backward" not in r.stdout)
            m = re.search(r"(\d+) all-reduce buckets of ≤ (\d+) floats \((\d+) packed\)", r.stdout)
            check(f"{stage}: 2 ranks report their gradient buckets", m is not None, m.group(0) if m else r.stdout[-300:])
            # small buckets: large tensors cut into pieces, small ones packed together
            r = run(*mpirun(2), WORKER, "run", "--stage", stage, *extra, *common, "--out", out["r2b"],
                    "--bucket-floats", "700")
            mb = re.search(r"(\d+) all-reduce buckets of ≤ 700 floats \((\d+) packed\)", r.stdout)
            ov = re.search(r"(\d+) of (\d+) gradient buckets started their all-reduce during the backward", r.stdout)
            check(f"{stage}: 700-float buckets overlapped: the later layers' start during the backward",
                  ov is not None and int(ov.group(2)) > int(ov.group(1)) > 0, ov.group(0) if ov else "")
            run(*mpirun(2), WORKER, "run", "--stage", stage, *extra, *common, "--out", out["r2bn"],
                "--bucket-floats", "700", "--overlap", "0")
            # pretrain trains one run (all of the model); align and distill pack across runs or arenas
            check(f"{stage}: 700-float buckets: many buckets{'' if stage == 'pretrain' else ', some packed'}",
                  mb is not None and int(mb.group(1)) > 10 and (stage == "pretrain" or int(mb.group(2)) > 0),
                  mb.group(0) if mb else r.stdout[-300:])
            run(*mpirun(2), WORKER, "run", "--stage", stage, *extra, *common, "--out", out["r2c"], "--bucket-floats",
                "64")
            l1, l2 = losses(out["r1"]), losses(out["r2"])
            rel = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(l1, l2))
            check(f"{stage}: 1 rank vs 2 ranks: same loss curve within fp32 reduction error (rel < 1e-4)",
                  len(l1) == len(l2) == 16 and rel < 1e-4, f"max rel diff {rel:.2e} over {len(l1)} steps")
            w = {k: open(os.path.join(v, "model.safetensors"), "rb").read() for k, v in out.items()}
            check(f"{stage}: bucket sizes default / 700 / 64: losses and final weights bit-identical",
                  losses(out["r2"]) == losses(out["r2b"]) == losses(out["r2c"]) and w["r2"] == w["r2b"] == w["r2c"])
            check(f"{stage}: overlapped and not (default and 700-float buckets): bit-identical",
                  losses(out["r2"]) == losses(out["r2n"]) == losses(out["r2bn"]) and w["r2"] == w["r2n"] == w["r2bn"])
        # a rank whose backward fails half-way (some buckets started, the rest not) leaves nobody waiting:
        # it still starts the rest in the common order, then both ranks stop at the step's agreement
        env = dict(os.environ, RADLADS_TEST_POISON="backward:3:1")
        r = run(*mpirun(2), WORKER, "run", "--stage", "distill", "--teacher", teacher, "--student", student,
                "--lr", "1e-3:1e-4", *common, "--bucket-floats", "700", "--out", os.path.join(tmp, "fails"), ok=False,
                env=env, timeout=120)
        check("a rank failing mid-backward with buckets in flight: both stop, naming it, no hang",
              r.returncode != 0 and "fails at its gradient event" in r.stderr and "other rank(s) failed" in r.stderr,
              r.stderr.strip().splitlines()[-1][:100] if r.stderr.strip() else "")
        # a rank whose packing of an overlapped bucket fails (as a failed device copy would): it still issues that
        # bucket's all-reduce, so its later buckets pair with the other rank's same ones; both stop at the step's
        # agreement, naming it, no hang (a rank skipping it would pair its next bucket with the other's this one)
        env = dict(os.environ, RADLADS_TEST_POISON="pack:3:1")
        r = run(*mpirun(2), WORKER, "run", "--stage", "distill", "--teacher", teacher, "--student", student,
                "--lr", "1e-3:1e-4", *common, "--bucket-floats", "700", "--out", os.path.join(tmp, "packfails"),
                ok=False, env=env, timeout=120)
        check("a rank failing to pack a bucket: it still issues the collective; both stop, naming it, no hang",
              r.returncode != 0 and "packing gradient bucket" in r.stderr and "other rank(s) failed" in r.stderr,
              r.stderr.strip().splitlines()[-1][:100] if r.stderr.strip() else "")
        # a rank that cannot make its backend (a missing GPU) stops the others before their first collective
        env = dict(os.environ, RADLADS_TEST_POISON="start:1")
        r = run(*mpirun(2), WORKER, "run", "--stage", "distill", "--teacher", teacher, "--student", student,
                "--lr", "1e-3:1e-4", *common, "--out", os.path.join(tmp, "nostart"), ok=False, env=env, timeout=120)
        check("a rank failing as its backend is made: both stop, naming it, no hang",
              r.returncode != 0 and "rank 1 fails as its backend is made" in r.stderr and
              "1 other rank(s) could not make their backend" in r.stderr,
              r.stderr.strip().splitlines()[-1][:100] if r.stderr.strip() else "")
        # a rank that stops between two agreements (the other waits in that step's all-reduce for ever): its exit
        # waits RADLADS_FAIL_WAIT_S for the others, then ends the job
        env = dict(os.environ, RADLADS_TEST_POISON="quit:3:1", RADLADS_FAIL_WAIT_S="3")
        r = run(*mpirun(2), WORKER, "run", "--stage", "distill", "--teacher", teacher, "--student", student,
                "--lr", "1e-3:1e-4", *common, "--out", os.path.join(tmp, "quits"), ok=False, env=env, timeout=120)
        check("a rank quitting between agreements: the job ends (MPI_Abort after 3 s), no hang",
              r.returncode != 0 and "rank 1 quits at step 3" in r.stderr and
              "did not stop within 3 s of this rank's failure" in r.stderr and "MPI_Abort" in r.stderr,
              r.stderr.strip().splitlines()[0][:120] if r.stderr.strip() else "")
        # GPU per rank: 3 ranks on a host that shows 2 GPUs are refused with what to change, every rank stops
        env = dict(os.environ, RADLADS_TEST_VISIBLE_GPUS="2")
        r = run(*mpirun(3), WORKER, "run", "--device", "cuda", "--stage", "distill", "--teacher", teacher,
                "--student", student, "--lr", "1e-3:1e-4", "--data", data, "--tokens", "384", "--seq-len", "32",
                "--batch", "3", "--out", os.path.join(tmp, "gpus"), ok=False, env=env, timeout=120)
        check("3 ranks, 2 visible GPUs: refused with the fix, no hang",
              r.returncode != 0 and "3 ranks run on this host but it shows 2 GPUs" in r.stderr and
              "CUDA_VISIBLE_DEVICES" in r.stderr, r.stderr.strip().splitlines()[0][:120] if r.stderr.strip() else "")
        # a rank count that does not divide the batch is refused by every rank with the reason
        r = run(*mpirun(2), WORKER, "run", "--stage", "pretrain", "--student", teacher, "--data", data, "--tokens",
                "384", "--seq-len", "32", "--batch", "3", "--out", os.path.join(tmp, "odd"), ok=False)
        check("batch 3 on 2 ranks: refused with the reason", r.returncode != 0 and
              "batch 3 is not a multiple of the 2 ranks" in r.stderr, r.stderr.strip().splitlines()[0][:90]
              if r.stderr.strip() else "")
    print(f"{len(failures)} failures" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
