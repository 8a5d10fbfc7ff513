#!/usr/bin/env bash
# Run the whole test suite (sets up .venv first; installs the X server the viewer tests need).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/system_deps.sh qt xvfb  # the GUI tests run under Xvfb, with or without a screen
unset QT_QPA_PLATFORM  # napari cannot draw layers offscreen: the tests run under Xvfb
.venv/bin/ruff check src tests  # lint (rules in pyproject.toml)
exec .venv/bin/python -m pytest "$@"
