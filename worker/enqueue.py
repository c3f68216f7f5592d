"""What the API calls in distributed mode: hand a committed search to the workers.

Only the broker is touched here (no database, no torch), so the API process
stays light; the workers plan and train.
"""

from __future__ import annotations

from core.settings import get_settings
from worker.app import START, get_app


def submit_search(search_id: int) -> str:
    """Queue ``search.start`` for a search whose row (state pending) is already committed.

    Returns the task id. Enqueue after commit: a worker may start at once, and
    must find the row. If the broker is down this raises; the search stays
    pending and the reconciler re-starts it once the broker is back.
    """
    ws = get_settings().worker
    result = get_app().send_task(START, args=[search_id], queue=ws.control_queue)
    return str(result.id)


__all__ = ["submit_search"]
