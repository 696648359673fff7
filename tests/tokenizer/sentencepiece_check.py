"""The engine's SentencePiece-style tokenizers against libsentencepiece (its Python binding).

    python sentencepiece_check.py TOKENIZE_IDS_EXE REPO_ROOT OUT_DIR

  tok512.model (stories260K)       load_sentencepiece_tokenizer vs SentencePieceProcessor, add_bos on and off
  spm-trained.model                a SentencePiece BPE trained here (1000 pieces, byte fallback, user-defined
                                   <sep> and [MASK], control <ctl>), same comparison
  tok512.bin, stories260K.gguf     llama2.c's tokenizer.bin and the GGUF "llama" vocabulary (score-merge BPE as
                                   llama2.c / llama.cpp run it: whitespace kept as written) vs SentencePiece on a copy
                                   of tok512.model with normalizer_spec.remove_extra_whitespaces = false
BOS: the engine's add_bos prepends the model's <s> (id 1), as SentencePiece's add_bos=True does; without it neither
adds anything. Strings: every sample text line, the edge strings (newlines, tabs, runs of spaces, CJK, emoji,
combining marks, "<s>" / "</s>" / "<unk>" / "<sep>" as text...), 400 random strings, and invalid UTF-8 as bytes.
Invalid UTF-8: libsentencepiece replaces each ill-formed byte by U+FFFD, and the engine's .model reader does the same
(so the ids are compared directly). The tokenizer.bin / GGUF path keeps the raw bytes as <0xXX> byte tokens, as
llama2.c and llama.cpp do; its reference: SentencePiece on the text with each ill-formed byte replaced by U+E000
(not in the vocabulary: three byte tokens), those three replaced by the byte's own token.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import refcommon as rc  # noqa: E402

import sentencepiece as spm  # noqa: E402  (a missing module is a failure, not a skip)


def varint(b, o):
    r, s = 0, 0
    while True:
        c = b[o]
        o += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, o


def patch_proto(data, outer, inner, value):
    """Sets the one-byte varint field `inner` of top-level message field `outer` to value (in place)."""
    data = bytearray(data)
    o = 0
    while o < len(data):
        key, o = varint(data, o)
        wire = key & 7
        if wire == 0:
            _, o = varint(data, o)
        elif wire == 5:
            o += 4
        elif wire == 1:
            o += 8
        elif wire == 2:
            n, o = varint(data, o)
            if key >> 3 == outer:
                p = o
                while p < o + n:
                    k, p = varint(data, p)
                    if k == inner << 3:
                        data[p] = value
                        return bytes(data)
                    if k & 7 == 0:
                        _, p = varint(data, p)
                    elif k & 7 == 2:
                        m, p = varint(data, p)
                        p += m
                    elif k & 7 == 5:
                        p += 4
                    else:
                        p += 8
            o += n
        else:
            break
    raise SystemExit(f"FAIL: field {outer}.{inner} not found in the model")


def emulate_raw_bytes(sp, data, bos):
    """SentencePiece's ids for bytes with ill-formed UTF-8, each such byte kept as its own byte token."""
    esc = rc.escape_invalid(data)
    text = "".join("\ue000" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in esc)
    ids = sp.encode(text, add_bos=bos)
    ph = [sp.piece_to_id("<0xEE>"), sp.piece_to_id("<0x80>"), sp.piece_to_id("<0x80>")]
    bad = iter([ord(c) - 0xDC00 for c in esc if 0xDC80 <= ord(c) <= 0xDCFF])
    out, i = [], 0
    while i < len(ids):
        if ids[i:i + 3] == ph:
            out.append(sp.piece_to_id(f"<0x{next(bad):02X}>"))
            i += 3
        else:
            out.append(ids[i])
            i += 1
    return out


