"""The embedded background runner: runs pending searches one after another.

``actsearch serve`` starts it as its own process (``python -m search.coordinator.runner``) beside
the API, in embedded mode only (in distributed mode the Celery workers run
searches). The loop takes the oldest ``pending`` search, runs an
:class:`~search.coordinator.EmbeddedCoordinator` on it, then the next; it sleeps
briefly when there is nothing to do.

Warm trainers. The runner keeps one :class:`~search.coordinator.trainers.TrainerPool`
(``workers`` training processes) for its whole life, started with its first search:
every later search trains in the same processes, which hold the datasets they were
sent (a search on the same data sends nothing again) and the kernels they compiled.
A trainer that dies is replaced; one still training when a search stops early is
killed and replaced, so the next search starts clean.

Restarts and resume. One runner per database at a time: it holds an exclusive lock
on ``<home>/runner.lock`` for its whole life; each search it runs holds the search's
own lock (:func:`search.coordinator.search_lock`). On start, once it holds the
runner lock, every unfinished search whose process is gone (``interrupted``, or
``running``/``finalizing`` with a free search lock: a SIGKILL or a reboot) is resumed
before any pending one: finished trials are kept and the trials that were in flight
are trained again, once. That covers searches started from ``actsearch search`` in
a shell as well; one still running there holds its lock and is left alone.

Stopping. SIGTERM (what ``serve`` sends on Ctrl-C) stops the loop: between
searches it exits at once; during one, the search is left ``interrupted`` (its
training children stopped, its in-flight populations back to pending) and the
process exits with status 0; the next start resumes it. SIGINT is ignored (a
terminal's Ctrl-C reaches the whole process group; ``serve`` decides and sends
SIGTERM), and so are the children's.

Analysis. Closed-form fits and distillation (:mod:`search.analysis.run`) run after a
search is complete, in one background thread of this process, so the next search
starts at once: on start (after the resumed searches are known) and after each
search it picks up every complete search whose analysis is pending, or running
with no process holding its analysis lock (a process killed mid-analysis: only the
missing part is redone). A search run from ``actsearch search`` in a shell is
analysed there; its lock keeps this runner off it.

Schedules. The runner is also the embedded scheduler: every ``schedule_tick_s``
seconds (``ACTSEARCH_SCHEDULE_TICK_S``) it calls :func:`search.schedules.tick`,
which turns due schedules into pending searches that this loop then runs. It
ticks between searches and while idle, never during one: a long search delays
a firing until it ends (the firing then happens once, not once per missed time).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.errors import Conflict
from store import repo

log = logging.getLogger("actsearch.coordinator.runner")

LOCK_FILE = "runner.lock"


class Shutdown(BaseException):
    """Raised by the SIGTERM handler to unwind a running search (BaseException: nothing
    on the way may swallow it as an ordinary error)."""


@contextmanager
def runner_lock(
    home: Path, *, poll_s: float = 1.0, should_stop: Callable[[], bool] = lambda: False
) -> Iterator[bool]:
    """Hold ``<home>/runner.lock`` exclusively (waits while another runner holds it).

    Yields True once held, or False if ``should_stop`` turned true while waiting.
    The lock goes with the process, so a killed runner never leaves it stuck.
    """
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    fh = open(home / LOCK_FILE, "a+")  # noqa: SIM115 - held for the context's lifetime
    try:
        warned = False
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if should_stop():
                    yield False
                    return
                if not warned:
                    log.warning("another runner holds %s; waiting for it to stop",
                                home / LOCK_FILE)
                    warned = True
                time.sleep(poll_s)
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield True
    finally:
        fh.close()  # releases the lock


def orphaned_searches(sessions: sessionmaker[Session], home: Path) -> list[int]:
    """Unfinished searches no live process runs: interrupted ones, and running ones whose
    search lock exists but is free (their process was killed). Oldest first.

    A running search without a lock file is skipped: ``actsearch search`` creates its
    row just before its coordinator takes the lock.
    """
    from search.coordinator import lock_holder
    from search.coordinator.local import RESUMABLE_STATES, lock_path

    with sessions() as session:
        rows = [(r.id, r.state) for state in RESUMABLE_STATES
                for r in repo.list_searches(session, state=state, limit=None)
                if not _user_module(r.spec)]
    out = []
    for search_id, state in sorted(rows):
        if state != "interrupted" and not lock_path(home, search_id).exists():
            continue
        if lock_holder(home, search_id) is None:
            out.append(search_id)
    return out


def _user_module(spec: Any) -> bool:
    """A ``search_module`` search: only the user's process can train it (``actsearch.resume``)."""
    arch = spec.get("architecture") if isinstance(spec, dict) else None
    return isinstance(arch, dict) and arch.get("kind") == "module"


