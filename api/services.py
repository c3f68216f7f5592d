"""What the routes call: HTTP policy on top of ``search/`` and ``store.repo``.

Routes stay one call deep; the rules that exist only because a request came over
the network live here, for example that a spec's ``dataset`` may name a stored
dataset or a built-in but never a file on the server's disk (the CLI may read
local files; a remote client must not make the server read its files).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from api.auth import Principal
from api.slow import SlowOperations
from core.errors import Conflict, InvalidInput, LimitExceeded, NotFound
from core.settings import Settings
from search import datasets as ds
from search.datasets.generate import check_builtin_limits
from search.datasets.generate import generate_builtin as generate_builtin_dataset
from search.progress import search_analysis, search_leaderboard
from search.service import check_warm_start, create_search, register_dataset, spec_for_dataset
from search.spec import SearchSpec
from search.validation import DataShape, validate_search_spec
from store import repo
from store.tables import SEARCH_TERMINAL_STATES, DatasetRow, SearchRow

#: Stored dataset names: no slashes or leading dots, so a name never reads as a path.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
_FILE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".npz", ".npy", ".json", ".xlsx")

log = logging.getLogger("actsearch.api")

_UPLOAD_HINT = "upload the file with POST /datasets (multipart: file, name, label, task)"


def check_dataset_name(name: str) -> str:
    """A valid stored name, or InvalidInput saying what a name may contain."""
    if not NAME_RE.fullmatch(name):  # fullmatch: "$" would accept a trailing newline
        raise InvalidInput(
            f"dataset name {name!r} is not allowed: use 1-200 letters, digits, '.', '_', '+' "
            "or '-', starting with a letter or digit"
        )
    return name


def _looks_like_path(value: str) -> bool:
    return (
        "/" in value
        or "\\" in value
        or value.startswith((".", "~"))
        or value.lower().endswith(_FILE_SUFFIXES)
    )


# --------------------------------------------------------------------------- datasets


def register_upload(
    session: Session,
    *,
    data: bytes,
    filename: str,
    name: str | None,
    label: str | None,
    task: str | None,
    settings: Settings,
    owner: str | None = None,
) -> DatasetRow:
    """Validate an uploaded file (never unpickled) and store it as ``owner``'s name's next version."""
    if task is not None and task not in ds.TASKS:
        raise InvalidInput(f"task must be 'classification' or 'regression', got {task!r}")
    # Default name: the file's stem made safe ("my data (2).csv" -> "my-data-2").
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "-", filename.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    stem = stem.strip("-._+")[:200] or "upload"
    dataset_name = check_dataset_name(name or stem)
    lim = settings.limits
    dataset = ds.load_file(
        data, filename=filename, label=label or None, task=task, name=dataset_name,  # type: ignore[arg-type]
        max_bytes=lim.max_upload_bytes, max_rows=lim.max_rows, max_columns=lim.max_features,
    )
    return register_dataset(session, dataset=dataset, name=dataset_name, owner=owner)


def generate_builtin(builtin: str, options: dict[str, Any], settings: Settings) -> ds.Dataset:
    """A built-in checked against the upload limits before it is made, generated off this
    process (see :mod:`search.datasets.generate`)."""
    lim = settings.limits
    return generate_builtin_dataset(builtin, options, max_bytes=lim.max_upload_bytes,
                                    max_rows=lim.max_rows, max_features=lim.max_features,
                                    processes=lim.generation_processes)


def register_builtin(
    session: Session, *, builtin: str, name: str | None, options: dict[str, Any],
    settings: Settings, owner: str | None = None,
) -> DatasetRow:
    """Generate or load a built-in dataset and store it (same content: same row)."""
    if builtin not in ds.BUILTINS:
        raise InvalidInput(
            f"unknown builtin dataset {builtin!r}; builtins: {', '.join(ds.BUILTINS)}"
        )
    dataset_name = check_dataset_name(name or builtin)
    dataset = generate_builtin(builtin, options, settings)
    return register_dataset(session, dataset=dataset, name=dataset_name, owner=owner)


def dataset_versions(session: Session, *, row: DatasetRow) -> list[DatasetRow]:
    """Every version of ``row``'s name in its owner's namespace, newest first."""
    rows = repo.list_datasets(session, name=row.name, owner=row.owner, limit=None)
    return [r for r in rows if r.owner == row.owner]


def locate_spec_dataset(session: Session, *, spec: SearchSpec, owner: str | None = None,
                        settings: Settings | None = None) -> DatasetRow | ds.BuiltinEstimate:
    """The stored row a spec submitted over HTTP names, or the built-in it would register.

    Nothing is registered or generated here, so a spec refused by a later check leaves
    nothing behind; a built-in is checked against the upload limits from its options.
    A file path is refused (422) whether or not such a file exists on the server: the
    client's files are not the server's. Names are looked up among ``owner``'s datasets.
    """
    name = spec.dataset
    if spec.dataset_version is not None:
        try:
            return repo.get_dataset_version(session, name=name, version=spec.dataset_version,
                                            owner=owner)
        except NotFound as exc:
            raise InvalidInput(f"dataset: {exc.detail}; see GET /datasets?name={name}") from None
    stored = repo.dataset_ids_by_name(session, name=name, owner=owner)
    if stored:
        if spec.label is not None:
            raise InvalidInput(
                f"label: dataset {name!r} is stored with its label already; omit 'label' "
                "(it applies when a file is uploaded)"
            )
        return repo.latest_dataset(session, name=name, owner=owner)
    if name in ds.BUILTINS:
        if spec.label is not None:
            raise InvalidInput(f"label: builtin {name!r} has its own labels; omit 'label'")
        est = ds.estimate_builtin(name)
        if settings is not None:
            lim = settings.limits
            check_builtin_limits(est, max_bytes=lim.max_upload_bytes, max_rows=lim.max_rows,
                                 max_features=lim.max_features)
        return est
    if _looks_like_path(name):
        raise InvalidInput(
            f"dataset: {name!r} looks like a file path; the service does not read files from "
            f"its own disk. {_UPLOAD_HINT}, then use the name you gave it"
        )
    raise InvalidInput(
        f"dataset: no stored dataset named {name!r} and no such builtin; {_UPLOAD_HINT}, "
        f"register a builtin with POST /datasets/builtin, or use one of: {', '.join(ds.BUILTINS)}"
    )


def data_shape(found: DatasetRow | ds.BuiltinEstimate) -> DataShape:
    """The shape the spec checks need, from a stored row or a built-in's estimate."""
    if isinstance(found, ds.BuiltinEstimate):
        return DataShape.of_builtin(found)
    return DataShape.of_row(found)


