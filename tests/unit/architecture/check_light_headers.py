#!/usr/bin/env python3
"""The torch-free core headers stay torch-free: the studio's widgets include them without libtorch.

Compiles a file that includes each light header (model/sites.h, quant/quant_config.h, base/progress.h) with only
core/ on the include path and -H (list every header opened). Fails (exit 1) when the compile fails (an ATen
header is not found without libtorch's include directories) or when any header opened lives under ATen, c10 or
torch. Run by the ctest `light_headers`: check_light_headers.py <c++ compiler> <source root>.
"""
import os
import re
import subprocess
import sys
import tempfile

LIGHT = ["model/sites.h", "quant/quant_config.h", "base/progress.h"]


def main(cxx, root):
    core = os.path.join(root, "core")
    src = "".join(f'#include "{h}"\n' for h in LIGHT)
    # Use what the headers declare, so a header emptied by mistake does not pass.
    src += ("int main() { cushion::QuantConfig c; c.wbits = 8; (void)c.site_on(cushion::Site::AttnIn);\n"
            "  (void)cushion::kLinearCount; cushion::CancelToken t; t.cancel(); return t.cancelled() ? 0 : 1; }\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "light.cpp")
        with open(path, "w") as f:
            f.write(src)
        r = subprocess.run([cxx, "-std=c++17", "-fsyntax-only", "-H", "-I", core, path],
                           capture_output=True, text=True)
    opened = [line.lstrip(". ").strip() for line in r.stderr.splitlines() if re.match(r"^\.+ ", line)]
    heavy = [h for h in opened if re.search(r"(^|/)(ATen|c10|torch)/", h)]
    if r.returncode != 0:
        errors = [line for line in r.stderr.splitlines() if not re.match(r"^\.+ ", line)]
        print("light headers do not compile without libtorch:\n" + "\n".join(errors[:40]))
        return 1
    if heavy:
        print("light headers open libtorch headers:\n  " + "\n  ".join(heavy[:20]))
        return 1
    print(f"{len(LIGHT)} light headers, {len(opened)} headers opened, none from libtorch")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
