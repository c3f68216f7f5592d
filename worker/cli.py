"""``actsearch worker`` and ``actsearch beat``: the distributed mode's long-running processes.

Module level imports only typer and the standard library: ``actsearch search``
registers these commands without paying for Celery, and the worker's parent
process never imports torch (so it never initialises CUDA; its prefork
children do, each after seeing only its own GPU).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _distributed_settings() -> tuple[str, str]:
    """(database url, broker url), or a one-line error when this is not a distributed setup."""
    from core.settings import get_settings

    settings = get_settings()
    if not settings.broker_url:
        _fail("ACTSEARCH_BROKER_URL is not set: workers need a broker (redis://host:6379/0)")
    url = settings.resolved_database_url
    if not url.startswith("postgresql"):
        _fail("distributed mode needs PostgreSQL: set ACTSEARCH_DATABASE_URL="
              "postgresql+psycopg://user:password@host/db (SQLite allows one writer only)")
    assert settings.broker_url is not None
    return url, settings.broker_url


def worker(
    concurrency: Annotated[int | None, typer.Option(
        help="training processes (default 1, or one per --gpu entry)", min=1)] = None,
    gpu: Annotated[str | None, typer.Option(
        help="GPU index, or a comma-separated list: one process per GPU, each seeing only "
             "its own (CUDA_VISIBLE_DEVICES)")] = None,
    hostname: Annotated[str | None, typer.Option(
        "--hostname", "-n", help="Celery node name (default actsearch-<pid>@<host>)")] = None,
    loglevel: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Run a Celery worker that trains populations (distributed mode).

    Prefork pool; one process per GPU (or --concurrency on CPU), one torch thread
    per process unless ACTSEARCH_TORCH_THREADS says otherwise. Migrates the
    database to the current schema first.
    """
    gpus = [g.strip() for g in gpu.split(",") if g.strip()] if gpu else []
    if gpus and concurrency not in (None, len(gpus)):
        _fail(f"--gpu lists {len(gpus)} GPU(s); concurrency is one process per GPU "
              f"(drop --concurrency or make it {len(gpus)})")
    processes = len(gpus) or concurrency or 1
    url, _ = _distributed_settings()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        os.environ["ACTSEARCH_WORKER_GPUS"] = ",".join(gpus)
    threads = os.environ.get("ACTSEARCH_TORCH_THREADS") or "1"
    if threads == "0":
        threads = "1"
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)  # read by torch when a child imports it

    from store.db import init_db

    init_db(url)
    from search.storage import init_optuna_schema

    init_optuna_schema(url)
    from core.settings import get_settings
    from worker.app import get_app

    ws = get_settings().worker
    argv = [
        "worker", "--pool=prefork", f"--concurrency={processes}", f"--loglevel={loglevel}",
        "--queues", f"{ws.control_queue},{ws.queue}", "--without-mingle", "--without-gossip",
        "--hostname", hostname or f"actsearch-{os.getpid()}@%h",
    ]
    get_app().worker_main(argv)


def beat(
    schedule_file: Annotated[Path | None, typer.Option(
        help="where beat keeps its last-run times (default ACTSEARCH_HOME/celerybeat-schedule)")]
        = None,
    loglevel: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
) -> None:
    """Run Celery beat: sends the reconciler every ACTSEARCH_WORKER__RECONCILE_INTERVAL_S seconds.

    Run exactly one beat per cluster (a second would only double the reconciler
    passes, which are idempotent).
    """
    _distributed_settings()
    from core.settings import get_settings
    from worker.app import get_app

    path = schedule_file or get_settings().home / "celerybeat-schedule"
    path.parent.mkdir(parents=True, exist_ok=True)
    app = get_app()
    app.Beat(loglevel=loglevel.upper(), schedule=str(path)).run()


COMMANDS: dict[str, Callable[..., Any]] = {"worker": worker, "beat": beat}

if __name__ == "__main__":  # pragma: no cover - `python -m worker.cli worker|beat ...`
    command = sys.argv.pop(1) if len(sys.argv) > 1 else "worker"
    typer.run(COMMANDS[command])
