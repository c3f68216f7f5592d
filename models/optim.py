"""A batched optimizer for K stacked candidates: per-candidate lr and weight decay.

Every parameter has a leading K axis, so a per-candidate value is a ``(K,)``
tensor viewed as ``(K, 1, ...)`` and broadcast; the update is a handful of
``torch._foreach_*`` calls over the few stacked tensors, never a loop over K.
Adam and AdamW use torch's one-pass fused Adam kernel where it exists (see
:meth:`BatchedOptimizer.step`): on a 2-core CPU that is 8x faster than the seven
foreach passes it replaces (``ACTSEARCH_FUSED_OPTIM=0`` turns it off).
Compaction (:meth:`BatchedOptimizer.keep`) slices the state with the same index
as the network.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence

import torch

from core.errors import InvalidInput

from .network import PopulationNet


def _constant(step: int, total_steps: int, epoch: int, epochs: int) -> float:
    return 1.0


def _cosine(step: int, total_steps: int, epoch: int, epochs: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def _step(step: int, total_steps: int, epoch: int, epochs: int) -> float:
    drops = int(epoch >= math.ceil(0.5 * epochs)) + int(epoch >= math.ceil(0.75 * epochs))
    return 0.1**drops


SCHEDULES: dict[str, Callable[[int, int, int, int], float]] = {
    "constant": _constant,
    "cosine": _cosine,
    "step": _step,
}


def schedule_multiplier(name: str, *, step: int, total_steps: int, epoch: int, epochs: int) -> float:
    """Learning-rate multiplier before update ``step`` (0-based) in ``epoch`` (0-based).

    constant: 1. cosine: ``0.5 (1 + cos(pi step / total_steps))`` per step.
    step: 1, then x0.1 from 50% of the epochs and x0.01 from 75%.
    """
    try:
        fn = SCHEDULES[name]
    except KeyError:
        raise InvalidInput(f"unknown schedule {name!r}; use one of {sorted(SCHEDULES)}") from None
    return fn(step, total_steps, epoch, epochs)


def _fused_adam_supported(params: Sequence[torch.Tensor]) -> bool:
    """torch's fused Adam kernel exists for these tensors (CPU or CUDA, float32/16)."""
    if os.environ.get("ACTSEARCH_FUSED_OPTIM", "1").strip().lower() in ("0", "off", "false", "no"):
        return False
    if not hasattr(torch, "_fused_adam_") or not params:
        return False
    devices = {p.device.type for p in params}
    dtypes = {p.dtype for p in params}
    return len(devices) == 1 and devices <= {"cpu", "cuda"} and dtypes <= {
        torch.float32, torch.float16, torch.bfloat16}


def _adam_one(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
              lr: torch.Tensor, step: torch.Tensor, b1: float, b2: float, eps: float) -> None:
    """Adam's update of one stacked tensor ``(K, N)`` with per-candidate lr ``(K, 1)``.

    The same math as torch's fused Adam. Compiled (Inductor) it is one pass over the
    tensor: read p, g, m, v, write p, m, v; the fused kernel at lr = 1 plus the
    per-candidate lr pass and the scratch reset read and write 11 tensors.
    """
    m.lerp_(g, 1.0 - b1)
    v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
    bc1 = 1.0 - torch.pow(b1, step)
    bc2_sqrt = torch.sqrt(1.0 - torch.pow(b2, step))
    p.addcdiv_(m * (lr / bc1), v.sqrt() / bc2_sqrt + eps, value=-1.0)


_compiled_adam: Callable[..., None] | None = None
_compiled_adam_broken = False


def _use_compiled_adam(params: Sequence[torch.Tensor]) -> bool:
    """``ACTSEARCH_COMPILED_OPTIM=on`` opts in (float32 parameters only); off by default.

    Measured on an H100 (bench/README.md): +34% candidate-epochs/s for relu and +26%
    for rational at K=256, but relu at K=32 ran 2.4x slower in two runs, cause not yet
    found; on a 2-core CPU no faster than torch's fused kernel plus one pass.
    """
    setting = os.environ.get("ACTSEARCH_COMPILED_OPTIM", "off").strip().lower()
    if setting not in ("1", "on", "true", "yes") or _compiled_adam_broken or not params:
        return False
    return hasattr(torch, "compile") and {p.dtype for p in params} == {torch.float32}


