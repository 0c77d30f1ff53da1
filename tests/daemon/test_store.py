"""The store: migrations, a newer database refused, one daemon per database, clean shutdown, schema
guards (terminal states, append-only events), a damaged file refused, the daemonized start."""
import os
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, DAEMON, Daemon, fixture, run  # noqa: E402

SRC = os.environ.get("RADLADS_SRC", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_migrations_pragmas_and_clean_shutdown(root):
    fixture(root)
    d = Daemon(root).start()
    db_path = os.path.join(d.state, "radlads.db")
    assert d.stop() == 0
    assert not os.path.exists(d.sock), "socket removed on SIGTERM"
    assert "stopped" in d.log()
    db = sqlite3.connect(db_path)
    migrations = sorted(n for n in os.listdir(os.path.join(SRC, "sql")) if n.endswith(".sql"))
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(migrations) >= 2, migrations
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"jobs", "stages", "attempts", "checkpoints", "events", "metrics", "pools", "workers",
            "launches"} <= tables, tables
    assert oct(os.stat(os.path.join(d.state, "token")).st_mode & 0o777) == "0o600"


def test_version_1_database_is_migrated_keeping_its_jobs(root):
    """A database written by a daemon before migration 002 (schema 1): the next daemon applies 002 (launches) and
    003 (the memory columns) and every job is still there."""
    spec = fixture(root)
    d = Daemon(root).start()
    jid = int(d.cli("submit", spec, "--hold", "--print-id").stdout)
    assert d.stop() == 0
    db_path = os.path.join(d.state, "radlads.db")
    db = sqlite3.connect(db_path)
    db.execute("DROP TABLE launches")  # back to what schema 1 was
    for table, column in (("metrics", "mem_live_bytes"), ("metrics", "mem_peak_bytes"), ("stages", "mem_peak_bytes")):
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    d.start()
    assert d.json("show", jid)["state"] == "HELD"
    assert "applied migration 002_launches.sql" in d.log() and "applied migration 003_memory.sql" in d.log()
    assert d.stop() == 0
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] >= 2
    assert db.execute("SELECT count(*) FROM launches").fetchone()[0] == 0


def test_newer_database_is_refused(root):
    d = Daemon(root)
    os.makedirs(d.state)
    db = sqlite3.connect(os.path.join(d.state, "radlads.db"))
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    rc, err = d.start(expect_ok=False)
    assert rc == 1 and "schema version 99" in err and "newer radladsd" in err, err


def test_damaged_database_is_refused(root):
    d = Daemon(root)
    os.makedirs(d.state)
    with open(os.path.join(d.state, "radlads.db"), "wb") as f:
        f.write(b"this is not a database" * 100)
    rc, err = d.start(expect_ok=False)
    assert rc == 1 and "radlads.db" in err, err


def test_one_daemon_per_database(root):
    d = Daemon(root).start()
    try:
        rc, err = Daemon(root).start(expect_ok=False)
        assert rc == 1 and f"another radladsd (pid {d.proc.pid})" in err, err
        assert "jobs" in d.json("status")
    finally:
        d.stop()


def test_schema_guards(root):
    spec = fixture(root)
    d = Daemon(root).start()
    jid = int(d.cli("submit", spec, "--print-id").stdout)
    d.cli("submit", spec)
    d.cli("cancel", jid)
    d.stop()
    db = sqlite3.connect(os.path.join(d.state, "radlads.db"))
    for sql, needle in (("UPDATE jobs SET state = 'QUEUED' WHERE id = 1", "terminal"),
                        ("UPDATE events SET reason = 'x'", "append-only"),
                        ("DELETE FROM events", "append-only"),
                        ("UPDATE jobs SET state = 'BOGUS' WHERE id = 2", "CHECK")):
        try:
            db.execute(sql)
            raise AssertionError(f"{sql} was allowed")
        except sqlite3.DatabaseError as e:
            assert needle in str(e), (sql, e)


def test_daemonized_start(root):
    state = os.path.join(root, "bg")
    p = subprocess.run([DAEMON, "--state-dir", state], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0 and "started (pid" in p.stdout, p.stdout + p.stderr
    pid = int(p.stdout.split("pid ")[1].split(")")[0])
    try:
        r = subprocess.run([CLI, "--socket", os.path.join(state, "radladsd.sock"), "daemon-status", "--json"],
                           capture_output=True, text=True)
        assert r.returncode == 0 and f'"pid": {pid}' in r.stdout, r.stdout + r.stderr
        # A bad option fails in the foreground with a message, before daemonizing.
        p2 = subprocess.run([DAEMON, "--state-dir", state], capture_output=True, text=True, timeout=20)
        assert p2.returncode == 1 and "another radladsd" in p2.stderr, p2.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
                time.sleep(0.05)
            except ProcessLookupError:
                break


if __name__ == "__main__":
    run([test_migrations_pragmas_and_clean_shutdown, test_version_1_database_is_migrated_keeping_its_jobs,
         test_newer_database_is_refused, test_damaged_database_is_refused,
         test_one_daemon_per_database, test_schema_guards, test_daemonized_start])
