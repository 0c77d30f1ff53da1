"""Generation benchmark: prompt throughput and per-token latency by context length, a teacher (KV cache)
against its RADLADS student (recurrent state). Not part of `meson test`.

  /usr/bin/python3 bench/model/bench_generate.py --build build [--lengths 1k,4k,16k] [--steps 16] [--runs 3]
      [--hidden 128 --layers 2 --heads 4 --kv-heads 2 --vocab 2048] [--threads 1] [--arch rad-rwkv7]

Makes a random Qwen2-style teacher with `radlads init-model` and its student with `radlads-worker run --stage
transfer`, runs `radlads generate --bench` `--runs` times for each, alternating teacher and student so both
see the same machine load, and prints the median of the runs per context length: prompt tokens/s, the median
single-token step latency, the cache/state size, and the teacher/student step-latency ratio. The teacher's
step latency grows with the context (its attention reads every cached key); the student's stays flat."""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile


def bench_table(radlads, model, lengths, steps, threads):
    r = subprocess.run([radlads, "generate", "--model", model, "--bench", "--bench-lengths", lengths,
                        "--bench-steps", str(steps), "--threads", str(threads)], check=True, capture_output=True,
                       text=True)
    rows = {}
    for line in r.stdout.splitlines():
        f = line.split()
        if f and f[0].isdigit():
            rows[int(f[0])] = (float(f[1]), float(f[2]), float(f[4]))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--lengths", default="1k,4k,16k")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--arch", default="rad-rwkv7")
    a = ap.parse_args()
    radlads = os.path.join(a.build, "cli", "radlads")
    worker = os.path.join(a.build, "worker", "radlads-worker")
    with tempfile.TemporaryDirectory() as tmp:
        teacher, student = os.path.join(tmp, "teacher"), os.path.join(tmp, "student")
        subprocess.run([radlads, "init-model", "--arch", "qwen2", "--hidden", str(a.hidden), "--layers",
                        str(a.layers), "--heads", str(a.heads), "--kv-heads", str(a.kv_heads), "--vocab",
                        str(a.vocab), "--seed", "1", "--out", teacher], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([worker, "run", "--stage", "transfer", "--teacher", teacher, "--arch", a.arch, "--out",
                        student], check=True, stdout=subprocess.DEVNULL)
        runs = {"teacher": [], "student": []}
        for _ in range(a.runs):
            runs["teacher"].append(bench_table(radlads, teacher, a.lengths, a.steps, a.threads))
            runs["student"].append(bench_table(radlads, student, a.lengths, a.steps, a.threads))
    print(f"Qwen2-style teacher hidden {a.hidden}, {a.layers} layers, {a.heads}/{a.kv_heads} heads, vocab {a.vocab}; "
          f"student {a.arch}; {a.threads} thread(s); medians of {a.runs} runs, {a.steps} steps each")
    print(f"{'context':>8} {'teacher prompt tok/s':>21} {'student prompt tok/s':>21} {'teacher step ms':>16} "
          f"{'student step ms':>16} {'step ratio T/S':>15} {'teacher KV MiB':>15} {'student state MiB':>17}")
    for L in sorted(runs["teacher"][0]):
        med = {k: [statistics.median(r[L][i] for r in runs[k]) for i in range(3)] for k in runs}
        print(f"{L:>8} {med['teacher'][0]:>21.0f} {med['student'][0]:>21.0f} {med['teacher'][1]:>16.3f} "
              f"{med['student'][1]:>16.3f} {med['teacher'][1] / med['student'][1]:>15.2f} {med['teacher'][2]:>15.3f} "
              f"{med['student'][2]:>17.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
