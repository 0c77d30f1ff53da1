#!/usr/bin/env python3
"""HTTP benchmark: requests/s for /api/jobs with 1,000 jobs (wrk), against the same daemon serving its
embedded static page (the HTTP stack's ceiling, measured in the same run); and SSE fan-out of training
progress (10 events/s from a pool) to 100 clients, with the daemon's CPU use against the same load with no
SSE client.

    python3 bench/daemon/bench_http.py [BUILD_DIR]        (needs wrk: apt-get install wrk)
"""
import json
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "http"))
if len(sys.argv) > 1:
    os.environ["RADLADS_BUILD"] = os.path.abspath(sys.argv[1])
import httpkit  # noqa: E402
from harness import LOADGEN, fixture  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def wrk(url, seconds=5, conns=8):
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", url], capture_output=True, text=True,
                         check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = re.search(r"Latency\s+(\S+)", out).group(1)
    return rps, lat


def sse_clients(d, n, seconds):
    """n SSE connections read for `seconds`; returns progress events received per client."""
    sel = selectors.DefaultSelector()
    counts = {}
    for i in range(n):
        s = socket.create_connection((d.http_host, d.http_port))
        s.sendall(b"GET /api/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        counts[i] = 0
    end = time.time() + seconds
    while time.time() < end:
        for key, _ in sel.select(timeout=0.2):
            data = key.fileobj.recv(65536)
            counts[key.data] += data.count(b"event: progress")
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    return list(counts.values())


def main():
    if not shutil.which("wrk"):
        sys.exit("bench_http: wrk is not installed (apt-get install wrk)")
    root = tempfile.mkdtemp(prefix="rl-bench-http-")
    try:
        spec_yaml = fixture(root)
        d = httpkit.start(root)
        jid = int(d.cli("submit", spec_yaml, "--print-id").stdout)
        spec = os.path.join(root, "spec.json")
        with open(spec, "w") as f:
            json.dump(d.json("show", jid)["spec"], f)
        subprocess.run([LOADGEN, "--socket", d.sock, "--spec", spec, "--clients", "8", "--submits", "125"],
                       check=True, capture_output=True)
        n_jobs = len(d.json("status")["jobs"])
        base = f"http://{d.http_host}:{d.http_port}"
        rows = []
        for name, path in (("/api/jobs (1,000 jobs)", "/api/jobs"), ("/api/jobs?limit=50", "/api/jobs?limit=50"),
                           ("/ (embedded static page)", "/"), ("/metrics", "/metrics")):
            runs = [wrk(base + path) for _ in range(3)]
            rows.append((name, statistics.median(r[0] for r in runs), runs[len(runs) // 2][1]))
        print(f"HTTP requests/s (wrk -t2 -c8, 5 s, median of 3; {n_jobs} jobs in the store)")
        print(f"{'path':<28} {'req/s':>10} {'latency avg':>12}")
        for name, rps, lat in rows:
            print(f"{name:<28} {rps:>10.0f} {lat:>12}")

        # SSE fan-out: a pool reports 10 progress events/s; compare daemon CPU without and with 100 clients.
        d.cli("cancel", *[j["id"] for j in d.json("status", "--state", "QUEUED")["jobs"]])
        d.cli("submit", spec_yaml)
        pool = d.poolsim("--mode", "ok", "--steps", "100000", "--step-ms", "100")
        time.sleep(1.0)
        seconds = 10
        c0 = cpu_seconds(d.proc.pid)
        time.sleep(seconds)
        idle_cpu = (cpu_seconds(d.proc.pid) - c0) / seconds
        c0 = cpu_seconds(d.proc.pid)
        counts = sse_clients(d, 100, seconds)
        sse_cpu = (cpu_seconds(d.proc.pid) - c0) / seconds
        pool.kill()
        d.stop()
        print()
        print(f"SSE fan-out: 10 progress events/s from one pool, {seconds} s")
        print(f"{'clients':>8} {'daemon CPU':>11} {'events/client (min/median/max)':>32} {'delivered/s':>12}")
        print(f"{0:>8} {100 * idle_cpu:>10.1f}% {'-':>32} {'-':>12}")
        print(f"{100:>8} {100 * sse_cpu:>10.1f}% {f'{min(counts)}/{statistics.median(counts):.0f}/{max(counts)}':>32} "
              f"{sum(counts) / seconds:>12.0f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
