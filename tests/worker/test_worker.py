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
from typing import Any

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
    from models import kernels
    from search.coordinator.data import cached_keys

    # the worker process kept the prepared data across its tasks (loaded once) and points
    # torch's compile cache at the shared home
    assert len(cached_keys()) == 1
    assert kernels._cache_dir is not None
    assert run_population_task(ran[0])["status"] == "skipped"
    with sessions() as session:
        search = repo.get_search(session, search_id=search_id)
        assert search.state == "complete" and search.best["family"] == "relu"
    summary = reconcile_task()
    assert summary["stale"] == [] and summary["enqueued"] == []


def test_a_completed_search_gets_its_analysis_task_and_the_reconciler_resends_lost_ones(
        memory_cluster: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    import worker.tasks as tasks
    from search.service import create_search
    from search.spec import SearchSpec
    from store import repo
    from worker.app import ANALYSE, get_app

    sent: list[tuple[str, list[Any]]] = []
    app = get_app()
    real_send = app.send_task

    def record(name: str, args: Any = None, **kwargs: Any) -> Any:
        sent.append((name, list(args or [])))
        return real_send(name, args=args, **kwargs)

    monkeypatch.setattr(app, "send_task", record)
    sessions = tasks.resources().sessions
    with sessions.begin() as session:
        search_id = create_search(
            session=session, storage_url=memory_cluster,
            spec=SearchSpec(dataset="iris", architecture="mlp:8", families=["prelu"], trials=2,
                            epochs=2, population_size=2, finalist_seeds=1, batch_size=32),
        ).id
    queue = list(tasks.start_search_task(search_id)["enqueued"])
    while queue:
        queue += tasks.run_population_task(queue.pop(0))["enqueued"]
    analyses = [args for name, args in sent if name == ANALYSE]
    assert analyses == [[search_id]]  # enqueued once, by the task that completed the search
    with sessions() as session:
        row = repo.get_search(session, search_id=search_id)
        assert row.state == "complete" and row.analysis_state == "pending"
    assert tasks.analyse_search_task(search_id)["state"] == "done"
    assert tasks.analyse_search_task(search_id)["state"] == "done"  # a duplicate does nothing

    def set_analysis(state: str, finished_ago_s: float) -> None:
        with sessions.begin() as session:
            repo.set_analysis_state(session, search_id=search_id, state=state)
            repo.get_search(session, search_id=search_id).finished_at = (
                dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=finished_ago_s))

    monkeypatch.setattr(tasks, "_queue_is_empty", lambda _app, _queue: True)
    set_analysis("running", 0)  # its worker died: nobody holds the analysis lock
    assert tasks.reconcile_task()["analyses"] == [search_id]
    set_analysis("pending", 0)  # just completed: its own message is on its way
    assert tasks.reconcile_task()["analyses"] == []
    set_analysis("pending", 10_000)  # long ago, and the queue is empty: the message was lost
    assert tasks.reconcile_task()["analyses"] == [search_id]
    monkeypatch.setattr(tasks, "_queue_is_empty", lambda _app, _queue: False)
    assert tasks.reconcile_task()["analyses"] == []  # it may still wait in the queue
    set_analysis("done", 10_000)
    assert tasks.reconcile_task()["analyses"] == []


# --------------------------------------------------------------------------- transient errors


def _raised_from(wrapper: BaseException, cause: BaseException) -> BaseException:
    """``wrapper`` raised ``from cause``, as Optuna's storage raises it."""
    try:
        try:
            raise cause
        except BaseException as inner:
            raise wrapper from inner
    except BaseException as outer:
        return outer


def _refused() -> BaseException:
    import sqlalchemy.exc

    return sqlalchemy.exc.OperationalError(
        "SELECT 1", {}, Exception('connection to server at "127.0.0.1", port 5432 failed: '
                                  "Connection refused"))


def test_optuna_storage_error_is_transient_only_when_it_wraps_a_connection_error() -> None:
    import optuna
    import sqlalchemy.exc

    from search.coordinator.steps import is_transient

    storage_error = optuna.exceptions.StorageInternalError
    outage = _raised_from(storage_error("An exception is raised during the commit. This "
                                        "typically happens due to invalid data in the "
                                        "commit, e.g. exceeding max length."), _refused())
    too_long = _raised_from(storage_error("... e.g. exceeding max length."),
                            sqlalchemy.exc.DataError("INSERT", {}, Exception("value too long")))
    bare = storage_error("no cause")
    assert is_transient(outage)
    assert not is_transient(too_long)
    assert not is_transient(bare) and not is_transient(ValueError("x"))


