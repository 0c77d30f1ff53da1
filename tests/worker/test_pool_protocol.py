"""The pool's side of the protocol, against a scripted daemon (this file plays radladsd on a Unix socket), with
a real 2-rank pool under mpirun:

- registration: Hello{ROLE_POOL, token}, RegisterPool{ranks 2, both rank pids, launch id};
- heartbeats every heartbeat_ms carrying the running attempt, from the link thread;
- Control CHECKPOINT_NOW: a checkpoint at the next step (CheckpointSaved with the manifest's SHA-256), training
  goes on; DRAIN: a checkpoint, then StageFinished{ok: false, "drained ..."}; STOP: StageFinished{ok: false,
  "stopped by the daemon ..."} at once; a resumed attempt continues from the drained checkpoint;
- the daemon goes away mid-stage: training continues, the link reconnects with backoff and registers again
  with the pool id and the attempt id, and the reports queued meanwhile arrive; a stage that ended while the
  daemon was away is named in the re-registration and its StageFinished follows;
- a stage rank 0 cannot prepare fails on every rank with the reason (no rank left waiting);
- an idle pool without its daemon for --reconnect-timeout exits and says why."""
import hashlib
import json
import os
import re
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from poolfix import WORKER, check, decode, envelope, failures, make_teacher, message, mpirun, processes, run, sanitizer_reports  # noqa: E402,E501

