"""Ownership isolation: two owners, every route, no cross-owner read, list or write.

Alice and Bob each own an uploaded dataset, a finished search (with trials,
curves and weights), and a schedule; ``root`` is an admin. For every route of
the app there is a check below (or the route is listed as public): Bob gets the
very same 404 for Alice's ids as for ids that do not exist, never sees her
objects in a list and cannot change them, while Alice can, and the admin sees
both. A route added later without a check here fails
:func:`test_every_route_is_covered_or_public`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount

from api.main import create_app
from core.settings import AuthSettings, Settings
from store import repo
from store.db import init_db, make_engine, session_factory
from tests.api.conftest import TINY_SPEC, RecordingClient, make_settings, run_tiny_search
from tests.utils.data_files import csv_bytes, make_frame

OWNERS = ("alice", "bob")
MISSING = 987_654  # an id that exists for nobody
RERUN = {"kind": "rerun", "spec": {"architecture": "mlp:8", "trials": 2, "epochs": 2}}

# Routes anyone may call without a key: they hold no owner's data.
PUBLIC: set[tuple[str, str]] = {
    ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"), ("GET", "/health"), ("GET", "/activations"),
    ("GET", "/activations/{name}"),
    # the dashboard's HTML shells (their scripts fetch the protected JSON routes)
    ("GET", "/"), ("GET", "/ui"), ("GET", "/ui/"), ("GET", "/ui/searches"),
    ("GET", "/ui/searches/{search_id}"), ("GET", "/ui/trials/{trial_id}"), ("GET", "/ui/new"),
    ("GET", "/ui/schedules"),
    ("MOUNT", "/ui/static"),
}


@dataclass
class World:
    client: RecordingClient
    settings: Settings
    keys: dict[str, str]
    key_ids: dict[str, int]
    ids: dict[str, dict[str, int]] = field(default_factory=dict)

    def call(self, method: str, path: str, who: str | None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return self.client.request(method, path, headers=headers, **kw)

    def ok(self, method: str, path: str, who: str, **kw: Any) -> Any:
        r = self.call(method, path, who, **kw)
        assert r.status_code < 300, (method, path, who, r.status_code, r.text[:300])
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """Two owners with data, searches, trials, schedules and weights; an admin; one client."""
    home: Path = tmp_path_factory.mktemp("isolation")
    settings = make_settings(home).model_copy(update={"auth": AuthSettings(enabled=True)})
    init_db(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    keys, key_ids = {}, {}
    with session_factory(engine).begin() as session:
        for owner, admin in (("alice", False), ("bob", False), ("root", True)):
            row, raw = repo.create_api_key(session, owner=owner, admin=admin)
            keys[owner], key_ids[owner] = raw, row.id
    engine.dispose()
    w = World(client=RecordingClient(create_app(settings), raise_server_exceptions=False),
              settings=settings, keys=keys, key_ids=key_ids)
    for i, owner in enumerate(OWNERS):
        search_id = run_tiny_search(settings, name=f"{owner} tiny", owner=owner)
        files = {"file": ("t.csv", csv_bytes(make_frame(40, seed=i)), "text/csv")}
        upload = w.ok("POST", "/datasets", owner, files=files, data={"name": f"{owner}-data"})
        # the same name in both namespaces: each owner gets their own version 1
        shared = w.ok("POST", "/datasets", owner, files=files, data={"name": "shared-name"})
        assert upload["owner"] == owner and shared["version"] == 1
        schedule = w.ok("POST", "/schedules", owner, json={
            "cron": "0 3 1 1 *", "template": {**RERUN, "spec": {**RERUN["spec"],
                                                                "dataset": f"{owner}-data"}}})
        trials = w.ok("GET", f"/searches/{search_id}/trials", owner)["data"]
        assert trials
        w.ids[owner] = {"dataset_id": upload["id"], "shared_id": shared["id"],
                        "search_id": search_id, "trial_id": trials[0]["id"],
                        "schedule_id": schedule["id"],
                        "search_dataset_id": w.ok("GET", f"/searches/{search_id}",
                                                  owner)["dataset_id"]}
    return w


def _hidden(w: World, method: str, template: str, param: str, *, who: str = "bob",
            owner: str = "alice", **kw: Any) -> None:
    """``who`` gets for ``owner``'s id exactly the 404 a missing id gets."""
    real_id = w.ids[owner][param]
    real = w.call(method, template.format(**{param: real_id}), who, **kw)
    missing = w.call(method, template.format(**{param: MISSING}), who, **kw)
    assert real.status_code == 404 == missing.status_code, (template, real.text, missing.text)
    assert (real.json()["detail"].replace(str(real_id), "N")
            == missing.json()["detail"].replace(str(MISSING), "N"))


