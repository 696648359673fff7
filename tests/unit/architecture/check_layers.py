#!/usr/bin/env python3
"""core/ is layered: a file includes only its own folder and the folders below it (core/README.md).

Fails (exit 1) listing every #include "layer/file.h" that goes upward or sideways, every include of a core header
without its layer folder, and any source file directly in core/. Run by the ctest `core_layers`.
"""
import os
import re
import sys

LAYERS = ["base", "tokenizer", "model", "formats", "quant", "cushion", "package", "analysis"]


def main(root):
    core = os.path.join(root, "core")
    bad = []
    for name in os.listdir(core):
        path = os.path.join(core, name)
        if os.path.isfile(path) and name.endswith((".h", ".cpp")):
            bad.append(f"core/{name}: a source file outside the layer folders")
        if os.path.isdir(path) and name not in LAYERS:
            bad.append(f"core/{name}/: not a known layer (add it to LAYERS and core/README.md)")
    for layer in LAYERS:
        rank = LAYERS.index(layer)
        folder = os.path.join(core, layer)
        for dirpath, _, files in os.walk(folder):
            for f in files:
                if not f.endswith((".h", ".cpp", ".inc")):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, root)
                for lineno, line in enumerate(open(path, encoding="utf-8"), 1):
                    m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
                    if not m:
                        continue
                    inc = m.group(1)
                    if "/" not in inc:
                        if os.path.exists(os.path.join(dirpath, inc)) and inc.endswith(".inc"):
                            continue  # a data table beside its source
                        bad.append(f"{rel}:{lineno}: #include \"{inc}\" without its layer folder")
                        continue
                    target = inc.split("/")[0]
                    if target not in LAYERS:
                        continue
                    if LAYERS.index(target) > rank:
                        bad.append(f"{rel}:{lineno}: {layer}/ includes {inc}, a layer above it")
    if bad:
        print("core layering violations:\n  " + "\n  ".join(bad))
        return 1
    print(f"core layers OK ({', '.join(LAYERS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "../../..")))
