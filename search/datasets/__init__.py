"""Datasets: built-in catalogue, safe file parsing, validation and seeded splits.

Everything a search trains on enters through this package, as a :class:`Dataset`:

* built-in sets by name (:data:`BUILTINS`, :func:`load_builtin`): scikit-learn's
  bundled tables, MNIST-1D generated locally, two spirals and a teacher-network set;
* user files (:func:`load_file`): CSV, Parquet or NPZ, recognised by content as well
  as by extension, size-limited before anything is parsed, and never unpickled;
* :func:`resolve_dataset` picks between the two for the CLI and the API.

:func:`split_dataset` makes the train/validation/test split (stratified for
classification) and fits the standardisation on the training rows only, so no
statistic of the validation or test rows leaks into training.

Label rule (when the caller does not give ``task``): see :mod:`search.datasets.labels`.

Modules: ``dataset`` (the :class:`Dataset` container and :func:`validate_dataset`),
``builtins`` (the catalogue), ``files`` (upload parsing), ``labels`` (label choice,
encoding and task inference), ``splits`` (splits and scalers), ``resolve``
(:func:`resolve_dataset`); ``_common`` and ``_npz`` hold what several of them share.

This package imports numpy only at import time (pandas with the first file parsed,
scikit-learn for its bundled tables other than digits, pyarrow and mnist1d lazily),
never torch: the API process validates uploads without loading torch, and
``actsearch search`` reaches its first epoch sooner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._common import MIN_ROWS, Task
from ._common import TASKS as TASKS
from .builtins import (
    BUILTINS,
    BuiltinEstimate,
    BuiltinSpec,
    estimate_builtin,
    list_builtins,
    load_builtin,
)
from .dataset import MIN_ROWS_PER_CLASS, Dataset, validate_dataset
from .labels import DEFAULT_LABEL_NAMES as DEFAULT_LABEL_NAMES
from .labels import MAX_CLASSES, MAX_INFERRED_CLASSES
from .resolve import resolve_dataset
from .splits import Splits, apply_scaler, inverse_target, split_dataset

if TYPE_CHECKING:
    from .files import load_file



def __getattr__(name: str) -> Any:
    if name == "load_file":  # pandas: loaded with the first file parsed
        from .files import load_file

        return load_file
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BUILTINS",
    "BuiltinEstimate",
    "BuiltinSpec",
    "Dataset",
    "MAX_CLASSES",
    "MAX_INFERRED_CLASSES",
    "MIN_ROWS",
    "MIN_ROWS_PER_CLASS",
    "Splits",
    "Task",
    "apply_scaler",
    "estimate_builtin",
    "inverse_target",
    "list_builtins",
    "load_builtin",
    "load_file",
    "resolve_dataset",
    "split_dataset",
    "validate_dataset",
]
