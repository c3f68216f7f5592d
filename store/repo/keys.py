"""API keys: create (the raw key is returned once), authenticate, list, revoke.

Only the SHA-256 of a key is stored. A key is 32 random bytes from ``secrets``
(256 bits of entropy), so nobody can guess or brute-force it from its hash: the
slow, salted hashes made for passwords (bcrypt, argon2) exist to protect
*low-entropy* secrets and would only add tens of milliseconds to every request.
A fast hash also lets the lookup be one indexed equality on ``key_hash``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.orm import Session

from core.errors import InvalidInput
from store.repo._common import _require
from store.tables import ApiKeyRow, utcnow

KEY_PREFIX = "as_"
PREFIX_CHARS = 8
# last_used_at is written at most this often per key: a write per request would
# turn every read into a write (and, on SQLite, contend for the one writer lock).
LAST_USED_RESOLUTION = timedelta(minutes=1)
_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,199}")


def hash_key(raw: str) -> str:
    """The stored form of a key: SHA-256, hex (see the module docstring for why a fast hash)."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def check_owner(owner: str) -> str:
    """``owner`` if it is a usable owner name, else :class:`InvalidInput` saying what is allowed."""
    if not isinstance(owner, str) or not _OWNER.fullmatch(owner):
        raise InvalidInput(
            f"invalid owner {owner!r}: use 1-200 characters, letters, digits and _.@+- "
            "(starting with a letter or digit)"
        )
    return owner


def create_api_key(
    session: Session, *, owner: str, admin: bool = False, name: str | None = None
) -> tuple[ApiKeyRow, str]:
    """A new key for ``owner``: its row and the raw key (shown once, never stored)."""
    check_owner(owner)
    if name is not None and not 1 <= len(name) <= 200:
        raise InvalidInput("a key name must have 1 to 200 characters")
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKeyRow(owner=owner, name=name, prefix=raw[:PREFIX_CHARS], key_hash=hash_key(raw),
                    admin=bool(admin))
    session.add(row)
    session.flush()
    return row, raw


def authenticate_key(
    session: Session, raw: str, *, now: datetime | None = None
) -> ApiKeyRow | None:
    """The live key row for ``raw``, or None when it is unknown or revoked.

    Refreshes ``last_used_at`` when it is older than :data:`LAST_USED_RESOLUTION`
    (the caller's transaction commits it).
    """
    key = find_live_key(session, raw)
    if key is None:
        return None
    if last_used_is_stale(key, now):
        touch_api_key(session, key_id=key.id, now=now)
    return session.get(ApiKeyRow, key.id)


@dataclass(frozen=True)
class LiveKey:
    """What authentication needs of a live key row (read without the ORM: see ``_LIVE_KEY``)."""

    id: int
    owner: str
    admin: bool
    last_used_at: datetime | None


# Built once: every authenticated request runs it, and building and ORM-loading a
# statement costs about 3x what the query itself does (measured in the API).
_LIVE_KEY = (select(ApiKeyRow.id, ApiKeyRow.owner, ApiKeyRow.admin, ApiKeyRow.last_used_at)
             .where(ApiKeyRow.key_hash == bindparam("key_hash"), ApiKeyRow.revoked_at.is_(None)))


def find_live_key(connection: Connection | Session, raw: str) -> LiveKey | None:
    """The live key behind ``raw`` (a read only), or None when it is unknown or revoked."""
    if not raw or len(raw) > 512:
        return None
    row = connection.execute(_LIVE_KEY, {"key_hash": hash_key(raw)}).first()
    return None if row is None else LiveKey(row.id, row.owner, bool(row.admin), row.last_used_at)


def last_used_is_stale(row: ApiKeyRow | LiveKey, now: datetime | None = None) -> bool:
    """Whether ``last_used_at`` is older than :data:`LAST_USED_RESOLUTION` (or unset)."""
    now = now or utcnow()
    return row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION


def touch_api_key(session: Session, *, key_id: int, now: datetime | None = None) -> None:
    """Record that a key was used now (the caller commits)."""
    row = session.get(ApiKeyRow, key_id)
    if row is not None:
        row.last_used_at = now or utcnow()
        session.flush()


def list_api_keys(session: Session, *, owner: str | None = None) -> list[ApiKeyRow]:
    """Keys (revoked ones too), oldest first, optionally of one owner."""
    stmt = select(ApiKeyRow).order_by(ApiKeyRow.id)
    if owner is not None:
        stmt = stmt.where(ApiKeyRow.owner == owner)
    return list(session.scalars(stmt))


def get_api_key(session: Session, *, key_id: int) -> ApiKeyRow:
    """The key row ``key_id`` (NotFound when missing)."""
    return _require(session, ApiKeyRow, key_id, "API key")


def revoke_api_key(session: Session, *, key_id: int) -> ApiKeyRow:
    """Revoke key ``key_id`` now; revoking a revoked key keeps its first revocation time."""
    row = get_api_key(session, key_id=key_id)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row
