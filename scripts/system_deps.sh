#!/usr/bin/env bash
# System packages napari-ambiseg needs on Debian/Ubuntu (apt), listed in this one place and
# used by setup.sh and test.sh. Installs only what is missing (apt-get; sudo when not root).
#
#   bash scripts/system_deps.sh [--dry-run] GROUP...
#
# Groups:
#   venv  python3.X-venv for $PYTHON (Debian's python3 cannot make a venv without it)
#   qt    the libraries Qt's X11 (xcb) platform and vispy's OpenGL load to open a napari window
#   xvfb  a virtual X server: napari without a screen (the headless demo, the GUI tests)
# --dry-run prints the apt-get command instead of running it. On a system without dpkg and
# apt-get it says what to install and changes nothing.
set -euo pipefail

DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; shift; fi
[ $# -gt 0 ] || { echo "usage: $0 [--dry-run] venv|qt|xvfb..." >&2; exit 2; }

packages_of() {
  case "$1" in
    venv) ver=$("${PYTHON:-python3}" -c 'import sys; print(*sys.version_info[:2], sep=".")')
          echo "python$ver-venv" ;;
    qt) echo "libglib2.0-0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0" \
             "libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-randr0" \
             "libxcb-shape0 libegl1 libgl1 libfontconfig1 libdbus-1-3" ;;
    xvfb) echo "xvfb" ;;
    *) echo "unknown group '$1' (use venv, qt or xvfb)" >&2; return 2 ;;
  esac
}

wanted=""
for group in "$@"; do wanted="$wanted $(packages_of "$group")"; done

if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "system_deps: no dpkg/apt-get here; if napari cannot start, install with your package" \
       "manager the equivalents of:$wanted" >&2
  exit 0
fi

missing=""
for p in $wanted; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
[ -n "$missing" ] || exit 0

if [ "$(id -u)" = 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "system_deps: missing system packages:$missing. As root, run:" >&2
  echo "  apt-get update && apt-get install -y --no-install-recommends$missing" >&2
  exit 1
fi
echo "system_deps: installing$missing" >&2
if [ "$DRY_RUN" = 1 ]; then
  echo "$SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends$missing"
  exit 0
fi
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
