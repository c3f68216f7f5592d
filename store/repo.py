"""Keyword-only data access used by ``search/``, the workers, the API and the CLI.

Every function takes the caller's session and never commits: the caller's
``store.db.session_scope`` decides the unit of work. New rows are flushed so
their ids are usable at once. Missing ids raise ``NotFound``; state changes that
the current state forbids raise ``Conflict``; malformed input ``InvalidInput``.

Values bound for JSON columns are normalised first (numpy scalars and arrays to
Python, NaN/inf to null, dict keys to strings) because PostgreSQL's ``json``
rejects NaN and neither backend can store numpy types.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Select, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from actsearch.errors import Conflict, InvalidInput, NotFound
from store.arrays import pack, unpack
from store.artifacts import get_artifact_bytes, put_artifact, sha256_hex
from store.tables import (
    DATASET_SOURCES,
    FIT_KINDS,
    PHASES,
    POPULATION_STATES,
    SEARCH_STATES,
    SEARCH_TERMINAL_STATES,
    TRIAL_STATES,
    CurveRow,
    DatasetRow,
    EpochMetricRow,
    FitRow,
    PopulationRow,
    PreactStatRow,
    SearchRow,
    TrialRow,
    WeightsRow,
    utcnow,
)

__all__ = [
    "add_curves",
    "add_dataset",
    "add_epoch_metrics",
    "add_population",
    "add_preact_stats",
    "add_trial",
    "count_searches",
    "count_trials",
    "create_search",
    "dataset_bytes",
    "find_trial",
    "finish_trial",
    "get_dataset",
    "get_dataset_version",
    "get_population",
    "get_search",
    "get_search_by_study",
    "get_trial",
    "heartbeat_population",
    "latest_dataset",
    "list_datasets",
    "list_populations",
    "list_searches",
    "list_trials",
    "load_weights",
    "save_weights",
    "set_population_state",
    "set_search_state",
    "set_trial_test_value",
    "stale_populations",
    "trial_curves",
    "trial_epochs",
    "trial_preact_stats",
    "best_search_trial",
    "count_datasets",
    "dataset_ids_by_name",
    "has_weights",
    "oldest_pending_search",
    "query_trials",
    "search_ids_by_architecture",
    "search_population_counts",
    "search_trial_counts",
]

# --------------------------------------------------------------------------- helpers


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: numpy to Python, non-finite floats to None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    raise InvalidInput(f"cannot store a {type(value).__name__} as JSON: {value!r:.80}")


def _num(value: Any) -> float | None:
    """A finite float or None (SQLite turns NaN into NULL anyway; be explicit everywhere)."""
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _check(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise InvalidInput(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
    return value


def _page(stmt: Select[Any], limit: int | None, offset: int) -> Select[Any]:
    if offset < 0 or (limit is not None and limit < 0):
        raise InvalidInput("limit and offset must be non-negative")
    stmt = stmt.offset(offset)
    return stmt.limit(limit) if limit is not None else stmt


def _require(session: Session, table: type[Any], row_id: int, what: str) -> Any:
    row = session.get(table, row_id)
    if row is None:
        raise NotFound(f"{what} {row_id} not found")
    return row


# --------------------------------------------------------------------------- datasets

_DATASET_REQUIRED = ("task", "n_rows", "n_features")
_DATASET_OPTIONAL = ("source", "n_classes", "input_shape", "schema", "content_hash")


def _dataset_fields(meta: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(meta) - set(_DATASET_REQUIRED) - set(_DATASET_OPTIONAL)
    if unknown:
        raise InvalidInput(f"unknown dataset meta keys: {sorted(unknown)}")
    missing = [k for k in _DATASET_REQUIRED if meta.get(k) is None]
    if missing:
        raise InvalidInput(f"dataset meta is missing {missing}")
    n_classes = meta.get("n_classes")
    return {  # content_hash is handled by add_dataset
        "source": _check(meta.get("source", "upload"), DATASET_SOURCES, "dataset source"),
        "task": str(meta["task"]),
        "n_rows": int(meta["n_rows"]),
        "n_features": int(meta["n_features"]),
        "n_classes": int(n_classes) if n_classes is not None else None,
        "input_shape": jsonable(meta.get("input_shape")),
        "schema": jsonable(meta.get("schema")),
    }


def _latest_or_none(session: Session, name: str) -> DatasetRow | None:
    stmt = select(DatasetRow).where(DatasetRow.name == name).order_by(DatasetRow.version.desc())
    return session.scalars(stmt.limit(1)).first()


def _same_dataset(row: DatasetRow, digest: str, fields: Mapping[str, Any]) -> bool:
    return row.content_hash == digest and all(getattr(row, k) == v for k, v in fields.items())


def add_dataset(
    session: Session,
    *,
    name: str,
    data_bytes: bytes,
    meta: Mapping[str, Any],
    owner: str | None = None,
    artifact_dir: Path | None = None,
) -> DatasetRow:
    """Register ``data_bytes`` under ``name`` as its next version.

    ``meta`` holds task, n_rows, n_features and optionally source (builtin|upload,
    default upload), n_classes, input_shape, schema and content_hash (the data's
    own identity, e.g. a hash of the parsed arrays; default: sha256 of
    ``data_bytes``). Uploading what the latest version already is (same content
    hash and meta) returns that row instead of a new version; older versions are
    always kept (searches point at them).
    """
    if not name or len(name) > 200:
        raise InvalidInput("a dataset name must have 1 to 200 characters")
    fields = _dataset_fields(meta)
    digest = str(meta.get("content_hash") or sha256_hex(data_bytes))
    for _ in range(3):  # retry only when another writer took the same version number
        latest = _latest_or_none(session, name)
        if latest is not None and _same_dataset(latest, digest, fields):
            return latest
        artifact = put_artifact(session, kind="dataset", data=data_bytes, artifact_dir=artifact_dir)
        row = DatasetRow(
            name=name,
            version=latest.version + 1 if latest is not None else 1,
            content_hash=digest,
            artifact_id=artifact.id,
            owner=owner,
            **fields,
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            continue
        return row
    raise Conflict(f"dataset {name!r} is being written concurrently; try again")


def get_dataset(session: Session, *, dataset_id: int) -> DatasetRow:
    """The dataset row ``dataset_id`` (any version)."""
    return _require(session, DatasetRow, dataset_id, "dataset")


def get_dataset_version(session: Session, *, name: str, version: int) -> DatasetRow:
    """Version ``version`` of the dataset called ``name``."""
    stmt = select(DatasetRow).where(DatasetRow.name == name, DatasetRow.version == version)
    row = session.scalars(stmt).first()
    if row is None:
        raise NotFound(f"dataset {name!r} has no version {version}")
    return row


def latest_dataset(session: Session, *, name: str) -> DatasetRow:
    """The highest version of the dataset called ``name``."""
    row = _latest_or_none(session, name)
    if row is None:
        raise NotFound(f"no dataset named {name!r}")
    return row


def list_datasets(
    session: Session,
    *,
    name: str | None = None,
    owner: str | None = None,
    latest_only: bool = False,
    limit: int | None = 100,
    offset: int = 0,
) -> list[DatasetRow]:
    """Datasets by name, newest version first; ``latest_only`` keeps one per name."""
    stmt = select(DatasetRow)
    if name is not None:
        stmt = stmt.where(DatasetRow.name == name)
    if owner is not None:
        stmt = stmt.where(DatasetRow.owner == owner)
    if latest_only:
        newest = select(DatasetRow.name, func.max(DatasetRow.version).label("v")).group_by(
            DatasetRow.name
        )
        sub = newest.subquery()
        stmt = stmt.join(sub, (DatasetRow.name == sub.c.name) & (DatasetRow.version == sub.c.v))
    stmt = stmt.order_by(DatasetRow.name, DatasetRow.version.desc())
    return list(session.scalars(_page(stmt, limit, offset)))


def dataset_bytes(session: Session, *, dataset_id: int) -> bytes:
    """The stored (verified) content of dataset ``dataset_id``."""
    return get_artifact_bytes(session, get_dataset(session, dataset_id=dataset_id).artifact_id)


# --------------------------------------------------------------------------- searches

_SEARCH_RANK = {"pending": 0, "running": 1, "finalizing": 2}


def create_search(
    session: Session,
    *,
    name: str,
    study_name: str,
    dataset_id: int,
    spec: Mapping[str, Any],
    owner: str | None = None,
) -> SearchRow:
    """A pending search row for the Optuna study ``study_name`` (unique)."""
    get_dataset(session, dataset_id=dataset_id)
    taken = session.scalars(select(SearchRow.id).where(SearchRow.study_name == study_name)).first()
    if taken is not None:
        raise Conflict(f"study name {study_name!r} is already used by search {taken}")
    row = SearchRow(
        name=name,
        study_name=study_name,
        dataset_id=dataset_id,
        spec=jsonable(spec),
        owner=owner,
        state="pending",
    )
    session.add(row)
    session.flush()
    return row


def set_search_state(
    session: Session,
    *,
    search_id: int,
    state: str,
    error: str | None = None,
    best: Mapping[str, Any] | None = None,
) -> SearchRow:
    """Move a search forward (pending -> running -> finalizing -> a terminal state).

    Terminal states (complete, failed, cancelled) are final and a search never
    moves backwards: either raises Conflict. Setting the current state again is
    allowed (to update ``error`` or ``best``). Stamps started_at / finished_at.
    """
    _check(state, SEARCH_STATES, "search state")
    row: SearchRow = _require(session, SearchRow, search_id, "search")
    if state != row.state:
        current_final = row.state in SEARCH_TERMINAL_STATES
        backwards = state in _SEARCH_RANK and _SEARCH_RANK[state] < _SEARCH_RANK.get(row.state, 3)
        if current_final or backwards:
            raise Conflict(f"search {search_id} is {row.state}; it cannot become {state}")
    now = utcnow()
    if state in ("running", "finalizing") and row.started_at is None:
        row.started_at = now
    if state in SEARCH_TERMINAL_STATES and row.finished_at is None:
        row.finished_at = now
    row.state = state
    if error is not None:
        row.error = error
    if best is not None:
        row.best = jsonable(best)
    session.flush()
    return row


def get_search(session: Session, *, search_id: int) -> SearchRow:
    """The search row ``search_id``."""
    return _require(session, SearchRow, search_id, "search")


def get_search_by_study(session: Session, *, study_name: str) -> SearchRow:
    """The search that owns the Optuna study ``study_name``."""
    row = session.scalars(select(SearchRow).where(SearchRow.study_name == study_name)).first()
    if row is None:
        raise NotFound(f"no search for study {study_name!r}")
    return row


def _search_filters(
    state: str | None, dataset_id: int | None, owner: str | None
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if state is not None:
        where.append(SearchRow.state == _check(state, SEARCH_STATES, "search state"))
    if dataset_id is not None:
        where.append(SearchRow.dataset_id == dataset_id)
    if owner is not None:
        where.append(SearchRow.owner == owner)
    return where


def list_searches(
    session: Session,
    *,
    state: str | None = None,
    dataset_id: int | None = None,
    owner: str | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> list[SearchRow]:
    """Searches, newest first, optionally filtered."""
    stmt = select(SearchRow).where(*_search_filters(state, dataset_id, owner))
    stmt = stmt.order_by(SearchRow.created_at.desc(), SearchRow.id.desc())
    return list(session.scalars(_page(stmt, limit, offset)))


def count_searches(
    session: Session,
    *,
    state: str | None = None,
    dataset_id: int | None = None,
    owner: str | None = None,
) -> int:
    """How many searches :func:`list_searches` would return without paging."""
    stmt = select(func.count(SearchRow.id)).where(*_search_filters(state, dataset_id, owner))
    return int(session.scalar(stmt) or 0)


# --------------------------------------------------------------------------- populations


def add_population(
    session: Session,
    *,
    search_id: int,
    family: str,
    structural: Mapping[str, Any],
    k: int,
    phase: str = "search",
    task_id: str | None = None,
) -> PopulationRow:
    """A pending population of ``k`` candidates of ``family`` for ``search_id``."""
    get_search(session, search_id=search_id)
    if k < 1:
        raise InvalidInput(f"a population needs k >= 1, got {k}")
    row = PopulationRow(
        search_id=search_id,
        family=family,
        structural=jsonable(structural),
        k=int(k),
        phase=_check(phase, PHASES, "phase"),
        state="pending",
        task_id=task_id,
        attempts=0,
    )
    session.add(row)
    session.flush()
    return row


def set_population_state(
    session: Session,
    *,
    population_id: int,
    state: str,
    worker: str | None = None,
    task_id: str | None = None,
    error: str | None = None,
) -> PopulationRow:
    """Record a population's progress.

    ``running`` counts an attempt and stamps start and heartbeat; ``pending``
    again is how the reconciler re-enqueues; ``complete`` is final (Conflict).
    """
    _check(state, POPULATION_STATES, "population state")
    row: PopulationRow = _require(session, PopulationRow, population_id, "population")
    if row.state == "complete" and state != "complete":
        raise Conflict(f"population {population_id} is complete; it cannot become {state}")
    now = utcnow()
    if state == "running" and row.state != "running":
        row.attempts += 1
        row.started_at = now
        row.heartbeat_at = now
        row.finished_at = None
    if state in ("complete", "failed"):
        row.finished_at = now
    row.state = state
    if worker is not None:
        row.worker = worker
    if task_id is not None:
        row.task_id = task_id
    if error is not None:
        row.error = error
    session.flush()
    return row


def heartbeat_population(session: Session, *, population_id: int) -> datetime:
    """Stamp the population as alive now (the task calls this while it trains)."""
    row: PopulationRow = _require(session, PopulationRow, population_id, "population")
    row.heartbeat_at = utcnow()
    session.flush()
    return row.heartbeat_at


def stale_populations(
    session: Session, *, older_than_s: float, now: datetime | None = None
) -> list[PopulationRow]:
    """Running populations whose last heartbeat is older than ``older_than_s`` seconds."""
    cutoff = (now or utcnow()) - timedelta(seconds=older_than_s)
    stmt = select(PopulationRow).where(
        PopulationRow.state == "running", PopulationRow.heartbeat_at < cutoff
    )
    return list(session.scalars(stmt.order_by(PopulationRow.id)))


def get_population(session: Session, *, population_id: int) -> PopulationRow:
    """The population row ``population_id``."""
    return _require(session, PopulationRow, population_id, "population")


def list_populations(
    session: Session, *, search_id: int, state: str | None = None
) -> list[PopulationRow]:
    """A search's populations in creation order."""
    stmt = select(PopulationRow).where(PopulationRow.search_id == search_id)
    if state is not None:
        stmt = stmt.where(PopulationRow.state == _check(state, POPULATION_STATES, "state"))
    return list(session.scalars(stmt.order_by(PopulationRow.id)))


