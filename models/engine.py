"""The population training engine: K candidates of one shape trained at once.

One call trains a whole population (K=1 is a plain trial): the data moves to the
device once, every candidate sees the same batches (a permutation from
``data_seed``: common random numbers, so candidates differ only by what the search
chose), and per-candidate results come back as plain Python/numpy values. The
caller prunes through ``on_epoch``; pruned, diverged and finished candidates are
compacted away so they stop costing compute.

About 600 lines: one training loop (epochs, pruning and compaction, deadlines, the
CUDA-graph and compiled paths, recording) whose parts share its local state; the
statistics, optimizer, graphs and kernels it drives live in their own modules.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import InvalidDataset, InvalidInput

from . import kernels
from .cuda_graphs import GraphedStep, graphs_enabled
from .network import ActParams, FamilySpec, PopulationNet, candidate_slice_keys
from .optim import BatchedOptimizer, schedule_multiplier
from .records import (  # noqa: F401  (re-exported)
    TASKS,
    CandidateResult,
    EpochReport,
    PopulationResult,
    Status,
    Task,
    TensorData,
)
from .sizing import auto_population_size, tune_cpu  # noqa: F401  (re-exported for callers)
from .spec import ArchSpec, Candidate, TrainConfig
from .stats import chunk_rows, preact_stats, sample_curves


# ----- helpers on one network ---------------------------------------------------------
def build_network(
    arch: ArchSpec,
    family: FamilySpec | None,
    act_params: Sequence[ActParams],
    n_inputs: int,
    n_outputs: int,
    seeds: Sequence[int] | None = None,
    families: Sequence[FamilySpec | None] | None = None,
) -> PopulationNet:
    """A population network; ``act_params`` has one entry per candidate (K = its length);
    ``families`` optionally one family per candidate (None entries: ``family``)."""
    return PopulationNet(arch, family, act_params, n_inputs, n_outputs, seeds=seeds,
                         families=families)


def count_params(arch: ArchSpec, family: str | Sequence[str], act_params: ActParams,
                 n_inputs: int, n_outputs: int) -> int:
    """Trainable parameters of one candidate (``act_params``: that candidate's)."""
    return build_network(arch, family, [act_params], n_inputs, n_outputs).count_params()


def count_flops(arch: ArchSpec, family: str | Sequence[str], act_params: ActParams,
                n_inputs: int, n_outputs: int) -> int:
    """FLOPs of one forward of one row (see :meth:`PopulationNet.count_flops`)."""
    return build_network(arch, family, [act_params], n_inputs, n_outputs).count_flops()


def _single_net(arch: ArchSpec, family: str | Sequence[str], act_params: ActParams,
                state_dict: Mapping[str, Any], n_inputs: int, n_outputs: int,
                device: str) -> PopulationNet:
    net = build_network(arch, family, [act_params], n_inputs, n_outputs)
    net.load_candidate_state(state_dict)
    return net.to(torch.device(device)).eval()


@torch.no_grad()
def _forward_chunks(net: PopulationNet, x: torch.Tensor) -> torch.Tensor:
    """No-grad forward in chunks sized to memory: ``(K, N, n_outputs)``."""
    step = chunk_rows(net, x.shape[0])
    return torch.cat([net(x[i : i + step]) for i in range(0, x.shape[0], step)], dim=1)


def predict(arch: ArchSpec, family: str | Sequence[str], act_params: ActParams,
            state_dict: Mapping[str, Any], X: Any, n_outputs: int, task: Task,
            *, device: str = "cpu") -> np.ndarray:
    """K=1 inference with one candidate's state.

    Returns class probabilities ``(N, n_outputs)`` (classification; ``argmax(1)`` gives
    the labels) or predictions ``(N,)`` (regression).
    """
    x = _as_x(X, "X").to(torch.device(device))
    net = _single_net(arch, family, act_params, state_dict, x.shape[1], n_outputs, device)
    out = _forward_chunks(net, x)[0]  # (N, C)
    if task == "classification":
        return out.softmax(-1).cpu().numpy()
    return out[:, 0].cpu().numpy()


def evaluate(arch: ArchSpec, family: str | Sequence[str], act_params: ActParams,
             state_dict: Mapping[str, Any], X: Any, y: Any, n_outputs: int, task: Task,
             *, device: str = "cpu") -> float:
    """The metric of one candidate's state on ``(X, y)``: accuracy, or R^2 (regression)."""
    dev = torch.device(device)
    x = _as_x(X, "X").to(dev)
    yt = _as_y(y, task, n_outputs, "y").to(dev)
    net = _single_net(arch, family, act_params, state_dict, x.shape[1], n_outputs, device)
    _, metric = _population_metrics(net, x, yt, task)
    return float(metric[0])


# ----- data -----------------------------------------------------------------------------
def _as_x(a: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).float()
    if t.ndim != 2 or t.shape[0] == 0:
        raise InvalidDataset(f"{name} must be a non-empty 2-D array (rows, features), got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise InvalidDataset(f"{name} contains NaN or infinite values; impute or drop them first")
    return t.contiguous()


def _as_y(a: Any, task: str, n_outputs: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 1:
        raise InvalidDataset(f"{name} must be one target per row, got shape {tuple(t.shape)}")
    if task == "classification":
        if t.is_floating_point() and not bool((t == t.round()).all()):
            raise InvalidDataset(f"{name}: class labels must be integers 0..{n_outputs - 1}")
        t = t.long()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_outputs):
            raise InvalidDataset(
                f"{name}: class labels must be in 0..{n_outputs - 1}, found {int(t.min())}..{int(t.max())}"
            )
        return t.contiguous()
    t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise InvalidDataset(f"{name} contains NaN or infinite targets")
    return t.contiguous()


def _prepare(data: TensorData, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Validate and move the four arrays to ``device`` (the only host->device transfer)."""
    if data.task not in TASKS:
        raise InvalidInput(f"task must be 'classification' or 'regression', not {data.task!r}")
    if data.task == "regression" and data.n_outputs != 1:
        raise InvalidInput(f"regression has n_outputs=1, got {data.n_outputs}")
    if data.task == "classification" and data.n_outputs < 2:
        raise InvalidInput(f"classification needs n_outputs >= 2 classes, got {data.n_outputs}")
    xtr, xva = _as_x(data.X_train, "X_train"), _as_x(data.X_val, "X_val")
    ytr = _as_y(data.y_train, data.task, data.n_outputs, "y_train")
    yva = _as_y(data.y_val, data.task, data.n_outputs, "y_val")
    if xtr.shape[1] != xva.shape[1]:
        raise InvalidDataset(f"X_train has {xtr.shape[1]} features but X_val has {xva.shape[1]}")
    if xtr.shape[0] != ytr.shape[0] or xva.shape[0] != yva.shape[0]:
        raise InvalidDataset("X and y must have the same number of rows")
    return tuple(t.to(device) for t in (xtr, ytr, xva, yva))


def tensors_on(data: TensorData, device: str | torch.device) -> TensorData:
    """``data`` validated and moved to ``device`` once, for a process that trains many
    populations on it (the engine's own move is then a no-op)."""
    xtr, ytr, xva, yva = _prepare(data, _device(str(device)))
    return TensorData(X_train=xtr, y_train=ytr, X_val=xva, y_val=yva, task=data.task,
                      n_outputs=data.n_outputs)


# ----- losses and metrics ---------------------------------------------------------------
def _cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy ``(K, B)``; classes as dim 1 (``(K, C, B)``), which on CPU is
    several times faster than ``(K*B, C)`` rows (log-softmax over a short last dim is slow)."""
    k, b, _ = out.shape
    return F.cross_entropy(out.transpose(1, 2), y.expand(k, b), reduction="none")


def _losses(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Mean loss per candidate ``(K,)`` of outputs ``(K, B, C)`` against shared targets ``(B,)``."""
    if task == "classification":
        return _cross_entropy(out, y).mean(1)
    return (out[..., 0] - y).square().mean(1)


@torch.no_grad()
def _population_metrics(net: PopulationNet, x: torch.Tensor, y: torch.Tensor,
                        task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss (K,), metric (K,))`` on (x, y) in eval mode, in memory-sized chunks.

    Metric: accuracy, or R^2 = 1 - SSE/SST (SST over these targets; 1.0 for a perfect
    fit of constant targets, else 0.0 when SST is 0, as scikit-learn does).
    """
    was_training = net.training
    net.eval()
    try:
        n = x.shape[0]
        step = chunk_rows(net, n)
        loss_sum = torch.zeros(net.k, dtype=torch.float64, device=x.device)
        score = torch.zeros(net.k, dtype=torch.float64, device=x.device)
        for i in range(0, n, step):
            out = net(x[i : i + step])  # (K, b, C)
            yb = y[i : i + step]
            if task == "classification":
                loss_sum += _cross_entropy(out, yb).double().sum(1)
                # max().indices, not argmax(): 6x faster over the short class axis of
                # this (K, C, B)-strided view on CPU (3.7 -> 0.6 ms at K=64, 647 rows)
                score += (out.max(-1).indices == yb).double().sum(1)
            else:
                loss_sum += (out[..., 0] - yb).double().square().sum(1)
        if task == "classification":
            return (loss_sum / n).float(), (score / n).float()
        sst = (y.double() - y.double().mean()).square().sum()
        if float(sst) > 0:
            r2 = 1.0 - loss_sum / sst
        else:
            r2 = torch.where(loss_sum == 0, 1.0, 0.0).double()
        return (loss_sum / n).float(), r2.float()
    finally:
        net.train(was_training)


# ----- recording ------------------------------------------------------------------------
def record_schedule(epochs: int, record_epochs: int) -> list[int]:
    """Epochs at which every training candidate is recorded (0 = before training).

    ``record_epochs`` >= 2: epoch 0, ``record_epochs - 2`` evenly spaced epochs between,
    and the last; 1: only the last; 0: none. A candidate that stops early is also
    recorded at the epoch it stops.
    """
    if record_epochs <= 0:
        return []
    if record_epochs == 1:
        return [epochs]
    between = {round(epochs * j / (record_epochs - 1)) for j in range(1, record_epochs - 1)}
    return sorted({0, epochs} | between)


def _device(name: str) -> torch.device:
    if name == "auto":  # what a machine has: its GPU when one is visible
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidInput(f"unknown device {name!r}; use 'cpu' or 'cuda:0'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device {name!r} asked for, but CUDA is not available here; use 'cpu'")
    return device


def _past(deadline: float | None, t0: float) -> bool:
    return deadline is not None and time.perf_counter() - t0 > deadline


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


# ----- per-population speed settings -----------------------------------------------------
def _env_flag(name: str, default: str) -> str:
    return os.environ.get(name, default).strip().lower()


class _FastPath:
    """What one population runs with beyond the eager reference (same math throughout).

    * compiled kernels (:mod:`models.kernels`) for the costly trainable families, where
      the population's work pays for compiling (always on CUDA);
    * CUDA only: TF32 matmuls (``ACTSEARCH_TF32=0`` turns them off) and, opt-in with
      ``ACTSEARCH_AMP=bf16``, bf16 autocast of the forward (the loss stays float32).
    """

    def __init__(self, net: PopulationNet, device: torch.device, n_train: int, epochs: int,
                 horizon: float = 1.0):
        # a mixed layer's slices count one by one (each family compiles its own kernel)
        fused = [(info, leaf) for info, act in zip(net.layers, net.acts, strict=True)
                 for leaf in act.leaves() if getattr(leaf, "fused", False)]
        self.families = sorted({type(leaf).name for _, leaf in fused})
        self.kernels = kernels.slice_keys(self.families, [(type(leaf).name, leaf.k)
                                                          for _, leaf in fused])
        work = float(n_train) * epochs * sum(leaf.k * info.pre for info, leaf in fused)
        self.compile = bool(fused) and kernels.should_compile(
            device, work, self.families, slices=[(type(leaf).name, leaf.k) for _, leaf in fused],
            horizon=horizon)
        self.cuda = device.type == "cuda"
        self.tf32 = self.cuda and _env_flag("ACTSEARCH_TF32", "1") not in ("0", "off", "false")
        self.amp = self.cuda and _env_flag("ACTSEARCH_AMP", "off") == "bf16"
        self._stack = contextlib.ExitStack()

    def open(self) -> None:
        self._stack.enter_context(kernels.compiling(self.compile))
        if self.tf32:
            previous = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = True
            self._stack.callback(setattr, torch.backends.cuda.matmul, "allow_tf32", previous)

    def close(self) -> None:
        self._stack.close()
        if self.compile:
            kernels.mark_warm(self.kernels)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


# ----- the engine -----------------------------------------------------------------------
def population_order(arch: ArchSpec, family: FamilySpec | None,
                     candidates: Sequence[Candidate]) -> list[int]:
    """The order a population's candidates are built in: grouped by family and structure.

    Candidates of one slice (family + structural parameters) become one contiguous run
    of K, in order of first appearance, so a mixed layer slices its input with narrow
    views; a single-family population keeps the given order.
    """
    keys = candidate_slice_keys(arch, family, [c.act_params for c in candidates],
                                [c.family for c in candidates])
    first: dict[tuple[Any, ...], int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    return sorted(range(len(candidates)), key=lambda i: (first[keys[i]], i))


def record_epoch(epoch: int, train_loss: list[float], val_loss: list[float],
                 val_metric: list[float], elapsed: float, partial: bool, active: list[int],
                 results: list[CandidateResult], candidates: Sequence[Candidate],
                 on_epoch: Callable[[EpochReport], Any] | None) -> tuple[list[int], dict[int, str]]:
    """One epoch's bookkeeping, shared by the engine and user-module training.

    Fails diverged candidates, appends the others' history, reports them through
    ``on_epoch`` (pruning) and returns (finite positions, position -> "pruned").
    """
    ok = [p for p in range(len(active))
          if math.isfinite(train_loss[p]) and math.isfinite(val_loss[p])]
    for p in set(range(len(active))) - set(ok):
        res = results[active[p]]
        res.status = "failed"
        res.error = (f"training diverged at epoch {epoch}: train loss {train_loss[p]}, val "
                     f"loss {val_loss[p]}; lower the learning rate "
                     f"(was {candidates[active[p]].lr:g})")
    for p in ok:
        entry = {"epoch": epoch, "train_loss": train_loss[p], "val_loss": val_loss[p],
                 "val_metric": val_metric[p], "elapsed_s": elapsed}
        if partial:
            entry["partial"] = True
        results[active[p]].history.append(entry)
    stopping: dict[int, str] = {}
    if on_epoch is not None and ok and not partial:
        report = EpochReport(epoch, [active[p] for p in ok], [train_loss[p] for p in ok],
                             [val_loss[p] for p in ok], [val_metric[p] for p in ok], elapsed)
        stop = {int(i) for i in (on_epoch(report) or ())}
        stopping = {p: "pruned" for p in ok if active[p] in stop}
    return ok, stopping


def train_population(
    arch: ArchSpec,
    family: FamilySpec | None,
    candidates: list[Candidate],
    data: TensorData,
    config: TrainConfig,
    on_epoch: Callable[[EpochReport], Iterable[int] | None] | None = None,
) -> PopulationResult:
    """Train K candidates together and return one result per candidate.

    ``family`` is the population's family (a name, or one per hidden layer with
    ``activation_scope="layer"``); a candidate's own ``Candidate.family`` overrides it,
    so one population may mix families (``family=None`` when every candidate names
    its own). Mixed candidates must share their widths (:func:`models.populations.population_key`).
    Results, reports and ``on_epoch``'s indices refer to positions in ``candidates``.

    ``on_epoch`` gets an :class:`EpochReport` after every epoch and returns the original
    indices to stop now (pruned). A candidate whose training or validation loss turns
    NaN/inf is marked "failed" and removed without disturbing the others. Past
    ``config.deadline_s`` (checked after every batch and after each epoch's evaluation)
    all candidates stop with status "deadline", keeping what they trained; a cut epoch
    is evaluated and recorded (``partial: True`` in its history) but not reported to
    ``on_epoch``.
    """
    t0 = time.perf_counter()
    if not candidates:
        raise InvalidInput("a population needs at least one candidate")
    config.validate()
    for c in candidates:
        c.validate()
    device = _device(config.device)
    if device.type == "cpu":
        tune_cpu()  # once per process: inter-op pool, allocator (threads stay as set)
    x_tr, y_tr, x_va, y_va = _prepare(data, device)
    arch.validate(n_inputs=x_tr.shape[1])
    task = data.task

    order = population_order(arch, family, candidates)  # net position -> original index
    ordered = [candidates[i] for i in order]
    net = build_network(arch, family, [c.act_params for c in ordered], x_tr.shape[1],
                        data.n_outputs, seeds=[c.seed for c in ordered],
                        families=[c.family for c in ordered]).to(device)
    opt = BatchedOptimizer(net, [c.lr for c in ordered], [c.weight_decay for c in ordered],
                           config.optimizer, momentum=config.momentum)
    results = [CandidateResult(index=i) for i in range(len(candidates))]
    for pos, i in enumerate(order):
        fams = net.candidate_families[pos]
        results[i].family = fams[0] if len(set(fams)) == 1 else list(fams)
        results[i].n_params, results[i].flops = net.count_params(pos), net.count_flops(pos)
    n_params, flops = results[0].n_params or 0, results[0].flops or 0
    active = list(order)  # position in the net -> original index

    n_val = x_va.shape[0]
    if n_val > config.stats_sample:
        g = torch.Generator().manual_seed(config.data_seed)
        rows = torch.randperm(n_val, generator=g)[: config.stats_sample].sort().values
        x_stats = x_va.index_select(0, rows.to(device))
    else:
        x_stats = x_va
    schedule = set(record_schedule(config.epochs, config.record_epochs))
    recorded: set[tuple[int, int]] = set()  # (original index, epoch)

    def record(positions: list[int], epoch: int) -> None:
        positions = [p for p in positions if (active[p], epoch) not in recorded]
        if not positions:
            return
        stats = preact_stats(net, x_stats, hist_bins=config.hist_bins, positions=positions)
        curves = sample_curves(net, stats, positions, config.curve_points)
        for layer, (layer_stats, layer_curves) in enumerate(zip(stats, curves, strict=True)):
            for j, pos in enumerate(positions):
                res = results[active[pos]]
                res.preact_stats.append({"layer": layer, "epoch": epoch, **layer_stats[j]})
                if layer_curves and layer_curves[j] is not None:
                    res.curves.append({"layer": layer, "epoch": epoch, **layer_curves[j]})
        recorded.update((active[p], epoch) for p in positions)

    if 0 in schedule:
        record(list(range(net.k)), 0)

    n_train, bs = x_tr.shape[0], config.batch_size
    starts = list(range(0, n_train, bs))
    if arch.norm == "batch" and n_train > 1 and n_train % bs == 1:
        starts = starts[:-1]  # a batch of one row has no batch statistics
    total_steps = config.epochs * len(starts)
    data_gen = torch.Generator().manual_seed(config.data_seed)
    deadline = config.deadline_s
    step = 0
    candidate_epochs = 0
    # Fixed batch buffers (a full batch and the last, shorter one): the step reads and
    # writes only fixed tensors, so on CUDA it can be captured once and replayed.
    sizes = {min(bs, n_train - s) for s in starts}
    x_bufs = {n: x_tr.new_empty((n, x_tr.shape[1])) for n in sizes}
    y_bufs = {n: y_tr.new_empty((n,)) for n in sizes}
    idx_bufs = {n: torch.empty(n, dtype=torch.long, device=device) for n in sizes}
    cuda_graphs = graphs_enabled(device) and opt.graph_safe
    lr_mult: float | torch.Tensor = torch.ones((), device=device) if cuda_graphs else 1.0
    loss_sum = torch.zeros(net.k, device=device)
    fast = _FastPath(net, device, n_train, config.epochs, config.compile_horizon)
    fast.open()

    def train_step(n_b: int) -> None:
        """One update of every candidate on the batch whose row indices are in idx_bufs."""
        xb = torch.index_select(x_tr, 0, idx_bufs[n_b], out=x_bufs[n_b])  # (B, D)
        yb = torch.index_select(y_tr, 0, idx_bufs[n_b], out=y_bufs[n_b])  # (B,)
        with fast.autocast():
            out = net(xb)  # (K, B, C)
        loss = _losses(out.float(), yb, task)  # (K,)
        opt.zero_grad()
        loss.sum().backward()  # each candidate's gradient is its own loss's
        opt.step(lr_mult)
        loss_sum.add_(loss.detach(), alpha=n_b)

    step_count_at_capture = [0]

    def restore_step_count() -> None:  # a failed capture ran the host side of opt.step
        opt.step_count = step_count_at_capture[0]

    graphed = GraphedStep(lambda: train_step(bs), on_failure=restore_step_count)

    try:
        for epoch in range(1, config.epochs + 1):
            net.train()
            perm = torch.randperm(n_train, generator=data_gen).to(device)
            loss_sum.zero_()
            seen = 0
            done_batches = 0
            deadline_hit = False
            for start in starts:
                idx = perm[start : start + bs]
                n_b = idx.shape[0]
                idx_bufs[n_b].copy_(idx)
                mult = schedule_multiplier(config.schedule, step=step, total_steps=total_steps,
                                           epoch=epoch - 1, epochs=config.epochs)
                if isinstance(lr_mult, torch.Tensor):
                    lr_mult.fill_(mult)
                else:
                    lr_mult = mult
                if cuda_graphs and n_b == bs:
                    step_count_at_capture[0] = opt.step_count
                    graphed()
                else:
                    train_step(n_b)
                step += 1
                seen += n_b
                done_batches += 1
                if _past(deadline, t0):
                    deadline_hit = True
                    break
            partial = done_batches < len(starts)
            candidate_epochs += net.k

            train_loss = (loss_sum / max(seen, 1)).tolist()
            val_loss_t, val_metric_t = _population_metrics(net, x_va, y_va, task)
            val_loss, val_metric = val_loss_t.tolist(), val_metric_t.tolist()
            elapsed = time.perf_counter() - t0

            ok, stopping = record_epoch(epoch, train_loss, val_loss, val_metric, elapsed,
                                        partial, active, results, candidates, on_epoch)
            if epoch == config.epochs and not partial:
                stopping = {p: stopping.get(p, "complete") for p in ok}
            elif deadline_hit or _past(deadline, t0):
                stopping = {p: stopping.get(p, "deadline") for p in ok}

            if config.record_epochs > 0:
                record(ok if epoch in schedule else sorted(stopping), epoch)
            for p, status in stopping.items():
                res = results[active[p]]
                res.status = status
                res.state_dict = net.candidate_state(p)

            survivors = [p for p in ok if p not in stopping]
            if not survivors:
                break
            if len(survivors) < net.k:
                index = torch.tensor(survivors, dtype=torch.long)
                net.keep(index)
                opt.keep(index)
                active = [active[p] for p in survivors]
                loss_sum = torch.zeros(net.k, device=device)
                graphed.reset()  # the captured step was for the old K

    finally:
        fast.close()
    for res in results:
        metrics = [h["val_metric"] for h in res.history]
        if metrics:
            res.val_metric = metrics[-1]
            res.best_val_metric = max(metrics)
    return PopulationResult(
        candidates=results,
        n_params=n_params,
        flops=flops,
        device=_device_name(device),
        wall_s=time.perf_counter() - t0,
        candidate_epochs=candidate_epochs,
    )