def _owned_ids(rows: list[dict[str, Any]]) -> set[int]:
    return {r["id"] for r in rows}


def _id_route(method: str, template: str, param: str, ok_status: int = 200,
              **kw: Any) -> Callable[[World], None]:
    """Bob: the missing-id 404 for Alice's object (and Alice for Bob's); its owner and root: ok."""

    def check(w: World) -> None:
        _hidden(w, method, template, param, **kw)
        _hidden(w, method, template, param, who="alice", owner="bob", **kw)
        for who in ("alice", "root"):
            r = w.call(method, template.format(**{param: w.ids["alice"][param]}), who, **kw)
            assert r.status_code == ok_status, (template, who, r.status_code, r.text[:300])

    return check


# --------------------------------------------------------------------------- lists


def _list_check(path: str, id_key: str, data_key: str = "data") -> Callable[[World], None]:
    def check(w: World) -> None:
        seen = {who: _owned_ids(w.ok("GET", path, who, params={"limit": 500})[data_key])
                for who in ("alice", "bob", "root")}
        a, b = w.ids["alice"][id_key], w.ids["bob"][id_key]
        assert a in seen["alice"] and a not in seen["bob"]
        assert b in seen["bob"] and b not in seen["alice"]
        assert {a, b} <= seen["root"]

    return check


def check_list_datasets(w: World) -> None:
    _list_check("/datasets", "dataset_id")(w)
    for who in OWNERS:
        listed = w.ok("GET", "/datasets", who, params={"name": "shared-name", "latest": True})
        assert [d["id"] for d in listed["data"]] == [w.ids[who]["shared_id"]]
        assert listed["count"] == 1
        assert all(d["owner"] == who for d in w.ok("GET", "/datasets", who)["data"])


def check_get_dataset(w: World) -> None:
    _id_route("GET", "/datasets/{dataset_id}", "dataset_id")(w)
    detail = w.ok("GET", f"/datasets/{w.ids['alice']['shared_id']}", "alice")
    assert [v["id"] for v in detail["versions"]] == [w.ids["alice"]["shared_id"]]


def check_upload(w: World) -> None:
    files = {"file": ("t.csv", csv_bytes(make_frame(30, seed=9)), "text/csv")}
    made = w.ok("POST", "/datasets", "bob", files=files, data={"name": "alice-data"})
    assert made["owner"] == "bob" and made["version"] == 1  # Alice's name is not Bob's
    assert made["id"] not in _owned_ids(w.ok("GET", "/datasets", "alice")["data"])


def check_builtin(w: World) -> None:
    made = w.ok("POST", "/datasets/builtin", "bob", json={"builtin": "wine", "name": "bob-wine"})
    assert made["owner"] == "bob"
    assert made["id"] not in _owned_ids(w.ok("GET", "/datasets", "alice")["data"])
    again = w.ok("POST", "/datasets/builtin", "alice", json={"builtin": "wine",
                                                             "name": "bob-wine"})
    assert again["owner"] == "alice" and again["version"] == 1 and again["id"] != made["id"]


def check_builtins_catalogue(w: World) -> None:
    assert w.ok("GET", "/datasets/builtins", "alice") == w.ok("GET", "/datasets/builtins", "bob")


