#!/usr/bin/env bash
# Fills .deps/ (git-ignored) with what the GPU machine lacks for a headless build and the transformers baseline,
# to travel with the device run (carry: [".deps"]): nlohmann-json's header, GoogleTest's sources (both from this
# machine's Debian packages), and wheels of transformers and its pure-Python/abi3 dependencies plus the
# version-specific ones for CPython 3.10-3.13 (the GPU machine has torch and, normally, numpy).
#   usage: bash tests/gpu/prepare_deps.sh   (run here, before the device run)
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .deps && mkdir -p .deps/include .deps/wheels
cp -r /usr/include/nlohmann .deps/include/
cp -r /usr/src/googletest .deps/googletest
PIP=".venv/bin/python -m pip"
TF=$(grep '^transformers==' packaging/requirements.txt)
for v in 3.10 3.11 3.12 3.13; do
  $PIP download -q --disable-pip-version-check -d .deps/wheels --only-binary=:all: --python-version "$v" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    "$TF" "tokenizers" "safetensors" 2>&1 | tail -n 2 || echo "prepare_deps: no wheels for Python $v" >&2
done
# The GPU machine has its own torch (and CUDA libraries) and numpy: drop those wheels.
rm -f .deps/wheels/torch-* .deps/wheels/nvidia_* .deps/wheels/triton-* .deps/wheels/cuda_* .deps/wheels/numpy-*
du -sh .deps
