"""The JSON API, the token on POSTs, the SSE stream and /metrics, against a daemon fed by poolsim (a pool
over the real protocol), so the data is the daemon's own ingestion of Progress/CheckpointSaved messages."""
import json
import math
import os
import re
import socket
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from httpkit import fixture, get_json, request, run, start, submit, wait_for  # noqa: E402


def test_jobs_list_filters_and_job_detail(root):
    spec = fixture(root)
    d = start(root)
    try:
        a = submit(d, spec)
        b = submit(d, spec, "--hold", "--name", "second")
        jobs = get_json(d, "/api/jobs")["jobs"]
        assert [j["id"] for j in jobs] == [b, a], jobs  # newest first
        for key in ["id", "name", "state", "owner", "owner_uid", "priority", "submitted_at_ms", "updated_at_ms",
                    "current_stage", "stages_done", "stages_total", "tokens_done", "tokens_total", "progress",
                    "restarts", "failure_reason", "tokens_per_s", "eta_s"]:
            assert key in jobs[0], key
        assert get_json(d, "/api/jobs?state=HELD")["jobs"][0]["id"] == b
        assert [j["id"] for j in get_json(d, "/api/jobs?state=queued,held")["jobs"]] == [b, a]
        assert get_json(d, "/api/jobs?state=RUNNING")["jobs"] == []
        owner = jobs[0]["owner"]
        assert len(get_json(d, "/api/jobs?owner=" + owner)["jobs"]) == 2
        assert len(get_json(d, "/api/jobs?owner=%d" % jobs[0]["owner_uid"])["jobs"]) == 2
        assert get_json(d, "/api/jobs?owner=nobody-at-all")["jobs"] == []
        assert len(get_json(d, "/api/jobs?limit=1")["jobs"]) == 1
        for bad in ["/api/jobs?limit=0", "/api/jobs?limit=x", "/api/jobs?state=RUN%27NING", "/api/jobs?owner=%zz"]:
            assert request(d, "GET", bad)[0] == 400, bad
        job = get_json(d, f"/api/jobs/{a}")
        assert job["id"] == a and job["state"] == "QUEUED" and job["spec"]["name"] == "tiny"
        assert [s["kind"] for s in job["stages"]] == ["transfer", "align", "export"]
        assert job["attempts"] == [] and job["checkpoints"] == [] and job["restart_of"] is None
        assert get_json(d, "/api/jobs/99999", status=404)["error"] == "no job 99999"
    finally:
        d.stop()


