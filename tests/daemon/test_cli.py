"""Every CLI verb end to end against a real daemon, with --json output parsed back."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import CLI, Daemon, fixture, run, wait_for  # noqa: E402


def test_submit_status_show_json(root):
    spec = fixture(root)
    d = Daemon(root).start()
    try:
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        out = d.cli("submit", spec, "--name", "second", "--priority", "7").stdout
        assert out.startswith("submitted job "), out
        jid2 = int(out.split()[2])
        st = d.json("status")
        assert [j["id"] for j in st["jobs"]] == [jid, jid2]
        j1, j2 = st["jobs"]
        assert j1["state"] == "QUEUED" and j1["name"] == "tiny" and j1["owner"] == "root"
        assert j2["name"] == "second" and j2["priority"] == 7
        assert j1["stages_total"] == 3 and j1["current_stage"] == "transfer"
        show = d.json("show", jid)
        assert [s["kind"] for s in show["stages"]] == ["transfer", "align", "export"]
        assert show["stages"][1]["tokens_total"] == 64000
        spec_doc = show["spec"]
        assert spec_doc["teacher"] == os.path.join(root, "teacher"), spec_doc["teacher"]
        assert spec_doc["stages"][1]["lr"] == {"init": 1e-3, "final": 1e-5}
        assert spec_doc["stages"][1]["schedule"] == "cos"
        human = d.cli("status").stdout
        assert "ID" in human.splitlines()[0] and "tiny" in human and "ago" in human, human
        human = d.cli("show", jid).stdout
        assert "align" in human and "64K" in human, human
        # Filters.
        assert [j["id"] for j in d.json("status", "--state", "queued")["jobs"]] == [jid, jid2]
        assert d.json("status", "--state", "HELD")["jobs"] == []
        assert len(d.json("status", "--limit", "1")["jobs"]) == 1
        assert d.cli("status", "--state", "BOGUS", check=False).returncode == 2
    finally:
        d.stop()


def test_flags_only_submit_and_yaml_from_stdin(root):
    fixture(root)
    d = Daemon(root).start()
    try:
        p = subprocess.run([CLI, "--socket", d.sock, "submit", "--teacher", "teacher", "--data", "train.tok",
                            "--output", "out/flags", "--arch", "rad-rwkv6", "--stages", "transfer,export",
                            "--print-id"], cwd=root, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        show = d.json("show", int(p.stdout))
        assert show["spec"]["student"]["arch"] == "rad-rwkv6"
        assert show["spec"]["output"] == os.path.join(root, "out", "flags")
        assert [s["kind"] for s in show["stages"]] == ["transfer", "export"]
        yaml = (f"teacher: {root}/teacher\ndata: {{train: {root}/train.tok}}\noutput: {root}/out/stdin\n")
        jid = int(d.cli("submit", "-", "--print-id", stdin=yaml).stdout)
        assert d.json("show", jid)["name"] == "stdin"
    finally:
        d.stop()


def test_hold_release_cancel_restart(root):
    spec = fixture(root)
    d = Daemon(root).start()
    try:
        a = int(d.cli("submit", spec, "--print-id", "--hold").stdout)
        b = int(d.cli("submit", spec, "--print-id").stdout)
        assert d.json("show", a)["state"] == "HELD"
        d.cli("release", a)
        assert d.json("show", a)["state"] == "QUEUED"
        d.cli("hold", a, b)
        assert {j["state"] for j in d.json("status")["jobs"]} == {"HELD"}
        r = d.cli("release", a, 9999, check=False)
        assert r.returncode == 1 and "no job 9999" in r.stderr, r.stderr
        d.cli("cancel", a)
        assert d.json("show", a)["state"] == "CANCELLED"
        r = d.cli("cancel", a, check=False)
        assert r.returncode == 1 and "already CANCELLED" in r.stderr
        r = d.cli("release", b, "--json")
        doc = json.loads(r.stdout)
        assert doc["results"][0]["ok"] and doc["results"][0]["state"] == "QUEUED"
        # A finished job restarts as a new job; the old one keeps its terminal state.
        out = d.cli("restart", a).stdout
        assert "restarted as job" in out, out
        new = int(out.strip().split()[-1])
        show = d.json("show", new)
        assert show["restart_of"] == a and show["state"] == "QUEUED"
        assert d.json("show", a)["state"] == "CANCELLED"
        assert d.cli("restart", b, check=False).returncode == 1  # queued: nothing to restart
    finally:
        d.stop()


def test_events_follow_and_wait(root):
    spec = fixture(root)
    d = Daemon(root).start()
    try:
        a = int(d.cli("submit", spec, "--print-id").stdout)
        ev = d.json("events", a)["events"]
        assert ev[0]["to"] == "QUEUED" and ev[0]["from"] is None and "submitted by root" in ev[0]["reason"]
        follower = subprocess.Popen([CLI, "--socket", d.sock, "events", str(a), "--follow"],
                                    stdout=subprocess.PIPE, text=True)
        waiter = subprocess.Popen([CLI, "--socket", d.sock, "wait", str(a), "--json"], stdout=subprocess.PIPE, text=True)
        d.cli("hold", a)
        d.cli("release", a)
        d.cli("cancel", a)
        out, _ = follower.communicate(timeout=20)
        assert follower.returncode == 0
        lines = [line for line in out.splitlines() if line.strip()]
        assert [line.split("->")[1].split()[0] for line in lines] == ["QUEUED", "HELD", "QUEUED", "CANCELLED"], out
        wout, _ = waiter.communicate(timeout=20)
        assert waiter.returncode == 1, "a cancelled job is a failure for wait"
        assert json.loads(wout)["jobs"][0]["state"] == "CANCELLED"
        # --after replays only newer events; ids are increasing.
        ids = [e["id"] for e in d.json("events", a)["events"]]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert [e["id"] for e in d.json("events", a, "--after", ids[1])["events"]] == ids[2:]
        # wait: timeout exit 2; unknown id is an error.
        b = int(d.cli("submit", spec, "--print-id").stdout)
        assert d.cli("wait", b, "--timeout", "0.3", check=False).returncode == 2
        r = d.cli("wait", 4242, check=False)
        assert r.returncode == 1 and "no job 4242" in r.stderr
    finally:
        d.stop()


def test_daemon_status_and_missing_daemon(root):
    fixture(root)
    d = Daemon(root).start()
    try:
        doc = d.json("daemon-status")
        assert doc["pid"] == d.proc.pid and doc["db_schema_version"] >= 1
        assert doc["socket_path"] == d.sock
        assert "radladsd" in d.cli("daemon-status").stdout
    finally:
        d.stop()
    r = d.cli("status", check=False)
    assert r.returncode == 1 and "is the daemon running?" in r.stderr and "radladsd --state-dir" in r.stderr, r.stderr
    env = dict(os.environ, RADLADS_SOCKET=d.sock)
    r = subprocess.run([CLI, "status"], capture_output=True, text=True, env=env)
    assert d.sock in r.stderr, "RADLADS_SOCKET is honoured"


def test_usage_errors(root):
    r = subprocess.run([CLI, "frobnicate"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown verb" in r.stderr
    r = subprocess.run([CLI, "show", "abc"], capture_output=True, text=True)
    assert r.returncode == 2 and "not a job id" in r.stderr
    r = subprocess.run([CLI, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "submit" in r.stdout and "wait" in r.stdout


if __name__ == "__main__":
    run([test_submit_status_show_json, test_flags_only_submit_and_yaml_from_stdin, test_hold_release_cancel_restart,
         test_events_follow_and_wait, test_daemon_status_and_missing_daemon, test_usage_errors])
