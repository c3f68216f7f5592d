"""A corpus of hostile and mistaken requests: every upload format and every spec field.

Each case goes through the HTTP API and must get its 4xx with a ``detail`` that
names the problem (a regex), never a 5xx, and must leave what is stored intact:
a dataset uploaded first keeps its id, content and artifact, and no dataset,
search or schedule appears. The bombs (NPZ and Parquet) must be refused from
metadata, before anything is decompressed: the peak RSS of this process (the
TestClient runs the app in-process) may not grow by more than ``BOMB_RSS_MIB``.
Limits come from the app's settings, never from figures written here.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from core.settings import LimitSettings, Settings
from search.datasets import MAX_CLASSES, MIN_ROWS, Dataset
from store import repo
from store.db import init_db
from tests.api.conftest import RecordingClient, make_client, make_settings
from tests.utils.data_files import csv_bytes, make_frame, npz_bytes

pytestmark = [pytest.mark.timeout(300)]

#: The corpus app's upload limit: above the JSON body limit (1 MiB by default, so an upload
#: between the two shows the exemption) and small enough that size-limit cases stay cheap.
UPLOAD_LIMIT = 16 * 2**20
#: Largest growth of this process's peak RSS allowed while a bomb is refused (MiB); decoding
#: any of the bombs would take hundreds.
BOMB_RSS_MIB = 48
PLANT = "pwned-by-pickle"


# --------------------------------------------------------------------------- request builders


@dataclass
class Req:
    """One request: method, url and httpx keyword arguments."""

    method: str
    url: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def mib(n: int) -> str:
    """``n`` bytes as the messages write it, escaped for a regex."""
    return re.escape(f"{n / 2**20:.1f} MiB")


def upload(filename: str, data: bytes, **fields: str) -> Req:
    return Req("POST", "/datasets", {"files": {"file": (filename, data,
                                                        "application/octet-stream")},
                                     "data": fields})


def raw_upload(filename: bytes, data: bytes, **fields: str) -> Req:
    """A multipart body written by hand, so a filename's bytes arrive exactly as given."""
    boundary = b"corpus-boundary-7f3a"
    parts = [b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + k.encode()
             + b'"\r\n\r\n' + v.encode() + b"\r\n" for k, v in fields.items()]
    parts.append(b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; '
                 b'filename="' + filename + b'"\r\nContent-Type: text/csv\r\n\r\n' + data
                 + b"\r\n")
    body = b"".join(parts) + b"--" + boundary + b"--\r\n"
    return Req("POST", "/datasets", {"content": body, "headers": {
        "content-type": "multipart/form-data; boundary=" + boundary.decode()}})


BASE_SPEC: dict[str, Any] = {"dataset": "keeper", "architecture": "mlp:8", "families": ["relu"],
                             "trials": 2, "epochs": 1}


def spec(**overrides: Any) -> Req:
    return Req("POST", "/searches", {"json": {**BASE_SPEC, **overrides}})


def spec_without(key: str) -> Req:
    return Req("POST", "/searches", {"json": {k: v for k, v in BASE_SPEC.items() if k != key}})


def raw_json(url: str, text: str) -> Req:
    return Req("POST", url, {"content": text.encode(),
                             "headers": {"content-type": "application/json"}})


def schedule(**overrides: Any) -> Req:
    body = {"cron": "0 3 * * *", "template": {"kind": "rerun", "spec": dict(BASE_SPEC)},
            **overrides}
    return Req("POST", "/schedules", {"json": body})


def schedule_spec(**overrides: Any) -> Req:
    return schedule(template={"kind": "rerun", "spec": {**BASE_SPEC, **overrides}})


# --------------------------------------------------------------------------- file builders


def frame_csv(n: int = 40, **kw: Any) -> bytes:
    return csv_bytes(make_frame(n=n, **kw))


def with_value(column: str, value: Any, *, dtype: Any = float) -> pd.DataFrame:
    df = make_frame(n=40)
    df[column] = df[column].astype(dtype)
    df.loc[5, column] = value
    return df


