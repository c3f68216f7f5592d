"""API fixtures: one SQLite database per session with one tiny finished search in it.

The search (iris, mlp:8, relu + prelu, 4 trials, 3 epochs, 2 finalist seeds) runs
once through :class:`search.coordinator.EmbeddedCoordinator`, so every read endpoint
is tested against real trials, curves, statistics and weights. Tests that write
use their own names so they never disturb what others read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import HttpSettings, LimitSettings, Settings
from search.coordinator import EmbeddedCoordinator
from search.service import create_search
from search.spec import parse_spec
from store.db import init_db, make_engine, session_factory
from tests.utils.analysis import wait_analysis

TINY_SPEC: dict[str, Any] = {
    "dataset": "iris", "architecture": "mlp:8", "families": ["relu", "prelu"], "trials": 4,
    "epochs": 3, "finalist_seeds": 2, "batch_size": 32,
}


class RecordingClient(TestClient):
    """A TestClient that keeps every response, so a fixture can assert none was a 5xx."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.responses: list[httpx.Response] = []

    def request(self, *args: Any, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
        response = super().request(*args, **kwargs)
        self.responses.append(response)
        return response


#: The Hosts that the in-process clients send (Starlette's TestClient, and "svc" of the CLI
#: tests' --server http://svc); the API serves only the names it is told of.
TEST_HOSTS = ("testserver", "svc")


def served_test_hosts() -> HttpSettings:
    """HTTP settings serving :data:`TEST_HOSTS` (a fresh object: tests may change it)."""
    return HttpSettings(allowed_hosts=list(TEST_HOSTS))


def make_settings(home: Path, **limits: Any) -> Settings:
    """Settings for a test home (explicit values: the environment's ACTSEARCH_* do not leak in)."""
    return Settings(home=home, database_url=f"sqlite:///{home / 'actsearch.db'}", broker_url=None,
                    artifact_dir=None, workers=1, limits=LimitSettings(**limits),
                    http=served_test_hosts())


def make_client(settings: Settings) -> RecordingClient:
    return RecordingClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture(scope="session")
def api_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("api-home")


@pytest.fixture(scope="session")
def settings(api_home: Path) -> Settings:
    s = make_settings(api_home)
    init_db(s.resolved_database_url)
    return s


def run_tiny_search(settings: Settings, *, name: str, owner: str | None = None,
                    analyse: bool = False) -> int:
    """Create ``TINY_SPEC`` as ``owner``'s search and run it to completion here (about 5 s).

    ``analyse``: then its curve analysis too (fits, distillation), as ``actsearch search``
    does after printing the leaderboard.
    """
    url = settings.resolved_database_url
    engine = make_engine(url)
    sessions = session_factory(engine)
    with sessions.begin() as session:
        row = create_search(session=session, spec=parse_spec(TINY_SPEC), storage_url=url,
                            owner=owner, name=name)
        search_id = row.id
    EmbeddedCoordinator(sessions=sessions, storage_url=url, search_id=search_id, workers=1,
                        threads=1).run()
    if analyse:
        wait_analysis(sessions, search_id, run_here=True)
    engine.dispose()
    return search_id


@pytest.fixture(scope="session")
def finished_search_id(settings: Settings) -> int:
    """A tiny search run to completion, shared by every read test."""
    return run_tiny_search(settings, name="tiny iris", analyse=True)


@pytest.fixture(scope="session")
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture(scope="session")
def session_client(app: FastAPI) -> Iterator[RecordingClient]:
    with RecordingClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def client(session_client: RecordingClient) -> Iterator[RecordingClient]:
    """The shared client; after the test, no response it gave may have been a 5xx."""
    start = len(session_client.responses)
    yield session_client
    errors = [r for r in session_client.responses[start:] if r.status_code >= 500]
    assert not errors, [(r.request.method, str(r.request.url), r.status_code, r.text[:300])
                        for r in errors]


def assert_error(response: httpx.Response, status: int, *fragments: str) -> str:
    """The response is ``status`` with a JSON ``detail`` string naming every fragment."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.status_code < 500
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail, detail
    for fragment in fragments:
        assert fragment.lower() in detail.lower(), (fragment, detail)
    return detail
