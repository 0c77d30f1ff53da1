"""`--precision bf16-weights` (job-spec `precision: bf16-weights`): the student's trainable matrices (the GEMM-only
`*_proj.weight` and an untied `lm_head.weight`) live in bf16 only, with bf16 gradients, and their fp32 master
weights sit beside the AdamW moments (sharded with ZeRO-1). The arithmetic is bf16 autocast's (`--precision
bf16`: GEMMs on bf16 operands, fp32 accumulation) plus one rounding of each weight-gradient GEMM's result.
Checked on a RAD-RWKV7 (variant b) student of a small random Qwen2 teacher, CPU backend:

- align, distill (with a KL + CE blend: each term's head gradient accumulates into the bf16 one), extend:
  every step's loss within 2e-2 of the bf16 (autocast) run's, the exported student's held-out loss within 1 %;
  the model written at the end holds the fp32 master weights (values bf16 cannot hold), not their bf16 copies,
  and align's frozen matrices (bf16 on the device too) exactly as the student had them;
- deterministic (two runs byte-identical); stopped at step 4 and resumed: byte-identical to an uninterrupted
  run (the masters come back from the checkpoint's model, the moments from its optimizer state); align stopped
  and resumed with one checkpoint kept (its frozen matrices' fp32 values then come from the newest checkpoint):
  the saved model byte-identical too;
- on 2 MPI ranks (700-float buckets, so bf16 and fp32 tensors share buckets): ZeRO-1 byte-identical to the
  unsharded run, both within 2e-2 of the 1-rank run; ZeRO-1 keeps half the master weights per rank, and stopped at
  step 4 and resumed it is byte-identical to its uninterrupted run;
- memory by role (metrics.jsonl, counted by rl_malloc): gradients 2 bytes per bf16 parameter and 4 per fp32 one,
  master weights 4 bytes per owned trainable float, no bf16 GEMM copy of a trainable matrix, and the student's
  weights + gradients + copies at least 6 bytes per bf16 parameter smaller than under bf16 autocast; equal to
  `radlads plan --dtype bf16-weights` role for role;
- bad input: bf16-weights for pretrain is refused with a message that says what to use.

usage: test_bf16_weights.py"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from poolfix import RADLADS, WORKER, check, make_teacher, mpirun, report, run, safetensors  # noqa: E402
from test_recompute import MICRO, SEQ, STEPS, compare, make_case, metrics, score, train  # noqa: E402

BW = ("--precision", "bf16-weights")


def tensor_sizes(model_dir):
    """name -> element count of every tensor in a saved (fp32) model."""
    return {k: len(v) // 4 for k, v in safetensors(os.path.join(model_dir, "model.safetensors")).items()}


def is_bf16_matrix(name):
    return name.endswith("_proj.weight") or name == "lm_head.weight"


def trains(stage, name):
    """The rule of rl_tensor_trains for a student without attention layers: align trains the time-mix layers'
    tensors (q/k/v/o and the new ones), the others everything."""
    return stage != "align" or ".self_attn." in name


def stage_runs(root, data, teacher, student):
    import numpy as np
    for stage in ("align", "distill", "extend"):
        t = teacher if stage != "extend" else None
        # (distill: 16-row logits chunks, so the bf16 head gradient is rounded after each of 8 chunks per term)
        extra = ("--kl-weight", "1", "--ce-weight", "0.5", "--chunk-rows", "16") if stage == "distill" else ()
        ac, bw = os.path.join(root, f"{stage}-bf16"), os.path.join(root, f"{stage}-bw")
        train(stage, student, t, data, ac, 0, extra=("--precision", "bf16") + extra)
        train(stage, student, t, data, bw, 0, extra=BW + extra)
        ma, mb = metrics(ac), metrics(bw)
        worst = max(abs(ma[s]["loss"] - mb[s]["loss"]) / abs(ma[s]["loss"]) for s in ma)
        check(f"{stage}: every step's loss within 2e-2 of bf16 autocast's", len(mb) == STEPS and worst < 2e-2,
              f"(max rel {worst:.2e})")
        sa, sb = score(ac, data), score(bw, data)
        check(f"{stage}: held-out loss within 1 % of bf16 autocast's", abs(sa - sb) / sa < 0.01,
              f"({sa:.5f} vs {sb:.5f})")
        w = safetensors(os.path.join(bw, "model.safetensors"))
        trained = [k for k in w if is_bf16_matrix(k) and trains(stage, k)]
        not_bf16 = 0
        for k in trained:
            bits = np.frombuffer(w[k], np.uint32)
            not_bf16 += int(np.count_nonzero(bits & 0xFFFF))
        check(f"{stage}: the saved trainable matrices are the fp32 masters (values bf16 cannot hold)",
              trained and not_bf16 > 0, f"({len(trained)} matrices, {not_bf16} non-bf16 values)")
        src = safetensors(os.path.join(student, "model.safetensors"))
        frozen = [k for k in w if is_bf16_matrix(k) and not trains(stage, k)]
        check(f"{stage}: the frozen matrices (bf16 on the device) are saved as the student had them, exactly",
              stage != "align" or (frozen and all(w[k] == src[k] for k in frozen)), f"({len(frozen)} matrices)")
        yield stage, ac, bw


def memory(stage, ac, bw, teacher, student):
    got, base = metrics(bw)[STEPS]["backend_live_by_role"], metrics(ac)[STEPS]["backend_live_by_role"]
    sizes = tensor_sizes(student)
    bf = sum(c for k, c in sizes.items() if is_bf16_matrix(k) and trains(stage, k))
    f32 = sum(c for k, c in sizes.items() if not (is_bf16_matrix(k) and trains(stage, k)) and trains(stage, k))
    pad = lambda c: (c + 15) // 16 * 16  # noqa: E731 (arenas align every tensor to 16 elements)
    bf_p = sum(pad(c) for k, c in sizes.items() if is_bf16_matrix(k) and trains(stage, k))
    check(f"{stage}: master weights = 4 B per trainable float", got.get("master weights", 0) == 4 * (bf + f32),
          f"({got.get('master weights', 0)} vs {4 * (bf + f32)} B)")
    check(f"{stage}: gradients of the bf16 matrices in bf16", got["gradients"] <= base["gradients"] - 2 * bf_p,
          f"({got['gradients']} vs autocast {base['gradients']} B)")
    copies = got.get("bf16 GEMM copies", 0)
    saved = sum(base.get(r, 0) - got.get(r, 0) for r in ("student weights", "gradients", "bf16 GEMM copies"))
    check(f"{stage}: weights + gradients + GEMM copies smaller than autocast's by 6 B per bf16 parameter",
          saved >= 6 * bf, f"(saved {saved} B, {bf} bf16 parameters; copies left {copies} B)")
    r = run(RADLADS, "plan", "--teacher", teacher, "--arch", "rwkv7", "--gpu-mem", "1G", "--seq-len", SEQ,
            "--micro-batch", MICRO, "--stage", stage, "--recompute", "off", "--dtype", "bf16-weights", "--json")
    want = json.loads(r.stdout)["stages"][0]["bytes"]
    pairs = [("student weights", want["student_weights"]), ("gradients", want["student_grads"]),
             ("master weights", want["master_weights"]), ("optimizer state", want["adam_m"] + want["adam_v"]),
             ("bf16 GEMM copies", want["bf16_gemm_copies"])]
    if stage == "distill":
        pairs.append(("teacher weights", want["teacher_weights"]))
    for role, b in pairs:
        check(f"{stage}: {role} held = plan --dtype bf16-weights", got.get(role, 0) == b,
              f"({got.get(role, 0)} vs {b} B)")


def two_ranks(root, data, teacher, student):
    outs = {z: os.path.join(root, f"2r-zero{z}") for z in (0, 1)}
    for z, out in outs.items():
        run(*mpirun(2), WORKER, "run", "--stage", "distill", "--student", student, "--teacher", teacher, "--data",
            data, "--out", out, "--tokens", STEPS * 4 * SEQ, "--seq-len", SEQ, "--batch", 4, "--micro-batch",
            MICRO // 2, "--lr", "1e-3:1e-4", "--warmup", "2", "--checkpoint-every", "4", "--keep-checkpoints", "3",
            "--log-every", "0", "--threads", "1", *BW, "--zero", z, "--bucket-floats", "700")
    compare("2 ranks: ZeRO-1 vs unsharded", outs[0], outs[1])
    split = os.path.join(root, "2r-zero1-split")
    for extra in (("--stop-after", "4"), ("--resume",)):
        run(*mpirun(2), WORKER, "run", "--stage", "distill", "--student", student, "--teacher", teacher, "--data",
            data, "--out", split, "--tokens", STEPS * 4 * SEQ, "--seq-len", SEQ, "--batch", 4, "--micro-batch",
            MICRO // 2, "--lr", "1e-3:1e-4", "--warmup", "2", "--checkpoint-every", "4", "--keep-checkpoints", "3",
            "--log-every", "0", "--threads", "1", *BW, "--zero", "1", "--bucket-floats", "700", *extra)
    compare("2 ranks, ZeRO-1 stopped at 4 and resumed (sharded masters gathered and read back)", outs[1], split)
    m1, m2 = metrics(os.path.join(root, "plain")), metrics(outs[1])
    worst = max(abs(m1[k]["loss"] - m2[k]["loss"]) / abs(m1[k]["loss"]) for k in m1)
    check("2 ranks follow 1 rank (bf16 gradients rounded after other partial sums)", worst < 2e-2,
          f"(max rel {worst:.2e})")
    w0 = metrics(outs[0])[STEPS]["backend_live_by_role"].get("master weights", 0)
    w1 = metrics(outs[1])[STEPS]["backend_live_by_role"].get("master weights", 0)
    check("2 ranks: ZeRO-1 keeps half the master weights on rank 0", 0 < w1 and abs(2 * w1 - w0) <= 8,
          f"({w1} vs {w0} B unsharded)")


def main():
    with tempfile.TemporaryDirectory(prefix="rl-bf16w-") as root:
        _, data = make_teacher(root)
        teacher, student = make_case(root, "bw", "qwen2", "rad-rwkv7", "b", 0, hidden=64)
        print("bf16-weights vs bf16 autocast (RAD-RWKV7 b, Qwen2 teacher, 3 layers, hidden 64)")
        for stage, ac, bw in stage_runs(root, data, teacher, student):
            memory(stage, ac, bw, teacher, student)
        print("determinism and resume (distill)")
        again, split = os.path.join(root, "again"), os.path.join(root, "split")
        train("distill", student, teacher, data, again, 0,
              extra=BW + ("--kl-weight", "1", "--ce-weight", "0.5", "--chunk-rows", "16"))
        compare("bf16-weights run twice", os.path.join(root, "distill-bw"), again)
        base = os.path.join(root, "plain")
        train("distill", student, teacher, data, base, 0, extra=BW)
        train("distill", student, teacher, data, split, 0, extra=BW + ("--stop-after", "4"))
        train("distill", student, teacher, data, split, 0, extra=BW + ("--resume",))
        compare("bf16-weights stopped at 4 and resumed", base, split)
        # align keeps frozen matrices in bf16: after a resume they come from the checkpoint, and once that
        # checkpoint is collected (keep 1) from the newest one
        whole_a, split_a = os.path.join(root, "align-whole"), os.path.join(root, "align-split")
        gc = ("--checkpoint-every", "1", "--keep-checkpoints", "1")
        train("align", student, teacher, data, whole_a, 0, extra=BW + gc)
        train("align", student, teacher, data, split_a, 0, extra=BW + gc + ("--stop-after", "2"))
        train("align", student, teacher, data, split_a, 0, extra=BW + gc + ("--resume",))
        ck = sorted(os.listdir(os.path.join(split_a, "checkpoints")))
        check("align resumed at step 2 with keep-checkpoints 1: the step-2 checkpoint was collected",
              "step-00000002" not in ck, str(ck))
        a, b = (safetensors(os.path.join(x, "model.safetensors")) for x in (whole_a, split_a))
        check("align stopped at 2 and resumed: the saved model byte-identical to an uninterrupted run's", a == b)
        print("2 MPI ranks")
        two_ranks(root, data, teacher, student)
        r = run(WORKER, "run", "--stage", "pretrain", "--student", teacher, "--data", data, "--out",
                os.path.join(root, "pt"), *BW, ok=False)
        check("pretrain with bf16-weights is refused with what to use", r.returncode != 0 and
              "pretrain a softmax teacher with precision bf16 or fp32" in r.stderr, r.stderr.strip()[-200:])
    return report()


if __name__ == "__main__":
    sys.exit(main())
