"""The search a user writes today: optuna-examples' ``pytorch_simple`` loop over activations.

What `optuna-examples/pytorch/pytorch_simple.py` does, with the architecture fixed
and the activation searched instead of the widths: a ``TensorDataset`` and a shuffled
``DataLoader``, an ``nn.Sequential`` MLP, Adam, one trial at a time,
``optuna.create_study(sampler=TPESampler(seed), pruner=MedianPruner())``, the
validation metric reported after every epoch and the trial pruned when the median
rule says so. Searched per trial:

* ``activation``: ``suggest_categorical`` over the fixed activations ``torch.nn`` has
  that actsearch's catalogue also has (:data:`ACTIVATIONS`);
* ``lr`` and ``weight_decay``: log-uniform over the ranges of actsearch's
  :class:`search.spec.SearchSpec` (``lr`` 1e-4..3e-2, ``weight_decay`` 1e-6..1e-2),
  Adam's ``weight_decay`` as torch defines it.

A trial's value is its last epoch's validation accuracy (R² for regression), as in
the example; the study's best is the best completed trial. :func:`run_loop` times the
whole study and when the final best was first held (the end of the first completed
trial reaching it). ``bench/search.py`` runs it against ``actsearch search``;
``bench/quality.py`` can reuse it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

#: The fixed activations torch.nn has, by actsearch's family names (the loop searches these).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "mish": nn.Mish,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "hardswish": nn.Hardswish,
}
#: SearchSpec's defaults (search/spec.py), so both searches tune over the same ranges.
LR_RANGE = (1e-4, 3e-2)
WEIGHT_DECAY_RANGE = (1e-6, 1e-2)


@dataclass
class LoopTrial:
    """One trial of the loop: its number, state, value and when it ended (s from the start)."""

    number: int
    state: str
    value: float | None
    activation: str
    lr: float
    weight_decay: float
    epochs: int
    end_s: float


@dataclass
class LoopResult:
    """What :func:`run_loop` measured.

    ``best_value``: the best completed trial's value (None if none completed);
    ``wall_s``: the whole study; ``time_to_best_s``: from the start until the first
    completed trial whose value equals the final best ended (when the study first
    held it); ``time_to_best_epoch_s``: until any trial (pruned ones included) first
    reported a validation value at least the final best, after that epoch.
    """

    metric: str
    best_value: float | None
    wall_s: float
    time_to_best_s: float | None
    time_to_best_epoch_s: float | None
    best_params: dict[str, Any]
    test_value: float | None
    trials: list[LoopTrial] = field(default_factory=list)
    candidate_epochs: int = 0

    @property
    def n_complete(self) -> int:
        return sum(t.state == "complete" for t in self.trials)

    @property
    def n_pruned(self) -> int:
        return sum(t.state == "pruned" for t in self.trials)

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "best_value": self.best_value, "wall_s": self.wall_s,
            "time_to_best_s": self.time_to_best_s,
            "time_to_best_epoch_s": self.time_to_best_epoch_s,
            "best_params": self.best_params, "test_value": self.test_value,
            "trials": len(self.trials), "complete": self.n_complete, "pruned": self.n_pruned,
            "candidate_epochs": self.candidate_epochs,
        }


def build_model(n_in: int, hidden: Sequence[int], n_out: int, activation: str) -> nn.Sequential:
    """``Linear -> act -> ... -> Linear`` as a user writes it."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, width), ACTIVATIONS[activation]()]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, data: torch.Tensor,
               target: torch.Tensor, task: str) -> torch.Tensor:
    """One step of the example's loop (zero_grad, forward, loss, backward, step)."""
    optimizer.zero_grad()
    output = model(data)
    if task == "classification":
        loss = F.nll_loss(F.log_softmax(output, dim=1), target)
    else:
        loss = F.mse_loss(output, target)
    loss.backward()
    optimizer.step()
    return loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(model: nn.Module, loader: DataLoader, task: str, device: torch.device) -> float:
    """Accuracy (classification) or R² (regression) over a loader, as the example evaluates."""
    model.eval()
    correct, sse, ys = 0, 0.0, []
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            out = model(data)
            if task == "classification":
                correct += int((out.argmax(dim=1) == target).sum().item())
            else:
                sse += float(((out - target) ** 2).sum().item())
                ys.append(target.cpu())
    n = len(loader.dataset)  # type: ignore[arg-type]
    if task == "classification":
        return correct / n
    y = torch.cat(ys)
    sst = float(((y - y.mean()) ** 2).sum().item())
    return 1.0 - sse / sst if sst > 0 else 0.0


