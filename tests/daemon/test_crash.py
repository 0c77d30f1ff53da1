"""kill -9 the daemon at random moments during a submit storm (20+ rounds): after each restart every
acknowledged submit is present, nothing is RUNNING without a pool, and the database is intact."""
import json
import os
import random
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import LOADGEN, Daemon, fixture, run, wait_for  # noqa: E402

ROUNDS = 24
PER_ROUND = 10


def test_kill9_during_submit_storm(root):
    spec_yaml = fixture(root)
    d = Daemon(root).start()
    jid = int(d.cli("submit", spec_yaml, "--print-id").stdout)
    spec = os.path.join(root, "spec.json")
    with open(spec, "w") as f:
        json.dump(d.json("show", jid)["spec"], f)
    # A job that is RUNNING on a pool when the daemon dies must not stay RUNNING.
    pool = d.poolsim("--mode", "hang", "--steps", "4")
    deadline = time.time() + 20
    while d.json("show", jid)["state"] != "RUNNING":
        assert time.time() < deadline, "job never started"
        time.sleep(0.05)
    ids_out = os.path.join(root, "ids.txt")
    storm = subprocess.Popen([LOADGEN, "--socket", d.sock, "--spec", spec, "--clients", "4", "--submits", "100000",
                              "--ids-out", ids_out, "--keep-going"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rng = random.Random(1234)

    def n_acked():
        return len(open(ids_out).read().split()) if os.path.exists(ids_out) else 0
    try:
        for rnd in range(ROUNDS):
            # Every round kills a daemon that has acknowledged submits since its start (a slow machine, e.g. under
            # ASan, acknowledges far fewer per second), then at a random moment after that.
            before = n_acked()
            wait_for(lambda: n_acked() >= before + PER_ROUND, timeout=60, what=f"{PER_ROUND} acknowledged submits")
            time.sleep(rng.uniform(0.05, 0.4))
            d.kill9()
            if rnd == 0:
                pool.wait(timeout=10)  # it exits when the daemon goes: its ranks are gone, so no re-attach wait
            d.start()
            acked = {int(x) for x in open(ids_out).read().split()}
            db = sqlite3.connect(os.path.join(d.state, "radlads.db"))
            present = {r[0] for r in db.execute("SELECT id FROM jobs")}
            missing = acked - present
            assert not missing, f"round {rnd}: acknowledged but lost: {sorted(missing)[:10]}"
            running = db.execute("SELECT count(*) FROM jobs WHERE state IN ('RUNNING','RECOVERING','CANCELLING')").fetchone()[0]
            attempts = db.execute("SELECT count(*) FROM attempts WHERE state = 'RUNNING'").fetchone()[0]
            assert running == 0 and attempts == 0, f"round {rnd}: {running} jobs / {attempts} attempts still running"
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            db.close()
            print(f"  round {rnd}: {len(acked)} acknowledged, all present")
        storm.terminate()
        storm.wait()
    finally:
        storm.kill()
        pool.kill()
        d.stop()
    db = sqlite3.connect(os.path.join(d.state, "radlads.db"))
    # The job that ran when the daemon first died went INTERRUPTED and was requeued (default policy).
    states = [r[0] for r in db.execute("SELECT to_state FROM events WHERE job_id = ? AND kind = 'job' ORDER BY id", (jid,))]
    assert "INTERRUPTED" in states, states
    lost = db.execute("SELECT failure_reason FROM attempts WHERE job_id = ? AND state = 'LOST'", (jid,)).fetchall()
    assert lost and "radladsd restarted" in lost[0][0], lost
    assert len(acked) >= PER_ROUND * ROUNDS, f"storm too small to mean anything: {len(acked)}"


if __name__ == "__main__":
    run([test_kill9_during_submit_storm])
