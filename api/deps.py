"""FastAPI dependencies as ``Annotated`` aliases; tests swap them with ``dependency_overrides``.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in its
thread pool, and each of those hops costs the event loop about half a millisecond
of CPU, as much as a read spends in the database. The pure ones (settings, page,
the slow pool), the session's begin and end and authentication (one prebuilt read;
SQLite reads in WAL mode never wait for a writer) run on the loop; the key's rare
``last_used_at`` write runs on a thread. The read routes are ``async`` for the same
reason; routes that write, upload or compute stay plain ``def`` (on a thread).

The engine and sessionmaker are made once per app by :func:`api.main.create_app`
and kept on ``app.state``: creating an engine per request would defeat the pool
(and, for SQLite, re-run the connection pragmas every time).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import Principal, authenticate, rate_limit, require_admin, touch_key
from api.finished import FinishedSearchCache
from api.schemas import ErrorPublic
from api.slow import SlowOperations
from core.settings import Settings

MAX_PAGE = 500
DEFAULT_PAGE = 50


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request: commit when the route returns, roll back if it raised.

    Registered with ``scope="function"`` so the commit happens before the response
    is sent: a client that gets 201 can read what it created, and a failed commit
    becomes an error response instead of a lost write behind a success.

    Opening and ending the session run on the event loop, not on a thread: making
    it is no I/O (it connects on first use), and ending it is quick because a
    transaction that wrote already holds its locks (SQLite's write lock is taken at
    the first write, so COMMIT never waits for another writer). Ending it on a
    thread would deadlock under load: with every thread of the pool in a route
    waiting for the write lock, the session that holds it could not get a thread to
    commit and release it.
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


async def get_page(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size (1-500)")] = DEFAULT_PAGE,
    offset: Annotated[int, Query(ge=0, description="rows to skip")] = 0,
) -> Page:
    """``limit`` and ``offset`` query parameters, validated (422 outside their ranges)."""
    return Page(limit=limit, offset=offset)


async def get_slow(request: Request) -> SlowOperations:
    """The app's bound on slow operations and their thread pool (see :mod:`api.slow`)."""
    return request.app.state.slow


async def get_finished(request: Request) -> FinishedSearchCache:
    """The app's responses about finished searches (see :mod:`api.finished`)."""
    return request.app.state.finished


SettingsDep = Annotated[Settings, Depends(get_settings)]
FinishedDep = Annotated[FinishedSearchCache, Depends(get_finished)]
SlowDep = Annotated[SlowOperations, Depends(get_slow)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
PageDep = Annotated[Page, Depends(get_page)]


# Reads "Authorization: Bearer <key>" and declares the scheme in OpenAPI (the
# "Authorize" button of /docs); missing or malformed headers are left to
# get_principal, which answers 401 only when auth is on.
bearer = HTTPBearer(auto_error=False, scheme_name="APIKey",
                    description="an API key from `actsearch keys create --owner NAME`")


_touching: set[int | None] = set()  # keys whose last_used_at is being written (loop only)


async def get_principal(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The authenticated, rate-limited caller (401 without a valid key, 429 over the limit).

    Attached to every non-public router in ``api.main``; routes that need the
    caller declare :data:`PrincipalDep` too (FastAPI runs it once per request).
    """
    token = credentials.credentials if credentials is not None else None
    sessions = request.app.state.sessions
    principal, stale = authenticate(token, request.app.state.engine, settings)  # on the loop
    if stale and principal.key_id not in _touching:  # a write, once a minute a key: a thread
        _touching.add(principal.key_id)  # one request records it; the others need not wait
        try:
            await run_in_threadpool(touch_key, sessions, principal.key_id)
        finally:
            _touching.discard(principal.key_id)
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


async def get_admin(principal: PrincipalDep) -> Principal:
    """The caller, if an admin (403 otherwise)."""
    return require_admin(principal)


AdminDep = Annotated[Principal, Depends(get_admin)]
