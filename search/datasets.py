"""Datasets: built-in catalogue, safe file parsing, validation and seeded splits.

Everything a search trains on enters through this module, as a :class:`Dataset`:

* built-in sets by name (:data:`BUILTINS`, :func:`load_builtin`): scikit-learn's
  bundled tables, MNIST-1D generated locally, two spirals and a teacher-network set;
* user files (:func:`load_file`): CSV, Parquet or NPZ, recognised by content as well
  as by extension, size-limited before anything is parsed, and never unpickled;
* :func:`resolve_dataset` picks between the two for the CLI and the API.

:func:`split_dataset` makes the train/validation/test split (stratified for
classification) and fits the standardisation on the training rows only, so no
statistic of the validation or test rows leaks into training.

Label rule (when the caller does not give ``task``): text and boolean labels are
classes; integer labels, and float labels whose values are all whole numbers, are
classes when there are at most :data:`MAX_INFERRED_CLASSES` distinct values;
everything else (other float labels, integers with many values) is regression.
Pass ``task=`` to override.

This module imports numpy, pandas and scikit-learn only (pyarrow and mnist1d
lazily), never torch: the API process validates uploads without loading torch.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from actsearch.errors import InvalidDataset, InvalidInput, PayloadTooLarge, UnsupportedMediaType

__all__ = [
    "BUILTINS",
    "BuiltinSpec",
    "Dataset",
    "MAX_INFERRED_CLASSES",
    "MIN_ROWS",
    "MIN_ROWS_PER_CLASS",
    "Splits",
    "Task",
    "apply_scaler",
    "inverse_target",
    "list_builtins",
    "load_builtin",
    "load_file",
    "resolve_dataset",
    "split_dataset",
    "validate_dataset",
]

Task = Literal["classification", "regression"]
TASKS: tuple[str, ...] = ("classification", "regression")

#: Fewest rows a dataset may have: below this a 3-way split is noise.
MIN_ROWS = 20
#: Fewest rows per class: what scikit-learn's stratified split needs. A class this rare
#: may be absent from validation and test; larger ``test_fraction`` values can need more,
#: which :func:`split_dataset` reports.
MIN_ROWS_PER_CLASS = 2
#: Most distinct integer-valued labels that are read as classes when ``task`` is not given.
MAX_INFERRED_CLASSES = 50
#: Label column names picked automatically (case-insensitive) when ``label`` is not given.
DEFAULT_LABEL_NAMES: tuple[str, ...] = ("label", "target", "y", "class")

_CSV_EXTS = (".csv", ".tsv", ".txt")
_PARQUET_EXTS = (".parquet", ".pq")
_NPZ_EXTS = (".npz",)
_META_KEY = "__actsearch_meta__"
_FORMAT_VERSION = 1
_ARTIFACT_BYTES = 2 * 1024**3
_FILE_OPTIONS = frozenset({"filename", "name", "max_bytes", "max_rows", "max_columns"})


# --------------------------------------------------------------------------- #
# Dataset
# --------------------------------------------------------------------------- #


@dataclass(eq=False)
class Dataset:
    """A validated, in-memory dataset: float32 features and encoded labels.

    ``y`` holds class indices (int64) for classification, whose original labels are
    ``class_names[i]``; for regression it holds float32 targets and ``class_names`` is
    None. ``input_shape`` lets a CNN reshape a row (e.g. ``(1, 8, 8)`` for digits);
    it is None for plain tables. ``options`` records how a built-in was generated.
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
        return {
            "task": self.task,
            "label_name": self.label_name,
            "class_names": self.class_names,
            "feature_names": self.feature_names,
            "input_shape": list(self.input_shape) if self.input_shape is not None else None,
        }

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


# --------------------------------------------------------------------------- #
# Built-in datasets
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class BuiltinSpec:
    """One catalogue entry: what it is, its task, its options with defaults, and its loader.

    ``limits`` maps numeric options to their inclusive (low, high) range.
    """

    name: str
    description: str
    task: Task
    defaults: Mapping[str, Any]
    loader: Callable[..., Dataset]
    limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """JSON-able view for the API and the CLI (no loader)."""
        return {
            "name": self.name,
            "description": self.description,
            "task": self.task,
            "defaults": dict(self.defaults),
            "limits": {k: list(v) for k, v in self.limits.items()},
        }


def _from_sklearn(
    name: str, loader_name: str, label_name: str, input_shape: tuple[int, ...] | None = None
) -> Dataset:
    """Wrap one of scikit-learn's bundled (no download) datasets."""
    from sklearn import datasets as skd

    bunch = getattr(skd, loader_name)()
    task: Task = "regression" if name == "diabetes" else "classification"
    class_names = None
    if task == "classification":
        class_names = [str(c) for c in bunch.target_names]
    return Dataset(
        name=name,
        X=bunch.data,
        y=bunch.target,
        task=task,
        feature_names=[str(f) for f in bunch.feature_names],
        label_name=label_name,
        class_names=class_names,
        input_shape=input_shape,
        source="builtin",
    )


