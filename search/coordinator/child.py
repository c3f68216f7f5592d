"""A training child of the embedded coordinator: trains populations, never touches the database.

It talks to the coordinator over a duplex pipe:

* coordinator -> child: ``("data", (key, TensorData))`` for each dataset it has not sent
  this process yet, ``("drop", key)`` to forget one (the parent bounds what a child holds:
  :mod:`.trainers`), ``("train", job)`` per population (``job.data_key`` names its
  dataset), ``("stop", [indices])`` in answer to each epoch report, ``("evaluate",
  EvaluateJob)`` for one trained candidate's test metric, ``("exit", None)`` at the end;
* child -> coordinator: ``("ready", pid)`` once torch is imported, ``("epoch", EpochReport)`` after each epoch (the coordinator
  reports to Optuna and answers which candidates to prune), then
  ``("result", PopulationResult)`` or ``("error", traceback text)``; ``("evaluated",
  value)`` (or ``("error", ...)``) for an evaluation.

Keeping Optuna's ask/tell and every write in one process is what makes SQLite
safe here (no parallel writers); the children only compute.

The process lives as long as its host (a search, or ``serve``'s runner): the datasets
it holds and the kernels it compiled serve every later population. It imports only
torch and :mod:`models` (this package's ``__init__`` is lazy), since its start is on the
path from the command to the first epoch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from models.spec import ArchSpec, Candidate, TrainConfig

from .limits import (
    apply_process_limits,
    cap_population_memory,
    describe_failure,
    release_memory,
)


@dataclass
class PopulationJob:
    """What a child needs to train one population (plain picklable values)."""

    arch: dict[str, Any]
    family: str | None  # None: a mixed population (each candidate names its family)
    candidates: list[Candidate]
    config: TrainConfig
    data_key: str | None = None  # which of the child's datasets (None: the unnamed one)


@dataclass
class EvaluateJob:
    """One trained candidate to score (the arguments of :func:`models.engine.evaluate`)."""

    arch: dict[str, Any]
    family: str
    act_params: dict[str, Any]
    state_dict: dict[str, Any]  # name -> numpy array
    X: Any
    y: Any
    n_outputs: int
    task: str


def configure_training_process(*, threads: int, nice: int = 0,
                               compile_dir: str | os.PathLike[str] | None = None) -> None:
    """What every training process sets once (embedded children, Celery worker children):
    torch's threads, a lower CPU priority, and the on-disk compile cache, so kernels
    compiled by one process serve the next (:func:`models.kernels.configure_compile_cache`)."""
    import torch

    from models import kernels

    torch.set_num_threads(max(1, threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (inter-op work has started)
        pass
    apply_process_limits(nice=nice)
    if compile_dir:
        kernels.configure_compile_cache(compile_dir)


def worker_main(conn: Connection, threads: int, nice: int = 0,
                memory_limit_mb: int | None = None, *, compile_dir: str | None = None) -> None:
    """Entry point of a training child process.

    ``nice`` lowers its CPU priority (the API and the coordinator answer first);
    ``memory_limit_mb`` caps each population's memory, so an oversized model fails here with an
    "out of memory" error the coordinator records, rather than exhausting the machine;
    ``compile_dir`` holds torch's compiled kernels across processes
    (:func:`models.kernels.configure_compile_cache`).
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    from models.engine import EpochReport, TensorData, evaluate, tensors_on, train_population

    configure_training_process(threads=threads, nice=nice, compile_dir=compile_dir)
    conn.send(("ready", os.getpid()))  # imports done: time limits count from here
    datasets: dict[str | None, TensorData] = {}
    # on an accelerator, each dataset moved there once (kept until it is dropped)
    on_device: dict[tuple[str | None, str], TensorData] = {}
    while True:
        try:
            kind, payload = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if kind == "exit":
            return
        if kind == "data":
            key, tensors = payload if isinstance(payload, tuple) else (None, payload)
            datasets[key] = tensors
            continue
        if kind == "drop":
            datasets.pop(payload, None)
            for held in [k for k in on_device if k[0] == payload]:
                del on_device[held]
            release_memory()
            continue
        if kind == "evaluate":
            e: EvaluateJob = payload
            try:
                value = evaluate(ArchSpec.from_dict(e.arch), e.family, e.act_params, e.state_dict,
                                 e.X, e.y, e.n_outputs, e.task)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - reported, the child keeps serving
                conn.send(("error", describe_failure(exc, memory_limit_mb=memory_limit_mb)))
                continue
            conn.send(("evaluated", value))
            continue
        job: PopulationJob | None = payload if kind == "train" else None
        data = datasets.get(job.data_key) if job is not None else None
        if job is None or data is None:
            conn.send(("error", f"unexpected message {kind!r} (datasets held: "
                                f"{len(datasets)}, wanted {getattr(job, 'data_key', None)!r})"))
            continue

        def on_epoch(report: EpochReport) -> list[int]:
            conn.send(("epoch", report))
            answer_kind, stop = conn.recv()
            if answer_kind == "exit":
                raise SystemExit(0)
            return list(stop)

        try:
            cap_population_memory(memory_limit_mb)
            if job.config.device != "cpu":
                slot = (job.data_key, job.config.device)
                if slot not in on_device:
                    on_device[slot] = tensors_on(data, job.config.device)
                data = on_device[slot]
            result = train_population(ArchSpec.from_dict(job.arch), job.family, job.candidates,
                                      data, job.config, on_epoch=on_epoch)
        except SystemExit:
            return
        except BaseException as exc:  # report every failure to the coordinator, keep serving
            message = describe_failure(exc, memory_limit_mb=memory_limit_mb)
            del exc  # frees the failed population's tensors before the next job
            release_memory()
            conn.send(("error", message))
            continue
        conn.send(("result", result))
