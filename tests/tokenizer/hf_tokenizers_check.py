"""The engine's tokenizer.json support against Hugging Face `tokenizers` (the Rust library, through its Python
binding), which is what transformers runs for GPT-2, Llama 3, Qwen2 and Llama 2 / Mistral tokenizer.json files.

    python hf_tokenizers_check.py TOKENIZE_IDS_EXE REPO_ROOT OUT_DIR

Builds tokenizer.json files locally with `tokenizers` (no hub access) -- BPE trained on the sample texts plus
multilingual edge strings, initial alphabet = the 256 byte-level characters -- with the pre-tokenizers of:
  gpt2          ByteLevel(use_regex=True)                                     merges as "a b" strings
  gpt2-pairs    the same, merges as [a, b] pairs (what tokenizers >= 0.20 writes)
  gpt2-split    Split(GPT-2's regex) + ByteLevel(use_regex=False)
  llama3        Split(Llama 3's regex) + ByteLevel(use_regex=False), ignore_merges, <|begin_of_text|> template,
                plus whole-word vocabulary entries that no merge reaches (what ignore_merges is for)
  qwen2         NFC normalizer + Split(Qwen2's regex) + ByteLevel(use_regex=False)
  smollm        Digits(individual_digits=True) + ByteLevel(use_regex=True) (SmolLM2, StarCoder; GGUF pre "smollm")
  llama2-legacy tok512.model converted as transformers' LlamaConverter does (legacy: Prepend + Replace normalizer,
                byte fallback, <s> template); merges from transformers' own generate_merges
  llama2        the same, non-legacy: Metaspace(prepend_scheme="first", split=False) pre-tokenizer
  spm-trained-legacy / spm-trained   a SentencePiece BPE (byte fallback, 1000 pieces) trained here, converted alike
  metaspace-bpe a BPE trained by `tokenizers` itself under Metaspace (byte fallback tokens added)
and compares the engine's ids (build/bin/tokenize_ids: load_tokenizer_json, and for the byte-level ones also the
GGUF entry point make_byte_bpe_tokenizer, which gets Qwen2's text NFC-normalized beforehand since a GGUF carries no
normalizer and llama.cpp applies none) with tokenizers' ids on: every sample text line, the edge strings, the
tokenizer's own added/special tokens inside text, 400 random strings, invalid UTF-8 (see below), and for Qwen2's NFC
the decomposed form of every code point that has one plus 800 random combining-mark sequences. Then a sweep
over every code point of planes 0-3 and 14 checks the engine's \\p{L} / \\p{N} / \\s classes against Oniguruma's
(the engine's tables are generated from it: gen_unicode_ranges.py), and every code point in \\p{N} or in what the Digits
pre-tokenizer isolates (Rust's char::is_numeric) is checked through the "smollm" split.
BOS: the engine's add_bos is compared with tokenizers' add_special_tokens=True where the file's post-processor is a
TemplateProcessing that adds one (llama3, llama2*, spm-trained*, metaspace-bpe). GPT-2 / Qwen2 files add nothing; there
the engine's bos (<|endoftext|>, found by name) is only its perplexity protocol's choice, so it is not compared.
Decode: the engine's decode(ids) against tokenizers' decode(ids, skip_special_tokens=True), where the ids agree and the
text holds no added tokens (SentencePiece-style decode follows llama2.c there: <unk> prints " ⁇ ", no space after <s>).

Invalid UTF-8 (tokenizers only takes Python str): the engine keeps every byte. Each byte that is not part of
well-formed UTF-8 is one "other" character for the split regexes (as U+FFFD would be) and is encoded as its own
byte-level character (byte-level BPE) or <0xXX> byte token (byte fallback), so decode(encode(x)) == x. The reference
for that: tokenizers' own pre-tokenizer on the text with each such byte replaced by U+FFFD (Python's surrogateescape
gives exactly one per ill-formed byte, so offsets map back to bytes), then tokenizers' own BPE model
(tokenizer.model.tokenize) on each pre-token's real bytes; for byte-fallback tokenizers, each ill-formed byte is
replaced by U+E000 and the three byte tokens tokenizers gives for it by the byte's own token.
"""
import json
import os
import sys
import time
import unicodedata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refcommon as rc  # noqa: E402

