"""The C RAD-RWKV7 time-mix layer (variants a and b, layer 0 and a later layer) and the RAD-RWKV6 layer
equal independent float64 PyTorch references written from METHOD.md §1–2: the output, v_first, and the
gradient of every parameter, of the input u and of v_first.

Loss: L = Σ y ⊙ dy (+ Σ v_first ⊙ dv_first at layer 0), so dy and dv_first are the incoming gradients.
Random parameters (never zero), GQA 2, RoPE θ = 1e4, batch 2, T = 21 (not a multiple of the wkv chunk).
Qwen3 cases: an explicit head_dim (heads·head_dim = 48 ≠ hidden 32), the teacher's per-head q/k RMSNorm
applied to r and k before RoPE, and an o_proj bias; their gradients are checked with the others."""
import math
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import st  # noqa: E402

BUILD = os.environ.get("RADLADS_BUILD", "build")
DUMP = os.path.join(BUILD, "tests", "model", "tmix_dump")
TOL = {"out": 2e-5, "grad": 1e-4}  # |err| <= tol * max|ref| per tensor (fp32 C vs float64)


def rope(x, theta):  # x [B, T, heads, N], rotate-half over all N, positions 0..T-1
    T, N = x.shape[1], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, N, 2, dtype=torch.float64) / N)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    c, s = torch.cos(ang)[None, :, None, :].to(x.dtype), torch.sin(ang)[None, :, None, :].to(x.dtype)
    x1, x2 = x[..., : N // 2], x[..., N // 2:]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def head_rmsnorm(x, w, eps):  # x [..., N]: Qwen3's q_norm / k_norm over each head
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w


def qk_norms(p, r, k, eps):  # r [B,T,H,N], k [B,T,G,N]; identity without the teacher's norms
    if "q_norm.weight" in p:
        r, k = head_rmsnorm(r, p["q_norm.weight"], eps), head_rmsnorm(k, p["k_norm.weight"], eps)
    return r, k


def proj(p, x, name):  # x·Wᵀ (+ b where the teacher has a bias)
    y = x @ p[name + ".weight"].T
    return y + p[name + ".bias"] if name + ".bias" in p else y


def out_proj(p, x):
    return proj(p, x, "o_proj")


def rwkv7_tmix(p, u, v_first, variant, layer, H, G, theta, eps=1e-6):
    """METHOD.md §1, written as plainly as possible; recurrence per token with an explicit state.
    u is [B, T, D]; r, the LoRA outputs and the state read-out are A = H·N wide (A ≠ D for an explicit
    head_dim); q/k norms (Qwen3) sit between the projections and RoPE, as in the teacher."""
    B, T, D = u.shape
    A = p["q_proj.weight"].shape[0]
    N = A // H
    r, k, vp = proj(p, u, "q_proj"), proj(p, u, "k_proj"), proj(p, u, "v_proj")
    d = p["w0"] + torch.tanh(u @ p["w1"]) @ p["w2"]
    a = torch.sigmoid(p["a0"] + (u @ p["a1"]) @ p["a2"])
    g = torch.sigmoid(u @ p["g1"]) @ p["g2"]
    r, k = qk_norms(p, r.view(B, T, H, N), k.view(B, T, G, N), eps)
    r = rope(r, theta)
    k = rope(k, theta)
    k = k.repeat_interleave(H // G, dim=2)
    vp = vp.view(B, T, G, N).repeat_interleave(H // G, dim=2)
    logw = -math.exp(-0.5) * torch.sigmoid(d)
    w = torch.exp(logw).view(B, T, H, N)
    a = a.view(B, T, H, N)
    if variant == "a":
        kap = torch.nn.functional.normalize(k * p["k_k"].view(H, N), dim=-1, eps=1e-12)
        kt = k * (1 + (a - 1) * p["k_a"].view(H, N))
    else:
        kap = k / (k.norm(dim=-1, keepdim=True) + 1e-12)
        kt = k * (1 - w + a)
    if layer == 0:
        v = vp
        v_first = v.reshape(B, T, A)
    else:
        nu = torch.sigmoid(p["v0"] + (u @ p["v1"]) @ p["v2"]).view(B, T, H, N)
        v = vp + (v_first.view(B, T, H, N) - vp) * nu
    S = torch.zeros(B, H, N, N, dtype=u.dtype)  # S[b, h, value i, key j]
    outs = []
    for t in range(T):
        S = (S * w[:, t, :, None, :]
             - (S @ kap[:, t, :, :, None]) @ (kap[:, t] * a[:, t])[:, :, None, :]
             + v[:, t, :, :, None] * kt[:, t, :, None, :])
        outs.append((S @ r[:, t, :, :, None]).squeeze(-1))
    o = torch.stack(outs, dim=1)  # [B, T, H, N]
    if variant == "a":
        mu = o.mean(-1, keepdim=True)
        var = ((o - mu) ** 2).mean(-1, keepdim=True)
        pp = ((o - mu) / torch.sqrt(var + N * 1e-5)).reshape(B, T, A) * p["ln_x.weight"] + p["ln_x.bias"]
    else:
        pp = (o / math.sqrt(N)).reshape(B, T, A)
    y = out_proj(p, pp * g)
    return y, v_first


def rwkv6_tmix(p, u, H, G, theta, use_rope=False, eps=1e-6):
    """METHOD.md §2 (GLA form, no bonus), per-token recurrence with S[key j, value i] as METHOD writes it.
    Token shift over D = hidden; q, decay, gate and o are A = H·N wide; Qwen3's q/k norms before RoPE."""
    B, T, D = u.shape
    A = p["q_proj.weight"].shape[0]
    N = A // H
    prev = torch.cat([torch.zeros(B, 1, D, dtype=u.dtype), u[:, :-1]], dim=1)
    delta = prev - u
    s = torch.tanh((u + delta * p["time_maa_x"]) @ p["time_maa_w1"]).view(B, T, 5, -1)
    xs = []
    for c, name in enumerate("rkvwg"):
        m = s[:, :, c] @ p["time_maa_w2"][c]
        xs.append(u + delta * (p["time_maa_" + name] + m))
    xr, xk, xv, xw, xg = xs
    q = proj(p, xr, "q_proj").view(B, T, H, N)
    k = proj(p, xk, "k_proj").view(B, T, G, N)
    v = proj(p, xv, "v_proj").view(B, T, G, N)
    d = p["time_decay"] + torch.tanh(xw @ p["time_decay_w1"]) @ p["time_decay_w2"]
    g = torch.sigmoid(xg @ p["gate.weight"].T)
    q, k = qk_norms(p, q, k, eps)
    if use_rope:
        q, k = rope(q, theta), rope(k, theta)
    k = k.repeat_interleave(H // G, dim=2)
    v = v.repeat_interleave(H // G, dim=2)
    logw = torch.clamp(-torch.exp(d), min=-5.0).view(B, T, H, N)
    w = torch.exp(logw)
    k = k * (1 - w)
    S = torch.zeros(B, H, N, N, dtype=u.dtype)  # S[b, h, key, value]
    outs = []
    for t in range(T):
        S = w[:, t, :, :, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(((q[:, t] / math.sqrt(N))[:, :, None, :] @ S).squeeze(-2))
    o = torch.stack(outs, dim=1).reshape(B, T, A)
    return out_proj(p, o * g)


def qwen3_params(p, D, N, rnd):
    """Qwen3 extras: the teacher's q/k norms (near 1) and an o_proj bias."""
    p.update({"q_norm.weight": 1.0 + rnd(N, scale=0.3), "k_norm.weight": 1.0 + rnd(N, scale=0.3),
              "o_proj.bias": rnd(D, scale=0.2)})


def make_params6(D, H, G, gen, N=None):
    N = N or D // H
    A, KD = H * N, G * N
    rs, rd = 4, 8

    def rnd(*shape, scale=1.0):
        return (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale

    p = {"q_proj.weight": rnd(A, D, scale=0.3), "q_proj.bias": rnd(A, scale=0.2),
         "k_proj.weight": rnd(KD, D, scale=0.3), "k_proj.bias": rnd(KD, scale=0.2),
         "v_proj.weight": rnd(KD, D, scale=0.3), "v_proj.bias": rnd(KD, scale=0.2),
         "o_proj.weight": rnd(D, A, scale=0.3),
         "time_maa_x": 0.5 + rnd(D, scale=0.4),
         "time_maa_w1": rnd(D, 5 * rs, scale=0.5), "time_maa_w2": rnd(5, rs, D, scale=0.5),
         # decays over their whole range: e^(λ+lora) from ~e^-4 to past the −5 clamp
         "time_decay": rnd(A, scale=3.0), "time_decay_w1": rnd(D, rd, scale=0.3),
         "time_decay_w2": rnd(rd, A, scale=0.5), "gate.weight": rnd(A, D, scale=0.5)}
    for name in "rkvwg":
        p["time_maa_" + name] = rnd(D, scale=0.8)
    if N != D // H:
        qwen3_params(p, D, N, rnd)
    return {k: v.float().double() for k, v in p.items()}


def run_case6(tag, tmp, failures, N=None):
    B, T, D, H, G, theta = 2, 19, 32, 4, 2, 1e4
    gen = torch.Generator().manual_seed(4242 + (N or 0))
    p = make_params6(D, H, G, gen, N)
    N = N or D // H
    u = ((torch.rand(B, T, D, generator=gen, dtype=torch.float64) * 2 - 1)).float().double()
    dy = ((torch.rand(B, T, D, generator=gen, dtype=torch.float64) * 2 - 1)).float().double()
    tensors = dict(p)
    tensors["u"], tensors["dy"] = u.reshape(B * T, D), dy.reshape(B * T, D)
    tensors["dv_first"] = torch.zeros(B * T, H * N, dtype=torch.float64)
    fin, fout = os.path.join(tmp, tag + ".in.safetensors"), os.path.join(tmp, tag + ".out.safetensors")
    st.write(fin, tensors)
    subprocess.run([DUMP, "--in", fin, "--out", fout, "--arch", "6", "--layer", "0", "--batch", str(B),
                    "--heads", str(H), "--kv-heads", str(G), "--head-dim", str(N), "--no-rope"], check=True)
    c = st.read(fout)
    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    u_ = u.clone().requires_grad_(True)
    y = rwkv6_tmix(leaves, u_, H, G, theta)
    (y * dy).sum().backward()
    compare(tag, "y", c["y"], y, "out", failures)
    compare(tag, "grad u", c["grad.u"], u_.grad, "grad", failures)
    for k, v in leaves.items():
        if "grad." + k not in c:
            print(f"  {tag}: C wrote no gradient for {k}")
            failures.append(f"{tag} missing grad {k}")
            continue
        compare(tag, "grad " + k, c["grad." + k], v.grad, "grad", failures)


def compare(tag, name, got, ref, kind, failures):
    ref = ref.detach().reshape(got.shape)
    err = (got - ref).abs().max().item()
    scale = ref.abs().max().item()
    ok = err <= TOL[kind] * scale + 1e-7
    print(f"  {tag:22s} {name:22s} max_abs={err:.3e} max_rel={err / max(scale, 1e-30):.3e} "
          f"(|ref|max {scale:.2e}, tol {TOL[kind]:.0e}) {'ok' if ok else 'FAIL'}")
    if not ok:
        failures.append(f"{tag} {name}")


def make_params(D, H, G, variant, layer, gen, N=None):
    N = N or D // H
    A, KD = H * N, G * N
    rd, ra, rv, rg = 8, 8, 6, 12

    def rnd(*shape, scale=1.0):
        return (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale

    p = {"q_proj.weight": rnd(A, D, scale=0.3), "q_proj.bias": rnd(A, scale=0.2),
         "k_proj.weight": rnd(KD, D, scale=0.3), "k_proj.bias": rnd(KD, scale=0.2),
         "v_proj.weight": rnd(KD, D, scale=0.3), "v_proj.bias": rnd(KD, scale=0.2),
         "o_proj.weight": rnd(D, A, scale=0.3),
         "w0": rnd(A, scale=3.0), "w1": rnd(D, rd, scale=0.3), "w2": rnd(rd, A, scale=0.5),
         "a0": rnd(A), "a1": rnd(D, ra, scale=0.3), "a2": rnd(ra, A, scale=0.5),
         "g1": rnd(D, rg, scale=0.3), "g2": rnd(rg, A, scale=0.5)}
    if layer > 0:
        p.update({"v0": rnd(A), "v1": rnd(D, rv, scale=0.3), "v2": rnd(rv, A, scale=0.5)})
    if variant == "a":
        p.update({"k_k": 0.85 + rnd(A, scale=0.3), "k_a": 1.0 + rnd(A, scale=0.3),
                  "ln_x.weight": 1.0 + rnd(A, scale=0.3), "ln_x.bias": rnd(A, scale=0.2)})
    if N != D // H:
        qwen3_params(p, D, N, rnd)
    # round to float32 so both sides see the same numbers
    return {k: v.float().double() for k, v in p.items()}


def run_case(tag, variant, layer, tmp, failures, N=None):
    B, T, D, H, G, theta = 2, 21, 32, 4, 2, 1e4
    gen = torch.Generator().manual_seed(1234 + layer * 10 + ord(variant) + (N or 0))
    p = make_params(D, H, G, variant, layer, gen, N)
    N = N or D // H
    u = ((torch.rand(B, T, D, generator=gen, dtype=torch.float64) * 2 - 1)).float().double()
    dy = ((torch.rand(B, T, D, generator=gen, dtype=torch.float64) * 2 - 1)).float().double()
    extra = ((torch.rand(B, T, H * N, generator=gen, dtype=torch.float64) * 2 - 1)).float().double()
    tensors = dict(p)
    tensors["u"], tensors["dy"] = u.reshape(B * T, D), dy.reshape(B * T, D)
    tensors["v_first" if layer else "dv_first"] = extra.reshape(B * T, H * N)
    fin, fout = os.path.join(tmp, tag + ".in.safetensors"), os.path.join(tmp, tag + ".out.safetensors")
    st.write(fin, tensors)
    subprocess.run([DUMP, "--in", fin, "--out", fout, "--arch", "7", "--variant", variant, "--layer", str(layer),
                    "--batch", str(B), "--heads", str(H), "--kv-heads", str(G), "--head-dim", str(N),
                    "--rope-theta", str(theta)], check=True)
    c = st.read(fout)
    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    u_ = u.clone().requires_grad_(True)
    vf_in = extra.clone().requires_grad_(True) if layer else None
    y, vf = rwkv7_tmix(leaves, u_, vf_in, variant, layer, H, G, theta)
    loss = (y * dy).sum()
    if layer == 0:
        loss = loss + (vf * extra).sum()
    loss.backward()

    compare(tag, "y", c["y"], y, "out", failures)
    if layer == 0:
        compare(tag, "v_first", c["v_first"], vf, "out", failures)
    else:
        compare(tag, "grad v_first", c["grad.v_first"], vf_in.grad, "grad", failures)
    compare(tag, "grad u", c["grad.u"], u_.grad, "grad", failures)
    for k, v in leaves.items():
        if "grad." + k not in c:
            print(f"  {tag}: C wrote no gradient for {k}")
            failures.append(f"{tag} missing grad {k}")
            continue
        compare(tag, "grad " + k, c["grad." + k], v.grad, "grad", failures)


def main():
    if not os.path.exists(DUMP):
        print(f"missing {DUMP}: build first (RADLADS_BUILD={BUILD})")
        return 1
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("a", "b"):
            for layer in (0, 1):
                run_case(f"rwkv7{variant}_layer{layer}", variant, layer, tmp, failures)
        run_case6("rwkv6", tmp, failures)
        # Qwen3 teachers: head_dim 12 (A = 48 ≠ D = 32), q/k norms, o_proj bias
        for variant in ("a", "b"):
            for layer in (0, 1):
                run_case(f"rwkv7{variant}_qwen3_layer{layer}", variant, layer, tmp, failures, N=12)
        run_case6("rwkv6_qwen3", tmp, failures, N=12)
    print("FAIL: " + ", ".join(failures) if failures else "PASS: C RAD-RWKV7/6 time-mix equals the PyTorch reference")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
