"""PyTorch reference of Qwen2 / Qwen3 / Llama / Mistral causal LMs, written for the tests.

Reads the same config.json and safetensors tensors as the C code and computes in float64:
  x = embed(ids); per layer: h = RMSNorm(x); x += o_proj(Attn(h)); x += down(silu(gate(n)) * up(n)), n = RMSNorm(x)
  logits = RMSNorm(x) @ W_lm^T
Attention: q/k/v projections (bias per config), Qwen3 per-head RMSNorm on q and k, rotate-half RoPE
(rope_theta, llama3 / linear rope_scaling), causal softmax with GQA via repeat_interleave."""
import math

import torch


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def inv_freq(cfg, head_dim):
    theta = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    rs = cfg.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type", "default"))
    if kind == "linear":
        inv = inv / rs["factor"]
    elif kind == "llama3":
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old / hi) & (wavelen <= old / lo)
        inv = torch.where(medium, smoothed, scaled)
    return inv


def rope(x, cos, sin):  # x [B, T, heads, N]; cos/sin [T, N/2]
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


class Teacher:
    def __init__(self, cfg, weights, dtype=torch.float64):
        self.cfg = cfg
        self.arch = cfg["architectures"][0]
        self.D = cfg["hidden_size"]
        self.H = cfg["num_attention_heads"]
        self.G = cfg.get("num_key_value_heads", self.H)
        self.N = cfg.get("head_dim") or self.D // self.H
        self.L = cfg["num_hidden_layers"]
        self.eps = cfg.get("rms_norm_eps", 1e-6)
        self.tied = cfg.get("tie_word_embeddings", False)
        # every parameter becomes a float64 leaf that collects .grad
        self.dtype = dtype
        self.p = {k: v.clone().to(dtype).requires_grad_(True) for k, v in weights.items()
                  if not (self.tied and k == "lm_head.weight")}

    def _lin(self, x, name, bias=True):
        y = x @ self.p[name + ".weight"].T
        b = self.p.get(name + ".bias")
        return y + b if (bias and b is not None) else y

    def forward(self, ids, capture=None):
        """ids: LongTensor [B, T]. Returns logits [B, T, V] (float64)."""
        B, T = ids.shape
        p = self.p
        x = p["model.embed_tokens.weight"][ids]
        ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq(self.cfg, self.N)[None, :]
        cos, sin = torch.cos(ang).to(self.dtype), torch.sin(ang).to(self.dtype)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        for l in range(self.L):
            pre = f"model.layers.{l}."
            h = rmsnorm(x, p[pre + "input_layernorm.weight"], self.eps)
            q = self._lin(h, pre + "self_attn.q_proj").view(B, T, self.H, self.N)
            k = self._lin(h, pre + "self_attn.k_proj").view(B, T, self.G, self.N)
            v = self._lin(h, pre + "self_attn.v_proj").view(B, T, self.G, self.N)
            if pre + "self_attn.q_norm.weight" in p:
                q = rmsnorm(q, p[pre + "self_attn.q_norm.weight"], self.eps)
                k = rmsnorm(k, p[pre + "self_attn.k_norm.weight"], self.eps)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            rho = self.H // self.G
            k = k.repeat_interleave(rho, dim=2)
            v = v.repeat_interleave(rho, dim=2)
            s = torch.einsum("bihn,bjhn->bhij", q, k) / math.sqrt(self.N)
            s = s.masked_fill(~mask, float("-inf"))
            a = torch.einsum("bhij,bjhn->bihn", torch.softmax(s, dim=-1), v).reshape(B, T, self.H * self.N)
            o = self._lin(a, pre + "self_attn.o_proj")
            if capture is not None:
                capture.append((h, o))
            x = x + o
            n = rmsnorm(x, p[pre + "post_attention_layernorm.weight"], self.eps)
            g = n @ p[pre + "mlp.gate_proj.weight"].T
            u = n @ p[pre + "mlp.up_proj.weight"].T
            x = x + (torch.nn.functional.silu(g) * u) @ p[pre + "mlp.down_proj.weight"].T
        x = rmsnorm(x, p["model.norm.weight"], self.eps)
        lm = p["model.embed_tokens.weight"] if self.tied else p["lm_head.weight"]
        return x @ lm.T

    @staticmethod
    def next_token_loss(logits, ids):
        """Mean cross-entropy of predicting ids[:, t+1] from position t."""
        V = logits.shape[-1]
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
