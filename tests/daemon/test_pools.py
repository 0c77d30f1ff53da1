"""The pool side of the protocol, driven by poolsim (a real client over the real socket): assignment,
progress, checkpoints, completion, failures with restarts from checkpoints, lost pools, hangs, cancel,
priority and matching."""
import os
import signal
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, fixture, run, wait_for  # noqa: E402


def state(d, jid):
    return d.json("show", jid)["state"]


def test_job_runs_to_completion(root):
    spec = fixture(root)
    d = Daemon(root).start()
    pool = d.poolsim("--steps", "4")
    try:
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        r = d.cli("wait", jid, "--timeout", "30", check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        show = d.json("show", jid)
        assert show["state"] == "COMPLETED" and show["progress"] == 1.0
        assert [s["state"] for s in show["stages"]] == ["DONE"] * 3
        assert [a["state"] for a in show["attempts"]] == ["SUCCEEDED"] * 3
        assert show["result_path"] == show["stages"][-1]["output_dir"]
        ck = show["checkpoints"]
        assert len(ck) == 3 and all(len(c["sha256"]) == 64 and os.path.exists(c["path"]) for c in ck)
        ev = [(e["kind"], e["to"]) for e in d.json("events", jid)["events"]]
        assert ("job", "RUNNING") in ev and ev[-1] == ("job", "COMPLETED"), ev
        assert ("checkpoint", "SAVED") in ev
        db = sqlite3.connect(os.path.join(d.state, "radlads.db"))
        assert db.execute("SELECT count(*) FROM metrics WHERE job_id = ?", (jid,)).fetchone()[0] == 12
        # The watching verbs: checkpoints, logs (filtered by stage, tail), pools, watch.
        cks = d.json("checkpoints", jid)["checkpoints"]
        assert [c["stage"] for c in cks] == ["transfer", "align", "export"] and cks == sorted(cks, key=lambda c: c["id"])
        assert "align" in d.cli("checkpoints", jid).stdout

        lines = d.json("logs", jid)["lines"]
        assert [l["stage_idx"] for l in lines] == [0, 1, 2] and "checkpoint saved at step 2" in lines[0]["text"]
        assert [l["stage_idx"] for l in d.json("logs", jid, "--stage", "align")["lines"]] == [1]
        assert [l["stage_idx"] for l in d.json("logs", jid, "--stage", "2")["lines"]] == [2]
        assert len(d.json("logs", jid, "--tail", "1")["lines"]) == 1
        assert d.cli("logs", jid, "--stage", "nope", check=False).returncode == 1
        assert "checkpoint saved" in d.cli("logs", jid, "-f").stdout  # ends by itself: the job is done
        pools = d.json("pools")["pools"]
        assert len(pools) == 1 and pools[0]["state"] == "IDLE" and pools[0]["rank_pids"] == [pool.pid]
        out = d.cli("watch", jid).stdout
        assert "COMPLETED" in out and "align" in out and "100.0%" in out, out
        # poolsim reports a memory peak of 3 MiB: watch and show print it per stage
        assert out.count("peak 3.00 MiB") == 3, out
        table = d.cli("show", jid).stdout
        assert "MEM PEAK" in table and table.count("3.00 MiB") == 3, table
        assert db.execute("SELECT state FROM pools").fetchone()[0] == "IDLE"
    finally:
        pool.kill()
        d.stop()


def test_failure_restarts_from_latest_checkpoint(root):
    spec = fixture(root)
    d = Daemon(root).start()
    pool = d.poolsim("--mode", "fail-once", "--steps", "4")
    try:
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        assert d.cli("wait", jid, "--timeout", "30", check=False).returncode == 0
        show = d.json("show", jid)
        assert show["restarts"] == 1
        a1, a2 = show["attempts"][0], show["attempts"][1]
        assert a1["state"] == "FAILED" and a1["failure_reason"] == "simulated failure"
        assert a2["stage_idx"] == a1["stage_idx"] and a2["number"] == 2
        assert a2["resumed_from_checkpoint"] == show["checkpoints"][0]["id"], (a2, show["checkpoints"])
        ev = [(e["kind"], e["to"], e["reason"]) for e in d.json("events", jid)["events"] if e["kind"] == "job"]
        assert ("job", "RECOVERING", "simulated failure (restart 1 of 2)") in ev, ev
    finally:
        pool.kill()
        d.stop()


def test_checkpoint_rows_keep_the_last_n_of_a_stage(root):
    spec = fixture(root)
    keep1 = os.path.join(root, "keep1.yaml")
    with open(keep1, "w") as f:
        f.write(open(spec).read().replace("  - transfer\n", "").replace('lr: "1e-3:1e-5"}', 'lr: "1e-3:1e-5", keep_checkpoints: 1}'))
    d = Daemon(root).start()
    pool = d.poolsim("--mode", "fail-once", "--steps", "4")
    try:
        jid = int(d.cli("submit", keep1, "--print-id").stdout)
        assert d.cli("wait", jid, "--timeout", "30", check=False).returncode == 0
        # Two attempts of the align stage each saved one; keep_checkpoints 1 leaves the newer.
        cks = d.json("checkpoints", jid)["checkpoints"]
        assert [c["stage_idx"] for c in cks] == [0, 1], cks
        db = sqlite3.connect(os.path.join(d.state, "radlads.db"))
        rows = db.execute("SELECT id, deleted_at IS NOT NULL FROM checkpoints WHERE stage_idx = 0 ORDER BY id").fetchall()
        assert [r[1] for r in rows] == [1, 0], rows
        assert cks[0]["id"] == rows[1][0]
    finally:
        pool.kill()
        d.stop()


def test_exhausted_restarts_fail_the_job(root):
    spec = fixture(root)
    d = Daemon(root).start()
    pool = d.poolsim("--mode", "fail", "--steps", "2")
    try:
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        r = d.cli("wait", jid, "--timeout", "30", check=False)
        assert r.returncode == 1, r.stdout
        show = d.json("show", jid)
        assert show["state"] == "FAILED" and "no restarts left" in show["failure_reason"], show["failure_reason"]
        assert len(show["attempts"]) == 3 and show["restarts"] == 2
        assert show["stages"][0]["state"] == "FAILED"
    finally:
        pool.kill()
        d.stop()


def test_lost_pool_and_hang_and_heartbeat(root):
    spec = fixture(root)
    d = Daemon(root, "--hang-timeout", "2", "--heartbeat-timeout", "3", "--reconnect-grace", "2").start()
    try:
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        # A pool that dies mid-stage: its attempt waits the reconnect grace, then is LOST, the job RECOVERING,
        # and the next pool resumes it.
        p1 = d.poolsim("--mode", "disconnect", "--steps", "4")
        p1.wait(timeout=20)
        t0 = time.time()
        wait_for(lambda: state(d, jid) == "RECOVERING", what="RECOVERING")
        assert time.time() - t0 > 0.5, "the attempt was lost before the reconnect grace ended"
        a = d.json("show", jid)["attempts"][0]
        assert a["state"] == "LOST" and "did not reconnect within 2 s" in a["failure_reason"], a
        assert any("waits 2 s for it to reconnect" in (e["reason"] or "") for e in d.json("events", jid)["events"])
        # A pool that stops progressing is torn down after the hang timeout.
        p2 = d.poolsim("--mode", "hang", "--steps", "4")
        wait_for(lambda: len(d.json("show", jid)["attempts"]) == 2 and
                 d.json("show", jid)["attempts"][1]["state"] == "FAILED", timeout=20, what="hang detection")
        assert "no step progress" in d.json("show", jid)["attempts"][1]["failure_reason"]
        p2.wait(timeout=10)  # its connection was closed
        # A pool whose heartbeats stop (SIGSTOP) is lost too.
        p3 = d.poolsim("--mode", "hang", "--steps", "40", "--step-ms", "200")
        wait_for(lambda: len(d.json("show", jid)["attempts"]) == 3, what="third attempt")
        os.kill(p3.pid, signal.SIGSTOP)
        wait_for(lambda: d.json("show", jid)["state"] == "FAILED", timeout=20, what="heartbeat loss")
        reason = d.json("show", jid)["attempts"][2]["failure_reason"]
        assert "heartbeats stopped" in reason or "no step progress" in reason, reason
        os.kill(p3.pid, signal.SIGKILL)
    finally:
        d.stop()


def test_cancel_running_job_stops_the_pool(root):
    spec = fixture(root)
    d = Daemon(root).start()
    pool = d.poolsim("--mode", "hang", "--steps", "4")
    try:
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        wait_for(lambda: state(d, jid) == "RUNNING", what="RUNNING")
        out = d.cli("cancel", jid).stdout
        assert "CANCELLING" in out or "CANCELLED" in out, out
        wait_for(lambda: state(d, jid) == "CANCELLED", what="CANCELLED")
        show = d.json("show", jid)
        assert show["attempts"][0]["state"] == "CANCELLED"
        # The pool is idle again and takes the next job.
        j2 = int(d.cli("submit", spec, "--print-id", "--name", "next").stdout)
        wait_for(lambda: state(d, j2) == "RUNNING", what="next job on the same pool")
    finally:
        pool.kill()
        d.stop()


def test_restart_of_a_running_job_resumes_without_using_a_restart(root):
    spec = fixture(root)
    d = Daemon(root).start()
    pool = d.poolsim("--mode", "hang", "--steps", "4")
    try:
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        wait_for(lambda: state(d, jid) == "RUNNING" and d.json("show", jid)["checkpoints"], what="a checkpoint")
        out = d.cli("restart", jid).stdout
        assert "resumes from its latest checkpoint" in out, out
        wait_for(lambda: len(d.json("show", jid)["attempts"]) == 2, what="second attempt")
        show = d.json("show", jid)
        a1, a2 = show["attempts"]
        assert a1["state"] == "CANCELLED" and a1["failure_reason"] == "restart requested", a1
        assert a2["state"] == "RUNNING" and a2["resumed_from_checkpoint"] == show["checkpoints"][0]["id"]
        assert show["restarts"] == 0 and show["state"] == "RUNNING"
    finally:
        pool.kill()
        d.stop()


def test_drain_checkpoints_stops_and_holds_then_release_resumes(root):
    spec = fixture(root)
    d = Daemon(root).start()
    # Stages of 5 s: the drain lands in the first one however slow the CLI calls before it are.
    pool = d.poolsim("--mode", "ok", "--steps", "200", "--step-ms", "25")
    try:
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        wait_for(lambda: d.json("show", jid)["stages"][0]["step"] >= 3, what="progress")
        out = d.cli("drain", jid).stdout
        assert "checkpoints and stops" in out, out
        wait_for(lambda: d.json("show", jid)["state"] == "HELD", what="HELD after the drain")
        show = d.json("show", jid)
        drained = [i for i, a in enumerate(show["attempts"]) if a["failure_reason"] == "drained"]
        assert len(drained) == 1 and show["attempts"][drained[0]]["state"] == "CANCELLED", show["attempts"]
        assert show["restarts"] == 0
        drained_ckpt = show["checkpoints"][-1]["id"]
        d.cli("release", jid)
        assert d.cli("wait", jid, "--timeout", "90", check=False).returncode == 0
        a2 = d.json("show", jid)["attempts"][drained[0] + 1]
        assert a2["resumed_from_checkpoint"] == drained_ckpt, (a2, drained_ckpt)
        assert d.cli("drain", jid, check=False).returncode == 1  # completed: nothing to drain
    finally:
        pool.kill()
        d.stop()


def test_daemon_restart_reattaches_a_live_pool(root):
    spec = fixture(root)
    d = Daemon(root).start()
    pool = d.poolsim("--mode", "ok", "--steps", "24", "--step-ms", "100", "--reconnect")
    try:
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        wait_for(lambda: d.json("show", jid)["stages"][0]["step"] >= 3, timeout=20, what="progress")
        d.kill9()
        time.sleep(0.3)
        d.start()
        # The pool is alive: its attempt is not lost, the job is not requeued, and it re-attaches.
        assert d.json("show", jid)["state"] == "RUNNING"
        r = d.cli("wait", jid, "--timeout", "60", check=False)
        assert r.returncode == 0, r.stdout + d.log()[-2000:]
        show = d.json("show", jid)
        assert [a["state"] for a in show["attempts"]] == ["SUCCEEDED"] * 3, show["attempts"]
        reasons = [e["reason"] for e in d.json("events", jid)["events"]]
        assert any("re-attached after a daemon restart" in x for x in reasons), reasons
        assert not any("INTERRUPTED" == e["to"] for e in d.json("events", jid)["events"])
    finally:
        pool.kill()
        d.stop()


def test_pool_that_does_not_reattach_is_lost_after_the_grace(root):
    spec = fixture(root)
    d = Daemon(root, "--reattach-grace", "10").start()  # the restart and one CLI call fit well inside it
    pool = d.poolsim("--mode", "hang", "--steps", "6", "--step-ms", "100")
    try:
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        wait_for(lambda: d.json("show", jid)["state"] == "RUNNING", what="RUNNING")
        os.kill(pool.pid, signal.SIGSTOP)  # alive, but it will never come back
        d.kill9()
        d.start()
        assert d.json("show", jid)["state"] == "RUNNING", "within the grace the attempt waits for its pool"
        wait_for(lambda: d.json("show", jid)["state"] == "QUEUED", timeout=30, what="requeue after the grace")
        a = d.json("show", jid)["attempts"][0]
        assert a["state"] == "LOST" and "did not re-attach within 10 s" in a["failure_reason"], a
        os.kill(pool.pid, signal.SIGKILL)
    finally:
        pool.kill()
        d.stop()


def test_pool_back_after_the_grace_stops_its_orphan_then_takes_work(root):
    spec = fixture(root)
    d = Daemon(root, "--reattach-grace", "1").start()
    pool = d.poolsim("--mode", "hang", "--steps", "8", "--step-ms", "100", "--reconnect")
    try:
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        wait_for(lambda: d.json("show", jid)["state"] == "RUNNING", what="RUNNING")
        os.kill(pool.pid, signal.SIGSTOP)
        d.kill9()
        d.start()
        wait_for(lambda: d.json("show", jid)["state"] == "QUEUED", timeout=15, what="requeued after the grace")
        os.kill(pool.pid, signal.SIGCONT)  # it comes back still running the attempt that was given up
        wait_for(lambda: len(d.json("show", jid)["attempts"]) == 2, timeout=20, what="a new attempt on the same pool")
        a1, a2 = d.json("show", jid)["attempts"]
        assert a1["state"] == "LOST" and a2["state"] == "RUNNING", (a1, a2)
        assert "orphaned attempt" in d.log() and "is free" in d.log()
    finally:
        pool.kill()
        d.stop()


def test_priority_matching_and_max_running(root):
    spec = fixture(root)
    d = Daemon(root, "--max-running", "1").start()
    try:
        low = int(d.cli("submit", spec, "--print-id", "--name", "low").stdout)
        high = int(d.cli("submit", spec, "--print-id", "--name", "high", "--priority", "10").stdout)
        named = int(d.cli("submit", spec, "--print-id", "--name", "named", "--pool", "big").stdout)
        gpu = int(d.cli("submit", spec, "--print-id", "--name", "gpu", "--device", "cuda").stdout)
        two = int(d.cli("submit", spec, "--print-id", "--name", "two", "--ranks", "2",
                        "--priority", "100").stdout)
        p1 = d.poolsim("--mode", "hang", "--steps", "4")
        wait_for(lambda: state(d, high) == "RUNNING", what="highest priority first")
        p2 = d.poolsim("--mode", "hang", "--steps", "4")
        time.sleep(1.0)
        assert state(d, low) == "QUEUED", "max-running 1 keeps the second job queued"
        assert state(d, two) == "QUEUED" and state(d, gpu) == "QUEUED" and state(d, named) == "QUEUED"
        d.cli("cancel", high)
        wait_for(lambda: state(d, low) == "RUNNING", what="next job after a cancel")
        assert state(d, named) == "QUEUED", "a job asking for pool 'big' waits for that pool"
        p1.kill()
        p2.kill()
    finally:
        d.stop()


if __name__ == "__main__":
    run([test_job_runs_to_completion, test_failure_restarts_from_latest_checkpoint,
         test_checkpoint_rows_keep_the_last_n_of_a_stage, test_exhausted_restarts_fail_the_job,
         test_lost_pool_and_hang_and_heartbeat, test_cancel_running_job_stops_the_pool,
         test_restart_of_a_running_job_resumes_without_using_a_restart,
         test_drain_checkpoints_stops_and_holds_then_release_resumes, test_daemon_restart_reattaches_a_live_pool,
         test_pool_that_does_not_reattach_is_lost_after_the_grace,
         test_pool_back_after_the_grace_stops_its_orphan_then_takes_work, test_priority_matching_and_max_running])
