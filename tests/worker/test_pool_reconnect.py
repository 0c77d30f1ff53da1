"""A network blip between a pool and radladsd: the pool connects over TCP through a proxy; mid-align the test
cuts every proxied connection.  The worker reconnects and re-registers with its pool and attempt ids within
the daemon's --reconnect-grace, so the SAME attempt continues (no restart is spent, nothing is recomputed),
the pool keeps its id, the daemon records the drop and the reconnection as events, the job's log has every
progress line exactly once (those the cut swallowed are sent again), and the exported weights are
byte-identical to an undisturbed run's."""
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from poolfix import make_teacher, sanitized, start_hand_pool, stop_hand_pool  # noqa: E402
from harness import Daemon, run, wait_for  # noqa: E402
from test_pool import train_stage, write_spec  # noqa: E402


class Proxy:
    """A TCP relay 127.0.0.1:port -> target whose live connections can be cut at once."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.live, self.lock, self.accepted, self.swallow = [], threading.Lock(), 0, False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(self.target)
            with self.lock:
                self.live += [c, u]
                self.accepted += 1
            for a, b, up in ((c, u, True), (u, c, False)):
                threading.Thread(target=self._pump, args=(a, b, up), daemon=True).start()

    def _pump(self, src, dst, upstream):
        try:
            while True:
                buf = src.recv(65536)
                if not buf:
                    break
                if upstream and self.swallow:
                    continue  # in flight when the link died: the worker wrote it, the daemon never sees it
                dst.sendall(buf)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self, swallow_s=1.0, until=None):
        """For swallow_s (or until until() is true) the pool's frames vanish on the way (as in a dying link's
        buffers), then every connection is closed."""
        self.swallow = True
        if until:
            wait_for(until, timeout=240, what="the condition to cut at")
        else:
            time.sleep(swallow_s)
        with self.lock:
            self.swallow = False
            for s in self.live:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.live = []


def proxied_pool(root, d):
    """A hand-started 2-rank pool that reaches daemon d's TCP worker listener through a Proxy."""
    addr = wait_for(lambda: os.path.exists(os.path.join(d.state, "worker.addr")) and
                    open(os.path.join(d.state, "worker.addr")).read().strip(), timeout=10, what="worker.addr")
    proxy = Proxy(int(addr.rsplit(":", 1)[1]))
    return proxy, start_hand_pool(root, 2, f"tcp:127.0.0.1:{proxy.port}", d.token_file)


def run_job(d, root, name, teacher, data, stages, proxy=None, victim_step=None):
    jid = int(d.cli("submit", write_spec(root, name, teacher, data, stages, os.path.join(root, name)),
                    "--print-id").stdout)
    if proxy:
        pool_before = d.json("pools")["pools"][0]["id"]  # before: nothing but the poll between the step and the cut
        wait_for(lambda: d.json("show", jid)["stages"][1]["step"] >= victim_step, timeout=240,
                 what=f"align step {victim_step}")
        proxy.cut()
        print(f"  cut the pool's connection at align step ~{d.json('show', jid)['stages'][1]['step']}")
    r = d.cli("wait", jid, "--timeout", "240", check=False, timeout=250)
    show = d.json("show", jid)
    assert show["state"] == "COMPLETED", (show, d.log()[-3000:])
    if proxy:
        return show, pool_before
    return show, None


