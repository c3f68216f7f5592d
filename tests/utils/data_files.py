"""Small tabular fixtures for dataset tests: frames and files written under tmp_path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd


def make_frame(
    n: int = 60,
    n_features: int = 3,
    n_classes: int = 3,
    *,
    seed: int = 0,
    label: str = "label",
    string_labels: bool = False,
) -> pd.DataFrame:
    """A frame of float features f0..f{k-1} and a balanced label column (ints or 'c0'.. strings)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        rng.standard_normal((n, n_features)), columns=[f"f{i}" for i in range(n_features)]
    )
    classes = np.arange(n) % n_classes
    rng.shuffle(classes)
    df[label] = [f"c{c}" for c in classes] if string_labels else classes
    return df


def csv_bytes(df: pd.DataFrame, **kwargs: object) -> bytes:
    """The frame as CSV bytes, without the index."""
    return df.to_csv(index=False, **kwargs).encode()


def write(path: Path, data: bytes) -> Path:
    """Write bytes and return the path (keeps tests one-liners)."""
    path.write_bytes(data)
    return path


def npz_bytes(compressed: bool = False, **arrays: np.ndarray) -> bytes:
    """Arrays saved with np.savez(_compressed) into bytes; object arrays are pickled by numpy."""
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, allow_pickle=True, **arrays)
    return buf.getvalue()
