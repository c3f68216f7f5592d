"""One Optuna ``RDBStorage`` per database URL and process, configured like our own engine.

Optuna's default engine for a URL string waits 5 s for a SQLite write lock (pysqlite's
default timeout) and is rebuilt, schema check included, on every call. With many
submissions at once (several API processes, the runner writing results) 5 s ran out
and ``create_study`` failed with ``database is locked``. Here SQLite waits as long as
our own sessions do (``store.db.SQLITE_BUSY_TIMEOUT_MS``) and PostgreSQL connections
are pre-pinged, so a database restart costs a reconnect, not an error.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from store.db import SQLITE_BUSY_TIMEOUT_MS

# A service uses one URL; a test session meets many databases: keep the newest few,
# so their connection pools (open file handles) do not pile up.
_MAX_STORAGES = 8
_storages: OrderedDict[str, optuna.storages.RDBStorage] = OrderedDict()
_lock = threading.Lock()


def optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """The process's shared Optuna storage for ``url`` (created on first use)."""
    with _lock:
        storage = _storages.get(url)
        if storage is not None:
            _storages.move_to_end(url)
            return storage
        kwargs: dict[str, object] = {"pool_pre_ping": True}
        if make_url(url).get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        _storages[url] = storage
        while len(_storages) > _MAX_STORAGES:
            _, oldest = _storages.popitem(last=False)
            oldest.engine.dispose()  # checked-out connections close when returned
        return storage


def clear_storages() -> None:
    """Drop the cached storages and their connection pools (after a fork, and in tests)."""
    with _lock:
        for storage in _storages.values():
            try:
                storage.engine.dispose()
            except Exception:  # noqa: BLE001 - best effort on a storage we drop anyway
                pass
        _storages.clear()


def init_optuna_schema(storage_url: str, attempts: int = 3) -> None:
    """Create Optuna's tables now, at process start, not inside the first requests.

    Two ``RDBStorage`` objects meeting a fresh database at the same moment (the
    first searches submitted concurrently, workers starting together) both try to
    create Optuna's tables and one fails with "table ... already exists". Doing it
    once at start closes that window; a concurrent starter (another process) is
    retried. Used by ``actsearch serve``, the runner and the workers' parent process,
    which must not import torch (this module does not).
    """
    for attempt in range(attempts):
        try:
            optuna.storages.RDBStorage(storage_url).engine.dispose()
            return
        except (OperationalError, IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
