"""One owner's slow operations cannot stall the others: a bound per owner, a pool of their own.

48 concurrent built-in generations from one owner used to fill FastAPI's shared thread
pool, and another owner's ``GET /searches/1`` waited 72 s. Here a slow operation is
held open (its work blocks on an event) to show what happens while it runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api import services
from core.settings import AuthSettings, LimitSettings, Settings
from store import repo
from store.db import init_db, make_engine, session_factory
from tests.api.conftest import served_test_hosts


@pytest.fixture
def two_owners(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'a.db'}",
                        broker_url=None, auth=AuthSettings(enabled=True),
                        limits=LimitSettings(max_slow_operations_per_owner=1), http=served_test_hosts())
    init_db(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    with session_factory(engine).begin() as session:
        keys = {o: repo.create_api_key(session, owner=o)[1] for o in ("alice", "bob")}
    engine.dispose()
    from api.main import create_app

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, {o: {"Authorization": f"Bearer {k}"} for o, k in keys.items()}


class _Held:
    """Stands in for built-in generation: blocks until released, records its thread."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.threads: list[str] = []
        self.real = services.register_builtin

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.threads.append(threading.current_thread().name)
        self.started.set()
        assert self.release.wait(30)
        return self.real(*args, **kwargs)


def test_over_the_bound_answers_429_and_reads_keep_answering(
        two_owners: tuple[TestClient, dict[str, dict[str, str]]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    client, headers = two_owners
    held = _Held()
    monkeypatch.setattr(services, "register_builtin", held)
    answers: list[Any] = []
    first = threading.Thread(target=lambda: answers.append(client.post(
        "/datasets/builtin", json={"builtin": "iris"}, headers=headers["alice"])))
    first.start()
    try:
        assert held.started.wait(30)
        # alice's second slow operation is refused at once, saying which setting bounds it
        start = time.perf_counter()
        r = client.post("/datasets/builtin", json={"builtin": "wine"}, headers=headers["alice"])
        assert r.status_code == 429, r.text
        assert r.headers["Retry-After"].isdigit()
        assert "ACTSEARCH_LIMITS__MAX_SLOW_OPERATIONS_PER_OWNER = 1" in r.json()["detail"]
        export = client.get("/searches/1/export", headers=headers["alice"])
        assert export.status_code == 429, export.text  # exports share the bound
        # so does a search whose built-in would be generated on first use ...
        spec = {"architecture": "mlp:8", "families": ["relu"], "trials": 2, "epochs": 1}
        generating = client.post("/searches", json={**spec, "dataset": "mnist1d"},
                                 headers=headers["alice"])
        assert generating.status_code == 429, generating.text
        assert "generating builtin 'mnist1d'" in generating.json()["detail"]
        # ... but not one on a bundled table, which is only loaded
        assert client.post("/searches", json={**spec, "dataset": "wine"},
                           headers=headers["alice"]).status_code == 201
        # reads answer while it runs, alice's own and bob's
        for who in ("alice", "bob"):
            assert client.get("/datasets", headers=headers[who]).status_code == 200
        assert client.get("/health").status_code == 200
        assert time.perf_counter() - start < 10
    finally:
        held.release.set()
        first.join(30)
    assert answers and answers[0].status_code == 201, answers
    assert held.threads == ["actsearch-slow_0"]  # not one of the request threads
    # the slot is free again
    monkeypatch.setattr(services, "register_builtin", held.real)
    assert client.post("/datasets/builtin", json={"builtin": "wine"},
                       headers=headers["alice"]).status_code == 201


def test_each_owner_has_slots_of_their_own(
        two_owners: tuple[TestClient, dict[str, dict[str, str]]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    client, headers = two_owners
    held = _Held()
    monkeypatch.setattr(services, "register_builtin", held)
    first = threading.Thread(target=lambda: client.post(
        "/datasets/builtin", json={"builtin": "iris"}, headers=headers["alice"]))
    first.start()
    try:
        assert held.started.wait(30)
        monkeypatch.setattr(services, "register_builtin", held.real)
        r = client.post("/datasets/builtin", json={"builtin": "iris"}, headers=headers["bob"])
        assert r.status_code == 201, r.text
    finally:
        held.release.set()
        first.join(30)


def test_callers_of_the_same_work_share_one_run_and_one_slot() -> None:
    """run_shared: concurrent callers with one key get one result from one run, holding
    one of the owner's slots (a third distinct key would still get its 429)."""
    import asyncio
    import threading

    from api.slow import SlowOperations

    slow = SlowOperations(per_owner=1, threads=2)
    release = threading.Event()
    calls: list[int] = []

    def work() -> str:
        calls.append(1)
        release.wait(5)
        return "done"

    async def main() -> list[str]:
        first = asyncio.ensure_future(slow.run_shared("k", "ann", "work", work))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(slow.run_shared("k", "ann", "work", work))
        await asyncio.sleep(0.05)
        assert slow.in_flight("ann") == 1
        release.set()
        return list(await asyncio.gather(first, second))

    try:
        assert asyncio.run(main()) == ["done", "done"]
        assert len(calls) == 1
    finally:
        slow.shutdown()
