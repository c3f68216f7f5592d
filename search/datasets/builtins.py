"""The built-in catalogue (:data:`BUILTINS`) and its loaders and generators.

scikit-learn's bundled tables, MNIST-1D generated locally, two spirals, a
teacher-network set, a periodic teacher and a smooth regression.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from core.errors import InvalidDataset, InvalidInput

from ._common import MIN_ROWS, Task
from .dataset import Dataset, validate_dataset


@dataclass(frozen=True)
class BuiltinSpec:
    """One catalogue entry: what it is, its task, its options with defaults, and its loader.

    ``limits`` maps numeric options to their inclusive (low, high) range.
    """

    name: str
    description: str
    task: Task
    defaults: Mapping[str, Any]
    loader: Callable[..., Dataset]
    limits: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    #: options -> (rows, features, classes or 0 for regression, generator working bytes)
    shape: Callable[..., tuple[int, int, int, int]] | None = None

    def public(self) -> dict[str, Any]:
        """JSON-able view for the API and the CLI (no loader)."""
        return {
            "name": self.name,
            "description": self.description,
            "task": self.task,
            "defaults": dict(self.defaults),
            "limits": {k: list(v) for k, v in self.limits.items()},
        }


def _bundled_file(name: str) -> Path | None:
    """A data file shipped inside scikit-learn, found without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root) / "datasets" / "data" / name
        if path.is_file():
            return path
    return None


def _read_digits() -> SimpleNamespace | None:
    """``sklearn.datasets.load_digits()``'s arrays read straight from its bundled file.

    Importing ``sklearn.datasets`` costs about a second (scipy), on the way to the first
    epoch of a search on digits in a fresh home; the parsing below is load_digits' own
    (``tests/search/test_datasets.py`` compares the two). None: the file is not where
    this scikit-learn keeps it, and the caller uses scikit-learn.
    """
    path = _bundled_file("digits.csv.gz")
    if path is None:
        return None
    with gzip.open(path, mode="rt", encoding="utf-8") as fh:
        data = np.loadtxt(fh, delimiter=",")
    return SimpleNamespace(
        data=data[:, :-1], target=data[:, -1].astype(int, copy=False),
        target_names=np.arange(10),
        feature_names=[f"pixel_{r}_{c}" for r in range(8) for c in range(8)])


_BUNDLED_READERS: dict[str, Callable[[], SimpleNamespace | None]] = {"load_digits": _read_digits}


def _from_sklearn(
    name: str, loader_name: str, label_name: str, input_shape: tuple[int, ...] | None = None
) -> Dataset:
    """Wrap one of scikit-learn's bundled (no download) datasets."""
    reader = _BUNDLED_READERS.get(loader_name)
    bunch: Any = reader() if reader is not None else None
    if bunch is None:
        from sklearn import datasets as skd

        bunch = getattr(skd, loader_name)()
    task: Task = "regression" if name == "diabetes" else "classification"
    class_names = None
    if task == "classification":
        class_names = [str(c) for c in bunch.target_names]
    return Dataset(
        name=name,
        X=bunch.data,
        y=bunch.target,
        task=task,
        feature_names=[str(f) for f in bunch.feature_names],
        label_name=label_name,
        class_names=class_names,
        input_shape=input_shape,
        source="builtin",
    )


def _digits() -> Dataset:
    return _from_sklearn("digits", "load_digits", "digit", input_shape=(1, 8, 8))


def _digits_images() -> Dataset:
    """The digits as 1x8x8 images (modality image: scaled per channel, for cnn and resnet)."""
    ds = _from_sklearn("digits_images", "load_digits", "digit", input_shape=(1, 8, 8))
    ds.X = (ds.X / np.float32(16.0)).astype(np.float32)  # pixel intensities 0..16 -> 0..1
    ds.modality = "image"
    return ds


