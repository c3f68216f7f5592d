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
LOG=.venv/install.log

pip_quiet() {  # pip's chatter goes to the log; on failure, show its end
    if ! .venv/bin/python -m pip install -q "$@" >>"$LOG" 2>&1; then
        tail -40 "$LOG" >&2
        return 1
    fi
}

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
: >"$LOG"
pip_quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "installing $TORCH_SPEC (CPU build where available)"
    pip_quiet "$TORCH_SPEC" || {
        echo "falling back to the CPU wheel index for torch"
        pip_quiet torch --index-url https://download.pytorch.org/whl/cpu
    }
fi
echo "installing actsearch and its dependencies (log: $LOG)"
pip_quiet -e ".[dev]"
.venv/bin/python -c "import torch, optuna, actsearch; print('torch', torch.__version__, '| optuna', optuna.__version__, '| actsearch', actsearch.__version__)"
