"""Shared by the datasets modules: the task type, the row floor and the size-limit errors."""

from __future__ import annotations

from typing import Literal

from core.errors import PayloadTooLarge

Task = Literal["classification", "regression"]
TASKS: tuple[str, ...] = ("classification", "regression")

#: Fewest rows a dataset may have: below this a 3-way split is noise.
MIN_ROWS = 20


def _limits() -> dict[str, int]:
    """Size limits from Settings (``ACTSEARCH_LIMITS__*``), read when a call leaves them unset."""
    from core.settings import get_settings

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
