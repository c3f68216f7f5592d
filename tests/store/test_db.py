"""Engines, sessions and init_db: SQLite settings, idempotence, concurrent starts."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from store.db import (
    alembic_config,
    init_db,
    make_engine,
    normalize_url,
    session_factory,
    session_scope,
)
from store.tables import VERSION_TABLE, Artifact

OUR_TABLES = {
    "actsearch_artifacts",
    "actsearch_datasets",
    "actsearch_searches",
    "actsearch_populations",
    "actsearch_trials",
    "actsearch_epoch_metrics",
    "actsearch_preact_stats",
    "actsearch_curves",
    "actsearch_fits",
    "actsearch_schedules",
    "actsearch_weights",
    "actsearch_api_keys",
}


# The newest migration: every later migration moves this, and these tests follow it.
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def _version(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


def test_init_db_creates_parent_dir_tables_and_our_version_table(
    db_url: str, tmp_path: Path
) -> None:
    assert not (tmp_path / "home").exists()
    init_db(db_url)
    assert (tmp_path / "home" / "actsearch.db").is_file()
    engine = make_engine(db_url)
    names = set(inspect(engine).get_table_names())
    assert names == OUR_TABLES | {VERSION_TABLE}
    assert "alembic_version" not in names  # that name is Optuna's
    assert _version(engine) == [HEAD]
    engine.dispose()


def test_init_db_is_idempotent(db_url: str) -> None:
    init_db(db_url)
    engine = make_engine(db_url)
    with session_scope(engine) as s:
        s.add(Artifact(kind="dataset", sha256="0" * 64, size=0, data=b""))
    init_db(db_url)
    init_db(db_url)
    assert _version(engine) == [HEAD]
    with session_scope(engine) as s:
        assert s.query(Artifact).count() == 1
    engine.dispose()


def test_sqlite_pragmas_on_every_connection(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        s.execute(text("INSERT INTO actsearch_weights (trial_id, artifact_id) VALUES (999, 999)"))


def test_session_scope_commits_or_rolls_back(engine: Engine) -> None:
    factory = session_factory(engine)
    with pytest.raises(RuntimeError), session_scope(factory) as s:
        s.add(Artifact(kind="dataset", sha256="a" * 64, size=0, data=b""))
        s.flush()
        raise RuntimeError("boom")
    with session_scope(factory) as s:
        assert s.query(Artifact).count() == 0
        row = Artifact(kind="dataset", sha256="b" * 64, size=0, data=b"")
        s.add(row)
    # expire_on_commit=False: still readable after the session closed
    assert row.sha256 == "b" * 64
    assert row.created_at.tzinfo is not None
    with session_scope(factory) as s:
        again = s.get(Artifact, row.id)
        assert again is not None and again.created_at.utcoffset().total_seconds() == 0


def test_in_memory_engine_can_be_migrated() -> None:
    engine = make_engine("sqlite://")
    init_db(engine)
    init_db(engine)
    assert OUR_TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_postgres_urls_get_psycopg_and_pre_ping() -> None:
    assert normalize_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    engine = make_engine("postgresql://u:p@localhost/db")  # no connection is made
    assert engine.dialect.driver == "psycopg" and engine.pool._pre_ping
    engine.dispose()


def test_concurrent_init_db_from_several_processes(db_url: str) -> None:
    """Every process calls init_db at start; starting together must not race."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        results = list(pool.map(init_db, [db_url] * 4))
    assert results == [None] * 4
    engine = make_engine(db_url)
    assert _version(engine) == [HEAD]
    assert OUR_TABLES <= set(inspect(engine).get_table_names())
    engine.dispose()
