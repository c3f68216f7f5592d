"""The Celery side without servers: configuration, import arrows, CLI errors, task functions.

Task functions are called directly (in this process, on SQLite and Kombu's
in-memory transport); the real worker processes are in tests/integration.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.settings import Settings, WorkerSettings, get_settings
from worker.app import RECONCILE, START, create_app


def test_worker_modules_never_import_torch_in_the_parent() -> None:
    """The worker's parent imports these; torch (and CUDA) must wait for the children."""
    code = (
        "import sys, worker.app, worker.tasks, worker.enqueue, worker.cli\n"
        "from actsearch.cli import services\n"
        "bad = {'torch', 'optuna', 'models', 'search'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_worker_cli_module_imports_only_typer_and_stdlib() -> None:
    code = (
        "import sys; before = set(sys.modules)\n"
        "import worker.cli\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "assert not new & {'celery', 'kombu', 'sqlalchemy', 'torch', 'redis'}, new\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_app_is_configured_for_long_tasks_and_lost_workers() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:1/0", database_url="postgresql://x/y")
    ws = WorkerSettings(task_deadline_s=7200, reconcile_interval_s=5)
    conf = create_app(settings, ws).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_disable_prefetch
    assert conf.broker_transport_options["visibility_timeout"] > ws.task_deadline_s
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.task_ignore_result and conf.task_time_limit is None
    assert conf.task_routes[START]["queue"] == conf.task_routes[RECONCILE]["queue"] == ws.control_queue
    assert conf.task_default_queue == ws.queue
    beat = conf.beat_schedule["reconcile"]
    assert beat["task"] == RECONCILE and beat["schedule"] == 5


def test_worker_settings_refuse_a_staleness_limit_live_workers_would_hit() -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        WorkerSettings(heartbeat_interval_s=10, stale_after_s=15)
    assert WorkerSettings(heartbeat_interval_s=1, stale_after_s=3).stale_after_s == 3


def test_each_prefork_child_sees_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from billiard.process import current_process

    from worker.app import _pick_gpu

    monkeypatch.setenv("ACTSEARCH_WORKER_GPUS", "3,5")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(current_process(), "index", 1, raising=False)
    _pick_gpu()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ACTSEARCH_BROKER_URL": ""}, "ACTSEARCH_BROKER_URL is not set"),
        ({"ACTSEARCH_BROKER_URL": "redis://127.0.0.1:1/0",
          "ACTSEARCH_DATABASE_URL": "sqlite:////tmp/x.db"}, "needs PostgreSQL"),
    ],
)
def test_worker_and_beat_refuse_a_non_distributed_setup(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actsearch.cli import app

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        for command in ("worker", "beat"):
            result = CliRunner().invoke(app, [command])
            assert result.exit_code == 2, result.output
            assert message in result.output
    finally:
        get_settings.cache_clear()


@pytest.fixture
def memory_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Settings for SQLite + Kombu's in-memory broker; every cache reset around the test."""
    import worker.tasks
    from search.coordinator import clear_caches
    from worker.app import get_app

    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    monkeypatch.setenv("ACTSEARCH_HOME", str(tmp_path))
    monkeypatch.setenv("ACTSEARCH_DATABASE_URL", url)
    monkeypatch.setenv("ACTSEARCH_BROKER_URL", "memory://")
    monkeypatch.setenv("ACTSEARCH_TORCH_THREADS", "1")

    def reset() -> None:
        get_settings.cache_clear()
        get_app.cache_clear()
        clear_caches()
        worker.tasks._resources = None

    reset()
    from store.db import init_db

    init_db(url)
    yield url
    reset()


def test_task_functions_run_a_search_through_their_follow_ups(memory_cluster: str) -> None:
    from search.service import create_search
    from search.spec import SearchSpec
    from store import repo
    from worker.tasks import reconcile_task, resources, run_population_task, start_search_task

    sessions = resources().sessions
    with sessions.begin() as session:
        search_id = create_search(
            session=session, storage_url=memory_cluster,
            spec=SearchSpec(dataset="iris", architecture="mlp:8", families=["relu"], trials=2,
                            epochs=2, population_size=1, finalist_seeds=2, batch_size=32),
        ).id
    started = start_search_task(search_id)
    queue = list(started["enqueued"])
    assert len(queue) == 2
    assert start_search_task(search_id)["enqueued"] == []  # a duplicate start plans nothing
    ran = []
    while queue:
        pid = queue.pop(0)
        out = run_population_task(pid)
        assert out["status"] == "complete"
        ran.append(pid)
        queue += out["enqueued"]
    assert len(ran) == 3  # two search populations, one finalist population
    assert run_population_task(ran[0])["status"] == "skipped"
    with sessions() as session:
        search = repo.get_search(session, search_id=search_id)
        assert search.state == "complete" and search.best["family"] == "relu"
    summary = reconcile_task()
    assert summary["stale"] == [] and summary["enqueued"] == []
