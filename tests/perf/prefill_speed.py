#!/usr/bin/env python3
"""Prefill and decode speed on a GGUF (SmolLM2-135M by default, or stories260K), ours beside transformers on the CPU
and llama.cpp, in one run.

    .venv/bin/python tests/perf/prefill_speed.py [--gguf models/SmolLM2-135M-Instruct.Q4_1.gguf]
        [--bench build/bin/bench_smollm2] [--tokens 512] [--reps 3] [--threads 2] [--batches 1,4]
        [--decode-prompt 1] [--decode-tokens 64] [--no-transformers] [--llamacpp-python /tmp/llamacpp-venv/bin/python]
    # stories260K (the GGUF in resources/, F32 weights with its llama tokenizer, as llama.cpp's convert-llama2c
    # writes it), 1 and 2 threads:
    .venv/bin/python tests/perf/prefill_speed.py --gguf resources/models/stories260K/stories260K.gguf --threads 1,2 \\
        --reps 20 --llamacpp-python /tmp/llamacpp-venv/bin/python

Ours: `bench_smollm2 prefill` (fp32 and bf16; each batch of --batches; last-position logits; decode of
--decode-tokens - 1 tokens after a --decode-prompt-token prompt, batch 1). transformers: the same GGUF loaded with
gguf_file= (dequantized to float32, or cast to bf16), the same prompt length and batches, `logits_to_keep=1`, sdpa
attention, no grad; decode = --decode-tokens greedy tokens with its KV cache (model.generate, min_new_tokens =
max_new_tokens) less a 1-token generate. With --llamacpp-python (a Python that has PyPI's llama-cpp-python, see
tests/perf/llamacpp_speed.py), llama.cpp on the same GGUF (its own kernels for the file's tensor types: it does not
dequantize; the dtype column names the file's most frequent 2-D tensor type) gives pp512-style prefill at batch 1 and
tg-style decode after the same --decode-prompt. For each thread count of --threads (torch's intra-op threads, llama.cpp's
n_threads), every engine runs one after the other in this process's run, each reported as tokens/s and as a fraction of
the fp32 matmul rate (1024^3, that many threads) measured in the same run: the machine is shared, so compare the
fractions. Prints a Markdown table for tests/perf/RESULTS.md.
"""
import argparse
import collections
import json
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


