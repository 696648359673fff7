#!/usr/bin/env bash
# Package test (ctest label `package`): builds the .deb with CPack from an already built tree, extracts it
# into a scratch root with dpkg -x and runs the installed tools from there.
#
#   bash packaging/test_package.sh BUILD_DIR [GUI(0|1)]
#
# Checks: the Depends line; the file list (launchers in bin/, programs in lib/cushion-studio/, default model with
# its licence, texts, desktop file and icon with the GUI); no RPATH into the build tree; the launcher finding
# torch through $CUSHION_PYTHON (ctest passes the project's .venv) and refusing clearly without one;
# `cushion --help`, `cushion info` finding the default model under <root>/usr/share/cushion-studio through the
# exe-relative path, `cushion-studio --help`.
set -euo pipefail
BUILD_DIR=$(cd "${1:?usage: test_package.sh BUILD_DIR [GUI]}" && pwd)
GUI=${2:-0}
case "$GUI" in ON|on|1|TRUE|true) GUI=1 ;; *) GUI=0 ;; esac

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/cushion-pkg.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

echo "== cpack -G DEB (into $SCRATCH/out)"
# -B keeps the package and CPack's staging tree out of the build directory.
(cd "$BUILD_DIR" && cpack -G DEB --config CPackConfig.cmake -B "$SCRATCH/out") >"$SCRATCH/cpack.log" 2>&1 ||
  { cat "$SCRATCH/cpack.log" >&2; fail "cpack"; }
shopt -s nullglob
debs=("$SCRATCH"/out/*.deb)
[ ${#debs[@]} -eq 1 ] || { cat "$SCRATCH/cpack.log" >&2; fail "expected one .deb, got ${#debs[@]}"; }
DEB=${debs[0]}
echo "package: $(basename "$DEB") ($(du -h "$DEB" | cut -f1))"

echo "== dpkg-deb -I"
INFO=$(dpkg-deb -I "$DEB")
echo "$INFO" | grep -E '^ (Package|Version|Architecture|Depends|Installed-Size):'
echo "$INFO" | grep -q '^ Package: cushion-studio$' || fail "package name"
DEPENDS=$(echo "$INFO" | sed -n 's/^ Depends: //p')
[ -n "$DEPENDS" ] || fail "no Depends line"
for dep in python3 libc6 libstdc++6; do
  [[ ", $DEPENDS," == *", $dep"[\ ,]* ]] || fail "Depends lacks $dep: $DEPENDS"
done
if [ "$GUI" = 1 ]; then
  for dep in libqt6core6 libqt6gui6 libqt6widgets6 libqt6opengl6 libqt6charts6 libstb0 libgl1; do
    [[ ", $DEPENDS," == *", $dep"[\ ,]* ]] || fail "Depends lacks $dep: $DEPENDS"
  done
else
  [[ "$DEPENDS" != *libqt6* ]] || fail "GUI-less package depends on Qt: $DEPENDS"
fi

echo "== dpkg -x"
ROOT="$SCRATCH/root"
dpkg -x "$DEB" "$ROOT"
SHARE="$ROOT/usr/share/cushion-studio"
expect=(usr/bin/cushion usr/lib/cushion-studio/cushion
  usr/share/cushion-studio/models/stories260K/{LICENSE,stories260K.bin,stories260K.gguf,tok512.bin,tok512.model}
  usr/share/cushion-studio/text/{tinystories-calib.txt,tinystories-eval.txt})
if [ "$GUI" = 1 ]; then
  expect+=(usr/bin/cushion-studio usr/lib/cushion-studio/cushion-studio usr/share/applications/cushion-studio.desktop
    usr/share/icons/hicolor/scalable/apps/cushion-studio.svg usr/share/cushion-studio/fonts/{DejaVuSans.ttf,LICENSE})
fi
for f in "${expect[@]}"; do [ -f "$ROOT/$f" ] || fail "missing /$f"; done
[ "$GUI" = 1 ] || [ ! -e "$ROOT/usr/bin/cushion-studio" ] || fail "cushion-studio packaged without the GUI"
if dpkg-deb -c "$DEB" | grep -q -- "$BUILD_DIR"; then fail "the package holds build-tree paths"; fi

[[ "$DEPENDS" != *libtorch* ]] || fail "Depends names a Debian libtorch: $DEPENDS"
for exe in "$ROOT"/usr/lib/cushion-studio/*; do
  rp=$(readelf -d "$exe" | grep -E 'RPATH|RUNPATH' || true)
  [ -z "$rp" ] || [[ "$rp" != *"$BUILD_DIR"* && "$rp" != *"$(dirname "$BUILD_DIR")"* ]] ||
    fail "$(basename "$exe") has an RPATH into the build tree: $rp"
done

# Run from the scratch root only: no CUSHION_RESOURCES, and from a directory without resources/.
unset CUSHION_RESOURCES
cd "$SCRATCH"

echo "== the launcher without a usable torch: a clear error, exit 127"
rc=0
CUSHION_PYTHON=/bin/false "$ROOT/usr/bin/cushion" --help >"$SCRATCH/notorch.txt" 2>&1 || rc=$?
cat "$SCRATCH/notorch.txt"
[ "$rc" = 127 ] && grep -q "pip install torch==" "$SCRATCH/notorch.txt" || fail "launcher without torch: exit $rc"
[ -n "${CUSHION_PYTHON:-}" ] || fail "CUSHION_PYTHON (a Python with the build's torch) is not set"

echo "== cushion --help"
"$ROOT/usr/bin/cushion" --help >"$SCRATCH/help.txt" || fail "cushion --help exited $?"
grep -q 'info' "$SCRATCH/help.txt" || { cat "$SCRATCH/help.txt"; fail "cushion --help lists no commands"; }
head -n 5 "$SCRATCH/help.txt"

echo "== cushion info (the installed default model)"
"$ROOT/usr/bin/cushion" info --json >"$SCRATCH/info.json" || fail "cushion info exited $?"
python3 - "$SCRATCH/info.json" "$SHARE" <<'EOF' || fail "cushion info did not load the installed default model"
import json, os, sys
info = json.load(open(sys.argv[1]))
share = os.path.realpath(sys.argv[2])
src = os.path.realpath(info["source"])
print(f"source {src}\narch {info['arch']}  layers {info['n_layers']}  dim {info['dim']}  vocab {info['vocab_size']}")
assert src.startswith(share + os.sep), f"loaded {src}, not from {share}"
assert info["vocab_size"] == 512 and info["n_layers"] == 5, info
EOF
"$ROOT/usr/bin/cushion" info >/dev/null || fail "cushion info (text) exited $?"

if [ "$GUI" = 1 ]; then
  echo "== cushion-studio --help (no display needed)"
  env -u DISPLAY -u WAYLAND_DISPLAY QT_QPA_PLATFORM=offscreen "$ROOT/usr/bin/cushion-studio" --help \
    >"$SCRATCH/studio-help.txt" 2>&1 || { cat "$SCRATCH/studio-help.txt"; fail "cushion-studio --help exited"; }
  grep -q -- '--no-restore' "$SCRATCH/studio-help.txt" || { cat "$SCRATCH/studio-help.txt"; fail "cushion-studio --help"; }
  head -n 3 "$SCRATCH/studio-help.txt"
fi
echo "OK: $(basename "$DEB")"