def interrupt_orphans(sessions: sessionmaker[Session], home: Path) -> list[int]:
    """Mark searches whose process died (SIGKILL, a runner killed on shutdown) interrupted."""
    from search.coordinator import interrupt

    ids = orphaned_searches(sessions, home)
    for search_id in ids:
        interrupt(sessions, search_id=search_id)
    return ids


class Runner:
    """Runs pending searches one at a time until :meth:`stop` (or SIGTERM)."""

    def __init__(self, *, database_url: str, home: Path, workers: int = 1,
                 threads: int | None = None, poll_s: float = 1.0,
                 schedule_tick_s: float | None = 15.0) -> None:
        from store.db import make_engine, session_factory

        self.database_url = database_url
        self.home = Path(home)
        self.workers = max(1, workers)
        self.threads = threads
        self.poll_s = poll_s
        self.engine = make_engine(database_url)
        self.sessions = session_factory(self.engine)
        self.stopping = False
        self.interrupted = False
        self.current: int | None = None
        self._parent = os.getppid()
        self.schedule_tick_s = schedule_tick_s  # None: never fire schedules
        self._next_tick = 0.0  # monotonic time of the next schedule check
        self._analysis: threading.Thread | None = None
        from core.settings import get_settings
        from search.coordinator.trainers import TrainerPool

        self.pool = TrainerPool(  # started by the first search
            self.workers, threads=threads,
            compile_dir=get_settings().compile_cache_dir or self.home / "compile")

    def stop(self) -> None:
        """Finish the loop: now if idle; a running search is interrupted by the caller."""
        self.stopping = True

    def _orphaned(self) -> bool:
        # Our parent (serve) died without stopping us: do not linger.
        return self._parent != 1 and os.getppid() != self._parent

    def tick_schedules(self) -> list[int]:
        """Fire due schedules if a tick is due; never raises (a broken tick is logged)."""
        if self.schedule_tick_s is None or time.monotonic() < self._next_tick:
            return []
        self._next_tick = time.monotonic() + self.schedule_tick_s
        from search.schedules import tick

        try:
            created = tick(self.sessions, storage_url=self.database_url)
        except Exception as exc:  # e.g. the database briefly locked: try at the next tick
            log.warning("schedule tick failed: %s: %s", type(exc).__name__, exc)
            return []
        if created:
            log.info("schedules created searches %s", created)
        return created

    def analyse_pending(self) -> threading.Thread | None:
        """Start the analysis thread on pending or orphaned analyses (never raises).

        One thread at a time; it is a daemon: a shutdown leaves an analysis ``running``
        with its lock free, which the next start resumes. Returns the thread started.
        """
        if self._analysis is not None and self._analysis.is_alive():
            return None
        from search.analysis.run import pending_analyses

        try:
            ids = pending_analyses(self.sessions)
        except Exception as exc:  # e.g. the database briefly locked: the next call retries
            log.warning("could not list pending analyses: %s: %s", type(exc).__name__, exc)
            return None
        if not ids:
            return None
        self._analysis = threading.Thread(target=self._analyse, args=(ids,), daemon=True,
                                          name="actsearch-analysis")
        self._analysis.start()
        return self._analysis

    def _analyse(self, search_ids: list[int]) -> None:
        from search.analysis.run import analyse_search

        for search_id in search_ids:
            if self.stopping:
                return
            try:
                report = analyse_search(self.sessions, search_id)
            except Exception as exc:  # transient (the state went back to pending): next time
                log.warning("analysis of search %s stopped: %s: %s", search_id,
                            type(exc).__name__, exc)
                continue
            if report.ran:
                log.info("analysis of search %s %s in %.1f s", search_id, report.state,
                         report.seconds)

    def next_search(self) -> int | None:
        """The oldest pending search's id, or None."""
        with self.sessions() as session:
            row = repo.oldest_pending_search(session)
            return row.id if row is not None else None

    def run_one(self, search_id: int) -> None:
        """Run (or resume) one search to its end; a search that fails is recorded, not raised."""
        from search.coordinator import EmbeddedCoordinator, fail_search

        self.current = search_id
        try:
            log.info("running search %s", search_id)
            coordinator = EmbeddedCoordinator(
                sessions=self.sessions, storage_url=self.database_url, search_id=search_id,
                home=self.home, pool=self.pool)
            coordinator.run()
            log.info("search %s finished", search_id)
        except Shutdown:
            log.info("search %s interrupted by a shutdown; the next start resumes it", search_id)
            raise
        except Conflict as exc:  # another process holds its lock: it is running there
            log.info("search %s not run here: %s", search_id, exc.detail)
        except Exception as exc:  # the coordinator records its own failures; keep serving
            log.error("search %s failed: %s: %s", search_id, type(exc).__name__, exc)
            # This covers what happens before the coordinator starts (a study or dataset
            # that cannot be loaded), or the loop would pick the same search forever.
            fail_search(self.sessions, search_id=search_id, storage_url=self.database_url,
                        error=f"the runner could not run this search: {type(exc).__name__}: {exc}")
        finally:
            self.current = None

    def loop(self) -> None:
        """Take the runner lock, resume what a stopped process left, then run pending searches."""
        with runner_lock(self.home, poll_s=self.poll_s,
                         should_stop=lambda: self.stopping or self._orphaned()) as held:
            if not held:
                return
            resume = orphaned_searches(self.sessions, self.home)
            if resume:
                log.warning("resuming searches %s left unfinished by a stopped process", resume)
            log.info("runner ready (workers=%s)", self.workers)
            while not self.stopping and not self._orphaned():
                self.tick_schedules()
                self.analyse_pending()
                search_id = resume.pop(0) if resume else self.next_search()
                if search_id is None:
                    time.sleep(self.poll_s)
                    continue
                self.run_one(search_id)

    def close(self) -> None:
        self.pool.close(kill=self.interrupted)
        self.engine.dispose()


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the parent (``serve``) dies, even by SIGKILL.

    Without it a runner whose ``serve`` was killed would finish its current search
    unsupervised; with it the search is interrupted (and recorded) at once.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - other libcs
        pass


