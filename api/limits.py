"""Per-owner request rate limits: one token bucket per owner, kept in this API process.

The buckets live in memory, so each API process (each ``--workers`` process, each
replica) limits on its own: N processes allow up to N times the configured rate.
That is the usual trade for a limiter with no shared store on the hot path; put a
proxy with a shared limiter in front when one global figure matters. A token
bucket is a few lines, so it is written here rather than adding a dependency.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class TokenBuckets:
    """``rate`` tokens a second up to ``burst`` per key; :meth:`take` spends one.

    Thread-safe (FastAPI runs sync dependencies in a thread pool). Memory stays
    bounded: when more than ``max_keys`` keys are held, buckets that have refilled
    completely (and so carry no state worth keeping) are dropped.
    """

    def __init__(self, rate: float, burst: int, *, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str) -> float | None:
        """Spend one token of ``key``: None if allowed, else seconds until one is available."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > self.max_keys:
                    self._prune(now)
                return None
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [k for k, (t, at) in self._buckets.items()
                if t + (now - at) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` takes whole seconds: round up, at least 1."""
    return str(max(1, math.ceil(seconds)))
