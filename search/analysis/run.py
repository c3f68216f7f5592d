"""A complete search's curve analysis, off the critical path: closed-form fits, then distillation.

The leaderboard needs none of it, so a search is ``complete`` (its leaderboard and
``best`` stored) before any of this runs. :func:`analyse_search` then, for a stored
search,

1. fits every complete trial of a trainable family that has curves and no fits yet
   (:func:`search.analysis.curves.analyse_curves` on its final-epoch curves and
   pre-activation statistics, read back from the database);
2. distils and merges every trainable finalist with weights and no ``network`` row
   yet (:mod:`search.analysis.distillation`; the test split for the final choice only).

Its progress is the search row's ``analysis_state``: ``pending`` (set with ``complete``
by :func:`search.coordinator.finish`; NULL where no complete trial has a trainable
family, so nothing is to analyse) -> ``running`` -> ``done``, or ``failed`` with
``analysis_error`` saying which trials failed and why (what did succeed is kept).
Only those two columns are written besides the fits: never the search's state, its
``best`` or the leaderboard's rows.

Idempotent: each trial's fits are committed on their own, and a rerun does only what
is missing, so an analysis cut short (Ctrl-C, a crash, a worker killed) is resumed
by calling this again. One process analyses a search at a time: it holds the
search's *analysis lock* for the whole run, a file lock beside a SQLite database
(``<dir>/locks/analysis-<id>.lock``) or a PostgreSQL session advisory lock; either
goes with the process, so ``running`` with a free lock means that process is gone
(:func:`orphaned`), and whoever picks it up redoes only the missing part.

Who calls it: ``actsearch search`` after printing the leaderboard; ``actsearch
serve``'s runner for pending or orphaned analyses (on start and after each search);
the ``search.analyse`` Celery task (enqueued when a search completes, re-enqueued
by the reconciler); the library's result (:meth:`actsearch.SearchResult.wait_analysis`).
"""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from store import repo
from store.db import _sqlite_file, normalize_url

log = logging.getLogger(__name__)

__all__ = [
    "CURVE_FIT_KINDS",
    "UNFINISHED",
    "AnalysisReport",
    "analyse_search",
    "analysis_lock",
    "has_something_to_analyse",
    "orphaned",
    "pending_analyses",
]

Sessions = sessionmaker[Session]
OnStep = Callable[[str], None]

UNFINISHED = ("pending", "running")
CURVE_FIT_KINDS = ("closed_form", "linear", "distilled")  # one trial's curve fits
ADVISORY_NAMESPACE = 0x616E  # pg_try_advisory_lock(namespace, search id): "an"alysis
MAX_ERROR_CHARS = 4000


@dataclass
class AnalysisReport:
    """What one :func:`analyse_search` call did.

    ``state``: the analysis state after the call (``busy``: another process holds the
    search's analysis lock, nothing was done here); ``ran``: this call did the work.
    """

    search_id: int
    state: str | None
    ran: bool = False
    fitted: int = 0
    distilled: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        return _summary(self.errors) if self.errors else None


def has_something_to_analyse(trials: Sequence[Any]) -> bool:
    """Whether a finished search's trials give the analysis work: a complete trainable trial."""
    from models.catalogue import is_trainable  # the registry's snapshot: no torch here

    return any(t.state == "complete" and _trainable(is_trainable, t.family) for t in trials)


def _trainable(is_trainable: Callable[[str], bool], family: str) -> bool:
    try:
        return is_trainable(family)
    except Exception:  # noqa: BLE001 - a family no longer registered: nothing to fit
        return False


# --------------------------------------------------------------------------- the lock


def _lock_file(sessions: Sessions, search_id: int) -> Any:
    """The lock file's path for a SQLite database file (None: in-memory, or not SQLite)."""
    url = normalize_url(str(sessions.kw["bind"].url))
    if url.get_backend_name() != "sqlite":
        return None
    db = _sqlite_file(url)
    return None if db is None else db.parent / "locks" / f"analysis-{search_id}.lock"


