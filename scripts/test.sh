#!/usr/bin/env bash
# Run the whole test suite (sets up .venv first; installs the X server the viewer tests need).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
APT_PKGS="xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libxcb-cursor0 libxcb-randr0 libxcb-shape0 libegl1 libgl1 libfontconfig1 libdbus-1-3"
missing=$(for p in $APT_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
unset QT_QPA_PLATFORM  # napari cannot draw layers offscreen: the tests run under Xvfb
exec .venv/bin/python -m pytest "$@"