def check_list_searches(w: World) -> None:
    _list_check("/searches", "search_id")(w)
    foreign = w.ok("GET", "/searches", "bob",
                   params={"dataset_id": w.ids["alice"]["search_dataset_id"]})
    assert foreign == {"data": [], "count": 0}


def check_create_search(w: World) -> None:
    def post(**body: Any) -> httpx.Response:
        return w.call("POST", "/searches", "bob", json={**TINY_SPEC, **body})

    # Alice's dataset name reads as a name Bob has never used ...
    unknown = post(dataset="no-such-name")
    w.ok("POST", "/datasets", "alice", data={"name": "alice-only-name"},
         files={"file": ("t.csv", csv_bytes(make_frame(30)), "text/csv")})
    foreign = post(dataset="alice-only-name")
    assert foreign.status_code == unknown.status_code == 422
    assert (foreign.json()["detail"].replace("alice-only-name", "X")
            == unknown.json()["detail"].replace("no-such-name", "X"))
    # ... and her search cannot seed his.
    warm = post(warm_start_from=w.ids["alice"]["search_id"])
    gone = post(warm_start_from=MISSING)
    assert warm.status_code == gone.status_code == 404
    assert (warm.json()["detail"].replace(str(w.ids["alice"]["search_id"]), "N")
            == gone.json()["detail"].replace(str(MISSING), "N"))
    # A name both have resolves to the caller's own dataset.
    mine = post(dataset="shared-name", architecture="mlp:4")
    assert mine.status_code == 201, mine.text
    assert mine.json()["dataset_id"] == w.ids["bob"]["shared_id"]
    assert mine.json()["owner"] == "bob"
    w.ok("POST", f"/searches/{mine.json()['id']}/cancel", "bob")


def check_cancel(w: World) -> None:
    _hidden(w, "POST", "/searches/{search_id}/cancel", "search_id")
    # Alice reaches her (finished) search: a state conflict, not a 404.
    assert w.call("POST", f"/searches/{w.ids['alice']['search_id']}/cancel",
                  "alice").status_code == 409
    assert w.ok("GET", f"/searches/{w.ids['alice']['search_id']}", "alice")["state"] == "complete"


def check_query_trials(w: World) -> None:
    def trial_ids(who: str, **params: Any) -> set[int]:
        return _owned_ids(w.ok("GET", "/trials", who, params={"limit": 500, **params})["data"])

    a_search, b_search = (w.ids[o]["search_id"] for o in OWNERS)
    bob = {t["search_id"] for t in w.ok("GET", "/trials", "bob",
                                        params={"limit": 500})["data"]}
    assert bob == {b_search}
    assert {t["search_id"] for t in w.ok("GET", "/trials", "root",
                                         params={"limit": 500})["data"]} >= {a_search, b_search}
    assert w.ids["alice"]["trial_id"] not in trial_ids("bob", architecture="mlp")
    assert w.ids["alice"]["trial_id"] in trial_ids("alice", architecture="mlp")
    # Alice's dataset, by id: the missing-id 404; by name: Bob's own "iris" only.
    a_data = w.ids["alice"]["search_dataset_id"]
    real = w.call("GET", "/trials", "bob", params={"dataset": str(a_data)})
    missing = w.call("GET", "/trials", "bob", params={"dataset": str(MISSING)})
    assert real.status_code == missing.status_code == 404
    assert (real.json()["detail"].replace(str(a_data), "N")
            == missing.json()["detail"].replace(str(MISSING), "N"))
    assert w.ids["alice"]["trial_id"] not in trial_ids("bob", dataset="iris")
    assert w.ids["alice"]["trial_id"] in trial_ids("alice", dataset="iris")


