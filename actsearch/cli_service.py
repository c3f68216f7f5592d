"""CLI commands that start long-running services: ``serve``, ``worker``, ``beat``.

Kept apart from :mod:`actsearch.cli` so the search/show/curves commands stay
small; each command imports its service lazily (FastAPI, Celery) so
``actsearch search`` never pays for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

COMMANDS: dict[str, Callable[..., Any]] = {}
