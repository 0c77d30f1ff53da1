"""Shared by the worker-pool tests: a tiny teacher and token file, mpirun, the process table, and a small
protobuf codec for the pool messages (enough to play radladsd in a test)."""
import os
import signal
import struct
import subprocess
import sys

BUILD = os.path.abspath(os.environ.get("RADLADS_BUILD", "build"))
SRC = os.path.abspath(os.environ.get("RADLADS_SRC", "."))
sys.path.insert(0, os.path.join(SRC, "tests"))
sys.path.insert(0, os.path.join(SRC, "tests", "daemon"))
from testdata import english_text  # noqa: E402
from harness import field, raw_fields, read_varint  # noqa: E402  (the protobuf wire codec)

RADLADS = os.path.join(BUILD, "cli", "radlads")
WORKER = os.path.join(BUILD, "worker", "radlads-worker")
TOKENIZER = os.path.join(SRC, "tests", "tokenizer", "fixtures", "gpt2_plain.json")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def sanitized():
    """The worker is a sanitizer build (training runs several times slower: tests size their stages by it)."""
    try:
        with open(WORKER, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def run(*args, ok=True, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if ok and (r.returncode != 0 or any(m in r.stderr for m in SANITIZER_MARKS)):
        raise AssertionError(f"{' '.join(map(str, args))} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def mpirun(n):
    """mpirun as the launcher runs it (root needs --allow-run-as-root)."""
    cmd = ["mpirun"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    cmd += ["--oversubscribe", "--bind-to", "none", "-np", str(n)]
    for var in ("LSAN_OPTIONS", "UBSAN_OPTIONS"):
        if var in os.environ:
            cmd += ["-x", var]
    if "ASAN_OPTIONS" in os.environ:
        # AddressSanitizer stays on; LeakSanitizer's exit-time tracer crashed in these ranks ("Tracer caught signal
        # 11" among Open MPI's threads, 3 times in 2 CI runs) after every check had passed, so multi-rank runs skip
        # the leak check — the single-rank runs of the same code keep it
        cmd += ["-x", "ASAN_OPTIONS=" + os.environ["ASAN_OPTIONS"] + ":detect_leaks=0"]
    return cmd


def start_hand_pool(root, ranks, addr, token_file, *extra):
    """A pool started by hand under mpirun (not by the daemon's launcher); output in ROOT/pool.log."""
    log = open(os.path.join(root, "pool.log"), "w")
    return subprocess.Popen(mpirun(ranks) + [WORKER, "pool", "--connect", addr, "--token-file", token_file, *extra],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_hand_pool(root, p):
    """Stops a start_hand_pool() pool (its whole session) and asserts its log holds no sanitizer report."""
    if p is None:
        return
    os.killpg(p.pid, signal.SIGTERM)
    p.wait(timeout=20)
    reports = sanitizer_reports(os.path.join(root, "pool.log"))
    assert not reports, "".join(reports[:5])


def make_teacher(root, hidden=32, layers=2, seed=1):
    """A random Qwen2-style teacher (GPT-2 fixture tokenizer, 293 ids) and a token file of English text."""
    text = os.path.join(root, "text.txt")
    with open(text, "wb") as f:
        f.write(english_text(80000))
    run(RADLADS, "tokenize", "--tokenizer", TOKENIZER, "--in", text, "--out", os.path.join(root, "data"),
        "--no-progress")
    teacher = os.path.join(root, "teacher")
    run(RADLADS, "init-model", "--arch", "qwen2", "--hidden", hidden, "--layers", layers, "--heads", "2",
        "--kv-heads", "1", "--intermediate", 2 * hidden, "--vocab", "293", "--seed", seed, "--out", teacher)
    with open(TOKENIZER, "rb") as src, open(os.path.join(teacher, "tokenizer.json"), "wb") as dst:
        dst.write(src.read())
    return teacher, os.path.join(root, "data.tok")


def processes(marker):
    """(pid, cmdline) of live processes whose command line contains marker."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if marker in cmd and stat[0] != "Z":
            out.append((int(pid), cmd))
    return out


def sanitizer_reports(*paths):
    """Lines of sanitizer reports in these log files (sanitizer builds; empty otherwise)."""
    out = []
    for p in paths:
        if os.path.exists(p):
            out += [ln for ln in open(p, errors="replace") if any(m in ln for m in SANITIZER_MARKS)]
    return out


def safetensors(path):
    """{name: raw bytes} of a safetensors file."""
    import json
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return {k: data[v["data_offsets"][0]:v["data_offsets"][1]] for k, v in header.items() if k != "__metadata__"}


# ---- protobuf: the pool messages of proto/radlads.proto ----
ENV = dict(hello=1, hello_reply=2, error=3, register_pool=40, pool_registered=41, assignment=42, progress=43,
           checkpoint_saved=44, log=45, stage_finished=46, heartbeat=47, control=48)
ENV_NAME = {v: k for k, v in ENV.items()}
# per message: field number -> (name, kind) with kind int | str | double | bool | ints (repeated varint)
FIELDS = {
    "hello": {1: ("protocol_version", "int"), 2: ("role", "int"), 3: ("token", "str"), 4: ("client", "str")},
    "register_pool": {1: ("name", "str"), 2: ("ranks", "int"), 3: ("device", "str"), 4: ("host", "str"),
                      5: ("rank_pids", "ints"), 6: ("pool_id", "int"), 7: ("attempt_id", "int"),
                      8: ("launch_id", "int")},
    "progress": {1: ("attempt_id", "int"), 2: ("step", "int"), 3: ("tokens", "int"), 4: ("loss", "double"),
                 5: ("lr", "double"), 6: ("tokens_per_s", "double"), 7: ("grad_norm", "double"),
                 8: ("time_ms", "int"), 9: ("seq", "int")},
    "checkpoint_saved": {1: ("attempt_id", "int"), 2: ("step", "int"), 3: ("tokens", "int"), 4: ("path", "str"),
                         5: ("sha256", "str"), 6: ("seq", "int")},
    "log": {1: ("attempt_id", "int"), 2: ("rank", "int"), 3: ("level", "str"), 4: ("text", "str"),
            5: ("seq", "int")},
    "stage_finished": {1: ("attempt_id", "int"), 2: ("ok", "bool"), 3: ("reason", "str"), 4: ("output_dir", "str"),
                       5: ("final_loss", "double"), 6: ("seq", "int")},
    "heartbeat": {1: ("attempt_id", "int"), 2: ("step", "int")},
}


def message(*fields):
    """fields: (number, value) pairs; None values are left out."""
    return b"".join(field(n, v) for n, v in fields if v is not None)


def envelope(kind, body):
    payload = field(ENV[kind], body)
    return len(payload).to_bytes(4, "big") + payload


def decode(payload):
    """An Envelope payload -> (kind, {field: value})."""
    (num, _, body), = list(raw_fields(payload))
    kind = ENV_NAME.get(num, str(num))
    spec, out = FIELDS.get(kind, {}), {}
    for n, wt, v in raw_fields(body):
        name, typ = spec.get(n, (str(n), "raw"))
        if typ == "str":
            out[name] = v.decode()
        elif typ == "double":
            out[name] = struct.unpack("<d", v)[0]
        elif typ == "bool":
            out[name] = bool(v)
        elif typ == "ints":
            if wt == 2:  # packed
                vals, i = [], 0
                while i < len(v):
                    x, i = read_varint(v, i)
                    vals.append(x)
                out.setdefault(name, []).extend(vals)
            else:
                out.setdefault(name, []).append(v)
        else:
            out[name] = v
    return kind, out


# ---- the checks' bookkeeping, shared by the worker test scripts ----
failures = []


def check(what, ok, detail="", width=92):
    """Prints one check line and remembers a failure; the script ends with `return report()`."""
    print(f"  {what:{width}s} {detail} {'ok' if ok else 'FAIL'}")
    if not ok:
        failures.append(what)
    return ok


def report():
    print(f"{len(failures)} failures: " + "; ".join(failures) if failures else "all checks passed")
    return 1 if failures else 0


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()
