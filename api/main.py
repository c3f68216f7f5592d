"""The FastAPI application: ``create_app(settings)`` wires routers, errors and the database.

One app per settings object, with its own engine and sessionmaker kept on
``app.state`` (tests build one per temporary database; ``actsearch serve`` builds
one from the environment). The schema is migrated by whoever starts the service
(``actsearch serve`` runs ``init_db``), not at import.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from api.auth import make_buckets
from api.body_limit import BodyLimitMiddleware
from api.dashboard import install_dashboard
from api.deps import AUTH_RESPONSES, get_principal
from api.errors import install_error_handlers
from api.finished import FinishedSearchCache
from api.origin import OriginGuardMiddleware, served_hosts
from api.routes import activations, admin, datasets, health, me, schedules, searches, trials
from api.slow import SlowOperations
from core import __version__
from core.settings import Settings, get_settings
from search.datasets.generate import shutdown_generation
from store.db import make_engine, session_factory

DESCRIPTION = """\
Search activation functions for your network on your data.

1. `POST /datasets` (CSV, Parquet or NPZ upload) or `POST /datasets/builtin`.
2. `POST /searches` with the dataset's name, an architecture and the families to try.
3. Follow `GET /searches/{id}`; read `/leaderboard`, `/trials`, and `GET /trials/{id}/activations`
   for the learned curves; download the best model from `/export`.

Errors are JSON `{"detail": "..."}`: 401 missing or bad API key, 403 admin only, 404 unknown
id (or another owner's), 409 state conflict, 413 too large, 415 unsupported file, 422 invalid
input, 429 over a rate or concurrency limit.

Authentication (on by default in distributed mode): send `Authorization: Bearer <key>`;
an admin creates keys with `actsearch keys create --owner NAME` or `POST /admin/keys`.
Every dataset, search, trial and schedule belongs to its creator's owner.
"""

OPENAPI_TAGS = [
    {"name": "health", "description": "liveness and reachability of the database and broker"},
    {"name": "activations", "description": "the catalogue of activation families"},
    {"name": "datasets", "description": "uploaded and built-in datasets, named and versioned"},
    {"name": "searches", "description": "activation searches: submit, follow, cancel, results"},
    {"name": "trials", "description": "trials across searches, curves and statistics"},
    {"name": "schedules", "description": "recurring searches (cron), fired by the scheduler"},
    {"name": "auth", "description": "who the API key belongs to"},
    {"name": "admin", "description": "API keys: create, list, revoke (admin keys only)"},
]

#: Routers anyone may call (no owner data): liveness and the activation catalogue.
PUBLIC_ROUTERS = (health, activations)
#: Routers behind an API key (when auth is on) and the per-owner rate limit.
PROTECTED_ROUTERS = (datasets, searches, trials, schedules, me, admin)


GC_YOUNG_THRESHOLD = 20_000


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for ``settings`` (default: from the ``ACTSEARCH_*`` environment)."""
    settings = settings or get_settings()
    engine = make_engine(settings.resolved_database_url)
    slow = SlowOperations(per_owner=settings.limits.max_slow_operations_per_owner,
                          threads=settings.limits.slow_operation_threads)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Everything imported and built so far lives as long as the process: moving it
        # out of the collector's generations keeps each full collection from walking
        # hundreds of MB of module objects (torch, optuna, pydantic schemas), which
        # showed as latency spikes and CPU per read under load. A request makes
        # thousands of short-lived objects (ORM rows, pydantic models) and few cycles,
        # so the youngest generation is collected less often than Python's default 700.
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
        yield
        slow.shutdown()
        shutdown_generation()
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
    app.state.rate_buckets = make_buckets(settings)
    app.state.slow = slow
    app.state.finished = FinishedSearchCache()
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes)
    # added last, so it runs first: a refused origin or host never reaches the rest
    app.add_middleware(OriginGuardMiddleware, hosts=served_hosts(settings.http),
                       origins=settings.http.allowed_origins)
    for module in PUBLIC_ROUTERS:
        app.include_router(module.router)
    for module in PROTECTED_ROUTERS:
        app.include_router(module.router, dependencies=[Depends(get_principal)],
                           responses=AUTH_RESPONSES)
    install_dashboard(app)  # the web dashboard at / and /ui/... (HTML, static files)
    return app
