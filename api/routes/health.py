"""``GET /health``: liveness plus database and broker reachability."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from core import __version__
from api.deps import SettingsDep
from api.health import check_broker, check_database
from api.schemas import HealthPublic

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic,
            responses={503: {"model": HealthPublic, "description": "a dependency is unreachable"}})
def health(request: Request, response: Response, settings: SettingsDep) -> HealthPublic:
    """Liveness, database and broker reachability, and the mode (embedded or distributed)."""
    database = check_database(request.app.state.engine)
    broker = check_broker(settings.broker_url) if settings.distributed else None
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
