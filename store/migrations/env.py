"""Alembic environment for the ``actsearch_*`` tables only.

Optuna keeps its own tables (and its own ``alembic_version``) in the same
database: our version table is ``actsearch_alembic_version`` and the
``include_name`` / ``include_object`` filters hide everything without the
``actsearch_`` prefix, so neither migrations nor autogenerate ever see Optuna's.
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import Connection

from store.db import include_name, include_object, make_engine, migration_connection
from store.tables import VERSION_TABLE, Base

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    """The database URL for CLI use: ``-x url=...``, the ini, or ACTSEARCH_DATABASE_URL."""
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("ACTSEARCH_DATABASE_URL")
    )
    if not url:
        raise RuntimeError(
            "no database URL: pass -x url=..., set sqlalchemy.url or ACTSEARCH_DATABASE_URL"
        )
    return url


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        include_object=include_object,
        compare_type=True,
        compare_server_default=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``)."""
    url = _url()
    _configure(url=url, literal_binds=True, render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run on the connection init_db passes in, or open one (CLI) under the same lock."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = make_engine(_url())
    try:
        with migration_connection(engine) as own:
            _run_on(own)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