def test_the_task_side_check_sees_wrapped_outages_and_names_their_cause() -> None:
    import optuna
    import sqlalchemy.exc

    from search.coordinator.steps import ClaimInterrupted, ClaimToken, root_cause
    from worker.tasks import is_transient_error

    outage = _raised_from(optuna.exceptions.StorageInternalError("e.g. exceeding max length"),
                          _refused())
    assert is_transient_error(outage)
    assert isinstance(root_cause(outage), sqlalchemy.exc.OperationalError)
    interrupted = _raised_from(ClaimInterrupted(ClaimToken(1, "w", 1)), outage)
    assert is_transient_error(interrupted)
    assert isinstance(root_cause(interrupted), sqlalchemy.exc.OperationalError)
    too_long = _raised_from(optuna.exceptions.StorageInternalError("x"),
                            sqlalchemy.exc.DataError("INSERT", {}, Exception("value too long")))
    assert not is_transient_error(too_long)


def test_publish_retries_span_the_transient_retry_budget() -> None:
    from worker.tasks import publish_retry_policy

    ws = WorkerSettings(transient_retry_budget_s=300, transient_retry_max_backoff_s=30)
    policy = publish_retry_policy(ws)
    waits = [min(float(i), 30.0) for i in range(int(policy["max_retries"]))]
    assert sum(waits) >= 300 and sum(waits[:-1]) < 300 and policy["interval_max"] == 30


def test_retries_exhausted_say_the_database_was_unreachable_and_for_how_long(
    memory_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import worker.tasks
    from worker.tasks import Unreachable, run_population_task

    port = _closed_port()
    monkeypatch.setenv("ACTSEARCH_DATABASE_URL", f"postgresql+psycopg://x@127.0.0.1:{port}/x")
    monkeypatch.setenv("ACTSEARCH_WORKER__TRANSIENT_RETRY_BUDGET_S", "60")
    get_settings.cache_clear()
    worker.tasks._resources = None
    with pytest.raises(Unreachable, match=r"the database was unreachable for 9\d s") as info:
        run_population_task(1, transient_since=time.time() - 90)
    assert "max length" not in str(info.value) and "OperationalError" in str(info.value)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_claim_cut_by_an_outage_is_released_by_its_retry_and_trained_once(
    memory_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first try dies on Optuna's wrapped connection error after asking its trial; the
    retry, given the claim, hands the population back and trains the same trial."""
    import optuna

    from search.coordinator import inline, run_population
    from search.coordinator.steps import ClaimInterrupted
    from search.service import create_search
    from search.spec import SearchSpec
    from store import repo
    from worker.tasks import resources, start_search_task

    sessions = resources().sessions
    with sessions.begin() as session:
        search_id = create_search(
            session=session, storage_url=memory_cluster,
            spec=SearchSpec(dataset="iris", architecture="mlp:8", families=["relu"], trials=1,
                            epochs=2, population_size=1, finalist_seeds=2, batch_size=32),
        ).id
    (pid,) = start_search_task(search_id)["enqueued"]
    real = inline.train_population

    def outage(*args: object, **kwargs: object) -> object:
        raise _raised_from(optuna.exceptions.StorageInternalError("e.g. exceeding max length"),
                           _refused())

    monkeypatch.setattr(inline, "train_population", outage)
    run = {"sessions": sessions, "population_id": pid, "storage_url": memory_cluster}
    with pytest.raises(ClaimInterrupted) as info:
        run_population(**run, worker_name="w1:1")
    token = info.value.token
    with sessions() as session:
        pop = repo.get_population(session, population_id=pid)
        assert (pop.state, pop.worker, pop.attempts) == ("running", "w1:1", token.attempt)
        asked = list(pop.trial_numbers)
    assert len(asked) == 1
    monkeypatch.setattr(inline, "train_population", real)
    # a message without the token (a duplicate) must not take a running population
    assert run_population(**run, worker_name="w2:2").status == "skipped"
    # the wrong claim (another attempt) is not released either
    wrong = type(token)(pid, token.worker, token.attempt + 1)
    assert run_population(**run, worker_name="w2:2", release=wrong).status == "skipped"
    outcome = run_population(**run, worker_name="w2:2", release=token)
    assert outcome.status == "complete" and list(outcome.trials) == asked
    with sessions() as session:
        pop = repo.get_population(session, population_id=pid)
        assert (pop.state, pop.attempts, list(pop.trial_numbers)) == ("complete", 1, asked)
        rows = repo.list_trials(session, search_id=search_id, phase="search", limit=None)
        assert [r.trial_number for r in rows] == asked