# --------------------------------------------------------------------------- trials


def add_trial(
    session: Session,
    *,
    search_id: int,
    family: str,
    family_params: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    hparams: Mapping[str, Any],
    seed: int,
    trial_number: int | None = None,
    phase: str = "search",
    population_id: int | None = None,
    study_name: str | None = None,
    source_trial_number: int | None = None,
    state: str = "running",
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    **results: Any,
) -> TrialRow:
    """A trial row; ``study_name`` defaults to the search's study.

    Search-phase trials carry Optuna's ``trial_number``; finalist re-runs carry
    ``source_trial_number`` (the trial they re-train) and their own ``seed``.
    A trial recorded after training may pass its final ``state`` and the
    :func:`finish_trial` results (value, best_value, test_value, n_params, flops,
    device, duration_s, error) here in one call.
    """
    unknown = set(results) - set(_RESULT_FIELDS)
    if unknown:
        raise InvalidInput(f"add_trial got unknown fields {sorted(unknown)}")
    _check(state, TRIAL_STATES, "trial state")
    search = get_search(session, search_id=search_id)
    if population_id is not None:
        get_population(session, population_id=population_id)
    row = TrialRow(
        search_id=search_id,
        population_id=population_id,
        study_name=study_name or search.study_name,
        trial_number=trial_number,
        phase=_check(phase, PHASES, "phase"),
        family=family,
        family_params=jsonable(family_params),
        hparams=jsonable(hparams),
        seed=int(seed),
        state=state,
        started_at=started_at or utcnow(),
        finished_at=finished_at or (utcnow() if state != "running" else None),
        source_trial_number=source_trial_number,
    )
    _apply_results(row, results)
    session.add(row)
    session.flush()
    return row


