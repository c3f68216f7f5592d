"""Resolving a name or path to a dataset, for the CLI and the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import InvalidDataset, InvalidInput

from ._common import Task
from .builtins import BUILTINS, load_builtin
from .dataset import Dataset

_FILE_OPTIONS = frozenset({"filename", "name", "max_bytes", "max_rows", "max_columns"})


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
        from .files import load_file  # pandas: only for a file

        return load_file(path, label=label, task=task, **opts)
    raise InvalidDataset(
        f"'{key}' is neither a builtin dataset nor an existing file; builtins: "
        f"{', '.join(BUILTINS)}; or give the path of a CSV, Parquet or NPZ file"
    )
