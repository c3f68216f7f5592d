"""Thin Celery tasks: plain ids in, the work done by :mod:`search.coordinator`.

Each task loads what it needs from the database, calls ``search/``, and only
after that call has committed enqueues the follow-up populations it returned
(enqueue after commit; never wait on a subtask). Retries are for transient
errors only (the database or the broker unreachable); a population that fails
for any other reason is recorded as failed, never retried blindly.

``search.coordinator`` (and with it torch) is imported inside the tasks: the
worker's parent process imports this module and must never initialise CUDA.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from billiard.exceptions import WorkerLostError
from celery import Task, shared_task
from celery.signals import worker_process_init
from celery.utils.time import get_exponential_backoff_interval
from celery.worker.request import Request
from sqlalchemy.orm import Session, sessionmaker

from core.errors import Unreachable
from core.settings import WorkerSettings, get_settings
from worker.app import ANALYSE, RECONCILE, RUN_POPULATION, START, get_app

log = logging.getLogger(__name__)

BROKER_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    *BROKER_ERRORS,
)
# Transient errors are retried by hand (_retry_transient, with Celery's retry and
# backoff helper), bounded by a time budget rather than a count: a count of jittered
# retries says nothing about how long an outage they cover.
RETRY: dict[str, Any] = {"max_retries": None}


def is_transient_error(exc: BaseException) -> bool:
    """The database or the broker unreachable, also when wrapped (Optuna, an interrupted claim)."""
    if isinstance(exc, BROKER_ERRORS):
        return True
    from search.coordinator.steps import is_transient

    return is_transient(exc)


def publish_retry_policy(ws: WorkerSettings) -> dict[str, float | int]:
    """kombu's publish retries (0, 1, 2, ... s, capped) spanning the transient retry budget.

    A task that cannot reach the broker to enqueue its follow-ups (or its own
    retry) keeps trying for about as long as it would retry a database outage.
    """
    cap = ws.transient_retry_max_backoff_s
    waited, tries = 0.0, 0
    while waited < ws.transient_retry_budget_s:
        waited += min(float(tries), cap)
        tries += 1
    return {"max_retries": max(tries, 3), "interval_start": 0, "interval_step": 1,
            "interval_max": cap}


def _retry_transient(task: Task, exc: BaseException, *, since: float | None,
                     **carry: Any) -> NoReturn:
    """Retry ``task`` after a transient error, with capped exponential backoff and full jitter.

    ``since`` is when the first try of this outage failed (it travels with the
    retries as the ``transient_since`` keyword); once ``transient_retry_budget_s``
    has passed the task fails with :class:`Unreachable`, naming what was
    unreachable and for how long (not Optuna's "e.g. exceeding max length").
    ``carry``: further keywords for the retry (the interrupted claim to release).
    """
    from search.coordinator.steps import root_cause

    ws = get_settings().worker
    now = time.time()
    since = now if since is None else since
    down_s = now - since
    cause = root_cause(exc)
    what = "broker" if isinstance(cause, BROKER_ERRORS) else "database"
    detail = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0] if str(cause) else ''}"
    if down_s >= ws.transient_retry_budget_s:
        raise Unreachable(
            f"the {what} was unreachable for {down_s:.0f} s ({task.request.retries} retries "
            f"over ACTSEARCH_WORKER__TRANSIENT_RETRY_BUDGET_S={ws.transient_retry_budget_s:g}): "
            f"{detail}") from exc
    countdown = get_exponential_backoff_interval(
        factor=1, retries=task.request.retries,
        maximum=int(ws.transient_retry_max_backoff_s), full_jitter=True)
    log.warning("%s[%s]: the %s is unreachable (%s); retry %d in %d s (%.0f of %g s spent)",
                task.name, task.request.id, what, detail, task.request.retries + 1, countdown,
                down_s, ws.transient_retry_budget_s)
    kwargs = {**(task.request.kwargs or {}), **carry, "transient_since": since}
    raise task.retry(args=task.request.args, kwargs=kwargs, exc=exc, countdown=countdown,
                     retry_policy=publish_retry_policy(ws))


@dataclass
class _Resources:
    """What every task in this process shares: made once per (child) process."""

    sessions: sessionmaker[Session]
    database_url: str
    worker: WorkerSettings
    device: str


_resources: _Resources | None = None
_torch_ready = False


@worker_process_init.connect
def _forget_parent_state(**_: Any) -> None:
    """A forked child must not reuse the parent's connections (it has none by design)."""
    global _resources, _torch_ready
    _resources = None
    _torch_ready = False


def resources() -> _Resources:
    """The session factory and settings of this process (created on first use, after fork)."""
    global _resources
    if _resources is None:
        from store.db import make_engine, session_factory

        url = get_settings().resolved_database_url
        ws = get_settings().worker
        _resources = _Resources(session_factory(make_engine(url)), url, ws, ws.device)
    return _resources


def _prepare_torch(res: _Resources) -> str:
    """Import torch in this child once, with its thread count; returns the device to train on.

    One torch thread per worker process unless ``ACTSEARCH_TORCH_THREADS`` says
    otherwise: workers are scaled by process (one per GPU or core), and several
    processes each spawning a thread per core oversubscribe the CPU.
    """
    global _torch_ready
    import torch

    if not _torch_ready:
        from search.coordinator.child import configure_training_process

        settings = get_settings()
        # This child trains (the parent does not): its priority drops; compiled kernels
        # stay in the process across tasks, and on disk for the next process (a restarted
        # worker, another worker sharing the directory).
        configure_training_process(threads=settings.torch_threads or 1,
                                   nice=settings.training.nice,
                                   compile_dir=settings.compile_dir)
        _torch_ready = True
    if res.device != "auto":
        return res.device
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def enqueue_populations(population_ids: Iterable[int],
                        sessions: sessionmaker[Session] | None = None) -> list[str]:
    """Send one ``search.run_population`` per id, with the task id planned on its row.

    Call only after the rows are committed: a worker may pick the message up at once.
    """
    from store import repo

    ids = list(population_ids)
    if not ids:
        return []
    sessions = sessions or resources().sessions
    with sessions() as session:
        task_ids = [repo.get_population(session, population_id=pid).task_id for pid in ids]
    # By name on this process's app (not the task proxy's "current app"), so the
    # broker is always the configured one.
    app = get_app()
    policy = publish_retry_policy(get_settings().worker)
    return [str(app.send_task(RUN_POPULATION, args=[pid], task_id=task_id,
                              retry=True, retry_policy=policy).id)
            for pid, task_id in zip(ids, task_ids, strict=True)]


def enqueue_analyses(search_ids: Iterable[int]) -> list[int]:
    """Send one ``search.analyse`` per search (after the commit that made it pending).

    Duplicates are harmless: the analysis lock admits one at a time, and a finished
    analysis is left as it is.
    """
    ids = list(dict.fromkeys(search_ids))
    if not ids:
        return []
    app = get_app()
    policy = publish_retry_policy(get_settings().worker)
    for search_id in ids:
        app.send_task(ANALYSE, args=[search_id], retry=True, retry_policy=policy)
    return ids


def _analysis_pending(sessions: sessionmaker[Session], search_id: int) -> bool:
    """Whether a search is complete with its analysis still pending (to enqueue it)."""
    from store import repo

    with sessions() as session:
        row = repo.get_search(session, search_id=search_id)
        return row.state == "complete" and row.analysis_state == "pending"


def _worker_name(task: Task) -> str:
    return f"{task.request.hostname or 'worker'}:{os.getpid()}"


class PopulationRequest(Request):
    """A population task as the worker's *parent* process sees it: it notices a dead child.

    When the prefork child training a population dies (the OOM killer, a segfault in
    native code, a SIGKILL of that process), billiard reports ``WorkerLostError`` here
    at once. The population's row still says ``running`` under that child's name;
    rather than wait ``stale_after_s`` for its heartbeat to go stale, the parent
    marks it for the reconciler and sends a reconciler pass now, which fails its
    trials and queues a fresh population. Celery requeues the message itself
    (``task_reject_on_worker_lost``); that redelivery finds the population taken and
    does nothing. A whole worker killed (parent included) is left to ``stale_after_s``.
    """

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> Any:
        exc = getattr(exc_info.exception, "exc", exc_info.exception)  # ExceptionWithTraceback
        if isinstance(exc, WorkerLostError) and self.worker_pid:
            child_lost(f"{self.hostname}:{self.worker_pid}", f"{type(exc).__name__}: {exc}")
        return super().on_failure(exc_info, send_failed_event=send_failed_event,
                                  return_ok=return_ok)


def child_lost(worker: str, reason: str) -> list[int]:
    """In the worker's parent: mark a dead child's populations and send a reconciler pass.

    A short-lived engine (no pool left behind for the next forked child to inherit),
    a short connect timeout (this runs on the parent's event loop). Never raises:
    the reconciler's staleness limit still covers what this could not mark.
    """
    from store import repo
    from store.db import make_engine, session_factory

    url = get_settings().resolved_database_url
    extra: dict[str, Any] = {}
    if url.startswith("postgresql"):
        extra["connect_args"] = {"connect_timeout": 5}
    engine = make_engine(url, **extra)
    try:
        with session_factory(engine).begin() as session:
            ids = repo.expire_worker_populations(
                session, worker=worker, error=f"worker {worker} lost: its process died ({reason})")
        if ids:
            log.warning("worker process %s died training populations %s: reconciling now",
                        worker, ids)
            get_app().send_task(RECONCILE)
        return ids
    except Exception as exc:  # noqa: BLE001 - the staleness limit is the fallback
        log.warning("could not mark the populations of dead process %s: %s", worker, exc)
        return []
    finally:
        engine.dispose()


@shared_task(name=RUN_POPULATION, bind=True, Request=PopulationRequest, **RETRY)
def run_population_task(self: Task, population_id: int, release: dict[str, Any] | None = None,
                        transient_since: float | None = None) -> dict[str, Any]:
    """Train one population, then advance its search and enqueue what that planned.

    A database (or broker) outage is retried for ``transient_retry_budget_s``. A try
    cut short after its claim passes the claim on (``release``): the retry, on any
    worker, hands the population back and trains it again as soon as the database
    answers, instead of leaving it ``running`` until the reconciler's staleness limit.
    """
    from search.coordinator.steps import ClaimInterrupted, ClaimToken

    token = ClaimToken(**release) if release else None
    try:
        return _run_population(self, population_id, token)
    except Exception as exc:
        if not is_transient_error(exc):
            raise
        if isinstance(exc, ClaimInterrupted):
            token = exc.token
        carry = {"release": asdict(token)} if token is not None else {}
        _retry_transient(self, exc, since=transient_since, **carry)


def _run_population(task: Task, population_id: int, release: Any) -> dict[str, Any]:
    res = resources()
    device = _prepare_torch(res)
    from search.coordinator import advance_search, run_population
    from search.coordinator.limits import cap_population_memory, release_memory

    training = get_settings().training
    cap_population_memory(training.memory_limit_mb)
    outcome = run_population(
        res.sessions, population_id=population_id, storage_url=res.database_url,
        worker_name=_worker_name(task), task_id=task.request.id,
        heartbeat_interval_s=res.worker.heartbeat_interval_s,
        max_task_s=res.worker.task_deadline_s, device=device,
        time_limit_s=training.population_time_limit_s,
        memory_limit_mb=training.memory_limit_mb, release=release,
    )
    if outcome.status == "failed":
        release_memory()
    follow: list[int] = []
    if outcome.search_id is not None and outcome.status != "lost":
        follow = advance_search(res.sessions, search_id=outcome.search_id,
                                storage_url=res.database_url)
    enqueue_populations(follow, res.sessions)
    if outcome.search_id is not None and not follow and _analysis_pending(res.sessions,
                                                                          outcome.search_id):
        enqueue_analyses([outcome.search_id])  # the search just completed: fits, distillation
    log.info("population %s: %s; enqueued %s", population_id, outcome.status, follow)
    return {"population_id": population_id, "status": outcome.status, "enqueued": follow}


@shared_task(name=ANALYSE, bind=True, **RETRY)
def analyse_search_task(self: Task, search_id: int, transient_since: float | None = None
                        ) -> dict[str, Any]:
    """A complete search's fits and distillation (:func:`search.analysis.run.analyse_search`).

    A database outage is retried for the retry budget (the analysis went back to
    pending, or stays running with its lock free: either is resumed). Other errors
    are the analysis's own: it ends ``failed`` with them, the search stays complete.
    """
    try:
        res = resources()
        _prepare_torch(res)
        from search.analysis.run import analyse_search

        report = analyse_search(res.sessions, search_id)
    except Exception as exc:
        if not is_transient_error(exc):
            raise
        _retry_transient(self, exc, since=transient_since)
    log.info("analysis of search %s: %s (%d fitted, %d distilled, %.1f s)", search_id,
             report.state, report.fitted, report.distilled, report.seconds)
    return {"search_id": search_id, "state": report.state, "fitted": report.fitted,
            "distilled": report.distilled}


@shared_task(name=START, bind=True, **RETRY)
def start_search_task(self: Task, search_id: int, transient_since: float | None = None
                      ) -> dict[str, Any]:
    """:func:`_start_search`, retrying a database or broker outage for the retry budget."""
    try:
        return _start_search(self, search_id)
    except Exception as exc:
        if not is_transient_error(exc):
            raise
        _retry_transient(self, exc, since=transient_since)


def _start_search(self: Task, search_id: int) -> dict[str, Any]:
    """Plan a pending search's populations (commit), then enqueue them.

    A redelivered start plans nothing (the search is no longer pending). A
    *retried* one re-sends the pending populations, since the first try may have
    committed the plan and then failed to reach the broker; duplicates are harmless.
    """
    from search.coordinator import plan_search
    from store import repo

    res = resources()
    with res.sessions.begin() as session:
        ids = plan_search(session, search_id=search_id)
    if not ids and self.request.retries:
        with res.sessions() as session:
            ids = [p.id for p in repo.list_populations(session, search_id=search_id,
                                                       state="pending")]
    enqueue_populations(ids, res.sessions)
    return {"search_id": search_id, "enqueued": ids}


def _queue_is_empty(app: Any, queue: str) -> bool:
    """True when the broker holds no waiting message on ``queue`` (False when unsure)."""
    try:
        with app.connection_for_read() as conn:
            declared = conn.default_channel.queue_declare(queue=queue, passive=True)
            return int(declared.message_count) == 0
    except Exception as exc:  # noqa: BLE001 - a transport without counts: unsure
        # No such queue: nothing waits in it. That is what a Redis restarted without
        # persistence looks like (its lists and bindings are gone), exactly when
        # the pending populations' messages must be sent again.
        return getattr(exc, "reply_code", None) == 404 or "NOT_FOUND" in str(exc)


@shared_task(name=RECONCILE, bind=True)
def reconcile_task(self: Task) -> dict[str, Any]:
    """:func:`_reconcile`; not retried: beat sends the next pass in ``reconcile_interval_s``."""
    try:
        return _reconcile(self)
    except Exception as exc:
        if not is_transient_error(exc):
            raise
        from search.coordinator.steps import root_cause

        cause = root_cause(exc)
        log.warning("reconcile skipped, the database or broker is unreachable: %s: %s",
                    type(cause).__name__, str(cause).strip().splitlines()[0] if str(cause) else "")
        return {"skipped": type(cause).__name__}


def _reconcile(self: Task) -> dict[str, Any]:
    """One reconciler pass (beat sends it every ``reconcile_interval_s``); see ``search.coordinator.reconcile``.

    Besides that pass: pending populations whose messages were lost (the queue
    is empty but they are still waiting long after creation, e.g. after a broker
    restart without persistence) are sent again, and pending searches re-started.
    """
    from search.coordinator import reconcile
    from store import repo

    res = resources()
    _prepare_torch(res)  # finishing a search scores the winner on test
    ws = res.worker
    report = reconcile(res.sessions, storage_url=res.database_url,
                       stale_after_s=ws.stale_after_s, max_attempts=ws.max_attempts)
    enqueue_populations(report.enqueue, res.sessions)
    resent: list[int] = []
    if _queue_is_empty(get_app(), ws.queue):
        with res.sessions() as session:
            resent = [p.id for p in repo.waiting_populations(session,
                                                             older_than_s=ws.stale_after_s)
                      if p.id not in report.enqueue]
        enqueue_populations(resent, res.sessions)
    for search_id in report.restart:
        get_app().send_task(START, args=[search_id])
    analyses = _analyses_to_send(res.sessions, report.advanced, ws)
    enqueue_analyses(analyses)
    summary = {"stale": report.stale, "failed_trials": report.failed_trials,
               "enqueued": report.enqueue, "exhausted": report.exhausted,
               "restarted": report.restart, "resent": resent, "advanced": report.advanced,
               "recorded_trials": report.recorded_trials, "analyses": analyses}
    if any(v for k, v in summary.items() if k != "advanced"):
        log.warning("reconcile: %s", summary)
    return summary


def _analyses_to_send(sessions: sessionmaker[Session], advanced: Iterable[int],
                      ws: WorkerSettings) -> list[int]:
    """The analyses this reconciler pass sends.

    * searches it just completed (advanced to ``complete``, analysis pending);
    * analyses ``running`` whose analysis lock nobody holds (their worker died);
    * pending ones whose search finished over ``stale_after_s`` ago, when the control
      queue is empty (their message was lost, e.g. a broker restarted without
      persistence; while it holds messages, theirs may still be waiting there).
    """
    from search.analysis.run import orphaned
    from store import repo
    from store.tables import utcnow

    out = [sid for sid in advanced if _analysis_pending(sessions, sid)]
    with sessions() as session:
        rows = [(r.id, r.analysis_state, r.finished_at)
                for r in repo.searches_with_analysis(session, states=("pending", "running"))
                if r.state == "complete" and r.id not in out]
    queue_empty: bool | None = None
    for sid, state, finished_at in rows:
        if state == "running":
            if orphaned(sessions, sid):
                out.append(sid)
            continue
        old = finished_at is None or (utcnow() - finished_at).total_seconds() > ws.stale_after_s
        if old:
            if queue_empty is None:
                queue_empty = _queue_is_empty(get_app(), ws.control_queue)
            if queue_empty:
                out.append(sid)
    return out
