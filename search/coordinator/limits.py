"""Guards on a training process: CPU priority, a memory cap, and readable failure messages.

Both modes train in child processes (the embedded coordinator's children, the
Celery worker's prefork children). Each applies :func:`apply_process_limits` once
at start, so a model too big for the machine fails inside that process with an
allocation error, which :func:`describe_failure` turns into an "out of memory"
message stored on the population and its trials, instead of the kernel's OOM
killer taking down whatever else runs there (the API, the database).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import traceback
from collections.abc import Iterator

from core.errors import public_message

log = logging.getLogger(__name__)

__all__ = [
    "OUT_OF_MEMORY",
    "PopulationTimeLimit",
    "TIME_LIMIT",
    "apply_process_limits",
    "cap_population_memory",
    "describe_failure",
    "is_out_of_memory",
    "population_time_limit",
    "release_memory",
    "time_limit_message",
]

OUT_OF_MEMORY = "out of memory"
TIME_LIMIT = "time limit"
# What PyTorch's allocators say when an allocation fails (CPU and CUDA).
_OOM_MARKERS = ("can't allocate memory", "out of memory", "cannot allocate memory")


def apply_process_limits(*, nice: int = 0) -> None:
    """Lower this process's CPU priority by ``nice`` (once, at the training process's start)."""
    if nice > 0:
        try:
            os.nice(nice)
        except OSError as exc:  # pragma: no cover - not permitted in some sandboxes
            log.warning("could not lower the training priority: %s", exc)


def _data_size_bytes() -> int | None:
    """This process's ``VmData`` (what ``RLIMIT_DATA`` is checked against), Linux only."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def cap_population_memory(memory_limit_mb: int | None) -> None:
    """Let the population about to train allocate at most ``memory_limit_mb`` more memory.

    ``RLIMIT_DATA`` (heap and private anonymous mappings, where tensors live;
    shared libraries do not count) rather than ``RLIMIT_AS``, which also counts
    the address space torch reserves without using. The cap is set afresh before
    each population on top of what the process already holds, so memory a failed
    population left fragmented cannot make the next one fail. Never raises: a
    platform without these calls trains unguarded, with a warning.
    """
    if memory_limit_mb is None:
        return
    try:
        import resource

        base = _data_size_bytes()
        if base is None:
            raise OSError("no /proc/self/status")
        limit = base + int(memory_limit_mb) * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (ImportError, OSError, ValueError) as exc:  # pragma: no cover - non-Linux
        log.warning("could not cap training memory at %s MB: %s", memory_limit_mb, exc)


def release_memory() -> None:
    """Hand freed memory back to the system after a failed population.

    Without this, heap pages freed by the population that ran out of memory stay
    counted against the cap, and the next population in the same process could fail
    for want of memory it does not use. (glibc only; elsewhere a no-op.)
    """
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def is_out_of_memory(exc: BaseException) -> bool:
    """True for an allocation failure: MemoryError, or torch's allocator RuntimeError."""
    if isinstance(exc, MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MARKERS)


def describe_failure(exc: BaseException, *, memory_limit_mb: int | None = None) -> str:
    """The error stored on a failed population: what went wrong, in words a user can act on.

    The traceback goes to this process's log, not into the stored message: trial and
    search errors are served to users, and a traceback shows the server's file paths.
    """
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=6))
    log.error("population failed: %s", tb.rstrip())
    if is_out_of_memory(exc):
        cap = (f" (ACTSEARCH_TRAINING__MEMORY_LIMIT_MB={memory_limit_mb})"
               if memory_limit_mb is not None else "")
        message = (f"{OUT_OF_MEMORY}: training this population needed more memory than the "
                   f"training process may use{cap}; use a smaller architecture, batch size or "
                   f"population_size. {type(exc).__name__}: {str(exc)[:300]}")
    else:
        message = f"{type(exc).__name__}: {str(exc)[:2000]}"
    return public_message(message) or type(exc).__name__


def time_limit_message(limit_s: float) -> str:
    """The error of a population stopped by ``ACTSEARCH_TRAINING__POPULATION_TIME_LIMIT_S``."""
    return (f"{TIME_LIMIT}: the population was still training after {limit_s:g} s "
            f"(ACTSEARCH_TRAINING__POPULATION_TIME_LIMIT_S) and was stopped; use fewer epochs, "
            "a smaller architecture, or raise the limit")


class PopulationTimeLimit(Exception):
    """Raised in the training process's main thread when a population passes its time limit."""


@contextlib.contextmanager
def population_time_limit(limit_s: float | None) -> Iterator[None]:
    """Raise :class:`PopulationTimeLimit` in this (main) thread after ``limit_s`` seconds.

    A real-time interval timer (``SIGALRM``): the exception lands between Python
    bytecodes, so it also stops a population stuck inside one long epoch, as soon
    as its current tensor operation returns. Only the training is timed, not
    start-up or the final writes. Without a limit, or off the main thread (where
    signals cannot be handled), it does nothing.
    """
    if limit_s is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expired(_signum: int, _frame: object) -> None:
        raise PopulationTimeLimit(time_limit_message(limit_s))

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
