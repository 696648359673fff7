#!/usr/bin/env bash
# ctest reference_hf_cushion_example: packaging/examples/hf_cushion_example.py (a cushion used as
# past_key_values in Hugging Face transformers) against `cushion` on stories260K, CPU float32.
#   usage: hf_cushion_example_check.sh PYTHON CUSHION_CLI WRITE_HF_DIR DUMP_LOGITS SOURCE_DIR WORK_DIR
# PYTHON must have torch, transformers, safetensors and numpy (the project's .venv): without them it fails.
set -euo pipefail
PY=$1
case "$PY" in */*) PY=$(realpath -s "$PY");; esac  # absolute, symlinks kept (a venv's python is one)
CLI=$(realpath "$2") WRITE_HF=$(realpath "$3") DUMP=$(realpath "$4") SRC=$(realpath "$5") WORK=$(realpath -m "$6")

if ! "$PY" -c "import torch, transformers, safetensors, numpy" >/dev/null 2>&1; then
  echo "FAIL: $PY cannot import torch, transformers, safetensors and numpy (packaging/setup.sh makes .venv with them)"
  exit 1
fi
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
example() { "$PY" "$SRC/packaging/examples/hf_cushion_example.py" --model hf --device cpu "$@"; }
expect_mismatch() {  # the example must report a mismatch (exit 1), not pass nor crash
  local rc=0
  example "$@" || rc=$?
  if [ "$rc" -ne 1 ]; then echo "FAIL: expected a MISMATCH (exit 1) from: example $*; got exit $rc"; exit 1; fi
}

echo "== stories260K as a Hugging Face directory"
"$WRITE_HF" "$SRC/resources/models/stories260K/stories260K.bin" hf

echo "== cushions: <bos> alone (one token, untuned); <bos> + newline untuned and tuned for one epoch"
"$CLI" calibrate hf --calib "$SRC/resources/text/tinystories-calib.txt" --out bos.safetensors \
  --start bos --max-prefix 1 --tune-epochs 0 2>&1 | tail -n 1
"$CLI" calibrate hf --calib "$SRC/resources/text/tinystories-calib.txt" --out tuned.safetensors \
  --out-greedy untuned.safetensors --start bos,newline --max-prefix 2 --sample-tokens 64 \
  --tune-epochs 1 --batch 9 --lr 0.01 2>&1 | tail -n 2

for c in bos untuned tuned; do
  echo "== $c: cushion generate --json, the prompt's logits after the cushion (dump_logits), the example"
  "$CLI" generate hf --cushion $c.safetensors --prompt "Once upon a time" --max-tokens 40 --json > $c.json
  cat $c.json
  ids=$("$PY" -c 'import json, sys; print(",".join(map(str, json.load(open(sys.argv[1]))["prompt_tokens"][1:])))' $c.json)
  "$DUMP" hf "$ids" $c.logits.bin $c.safetensors >/dev/null
  example --cushion $c.safetensors --cushion-json $c.json --ref-logits $c.logits.bin
done

echo "== the example must fail: cushion K/V negated (--selftest-corrupt): logits and greedy tokens differ"
expect_mismatch --cushion tuned.safetensors --cushion-json tuned.json --ref-logits tuned.logits.bin --selftest-corrupt
echo "PASSED"
