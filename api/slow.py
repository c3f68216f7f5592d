"""Slow operations (uploads, built-in generation, exports, importance) kept off the request threads.

FastAPI runs sync routes on one shared thread pool (40 threads). Without a bound, one
owner sending 48 generation requests at once filled it, and every other owner's reads
queued behind them (72 s for ``GET /searches/1``). Here each owner may have at most
``max_slow_operations_per_owner`` slow operations in flight (more get 429 with
``Retry-After``), and they run on a pool of their own (``slow_operation_threads``),
so the request threads stay free for reads whatever the slow ones do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from core.errors import LimitExceeded

T = TypeVar("T")

#: What a refused caller is told to wait: slow operations take seconds.
RETRY_AFTER_S = 2.0


class SlowOperations:
    """A per-owner in-flight bound plus the thread pool slow work runs on."""

    def __init__(self, *, per_owner: int, threads: int) -> None:
        self.per_owner = per_owner
        self._in_flight: dict[str, int] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="actsearch-slow")
        self._shared: dict[Hashable, asyncio.Future[Any]] = {}  # see run_shared

    def in_flight(self, owner: str | None) -> int:
        with self._lock:
            return self._in_flight.get(owner or "", 0)

    @contextlib.contextmanager
    def slot(self, owner: str | None, what: str) -> Iterator[None]:
        """Hold one of ``owner``'s slots for the block; LimitExceeded (429) if none is free."""
        key = owner or ""
        with self._lock:
            held = self._in_flight.get(key, 0)
            if held >= self.per_owner:
                raise LimitExceeded(
                    f"{what}: {'owner ' + repr(owner) if owner else 'you'} already "
                    f"{'has' if owner else 'have'} {held} slow operation(s) in flight (uploads, "
                    f"built-in generation, exports, importance), the limit "
                    f"(ACTSEARCH_LIMITS__MAX_SLOW_OPERATIONS_PER_OWNER = {self.per_owner}); "
                    "wait for one to finish and retry", retry_after_s=RETRY_AFTER_S)
            self._in_flight[key] = held + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._in_flight[key] - 1
                if left:
                    self._in_flight[key] = left
                else:
                    del self._in_flight[key]

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the slow pool (the caller holds a slot)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def run(self, owner: str | None, what: str, fn: Callable[..., T], /,
                  *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the slow pool, holding one of ``owner``'s slots."""
        with self.slot(owner, what):
            return await self.call(fn, *args, **kwargs)

    async def run_shared(self, key: Hashable, owner: str | None, what: str,
                         fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """:meth:`run`, shared by the callers that ask for the same ``key`` meanwhile.

        A request that arrives while the same work runs (dashboards poll) waits for it
        instead of taking another of the owner's slots, or a 429 once they are spent.
        Event loop only.
        """
        task = self._shared.get(key)
        if task is None:
            task = asyncio.ensure_future(self.run(owner, what, fn, *args, **kwargs))
            self._shared[key] = task
            task.add_done_callback(lambda _: self._shared.pop(key, None))
        return await asyncio.shield(task)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
