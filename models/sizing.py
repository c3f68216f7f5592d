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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .spec import ArchSpec

if TYPE_CHECKING:  # torch is imported by the functions that need it: sizing a search's
    # populations (its coordinator, before anything trains) is arithmetic
    import torch

    from .network import ActParams, PopulationNet

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
    import torch

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


# ----------------------------------------------------------------------------- estimates
#
# What a candidate needs, from the spec alone: nothing is built (sizing mlp:8192 x 16 by
# building it would itself allocate 4 GB). Per family, the worst case of its structural
# parameters: maxout's k widens the layer producing the pre-activation, crelu doubles the
# layer after it, per-unit trainable units add parameters per unit, and some units save
# more than one tensor per element for the backward pass (a VAF its inner network).

#: Largest pre-activation width per output unit (maxout: k up to 4).
_PRE_FACTOR = {"maxout": 4}
#: Largest post-activation width per output unit (crelu: 2).
_POST_FACTOR = {"crelu": 2}
#: Parameters per unit of a per-unit trainable family at its largest structural values
#: (vaf: width 16, depth 3: 2W + (d-1)(W^2 + W) + W + 1; spline: grid 16 + 3 + 2; ...).
_UNIT_PARAMS = {"vaf": 593, "spline": 21, "rational": 12, "apl": 12, "affine": 4,
                "agsig": 2, "frelu": 2, "prelu": 1}
#: Elements each pre-activation element keeps for the backward pass, beyond the two
#: every layer keeps (vaf: its W x depth inner activations and their inputs; spline: its
#: 4 non-zero basis weights, their coefficients and indices, and the intermediates;
#: measured, see tests/models/test_sizing.py).
_SAVED_PER_ELEMENT = {"vaf": 96, "spline": 24, "rational": 12, "apl": 12, "affine": 4, "crelu": 3,
                      "k_wta": 2, "groupsort": 2}
#: Bytes per float32 parameter while training: value, gradient, Adam's two moments.
_PARAM_COPIES = 4
_FLOAT = 4


@dataclass(frozen=True)
class CandidateEstimate:
    """One candidate's size and training memory, estimated from the spec.

    Attributes:
        params: trainable parameters (weights, biases, norm affine, activation units).
        elements_per_row: activation elements one row keeps for the backward pass.
        flops_per_row: forward FLOPs of one row (2 per multiply-add).
        batch_size: rows per step the estimate is for.
    """

    params: int
    elements_per_row: int
    flops_per_row: int
    batch_size: int

    @property
    def training_bytes(self) -> int:
        """Parameters with gradient and Adam state, plus the batch's saved activations
        and their gradients."""
        return _FLOAT * (_PARAM_COPIES * self.params + 2 * self.batch_size * self.elements_per_row)

    def population_bytes(self, k: int) -> int:
        """K candidates trained together (each has its own weights and activations)."""
        return k * self.training_bytes


def estimate_candidate(arch: ArchSpec, families: str | Sequence[str], n_inputs: int,
                       n_outputs: int, batch_size: int) -> CandidateEstimate:
    """A candidate's parameters, saved activations and FLOPs, worst case over ``families``.

    A pure function of the spec (nothing is allocated), so the service can refuse a
    spec that cannot fit before anything is built, and :func:`auto_population_size`
    can size K without building a network. Tested against networks it builds (small
    ones) to stay within a factor of what they really hold.
    """
    names = [families] if isinstance(families, str) else list(families)
    pre_f = max(_PRE_FACTOR.get(f, 1) for f in names)
    post_f = max(_POST_FACTOR.get(f, 1) for f in names)
    unit_params = max(_UNIT_PARAMS.get(f, 0) for f in names)
    saved = max(_SAVED_PER_ELEMENT.get(f, 0) for f in names)
    norm = 2 if arch.norm != "none" else 0
    params = elements = flops = 0

    def layer(width: int, fan_in: int, positions: int) -> int:
        """Count one hidden layer of ``width`` output units; returns its output width."""
        nonlocal params, elements, flops
        pre, post = width * pre_f, width * post_f
        params += fan_in * pre + pre + norm * pre + unit_params * pre
        # kept per position: the layer's output (and the norm's), the activation's
        # output, and what the activation itself saves
        elements += positions * (pre * (1 + (1 if norm else 0) + saved) + post)
        flops += positions * pre * (2 * fan_in + 1 + max(1, saved))
        return post

    if arch.kind == "cnn" and arch.input_shape is not None:
        c_in, h, w = arch.input_shape
        kk = arch.kernel * arch.kernel
        for channels in arch.conv_channels:
            c_in = layer(channels, c_in * kk, h * w)
            h, w = h // arch.pool, w // arch.pool
        n_in = c_in * h * w
    else:
        n_in = n_inputs
    for width in arch.hidden:
        n_in = layer(width, n_in, 1)
    params += n_in * n_outputs + n_outputs
    elements += 2 * n_outputs
    flops += 2 * n_in * n_outputs
    return CandidateEstimate(params=params, elements_per_row=max(1, elements),
                             flops_per_row=flops, batch_size=batch_size)


