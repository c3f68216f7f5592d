"""Who is calling: API keys sent as ``Authorization: Bearer <key>``, and per-owner rate limits.

``api.deps.get_principal`` is the one dependency every non-public route runs (it
is attached to the routers in ``api.main``): it authenticates the key, then spends
a token of the caller's rate-limit bucket. With auth off (embedded mode by
default) every caller is :data:`ANONYMOUS`, an admin-like single user without an
owner, so the service behaves as it did before keys existed.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.limits import TokenBuckets, retry_after_header
from core.settings import Settings
from store import repo

HOW_TO_GET_A_KEY = (
    "send 'Authorization: Bearer <key>'; an admin creates keys with "
    "'actsearch keys create --owner NAME' (or POST /admin/keys)"
)


@dataclass(frozen=True)
class Principal:
    """The caller: an owner name (None when auth is off) and whether it is an admin."""

    owner: str | None
    admin: bool
    key_id: int | None = None

    @property
    def scope(self) -> str | None:
        """The owner filter for reads and changes: None (everything) for admins and anonymous."""
        return None if self.admin else self.owner


ANONYMOUS = Principal(owner=None, admin=True)


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def authenticate(token: str | None, engine: Engine,
                 settings: Settings) -> tuple[Principal, bool]:
    """The principal behind a bearer key (401 when it is missing, unknown or revoked),
    and whether its ``last_used_at`` is due for a refresh (:func:`touch_key` does it).

    A read only, on its own pooled connection (not the route's session), so that it
    can run on the event loop: reads never wait for SQLite's write lock, and the rare write is
    left to :func:`touch_key` on a thread, in its own transaction that commits at
    once (it must not hold the write lock while a route works: creating a search
    writes Optuna's study through another connection, which would then wait for it).
    """
    if not settings.auth_enabled:
        return ANONYMOUS, False
    token = (token or "").strip()
    if not token:
        raise _unauthorized(f"this service needs an API key: {HOW_TO_GET_A_KEY}")
    with engine.connect() as connection:
        key = repo.find_live_key(connection, token)
    if key is None:
        raise _unauthorized(f"the API key is unknown or revoked: {HOW_TO_GET_A_KEY}")
    return Principal(owner=key.owner, admin=key.admin, key_id=key.id), repo.last_used_is_stale(key)


def touch_key(sessions: sessionmaker[Session], key_id: int) -> None:
    """Record that a key was used now (at most once per ``LAST_USED_RESOLUTION``)."""
    with sessions.begin() as session:
        repo.touch_api_key(session, key_id=key_id)


def rate_limit(request: Request, principal: Principal, settings: Settings) -> None:
    """Spend one token of the caller's bucket (per owner; per client IP when anonymous)."""
    buckets: TokenBuckets | None = getattr(request.app.state, "rate_buckets", None)
    if buckets is None:
        return
    if principal.owner is not None:
        key = f"owner:{principal.owner}"
    else:
        key = f"ip:{request.client.host if request.client else 'unknown'}"
    wait = buckets.take(key)
    if wait is not None:
        lim = settings.limits
        raise HTTPException(
            status_code=429,
            detail=(f"too many requests: the limit is {lim.requests_per_second_per_owner:g} "
                    f"requests/s per owner (bursts of {lim.request_burst_per_owner}); retry "
                    f"after {wait:.2f} s, or raise ACTSEARCH_LIMITS__REQUESTS_PER_SECOND_PER_OWNER"
                    " / ACTSEARCH_LIMITS__REQUEST_BURST_PER_OWNER"),
            headers={"Retry-After": retry_after_header(wait)},
        )


def require_admin(principal: Principal) -> Principal:
    """The principal if it is an admin, else 403 (the admin API is documented: no secret)."""
    if not principal.admin:
        raise HTTPException(status_code=403, detail=(
            f"owner {principal.owner!r} is not an admin; admin keys are created with "
            "'actsearch keys create --owner NAME --admin'"))
    return principal


def make_buckets(settings: Settings) -> TokenBuckets:
    """The rate-limit buckets of one app (one API process)."""
    lim = settings.limits
    return TokenBuckets(lim.requests_per_second_per_owner, lim.request_burst_per_owner)

