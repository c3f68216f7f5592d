"""``serve``, ``worker`` and ``beat``: the commands that start long-running services.

Each lives with its service (``api/serve.py``, ``worker/cli.py``) and imports it
lazily (FastAPI, Celery), so ``actsearch search`` never pays for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.serve import serve_command
from worker.cli import COMMANDS as WORKER_COMMANDS

COMMANDS: dict[str, Callable[..., Any]] = {
    "serve": serve_command,
    "worker": WORKER_COMMANDS["worker"],
    "beat": WORKER_COMMANDS["beat"],
}
