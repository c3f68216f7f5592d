"""Errors users see say what went wrong, never how the server is laid out; names are exact.

A failed trial's ``error`` used to hold a Python traceback with the server's file paths
(``File "/srv/actsearch/models/engine.py", line 212``). Training processes now store the
message only (the traceback goes to their log) and the API strips tracebacks and source
paths from any stored error it serves, rows written before included.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from core.errors import InvalidInput, public_message
from core.settings import Settings
from search.coordinator.limits import describe_failure
from search.service import create_search
from search.spec import parse_spec
from store import repo
from store.repo.keys import check_owner
from tests.api.conftest import TINY_SPEC

TRACEBACK = (
    "ValueError: candidate 3 diverged\n"
    "Traceback (most recent call last):\n"
    '  File "/srv/actsearch/search/worker_process.py", line 88, in serve\n'
    "    result = train_population(arch, family)\n"
    '  File "/srv/actsearch/.venv/lib/python3.11/site-packages/torch/nn/modules/module.py", '
    "line 1736, in _call_impl\n"
    "ValueError: candidate 3 diverged\n"
)


def _deep_failure() -> ValueError:
    def inner() -> None:
        raise ValueError("loss is NaN at /srv/actsearch/models/engine.py:212")

    try:
        inner()
    except ValueError as exc:
        return exc
    raise AssertionError("unreachable")


def test_describe_failure_stores_the_message_not_the_traceback() -> None:
    message = describe_failure(_deep_failure())
    assert message.startswith("ValueError: loss is NaN at engine.py:212")
    assert "Traceback" not in message and "/srv/" not in message and 'File "' not in message
    oom = describe_failure(MemoryError("cannot allocate 12 GB"), memory_limit_mb=512)
    assert oom.startswith("out of memory:") and "MEMORY_LIMIT_MB=512" in oom
    assert "Traceback" not in oom


def test_public_message_keeps_the_message_and_drops_paths() -> None:
    assert public_message(TRACEBACK) == "ValueError: candidate 3 diverged"
    only_tb = TRACEBACK.split("\n", 1)[1]
    assert public_message(only_tb) == "ValueError: candidate 3 diverged"
    assert public_message("out of memory: use a smaller batch") == "out of memory: use a smaller batch"
    assert public_message(None) is None


def test_a_stored_traceback_is_served_as_its_message(client: TestClient,
                                                     settings: Settings) -> None:
    sessions = client.app.state.sessions  # type: ignore[attr-defined]
    with sessions.begin() as session:  # a search of its own: the shared one stays as it is
        search_id = create_search(session=session, spec=parse_spec(TINY_SPEC),
                                  storage_url=settings.resolved_database_url,
                                  name="public errors").id
        row = repo.add_trial(session, search_id=search_id, family="relu",
                             family_params={}, hparams={"lr": 0.01}, seed=0, phase="finalist",
                             source_trial_number=0, state="failed", error=TRACEBACK)
        trial_id = row.id
    served = [client.get(f"/trials/{trial_id}").json()["error"]]
    served += [t["error"] for t in client.get(f"/searches/{search_id}/trials",
                                              params={"limit": 500}).json()["data"]
               if t["id"] == trial_id]
    assert served == ["ValueError: candidate 3 diverged"] * 2
    for text in served:
        assert "Traceback" not in text and "/srv/" not in text


@pytest.mark.parametrize("owner", ["alice\n", "alice\r\n", "\nalice", "ali ce"])
def test_owner_names_are_matched_whole(owner: str) -> None:
    with pytest.raises(InvalidInput, match="invalid owner"):
        check_owner(owner)


def test_an_admin_cannot_create_a_key_for_an_owner_ending_in_a_newline(
        client: TestClient) -> None:
    r = client.post("/admin/keys", json={"owner": "alice\n"})
    assert r.status_code == 422, r.text
    assert "invalid owner" in r.json()["detail"]
