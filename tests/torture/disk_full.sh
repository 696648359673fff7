#!/usr/bin/env bash
# Disk full and read-only targets (issue 15): every file `cushion` writes - calibrate's cushion (--out) and
# checkpoint (--checkpoint), export's package (native and --format compressed-tensors), probe's heatmap (--png) -
# is written when the disk fills up or the folder is read-only:
#   - the exit status is 2 (an error), the message names the target and the cause;
#   - the previous file or package is intact, byte for byte;
#   - no temporary file or directory is left beside it.
# A full disk is simulated with a file size limit (ulimit -f, SIGXFSZ ignored: a write past the limit fails with
# EFBIG, "File too large", where a full disk gives ENOSPC, "No space left on device"); a read-only folder is
# mode 0555 (run as root, CAP_DAC_OVERRIDE is dropped with setpriv so that the mode holds).
# Prints the tally: failed writes tried, files left (must be 0).
#   disk_full.sh CUSHION SOURCE_ROOT WORK
set -uo pipefail
B=$1 R=$2 W=$3
rm -rf "$W" && mkdir -p "$W/out"
head -n 8 "$R/resources/text/tinystories-calib.txt" >"$W/calib.txt"
CAL=(calibrate --calib "$W/calib.txt" --candidates 3-30 --tau 1 --max-prefix 2 --sample-tokens 48 --tune-epochs 1 --batch 4
     --threads 1 --quiet)
EXP=(export --calib "$W/calib.txt" --group 32 --quiet --force)
fail=0 tried=0 left=0
problem() { echo "FAIL: $*"; fail=1; }
sha() { if [ -d "$1" ]; then find "$1" -type f -print0 | sort -z | xargs -0 sha256sum | sed "s|$1||" | sha256sum; else sha256sum <"$1"; fi | cut -c1-16; }

# Reference outputs, written without limits: the "previous files" every failing run must leave as they are.
"$B" "${CAL[@]}" --out "$W/out/a.cushion" --checkpoint "$W/out/a.ckpt" >/dev/null 2>&1 || { echo "reference calibrate failed"; exit 1; }
"$B" "${EXP[@]}" --cushion "$W/out/a.cushion" --out "$W/out/pkg" >/dev/null 2>&1 || { echo "reference export failed"; exit 1; }
"$B" "${EXP[@]}" --cushion "$W/out/a.cushion" --out "$W/out/ct" --format compressed-tensors >/dev/null 2>&1 ||
  { echo "reference compressed-tensors export failed"; exit 1; }
"$B" probe --prompt "Once upon a time" --png "$W/out/map.png" >/dev/null 2>&1 || { echo "reference probe failed"; exit 1; }
cp "$W/out/a.cushion" "$W/in.cushion"
cp -r "$W/out" "$W/ro" && chmod 0555 "$W/ro"
declare -A before
for f in a.cushion a.ckpt pkg ct map.png; do before[$f]=$(sha "$W/out/$f"); done
listing() { (cd "$1" && ls -A | sort | tr '\n' ' '); }
expected_out=$(listing "$W/out")

# check NAME TARGET CAUSE DIR -- COMMAND...: the command must fail naming TARGET and CAUSE, leave DIR's listing and
# every previous output as they were.
check() {
  local name=$1 target=$2 cause=$3 dir=$4
  shift 5
  tried=$((tried + 1))
  "$@" >"$W/run.out" 2>"$W/run.err"
  local rc=$?
  local err
  err=$(cat "$W/run.err")
  [ $rc -eq 2 ] || problem "$name: exit status $rc, expected 2 ($err)"
  case "$err" in *"$target"*"$cause"*) ;; *) problem "$name: the message does not name $target and '$cause': $err" ;; esac
  case "$err" in *".tmp-"*) problem "$name: the message names a temporary file: $err" ;; esac
  local now
  now=$(listing "$dir")
  if [ "$now" != "$expected_out" ]; then
    problem "$name: $dir holds '$now', expected '$expected_out'"
    left=$((left + 1))
  fi
  for f in a.cushion a.ckpt pkg ct map.png; do
    [ "$(sha "$dir/$f")" = "${before[$f]}" ] || problem "$name: $dir/$f changed"
  done
  echo "  $name: ${err#*error: }"
}
# The limit holds for every file the process writes, its stderr (run.err) included: a few KB at least.
full() { local kb=$1; shift; (trap '' XFSZ; ulimit -f "$kb"; exec "$@"); }