def _install_signals(runner: Runner) -> None:
    def on_term(signum: int, _frame: Any) -> None:
        runner.stop()
        if runner.current is not None and not runner.interrupted:
            runner.interrupted = True  # once: a second signal must not break the cleanup
            raise Shutdown(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    # Ignored here and, inherited through exec, in the training children: the
    # parent decides on Ctrl-C and sends SIGTERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    """``python -m search.coordinator.runner [--workers N]``; settings from the ACTSEARCH_* environment."""
    from core.settings import get_settings
    from store.db import init_db

    parser = argparse.ArgumentParser(prog="python -m search.coordinator.runner", description=__doc__)
    parser.add_argument("--workers", type=int, default=None, help="training processes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls when idle")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s runner %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = get_settings()
    # Background work: the API beside it answers first (its training children go lower still).
    from search.coordinator.limits import apply_process_limits

    apply_process_limits(nice=min(5, settings.training.nice))
    url = settings.resolved_database_url
    init_db(url)
    from search.storage import init_optuna_schema

    init_optuna_schema(url)
    runner = Runner(database_url=url, home=settings.home,
                    workers=args.workers or settings.workers,
                    threads=args.threads or settings.torch_threads or None, poll_s=args.poll,
                    schedule_tick_s=settings.schedule_tick_s)
    _install_signals(runner)
    _die_with_parent()
    if runner._orphaned():  # the parent died before prctl took effect
        runner.stop()
    try:
        runner.loop()
    except Shutdown:
        log.info("stopped by signal during a search")
    finally:
        runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
