"""Engines, sessions and schema migrations for both modes (SQLite, PostgreSQL).

Embedded mode uses a SQLite file that Optuna's ``RDBStorage`` shares; WAL and a
long busy timeout keep its readers and the one coordinating writer from failing
with "database is locked". Distributed mode uses PostgreSQL with pre-ping so a
restarted server does not hand stale pooled connections to workers.

:func:`init_db` runs ``alembic upgrade head`` from the migrations shipped inside
the installed package; it holds a database-level lock while it does, so every
process may call it at start, even several at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from store.tables import TABLE_PREFIX, VERSION_TABLE

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_POOL_SIZE = 10
SQLITE_POOL_OVERFLOW = 90  # 100 in all: above 2 x anyio's 40 worker threads
# Arbitrary constant key for pg_advisory_xact_lock: serialises concurrent upgrades.
_PG_MIGRATION_LOCK_KEY = 0x61637473_6D696772

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "include_name",
    "include_object",
    "init_db",
    "make_engine",
    "migration_connection",
    "normalize_url",
    "session_factory",
    "session_scope",
]


def normalize_url(url: str | URL) -> URL:
    """Parse ``url``; a bare ``postgresql://`` gets the psycopg (v3) driver we ship."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _is_sqlite_memory(url: URL) -> bool:
    database = url.database or ""
    return (
        database in ("", ":memory:")
        or "mode=memory" in database
        or (url.query.get("mode") == "memory")
    )


def _sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for in-memory databases."""
    if _is_sqlite_memory(url):
        return None
    database = url.database or ""
    if database.startswith("file:"):
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """Per-connection SQLite settings (pragmas are not persistent, except WAL)."""
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL may wait for another connection.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL is safe under WAL (no corruption; at worst the last commit is
        # lost on power failure) and avoids an fsync per transaction.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """Create an engine configured for actsearch's concurrency model.

    SQLite: WAL, ``busy_timeout`` 30 s, foreign keys on, usable across threads,
    the parent directory of the file created. PostgreSQL: ``pool_pre_ping``.
    Extra ``kwargs`` go to :func:`sqlalchemy.create_engine`.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        file = _sqlite_file(parsed)
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        connect_args.update(kwargs.pop("connect_args", {}))
        if file is None:
            # One shared connection, or every pooled connection sees an empty database.
            kwargs.setdefault("poolclass", StaticPool)
        else:
            # Room for every thread of the API's threadpool to hold its request's session
            # and its auth session at once. With fewer (the default 5 + 10), requests
            # waiting for a connection can occupy every thread, and the sessions that
            # would return connections cannot close (FastAPI closes a sync dependency's
            # session on that same threadpool): a deadlock until the pool timeout.
            # SQLite connections are only file handles.
            kwargs.setdefault("pool_size", SQLITE_POOL_SIZE)
            kwargs.setdefault("max_overflow", SQLITE_POOL_OVERFLOW)
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (handed to API schemas)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session] | Engine) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on any error, always close.

    ``store.repo`` functions never commit; this is where a caller's changes land.
    """
    if isinstance(factory, Engine):
        factory = session_factory(factory)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic filter on reflected names: only ``actsearch_*`` tables, never Optuna's."""
    if type_ == "schema":
        return name is None  # the default schema only
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX) and name != VERSION_TABLE
    return True


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic filter on objects: anything not on an ``actsearch_*`` table is ignored."""
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX) and name != VERSION_TABLE
    table = getattr(obj, "table", None)
    if table is not None:
        return str(table.name).startswith(TABLE_PREFIX)
    return True


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic Config built in code, pointing at the migrations inside the package.

    Nothing depends on the working directory, so a user's own ``alembic.ini`` or
    ``migrations/`` folder can never be picked up by mistake.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        rendered = normalize_url(url).render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection holding the database's migration lock inside one transaction.

    SQLite: ``BEGIN IMMEDIATE`` takes the write lock (others wait up to the busy
    timeout) and foreign keys are off while tables may be rebuilt by batch
    operations, then checked before commit. PostgreSQL: a transaction-scoped
    advisory lock. Either way two processes starting together cannot both try to
    create the tables, and the loser then finds the schema at head.
    """
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY}
            )
        try:
            yield connection
            if sqlite:
                violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if violations:
                    raise RuntimeError(f"migration left foreign key violations: {violations[:5]}")
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def init_db(target: str | URL | Engine) -> None:
    """Bring the ``actsearch_*`` schema to head; idempotent, safe at every start.

    ``target`` is a database URL, or an existing engine (needed for in-memory
    SQLite, whose tables exist only on that engine's connection). Only our tables
    and ``actsearch_alembic_version`` are touched; Optuna's tables are left alone.
    """
    own_engine = not isinstance(target, Engine)
    engine = make_engine(target) if not isinstance(target, Engine) else target
    try:
        with migration_connection(engine) as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        if own_engine:
            engine.dispose()
