#!/usr/bin/env python3
"""Check a CushionCache cushion outside this tool, in plain numpy (float64; no torch, no transformers).

The same two checks as hf_cushion_example.py, with the Llama forward pass written out after Hugging Face
transformers' LlamaForCausalLM (RMSNorm, rotate-half RoPE, grouped-query attention, SiLU MLP), so that what
this script does is what `past_key_values=<the cushion>` does there (written from transformers' code; it has
not itself been compared with transformers). `cushion.safetensors` holds:
    k.<layer>, v.<layer>  float32 (1, n_kv_heads, P, head_dim): keys AFTER RoPE at positions 0..P-1, values
                          (rotate-half layout, what transformers keeps in its cache)
    prefix_ids            int64 (P): the prefix tokens, starting with <bos>
    last_logits           float32 (V): the logits at the prefix's last position (they predict the first token)
Text after the cushion: prepend the K/V, feed the tokens WITHOUT <bos>, positions P, P+1, ..., every query
sees all P cached positions plus the text up to itself. A tuned cushion's K/V are free parameters (no
longer what the model makes of prefix_ids); the tool recomputes last_logits from them, as check 1 does.

  1. next-token logits: the cushion's last prefix token run against the first P-1 cached positions gives the
     cushion's `last_logits` (max |diff| <= --rtol * max |last_logits|, same argmax); for an untuned
     cushion the K/V of its prefix run from scratch must match too (relative to max |K|, max |V|);
  2. with --cushion-json (the output of `cushion generate MODEL --cushion FILE --prompt TEXT --json`):
     greedy decoding after the cushion from the same prompt token ids gives the same generated token ids.
It needs the full-precision model as a Hugging Face directory (config.json + model.safetensors, F32/F16/BF16).

    python3 numpy_cushion_check.py --model HF_DIR --cushion cushion.safetensors [--cushion-json generate.json]
(there is no tokenizer here: without --cushion-json only check 1 runs)

Exit status 0 when every check passes, 1 on a mismatch. --selftest-corrupt negates the cached K/V first:
the checks must then fail (the test suite uses it to show the check can fail).
"""
import argparse
import json
import struct
import sys

import numpy as np

DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "BF16": "<u2"}


