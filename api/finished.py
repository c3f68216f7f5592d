"""Responses about a finished search, kept per API process: they no longer change.

A complete, failed or cancelled search trains nothing more, so its leaderboard and
the intermediate values of its study are final; only the analysis, which runs after
the search, can still add to what the search's pages show, so its state is part of
the key. Reading those from the database again costs the API 10-20 ms of CPU each
(Optuna loads every trial of the study), which a dashboard polling a finished search
would pay every few seconds. Responses about unfinished searches are never kept.

The caller checks ownership before asking (the search row is read with the owner's
scope), so a cached response is only handed to someone allowed to see it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from store.tables import SEARCH_TERMINAL_STATES

T = TypeVar("T")
CACHE_SIZE = 256  # responses; each is a few kB to a few hundred kB


class FinishedSearchCache:
    """Least recently used responses, keyed by what they are, the search and its end."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()  # the slow-operation threads share it with the loop

    def get(self, row: Any, kind: str, params: Hashable, make: Callable[[], T]) -> T:
        """``make()``, or what it returned before for this finished search and ``params``."""
        found = self.peek(row, kind, params)
        if found is not None:
            return found
        value = make()
        self.put(row, kind, params, value)
        return value

    def peek(self, row: Any, kind: str, params: Hashable) -> Any | None:
        """The kept response, or None (always None for an unfinished search)."""
        key = self._key(row, kind, params)
        if key is None:
            return None
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, row: Any, kind: str, params: Hashable, value: Any) -> None:
        """Keep ``value`` if the search is finished (for responses made asynchronously)."""
        key = self._key(row, kind, params)
        if key is None:
            return
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    @staticmethod
    def _key(row: Any, kind: str, params: Hashable) -> Hashable | None:
        if row.state not in SEARCH_TERMINAL_STATES:
            return None
        return (kind, row.id, row.state, row.finished_at, row.analysis_state, params)
