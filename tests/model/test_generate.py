"""`radlads generate`: teachers with a KV cache, RADLADS students with their recurrent state.

Tiny random models: teachers from `radlads init-model` (Qwen2 with q/k/v bias, Qwen3 with q/k norms and
an explicit head_dim, Llama with GQA), students from `radlads-worker run --stage transfer`
(RAD-RWKV7 b and a, RAD-RWKV6, a hybrid RAD-RWKV7 keeping one attention layer).

1. The logits generate samples from equal the full parallel forward's at every position: a 45-token prompt
   in prefill chunks of 16 (so later chunks attend to cached keys) then 40 greedy single-token steps
   (generate_check; relative tolerance 1e-4).
2. With a fixed seed the text is the same twice, for sampling (temperature, top-k, top-p) and greedy;
   another seed gives other text; the streamed text of random byte tokens is valid UTF-8.
3. Bad arguments fail with exit 2 and a message naming the problem: no --model, a folder without
   config.json, top-p outside (0, 1], negative temperature, both or neither prompt options, bad lengths.
4. --bench runs for a teacher and a student and prints its table; the student's state size is the same at
   every context length and the teacher's grows (sizes, not timings: no timed assertions)."""
import os
import subprocess
import sys
import tempfile

BUILD = os.environ.get("RADLADS_BUILD", "build")
RADLADS = os.path.join(BUILD, "cli", "radlads")
WORKER = os.path.join(BUILD, "worker", "radlads-worker")
CHECK = os.path.join(BUILD, "tests", "model", "generate_check")
failures = []


def check(name, ok, detail=""):
    print(f"  {name:72s} {'ok' if ok else 'FAIL'} {detail}")
    sys.stdout.flush()
    if not ok:
        failures.append(name)


def run(args, **kw):
    return subprocess.run(args, capture_output=True, **kw)


def teacher(tmp, name, *args):
    d = os.path.join(tmp, name)
    subprocess.run([RADLADS, "init-model", "--vocab", "300", "--seed", "7", "--init-std", "0.2", "--randomize-all",
                    "--out", d, *args], check=True, stdout=subprocess.DEVNULL)
    return d


