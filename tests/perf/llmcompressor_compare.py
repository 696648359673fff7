#!/usr/bin/env python3
"""W8A8 side by side: llm-compressor (PyPI `llmcompressor`) and the cushion, on the CPU, on the same model, the same
calibration and evaluation texts, the same perplexity protocol (README "Perplexity protocol": every non-empty line
one document, <bos> + its ids, mean NLL over positions 1..n-1; the token ids are the engine's, from tokenize_ids).

  .venv/bin/python tests/perf/llmcompressor_compare.py --model MODEL [--plant] --calib FILE --text FILE \
      --cushion build/bin/cushion --tokenize-ids build/bin/tokenize_ids --work DIR [--tokenizer FILE] \
      [--max-prefix N] [--sample-tokens N] [--tune-epochs N] [--pruned] [--candidates LIST] [--md FILE]

Rows (weights: int8 symmetric per output channel, round-to-nearest, in every row; activations 8-bit at every block
linear's input; embeddings, norms and LM head full precision):
  ours        `cushion eval MODEL --wbits 8 --group per-channel --abits 8 --act per-tensor-static` (asymmetric
              min-max static ranges from --calib) without a cushion, with the greedy cushion and with the tuned cushion
              of one `cushion calibrate` run (its search and tuning times from its --json summary), and
              `--act per-token` (dynamic, asymmetric) as the per-token reference;
  llm-compressor  `oneshot` with QuantizationModifier on the same calibration documents (the engine's ids):
              static per-tensor activations (asymmetric, as ours; and symmetric, its usual static int8), static
              asymmetric after its SmoothQuantModifier (smoothing_strength 0.8), and its preset "W8A8" (weights
              per channel, activations dynamic per token, symmetric); each model's perplexity is computed in the same
              process after oneshot (compressed-tensors fake-quantizes in forward), with the full-precision
              perplexity first (must equal the engine's: the same weights and ids).
Calibration wall time: `oneshot` alone (model loaded before), `cushion calibrate` (search, tuning), 2-core CPU.

llm-compressor 0.14 requires transformers <= 5.17, so it runs in its own virtual environment, made here on demand
from packaging/requirements-llmcompressor.txt (see there); this script re-runs itself inside it (--worker) for the
llm-compressor rows.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
PINS = os.path.join(ROOT, "packaging", "requirements-llmcompressor.txt")
SQ_ALPHA = 0.8

LLMC_VARIANTS = {
    "static-asym": "llm-compressor W8A8, static per-tensor activations (asymmetric min-max)",
    "static-sym": "llm-compressor W8A8, static per-tensor activations (symmetric)",
    "static-asym-sq": f"llm-compressor SmoothQuant {SQ_ALPHA} + W8A8 static per-tensor (asymmetric)",
    "dynamic-token": "llm-compressor W8A8 preset (dynamic per-token activations)",
}


# ------------------------------------------------------------------------------------------------ environment

def llmc_venv():
    """The llm-compressor virtual environment for these pins, made once (python -m venv + a .pth to the project's
    site-packages + pip install -r the pins)."""
    import site
    key = hashlib.sha256(open(PINS, "rb").read() + sys.version.encode()).hexdigest()[:16]
    venv = os.path.join(os.path.expanduser("~"), ".cache", "cushion-studio", f"llmcompressor-venv-{key}")
    py = os.path.join(venv, "bin", "python")
    if os.path.exists(os.path.join(venv, ".complete")):
        return py
    print(f"making the llm-compressor environment {venv} (once)", flush=True)
    subprocess.run(["rm", "-rf", venv], check=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    sp = subprocess.run([py, "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                        stdout=subprocess.PIPE, text=True).stdout.strip()
    with open(os.path.join(sp, "cushion-project-venv.pth"), "w") as f:
        f.write(site.getsitepackages()[0] + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", PINS], check=True)
    open(os.path.join(venv, ".complete"), "w").close()
    return py


def run(cmd, quiet=False):
    t0 = time.time()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dt = time.time() - t0
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {p.returncode}: {p.stderr.strip()[-3000:]}")
    if not quiet:
        print(f"  ({dt:.1f} s) {' '.join(cmd)}", flush=True)
    return p.stdout, dt


# ------------------------------------------------------------------------------------------------ worker (llmc venv)

def load_hf_model(path):
    import torch
    from transformers import AutoModelForCausalLM
    if path.endswith(".gguf"):
        d, f = os.path.split(path)
        return AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    from refcheck import load_causal_lm
    return load_causal_lm(path)


def ppl_plain(model, docs):
    import math
    import torch
    nll, n = 0.0, 0
    with torch.no_grad():
        for ids in docs:
            if len(ids) < 2:
                continue
            lg = model(input_ids=torch.tensor([ids])).logits[0].double()
            nll += float(torch.nn.functional.cross_entropy(lg[:-1], torch.tensor(ids[1:]), reduction="sum"))
            n += len(ids) - 1
    return math.exp(nll / n), n


def worker(a):
    import torch
    import llmcompressor
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    docs = json.load(open(a.docs))
    model = load_hf_model(a.model)
    out = {"variant": a.variant, "llmcompressor": llmcompressor.__version__}
    if a.fp:
        out["ppl_fp"], out["tokens"] = ppl_plain(model, docs["eval"])
    w = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False}
    static = {"num_bits": 8, "type": "int", "symmetric": a.variant == "static-sym", "strategy": "tensor",
              "dynamic": False}
    if a.variant == "dynamic-token":
        recipe = [QuantizationModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"])]
    else:
        recipe = [QuantizationModifier(config_groups={"g0": {"targets": ["Linear"], "weights": w,
                                                             "input_activations": static}}, ignore=["lm_head"])]
        if a.variant == "static-asym-sq":
            recipe.insert(0, SmoothQuantModifier(smoothing_strength=SQ_ALPHA))
    calib = docs["calib"]
    ds = Dataset.from_dict({"input_ids": calib, "attention_mask": [[1] * len(x) for x in calib]})
    # The documents are already the engine's token ids; oneshot still wants a processor object when given a dataset
    # (it only pads and collates here), and a GGUF or SentencePiece-only directory has no transformers tokenizer that
    # loads offline without conversion: a one-word placeholder stands in.
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast
    placeholder = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<pad>": 0}, unk_token="<pad>")),
                                          pad_token="<pad>")
    # oneshot re-reads the config from model.config.name_or_path (to refuse already-quantized checkpoints): a GGUF's
    # directory has none, and the planted model's does not pass transformers' hidden-size check, so it gets a copy of
    # the in-memory config (hidden size heads x head_dim where the real one is not a multiple; only read there).
    shadow = os.path.join(os.path.dirname(os.path.abspath(a.out)), f"llmc-config-{a.variant}")
    os.makedirs(shadow, exist_ok=True)
    c = json.loads(model.config.to_json_string())
    c.pop("quantization_config", None)  # a GGUF's {"quant_method": "gguf"}: its weights are float32 in memory now
    if c.get("head_dim") and c["hidden_size"] % c["num_attention_heads"]:
        c["hidden_size"] = c["num_attention_heads"] * c["head_dim"]
    json.dump(c, open(os.path.join(shadow, "config.json"), "w"))
    model.config.name_or_path = shadow
    t0 = time.time()
    oneshot(model=model, processor=placeholder, dataset=ds, recipe=recipe, num_calibration_samples=len(calib),
            max_seq_length=max(len(x) for x in calib), shuffle_calibration_samples=False, batch_size=1)
    out["calib_seconds"] = time.time() - t0
    q = model.model.layers[0].self_attn.q_proj
    scheme = getattr(q, "quantization_scheme", None)
    out["scheme_check"] = str(scheme.input_activations) if scheme is not None else "NOT QUANTIZED"
    if scheme is None:
        raise RuntimeError("llm-compressor left q_proj unquantized")
    out["ppl"], out["tokens"] = ppl_plain(model, docs["eval"])
    json.dump(out, open(a.out, "w"), indent=1)


# ------------------------------------------------------------------------------------------------ main (project venv)

def read_docs(path):
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    from refcheck import read_documents
    return read_documents(path)


def token_docs(a, model_path, bos, path, max_len):
    """The engine's ids of each document of `path`: <bos> + tokenize_ids (model:PATH or the --tokenizer file)."""
    lines = read_docs(path)
    spec = f"json:{a.tokenizer}" if a.tokenizer and a.tokenizer.endswith(".json") else f"model:{model_path}"
    p = subprocess.run([a.tokenize_ids, spec], input="".join(l.encode().hex() + "\n" for l in lines),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"tokenize_ids: {p.stderr[-2000:]}")
    rows = [json.loads(l) for l in p.stdout.splitlines() if l.strip()]
    rows = [r for r in rows if "ids" in r]
    if len(rows) != len(lines):
        raise RuntimeError(f"tokenize_ids gave {len(rows)} rows for {len(lines)} documents")
    return [([bos] + r["ids"])[:max_len] for r in rows]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant")
    ap.add_argument("--docs")
    ap.add_argument("--out")
    ap.add_argument("--fp", action="store_true")
    ap.add_argument("--model", required=True)
    ap.add_argument("--plant", action="store_true")
    ap.add_argument("--calib")
    ap.add_argument("--text")
    ap.add_argument("--cushion", default=os.path.join(ROOT, "build", "bin", "cushion"))
    ap.add_argument("--tokenize-ids", default=os.path.join(ROOT, "build", "bin", "tokenize_ids"))
    ap.add_argument("--tokenizer")
    ap.add_argument("--work")
    ap.add_argument("--max-prefix", default="4")
    ap.add_argument("--sample-tokens")
    ap.add_argument("--tune-epochs", default="2")
    ap.add_argument("--pruned", action="store_true")
    ap.add_argument("--candidates", help="calibrate's --candidates (default: every non-special token)")
    ap.add_argument("--variants", default=",".join(LLMC_VARIANTS))
    ap.add_argument("--md", help="append the table (markdown) to this file")
    a = ap.parse_args()
    if a.worker:
        return worker(a)

    os.makedirs(a.work, exist_ok=True)
    t_all = time.time()
    model = a.model
    if a.plant:
        model = os.path.join(a.work, "planted")
        run([a.cushion, "plant-outliers", a.model, model, "--force"])
    if not (model.endswith(".gguf") or os.path.isdir(model)):
        raise SystemExit(f"{model}: llm-compressor needs a Hugging Face directory or a GGUF file")
    tok = ["--tokenizer", a.tokenizer] if a.tokenizer else []

    # ---- ours: one calibrate run (greedy cushion + tuned cushion), then eval rows
    greedy, tuned = os.path.join(a.work, "greedy.cushion"), os.path.join(a.work, "tuned.cushion")
    cal = [a.cushion, "calibrate", model, "--calib", a.calib, "--out", tuned, "--out-greedy", greedy,
           "--max-prefix", a.max_prefix, "--tune-epochs", a.tune_epochs, "--json", "--quiet"] + tok
    if a.sample_tokens:
        cal += ["--sample-tokens", a.sample_tokens]
    if a.pruned:
        cal += ["--pruned"]
    if a.candidates:
        cal += ["--candidates", a.candidates]
    out, cal_s = run(cal)
    summary = json.loads(out)
    search_s = sum(s.get("seconds", 0) for s in summary["search"])
    base = [a.cushion, "eval", model, "--text", a.text, "--calib", a.calib, "--wbits", "8", "--group",
            "per-channel", "--abits", "8", "--json", "--quiet"] + tok
    ev_g, _ = run(base + ["--act", "per-tensor-static", "--cushion", greedy])
    ev_t, _ = run(base + ["--act", "per-tensor-static", "--cushion", tuned])
    ev_tok, _ = run(base + ["--act", "per-token"])
    ev_g, ev_t, ev_tok = json.loads(ev_g), json.loads(ev_t), json.loads(ev_tok)
    fp_row = next(r for r in ev_g["rows"] if r["setting"] == "FP")
    q_g = next(r for r in ev_g["rows"] if r["setting"] != "FP")
    q_t = next(r for r in ev_t["rows"] if r["setting"] != "FP")
    q_tok = next(r for r in ev_tok["rows"] if r["setting"] != "FP")
    tokens = ev_g["tokens"]

    # ---- the engine's token ids for llm-compressor
    from safetensors import safe_open
    with safe_open(tuned, "pt") as f:
        prefix_ids = f.get_tensor("prefix_ids").tolist()
    bos = prefix_ids[0]  # a cushion starts with <bos>
    info, _ = run([a.cushion, "info", model, "--json"] + tok, quiet=True)
    max_len = json.loads(info)["max_seq_len"]  # documents are truncated to the model's context, as the engine does
    docs = {"calib": token_docs(a, model, bos, a.calib, max_len), "eval": token_docs(a, model, bos, a.text, max_len)}
    n_eval = sum(len(d) - 1 for d in docs["eval"] if len(d) >= 2)
    if n_eval != tokens:
        raise SystemExit(f"token count: tokenize_ids {n_eval} vs cushion eval {tokens}")
    docs_file = os.path.join(a.work, "docs.json")
    json.dump(docs, open(docs_file, "w"))

    # ---- llm-compressor, one process per variant in its own venv
    py = llmc_venv()
    llmc = {}
    for i, v in enumerate(a.variants.split(",")):
        res = os.path.join(a.work, f"llmc-{v}.json")
        cmd = [py, os.path.abspath(__file__), "--worker", "--variant", v, "--docs", docs_file, "--out", res,
               "--model", model] + (["--fp"] if i == 0 else [])
        try:
            run(cmd)
            llmc[v] = json.load(open(res))
        except RuntimeError as e:
            print(f"  llm-compressor {v} FAILED: {e}")
            llmc[v] = {"error": str(e)[-300:]}
    first = llmc[a.variants.split(",")[0]]
    if "ppl_fp" in first:
        rel = abs(first["ppl_fp"] / fp_row["ppl"] - 1)
        print(f"full precision: engine {fp_row['ppl']:.4f}, transformers ({first.get('llmcompressor')}'s venv) "
              f"{first['ppl_fp']:.4f}, |ratio - 1| {rel:.1e}")

    # ---- table
    name = os.path.basename(a.model.rstrip("/")) + (" (planted)" if a.plant else "")
    lines = [f"| {name}: W8A8 (weights int8 per channel) | perplexity | calibration wall time |", "|---|---|---|",
             f"| full precision | {fp_row['ppl']:.3f} | - |",
             f"| ours, per-tensor static, no cushion | {q_g['ppl']:.3f} | (static ranges only) |",
             f"| ours, per-tensor static, greedy cushion `{summary.get('prefix_text', '')}` "
             f"({len(prefix_ids)} tok, search only) | {q_g['ppl_cushion']:.3f} | {search_s:.1f} s |",
             f"| ours, per-tensor static, tuned cushion | {q_t['ppl_cushion']:.3f} | {cal_s:.1f} s (search + tuning) |",
             f"| ours, per-token dynamic (reference) | {q_tok['ppl']:.3f} | - |"]
    for v, r in llmc.items():
        if "error" in r:
            lines.append(f"| {LLMC_VARIANTS.get(v, v)} | failed: {r['error'][:80]} | - |")
        else:
            lines.append(f"| {LLMC_VARIANTS.get(v, v)} | {r['ppl']:.3f} | {r['calib_seconds']:.1f} s |")
    table = "\n".join(lines)
    print(table)
    print(f"eval tokens {tokens}; greedy cushion ids {json.loads(json.dumps(summary['prefix_ids']))}; "
          f"total {time.time() - t_all:.0f} s")
    json.dump({"ours": {"fp": fp_row, "greedy": q_g, "tuned": q_t, "per_token": q_tok, "search_s": search_s,
                        "calibrate_s": cal_s, "summary_prefix": summary.get("prefix_ids")}, "llmc": llmc},
              open(os.path.join(a.work, "compare.json"), "w"), indent=1)
    if a.md:
        with open(a.md, "a") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    sys.exit(main())
