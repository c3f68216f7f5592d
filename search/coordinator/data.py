"""The search's prepared splits, cached per process.

One process trains many populations, often of many searches on the same data (a Celery
worker's child, the embedded coordinator, ``serve``'s runner): loading and splitting the
dataset once saves a round of work per population, and on an accelerator the tensors
stay on the device (:meth:`search.service.PreparedData.tensor_data`). The cache is per
process, never shared across a fork, and bounded: at most ``_DATA_CACHE_SIZE`` datasets
and ``ACTSEARCH_TRAINING__DATA_CACHE_MB`` of host arrays, least recently used dropped
first (the dataset just asked for stays, whatever its size).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings

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


def data_key(sessions: sessionmaker[Session], *, dataset_id: int,
             spec: SearchSpec) -> tuple[Any, ...]:
    """What a search's prepared tensors depend on: (database, dataset, seed, fractions),
    exactly the inputs of :func:`search.service.prepare_data`."""
    bind = sessions.kw.get("bind")
    database = str(getattr(bind, "url", id(sessions)))  # ids repeat across databases
    return (database, dataset_id, spec.seed, spec.val_fraction, spec.test_fraction)


def _key_name(key: tuple[Any, ...]) -> str:
    """A short stable name for a key (the database URL may hold a password: hashed)."""
    digest = hashlib.sha1(repr(key[0]).encode()).hexdigest()[:10]
    return f"{digest}:{':'.join(str(k) for k in key[1:])}"


def prepared_data(sessions: sessionmaker[Session], *, dataset_id: int,
                  spec: SearchSpec, cache_bytes: int | None = None) -> PreparedData:
    """The search's splits, from the dataset artifact in the database, cached per process.

    Keyed by :func:`data_key`; ``PreparedData.key`` names it for the training children.
    The artifact comes from the database, never from the API's disk.
    """
    key = data_key(sessions, dataset_id=dataset_id, spec=spec)
    with _cache_lock:
        hit = _data_cache.get(key)
        if hit is not None:
            _data_cache.move_to_end(key)
            return hit
    with sessions() as session:
        data = prepare_data(session, dataset_id=dataset_id, spec=spec)
    data.key = _key_name(key)
    limit = (get_settings().training.data_cache_mb << 20) if cache_bytes is None else cache_bytes
    with _cache_lock:
        _data_cache[key] = data
        _data_cache.move_to_end(key)
        while len(_data_cache) > 1 and (
                len(_data_cache) > _DATA_CACHE_SIZE
                or sum(d.nbytes for d in _data_cache.values()) > limit):
            _data_cache.popitem(last=False)
    return data


def cached_keys() -> list[tuple[Any, ...]]:
    """The keys held now, least recently used first (for tests and diagnostics)."""
    with _cache_lock:
        return list(_data_cache)
