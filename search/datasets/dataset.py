"""The :class:`Dataset` container: hashing, NPZ round trip, schema and validation."""

from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from core.errors import InvalidDataset, InvalidInput

from ._common import MIN_ROWS, TASKS, Task, _limits
from ._npz import _read_npz_members

#: Fewest rows per class: what scikit-learn's stratified split needs. A class this rare
#: may be absent from validation and test; larger ``test_fraction`` values can need more,
#: which :func:`split_dataset` reports.
MIN_ROWS_PER_CLASS = 2

_META_KEY = "__actsearch_meta__"
MODALITIES = ("tabular", "image", "tokens")
#: Largest vocabulary of token data (an embedding table of K x vocab x d floats).
MAX_VOCAB = 1 << 16
_FORMAT_VERSION = 1
_ARTIFACT_BYTES = 2 * 1024**3


@dataclass(eq=False)
class Dataset:
    """A validated, in-memory dataset: float32 features and encoded labels.

    ``y`` holds class indices (int64) for classification, whose original labels are
    ``class_names[i]``; for regression it holds float32 targets and ``class_names`` is
    None. ``input_shape`` lets a CNN reshape a row (e.g. ``(1, 8, 8)`` for digits);
    it is None for plain tables. ``options`` records how a built-in was generated.

    ``modality`` says what a row is: ``"tabular"`` (features, standardised per column),
    ``"image"`` (``input_shape`` is ``(C, H, W)``; standardised per channel) or
    ``"tokens"`` (integer token ids ``0..vocab_size-1``, one per position, never scaled;
    held as float32, which is exact for ids below 2**24).
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    task: Task
    feature_names: list[str]
    label_name: str
    class_names: list[str] | None = None
    input_shape: tuple[int, ...] | None = None
    source: Literal["builtin", "upload"] = "upload"
    options: dict[str, Any] = field(default_factory=dict)
    modality: Literal["tabular", "image", "tokens"] = "tabular"
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        """Coerce dtypes and check that the parts agree with each other (not the data's quality)."""
        if self.task not in TASKS:
            raise InvalidInput(f"task must be 'classification' or 'regression', got {self.task!r}")
        X = np.asarray(self.X)
        if X.ndim != 2:
            raise InvalidDataset(f"X must be 2-D (rows, features), got shape {X.shape}")
        self.X = np.ascontiguousarray(X, dtype=np.float32)
        y = np.asarray(self.y)
        if y.ndim != 1:
            raise InvalidDataset(f"y must be 1-D, got shape {y.shape}")
        if len(y) != len(self.X):
            raise InvalidDataset(
                f"X has {len(self.X)} rows but y has {len(y)} labels; they must match row for row"
            )
        self.feature_names = [str(f) for f in self.feature_names]
        if len(self.feature_names) != self.X.shape[1]:
            raise InvalidDataset(
                f"{len(self.feature_names)} feature names for {self.X.shape[1]} feature columns"
            )
        if self.task == "classification":
            if y.dtype.kind not in "iub":
                raise InvalidDataset("classification labels must be integer class indices")
            self.y = np.ascontiguousarray(y, dtype=np.int64)
            if self.class_names is None:
                k = int(self.y.max()) + 1 if len(self.y) else 0
                self.class_names = [str(i) for i in range(k)]
            self.class_names = [str(c) for c in self.class_names]
            if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(self.class_names)):
                raise InvalidDataset(
                    f"class indices must lie in [0, {len(self.class_names) - 1}] "
                    f"(one per class name), got [{self.y.min()}, {self.y.max()}]"
                )
        else:
            self.y = np.ascontiguousarray(y, dtype=np.float32)
            self.class_names = None
        if self.input_shape is not None:
            self.input_shape = tuple(int(s) for s in self.input_shape)
            if math.prod(self.input_shape) != self.X.shape[1]:
                raise InvalidDataset(
                    f"input_shape {self.input_shape} holds {math.prod(self.input_shape)} values "
                    f"but each row has {self.X.shape[1]} features"
                )
        self._check_modality()

    def _check_modality(self) -> None:
        if self.modality not in MODALITIES:
            raise InvalidInput(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.modality == "image" and (self.input_shape is None or len(self.input_shape) != 3):
            raise InvalidDataset(
                f"image data needs X of shape (N, C, H, W); got rows of shape {self.input_shape}"
            )
        if self.modality != "tokens":
            if self.vocab_size is not None:
                raise InvalidDataset("vocab_size is only for token data (modality 'tokens')")
            return
        if self.input_shape is not None:
            raise InvalidDataset("token data is (N, T): one token id per position, no input_shape")
        v = self.vocab_size
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= int(v) <= MAX_VOCAB:
            raise InvalidDataset(f"vocab_size must be an integer in [1, {MAX_VOCAB}], got {v!r}")
        self.vocab_size = int(v)
        if self.X.size:
            lo, hi = float(self.X.min()), float(self.X.max())
            if lo < 0 or hi >= self.vocab_size:
                raise InvalidDataset(
                    f"token ids must lie in 0..{self.vocab_size - 1} (vocab_size {self.vocab_size}); "
                    f"found {lo:g}..{hi:g}"
                )

    @property
    def n_rows(self) -> int:
        """Number of examples."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of feature columns (after flattening N-D inputs)."""
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int | None:
        """Number of classes, or None for regression."""
        return len(self.class_names) if self.class_names is not None else None

    @property
    def n_outputs(self) -> int:
        """Width of a network's output layer: the class count, or 1 for regression."""
        return self.n_classes if self.n_classes is not None else 1

    def _label_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "task": self.task,
            "label_name": self.label_name,
            "class_names": self.class_names,
            "feature_names": self.feature_names,
            "input_shape": list(self.input_shape) if self.input_shape is not None else None,
        }
        if self.modality != "tabular":  # only then: tabular hashes stay what they were
            meta["modality"] = self.modality
            meta["vocab_size"] = self.vocab_size
        return meta

    def content_hash(self) -> str:
        """SHA-256 of the arrays (shape, dtype, bytes) and label metadata, as hex.

        The name, source and generation options are left out on purpose, so the
        same data uploaded twice under different names is recognised as one.
        """
        h = hashlib.sha256()
        for arr in (self.X, self.y):
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(json.dumps(self._label_meta(), sort_keys=True).encode())
        return h.hexdigest()

    def to_npz_bytes(self, *, compress: bool = True) -> bytes:
        """Serialise to NPZ: X, y and the metadata as UTF-8 JSON in a uint8 array.

        No object arrays, so :meth:`from_npz_bytes` loads it with ``allow_pickle=False``.
        ``compress=False`` is much faster for large dense float data, which barely
        compresses (the teacher set at 10,000 rows: ~1.7 s compressed).
        """
        meta = {
            "format_version": _FORMAT_VERSION,
            "name": self.name,
            "source": self.source,
            "options": self.options,
            **self._label_meta(),
        }
        buf = io.BytesIO()
        meta_bytes = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        arrays: dict[str, np.ndarray] = {"X": self.X, "y": self.y, _META_KEY: meta_bytes}
        (np.savez_compressed if compress else np.savez)(buf, allow_pickle=False, **arrays)
        return buf.getvalue()

    @classmethod
    def from_npz_bytes(cls, data: bytes, *, max_bytes: int | None = None) -> Dataset:
        """Load what :meth:`to_npz_bytes` wrote (an artifact), with the same guards as uploads."""
        # Artifacts are ours (built-ins may exceed the upload limit), but still bounded.
        limit = max_bytes if max_bytes is not None else max(_limits()["max_bytes"], _ARTIFACT_BYTES)
        arrays = _read_npz_members(data, ("X", "y", _META_KEY), limit=limit, filename="artifact")
        try:
            meta = json.loads(arrays[_META_KEY].tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidDataset(f"dataset artifact has unreadable metadata: {exc}") from exc
        if meta.get("format_version") != _FORMAT_VERSION:
            raise InvalidDataset(
                f"dataset artifact format {meta.get('format_version')!r} is not supported "
                f"(expected {_FORMAT_VERSION}); re-register the dataset"
            )
        return cls(
            name=meta["name"],
            X=arrays["X"],
            y=arrays["y"],
            task=meta["task"],
            feature_names=meta["feature_names"],
            label_name=meta["label_name"],
            class_names=meta["class_names"],
            input_shape=tuple(meta["input_shape"]) if meta["input_shape"] is not None else None,
            source=meta["source"],
            options=meta.get("options") or {},
            modality=meta.get("modality", "tabular"),
            vocab_size=meta.get("vocab_size"),
        )

    def schema(self) -> dict[str, Any]:
        """A JSON-able summary for the API, the CLI and the dataset table."""
        out: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "task": self.task,
            "n_rows": self.n_rows,
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "feature_names": self.feature_names,
            "label_name": self.label_name,
            "class_names": self.class_names,
            "input_shape": list(self.input_shape) if self.input_shape is not None else None,
            "options": self.options,
            "content_hash": self.content_hash(),
            "modality": self.modality,
            "vocab_size": self.vocab_size,
        }
        if self.task == "classification":
            out["class_counts"] = np.bincount(self.y, minlength=self.n_outputs).tolist()
        else:
            y = self.y.astype(np.float64)
            out["target_stats"] = {
                "min": float(y.min()),
                "max": float(y.max()),
                "mean": float(y.mean()),
                "std": float(y.std()),
            }
        return out


