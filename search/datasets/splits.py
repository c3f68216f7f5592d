"""Seeded train/validation/test splits and the standardisation fitted on the training rows.

No statistic of the validation or test rows leaks into training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import InvalidDataset, InvalidInput

from ._common import MIN_ROWS, Task
from ._shuffle_split import train_test_split
from .dataset import Dataset


@dataclass(eq=False)
class Splits:
    """Standardised train/validation/test arrays plus what is needed to undo or reapply it.

    ``scaler`` (feature mean/std) and ``target_scaler`` (regression only) are fitted on
    the training rows; ship them with a trained model. For regression, ``y_*`` are in
    standardised units: R^2 is unchanged by that affine map, while MSE/RMSE/MAE must be
    mapped back with :func:`inverse_target` to read in the label's own units.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    idx_train: np.ndarray
    idx_val: np.ndarray
    idx_test: np.ndarray
    scaler: dict[str, list[float]]
    target_scaler: dict[str, float] | None
    label_map: list[str] | None
    task: Task
    input_shape: tuple[int, ...] | None
    seed: int

    @property
    def n_classes(self) -> int | None:
        """Number of classes, or None for regression."""
        return len(self.label_map) if self.label_map is not None else None


def apply_scaler(X: np.ndarray, scaler: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Standardise rows with a stored scaler (as training did), returning float32."""
    mean = np.asarray(scaler["mean"], dtype=np.float32)
    std = np.asarray(scaler["std"], dtype=np.float32)
    return ((np.asarray(X, dtype=np.float32) - mean) / std).astype(np.float32)


def inverse_target(y: np.ndarray, target_scaler: Mapping[str, float]) -> np.ndarray:
    """Map standardised regression outputs back to the label's own units."""
    return np.asarray(y, dtype=np.float64) * target_scaler["std"] + target_scaler["mean"]


def fit_scaler(ds: Dataset, train: np.ndarray) -> dict[str, list[float]]:
    """Per-feature mean/std on the training rows, by modality.

    Tabular: per column. Image: per channel (one mean/std over the channel's pixels,
    repeated for each pixel, so :func:`apply_scaler` is unchanged). Tokens: identity
    (mean 0, std 1): token ids are indices into an embedding, not magnitudes.
    """
    n = ds.n_features
    if ds.modality == "tokens":
        return {"mean": [0.0] * n, "std": [1.0] * n}
    X_train64 = ds.X[train].astype(np.float64)
    if ds.modality == "image":
        assert ds.input_shape is not None
        c = ds.input_shape[0]
        per_channel = X_train64.reshape(len(train), c, -1)  # (N, C, H*W)
        mean = np.repeat(per_channel.mean(axis=(0, 2)), n // c)
        std = np.repeat(per_channel.std(axis=(0, 2)), n // c)
    else:
        mean = X_train64.mean(axis=0)
        std = X_train64.std(axis=0)
    std[std == 0] = 1.0
    return {"mean": mean.tolist(), "std": std.tolist()}


def split_dataset(
    ds: Dataset, *, seed: int, val_fraction: float = 0.15, test_fraction: float = 0.15
) -> Splits:
    """Seeded train/validation/test split, stratified for classification, scaled on train only.

    The test rows are split off first, then validation from the rest, each with
    scikit-learn's ``train_test_split`` algorithm (:mod:`._shuffle_split`, the same rows
    without importing scikit-learn); the same seed always gives the same rows.
    """
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise InvalidInput(
            "val_fraction and test_fraction must each be in (0, 1) with a sum below 1, got "
            f"{val_fraction} and {test_fraction}"
        )
    n = ds.n_rows
    idx = np.arange(n)
    classify = ds.task == "classification"
    n_test = math.ceil(test_fraction * n)
    n_val = math.ceil(val_fraction * n)
    if n - n_test - n_val < 1 or min(n_test, n_val) < 1:
        raise InvalidDataset(f"{n} rows are too few for this split; need at least {MIN_ROWS}")
    if classify:
        k = int(np.count_nonzero(np.bincount(ds.y)))
        if min(n_test, n_val) < k:
            need = math.ceil(k / min(val_fraction, test_fraction))
            raise InvalidDataset(
                f"'{ds.name}' has {k} classes but its {min(n_test, n_val)}-row validation/test "
                f"split cannot hold one row of each; need about {need} rows, or larger fractions"
            )
    try:
        rest, test = train_test_split(
            idx, test_size=test_fraction, random_state=seed, stratify=ds.y if classify else None
        )
        train, val = train_test_split(
            rest,
            test_size=n_val / len(rest),
            random_state=seed,
            stratify=ds.y[rest] if classify else None,
        )
    except ValueError as exc:
        raise InvalidDataset(
            f"'{ds.name}' cannot be split into stratified train/validation/test sets: {exc}. "
            "Add rows to the rarest classes, merge or drop them, or use smaller fractions"
        ) from None

    scaler = fit_scaler(ds, train)

    target_scaler = None
    ys = ds.y
    if not classify:
        ym, ysd = (
            float(ds.y[train].astype(np.float64).mean()),
            float(ds.y[train].astype(np.float64).std()),
        )
        target_scaler = {"mean": ym, "std": ysd if ysd > 0 else 1.0}
        ys = ((ds.y.astype(np.float64) - ym) / target_scaler["std"]).astype(np.float32)

    return Splits(
        X_train=apply_scaler(ds.X[train], scaler),
        y_train=ys[train],
        X_val=apply_scaler(ds.X[val], scaler),
        y_val=ys[val],
        X_test=apply_scaler(ds.X[test], scaler),
        y_test=ys[test],
        idx_train=np.asarray(train, dtype=np.int64),
        idx_val=np.asarray(val, dtype=np.int64),
        idx_test=np.asarray(test, dtype=np.int64),
        scaler=scaler,
        target_scaler=target_scaler,
        label_map=ds.class_names,
        task=ds.task,
        input_shape=ds.input_shape,
        seed=seed,
    )
