"""What the transformers reference scripts (hf_models_reference.py, smollm2_reference.py) share: the engine's
document reading, and the logits comparison against transformers with its printed figures."""
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
