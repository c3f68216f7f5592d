"""Many owners submit their first search on the same built-in at the same instant.

Each submission registers the built-in as its owner's dataset, then creates the
search's Optuna study through Optuna's own connection. A registration still holding
SQLite's write lock made that study insert, and every other writer behind it, wait
for the busy timeout and fail ("database is locked": 500s, later 503s). Real
``actsearch serve`` with auth on, real concurrent HTTP requests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from store import repo
from store.db import make_engine, session_factory
from tests.utils.live_server import live_server

OWNERS = 12
SPEC = {"dataset": "digits", "architecture": "mlp:8", "families": ["relu"], "trials": 1,
        "epochs": 1, "population_size": 1, "finalist_seeds": 1}


async def _submit_all(url: str, keys: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return list(await asyncio.gather(*(
            client.post("/searches", json=SPEC, headers={"Authorization": f"Bearer {key}"})
            for key in keys)))


def test_owners_first_searches_on_one_builtin_at_once_all_succeed(tmp_path: Path) -> None:
    with live_server(tmp_path, {"ACTSEARCH_AUTH__ENABLED": "true"}) as server:
        engine = make_engine(f"sqlite:///{tmp_path / 'actsearch.db'}")
        with session_factory(engine).begin() as session:
            keys = [repo.create_api_key(session, owner=f"owner{i}")[1] for i in range(OWNERS)]
        engine.dispose()
        answers = asyncio.run(_submit_all(server.url, keys))
        assert [r.status_code for r in answers] == [201] * OWNERS, \
            [(r.status_code, r.text[:200]) for r in answers if r.status_code != 201]
        owners = {r.json()["owner"] for r in answers}
        assert owners == {f"owner{i}" for i in range(OWNERS)}
