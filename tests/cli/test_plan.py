"""`radlads plan`: device memory per rank of steps 1-3 from a teacher's config.json.

1. The planner's parameter counts equal the tensors in the safetensors files the real tools write: tiny
   teachers from `radlads init-model` (Qwen2, Qwen3 with an explicit head_dim, Llama tied and untied with
   attention bias) and students from `radlads-worker run --stage transfer` (RAD-RWKV7 b and a, RAD-RWKV6, a
   hybrid keeping one attention layer): teacher and student totals, and the trainable set of each stage
   (align: the time-mix layers' self_attn tensors; distill and extend: all; extend --train decay_shift: the
   decay and token-shift tensors), counted here from the tensor names in the files.
2. Qwen2.5-7B (tests/fixtures/qwen2.5-7b, a folder holding only config.json) has 7,615,616,512 parameters
   and Qwen3-8B 8,190,735,360, exactly.
3. Qwen2.5-7B -> RAD-RWKV7 on 8 x 80G at seq 512 fits in every stage (extend at METHOD.md's 16384 with
   recompute; with precision bf16-weights at 16384 x 2, the MLP in row chunks, and not with --mlp-rows 32768); on one rank distill does not fit, and the verdict names the unsharded optimizer state and
   the number of ranks that makes it fit.
4. --json parses, carries schema_version, and every stage's total is the sum of its roles; the table's
   total row equals the sum of its role rows (to rounding).
4b. The workspace is a fixed allowance plus each stage's CUDA kernel scratch, which this test sizes on its own
   from the launchers' rules (the per-row wkv backward's segment states, a bf16 gradient's fp32 accumulation
   block, the mix backwards' partial sums) and which the plan must match exactly, naming the largest.
5. Bad inputs give exit 2 (usage) or 1 (files) and a message naming the problem: a bad --gpu-mem size, a
   folder without config.json, an unknown --arch, --stage, --zero, --recompute."""
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

SRC = os.environ.get("RADLADS_SRC", ".")
BUILD = os.environ.get("RADLADS_BUILD", "build")
RADLADS = os.path.join(BUILD, "cli", "radlads")
WORKER = os.path.join(BUILD, "worker", "radlads-worker")
QWEN25_7B = os.path.join(SRC, "tests", "fixtures", "qwen2.5-7b")
QWEN3_8B = os.path.join(SRC, "tests", "fixtures", "qwen3-8b")
failures = []


def check(name, ok, detail=""):
    print(f"  {name:78s} {'ok' if ok else 'FAIL'} {detail}")
    sys.stdout.flush()
    if not ok:
        failures.append(name)


def run(args):
    return subprocess.run(args, capture_output=True, text=True)


