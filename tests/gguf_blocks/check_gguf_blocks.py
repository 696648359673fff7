#!/usr/bin/env python3
"""GGUF block types against gguf-py (the independent reference: gguf.quants, gguf.GGUFWriter).

  check_gguf_blocks.py blocks --tool DEQUANT_BLOCKS --work DIR
      Random blocks of every supported type (random bytes; the fp16 factors d / m / dmin finite and moderate,
      with zero, -0, subnormal and negative ones among them) are decoded by our dequant_blocks and by
      gguf.quants.dequantize; the float32 results must be identical bit for bit (tolerance 0 ulp). Then the
      errors: truncated data, a count that is not a multiple of the block size, extra data, an unsupported type.

  check_gguf_blocks.py model --tool DEQUANT_BLOCKS --cushion CUSHION --src SOURCE_DIR --work DIR
      stories260K quantized by gguf.quants.quantize (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 where the row is a multiple
      of 32; ffn_down's rows of 172 and the norms stay F32) and written by GGUFWriter; the same weights
      dequantized by gguf-py written as F32. `cushion ppl --json` on both must agree (relative 1e-7; identical
      weights give identical figures), and stay within 25% of the original F32 model's (it is ~7% above). The
      model's source_types must list the types written. Then a truncated copy, a tensor of an unsupported type
      (IQ4_NL) and a Q4_0 row of 48 elements must each be refused, naming the tensor.

Never skips: a missing numpy / gguf is a failure.
"""
import argparse
import collections
import importlib.metadata
import json
import os
import struct
import subprocess
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

# Byte offsets of the fp16 factors in each block (ggml-common.h).
FP16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
N_BLOCKS = 1024
failures = []


def fail(msg):
    print("FAIL:", msg)
    failures.append(msg)


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def ordered(u):
    """float32 bits -> integers in the order of the floats (for ulp distances)."""
    u = u.astype(np.int64)
    return np.where(u & 0x80000000, 0x80000000 - (u & 0x7FFFFFFF), u + 0x80000000)


def fp16_factors(rng, n):
    v = (rng.standard_normal(n) * 0.02).astype(np.float16)
    special = np.array([0.0, -0.0, 6e-8, -3e-6, 1e-5, 1.0, -2.5, 0.125], dtype=np.float16)  # zeros, subnormals
    v[: len(special)] = special
    return v


def random_blocks(rng, qtype):
    block, nbytes = GGML_QUANT_SIZES[qtype]
    if qtype == T.F16:
        return (rng.standard_normal(N_BLOCKS) * 4).astype(np.float16).view(np.uint8)
    if qtype == T.BF16:
        f = (rng.standard_normal(N_BLOCKS) * 4).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    raw = rng.integers(0, 256, size=(N_BLOCKS, nbytes), dtype=np.uint8)
    for off in FP16_FIELDS[qtype]:
        raw[:, off:off + 2] = fp16_factors(rng, N_BLOCKS).view(np.uint8).reshape(N_BLOCKS, 2)
    return raw.reshape(-1)


