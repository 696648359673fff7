#!/usr/bin/env python3
"""Use a CushionCache cushion with Hugging Face transformers.

A cushion is a prefix KV cache. `cushion.safetensors` (from `cushion search/tune`, or inside a package made
by `cushion export`) holds:
    k.<layer>, v.<layer>  float32 (1, n_kv_heads, P, head_dim): keys AFTER RoPE at positions 0..P-1, values;
                          Llama "rotate-half" layout, i.e. exactly what transformers' Llama/Mistral/Qwen2 keep
                          in their cache (the tool permutes llama.cpp / Meta interleaved weights on load)
    prefix_ids            int64 (P): the prefix tokens, starting with <bos>
    last_logits           float32 (V): the logits at the prefix's last position (they predict the first token)
To run text after it: put the K/V in a DynamicCache as past_key_values, feed the text tokens WITHOUT a <bos>
(the cushion starts with <bos>), with position_ids P, P+1, ... and an attention mask covering P + T tokens.

This script checks that transformers reproduces cushion's numbers:
  1. next-token logits: the cushion's last prefix token run against the first P-1 cached positions must give
     the cushion's own `last_logits` (computed by `cushion` from the same input);
  2. with --cushion-json (the output of `cushion generate MODEL --cushion FILE --prompt TEXT --json`):
     greedy decoding after the cushion gives the same prompt tokens and the same generated tokens.
It needs the full-precision model as a Hugging Face directory (the model the cushion was made for).
An exported package's model.safetensors holds integer codes that transformers cannot load as is; use the
source model, or dequantize (w = weight_scale * code, see quantization.json) to reproduce the package.

    python hf_cushion_example.py --model HF_DIR --cushion cushion.safetensors --prompt "Once upon a time" \
        [--cushion-json generate.json] [--device cuda] [--atol 1e-3]

Exit status 0 when every check passes. Requires torch, transformers >= 4.36 (DynamicCache), safetensors.
"""
import argparse
import copy
import json
import sys

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache


def load_cushion(path):
    tensors = {}
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        for k in f.keys():
            tensors[k] = f.get_tensor(k)
    if meta.get("format") != "cushioncache-cushion":
        sys.exit(f"{path}: not a cushion file")
    n_layers = 1 + max(int(k.split(".")[1]) for k in tensors if k.startswith("k."))
    ks = [tensors[f"k.{l}"] for l in range(n_layers)]
    vs = [tensors[f"v.{l}"] for l in range(n_layers)]
    return tensors["prefix_ids"].tolist(), ks, vs, tensors["last_logits"], meta


def make_cache(ks, vs, length, device, dtype):
    """A DynamicCache holding the first `length` positions of the cushion."""
    cache = DynamicCache()
    for layer, (k, v) in enumerate(zip(ks, vs)):
        cache.update(k[:, :, :length].to(device, dtype), v[:, :, :length].to(device, dtype), layer)
    return cache


@torch.no_grad()
def logits_after(model, cache, past_len, ids, device):
    """Logits of `ids` run after `past_len` cached positions (positions continue after the cache)."""
    x = torch.tensor([ids], device=device)
    pos = torch.arange(past_len, past_len + len(ids), device=device).unsqueeze(0)
    mask = torch.ones(1, past_len + len(ids), dtype=torch.long, device=device)
    out = model(input_ids=x, past_key_values=cache, position_ids=pos, attention_mask=mask, use_cache=True)
    return out.logits[0].float(), out.past_key_values


@torch.no_grad()
def greedy(model, ks, vs, prompt_ids, max_new, eos_ids, device, dtype):
    P = ks[0].shape[2]
    cache = make_cache(ks, vs, P, device, dtype)
    logits, cache = logits_after(model, cache, P, prompt_ids, device)
    out, pos = [], P + len(prompt_ids)
    for _ in range(max_new):
        nxt = int(torch.argmax(logits[-1]))
        if nxt in eos_ids:
            break
        out.append(nxt)
        logits, cache = logits_after(model, cache, pos, [nxt], device)
        pos += 1
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory (full precision)")
    ap.add_argument("--cushion", required=True, help="cushion.safetensors")
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--cushion-json", help="output of `cushion generate MODEL --cushion FILE --prompt TEXT --json`")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--atol", type=float, default=1e-3, help="logit tolerance (float32)")
    a = ap.parse_args()

    dev, dtype = torch.device(a.device), torch.float32
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=dtype).to(dev).eval()
    prefix_ids, ks, vs, last_logits, meta = load_cushion(a.cushion)
    P = len(prefix_ids)
    ok = True

    # 1. The cushion's last token after its first P-1 positions reproduces the cushion's last_logits.
    if P >= 2:
        cache = make_cache(ks, vs, P - 1, dev, dtype)
        got, _ = logits_after(model, cache, P - 1, [prefix_ids[-1]], dev)
        got = got[-1].cpu()
    else:  # a one-token cushion (<bos>): its last_logits are the token run alone
        got, past = logits_after(model, DynamicCache(), 0, prefix_ids, dev)
        got = got[-1].cpu()
        if "tuning" not in json.loads(meta.get("settings") or "{}"):
            # not tuned: the cached K/V are the token run through the model, so they must match too
            # (a tuned cushion's K/V are trained parameters and differ by design)
            k0 = past[0][0] if isinstance(past, tuple) else past.key_cache[0] if hasattr(past, "key_cache") else past.layers[0].keys
            dk = (k0.float().cpu() - ks[0]).abs().max().item()
            print(f"layer-0 keys from transformers vs the cushion: max |diff| = {dk:.3g}")
            ok &= dk <= a.atol
    diff = (got - last_logits).abs().max().item()
    print(f"next-token logits at the cushion's last position: max |diff| = {diff:.3g} "
          f"(argmax {int(got.argmax())} vs {int(last_logits.argmax())})")
    ok &= diff <= a.atol and int(got.argmax()) == int(last_logits.argmax())

    # 2. Greedy decoding after the cushion matches `cushion generate --cushion ... --json`.
    if a.cushion_json:
        ref = json.load(open(a.cushion_json))
        prompt_ids = list(ref["prompt_tokens"])
        if prompt_ids and prompt_ids[0] == prefix_ids[0]:
            prompt_ids = prompt_ids[1:]  # the cushion supplies <bos>
    else:
        tok = AutoTokenizer.from_pretrained(a.model)
        prompt_ids = tok(a.prompt, add_special_tokens=False)["input_ids"]
        ref = None
    eos = {i for i in (model.config.eos_token_id, model.config.bos_token_id) if i is not None}
    n_new = len(ref["tokens"]) if ref else 20
    tokens = greedy(model, ks, vs, prompt_ids, n_new, eos, dev, dtype)
    print(f"greedy after the cushion: {tokens}")
    if ref is not None:
        same = tokens == list(ref["tokens"])
        print("matches `cushion generate`:", same)
        ok &= same
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
