"""The arrows of DESIGN.md: store/ never pulls in torch, Celery, FastAPI or Optuna."""

from __future__ import annotations

import subprocess
import sys


def test_store_imports_no_heavy_or_forbidden_packages() -> None:
    code = (
        "import sys, store, store.db, store.tables, store.repo, store.artifacts, store.arrays\n"
        "bad = {'torch', 'celery', 'fastapi', 'optuna'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
