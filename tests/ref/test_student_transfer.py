"""Weight transfer (`radlads-worker run --stage transfer`) and the student folder it writes.

- Every teacher tensor (q/k/v/o, embeddings, norms, MLPs, head) is copied exactly.
- config.json records arch, variant, ranks (rank rule), head size, RoPE use and the hybrid layer count.
- New tensors follow METHOD.md's init formulas: RAD-RWKV7 w0 curve, zeros, v0 = 1, k_k = 0.85, k_a = 1,
  orthogonal ×0.1 LoRA outputs; RAD-RWKV6 decay curve, time_maa_x = 1, the other maa and time_maa_w1 zero
  (so every x_c = u: token shift is a no-op at init), U(−0.01, 0.01) second LoRA stages; same seed, same bytes.
- `radlads score` on the student folder equals a float64 PyTorch student (teacher_ref's blocks with the
  time-mix references of test_tmix_vs_torch.py), at init and with every new tensor randomised; hybrid too.
- Recurrent inference (parallel prompt, then O(1) state steps) equals the parallel forward over 1,000 tokens;
  for a hybrid the softmax-attention layers step from a KV cache (single tokens, and 333-token pieces whose
  absolute positions are not block-aligned).
- Qwen3 teachers (explicit head_dim with heads·head_dim ≠ hidden, per-head q/k RMSNorm, o_proj bias from
  attention_bias): q_norm/k_norm/o_proj.bias are copied under the teacher's names, the per-channel tensors are
  heads·head_dim wide, and the student applies the norms and the bias exactly where the teacher does.
- Bad input: unknown variant, a config.json head size that disagrees with head_dim, LoRA shapes that disagree
  with config.json → clear errors."""
import json
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import st  # noqa: E402
from teacher_ref import inv_freq, rmsnorm  # noqa: E402
from test_tmix_vs_torch import proj, qk_norms, rwkv6_tmix, rwkv7_tmix  # noqa: E402

BUILD = os.environ.get("RADLADS_BUILD", "build")
RADLADS = os.path.join(BUILD, "cli", "radlads")
WORKER = os.path.join(BUILD, "worker", "radlads-worker")
STEPPER = os.path.join(BUILD, "tests", "worker", "student_recurrent_check")
failures = []


def check(what, ok, detail=""):
    print(f"  {what:70s} {detail} {'ok' if ok else 'FAIL'}")
    if not ok:
        failures.append(what)


def rank(D, e, m):
    return max(1, round(D ** e * m / 32)) * 32


