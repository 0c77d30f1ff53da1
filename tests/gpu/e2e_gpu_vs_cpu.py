"""A tiny conversion on the GPU against the same run on the CPU (tests/gpu/run.sh's end-to-end part).

pretrain (a few hundred steps, CPU) -> transfer -> align -> distill, the last two once with --device cpu and
once with --device cuda from the same student, seed and data: every step's loss on the GPU must follow the
CPU's (relative difference per step ≤ 2e-3: fp32 on both, different summation orders, compounding over
the steps) and the GPU student's held-out loss must be within 1 % of the CPU student's.  Then distill in
bf16 mixed precision (--precision bf16: cuBLASLt BF16 GEMMs on the GPU; the same bf16-rounded operands
multiplied in fp32 on the CPU) with recomputation on the GPU side: per step within 2e-3 of the CPU's bf16 run
and within 1e-2 of fp32; and with --precision bf16-weights (bf16 matrices and gradients, fp32 masters): within
2e-3 of the CPU's bf16-weights run and 1e-2 of the GPU's bf16 run; that run's kernel scratch (the backend's
memory by role) must be held and within what `radlads plan` counts for it.  With two or more GPUs, distill also runs on 2 ranks (NCCL) and is compared with 2
CPU ranks (MPI), a rank that joins NCCL 60 s late must make the other give up at the set-up deadline, and one whose
NCCL set-up fails at once must stop the other at once.

usage: /usr/bin/python3 tests/gpu/e2e_gpu_vs_cpu.py BUILD_DIR     exit 0 ok, 1 mismatch, 77 no GPU
RL_GPU_E2E_DEVICE=cpu runs the "GPU" side on the CPU too (a dry run of this script where there is no GPU)."""
import json
import os
import subprocess
import sys
import tempfile
import time

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRC, "tests"))
from testdata import english_text  # noqa: E402

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(SRC, "build-gpu"))
RADLADS, WORKER = os.path.join(BUILD, "cli", "radlads"), os.path.join(BUILD, "worker", "radlads-worker")
failures = []


def run(*args, **kw):
    t0 = time.time()
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:])
        raise SystemExit(f"FAIL: {' '.join(map(str, args))} -> {r.returncode}")
    return r, time.time() - t0


def losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(ln)["loss"] for ln in f if '"loss"' in ln and '"step"' in ln]


def score(model, held):
    r, _ = run(RADLADS, "score", "--model", model, "--tokens", held, "--window", "64", "--json")
    return json.loads(r.stdout)["mean_cross_entropy"]


def gpus():
    try:
        r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    except FileNotFoundError:  # no driver installed: no GPU
        return 0
    return len([ln for ln in r.stdout.splitlines() if ln.startswith("GPU ")]) if r.returncode == 0 else 0


def compare(what, cpu, gpu, tol=2e-3):
    worst = max((abs(a - b) / max(abs(a), 1e-12) for a, b in zip(cpu, gpu)), default=float("inf"))
    ok = len(cpu) == len(gpu) > 0 and worst <= tol
    print(f"  {what}: {len(gpu)} steps, first loss cpu {cpu[0]:.6f} gpu {gpu[0]:.6f}, last cpu {cpu[-1]:.6f} "
          f"gpu {gpu[-1]:.6f}, worst step rel diff {worst:.2e} (tol {tol:g})  {'ok' if ok else 'FAIL'}")
    if not ok:
        failures.append(what)


DEV = os.environ.get("RL_GPU_E2E_DEVICE", "cuda")