def student(tmp, name, src, *args):
    d = os.path.join(tmp, name)
    r = run([WORKER, "run", "--stage", "transfer", "--teacher", src, "--seed", "3", "--out", d, *args], text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
        raise SystemExit(f"transfer {name} failed")
    return d


def gen(model, *args):
    return run([RADLADS, "generate", "--model", model, "--threads", "2", *args])


def main():
    for exe in (RADLADS, WORKER, CHECK):
        if not os.path.exists(exe):
            print(f"missing {exe}: build first")
            return 1
    with tempfile.TemporaryDirectory() as tmp:
        qwen2 = teacher(tmp, "qwen2", "--arch", "qwen2", "--hidden", "64", "--layers", "3", "--heads", "4",
                        "--kv-heads", "2")
        qwen3 = teacher(tmp, "qwen3", "--arch", "qwen3", "--hidden", "48", "--layers", "2", "--heads", "4",
                        "--kv-heads", "2", "--head-dim", "16")
        llama = teacher(tmp, "llama", "--arch", "llama", "--hidden", "64", "--layers", "2", "--heads", "8",
                        "--kv-heads", "2", "--attention-bias")
        models = {"teacher qwen2": qwen2, "teacher qwen3": qwen3, "teacher llama": llama,
                  "student rad-rwkv7 b": student(tmp, "s7b", qwen2, "--arch", "rad-rwkv7"),
                  "student rad-rwkv7 a": student(tmp, "s7a", qwen2, "--arch", "rad-rwkv7", "--variant", "a"),
                  "student rad-rwkv6": student(tmp, "s6", qwen2, "--arch", "rad-rwkv6"),
                  "student rad-rwkv7 hybrid (1 attention layer)": student(tmp, "s7h", qwen2, "--arch", "rad-rwkv7",
                                                                          "--attention-layers", "1")}

        print("1. generate's logits (KV cache / recurrent state) equal the full forward at every position")
        for name, d in models.items():
            r = run([CHECK, "--model", d, "--prompt", "45", "--steps", "40", "--chunk", "16"], text=True)
            check(f"{name}: cached/stepwise logits == full forward", r.returncode == 0,
                  (r.stdout + r.stderr).strip().splitlines()[-1] if (r.stdout + r.stderr).strip() else "")

        print("2. a fixed seed gives the same text")
        prompt = "The quick brown fox jumps over the lazy dog. "
        for name in ("teacher qwen2", "student rad-rwkv7 b", "student rad-rwkv6"):
            d = models[name]
            for opts in (["--temperature", "0.9", "--top-k", "40", "--top-p", "0.9"], ["--temperature", "1.3"],
                         ["--temperature", "0"]):
                a = gen(d, "--prompt", prompt, "--max-tokens", "48", "--seed", "11", "--ignore-eos", *opts)
                b = gen(d, "--prompt", prompt, "--max-tokens", "48", "--seed", "11", "--ignore-eos", *opts)
                check(f"{name} {' '.join(opts)}: same text twice", a.returncode == 0 and a.stdout == b.stdout
                      and len(a.stdout) > 0, f"{len(a.stdout)} bytes" + (a.stderr.decode()[-200:] if a.returncode
                                                                          else ""))
            a = gen(d, "--prompt", prompt, "--max-tokens", "48", "--seed", "11", "--ignore-eos", "--temperature", "2")
            try:  # random bytes cut UTF-8 sequences anywhere; the stream repairs them as the final decode would
                a.stdout.decode("utf-8", errors="strict")
                valid = True
            except UnicodeDecodeError:
                valid = False
            check(f"{name}: streamed text of random byte tokens is valid UTF-8", a.returncode == 0 and valid)
            b = gen(d, "--prompt", prompt, "--max-tokens", "48", "--seed", "12", "--ignore-eos", "--temperature", "2")
            check(f"{name}: another seed gives other text", a.returncode == 0 and a.stdout != b.stdout)
        # the prompt from a file, echoed; the summary names the tokenizer
        pf = os.path.join(tmp, "prompt.txt")
        with open(pf, "w") as f:
            f.write(prompt)
        r = gen(qwen2, "--prompt-file", pf, "--max-tokens", "5", "--seed", "1", "--echo")
        check("--prompt-file with --echo starts with the prompt; summary names the tokenizer",
              r.returncode == 0 and r.stdout.startswith(prompt.encode()) and b"tokenizer bytes" in r.stderr,
              r.stderr.decode()[-200:])

        print("3. bad arguments give clear errors")
        cases = [
            ("no --model", [RADLADS, "generate", "--prompt", "x"], "--model"),
            ("model folder without config.json", [RADLADS, "generate", "--model", tmp, "--prompt", "x"],
             "config.json"),
            ("missing model folder", [RADLADS, "generate", "--model", os.path.join(tmp, "nope"), "--prompt", "x"],
             "config.json"),
            ("top-p 0", [RADLADS, "generate", "--model", qwen2, "--prompt", "x", "--top-p", "0"], "(0, 1]"),
            ("top-p 1.5", [RADLADS, "generate", "--model", qwen2, "--prompt", "x", "--top-p", "1.5"], "(0, 1]"),
            ("negative temperature", [RADLADS, "generate", "--model", qwen2, "--prompt", "x", "--temperature", "-1"],
             ">= 0"),
            ("temperature not a number", [RADLADS, "generate", "--model", qwen2, "--prompt", "x", "--temperature",
                                          "hot"], "number"),
            ("negative top-k", [RADLADS, "generate", "--model", qwen2, "--prompt", "x", "--top-k", "-3"], "--top-k"),
            ("both prompt options", [RADLADS, "generate", "--model", qwen2, "--prompt", "x", "--prompt-file", pf],
             "exactly one"),
            ("no prompt", [RADLADS, "generate", "--model", qwen2], "exactly one"),
            ("empty prompt", [RADLADS, "generate", "--model", qwen2, "--prompt", ""], "no tokens"),
            ("bad bench length", [RADLADS, "generate", "--model", qwen2, "--bench", "--bench-lengths", "1k,x"],
             "--bench-lengths"),
        ]
        for name, args, needle in cases:
            r = run(args, text=True)
            check(f"{name} -> exit 2, says {needle!r}", r.returncode == 2 and needle in r.stderr,
                  f"rc={r.returncode} {r.stderr.strip().splitlines()[0] if r.stderr.strip() else ''}")
        small = teacher(tmp, "small", "--arch", "qwen2", "--hidden", "32", "--layers", "1", "--heads", "2",
                        "--vocab", "100")
        r = run([RADLADS, "generate", "--model", small, "--prompt", "\u00e9"], text=True)
        check("prompt ids beyond the model's vocabulary -> clear error", r.returncode == 2 and "vocabulary" in
              r.stderr, r.stderr.strip()[:160])

        print("4. --bench: a student's state is flat in the context length, a teacher's cache grows")
        for name in ("teacher qwen2", "student rad-rwkv7 b"):
            r = gen(models[name], "--bench", "--bench-lengths", "64,256,1024", "--bench-steps", "8")
            out = r.stdout.decode()
            print("    " + out.replace("\n", "\n    ").rstrip())
            rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
            sizes = [float(row[4]) for row in rows]
            ok = r.returncode == 0 and len(rows) == 3
            if ok and name.startswith("student"):
                ok = sizes[0] == sizes[1] == sizes[2]
            elif ok:
                ok = sizes[0] < sizes[1] < sizes[2]
            check(f"{name}: bench table, state size {'flat' if name.startswith('student') else 'grows'}", ok,
                  str(sizes))

    print(f"{len(failures)} failed" if failures else "all ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
