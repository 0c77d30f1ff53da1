"""Malformed frames and invalid specs get clear errors; the daemon keeps serving everyone else."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Daemon, field, fixture, frame, hello, parse_fields, raw_connect, read_frame,  # noqa: E402
                     run, wait_for)


def error_of(payload):
    """The Error message text of an Envelope, or None."""
    env = parse_fields(payload)
    if 3 not in env:
        return None
    return parse_fields(env[3][0])[2][0].decode()


def still_serving(d):
    assert "jobs" in d.json("status"), "daemon stopped serving"


def test_malformed_frames_close_only_that_connection(root):
    fixture(root)
    d = Daemon(root).start()
    try:
        # A client that sends half a frame and stalls must not block anyone.
        stalled = raw_connect(d.sock)
        stalled.sendall(b"\x00\x00")
        still_serving(d)

        # 4 GiB length: refused at once, before any allocation.
        s = raw_connect(d.sock)
        s.sendall(b"\xff\xff\xff\xff")
        msg = error_of(read_frame(s))
        assert "exceeds the limit" in msg, msg
        assert read_frame(s) is None, "connection should be closed"
        still_serving(d)

        # Garbage bytes.
        s = raw_connect(d.sock)
        s.sendall(frame(bytes(range(250, 256)) * 5))
        msg = error_of(read_frame(s))
        assert msg and ("undecodable" in msg or "no message" in msg), msg
        still_serving(d)

        # Truncated frame then close: logged, nothing else happens.
        s = raw_connect(d.sock)
        s.sendall(b"\x00\x00\x01\x00" + b"\x0a" * 10)
        s.close()
        wait_for(lambda: "truncated frame" in d.log(), what="the truncated frame logged")
        still_serving(d)

        # Wrong protocol version.
        s = raw_connect(d.sock)
        s.sendall(hello(version=99))
        msg = error_of(read_frame(s))
        assert "protocol version 99 is not supported" in msg, msg
        still_serving(d)

        # A request before Hello.
        s = raw_connect(d.sock)
        s.sendall(frame(field(12, b"")))
        msg = error_of(read_frame(s))
        assert "first message must be Hello" in msg, msg

        # A pool hello with a wrong token.
        s = raw_connect(d.sock)
        s.sendall(hello(role=2, token="not-the-token"))
        msg = error_of(read_frame(s))
        assert "pool token rejected" in msg, msg

        # A spec that skipped the CLI's checks is validated again by the daemon.
        s = raw_connect(d.sock)
        s.sendall(hello())
        assert 2 in parse_fields(read_frame(s)), "HelloReply expected"
        s.sendall(frame(field(10, field(1, '{"teacher": "/nonexistent", "data": {"train": ["/x"]}, "output": "/tmp/o"}'))))
        msg = error_of(read_frame(s))
        assert "teacher" in msg and "does not exist" in msg, msg
        s.sendall(frame(field(10, field(1, '{"teacher": "relative/path"}'))))
        msg = error_of(read_frame(s))
        assert "must be an absolute path" in msg, msg
        stalled.close()
        still_serving(d)
        assert d.proc.poll() is None
    finally:
        d.stop()


def test_tcp_worker_listener_takes_only_pools_with_the_token(root):
    import socket
    d = Daemon(root, "--worker-listen", "tcp:127.0.0.1:0").start()
    try:
        addr = open(os.path.join(d.state, "worker.addr")).read().strip()
        host, port = addr[len("tcp:"):].rsplit(":", 1)

        def tcp():
            return socket.create_connection((host, int(port)), timeout=10)
        token = open(d.token_file).read().strip()
        s = tcp()
        s.sendall(hello(role=2, token="wrong"))
        assert "pool token rejected" in error_of(read_frame(s))
        s = tcp()
        s.sendall(hello(role=1))
        assert 2 in parse_fields(read_frame(s))  # the handshake itself is answered ...
        s.sendall(frame(field(12, b"")))           # ... but no CLI request is served over TCP
        assert "only served on the Unix socket" in error_of(read_frame(s))
        s = tcp()
        s.sendall(hello(role=2, token=token))
        assert 2 in parse_fields(read_frame(s))
        s.sendall(frame(field(40, field(2, 2) + field(3, "cpu") + field(4, "remote-host"))))  # RegisterPool
        reply = parse_fields(read_frame(s))
        assert 41 in reply, reply  # PoolRegistered
        pools = d.json("pools")["pools"]
        assert len(pools) == 1 and pools[0]["host"] == "remote-host" and pools[0]["ranks"] == 2
        s.close()
        still_serving(d)
    finally:
        d.stop()


def test_invalid_specs_through_the_cli(root):
    spec = fixture(root)
    d = Daemon(root).start()

    def bad(text, needle):
        path = os.path.join(root, "bad.yaml")
        with open(path, "w") as f:
            f.write(text)
        r = d.cli("submit", path, check=False)
        assert r.returncode == 1, (text, r.stdout)
        assert needle in r.stderr, (needle, r.stderr)

    try:
        base = "teacher: teacher\ndata: {train: [train.tok]}\noutput: out/x\n"
        bad("teacher: [oops\n", "invalid YAML: line 2")
        bad(base + "learning_rate: 3\n", "learning_rate: unknown field")
        bad(base + "stages: [{stage: align, tokens: -100M}]\n", "stages[0].tokens: must be positive")
        bad(base + "stages: [{stage: align, tokens: 0}]\n", "stages[0].tokens: must be positive")
        bad(base + "stages: [transfer, {stage: align, seq_len: 500}]\n",
            "stages[1].seq_len: must be a positive multiple of 16, got 500")
        bad("teacher: no/such/dir\ndata: {train: [train.tok]}\noutput: out/x\n", 'teacher: "no/such/dir" does not exist')
        r = d.cli("submit", os.path.join(root, "missing.yaml"), check=False)
        assert r.returncode == 1 and "cannot read" in r.stderr
        r = d.cli("submit", spec, "--priority", "abc", check=False)
        assert r.returncode == 2 and "--priority" in r.stderr
        assert d.json("status")["jobs"] == [], "nothing was queued"
        still_serving(d)
    finally:
        d.stop()


if __name__ == "__main__":
    run([test_malformed_frames_close_only_that_connection, test_tcp_worker_listener_takes_only_pools_with_the_token,
         test_invalid_specs_through_the_cli])