echo "disk full (file size limit):"
O=$W/out
check "calibrate --out" "$O/a.cushion" "File too large" "$O" -- full 4 "$B" "${CAL[@]}" --out "$O/a.cushion"
check "calibrate --checkpoint" "$O/a.ckpt" "File too large" "$O" -- \
  full 1 "$B" "${CAL[@]}" --out "$O/a.cushion" --checkpoint "$O/a.ckpt"
check "export" "$O/pkg" "File too large" "$O" -- full 64 "$B" "${EXP[@]}" --cushion "$W/in.cushion" --out "$O/pkg"
check "export --format compressed-tensors" "$O/ct" "File too large" "$O" -- \
  full 64 "$B" "${EXP[@]}" --cushion "$W/in.cushion" --out "$O/ct" --format compressed-tensors
check "export --format compressed-tensors of a package" "$O/ct" "File too large" "$O" -- \
  full 64 "$B" export "$O/pkg" --out "$O/ct" --format compressed-tensors --force --quiet
check "probe --png" "$O/map.png" "File too large" "$O" -- \
  full 8 "$B" probe --prompt "Once upon a time" --png "$O/map.png"

echo "read-only folder (mode 0555):"
if [ "$(id -u)" = 0 ]; then
  NOCAP=(setpriv --inh-caps=-dac_override,-dac_read_search --bounding-set=-dac_override,-dac_read_search)
  "${NOCAP[@]}" true || { echo "setpriv cannot drop CAP_DAC_OVERRIDE here"; exit 1; }
else
  NOCAP=()
fi
D=$W/ro
check "calibrate --out" "$D/a.cushion" "Permission denied" "$D" -- "${NOCAP[@]}" "$B" "${CAL[@]}" --out "$D/a.cushion"
check "calibrate --out (new file)" "$D/b.cushion" "Permission denied" "$D" -- "${NOCAP[@]}" "$B" "${CAL[@]}" --out "$D/b.cushion"
check "calibrate --checkpoint" "$D/a.ckpt" "Permission denied" "$D" -- \
  "${NOCAP[@]}" "$B" "${CAL[@]}" --out "$W/b.cushion" --checkpoint "$D/a.ckpt"
check "export" "$D/pkg" "Permission denied" "$D" -- "${NOCAP[@]}" "$B" "${EXP[@]}" --cushion "$W/in.cushion" --out "$D/pkg"
check "export --format compressed-tensors" "$D/ct" "Permission denied" "$D" -- \
  "${NOCAP[@]}" "$B" "${EXP[@]}" --cushion "$W/in.cushion" --out "$D/ct" --format compressed-tensors
check "export --format compressed-tensors of a package" "$D/ct" "Permission denied" "$D" -- \
  "${NOCAP[@]}" "$B" export "$O/pkg" --out "$D/ct" --format compressed-tensors --force --quiet
check "probe --png" "$D/map.png" "Permission denied" "$D" -- \
  "${NOCAP[@]}" "$B" probe --prompt "Once upon a time" --png "$D/map.png"
chmod 0755 "$D"
[ -e "$W/b.cushion" ] && problem "calibrate wrote its cushion though the checkpoint failed"

echo "failed writes tried: $tried, files left: $left"
[ $fail -eq 0 ] && echo "PASS" || echo "FAILED"
exit $fail
