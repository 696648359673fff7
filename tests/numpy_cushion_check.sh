#!/usr/bin/env bash
# ctest numpy_cushion_check: packaging/examples/numpy_cushion_check.py (a numpy re-implementation of what
# Hugging Face transformers does with the cushion as past_key_values) against `cushion` on stories260K.
#   usage: numpy_cushion_check.sh CUSHION_CLI WRITE_HF_DIR SOURCE_DIR WORK_DIR
# Needs a python3 with numpy ($PYTHON: ctest passes the project's .venv); without one it fails.
set -euo pipefail
CLI=$(realpath "$1") WRITE_HF=$(realpath "$2") SRC=$(realpath "$3") WORK=$(realpath -m "$4")

PY=""
for p in ${PYTHON:-} python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null 2>&1 && "$p" -c "import numpy" >/dev/null 2>&1; then PY=$p; break; fi
done
if [ -z "$PY" ]; then echo "FAIL: no python3 with numpy (packaging/setup.sh makes .venv with it)"; exit 1; fi

rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
check() { "$PY" "$SRC/packaging/examples/numpy_cushion_check.py" --model hf "$@"; }
expect_mismatch() {  # the check must fail with its mismatch status (1), not pass nor crash
  local rc=0
  check "$@" || rc=$?
  if [ "$rc" -ne 1 ]; then echo "FAIL: expected a MISMATCH (exit 1) from: check $*; got exit $rc"; exit 1; fi
}

echo "== stories260K as a Hugging Face directory"
"$WRITE_HF" "$SRC/resources/models/stories260K/stories260K.bin" hf

echo "== a two-token cushion (<bos> + newline, no search), tuned for one step; the untuned one too"
"$CLI" calibrate hf --calib "$SRC/resources/text/tinystories-calib.txt" --out tuned.safetensors \
  --out-greedy untuned.safetensors --start bos,newline --max-prefix 2 --sample-tokens 64 \
  --tune-epochs 1 --batch 9 --lr 0.01 2>&1 | tail -n 2

for c in untuned tuned; do
  echo "== $c: cushion generate --json, then the numpy check"
  "$CLI" generate hf --cushion $c.safetensors --prompt "Once upon a time" --max-tokens 40 --json > $c.json
  cat $c.json
  check --cushion $c.safetensors --cushion-json $c.json
done

echo "== an exported package's cushion.safetensors, against the source model (the package's own weights are"
echo "   quantized: the numpy check does not dequantize them)"
"$CLI" export hf --cushion tuned.safetensors --calib "$SRC/resources/text/tinystories-calib.txt" --out pkg \
  2>&1 | grep "^exported"
"$CLI" generate hf --cushion pkg/cushion.safetensors --prompt "Once upon a time" --max-tokens 40 --json > pkg.json
check --cushion pkg/cushion.safetensors --cushion-json pkg.json

echo "== the check must fail: cushion K/V negated (--selftest-corrupt)"
expect_mismatch --cushion tuned.safetensors --cushion-json tuned.json --selftest-corrupt
echo "== the check must fail: one generated token changed in the reference JSON"
"$PY" -c 'import json, sys; j = json.load(open(sys.argv[1])); j["tokens"][5] = (j["tokens"][5] + 1) % 512
json.dump(j, open(sys.argv[2], "w"))' tuned.json tampered.json
expect_mismatch --cushion tuned.safetensors --cushion-json tampered.json
echo "PASSED"
