#!/usr/bin/env bash
# README command 1: set up .venv from scratch if needed, then the main job on the bundled default:
# train a small GKA model on the Fashion-MNIST sample shipped in the package (CPU, a few minutes),
# evaluate it, export the weights, reload them through timm's pretrained path and evaluate again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PY="${GKA_VENV:-.venv}/bin/python"
OUT_DIR="${OUT_DIR:-output/bundled}"
"$PY" train.py output="$OUT_DIR" "$@"
# eval.py reads the model name, kwargs and preprocessing from the config.json next to the weights
"$PY" eval.py --weights "$OUT_DIR/weights/model.safetensors" --bench-iters 5 --json "$OUT_DIR/eval.json"