def test_live_progress_metrics_series_downsampled_logs_events(root):
    spec = fixture(root)
    d = start(root)
    pool = d.poolsim("--steps", "60", "--step-ms", "5")
    try:
        jid = submit(d, spec)
        assert d.cli("wait", jid, "--timeout", "60", check=False).returncode == 0
        job = get_json(d, f"/api/jobs/{jid}")
        assert job["state"] == "COMPLETED" and job["progress"] == 1.0
        assert len(job["checkpoints"]) == 3 and all(len(c["sha256"]) == 64 for c in job["checkpoints"])
        assert [a["state"] for a in job["attempts"]] == ["SUCCEEDED"] * 3
        full = get_json(d, f"/api/jobs/{jid}/metrics?stage=1&points=1000")
        assert full["rows"] == 60 and full["points"] == 60 and not full["downsampled"]
        assert full["step"] == list(range(1, 61))
        assert all(abs(l - 10.0 / s) < 1e-9 for s, l in zip(full["step"], full["loss"]))
        assert full["lr"][0] == 1e-3 and full["tokens"][-1] == 60000
        # the pool's memory per step (poolsim: (1 + step % 3) MiB held, a peak of 3 MiB from step 2 on)
        assert full["mem_live_bytes"] == [(1 + s % 3) << 20 for s in full["step"]], full["mem_live_bytes"][:6]
        assert full["mem_peak_bytes"][0] == 2 << 20 and set(full["mem_peak_bytes"][1:]) == {3 << 20}
        assert [s["mem_peak_bytes"] for s in job["stages"]] == [3 << 20] * 3, job["stages"]
        assert d.json("show", jid)["stages"][1]["mem_peak_bytes"] == 3 << 20
        ds = get_json(d, f"/api/jobs/{jid}/metrics?stage=1&points=10")
        assert ds["downsampled"] and 2 <= ds["points"] <= 10 and ds["rows"] == 60, ds
        assert ds["step"] == sorted(ds["step"]) and ds["step"][-1] == 60
        # a bucket's memory is the most held in it: every bucket of 3 or more steps held 3 MiB at some step
        assert all(m == 3 << 20 for m in ds["mem_live_bytes"]) and ds["mem_peak_bytes"][-1] == 3 << 20, ds
        # Each bucket is the mean of its rows: the overall mean is preserved when buckets are equal.
        assert abs(sum(ds["loss"]) / len(ds["loss"]) - sum(full["loss"]) / 60) < 0.35
        tail = get_json(d, f"/api/jobs/{jid}/metrics?stage=1&after_step=55")
        assert tail["step"] == [56, 57, 58, 59, 60]
        assert request(d, "GET", f"/api/jobs/{jid}/metrics?points=1")[0] == 400
        assert request(d, "GET", "/api/jobs/4242/metrics")[0] == 404
        ev = get_json(d, f"/api/jobs/{jid}/events")["events"]
        assert ev[0]["to"] == "QUEUED" and ev[-1]["to"] == "COMPLETED" and ev[-1]["kind"] == "job"
        after = get_json(d, f"/api/jobs/{jid}/events?after={ev[-2]['id']}")["events"]
        assert [e["id"] for e in after] == [ev[-1]["id"]]
        db = sqlite3.connect(os.path.join(d.state, "radlads.db"), timeout=10)
        with db:
            for i in range(5):
                db.execute("INSERT INTO logs(job_id, time, rank, level, text) VALUES (?,?,?,?,?)",
                           (jid, int(time.time() * 1000), 0, "info", f"line {i} \u00e9"))
        logs = get_json(d, f"/api/jobs/{jid}/logs?limit=3")["logs"]
        assert [l["text"] for l in logs] == ["line 2 \u00e9", "line 3 \u00e9", "line 4 \u00e9"]
    finally:
        pool.kill()
        d.stop()


def test_posts_need_the_token_and_share_the_cli_code_path(root):
    spec = fixture(root)
    d = start(root)
    token = open(d.token_file).read().strip()
    try:
        jid = submit(d, spec, "--hold")
        st, hdr, body = request(d, "POST", f"/api/jobs/{jid}/release")
        assert st == 401 and hdr["www-authenticate"].startswith("Bearer"), (st, body)
        st, _, _ = request(d, "POST", f"/api/jobs/{jid}/release", {"Authorization": "Basic dXNlcjpwYXNz"})
        assert st == 401
        st, _, _ = request(d, "POST", f"/api/jobs/{jid}/release", {"Authorization": "Bearer " + "0" * 64})
        assert st == 403
        st, _, _ = request(d, "POST", f"/api/jobs/{jid}/release", {"Authorization": "Bearer " + token[:-1]})
        assert st == 403
        assert get_json(d, f"/api/jobs/{jid}")["state"] == "HELD"
        auth = {"Authorization": "Bearer " + token}
        st, _, body = request(d, "POST", f"/api/jobs/{jid}/release", auth)
        doc = json.loads(body)
        assert st == 200 and doc["ok"] and doc["state"] == "QUEUED", doc
        st, _, body = request(d, "POST", f"/api/jobs/{jid}/hold", auth)
        assert st == 200 and json.loads(body)["state"] == "HELD"
        st, _, body = request(d, "POST", f"/api/jobs/{jid}/release", auth)
        st, _, body = request(d, "POST", f"/api/jobs/{jid}/release", auth)
        assert st == 409 and "not HELD" in json.loads(body)["error"], body
        st, _, body = request(d, "POST", f"/api/jobs/{jid}/cancel", auth)
        assert st == 200 and json.loads(body)["state"] == "CANCELLED"
        st, _, body = request(d, "POST", f"/api/jobs/{jid}/restart", auth)
        doc = json.loads(body)
        assert st == 200 and doc["new_job_id"] > jid, doc
        new = get_json(d, f"/api/jobs/{doc['new_job_id']}")
        assert new["restart_of"] == jid and new["owner"] == get_json(d, f"/api/jobs/{jid}")["owner"]
        assert request(d, "POST", "/api/jobs/777/cancel", auth)[0] == 404
        # drain of a queued job keeps it from starting (HELD); of a cancelled one it is refused
        st, _, body = request(d, "POST", f"/api/jobs/{doc['new_job_id']}/drain", auth)
        assert st == 200 and json.loads(body)["state"] == "HELD", body
        assert request(d, "POST", f"/api/jobs/{jid}/drain", auth)[0] == 409
        reasons = [e["reason"] for e in d.json("events", jid)["events"]]
        assert "release by http (token)" in reasons and "cancel by http (token)" in reasons, reasons
    finally:
        d.stop()


