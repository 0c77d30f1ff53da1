#!/usr/bin/env python3
"""Reads meson's testlog.json and prints the one-line summary, with the reason of every skip."""
import json
import sys

counts = {"passed": 0, "failed": 0, "skipped": 0}
for line in open(sys.argv[1]):
    t = json.loads(line)
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