def validate_dataset(ds: Dataset, *, min_rows: int = MIN_ROWS) -> Dataset:
    """Check that a dataset can be trained on; raise :class:`InvalidDataset` saying why not.

    Rows, feature columns, finite values, at least two classes and
    :data:`MIN_ROWS_PER_CLASS` rows per class (for a stratified split).
    """
    if ds.n_rows == 0:
        raise InvalidDataset(f"dataset '{ds.name}' has no rows")
    if ds.n_features == 0:
        raise InvalidDataset(
            f"dataset '{ds.name}' has no feature columns (only the label '{ds.label_name}')"
        )
    if ds.n_rows < min_rows:
        raise InvalidDataset(
            f"dataset '{ds.name}' has {ds.n_rows} rows; at least {min_rows} are needed "
            "for a train/validation/test split"
        )
    finite = np.isfinite(ds.X)
    if not finite.all():
        bad_per_col = (~finite).sum(axis=0)
        cols = np.flatnonzero(bad_per_col)
        listed = ", ".join(f"'{ds.feature_names[c]}' ({bad_per_col[c]})" for c in cols[:5])
        more = f" and {len(cols) - 5} more columns" if len(cols) > 5 else ""
        n_nan = int(np.isnan(ds.X).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise InvalidDataset(
            f"features contain {n_nan} NaN/missing and {n_inf} infinite (or beyond float32 range) "
            f"values in {len(cols)} column(s): {listed}{more}; fill or drop those rows"
        )
    if ds.task == "regression":
        bad = ~np.isfinite(ds.y)
        if bad.any():
            raise InvalidDataset(
                f"label '{ds.label_name}' has {int(bad.sum())} NaN or infinite values "
                f"(first at row {int(np.flatnonzero(bad)[0])}); fill or drop those rows"
            )
        return ds
    counts = np.bincount(ds.y, minlength=ds.n_outputs)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        only = ds.class_names[present[0]] if len(present) and ds.class_names else "?"
        raise InvalidDataset(
            f"label '{ds.label_name}' has a single class ({only!r}); classification needs at "
            "least 2 classes"
        )
    few = [i for i in range(len(counts)) if counts[i] < MIN_ROWS_PER_CLASS]
    if few:
        names = ds.class_names or []
        listed = ", ".join(
            f"{names[i]!r} ({counts[i]} row{'' if counts[i] == 1 else 's'})" for i in few[:5]
        )
        more = f" and {len(few) - 5} more" if len(few) > 5 else ""
        raise InvalidDataset(
            f"label '{ds.label_name}': every class needs at least {MIN_ROWS_PER_CLASS} rows for a "
            f"stratified train/validation/test split; too few in {listed}{more}. Add rows, merge "
            "rare classes or drop them"
        )
    return ds
