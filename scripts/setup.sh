#!/usr/bin/env bash
# Set up napari-ambiseg in a virtual environment at .venv (idempotent), with the system
# libraries napari needs on Linux (scripts/system_deps.sh): Qt's X11 libraries, and a virtual
# X server when there is no screen (so `ambiseg demo` renders headless).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then  # Debian: no ensurepip without python3-venv
    rm -rf .venv
    bash scripts/system_deps.sh venv
    "$PYTHON" -m venv .venv
  fi
fi
# Pin torch first: an unpinned torch pulls a multi-GB CUDA build. 2.13.0 here is the CPU wheel;
# with a GPU, install the torch build you want before running this script.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[testing]"
if [ "$(uname -s)" = Linux ]; then
  if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
    bash scripts/system_deps.sh qt        # a desktop: napari opens a window
  else
    bash scripts/system_deps.sh qt xvfb   # no screen: the demo renders under Xvfb
  fi
fi
TORCH=$(.venv/bin/python -c 'import torch; print("torch", torch.__version__)')
echo "napari-ambiseg is installed in .venv ($TORCH)"
