#!/usr/bin/env python3
"""SmolLM2-135M-Instruct, the real LLM (models/SmolLM2-135M-Instruct.Q4_1.gguf), against Hugging Face transformers
reading the same GGUF file (CPU, float32): ctest `reference_smollm2`, label `reference`, never skipped (a missing
model file or Python module is a failure).

  python smollm2_reference.py --model GGUF --cushion EXE --dump-logits EXE --tokenize-ids EXE --source SRC --work DIR

The reference:
  tokenizer  transformers' AutoTokenizer.from_pretrained(dir, gguf_file=...), with its pre-tokenizer set to the one of
             SmolLM2's own tokenizer.json, Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False,
             use_regex=True)] (llama.cpp's "smollm": "\\p{N}", then GPT-2's regex). transformers' GGUF conversion has no
             entry for tokenizer.ggml.pre = "smollm" and keeps GPT2Tokenizer's plain ByteLevel split, which keeps digit
             runs and a space before a digit together; how many strings that changes is printed.
  model      transformers' LlamaForCausalLM with the GGUF's weights dequantized by gguf-py (transformers'
             modeling_gguf_pytorch_utils.load_gguf_checkpoint), since AutoModelForCausalLM.from_pretrained(gguf_file=...)
             requires the `accelerate` package; where that is installed, from_pretrained(gguf_file=...) is used.
Checks, each printed with its figures:
  (t) token ids: the engine's GGUF tokenizer (tokenize_ids model:GGUF) and its tokenizer.json reader (on the reference
      tokenizer saved as tokenizer.json) against the reference, on every sample text line, the edge strings of
      tests/tokenizer/refcommon.py, digit and chat-token strings, 400 random strings and every code point that
      \\p{N} or tokenizers' Digits holds (this vocabulary has few merges among rare scripts' bytes, so that shows few
      pre-token boundaries there: reference_tokenizers_hf checks the digit class of each of them with a merge for every
      byte pair); decode(encode(x)) == x; <bos> is <|endoftext|> (id 0) on both paths.
  (a) logits of one fixed sequence of 64 tokens (<bos>, a sentence with digits, seeded random ids):
      max |diff| <= 1e-4 x max |logit| (dump_logits).
  (b) greedy: `cushion generate GGUF --prompt P --max-tokens 64 --json` and transformers' greedy generate() from the
      same prompt ids (<bos> + the prompt's ids), stopping at <|im_end|> or <|endoftext|> as `cushion` does.
  (c) perplexity: `cushion ppl GGUF --text resources/text/tinystories-eval.txt --json` and the README's protocol in
      transformers (every non-empty line one document: <|endoftext|> + its ids; mean NLL over positions 1..n-1):
      the same token count and |ppl ours / ppl theirs - 1| <= 1e-4.
Exit status 0 when everything matches, 1 otherwise.
"""
import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")  # load_gguf_checkpoint's progress bar

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tokenizer"))

LOGIT_RTOL = 1e-4  # max |diff| / max |logit|
PPL_RTOL = 1e-4    # |ppl_ours / ppl_theirs - 1|
GEN_TOKENS = 64
LOGITS_LEN = 64
PROMPT = "Once upon a time, there was a little girl named Lily."
LOGITS_TEXT = "In 1999, Tom had 3 cats and 12 dogs; by 2024 he had 100 of them!"
FETCH = "bash packaging/fetch_smollm2.sh"

# Strings where the Digits step matters (a digit after a letter, spaces, punctuation; digit runs; other numerals) and
# chat-template text with the control tokens.
DIGIT_STRINGS = [
    "0", "7", "42", "123456789", "3.14159", "1,000,000", "x1y2z3", "a1", "a 1", "a  1", "a   1", "a\n1", "a \n 1",
    " 1", "  1", "1 ", "1  ", "1\n\n2", "abc123def", "!1", "!!12", " !12", "'s1", "1's", "99 bottles of beer",
    "2024-01-31T12:34:56Z", "$1.50 & 20%", "v2.0.1", "H2O CO2", "٣٤٥ ۶۷ ३४५", "½ ² ³ ① Ⅻ", "１２３ full width",
    "𝟙𝟚𝟛 math digits", "page 12\n\n13 lines", "1\t2\t3", "   12   34   ",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>", "a<|endoftext|>b", "<|im_end|><|im_start|>", "<repo_name>x<file_sep>12",
]


def fail_exit(msg):
    print(f"FAIL: {msg}")
    print("RESULT: FAIL")
    sys.exit(1)


