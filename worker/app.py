"""The Celery app, built from the shared Settings and its ``worker`` section.

Choices and why:

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a task's message is
  acknowledged only once it has finished, so a message is not lost with a worker
  that took it. That is not what recovers a killed worker's population: Redis
  redelivers an unacknowledged message only after the visibility timeout (hours,
  below), and a redelivery finds the population no longer ``pending`` and does
  nothing. The reconciler re-queues lost work as a fresh population after
  ``stale_after_s``; a prefork child that dies under a live parent is noticed at
  once (``worker.tasks.PopulationRequest``).
* ``worker_prefetch_multiplier=1`` and ``worker_disable_prefetch``: a busy
  worker (concurrency 1 per GPU) holds no waiting message, so the populations
  of one search spread over every free worker.
* Redis ``visibility_timeout`` above the longest task (``task_deadline_s`` plus
  a margin, :attr:`WorkerSettings.visibility_timeout_s`), so no running task is
  handed to a second worker.
* JSON only (no pickle): task arguments are plain ids.
* No result backend: tasks write their outcome to the database; nobody waits on
  a task result (never wait on subtasks).
* The engine's own deadline (``task_deadline_s``) stops a long population cleanly,
  keeping the epochs trained. ``ACTSEARCH_TRAINING__POPULATION_TIME_LIMIT_S`` times
  the training itself (``search.coordinator.limits.population_time_limit``: a population past
  it is failed with a "time limit" error and the search goes on); Celery's hard
  time limit, well after it, is the last resort for a child stuck in native code
  (killed; the reconciler then fails and retries the population).
* Two queues: populations on ``queue``; ``search.start``, ``search.reconcile`` and
  ``search.analyse`` on ``control_queue``, consumed by the same workers, so control
  work never waits behind a backlog of populations. A search's analysis (seconds of
  CPU, bounded by its trial count) goes there too: on a busy cluster it would
  otherwise wait for every queued population of every other search.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from core.settings import Settings, WorkerSettings, get_settings

RUN_POPULATION = "search.run_population"
START = "search.start"
RECONCILE = "search.reconcile"
ANALYSE = "search.analyse"  # a complete search's fits and distillation (search.analysis.run)
SCHEDULES_TICK = "schedules.tick"  # worker/schedule_tasks.py
GPUS_ENV = "ACTSEARCH_WORKER_GPUS"  # set by `actsearch worker --gpu`; one per child process
HARD_LIMIT_GRACE_S = 120.0  # hard limit = training limit + this (or twice it, if more)


def create_app(
    settings: Settings | None = None, worker_settings: WorkerSettings | None = None
) -> Celery:
    """A Celery app for ``settings.broker_url``; the tasks are in :mod:`worker.tasks`."""
    settings = settings or get_settings()
    ws = worker_settings or settings.worker
    # Without a broker (embedded mode) the app still builds, on an in-memory
    # transport that connects nowhere; the CLI refuses to start a worker then.
    app = Celery("actsearch", broker=settings.broker_url or "memory://", include=["worker.tasks", "worker.schedule_tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_disable_prefetch=True,
        broker_transport_options={"visibility_timeout": ws.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        # A broker blip must not abort a population: its outcome goes to the
        # database, and a redelivered message finds the population taken.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_default_queue=ws.queue,
        task_routes={
            START: {"queue": ws.control_queue},
            RECONCILE: {"queue": ws.control_queue},
            ANALYSE: {"queue": ws.control_queue},
            SCHEDULES_TICK: {"queue": ws.control_queue},
        },
        beat_schedule={
            "reconcile": {
                "task": RECONCILE,
                "schedule": ws.reconcile_interval_s,
                # A reconcile nobody picked up in time is superseded by the next one.
                "options": {"expires": ws.reconcile_interval_s, "queue": ws.control_queue},
            },
            # Recurring searches live in the database (survive restarts); beat only ticks.
            "schedules": {
                "task": SCHEDULES_TICK,
                "schedule": settings.schedule_tick_s,
                "options": {"expires": settings.schedule_tick_s, "queue": ws.control_queue},
            },
        },
        task_time_limit=None,
        task_soft_time_limit=None,
        task_annotations=_population_time_limits(settings),
        worker_send_task_events=True,  # Flower
        task_send_sent_event=True,
        timezone="UTC",
        enable_utc=True,
    )
    return app


def _population_time_limits(settings: Settings) -> dict[str, dict[str, float]]:
    """Celery's hard time limit for population tasks: the training limit plus start-up and
    the final writes (the training limit itself is enforced inside the task)."""
    limit = settings.training.population_time_limit_s
    if limit is None:
        return {}
    return {RUN_POPULATION: {"time_limit": limit + max(HARD_LIMIT_GRACE_S, limit)}}


@lru_cache(maxsize=1)
def get_app() -> Celery:
    """The process-wide app (``celery -A worker.app`` finds it as ``app``)."""
    return create_app()


def __getattr__(name: str) -> Any:
    # `app` is built on first use, so importing this module reads no settings.
    if name == "app":
        return get_app()
    raise AttributeError(name)


@worker_process_init.connect
def _pick_gpu(**_: Any) -> None:
    """In each prefork child: see exactly one GPU, before anything imports torch.

    ``actsearch worker --gpu 0,1`` runs one child per listed GPU; child ``i``
    gets ``CUDA_VISIBLE_DEVICES`` = the i-th entry. The parent never imports torch.
    """
    gpus = [g for g in os.environ.get(GPUS_ENV, "").split(",") if g.strip()]
    if not gpus:
        return
    from billiard.process import current_process

    index = getattr(current_process(), "index", 0) or 0
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)].strip()
