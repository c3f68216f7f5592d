"""The child process of the embedded mode: trains populations, never touches the database.

It talks to the coordinator over a duplex pipe:

* coordinator -> child: ``("data", TensorData)`` once, then ``("train", job)`` per population,
  ``("stop", [indices])`` in answer to each epoch report, ``("exit", None)`` at the end;
* child -> coordinator: ``("epoch", EpochReport)`` after each epoch (the coordinator
  reports to Optuna and answers which candidates to prune), then
  ``("result", PopulationResult)`` or ``("error", traceback text)``.

Keeping Optuna's ask/tell and every write in one process is what makes SQLite
safe here (no parallel writers); the children only compute.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from models.spec import ArchSpec, Candidate, TrainConfig


@dataclass
class PopulationJob:
    """What a child needs to train one population (plain picklable values)."""

    arch: dict[str, Any]
    family: str
    candidates: list[Candidate]
    config: TrainConfig


def worker_main(conn: Connection, threads: int) -> None:
    """Entry point of a training child process."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    from models.engine import EpochReport, train_population

    torch.set_num_threads(max(1, threads))
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
            result = train_population(ArchSpec.from_dict(job.arch), job.family, job.candidates,
                                      data, job.config, on_epoch=on_epoch)
        except SystemExit:
            return
        except BaseException:  # report every failure to the coordinator, keep serving
            conn.send(("error", traceback.format_exc(limit=8)))
            continue
        conn.send(("result", result))
