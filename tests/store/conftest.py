"""Fixtures: a fresh, migrated SQLite database per test (fast; no servers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from store.db import init_db, make_engine, session_factory


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A SQLite URL in a directory that does not exist yet (init_db must create it)."""
    return f"sqlite:///{tmp_path / 'home' / 'actsearch.db'}"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    init_db(db_url)
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session the test commits itself when it needs to (repo functions only flush)."""
    with session_factory(engine)() as sess:
        yield sess