TOKEN = "f" * 64
class ScriptedDaemon:
    """Accepts pool connections, answers the handshake, records every message (conn number, kind, fields, time)."""

    def __init__(self, path, heartbeat_ms=200, pool_id=7):
        self.path, self.heartbeat_ms, self.pool_id = path, heartbeat_ms, pool_id
        self.msgs = queue.Queue()
        self.conn = None
        self.n_conns = 0
        self.lock = threading.Lock()
        self.listen()

    def listen(self):
        self.srv = socket.socket(socket.AF_UNIX)
        self.srv.bind(self.path)
        self.srv.listen(4)
        threading.Thread(target=self._accept, args=(self.srv,), daemon=True).start()

    def go_away(self):
        """Closes the listener and the connection: the pool sees the daemon vanish."""
        self.srv.close()
        os.unlink(self.path)
        with self.lock:
            if self.conn:
                self.conn.shutdown(socket.SHUT_RDWR)
                self.conn.close()
                self.conn = None

    def _accept(self, srv):
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            self.n_conns += 1
            threading.Thread(target=self._serve, args=(c, self.n_conns), daemon=True).start()

    def _read(self, c, n):
        buf = b""
        while len(buf) < n:
            chunk = c.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    def _serve(self, c, no):
        try:
            while True:
                n = int.from_bytes(self._read(c, 4), "big")
                kind, fields = decode(self._read(c, n))
                self.msgs.put((no, kind, fields, time.time()))
                if kind == "hello":
                    if fields.get("token") != TOKEN:
                        c.sendall(envelope("error", message((1, 3), (2, "pool token rejected"))))
                        c.close()
                        return
                    c.sendall(envelope("hello_reply", message((1, 1))))
                elif kind == "register_pool":
                    with self.lock:
                        self.conn = c
                    c.sendall(envelope("pool_registered", message((1, self.pool_id), (2, self.heartbeat_ms))))
        except (EOFError, OSError):
            return

    def send(self, kind, body):
        with self.lock:
            self.conn.sendall(envelope(kind, body))

    def assign(self, attempt, stage_idx, stage, spec, stage_json, input_dir, output_dir, resume_from=""):
        self.send("assignment", message((1, 1), (2, attempt), (3, stage_idx), (4, stage), (5, json.dumps(spec)),
                                        (6, json.dumps(stage_json)), (7, input_dir), (8, output_dir),
                                        (9, resume_from or None)))

    def control(self, kind, attempt):
        self.send("control", message((1, kind), (2, attempt)))

    def expect(self, kind, pred=lambda m: True, timeout=30, seen=None):
        """The next message of this kind matching pred (others are collected into seen)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                no, k, m, t = self.msgs.get(timeout=max(0.01, deadline - time.time()))
            except queue.Empty:
                break
            if seen is not None:
                seen.append((no, k, m, t))
            if k == kind and pred(m):
                return m
        raise AssertionError(f"no {kind} message within {timeout} s")


CHECKPOINT_NOW, DRAIN, STOP = 1, 2, 3


def main():
    with tempfile.TemporaryDirectory() as tmp:
        teacher, data = make_teacher(tmp)
        student = os.path.join(tmp, "00-transfer")
        run(WORKER, "run", "--stage", "transfer", "--teacher", teacher, "--arch", "rad-rwkv7", "--out", student)
        tokfile = os.path.join(tmp, "token")
        with open(tokfile, "w") as f:
            f.write(TOKEN)
        sock = os.path.join(tmp, "d.sock")
        d = ScriptedDaemon(sock)
        log = open(os.path.join(tmp, "pool.log"), "w")
        pool = subprocess.Popen(mpirun(2) + [WORKER, "pool", "--connect", "unix:" + sock, "--token-file", tokfile,
                                             "--launch-id", "42", "--progress-ms", "0", "--reconnect-timeout", "2"],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            hello = d.expect("hello")
            reg = d.expect("register_pool")
            check("Hello: ROLE_POOL with the token", hello.get("role") == 2 and hello.get("token") == TOKEN)
            pids = reg.get("rank_pids", [])
            ranks_ok = len(pids) == 2 and all("radlads-worker" in open(f"/proc/{p}/cmdline").read() for p in pids)
            check("RegisterPool: 2 ranks, both rank pids, the launch id, no pool id yet",
                  reg.get("ranks") == 2 and ranks_ok and reg.get("launch_id") == 42 and not reg.get("pool_id"),
                  str({k: reg.get(k) for k in ("ranks", "rank_pids", "launch_id", "device", "host")}))

            spec = {"teacher": teacher, "student": {"arch": "rad-rwkv7", "variant": "b", "keep_attention_layers": 0},
                    "data": {"train": [data]}, "stages": ["transfer", "align"], "output": tmp}
            align = {"stage": "align", "seed": 0, "tokens": 200000 * 128, "seq_len": 32, "batch": 4, "micro_batch": 1,
                     "lr": {"init": 1e-3, "final": 1e-3}, "lr2": {"init": 1e-3, "final": 1e-3}, "lr_wait": 0.0,
                     "lr_endpoint": 1.0, "schedule": "flat", "warmup": 0, "checkpoint_every": 0,
                     "keep_checkpoints": 3, "clip": 1.0, "kl_weight": 0.0, "ce_weight": 0.0, "loss": "l2"}
            out = os.path.join(tmp, "01-align")
            d.assign(11, 1, "align", spec, align, student, out)
            p = d.expect("progress", lambda m: m.get("step", 0) >= 3)
            check("Progress of attempt 11 every step (--progress-ms 0)", p.get("attempt_id") == 11)
            hb = d.expect("heartbeat", lambda m: m.get("attempt_id") == 11, timeout=5)
            check("Heartbeat carries the running attempt and its step", hb.get("step", 0) >= 1, str(hb))

            # CHECKPOINT_NOW: a checkpoint soon after, then training goes on
            d.control(CHECKPOINT_NOW, 11)
            ck = d.expect("checkpoint_saved")
            manifest = os.path.join(ck.get("path", ""), "manifest.json")
            sha = hashlib.sha256(open(manifest, "rb").read()).hexdigest() if os.path.exists(manifest) else ""
            check("CHECKPOINT_NOW: CheckpointSaved at the next step, sha256 of its manifest",
                  ck.get("attempt_id") == 11 and ck.get("step", 0) > p["step"] and sha == ck.get("sha256"),
                  f"step {ck.get('step')}")
            after = d.expect("progress", lambda m: m.get("step", 0) > ck["step"] + 2)
            check("CHECKPOINT_NOW: training goes on", after["step"] > ck["step"])

            # the daemon goes away for 1.5 s: training continues; the link re-registers with pool and attempt ids
            before = d.expect("progress")["step"]
            d.go_away()
            time.sleep(1.5)
            d.listen()
            reg2 = d.expect("register_pool", timeout=15)
            t_reg = time.time()
            check("after the daemon came back: RegisterPool again with pool id 7 and attempt 11",
                  reg2.get("pool_id") == 7 and reg2.get("attempt_id") == 11 and len(reg2.get("rank_pids", [])) == 2,
                  str({k: reg2.get(k) for k in ("pool_id", "attempt_id")}))
            # Progress.time_ms is when the step ended: the first report after re-registering was made while away
            first = d.expect("progress")
            later = d.expect("progress", lambda m: m["step"] > first["step"] + 30)
            away_ms = t_reg * 1000 - first["time_ms"]
            check("reports queued while away arrive after re-registering; training never paused",
                  away_ms > 100 and first["step"] > before and later["step"] > first["step"],
                  f"last step before {before}; first after: step {first['step']}, made {away_ms:.0f} ms before "
                  f"re-registering")

            # DRAIN: checkpoint, then the stage ends (not ok) saying so
            d.control(DRAIN, 11)
            ck2 = d.expect("checkpoint_saved")
            fin = d.expect("stage_finished")
            check("DRAIN: a checkpoint, then StageFinished{ok: false, drained at that step}",
                  not fin.get("ok") and "drained by the daemon" in fin.get("reason", "")
                  and f"step {ck2['step']}" in fin.get("reason", "") and fin.get("attempt_id") == 11,
                  fin.get("reason", "")[:80])

            # a new attempt resumes from the drained checkpoint; STOP ends it at once
            logs = []
            d.assign(12, 1, "align", spec, align, student, out, resume_from=ck2["path"])
            d.expect("progress", lambda m: m.get("attempt_id") == 12, seen=logs)
            texts = [m.get("text", "") for _, k, m, _ in logs if k == "log"]
            check("resumed attempt: continues from the drained checkpoint",
                  any(f"resumed from {ck2['path']} at step {ck2['step']}" in t for t in texts), str(texts)[-200:])
            t0 = time.time()
            d.control(STOP, 12)
            fin = d.expect("stage_finished")
            dt = time.time() - t0
            # It ends the stage long before its 200000 steps; expect's 30 s is the only clock bound (a shared
            # machine's wall clock proves little, and the worker polls control once per step, see trainer.c).
            stop = re.search(r"stopped by the daemon at step (\d+) of (\d+)", fin.get("reason", ""))
            check("STOP: StageFinished{ok: false, stopped by the daemon} long before the stage's end",
                  not fin.get("ok") and stop is not None and int(stop[1]) < int(stop[2]) // 10,
                  f"{dt:.2f} s: {fin.get('reason', '')[:70]}")

            # a non-training stage on the same pool: export, on rank 0
            d.assign(13, 2, "export", spec, {"stage": "export", "seed": 0}, student, os.path.join(tmp, "02-export"))
            fin = d.expect("stage_finished")
            check("export on the same pool succeeds", fin.get("ok") and
                  os.path.exists(os.path.join(tmp, "02-export", "model.safetensors")), fin.get("reason", ""))

            # a stage that ends while the daemon is away: the re-registration names its attempt, the result follows.
            # The retries come 0.2, 0.6, 1.4 and 3.0 s after the loss; the daemon is back at 1.5 s, so the idle pool
            # is past its 2 s --reconnect-timeout before it next tries: it must try (and find the daemon), not exit.
            short = dict(align, tokens=40 * 128)
            d.assign(14, 1, "align", spec, short, student, os.path.join(tmp, "01-align-short"))
            d.go_away()
            time.sleep(1.5)
            d.listen()
            reg3 = d.expect("register_pool", timeout=15)
            fin = d.expect("stage_finished")
            check("a stage finished while the daemon was away: RegisterPool names attempt 14, then its result",
                  reg3.get("attempt_id") == 14 and fin.get("attempt_id") == 14 and fin.get("ok"),
                  str({"register attempt": reg3.get("attempt_id"), "finished": fin.get("attempt_id")}))

            # rank 0 cannot create the stage folder: every rank learns it, the stage fails at once, saying why
            d.assign(15, 1, "align", spec, align, student, "/proc/radlads-no-such/01-align")
            fin = d.expect("stage_finished", timeout=15)
            check("an output folder rank 0 cannot create: StageFinished{ok: false} with the reason, no hang",
                  fin.get("attempt_id") == 15 and not fin.get("ok") and "cannot create folder" in fin.get("reason", ""),
                  fin.get("reason", "")[:70])

            # idle, and the daemon is gone for good: the pool exits after --reconnect-timeout
            t0 = time.time()
            d.go_away()
            rc = pool.wait(timeout=30)
            dt = time.time() - t0
            log.flush()
            text = open(os.path.join(tmp, "pool.log")).read()
            check("idle without a daemon for --reconnect-timeout 2: the pool exits and says why",
                  rc != 0 and "no daemon for" in text and dt < 15, f"rc {rc} after {dt:.1f} s")
            check("no rank is left", not processes(sock), str(processes(sock)))
            reports = sanitizer_reports(os.path.join(tmp, "pool.log"))
            check("no sanitizer report from any rank (sanitizer builds)", not reports, "".join(reports[:3]))
        except BaseException as e:  # an expect() that timed out: the pool's log below says why
            failures.append(f"{type(e).__name__}: {e}")
            raise
        finally:
            if pool.poll() is None:
                os.killpg(pool.pid, signal.SIGKILL)
                pool.wait()
            log.close()
            if failures:
                print(open(os.path.join(tmp, "pool.log")).read()[-4000:])
    print(f"{len(failures)} failures" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