_RESULT_FIELDS: dict[str, Callable[[Any], Any]] = {
    "value": _num,
    "best_value": _num,
    "test_value": _num,
    "n_params": int,
    "flops": int,
    "device": str,
    "duration_s": _num,
    "error": str,
}


def _apply_results(row: TrialRow, results: Mapping[str, Any]) -> None:
    """Set the given result fields (None leaves a field as it is)."""
    for name, value in results.items():
        if value is not None:
            setattr(row, name, _RESULT_FIELDS[name](value))


def finish_trial(
    session: Session,
    *,
    trial_id: int,
    state: str,
    value: float | None = None,
    best_value: float | None = None,
    test_value: float | None = None,
    n_params: int | None = None,
    flops: int | None = None,
    device: str | None = None,
    duration_s: float | None = None,
    error: str | None = None,
) -> TrialRow:
    """Close a trial as complete, pruned or failed; arguments left None keep their value."""
    if state == "running":
        raise InvalidInput("finish_trial needs a final state: complete, pruned or failed")
    _check(state, TRIAL_STATES, "trial state")
    row: TrialRow = _require(session, TrialRow, trial_id, "trial")
    row.state = state
    row.finished_at = utcnow()
    _apply_results(
        row,
        {
            "value": value,
            "best_value": best_value,
            "test_value": test_value,
            "n_params": n_params,
            "flops": flops,
            "device": device,
            "duration_s": duration_s,
            "error": error,
        },
    )
    session.flush()
    return row


def set_trial_test_value(session: Session, *, trial_id: int, test_value: float) -> TrialRow:
    """Record the test metric (measured only for the final choice)."""
    row: TrialRow = _require(session, TrialRow, trial_id, "trial")
    row.test_value = _num(test_value)
    session.flush()
    return row


def get_trial(session: Session, *, trial_id: int) -> TrialRow:
    """The trial row ``trial_id``."""
    return _require(session, TrialRow, trial_id, "trial")


def find_trial(
    session: Session,
    *,
    study_name: str,
    trial_number: int,
    phase: str = "search",
    seed: int | None = None,
) -> TrialRow:
    """Our row for Optuna's trial ``trial_number`` of ``study_name``."""
    stmt = select(TrialRow).where(
        TrialRow.study_name == study_name,
        TrialRow.trial_number == trial_number,
        TrialRow.phase == phase,
    )
    if seed is not None:
        stmt = stmt.where(TrialRow.seed == seed)
    row = session.scalars(stmt.order_by(TrialRow.id)).first()
    if row is None:
        raise NotFound(f"no {phase} trial {trial_number} in study {study_name!r}")
    return row


