#!/usr/bin/env bash
# The CLI under AddressSanitizer + UndefinedBehaviorSanitizer (ctest sanitize_cli, label sanitize, in the
# sanitizer build): a short tour of every command on stories260K and its GGUF, then inputs that must be refused.
# Any sanitizer report aborts the command (abort_on_error, halt_on_error) and fails the test.
#   sanitize_cli.sh CUSHION SOURCE_ROOT WORK
set -uo pipefail
B=$1 R=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
M=$R/resources/models/stories260K
head -n 12 "$R/resources/text/tinystories-calib.txt" >"$W/calib.txt"
head -n 8 "$R/resources/text/tinystories-eval.txt" >"$W/eval.txt"
fail=0
ok() {  # the command must succeed
  echo "== $*"
  "$@" >"$W/out.txt" 2>&1
  local rc=$?
  if [ $rc -ne 0 ]; then tail -n 40 "$W/out.txt"; echo "FAILED (exit $rc): $*"; fail=1; fi
}
refused() {  # the command must fail with a message (exit 1-3), not crash (a sanitizer abort is 134)
  echo "== (refused) $*"
  "$@" >"$W/out.txt" 2>&1
  local rc=$?
  if [ $rc -eq 0 ] || [ $rc -gt 3 ]; then tail -n 40 "$W/out.txt"; echo "FAILED (exit $rc, want 1-3): $*"; fail=1
  else tail -n 1 "$W/out.txt"; fi
}
ok "$B" info --quiet
ok "$B" info "$M/stories260K.gguf" --quiet
ok "$B" generate --prompt "Once upon a time" --max-tokens 12 --quiet
ok "$B" generate "$M/stories260K.gguf" --prompt "Lily" --max-tokens 8 --json --quiet
ok "$B" ppl --text "$W/eval.txt" --quiet
ok "$B" probe --prompt "Once upon a time, there was a girl." --quiet
ok "$B" calibrate --calib "$W/calib.txt" --out "$W/c.cushion" --candidates 3-40 --max-prefix 2 --sample-tokens 48 \
  --tune-epochs 1 --batch 4 --checkpoint "$W/ck" --quiet
ok "$B" calibrate --calib "$W/calib.txt" --out "$W/c2.cushion" --candidates 3-40 --max-prefix 2 --sample-tokens 48 \
  --tune-epochs 1 --batch 4 --checkpoint "$W/ck" --resume --quiet
ok "$B" ppl --text "$W/eval.txt" --cushion "$W/c.cushion" --quiet
ok "$B" export --cushion "$W/c.cushion" --calib "$W/calib.txt" --text "$W/eval.txt" --out "$W/pkg" --group 32 --quiet
ok "$B" verify "$W/pkg" --quiet
ok "$B" generate "$W/pkg" --prompt "Once" --max-tokens 8 --quiet
ok "$B" eval --calib "$W/calib.txt" --text "$W/eval.txt" --cushion "$W/c.cushion" --quiet
# Refused with a message: a directory as a model, a truncated GGUF, a damaged package, a named pipe.
refused "$B" info "$W" --quiet
head -c 3000 "$M/stories260K.gguf" >"$W/cut.gguf"
refused "$B" info "$W/cut.gguf" --quiet
printf '{"model": {"type": "BPE", "vocab": {"a": 0}}, "pre_tokenizer": %s}' \
  "$(printf '[%.0s' $(seq 300))$(printf ']%.0s' $(seq 300))" >"$W/deep.json"
refused "$B" info --tokenizer "$W/deep.json" --quiet
mkfifo "$W/fifo"
refused "$B" ppl --text "$W/fifo" --quiet
sed -i 's/"group": 32/"group": 33/' "$W/pkg/quantization.json"
refused "$B" generate "$W/pkg" --prompt "Once" --max-tokens 4 --quiet
[ $fail -eq 0 ] && echo "sanitize_cli: every command ran clean under ASan + UBSan"
exit $fail
