"""The plain records the engine takes and reports while it trains, without torch.

:class:`TensorData` (what a population trains on), :class:`EpochReport` (what
``on_epoch`` sees) and :class:`PopulationResult` cross process boundaries: a training
child receives the first, sends the second after every epoch and the third at the end. Defined here, apart from :mod:`models.engine`
(which re-exports both), a coordinator can build and unpickle them without importing
torch, so ``actsearch search`` reaches its first epoch report sooner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass
class CandidateResult:
    """Everything the engine learned about one candidate (original index ``index``).

    ``history`` has one dict per epoch trained: {epoch, train_loss, val_loss,
    val_metric, elapsed_s} (plus ``partial: True`` for an epoch cut by the deadline).
    A diverged ("failed") candidate's last epoch is not in history; see ``error``.
    """

    index: int
    status: Status = "complete"
    family: str | list[str] | None = None  # the candidate's family (per layer when they differ)
    n_params: int | None = None  # this candidate's (families differ in a mixed population)
    flops: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    val_metric: float | None = None
    best_val_metric: float | None = None
    curves: list[dict[str, Any]] = field(default_factory=list)
    preact_stats: list[dict[str, Any]] = field(default_factory=list)
    state_dict: dict[str, Any] | None = None  # name -> numpy array
    error: str | None = None


@dataclass
class PopulationResult:
    """Per-candidate results plus what the population cost.

    ``n_params`` and ``flops`` are for the first candidate (:func:`count_params`,
    :func:`count_flops`): every candidate's in a single-family population; in a mixed
    one each :class:`CandidateResult` carries its own; ``candidate_epochs`` is the sum over candidates of epochs trained
    (an epoch cut by the deadline counts; so does a diverged candidate's last epoch).
    """

    candidates: list[CandidateResult]
    n_params: int
    flops: int
    device: str
    wall_s: float
    candidate_epochs: int
