"""FastAPI dependencies as ``Annotated`` aliases; tests swap them with ``dependency_overrides``.

The engine and sessionmaker are made once per app by :func:`api.main.create_app`
and kept on ``app.state``: creating an engine per request would defeat the pool
(and, for SQLite, re-run the connection pragmas every time).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from core.settings import Settings
from api.auth import Principal, authenticate, rate_limit, require_admin
from api.schemas import ErrorPublic

MAX_PAGE = 500
DEFAULT_PAGE = 50


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """One session per request: commit when the route returns, roll back if it raised.

    Registered with ``scope="function"`` so the commit happens before the response
    is sent: a client that gets 201 can read what it created, and a failed commit
    becomes an error response instead of a lost write behind a success.
    """
    session: Session = request.app.state.sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@dataclass(frozen=True)
class Page:
    """Pagination of a list endpoint."""

    limit: int
    offset: int


def get_page(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size (1-500)")] = DEFAULT_PAGE,
    offset: Annotated[int, Query(ge=0, description="rows to skip")] = 0,
) -> Page:
    """``limit`` and ``offset`` query parameters, validated (422 outside their ranges)."""
    return Page(limit=limit, offset=offset)


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
PageDep = Annotated[Page, Depends(get_page)]


# Reads "Authorization: Bearer <key>" and declares the scheme in OpenAPI (the
# "Authorize" button of /docs); missing or malformed headers are left to
# get_principal, which answers 401 only when auth is on.
bearer = HTTPBearer(auto_error=False, scheme_name="APIKey",
                    description="an API key from `actsearch keys create --owner NAME`")


def get_principal(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The authenticated, rate-limited caller (401 without a valid key, 429 over the limit).

    Attached to every non-public router in ``api.main``; routes that need the
    caller declare :data:`PrincipalDep` too (FastAPI runs it once per request).
    """
    token = credentials.credentials if credentials is not None else None
    principal = authenticate(token, request.app.state.sessions, settings)
    rate_limit(request, principal, settings)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]

#: What every route behind :func:`get_principal` may answer besides its own statuses
#: (documented in OpenAPI by attaching it with the dependency).
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorPublic, "description": "no API key, or an unknown or revoked one"},
    429: {"model": ErrorPublic, "description": "over the owner's request rate (with "
          "Retry-After) or, for POST /searches, over their queued + running searches"},
}


def get_admin(principal: PrincipalDep) -> Principal:
    """The caller, if an admin (403 otherwise)."""
    return require_admin(principal)


AdminDep = Annotated[Principal, Depends(get_admin)]
