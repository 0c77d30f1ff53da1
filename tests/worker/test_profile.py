"""`radlads-worker run --profile 1` (job spec `profile: 1`): DIR/profile.tsv holds every backend op the steps ran,
timed from the second step on, and the log names the top ones; the weights are those of the same run without it.

Checks, on a distill of a tiny RAD-RWKV7 student (CPU backend): the file's header and one row per (op, GEMM shape);
the ops a distill step must run are there (matmul, wkv7 forward and backward, the rwkv7 mix, kl_divergence,
adamw); AdamW is a few launches per step (one per run of adjacent tensors), not one per tensor; each row's calls are a whole multiple of the profiled steps for the ops a step runs a fixed number of
times; times are positive and the shares sum to 1; a matmul row's TFLOP/s equals 2·M·N·K·batch·calls / seconds;
the final weights and every logged loss are byte-identical to the run without --profile (timing only synchronizes);
`--profile 2` is refused naming the option; validation between the steps is not profiled."""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from poolfix import WORKER, check, make_teacher, read_bytes, report, run  # noqa: E402


def safetensor_names(path):
    """The tensor names of a safetensors file (its JSON header)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return [k for k in json.loads(f.read(n)) if k != "__metadata__"]


def losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(ln)["loss"] for ln in f if '"loss"' in ln]


def main():
    with tempfile.TemporaryDirectory() as root:
        teacher, data = make_teacher(root, hidden=64, layers=2)
        student = os.path.join(root, "student")
        run(WORKER, "run", "--stage", "transfer", "--teacher", teacher, "--arch", "rad-rwkv7", "--out", student)
        steps = 6
        # validation every 2 steps and at the end: not part of the profile (the per-step counts below)
        common = ["--stage", "distill", "--teacher", teacher, "--student", student, "--data", data, "--seq-len", "32",
                  "--batch", "4", "--tokens", str(steps * 4 * 32), "--lr", "1e-3", "--warmup", "1", "--log-every", "1",
                  "--threads", "2", "--valid-fraction", "0.1", "--valid-windows", "8", "--valid-every", "2"]
        plain, prof = os.path.join(root, "plain"), os.path.join(root, "prof")
        run(WORKER, "run", *common, "--out", plain)
        r = run(WORKER, "run", *common, "--out", prof, "--profile", "1")
        path = os.path.join(prof, "profile.tsv")
        check("profile.tsv written", os.path.exists(path))
        if not os.path.exists(path):
            return report()
        lines = open(path).read().splitlines()
        check("first line says how many steps were profiled", lines[0] == f"# {steps - 1} profiled steps (each op "
              "timed with a device sync before and after it)", lines[0])
        header = lines[1].split("\t")
        check("column header", header == ["op", "M", "N", "K", "trans_a", "trans_b", "batch", "calls", "seconds",
                                          "ms_per_step", "share", "TFLOP_per_s"], lines[1])
        rows = [dict(zip(header, ln.split("\t"))) for ln in lines[2:]]
        ops = {x["op"] for x in rows}
        need = {"matmul", "wkv7_forward", "wkv7_backward", "rwkv7_mix_forward", "rwkv7_mix_backward",
                "kl_divergence", "adamw"}
        check("a distill step's ops are all there", need <= ops, f"missing {sorted(need - ops)}")
        secs = [float(x["seconds"]) for x in rows]
        check("every time positive, rows sorted by time", all(s > 0 for s in secs) and secs == sorted(secs, reverse=True))
        share = sum(float(x["share"]) for x in rows)
        check("shares sum to 1", abs(share - 1) < 1e-3, f"{share:.5f}")
        per_step = {x["op"]: int(x["calls"]) for x in rows if x["op"] in ("wkv7_forward", "wkv7_backward",
                                                                              "kl_divergence")}
        check("fixed-count ops: the same number of calls in each profiled step, validation not counted",
              per_step == {"wkv7_forward": 2 * (steps - 1), "wkv7_backward": 2 * (steps - 1),
                           "kl_divergence": steps - 1} and "cross_entropy" not in ops, str(per_step))
        # AdamW runs once per run of adjacent tensors with one learning rate: per layer the attention projections
        # (lr2) and the rest (lr), the embedding with layer 0's norms, the time-mix arena: 2·layers + 2 here
        ntensors = len(safetensor_names(os.path.join(student, "model.safetensors")))
        adamw = sum(int(x["calls"]) for x in rows if x["op"] == "adamw") / (steps - 1)
        check(f"AdamW: 2·layers + 2 = 6 launches per step for {ntensors} tensors (one per run of adjacent tensors)",
              adamw == 6, f"{adamw:g} per step")
        nvalid = sum('"valid_loss"' in ln for ln in open(os.path.join(prof, "metrics.jsonl")))
        check("validation ran at steps 2, 4, 6 (and was left out above)", nvalid == 3, f"{nvalid} validations")
        bad = []
        for x in rows:
            if x["op"] != "matmul":
                continue
            m, n, k, b, c, s = (int(x["M"]), int(x["N"]), int(x["K"]), int(x["batch"]), int(x["calls"]),
                                float(x["seconds"]))
            want = 2.0 * m * n * k * b * c / s / 1e12
            if m <= 0 or n <= 0 or k <= 0 or abs(float(x["TFLOP_per_s"]) - want) > 1e-4 + 0.01 * want:
                bad.append(x)
        check("matmul rows: shape given, TFLOP/s = 2·M·N·K·batch·calls / seconds", not bad, str(bad[:2]))
        check("the log names the profile and its top ops", "distill: profile of 5 steps" in r.stderr + r.stdout and
              "profile.tsv" in r.stderr + r.stdout)
        check("weights byte-identical to the run without --profile",
              read_bytes(os.path.join(plain, "model.safetensors")) == read_bytes(os.path.join(prof, "model.safetensors")))
        check("every loss identical", losses(plain) == losses(prof), f"{losses(prof)[:3]}")
        check("no profile.tsv without --profile", not os.path.exists(os.path.join(plain, "profile.tsv")))
        bad_run = run(WORKER, "run", *common, "--out", os.path.join(root, "bad"), "--profile", "2", ok=False)
        check("--profile 2 refused, naming the option", bad_run.returncode != 0 and "--profile" in bad_run.stderr,
              bad_run.stderr.strip()[-200:])
    return report()


if __name__ == "__main__":
    sys.exit(main())