import sentencepiece as spm  # noqa: E402  (a missing module is a failure, not a skip)
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
import tokenizers  # noqa: E402
from transformers.convert_slow_tokenizer import generate_merges  # noqa: E402

GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
             r"|\s+(?!\S)|\s+")
QWEN2_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
            r"|\s+(?!\S)|\s+")

MULTILINGUAL = [
    "日本語のテキストです。東京は日本の首都です。", "中文文本，标点符号！我们的世界很大。", "Καλημέρα κόσμε, τι κάνεις;",
    "Привет, мир! Как дела?", "مرحبا بالعالم، كيف حالك؟", "नमस्ते दुनिया, आप कैसे हैं?", "สวัสดีครับ ยินดีต้อนรับ",
    "한국어 텍스트입니다. 안녕하세요.", "café naïve résumé Ünïcödé ñ ÆØÅ", "😀👍🏽 emoji 🎉! 🇫🇷 ❤️",
    "12345678 3.14159 1e10 ١٢٣ ٤٥٦", "def f(x):\n    return x**2  # comment\n", "https://example.com/a?b=c&d=e#frag",
]


def byte_level_map():
    """GPT-2's bytes_to_unicode, written out here (independent of both implementations)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_CHAR = byte_level_map()


def corpus(root):
    lines = rc.text_lines(root)
    extra = [s for s in rc.EDGE if len(s) < 100] + MULTILINGUAL
    return lines + extra * 3


def train_byte_level(root, pre, special, vocab_size=1500, normalizer=None):
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(root), tr)
    return tok


def split_then_byte_level(regex, trim_offsets=True):
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=trim_offsets,
                                                             use_regex=False)])


def digits_then_byte_level():
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])


def save(j, out_dir, name):
    path = os.path.join(out_dir, name + ".tokenizer.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
    return path


def build_byte_level(root, out_dir):
    """(name, path, gguf_pre or None, has_bos_template)"""
    out = []
    # GPT-2: ByteLevel with its own regex.
    gpt2 = train_byte_level(root, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), ["<|endoftext|>"])
    gpt2.post_processor = processors.ByteLevel(trim_offsets=True)
    j = json.loads(gpt2.to_str())
    out.append(("gpt2-pairs", save(j, out_dir, "gpt2-pairs"), "gpt2", False))
    j["model"]["merges"] = [a + " " + b for a, b in j["model"]["merges"]]
    out.append(("gpt2", save(j, out_dir, "gpt2"), "gpt2", False))
    # GPT-2's regex as a Split.
    g2s = train_byte_level(root, split_then_byte_level(GPT2_RE), ["<|endoftext|>"])
    out.append(("gpt2-split", save(json.loads(g2s.to_str()), out_dir, "gpt2-split"), "gpt2", False))
    # Llama 3: Split + ByteLevel, ignore_merges, a <|begin_of_text|> template, reserved special tokens.
    l3 = train_byte_level(root, split_then_byte_level(LLAMA3_RE),
                          ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                           "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"])
    l3.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", l3.token_to_id("<|begin_of_text|>"))])])
    j = json.loads(l3.to_str())
    j["model"]["ignore_merges"] = True
    vocab = j["model"]["vocab"]
    # Whole words that the merges never build: with ignore_merges a pre-token equal to one is that token.
    for w in [" happily", " wonderful", "Once", " upon", "日本語", " 12", "123"]:
        key = "".join(BYTE_CHAR[b] for b in w.encode("utf-8"))
        if key not in vocab:
            vocab[key] = len(vocab) + len(j["added_tokens"]) + 50
    out.append(("llama3", save(j, out_dir, "llama3"), "llama-bpe", True))
    # Qwen2: NFC + Split(one digit) + ByteLevel(trim_offsets=False), <|endoftext|> and chat tokens.
    q2 = train_byte_level(root, split_then_byte_level(QWEN2_RE, trim_offsets=False),
                          ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], normalizer=normalizers.NFC())
    q2.post_processor = processors.ByteLevel(trim_offsets=False)
    out.append(("qwen2", save(json.loads(q2.to_str()), out_dir, "qwen2"), "qwen2", False))
    # SmolLM2 / StarCoder: Digits(individual_digits) + ByteLevel(use_regex=True) (GGUF pre "smollm").
    sm = train_byte_level(root, digits_then_byte_level(), ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    out.append(("smollm", save(json.loads(sm.to_str()), out_dir, "smollm"), "smollm", False))
    return out


def spm_to_tokenizer_json(model_path, legacy):
    """A SentencePiece BPE model as transformers' LlamaConverter writes it (its generate_merges; vocab = the pieces)."""
    sp = spm.SentencePieceProcessor(model_file=model_path)
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = generate_merges(vocab)
    added = []
    for i in range(sp.get_piece_size()):
        if sp.is_control(i) or sp.is_unknown(i):
            added.append({"id": i, "content": sp.id_to_piece(i), "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=sp.id_to_piece(sp.unk_id()), fuse_unk=True,
                               byte_fallback=True))
    tok.add_special_tokens([tokenizers.AddedToken(a["content"], normalized=False, special=True) for a in added])
    if legacy:
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1, right=0)])
    bos = sp.id_to_piece(sp.bos_id())
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1",
                                                       special_tokens=[(bos, sp.bos_id())])
    return json.loads(tok.to_str())