def check_blocks(a):
    os.makedirs(a.work, exist_ok=True)
    rng = np.random.default_rng(13)
    types = list(FP16_FIELDS) + [T.F16, T.BF16]
    for qtype in types:
        block, nbytes = GGML_QUANT_SIZES[qtype]
        raw = random_blocks(rng, qtype)
        n = raw.size // nbytes * block
        expect = np.asarray(gguf.quants.dequantize(raw, qtype), dtype=np.float32).reshape(-1)
        if expect.size != n or not np.all(np.isfinite(expect)):
            fail(f"{qtype.name}: gguf-py gave {expect.size} values (expected {n}) or non-finite ones")
            continue
        src, dst = os.path.join(a.work, qtype.name + ".blocks"), os.path.join(a.work, qtype.name + ".f32")
        raw.tofile(src)
        r = run([a.tool, qtype.name, str(n), src, dst])
        if r.returncode != 0:
            fail(f"{qtype.name}: dequant_blocks failed ({r.returncode}): {r.stderr.strip()}")
            continue
        ours = np.fromfile(dst, dtype=np.float32)
        if ours.size != n:
            fail(f"{qtype.name}: {ours.size} values written, expected {n}")
            continue
        ulps = np.abs(ordered(ours.view(np.uint32)) - ordered(expect.view(np.uint32)))
        bad = np.flatnonzero(ulps)
        print(f"{qtype.name:5s} {N_BLOCKS} blocks, {n} values: {bad.size} differ, max {int(ulps.max())} ulp, "
              f"max |y| {float(np.abs(expect).max()):.4g}")
        if bad.size:
            i = int(bad[0])
            fail(f"{qtype.name}: {bad.size} of {n} values differ from gguf-py (first at value {i}, block {i // block}: "
                 f"ours {ours[i]!r}, gguf-py {expect[i]!r})")

    # Errors: each must exit with 2 and a message with these words.
    q4k = os.path.join(a.work, "Q4_K.blocks")
    raw = np.fromfile(q4k, dtype=np.uint8)
    cut = os.path.join(a.work, "Q4_K.truncated")
    raw[:-1].tofile(cut)
    longer = os.path.join(a.work, "Q4_K.longer")
    np.concatenate([raw, raw[:1]]).tofile(longer)
    nk = raw.size // 144 * 256
    cases = [
        ([a.tool, "Q4_K", str(nk), cut, os.devnull], ["Q4_K", "truncated", str(raw.size - 1)]),
        ([a.tool, "Q4_K", str(nk), longer, os.devnull], ["Q4_K", str(raw.size + 1)]),
        ([a.tool, "Q4_0", "33", os.path.join(a.work, "Q4_0.blocks"), os.devnull], ["Q4_0", "33", "not a multiple", "32"]),
        ([a.tool, "IQ2_XXS", "256", q4k, os.devnull], ["unsupported tensor type IQ2_XXS", "Q6_K"]),
        ([a.tool, "Q8_1", "32", q4k, os.devnull], ["unsupported tensor type Q8_1"]),
    ]
    for cmd, words in cases:
        r = run(cmd)
        msg = r.stderr.strip()
        missing = [w for w in words if w not in msg]
        print(f"error case {cmd[1]} {cmd[2]} {os.path.basename(cmd[3])}: rc {r.returncode}: {msg}")
        if r.returncode != 2 or missing:
            fail(f"{' '.join(cmd[1:4])}: expected exit 2 and {words}, got rc {r.returncode}, missing {missing}: {msg}")


def copy_metadata(reader, writer):
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub)


def write_gguf(path, reader, tensors):
    """tensors: list of (name, numpy array, raw_dtype or None)."""
    w = gguf.GGUFWriter(path, reader.fields["general.architecture"].contents())
    copy_metadata(reader, w)
    for name, data, raw in tensors:
        w.add_tensor(name, data, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def ppl(a, model):
    text = os.path.join(a.src, "resources", "text", "tinystories-eval.txt")
    r = run([a.cushion, "ppl", model, "--text", text, "--json", "--quiet"])
    if r.returncode != 0:
        fail(f"cushion ppl {model}: rc {r.returncode}: {r.stderr.strip()[-2000:]}")
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])["ppl"]


