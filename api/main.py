"""The FastAPI application: ``create_app(settings)`` wires routers, errors and the database.

One app per settings object, with its own engine and sessionmaker kept on
``app.state`` (tests build one per temporary database; ``actsearch serve`` builds
one from the environment). The schema is migrated by whoever starts the service
(``actsearch serve`` runs ``init_db``), not at import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from actsearch import __version__
from actsearch.settings import Settings, get_settings
from api.dashboard import install_dashboard
from api.errors import install_error_handlers
from api.routes import activations, datasets, health, schedules, searches, trials
from store.db import make_engine, session_factory

DESCRIPTION = """\
Search activation functions for your network on your data.

1. `POST /datasets` (CSV, Parquet or NPZ upload) or `POST /datasets/builtin`.
2. `POST /searches` with the dataset's name, an architecture and the families to try.
3. Follow `GET /searches/{id}`; read `/leaderboard`, `/trials`, and `GET /trials/{id}/activations`
   for the learned curves; download the best model from `/export`.

Errors are JSON `{"detail": "..."}`: 404 unknown id, 409 state conflict, 413 too large,
415 unsupported file, 422 invalid input.
"""

OPENAPI_TAGS = [
    {"name": "health", "description": "liveness and reachability of the database and broker"},
    {"name": "activations", "description": "the catalogue of activation families"},
    {"name": "datasets", "description": "uploaded and built-in datasets, named and versioned"},
    {"name": "searches", "description": "activation searches: submit, follow, cancel, results"},
    {"name": "trials", "description": "trials across searches, curves and statistics"},
    {"name": "schedules", "description": "recurring searches (cron), fired by the scheduler"},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: from the ``ACTSEARCH_*`` environment)."""
    settings = settings or get_settings()
    engine = make_engine(settings.resolved_database_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="actsearch",
        version=__version__,
        summary="Activation-function search AutoML",
        description=DESCRIPTION,
        openapi_tags=OPENAPI_TAGS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    install_error_handlers(app)
    for module in (health, activations, datasets, searches, trials, schedules):
        app.include_router(module.router)
    install_dashboard(app)  # the web dashboard at / and /ui/... (HTML, static files)
    return app
