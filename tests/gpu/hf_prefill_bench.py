#!/usr/bin/env python3
"""transformers beside bench_llama7b_shape: the same Llama-2-7B shape (random weights) on the GPU, the same
prefill (512-token prompts, batch 1 and 8, full logits), greedy decode (64 new tokens after 128) and, for the
search step, what scoring candidates costs in transformers at best: a forward pass of a batch of prefix + candidate
+ 512-token sample sequences (no quantization loss, no logits): candidates/s as an upper bound.
usage: hf_prefill_bench.py [--dtype bf16] [--layers 32] [--json FILE]"""
import argparse, json, sys, time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--json")
    a = ap.parse_args()
    try:
        import transformers
        from transformers import LlamaConfig, LlamaForCausalLM
    except Exception as e:  # noqa: BLE001
        print(f"transformers not importable here: {e}", file=sys.stderr)
        return 3
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=a.layers, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    t0 = time.time()
    with torch.device("cuda"):
        torch.set_default_dtype(dt)
        model = LlamaForCausalLM(cfg).eval()
        torch.set_default_dtype(torch.float32)
    init_s = time.time() - t0
    out = {"transformers": transformers.__version__, "torch": torch.__version__, "dtype": a.dtype,
           "layers": a.layers, "attn_implementation": getattr(model.config, "_attn_implementation", "?"),
           "init_seconds": init_s}

    def timed(f, reps=3):
        f()
        torch.cuda.synchronize()
        best = 1e30
        for _ in range(reps):
            t = time.perf_counter()
            f()
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        return best

    with torch.inference_mode():
        for b in (1, 8):
            toks = torch.randint(3, 32000, (b, 512), device="cuda")
            t = timed(lambda: model(toks, use_cache=False))
            out[f"prefill_b{b}"] = {"seconds": t, "tokens_per_s": b * 512 / t}
            print(f"transformers prefill 512 x batch {b}: {t:.4f} s, {b * 512 / t:.0f} tokens/s")
        prompt = torch.arange(3, 131, device="cuda").unsqueeze(0)
        t = timed(lambda: model.generate(prompt, max_new_tokens=64, min_new_tokens=64, do_sample=False), reps=1)
        out["decode"] = {"seconds": t, "tokens_per_s": 64 / t, "prompt": 128, "new_tokens": 64}
        print(f"transformers decode 64 tokens after 128: {t:.3f} s, {64 / t:.1f} tokens/s")
        seqs = torch.randint(3, 32000, (8, 514), device="cuda")
        t = timed(lambda: model(seqs, use_cache=False, logits_to_keep=1))
        out["search_equivalent"] = {"batch": 8, "tokens": 514, "seconds": t, "candidates_per_s": 8 / t}
        print(f"transformers forward of 8 x 514 tokens (a search batch without the loss): {8 / t:.1f} candidates/s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
