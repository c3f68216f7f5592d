"""FastAPI dependencies as ``Annotated`` aliases; tests swap them with ``dependency_overrides``.

The engine and sessionmaker are made once per app by :func:`api.main.create_app`
and kept on ``app.state``: creating an engine per request would defeat the pool
(and, for SQLite, re-run the connection pragmas every time).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from actsearch.settings import Settings

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