def _token_dataset(name: str, X: np.ndarray, y: np.ndarray, vocab: int, label: str,
                   classes: list[str]) -> Dataset:
    return Dataset(name=name, X=X.astype(np.float32), y=y.astype(np.int64),
                   task="classification", feature_names=[f"t{i}" for i in range(X.shape[1])],
                   label_name=label, class_names=classes, source="builtin",
                   modality="tokens", vocab_size=vocab)


def _modular_sum(p: int, n: int, seed: int) -> Dataset:
    """Tokens ``a b`` -> ``(a + b) mod p``: every pair once (n=0), or n pairs drawn at random."""
    if n == 0:
        a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
        X = np.stack([a.ravel(), b.ravel()], axis=1)
        X = X[np.random.default_rng(seed).permutation(len(X))]
    else:
        X = np.random.default_rng(seed).integers(0, p, size=(n, 2))
    y = X.sum(1) % p
    return _token_dataset("modular_sum", X, y, p, "sum_mod_p", [str(i) for i in range(p)])


def _max_position(n: int, length: int, vocab: int, seed: int) -> Dataset:
    """Which position holds the largest token (unique maximum): the answer is an order.

    A bag-of-tokens model cannot solve it; the network must bind values to positions.
    """
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < n:
        x = rng.integers(0, vocab, size=(2 * n, length))
        top = x.max(1, keepdims=True)
        unique = (x == top).sum(1) == 1
        rows.extend(x[unique])
    X = np.asarray(rows[:n])
    y = X.argmax(1)
    return _token_dataset("max_position", X, y, vocab, "argmax_position",
                          [str(i) for i in range(length)])


def _breast_cancer() -> Dataset:
    return _from_sklearn("breast_cancer", "load_breast_cancer", "diagnosis")


def _wine() -> Dataset:
    return _from_sklearn("wine", "load_wine", "cultivar")


def _iris() -> Dataset:
    return _from_sklearn("iris", "load_iris", "species")


def _diabetes() -> Dataset:
    return _from_sklearn("diabetes", "load_diabetes", "progression")


def _mnist1d(size: int, seed: int) -> Dataset:
    """MNIST-1D generated locally with ``make_dataset`` (never its downloader: no network).

    mnist1d seeds the global ``random``/``np.random`` state; it is saved and restored so
    generating a dataset has no side effect on the caller. Its own train/test split is
    merged back into one pool because :func:`split_dataset` splits.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(size)
    args.seed = int(seed)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    X = np.concatenate([d["x"], d["x_test"]]).astype(np.float32)
    y = np.concatenate([d["y"], d["y_test"]]).astype(np.int64)
    return Dataset(
        name="mnist1d",
        X=X,
        y=y,
        task="classification",
        feature_names=[f"t{i}" for i in range(X.shape[1])],
        label_name="digit",
        class_names=[str(i) for i in range(10)],
        input_shape=(1, X.shape[1]),
        source="builtin",
    )


def _two_spirals(n: int, noise: float, seed: int) -> Dataset:
    """Two interleaved spirals (1.5 turns each): tiny, yet needs a non-linear boundary."""
    rng = np.random.default_rng(seed)
    n0 = n // 2
    n1 = n - n0
    t = np.sqrt(rng.random(n)) * 3 * np.pi  # (n,) angle, denser near the centre
    sign = np.concatenate([np.ones(n0), -np.ones(n1)])
    pts = np.stack([-t * np.cos(t), t * np.sin(t)], axis=1) * sign[:, None] / (3 * np.pi)
    pts += noise * rng.standard_normal((n, 2))
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(n1, np.int64)])
    perm = rng.permutation(n)
    return Dataset(
        name="two_spirals",
        X=pts[perm],
        y=y[perm],
        task="classification",
        feature_names=["x1", "x2"],
        label_name="spiral",
        class_names=["0", "1"],
        source="builtin",
    )


_TEACHER_SIDE = 28
_TEACHER_FREQS = 7


def _smooth_images(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random low-frequency images: a 7x7 cosine spectrum with 1/f amplitude, ~unit pixel variance."""
    side, k = _TEACHER_SIDE, _TEACHER_FREQS
    freqs = np.arange(k)
    grid = (np.arange(side) + 0.5) / side
    basis = np.cos(np.pi * np.outer(grid, freqs))  # (28, k)
    amp = np.outer(1.0 / (1 + freqs), 1.0 / (1 + freqs))  # (k, k)
    # Mean pixel variance of this random field, used to scale it to unit variance.
    b2 = (basis**2).mean(axis=0)  # (k,)
    scale = math.sqrt(float(b2 @ (amp**2) @ b2))
    coef = rng.standard_normal((n, k, k)) * (amp / scale)  # (n, k, k)
    imgs = np.einsum("hk,nkl,wl->nhw", basis, coef, basis, optimize=True)  # (n, 28, 28)
    return imgs.reshape(n, side * side)


