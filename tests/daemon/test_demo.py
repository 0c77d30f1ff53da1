"""The README's demo in its --quick form: one job pretrains a byte-level teacher on 2 MPI ranks and
converts it (transfer, align, distill, export) through radladsd; the converted student's held-out loss
is close to the teacher's and the exported model folder exists."""
import os
import re
import subprocess
import sys

SRC = os.environ.get("RADLADS_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("RADLADS_BUILD", os.path.join(SRC, "build"))


def main():
    demo_dir = os.path.join(BUILD, "demo-test")
    env = dict(os.environ, RADLADS_BUILD=BUILD, RADLADS_DEMO_DIR=demo_dir)
    p = subprocess.run(["bash", os.path.join(SRC, "scripts", "demo.sh"), "--quick", "--no-build"], cwd=SRC,
                       env=env, capture_output=True, text=True, timeout=900)
    print(p.stdout[-4000:])
    print(p.stderr[-2000:])
    assert p.returncode == 0, f"demo exited {p.returncode}"
    m = re.search(r"teacher ([\d.]+)\s+student ([\d.]+)\s+ratio ([\d.]+)", p.stdout)
    assert m, "no loss table"
    teacher, student, ratio = map(float, m.groups())
    assert teacher < 3.0, f"the teacher did not learn (held-out loss {teacher})"
    assert ratio < 1.15, f"student/teacher held-out loss ratio {ratio}"
    export = re.search(r"exported RAD-RWKV7 model: (\S+)", p.stdout).group(1)
    assert os.path.exists(os.path.join(export, "config.json")) and os.path.exists(os.path.join(export, "model.safetensors"))
    print(f"ok: teacher {teacher} student {student} ratio {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
