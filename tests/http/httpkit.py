"""Helpers for the HTTP tests: a daemon with HTTP on an ephemeral loopback port, raw sockets, JSON calls."""
import http.client
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "daemon"))
from harness import Daemon, fixture, run, wait_for  # noqa: E402,F401


def start(root, *args):
    d = Daemon(root, "--http", "127.0.0.1:0", *args).start()
    addr_file = os.path.join(d.state, "http.addr")
    wait_for(lambda: os.path.exists(addr_file) and open(addr_file).read().endswith("\n"), what="http.addr")
    host, port = open(addr_file).read().strip().rsplit(":", 1)
    d.http_host, d.http_port = host, int(port)
    d.base = f"http://{host}:{port}"
    return d


def conn(d, timeout=10):
    return http.client.HTTPConnection(d.http_host, d.http_port, timeout=timeout)


def request(d, method, path, headers=None, body=None):
    """One request on a fresh connection: (status, headers dict (lower-case names), body bytes)."""
    c = conn(d)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def get_json(d, path, status=200):
    st, hdr, body = request(d, "GET", path)
    assert st == status, (path, st, body)
    assert hdr["content-type"] == "application/json", hdr
    doc = json.loads(body)
    assert doc["schema_version"] == 1, doc
    return doc


class Raw:
    """A raw TCP client: send exact bytes, read responses one by one (pipelining keeps leftovers)."""

    def __init__(self, d, timeout=5):
        self.s = socket.create_connection((d.http_host, d.http_port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def close(self):
        self.s.close()

    def response(self):
        """One response with a Content-Length: (status, headers with lower-case names, body)."""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed before a full response head: {self.buf!r}")
            self.buf += chunk
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(rest) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed inside a response body")
            rest += chunk
        self.buf = rest[n:]
        return status, headers, rest[:n]

    def closed_by_peer(self, timeout=5):
        self.s.settimeout(timeout)
        try:
            while True:
                if not self.s.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def submit(d, spec, *extra):
    return int(d.cli("submit", spec, "--print-id", *extra).stdout)


def now():
    return time.time()