def main():
    exe, root, out_dir = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    print(f"sentencepiece {spm.__version__}, python {sys.version.split()[0]}")
    tool = rc.Tool(exe)
    tally = rc.Tally()
    stories = os.path.join(root, "resources", "models", "stories260K")
    tok512 = os.path.join(stories, "tok512.model")
    verbatim = os.path.join(out_dir, "tok512-verbatim.model")
    with open(tok512, "rb") as f:
        with open(verbatim, "wb") as g:
            g.write(patch_proto(f.read(), 3, 4, 0))  # normalizer_spec.remove_extra_whitespaces = false

    # A model trained here: more pieces (CJK, accents), byte fallback, user-defined and control symbols.
    txt = os.path.join(out_dir, "corpus.txt")
    extra = [s.replace("\n", " ") for s in rc.EDGE if len(s) < 100]
    with open(txt, "w", encoding="utf-8") as f:
        f.write("\n".join(rc.text_lines(root) + extra * 3) + "\n")
    trained = os.path.join(out_dir, "spm-trained")
    spm.SentencePieceTrainer.train(input=txt, model_prefix=trained, model_type="bpe", vocab_size=1000,
                                   byte_fallback=True, character_coverage=1.0, num_threads=1, minloglevel=2,
                                   user_defined_symbols=["<sep>", "[MASK]"], control_symbols=["<ctl>"],
                                   normalization_rule_name="identity")  # the engine supports identity only
    trained += ".model"

    specials = ["<s>", "</s>", "<unk>", "<sep>", "[MASK]", "<ctl>", "a<sep>b", " <sep> ab ", "x[MASK]<sep>y",
                "<s>hello</s>", "<se", "<sep><sep>"]
    strings = rc.text_lines(root) + rc.EDGE + specials + rc.random_strings()
    invalid = rc.INVALID + rc.random_invalid()
    print(f"{len(strings)} strings + {len(invalid)} invalid UTF-8 byte strings per tokenizer, add_bos on and off")

    cases = [  # (name, engine spec, reference model, invalid UTF-8 as libsentencepiece (True) or raw bytes)
        ("tok512.model", f"spm:{tok512}", tok512, True),
        ("spm-trained.model", f"spm:{trained}", trained, True),
        ("tok512.bin", f"llama2c:512:{os.path.join(stories, 'tok512.bin')}", verbatim, False),
        ("stories260K.gguf vocab", f"model:{os.path.join(stories, 'stories260K.gguf')}", verbatim, False),
    ]
    jobs = rc.Jobs()
    for name, spec, ref, spm_invalid in cases:
        sp = spm.SentencePieceProcessor(model_file=ref)
        for bos in (False, True):
            tag = "add_bos" if bos else "no bos"
            want = sp.encode(strings, add_bos=bos)
            want_dec = [sp.decode(w) for w in want]

            def compare(header, got, name=name, tag=tag, bos=bos, want=want, want_dec=want_dec, sp=sp):
                if header["bos"] != sp.bos_id() or header["eos"] != sp.eos_id():
                    tally.fail(f"{name}: bos/eos {header['bos']}/{header['eos']}, SentencePiece "
                               f"{sp.bos_id()}/{sp.eos_id()}")
                for s, g, w, wd in zip(strings, got, want, want_dec):
                    # decode: SentencePiece's DecodeIds (control pieces print nothing, <unk> as " ⁇ "). Not where the
                    # text begins with a literal "▁" (after spaces): DecodeIds drops every leading "▁" of the text, the
                    # engine (as llama2.c) only the first.
                    if (tally.check(f"{name} ({tag})", rc.show(s), g["ids"], w) and not bos
                            and not s.lstrip(" ").startswith("▁")):
                        tally.check(f"{name} decode", rc.show(s), [g["decoded"].decode("utf-8", "replace")], [wd])
            jobs.add(spec, strings, bos, compare)
            want_inv = [sp.encode(b, add_bos=bos) if spm_invalid else emulate_raw_bytes(sp, b, bos) for b in invalid]

            def compare_inv(_, got, name=name, tag=tag, want_inv=want_inv, spm_invalid=spm_invalid, bos=bos):
                for b, g, w in zip(invalid, got, want_inv):
                    tally.check(f"{name} ({tag}): invalid UTF-8", repr(b), g["ids"], w)
                    if not spm_invalid and not bos:
                        tally.check(f"{name}: invalid UTF-8 round trip", repr(b), [g["decoded"]], [b])
            jobs.add(spec, invalid, bos, compare_inv)
    jobs.run(tool)
    print(f"engine time (tokenize_ids): {tool.seconds:.1f} s")
    tally.report("SentencePiece-style tokenizers vs libsentencepiece")


if __name__ == "__main__":
    main()
