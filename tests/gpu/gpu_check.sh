#!/usr/bin/env bash
# The GPU check, in one run, for the rare times a GPU machine (H100/H200, PyTorch with CUDA, no Qt) is at hand:
#   1. builds core, the CLI, the tests and bench_llama7b_shape headless against that machine's torch
#      (nlohmann-json and GoogleTest from .deps/, made here by tests/gpu/prepare_deps.sh and carried along);
#   2. `cushion info --json` (libtorch, cuda_compiled, the GPUs it sees);
#   3. ctest -L cuda: CPU-vs-CUDA agreement (fp32, bf16, fp16), free memory through libtorch, a search step,
#      and --kernels int8 through at::_int_mm;
#   4. the Llama-2-7B-shaped prefill / decode / search-step benchmark (ours) and the same with transformers;
#   5. one summary: $OUT/summary.md (and the logs and JSON beside it).
# Meant to fit in 8 minutes of GPU time (not yet run on a GPU: an estimate). Without a GPU it says so and exits 1.
#   usage: bash tests/gpu/gpu_check.sh [OUT_DIR]       (OUT_DIR defaults to $OUT, else gpu-check-out)
#   env:   CUSHION_PYTHON (default /opt/torch/.venv/bin/python, else .venv/bin/python), JOBS, LAYERS (32)
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
OUTDIR=${1:-${OUT:-gpu-check-out}}
mkdir -p "$OUTDIR"
OUTDIR=$(realpath "$OUTDIR")
SUM="$OUTDIR/summary.md"
JOBS=${JOBS:-$(nproc)}
LAYERS=${LAYERS:-32}
T0=$(date +%s)
say() { echo "$*" | tee -a "$SUM"; }
elapsed() { echo "$(( $(date +%s) - T0 )) s"; }
: > "$SUM"
say "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"

PY=${CUSHION_PYTHON:-}
for p in /opt/torch/.venv/bin/python "$ROOT/.venv/bin/python"; do
  [ -z "$PY" ] && [ -x "$p" ] && PY=$p
done
if [ -z "$PY" ] || ! "$PY" -c "import torch" 2>/dev/null; then
  say "FAIL: no Python with torch (set CUSHION_PYTHON)"; exit 1
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  say "NO GPU: torch.cuda.is_available() is false on this machine; nothing to check (exit 1)"
  { nvidia-smi -L; } 2>&1 | head -3 | tee -a "$SUM"
  exit 1
fi
say ""
say "## Machine"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -4
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda)"
  nvcc --version 2>/dev/null | tail -1; echo "cmake $(cmake --version | head -1 | awk '{print $3}'), $(nproc) cores"
} 2>&1 | sed 's/^/    /' | tee -a "$SUM"

say ""
say "## Build (headless, Release)"
B="$ROOT/build-gpu"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
if cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCUSHION_GUI=OFF -DCUSHION_BENCHMARKS=OFF \
     -DCUSHION_PYTHON="$PY" > "$OUTDIR/configure.log" 2>&1 &&
   cmake --build "$B" -j "$JOBS" --target cushion numerics_tests bench_llama7b_shape \
     > "$OUTDIR/build.log" 2>&1; then
  say "built in $(elapsed): $(grep -o 'libtorch [0-9.a-z+]*, CUDA compiled in: [A-Z]*' "$OUTDIR/configure.log" | head -1)"
else
  say "FAIL: build (see configure.log / build.log); last lines:"
  tail -n 25 "$OUTDIR/configure.log" "$OUTDIR/build.log" 2>/dev/null | sed 's/^/    /' | tee -a "$SUM"
  exit 1
fi

say ""
say "## cushion info --json"
"$B/bin/cushion" info --json > "$OUTDIR/info.json" 2>&1
"$PY" - "$OUTDIR/info.json" <<'PYEOF' 2>&1 | tee -a "$SUM"
import json, sys
try:
    j = json.load(open(sys.argv[1]))
    print(f"    libtorch {j['libtorch']}, cuda_compiled {j['cuda_compiled']}, cuda_devices {[d['name'] for d in j['cuda_devices']]}")
except Exception as e:
    print("    FAIL: could not read info.json:", e, open(sys.argv[1]).read()[:500])
PYEOF