def _digits() -> Dataset:
    return _from_sklearn("digits", "load_digits", "digit", input_shape=(1, 8, 8))


def _breast_cancer() -> Dataset:
    return _from_sklearn("breast_cancer", "load_breast_cancer", "diagnosis")


def _wine() -> Dataset:
    return _from_sklearn("wine", "load_wine", "cultivar")


def _iris() -> Dataset:
    return _from_sklearn("iris", "load_iris", "species")


def _diabetes() -> Dataset:
    return _from_sklearn("diabetes", "load_diabetes", "progression")


def _mnist1d(size: int, seed: int) -> Dataset:
    """MNIST-1D generated locally with ``make_dataset`` (never its downloader: no network).

    mnist1d seeds the global ``random``/``np.random`` state; it is saved and restored so
    generating a dataset has no side effect on the caller. Its own train/test split is
    merged back into one pool because :func:`split_dataset` splits.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(size)
    args.seed = int(seed)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    X = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
    y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    return Dataset(
        name="mnist1d",
        X=X,
        y=y,
        task="classification",
        feature_names=[f"t{i}" for i in range(X.shape[1])],
        label_name="digit",
        class_names=[str(i) for i in range(10)],
        input_shape=(1, X.shape[1]),
        source="builtin",
    )


def _two_spirals(n: int, noise: float, seed: int) -> Dataset:
    """Two interleaved spirals (1.5 turns each): tiny, yet needs a non-linear boundary."""
    rng = np.random.default_rng(seed)
    n0 = n // 2
    n1 = n - n0
    t = np.sqrt(rng.random(n)) * 3 * np.pi  # (n,) angle, denser near the centre
    sign = np.concatenate([np.ones(n0), -np.ones(n1)])
    pts = np.stack([-t * np.cos(t), t * np.sin(t)], axis=1) * sign[:, None] / (3 * np.pi)
    pts += noise * rng.standard_normal((n, 2))
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n1, np.int64)])
    perm = rng.permutation(n)
    return Dataset(
        name="two_spirals",
        X=pts[perm],
        y=y[perm],
        task="classification",
        feature_names=["x1", "x2"],
        label_name="spiral",
        class_names=["0", "1"],
        source="builtin",
    )


_TEACHER_SIDE = 28
_TEACHER_FREQS = 7


def _smooth_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random low-frequency images: a 7x7 cosine spectrum with 1/f amplitude, ~unit pixel variance."""
    side, k = _TEACHER_SIDE, _TEACHER_FREQS
    freqs = np.arange(k)
    grid = (np.arange(side) + 0.5) / side
    basis = np.cos(np.pi * np.outer(grid, freqs))  # (28, k)
    amp = np.outer(1.0 / (1 + freqs), 1.0 / (1 + freqs))  # (k, k)
    # Mean pixel variance of this random field, used to scale it to unit variance.
    b2 = (basis**2).mean(axis=0)  # (k,)
    scale = math.sqrt(float(b2 @ (amp**2) @ b2))
    coef = rng.standard_normal((n, k, k)) * (amp / scale)  # (n, k, k)
    imgs = np.einsum("hk,nkl,wl->nhw", basis, coef, basis, optimize=True)  # (n, 28, 28)
    return imgs.reshape(n, side * side)


def _teacher(size: int, seed: int, teacher_seed: int, hidden: int, n_classes: int) -> Dataset:
    """Labels from a fixed random tanh MLP (784-hidden-classes) on smooth 28x28 images.

    ``teacher_seed`` fixes the teacher (the task), ``seed`` the inputs (the sample).
    The output biases are calibrated on a fixed sample drawn from the teacher's seed,
    so classes are roughly balanced and a row's label does not depend on ``size``.
    Bit-exact only on one machine: BLAS may round differently elsewhere.
    """
    d = _TEACHER_SIDE * _TEACHER_SIDE
    trng = np.random.default_rng([teacher_seed, 7919])
    w1 = trng.standard_normal((d, hidden)) * (2.0 / math.sqrt(d))  # (784, H), gain 2: tanh bends
    b1 = 0.5 * trng.standard_normal(hidden)
    w2 = trng.standard_normal((hidden, n_classes)) / math.sqrt(hidden)  # (H, C)

    def logits(x: np.ndarray) -> np.ndarray:
        return np.tanh(x @ w1 + b1) @ w2  # (n, C)

    calib = logits(_smooth_images(trng, 4096))
    b2 = -calib.mean(axis=0)
    target = 1.0 / n_classes
    for _ in range(200):  # nudge biases until the calibration sample is near-balanced
        freq = np.bincount((calib + b2).argmax(axis=1), minlength=n_classes) / len(calib)
        if np.abs(freq - target).max() < 0.1 * target:
            break
        b2 -= 0.05 * calib.std() * np.log((freq + 1e-3) / target)
    X = _smooth_images(np.random.default_rng(seed), size).astype(np.float32)
    y = (logits(X.astype(np.float64)) + b2).argmax(axis=1).astype(np.int64)
    return Dataset(
        name="teacher",
        X=X,
        y=y,
        task="classification",
        feature_names=[
            f"pixel_{r}_{c}" for r in range(_TEACHER_SIDE) for c in range(_TEACHER_SIDE)
        ],
        label_name="teacher_class",
        class_names=[str(i) for i in range(n_classes)],
        input_shape=(1, _TEACHER_SIDE, _TEACHER_SIDE),
        source="builtin",
    )


