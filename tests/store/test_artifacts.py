"""Artifacts: dedupe by (sha256, kind), hash verification, the shared-directory mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from core.errors import InvalidInput, NotFound
from store.artifacts import ArtifactCorrupt, artifact_file, get_artifact_bytes, put_artifact
from store.tables import Artifact


def test_same_bytes_same_kind_is_stored_once(session: Session) -> None:
    a = put_artifact(session, kind="dataset", data=b"abc")
    b = put_artifact(session, kind="dataset", data=b"abc")
    c = put_artifact(session, kind="weights", data=b"abc")
    d = put_artifact(session, kind="dataset", data=b"abd")
    assert a.id == b.id and len({a.id, c.id, d.id}) == 3
    assert a.size == 3 and a.data == b"abc" and a.path is None
    assert get_artifact_bytes(session, a.id) == b"abc"
    session.commit()
    assert session.query(Artifact).count() == 3


def test_unknown_kind_and_missing_id(session: Session) -> None:
    with pytest.raises(InvalidInput, match="artifact kind"):
        put_artifact(session, kind="pickle", data=b"x")
    with pytest.raises(NotFound, match="artifact 42 not found"):
        get_artifact_bytes(session, 42)


def test_damaged_blob_fails_the_sha256_check(session: Session) -> None:
    row = put_artifact(session, kind="weights", data=b"weights")
    session.execute(update(Artifact).where(Artifact.id == row.id).values(data=b"weightz"))
    session.expire_all()
    with pytest.raises(ArtifactCorrupt, match="sha256"):
        get_artifact_bytes(session, row.id)


def test_artifact_dir_mode_writes_content_addressed_files(session: Session, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    row = put_artifact(session, kind="dataset", data=b"x,y\n1,2\n", artifact_dir=shared)
    assert row.data is None and row.path is not None
    path = Path(row.path)
    assert path == artifact_file(shared, "dataset", row.sha256).resolve()
    assert path.read_bytes() == b"x,y\n1,2\n"
    assert [p.name for p in path.parent.iterdir()] == [row.sha256]  # no temporary left behind
    assert (
        put_artifact(session, kind="dataset", data=b"x,y\n1,2\n", artifact_dir=shared).id == row.id
    )
    assert get_artifact_bytes(session, row.id) == b"x,y\n1,2\n"

    path.write_bytes(b"x,y\n1,3\n")
    with pytest.raises(ArtifactCorrupt):
        get_artifact_bytes(session, row.id)
    path.unlink()
    with pytest.raises(NotFound, match="missing its file"):
        get_artifact_bytes(session, row.id)
    # putting the same content again repairs the missing file
    put_artifact(session, kind="dataset", data=b"x,y\n1,2\n", artifact_dir=shared)
    assert get_artifact_bytes(session, row.id) == b"x,y\n1,2\n"