_TEACHER_CALIB_ROWS = 4096
#: Float64 working set of one chunk of the teacher's generation.
_TEACHER_CHUNK_BYTES = 8 << 20


def _teacher_chunk_rows(hidden: int) -> int:
    return max(64, min(4096, _TEACHER_CHUNK_BYTES // (16 * (hidden + _TEACHER_SIDE**2))))


def _teacher_shape(size: int, seed: int, teacher_seed: int, hidden: int,
                   n_classes: int) -> tuple[int, int, int, int]:
    """Rows, features, classes, and the generator's own working memory in bytes."""
    d = _TEACHER_SIDE**2
    weights = 8 * (d * hidden + hidden * (n_classes + 1))
    # one chunk at a time: its images, their float64 copy, the hidden layer before and
    # after tanh; plus the calibration logits and the labels
    chunk = _teacher_chunk_rows(hidden)
    return size, d, n_classes, (weights + chunk * 16 * (hidden + d)
                                + 8 * (_TEACHER_CALIB_ROWS + size) * n_classes)


def _mnist1d_shape(size: int, seed: int) -> tuple[int, int, int, int]:
    # make_dataset keeps a few float64 copies of every series (templates, transforms) at
    # its working length of 80-100 steps before resampling to 40: ~16x the output.
    rows = size // 10 * 10
    return rows, 40, 10, 16 * rows * 40 * 8


def _spirals_shape(n: int, noise: float, seed: int) -> tuple[int, int, int, int]:
    return n, 2, 2, 8 * n * 8


def _modular_sum_shape(p: int, n: int, seed: int) -> tuple[int, int, int, int]:
    rows = p * p if n == 0 else n
    return rows, 2, p, 4 * rows * 2 * 8  # the meshgrid, its stack and the permuted copy


def _max_position_shape(n: int, length: int, vocab: int, seed: int) -> tuple[int, int, int, int]:
    # batches of 2n draws until n rows have a unique maximum (usually the first batch)
    return n, length, length, 3 * 2 * n * length * 8


def _fixed_shape(rows: int, features: int, classes: int) -> Callable[[], tuple[int, int, int, int]]:
    return lambda: (rows, features, classes, 2 * rows * features * 8)


def _teacher(size: int, seed: int, teacher_seed: int, hidden: int, n_classes: int) -> Dataset:
    """Labels from a fixed random tanh MLP (784-hidden-classes) on smooth 28x28 images.

    ``teacher_seed`` fixes the teacher (the task), ``seed`` the inputs (the sample).
    The output biases are calibrated on a fixed sample drawn from the teacher's seed,
    so classes are roughly balanced and a row's label does not depend on ``size``.
    Bit-exact only on one machine: BLAS may round differently elsewhere.
    """
    d = _TEACHER_SIDE * _TEACHER_SIDE
    trng = np.random.default_rng([teacher_seed, 7919])
    w1 = trng.standard_normal((d, hidden)) * (2.0 / math.sqrt(d))  # (784, H), gain 2: tanh bends
    b1 = 0.5 * trng.standard_normal(hidden)
    w2 = trng.standard_normal((hidden, n_classes)) / math.sqrt(hidden)  # (H, C)

    chunk = _teacher_chunk_rows(hidden)

    def logits(x: np.ndarray) -> np.ndarray:
        # In row chunks: the (rows, hidden) layer of a wide teacher would otherwise take
        # rows x hidden x 16 bytes at once (100,000 x 4,096: 6.5 GB).
        return np.concatenate([np.tanh(x[i:i + chunk] @ w1 + b1) @ w2
                               for i in range(0, len(x), chunk)])  # (n, C)

    calib = np.concatenate([logits(_smooth_images(trng, min(chunk, _TEACHER_CALIB_ROWS - i)))
                            for i in range(0, _TEACHER_CALIB_ROWS, chunk)])
    b2 = -calib.mean(axis=0)
    target = 1.0 / n_classes
    for _ in range(200):  # nudge biases until the calibration sample is near-balanced
        freq = np.bincount((calib + b2).argmax(axis=1), minlength=n_classes) / len(calib)
        if np.abs(freq - target).max() < 0.1 * target:
            break
        b2 -= 0.05 * calib.std() * np.log((freq + 1e-3) / target)
    # Images in chunks too, drawn from one generator in order (the same stream as one
    # draw), each turned into float32 as it is made: the float64 working copy stays small.
    rng = np.random.default_rng(seed)
    X = np.empty((size, d), dtype=np.float32)
    y = np.empty(size, dtype=np.int64)
    for start in range(0, size, chunk):
        n = min(chunk, size - start)
        X[start:start + n] = _smooth_images(rng, n)
        y[start:start + n] = (logits(X[start:start + n].astype(np.float64)) + b2).argmax(axis=1)
    return Dataset(
        name="teacher",
        X=X,
        y=y,
        task="classification",
        feature_names=[
            f"pixel_{r}_{c}" for r in range(_TEACHER_SIDE) for c in range(_TEACHER_SIDE)
        ],
        label_name="teacher_class",
        class_names=[str(i) for i in range(n_classes)],
        input_shape=(1, _TEACHER_SIDE, _TEACHER_SIDE),
        source="builtin",
    )


_PERIODIC_FEATURES = 12
_PERIODIC_HIDDEN = 6
_PERIODIC_CLASSES = 4
#: Scale of the teacher's projections: a projection of the uniform inputs has standard
#: deviation ``5 / sqrt(3)`` ~ 2.9 radians, so each hidden unit turns through about one
#: period across the cube (measured with mlp:64,64, 20 epochs, 2,100 training rows: at 4
#: ReLU trails a sine or snake MLP by 6-11 points, at 5 by 6-22, at 6 no MLP learns it).
_PERIODIC_FREQUENCY = 5.0
_PERIODIC_CALIB_ROWS = 4096


def _periodic_shape(size: int, seed: int, teacher_seed: int) -> tuple[int, int, int, int]:
    d, h, c = _PERIODIC_FEATURES, _PERIODIC_HIDDEN, _PERIODIC_CLASSES
    # inputs and their float64 copy, the hidden layer, the logits; plus the calibration
    return size, d, c, 8 * (size + _PERIODIC_CALIB_ROWS) * (2 * d + h + c)


def _periodic(size: int, seed: int, teacher_seed: int) -> Dataset:
    """Uniform inputs labelled by a fixed random teacher whose hidden units are sines.

    ``x ~ U(-1, 1)^12``; ``logits = sin(x @ W1 + b1) @ W2 + b2`` with 6 hidden units
    (``W1 ~ N(0, 5^2 / 12)``, phases ``b1 ~ U(0, 2 pi)``, ``W2 ~ N(0, 1 / 6)``) and the
    label the argmax over 4 classes, the output biases calibrated as ``teacher``'s so the
    classes are near-balanced. Noiseless, so a perfect fit scores 1.0, but a ReLU MLP
    needs many pieces per period and finds it hard where a periodic or trainable
    activation (snake, sine, rational, spline, vaf) does not. ``teacher_seed`` fixes
    the task, ``seed`` the sample; a row's label does not depend on ``size``.
    """
    d, h, c = _PERIODIC_FEATURES, _PERIODIC_HIDDEN, _PERIODIC_CLASSES
    trng = np.random.default_rng([teacher_seed, d, h, c, 31337])
    w1 = trng.standard_normal((d, h)) * (_PERIODIC_FREQUENCY / math.sqrt(d))  # (D, H)
    b1 = trng.uniform(0.0, 2 * math.pi, h)  # (H,)
    w2 = trng.standard_normal((h, c)) / math.sqrt(h)  # (H, C)

    def logits(x: np.ndarray) -> np.ndarray:
        return np.sin(x @ w1 + b1) @ w2  # (n, C)

    calib = logits(trng.uniform(-1.0, 1.0, (_PERIODIC_CALIB_ROWS, d)))
    b2 = -calib.mean(axis=0)
    target = 1.0 / c
    for _ in range(200):  # nudge biases until the calibration sample is near-balanced
        freq = np.bincount((calib + b2).argmax(axis=1), minlength=c) / len(calib)
        if np.abs(freq - target).max() < 0.1 * target:
            break
        b2 -= 0.05 * calib.std() * np.log((freq + 1e-3) / target)
    X = np.random.default_rng(seed).uniform(-1.0, 1.0, (size, d))  # (N, D)
    y = (logits(X) + b2).argmax(axis=1).astype(np.int64)
    return Dataset(
        name="periodic",
        X=X.astype(np.float32),
        y=y,
        task="classification",
        feature_names=[f"x{i}" for i in range(d)],
        label_name="teacher_class",
        class_names=[str(i) for i in range(c)],
        source="builtin",
    )


_SMOOTH_FEATURES = 6
_SMOOTH_CALIB_ROWS = 4096


def _smooth_regression_shape(size: int, seed: int, noise: float) -> tuple[int, int, int, int]:
    # inputs, their projections (5), the target and its terms
    return size, _SMOOTH_FEATURES, 0, 8 * (size + _SMOOTH_CALIB_ROWS) * (_SMOOTH_FEATURES + 5 + 4)


def _smooth_regression(size: int, seed: int, noise: float) -> Dataset:
    """A smooth non-linear target of 6 uniform inputs, plus Gaussian noise (R²).

    ``x ~ U(-1, 1)^6`` and ``p = 1.7 x @ P`` for 5 fixed random unit directions ``P``;
    ``f = sin(2 p0) + p1 p2 + exp(p3 / 2) cos(p4)``, standardised by the mean and
    deviation of a fixed calibration sample, and
    ``y = f + noise * N(0, 1)``: the best possible R² is about ``1 - noise^2``
    (0.9975 at the default 0.05). Smooth activations fit the curvature with few units
    where ReLU's pieces leave a residual. The function is the same for every ``seed``
    (the sample); a row (inputs, noise, target) does not depend on ``size``.
    """
    d = _SMOOTH_FEATURES
    frng = np.random.default_rng([d, 2718])
    P = frng.standard_normal((d, 5))
    P /= np.linalg.norm(P, axis=0)  # (D, 5) unit directions

    def target(x: np.ndarray) -> np.ndarray:
        p = 1.7 * x @ P  # (n, 5)
        return np.sin(2.0 * p[:, 0]) + p[:, 1] * p[:, 2] + np.exp(0.5 * p[:, 3]) * np.cos(p[:, 4])

    calib = target(frng.uniform(-1.0, 1.0, (_SMOOTH_CALIB_ROWS, d)))
    X = np.random.default_rng(seed).uniform(-1.0, 1.0, (size, d))  # (N, D)
    f = (target(X) - calib.mean()) / calib.std()  # fixed scaling: a row's value ignores size
    y = f + noise * np.random.default_rng([seed, 1]).standard_normal(size)  # own stream
    return Dataset(
        name="smooth_regression",
        X=X.astype(np.float32),
        y=y.astype(np.float32),
        task="regression",
        feature_names=[f"x{i}" for i in range(d)],
        label_name="y",
        source="builtin",
    )


BUILTINS: dict[str, BuiltinSpec] = {
    spec.name: spec
    for spec in (
        BuiltinSpec(
            "digits",
            "scikit-learn's 8x8 handwritten digits (1,797 rows, 64 pixels, 10 classes)",
            "classification",
            {},
            _digits,
            shape=_fixed_shape(1797, 64, 10),
        ),
        BuiltinSpec(
            "breast_cancer",
            "Wisconsin breast cancer diagnosis (569 rows, 30 features, 2 classes)",
            "classification",
            {},
            _breast_cancer,
            shape=_fixed_shape(569, 30, 2),
        ),
        BuiltinSpec(
            "wine",
            "Wine cultivars from chemical analysis (178 rows, 13 features, 3 classes)",
            "classification",
            {},
            _wine,
            shape=_fixed_shape(178, 13, 3),
        ),
        BuiltinSpec(
            "iris",
            "Fisher's iris species (150 rows, 4 features, 3 classes)",
            "classification",
            {},
            _iris,
            shape=_fixed_shape(150, 4, 3),
        ),
        BuiltinSpec(
            "diabetes",
            "Diabetes progression after one year (442 rows, 10 features, regression)",
            "regression",
            {},
            _diabetes,
            shape=_fixed_shape(442, 10, 0),
        ),
        BuiltinSpec(
            "mnist1d",
            "MNIST-1D: 1-D digit templates, shifted, sheared and noised (40 steps, 10 "
            "classes; size is rounded down to a multiple of 10); size=5000, seed=42 "
            "are the reference generation settings",
            "classification",
            {"size": 5000, "seed": 42},
            _mnist1d,
            {"size": (MIN_ROWS, 100_000)},
            _mnist1d_shape,
        ),
        BuiltinSpec(
            "two_spirals",
            "Two interleaved 2-D spirals with Gaussian noise (2 classes)",
            "classification",
            {"n": 1000, "noise": 0.05, "seed": 0},
            _two_spirals,
            {"n": (MIN_ROWS, 1_000_000), "noise": (0.0, 10.0)},
            _spirals_shape,
        ),
        BuiltinSpec(
            "teacher",
            "MNIST-shaped (1x28x28) smooth random images labelled by a fixed random "
            "784-hidden-classes tanh MLP; teacher_seed fixes the task, seed the sample",
            "classification",
            {"size": 10000, "seed": 0, "teacher_seed": 0, "hidden": 128, "n_classes": 10},
            _teacher,
            {"size": (MIN_ROWS, 100_000), "hidden": (1, 4096), "n_classes": (2, 100)},
            _teacher_shape,
        ),
        BuiltinSpec(
            "periodic",
            "3,000 x 12 uniform inputs, 4 classes from a fixed random teacher whose 6 "
            "hidden units are sines: hard for ReLU, easier for periodic and trainable "
            "families; teacher_seed fixes the task, seed the sample",
            "classification",
            {"size": 3000, "seed": 0, "teacher_seed": 0},
            _periodic,
            {"size": (MIN_ROWS, 1_000_000)},
            _periodic_shape,
        ),
        BuiltinSpec(
            "smooth_regression",
            "2,000 x 6 uniform inputs, a smooth non-linear target (a sine, a product, "
            "exp x cos of projections) plus Gaussian noise (regression, scored by R^2)",
            "regression",
            {"size": 2000, "seed": 0, "noise": 0.05},
            _smooth_regression,
            {"size": (MIN_ROWS, 1_000_000), "noise": (0.0, 10.0)},
            _smooth_regression_shape,
        ),
        BuiltinSpec(
            "digits_images",
            "the digits as 1x8x8 images (modality image, per-channel scaling): for "
            "resnet and cnn",
            "classification",
            {},
            _digits_images,
            shape=_fixed_shape(1797, 64, 10),
        ),
        BuiltinSpec(
            "modular_sum",
            "token sequences 'a b' labelled (a + b) mod p (vocab p, p classes); n=0 takes "
            "every pair once, shuffled by seed",
            "classification",
            {"p": 23, "n": 0, "seed": 0},
            _modular_sum,
            {"p": (2, 1000), "n": (0, 1_000_000)},
            _modular_sum_shape,
        ),
        BuiltinSpec(
            "max_position",
            "token sequences (length positions, ids 0..vocab-1) labelled by the position of "
            "their unique largest token: order matters",
            "classification",
            {"n": 2000, "length": 8, "vocab": 16, "seed": 0},
            _max_position,
            {"n": (MIN_ROWS, 1_000_000), "length": (2, 256), "vocab": (2, 10_000)},
            _max_position_shape,
        ),
    )
}


def list_builtins() -> list[dict[str, Any]]:
    """The catalogue as JSON-able dicts, for ``GET /datasets`` and ``actsearch datasets``."""
    return [spec.public() for spec in BUILTINS.values()]


def _coerce_option(builtin: str, key: str, value: Any, default: Any) -> Any:
    """Coerce an option (possibly a CLI/query string) to its default's type."""
    want = type(default)
    try:
        if isinstance(value, bool) or (
            want is int and isinstance(value, float) and not value.is_integer()
        ):
            raise ValueError
        out = want(value)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"option '{key}' of builtin '{builtin}' must be {want.__name__}, got {value!r}"
        ) from None
    if isinstance(out, float) and not math.isfinite(out):
        raise InvalidInput(f"option '{key}' of builtin '{builtin}' must be finite, got {value!r}")
    return out


@dataclass(frozen=True)
class BuiltinEstimate:
    """What generating a built-in would make, known from its options alone."""

    name: str
    options: dict[str, Any]
    task: Task
    n_rows: int
    n_features: int
    n_classes: int
    #: the dataset as the API holds and stores it: float32 features, 8-byte labels
    data_bytes: int
    #: the generator's own working memory on top (e.g. the teacher's hidden layer)
    working_bytes: int

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.task == "classification" else 1

    @property
    def peak_bytes(self) -> int:
        # the dataset twice: validation and the content hash each make one copy of it
        return 2 * self.data_bytes + self.working_bytes


def estimate_builtin(name: str, **options: Any) -> BuiltinEstimate:
    """Rows, columns and bytes a built-in would take, without generating it.

    The same option checks as :func:`load_builtin` (InvalidDataset, InvalidInput).
    """
    spec, opts = _resolve_options(name, options)
    assert spec.shape is not None, f"builtin {name!r} declares no shape"
    rows, features, classes, working = spec.shape(**opts)
    return BuiltinEstimate(name=name, options=opts, task=spec.task, n_rows=rows,
                           n_features=features, n_classes=classes,
                           data_bytes=rows * (features * 4 + 8), working_bytes=working)


def load_builtin(name: str, **options: Any) -> Dataset:
    """Load or generate a built-in dataset by name; options override the catalogue defaults.

    Generated sets are deterministic for their options. Raises :class:`InvalidDataset`
    for an unknown name and :class:`InvalidInput` for an unknown or out-of-range option.
    """
    spec, opts = _resolve_options(name, options)
    ds = spec.loader(**opts)
    ds.options = opts
    return validate_dataset(ds)


def _resolve_options(name: str, options: Mapping[str, Any]) -> tuple[BuiltinSpec, dict[str, Any]]:
    """The catalogue entry and its options: defaults overridden, coerced and range-checked."""
    spec = BUILTINS.get(name)
    if spec is None:
        raise InvalidDataset(f"unknown builtin dataset '{name}'; builtins: {', '.join(BUILTINS)}")
    unknown = sorted(set(options) - set(spec.defaults))
    if unknown:
        allowed = ", ".join(spec.defaults) or "none"
        raise InvalidInput(
            f"unknown option(s) {', '.join(unknown)} for builtin '{name}'; allowed: {allowed}"
        )
    opts = dict(spec.defaults)
    for key, value in options.items():
        opts[key] = _coerce_option(name, key, value, spec.defaults[key])
    for key, (lo, hi) in spec.limits.items():
        if not lo <= opts[key] <= hi:
            raise InvalidInput(
                f"option '{key}' of builtin '{name}' must be in [{lo}, {hi}], got {opts[key]}"
            )
    return spec, opts
