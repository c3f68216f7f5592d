"""Dashboard login against ``actsearch serve`` with ``ACTSEARCH_AUTH__ENABLED=true``.

Keys are made by the CLI (``actsearch keys create``) on the server's database;
Alice and Bob each submit a search (cancelled at once: nothing needs to train).
In the browser a 401 opens the login form; a bad key is refused with the
service's reason; Alice's key shows Alice's searches only, who is logged in, and
Bob's search page answers "not found"; "Log out" forgets the key.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser.conftest import _skip_reason, shot
from tests.utils.live_server import LiveServer, live_server

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

BIN = Path(sys.executable).parent
SPEC = {"dataset": "iris", "architecture": "mlp:4", "families": ["relu"], "trials": 2,
        "epochs": 1}


def _cli_key(live: LiveServer, owner: str) -> str:
    out = subprocess.run([str(BIN / "actsearch"), "keys", "create", "--owner", owner],
                         env=live.env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    home = tmp_path_factory.mktemp("browser-auth")
    with live_server(home, {"ACTSEARCH_AUTH__ENABLED": "true"}, start_timeout_s=120) as live:
        keys = {owner: _cli_key(live, owner) for owner in ("alice", "bob")}
        ids = {}
        for owner, key in keys.items():
            headers = {"Authorization": f"Bearer {key}"}
            r = _post(f"{live.url}/searches", headers, {**SPEC, "name": f"{owner}'s search"})
            assert r.status_code == 201, (r.text, live.log)
            ids[owner] = r.json()["id"]
            _post(f"{live.url}/searches/{ids[owner]}/cancel", headers)
        yield {"url": live.url, "keys": keys, "ids": ids}


def _post(url: str, headers: dict[str, str], body: Any = None) -> httpx.Response:
    """POST, retried while the service answers 503 (SQLite busy with the runner's writes)."""
    for _ in range(10):
        r = httpx.post(url, headers=headers, json=body, timeout=60)
        if r.status_code != 503:
            break
        time.sleep(1.0)
    return r


def test_login_shows_only_the_owners_searches_then_log_out(page: Any,
                                                            authed: dict[str, Any]) -> None:
    url, keys, ids = authed["url"], authed["keys"], authed["ids"]
    page.goto(url + "/")
    page.wait_for_selector("#login-form")
    assert "API key" in page.inner_text("#login-form")
    page.fill("#api-key-input", "as_wrong-key")
    page.click("#login-submit")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "unknown or revoked" in page.inner_text("#login-error")
    shot(page, "login-refused")

    page.fill("#api-key-input", keys["alice"])
    page.click("#login-submit")
    page.wait_for_selector(f"tr[data-search-id='{ids['alice']}']")
    assert page.query_selector("#login-form") is None
    assert page.inner_text("#who-name") == "alice"
    assert page.query_selector(f"tr[data-search-id='{ids['bob']}']") is None
    assert "bob's search" not in page.inner_text("#app")
    assert page.evaluate("localStorage.getItem('actsearch.apiKey')") == keys["alice"]
    shot(page, "logged-in-searches")

    # Bob's search page: the same answer as for a search that does not exist.
    page.goto(f"{url}/ui/searches/{ids['bob']}")
    page.wait_for_selector("#app [role=alert]")
    assert f"search {ids['bob']} not found" in page.inner_text("#app")
    assert "bob's search" not in page.inner_text("#app")

    page.goto(f"{url}/ui/searches/{ids['alice']}")
    page.wait_for_function("document.querySelector('#app').innerText.includes(\"alice's search\")")

    # A download link to the API (the export zip's kind) is fetched with the key as well.
    page.evaluate("""() => document.querySelector('#app').append(Object.assign(
        document.createElement('a'), {href: '/me', download: '', id: 'dl', textContent: 'me'}))""")
    with page.expect_download() as download:
        page.click("#dl")
    assert json.loads(Path(download.value.path()).read_text())["owner"] == "alice"

    page.click("#logout")
    page.wait_for_selector("#login-form")
    assert page.evaluate("localStorage.getItem('actsearch.apiKey')") is None
    assert "alice's search" not in page.inner_text("#app")