class SSE:
    """A minimal EventSource: parses id/data/comments off a raw socket."""

    def __init__(self, d, path, last_id=None):
        self.s = socket.create_connection((d.http_host, d.http_port), timeout=10)
        extra = f"Last-Event-ID: {last_id}\r\n" if last_id is not None else ""
        self.s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n{extra}\r\n".encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.s.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head, head
        self.comments = []

    def next_event(self, timeout=10, kind="message"):
        """The next event of the given type: "message" (state events: (id, data)) or "progress" (None, data)."""
        self.s.settimeout(timeout)
        while True:
            while b"\n\n" in self.buf:
                block, self.buf = self.buf.split(b"\n\n", 1)
                ev = {}
                for line in block.decode().split("\n"):
                    if line.startswith(":"):
                        self.comments.append(line)
                    elif ":" in line:
                        k, v = line.split(":", 1)
                        ev[k] = v[1:] if v.startswith(" ") else v
                if "data" in ev and ev.get("event", "message") == kind:
                    return (int(ev["id"]) if "id" in ev else None), json.loads(ev["data"])
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("stream closed")
            self.buf += chunk

    def close(self):
        self.s.close()


def test_sse_replay_with_last_event_id_loses_nothing(root):
    spec = fixture(root)
    d = start(root, "--sse-heartbeat", "1")
    try:
        jobs = [submit(d, spec, "--hold") for _ in range(3)]
        s = SSE(d, "/api/events")
        seen = [s.next_event() for _ in range(3)]
        assert [e[1]["job_id"] for e in seen] == jobs and all(e[1]["to"] == "HELD" for e in seen)
        s.close()  # the client goes away; things happen meanwhile
        last = seen[-1][0]
        for j in jobs:
            d.cli("release", j)
        d.cli("cancel", jobs[0])
        s = SSE(d, "/api/events", last_id=last)
        replay = [s.next_event() for _ in range(4)]
        assert [e[0] for e in replay] == sorted(e[0] for e in replay) and replay[0][0] > last
        assert [(e[1]["job_id"], e[1]["to"]) for e in replay] == \
            [(jobs[0], "QUEUED"), (jobs[1], "QUEUED"), (jobs[2], "QUEUED"), (jobs[0], "CANCELLED")], replay
        # Live events keep coming on the same stream, with no gap in the ids the store gave out.
        d.cli("cancel", jobs[1])
        live = s.next_event()
        assert live[1]["job_id"] == jobs[1] and live[1]["to"] == "CANCELLED"
        db = sqlite3.connect(os.path.join(d.state, "radlads.db"), timeout=10)
        all_ids = [r[0] for r in db.execute("SELECT id FROM events ORDER BY id")]
        db.close()
        assert [e[0] for e in seen + replay + [live]] == all_ids, (all_ids, seen, replay, live)
        # Heartbeat comments arrive while nothing happens.
        deadline = time.time() + 5
        while not s.comments and time.time() < deadline:
            try:
                s.next_event(timeout=0.5)
            except socket.timeout:
                pass
        assert s.comments and s.comments[0].startswith(": heartbeat"), s.comments
        s.close()
        # One job's stream, resumed with ?after= (for clients that cannot set headers).
        s = SSE(d, f"/api/events?job={jobs[2]}&after=0")
        only = [s.next_event() for _ in range(2)]
        assert all(e[1]["job_id"] == jobs[2] for e in only) and [e[1]["to"] for e in only] == ["HELD", "QUEUED"]
        s.close()
        assert request(d, "GET", "/api/events", {"Last-Event-ID": "abc"})[0] == 400
    finally:
        d.stop()


