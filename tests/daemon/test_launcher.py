"""The local launcher: radladsd starts a pool with real mpirun when a job needs one, the pool runs the job
and is retired when idle; cancel leaves no rank and no mpirun behind; a pool that never starts holds the
job with the reason.  poolsim stands in for radlads-worker (it takes the same command line)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import POOLSIM, Daemon, fixture, run, wait_for  # noqa: E402


def launched_processes(state_dir):
    """(pid, cmdline) of every process started for this daemon's launches (mpirun and its ranks)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if state_dir in cmd and "--launch-id" in cmd and stat[0] != "Z":
            out.append((int(pid), cmd))
    return out


def with_mode(mode, steps="4", step_ms="50"):
    os.environ.update(POOLSIM_MODE=mode, POOLSIM_STEPS=steps, POOLSIM_STEP_MS=step_ms)


def test_launched_pool_runs_the_job_and_is_retired(root):
    spec = fixture(root)
    with_mode("ok")
    d = Daemon(root, "--launcher", "local", "--worker", POOLSIM).start()
    try:
        jid = int(d.cli("submit", spec, "--ranks", "2", "--print-id").stdout)
        r = d.cli("wait", jid, "--timeout", "60", check=False)
        assert r.returncode == 0, (r.stdout, d.log()[-3000:])
        show = d.json("show", jid)
        assert show["state"] == "COMPLETED" and len(show["attempts"]) == 3
        logs = os.listdir(os.path.join(d.state, "pools"))
        assert logs and all(name.startswith("launch-") for name in logs), logs
        assert "launcher: launch" in d.log() and "mpirun -np 2" in d.log()
        # Idle and nothing to run: the pool and its mpirun are gone.
        wait_for(lambda: not launched_processes(d.state), timeout=15, what="the launched pool to be retired")
        assert d.json("daemon-status")["pools"] == 0
    finally:
        d.stop()


def test_cancel_leaves_no_rank_and_no_mpirun(root):
    spec = fixture(root)
    with_mode("hang", steps="1000", step_ms="100")
    d = Daemon(root, "--launcher", "local", "--worker", POOLSIM).start()
    try:
        jid = int(d.cli("submit", spec, "--ranks", "2", "--print-id").stdout)
        wait_for(lambda: d.json("show", jid)["state"] == "RUNNING", timeout=60, what="RUNNING")
        def kinds():
            return [cmd.split()[0].rsplit("/", 1)[-1] for _, cmd in launched_processes(d.state)]
        # RUNNING says rank 0 registered; give a slow machine a moment to show every process
        wait_for(lambda: kinds().count("mpirun") == 1 and kinds().count("poolsim") == 2, timeout=10,
                 what="mpirun and 2 ranks")
        procs = launched_processes(d.state)
        t0 = time.time()
        d.cli("cancel", jid)
        wait_for(lambda: d.json("show", jid)["state"] == "CANCELLED", timeout=20, what="CANCELLED")
        wait_for(lambda: not launched_processes(d.state), timeout=15, what="every rank and mpirun to exit")
        print(f"  all {len(procs)} processes gone {time.time() - t0:.1f} s after cancel")
        for pid, _ in procs:
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    finally:
        d.stop()


def test_pool_that_never_starts_holds_the_job(root):
    spec = fixture(root)
    d = Daemon(root, "--launcher", "local", "--worker", "/bin/false").start()
    try:
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        wait_for(lambda: d.json("show", jid)["state"] == "HELD", timeout=60, what="HELD after failed launches")
        ev = [e for e in d.json("events", jid)["events"] if e["to"] == "HELD"]
        assert "failed to start 3 times" in ev[-1]["reason"] and "launch-" in ev[-1]["reason"], ev
        assert not launched_processes(d.state)
    finally:
        d.stop()


def test_pools_of_a_crashed_daemon_are_adopted_and_retired(root):
    """kill -9 of radladsd while its launched pool runs: the next daemon finds the launch in the store, and when
    the pool does not re-attach (poolsim's rank 0 exits with the connection; mpirun and rank 1 stay) it is
    retired after the reattach grace — no process of it is left — and the requeued job gets a new pool."""
    spec = fixture(root)
    with_mode("hang", steps="1000", step_ms="100")
    d = Daemon(root, "--launcher", "local", "--worker", POOLSIM, "--reattach-grace", "2").start()
    try:
        jid = int(d.cli("submit", spec, "--ranks", "2", "--print-id").stdout)
        wait_for(lambda: d.json("show", jid)["state"] == "RUNNING", timeout=60, what="RUNNING")
        wait_for(lambda: len(launched_processes(d.state)) == 3, timeout=10, what="mpirun and 2 ranks")
        old = {pid for pid, _ in launched_processes(d.state)}
        d.kill9()
        d.start()
        assert "adopted launch" in d.log(), d.log()[-2000:]
        t0 = time.time()
        wait_for(lambda: not old & {pid for pid, _ in launched_processes(d.state)}, timeout=60,
                 what="the adopted pool's processes to be gone")
        assert "did not re-attach after the daemon restart" in d.log()
        print(f"  the crashed daemon's pool (3 processes) retired {time.time() - t0:.1f} s after the restart")
        wait_for(lambda: d.json("show", jid)["state"] == "RUNNING", timeout=60, what="the job running again")
        d.cli("cancel", jid)
        wait_for(lambda: not launched_processes(d.state), timeout=20, what="the new pool to stop")
    finally:
        d.stop()


if __name__ == "__main__":
    run([test_launched_pool_runs_the_job_and_is_retired, test_cancel_leaves_no_rank_and_no_mpirun,
         test_pool_that_never_starts_holds_the_job, test_pools_of_a_crashed_daemon_are_adopted_and_retired])
