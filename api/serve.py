"""``actsearch serve``: the API, plus the embedded runner that executes searches.

Module level imports only typer and the standard library so ``actsearch --help``
stays fast; FastAPI and uvicorn are imported when the command runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from core.settings import Settings

RUNNER_STOP_TIMEOUT_S = 30.0


def _start_runner(workers: int | None) -> subprocess.Popen[bytes]:
    """``python -m search.coordinator.runner`` as a child; it inherits the ACTSEARCH_* environment."""
    cmd = [sys.executable, "-m", "search.coordinator.runner"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    return subprocess.Popen(cmd, env=dict(os.environ))


def _stop_runner(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited in time."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=RUNNER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _RunnerSupervisor:
    """Keeps the runner alive: a runner that dies unexpectedly is started again.

    The restarted runner resumes the search its predecessor was running (see
    ``search.coordinator.runner``), then carries on with the pending ones.
    """

    def __init__(self, workers: int | None, settings: Settings) -> None:
        self.workers = workers
        self.settings = settings
        self.proc = _start_runner(workers)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="runner-supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            code = self.proc.poll()
            if code is not None and not self._stopping.is_set():
                typer.echo(f"actsearch: search runner exited with status {code}; restarting",
                           err=True)
                if self._stopping.wait(backoff):
                    return
                self.proc = _start_runner(self.workers)
                backoff = min(backoff * 2, 30.0)
            self._stopping.wait(1.0)

    def stop(self) -> None:
        self._stopping.set()
        _stop_runner(self.proc)
        self._interrupt_orphans()

    def _interrupt_orphans(self) -> None:
        """A runner killed before its cleanup (it had RUNNER_STOP_TIMEOUT_S) leaves its
        search running: record it as interrupted now (the next start resumes it)."""
        from search.coordinator.runner import interrupt_orphans
        from store.db import make_engine, session_factory

        url = self.settings.resolved_database_url
        engine = make_engine(url)
        try:
            interrupt_orphans(session_factory(engine), self.settings.home)
        except Exception as exc:  # the next start resumes it all the same
            typer.echo(f"actsearch: could not record the interrupted search: {exc}", err=True)
        finally:
            engine.dispose()


def _note_signal(signum: int, _frame: object) -> None:
    """Stand-in handler: the shutdown it asks for is already under way."""


def _auth_note(settings: Settings, url: str) -> str:
    """One line on authentication, with the command that makes the first key if none exists."""
    from store import repo
    from store.db import make_engine, session_factory

    if not settings.auth_enabled:
        return ("actsearch serve: auth off (every caller is an anonymous admin); "
                "ACTSEARCH_AUTH__ENABLED=true requires API keys")
    engine = make_engine(url)
    try:
        with session_factory(engine)() as session:
            live = [k for k in repo.list_api_keys(session) if k.revoked_at is None]
    finally:
        engine.dispose()
    if not live:
        return ("actsearch serve: auth on and no API key exists yet: create one with "
                "'actsearch keys create --owner admin --admin'")
    return f"actsearch serve: auth on ({len(live)} active API key(s))"


def serve_command(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    workers: Annotated[int | None, typer.Option(
        help="training processes of the embedded runner (default: ACTSEARCH_WORKERS)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    api_workers: Annotated[int, typer.Option(
        min=1, help="API processes (uvicorn workers): 2 lets reads use both cores of a "
                    "2-core machine; rate limits are then per process")] = 1,
) -> None:
    """Run the HTTP API; in embedded mode also the runner that executes submitted searches."""
    import uvicorn

    from api.main import create_app
    from api.timeouts import TimedH11Protocol
    from core.settings import get_settings
    from store.db import init_db

    # The Host check serves the name it is bound to; the API's worker processes read the
    # same variable (they build their app from the environment).
    os.environ["ACTSEARCH_HTTP__BOUND_HOST"] = host
    get_settings.cache_clear()
    settings = get_settings()
    server_options: dict[str, object] = {"timeout_keep_alive": settings.http.timeout_keep_alive_s}
    if settings.http.request_read_timeout_s is not None:  # opt-in: see HttpSettings
        TimedH11Protocol.read_timeout_s = settings.http.request_read_timeout_s
        server_options["http"] = TimedH11Protocol
    url = settings.resolved_database_url
    init_db(url)
    from search.storage import init_optuna_schema

    init_optuna_schema(url)  # before any request: concurrent first submissions race on it
    supervisor = None
    if not settings.distributed:
        supervisor = _RunnerSupervisor(workers, settings)
        mode = f"embedded (runner with {workers or settings.workers} training process(es))"
    else:
        mode = "distributed (searches run on Celery workers)"
    typer.echo(f"actsearch serve: {mode}; database {settings.resolved_database_url.split('@')[-1]}; "
               f"http://{host}:{port}/docs", err=True)
    typer.echo(_auth_note(settings, url), err=True)
    # uvicorn handles SIGINT/SIGTERM while it serves, then re-raises the signal it
    # caught once it has shut down; with the default handlers that would kill this
    # process before the runner is stopped. No-op handlers let it return here.
    previous = {sig: signal.signal(sig, _note_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if api_workers > 1:  # each process builds its app from the same ACTSEARCH_* environment
            uvicorn.run("api.main:create_app", factory=True, host=host, port=port,
                        log_level=log_level, workers=api_workers, **server_options)
        else:
            uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level,
                        **server_options)
    finally:
        if supervisor is not None:
            supervisor.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