def check_model(a):
    os.makedirs(a.work, exist_ok=True)
    src = os.path.join(a.src, "resources", "models", "stories260K", "stories260K.gguf")
    reader = gguf.GGUFReader(src)
    cycle = [T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1]
    quant, deq, counts = [], [], collections.Counter()
    k = 0
    for t in reader.tensors:
        data = np.array(t.data, dtype=np.float32)  # row-major, GGUF dims reversed
        qtype = T.F32
        if data.ndim == 2 and data.shape[-1] % 32 == 0:
            qtype = cycle[k % len(cycle)]
            k += 1
        counts[qtype.name] += 1
        if qtype == T.F32:
            quant.append((t.name, data, None))
            deq.append((t.name, data, None))
        else:
            q = gguf.quants.quantize(data, qtype)
            quant.append((t.name, q, qtype))
            deq.append((t.name, np.asarray(gguf.quants.dequantize(q, qtype), dtype=np.float32), None))
    qpath, dpath = os.path.join(a.work, "stories260K-mixed.gguf"), os.path.join(a.work, "stories260K-dequant.gguf")
    write_gguf(qpath, reader, quant)
    write_gguf(dpath, reader, deq)

    expect_types = ", ".join(f"{n} x {c}" for n, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    r = run([a.tool, "--model", qpath])
    got = r.stdout.strip()
    print(f"source_types: {got!r} (written: {expect_types!r})")
    if r.returncode != 0 or got != expect_types:
        fail(f"source_types of {qpath}: got {got!r} (rc {r.returncode}: {r.stderr.strip()}), expected {expect_types!r}")

    p_q, p_d, p_f = ppl(a, qpath), ppl(a, dpath), ppl(a, src)
    print(f"ppl: block-quantized GGUF {p_q}, gguf-py-dequantized F32 GGUF {p_d}, original F32 {p_f}")
    if None not in (p_q, p_d, p_f):
        rel = abs(p_q - p_d) / p_d
        print(f"relative difference quantized vs gguf-py-dequantized: {rel:.3g} (tolerance 1e-7)")
        if rel > 1e-7:
            fail(f"ppl of the block-quantized file {p_q} differs from the gguf-py-dequantized one {p_d} (rel {rel:.3g})")
        # 4-5-bit weights cost this 260K-parameter model ~7%; a misread layout gives hundreds or thousands.
        if not (abs(p_q - p_f) / p_f < 0.25) or p_q == p_f:
            fail(f"ppl of the block-quantized file {p_q} is not a mild change from the F32 model's {p_f}")

    # Refusals: a truncated copy, an unsupported type, a row that is not a multiple of the block size.
    raw = open(qpath, "rb").read()
    cut = os.path.join(a.work, "truncated.gguf")
    open(cut, "wb").write(raw[:-100])
    last = reader.tensors[-1].name
    iq = [(n, d, r) for n, d, r in quant]
    emb = next(i for i, x in enumerate(iq) if x[0] == "token_embd.weight")
    rows, cols = next(t.data.shape for t in reader.tensors if t.name == "token_embd.weight")
    iq[emb] = ("token_embd.weight", np.random.default_rng(1).integers(0, 256, size=(rows, cols // 32 * 18), dtype=np.uint8),
               T.IQ4_NL)
    iqpath = os.path.join(a.work, "iq4_nl.gguf")
    write_gguf(iqpath, reader, iq)
    # The first Q4_0 tensor gets a row of 48 elements: ne[0] patched in its tensor description.
    name = next(n for n, d, r in quant if r == T.Q4_0)
    b = bytearray(raw)
    key = struct.pack("<Q", len(name)) + name.encode()
    at = b.index(key) + len(key)  # then uint32 n_dims, uint64 ne[0], ...
    struct.pack_into("<Q", b, at + 4, 48)
    rowpath = os.path.join(a.work, "row48.gguf")
    open(rowpath, "wb").write(bytes(b))
    cases = [(cut, [last, "truncated"]), (iqpath, ["unsupported tensor type IQ4_NL for tensor token_embd.weight"]),
             (rowpath, [name, "Q4_0", "48", "not a multiple", "32"])]
    for path, words in cases:
        r = run([a.cushion, "info", path])
        msg = r.stderr.strip()
        missing = [w for w in words if w not in msg]
        print(f"cushion info {os.path.basename(path)}: rc {r.returncode}: {msg.splitlines()[-1] if msg else ''}")
        if r.returncode != 2 or missing:
            fail(f"cushion info {path}: expected exit 2 naming {words}, got rc {r.returncode}, missing {missing}: {msg}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("part", choices=["blocks", "model"])
    p.add_argument("--tool", required=True)
    p.add_argument("--cushion")
    p.add_argument("--src")
    p.add_argument("--work", required=True)
    a = p.parse_args()
    print(f"gguf-py {importlib.metadata.version('gguf')} from {os.path.dirname(gguf.__file__)}, numpy {np.__version__}")
    if a.part == "blocks":
        check_blocks(a)
    else:
        if not a.cushion or not a.src:
            sys.exit("model: --cushion and --src are required")
        check_model(a)
    if failures:
        print(f"{len(failures)} failure(s)")
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
