"""scikit-learn's ``train_test_split`` on an index array, without importing scikit-learn.

Importing ``sklearn.model_selection`` costs about a second (it loads scipy), and every
search splits its dataset before its first population can start. This is the same
algorithm as scikit-learn 1.9's ``ShuffleSplit`` / ``StratifiedShuffleSplit`` (the
sizes of ``_validate_shuffle_split``, ``_approximate_mode``, the order of the draws
from one ``numpy.random.RandomState(seed)``), so a seed gives exactly the rows it gave
before: a stored search resumes on the same split. ``tests/search/test_datasets.py``
checks it against scikit-learn row for row. The algorithm is scikit-learn's
(BSD-3-Clause, © the scikit-learn developers).
"""

from __future__ import annotations

from math import ceil

import numpy as np


def _sizes(n_samples: int, test_size: float) -> tuple[int, int]:
    """(n_train, n_test) for a float ``test_size`` and no ``train_size``."""
    if not 0 < test_size < 1:
        raise ValueError(f"test_size={test_size} should be either positive and smaller than "
                         f"the number of samples {n_samples} or a float in the (0, 1) range")
    n_test = ceil(test_size * n_samples)
    n_train = n_samples - n_test
    if n_train == 0:
        raise ValueError(f"With n_samples={n_samples}, test_size={test_size} and "
                         "train_size=None, the resulting train set will be empty. Adjust any "
                         "of the aforementioned parameters.")
    return int(n_train), int(n_test)


def _approximate_mode(class_counts: np.ndarray, n_draws: int,
                      rng: np.random.RandomState) -> np.ndarray:
    """scikit-learn's ``utils.extmath._approximate_mode`` (ties broken by ``rng``)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        values = np.sort(np.unique(remainder))[::-1]
        for value in values:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            inds = rng.choice(inds, size=add_now, replace=False)
            floored[inds] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def train_test_split(idx: np.ndarray, *, test_size: float, random_state: int,
                     stratify: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``sklearn.model_selection.train_test_split(idx, test_size=..., random_state=...,
    stratify=...)`` for one 1-D array (shuffled); returns ``(train, test)``.

    Raises ValueError with scikit-learn's messages where it would.
    """
    idx = np.asarray(idx)
    n_samples = len(idx)
    n_train, n_test = _sizes(n_samples, test_size)
    rng = np.random.RandomState(random_state)
    if stratify is None:
        permutation = rng.permutation(n_samples)
        test = permutation[:n_test]
        train = permutation[n_test:(n_test + n_train)]
        return idx[train], idx[test]
    y = np.asarray(stratify)
    if y.ndim == 2:
        y = np.array([" ".join(row.astype("str")) for row in y])
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    n_classes = classes.shape[0]
    if np.min(class_counts) < 2:
        too_few = classes[class_counts < 2].tolist()
        raise ValueError("The least populated classes in y have only 1 member, which is too "
                         "few. The minimum number of groups for any class cannot be less than "
                         f"2. Classes with too few members are: {too_few}")
    if n_train < n_classes:
        raise ValueError(f"The train_size = {n_train} should be greater or equal to the number "
                         f"of classes = {n_classes}")
    if n_test < n_classes:
        raise ValueError(f"The test_size = {n_test} should be greater or equal to the number "
                         f"of classes = {n_classes}")
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train_list: list[np.integer] = []
    test_list: list[np.integer] = []
    for i in range(n_classes):
        permutation = rng.permutation(class_counts[i])
        members = class_indices[i].take(permutation, mode="clip")
        train_list.extend(members[: n_i[i]])
        test_list.extend(members[n_i[i]: n_i[i] + t_i[i]])
    train = rng.permutation(train_list)
    test = rng.permutation(test_list)
    return idx[train], idx[test]
