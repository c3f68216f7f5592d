"""Content-addressed blobs (dataset files, trained weights) every worker can reach.

By default the bytes live in the database (a binary column), which every worker
already reaches; with a shared ``artifact_dir`` they go to a file named by their
hash and the row keeps the path. Identical content of the same kind is stored once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import ActsearchError, InvalidInput, NotFound
from store.tables import ARTIFACT_KINDS, Artifact

__all__ = ["ArtifactCorrupt", "artifact_file", "get_artifact_bytes", "put_artifact", "sha256_hex"]


class ArtifactCorrupt(ActsearchError):
    """Stored bytes whose sha256 no longer matches the row (disk or copy damage)."""

    status_code = 500


def sha256_hex(data: bytes) -> str:
    """The hex sha256 of ``data`` (the artifact's identity)."""
    return hashlib.sha256(data).hexdigest()


def artifact_file(artifact_dir: Path, kind: str, sha256: str) -> Path:
    """Where content ``sha256`` of ``kind`` lives under ``artifact_dir`` (fanned out by prefix)."""
    return Path(artifact_dir) / kind / sha256[:2] / sha256


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and rename, so readers on
    other machines never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _file_ok(path: Path, sha256: str) -> bool:
    try:
        return sha256_hex(path.read_bytes()) == sha256
    except OSError:
        return False


def _find(session: Session, kind: str, sha256: str) -> Artifact | None:
    stmt = select(Artifact).where(Artifact.kind == kind, Artifact.sha256 == sha256)
    return session.scalars(stmt).first()


def put_artifact(
    session: Session, *, kind: str, data: bytes, artifact_dir: Path | None = None
) -> Artifact:
    """Store ``data`` once per (sha256, kind) and return its row (flushed, id set).

    With ``artifact_dir`` the bytes go to a content-addressed file written
    atomically and the row stores its absolute path; otherwise they go in the
    row. An existing row is reused; if its file went missing it is rewritten.
    """
    if kind not in ARTIFACT_KINDS:
        raise InvalidInput(f"unknown artifact kind {kind!r}; expected one of {ARTIFACT_KINDS}")
    data = bytes(data)
    digest = sha256_hex(data)
    target = artifact_file(artifact_dir, kind, digest) if artifact_dir is not None else None
    existing = _find(session, kind, digest)
    if existing is not None:
        if existing.path is not None and not _file_ok(Path(existing.path), digest):
            _write_atomic(Path(existing.path), data)
        return existing
    if target is not None and not _file_ok(target, digest):
        _write_atomic(target, data)
    row = Artifact(
        kind=kind,
        sha256=digest,
        size=len(data),
        data=None if target is not None else data,
        path=str(target.resolve()) if target is not None else None,
    )
    try:
        # A savepoint, so a concurrent writer's identical insert costs only a re-read.
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        existing = _find(session, kind, digest)
        if existing is None:
            raise
        return existing
    return row


def get_artifact_bytes(session: Session, artifact_id: int) -> bytes:
    """The artifact's bytes, verified against its sha256.

    Raises NotFound for an unknown id or a missing file, ArtifactCorrupt when the
    bytes do not match the recorded hash.
    """
    row = session.get(Artifact, artifact_id)
    if row is None:
        raise NotFound(f"artifact {artifact_id} not found")
    if row.data is not None:
        data = row.data
    elif row.path is not None:
        try:
            data = Path(row.path).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(
                f"artifact {artifact_id} ({row.kind}) is missing its file {row.path}; "
                "is the shared artifact directory mounted here?"
            ) from exc
    else:
        raise NotFound(f"artifact {artifact_id} ({row.kind}) has neither data nor a path")
    if sha256_hex(data) != row.sha256:
        raise ArtifactCorrupt(
            f"artifact {artifact_id} ({row.kind}) failed its sha256 check: stored bytes are damaged"
        )
    return data
