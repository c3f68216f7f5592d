"""Built-ins for a service: checked against the limits from their options, then generated
in a separate process.

A generated built-in (``teacher`` at 100,000 rows and a 4,096-wide teacher, MNIST-1D)
costs seconds of CPU and, for the teacher, hundreds of MB of working memory. The API
checks what it would make (:func:`check_builtin_limits`) before any of it is made, and
:func:`generate_builtin` runs the generator in a small process pool: its numpy work
never holds the API's interpreter lock, its working memory dies with its arrays in
that process, and only the finished dataset comes back, as NPZ bytes read with
``allow_pickle=False`` (nothing is unpickled).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from core.errors import PayloadTooLarge, ServiceBusy

from ._common import _human
from .builtins import BUILTINS, BuiltinEstimate, estimate_builtin, load_builtin
from .dataset import Dataset

__all__ = ["check_builtin_limits", "generate_builtin", "shutdown_generation"]

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_size = 0


def check_builtin_limits(est: BuiltinEstimate, *, max_bytes: int, max_rows: int,
                         max_features: int) -> None:
    """PayloadTooLarge (413) when the built-in would pass a limit that an upload obeys.

    Rows and features against ``max_rows`` / ``max_features``; the dataset's bytes and,
    separately, the generator's peak (dataset plus working memory) against
    ``max_bytes``, the upload limit: a generated dataset may cost the API what an
    uploaded one may, no more.
    """
    opts = ", ".join(f"{k}={v}" for k, v in est.options.items()) or "defaults"
    what = f"builtin {est.name!r} ({opts})"
    if est.n_rows > max_rows:
        raise PayloadTooLarge(
            f"{what} would have {est.n_rows} rows, above the limit of {max_rows}; ask for "
            "fewer rows (size/n) or raise ACTSEARCH_LIMITS__MAX_ROWS")
    if est.n_features > max_features:
        raise PayloadTooLarge(
            f"{what} would have {est.n_features} features, above the limit of {max_features}; "
            "raise ACTSEARCH_LIMITS__MAX_FEATURES")
    for label, size in (("would take", est.data_bytes),
                        ("would need, while generating,", est.peak_bytes)):
        if size > max_bytes:
            raise PayloadTooLarge(
                f"{what} {label} {_human(size)} ({est.n_rows} rows x {est.n_features} "
                f"features), above the limit of {_human(max_bytes)} "
                "(ACTSEARCH_LIMITS__MAX_UPLOAD_BYTES); ask for fewer rows (size/n) or a "
                "smaller generator (e.g. teacher's hidden), or raise the limit")


def _generate(name: str, options: dict[str, Any]) -> bytes:
    """In the pool's process: the dataset as uncompressed NPZ (fast to write and read)."""
    return load_builtin(name, **options).to_npz_bytes(compress=False)


#: CPU priority of the generating processes: below the API's, as training runs, so a
#: burst of generation slows generation, not the answers to reads.
GENERATION_NICE = 10


def _lower_priority() -> None:
    try:
        os.nice(GENERATION_NICE)
    except OSError:  # pragma: no cover - not permitted in some sandboxes
        pass


def _get_pool(processes: int) -> ProcessPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != processes:
            if _pool is not None:
                _pool.shutdown(wait=False, cancel_futures=True)
            # spawn, not fork: the API process has threads (a forked lock may be held).
            _pool = ProcessPoolExecutor(max_workers=processes,
                                        mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_lower_priority)
            _pool_size = processes
        return _pool


def _drop_pool(pool: ProcessPoolExecutor) -> None:
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


def generate_builtin(name: str, options: dict[str, Any] | None = None, *, max_bytes: int,
                     max_rows: int, max_features: int, processes: int = 2) -> Dataset:
    """Check a built-in against the limits, then load or generate it.

    scikit-learn's bundled tables load here (milliseconds); generated ones run in a
    pool of ``processes`` processes, shared by every caller in this process, so at
    most that many generate at once. Raises what :func:`estimate_builtin` raises,
    PayloadTooLarge over a limit, and ServiceBusy (503) if the generating process died.
    """
    options = dict(options or {})
    est = estimate_builtin(name, **options)
    check_builtin_limits(est, max_bytes=max_bytes, max_rows=max_rows, max_features=max_features)
    if not BUILTINS[name].defaults:  # a bundled table: nothing to generate
        return load_builtin(name, **options)
    pool = _get_pool(processes)
    try:
        data = pool.submit(_generate, name, est.options).result()
    except BrokenProcessPool:
        _drop_pool(pool)
        raise ServiceBusy(
            f"the process generating builtin {name!r} died (out of memory?); retry, or ask "
            "for a smaller dataset") from None
    return Dataset.from_npz_bytes(data, max_bytes=len(data) + 1)


def shutdown_generation() -> None:
    """Stop the generating processes (at the API's shutdown; a later call starts new ones)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
