#!/usr/bin/env python3
"""Prefill and decode speed on SmolLM2-135M (the GGUF), ours beside transformers on the CPU, in one run.

    .venv/bin/python tests/perf/prefill_speed.py [--gguf models/SmolLM2-135M-Instruct.Q4_1.gguf]
        [--bench build/bin/bench_smollm2] [--tokens 512] [--reps 3] [--llamacpp-python /tmp/llamacpp-venv/bin/python]

Ours: `bench_smollm2 prefill` (fp32 and bf16; batch 1 and 4; last-position logits; decode of 63 tokens after the
prompt). transformers: the same GGUF loaded with gguf_file= (dequantized to float32, or cast to bf16), the same
prompt length and batches, `logits_to_keep=1`, sdpa attention, torch threads = 2 (this machine's cores), no grad;
decode = 64 greedy tokens with its KV cache (model.generate, min_new_tokens = max_new_tokens = 64) less the prefill.
With --llamacpp-python (a Python that has PyPI's llama-cpp-python, see tests/perf/llamacpp_speed.py), llama.cpp on
the same GGUF (its own Q4_1 kernels: it does not dequantize) gives pp512-style prefill at batch 1 and tg-style decode.
All run one after the other in this process's run, each reported as tokens/s and as a fraction of the fp32 matmul
rate (1024^3, 2 threads) measured in the same run: the machine is shared, so compare the fractions.
Prints a Markdown table for tests/perf/RESULTS.md.
"""
import argparse
import os
import re
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402


def matmul_rate():
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 1024**3 / best / 1e9


def best_of(f, reps):
    f()
    best = 1e9
    for _ in range(reps):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def transformers_rows(gguf, T, reps):
    # The reference test's loader: from_pretrained(gguf_file=...) where `accelerate` is installed, else transformers'
    # own GGUF reader into LlamaForCausalLM (the same weights, float32).
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
    from smollm2_reference import load_reference_model

    rows = []
    base, how = load_reference_model(os.path.abspath(gguf))
    sys.stderr.write(f"transformers model: {how}, attention {base.config._attn_implementation}\n")
    ids = torch.arange(100, 100 + T).unsqueeze(0)
    for dt, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        m = base.to(dt)
        with torch.no_grad():
            for B in (1, 4):
                x = ids.expand(B, T).contiguous()
                t = best_of(lambda: m(input_ids=x, logits_to_keep=1, use_cache=False), reps)
                rows.append(("transformers " + transformers_version(), label, f"prefill batch {B}", B * T / t))
            g = dict(max_new_tokens=64, min_new_tokens=64, do_sample=False, pad_token_id=0)
            t_gen = best_of(lambda: m.generate(ids, **g), reps)
            t_pf = best_of(lambda: m.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False, pad_token_id=0), reps)
            rows.append(("transformers " + transformers_version(), label, "decode batch 1", 63 / (t_gen - t_pf)))
    return rows


def transformers_version():
    import transformers

    return transformers.__version__


def ours_rows(bench, gguf, T, reps):
    out = subprocess.run([bench, "prefill", "--model", gguf, "--tokens", str(T), "--reps", str(reps)],
                         capture_output=True, text=True, check=True).stdout
    sys.stderr.write(out)
    rows = []
    for m in re.finditer(r"(fp32|bf16) batch (\d+): ([0-9.]+) tokens/s", out):
        rows.append(("ours", m.group(1), f"prefill batch {m.group(2)}", float(m.group(3))))
    for m in re.finditer(r"(fp32|bf16) decode batch 1 after \d+ tokens: ([0-9.]+) tokens/s", out):
        rows.append(("ours", m.group(1), "decode batch 1", float(m.group(2))))
    return rows


def llamacpp_rows(python, gguf, T, reps):
    import json

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llamacpp_speed.py")
    out = subprocess.run([python, script, gguf, "--threads", "2", "--prompt-tokens", str(T), "--gen-tokens", "63",
                          "--repeats", str(reps)], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        r = json.loads(line)
        what = "prefill batch 1" if r["test"].startswith("pp") else "decode batch 1"
        rows.append((r["version"].replace("llama-cpp-python", "llama.cpp (llama-cpp-python") + ")", "Q4_1", what,
                     r["tokens_per_s"]))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--bench", default="build/bin/bench_smollm2")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--llamacpp-python", help="a Python with llama-cpp-python installed: add llama.cpp's rows")
    a = ap.parse_args()
    torch.set_num_threads(2)
    r0 = matmul_rate()
    rows = ours_rows(a.bench, a.gguf, a.tokens, a.reps)
    r1 = matmul_rate()
    rows += transformers_rows(a.gguf, a.tokens, a.reps)
    r2 = matmul_rate()
    rates = [r0, r1, r2]
    if a.llamacpp_python:
        rows += llamacpp_rows(a.llamacpp_python, a.gguf, a.tokens, a.reps)
        rates.append(matmul_rate())
    rate = sum(rates) / len(rates)
    load = open("/proc/loadavg").read().split()[0]
    # FLOPs of one prompt's prefill (causal attention, last-position LM head) and of one decoded token, for the fraction.
    C, F, L, Hq, V = 576, 1536, 30, 576, 49152
    lin = 2 * (C * Hq + 2 * C * 192 + Hq * C + 3 * C * F)
    pf = L * (a.tokens * lin + 4 * Hq * a.tokens * (a.tokens + 1) / 2) + 2 * C * V
    dec = L * (lin + 4 * Hq * (a.tokens + 32)) + 2 * C * V
    print(f"\nmatmul 1024^3 fp32, 2 threads: {' / '.join(f'{r:.0f}' for r in rates)} GFLOP/s (start, between engines, end); "
          f"load {load}")
    print(f"{a.tokens}-token prompts; prefill {pf / 1e9:.1f} GFLOP a prompt, decode {dec / 1e9:.2f} GFLOP a token\n")
    print("| engine | dtype | measure | tokens/s | GFLOP/s | fraction of the matmul rate |")
    print("| --- | --- | --- | --- | --- | --- |")
    for eng, dt, what, tps in rows:
        per = pf / a.tokens if what.startswith("prefill") else dec
        gf = tps * per / 1e9
        print(f"| {eng} | {dt} | {what} | {tps:,.0f} | {gf:.1f} | {100 * gf / rate:.0f}% |")


if __name__ == "__main__":
    main()
