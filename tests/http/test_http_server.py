"""The HTTP server's edges: malformed requests, size limits, pipelining, keep-alive, a stalled client
that must not block others, the connection limit, unknown paths and methods.  Each refusal must leave the
daemon serving everyone else."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from httpkit import Raw, get_json, request, run, start, wait_for  # noqa: E402


def still_serving(d):
    assert get_json(d, "/api/jobs")["jobs"] == []


def test_malformed_request_lines_and_headers_get_400_and_close(root):
    d = start(root)
    try:
        cases = [
            b"GARBAGE\r\n\r\n",
            b"GET /api/jobs HTTP/9.9\r\n\r\n",
            b"GET /api/jobs HTTP/1.1\r\nHost localhost\r\n\r\n",           # header without a colon
            b"GET /api/jobs HTTP/1.1\r\nHo st: x\r\n\r\n",                  # space in a header name
            b"GET /api/jobs HTTP/1.1\r\n: empty\r\n\r\n",                  # empty header name
            b"GET /api/jobs HTTP/1.1\nHost: x\n\n",                        # bare LF line ends
            b"GET /a\x00b HTTP/1.1\r\n\r\n",                                # NUL in the target
            b"GET /api/jobs HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
            b"GET /api/jobs HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET /api/jobs HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ]
        for raw in cases:
            c = Raw(d)
            c.send(raw)
            st, hdr, body = c.response()
            assert st == 400, (raw, st, body)
            assert hdr.get("connection") == "close", hdr
            assert c.closed_by_peer(), raw
            c.close()
        # A target that is not origin-form, and a broken percent escape.
        for target in [b"http://example.com/", b"/api/jobs/%zz"]:
            c = Raw(d)
            c.send(b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
            st, _, body = c.response()
            assert st in (400, 404), (target, st, body)
            c.close()
        still_serving(d)
    finally:
        d.stop()


def test_oversized_headers_431_body_413_target_414(root):
    d = start(root)
    try:
        c = Raw(d)
        c.send(b"GET /api/jobs HTTP/1.1\r\nHost: localhost\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(20)) + b"\r\n")
        st, hdr, _ = c.response()
        assert st == 431 and hdr["connection"] == "close", st
        c.close()
        # Declared too large: refused before the body is sent.
        c = Raw(d)
        c.send(b"POST /api/jobs/1/cancel HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\n\r\n")
        st, _, _ = c.response()
        assert st == 413, st
        c.close()
        # Chunked, growing past the limit while it streams.
        c = Raw(d)
        c.send(b"POST /api/jobs/1/cancel HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (32768, b"b" * 32768)
        try:
            for _ in range(4):
                c.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        st, _, _ = c.response()
        assert st == 413, st
        c.close()
        c = Raw(d)
        c.send(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        st, _, _ = c.response()
        assert st == 414, st
        c.close()
        still_serving(d)
    finally:
        d.stop()


def test_pipelined_requests_answered_in_order_on_one_connection(root):
    d = start(root)
    try:
        c = Raw(d)
        paths = ["/api/jobs", "/nope", "/api/daemon", "/metrics", "/api/jobs/999", "/"]
        c.send(b"".join(b"GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % p.encode() for p in paths))
        statuses = [c.response() for _ in paths]
        assert [s[0] for s in statuses] == [200, 404, 200, 200, 404, 200], [s[0] for s in statuses]
        assert b'"jobs"' in statuses[0][2] and b"radlads_jobs" in statuses[3][2] and b"<html" in statuses[5][2].lower()
        # Keep-alive: the same connection still works afterwards; HTTP/1.0 closes after one.
        c.send(b"GET /api/jobs HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert c.response()[0] == 200
        c.close()
        c = Raw(d)
        c.send(b"GET /api/jobs HTTP/1.0\r\n\r\n")
        assert c.response()[0] == 200
        assert c.closed_by_peer()
        c.close()
    finally:
        d.stop()


def test_stalled_half_request_does_not_block_others_and_times_out(root):
    d = start(root, "--http-timeout", "8")
    try:
        stalled = Raw(d)
        stalled.send(b"GET /api/jobs HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")  # ...and nothing more
        half_open = socket.create_connection((d.http_host, d.http_port))
        half_open.shutdown(socket.SHUT_WR)  # a client that closed its side without a request
        t0 = time.time()
        waits = []
        for _ in range(20):
            t = time.time()
            still_serving(d)
            waits.append(time.time() - t)
        # Each inside the 8 s timeout: had the stalled client blocked the loop, the first of these would wait for
        # its deadline (each request timed alone, so a slow machine's 20 round trips cannot add up to it; the margin
        # is wide because CI machines are shared).
        assert max(waits) < 6, f"a stalled client slowed the others down: slowest request {max(waits):.2f} s"
        # The stalled request gets a 408 and its connection is closed at the deadline.
        stalled.s.settimeout(20)
        st, hdr, _ = stalled.response()
        assert st == 408 and hdr["connection"] == "close", st
        assert stalled.closed_by_peer()
        took = time.time() - t0
        assert 5 < took < 16, took  # at its 8 s deadline, not at once and not never
        stalled.close()
        half_open.close()
        # An idle keep-alive connection is closed after the same timeout.
        idle = Raw(d)
        idle.send(b"GET /api/jobs HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert idle.response()[0] == 200
        assert idle.closed_by_peer(timeout=20)
        idle.close()
    finally:
        d.stop()


def test_unknown_paths_404_and_methods_405(root):
    d = start(root)
    try:
        for path in ["/nope", "/api/nothing", "/api/jobs/abc", "/api/jobs/1/frobnicate", "/../etc/passwd"]:
            st, _, _ = request(d, "GET", path)
            assert st == 404, (path, st)
        for method, path, allow in [("DELETE", "/api/jobs", "GET, HEAD"), ("PUT", "/api/jobs/1", "GET, HEAD"),
                                    ("GET", "/api/jobs/1/cancel", "POST"), ("POST", "/metrics", "GET, HEAD"),
                                    ("POST", "/", "GET, HEAD"), ("POST", "/api/events", "GET")]:
            st, hdr, _ = request(d, method, path)
            assert st == 405 and hdr["allow"] == allow, (method, path, st, hdr)
        st, hdr, body = request(d, "HEAD", "/api/jobs")
        assert st == 200 and body == b"" and int(hdr["content-length"]) > 0
        still_serving(d)
    finally:
        d.stop()


def test_dns_rebinding_foreign_host_refused_on_loopback(root):
    d = start(root)
    try:
        for host in ("evil.example", "evil.example:8425", "127.0.0.1.evil.example", "[::2]:80"):
            st, _, body = request(d, "GET", "/api/jobs", {"Host": host})
            assert st == 421 and b"127.0.0.1" in body, (host, st, body)
        for host in (f"127.0.0.1:{d.http_port}", f"localhost:{d.http_port}", "LOCALHOST", "[::1]:1", "127.0.0.2"):
            st, _, _ = request(d, "GET", "/api/jobs", {"Host": host})
            assert st == 200, (host, st)
        still_serving(d)
    finally:
        d.stop()


def test_connection_limit_refuses_with_503_and_recovers(root):
    d = start(root, "--http-max-connections", "4")
    try:
        held = [Raw(d) for _ in range(4)]
        for h in held:
            h.send(b"GET /api/jobs HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert h.response()[0] == 200
        extra = Raw(d)
        st, hdr, _ = extra.response()
        assert st == 503 and hdr["connection"] == "close"
        extra.close()
        for h in held:
            h.close()
        # Once the daemon has seen those closes it serves again (the 503'd connection lingers briefly).
        wait_for(lambda: request(d, "GET", "/api/jobs")[0] == 200, what="serving again after the closes")
        still_serving(d)
    finally:
        d.stop()


def test_http_off_and_bad_address(root):
    from harness import Daemon
    d = Daemon(root, "--http", "off").start()
    try:
        assert not os.path.exists(os.path.join(d.state, "http.addr"))
    finally:
        d.stop()
    rc, err = Daemon(root, "--http", "127.0.0.1:99999").start(expect_ok=False)
    assert rc != 0 and "port" in err, err
    rc, err = Daemon(root, "--http", "nohost").start(expect_ok=False)
    assert rc != 0 and "ADDR:PORT" in err, err


if __name__ == "__main__":
    run([test_malformed_request_lines_and_headers_get_400_and_close, test_oversized_headers_431_body_413_target_414,
         test_pipelined_requests_answered_in_order_on_one_connection,
         test_stalled_half_request_does_not_block_others_and_times_out, test_unknown_paths_404_and_methods_405,
         test_dns_rebinding_foreign_host_refused_on_loopback, test_connection_limit_refuses_with_503_and_recovers,
         test_http_off_and_bad_address])