def student_logits(cfg, w, ids):
    """float64 student forward: teacher blocks, time-mix in layers below the hybrid ones."""
    D, H, G, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["num_hidden_layers"]
    N = cfg["head_dim"]
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    n_attn = cfg["num_attention_layers"]
    B, T = ids.shape
    x = w["model.embed_tokens.weight"][ids]
    v_first = None
    for l in range(L):
        pre = f"model.layers.{l}."
        h = rmsnorm(x, w[pre + "input_layernorm.weight"], eps)
        p = {k[len(pre) + 10:]: t for k, t in w.items() if k.startswith(pre + "self_attn.")}
        if l >= L - n_attn:  # softmax attention, as the teacher
            q, k = qk_norms(p, proj(p, h, "q_proj").view(B, T, H, N), proj(p, h, "k_proj").view(B, T, G, N), eps)
            v = proj(p, h, "v_proj").view(B, T, G, N)
            ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq(cfg, N)[None, :]
            c, s = torch.cos(ang)[None, :, None, :], torch.sin(ang)[None, :, None, :]
            rot = lambda z: torch.cat([z[..., :N // 2] * c - z[..., N // 2:] * s, z[..., N // 2:] * c + z[..., :N // 2] * s], -1)  # noqa: E731
            q, k = rot(q), rot(k).repeat_interleave(H // G, 2)
            v = v.repeat_interleave(H // G, 2)
            sc = torch.einsum("bihn,bjhn->bhij", q, k) / math.sqrt(N)
            sc = sc.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
            o = torch.einsum("bhij,bjhn->bihn", torch.softmax(sc, -1), v).reshape(B, T, H * N)
            y = proj(p, o, "o_proj")
        else:
            if cfg["model_type"] == "rad-rwkv7":
                y, vf = rwkv7_tmix(p, h, v_first, cfg["variant"], l, H, G, theta, eps)
                if l == 0:
                    v_first = vf
            else:
                y = rwkv6_tmix(p, h, H, G, theta, eps=eps)
        x = x + y
        n = rmsnorm(x, w[pre + "post_attention_layernorm.weight"], eps)
        x = x + (torch.nn.functional.silu(n @ w[pre + "mlp.gate_proj.weight"].T) * (n @ w[pre + "mlp.up_proj.weight"].T)) @ w[pre + "mlp.down_proj.weight"].T
    x = rmsnorm(x, w["model.norm.weight"], eps)
    return x @ w["lm_head.weight"].T


def score(folder, ids):
    out = subprocess.run([RADLADS, "score", "--model", folder, "--json", "--ids", ",".join(map(str, ids))],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["mean_cross_entropy"]


def check_score(tag, folder, ids):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    w = st.read_dir(folder)
    t = torch.tensor([ids])
    logits = student_logits(cfg, w, t)
    ref = torch.nn.functional.cross_entropy(logits[0, :-1], t[0, 1:]).item()
    got = score(folder, ids)
    check(f"{tag}: radlads score equals the PyTorch student", abs(got - ref) <= 2e-5 * max(1, abs(ref)),
          f"C {got:.7f} torch {ref:.7f} err {abs(got - ref):.2e} (tol 2e-5)")


def transfer(teacher, out, *args, ok=True):
    r = subprocess.run([WORKER, "run", "--stage", "transfer", "--teacher", teacher, "--out", out, *args],
                       capture_output=True, text=True)
    if ok and r.returncode != 0:
        print(r.stderr)
    return r


def main():
    for exe in (RADLADS, WORKER):
        if not os.path.exists(exe):
            print(f"missing {exe}: build first (RADLADS_BUILD={BUILD})")
            return 1
    gen = torch.Generator().manual_seed(11)
    with tempfile.TemporaryDirectory() as tmp:
        teacher = os.path.join(tmp, "teacher")
        subprocess.run([RADLADS, "init-model", "--arch", "qwen2", "--hidden", "64", "--layers", "3", "--heads", "4",
                        "--kv-heads", "2", "--intermediate", "96", "--vocab", "61", "--seed", "2", "--init-std",
                        "0.2", "--randomize-all", "--out", teacher], check=True, stdout=subprocess.DEVNULL)
        # Qwen3: head_dim 24 (heads·head_dim = 96 ≠ hidden 64), q/k norms, attention_bias → q/k/v/o biases
        qwen3 = os.path.join(tmp, "qwen3")
        subprocess.run([RADLADS, "init-model", "--arch", "qwen3", "--hidden", "64", "--layers", "3", "--heads", "4",
                        "--kv-heads", "2", "--head-dim", "24", "--intermediate", "96", "--vocab", "61", "--seed", "3",
                        "--init-std", "0.2", "--randomize-all", "--attention-bias", "--untie", "--out", qwen3],
                       check=True, stdout=subprocess.DEVNULL)
        D, L = 64, 3
        ids = torch.randint(0, 61, (17,), generator=gen).tolist()
        for tag, args in [("rad-rwkv7 a", ["--arch", "rad-rwkv7", "--variant", "a"]),
                          ("rad-rwkv7 b", ["--arch", "rad-rwkv7"]),
                          ("rad-rwkv6", ["--arch", "rad-rwkv6"]),
                          ("rad-rwkv7 b hybrid 1", ["--arch", "rad-rwkv7", "--attention-layers", "1"]),
                          ("qwen3 rad-rwkv7 a", ["--arch", "rad-rwkv7", "--variant", "a"]),
                          ("qwen3 rad-rwkv7 b", ["--arch", "rad-rwkv7"]),
                          ("qwen3 rad-rwkv6", ["--arch", "rad-rwkv6"]),
                          ("qwen3 rad-rwkv7 b hybrid 1", ["--arch", "rad-rwkv7", "--attention-layers", "1"])]:
            print(tag)
            src = qwen3 if tag.startswith("qwen3") else teacher
            tw = st.read_dir(src)
            N = 24 if src == qwen3 else 16
            A = 4 * N
            out = os.path.join(tmp, tag.replace(" ", "_"))
            r = transfer(src, out, *args, "--seed", "9")
            check(f"{tag}: transfer exits 0", r.returncode == 0)
            sw = st.read_dir(out)
            cfg = json.load(open(os.path.join(out, "config.json")))
            same = all(k in sw and torch.equal(sw[k], v) for k, v in tw.items())
            check(f"{tag}: every teacher tensor (q/k/v/o, MLP, norms, head) copied exactly", same)
            seven = cfg["model_type"] == "rad-rwkv7"
            if src == qwen3:
                check(f"{tag}: q_norm, k_norm and o_proj.bias kept under the teacher's names",
                      all(f"model.layers.{l}.self_attn.{z}" in sw for l in range(L)
                          for z in ("q_norm.weight", "k_norm.weight", "o_proj.bias")))
            check(f"{tag}: config records arch, variant, ranks, head size, hybrid layers",
                  cfg["model_type"] == args[1] and cfg["head_size"] == N and cfg["decay_low_rank_dim"] == rank(D, .5, 1.8)
                  and cfg["num_attention_layers"] == (1 if "hybrid" in tag else 0)
                  and (not seven or (cfg["variant"] == ("a" if " a" in tag else "b") and cfg["a_low_rank_dim"] == rank(D, .5, 1.8)
                                     and cfg["v_low_rank_dim"] == rank(D, .5, 1.3) and cfg["gate_low_rank_dim"] == rank(D, .8, .6)))
                  and (seven or cfg["tokenshift_low_rank_dim"] == rank(D, .5, 1.8)))
            n_mix = L - cfg["num_attention_layers"]
            check(f"{tag}: no time-mix tensors in the attention layers",
                  not any(k.startswith(f"model.layers.{l}.self_attn.") and k.split("self_attn.")[1].split(".")[0]
                          not in ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm") for k in sw for l in range(n_mix, L)))
            for l in range(n_mix):
                p = f"model.layers.{l}.self_attn."
                n = torch.arange(A, dtype=torch.float64) / (A - 1)  # per-channel curves run over heads·head_dim
                if seven:
                    w0 = -7 + 5 * n ** (0.85 + math.sqrt(l / (L - 1))) + 0.5
                    ok = (sw[p + "w0"] - w0).abs().max() < 1e-6
                    ok &= all((sw[p + z] == 0).all() for z in ("w1", "a0", "a1", "v1", "g1", "r_k"))
                    ok &= bool((sw[p + "v0"] == 1).all())
                    for z in ("w2", "a2", "v2", "g2"):  # [r, A], r < A: orthonormal rows × 0.1
                        m = sw[p + z]
                        ok &= bool((m @ m.T - 0.01 * torch.eye(m.shape[0], dtype=torch.float64)).abs().max() < 1e-6)
                    if cfg["variant"] == "a":
                        ok &= bool((sw[p + "k_k"] == torch.tensor(0.85, dtype=torch.float32).double()).all())
                        ok &= bool((sw[p + "k_a"] == 1).all() and (sw[p + "ln_x.weight"] == 1).all()
                                   and (sw[p + "ln_x.bias"] == 0).all())
                    else:
                        ok &= (p + "k_k") not in sw and (p + "ln_x.weight") not in sw
                    check(f"{tag}: layer {l} init: w0 curve, zeros, v0=1, orthogonal×0.1 (W·Wᵀ = 0.01·I)", ok)
                else:
                    lam = -6 + 5 * n ** (0.7 + 1.3 * l / (L - 1))
                    ok = (sw[p + "time_decay"] - lam).abs().max() < 1e-6
                    ok &= bool((sw[p + "time_maa_x"] == 1).all())
                    ok &= all(bool((sw[p + "time_maa_" + c] == 0).all()) for c in "rkvwg")
                    ok &= bool((sw[p + "time_maa_w1"] == 0).all() and (sw[p + "time_decay_w1"] == 0).all()
                               and (sw[p + "gate.weight"] == 0).all())
                    for z in ("time_maa_w2", "time_decay_w2"):
                        ok &= bool(sw[p + z].abs().max() <= 0.01 and sw[p + z].abs().max() > 0.005)
                    check(f"{tag}: layer {l} init: decay curve, maa_x=1, other maa and maa_w1 zero, U(±0.01)", ok)
                    # token shift at init: s = tanh(xx·0) = 0, so x_c = u + δ⊙(0 + 0) = u for every c
                    u = torch.randn(1, 5, D, generator=gen, dtype=torch.float64)
                    prev = torch.cat([torch.zeros(1, 1, D, dtype=torch.float64), u[:, :-1]], 1)
                    s = torch.tanh((u + (prev - u) * sw[p + "time_maa_x"]) @ sw[p + "time_maa_w1"]).view(1, 5, 5, -1)
                    xs = [u + (prev - u) * (sw[p + "time_maa_" + c] + s[:, :, i] @ sw[p + "time_maa_w2"][i])
                          for i, c in enumerate("rkvwg")]
                    check(f"{tag}: layer {l} token shift is a no-op at init (x_c = u)",
                          all(torch.equal(x, u) for x in xs))
            check_score(tag + " at init", out, ids)
            # randomise every new tensor (nonzero everywhere) and score again
            for k in sw:
                if k not in tw:
                    sw[k] = (torch.rand(sw[k].shape, generator=gen, dtype=torch.float64) * 2 - 1) * 0.5 + sw[k]
            st.write(os.path.join(out, "model.safetensors"), sw)
            check_score(tag + " randomised", out, ids)
            r = subprocess.run([STEPPER, "--model", out, "--tokens", "1000", "--prompt", "300"],
                               capture_output=True, text=True)
            print(r.stdout.rstrip(), r.stderr.rstrip())
            check(f"{tag} randomised: prompt + 700 single steps equal the parallel forward over 1000 tokens",
                  r.returncode == 0)
            if "hybrid" in tag:
                r = subprocess.run([STEPPER, "--model", out, "--tokens", "1000", "--prompt", "1", "--step", "333"],
                                   capture_output=True, text=True)
                print(r.stdout.rstrip(), r.stderr.rstrip())
                check(f"{tag} randomised: 1 token + 333-token pieces from the KV cache equal the parallel forward",
                      r.returncode == 0)
        again = os.path.join(tmp, "again")
        transfer(teacher, again, "--arch", "rad-rwkv7", "--seed", "9")
        a1 = open(os.path.join(again, "model.safetensors"), "rb").read()
        transfer(teacher, again, "--arch", "rad-rwkv7", "--seed", "9")
        check("transfer is deterministic for a seed", open(os.path.join(again, "model.safetensors"), "rb").read() == a1)
        transfer(teacher, again, "--arch", "rad-rwkv7", "--seed", "10")
        check("another seed gives other orthogonal matrices",
              open(os.path.join(again, "model.safetensors"), "rb").read() != a1)
        print("bad input")
        r = transfer(teacher, os.path.join(tmp, "x"), "--arch", "rad-rwkv7", "--variant", "c", ok=False)
        check("an unknown variant is refused, naming the known ones", r.returncode == 2 and "variant" in r.stderr
              and "a (" in r.stderr, r.stderr.strip()[:80])
        r = transfer(teacher, os.path.join(tmp, "x"), "--arch", "rad-rwkv5", ok=False)
        check("an unknown arch is refused", r.returncode == 2 and "rad-rwkv7" in r.stderr)
        odd = os.path.join(tmp, "odd")
        subprocess.run([RADLADS, "init-model", "--arch", "llama", "--hidden", "64", "--layers", "1", "--heads", "4",
                        "--kv-heads", "2", "--head-dim", "12", "--vocab", "31", "--out", odd], check=True,
                       stdout=subprocess.DEVNULL)
        r = transfer(odd, os.path.join(tmp, "odd_student"), "--arch", "rad-rwkv7", "--seed", "4")
        check("an explicit head_dim (4×12 = 48 ≠ hidden 64, Llama, no biases) transfers", r.returncode == 0)
        check_score("llama head_dim 12", os.path.join(tmp, "odd_student"), [i % 31 for i in ids])
        wrong = os.path.join(tmp, "odd_student", "config.json")
        cfg = json.load(open(wrong))
        cfg["head_size"] = 16
        json.dump(cfg, open(wrong, "w"))
        r = subprocess.run([RADLADS, "score", "--model", os.path.join(tmp, "odd_student"), "--ids", "1,2,3"],
                           capture_output=True, text=True)
        check("a config.json head_size that disagrees with head_dim is refused", r.returncode == 1
              and "head_size=16" in r.stderr and "head_dim=12" in r.stderr, r.stderr.strip()[:100])
        bad = os.path.join(tmp, "rad-rwkv7_b")
        cfg = json.load(open(os.path.join(bad, "config.json")))
        cfg["decay_low_rank_dim"] = 64
        json.dump(cfg, open(os.path.join(bad, "config.json"), "w"))
        r = subprocess.run([RADLADS, "score", "--model", bad, "--ids", "1,2,3"], capture_output=True, text=True)
        check("LoRA shapes that disagree with config.json are refused", r.returncode == 1 and "shape" in r.stderr
              and "w1" in r.stderr, r.stderr.strip()[:100])
    print("FAIL: " + ", ".join(failures) if failures else "PASS")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