def _adam_kernel() -> Callable[..., None]:
    global _compiled_adam
    if _compiled_adam is None:
        _compiled_adam = torch.compile(_adam_one, dynamic=True, fullgraph=True)
    return _compiled_adam


class BatchedOptimizer:
    """Adam, AdamW or SGD with momentum over a :class:`PopulationNet`'s stacked parameters.

    * ``adam``: L2 decay folded into the gradient (``g + wd * w``), as torch.optim.Adam.
    * ``adamw``: decoupled decay ``w *= 1 - lr * wd`` (torch.optim.AdamW).
    * ``sgd``: ``buf = momentum * buf + g (+ wd * w)``; ``w -= lr * buf`` (torch.optim.SGD).

    Decay applies to linear/conv weights only (:meth:`PopulationNet.parameter_groups`).

    Args:
        net: the population.
        lr: ``(K,)`` learning rates.
        weight_decay: ``(K,)`` decay coefficients.
        kind: ``"adam"``, ``"adamw"`` or ``"sgd"``.
    """

    def __init__(
        self,
        net: PopulationNet,
        lr: Sequence[float] | torch.Tensor,
        weight_decay: Sequence[float] | torch.Tensor,
        kind: str = "adam",
        *,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        if kind not in ("adam", "adamw", "sgd"):
            raise InvalidInput(f"unknown optimizer {kind!r}; use 'adam', 'adamw' or 'sgd'")
        self.net, self.kind, self.momentum, self.betas, self.eps = net, kind, momentum, betas, eps
        device = next(net.parameters()).device
        self.lr = torch.as_tensor(lr, dtype=torch.float32).to(device).reshape(-1)  # (K,)
        self.weight_decay = torch.as_tensor(weight_decay, dtype=torch.float32).to(device).reshape(-1)
        if self.lr.numel() != net.k or self.weight_decay.numel() != net.k:
            raise InvalidInput(f"need {net.k} learning rates and weight decays, one per candidate")
        self.step_count = 0  # host-side count (the non-fused Adam's bias corrections)
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self._bind()

    def _bind(self) -> None:
        """(Re)collect the parameters and the per-candidate views after building or compaction."""
        decay, no_decay = self.net.parameter_groups()
        self.names = [n for n, _ in decay] + [n for n, _ in no_decay]
        self.params: list[torch.Tensor] = [p for _, p in decay]
        self.params += [p for _, p in no_decay]
        self.n_decay = len(decay)
        self._lr_now = torch.empty_like(self.lr)  # (K,) lr x schedule, refreshed each step
        self._neg_lr_now = torch.empty_like(self.lr)  # (K,) -lr x schedule
        self._step_now = torch.empty_like(self.lr)  # (K,) Adam's -lr x bias corrections
        self._shrink_now = torch.empty_like(self.lr)  # (K,) AdamW's 1 - lr * wd

        # A mixed population's activation slices hold a subset of the K candidates:
        # their per-candidate views read those candidates' entries (a narrow view of a
        # contiguous run, else a gathered copy refreshed in place after each update).
        positions = self.net.param_positions()
        self._positions = [positions.get(n) for n in self.names]
        self._gathers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

        def views(t: torch.Tensor, ps: Sequence[torch.Tensor],
                  poss: Sequence[list[int] | None]) -> list[torch.Tensor]:
            out = []
            for p, pos in zip(ps, poss, strict=True):
                src = t if pos is None else self._subset(t, pos)
                out.append(src.view(-1, *([1] * (p.ndim - 1))))
            return out

        self._lr_views = views(self._lr_now, self.params, self._positions)
        self._neg_lr_views = views(self._neg_lr_now, self.params, self._positions)
        self._step_views = views(self._step_now, self.params, self._positions)
        self._wd_views = views(self.weight_decay, self.params[: self.n_decay],
                               self._positions[: self.n_decay])
        self._shrink_views = views(self._shrink_now, self.params[: self.n_decay],
                                   self._positions[: self.n_decay])
        self._any_decay = bool((self.weight_decay > 0).any()) and self.n_decay > 0
        for name, p in zip(self.names, self.params, strict=True):
            if name not in self.state:
                keys = ("exp_avg", "exp_avg_sq") if self.kind != "sgd" else ("momentum_buffer",)
                self.state[name] = {key: torch.zeros_like(p) for key in keys}
        # The fused path: torch's one-pass Adam kernel (one learning rate per call) with
        # lr = 1 writes each candidate's unscaled update into ``_scratch``; one more pass
        # adds it times the per-candidate lr. Three passes instead of seven foreach ones.
        self._compiled = self.kind != "sgd" and _use_compiled_adam(self.params)
        self._fused = (self.kind != "sgd" and not self._compiled
                       and _fused_adam_supported(self.params))
        self._scratch = [torch.zeros_like(p) for p in self.params] if self._fused else []
        # Adam's t as a tensor, advanced in place so a CUDA graph replays it correctly
        # (kept across compaction: under graph replay the host's step_count lags).
        old_t = getattr(self, "_step_t", None)
        self._step_t = (old_t if old_t is not None
                        else torch.zeros((), dtype=torch.float32, device=self.lr.device))

    def _subset(self, t: torch.Tensor, pos: list[int]) -> torch.Tensor:
        """``t[pos]`` that follows in-place writes to ``t``: a view, or a refreshed gather."""
        if pos == list(range(pos[0], pos[0] + len(pos))):
            return t[pos[0] : pos[0] + len(pos)]
        idx = torch.tensor(pos, dtype=torch.long, device=t.device)
        buf = t.index_select(0, idx)
        self._gathers.append((t, idx, buf))
        return buf

    def _refresh_gathers(self) -> None:
        for src, idx, buf in self._gathers:
            torch.index_select(src, 0, idx, out=buf)

    @property
    def graph_safe(self) -> bool:
        """Whether :meth:`step` keeps all its state on the device (CUDA-graph replayable).

        The non-fused Adam computes its bias corrections from the host-side step count.
        """
        return self.kind == "sgd" or self._fused or self._compiled

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr_mult: float | torch.Tensor = 1.0) -> None:
        """One update of every candidate with lr ``lr * lr_mult``.

        ``lr_mult`` may be a 0-d tensor on the device (what a CUDA graph reads).
        """
        self.step_count += 1
        torch.mul(self.lr, lr_mult, out=self._lr_now)
        if self._gathers:
            self._refresh_gathers()
        all_grads = [p.grad for p in self.params]
        if all(g is not None for g in all_grads):  # the usual case: no per-step list building
            idx = range(len(self.params))
            params = self.params
            grads: list[torch.Tensor] = all_grads  # type: ignore[assignment]
        else:
            idx = [i for i, g in enumerate(all_grads) if g is not None]
            if not idx:
                return
            params = [self.params[i] for i in idx]
            grads = [g for g in all_grads if g is not None]
        decay_pos = [j for j, i in enumerate(idx) if i < self.n_decay]
        if self._any_decay and decay_pos and self.kind in ("adam", "sgd"):
            # L2 folded into the gradient, in place (the gradients are the step's own)
            torch._foreach_addcmul_([grads[j] for j in decay_pos], [params[j] for j in decay_pos],
                                    [self._wd_views[idx[j]] for j in decay_pos])
        if self._any_decay and decay_pos and self.kind == "adamw":
            torch.addcmul(torch.ones_like(self._lr_now), self._lr_now, self.weight_decay,
                          value=-1.0, out=self._shrink_now)
            if self._gathers:
                self._refresh_gathers()
            torch._foreach_mul_([params[j] for j in decay_pos],
                                [self._shrink_views[idx[j]] for j in decay_pos])
        names = [self.names[i] for i in idx]
        if self.kind == "sgd":
            torch.neg(self._lr_now, out=self._neg_lr_now)
            if self._gathers:
                self._refresh_gathers()
            bufs = [self.state[n]["momentum_buffer"] for n in names]
            if self.momentum > 0:
                torch._foreach_mul_(bufs, self.momentum)
                torch._foreach_add_(bufs, grads)
                torch._foreach_addcmul_(params, bufs, [self._neg_lr_views[i] for i in idx])
            else:
                torch._foreach_addcmul_(params, grads, [self._neg_lr_views[i] for i in idx])
            return
        b1, b2 = self.betas
        m = [self.state[n]["exp_avg"] for n in names]
        v = [self.state[n]["exp_avg_sq"] for n in names]
        t = self.step_count
        if self._compiled and self._compiled_step(params, grads, m, v, idx):
            return
        if self._fused:
            scratch = [self._scratch[i] for i in idx]
            self._step_t.add_(1.0)
            steps = [self._step_t] * len(scratch)  # the kernel only reads t
            torch._foreach_zero_(scratch)
            # scratch = -(1/bc1) m / (sqrt(v)/sqrt(bc2) + eps): Adam's update at lr = 1
            torch._fused_adam_(scratch, grads, m, v, [], steps, lr=1.0, beta1=b1, beta2=b2,
                               weight_decay=0.0, eps=self.eps, amsgrad=False, maximize=False)
            torch._foreach_addcmul_(params, scratch, [self._lr_views[i] for i in idx])
            return
        torch._foreach_lerp_(m, grads, 1.0 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, value=1.0 - b2)
        # w -= lr/bc1 * m / (sqrt(v/bc2) + eps), with sqrt(bc2) folded into the step size
        bc2_sqrt = math.sqrt(1.0 - b2**t)
        torch.mul(self._lr_now, -bc2_sqrt / (1.0 - b1**t), out=self._step_now)
        if self._gathers:
            self._refresh_gathers()
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, self.eps * bc2_sqrt)
        upd = torch._foreach_mul(m, [self._step_views[i] for i in idx])
        torch._foreach_addcdiv_(params, upd, denom)

    def _compiled_step(self, params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                       m: Sequence[torch.Tensor], v: Sequence[torch.Tensor],
                       idx: Sequence[int]) -> bool:
        """The compiled one-pass update; False (and the fused path from now on) if the
        compiler fails, before any tensor was changed."""
        global _compiled_adam_broken
        b1, b2 = self.betas
        kernel = _adam_kernel()
        self._step_t.add_(1.0)
        for j in range(len(idx)):
            # Every tensor as a plain (K, N) view: one compiled kernel serves every
            # parameter and population size (dynamo would otherwise compile per shape
            # pattern and per Parameter shape, and fall back to eager past its limit).
            k = params[j].shape[0]  # K, or a mixed layer's slice of it
            p, mm, vv = (t.view(k, -1) for t in (params[j], m[j], v[j]))
            lr = self._lr_views[idx[j]].reshape(k, 1)  # (K, 1)
            try:
                kernel(p, grads[j].reshape(k, -1), mm, vv, lr, self._step_t, b1, b2, self.eps)
            except Exception as exc:  # noqa: BLE001 - any compiler failure falls back
                if j > 0:
                    raise
                _compiled_adam_broken = True
                warnings.warn(f"compiling the optimizer failed ({exc!r:.200}); using torch's "
                              "fused Adam", RuntimeWarning, stacklevel=3)
                self._step_t.sub_(1.0)
                self._compiled = False
                self._fused = _fused_adam_supported(self.params)
                self._scratch = [torch.zeros_like(p) for p in self.params] if self._fused else []
                return False
        return True

    def keep(self, index: torch.Tensor | Sequence[int]) -> None:
        """Slice every per-candidate tensor with ``index``; call after ``net.keep(index)``."""
        index = torch.as_tensor(index, dtype=torch.long).to(self.lr.device)
        self.lr = self.lr.index_select(0, index)
        self.weight_decay = self.weight_decay.index_select(0, index)
        kept = index.tolist()
        old_positions = dict(zip(self.names, self._positions, strict=True))
        state: dict[str, dict[str, torch.Tensor]] = {}
        for name, st in self.state.items():
            pos = old_positions.get(name)
            if pos is None:
                local = index
            else:  # a mixed layer's slice: its own survivors, by their place in the slice
                rows = [pos.index(i) for i in kept if i in pos]
                if not rows:
                    continue  # the slice is gone
                local = torch.tensor(rows, dtype=torch.long, device=index.device)
            state[name] = {key: t.index_select(0, local) for key, t in st.items()}
        self.state = state
        self._bind()
