"""Safe reading of NPZ members: size and dtype checks before anything is decompressed.

Shared by user NPZ uploads and dataset artifacts; nothing is ever unpickled.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from core.errors import InvalidDataset, PayloadTooLarge, UnsupportedMediaType

from ._common import _human, _too_large

#: Largest zip central directory read: ``zipfile`` builds a Python object per member
#: (~0.5 KiB each), so a small archive listing millions of empty members is a memory
#: bomb of its own. 1 MiB is over ten thousand members; an NPZ has a handful.
MAX_ZIP_DIRECTORY_BYTES = 2**20

#: Called with (array name, shape, dtype) from each .npy header before any data is read.
HeaderCheck = Callable[[str, tuple[int, ...], np.dtype], None]


def zip_directory_size(data: bytes) -> int | None:
    """The central directory size the end-of-archive record declares, or None if there is none.

    Read from the last 64 KiB only, before ``zipfile`` parses the directory itself.
    A ZIP64 archive's 0xFFFFFFFF marker comes back as is: far above any limit.
    """
    tail = data[-(65_535 + 22):]
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    return int(struct.unpack_from("<I", tail, at + 12)[0])


def check_zip_directory(data: bytes, filename: str) -> None:
    """Refuse an archive whose member list alone would take too much memory to read."""
    size = zip_directory_size(data)
    if size is not None and size > MAX_ZIP_DIRECTORY_BYTES:
        raise PayloadTooLarge(
            f"'{filename}' lists {_human(size)} of zip members, above the limit of "
            f"{_human(MAX_ZIP_DIRECTORY_BYTES)}; an NPZ upload holds a few arrays (X and y), "
            "save just those with np.savez"
        )


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
    data: bytes, wanted: Sequence[str], *, limit: int, filename: str,
    check: HeaderCheck | None = None,
) -> dict[str, np.ndarray]:
    """Safely read named arrays from an NPZ.

    Before decompressing anything, each member's declared uncompressed size must fit
    ``limit`` (zipfile stops at the declared size, so a lying header cannot inflate
    more); each array's header must declare a plain (non-object) dtype. Then
    ``np.load(allow_pickle=False)`` reads it, so a pickle is refused, never loaded.
    ``check`` vets each header's shape (rows, features) before any data is read.
    """
    check_zip_directory(data, filename)
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
                    f"array '{w}' in '{filename}' has dtype object (pickled Python objects, "
                    "e.g. ragged sequences of different lengths); uploads are never "
                    "unpickled. Pad sequences to one length and save numeric arrays, e.g. "
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
            if check is not None:
                check(w, shape, dtype)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {w: npz[w] for w in wanted}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidDataset(f"'{filename}' could not be read as NPZ: {exc}") from None
