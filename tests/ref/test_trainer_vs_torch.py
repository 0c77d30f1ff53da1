"""The training stages of `radlads-worker run` against an independent float64 PyTorch reference.

For a tiny Qwen2-style teacher and its RAD-RWKV7 / RAD-RWKV6 students, a few optimizer steps of
- align (METHOD.md step 1): teacher-forced, loss = mean over (layer, token) of ||y_T - y_S||_2 / sqrt(D),
  only time-mix tensors (q/k/v/o included) train, MLP/norms/embeddings/head unchanged;
- distill (step 2): forward KL(teacher || student) over the vocabulary, every tensor trains, time-mix
  tensors on the lr2 group; and a kl/ce blend;
- extend 3a: only decay / token-shift tensors change;
each with micro-batch accumulation, global-norm clipping that bites, warmup and the quarter-cosine
schedule, are recomputed here: the loss of every step and the final weights must agree. Elements whose
gradient is at fp32 rounding level (below 1e-4 of their tensor's largest, at any step; about 0.5 % of them) are
left out of the weight comparison, and the reference takes the C run's value for them after every step (from its
per-step checkpoints): Adam moves such an element by about ±lr whichever sign rounding gave it, and letting the
two runs differ there by 2·lr would change every other gradient of the next step (with generated text instead of
the corpora this made RAD-RWKV6's extend 3a fail at 2.5e-2).
The samples come from the worker's own trace (--trace-samples), so the data order is its own test
(tests/train covers the sampler)."""
import json
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import st  # noqa: E402
from teacher_ref import Teacher  # noqa: E402
from test_student_transfer import student_logits  # noqa: E402
from test_tmix_vs_torch import rwkv6_tmix, rwkv7_tmix  # noqa: E402

BUILD = os.environ.get("RADLADS_BUILD", "build")
SRC = os.environ.get("RADLADS_SRC", ".")
sys.path.insert(0, os.path.join(SRC, "tests"))
from testdata import english_text  # noqa: E402
RADLADS = os.path.join(BUILD, "cli", "radlads")
WORKER = os.path.join(BUILD, "worker", "radlads-worker")
failures = []


def check(what, ok, detail=""):
    print(f"  {what:78s} {detail} {'ok' if ok else 'FAIL'}")
    if not ok:
        failures.append(what)


def run(*args):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        raise SystemExit(f"command failed: {' '.join(map(str, args))}")
    return r


def lr_at(step, tokens, o):
    """METHOD.md: warmup factor, progress after warmup tokens, quarter cosine / linear / flat."""
    per = o["batch"] * o["seq"]
    total = o["steps"] * per
    wt = o["warmup"] * per if o["warmup"] * per < total else 0
    p = min(1.0, max(0.0, (tokens - wt) / (total - wt)))
    q = p  # lr_wait 0, lr_endpoint 1
    out = []
    for i, f in (o["lr"], o.get("lr2", o["lr"])):
        if o["schedule"] == "cos":
            lr = f + (i - f) * math.cos(math.pi * q / 2)
        elif o["schedule"] == "linear":
            lr = f + (i - f) * (1 - q)
        else:
            lr = i
        if step < o["warmup"]:
            lr *= 0.01 + 0.99 * step / o["warmup"]
        out.append(lr)
    return out


def worker_args(o):
    a = ["--tokens", str(o["steps"] * o["batch"] * o["seq"]), "--seq-len", str(o["seq"]), "--batch", str(o["batch"]),
         "--micro-batch", str(o["micro"]), "--lr", f"{o['lr'][0]}:{o['lr'][1]}", "--schedule", o["schedule"],
         "--warmup", str(o["warmup"]), "--clip", str(o["clip"]), "--trace-samples", "--log-every", "1",
         "--checkpoint-every", "1", "--keep-checkpoints", str(o["steps"])]
    if "lr2" in o:
        a += ["--lr2", f"{o['lr2'][0]}:{o['lr2'][1]}"]
    return a + o.get("extra", [])


