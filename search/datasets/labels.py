"""Picking the label column and encoding labels, inferring the task when it is not given.

Label rule (when the caller does not give ``task``): text and boolean labels are
classes; integer labels, and float labels whose values are all whole numbers, are
classes when there are at most :data:`MAX_INFERRED_CLASSES` distinct values;
everything else (other float labels, integers with many values) is regression.
Pass ``task=`` to override. A classification label has at most
:data:`MAX_CLASSES` classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import InvalidDataset

from ._common import Task

if TYPE_CHECKING:  # pandas loads with the first file parsed, not with this package
    import pandas as pd

#: Most distinct integer-valued labels that are read as classes when ``task`` is not given.
MAX_INFERRED_CLASSES = 50
#: Most classes a classification label may have: each is an output unit of every candidate.
MAX_CLASSES = 1_000
#: Label column names picked automatically (case-insensitive) when ``label`` is not given.
DEFAULT_LABEL_NAMES: tuple[str, ...] = ("label", "target", "y", "class")


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


def _class_name(v: Any) -> str:
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _encode_labels(
    raw: pd.Series | np.ndarray, *, task: Task | None, label_name: str
) -> tuple[np.ndarray, Task, list[str] | None]:
    """Map labels to class indices or float targets, inferring the task by the module's rule."""
    import pandas as pd

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
        uniques, y = np.unique(values, return_inverse=True)
        names = [_class_name(u) for u in uniques]
    elif is_bool:
        uniques, y = np.unique(s.to_numpy(dtype=bool), return_inverse=True)
        names = [_class_name(u) for u in uniques]
    else:
        y, names = _factorize_text(s)
    if len(names) > MAX_CLASSES:
        raise InvalidDataset(
            f"label '{label_name}' has {len(names)} classes, above the limit of {MAX_CLASSES}; "
            "check that it is the right label column, group rare classes, or use "
            "task=regression for a numeric target"
        )
    return np.asarray(y, dtype=np.int64).reshape(-1), "classification", names


def _factorize_text(s: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Class indices and sorted class names of a text (or mixed) label column.

    A categorical column (a dictionary-encoded Parquet column) is handled through its
    codes and categories only, so long or repeated strings are never copied per row.
    Values whose text is equal (``1`` and ``"1"``) are one class, as their names are.
    """
    import pandas as pd

    if isinstance(s.dtype, pd.CategoricalDtype):
        codes = s.cat.codes.to_numpy()
        cats = [str(c) for c in s.cat.categories]
    else:
        codes, found = pd.factorize(s.astype(str))
        cats = [str(c) for c in found]
    used = np.unique(codes)
    names = sorted({cats[i] for i in used})
    index = {n: i for i, n in enumerate(names)}
    lut = np.full(len(cats), -1, dtype=np.int64)
    lut[used] = [index[cats[i]] for i in used]
    return lut[codes], names
