"""What the transformers reference scripts (hf_models_reference.py, smollm2_reference.py) share: the engine's
document reading, its perplexity protocol run in transformers, and the logits comparison against transformers with
its printed figures."""
import json
import math
import os

import numpy as np
import torch


def read_documents(path):
    """core/perplexity.cpp read_documents: lines split at \\n, a trailing \\r dropped, lines of only spaces and
    tabs skipped."""
    docs = []
    for line in open(path, "rb").read().split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip(b" \t"):
            docs.append(line.decode("utf-8"))
    return docs


def transformers_perplexity(model, docs, encode, bos, ctx):
    """core/model/perplexity.cpp's protocol in transformers: each document is <bos> + encode(doc) (ids without <bos>),
    cut to the context `ctx`; a document of fewer than 2 tokens predicts nothing; every token after the first is
    predicted, log-softmax in float64. Returns (perplexity, predicted tokens, documents cut to the context)."""
    nll, count, truncated = 0.0, 0, 0
    with torch.no_grad():
        for doc in docs:
            ids = [bos] + list(encode(doc))
            if len(ids) > ctx:
                ids, truncated = ids[:ctx], truncated + 1
            if len(ids) < 2:
                continue
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
            nll -= lp[:-1].gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
            count += len(ids) - 1
    return math.exp(nll / count), count, truncated


def check_perplexity(engine_json, ppl, count, docs, text_path, rtol, note=""):
    """The engine's `ppl --json` result against transformers' (ppl, predicted tokens) on the same documents: the
    relative difference within rtol and the same token and document counts. Prints the (c) line; returns ok."""
    pj = json.loads(engine_json)
    rel = abs(pj["ppl"] / ppl - 1)
    good = rel <= rtol and pj["tokens"] == count and pj["docs"] == len(docs)
    print(f"(c) perplexity on {os.path.basename(text_path)} ({len(docs)} documents{note}): cushion {pj['ppl']:.7g} "
          f"over {pj['tokens']} tokens, transformers {ppl:.7g} over {count}; relative diff {rel:.3g} "
          f"(limit {rtol:g}): {'ok' if good else 'FAIL'}")
    return good


def load_causal_lm(path, **kw):
    """AutoModelForCausalLM from a directory in float32, eval mode. transformers 5.x refuses a hidden size that is not
    heads x head_dim (the planted model: 65 = 64 + the planted channel, which Llama's code runs fine as head_dim is
    explicit); for such a config the check is passed by building it at heads x head_dim and setting the real size
    after."""
    import json
    import os
    from transformers import AutoModelForCausalLM, LlamaConfig
    cfg = json.load(open(os.path.join(path, "config.json")))
    if cfg.get("model_type") == "llama" and cfg["hidden_size"] % cfg["num_attention_heads"]:
        real = cfg["hidden_size"]
        cfg["hidden_size"] = cfg["num_attention_heads"] * cfg["head_dim"]
        c = LlamaConfig(**cfg)
        c.hidden_size = real
        kw["config"] = c
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kw).eval()


def compare_logits(ours_bin, shape_line, theirs, rtol):
    """ours_bin: float32 (T, V) written by tests/tools/dump_logits, whose stdout was `shape_line` ("T V");
    theirs: transformers' (T, V) logits. Prints the figures; True when max |diff| <= rtol * max |logit|."""
    T, V = map(int, shape_line.split())
    ours = torch.from_numpy(np.fromfile(ours_bin, dtype="<f4").reshape(T, V))
    if ours.shape != theirs.shape:
        raise RuntimeError(f"shape {tuple(ours.shape)} vs transformers {tuple(theirs.shape)}")
    diff, scale = (ours - theirs).abs().max().item(), theirs.abs().max().item()
    same = int((ours.argmax(-1) == theirs.argmax(-1)).sum())
    good = diff <= rtol * scale
    print(f"(a) logits, {T} tokens x {V}: max |diff| {diff:.3g}, max |logit| {scale:.4g}, ratio {diff / scale:.3g} "
          f"(limit {rtol:g}); argmax agrees at {same}/{T} positions: {'ok' if good else 'FAIL'}")
    return good
