"""Machine settings for the engine and how many candidates (K) a device trains at once.

* :func:`tune_cpu`: intra-op threads (default: the cores this process may use), one
  inter-op thread, and glibc's allocator told to keep freed blocks (a population's
  multi-megabyte activations are otherwise returned to the kernel after every op and
  page-faulted back in on the next: measured 10-15% of a CPU step).
* :func:`auto_population_size`: the K at which one step has enough work to saturate
  the device (CPU: about 2 ms of matmul per thread; GPU: enough rows x units to fill
  the SMs), capped by the memory the population would need.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .network import ActParams, PopulationNet
from .spec import ArchSpec

_tuned = False
# glibc mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# CPU: per-step matmul work per thread at which throughput stops growing with K.
# Measured (python -m bench.engine, digits, batch 128, 2 idle cores): mlp:64,64 relu
# grows up to K=64 (6.8e6 FLOP per candidate-step); mlp:256,256 (6.5e7) gave
# K=8 78, K=16 137, K=32 145, K=64 145 candidate-epochs/s (rational and VAF alike),
# so saturation needs ~1e9 FLOP per thread per step: 2e8 had chosen K=8 there.
CPU_STEP_FLOPS_PER_THREAD = 1.0e9
CPU_MAX_K = 64
# GPU: elements of the widest layer's activations per step that fill an H100-class GPU.
GPU_STEP_ELEMENTS = 1 << 23
GPU_MAX_K = 1024


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _tune_malloc() -> bool:
    if os.environ.get("ACTSEARCH_MALLOC_TUNING", "1").strip().lower() in ("0", "off", "false", "no"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1
        ok = libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31) == 1 and ok
        return ok
    except (OSError, AttributeError):  # not glibc
        return False


def tune_cpu(threads: int | None = None) -> dict[str, int | bool]:
    """Thread and allocator settings for CPU training; returns what is in force.

    ``threads``: intra-op threads (``None`` leaves torch's setting, whose default is
    the physical cores, unless ``ACTSEARCH_THREADS`` says otherwise). The inter-op pool
    is set to one thread where torch still allows it (the engine has no inter-op work).
    The allocator tuning happens once per process.
    """
    global _tuned
    env = os.environ.get("ACTSEARCH_THREADS")
    if threads is None and env:
        threads = int(env)
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    malloc = False
    if not _tuned:
        _tuned = True
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already started: leave it
            pass
        malloc = _tune_malloc()
    return {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "malloc_tuned": malloc}


def _pow2_floor(n: float) -> int:
    return 1 if n < 2 else 1 << int(math.floor(math.log2(n)))


def _pow2_ceil(n: float) -> int:
    return 1 if n <= 1 else 1 << int(math.ceil(math.log2(n)))


def candidate_bytes(net: PopulationNet, batch_size: int) -> int:
    """Memory one candidate needs while training: parameters with their gradient, Adam's
    two moments and the update scratch (5 copies), plus about three saved activations
    per element of a batch."""
    return 4 * (5 * net.count_params() + 3 * batch_size * net.elements_per_row())


def auto_population_size(
    arch: ArchSpec,
    family: str | Sequence[str],
    act_params: ActParams,
    n_inputs: int,
    n_outputs: int,
    batch_size: int,
    device: str | torch.device = "cpu",
    *,
    threads: int | None = None,
    memory_bytes: int | None = None,
) -> int:
    """The K that saturates ``device`` for this architecture and batch size.

    CPU: the smallest power of two whose step holds ``CPU_STEP_FLOPS_PER_THREAD`` FLOPs
    per thread (forward + backward = 3x :meth:`PopulationNet.count_flops` per row),
    at most ``CPU_MAX_K``. CUDA: the smallest power of two whose widest layer holds
    ``GPU_STEP_ELEMENTS`` activation elements per step, at most ``GPU_MAX_K``. Both are
    capped so the population uses at most half the free memory (``memory_bytes``
    overrides what is detected). The search may use fewer (trials per family).
    """
    net = PopulationNet(arch, family, [act_params], n_inputs, n_outputs)
    return _saturating_k(net, torch.device(device), net.count_flops(), candidate_bytes(net, batch_size),
                         batch_size, n_outputs, threads, memory_bytes)


MixEntry = str | tuple[str, Mapping[str, Any]]


def population_size(
    arch: ArchSpec,
    n_inputs: int,
    n_outputs: int,
    batch_size: int,
    device: str | torch.device = "cpu",
    families_mix: Sequence[MixEntry] = ("relu",),
    *,
    threads: int | None = None,
    memory_bytes: int | None = None,
) -> int:
    """K for a (possibly mixed) population: what the device saturates, not trials per family.

    ``families_mix``: the candidates the population will hold, as family names or
    ``(family, act_params)`` pairs, in their expected proportions (e.g. one entry per
    family of the search; duplicates weight a family). They must share one
    :func:`models.populations.population_key`. The step's work is the mix's mean FLOPs
    per candidate (activation FLOPs included) and its memory the mix's largest
    candidate, with the same rule as :func:`auto_population_size` (CPU: about
    ``CPU_STEP_FLOPS_PER_THREAD`` per thread per step, at most ``CPU_MAX_K``; CUDA:
    ``GPU_STEP_ELEMENTS`` activation elements, at most ``GPU_MAX_K``; at most half the
    free memory).
    """
    if not families_mix:
        families_mix = ("relu",)
    entries = [(e, {}) if isinstance(e, str) else (e[0], dict(e[1])) for e in families_mix]
    distinct = {(f, repr(sorted(p.items()))): (f, p) for f, p in entries}
    nets = {key: PopulationNet(arch, f, [p], n_inputs, n_outputs) for key, (f, p) in distinct.items()}
    keys = [(f, repr(sorted(p.items()))) for f, p in entries]
    flops = sum(nets[key].count_flops() for key in keys) / len(keys)
    per_candidate = max(candidate_bytes(net, batch_size) for net in nets.values())
    any_net = next(iter(nets.values()))
    return _saturating_k(any_net, torch.device(device), flops, per_candidate, batch_size,
                         n_outputs, threads, memory_bytes)


def _saturating_k(net: PopulationNet, dev: torch.device, flops: float, per_candidate: int,
                  batch_size: int, n_outputs: int, threads: int | None,
                  memory_bytes: int | None) -> int:
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(dev)
        budget = memory_bytes if memory_bytes is not None else free
        widest = max([info.pre for info in net.layers] + [n_outputs])
        k = min(_pow2_ceil(GPU_STEP_ELEMENTS / max(1, batch_size * widest)), GPU_MAX_K)
    else:
        budget = memory_bytes if memory_bytes is not None else _available_ram()
        n_threads = threads if threads is not None else torch.get_num_threads()
        step_flops = 3 * flops * batch_size
        k = min(_pow2_ceil(CPU_STEP_FLOPS_PER_THREAD * n_threads / max(1.0, step_flops)), CPU_MAX_K)
    k_mem = _pow2_floor(0.5 * budget / max(1, per_candidate))
    return max(1, min(k, k_mem))


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30