def adamw(params, grads, state, lrs, groups, step, clip):
    """torch.optim.AdamW math (beta 0.9/0.95, eps 1e-8, wd 0) after global-norm clipping, float64."""
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    scale = clip / norm if clip > 0 and norm > clip else 1.0
    for k, g in grads.items():
        g = g * scale
        m, v = state.setdefault(k, (torch.zeros_like(g), torch.zeros_like(g)))
        m = 0.9 * m + 0.1 * g
        v = 0.95 * v + 0.05 * g * g
        state[k] = (m, v)
        mh, vh = m / (1 - 0.9 ** step), v / (1 - 0.95 ** step)
        params[k] = params[k] - lrs[groups[k]] * mh / (vh.sqrt() + 1e-8)
    return norm


def metrics(out):
    return [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]


def align_loss(tcfg, tw, scfg, w, names, ids):
    """Teacher-forced alignment loss; the graph reaches only the leaves named in `names`."""
    teacher = Teacher(tcfg, tw)
    cap = []
    with torch.no_grad():
        teacher.forward(ids, capture=cap)
    D, H, G = tcfg["hidden_size"], tcfg["num_attention_heads"], tcfg["num_key_value_heads"]
    L = tcfg["num_hidden_layers"] - scfg["num_attention_layers"]
    total, v_first = 0.0, None
    for l in range(L):
        pre = f"model.layers.{l}.self_attn."
        p = {k[len(pre):]: t for k, t in w.items() if k.startswith(pre)}
        h, yt = cap[l]
        if scfg["model_type"] == "rad-rwkv7":
            ys, vf = rwkv7_tmix(p, h, v_first, scfg["variant"], l, H, G, tcfg["rope_theta"])
            if l == 0:
                v_first = vf
        else:
            ys = rwkv6_tmix(p, h, H, G, tcfg["rope_theta"])
        total = total + ((yt - ys).pow(2).sum(-1).sqrt() / math.sqrt(D)).mean()
    return total / L


def c_weights(out, step, steps):
    """The C run's weights after `step`: its checkpoint of that step, or the final model."""
    d = os.path.join(out, "checkpoints", f"step-{step:08d}")
    return st.read(os.path.join(d if step < steps and os.path.isdir(d) else out, "model.safetensors"))


def reference_run(kind, tcfg, tw, scfg, sw, trainable, o, steps_meta, out):
    w = {k: v.clone() for k, v in sw.items()}
    groups = {k: (1 if ".self_attn." in k else 0) for k in trainable}
    state, losses = {}, []
    # Adam divides by sqrt(v) + eps: an element whose gradient is at fp32 rounding level can take either sign,
    # and near eps (1e-8) its step depends on the gradient's rounding too, so its update is not a property of
    # the code. The fp32 gradients here are within about 1e-5·max|g| of their tensor (sums over every token);
    # elements below 1e-4·max|g| at some step are left out of the weight comparison (and counted).
    conditioned = {k: torch.ones_like(w[k], dtype=torch.bool) for k in trainable}
    for step, rec in enumerate(steps_meta):
        samples = torch.tensor(rec["samples"], dtype=torch.long)
        ids, targets = samples[:, :-1], samples[:, 1:]
        leaves = {k: (v.clone().requires_grad_(True) if k in trainable else v) for k, v in w.items()}
        if kind == "align":
            loss = align_loss(tcfg, tw, scfg, leaves, trainable, ids)
        elif kind == "distill":
            with torch.no_grad():
                lt = Teacher(tcfg, tw).forward(ids)
            ls = student_logits(scfg, leaves, ids)
            V = lt.shape[-1]
            lpt, lps = torch.log_softmax(lt, -1).reshape(-1, V), torch.log_softmax(ls, -1).reshape(-1, V)
            loss = o.get("kl", 1.0) * (lpt.exp() * (lpt - lps)).sum(-1).mean()
            if o.get("ce", 0.0):
                loss = loss + o["ce"] * torch.nn.functional.cross_entropy(ls.reshape(-1, V), targets.reshape(-1))
        else:
            ls = student_logits(scfg, leaves, ids)
            V = ls.shape[-1]
            loss = torch.nn.functional.cross_entropy(ls.reshape(-1, V), targets.reshape(-1))
        loss.backward()
        losses.append(loss.item())
        grads = {k: (leaves[k].grad.detach().clone() if leaves[k].grad is not None else torch.zeros_like(w[k]))
                 for k in trainable}  # r_k is stored but unused: its gradient is 0
        for k, g in grads.items():
            conditioned[k] &= (g == 0) | (g.abs() > 1e-4 * float(g.abs().max()))
        params = {k: w[k] for k in trainable}
        lrs = lr_at(step, step * o["batch"] * o["seq"], o)
        adamw(params, grads, state, lrs, groups, step + 1, o["clip"])
        w.update(params)
        # Adam's first steps move an element by about ±lr whatever its gradient's size, so an element whose
        # gradient is at rounding level takes C's sign or the reference's by chance (a 2·lr difference): left
        # out of the comparison, it also takes C's value here after every step, so that the next step's
        # gradients of every other element are computed at the weights C computed them at.
        cw = c_weights(out, step + 1, len(steps_meta))
        for k in trainable:
            w[k] = torch.where(conditioned[k], w[k], cw[k].to(w[k].dtype))
    return w, losses, conditioned


