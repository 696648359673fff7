"""Seeds for the fuzz targets written by the libraries the formats come from (the fuzz_seeds test runs it after
cushion_fuzz has written the engine's own): into SEEDS/gguf, 1-layer variants of stories260K.gguf written by gguf-py
with F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 tensors; into SEEDS/tokenizer_json, small tokenizer.json files
written by tokenizers (GPT-2 byte-level, a Split regex, Digits, NFC, and tok512 converted as Llama 2's, legacy and
Metaspace), with the builders of tests/tokenizer/hf_tokenizers_check.py.

    make_seeds.py SOURCE_ROOT SEEDS
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT, GGUFReader, GGUFWriter

root, seeds = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(root, "tests", "gguf"))
sys.path.insert(0, os.path.join(root, "tests", "tokenizer"))
from gguf_check import field_value, tensor_f32  # noqa: E402

# ---- GGUF
src = GGUFReader(os.path.join(root, "resources", "models", "stories260K", "stories260K.gguf"))
arch = src.fields["general.architecture"].contents()
out = os.path.join(seeds, "gguf")
os.makedirs(out, exist_ok=True)
written = 0
for qt in (QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1):
    path = os.path.join(out, f"stories-1layer-{qt.name}.gguf")
    w = GGUFWriter(path, arch)
    for key, f in src.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.alignment"):
            continue
        val, vt, sub = field_value(f)
        if key == f"{arch}.block_count":
            val = 1
        w.add_key_value(key, val, vt, sub)
    for t in src.tensors:
        if t.name.startswith("blk.") and not t.name.startswith("blk.0."):
            continue
        a = tensor_f32(t)
        if a.ndim != 2 or qt == QT.F32:
            w.add_tensor(t.name, a)
        elif qt == QT.F16:
            w.add_tensor(t.name, a.astype(np.float16))
        elif a.shape[1] % 32 != 0:
            w.add_tensor(t.name, a)
        else:
            try:
                w.add_tensor(t.name, gguf.quants.quantize(a, qt), raw_dtype=qt)
            except NotImplementedError:
                w.add_tensor(t.name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    written += 1
print(f"gguf                 {written} more seeds (gguf-py)")

# ---- tokenizer.json
from tokenizers import normalizers, pre_tokenizers, processors  # noqa: E402
import hf_tokenizers_check as hc  # noqa: E402

out = os.path.join(seeds, "tokenizer_json")
os.makedirs(out, exist_ok=True)
made = []
gpt2 = hc.train_byte_level(root, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), ["<|endoftext|>"],
                           vocab_size=300)
gpt2.post_processor = processors.ByteLevel(trim_offsets=True)
made.append(("gpt2", json.loads(gpt2.to_str())))
made.append(("split", json.loads(hc.train_byte_level(root, hc.split_then_byte_level(hc.LLAMA3_RE), ["<|begin_of_text|>"],
                                                     vocab_size=300).to_str())))
made.append(("digits", json.loads(hc.train_byte_level(root, hc.digits_then_byte_level(), ["<|endoftext|>"],
                                                      vocab_size=300).to_str())))
made.append(("nfc", json.loads(hc.train_byte_level(root, hc.split_then_byte_level(hc.QWEN2_RE, trim_offsets=False),
                                                   ["<|endoftext|>", "<|im_end|>"], vocab_size=300,
                                                   normalizer=normalizers.NFC()).to_str())))
tok512 = os.path.join(root, "resources", "models", "stories260K", "tok512.model")
made.append(("llama2-legacy", hc.spm_to_tokenizer_json(tok512, True)))
made.append(("llama2", hc.spm_to_tokenizer_json(tok512, False)))
for name, j in made:
    with open(os.path.join(out, name + ".tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False)
print(f"tokenizer_json       {len(made)} more seeds (tokenizers)")
