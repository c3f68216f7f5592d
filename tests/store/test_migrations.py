"""Alembic: metadata and migration agree; Optuna's tables are never touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Engine, Integer, MetaData, inspect, text

import store
from store.db import alembic_config, include_name, include_object, init_db, make_engine
from store.tables import VERSION_TABLE, Base

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _diff(engine: Engine, metadata: MetaData, **opts: Any) -> list[Any]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "compare_server_default": True,
                "version_table": VERSION_TABLE,
                "include_name": include_name,
                "include_object": include_object,
                **opts,
            },
        )
        return compare_metadata(ctx, metadata)


def _optuna_study(url: str, name: str = "s") -> None:
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    study.tell(trial, 0.75)
    storage.remove_session()
    storage.engine.dispose()


def _foreign_snapshot(engine: Engine) -> dict[str, Any]:
    """Schema and every row of each table that is not ours (Optuna's)."""
    with engine.connect() as conn:
        schema = conn.exec_driver_sql(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE tbl_name NOT LIKE 'actsearch\\_%' ESCAPE '\\' ORDER BY name"
        ).all()
        tables = [r.name for r in schema if r.type == "table"]
        rows = {t: conn.exec_driver_sql(f'SELECT * FROM "{t}"').all() for t in tables}
    return {"schema": schema, "rows": rows}


def _optuna_still_reads(url: str) -> None:
    study = optuna.load_study(study_name="s", storage=url)
    assert [t.value for t in study.trials] == [0.75]
    assert "lr" in study.trials[0].params


def test_autogenerate_finds_no_diff_after_upgrade(engine: Engine) -> None:
    assert _diff(engine, Base.metadata) == []


def test_autogenerate_check_is_not_vacuous(engine: Engine) -> None:
    """A column missing from the migration is detected, so the empty diff means agreement."""
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["actsearch_trials"].append_column(Column("extra", Integer))
    assert [d[0] for d in _diff(engine, changed)] == ["add_column"]


def test_optuna_first_then_ours_then_optuna_again(db_url: str) -> None:
    engine = make_engine(db_url)  # creates the parent directory for Optuna
    _optuna_study(db_url)
    before = _foreign_snapshot(engine)
    assert "alembic_version" in before["rows"] and "studies" in before["rows"]
    init_db(db_url)
    init_db(db_url)
    assert _foreign_snapshot(engine) == before
    _optuna_still_reads(db_url)
    # autogenerate (compare_metadata and env.py's own filters) ignores Optuna's tables
    assert _diff(engine, Base.metadata) == []
    command.check(alembic_config(db_url))
    engine.dispose()


def test_ours_first_then_optuna_then_ours_again(engine: Engine, db_url: str) -> None:
    _optuna_study(db_url)
    before = _foreign_snapshot(engine)
    init_db(db_url)
    assert _foreign_snapshot(engine) == before
    _optuna_still_reads(db_url)
    with engine.connect() as conn:
        ours = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        theirs = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert ours == [head] and theirs and theirs != ours
    assert _diff(engine, Base.metadata) == []


def test_without_the_filters_optuna_tables_would_be_dropped(engine: Engine, db_url: str) -> None:
    """Why include_name/include_object exist: unfiltered autogenerate wants Optuna gone."""
    _optuna_study(db_url)
    diff = _diff(engine, Base.metadata, include_name=None, include_object=None)
    dropped = {d[1].name for d in diff if d[0] == "remove_table"}
    assert "studies" in dropped and "trials" in dropped


def test_downgrade_to_base_drops_only_ours(engine: Engine, db_url: str) -> None:
    _optuna_study(db_url)
    before = _foreign_snapshot(engine)
    config = alembic_config(db_url)
    command.downgrade(config, "base")
    left = set(inspect(engine).get_table_names())
    assert not {t for t in left if t.startswith("actsearch_")} - {VERSION_TABLE}
    assert _foreign_snapshot(engine) == before
    command.upgrade(config, "head")
    assert _diff(engine, Base.metadata) == []


def test_packaged_alembic_ini_works_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ini = Path(store.__file__).parent / "alembic.ini"
    url = f"sqlite:///{tmp_path / 'cli' / 'db.sqlite'}"
    monkeypatch.chdir(tmp_path)
    config = Config(str(ini))
    config.attributes["configure_logger"] = False
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "head")
    engine = make_engine(url)
    assert _diff(engine, Base.metadata) == []
    engine.dispose()
