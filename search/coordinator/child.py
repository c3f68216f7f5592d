"""A training child of the embedded coordinator: trains populations, never touches the database.

It talks to the coordinator over a duplex pipe:

* coordinator -> child: ``("data", TensorData)`` once, then ``("train", job)`` per population,
  ``("stop", [indices])`` in answer to each epoch report, ``("exit", None)`` at the end;
* child -> coordinator: ``("ready", pid)`` once torch is imported, ``("epoch", EpochReport)`` after each epoch (the coordinator
  reports to Optuna and answers which candidates to prune), then
  ``("result", PopulationResult)`` or ``("error", traceback text)``.

Keeping Optuna's ask/tell and every write in one process is what makes SQLite
safe here (no parallel writers); the children only compute.
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


def worker_main(conn: Connection, threads: int, nice: int = 0,
                memory_limit_mb: int | None = None) -> None:
    """Entry point of a training child process.

    ``nice`` lowers its CPU priority (the API and the coordinator answer first);
    ``memory_limit_mb`` caps each population's memory, so an oversized model fails here with an
    "out of memory" error the coordinator records, rather than exhausting the machine.
    """
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    from models.engine import EpochReport, train_population

    torch.set_num_threads(max(1, threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set
        pass
    apply_process_limits(nice=nice)
    conn.send(("ready", os.getpid()))  # imports done: time limits count from here
    data = None
    while True:
        try:
            kind, payload = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if kind == "exit":
            return
        if kind == "data":
            data = payload
            continue
        if kind != "train" or data is None:
            conn.send(("error", f"unexpected message {kind!r} (data loaded: {data is not None})"))
            continue
        job: PopulationJob = payload

        def on_epoch(report: EpochReport) -> list[int]:
            conn.send(("epoch", report))
            answer_kind, stop = conn.recv()
            if answer_kind == "exit":
                raise SystemExit(0)
            return list(stop)

        try:
            cap_population_memory(memory_limit_mb)
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