def largest_population_within(arch: ArchSpec, families: str | Sequence[str], n_inputs: int,
                              n_outputs: int, batch_size: int, budget_bytes: int) -> int:
    """The largest power-of-two K whose estimated training memory fits ``budget_bytes``
    (at least 1: whether one candidate fits is checked when the search is submitted)."""
    per = estimate_candidate(arch, families, n_inputs, n_outputs, batch_size).training_bytes
    return max(1, _pow2_floor(budget_bytes / max(1, per)))


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
    memory_budget_bytes: int | None = None,
) -> int:
    """The K that saturates ``device`` for this architecture and batch size.

    CPU: the smallest power of two whose step holds ``CPU_STEP_FLOPS_PER_THREAD`` FLOPs
    per thread (forward + backward = 3x :meth:`PopulationNet.count_flops` per row),
    at most ``CPU_MAX_K``. CUDA: the smallest power of two whose widest layer holds
    ``GPU_STEP_ELEMENTS`` activation elements per step, at most ``GPU_MAX_K``. Both are
    capped so the population uses at most half the free memory (``memory_bytes``
    overrides what is detected) and at most ``memory_budget_bytes`` (the service's
    training memory budget). Sized from :func:`estimate_candidate`: no network is built.
    The search may use fewer (trials per family). ``act_params`` is accepted for the
    callers' convenience; the estimate takes each family's worst case.
    """
    del act_params
    est = estimate_candidate(arch, family, n_inputs, n_outputs, batch_size)
    return _saturating_k(arch, device, est.flops_per_row, est.training_bytes,
                         batch_size, n_outputs, threads, memory_bytes, memory_budget_bytes)


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
    memory_budget_bytes: int | None = None,
) -> int:
    """K for a (possibly mixed) population: what the device saturates, not trials per family.

    ``families_mix``: the candidates the population will hold, as family names or
    ``(family, act_params)`` pairs, in their expected proportions (e.g. one entry per
    family of the search; duplicates weight a family). They must share one
    :func:`models.populations.population_key`. The step's work is the mix's mean FLOPs
    per candidate and its memory the mix's largest candidate (both from
    :func:`estimate_candidate`: no network is built), with the rule of
    :func:`auto_population_size`.
    """
    names = [e if isinstance(e, str) else e[0] for e in (families_mix or ("relu",))]
    ests = {f: estimate_candidate(arch, f, n_inputs, n_outputs, batch_size) for f in set(names)}
    flops = sum(ests[f].flops_per_row for f in names) / len(names)
    per_candidate = max(e.training_bytes for e in ests.values())
    return _saturating_k(arch, device, flops, per_candidate, batch_size,
                         n_outputs, threads, memory_bytes, memory_budget_bytes)


def torch_threads() -> int:
    """``torch.get_num_threads()``, without importing torch for it.

    With torch imported, its answer; else what torch's default would be: a positive
    ``MKL_NUM_THREADS``, else ``OMP_NUM_THREADS``, at most the machine's CPUs; else its
    physical cores (torch's ``intraop_default_num_threads``; tests/models/test_catalogue.py
    checks it against torch on the machine it runs on).
    """
    if "torch" in sys.modules:
        return int(sys.modules["torch"].get_num_threads())
    threads = 0
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # MKL's overrides OpenMP's
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            threads = int(value)
    if threads:
        return min(threads, os.cpu_count() or threads)
    return physical_cores()


def physical_cores() -> int:
    """Physical cores of the machine (all of them, as cpuinfo counts: not the affinity)."""
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            package = core = ""
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "physical id":
                    package = value
                elif key == "core id":
                    core = value
                elif not key and core:
                    cores.add((package, core))
                    package = core = ""
            if core:
                cores.add((package, core))
    except OSError:
        pass
    return len(cores) or max(1, os.cpu_count() or 1)


def auto_device() -> str:
    """``"cuda:0"`` when torch sees a GPU, else ``"cpu"`` (what ``device="auto"`` means).

    On a machine without a GPU device node (NVIDIA's ``/dev/nvidia*``, ROCm's
    ``/dev/kfd``), or with ``CUDA_VISIBLE_DEVICES`` empty, torch cannot see one: the
    answer is ``"cpu"`` without importing torch (a coordinator sizing its populations
    before anything trains). Elsewhere torch is asked.
    """
    if "torch" not in sys.modules:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        nodes = any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/kfd").exists()
        if (visible is not None and visible.strip() in ("", "-1")) or not nodes:
            return "cpu"
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _device_type(device: str | torch.device) -> str:
    return device.split(":", 1)[0] if isinstance(device, str) else device.type


def _saturating_k(arch: ArchSpec, device: str | torch.device, flops_per_row: float,
                  per_candidate: int, batch_size: int, n_outputs: int, threads: int | None,
                  memory_bytes: int | None, memory_budget_bytes: int | None) -> int:
    cuda = False
    if _device_type(device) == "cuda":
        import torch

        cuda = torch.cuda.is_available()
    if cuda:
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        budget = memory_bytes if memory_bytes is not None else free
        widest = max([*arch.conv_channels, *arch.hidden, n_outputs])
        k = min(_pow2_ceil(GPU_STEP_ELEMENTS / max(1, batch_size * widest)), GPU_MAX_K)
    else:
        budget = memory_bytes if memory_bytes is not None else _available_ram()
        n_threads = threads if threads is not None else torch_threads()
        step_flops = 3 * flops_per_row * batch_size
        k = min(_pow2_ceil(CPU_STEP_FLOPS_PER_THREAD * n_threads / max(1.0, step_flops)),
                CPU_MAX_K)
    room = 0.5 * budget
    if memory_budget_bytes is not None:
        room = min(room, float(memory_budget_bytes))
    k_mem = _pow2_floor(room / max(1, per_candidate))
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
