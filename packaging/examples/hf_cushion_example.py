#!/usr/bin/env python3
"""Use a CushionCache cushion with Hugging Face transformers.

A cushion is a prefix KV cache. `cushion.safetensors` (from `cushion calibrate`, or inside a package made
by `cushion export`) holds:
    k.<layer>, v.<layer>  float32 (1, n_kv_heads, P, head_dim): keys AFTER RoPE at positions 0..P-1, values;
                          Llama "rotate-half" layout, i.e. exactly what transformers' Llama/Mistral/Qwen2 keep
                          in their cache (the tool permutes llama.cpp / Meta interleaved weights on load)
    prefix_ids            int64 (P): the prefix tokens, starting with <bos>
    last_logits           float32 (V): the logits at the prefix's last position (they predict the first token)
To run text after it: put the K/V in a DynamicCache, pass it as the model's cache (`cache=` where forward() has it:
recent transformers 5.x, which deprecates `past_key_values=`), feed the text tokens WITHOUT a <bos>
(the cushion starts with <bos>), with position_ids P, P+1, ... and an attention mask covering P + T tokens.
The cache is extended in place by each call: build a fresh one per request.

This script checks that transformers reproduces cushion's numbers:
  1. next-token logits: the cushion's last prefix token run against the first P-1 cached positions must give
     the cushion's own `last_logits` (computed by `cushion` from the same input): max |diff| <= --rtol x
     max |last_logits|, same argmax; for an untuned cushion the K/V of its prefix run from scratch by
     transformers must match the cushion's too (a tuned cushion's K/V are trained parameters);
  2. with --cushion-json (the output of `cushion generate MODEL --cushion FILE --prompt TEXT --json`):
     greedy decoding after the cushion gives the same generated tokens from the same prompt tokens;
     with --ref-logits as well (float32 (T, vocab) logits of those prompt tokens after the cushion, as
     the test suite's dump_logits writes them), the prompt's logits must match within --rtol.
It needs the full-precision model as a Hugging Face directory (the model the cushion was made for).
An exported package's model.safetensors holds integer codes that transformers cannot load as is; use the
source model, or dequantize (w = weight_scale * code, see quantization.json) to reproduce the package.

    python hf_cushion_example.py --model HF_DIR --cushion cushion.safetensors --prompt "Once upon a time" \\
        [--cushion-json generate.json [--ref-logits prompt_logits.bin]] [--device cuda] [--rtol 1e-4]

Exit status 0 when every check passes, 1 on a mismatch. --selftest-corrupt negates the cached K/V first
(the checks must then fail). Requires torch, transformers >= 4.36 (DynamicCache; tested with 5.24),
safetensors, numpy; sentencepiece for a tokenizer.model without --cushion-json.
"""
import argparse
import inspect
import json
import os
import sys

import numpy as np
import torch
import transformers
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
    return tensors["prefix_ids"].tolist(), ks, vs, tensors["last_logits"].float(), meta


def make_cache(ks, vs, length, device, dtype):
    """A DynamicCache holding the first `length` positions of the cushion."""
    cache = DynamicCache()
    for layer, (k, v) in enumerate(zip(ks, vs)):
        cache.update(k[:, :, :length].to(device, dtype), v[:, :, :length].to(device, dtype), layer)
    return cache


def cache_kv(cache, layer):
    """(keys, values) of one layer of a cache, across transformers versions."""
    if hasattr(cache, "layers"):  # >= 4.56 / 5.x: DynamicCache.layers[l].keys / .values
        return cache.layers[layer].keys, cache.layers[layer].values
    if hasattr(cache, "key_cache"):  # 4.36 .. 4.55
        return cache.key_cache[layer], cache.value_cache[layer]
    return cache[layer][0], cache[layer][1]  # legacy tuple of tuples


def cache_argument(model):
    """The forward() argument taking the cache: `cache` in recent transformers 5.x (5.24 deprecates
    `past_key_values`, announced for removal in 5.40), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@torch.no_grad()
def logits_after(model, cache, past_len, ids, device):
    """Logits of `ids` run after `past_len` cached positions (positions continue after the cache)."""
    x = torch.tensor([ids], device=device)
    pos = torch.arange(past_len, past_len + len(ids), device=device).unsqueeze(0)
    mask = torch.ones(1, past_len + len(ids), dtype=torch.long, device=device)
    out = model(input_ids=x, position_ids=pos, attention_mask=mask, use_cache=True, **{cache_argument(model): cache})
    new_cache = out["cache"] if "cache" in out else out.past_key_values
    return out.logits[0].float(), new_cache


@torch.no_grad()
def greedy(model, ks, vs, last_logits, prompt_ids, max_new, eos_ids, device, dtype):
    """Greedy tokens after the cushion and the prompt; also the prompt's logits and the smallest top-2 gap."""
    P = ks[0].shape[2]
    cache = make_cache(ks, vs, P, device, dtype)
    if prompt_ids:
        logits, cache = logits_after(model, cache, P, prompt_ids, device)
        prompt_logits = logits.cpu()
    else:  # the prompt was only <bos>: the cushion's last logits predict the first token
        logits, prompt_logits = last_logits[None].to(device), None
    out, pos, gap = [], P + len(prompt_ids), float("inf")
    for _ in range(max_new):
        top2 = torch.topk(logits[-1], 2).values
        gap = min(gap, float(top2[0] - top2[1]))
        nxt = int(torch.argmax(logits[-1]))
        if nxt in eos_ids:
            break
        out.append(nxt)
        logits, cache = logits_after(model, cache, pos, [nxt], device)
        pos += 1
    return out, prompt_logits, gap


