"""Scheduled searches: a cron expression and a template, fired by :func:`tick`.

Who calls :func:`tick`: in embedded mode the background runner of ``actsearch
serve`` (every ``ACTSEARCH_SCHEDULE_TICK_S`` seconds, between searches and while
idle, so a long search delays a firing until it ends); in distributed mode the
Celery task ``schedules.tick`` (``worker/schedule_tasks.py``) sent by beat, which
also hands each created search to the workers. All state lives in the
``actsearch_schedules`` table, so a restarted scheduler carries on where the
last one stopped, and any number of schedulers may tick the same database.

Cron semantics (what a user of cron or Celery beat expects, made explicit):

* 5 fields ``minute hour day-of-month month day-of-week`` (``"0 3 * * *"``: every
  day at 03:00), the ``@hourly``/``@daily``/``@weekly``/``@monthly``/``@yearly``
  aliases, or 6 fields with **seconds last** as croniter reads them
  (``"* * * * * */5"``: every 5 seconds; meant for tests and demos).
* Times are read in the schedule's ``timezone`` (IANA name, default UTC, DST
  handled by croniter) and stored in UTC.
* ``next_run_at`` is the next cron time strictly after the schedule was created
  or resumed, or after its last firing.
* Missed firings are not replayed: a scheduler that was down over several cron
  times fires the schedule **once** when it comes back, then schedules the next
  cron time after *now*. A firing that fails (say its dataset was deleted) is
  recorded in ``last_error`` and not retried before the next cron time.
* At most once per cron time: a firing is claimed with a conditional UPDATE on
  ``next_run_at`` before the search is created, so two schedulers never fire
  one schedule twice. A crash between the claim and the search's commit loses
  that one firing (it is not run twice either).
* A schedule fires even if the search it created last time is still running.

Templates (stored as JSON, validated at creation and again at each firing):

* ``{"kind": "rerun", "spec": {...}}``: a search spec whose ``dataset`` names a
  stored dataset or a built-in; every firing runs it on the **latest version** of
  that name at that moment (the created search records the version it used).
* ``{"kind": "add_trials", "search_id": N, "trials": M}``: every firing creates a
  new search with search N's spec, ``M`` trials and ``warm_start_from=N``, so its
  sampler starts from N's finished trials.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter  # type: ignore[import-untyped]
from sqlalchemy.orm import Session, sessionmaker

from core.errors import ActsearchError, Conflict, InvalidInput, LimitExceeded, NotFound
from core.settings import get_settings
from store import repo
from store.tables import ScheduleRow, SearchRow, utcnow

from . import datasets as ds
from .service import create_search, find_or_register_dataset, register_dataset
from .spec import SearchSpec, parse_spec
from .validation import DataShape, validate_search_spec

log = logging.getLogger("actsearch.schedules")

__all__ = [
    "CRON_HELP",
    "create_schedule",
    "default_name",
    "delete_schedule",
    "due_schedules",
    "fire_schedule",
    "next_run_time",
    "pause_schedule",
    "resume_schedule",
    "schedule_runs",
    "tick",
    "check_interval",
    "validate_cron",
    "validate_template",
]

CRON_ALIASES = ("@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually")
CRON_HELP = ('use 5 fields "minute hour day-of-month month day-of-week", e.g. "0 3 * * *" '
             '(every day at 03:00), an alias such as "@daily", or 6 fields with seconds last, '
             'e.g. "* * * * * */30" (every 30 seconds)')
_FILE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq", ".npz", ".npy", ".json", ".xlsx")


# --------------------------------------------------------------------------- cron


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"timezone {name!r} is not an IANA time zone name; "
                           "use e.g. 'UTC' or 'Europe/Paris'") from None


def next_run_time(cron: str, tz: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``cron`` (read in ``tz``) names, in UTC."""
    start = after.astimezone(_zone(tz))
    nxt: datetime = croniter(cron, start).get_next(datetime)
    return nxt.astimezone(timezone.utc)


