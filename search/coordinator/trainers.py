"""Warm training processes that outlive one search: the pool and its children.

A training child (:mod:`.child`) imports torch once, keeps the datasets it was sent
(by key) and the kernels it compiled, and trains population after population. A
:class:`TrainerPool` owns ``workers`` such children; whoever hosts the pool decides how
long they live:

* ``actsearch search`` / ``actsearch.search()``: the :class:`~.local.EmbeddedCoordinator`
  makes its own pool, started before the coordinator's own imports and database work so
  torch imports in the child while the parent gets ready, and closes it with the search;
* ``actsearch serve``'s runner keeps one pool for its whole life: a second search on the
  same data sends nothing big again and finds its kernels compiled.

Datasets are cached in each child by :attr:`search.service.PreparedData.key` (the
database, the dataset and the split parameters: what the prepared tensors depend on),
within ``ACTSEARCH_TRAINING__DATA_CACHE_MB``. The parent owns the policy: it mirrors
what each child holds, sends a dataset only when the child lacks it, and tells the
child which to drop (least recently used first), so the two never disagree.

A child that dies (killed, out of memory) is replaced in place by a fresh process the
next time it is needed; the population it was training fails alone.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.settings import TrainingSettings, get_settings

from .child import EvaluateJob, PopulationJob, worker_main

if TYPE_CHECKING:
    from .steps import Prepared

CHILD_START_TIMEOUT_S = 300.0  # spawn + torch import, on a loaded machine


def default_threads(workers: int) -> int:
    """Torch threads per child: the machine's cores shared evenly."""
    return max(1, (os.cpu_count() or 1) // workers)


def tensor_nbytes(data: Any) -> int:
    """Bytes of a TensorData's four arrays (numpy or torch)."""
    total = 0
    for name in ("X_train", "y_train", "X_val", "y_val"):
        a = getattr(data, name, None)
        nbytes = getattr(a, "nbytes", None)
        if nbytes is None and a is not None and hasattr(a, "element_size"):
            nbytes = a.element_size() * a.numel()
        total += int(nbytes or 0)
    return total


@contextmanager
def _without_main_module() -> Iterator[None]:
    """Spawn without re-running the parent's ``__main__`` in the child.

    ``multiprocessing``'s spawn re-imports the parent's main script in every child (for
    the ``actsearch`` console script: the whole CLI, typer and rich) so that functions
    defined there can be unpickled. A training child needs nothing from ``__main__``
    (its entry point and messages live in importable modules), so hiding the main
    module's path and spec while the child starts saves that import, on the critical
    path to the first epoch.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


@dataclass
class TrainerStats:
    """What a pool did (read by tests and the timings): processes started, datasets sent."""

    started: int = 0
    data_sent: int = 0
    data_dropped: int = 0


class _Child:
    """One warm training process and its pipe; restarted in place if it dies.

    ``held`` mirrors the datasets the process holds (key -> bytes, least recently used
    first); it is reset with the process.
    """

    def __init__(self, threads: int, training: TrainingSettings, *,
                 compile_dir: Path | None = None, stats: TrainerStats | None = None,
                 cache_bytes: int | None = None) -> None:
        self.threads = threads
        self.training = training
        self.compile_dir = compile_dir
        self.stats = stats if stats is not None else TrainerStats()
        self.cache_bytes = (training.data_cache_mb << 20) if cache_bytes is None else cache_bytes
        self.job: Prepared | None = None
        self.sent_at = 0.0  # monotonic time the running job was sent
        self.held: OrderedDict[str, int] = OrderedDict()
        self.start()

    def start(self) -> None:
        """Spawn a fresh process (without waiting for it: see :meth:`wait_ready`)."""
        ctx = mp.get_context("spawn")  # fork after torch/sqlite initialised is unsafe
        self.conn, child_end = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=worker_main,
            args=(child_end, self.threads, self.training.nice, self.training.memory_limit_mb),
            kwargs={"compile_dir": str(self.compile_dir) if self.compile_dir else None},
            daemon=True)
        with _without_main_module():
            self.process.start()
        child_end.close()
        self.stats.started += 1
        self.job = None
        self.held = OrderedDict()
        self._ready = False

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def wait_ready(self, timeout_s: float = CHILD_START_TIMEOUT_S) -> None:
        """Wait for the child's "ready" (torch imported), so time limits count training only."""
        if self._ready:
            return
        if not self.conn.poll(timeout_s):
            raise RuntimeError(f"training process not ready after {timeout_s:g} s")
        try:
            kind, _ = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(timeout=5)
            raise RuntimeError("training process exited while starting "
                               f"(exit code {self.process.exitcode})") from None
        if kind != "ready":
            raise RuntimeError(f"training process sent {kind!r} before 'ready'")
        self._ready = True

    # ----- the dataset cache ------------------------------------------------------------
    def ensure_data(self, key: str, data: Any) -> bool:
        """Make the child hold ``data`` under ``key``; True when it had to be sent."""
        if key in self.held:
            self.held.move_to_end(key)
            return False
        size = tensor_nbytes(data)
        # Room first (the new one stays even alone above the bound: it is needed now).
        while self.held and sum(self.held.values()) + size > self.cache_bytes:
            old, _ = self.held.popitem(last=False)
            self.conn.send(("drop", old))
            self.stats.data_dropped += 1
        self.conn.send(("data", (key, data)))
        self.held[key] = size
        self.stats.data_sent += 1
        return True

    def send(self, job: Prepared) -> None:
        key = job.data.key or f"object-{id(job.data)}"
        self.ensure_data(key, job.data.tensor_data())
        self.job = job
        self.sent_at = time.monotonic()
        c = job.claimed
        family = None if c.mixed else c.family  # a mixed population's candidates name theirs
        self.conn.send(("train", PopulationJob(c.spec.arch_spec().to_dict(), family,
                                               job.candidates, job.config, data_key=key)))

    def evaluate(self, arch: Any, family: str, act_params: dict[str, Any],
                 state_dict: dict[str, Any], X: Any, y: Any, n_outputs: int, task: str) -> float:
        """One trained candidate's metric on ``(X, y)``, computed by this (idle) child:
        :data:`.scoring.Evaluator`, for a coordinator that never imports torch."""
        assert self.job is None, "a child evaluates only between populations"
        self.wait_ready()
        self.conn.send(("evaluate", EvaluateJob(arch.to_dict(), family, dict(act_params),
                                                dict(state_dict), X, y, n_outputs, task)))
        try:
            kind, payload = self.conn.recv()
        except (EOFError, OSError):
            self.process.join(timeout=5)
            code = self.process.exitcode
            self.conn.close()
            self.start()
            raise RuntimeError(f"training process died while scoring (exit code {code})") from None
        if kind != "evaluated":
            raise RuntimeError(f"scoring on the training process failed: {payload}")
        return float(payload)

    # ----- lifecycle --------------------------------------------------------------------
    def restart(self) -> None:
        """Kill this child (a stuck or over-time population) and start a fresh one."""
        self.kill()
        self.start()
        self.wait_ready()

    def kill(self) -> None:
        """Kill the process now (it stays dead until :meth:`start`)."""
        self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()
        self.held = OrderedDict()

    def close(self) -> None:
        """Ask the process to exit (one still starting, holding nothing, is killed)."""
        if not self._ready:
            self.kill()
            return
        try:
            self.conn.send(("exit", None))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        self.conn.close()


class TrainerPool:
    """``workers`` warm training children, started on first need and kept until :meth:`close`.

    Args:
        workers: training processes.
        threads: torch threads per process (default: the cores shared evenly).
        training: the training guards (nice, memory cap, dataset cache size).
        compile_dir: torch's on-disk compile caches (default ``ACTSEARCH_HOME/compile``).
    """

    def __init__(self, workers: int = 1, *, threads: int | None = None,
                 training: TrainingSettings | None = None,
                 compile_dir: str | os.PathLike[str] | None = None) -> None:
        settings = get_settings()
        self.workers = max(1, workers)
        self.threads = threads or default_threads(self.workers)
        self.training = training or settings.training
        self.compile_dir = Path(compile_dir) if compile_dir is not None else settings.compile_dir
        self.stats = TrainerStats()
        self.children: list[_Child] = []

    def start(self) -> TrainerPool:
        """Spawn the children now without waiting for them (idempotent)."""
        if not self.children:
            self.children = [_Child(self.threads, self.training, compile_dir=self.compile_dir,
                                    stats=self.stats) for _ in range(self.workers)]
        return self

    def ensure(self) -> list[_Child]:
        """The children, started and ready; a dead one (killed while idle, or by
        :meth:`release`) is replaced by a fresh process first."""
        self.start()
        for child in self.children:
            if not child.alive():
                child.kill()  # reaps it and closes its pipe
                child.start()
        for child in self.children:  # started together, awaited in turn
            child.wait_ready()
        return self.children

    def pids(self) -> list[int | None]:
        return [c.pid for c in self.children]

    def release(self) -> None:
        """After a search stopped early: kill the children still training for it (a fresh
        process replaces each on next use, :meth:`ensure`); idle ones stay warm."""
        for child in self.children:
            if child.job is not None:
                child.kill()
                child.job = None

    def close(self, *, kill: bool = False) -> None:
        """Stop every child (politely unless ``kill``)."""
        for child in self.children:
            if kill:
                child.kill()
            else:
                child.close()
        self.children = []

    def __enter__(self) -> TrainerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(kill=exc[0] is not None)
