#!/usr/bin/env bash
# Redoes the README's SmolLM2 screenshots (resources/screenshots/smollm2_*.png) under Xvfb; not run in CI.
#   bash tests/gui/smollm2_screenshots.sh [BUILD_DIR]     (needs models/SmolLM2-135M-Instruct.Q4_1.gguf:
#                                                          bash packaging/fetch_smollm2.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-build}
cmake --build "$BUILD_DIR" --target smollm2_screenshots
CUSHION_RESOURCES="$PWD/resources" QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1920x1200x24" \
  "$BUILD_DIR/bin/smollm2_screenshots" models/SmolLM2-135M-Instruct.Q4_1.gguf resources/screenshots
