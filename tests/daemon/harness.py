"""Test harness for integration tests: the real radladsd and radlads binaries on a temporary state dir."""
import json
import os
import shutil
import signal
import struct
import socket
import subprocess
import sys
import tempfile
import time
import traceback

BUILD = os.path.abspath(os.environ.get("RADLADS_BUILD") or os.path.join(os.path.dirname(__file__), "..", "..", "build"))
DAEMON = os.path.join(BUILD, "daemon", "radladsd")
CLI = os.path.join(BUILD, "cli", "radlads")
LOADGEN = os.path.join(BUILD, "tests", "daemon", "loadgen")
POOLSIM = os.path.join(BUILD, "tests", "daemon", "poolsim")


class Daemon:
    def __init__(self, root, *args):
        self.root = root
        self.state = os.path.join(root, "state")
        self.sock = os.path.join(self.state, "radladsd.sock")
        self.args = list(args)
        self.proc = None

    def start(self, expect_ok=True, extra=()):
        args = [*self.args, *extra]
        if "--launcher" not in args:
            args += ["--launcher", "none"]  # tests play pools with poolsim unless they test the launcher
        cmd = [DAEMON, "--state-dir", self.state, "--foreground", *args]
        # stderr to a file, not a pipe: a chatty daemon must never block on a full pipe.
        self.stderr_path = os.path.join(self.root, f"radladsd-{time.time_ns()}.stderr")
        with open(self.stderr_path, "w") as err_file:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file)
        if not expect_ok:
            self.proc.wait(timeout=20)
            return self.proc.returncode, open(self.stderr_path).read()
        # Ready: this process logged its start (right after it opened the socket) and the socket answers. The log
        # line matters after a kill -9: a child the old daemon was spawning can briefly hold the old listener open,
        # so a connect alone may reach that socket before the new daemon has even set up its signal handlers.
        started = f"started: pid {self.proc.pid},"
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("radladsd exited at start: " + open(self.stderr_path).read())
            if started in self.log() or started in open(self.stderr_path).read():
                try:
                    s = socket.socket(socket.AF_UNIX)
                    s.connect(self.sock)
                    s.close()
                    return self
                except OSError:
                    pass
            time.sleep(0.02)
        raise AssertionError("radladsd did not open its socket")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("radladsd did not stop on SIGTERM")
            # A clean shutdown exits 0: under ASan this also means no leak and no error report.
            if self.proc.returncode != 0:
                raise AssertionError(f"radladsd exited {self.proc.returncode} on SIGTERM:\n" +
                                     open(self.stderr_path).read()[-4000:])
        return self.proc.returncode if self.proc else None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def log(self):
        p = os.path.join(self.state, "radladsd.log")
        return open(p).read() if os.path.exists(p) else ""

    @property
    def token_file(self):
        return os.path.join(self.state, "token")

    def cli(self, *args, check=True, user=None, stdin=None, timeout=60):
        args = [str(a) for a in args]
        cmd = [CLI, "--socket", self.sock, *args]
        if "--timeout" in args[:-1]:  # `wait --timeout N`: the command itself must be allowed its N seconds
            timeout = max(timeout, float(args[args.index("--timeout") + 1]) + 30)
        if user:
            cmd = ["runuser", "-u", user, "--"] + cmd
        p = subprocess.run(cmd, capture_output=True, text=True, input=stdin, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} -> {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def json(self, *args, **kw):
        p = self.cli(*args, "--json", **kw)
        doc = json.loads(p.stdout)
        assert doc["schema_version"] == 1, doc
        return doc

    def poolsim(self, *args):
        return subprocess.Popen([POOLSIM, "--socket", self.sock, "--token-file", self.token_file, *map(str, args)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def fixture(root):
    """A teacher folder, a token file and a job spec (the tiny plan the tests use)."""
    teacher = os.path.join(root, "teacher")
    os.makedirs(teacher, exist_ok=True)
    with open(os.path.join(teacher, "config.json"), "w") as f:
        f.write('{"architectures": ["Qwen2ForCausalLM"]}\n')
    with open(os.path.join(root, "train.tok"), "wb") as f:
        f.write(os.urandom(4096))
    os.makedirs(os.path.join(root, "out"), exist_ok=True)
    spec = os.path.join(root, "job.yaml")
    with open(spec, "w") as f:
        f.write("""name: tiny
teacher: teacher
student: {arch: rad-rwkv7, variant: b}
data: {train: [train.tok]}
stages:
  - transfer
  - {stage: align, tokens: 64K, seq_len: 64, batch: 8, micro_batch: 2, lr: "1e-3:1e-5"}
  - export
output: out/tiny
max_restarts: 2
""")
    return spec


def wait_for(fn, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def run(tests):
    """Runs test functions (each gets a fresh temp dir), prints per-test results, exits 1 on any failure."""
    failed = 0
    for t in tests:
        root = tempfile.mkdtemp(prefix="rl-test-")
        os.chmod(root, 0o755)
        t0 = time.time()
        try:
            t(root)
            print(f"ok   {t.__name__} ({time.time() - t0:.1f}s)")
            shutil.rmtree(root, ignore_errors=True)
        except Exception:
            failed += 1
            print(f"FAIL {t.__name__} ({time.time() - t0:.1f}s)")
            traceback.print_exc(file=sys.stdout)
            print(f"  (state kept in {root})")
        sys.stdout.flush()
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


# ---- a minimal protobuf wire codec, enough to speak the protocol raw in the bad-input tests ----
def varint(n):
    n &= (1 << 64) - 1  # negative ints as protobuf's 10-byte two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, value):
    """A protobuf field: int/bool -> varint, float -> fixed64 double, bytes/str -> length-delimited."""
    if isinstance(value, (bool, int)):
        return varint(num << 3) + varint(int(value))
    if isinstance(value, float):
        return varint(num << 3 | 1) + struct.pack("<d", value)
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


def frame(payload):
    return len(payload).to_bytes(4, "big") + payload


def hello(version=1, role=1, token=""):
    return frame(field(1, field(1, version) + field(2, role) + (field(3, token) if token else b"")))


def raw_fields(buf):
    """(number, wire type, value) of each field of a message: varints as int, the rest as bytes."""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        elif wt == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        else:
            raise ValueError(f"wire type {wt}")
        yield num, wt, v


def parse_fields(buf):
    """Top-level fields of a message: {num: [values]}."""
    out = {}
    for num, _, v in raw_fields(buf):
        out.setdefault(num, []).append(v)
    return out


def read_varint(buf, i):
    shift = n = 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def read_frame(sock, timeout=10):
    sock.settimeout(timeout)
    hdr = _recv_exact(sock, 4)
    if hdr is None:
        return None
    return _recv_exact(sock, int.from_bytes(hdr, "big"))


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def raw_connect(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return s
