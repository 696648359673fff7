#!/usr/bin/env bash
# Session save torture (issue 15): the studio's session save (views/session_files.h, driven by session_save_driver:
# a session JSON of ~1.5 MB, a cushion of 32 MiB and a tuner state of 48 MiB written as one set) interrupted N times at
# random points, SIGINT (the save's cancel, asked before each file) and SIGKILL in turn. After every interrupted save:
#   - the session file is the previous one byte for byte, or the new one, whole;
#   - the set is consistent: `check` (File > Open's reading + the cushion's and tuner's SHA-256 + their contents) passes;
#     a set mixed by a kill between the renames (the one window: three renames in a row) is counted and must be
#     caught by the SHA-256 check (exit 3), never taken for whole;
#   - after SIGINT the save left no temporary of its own; after SIGKILL the killed process's temporaries may stay
#     (counted), and the next save that reaches its first file removes them; after a last uninterrupted save nothing
#     but the three files is left.
# Prints the tally.  session_save_torture.sh DRIVER WORK [N] [SEED]
set -uo pipefail
D=$1 W=$2 N=${3:-120} SEED=${4:-15}
RANDOM=$SEED
export SESSION_TORTURE_CUSHION_MB=${SESSION_TORTURE_CUSHION_MB:-32} SESSION_TORTURE_TUNER_MB=${SESSION_TORTURE_TUNER_MB:-48}
rm -rf "$W" && mkdir -p "$W/out"
S="$W/out/s.cushionstudio"
fail=0
problem() { echo "FAIL: $*"; fail=1; }
now_ms() { date +%s%3N; }
others() { find "$W/out" -mindepth 1 -maxdepth 1 ! -name s.cushionstudio ! -name s.cushion ! -name s.tuner -printf '%f\n'; }

# A process start that does nothing (the libraries' load) and a whole save: the random delays range between them.
t0=$(now_ms); "$D" >/dev/null 2>&1; T_START=$(( $(now_ms) - t0 ))
t0=$(now_ms); "$D" save "$S" 0 >/dev/null 2>&1 || { echo "the first save failed"; exit 1; }; T_SAVE=$(( $(now_ms) - t0 ))
"$D" check "$S" >/dev/null || { echo "the first save does not check"; exit 1; }
echo "uninterrupted: start ${T_START} ms, save ${T_SAVE} ms; $(du -sh "$W/out" | cut -f1) on disk"

tried=0 in_save=0 finished=0 cancelled=0 killed=0 kept=0 replaced=0 mixed=0 left_int=0 left_kill=0
for i in $(seq 1 "$N"); do
  prev=$(sha256sum <"$S" | cut -c1-64)
  sig=INT; [ $((i % 2)) -eq 0 ] && sig=KILL
  lo=$((T_START * 8 / 10)); hi=$((T_SAVE * 11 / 10))
  delay=$(( lo + (RANDOM * 32768 + RANDOM) % (hi - lo + 1) ))
  "$D" save "$S" "$i" >"$W/run.log" 2>&1 &
  pid=$!
  sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
  kill -$sig $pid 2>/dev/null
  { wait $pid; } 2>/dev/null
  rc=$?
  tried=$((tried + 1))
  case $rc in
    0) finished=$((finished + 1)) ;;
    130) cancelled=$((cancelled + 1)); grep -q '^cancelled$' "$W/run.log" && in_save=$((in_save + 1)) ;;
    137) killed=$((killed + 1)) ;;
    *) problem "save $i (SIG$sig after $delay ms): exit $rc"; cat "$W/run.log" ;;
  esac
  now=$(sha256sum <"$S" | cut -c1-64)
  out=$("$D" check "$S" 2>&1); crc=$?
  got=$(echo "$out" | sed -n 's/^seed //p')
  if [ "$now" = "$prev" ]; then
    kept=$((kept + 1))
    [ $rc -eq 0 ] && problem "save $i finished but the session file is the previous one"
  else
    replaced=$((replaced + 1))
    [ "$got" = "$i" ] || problem "save $i (SIG$sig after $delay ms, exit $rc): the session file changed but is not save $i's: $out"
  fi
  if [ $crc -eq 3 ]; then
    mixed=$((mixed + 1))  # caught by the SHA-256 check: reported, not restored
    [ $sig = KILL ] || problem "save $i (SIGINT, exit $rc): a mixed set without a kill: $out"
  elif [ $crc -ne 0 ]; then
    problem "save $i (SIG$sig after $delay ms, exit $rc): the set on disk does not check: $out"
  fi
  # This save's own leftovers (its pid in the name); those of an earlier killed save may still be there when this one
  # was interrupted before its first file (the sweep runs then).
  l=$(others | grep -E "\.(tmp|old)-$pid-" || true)
  if [ -n "$l" ]; then
    n=$(echo "$l" | wc -l)
    if [ $sig = INT ]; then left_int=$((left_int + n)); problem "save $i (SIGINT after $delay ms, exit $rc) left: $l"
    else left_kill=$((left_kill + n)); fi
  fi
done
# A last save, never interrupted: it removes what killed saves left, and the set is whole.
"$D" save "$S" 999 >"$W/run.log" 2>&1 || { problem "the last save failed"; cat "$W/run.log"; }
out=$("$D" check "$S" 2>&1) && [ "$out" = "seed 999" ] || problem "the last save does not check: $out"
l=$(others)
left_end=0
[ -n "$l" ] && { left_end=$(echo "$l" | wc -l); problem "left after the last save: $l"; }
echo "session save torture: $tried interrupted saves (SIGINT and SIGKILL in turn, ${T_START}-${T_SAVE} ms), $finished had finished," \
     "$cancelled cancelled (exit 130; $in_save by the save's own cancel, the rest before its signal handler), $killed killed; session file kept $kept, replaced by the whole new one $replaced;" \
     "mixed sets (kill between the renames, caught by the SHA-256 check) $mixed; files left after SIGINT $left_int," \
     "temporaries left by SIGKILL $left_kill (removed by the next save), files left at the end $left_end"
[ $fail -eq 0 ] && echo "session save torture: OK"
exit $fail
