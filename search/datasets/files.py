"""User files: CSV, Parquet or NPZ, recognised by content as well as by extension.

Size-limited before anything is parsed, and never unpickled; pyarrow is imported lazily.

About 550 lines in one module on purpose: the three readers share the sniffing, the
limit checks before decompression and the column validation, and a hostile file must
meet every check in the same order whichever reader it reaches.
"""

from __future__ import annotations

import csv
import io
import math
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InvalidDataset, InvalidInput, PayloadTooLarge, UnsupportedMediaType

from ._common import TASKS, Task, _human, _limits, _too_large
from ._npz import _read_npz_members, check_zip_directory
from .dataset import Dataset, validate_dataset
from .labels import _choose_label, _encode_labels

_CSV_EXTS = (".csv", ".tsv", ".txt")
_PARQUET_EXTS = (".parquet", ".pq")
_NPZ_EXTS = (".npz",)


_KIND_TEXT = {
    "parquet": "a Parquet file",
    "npz": "an NPZ archive",
    "zip": "a zip archive without .npy arrays",
    "excel": "an Excel workbook (export it as CSV)",
    "npy": "a single NumPy .npy array (save X and y together with np.savez)",
    "gzip": "gzip-compressed data (decompress it first)",
    "pickle": "a Python pickle (refused: unpickling can run code)",
    "hdf5": "an HDF5 file",
    "png": "a PNG image",
    "jpeg": "a JPEG image",
    "gif": "a GIF image",
    "pdf": "a PDF document",
    "text": "CSV/plain text",
    "binary": "binary data",
}


_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF8", "gif"),
    (b"%PDF-", "pdf"),
    (b"\x93NUMPY", "npy"),
    (b"\x1f\x8b", "gzip"),
    (b"\x89HDF", "hdf5"),
    (b"\xd0\xcf\x11\xe0", "excel"),
)


def _sniff(data: bytes, fname: str = "upload") -> str:
    """Guess a file's kind from its first bytes (and zip member names)."""
    head = data[:8192]
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        check_zip_directory(data, fname)  # before zipfile lists the members
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            return "binary"
        if any(n.startswith("xl/") for n in names):
            return "excel"
        return "npz" if any(n.endswith(".npy") for n in names) else "zip"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
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
    kind = _sniff(data, fname)
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


def _first_line(data: bytes) -> bytes:
    """The header line, ended by the first of ``\\r\\n``, ``\\n`` or a lone ``\\r``
    (old Mac files): splitting on ``\\n`` alone reads such a file as one huge line."""
    ends = [i for i in (data.find(b"\n"), data.find(b"\r")) if i >= 0]
    return data[: min(ends)] if ends else data


def check_unique_columns(names: list[str], fname: str) -> None:
    """InvalidDataset naming the columns that repeat, ignoring case and surrounding spaces.

    Two columns that differ only so are the same column to a reader, and a repeated
    label column would otherwise leak the label into the features.
    """
    seen: dict[str, list[str]] = {}
    for name in names:
        seen.setdefault(str(name).strip().casefold(), []).append(str(name))
    dupes = [group for group in seen.values() if len(group) > 1]
    if dupes:
        shown = "; ".join(" / ".join(repr(n) for n in group) for group in dupes[:5])
        more = f" and {len(dupes) - 5} more" if len(dupes) > 5 else ""
        raise InvalidDataset(
            f"'{fname}' has repeated column names (ignoring case and spaces): {shown}{more}; "
            "give every column a distinct name"
        )


def _pick_delimiter(first_line: str, ext: str) -> str:
    if ext == ".tsv":
        return "\t"
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    return "," if counts[","] else max(counts, key=lambda d: counts[d])


def _read_csv(
    data: bytes, *, fname: str, ext: str, max_columns: int, max_rows: int
) -> pd.DataFrame:
    """Parse CSV text into a frame, turning pandas' errors into messages a user can act on.

    The header line alone is decoded and counted first, so a file with an enormous
    column count is refused before the rest is decoded or parsed.
    """
    first = _first_line(data).decode("latin-1")  # separators are ASCII
    sep = _pick_delimiter(first, ext)
    n_header = first.count(sep) + 1
    if n_header - 1 > max_columns:
        raise PayloadTooLarge(
            f"'{fname}' has {n_header} columns, above the limit of {max_columns} features; "
            "drop columns or raise ACTSEARCH_LIMITS__MAX_FEATURES"
        )
    # pandas renames a repeated header ("label", "label.1") and would train on the copy.
    header = next(csv.reader([_first_line(data).decode("utf-8-sig", errors="replace")],
                             delimiter=sep), [])
    check_unique_columns(header, fname)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # always decodes; a legacy-encoded CSV is still a CSV
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


