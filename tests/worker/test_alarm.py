"""worker/alarm.c on 3 real Open MPI ranks (tests/worker/alarm_check.c): the message a rank whose NCCL failed
sends its peers, so that they stop polling at once rather than at RADLADS_NCCL_TIMEOUT_S."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from poolfix import BUILD, SANITIZER_MARKS, mpirun  # noqa: E402


def main():
    exe = os.path.join(BUILD, "tests", "worker", "alarm_check")
    r = subprocess.run(mpirun(3) + [exe], capture_output=True, text=True, timeout=120)
    print(r.stdout, r.stderr, sep="")
    checks = [ln for ln in r.stdout.splitlines() if ln.startswith("rank ")]
    failed = [ln for ln in checks if " FAIL" in ln]
    reports = [ln for ln in (r.stdout + r.stderr).splitlines() if any(m in ln for m in SANITIZER_MARKS)]
    if reports:
        print("sanitizer report:\n" + "\n".join(reports[:20]))
    ok = r.returncode == 0 and "all checks passed on 3 ranks" in r.stdout and len(checks) >= 20 and not failed
    return 0 if ok and not reports else 1


if __name__ == "__main__":
    sys.exit(main())