def compare_run(tag, kind, tcfg, tw, start, out, trainable_pred, o):
    scfg = json.load(open(os.path.join(start, "config.json")))
    sw = st.read_dir(start)
    trainable = [k for k in sw if trainable_pred(k, scfg)]
    meta = metrics(out)
    check(f"{tag}: {len(meta)} steps logged with their samples", len(meta) == o["steps"] and all("samples" in m for m in meta))
    ref_w, ref_losses, cond = reference_run(kind, tcfg, tw, scfg, sw, trainable, o, meta, out)
    err = max(abs(m["loss"] - r) / max(1e-12, abs(r)) for m, r in zip(meta, ref_losses))
    check(f"{tag}: loss of every step equals PyTorch", err <= 2e-5,
          f"C {[round(m['loss'], 6) for m in meta]} rel err {err:.1e} (tol 2e-5)")
    got = st.read_dir(out)
    lr_max = max(o["lr"][0], o.get("lr2", o["lr"])[0])
    frozen_same = all(torch.equal(got[k], sw[k]) for k in sw if k not in trainable)
    check(f"{tag}: tensors outside the trained set are bit-identical", frozen_same)
    moved = sum(1 for k in trainable if not torch.equal(got[k], sw[k]))
    worst, worst_k = 0.0, ""
    skipped = sum(int((~cond[k]).sum()) for k in trainable)
    elements = sum(cond[k].numel() for k in trainable)
    for k in trainable:
        e = float(((got[k] - ref_w[k]).abs() * cond[k]).max()) / (lr_max * o["steps"])
        if e > worst:
            worst, worst_k = e, k
    check(f"{tag}: weights after {o['steps']} AdamW steps equal PyTorch ({moved}/{len(trainable)} tensors moved)",
          worst <= 2e-3 and moved > 0, f"max |dw| / (lr*steps) {worst:.1e} at {worst_k} (tol 2e-3; {skipped} of "
          f"{elements} elements with |g| at rounding level left out)")
    norms_clip = [m["grad_norm"] > o["clip"] for m in meta]
    return norms_clip


def is_time_mix(k, cfg):
    if ".self_attn." not in k:
        return False
    return int(k.split(".")[2]) < cfg["num_hidden_layers"] - cfg["num_attention_layers"]