_TRIAL_ORDER = {
    name: getattr(TrialRow, name)
    for name in (
        "id",
        "value",
        "best_value",
        "test_value",
        "n_params",
        "flops",
        "duration_s",
        "started_at",
        "finished_at",
        "trial_number",
        "family",
        "state",
    )
}


def _trial_filters(
    search_id: int | None,
    family: str | None,
    phase: str | None,
    state: str | None,
    min_value: float | None,
    max_value: float | None,
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if search_id is not None:
        where.append(TrialRow.search_id == search_id)
    if family is not None:
        where.append(TrialRow.family == family)
    if phase is not None:
        where.append(TrialRow.phase == _check(phase, PHASES, "phase"))
    if state is not None:
        where.append(TrialRow.state == _check(state, TRIAL_STATES, "trial state"))
    if min_value is not None:
        where.append(TrialRow.value >= min_value)
    if max_value is not None:
        where.append(TrialRow.value <= max_value)
    return where


def _trial_query(
    select_: Select[Any], dataset_id: int | None, where: Iterable[ColumnElement[bool]]
) -> Select[Any]:
    stmt = select_.where(*where)
    if dataset_id is not None:
        stmt = stmt.join(SearchRow, SearchRow.id == TrialRow.search_id).where(
            SearchRow.dataset_id == dataset_id
        )
    return stmt


def list_trials(
    session: Session,
    *,
    search_id: int | None = None,
    family: str | None = None,
    phase: str | None = None,
    state: str | None = None,
    dataset_id: int | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
    order_by: str = "value",
    descending: bool = True,
    limit: int | None = 100,
    offset: int = 0,
) -> list[TrialRow]:
    """Trials filtered and sorted; rows without the sort value come last either way."""
    column = _TRIAL_ORDER.get(order_by)
    if column is None:
        raise InvalidInput(f"cannot sort trials by {order_by!r}; use one of {sorted(_TRIAL_ORDER)}")
    where = _trial_filters(search_id, family, phase, state, min_value, max_value)
    stmt = _trial_query(select(TrialRow), dataset_id, where)
    stmt = stmt.order_by(
        column.is_(None),
        column.desc() if descending else column.asc(),
        TrialRow.id.desc() if descending else TrialRow.id.asc(),
    )
    return list(session.scalars(_page(stmt, limit, offset)))


def count_trials(
    session: Session,
    *,
    search_id: int | None = None,
    family: str | None = None,
    phase: str | None = None,
    state: str | None = None,
    dataset_id: int | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
) -> int:
    """How many trials :func:`list_trials` would return without paging."""
    where = _trial_filters(search_id, family, phase, state, min_value, max_value)
    stmt = _trial_query(select(func.count(TrialRow.id)), dataset_id, where)
    return int(session.scalar(stmt) or 0)


# --------------------------------------------------------------------------- per-epoch data


def _replace_keys(
    session: Session,
    table: type[Any],
    trial_id: int,
    keys: Sequence[tuple[int, ...]],
    cols: Sequence[str],
) -> None:
    """Delete rows of ``trial_id`` at ``keys`` so a retried task can write them again."""
    if len(set(keys)) != len(keys):
        raise InvalidInput(f"duplicate {'/'.join(cols)} in rows for trial {trial_id}")
    for key in keys:
        cond = [getattr(table, c) == v for c, v in zip(cols, key, strict=True)]
        session.execute(delete(table).where(table.trial_id == trial_id, *cond))


def _field(row: Mapping[str, Any], key: str, trial_id: int) -> Any:
    try:
        return row[key]
    except KeyError:
        raise InvalidInput(f"a row for trial {trial_id} lacks {key!r}") from None


def add_epoch_metrics(session: Session, *, trial_id: int, rows: Sequence[Mapping[str, Any]]) -> int:
    """Store the engine's history rows ``{epoch, train_loss, val_loss, val_metric, elapsed_s}``.

    Rewriting an epoch replaces it. Non-finite losses (a diverged run) become NULL.
    Returns the number of rows written.
    """
    get_trial(session, trial_id=trial_id)
    epochs = [(int(_field(r, "epoch", trial_id)),) for r in rows]
    _replace_keys(session, EpochMetricRow, trial_id, epochs, ("epoch",))
    session.add_all(
        EpochMetricRow(
            trial_id=trial_id,
            epoch=int(r["epoch"]),
            train_loss=_num(r.get("train_loss")),
            val_loss=_num(r.get("val_loss")),
            val_metric=_num(r.get("val_metric")),
            elapsed_s=_num(r.get("elapsed_s")),
        )
        for r in rows
    )
    session.flush()
    return len(rows)


def add_preact_stats(session: Session, *, trial_id: int, rows: Sequence[Mapping[str, Any]]) -> int:
    """Store ``CandidateResult.preact_stats`` rows; hist and edges as float32 bytes.

    Each row: layer, epoch, min, max, mean, std, quantiles {"0.01": v, ...},
    hist (bins,), edges (bins+1,), dead_fraction. Rewriting (layer, epoch) replaces it.
    """
    get_trial(session, trial_id=trial_id)
    keys = [(int(_field(r, "layer", trial_id)), int(_field(r, "epoch", trial_id))) for r in rows]
    _replace_keys(session, PreactStatRow, trial_id, keys, ("layer", "epoch"))
    for r in rows:
        hist = np.asarray(_field(r, "hist", trial_id)).ravel()
        edges = np.asarray(_field(r, "edges", trial_id)).ravel()
        if edges.size != hist.size + 1:
            raise InvalidInput(
                f"{hist.size} histogram bins need {hist.size + 1} edges, got {edges.size}"
            )
        session.add(
            PreactStatRow(
                trial_id=trial_id,
                layer=int(r["layer"]),
                epoch=int(r["epoch"]),
                min=_num(r.get("min")),
                max=_num(r.get("max")),
                mean=_num(r.get("mean")),
                std=_num(r.get("std")),
                quantiles=jsonable(r.get("quantiles") or {}),
                hist=pack(hist),
                edges=pack(edges),
                dead_fraction=_num(r.get("dead_fraction")),
            )
        )
    session.flush()
    return len(rows)


def add_curves(session: Session, *, trial_id: int, rows: Sequence[Mapping[str, Any]]) -> int:
    """Store ``CandidateResult.curves`` rows ``{layer, epoch, x (G,), y (U', G), params}``.

    x and y become float32 bytes and y's shape is kept; y's last axis must match x.
    Rewriting (layer, epoch) replaces it.
    """
    get_trial(session, trial_id=trial_id)
    keys = [(int(_field(r, "layer", trial_id)), int(_field(r, "epoch", trial_id))) for r in rows]
    _replace_keys(session, CurveRow, trial_id, keys, ("layer", "epoch"))
    for r in rows:
        x = np.asarray(_field(r, "x", trial_id)).ravel()
        y = np.asarray(_field(r, "y", trial_id))
        if y.ndim == 0 or y.shape[-1] != x.size:
            raise InvalidInput(f"curve y of shape {y.shape} does not match x of {x.size} points")
        session.add(
            CurveRow(
                trial_id=trial_id,
                layer=int(r["layer"]),
                epoch=int(r["epoch"]),
                params=jsonable(r.get("params") or {}),
                x=pack(x),
                y=pack(y),
                y_shape=list(y.shape),
            )
        )
    session.flush()
    return len(rows)


def trial_epochs(session: Session, *, trial_id: int) -> list[dict[str, Any]]:
    """The trial's per-epoch metrics, in epoch order."""
    get_trial(session, trial_id=trial_id)
    stmt = select(EpochMetricRow).where(EpochMetricRow.trial_id == trial_id)
    return [
        {
            "epoch": m.epoch,
            "train_loss": m.train_loss,
            "val_loss": m.val_loss,
            "val_metric": m.val_metric,
            "elapsed_s": m.elapsed_s,
        }
        for m in session.scalars(stmt.order_by(EpochMetricRow.epoch))
    ]


def trial_preact_stats(session: Session, *, trial_id: int) -> list[dict[str, Any]]:
    """The trial's pre-activation statistics by (layer, epoch); hist/edges as float32 arrays."""
    get_trial(session, trial_id=trial_id)
    stmt = select(PreactStatRow).where(PreactStatRow.trial_id == trial_id)
    stmt = stmt.order_by(PreactStatRow.layer, PreactStatRow.epoch)
    return [
        {
            "layer": s.layer,
            "epoch": s.epoch,
            "min": s.min,
            "max": s.max,
            "mean": s.mean,
            "std": s.std,
            "quantiles": s.quantiles,
            "hist": unpack(s.hist, (-1,)),
            "edges": unpack(s.edges, (-1,)),
            "dead_fraction": s.dead_fraction,
        }
        for s in session.scalars(stmt)
    ]


def trial_curves(
    session: Session, *, trial_id: int, layer: int | None = None, epoch: int | None = None
) -> list[dict[str, Any]]:
    """The trial's learned curves by (layer, epoch) with x (G,) and y (U', G) as float32."""
    get_trial(session, trial_id=trial_id)
    stmt = select(CurveRow).where(CurveRow.trial_id == trial_id)
    if layer is not None:
        stmt = stmt.where(CurveRow.layer == layer)
    if epoch is not None:
        stmt = stmt.where(CurveRow.epoch == epoch)
    return [
        {
            "layer": c.layer,
            "epoch": c.epoch,
            "params": c.params,
            "x": unpack(c.x, (-1,)),
            "y": unpack(c.y, c.y_shape),
        }
        for c in session.scalars(stmt.order_by(CurveRow.layer, CurveRow.epoch))
    ]


def add_fits(session: Session, *, trial_id: int, rows: Sequence[Mapping[str, Any]]) -> int:
    """Append curve-analysis rows ``{layer, epoch, unit?, kind, family, params, rmse, max_error,
    r2, extra?}`` (``search.analysis.analyse_curves``) to trial ``trial_id``.

    Every row is checked before any is added: a bad row adds none.
    """
    get_trial(session, trial_id=trial_id)
    new: list[FitRow] = []
    for r in rows:
        kind = str(_field(r, "kind", trial_id))
        if kind not in FIT_KINDS:
            raise InvalidInput(f"fit kind must be one of {FIT_KINDS}, not {kind!r}")
        unit = r.get("unit")

        def num(key: str, r: Mapping[str, Any] = r) -> float | None:
            v = r.get(key)
            return float(v) if v is not None and math.isfinite(float(v)) else None

        new.append(FitRow(
            trial_id=trial_id, layer=int(_field(r, "layer", trial_id)),
            epoch=int(_field(r, "epoch", trial_id)), unit=None if unit is None else int(unit),
            kind=kind, family=str(_field(r, "family", trial_id)),
            params=jsonable(r.get("params") or {}), rmse=num("rmse"),
            max_error=num("max_error"), r2=num("r2"), extra=jsonable(r.get("extra") or {}),
        ))
    session.add_all(new)
    session.flush()
    return len(rows)


def trial_fits(
    session: Session, *, trial_id: int, layer: int | None = None, epoch: int | None = None
) -> list[dict[str, Any]]:
    """The trial's stored fits by (layer, epoch), in the order they were written (best first)."""
    get_trial(session, trial_id=trial_id)
    stmt = select(FitRow).where(FitRow.trial_id == trial_id)
    if layer is not None:
        stmt = stmt.where(FitRow.layer == layer)
    if epoch is not None:
        stmt = stmt.where(FitRow.epoch == epoch)
    return [
        {"layer": f.layer, "epoch": f.epoch, "unit": f.unit, "kind": f.kind, "family": f.family,
         "params": f.params, "rmse": f.rmse, "max_error": f.max_error, "r2": f.r2,
         "extra": f.extra}
        for f in session.scalars(stmt.order_by(FitRow.layer, FitRow.epoch, FitRow.id))
    ]


# --------------------------------------------------------------------------- weights

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: equal weights give equal bytes (dedupe)


def _npz_bytes(state_dict: Mapping[str, Any]) -> bytes:
    """An npz archive of ``state_dict`` written without pickle (object arrays refused)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, value in state_dict.items():
            if not isinstance(key, str) or not key:
                raise InvalidInput(f"state_dict keys must be non-empty strings, got {key!r}")
            arr = np.asarray(value)
            if arr.dtype.hasobject:
                raise InvalidInput(f"state_dict[{key!r}] has dtype object; only numeric arrays")
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            with archive.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)
    return buf.getvalue()


def _npz_load(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def save_weights(
    session: Session,
    *,
    trial_id: int,
    state_dict: Mapping[str, np.ndarray],
    scaler: Mapping[str, Any] | None,
    label_map: Any,
    artifact_dir: Path | None = None,
) -> WeightsRow:
    """Store a trial's weights (npz, no pickle) with the scaler and label map.

    ``scaler`` is ``{"mean": [...], "std": [...]}`` (or None); ``label_map`` is any
    JSON value (a list of class names, or a dict whose keys are stored as strings).
    Saving again for the same trial replaces the previous weights.
    """
    get_trial(session, trial_id=trial_id)
    artifact = put_artifact(
        session, kind="weights", data=_npz_bytes(state_dict), artifact_dir=artifact_dir
    )
    row = session.scalars(select(WeightsRow).where(WeightsRow.trial_id == trial_id)).first()
    if row is None:
        row = WeightsRow(trial_id=trial_id, artifact_id=artifact.id)
        session.add(row)
    row.artifact_id = artifact.id
    row.scaler = jsonable(scaler)
    row.label_map = jsonable(label_map)
    session.flush()
    return row


def load_weights(session: Session, *, trial_id: int) -> tuple[dict[str, np.ndarray], Any, Any]:
    """``(state_dict, scaler, label_map)`` of a trial, read without unpickling anything."""
    row = session.scalars(select(WeightsRow).where(WeightsRow.trial_id == trial_id)).first()
    if row is None:
        get_trial(session, trial_id=trial_id)
        raise NotFound(f"trial {trial_id} has no saved weights")
    state_dict = _npz_load(get_artifact_bytes(session, row.artifact_id))
    return state_dict, row.scaler, row.label_map


# --------------------------------------------------------------------------- read helpers (API, runner)
#
# Added for the HTTP API and the embedded runner: counts beside the existing lists
# (pagination needs a total), the progress of a running search, and the cross-search
# trial query. All read-only.


def count_datasets(
    session: Session,
    *,
    name: str | None = None,
    owner: str | None = None,
    latest_only: bool = False,
) -> int:
    """How many rows :func:`list_datasets` would return without paging."""
    if latest_only:
        stmt = select(func.count(func.distinct(DatasetRow.name)))
    else:
        stmt = select(func.count(DatasetRow.id))
    if name is not None:
        stmt = stmt.where(DatasetRow.name == name)
    if owner is not None:
        stmt = stmt.where(DatasetRow.owner == owner)
    return int(session.scalar(stmt) or 0)


def dataset_ids_by_name(session: Session, *, name: str) -> list[int]:
    """Ids of every version of the dataset called ``name`` (empty when there is none)."""
    stmt = select(DatasetRow.id).where(DatasetRow.name == name).order_by(DatasetRow.version)
    return list(session.scalars(stmt))


def oldest_pending_search(session: Session) -> SearchRow | None:
    """The search that has waited longest in ``pending`` (what a runner picks next)."""
    stmt = select(SearchRow).where(SearchRow.state == "pending")
    stmt = stmt.order_by(SearchRow.created_at.asc(), SearchRow.id.asc()).limit(1)
    return session.scalars(stmt).first()


def _architecture_kind(spec: Any) -> str | None:
    """``"mlp"``/``"cnn"`` from a stored spec's architecture (short string or dict form)."""
    arch = spec.get("architecture") if isinstance(spec, Mapping) else None
    if isinstance(arch, str):
        return arch.partition(":")[0].strip().lower() or None
    if isinstance(arch, Mapping):
        return str(arch.get("kind", "mlp")).lower()
    return None


def search_ids_by_architecture(session: Session, *, kind: str) -> list[int]:
    """Ids of searches whose architecture is of ``kind`` (``mlp`` or ``cnn``).

    The kind lives inside the spec's JSON, whose query syntax differs between
    SQLite and PostgreSQL; the searches table is small, so it is read in Python.
    """
    rows = session.execute(select(SearchRow.id, SearchRow.spec).order_by(SearchRow.id))
    return [sid for sid, spec in rows if _architecture_kind(spec) == kind.lower()]


def search_trial_counts(session: Session, *, search_id: int) -> dict[str, dict[str, int]]:
    """Recorded trials of a search counted by phase, then state: ``{"search": {"complete": 3}}``."""
    stmt = (
        select(TrialRow.phase, TrialRow.state, func.count(TrialRow.id))
        .where(TrialRow.search_id == search_id)
        .group_by(TrialRow.phase, TrialRow.state)
    )
    out: dict[str, dict[str, int]] = {}
    for phase, state, n in session.execute(stmt):
        out.setdefault(phase, {})[state] = int(n)
    return out


def search_population_counts(
    session: Session, *, search_id: int
) -> dict[str, dict[str, tuple[int, int]]]:
    """A search's populations by phase, then state: ``(populations, candidates)``.

    Trials are written when their population finishes, so the candidates of
    pending and running populations are what a search has in flight.
    """
    stmt = (
        select(PopulationRow.phase, PopulationRow.state, func.count(PopulationRow.id),
               func.coalesce(func.sum(PopulationRow.k), 0))
        .where(PopulationRow.search_id == search_id)
        .group_by(PopulationRow.phase, PopulationRow.state)
    )
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for phase, state, n, k in session.execute(stmt):
        out.setdefault(phase, {})[state] = (int(n), int(k))
    return out


def best_search_trial(session: Session, *, search_id: int) -> TrialRow | None:
    """The completed search-phase trial with the highest validation metric, if any."""
    stmt = (
        select(TrialRow)
        .where(TrialRow.search_id == search_id, TrialRow.phase == "search",
               TrialRow.state == "complete", TrialRow.value.is_not(None))
        .order_by(TrialRow.value.desc(), TrialRow.id.asc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def has_weights(session: Session, *, trial_id: int) -> bool:
    """Whether trained weights are stored for ``trial_id`` (finalists only)."""
    stmt = select(WeightsRow.id).where(WeightsRow.trial_id == trial_id)
    return session.scalars(stmt).first() is not None


def query_trials(
    session: Session,
    *,
    search_ids: Sequence[int] | None = None,
    dataset_ids: Sequence[int] | None = None,
    family: str | None = None,
    phase: str | None = None,
    state: str | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
    order_by: str = "value",
    descending: bool = True,
    limit: int | None = 100,
    offset: int = 0,
) -> tuple[list[TrialRow], int]:
    """Trials across searches, filtered and sorted, with the total before paging.

    Like :func:`list_trials` but each of ``search_ids`` / ``dataset_ids`` may name
    several (an empty list matches nothing), which the cross-search query needs:
    a dataset name stands for all of its versions, an architecture kind for many
    searches.
    """
    column = _TRIAL_ORDER.get(order_by)
    if column is None:
        raise InvalidInput(f"cannot sort trials by {order_by!r}; use one of {sorted(_TRIAL_ORDER)}")
    where = _trial_filters(None, family, phase, state, min_value, max_value)
    if search_ids is not None:
        where.append(TrialRow.search_id.in_(list(search_ids)))

    def build(select_: Select[Any]) -> Select[Any]:
        stmt = select_.where(*where)
        if dataset_ids is not None:
            stmt = stmt.join(SearchRow, SearchRow.id == TrialRow.search_id).where(
                SearchRow.dataset_id.in_(list(dataset_ids))
            )
        return stmt

    total = int(session.scalar(build(select(func.count(TrialRow.id)))) or 0)
    stmt = build(select(TrialRow)).order_by(
        column.is_(None),
        column.desc() if descending else column.asc(),
        TrialRow.id.desc() if descending else TrialRow.id.asc(),
    )
    return list(session.scalars(_page(stmt, limit, offset))), total


# --------------------------------------------------------------------------- distributed mode
#
# Workers and the reconciler race for the same rows from different processes and
# machines. Each helper below is one conditional UPDATE (or a row lock) whose
# result says whether this caller won, so a duplicate task delivery, a late
# worker and the reconciler can never all act on one population.


def _won(result: Any) -> bool:
    return bool(getattr(result, "rowcount", 0) == 1)


def claim_population(
    session: Session, *, population_id: int, worker: str, task_id: str | None = None
) -> bool:
    """Take a pending population for ``worker`` (pending -> running); False if someone else did.

    Counts the attempt and stamps started_at and heartbeat_at. A broker that
    delivers the same task twice finds the population running and gets False.
    """
    now = utcnow()
    values: dict[str, Any] = {
        "state": "running",
        "worker": worker,
        "attempts": PopulationRow.attempts + 1,
        "started_at": now,
        "heartbeat_at": now,
        "finished_at": None,
    }
    if task_id is not None:
        values["task_id"] = task_id
    stmt = (
        update(PopulationRow)
        .where(PopulationRow.id == population_id, PopulationRow.state == "pending")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    won = _won(session.execute(stmt))
    session.expire_all()
    return won


def heartbeat_owned_population(session: Session, *, population_id: int, worker: str) -> bool:
    """Stamp the heartbeat if ``worker`` still runs the population; False once it lost it.

    Unlike :func:`heartbeat_population` this never revives a population the
    reconciler has already failed: the worker learns that it should stop.
    """
    stmt = (
        update(PopulationRow)
        .where(
            PopulationRow.id == population_id,
            PopulationRow.state == "running",
            PopulationRow.worker == worker,
        )
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return _won(session.execute(stmt))


def record_asked_trials(
    session: Session,
    *,
    population_id: int,
    trial_numbers: Sequence[int],
    structural: Mapping[str, Any] | None = None,
) -> PopulationRow:
    """Remember which Optuna trials a population asked (and the structure they share)."""
    row: PopulationRow = _require(session, PopulationRow, population_id, "population")
    row.trial_numbers = [int(n) for n in trial_numbers]
    if structural is not None:
        row.structural = jsonable(structural)
    session.flush()
    return row


def fail_stale_population(
    session: Session,
    *,
    population_id: int,
    older_than_s: float,
    error: str,
    now: datetime | None = None,
) -> bool:
    """running -> failed if its heartbeat is still older than ``older_than_s``; False otherwise.

    The condition is re-checked inside the UPDATE: a worker that heartbeated
    since the reconciler listed the population keeps it.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=older_than_s)
    stmt = (
        update(PopulationRow)
        .where(
            PopulationRow.id == population_id,
            PopulationRow.state == "running",
            PopulationRow.heartbeat_at < cutoff,
        )
        .values(state="failed", error=error, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    won = _won(session.execute(stmt))
    session.expire_all()
    return won


def cancel_pending_populations(
    session: Session, *, search_id: int, population_id: int | None = None, reason: str = "cancelled"
) -> list[int]:
    """pending -> cancelled for a search's populations (or just ``population_id``).

    Returns the ids that changed; a population a worker has already claimed is
    left to finish.
    """
    where = [PopulationRow.search_id == search_id, PopulationRow.state == "pending"]
    if population_id is not None:
        where.append(PopulationRow.id == population_id)
    ids = list(session.scalars(select(PopulationRow.id).where(*where)))
    if not ids:
        return []
    stmt = (
        update(PopulationRow)
        .where(PopulationRow.id.in_(ids), PopulationRow.state == "pending")
        .values(state="cancelled", error=reason, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.execute(stmt)
    session.expire_all()
    return [
        pid
        for pid in session.scalars(
            select(PopulationRow.id).where(
                PopulationRow.id.in_(ids), PopulationRow.state == "cancelled"
            )
        )
    ]


def lock_search(session: Session, *, search_id: int) -> SearchRow:
    """The search row, locked until the transaction ends (``SELECT ... FOR UPDATE``).

    Serialises the decisions made once per search (plan the finalists, finish)
    between workers. SQLite has no row locks; its single writer serialises anyway.
    """
    stmt = (
        select(SearchRow)
        .where(SearchRow.id == search_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    row = session.scalars(stmt).first()
    if row is None:
        raise NotFound(f"search {search_id} not found")
    return row


def lock_population(session: Session, *, population_id: int) -> PopulationRow:
    """The population row, locked until the transaction ends (a worker's final write)."""
    stmt = (
        select(PopulationRow)
        .where(PopulationRow.id == population_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    row = session.scalars(stmt).first()
    if row is None:
        raise NotFound(f"population {population_id} not found")
    return row


def transition_search(
    session: Session, *, search_id: int, from_states: Sequence[str], to_state: str
) -> bool:
    """Move a search to ``to_state`` only from one of ``from_states``; True if this call did.

    The atomic form of :func:`set_search_state` for transitions that exactly one
    process may make (pending -> running when the search is planned).
    """
    _check(to_state, SEARCH_STATES, "search state")
    now = utcnow()
    values: dict[str, Any] = {"state": to_state}
    if to_state in ("running", "finalizing"):
        values["started_at"] = func.coalesce(SearchRow.started_at, now)
    if to_state in SEARCH_TERMINAL_STATES:
        values["finished_at"] = func.coalesce(SearchRow.finished_at, now)
    stmt = (
        update(SearchRow)
        .where(SearchRow.id == search_id, SearchRow.state.in_(list(from_states)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    won = _won(session.execute(stmt))
    session.expire_all()
    return won


__all__ += [
    "cancel_pending_populations",
    "claim_population",
    "fail_stale_population",
    "heartbeat_owned_population",
    "lock_population",
    "lock_search",
    "record_asked_trials",
    "transition_search",
]


def waiting_populations(
    session: Session, *, older_than_s: float, now: datetime | None = None
) -> list[PopulationRow]:
    """Populations still ``pending`` (never claimed) that were created over ``older_than_s`` ago.

    Only meaningful when the broker's queue is empty: then their task messages
    were lost (a broker restarted without persistence) and must be sent again.
    """
    cutoff = (now or utcnow()) - timedelta(seconds=older_than_s)
    stmt = select(PopulationRow).where(
        PopulationRow.state == "pending", PopulationRow.created_at < cutoff
    )
    return list(session.scalars(stmt.order_by(PopulationRow.id)))


__all__ += ["waiting_populations"]


# --------------------------------------------------------------------------- schedules

from store.tables import SCHEDULE_KINDS, SCHEDULE_STATES, ScheduleRow  # noqa: E402


def add_schedule(
    session: Session,
    *,
    name: str,
    cron: str,
    timezone: str,
    template: Mapping[str, Any],
    next_run_at: datetime,
    owner: str | None = None,
) -> ScheduleRow:
    """An active schedule row; the caller has validated the cron and the template."""
    if not name or len(name) > 200:
        raise InvalidInput("a schedule name must have 1 to 200 characters")
    _check(str(template.get("kind")), SCHEDULE_KINDS, "schedule template kind")
    row = ScheduleRow(name=name, cron=cron, timezone=timezone, template=jsonable(template),
                      state="active", owner=owner, next_run_at=next_run_at, run_count=0)
    session.add(row)
    session.flush()
    return row


def get_schedule(session: Session, *, schedule_id: int) -> ScheduleRow:
    """The schedule row ``schedule_id``."""
    return _require(session, ScheduleRow, schedule_id, "schedule")


def _schedule_filters(state: str | None, owner: str | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if state is not None:
        where.append(ScheduleRow.state == _check(state, SCHEDULE_STATES, "schedule state"))
    if owner is not None:
        where.append(ScheduleRow.owner == owner)
    return where


def list_schedules(
    session: Session,
    *,
    state: str | None = None,
    owner: str | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> list[ScheduleRow]:
    """Schedules, newest first, optionally filtered."""
    stmt = select(ScheduleRow).where(*_schedule_filters(state, owner))
    stmt = stmt.order_by(ScheduleRow.id.desc())
    return list(session.scalars(_page(stmt, limit, offset)))


def count_schedules(session: Session, *, state: str | None = None,
                    owner: str | None = None) -> int:
    """How many schedules :func:`list_schedules` would return without paging."""
    stmt = select(func.count(ScheduleRow.id)).where(*_schedule_filters(state, owner))
    return int(session.scalar(stmt) or 0)


def due_schedules(session: Session, *, now: datetime) -> list[ScheduleRow]:
    """Active schedules whose ``next_run_at`` has come, the most overdue first."""
    stmt = select(ScheduleRow).where(
        ScheduleRow.state == "active", ScheduleRow.next_run_at.is_not(None),
        ScheduleRow.next_run_at <= now,
    )
    return list(session.scalars(stmt.order_by(ScheduleRow.next_run_at, ScheduleRow.id)))


def claim_schedule_run(
    session: Session,
    *,
    schedule_id: int,
    expected_next_run_at: datetime,
    next_run_at: datetime | None,
    now: datetime,
) -> bool:
    """Take one firing of a schedule: True for exactly one of several concurrent callers.

    A conditional UPDATE on ``next_run_at`` (the value the caller read) moves it to
    the next cron time and counts the run; a second scheduler that read the same
    value matches no row. A schedule paused meanwhile matches no row either.
    """
    stmt = (
        update(ScheduleRow)
        .where(ScheduleRow.id == schedule_id, ScheduleRow.state == "active",
               ScheduleRow.next_run_at == expected_next_run_at)
        .values(next_run_at=next_run_at, last_run_at=now,
                run_count=ScheduleRow.run_count + 1)
        .execution_options(synchronize_session=False)
    )
    won = _won(session.execute(stmt))
    session.expire_all()
    return won


def record_schedule_result(
    session: Session, *, schedule_id: int, search_id: int | None, error: str | None
) -> ScheduleRow:
    """After a firing: link the search it created (clearing the last error), or keep the error."""
    row: ScheduleRow = _require(session, ScheduleRow, schedule_id, "schedule")
    if search_id is not None:
        search: SearchRow = _require(session, SearchRow, search_id, "search")
        search.schedule_id = schedule_id
        row.last_search_id = search_id
    row.last_error = error
    session.flush()
    return row


def set_schedule_state(
    session: Session, *, schedule_id: int, state: str, next_run_at: datetime | None
) -> ScheduleRow:
    """Pause or resume a schedule (the caller decides whether the move is allowed)."""
    _check(state, SCHEDULE_STATES, "schedule state")
    row: ScheduleRow = _require(session, ScheduleRow, schedule_id, "schedule")
    row.state = state
    row.next_run_at = next_run_at
    session.flush()
    return row


def delete_schedule(session: Session, *, schedule_id: int) -> None:
    """Delete a schedule; the searches it created stay, unlinked."""
    _require(session, ScheduleRow, schedule_id, "schedule")
    # Explicit, not only ON DELETE SET NULL: a SQLite connection without
    # foreign_keys=ON would otherwise leave dangling ids.
    session.execute(update(SearchRow).where(SearchRow.schedule_id == schedule_id)
                    .values(schedule_id=None).execution_options(synchronize_session=False))
    session.execute(delete(ScheduleRow).where(ScheduleRow.id == schedule_id))
    session.expire_all()


def schedule_searches(
    session: Session, *, schedule_id: int, limit: int | None = 100, offset: int = 0
) -> list[SearchRow]:
    """The searches a schedule created, newest first."""
    stmt = select(SearchRow).where(SearchRow.schedule_id == schedule_id)
    stmt = stmt.order_by(SearchRow.id.desc())
    return list(session.scalars(_page(stmt, limit, offset)))


def count_schedule_searches(session: Session, *, schedule_id: int) -> int:
    """How many searches of a schedule still exist."""
    stmt = select(func.count(SearchRow.id)).where(SearchRow.schedule_id == schedule_id)
    return int(session.scalar(stmt) or 0)


__all__ += [
    "add_schedule",
    "claim_schedule_run",
    "count_schedule_searches",
    "count_schedules",
    "delete_schedule",
    "due_schedules",
    "get_schedule",
    "list_schedules",
    "record_schedule_result",
    "schedule_searches",
    "set_schedule_state",
]