say ""
say "## ctest -L cuda (CPU vs CUDA, int8 through at::_int_mm)"
(cd "$B" && timeout 150 ctest -L cuda --output-on-failure -j 4 > "$OUTDIR/ctest_cuda.log" 2>&1)
CTEST_RC=$?
grep -E "tests passed|tests failed|\*\*\*Failed|Not Run|SKIPPED|Skipped" "$OUTDIR/ctest_cuda.log" | sed 's/^/    /' | tee -a "$SUM"
grep -hE "^(stories260K|search step|NVIDIA|.*free of)" "$OUTDIR/ctest_cuda.log" | sed 's/^/    /' | tee -a "$SUM"
if grep -q "SKIPPED\|Skipped" "$OUTDIR/ctest_cuda.log"; then say "    NOTE: some cuda tests skipped"; fi
say "    ctest exit $CTEST_RC ($(elapsed))"

say ""
say "## Llama-2-7B shape ($LAYERS layers), bf16: ours"
timeout 150 "$B/bin/bench_llama7b_shape" --device cuda --dtype bf16 --layers "$LAYERS" --candidates 64 --steps 4 \
  --json "$OUTDIR/ours.json" > "$OUTDIR/bench_ours.log" 2>&1
say "    exit $? ($(elapsed))"
sed 's/^/    /' "$OUTDIR/bench_ours.log" | tee -a "$SUM"

say ""
say "## The same with transformers"
HF_PY_PATH=""
if ! "$PY" -c "import transformers" 2>/dev/null; then
  if [ -d .deps/wheels ]; then
    "$PY" -m pip install -q --no-index --find-links .deps/wheels --target /tmp/cushion-pylib transformers \
      > "$OUTDIR/pip.log" 2>&1 && HF_PY_PATH=/tmp/cushion-pylib
  fi
fi
PYTHONPATH="$HF_PY_PATH${PYTHONPATH:+:$PYTHONPATH}" timeout 170 "$PY" tests/gpu/hf_prefill_bench.py --dtype bf16 \
  --layers "$LAYERS" --json "$OUTDIR/hf.json" > "$OUTDIR/bench_hf.log" 2>&1
HF_RC=$?
say "    exit $HF_RC ($(elapsed))"
sed 's/^/    /' "$OUTDIR/bench_hf.log" | tail -n 20 | tee -a "$SUM"
[ -f "$OUTDIR/pip.log" ] && tail -n 3 "$OUTDIR/pip.log" | sed 's/^/    pip: /' | tee -a "$SUM"

say ""
say "## Side by side"
"$PY" - "$OUTDIR/ours.json" "$OUTDIR/hf.json" <<'PYEOF' 2>&1 | tee -a "$SUM"
import json, sys
try:
    o = json.load(open(sys.argv[1]))
except Exception as e:
    print("    (no figures of ours:", e, ")"); sys.exit(0)
try:
    h = json.load(open(sys.argv[2]))
except Exception:
    h = {}
print("| workload | ours | transformers | ours / transformers |")
print("| --- | --- | --- | --- |")
for k, label in (("prefill_b1", "prefill 512 x 1 (tokens/s)"), ("prefill_b8", "prefill 512 x 8 (tokens/s)"),
                 ("decode", "decode (tokens/s)")):
    a = o.get(k, {}).get("tokens_per_s"); b = h.get(k, {}).get("tokens_per_s")
    r = f"{a / b:.2f}x" if a and b else "-"
    print(f"| {label} | {a or 0:.0f} | {b or 0:.0f} | {r} |")
s = o.get("search_step", {}); e = h.get("search_equivalent", {})
a = s.get("candidates_per_s"); b = e.get("candidates_per_s")
print(f"| search candidates/s (ours: with L_q; transformers: forward only) | {a or 0:.1f} | {b or 0:.1f} | "
      f"{(a / b if a and b else 0):.2f}x |")
print(f"\nmatmul rate {o.get('matmul_tflops', 0):.0f} TFLOP/s; prefill b8 at {100 * o.get('prefill_b8', {}).get('flop_fraction', 0):.0f}% of it; "
      f"search step at {100 * s.get('flop_fraction', 0):.0f}%: full-vocabulary step {s.get('projected_step_hours_full_vocab', 0):.2f} h, "
      f"{s.get('steps')} steps {s.get('projected_search_hours', 0):.2f} h on one GPU (paper: 2.68 h on 4 x A6000)")
PYEOF
say ""
say "total $(elapsed)"
[ "$CTEST_RC" -eq 0 ] || exit 1