def load_safetensors(path):
    """{name: float64/int64 array}, metadata. Layout: u64 header length, JSON header, little-endian data."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for name, t in header.items():
        if t["dtype"] not in DTYPES:
            sys.exit(f"{path}: tensor {name}: dtype {t['dtype']} not supported")
        b, e = t["data_offsets"]
        a = np.frombuffer(buf, dtype=DTYPES[t["dtype"]], count=(e - b) // np.dtype(DTYPES[t["dtype"]]).itemsize,
                          offset=8 + n + b).reshape(t["shape"])
        if t["dtype"] == "BF16":  # the top 16 bits of a float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        out[name] = a.astype(np.int64 if t["dtype"].startswith("I") else np.float64)
    return out, meta


class Llama:
    """transformers' LlamaForCausalLM forward pass (also Mistral, and Qwen2 with its q/k/v biases), float64."""

    def __init__(self, model_dir):
        self.cfg = c = json.load(open(f"{model_dir}/config.json"))
        if c.get("rope_scaling"):
            sys.exit("rope_scaling is not supported by this check")
        self.w, _ = load_safetensors(f"{model_dir}/model.safetensors")
        self.n_layers, self.n_heads = c["num_hidden_layers"], c["num_attention_heads"]
        self.n_kv = c.get("num_key_value_heads", self.n_heads)
        self.head_dim = c.get("head_dim") or c["hidden_size"] // self.n_heads
        self.eps, self.theta = c.get("rms_norm_eps", 1e-6), c.get("rope_theta", 10000.0)
        self.lm_head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])  # tied if absent

    def linear(self, x, name):
        y = x @ self.w[name + ".weight"].T
        return y + self.w[name + ".bias"] if name + ".bias" in self.w else y

    def rms_norm(self, x, name):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * self.w[name + ".weight"]

    def rope(self, x, pos):  # x (heads, T, head_dim); rotate-half: pairs (i, i + head_dim/2)
        inv_freq = 1.0 / self.theta ** (np.arange(0, self.head_dim, 2) / self.head_dim)
        ang = np.asarray(pos)[:, None] * inv_freq[None, :]
        cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
        half = self.head_dim // 2
        rot = np.concatenate([-x[..., half:], x[..., :half]], -1)
        return x * cos + rot * sin

    def forward(self, ids, cache, past_len):
        """Logits (T, V) of `ids` at positions past_len.. after the cached K/V (list of (k, v), each
        (n_kv, past_len, head_dim)); returns the logits and the cache extended by these tokens."""
        T, hd = len(ids), self.head_dim
        pos = np.arange(past_len, past_len + T)
        x = self.w["model.embed_tokens.weight"][ids]
        # query i (position past_len + i) sees every cached position and the tokens up to itself
        mask = np.triu(np.full((T, past_len + T), -np.inf), k=past_len + 1)
        new_cache = []
        for l in range(self.n_layers):
            p = f"model.layers.{l}."
            h = self.rms_norm(x, p + "input_layernorm")
            q = self.linear(h, p + "self_attn.q_proj").reshape(T, self.n_heads, hd).transpose(1, 0, 2)
            k = self.linear(h, p + "self_attn.k_proj").reshape(T, self.n_kv, hd).transpose(1, 0, 2)
            v = self.linear(h, p + "self_attn.v_proj").reshape(T, self.n_kv, hd).transpose(1, 0, 2)
            q, k = self.rope(q, pos), self.rope(k, pos)
            k = np.concatenate([cache[l][0], k], axis=1)  # past keys (already rotated) first
            v = np.concatenate([cache[l][1], v], axis=1)
            new_cache.append((k, v))
            rep = self.n_heads // self.n_kv  # GQA: kv head j serves query heads j*rep .. j*rep+rep-1
            kr, vr = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
            s = q @ kr.transpose(0, 2, 1) / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            o = (s / s.sum(-1, keepdims=True)) @ vr  # (heads, T, hd)
            x = x + self.linear(o.transpose(1, 0, 2).reshape(T, self.n_heads * hd), p + "self_attn.o_proj")
            h = self.rms_norm(x, p + "post_attention_layernorm")
            g = self.linear(h, p + "mlp.gate_proj")
            x = x + self.linear(g / (1.0 + np.exp(-g)) * self.linear(h, p + "mlp.up_proj"), p + "mlp.down_proj")
        return self.rms_norm(x, "model.norm") @ self.lm_head.T, new_cache


def load_cushion(path):
    t, meta = load_safetensors(path)
    if meta.get("format") != "cushioncache-cushion":
        sys.exit(f"{path}: not a cushion file")
    n_layers = 1 + max(int(k.split(".")[1]) for k in t if k.startswith("k."))
    ks = [t[f"k.{l}"][0] for l in range(n_layers)]  # drop the batch axis: (n_kv, P, head_dim)
    vs = [t[f"v.{l}"][0] for l in range(n_layers)]
    return t["prefix_ids"].tolist(), ks, vs, t["last_logits"], meta


def make_cache(ks, vs, length):
    """The first `length` positions of the cushion (what a DynamicCache would hold)."""
    return [(k[:, :length], v[:, :length]) for k, v in zip(ks, vs)]