def main():
    for exe in (RADLADS, WORKER):
        if not os.path.exists(exe):
            print(f"missing {exe}: build first (RADLADS_BUILD={BUILD})")
            return 1
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "text.txt")
        open(text, "wb").write(english_text(40000))
        tok = os.path.join(SRC, "tests", "tokenizer", "fixtures", "gpt2_plain.json")
        run(RADLADS, "tokenize", "--tokenizer", tok, "--in", text, "--out", os.path.join(tmp, "data"), "--no-progress")
        data = os.path.join(tmp, "data.tok")
        teacher = os.path.join(tmp, "teacher")
        run(RADLADS, "init-model", "--arch", "qwen2", "--hidden", "32", "--layers", "3", "--heads", "2", "--kv-heads",
            "1", "--intermediate", "48", "--vocab", "293", "--seed", "4", "--init-std", "0.3", "--randomize-all",
            "--out", teacher)
        tcfg = json.load(open(os.path.join(teacher, "config.json")))
        tw = st.read_dir(teacher)
        base = dict(batch=4, micro=2, seq=12, steps=3, warmup=2, schedule="cos", lr=(2e-2, 2e-3), clip=0.05)
        for tag, targs in [("rad-rwkv7 b", ["--arch", "rad-rwkv7"]), ("rad-rwkv7 a", ["--arch", "rad-rwkv7", "--variant", "a"]),
                           ("rad-rwkv6", ["--arch", "rad-rwkv6"]),
                           ("rad-rwkv7 b hybrid", ["--arch", "rad-rwkv7", "--attention-layers", "1"])]:
            print(tag)
            s0 = os.path.join(tmp, tag.replace(" ", "_") + "_s0")
            run(WORKER, "run", "--stage", "transfer", "--teacher", teacher, "--out", s0, "--seed", "5", *targs)
            # randomise the zero-initialised LoRA halves so that every gradient is alive from step 1
            sw = st.read_dir(s0)
            g = torch.Generator().manual_seed(8)
            for k in sw:
                if k not in tw:
                    sw[k] = sw[k] + (torch.rand(sw[k].shape, generator=g, dtype=torch.float64) * 2 - 1) * 0.3
            st.write(os.path.join(s0, "model.safetensors"), sw)
            a1 = os.path.join(tmp, tag.replace(" ", "_") + "_align")
            o = dict(base)
            run(WORKER, "run", "--stage", "align", "--teacher", teacher, "--student", s0, "--data", data, "--out", a1,
                *worker_args(o))
            clipped = compare_run(f"{tag} align", "align", tcfg, tw, s0, a1, is_time_mix, o)
            check(f"{tag} align: the clip at {o['clip']} was active", any(clipped))
            if tag == "rad-rwkv7 b":
                d1 = os.path.join(tmp, "distill")
                o = dict(base, lr=(5e-3, 5e-3), lr2=(2e-2, 1e-2), schedule="linear", clip=0.5)
                run(WORKER, "run", "--stage", "distill", "--teacher", teacher, "--student", a1, "--data", data,
                    "--out", d1, *worker_args(o))
                compare_run(f"{tag} distill (KL; time-mix on lr2)", "distill", tcfg, tw, a1, d1, lambda k, c: True, o)
                d2 = os.path.join(tmp, "distill_blend")
                o = dict(base, lr=(5e-3, 5e-3), schedule="flat", clip=0.0, kl=0.7, ce=0.3,
                         extra=["--kl-weight", "0.7", "--ce-weight", "0.3"])
                run(WORKER, "run", "--stage", "distill", "--teacher", teacher, "--student", a1, "--data", data,
                    "--out", d2, *worker_args(o))
                compare_run(f"{tag} distill 0.7 KL + 0.3 CE, no clip", "distill", tcfg, tw, a1, d2,
                            lambda k, c: True, o)
            if tag == "rad-rwkv6":
                e1 = os.path.join(tmp, "extend3a")
                o = dict(base, seq=20, lr=(1e-2, 1e-2), schedule="flat", warmup=0, clip=1.0,
                         extra=["--train", "decay_shift"])
                run(WORKER, "run", "--stage", "extend", "--student", a1, "--data", data, "--out", e1, *worker_args(o))
                dec = lambda k, c: any(s in k for s in (".time_decay", ".time_maa_w"))  # noqa: E731
                compare_run(f"{tag} extend 3a (CE, decay and token-shift only)", "extend", tcfg, tw, a1, e1, dec, o)
    print(f"{len(failures)} failures" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