BUILTINS: dict[str, BuiltinSpec] = {
    spec.name: spec
    for spec in (
        BuiltinSpec(
            "digits",
            "scikit-learn's 8x8 handwritten digits (1,797 rows, 64 pixels, 10 classes)",
            "classification",
            {},
            _digits,
        ),
        BuiltinSpec(
            "breast_cancer",
            "Wisconsin breast cancer diagnosis (569 rows, 30 features, 2 classes)",
            "classification",
            {},
            _breast_cancer,
        ),
        BuiltinSpec(
            "wine",
            "Wine cultivars from chemical analysis (178 rows, 13 features, 3 classes)",
            "classification",
            {},
            _wine,
        ),
        BuiltinSpec(
            "iris",
            "Fisher's iris species (150 rows, 4 features, 3 classes)",
            "classification",
            {},
            _iris,
        ),
        BuiltinSpec(
            "diabetes",
            "Diabetes progression after one year (442 rows, 10 features, regression)",
            "regression",
            {},
            _diabetes,
        ),
        BuiltinSpec(
            "mnist1d",
            "MNIST-1D: 1-D digit templates, shifted, sheared and noised (40 steps, 10 "
            "classes; size is rounded down to a multiple of 10); size=5000, seed=42 "
            "are the reference generation settings",
            "classification",
            {"size": 5000, "seed": 42},
            _mnist1d,
            {"size": (MIN_ROWS, 100_000)},
        ),
        BuiltinSpec(
            "two_spirals",
            "Two interleaved 2-D spirals with Gaussian noise (2 classes)",
            "classification",
            {"n": 1000, "noise": 0.05, "seed": 0},
            _two_spirals,
            {"n": (MIN_ROWS, 1_000_000), "noise": (0.0, 10.0)},
        ),
        BuiltinSpec(
            "teacher",
            "MNIST-shaped (1x28x28) smooth random images labelled by a fixed random "
            "784-hidden-classes tanh MLP; teacher_seed fixes the task, seed the sample",
            "classification",
            {"size": 10000, "seed": 0, "teacher_seed": 0, "hidden": 128, "n_classes": 10},
            _teacher,
            {"size": (MIN_ROWS, 100_000), "hidden": (1, 4096), "n_classes": (2, 100)},
        ),
    )
}


def list_builtins() -> list[dict[str, Any]]:
    """The catalogue as JSON-able dicts, for ``GET /datasets`` and ``actsearch datasets``."""
    return [spec.public() for spec in BUILTINS.values()]


def _coerce_option(builtin: str, key: str, value: Any, default: Any) -> Any:
    """Coerce an option (possibly a CLI/query string) to its default's type."""
    want = type(default)
    try:
        if isinstance(value, bool) or (
            want is int and isinstance(value, float) and not value.is_integer()
        ):
            raise ValueError
        out = want(value)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"option '{key}' of builtin '{builtin}' must be {want.__name__}, got {value!r}"
        ) from None
    if isinstance(out, float) and not math.isfinite(out):
        raise InvalidInput(f"option '{key}' of builtin '{builtin}' must be finite, got {value!r}")
    return out


def load_builtin(name: str, **options: Any) -> Dataset:
    """Load or generate a built-in dataset by name; options override the catalogue defaults.

    Generated sets are deterministic for their options. Raises :class:`InvalidDataset`
    for an unknown name and :class:`InvalidInput` for an unknown or out-of-range option.
    """
    spec = BUILTINS.get(name)
    if spec is None:
        raise InvalidDataset(f"unknown builtin dataset '{name}'; builtins: {', '.join(BUILTINS)}")
    unknown = sorted(set(options) - set(spec.defaults))
    if unknown:
        allowed = ", ".join(spec.defaults) or "none"
        raise InvalidInput(
            f"unknown option(s) {', '.join(unknown)} for builtin '{name}'; allowed: {allowed}"
        )
    opts = dict(spec.defaults)
    for key, value in options.items():
        opts[key] = _coerce_option(name, key, value, spec.defaults[key])
    for key, (lo, hi) in spec.limits.items():
        if not lo <= opts[key] <= hi:
            raise InvalidInput(
                f"option '{key}' of builtin '{name}' must be in [{lo}, {hi}], got {opts[key]}"
            )
    ds = spec.loader(**opts)
    ds.options = opts
    return validate_dataset(ds)


# --------------------------------------------------------------------------- #
# File parsing
# --------------------------------------------------------------------------- #


def _limits() -> dict[str, int]:
    """Size limits from Settings (``ACTSEARCH_LIMITS__*``), read when a call leaves them unset."""
    from actsearch.settings import get_settings

    lim = get_settings().limits
    return {
        "max_bytes": lim.max_upload_bytes,
        "max_rows": lim.max_rows,
        "max_columns": lim.max_features,
    }