def build_metaspace(root, out_dir):
    out = []
    tok512 = os.path.join(root, "resources", "models", "stories260K", "tok512.model")
    for legacy in (True, False):
        name = "llama2-legacy" if legacy else "llama2"
        out.append((name, save(spm_to_tokenizer_json(tok512, legacy), out_dir, name), None, True))
    # A SentencePiece BPE with byte fallback trained here on the same corpus.
    txt = os.path.join(out_dir, "spm-corpus.txt")
    with open(txt, "w", encoding="utf-8") as f:
        f.write("\n".join(l.replace("\n", " ") for l in corpus(root)) + "\n")
    prefix = os.path.join(out_dir, "spm-trained")
    spm.SentencePieceTrainer.train(input=txt, model_prefix=prefix, model_type="bpe", vocab_size=1000,
                                   byte_fallback=True, character_coverage=1.0, num_threads=1, minloglevel=2,
                                   bos_id=1, eos_id=2, unk_id=0, pad_id=-1, add_dummy_prefix=True,
                                   remove_extra_whitespaces=False, normalization_rule_name="identity")
    for legacy in (True, False):
        name = "spm-trained-legacy" if legacy else "spm-trained"
        out.append((name, save(spm_to_tokenizer_json(prefix + ".model", legacy), out_dir, name), None, True))
    # BPE trained by tokenizers itself under Metaspace; <0x00>..<0xFF> byte-fallback tokens appended to its vocab.
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tr = trainers.BpeTrainer(vocab_size=900, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(corpus(root), tr)
    j = json.loads(tok.to_str())
    v = j["model"]["vocab"]
    for b in range(256):
        v.setdefault(f"<0x{b:02X}>", len(v))
    j["decoder"] = json.loads(decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                                 decoders.Strip(content=" ", left=1, right=0)]).__getstate__())
    j["post_processor"] = json.loads(processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B:1", special_tokens=[("<s>", 1)]).__getstate__())
    out.append(("metaspace-bpe", save(j, out_dir, "metaspace-bpe"), None, True))
    return out


def added_token_strings(tok):
    names = [a.content for a in tok.get_added_tokens_decoder().values()]
    out = []
    for n in names:
        out += [n, f"Hi{n}there{n}", f" {n} ", f"a {n}b", n[:-1], f"{n}{n}", f"\n{n}\n"]
    return out


def emulate_invalid(tok, data, byte_fallback):
    """The reference ids for a byte string with ill-formed UTF-8 (see the module docstring)."""
    esc = rc.escape_invalid(data)
    vocab = tok.get_vocab()
    if byte_fallback:
        text = "".join("\ue000" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in esc)
        ids = tok.encode(text, add_special_tokens=False).ids
        ph = [vocab["<0xEE>"], vocab["<0x80>"], vocab["<0x80>"]]
        bad = iter([ord(c) - 0xDC00 for c in esc if 0xDC80 <= ord(c) <= 0xDCFF])
        out, i = [], 0
        while i < len(ids):
            if ids[i:i + 3] == ph:
                out.append(vocab[f"<0x{next(bad):02X}>"])
                i += 3
            else:
                out.append(ids[i])
                i += 1
        return out
    text = "".join("\ufffd" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in esc)
    if tok.normalizer is not None and tok.normalizer.normalize_str(text) != text:
        raise SystemExit(f"FAIL: invalid-UTF-8 test string {data!r} is changed by the normalizer; pick another")
    # Byte offset of every character of the escaped string.
    offs = [0]
    for c in esc:
        offs.append(offs[-1] + (1 if 0xDC80 <= ord(c) <= 0xDCFF else len(c.encode("utf-8"))))
    out = []
    for _, (a, b) in tok.pre_tokenizer.pre_tokenize_str(text):
        mapped = "".join(BYTE_CHAR[x] for x in data[offs[a]:offs[b]])
        out += [t.id for t in tok.model.tokenize(mapped)]
    return out


def check_tokenizer(jobs, tally, root, name, path, gguf_pre, has_template):
    tok = Tokenizer.from_file(path)
    byte_fallback = json.load(open(path, encoding="utf-8"))["model"].get("byte_fallback", False)
    groups = [("texts", rc.text_lines(root)), ("edge", rc.EDGE), ("added tokens", added_token_strings(tok)),
              ("random", rc.random_strings())]
    if "NFC" in json.dumps(json.load(open(path, encoding="utf-8")).get("normalizer")):
        groups.append(("NFC", nfc_strings()))
    specs = [("json", f"json:{path}")] + ([("gguf", f"gguf-bpe:{gguf_pre}:{path}")] if gguf_pre else [])
    for gname, strings in groups:
        want = [e.ids for e in tok.encode_batch(strings, add_special_tokens=False)]
        want_dec = tok.decode_batch(want, skip_special_tokens=True)
        for sname, spec in specs:
            inputs = strings
            if sname == "gguf" and tok.normalizer is not None:
                # GGUF carries no normalizer (llama.cpp applies none): that path gets the text already normalized.
                inputs = [tok.normalizer.normalize_str(s) for s in strings]

            def compare(_, got, sname=sname, gname=gname, strings=strings, want=want, want_dec=want_dec):
                for s, g, w, wd in zip(strings, got, want, want_dec):
                    tally.check(f"{name} {sname}: {gname}", rc.show(s), g["ids"], w)
                    # decode: the engine prints nothing for control tokens, as skip_special_tokens=True does. Not
                    # compared with added tokens in the text: the engine's SentencePiece-style decode follows llama2.c
                    # (<unk> prints " ⁇ ", the space after <s> is dropped), tokenizers' Strip decoder only drops the
                    # first space of the whole text.
                    if sname == "json" and g["ids"] == w and gname != "added tokens":
                        tally.check(f"{name} decode: {gname}", rc.show(s),
                                    [g["decoded"].decode("utf-8", "replace")], [wd])
            jobs.add(spec, inputs, False, compare)
        if has_template:
            want_b = [e.ids for e in tok.encode_batch(strings, add_special_tokens=True)]

            def compare_bos(_, got, gname=gname, strings=strings, want_b=want_b):
                for s, g, w in zip(strings, got, want_b):
                    tally.check(f"{name} json: {gname}, add_bos vs template", rc.show(s), g["ids"], w)
            jobs.add(specs[0][1], strings, True, compare_bos)
    # Invalid UTF-8: the engine against the emulated reference, and the bytes come back.
    inv = rc.INVALID + rc.random_invalid()
    want_inv = [emulate_invalid(tok, b, byte_fallback) for b in inv]
    # Round trip: decode(encode(x)) == x, except that with the Metaspace pre-tokenizer a text starting with ' ' gets no
    # "▁" prefix and decoding drops the first space (tokenizers' Strip decoder does the same).
    strips = (tok.pre_tokenizer is not None and
              json.loads(tok.to_str()).get("pre_tokenizer", {}).get("type") == "Metaspace")
    want_rt = [b[1:] if strips and b.startswith(b" ") else b for b in inv]
    for sname, spec in specs:
        def compare_inv(_, got, sname=sname):
            for b, g, w, rt in zip(inv, got, want_inv, want_rt):
                tally.check(f"{name} {sname}: invalid UTF-8", repr(b), g["ids"], w)
                tally.check(f"{name} {sname}: invalid UTF-8 round trip", repr(b), [g["decoded"]], [rt])
        jobs.add(spec, inv, False, compare_inv)


def nfc_strings():
    """For Qwen2's NFC: the canonical decomposition (tokenizers' own NFD) of every code point that has one, and random
    sequences of combining marks of different classes (canonical ordering, blocking) after bases that compose."""
    nfd = normalizers.NFD()
    cps = [c for c in range(0xA0, 0x30000) if not 0xD800 <= c <= 0xDFFF]
    decomposed = nfd.normalize_str("\x00".join(chr(c) for c in cps)).split("\x00")
    out = [d for c, d in zip(cps, decomposed) if d != chr(c)]
    rng = __import__("random").Random(3)
    bases = ["a", "e", "o", "u", "A", "s", "\u1100", "\uac00", "\u0915", "\u05d0", "\u03b1", "\u0627", "Z"]
    marks = ["\u0301", "\u0300", "\u0308", "\u0323", "\u0327", "\u0328", "\u031b", "\u0345", "\u0306", "\u030c",
             "\u05b4", "\u0651", "\u064e", "\u093c", "\u094d", "\u1161", "\u11a8", "\u0f71", "\u0f72", "\u302a"]
    for _ in range(800):
        out.append("".join(rng.choice(bases) + "".join(rng.choice(marks) for _ in range(rng.randint(0, 4)))
                           for _ in range(rng.randint(1, 4))))
    return out


def sweep_classes(jobs, tally, out_dir):
    """Every code point c of planes 0-3 and 14 in "\\na"+c+" 1"+c+" !"+c under GPT-2's split: the merges "a"+x, "1"+x and
    "!"+x for every byte x show whether tokenizers' Oniguruma put c in the same pre-token as the "a", the "1" and the
    "!" before it, i.e. whether c is \\p{L}, \\p{N}, or neither and not \\s. The engine must agree on every one."""
    vocab = {BYTE_CHAR[b]: b for b in range(256)}
    merges = []
    for p in "a1!":
        for b in range(256):
            m = p + BYTE_CHAR[b]
            if m not in vocab:
                vocab[m] = len(vocab)
            merges.append((p, BYTE_CHAR[b]))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    path = os.path.join(out_dir, "classes.tokenizer.json")
    tok.save(path)
    cps = [c for c in list(range(0x40000)) + list(range(0xE0000, 0xE1000)) if not 0xD800 <= c <= 0xDFFF]
    t0 = time.time()
    probe = lambda c: f"\na{chr(c)} 1{chr(c)} !{chr(c)}"  # noqa: E731
    # 512 code points per string (a per-code-point string each costs more in tokenizers' Python objects than the
    # tokenizing itself); a chunk that differs is then compared code point by code point to name them.
    chunks = [cps[i:i + 512] for i in range(0, len(cps), 512)]
    strings = ["".join(probe(c) for c in ch) for ch in chunks]
    want = [e.ids for e in tok.encode_batch(strings, add_special_tokens=False)]

    def compare(_, got):
        bad = [k for k, (g, w) in enumerate(zip(got, want)) if g["ids"] != w]
        tally.groups["code point classes (L, N, other, \\s)"] = (len(cps), 0)
        if not bad:
            return
        tally.fail(f"{len(bad)} chunks of 512 code points tokenized differently; by code point:")
        one = [c for k in bad for c in chunks[k]]
        w1 = [e.ids for e in tok.encode_batch([probe(c) for c in one], add_special_tokens=False)]
        _, g1 = tool_for_detail[0].run(f"json:{path}", [probe(c) for c in one])
        n = 0
        for c, g, w in zip(one, g1, w1):
            if g["ids"] != w:
                n += 1
                if n <= 20:
                    print(f"MISMATCH [code point classes] U+{c:04X} ({unicodedata.category(chr(c))} in Python's Unicode "
                          f"{unicodedata.unidata_version})\n    ours: {g['ids']}\n    want: {w}")
        tally.groups["code point classes (L, N, other, \\s)"] = (len(cps), n)
    jobs.add(f"json:{path}", strings, False, compare)
    print(f"code point sweep: {len(cps)} code points (tokenizers: {time.time() - t0:.1f} s)")


def sweep_digits(jobs, tally, out_dir):
    """The Digits step (SmolLM2's "smollm") isolates what Rust's char::is_numeric accepts, which is not quite
    Oniguruma's \\p{N}. Every code point that either holds, in "a"+c+c+"!"+c+" "+c+"z", under Digits + ByteLevel with
    a merge for every pair of byte-level characters (so that the ids show where the pre-tokens end): the engine's
    tokenizer.json and GGUF "smollm" paths against tokenizers. (Code points in neither are neither digits nor \\p{N}
    for both: their classes are swept above.)"""
    from gen_unicode_ranges import members, split_digits
    cps = sorted(members(r"\p{N}") | split_digits())
    chars = [BYTE_CHAR[b] for b in range(256)]
    vocab = {c: i for i, c in enumerate(chars)}
    merges = []
    for x in chars:
        for y in chars:
            vocab[x + y] = len(vocab)
            merges.append((x, y))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = digits_then_byte_level()
    tok.decoder = decoders.ByteLevel()
    path = os.path.join(out_dir, "digits.tokenizer.json")
    tok.save(path)
    strings = [f"a{chr(c)}{chr(c)}!{chr(c)} {chr(c)}z" for c in cps]
    want = [e.ids for e in tok.encode_batch(strings, add_special_tokens=False)]
    for sname, spec in (("json", f"json:{path}"), ("gguf", f"gguf-bpe:smollm:{path}")):
        def compare(_, got, sname=sname):
            for c, g, w in zip(cps, got, want):
                tally.check(f"digit split ({sname}): \\p{{N}} or Digits code points", f"U+{c:04X}", g["ids"], w)
        jobs.add(spec, strings, False, compare)


tool_for_detail = []


def main():
    exe, root, out_dir = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    print(f"tokenizers {tokenizers.__version__}, sentencepiece {spm.__version__}, python {sys.version.split()[0]}")
    tool = rc.Tool(exe)
    tool_for_detail.append(tool)
    tally = rc.Tally()
    t0 = time.time()
    built = build_byte_level(root, out_dir) + build_metaspace(root, out_dir)
    print(f"built {len(built)} tokenizer.json files in {out_dir} ({time.time() - t0:.1f} s)")
    jobs = rc.Jobs()
    for name, path, pre, tmpl in built:
        check_tokenizer(jobs, tally, root, name, path, pre, tmpl)
    sweep_classes(jobs, tally, out_dir)
    sweep_digits(jobs, tally, out_dir)
    print(f"references computed ({time.time() - t0:.1f} s); running the engine on {len(jobs.jobs)} batches")
    jobs.run(tool)
    print(f"engine time (tokenize_ids, one process): {tool.seconds:.1f} s, total {time.time() - t0:.1f} s")
    tally.report("tokenizer.json vs Hugging Face tokenizers")


if __name__ == "__main__":
    main()