def validate_cron(cron: str, tz: str = "UTC") -> str:
    """``cron`` with its whitespace normalised, or InvalidInput quoting it with an example."""
    text = " ".join(str(cron).split())
    _zone(tz)
    if text.startswith("@"):
        if text.lower() not in CRON_ALIASES:
            raise InvalidInput(f"cron {cron!r}: unknown alias; aliases are "
                               f"{', '.join(CRON_ALIASES)}; or {CRON_HELP}")
        text = text.lower()
    else:
        fields = len(text.split(" ")) if text else 0
        if fields not in (5, 6):
            raise InvalidInput(f"cron {cron!r} has {fields} field{'s' if fields != 1 else ''}; "
                               f"{CRON_HELP}")
    try:
        next_run_time(text, tz, utcnow())
    except CroniterBadDateError:
        raise InvalidInput(f"cron {cron!r} never matches a date (e.g. 30 February); "
                           f"{CRON_HELP}") from None
    except (CroniterError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"cron {cron!r} is not a valid cron expression ({exc}); "
                           f"{CRON_HELP}") from None
    return text


def check_interval(cron: str, tz: str, min_interval_s: int, *, samples: int = 8) -> None:
    """InvalidInput when ``cron`` fires more often than every ``min_interval_s`` seconds
    (the shortest gap among its next ``samples`` firings)."""
    if min_interval_s <= 0:
        return
    times = [next_run_time(cron, tz, utcnow())]
    for _ in range(samples):
        times.append(next_run_time(cron, tz, times[-1]))
    gap = min((b - a).total_seconds() for a, b in zip(times, times[1:], strict=False))
    if gap < min_interval_s:
        raise InvalidInput(f"cron {cron!r} fires every {gap:g} s; this service allows at most "
                           f"one run every {min_interval_s} s (ACTSEARCH_LIMITS__MIN_SCHEDULE_"
                           f"INTERVAL_S); use e.g. '*/5 * * * *' for every 5 minutes")


# --------------------------------------------------------------------------- templates


def _looks_like_path(value: str) -> bool:
    return ("/" in value or "\\" in value or value.startswith((".", "~"))
            or value.lower().endswith(_FILE_SUFFIXES))


def _rerun_shape(session: Session, spec: SearchSpec, owner: str | None
                 ) -> tuple[DataShape | None, SearchSpec]:
    """The shape of the dataset a rerun would use now: its latest stored version, else the
    built-in's (from its options, nothing generated); None for a local file. With the
    spec as it would be checked: completed with a stored dataset's inputs (modality)."""
    from .service import spec_for_dataset

    if repo.dataset_ids_by_name(session, name=spec.dataset, owner=owner):
        row = repo.latest_dataset(session, name=spec.dataset, owner=owner)
        return DataShape.of_row(row), spec_for_dataset(spec, row)
    if spec.dataset in ds.BUILTINS:
        return DataShape.of_builtin(ds.estimate_builtin(spec.dataset)), spec
    return None, spec


def _check_limits(spec: SearchSpec, shape: DataShape | None, limits: Any | None,
                  training: Any | None) -> None:
    """The checks of ``POST /searches`` (one function for both: see :mod:`search.validation`)."""
    if limits is not None:
        validate_search_spec(spec, shape=shape, limits=limits, training=training,
                             where="template.spec.")


def _validate_rerun(session: Session, template: Mapping[str, Any], *, allow_files: bool,
                    limits: Any | None, training: Any | None = None,
                    owner: str | None = None) -> dict[str, Any]:
    extra = set(template) - {"kind", "spec"}
    if extra:
        raise InvalidInput(f"template: unknown keys {sorted(extra)} for kind 'rerun' "
                           "(expected 'spec')")
    raw = template.get("spec")
    if not isinstance(raw, Mapping):
        raise InvalidInput("template.spec: a rerun template needs a search spec object, e.g. "
                           '{"dataset": "digits", "architecture": "mlp:64", "trials": 32}')
    spec = parse_spec(dict(raw))
    if spec.dataset_version is not None:
        raise InvalidInput("template.spec.dataset_version: a rerun schedule always uses the "
                           "latest version of its dataset; remove dataset_version")
    if spec.warm_start_from is not None:
        raise InvalidInput("template.spec.warm_start_from: use an add_trials template to "
                           "continue a search")
    name = spec.dataset
    shape, checked = _rerun_shape(session, spec, owner)
    if shape is None:
        if not allow_files:
            what = "looks like a file path; the service does not read files from its own disk" \
                if _looks_like_path(name) else "is neither a stored dataset nor a builtin"
            raise InvalidInput(
                f"template.spec.dataset: {name!r} {what}; upload it with POST /datasets and "
                f"use the name you gave it, or use a builtin: {', '.join(ds.BUILTINS)}")
        if not Path(name).expanduser().is_file():
            raise InvalidInput(f"template.spec.dataset: {name!r} is not a stored dataset, a "
                               f"builtin ({', '.join(ds.BUILTINS)}) or an existing file")
    _check_limits(checked, shape, limits, training)
    return {"kind": "rerun", "spec": spec.model_dump(mode="json", exclude_unset=True)}


