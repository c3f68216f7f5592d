"""Trials and their per-epoch data: metrics, pre-activation stats, curves and fits.

About 550 lines: every table here hangs off a trial row and is written with it in one
transaction (``record_population``) and read by the same filters (trial, layer, epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Select, bindparam, delete, func, insert, select
from sqlalchemy.orm import Session

from core.errors import InvalidInput, NotFound
from store.arrays import pack, unpack
from store.repo._common import _check, _num, _page, _require, jsonable
from store.repo.populations import get_population
from store.repo.searches import get_search
from store.tables import (
    FIT_KINDS,
    PHASES,
    TRIAL_STATES,
    CurveRow,
    EpochMetricRow,
    FitRow,
    PreactStatRow,
    SearchRow,
    TrialRow,
    utcnow,
)


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


def get_trial(session: Session, *, trial_id: int, owner: str | None = None) -> TrialRow:
    """The trial row ``trial_id``; NotFound if its search is not ``owner``'s (None: anyone's)."""
    row: TrialRow | None = session.get(TrialRow, trial_id)
    if row is None or (owner is not None and get_search(session, search_id=row.search_id).owner
                       != owner):
        raise NotFound(f"trial {trial_id} not found")
    return row


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


def _insert_rows(session: Session, table: type[Any], values: list[dict[str, Any]]) -> int:
    """One executemany INSERT (no ORM objects: a population writes thousands of these)."""
    if values:
        session.execute(insert(table), values)
    return len(values)


def _epoch_values(trial_id: int, r: Mapping[str, Any]) -> dict[str, Any]:
    return {"trial_id": trial_id, "epoch": int(_field(r, "epoch", trial_id)),
            "train_loss": _num(r.get("train_loss")), "val_loss": _num(r.get("val_loss")),
            "val_metric": _num(r.get("val_metric")), "elapsed_s": _num(r.get("elapsed_s"))}


def _preact_values(trial_id: int, r: Mapping[str, Any]) -> dict[str, Any]:
    hist = np.asarray(_field(r, "hist", trial_id)).ravel()
    edges = np.asarray(_field(r, "edges", trial_id)).ravel()
    if edges.size != hist.size + 1:
        raise InvalidInput(
            f"{hist.size} histogram bins need {hist.size + 1} edges, got {edges.size}"
        )
    return {"trial_id": trial_id, "layer": int(_field(r, "layer", trial_id)),
            "epoch": int(_field(r, "epoch", trial_id)), "min": _num(r.get("min")),
            "max": _num(r.get("max")), "mean": _num(r.get("mean")), "std": _num(r.get("std")),
            "quantiles": jsonable(r.get("quantiles") or {}), "hist": pack(hist),
            "edges": pack(edges), "dead_fraction": _num(r.get("dead_fraction"))}


def _curve_values(trial_id: int, r: Mapping[str, Any]) -> dict[str, Any]:
    x = np.asarray(_field(r, "x", trial_id)).ravel()
    y = np.asarray(_field(r, "y", trial_id))
    if y.ndim == 0 or y.shape[-1] != x.size:
        raise InvalidInput(f"curve y of shape {y.shape} does not match x of {x.size} points")
    return {"trial_id": trial_id, "layer": int(_field(r, "layer", trial_id)),
            "epoch": int(_field(r, "epoch", trial_id)),
            "params": jsonable(r.get("params") or {}), "x": pack(x), "y": pack(y),
            "y_shape": list(y.shape)}


def add_epoch_metrics(session: Session, *, trial_id: int, rows: Sequence[Mapping[str, Any]],
                      replace: bool = True) -> int:
    """Store the engine's history rows ``{epoch, train_loss, val_loss, val_metric, elapsed_s}``.

    Rewriting an epoch replaces it (``replace=False``: a trial added in this transaction,
    which has none to replace). Non-finite losses (a diverged run) become NULL.
    Returns the number of rows written.
    """
    get_trial(session, trial_id=trial_id)
    values = [_epoch_values(trial_id, r) for r in rows]
    if replace:
        _replace_keys(session, EpochMetricRow, trial_id, [(v["epoch"],) for v in values],
                      ("epoch",))
    return _insert_rows(session, EpochMetricRow, values)


def add_preact_stats(session: Session, *, trial_id: int, rows: Sequence[Mapping[str, Any]],
                     replace: bool = True) -> int:
    """Store ``CandidateResult.preact_stats`` rows; hist and edges as float32 bytes.

    Each row: layer, epoch, min, max, mean, std, quantiles {"0.01": v, ...},
    hist (bins,), edges (bins+1,), dead_fraction. Rewriting (layer, epoch) replaces it
    (``replace``: as for :func:`add_epoch_metrics`).
    """
    get_trial(session, trial_id=trial_id)
    values = [_preact_values(trial_id, r) for r in rows]
    if replace:
        _replace_keys(session, PreactStatRow, trial_id,
                      [(v["layer"], v["epoch"]) for v in values], ("layer", "epoch"))
    return _insert_rows(session, PreactStatRow, values)


def add_curves(session: Session, *, trial_id: int, rows: Sequence[Mapping[str, Any]],
               replace: bool = True) -> int:
    """Store ``CandidateResult.curves`` rows ``{layer, epoch, x (G,), y (U', G), params}``.

    x and y become float32 bytes and y's shape is kept; y's last axis must match x.
    Rewriting (layer, epoch) replaces it (``replace``: as for :func:`add_epoch_metrics`).
    """
    get_trial(session, trial_id=trial_id)
    values = [_curve_values(trial_id, r) for r in rows]
    if replace:
        _replace_keys(session, CurveRow, trial_id, [(v["layer"], v["epoch"]) for v in values],
                      ("layer", "epoch"))
    return _insert_rows(session, CurveRow, values)


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


def best_val_losses(session: Session, *, trial_ids: Iterable[int]) -> dict[int, float]:
    """Each trial's lowest per-epoch validation loss (trials without one are left out)."""
    ids = list(trial_ids)
    if not ids:
        return {}
    stmt = (select(EpochMetricRow.trial_id, func.min(EpochMetricRow.val_loss))
            .where(EpochMetricRow.trial_id.in_(ids), EpochMetricRow.val_loss.is_not(None))
            .group_by(EpochMetricRow.trial_id))
    return {int(t): float(v) for t, v in session.execute(stmt)
            if v is not None and math.isfinite(v)}


# Built once: the trial page reads these on every poll (see searches._TRIAL_COUNTS).
_EPOCH_COLUMNS = ("epoch", "train_loss", "val_loss", "val_metric", "elapsed_s")
_TRIAL_EPOCHS = (select(*(getattr(EpochMetricRow, c) for c in _EPOCH_COLUMNS))
                 .where(EpochMetricRow.trial_id == bindparam("trial_id"))
                 .order_by(EpochMetricRow.epoch))
_SUMMARY_COLUMNS = ("layer", "epoch", "min", "max", "mean", "std", "quantiles", "dead_fraction")
_PREACT_SUMMARY = (select(*(getattr(PreactStatRow, c) for c in _SUMMARY_COLUMNS))
                   .where(PreactStatRow.trial_id == bindparam("trial_id"))
                   .order_by(PreactStatRow.layer, PreactStatRow.epoch))


def trial_epoch_rows(session: Session, *, trial_id: int) -> list[dict[str, Any]]:
    """:func:`trial_epochs` of a trial the caller has already read (no existence check)."""
    return [dict(zip(_EPOCH_COLUMNS, r, strict=True))
            for r in session.execute(_TRIAL_EPOCHS, {"trial_id": trial_id})]


def trial_preact_summary(session: Session, *, trial_id: int) -> list[dict[str, Any]]:
    """The statistics of :func:`trial_preact_stats` without the histograms (not read at all),
    of a trial the caller has already read."""
    return [dict(zip(_SUMMARY_COLUMNS, r, strict=True))
            for r in session.execute(_PREACT_SUMMARY, {"trial_id": trial_id})]


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


def _per_layer_epoch(session: Session, table: type[Any], trial_id: int, layer: int | None,
                     epoch: int | None) -> Select[Any]:
    """Rows of an existing trial, optionally of one layer and one epoch."""
    get_trial(session, trial_id=trial_id)
    stmt = select(table).where(table.trial_id == trial_id)
    if layer is not None:
        stmt = stmt.where(table.layer == layer)
    if epoch is not None:
        stmt = stmt.where(table.epoch == epoch)
    return stmt


def trial_curves(
    session: Session, *, trial_id: int, layer: int | None = None, epoch: int | None = None
) -> list[dict[str, Any]]:
    """The trial's learned curves by (layer, epoch) with x (G,) and y (U', G) as float32."""
    stmt = _per_layer_epoch(session, CurveRow, trial_id, layer, epoch)
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
    stmt = _per_layer_epoch(session, FitRow, trial_id, layer, epoch)
    return [
        {"layer": f.layer, "epoch": f.epoch, "unit": f.unit, "kind": f.kind, "family": f.family,
         "params": f.params, "rmse": f.rmse, "max_error": f.max_error, "r2": f.r2,
         "extra": f.extra}
        for f in session.scalars(stmt.order_by(FitRow.layer, FitRow.epoch, FitRow.id))
    ]


def fitted_trial_ids(session: Session, *, search_id: int, kinds: Sequence[str]) -> set[int]:
    """Ids of the search's trials holding at least one fit of one of ``kinds``."""
    stmt = (select(FitRow.trial_id).join(TrialRow, TrialRow.id == FitRow.trial_id)
            .where(TrialRow.search_id == search_id, FitRow.kind.in_(list(kinds))).distinct())
    return set(session.scalars(stmt))


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
    owner: str | None = None,
    limit: int | None = 100,
    offset: int = 0,
) -> tuple[list[TrialRow], int]:
    """Trials across searches, filtered and sorted, with the total before paging.

    Like :func:`list_trials` but each of ``search_ids`` / ``dataset_ids`` may name
    several (an empty list matches nothing), which the cross-search query needs:
    a dataset name stands for all of its versions, an architecture kind for many
    searches. ``owner`` keeps only trials of that owner's searches.
    """
    column = _TRIAL_ORDER.get(order_by)
    if column is None:
        raise InvalidInput(f"cannot sort trials by {order_by!r}; use one of {sorted(_TRIAL_ORDER)}")
    where = _trial_filters(None, family, phase, state, min_value, max_value)
    if search_ids is not None:
        where.append(TrialRow.search_id.in_(list(search_ids)))
    if owner is not None:
        where.append(TrialRow.search_id.in_(select(SearchRow.id).where(SearchRow.owner == owner)))

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


def family_budgets(session: Session, *, search_id: int, full_epochs: int
                   ) -> dict[str, dict[str, int | None]]:
    """What each family's search phase spent: trials, the most epochs its trials were
    given (its fidelity: a raced rung's, else ``full_epochs``), candidate-epochs (epochs trained, summed) and the last
    race rung it ran in (None: not raced). Read from the rows, so it is what was spent,
    not what was planned."""
    from store.tables import PopulationRow

    epochs = (select(EpochMetricRow.trial_id, func.count().label("n"))
              .group_by(EpochMetricRow.trial_id).subquery())
    rows = session.execute(
        select(TrialRow.family, TrialRow.id, epochs.c.n, PopulationRow.rung, PopulationRow.epochs)
        .outerjoin(epochs, epochs.c.trial_id == TrialRow.id)
        .outerjoin(PopulationRow, PopulationRow.id == TrialRow.population_id)
        .where(TrialRow.search_id == search_id, TrialRow.phase == "search")
    ).all()
    out: dict[str, dict[str, int | None]] = {}
    for family, _id, n, rung, planned in rows:
        b = out.setdefault(family, {"trials": 0, "epochs": 0, "candidate_epochs": 0, "rung": None})
        b["trials"] = int(b["trials"] or 0) + 1
        b["candidate_epochs"] = int(b["candidate_epochs"] or 0) + int(n or 0)
        b["epochs"] = max(int(b["epochs"] or 0), int(planned or full_epochs))
        if rung is not None:
            b["rung"] = max(int(b["rung"]) if b["rung"] is not None else -1, int(rung))
    return out