def parquet_of(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def good_npz(**over: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"X": rng.standard_normal((40, 3)).astype(np.float32), "y": np.arange(40) % 2, **over}


def png_bytes() -> bytes:
    return (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x02"
            + bytes(range(256)) * 4)


def zip_of(**members: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def wide_csv(n_columns: int, rows: int = 5) -> bytes:
    header = ",".join(f"f{i}" for i in range(n_columns)) + ",label\n"
    row = ",".join("0" for _ in range(n_columns)) + ",1\n"
    return (header + row * rows).encode()


def many_classes_csv(n_classes: int) -> bytes:
    labels = [f"class-{i}" for i in range(n_classes)] * 2
    return csv_bytes(pd.DataFrame({"f0": np.arange(len(labels), dtype=float), "label": labels}))


class _Plant:
    """Unpickling this creates the file at ``path``: proof that something was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def pickle_npz(plant: Path, *, key: str = "X") -> bytes:
    arrays = good_npz()
    arrays[key] = np.array([_Plant(str(plant))] * 40, dtype=object)
    return npz_bytes(**arrays)


def raw_pickle_member_npz(plant: Path) -> bytes:
    """An NPZ whose X.npy member is a bare pickle (no .npy header at all)."""
    import pickle

    y = io.BytesIO()
    np.save(y, np.arange(40) % 2)
    return zip_of(**{"X.npy": pickle.dumps(_Plant(str(plant))), "y.npy": y.getvalue()})


def lying_size_npz(declared: int) -> bytes:
    """A valid NPZ whose zip headers declare ``declared`` uncompressed bytes for X.npy."""
    arrays = good_npz()
    members = {}
    for k, v in arrays.items():
        b = io.BytesIO()
        np.save(b, v)
        members[f"{k}.npy"] = b.getvalue()
    data = bytearray(zip_of(**members))
    size = declared.to_bytes(4, "little")
    local = data.find(b"PK\x03\x04")  # X.npy comes first
    data[local + 22:local + 26] = size
    central = data.find(b"PK\x01\x02")
    data[central + 24:central + 28] = size
    return bytes(data)


def compressible_npz(n_bytes: int) -> bytes:
    """X: ``n_bytes`` of zeros, deflated to almost nothing, written in chunks (no big array)."""
    from numpy.lib import format as npformat

    cols = 64
    rows = n_bytes // (4 * cols) + 1
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("X.npy", "w", force_zip64=True) as fp:
            npformat.write_array_header_1_0(
                fp, {"descr": "<f4", "fortran_order": False, "shape": (rows, cols)})
            chunk = bytes(4 * cols * 4096)
            left = rows * cols * 4
            while left > 0:
                fp.write(chunk[:left])
                left -= len(chunk)
        b = io.BytesIO()
        np.save(b, np.zeros(rows, dtype=np.int8))
        zf.writestr("y.npy", b.getvalue())
    return buf.getvalue()


def many_members_zip(n: int) -> bytes:
    """A zip listing ``n`` empty members: small on disk, large once ``zipfile`` lists it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(n):
            zf.writestr(f"m{i:06d}.npy", b"")
    return buf.getvalue()


def parquet_bomb(rows: int, columns: int = 2) -> bytes:
    """``rows`` identical values per column, dictionary/RLE-encoded: a few KiB on disk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [f"f{i}" for i in range(columns - 1)] + ["label"]
    schema = pa.schema([(n, pa.float64()) for n in names])
    chunk = min(rows, 250_000)
    batch = pa.table({n: pa.array(np.ones(chunk)) for n in names}, schema=schema)
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, schema, compression="zstd") as writer:
        left = rows
        while left > 0:
            writer.write_table(batch.slice(0, min(chunk, left)))
            left -= chunk
    return buf.getvalue()


def duplicate_column_csv(header: str) -> bytes:
    """A CSV whose header repeats a column; the copy of the label would be a perfect feature."""
    rng = np.random.default_rng(3)
    rows = [header] + [f"{rng.standard_normal():.4f},{i % 2},{i % 2}" for i in range(40)]
    return "\n".join(rows).encode()


def duplicate_column_parquet() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels = pa.array(np.arange(40) % 2)
    table = pa.Table.from_arrays([pa.array(np.random.default_rng(3).standard_normal(40)),
                                  labels, labels], names=["noise", "label", "label"])
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def huge_integer_csv() -> bytes:
    df = make_frame(n=40)
    df["f0"] = np.arange(40)  # an integer column
    text = df.to_csv(index=False).splitlines()
    cells = text[6].split(",")
    cells[0] = "1" + "0" * 30  # row 5's f0: beyond 64 bits, so pandas keeps it as a Python int
    text[6] = ",".join(cells)
    return "\n".join(text).encode()


#: The corpus app's training memory budget (MiB): the memory cases do not depend on the
#: machine running the tests.
MEMORY_BUDGET_MB = 2048
#: mlp:8192 x 16 layers: ~1.1e9 parameters, far above any budget here.
HUGE_ARCH = {"kind": "mlp", "hidden": [8192] * 16}


def builtin(name: str, **options: Any) -> Req:
    return Req("POST", "/datasets/builtin", {"json": {"builtin": name, "options": options}})


# --------------------------------------------------------------------------- the corpus

UPLOAD_CASES: list[Any] = [
    # --- sizes
    pytest.param(lambda lim, _: upload("big.csv", b"f0,label\n" + b"1.5,0\n" * (
        lim.max_upload_bytes // 6 + 1)), 413, r"limit of \d+ bytes", id="upload-over-limit"),
    pytest.param(lambda lim, _: Req("POST", "/datasets", {
        "content": b"x", "headers": {"content-type": "multipart/form-data; boundary=x",
                                     "content-length": str(lim.max_upload_bytes * 4)}}),
        413, r"larger than .*limit", id="upload-declares-huge-length"),
    pytest.param(lambda lim, _: upload("t.csv", frame_csv(), label="x" * 70_000), 413,
                 r"field.*exceeded maximum size|too large", id="form-field-70kB"),
    pytest.param(lambda lim, _: Req("POST", "/datasets", {
        "files": {"file": ("t.csv", frame_csv())}, "data": {f"k{i}": "v" for i in range(40)}}),
        422, r"too many fields", id="form-40-fields"),
    pytest.param(lambda lim, _: Req("POST", "/datasets", {
        "files": [("file", ("a.csv", frame_csv())), ("file", ("b.csv", frame_csv()))]}),
        422, r"too many files", id="form-two-files"),
    pytest.param(lambda lim, _: Req("POST", "/datasets", {"json": {"name": "x"}}), 415,
                 r"multipart/form-data", id="upload-as-json"),
    pytest.param(lambda lim, _: Req("POST", "/datasets", {
        "files": {"data": ("t.csv", frame_csv())}}), 422, r"no file part named 'file'",
        id="form-no-file-part"),
    # --- files that lie about their type
    pytest.param(lambda lim, _: upload("photo.csv", png_bytes()), 415,
                 r"\.csv extension but is not text.*PNG", id="png-named-csv"),
    pytest.param(lambda lim, _: upload("photo", png_bytes()), 415, r"not a supported file.*PNG",
                 id="png-no-extension"),
    pytest.param(lambda lim, _: upload("t.parquet", frame_csv()), 415,
                 r"\.parquet extension but lacks the Parquet magic", id="csv-named-parquet"),
    pytest.param(lambda lim, _: upload("t.pq", npz_bytes(**good_npz())), 415,
                 r"Parquet magic.*NPZ", id="npz-named-pq"),
    pytest.param(lambda lim, _: upload("t.npz", zip_of(**{"notes.txt": b"hello"})), 415,
                 r"not a zip of \.npy arrays", id="npz-zip-of-text"),
    pytest.param(lambda lim, _: upload("t.npz", frame_csv()), 415, r"\.npz extension.*CSV",
                 id="csv-named-npz"),
    pytest.param(lambda lim, _: upload("t.csv", parquet_of(make_frame())), 415,
                 r"not text.*Parquet", id="parquet-named-csv"),
    pytest.param(lambda lim, _: upload("t.tsv", b"\x1f\x8b\x08\x00" + bytes(64)), 415,
                 r"gzip", id="gzip-named-tsv"),
    pytest.param(lambda lim, _: upload("model.pkl", b"\x80\x04\x95" + bytes(40)), 415,
                 r"pickle", id="pickle-file"),
    pytest.param(lambda lim, _: upload("t.npz", b"PK\x03\x04" + bytes(60)), 415,
                 r"not a zip|npz", id="truncated-zip-npz"),
    # --- CSV content
    pytest.param(lambda lim, _: upload("t.csv", b"f0,f1,label\n1,2,0\n3,4,1,9\n5,6,0\n"), 422,
                 r"line 3 has 4 fields but earlier rows have 3", id="csv-ragged"),
    pytest.param(lambda lim, _: upload("t.csv", b""), 422, r"is empty", id="csv-0-bytes"),
    pytest.param(lambda lim, _: upload("t.csv", b"f0,f1,label\n"), 422, r"no data rows",
                 id="csv-header-only"),
    pytest.param(lambda lim, _: upload("t.csv", b"\n\n\n"), 422, r"no header|no data|empty",
                 id="csv-blank-lines"),
    pytest.param(lambda lim, _: upload("t.csv", b"label\n" + b"0\n1\n" * 20), 422,
                 r"no feature columns", id="csv-one-column"),
    pytest.param(lambda lim, _: upload("t.csv", frame_csv(n=MIN_ROWS - 1)), 422,
                 rf"{MIN_ROWS - 1} rows; at least {MIN_ROWS}", id="csv-too-few-rows"),
    pytest.param(lambda lim, _: upload("t.csv", csv_bytes(with_value("f1", np.nan))), 422,
                 r"1 NaN/missing .*'f1'", id="csv-nan-feature"),
    pytest.param(lambda lim, _: upload("t.csv", csv_bytes(with_value("f2", np.inf))), 422,
                 r"1 infinite .*'f2'", id="csv-inf-feature"),
    pytest.param(lambda lim, _: upload("t.csv", csv_bytes(with_value("f0", "1e999", dtype=str))),
                 422, r"infinite .*'f0'", id="csv-overflow-feature"),
    pytest.param(lambda lim, _: upload("t.csv", csv_bytes(with_value("label", np.nan))), 422,
                 r"label 'label' has 1 missing/NaN", id="csv-nan-label"),
    pytest.param(lambda lim, _: upload("t.csv", csv_bytes(with_value("label", -np.inf)), task="regression"),
                 422, r"label 'label' has 1 infinite", id="csv-inf-label"),
    pytest.param(lambda lim, _: upload("t.csv", csv_bytes(make_frame(n=40, n_classes=1))), 422,
                 r"single class", id="csv-one-class"),
    pytest.param(lambda lim, _: upload("t.csv", many_classes_csv(MAX_CLASSES + 1)), 422,
                 rf"{MAX_CLASSES + 1} classes, above the limit of {MAX_CLASSES}",
                 id="csv-too-many-classes"),
    pytest.param(lambda lim, _: upload("t.csv", csv_bytes(with_value("f0", "abc", dtype=object))),
                 422, r"not numeric: 'f0' \(e\.g\. 'abc' at row 5\)", id="csv-text-feature"),
    pytest.param(lambda lim, _: upload("t.csv", frame_csv(), label="species"), 422,
                 r"label column 'species' is not in", id="csv-unknown-label"),
    pytest.param(lambda lim, _: upload("t.csv", frame_csv(), task="clustering"), 422,
                 r"task must be 'classification' or 'regression'", id="form-bad-task"),
    pytest.param(lambda lim, _: upload("t.csv", frame_csv(string_labels=True), task="regression"),
                 422, r"holds text.*regression needs numeric", id="csv-text-label-regression"),
    # --- Parquet content
    pytest.param(lambda lim, _: upload("t.parquet", parquet_of(make_frame().iloc[:0])), 422,
                 r"no data rows", id="parquet-0-rows"),
    pytest.param(lambda lim, _: upload("t.parquet", parquet_of(with_value("f1", np.inf))), 422,
                 r"infinite .*'f1'", id="parquet-inf-feature"),
    pytest.param(lambda lim, _: upload("t.parquet", parquet_of(make_frame(n_classes=1))), 422,
                 r"single class", id="parquet-one-class"),
    pytest.param(lambda lim, _: upload("t.parquet", parquet_of(with_value("f2", "abc", dtype=str))),
                 422, r"not numeric: 'f2' \(e\.g\. 'abc' at row 5\)", id="parquet-text-feature"),
    pytest.param(lambda lim, _: upload("t.parquet", parquet_of(pd.read_csv(io.BytesIO(
        many_classes_csv(MAX_CLASSES + 1))))), 422,
        rf"{MAX_CLASSES + 1} classes, above the limit of {MAX_CLASSES}", id="parquet-too-many-classes"),
    pytest.param(lambda lim, _: upload("t.parquet", parquet_of(with_value("label", np.nan))), 422,
                 r"label 'label' has 1 missing/NaN", id="parquet-nan-label"),
    pytest.param(lambda lim, _: upload("t.parquet", b"PAR1" + bytes(100) + b"PAR1"), 422,
                 r"not a readable Parquet file", id="parquet-corrupt"),
    pytest.param(lambda lim, _: upload("t.parquet", parquet_of(
        make_frame()[["label"]])), 422, r"no feature columns", id="parquet-one-column"),
    # --- NPZ content
    pytest.param(lambda lim, _: upload("t.npz", npz_bytes(X=np.zeros((0, 3)), y=np.zeros(0))),
                 422, r"no rows", id="npz-0-rows"),
    pytest.param(lambda lim, _: upload("t.npz", npz_bytes(X=np.zeros((40, 3)))), 422,
                 r"missing 'y'", id="npz-no-y"),
    pytest.param(lambda lim, _: upload("t.npz", npz_bytes(**good_npz(
        X=np.full((40, 3), np.nan, dtype=np.float32)))), 422, r"120 NaN", id="npz-nan-features"),
    pytest.param(lambda lim, _: upload("t.npz", npz_bytes(**good_npz(
        y=np.r_[np.inf, np.arange(39.0) / 7]))), 422, r"label 'y' has 1 infinite",
        id="npz-inf-label"),
    pytest.param(lambda lim, _: upload("t.npz", npz_bytes(**good_npz(y=np.zeros(40, int)))), 422,
                 r"single class", id="npz-one-class"),
    pytest.param(lambda lim, _: upload("t.npz", npz_bytes(**good_npz(y=np.zeros(39, int)))), 422,
                 r"40 rows but y has 39 labels", id="npz-length-mismatch"),
    pytest.param(lambda lim, _: upload("t.npz", npz_bytes(**good_npz(
        X=np.zeros((40, 3), dtype=np.complex64)))), 422, r"unsupported dtype complex64",
        id="npz-complex"),
    pytest.param(lambda lim, plant: upload("t.npz", pickle_npz(plant)), 422,
                 r"dtype object .*never unpickled", id="npz-object-X-pickle"),
    pytest.param(lambda lim, plant: upload("t.npz", pickle_npz(plant, key="y")), 422,
                 r"array 'y'.*dtype object", id="npz-object-y-pickle"),
    pytest.param(lambda lim, plant: upload("t.npz", raw_pickle_member_npz(plant)), 422,
                 r"array 'X' .* not a valid \.npy", id="npz-bare-pickle-member"),
    # --- names: unicode junk, control characters, path traversal
    pytest.param(lambda lim, _: upload("t.csv", frame_csv(), name="caf\u00e9\u202e"), 422,
                 r"dataset name .* is not allowed", id="name-rtl-mark"),
    pytest.param(lambda lim, _: upload("t.csv", frame_csv(), name="a\tb\x07"), 422,
                 r"dataset name .* is not allowed", id="name-control-chars"),
    pytest.param(lambda lim, _: upload("t.csv", frame_csv(), name="n" * 10_000), 422,
                 r"dataset name .* is not allowed.*1-200", id="name-10kB"),
    pytest.param(lambda lim, _: upload("t.csv", frame_csv(), name="../../etc/passwd"), 422,
                 r"dataset name .* is not allowed", id="name-traversal"),
    pytest.param(lambda lim, _: upload("t.csv", frame_csv(), name="\U0001f4a9\u200b"), 422,
                 r"dataset name .* is not allowed", id="name-emoji-zero-width"),
    pytest.param(lambda lim, _: raw_upload(b"../../etc/passwd", frame_csv()), 422,
                 r"filename .*plain file name", id="filename-traversal"),
    pytest.param(lambda lim, _: raw_upload(b"/etc/passwd.csv", frame_csv()), 422,
                 r"filename .*plain file name", id="filename-absolute"),
    pytest.param(lambda lim, _: raw_upload(b"..\\\\..\\\\boot.ini", frame_csv()), 422,
                 r"filename .*plain file name", id="filename-windows-path"),
    pytest.param(lambda lim, _: raw_upload(b"data\x00.csv", frame_csv()), 422,
                 r"filename .*control characters", id="filename-nul"),
    pytest.param(lambda lim, _: raw_upload("data\u202ecsv.exe".encode(), frame_csv()), 422,
                 r"filename .*control characters", id="filename-rtl-override"),
    pytest.param(lambda lim, _: raw_upload(b"f" * 4_000 + b".csv", frame_csv()), 422,
                 r"filename is 4004 characters; use a name of at most \d+", id="filename-4kB"),
    pytest.param(lambda lim, _: raw_upload(b"..", frame_csv()), 422,
                 r"filename .*plain file name", id="filename-dots"),
    pytest.param(lambda lim, _: upload("t.csv", frame_csv(), label="\u202elabel\x00"), 422,
                 r"label column .* is not in", id="label-junk"),
    # --- repeated column names (pandas would rename the copy to label.1 and train on it)
    pytest.param(lambda lim, _: upload("t.csv", duplicate_column_csv("noise,label,label")), 422,
                 r"repeated column names.*'label' / 'label'", id="csv-duplicate-label-column"),
    pytest.param(lambda lim, _: upload("t.csv", duplicate_column_csv("noise,label,Label ")), 422,
                 r"repeated column names \(ignoring case and spaces\): 'label' / 'Label '",
                 id="csv-columns-differ-by-case-and-space"),
    pytest.param(lambda lim, _: upload("t.parquet", duplicate_column_parquet()), 422,
                 r"repeated column names.*'label' / 'label'", id="parquet-duplicate-column"),
    # --- a number too large for 64 bits: the column and the row, not "ids and versions"
    pytest.param(lambda lim, _: upload("t.csv", huge_integer_csv()), 422,
                 r"'f0' \(row 5 holds 1000.*too large for 64 bits", id="csv-integer-beyond-64-bits"),
    # --- names that end in a newline ("$" in a regex accepts "sales\n")
    pytest.param(lambda lim, _: upload("t.csv", frame_csv(), name="sales\n"), 422,
                 r"dataset name 'sales\\n' is not allowed", id="name-trailing-newline"),
]

BOMB_CASES: list[Any] = [
    pytest.param(lambda lim, _: upload("t.npz", npz_bytes(**good_npz(
        X=np.zeros((5, 200_000), dtype=np.float32), y=np.arange(5) % 2))), 413,
        r"200000 features per row, above the limit", id="npz-200k-features"),
    pytest.param(lambda lim, _: upload("t.csv", wide_csv(200_000)), 413,
                 r"200001 columns, above the limit of \d+ features", id="csv-200k-columns"),
    pytest.param(lambda lim, _: upload("bomb.npz", lying_size_npz(2**32 - 2)), 413,
                 r"array 'X' .*\(uncompressed\) is 4\.0 GiB, above the limit",
                 id="npz-declares-4GiB"),
    pytest.param(lambda lim, _: upload("bomb.npz", compressible_npz(lim.max_upload_bytes * 16)),
                 413, lambda lim: rf"array 'X' .*\(uncompressed\) is {mib(lim.max_upload_bytes * 16)}, "
                                  rf"above the limit of {mib(lim.max_upload_bytes)}",
                 id="npz-deflate-bomb"),
    pytest.param(lambda lim, _: upload("bomb.parquet", parquet_bomb(50_000_000)), 413,
                 r"50000000 rows, above the limit", id="parquet-50M-rows"),
    pytest.param(lambda lim, _: upload("bomb.parquet", parquet_bomb(lim.max_rows, 2)), 413,
                 lambda lim: rf"would take {mib(lim.max_rows * 2 * 8)} decoded \({lim.max_rows} rows x 2 "
                             rf"columns\), above the limit of {mib(lim.max_upload_bytes)}",
                 id="parquet-decoded-size"),
    pytest.param(lambda lim, _: upload("bomb.npz", many_members_zip(20_000)), 413,
                 r"lists .* of zip members, above the limit", id="npz-20k-members"),
    # generated built-ins: refused from their options, before a row is generated
    pytest.param(lambda lim, _: builtin("teacher", size=100_000, hidden=4096), 413,
                 lambda lim: rf"builtin 'teacher' \(size=100000, .*hidden=4096.*\) would take "
                             rf"299\.8 MiB \(100000 rows x 784 features\), above the limit of "
                             rf"{mib(lim.max_upload_bytes)} \(ACTSEARCH_LIMITS__MAX_UPLOAD_BYTES\)",
                 id="builtin-teacher-100k-x-4096"),
    pytest.param(lambda lim, _: builtin("teacher", size=4_000, hidden=4096), 413,
                 r"would need, while generating, [\d.]+ MiB .*above the limit.*teacher's hidden",
                 id="builtin-teacher-generator-memory"),
    pytest.param(lambda lim, _: builtin("mnist1d", size=100_000), 413,
                 r"builtin 'mnist1d' .* above the limit", id="builtin-mnist1d-100k"),
    pytest.param(lambda lim, _: builtin("two_spirals", n=1_000_000), 413,
                 r"builtin 'two_spirals' .* above the limit", id="builtin-spirals-1M"),
]

SPEC_CASES: list[Any] = [
    # dataset / dataset_version / label / task
    pytest.param(lambda lim, _: spec(dataset="nope"), 422, r"no stored dataset named 'nope'",
                 id="spec-dataset-unknown"),
    pytest.param(lambda lim, _: spec(dataset="../../etc/passwd"), 422, r"looks like a file path",
                 id="spec-dataset-path"),
    pytest.param(lambda lim, _: spec(dataset="/etc/passwd"), 422, r"looks like a file path",
                 id="spec-dataset-absolute"),
    pytest.param(lambda lim, _: spec(dataset="d" * 10_000), 422,
                 r"dataset: String should have at most", id="spec-dataset-10kB"),
    pytest.param(lambda lim, _: spec(dataset="\u202e\x00"), 422, r"no stored dataset named",
                 id="spec-dataset-junk"),
    pytest.param(lambda lim, _: spec(dataset=""), 422, r"dataset: String should have at least",
                 id="spec-dataset-empty"),
    pytest.param(lambda lim, _: spec_without("dataset"), 422, r"body dataset: Field required",
                 id="spec-dataset-missing"),
    pytest.param(lambda lim, _: spec(dataset=["keeper"]), 422, r"dataset: Input should be a valid string",
                 id="spec-dataset-list"),
    pytest.param(lambda lim, _: spec(dataset_version=0), 422, r"dataset_version: .*greater than",
                 id="spec-version-0"),
    pytest.param(lambda lim, _: spec(dataset_version=999), 422, r"version 999", id="spec-version-missing"),
    pytest.param(lambda lim, _: spec(dataset_version=2**70), 422, r"dataset_version: .*less than",
                 id="spec-version-huge"),
    pytest.param(lambda lim, _: spec(label="label"), 422, r"label: .*stored with its label",
                 id="spec-label-on-stored"),
    pytest.param(lambda lim, _: spec(task="clustering"), 422, r"task: Input should be",
                 id="spec-task-unknown"),
    pytest.param(lambda lim, _: spec(task="regression"), 422, r"task: .*is classification",
                 id="spec-task-mismatch"),
    # architecture (string and object forms)
    pytest.param(lambda lim, _: spec(architecture="rnn:8"), 422, r"unknown architecture kind 'rnn'",
                 id="arch-kind"),
    pytest.param(lambda lim, _: spec(architecture="mlp:"), 422, r"at least one hidden layer",
                 id="arch-empty"),
    pytest.param(lambda lim, _: spec(architecture="mlp:-4"), 422, r"positive integer",
                 id="arch-negative-width"),
    pytest.param(lambda lim, _: spec(architecture="mlp:0"), 422, r"positive integer",
                 id="arch-zero-width"),
    pytest.param(lambda lim, _: spec(architecture="mlp:abc"), 422, r"'abc' is not a whole number",
                 id="arch-text-width"),
    pytest.param(lambda lim, _: spec(architecture=f"mlp:{lim.max_width + 1}"), 422,
                 lambda lim: rf"width {lim.max_width + 1} is above the limit {lim.max_width}",
                 id="arch-over-max-width"),
    pytest.param(lambda lim, _: spec(architecture="mlp:" + ",".join(["4"] * (lim.max_layers + 1))),
                 422, lambda lim: rf"{lim.max_layers + 1} hidden layers is above the limit {lim.max_layers}",
                 id="arch-over-max-layers"),
    pytest.param(lambda lim, _: spec(architecture="mlp:" + "9" * 5000), 422,
                 r"architecture: .*at most 1000 characters", id="arch-5000-digit-width"),
    pytest.param(lambda lim, _: spec(architecture={"kind": "mlp", "hidden": [8], "depth": 3}), 422,
                 r"architecture\.depth: Extra inputs are not permitted", id="arch-unknown-key"),
    pytest.param(lambda lim, _: spec(architecture={"kind": "mlp", "hidden": ["wide"]}), 422,
                 r"architecture\.hidden\.0: Input should be a valid integer", id="arch-width-type"),
    pytest.param(lambda lim, _: spec(architecture={"kind": "mlp", "hidden": 8}), 422,
                 r"architecture\.hidden: Input should be a valid list", id="arch-hidden-not-list"),
    pytest.param(lambda lim, _: spec(architecture={"kind": "mlp", "hidden": [8], "dropout": 1.5}),
                 422, r"dropout must be in \[0, 1\)", id="arch-dropout"),
    pytest.param(lambda lim, _: spec(architecture={"kind": "mlp", "hidden": [8], "norm": "group"}),
                 422, r"unknown norm 'group'", id="arch-norm"),
    pytest.param(lambda lim, _: spec(architecture={"kind": "mlp", "hidden": [8],
                                                   "activation_scope": "unit"}),
                 422, r"unknown activation_scope 'unit'", id="arch-scope"),
    pytest.param(lambda lim, _: spec(architecture="cnn:4/8"), 422, r"needs input_shape",
                 id="arch-cnn-no-shape"),
    pytest.param(lambda lim, _: spec(architecture={"kind": "cnn", "conv_channels": [4], "pool": 1,
                                                   "input_shape": [1, 3, 1], "kernel": 0}), 422,
                 r"kernel must be a positive integer, got 0", id="arch-cnn-kernel-0"),
    pytest.param(lambda lim, _: spec(architecture={"kind": "cnn", "conv_channels": [4],
                                                   "input_shape": [1, 3, 1]}), 422,
                 r"input 3x1 shrinks to nothing after conv layer 1", id="arch-cnn-pool-too-big"),
    pytest.param(lambda lim, _: spec(architecture={"kind": "cnn", "conv_channels": [4], "pool": 1,
                                                   "input_shape": [1, 3, 1], "kernel": 10**9}),
                 422, r"kernel 1000000000 is larger than the input", id="arch-cnn-huge-kernel"),
    pytest.param(lambda lim, _: spec(architecture={"kind": "cnn", "conv_channels": [4],
                                                   "input_shape": [1, 2, 2], "pool": 1}), 422,
                 r"holds 4 values but rows have 3", id="arch-cnn-shape-mismatch"),
    pytest.param(lambda lim, _: spec(architecture=5), 422, r"architecture", id="arch-number"),
    # widths in ASCII digits only (Python's int() reads all of these)
    pytest.param(lambda lim, _: spec(architecture="mlp:\uff16\uff14"), 422,
                 r"not a whole number written in ASCII digits", id="arch-fullwidth-digits"),
    pytest.param(lambda lim, _: spec(architecture="mlp:\u0668"), 422,
                 r"not a whole number written in ASCII digits", id="arch-arabic-indic-digit"),
    pytest.param(lambda lim, _: spec(architecture="mlp:6_4"), 422,
                 r"'6_4' is not a whole number written in ASCII digits", id="arch-underscore-digits"),
    # too big to train: refused from the estimate, before anything is built
    pytest.param(lambda lim, _: spec(architecture=HUGE_ARCH), 422,
                 r"would need about [\d.]+ GiB .* above this service's training memory budget of "
                 r"2\.0 GiB \(ACTSEARCH_TRAINING__MEMORY_BUDGET_MB\)", id="arch-too-big-to-train"),
    pytest.param(lambda lim, _: spec(architecture="mlp:512,512", population_size=1024,
                                     batch_size=4096), 422,
                 r"a population of 1024 candidates .* training memory budget",
                 id="population-too-big-to-train"),
    # a refused spec on a built-in not used yet registers nothing (the counts are checked)
    pytest.param(lambda lim, _: spec(dataset="wine", architecture=f"mlp:{lim.max_width + 1}"), 422,
                 r"above the limit", id="spec-unused-builtin-over-width"),
    pytest.param(lambda lim, _: spec(dataset="wine", task="regression"), 422,
                 r"task: dataset builtin wine is classification", id="spec-unused-builtin-task"),
    pytest.param(lambda lim, _: spec(dataset="breast_cancer", architecture=HUGE_ARCH), 422,
                 r"training memory budget", id="spec-unused-builtin-too-big"),
    # families
    # (an empty families list is valid: every registered family, like leaving it out)
    pytest.param(lambda lim, _: spec(families=["relu", "nope"]), 422, r"unknown activation.*'nope'",
                 id="families-unknown"),
    pytest.param(lambda lim, _: spec(families=["gelu", "gelu"]), 422, r"listed twice",
                 id="families-duplicate"),
    pytest.param(lambda lim, _: spec(architecture="mlp:15", families=["groupsort"]), 422,
                 r"groupsort needs a group that divides every layer width, and none of 2, 4, 8",
                 id="families-groupsort-no-group-divides-the-width"),
    pytest.param(lambda lim, _: spec(families="relu"), 422, r"families: Input should be a valid list",
                 id="families-string"),
    pytest.param(lambda lim, _: spec(families=[1]), 422, r"families\.0: Input should be a valid string",
                 id="families-number"),
    pytest.param(lambda lim, _: spec(families=["relu"] * (lim.max_body_bytes // 6)), 413, r"request body is",
                 id="families-100k"),
    # budget numbers
    pytest.param(lambda lim, _: spec(trials=0), 422, r"trials: .*greater than or equal to 1",
                 id="trials-0"),
    pytest.param(lambda lim, _: spec(trials=-3), 422, r"trials: .*greater than or equal to 1",
                 id="trials-negative"),
    pytest.param(lambda lim, _: spec(trials=lim.max_trials + 1), 422,
                 lambda lim: rf"trials: {lim.max_trials + 1} is above this service's limit of {lim.max_trials}",
                 id="trials-over-limit"),
    pytest.param(lambda lim, _: spec(trials=10**30), 422, r"trials: .*above this service's limit|trials: Input should be",
                 id="trials-1e30"),
    pytest.param(lambda lim, _: spec(trials="many"), 422, r"trials: Input should be a valid integer",
                 id="trials-text"),
    pytest.param(lambda lim, _: spec(trials=2.5), 422, r"trials: Input should be a valid integer",
                 id="trials-fraction"),
    pytest.param(lambda lim, _: spec(epochs=0), 422, r"epochs: .*greater than or equal to 1",
                 id="epochs-0"),
    pytest.param(lambda lim, _: spec(epochs=lim.max_epochs + 1), 422,
                 lambda lim: rf"epochs: {lim.max_epochs + 1} is above this service's limit of {lim.max_epochs}",
                 id="epochs-over-limit"),
    pytest.param(lambda lim, _: spec(time_budget_s=0), 422, r"time_budget_s: .*greater than 0",
                 id="time-budget-0"),
    pytest.param(lambda lim, _: spec(time_budget_s=-5), 422, r"time_budget_s: .*greater than 0",
                 id="time-budget-negative"),
    pytest.param(lambda lim, _: raw_json("/searches", json.dumps(BASE_SPEC)[:-1]
                                         + ', "time_budget_s": Infinity}'), 422,
                 r"time_budget_s: .*finite", id="time-budget-infinity"),
    pytest.param(lambda lim, _: raw_json("/searches", json.dumps(BASE_SPEC)[:-1]
                                         + ', "lr": [NaN, 0.1]}'), 422,
                 r"lr.*finite", id="lr-nan"),
    pytest.param(lambda lim, _: spec(batch_size=0), 422, r"batch_size: .*greater than or equal to 1",
                 id="batch-size-0"),
    pytest.param(lambda lim, _: spec(batch_size=10**12), 422, r"batch_size: .*less than or equal",
                 id="batch-size-huge"),
    pytest.param(lambda lim, _: spec(population_size=0), 422, r"population_size: .*greater than",
                 id="population-0"),
    pytest.param(lambda lim, _: spec(population_size=10**9), 422, r"population_size: .*less than",
                 id="population-huge"),
    pytest.param(lambda lim, _: spec(finalist_seeds=0), 422, r"finalist_seeds: .*greater than",
                 id="finalist-seeds-0"),
    pytest.param(lambda lim, _: spec(finalist_seeds=10**9), 422, r"finalist_seeds: .*less than",
                 id="finalist-seeds-huge"),
    pytest.param(lambda lim, _: spec(seed=-1), 422, r"seed: .*greater than or equal to 0",
                 id="seed-negative"),
    pytest.param(lambda lim, _: spec(seed=2**70), 422, r"seed: .*less than", id="seed-huge"),
    pytest.param(lambda lim, _: spec(val_fraction=0.6), 422, r"val_fraction: .*less than 0\.5",
                 id="val-fraction"),
    pytest.param(lambda lim, _: spec(test_fraction=0), 422, r"test_fraction: .*greater than 0",
                 id="test-fraction"),
    pytest.param(lambda lim, _: spec(lr=[0, 0.1]), 422, r"lr: .*0 < low <= high", id="lr-zero"),
    pytest.param(lambda lim, _: spec(lr=[0.1, 0.01]), 422, r"lr: .*0 < low <= high",
                 id="lr-reversed"),
    pytest.param(lambda lim, _: spec(lr=[0.1]), 422, r"lr\.1: Field required", id="lr-one-value"),
    pytest.param(lambda lim, _: spec(weight_decay=[-1, 1]), 422, r"weight_decay: .*0 < low",
                 id="weight-decay-negative"),
    pytest.param(lambda lim, _: spec(warm_start_from=0), 422, r"warm_start_from: .*greater than",
                 id="warm-start-0"),
    pytest.param(lambda lim, _: spec(warm_start_from=99_999), 404, r"search 99999 not found",
                 id="warm-start-missing"),
    pytest.param(lambda lim, _: spec(warm_start_from=2**70), 422, r"warm_start_from: .*less than",
                 id="warm-start-huge"),
    # choices
    pytest.param(lambda lim, _: spec(optimizer="rmsprop"), 422, r"optimizer: Input should be",
                 id="optimizer-unknown"),
    pytest.param(lambda lim, _: spec(schedule="linear"), 422, r"schedule: Input should be",
                 id="schedule-unknown"),
    pytest.param(lambda lim, _: spec(sampler="grid"), 422, r"unknown sampler 'grid'",
                 id="sampler-unknown"),
    pytest.param(lambda lim, _: spec(pruner="wilcoxon"), 422, r"unknown pruner 'wilcoxon'",
                 id="pruner-unknown"),
    pytest.param(lambda lim, _: spec(objective="loss"), 422,
                 r"objective: Input should be 'metric', 'metric\+params' or 'metric\+flops'",
                 id="objective-unknown"),
    # shape of the body
    pytest.param(lambda lim, _: spec(trails=10), 422, r"trails: Extra inputs are not permitted",
                 id="unknown-field"),
    pytest.param(lambda lim, _: spec(name="n" * 201), 422, r"name: String should have at most 200",
                 id="name-201"),
    pytest.param(lambda lim, _: raw_json("/searches", "[1, 2]"), 422, r"valid dictionary",
                 id="body-list"),
    pytest.param(lambda lim, _: raw_json("/searches", '{"dataset": '), 422, r"JSON decode error",
                 id="body-truncated-json"),
    pytest.param(lambda lim, _: Req("POST", "/searches", {"content": b"dataset=keeper",
                                    "headers": {"content-type": "text/plain"}}), 422,
                 r"body", id="body-text-plain"),
    pytest.param(lambda lim, _: raw_json("/searches", ""), 422, r"body.*required|Field required",
                 id="body-empty"),
    pytest.param(lambda lim, _: raw_json("/searches", json.dumps(
        {**BASE_SPEC, "name": "x" * lim.max_body_bytes})), 413,
        lambda lim: rf"request body is \d+ bytes, above this service's limit of "
                    rf"{lim.max_body_bytes} bytes.*MAX_BODY_BYTES", id="body-over-limit"),
    pytest.param(lambda lim, _: Req("POST", "/searches", {
        "content": iter([b"{", b" " * lim.max_body_bytes, b"}"]),
        "headers": {"content-type": "application/json"}}), 413,
        lambda lim: rf"request body is larger than this service's limit of {lim.max_body_bytes} "
                    r"bytes .* JSON bodies", id="body-chunked-over-limit"),
    pytest.param(lambda lim, _: Req("POST", "/searches", {
        "content": b'{"dataset": "\xff\xfe"}', "headers": {"content-type": "application/json"}}),
        422, r"not UTF-8 \(byte b'\\xff' at position 13\)", id="body-not-utf8"),
    pytest.param(lambda lim, _: raw_json("/searches", "[" * 100_000 + "]" * 100_000), 422,
                 r"nests arrays or objects too deeply", id="body-deep-nesting"),
]

SCHEDULE_CASES: list[Any] = [
    pytest.param(lambda lim, _: schedule(cron="not a cron"), 422, r"cron 'not a cron'",
                 id="schedule-cron-bad"),
    pytest.param(lambda lim, _: schedule(cron="0 3 30 2 *"), 422, r"never matches",
                 id="schedule-cron-never"),
    pytest.param(lambda lim, _: schedule(cron="* " * 150), 422, r"cron: String should have at most",
                 id="schedule-cron-long"),
    pytest.param(lambda lim, _: schedule(timezone="Mars/Olympus"), 422, r"Mars/Olympus",
                 id="schedule-timezone"),
    pytest.param(lambda lim, _: schedule(timezone="../../etc/localtime"), 422, r"timezone|zone",
                 id="schedule-timezone-path"),
    pytest.param(lambda lim, _: schedule(name=""), 422, r"name: String should have at least 1",
                 id="schedule-name-empty"),
    pytest.param(lambda lim, _: schedule(every="day"), 422, r"every: Extra inputs",
                 id="schedule-unknown-field"),
    pytest.param(lambda lim, _: schedule(template={"kind": "delete_all"}), 422, r"template",
                 id="schedule-template-kind"),
    pytest.param(lambda lim, _: schedule_spec(trials=lim.max_trials + 1), 422,
                 lambda lim: rf"trials: {lim.max_trials + 1} is above this service's limit", id="schedule-trials"),
    pytest.param(lambda lim, _: schedule_spec(epochs=lim.max_epochs + 1), 422,
                 lambda lim: rf"epochs: {lim.max_epochs + 1} is above this service's limit", id="schedule-epochs"),
    pytest.param(lambda lim, _: schedule_spec(architecture=f"mlp:{lim.max_width + 1}"), 422,
                 r"above the limit", id="schedule-width"),
    pytest.param(lambda lim, _: schedule_spec(dataset="/etc/passwd"), 422, r"file path",
                 id="schedule-dataset-path"),
    # a built-in not used yet gets the same checks as a stored dataset and a direct search
    pytest.param(lambda lim, _: schedule_spec(dataset="iris", architecture=f"mlp:{lim.max_width + 1}"),
                 422, lambda lim: rf"width {lim.max_width + 1} is above the limit {lim.max_width}",
                 id="schedule-unused-builtin-width"),
    pytest.param(lambda lim, _: schedule_spec(dataset="iris", architecture={
        "kind": "mlp", "hidden": [8] * (lim.max_layers + 1)}), 422,
        lambda lim: rf"{lim.max_layers + 1} hidden layers is above the limit", id="schedule-unused-builtin-layers"),
    pytest.param(lambda lim, _: schedule_spec(architecture=HUGE_ARCH), 422,
                 r"template\.spec\..*|training memory budget", id="schedule-too-big-to-train"),
    pytest.param(lambda lim, _: schedule_spec(sampler="grid"), 422, r"unknown sampler",
                 id="schedule-sampler"),
    pytest.param(lambda lim, _: schedule_spec(seed=-1), 422, r"seed", id="schedule-seed"),
    pytest.param(lambda lim, _: schedule_spec(extra=1), 422, r"extra", id="schedule-spec-extra"),
    pytest.param(lambda lim, _: schedule(template={"kind": "add_trials", "search_id": 99_999,
                                                   "trials": 4}), 422, r"search 99999 not found",
                 id="schedule-add-trials-missing"),
    pytest.param(lambda lim, _: schedule(template={"kind": "add_trials", "search_id": 1,
                                                   "trials": 0}), 422, r"trials", id="schedule-add-trials-0"),
    pytest.param(lambda lim, _: schedule(template={"kind": "add_trials", "search_id": 1,
                                                   "trials": lim.max_trials + 1}), 422,
                 r"above this service's limit|not found", id="schedule-add-trials-over"),
    pytest.param(lambda lim, _: raw_json("/schedules", json.dumps(
        {"cron": "@daily", "name": "s" * lim.max_body_bytes})), 413, r"request body",
        id="schedule-body-over-limit"),
]

ID_CASES: list[Any] = [
    pytest.param(lambda lim, _: Req("GET", f"/datasets/{2**70}"), 422,
                 r"number in the request is out of range", id="path-id-2e70"),
    pytest.param(lambda lim, _: Req("POST", f"/searches/{2**64}/cancel"), 422,
                 r"number in the request is out of range", id="cancel-id-2e64"),
    pytest.param(lambda lim, _: Req("GET", "/searches", {"params": {"offset": 2**70}}), 422,
                 r"number in the request is out of range", id="offset-2e70"),
    pytest.param(lambda lim, _: Req("GET", "/trials", {"params": {"min_value": "nan"}}), 422,
                 r"min_value", id="trials-min-value-nan"),
]

BUILTIN_CASES: list[Any] = [
    pytest.param(lambda lim, _: Req("POST", "/datasets/builtin", {"json": {"builtin": "imagenet"}}),
                 422, r"unknown builtin dataset 'imagenet'", id="builtin-unknown"),
    pytest.param(lambda lim, _: Req("POST", "/datasets/builtin", {
        "json": {"builtin": "two_spirals", "options": {"n": 10**12}}}), 422, r"must be in",
        id="builtin-huge-n"),
    pytest.param(lambda lim, _: Req("POST", "/datasets/builtin", {
        "json": {"builtin": "iris", "name": "iris\u202e"}}), 422, r"not allowed",
        id="builtin-name-rtl"),
    pytest.param(lambda lim, _: Req("POST", "/datasets/builtin", {
        "json": {"builtin": "iris", "options": {"seed": "x" * 100}}}), 422, r"option",
        id="builtin-option-type"),
    pytest.param(lambda lim, _: Req("POST", "/datasets/builtin", {
        "json": {"builtin": "iris", "name": "iris\n"}}), 422, r"not allowed",
        id="builtin-name-trailing-newline"),
]


# --------------------------------------------------------------------------- fixtures


@dataclass
class Corpus:
    client: RecordingClient
    settings: Settings
    keeper: dict[str, Any]
    plant: Path

    def counts(self) -> tuple[int, int, int]:
        return tuple(self.client.get(u, params={"limit": 1}).json()["count"]  # type: ignore[return-value]
                     for u in ("/datasets", "/searches", "/schedules"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    home = tmp_path_factory.mktemp("corpus-home")
    # Rate limits far above what the corpus sends: it tests bad input, not throttling.
    settings = make_settings(home, max_upload_bytes=UPLOAD_LIMIT,
                             requests_per_second_per_owner=1e6, request_burst_per_owner=10**6)
    settings.training.memory_budget_mb = MEMORY_BUDGET_MB
    init_db(settings.resolved_database_url)
    with make_client(settings) as client:
        keeper = client.post("/datasets", files={"file": ("keeper.csv", frame_csv(n=60))},
                             data={"name": "keeper"})
        assert keeper.status_code == 201, keeper.text
        yield Corpus(client, settings, keeper.json(), home / PLANT)


def _check(corpus: Corpus, build: Callable[[LimitSettings, Path], Req], status: int,
           pattern: str) -> Any:
    before = corpus.counts()
    req = build(corpus.settings.limits, corpus.plant)
    if callable(pattern):
        pattern = pattern(corpus.settings.limits)
    response = corpus.client.request(req.method, req.url, **req.kwargs)
    assert response.status_code == status, (response.status_code, response.text[:500])
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert re.search(pattern, detail, re.IGNORECASE | re.DOTALL), (pattern, detail[:500])
    assert len(detail) < 2_000, f"detail echoes the input back: {len(detail)} characters"
    # Nothing was unpickled, nothing was added, nothing that was stored is gone.
    assert not corpus.plant.exists(), "an uploaded pickle was unpickled"
    assert corpus.counts() == before
    kept = corpus.client.get(f"/datasets/{corpus.keeper['id']}")
    assert kept.status_code == 200
    assert kept.json()["content_hash"] == corpus.keeper["content_hash"]
    return response


@pytest.mark.parametrize(("build", "status", "pattern"),
                         UPLOAD_CASES + SPEC_CASES + SCHEDULE_CASES + BUILTIN_CASES + ID_CASES)
def test_bad_input_is_refused_with_a_detail(corpus: Corpus, build: Any, status: int,
                                            pattern: str) -> None:
    _check(corpus, build, status, pattern)


def _vm(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field_name)


@pytest.mark.parametrize(("build", "status", "pattern"), BOMB_CASES)
def test_bombs_are_refused_from_metadata(corpus: Corpus, build: Any, status: int,
                                         pattern: str) -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to now
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to measure the peak RSS")
    req = build(corpus.settings.limits, corpus.plant)
    baseline = _vm("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    response = _check(corpus, lambda *_: req, status, pattern)
    grew = (_vm("VmHWM") - baseline) / 2**20
    assert grew < BOMB_RSS_MIB, f"peak RSS grew by {grew:.0f} MiB: {response.json()['detail']}"


def test_the_pickle_plant_would_fire(tmp_path: Path) -> None:
    """Positive control: unpickling the planted NPZ really creates the file."""
    target = tmp_path / PLANT
    with np.load(io.BytesIO(pickle_npz(target)), allow_pickle=True) as npz:
        npz["X"]
    assert target.exists()


def test_the_bombs_are_small_and_real(corpus: Corpus) -> None:
    """Positive control: each bomb is a small file that declares far more than the limits."""
    import pyarrow.parquet as pq

    lim = corpus.settings.limits
    npz = compressible_npz(lim.max_upload_bytes * 16)
    assert len(npz) < lim.max_upload_bytes // 16
    with zipfile.ZipFile(io.BytesIO(npz)) as zf:
        assert zf.getinfo("X.npy").file_size > lim.max_upload_bytes * 16
    pq_bomb = parquet_bomb(50_000_000)
    assert len(pq_bomb) < 2**20
    assert pq.ParquetFile(io.BytesIO(pq_bomb)).metadata.num_rows == 50_000_000


def test_the_keeper_survives_every_case(corpus: Corpus) -> None:
    """After the whole corpus the first upload is still listed, and its artifact still loads."""
    listed = corpus.client.get("/datasets", params={"name": "keeper"}).json()
    assert listed["count"] == 1 and listed["data"][0]["id"] == corpus.keeper["id"]
    sessions = corpus.client.app.state.sessions  # type: ignore[attr-defined]
    with sessions() as session:
        data = repo.dataset_bytes(session, dataset_id=corpus.keeper["id"])
    assert Dataset.from_npz_bytes(data).content_hash() == corpus.keeper["content_hash"]


def test_uploads_are_held_to_their_own_limit_not_the_json_one(corpus: Corpus) -> None:
    """POST /datasets is exempt from max_body_bytes: an upload between the two limits is fine."""
    lim = corpus.settings.limits
    assert lim.max_body_bytes < lim.max_upload_bytes
    data = frame_csv(n=lim.max_body_bytes // 60 + 1_000, n_features=3)
    assert lim.max_body_bytes < len(data) < lim.max_upload_bytes
    r = corpus.client.post("/datasets", files={"file": ("big.csv", data)},
                           data={"name": "between-limits"})
    assert r.status_code == 201, r.text[:300]
    assert r.json()["n_rows"] == lim.max_body_bytes // 60 + 1_000


def test_a_wide_parquet_is_refused_from_its_footer(tmp_path: Path) -> None:
    """Parquet's column count is checked in the footer, before any column is read."""
    settings = make_settings(tmp_path, max_features=8)
    init_db(settings.resolved_database_url)
    with make_client(settings) as client:
        data = parquet_of(make_frame(n=40, n_features=settings.limits.max_features + 1))
        r = client.post("/datasets", files={"file": ("wide.parquet", data)})
        assert r.status_code == 413, r.text
        assert re.search(rf"{settings.limits.max_features + 2} columns, above the limit of "
                         rf"{settings.limits.max_features} features", r.json()["detail"])
        assert client.get("/datasets").json()["count"] == 0


def test_plain_unicode_filenames_are_welcome(corpus: Corpus) -> None:
    """The filename checks refuse paths and invisible characters, not accents or spaces."""
    r = corpus.client.post("/datasets", files={"file": ("données (v2).csv", frame_csv(seed=7))})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "donn-es-v2"


def test_a_cr_only_csv_with_many_columns_is_read(corpus: Corpus) -> None:
    """Old-Mac line endings (a lone CR): the header is the first line, not the whole file."""
    n_columns = 3_000  # 40 rows x 3,000 columns: 120,000 separators, above max_features
    rng = np.random.default_rng(5)
    header = ",".join([f"f{i}" for i in range(n_columns - 1)] + ["label"])
    rows = [",".join(f"{v:.2f}" for v in rng.standard_normal(n_columns - 1)) + f",{i % 2}"
            for i in range(40)]
    data = "\r".join([header, *rows]).encode()
    assert data.count(b",") > corpus.settings.limits.max_features
    r = corpus.client.post("/datasets", files={"file": ("mac.csv", data)}, data={"name": "mac"})
    assert r.status_code == 201, r.text[:300]
    assert (r.json()["n_rows"], r.json()["n_features"]) == (40, n_columns - 1)


def test_a_builtin_within_the_limits_is_generated(corpus: Corpus) -> None:
    """Positive control for the built-in cases: a small generated set is still welcome."""
    r = corpus.client.post("/datasets/builtin", json={"builtin": "teacher", "name": "small-teacher",
                                                      "options": {"size": 300, "hidden": 64}})
    assert r.status_code == 201, r.text[:300]
    assert (r.json()["n_rows"], r.json()["n_features"]) == (300, 784)
