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
from datetime import datetime, timedelta

from sqlalchemy import select
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
    if not raw or len(raw) > 512:
        return None
    row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_key(raw))).first()
    if row is None or row.revoked_at is not None:
        return None
    now = now or utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        row.last_used_at = now
        session.flush()
    return row


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
