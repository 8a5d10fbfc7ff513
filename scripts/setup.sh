#!/usr/bin/env bash
# Set up napari-ambiseg in a virtual environment at .venv (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Pin torch first: an unpinned torch pulls a multi-GB CUDA build. 2.13.0 here is the CPU wheel;
# with a GPU, install the torch build you want before running this script.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[testing]"
echo "napari-ambiseg is installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