def greedy(model, ks, vs, last_logits, prompt_ids, max_new, eos_ids):
    P = ks[0].shape[1]
    cache, pos = make_cache(ks, vs, P), P + len(prompt_ids)
    if prompt_ids:
        logits, cache = model.forward(prompt_ids, cache, P)
    else:  # the prompt was only <bos>: the cushion's last logits predict the first token
        logits = last_logits[None]
    out, margins = [], []
    for _ in range(max_new):
        top2 = np.sort(logits[-1])[-2:]
        margins.append(top2[1] - top2[0])
        nxt = int(np.argmax(logits[-1]))
        if nxt in eos_ids:
            break
        out.append(nxt)
        logits, cache = model.forward([nxt], cache, pos)
        pos += 1
    return out, min(margins) if margins else float("inf")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory (full precision)")
    ap.add_argument("--cushion", required=True, help="cushion.safetensors")
    ap.add_argument("--cushion-json", help="output of `cushion generate MODEL --cushion FILE --prompt TEXT --json`")
    ap.add_argument("--rtol", type=float, default=1e-4, help="logit tolerance, relative to max |last_logits|")
    ap.add_argument("--selftest-corrupt", action="store_true", help="negate the cached K and V (the checks must fail)")
    a = ap.parse_args()

    model = Llama(a.model)
    prefix_ids, ks, vs, last_logits, meta = load_cushion(a.cushion)
    if a.selftest_corrupt:
        ks, vs = [-k for k in ks], [-v for v in vs]
    P = len(prefix_ids)
    atol = a.rtol * np.abs(last_logits).max()
    print(f"cushion: {P} tokens {prefix_ids} ({meta.get('prefix_text', '')!r}), {len(ks)} layers")
    ok = True

    # 1. The cushion's last token after its first P-1 positions reproduces the cushion's last_logits.
    empty = make_cache(ks, vs, 0)
    if P >= 2:
        got, _ = model.forward([prefix_ids[-1]], make_cache(ks, vs, P - 1), P - 1)
    else:  # a one-token cushion (<bos>): run it from scratch
        got, _ = model.forward(prefix_ids, empty, 0)
    if "tuning" not in json.loads(meta.get("settings") or "{}"):
        # not tuned: the cushion is just its prefix run through the model, so its K/V must match that too
        _, past = model.forward(prefix_ids, empty, 0)
        dk = max(np.abs(pk - k).max() / np.abs(k).max() for (pk, _), k in zip(past, ks))
        dv = max(np.abs(pv - v).max() / np.abs(v).max() for (_, pv), v in zip(past, vs))
        print(f"K/V of the prefix run from scratch vs the cushion (untuned): max |diff| / max |K|, |V| = "
              f"{dk:.3g}, {dv:.3g}")
        ok &= max(dk, dv) <= a.rtol
    got = got[-1]
    diff = np.abs(got - last_logits).max()
    print(f"next-token logits at the cushion's last position: max |diff| = {diff:.3g} (tolerance {atol:.3g}; "
          f"argmax {int(got.argmax())} vs {int(last_logits.argmax())})")
    ok &= diff <= atol and int(got.argmax()) == int(last_logits.argmax())

    # 2. Greedy decoding after the cushion matches `cushion generate --cushion ... --json`.
    if a.cushion_json:
        ref = json.load(open(a.cushion_json))
        prompt_ids = list(ref["prompt_tokens"])
        if prompt_ids and prompt_ids[0] == prefix_ids[0]:
            prompt_ids = prompt_ids[1:]  # the cushion supplies <bos>
        eos = set()
        for key in ("eos_token_id", "bos_token_id"):
            v = model.cfg.get(key)
            eos |= set(v) if isinstance(v, list) else {v} if v is not None else set()
        tokens, margin = greedy(model, ks, vs, last_logits, prompt_ids, len(ref["tokens"]), eos)
        same = tokens == list(ref["tokens"])
        print(f"greedy after the cushion: {len(tokens)} tokens, smallest top-2 logit gap {margin:.3g}; "
              f"matches `cushion generate`: {same}")
        if not same:
            want = list(ref["tokens"])
            n = next((i for i, (x, y) in enumerate(zip(tokens, want)) if x != y), min(len(tokens), len(want)))
            print(f"  first difference at generated token {n}: {tokens[n:n + 5]} vs {want[n:n + 5]}")
        ok &= same
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
