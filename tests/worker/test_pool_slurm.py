"""The real worker under Slurm: radladsd --launcher slurm submits `srun radlads-worker pool` with sbatch on a
one-node Slurm on localhost (scripts/slurm-local.sh).  A job runs on the 2-rank Slurm pool and its export
scores; when the pool's Slurm job is cancelled mid-stage (as a preempted allocation is), the attempt fails,
a new Slurm job is submitted and the stage resumes from its latest checkpoint, ending with weights
byte-identical to an uninterrupted run on the same number of ranks."""
import json
import math
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from poolfix import RADLADS, WORKER, make_teacher, run as run_cmd, sanitized  # noqa: E402
from harness import Daemon, run, wait_for  # noqa: E402
from slurmfix import cancel_leftovers, ensure_slurm, slurm_jobs  # noqa: E402
from test_pool import stop_daemon, train_stage, write_spec  # noqa: E402


def start_daemon(root):
    return Daemon(root, "--launcher", "slurm", "--worker", WORKER, "--slurm-args", "--overcommit").start()


def test_preempted_slurm_pool_resumes_bit_exact(root):
    teacher, data = make_teacher(root)
    # ~5 s of align (~10 s under ASan): scancel lands mid-stage, after the first checkpoint (1/24 of the stage),
    # with seconds to spare for the CLI round trips, squeue and Slurm's signal on a loaded machine
    steps = 1500 if sanitized() else 4800
    stages = ["transfer", train_stage("align", steps, lr="3e-3:1e-4", checkpoint_every=steps // 24), "export"]
    d = start_daemon(root)
    try:
        t0 = time.time()
        ref = int(d.cli("submit", write_spec(root, "ref", teacher, data, stages, os.path.join(root, "ref")),
                        "--print-id").stdout)
        r = d.cli("wait", ref, "--timeout", "180", check=False)
        assert r.returncode == 0, (r.stdout, d.log()[-3000:])
        result = d.json("show", ref)["result_path"]
        out = run_cmd(RADLADS, "score", "--model", result, "--json", "--ids", ",".join(str(i % 250 + 5) for i in range(40)))
        ce = json.loads(out.stdout)["mean_cross_entropy"]
        assert math.isfinite(ce) and 0 < ce < 10, ce
        print(f"  job on a 2-rank Slurm pool COMPLETED in {time.time() - t0:.1f} s; export scores {ce:.3f}")
        wait_for(lambda: not slurm_jobs(d.state), timeout=30, what="the idle Slurm pool to be cancelled")

        jid = int(d.cli("submit", write_spec(root, "pre", teacher, data, stages, os.path.join(root, "pre")),
                        "--print-id").stdout)
        wait_for(lambda: any(c["stage_idx"] == 1 for c in d.json("show", jid)["checkpoints"]), timeout=120,
                 what="the first align checkpoint")
        victims = list(slurm_jobs(d.state))
        assert len(victims) == 1, victims
        subprocess.run(["scancel", victims[0]], check=True)  # the allocation goes away under the pool
        step = d.json("show", jid)["stages"][1]["step"]
        print(f"  scancel of Slurm job {victims[0]} at align step ~{step} of {steps}")
        assert step < steps, f"align had finished (step {step}) before the scancel: the test proves nothing"
        r = d.cli("wait", jid, "--timeout", "180", check=False)
        show = d.json("show", jid)
        assert show["state"] == "COMPLETED", (show, d.log()[-3000:])
        align = [a for a in show["attempts"] if a["stage_idx"] == 1]
        assert len(align) == 2 and align[0]["state"] in ("FAILED", "LOST") and align[1]["state"] == "SUCCEEDED", align
        assert (align[1]["resumed_from_checkpoint"] or 0) > 0, align
        new_jobs = [ln for ln in d.log().splitlines() if "is Slurm job" in ln]
        assert len(new_jobs) >= 3, new_jobs  # ref, the preempted one, its replacement (+ export's)
        a = open(os.path.join(root, "ref", "02-export", "model.safetensors"), "rb").read()
        b = open(os.path.join(root, "pre", "02-export", "model.safetensors"), "rb").read()
        assert a == b, "the resumed run's weights differ from the uninterrupted run's"
        print(f"  {align[0]['state']} ({align[0]['failure_reason']}), resumed on a new Slurm job; "
              f"exported weights byte-identical ({len(a)} bytes)")
        wait_for(lambda: not slurm_jobs(d.state), timeout=30, what="the idle Slurm pool to be cancelled")
    finally:
        stop_daemon(d)
        cancel_leftovers(d.state)


if __name__ == "__main__":
    why = ensure_slurm()
    if why:
        print("SKIP:", why)
        sys.exit(77)
    run([test_preempted_slurm_pool_resumes_bit_exact])
