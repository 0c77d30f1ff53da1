"""PyTorch peer for bench_teacher: the tests' reference teacher (tests/ref/teacher_ref.py) in float32, forward +
cross-entropy + backward on random weights of the given shape. Prints `torch_tokens_per_s X` (median of the
timed steps).

With --serve (how bench_teacher runs it), it warms up, prints `ready`, then runs one timed step per `step` line
read from stdin and answers `step SECONDS`, so the C and PyTorch steps alternate under the same machine load;
`quit` or end of input ends it.

usage: bench_torch.py REF_DIR THREADS HIDDEN LAYERS HEADS KV_HEADS INTERMEDIATE VOCAB BATCH SEQ STEPS [--serve]"""
import statistics
import sys
import time

import torch

sys.path.insert(0, sys.argv[1])
from teacher_ref import Teacher  # noqa: E402


def main():
    threads, D, L, H, G, F, V, B, T, steps = map(int, sys.argv[2:12])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    N = D // H
    cfg = {"architectures": ["Qwen2ForCausalLM"], "hidden_size": D, "num_hidden_layers": L,
           "num_attention_heads": H, "num_key_value_heads": G, "intermediate_size": F, "vocab_size": V,
           "rope_theta": 1e6, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}
    w = {"model.embed_tokens.weight": torch.randn(V, D) * 0.02, "model.norm.weight": torch.ones(D)}
    for l in range(L):
        p = f"model.layers.{l}."
        w[p + "input_layernorm.weight"] = torch.ones(D)
        w[p + "post_attention_layernorm.weight"] = torch.ones(D)
        for n, shape in (("q_proj", (H * N, D)), ("k_proj", (G * N, D)), ("v_proj", (G * N, D))):
            w[p + f"self_attn.{n}.weight"] = torch.randn(shape) * 0.02
            w[p + f"self_attn.{n}.bias"] = torch.zeros(shape[0])
        w[p + "self_attn.o_proj.weight"] = torch.randn(D, H * N) * 0.02
        w[p + "mlp.gate_proj.weight"] = torch.randn(F, D) * 0.02
        w[p + "mlp.up_proj.weight"] = torch.randn(F, D) * 0.02
        w[p + "mlp.down_proj.weight"] = torch.randn(D, F) * 0.02
    model = Teacher(cfg, w, dtype=torch.float32)
    ids = torch.randint(0, V, (B, T))

    def step():
        for p in model.p.values():
            p.grad = None
        t0 = time.perf_counter()
        loss = Teacher.next_token_loss(model.forward(ids), ids)
        loss.backward()
        return time.perf_counter() - t0, loss.item()

    step()  # warm-up
    times = []
    if "--serve" in sys.argv[12:]:
        print("ready", flush=True)
        for line in sys.stdin:
            if line.strip() != "step":
                break
            seconds, loss = step()
            times.append(seconds)
            print(f"step {seconds:.6f}", flush=True)
    else:
        for _ in range(steps):
            seconds, loss = step()
            times.append(seconds)
    if times:
        print(f"torch_tokens_per_s {B * T / statistics.median(times):.1f}")
        print(f"torch_loss {loss:.6f}", flush=True)


if __name__ == "__main__":
    main()
