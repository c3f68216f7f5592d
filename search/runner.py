"""The embedded background runner: runs pending searches one after another.

``actsearch serve`` starts it as its own process (``python -m search.runner``) beside
the API, in embedded mode only (in distributed mode the Celery workers run
searches). The loop takes the oldest ``pending`` search, runs an
:class:`~search.embedded.EmbeddedCoordinator` on it (with ``workers`` training
children), then the next; it sleeps briefly when there is nothing to do.

Restarts. One runner per database at a time: it holds an exclusive lock on
``<home>/runner.lock`` for its whole life, and records the search it is running
in ``<home>/runner-claim.json``. On start, once it holds the lock (so no other
runner is alive), a claim left behind names a search whose runner died; that
search is marked **failed** with an error saying so, its unfinished populations
failed and its Optuna trials still RUNNING told FAIL, so nothing stays running
forever. It is not resumed: the coordinator plans a search from its start and
cannot yet continue a partly-run plan (its finished trials stay readable).
Searches started from ``actsearch search`` in a shell are never claimed, so a
runner never touches them.

Stopping. SIGTERM (what ``serve`` sends on Ctrl-C) stops the loop: between
searches it exits at once; during one, the search is marked failed ("interrupted
by a shutdown") and its training children are stopped before the process exits
with status 0. SIGINT is ignored (a terminal's Ctrl-C reaches the whole process
group; ``serve`` decides and sends SIGTERM), and so are the children's.

Schedules. The runner is also the embedded scheduler: every ``schedule_tick_s``
seconds (``ACTSEARCH_SCHEDULE_TICK_S``) it calls :func:`search.schedules.tick`,
which turns due schedules into pending searches that this loop then runs. It
ticks between searches and while idle, never during one: a long search delays
a firing until it ends (the firing then happens once, not once per missed time).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.errors import NotFound
from store import repo
from store.tables import SEARCH_TERMINAL_STATES

log = logging.getLogger("actsearch.runner")

LOCK_FILE = "runner.lock"
CLAIM_FILE = "runner-claim.json"
INTERRUPTED = (
    "interrupted: the actsearch service stopped while this search was running ({why}); "
    "trials that finished are kept; submit the search again to run it to the end"
)


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


def _claim_path(home: Path) -> Path:
    return home / CLAIM_FILE


def write_claim(home: Path, search_id: int) -> None:
    """Record that this runner is running ``search_id`` (atomically replaced)."""
    path = _claim_path(home)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"search_id": search_id, "pid": os.getpid()}))
    os.replace(tmp, path)


def clear_claim(home: Path) -> None:
    """Forget the claim: the search reached a terminal state or was marked failed."""
    _claim_path(home).unlink(missing_ok=True)


def read_claim(home: Path) -> int | None:
    """The search a previous runner claimed, or None (missing or unreadable file)."""
    try:
        return int(json.loads(_claim_path(home).read_text())["search_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fail_unfinished(
    sessions: sessionmaker[Session], storage_url: str, search_id: int, error: str,
    *, reword_failed: bool = False,
) -> bool:
    """Mark an unfinished search failed with ``error``; its in-flight work too.

    ``reword_failed`` replaces the error of a search the coordinator already marked
    failed on the way out (its message names only the exception) with ours.
    Returns True if the search was still unfinished (and is now failed).
    """
    with sessions.begin() as session:
        try:
            row = repo.get_search(session, search_id=search_id)
        except NotFound:
            return False
        if row.state in SEARCH_TERMINAL_STATES:
            if reword_failed and row.state == "failed":
                repo.set_search_state(session, search_id=search_id, state="failed", error=error)
            return False
        study_name = row.study_name
        for pop in repo.list_populations(session, search_id=search_id):
            if pop.state in ("pending", "running"):
                repo.set_population_state(session, population_id=pop.id, state="failed",
                                          error=error)
        repo.set_search_state(session, search_id=search_id, state="failed", error=error)
    _fail_running_optuna_trials(study_name, storage_url)
    return True


def _fail_running_optuna_trials(study_name: str, storage_url: str) -> None:
    """Tell FAIL for the study's trials left RUNNING (optuna-dashboard would show them forever)."""
    import optuna
    from optuna.trial import TrialState

    from .storage import optuna_storage

    try:
        study = optuna.load_study(study_name=study_name, storage=optuna_storage(storage_url))
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
    except Exception as exc:  # best effort: our tables already say what happened
        log.warning("could not close Optuna trials of %s: %s", study_name, exc)


