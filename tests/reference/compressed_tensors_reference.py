#!/usr/bin/env python3
"""`cushion export --format compressed-tensors` loaded by the real library: ctest `reference_compressed_tensors_*`,
label `reference`, never skipped (a missing model file or Python module is a failure).

  python compressed_tensors_reference.py --cushion EXE --model MODEL --work DIR --calib FILE --text FILE
         [--plant] [--tokenizer FILE] [--schemes w8a8,w8a16,w4a16] [--max-prefix N] [--tune-epochs N]

For the model (with --plant: `cushion plant-outliers MODEL` first, the model with LLaMA-2-like massive
activations), in DIR:
  1. `cushion calibrate` makes a cushion (greedy search up to --max-prefix tokens, then --tune-epochs of tuning);
  2. per scheme, `cushion export` writes the package (W8A8: per-tensor-static activations; W8A16, W4A16 g128:
     weight-only) and `cushion export PACKAGE --format compressed-tensors` converts it;
  3. `cushion eval PACKAGE --text FILE --json` gives the package's perplexity with its cushion;
  4. Hugging Face transformers with the PyPI `compressed-tensors` package loads the export on the CPU
     (AutoModelForCausalLM.from_pretrained: compressed-tensors applies the quantization_config, keeps the int8
     codes / int32-packed int4 codes, decompresses them and fake-quantizes each linear's input with its static
     input_scale / input_zero_point), and computes the README's perplexity protocol three ways:
       kv      the cushion's tuned K/V (cushion_kv.safetensors) as past key values, the documents without <bos>,
               positions from P, the first token predicted from last_logits, in the batches `cushion eval` runs
               (--batch-tokens): must equal `cushion eval --batch-tokens N` of the package to 1e-3 relative (W8A8;
               1e-5 weight-only) and count the same tokens. The engine computes RoPE, attention and the activation
               quantizer as transformers and compressed-tensors do, so the two agree to float rounding (~1e-15);
       prefix  the cushion's token ids (cushion_prefix.json) prepended to each document (without its <bos>), as a
               server with prefix caching would run them: printed (what is lost with the tokens alone);
       plain   no cushion (<bos> + the document): printed.
     It also checks that compressed-tensors really quantizes: every targeted linear has the scheme of the
     export, its input_scale / zero point equal the package's (zero point shifted by 2^(b-1) to the signed
     range), and the weights it decompresses equal the package's scale * code.
  5. transformers' AutoTokenizer loads the export's tokenizer (tokenizer.model or tokenizer.json with the
     tokenizer_config.json the export writes) and gives the engine's ids on every evaluation text, with the
     cushion's <bos> as bos_token_id.
Exit status 0 when everything matches, 1 otherwise.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

PPL_RTOL = 1e-3  # W8A8: |ppl transformers+compressed-tensors / ppl cushion eval - 1|
WEIGHT_ONLY_RTOL = 1e-5  # W8A16, W4A16
SCHEMES = {
    "w8a8": ["--wbits", "8", "--abits", "8", "--act", "per-tensor-static"],
    "w8a16": ["--wbits", "8", "--abits", "0"],
    "w4a16": ["--wbits", "4", "--abits", "0", "--group", "128"],
}
SITE_OF = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "o_proj": "o_in",
           "gate_proj": "mlp_in", "up_proj": "mlp_in", "down_proj": "down_in"}


def run(cmd):
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    print(f"  ran ({time.time() - t0:.1f} s): {' '.join(cmd)}")
    return p.stdout


class RefTokenizer:
    """`sentencepiece` for tokenizer.model, `tokenizers` for tokenizer.json (what the engine prefers when both are
    there); <bos> as the README's protocol says: the SentencePiece BOS, else <|endoftext|> where the vocabulary has
    it, else <s>."""

    def __init__(self, d):
        if os.path.exists(os.path.join(d, "tokenizer.model")):
            import sentencepiece as spm
            self.sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
            self.bos = self.sp.bos_id()
        else:
            from tokenizers import Tokenizer
            self.sp = None
            self.tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
            eot = self.tk.token_to_id("<|endoftext|>")
            self.bos = eot if eot is not None else self.tk.token_to_id("<s>")

    def encode(self, text):  # without <bos>
        return self.sp.encode(text) if self.sp is not None else self.tk.encode(text, add_special_tokens=False).ids


def write_gguf_tokenizer_json(gguf, work):
    """SmolLM2's tokenizer as tokenizer.json: transformers' GGUF tokenizer with the pre-tokenizer of SmolLM2's own
    tokenizer.json (Digits, then ByteLevel), as tests/reference/smollm2_reference.py builds and checks it against the
    engine's GGUF tokenizer."""
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer
    d, f = os.path.split(gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    path = os.path.join(work, "tokenizer.json")
    tok.backend_tokenizer.save(path)
    return path


def load_ct_model(d):
    """AutoModelForCausalLM on the export. transformers 5.x refuses a hidden size that is not heads x head_dim (the
    planted model: 65 = 64 + the planted channel, which Llama's code runs fine as head_dim is explicit); for such a
    config the check is passed by building it at heads x head_dim and setting the real size after."""
    from refcheck import load_causal_lm
    return load_causal_lm(d)


def check_loaded(model, ct_dir, pkg_dir, scheme):
    """compressed-tensors applied the export's scheme to every block linear, with the package's numbers."""
    import torch
    from safetensors.torch import load_file
    pkg = load_file(os.path.join(pkg_dir, "model.safetensors"))
    qcfg = json.load(open(os.path.join(ct_dir, "config.json")))["quantization_config"]
    wbits = int(scheme[1])
    abits = 0 if scheme.endswith("a16") else 8
    want_format = "int-quantized" if abits else "pack-quantized"
    problems = []
    if qcfg.get("quant_method") != "compressed-tensors" or qcfg.get("format") != want_format:
        problems.append(f"quantization_config method/format {qcfg.get('quant_method')}/{qcfg.get('format')}, "
                        f"want compressed-tensors/{want_format}")
    n = 0
    max_wdiff = 0.0
    for name, mod in model.named_modules():
        kind = name.rsplit(".", 1)[-1]
        if kind not in SITE_OF or ".layers." not in name:
            continue
        n += 1
        s = getattr(mod, "quantization_scheme", None)
        if s is None or s.weights is None or s.weights.num_bits != wbits or not s.weights.symmetric:
            problems.append(f"{name}: weight scheme {s and s.weights}")
            continue
        if abits:
            ia = s.input_activations
            if ia is None or ia.num_bits != 8 or ia.strategy != "tensor" or ia.dynamic or ia.symmetric:
                problems.append(f"{name}: input activations {ia}")
                continue
            layer = name.split(".layers.")[1].split(".")[0]
            pre = f"model.layers.{layer}.act.{SITE_OF[kind]}."
            if float(mod.input_scale.detach()) != float(pkg[pre + "input_scale"]) or \
                    int(mod.input_zero_point.detach()) != int(pkg[pre + "input_zero_point"]) - 128:
                problems.append(f"{name}: input_scale/zero_point {float(mod.input_scale)}/{int(mod.input_zero_point)}"
                                f" vs the package's {float(pkg[pre + 'input_scale'])}/"
                                f"{int(pkg[pre + 'input_zero_point'])} - 128")
        elif s.input_activations is not None:
            problems.append(f"{name}: activations quantized in a weight-only scheme")
        # the weight compressed-tensors runs (decompressed on the first forward) vs the package's scale * code
        w = mod.weight.detach().float()
        key = name + ".weight"
        if key in pkg:
            codes = pkg[key].float()
        else:  # 4-bit: two codes per byte, low nibble first, two's complement (core/quant/int4_pack.h)
            pk = pkg[key + "_packed"].to(torch.int16)
            nib = torch.stack([pk & 15, pk >> 4], -1).flatten(-2)[:, :w.shape[1]]
            codes = torch.where(nib >= 8, nib - 16, nib).float()
        sc = pkg[key + "_scale"]
        ref = (codes.reshape(codes.shape[0], sc.shape[1], -1) * sc[..., None]).reshape(codes.shape)
        max_wdiff = max(max_wdiff, float((w - ref).abs().max()))
    if n == 0:
        problems.append("no block linears found")
    if max_wdiff != 0.0:
        problems.append(f"decompressed weights differ from the package's scale * code by up to {max_wdiff:.3g}")
    print(f"  compressed-tensors: {n} block linears, format {qcfg.get('format')}, scheme checked, decompressed "
          f"weights == package scale x code (max |diff| {max_wdiff:.3g}): {'ok' if not problems else 'FAIL'}")
    for p in problems[:10]:
        print(f"    {p}")
    return not problems


def engine_batches(docs, max_batch_tokens):
    """The batches `cushion eval` runs (core/model/documents.cpp for_each_batch, BatchOrder::LongestFirst): documents
    (with <bos>) stably sorted longest first, then filled while the longest length times the count fits
    max_batch_tokens (at least one document each)."""
    order = sorted(range(len(docs)), key=lambda i: -len(docs[i]))
    batches, i = [], 0
    while i < len(order):
        batch, longest = [], 0
        while i < len(order):
            n = max(longest, len(docs[order[i]]))
            if batch and n * (len(batch) + 1) > max_batch_tokens:
                break
            longest = n
            batch.append(order[i])
            i += 1
        batches.append(batch)
    return batches


def check_auto_tokenizer(ct_dir, docs_text, docs, prefix_ids):
    """transformers' AutoTokenizer loads the export's tokenizer and encodes the evaluation texts to the ids the engine's
    tokenizer gives (docs: <bos> + the engine-equivalent ids; the token count is checked against `cushion eval`), with
    the export's <bos> / <eos>; the default call adds no special token (the cushion supplies <bos>)."""
    from transformers import AutoTokenizer
    from refcheck import read_documents
    problems = []
    kw = {}
    mcfg = json.load(open(os.path.join(ct_dir, "config.json")))
    if mcfg.get("model_type") == "llama" and mcfg["hidden_size"] % mcfg["num_attention_heads"]:
        # the planted model: transformers 5.x refuses its config (load_causal_lm); AutoTokenizer reads the config only
        # for the tokenizer class, which tokenizer_config.json names anyway
        from transformers import LlamaConfig
        mcfg["hidden_size"] = mcfg["num_attention_heads"] * mcfg["head_dim"]
        kw["config"] = LlamaConfig(**mcfg)
    try:
        at = AutoTokenizer.from_pretrained(ct_dir, **kw)
    except Exception as e:
        print(f"  AutoTokenizer.from_pretrained({ct_dir}): FAIL: {type(e).__name__}: {str(e)[:500]}")
        return False
    lines = read_documents(docs_text)
    bad = [i for i, line in enumerate(lines) if at(line).input_ids != docs[i][1:]]
    if bad:
        i = bad[0]
        got, want = at(lines[i]).input_ids, docs[i][1:]
        j = next((k for k, (x, y) in enumerate(zip(got, want)) if x != y), min(len(got), len(want)))
        problems.append(f"{len(bad)}/{len(lines)} texts encode differently (text {i}, first at token {j}: "
                        f"{got[j:j + 5]} vs {want[j:j + 5]})")
    if at.bos_token_id != prefix_ids[0]:
        problems.append(f"bos_token_id {at.bos_token_id}, the cushion starts with {prefix_ids[0]}")
    cfg = json.load(open(os.path.join(ct_dir, "tokenizer_config.json")))
    print(f"  AutoTokenizer: {type(at).__name__} ({cfg.get('tokenizer_class')}), bos {at.bos_token!r} "
          f"eos {at.eos_token!r}; {len(lines) - len(bad)}/{len(lines)} evaluation texts give the engine's ids: "
          f"{'ok' if not problems else 'FAIL'}")
    for p in problems:
        print(f"    {p}")
    return not problems


def perplexities(model, docs, prefix_ids, ks, vs, last_logits, max_len, batch_tokens, modes=("kv", "prefix", "plain")):
    """(ppl, tokens) for the modes kv, prefix, plain (docs: lists of ids starting with <bos>).
    kv runs the documents in the batches `cushion eval --batch-tokens batch_tokens` runs (right-padded, an attention
    mask over the cushion and the real tokens): a float32 matrix product's rounding depends on its shape, and the
    fake-quantized network carries a one-ulp difference through its rounding boundaries to the perplexity, so the
    comparison runs the same shapes (padding does not change the real rows: causal attention, row-wise linears)."""
    import torch
    from transformers import DynamicCache
    import inspect
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    P = len(prefix_ids)
    tot = {m: 0.0 for m in modes}
    docs = [ids[:max_len] for ids in docs if len(ids[:max_len]) >= 2]
    count = sum(len(ids) - 1 for ids in docs)
    with torch.no_grad():
        for ids in docs:
            text = ids[1:]
            tgt = torch.tensor(text)
            if "plain" in tot and prefix_ids == ids[:1]:  # a <bos>-only cushion: plain is the prefix mode
                pass
            elif "plain" in tot:  # <bos> + text, positions 0..
                lg = model(input_ids=torch.tensor([ids])).logits[0].double()
                tot["plain"] += float(torch.nn.functional.cross_entropy(lg[:-1], tgt, reduction="sum"))
            if "prefix" in tot:  # the cushion's tokens + text, positions 0..
                lg = model(input_ids=torch.tensor([prefix_ids + text])).logits[0].double()
                tot["prefix"] += float(torch.nn.functional.cross_entropy(lg[P - 1:-1], tgt, reduction="sum"))
        if "kv" in tot:
            # the cushion's K/V as the cache, the texts at positions P.., the first token from last_logits
            first = torch.log_softmax(last_logits.double(), -1)
            for batch in engine_batches(docs, batch_tokens):
                texts = [docs[i][1:] for i in batch]
                B, T = len(texts), max(len(t) for t in texts)
                ids = torch.tensor([t + [0] * (T - len(t)) for t in texts])
                mask = torch.tensor([[1] * (P + len(t)) + [0] * (T - len(t)) for t in texts])
                cache = DynamicCache()
                for layer, (k, v) in enumerate(zip(ks, vs)):
                    cache.update(k.expand(B, -1, -1, -1).clone(), v.expand(B, -1, -1, -1).clone(), layer)
                pos = torch.arange(P, P + T).unsqueeze(0).expand(B, T)
                out = model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=True, **{cache_arg: cache})
                for b, text in enumerate(texts):  # row by row: a batch's float64 log-probabilities take gigabytes
                    logp = torch.log_softmax(out.logits[b, :len(text) - 1].double(), -1)
                    tot["kv"] -= float(first[text[0]])
                    tot["kv"] -= float(logp[torch.arange(len(text) - 1), torch.tensor(text[1:])].sum())
                del out
    if "plain" in tot and docs and prefix_ids == docs[0][:1]:
        tot["plain"] = tot["prefix"]
    return {m: math.exp(v / count) for m, v in tot.items()}, count


