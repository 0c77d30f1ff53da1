"""Worker pools with the real daemon: radladsd --launcher local starts `mpirun -np 2 radlads-worker pool`, the
pool registers, trains the stages data parallel and reports; kill -9 of a rank is recovered bit-exactly from
the latest checkpoint; cancel leaves no process behind; a wrong token is refused with a clear message.

usage: test_pool.py [test_name ...]   (default: all)"""
import hashlib
import json
import math
import os
import sqlite3
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from poolfix import RADLADS, WORKER, make_teacher, mpirun, processes, run as run_cmd, safetensors  # noqa: E402
from poolfix import SANITIZER_MARKS, sanitized, sanitizer_reports, start_hand_pool, stop_hand_pool  # noqa: E402
from harness import Daemon, run, wait_for  # noqa: E402


def write_spec(root, name, teacher, data, stages, output, ranks=2, max_restarts=2):
    spec = {"name": name, "teacher": teacher, "student": {"arch": "rad-rwkv7", "variant": "b"},
            "data": {"train": [data]}, "stages": stages, "resources": {"ranks": ranks}, "output": output,
            "max_restarts": max_restarts}
    path = os.path.join(root, f"{name}.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    return path


def train_stage(stage, steps, **kw):
    """A tiny training stage: `steps` optimizer steps of 4 sequences of 32 tokens."""
    s = {"stage": stage, "tokens": steps * 4 * 32, "seq_len": 32, "batch": 4, "micro_batch": 1, "warmup": 2}
    s.update(kw)
    return s


def start_daemon(root):
    d = Daemon(root, "--launcher", "local", "--worker", WORKER).start()
    return d


def stop_daemon(d):
    """Stops the daemon; the launched pools' logs must hold no sanitizer report."""
    d.stop()
    logs = os.path.join(d.state, "pools")
    reports = sanitizer_reports(*[os.path.join(logs, n) for n in os.listdir(logs)]) if os.path.isdir(logs) else []
    assert not reports, "".join(reports[:5])


def pool_processes(d):
    return processes(d.state + "/")  # mpirun and its ranks carry the state dir (socket, token file)


def test_full_job_on_two_rank_pool(root):
    """pretrain -> transfer -> align -> distill -> extend -> export on a launched 2-rank pool."""
    teacher, data = make_teacher(root)
    stages = [train_stage("pretrain", 24, lr="3e-3:1e-4", checkpoint_every=10),
              "transfer",
              train_stage("align", 16, lr="3e-3:1e-4", checkpoint_every=5),
              train_stage("distill", 16, lr="1e-3:1e-4", checkpoint_every=5),
              train_stage("extend", 8, lr="1e-4", schedule="flat", warmup=0),
              "export"]
    out = os.path.join(root, "out")
    spec = write_spec(root, "full", teacher, data, stages, out)
    d = start_daemon(root)
    try:
        t0 = time.time()
        jid = int(d.cli("submit", spec, "--print-id").stdout)
        seen, states = {}, []

        def busy_pool():
            # the pool as registered (IDLE or BUSY): a whole job can take 2 s here, its stages shorter than a poll
            pools = d.json("pools")["pools"]
            if pools and (not states or states[-1] != pools[0]["state"]):
                states.append(pools[0]["state"])
            if pools and pools[0]["state"] in ("IDLE", "BUSY"):
                seen.update(pools[0])
            return d.json("show", jid)["state"] in ("COMPLETED", "FAILED")
        wait_for(busy_pool, timeout=80, what="the job to end")
        show = d.json("show", jid)
        print(f"  job {jid} {show['state']} in {time.time() - t0:.1f} s")
        assert show["state"] == "COMPLETED", (show, d.log()[-3000:])
        assert [s["state"] for s in show["stages"]] == ["DONE"] * 6
        assert [a["state"] for a in show["attempts"]] == ["SUCCEEDED"] * 6
        result = show["result_path"]
        assert result == os.path.join(out, "05-export"), result
        # the pool: 2 ranks, both pids registered, launched by the daemon
        if not seen:  # the whole job ran between two polls (a CLI call takes 0.5 s here): the store and the log
            db = sqlite3.connect(f"file:{d.state}/radlads.db?mode=ro", uri=True)
            row = db.execute("SELECT id, ranks FROM pools ORDER BY id LIMIT 1").fetchone()
            pids = [r[0] for r in db.execute("SELECT pid FROM workers WHERE pool_id = ?", (row[0],))] if row else []
            db.close()
            seen = {"ranks": row[1] if row else None, "rank_pids": [p for p in pids if p > 1],
                    "launched": "launcher: launch" in d.log()}
        assert seen.get("ranks") == 2 and len(seen.get("rank_pids", [])) == 2 and seen.get("launched"), (
            seen, states, d.json("pools"))
        # progress and metrics reached the daemon: per-stage steps and losses
        by_kind = {s["kind"]: s for s in show["stages"]}
        for kind, steps in (("pretrain", 24), ("align", 16), ("distill", 16), ("extend", 8)):
            assert by_kind[kind]["step"] == steps and math.isfinite(by_kind[kind]["last_loss"]), by_kind[kind]
            # the backend's memory peak reached the daemon with the last step: the trainer's own metrics line
            with open(os.path.join(by_kind[kind]["output_dir"], "metrics.jsonl")) as f:
                last = [json.loads(ln) for ln in f if '"backend_peak_bytes"' in ln][-1]
            assert by_kind[kind]["mem_peak_bytes"] == last["backend_peak_bytes"] > 0, (kind, by_kind[kind], last)
        # checkpoints: the sha256 the daemon recorded is the manifest's
        cks = d.json("checkpoints", jid)["checkpoints"]
        assert len(cks) >= 2 + 3 + 3, cks
        for c in cks:
            with open(os.path.join(c["path"], "manifest.json"), "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == c["sha256"], c
        # the trainer's lines are the job's log, from rank 0
        lines = d.json("logs", jid)["lines"]
        texts = "\n".join(ln["text"] for ln in lines)
        assert "align step 16/16" in texts and "checkpoint at step 5" in texts and "export: wrote" in texts, texts[-2000:]
        assert {ln["rank"] for ln in lines} == {0}
        # later stages used the pretrained teacher: transfer copied its embeddings, not the random init's
        pre = safetensors(os.path.join(out, "00-pretrain", "model.safetensors"))
        init = safetensors(os.path.join(teacher, "model.safetensors"))
        stu = safetensors(os.path.join(out, "01-transfer", "model.safetensors"))
        emb = "model.embed_tokens.weight"
        assert stu[emb] == pre[emb] != init[emb]
        # the exported model scores
        r = run_cmd(RADLADS, "score", "--model", result, "--json", "--ids", ",".join(str(i % 250 + 5) for i in range(40)))
        ce = json.loads(r.stdout)["mean_cross_entropy"]
        assert math.isfinite(ce) and 0 < ce < 10, ce
        print(f"  exported {result}: mean CE {ce:.3f} on 40 ids; {len(cks)} checkpoints; {len(lines)} log lines")
        # idle with nothing to run: the launched pool is retired, no process is left
        wait_for(lambda: not pool_processes(d), timeout=20, what="the idle pool to be retired")
    finally:
        stop_daemon(d)


def test_kill9_rank_resumes_bit_exact(root):
    """kill -9 of rank 1 during align: the attempt fails, the next one resumes from the latest checkpoint on
    a new pool, and the result is byte-identical to an uninterrupted run with the same ranks."""
    teacher, data = make_teacher(root)
    # ~5 s of align (about 1,000 steps/s here, 150 under ASan: ~10 s): the kill lands mid-stage, after the first
    # checkpoint (at 1/24 of the stage), with seconds to spare on a loaded machine
    steps = 1500 if sanitized() else 4800
    stages = ["transfer", train_stage("align", steps, lr="3e-3:1e-4", checkpoint_every=steps // 24), "export"]
    d = start_daemon(root)
    try:
        ref = int(d.cli("submit", write_spec(root, "ref", teacher, data, stages, os.path.join(root, "ref")),
                        "--print-id").stdout)
        r = d.cli("wait", ref, "--timeout", "60", check=False)
        assert r.returncode == 0, (r.stdout, d.log()[-3000:])
        wait_for(lambda: not pool_processes(d), timeout=20, what="the first pool to be retired")
        t0 = time.time()
        jid = int(d.cli("submit", write_spec(root, "killed", teacher, data, stages, os.path.join(root, "killed")),
                        "--print-id").stdout)
        wait_for(lambda: any(c["stage_idx"] == 1 for c in d.json("show", jid)["checkpoints"]), timeout=60,
                 what="the first align checkpoint")
        pools = d.json("pools")["pools"]
        victim = pools[0]["rank_pids"][1]
        os.kill(victim, signal.SIGKILL)
        step_at_kill = d.json("show", jid)["stages"][1]["step"]
        print(f"  killed rank 1 (pid {victim}) at align step ~{step_at_kill} of {steps}")
        assert step_at_kill < steps, f"align had finished (step {step_at_kill}) before the kill: the test proves nothing"
        r = d.cli("wait", jid, "--timeout", "150", check=False)
        show = d.json("show", jid)
        assert show["state"] == "COMPLETED", (show, d.log()[-3000:])
        align = [a for a in show["attempts"] if a["stage_idx"] == 1]
        assert len(align) == 2 and align[0]["state"] in ("FAILED", "LOST") and align[1]["state"] == "SUCCEEDED", align
        assert (align[1]["resumed_from_checkpoint"] or 0) > 0, align
        logs = "\n".join(ln["text"] for ln in d.json("logs", jid, "--stage", "align")["lines"])
        assert "resumed from" in logs, logs[-1500:]
        a = open(os.path.join(root, "ref", "02-export", "model.safetensors"), "rb").read()
        b = open(os.path.join(root, "killed", "02-export", "model.safetensors"), "rb").read()
        assert a == b, "the recovered run's weights differ from the uninterrupted run's"
        print(f"  recovered in {time.time() - t0:.1f} s: {align[0]['state']} ({align[0]['failure_reason']}), "
              f"then resumed; exported weights byte-identical ({len(a)} bytes)")
        wait_for(lambda: not pool_processes(d), timeout=20, what="the pool to be retired")
    finally:
        stop_daemon(d)


def test_cancel_stops_every_rank(root):
    """cancel during a long align: STOP reaches the trainer, and mpirun and both ranks are gone in seconds."""
    teacher, data = make_teacher(root)
    stages = ["transfer", train_stage("align", 100000, lr="1e-3", checkpoint_every=1000), "export"]
    d = start_daemon(root)
    try:
        jid = int(d.cli("submit", write_spec(root, "long", teacher, data, stages, os.path.join(root, "out")),
                        "--print-id").stdout)
        wait_for(lambda: d.json("show", jid)["stages"][1]["step"] > 5, timeout=60, what="align to be training")
        procs = pool_processes(d)
        names = sorted(os.path.basename(cmd.split()[0]) for _, cmd in procs)
        assert names == ["mpirun", "radlads-worker", "radlads-worker"], procs
        t0 = time.time()
        d.cli("cancel", jid)
        wait_for(lambda: d.json("show", jid)["state"] == "CANCELLED", timeout=20, what="CANCELLED")
        t_cancel = time.time() - t0
        wait_for(lambda: not pool_processes(d), timeout=15, what="mpirun and every rank to exit")
        t_gone = time.time() - t0
        for pid, _ in procs:
            assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
        logs = "\n".join(ln["text"] for ln in d.json("logs", jid)["lines"])
        assert "stopped by the daemon" in logs, logs[-1500:]
        # The bounds are wait_for's (20 s, then 15 s): no tighter wall-clock assertion on a shared machine.
        print(f"  CANCELLED {t_cancel:.1f} s after cancel; mpirun and 2 ranks gone after {t_gone:.1f} s")
    finally:
        stop_daemon(d)


def test_daemon_kill9_and_restart_the_pool_reattaches(root):
    """kill -9 of radladsd during align: the launched pool keeps training, reconnects to the restarted daemon
    with its pool and attempt ids, and the job completes with the weights of an undisturbed run."""
    teacher, data = make_teacher(root)
    # ~3 s of align (about 1,000 steps/s here, 150 under ASan), so that the daemon is away and back within it
    steps = 1200 if sanitized() else 3000
    stages = ["transfer", train_stage("align", steps, lr="3e-3:1e-4", checkpoint_every=steps // 5), "export"]
    d = start_daemon(root)
    try:
        ref = int(d.cli("submit", write_spec(root, "ref", teacher, data, stages, os.path.join(root, "ref")),
                        "--print-id").stdout)
        assert d.cli("wait", ref, "--timeout", "150", check=False).returncode == 0, d.log()[-3000:]
        wait_for(lambda: not pool_processes(d), timeout=20, what="the first pool to be retired")
        jid = int(d.cli("submit", write_spec(root, "re", teacher, data, stages, os.path.join(root, "re")),
                        "--print-id").stdout)
        wait_for(lambda: d.json("show", jid)["stages"][1]["step"] >= 20, timeout=60, what="align to be training")
        ranks = [pid for pid, cmd in pool_processes(d) if "radlads-worker" in cmd.split()[0]]
        d.kill9()
        time.sleep(1.0)
        d.start()
        step_back = d.json("show", jid)["stages"][1]["step"]
        r = d.cli("wait", jid, "--timeout", "150", check=False)
        show = d.json("show", jid)
        assert show["state"] == "COMPLETED", (show, d.log()[-3000:])
        align = [a for a in show["attempts"] if a["stage_idx"] == 1]
        assert len(align) == 1 and align[0]["state"] == "SUCCEEDED", align
        reasons = [e["reason"] or "" for e in d.json("events", jid)["events"]]
        assert any("re-attached" in x for x in reasons), reasons
        a = open(os.path.join(root, "ref", "02-export", "model.safetensors"), "rb").read()
        b = open(os.path.join(root, "re", "02-export", "model.safetensors"), "rb").read()
        assert a == b, "the re-attached run's weights differ from the undisturbed run's"
        print(f"  the same 2 ranks ({ranks}) finished the attempt after the daemon restart (align at step "
              f"{step_back} of {steps} when it came back); weights byte-identical")
        # the restarted daemon adopted the launch: idle, the pool is retired like one it started itself
        wait_for(lambda: not pool_processes(d), timeout=30, what="the re-attached pool to be retired when idle")
    finally:
        for pid, _ in pool_processes(d):
            os.kill(pid, signal.SIGKILL)
        stop_daemon(d)


def test_wrong_token_is_refused(root):
    d = Daemon(root).start()  # no launcher: the pool is started by hand
    try:
        bad = os.path.join(root, "bad-token")
        with open(bad, "w") as f:
            f.write("0" * 64 + "\n")
        t0 = time.time()
        r = subprocess.run(mpirun(2) + [WORKER, "pool", "--connect", "unix:" + d.sock, "--token-file", bad],
                           capture_output=True, text=True, timeout=60)
        dt = time.time() - t0
        assert r.returncode != 0, r
        assert "radladsd refused the pool: pool token rejected" in r.stderr and "--token-file" in r.stderr, r.stderr
        clean = lambda text: not any(m in text for m in SANITIZER_MARKS)  # noqa: E731 (sanitizer builds)
        assert clean(r.stderr), r.stderr[-3000:]
        print(f"  refused in {dt:.1f} s: {r.stderr.strip().splitlines()[0]}")
        assert d.json("pools")["pools"] == []
        # an unreadable token file and an unreachable daemon say what to fix
        r = subprocess.run(mpirun(1) + [WORKER, "pool", "--connect", "unix:" + d.sock, "--token-file",
                                        os.path.join(root, "missing")], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "STATE_DIR/token" in r.stderr and clean(r.stderr), r.stderr
        r = subprocess.run(mpirun(1) + [WORKER, "pool", "--connect", "unix:" + os.path.join(root, "nope.sock"),
                                        "--token-file", d.token_file, "--register-timeout", "2"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "could not register with radladsd" in r.stderr and "within 2 s" in r.stderr \
            and clean(r.stderr), r.stderr
        # the right token registers
        p = subprocess.Popen(mpirun(1) + [WORKER, "pool", "--connect", "unix:" + d.sock, "--token-file", d.token_file],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            wait_for(lambda: d.json("pools")["pools"], timeout=30, what="the pool to register")
            pool = d.json("pools")["pools"][0]
            assert pool["ranks"] == 1 and pool["device"] == "cpu" and pool["state"] == "IDLE", pool
        finally:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=20)
    finally:
        d.stop()


def test_pool_over_tcp(root):
    """A pool started by hand connects over TCP (--worker-listen) and runs a job."""
    teacher, data = make_teacher(root)
    d = Daemon(root, "--worker-listen", "tcp:127.0.0.1:0").start()
    p = None
    try:
        addr = wait_for(lambda: os.path.exists(os.path.join(d.state, "worker.addr")) and
                        open(os.path.join(d.state, "worker.addr")).read().strip(), timeout=10, what="worker.addr")
        assert addr.startswith("tcp:127.0.0.1:"), addr
        p = start_hand_pool(root, 2, addr, d.token_file, "--name", "tcp-pool")
        stages = ["transfer", train_stage("align", 12, lr="1e-3", checkpoint_every=5), "export"]
        jid = int(d.cli("submit", write_spec(root, "tcp", teacher, data, stages, os.path.join(root, "out")),
                        "--print-id").stdout)
        r = d.cli("wait", jid, "--timeout", "60", check=False)
        show = d.json("show", jid)
        assert show["state"] == "COMPLETED", (show, open(os.path.join(root, "pool.log")).read()[-2000:])
        pools = d.json("pools")["pools"]
        assert len(pools) == 1 and pools[0]["name"] == "tcp-pool" and pools[0]["ranks"] == 2, pools
        print(f"  pool over {addr}: job {jid} {show['state']}")
    finally:
        stop_hand_pool(root, p)
        d.stop()


TESTS = [test_full_job_on_two_rank_pool, test_kill9_rank_resumes_bit_exact, test_cancel_stops_every_rank,
         test_daemon_kill9_and_restart_the_pool_reattaches, test_wrong_token_is_refused, test_pool_over_tcp]

if __name__ == "__main__":
    names = sys.argv[1:]
    run([t for t in TESTS if not names or t.__name__ in names])
