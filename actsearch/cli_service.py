"""CLI commands that start long-running services: ``serve``, ``worker``, ``beat``.

Kept apart from :mod:`actsearch.cli` so the search/show/curves commands stay
small; each command imports its service lazily (FastAPI, Celery) so
``actsearch search`` never pays for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

COMMANDS: dict[str, Callable[..., Any]] = {}

from api.serve import serve_command  # noqa: E402  (typer + stdlib only at import)

COMMANDS["serve"] = serve_command

from worker.cli import COMMANDS as _WORKER_COMMANDS  # noqa: E402  (typer + stdlib only at import)

COMMANDS["worker"], COMMANDS["beat"] = _WORKER_COMMANDS["worker"], _WORKER_COMMANDS["beat"]