def check_create_schedule(w: World) -> None:
    def post(template: dict[str, Any]) -> httpx.Response:
        return w.call("POST", "/schedules", "bob", json={"cron": "0 3 * * *",
                                                         "template": template})

    add = {"kind": "add_trials", "trials": 2}
    foreign = post({**add, "search_id": w.ids["alice"]["search_id"]})
    missing = post({**add, "search_id": MISSING})
    assert foreign.status_code == missing.status_code == 422
    assert (foreign.json()["detail"].replace(str(w.ids["alice"]["search_id"]), "N")
            == missing.json()["detail"].replace(str(MISSING), "N"))
    rerun = post({**RERUN, "spec": {**RERUN["spec"], "dataset": "alice-only-name"}})
    assert rerun.status_code == 422 and "alice-only-name" in rerun.json()["detail"]
    made = post({**add, "search_id": w.ids["bob"]["search_id"]})
    assert made.status_code == 201 and made.json()["owner"] == "bob"
    w.ok("DELETE", f"/schedules/{made.json()['id']}", "bob")


def _schedule_state(w: World, owner: str) -> str:
    return w.ok("GET", f"/schedules/{w.ids[owner]['schedule_id']}", owner)["state"]


def check_pause(w: World) -> None:
    _hidden(w, "POST", "/schedules/{schedule_id}/pause", "schedule_id")
    assert _schedule_state(w, "alice") == "active"
    w.ok("POST", f"/schedules/{w.ids['alice']['schedule_id']}/pause", "alice")
    w.ok("POST", f"/schedules/{w.ids['alice']['schedule_id']}/resume", "alice")


def check_resume(w: World) -> None:
    w.ok("POST", f"/schedules/{w.ids['alice']['schedule_id']}/pause", "alice")
    _hidden(w, "POST", "/schedules/{schedule_id}/resume", "schedule_id")
    assert _schedule_state(w, "alice") == "paused"
    w.ok("POST", f"/schedules/{w.ids['alice']['schedule_id']}/resume", "root")
    assert _schedule_state(w, "alice") == "active"


def check_delete_schedule(w: World) -> None:
    _hidden(w, "DELETE", "/schedules/{schedule_id}", "schedule_id")
    assert _schedule_state(w, "alice") == "active"  # still there
    spare = w.ok("POST", "/schedules", "alice", json={
        "cron": "0 4 * * *", "template": {"kind": "add_trials", "trials": 1,
                                          "search_id": w.ids["alice"]["search_id"]}})
    assert w.call("DELETE", f"/schedules/{spare['id']}", "alice").status_code == 204


def check_me(w: World) -> None:
    for who in ("alice", "bob", "root"):
        me = w.ok("GET", "/me", who)
        assert me == {"owner": who, "admin": who == "root", "auth_enabled": True}


def check_admin_create(w: World) -> None:
    r = w.call("POST", "/admin/keys", "bob", json={"owner": "bob", "admin": True})
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    made = w.ok("POST", "/admin/keys", "root", json={"owner": "carol"})
    me = w.client.get("/me", headers={"Authorization": f"Bearer {made['key']}"})
    assert me.json() == {"owner": "carol", "admin": False, "auth_enabled": True}


def check_admin_list(w: World) -> None:
    assert w.call("GET", "/admin/keys", "alice").status_code == 403
    owners = {k["owner"] for k in w.ok("GET", "/admin/keys", "root")["data"]}
    assert {"alice", "bob", "root"} <= owners


def check_admin_revoke(w: World) -> None:
    r = w.call("DELETE", f"/admin/keys/{w.key_ids['alice']}", "bob")
    assert r.status_code == 403
    assert w.ok("GET", "/me", "alice")["owner"] == "alice"  # still works
    spare = w.ok("POST", "/admin/keys", "root", json={"owner": "alice", "name": "spare"})
    assert w.ok("DELETE", f"/admin/keys/{spare['id']}", "root")["revoked_at"] is not None