def test_sse_pushes_live_progress_of_the_followed_job(root):
    spec = fixture(root)
    d = start(root)
    pool = None
    try:
        other = submit(d, spec, "--hold")
        jid = submit(d, spec)
        s_all = SSE(d, "/api/events")
        s_job = SSE(d, f"/api/events?job={jid}")
        s_other = SSE(d, f"/api/events?job={other}")
        # The pool comes after the streams are open: progress is pushed live only, so every report reaches them.
        pool = d.poolsim("--mode", "hang", "--steps", "6", "--step-ms", "100")
        got = [s_job.next_event(kind="progress")[1] for _ in range(3)]
        assert [g["step"] for g in got] == sorted(g["step"] for g in got) and all(g["job_id"] == jid for g in got)
        assert got[0]["loss"] > 0 and got[0]["tokens"] == got[0]["step"] * 1000, got[0]
        assert s_all.next_event(kind="progress")[1]["job_id"] == jid
        # The stream of another job gets none of this job's progress (only heartbeats would come).
        try:
            s_other.next_event(timeout=1.0, kind="progress")
            raise AssertionError("progress of another job leaked into a job-filtered stream")
        except socket.timeout:
            pass
        # Progress events carry no id: Last-Event-ID keeps meaning "state events up to here".
        d.cli("cancel", other)
        ev_id, ev = s_other.next_event()
        assert ev["to"] == "CANCELLED" and ev_id is not None
        for s in (s_all, s_job, s_other):
            s.close()
    finally:
        if pool:
            pool.kill()
        d.stop()