def encode_prompt(model_dir, text):
    """The prompt's token ids without <bos>. A SentencePiece tokenizer.model is read with `sentencepiece` (what
    `cushion` uses when it is there; transformers 5.x would convert it, which needs protobuf), else AutoTokenizer."""
    spm_file = os.path.join(model_dir, "tokenizer.model")
    if os.path.exists(spm_file):
        import sentencepiece
        return sentencepiece.SentencePieceProcessor(model_file=spm_file).encode(text)
    return AutoTokenizer.from_pretrained(model_dir)(text, add_special_tokens=False)["input_ids"]


def load_model(path, dtype, device):
    # transformers >= 4.56 names the argument `dtype`; older versions `torch_dtype`
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    kw = {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
    return AutoModelForCausalLM.from_pretrained(path, **kw).to(device).eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory (full precision)")
    ap.add_argument("--cushion", required=True, help="cushion.safetensors")
    ap.add_argument("--prompt", default="Once upon a time")
    ap.add_argument("--cushion-json", help="output of `cushion generate MODEL --cushion FILE --prompt TEXT --json`")
    ap.add_argument("--ref-logits", help="float32 (T, vocab) logits of the --cushion-json prompt tokens after the "
                                         "cushion (tests/tools/dump_logits MODEL IDS OUT CUSHION)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rtol", type=float, default=1e-4, help="logit tolerance, relative to max |reference logit|")
    ap.add_argument("--selftest-corrupt", action="store_true", help="negate the cached K and V (the checks must fail)")
    a = ap.parse_args()

    dev, dtype = torch.device(a.device), torch.float32
    model = load_model(a.model, dtype, dev)
    prefix_ids, ks, vs, last_logits, meta = load_cushion(a.cushion)
    if a.selftest_corrupt:
        ks, vs = [-k for k in ks], [-v for v in vs]
    P = len(prefix_ids)
    print(f"transformers {transformers.__version__}, {type(model).__name__} on {dev}; cushion: {P} tokens "
          f"{prefix_ids} ({meta.get('prefix_text', '')!r}), {len(ks)} layers")
    ok = True

    # 1. The cushion's last token after its first P-1 positions reproduces the cushion's last_logits.
    if P >= 2:
        got, _ = logits_after(model, make_cache(ks, vs, P - 1, dev, dtype), P - 1, [prefix_ids[-1]], dev)
    else:  # a one-token cushion (<bos>): the token run alone
        got, _ = logits_after(model, DynamicCache(), 0, prefix_ids, dev)
    if "tuning" not in json.loads(meta.get("settings") or "{}"):
        # not tuned: the cached K/V are the prefix run through the model, so they must match that too
        _, past = logits_after(model, DynamicCache(), 0, prefix_ids, dev)
        dk = dv = 0.0
        for layer, (k, v) in enumerate(zip(ks, vs)):
            pk, pv = (t.float().cpu() for t in cache_kv(past, layer))
            dk = max(dk, ((pk - k).abs().max() / k.abs().max()).item())
            dv = max(dv, ((pv - v).abs().max() / v.abs().max()).item())
        print(f"K/V of the prefix run by transformers vs the cushion (untuned): max |diff| / max |K|, |V| = "
              f"{dk:.3g}, {dv:.3g}")
        ok &= max(dk, dv) <= a.rtol
    got = got[-1].cpu()
    diff, scale = (got - last_logits).abs().max().item(), last_logits.abs().max().item()
    print(f"next-token logits at the cushion's last position: max |diff| = {diff:.3g}, max |logit| {scale:.4g}, "
          f"ratio {diff / scale:.3g} (limit {a.rtol:g}); argmax {int(got.argmax())} vs {int(last_logits.argmax())}")
    ok &= diff <= a.rtol * scale and int(got.argmax()) == int(last_logits.argmax())

    # 2. Greedy decoding after the cushion matches `cushion generate --cushion ... --json`.
    if a.cushion_json:
        ref = json.load(open(a.cushion_json))
        prompt_ids = list(ref["prompt_tokens"])
        if prompt_ids and prompt_ids[0] == prefix_ids[0]:
            prompt_ids = prompt_ids[1:]  # the cushion supplies <bos>
    else:
        prompt_ids = encode_prompt(a.model, a.prompt)
        ref = None
    eos = set()
    for key in ("eos_token_id", "bos_token_id"):
        v = getattr(model.config, key, None)
        eos |= set(v) if isinstance(v, list) else {v} if v is not None else set()
    n_new = len(ref["tokens"]) if ref else 20
    tokens, prompt_logits, gap = greedy(model, ks, vs, last_logits, prompt_ids, n_new, eos, dev, dtype)
    print(f"greedy after the cushion: {len(tokens)} tokens, smallest top-2 logit gap {gap:.3g}: {tokens}")
    if ref is not None:
        want = list(ref["tokens"])
        same = tokens == want
        print("matches `cushion generate`:", same)
        if not same:
            n = next((i for i, (x, y) in enumerate(zip(tokens, want)) if x != y), min(len(tokens), len(want)))
            print(f"  first difference at generated token {n}: {tokens[n:n + 5]} vs {want[n:n + 5]}")
        ok &= same
    if a.ref_logits:
        if prompt_logits is None:
            sys.exit("--ref-logits needs a prompt of at least one token after the cushion")
        ref_l = torch.from_numpy(np.fromfile(a.ref_logits, dtype="<f4").reshape(prompt_logits.shape))
        d, s = (prompt_logits - ref_l).abs().max().item(), ref_l.abs().max().item()
        print(f"logits of the {len(prompt_ids)} prompt tokens after the cushion vs `cushion`: max |diff| {d:.3g}, "
              f"max |logit| {s:.4g}, ratio {d / s:.3g} (limit {a.rtol:g})")
        ok &= d <= a.rtol * s
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
