"""The in-process executor of a user-module search (``actsearch.search_module``).

The state machine is :mod:`search.coordinator.steps`'s, exactly as the embedded
and distributed executors run it (plan -> claim -> prepare (Optuna ask) -> train ->
commit (tell and record) -> advance -> finalists -> test score -> finish), over the
same rows; only "train this population" differs: the user's ``build`` trains here,
in the user's own process, never in a spawned child (a notebook's ``build`` is
usually a closure or a locally defined class, which spawn cannot pickle) and
never on a service (the API never runs code).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from models.user_module import Build, evaluate_module, load_candidate
from models.user_training import ModuleData, train_module_population
from store import repo

from ..progress import search_leaderboard, search_progress
from ..protocol import Leaderboard
from ..service import PreparedData
from .finish import advance_search
from .local import Progress, search_lock
from .recovery import LOCAL_WORKER_PREFIX, fail_search, interrupt, release_interrupted
from .steps import (
    Prepared,
    claim,
    commit_result,
    fail_owned,
    fail_prepared,
    is_transient,
    next_pending,
    plan_search,
    prepare,
)


@dataclass
class ModuleTrainer:
    """The user's module factory and what it needs besides the data."""

    build: Build
    slots: list[int]
    fused: bool | None = None  # None: fused where the structure allows

    def module_data(self, data: PreparedData) -> ModuleData:
        return ModuleData(data.tensor_data(), data.splits.input_shape, self.slots)

    def test_scorer(self, session: Session, search_id: int, data: PreparedData,
                    family: str) -> None:
        """The final choice's finalists scored on test (never used to choose)."""
        s = data.splits
        for trial in repo.list_trials(session, search_id=search_id, phase="finalist",
                                      family=family, limit=None):
            if trial.state != "complete":
                continue
            state_dict, _, _ = repo.load_weights(session, trial_id=trial.id)
            module = load_candidate(self.build, family, dict(trial.family_params), self.slots,
                                    state_dict)
            value = evaluate_module(module, np.asarray(s.X_test), np.asarray(s.y_test),
                                    s.input_shape, data.dataset.task)
            repo.set_trial_test_value(session, trial_id=trial.id, test_value=value)


def run_module_search(*, sessions: sessionmaker[Session], storage_url: str, search_id: int,
                      trainer: ModuleTrainer, home: Path,
                      progress: Callable[[Progress], None] | None = None) -> Leaderboard:
    """Run (or resume) a user-module search to its end in this process; returns its leaderboard.

    An exception fails the search with the reason; Ctrl-C (any BaseException)
    leaves it ``interrupted``, resumable by calling this again with the same ``build``.
    """
    worker = f"{LOCAL_WORKER_PREFIX}{socket.gethostname()}:{os.getpid()}"

    def emit(current: str = "") -> None:
        if progress is None:
            return
        with sessions() as session:
            p = search_progress(session, row=repo.get_search(session, search_id=search_id))
        progress(Progress(
            total=p["budget"], done=p["done"], pruned=p["pruned"], failed=p["failed"],
            running=p["running"], best_value=p["best_value"], best_family=p["best_family"],
            phase="finalists" if p["phase"] in ("finalists", "done") else "search",
            current=current, finalists_total=p["finalists_total"],
            finalists_done=p["finalists_done"]))

    with search_lock(home, search_id):
        with sessions.begin() as session:
            state = repo.get_search(session, search_id=search_id).state
            planned = plan_search(session, search_id=search_id, from_states=("pending", "running"))
        if not planned and state in ("running", "finalizing", "interrupted"):
            release_interrupted(sessions, search_id=search_id, storage_url=storage_url)
        emit()
        try:
            while True:
                with sessions() as session:
                    pid = next_pending(session, search_id=search_id)
                if pid is None:
                    advance_search(sessions, search_id=search_id, storage_url=storage_url,
                                   test_scorer=trainer.test_scorer)
                    with sessions() as session:
                        if next_pending(session, search_id=search_id) is None:
                            break
                    continue
                _train_one(sessions, storage_url, pid, worker, trainer, emit)
        except Exception as exc:
            fail_search(sessions, search_id=search_id, storage_url=storage_url,
                        error=f"{type(exc).__name__}: {exc}")
            raise
        except BaseException:
            interrupt(sessions, search_id=search_id, worker=worker)
            raise
        emit()
    with sessions() as session:
        return search_leaderboard(session, row=repo.get_search(session, search_id=search_id))


def _train_one(sessions: sessionmaker[Session], storage_url: str, population_id: int,
               worker: str, trainer: ModuleTrainer, emit: Callable[[str], None]) -> None:
    claimed, _ = claim(sessions, population_id, worker)
    if claimed is None:
        return
    job: Prepared | None = None
    try:
        job = prepare(sessions, claimed, storage_url)
        reporter = job.reporter
        label = f"{claimed.family} x{len(job.identities)}"
        emit(label)

        def on_epoch(report: Any) -> list[int]:
            emit(f"{label} epoch {report.epoch}")
            return list(reporter(report)) if reporter is not None else []

        result = train_module_population(trainer.build, claimed.family, job.candidates,
                                         trainer.module_data(job.data), job.config,
                                         on_epoch=on_epoch, fused=trainer.fused)
        commit_result(sessions, job, result)
    except Exception as exc:
        if is_transient(exc):
            raise
        from core.errors import ActsearchError

        error = f"{type(exc).__name__}: {exc}"
        if job is not None:
            fail_prepared(sessions, job, error)
        else:
            fail_owned(sessions, claimed, error)
        if isinstance(exc, ActsearchError):
            raise  # the user's module is wrong for every candidate: stop, say why
    emit("")