def gguf_facts(path):
    """(shape dict, weight type label) from the GGUF's metadata, read with gguf-py."""
    from gguf import GGUFReader

    r = GGUFReader(path)
    arch = r.fields["general.architecture"].contents()

    def key(k, default=None):
        f = r.fields.get(f"{arch}.{k}")
        return int(f.contents()) if f is not None else default

    C, F, L = key("embedding_length"), key("feed_forward_length"), key("block_count")
    H = key("attention.head_count")
    KVH = key("attention.head_count_kv", H)
    D = key("attention.key_length", C // H)
    emb = next(t for t in r.tensors if t.name == "token_embd.weight")
    V = int(max(emb.shape))
    types = collections.Counter(t.tensor_type.name for t in r.tensors if len([d for d in t.shape if d > 1]) >= 2)
    label = types.most_common(1)[0][0]
    return dict(C=C, F=F, L=L, Q=H * D, KV=KVH * D, V=V), label, ", ".join(f"{k} x {n}" for k, n in types.most_common())


def transformers_rows(gguf, T, reps, batches, decode_prompt, decode_tokens, threads):
    # The reference test's loader: from_pretrained(gguf_file=...) where `accelerate` is installed, else transformers'
    # own GGUF reader into LlamaForCausalLM (the same weights, float32).
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
    from smollm2_reference import load_gguf_llama, load_reference_model

    torch.set_num_threads(threads)
    rows = []
    try:
        base, how = load_reference_model(os.path.abspath(gguf))
    except AssertionError:  # llama.cpp's convert-llama2c writes pad = 2^32 - 1 (none): transformers' config refuses it
        base, how = load_gguf_llama(os.path.abspath(gguf)), "load_gguf_checkpoint + LlamaForCausalLM (pad_token_id dropped)"
    sys.stderr.write(f"transformers model: {how}, attention {base.config._attn_implementation}\n")
    V = base.config.vocab_size
    ids = (100 + torch.arange(T) % (V - 200)).unsqueeze(0)  # ids 100.. as llamacpp_speed.py
    name = "transformers " + transformers_version()
    for dt, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        m = base.to(dt)
        with torch.no_grad():
            for B in batches:
                x = ids.expand(B, T).contiguous()
                t = best_of(lambda: m(input_ids=x, logits_to_keep=1, use_cache=False), reps)
                rows.append((threads, name, label, f"prefill batch {B}", B * T / t))
            if decode_tokens >= 2:
                p = ids[:, :decode_prompt]
                g = dict(max_new_tokens=decode_tokens, min_new_tokens=decode_tokens, do_sample=False, pad_token_id=0)
                g1 = dict(g, max_new_tokens=1, min_new_tokens=1)
                t_gen = best_of(lambda: m.generate(p, **g), reps)
                t_pf = best_of(lambda: m.generate(p, **g1), reps)
                rows.append((threads, name, label, f"decode batch 1 after {decode_prompt}", (decode_tokens - 1) / (t_gen - t_pf)))
    return rows


def transformers_version():
    import transformers

    return transformers.__version__


def ours_rows(bench, gguf, T, reps, batches, decode_prompt, decode_tokens, threads):
    out = subprocess.run([bench, "prefill", "--model", gguf, "--tokens", str(T), "--reps", str(reps), "--threads",
                          str(threads), "--batches", ",".join(map(str, batches)), "--decode-prompt", str(decode_prompt),
                          "--decode-tokens", str(decode_tokens)], capture_output=True, text=True, check=True).stdout
    sys.stderr.write(out)
    rows = []
    for m in re.finditer(r"(fp32|bf16) batch (\d+): ([0-9.]+) tokens/s", out):
        rows.append((threads, "ours", m.group(1), f"prefill batch {m.group(2)}", float(m.group(3))))
    for m in re.finditer(r"(fp32|bf16) decode batch 1 after (\d+) tokens: ([0-9.]+) tokens/s", out):
        rows.append((threads, "ours", m.group(1), f"decode batch 1 after {m.group(2)}", float(m.group(3))))
    return rows


def llamacpp_rows(python, gguf, T, reps, decode_prompt, decode_tokens, threads, wtype):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llamacpp_speed.py")
    out = subprocess.run([python, script, gguf, "--threads", str(threads), "--prompt-tokens", str(T), "--gen-tokens",
                          str(max(decode_tokens - 1, 1)), "--decode-prompt", str(decode_prompt), "--repeats", str(reps)],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        r = json.loads(line)
        what = "prefill batch 1" if r["test"].startswith("pp") else f"decode batch 1 after {decode_prompt}"
        rows.append((threads, r["version"].replace("llama-cpp-python", "llama.cpp (llama-cpp-python") + ")", wtype, what,
                     r["tokens_per_s"]))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--bench", default="build/bin/bench_smollm2")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", default="2", help="comma-separated thread counts, each a run of every engine")
    ap.add_argument("--batches", default="1,4", help="prefill batches of ours and transformers (llama.cpp: batch 1)")
    ap.add_argument("--decode-prompt", type=int, default=1, help="prompt tokens before decoding (1 = llama-bench's tg)")
    ap.add_argument("--decode-tokens", type=int, default=64, help="tokens generated; the first (the prompt's) not timed")
    ap.add_argument("--no-transformers", action="store_true")
    ap.add_argument("--llamacpp-python", help="a Python with llama-cpp-python installed: add llama.cpp's rows")
    a = ap.parse_args()
    shape, wtype, types = gguf_facts(a.gguf)
    batches = [int(b) for b in a.batches.split(",")]
    rows, rates = [], {}
    load = [open("/proc/loadavg").read().split()[0]]
    for n in [int(t) for t in a.threads.split(",")]:
        torch.set_num_threads(n)
        rates[n] = [matmul_rate()]
        rows += ours_rows(a.bench, a.gguf, a.tokens, a.reps, batches, a.decode_prompt, a.decode_tokens, n)
        torch.set_num_threads(n)
        rates[n].append(matmul_rate())
        if not a.no_transformers:
            rows += transformers_rows(a.gguf, a.tokens, a.reps, batches, a.decode_prompt, a.decode_tokens, n)
            torch.set_num_threads(n)
            rates[n].append(matmul_rate())
        if a.llamacpp_python:
            rows += llamacpp_rows(a.llamacpp_python, a.gguf, a.tokens, a.reps, a.decode_prompt, a.decode_tokens, n, wtype)
            torch.set_num_threads(n)
            rates[n].append(matmul_rate())
        load.append(open("/proc/loadavg").read().split()[0])
    # FLOPs of one prompt's prefill (causal attention, last-position LM head) and of one decoded token, for the fraction.
    C, F, L, Q, KV, V = (shape[k] for k in ("C", "F", "L", "Q", "KV", "V"))
    T, DP = a.tokens, a.decode_prompt
    lin = 2 * (C * Q + 2 * C * KV + Q * C + 3 * C * F)
    pf = L * (T * lin + 4 * Q * T * (T + 1) / 2) + 2 * C * V
    dec = L * (lin + 4 * Q * (DP + a.decode_tokens / 2)) + 2 * C * V
    print(f"\n{a.gguf}: {types} (2-D tensors); dim {C}, ffn {F}, {L} blocks, q {Q}, kv {KV}, vocab {V}")
    for n, r in rates.items():
        print(f"matmul 1024^3 fp32, {n} thread(s): {' / '.join(f'{x:.0f}' for x in r)} GFLOP/s (start, after each engine)")
    print(f"load average {' -> '.join(load)}")
    print(f"{T}-token prompts; prefill {pf / 1e9:.3f} GFLOP a prompt, decode {dec / 1e9:.4f} GFLOP a token\n")
    print("| threads | engine | dtype | measure | tokens/s | GFLOP/s | fraction of the matmul rate |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n, eng, dt, what, tps in rows:
        per = pf / T if what.startswith("prefill") else dec
        gf = tps * per / 1e9
        rate = sum(rates[n]) / len(rates[n])
        print(f"| {n} | {eng} | {dt} | {what} | {tps:,.0f} | {gf:.1f} | {100 * gf / rate:.0f}% |")


if __name__ == "__main__":
    main()
