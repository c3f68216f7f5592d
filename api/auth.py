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
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from api.limits import TokenBuckets, retry_after_header
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


def authenticate(token: str | None, sessions: sessionmaker[Session],
                 settings: Settings) -> Principal:
    """The principal behind a bearer key (401 when it is missing, unknown or revoked).

    The key is checked in its own short transaction, not the route's: its
    occasional ``last_used_at`` write commits at once, so it never holds SQLite's
    write lock while the route works (creating a search writes Optuna's study
    through another connection, which would then wait for that lock).
    """
    if not settings.auth_enabled:
        return ANONYMOUS
    token = (token or "").strip()
    if not token:
        raise _unauthorized(f"this service needs an API key: {HOW_TO_GET_A_KEY}")
    with sessions.begin() as session:
        row = repo.authenticate_key(session, token)
        principal = None if row is None else Principal(owner=row.owner, admin=row.admin,
                                                        key_id=row.id)
    if principal is None:
        raise _unauthorized(f"the API key is unknown or revoked: {HOW_TO_GET_A_KEY}")
    return principal


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

