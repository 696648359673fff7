#!/usr/bin/env bash
# The main job's headless tour (packaging/setup.sh run without a display): the command-line equivalent of the
# studio on the embedded stories260K, then, when the set-up could fetch it (packaging/fetch_smollm2.sh),
# SmolLM2-135M: its info, a probe of its massive activations, the PrefixQuant outliers of the held-out text and
# the paper's W8A8 table (`eval --sweep`). ctest `tour_headless` (labels reference, long) runs it.
#   BUILD_DIR=build bash packaging/tour.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
# Headless: the command-line equivalent on the embedded default model.
B="$BUILD_DIR/bin/cushion"
echo "== cushion info" && "$B" info
echo "== cushion generate" && "$B" generate --prompt "Once upon a time" --max-tokens 60
echo "== cushion ppl (held-out text)" && "$B" ppl --text resources/text/tinystories-eval.txt
echo "== cushion probe (down-projection inputs)" && "$B" probe --prompt "Once upon a time, there was a little girl named Lily." --png "$BUILD_DIR/probe.png"
# The real LLM, when the set-up could fetch it: its natural massive activations.
S=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$S" ]; then
  echo "== SmolLM2-135M ($S): cushion info" && "$B" info "$S"
  echo "== SmolLM2: cushion probe (the massive activations sit on the first token, <|endoftext|>)" &&
    "$B" probe "$S" --prompt "Once upon a time, there was a little girl named Lily." --png "$BUILD_DIR/smollm2-probe.png"
  echo "== SmolLM2: cushion outliers on the held-out text (PrefixQuant's max/median > 64)" &&
    "$B" outliers "$S" --text resources/text/tinystories-eval.txt --top 10 --quiet
  # The paper's table on SmolLM2: W8A8 per-token, per-tensor dynamic and static, each with and without
  # SmoothQuant (about 4 minutes and up to 10 GB on 2 cores; tests/perf/RESULTS.md has it with the cure).
  echo "== SmolLM2: cushion eval --sweep, the W8A8 table (per-tensor static: the setting the cushion repairs)" &&
    "$B" eval "$S" --text resources/text/tinystories-eval.txt --calib resources/text/tinystories-calib.txt --sweep --quiet
else
  echo "== SmolLM2-135M not fetched (bash packaging/fetch_smollm2.sh): the real-LLM part of the tour is skipped"
fi
