"""API keys over HTTP and the CLI: 401s, revocation, the admin API, hashing, rate limits."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.limits import TokenBuckets
from core.settings import AuthSettings, LimitSettings, Settings
from store import repo
from store.db import init_db, make_engine, session_factory
from tests.api.conftest import TINY_SPEC, RecordingClient, assert_error, make_client, make_settings
from tests.utils.cli import run_cli


def _settings(home: Path, *, enabled: bool | None = True, **limits: Any) -> Settings:
    s = make_settings(home, **limits).model_copy(update={"auth": AuthSettings(enabled=enabled)})
    init_db(s.resolved_database_url)
    return s


def _key(settings: Settings, owner: str, admin: bool = False) -> tuple[int, str]:
    engine = make_engine(settings.resolved_database_url)
    with session_factory(engine).begin() as session:
        row, raw = repo.create_api_key(session, owner=owner, admin=admin)
        out = row.id, raw
    engine.dispose()
    return out


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[tuple[Settings, RecordingClient]]:
    settings = _settings(tmp_path)
    client = make_client(settings)
    yield settings, client
    assert not [r for r in client.responses if r.status_code >= 500]


# --------------------------------------------------------------------------- settings


def test_auth_defaults_on_in_distributed_mode_off_in_embedded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("ACTSEARCH_AUTH__ENABLED", "ACTSEARCH_BROKER_URL"):
        monkeypatch.delenv(var, raising=False)
    assert Settings(home=tmp_path).auth_enabled is False
    assert Settings(home=tmp_path, broker_url="redis://x:6379/0").auth_enabled is True
    monkeypatch.setenv("ACTSEARCH_AUTH__ENABLED", "true")
    assert Settings(home=tmp_path).auth_enabled is True
    monkeypatch.setenv("ACTSEARCH_AUTH__ENABLED", "false")
    assert Settings(home=tmp_path, broker_url="redis://x:6379/0").auth_enabled is False
    monkeypatch.setenv("ACTSEARCH_AUTH__ENABLED", "maybe")
    with pytest.raises(ValueError, match="enabled"):
        Settings(home=tmp_path)


def test_defaults_leave_room_for_the_load_test() -> None:
    """5 owners x 20 searches at once and 200 reads/s over the owners pass the defaults."""
    lim = LimitSettings()
    assert lim.max_active_searches_per_owner >= 20
    assert lim.request_burst_per_owner >= 20 + 200 / 5  # a second's reads plus the submissions
    assert lim.requests_per_second_per_owner >= 200 / 5


# --------------------------------------------------------------------------- 401 and /me


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer    ", "Basic YWxpY2U6cHc=",
                                    "Bearer as_not-a-real-key", "Token as_abc"])
def test_missing_or_bad_key_is_401_with_how_to(svc: tuple[Settings, RecordingClient],
                                                 header: str | None) -> None:
    _, client = svc
    r = client.get("/searches", headers={"Authorization": header} if header else {})
    detail = assert_error(r, 401, "actsearch keys create --owner")
    assert r.headers["www-authenticate"] == "Bearer"
    assert ("unknown or revoked" in detail) == (header is not None and header.count("as_") == 1
                                                and header.startswith("Bearer"))


def test_me_and_public_routes(svc: tuple[Settings, RecordingClient]) -> None:
    settings, client = svc
    _, key = _key(settings, "alice")
    assert client.get("/me", headers=_bearer(key)).json() == {
        "owner": "alice", "admin": False, "auth_enabled": True}
    assert client.get("/health").status_code == 200
    assert client.get("/activations").status_code == 200
    assert client.get("/").status_code == 200  # the dashboard shell; its data needs a key


def test_auth_off_is_an_anonymous_admin(tmp_path: Path) -> None:
    client = make_client(_settings(tmp_path, enabled=False))
    assert client.get("/me").json() == {"owner": None, "admin": True, "auth_enabled": False}
    assert client.get("/admin/keys").json() == {"data": [], "count": 0}
    # a stray header changes nothing when auth is off
    assert client.get("/searches", headers=_bearer("junk")).status_code == 200


def test_revoked_key_stops_working_and_last_used_is_recorded(
    svc: tuple[Settings, RecordingClient]
) -> None:
    settings, client = svc
    key_id, key = _key(settings, "alice")
    assert client.get("/searches", headers=_bearer(key)).status_code == 200
    engine = make_engine(settings.resolved_database_url)
    with session_factory(engine)() as session:
        row = repo.get_api_key(session, key_id=key_id)
        assert row.last_used_at is not None
        repo.revoke_api_key(session, key_id=key_id)
        session.commit()
    engine.dispose()
    assert_error(client.get("/searches", headers=_bearer(key)), 401, "unknown or revoked")


# --------------------------------------------------------------------------- admin API


def test_admin_endpoints(svc: tuple[Settings, RecordingClient]) -> None:
    settings, client = svc
    _, admin = _key(settings, "root", admin=True)
    _, user = _key(settings, "alice")
    for method, path in (("POST", "/admin/keys"), ("GET", "/admin/keys"),
                         ("DELETE", "/admin/keys/1")):
        r = client.request(method, path, headers=_bearer(user), json={"owner": "x"})
        assert_error(r, 403, "not an admin", "--admin")

    made = client.post("/admin/keys", headers=_bearer(admin),
                       json={"owner": "bob", "name": "ci"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["owner"] == "bob" and body["admin"] is False and body["key"].startswith("as_")
    assert body["prefix"] == body["key"][:8]
    assert client.get("/me", headers=_bearer(body["key"])).json()["owner"] == "bob"

    listed = client.get("/admin/keys", headers=_bearer(admin)).json()
    assert {k["owner"] for k in listed["data"]} == {"root", "alice", "bob"}
    assert body["key"] not in str(listed)  # the raw key is shown once only
    assert all("key_hash" not in k and "key" not in k for k in listed["data"])
    only_bob = client.get("/admin/keys", params={"owner": "bob"}, headers=_bearer(admin)).json()
    assert [k["id"] for k in only_bob["data"]] == [body["id"]]

    revoked = client.delete(f"/admin/keys/{body['id']}", headers=_bearer(admin))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert client.get("/me", headers=_bearer(body["key"])).status_code == 401
    assert_error(client.delete("/admin/keys/9999", headers=_bearer(admin)), 404, "9999")
    assert_error(client.post("/admin/keys", headers=_bearer(admin), json={"owner": "a b"}),
                 422, "owner")
    assert_error(client.post("/admin/keys", headers=_bearer(admin), json={}), 422, "owner")


def test_raw_keys_never_reach_the_database(svc: tuple[Settings, RecordingClient]) -> None:
    settings, client = svc
    _, admin = _key(settings, "root", admin=True)
    made = client.post("/admin/keys", headers=_bearer(admin), json={"owner": "bob"}).json()
    client.get("/me", headers=_bearer(made["key"]))
    path = settings.resolved_database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        dump = "\n".join(conn.iterdump())
    for raw in (admin, made["key"]):
        assert raw not in dump and raw[8:] not in dump
        assert repo.hash_key(raw) in dump  # what is stored instead


# --------------------------------------------------------------------------- limits


def test_token_bucket_refills_and_says_when() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [None, None, None]
    wait = buckets.take("a")
    assert wait == pytest.approx(0.5)
    assert buckets.take("b") is None  # its own bucket
    now[0] += 0.5
    assert buckets.take("a") is None and buckets.take("a") is not None
    now[0] += 100.0  # refills to the burst, never above it
    assert [buckets.take("a") is None for _ in range(4)] == [True, True, True, False]


def test_token_bucket_memory_stays_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=1.0, burst=2, max_keys=10, clock=lambda: now[0])
    for i in range(10):
        buckets.take(f"k{i}")
    now[0] += 10.0  # every bucket full again: nothing worth keeping
    buckets.take("new")
    assert len(buckets._buckets) <= 10


def test_rate_limit_is_per_owner_with_retry_after(tmp_path: Path) -> None:
    settings = _settings(tmp_path, requests_per_second_per_owner=0.01, request_burst_per_owner=3)
    client = make_client(settings)
    _, alice = _key(settings, "alice")
    _, bob = _key(settings, "bob")
    assert [client.get("/searches", headers=_bearer(alice)).status_code
            for _ in range(3)] == [200] * 3
    r = client.get("/datasets", headers=_bearer(alice))
    assert_error(r, 429, "too many requests", "REQUESTS_PER_SECOND_PER_OWNER")
    assert int(r.headers["retry-after"]) >= 1
    assert client.get("/searches", headers=_bearer(bob)).status_code == 200
    assert client.get("/health").status_code == 200  # public routes are not limited


def test_anonymous_callers_share_a_bucket_by_ip(tmp_path: Path) -> None:
    client = make_client(_settings(tmp_path, enabled=False, requests_per_second_per_owner=0.01,
                                   request_burst_per_owner=2))
    assert [client.get("/searches").status_code for _ in range(3)] == [200, 200, 429]


def test_active_searches_per_owner_limit(tmp_path: Path) -> None:
    settings = _settings(tmp_path, max_active_searches_per_owner=2)
    client = make_client(settings)
    _, alice = _key(settings, "alice")
    _, bob = _key(settings, "bob")

    def submit(key: str) -> httpx.Response:
        return client.post("/searches", headers=_bearer(key), json=TINY_SPEC)

    first, second = submit(alice), submit(alice)
    assert first.status_code == second.status_code == 201, first.text
    assert_error(submit(alice), 429, "max_active_searches_per_owner = 2",
                 "ACTSEARCH_LIMITS__MAX_ACTIVE_SEARCHES_PER_OWNER")
    assert submit(bob).status_code == 201  # Bob has his own allowance
    client.post(f"/searches/{first.json()['id']}/cancel", headers=_bearer(alice))
    assert submit(alice).status_code == 201  # a cancelled search no longer counts


# --------------------------------------------------------------------------- CLI


def test_cli_keys_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from actsearch.cli import common
    from core.settings import get_settings

    monkeypatch.setenv("ACTSEARCH_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    for var in ("ACTSEARCH_DATABASE_URL", "ACTSEARCH_SERVER", "ACTSEARCH_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(common.remote, "client", None)
    get_settings.cache_clear()
    try:
        code, out, err = run_cli(monkeypatch, capsys, "keys", "create", "--owner", "alice",
                              "--name", "laptop")
        assert code == 0, err
        key = out.strip()
        assert out == key + "\n" and key.startswith("as_")  # alone on stdout
        assert "store it now" in err
        code, out, _ = run_cli(monkeypatch, capsys, "keys", "create", "--owner", "root", "--admin")
        admin = out.strip()

        code, out, _ = run_cli(monkeypatch, capsys, "keys", "list")
        assert code == 0 and "alice" in out and "laptop" in out and key[:8] in out
        assert key not in out and key[8:] not in out

        settings = make_settings(tmp_path).model_copy(update={"auth": AuthSettings(enabled=True)})
        client = make_client(settings)
        assert client.get("/me", headers=_bearer(key)).json()["owner"] == "alice"
        assert client.get("/me", headers=_bearer(admin)).json()["admin"] is True

        code, out, _ = run_cli(monkeypatch, capsys, "keys", "revoke", "1")
        assert code == 0 and "revoked" in out
        assert client.get("/me", headers=_bearer(key)).status_code == 401
        code, _, err = run_cli(monkeypatch, capsys, "keys", "revoke", "99")
        assert code == 2 and "API key 99 not found" in err and "Traceback" not in err
        code, _, err = run_cli(monkeypatch, capsys, "keys", "create", "--owner", "../x")
        assert code == 2 and "invalid owner" in err and "Traceback" not in err
    finally:
        get_settings.cache_clear()


def test_cli_client_sends_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``--server URL --api-key KEY``: the header goes out; without it, a one-line 401 hint."""
    from fastapi.testclient import TestClient

    from actsearch.cli import common
    from actsearch.client import ActsearchClient
    from api.main import create_app

    settings = _settings(tmp_path)
    _, admin = _key(settings, "root", admin=True)
    app = create_app(settings)
    real_init = ActsearchClient.__init__

    def fake_init(self: ActsearchClient, base_url: str, **kw: Any) -> None:
        real_init(self, base_url, **kw)
        self.http = TestClient(app, base_url=base_url, headers=dict(self.http.headers))

    monkeypatch.setattr(ActsearchClient, "__init__", fake_init)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("ACTSEARCH_API_KEY", raising=False)
    monkeypatch.setitem(common.remote, "client", None)
    code, out, err = run_cli(monkeypatch, capsys, "--server", "http://svc", "--api-key", admin,
                          "keys", "create", "--owner", "carol")
    assert code == 0, err
    carol = out.strip()
    code, out, _ = run_cli(monkeypatch, capsys, "--server", "http://svc", "--api-key", admin,
                        "keys", "list", "--json")
    assert code == 0 and "carol" in out and carol not in out
    monkeypatch.setenv("ACTSEARCH_API_KEY", carol)
    code, _, err = run_cli(monkeypatch, capsys, "--server", "http://svc", "keys", "list")
    assert code == 2 and "not an admin" in err and "(HTTP 403)" in err
    monkeypatch.delenv("ACTSEARCH_API_KEY")
    code, _, err = run_cli(monkeypatch, capsys, "--server", "http://svc", "keys", "list")
    assert code == 2 and "--api-key" in err and "(HTTP 401)" in err.replace("\n", " ")
