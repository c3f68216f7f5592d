"""Trial weights stored as deterministic ``.npz`` artifacts."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import InvalidInput, NotFound
from store.artifacts import get_artifact_bytes, put_artifact
from store.repo._common import jsonable
from store.repo.trials import get_trial
from store.tables import (
    WeightsRow,
)

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: equal weights give equal bytes (dedupe)


def _npz_bytes(state_dict: Mapping[str, Any]) -> bytes:
    """An npz archive of ``state_dict`` written without pickle (object arrays refused)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as archive:
        for key, value in state_dict.items():
            if not isinstance(key, str) or not key:
                raise InvalidInput(f"state_dict keys must be non-empty strings, got {key!r}")
            arr = np.asarray(value)
            if arr.dtype.hasobject:
                raise InvalidInput(f"state_dict[{key!r}] has dtype object; only numeric arrays")
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            with archive.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)
    return buf.getvalue()


def _npz_load(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def save_weights(
    session: Session,
    *,
    trial_id: int,
    state_dict: Mapping[str, np.ndarray],
    scaler: Mapping[str, Any] | None,
    label_map: Any,
    artifact_dir: Path | None = None,
) -> WeightsRow:
    """Store a trial's weights (npz, no pickle) with the scaler and label map.

    ``scaler`` is ``{"mean": [...], "std": [...]}`` (or None); ``label_map`` is any
    JSON value (a list of class names, or a dict whose keys are stored as strings).
    Saving again for the same trial replaces the previous weights.
    """
    get_trial(session, trial_id=trial_id)
    artifact = put_artifact(
        session, kind="weights", data=_npz_bytes(state_dict), artifact_dir=artifact_dir
    )
    row = session.scalars(select(WeightsRow).where(WeightsRow.trial_id == trial_id)).first()
    if row is None:
        row = WeightsRow(trial_id=trial_id, artifact_id=artifact.id)
        session.add(row)
    row.artifact_id = artifact.id
    row.scaler = jsonable(scaler)
    row.label_map = jsonable(label_map)
    session.flush()
    return row


def load_weights(session: Session, *, trial_id: int) -> tuple[dict[str, np.ndarray], Any, Any]:
    """``(state_dict, scaler, label_map)`` of a trial, read without unpickling anything."""
    row = session.scalars(select(WeightsRow).where(WeightsRow.trial_id == trial_id)).first()
    if row is None:
        get_trial(session, trial_id=trial_id)
        raise NotFound(f"trial {trial_id} has no saved weights")
    state_dict = _npz_load(get_artifact_bytes(session, row.artifact_id))
    return state_dict, row.scaler, row.label_map


def has_weights(session: Session, *, trial_id: int) -> bool:
    """Whether trained weights are stored for ``trial_id`` (finalists only)."""
    stmt = select(WeightsRow.id).where(WeightsRow.trial_id == trial_id)
    return session.scalars(stmt).first() is not None
