"""The workloads of ``bench/search.py`` (issue #13): data generated deterministically, one NPZ each.

Each workload is one NPZ file (``X`` float32 ``(N, D)``, ``y`` int64 labels) that
``actsearch search --dataset FILE.npz --label y`` reads. actsearch splits it itself
(``search.datasets.split_dataset``: seeded, stratified 70/15/15, standardised on the
training rows); :func:`load_splits` reads the same file through the same loader and
calls the same split function with the spec's seed and fractions, so the optuna loop
trains and validates on exactly the rows (and the scaling) that actsearch does.

=============  ========================================  ============  ======  ======
name           data                                      architecture  trials  epochs
=============  ========================================  ============  ======  ======
small          3,000 x 12, 4 classes (tanh teacher)      mlp:64,64     48      20
digits         scikit-learn's digits, 1,797 x 64, 10     mlp:64,64     64      25
teacher256     20,000 x 256, 10 classes (tanh teacher)   mlp:128,128   32      10
mnist784       60,000 x 784, 10 classes (actsearch's     mlp:256,256   48      8
               built-in ``teacher``: MNIST-shaped
               smooth images, a random tanh MLP's labels)
=============  ========================================  ============  ======  ======

``small`` and ``teacher256`` come from :func:`teacher_set` here (the built-in teacher
only makes 784-feature images); ``mnist784`` is the built-in ``teacher`` with
``size=60000`` (its defaults otherwise); ``digits`` is scikit-learn's bundled table.
``--quick`` sizes (:attr:`Workload.quick_rows`) keep a smoke run short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.datasets import Splits, resolve_dataset, split_dataset
from search.datasets.dataset import Dataset

#: Bump when a generator changes, so cached NPZ files are regenerated.
DATA_VERSION = 1
LABEL = "y"


@dataclass(frozen=True)
class Workload:
    """One benchmark workload: its data, the architecture and the search's budget."""

    name: str
    description: str
    arch: str
    trials: int
    epochs: int
    rows: int
    features: int
    classes: int
    #: rows under ``--quick`` (None: the full set, already small)
    quick_rows: int | None = None
    task: str = "classification"

    @property
    def hidden(self) -> list[int]:
        """The hidden widths of an ``mlp:W1,W2`` architecture."""
        kind, _, widths = self.arch.partition(":")
        assert kind == "mlp", f"only mlp workloads here, got {self.arch}"
        return [int(w) for w in widths.split(",")]

    def n_rows(self, quick: bool) -> int:
        return self.quick_rows if quick and self.quick_rows is not None else self.rows

    def layers_text(self) -> str:
        """``784 -> 256 -> 256`` (input and hidden widths: what bounds the step)."""
        return " -> ".join(str(w) for w in [self.features, *self.hidden])


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("small", "3,000 x 12, 4 classes (tanh teacher)", "mlp:64,64", 48, 20,
                 3000, 12, 4),
        Workload("digits", "scikit-learn digits, 1,797 x 64, 10 classes", "mlp:64,64", 64, 25,
                 1797, 64, 10),
        Workload("teacher256", "20,000 x 256, 10 classes (tanh teacher)", "mlp:128,128", 32, 10,
                 20_000, 256, 10, quick_rows=4000),
        Workload("mnist784", "60,000 x 784 MNIST-shaped, 10 classes (built-in teacher)",
                 "mlp:256,256", 48, 8, 60_000, 784, 10, quick_rows=6000),
    )
}


def teacher_set(rows: int, features: int, hidden: int, classes: int, *, seed: int = 0,
                teacher_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correlated Gaussian inputs labelled by a fixed random ``features-hidden-classes`` tanh MLP.

    Like the built-in ``teacher`` but at any width: ``teacher_seed`` fixes the task (the
    input covariance and the teacher), ``seed`` the sample. The inputs are ``z @ M`` with
    ``z`` standard normal and ``M`` a random mixing matrix whose columns decay as
    ``1/sqrt(1 + j)`` (so the features are correlated, as real ones are); the output
    biases are nudged on a calibration sample until classes are near-balanced.
    """
    trng = np.random.default_rng([teacher_seed, features, hidden, classes, 104729])
    mix = trng.standard_normal((features, features)) / np.sqrt(1.0 + np.arange(features))  # (D, D)
    mix /= np.sqrt((mix**2).sum(axis=1, keepdims=True))  # unit-variance features
    w1 = trng.standard_normal((features, hidden)) * (2.0 / math.sqrt(features))  # gain 2: tanh bends
    b1 = 0.5 * trng.standard_normal(hidden)
    w2 = trng.standard_normal((hidden, classes)) / math.sqrt(hidden)

    def inputs(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.standard_normal((n, features)) @ mix.T  # (n, D)

    def logits(x: np.ndarray) -> np.ndarray:
        return np.tanh(x @ w1 + b1) @ w2  # (n, C)

    calib = logits(inputs(trng, 4096))
    b2 = -calib.mean(axis=0)
    target = 1.0 / classes
    for _ in range(200):  # as the built-in teacher does: balance the calibration sample
        freq = np.bincount((calib + b2).argmax(axis=1), minlength=classes) / len(calib)
        if np.abs(freq - target).max() < 0.1 * target:
            break
        b2 -= 0.05 * calib.std() * np.log((freq + 1e-3) / target)
    X = inputs(np.random.default_rng(seed), rows)
    y = (logits(X) + b2).argmax(axis=1).astype(np.int64)
    return X.astype(np.float32), y


def generate(w: Workload, *, quick: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The workload's rows ``(X (N, D) float32, y (N,) int64)``, the same on every call."""
    n = w.n_rows(quick)
    if w.name == "digits":
        from search.datasets import load_builtin

        ds = load_builtin("digits")
        X, y = ds.X, ds.y
    elif w.name == "mnist784":
        from search.datasets import load_builtin

        ds = load_builtin("teacher", size=n, seed=0, teacher_seed=0, hidden=128,
                          n_classes=w.classes)
        X, y = ds.X, ds.y
    elif w.name == "small":
        X, y = teacher_set(n, w.features, 32, w.classes)
    elif w.name == "teacher256":
        X, y = teacher_set(n, w.features, 128, w.classes)
    else:  # pragma: no cover - WORKLOADS and this function are edited together
        raise KeyError(w.name)
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float32).reshape(len(X), -1))
    return X, np.asarray(y, dtype=np.int64)


def write_npz(w: Workload, directory: Path, *, quick: bool = False) -> Path:
    """The workload's NPZ in ``directory`` (made once; reused while the generators are unchanged)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{w.name}-{w.n_rows(quick)}-v{DATA_VERSION}.npz"
    if not path.exists():
        X, y = generate(w, quick=quick)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, X=X, **{LABEL: y})
        tmp.replace(path)
    return path


def load_splits(path: Path, *, seed: int = 0, val_fraction: float = 0.15,
                test_fraction: float = 0.15) -> Splits:
    """The split actsearch makes of this NPZ for a spec with this seed and these fractions.

    Read as ``actsearch search`` reads it (:func:`resolve_dataset`, then the artifact's
    NPZ round trip that :func:`search.service.prepare_data` loads), split with
    :func:`split_dataset`: identical train/validation/test rows and scaling.
    """
    ds = resolve_dataset(str(path), label=LABEL)
    ds = Dataset.from_npz_bytes(ds.to_npz_bytes(compress=False))
    return split_dataset(ds, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