@contextmanager
def analysis_lock(sessions: Sessions, search_id: int) -> Iterator[bool]:
    """Hold the search's analysis lock (non-blocking); yields False if another process has it.

    PostgreSQL: a session advisory lock on a connection held for the context. SQLite:
    an exclusive ``flock`` on ``<database dir>/locks/analysis-<id>.lock``. An
    in-memory database is one process's: always held. The OS (or the server, when
    the connection drops) releases it with the process.
    """
    engine = sessions.kw["bind"]
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:ns, :id)"),
                                    {"ns": ADVISORY_NAMESPACE, "id": search_id}).scalar())
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:ns, :id)"),
                                 {"ns": ADVISORY_NAMESPACE, "id": search_id})
                    conn.commit()
        return
    path = _lock_file(sessions, search_id)
    if path is None:
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def orphaned(sessions: Sessions, search_id: int) -> bool:
    """True when no live process holds the search's analysis lock (tried, then released)."""
    with analysis_lock(sessions, search_id) as held:
        return held


def pending_analyses(sessions: Sessions, *, include_running: bool = True) -> list[int]:
    """Complete searches whose analysis is pending, or running with no process (orphaned).

    ``include_running=False``: pending ones only (the caller judges running ones itself).
    """
    with sessions() as session:
        rows = [(r.id, r.analysis_state) for r in
                repo.searches_with_analysis(session, states=UNFINISHED) if r.state == "complete"]
    return [sid for sid, state in rows
            if state == "pending" or (include_running and orphaned(sessions, sid))]


# --------------------------------------------------------------------------- the analysis


def analyse_search(sessions: Sessions, search_id: int, *,
                   on_step: OnStep | None = None) -> AnalysisReport:
    """Run (or resume) a complete search's analysis; see the module docstring.

    A search whose analysis is not pending or running (done, failed, NULL) is left
    as it is. Per-trial errors are collected: the other trials are still analysed,
    and the analysis ends ``failed`` with them. An error outside one trial (the
    dataset cannot be loaded) fails it at once. A transient database error or an
    interruption (Ctrl-C) puts it back to ``pending`` where the database still
    answers, and is raised: a later call resumes it.

    Args:
        sessions: the search's database.
        search_id: the search.
        on_step: told what runs now (``"fits 3/12"``, ``"distillation 1/4"``), for a
            status line.
    """
    report = AnalysisReport(search_id, None)
    with analysis_lock(sessions, search_id) as held:
        if not held:
            report.state = "busy"
            return report
        with sessions() as session:
            row = repo.get_search(session, search_id=search_id)
            report.state = row.analysis_state
            if row.state != "complete" or row.analysis_state not in UNFINISHED:
                return report
        t0 = time.perf_counter()
        try:
            with sessions.begin() as session:
                repo.set_analysis_state(session, search_id=search_id, state="running")
            report.ran = True
            _fit_trials(sessions, search_id, report, on_step)
            _distil_finalists(sessions, search_id, report, on_step)
        except BaseException as exc:
            report.seconds = time.perf_counter() - t0
            from ..coordinator.steps import is_transient

            if isinstance(exc, Exception) and not is_transient(exc):
                log.exception("analysis of search %d failed", search_id)
                report.errors.append(f"{type(exc).__name__}: {exc}")
                report.state = "failed"
                _set(sessions, search_id, "failed", report.error)
                return report
            _set(sessions, search_id, "pending", None, quiet=True)
            report.state = "pending"
            raise
        report.seconds = time.perf_counter() - t0
        report.state = "failed" if report.errors else "done"
        _set(sessions, search_id, report.state, report.error)
        log.info("analysis of search %d %s in %.1f s: %d trials fitted, %d finalists distilled",
                 search_id, report.state, report.seconds, report.fitted, report.distilled)
    return report


def _set(sessions: Sessions, search_id: int, state: str, error: str | None, *,
         quiet: bool = False) -> None:
    try:
        with sessions.begin() as session:
            repo.set_analysis_state(session, search_id=search_id, state=state, error=error,
                                    from_states=("running",))
    except Exception:
        if not quiet:
            raise
        log.warning("analysis state of search %d not reset to %s (left running: whoever "
                    "picks it up next resumes it)", search_id, state, exc_info=True)


