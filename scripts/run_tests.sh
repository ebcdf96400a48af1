#!/usr/bin/env bash
# README command 2: set up .venv from scratch if needed, then run the whole test suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
VENV="${GKA_VENV:-.venv}"
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
