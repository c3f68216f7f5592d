"""``GET /health``: liveness plus database and broker reachability."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from api.deps import SettingsDep
from api.health import check_broker, check_database
from api.schemas import HealthPublic
from core import __version__

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic,
            responses={503: {"model": HealthPublic, "description": "a dependency is unreachable"}})
async def health(request: Request, response: Response, settings: SettingsDep) -> HealthPublic:
    """Liveness, database and broker reachability, and the mode (embedded or distributed)."""
    engine = request.app.state.engine
    if engine.dialect.name == "sqlite":  # a local file: answers at once, on the loop
        database = check_database(engine)
    else:  # over the network, which may hang until the probe's timeout: on a thread
        database = await run_in_threadpool(check_database, engine)
    broker = (await run_in_threadpool(check_broker, settings.broker_url)
              if settings.distributed else None)
    ok = database.ok and (broker is None or broker.ok)
    if not ok:
        response.status_code = 503
    return HealthPublic(
        status="ok" if ok else "degraded",
        mode="distributed" if settings.distributed else "embedded",
        version=__version__,
        database=database,
        broker=broker,
    )
