"""The embedded executor: one coordinator process writes, warm training children compute.

SQLite allows one writer at a time, and Optuna's many "database is locked" reports
come from parallel writers. Here the coordinator runs every step of
:mod:`.steps` (claim, ask, tell, record, advance) and the children
(:mod:`.child`) only train, talking to it over pipes. The search's state lives in
the database rows, as in distributed mode, so a search stopped anywhere resumes:
whoever holds the search's lock file (``<home>/locks/search-<id>.lock``) runs it,
and a free lock on an unfinished search means its process is gone.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy.orm import Session, sessionmaker

from core.errors import Conflict, InvalidInput
from core.settings import TrainingSettings, get_settings
from models.records import PopulationResult
from store import repo
from store.tables import SEARCH_TERMINAL_STATES

from ..progress import search_leaderboard, search_progress
from ..protocol import Leaderboard
from ..service import open_study
from ..spec import SearchSpec
from .finish import advance_search
from .limits import time_limit_message
from .recovery import LOCAL_WORKER_PREFIX, fail_search, interrupt, release_interrupted
from .steps import (
    Claimed,
    Prepared,
    claim,
    commit_result,
    fail_owned,
    fail_prepared,
    is_transient,
    may_ask_early,
    next_pending,
    plan_search,
    prepare,
    train_deadline,
)
from .trainers import TrainerPool, _Child, default_threads

optuna.logging.set_verbosity(optuna.logging.WARNING)

HEARTBEAT_GAP_S = 5.0  # a running population's row is stamped at most this often
RESUMABLE_STATES = ("running", "finalizing", "interrupted")


@dataclass
class Progress:
    """What a progress bar shows while a search runs (read from the rows, plus ``current``)."""

    total: int
    done: int = 0
    pruned: int = 0
    failed: int = 0
    running: int = 0
    best_value: float | None = None
    best_family: str | None = None
    phase: str = "search"
    current: str = ""
    candidate_epochs: int = 0
    finalists_total: int = 0
    finalists_done: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    # the equal-compute control arm (``control: relu``), phase "control" while it runs
    control_epochs: int = 0
    control_target: int = 0


ProgressCallback = Callable[[Progress], None]


# --------------------------------------------------------------------------- the search's lock


def lock_path(home: Path, search_id: int) -> Path:
    return Path(home) / "locks" / f"search-{search_id}.lock"


def lock_holder(home: Path, search_id: int) -> int | None:
    """The pid running the search here, or None when no live process holds its lock."""
    path = lock_path(home, search_id)
    if not path.exists():
        return None
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            text = fh.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return None


@contextmanager
def search_lock(home: Path, search_id: int) -> Iterator[None]:
    """Hold the search's lock for as long as this process runs it (released by the OS on death).

    Raises Conflict when another live process holds it.
    """
    path = lock_path(home, search_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # noqa: SIM115 - held for the context's lifetime
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise Conflict(f"search {search_id} is already being run by process {holder}; "
                           "wait for it, or stop that process first") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()


# --------------------------------------------------------------------------- the coordinator


@dataclass
class _Stats:
    candidate_epochs: int = 0
    last_beat: dict[int, float] = field(default_factory=dict)


class EmbeddedCoordinator:
    """Runs (or resumes) one search to its end in this process plus ``workers`` children.

    ``run()`` plans a new search, or resumes one whose process stopped; it holds the
    search's lock throughout. Ctrl-C, SIGTERM (raised as a BaseException by the
    caller's handler) or any other interruption leaves the search ``interrupted``
    and resumable; an error fails it with the reason.

    ``pool``: warm training processes that outlive this search (``serve``'s runner keeps
    one); without it the coordinator starts its own at the beginning of :meth:`run` and
    closes it at the end. ``started_at``: the ``time.monotonic()`` the caller's command
    started, for :attr:`timings` (default: this object's creation).

    ``timings`` (seconds from ``started_at``, also in :attr:`Progress.timings`):
    ``first_population_prepared_s`` (its trials asked, its data loaded: this process is
    ready to send it), ``trainers_ready_s`` (the training processes had answered),
    ``first_population_s`` (it was sent), ``first_epoch_s`` (its first epoch report
    arrived here), ``total_s`` (the search ended).
    """

    def __init__(self, *, sessions: sessionmaker[Session], storage_url: str, search_id: int,
                 workers: int = 1, threads: int | None = None,
                 progress: ProgressCallback | None = None,
                 training: TrainingSettings | None = None, home: Path | None = None,
                 pool: TrainerPool | None = None, started_at: float | None = None) -> None:
        settings = get_settings()
        self.started_at = time.monotonic() if started_at is None else started_at
        self.timings: dict[str, float] = {}
        self.sessions = sessions
        self.storage_url = storage_url
        self.search_id = search_id
        self.workers = pool.workers if pool is not None else max(1, workers)
        self.threads = pool.threads if pool is not None else (
            threads or default_threads(self.workers))
        self.training = training or (pool.training if pool is not None else settings.training)
        self._pool = pool
        self._own_pool = pool is None
        self.home = Path(home) if home is not None else settings.home
        self.progress_cb = progress
        self.worker = f"{LOCAL_WORKER_PREFIX}{socket.gethostname()}:{os.getpid()}"
        with self.sessions() as session:
            search = repo.get_search(session, search_id=search_id)
            self.spec = SearchSpec.model_validate(search.spec)
            self.study_name = search.study_name
        if self.spec.is_module:  # refused before anything runs: the search stays resumable
            raise InvalidInput(
                f"search {search_id} trains your own module ({self.spec.module_arch().name}); "
                f"only your Python process can: actsearch.resume({search_id}, build=build)")
        self.progress = Progress(total=self.spec.planned_trials())
        self._stats = _Stats()
        self._study: optuna.Study | None = None
        # a population claimed and asked while the children train, sent when one is free
        self._early: Prepared | None = None

    @property
    def study(self) -> optuna.Study:
        """The search's Optuna study (for reading its trials, e.g. the Pareto front)."""
        if self._study is None:
            self._study = open_study(self.spec, self.study_name, self.storage_url)
        return self._study

    @property
    def pool(self) -> TrainerPool:
        """The training processes this search uses (its own unless one was given)."""
        if self._pool is None:
            compile_dir = get_settings().compile_cache_dir or self.home / "compile"
            self._pool = TrainerPool(self.workers, threads=self.threads, training=self.training,
                                     compile_dir=compile_dir)
        return self._pool

    @property
    def children(self) -> list[_Child]:
        return self.pool.children

    def _mark(self, name: str) -> None:
        """Record a timing once (seconds since ``started_at``)."""
        if name not in self.timings:
            self.timings[name] = round(time.monotonic() - self.started_at, 3)
            self.progress.timings = dict(self.timings)

    # ----- lifecycle ----------------------------------------------------------------------
    def run(self) -> Leaderboard:
        """Plan or resume, train every population, finish; returns the leaderboard."""
        with search_lock(self.home, self.search_id):
            self.pool.start()  # torch imports in the children while the database work runs
            self._start()
            try:
                self._loop()
            except Exception as exc:
                self._close_children(kill=True)
                fail_search(self.sessions, search_id=self.search_id,
                            storage_url=self.storage_url, error=f"{type(exc).__name__}: {exc}")
                raise
            except BaseException:  # Ctrl-C, SIGTERM, shutdown: resumable
                self._close_children(kill=True)
                interrupt(self.sessions, search_id=self.search_id, worker=self.worker)
                raise
            finally:
                self._close_children(kill=False)
                self.timings["total_s"] = round(time.monotonic() - self.started_at, 3)
                self.progress.timings = dict(self.timings)
        with self.sessions() as session:
            return search_leaderboard(session, row=repo.get_search(session,
                                                                   search_id=self.search_id))

    def _start(self) -> None:
        """Plan a new search, or make an interrupted one resumable."""
        with self.sessions.begin() as session:
            state = repo.get_search(session, search_id=self.search_id).state
            planned = plan_search(session, search_id=self.search_id,
                                  from_states=("pending", "running"))
        if not planned and state in RESUMABLE_STATES:
            release_interrupted(self.sessions, search_id=self.search_id,
                                storage_url=self.storage_url)
        self._refresh_progress()

    def _ensure_children(self) -> None:
        self.pool.ensure()
        self._mark("trainers_ready_s")

    def _close_children(self, *, kill: bool) -> None:
        """At the search's end: close an own pool; of a shared one, stop only the children
        still training for this search (``kill``: an error or an interruption)."""
        if self._pool is None:
            return
        if self._own_pool:
            self._pool.close(kill=kill)
        elif kill:
            self._pool.release()

    def _finished(self) -> bool:
        with self.sessions() as session:
            state = repo.get_search(session, search_id=self.search_id).state
        return state in SEARCH_TERMINAL_STATES or state == "interrupted"

    def _loop(self) -> None:
        while True:
            job = self._take_job() if self._has_idle_child() else None
            while job is not None:
                self._send(job)
                job = self._take_job() if self._has_idle_child() else None
                if job is None:
                    self._refresh_progress()  # "running" counts what was just sent
            busy = [c for c in self.children if c.job is not None]
            if not busy:
                advance_search(self.sessions, search_id=self.search_id,
                               storage_url=self.storage_url, evaluator=self._evaluate)
                self._refresh_progress()
                if self._finished() or not self._has_pending():
                    return
                continue
            if self._early is None:  # ask the next population while these train
                self._early = self._next_job(running=[c.job.claimed for c in busy if c.job])
            ready = wait([c.conn for c in busy], timeout=self._wait_timeout(busy))
            for child in busy:
                if child.conn in ready:
                    self._handle(child)
                elif self._over_time(child):
                    job = child.job
                    assert job is not None and self.training.population_time_limit_s is not None
                    child.restart()  # killed, not asked: it may be stuck in one long epoch
                    self._failed(job, time_limit_message(self.training.population_time_limit_s))

    def _take_job(self) -> Prepared | None:
        """The population asked early, else the next one (None: none can start now)."""
        job, self._early = self._early, None
        return job if job is not None else self._next_job()

    def _send(self, job: Prepared) -> None:
        """Start ``job`` on an idle child (the deadline counted from now, not from its ask)."""
        self._mark("first_population_prepared_s")
        self._ensure_children()
        job.config.deadline_s = train_deadline(job.claimed)  # (no per-task limit here)
        idle = next(c for c in self.children if c.job is None)
        idle.send(job)
        self._mark("first_population_s")
        self.progress.current = f"{job.claimed.label} x{len(job.identities)}"
        self._emit()

    def _evaluate(self, *args: Any) -> float:
        """Test metrics are computed by an idle training child (it holds torch already)."""
        self._ensure_children()
        return next(c for c in self.children if c.job is None).evaluate(*args)

    def _has_idle_child(self) -> bool:
        return any(c.job is None for c in self.children) or len(self.children) < self.workers

    def _has_pending(self) -> bool:
        with self.sessions() as session:
            return next_pending(session, search_id=self.search_id) is not None

    def _next_job(self, running: Sequence[Claimed] | None = None) -> Prepared | None:
        """Claim and prepare the next pending population; None when none can start now.

        ``running``: the populations still training; then the next one is asked early
        only where :func:`.steps.may_ask_early` allows (else None: it waits for them).
        """
        while True:
            with self.sessions() as session:
                pid = next_pending(session, search_id=self.search_id)
                row = repo.get_population(session, population_id=pid) if pid else None
                if row is not None and running is not None and not may_ask_early(
                        row.phase, row.rung, row.slot_families(), running):
                    return None
            if pid is None:
                return None
            claimed, _ = claim(self.sessions, pid, self.worker)
            if claimed is None:
                continue  # cancelled (search cancelled, time spent) or taken: try the next
            try:
                job = prepare(self.sessions, claimed, self.storage_url,
                              device=get_settings().worker.device)
                job.config.compile_horizon = self._compile_horizon(claimed)
                return job
            except Exception as exc:  # noqa: BLE001 - fail this population, run the others
                if is_transient(exc):
                    raise
                fail_owned(self.sessions, claimed, f"{type(exc).__name__}: {exc}")

    def _compile_horizon(self, claimed: Claimed) -> float:
        """Populations like this one each child can expect to train in this search: this
        one plus the pending ones sharing a family with it, spread over the children. The
        kernels a child compiles serve all of them (and later searches, in ``serve``'s
        runner), so the compile decision counts their work (models.kernels)."""
        families = set(claimed.families)
        with self.sessions() as session:
            pending = repo.list_populations(session, search_id=self.search_id, state="pending")
            alike = sum(1 for p in pending if families & set(p.families or [p.family]))
        return 1.0 + alike / max(1, self.workers)

    # ----- the per-population time limit ----------------------------------------------------
    def _wait_timeout(self, busy: list[_Child]) -> float | None:
        limit = self.training.population_time_limit_s
        if limit is None:
            return None
        now = time.monotonic()
        return max(0.05, min(c.sent_at + limit - now for c in busy))

    def _over_time(self, child: _Child) -> bool:
        limit = self.training.population_time_limit_s
        return (limit is not None and child.job is not None
                and time.monotonic() - child.sent_at > limit)

    # ----- messages from the children ---------------------------------------------------------
    def _handle(self, child: _Child) -> None:
        job = child.job
        assert job is not None
        try:
            kind, payload = child.conn.recv()
        except (EOFError, OSError):
            child.process.join(timeout=5)
            code = child.process.exitcode
            child.conn.close()
            child.start()  # a fresh child takes the next population (awaited when needed)
            self._failed(job, f"training process died (exit code {code}): killed, "
                              "or out of memory beyond what it could report")
            return
        if kind == "epoch":
            self._mark("first_epoch_s")
            stop = job.reporter(payload) if job.reporter else []
            child.conn.send(("stop", stop))
            self._heartbeat(job)
            self.progress.current = f"{job.claimed.label} epoch {payload.epoch}"
            self._emit()
        elif kind == "result":
            child.job = None
            if self._early is not None:  # the next population trains while this one is told
                self._send(self._take_job())  # type: ignore[arg-type]
            self._completed(job, payload)
        else:
            child.job = None
            self._failed(job, str(payload))

    def _heartbeat(self, job: Prepared) -> None:
        pid = job.claimed.population_id
        now = time.monotonic()
        if now - self._stats.last_beat.get(pid, 0.0) < HEARTBEAT_GAP_S:
            return
        self._stats.last_beat[pid] = now
        with self.sessions.begin() as session:
            repo.heartbeat_owned_population(session, population_id=pid, worker=self.worker)

    def _completed(self, job: Prepared, result: PopulationResult) -> None:
        commit_result(self.sessions, job, result)
        self._stats.candidate_epochs += result.candidate_epochs
        self._after_population()

    def _failed(self, job: Prepared, error: str) -> None:
        """A population whose training raised, died or ran out of time: FAIL and record it."""
        fail_prepared(self.sessions, job, error)
        self._after_population()

    def _after_population(self) -> None:
        self._refresh_progress()  # the loop advances the search once no child is busy

    # ----- progress -------------------------------------------------------------------------
    def _refresh_progress(self) -> None:
        with self.sessions() as session:
            p = search_progress(session, row=repo.get_search(session, search_id=self.search_id))
        current = self.progress.current
        self.progress = Progress(
            total=p["budget"], done=p["done"], pruned=p["pruned"], failed=p["failed"],
            running=p["running"], best_value=p["best_value"], best_family=p["best_family"],
            phase="control" if p["phase"] == "control" else
            "finalists" if p["phase"] in ("finalists", "done") else "search",
            current=current, candidate_epochs=self._stats.candidate_epochs,
            finalists_total=p["finalists_total"], finalists_done=p["finalists_done"],
            timings=dict(self.timings),
            control_epochs=(p.get("control") or {}).get("candidate_epochs", 0),
            control_target=(p.get("control") or {}).get("target_candidate_epochs", 0))
        self._emit()

    def _emit(self) -> None:
        if self.progress_cb is not None:
            self.progress_cb(self.progress)
