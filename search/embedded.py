"""The embedded coordinator: one process does every ask, tell and write; children train.

SQLite allows one writer at a time, and Optuna's many "database is locked"
reports come from parallel writers. Here the coordinator owns the study and the
session; training children (:mod:`search.worker_process`) only compute and talk
to it over pipes. The same population logic serves the distributed mode.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

import numpy as np
import optuna
from sqlalchemy.orm import Session, sessionmaker

from core.settings import TrainingSettings, get_settings
from models.engine import PopulationResult, evaluate
from models.spec import Candidate, TrainConfig
from store import repo
from store.tables import utcnow

from .limits import time_limit_message
from .planner import planner_for
from .population import (
    AskedTrial,
    PruningReporter,
    ask_population,
    fail_population,
    tell_population,
)
from .protocol import Leaderboard, best_per_family, build_leaderboard
from .results import (
    TrialIdentity,
    analyse_finalist_networks,
    nothing_completed_error,
    record_failed_population,
    record_population,
)
from .service import PreparedData, load_study, prepare_data
from .spec import SearchSpec
from .worker_process import PopulationJob, worker_main

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class Progress:
    """What a progress bar shows while a search runs."""

    total: int
    done: int = 0
    pruned: int = 0
    failed: int = 0
    best_value: float | None = None
    best_family: str | None = None
    phase: str = "search"
    current: str = ""
    candidate_epochs: int = 0
    finalists_total: int = 0
    finalists_done: int = 0


ProgressCallback = Callable[[Progress], None]
CHILD_START_TIMEOUT_S = 300.0  # spawn + torch import, on a loaded machine


@dataclass
class _Running:
    """A population in flight on one child."""

    job: PopulationJob
    phase: str
    family: str
    identities: list[TrialIdentity]
    asked: list[AskedTrial] = field(default_factory=list)
    reporter: PruningReporter | None = None
    population_id: int | None = None
    started: float = field(default_factory=time.monotonic)  # when it was sent to a child
    started_at: Any = None  # wall-clock start, for the trial rows of a failure


class _Child:
    """One training process and its pipe; restarted in place if it dies."""

    def __init__(self, threads: int, data: Any, training: TrainingSettings | None = None) -> None:
        self.threads = threads
        self.data = data
        self.training = training or TrainingSettings()
        self.running: _Running | None = None
        self.start()

    def start(self) -> None:
        ctx = mp.get_context("spawn")  # fork after torch/sqlite initialised is unsafe
        self.conn, child_end = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=worker_main,
            args=(child_end, self.threads, self.training.nice, self.training.memory_limit_mb),
            daemon=True)
        self.process.start()
        child_end.close()
        self.conn.send(("data", self.data))
        self.running = None
        self._ready = False

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

    def restart(self) -> None:
        """Kill this child (a stuck or over-time population) and start a fresh one."""
        self.process.kill()
        self.process.join(timeout=10)
        self.conn.close()
        self.start()
        self.wait_ready()

    def close(self) -> None:
        try:
            self.conn.send(("exit", None))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()


def default_threads(workers: int) -> int:
    """Torch threads per child: the machine's cores shared evenly."""
    return max(1, (os.cpu_count() or 1) // workers)


class EmbeddedCoordinator:
    """Runs one search to completion in this process plus ``workers`` training children."""

    def __init__(self, *, sessions: sessionmaker[Session], storage_url: str, search_id: int,
                 workers: int = 1, threads: int | None = None,
                 progress: ProgressCallback | None = None,
                 training: TrainingSettings | None = None) -> None:
        self.sessions = sessions
        self.training = training or get_settings().training
        self.storage_url = storage_url
        self.search_id = search_id
        self.workers = max(1, workers)
        self.threads = threads or default_threads(self.workers)
        self.progress_cb = progress
        with self.sessions() as session:
            search = repo.get_search(session, search_id=search_id)
            self.spec = SearchSpec.model_validate(search.spec)
            self.study_name = search.study_name
            self.data: PreparedData = prepare_data(session, dataset_id=search.dataset_id,
                                                   spec=self.spec)
        self.arch = self.spec.arch_spec()
        self.study = load_study(self.spec, self.study_name, storage_url)
        self.base_sampler = self.study.sampler
        tpf = self.spec.trials_per_family()
        self.planner = planner_for(self.spec, n_inputs=self.data.n_inputs,
                                   n_outputs=self.data.n_outputs)
        self.progress = Progress(total=tpf * len(self.spec.families))
        self.started = time.monotonic()
        self.finalist_queue: list[tuple[str, Any]] | None = None
        self._search_in_flight = 0  # search populations asked but not yet told
        self.children: list[_Child] = []

    # ----- lifecycle ----------------------------------------------------------------------
    def run(self) -> Leaderboard:
        """Train every population, re-run the finalists, score the winner on test."""
        self._set_state("running")
        data = self.data.tensor_data()
        self.children = [_Child(self.threads, data, self.training)
                         for _ in range(self.workers)]
        for child in self.children:  # started together, awaited in turn
            child.wait_ready()
        try:
            self._loop(self.children)
            leaderboard = self._finish()
        except BaseException as exc:
            self._set_state("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            for child in self.children:
                child.close()
        return leaderboard

    def _loop(self, children: list[_Child]) -> None:
        while True:
            for child in children:
                if child.running is None:
                    child.running = self._next_job()
                    if child.running is not None:
                        child.running.started = time.monotonic()
                        child.running.started_at = utcnow()
                        child.conn.send(("train", child.running.job))
            busy = [c for c in children if c.running is not None]
            if not busy:
                return
            ready = wait([c.conn for c in busy], timeout=self._wait_timeout(busy))
            for child in busy:
                if child.conn in ready:
                    self._handle(child)
                elif self._over_time(child):
                    self._stop_over_time(child)

    # ----- the per-population time limit ----------------------------------------------------
    def _wait_timeout(self, busy: list[_Child]) -> float | None:
        limit = self.training.population_time_limit_s
        if limit is None:
            return None
        now = time.monotonic()
        left = min(c.running.started + limit - now for c in busy if c.running is not None)
        return max(0.05, left)

    def _over_time(self, child: _Child) -> bool:
        limit = self.training.population_time_limit_s
        return (limit is not None and child.running is not None
                and time.monotonic() - child.running.started > limit)

    def _stop_over_time(self, child: _Child) -> None:
        """Fail the population with a "time limit" error; a fresh child takes the next one.

        The child is killed, not asked: a population past its limit may be stuck
        inside one long epoch and never read the pipe again.
        """
        running = child.running
        assert running is not None and self.training.population_time_limit_s is not None
        child.restart()
        self._failed(running, time_limit_message(self.training.population_time_limit_s))

    def _handle(self, child: _Child) -> None:
        running = child.running
        assert running is not None
        try:
            kind, payload = child.conn.recv()
        except (EOFError, OSError):
            child.process.join(timeout=5)
            code = child.process.exitcode
            self._failed(running, f"training process died (exit code {code}): killed, "
                                  "or out of memory beyond what it could report")
            child.start()  # a fresh child takes the next population
            child.wait_ready()
            return
        if kind == "epoch":
            stop = running.reporter(payload) if running.reporter else []
            child.conn.send(("stop", stop))
            self.progress.current = f"{running.family} epoch {payload.epoch}"
            self._emit()
        elif kind == "result":
            self._completed(running, payload)
            child.running = None
        else:
            self._failed(running, str(payload))
            child.running = None

    # ----- scheduling ---------------------------------------------------------------------
    def _time_left(self) -> float | None:
        if self.spec.time_budget_s is None:
            return None
        return self.spec.time_budget_s - (time.monotonic() - self.started)

    def _config(self, data_seed: int) -> TrainConfig:
        left = self._time_left()
        return TrainConfig(
            epochs=self.spec.epochs, batch_size=self.spec.batch_size,
            optimizer=self.spec.optimizer, schedule=self.spec.schedule, data_seed=data_seed,
            deadline_s=None if left is None else max(1.0, left),
        )

    def _cancelled(self) -> bool:
        with self.sessions() as session:
            return repo.get_search(session, search_id=self.search_id).state == "cancelled"

    def _next_job(self) -> _Running | None:
        if self.finalist_queue is None:
            left = self._time_left()
            out_of_time = left is not None and left <= 0
            cancelled = self._cancelled()
            planned = None if (out_of_time or cancelled) else self.planner.next()
            if planned is not None:
                return self._search_job(*planned)
            if self._search_in_flight:
                return None  # finalists start once every search population is told
            if cancelled:
                self.finalist_queue = []  # cancel: no new trainings, finalists included
            else:
                self._plan_finalists()
        if self.finalist_queue:
            family, best = self.finalist_queue.pop(0)
            return self._finalist_job(family, best)
        return None

    def _search_job(self, family: str, k: int) -> _Running:
        asked = ask_population(self.study, self.base_sampler, family, k, self.spec)
        with self.sessions.begin() as session:
            pop = repo.add_population(session, search_id=self.search_id, family=family,
                                      structural=self._structural(asked[0]), k=k, phase="search")
            population_id = pop.id
        identities = [TrialIdentity(a.candidate(), a.act_params, a.hparams, trial_number=a.number)
                      for a in asked]
        job = PopulationJob(self.arch.to_dict(), family, [i.candidate for i in identities],
                            self._config(data_seed=asked[0].seed))
        self._search_in_flight += 1
        self.progress.current = f"{family} x{k}"
        self._emit()
        return _Running(job, "search", family, identities, asked,
                        PruningReporter(asked, multi_objective=self.spec.multi_objective), population_id)

    @staticmethod
    def _structural(a: AskedTrial) -> dict[str, Any]:
        from models.activations import get_activation

        cls = get_activation(a.trial.params["family"])
        return {p.name: a.act_params[p.name] for p in cls.space() if p.structural}

    def _plan_finalists(self) -> None:
        with self.sessions() as session:
            trials = repo.list_trials(session, search_id=self.search_id, phase="search",
                                      limit=None)
            best = best_per_family(trials)
        self.finalist_queue = [(f, best[f]) for f in self.spec.families if f in best]
        self.progress.phase = "finalists"
        self.progress.finalists_total = len(self.finalist_queue)
        self._emit()

    def _finalist_job(self, family: str, best: Any) -> _Running:
        seeds = [(self.spec.seed + 1) * 10_007 + j * 101 for j in range(self.spec.finalist_seeds)]
        hp = dict(best.hparams)
        identities = [
            TrialIdentity(Candidate(seed=s, lr=hp["lr"], weight_decay=hp["weight_decay"],
                                    act_params=dict(best.family_params)),
                          dict(best.family_params), hp, source_trial_number=best.trial_number)
            for s in seeds
        ]
        with self.sessions.begin() as session:
            pop = repo.add_population(session, search_id=self.search_id, family=family,
                                      structural={}, k=len(seeds), phase="finalist")
            population_id = pop.id
        config = self._config(data_seed=seeds[0])
        config.deadline_s = None  # finalists always finish: the leaderboard needs them
        job = PopulationJob(self.arch.to_dict(), family, [i.candidate for i in identities], config)
        self.progress.current = f"finalist {family} x{len(seeds)}"
        return _Running(job, "finalist", family, identities, population_id=population_id)

    # ----- results ------------------------------------------------------------------------
    def _completed(self, running: _Running, result: PopulationResult) -> None:
        told = None
        if running.phase == "search":
            told = tell_population(self.study, self.spec, running.asked, result.candidates,
                                   result.n_params, result.flops)
            self._search_in_flight -= 1
        weights = None
        if running.phase == "finalist":
            weights = {"scaler": self.data.splits.scaler, "label_map": self.data.splits.label_map}
        with self.sessions.begin() as session:
            record_population(session, search_id=self.search_id, study_name=self.study_name,
                              population_id=running.population_id, phase=running.phase,
                              family=running.family, identities=running.identities,
                              result=result, told=told, save_weights_with=weights)
            repo.set_population_state(session, population_id=running.population_id,
                                      state="complete")
        self.progress.candidate_epochs += result.candidate_epochs
        if running.phase == "search":
            for state in (told or {}).values():
                self.progress.done += 1
                self.progress.pruned += state == "pruned"
                self.progress.failed += state == "failed"
            for c in result.candidates:
                v = c.val_metric
                if told and told.get(running.asked[c.index].number) == "complete" and v is not None \
                        and math.isfinite(v) and (self.progress.best_value is None or v > self.progress.best_value):
                    self.progress.best_value, self.progress.best_family = v, running.family
        else:
            self.progress.finalists_done += 1
        self._emit()

    def _failed(self, running: _Running, error: str) -> None:
        """A population whose training raised, died or ran out of time: FAIL and record it."""
        if running.phase == "search":
            fail_population(self.study, running.asked, error)
            self._search_in_flight -= 1
            self.progress.done += len(running.asked)
            self.progress.failed += len(running.asked)
        else:
            self.progress.finalists_done += 1
        with self.sessions.begin() as session:
            record_failed_population(
                session, search_id=self.search_id, study_name=self.study_name,
                population_id=running.population_id, phase=running.phase,
                family=running.family, identities=running.identities, error=error,
                started_at=running.started_at)
            repo.set_population_state(session, population_id=running.population_id,
                                      state="failed", error=error[:4000])
        self._emit()

    def _finish(self) -> Leaderboard:
        self._set_state("finalizing")
        metric = "accuracy" if self.data.dataset.task == "classification" else "r2"
        with self.sessions.begin() as session:
            trials = repo.list_trials(session, search_id=self.search_id, limit=None)
            board = build_leaderboard(trials, metric)
            if board.winner is not None:
                self._score_test(session, board.winner.family)
                analyse_finalist_networks(session, search_id=self.search_id, arch=self.arch,
                                          data=self.data.splits, n_outputs=self.data.n_outputs,
                                          test_family=board.winner.family)
                trials = repo.list_trials(session, search_id=self.search_id, limit=None)
                board = build_leaderboard(trials, metric)
        error = nothing_completed_error(trials)
        if error is not None:
            self._set_state("failed", error=error)
            return board
        state = "cancelled" if self._cancelled() else "complete"
        best = None
        if board.winner is not None:
            w, b = board.winner, board.baseline
            best = {"family": w.family, "mean": w.mean, "ci95": w.ci95, "test_mean": w.test_mean,
                    "test_ci95": w.test_ci95, "baseline_mean": b.mean if b else None,
                    "delta_vs_baseline": w.delta_vs_baseline, "metric": metric}
        self._set_state(state, best=best)
        return board

    def _score_test(self, session: Session, family: str) -> None:
        """Test metric of the final choice's re-runs only (never used to choose)."""
        s = self.data.splits
        for trial in repo.list_trials(session, search_id=self.search_id, phase="finalist",
                                      family=family, limit=None):
            if trial.state != "complete":
                continue
            state_dict, _, _ = repo.load_weights(session, trial_id=trial.id)
            value = evaluate(self.arch, family, trial.family_params, state_dict,
                             np.asarray(s.X_test), np.asarray(s.y_test),
                             self.data.n_outputs, self.data.dataset.task)
            repo.set_trial_test_value(session, trial_id=trial.id, test_value=value)

    def _set_state(self, state: str, error: str | None = None,
                   best: dict[str, Any] | None = None) -> None:
        with self.sessions.begin() as session:
            if repo.get_search(session, search_id=self.search_id).state == "cancelled":
                state = "cancelled"  # a cancel wins; we still record the best found so far
            repo.set_search_state(session, search_id=self.search_id, state=state, error=error,
                                  best=best)

    def _emit(self) -> None:
        if self.progress_cb is not None:
            self.progress_cb(self.progress)