def main():
    n_gpu = gpus() if DEV == "cuda" else 2
    if n_gpu == 0:
        print("SKIP: no GPU (nvidia-smi lists none)")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        d = lambda n: os.path.join(tmp, n)  # noqa: E731
        text = english_text(300000)
        cut = len(text) * 9 // 10
        open(d("train.txt"), "wb").write(text[:cut])
        open(d("held.txt"), "wb").write(text[cut:])
        run(RADLADS, "init-model", "--arch", "qwen2", "--hidden", "128", "--layers", "2", "--heads", "2",
            "--kv-heads", "1", "--intermediate", "384", "--vocab", "257", "--seed", "1", "--out", d("init"))
        run(RADLADS, "tokenize", "--tokenizer", "bytes", "--in", d("train.txt"), "--out", d("train"),
            "--no-progress", "--write-tokenizer", d("init"))
        run(RADLADS, "tokenize", "--tokenizer", "bytes", "--in", d("held.txt"), "--out", d("held"), "--no-progress")
        common = ["--data", d("train.tok"), "--seq-len", "64", "--batch", "16", "--log-every", "50"]
        run(WORKER, "run", "--stage", "pretrain", "--student", d("init"), "--out", d("teacher"), "--tokens", "150K",
            "--lr", "3e-3:1e-4", "--warmup", "20", *common)
        run(WORKER, "run", "--stage", "transfer", "--teacher", d("teacher"), "--arch", "rad-rwkv7", "--out", d("s0"))
        secs = {}
        for side, dev in (("cpu", "cpu"), ("cuda", DEV)):
            _, secs["align " + side] = run(WORKER, "run", "--device", dev, "--stage", "align", "--teacher",
                                           d("teacher"), "--student", d("s0"), "--out", d("align-" + side),
                                           "--tokens", "16K", "--lr", "1e-3:1e-5", "--warmup", "5", *common)
            _, secs["distill " + side] = run(WORKER, "run", "--device", dev, "--stage", "distill", "--teacher",
                                             d("teacher"), "--student", d("align-" + side), "--out",
                                             d("distill-" + side), "--tokens", "32K", "--lr", "1e-3:1e-4",
                                             "--warmup", "5", *common)
        print("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in secs.items()))
        compare("align, per-step loss, GPU vs CPU", losses(d("align-cpu")), losses(d("align-cuda")))
        compare("distill, per-step loss, GPU vs CPU", losses(d("distill-cpu")), losses(d("distill-cuda")))
        lc, lg, lt = score(d("distill-cpu"), d("held.tok")), score(d("distill-cuda"), d("held.tok")), score(d("teacher"), d("held.tok"))
        ok = abs(lg - lc) <= 0.01 * lc
        print(f"  held-out CE: teacher {lt:.4f}, student trained on CPU {lc:.4f}, on GPU {lg:.4f}  {'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append("held-out loss GPU vs CPU")
        for side, dev, extra in (("cpu", "cpu", []), ("cuda", DEV, ["--recompute", "1"])):
            _, secs["distill bf16 " + side] = run(WORKER, "run", "--device", dev, "--stage", "distill", "--teacher",
                                                  d("teacher"), "--student", d("align-cpu"), "--out",
                                                  d("bf16-" + side), "--tokens", "32K", "--lr", "1e-3:1e-4",
                                                  "--warmup", "5", "--precision", "bf16", *extra, *common)
        run(WORKER, "run", "--device", "cpu", "--stage", "distill", "--teacher", d("teacher"), "--student",
            d("align-cpu"), "--out", d("fp32-ref"), "--tokens", "32K", "--lr", "1e-3:1e-4", "--warmup", "5", *common)
        print(f"  seconds: distill bf16 cpu {secs['distill bf16 cpu']:.1f}, gpu (recompute) "
              f"{secs['distill bf16 cuda']:.1f}")
        compare("distill bf16 (GPU with recompute) vs bf16 CPU", losses(d("bf16-cpu")), losses(d("bf16-cuda")))
        compare("distill bf16 GPU vs fp32 CPU", losses(d("fp32-ref")), losses(d("bf16-cuda")), tol=1e-2)
        # bf16-weights: bf16 matrices and gradients (cuBLASLt writes the weight gradients in bf16), fp32 masters
        # updated by the bf16 AdamW kernel
        for side, dev in (("cpu", "cpu"), ("cuda", DEV)):
            _, secs["distill bf16-weights " + side] = run(
                WORKER, "run", "--device", dev, "--stage", "distill", "--teacher", d("teacher"), "--student",
                d("align-cpu"), "--out", d("bw-" + side), "--tokens", "32K", "--lr", "1e-3:1e-4", "--warmup", "5",
                "--precision", "bf16-weights", *common)
        compare("distill bf16-weights GPU vs bf16-weights CPU", losses(d("bw-cpu")), losses(d("bw-cuda")))
        compare("distill bf16-weights GPU vs bf16 (autocast) GPU", losses(d("bf16-cuda")), losses(d("bw-cuda")),
                tol=1e-2)
        # the backend's kernel scratch, which its memory by role counts, against what `radlads plan` counts for it
        # at the same shapes (the most the launchers may ask: the per-row wkv backward's states, kernels/scratch.h)
        with open(os.path.join(d("bw-cuda"), "metrics.jsonl")) as f:
            roles = [json.loads(ln).get("backend_peak_by_role") for ln in f if "backend_peak_by_role" in ln][-1]
        r, _ = run(RADLADS, "plan", "--teacher", d("teacher"), "--arch", "rwkv7", "--gpu-mem", "80G", "--seq-len",
                   "64", "--micro-batch", "16", "--stage", "distill", "--dtype", "bf16-weights", "--json")
        planned = json.loads(r.stdout)["stages"][0]["kernel_scratch_bytes"]
        got = roles.get("kernel scratch", 0)
        if DEV == "cpu":
            print(f"  (a dry run on the CPU: no kernel scratch; the plan counts {planned} B for the GPU)")
        else:
            ok = 0 < got <= planned
            print(f"  kernel scratch, bf16-weights distill: {got} B held, `radlads plan` {planned} B  "
                  f"{'ok' if ok else 'FAIL'}")
            if not ok:
                failures.append("kernel scratch within the plan's")
        mpi = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", "2"] if os.geteuid() == 0 else ["mpirun", "-np", "2"]

        def two_ranks(out, timeout, **env):
            """a short distill on 2 GPU ranks with env added: (CompletedProcess, or None past timeout; seconds)"""
            t0 = time.time()
            try:
                r = subprocess.run([*mpi, WORKER, "run", "--device", DEV, "--stage", "distill", "--teacher",
                                    d("teacher"), "--student", d("align-cpu"), "--out", d(out), "--tokens", "4K",
                                    "--lr", "1e-3:1e-4", *common], capture_output=True, text=True, timeout=timeout,
                                   env=dict(os.environ, **env))
            except subprocess.TimeoutExpired:
                r = None
            return r, time.time() - t0

        def said(r, needle):
            return next((ln for ln in (r.stdout + r.stderr).splitlines() if needle in ln), "") if r else ""

        def verdict(what, ok, why, secs, failure):
            print(f"  {what}: {why} in {secs:.1f} s  {'ok' if ok else 'FAIL'}")
            if not ok:
                failures.append(failure)

        if n_gpu >= 2:
            for side, dev in (("cpu", "cpu"), ("cuda", DEV)):
                run(*mpi, WORKER, "run", "--device", dev, "--stage", "distill", "--teacher", d("teacher"), "--student",
                    d("align-cpu"), "--out", d("ddp-" + side), "--tokens", "32K", "--lr", "1e-3:1e-4", "--warmup", "5",
                    *common)
            compare("distill on 2 ranks, NCCL vs MPI", losses(d("ddp-cpu")), losses(d("ddp-cuda")))
        if n_gpu >= 2 and DEV == "cpu":
            print("  (a dry run on the CPU: the NCCL set-up checks need GPUs)")
        elif n_gpu >= 2:
            # a rank that joins the communicator 60 s late: the other gives up after RADLADS_NCCL_TIMEOUT_S (10 s)
            # with the reason, and the job ends (the failed rank's exit waits RADLADS_FAIL_WAIT_S, then aborts)
            r, secs = two_ranks("late-join", 150, RADLADS_TEST_POISON="join:1:60", RADLADS_NCCL_TIMEOUT_S="10",
                                RADLADS_FAIL_WAIT_S="5")
            line = said(r, "not done after 10 s")
            verdict("a rank joining NCCL 60 s late", r is not None and r.returncode != 0 and "ncclCommInitRank" in line,
                    f"exit {r.returncode}: " + (line[:160] or "no deadline message") if r else "still waiting after 150 s",
                    secs, "NCCL set-up deadline")
            # a rank whose ncclCommInitRankConfig fails at once (a bad NCCL setting): the other stops at once too,
            # not at its 120 s deadline
            r, secs = two_ranks("init-fails", 100, RADLADS_TEST_POISON="ncclinit:1", RADLADS_NCCL_TIMEOUT_S="120",
                                RADLADS_FAIL_WAIT_S="5")
            line = said(r, "another rank's ncclCommInitRankConfig failed at once")
            verdict("a rank whose NCCL set-up fails at once", r is not None and r.returncode != 0 and line != "" and
                    secs < 60, f"exit {r.returncode}: " + (line[:160] or "no message about the other rank") if r
                    else "still waiting after 100 s", secs, "NCCL set-up failing at once")
            # a rank whose third all-reduce fails mid-stage (as a lost connection would): it tells the other over
            # MPI (worker/alarm.c), which stops at once with the reason, not at its 120 s deadline
            r, secs = two_ranks("allreduce-fails", 100, RADLADS_TEST_POISON="nccl:3:1", RADLADS_NCCL_TIMEOUT_S="120",
                                RADLADS_FAIL_WAIT_S="5")
            # (NCCL may notice the lost peer itself first: then rank 0's reason is NCCL's; the time is the point)
            line = said(r, "rank 1 stopped first") or said(r, "communicator aborted")
            verdict("a rank whose all-reduce fails mid-stage", r is not None and r.returncode != 0 and line != "" and
                    secs < 60, f"exit {r.returncode}: " + (line[:160] or "no message about the communicator") if r
                    else "still waiting after 100 s", secs, "an all-reduce failing on one rank")
        else:
            print("  (one GPU: the 2-rank NCCL comparison needs two)")
            # two ranks shown the same single GPU: each takes GPU 0 and NCCL refuses ranks that share a device; they
            # must all stop promptly with the reason (the start-up agreements), never wait for each other
            r, secs = two_ranks("shared-gpu", 180)
            shared = r is not None and (r.returncode == 0 or "ncclCommInitRank" in r.stderr)
            verdict("2 ranks on 1 GPU", shared, "still waiting after 180 s" if r is None else
                    "ran (this NCCL shares a GPU)" if r.returncode == 0 else
                    "refused: " + said(r, "ncclCommInitRank")[:160], secs, "2 ranks on 1 GPU")
    print("end-to-end: " + ("all checks passed" if not failures else f"FAILED: {', '.join(failures)}"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