CHECKS: dict[tuple[str, str], Callable[[World], None]] = {
    ("GET", "/datasets"): check_list_datasets,
    ("POST", "/datasets"): check_upload,
    ("POST", "/datasets/builtin"): check_builtin,
    ("GET", "/datasets/builtins"): check_builtins_catalogue,
    ("GET", "/datasets/{dataset_id}"): check_get_dataset,
    ("POST", "/searches"): check_create_search,
    ("GET", "/searches"): check_list_searches,
    ("GET", "/searches/{search_id}"): _id_route("GET", "/searches/{search_id}", "search_id"),
    ("POST", "/searches/{search_id}/cancel"): check_cancel,
    ("GET", "/searches/{search_id}/trials"): _id_route("GET", "/searches/{search_id}/trials",
                                                       "search_id"),
    ("GET", "/searches/{search_id}/leaderboard"): _id_route(
        "GET", "/searches/{search_id}/leaderboard", "search_id"),
    ("GET", "/searches/{search_id}/export"): _id_route("GET", "/searches/{search_id}/export",
                                                       "search_id"),
    ("GET", "/searches/{search_id}/importance"): _id_route(
        "GET", "/searches/{search_id}/importance", "search_id"),
    ("GET", "/searches/{search_id}/intermediate"): _id_route(
        "GET", "/searches/{search_id}/intermediate", "search_id"),
    ("GET", "/trials"): check_query_trials,
    ("GET", "/trials/{trial_id}"): _id_route("GET", "/trials/{trial_id}", "trial_id"),
    ("GET", "/trials/{trial_id}/activations"): _id_route(
        "GET", "/trials/{trial_id}/activations", "trial_id"),
    ("POST", "/schedules"): check_create_schedule,
    ("GET", "/schedules"): _list_check("/schedules", "schedule_id"),
    ("GET", "/schedules/{schedule_id}"): _id_route("GET", "/schedules/{schedule_id}",
                                                   "schedule_id"),
    ("POST", "/schedules/{schedule_id}/pause"): check_pause,
    ("POST", "/schedules/{schedule_id}/resume"): check_resume,
    ("DELETE", "/schedules/{schedule_id}"): check_delete_schedule,
    ("GET", "/me"): check_me,
    ("POST", "/admin/keys"): check_admin_create,
    ("GET", "/admin/keys"): check_admin_list,
    ("DELETE", "/admin/keys/{key_id}"): check_admin_revoke,
}


def _routes(w: World) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for ctx in iter_route_contexts(w.client.app.routes):  # type: ignore[attr-defined]
        if isinstance(ctx.original_route, Mount):
            out.add(("MOUNT", ctx.path))
            continue
        out.update((m, ctx.path) for m in (ctx.methods or ()) if m != "HEAD")
    return out


def test_every_route_is_covered_or_public(world: World) -> None:
    routes = _routes(world)
    assert routes - PUBLIC - set(CHECKS) == set(), "routes with no isolation check"
    assert set(CHECKS) - routes == set(), "checks for routes that no longer exist"
    assert PUBLIC - routes == set(), "public routes that no longer exist"


def _concrete(path: str) -> str:
    return path.replace("{name}", "relu").replace("_id}", "}").format(
        dataset=1, search=1, trial=1, schedule=1, key=1)


@pytest.mark.parametrize("route", sorted(CHECKS), ids=" ".join)
def test_protected_route_needs_a_key(world: World, route: tuple[str, str]) -> None:
    method, path = route
    r = world.call(method, _concrete(path), None)
    assert r.status_code == 401, (route, r.status_code, r.text[:200])
    assert r.headers["www-authenticate"] == "Bearer"
    assert "actsearch keys create --owner" in r.json()["detail"]


@pytest.mark.parametrize("route", sorted(r for r in PUBLIC if r[0] == "GET"), ids=" ".join)
def test_public_route_needs_no_key(world: World, route: tuple[str, str]) -> None:
    r = world.call("GET", _concrete(route[1]), None)
    assert r.status_code == 200, (route, r.status_code, r.text[:200])


@pytest.mark.parametrize("route", sorted(CHECKS), ids=" ".join)
def test_no_cross_owner_access(world: World, route: tuple[str, str]) -> None:
    start = len(world.client.responses)
    CHECKS[route](world)
    errors = [(r.request.method, str(r.request.url), r.status_code)
              for r in world.client.responses[start:] if r.status_code >= 500]
    assert not errors