def recover(home: Path, sessions: sessionmaker[Session], storage_url: str, *,
            why: str = "its runner process ended without finishing it") -> int | None:
    """Fail the search a crashed runner left claimed; returns its id if it was unfinished."""
    search_id = read_claim(home)
    if search_id is None:
        return None
    failed = fail_unfinished(sessions, storage_url, search_id, INTERRUPTED.format(why=why))
    clear_claim(home)
    if failed:
        log.warning("search %s was left running by a previous runner; marked failed", search_id)
    return search_id if failed else None


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

    def next_search(self) -> int | None:
        """The oldest pending search's id, or None."""
        with self.sessions() as session:
            row = repo.oldest_pending_search(session)
            return row.id if row is not None else None

    def run_one(self, search_id: int) -> None:
        """Run one search to its end; a search that fails is recorded, not raised."""
        from search.embedded import EmbeddedCoordinator

        with self.sessions.begin() as session:
            # Atomic claim: if the search was cancelled (or taken) since it was
            # picked, leave it alone.
            if not repo.transition_search(session, search_id=search_id, from_states=["pending"],
                                          to_state="running"):
                return
        self.current = search_id
        write_claim(self.home, search_id)
        try:
            log.info("running search %s", search_id)
            coordinator = EmbeddedCoordinator(
                sessions=self.sessions, storage_url=self.database_url, search_id=search_id,
                workers=self.workers, threads=self.threads)
            coordinator.run()
            log.info("search %s finished", search_id)
        except Shutdown:
            fail_unfinished(self.sessions, self.database_url, search_id,
                            INTERRUPTED.format(why="shut down"), reword_failed=True)
            raise
        except Exception as exc:  # the coordinator marks it failed; keep serving others
            log.error("search %s failed: %s: %s", search_id, type(exc).__name__, exc)
            # The coordinator records its own failures; this covers what happens before
            # it starts (a study or dataset that cannot be loaded), or the loop would
            # pick the same pending search forever.
            fail_unfinished(self.sessions, self.database_url, search_id,
                            f"the runner could not run this search: {type(exc).__name__}: {exc}")
        finally:
            clear_claim(self.home)
            self.current = None

    def loop(self) -> None:
        """Take the runner lock, recover a crashed predecessor's search, then run searches."""
        with runner_lock(self.home, poll_s=self.poll_s,
                         should_stop=lambda: self.stopping or self._orphaned()) as held:
            if not held:
                return
            recover(self.home, self.sessions, self.database_url)
            log.info("runner ready (workers=%s)", self.workers)
            while not self.stopping and not self._orphaned():
                self.tick_schedules()
                search_id = self.next_search()
                if search_id is None:
                    time.sleep(self.poll_s)
                    continue
                self.run_one(search_id)

    def close(self) -> None:
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
    """``python -m search.runner [--workers N]``; settings from the ACTSEARCH_* environment."""
    from core.settings import get_settings
    from store.db import init_db

    parser = argparse.ArgumentParser(prog="python -m search.runner", description=__doc__)
    parser.add_argument("--workers", type=int, default=None, help="training processes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between polls when idle")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s runner %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = get_settings()
    # Background work: the API beside it answers first (its training children go lower still).
    from search.limits import apply_process_limits

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
