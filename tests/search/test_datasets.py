"""Datasets: builtins, file parsing and its refusals, serialisation and seeded splits."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from core.errors import InvalidDataset, InvalidInput, PayloadTooLarge, UnsupportedMediaType
from search.datasets import (
    BUILTINS,
    MIN_ROWS_PER_CLASS,
    Dataset,
    apply_scaler,
    inverse_target,
    list_builtins,
    load_builtin,
    load_file,
    resolve_dataset,
    split_dataset,
)
from tests.utils.data_files import csv_bytes, make_frame, npz_bytes, write

# Small sizes keep the generated sets fast; the defaults are exercised by bench notes.
SMALL = {"mnist1d": {"size": 200}, "teacher": {"size": 300}, "two_spirals": {"n": 120},
         "periodic": {"size": 400}, "smooth_regression": {"size": 300}}
EXPECTED = {
    # name: (n_features, task, n_classes, input_shape)
    "digits": (64, "classification", 10, (1, 8, 8)),
    "breast_cancer": (30, "classification", 2, None),
    "wine": (13, "classification", 3, None),
    "iris": (4, "classification", 3, None),
    "diabetes": (10, "regression", None, None),
    "mnist1d": (40, "classification", 10, (1, 40)),
    "two_spirals": (2, "classification", 2, None),
    "teacher": (784, "classification", 10, (1, 28, 28)),
    "periodic": (12, "classification", 4, None),
    "smooth_regression": (6, "regression", None, None),
    "digits_images": (64, "classification", 10, (1, 8, 8)),
    "modular_sum": (2, "classification", 23, None),
    "max_position": (8, "classification", 8, None),
}


def _load_csv(df: pd.DataFrame, **kwargs: Any) -> Dataset:
    return load_file(csv_bytes(df), filename="data.csv", **kwargs)


# --------------------------------------------------------------------------- builtins


def test_catalogue_lists_every_builtin_with_task_and_defaults() -> None:
    assert set(BUILTINS) == set(EXPECTED)
    entries = {e["name"]: e for e in list_builtins()}
    json.dumps(entries)  # JSON-able for the API
    for name, (_, task, _, _) in EXPECTED.items():
        assert entries[name]["task"] == task
        assert entries[name]["description"]
    assert entries["teacher"]["defaults"]["size"] == 10000


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_loads_with_expected_shapes(name: str) -> None:
    n_features, task, n_classes, input_shape = EXPECTED[name]
    ds = load_builtin(name, **SMALL.get(name, {}))
    assert ds.source == "builtin" and ds.task == task and ds.name == name
    assert ds.X.dtype == np.float32 and ds.X.ndim == 2 and ds.n_features == n_features
    assert ds.y.dtype == (np.int64 if task == "classification" else np.float32)
    assert ds.n_classes == n_classes and ds.input_shape == input_shape
    assert len(ds.feature_names) == n_features and ds.n_rows == len(ds.y) >= 20
    if n_classes:
        assert len(ds.class_names or []) == n_classes
        assert set(np.unique(ds.y)) == set(range(n_classes))
    assert np.isfinite(ds.X).all()
    schema = ds.schema()
    json.dumps(schema)
    assert schema["n_rows"] == ds.n_rows and schema["content_hash"] == ds.content_hash()


@pytest.mark.parametrize("name", ["mnist1d", "teacher", "two_spirals", "periodic",
                                  "smooth_regression"])
def test_generated_builtins_are_deterministic(name: str) -> None:
    opts = SMALL[name]
    a, b = load_builtin(name, **opts), load_builtin(name, **opts)
    assert a.content_hash() == b.content_hash()
    assert a.options == {**BUILTINS[name].defaults, **opts}
    c = load_builtin(name, **opts, seed=123)
    assert c.content_hash() != a.content_hash()


def test_mnist1d_leaves_global_random_state_alone() -> None:
    np.random.seed(5)
    expected = np.random.random(3)
    np.random.seed(5)
    load_builtin("mnist1d", size=100)  # mnist1d reseeds the global RNG internally
    assert np.array_equal(np.random.random(3), expected)


def test_teacher_labels_do_not_depend_on_size_and_classes_are_balanced() -> None:
    small, large = load_builtin("teacher", size=100), load_builtin("teacher", size=2000)
    assert np.array_equal(small.X, large.X[:100]) and np.array_equal(small.y, large.y[:100])
    counts = np.bincount(large.y, minlength=10)
    assert counts.min() > 0.5 * 200 and counts.max() < 1.5 * 200
    other_task = load_builtin("teacher", size=2000, teacher_seed=1)
    assert np.array_equal(other_task.X, large.X) and not np.array_equal(other_task.y, large.y)


def test_builtin_options_are_coerced_and_checked() -> None:
    assert load_builtin("two_spirals", n="40").n_rows == 40  # CLI/query strings
    with pytest.raises(InvalidInput, match="unknown option.*sizee.*allowed: size"):
        load_builtin("teacher", sizee=10)
    with pytest.raises(InvalidInput, match="'size'.*must be in"):
        load_builtin("teacher", size=5)
    with pytest.raises(InvalidInput, match="must be int"):
        load_builtin("teacher", size="many")
    with pytest.raises(InvalidInput, match="allowed: none"):
        load_builtin("iris", size=10)
    with pytest.raises(InvalidDataset, match="unknown builtin.*digits"):
        load_builtin("mnist")


# --------------------------------------------------------------------------- splits


def test_split_is_deterministic_disjoint_and_complete() -> None:
    ds = load_builtin("digits")
    a, b = split_dataset(ds, seed=3), split_dataset(ds, seed=3)
    for part in ("idx_train", "idx_val", "idx_test"):
        assert np.array_equal(getattr(a, part), getattr(b, part))
    assert np.array_equal(a.X_val, b.X_val)
    all_idx = np.concatenate([a.idx_train, a.idx_val, a.idx_test])
    assert np.array_equal(np.sort(all_idx), np.arange(ds.n_rows))
    assert len(a.idx_test) == math.ceil(0.15 * ds.n_rows)
    assert abs(len(a.idx_val) - 0.15 * ds.n_rows) <= 1
    assert not np.array_equal(split_dataset(ds, seed=4).idx_test, a.idx_test)
    assert a.label_map == ds.class_names and a.input_shape == (1, 8, 8) and a.n_classes == 10


def test_split_stratification_keeps_class_ratios() -> None:
    y = np.array([0] * 700 + [1] * 200 + [2] * 100)
    X = np.random.default_rng(0).standard_normal((len(y), 2))
    ds = Dataset("imb", X, y, "classification", ["a", "b"], "label", ["x", "y", "z"])
    s = split_dataset(ds, seed=0)
    overall = np.bincount(y) / len(y)
    for part in (s.y_train, s.y_val, s.y_test):
        assert np.allclose(np.bincount(part, minlength=3) / len(part), overall, atol=0.01)


def test_scaler_is_fitted_on_train_only() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(5.0, 3.0, (400, 4))
    X[:, 3] = 7.0  # constant column: std 0 -> 1, so no division by zero
    ds = Dataset("s", X, rng.integers(0, 2, 400), "classification", list("abcd"), "label")
    s = split_dataset(ds, seed=0)
    train_raw = ds.X[s.idx_train].astype(np.float64)
    assert np.allclose(s.scaler["mean"], train_raw.mean(0))
    assert s.scaler["std"][3] == 1.0
    assert np.allclose(s.X_train.mean(0), 0, atol=1e-5)
    assert np.allclose(s.X_train[:, :3].std(0), 1, atol=1e-4)
    # validation and test used the training statistics, not their own
    expected_val = (ds.X[s.idx_val] - train_raw.mean(0)) / np.array(s.scaler["std"])
    assert np.allclose(s.X_val, expected_val, atol=1e-5)
    assert np.allclose(s.X_test, apply_scaler(ds.X[s.idx_test], s.scaler))
    assert not np.allclose(s.X_val[:, :3].mean(0), 0, atol=1e-6)
    assert s.X_train.dtype == s.X_val.dtype == s.X_test.dtype == np.float32


def test_regression_targets_are_standardised_with_train_stats() -> None:
    ds = load_builtin("diabetes")
    s = split_dataset(ds, seed=0)
    assert s.task == "regression" and s.label_map is None and s.target_scaler is not None
    assert s.y_train.dtype == np.float32
    assert abs(float(s.y_train.mean())) < 1e-5
    assert s.target_scaler["mean"] == pytest.approx(float(ds.y[s.idx_train].mean()), rel=1e-5)
    assert np.allclose(inverse_target(s.y_val, s.target_scaler), ds.y[s.idx_val], atol=1e-3)


def test_split_refuses_bad_fractions_and_too_many_classes() -> None:
    ds = load_builtin("iris")
    with pytest.raises(InvalidInput, match="sum below 1"):
        split_dataset(ds, seed=0, val_fraction=0.5, test_fraction=0.5)
    y = np.repeat(np.arange(10), 3)
    many = Dataset("m", np.zeros((30, 1)), y, "classification", ["a"], "label")
    with pytest.raises(InvalidDataset, match="10 classes.*cannot hold one row of each"):
        split_dataset(many, seed=0)
    y = np.array([0] * 2 + [1] * 60 + [2] * 60)  # a rare class, valid at the default fractions
    rare = Dataset("r", np.zeros((len(y), 1)), y, "classification", ["a"], "label")
    assert len(split_dataset(rare, seed=0).idx_train) > 0
    with pytest.raises(InvalidDataset, match="cannot be split into stratified.*rarest classes"):
        split_dataset(rare, seed=0, val_fraction=0.2, test_fraction=0.6)


# --------------------------------------------------------------------------- NPZ


def test_dataset_npz_round_trip_stores_json_metadata_not_objects() -> None:
    ds = load_builtin("digits")
    blob = ds.to_npz_bytes()
    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
        meta_key = next(k for k in npz.files if k not in ("X", "y"))
        assert npz[meta_key].dtype == np.uint8
        assert json.loads(npz[meta_key].tobytes())["class_names"] == ds.class_names
    back = Dataset.from_npz_bytes(blob)
    assert np.array_equal(back.X, ds.X) and np.array_equal(back.y, ds.y)
    assert back.schema() == ds.schema()
    reg = load_builtin("diabetes")
    blob = reg.to_npz_bytes(compress=False)
    assert Dataset.from_npz_bytes(blob).content_hash() == reg.content_hash()


def test_content_hash_ignores_name_but_sees_data_and_labels() -> None:
    ds = load_builtin("iris")
    renamed = Dataset("other", ds.X, ds.y, ds.task, ds.feature_names, ds.label_name, ds.class_names)
    assert renamed.content_hash() == ds.content_hash()
    relabelled = Dataset("x", ds.X, ds.y, ds.task, ds.feature_names, ds.label_name, ["a", "b", "c"])
    assert relabelled.content_hash() != ds.content_hash()
    X = ds.X.copy()
    X[0, 0] += 1
    changed = Dataset("x", X, ds.y, ds.task, ds.feature_names, ds.label_name, ds.class_names)
    assert changed.content_hash() != ds.content_hash()


def test_npz_upload_with_nd_inputs_keeps_input_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 1, 4, 5)).astype(np.float64)
    y = np.array(["cat", "dog", "emu"] * 20)
    path = write(tmp_path / "imgs.npz", npz_bytes(compressed=True, x=X, y=y))
    ds = load_file(path)
    assert ds.X.shape == (60, 20) and ds.input_shape == (1, 4, 5) and ds.name == "imgs"
    assert ds.class_names == ["cat", "dog", "emu"] and ds.y[:3].tolist() == [0, 1, 2]
    assert np.allclose(ds.X.reshape(60, 1, 4, 5), X)


def test_npz_uses_label_option_for_the_target_array() -> None:
    X = np.random.default_rng(0).standard_normal((40, 3))
    data = npz_bytes(X=X, price=np.linspace(0, 1, 40) ** 2, y=np.zeros(40))
    ds = load_file(data, filename="p.npz", label="price")
    assert ds.task == "regression" and ds.label_name == "price"


class _Boom:
    """Unpickling this would create a file: proof that a load ran pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[override]
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("which", ["X", "y"])
def test_npz_with_pickled_object_array_is_refused_never_unpickled(
    tmp_path: Path, which: str
) -> None:
    marker = tmp_path / "unpickled"
    evil = np.array([_Boom(marker)] * 30, dtype=object)
    arrays = {"X": np.zeros((30, 2)), "y": np.arange(30) % 2}
    arrays[which] = evil
    with pytest.raises(InvalidDataset, match=f"'{which}'.*dtype object.*never unpickled"):
        load_file(npz_bytes(X=arrays["X"], y=arrays["y"]), filename="evil.npz")
    assert not marker.exists()


