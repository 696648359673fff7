"""GGUF files written by gguf-py (llama.cpp's own Python package: GGUFWriter, GGUFReader, quants) read by the engine's
loader (core/gguf_loader.cpp).

    python gguf_check.py --tokenize-ids EXE --cushion EXE --write-hf-dir EXE --source REPO_ROOT --out DIR

From resources/models/stories260K/stories260K.gguf, read with GGUFReader, gguf-py writes:
  rewrite   every metadata key and tensor copied as they are (F32)
  f16       2-D weights as F16, with general.alignment = 64
  bf16      2-D weights as BF16
  q8_0      2-D weights as Q8_0 where rows allow (ffn_down's 172-wide rows stay F32, as llama.cpp does)
            (the 4/5-bit and K block types: tests/gguf_blocks/check_gguf_blocks.py)
  qwen2     general.architecture = qwen2: keys renamed, Q/K rows turned into rotate-half order (qwen2 GGUFs are not
            permuted), zero q/k/v biases added
  gpt2-vocab the F32 weights with a byte-level BPE vocabulary (tokenizer.ggml.model = gpt2, pre = llama-bpe, merges,
            token types) made with HF tokenizers from the sample texts
For each the engine must give:
  * `cushion info --json` (rewrite, q8_0, qwen2, gpt2-vocab): the same configuration as the original (and as
    GGUFReader's metadata); the rewrite the same fingerprint;
  * the same tensors as gguf-py: write_hf_dir's model.safetensors (the engine's weights as loaded, float32) equal
    gguf-py's dequantization (gguf.quants.dequantize) of every tensor, bit for bit, after llama.cpp's Q/K permutation;
  * `cushion ppl --json` on the first 3 documents of tinystories-eval.txt: the rewrite exactly the original's, qwen2 within 1e-7
    perplexity (same tokens, same logits), q8_0 within 1% of it;
  * gpt2-vocab: its tokenizer (the GGUF "gpt2" path, ignore_merges as llama.cpp does for llama-bpe) gives
    HF tokenizers' ids on the sample texts and edge strings.
The engine itself writes no GGUF (exports are safetensors), so there is nothing of ours for GGUFReader to read back
beyond these files; GGUFReader re-reads each file written here as a sanity check of the writer.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np  # a missing module is a failure, not a skip
import gguf
from gguf import GGMLQuantizationType as QT, GGUFReader, GGUFValueType as VT, GGUFWriter
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tokenizer"))
import refcommon as rc  # noqa: E402

FAILED = []


def fail(msg):
    FAILED.append(msg)
    print("FAIL: " + msg)


def field_value(f):
    """A GGUFReader field as (value, vtype, sub_type) for GGUFWriter.add_key_value."""
    t = f.types[0]
    if t == VT.ARRAY:
        return list(f.contents()), t, f.types[1]
    return f.contents(), t, None


def tensor_f32(t):
    """A GGUFReader tensor dequantized by gguf-py, row-major (PyTorch) shape."""
    shape = tuple(int(d) for d in reversed(t.shape))
    if t.tensor_type in (QT.F32,):
        return np.array(t.data, dtype=np.float32).reshape(shape)
    return gguf.quants.dequantize(np.array(t.data), t.tensor_type).astype(np.float32).reshape(shape)


def permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf permutation: Hugging Face (rotate-half) Q/K rows -> GGUF interleaved rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_variant(src, path, variant, vocab=None):
    arch_src = src.fields["general.architecture"].contents()
    arch = "qwen2" if variant == "qwen2" else arch_src
    w = GGUFWriter(path, arch)
    n_head = int(src.fields[f"{arch_src}.attention.head_count"].contents())
    n_kv = int(src.fields[f"{arch_src}.attention.head_count_kv"].contents())
    for key, f in src.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture" or key == "general.alignment":
            continue
        if vocab is not None and key.startswith("tokenizer."):
            continue
        if key.startswith(arch_src + "."):
            key = arch + key[len(arch_src):]
        val, vt, sub = field_value(f)
        w.add_key_value(key, val, vt, sub)
    if variant == "f16":
        w.add_custom_alignment(64)
    if vocab is not None:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(vocab["pre"])
        w.add_token_list(vocab["tokens"])
        w.add_token_types(vocab["types"])
        w.add_token_merges(vocab["merges"])
        w.add_bos_token_id(vocab["bos"])
        w.add_eos_token_id(vocab["eos"])
    for t in src.tensors:
        a = tensor_f32(t)
        name = t.name
        if variant == "qwen2" and name.endswith(("attn_q.weight", "attn_k.weight")):
            a = unpermute(a, n_head if "attn_q" in name else n_kv)
        if a.ndim == 2 and variant in ("f16", "bf16", "q8_0"):
            qt = {"f16": QT.F16, "bf16": QT.BF16, "q8_0": QT.Q8_0}[variant]
            if qt not in (QT.F16, QT.BF16) and a.shape[1] % 32 != 0:  # 32-element blocks along rows
                qt = QT.F32
            if qt == QT.F16:
                w.add_tensor(name, a.astype(np.float16))
            elif qt != QT.F32:
                w.add_tensor(name, gguf.quants.quantize(a, qt), raw_dtype=qt)
            else:
                w.add_tensor(name, a)
        else:
            w.add_tensor(name, a)
        if variant == "qwen2" and name.endswith("attn_v.weight"):  # a = (n_kv * head_dim, dim)
            blk = name[: -len("attn_v.weight")]
            head_dim = a.shape[0] // n_kv
            for p, n in (("attn_q", n_head), ("attn_k", n_kv), ("attn_v", n_kv)):
                w.add_tensor(blk + p + ".bias", np.zeros(n * head_dim, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def run(cmd, what):
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit(f"FAIL: {what}: {' '.join(cmd)} exited {p.returncode}\n{p.stderr}")
    return p.stdout, time.time() - t0


CONFIG_KEYS = ["arch", "dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "vocab_size",
               "max_seq_len", "rope_theta", "norm_eps", "tied_embeddings"]

HF_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
            "output.weight": "lm_head.weight"}
BLK = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
       "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
       "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def hf_name(gguf_name):
    if gguf_name in HF_NAMES:
        return HF_NAMES[gguf_name]
    _, i, part, kind = gguf_name.split(".")
    return f"model.layers.{i}.{BLK[part]}.{kind}"


def byte_level_vocab(out_dir, root, vocab_size):
    """A Llama-3-style byte-level BPE (vocab_size entries) trained with HF tokenizers; its tokenizer.json and the
    GGUF vocabulary arrays llama.cpp's converter would write for it."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tokenizer"))
    import hf_tokenizers_check as hf
    from tokenizers import processors
    tok = hf.train_byte_level(root, hf.split_then_byte_level(hf.LLAMA3_RE), ["<|begin_of_text|>", "<|end_of_text|>"],
                              vocab_size=vocab_size)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = True
    path = os.path.join(out_dir, "gpt2-vocab.tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    n = max(j["model"]["vocab"].values()) + 1
    tokens = [""] * n
    types = [1] * n
    for t, i in j["model"]["vocab"].items():
        tokens[i] = t
    for a in j["added_tokens"]:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = 3 if a["special"] else 4
    merges = [m if isinstance(m, str) else m[0] + " " + m[1] for m in j["model"]["merges"]]
    return path, {"pre": "llama-bpe", "tokens": tokens, "types": types, "merges": merges,
                  "bos": tokens.index("<|begin_of_text|>"), "eos": tokens.index("<|end_of_text|>")}


def main():
    ap = argparse.ArgumentParser()
    for a in ("tokenize-ids", "cushion", "write-hf-dir", "source", "out"):
        ap.add_argument("--" + a, required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t_start = time.time()
    print(f"gguf-py {gguf.__file__}, numpy {np.__version__}")
    src_path = os.path.join(args.source, "resources", "models", "stories260K", "stories260K.gguf")
    eval_txt = os.path.join(args.source, "resources", "text", "tinystories-eval.txt")
    src = GGUFReader(src_path)
    arch = src.fields["general.architecture"].contents()
    n_head = int(src.fields[f"{arch}.attention.head_count"].contents())
    n_kv = int(src.fields[f"{arch}.attention.head_count_kv"].contents())

    vocab_json, vocab = byte_level_vocab(args.out, args.source, 512)
    variants = ["rewrite", "f16", "bf16", "q8_0", "qwen2", "gpt2-vocab"]
    files = {"original": src_path}
    for v in variants:
        p = os.path.join(args.out, f"stories260K-{v}.gguf")
        write_variant(src, p, v, vocab if v == "gpt2-vocab" else None)
        files[v] = p
        GGUFReader(p)  # gguf-py reads back what it wrote
    print(f"gguf-py wrote {len(variants)} files in {args.out}")

    # Configuration, fingerprint, perplexity (on the first 3 documents of tinystories-eval.txt, to keep the test short),
    # and the engine's weights as loaded (write_hf_dir); two processes at a time.
    ppl_txt = os.path.join(args.out, "ppl-text.txt")
    with open(eval_txt, encoding="utf-8") as f:
        docs = [l for l in f.read().split("\n") if l][:3]
    with open(ppl_txt, "w", encoding="utf-8") as f:
        f.write("\n".join(docs) + "\n")
    # (f16 / bf16 take their configuration and perplexity on trust from the bit-identical tensors: fewer processes.)
    commands = {}
    for v, p in files.items():
        if v not in ("f16", "bf16"):
            commands[("info", v)] = [args.cushion, "info", p, "--json"]
        if v in ("original", "rewrite", "qwen2", "q8_0"):
            commands[("ppl", v)] = [args.cushion, "ppl", p, "--text", ppl_txt, "--json"]
        if v not in ("original", "gpt2-vocab"):  # (the original's tensors are the rewrite's, per GGUFReader)
            d = os.path.join(args.out, f"hf-{v}")
            shutil.rmtree(d, ignore_errors=True)
            commands[("hf", v)] = [args.write_hf_dir, p, d]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(commands, pool.map(lambda k: run(commands[k], " ".join(k)), commands)))
    secs = sum(t for _, t in results.values())
    info = {v: json.loads(out) for (kind, v), (out, _) in results.items() if kind == "info"}
    ppl = {v: json.loads(out) for (kind, v), (out, _) in results.items() if kind == "ppl"}
    meta = {"dim": f"{arch}.embedding_length", "hidden_dim": f"{arch}.feed_forward_length",
            "n_layers": f"{arch}.block_count", "n_heads": f"{arch}.attention.head_count",
            "n_kv_heads": f"{arch}.attention.head_count_kv", "max_seq_len": f"{arch}.context_length"}
    for k, key in meta.items():
        if info["original"][k] != int(src.fields[key].contents()):
            fail(f"original: {k} = {info['original'][k]}, GGUFReader says {key} = {src.fields[key].contents()}")
    eps = float(src.fields[f"{arch}.attention.layer_norm_rms_epsilon"].contents())
    if abs(info["original"]["norm_eps"] - eps) > 1e-12:
        fail(f"original: norm_eps {info['original']['norm_eps']} vs metadata {eps}")
    print(f"\n{'file':<12} {'format':<6} {'arch':<6} {'fingerprint':<17} {'tokenizer':<10} {'ppl':>12} {'tokens':>7}")
    for v in info:
        i = info[v]
        pv = ppl.get(v, {"ppl": float("nan"), "tokens": 0})
        print(f"{v:<12} {i['format']:<6} {i['arch']:<6} {i['fingerprint']:<17} {i['tokenizer']:<10} "
              f"{pv['ppl']:>12.6f} {pv['tokens']:>7}")
        want_arch = "qwen2" if v == "qwen2" else arch
        for k in CONFIG_KEYS:
            want = want_arch if k == "arch" else info["original"][k]
            if i[k] != want:
                fail(f"{v}: config {k} = {i[k]}, original {want}")
        if i.get("qkv_bias") != (v == "qwen2"):
            fail(f"{v}: qkv_bias = {i.get('qkv_bias')}")
        if i["warnings"]:
            fail(f"{v}: warnings {i['warnings']}")
    if info["rewrite"]["fingerprint"] != info["original"]["fingerprint"]:
        fail("rewrite: fingerprint differs from the original's")
    if info["gpt2-vocab"]["tokenizer"] != "byte-bpe":
        fail(f"gpt2-vocab: tokenizer kind {info['gpt2-vocab']['tokenizer']}")
    base = ppl["original"]["ppl"]
    # The rewrite is the same model computed the same way: bit for bit. The qwen2 copy has the same weights (checked
    # bit for bit below) but q/k/v biases (zero), so its products run as addmm instead of mm: float rounding only
    # (2.5e-8 relative seen once on a loaded machine; equal in other runs).
    for v, tol in (("rewrite", 0.0), ("qwen2", 1e-7)):
        if not abs(ppl[v]["ppl"] / base - 1) <= tol or ppl[v]["tokens"] != ppl["original"]["tokens"]:
            fail(f"{v}: ppl {ppl[v]['ppl']!r} ({ppl[v]['tokens']} tokens), original {base!r} (tolerance {tol:g})")
    for v, tol in (("q8_0", 0.01),):
        if not abs(ppl[v]["ppl"] / base - 1) < tol:
            fail(f"{v}: ppl {ppl[v]['ppl']} vs original {base}: more than {tol:.1%} apart")

    # Tensors: the engine's loaded weights (write_hf_dir) vs gguf-py's dequantization.
    n_tensors = n_exact = 0
    per_file = []
    for v, p in files.items():
        if ("hf", v) not in commands:
            continue
        before = n_exact
        d = os.path.join(args.out, f"hf-{v}")
        ours = load_file(os.path.join(d, "model.safetensors"))
        r = GGUFReader(p)
        seen = set()
        for t in r.tensors:
            ref = tensor_f32(t)
            name = hf_name(t.name)
            if name not in ours:
                if name == "lm_head.weight" and info["original"]["tied_embeddings"]:
                    continue
                fail(f"{v}: {t.name} ({name}) missing from the engine's weights")
                continue
            seen.add(name)
            a = ours[name].astype(np.float32)
            if v != "qwen2" and (t.name.endswith("attn_q.weight") or t.name.endswith("attn_k.weight")):
                a = permute(a, n_head if "attn_q" in t.name else n_kv)  # back to GGUF's interleaved rows
            n_tensors += 1
            if a.shape != ref.shape:
                fail(f"{v}: {t.name} shape {a.shape}, gguf-py {ref.shape}")
            elif not np.array_equal(a, ref):
                fail(f"{v}: {t.name} ({t.tensor_type.name}) differs from gguf-py's: max |diff| "
                     f"{np.abs(a - ref).max():.3g}")
            else:
                n_exact += 1
        per_file.append(f"{v} {n_exact - before}/{len(r.tensors)} ({', '.join(sorted({t.tensor_type.name for t in r.tensors}))})")
        extra = set(ours) - seen - {"lm_head.weight"}
        if extra:
            fail(f"{v}: the engine has tensors gguf-py does not: {sorted(extra)[:5]}")
    print(f"\ntensors: {n_tensors} compared with gguf-py's dequantization, {n_exact} bit-identical, "
          f"{n_tensors - n_exact} differ; bit-identical per file: {'; '.join(per_file)}")

    # The GGUF "gpt2" vocabulary: ids vs HF tokenizers on the same tokenizer.json.
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(vocab_json)
    strings = rc.text_lines(args.source) + rc.EDGE + rc.random_strings(200)
    tool = rc.Tool(args.tokenize_ids)
    _, got = tool.run(f"model:{files['gpt2-vocab']}", strings)
    want = [e.ids for e in tok.encode_batch(strings, add_special_tokens=False)]
    bad = sum(1 for g, w in zip(got, want) if g["ids"] != w)
    for s, g, w in zip(strings, got, want):
        if g["ids"] != w and bad < 50:
            print(f"MISMATCH gpt2-vocab {rc.show(s)}\n    ours: {g['ids']}\n    want: {w}")
    print(f"gpt2-vocab tokenizer (GGUF metadata): {len(strings)} strings, {bad} mismatches")
    if bad:
        fail(f"gpt2-vocab: {bad} of {len(strings)} strings tokenized differently from HF tokenizers")
    print(f"{len(commands)} cushion / write_hf_dir runs ({secs:.1f} s, two at a time), total {time.time() - t_start:.1f} s")
    if FAILED:
        print(f"RESULT: FAIL ({len(FAILED)} failures)")
        sys.exit(1)
    print("RESULT: PASS")


if __name__ == "__main__":
    main()