def resolve_spec_dataset(session: Session, *, spec: SearchSpec, owner: str | None = None,
                         settings: Settings | None = None,
                         found: DatasetRow | ds.BuiltinEstimate | None = None) -> DatasetRow:
    """The dataset row a spec submitted over HTTP names, a built-in registered on first use
    (as ``owner``'s, without touching the working directory: ``resolve_dataset`` would
    prefer a same-named local file). ``found``: what :func:`locate_spec_dataset` returned."""
    if found is None:
        found = locate_spec_dataset(session, spec=spec, owner=owner, settings=settings)
    if not isinstance(found, ds.BuiltinEstimate):
        return found
    dataset = (generate_builtin(found.name, {}, settings) if settings is not None
               else ds.load_builtin(found.name))
    row = register_dataset(session, dataset=dataset, name=found.name, owner=owner)
    # Commit the registration now: on SQLite our write lock would otherwise be held
    # while Optuna's own connection creates the study, which then waits for it until
    # the busy timeout ("database is locked"), and so does every other writer.
    session.commit()
    return row


# --------------------------------------------------------------------------- searches


def check_active_searches(session: Session, *, owner: str | None, settings: Settings) -> None:
    """429 when ``owner`` already has the most queued + running searches allowed.

    A soft limit: two submissions racing past the count may both get in.
    """
    cap = settings.limits.max_active_searches_per_owner
    active = repo.count_active_searches(session, owner=owner)
    if active >= cap:
        raise LimitExceeded(
            f"{'owner ' + repr(owner) if owner else 'you'} already {'has' if owner else 'have'} "
            f"{active} queued or running searches, the limit "
            f"(max_active_searches_per_owner = {cap}); wait for one to finish or cancel one "
            "(POST /searches/{id}/cancel), or raise ACTSEARCH_LIMITS__MAX_ACTIVE_SEARCHES_PER_OWNER"
        )


