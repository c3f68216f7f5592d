"""Property-based API test: schemathesis against a live ``actsearch serve`` and its /openapi.json.

Every operation of the published schema gets generated requests (valid and
invalid); each response must not be a 5xx, must match the schema declared for
its status, and its status must be one the operation declares. The server runs
with tiny limits (trials, epochs, widths), so searches the generator manages to
submit stay cheap for the embedded runner. It runs twice: auth off (the
embedded default) and auth on with a bearer key of a plain (non-admin) owner.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis  # a dev dependency: this tier must run, not skip, in CI
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    response_schema_conformance,
    status_code_conformance,
)

from store.db import init_db  # noqa: E402
from tests.utils.live_server import LiveServer, live_server  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

#: Generated cases per operation; about 30 operations, two servers, within ~3 minutes on 2 cores.
MAX_EXAMPLES = int(os.environ.get("ACTSEARCH_SCHEMATHESIS_EXAMPLES", "25"))
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]

#: Tiny limits so that whatever the generator submits trains in moments; rate and
#: concurrency limits far above what it sends (throttling is tested elsewhere).
TINY_ENV = {
    "ACTSEARCH_LIMITS__MAX_TRIALS": "2",
    "ACTSEARCH_LIMITS__MAX_EPOCHS": "1",
    "ACTSEARCH_LIMITS__MAX_LAYERS": "2",
    "ACTSEARCH_LIMITS__MAX_WIDTH": "8",
    "ACTSEARCH_LIMITS__MAX_ROWS": "5000",
    "ACTSEARCH_LIMITS__MAX_UPLOAD_BYTES": str(2**20),
    "ACTSEARCH_LIMITS__REQUESTS_PER_SECOND_PER_OWNER": "100000",
    "ACTSEARCH_LIMITS__REQUEST_BURST_PER_OWNER": "100000",
    "ACTSEARCH_LIMITS__MAX_ACTIVE_SEARCHES_PER_OWNER": "100000",
    "ACTSEARCH_WORKERS": "1",
    "ACTSEARCH_TORCH_THREADS": "1",
}


def _bearer_key(home: Path) -> str:
    """A key for a plain owner, written into the server's database before it starts."""
    from sqlalchemy.orm import sessionmaker

    from store import repo
    from store.db import make_engine

    url = f"sqlite:///{home / 'actsearch.db'}"
    init_db(url)
    engine = make_engine(url)
    try:
        with sessionmaker(engine).begin() as session:
            _, raw = repo.create_api_key(session, owner="fuzzer", name="schemathesis")
    finally:
        engine.dispose()
    return raw


@pytest.fixture(scope="module")
def server_off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("fuzz-auth-off")
    with live_server(home, {**TINY_ENV, "ACTSEARCH_AUTH__ENABLED": "false"}) as server:
        yield server


@pytest.fixture(scope="module")
def server_on(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    home = tmp_path_factory.mktemp("fuzz-auth-on")
    key = _bearer_key(home)
    with live_server(home, {**TINY_ENV, "ACTSEARCH_AUTH__ENABLED": "true"}) as server:
        yield server, key


_SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                     suppress_health_check=list(HealthCheck), print_blob=False, database=None)


def _seed(url: str, headers: dict[str, str]) -> None:
    """One finished tiny search (with its dataset, trials, curves, weights) and a schedule.

    Generated path ids are mostly small integers, so with these in place the read
    endpoints answer 200 with real bodies that get checked against their schemas,
    not only 404s.
    """
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        r = client.post("/searches", json={
            "dataset": "iris", "architecture": "mlp:4", "families": ["relu", "prelu"],
            "trials": 2, "epochs": 1, "finalist_seeds": 1, "batch_size": 64})
        assert r.status_code == 201, r.text
        search_id = r.json()["id"]
        r = client.post("/schedules", json={"cron": "0 3 * * *", "template": {
            "kind": "add_trials", "search_id": search_id, "trials": 2}})
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 120
        while (state := client.get(f"/searches/{search_id}").json()["state"]) not in (
                "complete", "failed"):
            assert time.monotonic() < deadline, f"seed search still {state}"
            time.sleep(0.5)
        assert state == "complete", client.get(f"/searches/{search_id}").json()["error"]


def _fuzz(schema: Any, base_url: str, headers: dict[str, str]) -> tuple[int, list[str]]:
    """Run every operation with positive and negative cases; (operations, failure reports).

    Schemathesis' pytest integration cannot load a schema from a fixture under this
    pytest, so the operations are driven through its documented Hypothesis strategies.
    """
    failures: list[str] = []
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        count += 1
        strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                             operation.as_strategy(GenerationMode.NEGATIVE))

        @_SETTINGS
        @given(case=strategy)
        def run(case: Any) -> None:
            case.call_and_validate(base_url=base_url, checks=CHECKS, headers=headers, timeout=30)

        try:
            run()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a FailureGroup (a BaseExceptionGroup): report them all
            failures.append(f"{operation.label}: {str(exc)[:3000]}")
    return count, failures


def test_api_auth_off(server_off: LiveServer) -> None:
    _seed(server_off.url, {})
    schema = schemathesis.openapi.from_url(f"{server_off.url}/openapi.json")
    count, failures = _fuzz(schema, server_off.url, {})
    assert count >= 20, count  # every router made it into the schema
    assert not failures, "\n\n".join(failures) + f"\n\nserver log:\n{server_off.log}"


def test_api_auth_on(server_on: tuple[LiveServer, str]) -> None:
    server, key = server_on
    headers = {"Authorization": f"Bearer {key}"}
    # Auth really is on: the key is what lets the generated requests through.
    assert httpx.get(f"{server.url}/datasets", timeout=10).status_code == 401
    assert httpx.get(f"{server.url}/datasets", headers=headers, timeout=10).status_code == 200
    _seed(server.url, headers)
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    count, failures = _fuzz(schema, server.url, headers)
    assert count >= 20, count
    assert not failures, "\n\n".join(failures) + f"\n\nserver log:\n{server.log}"
