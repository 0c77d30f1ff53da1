"""The Slurm launcher against a real one-node Slurm (slurmctld + slurmd + munge on localhost): radladsd
--launcher slurm submits a pool with sbatch when a job needs one, the ranks start with srun, the pool runs the
job and is scancel'ed when idle; cancel removes the Slurm job and every rank; a pool whose Slurm job fails
before it registers holds the job with the reason.  poolsim stands in for radlads-worker (the real worker
under Slurm is tests/worker/test_pool_slurm.py)."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import POOLSIM, Daemon, fixture, run, wait_for  # noqa: E402
from slurmfix import cancel_leftovers, ensure_slurm, slurm_jobs, slurm_state  # noqa: E402
from test_launcher import launched_processes, with_mode  # noqa: E402


def launches(d):
    return [ln for ln in d.log().splitlines() if "is Slurm job" in ln]


def slurm_id_of(d):
    lines = launches(d)
    return lines[-1].rsplit(" ", 1)[1] if lines else None


def test_slurm_pool_runs_the_job_and_is_retired(root):
    spec = fixture(root)
    with_mode("ok")
    d = Daemon(root, "--launcher", "slurm", "--worker", POOLSIM, "--slurm-args", "--time=10 --overcommit").start()
    try:
        jid = int(d.cli("submit", spec, "--ranks", "2", "--print-id").stdout)
        r = d.cli("wait", jid, "--timeout", "90", check=False)
        assert r.returncode == 0, (r.stdout, d.log()[-3000:])
        show = d.json("show", jid)
        assert show["state"] == "COMPLETED" and len(show["attempts"]) == 3, show
        sid = slurm_id_of(d)
        assert sid, d.log()[-2000:]
        script = [n for n in os.listdir(os.path.join(d.state, "pools")) if n.endswith(".sbatch")]
        assert len(script) == 1, script
        body = open(os.path.join(d.state, "pools", script[0])).read()
        assert "exec srun --kill-on-bad-exit=1 " in body and "'--launch-id'" in body, body
        # the pool's rank 0 ran under srun: its output is the Slurm job's log
        log = open(os.path.join(d.state, "pools", script[0].replace(".sbatch", ".log"))).read()
        assert "poolsim: rank 1 of 2 waiting" in log, log[-2000:]
        # idle and nothing to run: scancel'ed, gone from the queue, no rank left
        wait_for(lambda: sid not in slurm_jobs(d.state), timeout=30, what=f"Slurm job {sid} to leave the queue")
        wait_for(lambda: not launched_processes(d.state), timeout=15, what="every rank to exit")
        print(f"  Slurm job {sid}: {slurm_state(sid) or 'purged'} after the pool was retired")
        assert d.json("daemon-status")["pools"] == 0
    finally:
        d.stop()
        cancel_leftovers(d.state)


def test_cancel_scancels_the_pool(root):
    spec = fixture(root)
    with_mode("hang", steps="1000", step_ms="100")
    d = Daemon(root, "--launcher", "slurm", "--worker", POOLSIM, "--slurm-args", "--overcommit").start()
    try:
        jid = int(d.cli("submit", spec, "--ranks", "2", "--print-id").stdout)
        wait_for(lambda: d.json("show", jid)["state"] == "RUNNING", timeout=60, what="RUNNING")
        sid = slurm_id_of(d)
        assert slurm_jobs(d.state).get(sid) == "RUNNING", (sid, slurm_jobs(d.state))
        wait_for(lambda: len([p for p in launched_processes(d.state) if "poolsim" in p[1].split()[0]]) == 2,
                 timeout=10, what="2 ranks")
        procs = launched_processes(d.state)
        t0 = time.time()
        d.cli("cancel", jid)
        wait_for(lambda: d.json("show", jid)["state"] == "CANCELLED", timeout=20, what="CANCELLED")
        wait_for(lambda: sid not in slurm_jobs(d.state), timeout=30, what=f"Slurm job {sid} to leave the queue")
        wait_for(lambda: not launched_processes(d.state), timeout=15, what="every rank to exit")
        print(f"  Slurm job {sid} and all {len(procs)} processes gone {time.time() - t0:.1f} s after cancel")
        wait_for(lambda: f"(Slurm job {sid}) ended" in d.log(), timeout=15, what="the daemon to see the Slurm job end")
    finally:
        d.stop()
        cancel_leftovers(d.state)


def test_slurm_job_that_fails_holds_the_job(root):
    spec = fixture(root)
    d = Daemon(root, "--launcher", "slurm", "--worker", "/bin/false").start()
    try:
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        wait_for(lambda: d.json("show", jid)["state"] == "HELD", timeout=90, what="HELD after failed launches")
        ev = [e for e in d.json("events", jid)["events"] if e["to"] == "HELD"]
        reason = ev[-1]["reason"]
        # seen either in its final state or while completing, with the reason Slurm gives
        assert "failed to start 3 times" in reason and "Slurm job" in reason, reason
        assert "FAILED" in reason or "NonZeroExitCode" in reason, reason
        # The last one may still be listed as completing when the job is held: it must leave the queue.
        wait_for(lambda: not slurm_jobs(d.state), timeout=30, what="the failed Slurm jobs to leave the queue")
    finally:
        d.stop()
        cancel_leftovers(d.state)


def test_bad_sbatch_option_holds_the_job_with_sbatch_message(root):
    spec = fixture(root)
    d = Daemon(root, "--launcher", "slurm", "--worker", POOLSIM, "--slurm-args", "--partition=no-such-partition").start()
    try:
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        wait_for(lambda: d.json("show", jid)["state"] == "HELD", timeout=60, what="HELD after failed sbatch")
        reason = [e for e in d.json("events", jid)["events"] if e["to"] == "HELD"][-1]["reason"]
        assert "sbatch failed" in reason and "partition" in reason.lower(), reason
    finally:
        d.stop()
        cancel_leftovers(d.state)


def test_slurm_pool_of_a_crashed_daemon_is_adopted_and_cancelled(root):
    """kill -9 of radladsd while its Slurm pool runs: the next daemon adopts the launch from the store and,
    since the pool does not re-attach, scancels it after the reattach grace (no allocation is left behind)."""
    spec = fixture(root)
    with_mode("hang", steps="1000", step_ms="100")
    d = Daemon(root, "--launcher", "slurm", "--worker", POOLSIM, "--slurm-args", "--overcommit",
               "--reattach-grace", "2").start()
    try:
        jid = int(d.cli("submit", spec, "--ranks", "2", "--print-id").stdout)
        wait_for(lambda: d.json("show", jid)["state"] == "RUNNING", timeout=60, what="RUNNING")
        sid = slurm_id_of(d)
        d.kill9()
        d.start()
        assert f"Slurm job {sid}) from before the restart" in d.log(), d.log()[-2000:]
        t0 = time.time()
        wait_for(lambda: sid not in slurm_jobs(d.state), timeout=60, what=f"Slurm job {sid} to be cancelled")
        print(f"  Slurm job {sid} of the crashed daemon cancelled {time.time() - t0:.1f} s after the restart")
        d.cli("cancel", jid)
    finally:
        d.stop()
        cancel_leftovers(d.state)


def test_hand_started_pool_from_the_deploy_template(root):
    """deploy/slurm/pool.sbatch, submitted by hand with the daemon's address, registers a pool that runs a job;
    a missing setting is refused with the fix.  (poolsim speaks Unix sockets only; the real worker over TCP is
    tests/worker/test_pool.py's test_pool_over_tcp.)"""
    spec = fixture(root)
    with_mode("ok")
    d = Daemon(root).start()  # no launcher
    template = os.path.join(os.environ.get("RADLADS_SRC", "."), "deploy", "slurm", "pool.sbatch")
    sid = None
    try:
        addr = "unix:" + d.sock
        out = os.path.join(root, "pool-%j.log")
        r = subprocess.run(["sbatch", "--parsable", "--ntasks=2", "--overcommit", f"--output={out}", template],
                           capture_output=True, text=True, cwd=root)  # RADLADS_CONNECT unset
        bad = r.stdout.strip()
        wait_for(lambda: os.path.exists(out.replace("%j", bad)) and "RADLADS_CONNECT" in open(out.replace("%j", bad)).read(),
                 timeout=30, what="the template to refuse a missing RADLADS_CONNECT")
        env = dict(os.environ, RADLADS_CONNECT=addr, RADLADS_TOKEN_FILE=d.token_file, RADLADS_WORKER=POOLSIM,
                   RADLADS_POOL_NAME="by-hand")
        r = subprocess.run(["sbatch", "--parsable", "--ntasks=2", "--overcommit", f"--output={out}", template],
                           capture_output=True, text=True, env=env, cwd=root, check=True)
        sid = r.stdout.strip()
        jid = int(d.cli("submit", spec, "--ranks", "2", "--pool", "by-hand", "--print-id").stdout)
        r = d.cli("wait", jid, "--timeout", "60", check=False)
        assert r.returncode == 0, (r.stdout, d.log()[-2000:])
        pools = d.json("pools")["pools"]
        assert len(pools) == 1 and pools[0]["name"] == "by-hand" and pools[0]["ranks"] == 2, pools
        print(f"  Slurm job {sid} from deploy/slurm/pool.sbatch ran job {jid} over {addr}")
    finally:
        if sid:
            subprocess.run(["scancel", sid])
        d.stop()


if __name__ == "__main__":
    why = ensure_slurm()
    if why:
        print("SKIP:", why)
        sys.exit(77)
    run([test_slurm_pool_runs_the_job_and_is_retired, test_cancel_scancels_the_pool,
         test_slurm_job_that_fails_holds_the_job, test_bad_sbatch_option_holds_the_job_with_sbatch_message,
         test_hand_started_pool_from_the_deploy_template, test_slurm_pool_of_a_crashed_daemon_is_adopted_and_cancelled])
