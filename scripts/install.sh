#!/usr/bin/env bash
# Create .venv and install romi with its dev tools. torch is pinned to the CPU build here (it installs
# from local disk in seconds); the package itself asks for a range, so GPU machines get CUDA builds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==${ROMI_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev]"
echo "romi installed in $(pwd)/.venv"