def _human(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover


def _too_large(what: str, size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what} is {_human(size)}, above the limit of {_human(limit)}; use a smaller file "
        "or raise ACTSEARCH_LIMITS__MAX_UPLOAD_BYTES"
    )


_KIND_TEXT = {
    "parquet": "a Parquet file",
    "npz": "an NPZ archive",
    "zip": "a zip archive without .npy arrays",
    "excel": "an Excel workbook (export it as CSV)",
    "npy": "a single NumPy .npy array (save X and y together with np.savez)",
    "gzip": "gzip-compressed data (decompress it first)",
    "pickle": "a Python pickle (refused: unpickling can run code)",
    "hdf5": "an HDF5 file",
    "text": "CSV/plain text",
    "binary": "binary data",
}


def _sniff(data: bytes) -> str:
    """Guess a file's kind from its first bytes (and zip member names)."""
    head = data[:8192]
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            return "binary"
        if any(n.startswith("xl/") for n in names):
            return "excel"
        return "npz" if any(n.endswith(".npy") for n in names) else "zip"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x89HDF"):
        return "hdf5"
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return "excel"
    if len(head) > 1 and head[0] == 0x80 and head[1] in range(2, 6):
        return "pickle"
    if b"\x00" in head:
        return "binary"
    control = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13))
    return "binary" if head and control / len(head) > 0.05 else "text"