def test_npz_decompression_bomb_is_refused_before_reading() -> None:
    data = npz_bytes(compressed=True, X=np.zeros((20_000, 100)), y=np.arange(20_000) % 2)
    assert len(data) < 100_000  # 16 MB of zeros compress to almost nothing
    with pytest.raises(PayloadTooLarge, match="array 'X'.*uncompressed.*above the limit"):
        load_file(data, filename="bomb.npz", max_bytes=1_000_000)


def test_npz_errors_name_the_problem() -> None:
    X = np.zeros((30, 2))
    with pytest.raises(InvalidDataset, match="needs arrays named X.*holds: features, y"):
        load_file(npz_bytes(features=X, y=np.arange(30) % 2), filename="a.npz")
    with pytest.raises(InvalidDataset, match="X has 30 rows but y has 29"):
        load_file(npz_bytes(X=X, y=np.arange(29) % 2), filename="a.npz")
    with pytest.raises(InvalidDataset, match="must be 1-D.*argmax"):
        load_file(npz_bytes(X=X, y=np.eye(2)[np.arange(30) % 2]), filename="a.npz")
    with pytest.raises(UnsupportedMediaType, match="not a zip.*looks like CSV"):
        load_file(b"a,b\n1,2\n", filename="a.npz")
    zip_no_npy = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(zip_no_npy, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(UnsupportedMediaType, match="zip archive without .npy"):
        load_file(zip_no_npy.getvalue(), filename="a.npz")


# --------------------------------------------------------------------------- CSV / Parquet


def test_csv_with_string_labels_maps_sorted_classes(tmp_path: Path) -> None:
    df = make_frame(60, string_labels=True, label="species")
    ds = load_file(write(tmp_path / "t.csv", csv_bytes(df)), label="species")
    assert ds.task == "classification" and ds.class_names == ["c0", "c1", "c2"]
    assert [ds.class_names[i] for i in ds.y] == df["species"].tolist()
    assert ds.feature_names == ["f0", "f1", "f2"] and ds.label_name == "species"
    assert np.allclose(ds.X, df[["f0", "f1", "f2"]].to_numpy(), atol=1e-6)


def test_csv_label_is_found_by_default_name_and_semicolons_work() -> None:
    df = make_frame(40, label="Target")
    ds = load_file(csv_bytes(df, sep=";"), filename="semi.csv")
    assert ds.label_name == "Target" and ds.n_features == 3
    assert load_file(csv_bytes(df), filename="noext").n_rows == 40  # content decides


def test_parquet_round_trip(tmp_path: Path) -> None:
    df = make_frame(50, string_labels=True)
    df["flag"] = df["f0"] > 0  # booleans are numeric features
    path = tmp_path / "t.parquet"
    df.to_parquet(path)
    ds = load_file(path)
    assert ds.feature_names == ["f0", "f1", "f2", "flag"] and ds.class_names == ["c0", "c1", "c2"]
    assert np.allclose(ds.X[:, :3], df[["f0", "f1", "f2"]].to_numpy(), atol=1e-6)
    assert ds.X[:, 3].tolist() == df["flag"].astype(float).tolist()


@pytest.mark.parametrize(
    ("labels", "task", "n_classes"),
    [
        (np.arange(100) % 4, "classification", 4),  # few integers
        ((np.arange(100) % 4).astype(float), "classification", 4),  # whole-number floats
        (np.linspace(0, 1, 100), "regression", None),  # many floats
        (np.arange(100), "regression", None),  # integers with > 50 values
        (np.arange(100) % 2 == 0, "classification", 2),  # booleans
    ],
)
def test_task_inference_rule(labels: np.ndarray, task: str, n_classes: int | None) -> None:
    df = make_frame(100).drop(columns="label").assign(label=labels)
    ds = _load_csv(df)
    assert ds.task == task and ds.n_classes == n_classes


def test_explicit_task_overrides_inference() -> None:
    df = make_frame(100).drop(columns="label").assign(label=np.arange(100) % 4)
    assert _load_csv(df, task="regression").task == "regression"
    halves = make_frame(60).drop(columns="label").assign(label=(np.arange(60) % 3) / 2)
    ds = _load_csv(halves, task="classification")
    assert ds.class_names == ["0", "0.5", "1"]
    with pytest.raises(InvalidDataset, match="holds text.*task=classification"):
        _load_csv(make_frame(60, string_labels=True), task="regression")
    with pytest.raises(InvalidInput, match="task must be"):
        _load_csv(make_frame(60), task="clustering")  # type: ignore[arg-type]


def test_missing_label_column_lists_available_columns() -> None:
    with pytest.raises(
        InvalidDataset, match="label column 'kind' is not in.*'f0', 'f1', 'f2', 'label'"
    ):
        _load_csv(make_frame(), label="kind")
    with pytest.raises(InvalidDataset, match="no column named label.*--label.*'f0'"):
        _load_csv(make_frame(label="outcome"))
    both = make_frame().assign(y=1)
    with pytest.raises(InvalidDataset, match="several possible label columns.*label, y"):
        _load_csv(both)


def test_non_numeric_features_are_named_not_one_hot_encoded() -> None:
    df = make_frame(40)
    for i in range(7):
        df[f"txt{i}"] = "abc"
    df["f1"] = df["f1"].astype(object)
    df.loc[3, "f1"] = "oops"
    with pytest.raises(InvalidDataset) as err:
        _load_csv(df)
    msg = str(err.value)
    assert "8 feature column(s) are not numeric" in msg and "'f1' (e.g. 'oops' at row 3)" in msg
    assert "and 3 more" in msg and "one-hot" in msg


def test_nan_and_inf_are_counted_per_column() -> None:
    df = make_frame(40)
    df.loc[[1, 2], "f0"] = np.nan
    df.loc[5, "f2"] = np.inf
    with pytest.raises(
        InvalidDataset, match=r"2 NaN/missing and 1 infinite.*'f0' \(2\), 'f2' \(1\)"
    ):
        _load_csv(df)
    labels = make_frame(40).drop(columns="label").assign(label=[np.nan, *range(39)])
    with pytest.raises(InvalidDataset, match="label 'label' has 1 missing/NaN values"):
        _load_csv(labels)


def test_class_and_row_counts_are_checked() -> None:
    with pytest.raises(InvalidDataset, match="single class.*at least 2 classes"):
        _load_csv(make_frame(40).assign(label=1))
    with pytest.raises(InvalidDataset, match="has 10 rows; at least 20"):
        _load_csv(make_frame(10))
    rare = make_frame(40, n_classes=2)
    rare.loc[0, "label"] = 7  # one row of class 7
    with pytest.raises(
        InvalidDataset, match=f"at least {MIN_ROWS_PER_CLASS} rows.*'7' \\(1 row\\)"
    ):
        _load_csv(rare)


def test_empty_and_degenerate_csv_files() -> None:
    with pytest.raises(InvalidDataset, match="is empty"):
        load_file(b"", filename="e.csv")
    with pytest.raises(InvalidDataset, match="no data rows"):
        load_file(b"a,b,label\n", filename="h.csv")
    with pytest.raises(InvalidDataset, match="no feature columns, only the label column 'label'"):
        load_file(b"label\n" + b"1\n2\n" * 15, filename="l.csv")


def test_ragged_csv_reports_the_line() -> None:
    body = "a,b,label\n" + "1,2,0\n" * 5 + "1,2,3,4\n" + "1,2,1\n" * 20
    with pytest.raises(InvalidDataset, match="line 7 has 4 fields but earlier rows have 3"):
        load_file(body.encode(), filename="r.csv")


def test_size_and_column_limits() -> None:
    data = csv_bytes(make_frame(200))
    with pytest.raises(PayloadTooLarge, match="above the limit.*MAX_UPLOAD_BYTES"):
        load_file(data, filename="big.csv", max_bytes=1000)
    with pytest.raises(PayloadTooLarge, match="4 columns.*limit of 2 features"):
        load_file(data, filename="wide.csv", max_columns=2)
    with pytest.raises(PayloadTooLarge, match="more than 100 rows"):
        load_file(data, filename="long.csv", max_rows=100)
    buf = io.BytesIO()
    make_frame(200).to_parquet(buf)
    with pytest.raises(PayloadTooLarge, match="4 columns"):
        load_file(buf.getvalue(), filename="wide.parquet", max_columns=2)


def test_content_must_match_the_extension() -> None:
    parquet = io.BytesIO()
    make_frame(30).to_parquet(parquet)
    with pytest.raises(UnsupportedMediaType, match=r"\.csv extension but is not text.*Parquet"):
        load_file(parquet.getvalue(), filename="t.csv")
    with pytest.raises(UnsupportedMediaType, match="lacks the Parquet magic bytes 'PAR1'.*CSV"):
        load_file(csv_bytes(make_frame(30)), filename="t.parquet")
    with pytest.raises(UnsupportedMediaType, match="not text.*binary data"):
        load_file(bytes(range(256)) * 4, filename="t.csv")
    with pytest.raises(UnsupportedMediaType, match="gzip.*Upload CSV, Parquet or NPZ"):
        load_file(b"\x1f\x8b\x08\x00" + b"\x00" * 40, filename="t.gz")
    with pytest.raises(UnsupportedMediaType, match="pickle"):
        load_file(b"\x80\x04\x95" + b"\x00" * 40, filename="model.pkl")


# --------------------------------------------------------------------------- resolve


def test_resolve_dataset_by_name_or_path(tmp_path: Path) -> None:
    assert resolve_dataset("iris").name == "iris"
    assert resolve_dataset("two_spirals", n=50).n_rows == 50
    path = write(tmp_path / "t.csv", csv_bytes(make_frame(40, label="kind")))
    ds = resolve_dataset(str(path), label="kind")
    assert ds.source == "upload" and ds.label_name == "kind"
    with pytest.raises(InvalidInput, match="size apply to builtin"):
        resolve_dataset(str(path), label="kind", size=10)
    with pytest.raises(InvalidDataset, match="neither a builtin.*digits, breast_cancer"):
        resolve_dataset("no_such_thing")
    with pytest.raises(InvalidInput, match="regression"):
        resolve_dataset("iris", task="regression")


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_every_builtin_is_estimated_before_it_is_generated(name: str) -> None:
    """The service checks a built-in's size from its options before generating it."""
    from search.datasets.builtins import estimate_builtin

    assert BUILTINS[name].shape is not None
    est = estimate_builtin(name)
    assert est.n_rows > 0 and est.n_features > 0


@pytest.mark.parametrize("stratified", [False, True])
def test_the_split_gives_scikit_learns_rows_without_importing_it(stratified: bool) -> None:
    """The split replica (no scikit-learn import before the first epoch) picks exactly the
    rows ``sklearn.model_selection.train_test_split`` picks, and fails as it does."""
    from sklearn.model_selection import train_test_split as reference

    from search.datasets._shuffle_split import train_test_split

    rng = np.random.default_rng(7)
    compared = refused = 0
    for _ in range(150):
        n, k = int(rng.integers(10, 300)), int(rng.integers(2, 25))
        y = rng.integers(0, k, n)
        fraction, seed = float(rng.uniform(0.05, 0.5)), int(rng.integers(0, 2**31))
        idx = np.arange(n) * 3 + 1
        stratify = y if stratified else None
        try:
            expected = reference(idx, test_size=fraction, random_state=seed, stratify=stratify)
        except ValueError as exc:
            with pytest.raises(ValueError) as ours:
                train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
            assert str(ours.value) == str(exc)
            refused += 1
            continue
        got = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
        for a, b in zip(expected, got, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b), (n, k, fraction, seed)
        compared += 1
    assert compared > 100 and (refused > 0 or not stratified)


def test_digits_is_read_from_scikit_learns_file_as_load_digits_reads_it() -> None:
    from sklearn.datasets import load_digits

    from search.datasets.builtins import _read_digits

    ours, theirs = _read_digits(), load_digits()
    assert ours is not None
    assert ours.data.dtype == theirs.data.dtype and np.array_equal(ours.data, theirs.data)
    assert ours.target.dtype == theirs.target.dtype and np.array_equal(ours.target, theirs.target)
    assert list(ours.feature_names) == list(theirs.feature_names)
    assert np.array_equal(ours.target_names, theirs.target_names)


def test_a_search_reaches_its_data_without_scikit_learn_scipy_or_pandas() -> None:
    """Loading digits and splitting it (what a search does before its first epoch) imports
    none of the slow libraries (a fresh interpreter: this one has them all)."""
    import subprocess
    import sys

    code = ("import sys; from search.datasets import load_builtin, split_dataset; "
            "split_dataset(load_builtin('digits'), seed=0); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'sklearn', 'scipy', 'pandas', 'torch'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[2], check=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_periodic_and_smooth_regression_rows_do_not_depend_on_size() -> None:
    """The two generated teachers of bench/quality.py: fixed task, rows independent of size,
    balanced non-trivial labels, a target with signal well above its noise, and estimates
    that match what is generated."""
    from search.datasets.builtins import estimate_builtin

    small, large = load_builtin("periodic", size=100), load_builtin("periodic", size=3000)
    assert np.array_equal(small.X, large.X[:100]) and np.array_equal(small.y, large.y[:100])
    counts = np.bincount(large.y, minlength=4)
    assert counts.min() > 0.6 * 750 and counts.max() < 1.4 * 750
    other = load_builtin("periodic", size=3000, teacher_seed=1)
    assert np.array_equal(other.X, large.X) and (other.y != large.y).mean() > 0.3
    # uniform inputs in the cube; labels not a function of one feature's sign
    assert large.X.min() >= -1 and large.X.max() <= 1 and abs(float(large.X.mean())) < 0.05
    for j in range(large.n_features):
        agree = (large.y == np.where(large.X[:, j] > 0, large.y.max(), 0)).mean()
        assert agree < 0.5

    r_small = load_builtin("smooth_regression", size=100)
    r_large = load_builtin("smooth_regression")
    assert np.array_equal(r_small.X, r_large.X[:100]) and np.allclose(r_small.y, r_large.y[:100])
    assert 0.8 < float(r_large.y.std()) < 1.2  # standardised target + 0.05 noise
    clean = load_builtin("smooth_regression", noise=0.0)
    assert np.array_equal(clean.X, r_large.X)
    assert 0.02 < float(np.std(r_large.y - clean.y)) < 0.08
    # not linear in the inputs: least squares leaves most of the variance
    A = np.c_[clean.X, np.ones(len(clean.X))]
    resid = clean.y - A @ np.linalg.lstsq(A, clean.y, rcond=None)[0]
    assert resid.var() > 0.3 * clean.y.var()
    for ds in (large, r_large):
        est = estimate_builtin(ds.name)
        assert (est.n_rows, est.n_features) == (ds.n_rows, ds.n_features)
        assert est.n_classes == (ds.n_classes or 0)