def _validate_add_trials(session: Session, template: Mapping[str, Any], *,
                         limits: Any | None, training: Any | None = None,
                         scope: str | None = None) -> dict[str, Any]:
    extra = set(template) - {"kind", "search_id", "trials"}
    if extra:
        raise InvalidInput(f"template: unknown keys {sorted(extra)} for kind 'add_trials' "
                           "(expected 'search_id' and 'trials')")
    search_id, trials = template.get("search_id"), template.get("trials")
    for key, value in (("search_id", search_id), ("trials", trials)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"template.{key}: a positive integer is required, got {value!r}")
    assert isinstance(search_id, int) and isinstance(trials, int)
    try:
        parent = repo.get_search(session, search_id=search_id, owner=scope)
    except NotFound:
        raise InvalidInput(f"template.search_id: search {search_id} not found") from None
    spec = SearchSpec.model_validate(parent.spec).model_copy(update={"trials": trials})
    shape = DataShape.of_row(repo.get_dataset(session, dataset_id=parent.dataset_id))
    _check_limits(spec, shape, limits, training)
    return {"kind": "add_trials", "search_id": search_id, "trials": trials}


def validate_template(session: Session, template: Mapping[str, Any], *, allow_files: bool = True,
                      limits: Any | None = None, training: Any | None = None,
                      owner: str | None = None, scope: str | None = None) -> dict[str, Any]:
    """The template, checked and normalised for storage (InvalidInput says what is wrong).

    ``allow_files=False`` (requests over HTTP) refuses a rerun dataset that is not
    a stored name or a builtin, as ``POST /searches`` does. ``limits`` (the
    service's ``LimitSettings``) and ``training`` (its ``TrainingSettings``) apply
    every check a direct submission gets (:func:`search.validation.validate_search_spec`).
    ``owner`` is whose dataset names a rerun resolves; ``scope`` (None: anyone's)
    whose searches an add_trials template may continue.
    """
    if not isinstance(template, Mapping):
        raise InvalidInput("template must be an object with a 'kind'")
    kind = template.get("kind")
    if kind == "rerun":
        return _validate_rerun(session, template, allow_files=allow_files, limits=limits,
                               training=training, owner=owner)
    if kind == "add_trials":
        return _validate_add_trials(session, template, limits=limits, training=training,
                                    scope=scope)
    raise InvalidInput(f"template.kind: {kind!r} is not a template kind; use 'rerun' "
                       "(with 'spec') or 'add_trials' (with 'search_id' and 'trials')")


# --------------------------------------------------------------------------- CRUD


def default_name(template: Mapping[str, Any]) -> str:
    """A readable name for a schedule created without one."""
    if template.get("kind") == "add_trials":
        return f"add {template['trials']} trials to search {template['search_id']}"
    spec = template.get("spec") or {}
    arch = spec.get("architecture", "mlp:64,64")
    return f"rerun {spec.get('dataset')} {arch if isinstance(arch, str) else arch.get('kind')}"


def create_schedule(session: Session, *, name: str | None, cron: str,
                    template: Mapping[str, Any], tz: str = "UTC", owner: str | None = None,
                    now: datetime | None = None, allow_files: bool = True,
                    limits: Any | None = None, training: Any | None = None,
                    scope: str | None = None) -> ScheduleRow:
    """Validate the cron and the template and store an active schedule of ``owner``.

    Its first firing is the next cron time after ``now`` (default: the current time).
    ``scope`` limits which searches an add_trials template may name (None: any).
    With ``limits``, an owner holding ``max_schedules_per_owner`` schedules gets 429.
    """
    cron = validate_cron(cron, tz)
    if limits is not None:
        check_interval(cron, tz, int(getattr(limits, "min_schedule_interval_s", 0)))
        cap = limits.max_schedules_per_owner
        held = repo.count_schedules(session, owner=owner)
        if held >= cap:
            raise LimitExceeded(
                f"{'owner ' + repr(owner) if owner else 'you'} already "
                f"{'has' if owner else 'have'} {held} schedules, the limit "
                f"(ACTSEARCH_LIMITS__MAX_SCHEDULES_PER_OWNER = {cap}); delete one "
                "(DELETE /schedules/{id}) or raise the limit")
    stored = validate_template(session, template, allow_files=allow_files, limits=limits,
                               training=training, owner=owner, scope=scope)
    first = next_run_time(cron, tz, now or utcnow())
    return repo.add_schedule(session, name=(name or default_name(stored))[:200], cron=cron,
                             timezone=tz, template=stored, next_run_at=first, owner=owner)


