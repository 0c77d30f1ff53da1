"""PyTorch peer for bench_wkv's RAD-RWKV7 layer step: the same layer (variant b, layer 1, D=512, H=8, G=2,
N=64, T=512) as tests/ref/test_tmix_vs_torch.py's reference, in float32, forward + backward, on N threads.

    /usr/bin/python3 bench/kernels/bench_tmix_torch.py [threads]"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "ref"))
import torch  # noqa: E402

from test_tmix_vs_torch import rwkv7_tmix  # noqa: E402

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
D, H, G, N, T = 512, 8, 2, 64, 512
KD = G * N
r = {"decay": 32, "a": 32, "v": 32, "g": 96}
g = torch.Generator().manual_seed(0)


def rnd(*s):
    return ((torch.rand(*s, generator=g) * 2 - 1) * 0.05).requires_grad_(True)


p = {"q_proj.weight": rnd(D, D), "q_proj.bias": rnd(D), "k_proj.weight": rnd(KD, D), "k_proj.bias": rnd(KD),
     "v_proj.weight": rnd(KD, D), "v_proj.bias": rnd(KD), "o_proj.weight": rnd(D, D), "w0": rnd(D),
     "w1": rnd(D, r["decay"]), "w2": rnd(r["decay"], D), "a0": rnd(D), "a1": rnd(D, r["a"]), "a2": rnd(r["a"], D),
     "v0": rnd(D), "v1": rnd(D, r["v"]), "v2": rnd(r["v"], D), "g1": rnd(D, r["g"]), "g2": rnd(r["g"], D)}
u = rnd(1, T, D)
vf = rnd(1, T, D)
dy = torch.rand(1, T, D, generator=g)
times = []
for _ in range(5):
    t0 = time.perf_counter()
    y, _ = rwkv7_tmix(p, u, vf, "b", 1, H, G, 1e4)
    (y * dy).sum().backward()
    times.append(time.perf_counter() - t0)
times.sort()
print(f"PyTorch {torch.__version__} RAD-RWKV7 layer (b) fwd+bwd, D={D} H={H} G={G} N={N} T={T}, {threads} threads: "
      f"{times[2] * 1e3:.1f} ms (median of 5), {T / times[2]:.0f} tokens/s")
