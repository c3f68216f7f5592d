#!/usr/bin/env bash
# Create .venv and install actsearch with a deliberate torch build.
#
# A plain `torch` requirement in a fresh venv pulls a multi-GB CUDA build; we
# install the CPU build first (ACTSEARCH_TORCH overrides, e.g. "torch==2.13.0"
# or a CUDA wheel on a GPU box), so the project's loose `torch>=2.2` is then
# already satisfied and pip installs nothing more for it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${ACTSEARCH_TORCH:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "installing $TORCH_SPEC (CPU build where available)"
    if ! .venv/bin/python -m pip install -q "$TORCH_SPEC" 2>&1 | grep -v "^WARNING: Location"; then :; fi
    if ! .venv/bin/python -c "import torch" 2>/dev/null; then
        echo "falling back to the CPU wheel index for torch"
        .venv/bin/python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
    fi
fi
echo "installing actsearch and its dependencies"
.venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import torch, optuna, actsearch; print('torch', torch.__version__, '| optuna', optuna.__version__, '| actsearch', actsearch.__version__)"
