"""Token and image data: built-ins, NPZ uploads, their scaling, their refusals, and the
architectures that can (and cannot) read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.errors import InvalidDataset, InvalidInput
from search.datasets import Dataset, load_builtin, load_file, split_dataset
from search.spec import SearchSpec, parse_spec
from tests.utils.data_files import npz_bytes, write


def test_modular_sum_is_every_pair_with_its_sum() -> None:
    ds = load_builtin("modular_sum", p=7)
    assert ds.modality == "tokens" and ds.vocab_size == 7 and ds.n_rows == 49
    pairs = {tuple(int(v) for v in row) for row in ds.X}
    assert len(pairs) == 49
    assert np.array_equal(ds.y, ds.X.astype(np.int64).sum(1) % 7)
    sampled = load_builtin("modular_sum", p=11, n=300, seed=3)
    assert sampled.n_rows == 300 and sampled.X.max() <= 10
    assert np.array_equal(load_builtin("modular_sum", p=11, n=300, seed=3).X, sampled.X)


def test_max_position_labels_the_unique_maximum() -> None:
    ds = load_builtin("max_position", n=200, length=6, vocab=9, seed=1)
    X = ds.X.astype(np.int64)
    assert ds.modality == "tokens" and ds.vocab_size == 9 and X.shape == (200, 6)
    assert ((X == X.max(1, keepdims=True)).sum(1) == 1).all()
    assert np.array_equal(ds.y, X.argmax(1))
    assert len(set(ds.y.tolist())) == 6  # every position wins somewhere


def test_tokens_are_never_scaled_and_images_per_channel() -> None:
    tokens = split_dataset(load_builtin("modular_sum", p=13), seed=0)
    ds = load_builtin("modular_sum", p=13)
    assert set(tokens.scaler["mean"]) == {0.0} and set(tokens.scaler["std"]) == {1.0}
    np.testing.assert_array_equal(tokens.X_train, ds.X[tokens.idx_train])  # ids unchanged
    images = split_dataset(load_builtin("digits_images"), seed=0)
    assert len(set(images.scaler["mean"])) == 1 and len(set(images.scaler["std"])) == 1
    assert abs(float(images.X_train.mean())) < 1e-4 and abs(float(images.X_train.std()) - 1) < 1e-3
    digits = split_dataset(load_builtin("digits"), seed=0)  # the tabular digits: per pixel
    assert len(set(digits.scaler["mean"])) > 10


def test_token_npz_round_trips_and_infers_the_vocabulary(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.integers(0, 30, size=(80, 6))
    y = X[:, 0] % 2
    ds = load_file(write(tmp_path / "seq.npz", npz_bytes(X=X, y=y, vocab_size=np.array(40))))
    assert ds.modality == "tokens" and ds.vocab_size == 40 and ds.input_shape is None
    again = Dataset.from_npz_bytes(ds.to_npz_bytes())
    assert again.modality == "tokens" and again.vocab_size == 40
    assert again.content_hash() == ds.content_hash()
    inferred = load_file(write(tmp_path / "inf.npz", npz_bytes(X=X, y=y, vocab_size=np.array(0))))
    assert inferred.vocab_size == int(X.max()) + 1
    assert ds.schema()["modality"] == "tokens" and ds.schema()["vocab_size"] == 40


def test_image_npz_is_an_image(tmp_path: Path) -> None:
    X = np.random.default_rng(0).random((40, 3, 4, 4))
    ds = load_file(write(tmp_path / "img.npz", npz_bytes(X=X, y=np.arange(40) % 2)))
    assert ds.modality == "image" and ds.input_shape == (3, 4, 4) and ds.n_features == 48
    scaler = split_dataset(ds, seed=0).scaler
    assert len(set(scaler["mean"])) == 3  # one per channel


@pytest.mark.parametrize(("arrays", "match"), [
    ({"X": np.array([[1, 2], [3, 9]] * 20), "vocab_size": np.array(5)},
     r"ids in 'X' must lie in 0\.\.4 \(vocab_size 5\), found 1\.\.9"),
    ({"X": np.array([[-1, 2], [3, 1]] * 20), "vocab_size": np.array(5)}, r"found -1\.\.3"),
    ({"X": np.array([[1.5, 2.0], [3.0, 1.0]] * 20), "vocab_size": np.array(5)},
     r"must hold integer token ids .*got float64"),
    ({"X": np.zeros((40, 2, 2), dtype=np.int64), "vocab_size": np.array(5)},
     r"must be \(N, T\), one id per position"),
    ({"X": np.zeros((40, 2), dtype=np.int64), "vocab_size": np.array([5, 6])},
     r"'vocab_size' .* must be one integer"),
    ({"X": np.array([np.arange(3), np.arange(2)] * 20, dtype=object)},
     r"dtype object .*ragged sequences.*never unpickled"),
])
def test_bad_token_files_say_why(tmp_path: Path, arrays: dict[str, Any], match: str) -> None:
    y = np.arange(40) % 2
    with pytest.raises(InvalidDataset, match=match):
        load_file(write(tmp_path / "bad.npz", npz_bytes(y=y, **arrays)))


def _spec(arch: str, **inputs: Any) -> SearchSpec:
    return parse_spec({"dataset": "x", "architecture": arch}).with_inputs(**inputs)


TABULAR = {"modality": "tabular", "input_shape": None, "vocab_size": None}
TOKENS = {"modality": "tokens", "input_shape": None, "vocab_size": 23}
IMAGE = {"modality": "image", "input_shape": [1, 8, 8], "vocab_size": None}


def test_architectures_take_their_inputs_from_the_dataset() -> None:
    arch = _spec("transformer:d=32,layers=1,heads=2", **TOKENS).arch_spec()
    assert arch.vocab_size == 23
    assert _spec("resnet:8,16", **IMAGE).arch_spec().input_shape == (1, 8, 8)
    assert _spec("cnn:8/16", **IMAGE).arch_spec().input_shape == (1, 8, 8)
    assert _spec("mlp:16", **IMAGE).arch_spec().kind == "mlp"  # flattened pixels are allowed
    # the digits table has an image shape too, so cnn/resnet read it
    assert _spec("resnet:8", modality="tabular", input_shape=[1, 8, 8],
                 vocab_size=None).arch_spec().input_shape == (1, 8, 8)


@pytest.mark.parametrize(("arch", "inputs", "match"), [
    ("transformer:d=32", TABULAR, "a transformer reads token sequences, but the dataset is tabular"),
    ("transformer:d=32", IMAGE, "but the dataset is image"),
    ("mlp:16", TOKENS, "token ids, which a mlp would read as magnitudes"),
    ("resnet:8", TOKENS, "use a transformer"),
    ("resnet:8", TABULAR, "a resnet needs input_shape"),
    ("cnn:4/8", TABULAR, "a cnn needs input_shape"),
])
def test_mismatched_architectures_are_refused(arch: str, inputs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        _spec(arch, **inputs)


def test_group_rational_groups_must_divide_the_widths() -> None:
    from models.activations import get_activation

    groups = next(p for p in get_activation("group_rational").space() if p.name == "groups")
    assert groups.choices_for([7]) == (1,) and groups.choices_for([24, 40]) == (1, 2, 4, 8)
    spec = parse_spec({"dataset": "x", "architecture": "transformer:d=32,heads=2",
                       "families": ["group_rational", "swiglu"]})
    assert spec.activation_widths() == [128]
    assert groups.choices_for(spec.activation_widths()) == (1, 2, 4, 8, 16)
