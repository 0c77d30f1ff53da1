#!/usr/bin/env python3
"""Job-queue benchmark: submit throughput and latency with 1, 8 and 64 concurrent clients, and
`radlads status --json` over 10,000 jobs.  Peers measured in the same run: raw SQLite inserts with the
daemon's durability settings (WAL + synchronous=FULL, one transaction per insert and batched), and the
sqlite3 shell producing the same job list as JSON.  Medians of several runs.

    python3 bench/daemon/bench_queue.py [BUILD_DIR]        (or: ninja -C build bench-queue)
"""
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "daemon"))
if len(sys.argv) > 1:
    os.environ["RADLADS_BUILD"] = os.path.abspath(sys.argv[1])
import harness  # noqa: E402

REPEATS = 3


def loadgen(d, spec, clients, total):
    p = subprocess.run([harness.LOADGEN, "--socket", d.sock, "--spec", spec, "--clients", str(clients),
                        "--submits", str(max(1, total // clients))], capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def sqlite_peer(path, n, batch):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, spec TEXT, state TEXT)")
    spec = "x" * 700
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        db.execute("BEGIN IMMEDIATE")
        for _ in range(batch):
            db.execute("INSERT INTO t(spec, state) VALUES (?, 'QUEUED')", (spec,))
        db.execute("COMMIT")
    dt = time.perf_counter() - t0
    db.close()
    return n / dt


def main():
    root = tempfile.mkdtemp(prefix="rl-bench-")
    try:
        spec_yaml = harness.fixture(root)
        d = harness.Daemon(root).start()
        jid = int(d.cli("submit", spec_yaml, "--print-id").stdout)
        spec = os.path.join(root, "spec.json")
        with open(spec, "w") as f:
            json.dump(d.json("show", jid)["spec"], f)
        rows = []
        for clients in (1, 8, 64):
            runs = [loadgen(d, spec, clients, 2048) for _ in range(REPEATS)]
            rows.append((clients, statistics.median(r["submits_per_s"] for r in runs),
                         statistics.median(r["p50_ms"] for r in runs), statistics.median(r["p99_ms"] for r in runs)))
        # Fill up to 10,000 jobs, then time status.
        have = len(d.json("status")["jobs"])
        if have < 10000:
            loadgen(d, spec, 8, 10000 - have)
        n_jobs = len(d.json("status")["jobs"])
        cli_times, cli_human = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            d.cli("status", "--json")
            cli_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            d.cli("status")
            cli_human.append(time.perf_counter() - t0)
        db_path = os.path.join(d.state, "radlads.db")
        shell = shutil.which("sqlite3")
        peer_times = []
        if shell:
            for _ in range(5):
                t0 = time.perf_counter()
                subprocess.run([shell, "-json", db_path, "SELECT j.id, j.name, j.state, j.owner, j.priority, "
                                "j.submitted_at, j.stages_done, j.stages_total, s.kind FROM jobs j LEFT JOIN stages s "
                                "ON s.job_id = j.id AND s.idx = j.current_stage ORDER BY j.id"],
                               capture_output=True, check=True)
                peer_times.append(time.perf_counter() - t0)
        d.stop()
        peer_single = statistics.median(sqlite_peer(os.path.join(root, "p1.db"), 500, 1) for _ in range(REPEATS))
        peer_batch = statistics.median(sqlite_peer(os.path.join(root, "p2.db"), 4096, 64) for _ in range(REPEATS))

        print(f"submit throughput and latency (median of {REPEATS} runs of 2048 submits; WAL + synchronous=FULL)")
        print(f"{'clients':>8} {'submits/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
        for c, rate, p50, p99 in rows:
            print(f"{c:>8} {rate:>10.0f} {p50:>8.3f} {p99:>8.3f}")
        print(f"peer: raw SQLite insert, 1 per transaction   {peer_single:>8.0f} inserts/s (fsync-bound ceiling "
              f"for unbatched commits)")
        print(f"peer: raw SQLite insert, 64 per transaction  {peer_batch:>8.0f} inserts/s (group-commit ceiling)")
        print()
        print(f"status over {n_jobs} jobs (median of 5, whole CLI process)")
        print(f"  radlads status --json   {statistics.median(cli_times) * 1000:8.1f} ms")
        print(f"  radlads status (table)  {statistics.median(cli_human) * 1000:8.1f} ms")
        if peer_times:
            print(f"  peer: sqlite3 -json     {statistics.median(peer_times) * 1000:8.1f} ms (same rows, same join)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
