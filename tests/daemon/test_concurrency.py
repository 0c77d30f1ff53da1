"""8 clients x 500 submits at once -> exactly 4,000 jobs, unique ids, one submit event per job."""
import json
import os
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import LOADGEN, Daemon, fixture, run  # noqa: E402


def canonical_spec(d, root):
    """The canonical JSON of the fixture spec, as the daemon stores it (absolute paths)."""
    jid = int(d.cli("submit", fixture(root), "--print-id").stdout)
    spec = d.json("show", jid)["spec"]
    d.cli("cancel", jid)
    path = os.path.join(root, "spec.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    return path, jid


def test_8x500_concurrent_submits(root):
    d = Daemon(root).start()
    try:
        spec, first = canonical_spec(d, root)
        ids_out = os.path.join(root, "ids.txt")
        p = subprocess.run([LOADGEN, "--socket", d.sock, "--spec", spec, "--clients", "8", "--submits", "500",
                            "--ids-out", ids_out], capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, p.stderr
        summary = json.loads(p.stdout)
        print("  loadgen:", summary)
        assert summary["acknowledged"] == 4000 and summary["errors"] == 0
        ids = [int(x) for x in open(ids_out).read().split()]
        assert len(ids) == 4000 and len(set(ids)) == 4000, "ids must be unique"
        jobs = d.json("status", "--state", "QUEUED")["jobs"]
        assert sorted(j["id"] for j in jobs) == sorted(ids)
    finally:
        d.stop()
    db = sqlite3.connect(os.path.join(d.state, "radlads.db"))
    assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 4001
    # Every job has exactly one creation event, and every event id is unique and increasing with time.
    rows = db.execute("SELECT job_id, count(*) FROM events WHERE from_state IS NULL GROUP BY job_id").fetchall()
    assert len(rows) == 4001 and all(n == 1 for _, n in rows)
    assert db.execute("SELECT count(*) FROM stages").fetchone()[0] == 4001 * 3
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []


if __name__ == "__main__":
    run([test_8x500_concurrent_submits])