# ---- a strict parser for the Prometheus text format (0.0.4) ----
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
SAMPLE = re.compile(rf"^({NAME})(\{{(.*)\}})? (\S+)( -?\d+)?$")
LABEL_PAIR = re.compile(rf'({LABEL})="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse_value(v):
    if v in ("+Inf", "-Inf", "NaN"):
        return float(v.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?)", v):
        raise AssertionError(f"bad sample value {v!r}")
    return float(v)


def parse_prometheus(text):
    """Returns {family: {"type", "help", "samples": [(name, labels, value)]}}; asserts the format's rules."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families, types, current = {}, {}, None
    seen_series = set()
    for ln, line in enumerate(text.split("\n")[:-1], 1):
        assert line == line.strip() and line, f"line {ln}: blank or padded line {line!r}"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            assert parts[1] in ("HELP", "TYPE"), f"line {ln}: unknown comment {line!r}"
            name = parts[2]
            assert re.fullmatch(NAME, name), line
            fam = families.setdefault(name, {"type": "untyped", "help": None, "samples": []})
            if parts[1] == "TYPE":
                assert name not in types, f"line {ln}: second TYPE for {name}"
                assert not fam["samples"], f"line {ln}: TYPE after samples of {name}"
                assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
                types[name] = fam["type"] = parts[3]
            else:
                assert fam["help"] is None, f"line {ln}: second HELP for {name}"
                fam["help"] = parts[3]
            current = name
            continue
        m = SAMPLE.match(line)
        assert m, f"line {ln}: not a sample: {line!r}"
        name, _, labels_text, value = m.group(1), m.group(2), m.group(3), m.group(4)
        labels = {}
        if labels_text:
            pos = 0
            while pos < len(labels_text):
                lm = LABEL_PAIR.match(labels_text, pos)
                assert lm, f"line {ln}: bad labels {labels_text!r}"
                assert lm.group(1) not in labels, f"line {ln}: repeated label"
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        fam_name = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
                fam_name = name[: -len(suffix)]
        assert fam_name == current, f"line {ln}: sample {name} outside its family block (in {current})"
        key = (name, tuple(sorted(labels.items())))
        assert key not in seen_series, f"line {ln}: duplicate series {key}"
        seen_series.add(key)
        families[fam_name]["samples"].append((name, labels, parse_value(value)))
    for name, fam in families.items():
        assert fam["help"] and fam["type"] != "untyped", f"{name}: HELP and TYPE expected"
        if fam["type"] == "counter":
            assert name.endswith("_total"), f"counter {name} must end in _total"
            assert all(v >= 0 for _, _, v in fam["samples"]), name
        if fam["type"] == "histogram":
            groups = {}
            for sname, labels, v in fam["samples"]:
                rest = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
                groups.setdefault(rest, []).append((sname, labels, v))
            for rest, samples in groups.items():
                buckets = [(float(l["le"].replace("+Inf", "inf")), v) for s, l, v in samples if s.endswith("_bucket")]
                assert buckets and buckets[-1][0] == math.inf, f"{name}{rest}: needs a +Inf bucket"
                assert [b for b, _ in buckets] == sorted(b for b, _ in buckets), f"{name}: le not increasing"
                counts = [v for _, v in buckets]
                assert counts == sorted(counts), f"{name}{rest}: buckets not cumulative"
                count = [v for s, _, v in samples if s.endswith("_count")]
                assert count == [counts[-1]], f"{name}{rest}: _count != +Inf bucket"
                assert len([1 for s, _, _ in samples if s.endswith("_sum")]) == 1
    return families


def test_metrics_parse_as_prometheus_text_with_live_values(root):
    spec = fixture(root)
    # Enough planned tokens that the align stage's progress ratio stays below 1 while the test looks at it.
    text = open(spec).read().replace("tokens: 64K", "tokens: 8M")
    open(spec, "w").write(text)
    d = start(root)
    pool = d.poolsim("--steps", "400", "--step-ms", "20")
    try:
        jid = submit(d, spec)
        submit(d, spec, "--hold")
        wait_for(lambda: get_json(d, f"/api/jobs/{jid}")["current_stage"] == "align" and
                 get_json(d, f"/api/jobs/{jid}")["tokens_per_s"] > 0, timeout=30, what="align stage progress")
        wait_for(lambda: get_json(d, f"/api/jobs/{jid}")["checkpoints"], timeout=30, what="a checkpoint")
        d.cli("status")
        st, hdr, body = request(d, "GET", "/metrics")
        assert st == 200 and hdr["content-type"].startswith("text/plain; version=0.0.4"), hdr
        fams = parse_prometheus(body.decode())
        for name in fams:
            assert name.startswith("radlads_"), name
            assert not re.search(r"_(ms|milliseconds|minutes|hours|percent)(_|$)", name), f"{name}: not a base unit"
        jobs = {l["state"]: v for _, l, v in fams["radlads_jobs"]["samples"]}
        assert jobs["RUNNING"] == 1 and jobs["HELD"] == 1 and len(jobs) == 9
        trans = {l["to"]: v for _, l, v in fams["radlads_job_transitions_total"]["samples"]}
        assert trans["RUNNING"] == 1 and trans["HELD"] == 1 and trans["QUEUED"] == 1, trans
        assert fams["radlads_job_restarts_total"]["samples"][0][2] == 0
        (_, labels, ratio), = fams["radlads_stage_progress_ratio"]["samples"]
        assert labels == {"job": str(jid), "stage": "align"} and 0 < ratio < 1, (labels, ratio)
        (_, labels, tps), = fams["radlads_job_tokens_per_second"]["samples"]
        assert labels == {"job": str(jid)} and tps > 0
        (_, labels, mem), = fams["radlads_stage_device_memory_peak_bytes"]["samples"]
        assert labels == {"job": str(jid), "stage": "align"} and mem == 3 << 20, (labels, mem)
        (_, _, ck), = fams["radlads_job_last_checkpoint_timestamp_seconds"]["samples"]
        assert abs(ck - time.time()) < 120, ck
        reqs = {(l["route"], l["code"]): v for _, l, v in fams["radlads_http_requests_total"]["samples"]}
        assert reqs[("job", "2xx")] >= 2, reqs
        sock = {l["role"]: v for _, l, v in fams["radlads_socket_requests_total"]["samples"]}
        assert sock["cli"] >= 3 and sock["pool"] >= 10, sock
        assert any(s.endswith("_count") and l.get("route") == "job" and v >= 2
                   for s, l, v in fams["radlads_http_request_duration_seconds"]["samples"])
        # The parser itself refuses what it must.
        for bad in ["x 1\n", "# TYPE radlads_a counter\nradlads_a 1\n", "# HELP a h\n# TYPE a gauge\na{b=\"c} 1\n",
                    "# HELP a h\n# TYPE a gauge\na 1\na 2\n", "# HELP a h\n# TYPE a gauge\na one\n"]:
            try:
                parse_prometheus(bad)
            except AssertionError:
                continue
            raise AssertionError(f"the test parser accepted {bad!r}")
    finally:
        pool.kill()
        d.stop()


if __name__ == "__main__":
    run([test_jobs_list_filters_and_job_detail, test_live_progress_metrics_series_downsampled_logs_events,
         test_posts_need_the_token_and_share_the_cli_code_path, test_sse_replay_with_last_event_id_loses_nothing,
         test_sse_pushes_live_progress_of_the_followed_job, test_metrics_parse_as_prometheus_text_with_live_values])