def pause_schedule(session: Session, *, schedule_id: int) -> ScheduleRow:
    """Stop firing (409 if already paused); ``next_run_at`` is cleared."""
    row = repo.get_schedule(session, schedule_id=schedule_id)
    if row.state == "paused":
        raise Conflict(f"schedule {schedule_id} is already paused")
    return repo.set_schedule_state(session, schedule_id=schedule_id, state="paused",
                                   next_run_at=None)


def resume_schedule(session: Session, *, schedule_id: int,
                    now: datetime | None = None) -> ScheduleRow:
    """Fire again from the next cron time after now (409 if active); nothing missed is replayed."""
    row = repo.get_schedule(session, schedule_id=schedule_id)
    if row.state == "active":
        raise Conflict(f"schedule {schedule_id} is already active")
    nxt = next_run_time(row.cron, row.timezone, now or utcnow())
    return repo.set_schedule_state(session, schedule_id=schedule_id, state="active",
                                   next_run_at=nxt)


def delete_schedule(session: Session, *, schedule_id: int) -> None:
    """Delete a schedule; the searches it created stay (their link is cleared)."""
    repo.delete_schedule(session, schedule_id=schedule_id)


def schedule_runs(session: Session, *, schedule_id: int, limit: int | None = 100) -> list[SearchRow]:
    """The searches a schedule created, newest first (404 for an unknown schedule)."""
    repo.get_schedule(session, schedule_id=schedule_id)
    return repo.schedule_searches(session, schedule_id=schedule_id, limit=limit)


def due_schedules(session: Session, *, now: datetime | None = None) -> list[ScheduleRow]:
    """Active schedules whose next firing time has come."""
    return repo.due_schedules(session, now=now or utcnow())


# --------------------------------------------------------------------------- firing


def _rerun_spec(sessions: sessionmaker[Session], template: Mapping[str, Any],
                owner: str | None, limits: Any, training: Any) -> SearchSpec:
    """The template's spec pinned to the latest version of its dataset right now.

    Checked against the limits first (the latest version may be wider than the one
    the schedule was made with); then the dataset is resolved (and a builtin or file
    registered) in its own committed transaction, before the Optuna study is created.
    """
    spec = parse_spec(dict(template["spec"]))
    with sessions() as session:
        shape, checked = _rerun_shape(session, spec, owner)
        validate_search_spec(checked, shape=shape, limits=limits, training=training)
    with sessions.begin() as session:
        try:
            row = repo.latest_dataset(session, name=spec.dataset, owner=owner)
        except NotFound:
            if spec.dataset in ds.BUILTINS:  # never a same-named file in the cwd
                row = register_dataset(session, dataset=ds.load_builtin(spec.dataset),
                                       name=spec.dataset, owner=owner)
            else:  # a file path (only schedules made from the local CLI)
                row = find_or_register_dataset(session, spec, owner)
        if spec.task is not None and spec.task != row.task:
            raise InvalidInput(f"dataset {row.name!r} v{row.version} is {row.task}, "
                               f"not {spec.task}")
        name, version = row.name, row.version
    return parse_spec({**spec.model_dump(mode="json"), "dataset": name,
                       "dataset_version": version, "label": None})


def _add_trials_spec(sessions: sessionmaker[Session], template: Mapping[str, Any],
                     limits: Any, training: Any) -> SearchSpec:
    """Search N's spec with M trials, warm-started from N, on N's exact dataset version."""
    with sessions() as session:
        parent = repo.get_search(session, search_id=int(template["search_id"]))
        data = repo.get_dataset(session, dataset_id=parent.dataset_id)
        raw = dict(parent.spec)
        raw.update(dataset=data.name, dataset_version=data.version, label=None,
                   trials=int(template["trials"]), warm_start_from=parent.id)
        spec = parse_spec(raw)
        validate_search_spec(spec, shape=DataShape.of_row(data), limits=limits,
                             training=training)
    return spec


