"""The search's prepared splits, cached per process.

One process trains many populations of the same search (a Celery worker, the
embedded coordinator): loading and splitting the dataset once saves a round of
work per population. The cache is per process, never shared across a fork.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from ..service import PreparedData, prepare_data
from ..spec import SearchSpec
from ..storage import clear_storages

_DATA_CACHE_SIZE = 4
_data_cache: OrderedDict[tuple[Any, ...], PreparedData] = OrderedDict()
_cache_lock = threading.Lock()


def clear_caches() -> None:
    """Forget cached datasets and Optuna storages (after a fork, and in tests)."""
    with _cache_lock:
        _data_cache.clear()
    clear_storages()


def prepared_data(sessions: sessionmaker[Session], *, dataset_id: int,
                  spec: SearchSpec) -> PreparedData:
    """The search's splits, from the dataset artifact in the database, cached per process.

    Keyed by (database, dataset, seed, fractions): exactly what
    :func:`search.service.prepare_data` depends on. The artifact comes from the database, never from the API's disk.
    """
    bind = sessions.kw.get("bind")
    database = str(getattr(bind, "url", id(sessions)))  # ids repeat across databases
    key = (database, dataset_id, spec.seed, spec.val_fraction, spec.test_fraction)
    with _cache_lock:
        hit = _data_cache.get(key)
        if hit is not None:
            _data_cache.move_to_end(key)
            return hit
    with sessions() as session:
        data = prepare_data(session, dataset_id=dataset_id, spec=spec)
    with _cache_lock:
        _data_cache[key] = data
        while len(_data_cache) > _DATA_CACHE_SIZE:
            _data_cache.popitem(last=False)
    return data
