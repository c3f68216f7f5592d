"""Reachability probes behind ``GET /health`` (short timeouts: a health check must not hang)."""

from __future__ import annotations

from sqlalchemy import Engine, text

from api.schemas import ComponentHealth
from store.db import normalize_url

PROBE_TIMEOUT_S = 2.0


def check_database(engine: Engine) -> ComponentHealth:
    """``SELECT 1`` on the app's engine."""
    where = normalize_url(engine.url).render_as_string(hide_password=True)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "unreachable"; say which
        return ComponentHealth(ok=False, detail=f"{where}: {type(exc).__name__}: {exc}"[:500])
    return ComponentHealth(ok=True, detail=f"{engine.dialect.name} reachable")


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


def check_broker(url: str | None) -> ComponentHealth:
    """PING a Redis broker (or open a kombu connection for other transports)."""
    if not url:
        return ComponentHealth(ok=False, detail="no broker configured")
    try:
        if url.startswith(("redis://", "rediss://", "unix://")):
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=PROBE_TIMEOUT_S,
                                          socket_timeout=PROBE_TIMEOUT_S)
            try:
                client.ping()
            finally:
                client.close()
        else:
            from kombu import Connection

            with Connection(url, connect_timeout=PROBE_TIMEOUT_S) as conn:
                conn.ensure_connection(max_retries=1)
    except Exception as exc:  # unreachable, refused, auth: all "not ok", with the reason
        return ComponentHealth(ok=False, detail=f"{_redact(url)}: {type(exc).__name__}: {exc}"[:500])
    return ComponentHealth(ok=True, detail=f"{_redact(url)} reachable")