def _tensors(X: np.ndarray, y: np.ndarray, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    x_t = torch.as_tensor(np.ascontiguousarray(X), dtype=torch.float32)
    if task == "classification":
        return x_t, torch.as_tensor(np.asarray(y), dtype=torch.long)
    return x_t, torch.as_tensor(np.asarray(y), dtype=torch.float32).reshape(-1, 1)


def run_loop(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, *,
             hidden: Sequence[int], trials: int, epochs: int, batch_size: int, task: str,
             seed: int = 0, time_budget_s: float | None = None,
             X_test: np.ndarray | None = None, y_test: np.ndarray | None = None,
             n_outputs: int | None = None, activations: Sequence[str] | None = None,
             lr: tuple[float, float] = LR_RANGE,
             weight_decay: tuple[float, float] = WEIGHT_DECAY_RANGE,
             device: str | torch.device = "cpu",
             on_trial: Callable[[LoopTrial], None] | None = None) -> LoopResult:
    """Run the optuna-examples search over activations; time it.

    Args:
        X_train, y_train, X_val, y_val: the split (already scaled); labels as class
            indices (classification) or values (regression).
        hidden: the MLP's hidden widths (fixed: the activation is searched).
        trials, epochs, batch_size: the search's budget, as actsearch's spec gives it.
        task: ``"classification"`` (accuracy) or ``"regression"`` (R²).
        seed: the TPE sampler's seed; trial ``n`` also seeds torch with ``seed + n``.
        time_budget_s: ``study.optimize(timeout=...)``: no new trial after this.
        X_test, y_test: if given, the best trial's model is scored on them at the end.
        n_outputs: classes (default: ``max(y) + 1`` over the three splits) or 1.
        activations: names from :data:`ACTIVATIONS` (default: all of them).
        device: where the model trains; batches are moved there one by one.
        on_trial: called after each trial (e.g. a progress line).
    """
    dev = torch.device(device)
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be classification or regression, got {task!r}")
    names = list(activations) if activations is not None else list(ACTIVATIONS)
    unknown = [n for n in names if n not in ACTIVATIONS]
    if unknown:
        raise ValueError(f"unknown activations {unknown}; choose from {', '.join(ACTIVATIONS)}")
    x_tr, y_tr = _tensors(X_train, y_train, task)
    x_va, y_va = _tensors(X_val, y_val, task)
    if n_outputs is None:
        n_outputs = 1 if task == "regression" else int(max(y_tr.max(), y_va.max())) + 1
    n_in = x_tr.shape[1]
    metric = "accuracy" if task == "classification" else "r2"

    train_set = TensorDataset(x_tr, y_tr)
    valid_loader = DataLoader(TensorDataset(x_va, y_va), batch_size=batch_size)
    done: list[LoopTrial] = []
    epoch_log: list[tuple[float, float]] = []  # (s from start, val value) of every epoch
    best: dict[str, Any] = {"value": None, "state": None, "activation": None}
    counter = {"epochs": 0}

    def objective(trial: optuna.Trial) -> float:
        activation = trial.suggest_categorical("activation", names)
        lr_t = trial.suggest_float("lr", lr[0], lr[1], log=True)
        wd_t = trial.suggest_float("weight_decay", weight_decay[0], weight_decay[1], log=True)
        torch.manual_seed(seed + trial.number)
        model = build_model(n_in, hidden, n_outputs, activation).to(dev)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr_t, weight_decay=wd_t)
        train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True)
        value = float("nan")
        ran = 0
        try:
            for epoch in range(epochs):
                model.train()
                for data, target in train_loader:
                    data, target = data.to(dev), target.to(dev)
                    train_step(model, optimizer, data, target, task)
                value = evaluate(model, valid_loader, task, dev)
                ran = epoch + 1
                counter["epochs"] += 1
                epoch_log.append((time.perf_counter() - t0, value))
                trial.report(value, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        except optuna.TrialPruned:
            done.append(LoopTrial(trial.number, "pruned", value, activation, lr_t, wd_t, ran,
                                  time.perf_counter() - t0))
            if on_trial is not None:
                on_trial(done[-1])
            raise
        done.append(LoopTrial(trial.number, "complete", value, activation, lr_t, wd_t, ran,
                              time.perf_counter() - t0))
        if best["value"] is None or value > best["value"]:
            best.update(value=value, activation=activation,
                        state=copy.deepcopy(model.state_dict()))
        if on_trial is not None:
            on_trial(done[-1])
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner())
    study.optimize(objective, n_trials=trials, timeout=time_budget_s)
    _sync(dev)
    wall = time.perf_counter() - t0

    complete = [t for t in done if t.state == "complete" and t.value is not None]
    best_value = max((t.value for t in complete), default=None)  # type: ignore[type-var]
    time_to_best = time_to_best_epoch = None
    best_params: dict[str, Any] = {}
    if best_value is not None:
        first = min((t for t in complete if t.value >= best_value), key=lambda t: t.end_s)
        time_to_best = first.end_s
        best_params = {"activation": first.activation, "lr": first.lr,
                       "weight_decay": first.weight_decay, "trial": first.number}
        time_to_best_epoch = next(s for s, v in epoch_log if v >= best_value)
    test_value = None
    if X_test is not None and y_test is not None and best["state"] is not None:
        model = build_model(n_in, hidden, n_outputs, best["activation"]).to(dev)
        model.load_state_dict(best["state"])
        x_te, y_te = _tensors(X_test, y_test, task)
        test_value = evaluate(model, DataLoader(TensorDataset(x_te, y_te), batch_size=batch_size),
                              task, dev)
    return LoopResult(metric=metric, best_value=best_value, wall_s=wall,
                      time_to_best_s=time_to_best, time_to_best_epoch_s=time_to_best_epoch,
                      best_params=best_params, test_value=test_value, trials=done,
                      candidate_epochs=counter["epochs"])