def numeric_code_points():
    """Every code point that Oniguruma's \\p{N} or tokenizers' Digits pre-tokenizer holds (where the engine's digit split
    could differ from the reference; the classes of all others are swept by reference_tokenizers_hf)."""
    from tokenizers import Regex, pre_tokenizers
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and c != 0]
    text = "".join("\x00" + chr(c) for c in cps)
    out = set()
    for split in (pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
                  pre_tokenizers.Digits(individual_digits=True)):
        for _, (a, b) in split.pre_tokenize_str(text):
            if b - a == 1 and a % 2 == 1:
                out.add(cps[a // 2])
    return sorted(out)


def load_reference_model(model_path):
    """(model, how): transformers' LlamaForCausalLM with the GGUF's weights, float32, eval mode."""
    import importlib.util
    import torch
    d, f = os.path.split(model_path)
    if importlib.util.find_spec("accelerate") is not None:
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
        return model, "AutoModelForCausalLM.from_pretrained(gguf_file=...)"
    return load_gguf_llama(model_path), "modeling_gguf_pytorch_utils.load_gguf_checkpoint + LlamaForCausalLM (no `accelerate`)"


class Bg:
    """An engine command run in the background; result() waits for it."""

    def __init__(self, cmd):
        self.cmd = cmd
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def result(self):
        out, err = self.p.communicate()
        if self.p.returncode != 0:
            raise RuntimeError(f"`{' '.join(self.cmd)}` exited {self.p.returncode}: {err.strip()[-2000:]}")
        return out


def load_gguf_llama(model_path):
    """transformers' own GGUF reader into LlamaForCausalLM, float32, eval mode (needs no `accelerate`). A padding id
    that is not a token (llama.cpp's convert-llama2c writes 2^32 - 1 for none) is dropped: transformers' config
    refuses it, and the forward never reads it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    cfg = dict(load_gguf_checkpoint(model_path, return_tensors=False)["config"])
    if cfg.pop("model_type", "llama") != "llama":
        raise RuntimeError("transformers does not read this GGUF as a Llama model")
    if not 0 <= cfg.get("pad_token_id", 0) < cfg["vocab_size"]:
        cfg["pad_token_id"] = None
    model = LlamaForCausalLM(LlamaConfig(**cfg)).to(torch.float32)
    sd = load_gguf_checkpoint(model_path, return_tensors=True, model_to_load=model)["tensors"]
    missing, unexpected = model.load_state_dict({k: torch.as_tensor(v) for k, v in sd.items()}, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF tensors do not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--cushion", required=True)
    ap.add_argument("--dump-logits", required=True)
    ap.add_argument("--tokenize-ids", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    t_start = time.time()
    if not os.path.isfile(a.model):
        fail_exit(f"{a.model} is missing: run `{FETCH}` (from the source tree) to fetch SmolLM2-135M-Instruct")
    os.makedirs(a.work, exist_ok=True)

    import tokenizers
    import torch
    import transformers
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer
    import refcommon as rc
    from refcheck import check_perplexity, compare_logits, read_documents, transformers_perplexity
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    transformers.utils.logging.disable_progress_bar()
    print(f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, torch {torch.__version__}; "
          f"model {a.model}")

    # ---- reference tokenizer; engine runs started in the background
    d, f = os.path.split(a.model)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    plain = AutoTokenizer.from_pretrained(d, gguf_file=f)  # transformers' own conversion, for the note below
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tok_json = os.path.join(a.work, "smollm2.tokenizer.json")
    tok.backend_tokenizer.save(tok_json)
    bos = tok.convert_tokens_to_ids("<|endoftext|>")
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    print(f"reference tokenizer: transformers' GGUF tokenizer + SmolLM2's Digits/ByteLevel pre-tokenizer; "
          f"vocab {len(tok)}, add_bos_token {getattr(tok, 'add_bos_token', None)}, its bos_token {tok.bos_token!r}; "
          f"documents start with <|endoftext|> = {bos}, generation stops at <|im_end|> = {eos} or {bos}")

    docs_path = os.path.join(a.source, "resources/text/tinystories-eval.txt")
    g = torch.Generator().manual_seed(7)
    logit_ids = [bos] + tok.encode(LOGITS_TEXT, add_special_tokens=False)
    logit_ids += torch.randint(0, len(tok), (LOGITS_LEN - len(logit_ids),), generator=g).tolist()
    logits_bin = os.path.join(a.work, "smollm2.logits.bin")
    runs = {
        "logits": Bg([a.dump_logits, a.model, ",".join(map(str, logit_ids)), logits_bin]),
        "generate": Bg([a.cushion, "generate", a.model, "--prompt", PROMPT, "--max-tokens", str(GEN_TOKENS), "--json"]),
        "ppl": Bg([a.cushion, "ppl", a.model, "--text", docs_path, "--json", "--quiet"]),
    }

    ok = True
    # ---- (t) token ids
    t0 = time.time()
    groups = [("texts", rc.text_lines(a.source)), ("edge", rc.EDGE), ("digits, chat", DIGIT_STRINGS),
              ("random", rc.random_strings())]
    ncp = numeric_code_points()
    groups.append(("numeric code points", ["".join(f"a{chr(c)}{chr(c)}!{chr(c)} {chr(c)}z\n" for c in ncp[i:i + 64])
                                           for i in range(0, len(ncp), 64)]))
    tally = rc.Tally()
    jobs = rc.Jobs()
    n_plain = n_all = 0
    bad_bos = set()
    plain_digit_only = True
    for gname, strings in groups:
        want = [tok.encode(s, add_special_tokens=False) for s in strings]
        for s, w in zip(strings, want):
            n_all += 1
            if plain.encode(s, add_special_tokens=False) != w:
                n_plain += 1
                plain_digit_only &= any(c.isnumeric() for c in s)
        for sname, spec in (("gguf", f"model:{a.model}"), ("tokenizer.json", f"json:{tok_json}")):
            def compare(header, got, gname=gname, sname=sname, strings=strings, want=want):
                if header["bos"] != bos and sname not in bad_bos:
                    bad_bos.add(sname)
                    tally.fail(f"{sname}: the engine's <bos> is {header['bos']}, not <|endoftext|> = {bos}")
                for s, gr, w in zip(strings, got, want):
                    tally.check(f"{sname}: {gname}", rc.show(s), gr["ids"], w)
                    if gr["ids"] == w and "<" not in s:
                        tally.check(f"{sname}: decode(encode(x)) == x, {gname}", rc.show(s),
                                    [gr["decoded"].decode("utf-8", "replace")], [s])
            jobs.add(spec, strings, False, compare)
    tool = rc.Tool(a.tokenize_ids)
    jobs.run(tool)
    print(f"(t) token ids ({len(ncp)} numeric code points among the strings; {time.time() - t0:.1f} s, engine "
          f"{tool.seconds:.1f} s):")
    total = sum(n for n, _ in tally.groups.values())
    bad = sum(b for _, b in tally.groups.values())
    for gname, (n, b) in tally.groups.items():
        print(f"    {gname:<48} {n:>6} compared  {b:>4} mismatches")
    print(f"    {total} comparisons, {bad} mismatches: {'ok' if not tally.failed else 'FAIL'}")
    print(f"    (transformers' GGUF tokenizer as it converts the file, without the Digits step, gives other ids for "
          f"{n_plain} of these {n_all} strings{', all of them with numerals' if plain_digit_only else ''})")
    ok &= not tally.failed

    # ---- reference model
    t0 = time.time()
    model, how = load_reference_model(a.model)
    c = model.config
    rope = (getattr(c, "rope_parameters", None) or {}).get("rope_theta", getattr(c, "rope_theta", None))
    print(f"reference model: {how}; {type(model).__name__}, {c.num_hidden_layers} layers, hidden {c.hidden_size}, "
          f"heads {c.num_attention_heads}/{c.num_key_value_heads}, vocab {c.vocab_size}, rope_theta {rope}, "
          f"rms_norm_eps {c.rms_norm_eps}, tied {c.tie_word_embeddings}, context {c.max_position_embeddings} "
          f"({time.time() - t0:.1f} s)")

    # ---- (a) logits
    with torch.no_grad():
        theirs = model(torch.tensor([logit_ids])).logits[0].float()
    try:
        good = compare_logits(logits_bin, runs["logits"].result(), theirs, LOGIT_RTOL)
        ok &= good
    except Exception as e:  # noqa: BLE001 - reported; the other checks still run
        print(f"(a) logits: FAIL: {e}")
        ok = False

    # ---- (b) greedy continuation
    prompt_ids = [bos] + tok.encode(PROMPT, add_special_tokens=False)
    stops = [eos, bos]
    with torch.no_grad():
        gen = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                             max_new_tokens=GEN_TOKENS, do_sample=False, eos_token_id=stops, pad_token_id=eos,
                             output_scores=True, return_dict_in_generate=True)
    new = gen.sequences[0, len(prompt_ids):].tolist()
    if new and new[-1] in stops:
        new = new[:-1]  # transformers keeps the stop token; `cushion` does not output it
    gap = min(float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in gen.scores)
    try:
        j = json.loads(runs["generate"].result())
        if j["prompt_tokens"] != prompt_ids:
            raise RuntimeError(f"the prompt was tokenized differently: cushion {j['prompt_tokens']} vs {prompt_ids}")
        good = new == j["tokens"]
        agree = next((k for k, (x, y) in enumerate(zip(new, j["tokens"])) if x != y), min(len(new), len(j["tokens"])))
        print(f"(b) greedy after {len(prompt_ids)} prompt tokens: cushion {len(j['tokens'])} tokens, transformers "
              f"{len(new)}, the first {agree} identical; smallest top-1/top-2 logit gap {gap:.3g}: "
              f"{'identical' if good else 'FAIL: differ'}")
        print(f"    text: {json.dumps(j['text'])[:400]}")
        if not good:
            print(f"    cushion:      {j['tokens']}\n    transformers: {new}")
        ok &= good
    except Exception as e:  # noqa: BLE001
        print(f"(b) greedy: FAIL: {e}")
        ok = False

    # ---- (c) perplexity
    docs = read_documents(docs_path)
    ppl, count, _ = transformers_perplexity(model, docs, lambda d: tok.encode(d, add_special_tokens=False), bos,
                                            c.max_position_embeddings)
    try:
        ok &= check_perplexity(runs["ppl"].result(), ppl, count, docs, docs_path, PPL_RTOL)
    except Exception as e:  # noqa: BLE001
        print(f"(c) perplexity: FAIL: {e}")
        ok = False

    print(f"total {time.time() - t_start:.1f} s")
    print("RESULT: PASS" if ok else "RESULT: FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