def submit_search(
    session: Session, *, spec: SearchSpec, name: str | None, settings: Settings,
    principal: Principal | None = None, slow: SlowOperations | None = None,
) -> SearchRow:
    """Validate a spec against the service's limits and create a pending search of the caller.

    The embedded runner (``actsearch serve``) or the Celery workers pick it up.
    ``principal`` (default: auth off) owns it; its dataset is one of the caller's
    or a built-in, and ``warm_start_from`` one of the caller's searches.
    """
    owner = principal.owner if principal is not None else None
    scope = principal.scope if principal is not None else None
    check_active_searches(session, owner=owner, settings=settings)
    if spec.warm_start_from is not None:  # same 404 as a missing id for another owner's search
        repo.get_search(session, search_id=spec.warm_start_from, owner=scope)
    found = locate_spec_dataset(session, spec=spec, owner=owner, settings=settings)
    if isinstance(found, DatasetRow):  # its modality and input shape are known now
        spec = spec_for_dataset(spec, found)
    validate_search_spec(spec, shape=data_shape(found), limits=settings.limits,
                         training=settings.training)
    check_warm_start(session, spec)
    # Only now, with every check passed, is a built-in generated and registered; generating
    # one (MNIST-1D, teacher, spirals) is a slow operation and holds one of the owner's slots.
    generates = isinstance(found, ds.BuiltinEstimate) and bool(ds.BUILTINS[found.name].defaults)
    with (slow.slot(owner, f"POST /searches (generating builtin {spec.dataset!r})")
          if slow is not None and generates else contextlib.nullcontext()):
        row = resolve_spec_dataset(session, spec=spec, owner=owner, settings=settings,
                                   found=found)
    spec = spec_for_dataset(spec, row)  # a built-in's inputs are known once it exists
    spec.arch_spec().validate(n_inputs=row.n_features, max_width=settings.limits.max_width,
                              max_layers=settings.limits.max_layers)
    # Pin the exact version, so that create_search finds the stored row and never
    # falls back to reading a file or re-generating a builtin.
    pinned = spec.model_copy(update={"dataset": row.name, "dataset_version": row.version,
                                     "label": None})
    return create_search(session=session, spec=pinned, storage_url=settings.resolved_database_url,
                         name=name, owner=owner)


def export_model(session: Session, *, search_id: int, owner: str | None,
                 activations: str) -> bytes:
    """The export zip of ``owner``'s search (404 for another owner's), built on the caller's thread."""
    from search.export import export_search

    repo.get_search(session, search_id=search_id, owner=owner)
    return export_search(session, search_id=search_id, activations=activations)  # type: ignore[arg-type]


def enqueue_search(search_id: int) -> None:
    """Distributed mode: hand a committed search to the Celery workers (never raises).

    Runs after the commit (a worker may start at once and must find the row). If
    the broker is unreachable the search stays pending and the reconciler run by
    ``actsearch beat`` starts it later, so a broker outage is logged, not returned
    to a client whose search was accepted.
    """
    try:
        from worker.enqueue import submit_search as send

        send(search_id)
    except Exception as exc:  # broker down, misconfigured: the reconciler retries
        log.warning("search %s saved but not enqueued (%s: %s); the reconciler will start it",
                    search_id, type(exc).__name__, exc)


def cancel_search(session: Session, *, search_id: int, owner: str | None = None) -> SearchRow:
    """Stop scheduling new trials; what is training finishes (409 once finished)."""
    row = repo.get_search(session, search_id=search_id, owner=owner)
    if row.state in SEARCH_TERMINAL_STATES:
        raise Conflict(f"search {search_id} is already {row.state}; only a pending or running "
                       "search can be cancelled")
    return repo.set_search_state(session, search_id=search_id, state="cancelled")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _json_array(arr: np.ndarray) -> list[Any]:
    """Nested lists for JSON; NaN and infinities (a curve that overflowed) become null."""
    finite = np.isfinite(arr)
    if finite.all():
        return arr.tolist()
    out = arr.astype(object)
    out[~finite] = None
    return out.tolist()


