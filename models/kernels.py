"""Fused kernels for the costly trainable activations (rational, VAF, spline).

Their eager forms are chains of small elementwise ops whose autograd graphs read and
write the full ``(K, B, U)`` pre-activation dozens of times (a rational's Horner steps,
the broadcast coefficients' reductions), so one such activation costs up to 30 ReLUs.
``torch.compile`` (Inductor) fuses forward and backward into a few loops over the
elements and brings them within a small factor of a ReLU.

Compiling has a price (seconds per process and family, cached on disk by Inductor),
so it is switched on per population by the engine (:func:`compiling`) only where it
pays. Inside that block the no-grad passes (the per-epoch validation, curve sampling)
run compiled too: eagerly they cost more than the training steps (a spline layer's
validation pass 29-67 ms eager vs 2 ms compiled at K=64, 360 rows, 64 units); dynamo
compiles a second graph for no-grad mode, once per family and structure. Any failure
to compile disables compiling for the process and falls back to the reference, with
one warning; a kernel past dynamo's recompile limit falls back alone.

``ACTSEARCH_COMPILE``: ``auto`` (default: the engine decides), ``1``/``on`` (always
compile trainable kernels), ``0``/``off`` (never).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

_state = threading.local()
_compiled: dict[Callable[..., Any], Callable[..., Any]] = {}
_broken = False
_failed: set[Callable[..., Any]] = set()  # kernels that hit dynamo's recompile limit
_warm: set[str] = set()  # kernels this process has compiled already (see _slice_keys)
# When compiling pays on CPU: when the eager seconds it saves over the work it will do
# (activation elements x steps of the fused layers: K x rows x epochs x units, times the
# coordinator's ``horizon``: how many such populations this process is expected to train)
# exceed the compile's own CPU seconds, PAYBACK times over. Figures: bench/README.md
# "Compile time" (bench/compile_time.py, 2-core EPYC VM, torch 2.13, CPU seconds of the
# process and its compile workers, K=8, digits mlp:64,64):
# * saved: eager rational/VAF/spline cost ~12-25 ns per element fwd+bwd, compiled ~2
#   (bench/mixed.py); 18 ns is the conservative end (whole populations: 50-120 ns);
# * a process's first compile starts Inductor (its imports, compile workers) and compiles
#   the no-grad graphs of validation and curve sampling too: ~5 s (a VAF population of 4
#   on digits, 2 epochs, curves recorded: 27 s with an empty cache, 11 s from disk,
#   against 0.75 s eager and 0.72 s for ReLU, load average 3);
# * a family with nothing in the on-disk cache: vaf 8.6, rational ~17, spline 24 s;
#   with its kernels in :func:`configure_compile_cache`'s directory: 1.2-2.3 s;
# * a family compiled earlier in the process costs nothing more (rational, vaf: their
#   kernels are shape-generic), except SHAPE_SPECIALISED ones, compiled again for each
#   slice size k (spline at K=16 after K=8: 26 s cold, 2 s from disk).
CPU_SAVED_S_PER_ELEMENT = 1.8e-8
CPU_COMPILE_S_START = 5.0
CPU_COMPILE_S_COLD = 15.0
CPU_COMPILE_S_DISK = 2.0
PAYBACK = 1.0
SHAPE_SPECIALISED = frozenset({"spline"})
# the least work one cold family pays back in one population: 1.1e9 elements
CPU_COMPILE_MIN_WORK = PAYBACK * (CPU_COMPILE_S_START + CPU_COMPILE_S_COLD) / CPU_SAVED_S_PER_ELEMENT


# ----- the on-disk compile cache ------------------------------------------------------------
_cache_dir: Path | None = None


def configure_compile_cache(directory: str | os.PathLike[str]) -> Path:
    """Keep torch's compiled-kernel caches under ``directory`` (e.g. ``ACTSEARCH_HOME/compile``).

    Inductor's FX-graph cache and AOTAutograd's cache (both on by default in torch 2.13)
    write to ``TORCHINDUCTOR_CACHE_DIR``, by default ``/tmp/torchinductor_<user>``: lost
    with a container's ``/tmp`` and not shared by workers that share a home. A second
    process that finds a family's kernels there skips Inductor's code generation and C++
    compile and only re-traces (dynamo), which is most of the saving (figures:
    bench/README.md). Call it before the first population of the process; an explicit
    ``TORCHINDUCTOR_CACHE_DIR`` in the environment wins. Returns the directory in use.

    Cheap: it sets the environment only; the caches' switches are set on the first
    compile (importing ``torch._inductor.config`` costs ~1 s, and most processes never
    compile: a ReLU search's first epoch must not wait for it).
    """
    global _cache_dir, _cache_switches_pending
    root = Path(directory).expanduser()
    inductor = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or root / "inductor")
    inductor.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor)
    _cache_dir = root
    root.mkdir(parents=True, exist_ok=True)
    _cache_switches_pending = True
    if "torch._inductor.config" in sys.modules:
        _enable_cache_switches()
    return inductor


_cache_switches_pending = False


def _enable_cache_switches() -> None:
    """Inductor's FX-graph cache and AOTAutograd's cache on (torch 2.13's defaults, made sure)."""
    global _cache_switches_pending
    _cache_switches_pending = False
    try:
        import torch._functorch.config as functorch_config
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
        functorch_config.enable_autograd_cache = True
    except (ImportError, AttributeError):  # an older torch: the directory still applies
        pass


def _marker(key: str) -> Path | None:
    return None if _cache_dir is None else _cache_dir / "warm" / key


def disk_warm(key: str) -> bool:
    """Whether a process with this cache directory compiled these kernels before
    (``key``: a family, or ``family@k<k>`` for a SHAPE_SPECIALISED one)."""
    marker = _marker(key)
    return marker is not None and marker.exists()


def slice_keys(families: Iterable[str] = (),
               slices: Iterable[tuple[str, int]] | None = None) -> set[str]:
    """What identifies a population's compiled kernels: its fused families, with the slice
    size k for a family whose kernels are compiled per k (SHAPE_SPECIALISED)."""
    keys = set(families)
    for name, k in slices or ():
        keys.discard(name)
        keys.add(f"{name}@k{int(k)}" if name in SHAPE_SPECIALISED else name)
    return keys


def save_cache_artifacts(path: str | os.PathLike[str]) -> bool:
    """Write this process's compiled artifacts (torch's mega-cache) to one file, for a
    machine that does not share the cache directory; False when torch has none."""
    save = getattr(getattr(torch, "compiler", None), "save_cache_artifacts", None)
    if save is None:
        return False
    out = save()
    if out is None:
        return False
    Path(path).write_bytes(out[0])
    return True


def load_cache_artifacts(path: str | os.PathLike[str]) -> bool:
    """Load a file written by :func:`save_cache_artifacts` (before the first compile)."""
    load = getattr(getattr(torch, "compiler", None), "load_cache_artifacts", None)
    p = Path(path)
    if load is None or not p.exists():
        return False
    load(p.read_bytes())
    return True


def compile_setting() -> str:
    """``"auto"``, ``"on"`` or ``"off"`` from ``ACTSEARCH_COMPILE``."""
    value = os.environ.get("ACTSEARCH_COMPILE", "auto").strip().lower()
    if value in ("1", "on", "true", "yes"):
        return "on"
    if value in ("0", "off", "false", "no"):
        return "off"
    return "auto"


def compile_available() -> bool:
    """Whether ``torch.compile`` is usable here (and has not failed in this process)."""
    return not _broken and hasattr(torch, "compile")


def should_compile(device: torch.device, work: float, families: Iterable[str] = (), *,
                   slices: Iterable[tuple[str, int]] | None = None,
                   horizon: float = 1.0) -> bool:
    """The engine's choice for one population.

    ``work``: activation elements x steps of its fused layers (K x rows x epochs x units);
    ``families``: its fused families; ``slices``: (family, k) of each fused slice (a
    SHAPE_SPECIALISED family's kernels depend on k); ``horizon``: populations of this much
    work with these families the process expects to train (the embedded coordinator
    counts its search's pending ones; compiled kernels stay in a warm trainer). On CPU,
    ``auto`` compiles when nothing is left to compile in this process, or when the
    eager seconds ``work x horizon`` would save pay back :func:`compile_seconds`
    (``PAYBACK`` times). Always on CUDA.
    """
    setting = compile_setting()
    if setting == "off" or not compile_available():
        return False
    if setting == "on":
        return True
    if device.type == "cuda":
        return True
    keys = slice_keys(families, slices)
    cost = compile_seconds(keys)
    if keys and cost == 0.0:
        return True
    return work * max(1.0, horizon) * CPU_SAVED_S_PER_ELEMENT >= PAYBACK * cost


def compile_seconds(keys: Iterable[str]) -> float:
    """Estimated CPU seconds to compile these kernels (:func:`slice_keys`) in this process
    now: 0 for those compiled already, the disk-cache figure for those a previous process
    compiled into :func:`configure_compile_cache`'s directory, else the cold figure; plus
    Inductor's start-up in a process that has compiled nothing yet."""
    missing = set(keys) - _warm
    total = sum(CPU_COMPILE_S_DISK if disk_warm(key) else CPU_COMPILE_S_COLD for key in missing)
    if missing and not _warm:
        total += CPU_COMPILE_S_START
    return total


def mark_warm(keys: Iterable[str]) -> None:
    """Record that these kernels (:func:`slice_keys`) have been compiled in this process
    (and, with a cache directory, on disk, for the next process's :func:`should_compile`)."""
    if _broken:
        return
    names = set(keys)
    _warm.update(names)
    for name in names:
        marker = _marker(name)
        if marker is not None:
            try:
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
            except OSError:  # a read-only cache is still a cache
                pass


@contextlib.contextmanager
def compiling(enabled: bool) -> Iterator[None]:
    """Within this block, :func:`fused` kernels run compiled (when ``enabled``)."""
    previous = getattr(_state, "enabled", False)
    _state.enabled = bool(enabled)
    try:
        yield
    finally:
        _state.enabled = previous


# Each structural variant of a family (a VAF's width and depth, a rational's degrees)
# is its own graph, in grad and in no-grad mode: dynamo's default limit of 8 graphs per
# function would send a long-lived worker's kernels back to eager after a few variants.
RECOMPILE_LIMIT = 64


def active() -> bool:
    """True inside ``compiling(True)`` (unless compiling failed in this process)."""
    return bool(getattr(_state, "enabled", False)) and not _broken


def _raise_recompile_limit() -> None:
    config = getattr(getattr(torch, "_dynamo", None), "config", None)
    if config is not None and getattr(config, "recompile_limit", RECOMPILE_LIMIT) < RECOMPILE_LIMIT:
        config.recompile_limit = RECOMPILE_LIMIT


def fused(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Wrap a pure tensor function: compiled inside :func:`compiling`, eager elsewhere."""

    def call(*args: Any) -> torch.Tensor:
        global _broken
        if not active() or fn in _failed:
            return fn(*args)
        compiled = _compiled.get(fn)
        if compiled is None:
            if _cache_switches_pending:
                _enable_cache_switches()
            _raise_recompile_limit()
            compiled = torch.compile(fn, dynamic=True, fullgraph=True)
            _compiled[fn] = compiled
        # Parameters reach the compiled function as plain views: dynamo keeps a
        # Parameter's shape static, which would recompile for every population size K.
        args = tuple(a.view_as(a) if isinstance(a, torch.nn.Parameter) else a for a in args)
        try:
            return compiled(*args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back
            # One kernel past dynamo's recompile limit (many shapes in one long-lived
            # process) falls back alone; any other failure means no compiler here.
            if "RecompileLimit" in type(exc).__name__:
                _failed.add(fn)
            else:
                _broken = True
            warnings.warn(f"torch.compile failed for {fn.__name__} ({exc!r:.200}); "
                          "using its eager kernel", RuntimeWarning, stacklevel=2)
            return fn(*args)

    call.reference = fn  # type: ignore[attr-defined]
    call.__name__ = getattr(fn, "__name__", "kernel")
    call.__doc__ = fn.__doc__
    return call
