"""Activation recomputation (`radlads-worker run --recompute 1`, job-spec stage field `recompute: 1`).

With recompute the model that trains keeps only each layer's input; the backward runs a layer's forward again
from it just before the layer's backward, so one layer's activations exist at a time instead of all of them.
The recomputed tensors are the same operations on the same inputs, so the gradients -- and everything after
them -- must be BIT-IDENTICAL to a run that kept every activation.  Checked here, for every stage that trains:

- align, distill, extend (RAD-RWKV7 variant b on a Qwen2 teacher; RAD-RWKV7 variant a hybrid with the last
  layer kept as softmax attention on a Qwen3 teacher, q/k norms; RAD-RWKV6) and pretrain (the softmax model's
  own backward): every step's loss and grad norm equal, final model.safetensors byte-identical, the checkpoint's
  optimizer state byte-identical;
- the backend's peak memory (metrics.jsonl `backend_peak_bytes`, counted by rl_malloc) is lower with recompute,
  by at least the saved activations of all layers but one (computed here from the shapes);
- a resumed run mixes the two: stop after step 4 without recompute, resume with it: bit-identical again.

Mixed precision (`--precision bf16`, job-spec `precision: bf16`) shares the helpers: every GEMM on bf16-rounded
operands with fp32 accumulation, fp32 master weights and everything else (the CPU backend does the same
arithmetic as the GPU's bf16 tensor-core GEMMs):
- align, distill, extend in bf16 follow the fp32 run: every step's loss within 1e-2 relative, the final weights
  close (max |diff| < 2e-2) but NOT identical (the rounding is in effect), the exported student's held-out loss
  (`radlads score`) within 1 % of the fp32 student's;
- bf16 is deterministic (two runs byte-identical), bf16 with recompute is byte-identical to bf16 without, and
  a bf16 run stopped at step 4 and resumed is byte-identical to an uninterrupted one (the weights' bf16 copies
  are made again from the loaded master weights); on 2 MPI ranks (overlapped all-reduce, 700-float buckets)
  ZeRO-1 and not are byte-identical and follow the 1-rank run within fp32 summation order.

`plan`: with --precision bf16, the memory held by role equals `radlads plan --dtype autocast` (student
weights, gradients, optimizer state, bf16 GEMM copies, and the frozen teacher's bf16 matrices + fp32 rest);
and the trainer's memory by role (metrics.jsonl `backend_peak_by_role`: rl_malloc counts every allocation
under the role it was made for) against `radlads plan --dtype fp32` for the same shapes, stage and recompute
setting: student weights, gradients (align and extend 3a: the trainable tensors' only), optimizer state and wkv
checkpoints equal exactly, and teacher weights in distill; activations (student + teacher + logits chunks)
within 5 % above the plan in distill and extend. In align the trainer keeps more than the plan counts, by what
it documents: the teacher's lm_head, and the student's forward working set and a logits chunk for validation
(activations within 1.0–1.5× the plan).

usage: test_recompute.py [case ...]   (default: all but bf16 and plan, which are named to run)"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from poolfix import RADLADS, TOKENIZER, WORKER, check, make_teacher, mpirun, read_bytes, report, run  # noqa: E402



def metrics(out):
    rows = {}
    for line in open(os.path.join(out, "metrics.jsonl")):
        m = json.loads(line)
        if "loss" in m:
            rows[m["step"]] = m
    return rows



SEQ, BATCH, MICRO, STEPS = 32, 4, 2, 6


def train(stage, student, teacher, data, out, recompute, extra=()):
    args = [WORKER, "run", "--stage", stage, "--student", student, "--data", data, "--out", out,
            "--tokens", STEPS * BATCH * SEQ, "--seq-len", SEQ, "--batch", BATCH, "--micro-batch", MICRO,
            "--lr", "3e-3:1e-4" if stage == "align" else "1e-3:1e-4", "--warmup", "2", "--checkpoint-every", "4",
            "--keep-checkpoints", "3", "--log-every", "0", "--threads", "1", "--recompute", recompute, *extra]
    if teacher:
        args += ["--teacher", teacher]
    return run(*args)


def compare(label, a, b):
    ma, mb = metrics(a), metrics(b)
    same = sorted(ma) == sorted(mb) and all(
        ma[s]["loss"] == mb[s]["loss"] and ma[s]["grad_norm"] == mb[s]["grad_norm"] for s in ma)
    check(f"{label}: every step's loss and grad norm equal", same and len(ma) == STEPS,
          f"({len(ma)} steps, last loss {ma[max(ma)]['loss']:.6f})" if ma else "")
    check(f"{label}: model.safetensors byte-identical",
          read_bytes(os.path.join(a, "model.safetensors")) == read_bytes(os.path.join(b, "model.safetensors")))
    opt = os.path.join("checkpoints", "step-00000004", "optimizer.safetensors")
    check(f"{label}: optimizer state of the step-4 checkpoint byte-identical",
          read_bytes(os.path.join(a, opt)) == read_bytes(os.path.join(b, opt)))
    return ma, mb


def peaks(label, ma, mb, at_least):
    pa, pb = max(m["backend_peak_bytes"] for m in ma.values()), max(m["backend_peak_bytes"] for m in mb.values())
    check(f"{label}: backend peak lower with recompute by >= {at_least} B", pa - pb >= at_least,
          f"({pa} -> {pb} B, -{pa - pb})")


def make_case(root, name, teacher_arch, arch, variant, attention_layers, layers=3, hidden=32):
    teacher_dir = os.path.join(root, name + "-teacher")
    run(RADLADS, "init-model", "--arch", teacher_arch, "--hidden", hidden, "--layers", layers, "--heads", "2",
        "--kv-heads", "1", "--intermediate", 2 * hidden, "--vocab", "293", "--seed", "5", "--randomize-all",
        "--out", teacher_dir)
    with open(TOKENIZER, "rb") as src, open(os.path.join(teacher_dir, "tokenizer.json"), "wb") as dst:
        dst.write(src.read())
    student = os.path.join(root, name + "-student")
    run(WORKER, "run", "--stage", "transfer", "--teacher", teacher_dir, "--arch", arch,
        *(["--variant", variant] if arch == "rad-rwkv7" else []), "--attention-layers", attention_layers,
        "--out", student)
    return teacher_dir, student


CASES = {
    "rwkv7b_qwen2": ("qwen2", "rad-rwkv7", "b", 0),
    "rwkv7a_hybrid_qwen3": ("qwen3", "rad-rwkv7", "a", 1),
    "rwkv6_qwen2": ("qwen2", "rad-rwkv6", None, 0),
}


def saved_floats_per_layer(hidden, inter):
    """A lower bound of what one block keeps without recompute beyond its input: ln1, attn_out, res_mid, ln2
    (4·D) and gate, up, act (3·F) per row."""
    return SEQ * MICRO * (4 * hidden + 3 * inter)


def test_case(root, data, name):
    teacher_arch, arch, variant, attn = CASES[name]
    print(f"{name}: {arch}{' variant ' + variant if variant else ''}, attention layers {attn}, {teacher_arch} "
          "teacher, 3 layers")
    teacher, student = make_case(root, name, teacher_arch, arch, variant, attn)
    # two layers' blocks no longer kept (only their inputs): a floor for the saving in distill and extend
    floor = 4 * 2 * saved_floats_per_layer(32, 64)
    for stage in ("align", "distill", "extend"):
        outs = [os.path.join(root, f"{name}-{stage}-r{r}") for r in (0, 1)]
        for r, out in enumerate(outs):
            train(stage, student, teacher if stage != "extend" else None, data, out, r)
        ma, mb = compare(f"{name} {stage}", *outs)
        # align: the time-mix layers share one saved set with recompute (three layers' worth before)
        peaks(f"{name} {stage}", ma, mb, floor if stage != "align" else 1)


def test_pretrain(root, data):
    print("pretrain: the softmax model's own backward (Qwen2, 4 layers)")
    teacher, _ = make_teacher(os.path.join(root, "pt"), hidden=32, layers=4)
    outs = [os.path.join(root, f"pretrain-r{r}") for r in (0, 1)]
    for r, out in enumerate(outs):
        train("pretrain", teacher, None, data, out, r)
    ma, mb = compare("pretrain", *outs)
    peaks("pretrain", ma, mb, 4 * 3 * saved_floats_per_layer(32, 64))


def test_resume_switches(root, data):
    print("a run stopped without recompute and resumed with it equals an uninterrupted run")
    teacher, student = make_case(root, "resume", "qwen2", "rad-rwkv7", "b", 0)
    whole, split = os.path.join(root, "resume-whole"), os.path.join(root, "resume-split")
    train("distill", student, teacher, data, whole, 0)
    train("distill", student, teacher, data, split, 0, extra=("--stop-after", "4"))
    train("distill", student, teacher, data, split, 1, extra=("--resume",))
    compare("stop at 4 without, resume with recompute", whole, split)


def close_weights(a, b):
    import numpy as np
    from poolfix import safetensors
    ta, tb = safetensors(os.path.join(a, "model.safetensors")), safetensors(os.path.join(b, "model.safetensors"))
    return max(float(np.max(np.abs(np.frombuffer(ta[k], np.float32) - np.frombuffer(tb[k], np.float32))))
               for k in ta)


def score(model, data):
    r = run(RADLADS, "score", "--model", model, "--tokens", data, "--window", SEQ, "--json")
    return json.loads(r.stdout)["mean_cross_entropy"]


def test_bf16(root, data):
    print("bf16 mixed precision against fp32 (RAD-RWKV7 b, Qwen2 teacher, 3 layers)")
    teacher, student = make_case(root, "bf16", "qwen2", "rad-rwkv7", "b", 0, hidden=64)
    bf = ("--precision", "bf16")
    for stage in ("align", "distill", "extend"):
        t = teacher if stage != "extend" else None
        f32, b16 = os.path.join(root, f"bf-{stage}-fp32"), os.path.join(root, f"bf-{stage}-bf16")
        train(stage, student, t, data, f32, 0)
        train(stage, student, t, data, b16, 0, extra=bf)
        ma, mb = metrics(f32), metrics(b16)
        worst = max(abs(ma[s_]["loss"] - mb[s_]["loss"]) / abs(ma[s_]["loss"]) for s_ in ma)
        check(f"bf16 {stage}: every step's loss within 1e-2 of fp32", len(mb) == STEPS and worst < 1e-2,
              f"(max rel {worst:.2e})")
        d = close_weights(f32, b16)
        check(f"bf16 {stage}: final weights close to fp32's but not identical", 0 < d < 2e-2, f"(max |diff| {d:.2e})")
        sa, sb = score(f32, data), score(b16, data)
        check(f"bf16 {stage}: held-out loss of the student within 1 % of fp32's", abs(sa - sb) / sa < 0.01,
              f"({sa:.5f} vs {sb:.5f})")
        if stage != "distill":
            continue
        again, rec, split = (os.path.join(root, f"bf-{stage}-{x}") for x in ("again", "rec", "split"))
        train(stage, student, t, data, again, 0, extra=bf)
        compare("bf16 run twice (deterministic)", b16, again)
        train(stage, student, t, data, rec, 1, extra=bf)
        compare("bf16 with recompute vs without", b16, rec)
        train(stage, student, t, data, split, 0, extra=bf + ("--stop-after", "4"))
        train(stage, student, t, data, split, 0, extra=bf + ("--resume",))
        compare("bf16 stopped at 4 and resumed", b16, split)
        # 2 ranks: the copies are refreshed after ZeRO-1's all-gather too; overlapped all-reduce on
        r2 = {z: os.path.join(root, f"bf-{stage}-2r-zero{z}") for z in (0, 1)}
        for z, out in r2.items():
            args = [WORKER, "run", "--stage", stage, "--student", student, "--teacher", t, "--data", data,
                    "--out", out, "--tokens", STEPS * BATCH * SEQ, "--seq-len", SEQ, "--batch", BATCH,
                    "--micro-batch", MICRO // 2, "--lr", "1e-3:1e-4", "--warmup", "2", "--checkpoint-every", "4",
                    "--keep-checkpoints", "3", "--log-every", "0", "--threads", "1", "--precision", "bf16",
                    "--zero", z, "--bucket-floats", "700"]
            run(*mpirun(2), *args)
        compare("bf16 on 2 ranks: ZeRO-1 vs not", r2[0], r2[1])
        m1, m2 = metrics(b16), metrics(r2[0])
        worst = max(abs(m1[k]["loss"] - m2[k]["loss"]) / abs(m1[k]["loss"]) for k in m1)
        check("bf16 on 2 ranks follows 1 rank (fp32 summation order only)", worst < 1e-4, f"(max rel {worst:.2e})")


def test_plan_autocast(root, data):
    """--precision bf16 against `radlads plan --dtype autocast`: the layout the trainer has today."""
    print("rad-rwkv7 --precision bf16: memory by role against `radlads plan --dtype autocast`")
    teacher, student = make_case(root, "plan-ac", "qwen2", "rad-rwkv7", "b", 0, hidden=64)
    for stage in ("align", "distill", "extend"):
        out = os.path.join(root, f"plan-ac-{stage}")
        train(stage, student, teacher if stage != "extend" else None, data, out, 1, extra=("--precision", "bf16"))
        got = metrics(out)[STEPS]["backend_live_by_role"]
        r = run(RADLADS, "plan", "--teacher", teacher, "--arch", "rwkv7", "--gpu-mem", "1G", "--seq-len", SEQ,
                "--micro-batch", MICRO, "--stage", stage, "--recompute", "on", "--dtype", "autocast", "--json")
        want = json.loads(r.stdout)["stages"][0]["bytes"]
        label = f"autocast {stage}"
        pairs = [("student weights", want["student_weights"]), ("gradients", want["student_grads"]),
                 ("optimizer state", want["adam_m"] + want["adam_v"]),
                 ("bf16 GEMM copies", want["bf16_gemm_copies"])]
        if stage == "distill":  # (align's plan leaves out the lm_head the trainer loads)
            pairs.append(("teacher weights", want["teacher_weights"]))
        for role, b in pairs:
            check(f"{label}: {role} held = plan", got.get(role, 0) == b, f"({got.get(role, 0)} vs {b} B)")


def test_mlp_rows(root, data):
    """--mlp-rows (stage field mlp_rows): the MLP runs a chunk of rows at a time where its activations are not kept
    for every layer (recompute, the teacher) and in its backward. 64 rows in chunks of 24 (24, 24, 16)."""
    print("mlp_rows: the MLP in row chunks (RAD-RWKV7 b, Qwen2 teacher, 3 layers, hidden 32, intermediate 64)")
    teacher, student = make_case(root, "mlprows", "qwen2", "rad-rwkv7", "b", 0)
    rows, chunk, inter = SEQ * MICRO, 24, 64
    mr = ("--mlp-rows", chunk)
    for stage in ("distill", "extend"):
        t = teacher if stage != "extend" else None
        whole, c0, c1 = (os.path.join(root, f"mlprows-{stage}-{x}") for x in ("whole", "c0", "c1"))
        train(stage, student, t, data, whole, 1)
        train(stage, student, t, data, c0, 0, extra=mr)
        train(stage, student, t, data, c1, 1, extra=mr)
        # the backward runs in the same chunks with and without recompute: the same sums in the same order
        compare(f"{stage} --mlp-rows {chunk}: recompute 0 vs 1", c0, c1)
        mw, mc = metrics(whole), metrics(c1)
        worst = max(abs(mw[k]["loss"] - mc[k]["loss"]) / abs(mw[k]["loss"]) for k in mw)
        check(f"{stage}: chunked follows whole rows (every step's loss within 1e-5 relative, weights within 1e-5)",
              sorted(mw) == sorted(mc) and worst < 1e-5 and close_weights(whole, c1) < 1e-5,
              f"(loss {worst:.1e}, weights {close_weights(whole, c1):.1e})")
        gw, gc = mw[STEPS]["backend_peak_by_role"], mc[STEPS]["backend_peak_by_role"]
        # the student's gate/up/act and its backward scratch dgate/dup/dact, and the teacher's gate/up/act
        want = 6 * (rows - chunk) * inter * 4
        check(f"{stage}: the student's activations smaller by exactly its 6 [rows, intermediate] tensors' chunk",
              gw["activations"] - gc["activations"] == want, f"({gw['activations'] - gc['activations']} vs {want} B)")
        if t:
            want_t = 3 * (rows - chunk) * inter * 4
            check(f"{stage}: the teacher's activations smaller by its 3", gw["teacher activations"] -
                  gc["teacher activations"] == want_t,
                  f"({gw['teacher activations'] - gc['teacher activations']} vs {want_t} B)")
        r = run(RADLADS, "plan", "--teacher", teacher, "--arch", "rwkv7", "--gpu-mem", "1G", "--seq-len", SEQ,
                "--micro-batch", MICRO, "--stage", stage, "--recompute", "on", "--dtype", "fp32", "--json", *mr)
        want_p = json.loads(r.stdout)["stages"][0]["bytes"]
        acts = gc.get("activations", 0) + gc.get("teacher activations", 0)
        plan_acts = want_p["activations"] + want_p["teacher_activations"] + want_p["logits_chunks"]
        check(f"{stage}: activations within 1.0-1.05x of `radlads plan --mlp-rows {chunk}`",
              plan_acts <= acts <= 1.05 * plan_acts, f"({acts} vs {plan_acts} B, {acts / plan_acts:.3f}x)")


def test_plan(root, data):
    test_plan_autocast(root, data)
    for arch in ("rad-rwkv7", "rad-rwkv6"):
        print(f"{arch}: the trainer's memory by role against `radlads plan --dtype fp32`")
        teacher, student = make_case(root, "plan-" + arch, "qwen2", arch, "b" if arch == "rad-rwkv7" else None, 0,
                                     hidden=64)
        for stage in ("align", "distill", "extend", "extend3a"):
            for rec in (0, 1):
                out = os.path.join(root, f"plan-{arch}-{stage}-{rec}")
                # extend3a: step 3a (train=decay_shift), the low-memory extend: gradients of the trained part only
                a3 = ("--train", "decay_shift") if stage == "extend3a" else ()
                stage_ = stage.replace("3a", "")
                train(stage_, student, teacher if stage_ != "extend" else None, data, out, rec, extra=a3)
                got = metrics(out)[STEPS]["backend_peak_by_role"]
                r = run(RADLADS, "plan", "--teacher", teacher, "--arch", arch.replace("rad-", ""), "--gpu-mem",
                        "1G", "--seq-len", SEQ, "--micro-batch", MICRO, "--stage", stage_, "--recompute",
                        "on" if rec else "off", "--dtype", "fp32", "--json", *a3)
                want = json.loads(r.stdout)["stages"][0]["bytes"]
                label = f"{arch} {stage} recompute={rec}"
                exact = [("student weights", want["student_weights"]), ("gradients", want["student_grads"]),
                         ("optimizer state", want["adam_m"] + want["adam_v"]),
                         ("wkv checkpoints", want["wkv_checkpoints"])]
                if stage != "align":
                    exact += [("teacher weights", want["teacher_weights"])]
                for role, b in exact:
                    check(f"{label}: {role} = plan", got.get(role, 0) == b, f"({got.get(role, 0)} vs {b} B)")
                if stage == "align":
                    check(f"{label}: teacher weights >= plan (the lm_head is loaded too)",
                          got["teacher weights"] >= want["teacher_weights"])
                acts = got.get("activations", 0) + got.get("teacher activations", 0)
                plan_acts = want["activations"] + want["teacher_activations"] + want["logits_chunks"]
                hi = 1.5 if stage == "align" else 1.05
                check(f"{label}: activations within 1.0-{hi}x of the plan", plan_acts <= acts <= hi * plan_acts,
                      f"({acts} vs {plan_acts} B, {acts / plan_acts:.3f}x)")


def main():
    wanted = sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="rl-recompute-") as root:
        os.makedirs(os.path.join(root, "pt"))
        _, data = make_teacher(root)
        for name in CASES:
            if not wanted or name in wanted:
                test_case(root, data, name)
        if not wanted or "pretrain" in wanted:
            test_pretrain(root, data)
        if not wanted or "resume" in wanted:
            test_resume_switches(root, data)
        if not wanted or "mlp_rows" in wanted:
            test_mlp_rows(root, data)
        if "bf16" in wanted:
            test_bf16(root, data)
        if "plan" in wanted:
            test_plan(root, data)
    return report()


if __name__ == "__main__":
    sys.exit(main())