def _summary(errors: Sequence[str]) -> str:
    first = "; ".join(errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"{first}{more}"[:MAX_ERROR_CHARS]


def _step(on_step: OnStep | None, what: str) -> None:
    if on_step is not None:
        on_step(what)


def _fit_trials(sessions: Sessions, search_id: int, report: AnalysisReport,
                on_step: OnStep | None) -> None:
    """Closed-form fits of every complete trainable trial with curves and no fits yet."""
    from models.activations import is_trainable

    with sessions() as session:
        done = repo.fitted_trial_ids(session, search_id=search_id, kinds=CURVE_FIT_KINDS)
        todo = [t.id for t in repo.list_trials(session, search_id=search_id, state="complete",
                                               limit=None)
                if t.id not in done and _trainable(is_trainable, t.family)]
    for i, trial_id in enumerate(todo, start=1):
        _step(on_step, f"fits {i}/{len(todo)}")
        with sessions() as session:
            trial = repo.get_trial(session, trial_id=trial_id)
            family, params = trial.family, dict(trial.family_params or {})
            number = trial.trial_number
            curves = repo.trial_curves(session, trial_id=trial_id)
            stats = repo.trial_preact_stats(session, trial_id=trial_id) if curves else []
        if not curves:
            continue
        try:
            rows = _fit_rows(family, params, curves, stats)
        except Exception as exc:
            from ..coordinator.steps import is_transient

            if is_transient(exc):
                raise
            log.warning("curve analysis of trial %d (%s) failed; no fits stored", trial_id,
                        family, exc_info=True)
            report.errors.append(f"fits of trial {_name(trial_id, number)} ({family}): "
                                 f"{type(exc).__name__}: {exc}")
            continue
        with sessions.begin() as session:
            repo.add_fits(session, trial_id=trial_id, rows=rows)
        report.fitted += 1


def _name(trial_id: int, number: int | None) -> str:
    return f"#{number}" if number is not None else f"id {trial_id}"


def _fit_rows(family: str, params: dict[str, Any], curves: list[dict[str, Any]],
              stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fit rows of a trial's final-epoch curves (scipy: imported only here)."""
    from . import curves as analysis

    last = max(int(c["epoch"]) for c in curves)
    return analysis.analyse_curves(
        family=family, family_params=params,
        curves=[c for c in curves if int(c["epoch"]) == last],
        stats=[s for s in stats if int(s["epoch"]) == last])


def _distil_finalists(sessions: Sessions, search_id: int, report: AnalysisReport,
                      on_step: OnStep | None) -> None:
    """Network distillation and merging of the trainable finalists (built-in networks only)."""
    from ..spec import SearchSpec
    from .distillation import finalists_to_analyse

    with sessions() as session:
        todo = [(t.id, t.family, t.trial_number)
                for t in finalists_to_analyse(session, search_id=search_id)]
        if not todo:
            return
        row = repo.get_search(session, search_id=search_id)
        spec = SearchSpec.model_validate(row.spec)
        if spec.is_module:
            return  # only the user's process can rebuild their module
        test_family = (row.best or {}).get("family")
        dataset_id = row.dataset_id
    from ..coordinator.data import prepared_data
    from ..coordinator.steps import is_transient
    from .distillation import finalist_network_row

    data = prepared_data(sessions, dataset_id=dataset_id, spec=spec)
    arch = spec.arch_spec()
    for i, (trial_id, family, number) in enumerate(todo, start=1):
        _step(on_step, f"distillation {i}/{len(todo)}")
        try:
            with sessions() as session:
                trial = repo.get_trial(session, trial_id=trial_id)
                fit = finalist_network_row(session, trial=trial, arch=arch, data=data.splits,
                                           n_outputs=data.n_outputs,
                                           with_test=family == test_family)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning("network analysis of trial %d (%s) failed; nothing stored", trial_id,
                        family, exc_info=True)
            report.errors.append(f"distillation of finalist {_name(trial_id, number)} "
                                 f"({family}): {type(exc).__name__}: {exc}")
            continue
        with sessions.begin() as session:
            repo.add_fits(session, trial_id=trial_id, rows=[fit])
        report.distilled += 1
