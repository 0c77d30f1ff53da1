"""The C teacher (forward, loss, every parameter gradient, captured attention input/output) equals an
independent float64 PyTorch reference on tiny random models written by `radlads init-model`.

Variants: Qwen2 (qkv bias, GQA 2, rope_theta 1e6, untied and tied), Qwen3 (q/k norm, explicit head_dim
!= hidden/heads, GQA 3, with and without attention_bias), Llama (Llama-3 rope_scaling, GQA 2, tied),
Mistral (MHA). Batch 2, chunked LM head with a chunk that does not divide the rows."""
import json
import os
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import st  # noqa: E402
from teacher_ref import Teacher  # noqa: E402

BUILD = os.environ.get("RADLADS_BUILD", "build")
RADLADS = os.path.join(BUILD, "cli", "radlads")
DUMP = os.path.join(BUILD, "tests", "model", "teacher_dump")

# fp32 C vs float64 reference: |err| <= ATOL + RTOL * max|ref| per tensor
TOL = {"logits": (1e-6, 2e-5), "loss": (0, 2e-6), "capture": (1e-6, 2e-5), "grad": (1e-7, 2e-4)}

VARIANTS = [
    ("qwen2_gqa2_bias_untied", ["--arch", "qwen2", "--hidden", "48", "--layers", "2", "--heads", "4",
                                "--kv-heads", "2", "--intermediate", "80", "--rope-theta", "1e6"]),
    ("qwen2_tied", ["--arch", "qwen2", "--hidden", "32", "--layers", "2", "--heads", "4", "--kv-heads", "2",
                    "--intermediate", "64", "--tie"]),
    ("qwen3_qknorm_headdim_gqa3", ["--arch", "qwen3", "--hidden", "40", "--layers", "2", "--heads", "6",
                                   "--kv-heads", "2", "--head-dim", "8", "--intermediate", "72"]),
    ("qwen3_attention_bias_tied", ["--arch", "qwen3", "--hidden", "32", "--layers", "1", "--heads", "4",
                                   "--kv-heads", "4", "--head-dim", "12", "--intermediate", "48",
                                   "--attention-bias", "--tie"]),
    ("llama3_rope_scaling_tied", ["--arch", "llama", "--hidden", "48", "--layers", "2", "--heads", "4",
                                  "--kv-heads", "2", "--intermediate", "96", "--rope-theta", "500000",
                                  "--rope-llama3", "8,1,4,64", "--tie"]),
    ("mistral_mha", ["--arch", "mistral", "--hidden", "32", "--layers", "1", "--heads", "2", "--kv-heads", "2",
                     "--intermediate", "64", "--rope-theta", "10000"]),
]


def compare(name, got, ref, kind, failures):
    atol, rtol = TOL[kind]
    err = (got - ref).abs().max().item()
    scale = ref.abs().max().item()
    rel = err / max(scale, 1e-30)
    ok = err <= atol + rtol * scale
    print(f"  {name:58s} max_abs={err:.3e} max_rel={rel:.3e} (|ref|max {scale:.2e}) {'ok' if ok else 'FAIL'}")
    if not ok:
        failures.append(name)


def run_variant(tag, args, tmp, failures):
    d = os.path.join(tmp, tag)
    subprocess.run([RADLADS, "init-model", *args, "--vocab", "53", "--seed", "7", "--init-std", "0.15",
                    "--randomize-all", "--out", d], check=True, stdout=subprocess.DEVNULL)
    g = torch.Generator().manual_seed(zlib.crc32(tag.encode()))
    ids = torch.randint(0, 53, (2, 9), generator=g)
    out = os.path.join(tmp, tag + ".dump.safetensors")
    subprocess.run([DUMP, "--model", d, "--ids", ",".join(map(str, ids.flatten().tolist())), "--batch", "2",
                    "--chunk-rows", "5", "--out", out], check=True, stdout=subprocess.DEVNULL)
    c = st.read(out)
    cfg = json.load(open(os.path.join(d, "config.json")))
    model = Teacher(cfg, st.read_dir(d))
    cap = []
    logits = model.forward(ids, capture=cap)
    loss = Teacher.next_token_loss(logits, ids)
    loss.backward()
    print(f"{tag}: loss C {c['loss'].item():.7f} torch {loss.item():.7f}")
    compare(f"{tag} loss", c["loss"], loss.detach().reshape(1), "loss", failures)
    compare(f"{tag} logits", c["logits"], logits.detach().reshape(-1, logits.shape[-1]), "logits", failures)
    for l, (h, o) in enumerate(cap):
        compare(f"{tag} layer {l} attention input (after input RMSNorm)", c[f"capture.{l}.attn_in"],
                h.detach().reshape(-1, h.shape[-1]), "capture", failures)
        compare(f"{tag} layer {l} attention output (after o_proj)", c[f"capture.{l}.attn_out"],
                o.detach().reshape(-1, o.shape[-1]), "capture", failures)
    names = [k[5:] for k in c if k.startswith("grad.")]
    missing = set(model.p) - set(names)
    if missing:
        print(f"  C wrote no gradient for {sorted(missing)}")
        failures.append(tag + " missing grads")
    for n in names:
        compare(f"{tag} grad {n}", c["grad." + n], model.p[n].grad, "grad", failures)


def main():
    for exe in (RADLADS, DUMP):
        if not os.path.exists(exe):
            print(f"missing {exe}: build first (RADLADS_BUILD={BUILD})")
            return 1
    torch.manual_seed(0)
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        for tag, args in VARIANTS:
            run_variant(tag, args, tmp, failures)
    print("FAIL: " + ", ".join(failures) if failures else "PASS: C teacher equals the PyTorch reference")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