def check_scheme(a, model_path, cushion_file, scheme, docs_text):
    import torch
    from safetensors.torch import load_file
    from refcheck import read_documents
    pkg = os.path.join(a.work, f"pkg-{scheme}")
    ct = os.path.join(a.work, f"ct-{scheme}")
    tok_args = ["--tokenizer", a.tokenizer] if a.tokenizer else []
    print(f"[{scheme}]")
    run([a.cushion, "export", model_path, "--cushion", cushion_file, "--calib", a.calib, "--text", a.text,
         "--out", pkg, "--force", "--quiet"] + SCHEMES[scheme] + tok_args)
    run([a.cushion, "export", pkg, "--format", "compressed-tensors", "--out", ct, "--force", "--quiet"])
    ev = json.loads(run([a.cushion, "eval", pkg, "--text", a.text, "--json", "--quiet", "--batch-tokens",
                         str(a.batch_tokens)]))
    want, want_tokens = ev["ppl_cushion"], ev["tokens"]

    for f in ("config.json", "model.safetensors", "cushion_prefix.json", "cushion_kv.safetensors", "CUSHION.md",
              "tokenizer_config.json"):
        if not os.path.isfile(os.path.join(ct, f)):
            print(f"  FAIL: {f} missing in {ct}")
            return False
    model = load_ct_model(ct)
    with torch.no_grad():  # compressed-tensors decompresses the weights on the first forward
        model(input_ids=torch.tensor([[0]]))
    ok = check_loaded(model, ct, pkg, scheme)

    kv = load_file(os.path.join(ct, "cushion_kv.safetensors"))
    prefix = json.load(open(os.path.join(ct, "cushion_prefix.json")))
    prefix_ids = [int(x) for x in prefix["prefix_ids"]]
    L = model.config.num_hidden_layers
    ks = [kv[f"k.{l}"] for l in range(L)]
    vs = [kv[f"v.{l}"] for l in range(L)]
    if kv["prefix_ids"].tolist() != prefix_ids:
        print(f"  FAIL: cushion_prefix.json {prefix_ids} vs cushion_kv.safetensors {kv['prefix_ids'].tolist()}")
        ok = False
    tok = RefTokenizer(ct)
    if prefix_ids[0] != tok.bos:
        print(f"  FAIL: the prefix starts with {prefix_ids[0]}, not <bos> {tok.bos}")
        ok = False
    docs = [[tok.bos] + tok.encode(line) for line in read_documents(docs_text)]
    ok &= check_auto_tokenizer(ct, docs_text, docs, prefix_ids)
    t0 = time.time()
    # `cushion eval` of a package truncates each document (<bos> included) to context - P + 1 tokens, so that the
    # cushion and the text fit the context (QuantizedPackage::max_doc_tokens); every mode here runs those documents
    max_len = model.config.max_position_embeddings - len(prefix_ids) + 1
    ppl, n = perplexities(model, docs, prefix_ids, ks, vs, kv["last_logits"], max_len, a.batch_tokens)
    rel = abs(ppl["kv"] / want - 1)
    print(f"  perplexity ({n} tokens, cushion eval {want_tokens}; {time.time() - t0:.1f} s): cushion eval {want:.6f}; "
          f"transformers + compressed-tensors: tuned K/V {ppl['kv']:.6f} (|ratio - 1| {rel:.2e}), "
          f"token prefix only {ppl['prefix']:.6f}, no cushion {ppl['plain']:.6f}")
    # The same arithmetic on both sides (the engine's RoPE angles, attention and activation quantizer are computed as
    # transformers and compressed-tensors compute them, the same batches): agreement to float rounding. W8A8 is held
    # to the 1e-3; weight-only to 1e-5.
    limit = WEIGHT_ONLY_RTOL if scheme.endswith("a16") else PPL_RTOL
    good = n == want_tokens and rel <= limit
    print(f"  tuned K/V vs cushion eval: |ratio - 1| {rel:.2e}, limit {limit:.0e}: {'ok' if good else 'FAIL'}")
    ppl["limit"] = limit
    json.dump({"scheme": scheme, "cushion_eval": want, "tokens": n, **ppl, "prefix_ids": prefix_ids},
              open(os.path.join(a.work, f"ct-{scheme}.result.json"), "w"), indent=1)
    return ok and good


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cushion", required=True, help="the cushion executable")
    ap.add_argument("--model", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--tokenizer", help="tokenizer file for the export (a GGUF's vocabulary is not one)")
    ap.add_argument("--tokenizer-from-gguf", action="store_true",
                    help="write MODEL's (a GGUF) tokenizer as tokenizer.json with transformers, as reference_smollm2 does, "
                         "and export with it")
    ap.add_argument("--plant", action="store_true", help="plant outliers into MODEL first")
    ap.add_argument("--schemes", default="w8a8,w8a16,w4a16")
    ap.add_argument("--max-prefix", default="2")
    ap.add_argument("--tune-epochs", default="1")
    ap.add_argument("--candidates", help="candidate token ids for the search (default: every non-special token)")
    ap.add_argument("--batch-tokens", type=int, default=8192,
                    help="`cushion eval --batch-tokens`; transformers runs the same batches (default 8192, eval's)")
    ap.add_argument("--fetch-hint", default="", help="what to run when MODEL is missing")
    a = ap.parse_args()
    t_start = time.time()
    if not os.path.exists(a.model):
        print(f"FAIL: {a.model} is missing{': run `' + a.fetch_hint + '`' if a.fetch_hint else ''}")
        print("RESULT: FAIL")
        return 1
    os.makedirs(a.work, exist_ok=True)
    import compressed_tensors
    import torch
    import transformers
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    transformers.utils.logging.disable_progress_bar()
    print(f"transformers {transformers.__version__}, compressed-tensors {compressed_tensors.__version__}, "
          f"torch {torch.__version__}; model {a.model}{' (planted)' if a.plant else ''}")
    if a.tokenizer_from_gguf:
        a.tokenizer = write_gguf_tokenizer_json(a.model, a.work)
    tok_args = ["--tokenizer", a.tokenizer] if a.tokenizer else []
    model_path = a.model
    if a.plant:
        model_path = os.path.join(a.work, "planted")
        run([a.cushion, "plant-outliers", a.model, model_path, "--force"] if os.path.exists(model_path)
            else [a.cushion, "plant-outliers", a.model, model_path])
    cushion_file = os.path.join(a.work, "model.cushion")
    cal = [a.cushion, "calibrate", model_path, "--calib", a.calib, "--out", cushion_file, "--max-prefix",
           a.max_prefix, "--tune-epochs", a.tune_epochs, "--quiet"] + tok_args
    if a.candidates:
        cal += ["--candidates", a.candidates]
    run(cal)
    ok = True
    for scheme in a.schemes.split(","):
        try:
            ok &= check_scheme(a, model_path, cushion_file, scheme, a.text)
        except Exception as e:  # a failure of one scheme is reported, the others still run
            print(f"  FAIL: {type(e).__name__}: {e}")
            ok = False
    print(f"({time.time() - t_start:.0f} s)")
    print(f"RESULT: {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
