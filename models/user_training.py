"""Training K candidates of the user's module: fused (``torch.func`` + ``vmap``) or one by one.

The other half of :mod:`models.user_module` (which builds, probes, records and
evaluates the module). A population's K candidates share a family and its
structural parameters, so their modules usually have identical structure: they
train **fused**, the K modules' tensors stacked (``torch.func.stack_module_state``)
and one ``vmap(functional_call)`` step updating all K at once. Modules that differ
in structure, or whose forward cannot run under ``vmap`` (data-dependent control
flow, say), train **one by one** in the same epoch loop. Either way every
candidate sees the same batches, is reported after each epoch (pruning) and is
recorded like the engine's candidates. Imports torch, numpy and ``core`` only.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from core.errors import InvalidInput

from .engine import (
    CandidateResult,
    EpochReport,
    PopulationResult,
    TensorData,
    record_epoch,
    record_schedule,
)
from .optim import schedule_multiplier
from .spec import Candidate, TrainConfig
from .user_module import (
    Build,
    SlotActivation,
    build_candidate,
    check_shape_preserving,
    record_module,
    reshape_rows,
    stacked_loss,
    stacked_outputs,
)


# --------------------------------------------------------------------------- candidate groups
def _act_names(module: nn.Module) -> set[str]:
    """Names of the activations' own tensors (no weight decay on them)."""
    prefixes = [n + "." for n, m in module.named_modules() if isinstance(m, SlotActivation)]
    return {n for n, _ in module.named_parameters() if any(n.startswith(p) for p in prefixes)}