def tensors(d):
    """{name: element count} of every safetensors file in folder d (header only)."""
    out = {}
    for f in sorted(os.listdir(d)):
        if not f.endswith(".safetensors"):
            continue
        with open(os.path.join(d, f), "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for name, e in header.items():
            if name != "__metadata__":
                count = 1
                for s in e["shape"]:
                    count *= s
                out[name] = count
    return out


def plan_json(*args):
    r = run([RADLADS, "plan", "--json", *args])
    if r.returncode != 0:
        raise SystemExit(f"plan {args} failed: {r.stderr}")
    return json.loads(r.stdout)


DECAY_SHIFT = re.compile(r"\.self_attn\.(time_decay.*|time_maa_w.*|w0|w1|w2)$")


def check_counts(label, teacher_dir, student_dir, arch, variant, attn, layers):
    t, s = tensors(teacher_dir), tensors(student_dir)
    args = ["--teacher", teacher_dir, "--arch", arch, "--gpu-mem", "1G", "--seq-len", "32",
            "--attention-layers", str(attn)]
    if variant:
        args += ["--variant", variant]
    doc = plan_json(*args)
    st = {x["stage"]: x for x in doc["stages"]}
    mix = layers - attn
    time_mix = 0
    for name, n in s.items():
        m = re.match(r"model\.layers\.(\d+)\.self_attn\.", name)
        if m and int(m.group(1)) < mix:
            time_mix += n
    total_s, total_t = sum(s.values()), sum(t.values())
    check(f"{label}: teacher parameters = init-model's file", doc["teacher"]["params"] == total_t,
          f"{doc['teacher']['params']} vs {total_t}")
    check(f"{label}: student parameters = transfer's file", doc["student"]["params"] == total_s,
          f"{doc['student']['params']} vs {total_s}")
    check(f"{label}: align trains the time-mix layers' self_attn tensors", st["align"]["trainable_params"] == time_mix,
          f"{st['align']['trainable_params']} vs {time_mix}")
    check(f"{label}: distill and extend train every tensor",
          st["distill"]["trainable_params"] == total_s and st["extend"]["trainable_params"] == total_s)
    resident = total_t - t.get("lm_head.weight", 0)
    check(f"{label}: align keeps the teacher without its lm_head, distill all of it",
          st["align"]["teacher_resident_params"] == resident and st["distill"]["teacher_resident_params"] == total_t
          and st["extend"]["teacher_resident_params"] == 0)
    ds = sum(n for name, n in s.items() if DECAY_SHIFT.search(name))
    d3a = plan_json(*args, "--stage", "extend", "--train", "decay_shift")["stages"][0]
    check(f"{label}: extend --train decay_shift trains the decay/token-shift tensors",
          d3a["trainable_params"] == ds and ds > 0, f"{d3a['trainable_params']} vs {ds}")
    for x in doc["stages"]:
        want = st["align"]["trainable_params"] if x["stage"] == "align" else total_s
        weights = doc["student"]["params"] * 2
        check(f"{label} {x['stage']}: bf16 weights, grads of the trainable set only",
              x["bytes"]["student_weights"] == weights and x["bytes"]["student_grads"] == want * 2)


def check_table_sums(text):
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^(.*?)\s{2,}(-?\d+\.\d\d)\s+(-?\d+\.\d\d)\s+(-?\d+\.\d\d)\s*$", line)
        if m:
            rows[m.group(1).strip()] = [float(m.group(i)) for i in (2, 3, 4)]
    roles = [k for k in rows if k not in ("total", "budget")]
    ok = "total" in rows and len(roles) == 12
    for col in range(3):
        s = sum(rows[k][col] for k in roles) if ok else 0
        ok = ok and abs(s - rows["total"][col]) <= 0.005 * len(roles) + 1e-9
    return ok, f"{len(roles)} role rows"


def main():
    for exe in (RADLADS, WORKER):
        if not os.path.exists(exe):
            print(f"missing {exe}: build first")
            return 1
    with tempfile.TemporaryDirectory() as tmp:
        print("1. parameter counts equal the tensors in the files init-model and transfer write")

        def teacher(name, *args):
            d = os.path.join(tmp, name)
            subprocess.run([RADLADS, "init-model", "--vocab", "300", "--seed", "1", "--out", d, *args], check=True,
                           stdout=subprocess.DEVNULL)
            return d

        def student(name, src, *args):
            d = os.path.join(tmp, name)
            r = run([WORKER, "run", "--stage", "transfer", "--teacher", src, "--out", d, *args])
            if r.returncode != 0:
                raise SystemExit(f"transfer {name} failed: {r.stderr}")
            return d

        qwen2 = teacher("qwen2", "--arch", "qwen2", "--hidden", "64", "--layers", "3", "--heads", "4",
                        "--kv-heads", "2")
        qwen3 = teacher("qwen3", "--arch", "qwen3", "--hidden", "48", "--layers", "2", "--heads", "4",
                        "--kv-heads", "2", "--head-dim", "16")
        llama_tied = teacher("llama_tied", "--arch", "llama", "--hidden", "64", "--layers", "2", "--heads", "8",
                             "--kv-heads", "2", "--attention-bias", "--tie")
        cases = [
            ("qwen2 -> rad-rwkv7 b", qwen2, student("s7b", qwen2, "--arch", "rad-rwkv7"), "rwkv7", "b", 0, 3),
            ("qwen2 -> rad-rwkv7 a", qwen2, student("s7a", qwen2, "--arch", "rad-rwkv7", "--variant", "a"),
             "rwkv7", "a", 0, 3),
            ("qwen2 -> rad-rwkv6", qwen2, student("s6", qwen2, "--arch", "rad-rwkv6"), "rwkv6", None, 0, 3),
            ("qwen2 -> rad-rwkv7 hybrid (1 attention layer)", qwen2,
             student("s7h", qwen2, "--arch", "rad-rwkv7", "--attention-layers", "1"), "rwkv7", "b", 1, 3),
            ("qwen3 (head_dim 16) -> rad-rwkv7 a", qwen3,
             student("q3s7", qwen3, "--arch", "rad-rwkv7", "--variant", "a"), "rwkv7", "a", 0, 2),
            ("qwen3 (head_dim 16) -> rad-rwkv6", qwen3, student("q3s6", qwen3, "--arch", "rad-rwkv6"),
             "rwkv6", None, 0, 2),
            ("llama tied, attention bias -> rad-rwkv7 b", llama_tied,
             student("ls7", llama_tied, "--arch", "rad-rwkv7"), "rwkv7", "b", 0, 2),
        ]
        for c in cases:
            check_counts(*c)

        print("2. real teachers from config.json alone")
        check("fixture folder holds only config.json", sorted(os.listdir(QWEN25_7B)) == ["config.json"])
        doc = plan_json("--teacher", QWEN25_7B, "--arch", "rwkv7", "--gpu-mem", "80G")
        check("Qwen2.5-7B has 7,615,616,512 parameters", doc["teacher"]["params"] == 7615616512,
              str(doc["teacher"]["params"]))
        doc3 = plan_json("--teacher", QWEN3_8B, "--arch", "rwkv7", "--gpu-mem", "80G")
        check("Qwen3-8B has 8,190,735,360 parameters", doc3["teacher"]["params"] == 8190735360,
              str(doc3["teacher"]["params"]))
        # a copy in a fresh folder: nothing but config.json is read
        only = os.path.join(tmp, "only-config")
        os.mkdir(only)
        shutil.copy(os.path.join(QWEN25_7B, "config.json"), only)
        check("a folder with only config.json plans", run([RADLADS, "plan", "--teacher", only, "--arch", "rwkv6",
                                                           "--gpu-mem", "80G"]).returncode == 0)

        print("3. Qwen2.5-7B -> RAD-RWKV7 on 8 x 80G, and on one rank")
        base = ["--teacher", QWEN25_7B, "--arch", "rwkv7", "--gpu-mem", "80G", "--seq-len", "512"]
        doc8 = plan_json(*base, "--ranks", "8")
        st = {x["stage"]: x for x in doc8["stages"]}
        for name in ("align", "distill", "extend"):
            check(f"8 x 80G: {name} fits", st[name]["fits"] and st[name]["verdict"].startswith("fits"),
                  f"{st[name]['total_bytes'] / 2**30:.2f} GiB: {st[name]['verdict']}")
        check("8 x 80G: align and distill at seq 512", st["align"]["seq_len"] == 512 and st["distill"]["seq_len"] == 512)
        check("8 x 80G: extend at 16384 with recompute", st["extend"]["seq_len"] == 16384 and st["extend"]["recompute"])
        check("8 x 80G: ZeRO-1 shards master weights and moments by 8",
              st["distill"]["bytes"]["adam_m"] == -(-st["distill"]["trainable_params"] // 8) * 4 and
              st["distill"]["bytes"]["master_weights"] == st["distill"]["bytes"]["adam_m"])
        text8 = run([RADLADS, "plan", *base, "--ranks", "8"]).stdout
        check("8 x 80G table: three verdicts say fits", len(re.findall(r"^step \d \w+: fits", text8, re.M)) == 3)
        r1 = run([RADLADS, "plan", *base, "--ranks", "1"])
        line = next((x for x in r1.stdout.splitlines() if x.startswith("step 2 distill:")), "")
        check("1 x 80G: distill does not fit", "does not fit by" in line, line)
        check("1 x 80G: the verdict names the optimizer state and the fix",
              "master weights" in line and re.search(r"fits with --ranks \d+", line) is not None)
        doc1 = plan_json(*base, "--ranks", "1", "--stage", "distill")
        x = doc1["stages"][0]
        check("1 x 80G json: fits false, short_by = total - budget",
              not x["fits"] and x["short_by_bytes"] == x["total_bytes"] - doc1["budget_bytes"] > 0)
        r0 = run([RADLADS, "plan", *base, "--ranks", "8", "--zero", "0", "--stage", "distill"])
        check("8 x 80G without ZeRO-1: distill names --zero 1", "fits with --zero 1" in r0.stdout, r0.stdout[-200:])

        print("4. --json totals are the sums of the roles; the table's too")
        ok = "schema_version" in doc8 and all(
            x["total_bytes"] == sum(x["bytes"].values()) and len(x["bytes"]) == 12 for x in doc8["stages"])
        check("json: schema_version, 12 roles, total = sum of roles", ok)
        ok, detail = check_table_sums(text8)
        check("table: total row = sum of role rows", ok, detail)
        fp32 = plan_json(*base, "--ranks", "8", "--dtype", "fp32")
        check("fp32 policy: no master copy, 4-byte weights",
              all(x["bytes"]["master_weights"] == 0 and x["bytes"]["student_weights"] == 4 * fp32["student"]["params"]
                  for x in fp32["stages"]))
        ac = plan_json(*base, "--ranks", "8", "--dtype", "autocast")
        check("autocast policy (today's trainer): fp32 weights and grads, bf16 copies of the student's, a "
              "teacher between 2 and 4 bytes a parameter",
              ac["dtypes"] == "autocast" and all(
                  x["bytes"]["student_weights"] == 4 * ac["student"]["params"] and x["bytes"]["master_weights"] == 0
                  and x["bytes"]["bf16_gemm_copies"] >= 2 * ac["student"]["params"]
                  and 2 * x["teacher_resident_params"] <= x["bytes"]["teacher_weights"] < 4 * x["teacher_resident_params"]
                  + (x["stage"] == "extend")
                  and x["bytes"]["student_grads"] == 4 * x["trainable_params"] for x in ac["stages"]))
        bw = plan_json(*base, "--ranks", "8", "--dtype", "bf16-weights")
        stw = {x["stage"]: x for x in bw["stages"]}
        check("bf16-weights (precision bf16-weights): align and distill fit 8 x 80G as the trainer stores them",
              bw["dtypes"] == "bf16-weights" and stw["align"]["fits"] and stw["distill"]["fits"],
              f"{stw['distill']['total_bytes'] / 2**30:.2f} GiB distill")
        check("bf16-weights: extend at METHOD.md's 16384 x 2 fits (the MLP in chunks of 4096 rows)",
              stw["extend"]["fits"] and stw["extend"]["micro_batch"] == 2 and stw["extend"]["seq_len"] == 16384,
              stw["extend"]["verdict"])
        # the same with the MLP on all 32768 rows at once: its gate/up/act (saved and backward scratch) are
        # 2 x 3 x 32768 x 18944 floats more, less the two 4096-row chunks
        whole = {x["stage"]: x for x in plan_json(*base, "--ranks", "8", "--dtype", "bf16-weights", "--stage",
                                                   "extend", "--seq-len", "16384", "--mlp-rows", "32768")["stages"]}["extend"]
        extra = 2 * 3 * (32768 - 4096) * 18944 * 4
        check("bf16-weights extend with --mlp-rows 32768: activations larger by exactly the MLP's whole-row "
              "tensors, and it does not fit", whole["bytes"]["activations"] - stw["extend"]["bytes"]["activations"]
              == extra and not whole["fits"] and "fits with --micro-batch 1" in whole["verdict"], whole["verdict"])
        w, g = stw["distill"]["bytes"]["student_weights"], stw["distill"]["bytes"]["student_grads"]
        check("bf16-weights distill: every matrix trains, so weights and grads sit between 2 and 4 bytes a parameter, "
              "masters sharded like the moments, almost no GEMM copies",
              2 * bw["student"]["params"] < w < 4 * bw["student"]["params"] and w == g and
              stw["distill"]["bytes"]["master_weights"] == stw["distill"]["bytes"]["adam_m"] and
              stw["distill"]["bytes"]["bf16_gemm_copies"] < 0.05 * w, f"({w} B weights)")
        ac_d = {x["stage"]: x for x in ac["stages"]}["distill"]
        check("bf16-weights distill needs less than autocast's by more than the bf16 matrices' 6 bytes a parameter "
              "less the masters", ac_d["total_bytes"] - stw["distill"]["total_bytes"] > 0.6 * 6 * bw["student"]["params"]
              - stw["distill"]["bytes"]["master_weights"])
        check("bf16 and fp32 policies have no GEMM copies",
              all(x["bytes"]["bf16_gemm_copies"] == 0 for d in (doc8, fp32) for x in d["stages"]))
        on = plan_json(*base, "--ranks", "8", "--stage", "align", "--recompute", "on")["stages"][0]
        off = plan_json(*base, "--ranks", "8", "--stage", "align", "--recompute", "off")["stages"][0]
        check("recompute keeps one layer's wkv checkpoints instead of 28",
              off["bytes"]["wkv_checkpoints"] == 28 * on["bytes"]["wkv_checkpoints"] > 0)
        check("recompute shrinks the activations", on["bytes"]["activations"] < off["bytes"]["activations"])

        print("4b. the workspace holds each stage's CUDA kernel scratch, sized as the launchers ask for it")
        cfg = json.load(open(os.path.join(QWEN25_7B, "config.json")))
        H, G = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        D, F, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
        N = D // H
        mib = 1 << 20

        def rounded(b):
            return -(-b // mib) * mib

        def slots(rows, groups, cap):
            return max(1, min(max(8192 // groups, 1), cap, rows))

        def wkv_rows(bh):  # per-row backward: 16-token segments and the state after, split counts (4 per pair)
            return 4 * (bh * 17 * N * N + 4 * bh)

        def bf16_acc(m, n):  # fp32 block of a bf16 gradient dW[m, n]: 16 Mi floats, a multiple of 64 rows
            fit = (16 << 20) // n
            fit = fit // 64 * 64 if fit >= 64 else max(fit, 1)
            return 4 * min(m, fit) * n

        fixed = (512 + 64 + 384 + 8) * mib
        for x in bw["stages"]:
            B, T = x["micro_batch"], x["seq_len"]
            mats = [(H * N, D), (G * N, D), (D, H * N)]  # the attention projections train in every stage
            if x["stage"] != "align":
                mats += [(F, D), (D, F), (V, D)]  # the MLP and the LM head
            cand = {"the per-row wkv backward's segment states": wkv_rows(B * H),
                    "a bf16 gradient's fp32 accumulation block": max(bf16_acc(m, n) for m, n in mats),
                    "the RAD-RWKV7 mix backward's partial sums": 4 * slots(B * T, G, 256) * 5 * H * N}
            by = max(cand, key=cand.get)
            check(f"bf16-weights {x['stage']} ({B} x {T}): kernel scratch {cand[by] / mib:.1f} MiB rounded up to MiB, "
                  f"{by}", x["kernel_scratch_bytes"] == rounded(cand[by]) and x["kernel_scratch_by"] == by,
                  f"{x['kernel_scratch_bytes'] / mib:.0f} MiB, {x['kernel_scratch_by']}")
            check(f"bf16-weights {x['stage']}: workspace = 968 MiB fixed + kernel scratch",
                  x["bytes"]["workspace"] == fixed + x["kernel_scratch_bytes"])
        check("distill at 512 x 12 holds 336 (b, h) pairs of 17 states of 128 x 128: more than the 64 MiB the plan "
              "once allowed", stw["distill"]["kernel_scratch_bytes"] == rounded(wkv_rows(12 * 28)) > 350 * mib)
        check("the fp32 policy (CPU backend) has no kernel scratch: 64 MiB of BLAS and OpenMP buffers",
              all(x["kernel_scratch_bytes"] == 0 and x["bytes"]["workspace"] == 64 * mib for x in fp32["stages"]))
        six = {x["stage"]: x for x in plan_json("--teacher", QWEN25_7B, "--arch", "rwkv6", "--gpu-mem", "80G",
                                                 "--ranks", "8", "--dtype", "autocast")["stages"]}
        B, T = six["distill"]["micro_batch"], six["distill"]["seq_len"]
        check("RAD-RWKV6 distill, autocast (fp32 gradients: no bf16 accumulation): the wkv6 backward's states",
              six["distill"]["kernel_scratch_bytes"] == rounded(wkv_rows(B * H)) and
              six["distill"]["kernel_scratch_by"] == "the per-row wkv backward's segment states",
              f"{six['distill']['kernel_scratch_bytes'] / mib:.0f} MiB")
        # Qwen2.5-7B's width in 56 heads of 64: the wkv's states shrink by half, the ddlerp's sums stay
        narrow = os.path.join(tmp, "qwen-56-heads")
        os.mkdir(narrow)
        with open(os.path.join(narrow, "config.json"), "w") as f:
            json.dump(dict(cfg, num_attention_heads=56), f)
        small = plan_json("--teacher", narrow, "--arch", "rwkv6", "--gpu-mem", "80G", "--ranks", "8", "--dtype",
                          "autocast", "--stage", "align", "--seq-len", "16", "--micro-batch", "1")["stages"][0]
        rank_shift = max(1, round(D ** 0.5 * 1.8 / 32)) * 32
        ddlerp = 4 * slots(16, -(-D // 256) * 5 * -(-rank_shift // 16) * 4, 64) * 5 * (rank_shift + 1) * D
        wkv64 = 4 * (56 * 17 * 64 * 64 + 4 * 56)
        check("RAD-RWKV6, 56 heads of 64, 1 x 16 tokens: the ddlerp backward's partial sums outgrow the wkv's states",
              small["kernel_scratch_by"] == "the ddlerp backward's partial sums" and ddlerp > wkv64 and
              small["kernel_scratch_bytes"] == rounded(ddlerp),
              f"{small['kernel_scratch_bytes'] / mib:.0f} MiB, {small['kernel_scratch_by']}")

        print("5. bad inputs")
        bad = [
            (["--gpu-mem", "80X"], 2, "--gpu-mem: expected a size like 80G, got '80X'"),
            (["--gpu-mem", "-5G"], 2, "--gpu-mem: expected a size like 80G, got '-5G'"),
            (["--gpu-mem", "80Gx"], 2, "--gpu-mem: expected a size like 80G, got '80Gx'"),
            (["--arch", "mamba"], 2, "--arch 'mamba' is not a student architecture; use rwkv7 or rwkv6"),
            (["--stage", "pretrain"], 2, "--stage expects align, distill, extend or all, got 'pretrain'"),
            (["--zero", "2"], 2, "--zero expects an integer in [0, 1], got '2'"),
            (["--recompute", "maybe"], 2, "--recompute expects auto, on or off, got 'maybe'"),
            (["--ranks", "0"], 2, "--ranks expects an integer in [1, 65536], got '0'"),
            (["--teacher", tmp], 1, "no readable config.json there"),
        ]
        for extra, code, msg in bad:
            args = ["--teacher", QWEN25_7B, "--arch", "rwkv7", "--gpu-mem", "80G"]
            for i in range(0, len(extra), 2):  # replace or append each option
                if extra[i] in args:
                    args[args.index(extra[i]) + 1] = extra[i + 1]
                else:
                    args += extra[i:i + 2]
            r = run([RADLADS, "plan", *args])
            check(f"{' '.join(extra)[:40]}: exit {code} and a clear message",
                  r.returncode == code and msg in r.stderr, (r.stderr.strip().splitlines() or [""])[0][:90])
        r = run([RADLADS, "plan", "--teacher", QWEN25_7B, "--arch", "rwkv7"])
        check("no --gpu-mem: exit 2 naming the required options",
              r.returncode == 2 and "--gpu-mem are required" in r.stderr)
        broken = os.path.join(tmp, "broken")
        os.mkdir(broken)
        with open(os.path.join(broken, "config.json"), "w") as f:
            f.write('{"architectures": ["GPT2LMHeadModel"], "hidden_size": 8}')
        r = run([RADLADS, "plan", "--teacher", broken, "--arch", "rwkv7", "--gpu-mem", "8G"])
        check("unsupported teacher architecture: exit 1 naming it", r.returncode == 1 and "GPT2LMHeadModel" in r.stderr,
              r.stderr.strip()[:90])

    print(f"{'FAIL: ' + ', '.join(failures) if failures else 'all passed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
