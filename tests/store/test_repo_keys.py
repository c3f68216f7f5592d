"""API keys at rest and per-owner dataset names (store.repo, no HTTP)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.errors import InvalidInput, NotFound
from store import repo

META = {"task": "classification", "n_rows": 3, "n_features": 2, "n_classes": 2}


def test_key_is_returned_once_and_only_its_hash_is_stored(session: Session,
                                                          engine: Engine) -> None:
    row, raw = repo.create_api_key(session, owner="ann", name="laptop")
    session.commit()
    assert raw.startswith("as_") and len(raw) > 40 and row.prefix == raw[:8]
    assert row.key_hash == repo.hash_key(raw) != raw
    with engine.connect() as conn:  # the raw key appears in no column of any row
        dump = "\n".join(str(r) for r in conn.exec_driver_sql("SELECT * FROM actsearch_api_keys"))
    assert raw not in dump and raw[8:] not in dump
    assert repo.authenticate_key(session, raw).id == row.id  # type: ignore[union-attr]
    assert repo.authenticate_key(session, raw + "x") is None
    assert repo.authenticate_key(session, "") is None


def test_last_used_is_written_at_most_once_a_minute(session: Session) -> None:
    row, raw = repo.create_api_key(session, owner="ann")
    first = repo.authenticate_key(session, raw)
    assert first is not None and first.last_used_at is not None
    stamp = first.last_used_at
    repo.authenticate_key(session, raw, now=stamp + timedelta(seconds=30))
    assert row.last_used_at == stamp
    later = stamp + timedelta(seconds=61)
    repo.authenticate_key(session, raw, now=later)
    assert row.last_used_at == later


def test_revoked_keys_stop_working_and_stay_listed(session: Session) -> None:
    a, raw_a = repo.create_api_key(session, owner="ann")
    b, _ = repo.create_api_key(session, owner="bob", admin=True)
    revoked = repo.revoke_api_key(session, key_id=a.id)
    assert revoked.revoked_at is not None
    assert repo.revoke_api_key(session, key_id=a.id).revoked_at == revoked.revoked_at
    assert repo.authenticate_key(session, raw_a) is None
    assert [k.id for k in repo.list_api_keys(session)] == [a.id, b.id]
    assert [k.id for k in repo.list_api_keys(session, owner="bob")] == [b.id]
    with pytest.raises(NotFound):
        repo.revoke_api_key(session, key_id=999)


@pytest.mark.parametrize("owner", ["", "a b", "../x", "-x", "x" * 201])
def test_bad_owner_names_are_refused(session: Session, owner: str) -> None:
    with pytest.raises(InvalidInput, match="owner"):
        repo.create_api_key(session, owner=owner)


def test_dataset_names_are_per_owner(session: Session) -> None:
    a1 = repo.add_dataset(session, name="d", data_bytes=b"a", meta=META, owner="ann")
    b1 = repo.add_dataset(session, name="d", data_bytes=b"b", meta=META, owner="bob")
    a2 = repo.add_dataset(session, name="d", data_bytes=b"c", meta=META, owner="ann")
    session.commit()
    assert (a1.version, b1.version, a2.version) == (1, 1, 2)
    assert repo.latest_dataset(session, name="d", owner="bob").id == b1.id
    assert repo.dataset_ids_by_name(session, name="d", owner="ann") == [a1.id, a2.id]
    assert repo.get_dataset_version(session, name="d", version=1, owner="bob").id == b1.id
    with pytest.raises(NotFound) as missing:
        repo.get_dataset(session, dataset_id=a1.id, owner="bob")
    with pytest.raises(NotFound) as unknown:
        repo.get_dataset(session, dataset_id=12345, owner="bob")
    assert str(missing.value).replace(str(a1.id), "N") == str(unknown.value).replace("12345", "N")
    latest = repo.list_datasets(session, latest_only=True)
    assert sorted((d.owner, d.version) for d in latest) == [("ann", 2), ("bob", 1)]
    assert repo.count_datasets(session, latest_only=True) == 2
    assert repo.count_datasets(session, latest_only=True, owner="ann") == 1
