#!/usr/bin/env bash
# ctest distributed_calibrate: `cushion calibrate` on 2 local processes (Gloo over loopback) against the same
# run in one process, on stories260K; then the failure paths: ranks with different settings, a rank with no
# peers (timeout), a rank that fails, each ending every rank with a clear message and no output file.
#   usage: distributed_check.sh CUSHION_CLI SOURCE_DIR WORK_DIR
# Needs a python3 with numpy and safetensors ($PYTHON: ctest passes the project's .venv).
set -euo pipefail
CLI=$(realpath "$1") SRC=$(realpath "$2") WORK=$(realpath -m "$3")
PY=${PYTHON:-python3}
"$PY" -c "import numpy, safetensors" || { echo "FAIL: $PY lacks numpy/safetensors (packaging/setup.sh makes .venv)"; exit 1; }
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
CALIB="$SRC/resources/text/tinystories-calib.txt"
# Every candidate (509), a short sample, three search steps at most, one tuning epoch of 4-document batches.
COMMON=(--calib "$CALIB" --max-prefix 4 --tau 0.99 --sample-tokens 48 --tune-epochs 1 --batch 4 --lr 0.01 --json)
fail() { echo "FAIL: $*"; exit 1; }
free_port() { "$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }

echo "== one process"
"$CLI" calibrate "${COMMON[@]}" --out one.safetensors --out-greedy one_greedy.safetensors > one.json
echo "== two local processes (--local-processes 2)"
"$CLI" calibrate "${COMMON[@]}" --local-processes 2 --out two.safetensors --out-greedy two_greedy.safetensors \
  --checkpoint two.ckpt > two.json
[ -f two.ckpt ] || fail "rank 0 wrote no checkpoint"
ls -a | grep -E '\.tmp|\.part' && fail "temporary files left behind"
"$PY" "$SRC/tests/distributed/compare_runs.py" one.json two.json one_greedy.safetensors two_greedy.safetensors \
  one.safetensors two.safetensors

echo "== two ranks started by hand with different settings: both end with the disagreement named"
PORT=$(free_port)
rc0=0 rc1=0
"$CLI" calibrate "${COMMON[@]}" --out bad.safetensors --world-size 2 --rank 0 --rendezvous 127.0.0.1:$PORT \
  --dist-timeout 60 > /dev/null 2> r0.err & p0=$!
"$CLI" calibrate "${COMMON[@]}" --tau 0.5 --out bad.safetensors --world-size 2 --rank 1 --rendezvous 127.0.0.1:$PORT \
  --dist-timeout 60 > /dev/null 2> r1.err || rc1=$?
wait $p0 || rc0=$?
cat r0.err r1.err
[ $rc0 -ne 0 ] && [ $rc1 -ne 0 ] || fail "ranks with different settings exited $rc0 / $rc1"
grep -q "disagree" r0.err && grep -q "disagree" r1.err || fail "the disagreement is not named on both ranks"
[ ! -e bad.safetensors ] || fail "a failed run wrote its output"

echo "== rank 1 alone: the rendezvous times out (3 s) with a clear message"
PORT=$(free_port)
rc=0
timeout 60 "$CLI" calibrate "${COMMON[@]}" --out bad.safetensors --world-size 2 --rank 1 \
  --rendezvous 127.0.0.1:$PORT --dist-timeout 3 > /dev/null 2> alone.err || rc=$?
cat alone.err
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "a rank without its peers exited $rc (124 = it hung)"
grep -q "rendezvous" alone.err || fail "no rendezvous error message"

echo "== a failing rank ends the others: rank 1 cannot read its calibration file"
PORT=$(free_port)
rc0=0 rc1=0
timeout 120 "$CLI" calibrate "${COMMON[@]}" --out bad.safetensors --world-size 2 --rank 0 \
  --rendezvous 127.0.0.1:$PORT --dist-timeout 60 > /dev/null 2> f0.err & p0=$!
timeout 120 "$CLI" calibrate "${COMMON[@]}" --calib missing.txt --out bad.safetensors --world-size 2 --rank 1 \
  --rendezvous 127.0.0.1:$PORT --dist-timeout 60 > /dev/null 2> f1.err || rc1=$?
wait $p0 || rc0=$?
cat f0.err f1.err
[ $rc0 -ne 0 ] && [ $rc0 -ne 124 ] && [ $rc1 -ne 0 ] || fail "exit statuses $rc0 / $rc1 (124 = hung)"
grep -q "missing.txt" f0.err || fail "rank 0 does not say why rank 1 failed"
[ ! -e bad.safetensors ] || fail "a failed run wrote its output"
echo "distributed_calibrate: OK"
