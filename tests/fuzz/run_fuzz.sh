#!/usr/bin/env bash
# One fuzz target, bounded: replays its regression inputs (tests/fuzz/regressions/<target>/*: each crash found
# once), then fuzzes from its seeds for at most RUNS inputs or SECONDS seconds. Fails on any finding; the input
# is kept in WORK/artifacts/<target>/ (replay: CUSHION_FUZZ_TARGET=<target> cushion_fuzz FILE).
#   run_fuzz.sh CUSHION_FUZZ TARGET WORK REGRESSIONS RUNS SECONDS [extra libFuzzer flags]
set -euo pipefail
exe=$1 target=$2 work=$3 regressions=$4 runs=$5 seconds=$6
shift 6
export CUSHION_FUZZ_TARGET=$target
seeds=$work/seeds/$target
corpus=$work/corpus/$target
artifacts=$work/artifacts/$target
[ -d "$seeds" ] || { echo "run_fuzz: no seeds in $seeds (the fuzz_seeds test writes them)"; exit 1; }
rm -rf "$corpus"
mkdir -p "$corpus" "$artifacts"
# Inputs that crashed once, each run as it is.
if [ -d "$regressions/$target" ]; then
  mapfile -t reg < <(find "$regressions/$target" -type f ! -name '*.md' | sort)
  if [ ${#reg[@]} -gt 0 ]; then
    echo "== $target: replaying ${#reg[@]} regression inputs"
    "$exe" -rss_limit_mb=4096 -timeout=60 "${reg[@]}" 2>&1 | tail -n 3
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "run_fuzz: a regression input of $target fails again"; exit 1; }
  fi
fi
echo "== $target: fuzzing (at most $runs inputs, $seconds s)"
log=$work/$target.log
set +e
"$exe" "$corpus" "$seeds" -runs="$runs" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 \
  -malloc_limit_mb=2048 -artifact_prefix="$artifacts/" -print_final_stats=1 "$@" >"$log" 2>&1
rc=$?
set -e
grep -E "^#[0-9]+ +(INITED|DONE)|^Done|stat::number_of_executed_units|stat::peak_rss_mb|FINDING|ERROR|SUMMARY" "$log" | head -n 20
if [ $rc -ne 0 ]; then
  tail -n 60 "$log"
  echo "run_fuzz: $target found a problem (exit $rc); the input is in $artifacts/"
  exit 1
fi
