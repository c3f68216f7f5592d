"""The distributed scheduler: ``schedules.tick``, sent by ``actsearch beat``.

Beat sends the task every few seconds (:func:`beat_entry`); whichever worker
takes it fires the due schedules through :func:`search.schedules.tick` (each
firing is claimed in the database, so overlapping ticks, or a tick run by an
embedded runner on the same database, never fire one schedule twice) and then,
after those searches are committed, hands each to the workers with
:func:`worker.enqueue.submit_search`. A search that cannot be enqueued (broker
down) stays pending and the reconciler starts it later.

``search.schedules`` (and with it torch) is imported inside the task: a
worker's parent process imports this module and must never initialise CUDA.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from worker.tasks import resources

log = logging.getLogger(__name__)

TICK = "schedules.tick"
DEFAULT_TICK_S = 15.0


def beat_entry(interval_s: float = DEFAULT_TICK_S, queue: str | None = None) -> dict[str, Any]:
    """A ``beat_schedule`` entry for the tick; a tick nobody ran in time is superseded."""
    options: dict[str, Any] = {"expires": interval_s}
    if queue is not None:
        options["queue"] = queue
    return {"task": TICK, "schedule": interval_s, "options": options}


@shared_task(name=TICK, bind=True)
def tick_schedules_task(self: Task) -> dict[str, Any]:
    """Fire due schedules (commit), then enqueue the searches they created.

    Not retried when the database is unreachable: beat sends the next tick soon, and
    a due schedule is still due then.
    """
    from search.schedules import tick
    from worker.enqueue import submit_search

    res = resources()
    created = tick(res.sessions, storage_url=res.database_url)
    enqueued: list[int] = []
    for search_id in created:
        try:
            submit_search(search_id)
            enqueued.append(search_id)
        except Exception as exc:  # broker down: the reconciler starts pending searches
            log.warning("schedules: search %s created but not enqueued (%s: %s)",
                        search_id, type(exc).__name__, exc)
    if created:
        log.info("schedules: created %s, enqueued %s", created, enqueued)
    return {"created": created, "enqueued": enqueued}


__all__ = ["DEFAULT_TICK_S", "TICK", "beat_entry", "tick_schedules_task"]
