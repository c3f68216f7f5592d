"""The study's datasets: the product's built-ins and its seeded, train-scaled split.

The split is fixed (seed 0) for every family and replication seed, so differences
between families come from the activations, not from which rows landed in
validation or test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.engine import Task, TensorData
from search.datasets import load_builtin, split_dataset
from search.protocol import task_metric

SPLIT_SEED = 0


@dataclass
class StudyData:
    """One dataset ready for the engine, with its held-out test rows."""

    name: str
    task: Task
    metric: str  # "accuracy" or "r2"
    data: TensorData
    X_test: np.ndarray
    y_test: np.ndarray
    n_outputs: int
    sizes: dict[str, int]

    def describe(self) -> dict[str, Any]:
        """JSON-able summary for results.json."""
        return {"task": self.task, "metric": self.metric, "n_outputs": self.n_outputs,
                "rows": self.sizes, "features": int(self.data.X_train.shape[1]),
                "split_seed": SPLIT_SEED}


def load_study_data(name: str, options: dict[str, Any] | None = None) -> StudyData:
    """Load a built-in by name and split it 70/15/15 (stratified), scaled on train rows."""
    ds = load_builtin(name, **(options or {}))
    s = split_dataset(ds, seed=SPLIT_SEED)
    classify = ds.task == "classification"
    n_outputs = int(s.n_classes) if classify and s.n_classes else 1
    data = TensorData(s.X_train, s.y_train, s.X_val, s.y_val, ds.task, n_outputs)
    sizes = {"train": len(s.y_train), "val": len(s.y_val), "test": len(s.y_test)}
    return StudyData(name=name, task=ds.task, metric=task_metric(ds.task), data=data,
                     X_test=np.asarray(s.X_test), y_test=np.asarray(s.y_test),
                     n_outputs=n_outputs, sizes=sizes)
