#!/usr/bin/env bash
# Create .venv/ with scaletrain (editable) and its development tools.
#   TORCH_SPEC  the torch requirement to install first (default: torch==2.13.0, the
#               version this setup is tested with; pip picks the build: CPU-only on this
#               project's CI machines, CUDA from PyPI on Linux x86_64)
#   PYTHON      the interpreter for the virtual environment (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  "${pip[@]}" install "${TORCH_SPEC:-torch==2.13.0}"
fi
# the optional extras too: the tests cover Hugging Face nets and the MLflow and W&B loggers
"${pip[@]}" install -e ".[dev,hf,mlflow,wandb]"