def leaderboard(session: Session, *, search_id: int, owner: str | None = None) -> dict[str, Any]:
    """The search's leaderboard (finalists per family, baseline marked), JSON-safe."""
    row = repo.get_search(session, search_id=search_id, owner=owner)
    board = search_leaderboard(session, row=row)
    rows = []
    for rank, r in enumerate(board.as_dict()["rows"], start=1):
        for key in ("ci95", "delta_vs_baseline", "test_mean", "test_ci95", "best_search_value"):
            r[key] = _finite(r[key])
        rows.append({"rank": rank, **r})
    stopped = board.as_dict()["stopped"]
    for s in stopped:
        s["best_value"] = _finite(s["best_value"])
    control = board.control.as_dict() if board.control is not None else None
    if control is not None:
        for key in ("mean", "ci95", "test_mean", "test_ci95", "delta_test", "p_value"):
            control[key] = _finite(control[key])
    return {"search_id": row.id, "state": row.state, "metric": board.metric,
            "winner": board.winner.family if board.winner else None, "rows": rows,
            "stopped": stopped, "control": control}


# --------------------------------------------------------------------------- trials


def resolve_trial_dataset(session: Session, *, dataset: str, owner: str | None = None) -> list[int]:
    """Dataset ids for a ``dataset`` filter: a numeric id, or a name (all of its versions)."""
    if dataset.isdigit():
        return [repo.get_dataset(session, dataset_id=int(dataset), owner=owner).id]
    ids = repo.dataset_ids_by_name(session, name=dataset, owner=owner)
    if not ids:
        raise NotFound(f"no dataset named {dataset!r}; see GET /datasets")
    return ids


_TRIAL_SORT = {"value": "value", "created": "id", "family": "family", "duration": "duration_s"}


def trial_sort_column(sort: str) -> str:
    """The repo column behind an API sort key."""
    return _TRIAL_SORT[sort]


def trial_detail(session: Session, *, trial_id: int, owner: str | None = None) -> dict[str, Any]:
    """One trial with its per-epoch curve, a summary of its pre-activation statistics."""
    row = repo.get_trial(session, trial_id=trial_id, owner=owner)
    out = {c: getattr(row, c) for c in (
        "id", "search_id", "trial_number", "phase", "family", "family_params", "hparams", "seed",
        "state", "value", "best_value", "test_value", "n_params", "flops", "device",
        "duration_s", "started_at", "finished_at", "source_trial_number", "population_id",
        "error")}
    out["has_weights"] = repo.has_weights(session, trial_id=trial_id)
    out["epochs"] = repo.trial_epoch_rows(session, trial_id=trial_id)
    out["preact_stats"] = repo.trial_preact_summary(session, trial_id=trial_id)
    return out


def trial_activations(
    session: Session, *, trial_id: int, layer: int | None = None, epoch: int | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    """Learned curves per layer and epoch and the pre-activation histograms, as lists."""
    row = repo.get_trial(session, trial_id=trial_id, owner=owner)
    curves = repo.trial_curves(session, trial_id=trial_id, layer=layer, epoch=epoch)
    stats = repo.trial_preact_stats(session, trial_id=trial_id)
    hists = [
        {"layer": s["layer"], "epoch": s["epoch"], "hist": _json_array(s["hist"]),
         "edges": _json_array(s["edges"]), "min": s["min"], "max": s["max"],
         "dead_fraction": s["dead_fraction"]}
        for s in stats
        if (layer is None or s["layer"] == layer) and (epoch is None or s["epoch"] == epoch)
    ]
    return {
        "trial_id": row.id,
        "family": row.family,
        "family_params": row.family_params,
        "curves": [
            {"layer": c["layer"], "epoch": c["epoch"], "params": c["params"] or {},
             "x": _json_array(c["x"]), "y": _json_array(c["y"]), "y_shape": list(c["y"].shape)}
            for c in curves
        ],
        "histograms": hists,
        "fits": [f for f in repo.trial_fits(session, trial_id=trial_id, layer=layer, epoch=epoch)
                 if f["kind"] != "network"],
        "network": _network_analysis(session, trial_id=trial_id),
        "analysis": search_analysis(repo.get_search(session, search_id=row.search_id)),
    }


def _network_analysis(session: Session, *, trial_id: int) -> dict[str, Any] | None:
    """The stored distillation/merge analysis of a finalist (lazy: torch and scipy load on use)."""
    from search.analysis.distillation import stored_network_analysis

    return stored_network_analysis(session, trial_id=trial_id)
