"""Datasets from a Python session: ``(X, y)`` arrays or a pandas DataFrame.

``actsearch.search(data=...)`` in a notebook hands over objects, not files. They
go through the same checks as an upload (limits, numeric features, finite
values, label encoding and task inference, rows per class) and become the same
:class:`Dataset`, so what is stored is exactly what an upload of the same table
would store. Nothing is pickled: only numeric arrays are accepted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.errors import InvalidDataset, PayloadTooLarge

from ._common import Task, _limits
from .dataset import Dataset, validate_dataset
from .files import _from_frame
from .labels import _encode_labels


def _check_limits(n_rows: int, n_features: int, what: str) -> None:
    lim = _limits()
    if n_rows > lim["max_rows"]:
        raise PayloadTooLarge(f"{what} has {n_rows} rows, above the limit of {lim['max_rows']}; "
                              "sample it or raise ACTSEARCH_LIMITS__MAX_ROWS")
    if n_features > lim["max_columns"]:
        raise PayloadTooLarge(f"{what} has {n_features} features, above the limit of "
                              f"{lim['max_columns']}; raise ACTSEARCH_LIMITS__MAX_FEATURES")


def from_arrays(X: Any, y: Any, *, name: str = "arrays", task: Task | None = None,
                feature_names: list[str] | None = None) -> Dataset:
    """A dataset from numeric arrays: ``X`` ``(N, D)`` or ``(N, *shape)`` (images), ``y`` ``(N,)``.

    N-D rows are flattened and their shape kept as ``input_shape`` (a CNN, or the
    user's own module, gets them back in that shape). Labels follow the upload
    rule: integers, strings or booleans are classes unless ``task`` says otherwise.
    """
    try:
        X = np.asarray(X)
        y = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise InvalidDataset(f"X and y must be numeric arrays: {exc}") from None
    if X.dtype == object or X.dtype.kind not in "biuf":
        raise InvalidDataset(f"X must hold numbers (got dtype {X.dtype}); encode text or "
                             "categories as numbers first")
    if y.dtype == object:
        raise InvalidDataset("y must be a plain array of numbers, strings or booleans, not "
                             "Python objects")
    if X.ndim < 2:
        raise InvalidDataset(f"X must have one row per example, shape (rows, features) or "
                             f"(rows, *input_shape); got shape {X.shape}")
    if y.ndim != 1:
        raise InvalidDataset(f"y must be 1-D (one label per row), got shape {y.shape}")
    if len(X) != len(y):
        raise InvalidDataset(f"X has {len(X)} rows but y has {len(y)} labels; they must match "
                             "row for row")
    input_shape = tuple(int(s) for s in X.shape[1:]) if X.ndim > 2 else None
    flat = X.reshape(len(X), -1).astype(np.float64)
    _check_limits(flat.shape[0], flat.shape[1], f"'{name}'")
    names = feature_names or [f"x{i}" for i in range(flat.shape[1])]
    encoded, task_, class_names = _encode_labels(y, task=task, label_name="y")
    ds = Dataset(name=name, X=flat, y=encoded, task=task_, feature_names=names, label_name="y",
                 class_names=class_names, input_shape=input_shape, source="upload")
    return validate_dataset(ds)


def from_frame(df: pd.DataFrame, *, label: str | None = None, name: str = "dataframe",
               task: Task | None = None) -> Dataset:
    """A dataset from a DataFrame, read exactly as an uploaded CSV's table would be."""
    if not isinstance(df, pd.DataFrame):
        raise InvalidDataset(f"expected a pandas DataFrame, got {type(df).__name__}")
    lim = _limits()
    ds = _from_frame(df.copy(), fname=name, name=name, label=label, task=task,
                     max_rows=lim["max_rows"], max_columns=lim["max_columns"])
    return validate_dataset(ds)
