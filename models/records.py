"""The plain records the engine takes and reports while it trains, without torch.

:class:`TensorData` (what a population trains on) and :class:`EpochReport` (what
``on_epoch`` sees) cross process boundaries: a training child receives the first and
sends the second after every epoch. Defined here, apart from :mod:`models.engine`
(which re-exports both), a coordinator can build and unpickle them without importing
torch, so ``actsearch search`` reaches its first epoch report sooner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Task = Literal["classification", "regression"]
Status = Literal["complete", "pruned", "deadline", "failed"]
TASKS = ("classification", "regression")


@dataclass
class TensorData:
    """Arrays for one population (numpy or torch).

    X: float32 ``(N, D)``; y: int64 class ids ``(N,)`` (classification) or float32
    ``(N,)`` / ``(N, 1)`` (regression). Scaling and label encoding happen before.
    """

    X_train: Any
    y_train: Any
    X_val: Any
    y_val: Any
    task: Task
    n_outputs: int


@dataclass
class EpochReport:
    """What ``on_epoch`` sees after each epoch; lists are aligned with ``candidates``."""

    epoch: int  # 1-based
    candidates: list[int]  # original indices still training
    train_loss: list[float]
    val_loss: list[float]
    val_metric: list[float]
    elapsed_s: float