def test_connection_cut_mid_stage_same_attempt_continues(root):
    teacher, data = make_teacher(root)
    # long enough that the cut lands mid-stage on an idle machine (~5 s of align here when idle)
    steps = 1000 if sanitized() else 4000
    stages = ["transfer", train_stage("align", steps, lr="3e-3:1e-4", checkpoint_every=steps // 5), "export"]
    d = Daemon(root, "--worker-listen", "tcp:127.0.0.1:0", "--reconnect-grace", "60").start()
    p = None
    try:
        proxy, p = proxied_pool(root, d)
        ref, _ = run_job(d, root, "ref", teacher, data, stages)
        show, pool_before = run_job(d, root, "cut", teacher, data, stages, proxy=proxy, victim_step=steps // 8)
        align = [a for a in show["attempts"] if a["stage_idx"] == 1]
        assert len(align) == 1 and align[0]["state"] == "SUCCEEDED", align
        reasons = [e["reason"] or "" for e in d.json("events", show["id"])["events"]]
        assert any("connection dropped; its attempt waits 60 s" in x for x in reasons), reasons
        back = [x for x in reasons if "reconnected after" in x]
        assert back and f"pool {pool_before} reconnected" in back[0], reasons
        assert proxy.accepted >= 2, proxy.accepted
        assert d.json("pools")["pools"][0]["id"] == pool_before
        # no log line was lost with the cut connection, none arrived twice: the lines the old connection
        # swallowed were sent again (numbered), duplicates ignored
        def step_lines(jid):
            return [ln["text"].split()[2] for ln in d.json("logs", jid, "--stage", "align")["lines"]
                    if ln["text"].startswith("align step ")]
        want, got = step_lines(ref["id"]), step_lines(show["id"])
        assert got == want, (len(want), len(got), sorted(set(want) ^ set(got))[:10])
        pool_log = open(os.path.join(root, "pool.log")).read()
        again = [ln for ln in pool_log.splitlines() if "reports sent again" in ln]
        assert again and int(again[0].split("; ")[-1].split()[0]) > 0, (again, pool_log[-2000:])
        print("  worker:", again[0].split("; ")[-1], f"; {len(got)} align progress lines, as in the undisturbed run")
        a = open(os.path.join(root, "ref", "02-export", "model.safetensors"), "rb").read()
        b = open(os.path.join(root, "cut", "02-export", "model.safetensors"), "rb").read()
        assert a == b, "the run whose connection was cut differs from the undisturbed run"
        print(f"  {back[0]}; one align attempt; exported weights byte-identical ({len(a)} bytes)")
    finally:
        stop_hand_pool(root, p)
        d.stop()


def test_stage_end_swallowed_by_the_cut_is_sent_again(root):
    """The stage ends while the link is already dead (its StageFinished is written into the void): after the
    reconnect the worker sends it again and the daemon takes it — no grace runs out, no restart, no recompute."""
    teacher, data = make_teacher(root)
    steps = 200 if sanitized() else 800
    stages = ["transfer", train_stage("align", steps, lr="3e-3:1e-4", checkpoint_every=steps // 4), "export"]
    d = Daemon(root, "--worker-listen", "tcp:127.0.0.1:0", "--reconnect-grace", "120").start()
    p = None
    try:
        proxy, p = proxied_pool(root, d)
        jid = int(d.cli("submit", write_spec(root, "end", teacher, data, stages, os.path.join(root, "end")),
                        "--print-id").stdout)
        wait_for(lambda: d.json("show", jid)["stages"][1]["step"] >= steps // 8, timeout=240, what="align to train")
        t0 = time.time()
        log = os.path.join(root, "pool.log")
        proxy.cut(until=lambda: "align: done" in open(log).read())  # the stage end goes into the void
        r = d.cli("wait", jid, "--timeout", "240", check=False, timeout=250)
        show = d.json("show", jid)
        assert show["state"] == "COMPLETED", (show, d.log()[-3000:])
        align = [a for a in show["attempts"] if a["stage_idx"] == 1]
        assert len(align) == 1 and align[0]["state"] == "SUCCEEDED", align
        assert time.time() - t0 < 100, "the stage end was not taken until the grace ran out"
        again = [ln for ln in open(log).read().splitlines() if "reports sent again" in ln]
        print(f"  stage ended behind the cut; {again[0].split('; ')[-1] if again else '?'}; one align attempt; "
              f"COMPLETED {time.time() - t0:.1f} s after the cut began")
    finally:
        stop_hand_pool(root, p)
        d.stop()


if __name__ == "__main__":
    run([test_connection_cut_mid_stage_same_attempt_continues, test_stage_end_swallowed_by_the_cut_is_sent_again])
