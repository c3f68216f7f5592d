"""Compact, portable array storage: float32 little-endian bytes plus a shape.

Curves and histograms are read far more often than written and are only ever
plotted, so float32 halves their size; a fixed byte order makes a row written on
one machine readable on any other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_DTYPE = np.dtype("<f4")


def pack(arr: np.ndarray | Sequence[float]) -> bytes:
    """The array's values as float32 little-endian bytes (C order; shape not included)."""
    return np.ascontiguousarray(arr, dtype=_DTYPE).tobytes()


def unpack(b: bytes, shape: Sequence[int] | int) -> np.ndarray:
    """A writable native float32 array of ``shape`` from :func:`pack`'s bytes.

    ``shape`` may contain one ``-1`` (e.g. ``(-1,)`` for a 1-D array of any length).
    Raises ValueError when the byte count does not fit the shape.
    """
    if len(b) % _DTYPE.itemsize:
        raise ValueError(f"{len(b)} bytes is not a whole number of float32 values")
    flat = np.frombuffer(b, dtype=_DTYPE)
    dims = (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape)
    try:
        out = flat.reshape(dims)
    except ValueError as exc:
        raise ValueError(f"{flat.size} float32 values do not fit shape {dims}") from exc
    return out.astype(np.float32, copy=True)
