"""actsearch's storage: ``actsearch_*`` tables beside Optuna's, sessions, migrations, artifacts.

Imports SQLAlchemy, Alembic and numpy only (never torch, Celery or FastAPI), so
every process (API, worker, CLI) can use it. Data access lives in ``store.repo``.
"""

from __future__ import annotations

from store.db import init_db, make_engine, session_factory, session_scope
from store.tables import Base

__all__ = ["Base", "init_db", "make_engine", "session_factory", "session_scope"]
