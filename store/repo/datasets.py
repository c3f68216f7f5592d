"""Datasets: versioned uploads, lookups, listings and their bytes."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import Conflict, InvalidInput, NotFound
from store.artifacts import get_artifact_bytes, put_artifact, sha256_hex
from store.repo._common import _check, _page, _require_owned, jsonable
from store.tables import (
    DATASET_SOURCES,
    DatasetRow,
)

_DATASET_REQUIRED = ("task", "n_rows", "n_features")


_DATASET_OPTIONAL = ("source", "n_classes", "input_shape", "schema", "content_hash")


def _dataset_fields(meta: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(meta) - set(_DATASET_REQUIRED) - set(_DATASET_OPTIONAL)
    if unknown:
        raise InvalidInput(f"unknown dataset meta keys: {sorted(unknown)}")
    missing = [k for k in _DATASET_REQUIRED if meta.get(k) is None]
    if missing:
        raise InvalidInput(f"dataset meta is missing {missing}")
    n_classes = meta.get("n_classes")
    return {  # content_hash is handled by add_dataset
        "source": _check(meta.get("source", "upload"), DATASET_SOURCES, "dataset source"),
        "task": str(meta["task"]),
        "n_rows": int(meta["n_rows"]),
        "n_features": int(meta["n_features"]),
        "n_classes": int(n_classes) if n_classes is not None else None,
        "input_shape": jsonable(meta.get("input_shape")),
        "schema": jsonable(meta.get("schema")),
    }


def _latest_or_none(session: Session, name: str, owner: str | None = None) -> DatasetRow | None:
    stmt = select(DatasetRow).where(DatasetRow.name == name, *_owned(owner))
    return session.scalars(stmt.order_by(DatasetRow.version.desc()).limit(1)).first()


def _owned(owner: str | None) -> list[Any]:
    """The owner filter of a name lookup: each owner has their own namespace of names.

    ``None`` does not filter (auth off, admins' id lookups, internal callers).
    """
    return [] if owner is None else [DatasetRow.owner == owner]


def _same_dataset(row: DatasetRow, digest: str, fields: Mapping[str, Any]) -> bool:
    return row.content_hash == digest and all(getattr(row, k) == v for k, v in fields.items())


def add_dataset(
    session: Session,
    *,
    name: str,
    data_bytes: bytes,
    meta: Mapping[str, Any],
    owner: str | None = None,
    artifact_dir: Path | None = None,
) -> DatasetRow:
    """Register ``data_bytes`` under ``name`` as its next version.

    ``meta`` holds task, n_rows, n_features and optionally source (builtin|upload,
    default upload), n_classes, input_shape, schema and content_hash (the data's
    own identity, e.g. a hash of the parsed arrays; default: sha256 of
    ``data_bytes``). Uploading what the latest version already is (same content
    hash and meta) returns that row instead of a new version; older versions are
    always kept (searches point at them).
    """
    if not name or len(name) > 200:
        raise InvalidInput("a dataset name must have 1 to 200 characters")
    fields = _dataset_fields(meta)
    digest = str(meta.get("content_hash") or sha256_hex(data_bytes))
    for _ in range(3):  # retry only when another writer took the same version number
        latest = _latest_or_none(session, name, owner)
        if latest is not None and _same_dataset(latest, digest, fields):
            return latest
        artifact = put_artifact(session, kind="dataset", data=data_bytes, artifact_dir=artifact_dir)
        row = DatasetRow(
            name=name,
            version=latest.version + 1 if latest is not None else 1,
            content_hash=digest,
            artifact_id=artifact.id,
            owner=owner,
            **fields,
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            continue
        return row
    raise Conflict(f"dataset {name!r} is being written concurrently; try again")


def get_dataset(session: Session, *, dataset_id: int, owner: str | None = None) -> DatasetRow:
    """The dataset row ``dataset_id`` (any version); NotFound if it is not ``owner``'s."""
    return _require_owned(session, DatasetRow, dataset_id, "dataset", owner)


def get_dataset_version(
    session: Session, *, name: str, version: int, owner: str | None = None
) -> DatasetRow:
    """Version ``version`` of ``owner``'s dataset called ``name``."""
    stmt = select(DatasetRow).where(DatasetRow.name == name, DatasetRow.version == version,
                                    *_owned(owner))
    row = session.scalars(stmt).first()
    if row is None:
        raise NotFound(f"dataset {name!r} has no version {version}")
    return row


def latest_dataset(session: Session, *, name: str, owner: str | None = None) -> DatasetRow:
    """The highest version of ``owner``'s dataset called ``name``."""
    row = _latest_or_none(session, name, owner)
    if row is None:
        raise NotFound(f"no dataset named {name!r}")
    return row


def list_datasets(
    session: Session,
    *,
    name: str | None = None,
    owner: str | None = None,
    latest_only: bool = False,
    limit: int | None = 100,
    offset: int = 0,
) -> list[DatasetRow]:
    """Datasets by name, newest version first; ``latest_only`` keeps one per name."""
    stmt = select(DatasetRow)
    if name is not None:
        stmt = stmt.where(DatasetRow.name == name)
    if owner is not None:
        stmt = stmt.where(DatasetRow.owner == owner)
    if latest_only:
        # The newest version per (owner, name): names are per-owner namespaces.
        newest = select(
            DatasetRow.owner, DatasetRow.name, func.max(DatasetRow.version).label("v")
        ).where(*_owned(owner)).group_by(DatasetRow.owner, DatasetRow.name)
        sub = newest.subquery()
        stmt = stmt.join(sub, DatasetRow.owner.is_not_distinct_from(sub.c.owner)
                         & (DatasetRow.name == sub.c.name) & (DatasetRow.version == sub.c.v))
    stmt = stmt.order_by(DatasetRow.name, DatasetRow.version.desc())
    return list(session.scalars(_page(stmt, limit, offset)))


def dataset_bytes(session: Session, *, dataset_id: int) -> bytes:
    """The stored (verified) content of dataset ``dataset_id``."""
    return get_artifact_bytes(session, get_dataset(session, dataset_id=dataset_id).artifact_id)


def count_datasets(
    session: Session,
    *,
    name: str | None = None,
    owner: str | None = None,
    latest_only: bool = False,
) -> int:
    """How many rows :func:`list_datasets` would return without paging."""
    where = [*_owned(owner)]
    if name is not None:
        where.append(DatasetRow.name == name)
    if latest_only:  # one per (owner, name)
        names = select(DatasetRow.owner, DatasetRow.name).where(*where).distinct().subquery()
        stmt = select(func.count()).select_from(names)
    else:
        stmt = select(func.count(DatasetRow.id)).where(*where)
    return int(session.scalar(stmt) or 0)


def dataset_ids_by_name(session: Session, *, name: str, owner: str | None = None) -> list[int]:
    """Ids of every version of ``owner``'s dataset called ``name`` (empty when there is none)."""
    stmt = select(DatasetRow.id).where(DatasetRow.name == name, *_owned(owner))
    stmt = stmt.order_by(DatasetRow.version)
    return list(session.scalars(stmt))
