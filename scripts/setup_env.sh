#!/usr/bin/env bash
# Create (or reuse) the project virtual environment in .venv and install gka-vision into it.
# Usage: source-free; prints the python to use. Override the location with GKA_VENV=/path.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GKA_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first (a CPU machine gets whatever build pip resolves; any torch >= 2.4 works)
if ! "$VENV/bin/python" -c "import torch, torchvision" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip install -q torch torchvision 2>&1 | grep -v "^WARNING: Location" || true
fi
"$VENV/bin/python" -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import gka_vision, timm, torch; print('gka-vision ready: torch', torch.__version__, 'timm', timm.__version__)"