def _over_active_limit(sessions: sessionmaker[Session], owner: str | None,
                       limits: Any) -> str | None:
    """Why a firing must be skipped: its owner already has the most active searches allowed."""
    with sessions() as session:
        active = repo.count_active_searches(session, owner=owner)
    cap = limits.max_active_searches_per_owner
    if active < cap:
        return None
    return (f"skipped: {'owner ' + repr(owner) if owner else 'the owner'} had {active} queued "
            f"or running searches, the limit (ACTSEARCH_LIMITS__MAX_ACTIVE_SEARCHES_PER_OWNER "
            f"= {cap}); the next cron time tries again")


def _search_name(name: str, now: datetime) -> str:
    return f"{name[:160]} @ {now.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


def fire_schedule(sessions: sessionmaker[Session], schedule_id: int, *, storage_url: str,
                  expected_next_run_at: datetime, now: datetime | None = None,
                  limits: Any | None = None, training: Any | None = None) -> int | None:
    """Claim one firing and create its search; returns the search id.

    None when another scheduler claimed it first (or it was paused meanwhile), when
    the owner already has ``max_active_searches_per_owner`` searches queued or running
    (the firing is skipped), or when creating the search failed (a limit, a missing
    dataset): then ``last_error`` says why and the schedule waits for its next cron
    time. ``limits``/``training`` default to the process's settings: a firing passes
    the same checks as ``POST /searches``.
    """
    now = now or utcnow()
    if limits is None or training is None:
        settings = get_settings()
        limits = limits if limits is not None else settings.limits
        training = training if training is not None else settings.training
    with sessions() as session:
        row = repo.get_schedule(session, schedule_id=schedule_id)
        cron, tz, template = row.cron, row.timezone, dict(row.template)
        name, owner = row.name, row.owner
    nxt: datetime | None = None
    broken: str | None = None
    try:
        nxt = next_run_time(cron, tz, now)
    except (CroniterError, ValueError, KeyError, InvalidInput) as exc:  # e.g. a zone removed
        broken = f"cannot compute the next run of {cron!r} in {tz}: {exc}"
    with sessions.begin() as session:
        if not repo.claim_schedule_run(session, schedule_id=schedule_id,
                                       expected_next_run_at=expected_next_run_at,
                                       next_run_at=nxt, now=now):
            return None
    if broken is not None:
        with sessions.begin() as session:
            repo.record_schedule_result(session, schedule_id=schedule_id, search_id=None,
                                        error=broken)
        return None
    skipped = _over_active_limit(sessions, owner, limits)
    if skipped is not None:
        log.info("schedule %s: %s", schedule_id, skipped)
        with sessions.begin() as session:
            repo.record_schedule_result(session, schedule_id=schedule_id, search_id=None,
                                        error=f"{now:%Y-%m-%d %H:%M:%S} UTC: {skipped}")
        return None
    try:
        if template.get("kind") == "add_trials":
            spec = _add_trials_spec(sessions, template, limits, training)
        else:
            spec = _rerun_spec(sessions, template, owner, limits, training)
        with sessions.begin() as session:
            search = create_search(session=session, spec=spec, storage_url=storage_url,
                                   owner=owner, name=_search_name(name, now))
            search_id = search.id
            repo.record_schedule_result(session, schedule_id=schedule_id, search_id=search_id,
                                        error=None)
    except Exception as exc:  # recorded, never raised: the other schedules still fire
        detail = exc.detail if isinstance(exc, ActsearchError) else f"{type(exc).__name__}: {exc}"
        log.warning("schedule %s could not create its search: %s", schedule_id, detail)
        with sessions.begin() as session:
            repo.record_schedule_result(session, schedule_id=schedule_id, search_id=None,
                                        error=f"{now:%Y-%m-%d %H:%M:%S} UTC: {detail}"[:2000])
        return None
    log.info("schedule %s created search %s", schedule_id, search_id)
    return search_id


def tick(sessions: sessionmaker[Session], *, storage_url: str,
         now: datetime | None = None) -> list[int]:
    """Fire every due schedule once; returns the ids of the searches created (pending).

    Safe to call from several processes at once (each firing is claimed) and
    never raises for one schedule's failure: that goes to its ``last_error``.
    """
    now = now or utcnow()
    with sessions() as session:
        due = [(r.id, r.next_run_at) for r in due_schedules(session, now=now)
               if r.next_run_at is not None]
    created: list[int] = []
    for schedule_id, expected in due:
        try:
            search_id = fire_schedule(sessions, schedule_id, storage_url=storage_url,
                                      expected_next_run_at=expected, now=now)
        except Exception:  # the database itself failing: log, go on with the others
            log.exception("schedule %s: firing failed", schedule_id)
            continue
        if search_id is not None:
            created.append(search_id)
    return created
