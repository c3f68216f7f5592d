"""What one candidate of a family costs relative to a ReLU candidate, measured here.

Some structures cannot be made as cheap as ReLU: a depth-3 VAF of width 6 does about
as many multiply-adds per element as the 64-wide linear layer before it, in small
elementwise or W x W pieces that run far below GEMM speed. The planner charges such
candidates their cost (a population slot, a budget share) instead of pretending
they are free. The figure is measured on the device, not taken from a table: a
population's forward and backward for K candidates of the family, over the same step
with ReLU, fastest of a few repeats, cached per process by family, structural
parameters and shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from . import kernels
from .activations import get_activation
from .network import PopulationNet, _structural
from .sizing import tune_cpu
from .spec import ArchSpec

_cache: dict[tuple[Any, ...], float] = {}


def _step_seconds(family: str, act_params: Mapping[str, Any], arch: ArchSpec, n_inputs: int,
                  rows: int, k: int, device: torch.device, compiled: bool, repeats: int) -> float:
    """Median seconds of one forward + backward of a K-candidate population of ``family``."""
    net = PopulationNet(arch, family, [dict(act_params)] * k, n_inputs, 10).to(device)
    x = torch.randn(rows, n_inputs, device=device)
    y = torch.randint(0, 10, (rows,), device=device)
    sync: Callable[[], None] = (torch.cuda.synchronize if device.type == "cuda" else lambda: None)

    def step() -> None:
        out = net(x)  # (K, B, 10)
        loss = F.cross_entropy(out.transpose(1, 2), y.expand(k, rows))
        loss.backward()

    with kernels.compiling(compiled):
        for _ in range(3):  # warm-up (and the compile, when compiled)
            step()
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
    return min(times)  # the least-disturbed run: a shared machine only adds time


def candidate_cost(
    family: str,
    act_params: Mapping[str, Any] | None = None,
    *,
    arch: ArchSpec | None = None,
    n_inputs: int = 64,
    rows: int = 128,
    k: int = 16,
    device: str | torch.device = "cpu",
    compiled: bool | None = None,
    repeats: int = 5,
) -> float:
    """Seconds per training step of a candidate of ``family`` over a ReLU candidate's.

    Measured as one forward and backward (no optimizer step: the same for every family)
    of a ``k``-candidate population of ``arch`` (default ``mlp:64,64``) on ``rows``
    random rows of ``n_inputs`` features, over the same step of a ReLU population.
    ``compiled``: run the family's fused kernel compiled (default: when the family has
    one and compiling is available), as a large population would. Only structural
    parameters change the cost, so results are cached per structure and shape.
    """
    cls = get_activation(family)
    params = dict(act_params or {})
    use_compile = (bool(getattr(cls, "fused", False)) and kernels.compile_available()
                   and kernels.compile_setting() != "off") if compiled is None else compiled
    dev = torch.device(device)
    arch = arch if arch is not None else ArchSpec(hidden=[64, 64])
    key = (cls.name, tuple(sorted(_structural(cls, params).items())), repr(arch), n_inputs, rows,
           k, str(dev), use_compile)
    if dev.type == "cpu":
        tune_cpu()  # the engine's allocator and thread settings
    if key not in _cache:
        # alternated rounds, fastest of each: the first steps of a process (allocator,
        # thread pool) and another process's load spike hit one round, not one side
        mine = relu = float("inf")
        for _ in range(3):
            relu = min(relu, _step_seconds("relu", {}, arch, n_inputs, rows, k, dev, False, repeats))
            mine = min(mine, _step_seconds(cls.name, params, arch, n_inputs, rows, k, dev,
                                           use_compile, repeats))
        _cache[key] = mine / relu
    return _cache[key]
