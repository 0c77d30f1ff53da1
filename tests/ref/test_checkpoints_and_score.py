"""bf16, f16 and sharded checkpoints load to the same model, and `radlads score` equals the PyTorch reference.

1. A random f32 Qwen2 model from `radlads init-model`.
2. Python (torch rounding, its own writer) re-writes it as BF16, as F16, and as 3 shards + index; it also
   writes f32 files holding the bf16- and f16-rounded values.
3. `radlads score --dump-logits`: the sharded folder gives bit-identical logits to the original; the BF16
   (F16) folder gives bit-identical logits to the f32 folder of rounded values.
4. score's mean cross-entropy and dumped logits match the float64 reference; `init-model --dtype bf16`
   writes the same rounding as torch."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import st  # noqa: E402
from teacher_ref import Teacher  # noqa: E402

BUILD = os.environ.get("RADLADS_BUILD", "build")
RADLADS = os.path.join(BUILD, "cli", "radlads")
failures = []


def check(name, ok, detail=""):
    print(f"  {name:64s} {'ok' if ok else 'FAIL'} {detail}")
    if not ok:
        failures.append(name)


def score(d, ids, tmp, tag):
    out = os.path.join(tmp, tag + ".logits.safetensors")
    r = subprocess.run([RADLADS, "score", "--model", d, "--ids", ",".join(map(str, ids)), "--json",
                        "--chunk-rows", "3", "--dump-logits", out], check=True, capture_output=True, text=True)
    return json.loads(r.stdout), st.read(out)["logits"]


def folder(tmp, name, src_cfg):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    shutil.copy(os.path.join(src_cfg, "config.json"), d)
    return d


def main():
    if not os.path.exists(RADLADS):
        print(f"missing {RADLADS}: build first")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "f32")
        subprocess.run([RADLADS, "init-model", "--arch", "qwen2", "--hidden", "32", "--layers", "2", "--heads", "4",
                        "--kv-heads", "2", "--vocab", "61", "--seed", "3", "--init-std", "0.2", "--randomize-all",
                        "--out", base], check=True, stdout=subprocess.DEVNULL)
        w = st.read(os.path.join(base, "model.safetensors"))
        ids = torch.randint(0, 61, (11,), generator=torch.Generator().manual_seed(5)).tolist()
        res, logits = score(base, ids, tmp, "f32")

        # sharded: three files + index, same f32 values
        sh = folder(tmp, "sharded", base)
        names = list(w)
        parts = [names[i::3] for i in range(3)]
        wm = {}
        for i, part in enumerate(parts):
            fn = f"model-{i + 1:05d}-of-00003.safetensors"
            st.write(os.path.join(sh, fn), {n: w[n] for n in part})
            wm.update({n: fn for n in part})
        json.dump({"metadata": {}, "weight_map": wm}, open(os.path.join(sh, "model.safetensors.index.json"), "w"))
        _, lsh = score(sh, ids, tmp, "sharded")
        check("sharded checkpoint: logits bit-identical to the single file", torch.equal(lsh, logits))

        for dt, tdt in (("BF16", torch.bfloat16), ("F16", torch.float16)):
            low = folder(tmp, dt, base)
            st.write(os.path.join(low, "model.safetensors"), w, dtype=dt)
            rounded = folder(tmp, dt + "_as_f32", base)
            st.write(os.path.join(rounded, "model.safetensors"), {n: t.to(tdt).to(torch.float64) for n, t in w.items()})
            _, l1 = score(low, ids, tmp, dt)
            _, l2 = score(rounded, ids, tmp, dt + "r")
            check(f"{dt} checkpoint: logits bit-identical to f32 of the rounded values", torch.equal(l1, l2),
                  f"(max diff to the f32 model {(l1 - logits).abs().max().item():.2e})")

        cb = os.path.join(tmp, "c_bf16")
        subprocess.run([RADLADS, "init-model", "--arch", "qwen2", "--hidden", "32", "--layers", "2", "--heads", "4",
                        "--kv-heads", "2", "--vocab", "61", "--seed", "3", "--init-std", "0.2", "--randomize-all",
                        "--dtype", "bf16", "--out", cb], check=True, stdout=subprocess.DEVNULL)
        wb = st.read(os.path.join(cb, "model.safetensors"))
        same = all(torch.equal(wb[n], w[n].to(torch.bfloat16).to(torch.float64)) for n in w)
        check("init-model --dtype bf16 rounds exactly like torch", same)

        cfg = json.load(open(os.path.join(base, "config.json")))
        model = Teacher(cfg, w)
        ref_logits = model.forward(torch.tensor([ids]))
        ref_loss = Teacher.next_token_loss(ref_logits, torch.tensor([ids])).item()
        err = abs(res["mean_cross_entropy"] - ref_loss)
        check("score mean cross-entropy equals the reference", err < 2e-6 * ref_loss,
              f"C {res['mean_cross_entropy']:.8f} torch {ref_loss:.8f} abs err {err:.2e}")
        lerr = (logits - ref_logits[0]).abs().max().item()
        lscale = ref_logits.abs().max().item()
        check("score --dump-logits [T, vocab] equals the reference logits",
              tuple(logits.shape) == (len(ids), 61) and lerr < 2e-5 * lscale,
              f"max_abs {lerr:.2e} max_rel {lerr / lscale:.2e}")
        import math
        check("perplexity = exp(mean cross-entropy)", abs(res["perplexity"] - math.exp(res["mean_cross_entropy"]))
              < 1e-6 * res["perplexity"])

        r = subprocess.run([RADLADS, "score", "--model", base, "--ids", "1,2,999"], capture_output=True, text=True)
        check("an id outside the vocabulary is a clear error", r.returncode != 0 and "outside the vocabulary"
              in r.stderr, repr(r.stderr.strip()))
        r = subprocess.run([RADLADS, "score", "--model", os.path.join(tmp, "nope"), "--ids", "1,2"],
                           capture_output=True, text=True)
        check("a missing model folder is a clear error", r.returncode != 0 and "config.json" in r.stderr,
              repr(r.stderr.strip()))
    print("FAIL: " + ", ".join(failures) if failures else "PASS")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