def _read_source(
    path_or_bytes: str | Path | bytes, filename: str | None, max_bytes: int
) -> tuple[bytes, str]:
    """Read the raw bytes, checking the size limit before reading a file from disk."""
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        data = bytes(path_or_bytes)
        name = filename or "upload"
        if len(data) > max_bytes:
            raise _too_large(f"'{name}'", len(data), max_bytes)
        return data, name
    path = Path(path_or_bytes)
    name = filename or path.name
    if not path.is_file():
        raise InvalidDataset(f"no such file: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise _too_large(f"'{name}'", size, max_bytes)
    return path.read_bytes(), name


def load_file(
    path_or_bytes: str | Path | bytes,
    *,
    filename: str | None = None,
    label: str | None = None,
    task: Task | None = None,
    name: str | None = None,
    max_bytes: int | None = None,
    max_rows: int | None = None,
    max_columns: int | None = None,
) -> Dataset:
    """Parse and validate a user's CSV, Parquet or NPZ file into a :class:`Dataset`.

    The format comes from the extension of ``filename`` (or the path) and must agree
    with the content; without a known extension the content decides. Limits default
    to the Settings' ``limits`` section. Nothing is ever unpickled.

    Args:
        path_or_bytes: a path on disk, or the uploaded bytes.
        filename: the original file name (its extension picks the parser).
        label: the label column (CSV/Parquet) or array (NPZ) name.
        task: "classification" or "regression"; inferred from the labels if None.
        name: the dataset's name; defaults to the file's stem.
        max_bytes: largest file (and largest uncompressed NPZ member) accepted.
        max_rows: most rows accepted.
        max_columns: most feature columns accepted.
    """
    if task is not None and task not in TASKS:
        raise InvalidInput(f"task must be 'classification' or 'regression', got {task!r}")
    lim = _limits() if None in (max_bytes, max_rows, max_columns) else {}
    max_bytes = max_bytes if max_bytes is not None else lim["max_bytes"]
    max_rows = max_rows if max_rows is not None else lim["max_rows"]
    max_columns = max_columns if max_columns is not None else lim["max_columns"]

    data, fname = _read_source(path_or_bytes, filename, max_bytes)
    if not data:
        raise InvalidDataset(f"'{fname}' is empty")
    ext = Path(fname).suffix.lower()
    kind = _sniff(data)
    looks = _KIND_TEXT.get(kind, kind)
    if ext in _CSV_EXTS:
        if kind != "text":
            raise UnsupportedMediaType(
                f"'{fname}' has a {ext} extension but is not text: it looks like {looks}"
            )
        fmt = "csv"
    elif ext in _PARQUET_EXTS:
        if kind != "parquet":
            raise UnsupportedMediaType(
                f"'{fname}' has a {ext} extension but lacks the Parquet magic bytes 'PAR1': "
                f"it looks like {looks}"
            )
        fmt = "parquet"
    elif ext in _NPZ_EXTS:
        if kind != "npz":
            raise UnsupportedMediaType(
                f"'{fname}' has a .npz extension but is not a zip of .npy arrays (what "
                f"np.savez writes): it looks like {looks}"
            )
        fmt = "npz"
    elif kind in ("text", "parquet", "npz"):
        fmt = "csv" if kind == "text" else kind
    else:
        raise UnsupportedMediaType(
            f"'{fname}' ({ext or 'no extension'}) is not a supported file: it looks like "
            f"{looks}. Upload CSV, Parquet or NPZ"
        )

    ds_name = name or Path(fname).stem or "upload"
    if fmt == "npz":
        ds = _load_npz(
            data,
            fname=fname,
            name=ds_name,
            label=label,
            task=task,
            max_bytes=max_bytes,
            max_rows=max_rows,
            max_columns=max_columns,
        )
    else:
        if fmt == "csv":
            df = _read_csv(data, fname=fname, ext=ext, max_columns=max_columns, max_rows=max_rows)
        else:
            df = _read_parquet(
                data, fname=fname, max_bytes=max_bytes, max_rows=max_rows, max_columns=max_columns
            )
        ds = _from_frame(
            df,
            fname=fname,
            name=ds_name,
            label=label,
            task=task,
            max_rows=max_rows,
            max_columns=max_columns,
        )
    return validate_dataset(ds)


def _pick_delimiter(first_line: str, ext: str) -> str:
    if ext == ".tsv":
        return "\t"
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    return "," if counts[","] else max(counts, key=lambda d: counts[d])


def _read_csv(
    data: bytes, *, fname: str, ext: str, max_columns: int, max_rows: int
) -> pd.DataFrame:
    """Parse CSV text into a frame, turning pandas' errors into messages a user can act on."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # always decodes; a legacy-encoded CSV is still a CSV
    first = text.split("\n", 1)[0]
    sep = _pick_delimiter(first, ext)
    n_header = len(first.split(sep))
    if n_header - 1 > max_columns:
        raise PayloadTooLarge(
            f"'{fname}' has {n_header} columns, above the limit of {max_columns} features; "
            "drop columns or raise ACTSEARCH_LIMITS__MAX_FEATURES"
        )
    try:
        return pd.read_csv(io.StringIO(text), sep=sep, nrows=max_rows + 1)
    except pd.errors.EmptyDataError:
        raise InvalidDataset(f"'{fname}' has no header row and no data") from None
    except pd.errors.ParserError as exc:
        msg = str(exc).strip()
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
        if m:
            expected, line, saw = m.groups()
            raise InvalidDataset(
                f"'{fname}' line {line} has {saw} fields but earlier rows have {expected}; "
                "fix the ragged row (an unquoted delimiter inside a value is a common cause)"
            ) from None
        raise InvalidDataset(f"'{fname}' is not valid CSV: {msg}") from None


def _read_parquet(
    data: bytes, *, fname: str, max_bytes: int, max_rows: int, max_columns: int
) -> pd.DataFrame:
    """Read Parquet after checking its footer's row, column and uncompressed-size counts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(io.BytesIO(data)).metadata
        if meta.num_columns - 1 > max_columns:
            raise PayloadTooLarge(
                f"'{fname}' has {meta.num_columns} columns, above the limit of {max_columns} "
                "features; drop columns or raise ACTSEARCH_LIMITS__MAX_FEATURES"
            )
        if meta.num_rows > max_rows:
            raise PayloadTooLarge(
                f"'{fname}' has {meta.num_rows} rows, above the limit of {max_rows}; "
                "sample it or raise ACTSEARCH_LIMITS__MAX_ROWS"
            )
        raw = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if raw > max_bytes:
            raise _too_large(f"'{fname}' uncompressed", raw, max_bytes)
        return pd.read_parquet(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise InvalidDataset(f"'{fname}' is not a readable Parquet file: {exc}") from None


def _choose_label(columns: Sequence[str], label: str | None, fname: str) -> str:
    shown = ", ".join(repr(c) for c in columns[:20]) + (" ..." if len(columns) > 20 else "")
    if label is not None:
        if label not in columns:
            raise InvalidDataset(
                f"label column '{label}' is not in '{fname}'; available columns: {shown}"
            )
        return label
    found = [c for c in columns if c.lower() in DEFAULT_LABEL_NAMES]
    if len(found) == 1:
        return found[0]
    if not found:
        raise InvalidDataset(
            f"'{fname}' has no column named label, target, y or class; say which column holds "
            f"the labels with --label (label= in the API); columns: {shown}"
        )
    raise InvalidDataset(
        f"'{fname}' has several possible label columns ({', '.join(found)}); pick one with --label"
    )


def _from_frame(
    df: pd.DataFrame,
    *,
    fname: str,
    name: str,
    label: str | None,
    task: Task | None,
    max_rows: int,
    max_columns: int,
) -> Dataset:
    """Turn a CSV/Parquet frame into a Dataset: pick the label, check feature types, encode labels."""
    df.columns = [str(c) for c in df.columns]
    label_col = _choose_label(list(df.columns), label, fname)
    features = [c for c in df.columns if c != label_col]
    if len(features) > max_columns:
        raise PayloadTooLarge(
            f"'{fname}' has {len(features)} feature columns, above the limit of {max_columns}; "
            "drop columns or raise ACTSEARCH_LIMITS__MAX_FEATURES"
        )
    if len(df) > max_rows:
        raise PayloadTooLarge(
            f"'{fname}' has more than {max_rows} rows; sample it or raise ACTSEARCH_LIMITS__MAX_ROWS"
        )
    if len(df) == 0:
        raise InvalidDataset(f"'{fname}' has a header but no data rows")
    if not features:
        raise InvalidDataset(
            f"'{fname}' has no feature columns, only the label column '{label_col}'"
        )
    bad = [c for c in features if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        parts = []
        for c in bad[:5]:
            col = df[c]
            example = _first_non_numeric(col)
            parts.append(f"'{c}' ({example})" if example else f"'{c}' ({col.dtype})")
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise InvalidDataset(
            f"{len(bad)} feature column(s) are not numeric: {', '.join(parts)}{more}. Encode "
            "them as numbers (e.g. one-hot) or drop them; actsearch does not guess an encoding"
        )
    X = df[features].to_numpy(dtype=np.float64, na_value=np.nan)
    y, task_, class_names = _encode_labels(df[label_col], task=task, label_name=label_col)
    return Dataset(
        name=name,
        X=X,
        y=y,
        task=task_,
        feature_names=features,
        label_name=label_col,
        class_names=class_names,
        source="upload",
    )


def _first_non_numeric(col: pd.Series) -> str | None:
    """Describe the first value of a text column that is not a number, to point at the culprit."""
    if not (pd.api.types.is_string_dtype(col) or pd.api.types.is_object_dtype(col)):
        return None
    coerced = pd.to_numeric(col, errors="coerce")
    offending = np.flatnonzero(coerced.isna().to_numpy() & col.notna().to_numpy())
    if not len(offending):
        return None
    return f"e.g. {col.iloc[offending[0]]!r} at row {offending[0]}"


def _class_name(v: Any) -> str:
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _encode_labels(
    raw: pd.Series | np.ndarray, *, task: Task | None, label_name: str
) -> tuple[np.ndarray, Task, list[str] | None]:
    """Map labels to class indices or float targets, inferring the task by the module's rule."""
    s = pd.Series(raw)
    missing = s.isna().to_numpy()
    if missing.any():
        rows = ", ".join(str(i) for i in np.flatnonzero(missing)[:5])
        raise InvalidDataset(
            f"label '{label_name}' has {int(missing.sum())} missing/NaN values (rows {rows}"
            f"{' ...' if missing.sum() > 5 else ''}); fill or drop those rows"
        )
    is_bool = pd.api.types.is_bool_dtype(s)
    is_num = pd.api.types.is_numeric_dtype(s) and not is_bool
    if is_num:
        values = s.to_numpy(dtype=np.float64)
        inf = np.isinf(values)
        if inf.any():
            raise InvalidDataset(
                f"label '{label_name}' has {int(inf.sum())} infinite values "
                f"(first at row {int(np.flatnonzero(inf)[0])}); fill or drop those rows"
            )
    if task is None:
        if not is_num:
            task = "classification"
        else:
            integral = pd.api.types.is_integer_dtype(s) or bool(np.all(np.mod(values, 1) == 0))
            n_unique = len(np.unique(values))
            task = (
                "classification" if integral and n_unique <= MAX_INFERRED_CLASSES else "regression"
            )
    if task == "regression":
        if is_bool:
            return s.to_numpy(dtype=np.float32), task, None
        if not is_num:
            example = s.iloc[0]
            raise InvalidDataset(
                f"label '{label_name}' holds text (e.g. {example!r}); regression needs numeric "
                "labels. Use task=classification, or convert the column to numbers"
            )
        return values.astype(np.float32), task, None
    if is_num:
        keys = s.to_numpy()
    elif is_bool:
        keys = s.to_numpy(dtype=bool)
    else:
        keys = s.astype(str).to_numpy(dtype=str)
    uniques, y = np.unique(keys, return_inverse=True)
    return y.astype(np.int64).reshape(-1), "classification", [_class_name(u) for u in uniques]


def _npy_header(fp: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Read a .npy header (shape, dtype) without reading the data, to vet it first."""
    from numpy.lib import format as npformat

    version = npformat.read_magic(fp)
    if version == (1, 0):
        shape, _fortran, dtype = npformat.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _fortran, dtype = npformat.read_array_header_2_0(fp)
    else:
        raise ValueError(f".npy format version {version} is not supported")
    return tuple(shape), np.dtype(dtype)


def _read_npz_members(
    data: bytes, wanted: Sequence[str], *, limit: int, filename: str
) -> dict[str, np.ndarray]:
    """Safely read named arrays from an NPZ.

    Before decompressing anything, each member's declared uncompressed size must fit
    ``limit`` (zipfile stops at the declared size, so a lying header cannot inflate
    more); each array's header must declare a plain (non-object) dtype. Then
    ``np.load(allow_pickle=False)`` reads it, so a pickle is refused, never loaded.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise UnsupportedMediaType(f"'{filename}' is not a zip archive, so not an NPZ") from None
    with zf:
        members = {n[:-4]: zf.getinfo(n) for n in zf.namelist() if n.endswith(".npy")}
        missing = [w for w in wanted if w not in members]
        if missing:
            raise InvalidDataset(
                f"'{filename}' lacks array(s) {', '.join(missing)}; it holds: "
                f"{', '.join(members) or 'no .npy arrays'}"
            )
        total = 0
        for w in wanted:
            size = members[w].file_size
            total += size
            if size > limit or total > limit:
                raise _too_large(
                    f"array '{w}' in '{filename}' (uncompressed)", max(size, total), limit
                )
        for w in wanted:
            try:
                with zf.open(members[w]) as fp:
                    shape, dtype = _npy_header(fp)
            except (ValueError, OSError, zipfile.BadZipFile) as exc:
                raise InvalidDataset(
                    f"array '{w}' in '{filename}' is not a valid .npy: {exc}"
                ) from None
            if dtype.hasobject:
                raise InvalidDataset(
                    f"array '{w}' in '{filename}' has dtype object (pickled Python objects); "
                    "uploads are never unpickled. Save numeric arrays, e.g. "
                    "np.savez(f, X=X.astype('float32'), y=y)"
                )
            if dtype.names is not None or dtype.kind not in "biufUS":
                raise InvalidDataset(
                    f"array '{w}' in '{filename}' has unsupported dtype {dtype}; use numbers "
                    "(or strings for labels)"
                )
            nbytes = math.prod(shape) * dtype.itemsize
            if nbytes > limit:
                raise _too_large(f"array '{w}' in '{filename}'", nbytes, limit)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {w: npz[w] for w in wanted}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidDataset(f"'{filename}' could not be read as NPZ: {exc}") from None


def _load_npz(
    data: bytes,
    *,
    fname: str,
    name: str,
    label: str | None,
    task: Task | None,
    max_bytes: int,
    max_rows: int,
    max_columns: int,
) -> Dataset:
    """NPZ upload: arrays X (or x) and y (or ``label``); N-D X is flattened, keeping its shape."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        present = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    x_key = next((k for k in ("X", "x") if k in present), None)
    y_key = label if label is not None else next((k for k in ("y", "Y") if k in present), None)
    if x_key is None or y_key is None or y_key not in present:
        need = "X (or x)" if x_key is None else f"'{y_key or 'y'}'"
        raise InvalidDataset(
            f"'{fname}' needs arrays named X (or x) and y (or the one given by --label); "
            f"missing {need}; it holds: {', '.join(present) or 'no .npy arrays'}"
        )
    arrays = _read_npz_members(data, (x_key, y_key), limit=max_bytes, filename=fname)
    X, y = arrays[x_key], arrays[y_key]
    if X.dtype.kind not in "biuf":
        raise InvalidDataset(f"array '{x_key}' in '{fname}' must be numeric, got dtype {X.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InvalidDataset(
            f"array '{y_key}' in '{fname}' must be 1-D (one label per row), got shape {y.shape}; "
            "for one-hot labels save y.argmax(1)"
        )
    if X.ndim == 0:
        raise InvalidDataset(
            f"array '{x_key}' in '{fname}' is a scalar; it must have one row per example"
        )
    if len(X) != len(y):
        raise InvalidDataset(
            f"'{fname}': {x_key} has {len(X)} rows but {y_key} has {len(y)} labels; "
            "they must match row for row"
        )
    if len(X) > max_rows:
        raise PayloadTooLarge(
            f"'{fname}' has {len(X)} rows, above the limit of {max_rows}; sample it or raise "
            "ACTSEARCH_LIMITS__MAX_ROWS"
        )
    input_shape = tuple(int(s) for s in X.shape[1:]) if X.ndim > 2 else None
    X2 = X.reshape(len(X), -1) if X.ndim != 1 else X.reshape(-1, 1)
    if X2.shape[1] > max_columns:
        raise PayloadTooLarge(
            f"'{fname}' has {X2.shape[1]} features per row, above the limit of {max_columns}; "
            "raise ACTSEARCH_LIMITS__MAX_FEATURES"
        )
    if len(X2) == 0:
        raise InvalidDataset(f"'{fname}' has no rows")
    ys, task_, class_names = _encode_labels(y, task=task, label_name=y_key)
    return Dataset(
        name=name,
        X=X2,
        y=ys,
        task=task_,
        feature_names=[f"x{i}" for i in range(X2.shape[1])],
        label_name=y_key,
        class_names=class_names,
        input_shape=input_shape,
        source="upload",
    )


# --------------------------------------------------------------------------- #
# Resolution and splits
# --------------------------------------------------------------------------- #


def resolve_dataset(
    name_or_path: str | Path, *, label: str | None = None, task: Task | None = None, **opts: Any
) -> Dataset:
    """A builtin by name (``opts`` are its options) or a file path (``opts`` go to :func:`load_file`).

    A builtin name wins over a same-named file in the working directory only when no
    such file exists; give ``./name`` to force the file.
    """
    key = str(name_or_path)
    path = Path(key)
    if key in BUILTINS and not path.is_file():
        if label is not None:
            raise InvalidInput(f"builtin '{key}' has its own labels; do not pass --label")
        ds = load_builtin(key, **opts)
        if task is not None and task != ds.task:
            raise InvalidInput(f"builtin '{key}' is a {ds.task} dataset, not {task}")
        return ds
    if path.is_file():
        unknown = sorted(set(opts) - _FILE_OPTIONS)
        if unknown:
            raise InvalidInput(
                f"option(s) {', '.join(unknown)} apply to builtin datasets, not to the file '{key}'"
            )
        return load_file(path, label=label, task=task, **opts)
    raise InvalidDataset(
        f"'{key}' is neither a builtin dataset nor an existing file; builtins: "
        f"{', '.join(BUILTINS)}; or give the path of a CSV, Parquet or NPZ file"
    )


@dataclass(eq=False)
class Splits:
    """Standardised train/validation/test arrays plus what is needed to undo or reapply it.

    ``scaler`` (feature mean/std) and ``target_scaler`` (regression only) are fitted on
    the training rows; ship them with a trained model. For regression, ``y_*`` are in
    standardised units: R^2 is unchanged by that affine map, while MSE/RMSE/MAE must be
    mapped back with :func:`inverse_target` to read in the label's own units.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    idx_train: np.ndarray
    idx_val: np.ndarray
    idx_test: np.ndarray
    scaler: dict[str, list[float]]
    target_scaler: dict[str, float] | None
    label_map: list[str] | None
    task: Task
    input_shape: tuple[int, ...] | None
    seed: int

    @property
    def n_classes(self) -> int | None:
        """Number of classes, or None for regression."""
        return len(self.label_map) if self.label_map is not None else None


def apply_scaler(X: np.ndarray, scaler: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Standardise rows with a stored scaler (as training did), returning float32."""
    mean = np.asarray(scaler["mean"], dtype=np.float32)
    std = np.asarray(scaler["std"], dtype=np.float32)
    return ((np.asarray(X, dtype=np.float32) - mean) / std).astype(np.float32)


def inverse_target(y: np.ndarray, target_scaler: Mapping[str, float]) -> np.ndarray:
    """Map standardised regression outputs back to the label's own units."""
    return np.asarray(y, dtype=np.float64) * target_scaler["std"] + target_scaler["mean"]


def split_dataset(
    ds: Dataset, *, seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> Splits:
    """Seeded train/validation/test split, stratified for classification, scaled on train only.

    The test rows are split off first, then validation from the rest, each with
    scikit-learn's ``train_test_split``; the same seed always gives the same rows.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise InvalidInput(
            "val_fraction and test_fraction must each be in (0, 1) with a sum below 1, got "
            f"{val_fraction} and {test_fraction}"
        )
    from sklearn.model_selection import train_test_split

    n = ds.n_rows
    idx = np.arange(n)
    classify = ds.task == "classification"
    n_test = math.ceil(test_fraction * n)
    n_val = math.ceil(val_fraction * n)
    if n - n_test - n_val < 1 or min(n_test, n_val) < 1:
        raise InvalidDataset(f"{n} rows are too few for this split; need at least {MIN_ROWS}")
    if classify:
        k = int(np.count_nonzero(np.bincount(ds.y)))
        if min(n_test, n_val) < k:
            need = math.ceil(k / min(val_fraction, test_fraction))
            raise InvalidDataset(
                f"'{ds.name}' has {k} classes but its {min(n_test, n_val)}-row validation/test "
                f"split cannot hold one row of each; need about {need} rows, or larger fractions"
            )
    try:
        rest, test = train_test_split(
            idx, test_size=test_fraction, random_state=seed, stratify=ds.y if classify else None
        )
        train, val = train_test_split(
            rest,
            test_size=n_val / len(rest),
            random_state=seed,
            stratify=ds.y[rest] if classify else None,
        )
    except ValueError as exc:
        raise InvalidDataset(
            f"'{ds.name}' cannot be split into stratified train/validation/test sets: {exc}. "
            "Add rows to the rarest classes, merge or drop them, or use smaller fractions"
        ) from None

    X_train64 = ds.X[train].astype(np.float64)
    mean = X_train64.mean(axis=0)
    std = X_train64.std(axis=0)
    std[std == 0] = 1.0
    scaler = {"mean": mean.tolist(), "std": std.tolist()}

    target_scaler = None
    ys = ds.y
    if not classify:
        ym, ysd = (
            float(ds.y[train].astype(np.float64).mean()),
            float(ds.y[train].astype(np.float64).std()),
        )
        target_scaler = {"mean": ym, "std": ysd if ysd > 0 else 1.0}
        ys = ((ds.y.astype(np.float64) - ym) / target_scaler["std"]).astype(np.float32)

    return Splits(
        X_train=apply_scaler(ds.X[train], scaler),
        y_train=ys[train],
        X_val=apply_scaler(ds.X[val], scaler),
        y_val=ys[val],
        X_test=apply_scaler(ds.X[test], scaler),
        y_test=ys[test],
        idx_train=np.asarray(train, dtype=np.int64),
        idx_val=np.asarray(val, dtype=np.int64),
        idx_test=np.asarray(test, dtype=np.int64),
        scaler=scaler,
        target_scaler=target_scaler,
        label_map=ds.class_names,
        task=ds.task,
        input_shape=ds.input_shape,
        seed=seed,
    )