class _StackedOptimizer:
    """Adam, AdamW or SGD over stacked ``(K, ...)`` tensors, with per-candidate lr and decay."""

    def __init__(self, params: dict[str, torch.Tensor], lrs: Sequence[float],
                 wds: Sequence[float], kind: str, momentum: float, no_decay: set[str]) -> None:
        self.params = params
        self.kind = kind
        self.momentum = momentum
        self.no_decay = no_decay
        self.lr = torch.tensor(list(lrs), dtype=torch.float32)
        self.wd = torch.tensor(list(wds), dtype=torch.float32)
        self.m = {n: torch.zeros_like(p) for n, p in params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in params.items()}
        self.steps = 0

    def _per(self, t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return t.to(p.device).reshape(-1, *([1] * (p.dim() - 1)))

    @torch.no_grad()
    def step(self, mult: float) -> None:
        self.steps += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        for n, p in self.params.items():
            if p.grad is None:
                continue
            g = p.grad
            p.grad = None
            lr = self._per(self.lr, p) * mult
            wd = self._per(self.wd, p) * (0.0 if n in self.no_decay else 1.0)
            if self.kind == "adamw":
                p.mul_(1 - lr * wd)
            else:
                g = g + wd * p
            if self.kind == "sgd":
                self.m[n].mul_(self.momentum).add_(g)
                p.sub_(lr * self.m[n])
                continue
            self.m[n].mul_(b1).add_(g, alpha=1 - b1)
            self.v[n].mul_(b2).addcmul_(g, g, value=1 - b2)
            mhat = self.m[n] / (1 - b1**self.steps)
            vhat = self.v[n] / (1 - b2**self.steps)
            p.sub_(lr * mhat / (vhat.sqrt() + eps))

    def keep(self, index: torch.Tensor) -> None:
        self.lr, self.wd = self.lr[index], self.wd[index]
        for store in (self.m, self.v):
            for n in store:
                store[n] = store[n].index_select(0, index.to(store[n].device))


class _Fused:
    """K modules of identical structure trained as one: stacked tensors, ``vmap`` over K."""

    mode = "fused"

    def __init__(self, modules: list[nn.Module], candidates: Sequence[Candidate],
                 config: TrainConfig) -> None:
        from torch.func import functional_call, stack_module_state, vmap

        for m in modules:
            m.train()  # stack_module_state wants one mode; forward() sets it per call
        self.base = copy.deepcopy(modules[0])
        params, buffers = stack_module_state(modules)
        self.params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        self.buffers = {n: b.detach().clone() for n, b in buffers.items()}
        self.opt = _StackedOptimizer(self.params, [c.lr for c in candidates],
                                     [c.weight_decay for c in candidates], config.optimizer,
                                     config.momentum, _act_names(self.base))

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (x,))

        self._forward = vmap(one, in_dims=(0, 0, None), randomness="different")

    @property
    def k(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        self.base.train(train)
        return self._forward(self.params, self.buffers, x)  # (K, B, ...)

    def step(self, x: torch.Tensor, y: torch.Tensor, task: str, mult: float) -> torch.Tensor:
        loss = stacked_loss(stacked_outputs(self.forward(x, True), task), y, task)  # (K,)
        loss.sum().backward()
        self.opt.step(mult)
        return loss.detach()

    def keep(self, positions: list[int]) -> None:
        index = torch.tensor(positions, dtype=torch.long)
        for store in (self.params, self.buffers):
            for n in list(store):
                t = store[n].detach().index_select(0, index.to(store[n].device))
                store[n] = t.requires_grad_(True) if store is self.params else t
        self.opt.params = self.params
        self.opt.keep(index)

    def module(self, pos: int) -> nn.Module:
        m = copy.deepcopy(self.base)
        state = {n: t[pos].detach() for n, t in {**self.params, **self.buffers}.items()}
        m.load_state_dict(state)
        return m


class _OneByOne:
    """K modules trained in turn on the same batches, each with its own torch optimizer."""

    mode = "one by one"

    def __init__(self, modules: list[nn.Module], candidates: Sequence[Candidate],
                 config: TrainConfig) -> None:
        self.modules = modules
        self.opts = []
        for m, c in zip(modules, candidates, strict=True):
            act = _act_names(m)
            named = dict(m.named_parameters())
            groups = [{"params": [p for n, p in named.items() if n not in act],
                       "weight_decay": c.weight_decay},
                      {"params": [p for n, p in named.items() if n in act], "weight_decay": 0.0}]
            groups = [g for g in groups if g["params"]]
            if config.optimizer == "sgd":
                opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=c.lr,
                                                             momentum=config.momentum)
            elif config.optimizer == "adamw":
                opt = torch.optim.AdamW(groups, lr=c.lr)
            else:
                opt = torch.optim.Adam(groups, lr=c.lr)
            for g in opt.param_groups:
                g["base_lr"] = c.lr
            self.opts.append(opt)

    @property
    def k(self) -> int:
        return len(self.modules)

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        outs = []
        for m in self.modules:
            m.train(train)
            outs.append(m(x))
        return torch.stack(outs)  # (K, B, ...)

    def step(self, x: torch.Tensor, y: torch.Tensor, task: str, mult: float) -> torch.Tensor:
        losses = []
        for m, opt in zip(self.modules, self.opts, strict=True):
            m.train(True)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * mult
            loss = stacked_loss(stacked_outputs(m(x).unsqueeze(0), task), y, task)[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        return torch.stack(losses)

    def keep(self, positions: list[int]) -> None:
        self.modules = [self.modules[p] for p in positions]
        self.opts = [self.opts[p] for p in positions]

    def module(self, pos: int) -> nn.Module:
        return self.modules[pos]


def _signature(m: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(n, tuple(t.shape), t.dtype) for n, t in [*m.named_parameters(), *m.named_buffers()]]


def make_group(modules: list[nn.Module], candidates: Sequence[Candidate], config: TrainConfig,
               x_probe: torch.Tensor, task: str, fused: bool | None = None
               ) -> tuple[_Fused | _OneByOne, str]:
    """Fused when the modules share their structure and run under ``vmap``; else one by one.

    ``fused`` forces a mode (the bench measures both). Returns the group and why
    that mode was chosen.
    """
    if fused is False or len(modules) == 1:
        return _OneByOne(modules, candidates, config), "one candidate" if len(modules) == 1 \
            else "asked for"
    sig = _signature(modules[0])
    if any(_signature(m) != sig for m in modules[1:]):
        if fused:
            raise InvalidInput("fused training needs modules of identical structure")
        return _OneByOne(modules, candidates, config), "structures differ"
    try:
        group = _Fused(modules, candidates, config)
        saved = {n: b.clone() for n, b in group.buffers.items()}
        with torch.no_grad():  # both modes: batch norm updates its running stats in training
            group.forward(x_probe, True)
            group.forward(x_probe, False)
        for n, b in saved.items():
            group.buffers[n].copy_(b)
        return group, "identical structure"
    except Exception as exc:  # noqa: BLE001 - vmap cannot run every forward: train in turn
        if fused:
            raise
        return _OneByOne(modules, candidates, config), f"vmap failed: {type(exc).__name__}"


# --------------------------------------------------------------------------- training
@dataclass
class ModuleData:
    """The prepared splits plus the row shape the user's module expects."""

    data: TensorData
    input_shape: tuple[int, ...] | None = None
    slots: list[int] = field(default_factory=list)


@torch.no_grad()
def _metrics(group: _Fused | _OneByOne, x: torch.Tensor, y: torch.Tensor, task: str,
             chunk: int = 4096) -> tuple[list[float], list[float]]:
    """``(loss, metric)`` per candidate on (x, y): accuracy, or R^2 as the engine computes it."""
    loss_sum = torch.zeros(group.k, dtype=torch.float64)
    score = torch.zeros(group.k, dtype=torch.float64)
    for i in range(0, x.shape[0], chunk):
        out = stacked_outputs(group.forward(x[i:i + chunk], False), task)
        yb = y[i:i + chunk]
        loss_sum += stacked_loss(out, yb, task).double() * yb.shape[0]
        if task == "classification":
            score += (out.argmax(-1) == yb).double().sum(1)
    n = x.shape[0]
    if task == "classification":
        return (loss_sum / n).tolist(), (score / n).tolist()
    sst = float((y.double() - y.double().mean()).square().sum())
    r2 = (1.0 - loss_sum * n / sst) if sst > 0 else (loss_sum == 0).double()
    return (loss_sum / n).tolist(), r2.tolist()


def train_module_population(
    build: Build, family: str, candidates: list[Candidate], mdata: ModuleData,
    config: TrainConfig, on_epoch: Callable[[EpochReport], Iterable[int] | None] | None = None,
    *, fused: bool | None = None,
) -> PopulationResult:
    """Train K candidates of the user's module (one family) and return one result per candidate.

    Same contract as :func:`models.engine.train_population`: ``on_epoch`` answers
    which candidates to prune; diverged candidates fail alone; ``config.deadline_s``
    stops all with status "deadline". ``PopulationResult.device`` names the mode,
    e.g. ``"cpu, fused x4"`` or ``"cpu, one by one x4 (structures differ)"``.
    """
    t0 = time.perf_counter()
    if not candidates:
        raise InvalidInput("a population needs at least one candidate")
    check_shape_preserving(family)
    device = torch.device(config.device)
    data = mdata.data
    task = data.task
    x_tr = reshape_rows(torch.as_tensor(np.asarray(data.X_train), dtype=torch.float32),
                    mdata.input_shape).to(device)
    x_va = reshape_rows(torch.as_tensor(np.asarray(data.X_val), dtype=torch.float32),
                    mdata.input_shape).to(device)
    ydt = torch.long if task == "classification" else torch.float32
    y_tr = torch.as_tensor(np.asarray(data.y_train), dtype=ydt).to(device)
    y_va = torch.as_tensor(np.asarray(data.y_val), dtype=ydt).to(device)
    modules = [build_candidate(build, family, dict(c.act_params), mdata.slots, c.seed).to(device)
               for c in candidates]  # type: ignore[arg-type]
    n_params = sum(p.numel() for p in modules[0].parameters())
    flops = _flops(modules[0], x_va[:1])
    group, why = make_group(modules, candidates, config, x_tr[: min(2, len(x_tr))], task, fused)
    mode = f"{group.mode} x{group.k}" + ("" if group.mode == "fused" else f" ({why})")

    g = torch.Generator().manual_seed(config.data_seed)
    n_val = x_va.shape[0]
    rows = torch.randperm(n_val, generator=g)[: config.stats_sample].sort().values
    x_stats = x_va.index_select(0, rows.to(device))
    results = [CandidateResult(index=i) for i in range(len(candidates))]
    active = list(range(len(candidates)))
    schedule = set(record_schedule(config.epochs, config.record_epochs))

    def record(positions: Iterable[int], epoch: int) -> None:
        for p in positions:
            stats, curves = record_module(group.module(p), x_stats, hist_bins=config.hist_bins,
                                          curve_points=config.curve_points)
            res = results[active[p]]
            res.preact_stats += [{**s, "epoch": epoch} for s in stats]
            res.curves += [{**c, "epoch": epoch} for c in curves]

    if 0 in schedule:
        record(range(group.k), 0)
    n_train, bs = x_tr.shape[0], config.batch_size
    starts = list(range(0, n_train, bs))
    if n_train > 1 and n_train % bs == 1:
        starts = starts[:-1]  # a batch of one row: batch norm in the user's module cannot train on it
    total_steps = config.epochs * len(starts)
    data_gen = torch.Generator().manual_seed(config.data_seed)
    step, candidate_epochs = 0, 0
    for epoch in range(1, config.epochs + 1):
        perm = torch.randperm(n_train, generator=data_gen).to(device)
        loss_sum = torch.zeros(group.k, dtype=torch.float64)
        seen, partial = 0, False
        for start in starts:
            idx = perm[start:start + bs]
            mult = schedule_multiplier(config.schedule, step=step, total_steps=total_steps,
                                       epoch=epoch - 1, epochs=config.epochs)
            loss_sum += group.step(x_tr[idx], y_tr[idx], task, mult).double().cpu() * len(idx)
            step += 1
            seen += len(idx)
            if config.deadline_s is not None and time.perf_counter() - t0 > config.deadline_s:
                partial = seen < n_train
                break
        candidate_epochs += group.k
        train_loss = (loss_sum / max(seen, 1)).tolist()
        val_loss, val_metric = _metrics(group, x_va, y_va, task)
        elapsed = time.perf_counter() - t0
        ok, stopping = record_epoch(epoch, train_loss, val_loss, val_metric, elapsed, partial,
                                    active, results, candidates, on_epoch)
        deadline = config.deadline_s is not None and time.perf_counter() - t0 > config.deadline_s
        if epoch == config.epochs and not partial:
            stopping = {p: stopping.get(p, "complete") for p in ok}
        elif deadline or partial:
            stopping = {p: stopping.get(p, "deadline") for p in ok}
        if config.record_epochs > 0:
            record(ok if epoch in schedule else sorted(stopping), epoch)
        for p, status in stopping.items():
            res = results[active[p]]
            res.status = status  # type: ignore[assignment]
            res.state_dict = {n: t.detach().cpu().numpy().copy()
                              for n, t in group.module(p).state_dict().items()}
        survivors = [p for p in ok if p not in stopping]
        if not survivors:
            break
        if len(survivors) < group.k:
            group.keep(survivors)
            active = [active[p] for p in survivors]
    for res in results:
        metrics = [h["val_metric"] for h in res.history]
        if metrics:
            res.val_metric, res.best_val_metric = metrics[-1], max(metrics)
    return PopulationResult(candidates=results, n_params=n_params, flops=flops,
                            device=f"{device.type}, {mode}", wall_s=time.perf_counter() - t0,
                            candidate_epochs=candidate_epochs)


def _flops(module: nn.Module, x: torch.Tensor) -> int:
    """Forward FLOPs of one row (torch's counter; 0 if it cannot count this module)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        was = module.training
        with torch.no_grad(), counter:
            module.eval()(x)
        module.train(was)
        return int(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - a missing FLOPs figure must not fail training
        return 0