#: Bytes per decoded value of Parquet's fixed-width physical types (pandas/NumPy widths).
_PARQUET_WIDTH = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 8, "FLOAT": 4, "DOUBLE": 8}


def _parquet_decoded_bytes(meta: Any) -> int:
    """What the table takes once decoded, from the footer alone.

    The footer's ``total_byte_size`` counts *encoded* pages, so a dictionary- or
    RLE-encoded column of millions of identical values looks tiny there; here every
    value counts at its decoded width (``num_values`` includes nested list items).
    Text columns are read dictionary-encoded (see :func:`_read_parquet`): an index per
    value plus their encoded pages.
    """
    total = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            width = _PARQUET_WIDTH.get(col.physical_type)
            if width is None:  # BYTE_ARRAY / FIXED_LEN_BYTE_ARRAY
                total += col.num_values * 4 + col.total_uncompressed_size
            else:
                total += col.num_values * width
    return total


def _read_parquet(
    data: bytes, *, fname: str, max_bytes: int, max_rows: int, max_columns: int
) -> pd.DataFrame:
    """Read Parquet after checking its footer's row, column and decoded-size counts.

    Nothing is decompressed before the footer says the table fits the limits, and
    text columns stay dictionary-encoded (pandas categoricals), so a short string
    repeated a million times costs one index per row, not a million strings.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(io.BytesIO(data))
        meta = pf.metadata
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
        decoded = _parquet_decoded_bytes(meta)
        if decoded > max_bytes:
            raise PayloadTooLarge(
                f"'{fname}' would take {_human(decoded)} decoded ({meta.num_rows} rows x "
                f"{meta.num_columns} columns), above the limit of {_human(max_bytes)}; sample "
                "or split it, or raise ACTSEARCH_LIMITS__MAX_UPLOAD_BYTES"
            )
        schema = pf.schema_arrow
        check_unique_columns(list(schema.names), fname)
        text = [f.name for f in schema
                if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                or pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
        return pq.read_table(io.BytesIO(data), read_dictionary=text or None).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise InvalidDataset(f"'{fname}' is not a readable Parquet file: {exc}") from None


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
            example = _first_non_numeric(col) or _first_huge_integer(col)
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


def _first_huge_integer(col: pd.Series) -> str | None:
    """Point at an integer too large for 64 bits: pandas keeps such a column as Python
    objects, and without this the message would only say "object"."""
    if not pd.api.types.is_object_dtype(col):
        return None
    for row, value in enumerate(col.to_numpy()):
        if isinstance(value, int) and not -(2**63) <= value < 2**64:
            text = str(value)
            shown = text if len(text) <= 30 else f"{text[:12]}...{text[-6:]} ({len(text)} digits)"
            return (f"row {row} holds {shown}, an integer too large for 64 bits; write it as "
                    "a decimal such as 1e30 or rescale the column")
    return None


def _first_non_numeric(col: pd.Series) -> str | None:
    """Describe the first value of a text column that is not a number, to point at the culprit."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        # Look at the few categories, never at every row (a category may be long).
        cats = pd.Series(col.cat.categories)
        bad = np.flatnonzero(pd.to_numeric(cats, errors="coerce").isna().to_numpy())
        if not len(bad):
            return None
        row = int(np.flatnonzero(col.cat.codes.to_numpy() == bad[0])[0])
        return f"e.g. {str(cats.iloc[bad[0]])[:60]!r} at row {row}"
    if not (pd.api.types.is_string_dtype(col) or pd.api.types.is_object_dtype(col)):
        return None
    coerced = pd.to_numeric(col, errors="coerce")
    offending = np.flatnonzero(coerced.isna().to_numpy() & col.notna().to_numpy())
    if not len(offending):
        return None
    return f"e.g. {col.iloc[offending[0]]!r} at row {offending[0]}"


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
    def vet(key: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Shape checks from the .npy header, so nothing too big is ever read."""
        if key != x_key:
            return
        if dtype.kind not in "biuf":
            raise InvalidDataset(
                f"array '{x_key}' in '{fname}' must be numeric, got dtype {dtype}"
            )
        if len(shape) == 0:
            raise InvalidDataset(
                f"array '{x_key}' in '{fname}' is a scalar; it must have one row per example"
            )
        if shape[0] == 0:
            raise InvalidDataset(f"'{fname}' has no rows: {x_key} has shape {shape}")
        if shape[0] > max_rows:
            raise PayloadTooLarge(
                f"'{fname}' has {shape[0]} rows, above the limit of {max_rows}; sample it or "
                "raise ACTSEARCH_LIMITS__MAX_ROWS"
            )
        n_features = math.prod(shape[1:])
        if n_features > max_columns:
            raise PayloadTooLarge(
                f"'{fname}' has {n_features} features per row, above the limit of "
                f"{max_columns}; raise ACTSEARCH_LIMITS__MAX_FEATURES"
            )
        if n_features == 0:
            raise InvalidDataset(f"'{fname}' has no features: {x_key} has shape {shape}")

    wanted = (x_key, y_key, VOCAB_KEY) if VOCAB_KEY in present else (x_key, y_key)
    arrays = _read_npz_members(data, wanted, limit=max_bytes, filename=fname, check=vet)
    X, y = arrays[x_key], arrays[y_key]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InvalidDataset(
            f"array '{y_key}' in '{fname}' must be 1-D (one label per row), got shape {y.shape}; "
            "for one-hot labels save y.argmax(1)"
        )
    if len(X) != len(y):
        raise InvalidDataset(
            f"'{fname}': {x_key} has {len(X)} rows but {y_key} has {len(y)} labels; "
            "they must match row for row"
        )
    vocab_size = _token_vocab(arrays[VOCAB_KEY], X, x_key, fname) if VOCAB_KEY in arrays else None
    input_shape = tuple(int(s) for s in X.shape[1:]) if X.ndim > 2 else None
    modality = "tokens" if vocab_size is not None else "image" if X.ndim == 4 else "tabular"
    X2 = X.reshape(len(X), -1) if X.ndim != 1 else X.reshape(-1, 1)
    ys, task_, class_names = _encode_labels(y, task=task, label_name=y_key)
    names = [f"t{i}" for i in range(X2.shape[1])] if modality == "tokens" else \
        [f"x{i}" for i in range(X2.shape[1])]
    return Dataset(
        name=name,
        X=X2,
        y=ys,
        task=task_,
        feature_names=names,
        label_name=y_key,
        class_names=class_names,
        input_shape=input_shape,
        source="upload",
        modality=modality,  # type: ignore[arg-type]
        vocab_size=vocab_size,
    )


#: An NPZ holding this array is token data: X (N, T) integer ids, vocab_size a scalar
#: (0 or negative: inferred as the largest id + 1).
VOCAB_KEY = "vocab_size"


def _token_vocab(vocab: np.ndarray, X: np.ndarray, x_key: str, fname: str) -> int:
    """Check token data (integer ids, (N, T)) and return its vocabulary size."""
    if vocab.shape not in ((), (1,)) or vocab.dtype.kind not in "iu":
        raise InvalidDataset(
            f"'{VOCAB_KEY}' in '{fname}' must be one integer (a scalar array), got dtype "
            f"{vocab.dtype} and shape {vocab.shape}"
        )
    if X.dtype.kind not in "iu":
        raise InvalidDataset(
            f"token data: '{x_key}' in '{fname}' must hold integer token ids (dtype int), got "
            f"{X.dtype}; convert with X.astype('int64') if the values are whole numbers"
        )
    if X.ndim != 2:
        raise InvalidDataset(
            f"token data: '{x_key}' in '{fname}' must be (N, T), one id per position, got shape "
            f"{X.shape}; pad sequences to one length"
        )
    v = int(vocab.reshape(-1)[0])
    lo, hi = int(X.min()), int(X.max())
    if v <= 0:
        v = hi + 1
    if lo < 0 or hi >= v:
        raise InvalidDataset(
            f"token data: ids in '{x_key}' must lie in 0..{v - 1} (vocab_size {v}), found "
            f"{lo}..{hi}; ids outside the vocabulary have no embedding"
        )
    return v
