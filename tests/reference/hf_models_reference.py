#!/usr/bin/env python3
"""The engine against Hugging Face transformers (CPU, float32): ctest label `reference`.

  build --dir DIR --write-hf-dir EXE --source SRC
      Writes the reference models into DIR, one Hugging Face directory each (transformers' save_pretrained,
      float32, fixed seeds): tiny random Llama (multi-head), Llama GQA (saved sharded, with
      model.safetensors.index.json), Llama with Llama-3.1 RoPE scaling (rope_type llama3), Llama with linear
      RoPE scaling (and one KV head), Mistral, Qwen2
      (q/k/v biases, tied embeddings) and OPT, all with one byte-level BPE tokenizer.json trained here with
      `tokenizers` on resources/text/tinystories-calib.txt (vocab_size = the models' vocab_size); the Llama 3.1
      one written again by the engine (write_hf_dir: transformers 4.x's rope_theta / rope_scaling keys instead
      of 5.x's rope_parameters); and stories260K (the llama2.c checkpoint written as a Hugging Face directory by
      write_hf_dir, with its SentencePiece tokenizer.model).
  check [NAME...] --dir DIR --cushion EXE --dump-logits EXE --source SRC
      For each model DIR/NAME (default: all), three comparisons, each printed with its figures:
      (a) logits: dump_logits (the engine's forward pass) and transformers' model(ids).logits for one fixed
          sequence (<bos>, a sentence, then seeded random ids; 100 tokens): max |diff| <= 1e-4 x max |logit|;
      (b) greedy: `cushion generate DIR --prompt P --max-tokens 32 --json` and transformers' greedy
          generate() from the same prompt ids (<bos> + the prompt's ids; both tokenizations must agree),
          stopping at </s> or <s> as `cushion` does: the same tokens;
      (c) perplexity: `cushion ppl DIR --text resources/text/tinystories-eval.txt --json` and the same protocol
          in transformers (core/perplexity.cpp): every non-empty line one document, <bos> + its ids (tokenized
          here by the reference tokenizer: `tokenizers` for tokenizer.json, `sentencepiece` for
          tokenizer.model), truncated to max_position_embeddings, mean NLL over positions 1..n-1 of every
          document: the same token count and |ppl ours / ppl theirs - 1| <= 1e-4.
  all --dir DIR --write-hf-dir EXE --cushion EXE --dump-logits EXE --source SRC
      build, then check every model (what ctest runs: one Python start-up for all).
Exit status 0 when everything matches, 1 otherwise (a missing module is a failure, not a skip).
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import zlib

# Local files only, no progress bars in the ctest log.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch

from refcheck import check_perplexity, compare_logits, read_documents, transformers_perplexity

LOGIT_RTOL = 1e-4  # max |diff| / max |logit|
PPL_RTOL = 1e-4    # |ppl_ours / ppl_theirs - 1|
GEN_TOKENS = 32
MODELS = ["llama_mha", "llama_gqa", "llama3_rope", "llama3_rope_resaved", "llama_linear_rope", "mistral", "qwen2", "opt",
          "stories260K"]
PROMPT = "Once upon a time, there was a little girl named Lily."
LOGITS_TEXT = "Tom and Sara went to the park. They saw a big dog with a red ball!"
LOGITS_LEN = 100

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


# ----------------------------------------------------------------------------------------------- build

def train_tokenizer(calib_path, out_dir, vocab_size=512):
    """A byte-level BPE (GPT-2 style pre-tokenizer, no prefix space) with <s> = 0 and </s> = 1, <s> added
    by the post-processor; saved as tokenizer.json + tokenizer_config.json via transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([calib_path], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(out_dir)
    return tok.get_vocab_size()


def randomize(model, seed):
    """Every parameter drawn again (seeded): matrices (linear weights, token and position embeddings)
    N(0, 1/columns), so activations and logits are O(1) whether or not the LM head is tied to the embedding;
    norm weights 1 + N(0, 0.01); biases N(0, 0.01). transformers' own init leaves biases at 0 and norms at 1
    (they would not be tested) and gives near-uniform logits (greedy near-ties)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):  # a tied LM head appears once, as the embedding
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def tiny_specs(vocab):
    """name -> (config class name, config kwargs, save_pretrained kwargs)."""
    common = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=1, max_position_embeddings=256)
    llama = dict(common, hidden_act="silu", rms_norm_eps=1e-5)
    return {
        "llama_mha": ("LlamaConfig", dict(llama, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=4, rope_theta=10000.0), {}),
        # sharded: max_shard_size small enough for several model-0000N-of-0000M.safetensors + the index
        "llama_gqa": ("LlamaConfig", dict(llama, hidden_size=96, intermediate_size=192, num_hidden_layers=3,
                                          num_attention_heads=6, num_key_value_heads=2, rope_theta=500000.0),
                      {"max_shard_size": "600KB"}),
        # Llama 3.1 RoPE scaling; original_max_position_embeddings 64 and head_dim 16 put the 8 frequencies in
        # all three bands (kept, interpolated, divided by the factor)
        "llama3_rope": ("LlamaConfig", dict(llama, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                            rope_theta=500000.0,
                                            rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                          "original_max_position_embeddings": 64}), {}),
        "llama_linear_rope": ("LlamaConfig", dict(llama, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                  num_attention_heads=4, num_key_value_heads=1, rope_theta=10000.0,
                                                  rope_scaling={"rope_type": "linear", "factor": 4.0}), {}),
        "mistral": ("MistralConfig", dict(llama, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0,
                                          sliding_window=None), {}),
        "qwen2": ("Qwen2Config", dict(llama, hidden_size=64, intermediate_size=144, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, rope_theta=1000000.0,
                                      tie_word_embeddings=True, rms_norm_eps=1e-6), {}),
        "opt": ("OPTConfig", dict(common, hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                                  word_embed_proj_dim=64, do_layer_norm_before=True, pad_token_id=1,
                                  dropout=0.0, attention_dropout=0.0), {}),
    }


def build(args):
    import transformers
    from transformers import AutoModelForCausalLM
    out = os.path.abspath(args.dir)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    tok_dir = os.path.join(out, "_tokenizer")
    calib = os.path.join(args.source, "resources/text/tinystories-calib.txt")
    vocab = train_tokenizer(calib, tok_dir)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}; byte-level BPE tokenizer: "
          f"{vocab} tokens, trained on {os.path.relpath(calib, args.source)}")
    for name, (cls, kw, save_kw) in tiny_specs(vocab).items():
        seed = zlib.crc32(name.encode())  # per model, whatever the others are
        torch.manual_seed(seed)
        config = getattr(transformers, cls)(**kw)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
        randomize(model, seed)
        d = os.path.join(out, name)
        model.save_pretrained(d, **save_kw)
        for f in os.listdir(tok_dir):
            shutil.copy(os.path.join(tok_dir, f), d)
        files = sorted(f for f in os.listdir(d) if f.endswith(".json") or f.endswith(".safetensors"))
        n = sum(p.numel() for p in model.parameters())
        print(f"{name}: {cls[:-6]}, {n} parameters -> {', '.join(files)}")
    if not os.path.exists(os.path.join(out, "llama_gqa", "model.safetensors.index.json")):
        print("FAIL: llama_gqa was not saved sharded")
        return 1
    # llama3_rope written again by the engine (save_hf_directory): transformers 4.x's config keys (top-level
    # rope_theta, rope_scaling), which transformers 5.x reads too
    d = os.path.join(out, "llama3_rope_resaved")
    subprocess.run([args.write_hf_dir, os.path.join(out, "llama3_rope"), d], check=True)
    c = json.load(open(os.path.join(d, "config.json")))
    print(f"llama3_rope_resaved: llama3_rope by write_hf_dir, rope_theta {c.get('rope_theta')}, "
          f"rope_scaling {c.get('rope_scaling')}")
    # stories260K: the llama2.c checkpoint as a Hugging Face directory, by the engine's writer
    src = os.path.join(args.source, "resources/models/stories260K/stories260K.bin")
    subprocess.run([args.write_hf_dir, src, os.path.join(out, "stories260K")], check=True)
    print(f"stories260K: {', '.join(sorted(os.listdir(os.path.join(out, 'stories260K'))))}")
    return 0


# ----------------------------------------------------------------------------------------------- check

class RefTokenizer:
    """The reference tokenizer of a directory: `tokenizers` for tokenizer.json, `sentencepiece` for
    tokenizer.model (what the engine prefers when both are there)."""

    def __init__(self, d):
        if os.path.exists(os.path.join(d, "tokenizer.model")):
            import sentencepiece as spm
            self.sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
            self.bos, self.eos, self.kind = self.sp.bos_id(), self.sp.eos_id(), "sentencepiece"
        else:
            from tokenizers import Tokenizer
            self.sp = None
            self.tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
            self.bos, self.eos = self.tk.token_to_id("<s>"), self.tk.token_to_id("</s>")
            self.kind = "tokenizers"

    def encode(self, text):  # without <bos>
        return self.sp.encode(text) if self.sp is not None else self.tk.encode(text, add_special_tokens=False).ids


class Engine:
    """The three `cushion` runs for one model, started together in the background (they overlap with
    transformers' side); each result is waited for when needed."""

    def __init__(self, args, d, logit_ids, prompt, text):
        self.out_bin = os.path.join(args.work, os.path.basename(d) + ".logits.bin")
        cmds = {
            "logits": [args.dump_logits, d, ",".join(map(str, logit_ids)), self.out_bin],
            "generate": [args.cushion, "generate", d, "--prompt", prompt, "--max-tokens", str(GEN_TOKENS), "--json"],
            "ppl": [args.cushion, "ppl", d, "--text", text, "--json", "--quiet"],
        }
        self.procs = {k: (c, subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
                      for k, c in cmds.items()}

    def result(self, key):
        """stdout of the run, or raises with its stderr."""
        cmd, p = self.procs[key]
        out, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` exited {p.returncode}: {err.strip()}")
        return out


def check_model(args, name):
    from transformers import AutoModelForCausalLM
    d = os.path.join(os.path.abspath(args.dir), name)
    if not os.path.isdir(d):
        print(f"== {name}: FAIL: {d} does not exist (run the build step first)")
        return False
    t0 = time.time()
    tok = RefTokenizer(d)
    bos, eos = tok.bos, tok.eos
    cfg = json.load(open(os.path.join(d, "config.json")))
    g = torch.Generator().manual_seed(7)
    logit_ids = [bos] + tok.encode(LOGITS_TEXT)
    logit_ids += torch.randint(0, cfg["vocab_size"], (LOGITS_LEN - len(logit_ids),), generator=g).tolist()
    text = os.path.join(args.source, "resources/text/tinystories-eval.txt")
    engine = Engine(args, d, logit_ids, PROMPT, text)

    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    ctx = model.config.max_position_embeddings
    print(f"== {name}: {type(model).__name__}, vocab {model.config.vocab_size}, context {ctx}, "
          f"reference tokenizer: {tok.kind} (<s> {bos}, </s> {eos})")
    ok = True

    def failed(what, e):
        print(f"{what}: FAIL: {e}")
        return False

    # (a) logits of one fixed sequence
    with torch.no_grad():
        theirs = model(torch.tensor([logit_ids])).logits[0].float()
    try:
        good = compare_logits(engine.out_bin, engine.result("logits"), theirs, LOGIT_RTOL)
        ok &= good
    except Exception as e:  # noqa: BLE001 - reported, the other checks still run
        ok = failed("(a) logits", e)

    # (b) greedy continuation, from the same prompt ids, stopping at </s> or <s> as `cushion` does
    prompt_ids = [bos] + tok.encode(PROMPT)
    stops = [i for i in (eos, bos) if i is not None and i >= 0]
    with torch.no_grad():
        gen = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                             max_new_tokens=GEN_TOKENS, do_sample=False, eos_token_id=stops, pad_token_id=stops[0],
                             output_scores=True, return_dict_in_generate=True)
    new = gen.sequences[0, len(prompt_ids):].tolist()
    if new and new[-1] in stops:
        new = new[:-1]  # transformers keeps the stop token; `cushion` does not output it
    gap = min(float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in gen.scores)
    try:
        j = json.loads(engine.result("generate"))
        if j["prompt_tokens"] != prompt_ids:
            raise RuntimeError(f"the prompt was tokenized differently: cushion {j['prompt_tokens']} vs {tok.kind} "
                               f"{prompt_ids}")
        good = new == j["tokens"]
        print(f"(b) greedy after {len(prompt_ids)} prompt tokens: cushion {len(j['tokens'])} tokens, transformers "
              f"{len(new)}; smallest top-1/top-2 logit gap on the way {gap:.3g}: {'identical' if good else 'FAIL: differ'}")
        if not good:
            print(f"    cushion:      {j['tokens']}\n    transformers: {new}")
        elif len(new) < GEN_TOKENS:
            print(f"    (both stopped at a stop token after {len(new)} tokens)")
        ok &= good
    except Exception as e:  # noqa: BLE001
        ok = failed("(b) greedy", e)

    # (c) perplexity, core/perplexity.cpp's protocol
    docs = read_documents(text)
    ppl, count, truncated = transformers_perplexity(model, docs, tok.encode, bos, ctx)
    try:
        ok &= check_perplexity(engine.result("ppl"), ppl, count, docs, text, PPL_RTOL,
                               f", {truncated} truncated to {ctx}")
    except Exception as e:  # noqa: BLE001
        ok = failed("(c) perplexity", e)
    print(f"{name}: {'PASSED' if ok else 'FAILED'} ({time.time() - t0:.1f} s)")
    return ok


def check(args):
    names = args.names or MODELS
    os.makedirs(args.work, exist_ok=True)
    results = {n: check_model(args, n) for n in names}
    bad = [n for n, r in results.items() if not r]
    print(f"\n{len(names) - len(bad)}/{len(names)} models match transformers" + (f"; FAILED: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd in ("build", "check", "all"):
        p = sub.add_parser(cmd)
        p.add_argument("--dir", required=True, help="where the models are written / read")
        p.add_argument("--source", required=True, help="the source tree (resources/)")
        if cmd != "check":
            p.add_argument("--write-hf-dir", required=True, help="tests/tools/write_hf_dir")
        if cmd != "build":
            p.add_argument("--cushion", required=True, help="the cushion command line tool")
            p.add_argument("--dump-logits", required=True, help="tests/tools/dump_logits")
            p.add_argument("--work", help="scratch directory (default DIR/_work)")
        if cmd == "check":
            p.add_argument("names", nargs="*", help=f"models (default all: {' '.join(MODELS)})")
    a = ap.parse_args()
    if a.cmd != "build" and not a.work:
        a.work = os.path.join(a.dir, "_work")
    if a.cmd in ("build", "all"):
        t0 = time.time()
        if build(a) != 0:
            return 1
        print(f"built in {time.time() - t0:.1f} s\n")
    if a.cmd == "all":
        a.names = []
    return check(a) if a.cmd != "build" else 0


if __name__ == "__main__":
    sys.exit(main())
