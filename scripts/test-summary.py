#!/usr/bin/env python3
"""Reads meson's testlog.json and prints the one-line summary, with the reason of every skip.

usage: test-summary.py TESTLOG [RERUN_TESTLOG]
       test-summary.py --sanitizer-crashes TESTLOG

A rerun's log (scripts/test.sh reruns tests that failed only because LeakSanitizer itself crashed) replaces the
first run's result of the tests it holds; the summary says how many were rerun and why.
--sanitizer-crashes prints the names of the failed tests whose output shows that crash and nothing else
wrong: LeakSanitizer's tracer dying ("LeakSanitizer has encountered a fatal error") with no leak, sanitizer
report or failed check in the output (a Python traceback only where it reports a command that died of it)."""
import json
import re
import sys

LSAN_CRASH = "LeakSanitizer has encountered a fatal error"
SANITIZER_FINDINGS = ("detected memory leaks", "ERROR: AddressSanitizer", "runtime error:")
REAL_TROUBLE = SANITIZER_FINDINGS + ("FAIL", "Traceback")


def load(path):
    with open(path) as f:
        return {t["name"]: t for t in map(json.loads, f)}


TRACEBACK = "Traceback (most recent call last):"


def without_crash_reports(out):
    """The output less each Python traceback that only reports a command which failed because LeakSanitizer's
    tracer crashed (the test harnesses raise AssertionError with the failed command's own output, crash message
    included); any other traceback stays, and counts as real trouble."""
    head, *tracebacks = out.split(TRACEBACK)
    kept = [head]
    for tb in tracebacks:
        # "AssertionError: COMMAND -> RC" and that command's output (tests/worker/poolfix.py run)
        m = re.search(r"^AssertionError: [^\n]* -> -?\d+\n", tb, re.M)
        said = tb[m.end():] if m else ""
        if not (m and LSAN_CRASH in said and not any(x in said for x in SANITIZER_FINDINGS)):
            kept.append(TRACEBACK + tb)
    return "".join(kept)


def lsan_crash_only(t):
    out = (t.get("stdout") or "") + (t.get("stderr") or "")
    if t["result"] in ("OK", "EXPECTEDFAIL", "SKIP") or LSAN_CRASH not in out:
        return False
    # the crash must be the only trouble: no leak report, no sanitizer finding, no failed check, no traceback but
    # a harness's report of a command that died of that crash
    return not any(m in without_crash_reports(out) for m in REAL_TROUBLE)


if sys.argv[1] == "--sanitizer-crashes":
    # bare test names, as `meson test NAME` takes them ("project:suite / name" in the log)
    print("\n".join(n.split(" / ")[-1] for n, t in load(sys.argv[2]).items() if lsan_crash_only(t)))
    sys.exit(0)

tests = load(sys.argv[1])
rerun = load(sys.argv[2]) if len(sys.argv) > 2 else {}
for name, t in rerun.items():
    print(f"rerun {name} (LeakSanitizer's tracer crashed the first time): {t['result']}")
    tests[name] = t
counts = {"passed": 0, "failed": 0, "skipped": 0}
for t in tests.values():
    r = t["result"]
    if r in ("OK", "EXPECTEDFAIL"):
        counts["passed"] += 1
    elif r == "SKIP":
        counts["skipped"] += 1
        reason = (t.get("stdout") or "").strip().splitlines()
        print(f"skipped {t['name']}: {reason[-1] if reason else 'no reason printed'}")
    else:
        counts["failed"] += 1
        print(f"failed {t['name']}: {r}")
line = f"{counts['passed']} passed, {counts['failed']} failed"
if counts["skipped"]:
    line += f", {counts['skipped']} skipped"
print(line)
