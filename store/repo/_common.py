"""Helpers shared by the ``store.repo`` modules: JSON normalisation, checks, paging."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from core.errors import InvalidInput, NotFound


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: numpy to Python, non-finite floats to None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    raise InvalidInput(f"cannot store a {type(value).__name__} as JSON: {value!r:.80}")


def _num(value: Any) -> float | None:
    """A finite float or None (SQLite turns NaN into NULL anyway; be explicit everywhere)."""
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _check(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise InvalidInput(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
    return value


def _page(stmt: Select[Any], limit: int | None, offset: int) -> Select[Any]:
    if offset < 0 or (limit is not None and limit < 0):
        raise InvalidInput("limit and offset must be non-negative")
    stmt = stmt.offset(offset)
    return stmt.limit(limit) if limit is not None else stmt


def _require(session: Session, table: type[Any], row_id: int, what: str) -> Any:
    row = session.get(table, row_id)
    if row is None:
        raise NotFound(f"{what} {row_id} not found")
    return row


def _require_owned(
    session: Session, table: type[Any], row_id: int, what: str, owner: str | None
) -> Any:
    """The row, or NotFound when it is missing *or* belongs to someone other than ``owner``.

    ``owner=None`` checks nothing (admins, auth off, internal callers). Both cases
    raise the same message, so a caller cannot learn that another owner's id exists.
    """
    row = session.get(table, row_id)
    if row is None or (owner is not None and row.owner != owner):
        raise NotFound(f"{what} {row_id} not found")
    return row


def _lock(session: Session, table: type[Any], row_id: int, what: str) -> Any:
    """The row, locked (SELECT ... FOR UPDATE) until the transaction ends, re-read from the database."""
    stmt = (
        select(table)
        .where(table.id == row_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    row = session.scalars(stmt).first()
    if row is None:
        raise NotFound(f"{what} {row_id} not found")
    return row


def _won(result: Any) -> bool:
    return bool(getattr(result, "rowcount", 0) == 1)
